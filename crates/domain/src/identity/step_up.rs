//! Step-up authentication bound to one action (PSD2 dynamic linking): a signed-in customer asks
//! for a challenge naming a purpose and its binding (e.g. amount, currency, payee, order id),
//! answers it with a second factor, and gets a proof that is good once, for 5 minutes, for that
//! exact purpose and binding, and for no other. The session is renewed at the same time.
//! Must never: accept a proof twice, for another customer, purpose or binding, or after it expired.

use serde_json::{Map, Value};
use strongroom_types::{Secret, Timestamp};

use super::factors::FactorAnswer;
use super::sessions::IssuedSession;
use super::{ChallengeId, Client, CustomerSession, IdentityService};
use crate::DomainError;
use crate::audit::event::{ActorKind, AuditEvent, Outcome};
use crate::error::FieldError;
use crate::modes::Space;
use crate::ports::{AccountStatus, ChallengePurpose, ChallengeRecord};

/// Most fields in a binding.
pub const MAX_BINDING_FIELDS: usize = 20;

/// A step-up challenge.
#[derive(Debug, Clone)]
pub struct StepUpChallenge {
    /// `chl_…`
    pub id: String,
    /// What may answer it.
    pub factors: Vec<&'static str>,
    /// When it stops.
    pub expires_at: Timestamp,
    /// For a customer with passkeys: the WebAuthn ceremony a passkey answers.
    pub passkey: Option<crate::passkeys::Ceremony>,
}

/// An answered step-up.
#[derive(Debug)]
pub struct StepUpProof {
    /// `sup_…`: good once, for the bound action.
    pub proof: Secret<String>,
    /// When it stops.
    pub expires_at: Timestamp,
    /// The renewed session (the old token no longer works).
    pub session: IssuedSession,
}

/// A proof presented for one action of one customer.
#[derive(Clone, Copy)]
pub struct StepUpRedemption<'a> {
    /// `cus_…`
    pub customer: &'a str,
    /// The `sup_…` proof.
    pub proof: &'a str,
    /// The purpose the action needs.
    pub purpose: &'a str,
    /// The action's binding.
    pub binding: &'a Map<String, Value>,
}

impl std::fmt::Debug for StepUpRedemption<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StepUpRedemption")
            .field("customer", &self.customer)
            .field("purpose", &self.purpose)
            .finish_non_exhaustive()
    }
}

/// The canonical text of a purpose and binding: the purpose, then each field as
/// `name=<JSON value>` in name order, one per line. Refuses anything but a flat object of
/// strings, integers and booleans.
pub fn canonical_binding(purpose: &str, binding: &Map<String, Value>) -> Result<String, DomainError> {
    // The purpose goes into the audit log (the binding only as a keyed digest).
    crate::free_text::check("/purpose", purpose)?;
    let mut errors = Vec::new();
    let purpose_ok = !purpose.is_empty()
        && purpose.len() <= 64
        && purpose.starts_with(|c: char| c.is_ascii_lowercase())
        && purpose.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '.');
    if !purpose_ok {
        errors.push(FieldError::new("/purpose", "must be 1 to 64 of a-z 0-9 _ . starting with a letter"));
    }
    if binding.is_empty() || binding.len() > MAX_BINDING_FIELDS {
        errors.push(FieldError::new("/binding", format!("must have 1 to {MAX_BINDING_FIELDS} fields")));
    }
    let mut names: Vec<&String> = binding.keys().collect();
    names.sort();
    let mut text = String::from(purpose);
    for name in names {
        let pointer = format!("/binding/{name}");
        let name_ok = !name.is_empty()
            && name.len() <= 64
            && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !name_ok {
            errors.push(FieldError::new("/binding", "field names must be 1 to 64 of a-z 0-9 _"));
            continue;
        }
        match &binding[name] {
            Value::String(s) if s.chars().count() <= 256 => {}
            Value::Number(n) if n.is_i64() || n.is_u64() => {}
            Value::Bool(_) => {}
            _ => {
                errors.push(FieldError::new(
                    pointer,
                    "must be a string of up to 256 characters, an integer or a boolean",
                ));
                continue;
            }
        }
        text.push('\n');
        text.push_str(name);
        text.push('=');
        text.push_str(&binding[name].to_string());
    }
    if errors.is_empty() { Ok(text) } else { Err(DomainError::Validation(errors)) }
}

