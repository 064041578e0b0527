//! What a gateway tells us on its own (Stripe's webhooks now, the reconciliation job's answers
//! later): verified notices ([`GatewayNotices`], the port a gateway's adapter implements),
//! processed once each ([`GatewayEvents::receive`]: one conditional insert of the event id
//! decides, so a replay or thirty concurrent deliveries take effect once), and their effects:
//! an intent waiting for the gateway settled by [`PaymentsService::settle_from_gateway`], a
//! pending refund settled, a dispute of ours (`dp_…`) made or updated with its evidence deadline.
//!
//! [`PaymentsService::settle_from_gateway`] is the one way the gateway's word moves an intent
//! outside a request's own call: only an intent that waits for the gateway (`processing`) moves,
//! only along [`state::next`], with the same conditional update, outbox event and audit entry
//! as the intents' own path.
//! Must never: act on an unverified notice, move an intent that is not waiting for the gateway
//! (a late or replayed event changes nothing), mark an intent failed or succeeded without the
//! gateway's word, or put a notice's free text into an audit entry or an event.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use strongroom_types::{Currency, Money, Timestamp, define_id};

use super::gateway::{
    GatewayAnswer, GatewayStatus, authorization_event, capture_event, idempotency_key, refund_settled, void_event,
};
use super::state::State;
use super::{Actor, PaymentsService, check_cursor, page_limit, plausible_id};
use crate::audit::event::{ActorKind, AuditEvent, Outcome};
use crate::error::DomainError;
use crate::modes::Space;
use crate::ports::disputes::{DisputeRecord, EventClaim, GatewayEventsRepository};
use crate::ports::payments::{IntentRecord, Page, PaymentError};

define_id!(DisputeId, DisputeKind, "dp");

/// How long a claimed event may stay unfinished before another delivery takes it over (the
/// process that claimed it died).
pub const CLAIM_TIMEOUT: Duration = Duration::from_secs(120);

/// Why a notice was refused. Each has a stable problem code; none carries the secret or the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoticeRejected {
    /// No signature header.
    MissingSignature,
    /// The signature header is not `t=…,v1=…`.
    MalformedSignature,
    /// No signature matches.
    BadSignature,
    /// The signed time is too far from our clock.
    StaleSignature,
    /// The body is not an event of the expected shape.
    Malformed,
}

impl NoticeRejected {
    /// The stable problem code.
    pub const fn code(self) -> &'static str {
        match self {
            Self::MissingSignature => "gateway_signature_missing",
            Self::MalformedSignature => "gateway_signature_malformed",
            Self::BadSignature => "gateway_signature_invalid",
            Self::StaleSignature => "gateway_signature_expired",
            Self::Malformed => "gateway_event_malformed",
        }
    }

    /// A sentence for the caller (never the secret, never the body).
    pub const fn detail(self) -> &'static str {
        match self {
            Self::MissingSignature => "the Stripe-Signature header is missing",
            Self::MalformedSignature => "the Stripe-Signature header is not t=<time>,v1=<hex signature>",
            Self::BadSignature => "no v1 signature matches the body under the endpoint's signing secret",
            Self::StaleSignature => "the signed time is more than 300 seconds from the server's clock",
            Self::Malformed => "the body is not a gateway event of the expected shape",
        }
    }
}

/// A payment intent's news.
#[derive(Debug, Clone)]
pub struct IntentNotice {
    /// Our intent id, when the gateway's object carries it (metadata).
    pub intent: Option<String>,
    /// What the gateway says of the payment (its id in `gateway_reference`).
    pub answer: GatewayAnswer,
    /// What the gateway has captured, in minor units, when it says.
    pub amount_received: Option<i64>,
}

/// A refund's news.
#[derive(Debug, Clone)]
pub struct RefundNotice {
    /// Our refund id (`re_…`), when the gateway's object carries it.
    pub refund: Option<String>,
    /// Its status.
    pub status: GatewayStatus,
    /// The gateway's id of the refund.
    pub gateway_reference: String,
    /// Why it failed (a code).
    pub failure_reason: Option<String>,
}

