//! The repository implementations. Every query here is shared by both backends.

use async_trait::async_trait;
use sqlx::FromRow;
use strongroom_domain::StoreError;
use strongroom_domain::api_keys::{ApiKeyId, ApiKeyRecord, Mode, Scope};
use strongroom_domain::merchants::{Merchant, MerchantId};
use strongroom_domain::ports::{
    ApiKeyRepository, BootstrapRecords, HealthRepository, KeyringRepository, MerchantRepository, WrappedKey,
};
use strongroom_types::Timestamp;

use crate::{Store, on_pool, store_error};

fn corrupt(what: &str) -> StoreError {
    StoreError::Other(format!("stored {what} is not valid"))
}

#[derive(FromRow)]
struct MerchantRow {
    id: String,
    name: String,
    created_at: i64,
}

impl TryFrom<MerchantRow> for Merchant {
    type Error = StoreError;
    fn try_from(row: MerchantRow) -> Result<Self, StoreError> {
        Ok(Merchant {
            id: MerchantId::parse(&row.id).map_err(|_| corrupt("merchant id"))?,
            name: row.name,
            created_at: Timestamp::from_unix_millis(row.created_at),
        })
    }
}

#[derive(FromRow)]
struct ApiKeyRow {
    id: String,
    merchant_id: String,
    name: String,
    mode: String,
    scopes: String,
    digest: Vec<u8>,
    created_at: i64,
    expires_at: Option<i64>,
    last_used_at: Option<i64>,
    revoked_at: Option<i64>,
    decoy: bool,
}

impl TryFrom<ApiKeyRow> for ApiKeyRecord {
    type Error = StoreError;
    fn try_from(row: ApiKeyRow) -> Result<Self, StoreError> {
        let scopes = row
            .scopes
            .split_whitespace()
            .map(|s| Scope::parse(s).ok_or_else(|| corrupt("api key scope")))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ApiKeyRecord {
            id: ApiKeyId::parse(&row.id).map_err(|_| corrupt("api key id"))?,
            merchant_id: MerchantId::parse(&row.merchant_id).map_err(|_| corrupt("merchant id"))?,
            name: row.name,
            mode: Mode::parse(&row.mode).ok_or_else(|| corrupt("api key mode"))?,
            scopes,
            digest: row.digest,
            created_at: Timestamp::from_unix_millis(row.created_at),
            expires_at: row.expires_at.map(Timestamp::from_unix_millis),
            last_used_at: row.last_used_at.map(Timestamp::from_unix_millis),
            revoked_at: row.revoked_at.map(Timestamp::from_unix_millis),
            decoy: row.decoy,
        })
    }
}

fn scopes_text(scopes: &[Scope]) -> String {
    scopes.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(" ")
}

const API_KEY_COLUMNS: &str =
    "id, merchant_id, name, mode, scopes, digest, created_at, expires_at, last_used_at, revoked_at, decoy";

const INSERT_API_KEY: &str = "INSERT INTO api_keys (id, merchant_id, name, mode, scopes, digest, created_at, expires_at, last_used_at, revoked_at, decoy) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)";

#[async_trait]
impl HealthRepository for Store {
    async fn ping(&self) -> Result<(), StoreError> {
        // A failed sync of SQLite's log stops the writer until a restart: not ready.
        if let Some(failed) = self.direct.as_ref().and_then(|direct| direct.failure()) {
            return Err(failed);
        }
        on_pool!(self, pool => sqlx::query("SELECT 1").execute(pool).await.map(|r| r.rows_affected()))
            .map_err(store_error)?;
        Ok(())
    }

    async fn acquire_wait(&self) -> Result<std::time::Duration, StoreError> {
        let started = std::time::Instant::now();
        on_pool!(self, pool => pool.acquire().await.map(drop)).map_err(store_error)?;
        Ok(started.elapsed())
    }

    fn pool_stats(&self) -> strongroom_domain::ports::PoolStats {
        let (open, idle, max) =
            on_pool!(self, pool => (pool.size(), pool.num_idle(), pool.options().get_max_connections()));
        strongroom_domain::ports::PoolStats { open, idle: u32::try_from(idle).unwrap_or(u32::MAX), max }
    }
}

#[async_trait]
impl strongroom_domain::ports::Durability for Store {
    async fn settled(&self) -> Result<(), StoreError> {
        match &self.direct {
            Some(direct) => direct.settled().await,
            None => Ok(()),
        }
    }
}

#[async_trait]
impl MerchantRepository for Store {
    async fn merchant(&self, id: &MerchantId) -> Result<Option<Merchant>, StoreError> {
        let sql = "SELECT id, name, created_at FROM merchants WHERE id = $1";
        let row: Option<MerchantRow> = on_pool!(self, pool =>
            sqlx::query_as(sql).bind(id.as_str()).fetch_optional(pool).await
        )
        .map_err(store_error)?;
        row.map(Merchant::try_from).transpose()
    }

