//! Group commit for token inserts: concurrent tokenize requests hand their rows to one writer
//! task, which stores everything waiting in one transaction and answers each request with its own
//! outcomes. One commit (one fsync) then serves many requests, instead of one each; a request is
//! answered only after its transaction committed, so an acknowledged token survives a crash.
//! A new customer's data key travels with its tokens and is inserted in the same transaction
//! (the store stores a token under a new key only if that key got stored), so a first token
//! costs no commit of its own.
//! Must never: answer before the commit, or split one request's rows (or a token and its new
//! data key) over two transactions.

use std::sync::Arc;

use strongroom_types::Timestamp;
use tokio::sync::{mpsc, oneshot};

use crate::error::StoreError;
use crate::ports::{DataKeyRecord, TokenInsert, TokenRecord, VaultRepository};

/// Most rows written in one transaction (a batch request may exceed it alone; it is then written
/// by itself).
const MAX_ROWS: usize = 1024;

type Reply = oneshot::Sender<Result<Vec<TokenInsert>, String>>;

struct Job {
    rows: Vec<TokenRecord>,
    /// New data keys the rows are sealed under.
    new_keys: Vec<DataKeyRecord>,
    now: Timestamp,
    reply: Reply,
}

/// Handle to the writer tasks. Cheap to clone.
#[derive(Clone, Debug)]
pub struct TokenWriter {
    jobs: mpsc::Sender<Job>,
}

impl TokenWriter {
    /// Starts `writers` writer tasks over `repo` (one suits SQLite, which has one writer anyway;
    /// PostgreSQL gains from a few).
    pub fn start(repo: Arc<dyn VaultRepository>, writers: usize) -> Self {
        let (jobs, receiver) = mpsc::channel::<Job>(4096);
        let receiver = Arc::new(tokio::sync::Mutex::new(receiver));
        for _ in 0..writers.max(1) {
            tokio::spawn(run(repo.clone(), receiver.clone()));
        }
        Self { jobs }
    }

    /// Stores `rows`, and the new data keys some of them are sealed under, in one transaction
    /// (shared with other requests') and returns the rows' outcomes.
    pub async fn insert(
        &self,
        rows: Vec<TokenRecord>,
        new_keys: Vec<DataKeyRecord>,
        now: Timestamp,
    ) -> Result<Vec<TokenInsert>, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Job { rows, new_keys, now, reply })
            .await
            .map_err(|_| StoreError::Unavailable("the token writer has stopped".into()))?;
        answer
            .await
            .map_err(|_| StoreError::Unavailable("the token writer has stopped".into()))?
            .map_err(StoreError::Unavailable)
    }
}

async fn run(repo: Arc<dyn VaultRepository>, receiver: Arc<tokio::sync::Mutex<mpsc::Receiver<Job>>>) {
    loop {
        // Take everything waiting, up to the row limit, while holding the receiver; then write
        // without it so another writer can gather the next group meanwhile.
        let group = {
            let mut receiver = receiver.lock().await;
            let Some(first) = receiver.recv().await else { return };
            let mut rows = first.rows.len();
            let mut group = vec![first];
            while rows < MAX_ROWS {
                match receiver.try_recv() {
                    Ok(job) => {
                        rows += job.rows.len();
                        group.push(job);
                    }
                    Err(_) => break,
                }
            }
            group
        };
        let now = group.iter().map(|j| j.now).max_by_key(|t| t.unix_millis()).unwrap_or(group[0].now);
        let all: Vec<TokenRecord> = group.iter().flat_map(|j| j.rows.iter().cloned()).collect();
        // Requests of one node share a new owner's key, so one key may come from several jobs.
        let mut seen = std::collections::HashSet::new();
        let new_keys: Vec<DataKeyRecord> =
            group.iter().flat_map(|j| j.new_keys.iter()).filter(|k| seen.insert(k.id.as_str())).cloned().collect();
        match repo.insert_tokens(&all, &new_keys, now).await {
            Ok(outcomes) => {
                let mut outcomes = outcomes.into_iter();
                for job in group {
                    let mine: Vec<TokenInsert> = outcomes.by_ref().take(job.rows.len()).collect();
                    let _ = job.reply.send(Ok(mine));
                }
            }
            Err(err) => {
                let message = err.to_string();
                for job in group {
                    let _ = job.reply.send(Err(message.clone()));
                }
            }
        }
    }
}
