//! API keys: how the shop's backend authenticates.
//!
//! A key reads `sr_live_<id>_<secret>` (or `sr_test_…`): the id part is public and names the stored
//! record (`key_<id>`); the secret part carries 256 random bits. Only an HMAC-SHA-256 digest of the
//! whole key is stored, under the deployment's `api_key_digest` key. Verified keys are cached for a
//! short time; a revocation clears the cache entry at once on the node that revoked it, and other
//! nodes see it within the cache lifetime.
//! Must never: store, log or return the secret after creation; tell a caller whether a presented key
//! was unknown, revoked or expired (the HTTP answer is identical; only the audit log knows).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use data_encoding::BASE32_NOPAD;
use strongroom_crypto::KeyedDigest;
use strongroom_types::{Clock, Entropy, Secret, Timestamp, define_id};

use crate::cache::TtlCache;
use crate::error::{DomainError, FieldError};
use crate::merchants::MerchantId;
pub use crate::modes::Mode;
use crate::ports::ApiKeyRepository;

define_id!(ApiKeyId, ApiKeyKind, "key");

/// What a key may do. Each endpoint names the one scope it needs in its handler signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// Create, list and revoke API keys.
    AdminApiKeys,
    /// Read Prometheus metrics.
    AdminMetrics,
    /// Read the audit log, its checkpoints and proofs.
    AuditRead,
    /// Rotate and retire the vault's keys (and approve it as a second operator).
    AdminKeys,
    /// Create and delete tokens.
    VaultWrite,
    /// Read token metadata and search tokens by value.
    VaultRead,
    /// Reveal any token in its masked view.
    VaultRevealMasked,
    /// Reveal personal data (email, phone, address, name, json) in full.
    VaultRevealPii,
    /// Reveal card numbers and bank accounts in full.
    VaultRevealCard,
    /// Send card data to an allow-listed payment gateway (`POST /v1/forward`), never seeing it.
    VaultForward,
    /// Erase a customer's data (crypto-shredding).
    PrivacyErase,
    /// Register customers, sign them in, check their sessions and redeem their step-up proofs.
    IdentityCustomers,
    /// Invite, disable and unlock staff, define custom roles and ask for role grants.
    AdminStaff,
    /// Refund payments (`POST /v1/refunds`).
    PaymentsRefund,
    /// Create, confirm, capture and cancel payment intents; create and amend orders.
    PaymentsWrite,
    /// Read payment intents, orders and refunds.
    PaymentsRead,
    /// Register, rotate and delete webhook endpoints; read their delivery logs.
    AdminWebhooks,
    /// List, make, lift and extend intrusion-detection decisions (blocked clients).
    SecurityManage,
}

impl Scope {
    /// Every scope, in documentation order.
    pub const ALL: &'static [Scope] = &[
        Scope::AdminApiKeys,
        Scope::AdminMetrics,
        Scope::AuditRead,
        Scope::AdminKeys,
        Scope::VaultWrite,
        Scope::VaultRead,
        Scope::VaultRevealMasked,
        Scope::VaultRevealPii,
        Scope::VaultRevealCard,
        Scope::VaultForward,
        Scope::PrivacyErase,
        Scope::IdentityCustomers,
        Scope::AdminStaff,
        Scope::PaymentsRefund,
        Scope::PaymentsWrite,
        Scope::PaymentsRead,
        Scope::AdminWebhooks,
        Scope::SecurityManage,
    ];

    /// Whether the scope acts on the whole deployment (its keys, staff, metrics, audit log)
    /// rather than inside one data space: only live callers may hold these.
    pub const fn is_deployment_wide(self) -> bool {
        matches!(
            self,
            Scope::AdminKeys | Scope::AdminStaff | Scope::AdminMetrics | Scope::AuditRead | Scope::SecurityManage
        )
    }

    /// The scope's stable name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Scope::AdminApiKeys => "admin:api_keys",
            Scope::AdminMetrics => "admin:metrics",
            Scope::AuditRead => "audit:read",
            Scope::AdminKeys => "admin:keys",
            Scope::VaultWrite => "vault:write",
            Scope::VaultRead => "vault:read",
            Scope::VaultRevealMasked => "vault:reveal:masked",
            Scope::VaultRevealPii => "vault:reveal:pii",
            Scope::VaultRevealCard => "vault:reveal:card",
            Scope::VaultForward => "vault:forward",
            Scope::PrivacyErase => "privacy:erase",
            Scope::IdentityCustomers => "identity:customers",
            Scope::AdminStaff => "admin:staff",
            Scope::AdminWebhooks => "admin:webhooks",
            Scope::PaymentsRefund => "payments:refund",
            Scope::PaymentsWrite => "payments:write",
            Scope::PaymentsRead => "payments:read",
            Scope::SecurityManage => "security:manage",
        }
    }

    /// Parses a stable name.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|s| s.as_str() == text)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A stored API key (digest only, never the secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyRecord {
    /// `key_…`
    pub id: ApiKeyId,
    /// The merchant it acts for.
    pub merchant_id: MerchantId,
    /// A name the shop chose.
    pub name: String,
    /// Live or test.
    pub mode: Mode,
    /// What it may do, sorted and without duplicates.
    pub scopes: Vec<Scope>,
    /// HMAC-SHA-256 of the full key.
    pub digest: Vec<u8>,
    /// Creation time.
    pub created_at: Timestamp,
    /// When it stops working, if ever.
    pub expires_at: Option<Timestamp>,
    /// Last successful authentication (updated at most once a minute).
    pub last_used_at: Option<Timestamp>,
    /// When it was revoked.
    pub revoked_at: Option<Timestamp>,
    /// A decoy (`strongroom apikey decoy`): it authenticates nobody, and presenting it is a
    /// detection.
    pub decoy: bool,
}

