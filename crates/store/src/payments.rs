//! Payments on both backends: orders and their versions, payment intents, the gateway calls
//! recorded before they are made, refunds, and the sandbox gateway's ledger.
//!
//! Every transaction starts with its deciding write (the conditional update), so on SQLite it
//! takes the write lock before it reads anything and on PostgreSQL a racing update waits for the
//! row and re-checks its condition: of many racers exactly the ones the rule allows win.
//! Must never: decide an "only if" by a read followed by a write, or commit a change without
//! the outbox messages that report it.

use async_trait::async_trait;
use sqlx::FromRow;
use strongroom_domain::StoreError;
use strongroom_domain::merchants::MerchantId;
use strongroom_domain::modes::Mode;
use strongroom_domain::outbox::OutboxMessage;
use strongroom_domain::payments::state::{CaptureMethod, State};
use strongroom_domain::ports::payments::{
    AmendOutcome, GatewayCallRecord, IntentRecord, IntentTransition, LedgerEntry, OpenGatewayCall, OrderRecord, Page,
    PaymentsRepository, RefundRecord, SandboxChallenge, SandboxLedger, SavedCardRecord, TransitionOutcome,
};
use strongroom_types::{Currency, Money, Timestamp};

use crate::ledger_writer::{INSERT_ENTRY, LedgerWriter, Sink};
use crate::outbox::write_messages;
use crate::{Store, on_pool, store_error};

fn corrupt(what: &str) -> StoreError {
    StoreError::Other(format!("stored {what} is not valid"))
}

pub(crate) fn money(amount: i64, currency: &str) -> Result<Money, StoreError> {
    let currency = Currency::parse(currency).map_err(|_| corrupt("currency"))?;
    Money::new(amount, currency).map_err(|_| corrupt("amount"))
}

pub(crate) fn mode(text: &str) -> Result<Mode, StoreError> {
    Mode::parse(text).ok_or_else(|| corrupt("mode"))
}

pub(crate) fn merchant(text: &str) -> Result<MerchantId, StoreError> {
    MerchantId::parse(text).map_err(|_| corrupt("merchant id"))
}

fn json<T: serde::Serialize>(value: Option<&T>) -> Result<Option<String>, StoreError> {
    value.map(|v| serde_json::to_string(v).map_err(|e| StoreError::Other(e.to_string()))).transpose()
}

fn parse_json<T: serde::de::DeserializeOwned>(text: Option<&str>, what: &str) -> Result<Option<T>, StoreError> {
    text.map(|t| serde_json::from_str(t).map_err(|_| corrupt(what))).transpose()
}

fn to_u32(v: i64) -> u32 {
    u32::try_from(v.max(0)).unwrap_or(u32::MAX)
}

#[derive(FromRow)]
struct OrderRow {
    id: String,
    merchant_id: String,
    mode: String,
    version: i64,
    currency: String,
    amount_total: i64,
    body: String,
    customer: Option<String>,
    locked_at: Option<i64>,
    created_at: i64,
    updated_at: i64,
}

const ORDER_COLUMNS: &str =
    "id, merchant_id, mode, version, currency, amount_total, body, customer, locked_at, created_at, updated_at";

impl TryFrom<OrderRow> for OrderRecord {
    type Error = StoreError;
    fn try_from(row: OrderRow) -> Result<Self, StoreError> {
        Ok(OrderRecord {
            merchant: merchant(&row.merchant_id)?,
            mode: mode(&row.mode)?,
            version: to_u32(row.version),
            total: money(row.amount_total, &row.currency)?,
            id: row.id,
            body: row.body,
            customer: row.customer,
            locked_at: row.locked_at.map(Timestamp::from_unix_millis),
            created_at: Timestamp::from_unix_millis(row.created_at),
            updated_at: Timestamp::from_unix_millis(row.updated_at),
        })
    }
}

#[derive(FromRow)]
pub(crate) struct IntentRow {
    id: String,
    merchant_id: String,
    mode: String,
    amount: i64,
    currency: String,
    order_id: Option<String>,
    customer: Option<String>,
    payment_method: Option<String>,
    capture_method: String,
    status: String,
    pending_operation: Option<String>,
    attempt: i64,
    amount_capturable: i64,
    amount_received: i64,
    amount_refunded: i64,
    last_payment_error: Option<String>,
    next_action: Option<String>,
    card: Option<String>,
    gateway: String,
    gateway_reference: Option<String>,
    description: String,
    metadata: Option<String>,
    cancellation_reason: Option<String>,
    canceled_at: Option<i64>,
    created_at: i64,
    updated_at: i64,
    fraud: Option<String>,
    card_on_file: Option<String>,
}

pub(crate) const INTENT_COLUMNS: &str = "id, merchant_id, mode, amount, currency, order_id, customer, payment_method, \
     capture_method, status, pending_operation, attempt, amount_capturable, amount_received, amount_refunded, \
     last_payment_error, next_action, card, gateway, gateway_reference, description, metadata, cancellation_reason, \
     canceled_at, created_at, updated_at, fraud, card_on_file";

