//! The ports: traits that storage and other adapters implement. Plain `dyn` traits held in `Arc`.
//! Must never: expose a database type, or a method that could read across merchants without
//! naming the merchant.

use async_trait::async_trait;
use strongroom_types::Timestamp;

use crate::StoreError;
use crate::api_keys::{ApiKeyId, ApiKeyRecord};
use crate::merchants::{Merchant, MerchantId};
use crate::outbox::OutboxMessage;

/// A wrapped (KMS-encrypted) deployment key as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrappedKey {
    /// The key's name, e.g. `api_key_digest`.
    pub name: String,
    /// Which root key wrapped it.
    pub kms_key_id: String,
    /// The wrapped bytes.
    pub wrapped: Vec<u8>,
    /// When it was created.
    pub created_at: Timestamp,
}

/// Everything one first start creates, written in one transaction.
#[derive(Debug)]
pub struct BootstrapRecords {
    /// The default merchant.
    pub merchant: Merchant,
    /// Its first API key.
    pub api_key: ApiKeyRecord,
}

/// Health of the storage backend.
#[async_trait]
pub trait HealthRepository: Send + Sync {
    /// Succeeds when the database answers a trivial query.
    async fn ping(&self) -> Result<(), StoreError>;

    /// The connection pool's use now.
    fn pool_stats(&self) -> PoolStats {
        PoolStats::default()
    }
}

/// A connection pool's use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Connections open.
    pub open: u32,
    /// Of those, idle.
    pub idle: u32,
    /// The most it may open.
    pub max: u32,
}

/// Merchants and first-start bootstrap.
#[async_trait]
pub trait MerchantRepository: Send + Sync {
    /// A merchant by id.
    async fn merchant(&self, id: &MerchantId) -> Result<Option<Merchant>, StoreError>;

    /// Writes the first-start records unless a bootstrap already happened. Returns `false`
    /// (writing nothing) when one did, so concurrent first starts bootstrap exactly once.
    async fn bootstrap_once(&self, records: &BootstrapRecords) -> Result<bool, StoreError>;
}

/// API keys. Reads name the merchant except [`ApiKeyRepository::by_id_for_auth`], which serves
/// authentication (the merchant is what it finds out).
#[async_trait]
pub trait ApiKeyRepository: Send + Sync {
    /// Inserts a new key.
    async fn insert(&self, key: &ApiKeyRecord) -> Result<(), StoreError>;

    /// Looks a key up by id for authentication.
    async fn by_id_for_auth(&self, id: &ApiKeyId) -> Result<Option<ApiKeyRecord>, StoreError>;

    /// One key of a merchant.
    async fn get(&self, merchant: &MerchantId, id: &ApiKeyId) -> Result<Option<ApiKeyRecord>, StoreError>;

    /// A merchant's keys, newest first, after the cursor key when given.
    async fn list(
        &self,
        merchant: &MerchantId,
        starting_after: Option<&ApiKeyId>,
        limit: u32,
    ) -> Result<Vec<ApiKeyRecord>, StoreError>;

    /// Sets `revoked_at` unless already set; returns the key as it is afterwards.
    async fn revoke(
        &self,
        merchant: &MerchantId,
        id: &ApiKeyId,
        at: Timestamp,
    ) -> Result<Option<ApiKeyRecord>, StoreError>;

    /// Records a use.
    async fn touch_last_used(&self, id: &ApiKeyId, at: Timestamp) -> Result<(), StoreError>;
}

/// The deployment keyring: wrapped keys by name.
#[async_trait]
pub trait KeyringRepository: Send + Sync {
    /// A wrapped key by name.
    async fn get(&self, name: &str) -> Result<Option<WrappedKey>, StoreError>;

    /// Inserts unless a key of that name exists; returns the stored one either way, so that
    /// concurrent first starts agree on one key.
    async fn insert_if_absent(&self, key: &WrappedKey) -> Result<WrappedKey, StoreError>;

    /// Replaces a key's wrapped bytes (after the KMS root key was rotated); the key is unchanged.
    async fn replace_wrapped(&self, name: &str, kms_key_id: &str, wrapped: &[u8]) -> Result<(), StoreError>;
}

/// One stored audit entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    /// Leaf index.
    pub seq: u64,
    /// The merchant it concerns, if any.
    pub merchant: Option<MerchantId>,
    /// When it was logged.
    pub time: Timestamp,
    /// The leaf bytes (see `audit::event`).
    pub leaf: Vec<u8>,
    /// The customer or staff member the entry concerns (actor or object), for their own
    /// security history; not part of the leaf.
    pub subject: Option<String>,
}

/// One stored signed checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCheckpoint {
    /// Entries covered.
    pub size: u64,
    /// Root hash of those entries.
    pub root: crate::audit::merkle::Hash,
    /// The signed note.
    pub note: String,
    /// When it was made.
    pub created_at: Timestamp,
}

/// Why an append did not happen.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// Another writer appended first: the log now has `actual_size` entries.
    #[error("the audit log grew to {actual_size} entries meanwhile")]
    Conflict {
        /// The size found.
        actual_size: u64,
    },
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The audit log's storage: entries, perfect-subtree nodes, the head (size) and checkpoints.
#[async_trait]
pub trait AuditRepository: Send + Sync {
    /// Number of entries.
    async fn size(&self) -> Result<u64, StoreError>;

    /// The hashes of the given perfect nodes, in order (`None` for a node that is not stored).
    async fn nodes(
        &self,
        ids: &[crate::audit::merkle::NodeId],
    ) -> Result<Vec<Option<crate::audit::merkle::Hash>>, StoreError>;

