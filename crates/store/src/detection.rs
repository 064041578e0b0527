//! Intrusion detection's decisions on both backends: one row per merchant (`''`: deployment-wide),
//! scope and action, replaced by a conditional upsert only when its decision is over, lifted and
//! extended by conditional updates of a row in force.
//! Detection's shared counts: one row per counter and window, added to by one upsert that
//! returns the tally (on PostgreSQL one statement; on SQLite, whose writers are serialised, one
//! transaction).
//! Shared rate limits: one row per key holding its GCRA arrival time, pushed on by one conditional
//! upsert whose affected-row count says whether a unit was taken.
//! Must never: decide by reading and then writing, or commit a decision without its outbox
//! messages.

use async_trait::async_trait;
use sqlx::FromRow;
use strongroom_domain::StoreError;
use strongroom_domain::outbox::OutboxMessage;
use strongroom_domain::ports::detection::{
    Allowance, DecisionRecord, DecisionsRepository, DetectionCounts, MAX_DISTINCT_ITEMS, Observation, RateLimits, Tally,
};
use strongroom_types::Timestamp;

use crate::outbox::write_messages;
use crate::{Store, on_pool, store_error};

#[derive(FromRow)]
struct DecisionRow {
    id: String,
    merchant_key: String,
    scope_kind: String,
    scope_value: String,
    action: String,
    reason: String,
    detail: Option<String>,
    created_by: String,
    created_at: i64,
    until_at: i64,
    strikes: i64,
    lifted_at: Option<i64>,
    lifted_by: Option<String>,
    updated_at: i64,
}

const COLUMNS: &str = "id, merchant_key, scope_kind, scope_value, action, reason, detail, created_by, created_at, \
     until_at, strikes, lifted_at, lifted_by, updated_at";

impl From<DecisionRow> for DecisionRecord {
    fn from(row: DecisionRow) -> Self {
        DecisionRecord {
            id: row.id,
            merchant: Some(row.merchant_key).filter(|m| !m.is_empty()),
            scope_kind: row.scope_kind,
            scope_value: row.scope_value,
            action: row.action,
            reason: row.reason,
            detail: row.detail,
            created_by: row.created_by,
            created_at: Timestamp::from_unix_millis(row.created_at),
            until: Timestamp::from_unix_millis(row.until_at),
            strikes: u32::try_from(row.strikes.max(0)).unwrap_or(u32::MAX),
            lifted_at: row.lifted_at.map(Timestamp::from_unix_millis),
            lifted_by: row.lifted_by,
            updated_at: Timestamp::from_unix_millis(row.updated_at),
        }
    }
}

