//! The checkout rules' storage on both backends: the fraud signals of each confirmation attempt,
//! the window counts the fraud rules read, the fraud decision kept on an intent, and a payment
//! intent created and confirmed in one transaction with its attempt's signals.
//!
//! An attempt's rows are inserted and its keys counted in one transaction that holds, per key,
//! a lock until it commits (PostgreSQL: a transaction-level advisory lock on the key; SQLite: the
//! database's write lock, taken by the transaction's first write). So racing attempts of a key
//! (on one node or several) are counted one after the other, each seeing every earlier one: a
//! limit of N lets exactly N attempts through in a window, whatever the concurrency. The locks,
//! the inserts and the counts are one statement each, whatever the number of keys.
//! Must never: count outside the transaction that inserted the attempt, or count an attempt twice
//! (the primary key `(intent_id, attempt, kind)` keeps a repeat out).

use async_trait::async_trait;
use strongroom_domain::StoreError;
use strongroom_domain::ports::checkout::{
    AttemptSignals, CheckoutRepository, CreateAndConfirm, CreateAndConfirmOutcome, PlanConfirm, SignalKind,
    WindowCounts,
};
use strongroom_domain::ports::payments::{IntentRecord, Page};
use strongroom_types::Timestamp;

use crate::outbox::write_messages;
use crate::payments::{
    INSERT_CALL, INTENT_COLUMNS, INTENT_PARAMS, IntentRow, bind_intent, insert_intent_in, insert_intent_sql,
    intent_json, page_sql,
};
use crate::{Store, on_pool, store_error};

/// The insert of an attempt's `n` signals (one row per key): `$1` intent, `$2` attempt, `$3`
/// merchant, `$4` mode, `$5` card, `$6` amount, `$7` currency, `$8` small, `$9` at, then kind and
/// key of each row.
fn insert_signals_sql(n: usize) -> String {
    let rows: Vec<String> =
        (0..n).map(|i| format!("($1, $2, ${}, $3, $4, ${}, $5, $6, $7, $8, $9)", 10 + 2 * i, 11 + 2 * i)).collect();
    format!(
        "INSERT INTO payment_signals (intent_id, attempt, kind, merchant_id, mode, key, card, amount, currency, \
         small, at) VALUES {} ON CONFLICT (intent_id, attempt, kind) DO NOTHING",
        rows.join(", ")
    )
}

/// The counts of `n` keys in one statement, one row per key in the order given (its position
/// first): `$1` merchant, `$2` mode, `$3` since, then kind and key of each.
fn count_signals_sql(n: usize) -> String {
    let parts: Vec<String> = (0..n)
        .map(|i| {
            format!(
                "SELECT CAST({i} AS BIGINT), COUNT(*), COUNT(DISTINCT card), \
                 COALESCE(SUM(CASE WHEN declined = 1 THEN 1 ELSE 0 END), 0), \
                 COALESCE(SUM(CASE WHEN small = 1 THEN 1 ELSE 0 END), 0) \
                 FROM payment_signals WHERE merchant_id = $1 AND mode = $2 AND kind = ${} AND key = ${} \
                 AND at >= $3",
                4 + 2 * i,
                5 + 2 * i
            )
        })
        .collect();
    parts.join(" UNION ALL ")
}

/// PostgreSQL: the transaction-level advisory locks of `n` keys, taken left to right in one
/// statement (`$1`…`$n`: the keys' names, sorted).
fn lock_keys_sql(n: usize) -> String {
    let locks: Vec<String> = (1..=n).map(|i| format!("pg_advisory_xact_lock(hashtextextended(${i}, 14))")).collect();
    format!("SELECT {}", locks.join(", "))
}