    /// Appends entries and the nodes they complete in one transaction, provided the log still
    /// has `expected_size` entries.
    async fn append(
        &self,
        expected_size: u64,
        records: &[AuditRecord],
        nodes: &[(crate::audit::merkle::NodeId, crate::audit::merkle::Hash)],
    ) -> Result<(), AppendError>;

    /// Entries from `start`, in order.
    async fn entries(&self, start: u64, limit: u32) -> Result<Vec<AuditRecord>, StoreError>;

    /// The newest entries of a merchant about one subject (a customer or staff member), newest
    /// first.
    async fn entries_about(
        &self,
        merchant: &MerchantId,
        subject: &str,
        limit: u32,
    ) -> Result<Vec<AuditRecord>, StoreError>;

    /// Entries from `start`, in order, each with its stored leaf hash (the level-0 node), for
    /// verification: one read per entry.
    async fn entries_with_leaf_hashes(
        &self,
        start: u64,
        limit: u32,
    ) -> Result<Vec<(AuditRecord, Option<crate::audit::merkle::Hash>)>, StoreError>;

    /// Stores a checkpoint unless one of that size exists.
    async fn insert_checkpoint(&self, checkpoint: &StoredCheckpoint) -> Result<(), StoreError>;

    /// The largest checkpoint.
    async fn latest_checkpoint(&self) -> Result<Option<StoredCheckpoint>, StoreError>;

    /// Every checkpoint, by size.
    async fn checkpoints(&self) -> Result<Vec<StoredCheckpoint>, StoreError>;
}

/// Where a key-encryption key version stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KekState {
    /// New data keys are wrapped under it.
    Active,
    /// Superseded; data keys still under it are being rewrapped.
    Previous,
    /// No data key uses it and its wrapped material is gone.
    Retired,
}

impl KekState {
    /// The stable name.
    pub const fn as_str(self) -> &'static str {
        match self {
            KekState::Active => "active",
            KekState::Previous => "previous",
            KekState::Retired => "retired",
        }
    }

    /// Parses a stable name.
    pub fn parse(text: &str) -> Option<Self> {
        [KekState::Active, KekState::Previous, KekState::Retired].into_iter().find(|s| s.as_str() == text)
    }
}

/// A key-encryption key version as stored: wrapped by the KMS root key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KekRecord {
    /// 1, 2, …
    pub version: u32,
    /// Which root key wrapped it.
    pub kms_key_id: String,
    /// The wrapped key (`None` once retired).
    pub wrapped: Option<Vec<u8>>,
    /// Its state.
    pub state: KekState,
    /// When it was made.
    pub created_at: Timestamp,
    /// When it was retired.
    pub retired_at: Option<Timestamp>,
}

/// A data key as stored: wrapped by a key-encryption key version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataKeyRecord {
    /// `dk_…`
    pub id: String,
    /// Its merchant.
    pub merchant_id: MerchantId,
    /// Its customer (`""` for the merchant's own key).
    pub customer: String,
    /// The key-encryption key version that wraps it.
    pub kek_version: u32,
    /// The wrapped key.
    pub wrapped: Vec<u8>,
    /// When it was made.
    pub created_at: Timestamp,
}

/// A data key rewrapped from one key-encryption key version to another.
#[derive(Debug, Clone)]
pub struct RewrappedKey {
    /// The data key.
    pub id: String,
    /// The version it was read under (the update applies only if it is still under it).
    pub from_version: u32,
    /// The version it is now under.
    pub to_version: u32,
    /// The new wrapping.
    pub wrapped: Vec<u8>,
}

/// A token as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    /// `tok_…` or a format-preserving number.
    pub id: String,
    /// Its merchant.
    pub merchant_id: MerchantId,
    /// The shop's customer reference, if the value belongs to a customer.
    pub customer: Option<String>,
    /// What the value is.
    pub kind: crate::vault::values::ValueKind,
    /// The data key the value is sealed under.
    pub data_key_id: String,
    /// The sealed value (`None` once erased).
    pub ciphertext: Option<Vec<u8>>,
    /// Keyed hash of the normalized value (`None` once erased).
    pub fingerprint: Option<Vec<u8>>,
    /// The fingerprint key version `fingerprint` and `dedupe_key` were computed under.
    pub fingerprint_version: u32,
    /// Set only on a deduplicated token: a keyed hash of its customer and fingerprint, unique per
    /// merchant and kind.
    pub dedupe_key: Option<Vec<u8>>,
    /// Non-sensitive display metadata (JSON object).
    pub display: String,
    /// The shop's own metadata (JSON object), if any.
    pub metadata: Option<String>,
    /// A honey token: any reveal or use raises a security event.
    pub canary: bool,
    /// When it was made.
    pub created_at: Timestamp,
    /// When it stops answering.
    pub expires_at: Option<Timestamp>,
    /// When its customer's data was erased.
    pub erased_at: Option<Timestamp>,
}

/// What inserting one token came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenInsert {
    /// The token was stored.
    Created,
    /// A deduplicated token for the same value exists: this one.
    Existing(Box<TokenRecord>),
    /// The id is taken (a format-preserving id collided); try another.
    IdTaken,
}

/// Key-encryption keys, data keys and tokens.
#[async_trait]
pub trait VaultRepository: Send + Sync {
    /// Every key-encryption key version, oldest first.
    async fn keks(&self) -> Result<Vec<KekRecord>, StoreError>;

