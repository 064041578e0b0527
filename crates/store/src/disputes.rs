//! Gateway events and disputes on both backends: the processed-event ledger (one conditional
//! insert per event id decides who processes it), disputes upserted by their gateway reference
//! with their outbox messages in one transaction, and intents found by their gateway reference.
//! Must never: decide "first delivery" by a read followed by a write, or commit a dispute's
//! change without the outbox messages that report it.

use async_trait::async_trait;
use sqlx::FromRow;
use strongroom_domain::StoreError;
use strongroom_domain::outbox::OutboxMessage;
use strongroom_domain::ports::disputes::{DisputeRecord, EventClaim, GatewayEventsRepository};
use strongroom_domain::ports::payments::{IntentRecord, Page};
use strongroom_types::Timestamp;

use crate::outbox::write_messages;
use crate::payments::{INTENT_COLUMNS, IntentRow, merchant, mode, money, page_sql};
use crate::{Store, on_pool, store_error};

#[derive(FromRow)]
struct DisputeRow {
    id: String,
    merchant_id: String,
    mode: String,
    payment_intent: String,
    amount: i64,
    currency: String,
    reason: String,
    status: String,
    evidence_due_by: Option<i64>,
    gateway: String,
    gateway_reference: String,
    created_at: i64,
    updated_at: i64,
}

const DISPUTE_COLUMNS: &str = "id, merchant_id, mode, payment_intent, amount, currency, reason, status, \
     evidence_due_by, gateway, gateway_reference, created_at, updated_at";

impl TryFrom<DisputeRow> for DisputeRecord {
    type Error = StoreError;
    fn try_from(row: DisputeRow) -> Result<Self, StoreError> {
        Ok(DisputeRecord {
            merchant: merchant(&row.merchant_id)?,
            mode: mode(&row.mode)?,
            amount: money(row.amount, &row.currency)?,
            evidence_due_by: row.evidence_due_by.map(Timestamp::from_unix_millis),
            created_at: Timestamp::from_unix_millis(row.created_at),
            updated_at: Timestamp::from_unix_millis(row.updated_at),
            id: row.id,
            payment_intent: row.payment_intent,
            reason: row.reason,
            status: row.status,
            gateway: row.gateway,
            gateway_reference: row.gateway_reference,
        })
    }
}

#[async_trait]
impl GatewayEventsRepository for Store {
    async fn claim_gateway_event(
        &self,
        gateway: &str,
        event_id: &str,
        event_type: &str,
        now: Timestamp,
        stale_before: Timestamp,
    ) -> Result<EventClaim, StoreError> {
        // The one statement that decides: a new row, or a dead claim taken over.
        let changed = on_pool!(self, pool => sqlx::query(
                "INSERT INTO gateway_events (gateway, event_id, event_type, status, claimed_at) \
                 VALUES ($1, $2, $3, 'claimed', $4) \
                 ON CONFLICT (gateway, event_id) DO UPDATE SET claimed_at = excluded.claimed_at \
                 WHERE gateway_events.status = 'claimed' AND gateway_events.claimed_at < $5",
            )
            .bind(gateway)
            .bind(event_id)
            .bind(event_type)
            .bind(now.unix_millis())
            .bind(stale_before.unix_millis())
            .execute(pool)
            .await
            .map(|r| r.rows_affected()))
        .map_err(store_error)?;
        Ok(if changed == 1 { EventClaim::Claimed } else { EventClaim::Seen })
    }

    async fn finish_gateway_event(&self, gateway: &str, event_id: &str, now: Timestamp) -> Result<(), StoreError> {
        on_pool!(self, pool => sqlx::query(
                "UPDATE gateway_events SET status = 'processed', processed_at = $3 WHERE gateway = $1 AND event_id = $2",
            )
            .bind(gateway)
            .bind(event_id)
            .bind(now.unix_millis())
            .execute(pool)
            .await
            .map(|_| ()))
        .map_err(store_error)
    }

