//! Direct SQLite access for the hottest paths, next to sqlx's pool: point reads (a token by id,
//! a customer's data key) on a few rusqlite connections used directly on the calling thread, and
//! on one rusqlite writer connection the group-commit transactions of the token writer, the audit
//! log writer and the sandbox ledger (and a key rotation's rewrap batches), each run whole on a
//! blocking thread, and the payments' and detection counts' transactions (`write_here`), run on
//! the calling thread because they call back into their caller between statements.
//!
//! Why: sqlx runs every SQLite statement on a per-connection worker thread and returns every
//! connection to its pool with a ping, so one indexed read costs two round trips between threads.
//! On a 2-core machine those wake-ups were about a third of the server's CPU while revealing
//! tokens, against a few microseconds for the read itself. A primary-key read from SQLite's cache
//! (or the operating system's) is short enough to run on an async worker thread, the way a hash
//! map lookup is. A writer's transaction (a statement per row) moves to a blocking thread once
//! instead of hopping per statement; the two writers queue on one connection rather than
//! polling SQLite's busy handler for its lock (and so do the payments' transactions on sqlx's
//! pool, through the same write gate); and each transaction commits with the pool's durability
//! (`synchronous=FULL`, WAL, foreign keys on). Everything else still goes through sqlx.
//!
//! The read connections are `query_only`; readers never wait for a writer in WAL mode. Both
//! share one SQLite library with sqlx (the same `libsqlite3-sys`).
//! Must never: write on a read connection, hold a connection across an `.await`, run a scan on
//! an async thread, or answer before a write transaction committed.

use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, TransactionBehavior};
use strongroom_domain::StoreError;

/// `sql` with PostgreSQL-style `$N` parameters written as SQLite's `?N`, for rusqlite, which binds
/// by number (to SQLite a `$N` is a name, numbered by first appearance). For the store's shared
/// statement texts, which have no `$` but their parameters.
pub(crate) fn numbered(sql: &str) -> String {
    sql.replace('$', "?")
}

/// Runs one of the store's shared statement texts (`$N` parameters) on a rusqlite transaction with
/// `values` bound in order; the rows it changed.
pub(crate) fn execute_numbered(
    tx: &rusqlite::Transaction<'_>,
    sql: &str,
    values: Vec<rusqlite::types::Value>,
) -> Result<usize, StoreError> {
    tx.prepare_cached(&numbered(sql))
        .and_then(|mut statement| statement.execute(rusqlite::params_from_iter(values)))
        .map_err(sqlite_error)
}

/// An optional text as a SQLite value.
pub(crate) fn text(value: Option<&str>) -> rusqlite::types::Value {
    value.map_or(rusqlite::types::Value::Null, |v| rusqlite::types::Value::Text(v.to_owned()))
}

/// A handful of read-only connections (one per async worker thread or so) and one writer.
pub(crate) struct SqliteDirect {
    connections: Vec<Mutex<Connection>>,
    next: AtomicUsize,
    writer: std::sync::Arc<Mutex<Connection>>,
    /// The write gate: held by the writer's transactions and by the busiest write transactions
    /// on sqlx's pool (the payments'), so they queue here, first come first served, instead of
    /// polling SQLite's busy handler for its write lock (which sleeps 1 to 100 ms between tries:
    /// under payments load those sleeps, not the commits, were most of a payment's time).
    gate: std::sync::Arc<tokio::sync::Mutex<()>>,
}

impl std::fmt::Debug for SqliteDirect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteDirect").field("readers", &self.connections.len()).finish_non_exhaustive()
    }
}

pub(crate) fn sqlite_error(err: rusqlite::Error) -> StoreError {
    match err {
        rusqlite::Error::SqliteFailure(code, _)
            if matches!(code.code, rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) =>
        {
            StoreError::Unavailable(err.to_string())
        }
        rusqlite::Error::SqliteFailure(code, _) if code.code == rusqlite::ErrorCode::ConstraintViolation => {
            StoreError::Conflict(err.to_string())
        }
        other => StoreError::Other(other.to_string()),
    }
}

/// The longest a read on an async thread waits for a lock before answering "unavailable".
const READ_BUSY_TIMEOUT: Duration = Duration::from_millis(250);

fn open_connection(path: &Path) -> Result<Connection, StoreError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(sqlite_error)?;
    conn.busy_timeout(Duration::from_secs(5)).map_err(sqlite_error)?;
    conn.set_prepared_statement_cache_capacity(32);
    Ok(conn)
}

