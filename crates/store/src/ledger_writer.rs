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

/// PostgreSQL: the entries of a batch (distinct keys) in one statement, `$1`…`$12` arrays in
/// [`INSERT_ENTRY`]'s column order; returns the keys it inserted.
const INSERT_ENTRIES_PG: &str = "INSERT INTO sandbox_ledger (idempotency_key, operation, reference, amount, \
     currency, outcome, decline_code, challenge, gateway_reference, created_at, stored_credential, \
     network_transaction_id) SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::bigint[], $5::text[], \
     $6::text[], $7::text[], $8::text[], $9::text[], $10::bigint[], $11::text[], $12::text[]) \
     ON CONFLICT (idempotency_key) DO NOTHING RETURNING idempotency_key";

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
                .write_batch(entries.len(), move |tx| {
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
            // One statement for the batch (a statement commits on its own: no `BEGIN` and
            // `COMMIT` round trips). A key twice in the batch is sent once: the later entry is
            // answered as not inserted, as it would be after the first.
            let mut seen = std::collections::HashSet::with_capacity(entries.len());
            let first: Vec<bool> = entries.iter().map(|e| seen.insert(e.idempotency_key.clone())).collect();
            let unique: Arc<Vec<LedgerEntry>> =
                Arc::new(entries.iter().zip(&first).filter(|(_, first)| **first).map(|(e, _)| e.clone()).collect());
            // Safe to run twice: an entry a lost commit did insert is then found under its key
            // (answered as not inserted here, and its caller reads it back: the same entry).
            let inserted: std::collections::HashSet<String> = lane
                .run_repeatable(move |conn| {
                    let unique = unique.clone();
                    Box::pin(async move {
                        let column = |f: fn(&LedgerEntry) -> Option<String>| unique.iter().map(f).collect::<Vec<_>>();
                        let keys: Vec<String> = unique.iter().map(|e| e.idempotency_key.clone()).collect();
                        sqlx::query_scalar::<_, String>(INSERT_ENTRIES_PG)
                            .bind(keys)
                            .bind(column(|e| Some(e.operation.clone())))
                            .bind(column(|e| Some(e.reference.clone())))
                            .bind(unique.iter().map(|e| e.amount).collect::<Vec<i64>>())
                            .bind(column(|e| Some(e.currency.clone())))
                            .bind(column(|e| Some(e.outcome.clone())))
                            .bind(column(|e| e.decline_code.clone()))
                            .bind(column(|e| e.challenge.clone()))
                            .bind(column(|e| Some(e.gateway_reference.clone())))
                            .bind(unique.iter().map(|e| e.at.unix_millis()).collect::<Vec<i64>>())
                            .bind(column(|e| e.stored_credential.clone()))
                            .bind(column(|e| e.network_transaction_id.clone()))
                            .fetch_all(conn)
                            .await
                            .map(|keys| keys.into_iter().collect())
                    })
                })
                .await?;
            Ok(entries.iter().zip(first).map(|(e, first)| first && inserted.contains(&e.idempotency_key)).collect())
        }
    }
}
