//! Staff: the shop's own people. Accounts with mandatory second factors and PCI DSS password and
//! lock-out rules, sessions with a 15-minute idle timeout, roles that grant permissions
//! ([`roles`]), and four-eyes approval of dangerous actions ([`approvals`]).
//!
//! Owns: inviting staff (a single-use emailed link sets the first password), sign-in (password,
//! then TOTP; an account without a factor must enrol one before any session exists), lock-out
//! after [`LOCK_AFTER`] failures for [`LOCK_FOR`], password history, staff sessions and the
//! [`Principal`] they yield, role grants and custom roles.
//! Must never: issue a staff session without a second factor; tell a caller whether an email is
//! staff; store a password, token or seed in the clear; let anyone grant a role holding
//! permissions they lack themselves, or grant one without a second person's approval.

pub mod approvals;
mod passkeys;
pub mod roles;

use std::sync::Arc;
use std::time::Duration;

use data_encoding::BASE32_NOPAD;
use strongroom_crypto::{Key256, KeyedDigest, envelope, totp};
use strongroom_types::{Clock, Entropy, Secret, Timestamp, define_id};

use crate::DomainError;
use crate::api_keys::{Principal, Scope, StaffPrincipal};
use crate::audit::event::{ActorKind, AuditEvent, Outcome};
use crate::audit::log::AuditLog;
use crate::identity::{Client, PasswordHasher, PasswordPolicy};
use crate::mail::{Mail, Postman, escape_html};
use crate::merchants::MerchantId;
use crate::modes::Mode;
use crate::ports::{RoleRecord, StaffChallengeRecord, StaffGuard, StaffRecord, StaffRepository, StaffStatus};
use crate::sessions::{SessionOwner, SessionPolicy, Sessions};
use crate::vault::keys::VaultKeys;
use crate::vault::values::{ValueKind, prepare};

define_id!(StaffId, StaffKind, "stf");
define_id!(StaffSessionId, StaffSessionKind, "sss");

/// Failed sign-ins in a row that lock an account (PCI DSS 8.3.4: at most 10).
pub const LOCK_AFTER: u32 = 10;
/// How long a lock lasts (PCI DSS 8.3.4: at least 30 minutes).
pub const LOCK_FOR: Duration = Duration::from_secs(30 * 60);
/// Previous passwords a new one must differ from (PCI DSS 8.3.7).
pub const PASSWORD_HISTORY: usize = 4;
/// Shortest staff password (PCI DSS 8.3.6).
pub const MIN_PASSWORD: usize = 12;
/// Wrong codes a sign-in challenge takes.
const CHALLENGE_TRIES: u32 = 5;
const INVITE_PREFIX: &str = "sti";

/// Timeouts.
#[derive(Debug, Clone)]
pub struct StaffSettings {
    /// A staff session unused this long is dead (PCI DSS 8.2.8: at most 15 minutes).
    pub session_idle: Duration,
    /// A staff session is dead this long after sign-in.
    pub session_absolute: Duration,
    /// How long an invitation link works.
    pub invite_ttl: Duration,
    /// How long a sign-in waits for its second factor or enrolment.
    pub challenge_ttl: Duration,
    /// How long a validated session (with its permissions) is trusted from memory: the bound on
    /// how late another node sees a session ended, an account disabled or a role changed.
    pub session_cache_ttl: Duration,
    /// The issuer authenticator apps show.
    pub totp_issuer: String,
    /// Where invitation links point (`…/staff/invitation#token=…`).
    pub link_base: String,
    /// How recent a sign-in must be to approve a request.
    pub recent_sign_in: Duration,
}

impl Default for StaffSettings {
    fn default() -> Self {
        Self {
            session_idle: Duration::from_secs(15 * 60),
            session_absolute: Duration::from_secs(12 * 3600),
            invite_ttl: Duration::from_secs(72 * 3600),
            challenge_ttl: Duration::from_secs(10 * 60),
            session_cache_ttl: Duration::from_secs(1),
            totp_issuer: "strongroom staff".to_owned(),
            link_base: "https://127.0.0.1:8443".to_owned(),
            recent_sign_in: Duration::from_secs(15 * 60),
        }
    }
}

/// A staff member as the API shows them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaffView {
    /// `stf_…`
    pub id: String,
    /// Their email.
    pub email: String,
    /// Invited, active or disabled.
    pub status: StaffStatus,
    /// Whether TOTP is on.
    pub totp: bool,
    /// Whether the account is locked now, and until when.
    pub locked_until: Option<Timestamp>,
    /// Roles held.
    pub roles: Vec<String>,
    /// Permissions those roles give.
    pub permissions: Vec<Scope>,
    /// When it was made.
    pub created_at: Timestamp,
}

/// An invitation just made: the link's token is shown once (and mailed).
#[derive(Debug)]
pub struct Invitation {
    /// The new staff member.
    pub staff: StaffView,
    /// `sti_…`, for the invitation page.
    pub token: Secret<String>,
    /// When it stops working.
    pub expires_at: Timestamp,
}

/// What a right password leads to: never straight to a session.
#[derive(Debug)]
pub enum StaffLoginOutcome {
    /// Answer the challenge with a second factor.
    SecondFactorRequired {
        /// `chl_…`
        challenge: String,
        /// What may answer: `totp`, `passkey`.
        factors: Vec<&'static str>,
        /// When it stops.
        expires_at: Timestamp,
    },
    /// No second factor yet: enrol TOTP with this challenge, then confirm it with a first code.
    EnrolmentRequired {
        /// `chl_…`
        challenge: String,
        /// When it stops.
        expires_at: Timestamp,
    },
}

/// A session just issued.
#[derive(Debug)]
pub struct IssuedStaffSession {
    /// `sss_…`
    pub id: String,
    /// The staff member.
    pub staff_id: String,
    /// `sst_…`, shown once.
    pub token: Secret<String>,
    /// The idle deadline as of now.
    pub idle_expires_at: Timestamp,
    /// The absolute end.
    pub expires_at: Timestamp,
}

/// A TOTP seed being enrolled, shown once.
#[derive(Debug)]
pub struct StaffTotpEnrolment {
    /// Base32 seed.
    pub secret: Secret<String>,
    /// `otpauth://totp/…`
    pub otpauth_uri: Secret<String>,
}

