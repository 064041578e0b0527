//! Storage of intrusion detection's decisions: one row per merchant, scope and action, replaced only when
//! its decision is over, lifted or extended only while it holds.
//! Must never: decide "not already decided" by a read followed by a write (the upsert's condition
//! decides), or split a decision from its outbox messages.

use async_trait::async_trait;
use strongroom_types::Timestamp;

use crate::StoreError;
use crate::outbox::OutboxMessage;

/// A stored decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecisionRecord {
    /// `dec_…` (a new id each time the scope is decided again).
    pub id: String,
    /// The merchant whose customers or keys it protects; `None`: deployment-wide.
    pub merchant: Option<String>,
    /// `ip`, `prefix`, `api_key` or `account`.
    pub scope_kind: String,
    /// The address (`203.0.113.7`), prefix (`203.0.113.0/24`, `2001:db8:1:2::/64`), key id
    /// (`key_…`) or account id (`cus_…`, `stf_…`).
    pub scope_value: String,
    /// `block`, `suspend`, `step_up` or `lock`.
    pub action: String,
    /// The detection point (`credential_stuffing`) or `manual`.
    pub reason: String,
    /// What was seen (counts, the staff member's note), for people.
    pub detail: Option<String>,
    /// `detector` or the staff member or API key that decided.
    pub created_by: String,
    /// When.
    pub created_at: Timestamp,
    /// Until when it holds.
    pub until: Timestamp,
    /// Decisions on this scope in the day before this one, this one included.
    pub strikes: u32,
    /// When it was lifted.
    pub lifted_at: Option<Timestamp>,
    /// Who lifted it.
    pub lifted_by: Option<String>,
    /// Last change.
    pub updated_at: Timestamp,
}

impl DecisionRecord {
    /// Whether it holds at `now`.
    pub fn holds(&self, now: Timestamp) -> bool {
        self.lifted_at.is_none() && now.millis_since(self.until) < 0
    }
}

/// Storage of decisions.
#[async_trait]
pub trait DecisionsRepository: Send + Sync + std::fmt::Debug {
    /// The row of a merchant's (`""`: deployment-wide) scope and action, held or not.
    async fn decision_for(
        &self,
        merchant_key: &str,
        kind: &str,
        value: &str,
        action: &str,
    ) -> Result<Option<DecisionRecord>, StoreError>;
    /// Stores `decision` as its scope's row unless that row's decision still holds at
    /// `decision.created_at` (one conditional upsert), with its events. False: one holds.
    async fn decide(&self, decision: &DecisionRecord, events: &[OutboxMessage]) -> Result<bool, StoreError>;
    /// One decision by id.
    async fn decision(&self, id: &str) -> Result<Option<DecisionRecord>, StoreError>;
    /// Decisions that hold at `now`, of every merchant (what a node enforces).
    async fn holding_decisions(&self, now: Timestamp) -> Result<Vec<DecisionRecord>, StoreError>;
    /// A merchant's and the deployment-wide decisions, newest first, at most `limit` (only those
    /// holding at `now` with `holding_only`).
    async fn list_decisions(
        &self,
        merchant: &str,
        holding_only: bool,
        now: Timestamp,
        limit: u32,
    ) -> Result<Vec<DecisionRecord>, StoreError>;
    /// Lifts a decision that holds at `at`; false: it did not hold (lifted, expired, unknown).
    async fn lift_decision(
        &self,
        id: &str,
        at: Timestamp,
        by: &str,
        events: &[OutboxMessage],
    ) -> Result<bool, StoreError>;
    /// Moves a holding decision's end to `until`; false: it did not hold at `at`.
    async fn extend_decision(&self, id: &str, until: Timestamp, at: Timestamp) -> Result<bool, StoreError>;
    /// A number that changes whenever any decision changes, so nodes see changes cheaply.
    async fn decisions_version(&self) -> Result<i64, StoreError>;
    /// Deletes the decisions that ended (lifted, or past their end) before `before`; how many.
    async fn purge_decisions(&self, before: Timestamp) -> Result<u64, StoreError>;
}

/// What one counter saw in one window, the observation just counted included.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Tally {
    /// Observations.
    pub hits: u64,
    /// Distinct items among them (up to [`MAX_DISTINCT_ITEMS`]).
    pub distinct: u64,
    /// Whether this observation's item was new in the window.
    pub new_item: bool,
}