/// The state of a key at a given time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyStatus {
    /// Usable.
    Active,
    /// Past its expiry.
    Expired,
    /// Revoked.
    Revoked,
}

impl KeyStatus {
    /// The stable name.
    pub const fn as_str(self) -> &'static str {
        match self {
            KeyStatus::Active => "active",
            KeyStatus::Expired => "expired",
            KeyStatus::Revoked => "revoked",
        }
    }
}

impl ApiKeyRecord {
    /// Its status at `now`.
    pub fn status(&self, now: Timestamp) -> KeyStatus {
        if self.revoked_at.is_some() {
            KeyStatus::Revoked
        } else if self.expires_at.is_some_and(|at| at <= now) {
            KeyStatus::Expired
        } else {
            KeyStatus::Active
        }
    }
}

/// Who is calling, once verified: an API key (or an OAuth access token narrowed from one), or a
/// staff member's session. Both carry a merchant and a set of scopes (a staff member's are the
/// permissions of their roles), so every guarded route serves both the same way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    who: Who,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Who {
    Key(Arc<ApiKeyRecord>),
    Staff(Arc<StaffPrincipal>),
}

/// A staff member acting through a live session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaffPrincipal {
    /// `stf_…`
    pub staff_id: String,
    /// The merchant.
    pub merchant_id: MerchantId,
    /// `sss_…`
    pub session_id: String,
    /// The permissions of the staff member's roles.
    pub permissions: Vec<Scope>,
    /// What they may put into an API key: their permissions without the four-eyes ones (a key
    /// would let them act alone where a second person must approve).
    pub grantable: Vec<Scope>,
    /// The roles.
    pub roles: Vec<String>,
    /// When the session was authenticated (always with a second factor).
    pub authenticated_at: Timestamp,
}

impl Principal {
    /// A staff member's principal.
    pub fn staff(staff: StaffPrincipal) -> Self {
        Self { who: Who::Staff(Arc::new(staff)) }
    }

    /// The API key, when an API key (or an access token of one) is calling.
    pub fn key_id(&self) -> Option<&ApiKeyId> {
        match &self.who {
            Who::Key(key) => Some(&key.id),
            Who::Staff(_) => None,
        }
    }

    /// The staff member, when one is calling.
    pub fn as_staff(&self) -> Option<&StaffPrincipal> {
        match &self.who {
            Who::Key(_) => None,
            Who::Staff(staff) => Some(staff),
        }
    }

    /// Who is calling, as the audit log names them: `key_…` or `stf_…`.
    pub fn actor_id(&self) -> &str {
        match &self.who {
            Who::Key(key) => key.id.as_str(),
            Who::Staff(staff) => &staff.staff_id,
        }
    }

    /// What kind of actor the audit log records.
    pub fn actor_kind(&self) -> crate::audit::event::ActorKind {
        match &self.who {
            Who::Key(_) => crate::audit::event::ActorKind::ApiKey,
            Who::Staff(_) => crate::audit::event::ActorKind::Staff,
        }
    }

