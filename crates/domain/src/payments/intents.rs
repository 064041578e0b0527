//! Payment intents: creation, confirmation (authorisation at the gateway, 3-D Secure and its
//! resumption), capture (full or partial), cancellation (a void at the gateway once authorised),
//! reads and lists.
//!
//! Each change goes through [`PaymentsService::apply`]: the transition is checked against
//! [`state::next`], then written as one conditional update with its outbox event (and, before a
//! gateway call, the call's record; at confirmation, the order's lock) in one transaction, and
//! its audit entry is recorded before the answer. A gateway call is made only by the caller that
//! won the update into `processing`, so concurrent confirms or captures charge once. An intent
//! made with `confirm: true` is written, checked and claimed in one transaction
//! ([`PaymentsService::create_and_confirm`]: the same rules, decided on counts made inside it).
//! Must never: call the gateway without first recording the call, read a card before winning the
//! claim (a losing request would use up the CVC), or let a late gateway answer move an intent
//! that has moved on (the update names the attempt).

use serde_json::{Map, Value, json};
use strongroom_types::{Money, define_id};

use super::checkout::ConfirmExtras;
use super::fraud::Outcome;
use super::gateway::{
    AuthorizeRequest, FollowUpRequest, GatewayAnswer, GatewayError, GatewayStatus, authorization_event, capture_event,
    idempotency_key, void_event,
};
use super::saved_cards::{self, CardOnFileInput};
use super::state::{self, CaptureMethod, Event, State};
use super::{
    Actor, Caller, PaymentsService, check_customer, check_metadata, check_text, parse_amount, parse_currency, reject,
};
use crate::error::DomainError;
use crate::modes::Space;
use crate::ports::checkout::{Claim, ConfirmPlan, CreateAndConfirm, CreateAndConfirmOutcome, SignalKind, WindowCounts};
use crate::ports::payments::{
    CardSummary, GatewayCallRecord, IntentRecord, IntentTransition, Page, PaymentError, SavedCardRecord,
    TransitionOutcome,
};
use crate::vault::tokens::PaymentCardInfo;

define_id!(IntentId, IntentKind, "pi");

/// The code of every refused transition.
pub const UNEXPECTED_STATE: &str = "payment_intent_unexpected_state";

/// A new payment intent, as the shop sends it.
#[derive(Debug, Clone, Default)]
pub struct NewIntent {
    /// Minor units (JSON number; checked here so that each fault has its own answer).
    pub amount: Value,
    /// ISO 4217 code.
    pub currency: String,
    /// `ord_…`: the amount must equal its total.
    pub order: Option<String>,
    /// The shop's customer reference.
    pub customer: Option<String>,
    /// A card token (`tok_…`) of the caller's space.
    pub payment_method: Option<String>,
    /// `automatic` (default) or `manual`.
    pub capture_method: Option<String>,
    /// Free text.
    pub description: Option<String>,
    /// The shop's metadata.
    pub metadata: Option<Map<String, Value>>,
    /// Save the card for later (with the customer's consent), or pay without the customer with
    /// a saved card.
    pub card_on_file: CardOnFileInput,
}

/// Reasons a shop may give for a cancellation (Stripe's).
pub const CANCELLATION_REASONS: &[&str] = &["duplicate", "fraudulent", "requested_by_customer", "abandoned"];

fn unexpected(state: State) -> DomainError {
    DomainError::UnexpectedState { code: "payment_intent_unexpected_state", state: state.status() }
}

/// The data of a payment intent's webhook event: ids, amounts and codes.
fn event_data(intent: &IntentRecord) -> Value {
    json!({
        "object": "payment_intent",
        "id": intent.id,
        "status": intent.state.status(),
        "amount": intent.amount.minor(),
        "currency": intent.amount.currency(),
        "amount_capturable": intent.amount_capturable,
        "amount_received": intent.amount_received,
        "order": intent.order,
        "last_payment_error": intent.last_payment_error.as_ref().map(|e| json!({
            "code": e.code,
            "decline_code": e.decline_code,
        })),
        "fraud": intent.fraud,
        "setup_future_usage": intent.card_on_file.as_ref().and_then(|c| c.save.as_ref()).map(|s| s.usage.as_str()),
        "off_session": intent.card_on_file.as_ref().is_some_and(|c| c.merchant_initiated.is_some()),
        "saved_card": intent.card_on_file.as_ref().and_then(|c| c.saved_card.as_deref()),
    })
}

/// A transition to write.
pub(super) struct Step<'a> {
    pub(super) event: Event,
    pub(super) call: Option<&'a GatewayCallRecord>,
    pub(super) answered: Option<(&'a str, &'a str)>,
    pub(super) lock_order: Option<(&'a str, i64)>,
    /// A saved card the payment claims (refused once removed).
    pub(super) use_saved_card: Option<&'a str>,
    /// A card the payment saves.
    pub(super) save_card: Option<&'a SavedCardRecord>,
}

impl<'a> Step<'a> {
    pub(super) fn new(event: Event) -> Self {
        Self { event, call: None, answered: None, lock_order: None, use_saved_card: None, save_card: None }
    }
}