/// Staff accounts, sessions, roles and approvals.
pub struct StaffService {
    repo: Arc<dyn StaffRepository>,
    keys: Arc<VaultKeys>,
    digest: Arc<KeyedDigest>,
    hasher: Arc<PasswordHasher>,
    policy: PasswordPolicy,
    audit: AuditLog,
    clock: Arc<dyn Clock>,
    entropy: Arc<dyn Entropy>,
    settings: StaffSettings,
    postman: Option<Postman>,
    sessions: Sessions<StaffPrincipal>,
    passkeys: Option<Arc<crate::passkeys::Passkeys>>,
    /// Intrusion detection: replayed invitation links are counted, and a locked staff member
    /// cannot sign in (wired once at start).
    decisions: std::sync::OnceLock<crate::detection::DecisionService>,
}

impl std::fmt::Debug for StaffService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StaffService").field("settings", &self.settings).finish_non_exhaustive()
    }
}

impl StaffService {
    /// The service; `digest` is the deployment's identity key.
    #[allow(clippy::too_many_arguments, reason = "the wiring passes each dependency once")]
    pub fn new(
        repo: Arc<dyn StaffRepository>,
        keys: Arc<VaultKeys>,
        digest: Arc<KeyedDigest>,
        hasher: Arc<PasswordHasher>,
        context_words: Vec<String>,
        audit: AuditLog,
        clock: Arc<dyn Clock>,
        entropy: Arc<dyn Entropy>,
        settings: StaffSettings,
    ) -> Self {
        let session_policy = SessionPolicy {
            idle: settings.session_idle,
            absolute: settings.session_absolute,
            cache_ttl: settings.session_cache_ttl,
        };
        let sessions = Sessions::new(
            SessionOwner::Staff,
            repo.clone(),
            digest.clone(),
            clock.clone(),
            entropy.clone(),
            session_policy,
            10_000,
        );
        let policy = PasswordPolicy {
            min_single_factor: MIN_PASSWORD,
            min_with_mfa: MIN_PASSWORD,
            context_words,
            ..PasswordPolicy::default()
        };
        Self {
            repo,
            keys,
            digest,
            hasher,
            policy,
            audit,
            clock,
            entropy,
            settings,
            postman: None,
            decisions: std::sync::OnceLock::new(),
            sessions,
            passkeys: None,
        }
    }

    /// Looks new passwords up in these breach corpora.
    pub fn with_breach_check(mut self, breaches: Arc<crate::identity::BreachCheck>) -> Self {
        self.policy.breaches = breaches;
        self
    }

    /// Lets staff use passkeys as their second factor.
    pub fn with_passkeys(mut self, passkeys: Arc<crate::passkeys::Passkeys>) -> Self {
        self.passkeys = Some(passkeys);
        self
    }

    /// Sends invitations and lock notices through this postman.
    pub fn with_postman(mut self, postman: Postman) -> Self {
        self.postman = Some(postman);
        self
    }

    /// The settings.
    pub fn settings(&self) -> &StaffSettings {
        &self.settings
    }

    fn now(&self) -> Timestamp {
        self.clock.now()
    }

    fn keyed(&self, label: &str, data: &[u8]) -> Vec<u8> {
        crate::identity::keyed(&self.digest, label, data)
    }

    fn fresh_secret(&self, prefix: &str) -> Secret<String> {
        crate::identity::fresh_secret(self.entropy.as_ref(), prefix)
    }

    fn well_formed(token: &str, prefix: &str) -> bool {
        crate::identity::is_secret_shaped(token, prefix)
    }

    fn email_lookup(&self, raw: &str) -> Result<(Secret<String>, Vec<u8>), DomainError> {
        let prepared = prepare(ValueKind::Email, &serde_json::Value::String(raw.to_owned()), self.now(), "/email")
            .map_err(|e| DomainError::Rejected { code: e.code, errors: vec![e.field] })?;
        let lookup = self.keyed("staff_email", prepared.normalized.expose().as_bytes());
        Ok((prepared.normalized, lookup))
    }

    async fn seal(&self, staff: &StaffRecord, field: &str, plaintext: &[u8]) -> Result<Vec<u8>, DomainError> {
        let key: Arc<Key256> =
            self.keys.data_key(&staff.data_key_id, &staff.merchant_id).await?.ok_or(DomainError::Gone)?;
        let aad = aad(&staff.merchant_id, &staff.id, field, &staff.data_key_id);
        Ok(envelope::seal(&key, &aad, plaintext, self.entropy.as_ref()))
    }

    async fn open(&self, staff: &StaffRecord, field: &str, sealed: &[u8]) -> Result<Secret<Vec<u8>>, DomainError> {
        let key: Arc<Key256> =
            self.keys.data_key(&staff.data_key_id, &staff.merchant_id).await?.ok_or(DomainError::Gone)?;
        let aad = aad(&staff.merchant_id, &staff.id, field, &staff.data_key_id);
        envelope::open(&key, &aad, sealed).map(Secret::new).map_err(|_| DomainError::Integrity)
    }

    async fn email_of(&self, staff: &StaffRecord) -> Result<String, DomainError> {
        let email = self.open(staff, "email", &staff.email_sealed).await?;
        Ok(String::from_utf8_lossy(email.expose()).into_owned())
    }

    async fn record(&self, event: AuditEvent, client: &Client) -> Result<(), DomainError> {
        self.audit.record(event.from_source(client.ip, client.request_id.clone())).await?;
        Ok(())
    }

    fn staff_event(&self, staff: &StaffRecord, action: &'static str, outcome: Outcome) -> AuditEvent {
        AuditEvent::by(ActorKind::Staff, Some(staff.id.clone()), action, outcome)
            .for_merchant(&staff.merchant_id)
            .on("staff", &staff.id)
    }

    fn render_mail(&self, to: String, subject: &str, kind: &'static str, lines: &[String]) -> Mail {
        let text = format!("{}\n\n{}\n", lines.join("\n\n"), self.settings.totp_issuer);
        let mut html = String::from("<!doctype html><html><body>");
        for line in lines {
            html.push_str(&format!("<p>{}</p>", escape_html(line)));
        }
        html.push_str("</body></html>");
        Mail {
            to: Secret::new(to),
            subject: format!("{}: {subject}", self.settings.totp_issuer),
            text: Secret::new(text),
            html: Secret::new(html),
            kind: kind.to_owned(),
        }
    }