    async fn bootstrap_once(&self, records: &BootstrapRecords) -> Result<bool, StoreError> {
        let m = &records.merchant;
        let k = &records.api_key;
        on_pool!(self, pool => {
            let mut tx = pool.begin().await.map_err(store_error)?;
            sqlx::query("INSERT INTO merchants (id, name, created_at) VALUES ($1, $2, $3)")
                .bind(m.id.as_str())
                .bind(&m.name)
                .bind(m.created_at.unix_millis())
                .execute(&mut *tx)
                .await
                .map_err(store_error)?;
            let claimed = sqlx::query(
                "INSERT INTO bootstrap (singleton, merchant_id, created_at) VALUES (1, $1, $2) ON CONFLICT (singleton) DO NOTHING",
            )
            .bind(m.id.as_str())
            .bind(m.created_at.unix_millis())
            .execute(&mut *tx)
            .await
            .map_err(store_error)?
            .rows_affected();
            if claimed == 0 {
                tx.rollback().await.map_err(store_error)?;
                return Ok(false);
            }
            bind_api_key(sqlx::query(INSERT_API_KEY), k).execute(&mut *tx).await.map_err(store_error)?;
            tx.commit().await.map_err(store_error)?;
            Ok(true)
        })
    }
}

fn bind_api_key<'q, DB: sqlx::Database>(
    query: sqlx::query::Query<'q, DB, <DB as sqlx::Database>::Arguments<'q>>,
    key: &'q ApiKeyRecord,
) -> sqlx::query::Query<'q, DB, <DB as sqlx::Database>::Arguments<'q>>
where
    &'q str: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    String: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    &'q [u8]: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    i64: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    Option<i64>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    bool: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
{
    query
        .bind(key.id.as_str())
        .bind(key.merchant_id.as_str())
        .bind(key.name.as_str())
        .bind(key.mode.as_str())
        .bind(scopes_text(&key.scopes))
        .bind(key.digest.as_slice())
        .bind(key.created_at.unix_millis())
        .bind(key.expires_at.map(Timestamp::unix_millis))
        .bind(key.last_used_at.map(Timestamp::unix_millis))
        .bind(key.revoked_at.map(Timestamp::unix_millis))
        .bind(key.decoy)
}

#[async_trait]
impl ApiKeyRepository for Store {
    async fn insert(&self, key: &ApiKeyRecord) -> Result<(), StoreError> {
        on_pool!(self, pool => bind_api_key(sqlx::query(INSERT_API_KEY), key).execute(pool).await.map(|r| r.rows_affected()))
            .map_err(store_error)?;
        Ok(())
    }

    async fn by_id_for_auth(&self, id: &ApiKeyId) -> Result<Option<ApiKeyRecord>, StoreError> {
        let sql = format!("SELECT {API_KEY_COLUMNS} FROM api_keys WHERE id = $1");
        let row: Option<ApiKeyRow> = on_pool!(self, pool =>
            sqlx::query_as(&sql).bind(id.as_str()).fetch_optional(pool).await
        )
        .map_err(store_error)?;
        row.map(ApiKeyRecord::try_from).transpose()
    }

    async fn get(&self, merchant: &MerchantId, id: &ApiKeyId) -> Result<Option<ApiKeyRecord>, StoreError> {
        let sql = format!("SELECT {API_KEY_COLUMNS} FROM api_keys WHERE merchant_id = $1 AND id = $2");
        let row: Option<ApiKeyRow> = on_pool!(self, pool =>
            sqlx::query_as(&sql).bind(merchant.as_str()).bind(id.as_str()).fetch_optional(pool).await
        )
        .map_err(store_error)?;
        row.map(ApiKeyRecord::try_from).transpose()
    }

    async fn list(
        &self,
        merchant: &MerchantId,
        only: Option<Mode>,
        starting_after: Option<&ApiKeyId>,
        limit: u32,
    ) -> Result<Vec<ApiKeyRecord>, StoreError> {
        let only = only.map(Mode::as_str);
        let rows: Vec<ApiKeyRow> = match starting_after {
            None => {
                let sql = format!(
                    "SELECT {API_KEY_COLUMNS} FROM api_keys WHERE merchant_id = $1 AND ($3 IS NULL OR mode = $3) \
                     ORDER BY created_at DESC, id DESC LIMIT $2"
                );
                on_pool!(self, pool =>
                    sqlx::query_as(&sql).bind(merchant.as_str()).bind(i64::from(limit)).bind(only).fetch_all(pool).await
                )
            }
            Some(cursor) => {
                let sql = format!(
                    "SELECT {API_KEY_COLUMNS} FROM api_keys WHERE merchant_id = $1 AND ($4 IS NULL OR mode = $4) \
                     AND (created_at, id) < (SELECT created_at, id FROM api_keys WHERE merchant_id = $1 AND id = $2) \
                     ORDER BY created_at DESC, id DESC LIMIT $3"
                );
                on_pool!(self, pool =>
                    sqlx::query_as(&sql)
                        .bind(merchant.as_str())
                        .bind(cursor.as_str())
                        .bind(i64::from(limit))
                        .bind(only)
                        .fetch_all(pool)
                        .await
                )
            }
        }
        .map_err(store_error)?;
        rows.into_iter().map(ApiKeyRecord::try_from).collect()
    }

