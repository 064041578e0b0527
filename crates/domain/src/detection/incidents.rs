//! Incidents: what detections at or above a severity (`[detection] incident_severity`) open for a
//! merchant, and what the shop's security staff work through: a title, the highest severity that
//! joined, a state (`open` → `contained` → `resolved`; `contained` may go back to `open`; a
//! resolved incident is final, and a later detection opens a new one), an assignee (a staff
//! member of the merchant), a timeline (detections, state changes, notes, playbook steps, each
//! with its time and actor) and the affected subjects (accounts, tokens, API keys, clients; once
//! each).
//!
//! A merchant has at most one active (open or contained) incident; every detection while one is
//! active joins it. The database decides which of concurrent detections opens it (a partial
//! unique index), so thirty detections at once open one incident.
//! Must never: decide "none is open" by a read and a write, put a secret or personal data into a
//! title, note, timeline or event (summaries and notes are checked for card numbers), show or
//! change another merchant's incident, or change an incident without its audit entry.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::json;
use strongroom_types::{Clock, Entropy, Timestamp, define_id};

use super::Decider;
use crate::audit::event::Outcome;
use crate::audit::log::AuditLog;
use crate::error::DomainError;
use crate::merchants::MerchantId;
use crate::modes::Mode;
use crate::outbox::{Outbox, OutboxMessage};
use crate::ports::incidents::{
    IncidentChange, IncidentRecord, IncidentsRepository, Landed, SubjectRecord, TimelineEntry,
};

define_id!(IncidentId, IncidentKind, "inc");

/// How serious a detection (and an incident: the highest that joined it) is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Worth a look.
    Low,
    /// Worth an incident (the default threshold).
    Medium,
    /// An attack in progress.
    High,
    /// Data or money at stake now.
    Critical,
}

impl Severity {
    /// The stable name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }

    /// Parses a stable name.
    pub fn parse(text: &str) -> Option<Self> {
        [Severity::Low, Severity::Medium, Severity::High, Severity::Critical].into_iter().find(|s| s.as_str() == text)
    }

    /// The stored rank, 1 (low) to 4 (critical).
    pub const fn rank(self) -> i32 {
        match self {
            Severity::Low => 1,
            Severity::Medium => 2,
            Severity::High => 3,
            Severity::Critical => 4,
        }
    }

    /// The severity of a stored rank (out of range: the nearest).
    pub const fn from_rank(rank: i32) -> Self {
        match rank {
            i32::MIN..=1 => Severity::Low,
            2 => Severity::Medium,
            3 => Severity::High,
            _ => Severity::Critical,
        }
    }
}

/// Something a detection or an incident is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Subject {
    /// A customer's or staff member's account (`cus_…`, `stf_…`).
    Account(String),
    /// A vault token (`tok_…`).
    Token(String),
    /// An API key (`key_…`).
    ApiKey(String),
    /// A client: an address or a prefix.
    Client(String),
}

impl Subject {
    /// `account`, `token`, `api_key` or `client`.
    pub fn kind(&self) -> &'static str {
        match self {
            Subject::Account(_) => "account",
            Subject::Token(_) => "token",
            Subject::ApiKey(_) => "api_key",
            Subject::Client(_) => "client",
        }
    }

    /// The id, address or prefix.
    pub fn value(&self) -> &str {
        match self {
            Subject::Account(v) | Subject::Token(v) | Subject::ApiKey(v) | Subject::Client(v) => v,
        }
    }

    /// Parses a subject as the API takes it; the value must look like an id of its kind or an
    /// address or prefix (so nothing personal is stored as a subject).
    pub fn parse(kind: &str, value: &str, pointer: &str) -> Result<Self, DomainError> {
        let id_like = |prefixes: &[&str]| {
            prefixes.iter().any(|p| {
                value.strip_prefix(p).is_some_and(|rest| {
                    (8..=40).contains(&rest.len()) && rest.bytes().all(|b| b.is_ascii_alphanumeric())
                })
            })
        };
        match kind {
            "account" if id_like(&["cus_", "stf_"]) => Ok(Subject::Account(value.to_owned())),
            "token" if id_like(&["tok_"]) => Ok(Subject::Token(value.to_owned())),
            "api_key" if id_like(&["key_"]) => Ok(Subject::ApiKey(value.to_owned())),
            "client" => {
                let (address, _) = value.split_once('/').unwrap_or((value, ""));
                let scope = if value.contains('/') { "prefix" } else { "ip" };
                if address.parse::<std::net::IpAddr>().is_err() {
                    return Err(DomainError::invalid(format!("{pointer}/id"), "must be an IP address or prefix"));
                }
                Ok(Subject::Client(super::DecisionScope::parse(scope, value)?.value()))
            }
            "account" | "token" | "api_key" => {
                Err(DomainError::invalid(format!("{pointer}/id"), "must be an id of the subject's kind"))
            }
            _ => Err(DomainError::invalid(format!("{pointer}/kind"), "must be account, token, api_key or client")),
        }
    }
}

