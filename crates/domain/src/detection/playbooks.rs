//! Playbooks: the steps the shop's security staff (or the operator) take on an incident —
//! end sessions, suspend API keys, freeze refunds and forward-proxy calls (and lift the
//! freezes), force password resets, export the evidence, notify the affected customers. Each
//! step is audited (`security.playbook_step`), recorded on the incident's timeline with what it
//! did, and sent as `security.incident_updated`. Dangerous steps (ending every customer's
//! sessions, forcing resets, freezing) taken by a staff member need a second staff member's
//! approval (four-eyes, the staff approvals' `security.playbook_step` action bound to the
//! incident, the step and its scope).
//!
//! Also owns [`Freezes`], the check refunds and forwards make: a merchant's freeze is one row,
//! set and cleared by conditional statements.
//! Must never: act on another merchant's accounts, keys or sessions; let a merchant's caller end
//! the sessions of the whole deployment (the operator's alone); run a dangerous step for a staff
//! member without an approval of exactly that step; put a secret or personal value on the
//! timeline or into the evidence (entries carry ids and keyed hashes only).

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

use super::incidents::{ACTIVE, IncidentService, Subject, owner_of};
use super::{Decider, DecisionScope, DecisionService, MAX_BLOCK, NewDecision};
use crate::audit::log::AuditLog;
use crate::audit::merkle;
use crate::error::DomainError;
use crate::identity::{Client, IdentityService};
use crate::merchants::MerchantId;
use crate::ports::incidents::{FreezeKind, IncidentRecord, IncidentsRepository, TimelineEntry};
use crate::staff::StaffService;
use crate::staff::approvals::Action;

/// A playbook step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// End sessions: of the incident's accounts (`subjects`, the default), of one `account`, of
    /// every customer of the shop (`merchant`, four-eyes), or of everyone (`everyone`: the
    /// operator only).
    RevokeSessions,
    /// Suspend API keys (the incident's, or those named) for a day, through decisions.
    SuspendApiKeys,
    /// Refuse refund creation (four-eyes).
    FreezeRefunds,
    /// Refuse forward-proxy calls (four-eyes).
    FreezeForwarding,
    /// Allow refunds again.
    UnfreezeRefunds,
    /// Allow forward-proxy calls again.
    UnfreezeForwarding,
    /// Make the incident's customers' passwords stop working until reset (four-eyes).
    ForcePasswordReset,
    /// The audit entries about the incident and its subjects, with inclusion proofs and the
    /// signed checkpoint they prove against.
    ExportEvidence,
    /// Mail the incident's customers a security notice (with their anti-phishing phrase).
    NotifyCustomers,
    /// Rotate the vault's key-encryption key and rewrap every data key under it (the
    /// operator's command only: the keys are the deployment's).
    RotateKeys,
}

const STEPS: [Step; 10] = [
    Step::RevokeSessions,
    Step::SuspendApiKeys,
    Step::FreezeRefunds,
    Step::FreezeForwarding,
    Step::UnfreezeRefunds,
    Step::UnfreezeForwarding,
    Step::ForcePasswordReset,
    Step::ExportEvidence,
    Step::NotifyCustomers,
    Step::RotateKeys,
];

impl Step {
    /// The stable name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Step::RevokeSessions => "revoke_sessions",
            Step::SuspendApiKeys => "suspend_api_keys",
            Step::FreezeRefunds => "freeze_refunds",
            Step::FreezeForwarding => "freeze_forwarding",
            Step::UnfreezeRefunds => "unfreeze_refunds",
            Step::UnfreezeForwarding => "unfreeze_forwarding",
            Step::ForcePasswordReset => "force_password_reset",
            Step::ExportEvidence => "export_evidence",
            Step::NotifyCustomers => "notify_customers",
            Step::RotateKeys => "rotate_keys",
        }
    }

    /// Parses a stable name (an unknown step is not found).
    pub fn parse(text: &str) -> Result<Self, DomainError> {
        STEPS.into_iter().find(|s| s.as_str() == text).ok_or(DomainError::NotFound)
    }

    /// Whether the step may run on a resolved incident (lifting freezes, the evidence).
    const fn after_resolution(self) -> bool {
        matches!(self, Step::UnfreezeRefunds | Step::UnfreezeForwarding | Step::ExportEvidence)
    }
}