    /// The merchant it acts for.
    pub fn merchant_id(&self) -> &MerchantId {
        match &self.who {
            Who::Key(key) => &key.merchant_id,
            Who::Staff(staff) => &staff.merchant_id,
        }
    }

    /// Live or test (staff act live).
    pub fn mode(&self) -> Mode {
        match &self.who {
            Who::Key(key) => key.mode,
            Who::Staff(_) => Mode::Live,
        }
    }

    /// The data space it acts in: its merchant's live or test objects.
    pub fn space(&self) -> crate::modes::Space<'_> {
        crate::modes::Space { merchant: self.merchant_id(), mode: self.mode() }
    }

    /// Its scopes.
    pub fn scopes(&self) -> &[Scope] {
        match &self.who {
            Who::Key(key) => &key.scopes,
            Who::Staff(staff) => &staff.permissions,
        }
    }

    /// Whether it may use `scope`: it holds it, and its mode allows it (a test key never uses a
    /// deployment-wide scope, even one stored on it before that rule).
    pub fn has(&self, scope: Scope) -> bool {
        self.mode().allows(scope) && self.scopes().contains(&scope)
    }

    /// An audit event by this principal.
    pub fn event(
        &self,
        action: &'static str,
        outcome: crate::audit::event::Outcome,
    ) -> crate::audit::event::AuditEvent {
        crate::audit::event::AuditEvent::by(self.actor_kind(), Some(self.actor_id().to_owned()), action, outcome)
            .for_merchant(self.merchant_id())
            .in_mode(self.mode())
    }
}

/// Why a presented key was refused. Only logs and the audit log see the difference; clients get
/// one answer for all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    /// Not of the `sr_(live|test)_<id>_<secret>` form.
    Malformed,
    /// No key with that id, or the secret does not match.
    Unknown,
    /// The key was revoked.
    Revoked,
    /// The key expired.
    Expired,
    /// A decoy key: it answers as an unknown key, and intrusion detection blocks the client.
    Decoy,
}

/// Authentication could not complete for a reason other than a bad key.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The key was refused.
    #[error("api key refused: {0:?}")]
    /// The merchant is known only when the secret matched (revoked or expired keys).
    Refused(AuthFailure, Option<MerchantId>),
    /// Storage failed while checking.
    #[error(transparent)]
    Store(#[from] crate::StoreError),
}

/// What a new key should be.
#[derive(Debug, Clone)]
pub struct NewApiKey {
    /// A name, 1 to 100 characters, no control characters.
    pub name: String,
    /// Requested scopes (strings, validated here so errors can name the element).
    pub scopes: Vec<String>,
    /// `live` or `test` (default `live`).
    pub mode: Option<String>,
    /// Expiry, which must lie in the future.
    pub expires_at: Option<Timestamp>,
}

/// What the key that creates a key holds: a new key never exceeds it.
#[derive(Debug, Clone, Copy)]
pub struct Grant<'a> {
    /// Its scopes.
    pub scopes: &'a [Scope],
    /// Its mode: a test key creates only test keys.
    pub mode: Mode,
    /// Its expiry: a new key expires no later.
    pub expires_at: Option<Timestamp>,
}

impl Principal {
    /// What this caller may grant: a key its own scopes, mode and expiry; a staff member their
    /// permissions, live.
    pub fn grant(&self) -> Grant<'_> {
        match &self.who {
            Who::Key(key) => Grant { scopes: &key.scopes, mode: key.mode, expires_at: key.expires_at },
            Who::Staff(staff) => Grant { scopes: &staff.grantable, mode: Mode::Live, expires_at: None },
        }
    }
}

/// A key just created: the record and the one and only copy of its secret.
#[derive(Debug)]
pub struct CreatedApiKey {
    /// The stored record.
    pub record: ApiKeyRecord,
    /// The full key, shown once.
    pub secret: Secret<String>,
}

const KEY_PREFIX: &str = "sr_";
const SECRET_BYTES: usize = 32;
const SECRET_CHARS: usize = 52;
const ID_CHARS: usize = 26;

