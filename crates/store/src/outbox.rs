//! The outbox, webhook endpoints, job runs and the leader's heartbeat on both backends, and the
//! PostgreSQL leadership (a session advisory lock held on a connection of its own).
//! Must never: hand a leased message to a second claimer, or leave a multi-row change half done.

use async_trait::async_trait;
use sqlx::{Connection, FromRow};
use strongroom_domain::StoreError;
use strongroom_domain::jobs::{JobRecord, JobRepository, LeaderRecord, Leadership};
use strongroom_domain::merchants::MerchantId;
use strongroom_domain::modes::Mode;
use strongroom_domain::outbox::ports::{DeliveryRecord, EnabledEndpoint};
use strongroom_domain::outbox::{Channel, DeliveryResult, OutboxMessage, OutboxRepository, OutboxStats};
use strongroom_domain::webhooks::{EndpointRecord, WebhookRepository};
use strongroom_types::Timestamp;

use crate::{Store, on_pool, store_error};

fn corrupt(what: &str) -> StoreError {
    StoreError::Other(format!("stored {what} is not valid"))
}

fn to_u32(v: i64) -> u32 {
    u32::try_from(v.max(0)).unwrap_or(u32::MAX)
}

#[derive(FromRow)]
struct MessageRow {
    id: String,
    event_id: String,
    merchant_id: Option<String>,
    channel: String,
    destination: Option<String>,
    event_type: String,
    payload: Vec<u8>,
    created_at: i64,
    next_attempt_at: i64,
    attempts: i64,
}

impl TryFrom<MessageRow> for OutboxMessage {
    type Error = StoreError;
    fn try_from(row: MessageRow) -> Result<Self, StoreError> {
        Ok(OutboxMessage {
            id: row.id,
            event_id: row.event_id,
            merchant: row.merchant_id.map(|m| MerchantId::parse(&m)).transpose().map_err(|_| corrupt("merchant id"))?,
            channel: Channel::parse(&row.channel).ok_or_else(|| corrupt("outbox channel"))?,
            destination: row.destination,
            event_type: row.event_type,
            payload: row.payload,
            created_at: Timestamp::from_unix_millis(row.created_at),
            next_attempt_at: Timestamp::from_unix_millis(row.next_attempt_at),
            attempts: to_u32(row.attempts),
        })
    }
}

#[derive(FromRow)]
struct DeliveryRow {
    id: String,
    event_id: String,
    event_type: String,
    status: String,
    attempts: i64,
    created_at: i64,
    next_attempt_at: i64,
    last_attempt_at: Option<i64>,
    last_status_code: Option<i64>,
    last_latency_ms: Option<i64>,
    last_error: Option<String>,
    delivered_at: Option<i64>,
}

impl From<DeliveryRow> for DeliveryRecord {
    fn from(row: DeliveryRow) -> Self {
        DeliveryRecord {
            next_attempt_at: (row.status == "pending").then(|| Timestamp::from_unix_millis(row.next_attempt_at)),
            id: row.id,
            event_id: row.event_id,
            event_type: row.event_type,
            status: row.status,
            attempts: to_u32(row.attempts),
            created_at: Timestamp::from_unix_millis(row.created_at),
            last_attempt_at: row.last_attempt_at.map(Timestamp::from_unix_millis),
            last_status_code: row.last_status_code.and_then(|c| u16::try_from(c).ok()),
            last_latency_ms: row.last_latency_ms.map(to_u32),
            last_error: row.last_error,
            delivered_at: row.delivered_at.map(Timestamp::from_unix_millis),
        }
    }
}

/// Writes outbox messages on `$tx` (a transaction of either backend), from one or more lists: the
/// events of a change go in with the change. PostgreSQL takes them all in one statement; SQLite,
/// whose statements cost no round trip, one insert each.
macro_rules! write_messages {
    ($tx:expr, $($messages:expr),+) => {
        $crate::outbox::WriteMessages::write_messages(&mut *$tx, &[$(&$messages[..]),+]).await?
    };
}
pub(crate) use write_messages;

