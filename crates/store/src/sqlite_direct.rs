//! Direct SQLite access for the hottest paths, next to sqlx's pool: point reads (a token by id,
//! a customer's data key) on a few rusqlite connections used directly on the calling thread, and
//! one rusqlite writer connection whose writes share group commits: the batches of the token
//! writer, the audit log writer and the sandbox ledger, and the payments' and detection counts'
//! transactions, each run on the calling async thread ([`SqliteDirect::write`],
//! [`SqliteDirect::write_here`]); a batch of many rows (a bulk tokenization, a key rotation's
//! rewraps) runs on a blocking thread ([`SqliteDirect::write_batch`]).
//!
//! Why: sqlx runs every SQLite statement on a per-connection worker thread and returns every
//! connection to its pool with a ping, so one indexed read costs two round trips between threads.
//! On a 2-core machine those wake-ups were about a third of the server's CPU while revealing
//! tokens, against a few microseconds for the read itself. A primary-key read from SQLite's cache
//! (or the operating system's) is short enough to run on an async worker thread, the way a hash
//! map lookup is, and so is a write of a few rows into the open group transaction (it never
//! waits for the disk: the syncer thread does, after the group's commit). The writes queue on one
//! connection rather than polling SQLite's busy handler for its lock (and so do the payments'
//! transactions on sqlx's pool, through the same write gate). The writes that queued together
//! commit together (see [`Writer`]): one fsync for many, each write in a savepoint of its own,
//! WAL and foreign keys on. The fsync runs on a thread of its own after the commit, while the next
//! group's writes run (see [`Durability`]); a write is answered only once it is on disk, as with
//! the pool's `synchronous=FULL`. Everything else still goes through sqlx.
//!
//! The read connections are `query_only`; readers never wait for a writer in WAL mode. Both
//! share one SQLite library with sqlx (the same `libsqlite3-sys`).
//! Must never: write on a read connection, hold a connection across an `.await`, run a scan or
//! wait for a commit's fsync on an async thread (the one exception: the log header's sync when
//! SQLite starts the log over, see [`commit_open`]), or answer a write (its success or its
//! failure) before its group committed and the commit is on disk.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use strongroom_domain::StoreError;
use tokio::sync::oneshot;

/// `sql` with PostgreSQL-style `$N` parameters written as SQLite's `?N`, for rusqlite, which binds
/// by number (to SQLite a `$N` is a name, numbered by first appearance). For the store's shared
/// statement texts, which have no `$` but their parameters.
pub(crate) fn numbered(sql: &str) -> String {
    sql.replace('$', "?")
}

/// Runs one of the store's shared statement texts (`$N` parameters) on a rusqlite transaction with
/// `values` bound in order; the rows it changed.
pub(crate) fn execute_numbered(
    tx: &Connection,
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
    writer: Arc<Mutex<Writer>>,
    /// The write gate: held by whoever runs statements on the writer (and by the busiest write
    /// transactions on sqlx's pool, the payments'), so they queue here, first come first served,
    /// instead of polling SQLite's busy handler for its write lock (which sleeps 1 to 100 ms
    /// between tries: under payments load those sleeps, not the commits, were most of a
    /// payment's time). Whoever takes it for the pool first commits the writer's open group.
    gate: Arc<tokio::sync::Mutex<()>>,
    /// How far the writer's commits are on disk (see [`Durability`]).
    durability: Arc<Durability>,
}

/// The writer's commits in order, and how many of them are on disk.
///
/// Pipelined fsync: the writer commits with `synchronous=NORMAL` (SQLite appends the group's
/// pages to the write-ahead log without waiting for the disk) and releases the gate at once;
/// the syncer thread then makes the log durable with one `fdatasync` for every group committed
/// since its last one, and only then answers those groups' writes. An acknowledged write is as
/// durable as with `synchronous=FULL`; what changes is that the next group's statements run while
/// the disk works, instead of after it.
///
/// What that opens: for the length of an fsync, another connection can read a commit that is not
/// yet on disk. Every write's own answer, and every later write (the log is appended in order, so
/// its fsync covers every earlier commit), waits for the disk; a reader that shows or sends what
/// it read waits with [`SqliteDirect::settled`] (the API's responses do, and the outbox's claim
/// is itself a write).
struct Durability {
    /// The number of the last commit begun (counted before its `COMMIT` runs, so a reader that
    /// saw its rows also sees its number).
    committed: AtomicU64,
    /// The number of the last commit known to be on disk.
    synced: tokio::sync::watch::Sender<u64>,
    /// Set for good by the first failed sync. After one, which pages reached the disk is unknown
    /// (the kernel may have dropped them, and a sync of the file opened anew would not say so):
    /// the writes it held and every [`SqliteDirect::settled`] fail, and the process stops (see
    /// [`stop_after_failed_sync`]) so that SQLite recovers from what the disk really holds.
    failed: std::sync::OnceLock<StoreError>,
    /// Held by a test to keep the syncer from syncing.
    #[cfg(test)]
    paused: tokio::sync::Mutex<()>,
    /// Set by a test to make the syncer's syncs fail.
    #[cfg(test)]
    fail_syncs: std::sync::atomic::AtomicBool,
}

/// A write waiting for its group's commit to be on disk.
type Waiter = oneshot::Sender<Result<(), StoreError>>;