/// Splits a presented key into mode and id; `None` when it is not of the key form.
pub fn parse_presented(token: &str) -> Option<(Mode, ApiKeyId)> {
    let rest = token.strip_prefix(KEY_PREFIX)?;
    let (mode, rest) = rest.split_once('_')?;
    let mode = Mode::parse(mode)?;
    let (id_body, secret) = rest.split_once('_')?;
    if id_body.len() != ID_CHARS || secret.len() != SECRET_CHARS {
        return None;
    }
    if !secret.bytes().all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b)) {
        return None;
    }
    let id = ApiKeyId::parse(&format!("key_{id_body}")).ok()?;
    Some((mode, id))
}

/// Settings of the API key service.
#[derive(Debug, Clone, Copy)]
pub struct ApiKeySettings {
    /// How long a verified key is trusted without asking the database again. Other nodes see a
    /// revocation within this time; the revoking node at once.
    pub cache_ttl: Duration,
    /// How often `last_used_at` is written at most, per key.
    pub last_used_resolution: Duration,
}

impl Default for ApiKeySettings {
    fn default() -> Self {
        Self { cache_ttl: Duration::from_secs(5), last_used_resolution: Duration::from_secs(60) }
    }
}

/// Creates, verifies, lists and revokes API keys.
pub struct ApiKeyService {
    repo: Arc<dyn ApiKeyRepository>,
    digest: Arc<KeyedDigest>,
    clock: Arc<dyn Clock>,
    entropy: Arc<dyn Entropy>,
    settings: ApiKeySettings,
    cache: TtlCache<ApiKeyId, Arc<ApiKeyRecord>>,
    /// Counts revocations on this node, so a read that raced one is not cached.
    revocations: std::sync::atomic::AtomicU64,
    /// Where key creations and revocations are recorded (none: bootstrap and tests).
    audit: Option<crate::audit::log::AuditLog>,
}

impl fmt::Debug for ApiKeyService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKeyService").field("settings", &self.settings).finish_non_exhaustive()
    }
}

/// Bounds the cache so a flood of distinct valid keys cannot grow memory without limit.
const CACHE_CAPACITY: usize = 10_000;

impl ApiKeyService {
    /// A service over `repo`, digesting under `digest`.
    pub fn new(
        repo: Arc<dyn ApiKeyRepository>,
        digest: Arc<KeyedDigest>,
        clock: Arc<dyn Clock>,
        entropy: Arc<dyn Entropy>,
        settings: ApiKeySettings,
    ) -> Self {
        Self {
            repo,
            digest,
            clock,
            entropy,
            settings,
            cache: TtlCache::new(settings.cache_ttl, CACHE_CAPACITY),
            revocations: std::sync::atomic::AtomicU64::new(0),
            audit: None,
        }
    }

    /// Records key creations and revocations made through [`ApiKeyService::create_recorded`]
    /// and [`ApiKeyService::revoke_recorded`] in `audit`.
    pub fn with_audit(mut self, audit: crate::audit::log::AuditLog) -> Self {
        self.audit = Some(audit);
        self
    }

    /// Creates a key with its audit entry (`actor`: who and from where). A key exists only with
    /// its entry: when the entry cannot be made durable, the key is revoked again and the call
    /// fails with `audit_unavailable`.
    pub async fn create_recorded(
        &self,
        merchant_id: &MerchantId,
        input: NewApiKey,
        granter: Option<Grant<'_>>,
        actor: crate::audit::event::AuditEvent,
    ) -> Result<CreatedApiKey, DomainError> {
        let created = self.create(merchant_id, input, granter).await?;
        if let Some(audit) = &self.audit {
            let event = actor.with_action("api_key.created").on("api_key", created.record.id.as_str());
            if let Err(err) = audit.record(event).await {
                let _ = self.revoke(merchant_id, &created.record.id).await;
                return Err(err.into());
            }
        }
        Ok(created)
    }

    /// Makes a decoy key for `merchant_id` (the operator's command) and records it: shaped and
    /// stored like any key, without scopes, never authenticating anyone.
    pub async fn create_decoy_recorded(
        &self,
        merchant_id: &MerchantId,
        name: String,
        mode: Mode,
        actor: crate::audit::event::AuditEvent,
    ) -> Result<CreatedApiKey, DomainError> {
        // Minted as a key of one harmless scope, then stripped of it: the same shape and digest.
        let input = NewApiKey {
            name,
            scopes: vec![Scope::VaultRead.as_str().to_owned()],
            mode: Some(mode.as_str().to_owned()),
            expires_at: None,
        };
        let mut created = self.mint(merchant_id, input, None)?;
        created.record.scopes.clear();
        created.record.decoy = true;
        self.repo.insert(&created.record).await?;
        if let Some(audit) = &self.audit {
            let event = actor.with_action("api_key.decoy_created").on("api_key", created.record.id.as_str());
            if let Err(err) = audit.record(event).await {
                let _ = self.revoke(merchant_id, &created.record.id).await;
                return Err(err.into());
            }
        }
        Ok(created)
    }