/// The insert of outbox messages on a connection of either backend (see [`write_messages!`]).
#[async_trait]
pub(crate) trait WriteMessages {
    /// Inserts every message of `lists`.
    async fn write_messages(&mut self, lists: &[&[OutboxMessage]]) -> Result<(), sqlx::Error>;
}

const INSERT_MESSAGE: &str = "INSERT INTO outbox (id, event_id, merchant_id, channel, destination, event_type, \
     payload, created_at, next_attempt_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)";

/// All of a change's messages in one round trip (`$1`…`$9`: arrays in [`INSERT_MESSAGE`]'s order).
pub(crate) const INSERT_MESSAGES_PG: &str = "INSERT INTO outbox (id, event_id, merchant_id, channel, destination, \
     event_type, payload, created_at, next_attempt_at) SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], \
     $4::text[], $5::text[], $6::text[], $7::bytea[], $8::bigint[], $9::bigint[])";

/// Outbox messages as the columns of [`INSERT_MESSAGES_PG`], for PostgreSQL's arrays.
#[derive(Default)]
pub(crate) struct MessageColumns {
    ids: Vec<String>,
    event_ids: Vec<String>,
    merchants: Vec<Option<String>>,
    channels: Vec<&'static str>,
    destinations: Vec<Option<String>>,
    event_types: Vec<String>,
    payloads: Vec<Vec<u8>>,
    created: Vec<i64>,
    next_attempts: Vec<i64>,
}

impl MessageColumns {
    /// The columns of every message of `lists`.
    pub(crate) fn of(lists: &[&[OutboxMessage]]) -> Self {
        let mut c = Self::default();
        for m in lists.iter().flat_map(|list| list.iter()) {
            c.ids.push(m.id.clone());
            c.event_ids.push(m.event_id.clone());
            c.merchants.push(m.merchant.as_ref().map(|x| x.as_str().to_owned()));
            c.channels.push(m.channel.as_str());
            c.destinations.push(m.destination.clone());
            c.event_types.push(m.event_type.clone());
            c.payloads.push(m.payload.clone());
            c.created.push(m.created_at.unix_millis());
            c.next_attempts.push(m.next_attempt_at.unix_millis());
        }
        c
    }

    /// Whether there is no message.
    pub(crate) fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Binds the nine arrays to `query`, in order.
    pub(crate) fn bind<'q>(
        self,
        query: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    ) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
        query
            .bind(self.ids)
            .bind(self.event_ids)
            .bind(self.merchants)
            .bind(self.channels)
            .bind(self.destinations)
            .bind(self.event_types)
            .bind(self.payloads)
            .bind(self.created)
            .bind(self.next_attempts)
    }
}

#[async_trait]
impl WriteMessages for sqlx::PgConnection {
    async fn write_messages(&mut self, lists: &[&[OutboxMessage]]) -> Result<(), sqlx::Error> {
        let columns = MessageColumns::of(lists);
        if columns.is_empty() {
            return Ok(());
        }
        columns.bind(sqlx::query(INSERT_MESSAGES_PG)).execute(self).await?;
        Ok(())
    }
}

/// Inserts every message of `lists` on a rusqlite transaction (SQLite's direct writer).
pub(crate) fn write_messages_sqlite(tx: &rusqlite::Connection, lists: &[&[OutboxMessage]]) -> rusqlite::Result<()> {
    let mut insert = tx.prepare_cached(INSERT_MESSAGE)?;
    for m in lists.iter().flat_map(|list| list.iter()) {
        insert.execute(rusqlite::params![
            m.id,
            m.event_id,
            m.merchant.as_ref().map(|x| x.as_str()),
            m.channel.as_str(),
            m.destination,
            m.event_type,
            m.payload,
            m.created_at.unix_millis(),
            m.next_attempt_at.unix_millis(),
        ])?;
    }
    Ok(())
}

