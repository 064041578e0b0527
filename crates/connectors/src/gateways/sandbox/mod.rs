//! The sandbox gateway: built in, the default, deterministic by test card number ([`cards`]),
//! with a configurable latency, so a whole checkout runs in development with no network.
//!
//! Its ledger is durable and countable (`sandbox_ledger`, one row per idempotency key): a call
//! whose key is recorded already answers what the first one did and changes nothing, so a test
//! can prove that no authorisation, capture or refund happened twice. 3-D Secure is simulated by
//! challenges (`sandbox_challenges`, at most one open per payment) that pass or fail through
//! [`ChallengeSimulator`]. Like a card network, it issues a network transaction id for each
//! approved authorisation and declines a merchant-initiated payment that names none it issued,
//! and a card that needs 3-D Secure when the customer is not there (`authentication_required`).
//! Must never: keep, log or answer with a card number or CVC (it looks at the number only to pick
//! the test card's behaviour), or act twice on one idempotency key.

pub mod cards;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sha2::{Digest, Sha256};
use strongroom_domain::StoreError;
use strongroom_domain::payments::gateway::{
    AuthorizeRequest, ChallengeSimulator, FollowUpRequest, Gateway, GatewayAnswer, GatewayError, GatewayStatus,
    LookupRequest, ResumeRequest, StoredCredential,
};
use strongroom_domain::ports::payments::{LedgerEntry, NextAction, PaymentError, SandboxChallenge, SandboxLedger};
use strongroom_types::{Clock, Money};

use cards::Behaviour;

/// Settings of the sandbox.
#[derive(Debug, Clone)]
pub struct SandboxSettings {
    /// How long each call takes.
    pub latency: Duration,
    /// Where challenge pages are (`<base>/<challenge id>`).
    pub challenge_base: String,
}

impl Default for SandboxSettings {
    fn default() -> Self {
        Self { latency: Duration::ZERO, challenge_base: "/sandbox/challenges".into() }
    }
}

/// The sandbox gateway.
#[derive(Debug, Clone)]
pub struct SandboxGateway {
    ledger: Arc<dyn SandboxLedger>,
    clock: Arc<dyn Clock>,
    settings: SandboxSettings,
}

fn digest(parts: &[&str]) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part.as_bytes());
        hasher.update([0]);
    }
    hasher.finalize().iter().take(12).map(|b| format!("{b:02x}")).collect()
}

fn unavailable(err: StoreError) -> GatewayError {
    GatewayError::Unavailable(format!("sandbox ledger: {err}"))
}

impl SandboxGateway {
    /// A sandbox over `ledger`.
    pub fn new(ledger: Arc<dyn SandboxLedger>, clock: Arc<dyn Clock>, settings: SandboxSettings) -> Self {
        Self { ledger, clock, settings }
    }

    async fn wait(&self) {
        if !self.settings.latency.is_zero() {
            tokio::time::sleep(self.settings.latency).await;
        }
    }

    fn challenge_id(key: &str) -> String {
        format!("sbx3ds_{}", digest(&["challenge", key]))
    }

    fn entry(&self, key: &str, operation: &str, reference: &str, amount: Money, outcome: &str) -> LedgerEntry {
        LedgerEntry {
            idempotency_key: key.to_owned(),
            operation: operation.to_owned(),
            reference: reference.to_owned(),
            amount: amount.minor(),
            currency: amount.currency().lowercase(),
            outcome: outcome.to_owned(),
            decline_code: None,
            challenge: None,
            gateway_reference: format!("sbx_pay_{}", digest(&["payment", reference])),
            stored_credential: None,
            network_transaction_id: None,
            at: self.clock.now(),
        }
    }

    /// The network transaction id of an approved authorisation: 15 digits, as Visa's are,
    /// derived from the call's key (so a replay answers the same one).
    fn network_transaction_id(key: &str) -> String {
        let hex = digest(&["network transaction", key]);
        let number = u64::from_str_radix(&hex[..15], 16).unwrap_or(0) % 1_000_000_000_000_000;
        format!("{number:015}")
    }

