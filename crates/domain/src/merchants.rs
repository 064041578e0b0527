//! Merchants: the tenants of a deployment. Every object belongs to exactly one merchant, and no
//! query crosses merchants. Must never: answer one merchant's request with another's data.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use strongroom_types::{Clock, Timestamp, define_id};

use crate::DomainError;
use crate::cache::TtlCache;
use crate::ports::MerchantRepository;

define_id!(MerchantId, MerchantKind, "mer");

/// A merchant (tenant).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Merchant {
    /// Its id.
    pub id: MerchantId,
    /// Display name.
    pub name: String,
    /// When it was created.
    pub created_at: Timestamp,
}

/// Reads merchants, caching them briefly: every authenticated request needs its merchant, and a
/// merchant changes rarely. Other nodes see a change within the TTL.
pub struct MerchantDirectory {
    repo: Arc<dyn MerchantRepository>,
    clock: Arc<dyn Clock>,
    cache: TtlCache<MerchantId, Arc<Merchant>>,
}

impl std::fmt::Debug for MerchantDirectory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MerchantDirectory")
    }
}

impl MerchantDirectory {
    /// A directory over `repo` whose entries are trusted for `ttl`.
    pub fn new(repo: Arc<dyn MerchantRepository>, clock: Arc<dyn Clock>, ttl: Duration) -> Self {
        Self { repo, clock, cache: TtlCache::new(ttl, 10_000) }
    }

    /// The merchant, or [`DomainError::NotFound`].
    pub async fn get(&self, id: &MerchantId) -> Result<Arc<Merchant>, DomainError> {
        let now = self.clock.now();
        if let Some(merchant) = self.cache.get(id, now) {
            return Ok(merchant);
        }
        let merchant = Arc::new(self.repo.merchant(id).await?.ok_or(DomainError::NotFound)?);
        self.cache.put(id.clone(), Arc::clone(&merchant), now);
        Ok(merchant)
    }
}