/// A dispute's news.
#[derive(Debug, Clone)]
pub struct DisputeNotice {
    /// The gateway's id of the dispute.
    pub gateway_reference: String,
    /// The gateway's id of the disputed payment.
    pub payment: Option<String>,
    /// Disputed amount, minor units.
    pub amount: i64,
    /// Currency code.
    pub currency: String,
    /// The reason (a code).
    pub reason: String,
    /// The status (a code).
    pub status: String,
    /// Until when evidence can be submitted.
    pub evidence_due_by: Option<Timestamp>,
}

/// What a notice is about.
#[derive(Debug, Clone)]
pub enum NoticeKind {
    /// A payment intent moved at the gateway.
    Intent(IntentNotice),
    /// A refund moved at the gateway.
    Refund(RefundNotice),
    /// A dispute was opened, changed or closed: our event type (`dispute.created`,
    /// `dispute.updated`, `dispute.closed`) and the dispute.
    Dispute(&'static str, DisputeNotice),
    /// A known event that needs nothing from us (its type).
    Acknowledged(&'static str),
    /// An event type we do not handle: its name, when it is a plausible one.
    Unknown(Option<String>),
}

/// A verified gateway event.
#[derive(Debug, Clone)]
pub struct GatewayNotice {
    /// The gateway's event id (dedupe key).
    pub id: String,
    /// What it says.
    pub kind: NoticeKind,
}

/// A gateway's inbound events: verifies a delivery and reads it. Non-generic; `Arc<dyn _>`.
pub trait GatewayNotices: Send + Sync + std::fmt::Debug {
    /// The gateway's stable name (`stripe`).
    fn gateway(&self) -> &'static str;
    /// Verifies `signature` over `body` at `now` and reads the event.
    fn read(&self, signature: Option<&str>, body: &[u8], now: Timestamp) -> Result<GatewayNotice, NoticeRejected>;
}

/// What became of a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Receipt {
    /// Processed now.
    Processed,
    /// Seen before: acknowledged, nothing done.
    Replayed,
}

/// Why a delivery was not processed.
#[derive(Debug, thiserror::Error)]
pub enum ReceiveError {
    /// Refused: bad signature, stale, malformed (400).
    #[error("refused: {}", .0.code())]
    Rejected(NoticeRejected),
    /// Processing failed; the claim was given back so the gateway's retry can try again.
    #[error(transparent)]
    Failed(#[from] DomainError),
}

impl From<crate::StoreError> for ReceiveError {
    fn from(err: crate::StoreError) -> Self {
        Self::Failed(DomainError::Store(err))
    }
}

fn dispute_data(dispute: &DisputeRecord) -> Value {
    json!({
        "object": "dispute",
        "id": dispute.id,
        "payment_intent": dispute.payment_intent,
        "amount": dispute.amount.minor(),
        "currency": dispute.amount.currency(),
        "reason": dispute.reason,
        "status": dispute.status,
        "evidence_due_by": dispute.evidence_due_by.map(Timestamp::to_rfc3339),
    })
}

/// A plausible event type name: `a-z`, `0-9`, `_` and `.`, at most 64.
fn plausible_type(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 64
        && text.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'.')
}

impl PaymentsService {
    fn gateway_event(&self, action: &'static str, intent: Option<&IntentRecord>) -> AuditEvent {
        let event = AuditEvent::by(
            ActorKind::System,
            Some(format!("gateway:{}", self.ports.gateway.name())),
            action,
            Outcome::Success,
        );
        match intent {
            Some(intent) => event.for_merchant(&intent.merchant).in_mode(intent.mode),
            None => event,
        }
    }

