//! Detokenize-and-forward: the shop sends a request for its payment gateway with placeholders
//! where card data belongs ([`template`]); strongroom checks the destination against the
//! operator's allow-list and the outbound address policy (the [`GatewayTransport`] port,
//! implemented in `connectors/src/gateways/forward.rs`), fills in the values of the caller's own
//! card tokens, sends the request, and hands back the gateway's status, a safe subset of its
//! headers and its body with every card number masked ([`crate::free_text::mask_card_numbers`]).
//!
//! Every forward is audited: one `forward.token_detokenized` entry per token (the fields used),
//! made durable before anything is sent, and one `forward.sent` entry naming the destination
//! (host and path, never the query) with the gateway's status and the duration, or why it failed.
//! A CVC is taken from memory when the request is sent and is gone afterwards.
//! Must never: put a value, the body, a header value (they carry the gateway's secret key) or a
//! URL's query into an error, a log line, an audit entry or a metric label; send to a destination
//! outside the allow-list; fill in a token of another merchant or mode.

pub mod template;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use serde::Deserialize;
use strongroom_types::Secret;

use crate::api_keys::Principal;
use crate::audit::event::{AuditEvent, Outcome};
use crate::audit::log::AuditLog;
use crate::error::{DomainError, FieldError};
use crate::vault::tokens::{Source, VaultService};
use crate::vault::values::ValueKind;
use template::{Encoding, Field};

/// Problem code: the destination is not on the allow-list or is refused by the address policy.
pub const DESTINATION_NOT_ALLOWED: &str = "forward_destination_not_allowed";
/// Problem code: a placeholder names a token that is not a card.
pub const TOKEN_NOT_CARD: &str = "forward_token_not_card";
/// Problem code: a placeholder asks for a CVC that is not held (never given, used, or expired).
pub const CVC_UNAVAILABLE: &str = "forward_cvc_unavailable";
/// Problem code: a placeholder asks for a field the card does not hold (a holder name).
pub const FIELD_EMPTY: &str = "forward_field_empty";
/// Problem code: placeholders in a body whose content type takes none.
pub const CONTENT_TYPE_UNSUPPORTED: &str = "forward_content_type_unsupported";
/// Problem code: a header the gateway request may not carry.
pub const HEADER_NOT_ALLOWED: &str = "forward_header_not_allowed";

/// Most headers a forward may carry.
pub const MAX_HEADERS: usize = 32;

/// Headers strongroom sets itself or that would change how the request travels.
const REFUSED_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "upgrade",
    "te",
    "trailer",
    "expect",
    "proxy-authorization",
    "proxy-connection",
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
];

/// Headers of the gateway's answer handed back to the shop (values masked like the body).
pub const SAFE_RESPONSE_HEADERS: &[&str] =
    &["content-type", "content-language", "retry-after", "location", "request-id", "x-request-id"];

/// An HTTP method a forward may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// POST (the default).
    Post,
    /// PUT.
    Put,
    /// PATCH.
    Patch,
    /// GET.
    Get,
    /// DELETE.
    Delete,
}

impl Method {
    /// The method's name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Patch => "PATCH",
            Method::Get => "GET",
            Method::Delete => "DELETE",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        [Method::Post, Method::Put, Method::Patch, Method::Get, Method::Delete]
            .into_iter()
            .find(|m| m.as_str().eq_ignore_ascii_case(text))
    }
}

/// A destination the allow-list and the address policy accepted.
pub struct Destination {
    /// The URL to send to.
    pub url: Secret<String>,
    /// The allow-list entry it matched (`host` or `host:port`): the metric label and the audit
    /// entry's host.
    pub host: String,
    /// The URL's path (no query).
    pub path: String,
}

impl std::fmt::Debug for Destination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Destination").field("host", &self.host).finish_non_exhaustive()
    }
}