    /// Replaces a version's wrapped material (after the KMS root key was rotated).
    async fn replace_kek_wrapping(&self, version: u32, kms_key_id: &str, wrapped: &[u8]) -> Result<(), StoreError>;

    /// Stores a new version as active and demotes the active one, in one transaction. Fails with
    /// `Conflict` when the version exists (another process rotated at the same time).
    async fn insert_active_kek(&self, kek: &KekRecord, events: &[OutboxMessage]) -> Result<(), StoreError>;

    /// Retires a previous version no data key uses: drops its wrapped material. False when it is
    /// active, already retired, unknown or still in use.
    async fn retire_kek(&self, version: u32, at: Timestamp, events: &[OutboxMessage]) -> Result<bool, StoreError>;

    /// The data key of a merchant's customer (`""`: the merchant's own).
    async fn data_key_for(&self, merchant: &MerchantId, customer: &str) -> Result<Option<DataKeyRecord>, StoreError>;

    /// Stores a data key unless its owner has one, and only if its KEK version is the active one;
    /// returns the owner's key (`None`: the version is no longer active and the owner has none).
    async fn insert_data_key_if_absent(&self, key: &DataKeyRecord) -> Result<Option<DataKeyRecord>, StoreError>;

    /// A data key by id.
    async fn data_key(&self, id: &str) -> Result<Option<DataKeyRecord>, StoreError>;

    /// Up to `limit` data keys under a version older than `version`, by id after `after`
    /// (versions only grow, so this is an index range, cheap when there is nothing to do).
    async fn data_keys_older_than(
        &self,
        version: u32,
        after: &str,
        limit: u32,
    ) -> Result<Vec<DataKeyRecord>, StoreError>;

    /// Applies rewrappings in one transaction (each only if its key is still under `from_version`);
    /// returns how many applied.
    async fn rewrap_data_keys(&self, keys: &[RewrappedKey]) -> Result<u64, StoreError>;

    /// Number of data keys under each key-encryption key version.
    async fn data_key_counts(&self) -> Result<Vec<(u32, u64)>, StoreError>;

    /// Stores tokens in one transaction, one outcome per token. A token with a dedupe key yields
    /// to a live deduplicated token of the same merchant, kind and fingerprint.
    async fn insert_tokens(&self, tokens: &[TokenRecord], now: Timestamp) -> Result<Vec<TokenInsert>, StoreError>;

    /// A token by id (any merchant: the caller checks).
    async fn token(&self, id: &str) -> Result<Option<TokenRecord>, StoreError>;

    /// Live tokens of a merchant with this kind and fingerprint.
    async fn tokens_by_fingerprint(
        &self,
        merchant: &MerchantId,
        kind: crate::vault::values::ValueKind,
        fingerprint: &[u8],
        now: Timestamp,
        limit: u32,
    ) -> Result<Vec<TokenRecord>, StoreError>;

    /// The merchant's deduplicated token of this kind with this dedupe key, if any.
    async fn token_by_dedupe_key(
        &self,
        merchant: &MerchantId,
        kind: crate::vault::values::ValueKind,
        dedupe_key: &[u8],
    ) -> Result<Option<TokenRecord>, StoreError>;

    /// Up to `limit` unerased tokens whose fingerprint is under a version older than `version`, by
    /// id after `after` (an index range, cheap when there is nothing to do).
    async fn tokens_fingerprinted_before(
        &self,
        version: u32,
        after: &str,
        limit: u32,
    ) -> Result<Vec<TokenRecord>, StoreError>;

    /// Replaces a token's fingerprint and dedupe key if it is still under `from_version`. Fails
    /// with `Conflict` when the new dedupe key is taken.
    async fn set_fingerprint(
        &self,
        id: &str,
        from_version: u32,
        to_version: u32,
        fingerprint: &[u8],
        dedupe_key: Option<&[u8]>,
    ) -> Result<bool, StoreError>;

    /// Unerased tokens per fingerprint key version.
    async fn fingerprint_version_counts(&self) -> Result<Vec<(u32, u64)>, StoreError>;

    /// Deletes a merchant's token; false when there was none.
    async fn delete_token(&self, merchant: &MerchantId, id: &str) -> Result<bool, StoreError>;

    /// Crypto-shreds a customer in one transaction: deletes the data key and empties every token
    /// of the customer. Returns how many tokens were erased.
    async fn erase_customer(
        &self,
        merchant: &MerchantId,
        customer: &str,
        at: Timestamp,
        events: &[OutboxMessage],
    ) -> Result<u64, StoreError>;

    /// Deletes up to `limit` tokens that expired by `now`; returns how many.
    async fn purge_expired_tokens(&self, now: Timestamp, limit: u32) -> Result<u64, StoreError>;
}

/// Whether a customer may sign in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountStatus {
    /// May sign in.
    Active,
    /// Disabled by the shop: every session is dead and sign-in is refused.
    Disabled,
}

impl AccountStatus {
    /// The stable name.
    pub const fn as_str(self) -> &'static str {
        match self {
            AccountStatus::Active => "active",
            AccountStatus::Disabled => "disabled",
        }
    }

    /// Parses a stable name.
    pub fn parse(text: &str) -> Option<Self> {
        [AccountStatus::Active, AccountStatus::Disabled].into_iter().find(|s| s.as_str() == text)
    }
}