pub(crate) fn gateway_outcome(status: GatewayStatus) -> &'static str {
    match status {
        GatewayStatus::Authorized => "authorized",
        GatewayStatus::Captured => "captured",
        GatewayStatus::RequiresAction => "requires_action",
        GatewayStatus::Declined => "declined",
        GatewayStatus::Voided => "voided",
        GatewayStatus::Refunded => "refunded",
        GatewayStatus::Failed => "failed",
        GatewayStatus::Pending => "pending",
    }
}

impl PaymentsService {
    /// An intent of the caller's space; another merchant's or mode's answers as a missing one.
    pub(crate) async fn intent_in(&self, space: Space<'_>, id: &str) -> Result<IntentRecord, DomainError> {
        if !super::plausible_id(id, "pi") {
            return Err(DomainError::NotFound);
        }
        match self.ports.repo.intent(id).await? {
            Some(intent) if space.holds(&intent.merchant, intent.mode) => Ok(intent),
            _ => Err(DomainError::NotFound),
        }
    }

    /// Writes `before → after` by `step.event`, with its webhook event, in one conditional
    /// update; records the audit entry. Refused (409 with the current state) when the state
    /// machine forbids it or another request moved the intent first.
    pub(super) async fn apply(
        &self,
        actor: impl Into<Actor<'_>> + Send,
        before: &IntentRecord,
        mut after: IntentRecord,
        step: Step<'_>,
    ) -> Result<IntentRecord, DomainError> {
        if state::next(before.state, step.event) != Some(after.state) {
            return Err(unexpected(before.state));
        }
        after.updated_at = self.ports.clock.now();
        let mut events = match state::event_type(step.event, after.state) {
            Some(event_type) => {
                self.ports
                    .outbox
                    .event_messages(Some(&after.merchant), after.mode, event_type, event_data(&after), false)
                    .await?
            }
            None => Vec::new(),
        };
        if let Some(card) = step.save_card {
            events.extend(self.saved_card_events(card, "saved_card.created").await?);
        }
        let transition = IntentTransition {
            before,
            after: &after,
            call: step.call,
            answered: step.answered,
            lock_order: step.lock_order,
            events: &events,
            use_saved_card: step.use_saved_card,
            save_card: step.save_card,
        };
        match self.ports.repo.transition_intent(&transition).await? {
            TransitionOutcome::Done => {}
            TransitionOutcome::Stale => {
                let now = self.ports.repo.intent(&before.id).await?.ok_or(DomainError::NotFound)?;
                return Err(unexpected(now.state));
            }
            TransitionOutcome::OrderChanged => {
                return Err(DomainError::Conflict(
                    "order_changed",
                    "the order's total changed since this payment intent was made; make a new payment intent",
                ));
            }
            TransitionOutcome::SavedCardRemoved => {
                return Err(reject(
                    "saved_card_removed",
                    "/payment_method",
                    "the saved card was removed; attach another card",
                ));
            }
        }
        if !events.is_empty() {
            self.ports.outbox.wake().notify_one();
        }
        // A transition that recorded a gateway call stands whatever fails after it.
        let stands = |err: crate::audit::log::AuditError| match step.call {
            Some(_) => DomainError::from(err).after_gateway_call(&after.id),
            None => DomainError::from(err),
        };
        let actor = actor.into();
        let event =
            actor.event(state::audit_action(step.event), "payment_intent", &after.id, (&after.merchant, after.mode));
        self.ports.audit.record(event).await.map_err(stands)?;
        if let Some(card) = step.save_card {
            let event = actor.event("saved_card.created", "saved_card", &card.id, (&card.merchant, card.mode));
            self.ports.audit.record(event).await.map_err(stands)?;
        }
        Ok(after)
    }

    /// Checks a payment method for an intent of `customer`: a card token of the caller's space
    /// (and of this customer if it belongs to one), or an active saved card of this customer.
    async fn payment_method_for(
        &self,
        caller: Caller<'_>,
        token: &str,
        customer: Option<&str>,
        pointer: &str,
    ) -> Result<(CardSummary, Option<SavedCardRecord>), DomainError> {
        if saved_cards::is_saved_card(token) {
            let card = self.usable_saved_card(caller.principal.space(), token, customer, pointer).await?;
            return Ok((card.card.clone(), Some(card)));
        }
        let info = self.payment_card_for(caller, token, customer, pointer).await?;
        Ok((CardSummary { brand: info.brand, last4: info.last4 }, None))
    }

    /// A card token for an intent of `customer` with all the vault says of the card (its
    /// fingerprint and leading digits, which the fraud checks count and look at).
    async fn payment_card_for(
        &self,
        caller: Caller<'_>,
        token: &str,
        customer: Option<&str>,
        pointer: &str,
    ) -> Result<PaymentCardInfo, DomainError> {
        let info = match self.ports.vault.payment_card(caller.principal, token).await {
            Ok(info) => info,
            Err(DomainError::NotFound | DomainError::Gone) => {
                return Err(reject(
                    "payment_method_not_found",
                    pointer,
                    "no card token of this data space has this id (tokens of test keys are not live, and the \
                     other way round)",
                ));
            }
            Err(other) => return Err(other),
        };
        if let Some(owner) = &info.customer
            && Some(owner.as_str()) != customer
        {
            return Err(reject(
                "payment_method_customer_mismatch",
                pointer,
                "the card token belongs to another customer than the payment intent's",
            ));
        }
        Ok(info)
    }

