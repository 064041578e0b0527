//! Storage of incidents and freezes: one active (open or contained) incident per merchant,
//! decided by the database; its timeline and affected subjects; a merchant's refund and
//! forwarding freezes.
//! Must never: decide "no incident is open" or "not already frozen" by a read followed by a
//! write, or split a change from its timeline entry and outbox messages.

use async_trait::async_trait;
use strongroom_types::Timestamp;

use crate::StoreError;
use crate::detection::incidents::Severity;
use crate::outbox::OutboxMessage;

/// A stored incident.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncidentRecord {
    /// `inc_…`
    pub id: String,
    /// The merchant; `None`: deployment-wide.
    pub merchant: Option<String>,
    /// For people: what it is about (never a secret or personal data).
    pub title: String,
    /// The highest severity of what joined it.
    pub severity: Severity,
    /// `open`, `contained` or `resolved`.
    pub state: String,
    /// The staff member working on it (`stf_…`).
    pub assignee: Option<String>,
    /// `detector`, a staff member, an API key or `operator`.
    pub opened_by: String,
    /// When it was opened.
    pub opened_at: Timestamp,
    /// Last change.
    pub updated_at: Timestamp,
    /// When it was resolved.
    pub resolved_at: Option<Timestamp>,
}

/// One line of an incident's timeline.
#[derive(Debug, Clone, PartialEq)]
pub struct TimelineEntry {
    /// When.
    pub at: Timestamp,
    /// Who: `detector`, `operator`, a staff member or an API key.
    pub actor: String,
    /// `opened`, `detection`, `state`, `assigned`, `note`, `playbook`.
    pub kind: String,
    /// For people: the detection's summary, the note.
    pub text: Option<String>,
    /// Ids and codes (the detection point and decision, the state, the step and its outcome).
    pub data: serde_json::Value,
}

/// Something an incident affected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubjectRecord {
    /// `account`, `token`, `api_key` or `client`.
    pub kind: String,
    /// `cus_…`/`stf_…`, `tok_…`, `key_…`, an address or prefix.
    pub value: String,
    /// When it was first recorded.
    pub added_at: Timestamp,
}

/// Where an open-or-join landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Landed {
    /// A new incident was opened.
    Opened,
    /// The active incident was joined and its severity raised.
    Raised,
    /// The active incident was joined.
    Joined,
}

/// Builds the outbox messages of an open-or-join once its outcome is known, inside its
/// transaction: the incident as it is after the change, and where the detection landed.
pub type IncidentEvents<'a> = &'a (dyn Fn(&IncidentRecord, Landed) -> Vec<OutboxMessage> + Send + Sync);

/// What a conditional change of an incident sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncidentChange<'a> {
    /// The incident.
    pub id: &'a str,
    /// It changes only from one of these states.
    pub from: &'a [&'a str],
    /// The new state, if it changes.
    pub state: Option<&'a str>,
    /// The new assignee, if it changes (`Some(None)`: nobody).
    pub assignee: Option<Option<&'a str>>,
    /// When.
    pub at: Timestamp,
}

/// What a freeze stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FreezeKind {
    /// Refund creation.
    Refunds,
    /// Forward-proxy calls.
    Forwarding,
}

impl FreezeKind {
    /// `refunds` or `forwarding`.
    pub const fn as_str(self) -> &'static str {
        match self {
            FreezeKind::Refunds => "refunds",
            FreezeKind::Forwarding => "forwarding",
        }
    }
}

/// Storage of incidents.
#[async_trait]
pub trait IncidentsRepository: Send + Sync + std::fmt::Debug {
    /// Opens `new` unless an incident of its merchant is active (one conditional insert against
    /// the one-active index); otherwise, with `join`, adds to the active one (its severity
    /// raised to `new.severity` if higher). Writes `entry` and `subjects` (once each) to the
    /// incident it lands on, and `events(incident, opened)`, in the same transaction.
    /// `None`: one was active and `join` was false (nothing written).
    async fn open_or_join(
        &self,
        new: &IncidentRecord,
        entry: &TimelineEntry,
        subjects: &[SubjectRecord],
        join: bool,
        events: IncidentEvents<'_>,
    ) -> Result<Option<(IncidentRecord, Landed)>, StoreError>;
    /// One incident.
    async fn incident(&self, id: &str) -> Result<Option<IncidentRecord>, StoreError>;
    /// Incidents of a merchant (`None`: of every merchant and the deployment-wide ones), newest
    /// first, optionally in one state.
    async fn list_incidents(
        &self,
        merchant: Option<&str>,
        state: Option<&str>,
        limit: u32,
    ) -> Result<Vec<IncidentRecord>, StoreError>;
    /// An incident's timeline, oldest first.
    async fn timeline(&self, id: &str) -> Result<Vec<TimelineEntry>, StoreError>;
    /// An incident's subjects, in the order they were recorded.
    async fn subjects(&self, id: &str) -> Result<Vec<SubjectRecord>, StoreError>;
    /// Changes an incident's state or assignee only while it is in one of `change.from` (one
    /// conditional update), with its timeline entry and events; false: it was not.
    async fn change_incident(
        &self,
        change: &IncidentChange<'_>,
        entry: &TimelineEntry,
        events: &[OutboxMessage],
    ) -> Result<bool, StoreError>;
    /// Adds a timeline entry (a note, a playbook step), subjects and events to an incident
    /// that is in one of `states`, in one transaction; false: it is not.
    async fn add_to_incident(
        &self,
        id: &str,
        states: &[&str],
        entry: &TimelineEntry,
        subjects: &[SubjectRecord],
        events: &[OutboxMessage],
    ) -> Result<bool, StoreError>;
    /// Whether `staff` is a staff member of `merchant`.
    async fn is_staff_of(&self, merchant: &str, staff: &str) -> Result<bool, StoreError>;
    /// Ends every live session of a merchant's customers (`None`: of every merchant's
    /// customers and staff); returns how many.
    async fn end_sessions_of(&self, merchant: Option<&str>, at: Timestamp) -> Result<u64, StoreError>;
    /// Freezes `kind` for `merchant` unless it is frozen (one conditional upsert); false: it was.
    async fn freeze(&self, merchant: &str, kind: FreezeKind, by: &str, at: Timestamp) -> Result<bool, StoreError>;
    /// Lifts a freeze; false: it was not frozen.
    async fn unfreeze(&self, merchant: &str, kind: FreezeKind) -> Result<bool, StoreError>;
    /// Whether `kind` is frozen for `merchant`: since when, and by whom.
    async fn frozen(&self, merchant: &str, kind: FreezeKind) -> Result<Option<(Timestamp, String)>, StoreError>;
}
