//! Four-eyes approval: a dangerous action by a staff member happens only after a second staff
//! member approved that exact action on that exact target.
//!
//! The dangerous call itself opens the request: without an approval it answers
//! `approval_required` with a fresh request id; another staff member holding the same
//! permissions approves it (`POST /v1/approvals/{id}/approve`); the requester repeats the call
//! with the id, which is then used up. Both steps are audited.
//! Owns: which actions need approval ([`Action`]), who may ask and decide, and single use.
//! Must never: let the requester approve their own request, let an approval serve another
//! action, target or requester, or be used twice or after it expired.

use std::time::Duration;

use strongroom_types::define_id;

use super::{StaffService, roles};
use crate::DomainError;
use crate::api_keys::{Principal, Scope};
use crate::audit::event::Outcome;
use crate::identity::Client;
use crate::ports::{ApprovalRecord, StaffGuard};

define_id!(ApprovalId, ApprovalKind, "apr");

/// How long a request waits for a decision.
pub const PENDING_FOR: Duration = Duration::from_secs(24 * 3600);
/// How long an approval may be used after it was given.
pub const USABLE_FOR: Duration = Duration::from_secs(15 * 60);

/// Permissions whose use by staff needs a second person: staff cannot put them into API keys.
pub const FOUR_EYES_PERMISSIONS: &[Scope] = &[Scope::VaultRevealCard, Scope::AdminStaff];

/// An action that needs a second person.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Reveal a full card number or bank account (target: the token id).
    RevealCard,
    /// Grant a role (target: `stf_…:role`).
    GrantRole,
    /// Reset a staff member's second factors, for one who lost them (target: `stf_…`).
    ResetFactors,
    /// Refund more than `payments.refund_approval_above` (target: `pi_…:<amount>:<currency>`).
    Refund,
    /// A dangerous incident playbook step: end every customer's sessions, force password
    /// resets, freeze refunds or forwarding (target: `inc_…:<step>[:<scope>]`).
    PlaybookStep,
}

impl Action {
    /// The stable name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Action::RevealCard => "vault.reveal_card",
            Action::GrantRole => "staff.grant_role",
            Action::ResetFactors => "staff.reset_factors",
            Action::Refund => "payments.refund",
            Action::PlaybookStep => "security.playbook_step",
        }
    }

    /// Parses a stable name.
    pub fn parse(text: &str) -> Option<Self> {
        [Action::RevealCard, Action::GrantRole, Action::ResetFactors, Action::Refund, Action::PlaybookStep]
            .into_iter()
            .find(|a| a.as_str() == text)
    }
}

/// An approval request as the API shows it.
pub type Approval = ApprovalRecord;

impl StaffService {
    /// The permissions both people must hold for an action on a target.
    async fn needed_for(&self, by: &Principal, action: Action, target: &str) -> Result<Vec<Scope>, DomainError> {
        Ok(match action {
            Action::RevealCard => vec![Scope::VaultRevealCard],
            Action::Refund => vec![Scope::PaymentsRefund],
            Action::PlaybookStep => vec![Scope::SecurityManage],
            Action::GrantRole => {
                let role = target.split_once(':').map(|(_, role)| role).unwrap_or_default();
                let mut needed = self.role_permissions(by.merchant_id(), role).await?;
                needed.push(Scope::AdminStaff);
                needed
            }
            Action::ResetFactors => {
                let target = self.staff_of(by.merchant_id(), target).await?;
                let custom = self.custom_roles(by.merchant_id()).await?;
                let mut needed = roles::permissions_of(&target.roles, &custom);
                needed.push(Scope::AdminStaff);
                needed
            }
        })
    }

