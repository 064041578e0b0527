//! The one error type of the HTTP layer, rendered as RFC 9457 `application/problem+json`.
//!
//! A handler returns [`ApiError`]; its response carries the problem as an extension with an empty
//! body, and the outermost middleware ([`crate::middleware::render_problems`]) writes the body with the
//! request id. Responses that framework layers produce on their own (404, 405, 413, 415, 503…)
//! get the same treatment there, so every error a client sees has one shape.
//! Must never: put a secret, an input value or internal error text (SQL, key names) in a body.

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use serde::Serialize;
use strongroom_domain::error::FieldError;
use strongroom_domain::{DomainError, StoreError};
use utoipa::ToSchema;

/// One invalid field.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ProblemField {
    /// JSON pointer (RFC 6901) into the request body, or `/name` of a query parameter.
    pub pointer: String,
    /// What is wrong with it. Never echoes the value.
    pub detail: String,
}

/// An RFC 9457 problem document.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Problem {
    /// `urn:strongroom:problem:<code>`.
    #[serde(rename = "type")]
    pub type_uri: String,
    /// Short, stable summary of the problem type.
    pub title: String,
    /// The HTTP status.
    pub status: u16,
    /// This occurrence, in words.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Stable machine-readable code, e.g. `validation_failed`.
    pub code: String,
    /// The request id (also in the `X-Request-Id` header), for support and logs.
    pub request_id: String,
    /// Invalid fields, for validation problems.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<ProblemField>,
    /// For `approval_required`: the approval request (`apr_…`) just opened; a second staff member
    /// approves it, then the same call is repeated with it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approval_id: Option<String>,
    /// For `payment_intent_unexpected_state`: the state the payment intent is in now.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current_state: Option<String>,
    /// For a `step_up_required` of a payment: `{purpose, binding}`, what the customer's step-up
    /// (`POST /v1/me/step-up`) must ask for.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub step_up: Option<serde_json::Value>,
    /// For `payment_outcome_pending`: the payment intent (`pi_…`) or refund (`re_…`) whose
    /// gateway call the request recorded; fetch it for its state.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object_id: Option<String>,
}

/// An error answer: status, stable code, optional detail and invalid fields, extra headers.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable code.
    pub code: &'static str,
    /// Human-readable detail (never a secret or input value).
    pub detail: Option<String>,
    /// Invalid fields.
    pub fields: Vec<ProblemField>,
    /// Headers to add (e.g. `WWW-Authenticate`, `Retry-After`).
    pub headers: Vec<(header::HeaderName, HeaderValue)>,
    /// What went wrong inside, for the log line the edge middleware writes with the request id.
    /// Never shown to the client.
    pub cause: Option<Box<String>>,
    /// The members some problems add (boxed: errors stay small).
    pub extras: Option<Box<ProblemExtras>>,
}

/// Members of a problem document beyond the standard ones.
#[derive(Debug, Clone, Default)]
pub struct ProblemExtras {
    /// The approval request an `approval_required` answer opened.
    pub approval_id: Option<String>,
    /// The state an object is in, for a refused state change.
    pub current_state: Option<&'static str>,
    /// The step-up a `step_up_required` of a payment asks for.
    pub step_up: Option<serde_json::Value>,
    /// The payment intent or refund of a `payment_outcome_pending` answer.
    pub object_id: Option<String>,
}

impl ApiError {
    /// An error with a status and code.
    pub fn new(status: StatusCode, code: &'static str) -> Self {
        Self { status, code, detail: None, fields: Vec::new(), headers: Vec::new(), cause: None, extras: None }
    }