#[async_trait]
impl WriteMessages for sqlx::SqliteConnection {
    async fn write_messages(&mut self, lists: &[&[OutboxMessage]]) -> Result<(), sqlx::Error> {
        for m in lists.iter().flat_map(|list| list.iter()) {
            sqlx::query(INSERT_MESSAGE)
                .bind(&m.id)
                .bind(&m.event_id)
                .bind(m.merchant.as_ref().map(|x| x.as_str()))
                .bind(m.channel.as_str())
                .bind(m.destination.as_deref())
                .bind(&m.event_type)
                .bind(&m.payload)
                .bind(m.created_at.unix_millis())
                .bind(m.next_attempt_at.unix_millis())
                .execute(&mut *self)
                .await?;
        }
        Ok(())
    }
}

/// Runs one conditional statement and, when it changed a row, writes `$messages` in the same
/// transaction; evaluates to the affected-row count.
macro_rules! change_with_messages {
    ($store:expr, $query:expr, $messages:expr) => {
        $crate::on_pool!($store, pool => async {
            let mut tx = pool.begin().await?;
            let changed = $query.execute(&mut *tx).await?.rows_affected();
            if changed > 0 {
                $crate::outbox::write_messages!(tx, $messages);
            }
            tx.commit().await?;
            Ok::<u64, sqlx::Error>(changed)
        }.await)
        .map_err($crate::store_error)
    };
}
pub(crate) use change_with_messages;

const MESSAGE_COLUMNS: &str =
    "id, event_id, merchant_id, channel, destination, event_type, payload, created_at, next_attempt_at, attempts";

#[async_trait]
impl OutboxRepository for Store {
    async fn enqueue(&self, messages: &[OutboxMessage]) -> Result<(), StoreError> {
        on_pool!(self, pool => async {
            let mut tx = pool.begin().await?;
            write_messages!(tx, messages);
            tx.commit().await
        }.await)
        .map_err(store_error)
    }

    async fn claim_due(
        &self,
        now: Timestamp,
        lease_until: Timestamp,
        limit: u32,
    ) -> Result<Vec<OutboxMessage>, StoreError> {
        let _gate = self.sqlite_write_gate().await;
        // One conditional update claims: the outer conditions are checked again on each row as
        // it is updated, so a row another claimer leased meanwhile is skipped.
        let sql = format!(
            "UPDATE outbox SET leased_until = $1 WHERE id IN (SELECT id FROM outbox WHERE status = 'pending' \
             AND next_attempt_at <= $2 AND leased_until <= $2 ORDER BY next_attempt_at LIMIT $3) \
             AND status = 'pending' AND leased_until <= $2 RETURNING {MESSAGE_COLUMNS}"
        );
        let rows: Vec<MessageRow> = on_pool!(self, pool =>
            sqlx::query_as(&sql)
                .bind(lease_until.unix_millis())
                .bind(now.unix_millis())
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await
        )
        .map_err(store_error)?;
        let mut messages = rows.into_iter().map(OutboxMessage::try_from).collect::<Result<Vec<_>, _>>()?;
        messages.sort_by_key(|m| m.next_attempt_at);
        Ok(messages)
    }