/// What a step is asked to do.
#[derive(Debug, Clone, Default)]
pub struct StepInput {
    /// For `revoke_sessions`: `subjects` (default), `account`, `merchant` or `everyone`.
    pub scope: Option<String>,
    /// For `revoke_sessions` with scope `account`: `cus_…` or `stf_…`.
    pub account: Option<String>,
    /// For `suspend_api_keys`: the keys (`key_…`); none: the incident's.
    pub api_keys: Vec<String>,
    /// The approval of a dangerous step by a staff member.
    pub approval_id: Option<String>,
}

/// What a step did.
#[derive(Debug, Clone)]
pub struct StepDone {
    /// Its timeline entry (the outcome in `data`).
    pub entry: TimelineEntry,
    /// For `export_evidence`: the evidence.
    pub evidence: Option<Value>,
}

/// A merchant's freezes, as refunds and forwards check them.
#[derive(Debug, Clone)]
pub struct Freezes {
    repo: Arc<dyn IncidentsRepository>,
}

impl Freezes {
    /// Over the incidents' storage.
    pub fn new(repo: Arc<dyn IncidentsRepository>) -> Self {
        Self { repo }
    }

    /// `409 refunds_frozen` / `forwarding_frozen` while `kind` is frozen for `merchant`.
    pub async fn check(&self, merchant: &MerchantId, kind: FreezeKind) -> Result<(), DomainError> {
        if self.repo.frozen(merchant.as_str(), kind).await?.is_none() {
            return Ok(());
        }
        Err(match kind {
            FreezeKind::Refunds => DomainError::Conflict(
                "refunds_frozen",
                "refunds are frozen for this shop during a security incident; the security staff can lift it",
            ),
            FreezeKind::Forwarding => DomainError::Conflict(
                "forwarding_frozen",
                "forward-proxy calls are frozen for this shop during a security incident; the security staff can \
                 lift it",
            ),
        })
    }
}

/// Most evidence entries in one export.
const MAX_EVIDENCE: usize = 2000;
/// Most audit entries an export reads through.
const MAX_SCANNED: u64 = 200_000;
/// How long before the incident opened the evidence reaches back.
const LEAD: std::time::Duration = std::time::Duration::from_secs(86_400);

/// The operator's key rotation, as the command line wires it: the vault's keys and the second
/// operator's approving key (under dual control).
#[derive(Debug, Clone)]
pub struct KeyRotation {
    /// The vault's key hierarchy.
    pub keys: Arc<crate::vault::keys::VaultKeys>,
    /// The approving key (`key_…`), when the deployment requires one.
    pub approver: Option<String>,
}

/// The playbook steps.
#[derive(Debug, Clone)]
pub struct Playbooks {
    incidents: IncidentService,
    decisions: DecisionService,
    identity: Arc<IdentityService>,
    staff: Arc<StaffService>,
    audit: AuditLog,
    rotation: Option<KeyRotation>,
}

impl Playbooks {
    /// The steps, over the services they use.
    pub fn new(
        incidents: IncidentService,
        decisions: DecisionService,
        identity: Arc<IdentityService>,
        staff: Arc<StaffService>,
        audit: AuditLog,
    ) -> Self {
        Self { incidents, decisions, identity, staff, audit, rotation: None }
    }

    /// Lets the operator's `rotate_keys` step rotate the vault's keys.
    pub fn with_key_rotation(mut self, rotation: KeyRotation) -> Self {
        self.rotation = Some(rotation);
        self
    }

