//! Saved cards on both backends: reads, the insert made in a payment's settling transaction
//! ([`insert_saved_card!`]), and the removal, which deletes the card's vault token with it.
//!
//! The removal is one conditional update (`WHERE status = 'active'`), and a payment claims a
//! saved card by a conditional update of the same row in its claiming transaction
//! (`payments.rs`): on PostgreSQL the second of the two waits for the first's row lock and
//! re-checks, on SQLite the write lock orders them, so a payment never starts after a removal.
//! Must never: remove a card without deleting its token in the same transaction, or commit a
//! removal without its outbox messages.

use sqlx::FromRow;
use strongroom_domain::StoreError;
use strongroom_domain::outbox::OutboxMessage;
use strongroom_domain::ports::payments::{CardSummary, FutureUsage, Page, SavedCardRecord};
use strongroom_types::Timestamp;

use crate::outbox::write_messages;
use crate::payments::{merchant, mode, page_sql};
use crate::{Store, on_pool, store_error};

#[derive(FromRow)]
struct SavedCardRow {
    id: String,
    merchant_id: String,
    mode: String,
    customer: String,
    token: String,
    brand: String,
    last4: String,
    usage: String,
    consent: String,
    network_transaction_id: Option<String>,
    stored_method: Option<String>,
    first_payment_intent: String,
    status: String,
    last_used_at: Option<i64>,
    created_at: i64,
    removed_at: Option<i64>,
    removed_by: Option<String>,
}

const SAVED_CARD_COLUMNS: &str = "id, merchant_id, mode, customer, token, brand, last4, usage, consent, \
     network_transaction_id, stored_method, first_payment_intent, status, last_used_at, created_at, removed_at, \
     removed_by";

fn corrupt(what: &str) -> StoreError {
    StoreError::Other(format!("stored saved card {what} is not valid"))
}

impl TryFrom<SavedCardRow> for SavedCardRecord {
    type Error = StoreError;
    fn try_from(row: SavedCardRow) -> Result<Self, StoreError> {
        Ok(SavedCardRecord {
            merchant: merchant(&row.merchant_id)?,
            mode: mode(&row.mode)?,
            usage: FutureUsage::parse(&row.usage).ok_or_else(|| corrupt("usage"))?,
            consent: serde_json::from_str(&row.consent).map_err(|_| corrupt("consent"))?,
            card: CardSummary { brand: row.brand, last4: row.last4 },
            id: row.id,
            customer: row.customer,
            token: row.token,
            network_transaction_id: row.network_transaction_id,
            stored_method: row.stored_method,
            first_payment_intent: row.first_payment_intent,
            status: row.status,
            last_used_at: row.last_used_at.map(Timestamp::from_unix_millis),
            created_at: Timestamp::from_unix_millis(row.created_at),
            removed_at: row.removed_at.map(Timestamp::from_unix_millis),
            removed_by: row.removed_by,
        })
    }
}

/// The consent as stored (JSON text).
pub(crate) fn consent_text(card: &SavedCardRecord) -> String {
    serde_json::to_string(&card.consent).unwrap_or_else(|_| "{}".to_owned())
}

/// Inserts a saved card in the transaction `$tx` (once per first payment: the unique
/// `first_payment_intent` turns a second insert into nothing), and lifts its token's expiry.
macro_rules! insert_saved_card {
    ($tx:expr, $card:expr) => {
        sqlx::query(
            "INSERT INTO saved_cards (id, merchant_id, mode, customer, token, brand, last4, usage, consent, \
             network_transaction_id, stored_method, first_payment_intent, status, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, 'active', $13) \
             ON CONFLICT (first_payment_intent) DO NOTHING",
        )
        .bind(&$card.id)
        .bind($card.merchant.as_str())
        .bind($card.mode.as_str())
        .bind(&$card.customer)
        .bind(&$card.token)
        .bind(&$card.card.brand)
        .bind(&$card.card.last4)
        .bind($card.usage.as_str())
        .bind($crate::saved_cards::consent_text($card))
        .bind($card.network_transaction_id.as_deref())
        .bind($card.stored_method.as_deref())
        .bind(&$card.first_payment_intent)
        .bind($card.created_at.unix_millis())
        .execute(&mut *$tx)
        .await?;
        // The token behind a saved card lives as long as the card (a checkout's token may have
        // been made with a short `ttl_seconds`).
        sqlx::query("UPDATE vault_tokens SET expires_at = NULL WHERE merchant_id = $1 AND id = $2")
            .bind($card.merchant.as_str())
            .bind(&$card.token)
            .execute(&mut *$tx)
            .await?;
    };
}
pub(crate) use insert_saved_card;

impl Store {
    pub(crate) async fn find_saved_card(&self, id: &str) -> Result<Option<SavedCardRecord>, StoreError> {
        let sql = format!("SELECT {SAVED_CARD_COLUMNS} FROM saved_cards WHERE id = $1");
        let row: Option<SavedCardRow> =
            on_pool!(self, pool => sqlx::query_as(&sql).bind(id).fetch_optional(pool).await).map_err(store_error)?;
        row.map(SavedCardRecord::try_from).transpose()
    }

    pub(crate) async fn list_saved_cards(
        &self,
        page: Page<'_>,
        customer: Option<&str>,
        active_only: bool,
    ) -> Result<Vec<SavedCardRecord>, StoreError> {
        let sql = page_sql(
            SAVED_CARD_COLUMNS,
            "saved_cards",
            "AND ($5 IS NULL OR customer = $5) AND ($6 = 0 OR status = 'active')",
        );
        let rows: Vec<SavedCardRow> = on_pool!(self, pool => sqlx::query_as(&sql)
            .bind(page.merchant.as_str())
            .bind(page.mode.as_str())
            .bind(page.starting_after)
            .bind(i64::from(page.limit))
            .bind(customer)
            .bind(i32::from(active_only))
            .fetch_all(pool)
            .await)
        .map_err(store_error)?;
        rows.into_iter().map(SavedCardRecord::try_from).collect()
    }

    pub(crate) async fn delete_saved_card(
        &self,
        card: &SavedCardRecord,
        at: Timestamp,
        by: &str,
        events: &[OutboxMessage],
    ) -> Result<bool, StoreError> {
        on_pool!(self, pool => async {
            let mut tx = pool.begin().await?;
            let removed = sqlx::query(
                // The gateway's handle goes with the token: nothing left could charge the card.
                "UPDATE saved_cards SET status = 'removed', removed_at = $2, removed_by = $3, stored_method = NULL \
                 WHERE id = $1 AND status = 'active'",
            )
            .bind(&card.id)
            .bind(at.unix_millis())
            .bind(by)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if removed == 0 {
                tx.rollback().await?;
                return Ok(false);
            }
            sqlx::query("DELETE FROM vault_tokens WHERE merchant_id = $1 AND id = $2")
                .bind(card.merchant.as_str())
                .bind(&card.token)
                .execute(&mut *tx)
                .await?;
            write_messages!(tx, events);
            tx.commit().await?;
            Ok::<bool, sqlx::Error>(true)
        }.await)
        .map_err(store_error)
    }
}