    async fn post(&self, to: String, subject: &str, kind: &'static str, lines: &[String]) -> Result<(), DomainError> {
        let Some(postman) = &self.postman else {
            tracing::warn!(kind, "not mailed: this staff service has no postman (command-line use)");
            return Ok(());
        };
        postman.post(self.render_mail(to, subject, kind, lines)).await
    }

    /// The addresses of the merchant's active staff members holding the `security` role (they
    /// get the shop's security alert mails).
    pub async fn security_emails(&self, merchant: &MerchantId) -> Result<Vec<String>, DomainError> {
        let mut emails = Vec::new();
        for member in self.repo.list_staff(merchant).await? {
            if member.status == StaffStatus::Active && member.roles.iter().any(|r| r == "security") {
                emails.push(self.email_of(&member).await?);
            }
        }
        Ok(emails)
    }

    /// A security alert mail to `to` (kind `security_alert`), rendered like every staff mail.
    pub fn render_alert(&self, to: String, subject: &str, lines: &[String]) -> Mail {
        self.render_mail(to, subject, "security_alert", lines)
    }

    /// Mails every active owner of the merchant (an operational notice about the shop, such as a
    /// webhook endpoint disabled for failing); returns how many were mailed.
    pub async fn notify_owners(
        &self,
        merchant: &MerchantId,
        subject: &str,
        kind: &'static str,
        lines: &[String],
    ) -> Result<usize, DomainError> {
        let mut mailed = 0;
        for owner in self.repo.list_staff(merchant).await? {
            if owner.status != StaffStatus::Active || !owner.roles.iter().any(|r| r == "owner") {
                continue;
            }
            let email = self.email_of(&owner).await?;
            self.post(email, subject, kind, lines).await?;
            mailed += 1;
        }
        Ok(mailed)
    }

    /// The outbox messages of a staff event for the merchant's webhook endpoints, to be written
    /// with the change (none without an outbox).
    async fn events(
        &self,
        merchant: &MerchantId,
        event_type: &str,
        data: serde_json::Value,
    ) -> Result<Vec<crate::outbox::OutboxMessage>, DomainError> {
        match &self.postman {
            Some(postman) => postman.outbox().event_messages(Some(merchant), Mode::Live, event_type, data, false).await,
            None => Ok(Vec::new()),
        }
    }

    async fn custom_roles(&self, merchant: &MerchantId) -> Result<Vec<RoleRecord>, DomainError> {
        Ok(self.repo.roles(merchant).await?)
    }

    async fn view(&self, staff: &StaffRecord) -> Result<StaffView, DomainError> {
        let custom = self.custom_roles(&staff.merchant_id).await?;
        let now = self.now();
        Ok(StaffView {
            id: staff.id.clone(),
            email: self.email_of(staff).await?,
            status: staff.status,
            totp: staff.totp_confirmed_at.is_some(),
            locked_until: staff.locked_until.filter(|until| *until > now),
            roles: staff.roles.clone(),
            permissions: roles::permissions_of(&staff.roles, &custom),
            created_at: staff.created_at,
        })
    }

    async fn staff_of(&self, merchant: &MerchantId, id: &str) -> Result<StaffRecord, DomainError> {
        self.repo.staff(Some(merchant), id).await?.ok_or(DomainError::NotFound)
    }

    /// Invites a staff member with roles. By another staff member (`by`), who must hold every
    /// permission the roles give and `admin:staff`; roles beyond none need the four-eyes grant
    /// afterwards, so an invitation by staff carries no roles. `by: None` is the operator at the
    /// command line, who makes the first owner.
    pub async fn invite(
        &self,
        merchant: &MerchantId,
        email: &str,
        initial_roles: &[String],
        by: Option<&Principal>,
        client: &Client,
    ) -> Result<Invitation, DomainError> {
        let (canonical, lookup) = self.email_lookup(email)?;
        if by.is_some() && !initial_roles.is_empty() {
            return Err(DomainError::invalid(
                "/roles",
                "staff are invited without roles; grant roles afterwards (a second person approves)",
            ));
        }
        let custom = self.custom_roles(merchant).await?;
        for (i, role) in initial_roles.iter().enumerate() {
            if roles::builtin(role).is_none() && !custom.iter().any(|c| &c.name == role) {
                return Err(DomainError::invalid(format!("/roles/{i}"), "is not a role of this shop"));
            }
        }
        let now = self.now();
        let id = StaffId::generate(self.entropy.as_ref()).as_str().to_owned();
        // Staff belong to the merchant, not to a data space: their secrets are sealed under the
        // live space's own data key.
        let key = self.keys.data_key_for(merchant, Mode::Live, None).await?;
        let token = self.fresh_secret(INVITE_PREFIX);
        let expires_at = now.saturating_add(self.settings.invite_ttl);
        let mut record = StaffRecord {
            id: id.clone(),
            merchant_id: merchant.clone(),
            email_lookup: lookup,
            email_sealed: Vec::new(),
            data_key_id: key.id.clone(),
            password_hash: None,
            password_history: Vec::new(),
            password_changed_at: None,
            status: StaffStatus::Invited,
            failures: 0,
            locked_until: None,
            totp_sealed: None,
            totp_confirmed_at: None,
            totp_last_step: None,
            roles: initial_roles.to_vec(),
            invite_digest: Some(self.keyed("staff_invite", token.expose().as_bytes())),
            invite_expires_at: Some(expires_at),
            created_by: by.map_or_else(|| "cli".to_owned(), |p| p.actor_id().to_owned()),
            created_at: now,
        };
        record.email_sealed = self.seal(&record, "email", canonical.expose().as_bytes()).await?;
        // The account, its webhook event and its invitation mail commit together.
        let mut messages = self.events(merchant, "staff.invited", serde_json::json!({"staff": id})).await?;
        if let Some(postman) = &self.postman {
            let mail = self.invitation_mail(canonical.expose(), &token, expires_at);
            messages.push(postman.outbox().mail_message(Some(merchant), &mail)?);
        } else {
            // The caller (the command line) hands the link over itself and says so.
            tracing::debug!(kind = "staff_invitation", "invitation not mailed: the caller hands the link over");
        }
        if !self.repo.insert_staff(&record, &messages).await? {
            return Err(DomainError::Conflict("staff_exists", "a staff account has this email"));
        }
        let event = match by {
            Some(p) => p.event("staff.invited", Outcome::Success),
            None => AuditEvent::by(ActorKind::System, Some("cli".to_owned()), "staff.invited", Outcome::Success)
                .for_merchant(merchant),
        };
        self.record(event.on("staff", &id), client).await?;
        if let Some(postman) = &self.postman {
            postman.outbox().wake().notify_one();
        }
        Ok(Invitation { staff: self.view(&record).await?, token, expires_at })
    }