    /// Revokes a key `viewer` may see and records it (`actor`: who and from where).
    pub async fn revoke_recorded(
        &self,
        viewer: crate::modes::Space<'_>,
        id: &ApiKeyId,
        actor: crate::audit::event::AuditEvent,
    ) -> Result<ApiKeyRecord, DomainError> {
        // A key's mode never changes, so checking it first leaves no race.
        self.get(viewer, id).await?;
        let record = self.revoke(viewer.merchant, id).await?;
        if let Some(audit) = &self.audit {
            audit.record(actor.with_action("api_key.revoked").on("api_key", record.id.as_str())).await?;
        }
        Ok(record)
    }

    /// Checks the input and mints a key (not yet stored). A `granter` (the key that asks) limits
    /// the new key: no scope it does not hold, no live key from a test key, no later expiry.
    pub fn mint(
        &self,
        merchant_id: &MerchantId,
        input: NewApiKey,
        granter: Option<Grant<'_>>,
    ) -> Result<CreatedApiKey, DomainError> {
        let now = self.clock.now();
        let mut errors = Vec::new();
        let name = input.name.trim().to_owned();
        crate::free_text::check("/name", &name)?;
        if name.is_empty() || name.chars().count() > 100 {
            errors.push(FieldError::new("/name", "must be 1 to 100 characters"));
        } else if name.chars().any(char::is_control) {
            errors.push(FieldError::new("/name", "must not contain control characters"));
        }
        let mut scopes = Vec::new();
        if input.scopes.is_empty() {
            errors.push(FieldError::new("/scopes", "must name at least one scope"));
        }
        for (i, text) in input.scopes.iter().enumerate() {
            match Scope::parse(text) {
                Some(scope) => scopes.push(scope),
                None => errors.push(FieldError::new(format!("/scopes/{i}"), "is not a known scope")),
            }
        }
        scopes.sort();
        scopes.dedup();
        let default_mode = granter.map_or(Mode::Live, |g| g.mode);
        let mode = match input.mode.as_deref() {
            None => default_mode,
            Some(text) => Mode::parse(text).unwrap_or_else(|| {
                errors.push(FieldError::new("/mode", "must be \"live\" or \"test\""));
                Mode::Live
            }),
        };
        if mode == Mode::Test {
            for (i, text) in input.scopes.iter().enumerate() {
                if Scope::parse(text).is_some_and(|scope| !mode.allows(scope)) {
                    errors.push(FieldError::new(
                        format!("/scopes/{i}"),
                        "acts on the whole deployment and is not available to test keys",
                    ));
                }
            }
        }
        if input.expires_at.is_some_and(|at| at <= now) {
            errors.push(FieldError::new("/expires_at", "must lie in the future"));
        }
        // A key made by an expiring key expires with it at the latest.
        let granter_expiry = granter.and_then(|g| g.expires_at);
        let expires_at = input.expires_at.or(granter_expiry);
        if let (Some(limit), Some(at)) = (granter_expiry, expires_at)
            && at > limit
        {
            errors.push(FieldError::new("/expires_at", "must not be later than the expiry of the key that creates it"));
        }
        if !errors.is_empty() {
            return Err(DomainError::Validation(errors));
        }
        if let Some(granter) = granter {
            if scopes.iter().any(|s| !granter.scopes.contains(s)) {
                return Err(DomainError::Forbidden("a key cannot grant a scope it does not hold"));
            }
            if granter.mode == Mode::Test && mode == Mode::Live {
                return Err(DomainError::Forbidden("a test key cannot create a live key"));
            }
        }
        let id = ApiKeyId::generate(self.entropy.as_ref());
        let mut secret_bytes = [0u8; SECRET_BYTES];
        self.entropy.fill(&mut secret_bytes);
        let secret_part = BASE32_NOPAD.encode(&secret_bytes).to_ascii_lowercase();
        zeroize::Zeroize::zeroize(&mut secret_bytes);
        let id_body = id.as_str().trim_start_matches("key_");
        let token = Secret::new(format!("{KEY_PREFIX}{}_{id_body}_{secret_part}", mode.as_str()));
        drop(Secret::new(secret_part));
        let record = ApiKeyRecord {
            id,
            merchant_id: merchant_id.clone(),
            name,
            mode,
            scopes,
            digest: self.digest.digest(token.expose().as_bytes()).to_vec(),
            created_at: now,
            expires_at,
            last_used_at: None,
            revoked_at: None,
            decoy: false,
        };
        Ok(CreatedApiKey { record, secret: token })
    }

