//! The outbox's storage port and records.
//! Must never: hand out a message that another claim holds (a lease), or forget a message that
//! was neither delivered nor given up.

use async_trait::async_trait;
use strongroom_types::Timestamp;

use crate::StoreError;
use crate::merchants::MerchantId;

/// Where a message goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    /// A mail, through the configured mailer.
    Mail,
    /// A webhook to one of the shop's endpoints (`destination` names it).
    Webhook,
    /// A security alert to the operator's alert webhook.
    Alert,
}

impl Channel {
    /// The stored name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Mail => "mail",
            Self::Webhook => "webhook",
            Self::Alert => "alert",
        }
    }

    /// Parses the stored name.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "mail" => Some(Self::Mail),
            "webhook" => Some(Self::Webhook),
            "alert" => Some(Self::Alert),
            _ => None,
        }
    }
}

/// One message to one destination.
#[derive(Clone, PartialEq, Eq)]
pub struct OutboxMessage {
    /// `obx_…`: this delivery.
    pub id: String,
    /// `evt_…`: the event, the same for every destination and every retry (`webhook-id`).
    pub event_id: String,
    /// The merchant concerned.
    pub merchant: Option<MerchantId>,
    /// The channel.
    pub channel: Channel,
    /// The webhook endpoint (`we_…`) for [`Channel::Webhook`].
    pub destination: Option<String>,
    /// The event type (`security.alert`) or, for mail, the template name.
    pub event_type: String,
    /// The body: sealed for mail, JSON otherwise.
    pub payload: Vec<u8>,
    /// When it was written.
    pub created_at: Timestamp,
    /// When it is due.
    pub next_attempt_at: Timestamp,
    /// Attempts made so far.
    pub attempts: u32,
}

impl std::fmt::Debug for OutboxMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutboxMessage")
            .field("id", &self.id)
            .field("event_id", &self.event_id)
            .field("channel", &self.channel)
            .field("event_type", &self.event_type)
            .field("attempts", &self.attempts)
            .finish_non_exhaustive()
    }
}

/// How one attempt went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryResult {
    /// The message.
    pub id: String,
    /// When the attempt was made.
    pub at: Timestamp,
    /// The HTTP status code, when one came back.
    pub status_code: Option<u16>,
    /// How long it took.
    pub latency_ms: u32,
    /// Why it failed (no body, no URL, no secret); `None` on success.
    pub error: Option<String>,
    /// Delivered.
    pub delivered: bool,
    /// When to try again; `None` with `delivered == false` gives the message up.
    pub retry_at: Option<Timestamp>,
}

/// The outbox's depth, for status and metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutboxStats {
    /// Messages waiting (due or not).
    pub pending: u64,
    /// The oldest waiting message's creation time.
    pub oldest_pending: Option<Timestamp>,
    /// Messages given up.
    pub failed: u64,
    /// Messages delivered (still in the delivery log).
    pub delivered: u64,
}

/// A delivery as the delivery log shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryRecord {
    /// `obx_…`
    pub id: String,
    /// `evt_…`
    pub event_id: String,
    /// The event type.
    pub event_type: String,
    /// `pending`, `delivered` or `failed`.
    pub status: String,
    /// Attempts made.
    pub attempts: u32,
    /// When it was written.
    pub created_at: Timestamp,
    /// The last attempt.
    pub last_attempt_at: Option<Timestamp>,
    /// The last HTTP status.
    pub last_status_code: Option<u16>,
    /// The last attempt's latency.
    pub last_latency_ms: Option<u32>,
    /// The last error.
    pub last_error: Option<String>,
    /// When it was delivered.
    pub delivered_at: Option<Timestamp>,
    /// When the next attempt is due (pending only).
    pub next_attempt_at: Option<Timestamp>,
}

/// Storage of the outbox.
#[async_trait]
pub trait OutboxRepository: Send + Sync + std::fmt::Debug {
    /// Writes messages in one transaction.
    async fn enqueue(&self, messages: &[OutboxMessage]) -> Result<(), StoreError>;

    /// Takes up to `limit` due messages and leases them until `lease_until`: a message leased is
    /// not handed out again before then (one conditional update decides).
    async fn claim_due(
        &self,
        now: Timestamp,
        lease_until: Timestamp,
        limit: u32,
    ) -> Result<Vec<OutboxMessage>, StoreError>;

    /// Records attempts (one transaction) and ends their leases.
    async fn record_attempts(&self, results: &[DeliveryResult]) -> Result<(), StoreError>;

    /// Ends every lease (a process that alone serves the database starts with no delivery in
    /// flight: leases left by its previous run belong to sends that died with it).
    async fn release_leases(&self) -> Result<u64, StoreError>;

    /// Depth and age.
    async fn stats(&self) -> Result<OutboxStats, StoreError>;

    /// The enabled webhook endpoints of data space `mode`, oldest first, with their merchant and
    /// the event types they subscribe to: those of `merchant`, or of every merchant for a
    /// deployment-wide event (`None`).
    async fn enabled_endpoints(
        &self,
        merchant: Option<&MerchantId>,
        mode: crate::modes::Mode,
    ) -> Result<Vec<EnabledEndpoint>, StoreError>;

    /// Deletes delivered and given-up messages created before `before`, at most `limit`.
    async fn purge_outbox(&self, before: Timestamp, limit: u32) -> Result<u64, StoreError>;

    /// The newest deliveries to one endpoint, newest first, before the cursor `before` (an id).
    async fn deliveries(
        &self,
        merchant: &MerchantId,
        endpoint: &str,
        before: Option<&str>,
        limit: u32,
    ) -> Result<Vec<DeliveryRecord>, StoreError>;

    /// Makes a delivered or given-up message to `endpoint` due again now; false when there is none.
    async fn redeliver(
        &self,
        merchant: &MerchantId,
        endpoint: &str,
        id: &str,
        now: Timestamp,
    ) -> Result<bool, StoreError>;
}

/// An enabled webhook endpoint as events are addressed to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnabledEndpoint {
    /// `we_…`
    pub id: String,
    /// Its owner.
    pub merchant: MerchantId,
    /// The event types it subscribes to (`*` for all).
    pub event_types: Vec<String>,
}
