//! Webhook endpoints of the shop: registration, the event catalogue, signing secrets (shown once,
//! sealed at rest, rotated with an overlap), the delivery log, manual redelivery, and disabling an
//! endpoint that has failed for five days. Deliveries themselves run in [`crate::outbox::deliver`].
//! Must never: return a signing secret except once at creation or rotation, log an endpoint's URL,
//! or show one merchant's endpoints or deliveries to another.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use strongroom_crypto::Key256;
use strongroom_types::{Clock, Entropy, Secret, Timestamp, define_id};

use crate::audit::event::{AuditEvent, Outcome};
use crate::audit::log::AuditLog;
use crate::merchants::MerchantId;
use crate::modes::{Mode, Space};
use crate::outbox::ports::DeliveryRecord;
use crate::outbox::{Outbox, OutboxRepository};
use crate::{DomainError, StoreError};

define_id!(EndpointId, EndpointKind, "we");

/// Every event type strongroom sends, with what it means. `*` subscribes to all.
pub const EVENT_TYPES: &[(&str, &str)] = &[
    ("security.canary_token_used", "a canary token was read, revealed, used or deleted"),
    ("security.integrity_error", "a stored ciphertext failed its integrity check"),
    ("security.webhook_endpoint_disabled", "an endpoint failed for five days and was disabled"),
    ("security.decision_made", "intrusion detection (or a staff member) blocked a client"),
    ("security.decision_lifted", "a block of a client was lifted"),
    ("security.incident_opened", "a detection (or a staff member) opened a security incident"),
    ("security.incident_updated", "a security incident changed: state, assignee, severity or a playbook step"),
    ("vault.key_rotated", "a new key-encryption key version is active"),
    ("vault.key_retired", "a key-encryption key version was retired"),
    ("vault.fingerprint_key_rotated", "a new fingerprint key version is active"),
    ("customer.data_erased", "a customer's vault data was erased"),
    ("staff.invited", "a staff member was invited"),
    ("staff.disabled", "a staff member was disabled"),
    ("staff.enabled", "a staff member was enabled again"),
    ("staff.role_granted", "a role was granted to a staff member"),
    ("staff.role_revoked", "a role was revoked from a staff member"),
    ("staff.role_created", "a custom role was created"),
    ("staff.role_deleted", "a custom role was deleted"),
    ("payment_intent.created", "a payment intent was created"),
    ("payment_intent.processing", "a payment intent's authorisation, capture or void is with the gateway"),
    ("payment_intent.requires_action", "the customer must authenticate (3-D Secure) before the payment goes on"),
    ("payment_intent.amount_capturable_updated", "a payment was authorised and waits for a capture"),
    ("payment_intent.succeeded", "a payment was captured"),
    ("payment_intent.payment_failed", "an authorisation was declined; the intent needs another card"),
    ("payment_intent.canceled", "a payment intent was canceled (an authorisation voided)"),
    ("refund.created", "a refund was asked for"),
    ("refund.succeeded", "a refund was made"),
    ("refund.failed", "a refund failed; its amount can be refunded again"),
    ("dispute.created", "a customer disputed a payment at the gateway (a chargeback); see evidence_due_by"),
    ("dispute.updated", "a dispute changed (status, evidence deadline, funds withdrawn or reinstated)"),
    ("dispute.closed", "a dispute was closed (won, lost or accepted)"),
    ("saved_card.created", "a customer's card was saved with their consent"),
    ("saved_card.removed", "a saved card was removed (by the shop, the customer, or an erasure)"),
    ("webhook.test", "a test event sent on request"),
];

/// How long the previous secret still signs after a rotation (both signatures are sent).
pub const SECRET_OVERLAP: Duration = Duration::from_secs(24 * 3600);
/// An endpoint failing for this long is disabled.
pub const DISABLE_AFTER: Duration = Duration::from_secs(5 * 24 * 3600);
/// Most endpoints per merchant.
pub const MAX_ENDPOINTS: usize = 32;