    /// Mints and stores a key.
    pub async fn create(
        &self,
        merchant_id: &MerchantId,
        input: NewApiKey,
        granter: Option<Grant<'_>>,
    ) -> Result<CreatedApiKey, DomainError> {
        let created = self.mint(merchant_id, input, granter)?;
        self.repo.insert(&created.record).await?;
        Ok(created)
    }

    /// Verifies a presented key.
    pub async fn authenticate(&self, token: &str) -> Result<Principal, AuthError> {
        let refused = |why| Err(AuthError::Refused(why, None));
        let Some((mode, id)) = parse_presented(token) else {
            return refused(AuthFailure::Malformed);
        };
        let now = self.clock.now();
        let epoch = self.revocations.load(std::sync::atomic::Ordering::Acquire);
        let (record, from_database) = match self.cache.get(&id, now) {
            Some(record) => (record, false),
            None => match self.repo.by_id_for_auth(&id).await? {
                Some(record) => (Arc::new(record), true),
                None => return refused(AuthFailure::Unknown),
            },
        };
        if record.mode != mode || !self.digest.verify(token.as_bytes(), &record.digest) {
            return refused(AuthFailure::Unknown);
        }
        if record.decoy {
            return Err(AuthError::Refused(AuthFailure::Decoy, Some(record.merchant_id.clone())));
        }
        // A revocation on this node between our read and now may have cleared the entry we are
        // about to store; storing the stale record would let the key work until the TTL ends.
        if from_database && self.revocations.load(std::sync::atomic::Ordering::Acquire) == epoch {
            self.cache.put(record.id.clone(), Arc::clone(&record), now);
        }
        let merchant = || Some(record.merchant_id.clone());
        match record.status(now) {
            KeyStatus::Revoked => return Err(AuthError::Refused(AuthFailure::Revoked, merchant())),
            KeyStatus::Expired => return Err(AuthError::Refused(AuthFailure::Expired, merchant())),
            KeyStatus::Active => {}
        }
        self.note_use(&record, now).await;
        Ok(Principal { who: Who::Key(record) })
    }

    /// The principal of a key that signed an access token, narrowed to the token's scopes. The
    /// key must still be active: revoking a key kills its access tokens.
    pub async fn principal_for_token(&self, id: &ApiKeyId, scopes: &[Scope]) -> Result<Principal, AuthError> {
        let now = self.clock.now();
        let epoch = self.revocations.load(std::sync::atomic::Ordering::Acquire);
        let record = match self.cache.get(id, now) {
            Some(record) => record,
            None => match self.repo.by_id_for_auth(id).await? {
                Some(record) => {
                    let record = Arc::new(record);
                    if self.revocations.load(std::sync::atomic::Ordering::Acquire) == epoch {
                        self.cache.put(record.id.clone(), Arc::clone(&record), now);
                    }
                    record
                }
                None => return Err(AuthError::Refused(AuthFailure::Unknown, None)),
            },
        };
        match record.status(now) {
            KeyStatus::Revoked => {
                return Err(AuthError::Refused(AuthFailure::Revoked, Some(record.merchant_id.clone())));
            }
            KeyStatus::Expired => {
                return Err(AuthError::Refused(AuthFailure::Expired, Some(record.merchant_id.clone())));
            }
            KeyStatus::Active => {}
        }
        let mut narrowed = (*record).clone();
        narrowed.scopes.retain(|s| scopes.contains(s));
        Ok(Principal { who: Who::Key(Arc::new(narrowed)) })
    }