    fn invitation_mail(&self, to: &str, token: &Secret<String>, expires_at: Timestamp) -> Mail {
        let link =
            format!("{}/staff/invitation#token={}", self.settings.link_base.trim_end_matches('/'), token.expose());
        self.render_mail(
            to.to_owned(),
            "you are invited",
            "staff_invitation",
            &[
                "You are invited to the shop's staff console. Open this link to choose your password; then you will \
             add an authenticator app."
                    .to_owned(),
                link,
                format!("The link works once, until {}.", expires_at.to_rfc3339()),
            ],
        )
    }

    /// Accepts an invitation: sets the first password. The account still has no session: the
    /// next sign-in asks for a second factor to be enrolled.
    pub async fn accept_invitation(
        &self,
        token: &str,
        password: Secret<String>,
        client: &Client,
    ) -> Result<StaffView, DomainError> {
        let refused = || DomainError::Rejected {
            code: "invalid_invitation",
            errors: vec![crate::error::FieldError::new("/token", "is not a live invitation")],
        };
        if !Self::well_formed(token, INVITE_PREFIX) {
            return Err(refused());
        }
        let now = self.now();
        let digest = self.keyed("staff_invite", token.as_bytes());
        let Some(staff) = self.repo.staff_by_invite(&digest, now).await? else {
            self.note_replay(&digest, client).await;
            return Err(refused());
        };
        let email = self.email_of(&staff).await?;
        self.check_new_password(&staff, password.expose(), &email, "/password").await?;
        let hash = self.hasher.hash(password).await?;
        // Conditional on the invitation still being open: of parallel acceptances one wins.
        if !self.repo.accept_staff_invite(&staff.id, &digest, &hash, now).await? {
            return Err(refused());
        }
        self.record(self.staff_event(&staff, "staff.invitation_accepted", Outcome::Success), client).await?;
        let fresh = self.staff_of(&staff.merchant_id, &staff.id).await?;
        self.view(&fresh).await
    }

    /// Counts an invitation link refused because it was accepted already (a replay), for the
    /// merchant whose staff it was; a failure to look is logged, the answer stays the refusal.
    async fn note_replay(&self, digest: &[u8], client: &Client) {
        let (Some(decisions), Some(ip), true) = (self.decisions.get(), client.ip, client.ip_is_the_customers) else {
            return;
        };
        match self.repo.spent_invite_merchant(digest).await {
            Ok(Some(merchant)) => {
                let sighting = crate::detection::Sighting::new(
                    crate::detection::Point::ReplayedToken,
                    Some(&merchant),
                    crate::detection::points::client_group(ip),
                )
                .respond(crate::detection::points::client_scope(ip))
                .from_ip(Some(ip));
                decisions.sighted(sighting).await;
            }
            Ok(None) => {}
            Err(err) => tracing::warn!(error = %err, "looking for a replayed invitation failed"),
        }
    }

    /// Checks a new staff password (the field at `pointer`): PCI DSS length with letters and
    /// digits, the strength policy, the breach corpora, and none of the last [`PASSWORD_HISTORY`].
    async fn check_new_password(
        &self,
        staff: &StaffRecord,
        password: &str,
        email: &str,
        pointer: &str,
    ) -> Result<(), DomainError> {
        let has_letter = password.chars().any(char::is_alphabetic);
        let has_digit = password.chars().any(|c| c.is_ascii_digit());
        if !(has_letter && has_digit) {
            return Err(DomainError::Rejected {
                code: "weak_password",
                errors: vec![crate::error::FieldError::new(pointer, "must contain letters and digits")],
            });
        }
        let local = email.split('@').next().unwrap_or_default();
        self.policy.check_new(password, &[local, email], true, pointer).await?;
        let previous: Vec<&String> = staff.password_hash.iter().chain(staff.password_history.iter()).collect();
        for old in previous.into_iter().take(PASSWORD_HISTORY) {
            if self.hasher.verify(Some(old), Secret::new(password.to_owned())).await? {
                return Err(DomainError::Rejected {
                    code: "password_reused",
                    errors: vec![crate::error::FieldError::new(pointer, "must differ from the last 4 passwords")],
                });
            }
        }
        Ok(())
    }