    /// The answer a ledger entry stands for.
    fn answer(&self, entry: &LedgerEntry) -> GatewayAnswer {
        let status = match entry.outcome.as_str() {
            "authorized" => GatewayStatus::Authorized,
            "captured" => GatewayStatus::Captured,
            "requires_action" => GatewayStatus::RequiresAction,
            "declined" => GatewayStatus::Declined,
            "voided" => GatewayStatus::Voided,
            "refunded" => GatewayStatus::Refunded,
            "failed" => GatewayStatus::Failed,
            _ => GatewayStatus::Pending,
        };
        let error = entry.decline_code.as_deref().map(|stored| {
            let (code, decline_code, message) = cards::decline_of(stored);
            PaymentError { code, decline_code, message: message.to_owned() }
        });
        let next_action = match (status, &entry.challenge) {
            (GatewayStatus::RequiresAction, Some(challenge)) => Some(NextAction {
                redirect_url: format!("{}/{challenge}", self.settings.challenge_base),
                challenge: challenge.clone(),
                handoff_url: None,
                return_url: None,
            }),
            _ => None,
        };
        GatewayAnswer {
            status,
            gateway_reference: entry.gateway_reference.clone(),
            error,
            next_action,
            network_transaction_id: entry.network_transaction_id.clone(),
            // The sandbox needs nothing of its own to charge a saved card again.
            stored_method: None,
        }
    }

    /// Records `entry` (or finds the earlier one under its key) and answers with what is stored.
    async fn record_entry(&self, mut entry: LedgerEntry) -> Result<GatewayAnswer, GatewayError> {
        if entry.operation == "authorize" && matches!(entry.outcome.as_str(), "authorized" | "captured") {
            entry.network_transaction_id = Some(Self::network_transaction_id(&entry.idempotency_key));
        }
        let (stored, _) = self.ledger.record_entry(&entry).await.map_err(unavailable)?;
        Ok(self.answer(&stored))
    }

    /// The outcome of a 3-D Secure card, by the payment's open challenge: `Ok(None)` passed,
    /// `Ok(Some(false))` failed (both consume it), `Err(id)` still to be completed (a new
    /// challenge when there was none).
    async fn challenge_outcome(&self, request: &AuthorizeRequest) -> Result<Result<bool, String>, GatewayError> {
        let open = self.ledger.open_sandbox_challenge(&request.reference).await.map_err(unavailable)?;
        match open {
            Some(challenge) if challenge.status == "pending" => Ok(Err(challenge.id)),
            Some(challenge) => {
                let passed = challenge.status == "passed";
                if self
                    .ledger
                    .set_sandbox_challenge(&challenge.id, &challenge.status, "consumed")
                    .await
                    .map_err(unavailable)?
                {
                    Ok(Ok(passed))
                } else {
                    Err(GatewayError::Unavailable("the challenge changed meanwhile".into()))
                }
            }
            None => {
                let challenge = SandboxChallenge {
                    id: Self::challenge_id(&request.idempotency_key),
                    reference: request.reference.clone(),
                    status: "pending".into(),
                    at: self.clock.now(),
                };
                self.ledger.insert_sandbox_challenge(&challenge).await.map_err(unavailable)?;
                Ok(Err(challenge.id))
            }
        }
    }
}

