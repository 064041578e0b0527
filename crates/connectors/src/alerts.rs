//! The alert webhook: security alerts POSTed as JSON to the operator's endpoint, signed the way
//! Standard Webhooks specifies (`webhook-id`, `webhook-timestamp`, and `webhook-signature:
//! v1,<base64 HMAC-SHA-256 of "id.timestamp.body">` under the configured secret), delivered by a
//! background task with retries (1 s, 5 s, 25 s), so the request that raised the alert never waits.
//! Must never: follow redirects, log the secret or the URL (it often holds a credential), or put
//! a value into an alert.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use strongroom_domain::alerts::{SecurityAlert, SecurityAlerts};
use strongroom_types::Secret;
use tokio::sync::mpsc;

/// Delivers alerts to a webhook.
#[derive(Debug)]
pub struct WebhookAlerts {
    queue: mpsc::Sender<SecurityAlert>,
}

/// The signature header value for `id`, `timestamp` (Unix seconds) and `body`.
pub fn signature(secret: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).unwrap_or_else(|_| unreachable_key());
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

#[expect(clippy::panic, reason = "HMAC accepts keys of any length")]
fn unreachable_key() -> Hmac<Sha256> {
    panic!("HMAC refused a key")
}

fn body_of(alert: &SecurityAlert, id: &str) -> Vec<u8> {
    serde_json::json!({
        "id": id,
        "type": format!("security.{}", alert.kind),
        "created_at": alert.at.to_rfc3339(),
        "data": {
            "merchant": alert.merchant.as_ref().map(|m| m.as_str().to_owned()),
            "object": alert.object,
            "actor": alert.actor,
            "detail": alert.detail,
            "request_id": alert.request_id,
        }
    })
    .to_string()
    .into_bytes()
}

impl WebhookAlerts {
    /// Starts the delivery task for `url`, signing with `secret`.
    pub fn start(url: Secret<String>, secret: Secret<String>) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        let (queue, mut receiver) = mpsc::channel::<SecurityAlert>(1024);
        tokio::spawn(async move {
            let mut sequence = 0u64;
            while let Some(alert) = receiver.recv().await {
                sequence += 1;
                let id = format!("alert_{}_{sequence}", alert.at.unix_millis());
                let body = body_of(&alert, &id);
                let timestamp = alert.at.unix_millis() / 1000;
                let signed = signature(secret.expose().as_bytes(), &id, timestamp, &body);
                for (attempt, wait) in [0u64, 1, 5, 25].into_iter().enumerate() {
                    tokio::time::sleep(Duration::from_secs(wait)).await;
                    let sent = client
                        .post(url.expose())
                        .header("content-type", "application/json")
                        .header("webhook-id", &id)
                        .header("webhook-timestamp", timestamp.to_string())
                        .header("webhook-signature", &signed)
                        .body(body.clone())
                        .send()
                        .await;
                    match sent {
                        Ok(response) if response.status().is_success() => break,
                        Ok(response) => {
                            tracing::warn!(attempt, status = %response.status(), kind = alert.kind, "alert webhook refused the alert")
                        }
                        Err(err) => {
                            tracing::warn!(attempt, error = %err.without_url(), kind = alert.kind, "alert webhook unreachable")
                        }
                    }
                }
            }
        });
        Ok(Self { queue })
    }
}

impl SecurityAlerts for WebhookAlerts {
    fn raise(&self, alert: SecurityAlert) {
        if self.queue.try_send(alert).is_err() {
            tracing::error!("alert queue full: a security alert was not sent (it is in the audit log)");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_follows_standard_webhooks() {
        // The example of the Standard Webhooks specification (the secret is the base64 part of
        // `whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw`).
        let secret = STANDARD.decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap_or_default();
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            signature(&secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }
}