/// PostgreSQL: a new intent ([`insert_intent_sql`]'s `$1`…`$N`, N = [`INTENT_PARAMS`]), its
/// attempt's `n` signals and the locks of their keys in one statement: `$N+1` attempt, `$N+2`
/// merchant, `$N+3` mode, `$N+4` card, `$N+5` amount, `$N+6` currency, `$N+7` small, `$N+8` at,
/// then kind and key of each row, then the `n` keys' lock names in lock order (as
/// [`lock_keys_sql`]). The signals refer to the intent (PostgreSQL checks that at the end of the
/// statement); the count must follow in a statement of its own, whose snapshot then holds every
/// attempt committed before these locks were granted.
fn insert_intent_and_signals_pg_sql(n: usize) -> String {
    let p = |i: usize| INTENT_PARAMS + i;
    let rows: Vec<String> =
        (0..n).map(|i| format!("(CAST(${} AS TEXT), CAST(${} AS TEXT))", p(9 + 2 * i), p(10 + 2 * i))).collect();
    let locks: Vec<String> =
        (0..n).map(|i| format!("pg_advisory_xact_lock(hashtextextended(${}, 14))", p(9 + 2 * n + i))).collect();
    format!(
        "WITH i AS ({} RETURNING id), s AS (INSERT INTO payment_signals (intent_id, attempt, kind, merchant_id, mode, \
         key, card, amount, currency, small, at) SELECT i.id, CAST(${} AS BIGINT), k.kind, CAST(${} AS TEXT), \
         CAST(${} AS TEXT), k.key, CAST(${} AS TEXT), CAST(${} AS BIGINT), CAST(${} AS TEXT), CAST(${} AS INTEGER), \
         CAST(${} AS BIGINT) FROM i, (VALUES {}) AS k (kind, key) ON CONFLICT (intent_id, attempt, kind) DO NOTHING) \
         SELECT {}",
        insert_intent_sql(),
        p(1),
        p(2),
        p(3),
        p(4),
        p(5),
        p(6),
        p(7),
        p(8),
        rows.join(", "),
        locks.join(", ")
    )
}

/// The name of a key's advisory lock on PostgreSQL.
fn lock_name(attempt: &AttemptSignals, kind: SignalKind, key: &str) -> String {
    format!("{}|{}|{}|{key}", attempt.merchant.as_str(), attempt.mode.as_str(), kind.as_str())
}

/// Locks an order for a payment (`$1` order, `$2` the total the intent pays, `$3` when, `$4` the
/// currency): no row when its total changed since.
const LOCK_ORDER: &str =
    "UPDATE orders SET locked_at = COALESCE(locked_at, $3) WHERE id = $1 AND amount_total = $2 AND currency = $4";

/// The claim of a new intent (`$1` id, `$2` status and `$3` attempt it was inserted with; `$4`…`$8`
/// what it becomes), on SQLite.
const CLAIM_NEW_INTENT: &str = "UPDATE payment_intents SET status = $4, pending_operation = $5, attempt = $6, \
     fraud = $7, updated_at = $8 WHERE id = $1 AND status = $2 AND attempt = $3";

/// PostgreSQL: [`CLAIM_NEW_INTENT`] and the gateway call it records (`$9` key, `$10` operation,
/// `$11` amount, `$12` at) in one statement: the call is inserted only if the update changed the
/// intent, so the affected-row count (the call's) still decides.
const CLAIM_NEW_INTENT_WITH_CALL_PG: &str = "WITH claimed AS (UPDATE payment_intents SET status = $4, \
     pending_operation = $5, attempt = $6, fraud = $7, updated_at = $8 WHERE id = $1 AND status = $2 AND attempt = $3 \
     RETURNING id) INSERT INTO payment_gateway_calls (idempotency_key, intent_id, operation, amount, created_at) \
     SELECT CAST($9 AS TEXT), claimed.id, CAST($10 AS TEXT), CAST($11 AS BIGINT), CAST($12 AS BIGINT) FROM claimed";

/// The rows of [`count_signals_sql`] as each key's counts, in `keys`' order.
fn counts_in_order(rows: &[CountRow], keys: &[&(SignalKind, String)]) -> Vec<(SignalKind, WindowCounts)> {
    keys.iter()
        .enumerate()
        .map(|(position, (kind, _))| {
            let row = rows.iter().find(|row| usize::try_from(row.0).ok() == Some(position));
            let window = row.map_or_else(WindowCounts::default, |row| WindowCounts {
                attempts: count(row.1),
                cards: count(row.2),
                declines: count(row.3),
                small: count(row.4),
            });
            (*kind, window)
        })
        .collect()
}

