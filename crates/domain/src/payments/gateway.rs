//! The gateway port: one small, object-safe trait every payment gateway adapter implements
//! (the sandbox now; Stripe and the forward proxy later), and the total mapping of a gateway's
//! answer onto the intent's state machine.
//!
//! Every call carries an idempotency key derived from the intent (or refund), the operation and
//! the attempt ([`idempotency_key`]), recorded in the database before the call is made: a retry
//! after a crash sends the same key, and the gateway answers the first call again instead of
//! charging twice. [`Gateway::lookup`] asks what became of a call whose answer was lost.
//! Must never: put a card number or CVC in a `Debug` print, a log line or an error; carry a card
//! anywhere but in an [`AuthorizeRequest`].

use async_trait::async_trait;
use strongroom_types::{Money, Secret};

use crate::payments::state::Event;
use crate::ports::payments::{FutureUsage, MitReason, NextAction, PaymentError};

/// The idempotency key of a gateway call: `<object id>:<operation>:<attempt>`.
pub fn idempotency_key(object: &str, operation: &str, attempt: u32) -> String {
    format!("{object}:{operation}:{attempt}")
}

/// A card as the gateway needs it. Its `Debug` print shows nothing of the card.
pub struct GatewayCard {
    /// The card number (digits).
    pub number: Secret<String>,
    /// Expiry month, 1 to 12.
    pub exp_month: u8,
    /// Expiry year, four digits.
    pub exp_year: u16,
    /// The verification code, for the first authorisation only (then it is gone).
    pub cvc: Option<Secret<String>>,
}

impl std::fmt::Debug for GatewayCard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayCard").field("cvc_present", &self.cvc.is_some()).finish_non_exhaustive()
    }
}

/// Authorise (and, with `capture`, capture) an amount on a card.
#[derive(Debug)]
pub struct AuthorizeRequest {
    /// See [`idempotency_key`].
    pub idempotency_key: String,
    /// The intent's id.
    pub reference: String,
    /// How much.
    pub amount: Money,
    /// Capture with the authorisation (automatic capture).
    pub capture: bool,
    /// The card.
    pub card: GatewayCard,
    /// The gateway's id of this intent's payment from an earlier attempt, if any (a confirmation
    /// after 3-D Secure resumes that payment at a gateway that keeps one, such as Stripe).
    pub gateway_reference: Option<String>,
    /// A stored card's part in this payment (the networks' stored-credential flags), if any.
    pub stored_credential: Option<StoredCredential>,
}

/// What the card networks must be told about a stored card (Visa's and Mastercard's
/// stored-credential framework): its first use, when it is being saved, or a later use with the
/// network's id of that first payment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoredCredential {
    /// The customer is paying and agreed to keep the card for `usage`.
    First(FutureUsage),
    /// The customer pays again with their saved card.
    CustomerInitiated {
        /// The network's id of the first payment, when known.
        network_transaction_id: Option<String>,
        /// The gateway's own handle on the saved card, when its first payment gave one
        /// ([`GatewayAnswer::stored_method`]).
        stored_method: Option<String>,
    },
    /// The shop charges the saved card without the customer.
    MerchantInitiated {
        /// Why.
        reason: MitReason,
        /// The network's id of the first payment (networks refuse a merchant-initiated
        /// payment that names none).
        network_transaction_id: Option<String>,
        /// The gateway's own handle on the saved card, when its first payment gave one
        /// ([`GatewayAnswer::stored_method`]).
        stored_method: Option<String>,
    },
}

impl StoredCredential {
    /// A short label for logs and the sandbox's ledger: `first:<usage>`,
    /// `customer:<network id>`, `merchant:<reason>:<network id>`.
    pub fn label(&self) -> String {
        match self {
            StoredCredential::First(usage) => format!("first:{}", usage.as_str()),
            StoredCredential::CustomerInitiated { network_transaction_id, .. } => {
                format!("customer:{}", network_transaction_id.as_deref().unwrap_or(""))
            }
            StoredCredential::MerchantInitiated { reason, network_transaction_id, .. } => {
                format!("merchant:{}:{}", reason.as_str(), network_transaction_id.as_deref().unwrap_or(""))
            }
        }
    }
}

