//! The checkout rules around a confirmation, before the gateway is asked: the fraud checks
//! ([`super::fraud`], counted by the store), step-up of the customer for large or suspicious
//! payments (a proof for purpose `payment` bound to amount, currency, payee and intent, PSD2
//! dynamic linking), and four-eyes approval of large refunds.
//! Must never: call the gateway for a blocked attempt, accept a step-up proof twice or for
//! another payment (the identity service spends it by one compare-and-set), or refund a large
//! amount without a second staff member's approval.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Map, Value, json};

use super::fraud::{self, ClientSignals, FraudDecision, FraudSettings, Observation, Outcome};
use super::intents::Step;
use super::state::{Event, State};
use super::{Caller, PaymentsService};
use crate::audit::event::Outcome as AuditOutcome;
use crate::error::DomainError;
use crate::identity::step_up::StepUpRedemption;
use crate::identity::{Client, IdentityService};
use crate::ports::checkout::{AttemptSignals, CheckoutRepository, SignalKind, WindowCounts};
use crate::ports::payments::{IntentRecord, PaymentError};
use crate::staff::StaffService;
use crate::staff::approvals::Action;
use crate::vault::tokens::PaymentCardInfo;

/// The error of an attempt the fraud checks blocked.
const BLOCKED: (&str, &str) =
    ("fraud_blocked", "strongroom's fraud checks blocked this payment; the gateway was not asked (see fraud.reasons)");

/// The error of a payment without the customer that the fraud checks would have asked them to
/// authenticate (Stripe's code for a payment that needs a customer who is not there).
const NEEDS_CUSTOMER: (&str, &str) = (
    "authentication_required",
    "the fraud checks ask for the customer's authentication, and this payment is made without them \
     (off_session); ask the customer to pay in a checkout",
);

/// The purpose a payment's step-up proof is made for.
pub const STEP_UP_PURPOSE: &str = "payment";

/// Thresholds of the checkout rules (`[payments]` and `[payments.fraud]`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckoutRules {
    /// The fraud checks.
    pub fraud: FraudSettings,
    /// Amounts above which a confirmation needs the customer's step-up, in minor units per
    /// lower-case currency (a currency not listed: never for its amount alone).
    pub step_up_above: BTreeMap<String, i64>,
    /// Amounts above which a refund by staff needs a second staff member's approval, per
    /// lower-case currency.
    pub refund_approval_above: BTreeMap<String, i64>,
}

/// What the checkout rules need besides the payments service's own ports (set once at wiring).
#[derive(Debug)]
pub struct Checkout {
    /// Where the fraud signals are counted.
    pub repo: Arc<dyn CheckoutRepository>,
    /// Customers' step-up proofs.
    pub identity: Arc<IdentityService>,
    /// Four-eyes approvals.
    pub staff: Arc<StaffService>,
    /// Thresholds.
    pub rules: CheckoutRules,
}

/// What the shop sends with a confirmation besides the card.
#[derive(Debug, Default)]
pub struct ConfirmExtras {
    /// The customer's `sup_…` proof for this payment (masked in `Debug`).
    pub step_up_proof: Option<strongroom_types::Secret<String>>,
    /// The customer's browser or app, as the shop saw it.
    pub client: ClientSignals,
    /// The shop's page the customer comes back to after 3-D Secure.
    pub return_url: Option<String>,
    /// Save the card (with consent), or pay without the customer with a saved card.
    pub card_on_file: super::saved_cards::CardOnFileInput,
}

/// A confirmation attempt's signals, ready to be counted, and what the rules need besides the
/// counts.
#[derive(Debug)]
pub(super) struct FraudCheck {
    /// What is recorded and counted.
    pub(super) signals: AttemptSignals,
    /// The start of the window.
    pub(super) since: strongroom_types::Timestamp,
    amount: strongroom_types::Money,
    card_country: Option<String>,
    client_country: Option<String>,
}

impl FraudCheck {
    /// The rules' decision on the counts of this attempt's keys (this attempt included).
    pub(super) fn judge(
        &self,
        settings: &FraudSettings,
        counts: &[(SignalKind, WindowCounts)],
    ) -> (Outcome, Vec<&'static str>) {
        let observation = Observation {
            amount: self.amount,
            counts: counts.iter().copied().collect(),
            card_country: self.card_country.clone(),
            client_country: self.client_country.clone(),
        };
        fraud::decide(settings, &observation)
    }
}

