//! Incidents and freezes on both backends: at most one active (open or contained) incident per
//! merchant, decided by the partial unique index `security_incidents_one_active` (an insert that
//! meets it does nothing, and the active row is then read in the same transaction); state and
//! assignee changes are conditional updates on the state; the timeline, the subjects (once each)
//! and the outbox messages are written in the change's transaction. A merchant's freezes are one
//! row, set and cleared by conditional statements.
//! Must never: decide "none is open" or "not frozen" by reading and then writing, or commit a
//! change without its timeline entry and messages.

use async_trait::async_trait;
use sqlx::FromRow;
use strongroom_domain::StoreError;
use strongroom_domain::detection::incidents::Severity;
use strongroom_domain::outbox::OutboxMessage;
use strongroom_domain::ports::incidents::{
    FreezeKind, IncidentChange, IncidentEvents, IncidentRecord, IncidentsRepository, Landed, SubjectRecord,
    TimelineEntry,
};
use strongroom_types::Timestamp;

use crate::outbox::write_messages;
use crate::{Store, on_pool, store_error};

#[derive(FromRow)]
struct IncidentRow {
    id: String,
    merchant_key: String,
    title: String,
    severity: i32,
    state: String,
    assignee: Option<String>,
    opened_by: String,
    opened_at: i64,
    updated_at: i64,
    resolved_at: Option<i64>,
}

const COLUMNS: &str =
    "id, merchant_key, title, severity, state, assignee, opened_by, opened_at, updated_at, resolved_at";

impl From<IncidentRow> for IncidentRecord {
    fn from(row: IncidentRow) -> Self {
        IncidentRecord {
            id: row.id,
            merchant: Some(row.merchant_key).filter(|m| !m.is_empty()),
            title: row.title,
            severity: Severity::from_rank(row.severity),
            state: row.state,
            assignee: row.assignee,
            opened_by: row.opened_by,
            opened_at: Timestamp::from_unix_millis(row.opened_at),
            updated_at: Timestamp::from_unix_millis(row.updated_at),
            resolved_at: row.resolved_at.map(Timestamp::from_unix_millis),
        }
    }
}

/// `$first, $first+1, …` for `count` values (the states: constants of the domain, never input).
fn placeholders(first: usize, count: usize) -> String {
    (first..first + count).map(|n| format!("${n}")).collect::<Vec<_>>().join(", ")
}