    /// Creates a payment intent (`requires_payment_method`, or `requires_confirmation` with a card).
    pub async fn create_intent(&self, caller: Caller<'_>, input: NewIntent) -> Result<IntentRecord, DomainError> {
        let (intent, _) = self.new_intent(caller, input).await?;
        self.store_new_intent(caller, intent).await
    }

    /// Creates a payment intent with a card and confirms it (`confirm: true`), answering as
    /// [`Self::create_intent`] followed by [`Self::confirm_with`] would. The common case is one
    /// transaction instead of four (the intent, the fraud signals counted under their keys'
    /// locks, the decision, and the claim into `processing` with the gateway call recorded), and
    /// the three audit entries are awaited together. A payment the checks block or send to
    /// step-up is written as created with its decision in that transaction and moves on as a
    /// separate confirmation would; one needing step-up for its amount alone, one paying with a
    /// saved card, one whose order changed meanwhile and one without the checkout rules wired go
    /// the separate way entirely.
    pub async fn create_and_confirm(
        &self,
        caller: Caller<'_>,
        input: NewIntent,
        extras: &ConfirmExtras,
    ) -> Result<IntentRecord, DomainError> {
        self.refuse_blocked_client(caller, &extras.client).await?;
        let (intent, info) = self.new_intent(caller, input).await?;
        let return_url_ok =
            extras.return_url.as_deref().is_none_or(|url| super::check_return_url(url, "/return_url").is_ok());
        // A saved card (`info` is of card tokens only) takes the separate way: its claim must
        // also claim the saved card's row (see `saved_cards`).
        let checkout = match self.checkout() {
            Ok(checkout)
                if return_url_ok
                    && info.is_some()
                    && !super::checkout::step_up_for_amount(&checkout.rules, &intent) =>
            {
                checkout
            }
            _ => return self.create_then_confirm(caller, intent, extras).await,
        };
        let (Some(token), Some(State::Authorizing)) =
            (intent.payment_method.clone(), state::next(intent.state, Event::Confirm))
        else {
            return self.create_then_confirm(caller, intent, extras).await;
        };
        let Some(processing) = state::event_type(Event::Confirm, State::Authorizing) else {
            return self.create_then_confirm(caller, intent, extras).await;
        };
        let space = (&intent.merchant, intent.mode);
        let (created_events, processing_subscribers) = futures::try_join!(
            self.ports.outbox.event_messages(
                Some(space.0),
                space.1,
                "payment_intent.created",
                event_data(&intent),
                false
            ),
            self.ports.outbox.subscribers(space.0, space.1, processing),
        )?;
        let settings = &checkout.rules.fraud;
        let check =
            settings.enabled.then(|| self.prepare_fraud_check(settings, &intent, info.as_ref(), &extras.client));
        let now = self.ports.clock.now();
        let attempt = intent.attempt.saturating_add(1);
        let call = GatewayCallRecord {
            idempotency_key: idempotency_key(&intent.id, "authorize", attempt),
            intent: intent.id.clone(),
            operation: "authorize",
            amount: intent.amount.minor(),
            at: now,
        };
        let plan = |counts: &[(SignalKind, WindowCounts)]| -> Result<ConfirmPlan, crate::StoreError> {
            let (fraud, outcome) = match &check {
                Some(check) => {
                    let (outcome, reasons) = check.judge(settings, counts);
                    (Some(super::checkout::fraud_decision(outcome, &reasons)), outcome)
                }
                None => (None, Outcome::Allow),
            };
            if outcome != Outcome::Allow {
                return Ok(ConfirmPlan { fraud, claim: None });
            }
            let mut claimed = intent.clone();
            claimed.state = State::Authorizing;
            claimed.attempt = attempt;
            claimed.last_payment_error = None;
            claimed.fraud = fraud.clone();
            claimed.updated_at = now;
            let events =
                self.ports.outbox.messages_to(&processing_subscribers, claimed.mode, processing, event_data(&claimed));
            Ok(ConfirmPlan { fraud, claim: Some(Claim { claimed, call: call.clone(), events }) })
        };
        let write = CreateAndConfirm {
            intent: &intent,
            created_events: &created_events,
            signals: check.as_ref().map(|check| (&check.signals, check.since)),
            lock_order: intent.order.as_deref().map(|order| (order, intent.amount.minor())),
        };
        let written = match checkout.repo.create_and_confirm(&write, &plan).await? {
            CreateAndConfirmOutcome::Written(written) => *written,
            // Nothing was written: the separate way records the attempt and answers 409.
            CreateAndConfirmOutcome::OrderChanged => return self.create_then_confirm(caller, intent, extras).await,
        };
        self.ports.outbox.wake().notify_one();
        let passed = written.fraud.as_ref().is_some_and(|d| d.outcome != Outcome::Block.as_str());
        // The card's detection counts and the audit entries are independent writes: they join
        // the same group commits rather than wait for each other's.
        let watched = async {
            if passed {
                self.watch_card(&intent, info.as_ref(), &extras.client).await;
            }
        };
        let mut entries = vec![caller.event("payment_intent.created", "payment_intent", &intent.id)];
        if let Some(decision) = &written.fraud {
            entries.push(super::checkout::fraud_checked_event(caller, &intent.id, decision));
        }
        if let Some(claim) = written.claim {
            // The claim recorded the authorisation: from here on a failure must not read as a
            // request that did nothing (see `DomainError::after_gateway_call`).
            entries.push(caller.event(state::audit_action(Event::Confirm), "payment_intent", &intent.id));
            let audited =
                futures::future::try_join_all(entries.into_iter().map(|entry| self.ports.audit.record(entry)));
            let ((), audited) = futures::join!(watched, audited);
            audited.map_err(|err| DomainError::from(err).after_gateway_call(&intent.id))?;
            let card = (token.as_str(), info.as_ref());
            return self
                .authorize_claimed(caller, claim.claimed, &claim.call, card, None, extras)
                .await
                .map_err(|err| err.after_gateway_call(&intent.id));
        }
        let audited = futures::future::try_join_all(entries.into_iter().map(|entry| self.ports.audit.record(entry)));
        let ((), audited) = futures::join!(watched, audited);
        audited?;
        // Blocked, or waiting for the customer's step-up: on as a separate confirmation would.
        let outcome = written.fraud.as_ref().and_then(|d| Outcome::parse(&d.outcome)).unwrap_or(Outcome::Block);
        let mut held = intent;
        held.fraud = written.fraud;
        match self.after_fraud_check(caller, checkout, held, outcome, extras).await? {
            Ok(checked) => self.claim_and_authorize(caller, checked, &token, None, extras).await,
            Err(blocked) => Ok(blocked),
        }
    }

