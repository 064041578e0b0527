//! Identity's tables: `customers`, `customer_recovery_codes`, `login_failures`,
//! `customer_sessions`, `auth_challenges`. Single-use things (TOTP steps, recovery codes, step-up
//! proofs, challenge completion) are compare-and-set updates, so two requests cannot both use one.

use async_trait::async_trait;
use sqlx::FromRow;
use strongroom_domain::StoreError;
use strongroom_domain::merchants::MerchantId;
use strongroom_domain::modes::Mode;
use strongroom_domain::ports::{
    AccountStatus, ChallengePurpose, ChallengeRecord, CustomerRecord, IdentityRepository, LoginFailures,
};
use strongroom_types::Timestamp;

use crate::{Store, on_pool, store_error};

fn corrupt(what: &str) -> StoreError {
    StoreError::Other(format!("stored {what} is not valid"))
}

fn merchant(text: &str) -> Result<MerchantId, StoreError> {
    MerchantId::parse(text).map_err(|_| corrupt("merchant id"))
}

fn at(millis: Option<i64>) -> Option<Timestamp> {
    millis.map(Timestamp::from_unix_millis)
}

fn step(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

#[derive(FromRow)]
struct CustomerRow {
    id: String,
    merchant_id: String,
    email_lookup: Vec<u8>,
    email_sealed: Vec<u8>,
    data_key_id: String,
    email_verified_at: Option<i64>,
    password_hash: Option<String>,
    password_changed_at: Option<i64>,
    status: String,
    totp_sealed: Option<Vec<u8>>,
    totp_confirmed_at: Option<i64>,
    totp_last_step: Option<i64>,
    phrase_sealed: Option<Vec<u8>>,
    pending_email_lookup: Option<Vec<u8>>,
    pending_email_sealed: Option<Vec<u8>>,
    created_at: i64,
    mode: String,
}

impl TryFrom<CustomerRow> for CustomerRecord {
    type Error = StoreError;
    fn try_from(row: CustomerRow) -> Result<Self, StoreError> {
        Ok(CustomerRecord {
            id: row.id,
            merchant_id: merchant(&row.merchant_id)?,
            mode: Mode::parse(&row.mode).ok_or_else(|| corrupt("customer mode"))?,
            email_lookup: row.email_lookup,
            email_sealed: row.email_sealed,
            data_key_id: row.data_key_id,
            email_verified_at: at(row.email_verified_at),
            password_hash: row.password_hash,
            password_changed_at: at(row.password_changed_at),
            status: AccountStatus::parse(&row.status).ok_or_else(|| corrupt("account status"))?,
            totp_sealed: row.totp_sealed,
            totp_confirmed_at: at(row.totp_confirmed_at),
            totp_last_step: row.totp_last_step.map(|s| u64::try_from(s).unwrap_or(0)),
            phrase_sealed: row.phrase_sealed,
            pending_email: row.pending_email_lookup.zip(row.pending_email_sealed),
            created_at: Timestamp::from_unix_millis(row.created_at),
        })
    }
}

const CUSTOMER_COLUMNS: &str = "id, merchant_id, email_lookup, email_sealed, data_key_id, email_verified_at, \
     password_hash, password_changed_at, status, totp_sealed, totp_confirmed_at, totp_last_step, phrase_sealed, pending_email_lookup, pending_email_sealed, created_at, mode";

#[derive(FromRow)]
struct ChallengeRow {
    id: String,
    merchant_id: String,
    customer_id: String,
    purpose: String,
    binding_digest: Option<Vec<u8>>,
    session_id: Option<String>,
    client: Option<String>,
    created_at: i64,
    expires_at: i64,
    failures: i64,
    completed_at: Option<i64>,
    proof_digest: Option<Vec<u8>>,
    proof_expires_at: Option<i64>,
    proof_used_at: Option<i64>,
    code_digest: Option<Vec<u8>>,
    code_expires_at: Option<i64>,
}

impl TryFrom<ChallengeRow> for ChallengeRecord {
    type Error = StoreError;
    fn try_from(row: ChallengeRow) -> Result<Self, StoreError> {
        Ok(ChallengeRecord {
            id: row.id,
            merchant_id: merchant(&row.merchant_id)?,
            customer_id: row.customer_id,
            purpose: ChallengePurpose::parse(&row.purpose).ok_or_else(|| corrupt("challenge purpose"))?,
            binding_digest: row.binding_digest,
            session_id: row.session_id,
            client: row.client,
            created_at: Timestamp::from_unix_millis(row.created_at),
            expires_at: Timestamp::from_unix_millis(row.expires_at),
            failures: u32::try_from(row.failures).unwrap_or(u32::MAX),
            completed_at: at(row.completed_at),
            proof_digest: row.proof_digest,
            proof_expires_at: at(row.proof_expires_at),
            proof_used_at: at(row.proof_used_at),
            code_digest: row.code_digest,
            code_expires_at: at(row.code_expires_at),
        })
    }
}

const CHALLENGE_COLUMNS: &str = "id, merchant_id, customer_id, purpose, binding_digest, session_id, client, created_at, \
     expires_at, failures, completed_at, proof_digest, proof_expires_at, proof_used_at, code_digest, code_expires_at";

#[async_trait]
impl IdentityRepository for Store {
    async fn insert_customer(&self, c: &CustomerRecord) -> Result<bool, StoreError> {
        let sql = format!(
            "INSERT INTO customers ({CUSTOMER_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17) \
             ON CONFLICT DO NOTHING"
        );
        on_pool!(self, pool => sqlx::query(&sql)
            .bind(&c.id)
            .bind(c.merchant_id.as_str())
            .bind(&c.email_lookup)
            .bind(&c.email_sealed)
            .bind(&c.data_key_id)
            .bind(c.email_verified_at.map(Timestamp::unix_millis))
            .bind(&c.password_hash)
            .bind(c.password_changed_at.map(Timestamp::unix_millis))
            .bind(c.status.as_str())
            .bind(&c.totp_sealed)
            .bind(c.totp_confirmed_at.map(Timestamp::unix_millis))
            .bind(c.totp_last_step.map(step))
            .bind(&c.phrase_sealed)
            .bind(c.pending_email.as_ref().map(|(lookup, _)| lookup.clone()))
            .bind(c.pending_email.as_ref().map(|(_, sealed)| sealed.clone()))
            .bind(c.created_at.unix_millis())
            .bind(c.mode.as_str())
            .execute(pool)
            .await
            .map(|r| r.rows_affected() == 1))
        .map_err(store_error)
    }

    async fn customer(
        &self,
        merchant: &MerchantId,
        mode: Mode,
        id: &str,
    ) -> Result<Option<CustomerRecord>, StoreError> {
        let sql = format!("SELECT {CUSTOMER_COLUMNS} FROM customers WHERE merchant_id = $1 AND id = $2 AND mode = $3");
        let row: Option<CustomerRow> = on_pool!(self, pool =>
            sqlx::query_as(&sql).bind(merchant.as_str()).bind(id).bind(mode.as_str()).fetch_optional(pool).await)
        .map_err(store_error)?;
        row.map(TryInto::try_into).transpose()
    }

    async fn customer_by_email(
        &self,
        merchant: &MerchantId,
        mode: Mode,
        lookup: &[u8],
    ) -> Result<Option<CustomerRecord>, StoreError> {
        let sql = format!(
            "SELECT {CUSTOMER_COLUMNS} FROM customers WHERE merchant_id = $1 AND email_lookup = $2 AND mode = $3"
        );
        let row: Option<CustomerRow> = on_pool!(self, pool =>
            sqlx::query_as(&sql).bind(merchant.as_str()).bind(lookup).bind(mode.as_str()).fetch_optional(pool).await)
        .map_err(store_error)?;
        row.map(TryInto::try_into).transpose()
    }

    async fn set_password(&self, merchant: &MerchantId, id: &str, hash: &str, at: Timestamp) -> Result<(), StoreError> {
        let sql =
            "UPDATE customers SET password_hash = $1, password_changed_at = $2 WHERE merchant_id = $3 AND id = $4";
        on_pool!(self, pool => sqlx::query(sql).bind(hash).bind(at.unix_millis()).bind(merchant.as_str()).bind(id).execute(pool).await.map(|_| ()))
            .map_err(store_error)?;
        Ok(())
    }

    async fn set_status(
        &self,
        merchant: &MerchantId,
        id: &str,
        status: AccountStatus,
        at: Timestamp,
    ) -> Result<bool, StoreError> {
        on_pool!(self, pool => async {
            let mut tx = pool.begin().await?;
            let found = sqlx::query("UPDATE customers SET status = $1 WHERE merchant_id = $2 AND id = $3")
                .bind(status.as_str())
                .bind(merchant.as_str())
                .bind(id)
                .execute(&mut *tx)
                .await?
                .rows_affected() == 1;
            if found && status == AccountStatus::Disabled {
                sqlx::query("UPDATE customer_sessions SET ended_at = $1 WHERE customer_id = $2 AND ended_at IS NULL")
                    .bind(at.unix_millis())
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            Ok::<_, sqlx::Error>(found)
        }.await)
        .map_err(store_error)
    }

    async fn begin_totp(&self, merchant: &MerchantId, id: &str, sealed: &[u8]) -> Result<bool, StoreError> {
        let sql = "UPDATE customers SET totp_sealed = $1, totp_last_step = NULL \
                   WHERE merchant_id = $2 AND id = $3 AND totp_confirmed_at IS NULL";
        on_pool!(self, pool => sqlx::query(sql).bind(sealed).bind(merchant.as_str()).bind(id).execute(pool).await
            .map(|r| r.rows_affected() == 1))
        .map_err(store_error)
    }

    async fn confirm_totp(
        &self,
        merchant: &MerchantId,
        id: &str,
        totp_step: u64,
        at: Timestamp,
        recovery_digests: &[Vec<u8>],
    ) -> Result<bool, StoreError> {
        on_pool!(self, pool => async {
            let mut tx = pool.begin().await?;
            let confirmed = sqlx::query(
                "UPDATE customers SET totp_confirmed_at = $1, totp_last_step = $2 \
                 WHERE merchant_id = $3 AND id = $4 AND totp_sealed IS NOT NULL AND totp_confirmed_at IS NULL",
            )
            .bind(at.unix_millis())
            .bind(step(totp_step))
            .bind(merchant.as_str())
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected() == 1;
            if confirmed {
                sqlx::query("DELETE FROM customer_recovery_codes WHERE customer_id = $1").bind(id).execute(&mut *tx).await?;
                for digest in recovery_digests {
                    sqlx::query("INSERT INTO customer_recovery_codes (customer_id, digest, created_at) VALUES ($1, $2, $3)")
                        .bind(id)
                        .bind(digest)
                        .bind(at.unix_millis())
                        .execute(&mut *tx)
                        .await?;
                }
            }
            tx.commit().await?;
            Ok::<_, sqlx::Error>(confirmed)
        }.await)
        .map_err(store_error)
    }

    async fn remove_totp(&self, merchant: &MerchantId, id: &str) -> Result<bool, StoreError> {
        on_pool!(self, pool => async {
            let mut tx = pool.begin().await?;
            let removed = sqlx::query(
                "UPDATE customers SET totp_sealed = NULL, totp_confirmed_at = NULL, totp_last_step = NULL \
                 WHERE merchant_id = $1 AND id = $2",
            )
            .bind(merchant.as_str())
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected() == 1;
            sqlx::query("DELETE FROM customer_recovery_codes WHERE customer_id = $1").bind(id).execute(&mut *tx).await?;
            tx.commit().await?;
            Ok::<_, sqlx::Error>(removed)
        }.await)
        .map_err(store_error)
    }

    async fn accept_totp_step(&self, id: &str, totp_step: u64) -> Result<bool, StoreError> {
        let sql = "UPDATE customers SET totp_last_step = $1 WHERE id = $2 AND totp_confirmed_at IS NOT NULL \
                   AND (totp_last_step IS NULL OR totp_last_step < $1)";
        on_pool!(self, pool => sqlx::query(sql).bind(step(totp_step)).bind(id).execute(pool).await.map(|r| r.rows_affected() == 1))
            .map_err(store_error)
    }

    async fn replace_recovery_codes(&self, id: &str, digests: &[Vec<u8>], at: Timestamp) -> Result<(), StoreError> {
        on_pool!(self, pool => async {
            let mut tx = pool.begin().await?;
            sqlx::query("DELETE FROM customer_recovery_codes WHERE customer_id = $1").bind(id).execute(&mut *tx).await?;
            for digest in digests {
                sqlx::query("INSERT INTO customer_recovery_codes (customer_id, digest, created_at) VALUES ($1, $2, $3)")
                    .bind(id)
                    .bind(digest)
                    .bind(at.unix_millis())
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            Ok::<_, sqlx::Error>(())
        }.await)
        .map_err(store_error)
    }

    async fn use_recovery_code(&self, id: &str, digest: &[u8], at: Timestamp) -> Result<bool, StoreError> {
        let sql = "UPDATE customer_recovery_codes SET used_at = $1 WHERE customer_id = $2 AND digest = $3 AND used_at IS NULL";
        on_pool!(self, pool => sqlx::query(sql).bind(at.unix_millis()).bind(id).bind(digest).execute(pool).await
            .map(|r| r.rows_affected() == 1))
        .map_err(store_error)
    }

    async fn recovery_codes_left(&self, id: &str) -> Result<u32, StoreError> {
        let sql = "SELECT COUNT(*) FROM customer_recovery_codes WHERE customer_id = $1 AND used_at IS NULL";
        let count: i64 =
            on_pool!(self, pool => sqlx::query_scalar(sql).bind(id).fetch_one(pool).await).map_err(store_error)?;
        Ok(u32::try_from(count).unwrap_or(0))
    }

    async fn login_failures(&self, merchant: &MerchantId, subject: &[u8]) -> Result<LoginFailures, StoreError> {
        let sql = "SELECT failures, last_at FROM login_failures WHERE merchant_id = $1 AND subject = $2";
        let row: Option<(i64, i64)> = on_pool!(self, pool =>
            sqlx::query_as(sql).bind(merchant.as_str()).bind(subject).fetch_optional(pool).await)
        .map_err(store_error)?;
        Ok(match row {
            Some((count, last)) => LoginFailures {
                count: u32::try_from(count).unwrap_or(u32::MAX),
                last_at: Some(Timestamp::from_unix_millis(last)),
            },
            None => LoginFailures { count: 0, last_at: None },
        })
    }

    async fn add_login_failure(
        &self,
        merchant: &MerchantId,
        subject: &[u8],
        at: Timestamp,
    ) -> Result<LoginFailures, StoreError> {
        let sql = "INSERT INTO login_failures (merchant_id, subject, failures, last_at) VALUES ($1, $2, 1, $3) \
                   ON CONFLICT (merchant_id, subject) DO UPDATE SET failures = login_failures.failures + 1, last_at = $3 \
                   RETURNING failures, last_at";
        let (count, last): (i64, i64) = on_pool!(self, pool =>
            sqlx::query_as(sql).bind(merchant.as_str()).bind(subject).bind(at.unix_millis()).fetch_one(pool).await)
        .map_err(store_error)?;
        Ok(LoginFailures {
            count: u32::try_from(count).unwrap_or(u32::MAX),
            last_at: Some(Timestamp::from_unix_millis(last)),
        })
    }

    async fn clear_login_failures(&self, merchant: &MerchantId, subject: &[u8]) -> Result<(), StoreError> {
        let sql = "DELETE FROM login_failures WHERE merchant_id = $1 AND subject = $2";
        on_pool!(self, pool => sqlx::query(sql).bind(merchant.as_str()).bind(subject).execute(pool).await.map(|_| ()))
            .map_err(store_error)?;
        Ok(())
    }

    async fn insert_challenge(&self, c: &ChallengeRecord) -> Result<(), StoreError> {
        let sql = format!(
            "INSERT INTO auth_challenges ({CHALLENGE_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)"
        );
        on_pool!(self, pool => sqlx::query(&sql)
            .bind(&c.id)
            .bind(c.merchant_id.as_str())
            .bind(&c.customer_id)
            .bind(c.purpose.as_str())
            .bind(&c.binding_digest)
            .bind(&c.session_id)
            .bind(&c.client)
            .bind(c.created_at.unix_millis())
            .bind(c.expires_at.unix_millis())
            .bind(i64::from(c.failures))
            .bind(c.completed_at.map(Timestamp::unix_millis))
            .bind(&c.proof_digest)
            .bind(c.proof_expires_at.map(Timestamp::unix_millis))
            .bind(c.proof_used_at.map(Timestamp::unix_millis))
            .bind(&c.code_digest)
            .bind(c.code_expires_at.map(Timestamp::unix_millis))
            .execute(pool)
            .await
            .map(|_| ()))
        .map_err(store_error)?;
        Ok(())
    }

    async fn challenge(&self, merchant: &MerchantId, id: &str) -> Result<Option<ChallengeRecord>, StoreError> {
        let sql = format!("SELECT {CHALLENGE_COLUMNS} FROM auth_challenges WHERE merchant_id = $1 AND id = $2");
        let row: Option<ChallengeRow> = on_pool!(self, pool =>
            sqlx::query_as(&sql).bind(merchant.as_str()).bind(id).fetch_optional(pool).await)
        .map_err(store_error)?;
        row.map(TryInto::try_into).transpose()
    }

    async fn set_challenge_code(&self, id: &str, digest: &[u8], expires_at: Timestamp) -> Result<(), StoreError> {
        let sql =
            "UPDATE auth_challenges SET code_digest = $1, code_expires_at = $2 WHERE id = $3 AND completed_at IS NULL";
        on_pool!(self, pool => sqlx::query(sql).bind(digest).bind(expires_at.unix_millis()).bind(id).execute(pool).await.map(|_| ()))
            .map_err(store_error)
    }

    async fn reserve_challenge_try(&self, id: &str, max: u32, now: Timestamp) -> Result<bool, StoreError> {
        let sql = "UPDATE auth_challenges SET failures = failures + 1 WHERE id = $1 AND failures < $2 \
                   AND completed_at IS NULL AND proof_used_at IS NULL AND expires_at > $3";
        on_pool!(self, pool => sqlx::query(sql).bind(id).bind(i64::from(max)).bind(now.unix_millis()).execute(pool).await
            .map(|r| r.rows_affected() == 1))
        .map_err(store_error)
    }

    async fn spend_links(&self, customer: &str, purpose: ChallengePurpose, at: Timestamp) -> Result<(), StoreError> {
        let sql = "UPDATE auth_challenges SET proof_used_at = $1 WHERE customer_id = $2 AND purpose = $3 AND proof_used_at IS NULL";
        on_pool!(self, pool => sqlx::query(sql).bind(at.unix_millis()).bind(customer).bind(purpose.as_str()).execute(pool).await.map(|_| ()))
            .map_err(store_error)
    }

    async fn complete_challenge(
        &self,
        id: &str,
        at: Timestamp,
        proof: Option<(&[u8], Timestamp)>,
    ) -> Result<bool, StoreError> {
        let sql = "UPDATE auth_challenges SET completed_at = $1, proof_digest = $2, proof_expires_at = $3 \
                   WHERE id = $4 AND completed_at IS NULL";
        let (digest, expires) = match proof {
            Some((digest, expires)) => (Some(digest.to_vec()), Some(expires.unix_millis())),
            None => (None, None),
        };
        on_pool!(self, pool => sqlx::query(sql).bind(at.unix_millis()).bind(&digest).bind(expires).bind(id)
            .execute(pool).await.map(|r| r.rows_affected() == 1))
        .map_err(store_error)
    }

    async fn redeem_proof(&self, digest: &[u8], now: Timestamp) -> Result<Option<ChallengeRecord>, StoreError> {
        let sql = format!(
            "UPDATE auth_challenges SET proof_used_at = $1 WHERE proof_digest = $2 AND proof_used_at IS NULL \
             AND proof_expires_at > $1 RETURNING {CHALLENGE_COLUMNS}"
        );
        let row: Option<ChallengeRow> = on_pool!(self, pool =>
            sqlx::query_as(&sql).bind(now.unix_millis()).bind(digest).fetch_optional(pool).await)
        .map_err(store_error)?;
        row.map(TryInto::try_into).transpose()
    }

    async fn set_phrase(&self, merchant: &MerchantId, id: &str, sealed: Option<&[u8]>) -> Result<(), StoreError> {
        let sql = "UPDATE customers SET phrase_sealed = $1 WHERE merchant_id = $2 AND id = $3";
        on_pool!(self, pool => sqlx::query(sql).bind(sealed).bind(merchant.as_str()).bind(id).execute(pool).await.map(|_| ()))
            .map_err(store_error)
    }

    async fn mark_email_verified(&self, merchant: &MerchantId, id: &str, at: Timestamp) -> Result<(), StoreError> {
        let sql = "UPDATE customers SET email_verified_at = $1 WHERE merchant_id = $2 AND id = $3 AND email_verified_at IS NULL";
        on_pool!(self, pool => sqlx::query(sql).bind(at.unix_millis()).bind(merchant.as_str()).bind(id).execute(pool).await.map(|_| ()))
            .map_err(store_error)
    }

    async fn set_pending_email(
        &self,
        merchant: &MerchantId,
        id: &str,
        lookup: &[u8],
        sealed: &[u8],
    ) -> Result<(), StoreError> {
        let sql = "UPDATE customers SET pending_email_lookup = $1, pending_email_sealed = $2 WHERE merchant_id = $3 AND id = $4";
        on_pool!(self, pool => sqlx::query(sql).bind(lookup).bind(sealed).bind(merchant.as_str()).bind(id).execute(pool).await.map(|_| ()))
            .map_err(store_error)
    }

    async fn apply_pending_email(
        &self,
        merchant: &MerchantId,
        id: &str,
        lookup: &[u8],
        sealed: &[u8],
        at: Timestamp,
    ) -> Result<bool, StoreError> {
        let sql = "UPDATE customers SET email_lookup = pending_email_lookup, email_sealed = $1, email_verified_at = $2, \
                   pending_email_lookup = NULL, pending_email_sealed = NULL \
                   WHERE merchant_id = $3 AND id = $4 AND pending_email_lookup = $5";
        let result = on_pool!(self, pool => sqlx::query(sql)
            .bind(sealed)
            .bind(at.unix_millis())
            .bind(merchant.as_str())
            .bind(id)
            .bind(lookup)
            .execute(pool)
            .await
            .map(|r| r.rows_affected() == 1))
        .map_err(store_error);
        match result {
            Err(StoreError::Conflict(_)) => Ok(false),
            other => other,
        }
    }

    async fn challenge_by_proof(&self, digest: &[u8], now: Timestamp) -> Result<Option<ChallengeRecord>, StoreError> {
        let sql = format!(
            "SELECT {CHALLENGE_COLUMNS} FROM auth_challenges WHERE proof_digest = $1 AND proof_used_at IS NULL \
             AND proof_expires_at > $2"
        );
        let row: Option<ChallengeRow> = on_pool!(self, pool =>
            sqlx::query_as(&sql).bind(digest).bind(now.unix_millis()).fetch_optional(pool).await)
        .map_err(store_error)?;
        row.map(TryInto::try_into).transpose()
    }

    async fn spent_proof_merchant(&self, digest: &[u8]) -> Result<Option<MerchantId>, StoreError> {
        let sql =
            "SELECT merchant_id FROM auth_challenges WHERE proof_digest = $1 AND proof_used_at IS NOT NULL LIMIT 1";
        let row: Option<String> =
            on_pool!(self, pool => sqlx::query_scalar(sql).bind(digest).fetch_optional(pool).await)
                .map_err(store_error)?;
        row.as_deref().map(merchant).transpose()
    }

    async fn has_session_from(&self, customer: &str, user_agent: &str) -> Result<bool, StoreError> {
        let sql = "SELECT COUNT(*) FROM customer_sessions WHERE customer_id = $1 AND user_agent = $2";
        let count: i64 =
            on_pool!(self, pool => sqlx::query_scalar(sql).bind(customer).bind(user_agent).fetch_one(pool).await)
                .map_err(store_error)?;
        Ok(count > 0)
    }

    async fn last_session_of(&self, customer: &str) -> Result<Option<(Option<String>, Timestamp)>, StoreError> {
        let sql = "SELECT ip, created_at FROM customer_sessions WHERE customer_id = $1 \
                   ORDER BY created_at DESC, id DESC LIMIT 1";
        let row: Option<(Option<String>, i64)> =
            on_pool!(self, pool => sqlx::query_as(sql).bind(customer).fetch_optional(pool).await)
                .map_err(store_error)?;
        Ok(row.map(|(ip, at)| (ip, Timestamp::from_unix_millis(at))))
    }

    async fn purge_identity(&self, before: Timestamp, limit: u32) -> Result<u64, StoreError> {
        let challenges = "DELETE FROM auth_challenges WHERE id IN (SELECT id FROM auth_challenges \
                          WHERE expires_at < $1 AND (proof_expires_at IS NULL OR proof_expires_at < $1) LIMIT $2)";
        on_pool!(self, pool => sqlx::query(challenges).bind(before.unix_millis()).bind(i64::from(limit))
            .execute(pool).await.map(|r| r.rows_affected()))
        .map_err(store_error)
    }
}
