//! Customer identity's storage port: accounts, factors, sessions and challenges.
//! Must never: read a customer without naming the merchant, except by a secret's keyed hash.

use async_trait::async_trait;
use strongroom_types::Timestamp;

use crate::StoreError;
use crate::merchants::MerchantId;
use crate::modes::Mode;

/// Whether a customer may sign in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountStatus {
    /// May sign in.
    Active,
    /// Disabled by the shop: every session is dead and sign-in is refused.
    Disabled,
}

impl AccountStatus {
    /// The stable name.
    pub const fn as_str(self) -> &'static str {
        match self {
            AccountStatus::Active => "active",
            AccountStatus::Disabled => "disabled",
        }
    }

    /// Parses a stable name.
    pub fn parse(text: &str) -> Option<Self> {
        [AccountStatus::Active, AccountStatus::Disabled].into_iter().find(|s| s.as_str() == text)
    }
}

/// A customer account as stored. The email is sealed under the customer's vault data key, so
/// erasing the customer's data (crypto-shredding) makes it unreadable; only a keyed hash of the
/// normalized address serves look-ups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomerRecord {
    /// `cus_…`
    pub id: String,
    /// Its merchant.
    pub merchant_id: MerchantId,
    /// The merchant's data space it belongs to.
    pub mode: Mode,
    /// Keyed hash of the normalized email (unique per merchant and mode; the hash itself names
    /// the mode, so a test account never matches a live one).
    pub email_lookup: Vec<u8>,
    /// The email, sealed under `data_key_id`.
    pub email_sealed: Vec<u8>,
    /// The customer's vault data key.
    pub data_key_id: String,
    /// When the email was verified.
    pub email_verified_at: Option<Timestamp>,
    /// Argon2id PHC string (`None`: passkey-only account).
    pub password_hash: Option<String>,
    /// When the password was last set.
    pub password_changed_at: Option<Timestamp>,
    /// Active or disabled.
    pub status: AccountStatus,
    /// The TOTP seed sealed under `data_key_id` (pending until `totp_confirmed_at`).
    pub totp_sealed: Option<Vec<u8>>,
    /// When TOTP enrolment was confirmed with a first code.
    pub totp_confirmed_at: Option<Timestamp>,
    /// The last accepted TOTP step (codes of it and earlier steps are refused).
    pub totp_last_step: Option<u64>,
    /// The anti-phishing phrase every mail shows, sealed under `data_key_id`.
    pub phrase_sealed: Option<Vec<u8>>,
    /// A new address waiting for confirmation: its keyed hash and the address sealed under
    /// `data_key_id`.
    pub pending_email: Option<(Vec<u8>, Vec<u8>)>,
    /// When it was made.
    pub created_at: Timestamp,
}

/// Failed sign-ins counted per subject (a keyed hash of an email, whether or not an account has
/// it, so that throttling cannot tell accounts apart).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginFailures {
    /// Consecutive failures.
    pub count: u32,
    /// The last one.
    pub last_at: Option<Timestamp>,
}

/// What a challenge is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChallengePurpose {
    /// The second factor of a sign-in whose password was right.
    Login,
    /// Step-up for one bound action.
    StepUp,
    /// An emailed link that verifies the address.
    VerifyEmail,
    /// An emailed link that sets a new password (with the second factor, when one is enrolled).
    PasswordReset,
}

impl ChallengePurpose {
    /// The stable name.
    pub const fn as_str(self) -> &'static str {
        match self {
            ChallengePurpose::Login => "login",
            ChallengePurpose::StepUp => "step_up",
            ChallengePurpose::VerifyEmail => "verify_email",
            ChallengePurpose::PasswordReset => "password_reset",
        }
    }

    /// Parses a stable name.
    pub fn parse(text: &str) -> Option<Self> {
        [
            ChallengePurpose::Login,
            ChallengePurpose::StepUp,
            ChallengePurpose::VerifyEmail,
            ChallengePurpose::PasswordReset,
        ]
        .into_iter()
        .find(|s| s.as_str() == text)
    }
}