    /// Lets a staff member do `action` on `target` only with a second person's approval: with
    /// `approval`, uses it up (it must be theirs, approved, for exactly this); without, opens a
    /// request and answers `ApprovalRequired`. Callers that are not staff (API keys) pass.
    pub async fn require_approval(
        &self,
        by: &Principal,
        action: Action,
        target: &str,
        reason: &str,
        approval: Option<&str>,
        client: &Client,
    ) -> Result<(), DomainError> {
        let Some(staff) = by.as_staff() else { return Ok(()) };
        let now = self.now();
        if let Some(id) = approval {
            let used =
                self.repo.use_approval(by.merchant_id(), id, &staff.staff_id, action.as_str(), target, now).await?;
            if !used {
                self.record(
                    by.event("approval.used", Outcome::Denied("not_usable"))
                        .on("approval", id)
                        .on("action", action.as_str()),
                    client,
                )
                .await?;
                return Err(DomainError::Rejected {
                    code: "approval_not_usable",
                    errors: vec![crate::error::FieldError::new(
                        "/approval_id",
                        "is not an approved, unused request of yours for this action and target",
                    )],
                });
            }
            self.record(
                by.event("approval.used", Outcome::Success).on("approval", id).on("action", action.as_str()),
                client,
            )
            .await?;
            return Ok(());
        }
        for scope in self.needed_for(by, action, target).await? {
            if !by.has(scope) {
                return Err(DomainError::MissingScope(scope));
            }
        }
        let id = ApprovalId::generate(self.entropy.as_ref()).as_str().to_owned();
        let record = ApprovalRecord {
            id: id.clone(),
            merchant_id: by.merchant_id().clone(),
            action: action.as_str().to_owned(),
            target: target.to_owned(),
            reason: reason.to_owned(),
            requested_by: staff.staff_id.clone(),
            requested_at: now,
            status: "pending".to_owned(),
            decided_by: None,
            decided_at: None,
            expires_at: now.saturating_add(PENDING_FOR),
            used_at: None,
        };
        // A request to grant a custom role locks the role's row as it is written, so the role
        // cannot be deleted meanwhile (a later role of that name must be approved anew).
        let guard = match action {
            Action::GrantRole => match target.split_once(':') {
                Some((_, role)) if roles::builtin(role).is_none() => StaffGuard::RoleExists(role),
                _ => StaffGuard::None,
            },
            Action::RevealCard | Action::ResetFactors | Action::Refund | Action::PlaybookStep => StaffGuard::None,
        };
        if !self.repo.insert_approval(&record, guard).await? {
            return Err(DomainError::invalid("/role", "is not a role of this shop"));
        }
        self.record(
            by.event("approval.requested", Outcome::SuccessBecause(action.as_str().to_owned()))
                .on("approval", &id)
                .on("target", target),
            client,
        )
        .await?;
        Err(DomainError::ApprovalRequired { approval_id: id })
    }

    /// The merchant's approval requests, newest first.
    pub async fn approvals(&self, by: &Principal, status: Option<&str>) -> Result<Vec<Approval>, DomainError> {
        if let Some(s) = status
            && !["pending", "approved", "denied", "used"].contains(&s)
        {
            return Err(DomainError::invalid("/status", "must be pending, approved, denied or used"));
        }
        let now = self.now();
        let mut list = self.repo.list_approvals(by.merchant_id(), status, 200).await?;
        for a in &mut list {
            if (a.status == "pending" || a.status == "approved") && a.expires_at <= now {
                a.status = "expired".to_owned();
            }
        }
        Ok(list)
    }

    /// One approval request.
    pub async fn approval(&self, by: &Principal, id: &str) -> Result<Approval, DomainError> {
        let mut a = self.repo.approval(by.merchant_id(), id).await?.ok_or(DomainError::NotFound)?;
        if (a.status == "pending" || a.status == "approved") && a.expires_at <= self.now() {
            a.status = "expired".to_owned();
        }
        Ok(a)
    }

    /// Approves or denies a pending request of someone else. The decider must be staff, signed in
    /// recently, and hold what the action needs.
    pub async fn decide(
        &self,
        by: &Principal,
        id: &str,
        approve: bool,
        client: &Client,
    ) -> Result<Approval, DomainError> {
        let Some(staff) = by.as_staff() else {
            return Err(DomainError::Forbidden("only a staff member can approve or deny"));
        };
        let request = self.approval(by, id).await?;
        if request.requested_by == staff.staff_id {
            self.record(by.event("approval.decided", Outcome::Denied("own_request")).on("approval", id), client)
                .await?;
            return Err(DomainError::Forbidden("a request cannot be decided by the person who made it"));
        }
        let recent = i64::try_from(self.settings.recent_sign_in.as_millis()).unwrap_or(i64::MAX);
        let now = self.now();
        if now.millis_since(staff.authenticated_at) > recent {
            return Err(DomainError::Forbidden("sign in again first: approvals need a sign-in within 15 minutes"));
        }
        let action = Action::parse(&request.action).ok_or(DomainError::NotFound)?;
        for scope in self.needed_for(by, action, &request.target).await? {
            if !by.has(scope) {
                return Err(DomainError::MissingScope(scope));
            }
        }
        let status = if approve { "approved" } else { "denied" };
        let decided = self
            .repo
            .decide_approval(by.merchant_id(), id, &staff.staff_id, status, now, now.saturating_add(USABLE_FOR))
            .await?;
        if !decided {
            return Err(DomainError::Conflict("approval_not_pending", "the request is no longer pending"));
        }
        self.record(
            by.event("approval.decided", Outcome::SuccessBecause(status.to_owned()))
                .on("approval", id)
                .on("action", action.as_str()),
            client,
        )
        .await?;
        self.approval(by, id).await
    }

