//! The Stripe gateway: PaymentIntents over Stripe's HTTP API (form-encoded bodies, the domain's
//! idempotency key forwarded as `Idempotency-Key`), through the one outbound client and its
//! address and TLS policy, and the verification and reading of Stripe's signed webhooks
//! ([`StripeNotices`]).
//!
//! An authorisation is two calls: the card becomes a PaymentMethod (`POST /v1/payment_methods`,
//! raw card data, key `<key>:payment_method`), then a PaymentIntent is created and confirmed with
//! it (`confirm=true`, `capture_method` manual or automatic, our intent id and key in its
//! metadata, key `<key>`, its charge expanded for the network's transaction id). The first
//! payment of a card the customer agreed to keep also makes a Customer for it (key
//! `<key>:customer`) to which Stripe attaches the PaymentMethod; the saved card's later payments
//! charge that PaymentMethod of that Customer ([`wire::stored_method`]) and send no card.
//! Capture, cancel and refund name Stripe's PaymentIntent. A lost answer is looked up: an
//! intent's by Stripe's search, a refund's among its payment's refunds. A declined
//! confirmation (HTTP 402) is a decline; a 5xx, a 429 or no answer is `GatewayError` (the intent
//! stays `processing` and is reconciled by its key, never charged twice).
//! Must never: log, print or return a card number, CVC or the secret key (the request body lives
//! in a wiped buffer; errors name the operation and the HTTP status only), follow a redirect, or
//! take an unknown Stripe status for a success.

pub mod wire;

use std::time::Duration;

use async_trait::async_trait;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use strongroom_domain::payments::gateway::{
    AuthorizeRequest, FollowUpRequest, Gateway, GatewayAnswer, GatewayError, GatewayStatus, LookupRequest,
    ResumeRequest, StoredCredential,
};
use strongroom_domain::payments::gateway_events::{
    DisputeNotice, GatewayNotice, GatewayNotices, IntentNotice, NoticeKind, NoticeRejected, RefundNotice,
};
use strongroom_domain::ports::payments::{NextAction, PaymentError};
use strongroom_types::{Secret, Timestamp};

use crate::outbound::{self, OutboundError, OutboundSettings};
use wire::{ErrorEnvelope, Form, IntentStatus, PaymentIntent, RefundStatus};

/// Where Stripe's API is.
pub const DEFAULT_API_BASE: &str = "https://api.stripe.com";
/// How far a webhook's signed time may be from our clock (Stripe's libraries use 300 s).
pub const SIGNATURE_TOLERANCE: Duration = Duration::from_secs(300);

/// Settings of the Stripe gateway.
#[derive(Debug, Clone)]
pub struct StripeSettings {
    /// `https://api.stripe.com`, or (tests) a loopback `http://` stand-in.
    pub api_base: String,
    /// `sk_live_…` / `sk_test_…`.
    pub secret_key: Secret<String>,
    /// Where Stripe sends the customer back after 3-D Secure; given to Stripe as `return_url`
    /// (then `requires_action` carries Stripe's redirect URL). None: strongroom's own return page
    /// (`{pages_origin}/pay/return/{intent}`) when `pages_origin` is given, else not sent.
    pub return_url: Option<String>,
    /// The origin of strongroom's payment pages (3-D Secure's return page).
    pub pages_origin: Option<String>,
    /// The outbound policy (address checks, TLS roots, timeouts).
    pub outbound: OutboundSettings,
    /// How long a PaymentIntent may take to show in Stripe's search (see
    /// [`Gateway::lookup_lag`]); [`DEFAULT_SEARCH_LAG`] unless a test stand-in answers at once.
    pub search_lag: std::time::Duration,
}

/// Most pages of a payment's refunds (100 each) one refund lookup reads.
const REFUND_LOOKUP_PAGES: usize = 10;

/// Stripe documents its search as eventually consistent ("within a minute" normally): a call
/// not found is believed never to have reached Stripe only after two minutes.
pub const DEFAULT_SEARCH_LAG: std::time::Duration = std::time::Duration::from_secs(120);