    /// Settles an intent that waits for the gateway (`processing`: authorising, capturing or
    /// voiding) from the gateway's word: the answer moves it as the answer to the pending call
    /// would (`authorization_event`, `capture_event`, `void_event`), by one conditional update
    /// with its outbox event and audit entry. `amount_received` is what the gateway says it
    /// captured (default: all that was capturable). `None`: nothing to do (the intent waits for
    /// nothing, the word decides nothing yet, or another path settled it first).
    pub async fn settle_from_gateway(
        &self,
        intent_id: &str,
        answer: &GatewayAnswer,
        amount_received: Option<i64>,
    ) -> Result<Option<IntentRecord>, DomainError> {
        let Some(intent) = self.ports.repo.intent(intent_id).await? else { return Err(DomainError::NotFound) };
        let Some(operation) = intent.state.pending_operation() else { return Ok(None) };
        let key = idempotency_key(&intent.id, operation, intent.attempt);
        let actor = Actor::Gateway(self.ports.gateway.name());
        // The same settling as an answer in time (intents.rs), so both apply one way.
        let settled = match intent.state {
            State::Authorizing if authorization_event(answer.status).is_some() => {
                let settled = self.settle_authorization(actor, &intent, &key, answer.clone()).await;
                if settled.is_ok() {
                    // Counted once per attempt, whichever path settled it.
                    self.watch_authorization(&intent, answer.status, None).await;
                }
                settled
            }
            State::Capturing if capture_event(answer.status).is_some() => {
                let amount = amount_received.unwrap_or(intent.amount_capturable).min(intent.amount_capturable);
                self.settle_capture(actor, &intent, &key, amount, answer.clone()).await
            }
            State::Voiding if void_event(answer.status).is_some() => {
                self.settle_void(actor, &intent, &key, answer.clone()).await
            }
            _ => return Ok(None),
        };
        match settled {
            Ok(after) if after.state != intent.state || after.attempt != intent.attempt => Ok(Some(after)),
            // Another path (the request's own answer, reconciliation) settled it first.
            Ok(_) | Err(DomainError::UnexpectedState { .. }) => Ok(None),
            Err(other) => Err(other),
        }
    }

    /// Settles a pending refund from the gateway's word. False: nothing to do.
    pub async fn settle_refund_from_gateway(&self, notice: &RefundNotice) -> Result<bool, DomainError> {
        let Some(id) = notice.refund.as_deref().filter(|id| plausible_id(id, "re")) else { return Ok(false) };
        let Some(refund) = self.ports.repo.refund(id).await? else { return Ok(false) };
        if refund.status != "pending" || refund_settled(notice.status).is_none() {
            return Ok(false);
        }
        let answer = GatewayAnswer {
            status: notice.status,
            gateway_reference: notice.gateway_reference.clone(),
            error: notice
                .failure_reason
                .as_deref()
                .map(|reason| PaymentError::of(reason, None, "the gateway failed the refund")),
            next_action: None,
            network_transaction_id: None,
            stored_method: None,
        };
        let key = idempotency_key(&refund.id, "refund", 1);
        let actor = Actor::Gateway(self.ports.gateway.name());
        let settled = self.settle_refund_answer(actor, &refund, &key, answer).await?;
        Ok(settled.status != "pending")
    }
}

/// Gateway events in: verification, dedupe and effects; and the disputes they make.
#[derive(Debug, Clone)]
pub struct GatewayEvents {
    payments: Arc<PaymentsService>,
    repo: Arc<dyn GatewayEventsRepository>,
    notices: Option<Arc<dyn GatewayNotices>>,
}

impl GatewayEvents {
    /// The service; `notices` is `None` when no gateway sends events (the sandbox).
    pub fn new(
        payments: Arc<PaymentsService>,
        repo: Arc<dyn GatewayEventsRepository>,
        notices: Option<Arc<dyn GatewayNotices>>,
    ) -> Self {
        Self { payments, repo, notices }
    }

