//! 3-D Secure (strong customer authentication) around an intent in `requires_action`: what
//! strongroom's hand-off page shows, the customer's return from the gateway's page, and the
//! sandbox's stand-in for the issuer's challenge page.
//!
//! The shop sends the customer's browser to `next_action.redirect_to_url.url`, strongroom's
//! hand-off page (`/pay/authenticate/{id}`), which shows the payment and leads on to the
//! gateway's page. The customer comes back to `/pay/return/{id}`: strongroom then asks the gateway
//! what became of the authorisation ([`PaymentsService::return_from_authentication`]) and moves
//! the intent by that answer only, then sends the customer on to the shop's `return_url`.
//! Must never: take the outcome from the browser (the return carries nothing but the intent's
//! id, and a return before the customer finished only asks the gateway again), or show more of
//! an intent than a customer holding its link may see (amount, currency, status).

use super::gateway::{ResumeRequest, idempotency_key};
use super::intents::Step;
use super::state::{CaptureMethod, Event, State};
use super::{Actor, PaymentsService};
use crate::error::DomainError;
use crate::ports::payments::{GatewayCallRecord, IntentRecord};

/// The actor named in the audit entries of a return from the gateway's page.
pub const RETURN_ACTOR: &str = "payments.authentication_return";

/// What the hand-off and return pages show of an intent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthenticationView {
    /// `pi_…`
    pub id: String,
    /// The amount, as the page shows it (`25.00 EUR`).
    pub amount: String,
    /// The intent's status (`requires_action`, `succeeded`, …).
    pub status: &'static str,
    /// The gateway's page, while the intent waits for the customer.
    pub gateway_url: Option<String>,
    /// The shop's return page with `payment_intent` and `redirect_status` added, when the shop
    /// gave one.
    pub return_url: Option<String>,
}

/// Where the customer goes after the gateway's page: the shop's page, told which intent and
/// how it went (Stripe's parameters; the shop must still read the intent to trust it).
fn shop_return(base: &str, id: &str, state: State) -> String {
    let outcome = match state {
        State::Succeeded | State::RequiresCapture => "succeeded",
        State::Authorizing | State::Capturing | State::Voiding => "processing",
        State::RequiresPaymentMethod | State::RequiresConfirmation | State::RequiresAction | State::Canceled => {
            "failed"
        }
    };
    let separator = if base.contains('?') { '&' } else { '?' };
    format!("{base}{separator}payment_intent={id}&redirect_status={outcome}")
}

impl PaymentsService {
    /// The intent behind a hand-off or return link; a malformed or unknown id is not found.
    async fn linked_intent(&self, id: &str) -> Result<IntentRecord, DomainError> {
        if !super::plausible_id(id, "pi") {
            return Err(DomainError::NotFound);
        }
        self.ports.repo.intent(id).await?.ok_or(DomainError::NotFound)
    }

    /// What the page shows of `intent`.
    fn view(intent: &IntentRecord) -> AuthenticationView {
        let action = intent.next_action.as_ref();
        AuthenticationView {
            id: intent.id.clone(),
            amount: intent.amount.to_string(),
            status: intent.state.status(),
            gateway_url: match intent.state {
                State::RequiresAction => action.map(|a| a.redirect_url.clone()),
                _ => None,
            },
            return_url: action
                .and_then(|a| a.return_url.as_deref())
                .map(|base| shop_return(base, &intent.id, intent.state)),
        }
    }

    /// The hand-off page's view of an intent (by the link's id).
    pub async fn authentication_page(&self, id: &str) -> Result<AuthenticationView, DomainError> {
        Ok(Self::view(&self.linked_intent(id).await?))
    }