    async fn release_gateway_event(&self, gateway: &str, event_id: &str) -> Result<(), StoreError> {
        on_pool!(self, pool => sqlx::query(
                "DELETE FROM gateway_events WHERE gateway = $1 AND event_id = $2 AND status = 'claimed'",
            )
            .bind(gateway)
            .bind(event_id)
            .execute(pool)
            .await
            .map(|_| ()))
        .map_err(store_error)
    }

    async fn intent_by_gateway_reference(
        &self,
        gateway: &str,
        reference: &str,
    ) -> Result<Option<IntentRecord>, StoreError> {
        let sql = format!(
            "SELECT {INTENT_COLUMNS} FROM payment_intents WHERE gateway = $1 AND gateway_reference = $2 \
             ORDER BY created_at, id LIMIT 1"
        );
        let row: Option<IntentRow> =
            on_pool!(self, pool => sqlx::query_as(&sql).bind(gateway).bind(reference).fetch_optional(pool).await)
                .map_err(store_error)?;
        row.map(IntentRecord::try_from).transpose()
    }

    async fn upsert_dispute(
        &self,
        dispute: &DisputeRecord,
        events: &[OutboxMessage],
    ) -> Result<DisputeRecord, StoreError> {
        let sql = format!(
            "INSERT INTO disputes ({DISPUTE_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) \
             ON CONFLICT (gateway, gateway_reference) DO UPDATE SET amount = excluded.amount, \
             currency = excluded.currency, reason = excluded.reason, status = excluded.status, \
             evidence_due_by = excluded.evidence_due_by, updated_at = excluded.updated_at \
             RETURNING {DISPUTE_COLUMNS}"
        );
        let row: DisputeRow = on_pool!(self, pool => async {
            let mut tx = pool.begin().await?;
            let row: DisputeRow = sqlx::query_as(&sql)
                .bind(&dispute.id)
                .bind(dispute.merchant.as_str())
                .bind(dispute.mode.as_str())
                .bind(&dispute.payment_intent)
                .bind(dispute.amount.minor())
                .bind(dispute.amount.currency().lowercase())
                .bind(&dispute.reason)
                .bind(&dispute.status)
                .bind(dispute.evidence_due_by.map(Timestamp::unix_millis))
                .bind(&dispute.gateway)
                .bind(&dispute.gateway_reference)
                .bind(dispute.created_at.unix_millis())
                .bind(dispute.updated_at.unix_millis())
                .fetch_one(&mut *tx)
                .await?;
            write_messages!(tx, events);
            tx.commit().await?;
            Ok::<DisputeRow, sqlx::Error>(row)
        }.await)
        .map_err(store_error)?;
        DisputeRecord::try_from(row)
    }

    async fn dispute_by_gateway_reference(
        &self,
        gateway: &str,
        reference: &str,
    ) -> Result<Option<DisputeRecord>, StoreError> {
        let sql = format!("SELECT {DISPUTE_COLUMNS} FROM disputes WHERE gateway = $1 AND gateway_reference = $2");
        let row: Option<DisputeRow> =
            on_pool!(self, pool => sqlx::query_as(&sql).bind(gateway).bind(reference).fetch_optional(pool).await)
                .map_err(store_error)?;
        row.map(DisputeRecord::try_from).transpose()
    }

    async fn dispute(&self, id: &str) -> Result<Option<DisputeRecord>, StoreError> {
        let sql = format!("SELECT {DISPUTE_COLUMNS} FROM disputes WHERE id = $1");
        let row: Option<DisputeRow> =
            on_pool!(self, pool => sqlx::query_as(&sql).bind(id).fetch_optional(pool).await).map_err(store_error)?;
        row.map(DisputeRecord::try_from).transpose()
    }

    async fn disputes(&self, page: Page<'_>) -> Result<Vec<DisputeRecord>, StoreError> {
        let sql = page_sql(DISPUTE_COLUMNS, "disputes", "");
        let rows: Vec<DisputeRow> = on_pool!(self, pool => sqlx::query_as(&sql)
            .bind(page.merchant.as_str())
            .bind(page.mode.as_str())
            .bind(page.starting_after)
            .bind(i64::from(page.limit))
            .fetch_all(pool)
            .await)
        .map_err(store_error)?;
        rows.into_iter().map(DisputeRecord::try_from).collect()
    }
}