    /// Adds a detail sentence.
    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// Adds a header.
    pub fn header(mut self, name: header::HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    /// 422 with the given invalid fields.
    pub fn validation(fields: Vec<ProblemField>) -> Self {
        let mut err = Self::new(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed")
            .detail("the request has invalid fields; see errors");
        err.fields = fields;
        err
    }

    /// 422 for one field.
    pub fn invalid_field(pointer: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::validation(vec![ProblemField { pointer: pointer.into(), detail: detail.into() }])
    }

    /// 404 `not_found`: the object does not exist or is not the caller's (indistinguishable).
    pub fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found").detail("no such object")
    }

    /// 401 `unauthenticated`, identical for missing, malformed, unknown, revoked and expired keys.
    pub fn unauthenticated() -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthenticated")
            .detail("a valid API key is required: Authorization: Bearer sr_live_…")
            .header(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"strongroom\""))
    }

    /// 403 `live_mode_required`: a test key asked for a deployment-wide scope.
    pub fn live_mode_required(scope: strongroom_domain::api_keys::Scope) -> Self {
        Self::new(StatusCode::FORBIDDEN, "live_mode_required")
            .detail(format!("{scope} acts on the whole deployment; only a live key (sr_live_…) may use it"))
    }

    /// 503 with `Retry-After`.
    pub fn unavailable(code: &'static str, retry_after_secs: u32) -> Self {
        let value = HeaderValue::from(retry_after_secs);
        Self::new(StatusCode::SERVICE_UNAVAILABLE, code).header(header::RETRY_AFTER, value)
    }

    /// 500 `internal_error`. The cause is logged with the request id, never shown.
    pub fn internal(cause: &dyn std::fmt::Display) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal_error")
            .detail("an internal error occurred; quote the request id when reporting it")
            .caused_by(cause)
    }

    /// Attaches the internal cause (logged, never shown).
    pub fn caused_by(mut self, cause: &dyn std::fmt::Display) -> Self {
        self.cause = Some(Box::new(cause.to_string()));
        self
    }

    /// The title of a code.
    pub fn title_of(code: &str) -> &'static str {
        match code {
            "validation_failed" => "The request has invalid fields",
            "proof_out_of_range" => "The proof asks for entries outside the log",
            "malformed_json" => "The body is not valid JSON",
            "malformed_request" => "The request is malformed",
            "unsupported_media_type" => "Unsupported content type",
            "payload_too_large" => "The request body is too large",
            "not_found" => "Not found",
            "method_not_allowed" => "Method not allowed",
            "unauthenticated" => "Authentication required",
            "insufficient_scope" => "The API key lacks a required scope",
            "live_mode_required" => "Only a live key may do this",
            "forbidden" => "Forbidden",
            "timeout" => "The request took too long",
            "overloaded" => "The server is overloaded",
            "database_unavailable" => "The database is unavailable",
            "kms_unavailable" => "The key management service is unavailable",
            "not_ready" => "The server is not ready",
            "conflict" => "Conflict",
            "https_required" => "HTTPS is required",
            "invalid_card_number" => "The card number is not valid",
            "card_expired" => "The card has expired",
            "invalid_expiry" => "The expiry date is not valid",
            "invalid_cvc" => "The card verification code is not valid",
            "invalid_iban" => "The IBAN is not valid",
            "invalid_email" => "The email address is not valid",
            "invalid_phone" => "The phone number is not valid",
            "invalid_address" => "The address is not valid",
            "value_too_large" => "The value is too large",
            "gone" => "The data was erased",
            "integrity_error" => "Stored data failed its integrity check",
            "rate_limited" => "Too many requests",
            "approval_required" => "A second operator's approval is required",
            "invalid_credentials" => "The credentials are not right",
            "login_throttled" => "Too many failed sign-ins: wait before trying again",
            "login_stopped" => "Password sign-in is stopped after too many failures",
            "invalid_code" => "The second factor is not right",
            "weak_password" => "The password does not meet the policy",
            "breached_password" => "The password appears in a data breach",
            "step_up_invalid" => "The step-up proof is not valid for this action",
            "totp_already_enrolled" => "TOTP is already enrolled",
            "no_pending_enrolment" => "No TOTP enrolment is pending",
            "totp_not_enrolled" => "TOTP is not enrolled",
            "no_second_factor" => "No second factor is enrolled",
            "email_not_verified" => "The email address is not verified",
            "invalid_invitation" => "The invitation is not valid",
            "password_reused" => "The password was used recently",
            "staff_exists" => "A staff account has this email",
            "role_exists" => "A role has this name",
            "role_held" => "The role is held already",
            "roles_changed" => "The roles changed meanwhile",
            "approval_not_usable" => "The approval cannot be used for this",
            "approval_not_pending" => "The approval request is no longer pending",
            "invitation_open" => "The invitation has not been accepted",
            "enrolment_not_started" => "No enrolment is pending",
            "too_many_passkeys" => "The account has as many passkeys as allowed",
            "passkey_exists" => "The passkey is registered already",
            "passkeys_off" => "Passkeys are not set up",
            "last_factor" => "The last second factor cannot be removed",
            "step_up_required" => "A step-up proof is required",
            "same_email" => "This is the account's address already",
            "email_taken" => "Another account has this address",
            "wrong_password" => "The current password is not right",
            "role_in_use" => "The role is held or requested",
            "last_owner" => "The last owner cannot be removed",
            "invalid_link" => "The link is not valid: unknown, used or expired",
            "invalid_session" => "The session is not live",
            "audit_unavailable" => "The audit log is unavailable",
            "payment_outcome_pending" => "The gateway call is recorded, its outcome is not yet",
            "too_many_endpoints" => "The merchant has as many webhook endpoints as allowed",
            "endpoint_disabled" => "The webhook endpoint is disabled",
            "invalid_idempotency_key" => "The Idempotency-Key header is not valid",
            "idempotency_key_reuse" => "The Idempotency-Key was used with a different request",
            "idempotency_in_progress" => "A request with this Idempotency-Key is still running",
            "idempotency_replay_unavailable" => "The first answer showed a secret once and was not kept",
            "idempotency_outcome_unknown" => {
                "The first request with this Idempotency-Key may or may not have taken effect"
            }
            "card_number_in_free_text" => "A card number was sent in a field that is not a vault value",
            "pan_preserving_too_short" => "The card number is too short for a format-preserving token",
            "already_retired" => "The signing key version is retired already",
            "newest_version" => "The newest signing key version cannot be retired",
            "tokens_may_be_live" => "Tokens this signing key version signed may still be valid",
            "forward_destination_not_allowed" => "The forward's destination is not allowed",
            "forward_template_invalid" => "The forward's body template is malformed",
            "forward_placeholder_unknown_field" => "A placeholder names a field a card does not have",
            "forward_token_not_card" => "A placeholder names a token that is not a card",
            "forward_cvc_unavailable" => "The card's CVC is not held (never given, used or expired)",
            "forward_field_empty" => "The card does not hold the field a placeholder asks for",
            "forward_content_type_unsupported" => "Placeholders need a JSON or form body",
            "forward_header_not_allowed" => "A header the forward may not carry",
            "forward_gateway_unreachable" => "The gateway could not be reached; nothing was sent",
            "forward_gateway_failed" => "The gateway's answer broke off after the request was sent",
            "forward_response_too_large" => "The gateway's answer is too large",
            "forward_gateway_timeout" => "The gateway did not answer in time",
            "payment_intent_unexpected_state" => "The payment intent's state does not allow this",
            "unknown_currency" => "The currency is not an ISO 4217 currency",
            "invalid_amount" => "The amount is not a valid amount of minor units",
            "invalid_quantity" => "The quantity is not valid",
            "order_total_mismatch" => "The order's total is not what strongroom computed",
            "order_not_found" => "The order does not exist",
            "order_locked" => "A payment on the order was confirmed; it cannot change",
            "order_changed" => "The order changed meanwhile",
            "amount_does_not_match_order" => "The amount is not the order's total",
            "amount_too_large" => "The amount exceeds what can be captured",
            "payment_method_not_found" => "The payment method is not a card token of this data space",
            "payment_method_customer_mismatch" => "The card token belongs to another customer",
            "refund_exceeds_captured" => "The refund exceeds the captured amount",
            "charge_already_refunded" => "The payment is refunded in full",
            "sandbox_only" => "Only the sandbox gateway offers this",
            "challenge_not_pending" => "The challenge was completed already",
            "invalid_return_url" => "The return URL is not an https:// URL strongroom can send a customer to",
            "step_up_unavailable" => "The payment needs a step-up its customer cannot give",
            "gateway_signature_missing" => "The gateway's webhook carries no signature",
            "gateway_signature_malformed" => "The gateway's webhook signature header is malformed",
            "gateway_signature_invalid" => "The gateway's webhook signature does not match",
            "gateway_signature_expired" => "The gateway's webhook signature is too old or too new",
            "gateway_event_malformed" => "The gateway's event is not of the expected shape",
            "stripe_not_configured" => "The payment gateway is not Stripe",
            "customer_required" => "The payment intent needs a customer for this",
            "consent_required" => "Saving a card needs the customer's consent",
            "saved_card_removed" => "The saved card was removed",
            "saved_card_required" => "A payment without the customer needs a saved card",
            "saved_card_not_for_off_session" => "The card was saved for the customer's own payments only",
            "client_blocked" => "The client is blocked for now: wait before trying again",
            "decision_exists" => "A decision about this client is in force",
            "decision_not_in_force" => "The decision was lifted or has ended",
            "incident_already_open" => "An incident of this shop is open or contained",
            "incident_state_conflict" => "The incident is in another state now",
            "incident_resolved" => "The incident is resolved",
            "refunds_frozen" => "Refunds are frozen during a security incident",
            "forwarding_frozen" => "Forward-proxy calls are frozen during a security incident",
            "api_key_suspended" => "The API key is suspended for now",
            "internal_error" => "Internal error",
            _ => "Internal error",
        }
    }

    /// Builds the problem document for a request id.
    pub fn to_problem(&self, request_id: &str) -> Problem {
        Problem {
            type_uri: format!("urn:strongroom:problem:{}", self.code),
            title: Self::title_of(self.code).to_owned(),
            status: self.status.as_u16(),
            detail: self.detail.clone(),
            code: self.code.to_owned(),
            request_id: request_id.to_owned(),
            errors: self.fields.clone(),
            approval_id: self.extras.as_ref().and_then(|e| e.approval_id.clone()),
            current_state: self.extras.as_ref().and_then(|e| e.current_state).map(str::to_owned),
            step_up: self.extras.as_ref().and_then(|e| e.step_up.clone()),
            object_id: self.extras.as_ref().and_then(|e| e.object_id.clone()),
        }
    }

    /// The default problem for a status a framework layer produced without a body of ours.
    pub fn for_bare_status(status: StatusCode) -> Self {
        match status {
            StatusCode::NOT_FOUND => Self::new(status, "not_found").detail("no route matches this path"),
            StatusCode::METHOD_NOT_ALLOWED => {
                Self::new(status, "method_not_allowed").detail("see the Allow header for the methods this route takes")
            }
            StatusCode::PAYLOAD_TOO_LARGE => {
                Self::new(status, "payload_too_large").detail("the request body exceeds the configured limit")
            }
            StatusCode::UNSUPPORTED_MEDIA_TYPE => {
                Self::new(status, "unsupported_media_type").detail("send Content-Type: application/json")
            }
            StatusCode::REQUEST_TIMEOUT | StatusCode::GATEWAY_TIMEOUT => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, "timeout").detail("the request did not complete in time")
            }
            StatusCode::SERVICE_UNAVAILABLE => Self::new(status, "overloaded").detail("try again shortly"),
            StatusCode::INTERNAL_SERVER_ERROR => Self::new(status, "internal_error")
                .detail("an internal error occurred; quote the request id when reporting it"),
            s if s.is_client_error() => Self::new(s, "malformed_request"),
            s => Self::new(s, "internal_error"),
        }
    }
}