impl TryFrom<IntentRow> for IntentRecord {
    type Error = StoreError;
    fn try_from(row: IntentRow) -> Result<Self, StoreError> {
        Ok(IntentRecord {
            merchant: merchant(&row.merchant_id)?,
            mode: mode(&row.mode)?,
            amount: money(row.amount, &row.currency)?,
            capture_method: CaptureMethod::parse(&row.capture_method).ok_or_else(|| corrupt("capture method"))?,
            state: State::from_stored(&row.status, row.pending_operation.as_deref())
                .ok_or_else(|| corrupt("intent status"))?,
            attempt: to_u32(row.attempt),
            last_payment_error: parse_json(row.last_payment_error.as_deref(), "payment error")?,
            next_action: parse_json(row.next_action.as_deref(), "next action")?,
            card: parse_json(row.card.as_deref(), "card summary")?,
            fraud: parse_json(row.fraud.as_deref(), "fraud decision")?,
            card_on_file: parse_json(row.card_on_file.as_deref(), "card on file")?,
            id: row.id,
            order: row.order_id,
            customer: row.customer,
            payment_method: row.payment_method,
            amount_capturable: row.amount_capturable,
            amount_received: row.amount_received,
            amount_refunded: row.amount_refunded,
            gateway: row.gateway,
            gateway_reference: row.gateway_reference,
            description: row.description,
            metadata: row.metadata,
            cancellation_reason: row.cancellation_reason,
            canceled_at: row.canceled_at.map(Timestamp::from_unix_millis),
            created_at: Timestamp::from_unix_millis(row.created_at),
            updated_at: Timestamp::from_unix_millis(row.updated_at),
        })
    }
}

#[derive(FromRow)]
struct RefundRow {
    id: String,
    merchant_id: String,
    mode: String,
    payment_intent: String,
    amount: i64,
    currency: String,
    reason: Option<String>,
    status: String,
    failure_reason: Option<String>,
    gateway_reference: Option<String>,
    metadata: Option<String>,
    created_at: i64,
    updated_at: i64,
}

const REFUND_COLUMNS: &str = "id, merchant_id, mode, payment_intent, amount, currency, reason, status, \
     failure_reason, gateway_reference, metadata, created_at, updated_at";

impl TryFrom<RefundRow> for RefundRecord {
    type Error = StoreError;
    fn try_from(row: RefundRow) -> Result<Self, StoreError> {
        Ok(RefundRecord {
            merchant: merchant(&row.merchant_id)?,
            mode: mode(&row.mode)?,
            amount: money(row.amount, &row.currency)?,
            id: row.id,
            payment_intent: row.payment_intent,
            reason: row.reason,
            status: row.status,
            failure_reason: row.failure_reason,
            gateway_reference: row.gateway_reference,
            metadata: row.metadata,
            created_at: Timestamp::from_unix_millis(row.created_at),
            updated_at: Timestamp::from_unix_millis(row.updated_at),
        })
    }
}

/// The JSON columns of an intent.
pub(crate) struct IntentJson {
    pub(crate) error: Option<String>,
    pub(crate) action: Option<String>,
    pub(crate) card: Option<String>,
    pub(crate) fraud: Option<String>,
    pub(crate) card_on_file: Option<String>,
}

pub(crate) fn intent_json(intent: &IntentRecord) -> Result<IntentJson, StoreError> {
    Ok(IntentJson {
        error: json(intent.last_payment_error.as_ref())?,
        action: json(intent.next_action.as_ref())?,
        card: json(intent.card.as_ref())?,
        fraud: json(intent.fraud.as_ref())?,
        card_on_file: json(intent.card_on_file.as_ref())?,
    })
}

/// How many parameters [`bind_intent!`] binds: one per column of [`INTENT_COLUMNS`].
pub(crate) const INTENT_PARAMS: usize = 28;

/// The insert of an intent's [`INTENT_COLUMNS`] as `$1`…`$28` (bound by [`bind_intent!`]).
pub(crate) fn insert_intent_sql() -> String {
    format!(
        "INSERT INTO payment_intents ({INTENT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, \
         $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24, $25, $26, $27, $28)"
    )
}

/// Inserts `$intent` (with its JSON columns `$j`, from [`intent_json`]) in transaction `$tx`.
macro_rules! insert_intent_in {
    ($tx:expr, $intent:expr, $j:expr) => {
        $crate::payments::bind_intent!(sqlx::query(&$crate::payments::insert_intent_sql()), $intent, $j)
            .execute(&mut *$tx)
            .await?;
    };
}
pub(crate) use insert_intent_in;

/// `$query` with `$intent`'s [`INTENT_COLUMNS`] bound as its next [`INTENT_PARAMS`] parameters.
macro_rules! bind_intent {
    ($query:expr, $intent:expr, $j:expr) => {
        $query
            .bind(&$intent.id)
            .bind($intent.merchant.as_str())
            .bind($intent.mode.as_str())
            .bind($intent.amount.minor())
            .bind($intent.amount.currency().lowercase())
            .bind($intent.order.as_deref())
            .bind($intent.customer.as_deref())
            .bind($intent.payment_method.as_deref())
            .bind($intent.capture_method.as_str())
            .bind($intent.state.status())
            .bind($intent.state.pending_operation())
            .bind(i64::from($intent.attempt))
            .bind($intent.amount_capturable)
            .bind($intent.amount_received)
            .bind($intent.amount_refunded)
            .bind($j.error.as_deref())
            .bind($j.action.as_deref())
            .bind($j.card.as_deref())
            .bind(&$intent.gateway)
            .bind($intent.gateway_reference.as_deref())
            .bind(&$intent.description)
            .bind($intent.metadata.as_deref())
            .bind($intent.cancellation_reason.as_deref())
            .bind($intent.canceled_at.map(Timestamp::unix_millis))
            .bind($intent.created_at.unix_millis())
            .bind($intent.updated_at.unix_millis())
            .bind($j.fraud.as_deref())
            .bind($j.card_on_file.as_deref())
    };
}
pub(crate) use bind_intent;