    /// Runs `step` on incident `id` (`merchant`: the caller's; `None`: the operator, any
    /// incident). Recorded on the timeline, sent and audited.
    pub async fn run(
        &self,
        caller: Decider<'_>,
        merchant: Option<&MerchantId>,
        id: &str,
        step: Step,
        input: StepInput,
    ) -> Result<StepDone, DomainError> {
        let incident = self.incidents.incident(merchant, id).await?;
        if !step.after_resolution() && !ACTIVE.contains(&incident.state.as_str()) {
            return Err(DomainError::Conflict("incident_resolved", "the incident is resolved"));
        }
        let owner = owner_of(&incident)?;
        let subjects = self.incidents.repo().subjects(id).await?;
        let of_kind = |kind: &str| -> Vec<String> {
            subjects.iter().filter(|s| s.kind == kind).map(|s| s.value.clone()).collect()
        };
        let shop =
            || owner.clone().ok_or_else(|| DomainError::invalid("/step", "this step needs an incident of a shop"));
        let scope = input.scope.as_deref().unwrap_or("subjects");
        let dangerous = match step {
            Step::RevokeSessions => matches!(scope, "merchant" | "everyone"),
            Step::FreezeRefunds | Step::FreezeForwarding | Step::ForcePasswordReset => true,
            Step::SuspendApiKeys
            | Step::UnfreezeRefunds
            | Step::UnfreezeForwarding
            | Step::ExportEvidence
            | Step::NotifyCustomers
            | Step::RotateKeys => false,
        };
        if dangerous && let Decider::Caller(principal, ip, request_id) = caller {
            let client = Client {
                ip,
                user_agent: None,
                request_id: request_id.map(str::to_owned),
                ip_is_the_customers: false,
                device: None,
            };
            let target = format!("{id}:{}:{scope}", step.as_str());
            self.staff
                .require_approval(
                    principal,
                    Action::PlaybookStep,
                    &target,
                    step.as_str(),
                    input.approval_id.as_deref(),
                    &client,
                )
                .await?;
        }
        let mut touched: Vec<Subject> = Vec::new();
        let mut evidence = None;
        let outcome = match step {
            Step::RevokeSessions => {
                self.revoke_sessions(caller, &owner, scope, &input, &of_kind("account"), &mut touched).await?
            }
            Step::SuspendApiKeys => {
                let merchant = shop()?;
                let keys = if input.api_keys.is_empty() { of_kind("api_key") } else { input.api_keys.clone() };
                if keys.is_empty() || keys.len() > 100 {
                    return Err(DomainError::invalid("/api_keys", "name 1 to 100 keys (the incident has none)"));
                }
                let mut suspended = Vec::new();
                let mut already = Vec::new();
                for (n, key) in keys.iter().enumerate() {
                    let scope = DecisionScope::parse("api_key", key)
                        .map_err(|_| DomainError::invalid(format!("/api_keys/{n}"), "must be an API key id (key_…)"))?;
                    let new = NewDecision {
                        merchant: Some(merchant.clone()),
                        scope,
                        reason: "incident".to_owned(),
                        detail: Some(format!("playbook step of incident {id}")),
                        base: MAX_BLOCK,
                    };
                    match self.decisions.decide(caller, new).await? {
                        Some(decision) => suspended.push(decision.id),
                        None => already.push(key.clone()),
                    }
                    touched.push(Subject::ApiKey(key.clone()));
                }
                json!({"decisions": suspended, "already_suspended": already})
            }
            Step::FreezeRefunds | Step::FreezeForwarding => {
                let merchant = shop()?;
                let kind = if step == Step::FreezeRefunds { FreezeKind::Refunds } else { FreezeKind::Forwarding };
                let now = self.incidents.now();
                let frozen = self.incidents.repo().freeze(merchant.as_str(), kind, &caller.name(), now).await?;
                json!({"frozen": kind.as_str(), "already_frozen": !frozen})
            }
            Step::UnfreezeRefunds | Step::UnfreezeForwarding => {
                let merchant = shop()?;
                let kind = if step == Step::UnfreezeRefunds { FreezeKind::Refunds } else { FreezeKind::Forwarding };
                let lifted = self.incidents.repo().unfreeze(merchant.as_str(), kind).await?;
                json!({"unfrozen": kind.as_str(), "was_frozen": lifted})
            }
            Step::ForcePasswordReset => {
                let merchant = shop()?;
                let mut reset = 0u32;
                for customer in of_kind("account").iter().filter(|a| a.starts_with("cus_")) {
                    if self.identity.force_password_reset(&merchant, customer).await? {
                        reset += 1;
                        touched.push(Subject::Account(customer.clone()));
                    }
                }
                json!({"accounts_reset": reset})
            }
            Step::NotifyCustomers => {
                let merchant = shop()?;
                let mut mailed = 0u32;
                for customer in of_kind("account").iter().filter(|a| a.starts_with("cus_")) {
                    if self.identity.notify_incident(&merchant, customer).await? {
                        mailed += 1;
                    }
                }
                json!({"customers_notified": mailed})
            }
            Step::RotateKeys => {
                let (Decider::Operator, Some(rotation)) = (caller, &self.rotation) else {
                    return Err(DomainError::Forbidden(
                        "the deployment's keys are rotated by the operator (strongroom incidents playbook … rotate_keys)",
                    ));
                };
                let ceremonies =
                    crate::key_ceremonies::KeyCeremonies { audit: &self.audit, approver: rotation.approver.as_deref() };
                let version = ceremonies.rotate_kek(&rotation.keys).await?;
                let moved = ceremonies.rewrap(&rotation.keys, |_| {}).await?;
                json!({"kek_version": version, "data_keys_rewrapped": moved})
            }
            Step::ExportEvidence => {
                let exported = self.evidence(&incident, owner.as_ref(), &subjects).await?;
                let summary = json!({
                    "entries": exported["entries"].as_array().map_or(0, Vec::len),
                    "checkpoint_size": exported["checkpoint"]["size"],
                    "truncated": exported["truncated"],
                });
                evidence = Some(exported);
                summary
            }
        };
        let data = json!({"step": step.as_str(), "scope": scope_of(step, scope), "outcome": outcome});
        let entry = self.incidents.record_step(caller, &incident, step.as_str(), data, &touched).await?;
        Ok(StepDone { entry, evidence })
    }

