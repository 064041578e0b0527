//! Payments: orders (`/v1/orders`), payment intents (`/v1/payment_intents`) and refunds
//! (`/v1/refunds`), in Stripe's shapes (prefixed ids, `{amount, currency}` in minor units,
//! `starting_after`/`limit` lists, `livemode`). Scopes `payments:write`, `payments:read` and
//! `payments:refund`.
//! Must never: take a total, status or card number from the client as given, echo an input in an
//! error, or show a card beyond its brand and last four digits.

use axum::Json;
use axum::extract::{Path, State};
use http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use strongroom_domain::DomainError;
use strongroom_domain::payments::Caller;
use strongroom_domain::payments::checkout::ConfirmExtras;
use strongroom_domain::payments::fraud::ClientSignals;
use strongroom_domain::payments::intents::NewIntent;
use strongroom_domain::payments::orders::{DiscountInput, LineItemInput, OrderInput, OrderView};
use strongroom_domain::payments::refunds::NewRefund;
use strongroom_domain::payments::saved_cards::{CardOnFileInput, ConsentInput};
use strongroom_domain::ports::payments::{IntentRecord, RefundRecord};
use strongroom_domain::vault::tokens::Source;
use strongroom_types::Timestamp;
use utoipa::{IntoParams, ToSchema};

use crate::extract::{ApiJson, ApiKeyAuth, ApiQuery, CustomerAuth, RequestContext, scope};
use crate::problem::{ApiError, Problem};
use crate::state::AppState;

fn source(context: &RequestContext) -> Source {
    Source { ip: context.ip, request_id: context.request_id.clone() }
}

fn metadata_value(text: Option<&str>) -> Option<Value> {
    text.and_then(|t| serde_json::from_str(t).ok())
}

// ---------------------------------------------------------------------------------------------
// Bodies

/// The card an intent is paid with.
#[derive(Debug, Serialize, ToSchema)]
pub struct CardBody {
    /// `visa`, `mastercard`, …
    pub brand: String,
    /// Last four digits.
    pub last4: String,
}

/// Why the last authorisation failed (Stripe's codes).
#[derive(Debug, Serialize, ToSchema)]
pub struct PaymentErrorBody {
    /// `card_declined`, `expired_card`, `incorrect_cvc`, `processing_error`,
    /// `payment_intent_authentication_failure`, `payment_method_unusable`.
    pub code: String,
    /// For `card_declined`: `generic_decline`, `insufficient_funds`, …
    pub decline_code: Option<String>,
    /// A sentence for the shop's engineer.
    pub message: String,
}

/// Where to send the customer.
#[derive(Debug, Serialize, ToSchema)]
pub struct RedirectBody {
    /// strongroom's hand-off page for the customer's browser (`/pay/authenticate/{id}`): it
    /// leads to the gateway's 3-D Secure page, and back.
    pub url: String,
    /// The shop's page the customer comes back to, as given at confirmation.
    pub return_url: Option<String>,
}

/// What the customer must do before the intent can go on.
#[derive(Debug, Serialize, ToSchema)]
pub struct NextActionBody {
    /// Always `redirect_to_url`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Where to.
    pub redirect_to_url: RedirectBody,
}

/// A payment intent.
#[derive(Debug, Serialize, ToSchema)]
pub struct PaymentIntentBody {
    /// Always `payment_intent`.
    pub object: &'static str,
    /// `pi_…`
    pub id: String,
    /// Minor units.
    pub amount: i64,
    /// Lower-case ISO 4217 code.
    pub currency: String,
    /// `requires_payment_method`, `requires_confirmation`, `requires_action`, `processing`,
    /// `requires_capture`, `succeeded` or `canceled`.
    pub status: &'static str,
    /// `automatic` or `manual`.
    pub capture_method: &'static str,
    /// Authorised, not yet captured.
    pub amount_capturable: i64,
    /// Captured.
    pub amount_received: i64,
    /// Refunded (pending and succeeded refunds).
    pub amount_refunded: i64,
    /// `ord_…`
    pub order: Option<String>,
    /// The shop's customer reference.
    pub customer: Option<String>,
    /// The card token (`tok_…`) or saved card (`pm_…`).
    pub payment_method: Option<String>,
    /// The card, as it may be shown.
    pub card: Option<CardBody>,
    /// Why the last authorisation failed.
    pub last_payment_error: Option<PaymentErrorBody>,
    /// What the customer must do (3-D Secure).
    pub next_action: Option<NextActionBody>,
    /// The fraud checks' last decision: `{outcome: allow | require_step_up | block, reasons[]}`.
    pub fraud: Option<FraudBody>,
    /// `on_session` or `off_session`: the card is saved for later once this payment is
    /// authorised (the customer agreed).
    pub setup_future_usage: Option<&'static str>,
    /// A payment the shop makes without the customer, with a saved card.
    pub off_session: bool,
    /// With `off_session`: `recurring`, `installment` or `unscheduled`.
    pub mit_reason: Option<&'static str>,
    /// The saved card (`pm_…`) this payment made.
    pub saved_card: Option<String>,
    /// The card network's id of the authorisation, when the gateway reports one.
    pub network_transaction_id: Option<String>,
    /// `sandbox`, …
    pub gateway: String,
    /// Free text.
    pub description: String,
    /// The shop's metadata.
    pub metadata: Option<Value>,
    /// Why it was canceled.
    pub cancellation_reason: Option<String>,
    /// When it was canceled (RFC 3339).
    pub canceled_at: Option<String>,
    /// Whether it is live (false: made with a test key).
    pub livemode: bool,
    /// RFC 3339.
    pub created_at: String,
}