/// A row of [`count_signals_sql`]: position, attempts, distinct cards, declines, small amounts.
type CountRow = (i64, i64, i64, i64, i64);

fn count(v: i64) -> u32 {
    u32::try_from(v.max(0)).unwrap_or(u32::MAX)
}

/// An attempt's keys in lock order: names in one order for every attempt, so two attempts never
/// wait for each other in a cycle.
fn sorted_keys(attempt: &AttemptSignals) -> Vec<&(SignalKind, String)> {
    let mut keys: Vec<&(SignalKind, String)> = attempt.keys.iter().collect();
    keys.sort();
    keys
}

/// Records `$attempt`'s signals and counts its `$keys` (sorted) since `$since` in transaction
/// `$tx`, under each key's lock (PostgreSQL with `$postgres`: advisory locks, taken first and in
/// `$keys`' order; SQLite: the database's write lock, which the transaction holds from its first
/// write); evaluates to the counts, in `$keys`' order. Three statements whatever the number of
/// keys; with `$insert` false the signals were inserted and their keys locked already
/// (PostgreSQL's create-and-confirm does both with the intent's insert): counting after the
/// locks is what makes the count exact.
macro_rules! record_and_count_in {
    ($tx:expr, $postgres:expr, $attempt:expr, $keys:expr, $since:expr) => {
        record_and_count_in!($tx, $postgres, $attempt, $keys, $since, true)
    };
    ($tx:expr, $postgres:expr, $attempt:expr, $keys:expr, $since:expr, $insert:expr) => {{
        let (attempt, keys) = ($attempt, $keys);
        if $postgres && !keys.is_empty() && $insert {
            // One attempt per key at a time: the locks are held until the commit, so the next
            // attempt of a key counts this one.
            let sql = lock_keys_sql(keys.len());
            let mut lock = sqlx::query(&sql);
            for (kind, key) in keys.iter() {
                lock = lock.bind(lock_name(attempt, *kind, key));
            }
            lock.execute(&mut *$tx).await?;
        }
        let mut counts = Vec::new();
        if !keys.is_empty() && $insert {
            let sql = insert_signals_sql(keys.len());
            let mut insert = sqlx::query(&sql)
                .bind(&attempt.intent)
                .bind(i64::from(attempt.attempt))
                .bind(attempt.merchant.as_str())
                .bind(attempt.mode.as_str())
                .bind(&attempt.card)
                .bind(attempt.amount)
                .bind(&attempt.currency)
                .bind(i32::from(attempt.small))
                .bind(attempt.at.unix_millis());
            for (kind, key) in keys.iter() {
                insert = insert.bind(kind.as_str()).bind(key);
            }
            insert.execute(&mut *$tx).await?;
        }
        if !keys.is_empty() {
            let sql = count_signals_sql(keys.len());
            let mut query = sqlx::query_as::<_, CountRow>(&sql)
                .bind(attempt.merchant.as_str())
                .bind(attempt.mode.as_str())
                .bind($since.unix_millis());
            for (kind, key) in keys.iter() {
                query = query.bind(kind.as_str()).bind(key);
            }
            let rows = query.fetch_all(&mut *$tx).await?;
            counts = counts_in_order(&rows, keys);
        }
        counts
    }};
}