    /// The separate way of [`Self::create_and_confirm`]: the intent is written as created, then
    /// confirmed as by its own request.
    async fn create_then_confirm(
        &self,
        caller: Caller<'_>,
        intent: IntentRecord,
        extras: &ConfirmExtras,
    ) -> Result<IntentRecord, DomainError> {
        let intent = self.store_new_intent(caller, intent).await?;
        self.confirm_with(caller, &intent.id, None, extras).await
    }

    /// Writes a new intent with its `payment_intent.created` event and records its audit entry.
    async fn store_new_intent(&self, caller: Caller<'_>, intent: IntentRecord) -> Result<IntentRecord, DomainError> {
        let events = self
            .ports
            .outbox
            .event_messages(Some(&intent.merchant), intent.mode, "payment_intent.created", event_data(&intent), false)
            .await?;
        self.ports.repo.insert_intent(&intent, &events).await?;
        self.ports.outbox.wake().notify_one();
        self.ports.audit.record(caller.event("payment_intent.created", "payment_intent", &intent.id)).await?;
        Ok(intent)
    }

    /// A new intent checked and made from the shop's input (not written yet), with what the
    /// vault says of its card.
    async fn new_intent(
        &self,
        caller: Caller<'_>,
        input: NewIntent,
    ) -> Result<(IntentRecord, Option<PaymentCardInfo>), DomainError> {
        let space = caller.principal.space();
        let minor = parse_amount(&input.amount, "/amount", 1)?;
        let currency = parse_currency(&input.currency, "/currency")?;
        let amount =
            Money::new(minor, currency).map_err(|_| reject("invalid_amount", "/amount", "must not be negative"))?;
        let capture_method = match input.capture_method.as_deref() {
            None => CaptureMethod::Automatic,
            Some(text) => CaptureMethod::parse(text)
                .ok_or_else(|| DomainError::invalid("/capture_method", "must be automatic or manual"))?,
        };
        let mut customer = input.customer.clone();
        if let Some(customer) = &customer {
            check_customer(customer, "/customer")?;
        }
        let description = input.description.clone().unwrap_or_default();
        check_text(&description, "/description", 500)?;
        let metadata = check_metadata(input.metadata.as_ref(), "/metadata")?;
        if let Some(order_id) = &input.order {
            let order = self.order_in(space, order_id).await.map_err(|err| match err {
                DomainError::NotFound => reject("order_not_found", "/order", "no order of this data space has this id"),
                other => other,
            })?;
            if order.locked_at.is_some() {
                return Err(DomainError::Conflict(
                    "order_locked",
                    "a payment on this order was confirmed already; the order cannot be paid or changed again",
                ));
            }
            if order.total != amount {
                return Err(reject(
                    "amount_does_not_match_order",
                    "/amount",
                    "amount and currency must equal the order's amount_total and currency",
                ));
            }
            if customer.is_none() {
                customer = order.customer.clone();
            }
        }
        let now = self.ports.clock.now();
        let card_on_file = saved_cards::plan(&input.card_on_file, customer.as_deref(), now)?;
        let (card, info) = match &input.payment_method {
            Some(method) if saved_cards::is_saved_card(method) => {
                let (card, saved) =
                    self.payment_method_for(caller, method, customer.as_deref(), "/payment_method").await?;
                saved_cards::check_against_card(card_on_file.as_ref(), saved.as_ref())?;
                (Some(card), None)
            }
            Some(token) => {
                let info = self.payment_card_for(caller, token, customer.as_deref(), "/payment_method").await?;
                saved_cards::check_against_card(card_on_file.as_ref(), None)?;
                (Some(CardSummary { brand: info.brand.clone(), last4: info.last4.clone() }), Some(info))
            }
            None => (None, None),
        };
        let intent = IntentRecord {
            id: IntentId::generate_at(self.ports.entropy.as_ref(), now.unix_millis()).to_string(),
            merchant: space.merchant.clone(),
            mode: space.mode,
            amount,
            order: input.order.clone(),
            customer,
            payment_method: input.payment_method.clone(),
            capture_method,
            state: if card.is_some() { State::RequiresConfirmation } else { State::RequiresPaymentMethod },
            attempt: 0,
            amount_capturable: 0,
            amount_received: 0,
            amount_refunded: 0,
            last_payment_error: None,
            next_action: None,
            fraud: None,
            card,
            gateway: self.ports.gateway.name().to_owned(),
            gateway_reference: None,
            description,
            metadata,
            cancellation_reason: None,
            canceled_at: None,
            created_at: now,
            updated_at: now,
            card_on_file,
        };
        Ok((intent, info))
    }

