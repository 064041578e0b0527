//! The audit log's storage port: entries, checkpoints and aggregated counts.
//! Must never: change or delete an entry once appended.

use async_trait::async_trait;
use strongroom_types::Timestamp;

use crate::StoreError;
use crate::merchants::MerchantId;

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