impl IdentityService {
    /// Asks for a step-up bound to `purpose` and `binding`.
    pub async fn begin_step_up(
        &self,
        session: &CustomerSession,
        purpose: &str,
        binding: &Map<String, Value>,
        client: &Client,
    ) -> Result<StepUpChallenge, DomainError> {
        let canonical = canonical_binding(purpose, binding)?;
        let merchant = &session.merchant_id;
        let customer = self.customer_record(session.space(), &session.customer_id).await?;
        let passkey = match self.passkeys.as_deref() {
            Some(passkeys) => {
                passkeys.begin_sign_in(crate::passkeys::Owner { kind: "customer", id: &customer.id, merchant }).await?
            }
            None => None,
        };
        let mut factors = Vec::new();
        if customer.totp_confirmed_at.is_some() {
            factors.extend(["totp", "recovery_code"]);
        }
        if passkey.is_some() {
            factors.push("passkey");
        }
        if factors.is_empty() {
            return Err(DomainError::Conflict("no_second_factor", "enrol a second factor before step-up"));
        }
        let now = self.now();
        let expires_at = now.saturating_add(self.settings.step_up_ttl);
        let id = ChallengeId::generate(self.entropy.as_ref()).as_str().to_owned();
        let record = ChallengeRecord {
            id: id.clone(),
            merchant_id: merchant.clone(),
            customer_id: customer.id.clone(),
            purpose: ChallengePurpose::StepUp,
            binding_digest: Some(self.keyed("step_up_binding", canonical.as_bytes())),
            session_id: Some(session.session_id.clone()),
            client: None,
            created_at: now,
            expires_at,
            failures: 0,
            completed_at: None,
            proof_digest: None,
            proof_expires_at: None,
            proof_used_at: None,
            code_digest: None,
            code_expires_at: None,
        };
        self.repo.insert_challenge(&record).await?;
        let event = AuditEvent::by(
            ActorKind::Customer,
            Some(customer.id.clone()),
            "customer.step_up_requested",
            Outcome::SuccessBecause(purpose.to_owned()),
        )
        .for_merchant(merchant)
        .on("challenge", &id)
        .from_source(client.ip, client.request_id.clone());
        self.audit.record(event).await?;
        Ok(StepUpChallenge { id, factors, expires_at, passkey })
    }

    /// Answers a step-up challenge of this session with a second factor.
    pub async fn verify_step_up(
        &self,
        session: &CustomerSession,
        challenge_id: &str,
        answer: FactorAnswer,
        client: &Client,
    ) -> Result<StepUpProof, DomainError> {
        let merchant = &session.merchant_id;
        let space = session.space();
        let now = self.now();
        let challenge = self
            .repo
            .challenge(merchant, challenge_id)
            .await?
            .filter(|c| c.purpose == ChallengePurpose::StepUp && c.customer_id == session.customer_id)
            .ok_or(DomainError::NotFound)?;
        let spent = challenge.session_id.as_deref() != Some(session.session_id.as_str());
        if spent {
            self.audit_factor(
                space,
                &session.customer_id,
                client,
                "customer.step_up_verified",
                Outcome::Denied("challenge_spent"),
            )
            .await?;
            return Err(DomainError::InvalidFactor);
        }
        let customer = self.customer_record(session.space(), &session.customer_id).await?;
        let Some(used) = self.answer_challenge(&challenge.id, &customer, &answer, client).await? else {
            self.audit_factor(space, &customer.id, client, "customer.step_up_verified", Outcome::Denied("wrong_code"))
                .await?;
            return Err(DomainError::InvalidFactor);
        };
        let proof = self.fresh_secret("sup");
        let expires_at = now.saturating_add(self.settings.step_up_ttl);
        let digest = self.keyed("step_up_proof", proof.expose().as_bytes());
        if !self.repo.complete_challenge(&challenge.id, now, Some((&digest, expires_at))).await? {
            return Err(DomainError::InvalidFactor);
        }
        let factors = format!("{}+{used}", session.factors.split('+').next().unwrap_or("password"));
        let renewed = self.renew_session(session, merchant, &factors, client).await?;
        self.audit_factor(
            space,
            &customer.id,
            client,
            "customer.step_up_verified",
            Outcome::SuccessBecause(used.to_owned()),
        )
        .await?;
        Ok(StepUpProof { proof, expires_at, session: renewed })
    }