/// An intent's [`INTENT_COLUMNS`] as SQLite values, in [`bind_intent!`]'s order (for rusqlite).
pub(crate) fn intent_values(intent: &IntentRecord, j: &IntentJson) -> Vec<rusqlite::types::Value> {
    use crate::sqlite_direct::text;
    use rusqlite::types::Value;
    vec![
        intent.id.clone().into(),
        intent.merchant.as_str().to_owned().into(),
        intent.mode.as_str().to_owned().into(),
        intent.amount.minor().into(),
        intent.amount.currency().lowercase().into(),
        text(intent.order.as_deref()),
        text(intent.customer.as_deref()),
        text(intent.payment_method.as_deref()),
        intent.capture_method.as_str().to_owned().into(),
        intent.state.status().to_owned().into(),
        text(intent.state.pending_operation()),
        i64::from(intent.attempt).into(),
        intent.amount_capturable.into(),
        intent.amount_received.into(),
        intent.amount_refunded.into(),
        text(j.error.as_deref()),
        text(j.action.as_deref()),
        text(j.card.as_deref()),
        intent.gateway.clone().into(),
        text(intent.gateway_reference.as_deref()),
        intent.description.clone().into(),
        text(intent.metadata.as_deref()),
        text(intent.cancellation_reason.as_deref()),
        intent.canceled_at.map_or(Value::Null, |at| Value::Integer(at.unix_millis())),
        intent.created_at.unix_millis().into(),
        intent.updated_at.unix_millis().into(),
        text(j.fraud.as_deref()),
        text(j.card_on_file.as_deref()),
    ]
}

pub(crate) const INSERT_CALL: &str = "INSERT INTO payment_gateway_calls (idempotency_key, intent_id, operation, amount, created_at) \
     VALUES ($1, $2, $3, $4, $5)";
const ANSWER_CALL: &str =
    "UPDATE payment_gateway_calls SET outcome = $2, answered_at = $3 WHERE idempotency_key = $1 AND outcome IS NULL";

/// `$query` with [`TRANSITION_UPDATE`]'s `$1`…`$18` bound for the move from `$before` to `$after`
/// (`$j`: `$after`'s JSON columns).
macro_rules! bind_transition {
    ($query:expr, $before:expr, $after:expr, $j:expr) => {
        $query
            .bind(&$before.id)
            .bind($before.state.status())
            .bind($before.state.pending_operation().unwrap_or(""))
            .bind($after.state.status())
            .bind($after.state.pending_operation())
            .bind(i64::from($after.attempt))
            .bind($after.payment_method.as_deref())
            .bind($after.amount_capturable)
            .bind($after.amount_received)
            .bind($j.error.as_deref())
            .bind($j.action.as_deref())
            .bind($j.card.as_deref())
            .bind($after.gateway_reference.as_deref())
            .bind($after.cancellation_reason.as_deref())
            .bind($after.canceled_at.map(Timestamp::unix_millis))
            .bind($after.updated_at.unix_millis())
            .bind(i64::from($before.attempt))
            .bind($j.card_on_file.as_deref())
    };
}

/// The conditional update of a transition (`$1`…`$3` the state it was read in, `$17` its
/// attempt; `$4`…`$16` and `$18` what it becomes).
const TRANSITION_UPDATE: &str = "UPDATE payment_intents SET status = $4, pending_operation = $5, attempt = $6, \
     payment_method = $7, amount_capturable = $8, amount_received = $9, last_payment_error = $10, next_action = $11, \
     card = $12, gateway_reference = $13, cancellation_reason = $14, canceled_at = $15, updated_at = $16, \
     card_on_file = $18 WHERE id = $1 AND status = $2 AND COALESCE(pending_operation, '') = $3 AND attempt = $17";

