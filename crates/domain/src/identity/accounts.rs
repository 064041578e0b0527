//! Registration, sign-in (password, then the second factor when one is enrolled), password change
//! and the customer's own view of the account.
//! Must never: answer differently, or measurably faster, for an unknown email than for a wrong
//! password; verify a password while its subject is throttled; keep a password after hashing.

use strongroom_types::Secret;

use super::throttle::{SubjectGate, subject_gate};
use super::{ChallengeId, Client, CustomerId, CustomerSession, IdentityService, short_agent};
use crate::DomainError;
use crate::audit::event::{ActorKind, AuditEvent, Outcome};
use crate::modes::{Mode, Space};
use crate::ports::{AccountStatus, ChallengePurpose, ChallengeRecord, CustomerRecord};
use crate::vault::values::{ValueKind, prepare};

/// A new customer.
#[derive(Clone)]
pub struct Registration {
    /// Their email.
    pub email: String,
    /// Their password (`None`: a passkey-only account, to be completed with a passkey).
    pub password: Option<Secret<String>>,
}

impl std::fmt::Debug for Registration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registration").field("has_password", &self.password.is_some()).finish_non_exhaustive()
    }
}

/// The customer as they see themselves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomerView {
    /// `cus_…`
    pub id: String,
    /// Their email.
    pub email: String,
    /// Whether it is verified.
    pub email_verified: bool,
    /// Whether the customer is live (false: made with a test key).
    pub livemode: bool,
    /// Whether they have a password.
    pub has_password: bool,
    /// Whether TOTP is on.
    pub totp: bool,
    /// Unused recovery codes.
    pub recovery_codes_left: u32,
    /// Active or disabled.
    pub status: AccountStatus,
    /// When the account was made.
    pub created_at: strongroom_types::Timestamp,
}

/// What a correct password leads to.
#[derive(Debug)]
pub enum LoginOutcome {
    /// Signed in.
    Authenticated(super::sessions::IssuedSession),
    /// The password was right; a second factor must follow within the challenge's lifetime.
    SecondFactorRequired {
        /// `chl_…`: pass it with the code.
        challenge: String,
        /// What may answer it: `totp`, `recovery_code`.
        factors: Vec<&'static str>,
        /// When it stops.
        expires_at: strongroom_types::Timestamp,
    },
}

/// The canonical email and the keyed hash look-ups use.
pub(super) struct Email {
    pub canonical: Secret<String>,
    pub lookup: Vec<u8>,
}

impl IdentityService {
    /// Checks an email and computes its lookup hash in data space `mode` (a test account's hash
    /// differs from a live one's, so sign-in throttling and uniqueness never cross modes).
    pub(super) fn email(&self, mode: Mode, raw: &str, pointer: &str) -> Result<Email, DomainError> {
        let prepared = prepare(ValueKind::Email, &serde_json::Value::String(raw.to_owned()), self.now(), pointer)
            .map_err(|e| DomainError::Rejected { code: e.code, errors: vec![e.field] })?;
        let label = match mode {
            Mode::Live => "email",
            Mode::Test => "email:test",
        };
        let lookup = self.keyed(label, prepared.normalized.expose().as_bytes());
        Ok(Email { canonical: prepared.normalized, lookup })
    }

    /// Checks a customer's new password against the policy, with the words of their email.
    pub(super) async fn check_new_password(
        &self,
        customer: &CustomerRecord,
        new: &Secret<String>,
    ) -> Result<(), DomainError> {
        let merchant = &customer.merchant_id;
        let email =
            self.open_for(merchant, &customer.id, "email", &customer.data_key_id, &customer.email_sealed).await?;
        let personal = personal_words(&String::from_utf8_lossy(email.expose()));
        let personal: Vec<&str> = personal.iter().map(String::as_str).collect();
        self.policy.check_new(new.expose(), &personal, customer.totp_confirmed_at.is_some(), "/new_password").await
    }

    /// Strength feedback for a candidate password, with the words of `email` when given.
    pub fn rate_password(&self, password: &str, email: Option<&str>, has_mfa: bool) -> super::Strength {
        let personal = email.map(personal_words).unwrap_or_default();
        let personal: Vec<&str> = personal.iter().map(String::as_str).collect();
        self.policy.rate(password, &personal, has_mfa)
    }
}

