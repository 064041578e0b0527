//! The outbox: the one path by which what happened leaves strongroom (mail, security alerts to
//! the operator's alert webhook, and webhooks to the shop's endpoints).
//!
//! A service that has something to send writes it here, durably, before it answers; the job
//! runner's leader delivers it ([`deliver`]) at least once, each message under a stable event id
//! that receivers use to drop duplicates, retrying with exponential back-off and jitter for three
//! days. Mail is sealed at rest (its addresses and single-use links are secrets); webhook and alert
//! bodies carry ids and codes only.
//! Must never: deliver before the write that carries the message has committed, lose a message
//! it acknowledged, log a recipient, a body or a destination URL, or send a message to an
//! endpoint of another merchant.

pub mod deliver;
pub mod ports;

use std::sync::Arc;
use std::time::Duration;

use strongroom_crypto::Key256;
use strongroom_types::{Clock, Entropy, Secret, Timestamp, define_id};

use crate::DomainError;
use crate::cache::TtlCache;
use crate::mail::Mail;
use crate::merchants::MerchantId;
use crate::modes::Mode;
pub use ports::{Channel, DeliveryResult, EnabledEndpoint, OutboxMessage, OutboxRepository, OutboxStats};

define_id!(OutboxId, OutboxKind, "obx");
define_id!(EventId, EventKind, "evt");

/// For how long a message is retried before it is given up.
pub const RETRY_FOR: Duration = Duration::from_secs(3 * 24 * 3600);

/// The pause before attempt `attempt + 1` (after `attempt` failed ones): 5 s doubling up to
/// 6 hours, times a random factor between 0.5 and 1.5 so that retries of many messages to one
/// failing receiver do not arrive together.
pub fn backoff(attempt: u32, jitter: [u8; 2]) -> Duration {
    let base = 5u64.saturating_mul(1u64 << attempt.min(16)).min(6 * 3600);
    let factor = 500 + u64::from(u16::from_le_bytes(jitter)) % 1001; // 500..=1500 per mille
    Duration::from_millis(base.saturating_mul(factor))
}

/// Writes messages into the outbox. Cheap to clone.
#[derive(Clone)]
pub struct Outbox {
    repo: Arc<dyn OutboxRepository>,
    seal_key: Arc<Key256>,
    clock: Arc<dyn Clock>,
    entropy: Arc<dyn Entropy>,
    wake: Arc<tokio::sync::Notify>,
    /// Each data space's enabled endpoints as last read (see [`ENDPOINTS_FRESH`]).
    endpoints: Arc<EndpointReads>,
}

/// A data space's enabled endpoints (of every merchant's space of a mode, for `None`), as read.
type EndpointReads = TtlCache<(Option<MerchantId>, Mode), Arc<Vec<EnabledEndpoint>>>;

/// How long a node addresses events by its last read of a data space's enabled webhook
/// endpoints instead of reading them again for every event (three reads per payment otherwise).
/// A change made through this node (an endpoint created, deleted, enabled or disabled, or
/// disabled for failing) takes effect at once: it forgets the reads. One made through another
/// node reaches this node's events within this time; a message addressed meanwhile to an
/// endpoint deleted or disabled since is not delivered (delivery reads the endpoint again).
pub const ENDPOINTS_FRESH: Duration = Duration::from_secs(1);

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox").finish_non_exhaustive()
    }
}

/// The associated data of a sealed outbox payload: the message id and its channel.
fn payload_context(id: &str, channel: Channel) -> Vec<u8> {
    format!("strongroom/outbox/v1|{id}|{}", channel.as_str()).into_bytes()
}

/// What a mail looks like sealed: everything but `kind`, which stays in the clear.
#[derive(serde::Serialize, serde::Deserialize)]
struct SealedMail {
    to: String,
    subject: String,
    text: String,
    html: String,
}

impl Outbox {
    /// An outbox over `repo`, sealing mail under `seal_key`.
    pub fn new(
        repo: Arc<dyn OutboxRepository>,
        seal_key: Arc<Key256>,
        clock: Arc<dyn Clock>,
        entropy: Arc<dyn Entropy>,
    ) -> Self {
        Self {
            repo,
            seal_key,
            clock,
            entropy,
            wake: Arc::new(tokio::sync::Notify::new()),
            endpoints: Arc::new(TtlCache::new(ENDPOINTS_FRESH, 10_000)),
        }
    }

    /// Notified whenever this process wrote a message (the delivery job waits on it).
    pub fn wake(&self) -> Arc<tokio::sync::Notify> {
        self.wake.clone()
    }

    /// The repository (for the delivery job and status).
    pub fn repo(&self) -> &Arc<dyn OutboxRepository> {
        &self.repo
    }