/// SQLite with a file: a transition that claims no saved card or order, on the direct writer's
/// connection ([`crate::sqlite_direct::SqliteDirect::write_here`]): the same statements as on
/// sqlx's pool without a hop to sqlx's worker thread per statement while the write lock is held.
fn transition_sqlite(
    tx: &rusqlite::Connection,
    t: &IntentTransition<'_>,
    j: &IntentJson,
) -> Result<(TransitionOutcome, bool), StoreError> {
    use crate::sqlite_direct::text;
    use rusqlite::types::Value;
    let failed = crate::sqlite_direct::sqlite_error;
    let execute = |sql: &str, values: Vec<Value>| crate::sqlite_direct::execute_numbered(tx, sql, values);
    let (before, after) = (t.before, t.after);
    // The one statement that decides: only from the state (and attempt) it was read in.
    let changed = execute(
        TRANSITION_UPDATE,
        vec![
            before.id.clone().into(),
            before.state.status().to_owned().into(),
            before.state.pending_operation().unwrap_or("").to_owned().into(),
            after.state.status().to_owned().into(),
            text(after.state.pending_operation()),
            i64::from(after.attempt).into(),
            text(after.payment_method.as_deref()),
            after.amount_capturable.into(),
            after.amount_received.into(),
            text(j.error.as_deref()),
            text(j.action.as_deref()),
            text(j.card.as_deref()),
            text(after.gateway_reference.as_deref()),
            text(after.cancellation_reason.as_deref()),
            after.canceled_at.map_or(Value::Null, |at| Value::Integer(at.unix_millis())),
            after.updated_at.unix_millis().into(),
            i64::from(before.attempt).into(),
            text(j.card_on_file.as_deref()),
        ],
    )?;
    if changed == 0 {
        return Ok((TransitionOutcome::Stale, false));
    }
    if let Some(call) = t.call {
        execute(
            INSERT_CALL,
            vec![
                call.idempotency_key.clone().into(),
                call.intent.clone().into(),
                call.operation.to_owned().into(),
                call.amount.into(),
                call.at.unix_millis().into(),
            ],
        )?;
    }
    if let Some((key, outcome)) = t.answered {
        execute(
            ANSWER_CALL,
            vec![key.to_owned().into(), outcome.to_owned().into(), after.updated_at.unix_millis().into()],
        )?;
    }
    crate::outbox::write_messages_sqlite(tx, &[t.events]).map_err(failed)?;
    Ok((TransitionOutcome::Done, true))
}

/// PostgreSQL: a transition that claims no saved card or order, as one statement (no `BEGIN` and
/// `COMMIT` round trips): the intent's conditional update decides, and the gateway call's record
/// or answer and the outbox messages are written only when it changed the row (`$1`…`$18` as in
/// the transaction's update; `$19`…`$22` the call made, `$23`…`$24` the call answered, `$25`…`$33`
/// the messages).
static TRANSITION_PG: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "WITH t AS ({TRANSITION_UPDATE} RETURNING id), \
         c AS (INSERT INTO payment_gateway_calls (idempotency_key, intent_id, operation, amount, created_at) \
           SELECT CAST($19 AS TEXT), t.id, CAST($20 AS TEXT), CAST($21 AS BIGINT), CAST($22 AS BIGINT) FROM t \
           WHERE $19 IS NOT NULL), \
         a AS (UPDATE payment_gateway_calls SET outcome = $24, answered_at = $16 \
           WHERE idempotency_key = $23 AND outcome IS NULL AND EXISTS (SELECT 1 FROM t)), \
         o AS (INSERT INTO outbox (id, event_id, merchant_id, channel, destination, event_type, payload, \
           created_at, next_attempt_at) SELECT m.* FROM UNNEST($25::text[], $26::text[], $27::text[], \
           $28::text[], $29::text[], $30::text[], $31::bytea[], $32::bigint[], $33::bigint[]) AS m \
           WHERE EXISTS (SELECT 1 FROM t)) \
         SELECT COUNT(*) FROM t"
    )
});

/// Runs [`TRANSITION_PG`] for `t` (`j`: its `after`'s JSON columns).
async fn transition_in_one_statement(
    pool: &sqlx::PgPool,
    t: &IntentTransition<'_>,
    j: &IntentJson,
) -> Result<TransitionOutcome, sqlx::Error> {
    let (before, after) = (t.before, t.after);
    let query = bind_transition!(sqlx::query(&TRANSITION_PG), before, after, j)
        .bind(t.call.map(|c| c.idempotency_key.as_str()))
        .bind(t.call.map(|c| c.operation))
        .bind(t.call.map(|c| c.amount))
        .bind(t.call.map(|c| c.at.unix_millis()))
        .bind(t.answered.map(|(key, _)| key))
        .bind(t.answered.map(|(_, outcome)| outcome));
    let row = crate::outbox::MessageColumns::of(&[t.events]).bind(query).fetch_one(pool).await?;
    let changed: i64 = sqlx::Row::try_get(&row, 0)?;
    Ok(if changed == 0 { TransitionOutcome::Stale } else { TransitionOutcome::Done })
}

/// One page of a data space's rows of `table`, newest first: `$1` merchant, `$2` mode, `$3` the id
/// the page starts after (or NULL), `$4` the limit; `filter` adds conditions on further parameters.
pub(crate) fn page_sql(columns: &str, table: &str, filter: &str) -> String {
    format!(
        "SELECT {columns} FROM {table} WHERE merchant_id = $1 AND mode = $2 AND ($3 IS NULL OR \
         (created_at, id) < (SELECT created_at, id FROM {table} WHERE id = $3)) {filter} \
         ORDER BY created_at DESC, id DESC LIMIT $4"
    )
}

