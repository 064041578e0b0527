//! A synchronous read path for the hottest point reads on SQLite (a token by id): a few
//! rusqlite connections to the same file, used directly on the calling thread.
//!
//! Why: sqlx runs every SQLite statement on a per-connection worker thread and returns every
//! connection to its pool with a ping, so one indexed read costs two round trips between threads.
//! On a 2-core machine those wake-ups were about a third of the server's CPU while revealing
//! tokens, against a few microseconds for the read itself. A primary-key read from SQLite's cache
//! (or the operating system's) is short enough to run on an async worker thread, the way a hash
//! map lookup is; anything longer or anything that writes still goes through sqlx.
//!
//! The connections are `query_only`, use WAL like the pool (readers never wait for the writer),
//! and share one SQLite library with sqlx (the same `libsqlite3-sys`).
//! Must never: write, hold a connection across an `.await`, or run a query that scans.

use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use strongroom_domain::StoreError;

/// A handful of read-only connections, one per async worker thread or so.
pub(crate) struct SqliteReader {
    connections: Vec<Mutex<Connection>>,
    next: AtomicUsize,
}

impl std::fmt::Debug for SqliteReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteReader").field("connections", &self.connections.len()).finish()
    }
}

fn read_error(err: rusqlite::Error) -> StoreError {
    match err {
        rusqlite::Error::SqliteFailure(code, _)
            if matches!(code.code, rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) =>
        {
            StoreError::Unavailable(err.to_string())
        }
        other => StoreError::Other(other.to_string()),
    }
}

impl SqliteReader {
    /// Opens `count` connections to the database file at `path` (which the sqlx pool has already
    /// created and put in WAL mode).
    pub(crate) fn open(path: &Path, count: usize) -> Result<Self, StoreError> {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let connections = (0..count.max(1))
            .map(|_| {
                let conn = Connection::open_with_flags(path, flags).map_err(read_error)?;
                conn.busy_timeout(Duration::from_secs(5)).map_err(read_error)?;
                conn.pragma_update(None, "query_only", true).map_err(read_error)?;
                conn.set_prepared_statement_cache_capacity(32);
                Ok(Mutex::new(conn))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok(Self { connections, next: AtomicUsize::new(0) })
    }

    /// Runs `read` on a free connection (waiting for one only when all are busy, which takes as
    /// long as another point read).
    pub(crate) fn read<T>(&self, read: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T, StoreError> {
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let count = self.connections.len();
        for offset in 0..count {
            if let Ok(conn) = self.connections[(start + offset) % count].try_lock() {
                return read(&conn).map_err(read_error);
            }
        }
        let conn = self.connections[start % count]
            .lock()
            .map_err(|_| StoreError::Other("a SQLite read connection was poisoned".into()))?;
        read(&conn).map_err(read_error)
    }
}