macro_rules! write_entry {
    ($tx:expr, $id:expr, $entry:expr) => {
        sqlx::query(
            "INSERT INTO security_incident_timeline (incident_id, at, actor, kind, text, data) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind($id)
        .bind($entry.at.unix_millis())
        .bind(&$entry.actor)
        .bind(&$entry.kind)
        .bind($entry.text.as_deref())
        .bind($entry.data.to_string())
        .execute(&mut *$tx)
        .await?;
    };
}

macro_rules! write_subjects {
    ($tx:expr, $id:expr, $subjects:expr) => {
        for s in $subjects {
            sqlx::query(
                "INSERT INTO security_incident_subjects (incident_id, kind, value, added_at) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT DO NOTHING",
            )
            .bind($id)
            .bind(&s.kind)
            .bind(&s.value)
            .bind(s.added_at.unix_millis())
            .execute(&mut *$tx)
            .await?;
        }
    };
}

#[async_trait]
impl IncidentsRepository for Store {
    async fn open_or_join(
        &self,
        new: &IncidentRecord,
        entry: &TimelineEntry,
        subjects: &[SubjectRecord],
        join: bool,
        events: IncidentEvents<'_>,
    ) -> Result<Option<(IncidentRecord, Landed)>, StoreError> {
        let merchant_key = new.merchant.as_deref().unwrap_or("");
        let select = format!(
            "SELECT {COLUMNS} FROM security_incidents WHERE merchant_key = $1 AND state IN ('open', 'contained')"
        );
        // The active incident can be resolved between the insert that did nothing and the read
        // (by another request); then the insert is tried again.
        for _ in 0..3 {
            let outcome = on_pool!(self, pool => async {
                let mut tx = pool.begin().await?;
                // The one statement that decides whether an incident opens: the partial unique
                // index admits one active incident per merchant.
                let opened = sqlx::query(
                    "INSERT INTO security_incidents (id, merchant_key, title, severity, state, assignee, opened_by, \
                     opened_at, updated_at, resolved_at) VALUES ($1, $2, $3, $4, 'open', NULL, $5, $6, $6, NULL) \
                     ON CONFLICT DO NOTHING",
                )
                .bind(&new.id)
                .bind(merchant_key)
                .bind(&new.title)
                .bind(new.severity.rank())
                .bind(&new.opened_by)
                .bind(new.opened_at.unix_millis())
                .execute(&mut *tx)
                .await?
                .rows_affected()
                    == 1;
                let mut landed = Landed::Opened;
                if !opened {
                    if !join {
                        tx.rollback().await?;
                        return Ok::<_, sqlx::Error>(Some(None));
                    }
                    let raised = sqlx::query(
                        "UPDATE security_incidents SET severity = $2, updated_at = $3 \
                         WHERE merchant_key = $1 AND state IN ('open', 'contained') AND severity < $2",
                    )
                    .bind(merchant_key)
                    .bind(new.severity.rank())
                    .bind(new.opened_at.unix_millis())
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                    if raised == 0 {
                        // Joined at its severity: the incident changed all the same (its timeline
                        // grew), which is what `updated_at` tells whoever lists incidents.
                        sqlx::query(
                            "UPDATE security_incidents SET updated_at = $2 \
                             WHERE merchant_key = $1 AND state IN ('open', 'contained') AND updated_at < $2",
                        )
                        .bind(merchant_key)
                        .bind(new.opened_at.unix_millis())
                        .execute(&mut *tx)
                        .await?;
                    }
                    landed = if raised == 1 { Landed::Raised } else { Landed::Joined };
                }
                let row: Option<IncidentRow> = sqlx::query_as(&select).bind(merchant_key).fetch_optional(&mut *tx).await?;
                let Some(row) = row else {
                    tx.rollback().await?;
                    return Ok(None);
                };
                let incident = IncidentRecord::from(row);
                write_entry!(tx, &incident.id, entry);
                write_subjects!(tx, &incident.id, subjects);
                let messages = events(&incident, landed);
                write_messages!(tx, &messages);
                tx.commit().await?;
                Ok(Some(Some((incident, landed))))
            }.await)
            .map_err(store_error)?;
            if let Some(done) = outcome {
                return Ok(done);
            }
        }
        Err(StoreError::Conflict("the active incident kept changing".to_owned()))
    }

    async fn incident(&self, id: &str) -> Result<Option<IncidentRecord>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM security_incidents WHERE id = $1");
        let row: Option<IncidentRow> =
            on_pool!(self, pool => sqlx::query_as(&sql).bind(id).fetch_optional(pool).await).map_err(store_error)?;
        Ok(row.map(IncidentRecord::from))
    }

    async fn list_incidents(
        &self,
        merchant: Option<&str>,
        state: Option<&str>,
        limit: u32,
    ) -> Result<Vec<IncidentRecord>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM security_incidents WHERE ($1 = '*' OR merchant_key = $1) \
             AND ($2 = '' OR state = $2) ORDER BY opened_at DESC, id DESC LIMIT $3"
        );
        let rows: Vec<IncidentRow> = on_pool!(self, pool => sqlx::query_as(&sql)
            .bind(merchant.unwrap_or("*"))
            .bind(state.unwrap_or(""))
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await)
        .map_err(store_error)?;
        Ok(rows.into_iter().map(IncidentRecord::from).collect())
    }

    async fn timeline(&self, id: &str) -> Result<Vec<TimelineEntry>, StoreError> {
        let rows: Vec<(i64, String, String, Option<String>, String)> = on_pool!(self, pool => sqlx::query_as(
                "SELECT at, actor, kind, text, data FROM security_incident_timeline WHERE incident_id = $1 ORDER BY id",
            )
            .bind(id)
            .fetch_all(pool)
            .await)
        .map_err(store_error)?;
        Ok(rows
            .into_iter()
            .map(|(at, actor, kind, text, data)| TimelineEntry {
                at: Timestamp::from_unix_millis(at),
                actor,
                kind,
                text,
                data: serde_json::from_str(&data).unwrap_or(serde_json::Value::Null),
            })
            .collect())
    }

    async fn subjects(&self, id: &str) -> Result<Vec<SubjectRecord>, StoreError> {
        let rows: Vec<(String, String, i64)> = on_pool!(self, pool => sqlx::query_as(
                "SELECT kind, value, added_at FROM security_incident_subjects WHERE incident_id = $1 \
                 ORDER BY added_at, kind, value",
            )
            .bind(id)
            .fetch_all(pool)
            .await)
        .map_err(store_error)?;
        Ok(rows
            .into_iter()
            .map(|(kind, value, at)| SubjectRecord { kind, value, added_at: Timestamp::from_unix_millis(at) })
            .collect())
    }

    async fn change_incident(
        &self,
        change: &IncidentChange<'_>,
        entry: &TimelineEntry,
        events: &[OutboxMessage],
    ) -> Result<bool, StoreError> {
        let sql = format!(
            "UPDATE security_incidents SET state = COALESCE($2, state), \
             assignee = CASE WHEN $3 = 1 THEN $4 ELSE assignee END, updated_at = $5, \
             resolved_at = CASE WHEN $2 = 'resolved' THEN $5 ELSE resolved_at END \
             WHERE id = $1 AND state IN ({})",
            placeholders(6, change.from.len())
        );
        let at = change.at.unix_millis();
        on_pool!(self, pool => async {
            let mut tx = pool.begin().await?;
            let mut query = sqlx::query(&sql)
                .bind(change.id)
                .bind(change.state)
                .bind(i32::from(change.assignee.is_some()))
                .bind(change.assignee.flatten())
                .bind(at);
            for state in change.from {
                query = query.bind(*state);
            }
            let changed = query.execute(&mut *tx).await?.rows_affected();
            if changed == 0 {
                tx.rollback().await?;
                return Ok(false);
            }
            write_entry!(tx, change.id, entry);
            write_messages!(tx, events);
            tx.commit().await?;
            Ok::<bool, sqlx::Error>(true)
        }.await)
        .map_err(store_error)
    }

    async fn add_to_incident(
        &self,
        id: &str,
        states: &[&str],
        entry: &TimelineEntry,
        subjects: &[SubjectRecord],
        events: &[OutboxMessage],
    ) -> Result<bool, StoreError> {
        let sql = format!(
            "UPDATE security_incidents SET updated_at = $2 WHERE id = $1 AND state IN ({})",
            placeholders(3, states.len())
        );
        on_pool!(self, pool => async {
            let mut tx = pool.begin().await?;
            let mut query = sqlx::query(&sql).bind(id).bind(entry.at.unix_millis());
            for state in states {
                query = query.bind(*state);
            }
            if query.execute(&mut *tx).await?.rows_affected() == 0 {
                tx.rollback().await?;
                return Ok(false);
            }
            write_entry!(tx, id, entry);
            write_subjects!(tx, id, subjects);
            write_messages!(tx, events);
            tx.commit().await?;
            Ok::<bool, sqlx::Error>(true)
        }.await)
        .map_err(store_error)
    }

    async fn is_staff_of(&self, merchant: &str, staff: &str) -> Result<bool, StoreError> {
        let found: Option<i32> = on_pool!(self, pool => sqlx::query_scalar(
                "SELECT 1 FROM staff WHERE id = $1 AND merchant_id = $2",
            )
            .bind(staff)
            .bind(merchant)
            .fetch_optional(pool)
            .await)
        .map_err(store_error)?;
        Ok(found.is_some())
    }

    async fn end_sessions_of(&self, merchant: Option<&str>, at: Timestamp) -> Result<u64, StoreError> {
        let at = at.unix_millis();
        on_pool!(self, pool => async {
            let mut tx = pool.begin().await?;
            let mut ended = sqlx::query(
                "UPDATE customer_sessions SET ended_at = $1 WHERE ended_at IS NULL AND expires_at > $1 \
                 AND ($2 = '*' OR merchant_id = $2)",
            )
            .bind(at)
            .bind(merchant.unwrap_or("*"))
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if merchant.is_none() {
                ended += sqlx::query(
                    "UPDATE staff_sessions SET ended_at = $1 WHERE ended_at IS NULL AND expires_at > $1",
                )
                .bind(at)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            }
            tx.commit().await?;
            Ok::<u64, sqlx::Error>(ended)
        }.await)
        .map_err(store_error)
    }

    async fn freeze(&self, merchant: &str, kind: FreezeKind, by: &str, at: Timestamp) -> Result<bool, StoreError> {
        let sql = match kind {
            FreezeKind::Refunds => {
                "INSERT INTO security_freezes (merchant_id, refunds_frozen_at, refunds_frozen_by) VALUES ($1, $2, $3) \
                 ON CONFLICT (merchant_id) DO UPDATE SET refunds_frozen_at = excluded.refunds_frozen_at, \
                 refunds_frozen_by = excluded.refunds_frozen_by WHERE security_freezes.refunds_frozen_at IS NULL"
            }
            FreezeKind::Forwarding => {
                "INSERT INTO security_freezes (merchant_id, forwarding_frozen_at, forwarding_frozen_by) \
                 VALUES ($1, $2, $3) ON CONFLICT (merchant_id) DO UPDATE SET \
                 forwarding_frozen_at = excluded.forwarding_frozen_at, \
                 forwarding_frozen_by = excluded.forwarding_frozen_by \
                 WHERE security_freezes.forwarding_frozen_at IS NULL"
            }
        };
        let changed = on_pool!(self, pool => sqlx::query(sql)
            .bind(merchant)
            .bind(at.unix_millis())
            .bind(by)
            .execute(pool)
            .await
            .map(|r| r.rows_affected()))
        .map_err(store_error)?;
        Ok(changed == 1)
    }

    async fn unfreeze(&self, merchant: &str, kind: FreezeKind) -> Result<bool, StoreError> {
        let sql = match kind {
            FreezeKind::Refunds => {
                "UPDATE security_freezes SET refunds_frozen_at = NULL, refunds_frozen_by = NULL \
                 WHERE merchant_id = $1 AND refunds_frozen_at IS NOT NULL"
            }
            FreezeKind::Forwarding => {
                "UPDATE security_freezes SET forwarding_frozen_at = NULL, forwarding_frozen_by = NULL \
                 WHERE merchant_id = $1 AND forwarding_frozen_at IS NOT NULL"
            }
        };
        let changed =
            on_pool!(self, pool => sqlx::query(sql).bind(merchant).execute(pool).await.map(|r| r.rows_affected()))
                .map_err(store_error)?;
        Ok(changed == 1)
    }

    async fn frozen(&self, merchant: &str, kind: FreezeKind) -> Result<Option<(Timestamp, String)>, StoreError> {
        let sql = match kind {
            FreezeKind::Refunds => {
                "SELECT refunds_frozen_at, refunds_frozen_by FROM security_freezes WHERE merchant_id = $1"
            }
            FreezeKind::Forwarding => {
                "SELECT forwarding_frozen_at, forwarding_frozen_by FROM security_freezes WHERE merchant_id = $1"
            }
        };
        let row: Option<(Option<i64>, Option<String>)> =
            on_pool!(self, pool => sqlx::query_as(sql).bind(merchant).fetch_optional(pool).await)
                .map_err(store_error)?;
        Ok(row.and_then(|(at, by)| Some((Timestamp::from_unix_millis(at?), by.unwrap_or_default()))))
    }
}
