//! Delivery of the outbox: claims due messages under a lease, sends each through its channel
//! (mail, a shop's webhook endpoint, the operator's alert webhook), and records every attempt.
//! Runs on the job runner's leader only; a lease keeps a message from being sent by two nodes
//! at once even while leadership changes hands.
//! Must never: record a message delivered that was not acknowledged by its receiver, retry a
//! message past [`super::RETRY_FOR`], or log a body, a recipient, a URL or a secret.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use strongroom_types::{Entropy, Secret, Timestamp};

use super::{Channel, DeliveryResult, Outbox, OutboxMessage, RETRY_FOR, backoff};
use crate::DomainError;
use crate::mail::{MailError, Mailer};
use crate::webhooks::{EndpointSecrets, WebhookEndpoints};

/// One signed POST.
pub struct WebhookRequest<'a> {
    /// Where.
    pub url: &'a Secret<String>,
    /// `webhook-id`: the event id.
    pub event_id: &'a str,
    /// `webhook-timestamp`, Unix seconds.
    pub timestamp: i64,
    /// The JSON body.
    pub body: &'a [u8],
    /// The signing secrets (raw bytes); one signature is sent per secret.
    pub secrets: &'a [Secret<Vec<u8>>],
}

impl std::fmt::Debug for WebhookRequest<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookRequest").field("event_id", &self.event_id).finish_non_exhaustive()
    }
}

/// What came back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebhookOutcome {
    /// An HTTP answer (2xx counts as delivered).
    Answered(u16),
    /// No answer: refused, unreachable, timed out, or the destination is not allowed.
    Failed(String),
}

/// Sends webhooks (the outbound HTTP client lives in `connectors`).
#[async_trait]
pub trait WebhookSender: Send + Sync + std::fmt::Debug {
    /// POSTs one signed request.
    async fn send(&self, request: WebhookRequest<'_>) -> WebhookOutcome;
}

/// The operator's alert webhook.
pub struct AlertDestination {
    /// Its URL.
    pub url: Secret<String>,
    /// Its signing secret (raw bytes).
    pub secret: Secret<Vec<u8>>,
}

impl std::fmt::Debug for AlertDestination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlertDestination").finish_non_exhaustive()
    }
}

/// What one round did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Round {
    /// Messages claimed.
    pub claimed: usize,
    /// Delivered.
    pub delivered: usize,
    /// Failed this time (retried later or given up).
    pub failed: usize,
}

/// An endpoint's secrets as cached: when read, the service's change count then, and the secrets.
type CachedEndpoint = (Instant, u64, Option<Arc<EndpointSecrets>>);

/// One attempt's outcome: the HTTP status if any, sent or why not, and whether it is final.
type Attempt = (Option<u16>, Result<(), String>, bool);

