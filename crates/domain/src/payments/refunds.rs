//! Refunds of captured payments: partial or full, never more than was captured in total, also
//! when many arrive at once. The rule is decided by one conditional update that adds the refund
//! to the intent's refunded amount only while it stays within the received amount; the refund
//! row, its gateway call record and its `refund.created` event commit with it. The gateway's
//! answer settles it (`refund.succeeded`, or `refund.failed`, which gives the amount back).
//! Must never: check the remaining amount in one statement and add to it in another.

use serde_json::{Map, Value, json};
use strongroom_types::{Money, define_id};

use super::gateway::{FollowUpRequest, GatewayAnswer, idempotency_key, refund_settled};
use super::state::State;
use super::{Actor, Caller, PaymentsService, check_metadata, parse_amount, reject};
use crate::error::DomainError;
use crate::modes::Space;
use crate::ports::payments::{GatewayCallRecord, Page, RefundRecord};

define_id!(RefundId, RefundKind, "re");

/// Reasons a shop may give (Stripe's).
pub const REFUND_REASONS: &[&str] = &["duplicate", "fraudulent", "requested_by_customer"];

/// A refund request.
#[derive(Debug, Clone, Default)]
pub struct NewRefund {
    /// `pi_…` of the caller's space.
    pub payment_intent: String,
    /// Minor units; default: all that is left.
    pub amount: Option<Value>,
    /// One of [`REFUND_REASONS`].
    pub reason: Option<String>,
    /// The shop's metadata.
    pub metadata: Option<Map<String, Value>>,
    /// For a staff member's refund above `payments.refund_approval_above`: the approved request
    /// (`apr_…`) its first attempt opened.
    pub approval_id: Option<String>,
}

fn event_data(refund: &RefundRecord) -> Value {
    json!({
        "object": "refund",
        "id": refund.id,
        "payment_intent": refund.payment_intent,
        "amount": refund.amount.minor(),
        "currency": refund.amount.currency(),
        "status": refund.status,
        "failure_reason": refund.failure_reason,
    })
}

impl PaymentsService {
    /// Refunds (part of) a succeeded intent.
    pub async fn create_refund(&self, caller: Caller<'_>, input: NewRefund) -> Result<RefundRecord, DomainError> {
        let space = caller.principal.space();
        if let Some(freezes) = self.freezes.get() {
            freezes.check(space.merchant, crate::ports::incidents::FreezeKind::Refunds).await?;
        }
        if let Some(reason) = &input.reason
            && !REFUND_REASONS.contains(&reason.as_str())
        {
            return Err(DomainError::invalid("/reason", "must be duplicate, fraudulent or requested_by_customer"));
        }
        let metadata = check_metadata(input.metadata.as_ref(), "/metadata")?;
        let requested = match &input.amount {
            Some(value) => Some(parse_amount(value, "/amount", 1)?),
            None => None,
        };
        let intent = self.intent_in(space, &input.payment_intent).await?;
        if intent.state != State::Succeeded {
            return Err(DomainError::UnexpectedState {
                code: "payment_intent_unexpected_state",
                state: intent.state.status(),
            });
        }
        let rest = intent.amount_received.saturating_sub(intent.amount_refunded);
        let minor = requested.unwrap_or(rest);
        if rest == 0 {
            return Err(DomainError::Conflict("charge_already_refunded", "the captured amount is refunded in full"));
        }
        if minor > rest {
            return Err(reject(
                "refund_exceeds_captured",
                "/amount",
                "must be at most the captured amount less what was refunded",
            ));
        }
        let amount = Money::new(minor, intent.amount.currency())
            .map_err(|_| reject("invalid_amount", "/amount", "must not be negative"))?;
        self.approve_refund(caller, &intent.id, amount, input.reason.as_deref(), input.approval_id.as_deref()).await?;
        let now = self.ports.clock.now();
        let id = RefundId::generate_at(self.ports.entropy.as_ref(), now.unix_millis()).to_string();
        let refund = RefundRecord {
            id: id.clone(),
            merchant: space.merchant.clone(),
            mode: space.mode,
            payment_intent: intent.id.clone(),
            amount,
            reason: input.reason.clone(),
            status: "pending".into(),
            failure_reason: None,
            gateway_reference: None,
            metadata,
            created_at: now,
            updated_at: now,
        };
        let call = GatewayCallRecord {
            idempotency_key: idempotency_key(&id, "refund", 1),
            intent: intent.id.clone(),
            operation: "refund",
            amount: minor,
            at: now,
        };
        let events = self
            .ports
            .outbox
            .event_messages(Some(space.merchant), space.mode, "refund.created", event_data(&refund), false)
            .await?;
        if !self.ports.repo.insert_refund(&refund, &call, &events).await? {
            return Err(reject(
                "refund_exceeds_captured",
                "/amount",
                "must be at most the captured amount less what was refunded (other refunds came first)",
            ));
        }
        self.ports.outbox.wake().notify_one();
        // The refund's call is recorded (reconciliation sends it if this request does not): from
        // here on a failure must not read as a request that did nothing.
        self.ports
            .audit
            .record(caller.event("refund.created", "refund", &id))
            .await
            .map_err(|err| DomainError::from(err).after_gateway_call(&id))?;
        let request = FollowUpRequest {
            idempotency_key: call.idempotency_key.clone(),
            reference: intent.id.clone(),
            gateway_reference: intent.gateway_reference.clone().unwrap_or_default(),
            amount,
        };
        let Some(answer) = self.call_gateway(self.ports.gateway.refund(&request)).await else { return Ok(refund) };
        self.settle_refund_answer(caller, &refund, &call.idempotency_key, answer)
            .await
            .map_err(|err| err.after_gateway_call(&id))
    }