/// The writer's connection and the group transaction open on it.
///
/// Group commit: a write on the writer joins the transaction that is open (or begins one), runs
/// inside a savepoint of its own (undone alone when it fails or asks to roll back), and waits for
/// the group's commit, and that commit's fsync, before its caller is answered. The group is
/// committed by a task that took its place in the gate's queue when the group began, so it holds
/// every write that queued before it: under load one commit serves many writes (and one fsync
/// serves the groups committed while the previous one ran), and alone a write commits as soon as
/// it released the gate. If SQLite ends the transaction itself (an I/O error, a full disk), every
/// write in the group is answered with that error; none is answered as written.
struct Writer {
    conn: Connection,
    /// The writes the open group holds, waiting for its commit; `None` when none is open.
    open: Option<Vec<Waiter>>,
    durability: Arc<Durability>,
    /// The syncer's queue: each commit's number and the writes it answers once that is on disk.
    syncer: mpsc::Sender<(u64, Vec<Waiter>)>,
}

/// What a write that joined the group waits for: its own outcome is returned once `committed`
/// says the group is on disk.
struct Part<T> {
    outcome: Result<T, StoreError>,
    committed: oneshot::Receiver<Result<(), StoreError>>,
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

/// The most rows a batch writes on the calling async thread (see [`SqliteDirect::write_batch`]).
const INLINE_WRITE_ROWS: usize = 64;

/// The longest the writer waits for SQLite's write lock (held by a transaction on the pool).
const WRITER_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// How many group commits the syncer makes durable between two checkpoints (a group is some
/// 25 pages: about SQLite's own default of a checkpoint per 1,000 pages).
const COMMITS_PER_CHECKPOINT: u64 = 40;

fn open_connection(path: &Path) -> Result<Connection, StoreError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(sqlite_error)?;
    conn.busy_timeout(WRITER_BUSY_TIMEOUT).map_err(sqlite_error)?;
    conn.set_prepared_statement_cache_capacity(32);
    Ok(conn)
}

/// Runs `run` on the calling thread; a worker of a multi-thread runtime first hands its other
/// tasks on (`block_in_place`), since `run` may wait for SQLite's write lock.
fn on_this_thread<T>(run: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|handle| handle.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(run),
        _ => run(),
    }
}

fn writer_stopped() -> StoreError {
    StoreError::Unavailable("the SQLite writer stopped before the write was committed".to_owned())
}

/// Ends the open group without committing it and answers its writes with `err`.
fn abandon(writer: &mut Writer, err: &StoreError) {
    if !writer.conn.is_autocommit() {
        let _ = writer.conn.execute_batch("ROLLBACK");
    }
    for waiting in writer.open.take().unwrap_or_default() {
        let _ = waiting.send(Err(err.clone()));
    }
}

/// The writer, locked. A panic inside a write left its savepoint open: that group is abandoned
/// (its writes are answered with an error) rather than committed half done.
fn lock_writer(writer: &Mutex<Writer>) -> std::sync::MutexGuard<'_, Writer> {
    writer.lock().unwrap_or_else(|poisoned| {
        writer.clear_poison();
        let mut guard = poisoned.into_inner();
        abandon(&mut guard, &StoreError::Other("a write on the SQLite writer panicked".to_owned()));
        guard
    })
}

/// Commits the open group, if any, and hands its writes to the syncer, which answers them once
/// the commit is on disk. The commit itself does not wait for the disk (`synchronous=NORMAL`,
/// no checkpoint on this connection): it copies the group's pages to the log in the page cache.
/// One exception, about once per checkpoint cycle: the first commit after SQLite starts the log
/// over writes the log's new header and syncs it (a few hundred bytes; SQLite's own ordering,
/// which `synchronous=NORMAL` keeps).
fn commit_open(writer: &Mutex<Writer>) {
    let mut writer = lock_writer(writer);
    let Some(waiting) = writer.open.take() else { return };
    let number = writer.durability.committed.fetch_add(1, Ordering::SeqCst).saturating_add(1);
    let (waiting, err) = match writer.conn.execute_batch("COMMIT").map_err(sqlite_error) {
        Ok(()) => (waiting, None),
        Err(err) => {
            writer.open = Some(waiting);
            abandon(&mut writer, &err);
            // The number is still passed on, so that readers waiting for it are let go.
            (Vec::new(), Some(err))
        }
    };
    if let Err(mpsc::SendError((_, waiting))) = writer.syncer.send((number, waiting)) {
        for w in waiting {
            let _ = w.send(Err(err.clone().unwrap_or_else(writer_stopped)));
        }
    }
}