/// A request ready for the gateway.
pub struct GatewayRequest {
    /// The method.
    pub method: Method,
    /// Where.
    pub url: Secret<String>,
    /// The shop's headers (names in lower case).
    pub headers: Vec<(String, Secret<String>)>,
    /// The filled-in body.
    pub body: Secret<Vec<u8>>,
}

impl std::fmt::Debug for GatewayRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayRequest").field("method", &self.method).finish_non_exhaustive()
    }
}

/// What the gateway answered.
pub struct GatewayAnswer {
    /// Its status.
    pub status: u16,
    /// Its headers (names in lower case).
    pub headers: Vec<(String, String)>,
    /// Its body, not yet masked.
    pub body: Secret<Vec<u8>>,
    /// From sending to the end of the body, in milliseconds.
    pub elapsed_ms: u64,
}

impl std::fmt::Debug for GatewayAnswer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayAnswer").field("status", &self.status).finish_non_exhaustive()
    }
}

/// Why a forward got no usable answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GatewayFailure {
    /// The address policy refused the address the host resolved to: nothing was sent.
    Refused,
    /// No connection (refused, unresolvable, TLS verification failed): nothing was sent.
    Unreachable,
    /// No complete answer in time: the gateway may have acted.
    Timeout,
    /// The connection broke or the answer was malformed after the request went out: the gateway
    /// may have acted.
    Failed,
    /// The answer's body exceeded the limit: the gateway acted, the answer is not shown.
    TooLarge,
}

impl GatewayFailure {
    /// The reason code in the audit log and the metrics.
    pub const fn as_str(self) -> &'static str {
        match self {
            GatewayFailure::Refused => "address_refused",
            GatewayFailure::Unreachable => "unreachable",
            GatewayFailure::Timeout => "timeout",
            GatewayFailure::Failed => "failed",
            GatewayFailure::TooLarge => "response_too_large",
        }
    }
}

/// The outbound side of a forward (`connectors`): the allow-list, the address policy, TLS.
#[async_trait]
pub trait GatewayTransport: Send + Sync + std::fmt::Debug {
    /// Accepts a destination URL or says why not (the reason never repeats the URL).
    fn destination(&self, url: &str) -> Result<Destination, String>;
    /// Sends one request; `Err` carries the failure and the milliseconds it took.
    async fn send(&self, request: GatewayRequest) -> Result<GatewayAnswer, (GatewayFailure, u64)>;
}

/// A forward as the shop asked for it. `Debug` shows neither header values nor the body.
pub struct ForwardInput {
    /// `https://…` on the allow-list.
    pub destination: String,
    /// `POST` when absent.
    pub method: Option<String>,
    /// Header names and values, as given.
    pub headers: Vec<(String, Secret<String>)>,
    /// The template.
    pub body: Secret<String>,
}

impl std::fmt::Debug for ForwardInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.headers.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("ForwardInput").field("method", &self.method).field("headers", &names).finish_non_exhaustive()
    }
}

/// The gateway's answer as the shop gets it: masked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardOutput {
    /// The gateway's status.
    pub status: u16,
    /// The safe headers, values masked.
    pub headers: Vec<(String, String)>,
    /// The body with every card number masked.
    pub body: Vec<u8>,
    /// The gateway's time, in milliseconds.
    pub duration_ms: u64,
    /// The `forward.sent` audit entry.
    pub audit_index: u64,
}

/// Why a forward failed.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// Refused before anything was sent (or a domain failure).
    #[error(transparent)]
    Domain(#[from] DomainError),
    /// Sent or attempted, without a usable answer.
    #[error("gateway: {}", .0.as_str())]
    Gateway(GatewayFailure),
}

