//! The audit log service: one writer task per process that batches appends into one transaction
//! (group commit), signed checkpoints, and proofs read from stored nodes.
//!
//! [`AuditLog::record`] returns the leaf index once the transaction that holds the event has
//! committed; a caller that cannot wait for that fails its request instead (503), so no event is
//! ever dropped: a full queue makes callers wait (back-pressure), it never thins the log.
//! Several processes may share one PostgreSQL database: an append states the size it
//! builds on, and a writer that finds the log grown reloads its frontier and tries again.
//! Must never: acknowledge an event before its transaction commits, or sign a root it did not compute.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use strongroom_types::{Clock, Timestamp};
use tokio::sync::{mpsc, oneshot};

use super::checkpoint::CheckpointSigner;
use super::event::{AuditEvent, Outcome, encode_leaf};
use super::merkle::{self, Frontier, Hash, NodeId};
use crate::StoreError;
use crate::ports::{AppendError, AuditRecord, AuditRepository, StoredCheckpoint};

/// Most events written in one transaction.
pub const MAX_BATCH: usize = 8192;

/// What can go wrong.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// A proof asked for an index or size outside the log.
    #[error("{0}")]
    OutOfRange(&'static str),
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Stored nodes are missing or inconsistent: the log has been tampered with or is corrupt.
    #[error("audit log integrity: {0}")]
    Integrity(String),
    /// The writer has stopped.
    #[error("the audit log writer has stopped")]
    Closed,
}

type Ack = oneshot::Sender<Result<u64, String>>;

enum Command {
    Append(AuditEvent, Option<Ack>),
    Checkpoint(oneshot::Sender<Result<StoredCheckpoint, String>>),
    Close(oneshot::Sender<()>),
}

/// Committed events counted by action, result and reason code, for the metrics (every label is
/// a constant of the code, never a value from a request).
pub type EventCounts = std::collections::HashMap<(&'static str, &'static str, &'static str), u64>;

/// Handle to the audit log. Cheap to clone.
#[derive(Clone)]
pub struct AuditLog {
    commands: mpsc::Sender<Command>,
    repo: Arc<dyn AuditRepository>,
    signer: Arc<CheckpointSigner>,
    committed: Arc<AtomicU64>,
    counts: Arc<std::sync::Mutex<EventCounts>>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog").field("committed", &self.committed.load(Ordering::Relaxed)).finish_non_exhaustive()
    }
}

struct Writer {
    repo: Arc<dyn AuditRepository>,
    signer: Arc<CheckpointSigner>,
    clock: Arc<dyn Clock>,
    frontier: Frontier,
    committed: Arc<AtomicU64>,
    counts: Arc<std::sync::Mutex<EventCounts>>,
    /// Size right after the last checkpoint's own `audit.checkpoint.made` entry.
    quiet_size: Option<u64>,
}

async fn load_frontier(repo: &dyn AuditRepository) -> Result<Frontier, AuditError> {
    let size = repo.size().await?;
    let ids = Frontier::nodes_for(size);
    let hashes: Option<Vec<Hash>> = repo.nodes(&ids).await?.into_iter().collect();
    let hashes =
        hashes.ok_or_else(|| AuditError::Integrity(format!("nodes of the tree of size {size} are missing")))?;
    Frontier::from_nodes(size, &hashes).ok_or_else(|| AuditError::Integrity("frontier does not fit the size".into()))
}

impl AuditLog {
    /// Opens the log and starts its writer task.
    pub async fn open(
        repo: Arc<dyn AuditRepository>,
        signer: Arc<CheckpointSigner>,
        clock: Arc<dyn Clock>,
    ) -> Result<(Self, tokio::task::JoinHandle<()>), AuditError> {
        let frontier = load_frontier(repo.as_ref()).await?;
        let committed = Arc::new(AtomicU64::new(frontier.size()));
        let (commands, receiver) = mpsc::channel(65_536);
        // The series alerts watch for a first occurrence exist from the start, at 0, so that a
        // rate over them sees the first event.
        let mut seeded = EventCounts::new();
        for reason in ["read", "revealed", "deleted", "used", "forwarded"] {
            seeded.insert(("security.canary_token_used", "failed", reason), 0);
        }
        seeded.insert(("security.integrity_error", "failed", "decrypt_failed"), 0);
        seeded.insert(("staff.locked", "denied", "too_many_failures"), 0);
        let counts = Arc::new(std::sync::Mutex::new(seeded));
        let writer = Writer {
            repo: repo.clone(),
            signer: signer.clone(),
            clock,
            frontier,
            committed: committed.clone(),
            counts: counts.clone(),
            quiet_size: None,
        };
        let task = tokio::spawn(writer.run(receiver));
        Ok((Self { commands, repo, signer, committed, counts }, task))
    }

