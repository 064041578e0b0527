//! Staff's storage port: accounts, sessions, sign-in challenges, roles and approvals.
//! Must never: read a staff member across merchants without naming the merchant.

use async_trait::async_trait;
use strongroom_types::Timestamp;

use crate::StoreError;
use crate::merchants::MerchantId;
use crate::outbox::OutboxMessage;

/// A staff member's account state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StaffStatus {
    /// Invited: no password yet; the invitation link sets one.
    Invited,
    /// May sign in.
    Active,
    /// Disabled: every session is dead and sign-in is refused.
    Disabled,
}

impl StaffStatus {
    /// The stable name.
    pub const fn as_str(self) -> &'static str {
        match self {
            StaffStatus::Invited => "invited",
            StaffStatus::Active => "active",
            StaffStatus::Disabled => "disabled",
        }
    }

    /// Parses a stable name.
    pub fn parse(text: &str) -> Option<Self> {
        [StaffStatus::Invited, StaffStatus::Active, StaffStatus::Disabled].into_iter().find(|s| s.as_str() == text)
    }
}

/// A staff account as stored. The email is sealed under the merchant's vault data key; a keyed
/// hash of it (unique across the deployment, so sign-in needs only the email) serves look-ups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaffRecord {
    /// `stf_…`
    pub id: String,
    /// Its merchant.
    pub merchant_id: MerchantId,
    /// Keyed hash of the normalized email.
    pub email_lookup: Vec<u8>,
    /// The email, sealed under `data_key_id`.
    pub email_sealed: Vec<u8>,
    /// The merchant's data key.
    pub data_key_id: String,
    /// Argon2id PHC string (`None` until the invitation is accepted).
    pub password_hash: Option<String>,
    /// The previous passwords' PHC strings, newest first (at most 4).
    pub password_history: Vec<String>,
    /// When the password was last set.
    pub password_changed_at: Option<Timestamp>,
    /// Invited, active or disabled.
    pub status: StaffStatus,
    /// Consecutive failed sign-ins.
    pub failures: u32,
    /// Sign-in is refused until then.
    pub locked_until: Option<Timestamp>,
    /// The TOTP seed sealed under `data_key_id` (pending until `totp_confirmed_at`).
    pub totp_sealed: Option<Vec<u8>>,
    /// When TOTP enrolment was confirmed.
    pub totp_confirmed_at: Option<Timestamp>,
    /// The last accepted TOTP step.
    pub totp_last_step: Option<u64>,
    /// Role names held.
    pub roles: Vec<String>,
    /// Keyed hash of the invitation token, while one is open.
    pub invite_digest: Option<Vec<u8>>,
    /// When the invitation stops working.
    pub invite_expires_at: Option<Timestamp>,
    /// Who made the account (`stf_…`, or `cli`).
    pub created_by: String,
    /// When it was made.
    pub created_at: Timestamp,
}

/// A staff sign-in waiting for its second factor (`login`) or for a first factor to be enrolled
/// (`enrol`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaffChallengeRecord {
    /// `chl_…`
    pub id: String,
    /// Its staff member.
    pub staff_id: String,
    /// `login` or `enrol`.
    pub purpose: String,
    /// The client's address and user agent, carried to the session.
    pub client: Option<String>,
    /// When it was made.
    pub created_at: Timestamp,
    /// When it stops.
    pub expires_at: Timestamp,
    /// Wrong answers so far.
    pub failures: u32,
    /// When it was completed.
    pub completed_at: Option<Timestamp>,
}

/// A merchant's custom role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleRecord {
    /// Its merchant.
    pub merchant_id: MerchantId,
    /// Its name (`a-z0-9_-`, not a built-in role's).
    pub name: String,
    /// What it is for.
    pub description: String,
    /// Permission names.
    pub permissions: Vec<String>,
    /// When it was made.
    pub created_at: Timestamp,
}

