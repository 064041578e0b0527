//! `passkeys` and `webauthn_ceremonies`. A credential id is registered once across the
//! deployment (a unique index); a ceremony's state is taken by one `DELETE … RETURNING`, so an
//! answer cannot be verified twice; a passkey's new counter is stored by compare-and-set on the
//! state it was verified against.

use async_trait::async_trait;
use sqlx::FromRow;
use strongroom_domain::StoreError;
use strongroom_domain::merchants::MerchantId;
use strongroom_domain::ports::{CeremonyRecord, PasskeyRecord, PasskeyRepository};
use strongroom_types::Timestamp;

use crate::{Store, on_pool, store_error};

#[derive(FromRow)]
struct PasskeyRow {
    id: String,
    merchant_id: String,
    owner_kind: String,
    owner_id: String,
    credential_id: Vec<u8>,
    passkey: String,
    label: String,
    created_at: i64,
    last_used_at: Option<i64>,
}

fn merchant(text: &str) -> Result<MerchantId, StoreError> {
    MerchantId::parse(text).map_err(|_| StoreError::Other("stored merchant id is not valid".into()))
}

impl TryFrom<PasskeyRow> for PasskeyRecord {
    type Error = StoreError;
    fn try_from(row: PasskeyRow) -> Result<Self, StoreError> {
        Ok(PasskeyRecord {
            id: row.id,
            merchant_id: merchant(&row.merchant_id)?,
            owner_kind: row.owner_kind,
            owner_id: row.owner_id,
            credential_id: row.credential_id,
            passkey: row.passkey,
            label: row.label,
            created_at: Timestamp::from_unix_millis(row.created_at),
            last_used_at: row.last_used_at.map(Timestamp::from_unix_millis),
        })
    }
}

const PASSKEY_COLUMNS: &str =
    "id, merchant_id, owner_kind, owner_id, credential_id, passkey, label, created_at, last_used_at";

#[derive(FromRow)]
struct CeremonyRow {
    id: String,
    merchant_id: String,
    owner_kind: String,
    owner_id: Option<String>,
    purpose: String,
    state: String,
    created_at: i64,
    expires_at: i64,
}

#[async_trait]
impl PasskeyRepository for Store {
    async fn insert_passkey(&self, p: &PasskeyRecord, max: usize) -> Result<bool, StoreError> {
        // The owner's row is locked first (a no-op update), so parallel registrations of one
        // owner run one after the other and the count the conditional insert reads is current.
        let lock = match p.owner_kind.as_str() {
            "staff" => "UPDATE staff SET status = status WHERE id = $1",
            _ => "UPDATE customers SET status = status WHERE id = $1",
        };
        let sql = format!(
            "INSERT INTO passkeys ({PASSKEY_COLUMNS}) SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9 \
             WHERE (SELECT COUNT(*) FROM passkeys WHERE owner_kind = $3 AND owner_id = $4) < $10 ON CONFLICT DO NOTHING"
        );
        let max = i64::try_from(max).unwrap_or(i64::MAX);
        on_pool!(self, pool => async {
            let mut tx = pool.begin().await?;
            sqlx::query(lock).bind(&p.owner_id).execute(&mut *tx).await?;
            let inserted = sqlx::query(&sql)
                .bind(&p.id)
                .bind(p.merchant_id.as_str())
                .bind(&p.owner_kind)
                .bind(&p.owner_id)
                .bind(&p.credential_id)
                .bind(&p.passkey)
                .bind(&p.label)
                .bind(p.created_at.unix_millis())
                .bind(p.last_used_at.map(Timestamp::unix_millis))
                .bind(max)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            tx.commit().await?;
            Ok::<bool, sqlx::Error>(inserted == 1)
        }.await)
        .map_err(store_error)
    }