/// The Stripe gateway.
#[derive(Debug, Clone)]
pub struct StripeGateway {
    client: reqwest::Client,
    base: String,
    secret_key: Secret<String>,
    return_url: Option<String>,
    pages_origin: Option<String>,
    search_lag: std::time::Duration,
}

/// What one call to Stripe came to.
enum Reply {
    /// 2xx with its body.
    Ok(Vec<u8>),
    /// A 4xx Stripe explained (402 declines, 400 refusals), with its status.
    Refused(u16, Option<wire::ErrorBody>),
}

fn no_answer(operation: &str, why: impl std::fmt::Display) -> GatewayError {
    GatewayError::Unavailable(format!("stripe {operation}: {why}"))
}

fn decline_of(error: Option<&wire::ErrorBody>, fallback: &str) -> PaymentError {
    let code = error.and_then(|e| wire::code(e.code.as_deref())).unwrap_or_else(|| fallback.to_owned());
    let decline_code = error.and_then(|e| wire::code(e.decline_code.as_deref()));
    let message = match code.as_str() {
        "card_declined" => "the card was declined",
        "expired_card" => "the card has expired",
        "incorrect_cvc" => "the card's verification code is incorrect",
        "processing_error" => "the gateway could not process the card; try again",
        "payment_intent_authentication_failure" => "the customer's authentication (3-D Secure) failed",
        _ => "the gateway refused the payment",
    };
    PaymentError { code, decline_code, message: message.to_owned() }
}

impl StripeGateway {
    /// A gateway for `settings`; refuses an `api_base` the outbound policy refuses.
    pub fn new(settings: StripeSettings) -> Result<Self, OutboundError> {
        let base = outbound::check_url(&settings.api_base, &settings.outbound)?;
        let client = outbound::client(&settings.outbound)?;
        Ok(Self {
            client,
            base: base.as_str().trim_end_matches('/').to_owned(),
            secret_key: settings.secret_key,
            return_url: settings.return_url,
            pages_origin: settings.pages_origin,
            search_lag: settings.search_lag,
        })
    }

    /// One call: `method path` with `form` (for a POST) and `Idempotency-Key: key`.
    async fn call(
        &self,
        operation: &str,
        method: reqwest::Method,
        path: &str,
        form: Option<&Form>,
        key: Option<&str>,
    ) -> Result<Reply, GatewayError> {
        let mut builder = self
            .client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(self.secret_key.expose())
            .header(http::header::ACCEPT, "application/json");
        if let Some(key) = key {
            builder = builder.header("Idempotency-Key", key);
        }
        if let Some(form) = form {
            builder =
                builder.header(http::header::CONTENT_TYPE, "application/x-www-form-urlencoded").body(form.to_bytes());
        }
        let response = match builder.send().await {
            Ok(response) => response,
            Err(err) if err.is_timeout() => return Err(GatewayError::Timeout),
            Err(err) => return Err(no_answer(operation, OutboundError::from(err))),
        };
        let status = response.status().as_u16();
        let body = match response.bytes().await {
            Ok(body) => body.to_vec(),
            Err(err) if err.is_timeout() => return Err(GatewayError::Timeout),
            Err(err) => return Err(no_answer(operation, OutboundError::from(err))),
        };
        match status {
            200..=299 => Ok(Reply::Ok(body)),
            // 429 (rate limited) and 409 (an idempotent request still in flight) may be retried.
            400..=499 if status != 429 && status != 409 && status != 401 && status != 403 => {
                let error = serde_json::from_slice::<ErrorEnvelope>(&body).ok().map(|e| e.error);
                Ok(Reply::Refused(status, error))
            }
            _ => Err(no_answer(operation, format_args!("HTTP {status}"))),
        }
    }

    fn parse<T: serde::de::DeserializeOwned>(operation: &str, body: &[u8]) -> Result<T, GatewayError> {
        serde_json::from_slice(body).map_err(|_| no_answer(operation, "the answer is not the expected JSON"))
    }