/// A four-eyes approval request: one staff member asks to do a dangerous action on a target,
/// another approves (or denies) it, and the requester then uses it once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalRecord {
    /// `apr_…`
    pub id: String,
    /// Its merchant.
    pub merchant_id: MerchantId,
    /// The action, e.g. `vault.reveal_card`.
    pub action: String,
    /// What it acts on, e.g. a token id, or `stf_…:role`.
    pub target: String,
    /// The requester's reason code.
    pub reason: String,
    /// `stf_…`
    pub requested_by: String,
    /// When it was asked.
    pub requested_at: Timestamp,
    /// `pending`, `approved`, `denied`, `used`.
    pub status: String,
    /// The approver or denier.
    pub decided_by: Option<String>,
    /// When.
    pub decided_at: Option<Timestamp>,
    /// A pending request expires then; an approved one must be used by then.
    pub expires_at: Timestamp,
    /// When it was used.
    pub used_at: Option<Timestamp>,
}

/// A rule a staff change must still meet when it is written: checked by the store under a row
/// lock, in the same transaction as the change, so two parallel requests cannot both pass it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StaffGuard<'a> {
    /// No rule.
    None,
    /// The merchant's custom role of this name still exists (its row is locked, so it cannot be
    /// deleted until the change commits).
    RoleExists(&'a str),
    /// Another active staff member of the merchant (not the one changed) holds this role (the
    /// merchant's row is locked, so parallel demotions and disables run one after the other).
    AnotherHolder(&'a str),
}

/// Staff accounts, their sessions and sign-in challenges, custom roles and approvals.
#[async_trait]
pub trait StaffRepository: crate::sessions::SessionRepository {
    /// Stores a new staff member; false (nothing written) when the email is taken.
    async fn insert_staff(&self, staff: &StaffRecord, events: &[OutboxMessage]) -> Result<bool, StoreError>;

    /// A staff member by id, within a merchant (`None` for any merchant).
    async fn staff(&self, merchant: Option<&MerchantId>, id: &str) -> Result<Option<StaffRecord>, StoreError>;

    /// A staff member by the keyed hash of their email.
    async fn staff_by_email(&self, lookup: &[u8]) -> Result<Option<StaffRecord>, StoreError>;

    /// The merchant of the staff member whose accepted invitation had this keyed hash, if any:
    /// the link presented again (intrusion detection).
    async fn spent_invite_merchant(&self, digest: &[u8]) -> Result<Option<MerchantId>, StoreError>;

    /// The staff member an open invitation with this keyed hash belongs to.
    async fn staff_by_invite(&self, digest: &[u8], now: Timestamp) -> Result<Option<StaffRecord>, StoreError>;

    /// A merchant's staff, oldest first.
    async fn list_staff(&self, merchant: &MerchantId) -> Result<Vec<StaffRecord>, StoreError>;

    /// Sets a new invitation (and puts the account back to invited, without a password).
    async fn set_invite(&self, id: &str, digest: &[u8], expires_at: Timestamp) -> Result<(), StoreError>;

    /// Accepts an invitation: sets the first password and makes the account active, if it is
    /// still invited with this unexpired invitation digest and no password. One statement: of
    /// parallel acceptances of one invitation exactly one wins; false for the others.
    async fn accept_staff_invite(&self, id: &str, digest: &[u8], hash: &str, at: Timestamp)
    -> Result<bool, StoreError>;

    /// Sets the password and history; closes any invitation and makes an invited account active.
    async fn set_staff_password(
        &self,
        id: &str,
        hash: &str,
        history: &[String],
        at: Timestamp,
    ) -> Result<(), StoreError>;

    /// Counts a failed sign-in; at `lock_after` failures the account locks until `lock_until`.
    /// Returns the failures now counted. Atomic.
    async fn staff_login_failed(&self, id: &str, lock_after: u32, lock_until: Timestamp) -> Result<u32, StoreError>;

    /// Clears failures and any lock.
    async fn clear_staff_failures(&self, id: &str) -> Result<(), StoreError>;

    /// Changes the status if `guard` holds; false when the staff member is not the merchant's,
    /// has that status already, or the guard failed.
    async fn set_staff_status(
        &self,
        merchant: &MerchantId,
        id: &str,
        status: StaffStatus,
        guard: StaffGuard<'_>,
        events: &[OutboxMessage],
    ) -> Result<bool, StoreError>;

    /// Stores a pending TOTP seed (replacing a pending one); false when TOTP is confirmed.
    async fn begin_staff_totp(&self, id: &str, sealed: &[u8]) -> Result<bool, StoreError>;

    /// Confirms the pending TOTP seed with its first accepted step; false when already confirmed.
    async fn confirm_staff_totp(&self, id: &str, step: u64, at: Timestamp) -> Result<bool, StoreError>;

    /// Records a TOTP step as used if it is later than the last one; false on replay.
    async fn use_staff_totp_step(&self, id: &str, step: u64) -> Result<bool, StoreError>;

    /// Removes TOTP (seed, confirmation, last step) and clears failures and any lock.
    async fn reset_staff_totp(&self, id: &str) -> Result<(), StoreError>;

    /// Replaces the roles if they are still `expected` and `guard` holds; false when they changed
    /// meanwhile or the guard failed.
    async fn set_staff_roles(
        &self,
        merchant: &MerchantId,
        id: &str,
        expected: &[String],
        roles: &[String],
        guard: StaffGuard<'_>,
        events: &[OutboxMessage],
    ) -> Result<bool, StoreError>;

    /// Deletes one of a staff member's passkeys unless it is their last second factor (no
    /// confirmed TOTP and no other passkey), decided under a lock on the staff member's row so
    /// parallel removals cannot leave them without one. False when nothing was deleted.
    async fn remove_staff_passkey(&self, staff: &str, id: &str) -> Result<bool, StoreError>;

    /// Stores a sign-in challenge.
    async fn insert_staff_challenge(&self, challenge: &StaffChallengeRecord) -> Result<(), StoreError>;

    /// A challenge by id.
    async fn staff_challenge(&self, id: &str) -> Result<Option<StaffChallengeRecord>, StoreError>;

    /// Reserves one answer of an open challenge with fewer than `max` answers; false otherwise.
    async fn reserve_staff_challenge_try(&self, id: &str, max: u32, now: Timestamp) -> Result<bool, StoreError>;

    /// Completes an open challenge; false when it was completed meanwhile.
    async fn complete_staff_challenge(&self, id: &str, at: Timestamp) -> Result<bool, StoreError>;

    /// Stores a custom role; false when the merchant has one by that name.
    async fn insert_role(&self, role: &RoleRecord, events: &[OutboxMessage]) -> Result<bool, StoreError>;

    /// A merchant's custom roles, by name.
    async fn roles(&self, merchant: &MerchantId) -> Result<Vec<RoleRecord>, StoreError>;

    /// Deletes a custom role unless a staff member holds it or an open (pending or approved,
    /// unexpired at `at`) request targets it; its row is locked first, so a parallel grant or
    /// request naming it (which lock the same row) cannot slip in. False when nothing was deleted.
    async fn delete_role(
        &self,
        merchant: &MerchantId,
        name: &str,
        at: Timestamp,
        events: &[OutboxMessage],
    ) -> Result<bool, StoreError>;

    /// Stores an approval request if `guard` holds; false when it failed.
    async fn insert_approval(&self, approval: &ApprovalRecord, guard: StaffGuard<'_>) -> Result<bool, StoreError>;

    /// An approval by id.
    async fn approval(&self, merchant: &MerchantId, id: &str) -> Result<Option<ApprovalRecord>, StoreError>;

    /// A merchant's approvals, newest first, optionally only those with a status.
    async fn list_approvals(
        &self,
        merchant: &MerchantId,
        status: Option<&str>,
        limit: u32,
    ) -> Result<Vec<ApprovalRecord>, StoreError>;

    /// Decides a pending, unexpired request of someone other than `decider`: `approved` (usable
    /// until `use_by`) or `denied`. False when it was not open to this decider.
    async fn decide_approval(
        &self,
        merchant: &MerchantId,
        id: &str,
        decider: &str,
        status: &str,
        at: Timestamp,
        use_by: Timestamp,
    ) -> Result<bool, StoreError>;

    /// Uses an approved, unexpired, unused approval of `requester` for exactly this action and
    /// target, once. False otherwise.
    async fn use_approval(
        &self,
        merchant: &MerchantId,
        id: &str,
        requester: &str,
        action: &str,
        target: &str,
        at: Timestamp,
    ) -> Result<bool, StoreError>;

    /// Deletes staff sign-in challenges that expired before `before`.
    async fn purge_staff(&self, before: Timestamp, limit: u32) -> Result<u64, StoreError>;
}