impl From<IntentRecord> for PaymentIntentBody {
    fn from(r: IntentRecord) -> Self {
        let on_file = r.card_on_file.unwrap_or_default();
        Self {
            setup_future_usage: on_file.save.as_ref().map(|save| save.usage.as_str()),
            off_session: on_file.merchant_initiated.is_some(),
            mit_reason: on_file.merchant_initiated.map(|reason| reason.as_str()),
            saved_card: on_file.saved_card,
            network_transaction_id: on_file.network_transaction_id,
            object: "payment_intent",
            amount: r.amount.minor(),
            currency: r.amount.currency().lowercase(),
            status: r.state.status(),
            capture_method: r.capture_method.as_str(),
            amount_capturable: r.amount_capturable,
            amount_received: r.amount_received,
            amount_refunded: r.amount_refunded,
            card: r.card.map(|c| CardBody { brand: c.brand, last4: c.last4 }),
            last_payment_error: r.last_payment_error.map(|e| PaymentErrorBody {
                code: e.code,
                decline_code: e.decline_code,
                message: e.message,
            }),
            next_action: r
                .next_action
                .filter(|_| r.state == strongroom_domain::payments::state::State::RequiresAction)
                .map(|a| NextActionBody {
                    kind: "redirect_to_url",
                    redirect_to_url: RedirectBody {
                        url: a.handoff_url.unwrap_or(a.redirect_url),
                        return_url: a.return_url,
                    },
                }),
            fraud: r.fraud.map(|f| FraudBody { outcome: f.outcome, reasons: f.reasons }),
            metadata: metadata_value(r.metadata.as_deref()),
            canceled_at: r.canceled_at.map(Timestamp::to_rfc3339),
            livemode: r.mode.is_live(),
            created_at: r.created_at.to_rfc3339(),
            id: r.id,
            order: r.order,
            customer: r.customer,
            payment_method: r.payment_method,
            gateway: r.gateway,
            description: r.description,
            cancellation_reason: r.cancellation_reason,
        }
    }
}

/// What the fraud checks decided at the last confirmation.
#[derive(Debug, Serialize, ToSchema)]
pub struct FraudBody {
    /// `allow`, `require_step_up` or `block`.
    pub outcome: String,
    /// Reason codes of the rules that fired (`card_testing`, `ip_velocity`, `country_mismatch`, …).
    pub reasons: Vec<String>,
}

/// A page of payment intents, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct PaymentIntentList {
    /// Always `list`.
    pub object: &'static str,
    /// The intents.
    pub data: Vec<PaymentIntentBody>,
    /// Whether older ones follow (pass the last id as `starting_after`).
    pub has_more: bool,
}

/// A refund.
#[derive(Debug, Serialize, ToSchema)]
pub struct RefundBody {
    /// Always `refund`.
    pub object: &'static str,
    /// `re_…`
    pub id: String,
    /// `pi_…`
    pub payment_intent: String,
    /// Minor units.
    pub amount: i64,
    /// Lower-case ISO 4217 code.
    pub currency: String,
    /// `pending`, `succeeded` or `failed`.
    pub status: String,
    /// `duplicate`, `fraudulent` or `requested_by_customer`.
    pub reason: Option<String>,
    /// Why it failed.
    pub failure_reason: Option<String>,
    /// The shop's metadata.
    pub metadata: Option<Value>,
    /// Whether it is live.
    pub livemode: bool,
    /// RFC 3339.
    pub created_at: String,
}

impl From<RefundRecord> for RefundBody {
    fn from(r: RefundRecord) -> Self {
        Self {
            object: "refund",
            amount: r.amount.minor(),
            currency: r.amount.currency().lowercase(),
            metadata: metadata_value(r.metadata.as_deref()),
            livemode: r.mode.is_live(),
            created_at: r.created_at.to_rfc3339(),
            id: r.id,
            payment_intent: r.payment_intent,
            status: r.status,
            reason: r.reason,
            failure_reason: r.failure_reason,
        }
    }
}

/// A page of refunds, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct RefundList {
    /// Always `list`.
    pub object: &'static str,
    /// The refunds.
    pub data: Vec<RefundBody>,
    /// Whether older ones follow.
    pub has_more: bool,
}

/// A priced line of an order.
#[derive(Debug, Serialize, ToSchema)]
pub struct LineItemBody {
    /// SKU.
    pub sku: String,
    /// Name.
    pub name: String,
    /// Quantity.
    pub quantity: u32,
    /// Price of one, minor units.
    pub unit_amount: i64,
    /// `quantity × unit_amount`.
    pub amount_total: i64,
}

/// A discount of an order.
#[derive(Debug, Serialize, ToSchema)]
pub struct DiscountBody {
    /// The code.
    pub code: Option<String>,
    /// Minor units.
    pub amount: i64,
}