/// SQLite with a file: [`CheckoutRepository::create_and_confirm`]'s transaction on the direct
/// writer's connection ([`crate::sqlite_direct::SqliteDirect::write_here`]), the same statements
/// as on sqlx's pool without a hop to sqlx's worker thread per statement while the write lock is
/// held; answers the outcome and whether to commit.
fn create_and_confirm_sqlite(
    tx: &rusqlite::Connection,
    write: &CreateAndConfirm<'_>,
    plan: &PlanConfirm<'_>,
    j: &crate::payments::IntentJson,
    keys: &[&(SignalKind, String)],
) -> Result<(CreateAndConfirmOutcome, bool), StoreError> {
    use crate::sqlite_direct::{execute_numbered, numbered, text};
    use rusqlite::params_from_iter;
    use rusqlite::types::Value;
    let failed = crate::sqlite_direct::sqlite_error;
    let execute = |sql: &str, values: Vec<Value>| execute_numbered(tx, sql, values);
    let intent = write.intent;
    execute(&insert_intent_sql(), crate::payments::intent_values(intent, j))?;
    let mut counts = Vec::new();
    if let Some((attempt, since)) = write.signals
        && !keys.is_empty()
    {
        let mut values: Vec<Value> = vec![
            attempt.intent.clone().into(),
            i64::from(attempt.attempt).into(),
            attempt.merchant.as_str().to_owned().into(),
            attempt.mode.as_str().to_owned().into(),
            attempt.card.clone().into(),
            attempt.amount.into(),
            attempt.currency.clone().into(),
            i64::from(attempt.small).into(),
            attempt.at.unix_millis().into(),
        ];
        for (kind, key) in keys {
            values.extend([kind.as_str().to_owned().into(), key.clone().into()]);
        }
        execute(&insert_signals_sql(keys.len()), values)?;
        let mut values: Vec<Value> = vec![
            attempt.merchant.as_str().to_owned().into(),
            attempt.mode.as_str().to_owned().into(),
            since.unix_millis().into(),
        ];
        for (kind, key) in keys {
            values.extend([kind.as_str().to_owned().into(), key.clone().into()]);
        }
        let rows: Vec<CountRow> = tx
            .prepare_cached(&numbered(&count_signals_sql(keys.len())))
            .and_then(|mut statement| {
                statement
                    .query_map(params_from_iter(values), |row| {
                        Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?, row.get(4)?))
                    })?
                    .collect()
            })
            .map_err(failed)?;
        counts = counts_in_order(&rows, keys);
    }
    let planned = plan(counts.as_slice())?;
    let fraud: Option<String> = planned
        .fraud
        .as_ref()
        .map(serde_json::to_string)
        .transpose()
        .map_err(|err| StoreError::Other(err.to_string()))?;
    match &planned.claim {
        Some(claim) => {
            let claimed = &claim.claimed;
            // The one statement that decides, as a claim's always does (here it cannot lose:
            // the intent is this transaction's own).
            let changed = execute(
                CLAIM_NEW_INTENT,
                vec![
                    intent.id.clone().into(),
                    intent.state.status().to_owned().into(),
                    i64::from(intent.attempt).into(),
                    claimed.state.status().to_owned().into(),
                    text(claimed.state.pending_operation()),
                    i64::from(claimed.attempt).into(),
                    text(fraud.as_deref()),
                    claimed.updated_at.unix_millis().into(),
                ],
            )?;
            if changed != 1 || claim.call.intent != intent.id {
                return Err(StoreError::Other("a new payment intent changed under its own transaction".into()));
            }
            if let Some((order, total)) = write.lock_order {
                let locked = execute(
                    LOCK_ORDER,
                    vec![
                        order.to_owned().into(),
                        total.into(),
                        claimed.updated_at.unix_millis().into(),
                        claimed.amount.currency().lowercase().into(),
                    ],
                )?;
                if locked == 0 {
                    return Ok((CreateAndConfirmOutcome::OrderChanged, false));
                }
            }
            execute(
                INSERT_CALL,
                vec![
                    claim.call.idempotency_key.clone().into(),
                    claim.call.intent.clone().into(),
                    claim.call.operation.to_owned().into(),
                    claim.call.amount.into(),
                    claim.call.at.unix_millis().into(),
                ],
            )?;
            crate::outbox::write_messages_sqlite(tx, &[write.created_events, &claim.events]).map_err(failed)?;
        }
        None => {
            if fraud.is_some() {
                execute(
                    "UPDATE payment_intents SET fraud = $2 WHERE id = $1",
                    vec![intent.id.clone().into(), text(fraud.as_deref())],
                )?;
            }
            crate::outbox::write_messages_sqlite(tx, &[write.created_events]).map_err(failed)?;
        }
    }
    Ok((CreateAndConfirmOutcome::Written(Box::new(planned)), true))
}