#[async_trait]
impl PaymentsRepository for Store {
    async fn insert_order(&self, order: &OrderRecord, events: &[OutboxMessage]) -> Result<(), StoreError> {
        on_pool!(self, pool => async {
            let mut tx = pool.begin().await?;
            sqlx::query(
                "INSERT INTO orders (id, merchant_id, mode, version, currency, amount_total, body, customer, \
                 created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9)",
            )
            .bind(&order.id)
            .bind(order.merchant.as_str())
            .bind(order.mode.as_str())
            .bind(i64::from(order.version))
            .bind(order.total.currency().lowercase())
            .bind(order.total.minor())
            .bind(&order.body)
            .bind(order.customer.as_deref())
            .bind(order.created_at.unix_millis())
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "INSERT INTO order_versions (order_id, version, body, amount_total, created_at) VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(&order.id)
            .bind(i64::from(order.version))
            .bind(&order.body)
            .bind(order.total.minor())
            .bind(order.created_at.unix_millis())
            .execute(&mut *tx)
            .await?;
            write_messages!(tx, events);
            tx.commit().await
        }.await)
        .map_err(store_error)
    }

    async fn order(&self, id: &str) -> Result<Option<OrderRecord>, StoreError> {
        let sql = format!("SELECT {ORDER_COLUMNS} FROM orders WHERE id = $1");
        let row: Option<OrderRow> =
            on_pool!(self, pool => sqlx::query_as(&sql).bind(id).fetch_optional(pool).await).map_err(store_error)?;
        row.map(OrderRecord::try_from).transpose()
    }

    async fn orders(&self, page: Page<'_>) -> Result<Vec<OrderRecord>, StoreError> {
        let sql = page_sql(ORDER_COLUMNS, "orders", "");
        let rows: Vec<OrderRow> = on_pool!(self, pool => sqlx::query_as(&sql)
            .bind(page.merchant.as_str())
            .bind(page.mode.as_str())
            .bind(page.starting_after)
            .bind(i64::from(page.limit))
            .fetch_all(pool)
            .await)
        .map_err(store_error)?;
        rows.into_iter().map(OrderRecord::try_from).collect()
    }