    async fn revoke_sessions(
        &self,
        caller: Decider<'_>,
        owner: &Option<MerchantId>,
        scope: &str,
        input: &StepInput,
        accounts: &[String],
        touched: &mut Vec<Subject>,
    ) -> Result<Value, DomainError> {
        let now = self.incidents.now();
        let shop =
            || owner.clone().ok_or_else(|| DomainError::invalid("/scope", "this scope needs an incident of a shop"));
        match scope {
            "subjects" | "account" => {
                let merchant = shop()?;
                let accounts = if scope == "account" {
                    let account = input
                        .account
                        .as_deref()
                        .ok_or_else(|| DomainError::invalid("/account", "is required with scope account"))?;
                    match Subject::parse("account", account, "")? {
                        Subject::Account(a) => vec![a],
                        _ => Vec::new(),
                    }
                } else {
                    accounts.to_vec()
                };
                let mut ended = 0u64;
                for account in &accounts {
                    if account.starts_with("stf_") {
                        self.staff.end_sessions_of(&merchant, account, None).await?;
                    } else {
                        ended += self.identity.end_customer_sessions(&merchant, account).await?;
                    }
                    touched.push(Subject::Account(account.clone()));
                }
                Ok(json!({"accounts": accounts.len(), "customer_sessions_ended": ended}))
            }
            "merchant" => {
                let merchant = shop()?;
                let ended = self.incidents.repo().end_sessions_of(Some(merchant.as_str()), now).await?;
                self.identity.forget_all_sessions();
                Ok(json!({"sessions_ended": ended}))
            }
            "everyone" => {
                if !matches!(caller, Decider::Operator) {
                    return Err(DomainError::Forbidden("only the operator ends every session of the deployment"));
                }
                let ended = self.incidents.repo().end_sessions_of(None, now).await?;
                self.identity.forget_all_sessions();
                self.staff.forget_sessions();
                Ok(json!({"sessions_ended": ended}))
            }
            _ => Err(DomainError::invalid("/scope", "must be subjects, account, merchant or everyone")),
        }
    }

