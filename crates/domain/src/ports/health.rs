//! The storage backend's health port: a ping and the pool's use.
//! Must never: run a query that reads merchant data.

use async_trait::async_trait;

use crate::StoreError;

/// Health of the storage backend.
#[async_trait]
pub trait HealthRepository: Send + Sync {
    /// Succeeds when the database answers a trivial query.
    async fn ping(&self) -> Result<(), StoreError>;

    /// How long taking a connection from the pool takes now: the wait a query would see.
    async fn acquire_wait(&self) -> Result<std::time::Duration, StoreError> {
        Ok(std::time::Duration::ZERO)
    }

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