    /// Appends an event and returns its leaf index once it is committed. Waits for room in the
    /// writer's queue when it is full: events are never dropped.
    pub async fn record(&self, event: AuditEvent) -> Result<u64, AuditError> {
        let (ack, done) = oneshot::channel();
        self.commands.send(Command::Append(event, Some(ack))).await.map_err(|_| AuditError::Closed)?;
        done.await.map_err(|_| AuditError::Closed)?.map_err(|e| AuditError::Store(StoreError::Unavailable(e)))
    }

    /// Makes a signed checkpoint of everything committed so far (and logs that it did).
    pub async fn checkpoint(&self) -> Result<StoredCheckpoint, AuditError> {
        let (ack, done) = oneshot::channel();
        self.commands.send(Command::Checkpoint(ack)).await.map_err(|_| AuditError::Closed)?;
        done.await.map_err(|_| AuditError::Closed)?.map_err(|e| AuditError::Store(StoreError::Other(e)))
    }

    /// Waits until everything queued before is committed, then stops the writer.
    pub async fn close(&self) {
        let (ack, done) = oneshot::channel();
        if self.commands.send(Command::Close(ack)).await.is_ok() {
            let _ = done.await;
        }
    }

    /// Events this process committed since it started, by action, result and reason code.
    pub fn event_counts(&self) -> EventCounts {
        self.counts.lock().map(|c| c.clone()).unwrap_or_default()
    }

    /// Entries committed by this process's writer (others may have appended more).
    pub fn committed_size(&self) -> u64 {
        self.committed.load(Ordering::Acquire)
    }

    /// The size of the log in the database.
    pub async fn size(&self) -> Result<u64, AuditError> {
        Ok(self.repo.size().await?)
    }

    /// The checkpoint signer (origin and verifier key).
    pub fn signer(&self) -> &CheckpointSigner {
        &self.signer
    }

    /// The latest checkpoint.
    pub async fn latest_checkpoint(&self) -> Result<Option<StoredCheckpoint>, AuditError> {
        Ok(self.repo.latest_checkpoint().await?)
    }

    /// Entries from `start`.
    pub async fn entries(&self, start: u64, limit: u32) -> Result<Vec<AuditRecord>, AuditError> {
        Ok(self.repo.entries(start, limit).await?)
    }

    /// The newest committed entries about a customer or staff member, newest first.
    pub async fn entries_about(
        &self,
        merchant: &crate::merchants::MerchantId,
        subject: &str,
        limit: u32,
    ) -> Result<Vec<AuditRecord>, AuditError> {
        Ok(self.repo.entries_about(merchant, subject, limit).await?)
    }

    async fn resolve(&self, steps: &[Vec<NodeId>]) -> Result<Vec<Hash>, AuditError> {
        let mut ids: Vec<NodeId> = steps.iter().flatten().copied().collect();
        ids.sort_unstable();
        ids.dedup();
        let found = self.repo.nodes(&ids).await?;
        let map: std::collections::HashMap<NodeId, Hash> =
            ids.iter().zip(found).filter_map(|(id, hash)| hash.map(|h| (*id, h))).collect();
        steps
            .iter()
            .map(|step| {
                let hashes: Option<Vec<Hash>> = step.iter().map(|id| map.get(id).copied()).collect();
                hashes
                    .and_then(|h| merkle::fold(&h))
                    .ok_or_else(|| AuditError::Integrity("a stored tree node is missing".into()))
            })
            .collect()
    }

    /// The root hash of the first `size` entries.
    pub async fn root(&self, size: u64) -> Result<Hash, AuditError> {
        if size == 0 {
            return Ok(merkle::empty_root());
        }
        let hashes = self.resolve(&[merkle::range_nodes(0, size)]).await?;
        hashes.first().copied().ok_or_else(|| AuditError::Integrity("no root".into()))
    }

    /// The leaf hash of `index` and its inclusion proof in the tree of `tree_size` entries.
    pub async fn inclusion_proof(&self, index: u64, tree_size: u64) -> Result<(Hash, Vec<Hash>), AuditError> {
        if tree_size > self.size().await? {
            return Err(AuditError::OutOfRange("tree_size is larger than the log"));
        }
        let steps = merkle::plan_inclusion(index, tree_size)
            .ok_or(AuditError::OutOfRange("index must be less than tree_size"))?;
        let leaf = self.resolve(&[vec![(0, index)]]).await?;
        let proof = self.resolve(&steps).await?;
        Ok((leaf.first().copied().unwrap_or_default(), proof))
    }

    /// The consistency proof between sizes `first` and `second`.
    pub async fn consistency_proof(&self, first: u64, second: u64) -> Result<Vec<Hash>, AuditError> {
        if second > self.size().await? {
            return Err(AuditError::OutOfRange("second is larger than the log"));
        }
        let steps = merkle::plan_consistency(first, second)
            .ok_or(AuditError::OutOfRange("first must be between 1 and second"))?;
        self.resolve(&steps).await
    }
}