    /// One intent.
    pub async fn intent(&self, space: Space<'_>, id: &str) -> Result<IntentRecord, DomainError> {
        self.intent_in(space, id).await
    }

    /// Intents of the caller's space, newest first: `limit` of them and whether more follow.
    pub async fn intents(
        &self,
        space: Space<'_>,
        starting_after: Option<&str>,
        limit: Option<u32>,
    ) -> Result<(Vec<IntentRecord>, bool), DomainError> {
        let limit = super::page_limit(limit)?;
        super::check_cursor(starting_after, "pi")?;
        let page = Page { merchant: space.merchant, mode: space.mode, starting_after, limit: limit + 1 };
        let mut found = self.ports.repo.intents(page).await?;
        let more = found.len() > limit as usize;
        found.truncate(limit as usize);
        Ok((found, more))
    }

    /// Confirms an intent (attaching `payment_method` first when given): the one request that
    /// wins the move into `processing` asks the gateway for the authorisation; the answer moves
    /// the intent on (`succeeded`, `requires_capture`, `requires_action`, or back to
    /// `requires_payment_method` with `last_payment_error`). A gateway that does not answer
    /// leaves it `processing`.
    pub async fn confirm(
        &self,
        caller: Caller<'_>,
        id: &str,
        payment_method: Option<&str>,
        return_url: Option<&str>,
    ) -> Result<IntentRecord, DomainError> {
        let extras = ConfirmExtras { return_url: return_url.map(str::to_owned), ..ConfirmExtras::default() };
        self.confirm_with(caller, id, payment_method, &extras).await
    }

    /// [`Self::confirm`] with what the checkout rules look at: the customer's step-up proof and
    /// client. From `requires_confirmation` the fraud checks run first (a block answers the
    /// intent back in `requires_payment_method` without asking the gateway) and a large or
    /// suspicious payment needs the customer's step-up; the resumption after 3-D Secure
    /// (`requires_action`) keeps the decision its first confirmation got.
    pub async fn confirm_with(
        &self,
        caller: Caller<'_>,
        id: &str,
        payment_method: Option<&str>,
        extras: &ConfirmExtras,
    ) -> Result<IntentRecord, DomainError> {
        if let Some(url) = &extras.return_url {
            super::check_return_url(url, "/return_url")?;
        }
        self.refuse_blocked_client(caller, &extras.client).await?;
        let space = caller.principal.space();
        let mut intent = self.intent_in(space, id).await?;
        if !extras.card_on_file.is_empty() {
            if !matches!(intent.state, State::RequiresPaymentMethod | State::RequiresConfirmation) {
                return Err(unexpected(intent.state));
            }
            intent.card_on_file =
                saved_cards::plan(&extras.card_on_file, intent.customer.as_deref(), self.ports.clock.now())?;
        }
        if let Some(token) = payment_method {
            if state::next(intent.state, Event::AttachPaymentMethod).is_none() {
                return Err(unexpected(intent.state));
            }
            let (card, _) =
                self.payment_method_for(caller, token, intent.customer.as_deref(), "/payment_method").await?;
            let mut after = intent.clone();
            after.state = State::RequiresConfirmation;
            after.payment_method = Some(token.to_owned());
            after.card = Some(card);
            intent = self.apply(caller, &intent, after, Step::new(Event::AttachPaymentMethod)).await?;
        }
        if state::next(intent.state, Event::Confirm).is_none() {
            return Err(unexpected(intent.state));
        }
        let Some(payment_method) = intent.payment_method.clone() else {
            return Err(unexpected(intent.state));
        };
        let (token, saved) = self.resolve_payment_method(&intent, &payment_method).await?;
        saved_cards::check_against_card(intent.card_on_file.as_ref(), saved.as_ref())?;
        if intent.state == State::RequiresConfirmation {
            intent = match self.check_before_authorising(caller, intent, &token, extras).await? {
                Ok(checked) => checked,
                Err(blocked) => return Ok(blocked),
            };
        }
        self.claim_and_authorize(caller, intent, &token, saved.as_ref(), extras).await
    }

