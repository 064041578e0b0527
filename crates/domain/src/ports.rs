//! The ports: traits that storage and other adapters implement. Plain `dyn` traits held in `Arc`.
//! Must never: expose a database type, or a method that could read across merchants without
//! naming the merchant.

use async_trait::async_trait;
use strongroom_types::Timestamp;

use crate::StoreError;
use crate::api_keys::{ApiKeyId, ApiKeyRecord};
use crate::merchants::{Merchant, MerchantId};

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