    /// Our answer for a PaymentIntent Stripe returned.
    fn intent_answer(intent: &PaymentIntent) -> GatewayAnswer {
        let status = IntentStatus::parse(&intent.status).gateway_status();
        let next_action = match status {
            GatewayStatus::RequiresAction => Some(NextAction {
                redirect_url: intent
                    .next_action
                    .as_ref()
                    .and_then(|a| a.redirect_to_url.as_ref())
                    .and_then(|r| r.url.clone())
                    .unwrap_or_default(),
                challenge: intent.id.clone(),
                handoff_url: None,
                return_url: None,
            }),
            GatewayStatus::Authorized
            | GatewayStatus::Captured
            | GatewayStatus::Declined
            | GatewayStatus::Voided
            | GatewayStatus::Refunded
            | GatewayStatus::Failed
            | GatewayStatus::Pending => None,
        };
        let error = match status {
            GatewayStatus::Declined => Some(decline_of(intent.last_payment_error.as_ref(), "card_declined")),
            GatewayStatus::Authorized
            | GatewayStatus::Captured
            | GatewayStatus::RequiresAction
            | GatewayStatus::Voided
            | GatewayStatus::Refunded
            | GatewayStatus::Failed
            | GatewayStatus::Pending => None,
        };
        // What an approval tells of the card: the network's id of the authorisation (from the
        // expanded charge) and, for a card kept for later, Stripe's handle on it.
        let approved = matches!(status, GatewayStatus::Authorized | GatewayStatus::Captured);
        GatewayAnswer {
            status,
            gateway_reference: intent.id.clone(),
            error,
            next_action,
            network_transaction_id: intent.network_transaction_id().filter(|_| approved),
            stored_method: intent.stored_method().filter(|_| approved),
        }
    }

    /// The answer to a refused follow-up call (capture, cancel, refund).
    fn refused(reference: &str, error: Option<&wire::ErrorBody>) -> GatewayAnswer {
        GatewayAnswer {
            status: GatewayStatus::Failed,
            gateway_reference: reference.to_owned(),
            error: Some(decline_of(error, "processing_error")),
            next_action: None,
            network_transaction_id: None,
            stored_method: None,
        }
    }

    /// The card of `request` as a new PaymentMethod (`POST /v1/payment_methods`, key
    /// `<key>:payment_method`), or the decline Stripe answered instead.
    async fn card_method(&self, request: &AuthorizeRequest) -> Result<Result<String, GatewayAnswer>, GatewayError> {
        let card = &request.card;
        let mut form = Form::new()
            .field("type", "card")
            .field("card[number]", card.number.expose())
            .field("card[exp_month]", &card.exp_month.to_string())
            .field("card[exp_year]", &card.exp_year.to_string());
        if let Some(cvc) = &card.cvc {
            form = form.field("card[cvc]", cvc.expose());
        }
        let method_key = format!("{}:payment_method", request.idempotency_key);
        match self
            .call("payment_methods", reqwest::Method::POST, "/v1/payment_methods", Some(&form), Some(&method_key))
            .await?
        {
            Reply::Ok(body) => Ok(Ok(Self::parse::<wire::PaymentMethod>("payment_methods", &body)?.id)),
            Reply::Refused(status, error) => {
                let fallback = if status == 402 { "card_declined" } else { "processing_error" };
                Ok(Err(GatewayAnswer {
                    status: GatewayStatus::Declined,
                    gateway_reference: String::new(),
                    error: Some(decline_of(error.as_ref(), fallback)),
                    next_action: None,
                    network_transaction_id: None,
                    stored_method: None,
                }))
            }
        }
    }

    /// A new Stripe Customer for the card of the first payment `request` (`POST
    /// /v1/customers`, key `<key>:customer`, our intent id in its metadata; nothing about the
    /// shop's customer is sent).
    async fn customer_for(&self, request: &AuthorizeRequest) -> Result<String, GatewayError> {
        let form = Form::new().field("metadata[strongroom_intent]", &request.reference);
        let key = format!("{}:customer", request.idempotency_key);
        match self.call("customers", reqwest::Method::POST, "/v1/customers", Some(&form), Some(&key)).await? {
            Reply::Ok(body) => {
                let customer = Self::parse::<wire::Named>("customers", &body)?;
                if customer.id.starts_with("cus_") && wire::plausible_id(&customer.id) {
                    Ok(customer.id)
                } else {
                    Err(no_answer("customers", "the answer names no customer"))
                }
            }
            Reply::Refused(status, _) => Err(no_answer("customers", format_args!("HTTP {status}"))),
        }
    }

