//! Security alerts: events someone should look at now (a canary token used, a ciphertext that
//! failed its integrity check), sent to the operator's alert webhook when one is configured. The
//! audit log records them too; an alert is the push, the audit entry the proof.
//! Must never: carry a value or a secret (ids and reason codes only), or block the request that
//! raised it.

use strongroom_types::Timestamp;

use crate::merchants::MerchantId;

/// One alert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecurityAlert {
    /// Stable name, e.g. `canary_token_used`.
    pub kind: &'static str,
    /// The merchant concerned.
    pub merchant: Option<MerchantId>,
    /// The object (e.g. the token id).
    pub object: Option<String>,
    /// The actor (e.g. the API key id).
    pub actor: Option<String>,
    /// How (e.g. `revealed`).
    pub detail: &'static str,
    /// The request that raised it.
    pub request_id: Option<String>,
    /// When.
    pub at: Timestamp,
}

/// Where alerts go.
pub trait SecurityAlerts: Send + Sync + std::fmt::Debug {
    /// Hands an alert over for delivery; returns at once.
    fn raise(&self, alert: SecurityAlert);
}

/// No alert webhook configured: alerts reach the log and the audit log only.
#[derive(Debug, Default)]
pub struct LogOnly;

impl SecurityAlerts for LogOnly {
    fn raise(&self, alert: SecurityAlert) {
        tracing::debug!(kind = alert.kind, "no alert webhook configured");
    }
}