    /// Claims a checked intent into `processing` (recording the authorisation about to be asked
    /// for, and locking its order) and asks the gateway, as the winner of the claim.
    pub(super) async fn claim_and_authorize(
        &self,
        caller: Caller<'_>,
        intent: IntentRecord,
        token: &str,
        saved: Option<&SavedCardRecord>,
        extras: &ConfirmExtras,
    ) -> Result<IntentRecord, DomainError> {
        let attempt = intent.attempt.saturating_add(1);
        let call = GatewayCallRecord {
            idempotency_key: idempotency_key(&intent.id, "authorize", attempt),
            intent: intent.id.clone(),
            operation: "authorize",
            amount: intent.amount.minor(),
            at: self.ports.clock.now(),
        };
        let mut after = intent.clone();
        after.state = State::Authorizing;
        after.attempt = attempt;
        after.last_payment_error = None;
        let step = Step {
            call: Some(&call),
            lock_order: intent.order.as_deref().map(|order| (order, intent.amount.minor())),
            use_saved_card: saved.map(|card| card.id.as_str()),
            ..Step::new(Event::Confirm)
        };
        let claimed = self.apply(caller, &intent, after, step).await?;
        self.authorize_claimed(caller, claimed, &call, (token, None), saved, extras)
            .await
            .map_err(|err| err.after_gateway_call(&intent.id))
    }

    /// Asks the gateway for the authorisation recorded as `call` of an intent this request has
    /// just claimed, and settles the intent by the answer. `(token, read)`: the card token, and
    /// what the vault said of it earlier in this request, if it was asked.
    async fn authorize_claimed(
        &self,
        caller: Caller<'_>,
        claimed: IntentRecord,
        call: &GatewayCallRecord,
        (token, read): (&str, Option<&PaymentCardInfo>),
        saved: Option<&SavedCardRecord>,
        extras: &ConfirmExtras,
    ) -> Result<IntentRecord, DomainError> {
        // Only the winner of the claim opens the card (and so uses up its CVC).
        let card = match self.ports.vault.card_for_gateway(caller.principal, caller.source, token, read).await {
            Ok(card) => card,
            Err(DomainError::NotFound | DomainError::Gone) => {
                let error = PaymentError::of(
                    "payment_method_unusable",
                    None,
                    "the card token was deleted, expired or erased; attach another card",
                );
                let answer = GatewayAnswer { error: Some(error), ..GatewayAnswer::of(GatewayStatus::Declined, "") };
                return self.settle_authorization(caller, &claimed, &call.idempotency_key, answer).await;
            }
            Err(other) => return Err(other),
        };
        let request = AuthorizeRequest {
            idempotency_key: call.idempotency_key.clone(),
            reference: claimed.id.clone(),
            amount: claimed.amount,
            capture: claimed.capture_method == CaptureMethod::Automatic,
            card,
            gateway_reference: claimed.gateway_reference.clone(),
            stored_credential: saved_cards::stored_credential(&claimed, saved),
        };
        match self.call_gateway(self.ports.gateway.authorize(request)).await {
            Some(mut answer) => {
                if let (Some(action), Some(url)) = (answer.next_action.as_mut(), &extras.return_url) {
                    action.return_url = Some(url.clone());
                }
                let status = answer.status;
                // A resumption after 3-D Secure confirmed without the client: the client the
                // checked attempt recorded.
                let unnamed = extras.client.ip.is_none() && extras.client.device.is_none();
                let resumed = claimed.gateway_reference.is_some();
                let client = if unnamed && resumed { None } else { Some(&extras.client) };
                // The gateway's answer is counted for the decline ratio while it is recorded (two
                // independent writes, in the same group commits): it was given either way.
                let (settled, ()) = futures::join!(
                    self.settle_authorization(caller, &claimed, &call.idempotency_key, answer),
                    self.watch_authorization(&claimed, status, client),
                );
                settled
            }
            None => Ok(claimed),
        }
    }

    /// Waits for a gateway call at most the configured time; `None` when it did not answer.
    pub(crate) async fn call_gateway(
        &self,
        call: impl std::future::Future<Output = Result<GatewayAnswer, GatewayError>>,
    ) -> Option<GatewayAnswer> {
        match tokio::time::timeout(self.settings.gateway_timeout, call).await {
            Ok(Ok(answer)) => Some(answer),
            Ok(Err(err)) => {
                tracing::warn!(error = %err, "a gateway call got no answer; the payment stays processing");
                None
            }
            Err(_) => {
                tracing::warn!("a gateway call timed out; the payment stays processing");
                None
            }
        }
    }

