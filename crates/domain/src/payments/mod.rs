//! Payments: orders ([`orders`]), payment intents and their state machine ([`intents`],
//! [`state`]), refunds ([`refunds`]), the gateway port ([`gateway`]), the checkout rules
//! before an authorisation ([`fraud`], [`checkout`]: fraud checks, step-up, refund approvals),
//! what gateways say on their own (webhooks, disputes: [`gateway_events`]), reconciliation of
//! unanswered calls ([`reconcile`]), 3-D Secure's pages ([`authentication`]) and saved cards
//! with their stored-credential flags ([`saved_cards`]).
//!
//! Money moves only through a [`gateway::Gateway`], exactly once: every state change is one
//! conditional update whose affected-row count decides (so of thirty concurrent confirms one
//! wins), each gateway call is recorded under its idempotency key before it is made, and every
//! change is written with its outbox event in one transaction, its audit entry durable before
//! the answer. A card number leaves the vault only towards the gateway, in an
//! [`gateway::AuthorizeRequest`].
//! Must never: compute money with a float, trust a total, status or amount a client computed,
//! mark an intent failed or succeeded without the gateway's word, or show one space's objects
//! to another (another merchant's or mode's id answers as a missing one).

pub mod authentication;
pub mod checkout;
pub mod fraud;
pub mod gateway;
pub mod gateway_events;
pub mod intents;
pub mod orders;
pub mod reconcile;
pub mod refunds;
pub mod saved_cards;
pub mod state;

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};
use strongroom_types::{Clock, Currency, Entropy};

use crate::api_keys::Principal;
use crate::audit::event::{ActorKind, AuditEvent, Outcome};
use crate::audit::log::AuditLog;
use crate::error::{DomainError, FieldError};
use crate::outbox::Outbox;
use crate::ports::payments::PaymentsRepository;
use crate::vault::tokens::{Source, VaultService};
use gateway::{ChallengeSimulator, Gateway};

/// The largest amount strongroom accepts in one field, in minor units (12 digits: more than any
/// gateway takes in one payment, and far from `i64`'s end, so sums of a few hundred lines of
/// bounded quantity cannot overflow unnoticed; they are checked all the same).
pub const MAX_AMOUNT: i64 = 999_999_999_999;
/// Most line items of an order.
pub const MAX_LINE_ITEMS: usize = 100;
/// Largest quantity of a line.
pub const MAX_QUANTITY: i64 = 1_000_000;
/// Most objects in one page of a list.
pub const MAX_PAGE: u32 = 100;

/// Settings of the payments service.
#[derive(Debug, Clone)]
pub struct PaymentSettings {
    /// How long a gateway call may take; after that the intent stays `processing` and is
    /// reconciled.
    pub gateway_timeout: Duration,
    /// The origin customers reach strongroom's payment pages at (`https://pay.shop.example`),
    /// for the 3-D Secure hand-off links; empty: links relative to the API's origin.
    pub pages_origin: String,
}

impl Default for PaymentSettings {
    fn default() -> Self {
        Self { gateway_timeout: Duration::from_secs(30), pages_origin: String::new() }
    }
}

/// What the payments service is made of.
#[derive(Debug, Clone)]
pub struct PaymentPorts {
    /// Storage.
    pub repo: Arc<dyn PaymentsRepository>,
    /// The vault (card tokens).
    pub vault: Arc<VaultService>,
    /// The gateway.
    pub gateway: Arc<dyn Gateway>,
    /// The sandbox's 3-D Secure stand-in, when the gateway is the sandbox.
    pub simulator: Option<Arc<dyn ChallengeSimulator>>,
    /// The outbox.
    pub outbox: Outbox,
    /// The audit log.
    pub audit: AuditLog,
    /// Time.
    pub clock: Arc<dyn Clock>,
    /// Randomness.
    pub entropy: Arc<dyn Entropy>,
}

