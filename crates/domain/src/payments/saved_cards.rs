//! Saved cards (stored credentials): a customer agrees at checkout to keep their card
//! (`setup_future_usage` with the words they agreed to, recorded with the time, address and
//! browser); the card is saved when that first payment is authorised, with the card network's
//! transaction id of it. Later payments name the saved card (`pm_…`): with the customer present
//! (customer-initiated), or started by the shop without them (`off_session`, merchant-initiated,
//! allowed only for a card saved for `off_session` use), and the gateway is told which, with the
//! first payment's network transaction id. Removing a saved card (by the shop, by the customer,
//! or with the customer's erasure) is one conditional update that also deletes its vault token:
//! a payment claims the card by a conditional update of the same row, so no payment starts after
//! a removal has answered.
//! Must never: save a card without a recorded consent or for no customer, let one customer pay
//! with another's saved card, charge a card saved for `on_session` use without the customer, or
//! show the vault token behind a saved card.

use std::net::IpAddr;

use serde_json::{Value, json};
use strongroom_types::define_id;

use super::gateway::{GatewayAnswer, StoredCredential};
use super::{Caller, PaymentsService, check_text, reject};
use crate::audit::event::{ActorKind, AuditEvent, Outcome};
use crate::error::DomainError;
use crate::identity::CustomerSession;
use crate::modes::Space;
use crate::ports::payments::{
    CardConsent, CardOnFile, FutureUsage, IntentRecord, MitReason, Page, SaveCard, SavedCardRecord,
};
use crate::vault::tokens::Source;

define_id!(SavedCardId, SavedCardKind, "pm");

/// Longest consent text, in characters.
pub const MAX_CONSENT_TEXT: usize = 1000;

/// The customer's agreement as the shop sends it.
#[derive(Debug, Clone, Default)]
pub struct ConsentInput {
    /// The words the customer agreed to.
    pub text: String,
    /// The customer's address, as the shop saw it.
    pub ip_address: Option<String>,
    /// The customer's browser, as the shop saw it.
    pub user_agent: Option<String>,
}

/// The card-on-file fields of a new intent or a confirmation, as the shop sends them.
#[derive(Debug, Clone, Default)]
pub struct CardOnFileInput {
    /// `on_session` or `off_session`: save the card once this payment is authorised.
    pub setup_future_usage: Option<String>,
    /// The customer's agreement (required with `setup_future_usage`).
    pub consent: Option<ConsentInput>,
    /// A payment the shop makes without the customer, with a saved card.
    pub off_session: Option<bool>,
    /// With `off_session`: `recurring`, `installment` or `unscheduled` (the default).
    pub mit_reason: Option<String>,
}

impl CardOnFileInput {
    /// Whether nothing was sent.
    pub fn is_empty(&self) -> bool {
        self.setup_future_usage.is_none()
            && self.consent.is_none()
            && self.off_session.is_none()
            && self.mit_reason.is_none()
    }
}

/// Whether a payment method names a saved card (`pm_…`) rather than a card token.
pub fn is_saved_card(payment_method: &str) -> bool {
    payment_method.starts_with("pm_")
}

/// The webhook data of a saved card: ids, the card as it may be shown, its use and status.
fn event_data(card: &SavedCardRecord) -> Value {
    json!({
        "object": "saved_card",
        "id": card.id,
        "customer": card.customer,
        "card": {"brand": card.card.brand, "last4": card.card.last4},
        "usage": card.usage.as_str(),
        "status": card.status,
        "first_payment_intent": card.first_payment_intent,
    })
}

/// Checks the card-on-file fields on their own (not yet against the card) and turns them into
/// what the intent keeps. `None`: nothing asked.
pub(crate) fn plan(
    input: &CardOnFileInput,
    customer: Option<&str>,
    now: strongroom_types::Timestamp,
) -> Result<Option<CardOnFile>, DomainError> {
    if input.is_empty() {
        return Ok(None);
    }
    let off_session = input.off_session.unwrap_or(false);
    if input.mit_reason.is_some() && !off_session {
        return Err(DomainError::invalid("/mit_reason", "is taken only with off_session: true"));
    }
    let merchant_initiated = if off_session {
        Some(match input.mit_reason.as_deref() {
            None => MitReason::Unscheduled,
            Some(text) => MitReason::parse(text)
                .ok_or_else(|| DomainError::invalid("/mit_reason", "must be recurring, installment or unscheduled"))?,
        })
    } else {
        None
    };
    let save = match input.setup_future_usage.as_deref() {
        None => {
            if input.consent.is_some() {
                return Err(DomainError::invalid("/consent", "is taken only with setup_future_usage"));
            }
            None
        }
        Some(text) => {
            let usage = FutureUsage::parse(text)
                .ok_or_else(|| DomainError::invalid("/setup_future_usage", "must be on_session or off_session"))?;
            if off_session {
                return Err(DomainError::invalid(
                    "/off_session",
                    "a payment that saves a card is made with the customer present; leave off_session out",
                ));
            }
            if customer.is_none() {
                return Err(reject(
                    "customer_required",
                    "/customer",
                    "a card is saved for a customer: give the payment intent's customer",
                ));
            }
            let Some(consent) = &input.consent else {
                return Err(reject(
                    "consent_required",
                    "/consent",
                    "saving a card needs the customer's agreement: send consent.text, the words they agreed to",
                ));
            };
            Some(SaveCard { usage, consent: check_consent(consent, now)? })
        }
    };
    Ok(Some(CardOnFile { save, saved_card: None, merchant_initiated, network_transaction_id: None }))
}