    async fn amend_order(
        &self,
        order: &OrderRecord,
        expected_version: u32,
        events: &[OutboxMessage],
    ) -> Result<AmendOutcome, StoreError> {
        on_pool!(self, pool => async {
            let mut tx = pool.begin().await?;
            let changed = sqlx::query(
                "UPDATE orders SET version = $3, currency = $4, amount_total = $5, body = $6, customer = $7, \
                 updated_at = $8 WHERE id = $1 AND version = $2 AND locked_at IS NULL",
            )
            .bind(&order.id)
            .bind(i64::from(expected_version))
            .bind(i64::from(order.version))
            .bind(order.total.currency().lowercase())
            .bind(order.total.minor())
            .bind(&order.body)
            .bind(order.customer.as_deref())
            .bind(order.updated_at.unix_millis())
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if changed == 0 {
                let locked: Option<Option<i64>> = sqlx::query_scalar("SELECT locked_at FROM orders WHERE id = $1")
                    .bind(&order.id)
                    .fetch_optional(&mut *tx)
                    .await?;
                tx.rollback().await?;
                return Ok(match locked {
                    Some(Some(_)) => AmendOutcome::Locked,
                    _ => AmendOutcome::Stale,
                });
            }
            sqlx::query(
                "INSERT INTO order_versions (order_id, version, body, amount_total, created_at) VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(&order.id)
            .bind(i64::from(order.version))
            .bind(&order.body)
            .bind(order.total.minor())
            .bind(order.updated_at.unix_millis())
            .execute(&mut *tx)
            .await?;
            write_messages!(tx, events);
            tx.commit().await?;
            Ok::<AmendOutcome, sqlx::Error>(AmendOutcome::Amended)
        }.await)
        .map_err(store_error)
    }

    async fn insert_intent(&self, intent: &IntentRecord, events: &[OutboxMessage]) -> Result<(), StoreError> {
        let _gate = self.sqlite_write_gate().await;
        let j = intent_json(intent)?;
        on_pool!(self, pool => async {
            let mut tx = pool.begin().await?;
            insert_intent_in!(tx, intent, j);
            write_messages!(tx, events);
            tx.commit().await
        }.await)
        .map_err(store_error)
    }

    async fn intent(&self, id: &str) -> Result<Option<IntentRecord>, StoreError> {
        let sql = format!("SELECT {INTENT_COLUMNS} FROM payment_intents WHERE id = $1");
        let row: Option<IntentRow> =
            on_pool!(self, pool => sqlx::query_as(&sql).bind(id).fetch_optional(pool).await).map_err(store_error)?;
        row.map(IntentRecord::try_from).transpose()
    }

    async fn intents(&self, page: Page<'_>) -> Result<Vec<IntentRecord>, StoreError> {
        let sql = page_sql(INTENT_COLUMNS, "payment_intents", "");
        let rows: Vec<IntentRow> = on_pool!(self, pool => sqlx::query_as(&sql)
            .bind(page.merchant.as_str())
            .bind(page.mode.as_str())
            .bind(page.starting_after)
            .bind(i64::from(page.limit))
            .fetch_all(pool)
            .await)
        .map_err(store_error)?;
        rows.into_iter().map(IntentRecord::try_from).collect()
    }

    async fn transition_intent(&self, t: &IntentTransition<'_>) -> Result<TransitionOutcome, StoreError> {
        let (before, after) = (t.before, t.after);
        let j = intent_json(after)?;
        let plain = t.use_saved_card.is_none() && t.save_card.is_none() && t.lock_order.is_none();
        if let Some(direct) = &self.direct
            && plain
        {
            return direct.write_here(|tx| transition_sqlite(tx, t, &j)).await;
        }
        if let crate::Backend::Postgres(pool) = &self.backend {
            let call_of_this_intent = t.call.is_none_or(|c| c.intent == before.id);
            if plain && call_of_this_intent && (t.call.is_none() || t.answered.is_none()) {
                return transition_in_one_statement(pool, t, &j).await.map_err(store_error);
            }
        }
        let _gate = self.sqlite_write_gate().await;
        on_pool!(self, pool => async {
            let mut tx = pool.begin().await?;
            // The one statement that decides: only from the state (and attempt) it was read in.
            let changed = bind_transition!(sqlx::query(TRANSITION_UPDATE), before, after, j)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if changed == 0 {
                tx.rollback().await?;
                return Ok(TransitionOutcome::Stale);
            }
            if let Some(card) = t.use_saved_card {
                // The row lock a removal waits for: a removal committed first leaves nothing to claim.
                let claimed = sqlx::query(
                    "UPDATE saved_cards SET last_used_at = $2 WHERE id = $1 AND status = 'active'",
                )
                .bind(card)
                .bind(after.updated_at.unix_millis())
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if claimed == 0 {
                    tx.rollback().await?;
                    return Ok(TransitionOutcome::SavedCardRemoved);
                }
            }
            if let Some(card) = t.save_card {
                crate::saved_cards::insert_saved_card!(tx, card);
            }
            if let Some((order, total)) = t.lock_order {
                let locked = sqlx::query(
                    "UPDATE orders SET locked_at = COALESCE(locked_at, $3) WHERE id = $1 AND amount_total = $2 \
                     AND currency = $4",
                )
                .bind(order)
                .bind(total)
                .bind(after.updated_at.unix_millis())
                .bind(after.amount.currency().lowercase())
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if locked == 0 {
                    tx.rollback().await?;
                    return Ok(TransitionOutcome::OrderChanged);
                }
            }
            if let Some(call) = t.call {
                sqlx::query(INSERT_CALL)
                    .bind(&call.idempotency_key)
                    .bind(&call.intent)
                    .bind(call.operation)
                    .bind(call.amount)
                    .bind(call.at.unix_millis())
                    .execute(&mut *tx)
                    .await?;
            }
            if let Some((key, outcome)) = t.answered {
                sqlx::query(ANSWER_CALL)
                    .bind(key)
                    .bind(outcome)
                    .bind(after.updated_at.unix_millis())
                    .execute(&mut *tx)
                    .await?;
            }
            write_messages!(tx, t.events);
            tx.commit().await?;
            Ok::<TransitionOutcome, sqlx::Error>(TransitionOutcome::Done)
        }.await)
        .map_err(store_error)
    }

    async fn insert_refund(
        &self,
        refund: &RefundRecord,
        call: &GatewayCallRecord,
        events: &[OutboxMessage],
    ) -> Result<bool, StoreError> {
        let _gate = self.sqlite_write_gate().await;
        on_pool!(self, pool => async {
            let mut tx = pool.begin().await?;
            // The one statement that decides: refunded stays within received, however many race.
            let changed = sqlx::query(
                "UPDATE payment_intents SET amount_refunded = amount_refunded + $2, updated_at = $3 \
                 WHERE id = $1 AND status = 'succeeded' AND amount_refunded + $2 <= amount_received",
            )
            .bind(&refund.payment_intent)
            .bind(refund.amount.minor())
            .bind(refund.created_at.unix_millis())
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if changed == 0 {
                tx.rollback().await?;
                return Ok(false);
            }
            sqlx::query(&format!(
                "INSERT INTO refunds ({REFUND_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
            ))
            .bind(&refund.id)
            .bind(refund.merchant.as_str())
            .bind(refund.mode.as_str())
            .bind(&refund.payment_intent)
            .bind(refund.amount.minor())
            .bind(refund.amount.currency().lowercase())
            .bind(refund.reason.as_deref())
            .bind(&refund.status)
            .bind(refund.failure_reason.as_deref())
            .bind(refund.gateway_reference.as_deref())
            .bind(refund.metadata.as_deref())
            .bind(refund.created_at.unix_millis())
            .bind(refund.updated_at.unix_millis())
            .execute(&mut *tx)
            .await?;
            sqlx::query(INSERT_CALL)
                .bind(&call.idempotency_key)
                .bind(&call.intent)
                .bind(call.operation)
                .bind(call.amount)
                .bind(call.at.unix_millis())
                .execute(&mut *tx)
                .await?;
            write_messages!(tx, events);
            tx.commit().await?;
            Ok::<bool, sqlx::Error>(true)
        }.await)
        .map_err(store_error)
    }

    async fn settle_refund(
        &self,
        refund: &RefundRecord,
        call_outcome: (&str, &str),
        events: &[OutboxMessage],
    ) -> Result<bool, StoreError> {
        let _gate = self.sqlite_write_gate().await;
        on_pool!(self, pool => async {
            let mut tx = pool.begin().await?;
            let changed = sqlx::query(
                "UPDATE refunds SET status = $2, failure_reason = $3, gateway_reference = $4, updated_at = $5 \
                 WHERE id = $1 AND status = 'pending'",
            )
            .bind(&refund.id)
            .bind(&refund.status)
            .bind(refund.failure_reason.as_deref())
            .bind(refund.gateway_reference.as_deref())
            .bind(refund.updated_at.unix_millis())
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if changed == 0 {
                tx.rollback().await?;
                return Ok(false);
            }
            if refund.status == "failed" {
                sqlx::query(
                    "UPDATE payment_intents SET amount_refunded = amount_refunded - $2, updated_at = $3 WHERE id = $1",
                )
                .bind(&refund.payment_intent)
                .bind(refund.amount.minor())
                .bind(refund.updated_at.unix_millis())
                .execute(&mut *tx)
                .await?;
            }
            sqlx::query(ANSWER_CALL)
                .bind(call_outcome.0)
                .bind(call_outcome.1)
                .bind(refund.updated_at.unix_millis())
                .execute(&mut *tx)
                .await?;
            write_messages!(tx, events);
            tx.commit().await?;
            Ok::<bool, sqlx::Error>(true)
        }.await)
        .map_err(store_error)
    }

    async fn refund(&self, id: &str) -> Result<Option<RefundRecord>, StoreError> {
        let sql = format!("SELECT {REFUND_COLUMNS} FROM refunds WHERE id = $1");
        let row: Option<RefundRow> =
            on_pool!(self, pool => sqlx::query_as(&sql).bind(id).fetch_optional(pool).await).map_err(store_error)?;
        row.map(RefundRecord::try_from).transpose()
    }

    async fn refunds(&self, page: Page<'_>, payment_intent: Option<&str>) -> Result<Vec<RefundRecord>, StoreError> {
        let sql = page_sql(REFUND_COLUMNS, "refunds", "AND ($5 IS NULL OR payment_intent = $5)");
        let rows: Vec<RefundRow> = on_pool!(self, pool => sqlx::query_as(&sql)
            .bind(page.merchant.as_str())
            .bind(page.mode.as_str())
            .bind(page.starting_after)
            .bind(i64::from(page.limit))
            .bind(payment_intent)
            .fetch_all(pool)
            .await)
        .map_err(store_error)?;
        rows.into_iter().map(RefundRecord::try_from).collect()
    }

    async fn open_gateway_calls(
        &self,
        since: Timestamp,
        before: Timestamp,
        limit: u32,
    ) -> Result<Vec<OpenGatewayCall>, StoreError> {
        // Served by the index on (outcome, created_at).
        let rows: Vec<(String, String, String, i64, i64)> = on_pool!(self, pool => sqlx::query_as(
            "SELECT idempotency_key, intent_id, operation, amount, created_at FROM payment_gateway_calls \
             WHERE outcome IS NULL AND created_at >= $1 AND created_at < $2 ORDER BY created_at, idempotency_key LIMIT $3",
        )
        .bind(since.unix_millis())
        .bind(before.unix_millis())
        .bind(i64::from(limit))
        .fetch_all(pool)
        .await)
        .map_err(store_error)?;
        Ok(rows
            .into_iter()
            .map(|(idempotency_key, intent, operation, amount, at)| OpenGatewayCall {
                idempotency_key,
                intent,
                operation,
                amount,
                at: Timestamp::from_unix_millis(at),
            })
            .collect())
    }

    async fn saved_card(&self, id: &str) -> Result<Option<SavedCardRecord>, StoreError> {
        self.find_saved_card(id).await
    }

    async fn saved_cards(
        &self,
        page: Page<'_>,
        customer: Option<&str>,
        active_only: bool,
    ) -> Result<Vec<SavedCardRecord>, StoreError> {
        self.list_saved_cards(page, customer, active_only).await
    }

    async fn remove_saved_card(
        &self,
        card: &SavedCardRecord,
        at: Timestamp,
        by: &str,
        events: &[OutboxMessage],
    ) -> Result<bool, StoreError> {
        self.delete_saved_card(card, at, by, events).await
    }

    async fn close_gateway_call(
        &self,
        idempotency_key: &str,
        outcome: &str,
        at: Timestamp,
    ) -> Result<bool, StoreError> {
        let _gate = self.sqlite_write_gate().await;
        let changed = on_pool!(self, pool => sqlx::query(ANSWER_CALL)
            .bind(idempotency_key)
            .bind(outcome)
            .bind(at.unix_millis())
            .execute(pool)
            .await
            .map(|done| done.rows_affected()))
        .map_err(store_error)?;
        Ok(changed == 1)
    }
}

#[derive(FromRow)]
struct LedgerRow {
    idempotency_key: String,
    operation: String,
    reference: String,
    amount: i64,
    currency: String,
    outcome: String,
    decline_code: Option<String>,
    challenge: Option<String>,
    gateway_reference: String,
    created_at: i64,
    stored_credential: Option<String>,
    network_transaction_id: Option<String>,
}

impl From<LedgerRow> for LedgerEntry {
    fn from(row: LedgerRow) -> Self {
        LedgerEntry {
            idempotency_key: row.idempotency_key,
            operation: row.operation,
            reference: row.reference,
            amount: row.amount,
            currency: row.currency,
            outcome: row.outcome,
            decline_code: row.decline_code,
            challenge: row.challenge,
            gateway_reference: row.gateway_reference,
            stored_credential: row.stored_credential,
            network_transaction_id: row.network_transaction_id,
            at: Timestamp::from_unix_millis(row.created_at),
        }
    }
}

const LEDGER_COLUMNS: &str = "idempotency_key, operation, reference, amount, currency, outcome, decline_code, \
     challenge, gateway_reference, created_at, stored_credential, network_transaction_id";

#[derive(FromRow)]
struct SandboxChallengeRow {
    id: String,
    reference: String,
    status: String,
    created_at: i64,
}

impl From<SandboxChallengeRow> for SandboxChallenge {
    fn from(row: SandboxChallengeRow) -> Self {
        SandboxChallenge {
            id: row.id,
            reference: row.reference,
            status: row.status,
            at: Timestamp::from_unix_millis(row.created_at),
        }
    }
}

#[async_trait]
impl SandboxLedger for Store {
    async fn record_entry(&self, entry: &LedgerEntry) -> Result<(LedgerEntry, bool), StoreError> {
        let writer = self.ledger.get_or_init(|| match (&self.direct, &self.pg_writes) {
            (Some(direct), _) => Some(LedgerWriter::start(Sink::Sqlite(direct.clone()), 1)),
            (None, Some(lane)) => Some(LedgerWriter::start(Sink::Postgres(lane.clone()), 2)),
            (None, None) => None,
        });
        let inserted = match writer {
            Some(writer) => u64::from(writer.insert(entry.clone()).await?),
            None => on_pool!(self, pool => sqlx::query(INSERT_ENTRY)
                .bind(&entry.idempotency_key)
                .bind(&entry.operation)
                .bind(&entry.reference)
                .bind(entry.amount)
                .bind(&entry.currency)
                .bind(&entry.outcome)
                .bind(entry.decline_code.as_deref())
                .bind(entry.challenge.as_deref())
                .bind(&entry.gateway_reference)
                .bind(entry.at.unix_millis())
                .bind(entry.stored_credential.as_deref())
                .bind(entry.network_transaction_id.as_deref())
                .execute(pool)
                .await
                .map(|r| r.rows_affected()))
            .map_err(store_error)?,
        };
        if inserted == 1 {
            return Ok((entry.clone(), true));
        }
        let stored = self.ledger_entry(&entry.idempotency_key).await?.ok_or_else(|| corrupt("sandbox ledger entry"))?;
        Ok((stored, false))
    }

