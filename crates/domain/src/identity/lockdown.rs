//! What an incident's playbook or a decision does to customers' accounts: end their sessions,
//! make their password stop working until they reset it (the existing reset mail flow), mail
//! them a security notice or a lock notice with their anti-phishing phrase.
//! Must never: tell the caller a customer's password or email, act on a customer of another
//! merchant, or leave a forced reset with a password that still signs in.

use super::IdentityService;
use super::notices::Notice;
use crate::DomainError;
use crate::merchants::MerchantId;
use crate::modes::Mode;

impl IdentityService {
    /// Ends every session of a live customer of `merchant`; how many were ended.
    pub async fn end_customer_sessions(&self, merchant: &MerchantId, customer: &str) -> Result<u64, DomainError> {
        let ended = self.sessions.end_all(merchant, customer, None).await?;
        Ok(u64::try_from(ended.len()).unwrap_or(u64::MAX))
    }

    /// Forgets every cached customer session on this node (after sessions were ended in bulk;
    /// other nodes within the cache's second).
    pub fn forget_all_sessions(&self) {
        self.sessions.forget_all();
    }

    /// Replaces a live customer's password by the hash of a random secret nobody knows and ends
    /// their sessions: their password no longer signs in, and the reset mail flow
    /// (`POST /v1/identity/password-reset`) sets a new one. False: no such customer.
    pub async fn force_password_reset(&self, merchant: &MerchantId, customer: &str) -> Result<bool, DomainError> {
        let Some(record) = self.repo.customer(merchant, Mode::Live, customer).await? else { return Ok(false) };
        let unknown = self.fresh_secret("reset");
        let hash = self.hasher.hash(unknown).await?;
        self.repo.set_password(merchant, &record.id, &hash, self.now()).await?;
        self.sessions.end_all(merchant, &record.id, None).await?;
        Ok(true)
    }

    /// Mails a live customer the security-incident notice (with their phrase). False: no such
    /// customer.
    pub async fn notify_incident(&self, merchant: &MerchantId, customer: &str) -> Result<bool, DomainError> {
        let Some(record) = self.repo.customer(merchant, Mode::Live, customer).await? else { return Ok(false) };
        let notice = Notice {
            kind: "security_incident",
            subject: "A security notice about your account",
            intro: "We saw suspicious activity that concerns your account and took steps to protect it. \
                    If you are asked to, set a new password with the \"Forgot your password?\" link on the \
                    sign-in page.",
            facts: vec![("Time (UTC)", self.now().to_rfc3339())],
            link: None,
            closing: "We will never ask for your password or card number by mail. If a message claiming to be \
                      from us does not show your anti-phishing phrase, do not trust it.",
        };
        self.notify(&record, notice).await?;
        Ok(true)
    }

    /// Whether `customer` is a customer of `merchant` (live or test).
    pub async fn is_customer(&self, merchant: &MerchantId, customer: &str) -> Result<bool, DomainError> {
        for mode in [Mode::Live, Mode::Test] {
            if self.repo.customer(merchant, mode, customer).await?.is_some() {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// A customer's account was locked by `decision`: every session ends, and the customer is
    /// mailed (with their phrase) what happened and how to get back in. False: no such customer.
    pub async fn account_locked(
        &self,
        merchant: &MerchantId,
        decision: &crate::ports::detection::DecisionRecord,
    ) -> Result<bool, DomainError> {
        let mut record = None;
        for mode in [Mode::Live, Mode::Test] {
            if let Some(found) = self.repo.customer(merchant, mode, &decision.scope_value).await? {
                record = Some(found);
                break;
            }
        }
        let Some(record) = record else { return Ok(false) };
        self.sessions.end_all(merchant, &record.id, None).await?;
        self.forget_customer(&record.id);
        let closing = if decision.created_by == "detector" {
            "To get back in before then, set a new password with the \"Forgot your password?\" link on the \
             sign-in page: a new password lifts the lock at once. We will never ask for your password or card \
             number by mail."
        } else {
            "The shop's staff locked it. To get back in before then, contact the shop. We will never ask for \
             your password or card number by mail."
        };
        let notice = Notice {
            kind: "account_locked",
            subject: "Your account is locked",
            intro: "We locked your account to protect it: nobody can sign in to it for now, and every session \
                    it had was ended.",
            facts: vec![
                ("Locked at (UTC)", decision.created_at.to_rfc3339()),
                ("Locked until (UTC)", decision.until.to_rfc3339()),
            ],
            link: None,
            closing,
        };
        self.notify(&record, notice).await?;
        Ok(true)
    }

    /// Whether a decision locked this account (its sign-ins are refused).
    pub(super) fn is_locked(&self, merchant: &MerchantId, customer: &str) -> bool {
        self.decisions
            .get()
            .and_then(|d| d.account_decision(merchant, customer, crate::detection::AccountAction::Lock))
            .is_some()
    }

    /// Whether a decision asks this account's password sign-ins for a second factor.
    pub(super) fn must_step_up(&self, merchant: &MerchantId, customer: &str) -> bool {
        self.decisions
            .get()
            .and_then(|d| d.account_decision(merchant, customer, crate::detection::AccountAction::StepUp))
            .is_some()
    }
}
