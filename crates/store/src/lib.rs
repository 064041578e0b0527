//! Storage adapters: the repository ports of `strongroom-domain` on SQLite and PostgreSQL.
//!
//! One [`Store`] holds either a SQLite or a PostgreSQL pool. Each query is written once in SQL that
//! both databases accept (numbered `$n` parameters, `ON CONFLICT`, `RETURNING`, row values), with
//! portable column types (`TEXT`, 64-bit integers, blobs); the [`on_pool!`] macro expands each body
//! for both concrete pools, so both run on sqlx's native drivers rather than the slower `Any` driver.
//! Where DDL differs, the migration folders differ (`migrations/sqlite`, `migrations/postgres`).
//! Must never: build SQL from input by string concatenation, or let a multi-row change span more
//! than one transaction.

mod audit;
mod checkout;
mod coalesced_reads;
mod detection;
mod disputes;
mod idempotency;
mod identity;
mod incidents;
mod ledger_writer;
mod outbox;
pub use outbox::PgLeadership;
mod passkeys;
mod payments;
mod pg_direct;
pub mod pwned;
mod repositories;
mod saved_cards;
mod sessions;
mod sqlite_direct;
mod staff;
mod vault;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use strongroom_domain::StoreError;

/// A database connection pool of either backend.
#[derive(Debug, Clone)]
pub struct Store {
    backend: Backend,
    /// SQLite only, for a file database: direct connections for the token read and the token and
    /// audit group commits.
    direct: Option<Arc<sqlite_direct::SqliteDirect>>,
    /// PostgreSQL only: the connections of `token_reads`, kept out of the pool (held here to be
    /// closed with the store).
    pg_reads: Option<Arc<pg_direct::PgLane>>,
    /// PostgreSQL only: connections for the group-commit writers (token and audit).
    pg_writes: Option<Arc<pg_direct::PgLane>>,
    /// PostgreSQL only: tokens by id, read together by a few tasks on `pg_reads`.
    token_reads: Option<Arc<coalesced_reads::CoalescedReads<vault::TokenRow>>>,
    /// PostgreSQL only: customers' data keys by owner, read together the same way (every new
    /// customer's first token asks for its missing key).
    data_key_reads: Option<Arc<coalesced_reads::CoalescedReads<vault::DataKeyRow>>>,
    /// PostgreSQL only: how to connect, for the job runner's leadership connection.
    pg_options: Option<PgConnectOptions>,
    /// The sandbox ledger's group commit on `direct` or `pg_writes`, started at its first entry
    /// (none without either: an in-memory SQLite database inserts each entry by itself).
    ledger: Arc<std::sync::OnceLock<Option<ledger_writer::LedgerWriter>>>,
}

#[derive(Debug, Clone)]
enum Backend {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Runs `$body` with `$pool` bound to the concrete pool of whichever backend `$store` uses.
/// The body is compiled once per backend, so each runs on its native driver.
macro_rules! on_pool {
    ($store:expr, $pool:ident => $body:expr) => {
        match &$store.backend {
            $crate::Backend::Sqlite($pool) => $body,
            $crate::Backend::Postgres($pool) => $body,
        }
    };
}
pub(crate) use on_pool;

/// Which backend a URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    /// `sqlite://…` or `sqlite:…`
    Sqlite,
    /// `postgres://…` or `postgresql://…`
    Postgres,
}

impl BackendKind {
    /// The backend a database URL names, if any.
    pub fn of_url(url: &str) -> Option<Self> {
        if url.starts_with("sqlite:") {
            Some(Self::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Some(Self::Postgres)
        } else {
            None
        }
    }

    /// The stable name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
            Self::Postgres => "postgres",
        }
    }
}

/// Pool settings.
#[derive(Debug, Clone, Copy)]
pub struct PoolSettings {
    /// Most connections open at once; `None` sizes the pool for the machine.
    pub max_connections: Option<u32>,
    /// How long a request waits for a free connection before the database counts as unavailable.
    pub acquire_timeout: Duration,
}

impl Default for PoolSettings {
    fn default() -> Self {
        Self { max_connections: None, acquire_timeout: Duration::from_secs(5) }
    }
}

fn cores() -> u32 {
    std::thread::available_parallelism().map_or(2, |n| u32::try_from(n.get()).unwrap_or(2))
}

pub(crate) fn store_error(err: sqlx::Error) -> StoreError {
    match &err {
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) | sqlx::Error::Tls(_) => {
            StoreError::Unavailable(err.to_string())
        }
        sqlx::Error::Database(db) if db.is_unique_violation() || db.is_foreign_key_violation() => {
            StoreError::Conflict(db.message().to_owned())
        }
        _ => StoreError::Other(err.to_string()),
    }
}

/// Connections idle for longer than this are pinged before use; busier ones are not. sqlx pings
/// every connection on acquire by default, which costs a round trip per query (a thread hop on
/// SQLite, a network round trip on PostgreSQL) and was a fifth of the vault's CPU under load.
pub(crate) const PING_AFTER_IDLE: Duration = Duration::from_secs(30);