/// A metric series: the allow-list entry (`-` for refused destinations) and the outcome.
pub type ForwardSeries = (String, &'static str);

/// Counters per destination host, for the metrics: (host, outcome) → (forwards, milliseconds).
#[derive(Debug, Default)]
pub struct ForwardCounters {
    /// By allow-list entry and outcome: forwards and milliseconds spent.
    pub by_host: Mutex<HashMap<ForwardSeries, (u64, u64)>>,
}

impl ForwardCounters {
    fn count(&self, host: &str, outcome: &'static str, ms: u64) {
        if let Ok(mut counters) = self.by_host.lock() {
            let entry = counters.entry((host.to_owned(), outcome)).or_insert((0, 0));
            entry.0 += 1;
            entry.1 += ms;
        }
    }
}

/// The fields of a card's sealed value a forward fills in.
#[derive(Deserialize)]
struct CardValue {
    number: String,
    exp_month: u8,
    exp_year: u16,
    #[serde(default)]
    holder_name: Option<String>,
}

/// One card's values, formatted, wiped on drop.
struct CardFields {
    number: Secret<String>,
    exp_month: Secret<String>,
    exp_year: Secret<String>,
    name: Option<Secret<String>>,
    cvc: Option<Secret<String>>,
}

impl CardFields {
    fn get(&self, field: Field) -> Option<&str> {
        match field {
            Field::Number => Some(self.number.expose()),
            Field::ExpMonth => Some(self.exp_month.expose()),
            Field::ExpYear => Some(self.exp_year.expose()),
            Field::Name => self.name.as_ref().map(|n| n.expose().as_str()),
            Field::Cvc => self.cvc.as_ref().map(|c| c.expose().as_str()),
        }
    }
}

fn rejected(code: &'static str, pointer: &str, detail: impl Into<String>) -> ForwardError {
    ForwardError::Domain(DomainError::Rejected { code, errors: vec![FieldError::new(pointer, detail)] })
}

fn escape_pointer(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

fn valid_header_name(name: &str) -> bool {
    (1..=64).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn valid_header_value(value: &str) -> bool {
    value.len() <= 8192 && value.bytes().all(|b| b == b'\t' || (b' '..=b'~').contains(&b))
}

/// Checks the shop's headers: names in lower case, no duplicates, none strongroom sets itself.
fn check_headers(headers: Vec<(String, Secret<String>)>) -> Result<Vec<(String, Secret<String>)>, ForwardError> {
    if headers.len() > MAX_HEADERS {
        return Err(ForwardError::Domain(DomainError::invalid("/headers", format!("at most {MAX_HEADERS} headers"))));
    }
    let mut out: Vec<(String, Secret<String>)> = Vec::with_capacity(headers.len());
    for (name, value) in headers {
        // A name is named in errors, unless it holds a card number.
        let pointer = if crate::free_text::holds_card_number(&name) {
            "/headers".to_owned()
        } else {
            format!("/headers/{}", escape_pointer(&name))
        };
        if !valid_header_name(&name) {
            return Err(ForwardError::Domain(DomainError::invalid("/headers", "a header name is not a valid token")));
        }
        let lower = name.to_ascii_lowercase();
        if REFUSED_HEADERS.contains(&lower.as_str()) || lower.starts_with("proxy-") {
            return Err(rejected(
                HEADER_NOT_ALLOWED,
                &pointer,
                "strongroom sets this header itself, or it would change how the request travels",
            ));
        }
        if !valid_header_value(value.expose()) {
            return Err(ForwardError::Domain(DomainError::invalid(
                pointer,
                "must be at most 8192 visible ASCII characters, spaces or tabs",
            )));
        }
        if out.iter().any(|(n, _)| *n == lower) {
            return Err(ForwardError::Domain(DomainError::invalid(pointer, "is given twice")));
        }
        out.push((lower, value));
    }
    Ok(out)
}

/// The card's fields from its opened value.
fn card_fields(value: &Secret<Vec<u8>>) -> Result<CardFields, DomainError> {
    let card: CardValue = serde_json::from_slice(value.expose()).map_err(|_| DomainError::Integrity)?;
    let fields = CardFields {
        number: Secret::new(card.number),
        exp_month: Secret::new(format!("{:02}", card.exp_month)),
        exp_year: Secret::new(format!("{:04}", card.exp_year)),
        name: card.holder_name.map(Secret::new),
        cvc: None,
    };
    Ok(fields)
}

/// The detokenize-and-forward service.
pub struct ForwardService {
    vault: Arc<VaultService>,
    transport: Arc<dyn GatewayTransport>,
    audit: AuditLog,
    counters: Arc<ForwardCounters>,
    /// Incident freezes: forwards are refused while frozen (wired once at start).
    freezes: std::sync::OnceLock<crate::detection::playbooks::Freezes>,
}

impl std::fmt::Debug for ForwardService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ForwardService").field("transport", &self.transport).finish_non_exhaustive()
    }
}

impl ForwardService {
    /// The service.
    pub fn new(vault: Arc<VaultService>, transport: Arc<dyn GatewayTransport>, audit: AuditLog) -> Self {
        Self { vault, transport, audit, counters: Arc::default(), freezes: std::sync::OnceLock::new() }
    }

    /// Refuses forwards of a merchant while an incident's playbook froze them.
    pub fn set_freezes(&self, freezes: crate::detection::playbooks::Freezes) {
        let _ = self.freezes.set(freezes);
    }

    /// Forwards per destination host and outcome, for the metrics.
    pub fn counters(&self) -> &Arc<ForwardCounters> {
        &self.counters
    }

    fn event(principal: &Principal, source: &Source, action: &'static str, outcome: Outcome) -> AuditEvent {
        principal.event(action, outcome).from_source(source.ip, source.request_id.clone())
    }

    /// Checks, fills in, sends and masks one forward.
    pub async fn forward(
        &self,
        principal: &Principal,
        source: &Source,
        input: ForwardInput,
    ) -> Result<ForwardOutput, ForwardError> {
        if principal.as_staff().is_some() {
            return Err(ForwardError::Domain(DomainError::Forbidden(
                "forwards are made by the shop's backend with an API key, not by staff",
            )));
        }
        if let Some(freezes) = self.freezes.get()
            && let Err(frozen) =
                freezes.check(principal.merchant_id(), crate::ports::incidents::FreezeKind::Forwarding).await
        {
            let event = Self::event(principal, source, "forward.sent", Outcome::Denied("forwarding_frozen"));
            self.audit.record(event).await.map_err(DomainError::from)?;
            return Err(ForwardError::Domain(frozen));
        }
        if input.destination.len() > 2048 {
            return Err(ForwardError::Domain(DomainError::invalid("/destination", "must be at most 2048 characters")));
        }
        // The path goes into the audit log, which nothing ever erases.
        crate::free_text::check("/destination", &input.destination)?;
        let destination = match self.transport.destination(&input.destination) {
            Ok(destination) => destination,
            Err(why) => {
                self.counters.count("-", "refused", 0);
                let event = Self::event(principal, source, "forward.sent", Outcome::Denied("destination_not_allowed"));
                self.audit.record(event).await.map_err(DomainError::from)?;
                return Err(rejected(DESTINATION_NOT_ALLOWED, "/destination", why));
            }
        };
        let method = match input.method.as_deref() {
            None => Method::Post,
            Some(text) => Method::parse(text).ok_or_else(|| {
                ForwardError::Domain(DomainError::invalid("/method", "must be POST, PUT, PATCH, GET or DELETE"))
            })?,
        };
        let headers = check_headers(input.headers)?;
        let segments = template::parse(input.body.expose())?;
        let used = template::tokens(&segments);
        let encoding = match headers.iter().find(|(n, _)| n == "content-type") {
            Some((_, value)) => Encoding::of_content_type(value.expose()),
            None => None,
        };
        if !used.is_empty() && encoding.is_none() {
            return Err(rejected(
                CONTENT_TYPE_UNSUPPORTED,
                "/headers/content-type",
                "placeholders need Content-Type application/json (or application/*+json) or \
                 application/x-www-form-urlencoded, which decide how values are escaped",
            ));
        }

        // Open every token before a CVC is taken: a refused request burns none.
        let mut cards: Vec<(&str, CardFields)> = Vec::with_capacity(used.len());
        for (position, (token, fields)) in used.iter().enumerate() {
            let (kind, value) = self.vault.open_for_forward(principal, source, token).await?;
            let (ValueKind::Card, Some(value)) = (kind, value) else {
                return Err(rejected(
                    TOKEN_NOT_CARD,
                    "/body",
                    format!("token {} of the template is not a card: only card values are forwarded", position + 1),
                ));
            };
            let card = card_fields(&value)?;
            if fields.contains(&Field::Name) && card.name.is_none() {
                return Err(rejected(
                    FIELD_EMPTY,
                    "/body",
                    format!("token {} of the template holds no holder name", position + 1),
                ));
            }
            cards.push((*token, card));
        }
        for (position, (token, fields)) in used.iter().enumerate() {
            if !fields.contains(&Field::Cvc) {
                continue;
            }
            let cvc = self.vault.take_cvc_of_opened(token);
            let Some(card) = cards.iter_mut().find(|entry| entry.0 == *token).map(|entry| &mut entry.1) else {
                continue;
            };
            if cvc.is_none() {
                return Err(rejected(
                    CVC_UNAVAILABLE,
                    "/body",
                    format!(
                        "token {} of the template holds no CVC: it was never given, was used by an earlier \
                         forward or authorisation, or expired (held ten minutes at most)",
                        position + 1
                    ),
                ));
            }
            card.cvc = cvc;
        }
        let body = template::render(&segments, encoding, |token, field| {
            cards.iter().find(|entry| entry.0 == token).and_then(|entry| entry.1.get(field))
        })
        .ok_or_else(|| ForwardError::Domain(DomainError::invalid("/body", "a placeholder could not be filled in")))?;
        // Used once: the CVCs leave memory with the card fields.
        let kinds: Vec<(String, String)> = used
            .iter()
            .map(|(token, fields)| {
                let names: Vec<&str> = fields.iter().map(|f| f.as_str()).collect();
                ((*token).to_owned(), names.join("+"))
            })
            .collect();
        drop(cards);

        // The use of each token is durable before anything leaves.
        let detokenized = kinds.iter().map(|(token, fields)| {
            let event = Self::event(
                principal,
                source,
                "forward.token_detokenized",
                Outcome::SuccessBecause(format!("fields:{fields};host:{}", destination.host)),
            )
            .on("token", token.as_str());
            self.audit.record(event)
        });
        futures::future::try_join_all(detokenized).await.map_err(DomainError::from)?;

        let request = GatewayRequest { method, url: Secret::new(destination.url.expose().clone()), headers, body };
        let sent = self.transport.send(request).await;
        let object = format!("{}{}", destination.host, destination.path);
        let tokens_used = kinds.len();
        match sent {
            Ok(answer) => {
                self.counters.count(&destination.host, "answered", answer.elapsed_ms);
                // The audit log's vocabulary has no spaces.
                let reason = format!(
                    "{};status:{};ms:{};tokens:{tokens_used};fields:{}",
                    method.as_str(),
                    answer.status,
                    answer.elapsed_ms,
                    field_kinds(&kinds)
                );
                let event = Self::event(principal, source, "forward.sent", Outcome::SuccessBecause(reason))
                    .on("destination", object);
                let audit_index = self.audit.record(event).await.map_err(DomainError::from)?;
                let headers = answer
                    .headers
                    .iter()
                    .filter(|(name, _)| SAFE_RESPONSE_HEADERS.contains(&name.as_str()))
                    .map(|(name, value)| {
                        let masked = crate::free_text::mask_card_numbers(value.as_bytes());
                        (name.clone(), String::from_utf8_lossy(&masked).into_owned())
                    })
                    .collect();
                Ok(ForwardOutput {
                    status: answer.status,
                    headers,
                    body: crate::free_text::mask_card_numbers(answer.body.expose()),
                    duration_ms: answer.elapsed_ms,
                    audit_index,
                })
            }
            Err((failure, elapsed_ms)) => {
                self.counters.count(&destination.host, failure.as_str(), elapsed_ms);
                let outcome = match failure {
                    GatewayFailure::Refused => Outcome::Denied("address_refused"),
                    other => Outcome::Failed(other.as_str()),
                };
                let event = Self::event(principal, source, "forward.sent", outcome).on("destination", object);
                self.audit.record(event).await.map_err(DomainError::from)?;
                match failure {
                    GatewayFailure::Refused => Err(rejected(
                        DESTINATION_NOT_ALLOWED,
                        "/destination",
                        "the host resolves to a private, loopback or reserved address, refused by the outbound policy",
                    )),
                    other => Err(ForwardError::Gateway(other)),
                }
            }
        }
    }
}

/// The field kinds of all tokens, each once, in a stable order (`number+exp_month+cvc`).
fn field_kinds(kinds: &[(String, String)]) -> String {
    let mut all: Vec<&str> = Field::ALL
        .iter()
        .map(|f| f.as_str())
        .filter(|name| kinds.iter().any(|(_, fields)| fields.split('+').any(|f| f == *name)))
        .collect();
    if all.is_empty() {
        all.push("none");
    }
    all.join("+")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_checked_without_echo() {
        let secret = || Secret::new("Bearer sk_test_s3cret".to_owned());
        let ok = check_headers(vec![("Authorization".into(), secret()), ("Content-Type".into(), secret())]).unwrap();
        assert_eq!(ok.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(), ["authorization", "content-type"]);
        for refused in ["Host", "Content-Length", "Transfer-Encoding", "Proxy-Foo", "X-Forwarded-For"] {
            let Err(ForwardError::Domain(DomainError::Rejected { code, errors })) =
                check_headers(vec![(refused.into(), secret())])
            else {
                panic!("{refused}")
            };
            assert_eq!(code, HEADER_NOT_ALLOWED);
            assert!(!errors[0].detail.contains("s3cret"));
        }
        let twice = check_headers(vec![("A".into(), secret()), ("a".into(), secret())]);
        assert!(matches!(twice, Err(ForwardError::Domain(DomainError::Validation(_)))));
        let control = check_headers(vec![("A".into(), Secret::new("x\r\nInjected: 1".into()))]);
        assert!(matches!(control, Err(ForwardError::Domain(DomainError::Validation(_)))));
        let bad_name = check_headers(vec![("a b".into(), secret())]);
        assert!(matches!(bad_name, Err(ForwardError::Domain(DomainError::Validation(_)))));
    }

    #[test]
    fn card_values_are_formatted_for_gateways() {
        let value =
            Secret::new(br#"{"number":"4242424242424242","exp_month":3,"exp_year":2031,"holder_name":null}"#.to_vec());
        let card = card_fields(&value).unwrap();
        assert_eq!(card.get(Field::Number), Some("4242424242424242"));
        assert_eq!(card.get(Field::ExpMonth), Some("03"));
        assert_eq!(card.get(Field::ExpYear), Some("2031"));
        assert_eq!(card.get(Field::Name), None);
        assert_eq!(card.get(Field::Cvc), None);
        assert!(matches!(card_fields(&Secret::new(b"{}".to_vec())), Err(DomainError::Integrity)));
    }

    #[test]
    fn field_kinds_are_named_once_in_order() {
        let kinds =
            vec![("tok_a".to_owned(), "number+cvc".to_owned()), ("tok_b".to_owned(), "exp_month+number".to_owned())];
        assert_eq!(field_kinds(&kinds), "number+exp_month+cvc");
        assert_eq!(field_kinds(&[]), "none");
        assert_eq!(Method::parse("post"), Some(Method::Post));
        assert_eq!(Method::parse("TRACE"), None);
    }
}
