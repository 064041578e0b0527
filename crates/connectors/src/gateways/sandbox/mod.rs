//! The sandbox gateway: built in, the default, deterministic by test card number ([`cards`]),
//! with a configurable latency, so a whole checkout runs in development with no network.
//!
//! Its ledger is durable and countable (`sandbox_ledger`, one row per idempotency key): a call
//! whose key is recorded already answers what the first one did and changes nothing, so a test
//! can prove that no authorisation, capture or refund happened twice. 3-D Secure is simulated by
//! challenges (`sandbox_challenges`, at most one open per payment) that pass or fail through
//! [`ChallengeSimulator`].
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
            at: self.clock.now(),
        }
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
            }),
            _ => None,
        };
        GatewayAnswer { status, gateway_reference: entry.gateway_reference.clone(), error, next_action }
    }

    /// Records `entry` (or finds the earlier one under its key) and answers with what is stored.
    async fn record_entry(&self, entry: LedgerEntry) -> Result<GatewayAnswer, GatewayError> {
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
        if let Some(earlier) = self.ledger.ledger_entry(&request.idempotency_key).await.map_err(unavailable)? {
            return Ok(self.answer(&earlier));
        }
        let approved = if request.capture { "captured" } else { "authorized" };
        // The number picks the behaviour and goes no further; the CVC is dropped with the request.
        let behaviour = cards::behaviour(request.card.number.expose());
        let (key, reference, amount) = (&request.idempotency_key, &request.reference, request.amount);
        let mut entry = self.entry(key, "authorize", reference, amount, approved);
        match behaviour {
            Behaviour::Approve => {}
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

    async fn lookup(&self, idempotency_key: &str) -> Result<Option<GatewayAnswer>, GatewayError> {
        let stored = self.ledger.ledger_entry(idempotency_key).await.map_err(unavailable)?;
        Ok(stored.map(|entry| self.answer(&entry)))
    }
}

#[async_trait]
impl ChallengeSimulator for SandboxGateway {
    async fn complete(&self, challenge: &str, passed: bool) -> Result<bool, GatewayError> {
        let to = if passed { "passed" } else { "failed" };
        self.ledger.set_sandbox_challenge(challenge, "pending", to).await.map_err(unavailable)
    }
}

#[cfg(test)]
mod tests {
    use super::cards::{Behaviour, TEST_CARDS, behaviour, decline_of};

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