/// An order, with the totals strongroom computed.
#[derive(Debug, Serialize, ToSchema)]
pub struct OrderBody {
    /// Always `order`.
    pub object: &'static str,
    /// `ord_…`
    pub id: String,
    /// 1, and one more per amendment.
    pub version: u32,
    /// Lower-case ISO 4217 code.
    pub currency: String,
    /// The lines.
    pub line_items: Vec<LineItemBody>,
    /// The discounts.
    pub discounts: Vec<DiscountBody>,
    /// Sum of the lines.
    pub amount_subtotal: i64,
    /// Sum of the discounts.
    pub amount_discount: i64,
    /// Shipping.
    pub amount_shipping: i64,
    /// Tax.
    pub amount_tax: i64,
    /// Subtotal + shipping + tax − discounts.
    pub amount_total: i64,
    /// The shop's customer reference.
    pub customer: Option<String>,
    /// The shop's metadata.
    pub metadata: Option<Value>,
    /// Whether a payment on it was confirmed (it cannot change any more).
    pub locked: bool,
    /// Whether it is live.
    pub livemode: bool,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub updated_at: String,
}

impl From<OrderView> for OrderBody {
    fn from(v: OrderView) -> Self {
        let (r, b) = (v.record, v.body);
        Self {
            object: "order",
            version: r.version,
            currency: r.total.currency().lowercase(),
            line_items: b
                .line_items
                .into_iter()
                .map(|l| LineItemBody {
                    sku: l.sku,
                    name: l.name,
                    quantity: l.quantity,
                    unit_amount: l.unit_amount,
                    amount_total: l.amount_total,
                })
                .collect(),
            discounts: b.discounts.into_iter().map(|d| DiscountBody { code: d.code, amount: d.amount }).collect(),
            amount_subtotal: b.amount_subtotal,
            amount_discount: b.amount_discount,
            amount_shipping: b.amount_shipping,
            amount_tax: b.amount_tax,
            amount_total: r.total.minor(),
            metadata: b.metadata.map(Value::Object),
            locked: r.locked_at.is_some(),
            livemode: r.mode.is_live(),
            created_at: r.created_at.to_rfc3339(),
            updated_at: r.updated_at.to_rfc3339(),
            id: r.id,
            customer: r.customer,
        }
    }
}

/// A page of orders, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct OrderList {
    /// Always `list`.
    pub object: &'static str,
    /// The orders.
    pub data: Vec<OrderBody>,
    /// Whether older ones follow.
    pub has_more: bool,
}

// ---------------------------------------------------------------------------------------------
// Requests

/// A line of a new order.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LineItemRequest {
    /// 1 to 64 of `A-Z a-z 0-9 _ . : - /`.
    #[schema(min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9_.:/-]{1,64}$")]
    pub sku: String,
    /// 1 to 200 characters.
    #[schema(min_length = 1, max_length = 200)]
    pub name: String,
    /// 1 to 1,000,000.
    #[schema(value_type = i64, minimum = 1, maximum = 1_000_000)]
    pub quantity: Value,
    /// Price of one, in minor units.
    #[schema(value_type = i64, minimum = 0, maximum = 999_999_999_999_i64)]
    pub unit_amount: Value,
}

/// A discount of a new order.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DiscountRequest {
    /// The coupon or promotion code.
    #[schema(min_length = 1, max_length = 64)]
    pub code: Option<String>,
    /// Minor units taken off.
    #[schema(value_type = i64, minimum = 0, maximum = 999_999_999_999_i64)]
    pub amount: Value,
}

/// A new order, or the whole of an amendment. strongroom computes the totals; `amount_total`, if
/// sent, must equal them; `status` is ignored.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OrderRequest {
    /// ISO 4217 code, any case (`eur`).
    #[schema(pattern = "^[A-Za-z]{3}$")]
    pub currency: String,
    /// 1 to 100 lines.
    #[schema(min_items = 1, max_items = 100)]
    pub line_items: Vec<LineItemRequest>,
    /// Shipping, in minor units.
    #[schema(value_type = Option<i64>, minimum = 0, maximum = 999_999_999_999_i64)]
    pub shipping_amount: Option<Value>,
    /// Tax, in minor units.
    #[schema(value_type = Option<i64>, minimum = 0, maximum = 999_999_999_999_i64)]
    pub tax_amount: Option<Value>,
    /// Up to 20 discounts.
    #[serde(default)]
    #[schema(max_items = 20)]
    pub discounts: Vec<DiscountRequest>,
    /// The shop's customer reference: 1 to 64 of `A-Z a-z 0-9 _ . : -`.
    #[schema(pattern = "^[A-Za-z0-9_.:-]{1,64}$")]
    pub customer: Option<String>,
    /// Up to 20 string values.
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Map<String, Value>>,
    /// The total the client computed; refused with `order_total_mismatch` unless it is
    /// strongroom's.
    #[schema(value_type = Option<i64>)]
    pub amount_total: Option<Value>,
    /// Ignored: strongroom keeps an order's state itself.
    #[schema(value_type = Option<String>)]
    pub status: Option<Value>,
}