/// The syncer's thread: makes the log durable for every commit queued since its last pass (one
/// `fdatasync` for all of them), then answers their writes, and every [`COMMITS_PER_CHECKPOINT`]
/// commits asks the checkpointer to copy the log into the database file. Ends when the writer is
/// dropped. The first failed sync is final (see [`Durability`]'s `failed`).
fn run_syncer(
    wal: &Path,
    queue: &mpsc::Receiver<(u64, Vec<Waiter>)>,
    durability: &Durability,
    checkpoints: &mpsc::SyncSender<()>,
) {
    let mut log: Option<std::fs::File> = None;
    let mut since_checkpoint = 0_u64;
    while let Ok(first) = queue.recv() {
        let mut commits = vec![first];
        commits.extend(queue.try_iter());
        #[cfg(test)]
        let _paused = durability.paused.blocking_lock();
        let synced = match durability.failed.get() {
            Some(failed) => Err(failed.clone()),
            None => sync_log(wal, &mut log, durability),
        };
        match &synced {
            Ok(()) => {
                let last = commits.iter().map(|(number, _)| *number).max().unwrap_or(0);
                durability.synced.send_if_modified(|on_disk| {
                    let moved = last > *on_disk;
                    *on_disk = (*on_disk).max(last);
                    moved
                });
            }
            Err(err) => {
                if durability.failed.set(err.clone()).is_ok() {
                    tracing::error!(
                        error = %err,
                        "the SQLite write-ahead log could not be synced: strongroom stops, and SQLite recovers \
                         from what the disk holds when it is started again"
                    );
                }
                // Readers waiting in `settled` see the failure.
                durability.synced.send_modify(|_| {});
            }
        }
        for (_, waiting) in commits {
            since_checkpoint = since_checkpoint.saturating_add(1);
            for w in waiting {
                let _ = w.send(synced.clone());
            }
        }
        if let Some(failed) = durability.failed.get() {
            stop_after_failed_sync(failed);
        }
        if since_checkpoint >= COMMITS_PER_CHECKPOINT {
            since_checkpoint = 0;
            let _ = checkpoints.try_send(());
        }
    }
}

/// The exit status after a failed sync of the log (`EX_IOERR`).
#[cfg(not(test))]
const EXIT_SYNC_FAILED: i32 = 74;

/// Ends the process after a failed sync of the log, as PostgreSQL does after a failed fsync.
/// Nothing may go on as if the log were whole: not the pool's transactions (which do not pass
/// the writer), not the outbox, not a checkpoint (which would copy pages the kernel may have
/// dropped into the database file). At the next start SQLite recovers from what the disk holds;
/// no write of the failed group or after it was acknowledged. Tests keep the process and check
/// that every write and `settled` fails from then on.
#[cfg(not(test))]
fn stop_after_failed_sync(failed: &StoreError) {
    use std::io::Write as _;
    // The log line above may sit in a non-blocking writer's buffer: say it on stderr as well,
    // and give that writer a moment.
    let _ = writeln!(
        std::io::stderr(),
        "strongroom: stopping: the SQLite write-ahead log could not be synced ({failed}); start it again"
    );
    std::thread::sleep(Duration::from_millis(200));
    std::process::exit(EXIT_SYNC_FAILED);
}

#[cfg(test)]
fn stop_after_failed_sync(_failed: &StoreError) {}

/// `fdatasync` of the write-ahead log (opened at its first use: SQLite creates it with the
/// writer's first transaction, and keeps the same file while any connection is open).
fn sync_log(wal: &Path, log: &mut Option<std::fs::File>, durability: &Durability) -> Result<(), StoreError> {
    #[cfg(test)]
    if durability.fail_syncs.load(Ordering::SeqCst) {
        return Err(StoreError::Unavailable("could not sync the SQLite write-ahead log: injected".to_owned()));
    }
    #[cfg(not(test))]
    let _ = durability;
    let file = match log {
        Some(file) => file,
        None => log.insert(std::fs::OpenOptions::new().write(true).open(wal).map_err(|err| {
            StoreError::Unavailable(format!("could not open the SQLite write-ahead log to sync it: {err}"))
        })?),
    };
    file.sync_data().map_err(|err| StoreError::Unavailable(format!("could not sync the SQLite write-ahead log: {err}")))
}

