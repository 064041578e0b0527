//! Merchants and first-start bootstrap: the storage port.
//! Must never: bootstrap twice.

use async_trait::async_trait;

use crate::StoreError;
use crate::api_keys::ApiKeyRecord;
use crate::merchants::{Merchant, MerchantId};

#[derive(Debug)]
pub struct BootstrapRecords {
    /// The default merchant.
    pub merchant: Merchant,
    /// Its first API key.
    pub api_key: ApiKeyRecord,
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