    /// Whether a gateway's events are received (the endpoint answers 404 otherwise).
    pub fn receives(&self, gateway: &str) -> bool {
        self.notices.as_ref().is_some_and(|n| n.gateway() == gateway)
    }

    /// Receives one delivery: verified, claimed by its event id (one conditional insert), then
    /// its effect. A replay is acknowledged and does nothing.
    pub async fn receive(&self, signature: Option<&str>, body: &[u8]) -> Result<Receipt, ReceiveError> {
        let Some(notices) = &self.notices else { return Err(ReceiveError::Failed(DomainError::NotFound)) };
        let gateway = notices.gateway();
        let clock = &self.payments.ports.clock;
        let now = clock.now();
        let notice = notices.read(signature, body, now).map_err(ReceiveError::Rejected)?;
        let stale_before = Timestamp::from_unix_millis(
            now.unix_millis().saturating_sub(i64::try_from(CLAIM_TIMEOUT.as_millis()).unwrap_or(i64::MAX)),
        );
        let type_name = match &notice.kind {
            NoticeKind::Intent(_) => "payment_intent",
            NoticeKind::Refund(_) => "refund",
            NoticeKind::Dispute(name, _) | NoticeKind::Acknowledged(name) => name,
            NoticeKind::Unknown(_) => "unknown",
        };
        if self.repo.claim_gateway_event(gateway, &notice.id, type_name, now, stale_before).await? == EventClaim::Seen {
            return Ok(Receipt::Replayed);
        }
        match self.apply(gateway, &notice, now, stale_before).await {
            Ok(()) => {
                self.repo.finish_gateway_event(gateway, &notice.id, clock.now()).await?;
                Ok(Receipt::Processed)
            }
            Err(err) => {
                if let Err(release) = self.repo.release_gateway_event(gateway, &notice.id).await {
                    tracing::warn!(error = %release, "a failed gateway event could not be released");
                }
                Err(ReceiveError::Failed(err))
            }
        }
    }

    async fn apply(
        &self,
        gateway: &str,
        notice: &GatewayNotice,
        now: Timestamp,
        stale_before: Timestamp,
    ) -> Result<(), DomainError> {
        match &notice.kind {
            NoticeKind::Intent(intent) => {
                let found = match intent.intent.as_deref().filter(|id| plausible_id(id, "pi")) {
                    Some(id) => self.payments.ports.repo.intent(id).await?,
                    None => self.repo.intent_by_gateway_reference(gateway, &intent.answer.gateway_reference).await?,
                };
                let Some(found) = found.filter(|f| f.gateway == gateway) else { return Ok(()) };
                // The gateway's word is about its payment: it must be this intent's (when known).
                if let Some(reference) = &found.gateway_reference
                    && !intent.answer.gateway_reference.is_empty()
                    && *reference != intent.answer.gateway_reference
                {
                    return Ok(());
                }
                self.payments.settle_from_gateway(&found.id, &intent.answer, intent.amount_received).await?;
                Ok(())
            }
            NoticeKind::Refund(refund) => {
                self.payments.settle_refund_from_gateway(refund).await?;
                Ok(())
            }
            NoticeKind::Dispute(event_type, dispute) => self.record_dispute(gateway, event_type, dispute, now).await,
            NoticeKind::Acknowledged(_) => Ok(()),
            NoticeKind::Unknown(name) => {
                // Audited once per event type, not once per delivery.
                let name = name.as_deref().filter(|n| plausible_type(n)).unwrap_or("unnamed");
                let marker = format!("type:{name}");
                if self.repo.claim_gateway_event(gateway, &marker, "unknown_type", now, stale_before).await?
                    == EventClaim::Claimed
                {
                    let audit =
                        self.payments.gateway_event("gateway_event.unknown_type", None).on("gateway_event_type", name);
                    self.payments.ports.audit.record(audit).await?;
                    self.repo.finish_gateway_event(gateway, &marker, now).await?;
                }
                Ok(())
            }
        }
    }