impl From<OrderRequest> for OrderInput {
    fn from(r: OrderRequest) -> Self {
        Self {
            currency: r.currency,
            line_items: r
                .line_items
                .into_iter()
                .map(|l| LineItemInput { sku: l.sku, name: l.name, quantity: l.quantity, unit_amount: l.unit_amount })
                .collect(),
            shipping_amount: r.shipping_amount,
            tax_amount: r.tax_amount,
            discounts: r.discounts.into_iter().map(|d| DiscountInput { code: d.code, amount: d.amount }).collect(),
            customer: r.customer,
            metadata: r.metadata,
            amount_total: r.amount_total,
        }
    }
}

/// How a payment intent captures.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CaptureMethodRequest {
    /// With the authorisation.
    Automatic,
    /// By `POST /v1/payment_intents/{id}/capture`.
    Manual,
}

/// A new payment intent.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateIntentRequest {
    /// Minor units (1 to 999,999,999,999); with `order`, the order's `amount_total`.
    #[schema(value_type = i64, minimum = 1, maximum = 999_999_999_999_i64)]
    pub amount: Value,
    /// ISO 4217 code, any case.
    #[schema(pattern = "^[A-Za-z]{3}$")]
    pub currency: String,
    /// `ord_…` of the caller's data space.
    pub order: Option<String>,
    /// The shop's customer reference.
    #[schema(pattern = "^[A-Za-z0-9_.:-]{1,64}$")]
    pub customer: Option<String>,
    /// A card token (`tok_…`) of the caller's data space (and of this customer, if it has one),
    /// or a saved card (`pm_…`) of this customer.
    pub payment_method: Option<String>,
    /// Save the card once this payment is authorised: `on_session` (the customer picks it at
    /// later checkouts) or `off_session` (the shop may also charge it without them). Needs
    /// `customer` and `consent`.
    pub setup_future_usage: Option<FutureUsageRequest>,
    /// The customer's agreement to keep the card (required with `setup_future_usage`).
    pub consent: Option<ConsentRequest>,
    /// A payment the shop makes without the customer (a subscription's charge, a split
    /// shipment): needs a saved card (`pm_…`) saved for `off_session` use. No step-up is asked;
    /// a payment that would need the customer is declined as `authentication_required`.
    pub off_session: Option<bool>,
    /// With `off_session`: why (default `unscheduled`).
    pub mit_reason: Option<MitReasonRequest>,
    /// Default `automatic`.
    pub capture_method: Option<CaptureMethodRequest>,
    /// Up to 500 characters.
    #[schema(max_length = 500)]
    pub description: Option<String>,
    /// Up to 20 string values.
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Map<String, Value>>,
    /// Confirm at once (needs `payment_method`): one request instead of create, then confirm.
    /// The answer is the confirmed intent (`201`).
    pub confirm: Option<bool>,
    /// With `confirm`: the shop's page the customer comes back to after 3-D Secure.
    pub return_url: Option<String>,
    /// With `confirm`: the customer's browser or app as the shop saw it, for the fraud checks.
    pub client: Option<ClientRequest>,
}

/// How a saved card will be used.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FutureUsageRequest {
    /// Later payments the customer makes.
    OnSession,
    /// Also payments the shop makes without the customer.
    OffSession,
}

impl FutureUsageRequest {
    fn as_str(self) -> &'static str {
        match self {
            FutureUsageRequest::OnSession => "on_session",
            FutureUsageRequest::OffSession => "off_session",
        }
    }
}

/// Why the shop charges a saved card without the customer.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MitReasonRequest {
    /// A subscription's charge.
    Recurring,
    /// One of a fixed number of payments.
    Installment,
    /// Another charge the customer agreed to (a split shipment, a top-up).
    Unscheduled,
}

impl MitReasonRequest {
    fn as_str(self) -> &'static str {
        match self {
            MitReasonRequest::Recurring => "recurring",
            MitReasonRequest::Installment => "installment",
            MitReasonRequest::Unscheduled => "unscheduled",
        }
    }
}

/// The customer's agreement to keep their card, as the shop showed and recorded it.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConsentRequest {
    /// The words the customer agreed to (1 to 1000 characters).
    #[schema(max_length = 1000)]
    pub text: String,
    /// The customer's IP address, as the shop saw it.
    pub ip_address: Option<String>,
    /// The customer's browser, as the shop saw it (up to 500 characters).
    pub user_agent: Option<String>,
}

fn card_on_file(
    setup_future_usage: Option<FutureUsageRequest>,
    consent: Option<ConsentRequest>,
    off_session: Option<bool>,
    mit_reason: Option<MitReasonRequest>,
) -> CardOnFileInput {
    CardOnFileInput {
        setup_future_usage: setup_future_usage.map(|usage| usage.as_str().to_owned()),
        consent: consent.map(|c| ConsentInput { text: c.text, ip_address: c.ip_address, user_agent: c.user_agent }),
        off_session,
        mit_reason: mit_reason.map(|reason| reason.as_str().to_owned()),
    }
}

