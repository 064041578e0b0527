//! The vault's storage port: key-encryption key versions, data keys and tokens.
//! Must never: read a token or data key without naming its merchant (except by the keyed
//! fingerprint the caller already scopes).

use async_trait::async_trait;
use strongroom_types::Timestamp;

use crate::StoreError;
use crate::merchants::MerchantId;
use crate::modes::Mode;
use crate::outbox::OutboxMessage;

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
    /// The merchant's data space it belongs to.
    pub mode: Mode,
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
    /// The merchant's data space it belongs to (always its data key's).
    pub mode: Mode,
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
    /// The token names a new data key of the same call that was not stored (its owner has a
    /// data key already, or its KEK version is no longer the active one), so the token was not
    /// stored either: seal it under the owner's stored key and try again.
    KeyNotStored,
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

    /// The data key of a merchant's customer in one data space (`""`: the space's own).
    async fn data_key_for(
        &self,
        merchant: &MerchantId,
        mode: Mode,
        customer: &str,
    ) -> Result<Option<DataKeyRecord>, StoreError>;

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

    /// Stores new data keys and tokens in one transaction, one outcome per token. Each new key is
    /// stored as [`VaultRepository::insert_data_key_if_absent`] stores one (unless its owner has
    /// a key, and only under the active KEK version); a token that names a new key is stored only
    /// if that key is stored (now, or already by an earlier call), else it answers
    /// [`TokenInsert::KeyNotStored`]. A token with a dedupe key yields to a live deduplicated
    /// token of the same merchant, mode, kind and fingerprint.
    async fn insert_tokens(
        &self,
        tokens: &[TokenRecord],
        new_keys: &[DataKeyRecord],
        now: Timestamp,
    ) -> Result<Vec<TokenInsert>, StoreError>;

    /// A token by id (any merchant: the caller checks).
    async fn token(&self, id: &str) -> Result<Option<TokenRecord>, StoreError>;

    /// Unexpired tokens of a merchant's data space with this kind and fingerprint.
    async fn tokens_by_fingerprint(
        &self,
        merchant: &MerchantId,
        mode: Mode,
        kind: crate::vault::values::ValueKind,
        fingerprint: &[u8],
        now: Timestamp,
        limit: u32,
    ) -> Result<Vec<TokenRecord>, StoreError>;

    /// The deduplicated token of this kind with this dedupe key in a merchant's data space.
    async fn token_by_dedupe_key(
        &self,
        merchant: &MerchantId,
        mode: Mode,
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
    /// of the customer, in one data space. Returns how many tokens were erased.
    async fn erase_customer(
        &self,
        merchant: &MerchantId,
        mode: Mode,
        customer: &str,
        at: Timestamp,
        events: &[OutboxMessage],
    ) -> Result<u64, StoreError>;

    /// Deletes up to `limit` tokens that expired by `now`; returns how many.
    async fn purge_expired_tokens(&self, now: Timestamp, limit: u32) -> Result<u64, StoreError>;
}