/// A customer account as stored. The email is sealed under the customer's vault data key, so
/// erasing the customer's data (crypto-shredding) makes it unreadable; only a keyed hash of the
/// normalized address serves look-ups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomerRecord {
    /// `cus_…`
    pub id: String,
    /// Its merchant.
    pub merchant_id: MerchantId,
    /// Keyed hash of the normalized email (unique per merchant).
    pub email_lookup: Vec<u8>,
    /// The email, sealed under `data_key_id`.
    pub email_sealed: Vec<u8>,
    /// The customer's vault data key.
    pub data_key_id: String,
    /// When the email was verified.
    pub email_verified_at: Option<Timestamp>,
    /// Argon2id PHC string (`None`: passkey-only account).
    pub password_hash: Option<String>,
    /// When the password was last set.
    pub password_changed_at: Option<Timestamp>,
    /// Active or disabled.
    pub status: AccountStatus,
    /// The TOTP seed sealed under `data_key_id` (pending until `totp_confirmed_at`).
    pub totp_sealed: Option<Vec<u8>>,
    /// When TOTP enrolment was confirmed with a first code.
    pub totp_confirmed_at: Option<Timestamp>,
    /// The last accepted TOTP step (codes of it and earlier steps are refused).
    pub totp_last_step: Option<u64>,
    /// The anti-phishing phrase every mail shows, sealed under `data_key_id`.
    pub phrase_sealed: Option<Vec<u8>>,
    /// A new address waiting for confirmation: its keyed hash and the address sealed under
    /// `data_key_id`.
    pub pending_email: Option<(Vec<u8>, Vec<u8>)>,
    /// When it was made.
    pub created_at: Timestamp,
}

/// Failed sign-ins counted per subject (a keyed hash of an email, whether or not an account has
/// it, so that throttling cannot tell accounts apart).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginFailures {
    /// Consecutive failures.
    pub count: u32,
    /// The last one.
    pub last_at: Option<Timestamp>,
}

/// A customer session as stored (the token itself never is: only its keyed hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    /// `ses_…`
    pub id: String,
    /// Its merchant.
    pub merchant_id: MerchantId,
    /// Its customer.
    pub customer_id: String,
    /// Keyed hash of the token.
    pub token_digest: Vec<u8>,
    /// How it was authenticated, e.g. `password`, `password+totp`.
    pub factors: String,
    /// The client's user agent, shortened.
    pub user_agent: Option<String>,
    /// The client's address.
    pub ip: Option<String>,
    /// When it began.
    pub created_at: Timestamp,
    /// Last use (recorded at most once a minute).
    pub last_seen_at: Timestamp,
    /// Absolute end.
    pub expires_at: Timestamp,
    /// When it was ended, if it was.
    pub ended_at: Option<Timestamp>,
}

/// What a challenge is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChallengePurpose {
    /// The second factor of a sign-in whose password was right.
    Login,
    /// Step-up for one bound action.
    StepUp,
    /// An emailed link that verifies the address.
    VerifyEmail,
    /// An emailed link that sets a new password (with the second factor, when one is enrolled).
    PasswordReset,
}

impl ChallengePurpose {
    /// The stable name.
    pub const fn as_str(self) -> &'static str {
        match self {
            ChallengePurpose::Login => "login",
            ChallengePurpose::StepUp => "step_up",
            ChallengePurpose::VerifyEmail => "verify_email",
            ChallengePurpose::PasswordReset => "password_reset",
        }
    }

    /// Parses a stable name.
    pub fn parse(text: &str) -> Option<Self> {
        [
            ChallengePurpose::Login,
            ChallengePurpose::StepUp,
            ChallengePurpose::VerifyEmail,
            ChallengePurpose::PasswordReset,
        ]
        .into_iter()
        .find(|s| s.as_str() == text)
    }
}

/// A pending second-factor challenge: a sign-in awaiting its second factor, or a step-up bound to
/// one action. A completed step-up carries the keyed hash of its single-use proof.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChallengeRecord {
    /// `chl_…`
    pub id: String,
    /// Its merchant.
    pub merchant_id: MerchantId,
    /// Its customer.
    pub customer_id: String,
    /// Login or step-up.
    pub purpose: ChallengePurpose,
    /// Keyed hash of the step-up's purpose and binding (`None` for a sign-in).
    pub binding_digest: Option<Vec<u8>>,
    /// The session that asked for a step-up.
    pub session_id: Option<String>,
    /// The client's address and user agent of a sign-in, carried to the session it makes.
    pub client: Option<String>,
    /// When it was made.
    pub created_at: Timestamp,
    /// When it stops accepting factors.
    pub expires_at: Timestamp,
    /// Wrong factors so far.
    pub failures: u32,
    /// When a factor was accepted.
    pub completed_at: Option<Timestamp>,
    /// Keyed hash of the step-up proof.
    pub proof_digest: Option<Vec<u8>>,
    /// When the proof stops working.
    pub proof_expires_at: Option<Timestamp>,
    /// When the proof was redeemed.
    pub proof_used_at: Option<Timestamp>,
    /// Keyed hash of the emailed one-time code of a sign-in.
    pub code_digest: Option<Vec<u8>>,
    /// When that code stops working.
    pub code_expires_at: Option<Timestamp>,
}

/// Customer accounts, their factors, sessions and challenges. Every read names the merchant
/// except the look-ups by a secret's keyed hash (a session token, a step-up proof), which find
/// out the merchant.
#[async_trait]
pub trait IdentityRepository: Send + Sync {
    /// Stores a new customer; false (nothing written) when the merchant has one with that email.
    async fn insert_customer(&self, customer: &CustomerRecord) -> Result<bool, StoreError>;

