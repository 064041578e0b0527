//! API keys: the storage port.
//! Must never: read a key across merchants, except the look-up that authenticates it.

use async_trait::async_trait;
use strongroom_types::Timestamp;

use crate::StoreError;
use crate::api_keys::{ApiKeyId, ApiKeyRecord};
use crate::merchants::MerchantId;

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

    /// A merchant's keys (`only` those of one mode, when given), newest first, after the
    /// cursor key when given.
    async fn list(
        &self,
        merchant: &MerchantId,
        only: Option<crate::modes::Mode>,
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