    async fn record_attempts(&self, results: &[DeliveryResult]) -> Result<(), StoreError> {
        let status = |r: &DeliveryResult| match (r.delivered, r.retry_at) {
            (true, _) => "delivered",
            (false, Some(_)) => "pending",
            (false, None) => "failed",
        };
        if let crate::Backend::Postgres(pool) = &self.backend {
            // One statement for the whole chunk: a round trip per message was most of a round.
            let ids: Vec<&str> = results.iter().map(|r| r.id.as_str()).collect();
            let statuses: Vec<&str> = results.iter().map(status).collect();
            let next: Vec<Option<i64>> = results.iter().map(|r| r.retry_at.map(Timestamp::unix_millis)).collect();
            let at: Vec<i64> = results.iter().map(|r| r.at.unix_millis()).collect();
            let codes: Vec<Option<i64>> = results.iter().map(|r| r.status_code.map(i64::from)).collect();
            let latency: Vec<i64> = results.iter().map(|r| i64::from(r.latency_ms)).collect();
            let errors: Vec<Option<&str>> = results.iter().map(|r| r.error.as_deref()).collect();
            sqlx::query(
                "UPDATE outbox AS o SET status = r.status, attempts = o.attempts + 1, leased_until = 0, \
                 next_attempt_at = COALESCE(r.next, o.next_attempt_at), last_attempt_at = r.at, \
                 last_status_code = r.code, last_latency_ms = r.latency, last_error = r.error, \
                 delivered_at = CASE WHEN r.status = 'delivered' THEN r.at ELSE o.delivered_at END \
                 FROM UNNEST($1::text[], $2::text[], $3::int8[], $4::int8[], $5::int8[], $6::int8[], $7::text[]) \
                 AS r(id, status, next, at, code, latency, error) WHERE o.id = r.id",
            )
            .bind(&ids)
            .bind(&statuses)
            .bind(&next)
            .bind(&at)
            .bind(&codes)
            .bind(&latency)
            .bind(&errors)
            .execute(pool)
            .await
            .map_err(store_error)?;
            return Ok(());
        }
        on_pool!(self, pool => async {
            let mut tx = pool.begin().await?;
            for r in results {
                let next = r.retry_at.map(Timestamp::unix_millis);
                sqlx::query(
                    "UPDATE outbox SET status = $2, attempts = attempts + 1, leased_until = 0, \
                     next_attempt_at = COALESCE($3, next_attempt_at), last_attempt_at = $4, last_status_code = $5, \
                     last_latency_ms = $6, last_error = $7, delivered_at = CASE WHEN $2 = 'delivered' THEN $4 \
                     ELSE delivered_at END WHERE id = $1",
                )
                .bind(&r.id)
                .bind(status(r))
                .bind(next)
                .bind(r.at.unix_millis())
                .bind(r.status_code.map(i64::from))
                .bind(i64::from(r.latency_ms))
                .bind(r.error.as_deref())
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await
        }.await)
        .map_err(store_error)
    }

    async fn release_leases(&self) -> Result<u64, StoreError> {
        on_pool!(self, pool =>
            sqlx::query("UPDATE outbox SET leased_until = 0 WHERE status = 'pending' AND leased_until > 0")
                .execute(pool)
                .await
                .map(|r| r.rows_affected())
        )
        .map_err(store_error)
    }

    async fn stats(&self) -> Result<OutboxStats, StoreError> {
        let rows: Vec<(String, i64, Option<i64>)> = on_pool!(self, pool =>
            sqlx::query_as("SELECT status, COUNT(*), MIN(created_at) FROM outbox GROUP BY status").fetch_all(pool).await
        )
        .map_err(store_error)?;
        let mut stats = OutboxStats::default();
        for (status, count, oldest) in rows {
            let count = u64::try_from(count).unwrap_or(0);
            match status.as_str() {
                "pending" => {
                    stats.pending = count;
                    stats.oldest_pending = oldest.map(Timestamp::from_unix_millis);
                }
                "delivered" => stats.delivered = count,
                _ => stats.failed = count,
            }
        }
        Ok(stats)
    }

    async fn enabled_endpoints(
        &self,
        merchant: Option<&MerchantId>,
        mode: Mode,
    ) -> Result<Vec<EnabledEndpoint>, StoreError> {
        let rows: Vec<(String, String, String)> = on_pool!(self, pool =>
            sqlx::query_as(
                "SELECT id, merchant_id, event_types FROM webhook_endpoints \
                 WHERE ($1 IS NULL OR merchant_id = $1) AND mode = $2 AND status = 'enabled' ORDER BY created_at",
            )
            .bind(merchant.map(|m| m.as_str()))
            .bind(mode.as_str())
            .fetch_all(pool)
            .await
        )
        .map_err(store_error)?;
        rows.into_iter()
            .map(|(id, m, types)| {
                Ok(EnabledEndpoint {
                    id,
                    merchant: MerchantId::parse(&m).map_err(|_| corrupt("merchant id"))?,
                    event_types: parse_types(&types),
                })
            })
            .collect()
    }

    async fn purge_outbox(&self, before: Timestamp, limit: u32) -> Result<u64, StoreError> {
        on_pool!(self, pool =>
            sqlx::query(
                "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox WHERE status <> 'pending' AND created_at < $1 \
                 LIMIT $2)",
            )
            .bind(before.unix_millis())
            .bind(i64::from(limit))
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
        )
        .map_err(store_error)
    }

    async fn deliveries(
        &self,
        merchant: &MerchantId,
        endpoint: &str,
        before: Option<&str>,
        limit: u32,
    ) -> Result<Vec<DeliveryRecord>, StoreError> {
        let rows: Vec<DeliveryRow> = on_pool!(self, pool =>
            sqlx::query_as(
                "SELECT id, event_id, event_type, status, attempts, created_at, next_attempt_at, last_attempt_at, \
                 last_status_code, last_latency_ms, last_error, delivered_at FROM outbox \
                 WHERE destination = $1 AND merchant_id = $2 AND ($3 IS NULL OR id < $3) ORDER BY id DESC LIMIT $4",
            )
            .bind(endpoint)
            .bind(merchant.as_str())
            .bind(before)
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await
        )
        .map_err(store_error)?;
        Ok(rows.into_iter().map(DeliveryRecord::from).collect())
    }

    async fn redeliver(
        &self,
        merchant: &MerchantId,
        endpoint: &str,
        id: &str,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        on_pool!(self, pool =>
            sqlx::query(
                "UPDATE outbox SET status = 'pending', next_attempt_at = $4, leased_until = 0, \
                 created_at = CASE WHEN status = 'failed' THEN $4 ELSE created_at END \
                 WHERE id = $1 AND destination = $2 AND merchant_id = $3 AND status <> 'pending'",
            )
            .bind(id)
            .bind(endpoint)
            .bind(merchant.as_str())
            .bind(now.unix_millis())
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
        )
        .map(|n| n == 1)
        .map_err(store_error)
    }
}

fn parse_types(text: &str) -> Vec<String> {
    serde_json::from_str(text).unwrap_or_default()
}

#[derive(FromRow)]
struct EndpointRow {
    id: String,
    merchant_id: String,
    url: String,
    description: String,
    event_types: String,
    secret_sealed: Vec<u8>,
    previous_secret_sealed: Option<Vec<u8>>,
    previous_secret_until: Option<i64>,
    status: String,
    failing_since: Option<i64>,
    created_at: i64,
    mode: String,
}

impl TryFrom<EndpointRow> for EndpointRecord {
    type Error = StoreError;
    fn try_from(row: EndpointRow) -> Result<Self, StoreError> {
        Ok(EndpointRecord {
            id: row.id,
            merchant: MerchantId::parse(&row.merchant_id).map_err(|_| corrupt("merchant id"))?,
            mode: Mode::parse(&row.mode).ok_or_else(|| corrupt("endpoint mode"))?,
            url: row.url,
            event_types: parse_types(&row.event_types),
            description: row.description,
            secret_sealed: row.secret_sealed,
            previous_secret: row
                .previous_secret_sealed
                .zip(row.previous_secret_until)
                .map(|(sealed, until)| (sealed, Timestamp::from_unix_millis(until))),
            status: row.status,
            failing_since: row.failing_since.map(Timestamp::from_unix_millis),
            created_at: Timestamp::from_unix_millis(row.created_at),
        })
    }
}

const ENDPOINT_COLUMNS: &str = "id, merchant_id, url, description, event_types, secret_sealed, previous_secret_sealed, \
     previous_secret_until, status, failing_since, created_at, mode";

#[async_trait]
impl WebhookRepository for Store {
    async fn insert_endpoint(&self, e: &EndpointRecord, max: u32) -> Result<bool, StoreError> {
        let types = serde_json::to_string(&e.event_types).map_err(|err| StoreError::Other(err.to_string()))?;
        // The merchant's row is locked first (a no-op update), so creates of one merchant run one
        // after the other and the count the conditional insert reads is the one it adds to: under
        // PostgreSQL's READ COMMITTED two racing inserts would otherwise both see room.
        on_pool!(self, pool => async {
            let mut tx = pool.begin().await?;
            sqlx::query("UPDATE merchants SET name = name WHERE id = $1")
                .bind(e.merchant.as_str())
                .execute(&mut *tx)
                .await?;
            let inserted = sqlx::query(
                "INSERT INTO webhook_endpoints (id, merchant_id, url, description, event_types, secret_sealed, status, \
                 created_at, mode) SELECT $1, $2, $3, $4, $5, $6, $7, $8, $10 \
                 WHERE (SELECT COUNT(*) FROM webhook_endpoints WHERE merchant_id = $2) < $9",
            )
            .bind(&e.id)
            .bind(e.merchant.as_str())
            .bind(&e.url)
            .bind(&e.description)
            .bind(&types)
            .bind(&e.secret_sealed)
            .bind(&e.status)
            .bind(e.created_at.unix_millis())
            .bind(i64::from(max))
            .bind(e.mode.as_str())
            .execute(&mut *tx)
            .await?
            .rows_affected();
            tx.commit().await?;
            Ok::<bool, sqlx::Error>(inserted == 1)
        }.await)
        .map_err(store_error)
    }