    /// Settles a pending refund by the gateway's answer to the call recorded under `key`; an
    /// answer that settles nothing yet leaves it `pending`. A refund settled meanwhile (by
    /// another node or the reconciliation job) is returned as stored.
    pub(super) async fn settle_refund_answer(
        &self,
        actor: impl Into<Actor<'_>> + Send,
        refund: &RefundRecord,
        key: &str,
        answer: GatewayAnswer,
    ) -> Result<RefundRecord, DomainError> {
        let Some(succeeded) = refund_settled(answer.status) else { return Ok(refund.clone()) };
        let space = Space { merchant: &refund.merchant, mode: refund.mode };
        let id = refund.id.clone();
        let mut settled = refund.clone();
        settled.updated_at = self.ports.clock.now();
        settled.gateway_reference = Some(answer.gateway_reference.clone()).filter(|r| !r.is_empty());
        let (event_type, outcome) = if succeeded {
            settled.status = "succeeded".into();
            ("refund.succeeded", "refunded")
        } else {
            settled.status = "failed".into();
            settled.failure_reason = Some(answer.error.map_or_else(|| "declined".to_owned(), |e| e.code));
            ("refund.failed", "failed")
        };
        let events = self
            .ports
            .outbox
            .event_messages(Some(space.merchant), space.mode, event_type, event_data(&settled), false)
            .await?;
        if !self.ports.repo.settle_refund(&settled, (key, outcome), &events).await? {
            return self.refund(space, &id).await;
        }
        self.ports.outbox.wake().notify_one();
        let event = actor.into().event(event_type, "refund", &id, (&refund.merchant, refund.mode));
        self.ports.audit.record(event).await?;
        Ok(settled)
    }

    /// One refund.
    pub async fn refund(&self, space: Space<'_>, id: &str) -> Result<RefundRecord, DomainError> {
        if !super::plausible_id(id, "re") {
            return Err(DomainError::NotFound);
        }
        match self.ports.repo.refund(id).await? {
            Some(refund) if space.holds(&refund.merchant, refund.mode) => Ok(refund),
            _ => Err(DomainError::NotFound),
        }
    }

    /// Refunds of the caller's space, newest first (of one intent when given).
    pub async fn refunds(
        &self,
        space: Space<'_>,
        payment_intent: Option<&str>,
        starting_after: Option<&str>,
        limit: Option<u32>,
    ) -> Result<(Vec<RefundRecord>, bool), DomainError> {
        let limit = super::page_limit(limit)?;
        super::check_cursor(starting_after, "re")?;
        if let Some(intent) = payment_intent
            && !super::plausible_id(intent, "pi")
        {
            return Err(DomainError::invalid("/payment_intent", "must be an id starting with pi_"));
        }
        let page = Page { merchant: space.merchant, mode: space.mode, starting_after, limit: limit + 1 };
        let mut found = self.ports.repo.refunds(page, payment_intent).await?;
        let more = found.len() > limit as usize;
        found.truncate(limit as usize);
        Ok((found, more))
    }
}