    /// Signs in with email and password. A right password never yields a session by itself: it
    /// opens a challenge for the second factor (or its enrolment).
    pub async fn login(
        &self,
        email: &str,
        password: Secret<String>,
        client: &Client,
    ) -> Result<StaffLoginOutcome, DomainError> {
        let now = self.now();
        let anonymous = |reason| AuditEvent::by(ActorKind::Anonymous, None, "staff.login", Outcome::Denied(reason));
        let Ok((_, lookup)) = self.email_lookup(email) else {
            let _ = self.hasher.verify(None, password).await?;
            self.record(anonymous("malformed_email"), client).await?;
            return Err(DomainError::InvalidCredentials);
        };
        if let Some(wait) = crate::identity::throttle::client_wait(self.decisions.get(), "staff", client.ip).await {
            self.record(anonymous("client_throttled"), client).await?;
            return Err(DomainError::Throttled { code: "login_throttled", retry_after: Some(wait) });
        }
        let staff = self.repo.staff_by_email(&lookup).await?;
        let verified = self.hasher.verify(staff.as_ref().and_then(|s| s.password_hash.as_deref()), password).await?;
        let Some(staff) = staff else {
            crate::identity::throttle::client_failed(self.decisions.get(), "staff", client.ip).await;
            self.record(
                AuditEvent::by(ActorKind::Anonymous, None, "staff.login", Outcome::Denied("unknown_email")),
                client,
            )
            .await?;
            return Err(DomainError::InvalidCredentials);
        };
        let locked = staff.locked_until.is_some_and(|until| until > now);
        if staff.locked_until.is_some() && !locked {
            // A lock that ran out starts the count again.
            self.repo.clear_staff_failures(&staff.id).await?;
        }
        if locked || !verified || staff.status != StaffStatus::Active {
            let reason = if locked {
                "locked"
            } else if !verified {
                "wrong_password"
            } else {
                "not_active"
            };
            crate::identity::throttle::client_failed(self.decisions.get(), "staff", client.ip).await;
            if !verified && !locked {
                let failures =
                    self.repo.staff_login_failed(&staff.id, LOCK_AFTER, now.saturating_add(LOCK_FOR)).await?;
                if failures == LOCK_AFTER {
                    self.record(self.staff_event(&staff, "staff.locked", Outcome::Denied("too_many_failures")), client)
                        .await?;
                    if let Ok(email) = self.email_of(&staff).await {
                        self.post(
                            email,
                            "your account is locked",
                            "staff_locked",
                            &[
                                format!(
                                    "After {LOCK_AFTER} wrong passwords in a row, your staff account is locked for \
                                 30 minutes."
                                ),
                                "If this was not you, tell your security team: someone knows your email and is \
                             guessing your password."
                                    .to_owned(),
                            ],
                        )
                        .await?;
                    }
                }
            }
            self.record(self.staff_event(&staff, "staff.login", Outcome::Denied(reason)), client).await?;
            return Err(DomainError::InvalidCredentials);
        }
        if self.is_locked(&staff) {
            self.record(self.staff_event(&staff, "staff.login", Outcome::Denied("account_locked")), client).await?;
            return Err(DomainError::InvalidCredentials);
        }
        // Read again after the (queued, slow) hash: guesses sent in parallel must not pass a lock
        // that one of them set meanwhile. Failures are not cleared here, only after the second
        // factor, so guessing codes across fresh sign-ins still reaches the lock.
        let fresh = self.repo.staff(None, &staff.id).await?.ok_or(DomainError::InvalidCredentials)?;
        if fresh.locked_until.is_some_and(|until| until > self.now()) {
            self.record(self.staff_event(&staff, "staff.login", Outcome::Denied("locked")), client).await?;
            return Err(DomainError::InvalidCredentials);
        }
        let mut factors = Vec::new();
        if staff.totp_confirmed_at.is_some() {
            factors.push("totp");
        }
        if self.has_passkey(&staff).await? {
            factors.push("passkey");
        }
        let purpose = if factors.is_empty() { "enrol" } else { "login" };
        let id = crate::identity::ChallengeId::generate(self.entropy.as_ref()).as_str().to_owned();
        let expires_at = now.saturating_add(self.settings.challenge_ttl);
        let carried = serde_json::json!({
            "ip": client.ip.map(|ip| ip.to_string()),
            "user_agent": crate::identity::short_agent(client.user_agent.as_deref()),
        });
        self.repo
            .insert_staff_challenge(&StaffChallengeRecord {
                id: id.clone(),
                staff_id: staff.id.clone(),
                purpose: purpose.to_owned(),
                client: Some(carried.to_string()),
                created_at: now,
                expires_at,
                failures: 0,
                completed_at: None,
            })
            .await?;
        self.record(
            self.staff_event(&staff, "staff.login", Outcome::SuccessBecause(format!("{purpose}_required"))),
            client,
        )
        .await?;
        Ok(if purpose == "login" {
            StaffLoginOutcome::SecondFactorRequired { challenge: id, factors, expires_at }
        } else {
            StaffLoginOutcome::EnrolmentRequired { challenge: id, expires_at }
        })
    }

    async fn open_challenge(
        &self,
        id: &str,
        purpose: &str,
    ) -> Result<(StaffChallengeRecord, StaffRecord), DomainError> {
        let now = self.now();
        let challenge = self.repo.staff_challenge(id).await?.ok_or(DomainError::InvalidFactor)?;
        if challenge.purpose != purpose || challenge.completed_at.is_some() || challenge.expires_at <= now {
            return Err(DomainError::InvalidFactor);
        }
        let staff = self.repo.staff(None, &challenge.staff_id).await?.ok_or(DomainError::InvalidFactor)?;
        if staff.status != StaffStatus::Active || staff.locked_until.is_some_and(|until| until > now) {
            return Err(DomainError::InvalidFactor);
        }
        Ok((challenge, staff))
    }

    /// Checks a TOTP code against the staff member's seed (pending or confirmed); the step it
    /// matched, if any.
    async fn match_totp(&self, staff: &StaffRecord, code: &str) -> Result<Option<u64>, DomainError> {
        let Some(sealed) = &staff.totp_sealed else { return Ok(None) };
        let seed = self.open(staff, "totp", sealed).await?;
        let unix = u64::try_from(self.now().unix_millis() / 1000).unwrap_or(0);
        Ok(totp::verify(seed.expose(), code.trim(), unix, 1, staff.totp_last_step))
    }

    async fn wrong_code(&self, staff: &StaffRecord, client: &Client, action: &'static str) -> DomainError {
        let now = self.now();
        if let Ok(failures) = self.repo.staff_login_failed(&staff.id, LOCK_AFTER, now.saturating_add(LOCK_FOR)).await
            && failures == LOCK_AFTER
            && let Err(err) =
                self.record(self.staff_event(staff, "staff.locked", Outcome::Denied("too_many_failures")), client).await
        {
            return err;
        }
        if let Err(err) = self.record(self.staff_event(staff, action, Outcome::Denied("wrong_code")), client).await {
            return err;
        }
        DomainError::InvalidFactor
    }

    /// Completes a sign-in with a TOTP code.
    pub async fn login_second_factor(
        &self,
        challenge: &str,
        code: Secret<String>,
        client: &Client,
    ) -> Result<IssuedStaffSession, DomainError> {
        let (record, staff) = self.open_challenge(challenge, "login").await?;
        let now = self.now();
        if !self.repo.reserve_staff_challenge_try(&record.id, CHALLENGE_TRIES, now).await? {
            return Err(DomainError::InvalidFactor);
        }
        let Some(step) = self.match_totp(&staff, code.expose()).await? else {
            return Err(self.wrong_code(&staff, client, "staff.login_second_factor").await);
        };
        if !self.repo.use_staff_totp_step(&staff.id, step).await? {
            return Err(self.wrong_code(&staff, client, "staff.login_second_factor").await);
        }
        if !self.repo.complete_staff_challenge(&record.id, now).await? {
            return Err(DomainError::InvalidFactor);
        }
        self.repo.clear_staff_failures(&staff.id).await?;
        self.record(self.staff_event(&staff, "staff.login_second_factor", Outcome::Success), client).await?;
        self.issue_session(&staff, "password+totp", client).await
    }