    async fn endpoint(&self, merchant: Option<&MerchantId>, id: &str) -> Result<Option<EndpointRecord>, StoreError> {
        let sql = format!(
            "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE id = $1 AND ($2 IS NULL OR merchant_id = $2)"
        );
        let row: Option<EndpointRow> = on_pool!(self, pool =>
            sqlx::query_as(&sql).bind(id).bind(merchant.map(|m| m.as_str())).fetch_optional(pool).await
        )
        .map_err(store_error)?;
        row.map(EndpointRecord::try_from).transpose()
    }

    async fn endpoints(&self, merchant: &MerchantId) -> Result<Vec<EndpointRecord>, StoreError> {
        let sql =
            format!("SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE merchant_id = $1 ORDER BY created_at, id");
        let rows: Vec<EndpointRow> =
            on_pool!(self, pool => sqlx::query_as(&sql).bind(merchant.as_str()).fetch_all(pool).await)
                .map_err(store_error)?;
        rows.into_iter().map(EndpointRecord::try_from).collect()
    }

    async fn delete_endpoint(&self, merchant: &MerchantId, id: &str, at: Timestamp) -> Result<bool, StoreError> {
        on_pool!(self, pool => async {
            let mut tx = pool.begin().await?;
            let deleted = sqlx::query("DELETE FROM webhook_endpoints WHERE id = $1 AND merchant_id = $2")
                .bind(id)
                .bind(merchant.as_str())
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if deleted == 1 {
                sqlx::query(
                    "UPDATE outbox SET status = 'failed', last_error = 'the endpoint was deleted', last_attempt_at = $2 \
                     WHERE destination = $1 AND status = 'pending'",
                )
                .bind(id)
                .bind(at.unix_millis())
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            Ok::<bool, sqlx::Error>(deleted == 1)
        }.await)
        .map_err(store_error)
    }

    async fn rotate_endpoint_secret(
        &self,
        merchant: &MerchantId,
        id: &str,
        sealed: &[u8],
        previous_until: Timestamp,
    ) -> Result<bool, StoreError> {
        // The old secret was sealed for this endpoint id, so it moves to the previous column as is.
        on_pool!(self, pool =>
            sqlx::query(
                "UPDATE webhook_endpoints SET previous_secret_sealed = secret_sealed, previous_secret_until = $3, \
                 secret_sealed = $4 WHERE id = $1 AND merchant_id = $2",
            )
            .bind(id)
            .bind(merchant.as_str())
            .bind(previous_until.unix_millis())
            .bind(sealed)
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
        )
        .map(|n| n == 1)
        .map_err(store_error)
    }

    async fn set_endpoint_status(&self, merchant: &MerchantId, id: &str, status: &str) -> Result<bool, StoreError> {
        on_pool!(self, pool =>
            sqlx::query(
                "UPDATE webhook_endpoints SET status = $3, \
                 failing_since = CASE WHEN $3 = 'enabled' THEN NULL ELSE failing_since END \
                 WHERE id = $1 AND merchant_id = $2",
            )
            .bind(id)
            .bind(merchant.as_str())
            .bind(status)
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
        )
        .map(|n| n == 1)
        .map_err(store_error)
    }

    async fn record_endpoint_health(&self, outcomes: &[(String, bool)], at: Timestamp) -> Result<(), StoreError> {
        on_pool!(self, pool => async {
            let mut tx = pool.begin().await?;
            for (id, ok) in outcomes {
                if *ok {
                    sqlx::query("UPDATE webhook_endpoints SET failing_since = NULL WHERE id = $1 AND failing_since IS NOT NULL")
                        .bind(id)
                        .execute(&mut *tx)
                        .await?;
                } else {
                    sqlx::query("UPDATE webhook_endpoints SET failing_since = $2 WHERE id = $1 AND failing_since IS NULL")
                        .bind(id)
                        .bind(at.unix_millis())
                        .execute(&mut *tx)
                        .await?;
                }
            }
            tx.commit().await
        }.await)
        .map_err(store_error)
    }

    async fn disable_failing_endpoints(
        &self,
        before: Timestamp,
    ) -> Result<Vec<(String, MerchantId, Mode)>, StoreError> {
        let rows: Vec<(String, String, String)> = on_pool!(self, pool =>
            sqlx::query_as(
                "UPDATE webhook_endpoints SET status = 'disabled' WHERE status = 'enabled' AND failing_since < $1 \
                 RETURNING id, merchant_id, mode",
            )
            .bind(before.unix_millis())
            .fetch_all(pool)
            .await
        )
        .map_err(store_error)?;
        rows.into_iter()
            .map(|(id, m, mode)| {
                let merchant = MerchantId::parse(&m).map_err(|_| corrupt("merchant id"))?;
                Ok((id, merchant, Mode::parse(&mode).ok_or_else(|| corrupt("endpoint mode"))?))
            })
            .collect()
    }
}

#[derive(FromRow)]
struct JobRow {
    name: String,
    node: Option<String>,
    last_started_at: Option<i64>,
    last_finished_at: Option<i64>,
    last_outcome: Option<String>,
    last_detail: Option<String>,
    last_duration_ms: Option<i64>,
    runs: i64,
    failures: i64,
}

#[async_trait]
impl JobRepository for Store {
    async fn record_run(
        &self,
        name: &str,
        node: &str,
        started: Timestamp,
        finished: Timestamp,
        outcome: &str,
        detail: &str,
    ) -> Result<(), StoreError> {
        on_pool!(self, pool =>
            sqlx::query(
                "INSERT INTO job_runs (name, node, last_started_at, last_finished_at, last_outcome, last_detail, \
                 last_duration_ms, runs, failures) VALUES ($1, $2, $3, $4, $5, $6, $7, 1, $8) \
                 ON CONFLICT (name) DO UPDATE SET node = $2, last_started_at = $3, last_finished_at = $4, \
                 last_outcome = $5, last_detail = $6, last_duration_ms = $7, runs = job_runs.runs + 1, \
                 failures = job_runs.failures + $8",
            )
            .bind(name)
            .bind(node)
            .bind(started.unix_millis())
            .bind(finished.unix_millis())
            .bind(outcome)
            .bind(detail)
            .bind(finished.millis_since(started))
            .bind(i64::from(outcome != "ok"))
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
        )
        .map(|_| ())
        .map_err(store_error)
    }