/// The decision as kept on the intent.
pub(super) fn fraud_decision(outcome: Outcome, reasons: &[&'static str]) -> FraudDecision {
    FraudDecision { outcome: outcome.as_str().to_owned(), reasons: reasons.iter().map(|r| (*r).to_owned()).collect() }
}

/// The audit entry of a fraud check: the check itself succeeded; its decision and reasons are
/// the entry's reason.
pub(super) fn fraud_checked_event(
    caller: Caller<'_>,
    intent: &str,
    decision: &FraudDecision,
) -> crate::audit::event::AuditEvent {
    let why = if decision.reasons.is_empty() {
        decision.outcome.clone()
    } else {
        format!("{}:{}", decision.outcome, decision.reasons.join(","))
    };
    caller
        .principal
        .event("payment_intent.fraud_checked", AuditOutcome::SuccessBecause(why))
        .from_source(caller.source.ip, caller.source.request_id.clone())
        .on("payment_intent", intent)
}

/// Whether the amount alone needs the customer's step-up (`payments.step_up_above`).
pub(super) fn step_up_for_amount(rules: &CheckoutRules, intent: &IntentRecord) -> bool {
    rules.step_up_above.get(&intent.amount.currency().lowercase()).is_some_and(|limit| intent.amount.minor() > *limit)
}

/// The binding a payment's step-up proof must be made for.
pub fn step_up_binding(intent: &IntentRecord) -> Map<String, Value> {
    let value = json!({
        "amount": intent.amount.minor(),
        "currency": intent.amount.currency().lowercase(),
        "payee": intent.merchant.as_str(),
        "payment_intent": intent.id,
    });
    value.as_object().cloned().unwrap_or_default()
}

impl PaymentsService {
    /// Wires the checkout rules (called once at start; without them confirmations are refused).
    pub fn set_checkout(&self, checkout: Checkout) {
        let _ = self.checkout.set(checkout);
    }

    /// Wires intrusion detection (called once at start).
    pub fn set_detection(&self, decisions: crate::detection::DecisionService) {
        let _ = self.detection.set(decisions);
    }

    /// Refuses a payment from a client intrusion detection blocked for this merchant (card
    /// testing, or a staff member's block): `429 client_blocked`, before anything is written.
    pub(super) async fn refuse_blocked_client(
        &self,
        caller: Caller<'_>,
        client: &ClientSignals,
    ) -> Result<(), DomainError> {
        let Some(decision) = self
            .detection
            .get()
            .and_then(|d| d.blocking(Some(caller.principal.merchant_id()), client.ip, client.device.as_deref()))
        else {
            return Ok(());
        };
        let event = caller
            .principal
            .event("payment_intent.refused", crate::audit::event::Outcome::Denied("client_blocked"))
            .on("security_decision", &decision.id)
            .from_source(caller.source.ip, caller.source.request_id.clone());
        self.ports.audit.record(event).await?;
        Err(crate::detection::blocked_error(&decision, self.ports.clock.now()))
    }

    /// Reports a payment the fraud checks refused as card testing to intrusion detection, which
    /// blocks the client's payments (its address, and its device when the shop named one) for
    /// the merchant on every node.
    async fn report_card_testing(&self, intent: &IntentRecord, client: &ClientSignals) {
        let Some(detection) = self.detection.get() else { return };
        let testing = intent.fraud.as_ref().is_some_and(|f| f.reasons.iter().any(|r| r == "card_testing"));
        if !testing {
            return;
        }
        for (actor, scope) in client_actors(client) {
            let sighting =
                crate::detection::Sighting::new(crate::detection::Point::CardTesting, Some(&intent.merchant), actor)
                    .respond(scope)
                    .from_ip(client.ip)
                    .subject(intent.id.clone());
            detection.sighted(sighting).await;
        }
    }

    /// Reports the card-testing signals of a confirmation attempt the fraud checks let through
    /// to intrusion detection: distinct cards paying a small amount from one client, and distinct
    /// cards sharing their first six digits from one client (cards counted by fingerprint, never
    /// by number), each counted per address and per device. A detection blocks the client's
    /// payments (that address, or that device) for the merchant.
    pub(super) async fn watch_card(
        &self,
        intent: &IntentRecord,
        card: Option<&PaymentCardInfo>,
        client: &ClientSignals,
    ) {
        let (Some(detection), Some(card)) = (self.detection.get(), card) else { return };
        let (Some(fingerprint), Ok(checkout)) = (card.fingerprint.as_deref(), self.checkout()) else { return };
        // Every count of this payment (each point, for its address and its device) goes to the
        // shared store in one round trip.
        let mut sightings = Vec::new();
        for (group, scope) in client_actors(client) {
            let sighting = |point, actor: String| {
                crate::detection::Sighting::new(point, Some(&intent.merchant), actor)
                    .item(fingerprint)
                    .respond(scope.clone())
                    .from_ip(client.ip)
                    .subject(intent.id.clone())
            };
            if checkout.rules.fraud.is_small(intent.amount) {
                sightings.push(sighting(crate::detection::Point::SmallAmountCards, group.clone()));
            }
            if let Some(first6) = &card.first6 {
                // The issuer's range names the count (first six digits are not secret); the
                // cards in it are counted by fingerprint.
                sightings.push(sighting(crate::detection::Point::IinCluster, format!("{group}:{first6}")));
            }
            // One amount, many cards: the amount names the count.
            let amount = format!("{group}:{}{}", intent.amount.minor(), intent.amount.currency().lowercase());
            sightings.push(sighting(crate::detection::Point::IdenticalAmounts, amount));
        }
        detection.sighted_all(sightings).await;
    }

    /// Counts the gateway's answer (`status`) to an authorisation of `intent` for the decline
    /// ratio, wherever it came from: the request's own answer (`client`: the request's client),
    /// or a later one, after 3-D Secure, by the gateway's webhook or by reconciliation (`None`:
    /// the client its checked attempt recorded). Answers that are no verdict (3-D Secure asked
    /// for, pending) are not counted.
    pub(super) async fn watch_authorization(
        &self,
        intent: &IntentRecord,
        status: super::gateway::GatewayStatus,
        client: Option<&ClientSignals>,
    ) {
        use super::gateway::GatewayStatus;
        let declined = match status {
            GatewayStatus::Declined => true,
            GatewayStatus::Authorized | GatewayStatus::Captured => false,
            _ => return,
        };
        let Some(detection) = self.detection.get() else { return };
        let settings = detection.settings();
        if !settings.enabled || settings.rule(crate::detection::Point::DeclineRatio).threshold == 0 {
            return;
        }
        let recorded;
        let client = match client {
            Some(client) => client,
            None => {
                let Ok(checkout) = self.checkout() else { return };
                let (ip, device) = match checkout.repo.attempt_client(&intent.id, intent.attempt).await {
                    Ok(found) => found,
                    Err(err) => {
                        tracing::warn!(error = %err, "the client of a late gateway answer could not be read");
                        return;
                    }
                };
                recorded = ClientSignals { ip: ip.and_then(|ip| ip.parse().ok()), device, country: None };
                &recorded
            }
        };
        self.watch_outcome(intent, declined, client).await;
    }

    /// Counts the gateway's answer to an attempt of a client for the decline ratio (`declined`:
    /// declined, else approved): a client most of whose payments within the window were
    /// declined, from a minimum number of them on, has its payments blocked for the merchant
    /// (counted per address, and per device when the shop names one).
    pub(super) async fn watch_outcome(&self, intent: &IntentRecord, declined: bool, client: &ClientSignals) {
        let Some(detection) = self.detection.get() else { return };
        let point = crate::detection::Point::DeclineRatio;
        let merchant = Some(&intent.merchant);
        // By attempt: an answer settled twice (a retried request) counts once.
        let attempt = format!("{}:{}", intent.id, intent.attempt);
        let item = Some(attempt.as_bytes());
        let actors = client_actors(client);
        let groups: Vec<&str> = actors.iter().map(|(group, _)| group.as_str()).collect();
        // The client's address and device are counted together, in one round trip each.
        let Some(attempts) = detection.count_all(point, "attempts", merchant, &groups, item).await else { return };
        if !declined {
            return;
        }
        let Some(declines) = detection.count_all(point, "declines", merchant, &groups, item).await else { return };
        for (((group, scope), attempts), declines) in actors.into_iter().zip(attempts).zip(declines) {
            let settings = detection.settings();
            let (tried, refused) = (attempts.distinct, declines.distinct);
            let enough = tried >= u64::from(settings.decline_ratio_attempts);
            if !enough || refused.saturating_mul(100) < u64::from(settings.decline_ratio_percent).saturating_mul(tried)
            {
                continue;
            }
            let who = if matches!(scope, crate::detection::DecisionScope::Device(_)) { "device" } else { "client" };
            let note = format!("{refused} of {tried} payments from one {who} declined within 60 minutes");
            let sighting = crate::detection::Sighting::new(point, merchant, group)
                .respond(scope)
                .from_ip(client.ip)
                .noting(note)
                .subject(intent.id.clone());
            detection.sighted(sighting).await;
        }
    }

    /// The checkout rules' ports.
    pub(crate) fn checkout(&self) -> Result<&Checkout, DomainError> {
        self.checkout.get().ok_or_else(|| {
            DomainError::Store(crate::StoreError::Unavailable("the checkout rules are not wired".to_owned()))
        })
    }

    /// Runs the fraud checks and the step-up rule for a confirmation of `intent` (in
    /// `requires_confirmation`) and keeps the decision on it. `Ok(Err(blocked))`: the attempt was
    /// blocked and the intent is back in `requires_payment_method`; `Ok(Ok(intent))`: go on.
    /// `token` is the vault card token the payment method stands for.
    pub(super) async fn check_before_authorising(
        &self,
        caller: Caller<'_>,
        mut intent: IntentRecord,
        token: &str,
        extras: &ConfirmExtras,
    ) -> Result<Result<IntentRecord, IntentRecord>, DomainError> {
        let checkout = self.checkout()?;
        let rules = &checkout.rules;
        let mut outcome = Outcome::Allow;
        if rules.fraud.enabled {
            let card = match self.ports.vault.payment_card(caller.principal, token).await {
                Ok(info) => Some(info),
                Err(DomainError::NotFound | DomainError::Gone) => None,
                Err(other) => return Err(other),
            };
            let check = self.prepare_fraud_check(&rules.fraud, &intent, card.as_ref(), &extras.client);
            let counts = checkout.repo.record_and_count(&check.signals, check.since).await?;
            let (decided, reasons) = check.judge(&rules.fraud, &counts);
            outcome = decided;
            let decision = fraud_decision(decided, &reasons);
            let text = serde_json::to_string(&decision).map_err(|e| crate::StoreError::Other(e.to_string()))?;
            checkout.repo.set_fraud_decision(&intent.id, &text).await?;
            self.ports.audit.record(fraud_checked_event(caller, &intent.id, &decision)).await?;
            intent.fraud = Some(decision);
            if decided != Outcome::Block {
                self.watch_card(&intent, card.as_ref(), &extras.client).await;
            }
        }
        self.after_fraud_check(caller, checkout, intent, outcome, extras).await
    }

    /// What follows the fraud checks' decision (kept on `intent` already): a blocked attempt
    /// moves back to `requires_payment_method` (`Ok(Err(blocked))`); a large or suspicious
    /// payment spends the customer's step-up proof; then `Ok(Ok(intent))`: go on.
    ///
    /// A payment the shop makes without the customer (merchant-initiated, `off_session`) is
    /// outside strong customer authentication (PSD2 exempts it): the amount rule does not ask for
    /// step-up, and a fraud decision that would ask for one declines it as
    /// `authentication_required` instead (no customer is there to answer), as Stripe does.
    pub(super) async fn after_fraud_check(
        &self,
        caller: Caller<'_>,
        checkout: &Checkout,
        intent: IntentRecord,
        outcome: Outcome,
        extras: &ConfirmExtras,
    ) -> Result<Result<IntentRecord, IntentRecord>, DomainError> {
        if outcome == Outcome::Block {
            self.report_card_testing(&intent, &extras.client).await;
            return self.block(caller, &intent, BLOCKED).await.map(Err);
        }
        let merchant_initiated = intent.card_on_file.as_ref().is_some_and(|c| c.merchant_initiated.is_some());
        if merchant_initiated {
            if outcome == Outcome::RequireStepUp {
                return self.block(caller, &intent, NEEDS_CUSTOMER).await.map(Err);
            }
            return Ok(Ok(intent));
        }
        if outcome == Outcome::RequireStepUp || step_up_for_amount(&checkout.rules, &intent) {
            let proof = extras.step_up_proof.as_ref().map(|p| p.expose().as_str());
            self.spend_step_up(caller, checkout, &intent, proof).await?;
        }
        Ok(Ok(intent))
    }

    /// The signals this confirmation attempt of `intent` is counted under (`card`: what the
    /// vault says of its card, none when the token is gone).
    pub(super) fn prepare_fraud_check(
        &self,
        settings: &FraudSettings,
        intent: &IntentRecord,
        card: Option<&PaymentCardInfo>,
        client: &ClientSignals,
    ) -> FraudCheck {
        let token = intent.payment_method.clone().unwrap_or_default();
        let (card, leading) = match card {
            Some(info) => (info.fingerprint.clone().unwrap_or_else(|| token.clone()), info.first6.clone()),
            None => (token, None),
        };
        let mut keys = vec![(SignalKind::Card, card.clone())];
        if let Some(customer) = &intent.customer {
            keys.push((SignalKind::Customer, customer.clone()));
        }
        if let Some(ip) = client.ip {
            keys.push((SignalKind::Ip, ip.to_string()));
        }
        if let Some(device) = &client.device {
            keys.push((SignalKind::Device, device.clone()));
        }
        let now = self.ports.clock.now();
        let window_ms = i64::try_from(settings.window.as_millis()).unwrap_or(i64::MAX);
        let since = strongroom_types::Timestamp::from_unix_millis(now.unix_millis().saturating_sub(window_ms));
        let signals = AttemptSignals {
            merchant: intent.merchant.clone(),
            mode: intent.mode,
            intent: intent.id.clone(),
            attempt: intent.attempt.saturating_add(1),
            keys,
            card,
            amount: intent.amount.minor(),
            currency: intent.amount.currency().lowercase(),
            small: settings.is_small(intent.amount),
            at: now,
        };
        FraudCheck {
            signals,
            since,
            amount: intent.amount,
            card_country: leading.as_deref().and_then(|d| settings.issuer_country(d)).map(str::to_owned),
            client_country: client.country.clone(),
        }
    }

    /// Moves a blocked attempt's intent back to `requires_payment_method` without asking the
    /// gateway (as Stripe Radar does: the customer may try another card, which is checked again),
    /// with `why` as its `last_payment_error`.
    async fn block(
        &self,
        caller: Caller<'_>,
        intent: &IntentRecord,
        why: (&str, &str),
    ) -> Result<IntentRecord, DomainError> {
        let mut after = intent.clone();
        after.state = State::RequiresPaymentMethod;
        after.attempt = intent.attempt.saturating_add(1);
        after.payment_method = None;
        after.next_action = None;
        after.last_payment_error = Some(PaymentError::of(why.0, None, why.1));
        self.apply(caller, intent, after, Step::new(Event::FraudBlocked)).await
    }

    /// Spends the customer's step-up proof for this payment, or says which proof is needed.
    async fn spend_step_up(
        &self,
        caller: Caller<'_>,
        checkout: &Checkout,
        intent: &IntentRecord,
        proof: Option<&str>,
    ) -> Result<(), DomainError> {
        let Some(customer) = intent.customer.as_deref().filter(|c| c.starts_with("cus_")) else {
            return Err(DomainError::Conflict(
                "step_up_unavailable",
                "this payment needs the customer's step-up, which needs a strongroom customer (cus_…) on the \
                 payment intent; make the intent with one",
            ));
        };
        let binding = step_up_binding(intent);
        let Some(proof) = proof else {
            return Err(DomainError::StepUpRequired { purpose: STEP_UP_PURPOSE, binding });
        };
        let client = Client {
            ip: caller.source.ip,
            user_agent: None,
            request_id: caller.source.request_id.clone(),
            ip_is_the_customers: false,
            device: None,
        };
        let redemption = StepUpRedemption { customer, proof, purpose: STEP_UP_PURPOSE, binding: &binding };
        checkout.identity.redeem_step_up(caller.principal.space(), redemption, caller.principal, &client).await.map_err(
            |err| match err {
                DomainError::Rejected { code: "step_up_invalid", .. } => DomainError::Rejected {
                    code: "step_up_invalid",
                    errors: vec![crate::error::FieldError::new(
                        "/step_up_proof",
                        "is not a valid, unused proof of this intent's customer for purpose payment and this \
                         payment's binding",
                    )],
                },
                other => other,
            },
        )
    }

    /// Four-eyes for a staff member's refund above `payments.refund_approval_above`: without an
    /// approval, opens a request (answered as `approval_required` with its id); with one, spends
    /// it, if it is an approved request of this staff member for exactly this intent, amount and
    /// currency (one compare-and-set: of concurrent re-submits one refunds). API keys are not
    /// people: their `payments:refund` scope is the control, as for card reveals.
    pub(super) async fn approve_refund(
        &self,
        caller: Caller<'_>,
        intent: &str,
        amount: strongroom_types::Money,
        reason: Option<&str>,
        approval: Option<&str>,
    ) -> Result<(), DomainError> {
        if caller.principal.as_staff().is_none() {
            return Ok(());
        }
        let checkout = self.checkout()?;
        let currency = amount.currency().lowercase();
        let above = checkout.rules.refund_approval_above.get(&currency).is_some_and(|limit| amount.minor() > *limit);
        if !above {
            return Ok(());
        }
        let target = format!("{intent}:{}:{currency}", amount.minor());
        let client = Client {
            ip: caller.source.ip,
            user_agent: None,
            request_id: caller.source.request_id.clone(),
            ip_is_the_customers: false,
            device: None,
        };
        let reason = reason.unwrap_or("refund");
        checkout.staff.require_approval(caller.principal, Action::Refund, &target, reason, approval, &client).await
    }

    /// The signed-in customer's own payments, newest first: `limit` of them and whether more
    /// follow. The shop's metadata and the fraud decision are left out (they are the shop's).
    pub async fn customer_payments(
        &self,
        session: &crate::identity::CustomerSession,
        starting_after: Option<&str>,
        limit: Option<u32>,
    ) -> Result<(Vec<IntentRecord>, bool), DomainError> {
        let limit = super::page_limit(limit)?;
        super::check_cursor(starting_after, "pi")?;
        let space = session.space();
        let page = crate::ports::payments::Page {
            merchant: space.merchant,
            mode: space.mode,
            starting_after,
            limit: limit + 1,
        };
        let mut found = self.checkout()?.repo.customer_intents(page, &session.customer_id).await?;
        let more = found.len() > limit as usize;
        found.truncate(limit as usize);
        for intent in &mut found {
            intent.metadata = None;
            intent.fraud = None;
        }
        Ok((found, more))
    }

    /// Mails the receipt of a succeeded payment to its customer, when that is a strongroom
    /// customer (`cus_…`). Called once, by the request whose update made it succeed; a mail
    /// that cannot be queued is logged, the payment stands.
    pub(super) async fn send_receipt(&self, intent: &IntentRecord) {
        let Some(customer) = intent.customer.as_deref().filter(|c| c.starts_with("cus_")) else { return };
        let Ok(checkout) = self.checkout() else { return };
        let card = intent.card.as_ref().map_or_else(String::new, |c| format!("{} •••• {}", c.brand, c.last4));
        let receipt = crate::identity::PaymentReceipt {
            amount: strongroom_types::Money::new(intent.amount_received, intent.amount.currency())
                .unwrap_or(intent.amount)
                .to_string(),
            payment: intent.id.clone(),
            card,
            when: intent.updated_at.to_rfc3339(),
        };
        let space = crate::modes::Space { merchant: &intent.merchant, mode: intent.mode };
        if let Err(err) = checkout.identity.send_payment_receipt(space, customer, &receipt).await {
            tracing::warn!(error = %err, "a payment receipt was not queued");
        }
    }

    /// Deletes fraud signals older than the window (none of the rules reads them any more), in
    /// batches of 10,000; returns how many (the leader's `payments.fraud_signals_purge` job).
    pub async fn purge_fraud_signals(&self) -> Result<u64, DomainError> {
        let checkout = self.checkout()?;
        let window = i64::try_from(checkout.rules.fraud.window.as_millis()).unwrap_or(i64::MAX);
        let before =
            strongroom_types::Timestamp::from_unix_millis(self.ports.clock.now().unix_millis().saturating_sub(window));
        let mut total = 0;
        loop {
            let purged = checkout.repo.purge_signals(before, 10_000).await?;
            total += purged;
            if purged < 10_000 {
                return Ok(total);
            }
        }
    }

    /// Counts a declined attempt for the fraud rules (after the decline is stored; a failure to
    /// count is logged, not turned into an error of a payment that is settled already).
    pub(super) async fn count_decline(&self, intent: &IntentRecord) {
        let Ok(checkout) = self.checkout() else { return };
        if let Err(err) = checkout.repo.mark_declined(&intent.id, intent.attempt).await {
            tracing::warn!(error = %err, "a declined attempt was not counted for the fraud checks");
        }
    }
}

/// Whom a payment's client is counted and blocked as by intrusion detection: its address (an
/// IPv6 client by its /64), and its device when the shop named one.
fn client_actors(client: &ClientSignals) -> Vec<(String, crate::detection::DecisionScope)> {
    let mut actors = Vec::with_capacity(2);
    if let Some(ip) = client.ip {
        actors.push((crate::detection::points::client_group(ip), crate::detection::points::client_scope(ip)));
    }
    if let Some(device) = &client.device {
        actors.push((
            crate::detection::points::device_group(device),
            crate::detection::DecisionScope::Device(device.clone()),
        ));
    }
    actors
}