/// The payments service: orders, intents and refunds.
#[derive(Debug)]
pub struct PaymentsService {
    ports: PaymentPorts,
    settings: PaymentSettings,
    /// The checkout rules (fraud checks, step-up, refund approvals), wired once at start.
    checkout: std::sync::OnceLock<checkout::Checkout>,
    /// Intrusion detection: card testing is reported to it, and the clients it blocks may not
    /// pay (wired once at start).
    detection: std::sync::OnceLock<crate::detection::DecisionService>,
    /// Incident freezes: refunds are refused while frozen (wired once at start).
    freezes: std::sync::OnceLock<crate::detection::playbooks::Freezes>,
}

/// Who is asking, and from where.
#[derive(Debug, Clone, Copy)]
pub struct Caller<'a> {
    /// The API key (or staff member).
    pub principal: &'a Principal,
    /// Address and request id.
    pub source: &'a Source,
}

impl Caller<'_> {
    /// An audit event by this caller on an object.
    fn event(&self, action: &'static str, kind: &'static str, id: &str) -> AuditEvent {
        self.principal
            .event(action, Outcome::Success)
            .from_source(self.source.ip, self.source.request_id.clone())
            .on(kind, id)
    }
}

/// Who moves a payment: a caller of the API, or strongroom itself on the gateway's word (the
/// reconciliation job), named in the audit entry.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Actor<'a> {
    /// An API key or staff member.
    Caller(Caller<'a>),
    /// strongroom itself: the job's name.
    System(&'static str),
    /// A gateway's own notice (a webhook), by the gateway's name: `gateway:<name>` in the audit.
    Gateway(&'static str),
}

impl<'a> From<Caller<'a>> for Actor<'a> {
    fn from(caller: Caller<'a>) -> Self {
        Actor::Caller(caller)
    }
}

impl Actor<'_> {
    /// An audit event by this actor on an object of `merchant`'s `mode` space.
    fn event(
        &self,
        action: &'static str,
        kind: &'static str,
        id: &str,
        space: (&crate::merchants::MerchantId, crate::api_keys::Mode),
    ) -> AuditEvent {
        match self {
            Actor::Caller(caller) => caller.event(action, kind, id),
            Actor::System(job) => AuditEvent::by(ActorKind::System, Some((*job).to_owned()), action, Outcome::Success)
                .for_merchant(space.0)
                .in_mode(space.1)
                .on(kind, id),
            Actor::Gateway(name) => {
                AuditEvent::by(ActorKind::System, Some(format!("gateway:{name}")), action, Outcome::Success)
                    .for_merchant(space.0)
                    .in_mode(space.1)
                    .on(kind, id)
            }
        }
    }
}

impl PaymentsService {
    /// The service.
    pub fn new(ports: PaymentPorts, settings: PaymentSettings) -> Self {
        Self {
            ports,
            settings,
            checkout: std::sync::OnceLock::new(),
            detection: std::sync::OnceLock::new(),
            freezes: std::sync::OnceLock::new(),
        }
    }

    /// Refuses refunds of a merchant while an incident's playbook froze them.
    pub fn set_freezes(&self, freezes: crate::detection::playbooks::Freezes) {
        let _ = self.freezes.set(freezes);
    }

    /// The gateway's name.
    pub fn gateway_name(&self) -> &'static str {
        self.ports.gateway.name()
    }
}

/// A `422` with a stable code for one field.
pub(crate) fn reject(code: &'static str, pointer: impl Into<String>, detail: impl Into<String>) -> DomainError {
    DomainError::Rejected { code, errors: vec![FieldError::new(pointer, detail)] }
}