    async fn note_use(&self, record: &ApiKeyRecord, now: Timestamp) {
        let resolution = i64::try_from(self.settings.last_used_resolution.as_millis()).unwrap_or(i64::MAX);
        let stale = record.last_used_at.is_none_or(|at| now.millis_since(at) >= resolution);
        if !stale {
            return;
        }
        // Update the cached copy first so concurrent requests don't all write.
        self.cache.update(&record.id, |cached| Arc::make_mut(cached).last_used_at = Some(now));
        if let Err(err) = self.repo.touch_last_used(&record.id, now).await {
            tracing::warn!(key_id = %record.id, error = %err, "could not record api key use");
        }
    }

    /// One key of the merchant that `viewer` may see: a live caller sees every key of its
    /// merchant, a test caller only test keys (a live key answers as a missing one).
    pub async fn get(&self, viewer: crate::modes::Space<'_>, id: &ApiKeyId) -> Result<ApiKeyRecord, DomainError> {
        match self.repo.get(viewer.merchant, id).await? {
            Some(record) if viewer.mode == Mode::Live || record.mode == Mode::Test => Ok(record),
            _ => Err(DomainError::NotFound),
        }
    }

    /// The keys `viewer` may see, newest first.
    pub async fn list(
        &self,
        viewer: crate::modes::Space<'_>,
        starting_after: Option<&ApiKeyId>,
        limit: u32,
    ) -> Result<Vec<ApiKeyRecord>, DomainError> {
        let only = (viewer.mode == Mode::Test).then_some(Mode::Test);
        Ok(self.repo.list(viewer.merchant, only, starting_after, limit).await?)
    }

    /// Revokes a key, effective at once on this node. Revoking twice is harmless.
    pub async fn revoke(&self, merchant: &MerchantId, id: &ApiKeyId) -> Result<ApiKeyRecord, DomainError> {
        self.revocations.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        let revoked = self.repo.revoke(merchant, id, self.clock.now()).await?.ok_or(DomainError::NotFound);
        self.revocations.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        self.cache.forget(id);
        revoked
    }

    /// The current time of the service's clock.
    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use strongroom_types::OsEntropy;

    #[test]
    fn a_test_key_never_uses_a_deployment_wide_scope_it_holds() {
        let key = |mode| Principal {
            who: Who::Key(Arc::new(ApiKeyRecord {
                id: ApiKeyId::generate(&OsEntropy),
                merchant_id: MerchantId::generate(&OsEntropy),
                name: "older key".into(),
                mode,
                scopes: vec![Scope::AuditRead, Scope::AdminStaff, Scope::VaultRead],
                digest: vec![0; 32],
                created_at: Timestamp::from_unix_millis(0),
                expires_at: None,
                last_used_at: None,
                revoked_at: None,
                decoy: false,
            })),
        };
        let (live, test) = (key(Mode::Live), key(Mode::Test));
        assert!(live.has(Scope::AuditRead) && live.has(Scope::AdminStaff) && live.has(Scope::VaultRead));
        assert!(!test.has(Scope::AuditRead) && !test.has(Scope::AdminStaff));
        assert!(test.has(Scope::VaultRead));
        assert_eq!(test.space().mode, Mode::Test);
    }

    #[test]
    fn presented_key_form() {
        let id = ApiKeyId::generate(&OsEntropy);
        let body = id.as_str().trim_start_matches("key_");
        let secret = "a".repeat(52);
        assert_eq!(parse_presented(&format!("sr_live_{body}_{secret}")), Some((Mode::Live, id.clone())));
        assert_eq!(parse_presented(&format!("sr_test_{body}_{secret}")), Some((Mode::Test, id.clone())));
        assert_eq!(parse_presented(&format!("sr_prod_{body}_{secret}")), None);
        assert_eq!(parse_presented(&format!("sr_live_{body}_{}", "a".repeat(51))), None);
        assert_eq!(parse_presented(&format!("sr_live_{body}_{}", "A".repeat(52))), None);
        assert_eq!(parse_presented("Bearer x"), None);
    }

    #[test]
    fn scope_names_round_trip() {
        for scope in Scope::ALL {
            assert_eq!(Scope::parse(scope.as_str()), Some(*scope));
        }
        assert_eq!(Scope::parse("admin:*"), None);
    }

    proptest! {
        #[test]
        fn parse_presented_never_panics(s in ".{0,120}") {
            let _ = parse_presented(&s);
        }
    }
}