#[async_trait]
impl DecisionsRepository for Store {
    async fn decision_for(
        &self,
        merchant_key: &str,
        kind: &str,
        value: &str,
        action: &str,
    ) -> Result<Option<DecisionRecord>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM security_decisions WHERE merchant_key = $1 AND scope_kind = $2 \
             AND scope_value = $3 AND action = $4"
        );
        let row: Option<DecisionRow> = on_pool!(self, pool => sqlx::query_as(&sql)
            .bind(merchant_key)
            .bind(kind)
            .bind(value)
            .bind(action)
            .fetch_optional(pool)
            .await)
        .map_err(store_error)?;
        Ok(row.map(DecisionRecord::from))
    }

    async fn decide(&self, d: &DecisionRecord, events: &[OutboxMessage]) -> Result<bool, StoreError> {
        let at = d.created_at.unix_millis();
        on_pool!(self, pool => async {
            let mut tx = pool.begin().await?;
            // The one statement that decides: a new row, or the scope's row replaced only when
            // its decision is over (lifted, or ended by `at`).
            let decided = sqlx::query(
                "INSERT INTO security_decisions (id, merchant_key, scope_kind, scope_value, action, reason, detail, \
                 created_by, created_at, until_at, strikes, lifted_at, lifted_by, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, NULL, NULL, $9) \
                 ON CONFLICT (merchant_key, scope_kind, scope_value, action) DO UPDATE SET id = excluded.id, \
                 reason = excluded.reason, detail = excluded.detail, \
                 created_by = excluded.created_by, created_at = excluded.created_at, until_at = excluded.until_at, \
                 strikes = excluded.strikes, lifted_at = NULL, lifted_by = NULL, updated_at = excluded.updated_at, \
                 revision = security_decisions.revision + 1 \
                 WHERE security_decisions.lifted_at IS NOT NULL OR security_decisions.until_at <= excluded.created_at",
            )
            .bind(&d.id)
            .bind(d.merchant.as_deref().unwrap_or(""))
            .bind(&d.scope_kind)
            .bind(&d.scope_value)
            .bind(&d.action)
            .bind(&d.reason)
            .bind(d.detail.as_deref())
            .bind(&d.created_by)
            .bind(at)
            .bind(d.until.unix_millis())
            .bind(i64::from(d.strikes))
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if decided == 0 {
                tx.rollback().await?;
                return Ok(false);
            }
            write_messages!(tx, events);
            tx.commit().await?;
            Ok::<bool, sqlx::Error>(true)
        }.await)
        .map_err(store_error)
    }

    async fn decision(&self, id: &str) -> Result<Option<DecisionRecord>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM security_decisions WHERE id = $1");
        let row: Option<DecisionRow> =
            on_pool!(self, pool => sqlx::query_as(&sql).bind(id).fetch_optional(pool).await).map_err(store_error)?;
        Ok(row.map(DecisionRecord::from))
    }

    async fn holding_decisions(&self, now: Timestamp) -> Result<Vec<DecisionRecord>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM security_decisions WHERE lifted_at IS NULL AND until_at > $1");
        let rows: Vec<DecisionRow> =
            on_pool!(self, pool => sqlx::query_as(&sql).bind(now.unix_millis()).fetch_all(pool).await)
                .map_err(store_error)?;
        Ok(rows.into_iter().map(DecisionRecord::from).collect())
    }

    async fn list_decisions(
        &self,
        merchant: &str,
        holding_only: bool,
        now: Timestamp,
        limit: u32,
    ) -> Result<Vec<DecisionRecord>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM security_decisions WHERE merchant_key IN ($1, '') \
             AND ($2 = 0 OR (lifted_at IS NULL AND until_at > $3)) ORDER BY updated_at DESC, id DESC LIMIT $4"
        );
        let rows: Vec<DecisionRow> = on_pool!(self, pool => sqlx::query_as(&sql)
            .bind(merchant)
            .bind(i32::from(holding_only))
            .bind(now.unix_millis())
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await)
        .map_err(store_error)?;
        Ok(rows.into_iter().map(DecisionRecord::from).collect())
    }

    async fn lift_decision(
        &self,
        id: &str,
        at: Timestamp,
        by: &str,
        events: &[OutboxMessage],
    ) -> Result<bool, StoreError> {
        on_pool!(self, pool => async {
            let mut tx = pool.begin().await?;
            let lifted = sqlx::query(
                "UPDATE security_decisions SET lifted_at = $2, lifted_by = $3, updated_at = $2, revision = revision + 1 \
                 WHERE id = $1 AND lifted_at IS NULL AND until_at > $2",
            )
            .bind(id)
            .bind(at.unix_millis())
            .bind(by)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if lifted == 0 {
                tx.rollback().await?;
                return Ok(false);
            }
            write_messages!(tx, events);
            tx.commit().await?;
            Ok::<bool, sqlx::Error>(true)
        }.await)
        .map_err(store_error)
    }

    async fn extend_decision(&self, id: &str, until: Timestamp, at: Timestamp) -> Result<bool, StoreError> {
        let changed = on_pool!(self, pool => sqlx::query(
                "UPDATE security_decisions SET until_at = $2, updated_at = $3, revision = revision + 1 \
                 WHERE id = $1 AND lifted_at IS NULL AND until_at > $3",
            )
            .bind(id)
            .bind(until.unix_millis())
            .bind(at.unix_millis())
            .execute(pool)
            .await
            .map(|r| r.rows_affected()))
        .map_err(store_error)?;
        Ok(changed == 1)
    }

    async fn decisions_version(&self) -> Result<i64, StoreError> {
        // Grows with every change of any row (`revision`), whatever the writing node's clock says:
        // a timestamp would miss two changes within one millisecond, or one stamped by a slow clock.
        let version: i64 = on_pool!(self, pool => sqlx::query_scalar(
                "SELECT CAST(COALESCE(SUM(revision), 0) AS BIGINT) FROM security_decisions",
            )
            .fetch_one(pool)
            .await)
        .map_err(store_error)?;
        Ok(version)
    }

    async fn purge_decisions(&self, before: Timestamp) -> Result<u64, StoreError> {
        let purged = on_pool!(self, pool => sqlx::query(
                "DELETE FROM security_decisions WHERE COALESCE(lifted_at, until_at) < $1",
            )
            .bind(before.unix_millis())
            .execute(pool)
            .await
            .map(|r| r.rows_affected()))
        .map_err(store_error)?;
        Ok(purged)
    }
}