/// A stored endpoint.
#[derive(Clone, PartialEq, Eq)]
pub struct EndpointRecord {
    /// `we_…`
    pub id: String,
    /// Owner.
    pub merchant: MerchantId,
    /// The data space whose events it receives.
    pub mode: Mode,
    /// Where events go.
    pub url: String,
    /// Subscribed event types (`*` for all).
    pub event_types: Vec<String>,
    /// Free text.
    pub description: String,
    /// The signing secret, sealed.
    pub secret_sealed: Vec<u8>,
    /// The previous secret, sealed, and until when it still signs.
    pub previous_secret: Option<(Vec<u8>, Timestamp)>,
    /// `enabled` or `disabled`.
    pub status: String,
    /// Failing without a success since.
    pub failing_since: Option<Timestamp>,
    /// Created.
    pub created_at: Timestamp,
}

impl std::fmt::Debug for EndpointRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EndpointRecord").field("id", &self.id).field("status", &self.status).finish_non_exhaustive()
    }
}

/// Storage of endpoints.
#[async_trait]
pub trait WebhookRepository: Send + Sync + std::fmt::Debug {
    /// Inserts an endpoint unless the merchant has `max` already; false when it has.
    async fn insert_endpoint(&self, endpoint: &EndpointRecord, max: u32) -> Result<bool, StoreError>;
    /// One endpoint (deleted ones are gone).
    async fn endpoint(&self, merchant: Option<&MerchantId>, id: &str) -> Result<Option<EndpointRecord>, StoreError>;
    /// The merchant's endpoints, oldest first.
    async fn endpoints(&self, merchant: &MerchantId) -> Result<Vec<EndpointRecord>, StoreError>;
    /// Deletes an endpoint and gives up its pending messages; false when there was none.
    async fn delete_endpoint(&self, merchant: &MerchantId, id: &str, at: Timestamp) -> Result<bool, StoreError>;
    /// Replaces the secret, keeping the old one until `previous_until`.
    async fn rotate_endpoint_secret(
        &self,
        merchant: &MerchantId,
        id: &str,
        sealed: &[u8],
        previous_until: Timestamp,
    ) -> Result<bool, StoreError>;
    /// Sets `enabled` or `disabled` (enabling clears `failing_since`).
    async fn set_endpoint_status(&self, merchant: &MerchantId, id: &str, status: &str) -> Result<bool, StoreError>;
    /// Endpoints that delivered (`true`: clears `failing_since`) or only failed (sets it if unset).
    async fn record_endpoint_health(&self, outcomes: &[(String, bool)], at: Timestamp) -> Result<(), StoreError>;
    /// Disables enabled endpoints failing since before `before`; returns them (id, merchant, mode).
    async fn disable_failing_endpoints(&self, before: Timestamp)
    -> Result<Vec<(String, MerchantId, Mode)>, StoreError>;
}

/// An endpoint as the API shows it (no secret).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct EndpointView {
    /// `webhook_endpoint`
    pub object: &'static str,
    /// `we_…`
    pub id: String,
    /// Where events go.
    pub url: String,
    /// Subscribed event types.
    pub event_types: Vec<String>,
    /// Whether it receives live events (false: the test data space's).
    pub livemode: bool,
    /// Free text.
    pub description: String,
    /// `enabled` or `disabled`.
    pub status: String,
    /// Failing without a success since (RFC 3339).
    pub failing_since: Option<String>,
    /// Until when the previous secret still signs, after a rotation.
    pub previous_secret_expires_at: Option<String>,
    /// Created (RFC 3339).
    pub created_at: String,
}

/// An endpoint with its secret, shown once.
#[derive(Clone)]
pub struct EndpointWithSecret {
    /// The endpoint.
    pub endpoint: EndpointView,
    /// `whsec_…`
    pub secret: Secret<String>,
}