    /// Moves an authorising intent by the gateway's answer (to the call recorded under `key`).
    pub(super) async fn settle_authorization(
        &self,
        actor: impl Into<Actor<'_>> + Send,
        claimed: &IntentRecord,
        key: &str,
        answer: GatewayAnswer,
    ) -> Result<IntentRecord, DomainError> {
        let Some(event) = authorization_event(answer.status) else { return Ok(claimed.clone()) };
        let Some(to) = state::next(claimed.state, event) else { return Err(unexpected(claimed.state)) };
        let mut after = claimed.clone();
        after.state = to;
        if !answer.gateway_reference.is_empty() {
            after.gateway_reference = Some(answer.gateway_reference.clone());
        }
        let mut to_save = None;
        if let Event::Authorized { .. } = event {
            if let Some(network_id) = &answer.network_transaction_id {
                after.card_on_file.get_or_insert_with(Default::default).network_transaction_id =
                    Some(network_id.clone());
            }
            to_save = self.card_to_save(&after, &answer);
            if let (Some(card), Some(plan)) = (&to_save, after.card_on_file.as_mut()) {
                plan.saved_card = Some(card.id.clone());
            }
        }
        match event {
            Event::Authorized { captured: true } => {
                after.amount_received = claimed.amount.minor();
                after.amount_capturable = 0;
            }
            Event::Authorized { captured: false } => {
                after.amount_capturable = claimed.amount.minor();
            }
            Event::ActionRequired => {
                // The shop sends the customer to strongroom's hand-off page, which leads to the
                // gateway's; the shop's return page is kept from an earlier challenge if the
                // answer names none.
                after.next_action = answer.next_action.clone().map(|mut action| {
                    action.handoff_url =
                        Some(format!("{}/pay/authenticate/{}", self.settings.pages_origin, claimed.id));
                    if action.return_url.is_none() {
                        action.return_url = claimed.next_action.as_ref().and_then(|a| a.return_url.clone());
                    }
                    action
                });
            }
            _ => {
                // Declined: the card is detached, as Stripe does; a new one must be attached.
                after.last_payment_error = Some(answer.error.clone().unwrap_or_else(|| {
                    PaymentError::of("card_declined", Some("generic_decline"), "the card was declined")
                }));
                after.payment_method = None;
            }
        }
        let outcome = gateway_outcome(answer.status);
        let step = Step { answered: Some((key, outcome)), save_card: to_save.as_ref(), ..Step::new(event) };
        let settled = self.apply(actor, claimed, after, step).await;
        match (&settled, event) {
            (Ok(_), Event::Declined) => self.count_decline(claimed).await,
            (Ok(paid), Event::Authorized { captured: true }) => self.send_receipt(paid).await,
            _ => {}
        }
        self.settled_or_stored(&claimed.id, settled).await
    }

    /// `settled`, or the intent as stored when the settle was refused because the gateway's
    /// webhook, reconciliation or a second node settled it first: the outcome is recorded
    /// either way, so the request shows it rather than a conflict.
    async fn settled_or_stored(
        &self,
        id: &str,
        settled: Result<IntentRecord, DomainError>,
    ) -> Result<IntentRecord, DomainError> {
        match settled {
            Err(DomainError::UnexpectedState { .. }) => self.ports.repo.intent(id).await?.ok_or(DomainError::NotFound),
            other => other,
        }
    }

    /// Captures `amount` (default: all that is capturable) of an authorised intent.
    pub async fn capture(
        &self,
        caller: Caller<'_>,
        id: &str,
        amount_to_capture: Option<&Value>,
    ) -> Result<IntentRecord, DomainError> {
        let intent = self.intent_in(caller.principal.space(), id).await?;
        if state::next(intent.state, Event::Capture).is_none() {
            return Err(unexpected(intent.state));
        }
        let amount = match amount_to_capture {
            Some(value) => parse_amount(value, "/amount_to_capture", 1)?,
            None => intent.amount_capturable,
        };
        if amount > intent.amount_capturable {
            return Err(reject(
                "amount_too_large",
                "/amount_to_capture",
                "must be at most the intent's amount_capturable",
            ));
        }
        let amount = Money::new(amount, intent.amount.currency())
            .map_err(|_| reject("invalid_amount", "/amount_to_capture", "must not be negative"))?;
        let attempt = intent.attempt.saturating_add(1);
        let call = GatewayCallRecord {
            idempotency_key: idempotency_key(&intent.id, "capture", attempt),
            intent: intent.id.clone(),
            operation: "capture",
            amount: amount.minor(),
            at: self.ports.clock.now(),
        };
        let mut after = intent.clone();
        after.state = State::Capturing;
        after.attempt = attempt;
        let claimed =
            self.apply(caller, &intent, after, Step { call: Some(&call), ..Step::new(Event::Capture) }).await?;
        let request = FollowUpRequest {
            idempotency_key: call.idempotency_key.clone(),
            reference: claimed.id.clone(),
            gateway_reference: claimed.gateway_reference.clone().unwrap_or_default(),
            amount,
        };
        let Some(answer) = self.call_gateway(self.ports.gateway.capture(&request)).await else { return Ok(claimed) };
        self.settle_capture(caller, &claimed, &call.idempotency_key, amount.minor(), answer)
            .await
            .map_err(|err| err.after_gateway_call(&claimed.id))
    }