    /// Starts TOTP enrolment for a sign-in that needs it: a fresh seed, shown once (calling again
    /// replaces the pending seed).
    pub async fn begin_enrolment(&self, challenge: &str, client: &Client) -> Result<StaffTotpEnrolment, DomainError> {
        let (_, staff) = self.open_challenge(challenge, "enrol").await?;
        let mut seed = [0u8; 20];
        self.entropy.fill(&mut seed);
        let sealed = self.seal(&staff, "totp", &seed).await?;
        let secret = BASE32_NOPAD.encode(&seed);
        zeroize::Zeroize::zeroize(&mut seed);
        if !self.repo.begin_staff_totp(&staff.id, &sealed).await? {
            return Err(DomainError::InvalidFactor);
        }
        let email = self.email_of(&staff).await?;
        let uri = totp::otpauth_uri(&self.settings.totp_issuer, &email, &secret);
        self.record(self.staff_event(&staff, "staff.totp_enrolment_started", Outcome::Success), client).await?;
        Ok(StaffTotpEnrolment { secret: Secret::new(secret), otpauth_uri: Secret::new(uri) })
    }

    /// Confirms TOTP enrolment with a first code, completing the sign-in.
    pub async fn confirm_enrolment(
        &self,
        challenge: &str,
        code: Secret<String>,
        client: &Client,
    ) -> Result<IssuedStaffSession, DomainError> {
        let (record, staff) = self.open_challenge(challenge, "enrol").await?;
        let now = self.now();
        if staff.totp_sealed.is_none() {
            return Err(DomainError::Conflict("enrolment_not_started", "start TOTP enrolment first"));
        }
        if !self.repo.reserve_staff_challenge_try(&record.id, CHALLENGE_TRIES, now).await? {
            return Err(DomainError::InvalidFactor);
        }
        let Some(step) = self.match_totp(&staff, code.expose()).await? else {
            return Err(self.wrong_code(&staff, client, "staff.totp_enrolled").await);
        };
        if !self.repo.confirm_staff_totp(&staff.id, step, now).await?
            || !self.repo.complete_staff_challenge(&record.id, now).await?
        {
            return Err(DomainError::InvalidFactor);
        }
        self.repo.clear_staff_failures(&staff.id).await?;
        self.record(self.staff_event(&staff, "staff.totp_enrolled", Outcome::Success), client).await?;
        self.issue_session(&staff, "password+totp", client).await
    }

    async fn issue_session(
        &self,
        staff: &StaffRecord,
        factors: &str,
        client: &Client,
    ) -> Result<IssuedStaffSession, DomainError> {
        if self.is_locked(staff) {
            self.record(self.staff_event(staff, "staff.login", Outcome::Denied("account_locked")), client).await?;
            return Err(DomainError::InvalidFactor);
        }
        let new = self.sessions.issue(&staff.merchant_id, &staff.id, factors, client).await?;
        Ok(IssuedStaffSession {
            idle_expires_at: self.sessions.idle_deadline(&new.record),
            expires_at: new.record.expires_at,
            id: new.record.id,
            staff_id: staff.id.clone(),
            token: new.token,
        })
    }

    /// Whether a bearer token is shaped like a staff session token.
    pub fn looks_like_session(token: &str) -> bool {
        token.starts_with("sst_")
    }

    /// Authenticates a staff session token: the principal (with the permissions of the staff
    /// member's roles), or `None` for anything that is not a live session of an active account.
    pub async fn authenticate(&self, token: &str) -> Result<Option<Principal>, DomainError> {
        let attach = |session: crate::sessions::SessionRecord| async move {
            let Some(staff) = self.repo.staff(Some(&session.merchant_id), &session.subject_id).await? else {
                return Ok(None);
            };
            if staff.status != StaffStatus::Active {
                return Ok(None);
            }
            let custom = self.custom_roles(&staff.merchant_id).await?;
            let permissions = roles::permissions_of(&staff.roles, &custom);
            let grantable =
                permissions.iter().copied().filter(|p| !approvals::FOUR_EYES_PERMISSIONS.contains(p)).collect();
            Ok(Some(StaffPrincipal {
                staff_id: staff.id.clone(),
                merchant_id: staff.merchant_id.clone(),
                session_id: session.id.clone(),
                grantable,
                permissions,
                roles: staff.roles.clone(),
                authenticated_at: session.created_at,
            }))
        };
        Ok(self.sessions.authenticate(token, attach).await?.map(|(_, principal)| Principal::staff(principal)))
    }

    /// Forgets the cached sessions of one staff member (after a change to their roles, status or
    /// sessions on this node; other nodes see it within the session cache's time to live).
    fn forget_sessions_of(&self, staff: &str) {
        self.sessions.forget_subject(staff);
    }

    /// Forgets every cached session (after a change to a custom role, which many may hold).
    pub(crate) fn forget_sessions(&self) {
        self.sessions.forget_all();
    }

    /// Wires intrusion detection (called once at start): replayed invitation links are reported
    /// to it, and its decisions about staff members (a lock) are enforced from now on.
    pub fn set_decisions(&self, decisions: crate::detection::DecisionService) {
        let _ = self.decisions.set(decisions);
    }

    /// Whether a decision locked this staff member (a step-up changes nothing: every staff
    /// sign-in passes a second factor already).
    fn is_locked(&self, staff: &StaffRecord) -> bool {
        self.decisions
            .get()
            .and_then(|d| d.account_decision(&staff.merchant_id, &staff.id, crate::detection::AccountAction::Lock))
            .is_some()
    }

    /// Whether `staff` is a staff member of `merchant`.
    pub async fn is_staff_of(&self, merchant: &MerchantId, staff: &str) -> Result<bool, DomainError> {
        Ok(self.repo.staff(Some(merchant), staff).await?.is_some())
    }

