//! Reconciliation: settles payments whose gateway call has no recorded answer (the gateway did
//! not answer in time, or strongroom stopped between the call and its answer) by asking the
//! gateway what became of the call, by its idempotency key.
//!
//! For each call recorded longer ago than the gateway's timeout (so the request that made it has
//! given up) and still without an outcome:
//! - the gateway knows the call and has decided: the intent or refund moves by that answer,
//!   through the same conditional update as an answer in time (so a late answer that arrives
//!   meanwhile and this job cannot both apply);
//! - the gateway knows it but is still working on it: nothing moves;
//! - the gateway never saw a capture, void or refund: the same call is sent again under the same
//!   idempotency key (safe: the gateway acts once per key), and its answer settles it;
//! - the gateway never saw an authorisation (believed once the gateway's
//!   [`Gateway::lookup_lag`](super::gateway::Gateway::lookup_lag) has passed too): no money
//!   moved, and the intent goes back to
//!   `requires_payment_method` with the error `gateway_not_reached` (an authorisation is never
//!   sent again from here: the card's verification code was used up by the first attempt and the
//!   customer is not present);
//! - the gateway cannot be asked: nothing moves; the next run asks again.
//!
//! A dry run ([`ReconcileMode::Report`]) only reports what differs. The job runs it with
//! [`ReconcileMode::Settle`] on the leader; `strongroom payments reconcile` runs either.
//! Must never: mark an intent or refund succeeded or failed without the gateway's word, re-send
//! an authorisation, or move an intent by the answer to a call other than the one it waits for.

use serde::Serialize;
use strongroom_types::Timestamp;

use super::gateway::{
    FollowUpRequest, GatewayAnswer, GatewayError, GatewayStatus, LookupRequest, authorization_event, capture_event,
    refund_settled, void_event,
};
use super::intents::gateway_outcome;
use super::{Actor, PaymentsService};
use crate::error::DomainError;
use crate::ports::payments::{IntentRecord, OpenGatewayCall, PaymentError};

/// The job's name, as its audit entries show it.
pub const JOB: &str = "payments.reconcile";
/// Most calls looked at in one run.
pub const BATCH: u32 = 200;

/// Whether differences are settled or only reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReconcileMode {
    /// Ask the gateway and report; change nothing.
    Report,
    /// Ask the gateway and settle what it decided.
    Settle,
}

/// One call whose outcome strongroom did not know.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Difference {
    /// `pi_…` or `re_…`.
    pub object: String,
    /// `authorize`, `capture`, `cancel` or `refund`.
    pub operation: String,
    /// The call's idempotency key.
    pub idempotency_key: String,
    /// When the call was recorded (RFC 3339).
    pub recorded_at: String,
    /// What strongroom showed: `processing` (an intent) or `pending` (a refund), or the state an
    /// intent moved on to without this call's answer.
    pub ours: String,
    /// What the gateway says: its outcome (`captured`, `declined`, …), `pending`, `not_received`
    /// or `unreachable`.
    pub gateway: String,
    /// What was done: `settled`, `resent`, `closed` (the intent had moved on), `left` (nothing
    /// to do yet, or a dry run).
    pub action: String,
}

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ReconcileReport {
    /// Calls looked at.
    pub examined: usize,
    /// Moved by the gateway's answer (including after a resend).
    pub settled: usize,
    /// Sent again under their key because the gateway never saw them.
    pub resent: usize,
    /// Still undecided at the gateway, or the gateway could not be asked.
    pub left: usize,
    /// One line per call.
    pub differences: Vec<Difference>,
}

impl ReconcileReport {
    /// A one-line summary for the job runner.
    pub fn summary(&self) -> String {
        if self.examined == 0 {
            return String::new();
        }
        format!("examined {}, settled {}, resent {}, left {}", self.examined, self.settled, self.resent, self.left)
    }
}

/// What the gateway said about one call.
enum Word {
    Answer(Box<GatewayAnswer>),
    NotReceived,
    Unreachable,
}

impl Word {
    fn label(&self) -> String {
        match self {
            Word::Answer(answer) => gateway_outcome(answer.status).to_owned(),
            Word::NotReceived => "not_received".into(),
            Word::Unreachable => "unreachable".into(),
        }
    }
}

/// The attempt at the end of an idempotency key (`<id>:<operation>:<attempt>`).
fn attempt_of(key: &str) -> Option<u32> {
    key.rsplit(':').next()?.parse().ok()
}

impl PaymentsService {
    /// [`Self::reconcile`] of the calls recorded within `lookback` of now.
    pub async fn reconcile_within(
        &self,
        lookback: std::time::Duration,
        mode: ReconcileMode,
    ) -> Result<ReconcileReport, DomainError> {
        let back = i64::try_from(lookback.as_millis()).unwrap_or(i64::MAX);
        let since = Timestamp::from_unix_millis(self.ports.clock.now().unix_millis().saturating_sub(back));
        self.reconcile(since, mode).await
    }

