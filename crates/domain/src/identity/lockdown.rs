//! What an incident's playbook does to customers' accounts: end their sessions, make their
//! password stop working until they reset it (the existing reset mail flow), and mail them a
//! security notice with their anti-phishing phrase.
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
}
