//! Signed webhooks out: the outbox's [`WebhookSender`] over the [`crate::outbound`] client, the
//! Standard Webhooks signature (`webhook-id`, `webhook-timestamp`, and `webhook-signature:
//! v1,<base64 HMAC-SHA-256 of "id.timestamp.body">`, one signature per secret, space-separated,
//! while a rotated secret overlaps), and the [`DestinationPolicy`] that checks a URL before it is
//! stored. Used for the shop's webhook endpoints and the operator's alert webhook alike.
//! Must never: follow a redirect, log a URL (it often holds a credential), a secret or a body.

use std::time::Instant;

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use strongroom_domain::outbox::deliver::{WebhookOutcome, WebhookRequest, WebhookSender};
use strongroom_domain::webhooks::DestinationPolicy;

use crate::outbound::{OutboundError, OutboundSettings, check_url, client};

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

/// Posts signed webhooks.
#[derive(Debug)]
pub struct HttpWebhookSender {
    client: reqwest::Client,
    settings: OutboundSettings,
}

impl HttpWebhookSender {
    /// A sender with the outbound policy `settings`.
    pub fn new(settings: OutboundSettings) -> Result<Self, OutboundError> {
        Ok(Self { client: client(&settings)?, settings })
    }
}

#[async_trait]
impl WebhookSender for HttpWebhookSender {
    async fn send(&self, request: WebhookRequest<'_>) -> WebhookOutcome {
        let url = match check_url(request.url.expose(), &self.settings) {
            Ok(url) => url,
            Err(err) => return WebhookOutcome::Failed(err.to_string()),
        };
        let signatures: Vec<String> = request
            .secrets
            .iter()
            .map(|secret| signature(secret.expose(), request.event_id, request.timestamp, request.body))
            .collect();
        let started = Instant::now();
        let sent = self
            .client
            .post(url)
            .header("content-type", "application/json")
            .header("user-agent", "strongroom-webhooks/1")
            .header("webhook-id", request.event_id)
            .header("webhook-timestamp", request.timestamp.to_string())
            .header("webhook-signature", signatures.join(" "))
            .body(request.body.to_vec())
            .send()
            .await;
        match sent {
            Ok(response) => {
                let status = response.status().as_u16();
                // Read (and drop) a bounded part of the body so the connection can be reused.
                let _ = tokio::time::timeout(std::time::Duration::from_secs(2), response.bytes()).await;
                WebhookOutcome::Answered(status)
            }
            Err(err) => {
                let why = if err.is_timeout() {
                    "timed out".to_owned()
                } else if err.is_connect() {
                    format!("could not connect after {} ms", started.elapsed().as_millis())
                } else {
                    err.without_url().to_string()
                };
                WebhookOutcome::Failed(why)
            }
        }
    }
}

/// The outbound rules as a [`DestinationPolicy`]: the URL's scheme and, for an address literal,
/// the address (names are checked again when they resolve, at every delivery).
#[derive(Debug)]
pub struct OutboundPolicy(pub OutboundSettings);

impl DestinationPolicy for OutboundPolicy {
    fn check(&self, url: &str) -> Result<(), String> {
        check_url(url, &self.0).map(|_| ()).map_err(|e| e.to_string())
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
