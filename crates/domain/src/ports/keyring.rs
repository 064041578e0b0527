//! The deployment keyring's storage port: wrapped keys by name.
//! Must never: hold an unwrapped key.

use async_trait::async_trait;
use strongroom_types::Timestamp;

use crate::StoreError;

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