fn check_consent(input: &ConsentInput, now: strongroom_types::Timestamp) -> Result<CardConsent, DomainError> {
    let text = input.text.trim();
    if text.is_empty() {
        return Err(reject("consent_required", "/consent/text", "must be the words the customer agreed to"));
    }
    check_text(text, "/consent/text", MAX_CONSENT_TEXT)?;
    let ip_address = match input.ip_address.as_deref() {
        None => None,
        Some(ip) => Some(
            ip.parse::<IpAddr>()
                .map_err(|_| DomainError::invalid("/consent/ip_address", "must be an IPv4 or IPv6 address"))?
                .to_string(),
        ),
    };
    if let Some(agent) = &input.user_agent {
        check_text(agent, "/consent/user_agent", 500)?;
    }
    Ok(CardConsent { text: text.to_owned(), accepted_at: now, ip_address, user_agent: input.user_agent.clone() })
}

/// Checks the card-on-file plan against the payment method: a card is saved from a card token,
/// a payment without the customer needs a card saved for that.
pub(crate) fn check_against_card(
    plan: Option<&CardOnFile>,
    saved: Option<&SavedCardRecord>,
) -> Result<(), DomainError> {
    let Some(plan) = plan else { return Ok(()) };
    if plan.save.is_some() && plan.saved_card.is_none() && saved.is_some() {
        return Err(DomainError::invalid(
            "/setup_future_usage",
            "the payment method is a saved card already; setup_future_usage is for a card token (tok_…)",
        ));
    }
    if plan.merchant_initiated.is_some() {
        match saved {
            None => {
                return Err(reject(
                    "saved_card_required",
                    "/payment_method",
                    "a payment without the customer (off_session) needs a saved card (pm_…)",
                ));
            }
            Some(card) if card.usage != FutureUsage::OffSession => {
                return Err(reject(
                    "saved_card_not_for_off_session",
                    "/payment_method",
                    "the customer saved this card for payments they make themselves (usage on_session); it cannot \
                     be charged without them",
                ));
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// What the gateway is told of a stored card for this payment.
pub(crate) fn stored_credential(intent: &IntentRecord, saved: Option<&SavedCardRecord>) -> Option<StoredCredential> {
    let plan = intent.card_on_file.as_ref();
    if let Some(save) = plan.and_then(|p| p.save.as_ref()) {
        return Some(StoredCredential::First(save.usage));
    }
    let card = saved?;
    let network_transaction_id = card.network_transaction_id.clone();
    let stored_method = card.stored_method.clone();
    Some(match plan.and_then(|p| p.merchant_initiated) {
        Some(reason) => StoredCredential::MerchantInitiated { reason, network_transaction_id, stored_method },
        None => StoredCredential::CustomerInitiated { network_transaction_id, stored_method },
    })
}

impl PaymentsService {
    /// A saved card of the space; another merchant's or mode's answers as a missing one.
    pub(crate) async fn saved_card_in(&self, space: Space<'_>, id: &str) -> Result<SavedCardRecord, DomainError> {
        if !super::plausible_id(id, "pm") {
            return Err(DomainError::NotFound);
        }
        match self.ports.repo.saved_card(id).await? {
            Some(card) if space.holds(&card.merchant, card.mode) => Ok(card),
            _ => Err(DomainError::NotFound),
        }
    }

    /// The saved card an intent of `customer` would pay with: active, of the space, and of this
    /// customer.
    pub(crate) async fn usable_saved_card(
        &self,
        space: Space<'_>,
        id: &str,
        customer: Option<&str>,
        pointer: &str,
    ) -> Result<SavedCardRecord, DomainError> {
        let card = self.saved_card_in(space, id).await.map_err(|err| match err {
            DomainError::NotFound => {
                reject("payment_method_not_found", pointer, "no saved card of this data space has this id")
            }
            other => other,
        })?;
        if card.status != "active" {
            return Err(reject("saved_card_removed", pointer, "the saved card was removed; use another card"));
        }
        if Some(card.customer.as_str()) != customer {
            return Err(reject(
                "payment_method_customer_mismatch",
                pointer,
                "the saved card belongs to another customer than the payment intent's",
            ));
        }
        Ok(card)
    }

    /// The vault token an intent's payment method stands for, and the saved card if it is one.
    pub(crate) async fn resolve_payment_method(
        &self,
        intent: &IntentRecord,
        payment_method: &str,
    ) -> Result<(String, Option<SavedCardRecord>), DomainError> {
        if !is_saved_card(payment_method) {
            return Ok((payment_method.to_owned(), None));
        }
        let space = Space { merchant: &intent.merchant, mode: intent.mode };
        let card = self.usable_saved_card(space, payment_method, intent.customer.as_deref(), "/payment_method").await?;
        Ok((card.token.clone(), Some(card)))
    }

    /// The card an authorised first payment saves (once: the intent then names it).
    pub(crate) fn card_to_save(&self, intent: &IntentRecord, answer: &GatewayAnswer) -> Option<SavedCardRecord> {
        let plan = intent.card_on_file.as_ref()?;
        let save = plan.save.as_ref()?;
        if plan.saved_card.is_some() {
            return None;
        }
        let customer = intent.customer.clone()?;
        let token = intent.payment_method.clone().filter(|pm| !is_saved_card(pm))?;
        let card = intent.card.clone()?;
        let now = self.ports.clock.now();
        Some(SavedCardRecord {
            id: SavedCardId::generate_at(self.ports.entropy.as_ref(), now.unix_millis()).to_string(),
            merchant: intent.merchant.clone(),
            mode: intent.mode,
            customer,
            token,
            card,
            usage: save.usage,
            consent: save.consent.clone(),
            network_transaction_id: answer.network_transaction_id.clone(),
            stored_method: answer.stored_method.clone(),
            first_payment_intent: intent.id.clone(),
            status: "active".to_owned(),
            last_used_at: None,
            created_at: now,
            removed_at: None,
            removed_by: None,
        })
    }

    /// The `saved_card.created` message of a card about to be saved.
    pub(crate) async fn saved_card_events(
        &self,
        card: &SavedCardRecord,
        event_type: &'static str,
    ) -> Result<Vec<crate::outbox::OutboxMessage>, DomainError> {
        self.ports.outbox.event_messages(Some(&card.merchant), card.mode, event_type, event_data(card), false).await
    }

    /// One saved card of the caller's space.
    pub async fn saved_card(&self, space: Space<'_>, id: &str) -> Result<SavedCardRecord, DomainError> {
        self.saved_card_in(space, id).await
    }

    /// Saved cards of the caller's space (of one customer when given; removed ones too, unless
    /// `active_only`), newest first: `limit` of them and whether more follow.
    pub async fn saved_cards(
        &self,
        space: Space<'_>,
        customer: Option<&str>,
        active_only: bool,
        starting_after: Option<&str>,
        limit: Option<u32>,
    ) -> Result<(Vec<SavedCardRecord>, bool), DomainError> {
        let limit = super::page_limit(limit)?;
        super::check_cursor(starting_after, "pm")?;
        if let Some(customer) = customer {
            super::check_customer(customer, "/customer")?;
        }
        let page = Page { merchant: space.merchant, mode: space.mode, starting_after, limit: limit + 1 };
        let mut found = self.ports.repo.saved_cards(page, customer, active_only).await?;
        let more = found.len() > limit as usize;
        found.truncate(limit as usize);
        Ok((found, more))
    }

    /// Removes a saved card for the shop: at once, with its vault token.
    pub async fn remove_saved_card(&self, caller: Caller<'_>, id: &str) -> Result<SavedCardRecord, DomainError> {
        let card = self.saved_card_in(caller.principal.space(), id).await?;
        let event = caller.event("saved_card.removed", "saved_card", &card.id);
        self.remove(card, "merchant", event).await
    }

    /// The signed-in customer's own active saved cards, newest first.
    pub async fn customer_saved_cards(
        &self,
        session: &CustomerSession,
        starting_after: Option<&str>,
        limit: Option<u32>,
    ) -> Result<(Vec<SavedCardRecord>, bool), DomainError> {
        self.saved_cards(session.space(), Some(&session.customer_id), true, starting_after, limit).await
    }

    /// Removes one of the signed-in customer's saved cards (another customer's answers as a
    /// missing one).
    pub async fn remove_customer_saved_card(
        &self,
        session: &CustomerSession,
        source: &Source,
        id: &str,
    ) -> Result<SavedCardRecord, DomainError> {
        let card = self.saved_card_in(session.space(), id).await?;
        if card.customer != session.customer_id {
            return Err(DomainError::NotFound);
        }
        let event = AuditEvent::by(
            ActorKind::Customer,
            Some(session.customer_id.clone()),
            "saved_card.removed",
            Outcome::Success,
        )
        .for_merchant(&session.merchant_id)
        .in_mode(session.mode)
        .from_source(source.ip, source.request_id.clone())
        .on("saved_card", &card.id);
        self.remove(card, "customer", event).await
    }

    /// The one conditional removal: of concurrent removals one wins, the others answer 404.
    async fn remove(
        &self,
        mut card: SavedCardRecord,
        by: &'static str,
        audit: AuditEvent,
    ) -> Result<SavedCardRecord, DomainError> {
        if card.status != "active" {
            return Err(DomainError::NotFound);
        }
        let now = self.ports.clock.now();
        card.status = "removed".to_owned();
        card.removed_at = Some(now);
        card.removed_by = Some(by.to_owned());
        let events = self.saved_card_events(&card, "saved_card.removed").await?;
        if !self.ports.repo.remove_saved_card(&card, now, by, &events).await? {
            return Err(DomainError::NotFound);
        }
        self.ports.vault.forget_cvc(&card.token);
        self.ports.outbox.wake().notify_one();
        self.ports.audit.record(audit).await?;
        Ok(card)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strongroom_types::Timestamp;

    fn consent() -> ConsentInput {
        ConsentInput {
            text: "Keep my card for next time".into(),
            ip_address: Some("203.0.113.9".into()),
            user_agent: None,
        }
    }

    fn code(err: DomainError) -> String {
        match err {
            DomainError::Rejected { code, errors } => format!("{code} {}", errors[0].pointer),
            DomainError::Validation(errors) => format!("validation_failed {}", errors[0].pointer),
            other => format!("{other:?}"),
        }
    }

    #[test]
    fn saving_needs_a_customer_and_consent() {
        let now = Timestamp::from_unix_millis(1);
        let save = CardOnFileInput { setup_future_usage: Some("off_session".into()), ..Default::default() };
        assert_eq!(code(plan(&save, None, now).unwrap_err()), "customer_required /customer");
        assert_eq!(code(plan(&save, Some("cus_1"), now).unwrap_err()), "consent_required /consent");
        let with = CardOnFileInput { consent: Some(consent()), ..save.clone() };
        let planned = plan(&with, Some("cus_1"), now).unwrap().unwrap();
        let kept = planned.save.unwrap();
        assert_eq!((kept.usage, kept.consent.accepted_at), (FutureUsage::OffSession, now));
        let blank = CardOnFileInput { consent: Some(ConsentInput { text: "  ".into(), ..consent() }), ..save.clone() };
        assert_eq!(code(plan(&blank, Some("cus_1"), now).unwrap_err()), "consent_required /consent/text");
        let bad_ip =
            CardOnFileInput { consent: Some(ConsentInput { ip_address: Some("x".into()), ..consent() }), ..save };
        assert_eq!(code(plan(&bad_ip, Some("cus_1"), now).unwrap_err()), "validation_failed /consent/ip_address");
    }

    #[test]
    fn off_session_rules() {
        let now = Timestamp::from_unix_millis(1);
        let reason_alone = CardOnFileInput { mit_reason: Some("recurring".into()), ..Default::default() };
        assert_eq!(code(plan(&reason_alone, None, now).unwrap_err()), "validation_failed /mit_reason");
        let both = CardOnFileInput {
            setup_future_usage: Some("on_session".into()),
            consent: Some(consent()),
            off_session: Some(true),
            mit_reason: None,
        };
        assert_eq!(code(plan(&both, Some("c"), now).unwrap_err()), "validation_failed /off_session");
        let mit = CardOnFileInput { off_session: Some(true), ..Default::default() };
        let planned = plan(&mit, None, now).unwrap().unwrap();
        assert_eq!(planned.merchant_initiated, Some(MitReason::Unscheduled));
        assert_eq!(code(check_against_card(Some(&planned), None).unwrap_err()), "saved_card_required /payment_method");
        let consent_alone = CardOnFileInput { consent: Some(consent()), ..Default::default() };
        assert_eq!(code(plan(&consent_alone, Some("c"), now).unwrap_err()), "validation_failed /consent");
    }
}