/// Confirmation of a payment intent.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfirmRequest {
    /// A card token or saved card to attach first (needed in `requires_payment_method`).
    pub payment_method: Option<String>,
    /// Save the card once authorised (see the intent's creation); needs `consent`.
    pub setup_future_usage: Option<FutureUsageRequest>,
    /// The customer's agreement to keep the card.
    pub consent: Option<ConsentRequest>,
    /// A payment the shop makes without the customer, with a saved card.
    pub off_session: Option<bool>,
    /// With `off_session`: why (default `unscheduled`).
    pub mit_reason: Option<MitReasonRequest>,
    /// The shop's page the customer comes back to after 3-D Secure (an `https://` URL), with
    /// `payment_intent` and `redirect_status` added; the shop must still read the intent.
    pub return_url: Option<String>,
    /// The customer's step-up proof (`sup_…`) for purpose `payment` and this payment's binding,
    /// when a `step_up_required` asked for one.
    pub step_up_proof: Option<super::identity::SecretText>,
    /// The customer's browser or app as the shop saw it, for the fraud checks.
    pub client: Option<ClientRequest>,
}

/// The customer's client, as the shop saw it (each field optional).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClientRequest {
    /// The customer's IP address (not the shop server's).
    pub ip: Option<String>,
    /// The shop's id of the customer's device (1 to 128 characters).
    pub device: Option<String>,
    /// ISO 3166-1 alpha-2 country of the customer (e.g. from the shipping address).
    pub country: Option<String>,
}

/// A capture.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CaptureRequest {
    /// Minor units; default all of `amount_capturable`. The rest of the authorisation is released.
    #[schema(value_type = Option<i64>, minimum = 1, maximum = 999_999_999_999_i64)]
    pub amount_to_capture: Option<Value>,
}

/// Why an intent is canceled.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CancellationReason {
    /// A duplicate.
    Duplicate,
    /// Fraud.
    Fraudulent,
    /// The customer asked.
    RequestedByCustomer,
    /// The customer went away.
    Abandoned,
}

impl CancellationReason {
    fn as_str(&self) -> &'static str {
        match self {
            Self::Duplicate => "duplicate",
            Self::Fraudulent => "fraudulent",
            Self::RequestedByCustomer => "requested_by_customer",
            Self::Abandoned => "abandoned",
        }
    }
}

/// A cancellation.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelRequest {
    /// Why.
    pub cancellation_reason: Option<CancellationReason>,
}

/// The outcome of a sandbox 3-D Secure challenge.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ChallengeOutcome {
    /// The customer authenticated.
    Pass,
    /// The customer failed to authenticate.
    Fail,
}

/// Completes the sandbox's challenge as the customer would.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChallengeRequest {
    /// `pass` or `fail`.
    pub outcome: ChallengeOutcome,
}

/// Why a refund is made.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RefundReason {
    /// A duplicate payment.
    Duplicate,
    /// Fraud.
    Fraudulent,
    /// The customer asked.
    RequestedByCustomer,
}

/// A new refund.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRefundRequest {
    /// `pi_…` of the caller's data space, `succeeded`.
    pub payment_intent: String,
    /// Minor units; default: all that is captured and not yet refunded.
    #[schema(value_type = Option<i64>, minimum = 1, maximum = 999_999_999_999_i64)]
    pub amount: Option<Value>,
    /// Why.
    pub reason: Option<RefundReason>,
    /// Up to 20 string values.
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Map<String, Value>>,
    /// A staff member's refund above `payments.refund_approval_above`: the approved request
    /// (`apr_…`) that the first attempt's `approval_required` opened.
    pub approval_id: Option<String>,
}

/// Paging: newest first.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    /// 1 to 100, default 10.
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    /// The id of the last object of the previous page.
    pub starting_after: Option<String>,
}

/// Paging of refunds: newest first, optionally of one payment intent.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct RefundListParams {
    /// 1 to 100, default 10.
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    /// The id of the last refund of the previous page.
    pub starting_after: Option<String>,
    /// Only refunds of this `pi_…`.
    pub payment_intent: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// Orders

/// Creates an order; strongroom computes its totals.
#[utoipa::path(post, path = "/v1/orders", tag = "payments", security(("api_key" = ["payments:write"])),
    request_body = OrderRequest,
    responses(
        (status = 201, body = OrderBody),
        (status = 422, body = Problem, content_type = "application/problem+json",
            description = "invalid fields: `unknown_currency`, `invalid_amount`, `invalid_quantity`, `order_total_mismatch`, `validation_failed`"),
    ))]
pub async fn create_order(
    auth: ApiKeyAuth<scope::PaymentsWrite>,
    context: RequestContext,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<OrderRequest>,
) -> Result<(StatusCode, Json<OrderBody>), ApiError> {
    let source = source(&context);
    let caller = Caller { principal: &auth.principal, source: &source };
    let order = state.payments.create_order(caller, body.into()).await?;
    Ok((StatusCode::CREATED, Json(order.into())))
}

/// Amends an order: a new version, refused once a payment on the order was confirmed.
#[utoipa::path(post, path = "/v1/orders/{id}", tag = "payments", security(("api_key" = ["payments:write"])),
    params(("id" = String, Path, description = "`ord_…`")),
    request_body = OrderRequest,
    responses(
        (status = 200, body = OrderBody),
        (status = 409, body = Problem, content_type = "application/problem+json",
            description = "`order_locked` (a payment was confirmed) or `order_changed` (amended meanwhile)"),
    ))]