impl From<FieldError> for ProblemField {
    fn from(e: FieldError) -> Self {
        Self { pointer: e.pointer, detail: e.detail }
    }
}

impl From<DomainError> for ApiError {
    fn from(err: DomainError) -> Self {
        match err {
            DomainError::Validation(fields) => Self::validation(fields.into_iter().map(ProblemField::from).collect()),
            DomainError::NotFound => Self::not_found(),
            DomainError::Forbidden(why) => Self::new(StatusCode::FORBIDDEN, "forbidden").detail(why),
            DomainError::Store(store) => store.into(),
            DomainError::Kms(kms) => Self::unavailable("kms_unavailable", 5).caused_by(&kms),
            DomainError::AuditUnavailable(cause) => Self::unavailable("audit_unavailable", 2).caused_by(&cause),
            DomainError::OutcomePending { object, cause } => {
                let mut err = Self::new(StatusCode::INTERNAL_SERVER_ERROR, "payment_outcome_pending")
                    .detail(format!(
                        "the gateway call of {object} was recorded and may have been made, but this request failed \
                         before it recorded the outcome; strongroom settles {object} with the gateway: fetch it for \
                         its state rather than sending this request again under a new Idempotency-Key"
                    ))
                    .caused_by(&cause);
                err.extras = Some(Box::new(ProblemExtras { object_id: Some(object), ..Default::default() }));
                err
            }
            DomainError::Rejected { code, errors } => {
                let mut err = Self::new(StatusCode::UNPROCESSABLE_ENTITY, code).detail("see errors");
                err.fields = errors.into_iter().map(ProblemField::from).collect();
                err
            }
            DomainError::MissingScope(scope) => Self::new(StatusCode::FORBIDDEN, "insufficient_scope")
                .detail(format!("this needs an API key with the scope {scope}")),
            DomainError::Gone => Self::new(StatusCode::GONE, "gone").detail("the customer's data was erased"),
            DomainError::Integrity => Self::new(StatusCode::INTERNAL_SERVER_ERROR, "integrity_error")
                .detail("stored data failed its integrity check; the incident was recorded"),
            DomainError::RateLimited(seconds) => Self::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited")
                .detail("too many reveals with this key; retry later")
                .header(header::RETRY_AFTER, HeaderValue::from(seconds)),
            DomainError::InvalidCredentials => {
                Self::new(StatusCode::UNAUTHORIZED, "invalid_credentials").detail("the email or password is not right")
            }
            DomainError::Throttled { code, retry_after } => {
                let mut err = Self::new(StatusCode::TOO_MANY_REQUESTS, code);
                err = match retry_after {
                    Some(seconds) => err
                        .detail("too many failed attempts; retry after the delay")
                        .header(header::RETRY_AFTER, HeaderValue::from(seconds)),
                    None => {
                        err.detail("too many failed attempts: password sign-in is stopped until the password is reset")
                    }
                };
                err
            }
            DomainError::InvalidFactor => Self::new(StatusCode::UNAUTHORIZED, "invalid_code")
                .detail("the code is not right, was used already, or the challenge has expired"),
            DomainError::Busy => {
                Self::unavailable("overloaded", 1).detail("too many sign-ins at once; try again shortly")
            }
            DomainError::Conflict(code, why) => Self::new(StatusCode::CONFLICT, code).detail(why),
            DomainError::UnexpectedState { code, state } => {
                let mut err = Self::new(StatusCode::CONFLICT, code)
                    .detail(format!("the object is {state}, which does not allow this; see current_state"));
                err.extras = Some(Box::new(ProblemExtras { current_state: Some(state), ..Default::default() }));
                err
            }
            DomainError::ApprovalRequired { approval_id } => {
                let mut err = Self::new(StatusCode::FORBIDDEN, "approval_required").detail(
                    "a second staff member must approve this: the request in approval_id was opened; repeat the \
                     call with it once it is approved",
                );
                err.extras = Some(Box::new(ProblemExtras { approval_id: Some(approval_id), ..Default::default() }));
                err
            }
            DomainError::StepUpRequired { purpose, binding } => {
                let mut err = Self::new(StatusCode::FORBIDDEN, "step_up_required").detail(
                    "this payment needs the customer's step-up: the customer asks for a proof with the purpose and \
                     binding in step_up (POST /v1/me/step-up), and the call is repeated with it as step_up_proof",
                );
                let step_up = serde_json::json!({"purpose": purpose, "binding": binding});
                err.extras = Some(Box::new(ProblemExtras { step_up: Some(step_up), ..Default::default() }));
                err
            }
            DomainError::TooLarge(why) => Self::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").detail(why),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Unavailable(cause) => Self::unavailable("database_unavailable", 2).caused_by(&cause),
            StoreError::Conflict(cause) => Self::new(StatusCode::CONFLICT, "conflict")
                .detail("the request conflicts with the current state")
                .caused_by(&cause),
            StoreError::Other(cause) => Self::internal(&cause),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = self.status.into_response();
        for (name, value) in &self.headers {
            response.headers_mut().insert(name.clone(), value.clone());
        }
        response.extensions_mut().insert(self);
        response
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::{Path, PathBuf};

    use super::ApiError;

    /// Codes the domain produces for the command line only (signing key retirement), not the API.
    const CLI_ONLY: &[&str] = &["already_retired", "newest_version", "tokens_may_be_live"];

    fn workspace() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
    }

    fn rust_files(dir: &Path, into: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                rust_files(&path, into);
            } else if path.extension().is_some_and(|e| e == "rs") {
                into.push(path);
            }
        }
    }

    /// The `[a-z_]+` literal that starts right after `marker`'s end.
    fn literal_after(text: &str) -> Option<&str> {
        let rest = text.strip_prefix('"')?;
        let end = rest.find('"')?;
        let code = &rest[..end];
        (!code.is_empty() && code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')).then_some(code)
    }

    /// Problem codes written as literals where errors are made: `code: "…"` (`Rejected`,
    /// `Throttled`, batch items), `Conflict("…"`, `reject("…"` (payments), `StatusCode::X, "…"` and
    /// `unavailable("…"`.
    fn codes_in_source() -> BTreeSet<String> {
        let mut files = Vec::new();
        for entry in std::fs::read_dir(workspace().join("crates")).unwrap().flatten() {
            let src = entry.path().join("src");
            if src.is_dir() {
                rust_files(&src, &mut files);
            }
        }
        let mut codes = BTreeSet::new();
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            // Unit tests make up errors of their own.
            let text = text.split("#[cfg(test)]").next().unwrap_or_default();
            for marker in ["code: ", "Conflict(", "unavailable(", "reject(", "Self::new(status, ", "Self::new(s, "] {
                for (at, _) in text.match_indices(marker) {
                    if let Some(code) = literal_after(&text[at + marker.len()..]) {
                        codes.insert(code.to_owned());
                    }
                }
            }
            for (at, _) in text.match_indices("StatusCode::") {
                let rest = &text[at + "StatusCode::".len()..];
                let name_len = rest.bytes().take_while(|b| b.is_ascii_uppercase() || *b == b'_').count();
                if let Some(code) = rest[name_len..].strip_prefix(", ").and_then(literal_after) {
                    codes.insert(code.to_owned());
                }
            }
        }
        codes
    }

    /// Codes in the table of docs/errors.md.
    fn codes_in_docs() -> BTreeSet<String> {
        let docs = std::fs::read_to_string(workspace().join("docs/errors.md")).unwrap();
        let mut codes = BTreeSet::new();
        for line in docs.lines().filter(|l| l.starts_with("| ")) {
            let Some(column) = line.split('|').nth(2) else { continue };
            for piece in column.split('`').skip(1).step_by(2) {
                if piece.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') && !piece.is_empty() {
                    codes.insert(piece.to_owned());
                }
            }
        }
        codes
    }

    #[test]
    fn every_code_has_its_own_title_and_is_documented() {
        let docs = codes_in_docs();
        let mut source = codes_in_source();
        source.insert(strongroom_domain::free_text::CODE.to_owned());
        for code in [
            strongroom_domain::idempotency::codes::REUSE,
            strongroom_domain::idempotency::codes::IN_PROGRESS,
            strongroom_domain::idempotency::codes::REPLAY_UNAVAILABLE,
            strongroom_domain::idempotency::codes::OUTCOME_UNKNOWN,
            strongroom_domain::forward::DESTINATION_NOT_ALLOWED,
            strongroom_domain::forward::TOKEN_NOT_CARD,
            strongroom_domain::forward::CVC_UNAVAILABLE,
            strongroom_domain::forward::FIELD_EMPTY,
            strongroom_domain::forward::CONTENT_TYPE_UNSUPPORTED,
            strongroom_domain::forward::HEADER_NOT_ALLOWED,
            strongroom_domain::forward::template::TEMPLATE_INVALID,
            strongroom_domain::forward::template::UNKNOWN_FIELD,
            strongroom_domain::payments::gateway_events::NoticeRejected::MissingSignature.code(),
            strongroom_domain::payments::gateway_events::NoticeRejected::MalformedSignature.code(),
            strongroom_domain::payments::gateway_events::NoticeRejected::BadSignature.code(),
            strongroom_domain::payments::gateway_events::NoticeRejected::StaleSignature.code(),
            strongroom_domain::payments::gateway_events::NoticeRejected::Malformed.code(),
        ] {
            source.insert(code.to_owned());
        }
        assert!(source.len() > 50 && docs.len() > 50, "the scans found codes: {source:?} {docs:?}");
        let untitled: Vec<&String> = docs
            .iter()
            .chain(&source)
            .filter(|c| c.as_str() != "internal_error" && ApiError::title_of(c) == "Internal error")
            .collect();
        assert!(untitled.is_empty(), "codes without a title of their own: {untitled:?}");
        let undocumented: Vec<&String> =
            source.iter().filter(|c| !docs.contains(*c) && !CLI_ONLY.contains(&c.as_str())).collect();
        assert!(undocumented.is_empty(), "codes missing from docs/errors.md: {undocumented:?}");
    }
}
