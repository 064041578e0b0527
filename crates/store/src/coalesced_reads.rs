//! Coalesced point reads: concurrent look-ups by key are gathered by a few reader tasks, and each
//! task answers everything waiting with one query (`WHERE id = ANY($1)` on PostgreSQL).
//!
//! Why: on PostgreSQL a point read costs far more in per-statement work (a protocol round trip,
//! a portal, an executor start, a snapshot, and a wake-up on both ends) than in the index probe
//! itself. Under load, many reads of the vault's tokens are in flight at once; one statement for
//! all of them keeps the probes and sheds most of the rest. When reads arrive one at a time, a
//! reader task is idle and takes each alone, so nothing waits for a batch to fill.
//!
//! A read is sent to the database only after it was asked for, so it sees every commit that
//! finished before: a token deleted or erased before a reveal started is never served from an
//! older answer (nothing is cached).
//! Must never: answer a key with another key's row, or keep a row after answering.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use strongroom_domain::StoreError;
use tokio::sync::{mpsc, oneshot};

/// Most keys in one query.
const MAX_BATCH: usize = 256;

type Reply<R> = oneshot::Sender<Result<Option<R>, StoreError>>;

/// The queue of reads waiting, shared by the reader tasks.
type Waiting<R> = Arc<tokio::sync::Mutex<mpsc::Receiver<(String, Reply<R>)>>>;

/// Fetches the rows of a set of distinct keys (missing keys are simply absent).
pub(crate) type Fetch<R> = Arc<
    dyn Fn(Vec<String>) -> Pin<Box<dyn Future<Output = Result<Vec<(String, R)>, StoreError>> + Send>> + Send + Sync,
>;

/// Handle to the reader tasks; they stop when it is dropped.
pub(crate) struct CoalescedReads<R> {
    jobs: mpsc::Sender<(String, Reply<R>)>,
}

impl<R> std::fmt::Debug for CoalescedReads<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CoalescedReads").finish_non_exhaustive()
    }
}

impl<R: Clone + Send + 'static> CoalescedReads<R> {
    /// Starts `readers` reader tasks (at most that many queries in flight) over `fetch`. Needs a
    /// Tokio runtime.
    pub(crate) fn start(readers: usize, fetch: Fetch<R>) -> Self {
        let (jobs, receiver) = mpsc::channel::<(String, Reply<R>)>(4096);
        let receiver = Arc::new(tokio::sync::Mutex::new(receiver));
        for _ in 0..readers.max(1) {
            tokio::spawn(read_batches(receiver.clone(), fetch.clone()));
        }
        Self { jobs }
    }

    /// The row of `key`, read by the next query that starts after this call.
    pub(crate) async fn get(&self, key: String) -> Result<Option<R>, StoreError> {
        let stopped = || StoreError::Unavailable("the database readers have stopped".into());
        let (reply, answer) = oneshot::channel();
        self.jobs.send((key, reply)).await.map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

async fn read_batches<R: Clone + Send + 'static>(receiver: Waiting<R>, fetch: Fetch<R>) {
    loop {
        // Take everything waiting while holding the receiver, then read without it so another
        // task can gather the next batch meanwhile.
        let mut waiting: HashMap<String, Vec<Reply<R>>> = HashMap::new();
        {
            let mut receiver = receiver.lock().await;
            let Some((key, reply)) = receiver.recv().await else { return };
            waiting.entry(key).or_default().push(reply);
            while waiting.len() < MAX_BATCH {
                match receiver.try_recv() {
                    Ok((key, reply)) => waiting.entry(key).or_default().push(reply),
                    Err(_) => break,
                }
            }
        }
        let keys: Vec<String> = waiting.keys().cloned().collect();
        match fetch(keys).await {
            Ok(rows) => {
                for (key, row) in rows {
                    if let Some(replies) = waiting.remove(&key) {
                        for reply in replies {
                            let _ = reply.send(Ok(Some(row.clone())));
                        }
                    }
                }
                for reply in waiting.into_values().flatten() {
                    let _ = reply.send(Ok(None));
                }
            }
            Err(err) => {
                for reply in waiting.into_values().flatten() {
                    let _ = reply.send(Err(err.clone()));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn counting_fetch(calls: Arc<AtomicUsize>) -> Fetch<String> {
        Arc::new(move |keys: Vec<String>| {
            calls.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move {
                tokio::task::yield_now().await;
                Ok(keys
                    .into_iter()
                    .filter(|k| !k.starts_with("missing"))
                    .map(|k| (k.clone(), format!("row of {k}")))
                    .collect())
            })
        })
    }

    #[tokio::test]
    async fn every_key_gets_its_own_row_or_none() {
        let calls = Arc::new(AtomicUsize::new(0));
        let reads = Arc::new(CoalescedReads::start(2, counting_fetch(calls.clone())));
        let keys: Vec<String> =
            (0..500).map(|i| if i % 7 == 0 { format!("missing{i}") } else { format!("k{}", i % 50) }).collect();
        let tasks: Vec<_> = keys
            .iter()
            .cloned()
            .map(|key| {
                let reads = reads.clone();
                tokio::spawn(async move { (key.clone(), reads.get(key).await) })
            })
            .collect();
        for task in tasks {
            let (key, answer) = task.await.expect("task");
            let answer = answer.expect("read");
            if key.starts_with("missing") {
                assert_eq!(answer, None);
            } else {
                assert_eq!(answer, Some(format!("row of {key}")));
            }
        }
        // 500 reads in flight together took fewer queries than reads.
        assert!(calls.load(Ordering::SeqCst) < 500);
    }

    #[tokio::test]
    async fn a_failed_query_fails_each_of_its_reads() {
        let fetch: Fetch<String> =
            Arc::new(|_keys| Box::pin(async { Err(StoreError::Unavailable("database down".into())) }));
        let reads = CoalescedReads::start(1, fetch);
        assert!(matches!(reads.get("k".into()).await, Err(StoreError::Unavailable(_))));
    }
}