#[async_trait]
impl Gateway for SandboxGateway {
    fn name(&self) -> &'static str {
        "sandbox"
    }

    async fn authorize(&self, request: AuthorizeRequest) -> Result<GatewayAnswer, GatewayError> {
        self.wait().await;
        // The number picks the behaviour and goes no further; the CVC is dropped with the request.
        let behaviour = cards::behaviour(request.card.number.expose());
        // An approval or a decline is one insert, which answers what the first call under the
        // key did if there was one; a challenge (which consumes a completed challenge) and a
        // lost answer look for an earlier call first.
        if matches!(behaviour, Behaviour::Challenge | Behaviour::Timeout)
            && let Some(earlier) = self.ledger.ledger_entry(&request.idempotency_key).await.map_err(unavailable)?
        {
            return Ok(self.answer(&earlier));
        }
        let approved = if request.capture { "captured" } else { "authorized" };
        let (key, reference, amount) = (&request.idempotency_key, &request.reference, request.amount);
        let mut entry = self.entry(key, "authorize", reference, amount, approved);
        entry.stored_credential = request.stored_credential.as_ref().map(StoredCredential::label);
        let merchant_initiated = match &request.stored_credential {
            Some(StoredCredential::MerchantInitiated { network_transaction_id, .. }) => {
                let known = match network_transaction_id {
                    Some(id) => self.ledger.issued_network_transaction(id).await.map_err(unavailable)?,
                    None => false,
                };
                if !known {
                    // Networks refuse a merchant-initiated payment that names no first payment.
                    entry.outcome = "declined".into();
                    entry.decline_code = Some("card_declined:transaction_not_allowed".into());
                    return self.record_entry(entry).await;
                }
                true
            }
            _ => false,
        };
        match behaviour {
            Behaviour::Approve => {}
            Behaviour::Challenge if merchant_initiated => {
                // No customer is there to authenticate.
                entry.outcome = "declined".into();
                entry.decline_code = Some("authentication_required".into());
            }
            Behaviour::Decline(code, decline_code, _) => {
                entry.outcome = "declined".into();
                entry.decline_code = Some(decline_code.map_or_else(|| code.to_owned(), |d| format!("{code}:{d}")));
            }
            Behaviour::Challenge => match self.challenge_outcome(&request).await? {
                Ok(true) => {}
                Ok(false) => {
                    entry.outcome = "declined".into();
                    entry.decline_code = Some("payment_intent_authentication_failure".into());
                }
                Err(challenge) => {
                    entry.outcome = "requires_action".into();
                    entry.challenge = Some(challenge);
                }
            },
            Behaviour::Timeout => {
                // The payment happens; the answer is lost on the way back.
                self.record_entry(entry).await?;
                return Err(GatewayError::Timeout);
            }
        }
        self.record_entry(entry).await
    }

    async fn capture(&self, request: &FollowUpRequest) -> Result<GatewayAnswer, GatewayError> {
        self.wait().await;
        let entry = self.entry(&request.idempotency_key, "capture", &request.reference, request.amount, "captured");
        self.record_entry(entry).await
    }

    async fn cancel(&self, request: &FollowUpRequest) -> Result<GatewayAnswer, GatewayError> {
        self.wait().await;
        let entry = self.entry(&request.idempotency_key, "cancel", &request.reference, request.amount, "voided");
        self.record_entry(entry).await
    }

    async fn refund(&self, request: &FollowUpRequest) -> Result<GatewayAnswer, GatewayError> {
        self.wait().await;
        let mut entry = self.entry(&request.idempotency_key, "refund", &request.reference, request.amount, "refunded");
        entry.gateway_reference = format!("sbx_re_{}", digest(&["refund", &request.idempotency_key]));
        self.record_entry(entry).await
    }

    async fn lookup(&self, request: &LookupRequest) -> Result<Option<GatewayAnswer>, GatewayError> {
        let stored = self.ledger.ledger_entry(&request.idempotency_key).await.map_err(unavailable)?;
        Ok(stored.map(|entry| self.answer(&entry)))
    }

    /// After the customer's challenge: approved when it passed, declined when it failed, still
    /// `requires_action` while it is pending; a payment with no challenge is declined.
    async fn resume(&self, request: &ResumeRequest) -> Result<GatewayAnswer, GatewayError> {
        self.wait().await;
        if let Some(earlier) = self.ledger.ledger_entry(&request.idempotency_key).await.map_err(unavailable)? {
            return Ok(self.answer(&earlier));
        }
        let approved = if request.capture { "captured" } else { "authorized" };
        let (key, reference, amount) = (&request.idempotency_key, &request.reference, request.amount);
        let mut entry = self.entry(key, "authorize", reference, amount, approved);
        let open = self.ledger.open_sandbox_challenge(reference).await.map_err(unavailable)?;
        match open {
            Some(challenge) if challenge.status == "pending" => {
                entry.outcome = "requires_action".into();
                entry.challenge = Some(challenge.id);
            }
            Some(challenge) => {
                if !self
                    .ledger
                    .set_sandbox_challenge(&challenge.id, &challenge.status, "consumed")
                    .await
                    .map_err(unavailable)?
                {
                    return Err(GatewayError::Unavailable("the challenge changed meanwhile".into()));
                }
                if challenge.status != "passed" {
                    entry.outcome = "declined".into();
                    entry.decline_code = Some("payment_intent_authentication_failure".into());
                }
            }
            None => {
                entry.outcome = "declined".into();
                entry.decline_code = Some("payment_intent_authentication_failure".into());
            }
        }
        self.record_entry(entry).await
    }
}