/// Capture, void or refund an earlier authorisation.
#[derive(Debug, Clone)]
pub struct FollowUpRequest {
    /// See [`idempotency_key`].
    pub idempotency_key: String,
    /// The intent's id.
    pub reference: String,
    /// The gateway's id of the payment.
    pub gateway_reference: String,
    /// How much (the captured or refunded amount; for a void, the authorised one).
    pub amount: Money,
}

/// Ask what became of an earlier call whose answer strongroom does not know.
#[derive(Debug, Clone)]
pub struct LookupRequest {
    /// The call's key (see [`idempotency_key`]).
    pub idempotency_key: String,
    /// The gateway's id of the payment the call was about, when known: a gateway that cannot
    /// be asked by key alone looks among that payment's refunds (Stripe).
    pub payment_reference: Option<String>,
}

/// Ask what became of an authorisation after the customer's action (3-D Secure): the gateway
/// holds the card from the first call, so none is sent.
#[derive(Debug, Clone)]
pub struct ResumeRequest {
    /// See [`idempotency_key`] (a new attempt of the authorisation).
    pub idempotency_key: String,
    /// The intent's id.
    pub reference: String,
    /// The gateway's id of the payment.
    pub gateway_reference: String,
    /// How much.
    pub amount: Money,
    /// Capture with the authorisation (automatic capture).
    pub capture: bool,
}

/// What the gateway says became of a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GatewayStatus {
    /// Authorised, not captured.
    Authorized,
    /// Captured (with the authorisation, or later).
    Captured,
    /// The customer must authenticate first.
    RequiresAction,
    /// Declined by the issuer or the gateway.
    Declined,
    /// The authorisation was voided.
    Voided,
    /// Refunded.
    Refunded,
    /// The call failed (a capture, void or refund the gateway refused).
    Failed,
    /// Not settled yet (the gateway is still working on it).
    Pending,
}

/// A gateway's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayAnswer {
    /// What became of the call.
    pub status: GatewayStatus,
    /// The gateway's id of the payment (or refund).
    pub gateway_reference: String,
    /// Why it was declined or failed.
    pub error: Option<PaymentError>,
    /// What the customer must do (with [`GatewayStatus::RequiresAction`]).
    pub next_action: Option<NextAction>,
    /// The card network's id of an approved authorisation (kept with a saved card, and sent
    /// with its merchant-initiated payments).
    pub network_transaction_id: Option<String>,
    /// For an approved first payment of a card the customer agreed to keep: the gateway's own
    /// handle on that card, kept with the saved card and given back with its later payments
    /// (Stripe: its Customer and PaymentMethod, through which Stripe links later payments to
    /// the first one for the networks). Never a card number.
    pub stored_method: Option<String>,
}

impl GatewayAnswer {
    /// An answer with only a status and the gateway's reference.
    pub fn of(status: GatewayStatus, gateway_reference: impl Into<String>) -> Self {
        Self {
            status,
            gateway_reference: gateway_reference.into(),
            error: None,
            next_action: None,
            network_transaction_id: None,
            stored_method: None,
        }
    }
}

/// Why a call has no answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum GatewayError {
    /// No answer in time: the call may or may not have taken effect (reconcile by its key).
    #[error("the gateway did not answer in time")]
    Timeout,
    /// The gateway could not be reached or answered with an error of its own; the message is
    /// for logs only and never holds a card detail.
    #[error("gateway unavailable: {0}")]
    Unavailable(String),
}

/// A payment gateway. Non-generic and object-safe: held as `Arc<dyn Gateway>`.
#[async_trait]
pub trait Gateway: Send + Sync + std::fmt::Debug {
    /// A stable name stored with each intent (`sandbox`, `stripe`, …).
    fn name(&self) -> &'static str;
    /// Authorises (and with `capture` captures) an amount.
    async fn authorize(&self, request: AuthorizeRequest) -> Result<GatewayAnswer, GatewayError>;
    /// Captures (part of) an authorisation.
    async fn capture(&self, request: &FollowUpRequest) -> Result<GatewayAnswer, GatewayError>;
    /// Voids an authorisation.
    async fn cancel(&self, request: &FollowUpRequest) -> Result<GatewayAnswer, GatewayError>;
    /// Refunds (part of) a captured amount.
    async fn refund(&self, request: &FollowUpRequest) -> Result<GatewayAnswer, GatewayError>;
    /// What became of an earlier call, by its idempotency key (`None`: the gateway never saw it).
    async fn lookup(&self, request: &LookupRequest) -> Result<Option<GatewayAnswer>, GatewayError>;
    /// How long a call may take to show in [`Gateway::lookup`] after it was made (a gateway
    /// whose search is eventually consistent): until then "never seen" is not believed.
    /// Default: none (the gateway's record is written before it answers).
    fn lookup_lag(&self) -> std::time::Duration {
        std::time::Duration::ZERO
    }
    /// Goes on with an authorisation once the customer has done what it required (3-D
    /// Secure), and says what became of it. A gateway that reports the outcome only by its own
    /// notifications answers [`GatewayError::Unavailable`].
    async fn resume(&self, request: &ResumeRequest) -> Result<GatewayAnswer, GatewayError> {
        let _ = request;
        Err(GatewayError::Unavailable(format!("the {} gateway reports authentication outcomes by itself", self.name())))
    }
}