/// A detection, as every detection point reports it.
#[derive(Debug, Clone)]
pub struct Detected {
    /// The merchant attacked (`None`: the deployment).
    pub merchant: Option<MerchantId>,
    /// The detection point, e.g. `credential_stuffing`.
    pub point: String,
    /// How serious.
    pub severity: Severity,
    /// For people: what was seen (never a secret or personal data).
    pub summary: String,
    /// The decision it led to (`dec_…`), if any.
    pub decision: Option<String>,
    /// What it is about.
    pub subjects: Vec<Subject>,
}

/// Settings of incidents (`[detection] incident_severity`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IncidentSettings {
    /// Detections at or above this open or join an incident.
    pub threshold: Severity,
}

impl Default for IncidentSettings {
    fn default() -> Self {
        Self { threshold: Severity::Medium }
    }
}

/// An incident's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IncidentState {
    /// Being looked at.
    Open,
    /// The attack is stopped; the clean-up goes on.
    Contained,
    /// Over (final).
    Resolved,
}

impl IncidentState {
    /// The stable name.
    pub const fn as_str(self) -> &'static str {
        match self {
            IncidentState::Open => "open",
            IncidentState::Contained => "contained",
            IncidentState::Resolved => "resolved",
        }
    }

    /// Parses a stable name (`pointer` names the field in the error).
    pub fn parse(text: &str, pointer: &str) -> Result<Self, DomainError> {
        match text {
            "open" => Ok(IncidentState::Open),
            "contained" => Ok(IncidentState::Contained),
            "resolved" => Ok(IncidentState::Resolved),
            _ => Err(DomainError::invalid(pointer, "must be open, contained or resolved")),
        }
    }

    /// The states it may be reached from: `open` from `contained` (containment failed),
    /// `contained` from `open`, `resolved` from either.
    pub const fn reached_from(self) -> &'static [&'static str] {
        match self {
            IncidentState::Open => &["contained"],
            IncidentState::Contained => &["open"],
            IncidentState::Resolved => &["open", "contained"],
        }
    }
}

/// States in which an incident takes changes, steps and assignees.
pub const ACTIVE: &[&str] = &["open", "contained"];
/// States in which an incident takes notes (a resolved one too: the review).
pub const ANY_STATE: &[&str] = &["open", "contained", "resolved"];

/// An incident with its timeline and subjects.
#[derive(Debug, Clone)]
pub struct IncidentView {
    /// The incident.
    pub incident: IncidentRecord,
    /// What happened, oldest first.
    pub timeline: Vec<TimelineEntry>,
    /// What it affected.
    pub subjects: Vec<SubjectRecord>,
}

/// An incident opened by hand.
#[derive(Debug, Clone)]
pub struct NewIncident {
    /// For people (checked for card numbers, at most 200 characters).
    pub title: String,
    /// How serious.
    pub severity: Severity,
    /// A first note.
    pub note: Option<String>,
    /// What it is about.
    pub subjects: Vec<Subject>,
}

/// A change of an incident's state or assignee.
#[derive(Debug, Clone, Default)]
pub struct ChangeIncident {
    /// The new state.
    pub state: Option<IncidentState>,
    /// The new assignee (`Some(None)`: nobody).
    pub assignee: Option<Option<String>>,
}