    async fn revoke(
        &self,
        merchant: &MerchantId,
        id: &ApiKeyId,
        at: Timestamp,
    ) -> Result<Option<ApiKeyRecord>, StoreError> {
        let sql = format!(
            "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, $1) WHERE merchant_id = $2 AND id = $3 \
             RETURNING {API_KEY_COLUMNS}"
        );
        let row: Option<ApiKeyRow> = on_pool!(self, pool =>
            sqlx::query_as(&sql)
                .bind(at.unix_millis())
                .bind(merchant.as_str())
                .bind(id.as_str())
                .fetch_optional(pool)
                .await
        )
        .map_err(store_error)?;
        row.map(ApiKeyRecord::try_from).transpose()
    }

    async fn touch_last_used(&self, id: &ApiKeyId, at: Timestamp) -> Result<(), StoreError> {
        let sql = "UPDATE api_keys SET last_used_at = $1 WHERE id = $2 AND (last_used_at IS NULL OR last_used_at < $1)";
        on_pool!(self, pool => sqlx::query(sql).bind(at.unix_millis()).bind(id.as_str()).execute(pool).await.map(|r| r.rows_affected()))
            .map_err(store_error)?;
        Ok(())
    }
}

#[derive(FromRow)]
struct WrappedKeyRow {
    name: String,
    kms_key_id: String,
    wrapped: Vec<u8>,
    created_at: i64,
}

impl From<WrappedKeyRow> for WrappedKey {
    fn from(row: WrappedKeyRow) -> Self {
        WrappedKey {
            name: row.name,
            kms_key_id: row.kms_key_id,
            wrapped: row.wrapped,
            created_at: Timestamp::from_unix_millis(row.created_at),
        }
    }
}

#[async_trait]
impl KeyringRepository for Store {
    async fn get(&self, name: &str) -> Result<Option<WrappedKey>, StoreError> {
        let sql = "SELECT name, kms_key_id, wrapped, created_at FROM keyring WHERE name = $1";
        let row: Option<WrappedKeyRow> =
            on_pool!(self, pool => sqlx::query_as(sql).bind(name).fetch_optional(pool).await).map_err(store_error)?;
        Ok(row.map(WrappedKey::from))
    }

    async fn insert_if_absent(&self, key: &WrappedKey) -> Result<WrappedKey, StoreError> {
        let sql = "INSERT INTO keyring (name, kms_key_id, wrapped, created_at) VALUES ($1, $2, $3, $4) \
                   ON CONFLICT (name) DO NOTHING";
        on_pool!(self, pool =>
            sqlx::query(sql)
                .bind(key.name.as_str())
                .bind(key.kms_key_id.as_str())
                .bind(key.wrapped.as_slice())
                .bind(key.created_at.unix_millis())
                .execute(pool)
                .await
                .map(|r| r.rows_affected())
        )
        .map_err(store_error)?;
        KeyringRepository::get(self, &key.name)
            .await?
            .ok_or_else(|| StoreError::Other("keyring entry vanished after insert".to_owned()))
    }

    async fn replace_wrapped(&self, name: &str, kms_key_id: &str, wrapped: &[u8]) -> Result<(), StoreError> {
        let sql = "UPDATE keyring SET kms_key_id = $1, wrapped = $2 WHERE name = $3";
        on_pool!(self, pool =>
            sqlx::query(sql).bind(kms_key_id).bind(wrapped).bind(name).execute(pool).await.map(|r| r.rows_affected())
        )
        .map_err(store_error)?;
        Ok(())
    }
}

impl Store {
    /// The merchant created at first start, if the deployment has been started.
    pub async fn first_merchant(&self) -> Result<Option<MerchantId>, StoreError> {
        let sql = "SELECT merchant_id FROM bootstrap WHERE singleton = 1";
        let id: Option<String> =
            on_pool!(self, pool => sqlx::query_scalar(sql).fetch_optional(pool).await).map_err(store_error)?;
        id.map(|id| MerchantId::parse(&id).map_err(|_| corrupt("merchant id"))).transpose()
    }
}
