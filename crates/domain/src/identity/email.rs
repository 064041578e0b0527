//! The flows that go through the customer's mailbox: verifying the address, resetting a
//! forgotten password (a single-use link good for 15 minutes that never bypasses the second
//! factor), and the anti-phishing phrase every mail shows.
//! Must never: say whether an address has an account (a reset for an unknown address answers the
//! same), accept a link twice or after it expired, or let a reset sign anyone in.

use strongroom_types::{Secret, Timestamp};

use super::factors::FactorAnswer;
use super::notices::Notice;
use super::{ChallengeId, Client, CustomerSession, IdentityService};
use crate::DomainError;
use crate::audit::event::{ActorKind, AuditEvent, Outcome};
use crate::error::FieldError;
use crate::modes::Space;
use crate::ports::{AccountStatus, ChallengePurpose, ChallengeRecord, CustomerRecord};

/// How long an address-check link works.
const VERIFY_TTL: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// How long a link confirming a new address works.
const EMAIL_CHANGE_TTL: std::time::Duration = std::time::Duration::from_secs(3600);

/// `j***@example.com`: enough for the owner to recognise, not a full address.
fn mask(email: &str) -> String {
    match email.rsplit_once('@') {
        Some((local, domain)) => format!("{}***@{domain}", local.chars().next().unwrap_or('*')),
        None => "***".to_owned(),
    }
}

/// How long a reset link works (the 15 minutes).
const RESET_TTL: std::time::Duration = std::time::Duration::from_secs(15 * 60);

fn bad_link() -> DomainError {
    DomainError::Rejected {
        code: "invalid_link",
        errors: vec![FieldError::new("/token", "is not a valid, unused, unexpired link")],
    }
}

impl IdentityService {
    /// Makes a single-use link token for `purpose`, stored as a keyed hash.
    async fn link_token(
        &self,
        customer: &CustomerRecord,
        purpose: ChallengePurpose,
        ttl: std::time::Duration,
        binding: Option<Vec<u8>>,
    ) -> Result<Secret<String>, DomainError> {
        let now = self.now();
        let prefix = if purpose == ChallengePurpose::VerifyEmail { "evt" } else { "rst" };
        let token = self.fresh_secret(prefix);
        let record = ChallengeRecord {
            id: ChallengeId::generate(self.entropy.as_ref()).as_str().to_owned(),
            merchant_id: customer.merchant_id.clone(),
            customer_id: customer.id.clone(),
            purpose,
            binding_digest: binding,
            session_id: None,
            client: None,
            created_at: now,
            expires_at: now.saturating_add(ttl),
            failures: 0,
            completed_at: None,
            proof_digest: Some(self.keyed("link", token.expose().as_bytes())),
            proof_expires_at: Some(now.saturating_add(ttl)),
            proof_used_at: None,
            code_digest: None,
            code_expires_at: None,
        };
        self.repo.insert_challenge(&record).await?;
        Ok(token)
    }

    fn link(&self, page: &str, token: &Secret<String>) -> Secret<String> {
        // The token rides in the fragment: browsers never send it to a server or in a Referer.
        Secret::new(format!("{}/{page}#token={}", self.settings.link_base.trim_end_matches('/'), token.expose()))
    }

    /// Mails a new customer the link that verifies their address.
    pub(super) async fn send_verification(&self, customer: &CustomerRecord, email: &str) -> Result<(), DomainError> {
        let token = self.link_token(customer, ChallengePurpose::VerifyEmail, VERIFY_TTL, None).await?;
        let notice = Notice {
            kind: "verify_email",
            subject: "Confirm your email address",
            intro: "Please confirm that this is your email address. The link works once, for 24 hours.",
            facts: Vec::new(),
            link: Some(("Confirm my email address", self.link("verify-email", &token))),
            closing: "If you did not create an account, ignore this mail: nothing happens without the link.",
        };
        self.send_to(email, &notice, None).await?;
        Ok(())
    }

    /// Warns the owner of an address someone tried to register again.
    pub(super) async fn send_registration_attempt(&self, email: &str) -> Result<(), DomainError> {
        let notice = Notice {
            kind: "registration_attempt",
            subject: "Someone tried to create an account with your address",
            intro: "Someone tried to create a new account with this email address, which already has one. No new account was made.",
            facts: Vec::new(),
            link: None,
            closing: "If it was you, sign in instead, or reset your password if you forgot it. If not, you need not do anything.",
        };
        self.send_to(email, &notice, None).await
    }