    /// A merchant's customer by id.
    async fn customer(&self, merchant: &MerchantId, id: &str) -> Result<Option<CustomerRecord>, StoreError>;

    /// A merchant's customer by the keyed hash of their email.
    async fn customer_by_email(
        &self,
        merchant: &MerchantId,
        lookup: &[u8],
    ) -> Result<Option<CustomerRecord>, StoreError>;

    /// Sets a customer's password hash.
    async fn set_password(&self, merchant: &MerchantId, id: &str, hash: &str, at: Timestamp) -> Result<(), StoreError>;

    /// Sets or clears the customer's status; disabling ends every session in the same transaction.
    async fn set_status(
        &self,
        merchant: &MerchantId,
        id: &str,
        status: AccountStatus,
        at: Timestamp,
    ) -> Result<bool, StoreError>;

    /// Stores a pending TOTP seed (replacing any pending one; refused when one is confirmed).
    async fn begin_totp(&self, merchant: &MerchantId, id: &str, sealed: &[u8]) -> Result<bool, StoreError>;

    /// Confirms the pending seed with its first accepted step, and stores the recovery code
    /// hashes, in one transaction.
    async fn confirm_totp(
        &self,
        merchant: &MerchantId,
        id: &str,
        step: u64,
        at: Timestamp,
        recovery_digests: &[Vec<u8>],
    ) -> Result<bool, StoreError>;

    /// Removes TOTP and the recovery codes.
    async fn remove_totp(&self, merchant: &MerchantId, id: &str) -> Result<bool, StoreError>;

    /// Records `step` as the last accepted TOTP step if it is later than the stored one (so a
    /// code is accepted once, even by two requests at the same moment).
    async fn accept_totp_step(&self, id: &str, step: u64) -> Result<bool, StoreError>;

    /// Replaces the recovery codes.
    async fn replace_recovery_codes(&self, id: &str, digests: &[Vec<u8>], at: Timestamp) -> Result<(), StoreError>;

    /// Marks an unused recovery code used; false when there is no such unused code.
    async fn use_recovery_code(&self, id: &str, digest: &[u8], at: Timestamp) -> Result<bool, StoreError>;

    /// Unused recovery codes of a customer.
    async fn recovery_codes_left(&self, id: &str) -> Result<u32, StoreError>;

    /// Failed sign-ins of a subject.
    async fn login_failures(&self, merchant: &MerchantId, subject: &[u8]) -> Result<LoginFailures, StoreError>;

    /// Counts one more failure; returns the new state.
    async fn add_login_failure(
        &self,
        merchant: &MerchantId,
        subject: &[u8],
        at: Timestamp,
    ) -> Result<LoginFailures, StoreError>;

    /// Forgets a subject's failures (after a successful sign-in).
    async fn clear_login_failures(&self, merchant: &MerchantId, subject: &[u8]) -> Result<(), StoreError>;

    /// Stores a session.
    async fn insert_session(&self, session: &SessionRecord) -> Result<(), StoreError>;

    /// A session by the keyed hash of its token.
    async fn session_by_digest(&self, digest: &[u8]) -> Result<Option<SessionRecord>, StoreError>;

    /// Records a use.
    async fn touch_session(&self, id: &str, at: Timestamp) -> Result<(), StoreError>;

    /// A customer's sessions that have not been ended and have not passed `now`'s absolute end.
    async fn live_sessions(
        &self,
        merchant: &MerchantId,
        customer: &str,
        now: Timestamp,
    ) -> Result<Vec<SessionRecord>, StoreError>;

    /// Ends one session of a customer; false when there was no live one.
    async fn end_session(
        &self,
        merchant: &MerchantId,
        customer: &str,
        id: &str,
        at: Timestamp,
    ) -> Result<bool, StoreError>;

    /// Ends every live session of a customer but `keep`; returns the ids ended.
    async fn end_sessions_except(
        &self,
        merchant: &MerchantId,
        customer: &str,
        keep: Option<&str>,
        at: Timestamp,
    ) -> Result<Vec<String>, StoreError>;

    /// Stores a challenge.
    async fn insert_challenge(&self, challenge: &ChallengeRecord) -> Result<(), StoreError>;

    /// A merchant's challenge by id.
    async fn challenge(&self, merchant: &MerchantId, id: &str) -> Result<Option<ChallengeRecord>, StoreError>;

    /// Stores the emailed code of a sign-in challenge (replacing an earlier one).
    async fn set_challenge_code(&self, id: &str, digest: &[u8], expires_at: Timestamp) -> Result<(), StoreError>;

    /// Reserves one answer to a challenge before it is checked: counts it if the challenge is
    /// open (not completed, not used, unexpired at `now`) and has had fewer than `max` answers.
    /// False when it may not be answered any more. Atomic, so parallel answers cannot exceed `max`.
    async fn reserve_challenge_try(&self, id: &str, max: u32, now: Timestamp) -> Result<bool, StoreError>;

    /// Spends every unused emailed link of a customer for `purpose` (after a reset, older links die).
    async fn spend_links(&self, customer: &str, purpose: ChallengePurpose, at: Timestamp) -> Result<(), StoreError>;

    /// Completes a challenge that is not completed yet, with a step-up proof's hash and expiry
    /// when it has one; false when it was completed meanwhile.
    async fn complete_challenge(
        &self,
        id: &str,
        at: Timestamp,
        proof: Option<(&[u8], Timestamp)>,
    ) -> Result<bool, StoreError>;