/// An amount in minor units: an integer from `min` to [`MAX_AMOUNT`]. Negative, fractional and
/// too large values each say so (code `invalid_amount`); the value is never repeated.
pub fn parse_amount(value: &Value, pointer: &str, min: i64) -> Result<i64, DomainError> {
    let Value::Number(number) = value else {
        return Err(reject("invalid_amount", pointer, "must be an integer number of minor units"));
    };
    let amount = match number.as_i64() {
        Some(amount) => amount,
        None if number.as_u64().is_some() => {
            return Err(reject("invalid_amount", pointer, format!("must be at most {MAX_AMOUNT}")));
        }
        None => match number.as_f64() {
            Some(f) if f.is_finite() && f.fract() == 0.0 && f > 0.0 => {
                return Err(reject("invalid_amount", pointer, format!("must be at most {MAX_AMOUNT}")));
            }
            Some(f) if f.is_finite() && f.fract() == 0.0 => {
                return Err(reject("invalid_amount", pointer, "must not be negative"));
            }
            _ => return Err(reject("invalid_amount", pointer, "must be an integer number of minor units")),
        },
    };
    if amount < 0 {
        return Err(reject("invalid_amount", pointer, "must not be negative"));
    }
    if amount < min {
        return Err(reject("invalid_amount", pointer, format!("must be at least {min}")));
    }
    if amount > MAX_AMOUNT {
        return Err(reject("invalid_amount", pointer, format!("must be at most {MAX_AMOUNT}")));
    }
    Ok(amount)
}

/// A currency code of ISO 4217 (code `unknown_currency`).
pub fn parse_currency(code: &str, pointer: &str) -> Result<Currency, DomainError> {
    Currency::parse(code)
        .map_err(|_| reject("unknown_currency", pointer, "must be an ISO 4217 currency code such as eur or usd"))
}

/// A customer reference: the vault's rule (1 to 64 of `A-Z a-z 0-9 _ . : -`), never a card number.
pub(crate) fn check_customer(customer: &str, pointer: &str) -> Result<(), DomainError> {
    if !crate::vault::tokens::valid_customer(customer) {
        return Err(DomainError::invalid(pointer, "must be 1 to 64 of A-Z, a-z, 0-9, _ . : -"));
    }
    crate::free_text::check(pointer, customer)
}

/// A page of the shop a customer's browser is sent back to: an absolute `https://` URL of at
/// most 2048 characters with a host and no user name or password (`http://` only for
/// `localhost` and `127.0.0.1`, for development), with nothing a header or an attribute would
/// need escaped. It is only ever used as a link and a redirect target.
pub(crate) fn check_return_url(url: &str, pointer: &str) -> Result<(), DomainError> {
    const MESSAGE: &str = "must be an absolute https:// URL of at most 2048 characters (http:// only for localhost)";
    let local = url.starts_with("http://");
    let Some(rest) = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://")) else {
        return Err(reject("invalid_return_url", pointer, MESSAGE));
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = authority
        .rsplit_once(':')
        .map_or(authority, |(host, port)| if port.chars().all(|c| c.is_ascii_digit()) { host } else { authority });
    let plain =
        url.chars().all(|c| c.is_ascii_graphic() && !matches!(c, '"' | '<' | '>' | '\\' | '`' | '{' | '}' | '|' | '^'));
    if url.len() > 2048
        || !plain
        || host.is_empty()
        || authority.contains('@')
        || (local && !matches!(host, "localhost" | "127.0.0.1"))
    {
        return Err(reject("invalid_return_url", pointer, MESSAGE));
    }
    crate::free_text::check(pointer, url)
}

/// Free text of at most `max` characters, never a card number.
pub(crate) fn check_text(text: &str, pointer: &str, max: usize) -> Result<(), DomainError> {
    if text.chars().count() > max || text.chars().any(char::is_control) {
        return Err(DomainError::invalid(pointer, format!("must be at most {max} printable characters")));
    }
    crate::free_text::check(pointer, text)
}