    /// Counts a single-use token (a link's or a step-up proof's keyed hash) that was refused,
    /// when it is one used already: a replay, blocked for the merchant after a few from one
    /// client. A failure to look is logged; the answer stays the refusal either way.
    pub(super) async fn note_replay(&self, merchant: &crate::merchants::MerchantId, digest: &[u8], client: &Client) {
        // Only the customer's own address is counted: a shop's server relaying the link for all
        // its customers would otherwise be blocked by a few double-clicked links.
        let (Some(decisions), Some(ip), true) = (self.decisions.get(), client.ip, client.ip_is_the_customers) else {
            return;
        };
        match self.repo.spent_proof_merchant(digest).await {
            Ok(Some(owner)) if &owner == merchant => {
                let sighting = crate::detection::Sighting::new(
                    crate::detection::Point::ReplayedToken,
                    Some(merchant),
                    crate::detection::points::client_group(ip),
                )
                .respond(crate::detection::points::client_scope(ip))
                .from_ip(Some(ip));
                decisions.sighted(sighting).await;
            }
            Ok(_) => {}
            Err(err) => tracing::warn!(error = %err, "looking for a replayed token failed"),
        }
    }

    /// Verifies an address with the emailed link's token.
    pub async fn verify_email(&self, space: Space<'_>, token: &str, client: &Client) -> Result<String, DomainError> {
        let merchant = space.merchant;
        let digest = self.keyed("link", token.trim().as_bytes());
        let now = self.now();
        let Some(challenge) = self.repo.challenge_by_proof(&digest, now).await? else {
            self.note_replay(merchant, &digest, client).await;
            return Err(bad_link());
        };
        if &challenge.merchant_id != merchant || challenge.purpose != ChallengePurpose::VerifyEmail {
            return Err(bad_link());
        }
        // Another mode's link answers as an unknown one.
        self.customer_record(space, &challenge.customer_id).await.map_err(|_| bad_link())?;
        if self.repo.redeem_proof(&digest, now).await?.is_none() {
            return Err(bad_link());
        }
        if let Some(binding) = &challenge.binding_digest {
            self.complete_email_change(space, &challenge.customer_id, binding, client).await?;
            return Ok(challenge.customer_id);
        }
        self.repo.mark_email_verified(merchant, &challenge.customer_id, now).await?;
        self.audit_factor(space, &challenge.customer_id, client, "customer.email_verified", Outcome::Success).await?;
        Ok(challenge.customer_id)
    }

    /// Starts changing the signed-in customer's address. Accounts with a second factor need a
    /// step-up proof for purpose `email_change` bound to `{"email": <the new address as given>}`;
    /// accounts without one, their current password (and a recent sign-in). A link goes to the
    /// new address (the change happens when it is opened) and a notice to the current one.
    pub async fn request_email_change(
        &self,
        session: &CustomerSession,
        new_email: &str,
        proof: Option<&str>,
        password: Option<Secret<String>>,
        client: &Client,
    ) -> Result<(), DomainError> {
        let merchant = &session.merchant_id;
        let space = session.space();
        let email = self.email(session.mode, new_email, "/email")?;
        let customer = self.customer_record(space, &session.customer_id).await?;
        // Accounts with a second factor (TOTP or a passkey) must step up with it; others confirm
        // with their password.
        let passkeys = match self.passkeys.as_deref() {
            Some(p) => p.has_any(crate::passkeys::Owner { kind: "customer", id: &customer.id, merchant }).await?,
            None => false,
        };
        let has_factor = customer.totp_confirmed_at.is_some() || passkeys;
        match (proof, password) {
            (Some(proof), _) => {
                let mut binding = serde_json::Map::new();
                binding.insert("email".into(), serde_json::Value::String(new_email.to_owned()));
                self.spend_own_proof(session, proof, "email_change", &binding).await?;
            }
            (None, Some(password)) if !has_factor => {
                self.require_recent_sign_in(session)?;
                if !self.hasher.verify(customer.password_hash.as_deref(), password).await? {
                    self.audit_factor(
                        space,
                        &customer.id,
                        client,
                        "customer.email_change_requested",
                        Outcome::Denied("wrong_password"),
                    )
                    .await?;
                    return Err(DomainError::Rejected {
                        code: "wrong_password",
                        errors: vec![FieldError::new("/current_password", "is not right")],
                    });
                }
            }
            _ => {
                return Err(DomainError::Rejected {
                    code: "step_up_required",
                    errors: vec![FieldError::new(
                        "/proof",
                        "changing the address needs a step-up proof (purpose email_change, binding {\"email\": <new address>}), \
                         or the current password for an account without a second factor",
                    )],
                });
            }
        }
        if email.lookup == customer.email_lookup {
            return Err(DomainError::Conflict("same_email", "this is the account's address already"));
        }
        let (_, sealed) =
            self.seal_for(space, &customer.id, "pending_email", email.canonical.expose().as_bytes()).await?;
        self.repo.set_pending_email(merchant, &customer.id, &email.lookup, &sealed).await?;
        let binding = self.keyed("email_change", &email.lookup);
        let token = self.link_token(&customer, ChallengePurpose::VerifyEmail, EMAIL_CHANGE_TTL, Some(binding)).await?;
        let confirm = Notice {
            kind: "confirm_email_change",
            subject: "Confirm your new email address",
            intro: "Please confirm that this is your new email address for your account. The link works once, for 1 hour.",
            facts: Vec::new(),
            link: Some(("Confirm my new address", self.link("verify-email", &token))),
            closing: "If you did not ask for this, ignore this mail: nothing changes without the link.",
        };
        self.send_to(email.canonical.expose(), &confirm, None).await?;
        let masked = mask(email.canonical.expose());
        self.notify(&customer, Notice {
            kind: "email_change_requested",
            subject: "A change of your email address was requested",
            intro: "Someone signed in to your account asked to change its email address. It changes only once the new address is confirmed.",
            facts: vec![("New address", masked), ("Time (UTC)", self.now().to_rfc3339())],
            link: None,
            closing: "If this was not you, sign in, end your other sessions and change your password now.",
        }).await?;
        self.audit_factor(space, &customer.id, client, "customer.email_change_requested", Outcome::Success).await?;
        Ok(())
    }