    /// Redeems a step-up proof once: marks it used and returns its challenge, if it is unused and
    /// unexpired at `now`.
    async fn redeem_proof(&self, digest: &[u8], now: Timestamp) -> Result<Option<ChallengeRecord>, StoreError>;

    /// Sets (or clears) the sealed anti-phishing phrase.
    async fn set_phrase(&self, merchant: &MerchantId, id: &str, sealed: Option<&[u8]>) -> Result<(), StoreError>;

    /// Marks the email verified (once).
    async fn mark_email_verified(&self, merchant: &MerchantId, id: &str, at: Timestamp) -> Result<(), StoreError>;

    /// Sets the address waiting for confirmation (replacing any earlier one).
    async fn set_pending_email(
        &self,
        merchant: &MerchantId,
        id: &str,
        lookup: &[u8],
        sealed: &[u8],
    ) -> Result<(), StoreError>;

    /// Makes the pending address (if its keyed hash is still `lookup`) the account's verified
    /// address, sealed anew as `sealed`. False when it is no longer pending, or another account of
    /// the merchant has that address.
    async fn apply_pending_email(
        &self,
        merchant: &MerchantId,
        id: &str,
        lookup: &[u8],
        sealed: &[u8],
        at: Timestamp,
    ) -> Result<bool, StoreError>;

    /// The unexpired, unused challenge whose proof (or emailed link) has this keyed hash, without
    /// using it up.
    async fn challenge_by_proof(&self, digest: &[u8], now: Timestamp) -> Result<Option<ChallengeRecord>, StoreError>;

    /// Whether any stored session of the customer (live or ended within the purge window) came
    /// from this user agent.
    async fn has_session_from(&self, customer: &str, user_agent: &str) -> Result<bool, StoreError>;

    /// Deletes challenges and sessions that ended or expired before `before`; returns how many.
    async fn purge_identity(&self, before: Timestamp, limit: u32) -> Result<u64, StoreError>;
}

/// A staff member's account state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StaffStatus {
    /// Invited: no password yet; the invitation link sets one.
    Invited,
    /// May sign in.
    Active,
    /// Disabled: every session is dead and sign-in is refused.
    Disabled,
}

impl StaffStatus {
    /// The stable name.
    pub const fn as_str(self) -> &'static str {
        match self {
            StaffStatus::Invited => "invited",
            StaffStatus::Active => "active",
            StaffStatus::Disabled => "disabled",
        }
    }

    /// Parses a stable name.
    pub fn parse(text: &str) -> Option<Self> {
        [StaffStatus::Invited, StaffStatus::Active, StaffStatus::Disabled].into_iter().find(|s| s.as_str() == text)
    }
}

/// A staff account as stored. The email is sealed under the merchant's vault data key; a keyed
/// hash of it (unique across the deployment, so sign-in needs only the email) serves look-ups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaffRecord {
    /// `stf_…`
    pub id: String,
    /// Its merchant.
    pub merchant_id: MerchantId,
    /// Keyed hash of the normalized email.
    pub email_lookup: Vec<u8>,
    /// The email, sealed under `data_key_id`.
    pub email_sealed: Vec<u8>,
    /// The merchant's data key.
    pub data_key_id: String,
    /// Argon2id PHC string (`None` until the invitation is accepted).
    pub password_hash: Option<String>,
    /// The previous passwords' PHC strings, newest first (at most 4).
    pub password_history: Vec<String>,
    /// When the password was last set.
    pub password_changed_at: Option<Timestamp>,
    /// Invited, active or disabled.
    pub status: StaffStatus,
    /// Consecutive failed sign-ins.
    pub failures: u32,
    /// Sign-in is refused until then.
    pub locked_until: Option<Timestamp>,
    /// The TOTP seed sealed under `data_key_id` (pending until `totp_confirmed_at`).
    pub totp_sealed: Option<Vec<u8>>,
    /// When TOTP enrolment was confirmed.
    pub totp_confirmed_at: Option<Timestamp>,
    /// The last accepted TOTP step.
    pub totp_last_step: Option<u64>,
    /// Role names held.
    pub roles: Vec<String>,
    /// Keyed hash of the invitation token, while one is open.
    pub invite_digest: Option<Vec<u8>>,
    /// When the invitation stops working.
    pub invite_expires_at: Option<Timestamp>,
    /// Who made the account (`stf_…`, or `cli`).
    pub created_by: String,
    /// When it was made.
    pub created_at: Timestamp,
}

/// A staff session as stored (only the keyed hash of its token).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaffSessionRecord {
    /// `sss_…`
    pub id: String,
    /// Its merchant.
    pub merchant_id: MerchantId,
    /// Its staff member.
    pub staff_id: String,
    /// Keyed hash of the token.
    pub token_digest: Vec<u8>,
    /// How it was authenticated, e.g. `password+totp`.
    pub factors: String,
    /// The client's user agent, shortened.
    pub user_agent: Option<String>,
    /// The client's address.
    pub ip: Option<String>,
    /// When it began.
    pub created_at: Timestamp,
    /// Last use.
    pub last_seen_at: Timestamp,
    /// Absolute end.
    pub expires_at: Timestamp,
    /// When it was ended.
    pub ended_at: Option<Timestamp>,
}

/// A staff sign-in waiting for its second factor (`login`) or for a first factor to be enrolled
/// (`enrol`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaffChallengeRecord {
    /// `chl_…`
    pub id: String,
    /// Its staff member.
    pub staff_id: String,
    /// `login` or `enrol`.
    pub purpose: String,
    /// The client's address and user agent, carried to the session.
    pub client: Option<String>,
    /// When it was made.
    pub created_at: Timestamp,
    /// When it stops.
    pub expires_at: Timestamp,
    /// Wrong answers so far.
    pub failures: u32,
    /// When it was completed.
    pub completed_at: Option<Timestamp>,
}