pub async fn amend_order(
    auth: ApiKeyAuth<scope::PaymentsWrite>,
    context: RequestContext,
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<OrderRequest>,
) -> Result<Json<OrderBody>, ApiError> {
    let source = source(&context);
    let caller = Caller { principal: &auth.principal, source: &source };
    Ok(Json(state.payments.amend_order(caller, &id, body.into()).await?.into()))
}

/// One order.
#[utoipa::path(get, path = "/v1/orders/{id}", tag = "payments", security(("api_key" = ["payments:read"])),
    params(("id" = String, Path, description = "`ord_…`")),
    responses((status = 200, body = OrderBody)))]
pub async fn get_order(
    auth: ApiKeyAuth<scope::PaymentsRead>,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<OrderBody>, ApiError> {
    Ok(Json(state.payments.order(auth.principal.space(), &id).await?.into()))
}

/// Orders of the key's data space, newest first.
#[utoipa::path(get, path = "/v1/orders", tag = "payments", security(("api_key" = ["payments:read"])),
    params(ListParams),
    responses(
        (status = 200, body = OrderList),
        (status = 422, body = Problem, content_type = "application/problem+json", description = "bad `limit` or `starting_after`"),
    ))]
pub async fn list_orders(
    auth: ApiKeyAuth<scope::PaymentsRead>,
    State(state): State<AppState>,
    ApiQuery(params): ApiQuery<ListParams>,
) -> Result<Json<OrderList>, ApiError> {
    let (found, has_more) =
        state.payments.orders(auth.principal.space(), params.starting_after.as_deref(), params.limit).await?;
    Ok(Json(OrderList { object: "list", data: found.into_iter().map(OrderBody::from).collect(), has_more }))
}

// ---------------------------------------------------------------------------------------------
// Payment intents

/// Creates a payment intent.
#[utoipa::path(post, path = "/v1/payment_intents", tag = "payments", security(("api_key" = ["payments:write"])),
    request_body = CreateIntentRequest,
    responses(
        (status = 201, body = PaymentIntentBody),
        (status = 409, body = Problem, content_type = "application/problem+json", description = "`order_locked`"),
        (status = 422, body = Problem, content_type = "application/problem+json",
            description = "`invalid_amount`, `unknown_currency`, `order_not_found`, `amount_does_not_match_order`, `payment_method_not_found`, `payment_method_customer_mismatch`, `saved_card_removed`, `saved_card_required`, `saved_card_not_for_off_session`, `customer_required`, `consent_required`, `validation_failed`"),
    ))]
pub async fn create_intent(
    auth: ApiKeyAuth<scope::PaymentsWrite>,
    context: RequestContext,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<CreateIntentRequest>,
) -> Result<(StatusCode, Json<PaymentIntentBody>), ApiError> {
    let source = source(&context);
    let caller = Caller { principal: &auth.principal, source: &source };
    let confirm = body.confirm.unwrap_or(false);
    if confirm && body.payment_method.is_none() {
        return Err(DomainError::invalid("/payment_method", "is required with confirm").into());
    }
    if !confirm && body.return_url.is_some() {
        return Err(DomainError::invalid("/return_url", "is taken only with confirm: true").into());
    }
    if !confirm && body.client.is_some() {
        return Err(DomainError::invalid("/client", "is taken only with confirm: true").into());
    }
    let client = body.client.unwrap_or_default();
    let client = ClientSignals::parse(client.ip.as_deref(), client.device.as_deref(), client.country.as_deref())?;
    let input = NewIntent {
        amount: body.amount,
        currency: body.currency,
        order: body.order,
        customer: body.customer,
        payment_method: body.payment_method,
        capture_method: body.capture_method.map(|m| {
            match m {
                CaptureMethodRequest::Automatic => "automatic",
                CaptureMethodRequest::Manual => "manual",
            }
            .to_owned()
        }),
        description: body.description,
        metadata: body.metadata,
        card_on_file: card_on_file(body.setup_future_usage, body.consent, body.off_session, body.mit_reason),
    };
    let intent = if confirm {
        let extras = ConfirmExtras { client, return_url: body.return_url, ..ConfirmExtras::default() };
        state.payments.create_and_confirm(caller, input, &extras).await?
    } else {
        state.payments.create_intent(caller, input).await?
    };
    Ok((StatusCode::CREATED, Json(intent.into())))
}

/// One payment intent.
#[utoipa::path(get, path = "/v1/payment_intents/{id}", tag = "payments", security(("api_key" = ["payments:read"])),
    params(("id" = String, Path, description = "`pi_…`")),
    responses((status = 200, body = PaymentIntentBody)))]
pub async fn get_intent(
    auth: ApiKeyAuth<scope::PaymentsRead>,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<PaymentIntentBody>, ApiError> {
    Ok(Json(state.payments.intent(auth.principal.space(), &id).await?.into()))
}

/// Payment intents of the key's data space, newest first.
#[utoipa::path(get, path = "/v1/payment_intents", tag = "payments", security(("api_key" = ["payments:read"])),
    params(ListParams),
    responses(
        (status = 200, body = PaymentIntentList),
        (status = 422, body = Problem, content_type = "application/problem+json", description = "bad `limit` or `starting_after`"),
    ))]