    /// Moves a capturing intent by the gateway's answer to the capture of `amount` recorded
    /// under `key`; an answer that settles nothing yet leaves it `processing`.
    pub(super) async fn settle_capture(
        &self,
        actor: impl Into<Actor<'_>> + Send,
        claimed: &IntentRecord,
        key: &str,
        amount: i64,
        answer: GatewayAnswer,
    ) -> Result<IntentRecord, DomainError> {
        let Some(event) = capture_event(answer.status) else { return Ok(claimed.clone()) };
        let Some(to) = state::next(claimed.state, event) else { return Err(unexpected(claimed.state)) };
        let mut after = claimed.clone();
        after.state = to;
        if event == Event::Captured {
            after.amount_received = amount;
            after.amount_capturable = 0;
        } else {
            after.last_payment_error = answer.error.clone();
        }
        let step = Step { answered: Some((key, gateway_outcome(answer.status))), ..Step::new(event) };
        let captured = self.apply(actor, claimed, after, step).await;
        if let (Ok(captured), Event::Captured) = (&captured, event) {
            self.send_receipt(captured).await;
        }
        self.settled_or_stored(&claimed.id, captured).await
    }

    /// Cancels an intent: at once before authorisation; an authorised one is voided at the
    /// gateway first.
    pub async fn cancel(
        &self,
        caller: Caller<'_>,
        id: &str,
        reason: Option<&str>,
    ) -> Result<IntentRecord, DomainError> {
        if let Some(reason) = reason
            && !CANCELLATION_REASONS.contains(&reason)
        {
            return Err(DomainError::invalid(
                "/cancellation_reason",
                "must be duplicate, fraudulent, requested_by_customer or abandoned",
            ));
        }
        let intent = self.intent_in(caller.principal.space(), id).await?;
        let now = self.ports.clock.now();
        let mut after = intent.clone();
        after.cancellation_reason = reason.map(str::to_owned);
        match state::next(intent.state, Event::Cancel) {
            Some(State::Canceled) => {
                after.state = State::Canceled;
                after.canceled_at = Some(now);
                after.next_action = None;
                self.apply(caller, &intent, after, Step::new(Event::Cancel)).await
            }
            Some(State::Voiding) => {
                let attempt = intent.attempt.saturating_add(1);
                let call = GatewayCallRecord {
                    idempotency_key: idempotency_key(&intent.id, "cancel", attempt),
                    intent: intent.id.clone(),
                    operation: "cancel",
                    amount: intent.amount_capturable,
                    at: now,
                };
                after.state = State::Voiding;
                after.attempt = attempt;
                let step = Step { call: Some(&call), ..Step::new(Event::Cancel) };
                let claimed = self.apply(caller, &intent, after, step).await?;
                let request = FollowUpRequest {
                    idempotency_key: call.idempotency_key.clone(),
                    reference: claimed.id.clone(),
                    gateway_reference: claimed.gateway_reference.clone().unwrap_or_default(),
                    amount: Money::new(claimed.amount_capturable, claimed.amount.currency())
                        .unwrap_or(Money::zero(claimed.amount.currency())),
                };
                let Some(answer) = self.call_gateway(self.ports.gateway.cancel(&request)).await else {
                    return Ok(claimed);
                };
                self.settle_void(caller, &claimed, &call.idempotency_key, answer)
                    .await
                    .map_err(|err| err.after_gateway_call(&claimed.id))
            }
            _ => Err(unexpected(intent.state)),
        }
    }

    /// Moves a voiding intent by the gateway's answer to the void recorded under `key`.
    pub(super) async fn settle_void(
        &self,
        actor: impl Into<Actor<'_>> + Send,
        claimed: &IntentRecord,
        key: &str,
        answer: GatewayAnswer,
    ) -> Result<IntentRecord, DomainError> {
        let Some(event) = void_event(answer.status) else { return Ok(claimed.clone()) };
        let Some(to) = state::next(claimed.state, event) else { return Err(unexpected(claimed.state)) };
        let mut after = claimed.clone();
        after.state = to;
        if to == State::Canceled {
            after.amount_capturable = 0;
            after.canceled_at = Some(self.ports.clock.now());
        } else {
            after.cancellation_reason = None;
        }
        let step = Step { answered: Some((key, gateway_outcome(answer.status))), ..Step::new(event) };
        let voided = self.apply(actor, claimed, after, step).await;
        self.settled_or_stored(&claimed.id, voided).await
    }

    /// Passes or fails the sandbox's 3-D Secure challenge of an intent in `requires_action`
    /// (what the customer does at the issuer's page). The intent itself moves only when the shop
    /// confirms again and the gateway reports the outcome.
    pub async fn complete_sandbox_challenge(
        &self,
        caller: Caller<'_>,
        id: &str,
        passed: bool,
    ) -> Result<IntentRecord, DomainError> {
        let intent = self.intent_in(caller.principal.space(), id).await?;
        let (State::RequiresAction, Some(action)) = (intent.state, &intent.next_action) else {
            return Err(unexpected(intent.state));
        };
        let Some(simulator) = &self.ports.simulator else {
            return Err(DomainError::Conflict(
                "sandbox_only",
                "challenges can be completed by API only with the sandbox gateway",
            ));
        };
        let done = simulator.complete(&action.challenge, passed).await.map_err(|err| {
            DomainError::Store(crate::StoreError::Unavailable(format!("the sandbox did not answer: {err}")))
        })?;
        if !done {
            return Err(DomainError::Conflict("challenge_not_pending", "the challenge was completed already"));
        }
        let action = if passed { "payment_intent.challenge_passed" } else { "payment_intent.challenge_failed" };
        self.ports.audit.record(caller.event(action, "payment_intent", &intent.id)).await?;
        Ok(intent)
    }
}
