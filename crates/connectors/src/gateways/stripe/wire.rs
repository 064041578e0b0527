//! Stripe's wire types: the parts of PaymentIntents, PaymentMethods, Refunds, Disputes, Events
//! and error bodies the connector reads, the total mappings of Stripe's statuses onto ours, and
//! the `application/x-www-form-urlencoded` body Stripe's API takes.
//! Must never: derive `Debug` on anything that holds a card detail (the form body is built into a
//! wiped buffer and never printed), or map a status it does not know onto a success.

use std::collections::BTreeMap;

use serde::Deserialize;
use strongroom_domain::payments::gateway::GatewayStatus;
use zeroize::Zeroizing;

/// A PaymentIntent as Stripe answers it.
#[derive(Debug, Clone, Deserialize)]
pub struct PaymentIntent {
    /// `pi_…` (Stripe's).
    pub id: String,
    /// Stripe's status.
    pub status: String,
    /// Captured so far, minor units.
    #[serde(default)]
    pub amount_received: Option<i64>,
    /// What the customer must do.
    #[serde(default)]
    pub next_action: Option<NextAction>,
    /// Why the last attempt failed.
    #[serde(default)]
    pub last_payment_error: Option<ErrorBody>,
    /// Our keys: `strongroom_intent`, `strongroom_key`.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// The Stripe Customer it is for (`cus_…`).
    #[serde(default)]
    pub customer: Option<Expandable<Named>>,
    /// The PaymentMethod it charges (`pm_…`).
    #[serde(default)]
    pub payment_method: Option<Expandable<Named>>,
    /// `on_session` / `off_session`: the card is kept for later, attached to `customer`.
    #[serde(default)]
    pub setup_future_usage: Option<String>,
    /// The last charge: its id, or (asked for with `expand[]=latest_charge`) the charge.
    #[serde(default)]
    pub latest_charge: Option<Expandable<Charge>>,
}

impl PaymentIntent {
    /// The card network's id of the latest charge's authorisation, when Stripe gave the charge
    /// (expanded) and the network reported one.
    pub fn network_transaction_id(&self) -> Option<String> {
        let Some(Expandable::Object(charge)) = &self.latest_charge else { return None };
        let id = charge.payment_method_details.as_ref()?.card.as_ref()?.network_transaction_id.clone()?;
        (!id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric())).then_some(id)
    }

    /// For a PaymentIntent that keeps its card for later (`setup_future_usage` with a
    /// Customer): the handle later payments name it by, `stripe:<cus_…>:<pm_…>`.
    pub fn stored_method(&self) -> Option<String> {
        self.setup_future_usage.as_ref()?;
        let customer = self.customer.as_ref()?.id();
        let method = self.payment_method.as_ref()?.id();
        let handle = format!("stripe:{customer}:{method}");
        stored_method(&handle).is_some().then_some(handle)
    }
}

/// The Customer and PaymentMethod of a handle made by [`PaymentIntent::stored_method`]; `None`
/// for anything else (a handle of another gateway).
pub fn stored_method(handle: &str) -> Option<(&str, &str)> {
    let (customer, method) = handle.strip_prefix("stripe:")?.split_once(':')?;
    (customer.starts_with("cus_") && plausible_id(customer) && method.starts_with("pm_") && plausible_id(method))
        .then_some((customer, method))
}

/// A field Stripe gives as an id, or as the object itself when it was expanded.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Expandable<T> {
    /// Not expanded.
    Id(String),
    /// Expanded.
    Object(T),
}

impl Expandable<Named> {
    /// The id either way.
    pub fn id(&self) -> &str {
        match self {
            Expandable::Id(id) => id,
            Expandable::Object(named) => &named.id,
        }
    }
}

/// Any object, of which only the id is read.
#[derive(Debug, Clone, Deserialize)]
pub struct Named {
    /// Stripe's id.
    #[serde(default)]
    pub id: String,
}

/// A Charge (the parts read: the network's transaction id).
#[derive(Debug, Clone, Deserialize)]
pub struct Charge {
    /// How it was paid.
    #[serde(default)]
    pub payment_method_details: Option<ChargeMethodDetails>,
}

