//! The job runner: one leader per deployment runs every periodic job (outbox delivery, audit
//! checkpoints, purges, rewrapping after a rotation, …); other processes stand by and take over
//! when the leader's hold ends. On PostgreSQL the hold is a session advisory lock, on SQLite the
//! one process that holds the data directory leads.
//! Jobs are idempotent and resumable: each works in small steps whose effects are conditional
//! updates, so a leader that dies mid-run leaves nothing for its successor to undo.
//! Must never: run a job while this process does not hold the leadership, or run one job twice
//! at once in this process.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use futures::future::BoxFuture;
use strongroom_types::{Clock, Timestamp};

use crate::{DomainError, StoreError};

/// Holding the deployment's leadership.
#[async_trait]
pub trait Leadership: Send + Sync + std::fmt::Debug {
    /// Takes the leadership if free, or confirms this process still holds it. `false`: another
    /// process leads (or this one lost its hold).
    async fn hold(&self) -> Result<bool, StoreError>;
    /// Gives the leadership up (at shutdown).
    async fn release(&self);
}

/// One process alone: it always leads (SQLite, where the data directory admits one process).
#[derive(Debug, Default)]
pub struct SoleProcess;

#[async_trait]
impl Leadership for SoleProcess {
    async fn hold(&self) -> Result<bool, StoreError> {
        Ok(true)
    }
    async fn release(&self) {}
}

/// A job's last run, as stored.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct JobRecord {
    /// The job's name.
    pub name: String,
    /// The node that ran it last.
    pub node: Option<String>,
    /// Last start (RFC 3339).
    pub last_started_at: Option<String>,
    /// Last end (RFC 3339).
    pub last_finished_at: Option<String>,
    /// `ok` or `failed`.
    pub last_outcome: Option<String>,
    /// What it did or why it failed (counts and codes only).
    pub last_detail: Option<String>,
    /// How long the last run took.
    pub last_duration_ms: Option<i64>,
    /// Runs since the deployment began.
    pub runs: i64,
    /// Failed runs since the deployment began.
    pub failures: i64,
}

/// The leader as last recorded.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LeaderRecord {
    /// The node.
    pub node: String,
    /// Leading since (RFC 3339).
    pub since: String,
    /// Last heartbeat (RFC 3339).
    pub heartbeat_at: String,
    /// Milliseconds since the last heartbeat, at the time of reading.
    pub heartbeat_age_ms: i64,
}

/// Storage of job runs and the leader's heartbeat.
#[async_trait]
pub trait JobRepository: Send + Sync + std::fmt::Debug {
    /// Records a run's end.
    async fn record_run(
        &self,
        name: &str,
        node: &str,
        started: Timestamp,
        finished: Timestamp,
        outcome: &str,
        detail: &str,
    ) -> Result<(), StoreError>;
    /// Every job's last run.
    async fn job_runs(&self) -> Result<Vec<JobRecord>, StoreError>;
    /// The leader's heartbeat (sets `since` when the node changes).
    async fn leader_heartbeat(&self, node: &str, at: Timestamp) -> Result<(), StoreError>;
    /// The recorded leader.
    async fn leader(&self, now: Timestamp) -> Result<Option<LeaderRecord>, StoreError>;
}

type JobFn = Arc<dyn Fn() -> BoxFuture<'static, Result<String, DomainError>> + Send + Sync>;

/// One periodic job.
#[derive(Clone)]
pub struct Job {
    /// Stable name, e.g. `vault.purge_expired`.
    pub name: &'static str,
    /// Pause between runs.
    pub every: Duration,
    /// Also run when this is notified (the outbox wakes its delivery job).
    pub wake: Option<Arc<tokio::sync::Notify>>,
    /// Whether a run is recorded even when it did nothing (`false` for the outbox delivery,
    /// which runs many times a second; its rounds that did something are recorded).
    pub record_idle: bool,
    run: JobFn,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job").field("name", &self.name).field("every", &self.every).finish_non_exhaustive()
    }
}