    /// The clock.
    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// A new message, not yet written.
    fn message(
        &self,
        event_id: &EventId,
        merchant: Option<&MerchantId>,
        channel: Channel,
        destination: Option<String>,
        event_type: &str,
        payload: Vec<u8>,
    ) -> OutboxMessage {
        let now = self.clock.now();
        OutboxMessage {
            id: OutboxId::generate_at(self.entropy.as_ref(), now.unix_millis()).to_string(),
            event_id: event_id.to_string(),
            merchant: merchant.cloned(),
            channel,
            destination,
            event_type: event_type.to_owned(),
            payload,
            created_at: now,
            next_attempt_at: now,
            attempts: 0,
        }
    }

    /// A fresh event id.
    pub fn new_event_id(&self) -> EventId {
        EventId::generate_at(self.entropy.as_ref(), self.clock.now().unix_millis())
    }

    /// The outbox message of a mail: sealed, ready to be written with the change that caused it.
    pub fn mail_message(&self, merchant: Option<&MerchantId>, mail: &Mail) -> Result<OutboxMessage, DomainError> {
        let sealed = SealedMail {
            to: mail.to.expose().clone(),
            subject: mail.subject.clone(),
            text: mail.text.expose().clone(),
            html: mail.html.expose().clone(),
        };
        let plain = Secret::new(
            serde_json::to_vec(&sealed).map_err(|e| DomainError::Store(crate::StoreError::Other(e.to_string())))?,
        );
        let event_id = self.new_event_id();
        let mut message = self.message(&event_id, merchant, Channel::Mail, None, &mail.kind, Vec::new());
        message.payload = strongroom_crypto::envelope::seal(
            &self.seal_key,
            &payload_context(&message.id, Channel::Mail),
            plain.expose(),
            self.entropy.as_ref(),
        );
        Ok(message)
    }

    /// Opens a sealed mail message.
    pub fn open_mail(&self, message: &OutboxMessage) -> Result<Mail, DomainError> {
        let plain = strongroom_crypto::envelope::open(
            &self.seal_key,
            &payload_context(&message.id, Channel::Mail),
            &message.payload,
        )
        .map_err(|_| DomainError::Integrity)?;
        let plain = Secret::new(plain);
        let mail: SealedMail = serde_json::from_slice(plain.expose()).map_err(|_| DomainError::Integrity)?;
        Ok(Mail {
            to: Secret::new(mail.to),
            subject: mail.subject,
            text: Secret::new(mail.text),
            html: Secret::new(mail.html),
            kind: message.event_type.clone(),
        })
    }

    /// Writes messages durably (one transaction) and wakes the delivery job.
    pub async fn write(&self, messages: Vec<OutboxMessage>) -> Result<(), DomainError> {
        if messages.is_empty() {
            return Ok(());
        }
        self.repo.enqueue(&messages).await?;
        self.wake.notify_one();
        Ok(())
    }

    /// Queues a mail durably; returns once it is written.
    pub async fn mail(&self, merchant: Option<&MerchantId>, mail: &Mail) -> Result<(), DomainError> {
        let message = self.mail_message(merchant, mail)?;
        self.write(vec![message]).await
    }

    /// The JSON body of an event: `{id, type, livemode, created_at, data}`.
    fn event_body(&self, event_id: &EventId, event_type: &str, mode: Mode, data: serde_json::Value) -> Vec<u8> {
        serde_json::json!({
            "id": event_id.to_string(),
            "type": event_type,
            "livemode": mode.is_live(),
            "created_at": self.clock.now().to_rfc3339(),
            "data": data,
        })
        .to_string()
        .into_bytes()
    }

    /// The message of an event for one endpoint alone (of data space `mode`), whatever it
    /// subscribed to (a test event).
    pub fn endpoint_message(
        &self,
        merchant: &MerchantId,
        mode: Mode,
        endpoint: &str,
        event_type: &str,
        data: serde_json::Value,
    ) -> OutboxMessage {
        let event_id = self.new_event_id();
        let body = self.event_body(&event_id, event_type, mode, data);
        self.message(&event_id, Some(merchant), Channel::Webhook, Some(endpoint.to_owned()), event_type, body)
    }

    /// The messages of an event for the shop's webhook endpoints subscribed to `event_type` in
    /// data space `mode` (those of `merchant`, or of every merchant when `None`: a deployment-wide
    /// event such as a key rotation, which is live), and (with `alert`) for the operator's alert
    /// webhook: one message per destination, one event id. Write them with the change they
    /// report. The body is the JSON `{id, type, livemode, created_at, data}`; `data` must hold
    /// ids and codes only.
    pub async fn event_messages(
        &self,
        merchant: Option<&MerchantId>,
        mode: Mode,
        event_type: &str,
        data: serde_json::Value,
        alert: bool,
    ) -> Result<Vec<OutboxMessage>, DomainError> {
        let subscribers = self.subscribed(merchant, mode, event_type).await?;
        let (event_id, body, mut messages) = self.webhook_messages(&subscribers, mode, event_type, data);
        if alert {
            messages.push(self.message(&event_id, merchant, Channel::Alert, None, event_type, body));
        }
        Ok(messages)
    }

