//! Audit events and their leaf encoding.
//!
//! The leaf of entry `seq` is the UTF-8 bytes of one JSON object with the keys in this order (which
//! is also lexicographic order, so the text is the RFC 8785 canonical form), no white space, `null`
//! for absent values:
//!
//! ```text
//! {"action":…,"actor":{"id":…,"kind":…},"merchant":…,"object":{"id":…,"kind":…}|null,
//!  "outcome":{"reason":…,"result":…},"seq":…,"source":{"ip":…,"request_id":…},"time":…,"v":1}
//! ```
//!
//! Every string value is printable ASCII from a closed vocabulary or an id (values outside it are
//! replaced by `?` before encoding), so JSON escaping never applies except to `"` and `\`, which
//! the vocabulary excludes. `time` is RFC 3339 UTC with milliseconds (`2026-11-25T14:00:00.123Z`),
//! `seq` a decimal integer. docs/audit-log.md shows a worked example.
//! Must never: carry personal data or a secret: ids and keyed hashes only.

use std::net::IpAddr;

use serde::Serialize;
use strongroom_types::Timestamp;

use crate::merchants::MerchantId;
use crate::modes::Mode;

/// Who acted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActorKind {
    /// A request with an API key.
    ApiKey,
    /// A customer.
    Customer,
    /// A staff member.
    Staff,
    /// strongroom itself, or an operator at the command line.
    System,
    /// A request without valid credentials.
    Anonymous,
}

impl ActorKind {
    /// The stable name.
    pub const fn as_str(self) -> &'static str {
        match self {
            ActorKind::ApiKey => "api_key",
            ActorKind::Customer => "customer",
            ActorKind::Staff => "staff",
            ActorKind::System => "system",
            ActorKind::Anonymous => "anonymous",
        }
    }
}