    /// Looks at every unanswered gateway call recorded since `since` (and at least the gateway's
    /// timeout ago), asks the gateway about each, and in [`ReconcileMode::Settle`] settles what
    /// it decided. Errors of one call are reported with it and do not stop the others.
    pub async fn reconcile(&self, since: Timestamp, mode: ReconcileMode) -> Result<ReconcileReport, DomainError> {
        let now = self.ports.clock.now();
        let settle_after = i64::try_from(self.settings.gateway_timeout.as_millis()).unwrap_or(i64::MAX);
        let before = Timestamp::from_unix_millis(now.unix_millis().saturating_sub(settle_after.saturating_add(1000)));
        let calls = self.ports.repo.open_gateway_calls(since, before, BATCH).await?;
        let mut report = ReconcileReport::default();
        for call in calls {
            report.examined += 1;
            let difference = self.reconcile_call(&call, mode).await?;
            match difference.action.as_str() {
                "settled" | "closed" => report.settled += 1,
                "resent" => {
                    report.resent += 1;
                    report.settled += 1;
                }
                _ => report.left += 1,
            }
            report.differences.push(difference);
        }
        if report.examined > 0 {
            tracing::info!(
                examined = report.examined,
                settled = report.settled,
                resent = report.resent,
                left = report.left,
                "payments reconciled"
            );
        }
        Ok(report)
    }

    /// Asks the gateway about the call under `key`, made for the payment the gateway knows as
    /// `payment_reference` (when it answered one).
    async fn ask(&self, key: &str, payment_reference: Option<&str>) -> Word {
        let request = LookupRequest {
            idempotency_key: key.to_owned(),
            payment_reference: payment_reference.filter(|r| !r.is_empty()).map(str::to_owned),
        };
        match self.call_lookup(&request).await {
            Ok(Some(answer)) => Word::Answer(Box::new(answer)),
            Ok(None) => Word::NotReceived,
            Err(err) => {
                tracing::warn!(error = %err, "the gateway could not say what became of a call; asking again later");
                Word::Unreachable
            }
        }
    }

    async fn call_lookup(&self, request: &LookupRequest) -> Result<Option<GatewayAnswer>, GatewayError> {
        match tokio::time::timeout(self.settings.gateway_timeout, self.ports.gateway.lookup(request)).await {
            Ok(result) => result,
            Err(_) => Err(GatewayError::Timeout),
        }
    }

    async fn reconcile_call(&self, call: &OpenGatewayCall, mode: ReconcileMode) -> Result<Difference, DomainError> {
        let mut difference = Difference {
            object: call.intent.clone(),
            operation: call.operation.clone(),
            idempotency_key: call.idempotency_key.clone(),
            recorded_at: call.at.to_rfc3339(),
            ours: "processing".into(),
            gateway: String::new(),
            action: "left".into(),
        };
        if call.operation == "refund" {
            return self.reconcile_refund(call, mode, difference).await;
        }
        let Some(intent) = self.ports.repo.intent(&call.intent).await? else {
            difference.gateway = "unknown_intent".into();
            return Ok(difference);
        };
        let word = self.ask(&call.idempotency_key, intent.gateway_reference.as_deref()).await;
        difference.gateway = word.label();
        let waits_for_this_call = intent.state.pending_operation() == Some(call.operation.as_str())
            && attempt_of(&call.idempotency_key) == Some(intent.attempt);
        if !waits_for_this_call {
            // The intent moved on without this answer (another node or a retry settled it):
            // record what the gateway said so the call is not asked about again.
            difference.ours = intent.state.status().to_owned();
            if mode == ReconcileMode::Settle && !matches!(word, Word::Unreachable) {
                let outcome = difference.gateway.clone();
                self.ports.repo.close_gateway_call(&call.idempotency_key, &outcome, self.ports.clock.now()).await?;
                difference.action = "closed".into();
            }
            return Ok(difference);
        }
        if mode == ReconcileMode::Report {
            return Ok(difference);
        }
        let actor = Actor::System(JOB);
        let key = call.idempotency_key.as_str();
        let (after, resent) = match (word, call.operation.as_str()) {
            (Word::Unreachable, _) => return Ok(difference),
            (Word::Answer(answer), "authorize") => {
                if authorization_event(answer.status).is_none() {
                    return Ok(difference);
                }
                let status = answer.status;
                let settled = self.settle_authorization(actor, &intent, key, *answer).await?;
                self.watch_authorization(&intent, status, None).await;
                (settled, false)
            }
            (Word::NotReceived, "authorize") => {
                let wait = self.settings.gateway_timeout.saturating_add(self.ports.gateway.lookup_lag());
                let age = self.ports.clock.now().millis_since(call.at);
                if age < i64::try_from(wait.as_millis()).unwrap_or(i64::MAX) {
                    return Ok(difference);
                }
                let answer = GatewayAnswer {
                    status: GatewayStatus::Declined,
                    gateway_reference: String::new(),
                    error: Some(PaymentError::of(
                        "gateway_not_reached",
                        None,
                        "the gateway has no record of the authorisation, so no money moved; confirm again",
                    )),
                    next_action: None,
                    network_transaction_id: None,
                    stored_method: None,
                };
                (self.settle_authorization(actor, &intent, key, answer).await?, false)
            }
            (word, "capture" | "cancel") => {
                let (answer, resent) = match word {
                    Word::Answer(answer) => (*answer, false),
                    _ => match self.resend(&intent, call).await {
                        Some(answer) => (answer, true),
                        None => return Ok(difference),
                    },
                };
                if resent {
                    difference.gateway = format!("not_received, then {}", gateway_outcome(answer.status));
                }
                let after = if call.operation == "capture" {
                    if capture_event(answer.status).is_none() {
                        return Ok(difference);
                    }
                    self.settle_capture(actor, &intent, key, call.amount, answer).await?
                } else {
                    if void_event(answer.status).is_none() {
                        return Ok(difference);
                    }
                    self.settle_void(actor, &intent, key, answer).await?
                };
                (after, resent)
            }
            (_, _) => return Ok(difference),
        };
        if after.state != intent.state {
            difference.action = if resent { "resent" } else { "settled" }.into();
        }
        Ok(difference)
    }