impl Writer {
    async fn run(mut self, mut receiver: mpsc::Receiver<Command>) {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        while let Some(first) = receiver.recv().await {
            batch.push(first);
            while batch.len() < MAX_BATCH {
                match receiver.try_recv() {
                    Ok(command) => batch.push(command),
                    Err(_) => break,
                }
            }
            let mut appends = Vec::new();
            let mut stop = None;
            for command in batch.drain(..) {
                match command {
                    Command::Append(event, ack) => appends.push((event, ack)),
                    Command::Checkpoint(ack) => {
                        self.append(std::mem::take(&mut appends)).await;
                        let result = self.checkpoint().await.map_err(|e| e.to_string());
                        let _ = ack.send(result);
                    }
                    Command::Close(ack) => stop = Some(ack),
                }
            }
            self.append(appends).await;
            if let Some(ack) = stop {
                let _ = ack.send(());
                break;
            }
        }
    }

    async fn append(&mut self, appends: Vec<(AuditEvent, Option<Ack>)>) {
        if appends.is_empty() {
            return;
        }
        let mut attempts = 0;
        let outcome = loop {
            attempts += 1;
            let now = self.clock.now();
            let mut frontier = self.frontier.clone();
            let (records, nodes) = build(&mut frontier, appends.iter().map(|(e, _)| e), now);
            match self.repo.append(self.frontier.size(), &records, &nodes).await {
                Ok(()) => {
                    self.frontier = frontier;
                    self.committed.store(self.frontier.size(), Ordering::Release);
                    break Ok(records.first().map_or(0, |r| r.seq));
                }
                Err(AppendError::Conflict { actual_size }) if attempts < 10 => {
                    tracing::debug!(actual_size, "audit log grew elsewhere; reloading");
                    match load_frontier(self.repo.as_ref()).await {
                        Ok(frontier) => self.frontier = frontier,
                        Err(err) => break Err(err.to_string()),
                    }
                }
                Err(err) => break Err(err.to_string()),
            }
        };
        match outcome {
            Ok(first_seq) => {
                if let Ok(mut counts) = self.counts.lock() {
                    for (event, _) in &appends {
                        let (result, reason) = match &event.outcome {
                            Outcome::Success => ("success", ""),
                            // A reason given with a success is free text of the caller's: not a label.
                            Outcome::SuccessBecause(_) => ("success", ""),
                            Outcome::Denied(code) => ("denied", *code),
                            Outcome::Failed(code) => ("failed", *code),
                        };
                        *counts.entry((event.action, result, reason)).or_insert(0) += 1;
                    }
                }
                for (offset, (_, ack)) in appends.into_iter().enumerate() {
                    if let Some(ack) = ack {
                        let _ = ack.send(Ok(first_seq + offset as u64));
                    }
                }
            }
            Err(err) => {
                tracing::error!(error = %err, events = appends.len(), "audit append failed");
                for (_, ack) in appends {
                    if let Some(ack) = ack {
                        let _ = ack.send(Err(err.clone()));
                    }
                }
            }
        }
    }

    async fn checkpoint(&mut self) -> Result<StoredCheckpoint, AuditError> {
        // Catch up with other writers first, so the checkpoint covers the whole log.
        if self.repo.size().await? != self.frontier.size() {
            self.frontier = load_frontier(self.repo.as_ref()).await?;
            self.committed.store(self.frontier.size(), Ordering::Release);
        }
        let size = self.frontier.size();
        if self.quiet_size == Some(size)
            && let Some(latest) = self.repo.latest_checkpoint().await?
        {
            return Ok(latest);
        }
        let root = self.frontier.root();
        let checkpoint =
            StoredCheckpoint { size, root, note: self.signer.sign(size, root), created_at: self.clock.now() };
        self.repo.insert_checkpoint(&checkpoint).await?;
        let event = AuditEvent::system("audit.checkpoint.made", Outcome::Success).on("checkpoint", size.to_string());
        self.append(vec![(event, None)]).await;
        self.quiet_size = Some(self.frontier.size());
        Ok(checkpoint)
    }
}

/// Assigns places to events and computes the leaves and the nodes they complete.
fn build<'a>(
    frontier: &mut Frontier,
    events: impl Iterator<Item = &'a AuditEvent>,
    now: Timestamp,
) -> (Vec<AuditRecord>, Vec<(NodeId, Hash)>) {
    let mut records = Vec::new();
    let mut nodes = Vec::new();
    for event in events {
        let seq = frontier.size();
        let leaf = encode_leaf(event, seq, now);
        nodes.extend(frontier.push(merkle::leaf_hash(&leaf)));
        records.push(AuditRecord { seq, merchant: event.merchant.clone(), time: now, leaf, subject: event.subject() });
    }
    (records, nodes)
}