    async fn ledger_entry(&self, idempotency_key: &str) -> Result<Option<LedgerEntry>, StoreError> {
        let sql = format!("SELECT {LEDGER_COLUMNS} FROM sandbox_ledger WHERE idempotency_key = $1");
        let row: Option<LedgerRow> =
            on_pool!(self, pool => sqlx::query_as(&sql).bind(idempotency_key).fetch_optional(pool).await)
                .map_err(store_error)?;
        Ok(row.map(LedgerEntry::from))
    }

    async fn insert_sandbox_challenge(&self, challenge: &SandboxChallenge) -> Result<(), StoreError> {
        on_pool!(self, pool => sqlx::query(
                "INSERT INTO sandbox_challenges (id, reference, status, created_at) VALUES ($1, $2, $3, $4)",
            )
            .bind(&challenge.id)
            .bind(&challenge.reference)
            .bind(&challenge.status)
            .bind(challenge.at.unix_millis())
            .execute(pool)
            .await
            .map(drop))
        .map_err(store_error)
    }

    async fn sandbox_challenge(&self, id: &str) -> Result<Option<SandboxChallenge>, StoreError> {
        let row: Option<SandboxChallengeRow> = on_pool!(self, pool => sqlx::query_as(
                "SELECT id, reference, status, created_at FROM sandbox_challenges WHERE id = $1",
            )
            .bind(id)
            .fetch_optional(pool)
            .await)
        .map_err(store_error)?;
        Ok(row.map(SandboxChallenge::from))
    }