pub async fn list_intents(
    auth: ApiKeyAuth<scope::PaymentsRead>,
    State(state): State<AppState>,
    ApiQuery(params): ApiQuery<ListParams>,
) -> Result<Json<PaymentIntentList>, ApiError> {
    let (found, has_more) =
        state.payments.intents(auth.principal.space(), params.starting_after.as_deref(), params.limit).await?;
    Ok(Json(PaymentIntentList {
        object: "list",
        data: found.into_iter().map(PaymentIntentBody::from).collect(),
        has_more,
    }))
}

/// The signed-in customer's own payment intents (those whose `customer` is them), newest first;
/// without the shop's `metadata` and the fraud decision.
#[utoipa::path(get, path = "/v1/me/payments", tag = "customer", security(("session" = [])),
    params(ListParams),
    responses(
        (status = 200, body = PaymentIntentList),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json", description = "bad `limit` or `starting_after`"),
    ))]
pub async fn my_payments(
    auth: CustomerAuth,
    State(state): State<AppState>,
    ApiQuery(params): ApiQuery<ListParams>,
) -> Result<Json<PaymentIntentList>, ApiError> {
    let (found, has_more) =
        state.payments.customer_payments(&auth.session, params.starting_after.as_deref(), params.limit).await?;
    Ok(Json(PaymentIntentList {
        object: "list",
        data: found.into_iter().map(PaymentIntentBody::from).collect(),
        has_more,
    }))
}

const STATE_CONFLICT: &str = "`payment_intent_unexpected_state` (with `current_state`), `order_changed`";

/// Confirms a payment intent: the gateway is asked for the authorisation. A decline answers 200
/// with the intent back in `requires_payment_method` and `last_payment_error`; 3-D Secure with
/// `requires_action` and `next_action`; a gateway that does not answer with `processing`.
#[utoipa::path(post, path = "/v1/payment_intents/{id}/confirm", tag = "payments", security(("api_key" = ["payments:write"])),
    params(("id" = String, Path, description = "`pi_…`")),
    request_body = ConfirmRequest,
    responses(
        (status = 200, body = PaymentIntentBody),
        (status = 403, body = Problem, content_type = "application/problem+json",
            description = "`step_up_required`: `step_up` names the purpose and binding of the proof to send"),
        (status = 409, body = Problem, content_type = "application/problem+json",
            description = "`payment_intent_unexpected_state` (with `current_state`), `order_changed`, `step_up_unavailable`"),
        (status = 422, body = Problem, content_type = "application/problem+json",
            description = "`step_up_invalid`, `saved_card_removed`, `saved_card_required`, `saved_card_not_for_off_session`, `customer_required`, `consent_required`, `validation_failed`"),
    ))]
pub async fn confirm(
    auth: ApiKeyAuth<scope::PaymentsWrite>,
    context: RequestContext,
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<ConfirmRequest>,
) -> Result<Json<PaymentIntentBody>, ApiError> {
    let source = source(&context);
    let caller = Caller { principal: &auth.principal, source: &source };
    let client = body.client.unwrap_or_default();
    let client = ClientSignals::parse(client.ip.as_deref(), client.device.as_deref(), client.country.as_deref())?;
    let extras = ConfirmExtras {
        step_up_proof: body.step_up_proof.map(super::identity::SecretText::secret),
        client,
        return_url: body.return_url,
        card_on_file: card_on_file(body.setup_future_usage, body.consent, body.off_session, body.mit_reason),
    };
    Ok(Json(state.payments.confirm_with(caller, &id, body.payment_method.as_deref(), &extras).await?.into()))
}

/// Captures an authorised payment intent (all of it, or `amount_to_capture`).
#[utoipa::path(post, path = "/v1/payment_intents/{id}/capture", tag = "payments", security(("api_key" = ["payments:write"])),
    params(("id" = String, Path, description = "`pi_…`")),
    request_body = CaptureRequest,
    responses(
        (status = 200, body = PaymentIntentBody),
        (status = 409, body = Problem, content_type = "application/problem+json", description = STATE_CONFLICT),
        (status = 422, body = Problem, content_type = "application/problem+json", description = "`amount_too_large`, `invalid_amount`"),
    ))]
pub async fn capture(
    auth: ApiKeyAuth<scope::PaymentsWrite>,
    context: RequestContext,
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<CaptureRequest>,
) -> Result<Json<PaymentIntentBody>, ApiError> {
    let source = source(&context);
    let caller = Caller { principal: &auth.principal, source: &source };
    Ok(Json(state.payments.capture(caller, &id, body.amount_to_capture.as_ref()).await?.into()))
}

/// Cancels a payment intent (an authorised one is voided at the gateway).
#[utoipa::path(post, path = "/v1/payment_intents/{id}/cancel", tag = "payments", security(("api_key" = ["payments:write"])),
    params(("id" = String, Path, description = "`pi_…`")),
    request_body = CancelRequest,
    responses(
        (status = 200, body = PaymentIntentBody),
        (status = 409, body = Problem, content_type = "application/problem+json", description = STATE_CONFLICT),
    ))]
