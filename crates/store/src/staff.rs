//! Staff tables: `staff`, `staff_sessions`, `staff_challenges`, `staff_roles`, `approvals`.
//! Lock-out counting, TOTP steps, challenge tries, role changes and approval decisions and use
//! are single compare-and-set statements, so parallel requests cannot slip past a rule.

use async_trait::async_trait;
use sqlx::FromRow;
use strongroom_domain::StoreError;
use strongroom_domain::merchants::MerchantId;
use strongroom_domain::ports::{
    ApprovalRecord, RoleRecord, StaffChallengeRecord, StaffGuard, StaffRecord, StaffRepository, StaffStatus,
};
use strongroom_types::Timestamp;

use crate::outbox::change_with_messages;
use crate::{Store, on_pool, store_error};
use strongroom_domain::outbox::OutboxMessage;

fn corrupt(what: &str) -> StoreError {
    StoreError::Other(format!("stored {what} is not valid"))
}

fn merchant(text: &str) -> Result<MerchantId, StoreError> {
    MerchantId::parse(text).map_err(|_| corrupt("merchant id"))
}

fn at(millis: Option<i64>) -> Option<Timestamp> {
    millis.map(Timestamp::from_unix_millis)
}

fn words(text: &str) -> Vec<String> {
    text.split_whitespace().map(str::to_owned).collect()
}