    async fn open_sandbox_challenge(&self, reference: &str) -> Result<Option<SandboxChallenge>, StoreError> {
        let row: Option<SandboxChallengeRow> = on_pool!(self, pool => sqlx::query_as(
                "SELECT id, reference, status, created_at FROM sandbox_challenges WHERE reference = $1 \
                 AND status <> 'consumed'",
            )
            .bind(reference)
            .fetch_optional(pool)
            .await)
        .map_err(store_error)?;
        Ok(row.map(SandboxChallenge::from))
    }

    async fn issued_network_transaction(&self, id: &str) -> Result<bool, StoreError> {
        let found: Option<i32> = on_pool!(self, pool => sqlx::query_scalar(
                "SELECT 1 FROM sandbox_ledger WHERE network_transaction_id = $1 LIMIT 1",
            )
            .bind(id)
            .fetch_optional(pool)
            .await)
        .map_err(store_error)?;
        Ok(found.is_some())
    }

    async fn set_sandbox_challenge(&self, id: &str, from: &str, to: &str) -> Result<bool, StoreError> {
        on_pool!(self, pool => sqlx::query("UPDATE sandbox_challenges SET status = $3 WHERE id = $1 AND status = $2")
            .bind(id)
            .bind(from)
            .bind(to)
            .execute(pool)
            .await
            .map(|r| r.rows_affected() == 1))
        .map_err(store_error)
    }
}
