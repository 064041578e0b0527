//! Group commit of the sandbox gateway's ledger entries, on the connections of the token and
//! audit group commits (SQLite's direct writer, PostgreSQL's write lane): concurrent gateway calls
//! hand their entry to a writer task, which inserts everything waiting in one transaction and
//! answers each call with whether its entry was the one inserted. One commit (one fsync) then
//! serves many payments instead of one each; a call is answered only after its transaction
//! committed, so what the sandbox answered stands after a crash.
//!
//! Each entry is inserted with `ON CONFLICT (idempotency_key) DO NOTHING`, as alone: an entry
//! whose key is recorded already (by an earlier call, or earlier in the same batch) is not
//! inserted, and its caller reads what is stored.
//! Must never: answer before the commit, or let an entry replace an earlier one under its key.

use std::sync::Arc;

use strongroom_domain::StoreError;
use strongroom_domain::ports::payments::LedgerEntry;
use tokio::sync::{mpsc, oneshot};

use crate::pg_direct::PgLane;
use crate::sqlite_direct::SqliteDirect;

/// Most entries in one transaction.
const MAX_BATCH: usize = 256;

/// The insert of one entry (`$1`…`$12` in [`LEDGER_COLUMNS`] order).
pub(crate) const INSERT_ENTRY: &str = "INSERT INTO sandbox_ledger (idempotency_key, operation, reference, amount, \
     currency, outcome, decline_code, challenge, gateway_reference, created_at, stored_credential, \
     network_transaction_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
     ON CONFLICT (idempotency_key) DO NOTHING";

type Reply = oneshot::Sender<Result<bool, StoreError>>;

/// Where the batches go.
#[derive(Debug, Clone)]
pub(crate) enum Sink {
    /// SQLite's direct writer.
    Sqlite(Arc<SqliteDirect>),
    /// PostgreSQL's write lane.
    Postgres(Arc<PgLane>),
}

/// Handle to the writer tasks.
#[derive(Debug)]
pub(crate) struct LedgerWriter {
    jobs: mpsc::Sender<(LedgerEntry, Reply)>,
}

impl LedgerWriter {
    /// Starts `writers` tasks writing to `sink`.
    pub(crate) fn start(sink: Sink, writers: usize) -> Self {
        let (jobs, receiver) = mpsc::channel(4096);
        let receiver = Arc::new(tokio::sync::Mutex::new(receiver));
        for _ in 0..writers.max(1) {
            tokio::spawn(run(sink.clone(), receiver.clone()));
        }
        Self { jobs }
    }

    /// Inserts `entry` unless its key is recorded already; `true` when it was inserted. Returns
    /// after the commit.
    pub(crate) async fn insert(&self, entry: LedgerEntry) -> Result<bool, StoreError> {
        let (reply, answer) = oneshot::channel();
        let stopped = || StoreError::Unavailable("the ledger writer stopped".to_owned());
        self.jobs.send((entry, reply)).await.map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

async fn run(sink: Sink, receiver: Arc<tokio::sync::Mutex<mpsc::Receiver<(LedgerEntry, Reply)>>>) {
    loop {
        let mut batch = Vec::new();
        {
            let mut receiver = receiver.lock().await;
            match receiver.recv().await {
                Some(job) => batch.push(job),
                None => return,
            }
            while batch.len() < MAX_BATCH {
                match receiver.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
        }
        let entries: Vec<LedgerEntry> = batch.iter().map(|(entry, _)| entry.clone()).collect();
        match write(&sink, entries).await {
            Ok(inserted) => {
                for ((_, reply), inserted) in batch.into_iter().zip(inserted) {
                    let _ = reply.send(Ok(inserted));
                }
            }
            Err(err) => {
                for (_, reply) in batch {
                    let _ = reply.send(Err(err.clone()));
                }
            }
        }
    }
}

/// Inserts `entries` in one transaction; for each, whether it was inserted.
async fn write(sink: &Sink, entries: Vec<LedgerEntry>) -> Result<Vec<bool>, StoreError> {
    match sink {
        Sink::Sqlite(direct) => {
            direct
                .write(move |tx| {
                    let mut statement = tx.prepare_cached(INSERT_ENTRY)?;
                    entries
                        .iter()
                        .map(|e| {
                            statement
                                .execute(rusqlite::params![
                                    e.idempotency_key,
                                    e.operation,
                                    e.reference,
                                    e.amount,
                                    e.currency,
                                    e.outcome,
                                    e.decline_code,
                                    e.challenge,
                                    e.gateway_reference,
                                    e.at.unix_millis(),
                                    e.stored_credential,
                                    e.network_transaction_id,
                                ])
                                .map(|changed| changed == 1)
                        })
                        .collect()
                })
                .await
        }
        Sink::Postgres(lane) => {
            let entries = Arc::new(entries);
            // Safe to run twice: an entry a lost commit did insert is then found under its key
            // (answered as not inserted here, and its caller reads it back: the same entry).
            lane.run_repeatable(move |conn| {
                let entries = entries.clone();
                Box::pin(async move {
                    let mut tx = sqlx::Connection::begin(conn).await?;
                    let mut inserted = Vec::with_capacity(entries.len());
                    for e in entries.iter() {
                        let changed = sqlx::query(INSERT_ENTRY)
                            .bind(&e.idempotency_key)
                            .bind(&e.operation)
                            .bind(&e.reference)
                            .bind(e.amount)
                            .bind(&e.currency)
                            .bind(&e.outcome)
                            .bind(e.decline_code.as_deref())
                            .bind(e.challenge.as_deref())
                            .bind(&e.gateway_reference)
                            .bind(e.at.unix_millis())
                            .bind(e.stored_credential.as_deref())
                            .bind(e.network_transaction_id.as_deref())
                            .execute(&mut *tx)
                            .await?
                            .rows_affected();
                        inserted.push(changed == 1);
                    }
                    tx.commit().await?;
                    Ok(inserted)
                })
            })
            .await
        }
    }
}