/// `payment_method_details` of a Charge.
#[derive(Debug, Clone, Deserialize)]
pub struct ChargeMethodDetails {
    /// For a card payment.
    #[serde(default)]
    pub card: Option<ChargeCard>,
}

/// `payment_method_details.card` of a Charge (never the card's number: Stripe does not return
/// it, and nothing else is read).
#[derive(Debug, Clone, Deserialize)]
pub struct ChargeCard {
    /// Visa's Transaction ID, Mastercard's Trace ID, …, when the network reported one.
    #[serde(default)]
    pub network_transaction_id: Option<String>,
}

/// `next_action` of a PaymentIntent.
#[derive(Debug, Clone, Deserialize)]
pub struct NextAction {
    /// `redirect_to_url`, `use_stripe_sdk`, …
    #[serde(rename = "type", default)]
    pub kind: String,
    /// With `redirect_to_url`.
    #[serde(default)]
    pub redirect_to_url: Option<RedirectToUrl>,
}

/// Where Stripe sends the customer.
#[derive(Debug, Clone, Deserialize)]
pub struct RedirectToUrl {
    /// The issuer's (or Stripe's) page.
    #[serde(default)]
    pub url: Option<String>,
}

/// A PaymentMethod (only its id is read).
#[derive(Debug, Clone, Deserialize)]
pub struct PaymentMethod {
    /// `pm_…`
    pub id: String,
}

/// A Refund.
#[derive(Debug, Clone, Deserialize)]
pub struct Refund {
    /// `re_…` (Stripe's).
    pub id: String,
    /// `pending`, `requires_action`, `succeeded`, `failed`, `canceled`.
    #[serde(default)]
    pub status: String,
    /// Why it failed.
    #[serde(default)]
    pub failure_reason: Option<String>,
    /// Our keys.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

/// A list answer (`/v1/payment_intents/search`, `/v1/refunds`).
#[derive(Debug, Clone, Deserialize)]
pub struct List<T> {
    /// The objects.
    #[serde(default = "Vec::new")]
    pub data: Vec<T>,
    /// More follow the last one (`starting_after` its id).
    #[serde(default)]
    pub has_more: bool,
}

/// Stripe's error envelope: `{"error": {…}}`.
#[derive(Debug, Clone, Deserialize)]
pub struct ErrorEnvelope {
    /// The error.
    pub error: ErrorBody,
}

/// A Stripe error (or a PaymentIntent's `last_payment_error`).
#[derive(Debug, Clone, Deserialize)]
pub struct ErrorBody {
    /// `card_declined`, `expired_card`, `incorrect_cvc`, …
    #[serde(default)]
    pub code: Option<String>,
    /// The issuer's reason.
    #[serde(default)]
    pub decline_code: Option<String>,
    /// The PaymentIntent a declined confirmation left behind.
    #[serde(default)]
    pub payment_intent: Option<Box<PaymentIntent>>,
}

/// An Event, as a webhook delivers it.
#[derive(Debug, Clone, Deserialize)]
pub struct Event {
    /// `evt_…`
    pub id: String,
    /// `payment_intent.succeeded`, `charge.dispute.created`, …
    #[serde(rename = "type")]
    pub kind: String,
    /// The object.
    pub data: EventData,
}

/// `data` of an Event.
#[derive(Debug, Clone, Deserialize)]
pub struct EventData {
    /// The object the event is about (its shape depends on the type).
    pub object: serde_json::Value,
}

/// A Dispute.
#[derive(Debug, Clone, Deserialize)]
pub struct Dispute {
    /// `dp_…` (Stripe's; ours have their own ids).
    pub id: String,
    /// Disputed amount, minor units.
    pub amount: i64,
    /// Lower-case ISO 4217.
    pub currency: String,
    /// `fraudulent`, `product_not_received`, …
    #[serde(default)]
    pub reason: Option<String>,
    /// `warning_needs_response`, `needs_response`, `under_review`, `won`, `lost`, …
    pub status: String,
    /// Stripe's PaymentIntent.
    #[serde(default)]
    pub payment_intent: Option<String>,
    /// Stripe's charge.
    #[serde(default)]
    pub charge: Option<String>,
    /// The deadline for evidence.
    #[serde(default)]
    pub evidence_details: Option<EvidenceDetails>,
}

/// `evidence_details` of a Dispute.
#[derive(Debug, Clone, Deserialize)]
pub struct EvidenceDetails {
    /// Unix seconds.
    #[serde(default)]
    pub due_by: Option<i64>,
}

/// Stripe's PaymentIntent statuses. Unknown ones are kept apart, never taken for a success.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntentStatus {
    /// No (usable) payment method: after a confirmation, a decline.
    RequiresPaymentMethod,
    /// Not confirmed.
    RequiresConfirmation,
    /// The customer must authenticate.
    RequiresAction,
    /// Stripe is working on it.
    Processing,
    /// Authorised, waiting for a capture.
    RequiresCapture,
    /// Captured.
    Succeeded,
    /// Canceled (an authorisation voided).
    Canceled,
    /// A status this connector does not know.
    Unknown,
}