impl Job {
    /// A job running `run` every `every`. `run` answers a short detail (`"purged 3"`), or `""`
    /// when it found nothing to do.
    pub fn new<F>(name: &'static str, every: Duration, run: F) -> Self
    where
        F: Fn() -> BoxFuture<'static, Result<String, DomainError>> + Send + Sync + 'static,
    {
        Self { name, every, wake: None, record_idle: true, run: Arc::new(run) }
    }

    /// Also runs when `notify` fires.
    pub fn woken_by(mut self, notify: Arc<tokio::sync::Notify>) -> Self {
        self.wake = Some(notify);
        self
    }

    /// Records only runs that did something.
    pub fn quiet(mut self) -> Self {
        self.record_idle = false;
        self
    }
}

/// Runs the jobs while this process leads.
#[derive(Debug)]
pub struct JobRunner {
    leadership: Arc<dyn Leadership>,
    repo: Arc<dyn JobRepository>,
    clock: Arc<dyn Clock>,
    node: String,
    leading: Arc<AtomicBool>,
    /// How often leadership is confirmed or sought.
    pub poll: Duration,
}

/// The running runner's tasks; dropping it does not stop them, [`RunningJobs::stop`] does.
#[derive(Debug)]
pub struct RunningJobs {
    leader_task: tokio::task::JoinHandle<()>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    leadership: Arc<dyn Leadership>,
    leading: Arc<AtomicBool>,
    stopping: Arc<tokio::sync::watch::Sender<bool>>,
}

/// How long a stop waits for runs in progress to finish before it cuts them off.
const STOP_GRACE: Duration = Duration::from_secs(10);

impl RunningJobs {
    /// The flag that says whether this process leads (for the metrics).
    pub fn leading_flag(&self) -> Arc<AtomicBool> {
        self.leading.clone()
    }

    /// Whether this process leads now.
    pub fn leading(&self) -> bool {
        self.leading.load(Ordering::Acquire)
    }

    /// Stops every job, letting a run in progress finish (up to ten seconds, so a delivery round
    /// records what it sent), and gives the leadership up.
    pub async fn stop(self) {
        let _ = self.stopping.send(true);
        let mut tasks = self.tasks;
        let finished = tokio::time::timeout(STOP_GRACE, async {
            for task in &mut tasks {
                let _ = task.await;
            }
        })
        .await;
        if finished.is_err() {
            tracing::warn!("background jobs still running at the stop were cut off");
            for task in &tasks {
                task.abort();
            }
        }
        self.leader_task.abort();
        let _ = self.leader_task.await;
        self.leading.store(false, Ordering::Release);
        self.leadership.release().await;
    }
}

impl JobRunner {
    /// A runner for `node`.
    pub fn new(
        leadership: Arc<dyn Leadership>,
        repo: Arc<dyn JobRepository>,
        clock: Arc<dyn Clock>,
        node: impl Into<String>,
    ) -> Self {
        Self {
            leadership,
            repo,
            clock,
            node: node.into(),
            leading: Arc::new(AtomicBool::new(false)),
            poll: Duration::from_secs(1),
        }
    }

