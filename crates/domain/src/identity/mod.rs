//! Identity: customer accounts, their passwords and second factors, sessions, and step-up
//! authentication bound to one action.
//!
//! Owns: registration and sign-in (with throttling that cannot tell known from unknown emails),
//! Argon2id passwords under a policy ([`passwords`]), TOTP with replay protection and single-use
//! recovery codes ([`factors`]), opaque session tokens stored as keyed hashes ([`sessions`]), and
//! step-up challenges whose proof is good for one exact purpose and binding, once ([`step_up`]).
//! A customer's email and TOTP seed are sealed under the customer's vault data key, so erasing
//! the customer's data (crypto-shredding) erases them too.
//! Must never: store a password, session token, proof, recovery code or TOTP seed in the clear;
//! tell a caller whether an account exists; log any of these secrets or an email address.

pub mod accounts;
pub mod breached;
pub mod email;
pub mod factors;
mod lockdown;
mod notices;
pub use notices::PaymentReceipt;
pub mod passkeys;
pub mod passwords;
pub mod sessions;
pub mod step_up;
pub mod throttle;

use std::sync::Arc;
use std::time::Duration;

use data_encoding::BASE32_NOPAD;
use strongroom_crypto::{Key256, KeyedDigest, envelope};
use strongroom_types::{Clock, Entropy, Secret, Timestamp, define_id};

use crate::DomainError;
use crate::audit::log::AuditLog;
use crate::cache::TtlCache;
use crate::merchants::MerchantId;
use crate::modes::{Mode, Space};
use crate::ports::IdentityRepository;
use crate::sessions::{SessionOwner, SessionPolicy, Sessions};
use crate::vault::keys::VaultKeys;

pub use breached::BreachCheck;
pub use passwords::{BREACHED_PASSWORD, HashingSettings, PasswordHasher, PasswordPolicy, Strength};

define_id!(CustomerId, CustomerKind, "cus");
define_id!(SessionId, SessionKind, "ses");
define_id!(ChallengeId, ChallengeKind, "chl");

/// Timeouts and names.
#[derive(Debug, Clone)]
pub struct IdentitySettings {
    /// A session unused this long is dead.
    pub session_idle: Duration,
    /// A session is dead this long after sign-in, used or not.
    pub session_absolute: Duration,
    /// How long a sign-in waits for its second factor.
    pub login_challenge_ttl: Duration,
    /// How long a step-up challenge, and then its proof, are good for.
    pub step_up_ttl: Duration,
    /// Wrong second factors a challenge takes before it is dead.
    pub challenge_tries: u32,
    /// The issuer an authenticator app shows next to the code.
    pub totp_issuer: String,
    /// Where the shop serves the pages mailed links open (`…/verify-email#token=…`,
    /// `…/reset-password#token=…`).
    pub link_base: String,
    /// How long a validated session is trusted from memory before the database is asked again
    /// (an ended session is dead at once on the node that ended it, on other nodes after this;
    /// at most one second by default).
    pub session_cache_ttl: Duration,
}

impl Default for IdentitySettings {
    fn default() -> Self {
        Self {
            session_idle: Duration::from_secs(30 * 60),
            session_absolute: Duration::from_secs(12 * 3600),
            login_challenge_ttl: Duration::from_secs(10 * 60),
            step_up_ttl: Duration::from_secs(5 * 60),
            challenge_tries: 5,
            totp_issuer: "strongroom".to_owned(),
            link_base: "https://127.0.0.1:8443/account".to_owned(),
            session_cache_ttl: Duration::from_secs(1),
        }
    }
}

/// Where a sign-in came from, as the shop's backend reports it (or the request shows it).
#[derive(Debug, Clone, Default)]
pub struct Client {
    /// The customer's address.
    pub ip: Option<std::net::IpAddr>,
    /// The customer's browser, shortened to 200 characters.
    pub user_agent: Option<String>,
    /// The request id.
    pub request_id: Option<String>,
    /// `ip` is the customer's own address (the browser's on the hosted pages, or the one the shop
    /// passed), not the caller's connection (a shop's server relaying for everyone), so intrusion
    /// detection may block it without blocking the shop.
    pub ip_is_the_customers: bool,
    /// The shop's id of the customer's device (`client.device`), if it sent one: counted and
    /// blocked by intrusion detection like an address.
    pub device: Option<String>,
}

/// A customer acting through a live session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomerSession {
    /// The merchant.
    pub merchant_id: MerchantId,
    /// The customer's data space.
    pub mode: Mode,
    /// `cus_…`
    pub customer_id: String,
    /// `ses_…`
    pub session_id: String,
    /// How the session was authenticated.
    pub factors: String,
    /// When it began (sign-in or step-up).
    pub authenticated_at: Timestamp,
}