impl IntentStatus {
    /// Parses Stripe's name.
    pub fn parse(text: &str) -> Self {
        match text {
            "requires_payment_method" => Self::RequiresPaymentMethod,
            "requires_confirmation" => Self::RequiresConfirmation,
            "requires_action" => Self::RequiresAction,
            "processing" => Self::Processing,
            "requires_capture" => Self::RequiresCapture,
            "succeeded" => Self::Succeeded,
            "canceled" => Self::Canceled,
            _ => Self::Unknown,
        }
    }

    /// Ours. Total: every status has its arm, and an unknown one is `Pending` (reconciled later).
    pub const fn gateway_status(self) -> GatewayStatus {
        match self {
            Self::RequiresPaymentMethod => GatewayStatus::Declined,
            Self::RequiresAction => GatewayStatus::RequiresAction,
            Self::RequiresCapture => GatewayStatus::Authorized,
            Self::Succeeded => GatewayStatus::Captured,
            Self::Canceled => GatewayStatus::Voided,
            Self::RequiresConfirmation | Self::Processing | Self::Unknown => GatewayStatus::Pending,
        }
    }
}

/// Stripe's Refund statuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefundStatus {
    /// Not settled.
    Pending,
    /// The customer must act (some payment methods).
    RequiresAction,
    /// Made.
    Succeeded,
    /// Failed.
    Failed,
    /// Canceled before it was made.
    Canceled,
    /// A status this connector does not know.
    Unknown,
}

impl RefundStatus {
    /// Parses Stripe's name.
    pub fn parse(text: &str) -> Self {
        match text {
            "pending" => Self::Pending,
            "requires_action" => Self::RequiresAction,
            "succeeded" => Self::Succeeded,
            "failed" => Self::Failed,
            "canceled" => Self::Canceled,
            _ => Self::Unknown,
        }
    }

    /// Ours. Total; unknown is `Pending`.
    pub const fn gateway_status(self) -> GatewayStatus {
        match self {
            Self::Succeeded => GatewayStatus::Refunded,
            Self::Failed | Self::Canceled => GatewayStatus::Failed,
            Self::Pending | Self::RequiresAction | Self::Unknown => GatewayStatus::Pending,
        }
    }
}

/// A code Stripe sent, kept only when it looks like one (`a-z`, `0-9`, `_`, at most 64), so no
/// free text of the gateway's lands in an intent.
pub fn code(text: Option<&str>) -> Option<String> {
    text.filter(|t| {
        !t.is_empty() && t.len() <= 64 && t.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    })
    .map(str::to_owned)
}

/// Whether `id` can go into a URL path as a Stripe id (`pi_…`, `re_…`).
pub fn plausible_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 255 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// An `application/x-www-form-urlencoded` body in a buffer wiped when dropped (it may hold a
/// card number).
#[derive(Default)]
pub struct Form(Zeroizing<String>);

impl std::fmt::Debug for Form {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Form(***)")
    }
}

impl Form {
    /// An empty body.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `name=value`.
    pub fn field(mut self, name: &str, value: &str) -> Self {
        if !self.0.is_empty() {
            self.0.push('&');
        }
        encode_into(&mut self.0, name);
        self.0.push('=');
        encode_into(&mut self.0, value);
        self
    }