impl SqliteDirect {
    /// Opens `readers` read connections and the writer to the database file at `path` (which the
    /// sqlx pool has already created and put in WAL mode).
    pub(crate) fn open(path: &Path, readers: usize) -> Result<Self, StoreError> {
        let connections = (0..readers.max(1))
            .map(|_| {
                let conn = open_connection(path)?;
                conn.pragma_update(None, "query_only", true).map_err(sqlite_error)?;
                // Readers run on async threads: a WAL reader almost never waits, and when it
                // would (recovery, an exclusive lock) it gives up soon rather than stall a thread.
                conn.busy_timeout(READ_BUSY_TIMEOUT).map_err(sqlite_error)?;
                Ok(Mutex::new(conn))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        let writer = open_connection(path)?;
        // The same durability as the pool's connections: a commit is on disk before it returns.
        writer.pragma_update(None, "synchronous", "FULL").map_err(sqlite_error)?;
        writer.pragma_update(None, "foreign_keys", true).map_err(sqlite_error)?;
        Ok(Self {
            connections,
            next: AtomicUsize::new(0),
            writer: std::sync::Arc::new(Mutex::new(writer)),
            gate: std::sync::Arc::new(tokio::sync::Mutex::new(())),
        })
    }

    /// Waits for the write gate (see [`SqliteDirect`]'s `gate`); a write transaction on the pool
    /// holds it from before its `BEGIN` to after its commit or rollback, and awaits nothing else
    /// that takes it meanwhile.
    pub(crate) async fn write_gate(&self) -> tokio::sync::OwnedMutexGuard<()> {
        self.gate.clone().lock_owned().await
    }

    /// Runs `work` in one `BEGIN IMMEDIATE` transaction on the writer, on a blocking thread, and
    /// commits it (rolled back if `work` fails).
    pub(crate) async fn write<T: Send + 'static>(
        &self,
        work: impl FnOnce(&rusqlite::Transaction<'_>) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, StoreError> {
        let writer = self.writer.clone();
        let gate = self.write_gate().await;
        tokio::task::spawn_blocking(move || {
            let _gate = gate;
            // A panic inside `work` rolled its transaction back while unwinding: the connection
            // is clean, so a poisoned lock is taken over rather than failing every later write.
            let mut conn = writer.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(sqlite_error)?;
            let done = work(&tx).map_err(sqlite_error)?;
            tx.commit().map_err(sqlite_error)?;
            Ok(done)
        })
        .await
        .map_err(|e| StoreError::Other(format!("the SQLite writer stopped: {e}")))?
    }

    /// Runs `work` in one `BEGIN IMMEDIATE` transaction on the writer under the write gate, on
    /// the calling thread: for a transaction that calls back into its caller between statements
    /// (a payment's checks decide on counts read inside it), which [`Self::write`]'s blocking
    /// thread cannot run. A worker of a multi-thread runtime first hands its other tasks on
    /// (`block_in_place`). `work` answers what to return and whether to commit (`true`) or roll
    /// back; an error rolls back.
    pub(crate) async fn write_here<T>(
        &self,
        work: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<(T, bool), StoreError>,
    ) -> Result<T, StoreError> {
        let _gate = self.write_gate().await;
        let run = || {
            let mut conn = self.writer.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(sqlite_error)?;
            let (done, commit) = work(&tx)?;
            if commit { tx.commit() } else { tx.rollback() }.map_err(sqlite_error)?;
            Ok(done)
        };
        match tokio::runtime::Handle::try_current().map(|handle| handle.runtime_flavor()) {
            Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(run),
            _ => run(),
        }
    }

    /// Runs `read` on a free connection (waiting for one only when all are busy, which takes as
    /// long as another point read).
    pub(crate) fn read<T>(&self, read: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T, StoreError> {
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let count = self.connections.len();
        for offset in 0..count {
            match self.connections[(start + offset) % count].try_lock() {
                Ok(conn) => return read(&conn).map_err(sqlite_error),
                // A panic elsewhere left no transaction open on a read connection: use it.
                Err(std::sync::TryLockError::Poisoned(poisoned)) => {
                    return read(&poisoned.into_inner()).map_err(sqlite_error);
                }
                Err(std::sync::TryLockError::WouldBlock) => {}
            }
        }
        let conn = self.connections[start % count].lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        read(&conn).map_err(sqlite_error)
    }
}
