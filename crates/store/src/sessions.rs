//! Sessions of both owners: `customer_sessions` and `staff_sessions`, one implementation.
//! The two tables have the same columns but their owner's; each keeps its foreign key (erasing a
//! customer or deleting a staff member takes their sessions with them), and every statement here
//! is written once and pointed at one of them by [`SessionOwner`], never by input.
//! Ending and touching are conditional updates, so a session ended on one request cannot be
//! revived or outlived by another.

use async_trait::async_trait;
use sqlx::FromRow;
use strongroom_domain::StoreError;
use strongroom_domain::merchants::MerchantId;
use strongroom_domain::sessions::{SessionOwner, SessionRecord, SessionRepository};
use strongroom_types::Timestamp;

use crate::{Store, on_pool, store_error};

/// The owner's table and the column naming its subject.
fn table(owner: SessionOwner) -> (&'static str, &'static str) {
    match owner {
        SessionOwner::Customer => ("customer_sessions", "customer_id"),
        SessionOwner::Staff => ("staff_sessions", "staff_id"),
    }
}

fn columns(owner: SessionOwner) -> String {
    let (_, subject) = table(owner);
    format!(
        "id, merchant_id, {subject} AS subject_id, token_digest, factors, user_agent, ip, created_at, last_seen_at, \
         expires_at, ended_at"
    )
}

#[derive(FromRow)]
struct SessionRow {
    id: String,
    merchant_id: String,
    subject_id: String,
    token_digest: Vec<u8>,
    factors: String,
    user_agent: Option<String>,
    ip: Option<String>,
    created_at: i64,
    last_seen_at: i64,
    expires_at: i64,
    ended_at: Option<i64>,
}

impl SessionRow {
    fn into_record(self, owner: SessionOwner) -> Result<SessionRecord, StoreError> {
        Ok(SessionRecord {
            id: self.id,
            owner,
            merchant_id: MerchantId::parse(&self.merchant_id)
                .map_err(|_| StoreError::Other("stored merchant id is not valid".to_owned()))?,
            subject_id: self.subject_id,
            token_digest: self.token_digest,
            factors: self.factors,
            user_agent: self.user_agent,
            ip: self.ip,
            created_at: Timestamp::from_unix_millis(self.created_at),
            last_seen_at: Timestamp::from_unix_millis(self.last_seen_at),
            expires_at: Timestamp::from_unix_millis(self.expires_at),
            ended_at: self.ended_at.map(Timestamp::from_unix_millis),
        })
    }
}

#[async_trait]
impl SessionRepository for Store {
    async fn insert_session(&self, s: &SessionRecord) -> Result<(), StoreError> {
        let (table, subject) = table(s.owner);
        let sql = format!(
            "INSERT INTO {table} (id, merchant_id, {subject}, token_digest, factors, user_agent, ip, created_at, \
             last_seen_at, expires_at, ended_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
        );
        on_pool!(self, pool => sqlx::query(&sql)
            .bind(&s.id)
            .bind(s.merchant_id.as_str())
            .bind(&s.subject_id)
            .bind(&s.token_digest)
            .bind(&s.factors)
            .bind(&s.user_agent)
            .bind(&s.ip)
            .bind(s.created_at.unix_millis())
            .bind(s.last_seen_at.unix_millis())
            .bind(s.expires_at.unix_millis())
            .bind(s.ended_at.map(Timestamp::unix_millis))
            .execute(pool)
            .await
            .map(|_| ()))
        .map_err(store_error)
    }

    async fn session_by_digest(&self, owner: SessionOwner, digest: &[u8]) -> Result<Option<SessionRecord>, StoreError> {
        let sql = format!("SELECT {} FROM {} WHERE token_digest = $1", columns(owner), table(owner).0);
        let row: Option<SessionRow> =
            on_pool!(self, pool => sqlx::query_as(&sql).bind(digest).fetch_optional(pool).await)
                .map_err(store_error)?;
        row.map(|r| r.into_record(owner)).transpose()
    }

    async fn touch_session(&self, owner: SessionOwner, id: &str, at: Timestamp) -> Result<(), StoreError> {
        let sql = format!("UPDATE {} SET last_seen_at = $1 WHERE id = $2 AND last_seen_at < $1", table(owner).0);
        on_pool!(self, pool => sqlx::query(&sql).bind(at.unix_millis()).bind(id).execute(pool).await.map(|_| ()))
            .map_err(store_error)
    }

    async fn live_sessions(
        &self,
        owner: SessionOwner,
        merchant: &MerchantId,
        subject: &str,
        now: Timestamp,
    ) -> Result<Vec<SessionRecord>, StoreError> {
        let (table, subject_column) = table(owner);
        let sql = format!(
            "SELECT {} FROM {table} WHERE merchant_id = $1 AND {subject_column} = $2 \
             AND ended_at IS NULL AND expires_at > $3 ORDER BY created_at DESC LIMIT 200",
            columns(owner)
        );
        let rows: Vec<SessionRow> = on_pool!(self, pool =>
            sqlx::query_as(&sql).bind(merchant.as_str()).bind(subject).bind(now.unix_millis()).fetch_all(pool).await)
        .map_err(store_error)?;
        rows.into_iter().map(|r| r.into_record(owner)).collect()
    }

    async fn end_session(
        &self,
        owner: SessionOwner,
        merchant: &MerchantId,
        subject: &str,
        id: &str,
        at: Timestamp,
    ) -> Result<bool, StoreError> {
        let (table, subject_column) = table(owner);
        let sql = format!(
            "UPDATE {table} SET ended_at = $1 WHERE merchant_id = $2 AND {subject_column} = $3 AND id = $4 \
             AND ended_at IS NULL AND expires_at > $1"
        );
        on_pool!(self, pool => sqlx::query(&sql).bind(at.unix_millis()).bind(merchant.as_str()).bind(subject).bind(id)
            .execute(pool).await.map(|r| r.rows_affected() == 1))
        .map_err(store_error)
    }

    async fn end_sessions_except(
        &self,
        owner: SessionOwner,
        merchant: &MerchantId,
        subject: &str,
        keep: Option<&str>,
        at: Timestamp,
    ) -> Result<Vec<String>, StoreError> {
        let (table, subject_column) = table(owner);
        let sql = format!(
            "UPDATE {table} SET ended_at = $1 WHERE merchant_id = $2 AND {subject_column} = $3 \
             AND ended_at IS NULL AND id <> $4 RETURNING id"
        );
        on_pool!(self, pool => sqlx::query_scalar(&sql).bind(at.unix_millis()).bind(merchant.as_str()).bind(subject)
            .bind(keep.unwrap_or("")).fetch_all(pool).await)
        .map_err(store_error)
    }

    async fn purge_sessions(&self, owner: SessionOwner, before: Timestamp, limit: u32) -> Result<u64, StoreError> {
        let table = table(owner).0;
        let sql = format!(
            "DELETE FROM {table} WHERE id IN (SELECT id FROM {table} WHERE expires_at < $1 OR ended_at < $1 LIMIT $2)"
        );
        on_pool!(self, pool => sqlx::query(&sql).bind(before.unix_millis()).bind(i64::from(limit))
            .execute(pool).await.map(|r| r.rows_affected()))
        .map_err(store_error)
    }
}