#[async_trait]
impl ChallengeSimulator for SandboxGateway {
    async fn complete(&self, challenge: &str, passed: bool) -> Result<bool, GatewayError> {
        let to = if passed { "passed" } else { "failed" };
        self.ledger.set_sandbox_challenge(challenge, "pending", to).await.map_err(unavailable)
    }

    async fn challenge(&self, challenge: &str) -> Result<Option<(String, String)>, GatewayError> {
        let found = self.ledger.sandbox_challenge(challenge).await.map_err(unavailable)?;
        Ok(found.map(|c| (c.reference, c.status)))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code")]
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};

    use async_trait::async_trait;
    use strongroom_domain::StoreError;
    use strongroom_domain::payments::gateway::{
        AuthorizeRequest, ChallengeSimulator, FollowUpRequest, Gateway, GatewayCard, GatewayError, GatewayStatus,
        LookupRequest, StoredCredential,
    };
    use strongroom_domain::ports::payments::{LedgerEntry, SandboxChallenge, SandboxLedger};
    use strongroom_types::{Currency, ManualClock, Money, Secret, Timestamp};

    use super::cards::{Behaviour, TEST_CARDS, behaviour, decline_of};
    use super::{SandboxGateway, SandboxSettings};

    /// The ledger's contract in memory: one entry per key, at most one open challenge per payment.
    #[derive(Debug, Default)]
    struct MemoryLedger {
        entries: Mutex<Vec<LedgerEntry>>,
        challenges: Mutex<HashMap<String, SandboxChallenge>>,
    }

    #[async_trait]
    impl SandboxLedger for MemoryLedger {
        async fn record_entry(&self, entry: &LedgerEntry) -> Result<(LedgerEntry, bool), StoreError> {
            let mut entries = self.entries.lock().unwrap();
            if let Some(earlier) = entries.iter().find(|e| e.idempotency_key == entry.idempotency_key) {
                return Ok((earlier.clone(), false));
            }
            entries.push(entry.clone());
            Ok((entry.clone(), true))
        }
        async fn ledger_entry(&self, key: &str) -> Result<Option<LedgerEntry>, StoreError> {
            Ok(self.entries.lock().unwrap().iter().find(|e| e.idempotency_key == key).cloned())
        }
        async fn insert_sandbox_challenge(&self, challenge: &SandboxChallenge) -> Result<(), StoreError> {
            self.challenges.lock().unwrap().insert(challenge.id.clone(), challenge.clone());
            Ok(())
        }
        async fn sandbox_challenge(&self, id: &str) -> Result<Option<SandboxChallenge>, StoreError> {
            Ok(self.challenges.lock().unwrap().get(id).cloned())
        }
        async fn open_sandbox_challenge(&self, reference: &str) -> Result<Option<SandboxChallenge>, StoreError> {
            let challenges = self.challenges.lock().unwrap();
            Ok(challenges.values().find(|c| c.reference == reference && c.status != "consumed").cloned())
        }
        async fn issued_network_transaction(&self, id: &str) -> Result<bool, StoreError> {
            Ok(self.entries.lock().unwrap().iter().any(|e| e.network_transaction_id.as_deref() == Some(id)))
        }
        async fn set_sandbox_challenge(&self, id: &str, from: &str, to: &str) -> Result<bool, StoreError> {
            let mut challenges = self.challenges.lock().unwrap();
            match challenges.get_mut(id) {
                Some(c) if c.status == from => {
                    c.status = to.to_owned();
                    Ok(true)
                }
                _ => Ok(false),
            }
        }
    }