/// The result of the action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// It happened.
    Success,
    /// It happened, for a stated reason code (e.g. why a value was revealed).
    SuccessBecause(String),
    /// It was refused (authentication, authorization, policy), with a reason code.
    Denied(&'static str),
    /// It failed, with a reason code.
    Failed(&'static str),
}

/// One security-relevant event, before it gets its place in the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    /// The merchant concerned, if any (deployment-wide events have none).
    pub merchant: Option<MerchantId>,
    /// The data space the actor acted in, when the event happened in one.
    pub mode: Option<Mode>,
    /// Actor kind.
    pub actor_kind: ActorKind,
    /// Actor id (`key_…`, `cus_…`, …), if known.
    pub actor_id: Option<String>,
    /// Client IP as seen through the trusted proxies.
    pub ip: Option<IpAddr>,
    /// The request id.
    pub request_id: Option<String>,
    /// A stable dotted name, e.g. `api_key.revoked`.
    pub action: &'static str,
    /// The object acted on: kind and id.
    pub object: Option<(&'static str, String)>,
    /// What came of it.
    pub outcome: Outcome,
}

impl AuditEvent {
    /// The customer or staff member this event concerns: the actor when it is one, else the
    /// object when it is one.
    pub fn subject(&self) -> Option<String> {
        match (self.actor_kind, &self.actor_id, &self.object) {
            (ActorKind::Customer | ActorKind::Staff, Some(id), _) => Some(id.clone()),
            (_, _, Some(("customer" | "staff", id))) => Some(id.clone()),
            _ => None,
        }
    }

    /// An event by strongroom itself.
    pub fn system(action: &'static str, outcome: Outcome) -> Self {
        Self {
            merchant: None,
            mode: None,
            actor_kind: ActorKind::System,
            actor_id: None,
            ip: None,
            request_id: None,
            action,
            object: None,
            outcome,
        }
    }

    /// An event by an actor.
    pub fn by(actor_kind: ActorKind, actor_id: Option<String>, action: &'static str, outcome: Outcome) -> Self {
        Self { actor_kind, actor_id, ..Self::system(action, outcome) }
    }

    /// Sets where the request came from.
    pub fn from_source(mut self, ip: Option<IpAddr>, request_id: Option<String>) -> Self {
        self.ip = ip;
        self.request_id = request_id;
        self
    }

    /// Sets the object.
    pub fn on(mut self, kind: &'static str, id: impl Into<String>) -> Self {
        self.object = Some((kind, id.into()));
        self
    }

    /// Sets the merchant.
    pub fn for_merchant(mut self, merchant: &MerchantId) -> Self {
        self.merchant = Some(merchant.clone());
        self
    }

    /// Sets the data space the event happened in.
    pub fn in_mode(mut self, mode: Mode) -> Self {
        self.mode = Some(mode);
        self
    }

    /// Sets the action (for a template event that carries the actor and source).
    pub fn with_action(mut self, action: &'static str) -> Self {
        self.action = action;
        self
    }
}

/// Keeps a value inside the leaf vocabulary: printable ASCII except `"` and `\`, at most 128 bytes.
fn clean(value: &str) -> String {
    value.chars().take(128).map(|c| if c.is_ascii_graphic() && c != '"' && c != '\\' { c } else { '?' }).collect()
}

#[derive(Serialize)]
struct Leaf {
    action: String,
    actor: Pair,
    merchant: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mode: Option<&'static str>,
    object: Option<Pair>,
    outcome: LeafOutcome,
    seq: u64,
    source: Source,
    time: String,
    v: u8,
}

#[derive(Serialize)]
struct Pair {
    id: Option<String>,
    kind: String,
}

#[derive(Serialize)]
struct LeafOutcome {
    reason: Option<String>,
    result: &'static str,
}

#[derive(Serialize)]
struct Source {
    ip: Option<String>,
    request_id: Option<String>,
}

/// The leaf bytes of `event` at position `seq`, logged at `time`.
pub fn encode_leaf(event: &AuditEvent, seq: u64, time: Timestamp) -> Vec<u8> {
    let (result, reason) = match &event.outcome {
        Outcome::Success => ("success", None),
        Outcome::SuccessBecause(reason) => ("success", Some(clean(reason))),
        Outcome::Denied(reason) => ("denied", Some(clean(reason))),
        Outcome::Failed(reason) => ("failed", Some(clean(reason))),
    };
    let leaf = Leaf {
        action: clean(event.action),
        actor: Pair { id: event.actor_id.as_deref().map(clean), kind: event.actor_kind.as_str().to_owned() },
        merchant: event.merchant.as_ref().map(|m| clean(m.as_str())),
        mode: event.mode.map(Mode::as_str),
        object: event.object.as_ref().map(|(kind, id)| Pair { id: Some(clean(id)), kind: clean(kind) }),
        outcome: LeafOutcome { reason, result },
        seq,
        source: Source { ip: event.ip.map(|ip| ip.to_string()), request_id: event.request_id.as_deref().map(clean) },
        time: time.to_rfc3339(),
        v: 1,
    };
    serde_json::to_vec(&leaf).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaf_encoding_is_exact() {
        let merchant = MerchantId::parse("mer_aaaaaaaaaaaaaaaaaaaaaaaaaa").unwrap();
        let event = AuditEvent {
            merchant: Some(merchant),
            mode: Some(Mode::Test),
            actor_kind: ActorKind::ApiKey,
            actor_id: Some("key_bbbbbbbbbbbbbbbbbbbbbbbbbb".into()),
            ip: Some("203.0.113.7".parse().unwrap()),
            request_id: Some("req_1\"\n".into()),
            action: "api_key.revoked",
            object: Some(("api_key", "key_cccccccccccccccccccccccccc".into())),
            outcome: Outcome::Success,
        };
        let leaf = encode_leaf(&event, 42, Timestamp::from_unix_millis(1_764_079_200_123));
        assert_eq!(
            String::from_utf8(leaf).unwrap(),
            r#"{"action":"api_key.revoked","actor":{"id":"key_bbbbbbbbbbbbbbbbbbbbbbbbbb","kind":"api_key"},"merchant":"mer_aaaaaaaaaaaaaaaaaaaaaaaaaa","mode":"test","object":{"id":"key_cccccccccccccccccccccccccc","kind":"api_key"},"outcome":{"reason":null,"result":"success"},"seq":42,"source":{"ip":"203.0.113.7","request_id":"req_1??"},"time":"2025-11-25T14:00:00.123Z","v":1}"#
        );
        let system =
            encode_leaf(&AuditEvent::system("server.started", Outcome::Success), 0, Timestamp::from_unix_millis(0));
        assert_eq!(
            String::from_utf8(system).unwrap(),
            r#"{"action":"server.started","actor":{"id":null,"kind":"system"},"merchant":null,"object":null,"outcome":{"reason":null,"result":"success"},"seq":0,"source":{"ip":null,"request_id":null},"time":"1970-01-01T00:00:00.000Z","v":1}"#
        );
    }
}