    /// Spends a proof the signed-in customer made for one of their own actions (an email change):
    /// good once, for exactly this purpose and binding.
    pub(super) async fn spend_own_proof(
        &self,
        session: &super::CustomerSession,
        proof: &str,
        purpose: &str,
        binding: &Map<String, Value>,
    ) -> Result<(), DomainError> {
        let digest = self.keyed("step_up_proof", proof.trim().as_bytes());
        let redeemed = self.repo.redeem_proof(&digest, self.now()).await?;
        let expected = self.keyed("step_up_binding", canonical_binding(purpose, binding)?.as_bytes());
        let good = redeemed.as_ref().is_some_and(|c| {
            c.merchant_id == session.merchant_id
                && c.customer_id == session.customer_id
                && c.binding_digest.as_deref().is_some_and(|d| strongroom_crypto::constant_time_eq(d, &expected))
        });
        let outcome =
            if good { Outcome::SuccessBecause(purpose.to_owned()) } else { Outcome::Denied("proof_not_valid") };
        self.audit_factor(
            session.space(),
            &session.customer_id,
            &Client::default(),
            "customer.step_up_redeemed",
            outcome,
        )
        .await?;
        if good {
            Ok(())
        } else {
            Err(DomainError::Rejected {
                code: "step_up_invalid",
                errors: vec![FieldError::new("/proof", "is not a valid, unused proof for this purpose and binding")],
            })
        }
    }

    /// Redeems a step-up proof for one action of one customer: good once, within its lifetime,
    /// for exactly the purpose and binding it was made for. A proof presented with anything else
    /// is spent all the same.
    pub async fn redeem_step_up(
        &self,
        space: Space<'_>,
        redemption: StepUpRedemption<'_>,
        actor: &crate::api_keys::Principal,
        client: &Client,
    ) -> Result<(), DomainError> {
        let merchant = space.merchant;
        let StepUpRedemption { customer, proof, purpose, binding } = redemption;
        // Spend the proof first: whatever comes with it, it is used once.
        let digest = self.keyed("step_up_proof", proof.trim().as_bytes());
        let redeemed = self.repo.redeem_proof(&digest, self.now()).await?;
        let expected = canonical_binding(purpose, binding).map(|c| self.keyed("step_up_binding", c.as_bytes()));
        let active = match &redeemed {
            Some(c) if &c.merchant_id == merchant => self
                .repo
                .customer(merchant, space.mode, &c.customer_id)
                .await?
                .is_some_and(|r| r.status == AccountStatus::Active),
            _ => false,
        };
        let reason = match (&redeemed, &expected) {
            (None, _) => Some("unknown_used_or_expired"),
            (Some(c), _) if &c.merchant_id != merchant || c.customer_id != customer => Some("wrong_customer"),
            (Some(_), _) if !active => Some("account_not_active"),
            (Some(_), Err(_)) => Some("malformed_binding"),
            (Some(c), Ok(expected))
                if !c.binding_digest.as_deref().is_some_and(|d| strongroom_crypto::constant_time_eq(d, expected)) =>
            {
                Some("wrong_binding")
            }
            _ => None,
        };
        let outcome = reason.map_or(Outcome::SuccessBecause(purpose.to_owned()), Outcome::Denied);
        let mut event = actor
            .event("customer.step_up_redeemed", outcome)
            .for_merchant(merchant)
            .from_source(client.ip, client.request_id.clone());
        if let Some(challenge) = &redeemed {
            event = event.on("challenge", &challenge.id);
        }
        self.audit.record(event).await?;
        if redeemed.is_none() {
            self.note_replay(merchant, &digest, client).await;
        }
        expected?;
        match reason {
            None => Ok(()),
            Some(_) => Err(DomainError::Rejected {
                code: "step_up_invalid",
                errors: vec![FieldError::new(
                    "/proof",
                    "is not a valid, unused proof for this customer, purpose and binding",
                )],
            }),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;
    use serde_json::json;

    fn object(value: Value) -> Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    #[test]
    fn binding_is_canonical_whatever_the_order() {
        let a =
            canonical_binding("payment", &object(json!({"amount": 1999, "currency": "EUR", "payee": "acme"}))).unwrap();
        let b =
            canonical_binding("payment", &object(json!({"payee": "acme", "currency": "EUR", "amount": 1999}))).unwrap();
        assert_eq!(a, b);
        assert_eq!(a, "payment\namount=1999\ncurrency=\"EUR\"\npayee=\"acme\"");
        let c =
            canonical_binding("payment", &object(json!({"amount": 1998, "currency": "EUR", "payee": "acme"}))).unwrap();
        assert_ne!(a, c);
        // A value that looks like another field cannot forge a line: strings are JSON-quoted.
        let d =
            canonical_binding("payment", &object(json!({"amount": 1999, "currency": "EUR\npayee=\"acme\""}))).unwrap();
        assert_ne!(a, d);
    }

    #[test]
    fn bad_bindings_are_named() {
        assert!(canonical_binding("Pay", &object(json!({"a": 1}))).is_err());
        assert!(canonical_binding("payment", &Map::new()).is_err());
        assert!(canonical_binding("payment", &object(json!({"amount": 1.5}))).is_err());
        assert!(canonical_binding("payment", &object(json!({"nested": {"a": 1}}))).is_err());
        assert!(canonical_binding("payment", &object(json!({"Bad Name": 1}))).is_err());
    }
}