/// A pending second-factor challenge: a sign-in awaiting its second factor, or a step-up bound to
/// one action. A completed step-up carries the keyed hash of its single-use proof.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChallengeRecord {
    /// `chl_…`
    pub id: String,
    /// Its merchant.
    pub merchant_id: MerchantId,
    /// Its customer.
    pub customer_id: String,
    /// Login or step-up.
    pub purpose: ChallengePurpose,
    /// Keyed hash of the step-up's purpose and binding (`None` for a sign-in).
    pub binding_digest: Option<Vec<u8>>,
    /// The session that asked for a step-up.
    pub session_id: Option<String>,
    /// The client's address and user agent of a sign-in, carried to the session it makes.
    pub client: Option<String>,
    /// When it was made.
    pub created_at: Timestamp,
    /// When it stops accepting factors.
    pub expires_at: Timestamp,
    /// Wrong factors so far.
    pub failures: u32,
    /// When a factor was accepted.
    pub completed_at: Option<Timestamp>,
    /// Keyed hash of the step-up proof.
    pub proof_digest: Option<Vec<u8>>,
    /// When the proof stops working.
    pub proof_expires_at: Option<Timestamp>,
    /// When the proof was redeemed.
    pub proof_used_at: Option<Timestamp>,
    /// Keyed hash of the emailed one-time code of a sign-in.
    pub code_digest: Option<Vec<u8>>,
    /// When that code stops working.
    pub code_expires_at: Option<Timestamp>,
}

/// Customer accounts, their factors, sessions and challenges. Every read names the merchant
/// except the look-ups by a secret's keyed hash (a session token, a step-up proof), which find
/// out the merchant.
impl CustomerRecord {
    /// The data space the customer belongs to.
    pub fn space(&self) -> crate::modes::Space<'_> {
        crate::modes::Space { merchant: &self.merchant_id, mode: self.mode }
    }
}

#[async_trait]
pub trait IdentityRepository: crate::sessions::SessionRepository {
    /// Stores a new customer; false (nothing written) when the merchant has one with that email.
    async fn insert_customer(&self, customer: &CustomerRecord) -> Result<bool, StoreError>;

    /// A customer of a merchant's data space by id.
    async fn customer(&self, merchant: &MerchantId, mode: Mode, id: &str)
    -> Result<Option<CustomerRecord>, StoreError>;

    /// A customer of a merchant's data space by the keyed hash of their email.
    async fn customer_by_email(
        &self,
        merchant: &MerchantId,
        mode: Mode,
        lookup: &[u8],
    ) -> Result<Option<CustomerRecord>, StoreError>;

    /// Sets a customer's password hash.
    async fn set_password(&self, merchant: &MerchantId, id: &str, hash: &str, at: Timestamp) -> Result<(), StoreError>;

    /// Sets or clears the customer's status; disabling ends every session in the same transaction.
    async fn set_status(
        &self,
        merchant: &MerchantId,
        id: &str,
        status: AccountStatus,
        at: Timestamp,
    ) -> Result<bool, StoreError>;

    /// Stores a pending TOTP seed (replacing any pending one; refused when one is confirmed).
    async fn begin_totp(&self, merchant: &MerchantId, id: &str, sealed: &[u8]) -> Result<bool, StoreError>;

    /// Confirms the pending seed with its first accepted step, and stores the recovery code
    /// hashes, in one transaction.
    async fn confirm_totp(
        &self,
        merchant: &MerchantId,
        id: &str,
        step: u64,
        at: Timestamp,
        recovery_digests: &[Vec<u8>],
    ) -> Result<bool, StoreError>;

    /// Removes TOTP and the recovery codes.
    async fn remove_totp(&self, merchant: &MerchantId, id: &str) -> Result<bool, StoreError>;

    /// Records `step` as the last accepted TOTP step if it is later than the stored one (so a
    /// code is accepted once, even by two requests at the same moment).
    async fn accept_totp_step(&self, id: &str, step: u64) -> Result<bool, StoreError>;

    /// Replaces the recovery codes.
    async fn replace_recovery_codes(&self, id: &str, digests: &[Vec<u8>], at: Timestamp) -> Result<(), StoreError>;

    /// Marks an unused recovery code used; false when there is no such unused code.
    async fn use_recovery_code(&self, id: &str, digest: &[u8], at: Timestamp) -> Result<bool, StoreError>;

    /// Unused recovery codes of a customer.
    async fn recovery_codes_left(&self, id: &str) -> Result<u32, StoreError>;

    /// Failed sign-ins of a subject.
    async fn login_failures(&self, merchant: &MerchantId, subject: &[u8]) -> Result<LoginFailures, StoreError>;