    /// Sends a capture or void the gateway never saw again, under its key.
    async fn resend(&self, intent: &IntentRecord, call: &OpenGatewayCall) -> Option<GatewayAnswer> {
        let amount = strongroom_types::Money::new(call.amount, intent.amount.currency()).ok()?;
        let request = FollowUpRequest {
            idempotency_key: call.idempotency_key.clone(),
            reference: intent.id.clone(),
            gateway_reference: intent.gateway_reference.clone().unwrap_or_default(),
            amount,
        };
        match call.operation.as_str() {
            "capture" => self.call_gateway(self.ports.gateway.capture(&request)).await,
            "cancel" => self.call_gateway(self.ports.gateway.cancel(&request)).await,
            "refund" => self.call_gateway(self.ports.gateway.refund(&request)).await,
            _ => None,
        }
    }

    async fn reconcile_refund(
        &self,
        call: &OpenGatewayCall,
        mode: ReconcileMode,
        mut difference: Difference,
    ) -> Result<Difference, DomainError> {
        let refund_id = call.idempotency_key.split(':').next().unwrap_or_default();
        difference.object = refund_id.to_owned();
        let Some(refund) = self.ports.repo.refund(refund_id).await? else {
            difference.gateway = "unknown_refund".into();
            return Ok(difference);
        };
        // The payment refunded, for the gateway's reference of it (Stripe finds a refund among
        // its payment's refunds).
        let intent = self.ports.repo.intent(&refund.payment_intent).await?;
        let payment_reference = intent.as_ref().and_then(|i| i.gateway_reference.as_deref());
        let word = self.ask(&call.idempotency_key, payment_reference).await;
        difference.gateway = word.label();
        if refund.status != "pending" {
            difference.ours = refund.status.clone();
            if mode == ReconcileMode::Settle && !matches!(word, Word::Unreachable) {
                let outcome = difference.gateway.clone();
                self.ports.repo.close_gateway_call(&call.idempotency_key, &outcome, self.ports.clock.now()).await?;
                difference.action = "closed".into();
            }
            return Ok(difference);
        }
        difference.ours = "pending".into();
        if mode == ReconcileMode::Report {
            return Ok(difference);
        }
        let (answer, resent) = match word {
            Word::Unreachable => return Ok(difference),
            Word::Answer(answer) => (*answer, false),
            Word::NotReceived => {
                let Some(intent) = intent else { return Ok(difference) };
                match self.resend(&intent, call).await {
                    Some(answer) => (answer, true),
                    None => return Ok(difference),
                }
            }
        };
        if resent {
            difference.gateway = format!("not_received, then {}", gateway_outcome(answer.status));
        }
        if refund_settled(answer.status).is_none() {
            return Ok(difference);
        }
        let settled = self.settle_refund_answer(Actor::System(JOB), &refund, &call.idempotency_key, answer).await?;
        if settled.status != "pending" {
            difference.action = if resent { "resent" } else { "settled" }.into();
        }
        Ok(difference)
    }
}

#[cfg(test)]
mod tests {
    use super::attempt_of;

    #[test]
    fn the_attempt_is_the_last_part_of_the_key() {
        assert_eq!(attempt_of("pi_1:capture:3"), Some(3));
        assert_eq!(attempt_of("re_1:refund:1"), Some(1));
        assert_eq!(attempt_of("pi_1:capture:x"), None);
    }
}