/// SQLite: an observation's item goes in unless the window holds it (or holds the cap): `$1`
/// counter, `$2` window start, `$3` item, `$4` expiry, `$5` the cap.
const OBSERVE_ITEM_SQLITE: &str = "INSERT INTO detection_items (counter, window_start, item, expires_at) \
     SELECT $1, $2, $3, $4 WHERE COALESCE((SELECT distinct_items FROM detection_counts \
     WHERE counter = $1 AND window_start = $2), 0) < $5 ON CONFLICT DO NOTHING";

/// SQLite: the window's row added to (`$1` counter, `$2` window start, `$3` items added, `$4`
/// expiry), answering hits and distinct items.
const OBSERVE_COUNT_SQLITE: &str = "INSERT INTO detection_counts (counter, window_start, hits, distinct_items, \
     expires_at) VALUES ($1, $2, 1, $3, $4) ON CONFLICT (counter, window_start) DO UPDATE SET \
     hits = detection_counts.hits + 1, distinct_items = detection_counts.distinct_items + $3 \
     RETURNING hits, distinct_items";

/// Counts one observation in the SQLite transaction `tx` on sqlx's pool (an in-memory database,
/// behind the write gate): the item goes in unless the window holds it (or holds the cap), then
/// the window's row is added to. Returns (hits, distinct items, items added).
async fn observe_sqlite(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    counter: &str,
    window_start: i64,
    item: Option<&[u8]>,
    expires_at: i64,
    cap: i64,
) -> Result<(i64, i64, i64), sqlx::Error> {
    let added = match item {
        Some(item) => sqlx::query(OBSERVE_ITEM_SQLITE)
            .bind(counter)
            .bind(window_start)
            .bind(item)
            .bind(expires_at)
            .bind(cap)
            .execute(&mut **tx)
            .await?
            .rows_affected(),
        None => 0,
    };
    let added = i64::try_from(added).unwrap_or(0);
    let (hits, distinct): (i64, i64) = sqlx::query_as(OBSERVE_COUNT_SQLITE)
        .bind(counter)
        .bind(window_start)
        .bind(added)
        .bind(expires_at)
        .fetch_one(&mut **tx)
        .await?;
    Ok((hits, distinct, added))
}

/// [`observe_sqlite`] on the direct writer's transaction (a file database).
fn observe_direct(
    tx: &rusqlite::Connection,
    counter: &str,
    window_start: i64,
    item: Option<&[u8]>,
    expires_at: i64,
    cap: i64,
) -> rusqlite::Result<(i64, i64, i64)> {
    let added = match item {
        Some(item) => tx
            .prepare_cached(&crate::sqlite_direct::numbered(OBSERVE_ITEM_SQLITE))?
            .execute(rusqlite::params![counter, window_start, item, expires_at, cap])?,
        None => 0,
    };
    let added = i64::try_from(added).unwrap_or(0);
    let (hits, distinct) = tx
        .prepare_cached(&crate::sqlite_direct::numbered(OBSERVE_COUNT_SQLITE))?
        .query_row(rusqlite::params![counter, window_start, added, expires_at], |row| Ok((row.get(0)?, row.get(1)?)))?;
    Ok((hits, distinct, added))
}

/// `observe` of many counters in one PostgreSQL statement (`$1` counters, `$2` window starts,
/// `$3` items, `$4` expiries, `$5` the cap of distinct items), answering each observation's
/// position, hits, distinct items and whether its item was added. Rows are locked in the order of
/// (counter, window start), the same in every batch, so two batches cannot deadlock.
const OBSERVE_MANY: &str = "WITH obs AS (\
       SELECT * FROM unnest($1::text[], $2::int8[], $3::bytea[], $4::int8[]) \
       WITH ORDINALITY AS o(counter, window_start, item, expires_at, n)), \
     added AS (INSERT INTO detection_items (counter, window_start, item, expires_at) \
       SELECT o.counter, o.window_start, o.item, o.expires_at FROM obs o \
       WHERE o.item IS NOT NULL AND COALESCE((SELECT c.distinct_items FROM detection_counts c \
         WHERE c.counter = o.counter AND c.window_start = o.window_start), 0) < $5 \
       ORDER BY o.counter, o.window_start \
       ON CONFLICT DO NOTHING RETURNING counter, window_start), \
     counted AS (INSERT INTO detection_counts AS c (counter, window_start, hits, distinct_items, expires_at) \
       SELECT o.counter, o.window_start, 1, (SELECT COUNT(*) FROM added a \
         WHERE a.counter = o.counter AND a.window_start = o.window_start), o.expires_at \
       FROM obs o ORDER BY o.counter, o.window_start \
       ON CONFLICT (counter, window_start) DO UPDATE SET hits = c.hits + 1, \
         distinct_items = c.distinct_items + EXCLUDED.distinct_items \
       RETURNING c.counter, c.window_start, c.hits, c.distinct_items) \
     SELECT o.n, k.hits, k.distinct_items, (SELECT COUNT(*) FROM added a \
       WHERE a.counter = o.counter AND a.window_start = o.window_start) \
     FROM obs o JOIN counted k ON k.counter = o.counter AND k.window_start = o.window_start ORDER BY o.n";