    /// The audit entries about the incident and its subjects (its accounts through the
    /// subject index; its own id, API keys, tokens and client addresses in the entries of its
    /// merchant from a day before it opened), each with its inclusion proof in a fresh signed
    /// checkpoint.
    async fn evidence(
        &self,
        incident: &IncidentRecord,
        owner: Option<&MerchantId>,
        subjects: &[crate::ports::incidents::SubjectRecord],
    ) -> Result<Value, DomainError> {
        let checkpoint = self.audit.checkpoint().await?;
        let size = checkpoint.size;
        let mut found: std::collections::BTreeMap<u64, Vec<u8>> = std::collections::BTreeMap::new();
        if let Some(merchant) = owner {
            for account in subjects.iter().filter(|s| s.kind == "account") {
                for record in self.audit.entries_about(merchant, &account.value, 1000).await? {
                    if record.seq < size {
                        found.insert(record.seq, record.leaf);
                    }
                }
            }
        }
        let mut needles: Vec<String> = vec![format!("\"{}\"", incident.id)];
        for s in subjects.iter().filter(|s| s.kind != "account") {
            match s.value.strip_suffix(".0/24") {
                Some(network) => needles.push(format!("\"ip\":\"{network}.")),
                None => needles.push(format!("\"{}\"", s.value)),
            }
        }
        let lead = i64::try_from(LEAD.as_millis()).unwrap_or(i64::MAX);
        let since =
            strongroom_types::Timestamp::from_unix_millis(incident.opened_at.unix_millis().saturating_sub(lead));
        let mut seq = self.first_since(since, size).await?;
        let end = size.min(seq.saturating_add(MAX_SCANNED));
        let mut truncated = end < size;
        while seq < end {
            let page = self.audit.entries(seq, 1000).await?;
            let Some(last) = page.last().map(|r| r.seq) else { break };
            for record in page.into_iter().filter(|r| r.seq < end && r.merchant.as_ref() == owner) {
                let text = String::from_utf8_lossy(&record.leaf);
                if needles.iter().any(|n| text.contains(n.as_str())) {
                    found.insert(record.seq, record.leaf);
                }
            }
            seq = last.saturating_add(1);
        }
        if found.len() > MAX_EVIDENCE {
            truncated = true;
        }
        let mut entries = Vec::new();
        for (seq, leaf) in found.into_iter().take(MAX_EVIDENCE) {
            let (leaf_hash, proof) = self.audit.inclusion_proof(seq, size).await?;
            if leaf_hash != merkle::leaf_hash(&leaf) {
                return Err(DomainError::Integrity);
            }
            entries.push(json!({
                "index": seq,
                "leaf": String::from_utf8_lossy(&leaf),
                "leaf_hash": STANDARD.encode(leaf_hash),
                "proof": proof.iter().map(|h| STANDARD.encode(h)).collect::<Vec<_>>(),
            }));
        }
        Ok(json!({
            "object": "incident_evidence",
            "incident": incident.id,
            "checkpoint": {
                "size": size,
                "root": STANDARD.encode(checkpoint.root),
                "note": checkpoint.note,
                "verifier_key": self.audit.signer().verifier_key(),
            },
            "entries": entries,
            "truncated": truncated,
        }))
    }

    /// The first entry index at or after `since` (a binary search over the log's times).
    async fn first_since(&self, since: strongroom_types::Timestamp, size: u64) -> Result<u64, DomainError> {
        let (mut low, mut high) = (0u64, size);
        while low < high {
            let middle = low + (high - low) / 2;
            let at = self.audit.entries(middle, 1).await?.first().map(|r| r.time);
            match at {
                Some(time) if time.millis_since(since) < 0 => low = middle + 1,
                _ => high = middle,
            }
        }
        Ok(low)
    }
}

/// The scope a step ran with, for the timeline (only `revoke_sessions` has one).
fn scope_of(step: Step, scope: &str) -> Option<&str> {
    (step == Step::RevokeSessions).then_some(scope)
}