pub async fn cancel(
    auth: ApiKeyAuth<scope::PaymentsWrite>,
    context: RequestContext,
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<CancelRequest>,
) -> Result<Json<PaymentIntentBody>, ApiError> {
    let source = source(&context);
    let caller = Caller { principal: &auth.principal, source: &source };
    let reason = body.cancellation_reason.as_ref().map(CancellationReason::as_str);
    Ok(Json(state.payments.cancel(caller, &id, reason).await?.into()))
}

/// Sandbox only: passes or fails the 3-D Secure challenge of an intent in `requires_action`, as
/// the customer would at the issuer's page. Confirm the intent again afterwards; the gateway
/// reports the outcome.
#[utoipa::path(post, path = "/v1/payment_intents/{id}/sandbox_challenge", tag = "payments", security(("api_key" = ["payments:write"])),
    params(("id" = String, Path, description = "`pi_…`")),
    request_body = ChallengeRequest,
    responses(
        (status = 200, body = PaymentIntentBody),
        (status = 409, body = Problem, content_type = "application/problem+json",
            description = "`payment_intent_unexpected_state`, `challenge_not_pending`, `sandbox_only`"),
    ))]
pub async fn sandbox_challenge(
    auth: ApiKeyAuth<scope::PaymentsWrite>,
    context: RequestContext,
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<ChallengeRequest>,
) -> Result<Json<PaymentIntentBody>, ApiError> {
    let source = source(&context);
    let caller = Caller { principal: &auth.principal, source: &source };
    let passed = matches!(body.outcome, ChallengeOutcome::Pass);
    Ok(Json(state.payments.complete_sandbox_challenge(caller, &id, passed).await?.into()))
}

// ---------------------------------------------------------------------------------------------
// Refunds

/// Refunds (part of) a succeeded payment intent: never more than was captured in total.
#[utoipa::path(post, path = "/v1/refunds", tag = "payments", security(("api_key" = ["payments:refund"])),
    request_body = CreateRefundRequest,
    responses(
        (status = 201, body = RefundBody),
        (status = 403, body = Problem, content_type = "application/problem+json",
            description = "`approval_required` (a staff member's refund above `payments.refund_approval_above`: `approval_id` names the request a second finance member approves)"),
        (status = 404, body = Problem, content_type = "application/problem+json", description = "no such payment intent in the key's data space"),
        (status = 409, body = Problem, content_type = "application/problem+json",
            description = "`payment_intent_unexpected_state` (not `succeeded`), `charge_already_refunded`"),
        (status = 422, body = Problem, content_type = "application/problem+json", description = "`refund_exceeds_captured`, `invalid_amount`"),
    ))]
pub async fn create_refund(
    auth: ApiKeyAuth<scope::PaymentsRefund>,
    context: RequestContext,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<CreateRefundRequest>,
) -> Result<(StatusCode, Json<RefundBody>), ApiError> {
    let source = source(&context);
    let caller = Caller { principal: &auth.principal, source: &source };
    let reason = body.reason.map(|r| {
        match r {
            RefundReason::Duplicate => "duplicate",
            RefundReason::Fraudulent => "fraudulent",
            RefundReason::RequestedByCustomer => "requested_by_customer",
        }
        .to_owned()
    });
    let input = NewRefund {
        payment_intent: body.payment_intent,
        amount: body.amount,
        reason,
        metadata: body.metadata,
        approval_id: body.approval_id,
    };
    let refund = state.payments.create_refund(caller, input).await?;
    Ok((StatusCode::CREATED, Json(refund.into())))
}

/// One refund.
#[utoipa::path(get, path = "/v1/refunds/{id}", tag = "payments", security(("api_key" = ["payments:read"])),
    params(("id" = String, Path, description = "`re_…`")),
    responses((status = 200, body = RefundBody)))]
pub async fn get_refund(
    auth: ApiKeyAuth<scope::PaymentsRead>,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<RefundBody>, ApiError> {
    Ok(Json(state.payments.refund(auth.principal.space(), &id).await?.into()))
}

/// Refunds of the key's data space, newest first.
#[utoipa::path(get, path = "/v1/refunds", tag = "payments", security(("api_key" = ["payments:read"])),
    params(RefundListParams),
    responses(
        (status = 200, body = RefundList),
        (status = 422, body = Problem, content_type = "application/problem+json", description = "bad `limit`, `starting_after` or `payment_intent`"),
    ))]
pub async fn list_refunds(
    auth: ApiKeyAuth<scope::PaymentsRead>,
    State(state): State<AppState>,
    ApiQuery(params): ApiQuery<RefundListParams>,
) -> Result<Json<RefundList>, ApiError> {
    let (found, has_more) = state
        .payments
        .refunds(
            auth.principal.space(),
            params.payment_intent.as_deref(),
            params.starting_after.as_deref(),
            params.limit,
        )
        .await?;
    Ok(Json(RefundList { object: "list", data: found.into_iter().map(RefundBody::from).collect(), has_more }))
}