fn ping_if_idle<C: sqlx::Connection>(
    conn: &mut C,
    meta: sqlx::pool::PoolConnectionMetadata,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<bool, sqlx::Error>> + Send + '_>> {
    Box::pin(async move {
        if meta.idle_for > PING_AFTER_IDLE {
            conn.ping().await?;
        }
        Ok(true)
    })
}

/// TLS to PostgreSQL when the URL says nothing (`sslmode`): required for any host but this
/// machine's own (sqlx's default, `prefer`, silently falls back to plain text), and off on loopback
/// or a Unix socket, where it protects nothing and costs a TLS record on both ends of every query.
/// `mode_in_environment`: whether `PGSSLMODE` is set (sqlx has already applied it).
fn with_default_tls(url: &str, options: PgConnectOptions, mode_in_environment: bool) -> PgConnectOptions {
    use sqlx::postgres::PgSslMode;
    // An explicit choice wins: in the URL (either spelling sqlx accepts) or in the environment.
    if url.contains("sslmode=") || url.contains("ssl-mode=") || mode_in_environment {
        return options;
    }
    let host = options.get_host();
    let local = options.get_socket().is_some()
        || host.starts_with('/')
        || host.eq_ignore_ascii_case("localhost")
        || host.trim_matches(|c| c == '[' || c == ']').parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
    options.ssl_mode(if local { PgSslMode::Disable } else { PgSslMode::Require })
}

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

impl Store {
    /// Connects to `url` (`sqlite://path` or `postgres://…`). SQLite files are created when
    /// missing and run in WAL mode with `synchronous=FULL` (the direct writer fsyncs its commits
    /// on a thread of its own before answering them), so an acknowledged commit survives a crash.
    pub async fn connect(url: &str, settings: PoolSettings) -> Result<Self, StoreError> {
        let kind = BackendKind::of_url(url)
            .ok_or_else(|| StoreError::Other("database URL must start with sqlite:// or postgres://".to_owned()))?;
        let mut direct = None;
        let (mut pg_reads, mut pg_writes, mut token_reads, mut data_key_reads, mut pg_options) =
            (None, None, None, None, None);
        let backend = match kind {
            BackendKind::Sqlite => {
                let options = SqliteConnectOptions::from_str(url)
                    .map_err(store_error)?
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Full)
                    .foreign_keys(true)
                    .busy_timeout(Duration::from_secs(5));
                let pool = SqlitePoolOptions::new()
                    .max_connections(settings.max_connections.unwrap_or_else(|| (cores() * 2).max(4)))
                    .min_connections(1)
                    .acquire_timeout(settings.acquire_timeout)
                    .test_before_acquire(false)
                    .before_acquire(ping_if_idle)
                    .connect_with(options.clone())
                    .await
                    .map_err(store_error)?;
                if !url.contains(":memory:") && !url.contains("mode=memory") {
                    let path = options.get_filename();
                    direct = Some(Arc::new(sqlite_direct::SqliteDirect::open(
                        path,
                        usize::try_from(cores()).unwrap_or(2) + 1,
                    )?));
                }
                Backend::Sqlite(pool)
            }
            BackendKind::Postgres => {
                let options = with_default_tls(
                    url,
                    PgConnectOptions::from_str(url).map_err(store_error)?,
                    std::env::var_os("PGSSLMODE").is_some(),
                )
                .application_name("strongroom");
                // The lanes run a handful of fixed statements (point reads by primary key, the
                // group commits' inserts), whose generic plan is the right one for any argument:
                // planning each execution anew (PostgreSQL's default while an array argument
                // changes length) was a quarter of the server's CPU on the reveal benchmark.
                // A generic plan is made once per connection, though, possibly while a table is
                // still empty, and kept until the table is next analyzed: so an array of ids is
                // probed as a lateral join (one index probe per element, `LIMIT 1`), never as
                // `= ANY($1)` or a join the planner may answer with a full scan it then keeps.
                let lane_options = options.clone().options([("plan_cache_mode", "force_generic_plan")]);
                let readers = usize::try_from(cores()).unwrap_or(2);
                // One connection per reader task: tokens by id, and customers' data keys by owner.
                let lane =
                    Arc::new(pg_direct::PgLane::new(lane_options.clone(), readers * 2, settings.acquire_timeout));
                token_reads = Some(Arc::new(coalesced_reads::CoalescedReads::start(
                    readers,
                    vault::pg_tokens_by_ids(lane.clone()),
                )));
                data_key_reads = Some(Arc::new(coalesced_reads::CoalescedReads::start(
                    readers,
                    vault::pg_data_keys_by_owners(lane.clone()),
                )));
                pg_reads = Some(lane);
                // The audit writer, up to four token writers and two sandbox ledger writers.
                pg_writes = Some(Arc::new(pg_direct::PgLane::new(lane_options, 7, settings.acquire_timeout)));
                pg_options = Some(options.clone().application_name("strongroom-leader"));
                let pool = PgPoolOptions::new()
                    .max_connections(settings.max_connections.unwrap_or_else(|| (cores() * 4).max(8)))
                    .min_connections(1)
                    .acquire_timeout(settings.acquire_timeout)
                    .test_before_acquire(false)
                    .before_acquire(ping_if_idle)
                    .connect_with(options)
                    .await
                    .map_err(store_error)?;
                Backend::Postgres(pool)
            }
        };
        Ok(Self {
            backend,
            direct,
            pg_reads,
            pg_writes,
            token_reads,
            data_key_reads,
            pg_options,
            ledger: Arc::new(std::sync::OnceLock::new()),
        })
    }

    /// SQLite with a file: the write gate (see `sqlite_direct.rs`), to hold across one write
    /// transaction on the pool. None on PostgreSQL, whose writers wait for row locks, not poll.
    pub(crate) async fn sqlite_write_gate(&self) -> Option<tokio::sync::OwnedMutexGuard<()>> {
        match &self.direct {
            Some(direct) => Some(direct.write_gate().await),
            None => None,
        }
    }

    /// Which backend this store uses.
    pub fn kind(&self) -> BackendKind {
        match self.backend {
            Backend::Sqlite(_) => BackendKind::Sqlite,
            Backend::Postgres(_) => BackendKind::Postgres,
        }
    }

    /// Applies pending migrations; returns how many were applied now.
    pub async fn migrate(&self) -> Result<usize, StoreError> {
        let migrator = match self.kind() {
            BackendKind::Sqlite => &SQLITE_MIGRATIONS,
            BackendKind::Postgres => &POSTGRES_MIGRATIONS,
        };
        let before = self.applied_migrations().await.unwrap_or(0);
        let result = on_pool!(self, pool => migrator.run(pool).await);
        result.map_err(|e| StoreError::Other(format!("migration failed: {e}")))?;
        let after = self.applied_migrations().await.unwrap_or(0);
        Ok(after.saturating_sub(before))
    }

    /// Number of migrations recorded as applied (0 on a new database).
    async fn applied_migrations(&self) -> Result<usize, StoreError> {
        let sql = "SELECT COUNT(*) FROM _sqlx_migrations WHERE success";
        let count: i64 = on_pool!(self, pool => sqlx::query_scalar(sql).fetch_one(pool).await).map_err(store_error)?;
        Ok(usize::try_from(count).unwrap_or(0))
    }

    /// Closes the pool, waiting for connections in use to be returned.
    pub async fn close(&self) {
        for lane in [&self.pg_reads, &self.pg_writes].into_iter().flatten() {
            lane.close().await;
        }
        on_pool!(self, pool => pool.close().await);
    }
}