    /// The shop's endpoints of `merchant`'s data space `mode` that subscribe to `event_type`,
    /// read now, for [`Self::messages_to`] to address an event whose data is known only later
    /// (inside a transaction, where no further read should wait).
    pub async fn subscribers(
        &self,
        merchant: &MerchantId,
        mode: Mode,
        event_type: &str,
    ) -> Result<Vec<(String, MerchantId)>, DomainError> {
        self.subscribed(Some(merchant), mode, event_type).await
    }

    /// The enabled endpoints of `merchant`'s data space `mode` (of every merchant's, with
    /// `None`) that subscribe to `event_type`, from this node's read of them when it is fresh
    /// ([`ENDPOINTS_FRESH`]).
    async fn subscribed(
        &self,
        merchant: Option<&MerchantId>,
        mode: Mode,
        event_type: &str,
    ) -> Result<Vec<(String, MerchantId)>, DomainError> {
        let key = (merchant.cloned(), mode);
        let now = self.clock.now();
        let enabled = match self.endpoints.get(&key, now) {
            Some(enabled) => enabled,
            None => {
                let generation = self.endpoints.generation();
                let read = Arc::new(self.repo.enabled_endpoints(merchant, mode).await?);
                self.endpoints.put_unless_forgotten(key, read.clone(), now, generation);
                read
            }
        };
        Ok(enabled
            .iter()
            .filter(|e| event_type == "*" || crate::webhooks::subscribes(&e.event_types, event_type))
            .map(|e| (e.id.clone(), e.merchant.clone()))
            .collect())
    }

    /// Forgets this node's reads of enabled endpoints: call after any change to an endpoint's
    /// existence, status or subscriptions, so that the next event reads them again.
    pub fn forget_endpoints(&self) {
        self.endpoints.retain(|_, _| false);
    }

    /// An event's messages to `subscribers` (as [`Self::subscribers`] read them for this
    /// `event_type`): one per endpoint, one event id, as [`Self::event_messages`] makes them.
    pub fn messages_to(
        &self,
        subscribers: &[(String, MerchantId)],
        mode: Mode,
        event_type: &str,
        data: serde_json::Value,
    ) -> Vec<OutboxMessage> {
        self.webhook_messages(subscribers, mode, event_type, data).2
    }

    /// [`Self::messages_to`] and the message of the operator's alert webhook, with one event id
    /// (for an event whose data is known only inside its transaction).
    pub fn messages_to_with_alert(
        &self,
        subscribers: &[(String, MerchantId)],
        merchant: Option<&MerchantId>,
        mode: Mode,
        event_type: &str,
        data: serde_json::Value,
    ) -> Vec<OutboxMessage> {
        let (event_id, body, mut messages) = self.webhook_messages(subscribers, mode, event_type, data);
        messages.push(self.message(&event_id, merchant, Channel::Alert, None, event_type, body));
        messages
    }

    fn webhook_messages(
        &self,
        subscribers: &[(String, MerchantId)],
        mode: Mode,
        event_type: &str,
        data: serde_json::Value,
    ) -> (EventId, Vec<u8>, Vec<OutboxMessage>) {
        let event_id = self.new_event_id();
        let body = self.event_body(&event_id, event_type, mode, data);
        let messages = subscribers
            .iter()
            .map(|(endpoint, owner)| {
                self.message(&event_id, Some(owner), Channel::Webhook, Some(endpoint.clone()), event_type, body.clone())
            })
            .collect();
        (event_id, body, messages)
    }

    /// Emits an event to the shop's webhooks (and the alert webhook with `alert`), durably.
    pub async fn emit(
        &self,
        merchant: Option<&MerchantId>,
        mode: Mode,
        event_type: &str,
        data: serde_json::Value,
        alert: bool,
    ) -> Result<(), DomainError> {
        let messages = self.event_messages(merchant, mode, event_type, data, alert).await?;
        self.write(messages).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_caps_at_six_hours() {
        assert_eq!(backoff(0, [0, 0]), Duration::from_millis(2_500));
        assert_eq!(backoff(0, 1000u16.to_le_bytes()), Duration::from_millis(7_500));
        assert_eq!(backoff(1, [0, 0]), Duration::from_secs(5));
        assert_eq!(backoff(30, [0, 0]), Duration::from_secs(3 * 3600));
        assert!(backoff(30, 1000u16.to_le_bytes()) <= Duration::from_secs(9 * 3600));
        // Within three days a failing receiver is tried about 20 times, not thousands.
        let mut total = Duration::ZERO;
        let mut attempts = 0;
        while total < RETRY_FOR {
            total += backoff(attempts, [0xf4, 0x01]); // factor 1.0
            attempts += 1;
        }
        assert!((15..40).contains(&attempts), "{attempts}");
    }
}