    /// A staff member was locked by `decision`: every session ends and they are mailed what
    /// happened and how to get back in. False: no such staff member.
    pub async fn account_locked(
        &self,
        merchant: &MerchantId,
        decision: &crate::ports::detection::DecisionRecord,
    ) -> Result<bool, DomainError> {
        let Some(staff) = self.repo.staff(Some(merchant), &decision.scope_value).await? else { return Ok(false) };
        self.sessions.end_all(merchant, &staff.id, None).await?;
        let email = self.email_of(&staff).await?;
        let lines = [
            format!(
                "Your staff account was locked by the shop's intrusion detection decision {} ({}): nobody can \
                 sign in to it until {} (UTC), and every session it had was ended.",
                decision.id,
                decision.reason,
                decision.until.to_rfc3339()
            ),
            "To get back in sooner, ask a colleague with the security role to lift the decision \
             (strongroom's /v1/security/decisions). If you did not expect this, tell your security team."
                .to_owned(),
        ];
        self.post(email, "your account is locked", "staff_account_locked", &lines).await?;
        Ok(true)
    }

    /// Ends every session of a staff member (all but `keep`).
    pub(crate) async fn end_sessions_of(
        &self,
        merchant: &MerchantId,
        staff: &str,
        keep: Option<&str>,
    ) -> Result<(), DomainError> {
        self.sessions.end_all(merchant, staff, keep).await?;
        Ok(())
    }

    /// The calling staff member.
    pub async fn me(&self, staff: &StaffPrincipal) -> Result<StaffView, DomainError> {
        let record = self.staff_of(&staff.merchant_id, &staff.staff_id).await?;
        self.view(&record).await
    }

    /// Ends the calling session.
    pub async fn logout(&self, staff: &StaffPrincipal, client: &Client) -> Result<(), DomainError> {
        self.sessions.end(&staff.merchant_id, &staff.staff_id, &staff.session_id).await?;
        let event = AuditEvent::by(ActorKind::Staff, Some(staff.staff_id.clone()), "staff.logout", Outcome::Success)
            .for_merchant(&staff.merchant_id);
        self.record(event, client).await?;
        Ok(())
    }

    /// Changes the caller's password (the current one is required); other sessions end.
    pub async fn change_password(
        &self,
        staff: &StaffPrincipal,
        current: Secret<String>,
        new: Secret<String>,
        client: &Client,
    ) -> Result<(), DomainError> {
        let record = self.staff_of(&staff.merchant_id, &staff.staff_id).await?;
        if !self.hasher.verify(record.password_hash.as_deref(), current).await? {
            // Guessing the current password from a stolen session counts towards the lock.
            let now = self.now();
            if self.repo.staff_login_failed(&record.id, LOCK_AFTER, now.saturating_add(LOCK_FOR)).await? >= LOCK_AFTER {
                self.end_sessions_of(&record.merchant_id, &record.id, None).await?;
            }
            self.record(self.staff_event(&record, "staff.password_changed", Outcome::Denied("wrong_password")), client)
                .await?;
            return Err(DomainError::Rejected {
                code: "wrong_password",
                errors: vec![crate::error::FieldError::new("/current_password", "is not right")],
            });
        }
        let email = self.email_of(&record).await?;
        self.check_new_password(&record, new.expose(), &email, "/new_password").await?;
        let hash = self.hasher.hash(new).await?;
        let mut history: Vec<String> = record.password_hash.iter().cloned().collect();
        history.extend(record.password_history.iter().cloned());
        history.truncate(PASSWORD_HISTORY - 1);
        let now = self.now();
        self.repo.set_staff_password(&record.id, &hash, &history, now).await?;
        self.end_sessions_of(&record.merchant_id, &record.id, Some(&staff.session_id)).await?;
        self.record(self.staff_event(&record, "staff.password_changed", Outcome::Success), client).await?;
        self.post(
            email,
            "your password was changed",
            "staff_password_changed",
            &[
                "The password of your staff account was changed, and your other sessions were ended.".to_owned(),
                "If this was not you, tell your security team at once.".to_owned(),
            ],
        )
        .await?;
        Ok(())
    }

    /// The merchant's staff.
    pub async fn list(&self, by: &Principal) -> Result<Vec<StaffView>, DomainError> {
        let mut views = Vec::new();
        for record in self.repo.list_staff(by.merchant_id()).await? {
            views.push(self.view(&record).await?);
        }
        Ok(views)
    }

    /// One staff member.
    pub async fn get(&self, by: &Principal, id: &str) -> Result<StaffView, DomainError> {
        let record = self.staff_of(by.merchant_id(), id).await?;
        self.view(&record).await
    }

    /// Disables or re-enables a staff member; disabling ends every session at once. Nobody
    /// disables themselves (a shop cannot lose its last owner by accident).
    pub async fn set_status(
        &self,
        by: &Principal,
        id: &str,
        status: StaffStatus,
        client: &Client,
    ) -> Result<StaffView, DomainError> {
        if by.actor_id() == id {
            return Err(DomainError::Forbidden("staff cannot disable or enable themselves"));
        }
        let record = self.staff_of(by.merchant_id(), id).await?;
        self.require_power_over(by, &record).await?;
        let guard = if status == StaffStatus::Disabled && record.roles.iter().any(|r| r == "owner") {
            StaffGuard::AnotherHolder("owner")
        } else {
            StaffGuard::None
        };
        if status == StaffStatus::Active && record.password_hash.is_none() {
            return Err(DomainError::Conflict(
                "invitation_open",
                "this staff member has not accepted the invitation yet",
            ));
        }
        let action = if status == StaffStatus::Disabled { "staff.disabled" } else { "staff.enabled" };
        let events = self.events(by.merchant_id(), action, serde_json::json!({"staff": id})).await?;
        if !self.repo.set_staff_status(by.merchant_id(), id, status, guard, &events).await? {
            if self.staff_of(by.merchant_id(), id).await?.status == status {
                return self.get(by, id).await;
            }
            return Err(if guard == StaffGuard::None { DomainError::NotFound } else { last_owner() });
        }
        if status == StaffStatus::Disabled {
            self.end_sessions_of(by.merchant_id(), id, None).await?;
        }
        self.forget_sessions_of(id);
        self.record(by.event(action, Outcome::Success).on("staff", id), client).await?;
        self.get(by, id).await
    }

    /// Lifts a lock before it ends.
    pub async fn unlock(&self, by: &Principal, id: &str, client: &Client) -> Result<StaffView, DomainError> {
        let record = self.staff_of(by.merchant_id(), id).await?;
        self.repo.clear_staff_failures(&record.id).await?;
        self.record(by.event("staff.unlocked", Outcome::Success).on("staff", id), client).await?;
        self.get(by, id).await
    }