#[async_trait]
impl CheckoutRepository for Store {
    async fn record_and_count(
        &self,
        attempt: &AttemptSignals,
        since: Timestamp,
    ) -> Result<Vec<(SignalKind, WindowCounts)>, StoreError> {
        let _gate = self.sqlite_write_gate().await;
        let postgres = matches!(self.backend, crate::Backend::Postgres(_));
        let keys = sorted_keys(attempt);
        on_pool!(self, pool => async {
            let mut tx = pool.begin().await?;
            let counts = record_and_count_in!(tx, postgres, attempt, &keys, since);
            tx.commit().await?;
            Ok::<_, sqlx::Error>(counts)
        }.await)
        .map_err(store_error)
    }

    async fn create_and_confirm(
        &self,
        write: &CreateAndConfirm<'_>,
        plan: &PlanConfirm<'_>,
    ) -> Result<CreateAndConfirmOutcome, StoreError> {
        let postgres = matches!(self.backend, crate::Backend::Postgres(_));
        let intent = write.intent;
        let j = intent_json(intent)?;
        let keys = write.signals.map(|(attempt, _)| sorted_keys(attempt)).unwrap_or_default();
        if let Some(direct) = &self.direct {
            return direct.write_here(|tx| create_and_confirm_sqlite(tx, write, plan, &j, &keys)).await;
        }
        let _gate = self.sqlite_write_gate().await;
        on_pool!(self, pool => async {
            let mut tx = pool.begin().await?;
            // On SQLite this first write takes the write lock, which then serializes the counting
            // below as PostgreSQL's advisory locks do (the signals' rows refer to the intent, so
            // it comes first).
            let counts = match write.signals {
                Some((attempt, since)) if postgres && !keys.is_empty() => {
                    // One round trip for the intent, its signals and their keys' locks; the count
                    // follows in a statement of its own, so it is as exact as ever.
                    let sql = insert_intent_and_signals_pg_sql(keys.len());
                    let mut insert = bind_intent!(sqlx::query(&sql), intent, j)
                        .bind(i64::from(attempt.attempt))
                        .bind(attempt.merchant.as_str())
                        .bind(attempt.mode.as_str())
                        .bind(&attempt.card)
                        .bind(attempt.amount)
                        .bind(&attempt.currency)
                        .bind(i32::from(attempt.small))
                        .bind(attempt.at.unix_millis());
                    for (kind, key) in &keys {
                        insert = insert.bind(kind.as_str()).bind(key);
                    }
                    for (kind, key) in &keys {
                        insert = insert.bind(lock_name(attempt, *kind, key));
                    }
                    insert.execute(&mut *tx).await?;
                    record_and_count_in!(tx, postgres, attempt, &keys, since, false)
                }
                Some((attempt, since)) => {
                    insert_intent_in!(tx, intent, j);
                    record_and_count_in!(tx, postgres, attempt, &keys, since)
                }
                None => {
                    insert_intent_in!(tx, intent, j);
                    Vec::new()
                }
            };
            let planned = match plan(counts.as_slice()) {
                Ok(planned) => planned,
                Err(err) => {
                    tx.rollback().await?;
                    return Ok(Err(err));
                }
            };
            let fraud = match planned.fraud.as_ref().map(serde_json::to_string).transpose() {
                Ok(fraud) => fraud,
                Err(err) => {
                    tx.rollback().await?;
                    return Ok(Err(StoreError::Other(err.to_string())));
                }
            };
            match &planned.claim {
                Some(claim) => {
                    let claimed = &claim.claimed;
                    // The one statement that decides, as a claim's always does (here it cannot
                    // lose: the intent is this transaction's own); on PostgreSQL it records the
                    // gateway call too.
                    let claim_sql = if postgres { CLAIM_NEW_INTENT_WITH_CALL_PG } else { CLAIM_NEW_INTENT };
                    let mut claim_query = sqlx::query(claim_sql)
                        .bind(&intent.id)
                        .bind(intent.state.status())
                        .bind(i64::from(intent.attempt))
                        .bind(claimed.state.status())
                        .bind(claimed.state.pending_operation())
                        .bind(i64::from(claimed.attempt))
                        .bind(fraud.as_deref())
                        .bind(claimed.updated_at.unix_millis());
                    if postgres {
                        claim_query = claim_query
                            .bind(&claim.call.idempotency_key)
                            .bind(claim.call.operation)
                            .bind(claim.call.amount)
                            .bind(claim.call.at.unix_millis());
                    }
                    let changed = claim_query.execute(&mut *tx).await?.rows_affected();
                    if changed != 1 || claim.call.intent != intent.id {
                        tx.rollback().await?;
                        return Ok(Err(StoreError::Other("a new payment intent changed under its own transaction".into())));
                    }
                    if let Some((order, total)) = write.lock_order {
                        let locked = sqlx::query(LOCK_ORDER)
                        .bind(order)
                        .bind(total)
                        .bind(claimed.updated_at.unix_millis())
                        .bind(claimed.amount.currency().lowercase())
                        .execute(&mut *tx)
                        .await?
                        .rows_affected();
                        if locked == 0 {
                            tx.rollback().await?;
                            return Ok(Ok(CreateAndConfirmOutcome::OrderChanged));
                        }
                    }
                    if !postgres {
                        sqlx::query(INSERT_CALL)
                            .bind(&claim.call.idempotency_key)
                            .bind(&claim.call.intent)
                            .bind(claim.call.operation)
                            .bind(claim.call.amount)
                            .bind(claim.call.at.unix_millis())
                            .execute(&mut *tx)
                            .await?;
                    }
                    write_messages!(tx, write.created_events, &claim.events);
                }
                None => {
                    if fraud.is_some() {
                        sqlx::query("UPDATE payment_intents SET fraud = $2 WHERE id = $1")
                            .bind(&intent.id)
                            .bind(fraud.as_deref())
                            .execute(&mut *tx)
                            .await?;
                    }
                    write_messages!(tx, write.created_events);
                }
            }
            tx.commit().await?;
            Ok::<_, sqlx::Error>(Ok(CreateAndConfirmOutcome::Written(Box::new(planned))))
        }.await)
        .map_err(store_error)?
    }