/// Incidents: opened or joined by detections, worked by staff.
#[derive(Debug, Clone)]
pub struct IncidentService {
    repo: Arc<dyn IncidentsRepository>,
    outbox: Outbox,
    audit: AuditLog,
    clock: Arc<dyn Clock>,
    entropy: Arc<dyn Entropy>,
    settings: IncidentSettings,
    /// Security alert mails (wired once at start; none without a mailer).
    alert_mail: Arc<std::sync::OnceLock<super::alert_mail::AlertMail>>,
}

/// Longest note or title.
const MAX_NOTE: usize = 2000;
const MAX_TITLE: usize = 200;

/// Text for people that goes into an incident: printable, bounded, no card number.
fn checked_text(pointer: &str, text: &str, max: usize) -> Result<String, DomainError> {
    let text = text.trim();
    if text.is_empty() || text.chars().count() > max || text.chars().any(|c| c.is_control() && c != '\n') {
        return Err(DomainError::invalid(pointer, format!("must be 1 to {max} printable characters")));
    }
    crate::free_text::check(pointer, text)?;
    Ok(text.to_owned())
}

impl IncidentService {
    /// The service.
    pub fn new(
        repo: Arc<dyn IncidentsRepository>,
        outbox: Outbox,
        audit: AuditLog,
        clock: Arc<dyn Clock>,
        entropy: Arc<dyn Entropy>,
        settings: IncidentSettings,
    ) -> Self {
        Self { repo, outbox, audit, clock, entropy, settings, alert_mail: Arc::default() }
    }

    /// Mails detections and incidents opened from now on.
    pub fn set_alert_mail(&self, alert_mail: super::alert_mail::AlertMail) {
        let _ = self.alert_mail.set(alert_mail);
    }

    /// Who gets the alert mail of a change of `merchant`'s incidents (none without a mailer).
    async fn alert_recipients(&self, merchant: Option<&MerchantId>) -> super::alert_mail::Recipients {
        let Some(alert_mail) = self.alert_mail.get() else { return super::alert_mail::Recipients::default() };
        match alert_mail.recipients(merchant).await {
            Ok(recipients) => recipients,
            Err(err) => {
                tracing::warn!(error = %err, "finding who gets a security alert mail failed");
                super::alert_mail::Recipients::default()
            }
        }
    }

    /// The settings.
    pub fn settings(&self) -> IncidentSettings {
        self.settings
    }

    /// The time by this service's clock.
    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    pub(crate) fn repo(&self) -> &Arc<dyn IncidentsRepository> {
        &self.repo
    }

    fn subject_records(&self, subjects: &[Subject], at: Timestamp) -> Vec<SubjectRecord> {
        let mut records: Vec<SubjectRecord> = Vec::with_capacity(subjects.len());
        for s in subjects {
            if !records.iter().any(|r| r.kind == s.kind() && r.value == s.value()) {
                records.push(SubjectRecord { kind: s.kind().to_owned(), value: s.value().to_owned(), added_at: at });
            }
        }
        records
    }

    /// The body of an incident's events: ids and codes only (no title: it is free text).
    fn event_data(incident: &IncidentRecord, change: &str) -> serde_json::Value {
        json!({
            "object": "security_incident",
            "id": incident.id,
            "severity": incident.severity.as_str(),
            "state": incident.state,
            "assignee": incident.assignee,
            "change": change,
        })
    }

    async fn subscribers(
        &self,
        merchant: Option<&MerchantId>,
        event_type: &str,
    ) -> Result<Vec<(String, MerchantId)>, DomainError> {
        match merchant {
            Some(m) => self.outbox.subscribers(m, Mode::Live, event_type).await,
            None => Ok(Vec::new()),
        }
    }