/// A merchant's custom role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleRecord {
    /// Its merchant.
    pub merchant_id: MerchantId,
    /// Its name (`a-z0-9_-`, not a built-in role's).
    pub name: String,
    /// What it is for.
    pub description: String,
    /// Permission names.
    pub permissions: Vec<String>,
    /// When it was made.
    pub created_at: Timestamp,
}

/// A four-eyes approval request: one staff member asks to do a dangerous action on a target,
/// another approves (or denies) it, and the requester then uses it once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalRecord {
    /// `apr_…`
    pub id: String,
    /// Its merchant.
    pub merchant_id: MerchantId,
    /// The action, e.g. `vault.reveal_card`.
    pub action: String,
    /// What it acts on, e.g. a token id, or `stf_…:role`.
    pub target: String,
    /// The requester's reason code.
    pub reason: String,
    /// `stf_…`
    pub requested_by: String,
    /// When it was asked.
    pub requested_at: Timestamp,
    /// `pending`, `approved`, `denied`, `used`.
    pub status: String,
    /// The approver or denier.
    pub decided_by: Option<String>,
    /// When.
    pub decided_at: Option<Timestamp>,
    /// A pending request expires then; an approved one must be used by then.
    pub expires_at: Timestamp,
    /// When it was used.
    pub used_at: Option<Timestamp>,
}

/// Staff accounts, their sessions and sign-in challenges, custom roles and approvals.
#[async_trait]
pub trait StaffRepository: Send + Sync {
    /// Stores a new staff member; false (nothing written) when the email is taken.
    async fn insert_staff(&self, staff: &StaffRecord, events: &[OutboxMessage]) -> Result<bool, StoreError>;

    /// A staff member by id, within a merchant (`None` for any merchant).
    async fn staff(&self, merchant: Option<&MerchantId>, id: &str) -> Result<Option<StaffRecord>, StoreError>;

    /// A staff member by the keyed hash of their email.
    async fn staff_by_email(&self, lookup: &[u8]) -> Result<Option<StaffRecord>, StoreError>;

    /// The staff member an open invitation with this keyed hash belongs to.
    async fn staff_by_invite(&self, digest: &[u8], now: Timestamp) -> Result<Option<StaffRecord>, StoreError>;

    /// A merchant's staff, oldest first.
    async fn list_staff(&self, merchant: &MerchantId) -> Result<Vec<StaffRecord>, StoreError>;

    /// Sets a new invitation (and puts the account back to invited, without a password).
    async fn set_invite(&self, id: &str, digest: &[u8], expires_at: Timestamp) -> Result<(), StoreError>;

    /// Sets the password and history; closes any invitation and makes an invited account active.
    async fn set_staff_password(
        &self,
        id: &str,
        hash: &str,
        history: &[String],
        at: Timestamp,
    ) -> Result<(), StoreError>;

    /// Counts a failed sign-in; at `lock_after` failures the account locks until `lock_until`.
    /// Returns the failures now counted. Atomic.
    async fn staff_login_failed(&self, id: &str, lock_after: u32, lock_until: Timestamp) -> Result<u32, StoreError>;

    /// Clears failures and any lock.
    async fn clear_staff_failures(&self, id: &str) -> Result<(), StoreError>;

    /// Sets the status; false when the staff member is not the merchant's.
    async fn set_staff_status(
        &self,
        merchant: &MerchantId,
        id: &str,
        status: StaffStatus,
        events: &[OutboxMessage],
    ) -> Result<bool, StoreError>;

    /// Stores a pending TOTP seed (replacing a pending one); false when TOTP is confirmed.
    async fn begin_staff_totp(&self, id: &str, sealed: &[u8]) -> Result<bool, StoreError>;

    /// Confirms the pending TOTP seed with its first accepted step; false when already confirmed.
    async fn confirm_staff_totp(&self, id: &str, step: u64, at: Timestamp) -> Result<bool, StoreError>;

    /// Records a TOTP step as used if it is later than the last one; false on replay.
    async fn use_staff_totp_step(&self, id: &str, step: u64) -> Result<bool, StoreError>;

    /// Removes TOTP (seed, confirmation, last step) and clears failures and any lock.
    async fn reset_staff_totp(&self, id: &str) -> Result<(), StoreError>;

    /// Replaces the roles if they are still `expected`; false when they changed meanwhile.
    async fn set_staff_roles(
        &self,
        merchant: &MerchantId,
        id: &str,
        expected: &[String],
        roles: &[String],
        events: &[OutboxMessage],
    ) -> Result<bool, StoreError>;

    /// Stores a new session.
    async fn insert_staff_session(&self, session: &StaffSessionRecord) -> Result<(), StoreError>;

    /// The session with this token hash.
    async fn staff_session_by_digest(&self, digest: &[u8]) -> Result<Option<StaffSessionRecord>, StoreError>;

    /// Records use.
    async fn touch_staff_session(&self, id: &str, at: Timestamp) -> Result<(), StoreError>;

    /// Ends one session of a staff member; false when it is not theirs or already ended.
    async fn end_staff_session(&self, staff: &str, id: &str, at: Timestamp) -> Result<bool, StoreError>;

    /// Ends every session of a staff member but `except`; returns how many.
    async fn end_staff_sessions(&self, staff: &str, except: Option<&str>, at: Timestamp) -> Result<u64, StoreError>;