    /// `path?expand[]=latest_charge` (a PaymentIntent with its charge, for the network's id).
    fn with_charge(path: &str) -> String {
        format!("{path}?{}", String::from_utf8_lossy(&Form::new().field("expand[]", "latest_charge").to_bytes()))
    }

    /// Our answer for a Refund Stripe returned.
    fn refund_answer(refund: wire::Refund) -> GatewayAnswer {
        let status = RefundStatus::parse(&refund.status).gateway_status();
        let error = match status {
            GatewayStatus::Failed => Some(PaymentError {
                code: wire::code(refund.failure_reason.as_deref()).unwrap_or_else(|| "refund_failed".into()),
                decline_code: None,
                message: "the gateway could not make the refund".into(),
            }),
            GatewayStatus::Authorized
            | GatewayStatus::Captured
            | GatewayStatus::RequiresAction
            | GatewayStatus::Declined
            | GatewayStatus::Voided
            | GatewayStatus::Refunded
            | GatewayStatus::Pending => None,
        };
        GatewayAnswer { error, ..GatewayAnswer::of(status, refund.id) }
    }

    /// Finds the refund made under `key` among the refunds of Stripe's PaymentIntent
    /// `payment` (`GET /v1/refunds?payment_intent=…`, newest first, page by page; a list, so no
    /// search lag): our key is in each refund's metadata. `None`: Stripe made no refund under it.
    async fn lookup_refund(&self, key: &str, payment: Option<&str>) -> Result<Option<GatewayAnswer>, GatewayError> {
        let Some(payment) = payment.filter(|p| p.starts_with("pi_") && wire::plausible_id(p)) else {
            return Err(no_answer("lookup", "the refunded payment has no Stripe reference"));
        };
        let mut starting_after: Option<String> = None;
        for _ in 0..REFUND_LOOKUP_PAGES {
            let mut query = Form::new().field("payment_intent", payment).field("limit", "100");
            if let Some(after) = &starting_after {
                query = query.field("starting_after", after);
            }
            let path = format!("/v1/refunds?{}", String::from_utf8_lossy(&query.to_bytes()));
            let list = match self.call("lookup", reqwest::Method::GET, &path, None, None).await? {
                Reply::Ok(body) => Self::parse::<wire::List<wire::Refund>>("lookup", &body)?,
                Reply::Refused(status, _) => return Err(no_answer("lookup", format_args!("HTTP {status}"))),
            };
            let next = list.data.last().map(|r| r.id.clone()).filter(|_| list.has_more);
            if let Some(found) =
                list.data.into_iter().find(|r| r.metadata.get("strongroom_key").is_some_and(|k| k == key))
            {
                return Ok(Some(Self::refund_answer(found)));
            }
            match next {
                Some(id) if wire::plausible_id(&id) => starting_after = Some(id),
                _ => return Ok(None),
            }
        }
        Err(no_answer("lookup", "the payment has more refunds than one lookup reads"))
    }

    async fn follow_up(
        &self,
        operation: &str,
        request: &FollowUpRequest,
        form: Form,
    ) -> Result<GatewayAnswer, GatewayError> {
        if !wire::plausible_id(&request.gateway_reference) {
            return Err(no_answer(operation, "the payment has no Stripe reference"));
        }
        let path = format!("/v1/payment_intents/{}/{operation}", request.gateway_reference);
        match self.call(operation, reqwest::Method::POST, &path, Some(&form), Some(&request.idempotency_key)).await? {
            Reply::Ok(body) => Ok(Self::intent_answer(&Self::parse::<PaymentIntent>(operation, &body)?)),
            Reply::Refused(_, error) => Ok(Self::refused(&request.gateway_reference, error.as_ref())),
        }
    }
}