    /// Opens an incident for a detection at or above the threshold, or joins the merchant's
    /// active one (raising its severity if this one is higher): the incident as it is now.
    /// `Ok(None)` below the threshold. Audited; `security.incident_opened` (or
    /// `security.incident_updated` when a join raised the severity) goes to the shop's
    /// webhooks and the alert webhook in the same transaction.
    pub async fn detected(&self, d: Detected) -> Result<Option<IncidentRecord>, DomainError> {
        if d.severity < self.settings.threshold {
            return Ok(None);
        }
        let now = self.clock.now();
        let point = code_of(&d.point);
        let summary = String::from_utf8_lossy(&crate::free_text::mask_card_numbers(d.summary.as_bytes()))
            .chars()
            .take(MAX_NOTE)
            .collect::<String>();
        let new = IncidentRecord {
            id: IncidentId::generate_at(self.entropy.as_ref(), now.unix_millis()).to_string(),
            merchant: d.merchant.as_ref().map(|m| m.as_str().to_owned()),
            title: format!("Detected: {}", point.replace('_', " ")),
            severity: d.severity,
            state: IncidentState::Open.as_str().to_owned(),
            assignee: None,
            opened_by: Decider::Detector.name(),
            opened_at: now,
            updated_at: now,
            resolved_at: None,
        };
        let entry = TimelineEntry {
            at: now,
            actor: Decider::Detector.name(),
            kind: "detection".to_owned(),
            text: Some(summary),
            data: json!({"point": point, "severity": d.severity.as_str(), "decision": d.decision}),
        };
        let subjects = self.subject_records(&d.subjects, now);
        let merchant = d.merchant.as_ref();
        let opened_to = self.subscribers(merchant, "security.incident_opened").await?;
        let updated_to = self.subscribers(merchant, "security.incident_updated").await?;
        let severity = d.severity;
        let recipients = self.alert_recipients(merchant).await;
        let mail_summary = entry.text.clone().unwrap_or_default();
        let events = |incident: &IncidentRecord, landed: Landed| -> Vec<OutboxMessage> {
            let mut messages = self.alert_mails(merchant, &recipients, incident, landed, &point, &mail_summary);
            messages.extend(self.detection_events(incident, landed, merchant, &opened_to, &updated_to));
            messages
        };
        let Some((incident, landed)) = self.repo.open_or_join(&new, &entry, &subjects, true, &events).await? else {
            return Err(DomainError::Integrity);
        };
        self.finish_detected(incident, landed, merchant, &point, severity).await
    }

    fn detection_events(
        &self,
        incident: &IncidentRecord,
        landed: Landed,
        merchant: Option<&MerchantId>,
        opened_to: &[(String, MerchantId)],
        updated_to: &[(String, MerchantId)],
    ) -> Vec<OutboxMessage> {
        match landed {
            Landed::Opened => self.outbox.messages_to_with_alert(
                opened_to,
                merchant,
                Mode::Live,
                "security.incident_opened",
                Self::event_data(incident, "opened"),
            ),
            // This detection raised the severity: the people watching hear of it.
            Landed::Raised => self.outbox.messages_to_with_alert(
                updated_to,
                merchant,
                Mode::Live,
                "security.incident_updated",
                Self::event_data(incident, "severity"),
            ),
            // The timeline has it; the shop heard of the incident when it opened.
            Landed::Joined => Vec::new(),
        }
    }

    /// The alert mail of a detection (one per detection; the one that opened the incident says
    /// so), written with the incident's change.
    fn alert_mails(
        &self,
        merchant: Option<&MerchantId>,
        recipients: &super::alert_mail::Recipients,
        incident: &IncidentRecord,
        landed: Landed,
        point: &str,
        summary: &str,
    ) -> Vec<OutboxMessage> {
        let Some(alert_mail) = self.alert_mail.get() else { return Vec::new() };
        let shop = merchant.map_or_else(|| "the whole deployment".to_owned(), |m| format!("shop {}", m.as_str()));
        let mut lines = vec![format!(
            "strongroom's intrusion detection saw {} ({} severity) for {shop}.",
            point.replace('_', " "),
            incident.severity.as_str()
        )];
        lines.push(format!("What was seen: {summary}"));
        lines.push(match landed {
            Landed::Opened => format!("It opened incident {}.", incident.id),
            Landed::Raised | Landed::Joined => {
                format!("It joined incident {}, which is {}.", incident.id, incident.state)
            }
        });
        let subject = match landed {
            Landed::Opened => "security incident opened",
            Landed::Raised | Landed::Joined => "security alert",
        };
        alert_mail.messages(merchant, recipients, landed == Landed::Opened, subject, lines)
    }