    /// Stores a sign-in challenge.
    async fn insert_staff_challenge(&self, challenge: &StaffChallengeRecord) -> Result<(), StoreError>;

    /// A challenge by id.
    async fn staff_challenge(&self, id: &str) -> Result<Option<StaffChallengeRecord>, StoreError>;

    /// Reserves one answer of an open challenge with fewer than `max` answers; false otherwise.
    async fn reserve_staff_challenge_try(&self, id: &str, max: u32, now: Timestamp) -> Result<bool, StoreError>;

    /// Completes an open challenge; false when it was completed meanwhile.
    async fn complete_staff_challenge(&self, id: &str, at: Timestamp) -> Result<bool, StoreError>;

    /// Stores a custom role; false when the merchant has one by that name.
    async fn insert_role(&self, role: &RoleRecord, events: &[OutboxMessage]) -> Result<bool, StoreError>;

    /// A merchant's custom roles, by name.
    async fn roles(&self, merchant: &MerchantId) -> Result<Vec<RoleRecord>, StoreError>;

    /// Deletes a custom role; false when there is none by that name.
    async fn delete_role(
        &self,
        merchant: &MerchantId,
        name: &str,
        events: &[OutboxMessage],
    ) -> Result<bool, StoreError>;

    /// Stores an approval request.
    async fn insert_approval(&self, approval: &ApprovalRecord) -> Result<(), StoreError>;

    /// An approval by id.
    async fn approval(&self, merchant: &MerchantId, id: &str) -> Result<Option<ApprovalRecord>, StoreError>;

    /// A merchant's approvals, newest first, optionally only those with a status.
    async fn list_approvals(
        &self,
        merchant: &MerchantId,
        status: Option<&str>,
        limit: u32,
    ) -> Result<Vec<ApprovalRecord>, StoreError>;

    /// Decides a pending, unexpired request of someone other than `decider`: `approved` (usable
    /// until `use_by`) or `denied`. False when it was not open to this decider.
    async fn decide_approval(
        &self,
        merchant: &MerchantId,
        id: &str,
        decider: &str,
        status: &str,
        at: Timestamp,
        use_by: Timestamp,
    ) -> Result<bool, StoreError>;

    /// Uses an approved, unexpired, unused approval of `requester` for exactly this action and
    /// target, once. False otherwise.
    async fn use_approval(
        &self,
        merchant: &MerchantId,
        id: &str,
        requester: &str,
        action: &str,
        target: &str,
        at: Timestamp,
    ) -> Result<bool, StoreError>;

    /// Deletes staff sessions and challenges that ended or expired before `before`.
    async fn purge_staff(&self, before: Timestamp, limit: u32) -> Result<u64, StoreError>;
}

/// A registered passkey as stored: public data only (the credential id and public key, in the
/// serialized form the WebAuthn library reads back).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasskeyRecord {
    /// `pk_…`
    pub id: String,
    /// Its merchant.
    pub merchant_id: MerchantId,
    /// `customer` or `staff`.
    pub owner_kind: String,
    /// `cus_…` or `stf_…`
    pub owner_id: String,
    /// The credential id (unique across the deployment).
    pub credential_id: Vec<u8>,
    /// The serialized passkey.
    pub passkey: String,
    /// A name the owner gave it ("work laptop").
    pub label: String,
    /// When it was registered.
    pub created_at: Timestamp,
    /// When it last signed in.
    pub last_used_at: Option<Timestamp>,
}

/// A WebAuthn ceremony in flight: its server-side state, used once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CeremonyRecord {
    /// `wac_…`
    pub id: String,
    /// Its merchant.
    pub merchant_id: MerchantId,
    /// `customer` or `staff`.
    pub owner_kind: String,
    /// Whose passkey is being registered or asked for (`None`: a discoverable sign-in).
    pub owner_id: Option<String>,
    /// `register` or `sign_in`.
    pub purpose: String,
    /// The serialized ceremony state.
    pub state: String,
    /// When it began.
    pub created_at: Timestamp,
    /// When it stops.
    pub expires_at: Timestamp,
}

/// Passkeys and WebAuthn ceremonies.
#[async_trait]
pub trait PasskeyRepository: Send + Sync {
    /// Stores a passkey; false when its credential id is registered already.
    async fn insert_passkey(&self, passkey: &PasskeyRecord) -> Result<bool, StoreError>;

    /// An owner's passkeys, oldest first.
    async fn passkeys_of(&self, owner_kind: &str, owner_id: &str) -> Result<Vec<PasskeyRecord>, StoreError>;

    /// The passkey with this credential id.
    async fn passkey_by_credential(&self, credential_id: &[u8]) -> Result<Option<PasskeyRecord>, StoreError>;

    /// Stores a passkey's new state (counter, backup flags) and its last use.
    async fn passkey_used(&self, id: &str, passkey: Option<&str>, at: Timestamp) -> Result<(), StoreError>;

    /// Deletes one of an owner's passkeys; false when it is not theirs.
    async fn delete_passkey(&self, owner_kind: &str, owner_id: &str, id: &str) -> Result<bool, StoreError>;

    /// Stores a ceremony.
    async fn insert_ceremony(&self, ceremony: &CeremonyRecord) -> Result<(), StoreError>;

    /// Takes a ceremony once: deletes and returns it if it is unexpired at `now`.
    async fn take_ceremony(&self, id: &str, now: Timestamp) -> Result<Option<CeremonyRecord>, StoreError>;
}