    async fn mark_declined(&self, intent: &str, attempt: u32) -> Result<(), StoreError> {
        let _gate = self.sqlite_write_gate().await;
        on_pool!(self, pool => sqlx::query(
            "UPDATE payment_signals SET declined = 1 WHERE intent_id = $1 AND attempt = \
             (SELECT MAX(attempt) FROM payment_signals WHERE intent_id = $1 AND attempt <= $2)")
            .bind(intent)
            .bind(i64::from(attempt))
            .execute(pool)
            .await
            .map(|_| ()))
        .map_err(store_error)
    }

    async fn attempt_client(&self, intent: &str, attempt: u32) -> Result<(Option<String>, Option<String>), StoreError> {
        let rows: Vec<(String, String)> = on_pool!(self, pool => sqlx::query_as(
            "SELECT kind, key FROM payment_signals WHERE intent_id = $1 AND kind IN ('ip', 'device') AND attempt = \
             (SELECT MAX(attempt) FROM payment_signals WHERE intent_id = $1 AND attempt <= $2)")
            .bind(intent)
            .bind(i64::from(attempt))
            .fetch_all(pool)
            .await)
        .map_err(store_error)?;
        let of = |kind: &str| rows.iter().find(|(k, _)| k == kind).map(|(_, key)| key.clone());
        Ok((of("ip"), of("device")))
    }

    async fn set_fraud_decision(&self, intent: &str, decision: &str) -> Result<(), StoreError> {
        let _gate = self.sqlite_write_gate().await;
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