    async fn passkeys_of(&self, owner_kind: &str, owner_id: &str) -> Result<Vec<PasskeyRecord>, StoreError> {
        let sql = format!(
            "SELECT {PASSKEY_COLUMNS} FROM passkeys WHERE owner_kind = $1 AND owner_id = $2 ORDER BY created_at, id LIMIT 100"
        );
        let rows: Vec<PasskeyRow> =
            on_pool!(self, pool => sqlx::query_as(&sql).bind(owner_kind).bind(owner_id).fetch_all(pool).await)
                .map_err(store_error)?;
        rows.into_iter().map(TryInto::try_into).collect()
    }

    async fn passkey_by_credential(&self, credential_id: &[u8]) -> Result<Option<PasskeyRecord>, StoreError> {
        let sql = format!("SELECT {PASSKEY_COLUMNS} FROM passkeys WHERE credential_id = $1");
        let row: Option<PasskeyRow> =
            on_pool!(self, pool => sqlx::query_as(&sql).bind(credential_id).fetch_optional(pool).await)
                .map_err(store_error)?;
        row.map(TryInto::try_into).transpose()
    }

    async fn passkey_used(
        &self,
        id: &str,
        expected: Option<&str>,
        passkey: Option<&str>,
        at: Timestamp,
    ) -> Result<bool, StoreError> {
        let sql = "UPDATE passkeys SET passkey = COALESCE($1, passkey), last_used_at = $2 \
                   WHERE id = $3 AND ($4 IS NULL OR passkey = $4)";
        on_pool!(self, pool => sqlx::query(sql).bind(passkey).bind(at.unix_millis()).bind(id).bind(expected)
            .execute(pool).await.map(|r| r.rows_affected() == 1))
        .map_err(store_error)
    }

    async fn delete_passkey(&self, owner_kind: &str, owner_id: &str, id: &str) -> Result<bool, StoreError> {
        let sql = "DELETE FROM passkeys WHERE owner_kind = $1 AND owner_id = $2 AND id = $3";
        on_pool!(self, pool => sqlx::query(sql).bind(owner_kind).bind(owner_id).bind(id).execute(pool).await
            .map(|r| r.rows_affected() == 1))
        .map_err(store_error)
    }

    async fn insert_ceremony(&self, c: &CeremonyRecord) -> Result<(), StoreError> {
        let sql = "INSERT INTO webauthn_ceremonies (id, merchant_id, owner_kind, owner_id, purpose, state, created_at, expires_at) \
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";
        on_pool!(self, pool => sqlx::query(sql)
            .bind(&c.id)
            .bind(c.merchant_id.as_str())
            .bind(&c.owner_kind)
            .bind(&c.owner_id)
            .bind(&c.purpose)
            .bind(&c.state)
            .bind(c.created_at.unix_millis())
            .bind(c.expires_at.unix_millis())
            .execute(pool)
            .await
            .map(|_| ()))
        .map_err(store_error)
    }

    async fn take_ceremony(&self, id: &str, now: Timestamp) -> Result<Option<CeremonyRecord>, StoreError> {
        // Expired ceremonies are swept along with the one taken.
        let sql = "DELETE FROM webauthn_ceremonies WHERE id = $1 OR expires_at <= $2 \
                   RETURNING id, merchant_id, owner_kind, owner_id, purpose, state, created_at, expires_at";
        let rows: Vec<CeremonyRow> =
            on_pool!(self, pool => sqlx::query_as(sql).bind(id).bind(now.unix_millis()).fetch_all(pool).await)
                .map_err(store_error)?;
        let Some(row) = rows.into_iter().find(|r| r.id == id && r.expires_at > now.unix_millis()) else {
            return Ok(None);
        };
        Ok(Some(CeremonyRecord {
            id: row.id,
            merchant_id: merchant(&row.merchant_id)?,
            owner_kind: row.owner_kind,
            owner_id: row.owner_id,
            purpose: row.purpose,
            state: row.state,
            created_at: Timestamp::from_unix_millis(row.created_at),
            expires_at: Timestamp::from_unix_millis(row.expires_at),
        }))
    }
}