/// The words of an email a password must not be built on.
fn personal_words(email: &str) -> Vec<String> {
    let (local, domain) = email.rsplit_once('@').unwrap_or((email, ""));
    let mut words: Vec<String> = local.split(['.', '_', '-', '+']).map(str::to_owned).collect();
    words.push(local.to_owned());
    if let Some(name) = domain.split('.').next() {
        words.push(name.to_owned());
    }
    words.retain(|w| w.chars().count() >= 3);
    words
}

impl IdentityService {
    /// Registers a customer. An email the merchant already has gets the same answer with an id
    /// that leads nowhere, so registration cannot be used to find out who is a customer (the
    /// audit log records the attempt).
    pub async fn register(
        &self,
        space: Space<'_>,
        input: Registration,
        client: &Client,
    ) -> Result<String, DomainError> {
        let merchant = space.merchant;
        let email = self.email(space.mode, &input.email, "/email")?;
        if let Some(password) = &input.password {
            let personal = personal_words(email.canonical.expose());
            let personal: Vec<&str> = personal.iter().map(String::as_str).collect();
            self.policy.check_new(password.expose(), &personal, false, "/password").await?;
        }
        let id = CustomerId::generate(self.entropy.as_ref()).as_str().to_owned();
        // The hash is computed even when the email is taken: the answer takes as long either way.
        let password_hash = match input.password {
            Some(password) => Some(self.hasher.hash(password).await?),
            None => None,
        };
        let now = self.now();
        let taken = || async {
            self.send_registration_attempt(email.canonical.expose()).await?;
            let event =
                AuditEvent::by(ActorKind::Anonymous, None, "customer.registered", Outcome::Denied("email_taken"));
            let event = event.for_merchant(merchant).in_mode(space.mode);
            self.audit.record(event.from_source(client.ip, client.request_id.clone())).await?;
            Ok::<(), DomainError>(())
        };
        if self.repo.customer_by_email(merchant, space.mode, &email.lookup).await?.is_some() {
            // Taken: no data key is made for an id that leads nowhere.
            taken().await?;
            return Ok(id);
        }
        let (data_key_id, email_sealed) =
            self.seal_for(space, &id, "email", email.canonical.expose().as_bytes()).await?;
        let record = CustomerRecord {
            id: id.clone(),
            merchant_id: merchant.clone(),
            mode: space.mode,
            email_lookup: email.lookup,
            email_sealed,
            data_key_id,
            email_verified_at: None,
            password_changed_at: password_hash.as_ref().map(|_| now),
            password_hash,
            status: AccountStatus::Active,
            totp_sealed: None,
            totp_confirmed_at: None,
            totp_last_step: None,
            phrase_sealed: None,
            pending_email: None,
            created_at: now,
        };
        if !self.repo.insert_customer(&record).await? {
            // Registered by a concurrent request since the check above. (The data key made for
            // this id stays behind, unused: a rare race, noted in docs/identity.md.)
            self.keys.forget(merchant, space.mode, &id, None);
            taken().await?;
            return Ok(id);
        }
        self.send_verification(&record, email.canonical.expose()).await?;
        let event = AuditEvent::by(ActorKind::Customer, Some(id.clone()), "customer.registered", Outcome::Success);
        let event = event.for_merchant(merchant).in_mode(space.mode);
        self.audit.record(event.from_source(client.ip, client.request_id.clone())).await?;
        Ok(id)
    }

