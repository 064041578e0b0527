//! Security alerts: events someone should look at now (a canary token used, a ciphertext that
//! failed its integrity check), sent to the operator's alert webhook when one is configured. The
//! audit log records them too; an alert is the push, the audit entry the proof.
//! Must never: carry a value or a secret (ids and reason codes only), or be acknowledged before it
//! is durably in the outbox.

use strongroom_types::Timestamp;

use crate::merchants::MerchantId;
use crate::modes::Mode;

/// One alert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecurityAlert {
    /// Stable name, e.g. `canary_token_used`.
    pub kind: &'static str,
    /// The merchant concerned.
    pub merchant: Option<MerchantId>,
    /// The data space it happened in: its webhook event goes to that mode's endpoints.
    pub mode: Mode,
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

/// Raises alerts through the outbox: each is an event `security.<kind>` for the shop's webhook
/// endpoints subscribed to it and, when the operator configured one, for the alert webhook.
#[derive(Debug, Clone, Default)]
pub struct SecurityAlerts {
    outbox: Option<crate::outbox::Outbox>,
    alert_webhook: bool,
}

impl SecurityAlerts {
    /// No outbox (tools and tests): alerts reach the log and the audit log only.
    pub fn log_only() -> Self {
        Self::default()
    }

    /// Alerts into `outbox`; with `alert_webhook`, also to the operator's alert webhook.
    pub fn new(outbox: crate::outbox::Outbox, alert_webhook: bool) -> Self {
        Self { outbox: Some(outbox), alert_webhook }
    }

    /// The outbox, when there is one (the vault writes its other events there too).
    pub fn outbox(&self) -> Option<&crate::outbox::Outbox> {
        self.outbox.as_ref()
    }

    /// Writes the alert durably into the outbox (delivery follows, at least once).
    pub async fn raise(&self, alert: SecurityAlert) -> Result<(), crate::DomainError> {
        let Some(outbox) = &self.outbox else {
            tracing::debug!(kind = alert.kind, "no outbox: alert logged only");
            return Ok(());
        };
        let data = serde_json::json!({
            "merchant": alert.merchant.as_ref().map(|m| m.as_str().to_owned()),
            "livemode": alert.mode.is_live(),
            "object": alert.object,
            "actor": alert.actor,
            "detail": alert.detail,
            "request_id": alert.request_id,
            "at": alert.at.to_rfc3339(),
        });
        outbox
            .emit(alert.merchant.as_ref(), alert.mode, &format!("security.{}", alert.kind), data, self.alert_webhook)
            .await
    }
}