#[async_trait]
impl Gateway for StripeGateway {
    fn name(&self) -> &'static str {
        "stripe"
    }

    async fn authorize(&self, request: AuthorizeRequest) -> Result<GatewayAnswer, GatewayError> {
        // A confirmation after 3-D Secure: the customer authenticated at Stripe, which went on
        // with that PaymentIntent; its status is the answer. Only a PaymentIntent that needs a
        // new card (authentication failed) makes way for a new one.
        if let Some(reference) = request.gateway_reference.as_deref().filter(|r| wire::plausible_id(r)) {
            let path = Self::with_charge(&format!("/v1/payment_intents/{reference}"));
            if let Reply::Ok(body) = self.call("payment_intents", reqwest::Method::GET, &path, None, None).await? {
                let existing = Self::parse::<PaymentIntent>("payment_intents", &body)?;
                match IntentStatus::parse(&existing.status) {
                    IntentStatus::RequiresPaymentMethod | IntentStatus::RequiresConfirmation => {}
                    IntentStatus::RequiresAction
                    | IntentStatus::Processing
                    | IntentStatus::RequiresCapture
                    | IntentStatus::Succeeded
                    | IntentStatus::Canceled
                    | IntentStatus::Unknown => return Ok(Self::intent_answer(&existing)),
                }
            }
        }
        // A saved card whose first payment Stripe kept (its Customer and PaymentMethod) is paid
        // with that PaymentMethod, so Stripe links this payment to the first one for the
        // networks; any other card becomes a new PaymentMethod.
        let kept = match &request.stored_credential {
            Some(
                StoredCredential::CustomerInitiated { stored_method, .. }
                | StoredCredential::MerchantInitiated { stored_method, .. },
            ) => stored_method.as_deref().and_then(wire::stored_method),
            Some(StoredCredential::First(_)) | None => None,
        };
        let (customer, method) = match kept {
            Some((customer, method)) => (Some(customer.to_owned()), method.to_owned()),
            None => match self.card_method(&request).await? {
                Ok(method) => {
                    // A card the customer agreed to keep is attached to a Customer of its own
                    // (Stripe keeps a PaymentMethod for later only on a Customer).
                    let customer = match &request.stored_credential {
                        Some(StoredCredential::First(_)) => Some(self.customer_for(&request).await?),
                        _ => None,
                    };
                    (customer, method)
                }
                Err(declined) => return Ok(declined),
            },
        };
        let capture_method = if request.capture { "automatic" } else { "manual" };
        let mut form = Form::new()
            .field("amount", &request.amount.minor().to_string())
            .field("currency", &request.amount.currency().lowercase())
            .field("payment_method", &method)
            .field("confirm", "true")
            .field("capture_method", capture_method)
            .field("metadata[strongroom_intent]", &request.reference)
            .field("metadata[strongroom_key]", &request.idempotency_key)
            .field("expand[]", "latest_charge");
        if let Some(customer) = &customer {
            form = form.field("customer", customer);
        }
        let return_url = self
            .return_url
            .clone()
            .or_else(|| self.pages_origin.as_ref().map(|origin| format!("{origin}/pay/return/{}", request.reference)));
        if let Some(url) = &return_url {
            form = form.field("return_url", url);
        }
        // Stripe's stored-credential parameters: it tells the networks itself. A card kept for
        // later is `setup_future_usage`; a payment without the customer is `off_session`.
        match &request.stored_credential {
            Some(StoredCredential::First(usage)) => form = form.field("setup_future_usage", usage.as_str()),
            Some(StoredCredential::MerchantInitiated { .. }) => form = form.field("off_session", "true"),
            Some(StoredCredential::CustomerInitiated { .. }) | None => {}
        }
        match self
            .call(
                "payment_intents",
                reqwest::Method::POST,
                "/v1/payment_intents",
                Some(&form),
                Some(&request.idempotency_key),
            )
            .await?
        {
            Reply::Ok(body) => Ok(Self::intent_answer(&Self::parse::<PaymentIntent>("payment_intents", &body)?)),
            Reply::Refused(status, error) => Ok(GatewayAnswer {
                status: GatewayStatus::Declined,
                gateway_reference: error
                    .as_ref()
                    .and_then(|e| e.payment_intent.as_ref())
                    .map(|pi| pi.id.clone())
                    .unwrap_or_default(),
                error: Some(decline_of(
                    error.as_ref(),
                    if status == 402 { "card_declined" } else { "processing_error" },
                )),
                next_action: None,
                network_transaction_id: None,
                stored_method: None,
            }),
        }
    }

    async fn capture(&self, request: &FollowUpRequest) -> Result<GatewayAnswer, GatewayError> {
        let form = Form::new().field("amount_to_capture", &request.amount.minor().to_string());
        self.follow_up("capture", request, form).await
    }

    async fn cancel(&self, request: &FollowUpRequest) -> Result<GatewayAnswer, GatewayError> {
        self.follow_up("cancel", request, Form::new()).await
    }

    async fn refund(&self, request: &FollowUpRequest) -> Result<GatewayAnswer, GatewayError> {
        if !wire::plausible_id(&request.gateway_reference) {
            return Err(no_answer("refunds", "the payment has no Stripe reference"));
        }
        let form = Form::new()
            .field("payment_intent", &request.gateway_reference)
            .field("amount", &request.amount.minor().to_string())
            .field("metadata[strongroom_intent]", &request.reference)
            .field("metadata[strongroom_key]", &request.idempotency_key);
        match self
            .call("refunds", reqwest::Method::POST, "/v1/refunds", Some(&form), Some(&request.idempotency_key))
            .await?
        {
            Reply::Ok(body) => Ok(Self::refund_answer(Self::parse::<wire::Refund>("refunds", &body)?)),
            Reply::Refused(_, error) => Ok(Self::refused("", error.as_ref())),
        }
    }

    /// Stripe's search API is eventually consistent: "never seen" is believed only after the
    /// configured lag ([`DEFAULT_SEARCH_LAG`]).
    fn lookup_lag(&self) -> std::time::Duration {
        self.search_lag
    }

    /// After 3-D Secure Stripe goes on with the PaymentIntent by itself: its status is the
    /// answer (read by its id, so no search lag).
    async fn resume(&self, request: &ResumeRequest) -> Result<GatewayAnswer, GatewayError> {
        if !wire::plausible_id(&request.gateway_reference) {
            return Err(no_answer("resume", "the payment has no Stripe reference"));
        }
        let path = Self::with_charge(&format!("/v1/payment_intents/{}", request.gateway_reference));
        match self.call("resume", reqwest::Method::GET, &path, None, None).await? {
            Reply::Ok(body) => Ok(Self::intent_answer(&Self::parse::<PaymentIntent>("resume", &body)?)),
            Reply::Refused(status, _) => Err(no_answer("resume", format_args!("HTTP {status}"))),
        }
    }

    /// Finds the PaymentIntent of an authorisation, capture or void by our intent id in its
    /// metadata (Stripe's search API), and a refund by our key in its metadata among the
    /// refunds of the payment (Stripe cannot be searched for refunds).
    async fn lookup(&self, request: &LookupRequest) -> Result<Option<GatewayAnswer>, GatewayError> {
        let key = request.idempotency_key.as_str();
        let mut parts = key.split(':');
        let (Some(object), Some(operation)) = (parts.next(), parts.next()) else {
            return Err(no_answer("lookup", "not a key of ours"));
        };
        if operation == "refund" && object.starts_with("re_") {
            return self.lookup_refund(key, request.payment_reference.as_deref()).await;
        }
        if !object.starts_with("pi_") || !wire::plausible_id(object) {
            return Err(no_answer("lookup", "not a key of ours"));
        }
        let query = Form::new()
            .field("query", &format!("metadata['strongroom_intent']:'{object}'"))
            .field("expand[]", "data.latest_charge");
        let path = format!("/v1/payment_intents/search?{}", String::from_utf8_lossy(&query.to_bytes()));
        match self.call("lookup", reqwest::Method::GET, &path, None, None).await? {
            Reply::Ok(body) => {
                let list = Self::parse::<wire::List<PaymentIntent>>("lookup", &body)?;
                Ok(list.data.first().map(Self::intent_answer))
            }
            Reply::Refused(status, _) => Err(no_answer("lookup", format_args!("HTTP {status}"))),
        }
    }
}