#[async_trait]
impl DetectionCounts for Store {
    async fn observe(
        &self,
        counter: &str,
        window_start: i64,
        item: Option<&[u8]>,
        expires_at: i64,
    ) -> Result<Tally, StoreError> {
        let cap = i64::try_from(MAX_DISTINCT_ITEMS).unwrap_or(i64::MAX);
        let (hits, distinct, added): (i64, i64, i64) = match (&self.backend, &self.direct) {
            (crate::Backend::Postgres(pool), _) => sqlx::query_as(
                // The item goes in unless the window holds it (or holds the cap); the window's row
                // is added to in the same statement, under its row lock, so concurrent
                // observations each read a different tally.
                "WITH added AS (INSERT INTO detection_items (counter, window_start, item, expires_at) \
                   SELECT $1, $2, $3::bytea, $4 WHERE $3::bytea IS NOT NULL AND COALESCE((SELECT distinct_items \
                   FROM detection_counts WHERE counter = $1 AND window_start = $2), 0) < $5 \
                   ON CONFLICT DO NOTHING RETURNING 1) \
                 INSERT INTO detection_counts AS c (counter, window_start, hits, distinct_items, expires_at) \
                 VALUES ($1, $2, 1, (SELECT COUNT(*) FROM added), $4) \
                 ON CONFLICT (counter, window_start) DO UPDATE SET hits = c.hits + 1, \
                   distinct_items = c.distinct_items + (SELECT COUNT(*) FROM added) \
                 RETURNING hits, distinct_items, (SELECT COUNT(*) FROM added)",
            )
            .bind(counter)
            .bind(window_start)
            .bind(item)
            .bind(expires_at)
            .bind(cap)
            .fetch_one(pool)
            .await
            .map_err(store_error)?,
            (crate::Backend::Sqlite(_), Some(direct)) => {
                direct
                    .write_here(|tx| {
                        observe_direct(tx, counter, window_start, item, expires_at, cap)
                            .map(|tally| (tally, true))
                            .map_err(crate::sqlite_direct::sqlite_error)
                    })
                    .await?
            }
            (crate::Backend::Sqlite(pool), None) => async {
                let _gate = self.sqlite_write_gate().await;
                let mut tx = pool.begin().await?;
                let tally = observe_sqlite(&mut tx, counter, window_start, item, expires_at, cap).await?;
                tx.commit().await?;
                Ok::<_, sqlx::Error>(tally)
            }
            .await
            .map_err(store_error)?,
        };
        Ok(Tally {
            hits: u64::try_from(hits).unwrap_or(0),
            distinct: u64::try_from(distinct).unwrap_or(0),
            new_item: added > 0,
        })
    }

