//! `Idempotency-Key` records on both backends. A claim is one upsert whose affected-row count
//! decides; finishing and releasing only touch a claim still in progress.
//! Must never: let two requests hold one live claim, or overwrite a finished answer.

use async_trait::async_trait;
use sqlx::FromRow;
use strongroom_domain::StoreError;
use strongroom_domain::idempotency::{IdempotencyRecord, IdempotencyRepository};
use strongroom_types::Timestamp;

use crate::{Store, on_pool, store_error};

#[derive(FromRow)]
struct KeyRow {
    scope: Vec<u8>,
    key: String,
    request_hash: Vec<u8>,
    state: String,
    status: Option<i64>,
    content_type: Option<String>,
    body_sealed: Option<Vec<u8>>,
    locked_until: i64,
    expires_at: i64,
}

#[async_trait]
impl IdempotencyRepository for Store {
    async fn claim_key(&self, claim: &IdempotencyRecord, now: Timestamp) -> Result<bool, StoreError> {
        // Inserted, or taken over when the old record expired: either way one row is affected.
        // A claim cut off by a crash is never taken over (its effect may have happened).
        on_pool!(self, pool =>
            sqlx::query(
                "INSERT INTO idempotency_keys (scope, key, request_hash, state, locked_until, expires_at, created_at) \
                 VALUES ($1, $2, $3, 'in_progress', $4, $5, $6) \
                 ON CONFLICT (scope, key) DO UPDATE SET request_hash = excluded.request_hash, state = 'in_progress', \
                 status = NULL, content_type = NULL, body_sealed = NULL, locked_until = excluded.locked_until, \
                 expires_at = excluded.expires_at, created_at = excluded.created_at \
                 WHERE idempotency_keys.expires_at <= $6",
            )
            .bind(&claim.scope)
            .bind(&claim.key)
            .bind(&claim.request_hash)
            .bind(claim.locked_until.unix_millis())
            .bind(claim.expires_at.unix_millis())
            .bind(now.unix_millis())
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
        )
        .map(|n| n == 1)
        .map_err(store_error)
    }

    async fn key_record(&self, scope: &[u8], key: &str) -> Result<Option<IdempotencyRecord>, StoreError> {
        let row: Option<KeyRow> = on_pool!(self, pool =>
            sqlx::query_as(
                "SELECT scope, key, request_hash, state, status, content_type, body_sealed, locked_until, expires_at \
                 FROM idempotency_keys WHERE scope = $1 AND key = $2",
            )
            .bind(scope)
            .bind(key)
            .fetch_optional(pool)
            .await
        )
        .map_err(store_error)?;
        Ok(row.map(|r| IdempotencyRecord {
            scope: r.scope,
            key: r.key,
            request_hash: r.request_hash,
            state: r.state,
            status: r.status.and_then(|s| u16::try_from(s).ok()),
            content_type: r.content_type,
            body_sealed: r.body_sealed,
            locked_until: Timestamp::from_unix_millis(r.locked_until),
            expires_at: Timestamp::from_unix_millis(r.expires_at),
        }))
    }

    async fn finish_key(
        &self,
        scope: &[u8],
        key: &str,
        state: &str,
        status: u16,
        content_type: Option<&str>,
        body_sealed: Option<&[u8]>,
    ) -> Result<(), StoreError> {
        on_pool!(self, pool =>
            sqlx::query(
                "UPDATE idempotency_keys SET state = $3, status = $4, content_type = $5, body_sealed = $6 \
                 WHERE scope = $1 AND key = $2 AND state = 'in_progress'",
            )
            .bind(scope)
            .bind(key)
            .bind(state)
            .bind(i64::from(status))
            .bind(content_type)
            .bind(body_sealed)
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
        )
        .map(|_| ())
        .map_err(store_error)
    }

    async fn release_key(&self, scope: &[u8], key: &str) -> Result<(), StoreError> {
        on_pool!(self, pool =>
            sqlx::query("DELETE FROM idempotency_keys WHERE scope = $1 AND key = $2 AND state = 'in_progress'")
                .bind(scope)
                .bind(key)
                .execute(pool)
                .await
                .map(|r| r.rows_affected())
        )
        .map(|_| ())
        .map_err(store_error)
    }

    async fn purge_keys(&self, now: Timestamp, _limit: u32) -> Result<u64, StoreError> {
        on_pool!(self, pool =>
            sqlx::query("DELETE FROM idempotency_keys WHERE expires_at <= $1")
                .bind(now.unix_millis())
                .execute(pool)
                .await
                .map(|r| r.rows_affected())
        )
        .map_err(store_error)
    }
}