fn step(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// `text` as a literal inside a `LIKE … ESCAPE '\'` pattern.
fn like_literal(text: &str) -> String {
    text.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_")
}

/// The pattern that matches a space-separated role list (wrapped in spaces) holding `role`.
fn holds_role(role: &str) -> String {
    format!("% {} %", like_literal(role))
}

/// The pattern of an approval target naming `role` (`stf_…:role`).
fn targets_role(role: &str) -> String {
    format!("%:{}", like_literal(role))
}

/// Takes the row lock `$guard` needs on `$tx`, before the guarded statement runs (under
/// PostgreSQL's READ COMMITTED a statement that waited for the lock then reads what the holder
/// committed); evaluates to false when a role the guard names is gone. The holder pattern a
/// guarded statement binds is empty unless the guard is [`StaffGuard::AnotherHolder`].
macro_rules! lock_for {
    ($tx:expr, $merchant:expr, $guard:expr) => {
        match $guard {
            StaffGuard::None => true,
            StaffGuard::RoleExists(role) => {
                sqlx::query("UPDATE staff_roles SET name = name WHERE merchant_id = $1 AND name = $2")
                    .bind($merchant.as_str())
                    .bind(role)
                    .execute(&mut *$tx)
                    .await?
                    .rows_affected()
                    == 1
            }
            StaffGuard::AnotherHolder(_) => {
                sqlx::query("UPDATE merchants SET name = name WHERE id = $1")
                    .bind($merchant.as_str())
                    .execute(&mut *$tx)
                    .await?;
                true
            }
        }
    };
}

fn holder_pattern(guard: StaffGuard<'_>) -> String {
    match guard {
        StaffGuard::AnotherHolder(role) => holds_role(role),
        _ => String::new(),
    }
}

/// The condition of a guarded `UPDATE staff … WHERE merchant_id = $2 AND id = $3`: with a
/// non-empty holder pattern in `$n`, another active staff member of the merchant holds that role.
fn another_holder(n: u8) -> String {
    format!(
        "(${n} = '' OR EXISTS (SELECT 1 FROM staff other WHERE other.merchant_id = $2 AND other.id <> $3 \
         AND other.status = 'active' AND (' ' || other.roles || ' ') LIKE ${n} ESCAPE '\\'))"
    )
}

#[derive(FromRow)]
struct StaffRow {
    id: String,
    merchant_id: String,
    email_lookup: Vec<u8>,
    email_sealed: Vec<u8>,
    data_key_id: String,
    password_hash: Option<String>,
    password_history: String,
    password_changed_at: Option<i64>,
    status: String,
    failures: i64,
    locked_until: Option<i64>,
    totp_sealed: Option<Vec<u8>>,
    totp_confirmed_at: Option<i64>,
    totp_last_step: Option<i64>,
    roles: String,
    invite_digest: Option<Vec<u8>>,
    invite_expires_at: Option<i64>,
    created_by: String,
    created_at: i64,
}

impl TryFrom<StaffRow> for StaffRecord {
    type Error = StoreError;
    fn try_from(row: StaffRow) -> Result<Self, StoreError> {
        Ok(StaffRecord {
            id: row.id,
            merchant_id: merchant(&row.merchant_id)?,
            email_lookup: row.email_lookup,
            email_sealed: row.email_sealed,
            data_key_id: row.data_key_id,
            password_hash: row.password_hash,
            password_history: row.password_history.lines().filter(|l| !l.is_empty()).map(str::to_owned).collect(),
            password_changed_at: at(row.password_changed_at),
            status: StaffStatus::parse(&row.status).ok_or_else(|| corrupt("staff status"))?,
            failures: u32::try_from(row.failures).unwrap_or(u32::MAX),
            locked_until: at(row.locked_until),
            totp_sealed: row.totp_sealed,
            totp_confirmed_at: at(row.totp_confirmed_at),
            totp_last_step: row.totp_last_step.map(|s| u64::try_from(s).unwrap_or(0)),
            roles: words(&row.roles),
            invite_digest: row.invite_digest,
            invite_expires_at: at(row.invite_expires_at),
            created_by: row.created_by,
            created_at: Timestamp::from_unix_millis(row.created_at),
        })
    }
}

const STAFF_COLUMNS: &str = "id, merchant_id, email_lookup, email_sealed, data_key_id, password_hash, \
     password_history, password_changed_at, status, failures, locked_until, totp_sealed, totp_confirmed_at, \
     totp_last_step, roles, invite_digest, invite_expires_at, created_by, created_at";

#[derive(FromRow)]
struct ChallengeRow {
    id: String,
    staff_id: String,
    purpose: String,
    client: Option<String>,
    created_at: i64,
    expires_at: i64,
    failures: i64,
    completed_at: Option<i64>,
}

impl From<ChallengeRow> for StaffChallengeRecord {
    fn from(row: ChallengeRow) -> Self {
        StaffChallengeRecord {
            id: row.id,
            staff_id: row.staff_id,
            purpose: row.purpose,
            client: row.client,
            created_at: Timestamp::from_unix_millis(row.created_at),
            expires_at: Timestamp::from_unix_millis(row.expires_at),
            failures: u32::try_from(row.failures).unwrap_or(u32::MAX),
            completed_at: at(row.completed_at),
        }
    }
}

#[derive(FromRow)]
struct RoleRow {
    merchant_id: String,
    name: String,
    description: String,
    permissions: String,
    created_at: i64,
}

impl TryFrom<RoleRow> for RoleRecord {
    type Error = StoreError;
    fn try_from(row: RoleRow) -> Result<Self, StoreError> {
        Ok(RoleRecord {
            merchant_id: merchant(&row.merchant_id)?,
            name: row.name,
            description: row.description,
            permissions: words(&row.permissions),
            created_at: Timestamp::from_unix_millis(row.created_at),
        })
    }
}

#[derive(FromRow)]
struct ApprovalRow {
    id: String,
    merchant_id: String,
    action: String,
    target: String,
    reason: String,
    requested_by: String,
    requested_at: i64,
    status: String,
    decided_by: Option<String>,
    decided_at: Option<i64>,
    expires_at: i64,
    used_at: Option<i64>,
}

impl TryFrom<ApprovalRow> for ApprovalRecord {
    type Error = StoreError;
    fn try_from(row: ApprovalRow) -> Result<Self, StoreError> {
        Ok(ApprovalRecord {
            id: row.id,
            merchant_id: merchant(&row.merchant_id)?,
            action: row.action,
            target: row.target,
            reason: row.reason,
            requested_by: row.requested_by,
            requested_at: Timestamp::from_unix_millis(row.requested_at),
            status: row.status,
            decided_by: row.decided_by,
            decided_at: at(row.decided_at),
            expires_at: Timestamp::from_unix_millis(row.expires_at),
            used_at: at(row.used_at),
        })
    }
}

const APPROVAL_COLUMNS: &str = "id, merchant_id, action, target, reason, requested_by, requested_at, status, \
     decided_by, decided_at, expires_at, used_at";

#[async_trait]
impl StaffRepository for Store {
    async fn insert_staff(&self, s: &StaffRecord, events: &[OutboxMessage]) -> Result<bool, StoreError> {
        let sql = format!(
            "INSERT INTO staff ({STAFF_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, \
             $15, $16, $17, $18, $19) ON CONFLICT DO NOTHING"
        );
        let changed = change_with_messages!(
            self,
            sqlx::query(&sql)
                .bind(&s.id)
                .bind(s.merchant_id.as_str())
                .bind(&s.email_lookup)
                .bind(&s.email_sealed)
                .bind(&s.data_key_id)
                .bind(&s.password_hash)
                .bind(s.password_history.join("\n"))
                .bind(s.password_changed_at.map(Timestamp::unix_millis))
                .bind(s.status.as_str())
                .bind(i64::from(s.failures))
                .bind(s.locked_until.map(Timestamp::unix_millis))
                .bind(&s.totp_sealed)
                .bind(s.totp_confirmed_at.map(Timestamp::unix_millis))
                .bind(s.totp_last_step.map(step))
                .bind(s.roles.join(" "))
                .bind(&s.invite_digest)
                .bind(s.invite_expires_at.map(Timestamp::unix_millis))
                .bind(&s.created_by)
                .bind(s.created_at.unix_millis()),
            events
        )?;
        Ok(changed == 1)
    }

    async fn staff(&self, merchant: Option<&MerchantId>, id: &str) -> Result<Option<StaffRecord>, StoreError> {
        let sql = format!("SELECT {STAFF_COLUMNS} FROM staff WHERE id = $1 AND ($2 = '' OR merchant_id = $2)");
        let scope = merchant.map_or("", MerchantId::as_str);
        let row: Option<StaffRow> =
            on_pool!(self, pool => sqlx::query_as(&sql).bind(id).bind(scope).fetch_optional(pool).await)
                .map_err(store_error)?;
        row.map(TryInto::try_into).transpose()
    }

    async fn staff_by_email(&self, lookup: &[u8]) -> Result<Option<StaffRecord>, StoreError> {
        let sql = format!("SELECT {STAFF_COLUMNS} FROM staff WHERE email_lookup = $1");
        let row: Option<StaffRow> =
            on_pool!(self, pool => sqlx::query_as(&sql).bind(lookup).fetch_optional(pool).await)
                .map_err(store_error)?;
        row.map(TryInto::try_into).transpose()
    }

    async fn spent_invite_merchant(&self, digest: &[u8]) -> Result<Option<MerchantId>, StoreError> {
        let sql = "SELECT merchant_id FROM staff WHERE invite_spent_digest = $1 LIMIT 1";
        let row: Option<String> =
            on_pool!(self, pool => sqlx::query_scalar(sql).bind(digest).fetch_optional(pool).await)
                .map_err(store_error)?;
        row.map(|m| MerchantId::parse(&m).map_err(|_| StoreError::Other("stored merchant id is not valid".to_owned())))
            .transpose()
    }

    async fn staff_by_invite(&self, digest: &[u8], now: Timestamp) -> Result<Option<StaffRecord>, StoreError> {
        let sql = format!(
            "SELECT {STAFF_COLUMNS} FROM staff WHERE invite_digest = $1 AND invite_expires_at > $2 AND status = 'invited'"
        );
        let row: Option<StaffRow> = on_pool!(self, pool =>
            sqlx::query_as(&sql).bind(digest).bind(now.unix_millis()).fetch_optional(pool).await)
        .map_err(store_error)?;
        row.map(TryInto::try_into).transpose()
    }

    async fn list_staff(&self, merchant: &MerchantId) -> Result<Vec<StaffRecord>, StoreError> {
        let sql =
            format!("SELECT {STAFF_COLUMNS} FROM staff WHERE merchant_id = $1 ORDER BY created_at, id LIMIT 1000");
        let rows: Vec<StaffRow> =
            on_pool!(self, pool => sqlx::query_as(&sql).bind(merchant.as_str()).fetch_all(pool).await)
                .map_err(store_error)?;
        rows.into_iter().map(TryInto::try_into).collect()
    }

    async fn set_invite(&self, id: &str, digest: &[u8], expires_at: Timestamp) -> Result<(), StoreError> {
        let sql = "UPDATE staff SET invite_digest = $1, invite_expires_at = $2, status = 'invited', \
                   password_hash = NULL WHERE id = $3";
        on_pool!(self, pool => sqlx::query(sql).bind(digest).bind(expires_at.unix_millis()).bind(id).execute(pool).await.map(|_| ()))
            .map_err(store_error)
    }

    async fn accept_staff_invite(
        &self,
        id: &str,
        digest: &[u8],
        hash: &str,
        at: Timestamp,
    ) -> Result<bool, StoreError> {
        let sql = "UPDATE staff SET password_hash = $1, password_history = '', password_changed_at = $2, \
                   invite_spent_digest = invite_digest, invite_digest = NULL, invite_expires_at = NULL, \
                   status = 'active' WHERE id = $3 AND invite_digest = $4 AND invite_expires_at > $2 AND status = 'invited' \
                   AND password_hash IS NULL";
        on_pool!(self, pool => sqlx::query(sql).bind(hash).bind(at.unix_millis()).bind(id).bind(digest)
            .execute(pool).await.map(|r| r.rows_affected() == 1))
        .map_err(store_error)
    }

    async fn set_staff_password(
        &self,
        id: &str,
        hash: &str,
        history: &[String],
        at: Timestamp,
    ) -> Result<(), StoreError> {
        let sql = "UPDATE staff SET password_hash = $1, password_history = $2, password_changed_at = $3, \
                   invite_digest = NULL, invite_expires_at = NULL, \
                   status = CASE WHEN status = 'invited' THEN 'active' ELSE status END WHERE id = $4";
        on_pool!(self, pool => sqlx::query(sql).bind(hash).bind(history.join("\n")).bind(at.unix_millis()).bind(id)
            .execute(pool).await.map(|_| ()))
        .map_err(store_error)
    }

    async fn staff_login_failed(&self, id: &str, lock_after: u32, lock_until: Timestamp) -> Result<u32, StoreError> {
        let sql = "UPDATE staff SET failures = failures + 1, \
                   locked_until = CASE WHEN failures + 1 >= $1 THEN $2 ELSE locked_until END \
                   WHERE id = $3 RETURNING failures";
        let failures: Option<i64> = on_pool!(self, pool => sqlx::query_scalar(sql)
            .bind(i64::from(lock_after))
            .bind(lock_until.unix_millis())
            .bind(id)
            .fetch_optional(pool)
            .await)
        .map_err(store_error)?;
        Ok(failures.map_or(0, |f| u32::try_from(f).unwrap_or(u32::MAX)))
    }

    async fn clear_staff_failures(&self, id: &str) -> Result<(), StoreError> {
        let sql = "UPDATE staff SET failures = 0, locked_until = NULL WHERE id = $1 AND (failures <> 0 OR locked_until IS NOT NULL)";
        on_pool!(self, pool => sqlx::query(sql).bind(id).execute(pool).await.map(|_| ())).map_err(store_error)
    }

    async fn set_staff_status(
        &self,
        merchant: &MerchantId,
        id: &str,
        status: StaffStatus,
        guard: StaffGuard<'_>,
        events: &[OutboxMessage],
    ) -> Result<bool, StoreError> {
        let sql = format!(
            "UPDATE staff SET status = $1 WHERE merchant_id = $2 AND id = $3 AND status <> $1 AND {}",
            another_holder(4)
        );
        let holder = holder_pattern(guard);
        on_pool!(self, pool => async {
            let mut tx = pool.begin().await?;
            if !lock_for!(tx, merchant, guard) {
                return Ok(false);
            }
            let changed = sqlx::query(&sql)
                .bind(status.as_str())
                .bind(merchant.as_str())
                .bind(id)
                .bind(&holder)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if changed == 1 {
                crate::outbox::write_messages!(tx, events);
            }
            tx.commit().await?;
            Ok::<bool, sqlx::Error>(changed == 1)
        }.await)
        .map_err(store_error)
    }

    async fn begin_staff_totp(&self, id: &str, sealed: &[u8]) -> Result<bool, StoreError> {
        let sql =
            "UPDATE staff SET totp_sealed = $1, totp_last_step = NULL WHERE id = $2 AND totp_confirmed_at IS NULL";
        on_pool!(self, pool => sqlx::query(sql).bind(sealed).bind(id).execute(pool).await.map(|r| r.rows_affected() == 1))
            .map_err(store_error)
    }

    async fn confirm_staff_totp(&self, id: &str, totp_step: u64, at: Timestamp) -> Result<bool, StoreError> {
        let sql = "UPDATE staff SET totp_confirmed_at = $1, totp_last_step = $2 \
                   WHERE id = $3 AND totp_confirmed_at IS NULL AND totp_sealed IS NOT NULL";
        on_pool!(self, pool => sqlx::query(sql).bind(at.unix_millis()).bind(step(totp_step)).bind(id).execute(pool).await
            .map(|r| r.rows_affected() == 1))
        .map_err(store_error)
    }

    async fn use_staff_totp_step(&self, id: &str, totp_step: u64) -> Result<bool, StoreError> {
        let sql = "UPDATE staff SET totp_last_step = $1 \
                   WHERE id = $2 AND totp_confirmed_at IS NOT NULL AND (totp_last_step IS NULL OR totp_last_step < $1)";
        on_pool!(self, pool => sqlx::query(sql).bind(step(totp_step)).bind(id).execute(pool).await
            .map(|r| r.rows_affected() == 1))
        .map_err(store_error)
    }

    async fn reset_staff_totp(&self, id: &str) -> Result<(), StoreError> {
        let sql = "UPDATE staff SET totp_sealed = NULL, totp_confirmed_at = NULL, totp_last_step = NULL, \
                   failures = 0, locked_until = NULL WHERE id = $1";
        on_pool!(self, pool => sqlx::query(sql).bind(id).execute(pool).await.map(|_| ())).map_err(store_error)
    }

    async fn set_staff_roles(
        &self,
        merchant: &MerchantId,
        id: &str,
        expected: &[String],
        roles: &[String],
        guard: StaffGuard<'_>,
        events: &[OutboxMessage],
    ) -> Result<bool, StoreError> {
        let sql = format!(
            "UPDATE staff SET roles = $1 WHERE merchant_id = $2 AND id = $3 AND roles = $4 AND {}",
            another_holder(5)
        );
        let holder = holder_pattern(guard);
        on_pool!(self, pool => async {
            let mut tx = pool.begin().await?;
            if !lock_for!(tx, merchant, guard) {
                return Ok(false);
            }
            let changed = sqlx::query(&sql)
                .bind(roles.join(" "))
                .bind(merchant.as_str())
                .bind(id)
                .bind(expected.join(" "))
                .bind(&holder)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if changed == 1 {
                crate::outbox::write_messages!(tx, events);
            }
            tx.commit().await?;
            Ok::<bool, sqlx::Error>(changed == 1)
        }.await)
        .map_err(store_error)
    }

    async fn remove_staff_passkey(&self, staff: &str, id: &str) -> Result<bool, StoreError> {
        // The staff row is locked first, so parallel removals of two passkeys run one after the
        // other and the second sees the first's effect.
        on_pool!(self, pool => async {
            let mut tx = pool.begin().await?;
            sqlx::query("UPDATE staff SET failures = failures WHERE id = $1").bind(staff).execute(&mut *tx).await?;
            let deleted = sqlx::query(
                "DELETE FROM passkeys WHERE owner_kind = 'staff' AND owner_id = $1 AND id = $2 \
                 AND (EXISTS (SELECT 1 FROM staff WHERE id = $1 AND totp_confirmed_at IS NOT NULL) \
                 OR EXISTS (SELECT 1 FROM passkeys other WHERE other.owner_kind = 'staff' AND other.owner_id = $1 \
                 AND other.id <> $2))",
            )
            .bind(staff)
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            tx.commit().await?;
            Ok::<bool, sqlx::Error>(deleted == 1)
        }.await)
        .map_err(store_error)
    }

    async fn insert_staff_challenge(&self, c: &StaffChallengeRecord) -> Result<(), StoreError> {
        let sql = "INSERT INTO staff_challenges (id, staff_id, purpose, client, created_at, expires_at, failures, completed_at) \
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";
        on_pool!(self, pool => sqlx::query(sql)
            .bind(&c.id)
            .bind(&c.staff_id)
            .bind(&c.purpose)
            .bind(&c.client)
            .bind(c.created_at.unix_millis())
            .bind(c.expires_at.unix_millis())
            .bind(i64::from(c.failures))
            .bind(c.completed_at.map(Timestamp::unix_millis))
            .execute(pool)
            .await
            .map(|_| ()))
        .map_err(store_error)
    }

    async fn staff_challenge(&self, id: &str) -> Result<Option<StaffChallengeRecord>, StoreError> {
        let sql = "SELECT id, staff_id, purpose, client, created_at, expires_at, failures, completed_at \
                   FROM staff_challenges WHERE id = $1";
        let row: Option<ChallengeRow> =
            on_pool!(self, pool => sqlx::query_as(sql).bind(id).fetch_optional(pool).await).map_err(store_error)?;
        Ok(row.map(Into::into))
    }

    async fn reserve_staff_challenge_try(&self, id: &str, max: u32, now: Timestamp) -> Result<bool, StoreError> {
        let sql = "UPDATE staff_challenges SET failures = failures + 1 \
                   WHERE id = $1 AND completed_at IS NULL AND expires_at > $2 AND failures < $3";
        on_pool!(self, pool => sqlx::query(sql).bind(id).bind(now.unix_millis()).bind(i64::from(max)).execute(pool).await
            .map(|r| r.rows_affected() == 1))
        .map_err(store_error)
    }

    async fn complete_staff_challenge(&self, id: &str, at: Timestamp) -> Result<bool, StoreError> {
        let sql = "UPDATE staff_challenges SET completed_at = $1 WHERE id = $2 AND completed_at IS NULL";
        on_pool!(self, pool => sqlx::query(sql).bind(at.unix_millis()).bind(id).execute(pool).await
            .map(|r| r.rows_affected() == 1))
        .map_err(store_error)
    }

    async fn insert_role(&self, r: &RoleRecord, events: &[OutboxMessage]) -> Result<bool, StoreError> {
        let sql = "INSERT INTO staff_roles (merchant_id, name, description, permissions, created_at) \
                   VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING";
        Ok(change_with_messages!(
            self,
            sqlx::query(sql)
                .bind(r.merchant_id.as_str())
                .bind(&r.name)
                .bind(&r.description)
                .bind(r.permissions.join(" "))
                .bind(r.created_at.unix_millis()),
            events
        )? == 1)
    }

    async fn roles(&self, merchant: &MerchantId) -> Result<Vec<RoleRecord>, StoreError> {
        let sql = "SELECT merchant_id, name, description, permissions, created_at FROM staff_roles \
                   WHERE merchant_id = $1 ORDER BY name";
        let rows: Vec<RoleRow> =
            on_pool!(self, pool => sqlx::query_as(sql).bind(merchant.as_str()).fetch_all(pool).await)
                .map_err(store_error)?;
        rows.into_iter().map(TryInto::try_into).collect()
    }

    async fn delete_role(
        &self,
        merchant: &MerchantId,
        name: &str,
        at: Timestamp,
        events: &[OutboxMessage],
    ) -> Result<bool, StoreError> {
        // The role's row is locked first: a grant or a request naming the role locks it too
        // (`StaffGuard::RoleExists`), so whichever comes second sees the other's effect.
        let sql = "DELETE FROM staff_roles WHERE merchant_id = $1 AND name = $2 \
                   AND NOT EXISTS (SELECT 1 FROM staff WHERE merchant_id = $1 AND (' ' || roles || ' ') LIKE $3 ESCAPE '\\') \
                   AND NOT EXISTS (SELECT 1 FROM approvals WHERE merchant_id = $1 AND status IN ('pending', 'approved') \
                   AND expires_at > $4 AND target LIKE $5 ESCAPE '\\')";
        let guard = StaffGuard::RoleExists(name);
        on_pool!(self, pool => async {
            let mut tx = pool.begin().await?;
            if !lock_for!(tx, merchant, guard) {
                return Ok(false);
            }
            let deleted = sqlx::query(sql)
                .bind(merchant.as_str())
                .bind(name)
                .bind(holds_role(name))
                .bind(at.unix_millis())
                .bind(targets_role(name))
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if deleted == 1 {
                crate::outbox::write_messages!(tx, events);
            }
            tx.commit().await?;
            Ok::<bool, sqlx::Error>(deleted == 1)
        }.await)
        .map_err(store_error)
    }

    async fn insert_approval(&self, a: &ApprovalRecord, guard: StaffGuard<'_>) -> Result<bool, StoreError> {
        let sql = format!(
            "INSERT INTO approvals ({APPROVAL_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
        );
        on_pool!(self, pool => async {
            let mut tx = pool.begin().await?;
            if !lock_for!(tx, a.merchant_id, guard) {
                return Ok(false);
            }
            sqlx::query(&sql)
            .bind(&a.id)
            .bind(a.merchant_id.as_str())
            .bind(&a.action)
            .bind(&a.target)
            .bind(&a.reason)
            .bind(&a.requested_by)
            .bind(a.requested_at.unix_millis())
            .bind(&a.status)
            .bind(&a.decided_by)
            .bind(a.decided_at.map(Timestamp::unix_millis))
            .bind(a.expires_at.unix_millis())
            .bind(a.used_at.map(Timestamp::unix_millis))
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok::<bool, sqlx::Error>(true)
        }.await)
        .map_err(store_error)
    }

    async fn approval(&self, merchant: &MerchantId, id: &str) -> Result<Option<ApprovalRecord>, StoreError> {
        let sql = format!("SELECT {APPROVAL_COLUMNS} FROM approvals WHERE merchant_id = $1 AND id = $2");
        let row: Option<ApprovalRow> =
            on_pool!(self, pool => sqlx::query_as(&sql).bind(merchant.as_str()).bind(id).fetch_optional(pool).await)
                .map_err(store_error)?;
        row.map(TryInto::try_into).transpose()
    }

    async fn list_approvals(
        &self,
        merchant: &MerchantId,
        status: Option<&str>,
        limit: u32,
    ) -> Result<Vec<ApprovalRecord>, StoreError> {
        let sql = format!(
            "SELECT {APPROVAL_COLUMNS} FROM approvals WHERE merchant_id = $1 AND ($2 = '' OR status = $2) \
             ORDER BY requested_at DESC, id DESC LIMIT $3"
        );
        let rows: Vec<ApprovalRow> = on_pool!(self, pool => sqlx::query_as(&sql)
            .bind(merchant.as_str())
            .bind(status.unwrap_or(""))
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await)
        .map_err(store_error)?;
        rows.into_iter().map(TryInto::try_into).collect()
    }

    async fn decide_approval(
        &self,
        merchant: &MerchantId,
        id: &str,
        decider: &str,
        status: &str,
        at: Timestamp,
        use_by: Timestamp,
    ) -> Result<bool, StoreError> {
        let sql = "UPDATE approvals SET status = $1, decided_by = $2, decided_at = $3, \
                   expires_at = CASE WHEN $1 = 'approved' THEN $4 ELSE expires_at END \
                   WHERE merchant_id = $5 AND id = $6 AND status = 'pending' AND requested_by <> $2 AND expires_at > $3";
        on_pool!(self, pool => sqlx::query(sql)
            .bind(status)
            .bind(decider)
            .bind(at.unix_millis())
            .bind(use_by.unix_millis())
            .bind(merchant.as_str())
            .bind(id)
            .execute(pool)
            .await
            .map(|r| r.rows_affected() == 1))
        .map_err(store_error)
    }

    async fn use_approval(
        &self,
        merchant: &MerchantId,
        id: &str,
        requester: &str,
        action: &str,
        target: &str,
        at: Timestamp,
    ) -> Result<bool, StoreError> {
        let sql = "UPDATE approvals SET status = 'used', used_at = $1 \
                   WHERE merchant_id = $2 AND id = $3 AND requested_by = $4 AND action = $5 AND target = $6 \
                   AND status = 'approved' AND expires_at > $1";
        on_pool!(self, pool => sqlx::query(sql)
            .bind(at.unix_millis())
            .bind(merchant.as_str())
            .bind(id)
            .bind(requester)
            .bind(action)
            .bind(target)
            .execute(pool)
            .await
            .map(|r| r.rows_affected() == 1))
        .map_err(store_error)
    }

    async fn purge_staff(&self, before: Timestamp, limit: u32) -> Result<u64, StoreError> {
        let cutoff = before.unix_millis();
        on_pool!(self, pool => async {
            let challenges = sqlx::query(
                "DELETE FROM staff_challenges WHERE id IN (SELECT id FROM staff_challenges WHERE expires_at < $1 LIMIT $2)",
            )
            .bind(cutoff)
            .bind(i64::from(limit))
            .execute(pool)
            .await?
            .rows_affected();
            Ok::<_, sqlx::Error>(challenges)
        }.await)
        .map_err(store_error)
    }
}