    /// The body's bytes (a copy for the HTTP client; this buffer is wiped on drop).
    pub fn to_bytes(&self) -> Vec<u8> {
        self.0.as_bytes().to_vec()
    }
}

fn encode_into(out: &mut String, text: &str) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => out.push(char::from(byte)),
            b' ' => out.push('+'),
            _ => {
                out.push('%');
                out.push(char::from(HEX[usize::from(byte >> 4)]));
                out.push(char::from(HEX[usize::from(byte & 0x0f)]));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_intent_status_maps_and_unknown_is_never_a_success() {
        let cases = [
            ("requires_payment_method", GatewayStatus::Declined),
            ("requires_confirmation", GatewayStatus::Pending),
            ("requires_action", GatewayStatus::RequiresAction),
            ("processing", GatewayStatus::Pending),
            ("requires_capture", GatewayStatus::Authorized),
            ("succeeded", GatewayStatus::Captured),
            ("canceled", GatewayStatus::Voided),
            ("something_new", GatewayStatus::Pending),
            ("", GatewayStatus::Pending),
        ];
        for (name, status) in cases {
            assert_eq!(IntentStatus::parse(name).gateway_status(), status, "{name}");
        }
        assert_eq!(RefundStatus::parse("succeeded").gateway_status(), GatewayStatus::Refunded);
        assert_eq!(RefundStatus::parse("failed").gateway_status(), GatewayStatus::Failed);
        assert_eq!(RefundStatus::parse("new").gateway_status(), GatewayStatus::Pending);
    }

    #[test]
    fn forms_are_encoded() {
        let form = Form::new().field("card[number]", "4242 42").field("metadata[k]", "a&b=c/é");
        assert_eq!(
            String::from_utf8(form.to_bytes()).unwrap_or_default(),
            "card%5Bnumber%5D=4242+42&metadata%5Bk%5D=a%26b%3Dc%2F%C3%A9"
        );
    }

    #[test]
    fn codes_and_ids_are_checked() {
        assert_eq!(code(Some("card_declined")).as_deref(), Some("card_declined"));
        assert_eq!(code(Some("Your card 4242")), None);
        assert!(plausible_id("pi_3Abc"));
        assert!(!plausible_id("pi_1/../x"));
    }

    #[test]
    fn a_kept_card_and_the_network_id_are_read_from_the_intent() {
        let expanded: PaymentIntent = serde_json::from_str(
            r#"{"id":"pi_1","status":"succeeded","customer":"cus_9","payment_method":"pm_7",
                "setup_future_usage":"off_session","latest_charge":{"id":"ch_1",
                "payment_method_details":{"type":"card","card":{"network_transaction_id":"123456789012345"}}}}"#,
        )
        .unwrap();
        assert_eq!(expanded.network_transaction_id().as_deref(), Some("123456789012345"));
        assert_eq!(expanded.stored_method().as_deref(), Some("stripe:cus_9:pm_7"));
        assert_eq!(stored_method("stripe:cus_9:pm_7"), Some(("cus_9", "pm_7")));
        // Not expanded, not kept, or with an expanded customer: read as Stripe gives them.
        let plain: PaymentIntent = serde_json::from_str(
            r#"{"id":"pi_2","status":"succeeded","customer":{"id":"cus_9"},"payment_method":"pm_7",
                "setup_future_usage":null,"latest_charge":"ch_2"}"#,
        )
        .unwrap();
        assert_eq!((plain.network_transaction_id(), plain.stored_method()), (None, None));
        let odd: PaymentIntent = serde_json::from_str(
            r#"{"id":"pi_3","status":"succeeded","customer":{"id":"cus_9"},"payment_method":"pm_7",
                "setup_future_usage":"on_session","latest_charge":{"payment_method_details":{"card":
                {"network_transaction_id":"12 34"}}}}"#,
        )
        .unwrap();
        assert_eq!((odd.network_transaction_id(), odd.stored_method().as_deref()), (None, Some("stripe:cus_9:pm_7")));
        for other in ["sandbox:x", "stripe:cus_9", "stripe:pm_7:cus_9", "stripe:cus_9:pm_7/../x", ""] {
            assert_eq!(stored_method(other), None, "{other}");
        }
    }
}