/// Most distinct items one counter keeps per window (detection thresholds are far lower; the
/// cap bounds what a flood can store).
pub const MAX_DISTINCT_ITEMS: u64 = 1_000;

/// Detection's counts, shared by every node (the database, or Redis when configured).
#[async_trait]
pub trait DetectionCounts: Send + Sync + std::fmt::Debug {
    /// Counts one observation of `counter` in the window starting at `window_start` (unix ms),
    /// with its `item` among the window's distinct items, kept until `expires_at`. Atomic: of
    /// concurrent observations each gets a different tally, so exactly one sees a threshold's
    /// count.
    async fn observe(
        &self,
        counter: &str,
        window_start: i64,
        item: Option<&[u8]>,
        expires_at: i64,
    ) -> Result<Tally, StoreError>;
    /// [`Self::observe`] of several counters at once, in one round trip where the backend can
    /// (one statement on PostgreSQL, one transaction on SQLite): each tally as `observe` would
    /// answer it, in the order given. Default: one by one.
    async fn observe_many(&self, observations: &[Observation<'_>]) -> Result<Vec<Tally>, StoreError> {
        let mut tallies = Vec::with_capacity(observations.len());
        for o in observations {
            tallies.push(self.observe(&o.counter, o.window_start, o.item, o.expires_at).await?);
        }
        Ok(tallies)
    }
    /// Deletes the windows that expired by `now` (unix ms); how many rows went.
    async fn purge_counts(&self, now: i64) -> Result<u64, StoreError>;
}

/// One observation for [`DetectionCounts::observe_many`] (the arguments of
/// [`DetectionCounts::observe`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation<'a> {
    /// The counter.
    pub counter: String,
    /// The window's start (unix ms).
    pub window_start: i64,
    /// The item among the window's distinct items, if counted so.
    pub item: Option<&'a [u8]>,
    /// Kept until (unix ms).
    pub expires_at: i64,
}

/// One shared allowance of the generic cell rate algorithm (GCRA): `count` units per `period`,
/// refilled evenly (one every `period / count`), of which all `count` may be spent at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allowance {
    /// Milliseconds between two refills (`period / count`, at least 1).
    pub emission_ms: i64,
    /// The period in milliseconds: a key's arrival time may run at most this far ahead of now.
    pub period_ms: i64,
}

impl Allowance {
    /// `count` per `period`; `None` when `count` is 0 (no limit).
    pub fn new(count: u32, period: std::time::Duration) -> Option<Self> {
        if count == 0 {
            return None;
        }
        let period_ms = i64::try_from(period.as_millis()).unwrap_or(i64::MAX).max(1);
        Some(Self { emission_ms: (period_ms / i64::from(count)).max(1), period_ms })
    }

    /// The milliseconds until a unit is free for a key whose arrival time is `tat` (0: one is
    /// free now), and the arrival time after taking it.
    pub fn at(self, tat: Option<i64>, now: i64) -> (i64, i64) {
        let next = tat.map_or(now, |tat| tat.max(now)).saturating_add(self.emission_ms);
        (next.saturating_sub(self.period_ms).saturating_sub(now).max(0), next)
    }
}

/// Rate limits shared by every node (the database, or Redis when configured): the store is the
/// truth, so a client limited on one node is limited on all of them at once.
#[async_trait]
pub trait RateLimits: Send + Sync + std::fmt::Debug {
    /// Takes one unit of `key`'s allowance at `now` (unix ms) if it holds one: `0` when taken,
    /// else the milliseconds until one is free (and nothing is taken). Atomic: of concurrent
    /// takes of the last unit exactly one wins.
    async fn take(&self, key: &str, allowance: Allowance, now: i64) -> Result<i64, StoreError>;
    /// What `take` would answer, without taking.
    async fn peek(&self, key: &str, allowance: Allowance, now: i64) -> Result<i64, StoreError>;
    /// Deletes the keys whose allowance is whole again at `now`; how many went.
    async fn purge_limits(&self, now: i64) -> Result<u64, StoreError>;
}

/// Both shared stores of detection: counts over windows and rate limits (one backend provides
/// both: the database, or Redis).
pub trait SharedCounts: DetectionCounts + RateLimits {}

impl<T: DetectionCounts + RateLimits> SharedCounts for T {}