/// A destination for the counters: the channel and the endpoint (`-` for mail and alerts).
pub type Destination = (&'static str, String);

/// Counters for the metrics, by channel.
#[derive(Debug, Default)]
pub struct DeliveryCounters {
    /// Destination → (delivered, failed attempts).
    pub by_destination: Mutex<HashMap<Destination, (u64, u64)>>,
}

/// Delivers the outbox.
#[derive(Debug)]
pub struct Deliverer {
    outbox: Outbox,
    endpoints: Arc<WebhookEndpoints>,
    mailer: Arc<dyn Mailer>,
    sender: Arc<dyn WebhookSender>,
    alert: Option<AlertDestination>,
    entropy: Arc<dyn Entropy>,
    /// Messages claimed per round.
    pub batch: u32,
    /// Sends in flight at once.
    pub concurrency: usize,
    secrets: Mutex<HashMap<String, CachedEndpoint>>,
    /// Outcomes, for the metrics.
    pub counters: Arc<DeliveryCounters>,
}

/// How long a claimed message is kept from other claimers.
const LEASE: Duration = Duration::from_secs(60);
/// How long an endpoint's URL and secrets are reused before they are read again.
const ENDPOINT_CACHE: Duration = Duration::from_secs(2);

impl Deliverer {
    /// A deliverer.
    pub fn new(
        outbox: Outbox,
        endpoints: Arc<WebhookEndpoints>,
        mailer: Arc<dyn Mailer>,
        sender: Arc<dyn WebhookSender>,
        alert: Option<AlertDestination>,
        entropy: Arc<dyn Entropy>,
    ) -> Self {
        Self {
            outbox,
            endpoints,
            mailer,
            sender,
            alert,
            entropy,
            batch: 512,
            concurrency: 128,
            secrets: Mutex::new(HashMap::new()),
            counters: Arc::default(),
        }
    }

    /// The outbox.
    pub fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    async fn endpoint(&self, id: &str) -> Result<Option<Arc<EndpointSecrets>>, DomainError> {
        let generation = self.endpoints.generation();
        if let Ok(cache) = self.secrets.lock()
            && let Some((at, seen, found)) = cache.get(id)
            && at.elapsed() < ENDPOINT_CACHE
            && *seen == generation
        {
            return Ok(found.clone());
        }
        let found = self.endpoints.secrets_for_delivery(id).await?.map(Arc::new);
        if let Ok(mut cache) = self.secrets.lock() {
            if cache.len() > 10_000 {
                cache.clear();
            }
            cache.insert(id.to_owned(), (Instant::now(), generation, found.clone()));
        }
        Ok(found)
    }

    async fn attempt(&self, message: &OutboxMessage, now: Timestamp) -> Attempt {
        match message.channel {
            Channel::Mail => match self.outbox.open_mail(message) {
                Err(_) => (None, Err("the sealed mail does not open".into()), true),
                Ok(mail) => match self.mailer.send(&mail).await {
                    Ok(()) => (None, Ok(()), false),
                    // The mail server's words can name the recipient: the delivery log (stored in the
                    // clear) keeps a code, and the log line the kind only.
                    Err(MailError::Permanent(_)) => (None, Err("the mail server refused the message".into()), true),
                    Err(MailError::Temporary(_)) => {
                        (None, Err("the mail server did not take the message yet".into()), false)
                    }
                },
            },
            Channel::Webhook => {
                let Some(endpoint_id) = &message.destination else {
                    return (None, Err("no destination".into()), true);
                };
                let endpoint = match self.endpoint(endpoint_id).await {
                    Ok(Some(endpoint)) => endpoint,
                    Ok(None) => return (None, Err("the endpoint was deleted or disabled".into()), true),
                    Err(err) => return (None, Err(format!("reading the endpoint failed: {err}")), false),
                };
                let secrets = endpoint.secrets_at(now);
                self.post(&endpoint.url, message, &secrets, now).await
            }
            Channel::Alert => {
                let Some(alert) = &self.alert else {
                    return (None, Err("no alert webhook is configured".into()), true);
                };
                let secrets = [Secret::new(alert.secret.expose().clone())];
                self.post(&alert.url, message, &secrets, now).await
            }
        }
    }

    async fn post(
        &self,
        url: &Secret<String>,
        message: &OutboxMessage,
        secrets: &[Secret<Vec<u8>>],
        now: Timestamp,
    ) -> Attempt {
        let request = WebhookRequest {
            url,
            event_id: &message.event_id,
            timestamp: now.unix_millis().div_euclid(1000),
            body: &message.payload,
            secrets,
        };
        match self.sender.send(request).await {
            WebhookOutcome::Answered(code) if (200..300).contains(&code) => (Some(code), Ok(()), false),
            // 410 Gone: the receiver says the endpoint is no more (as Stripe and Svix read it).
            WebhookOutcome::Answered(code) => (Some(code), Err(format!("answered {code}")), code == 410),
            WebhookOutcome::Failed(why) => (None, Err(why), false),
        }
    }

    fn result_of(&self, message: &OutboxMessage, at: Timestamp, elapsed: Duration, outcome: Attempt) -> DeliveryResult {
        let (status_code, sent, permanent) = outcome;
        let latency_ms = u32::try_from(elapsed.as_millis()).unwrap_or(u32::MAX);
        match sent {
            Ok(()) => DeliveryResult {
                id: message.id.clone(),
                at,
                status_code,
                latency_ms,
                error: None,
                delivered: true,
                retry_at: None,
            },
            Err(error) => {
                let next = at.saturating_add(backoff(
                    message.attempts,
                    strongroom_types::entropy::random_array(self.entropy.as_ref()),
                ));
                let deadline = message.created_at.saturating_add(RETRY_FOR);
                let retry_at = (!permanent && next <= deadline).then_some(next);
                DeliveryResult {
                    id: message.id.clone(),
                    at,
                    status_code,
                    latency_ms,
                    error: Some(error),
                    delivered: false,
                    retry_at,
                }
            }
        }
    }

    /// Claims one batch of due messages, delivers them, records the attempts.
    pub async fn round(&self) -> Result<Round, DomainError> {
        let now = self.outbox.now();
        let claimed = self.outbox.repo().claim_due(now, now.saturating_add(LEASE), self.batch).await?;
        if claimed.is_empty() {
            return Ok(Round::default());
        }
        let mut round = Round { claimed: claimed.len(), ..Round::default() };
        // Attempts are recorded chunk by chunk: a stop or a crash re-sends at most one chunk.
        for chunk in claimed.chunks(self.concurrency.max(1)) {
            let attempts = chunk.iter().map(|message| async move {
                let started = Instant::now();
                let at = self.outbox.now();
                let outcome = self.attempt(message, at).await;
                self.result_of(message, at, started.elapsed(), outcome)
            });
            let results = futures::future::join_all(attempts).await;
            let mut health: HashMap<String, bool> = HashMap::new();
            for (message, result) in chunk.iter().zip(&results) {
                if let (Channel::Webhook, Some(endpoint)) = (message.channel, &message.destination) {
                    let ok = health.entry(endpoint.clone()).or_insert(false);
                    *ok |= result.delivered;
                }
                self.count(message, result.delivered);
                if result.delivered {
                    round.delivered += 1;
                } else {
                    round.failed += 1;
                    if result.retry_at.is_none() {
                        tracing::warn!(message = %message.id, event = %message.event_id, channel = message.channel.as_str(), "outbox message given up");
                    }
                }
            }
            self.outbox.repo().record_attempts(&results).await?;
            let health: Vec<(String, bool)> = health.into_iter().collect();
            self.endpoints.record_health(&health, now).await?;
        }
        Ok(round)
    }

    fn count(&self, message: &OutboxMessage, delivered: bool) {
        let Ok(mut counters) = self.counters.by_destination.lock() else { return };
        let key = (message.channel.as_str(), message.destination.clone().unwrap_or_else(|| "-".to_owned()));
        let entry = counters.entry(key).or_default();
        if delivered {
            entry.0 += 1;
        } else {
            entry.1 += 1;
        }
    }
}