    fn sandbox() -> (SandboxGateway, Arc<MemoryLedger>) {
        let ledger = Arc::new(MemoryLedger::default());
        let clock = Arc::new(ManualClock::new(Timestamp::from_unix_millis(1_800_000_000_000)));
        (SandboxGateway::new(ledger.clone(), clock, SandboxSettings::default()), ledger)
    }

    fn eur(minor: i64) -> Money {
        Money::new(minor, Currency::parse("eur").unwrap()).unwrap()
    }

    fn authorize(key: &str, number: &str) -> AuthorizeRequest {
        AuthorizeRequest {
            idempotency_key: key.into(),
            reference: "pi_1".into(),
            amount: eur(500),
            capture: false,
            card: GatewayCard {
                number: Secret::new(number.into()),
                exp_month: 12,
                exp_year: 2040,
                cvc: Some(Secret::new("123".into())),
            },
            gateway_reference: None,
            stored_credential: None,
        }
    }

    fn follow_up(key: &str) -> FollowUpRequest {
        FollowUpRequest {
            idempotency_key: key.into(),
            reference: "pi_1".into(),
            gateway_reference: "sbx_pay".into(),
            amount: eur(200),
        }
    }

    fn key(idempotency_key: &str) -> LookupRequest {
        LookupRequest { idempotency_key: idempotency_key.into(), payment_reference: None }
    }