impl std::fmt::Debug for EndpointWithSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EndpointWithSecret").field("endpoint", &self.endpoint).field("secret", &"whsec_…").finish()
    }
}

/// What delivery needs of an endpoint.
pub struct EndpointSecrets {
    /// The URL.
    pub url: Secret<String>,
    /// The current secret's bytes.
    pub current: Secret<Vec<u8>>,
    /// The previous secret's bytes and its end.
    pub previous: Option<(Secret<Vec<u8>>, Timestamp)>,
}

impl std::fmt::Debug for EndpointSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EndpointSecrets").finish_non_exhaustive()
    }
}

impl EndpointSecrets {
    /// The secrets that sign at `now`: the current one, and the previous one during its overlap.
    pub fn secrets_at(&self, now: Timestamp) -> Vec<Secret<Vec<u8>>> {
        let mut secrets = vec![Secret::new(self.current.expose().clone())];
        if let Some((previous, until)) = &self.previous
            && now < *until
        {
            secrets.push(Secret::new(previous.expose().clone()));
        }
        secrets
    }
}

/// Checks a destination URL before it is stored (the outbound client's rules: https, no
/// private addresses unless allowed). Implemented in `connectors`.
pub trait DestinationPolicy: Send + Sync + std::fmt::Debug {
    /// `Err(reason)` when strongroom will not send there; the reason never repeats the URL.
    fn check(&self, url: &str) -> Result<(), String>;
}

/// The webhook endpoint service.
#[derive(Debug)]
pub struct WebhookEndpoints {
    repo: Arc<dyn WebhookRepository>,
    outbox_repo: Arc<dyn OutboxRepository>,
    outbox: Outbox,
    seal_key: Arc<Key256>,
    policy: Arc<dyn DestinationPolicy>,
    audit: AuditLog,
    clock: Arc<dyn Clock>,
    entropy: Arc<dyn Entropy>,
    /// Counts changes made by this process (the deliverer drops its cached secrets when it moves;
    /// a change made on another node is seen within the cache's two seconds, while the previous
    /// secret still signs).
    generation: std::sync::atomic::AtomicU64,
    /// Mails the shop's owners when one of their endpoints is disabled.
    owners: std::sync::OnceLock<Arc<crate::staff::StaffService>>,
}

fn secret_context(endpoint: &str) -> Vec<u8> {
    format!("strongroom/webhook-secret/v1|{endpoint}").into_bytes()
}

fn view(record: &EndpointRecord) -> EndpointView {
    EndpointView {
        object: "webhook_endpoint",
        id: record.id.clone(),
        url: record.url.clone(),
        event_types: record.event_types.clone(),
        livemode: record.mode.is_live(),
        description: record.description.clone(),
        status: record.status.clone(),
        failing_since: record.failing_since.map(Timestamp::to_rfc3339),
        previous_secret_expires_at: record.previous_secret.as_ref().map(|(_, until)| until.to_rfc3339()),
        created_at: record.created_at.to_rfc3339(),
    }
}

/// Checks subscribed event types against the catalogue.
pub fn parse_event_types(types: &[String]) -> Result<Vec<String>, DomainError> {
    if types.is_empty() {
        return Err(DomainError::invalid("/event_types", "name at least one event type, or \"*\" for all"));
    }
    if types.len() > EVENT_TYPES.len() + 1 {
        return Err(DomainError::invalid("/event_types", "too many event types"));
    }
    let mut out = Vec::new();
    for (i, name) in types.iter().enumerate() {
        if name != "*" && !EVENT_TYPES.iter().any(|(known, _)| known == name) {
            return Err(DomainError::invalid(format!("/event_types/{i}"), "not an event type of the catalogue"));
        }
        if !out.contains(name) {
            out.push(name.clone());
        }
    }
    Ok(out)
}

/// Whether `subscribed` includes `event_type`.
pub fn subscribes(subscribed: &[String], event_type: &str) -> bool {
    subscribed.iter().any(|s| s == "*" || s == event_type)
}