/// The checkpointer's thread: on each request, copies what the log holds into the database file,
/// off the async threads and outside the writer's commits. SQLite syncs the log before the copy
/// and the database file after it.
///
/// Twice: first around the writer (`PASSIVE`, which copies what is there without waiting for
/// anyone), then under the gate, with the open group committed, for the few pages the writer
/// added meanwhile. The second pass is what lets SQLite start the log over at the next write: a
/// log copied only while writes go on is never caught up, and grows without end.
fn run_checkpointer(
    conn: &Connection,
    requests: &mpsc::Receiver<()>,
    writer: &std::sync::Weak<Mutex<Writer>>,
    gate: &tokio::sync::Mutex<()>,
) {
    let checkpoint = || {
        if let Err(err) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            tracing::warn!(error = %err, "a SQLite checkpoint failed; the next one tries again");
        }
    };
    while requests.recv().is_ok() {
        checkpoint();
        let Some(writer) = writer.upgrade() else { return };
        let _gate = gate.blocking_lock();
        commit_open(&writer);
        checkpoint();
    }
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
        let conn = open_connection(path)?;
        // A commit copies its pages to the log without waiting for the disk; the syncer's fsync
        // then makes it durable before any of its writes is answered (see `Durability`).
        conn.pragma_update(None, "synchronous", "NORMAL").map_err(sqlite_error)?;
        // Checkpoints run on the checkpointer's own connection, not inside the writer's commits.
        conn.pragma_update(None, "wal_autocheckpoint", 0).map_err(sqlite_error)?;
        conn.pragma_update(None, "foreign_keys", true).map_err(sqlite_error)?;
        // Each write's savepoint journals the pages it changes; in memory rather than in a
        // temporary file written for every write (what a group holds is bounded by its writes).
        conn.pragma_update(None, "temp_store", "MEMORY").map_err(sqlite_error)?;
        let checkpointer = open_connection(path)?;
        checkpointer.pragma_update(None, "synchronous", "NORMAL").map_err(sqlite_error)?;
        let durability = Arc::new(Durability {
            committed: AtomicU64::new(0),
            synced: tokio::sync::watch::Sender::new(0),
            failed: std::sync::OnceLock::new(),
            #[cfg(test)]
            paused: tokio::sync::Mutex::new(()),
            #[cfg(test)]
            fail_syncs: std::sync::atomic::AtomicBool::new(false),
        });
        let (syncer, queue) = mpsc::channel();
        let (checkpoints, requests) = mpsc::sync_channel(1);
        // The log is named after the database file as SQLite resolved it (a symbolic link in the
        // configured path leads elsewhere).
        let mut wal = conn
            .path()
            .filter(|resolved| !resolved.is_empty())
            .map_or_else(|| path.as_os_str().to_owned(), |resolved| std::ffi::OsString::from(resolved.to_owned()));
        wal.push("-wal");
        let wal = PathBuf::from(wal);
        let writer = Arc::new(Mutex::new(Writer { conn, open: None, durability: durability.clone(), syncer }));
        let gate = Arc::new(tokio::sync::Mutex::new(()));
        let (on_disk, weak_writer, checkpoint_gate) = (durability.clone(), Arc::downgrade(&writer), gate.clone());
        let spawned = std::thread::Builder::new()
            .name("sqlite-syncer".to_owned())
            .spawn(move || run_syncer(&wal, &queue, &on_disk, &checkpoints))
            .and_then(|_| {
                std::thread::Builder::new().name("sqlite-checkpointer".to_owned()).spawn(move || {
                    run_checkpointer(&checkpointer, &requests, &weak_writer, &checkpoint_gate);
                })
            });
        spawned.map_err(|err| StoreError::Other(format!("could not start SQLite's syncer: {err}")))?;
        Ok(Self { connections, next: AtomicUsize::new(0), writer, gate, durability })
    }

    /// Waits until every commit begun before now is on disk: for a reader about to show or send
    /// what it read (see [`Durability`]). Returns at once when the syncer is not behind; fails
    /// once a sync has failed.
    pub(crate) async fn settled(&self) -> Result<(), StoreError> {
        let target = self.durability.committed.load(Ordering::SeqCst);
        let mut synced = self.durability.synced.subscribe();
        let failed = || self.durability.failed.get().cloned();
        let reached = synced
            .wait_for(|on_disk| *on_disk >= target || failed().is_some())
            .await
            .is_ok_and(|on_disk| *on_disk >= target);
        match failed() {
            Some(err) if !reached => Err(err),
            _ => Ok(()),
        }
    }

    /// The failed sync that stopped the writer, if one did (see [`Durability`]'s `failed`).
    pub(crate) fn failure(&self) -> Option<StoreError> {
        self.durability.failed.get().cloned()
    }

    /// Waits for the write gate (see [`SqliteDirect`]'s `gate`) for a write transaction on the
    /// pool, after committing the writer's open group (the pool's `BEGIN` would otherwise wait
    /// for its lock); the transaction holds it from before its `BEGIN` to after its commit or
    /// rollback, and awaits nothing else that takes it meanwhile.
    pub(crate) async fn write_gate(&self) -> tokio::sync::OwnedMutexGuard<()> {
        let gate = self.gate.clone().lock_owned().await;
        commit_open(&self.writer);
        gate
    }

    /// Runs `work` on the writer, on the calling thread, in the open group transaction (see
    /// [`Writer`]); returns its outcome once that is committed (undone if `work` fails). For a
    /// write of a few rows: it holds an async worker thread as long as a point read does, and
    /// never for a commit's fsync (the syncer thread waits for that).
    pub(crate) async fn write<T>(
        &self,
        work: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        self.write_here(|conn| work(conn).map(|done| (done, true)).map_err(sqlite_error)).await
    }

    /// [`Self::write`] for a batch of `rows` rows: on the calling thread when they are few, on a
    /// blocking thread when there are more than [`INLINE_WRITE_ROWS`] (a bulk tokenization, a
    /// key rotation's rewraps, a burst of audit entries), which would hold an async worker
    /// thread for milliseconds.
    pub(crate) async fn write_batch<T: Send + 'static>(
        &self,
        rows: usize,
        work: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, StoreError> {
        if rows <= INLINE_WRITE_ROWS {
            return self.write(work).await;
        }
        let gate = self.gate.clone().lock_owned().await;
        let (writer, queue, runtime) = (self.writer.clone(), self.gate.clone(), current_runtime()?);
        let part = tokio::task::spawn_blocking(move || {
            let _gate = gate;
            take_part(&writer, &queue, &runtime, |conn| work(conn).map(|done| (done, true)).map_err(sqlite_error))
        })
        .await
        .map_err(|_| writer_stopped())??;
        part.finish().await
    }

    /// Runs `work` on the writer under the write gate, on the calling thread, in the open group
    /// transaction; `work` answers what to return and whether to keep its writes (`true`) or
    /// undo them; an error undoes them. Returns once the group is committed. A payment's
    /// transaction runs this way because it calls back into its caller between statements (its
    /// checks decide on counts read inside it).
    ///
    /// Why on the calling thread: a write is a savepoint and a few indexed statements, tens of
    /// microseconds; handing it to another thread (a blocking thread, or `block_in_place`'s
    /// hand-over of the worker) cost more than that in wake-ups, all of it while holding the
    /// gate every other write waits for. The group's commit runs on an async thread too (it does
    /// not wait for the disk); the fsync runs on the syncer's thread.
    pub(crate) async fn write_here<T>(
        &self,
        work: impl FnOnce(&Connection) -> Result<(T, bool), StoreError>,
    ) -> Result<T, StoreError> {
        let runtime = current_runtime()?;
        let part = {
            let _gate = self.gate.lock().await;
            take_part(&self.writer, &self.gate, &runtime, work)?
        };
        part.finish().await
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

fn current_runtime() -> Result<tokio::runtime::Handle, StoreError> {
    tokio::runtime::Handle::try_current()
        .map_err(|_| StoreError::Other("SQLite's writer needs a Tokio runtime to commit its groups".to_owned()))
}

/// Runs `work` in a savepoint of the writer's open group (beginning one, and starting the task
/// that will commit it, when none is open). The caller holds the gate.
fn take_part<T>(
    writer: &Arc<Mutex<Writer>>,
    gate: &Arc<tokio::sync::Mutex<()>>,
    runtime: &tokio::runtime::Handle,
    work: impl FnOnce(&Connection) -> Result<(T, bool), StoreError>,
) -> Result<Part<T>, StoreError> {
    let mut guard = lock_writer(writer);
    let state = &mut *guard;
    if let Some(failed) = state.durability.failed.get() {
        return Err(failed.clone());
    }
    if state.open.is_none() {
        begin_group(&state.conn)?;
        state.open = Some(Vec::new());
        // It queues behind everyone now waiting for the gate, whose writes then join this group.
        // The commit does not wait for the disk (the syncer does): it runs on the async thread.
        let (commit, gate) = (CommitOnDrop(writer.clone()), gate.clone());
        runtime.spawn(async move {
            let _gate = gate.lock_owned().await;
            drop(commit);
        });
    }
    let outcome = match in_savepoint(&state.conn, work) {
        Ok(outcome) if !state.conn.is_autocommit() => outcome,
        // SQLite ended the transaction itself (an I/O error, a full disk), or a savepoint could
        // not be undone: what the group held is lost, and every write in it is told so.
        broken => {
            let err = broken
                .err()
                .unwrap_or_else(|| StoreError::Unavailable("SQLite rolled the group transaction back".to_owned()));
            abandon(state, &err);
            return Err(err);
        }
    };
    let (sender, committed) = oneshot::channel();
    state.open.get_or_insert_default().push(sender);
    Ok(Part { outcome, committed })
}

/// Begins a group transaction, taking SQLite's write lock. The lock is nearly always free (every
/// write on the writer and the busiest ones on the pool queue on the gate) and is then taken
/// without waiting; when a transaction on the pool that does not take the gate holds it, the
/// wait (SQLite's busy handler, which sleeps) happens off the async threads.
fn begin_group(conn: &Connection) -> Result<(), StoreError> {
    conn.busy_timeout(Duration::ZERO).map_err(sqlite_error)?;
    let at_once = conn.execute_batch("BEGIN IMMEDIATE");
    conn.busy_timeout(WRITER_BUSY_TIMEOUT).map_err(sqlite_error)?;
    match at_once {
        Err(rusqlite::Error::SqliteFailure(code, _)) if code.code == rusqlite::ErrorCode::DatabaseBusy => {
            on_this_thread(|| conn.execute_batch("BEGIN IMMEDIATE")).map_err(sqlite_error)
        }
        other => other.map_err(sqlite_error),
    }
}

/// `work` in a savepoint, released when it keeps its writes, rolled back to otherwise. The outer
/// error is the savepoint's own (the group is then broken); the inner one is `work`'s.
fn in_savepoint<T>(
    conn: &Connection,
    work: impl FnOnce(&Connection) -> Result<(T, bool), StoreError>,
) -> Result<Result<T, StoreError>, StoreError> {
    conn.execute_batch("SAVEPOINT write").map_err(sqlite_error)?;
    let outcome = work(conn);
    let end = if matches!(outcome, Ok((_, true))) { "RELEASE write" } else { "ROLLBACK TO write; RELEASE write" };
    conn.execute_batch(end).map_err(sqlite_error)?;
    Ok(outcome.map(|(done, _)| done))
}

/// Commits the writer's open group when dropped: by the committer task, or, if a
/// runtime shutting down drops the committer first, by whichever thread drops it, so that no group
/// is left open without a committer (its writes would wait forever, and so would every later one).
/// Committing outside the gate is safe: a write holds the writer's lock for its whole savepoint.
struct CommitOnDrop(Arc<Mutex<Writer>>);

impl Drop for CommitOnDrop {
    fn drop(&mut self) {
        commit_open(&self.0);
    }
}

impl<T> Part<T> {
    /// The write's outcome, once its group is committed (or the group's error).
    async fn finish(self) -> Result<T, StoreError> {
        self.committed.await.map_err(|_| writer_stopped())??;
        self.outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A database file in WAL mode with one table, and the direct access to it.
    fn database(dir: &tempfile::TempDir) -> Arc<SqliteDirect> {
        let path = dir.path().join("group.db");
        let setup = Connection::open(&path).unwrap();
        setup.pragma_update(None, "journal_mode", "WAL").unwrap();
        setup.execute_batch("CREATE TABLE rows (k INTEGER PRIMARY KEY)").unwrap();
        Arc::new(SqliteDirect::open(&path, 2).unwrap())
    }

    fn committed_rows(direct: &SqliteDirect) -> Vec<i64> {
        direct
            .read(|conn| {
                let mut statement = conn.prepare("SELECT k FROM rows ORDER BY k")?;
                statement.query_map([], |row| row.get(0))?.collect()
            })
            .unwrap()
    }

    /// Spawns a task running `write` and returns once it waits: on a current-thread runtime a
    /// task runs until it waits, so once it has started it is in the gate's queue (no sleep).
    async fn spawn_queued<T: Send + 'static>(
        write: impl std::future::Future<Output = T> + Send + 'static,
    ) -> tokio::task::JoinHandle<T> {
        let started = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let task = tokio::spawn({
            let started = started.clone();
            async move {
                started.store(true, Ordering::SeqCst);
                write.await
            }
        });
        while !started.load(Ordering::SeqCst) {
            tokio::task::yield_now().await;
        }
        task
    }

    /// Queues `count` writes behind the gate, which the test holds, in order; then lets them in.
    async fn queued<T: Send + 'static, F: std::future::Future<Output = T> + Send + 'static>(
        direct: &Arc<SqliteDirect>,
        count: i64,
        write: impl Fn(Arc<SqliteDirect>, i64) -> F,
    ) -> Vec<tokio::task::JoinHandle<T>> {
        let gate = direct.gate.clone().lock_owned().await;
        let mut tasks = Vec::new();
        for k in 0..count {
            tasks.push(spawn_queued(write(direct.clone(), k)).await);
        }
        drop(gate);
        tasks
    }

    /// The rows another connection sees committed.
    fn count_committed(direct: &SqliteDirect) -> i64 {
        direct.read(|conn| conn.query_row("SELECT COUNT(*) FROM rows", [], |row| row.get(0))).unwrap()
    }

    #[tokio::test]
    async fn writes_that_queue_together_commit_together_and_fail_alone() {
        let dir = tempfile::tempdir().unwrap();
        let direct = database(&dir);
        let tasks = queued(&direct, 30, |direct, k| async move {
            let reader = direct.clone();
            direct
                .write_here(|conn| {
                    execute_numbered(conn, "INSERT INTO rows (k) VALUES ($1)", vec![k.into()])?;
                    if k == 13 {
                        // A constraint violation ends only this write.
                        execute_numbered(conn, "INSERT INTO rows (k) VALUES ($1)", vec![k.into()])?;
                    }
                    if k == 7 {
                        return Err(StoreError::Other("refused".to_owned()));
                    }
                    let seen: i64 =
                        conn.query_row("SELECT COUNT(*) FROM rows", [], |row| row.get(0)).map_err(sqlite_error)?;
                    Ok(((seen, count_committed(&reader)), k != 11))
                })
                .await
        })
        .await;
        let (mut most_seen, mut most_committed) = (0, 0);
        for (k, task) in (0..).zip(tasks) {
            match (k, task.await.unwrap()) {
                (7, outcome) => assert!(matches!(outcome, Err(StoreError::Other(_))), "{outcome:?}"),
                (13, outcome) => assert!(matches!(outcome, Err(StoreError::Conflict(_))), "{outcome:?}"),
                (11, outcome) => assert!(outcome.is_ok(), "{outcome:?}"),
                (_, outcome) => {
                    let (seen, committed) = outcome.unwrap();
                    most_seen = most_seen.max(seen);
                    most_committed = most_committed.max(committed);
                }
            }
        }
        let expected: Vec<i64> = (0..30).filter(|k| ![7, 11, 13].contains(k)).collect();
        assert_eq!(committed_rows(&direct), expected);
        // The last write kept saw all 27 kept rows, and no other connection saw any of them
        // committed before the last write ran: one transaction, one commit, held them all.
        assert_eq!(most_seen, 27, "every write but the three undone ones shared one transaction");
        assert_eq!(most_committed, 0, "no write of the group was committed before the others ran");
    }

    #[tokio::test]
    async fn the_pools_gate_commits_the_open_group_first() {
        let dir = tempfile::tempdir().unwrap();
        let direct = database(&dir);
        let gate = direct.gate.clone().lock_owned().await;
        let first = spawn_queued({
            let direct = direct.clone();
            async move {
                direct
                    .write_here(|conn| {
                        execute_numbered(conn, "INSERT INTO rows (k) VALUES (1)", vec![]).map(|_| ((), true))
                    })
                    .await
            }
        })
        .await;
        let pool_write = spawn_queued({
            let direct = direct.clone();
            async move {
                let _gate = direct.write_gate().await;
                // Another connection, as sqlx's pool uses, that does not wait for SQLite's write
                // lock: it is free at once only if the writer's group was committed first.
                let other = Connection::open(dir.path().join("group.db")).unwrap();
                other.busy_timeout(Duration::ZERO).unwrap();
                other.execute_batch("BEGIN IMMEDIATE; INSERT INTO rows (k) VALUES (2); COMMIT").unwrap();
                dir
            }
        })
        .await;
        drop(gate);
        first.await.unwrap().unwrap();
        let _dir = pool_write.await.unwrap();
        assert_eq!(committed_rows(&direct), vec![1, 2]);
    }

    #[tokio::test]
    async fn a_write_that_panics_abandons_its_group_and_the_next_one_works() {
        let dir = tempfile::tempdir().unwrap();
        let direct = database(&dir);
        let tasks = queued(&direct, 2, |direct, k| async move {
            direct
                .write_here(|conn| {
                    execute_numbered(conn, "INSERT INTO rows (k) VALUES ($1)", vec![k.into()])?;
                    assert!(k == 0, "the second write of the group panics inside its savepoint");
                    Ok(((), true))
                })
                .await
        })
        .await;
        let mut outcomes = Vec::new();
        for task in tasks {
            outcomes.push(task.await.map(|written| written.is_ok()).map_err(|e| e.is_panic()));
        }
        // The first write was not committed (its group held a half-done write) and said so.
        assert_eq!(outcomes, vec![Ok(false), Err(true)]);
        direct.write(|conn| conn.execute("INSERT INTO rows (k) VALUES (5)", [])).await.unwrap();
        assert_eq!(committed_rows(&direct), vec![5]);
    }

    #[test]
    fn a_group_whose_runtime_shuts_down_is_still_committed_and_the_writer_goes_on() {
        use std::future::Future;
        let dir = tempfile::tempdir().unwrap();
        let direct = database(&dir);
        let first = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        {
            // One poll: the write joins a group and waits for its commit; the committer task is
            // spawned but never run, and the runtime is dropped with it.
            let _context = first.enter();
            let write = direct.write_here(|conn| {
                execute_numbered(conn, "INSERT INTO rows (k) VALUES (1)", vec![]).map(|_| ((), true))
            });
            let polled = std::pin::pin!(write).poll(&mut std::task::Context::from_waker(std::task::Waker::noop()));
            assert!(polled.is_pending(), "the write waits for its group's commit");
        }
        drop(first);
        assert_eq!(committed_rows(&direct), vec![1], "the dropped committer committed the group");
        let second = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        second.block_on(async {
            let write = direct.write(|conn| conn.execute("INSERT INTO rows (k) VALUES (2)", []));
            tokio::time::timeout(Duration::from_secs(10), write).await.expect("the writer went on").unwrap();
        });
        assert_eq!(committed_rows(&direct), vec![1, 2]);
    }

    /// With the syncer paused: a write of row `k`, once its group is committed (another connection
    /// sees the row), and a reader waiting in `settled` after that (subscribed to the syncer's
    /// progress). Neither can be answered until the syncer runs.
    async fn committed_and_waited_for(
        direct: &Arc<SqliteDirect>,
        k: i64,
    ) -> (tokio::task::JoinHandle<Result<usize, StoreError>>, tokio::task::JoinHandle<Result<(), StoreError>>) {
        let write = tokio::spawn({
            let direct = direct.clone();
            async move { direct.write(move |conn| conn.execute("INSERT INTO rows (k) VALUES (?1)", [k])).await }
        });
        let waited = std::time::Instant::now();
        while count_committed(direct) < k {
            assert!(waited.elapsed() < Duration::from_secs(10), "the group was committed");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let waiting_before = direct.durability.synced.receiver_count();
        let reader = tokio::spawn({
            let direct = direct.clone();
            async move { direct.settled().await }
        });
        while direct.durability.synced.receiver_count() <= waiting_before {
            assert!(waited.elapsed() < Duration::from_secs(10), "the reader began to wait");
            tokio::task::yield_now().await;
        }
        (write, reader)
    }

    /// The commit is visible to other connections before it is on disk, but its write is not
    /// answered, nor a reader waiting in `settled` let go, until the syncer has synced the log.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_write_is_answered_and_a_reader_let_go_only_once_its_commit_is_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let direct = database(&dir);
        direct.write(|conn| conn.execute("INSERT INTO rows (k) VALUES (1)", [])).await.unwrap();
        tokio::time::timeout(Duration::from_secs(1), direct.settled()).await.expect("nothing is pending").unwrap();
        let paused = direct.durability.paused.lock().await;
        let (write, reader) = committed_and_waited_for(&direct, 2).await;
        assert!(!write.is_finished(), "the write is not answered before its commit is on disk");
        assert!(!reader.is_finished(), "a reader that saw the commit waits for the disk too");
        drop(paused);
        tokio::time::timeout(Duration::from_secs(10), write).await.unwrap().unwrap().unwrap();
        tokio::time::timeout(Duration::from_secs(10), reader).await.unwrap().unwrap().unwrap();
        assert_eq!(committed_rows(&direct), vec![1, 2]);
    }

    /// A failed sync fails the writes it held, every later write and every reader's wait, for
    /// good: which pages reached the disk is no longer known.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_sync_fails_its_writes_and_everything_after() {
        let dir = tempfile::tempdir().unwrap();
        let direct = database(&dir);
        direct.write(|conn| conn.execute("INSERT INTO rows (k) VALUES (1)", [])).await.unwrap();
        let paused = direct.durability.paused.lock().await;
        direct.durability.fail_syncs.store(true, Ordering::SeqCst);
        // A reader that saw the commit waits for it, and is told when its sync fails.
        let (write, reader) = committed_and_waited_for(&direct, 2).await;
        drop(paused);
        let failed = tokio::time::timeout(Duration::from_secs(10), write).await.expect("no hang").unwrap();
        assert!(matches!(failed, Err(StoreError::Unavailable(_))), "{failed:?}");
        let settled = tokio::time::timeout(Duration::from_secs(10), reader).await.expect("no hang").unwrap();
        assert!(matches!(settled, Err(StoreError::Unavailable(_))), "{settled:?}");
        let settled = tokio::time::timeout(Duration::from_secs(10), direct.settled()).await.expect("no hang");
        assert!(matches!(settled, Err(StoreError::Unavailable(_))), "{settled:?}");
        direct.durability.fail_syncs.store(false, Ordering::SeqCst);
        let later = direct.write(|conn| conn.execute("INSERT INTO rows (k) VALUES (3)", [])).await;
        assert!(matches!(later, Err(StoreError::Unavailable(_))), "{later:?}");
        assert!(direct.failure().is_some());
        assert_eq!(count_committed(&direct), 2, "nothing is written after the failure");
    }

    /// A group whose `COMMIT` fails (here a deferred foreign key) answers its writes with the
    /// error and still lets readers through; the writer goes on.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_commit_lets_readers_through_and_the_writer_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let direct = database(&dir);
        direct
            .write(|conn| {
                conn.execute_batch(
                    "CREATE TABLE parent (id INTEGER PRIMARY KEY); CREATE TABLE child (p INTEGER REFERENCES parent \
                     (id) DEFERRABLE INITIALLY DEFERRED)",
                )
            })
            .await
            .unwrap();
        let failed = direct.write(|conn| conn.execute("INSERT INTO child (p) VALUES (5)", [])).await;
        assert!(matches!(failed, Err(StoreError::Conflict(_))), "{failed:?}");
        tokio::time::timeout(Duration::from_secs(10), direct.settled()).await.expect("no hang").unwrap();
        direct.write(|conn| conn.execute("INSERT INTO rows (k) VALUES (1)", [])).await.unwrap();
        assert_eq!(committed_rows(&direct), vec![1]);
    }

    /// Under steady writes from many tasks the checkpointer still catches the log up, so SQLite
    /// starts it over and it stays small (copied only around the writer, it grows without end).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_log_stays_small_under_steady_writes() {
        let dir = tempfile::tempdir().unwrap();
        let direct = database(&dir);
        direct.write(|conn| conn.execute_batch("CREATE TABLE blobs (k INTEGER PRIMARY KEY, v BLOB)")).await.unwrap();
        let writers: Vec<_> = (0..8_i64)
            .map(|task| {
                let direct = direct.clone();
                tokio::spawn(async move {
                    for k in 0..500 {
                        let key = task * 1_000 + k;
                        direct
                            .write(move |conn| {
                                conn.execute("INSERT INTO blobs (k, v) VALUES (?1, zeroblob(2000))", [key])
                            })
                            .await
                            .unwrap();
                    }
                })
            })
            .collect();
        for writer in writers {
            writer.await.unwrap();
        }
        let rows: i64 = direct.read(|conn| conn.query_row("SELECT COUNT(*) FROM blobs", [], |row| row.get(0))).unwrap();
        assert_eq!(rows, 4_000);
        // Each commit logs the pages it changed again: a log never started over held all 4,000
        // writes' pages (some 70 MB here); started over, it holds a few checkpoints' worth.
        let log = std::fs::metadata(dir.path().join("group.db-wal")).unwrap().len();
        assert!(log < 16_000_000, "the write-ahead log grew to {log} bytes");
    }

    /// A transaction on the pool that does not take the gate holds SQLite's write lock: the
    /// writer's group waits for it (off the async threads) instead of failing at once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_group_waits_for_a_write_lock_held_outside_the_gate() {
        let dir = tempfile::tempdir().unwrap();
        let direct = database(&dir);
        let other = Connection::open(dir.path().join("group.db")).unwrap();
        other.execute_batch("BEGIN IMMEDIATE; INSERT INTO rows (k) VALUES (1)").unwrap();
        let release = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            other.execute_batch("COMMIT").unwrap();
        });
        direct.write(|conn| conn.execute("INSERT INTO rows (k) VALUES (2)", [])).await.unwrap();
        release.join().unwrap();
        let rows: Vec<i64> = (0..70).collect();
        let written = direct
            .write_batch(rows.len(), move |conn| {
                rows.iter()
                    .map(|k| conn.execute("INSERT INTO rows (k) VALUES (?1)", [k + 10]))
                    .sum::<rusqlite::Result<usize>>()
            })
            .await
            .unwrap();
        assert_eq!(written, 70, "a batch over the inline limit is written on a blocking thread");
        assert_eq!(committed_rows(&direct).len(), 72);
    }
}