    /// Signs in with email and password. A wrong password, an unknown email and a disabled account
    /// all answer [`DomainError::InvalidCredentials`] after the same work.
    pub async fn login(
        &self,
        space: Space<'_>,
        email: &str,
        password: Secret<String>,
        client: &Client,
    ) -> Result<LoginOutcome, DomainError> {
        let merchant = space.merchant;
        let now = self.now();
        let Ok(email) = self.email(space.mode, email, "/email") else {
            // A malformed email is a wrong credential like any other (and audited like one).
            let _ = self.hasher.verify(None, password).await?;
            self.audit_login(space, None, client, Outcome::Denied("malformed_email")).await?;
            return Err(DomainError::InvalidCredentials);
        };
        self.refuse_blocked_client(space, client).await?;
        if let Some(wait) = super::throttle::client_wait(self.decisions.get(), merchant.as_str(), client.ip).await {
            self.audit_login(space, None, client, Outcome::Denied("client_throttled")).await?;
            return Err(DomainError::Throttled { code: "login_throttled", retry_after: Some(wait) });
        }
        // One verification per email at a time on this node: a burst cannot pass one open gate.
        let Some(_slot) = self.in_flight.enter(&email.lookup) else {
            let _ = self.hasher.verify(None, password).await?;
            self.audit_login(space, None, client, Outcome::Denied("concurrent_attempt")).await?;
            return Err(DomainError::Throttled { code: "login_throttled", retry_after: Some(1) });
        };
        let failures = self.repo.login_failures(merchant, &email.lookup).await?;
        let gate = subject_gate(failures, now);
        if gate != SubjectGate::Open {
            let reason = if gate == SubjectGate::Stopped { "stopped" } else { "throttled" };
            self.audit_login(space, None, client, Outcome::Denied(reason)).await?;
            gate.check()?;
        }
        let customer = self.repo.customer_by_email(merchant, space.mode, &email.lookup).await?;
        let stored = customer.as_ref().and_then(|c| c.password_hash.as_deref());
        let verified = self.hasher.verify(stored, password.clone()).await?;
        if let Some(decisions) = self.decisions.get() {
            // The shop's failure ratio: every password checked counts.
            let failed = !verified || customer.as_ref().is_none_or(|c| c.status != AccountStatus::Active);
            decisions.sign_in_attempt(merchant, failed).await;
        }
        let customer = match customer {
            Some(c) if verified && c.status == AccountStatus::Active && self.is_locked(merchant, &c.id) => {
                // Locked by a decision: refused like a wrong password (an attacker who found
                // it learns nothing); the owner was mailed how to get back in.
                self.audit_login(space, Some(c.id.clone()), client, Outcome::Denied("account_locked")).await?;
                return Err(DomainError::InvalidCredentials);
            }
            Some(c) if verified && c.status == AccountStatus::Active => c,
            other => {
                let reason = match &other {
                    Some(c) if verified => {
                        debug_assert_eq!(c.status, AccountStatus::Disabled);
                        "disabled"
                    }
                    Some(_) => "wrong_password",
                    None => "unknown_email",
                };
                let _ = self.repo.add_login_failure(merchant, &email.lookup, now).await?;
                super::throttle::client_failed(self.decisions.get(), merchant.as_str(), client.ip).await;
                self.audit_login(space, other.as_ref().map(|c| c.id.clone()), client, Outcome::Denied(reason)).await?;
                if let (Some(decisions), Some(ip)) = (self.decisions.get(), client.ip) {
                    // Credential stuffing: many accounts (known or not, counted by keyed hash)
                    // from one client, counted on every node.
                    let group = crate::detection::points::client_group(ip);
                    let sighting = crate::detection::Sighting::new(
                        crate::detection::Point::CredentialStuffing,
                        Some(merchant),
                        group,
                    )
                    .item(&email.lookup)
                    .respond(crate::detection::points::client_scope(ip))
                    .from_ip(Some(ip));
                    decisions.sighted(sighting).await;
                    if ip.is_ipv4() {
                        // The same spread over a network's addresses, each below the threshold:
                        // counted for its /24, which a detection blocks.
                        let network = crate::detection::DecisionScope::Prefix(ip);
                        let sighting = crate::detection::Sighting::new(
                            crate::detection::Point::NetworkStuffing,
                            Some(merchant),
                            network.value(),
                        )
                        .item(&email.lookup)
                        .respond(network)
                        .from_ip(Some(ip));
                        decisions.sighted(sighting).await;
                    }
                    if other.is_none() {
                        // An address of no account: counted after the answer, off its path, so
                        // the answer takes as long as a wrong password's.
                        let (decisions, merchant, lookup) = (decisions.clone(), merchant.clone(), email.lookup.clone());
                        tokio::spawn(async move {
                            let sighting = crate::detection::Sighting::new(
                                crate::detection::Point::UnknownAccounts,
                                Some(&merchant),
                                crate::detection::points::client_group(ip),
                            )
                            .item(&lookup)
                            .respond(crate::detection::points::client_scope(ip))
                            .from_ip(Some(ip));
                            decisions.sighted(sighting).await;
                        });
                    }
                }
                if let (Some(decisions), Some(device)) = (self.decisions.get(), client.device.as_deref()) {
                    // The same from one device, whatever addresses it rotates through.
                    let sighting = crate::detection::Sighting::new(
                        crate::detection::Point::DeviceStuffing,
                        Some(merchant),
                        crate::detection::points::device_group(device),
                    )
                    .item(&email.lookup)
                    .respond(crate::detection::DecisionScope::Device(device.to_owned()))
                    .from_ip(client.ip);
                    decisions.sighted(sighting).await;
                }
                if let (Some(decisions), Some(account), "wrong_password") = (self.decisions.get(), &other, reason) {
                    // Password guessing: many wrong passwords for one account, from any clients.
                    let sighting = crate::detection::Sighting::new(
                        crate::detection::Point::PasswordGuessing,
                        Some(merchant),
                        account.id.clone(),
                    )
                    .respond(crate::detection::DecisionScope::Account(
                        account.id.clone(),
                        crate::detection::AccountAction::StepUp,
                    ))
                    .from_ip(client.ip)
                    .subject(account.id.clone());
                    decisions.sighted(sighting).await;
                }
                return Err(DomainError::InvalidCredentials);
            }
        };
        self.repo.clear_login_failures(merchant, &email.lookup).await?;
        if let Some(hash) = &customer.password_hash
            && self.hasher.needs_rehash(hash)
        {
            let fresh = self.hasher.hash(password).await?;
            self.repo.set_password(merchant, &customer.id, &fresh, customer.password_changed_at.unwrap_or(now)).await?;
        }
        self.watch_travel(merchant, &customer.id, client).await?;
        // After many failures, or while a decision asks for it (step-up), the right password
        // alone is suspect: without TOTP, an emailed code must follow (bound to this sign-in).
        let risky = failures.count >= super::throttle::EMAIL_CODE_AFTER || self.must_step_up(merchant, &customer.id);
        if customer.totp_confirmed_at.is_some() || risky {
            let id = ChallengeId::generate(self.entropy.as_ref()).as_str().to_owned();
            let expires_at = now.saturating_add(self.settings.login_challenge_ttl);
            let carried = serde_json::json!({
                "ip": client.ip.map(|ip| ip.to_string()),
                "user_agent": short_agent(client.user_agent.as_deref()),
            });
            let challenge = ChallengeRecord {
                id: id.clone(),
                merchant_id: merchant.clone(),
                customer_id: customer.id.clone(),
                purpose: ChallengePurpose::Login,
                binding_digest: None,
                session_id: None,
                client: Some(carried.to_string()),
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
            self.repo.insert_challenge(&challenge).await?;
            let factors = if customer.totp_confirmed_at.is_some() {
                vec!["totp", "recovery_code"]
            } else {
                self.send_login_code(&customer, &id).await?;
                vec!["email_code"]
            };
            self.audit_login(
                space,
                Some(customer.id.clone()),
                client,
                Outcome::SuccessBecause("second_factor_required".into()),
            )
            .await?;
            return Ok(LoginOutcome::SecondFactorRequired { challenge: id, factors, expires_at });
        }
        let known_device = self.known_device(&customer, client).await?;
        let issued = self.issue_session(&customer, "password", client).await?;
        self.audit_login(space, Some(customer.id.clone()), client, Outcome::Success).await?;
        if !known_device {
            self.notify_new_device(&customer, client).await?;
        }
        Ok(LoginOutcome::Authenticated(issued))
    }

    /// Impossible travel: the place of a sign-in that proved who it is (a right password, a
    /// passkey) against its account's previous sign-in's (its latest session); a detection steps
    /// the account up. Nothing without a GeoIP database.
    pub(super) async fn watch_travel(
        &self,
        merchant: &crate::merchants::MerchantId,
        customer: &str,
        client: &Client,
    ) -> Result<(), DomainError> {
        if let Some(decisions) = self.decisions.get().filter(|d| d.detects_travel()) {
            let previous = self.repo.last_session_of(customer).await?;
            let previous = previous.and_then(|(ip, at)| Some((ip?.parse().ok()?, at)));
            decisions.signed_in_from(merchant, customer, previous, client.ip).await;
        }
        Ok(())
    }

    pub(super) async fn audit_login(
        &self,
        space: Space<'_>,
        customer: Option<String>,
        client: &Client,
        outcome: Outcome,
    ) -> Result<(), DomainError> {
        let kind = if customer.is_some() { ActorKind::Customer } else { ActorKind::Anonymous };
        let event = AuditEvent::by(kind, customer, "customer.login", outcome)
            .for_merchant(space.merchant)
            .in_mode(space.mode)
            .from_source(client.ip, client.request_id.clone());
        self.audit.record(event).await?;
        Ok(())
    }

    /// Completes a sign-in with its second factor: a TOTP code or a recovery code.
    pub async fn login_second_factor(
        &self,
        space: Space<'_>,
        challenge_id: &str,
        factor: super::factors::FactorAnswer,
        client: &Client,
    ) -> Result<super::sessions::IssuedSession, DomainError> {
        let merchant = space.merchant;
        let now = self.now();
        let challenge = self
            .repo
            .challenge(merchant, challenge_id)
            .await?
            .filter(|c| c.purpose == ChallengePurpose::Login)
            .ok_or(DomainError::InvalidFactor)?;
        let customer = self.customer_record(space, &challenge.customer_id).await?;
        if customer.status != AccountStatus::Active {
            return Err(DomainError::InvalidFactor);
        }
        self.refuse_blocked_client(space, client).await?;
        let used = self.answer_challenge(&challenge.id, &customer, &factor, client).await?;
        let Some(used) = used else {
            self.audit_factor(
                space,
                &customer.id,
                client,
                "customer.login_second_factor",
                Outcome::Denied("wrong_code_or_spent"),
            )
            .await?;
            if let Some(decisions) = self.decisions.get() {
                // Whoever answers has the password: many wrong codes block the client guessing.
                let mut sighting = crate::detection::Sighting::new(
                    crate::detection::Point::CodeGuessing,
                    Some(merchant),
                    customer.id.clone(),
                )
                .from_ip(client.ip)
                .subject(customer.id.clone());
                if let Some(ip) = client.ip {
                    sighting = sighting.respond(crate::detection::points::client_scope(ip));
                }
                decisions.sighted(sighting).await;
            }
            return Err(DomainError::InvalidFactor);
        };
        if !self.repo.complete_challenge(&challenge.id, now, None).await? {
            return Err(DomainError::InvalidFactor);
        }
        // The session records the browser that gave the password, not the one that gave the code.
        let carried: serde_json::Value =
            challenge.client.as_deref().and_then(|c| serde_json::from_str(c).ok()).unwrap_or_default();
        let first = Client {
            ip: carried["ip"].as_str().and_then(|ip| ip.parse().ok()).or(client.ip),
            user_agent: carried["user_agent"].as_str().map(str::to_owned).or_else(|| client.user_agent.clone()),
            request_id: client.request_id.clone(),
            ip_is_the_customers: client.ip_is_the_customers,
            device: client.device.clone(),
        };
        let known_device = self.known_device(&customer, &first).await?;
        let issued = self.issue_session(&customer, &format!("password+{used}"), &first).await?;
        if !known_device {
            self.notify_new_device(&customer, &first).await?;
        }
        self.audit_factor(
            space,
            &customer.id,
            client,
            "customer.login_second_factor",
            Outcome::SuccessBecause(used.to_owned()),
        )
        .await?;
        Ok(issued)
    }

    /// Whether the customer has signed in from this browser before (no user agent: assume yes,
    /// rather than mail on every backend call that does not pass one).
    pub(super) async fn known_device(&self, customer: &CustomerRecord, client: &Client) -> Result<bool, DomainError> {
        match super::short_agent(client.user_agent.as_deref()) {
            Some(agent) => Ok(self.repo.has_session_from(&customer.id, &agent).await?),
            None => Ok(true),
        }
    }

    pub(super) async fn notify_new_device(
        &self,
        customer: &CustomerRecord,
        client: &Client,
    ) -> Result<(), DomainError> {
        let agent = super::short_agent(client.user_agent.as_deref()).unwrap_or_else(|| "unknown".to_owned());
        let ip = client.ip.map_or_else(|| "unknown".to_owned(), |ip| ip.to_string());
        self.notify(customer, super::notices::Notice::new_device(&agent, &ip, &self.now().to_rfc3339())).await
    }

    pub(super) async fn audit_factor(
        &self,
        space: Space<'_>,
        customer: &str,
        client: &Client,
        action: &'static str,
        outcome: Outcome,
    ) -> Result<(), DomainError> {
        let event = AuditEvent::by(ActorKind::Customer, Some(customer.to_owned()), action, outcome)
            .for_merchant(space.merchant)
            .in_mode(space.mode)
            .from_source(client.ip, client.request_id.clone());
        self.audit.record(event).await?;
        Ok(())
    }

    /// A customer of the data space; another merchant's or mode's answers as a missing one.
    pub(super) async fn customer_record(&self, space: Space<'_>, id: &str) -> Result<CustomerRecord, DomainError> {
        self.repo.customer(space.merchant, space.mode, id).await?.ok_or(DomainError::NotFound)
    }

    /// The signed-in customer's account.
    pub async fn me(&self, session: &CustomerSession) -> Result<CustomerView, DomainError> {
        let customer = self.customer_record(session.space(), &session.customer_id).await?;
        self.view(&customer).await
    }

    /// A customer of the caller's data space, for the shop's backend.
    pub async fn customer(&self, space: Space<'_>, id: &str) -> Result<CustomerView, DomainError> {
        let customer = self.customer_record(space, id).await?;
        self.view(&customer).await
    }

    async fn view(&self, customer: &CustomerRecord) -> Result<CustomerView, DomainError> {
        let email = self
            .open_for(&customer.merchant_id, &customer.id, "email", &customer.data_key_id, &customer.email_sealed)
            .await?;
        let email = String::from_utf8(email.expose().clone()).map_err(|_| DomainError::Integrity)?;
        let recovery_codes_left =
            if customer.totp_confirmed_at.is_some() { self.repo.recovery_codes_left(&customer.id).await? } else { 0 };
        Ok(CustomerView {
            id: customer.id.clone(),
            email,
            email_verified: customer.email_verified_at.is_some(),
            livemode: customer.mode.is_live(),
            has_password: customer.password_hash.is_some(),
            totp: customer.totp_confirmed_at.is_some(),
            recovery_codes_left,
            status: customer.status,
            created_at: customer.created_at,
        })
    }

    /// Changes the password: the current one must be right (throttled like a sign-in). Other
    /// sessions end unless `keep_other_sessions`.
    pub async fn change_password(
        &self,
        session: &CustomerSession,
        current: Secret<String>,
        new: Secret<String>,
        keep_other_sessions: bool,
        client: &Client,
    ) -> Result<u64, DomainError> {
        let merchant = &session.merchant_id;
        let space = session.space();
        let customer = self.customer_record(session.space(), &session.customer_id).await?;
        let now = self.now();
        let subject = customer.email_lookup.clone();
        subject_gate(self.repo.login_failures(merchant, &subject).await?, now).check()?;
        if !self.hasher.verify(customer.password_hash.as_deref(), current).await? {
            self.repo.add_login_failure(merchant, &subject, now).await?;
            self.audit_factor(
                space,
                &customer.id,
                client,
                "customer.password_changed",
                Outcome::Denied("wrong_password"),
            )
            .await?;
            return Err(DomainError::Rejected {
                code: "invalid_credentials",
                errors: vec![crate::error::FieldError::new("/current_password", "is not the current password")],
            });
        }
        self.check_new_password(&customer, &new).await?;
        let hash = self.hasher.hash(new).await?;
        self.repo.set_password(merchant, &customer.id, &hash, now).await?;
        self.repo.clear_login_failures(merchant, &subject).await?;
        let ended = if keep_other_sessions { 0 } else { self.end_other_sessions(session, client).await? };
        self.audit_factor(space, &customer.id, client, "customer.password_changed", Outcome::Success).await?;
        self.notify_change(space, &customer.id, "password_changed", "The password of your account was changed.")
            .await?;
        Ok(ended)
    }

    /// Disables or re-enables a customer (the shop's backend); disabling ends every session.
    pub async fn set_status(
        &self,
        space: Space<'_>,
        id: &str,
        status: AccountStatus,
        actor: &crate::api_keys::Principal,
        client: &Client,
    ) -> Result<CustomerView, DomainError> {
        let merchant = space.merchant;
        // A customer's mode never changes, so checking it first leaves no race.
        self.customer_record(space, id).await?;
        if !self.repo.set_status(merchant, id, status, self.now()).await? {
            return Err(DomainError::NotFound);
        }
        self.forget_customer(id);
        let action = match status {
            AccountStatus::Active => "customer.enabled",
            AccountStatus::Disabled => "customer.disabled",
        };
        let event = actor
            .event(action, Outcome::Success)
            .for_merchant(merchant)
            .on("customer", id)
            .from_source(client.ip, client.request_id.clone());
        self.audit.record(event).await?;
        self.customer(space, id).await
    }

    /// Refuses a sign-in from a client intrusion detection blocked for this merchant (this
    /// node's decision or another's, or a staff member's): `429 client_blocked`, audited.
    pub(super) async fn refuse_blocked_client(&self, space: Space<'_>, client: &Client) -> Result<(), DomainError> {
        let Some(decision) =
            self.decisions.get().and_then(|d| d.blocking(Some(space.merchant), client.ip, client.device.as_deref()))
        else {
            return Ok(());
        };
        self.audit_login(space, None, client, Outcome::Denied("client_blocked")).await?;
        Err(crate::detection::blocked_error(&decision, self.now()))
    }
}