impl Store {
    /// Runs one administrative statement (e.g. `CREATE DATABASE` in test set-up). The statement
    /// must not contain input from outside the program.
    pub async fn execute_admin(&self, statement: &str) -> Result<(), StoreError> {
        on_pool!(self, pool => sqlx::raw_sql(statement).execute(pool).await.map(|r| r.rows_affected()))
            .map_err(store_error)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::postgres::PgSslMode;

    fn mode(url: &str) -> PgSslMode {
        with_default_tls(url, PgConnectOptions::from_str(url).unwrap(), false).get_ssl_mode()
    }

    #[test]
    fn postgres_tls_is_required_off_this_machine_and_off_on_loopback_unless_the_url_says() {
        assert!(matches!(mode("postgres://app@db.internal/strongroom"), PgSslMode::Require));
        assert!(matches!(mode("postgres://app@10.0.0.5:5432/strongroom"), PgSslMode::Require));
        assert!(matches!(mode("postgres://postgres@127.0.0.1:5432/postgres"), PgSslMode::Disable));
        assert!(matches!(mode("postgres://postgres@localhost/postgres"), PgSslMode::Disable));
        assert!(matches!(mode("postgres://postgres@[::1]:5432/postgres"), PgSslMode::Disable));
        assert!(matches!(mode("postgres://app@db.internal/strongroom?sslmode=verify-full"), PgSslMode::VerifyFull));
        assert!(matches!(mode("postgres://postgres@127.0.0.1/postgres?sslmode=require"), PgSslMode::Require));
        assert!(matches!(mode("postgres://app@db.internal/strongroom?ssl-mode=verify-ca"), PgSslMode::VerifyCa));
        // PGSSLMODE set: whatever sqlx read from it stays (here its default, as if PGSSLMODE=prefer).
        let url = "postgres://app@db.internal/strongroom";
        let kept = with_default_tls(url, PgConnectOptions::from_str(url).unwrap(), true).get_ssl_mode();
        assert!(matches!(kept, PgSslMode::Prefer));
    }
}