    /// Grants a role: a four-eyes action. The requester and the approver must each hold every
    /// permission the role gives.
    pub async fn grant_role(
        &self,
        by: &Principal,
        id: &str,
        role: &str,
        approval: Option<&str>,
        client: &Client,
    ) -> Result<super::StaffView, DomainError> {
        if by.as_staff().is_none() {
            return Err(DomainError::Forbidden("roles are granted by staff, with a second person's approval"));
        }
        let record = self.staff_of(by.merchant_id(), id).await?;
        if roles::builtin(role).is_none() && !self.custom_roles(by.merchant_id()).await?.iter().any(|r| r.name == role)
        {
            return Err(DomainError::invalid("/role", "is not a role of this shop"));
        }
        if record.roles.iter().any(|r| r == role) {
            return Err(DomainError::Conflict("role_held", "the staff member holds this role already"));
        }
        let target = format!("{id}:{role}");
        self.require_approval(by, Action::GrantRole, &target, "role_grant", approval, client).await?;
        let mut roles = record.roles.clone();
        roles.push(role.to_owned());
        let events =
            self.events(by.merchant_id(), "staff.role_granted", serde_json::json!({"staff": id, "role": role})).await?;
        // A custom role's row is locked with the grant, so it cannot be deleted meanwhile.
        let guard = if roles::builtin(role).is_none() { StaffGuard::RoleExists(role) } else { StaffGuard::None };
        if !self.repo.set_staff_roles(by.merchant_id(), id, &record.roles, &roles, guard, &events).await? {
            if guard != StaffGuard::None && !self.custom_roles(by.merchant_id()).await?.iter().any(|r| r.name == role) {
                return Err(DomainError::invalid("/role", "is not a role of this shop"));
            }
            return Err(DomainError::Conflict("roles_changed", "the roles changed meanwhile; read them again"));
        }
        self.forget_sessions_of(id);
        self.record(by.event("staff.role_granted", Outcome::SuccessBecause(role.to_owned())).on("staff", id), client)
            .await?;
        self.get(by, id).await
    }

    /// Resets the second factors of a staff member who lost them: four eyes. TOTP and passkeys
    /// are removed and every session ends; the next sign-in (with the password) must enrol a
    /// factor again. Nobody resets their own.
    pub async fn reset_factors(
        &self,
        by: &Principal,
        id: &str,
        approval: Option<&str>,
        client: &Client,
    ) -> Result<super::StaffView, DomainError> {
        let Some(staff) = by.as_staff() else {
            return Err(DomainError::Forbidden("factors are reset by staff, with a second person's approval"));
        };
        if staff.staff_id == id {
            return Err(DomainError::Forbidden("staff cannot reset their own factors"));
        }
        let record = self.staff_of(by.merchant_id(), id).await?;
        self.require_approval(by, Action::ResetFactors, id, "factor_reset", approval, client).await?;
        self.repo.reset_staff_totp(id).await?;
        if let Some(passkeys) = self.passkeys.as_deref() {
            for p in passkeys.list(crate::passkeys::Owner { kind: "staff", id, merchant: by.merchant_id() }).await? {
                passkeys
                    .remove(crate::passkeys::Owner { kind: "staff", id, merchant: by.merchant_id() }, &p.id)
                    .await?;
            }
        }
        self.end_sessions_of(by.merchant_id(), id, None).await?;
        self.record(by.event("staff.factors_reset", Outcome::Success).on("staff", id), client).await?;
        if let Ok(email) = self.email_of(&record).await {
            self.post(email, "your second factors were reset", "staff_factors_reset", &[
                "Your authenticator app and passkeys were removed from your staff account, at your team's request, \
                 and your sessions were ended. At your next sign-in you will set up a new second factor."
                    .to_owned(),
                "If you did not ask for this, tell your security team at once.".to_owned(),
            ]).await?;
        }
        self.get(by, id).await
    }
}