/// Verifies and reads Stripe's webhooks (`Stripe-Signature`: `t=…,v1=…[,v1=…]`, HMAC-SHA256
/// of `{t}.{body}` under the endpoint's signing secret, within [`SIGNATURE_TOLERANCE`] of our
/// clock, any `v1` matching, compared in constant time).
#[derive(Debug)]
pub struct StripeNotices {
    secret: Secret<String>,
}

impl StripeNotices {
    /// A reader for the endpoint signing secret `whsec_…`.
    pub fn new(secret: Secret<String>) -> Self {
        Self { secret }
    }

    /// Checks `header` against `body` at `now`.
    pub fn verify(&self, header: Option<&str>, body: &[u8], now: Timestamp) -> Result<(), NoticeRejected> {
        let header = header.ok_or(NoticeRejected::MissingSignature)?;
        let mut time: Option<i64> = None;
        let mut signatures: Vec<Vec<u8>> = Vec::new();
        for item in header.split(',') {
            let Some((name, value)) = item.trim().split_once('=') else { continue };
            match name {
                "t" => time = value.parse().ok(),
                "v1" => {
                    if let Some(bytes) = hex_decode(value) {
                        signatures.push(bytes);
                    }
                }
                _ => {}
            }
        }
        let (Some(time), false) = (time, signatures.is_empty()) else {
            return Err(NoticeRejected::MalformedSignature);
        };
        let mut mac = Hmac::<Sha256>::new_from_slice(self.secret.expose().as_bytes())
            .map_err(|_| NoticeRejected::MalformedSignature)?;
        mac.update(time.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        let expected = mac.finalize().into_bytes();
        let matched = signatures
            .iter()
            .fold(false, |found, candidate| found | strongroom_crypto::constant_time_eq(candidate, &expected));
        if !matched {
            return Err(NoticeRejected::BadSignature);
        }
        let now_secs = now.unix_millis().div_euclid(1000);
        let tolerance = i64::try_from(SIGNATURE_TOLERANCE.as_secs()).unwrap_or(300);
        if now_secs.abs_diff(time) > tolerance.unsigned_abs() {
            return Err(NoticeRejected::StaleSignature);
        }
        Ok(())
    }
}

fn hex_decode(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len()).step_by(2).map(|i| text.get(i..i + 2).and_then(|pair| u8::from_str_radix(pair, 16).ok())).collect()
}