/// The shop's metadata: up to 20 keys of 1 to 40 of `A-Z a-z 0-9 _`, string values of at most
/// 500 characters, no card numbers. Returns it as JSON text.
pub(crate) fn check_metadata(
    metadata: Option<&Map<String, Value>>,
    pointer: &str,
) -> Result<Option<String>, DomainError> {
    let Some(metadata) = metadata else { return Ok(None) };
    if metadata.len() > 20 {
        return Err(DomainError::invalid(pointer, "at most 20 keys"));
    }
    for (key, value) in metadata {
        let key_ok = !key.is_empty() && key.len() <= 40 && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !key_ok {
            return Err(DomainError::invalid(pointer, "keys are 1 to 40 of a-z, A-Z, 0-9 and _"));
        }
        match value {
            Value::String(s) if s.chars().count() <= 500 => {}
            _ => {
                return Err(DomainError::invalid(
                    format!("{pointer}/{key}"),
                    "must be a string of at most 500 characters",
                ));
            }
        }
    }
    if let Some(field) = crate::free_text::find_in_object(pointer, metadata) {
        return Err(crate::free_text::rejection(vec![field]));
    }
    Ok(Some(Value::Object(metadata.clone()).to_string()))
}

/// A page size: 1 to [`MAX_PAGE`], default 10.
pub fn page_limit(limit: Option<u32>) -> Result<u32, DomainError> {
    match limit {
        None => Ok(10),
        Some(n) if (1..=MAX_PAGE).contains(&n) => Ok(n),
        Some(_) => Err(DomainError::invalid("/limit", format!("must be 1 to {MAX_PAGE}"))),
    }
}

/// A cursor: an id of the listed kind (`pi_…`), or nothing.
pub fn check_cursor(cursor: Option<&str>, prefix: &str) -> Result<(), DomainError> {
    match cursor {
        Some(id) if !plausible_id(id, prefix) => {
            Err(DomainError::invalid("/starting_after", format!("must be an id starting with {prefix}_")))
        }
        _ => Ok(()),
    }
}

/// Whether `id` looks like one of our ids with `prefix` (anything else is not looked up).
pub fn plausible_id(id: &str, prefix: &str) -> bool {
    id.strip_prefix(prefix).and_then(|rest| rest.strip_prefix('_')).is_some_and(|body| {
        body.len() == 26 && body.bytes().all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn code_of(err: DomainError) -> &'static str {
        match err {
            DomainError::Rejected { code, .. } => code,
            DomainError::Validation(_) => "validation_failed",
            _ => "other",
        }
    }

    #[test]
    fn amounts_are_integers_in_range() {
        assert_eq!(parse_amount(&json!(0), "/a", 0).ok(), Some(0));
        assert_eq!(parse_amount(&json!(MAX_AMOUNT), "/a", 1).ok(), Some(MAX_AMOUNT));
        for bad in [
            json!(-1),
            json!(1.5),
            json!("10"),
            json!(null),
            json!(MAX_AMOUNT + 1),
            json!(u64::MAX),
            json!(1e30),
            json!(-1e30),
        ] {
            let err = parse_amount(&bad, "/a", 0).err().map(code_of);
            assert_eq!(err, Some("invalid_amount"), "{bad}");
        }
        assert_eq!(parse_amount(&json!(0), "/a", 1).err().map(code_of), Some("invalid_amount"));
    }

    proptest! {
        #[test]
        fn any_integer_is_accepted_exactly_in_range(n in any::<i64>()) {
            let parsed = parse_amount(&json!(n), "/amount", 1);
            prop_assert_eq!(parsed.is_ok(), (1..=MAX_AMOUNT).contains(&n));
            if let Ok(v) = parsed { prop_assert_eq!(v, n); }
        }
    }

    #[test]
    fn ids_and_cursors() {
        assert!(plausible_id("pi_abcdefghijklmnopqrstuvwxyz", "pi"));
        assert!(!plausible_id("pi_abc", "pi"));
        assert!(!plausible_id("re_abcdefghijklmnopqrstuvwxyz", "pi"));
        assert!(check_cursor(Some("nope"), "pi").is_err());
        assert!(page_limit(Some(0)).is_err() && page_limit(Some(101)).is_err());
        assert_eq!(page_limit(None).ok(), Some(10));
    }
}