    async fn record_dispute(
        &self,
        gateway: &str,
        event_type: &'static str,
        notice: &DisputeNotice,
        now: Timestamp,
    ) -> Result<(), DomainError> {
        let Some(payment) = &notice.payment else { return Ok(()) };
        let Some(intent) = self.repo.intent_by_gateway_reference(gateway, payment).await? else {
            tracing::warn!(gateway, "a dispute names a payment strongroom does not know; ignored");
            return Ok(());
        };
        let Ok(currency) = Currency::parse(&notice.currency) else { return Ok(()) };
        let Ok(amount) = Money::new(notice.amount, currency) else { return Ok(()) };
        let existing = self.repo.dispute_by_gateway_reference(gateway, &notice.gateway_reference).await?;
        let event_type = match (&existing, event_type) {
            (None, _) => "dispute.created",
            (Some(_), "dispute.created") => "dispute.updated",
            (Some(_), other) => other,
        };
        let entropy = &self.payments.ports.entropy;
        let record = DisputeRecord {
            id: existing.as_ref().map_or_else(
                || DisputeId::generate_at(entropy.as_ref(), now.unix_millis()).to_string(),
                |d| d.id.clone(),
            ),
            merchant: intent.merchant.clone(),
            mode: intent.mode,
            payment_intent: intent.id.clone(),
            amount,
            reason: notice.reason.clone(),
            status: notice.status.clone(),
            evidence_due_by: notice.evidence_due_by,
            gateway: gateway.to_owned(),
            gateway_reference: notice.gateway_reference.clone(),
            created_at: existing.as_ref().map_or(now, |d| d.created_at),
            updated_at: now,
        };
        let outbox = &self.payments.ports.outbox;
        let events = outbox
            .event_messages(Some(&record.merchant), record.mode, event_type, dispute_data(&record), false)
            .await?;
        let stored = self.repo.upsert_dispute(&record, &events).await?;
        outbox.wake().notify_one();
        let action = match event_type {
            "dispute.created" => "dispute.created",
            "dispute.closed" => "dispute.closed",
            _ => "dispute.updated",
        };
        let audit = self.payments.gateway_event(action, Some(&intent)).on("dispute", &stored.id);
        self.payments.ports.audit.record(audit).await?;
        Ok(())
    }

    /// One dispute of the caller's space.
    pub async fn dispute(&self, space: Space<'_>, id: &str) -> Result<DisputeRecord, DomainError> {
        if !plausible_id(id, "dp") {
            return Err(DomainError::NotFound);
        }
        match self.repo.dispute(id).await? {
            Some(dispute) if space.holds(&dispute.merchant, dispute.mode) => Ok(dispute),
            _ => Err(DomainError::NotFound),
        }
    }

    /// Disputes of the caller's space, newest first: `limit` of them and whether more follow.
    pub async fn disputes(
        &self,
        space: Space<'_>,
        starting_after: Option<&str>,
        limit: Option<u32>,
    ) -> Result<(Vec<DisputeRecord>, bool), DomainError> {
        let limit = page_limit(limit)?;
        check_cursor(starting_after, "dp")?;
        let page = Page { merchant: space.merchant, mode: space.mode, starting_after, limit: limit + 1 };
        let mut found = self.repo.disputes(page).await?;
        let more = found.len() > limit as usize;
        found.truncate(limit as usize);
        Ok((found, more))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejections_have_distinct_codes() {
        let all = [
            NoticeRejected::MissingSignature,
            NoticeRejected::MalformedSignature,
            NoticeRejected::BadSignature,
            NoticeRejected::StaleSignature,
            NoticeRejected::Malformed,
        ];
        let mut codes: Vec<&str> = all.iter().map(|r| r.code()).collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), all.len());
        assert!(plausible_type("charge.dispute.created") && !plausible_type("Bad Type"));
    }
}