    /// Applies a confirmed email change and tells the old address.
    async fn complete_email_change(
        &self,
        space: Space<'_>,
        customer_id: &str,
        binding: &[u8],
        client: &Client,
    ) -> Result<(), DomainError> {
        let merchant = space.merchant;
        let customer = self.customer_record(space, customer_id).await?;
        let Some((lookup, sealed)) = &customer.pending_email else { return Err(bad_link()) };
        if !strongroom_crypto::constant_time_eq(&self.keyed("email_change", lookup), binding) {
            // A newer change replaced the one this link was for.
            return Err(bad_link());
        }
        let new_email = self.open_for(merchant, customer_id, "pending_email", &customer.data_key_id, sealed).await?;
        let (_, resealed) = self.seal_for(space, customer_id, "email", new_email.expose()).await?;
        if !self.repo.apply_pending_email(merchant, customer_id, lookup, &resealed, self.now()).await? {
            return Err(DomainError::Conflict("email_taken", "another account has this address"));
        }
        let masked = mask(&String::from_utf8_lossy(new_email.expose()));
        // The notice goes to the old address: `customer` still holds it.
        self.notify(
            &customer,
            Notice {
                kind: "email_changed",
                subject: "Your email address was changed",
                intro: "The email address of your account was changed. Mail now goes to the new address.",
                facts: vec![("New address", masked), ("Time (UTC)", self.now().to_rfc3339())],
                link: None,
                closing: "If this was not you, contact the shop at once: someone controls your account.",
            },
        )
        .await?;
        self.audit_factor(space, customer_id, client, "customer.email_changed", Outcome::Success).await?;
        Ok(())
    }