impl WebhookEndpoints {
    /// The service.
    #[expect(clippy::too_many_arguments, reason = "wiring of injected ports")]
    pub fn new(
        repo: Arc<dyn WebhookRepository>,
        outbox_repo: Arc<dyn OutboxRepository>,
        outbox: Outbox,
        seal_key: Arc<Key256>,
        policy: Arc<dyn DestinationPolicy>,
        audit: AuditLog,
        clock: Arc<dyn Clock>,
        entropy: Arc<dyn Entropy>,
    ) -> Self {
        Self {
            repo,
            outbox_repo,
            outbox,
            seal_key,
            policy,
            audit,
            clock,
            entropy,
            generation: Default::default(),
            owners: Default::default(),
        }
    }

    fn new_secret(&self) -> (Secret<String>, Secret<Vec<u8>>) {
        let raw: [u8; 24] = strongroom_types::entropy::random_array(self.entropy.as_ref());
        let text = format!("whsec_{}", base64::Engine::encode(&base64::engine::general_purpose::STANDARD, raw));
        (Secret::new(text), Secret::new(raw.to_vec()))
    }

    fn seal(&self, endpoint: &str, raw: &Secret<Vec<u8>>) -> Vec<u8> {
        strongroom_crypto::envelope::seal(
            &self.seal_key,
            &secret_context(endpoint),
            raw.expose(),
            self.entropy.as_ref(),
        )
    }

    fn open(&self, endpoint: &str, sealed: &[u8]) -> Result<Secret<Vec<u8>>, DomainError> {
        strongroom_crypto::envelope::open(&self.seal_key, &secret_context(endpoint), sealed)
            .map(Secret::new)
            .map_err(|_| DomainError::Integrity)
    }

