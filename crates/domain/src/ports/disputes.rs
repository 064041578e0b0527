//! Storage of what gateways tell us on their own: the processed-event ledger that makes each
//! gateway event take effect once (one conditional insert decides), disputes of ours mapped from
//! the gateway's, and finding an intent by the gateway's id of its payment.
//! Must never: decide "first delivery" by a read followed by a write, or split a dispute's
//! change from its outbox messages.

use async_trait::async_trait;
use strongroom_types::{Money, Timestamp};

use crate::StoreError;
use crate::merchants::MerchantId;
use crate::modes::Mode;
use crate::outbox::OutboxMessage;
use crate::ports::payments::{IntentRecord, Page};

/// A dispute of ours (`dp_…`), mapped from the gateway's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisputeRecord {
    /// `dp_…`
    pub id: String,
    /// Owner (the disputed intent's).
    pub merchant: MerchantId,
    /// Data space (the disputed intent's).
    pub mode: Mode,
    /// The disputed intent (`pi_…`, ours).
    pub payment_intent: String,
    /// Disputed amount.
    pub amount: Money,
    /// The gateway's reason (`fraudulent`, `product_not_received`, …).
    pub reason: String,
    /// The gateway's status (`needs_response`, `under_review`, `won`, `lost`, …).
    pub status: String,
    /// Until when evidence can be submitted.
    pub evidence_due_by: Option<Timestamp>,
    /// `stripe`, …
    pub gateway: String,
    /// The gateway's id of the dispute.
    pub gateway_reference: String,
    /// First heard of.
    pub created_at: Timestamp,
    /// Last changed.
    pub updated_at: Timestamp,
}

/// How a claim on a gateway event ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventClaim {
    /// This caller processes it.
    Claimed,
    /// It was processed (or is being processed) already.
    Seen,
}

/// Storage of gateway events and disputes.
#[async_trait]
pub trait GatewayEventsRepository: Send + Sync + std::fmt::Debug {
    /// Claims `(gateway, event_id)` in one conditional statement: inserted, or taken over when an
    /// earlier claim was never finished and is older than `stale_before` (its process died).
    async fn claim_gateway_event(
        &self,
        gateway: &str,
        event_id: &str,
        event_type: &str,
        now: Timestamp,
        stale_before: Timestamp,
    ) -> Result<EventClaim, StoreError>;
    /// Marks a claimed event processed.
    async fn finish_gateway_event(&self, gateway: &str, event_id: &str, now: Timestamp) -> Result<(), StoreError>;
    /// Gives a claim back (processing failed; the gateway's retry may claim it again).
    async fn release_gateway_event(&self, gateway: &str, event_id: &str) -> Result<(), StoreError>;
    /// The intent whose payment has this id at this gateway.
    async fn intent_by_gateway_reference(
        &self,
        gateway: &str,
        reference: &str,
    ) -> Result<Option<IntentRecord>, StoreError>;
    /// Stores a dispute, or updates the one with its gateway reference (status, reason, amount,
    /// deadline), with its events. Returns what is stored.
    async fn upsert_dispute(
        &self,
        dispute: &DisputeRecord,
        events: &[OutboxMessage],
    ) -> Result<DisputeRecord, StoreError>;
    /// The dispute with this gateway reference.
    async fn dispute_by_gateway_reference(
        &self,
        gateway: &str,
        reference: &str,
    ) -> Result<Option<DisputeRecord>, StoreError>;
    /// One dispute, whoever owns it.
    async fn dispute(&self, id: &str) -> Result<Option<DisputeRecord>, StoreError>;
    /// Disputes of a space, newest first.
    async fn disputes(&self, page: Page<'_>) -> Result<Vec<DisputeRecord>, StoreError>;
}