    /// Starts the leadership loop and one task per job.
    pub fn start(self, jobs: Vec<Job>) -> RunningJobs {
        let mut tasks = Vec::new();
        let leading = self.leading.clone();
        let (stopping, stop_signal) = tokio::sync::watch::channel(false);
        let leader_task = {
            let (leadership, repo, clock, node, leading, poll) = (
                self.leadership.clone(),
                self.repo.clone(),
                self.clock.clone(),
                self.node.clone(),
                self.leading.clone(),
                self.poll,
            );
            tokio::spawn(async move {
                loop {
                    let held = match leadership.hold().await {
                        Ok(held) => held,
                        Err(err) => {
                            tracing::warn!(error = %err, "the leadership could not be confirmed");
                            false
                        }
                    };
                    let was = leading.swap(held, Ordering::AcqRel);
                    if held && !was {
                        tracing::info!(node = %node, "this process now leads the background jobs");
                    } else if !held && was {
                        tracing::warn!(node = %node, "this process no longer leads the background jobs");
                    }
                    if held && let Err(err) = repo.leader_heartbeat(&node, clock.now()).await {
                        tracing::warn!(error = %err, "the leader's heartbeat could not be written");
                    }
                    tokio::time::sleep(poll).await;
                }
            })
        };
        for job in jobs {
            let (repo, clock, node, leading) =
                (self.repo.clone(), self.clock.clone(), self.node.clone(), self.leading.clone());
            let mut stop = stop_signal.clone();
            tasks.push(tokio::spawn(async move {
                loop {
                    let pause = async {
                        match &job.wake {
                            Some(wake) => {
                                let _ = tokio::time::timeout(job.every, wake.notified()).await;
                            }
                            None => tokio::time::sleep(job.every).await,
                        }
                    };
                    tokio::select! {
                        () = pause => {}
                        _ = stop.wait_for(|stopping| *stopping) => return,
                    }
                    if *stop.borrow() {
                        return;
                    }
                    if !leading.load(Ordering::Acquire) {
                        continue;
                    }
                    let started = clock.now();
                    let result = (job.run)().await;
                    let finished = clock.now();
                    let (outcome, detail) = match &result {
                        Ok(detail) => ("ok", detail.clone()),
                        Err(err) => {
                            tracing::error!(job = job.name, error = %err, "background job failed");
                            ("failed", failure_detail(err))
                        }
                    };
                    if !job.record_idle && outcome == "ok" && detail.is_empty() {
                        continue;
                    }
                    if let Err(err) = repo.record_run(job.name, &node, started, finished, outcome, &detail).await {
                        tracing::warn!(job = job.name, error = %err, "a job run could not be recorded");
                    }
                }
            }));
        }
        RunningJobs { leader_task, tasks, leadership: self.leadership, leading, stopping: Arc::new(stopping) }
    }
}

/// A failure as the job status shows it: a code, never a message that might hold data.
fn failure_detail(err: &DomainError) -> String {
    match err {
        DomainError::Store(StoreError::Unavailable(_)) => "database_unavailable".into(),
        DomainError::Store(_) => "database_error".into(),
        DomainError::Kms(_) => "kms_unavailable".into(),
        DomainError::AuditUnavailable(_) => "audit_unavailable".into(),
        DomainError::Integrity => "integrity_error".into(),
        _ => "failed".into(),
    }
}

/// The job runner's state as `strongroom jobs status` and `GET /v1/admin/jobs` show it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct JobsStatus {
    /// The recorded leader (none before the first heartbeat).
    pub leader: Option<LeaderRecord>,
    /// Each job's last run.
    pub jobs: Vec<JobRecord>,
    /// The outbox.
    pub outbox: OutboxStatus,
}

/// The outbox's depth and age.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct OutboxStatus {
    /// Messages waiting for delivery.
    pub pending: u64,
    /// The oldest waiting message's creation time (RFC 3339).
    pub oldest_pending_at: Option<String>,
    /// Its age in seconds: the delivery lag.
    pub oldest_pending_age_seconds: Option<i64>,
    /// Messages given up after three days of retries (or refused for good).
    pub failed: u64,
    /// Delivered messages still in the delivery log.
    pub delivered: u64,
}

/// Reads [`JobsStatus`].
#[derive(Debug, Clone)]
pub struct JobsStatusReader {
    jobs: Arc<dyn JobRepository>,
    outbox: Arc<dyn crate::outbox::OutboxRepository>,
    clock: Arc<dyn Clock>,
}

impl JobsStatusReader {
    /// A reader.
    pub fn new(
        jobs: Arc<dyn JobRepository>,
        outbox: Arc<dyn crate::outbox::OutboxRepository>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self { jobs, outbox, clock }
    }

    /// The status now.
    pub async fn status(&self) -> Result<JobsStatus, DomainError> {
        let now = self.clock.now();
        let stats = self.outbox.stats().await?;
        Ok(JobsStatus {
            leader: self.jobs.leader(now).await?,
            jobs: self.jobs.job_runs().await?,
            outbox: OutboxStatus {
                pending: stats.pending,
                oldest_pending_at: stats.oldest_pending.map(Timestamp::to_rfc3339),
                oldest_pending_age_seconds: stats.oldest_pending.map(|t| now.millis_since(t).max(0) / 1000),
                failed: stats.failed,
                delivered: stats.delivered,
            },
        })
    }
}