    /// Changes made by this process so far.
    pub fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::Acquire)
    }

    async fn audit(&self, event: AuditEvent) -> Result<(), DomainError> {
        self.generation.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        self.audit.record(event).await?;
        Ok(())
    }

    /// Registers an endpoint in a data space; the secret is in the answer and nowhere else.
    pub async fn create(
        &self,
        space: Space<'_>,
        actor: AuditEvent,
        url: &str,
        event_types: &[String],
        description: &str,
    ) -> Result<EndpointWithSecret, DomainError> {
        if url.len() > 2048 {
            return Err(DomainError::invalid("/url", "must be at most 2048 characters"));
        }
        self.policy.check(url).map_err(|why| DomainError::invalid("/url", why))?;
        if description.chars().count() > 200 {
            return Err(DomainError::invalid("/description", "must be at most 200 characters"));
        }
        crate::free_text::check("/description", description)?;
        let event_types = parse_event_types(event_types)?;
        let now = self.clock.now();
        let id = EndpointId::generate(self.entropy.as_ref()).to_string();
        let (text, raw) = self.new_secret();
        let record = EndpointRecord {
            id: id.clone(),
            merchant: space.merchant.clone(),
            mode: space.mode,
            url: url.to_owned(),
            event_types,
            description: description.to_owned(),
            secret_sealed: self.seal(&id, &raw),
            previous_secret: None,
            status: "enabled".into(),
            failing_since: None,
            created_at: now,
        };
        if !self.repo.insert_endpoint(&record, MAX_ENDPOINTS as u32).await? {
            return Err(DomainError::Conflict("too_many_endpoints", "a merchant has at most 32 webhook endpoints"));
        }
        self.outbox.forget_endpoints();
        self.audit(actor.on("webhook_endpoint", &id).with_action("webhook_endpoint.created")).await?;
        Ok(EndpointWithSecret { endpoint: view(&record), secret: text })
    }

    /// The endpoints of a data space.
    pub async fn list(&self, space: Space<'_>) -> Result<Vec<EndpointView>, DomainError> {
        let all = self.repo.endpoints(space.merchant).await?;
        Ok(all.iter().filter(|r| r.mode == space.mode).map(view).collect())
    }

    /// An endpoint of the data space: another merchant's or mode's answers as a missing one.
    async fn endpoint_in(&self, space: Space<'_>, id: &str) -> Result<EndpointRecord, DomainError> {
        match self.repo.endpoint(Some(space.merchant), id).await? {
            Some(record) if space.holds(&record.merchant, record.mode) => Ok(record),
            _ => Err(DomainError::NotFound),
        }
    }

    /// One endpoint.
    pub async fn get(&self, space: Space<'_>, id: &str) -> Result<EndpointView, DomainError> {
        Ok(view(&self.endpoint_in(space, id).await?))
    }

    /// Deletes an endpoint; its pending deliveries are given up.
    pub async fn delete(&self, space: Space<'_>, actor: AuditEvent, id: &str) -> Result<(), DomainError> {
        // An endpoint's mode never changes, so checking it first leaves no race.
        self.endpoint_in(space, id).await?;
        if !self.repo.delete_endpoint(space.merchant, id, self.clock.now()).await? {
            return Err(DomainError::NotFound);
        }
        self.outbox.forget_endpoints();
        self.audit(actor.on("webhook_endpoint", id).with_action("webhook_endpoint.deleted")).await
    }

    /// A new secret; the old one keeps signing (a second signature) for [`SECRET_OVERLAP`].
    pub async fn rotate_secret(
        &self,
        space: Space<'_>,
        actor: AuditEvent,
        id: &str,
    ) -> Result<EndpointWithSecret, DomainError> {
        self.endpoint_in(space, id).await?;
        let merchant = space.merchant;
        let (text, raw) = self.new_secret();
        let until = self.clock.now().saturating_add(SECRET_OVERLAP);
        if !self.repo.rotate_endpoint_secret(merchant, id, &self.seal(id, &raw), until).await? {
            return Err(DomainError::NotFound);
        }
        self.audit(actor.on("webhook_endpoint", id).with_action("webhook_endpoint.secret_rotated")).await?;
        let record = self.repo.endpoint(Some(merchant), id).await?.ok_or(DomainError::NotFound)?;
        Ok(EndpointWithSecret { endpoint: view(&record), secret: text })
    }

    /// Enables or disables an endpoint by hand.
    pub async fn set_enabled(
        &self,
        space: Space<'_>,
        actor: AuditEvent,
        id: &str,
        enabled: bool,
    ) -> Result<EndpointView, DomainError> {
        self.endpoint_in(space, id).await?;
        let status = if enabled { "enabled" } else { "disabled" };
        if !self.repo.set_endpoint_status(space.merchant, id, status).await? {
            return Err(DomainError::NotFound);
        }
        self.outbox.forget_endpoints();
        let action = if enabled { "webhook_endpoint.enabled" } else { "webhook_endpoint.disabled" };
        self.audit(actor.on("webhook_endpoint", id).with_action(action)).await?;
        self.get(space, id).await
    }

    /// The delivery log of an endpoint, newest first.
    pub async fn deliveries(
        &self,
        space: Space<'_>,
        id: &str,
        before: Option<&str>,
        limit: u32,
    ) -> Result<Vec<DeliveryRecord>, DomainError> {
        self.endpoint_in(space, id).await?;
        Ok(self.outbox_repo.deliveries(space.merchant, id, before, limit.clamp(1, 100)).await?)
    }

    /// Sends a delivered or given-up message again (same event id).
    pub async fn redeliver(
        &self,
        space: Space<'_>,
        actor: AuditEvent,
        id: &str,
        delivery: &str,
    ) -> Result<(), DomainError> {
        self.endpoint_in(space, id).await?;
        if !self.outbox_repo.redeliver(space.merchant, id, delivery, self.clock.now()).await? {
            return Err(DomainError::NotFound);
        }
        self.audit(actor.on("webhook_delivery", delivery).with_action("webhook_endpoint.redelivery_requested")).await?;
        self.outbox.wake().notify_one();
        Ok(())
    }

    /// Sends a `webhook.test` event to one endpoint.
    pub async fn send_test(&self, space: Space<'_>, id: &str) -> Result<String, DomainError> {
        let record = self.endpoint_in(space, id).await?;
        if record.status != "enabled" {
            return Err(DomainError::Conflict("endpoint_disabled", "the endpoint is disabled; enable it first"));
        }
        // To this endpoint alone, whether or not it subscribed to `webhook.test`.
        let message = self.outbox.endpoint_message(
            space.merchant,
            space.mode,
            &record.id,
            "webhook.test",
            serde_json::json!({"endpoint": id}),
        );
        let event_id = message.event_id.clone();
        let messages = vec![message];
        self.outbox.write(messages).await?;
        Ok(event_id)
    }

    /// The URL and signing secrets of an enabled endpoint, for delivery.
    pub async fn secrets_for_delivery(&self, id: &str) -> Result<Option<EndpointSecrets>, DomainError> {
        let Some(record) = self.repo.endpoint(None, id).await? else { return Ok(None) };
        if record.status != "enabled" {
            return Ok(None);
        }
        let previous = match &record.previous_secret {
            Some((sealed, until)) => Some((self.open(id, sealed)?, *until)),
            None => None,
        };
        Ok(Some(EndpointSecrets {
            url: Secret::new(record.url.clone()),
            current: self.open(id, &record.secret_sealed)?,
            previous,
        }))
    }

    /// Records which endpoints delivered and which only failed in a round.
    pub async fn record_health(&self, outcomes: &[(String, bool)], at: Timestamp) -> Result<(), DomainError> {
        if outcomes.is_empty() {
            return Ok(());
        }
        Ok(self.repo.record_endpoint_health(outcomes, at).await?)
    }

    /// Lets [`WebhookEndpoints::disable_failing`] mail the shop's owners.
    pub fn set_owner_notices(&self, staff: Arc<crate::staff::StaffService>) {
        let _ = self.owners.set(staff);
    }

    /// Disables endpoints that have failed for [`DISABLE_AFTER`], with an audit entry, a
    /// `security.webhook_endpoint_disabled` event to the merchant's other endpoints and the alert
    /// webhook, and a mail to the shop's owners. Returns how many.
    pub async fn disable_failing(&self) -> Result<usize, DomainError> {
        let now = self.clock.now();
        let before = Timestamp::from_unix_millis(
            now.unix_millis() - i64::try_from(DISABLE_AFTER.as_millis()).unwrap_or(i64::MAX),
        );
        let disabled = self.repo.disable_failing_endpoints(before).await?;
        if !disabled.is_empty() {
            self.outbox.forget_endpoints();
        }
        for (id, merchant, mode) in &disabled {
            let event = AuditEvent::system("webhook_endpoint.disabled", Outcome::Failed("failing_for_5_days"))
                .for_merchant(merchant)
                .in_mode(*mode)
                .on("webhook_endpoint", id);
            self.audit(event).await?;
            let data = serde_json::json!({"endpoint": id, "reason": "failing_for_5_days"});
            self.outbox.emit(Some(merchant), *mode, "security.webhook_endpoint_disabled", data, true).await?;
            if let Some(staff) = self.owners.get() {
                let lines = [
                    format!(
                        "Your webhook endpoint {id} has failed every delivery for 5 days, so strongroom disabled it."
                    ),
                    "Events meanwhile stay in its delivery log. Fix the receiver, then enable the endpoint again \
                     (POST /v1/webhook_endpoints/{id}/enable) and redeliver what it missed."
                        .replace("{id}", id),
                ];
                staff
                    .notify_owners(merchant, "a webhook endpoint was disabled", "webhook_endpoint_disabled", &lines)
                    .await?;
            }
        }
        Ok(disabled.len())
    }
}