    async fn observe_many(&self, observations: &[Observation<'_>]) -> Result<Vec<Tally>, StoreError> {
        let cap = i64::try_from(MAX_DISTINCT_ITEMS).unwrap_or(i64::MAX);
        let tally = |(hits, distinct, added): (i64, i64, i64)| Tally {
            hits: u64::try_from(hits).unwrap_or(0),
            distinct: u64::try_from(distinct).unwrap_or(0),
            new_item: added > 0,
        };
        // One statement cannot add to one window's row twice: a batch naming a counter's window
        // twice is counted one by one.
        let mut windows: Vec<(&str, i64)> = observations.iter().map(|o| (o.counter.as_str(), o.window_start)).collect();
        windows.sort_unstable();
        windows.dedup();
        if windows.len() < observations.len() {
            let mut tallies = Vec::with_capacity(observations.len());
            for o in observations {
                tallies.push(self.observe(&o.counter, o.window_start, o.item, o.expires_at).await?);
            }
            return Ok(tallies);
        }
        match (&self.backend, &self.direct) {
            (crate::Backend::Postgres(pool), _) => {
                let counters: Vec<&str> = observations.iter().map(|o| o.counter.as_str()).collect();
                let starts: Vec<i64> = observations.iter().map(|o| o.window_start).collect();
                let items: Vec<Option<&[u8]>> = observations.iter().map(|o| o.item).collect();
                let expiries: Vec<i64> = observations.iter().map(|o| o.expires_at).collect();
                let rows: Vec<(i64, i64, i64, i64)> = sqlx::query_as(OBSERVE_MANY)
                    .bind(&counters)
                    .bind(&starts)
                    .bind(&items)
                    .bind(&expiries)
                    .bind(cap)
                    .fetch_all(pool)
                    .await
                    .map_err(store_error)?;
                if rows.len() != observations.len() {
                    return Err(StoreError::Other("a batch of detection counts came back incomplete".into()));
                }
                Ok(rows.into_iter().map(|(_, hits, distinct, added)| tally((hits, distinct, added))).collect())
            }
            (crate::Backend::Sqlite(_), Some(direct)) => {
                direct
                    .write_here(|tx| {
                        let tallies = observations
                            .iter()
                            .map(|o| {
                                observe_direct(tx, &o.counter, o.window_start, o.item, o.expires_at, cap).map(tally)
                            })
                            .collect::<rusqlite::Result<Vec<Tally>>>()
                            .map_err(crate::sqlite_direct::sqlite_error)?;
                        Ok((tallies, true))
                    })
                    .await
            }
            (crate::Backend::Sqlite(pool), None) => async {
                let _gate = self.sqlite_write_gate().await;
                let mut tx = pool.begin().await?;
                let mut tallies = Vec::with_capacity(observations.len());
                for o in observations {
                    let counted =
                        observe_sqlite(&mut tx, &o.counter, o.window_start, o.item, o.expires_at, cap).await?;
                    tallies.push(tally(counted));
                }
                tx.commit().await?;
                Ok::<_, sqlx::Error>(tallies)
            }
            .await
            .map_err(store_error),
        }
    }

    async fn purge_counts(&self, now: i64) -> Result<u64, StoreError> {
        on_pool!(self, pool => async {
            let items = sqlx::query("DELETE FROM detection_items WHERE expires_at <= $1")
                .bind(now)
                .execute(pool)
                .await?
                .rows_affected();
            let counts = sqlx::query("DELETE FROM detection_counts WHERE expires_at <= $1")
                .bind(now)
                .execute(pool)
                .await?
                .rows_affected();
            Ok::<u64, sqlx::Error>(items + counts)
        }.await)
        .map_err(store_error)
    }
}

/// Pushes a key's arrival time on by one emission interval when the result stays within one
/// period of now (`$2` now, `$3` the interval, `$4` the period): a row comes back only then.
const TAKE_UNIT: &str = "INSERT INTO rate_limits AS r (limit_key, tat) VALUES ($1, $2 + $3) \
     ON CONFLICT (limit_key) DO UPDATE SET tat = (CASE WHEN r.tat > $2 THEN r.tat ELSE $2 END) + $3 \
     WHERE (CASE WHEN r.tat > $2 THEN r.tat ELSE $2 END) + $3 <= $2 + $4 \
     RETURNING tat";

#[async_trait]
impl RateLimits for Store {
    async fn take(&self, key: &str, allowance: Allowance, now: i64) -> Result<i64, StoreError> {
        let _gate = self.sqlite_write_gate().await;
        let taken: Option<i64> = on_pool!(self, pool => sqlx::query_scalar(TAKE_UNIT)
            .bind(key)
            .bind(now)
            .bind(allowance.emission_ms)
            .bind(allowance.period_ms)
            .fetch_optional(pool)
            .await)
        .map_err(store_error)?;
        if taken.is_some() {
            return Ok(0);
        }
        drop(_gate);
        // Refused: how long until a unit is free (a read after the decision, for Retry-After only).
        self.peek(key, allowance, now).await.map(|wait| wait.max(1))
    }

    async fn peek(&self, key: &str, allowance: Allowance, now: i64) -> Result<i64, StoreError> {
        let tat: Option<i64> = on_pool!(self, pool => sqlx::query_scalar(
                "SELECT tat FROM rate_limits WHERE limit_key = $1",
            )
            .bind(key)
            .fetch_optional(pool)
            .await)
        .map_err(store_error)?;
        Ok(allowance.at(tat, now).0)
    }

    async fn purge_limits(&self, now: i64) -> Result<u64, StoreError> {
        let _gate = self.sqlite_write_gate().await;
        on_pool!(self, pool => sqlx::query("DELETE FROM rate_limits WHERE tat <= $1")
            .bind(now)
            .execute(pool)
            .await
            .map(|r| r.rows_affected()))
        .map_err(store_error)
    }
}