    async fn finish_detected(
        &self,
        incident: IncidentRecord,
        landed: Landed,
        merchant: Option<&MerchantId>,
        point: &str,
        severity: Severity,
    ) -> Result<Option<IncidentRecord>, DomainError> {
        self.outbox.wake().notify_one();
        let action = if landed == Landed::Opened { "security.incident_opened" } else { "security.incident_joined" };
        tracing::warn!(target: "strongroom::security", incident = %incident.id, point = %point,
            severity = severity.as_str(), ?landed, "a detection reached an incident");
        let event = Decider::Detector
            .event(action, merchant, Outcome::SuccessBecause(point.to_owned()))
            .on("security_incident", &incident.id);
        self.audit.record(event).await?;
        Ok(Some(incident))
    }

    /// Opens an incident by hand for the caller's merchant: `409 incident_already_open` while
    /// one is active (add to that one instead).
    pub async fn open(
        &self,
        caller: Decider<'_>,
        merchant: &MerchantId,
        new: NewIncident,
    ) -> Result<IncidentRecord, DomainError> {
        let title = checked_text("/title", &new.title, MAX_TITLE)?;
        let note = new.note.as_deref().map(|n| checked_text("/note", n, MAX_NOTE)).transpose()?;
        let now = self.clock.now();
        let record = IncidentRecord {
            id: IncidentId::generate_at(self.entropy.as_ref(), now.unix_millis()).to_string(),
            merchant: Some(merchant.as_str().to_owned()),
            title,
            severity: new.severity,
            state: IncidentState::Open.as_str().to_owned(),
            assignee: None,
            opened_by: caller.name(),
            opened_at: now,
            updated_at: now,
            resolved_at: None,
        };
        let entry = TimelineEntry {
            at: now,
            actor: caller.name(),
            kind: "opened".to_owned(),
            text: note,
            data: json!({"severity": new.severity.as_str()}),
        };
        let subjects = self.subject_records(&new.subjects, now);
        let opened_to = self.subscribers(Some(merchant), "security.incident_opened").await?;
        let recipients = self.alert_recipients(Some(merchant)).await;
        let opener = caller.name();
        let events = |incident: &IncidentRecord, _: Landed| {
            let mut messages = self.outbox.messages_to_with_alert(
                &opened_to,
                Some(merchant),
                Mode::Live,
                "security.incident_opened",
                Self::event_data(incident, "opened"),
            );
            if let Some(alert_mail) = self.alert_mail.get() {
                let lines = vec![
                    format!("{opener} opened security incident {} for shop {}.", incident.id, merchant.as_str()),
                    format!("Title: {}", incident.title),
                    format!("Severity: {}", incident.severity.as_str()),
                ];
                messages.extend(alert_mail.messages(
                    Some(merchant),
                    &recipients,
                    true,
                    "security incident opened",
                    lines,
                ));
            }
            messages
        };
        let Some((incident, _)) = self.repo.open_or_join(&record, &entry, &subjects, false, &events).await? else {
            return Err(DomainError::Conflict(
                "incident_already_open",
                "an incident of this shop is open or contained; add to it instead",
            ));
        };
        self.outbox.wake().notify_one();
        let event = caller
            .event("security.incident_opened", Some(merchant), Outcome::SuccessBecause("manual".to_owned()))
            .on("security_incident", &incident.id);
        self.audit.record(event).await?;
        Ok(incident)
    }

    /// The incident `id` if `merchant` may see it (`None`: the operator, every incident).
    pub async fn incident(&self, merchant: Option<&MerchantId>, id: &str) -> Result<IncidentRecord, DomainError> {
        let found = self.repo.incident(id).await?.ok_or(DomainError::NotFound)?;
        match merchant {
            Some(m) if found.merchant.as_deref() != Some(m.as_str()) => Err(DomainError::NotFound),
            _ => Ok(found),
        }
    }