    #[tokio::test]
    async fn a_repeated_key_answers_the_first_call_and_acts_once() {
        let (gateway, ledger) = sandbox();
        let first = gateway.authorize(authorize("pi_1:authorize:1", "4242424242424242")).await.unwrap();
        assert_eq!(first.status, GatewayStatus::Authorized);
        // A retry after a crash, even with another card, gets the first answer and charges nothing.
        let again = gateway.authorize(authorize("pi_1:authorize:1", "4000000000000002")).await.unwrap();
        assert_eq!(again, first);
        for _ in 0..3 {
            gateway.capture(&follow_up("pi_1:capture:2")).await.unwrap();
            gateway.refund(&follow_up("re_1:refund:1")).await.unwrap();
        }
        let operations: Vec<String> = ledger.entries.lock().unwrap().iter().map(|e| e.operation.clone()).collect();
        assert_eq!(operations, ["authorize", "capture", "refund"]);
        assert_eq!(
            gateway.lookup(&key("pi_1:capture:2")).await.unwrap().map(|a| a.status),
            Some(GatewayStatus::Captured)
        );
        assert_eq!(gateway.lookup(&key("pi_1:capture:9")).await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_timeout_happened_at_the_gateway_and_lookup_says_so() {
        let (gateway, ledger) = sandbox();
        let lost = gateway.authorize(authorize("pi_1:authorize:1", "4000000000001000")).await;
        assert!(matches!(lost, Err(GatewayError::Timeout)));
        let found = gateway.lookup(&key("pi_1:authorize:1")).await.unwrap().unwrap();
        assert_eq!(found.status, GatewayStatus::Authorized);
        assert_eq!(ledger.entries.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn a_challenge_is_reused_until_completed_then_consumed() {
        let (gateway, _) = sandbox();
        let first = gateway.authorize(authorize("pi_1:authorize:1", "4000002760003184")).await.unwrap();
        assert_eq!(first.status, GatewayStatus::RequiresAction);
        let challenge = first.next_action.unwrap().challenge;
        let second = gateway.authorize(authorize("pi_1:authorize:2", "4000002760003184")).await.unwrap();
        assert_eq!(second.next_action.unwrap().challenge, challenge, "the open challenge is reused");
        assert!(gateway.complete(&challenge, false).await.unwrap());
        assert!(!gateway.complete(&challenge, true).await.unwrap(), "completed once");
        let failed = gateway.authorize(authorize("pi_1:authorize:3", "4000002760003184")).await.unwrap();
        assert_eq!(failed.status, GatewayStatus::Declined);
        assert_eq!(failed.error.unwrap().code, "payment_intent_authentication_failure");
        let fresh = gateway.authorize(authorize("pi_1:authorize:4", "4000002760003184")).await.unwrap();
        let fresh_challenge = fresh.next_action.unwrap().challenge;
        assert_ne!(fresh_challenge, challenge, "a consumed challenge is not reused");
        assert!(gateway.complete(&fresh_challenge, true).await.unwrap());
        let passed = gateway.authorize(authorize("pi_1:authorize:5", "4000002760003184")).await.unwrap();
        assert_eq!(passed.status, GatewayStatus::Authorized);
    }

    #[tokio::test]
    async fn merchant_initiated_payments_need_an_issued_network_transaction_id() {
        let (gateway, ledger) = sandbox();
        let first = gateway.authorize(authorize("pi_1:authorize:1", "4242424242424242")).await.unwrap();
        let network_id = first.network_transaction_id.clone().unwrap();
        assert_eq!(network_id.len(), 15);
        let mit = |key: &str, number: &str, id: Option<&str>| {
            let mut request = authorize(key, number);
            request.card.cvc = None;
            request.stored_credential = Some(StoredCredential::MerchantInitiated {
                reason: strongroom_domain::ports::payments::MitReason::Recurring,
                network_transaction_id: id.map(str::to_owned),
                stored_method: None,
            });
            request
        };
        let ok = gateway.authorize(mit("pi_2:authorize:1", "4242424242424242", Some(&network_id))).await.unwrap();
        assert_eq!(ok.status, GatewayStatus::Authorized);
        let unknown = gateway.authorize(mit("pi_3:authorize:1", "4242424242424242", Some("999"))).await.unwrap();
        assert_eq!(unknown.status, GatewayStatus::Declined);
        assert_eq!(unknown.error.unwrap().decline_code.as_deref(), Some("transaction_not_allowed"));
        let none = gateway.authorize(mit("pi_4:authorize:1", "4242424242424242", None)).await.unwrap();
        assert_eq!(none.status, GatewayStatus::Declined);
        let three_ds = gateway.authorize(mit("pi_5:authorize:1", "4000002760003184", Some(&network_id))).await.unwrap();
        assert_eq!(three_ds.status, GatewayStatus::Declined);
        assert_eq!(three_ds.error.unwrap().code, "authentication_required");
        let labels: Vec<Option<String>> =
            ledger.entries.lock().unwrap().iter().map(|e| e.stored_credential.clone()).collect();
        assert_eq!(labels[1].as_deref(), Some(format!("merchant:recurring:{network_id}").as_str()));
    }

    #[test]
    fn test_cards_are_valid_numbers_with_distinct_behaviours() {
        for (number, _, _) in TEST_CARDS {
            assert!(strongroom_domain::vault::card::luhn_valid(number), "{number}");
        }
        assert_eq!(behaviour("4242424242424242"), Behaviour::Approve);
        assert_eq!(behaviour("4111111111111111"), Behaviour::Approve, "any other card is approved");
        assert_eq!(behaviour("4000002760003184"), Behaviour::Challenge);
        assert_eq!(behaviour("4000000000001000"), Behaviour::Timeout);
    }

    #[test]
    fn stored_declines_read_back() {
        assert_eq!(
            decline_of("card_declined:insufficient_funds"),
            ("card_declined".into(), Some("insufficient_funds".into()), "the card has insufficient funds")
        );
        assert_eq!(decline_of("expired_card"), ("expired_card".into(), None, "the card has expired"));
    }
}