    async fn job_runs(&self) -> Result<Vec<JobRecord>, StoreError> {
        let rows: Vec<JobRow> = on_pool!(self, pool =>
            sqlx::query_as(
                "SELECT name, node, last_started_at, last_finished_at, last_outcome, last_detail, last_duration_ms, \
                 runs, failures FROM job_runs ORDER BY name",
            )
            .fetch_all(pool)
            .await
        )
        .map_err(store_error)?;
        let at = |ms: Option<i64>| ms.map(|ms| Timestamp::from_unix_millis(ms).to_rfc3339());
        Ok(rows
            .into_iter()
            .map(|r| JobRecord {
                name: r.name,
                node: r.node,
                last_started_at: at(r.last_started_at),
                last_finished_at: at(r.last_finished_at),
                last_outcome: r.last_outcome,
                last_detail: r.last_detail,
                last_duration_ms: r.last_duration_ms,
                runs: r.runs,
                failures: r.failures,
            })
            .collect())
    }

    async fn leader_heartbeat(&self, node: &str, at: Timestamp) -> Result<(), StoreError> {
        on_pool!(self, pool =>
            sqlx::query(
                "INSERT INTO job_leader (singleton, node, since, heartbeat_at) VALUES (1, $1, $2, $2) \
                 ON CONFLICT (singleton) DO UPDATE SET heartbeat_at = $2, \
                 since = CASE WHEN job_leader.node = $1 THEN job_leader.since ELSE $2 END, node = $1",
            )
            .bind(node)
            .bind(at.unix_millis())
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
        )
        .map(|_| ())
        .map_err(store_error)
    }

