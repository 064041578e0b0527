//! The checkout rules' storage on both backends: the fraud signals of each confirmation attempt,
//! the window counts the fraud rules read, and the fraud decision kept on an intent.
//!
//! An attempt's rows are inserted and its keys counted in one transaction that holds, per key,
//! a lock until it commits (PostgreSQL: a transaction-level advisory lock on the key; SQLite: the
//! database's write lock, taken by the first insert). So racing attempts of a key (on one node
//! or several) are counted one after the other, each seeing every earlier one: a limit of N lets
//! exactly N attempts through in a window, whatever the concurrency.
//! Must never: count outside the transaction that inserted the attempt, or count an attempt twice
//! (the primary key `(intent_id, attempt, kind)` keeps a repeat out).

use async_trait::async_trait;
use strongroom_domain::StoreError;
use strongroom_domain::ports::checkout::{AttemptSignals, CheckoutRepository, SignalKind, WindowCounts};
use strongroom_domain::ports::payments::{IntentRecord, Page};
use strongroom_types::Timestamp;

use crate::payments::{INTENT_COLUMNS, IntentRow, page_sql};
use crate::{Store, on_pool, store_error};

const INSERT_SIGNAL: &str = "INSERT INTO payment_signals (intent_id, attempt, kind, merchant_id, mode, key, card, \
     amount, currency, small, at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
     ON CONFLICT (intent_id, attempt, kind) DO NOTHING";

/// One kind's counts: `$1` merchant, `$2` mode, `$3` since, `$4` kind, `$5` key.
const COUNT_SIGNALS: &str = "SELECT COUNT(*), COUNT(DISTINCT card), \
     COALESCE(SUM(CASE WHEN declined = 1 THEN 1 ELSE 0 END), 0), \
     COALESCE(SUM(CASE WHEN small = 1 THEN 1 ELSE 0 END), 0) \
     FROM payment_signals WHERE merchant_id = $1 AND mode = $2 AND kind = $4 AND key = $5 AND at >= $3";

fn count(v: i64) -> u32 {
    u32::try_from(v.max(0)).unwrap_or(u32::MAX)
}

#[async_trait]
impl CheckoutRepository for Store {
    async fn record_and_count(
        &self,
        attempt: &AttemptSignals,
        since: Timestamp,
    ) -> Result<Vec<(SignalKind, WindowCounts)>, StoreError> {
        let postgres = matches!(self.backend, crate::Backend::Postgres(_));
        // Lock names in one order for every attempt, so two attempts never wait for each other
        // in a cycle.
        let mut keys: Vec<&(SignalKind, String)> = attempt.keys.iter().collect();
        keys.sort();
        on_pool!(self, pool => async {
            let mut tx = pool.begin().await?;
            if postgres {
                // One attempt per key at a time: the lock is held until the commit, so the
                // next attempt of a key counts this one. (SQLite: the first insert takes the
                // database's write lock, with the same effect.)
                for (kind, key) in &keys {
                    let name = format!("{}|{}|{}|{key}", attempt.merchant.as_str(), attempt.mode.as_str(), kind.as_str());
                    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 14))")
                        .bind(name)
                        .execute(&mut *tx)
                        .await?;
                }
            }
            for (kind, key) in &keys {
                sqlx::query(INSERT_SIGNAL)
                    .bind(&attempt.intent)
                    .bind(i64::from(attempt.attempt))
                    .bind(kind.as_str())
                    .bind(attempt.merchant.as_str())
                    .bind(attempt.mode.as_str())
                    .bind(key)
                    .bind(&attempt.card)
                    .bind(attempt.amount)
                    .bind(&attempt.currency)
                    .bind(i32::from(attempt.small))
                    .bind(attempt.at.unix_millis())
                    .execute(&mut *tx)
                    .await?;
            }
            let mut counts = Vec::with_capacity(keys.len());
            for (kind, key) in &keys {
                let row: (i64, i64, i64, i64) = sqlx::query_as(COUNT_SIGNALS)
                    .bind(attempt.merchant.as_str())
                    .bind(attempt.mode.as_str())
                    .bind(since.unix_millis())
                    .bind(kind.as_str())
                    .bind(key)
                    .fetch_one(&mut *tx)
                    .await?;
                let window = WindowCounts {
                    attempts: count(row.0),
                    cards: count(row.1),
                    declines: count(row.2),
                    small: count(row.3),
                };
                counts.push((*kind, window));
            }
            tx.commit().await?;
            Ok::<_, sqlx::Error>(counts)
        }.await)
        .map_err(store_error)
    }

    async fn mark_declined(&self, intent: &str, attempt: u32) -> Result<(), StoreError> {
        on_pool!(self, pool => sqlx::query("UPDATE payment_signals SET declined = 1 WHERE intent_id = $1 AND attempt = $2")
            .bind(intent)
            .bind(i64::from(attempt))
            .execute(pool)
            .await
            .map(|_| ()))
        .map_err(store_error)
    }

    async fn set_fraud_decision(&self, intent: &str, decision: &str) -> Result<(), StoreError> {
        on_pool!(self, pool => sqlx::query("UPDATE payment_intents SET fraud = $2 WHERE id = $1")
            .bind(intent)
            .bind(decision)
            .execute(pool)
            .await
            .map(|_| ()))
        .map_err(store_error)
    }

    async fn customer_intents(&self, page: Page<'_>, customer: &str) -> Result<Vec<IntentRecord>, StoreError> {
        let sql = page_sql(INTENT_COLUMNS, "payment_intents", "AND customer = $5");
        let rows: Vec<IntentRow> = on_pool!(self, pool => sqlx::query_as(&sql)
            .bind(page.merchant.as_str())
            .bind(page.mode.as_str())
            .bind(page.starting_after)
            .bind(i64::from(page.limit))
            .bind(customer)
            .fetch_all(pool)
            .await)
        .map_err(store_error)?;
        rows.into_iter().map(IntentRecord::try_from).collect()
    }

    async fn purge_signals(&self, before: Timestamp, limit: u32) -> Result<u64, StoreError> {
        on_pool!(self, pool => sqlx::query(
            "DELETE FROM payment_signals WHERE (intent_id, attempt, kind) IN \
             (SELECT intent_id, attempt, kind FROM payment_signals WHERE at < $1 LIMIT $2)",
        )
        .bind(before.unix_millis())
        .bind(i64::from(limit))
        .execute(pool)
        .await
        .map(|r| r.rows_affected()))
        .map_err(store_error)
    }
}