    /// An incident with its timeline and subjects.
    pub async fn view(&self, merchant: Option<&MerchantId>, id: &str) -> Result<IncidentView, DomainError> {
        let incident = self.incident(merchant, id).await?;
        let timeline = self.repo.timeline(id).await?;
        let subjects = self.repo.subjects(id).await?;
        Ok(IncidentView { incident, timeline, subjects })
    }

    /// Incidents of `merchant` (`None`: every incident, for the operator), newest first,
    /// optionally in one state.
    pub async fn list(
        &self,
        merchant: Option<&MerchantId>,
        state: Option<&str>,
        limit: Option<u32>,
    ) -> Result<Vec<IncidentRecord>, DomainError> {
        let state = state.map(|s| IncidentState::parse(s, "/state")).transpose()?;
        let limit = crate::payments::page_limit(limit)?;
        Ok(self.repo.list_incidents(merchant.map(MerchantId::as_str), state.map(IncidentState::as_str), limit).await?)
    }

    /// Why a conditional change found nothing to change.
    async fn refusal(&self, merchant: Option<&MerchantId>, id: &str) -> DomainError {
        match self.incident(merchant, id).await {
            Ok(found) if found.state == IncidentState::Resolved.as_str() => {
                DomainError::Conflict("incident_resolved", "the incident is resolved")
            }
            Ok(_) => DomainError::Conflict("incident_state_conflict", "the incident is in another state now"),
            Err(err) => err,
        }
    }

    /// Changes an incident's state or assignee (a staff member of its merchant): one
    /// conditional update on the state it comes from, so of concurrent changes one wins and a
    /// stale one answers `409 incident_state_conflict` (`incident_resolved` once resolved).
    pub async fn change(
        &self,
        caller: Decider<'_>,
        merchant: Option<&MerchantId>,
        id: &str,
        change: ChangeIncident,
    ) -> Result<IncidentRecord, DomainError> {
        let incident = self.incident(merchant, id).await?;
        if change.state.is_none() && change.assignee.is_none() {
            return Err(DomainError::invalid("/state", "give a state, an assignee or both"));
        }
        if let Some(Some(staff)) = &change.assignee {
            let owner = incident.merchant.as_deref().unwrap_or("");
            if !self.repo.is_staff_of(owner, staff).await? {
                return Err(DomainError::invalid("/assignee", "must be a staff member of this shop (stf_…)"));
            }
        }
        let now = self.clock.now();
        let from = change.state.map_or(ACTIVE, IncidentState::reached_from);
        let entry = TimelineEntry {
            at: now,
            actor: caller.name(),
            kind: if change.state.is_some() { "state" } else { "assigned" }.to_owned(),
            text: None,
            data: json!({
                "state": change.state.map(IncidentState::as_str),
                "assignee": change.assignee.clone().map(|a| a.unwrap_or_default()),
            }),
        };
        let mut after = incident.clone();
        if let Some(state) = change.state {
            after.state = state.as_str().to_owned();
            if state == IncidentState::Resolved {
                after.resolved_at = Some(now);
            }
        }
        if let Some(assignee) = &change.assignee {
            after.assignee = assignee.clone();
        }
        after.updated_at = now;
        let owner = owner_of(&incident)?;
        let change_code = change.state.map_or("assignee", IncidentState::as_str);
        let events = self
            .outbox
            .event_messages(
                owner.as_ref(),
                Mode::Live,
                "security.incident_updated",
                Self::event_data(&after, change_code),
                true,
            )
            .await?;
        let stored = IncidentChange {
            id,
            from,
            state: change.state.map(IncidentState::as_str),
            assignee: change.assignee.as_ref().map(Option::as_deref),
            at: now,
        };
        if !self.repo.change_incident(&stored, &entry, &events).await? {
            return Err(self.refusal(merchant, id).await);
        }
        self.outbox.wake().notify_one();
        let event = caller
            .event("security.incident_updated", owner.as_ref(), Outcome::SuccessBecause(change_code.to_owned()))
            .on("security_incident", id);
        self.audit.record(event).await?;
        Ok(after)
    }