fn intent_notice(object: &serde_json::Value) -> Result<IntentNotice, NoticeRejected> {
    let intent: PaymentIntent = serde_json::from_value(object.clone()).map_err(|_| NoticeRejected::Malformed)?;
    let answer = StripeGateway::intent_answer(&intent);
    Ok(IntentNotice {
        intent: intent.metadata.get("strongroom_intent").cloned(),
        answer,
        amount_received: intent.amount_received,
    })
}

fn refund_notice(object: &serde_json::Value) -> Result<RefundNotice, NoticeRejected> {
    let refund: wire::Refund = serde_json::from_value(object.clone()).map_err(|_| NoticeRejected::Malformed)?;
    let status = RefundStatus::parse(&refund.status).gateway_status();
    let refund_id = refund
        .metadata
        .get("strongroom_key")
        .and_then(|key| key.split(':').next())
        .filter(|id| id.starts_with("re_"))
        .map(str::to_owned);
    Ok(RefundNotice {
        refund: refund_id,
        status,
        gateway_reference: refund.id,
        failure_reason: wire::code(refund.failure_reason.as_deref()),
    })
}

fn dispute_notice(object: &serde_json::Value) -> Result<DisputeNotice, NoticeRejected> {
    let dispute: wire::Dispute = serde_json::from_value(object.clone()).map_err(|_| NoticeRejected::Malformed)?;
    if !wire::plausible_id(&dispute.id) {
        return Err(NoticeRejected::Malformed);
    }
    Ok(DisputeNotice {
        gateway_reference: dispute.id,
        payment: dispute.payment_intent.filter(|p| wire::plausible_id(p)),
        amount: dispute.amount,
        currency: dispute.currency,
        reason: wire::code(dispute.reason.as_deref()).unwrap_or_else(|| "general".into()),
        status: wire::code(Some(&dispute.status)).unwrap_or_else(|| "unknown".into()),
        evidence_due_by: dispute
            .evidence_details
            .and_then(|d| d.due_by)
            .map(|secs| Timestamp::from_unix_millis(secs.saturating_mul(1000))),
    })
}

