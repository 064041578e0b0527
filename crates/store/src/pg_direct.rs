//! PostgreSQL connections kept out of sqlx's pool for the hottest paths: one lane for the point
//! reads of tokens by id (coalesced, see `coalesced_reads.rs`), one for the group commits of the
//! token and audit writers.
//!
//! Why: sqlx's pool pings every connection it takes back (a network round trip and a wake-up on
//! both ends), so a one-statement read cost two round trips; on the vault's reveal that ping was
//! half of strongroom's CPU. These connections are handed out
//! under a semaphore and put back without a ping. A connection whose query failed at the
//! connection level, or whose future was dropped half-way, is closed rather than reused, so no
//! half-read answer can reach the next caller; the next use opens a fresh one. Work that is safe
//! to run twice (reads, and writes that recognise their own earlier effect) runs once more on a
//! fresh connection when a reused one turned out dead, as after a server restart.
//! Must never: hand out a connection to two callers at once, reuse one after an I/O error, or
//! run a write twice that cannot tell its own effect from another's.

use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection};
use strongroom_domain::StoreError;
use tokio::sync::Semaphore;

use crate::store_error;

type Work<'c, T> = Pin<Box<dyn Future<Output = Result<T, sqlx::Error>> + Send + 'c>>;

/// Up to `size` connections, each used by one caller at a time.
pub(crate) struct PgLane {
    /// Idle connections and when each was last used.
    idle: Mutex<Vec<(PgConnection, Instant)>>,
    permits: Semaphore,
    options: PgConnectOptions,
    /// How long a caller waits for a connection (a permit, a connect, a ping) before the database
    /// counts as unavailable: the pool's `acquire_timeout`.
    acquire_timeout: Duration,
}

impl std::fmt::Debug for PgLane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgLane").field("free", &self.permits.available_permits()).finish_non_exhaustive()
    }
}

impl PgLane {
    /// A lane over `options`; connections open on first use.
    pub(crate) fn new(options: PgConnectOptions, size: usize, acquire_timeout: Duration) -> Self {
        Self { idle: Mutex::new(Vec::new()), permits: Semaphore::new(size.max(1)), options, acquire_timeout }
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<(PgConnection, Instant)>> {
        // Nothing panics while holding it; if something did, the list is still a list.
        self.idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A permit and a connection: an idle one (pinged first if it sat idle long enough for a
    /// firewall or the server to have dropped it) or a new one, within `acquire_timeout`.
    async fn checkout(&self) -> Result<(tokio::sync::SemaphorePermit<'_>, PgConnection, bool), sqlx::Error> {
        let get = async {
            let permit = self.permits.acquire().await.map_err(|_| sqlx::Error::PoolClosed)?;
            let reused = self.idle().pop();
            if let Some((mut conn, since)) = reused
                && (since.elapsed() <= crate::PING_AFTER_IDLE || conn.ping().await.is_ok())
            {
                return Ok((permit, conn, true));
            }
            Ok((permit, PgConnection::connect_with(&self.options).await?, false))
        };
        tokio::time::timeout(self.acquire_timeout, get).await.map_err(|_| sqlx::Error::PoolTimedOut)?
    }

    /// Runs `work` on a connection of its own.
    pub(crate) async fn run<T>(
        &self,
        work: impl for<'c> FnOnce(&'c mut PgConnection) -> Work<'c, T>,
    ) -> Result<T, StoreError> {
        self.attempt(work).await.map_err(|(err, _)| store_error(err))
    }

    /// Runs a read, once more on a fresh connection when an idle one turned out dead (the server
    /// restarted, or closed it).
    pub(crate) async fn read<T>(
        &self,
        read: impl for<'c> Fn(&'c mut PgConnection) -> Work<'c, T>,
    ) -> Result<T, StoreError> {
        self.run_repeatable(read).await
    }

    /// Runs `work`, once more on a fresh connection when an idle one turned out dead. Only for
    /// work that is safe to run twice: a read, or a write that recognises its own effect when an
    /// earlier attempt committed but its answer was lost.
    pub(crate) async fn run_repeatable<T>(
        &self,
        work: impl for<'c> Fn(&'c mut PgConnection) -> Work<'c, T>,
    ) -> Result<T, StoreError> {
        match self.attempt(&work).await {
            Err((_, true)) => self.attempt(&work).await.map_err(|(err, _)| store_error(err)),
            other => other.map_err(|(err, _)| store_error(err)),
        }
    }

    /// One try; on failure, also whether a reused connection broke (worth one retry). A broken
    /// connection empties the idle list too: after a server restart they are all dead.
    async fn attempt<T>(
        &self,
        work: impl for<'c> FnOnce(&'c mut PgConnection) -> Work<'c, T>,
    ) -> Result<T, (sqlx::Error, bool)> {
        let (_permit, mut conn, was_reused) = self.checkout().await.map_err(|e| (e, false))?;
        let result = work(&mut conn).await;
        let healthy = match &result {
            Ok(_) => true,
            // The server answered and goes on serving this session (not a FATAL error such as an
            // administrator's termination or a shutdown).
            Err(sqlx::Error::Database(db)) => {
                db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>().is_some_and(|pg| {
                    !matches!(pg.severity(), sqlx::postgres::PgSeverity::Fatal | sqlx::postgres::PgSeverity::Panic)
                })
            }
            Err(sqlx::Error::RowNotFound | sqlx::Error::ColumnDecode { .. }) => true,
            Err(_) => false,
        };
        if !healthy {
            self.idle().clear();
        } else if !self.permits.is_closed() {
            self.idle().push((conn, Instant::now()));
        }
        result.map_err(|err| (err, was_reused && !healthy))
    }

    /// Closes the idle connections and refuses new work.
    pub(crate) async fn close(&self) {
        self.permits.close();
        let idle: Vec<(PgConnection, Instant)> = self.idle().drain(..).collect();
        for (conn, _) in idle {
            let _ = conn.close().await;
        }
    }
}
