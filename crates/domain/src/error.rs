//! Domain errors: what went wrong in the domain's own terms. The HTTP layer maps each variant to
//! one problem code in one place.

/// A storage adapter failed. The message is for logs only and never reaches a client.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The database could not be reached or the pool is exhausted; a retry may work.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// A uniqueness or foreign-key rule was broken.
    #[error("conflict: {0}")]
    Conflict(String),
    /// Anything else (a bug, corrupt data).
    #[error("database error: {0}")]
    Other(String),
}

/// A field of the input that failed validation: a JSON pointer and a message that never echoes the value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// JSON pointer (RFC 6901) to the field, e.g. `/scopes/2`.
    pub pointer: String,
    /// What is wrong, without the value.
    pub detail: String,
}

impl FieldError {
    /// A field error at `pointer`.
    pub fn new(pointer: impl Into<String>, detail: impl Into<String>) -> Self {
        Self { pointer: pointer.into(), detail: detail.into() }
    }
}

/// Errors of the domain services.
#[derive(Debug, thiserror::Error)]
pub enum DomainError {
    /// The input is well-formed JSON but breaks a rule.
    #[error("validation failed")]
    Validation(Vec<FieldError>),
    /// The object does not exist or belongs to another merchant (the two are indistinguishable).
    #[error("not found")]
    NotFound,
    /// The caller asked for more than it holds (e.g. a key creating a key with broader scopes).
    #[error("forbidden: {0}")]
    Forbidden(&'static str),
    /// The input breaks a rule that has its own stable problem code (e.g. `invalid_card_number`).
    #[error("rejected: {code}")]
    Rejected {
        /// The stable code.
        code: &'static str,
        /// The fields concerned.
        errors: Vec<FieldError>,
    },
    /// The caller's key lacks the scope this needs.
    #[error("missing scope {0}")]
    MissingScope(crate::api_keys::Scope),
    /// The object existed but its data was erased.
    #[error("gone")]
    Gone,
    /// Stored ciphertext failed to decrypt: tampering or corruption.
    #[error("integrity check failed")]
    Integrity,
    /// Too many requests of this kind from this caller; retry after the given seconds.
    #[error("rate limited")]
    RateLimited(u32),
    /// The request carries more items than allowed.
    #[error("too large: {0}")]
    TooLarge(&'static str),
    /// The email or password is wrong, the account unknown or disabled (one answer for all).
    #[error("invalid credentials")]
    InvalidCredentials,
    /// Too many attempts: wait `retry_after` seconds (`None`: stopped until an operator or a
    /// reset acts).
    #[error("throttled: {code}")]
    Throttled {
        /// Stable code.
        code: &'static str,
        /// Seconds to wait.
        retry_after: Option<u32>,
    },
    /// A second factor was wrong or used, or its challenge is spent.
    #[error("invalid second factor")]
    InvalidFactor,
    /// A bounded pool is full (password hashing): try again shortly.
    #[error("busy")]
    Busy,
    /// The request conflicts with the object's state: a stable code and a sentence.
    #[error("conflict: {0}")]
    Conflict(&'static str, &'static str),
    /// The object is in a state that does not allow this (a payment intent already captured,
    /// canceled, …): 409 with the state it is in.
    #[error("unexpected state: {state}")]
    UnexpectedState {
        /// Stable code.
        code: &'static str,
        /// The state the object is in now.
        state: &'static str,
    },
    /// A dangerous action needs a second person: the request `approval_id` was opened for it.
    #[error("approval required")]
    ApprovalRequired {
        /// `apr_…`
        approval_id: String,
    },
    /// The action needs the customer's step-up: a proof for `purpose` bound to exactly
    /// `binding` (`POST /v1/me/step-up`), sent with the repeated call.
    #[error("step-up required")]
    StepUpRequired {
        /// The purpose to ask the proof for.
        purpose: &'static str,
        /// The binding to ask the proof for.
        binding: serde_json::Map<String, serde_json::Value>,
    },
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The KMS failed.
    #[error(transparent)]
    Kms(#[from] strongroom_crypto::KmsError),
    /// The audit event of this request could not be made durable, so the request did not happen
    /// (or, for a read, is not answered). The message is for logs only.
    #[error("audit log unavailable: {0}")]
    AuditUnavailable(String),
    /// The request committed a gateway call for `object` (a payment intent `pi_…` or a refund
    /// `re_…`), and may have made it, then failed before it could answer with the outcome.
    /// Reconciliation settles `object` with the gateway's word. The answer is kept under the
    /// request's idempotency key, so a retry replays it instead of charging or refunding again.
    /// `cause` is for logs only.
    #[error("the gateway call of {object} is recorded, its outcome is not: {cause}")]
    OutcomePending {
        /// The payment intent or refund whose call was recorded.
        object: String,
        /// What failed, for the log line.
        cause: String,
    },
}

impl From<crate::audit::log::AuditError> for DomainError {
    fn from(err: crate::audit::log::AuditError) -> Self {
        Self::AuditUnavailable(err.to_string())
    }
}

impl DomainError {
    /// A single-field validation error.
    pub fn invalid(pointer: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::Validation(vec![FieldError::new(pointer, detail)])
    }

    /// This error, of a request that had already committed a gateway call for `object`: whatever
    /// failed, the call stands (it was made, or reconciliation makes or resolves it), so the
    /// request must not read as one that did nothing ([`Self::OutcomePending`]).
    pub fn after_gateway_call(self, object: &str) -> Self {
        match self {
            pending @ Self::OutcomePending { .. } => pending,
            other => Self::OutcomePending { object: object.to_owned(), cause: other.to_string() },
        }
    }
}