    /// Adds a note to an incident (also a resolved one: the review). Audited.
    pub async fn note(
        &self,
        caller: Decider<'_>,
        merchant: Option<&MerchantId>,
        id: &str,
        text: &str,
    ) -> Result<TimelineEntry, DomainError> {
        let text = checked_text("/text", text, MAX_NOTE)?;
        let incident = self.incident(merchant, id).await?;
        let entry = TimelineEntry {
            at: self.clock.now(),
            actor: caller.name(),
            kind: "note".to_owned(),
            text: Some(text),
            data: json!({}),
        };
        if !self.repo.add_to_incident(id, ANY_STATE, &entry, &[], &[]).await? {
            return Err(DomainError::NotFound);
        }
        let owner = owner_of(&incident)?;
        let event =
            caller.event("security.incident_noted", owner.as_ref(), Outcome::Success).on("security_incident", id);
        self.audit.record(event).await?;
        Ok(entry)
    }

    /// Records a playbook step on an incident's timeline (with the subjects it touched), sends
    /// `security.incident_updated` in the same transaction, and audits it.
    pub(crate) async fn record_step(
        &self,
        caller: Decider<'_>,
        incident: &IncidentRecord,
        step: &'static str,
        data: serde_json::Value,
        subjects: &[Subject],
    ) -> Result<TimelineEntry, DomainError> {
        let now = self.clock.now();
        let entry = TimelineEntry { at: now, actor: caller.name(), kind: "playbook".to_owned(), text: None, data };
        let subjects = self.subject_records(subjects, now);
        let owner = owner_of(incident)?;
        let mut event_data = Self::event_data(incident, "playbook");
        event_data["step"] = json!(step);
        let events = self
            .outbox
            .event_messages(owner.as_ref(), Mode::Live, "security.incident_updated", event_data, true)
            .await?;
        if !self.repo.add_to_incident(&incident.id, ANY_STATE, &entry, &subjects, &events).await? {
            return Err(DomainError::NotFound);
        }
        self.outbox.wake().notify_one();
        let event = caller
            .event("security.playbook_step", owner.as_ref(), Outcome::SuccessBecause(step.to_owned()))
            .on("security_incident", &incident.id);
        self.audit.record(event).await?;
        Ok(entry)
    }
}

/// A detection point's name as a code: lowercase letters, digits and `_`, at most 64.
fn code_of(point: &str) -> String {
    let code: String = point
        .chars()
        .take(64)
        .map(|c| if c.is_ascii_alphanumeric() || c == '_' { c.to_ascii_lowercase() } else { '_' })
        .collect();
    if code.is_empty() { "unnamed".to_owned() } else { code }
}

/// The merchant of a stored incident (`None`: deployment-wide).
pub(crate) fn owner_of(incident: &IncidentRecord) -> Result<Option<MerchantId>, DomainError> {
    incident.merchant.as_deref().map(MerchantId::parse).transpose().map_err(|_| DomainError::Integrity)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn severities_order_and_round_trip() {
        assert!(Severity::Low < Severity::Medium && Severity::High < Severity::Critical);
        for s in [Severity::Low, Severity::Medium, Severity::High, Severity::Critical] {
            assert_eq!(Severity::from_rank(s.rank()), s);
            assert_eq!(Severity::parse(s.as_str()), Some(s));
        }
        assert_eq!(serde_json::to_value(Severity::Critical).ok(), Some(json!("critical")));
    }

    #[test]
    fn states_move_forward_and_resolved_is_final() {
        assert_eq!(IncidentState::Contained.reached_from(), &["open"]);
        assert_eq!(IncidentState::Resolved.reached_from(), &["open", "contained"]);
        assert!(!IncidentState::Open.reached_from().contains(&"resolved"));
        assert!(IncidentState::parse("closed", "/state").is_err());
    }

    #[test]
    fn subjects_are_ids_or_addresses() {
        assert_eq!(
            Subject::parse("client", "203.0.113.9/24", "/subjects/0").ok(),
            Some(Subject::Client("203.0.113.0/24".to_owned()))
        );
        assert!(Subject::parse("account", "someone@example.com", "/subjects/0").is_err());
        assert!(Subject::parse("token", "tok_abcdefghijklmnop", "/subjects/0").is_ok());
        assert!(Subject::parse("card", "4242", "/subjects/0").is_err());
    }
}