    /// Starts a password reset: mails a 15-minute single-use link when the address has an active
    /// account. The answer is the same either way.
    pub async fn request_password_reset(
        &self,
        space: Space<'_>,
        email: &str,
        client: &Client,
    ) -> Result<(), DomainError> {
        let merchant = space.merchant;
        let Ok(email) = self.email(space.mode, email, "/email") else { return Ok(()) };
        // One reset mail a minute per address: a flood of requests cannot flood a mailbox.
        let now = self.now();
        if self.resets_sent.get(&email.lookup, now).is_some() {
            return Ok(());
        }
        self.resets_sent.put(email.lookup.clone(), (), now);
        let customer = self.repo.customer_by_email(merchant, space.mode, &email.lookup).await?;
        let event = |kind, id: Option<String>, outcome| {
            AuditEvent::by(kind, id, "customer.password_reset_requested", outcome)
                .for_merchant(merchant)
                .in_mode(space.mode)
                .from_source(client.ip, client.request_id.clone())
        };
        match customer {
            Some(customer) if customer.status == AccountStatus::Active => {
                let token = self.link_token(&customer, ChallengePurpose::PasswordReset, RESET_TTL, None).await?;
                let second = if customer.totp_confirmed_at.is_some() {
                    " You will also need a code from your authenticator app or a recovery code."
                } else {
                    ""
                };
                let intro: &'static str = if second.is_empty() {
                    "A password reset was asked for your account. The link works once, for 15 minutes."
                } else {
                    "A password reset was asked for your account. The link works once, for 15 minutes. You will also need a code from your authenticator app or a recovery code."
                };
                let notice = Notice {
                    kind: "password_reset",
                    subject: "Reset your password",
                    intro,
                    facts: Vec::new(),
                    link: Some(("Choose a new password", self.link("reset-password", &token))),
                    closing: "If you did not ask for this, ignore this mail: your password stays as it is.",
                };
                self.notify(&customer, notice).await?;
                self.audit.record(event(ActorKind::Customer, Some(customer.id.clone()), Outcome::Success)).await?;
            }
            _ => {
                self.audit.record(event(ActorKind::Anonymous, None, Outcome::Denied("no_active_account"))).await?;
            }
        }
        Ok(())
    }

    /// Completes a reset: the link's token, the new password and, when the account has a second
    /// factor, that factor. Every session ends and sign-in failures are forgotten; nobody is
    /// signed in by it.
    pub async fn complete_password_reset(
        &self,
        space: Space<'_>,
        token: &str,
        new_password: Secret<String>,
        factor: Option<FactorAnswer>,
        client: &Client,
    ) -> Result<(), DomainError> {
        let merchant = space.merchant;
        let digest = self.keyed("link", token.trim().as_bytes());
        let now = self.now();
        let Some(challenge) = self.repo.challenge_by_proof(&digest, now).await? else {
            self.note_replay(merchant, &digest, client).await;
            return Err(bad_link());
        };
        if &challenge.merchant_id != merchant || challenge.purpose != ChallengePurpose::PasswordReset {
            return Err(bad_link());
        }
        // Another mode's link answers as an unknown one.
        let customer = self.customer_record(space, &challenge.customer_id).await.map_err(|_| bad_link())?;
        if customer.status != AccountStatus::Active {
            return Err(bad_link());
        }
        self.check_new_password(&customer, &new_password).await?;
        if customer.totp_confirmed_at.is_some() {
            let answered = match &factor {
                Some(answer) => self.answer_challenge(&challenge.id, &customer, answer, client).await?,
                None => None,
            };
            if answered.is_none() {
                self.audit_factor(
                    space,
                    &customer.id,
                    client,
                    "customer.password_reset",
                    Outcome::Denied("second_factor_missing_or_wrong"),
                )
                .await?;
                return Err(DomainError::InvalidFactor);
            }
        }
        if self.repo.redeem_proof(&digest, now).await?.is_none() {
            return Err(bad_link());
        }
        let hash = self.hasher.hash(new_password).await?;
        self.repo.set_password(merchant, &customer.id, &hash, now).await?;
        self.repo.clear_login_failures(merchant, &customer.email_lookup).await?;
        self.repo.spend_links(&customer.id, ChallengePurpose::PasswordReset, now).await?;
        self.sessions.end_all(merchant, &customer.id, None).await?;
        self.audit_factor(space, &customer.id, client, "customer.password_reset", Outcome::Success).await?;
        // The owner proved the mailbox and chose a password the guesser does not know: the
        // detector's lock and step-up on the account end (a staff member's decisions stay).
        if let Some(decisions) = self.decisions.get()
            && let Err(err) = decisions.lift_after_reset(merchant, &customer.id).await
        {
            tracing::warn!(error = %err, "lifting the detector's decisions after a password reset failed");
        }
        self.notify(
            &customer,
            Notice::changed(
                "password_changed",
                "The password of your account was reset, and every session was ended.",
                &now.to_rfc3339(),
            ),
        )
        .await?;
        Ok(())
    }

    /// Sets the anti-phishing phrase every mail shows (3 to 64 characters; empty clears it).
    pub async fn set_phrase(
        &self,
        session: &CustomerSession,
        phrase: &str,
        client: &Client,
    ) -> Result<(), DomainError> {
        self.require_recent_sign_in(session)?;
        let phrase = phrase.trim();
        let merchant = &session.merchant_id;
        let space = session.space();
        if phrase.is_empty() {
            self.repo.set_phrase(merchant, &session.customer_id, None).await?;
        } else {
            let count = phrase.chars().count();
            if !(3..=64).contains(&count) || phrase.chars().any(char::is_control) {
                return Err(DomainError::invalid("/phrase", "must be 3 to 64 printable characters"));
            }
            // Every mail shows the phrase.
            crate::free_text::check("/phrase", phrase)?;
            let (_, sealed) = self.seal_for(space, &session.customer_id, "phrase", phrase.as_bytes()).await?;
            self.repo.set_phrase(merchant, &session.customer_id, Some(&sealed)).await?;
        }
        self.audit_factor(space, &session.customer_id, client, "customer.phrase_set", Outcome::Success).await?;
        Ok(())
    }

    /// Sends a notice after a change, reading the customer afresh.
    pub(super) async fn notify_change(
        &self,
        space: Space<'_>,
        customer: &str,
        kind: &'static str,
        what: &'static str,
    ) -> Result<(), DomainError> {
        if let Ok(record) = self.customer_record(space, customer).await {
            let now: Timestamp = self.now();
            self.notify(&record, Notice::changed(kind, what, &now.to_rfc3339())).await?;
        }
        Ok(())
    }
}