    /// Removes a role (no approval: taking power away is never dangerous).
    pub async fn revoke_role(
        &self,
        by: &Principal,
        id: &str,
        role: &str,
        client: &Client,
    ) -> Result<StaffView, DomainError> {
        let record = self.staff_of(by.merchant_id(), id).await?;
        if !record.roles.iter().any(|r| r == role) {
            return Err(DomainError::NotFound);
        }
        self.require_power_over(by, &record).await?;
        let guard = if role == "owner" { StaffGuard::AnotherHolder("owner") } else { StaffGuard::None };
        let remaining: Vec<String> = record.roles.iter().filter(|r| *r != role).cloned().collect();
        let events =
            self.events(by.merchant_id(), "staff.role_revoked", serde_json::json!({"staff": id, "role": role})).await?;
        if !self.repo.set_staff_roles(by.merchant_id(), id, &record.roles, &remaining, guard, &events).await? {
            let fresh = self.staff_of(by.merchant_id(), id).await?;
            if guard != StaffGuard::None && fresh.roles == record.roles {
                return Err(last_owner());
            }
            return Err(DomainError::Conflict("roles_changed", "the roles changed meanwhile; read them again"));
        }
        self.forget_sessions_of(id);
        self.record(by.event("staff.role_revoked", Outcome::SuccessBecause(role.to_owned())).on("staff", id), client)
            .await?;
        self.get(by, id).await
    }

    /// Refuses unless `by` holds every permission `target`'s roles give: nobody disables or
    /// demotes someone more powerful than themselves.
    async fn require_power_over(&self, by: &Principal, target: &StaffRecord) -> Result<(), DomainError> {
        let custom = self.custom_roles(by.merchant_id()).await?;
        match roles::permissions_of(&target.roles, &custom).into_iter().find(|p| !by.has(*p)) {
            Some(missing) => Err(DomainError::MissingScope(missing)),
            None => Ok(()),
        }
    }

    /// The permissions a role gives (built-in or custom); `NotFound` for no such role.
    async fn role_permissions(&self, merchant: &MerchantId, role: &str) -> Result<Vec<Scope>, DomainError> {
        if let Some(b) = roles::builtin(role) {
            return Ok(b.permissions.to_vec());
        }
        let custom = self.custom_roles(merchant).await?;
        let found = custom.iter().find(|c| c.name == role).ok_or(DomainError::NotFound)?;
        Ok(found.permissions.iter().filter_map(|p| Scope::parse(p)).collect())
    }

    /// Every role of the shop: built-in, then custom.
    pub async fn roles(&self, merchant: &MerchantId) -> Result<Vec<RoleRecord>, DomainError> {
        let now = self.now();
        let mut all: Vec<RoleRecord> = roles::BUILTIN_ROLES
            .iter()
            .map(|b| RoleRecord {
                merchant_id: merchant.clone(),
                name: b.name.to_owned(),
                description: b.description.to_owned(),
                permissions: b.permissions.iter().map(|s| s.as_str().to_owned()).collect(),
                created_at: now,
            })
            .collect();
        all.extend(self.custom_roles(merchant).await?);
        Ok(all)
    }

    /// Defines a custom role. Its permissions must all be held by its creator.
    pub async fn create_role(
        &self,
        by: &Principal,
        name: &str,
        description: &str,
        permissions: &[String],
        client: &Client,
    ) -> Result<RoleRecord, DomainError> {
        roles::check_custom_name(name)?;
        crate::free_text::check_all([("/name", name), ("/description", description)])?;
        if description.chars().count() > 200 || description.chars().any(char::is_control) {
            return Err(DomainError::invalid("/description", "must be at most 200 characters, no control characters"));
        }
        let scopes = roles::parse_permissions(permissions)?;
        if let Some(missing) = scopes.iter().find(|s| !by.has(**s)) {
            return Err(DomainError::MissingScope(*missing));
        }
        let record = RoleRecord {
            merchant_id: by.merchant_id().clone(),
            name: name.to_owned(),
            description: description.to_owned(),
            permissions: scopes.iter().map(|s| s.as_str().to_owned()).collect(),
            created_at: self.now(),
        };
        let events = self.events(by.merchant_id(), "staff.role_created", serde_json::json!({"role": name})).await?;
        if !self.repo.insert_role(&record, &events).await? {
            return Err(DomainError::Conflict("role_exists", "a role has that name"));
        }
        self.record(by.event("staff.role_created", Outcome::SuccessBecause(name.to_owned())), client).await?;
        Ok(record)
    }

    /// Deletes a custom role; staff holding it lose its permissions at once.
    pub async fn delete_role(&self, by: &Principal, name: &str, client: &Client) -> Result<(), DomainError> {
        if roles::builtin(name).is_some() {
            return Err(DomainError::Forbidden("built-in roles cannot be deleted"));
        }
        // A role someone holds, or an open request would grant, cannot go: recreated under the
        // same name with other permissions it would change their power without an approval. The
        // store decides in one locked transaction, so a parallel grant or request cannot slip in.
        let events = self.events(by.merchant_id(), "staff.role_deleted", serde_json::json!({"role": name})).await?;
        if !self.repo.delete_role(by.merchant_id(), name, self.now(), &events).await? {
            if self.custom_roles(by.merchant_id()).await?.iter().any(|r| r.name == name) {
                return Err(DomainError::Conflict(
                    "role_in_use",
                    "revoke the role from everyone who holds it (and deny open requests for it) first",
                ));
            }
            return Err(DomainError::NotFound);
        }
        self.forget_sessions();
        self.record(by.event("staff.role_deleted", Outcome::SuccessBecause(name.to_owned())), client).await?;
        Ok(())
    }

    /// Deletes sessions and challenges that ended or expired more than a day ago.
    pub async fn purge(&self) -> Result<u64, DomainError> {
        let cutoff = Timestamp::from_unix_millis(self.now().unix_millis() - 24 * 3600 * 1000);
        Ok(self.sessions.purge(cutoff).await? + self.repo.purge_staff(cutoff, 10_000).await?)
    }
}

/// A shop never loses its last active owner through the API.
fn last_owner() -> DomainError {
    DomainError::Conflict("last_owner", "the shop's last active owner cannot be disabled or demoted")
}

fn aad(merchant: &MerchantId, staff: &str, field: &str, data_key_id: &str) -> Vec<u8> {
    format!("strongroom/staff/v1|{}|{staff}|{field}|{data_key_id}", merchant.as_str()).into_bytes()
}