impl CustomerSession {
    /// The data space the customer belongs to.
    pub fn space(&self) -> Space<'_> {
        Space { merchant: &self.merchant_id, mode: self.mode }
    }
}

/// How recent a sign-in must be to change security settings (enrol a factor, set the phrase).
pub const RECENT_SIGN_IN: Duration = Duration::from_secs(10 * 60);

/// Customers, factors, sessions and step-up.
pub struct IdentityService {
    repo: Arc<dyn IdentityRepository>,
    keys: Arc<VaultKeys>,
    digest: Arc<KeyedDigest>,
    hasher: Arc<PasswordHasher>,
    policy: PasswordPolicy,
    audit: AuditLog,
    clock: Arc<dyn Clock>,
    entropy: Arc<dyn Entropy>,
    settings: IdentitySettings,
    sessions: Sessions<Mode>,
    postman: Option<crate::mail::Postman>,
    in_flight: throttle::InFlight,
    /// Emails a reset was mailed to in the last minute (keyed hashes): one mail a minute at most.
    resets_sent: TtlCache<Vec<u8>, ()>,
    /// Passkey ceremonies and credentials (shared with staff).
    passkeys: Option<Arc<crate::passkeys::Passkeys>>,
    /// Intrusion detection's decisions: blocked clients are refused at sign-in, and credential
    /// stuffing blocks its client (wired once at start).
    pub(crate) decisions: std::sync::OnceLock<crate::detection::DecisionService>,
}

impl std::fmt::Debug for IdentityService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdentityService").field("settings", &self.settings).finish_non_exhaustive()
    }
}

/// Bytes of a session token, step-up proof or TOTP seed.
const SECRET_BYTES: usize = 32;

impl IdentityService {
    /// The service. `digest` is the deployment's identity key (keyed hashes of emails, tokens,
    /// proofs and recovery codes).
    #[allow(clippy::too_many_arguments, reason = "the wiring passes each dependency once")]
    pub fn new(
        repo: Arc<dyn IdentityRepository>,
        keys: Arc<VaultKeys>,
        digest: Arc<KeyedDigest>,
        hasher: Arc<PasswordHasher>,
        policy: PasswordPolicy,
        audit: AuditLog,
        clock: Arc<dyn Clock>,
        entropy: Arc<dyn Entropy>,
        settings: IdentitySettings,
    ) -> Self {
        let policy_of_sessions = SessionPolicy {
            idle: settings.session_idle,
            absolute: settings.session_absolute,
            cache_ttl: settings.session_cache_ttl,
        };
        let sessions = Sessions::new(
            SessionOwner::Customer,
            repo.clone(),
            digest.clone(),
            clock.clone(),
            entropy.clone(),
            policy_of_sessions,
            100_000,
        );
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
            sessions,
            postman: None,
            in_flight: throttle::InFlight::default(),
            resets_sent: TtlCache::new(Duration::from_secs(60), 100_000),
            passkeys: None,
            decisions: std::sync::OnceLock::new(),
        }
    }

    /// Looks new passwords up in these breach corpora.
    pub fn with_breach_check(mut self, breaches: Arc<BreachCheck>) -> Self {
        self.policy.breaches = breaches;
        self
    }

    /// Breached-password lookups so far: `(source, outcome, count)`, customers' and staff's
    /// alike when both services share one [`BreachCheck`].
    pub fn breach_counts(&self) -> Vec<(&'static str, &'static str, u64)> {
        self.policy.breaches.counts()
    }

    /// Lets customers register and sign in with passkeys.
    /// Wires intrusion detection's decisions (called once at start).
    pub fn set_decisions(&self, decisions: crate::detection::DecisionService) {
        let _ = self.decisions.set(decisions);
    }

    pub fn with_passkeys(mut self, passkeys: Arc<crate::passkeys::Passkeys>) -> Self {
        self.passkeys = Some(passkeys);
        self
    }

    /// Sends mail (address checks, reset links, security notices) through this postman.
    pub fn with_postman(mut self, postman: crate::mail::Postman) -> Self {
        self.postman = Some(postman);
        self
    }

    /// The settings.
    pub fn settings(&self) -> &IdentitySettings {
        &self.settings
    }

    /// A keyed hash with a label, so that hashes of one kind of secret never match another kind.
    fn keyed(&self, label: &str, data: &[u8]) -> Vec<u8> {
        keyed(&self.digest, label, data)
    }

    /// A fresh secret `prefix_<52 base32 characters>` (256 bits).
    fn fresh_secret(&self, prefix: &str) -> Secret<String> {
        fresh_secret(self.entropy.as_ref(), prefix)
    }

    /// Seals a customer secret (email, TOTP seed) under the customer's data key, bound to the
    /// merchant, the customer and what it is.
    async fn seal_for(
        &self,
        space: Space<'_>,
        customer: &str,
        field: &str,
        plaintext: &[u8],
    ) -> Result<(String, Vec<u8>), DomainError> {
        let merchant = space.merchant;
        let key = self.keys.data_key_for(merchant, space.mode, Some(customer)).await?;
        let aad = field_aad(merchant, customer, field, &key.id);
        Ok((key.id.clone(), envelope::seal(&key.key, &aad, plaintext, self.entropy.as_ref())))
    }

    /// Opens what [`IdentityService::seal_for`] sealed; `Gone` when the customer's data was erased.
    async fn open_for(
        &self,
        merchant: &MerchantId,
        customer: &str,
        field: &str,
        data_key_id: &str,
        sealed: &[u8],
    ) -> Result<Secret<Vec<u8>>, DomainError> {
        let key: Arc<Key256> = self.keys.data_key(data_key_id, merchant).await?.ok_or(DomainError::Gone)?;
        let aad = field_aad(merchant, customer, field, data_key_id);
        envelope::open(&key, &aad, sealed).map(Secret::new).map_err(|_| DomainError::Integrity)
    }

    fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// Refuses unless the session began within [`RECENT_SIGN_IN`]: a stolen, long-lived session
    /// cannot enrol the thief's second factor.
    pub(super) fn require_recent_sign_in(&self, session: &CustomerSession) -> Result<(), DomainError> {
        let limit = i64::try_from(RECENT_SIGN_IN.as_millis()).unwrap_or(i64::MAX);
        if self.now().millis_since(session.authenticated_at) > limit {
            return Err(DomainError::Forbidden(
                "sign in again first: security settings change only within 10 minutes of signing in",
            ));
        }
        Ok(())
    }
}

