//! What a decision about an account does to the account, beyond refusing its sign-ins (which
//! the identity and staff services check against the decision book): a lock ends every session
//! of the customer or staff member and mails its owner what happened and how to get back in.
//! Must never: act on an account of another merchant, or put anything in the mail but the
//! decision's id, reason and times.

use std::sync::Arc;

use super::AccountResponses;
use crate::DomainError;
use crate::identity::IdentityService;
use crate::merchants::MerchantId;
use crate::ports::detection::DecisionRecord;
use crate::staff::StaffService;

/// The customers' and staff's side of account decisions.
#[derive(Debug, Clone)]
pub struct AccountResponder {
    identity: Arc<IdentityService>,
    staff: Arc<StaffService>,
}

impl AccountResponder {
    /// The responder.
    pub fn new(identity: Arc<IdentityService>, staff: Arc<StaffService>) -> Self {
        Self { identity, staff }
    }
}

#[async_trait::async_trait]
impl AccountResponses for AccountResponder {
    async fn exists(&self, merchant: &MerchantId, account: &str) -> Result<bool, DomainError> {
        if account.starts_with("stf_") {
            self.staff.is_staff_of(merchant, account).await
        } else {
            self.identity.is_customer(merchant, account).await
        }
    }

    async fn locked(&self, merchant: &MerchantId, decision: &DecisionRecord) -> Result<(), DomainError> {
        if decision.scope_value.starts_with("stf_") {
            self.staff.account_locked(merchant, decision).await?;
        } else {
            self.identity.account_locked(merchant, decision).await?;
        }
        Ok(())
    }
}