    /// The customer is back from the gateway's page: asks the gateway what became of the
    /// authorisation and moves the intent by its answer (`succeeded`, `requires_capture`, back to
    /// `requires_payment_method` when authentication failed, or still `requires_action`). An
    /// intent no longer waiting for the customer is shown as it is.
    pub async fn return_from_authentication(&self, id: &str) -> Result<AuthenticationView, DomainError> {
        let intent = self.linked_intent(id).await?;
        if intent.state != State::RequiresAction {
            return Ok(Self::view(&intent));
        }
        let actor = Actor::System(RETURN_ACTOR);
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
        let step = Step {
            call: Some(&call),
            lock_order: intent.order.as_deref().map(|order| (order, intent.amount.minor())),
            ..Step::new(Event::Confirm)
        };
        let claimed = match self.apply(actor, &intent, after, step).await {
            Ok(claimed) => claimed,
            // A second return (a reload) or the shop's own confirm came first.
            Err(DomainError::UnexpectedState { .. }) => return Ok(Self::view(&self.linked_intent(id).await?)),
            Err(other) => return Err(other),
        };
        let request = ResumeRequest {
            idempotency_key: call.idempotency_key.clone(),
            reference: claimed.id.clone(),
            gateway_reference: claimed.gateway_reference.clone().unwrap_or_default(),
            amount: claimed.amount,
            capture: claimed.capture_method == CaptureMethod::Automatic,
        };
        let answer = match self.call_gateway(self.ports.gateway.resume(&request)).await {
            Some(answer) => answer,
            // No answer now: the intent stays processing and reconciliation settles it.
            None => return Ok(Self::view(&claimed)),
        };
        let status = answer.status;
        let settled = self
            .settle_authorization(actor, &claimed, &call.idempotency_key, answer)
            .await
            .map_err(|err| err.after_gateway_call(&claimed.id))?;
        self.watch_authorization(&claimed, status, None).await;
        Ok(Self::view(&settled))
    }

    /// The sandbox's challenge page: the intent a challenge belongs to and the challenge's
    /// status (`pending`, `passed`, `failed`, `consumed`); not found without the sandbox.
    pub async fn sandbox_challenge(&self, challenge: &str) -> Result<(AuthenticationView, String), DomainError> {
        let simulator = self.ports.simulator.as_ref().ok_or(DomainError::NotFound)?;
        let (reference, status) = simulator
            .challenge(challenge)
            .await
            .map_err(|err| DomainError::Store(crate::StoreError::Unavailable(format!("the sandbox: {err}"))))?
            .ok_or(DomainError::NotFound)?;
        Ok((Self::view(&self.linked_intent(&reference).await?), status))
    }

    /// The customer passes or fails the sandbox's challenge on its page; returns the intent's
    /// id (the page then sends the customer back through [`Self::return_from_authentication`]).
    /// A challenge answered already is refused.
    pub async fn answer_sandbox_challenge(&self, challenge: &str, passed: bool) -> Result<String, DomainError> {
        let simulator = self.ports.simulator.as_ref().ok_or(DomainError::NotFound)?;
        let unavailable =
            |err: super::gateway::GatewayError| DomainError::Store(crate::StoreError::Unavailable(err.to_string()));
        let (reference, _) = simulator.challenge(challenge).await.map_err(unavailable)?.ok_or(DomainError::NotFound)?;
        if !simulator.complete(challenge, passed).await.map_err(unavailable)? {
            return Err(DomainError::Conflict("challenge_not_pending", "this challenge was answered already"));
        }
        let intent = self.linked_intent(&reference).await?;
        let action = if passed { "payment_intent.challenge_passed" } else { "payment_intent.challenge_failed" };
        let event = Actor::System("sandbox.challenge_page").event(
            action,
            "payment_intent",
            &intent.id,
            (&intent.merchant, intent.mode),
        );
        self.ports.audit.record(event).await?;
        Ok(reference)
    }
}

#[cfg(test)]
mod tests {
    use super::shop_return;
    use crate::payments::state::State;

    #[test]
    fn the_shop_is_told_the_intent_and_how_it_went() {
        assert_eq!(
            shop_return("https://shop.example/done", "pi_1", State::Succeeded),
            "https://shop.example/done?payment_intent=pi_1&redirect_status=succeeded"
        );
        assert_eq!(
            shop_return("https://shop.example/done?cart=7", "pi_1", State::RequiresPaymentMethod),
            "https://shop.example/done?cart=7&payment_intent=pi_1&redirect_status=failed"
        );
        assert!(shop_return("https://s.example/", "pi_1", State::Capturing).ends_with("redirect_status=processing"));
    }
}