    async fn leader(&self, now: Timestamp) -> Result<Option<LeaderRecord>, StoreError> {
        let row: Option<(String, i64, i64)> = on_pool!(self, pool =>
            sqlx::query_as("SELECT node, since, heartbeat_at FROM job_leader WHERE singleton = 1")
                .fetch_optional(pool)
                .await
        )
        .map_err(store_error)?;
        Ok(row.map(|(node, since, beat)| LeaderRecord {
            node,
            since: Timestamp::from_unix_millis(since).to_rfc3339(),
            heartbeat_at: Timestamp::from_unix_millis(beat).to_rfc3339(),
            heartbeat_age_ms: now.unix_millis() - beat,
        }))
    }
}

/// The advisory lock key of the job runner's leadership (`strongroom` in ASCII, as a number).
const LEADER_LOCK: i64 = 0x7374_726f_6e67;

/// PostgreSQL leadership: a session advisory lock on a connection of its own. The lock ends
/// with that connection, so a leader that dies or loses its database loses the lead at once,
/// and a standby's next attempt takes it.
#[derive(Debug)]
pub struct PgLeadership {
    options: sqlx::postgres::PgConnectOptions,
    conn: tokio::sync::Mutex<Option<sqlx::PgConnection>>,
}

impl PgLeadership {
    /// Leadership over the database `store` connects to; `None` for SQLite.
    pub fn for_store(store: &Store) -> Option<Self> {
        let options = store.pg_options.clone()?;
        Some(Self { options, conn: tokio::sync::Mutex::new(None) })
    }
}

#[async_trait]
impl Leadership for PgLeadership {
    async fn hold(&self) -> Result<bool, StoreError> {
        let mut slot = self.conn.lock().await;
        if let Some(conn) = slot.as_mut() {
            // Holding: the lock lives as long as this connection answers.
            match tokio::time::timeout(std::time::Duration::from_secs(3), conn.ping()).await {
                Ok(Ok(())) => return Ok(true),
                _ => {
                    *slot = None;
                    return Ok(false);
                }
            }
        }
        let mut conn = sqlx::PgConnection::connect_with(&self.options).await.map_err(store_error)?;
        let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(LEADER_LOCK)
            .fetch_one(&mut conn)
            .await
            .map_err(store_error)?;
        if got {
            *slot = Some(conn);
        } else {
            let _ = conn.close().await;
        }
        Ok(got)
    }

    async fn release(&self) {
        if let Some(mut conn) = self.conn.lock().await.take() {
            let _ = sqlx::query("SELECT pg_advisory_unlock($1)").bind(LEADER_LOCK).execute(&mut conn).await;
            let _ = conn.close().await;
        }
    }
}