/// Completes a simulated 3-D Secure challenge: the sandbox's stand-in for the customer at the
/// issuer's page (the hosted hand-off page will use it too).
#[async_trait]
pub trait ChallengeSimulator: Send + Sync + std::fmt::Debug {
    /// Passes or fails a pending challenge; false when it is unknown or not pending.
    async fn complete(&self, challenge: &str, passed: bool) -> Result<bool, GatewayError>;
    /// A challenge's payment (the intent's id) and status (`pending`, `passed`, `failed`,
    /// `consumed`); `None` when unknown.
    async fn challenge(&self, challenge: &str) -> Result<Option<(String, String)>, GatewayError>;
}

/// The event a gateway's answer to an authorisation means. `None`: no decision yet (the intent
/// stays `processing` until reconciliation asks again). Total: every status has its arm.
pub const fn authorization_event(status: GatewayStatus) -> Option<Event> {
    match status {
        GatewayStatus::Authorized => Some(Event::Authorized { captured: false }),
        GatewayStatus::Captured => Some(Event::Authorized { captured: true }),
        GatewayStatus::RequiresAction => Some(Event::ActionRequired),
        GatewayStatus::Declined | GatewayStatus::Failed => Some(Event::Declined),
        // A void or refund is no answer to an authorisation: leave it to reconciliation.
        GatewayStatus::Voided | GatewayStatus::Refunded | GatewayStatus::Pending => None,
    }
}

/// The event a gateway's answer to a capture means.
pub const fn capture_event(status: GatewayStatus) -> Option<Event> {
    match status {
        GatewayStatus::Captured => Some(Event::Captured),
        GatewayStatus::Declined | GatewayStatus::Failed => Some(Event::CaptureFailed),
        GatewayStatus::Authorized
        | GatewayStatus::RequiresAction
        | GatewayStatus::Voided
        | GatewayStatus::Refunded
        | GatewayStatus::Pending => None,
    }
}

/// The event a gateway's answer to a void means.
pub const fn void_event(status: GatewayStatus) -> Option<Event> {
    match status {
        GatewayStatus::Voided => Some(Event::Voided),
        GatewayStatus::Declined | GatewayStatus::Failed => Some(Event::VoidFailed),
        GatewayStatus::Authorized
        | GatewayStatus::Captured
        | GatewayStatus::RequiresAction
        | GatewayStatus::Refunded
        | GatewayStatus::Pending => None,
    }
}

/// A refund's status after the gateway's answer: `Some(true)` succeeded, `Some(false)` failed,
/// `None` not settled.
pub const fn refund_settled(status: GatewayStatus) -> Option<bool> {
    match status {
        GatewayStatus::Refunded => Some(true),
        GatewayStatus::Declined | GatewayStatus::Failed => Some(false),
        GatewayStatus::Authorized
        | GatewayStatus::Captured
        | GatewayStatus::RequiresAction
        | GatewayStatus::Voided
        | GatewayStatus::Pending => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_name_the_object_operation_and_attempt() {
        assert_eq!(idempotency_key("pi_1", "authorize", 2), "pi_1:authorize:2");
    }

    #[test]
    fn a_card_never_prints() {
        let card = GatewayCard {
            number: Secret::new("4242424242424242".into()),
            exp_month: 12,
            exp_year: 2040,
            cvc: Some(Secret::new("123".into())),
        };
        let printed = format!("{card:?}");
        assert!(!printed.contains("4242") && !printed.contains("123"), "{printed}");
    }
}