fn field_aad(merchant: &MerchantId, customer: &str, field: &str, data_key_id: &str) -> Vec<u8> {
    format!("strongroom/identity/v1|{}|{customer}|{field}|{data_key_id}", merchant.as_str()).into_bytes()
}

/// A keyed hash of `data` labelled with what it is (customers' and staff's secrets alike), so
/// that hashes of one kind of secret never match another kind.
pub(crate) fn keyed(digest: &KeyedDigest, label: &str, data: &[u8]) -> Vec<u8> {
    let mut message = Vec::with_capacity(label.len() + 1 + data.len());
    message.extend_from_slice(label.as_bytes());
    message.push(0);
    message.extend_from_slice(data);
    digest.digest(&message).to_vec()
}

/// A fresh secret `prefix_<52 base32 characters>` (256 bits).
pub(crate) fn fresh_secret(entropy: &dyn Entropy, prefix: &str) -> Secret<String> {
    let mut bytes = [0u8; SECRET_BYTES];
    entropy.fill(&mut bytes);
    let body = BASE32_NOPAD.encode(&bytes).to_ascii_lowercase();
    zeroize::Zeroize::zeroize(&mut bytes);
    Secret::new(format!("{prefix}_{body}"))
}

/// Whether `token` has the shape of a secret [`fresh_secret`] made with `prefix`.
pub(crate) fn is_secret_shaped(token: &str, prefix: &str) -> bool {
    token.strip_prefix(prefix).and_then(|rest| rest.strip_prefix('_')).is_some_and(|body| {
        body.len() == 52 && body.bytes().all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b))
    })
}

/// The user agent as stored: printable, at most 200 characters.
pub(crate) fn short_agent(agent: Option<&str>) -> Option<String> {
    agent.map(|a| a.chars().filter(|c| !c.is_control()).take(200).collect::<String>()).filter(|a| !a.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aad_binds_every_part() {
        let m = MerchantId::parse("mer_aaaaaaaaaaaaaaaaaaaaaaaaaa").unwrap_or_else(|_| unreachable!());
        let a = field_aad(&m, "cus_1", "email", "dk_1");
        assert_ne!(a, field_aad(&m, "cus_2", "email", "dk_1"));
        assert_ne!(a, field_aad(&m, "cus_1", "totp", "dk_1"));
        assert_ne!(a, field_aad(&m, "cus_1", "email", "dk_2"));
    }
}