impl GatewayNotices for StripeNotices {
    fn gateway(&self) -> &'static str {
        "stripe"
    }

    fn read(&self, signature: Option<&str>, body: &[u8], now: Timestamp) -> Result<GatewayNotice, NoticeRejected> {
        self.verify(signature, body, now)?;
        let event: wire::Event = serde_json::from_slice(body).map_err(|_| NoticeRejected::Malformed)?;
        if !wire::plausible_id(&event.id) {
            return Err(NoticeRejected::Malformed);
        }
        let object = &event.data.object;
        let kind = match event.kind.as_str() {
            "payment_intent.succeeded"
            | "payment_intent.payment_failed"
            | "payment_intent.amount_capturable_updated"
            | "payment_intent.canceled" => NoticeKind::Intent(intent_notice(object)?),
            "refund.updated" | "refund.created" | "refund.failed" => NoticeKind::Refund(refund_notice(object)?),
            "charge.refunded" => NoticeKind::Acknowledged("charge.refunded"),
            "charge.dispute.created" => NoticeKind::Dispute("dispute.created", dispute_notice(object)?),
            "charge.dispute.updated" | "charge.dispute.funds_withdrawn" | "charge.dispute.funds_reinstated" => {
                NoticeKind::Dispute("dispute.updated", dispute_notice(object)?)
            }
            "charge.dispute.closed" => NoticeKind::Dispute("dispute.closed", dispute_notice(object)?),
            other => NoticeKind::Unknown(Some(other.to_owned())),
        };
        Ok(GatewayNotice { id: event.id, kind })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sign(secret: &str, t: i64, body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(format!("{t}.").as_bytes());
        mac.update(body);
        mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn no_debug_print_shows_a_secret() {
        let settings = StripeSettings {
            api_base: DEFAULT_API_BASE.into(),
            secret_key: Secret::new("sk_test_canary-key".into()),
            return_url: None,
            pages_origin: None,
            outbound: OutboundSettings::default(),
            search_lag: DEFAULT_SEARCH_LAG,
        };
        let gateway = StripeGateway::new(settings.clone()).unwrap();
        let notices = StripeNotices::new(Secret::new("whsec_canary-hook".into()));
        let printed = format!("{settings:?}{gateway:?}{notices:?}{:?}", Form::new().field("card[cvc]", "123"));
        assert!(!printed.contains("canary") && !printed.contains("123"), "{printed}");
    }

    #[test]
    fn signatures_are_checked_with_tolerance() {
        let notices = StripeNotices::new(Secret::new("whsec_test".into()));
        let body = br#"{"id":"evt_1"}"#;
        let now = Timestamp::from_unix_millis(1_700_000_000_000);
        let good = sign("whsec_test", 1_700_000_000, body);
        let header = format!("t=1700000000,v1=00ff,v1={good}");
        assert_eq!(notices.verify(Some(&header), body, now), Ok(()));
        let late = Timestamp::from_unix_millis(1_700_000_301_000);
        assert_eq!(notices.verify(Some(&header), body, late), Err(NoticeRejected::StaleSignature));
        let bad = format!("t=1700000000,v1={}", sign("whsec_other", 1_700_000_000, body));
        assert_eq!(notices.verify(Some(&bad), body, now), Err(NoticeRejected::BadSignature));
        assert_eq!(notices.verify(Some("t=1"), body, now), Err(NoticeRejected::MalformedSignature));
        assert_eq!(notices.verify(None, body, now), Err(NoticeRejected::MissingSignature));
    }
}