    /// Counts one more failure; returns the new state.
    async fn add_login_failure(
        &self,
        merchant: &MerchantId,
        subject: &[u8],
        at: Timestamp,
    ) -> Result<LoginFailures, StoreError>;

    /// Forgets a subject's failures (after a successful sign-in).
    async fn clear_login_failures(&self, merchant: &MerchantId, subject: &[u8]) -> Result<(), StoreError>;

    /// Stores a challenge.
    async fn insert_challenge(&self, challenge: &ChallengeRecord) -> Result<(), StoreError>;

    /// A merchant's challenge by id.
    async fn challenge(&self, merchant: &MerchantId, id: &str) -> Result<Option<ChallengeRecord>, StoreError>;

    /// Stores the emailed code of a sign-in challenge (replacing an earlier one).
    async fn set_challenge_code(&self, id: &str, digest: &[u8], expires_at: Timestamp) -> Result<(), StoreError>;

    /// Reserves one answer to a challenge before it is checked: counts it if the challenge is
    /// open (not completed, not used, unexpired at `now`) and has had fewer than `max` answers.
    /// False when it may not be answered any more. Atomic, so parallel answers cannot exceed `max`.
    async fn reserve_challenge_try(&self, id: &str, max: u32, now: Timestamp) -> Result<bool, StoreError>;

    /// Spends every unused emailed link of a customer for `purpose` (after a reset, older links die).
    async fn spend_links(&self, customer: &str, purpose: ChallengePurpose, at: Timestamp) -> Result<(), StoreError>;

    /// Completes a challenge that is not completed yet, with a step-up proof's hash and expiry
    /// when it has one; false when it was completed meanwhile.
    async fn complete_challenge(
        &self,
        id: &str,
        at: Timestamp,
        proof: Option<(&[u8], Timestamp)>,
    ) -> Result<bool, StoreError>;

    /// Redeems a step-up proof once: marks it used and returns its challenge, if it is unused and
    /// unexpired at `now`.
    async fn redeem_proof(&self, digest: &[u8], now: Timestamp) -> Result<Option<ChallengeRecord>, StoreError>;

    /// Sets (or clears) the sealed anti-phishing phrase.
    async fn set_phrase(&self, merchant: &MerchantId, id: &str, sealed: Option<&[u8]>) -> Result<(), StoreError>;

    /// Marks the email verified (once).
    async fn mark_email_verified(&self, merchant: &MerchantId, id: &str, at: Timestamp) -> Result<(), StoreError>;

    /// Sets the address waiting for confirmation (replacing any earlier one).
    async fn set_pending_email(
        &self,
        merchant: &MerchantId,
        id: &str,
        lookup: &[u8],
        sealed: &[u8],
    ) -> Result<(), StoreError>;

    /// Makes the pending address (if its keyed hash is still `lookup`) the account's verified
    /// address, sealed anew as `sealed`. False when it is no longer pending, or another account of
    /// the merchant has that address.
    async fn apply_pending_email(
        &self,
        merchant: &MerchantId,
        id: &str,
        lookup: &[u8],
        sealed: &[u8],
        at: Timestamp,
    ) -> Result<bool, StoreError>;

    /// The unexpired, unused challenge whose proof (or emailed link) has this keyed hash, without
    /// using it up.
    async fn challenge_by_proof(&self, digest: &[u8], now: Timestamp) -> Result<Option<ChallengeRecord>, StoreError>;

    /// The merchant of the challenge whose proof (or emailed link) has this keyed hash and was
    /// used already, if any: a single-use token presented again (intrusion detection).
    async fn spent_proof_merchant(&self, digest: &[u8]) -> Result<Option<MerchantId>, StoreError>;

    /// Whether any stored session of the customer (live or ended within the purge window) came
    /// from this user agent.
    async fn has_session_from(&self, customer: &str, user_agent: &str) -> Result<bool, StoreError>;

    /// The client address and start of the customer's latest stored session (live or ended
    /// within the purge window), if any.
    async fn last_session_of(&self, customer: &str) -> Result<Option<(Option<String>, Timestamp)>, StoreError>;

    /// Deletes challenges that expired before `before`; returns how many.
    async fn purge_identity(&self, before: Timestamp, limit: u32) -> Result<u64, StoreError>;
}
