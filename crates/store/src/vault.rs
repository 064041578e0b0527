//! The vault's tables: `vault_keks`, `vault_data_keys`, `vault_tokens`. Queries shared by both
//! backends; every multi-row change is one transaction. A new customer's data key is inserted in
//! the same transaction (on PostgreSQL's fast path, the same statement) as the group of tokens that
//! first use it, and a token under a new key that did not get stored is not stored either.

use async_trait::async_trait;
use sqlx::FromRow;
use strongroom_domain::StoreError;
use strongroom_domain::merchants::MerchantId;
use strongroom_domain::modes::Mode;
use strongroom_domain::ports::{
    DataKeyRecord, KekRecord, KekState, RewrappedKey, TokenInsert, TokenRecord, VaultRepository,
};
use strongroom_domain::vault::values::ValueKind;
use strongroom_types::Timestamp;

use crate::outbox::{change_with_messages, write_messages};
use crate::{Store, on_pool, store_error};
use strongroom_domain::outbox::OutboxMessage;

fn corrupt(what: &str) -> StoreError {
    StoreError::Other(format!("stored {what} is not valid"))
}

fn version(v: i64) -> Result<u32, StoreError> {
    u32::try_from(v).map_err(|_| corrupt("key version"))
}

#[derive(FromRow)]
struct KekRow {
    version: i64,
    kms_key_id: String,
    wrapped: Option<Vec<u8>>,
    state: String,
    created_at: i64,
    retired_at: Option<i64>,
}

impl TryFrom<KekRow> for KekRecord {
    type Error = StoreError;
    fn try_from(row: KekRow) -> Result<Self, StoreError> {
        Ok(KekRecord {
            version: version(row.version)?,
            kms_key_id: row.kms_key_id,
            wrapped: row.wrapped,
            state: KekState::parse(&row.state).ok_or_else(|| corrupt("key state"))?,
            created_at: Timestamp::from_unix_millis(row.created_at),
            retired_at: row.retired_at.map(Timestamp::from_unix_millis),
        })
    }
}

#[derive(FromRow, Clone)]
pub(crate) struct DataKeyRow {
    id: String,
    merchant_id: String,
    customer_id: String,
    kek_version: i64,
    wrapped: Vec<u8>,
    created_at: i64,
    mode: String,
}

impl TryFrom<DataKeyRow> for DataKeyRecord {
    type Error = StoreError;
    fn try_from(row: DataKeyRow) -> Result<Self, StoreError> {
        Ok(DataKeyRecord {
            id: row.id,
            merchant_id: MerchantId::parse(&row.merchant_id).map_err(|_| corrupt("merchant id"))?,
            mode: Mode::parse(&row.mode).ok_or_else(|| corrupt("data key mode"))?,
            customer: row.customer_id,
            kek_version: version(row.kek_version)?,
            wrapped: row.wrapped,
            created_at: Timestamp::from_unix_millis(row.created_at),
        })
    }
}

const DATA_KEY_COLUMNS: &str = "id, merchant_id, customer_id, kek_version, wrapped, created_at, mode";

/// A data key, unless its owner has one or its KEK version is no longer the active one.
const INSERT_DATA_KEY: &str = "INSERT INTO vault_data_keys (id, merchant_id, customer_id, kek_version, wrapped, \
     created_at, mode) SELECT $1, $2, $3, $4, $5, $6, $7 \
     WHERE EXISTS (SELECT 1 FROM vault_keks WHERE version = $4 AND state = 'active') \
     ON CONFLICT DO NOTHING";

/// Which tokens name a new data key that is not stored (`stored`: the new keys' ids that are):
/// they are left out of the insert and answer [`TokenInsert::KeyNotStored`].
fn under_refused_keys(
    tokens: &[TokenRecord],
    new_keys: &[DataKeyRecord],
    stored: &std::collections::HashSet<String>,
) -> Vec<bool> {
    tokens.iter().map(|t| !stored.contains(&t.data_key_id) && new_keys.iter().any(|k| k.id == t.data_key_id)).collect()
}

/// The tokens not under a refused key, in order.
fn kept<'t>(tokens: &'t [TokenRecord], refused: &[bool]) -> Vec<&'t TokenRecord> {
    tokens.iter().zip(refused).filter_map(|(token, refused)| (!refused).then_some(token)).collect()
}

/// Inserts new data keys on one connection inside the caller's transaction; yields the ids of
/// those stored now or already (an earlier group, or an earlier attempt of this one, stored them).
macro_rules! insert_data_keys_in {
    ($tx:expr, $keys:expr) => {{
        let mut stored = std::collections::HashSet::new();
        for key in $keys {
            let inserted = sqlx::query(INSERT_DATA_KEY)
                .bind(key.id.as_str())
                .bind(key.merchant_id.as_str())
                .bind(key.customer.as_str())
                .bind(i64::from(key.kek_version))
                .bind(key.wrapped.as_slice())
                .bind(key.created_at.unix_millis())
                .bind(key.mode.as_str())
                .execute(&mut *$tx)
                .await?
                .rows_affected();
            let present = inserted == 1
                || sqlx::query("SELECT 1 FROM vault_data_keys WHERE id = $1")
                    .bind(key.id.as_str())
                    .fetch_optional(&mut *$tx)
                    .await?
                    .is_some();
            if present {
                stored.insert(key.id.clone());
            }
        }
        Ok::<_, sqlx::Error>(stored)
    }};
}

/// [`insert_data_keys_in!`] on the direct SQLite writer.
fn insert_data_keys_sqlite(
    tx: &rusqlite::Connection,
    keys: &[DataKeyRecord],
) -> rusqlite::Result<std::collections::HashSet<String>> {
    use rusqlite::{OptionalExtension, params};
    let mut stored = std::collections::HashSet::new();
    for key in keys {
        let inserted = tx.prepare_cached(INSERT_DATA_KEY)?.execute(params![
            key.id.as_str(),
            key.merchant_id.as_str(),
            key.customer.as_str(),
            i64::from(key.kek_version),
            key.wrapped.as_slice(),
            key.created_at.unix_millis(),
            key.mode.as_str()
        ])?;
        let present = inserted == 1
            || tx
                .prepare_cached("SELECT 1 FROM vault_data_keys WHERE id = $1")?
                .query_row([key.id.as_str()], |_| Ok(()))
                .optional()?
                .is_some();
        if present {
            stored.insert(key.id.clone());
        }
    }
    Ok(stored)
}

#[derive(FromRow, Clone)]
pub(crate) struct TokenRow {
    id: String,
    merchant_id: String,
    customer_id: Option<String>,
    kind: String,
    data_key_id: String,
    ciphertext: Option<Vec<u8>>,
    fingerprint: Option<Vec<u8>>,
    fingerprint_version: i64,
    dedupe_fp: Option<Vec<u8>>,
    display: String,
    metadata: Option<String>,
    canary: bool,
    created_at: i64,
    expires_at: Option<i64>,
    erased_at: Option<i64>,
    mode: String,
}

impl TokenRow {
    /// Reads a row of [`TOKEN_COLUMNS`] from the synchronous SQLite path.
    fn from_sqlite(row: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            id: row.get(0)?,
            merchant_id: row.get(1)?,
            customer_id: row.get(2)?,
            kind: row.get(3)?,
            data_key_id: row.get(4)?,
            ciphertext: row.get(5)?,
            fingerprint: row.get(6)?,
            fingerprint_version: row.get(7)?,
            dedupe_fp: row.get(8)?,
            display: row.get(9)?,
            metadata: row.get(10)?,
            canary: row.get(11)?,
            created_at: row.get(12)?,
            expires_at: row.get(13)?,
            erased_at: row.get(14)?,
            mode: row.get(15)?,
        })
    }
}

impl TryFrom<TokenRow> for TokenRecord {
    type Error = StoreError;
    fn try_from(row: TokenRow) -> Result<Self, StoreError> {
        Ok(TokenRecord {
            id: row.id,
            merchant_id: MerchantId::parse(&row.merchant_id).map_err(|_| corrupt("merchant id"))?,
            mode: Mode::parse(&row.mode).ok_or_else(|| corrupt("token mode"))?,
            customer: row.customer_id,
            kind: ValueKind::parse(&row.kind).ok_or_else(|| corrupt("token kind"))?,
            data_key_id: row.data_key_id,
            ciphertext: row.ciphertext,
            fingerprint: row.fingerprint,
            fingerprint_version: version(row.fingerprint_version)?,
            dedupe_key: row.dedupe_fp,
            display: row.display,
            metadata: row.metadata,
            canary: row.canary,
            created_at: Timestamp::from_unix_millis(row.created_at),
            expires_at: row.expires_at.map(Timestamp::from_unix_millis),
            erased_at: row.erased_at.map(Timestamp::from_unix_millis),
        })
    }
}

const TOKEN_COLUMNS: &str = "id, merchant_id, customer_id, kind, data_key_id, ciphertext, fingerprint, \
                             fingerprint_version, dedupe_fp, display, metadata, canary, created_at, expires_at, erased_at, \
                             mode";

/// A token by id: the vault's hottest query, built once.
static SELECT_TOKEN_BY_ID: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| format!("SELECT {TOKEN_COLUMNS} FROM vault_tokens WHERE id = $1"));

const INSERT_TOKEN: &str = "INSERT INTO vault_tokens (id, merchant_id, customer_id, kind, data_key_id, ciphertext, \
     fingerprint, dedupe_fp, display, metadata, canary, created_at, expires_at, erased_at, fingerprint_version, mode) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, NULL, $14, $15) ON CONFLICT DO NOTHING";

const DELETE_EXPIRED_DEDUPE_HOLDER: &str = "DELETE FROM vault_tokens WHERE merchant_id = $1 AND kind = $2 \
     AND dedupe_fp = $3 AND expires_at IS NOT NULL AND expires_at <= $4 AND mode = $5";

/// Tokens by id on PostgreSQL, many in one statement: the fetch behind [`Store`]'s coalesced token
/// reads. A read retries once on a fresh connection when an idle one was dead.
pub(crate) fn pg_tokens_by_ids(
    lane: std::sync::Arc<crate::pg_direct::PgLane>,
) -> crate::coalesced_reads::Fetch<TokenRow> {
    static SELECT_TOKENS_BY_IDS: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        format!(
            "SELECT t.* FROM UNNEST($1::text[]) AS n (id) \
                 CROSS JOIN LATERAL (SELECT {TOKEN_COLUMNS} FROM vault_tokens WHERE id = n.id LIMIT 1) t"
        )
    });
    std::sync::Arc::new(move |ids: Vec<String>| {
        let lane = lane.clone();
        Box::pin(async move {
            let rows: Vec<TokenRow> = lane
                .read(|conn| {
                    let ids = ids.clone();
                    Box::pin(async move {
                        sqlx::query_as(SELECT_TOKENS_BY_IDS.as_str()).bind(ids).fetch_all(&mut *conn).await
                    })
                })
                .await?;
            Ok(rows.into_iter().map(|row| (row.id.clone(), row)).collect())
        })
    })
}

/// The key [`pg_data_keys_by_owners`] files an owner's data key under: the mode and merchant id
/// (neither holds a `:`) ahead of the customer reference, so it splits back unambiguously.
fn owner_key(merchant: &str, mode: &str, customer: &str) -> String {
    format!("{mode}:{merchant}:{customer}")
}

/// Customers' data keys by owner, many owners in one query, for [`crate::coalesced_reads`].
pub(crate) fn pg_data_keys_by_owners(
    lane: std::sync::Arc<crate::pg_direct::PgLane>,
) -> crate::coalesced_reads::Fetch<DataKeyRow> {
    static SELECT_DATA_KEYS_BY_OWNERS: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        // A lateral probe per owner (`LIMIT 1`: an owner has one key) keeps the plan a nested loop
        // over the owner index: as a plain join, the generic plan made while the table was small
        // hashed a full scan of it, and kept doing so as the table grew.
        format!(
            "SELECT k.* FROM UNNEST($1::text[], $2::text[], $3::text[]) AS o (merchant_id, mode, customer_id) \
             CROSS JOIN LATERAL (SELECT {DATA_KEY_COLUMNS} FROM vault_data_keys d WHERE d.merchant_id = o.merchant_id \
             AND d.mode = o.mode AND d.customer_id = o.customer_id LIMIT 1) k"
        )
    });
    std::sync::Arc::new(move |owners: Vec<String>| {
        let lane = lane.clone();
        Box::pin(async move {
            let (mut merchants, mut modes, mut customers) = (Vec::new(), Vec::new(), Vec::new());
            for owner in &owners {
                let mut parts = owner.splitn(3, ':');
                let (Some(mode), Some(merchant), Some(customer)) = (parts.next(), parts.next(), parts.next()) else {
                    return Err(StoreError::Other("a data key owner that does not split".into()));
                };
                modes.push(mode.to_owned());
                merchants.push(merchant.to_owned());
                customers.push(customer.to_owned());
            }
            let columns = std::sync::Arc::new((merchants, modes, customers));
            let rows: Vec<DataKeyRow> = lane
                .read(|conn| {
                    let columns = columns.clone();
                    Box::pin(async move {
                        sqlx::query_as(SELECT_DATA_KEYS_BY_OWNERS.as_str())
                            .bind(&columns.0)
                            .bind(&columns.1)
                            .bind(&columns.2)
                            .fetch_all(&mut *conn)
                            .await
                    })
                })
                .await?;
            Ok(rows.into_iter().map(|row| (owner_key(&row.merchant_id, &row.mode, &row.customer_id), row)).collect())
        })
    })
}

/// The deduplicated token of a merchant's data space, kind and dedupe key.
fn select_by_dedupe_key() -> String {
    format!(
        "SELECT {TOKEN_COLUMNS} FROM vault_tokens WHERE merchant_id = $1 AND kind = $2 AND dedupe_fp = $3 \
         AND mode = $4"
    )
}

/// Inserts tokens on one connection inside the caller's transaction.
macro_rules! insert_tokens_in {
    ($tx:expr, $tokens:expr, $now:expr) => {{
        let mut outcomes = Vec::with_capacity($tokens.len());
        for token in $tokens {
            if let Some(dedupe) = &token.dedupe_key {
                sqlx::query(DELETE_EXPIRED_DEDUPE_HOLDER)
                    .bind(token.merchant_id.as_str())
                    .bind(token.kind.as_str())
                    .bind(dedupe.as_slice())
                    .bind($now.unix_millis())
                    .bind(token.mode.as_str())
                    .execute(&mut *$tx)
                    .await?;
            }
            let inserted = sqlx::query(INSERT_TOKEN)
                .bind(token.id.as_str())
                .bind(token.merchant_id.as_str())
                .bind(token.customer.as_deref())
                .bind(token.kind.as_str())
                .bind(token.data_key_id.as_str())
                .bind(token.ciphertext.as_deref())
                .bind(token.fingerprint.as_deref())
                .bind(token.dedupe_key.as_deref())
                .bind(token.display.as_str())
                .bind(token.metadata.as_deref())
                .bind(token.canary)
                .bind(token.created_at.unix_millis())
                .bind(token.expires_at.map(Timestamp::unix_millis))
                .bind(i64::from(token.fingerprint_version))
                .bind(token.mode.as_str())
                .execute(&mut *$tx)
                .await?
                .rows_affected();
            if inserted == 1 {
                outcomes.push(None);
                continue;
            }
            let existing: Option<TokenRow> = match &token.dedupe_key {
                Some(dedupe) => {
                    sqlx::query_as(&select_by_dedupe_key())
                        .bind(token.merchant_id.as_str())
                        .bind(token.kind.as_str())
                        .bind(dedupe.as_slice())
                        .bind(token.mode.as_str())
                        .fetch_optional(&mut *$tx)
                        .await?
                }
                None => None,
            };
            outcomes.push(Some(existing));
        }
        Ok::<_, sqlx::Error>(outcomes)
    }};
}

/// Tokens without a dedupe key and with distinct ids, inserted on PostgreSQL by one statement (one
/// round trip, and a text that does not change with the number of rows): the rows are passed as
/// arrays. A row whose id is taken is skipped and missing from the returned ids (each returned
/// with `true`, as [`INSERT_TOKENS_WITH_KEYS_PG`] marks its tokens). (Rows with dedupe
/// keys, or two rows with one id, take the statement-per-row path, whose order is explicit.)
const INSERT_TOKENS_PG: &str = "INSERT INTO vault_tokens (id, merchant_id, customer_id, kind, data_key_id, \
     ciphertext, fingerprint, dedupe_fp, display, metadata, canary, created_at, expires_at, erased_at, \
     fingerprint_version, mode) \
     SELECT id, merchant_id, customer_id, kind, data_key_id, ciphertext, fingerprint, NULL, display, metadata, \
       canary, created_at, expires_at, NULL, fingerprint_version, mode \
     FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bytea[], $7::bytea[], \
       $8::text[], $9::text[], $10::bool[], $11::bigint[], $12::bigint[], $13::bigint[], $14::text[]) \
       AS t (id, merchant_id, customer_id, kind, data_key_id, ciphertext, fingerprint, display, metadata, \
       canary, created_at, expires_at, fingerprint_version, mode) \
     ON CONFLICT DO NOTHING RETURNING id, true";

/// [`INSERT_TOKENS_PG`] with new data keys ahead of the tokens, still one statement: the keys are
/// inserted as [`INSERT_DATA_KEY`] does, and a token naming one of them is inserted only if this
/// statement stored that key. Answers each stored token's id (`true`) and each stored new key's
/// (`false`). A new key it did not store may have been stored by an earlier attempt of this same
/// group whose answer was lost: [`insert_tokens_pg`] asks for such keys afterwards and writes
/// their tokens then, so a group that stores every key (nearly all) carries no lookup.
const INSERT_TOKENS_WITH_KEYS_PG: &str = "WITH inserted_keys AS ( \
       INSERT INTO vault_data_keys (id, merchant_id, customer_id, kek_version, wrapped, created_at, mode) \
       SELECT k.id, k.merchant_id, k.customer_id, k.kek_version, k.wrapped, k.created_at, k.mode \
       FROM UNNEST($15::text[], $16::text[], $17::text[], $18::bigint[], $19::bytea[], $20::bigint[], \
         $21::text[]) AS k (id, merchant_id, customer_id, kek_version, wrapped, created_at, mode) \
       WHERE EXISTS (SELECT 1 FROM vault_keks WHERE version = k.kek_version AND state = 'active') \
       ON CONFLICT DO NOTHING RETURNING id), \
     inserted_tokens AS ( \
       INSERT INTO vault_tokens (id, merchant_id, customer_id, kind, data_key_id, ciphertext, fingerprint, \
         dedupe_fp, display, metadata, canary, created_at, expires_at, erased_at, fingerprint_version, mode) \
       SELECT id, merchant_id, customer_id, kind, data_key_id, ciphertext, fingerprint, NULL, display, \
         metadata, canary, created_at, expires_at, NULL, fingerprint_version, mode \
       FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bytea[], $7::bytea[], \
         $8::text[], $9::text[], $10::bool[], $11::bigint[], $12::bigint[], $13::bigint[], $14::text[]) \
         AS t (id, merchant_id, customer_id, kind, data_key_id, ciphertext, fingerprint, display, metadata, \
         canary, created_at, expires_at, fingerprint_version, mode) \
       WHERE NOT (t.data_key_id = ANY($15)) OR t.data_key_id IN (SELECT id FROM inserted_keys) \
       ON CONFLICT DO NOTHING RETURNING id) \
     SELECT id, true FROM inserted_tokens UNION ALL SELECT id, false FROM inserted_keys";

/// The new data keys of [`INSERT_TOKENS_WITH_KEYS_PG`], as its columns.
struct PgKeyColumns {
    ids: Vec<String>,
    merchants: Vec<String>,
    customers: Vec<String>,
    kek_versions: Vec<i64>,
    wrapped: Vec<Vec<u8>>,
    created: Vec<i64>,
    modes: Vec<&'static str>,
}

impl PgKeyColumns {
    fn new(keys: &[DataKeyRecord]) -> Self {
        Self {
            ids: keys.iter().map(|k| k.id.clone()).collect(),
            merchants: keys.iter().map(|k| k.merchant_id.as_str().to_owned()).collect(),
            customers: keys.iter().map(|k| k.customer.clone()).collect(),
            kek_versions: keys.iter().map(|k| i64::from(k.kek_version)).collect(),
            wrapped: keys.iter().map(|k| k.wrapped.clone()).collect(),
            created: keys.iter().map(|k| k.created_at.unix_millis()).collect(),
            modes: keys.iter().map(|k| k.mode.as_str()).collect(),
        }
    }
}

/// Each inserted token's outcome as a backend reports it: `None` written, `Some(Some(row))` the
/// deduplicated token that exists, `Some(None)` its id is taken.
type RowOutcomes = Vec<Option<Option<TokenRow>>>;

/// The rows of [`INSERT_TOKENS_PG`], as its columns.
struct PgTokenColumns {
    ids: Vec<String>,
    merchants: Vec<String>,
    customers: Vec<Option<String>>,
    kinds: Vec<String>,
    data_keys: Vec<String>,
    ciphertexts: Vec<Option<Vec<u8>>>,
    fingerprints: Vec<Option<Vec<u8>>>,
    displays: Vec<String>,
    metadata: Vec<Option<String>>,
    canaries: Vec<bool>,
    created: Vec<i64>,
    expires: Vec<Option<i64>>,
    fingerprint_versions: Vec<i64>,
    modes: Vec<&'static str>,
}

impl PgTokenColumns {
    /// The rows at `rows`, in that order.
    fn rows(&self, rows: &[usize]) -> Self {
        fn pick<T: Clone>(column: &[T], rows: &[usize]) -> Vec<T> {
            rows.iter().filter_map(|&row| column.get(row).cloned()).collect()
        }
        Self {
            ids: pick(&self.ids, rows),
            merchants: pick(&self.merchants, rows),
            customers: pick(&self.customers, rows),
            kinds: pick(&self.kinds, rows),
            data_keys: pick(&self.data_keys, rows),
            ciphertexts: pick(&self.ciphertexts, rows),
            fingerprints: pick(&self.fingerprints, rows),
            displays: pick(&self.displays, rows),
            metadata: pick(&self.metadata, rows),
            canaries: pick(&self.canaries, rows),
            created: pick(&self.created, rows),
            expires: pick(&self.expires, rows),
            fingerprint_versions: pick(&self.fingerprint_versions, rows),
            modes: pick(&self.modes, rows),
        }
    }

    fn new(tokens: &[TokenRecord]) -> Self {
        Self {
            ids: tokens.iter().map(|t| t.id.clone()).collect(),
            merchants: tokens.iter().map(|t| t.merchant_id.as_str().to_owned()).collect(),
            customers: tokens.iter().map(|t| t.customer.clone()).collect(),
            kinds: tokens.iter().map(|t| t.kind.as_str().to_owned()).collect(),
            data_keys: tokens.iter().map(|t| t.data_key_id.clone()).collect(),
            ciphertexts: tokens.iter().map(|t| t.ciphertext.clone()).collect(),
            fingerprints: tokens.iter().map(|t| t.fingerprint.clone()).collect(),
            displays: tokens.iter().map(|t| t.display.clone()).collect(),
            metadata: tokens.iter().map(|t| t.metadata.clone()).collect(),
            canaries: tokens.iter().map(|t| t.canary).collect(),
            created: tokens.iter().map(|t| t.created_at.unix_millis()).collect(),
            expires: tokens.iter().map(|t| t.expires_at.map(Timestamp::unix_millis)).collect(),
            fingerprint_versions: tokens.iter().map(|t| i64::from(t.fingerprint_version)).collect(),
            modes: tokens.iter().map(|t| t.mode.as_str()).collect(),
        }
    }
}

/// Binds the token columns as `$1`…`$14` of [`INSERT_TOKENS_PG`] and
/// [`INSERT_TOKENS_WITH_KEYS_PG`].
fn bind_token_columns<'q, O>(
    query: sqlx::query::QueryAs<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments>,
    c: &'q PgTokenColumns,
) -> sqlx::query::QueryAs<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments> {
    query
        .bind(&c.ids)
        .bind(&c.merchants)
        .bind(&c.customers)
        .bind(&c.kinds)
        .bind(&c.data_keys)
        .bind(&c.ciphertexts)
        .bind(&c.fingerprints)
        .bind(&c.displays)
        .bind(&c.metadata)
        .bind(&c.canaries)
        .bind(&c.created)
        .bind(&c.expires)
        .bind(&c.fingerprint_versions)
        .bind(&c.modes)
}

/// [`INSERT_TOKENS_PG`] (or, with new data keys, [`INSERT_TOKENS_WITH_KEYS_PG`]) on a lane
/// connection, for rows of distinct ids: which tokens name a new key that is not stored (left out),
/// and the outcomes of the others as [`insert_tokens_in!`] gives them: `None` for a row written,
/// `Some(None)` for an id already taken.
///
/// Safe to run twice: a row whose id is taken by a row with the very same sealed value (sealed
/// under a fresh random nonce, so no other row has it) was written by an earlier attempt whose
/// answer was lost with its connection, and counts as written; so does that attempt's new key.
async fn insert_tokens_pg(
    conn: &mut sqlx::PgConnection,
    c: &PgTokenColumns,
    keys: &PgKeyColumns,
) -> Result<(Vec<bool>, RowOutcomes), sqlx::Error> {
    let with_keys = !keys.ids.is_empty();
    let query = bind_token_columns(
        sqlx::query_as::<_, (String, bool)>(if with_keys { INSERT_TOKENS_WITH_KEYS_PG } else { INSERT_TOKENS_PG }),
        c,
    );
    let query = if with_keys {
        query
            .bind(&keys.ids)
            .bind(&keys.merchants)
            .bind(&keys.customers)
            .bind(&keys.kek_versions)
            .bind(&keys.wrapped)
            .bind(&keys.created)
            .bind(&keys.modes)
    } else {
        query
    };
    let answered: Vec<(String, bool)> = query.fetch_all(&mut *conn).await?;
    let mut written = std::collections::HashSet::new();
    let mut stored_keys = std::collections::HashSet::new();
    for (id, is_token) in answered {
        if is_token {
            written.insert(id);
        } else {
            stored_keys.insert(id);
        }
    }
    // New keys the statement did not store: refused (the owner has a key, or the KEK version is
    // no longer the active one), or stored by an earlier attempt whose answer was lost. The
    // second kind's tokens are written now, under the key that is there.
    let unresolved: Vec<&String> = keys.ids.iter().filter(|id| !stored_keys.contains(*id)).collect();
    if !unresolved.is_empty() {
        let existing: Vec<(String,)> = sqlx::query_as(
            "SELECT d.id FROM UNNEST($1::text[]) AS n (id) \
                 CROSS JOIN LATERAL (SELECT id FROM vault_data_keys WHERE id = n.id LIMIT 1) d",
        )
        .bind(&unresolved)
        .fetch_all(&mut *conn)
        .await?;
        let existing: std::collections::HashSet<String> = existing.into_iter().map(|(id,)| id).collect();
        let rows: Vec<usize> = (0..c.ids.len()).filter(|&row| existing.contains(&c.data_keys[row])).collect();
        if !rows.is_empty() {
            let again = c.rows(&rows);
            let answered: Vec<(String, bool)> =
                bind_token_columns(sqlx::query_as(INSERT_TOKENS_PG), &again).fetch_all(&mut *conn).await?;
            written.extend(answered.into_iter().map(|(id, _)| id));
        }
        stored_keys.extend(existing);
    }
    let refused: Vec<bool> =
        c.data_keys.iter().map(|key| !stored_keys.contains(key) && keys.ids.iter().any(|new| new == key)).collect();
    let taken: Vec<String> = c
        .ids
        .iter()
        .zip(&refused)
        .filter(|(id, refused)| !**refused && !written.contains(*id))
        .map(|(id, _)| id.clone())
        .collect();
    let mine: std::collections::HashSet<String> = if taken.is_empty() {
        std::collections::HashSet::new()
    } else {
        let stored: Vec<(String, Option<Vec<u8>>)> = sqlx::query_as(
            "SELECT t.id, t.ciphertext FROM UNNEST($1::text[]) AS n (id) \
                 CROSS JOIN LATERAL (SELECT id, ciphertext FROM vault_tokens WHERE id = n.id LIMIT 1) t",
        )
        .bind(&taken)
        .fetch_all(conn)
        .await?;
        let sealed: std::collections::HashMap<&str, &Option<Vec<u8>>> =
            c.ids.iter().map(String::as_str).zip(&c.ciphertexts).collect();
        stored
            .into_iter()
            .filter(|(id, ciphertext)| ciphertext.is_some() && sealed.get(id.as_str()) == Some(&ciphertext))
            .map(|(id, _)| id)
            .collect()
    };
    let outcomes = c
        .ids
        .iter()
        .zip(&refused)
        .filter(|(_, refused)| !**refused)
        .map(|(id, _)| if written.contains(id) || mine.contains(id) { None } else { Some(None) })
        .collect();
    Ok((refused, outcomes))
}

/// [`insert_tokens_in!`] on the direct SQLite writer: the same statements, in the writer's group
/// transaction.
fn insert_tokens_sqlite(
    tx: &rusqlite::Connection,
    tokens: &[&TokenRecord],
    now: Timestamp,
) -> rusqlite::Result<RowOutcomes> {
    use rusqlite::{OptionalExtension, params};
    let mut outcomes = Vec::with_capacity(tokens.len());
    let mut insert = tx.prepare_cached(INSERT_TOKEN)?;
    for token in tokens {
        if let Some(dedupe) = &token.dedupe_key {
            tx.prepare_cached(DELETE_EXPIRED_DEDUPE_HOLDER)?.execute(params![
                token.merchant_id.as_str(),
                token.kind.as_str(),
                dedupe.as_slice(),
                now.unix_millis(),
                token.mode.as_str()
            ])?;
        }
        let inserted = insert.execute(params![
            token.id.as_str(),
            token.merchant_id.as_str(),
            token.customer.as_deref(),
            token.kind.as_str(),
            token.data_key_id.as_str(),
            token.ciphertext.as_deref(),
            token.fingerprint.as_deref(),
            token.dedupe_key.as_deref(),
            token.display.as_str(),
            token.metadata.as_deref(),
            token.canary,
            token.created_at.unix_millis(),
            token.expires_at.map(Timestamp::unix_millis),
            i64::from(token.fingerprint_version),
            token.mode.as_str(),
        ])?;
        if inserted == 1 {
            outcomes.push(None);
            continue;
        }
        let existing = match &token.dedupe_key {
            Some(dedupe) => tx
                .prepare_cached(&select_by_dedupe_key())?
                .query_row(
                    params![token.merchant_id.as_str(), token.kind.as_str(), dedupe.as_slice(), token.mode.as_str()],
                    TokenRow::from_sqlite,
                )
                .optional()?,
            None => None,
        };
        outcomes.push(Some(existing));
    }
    Ok(outcomes)
}

#[async_trait]
impl VaultRepository for Store {
    async fn keks(&self) -> Result<Vec<KekRecord>, StoreError> {
        let sql = "SELECT version, kms_key_id, wrapped, state, created_at, retired_at FROM vault_keks ORDER BY version";
        let rows: Vec<KekRow> =
            on_pool!(self, pool => sqlx::query_as(sql).fetch_all(pool).await).map_err(store_error)?;
        rows.into_iter().map(KekRecord::try_from).collect()
    }

    async fn replace_kek_wrapping(&self, version: u32, kms_key_id: &str, wrapped: &[u8]) -> Result<(), StoreError> {
        let sql = "UPDATE vault_keks SET kms_key_id = $1, wrapped = $2 WHERE version = $3 AND wrapped IS NOT NULL";
        on_pool!(self, pool =>
            sqlx::query(sql).bind(kms_key_id).bind(wrapped).bind(i64::from(version)).execute(pool).await.map(|r| r.rows_affected())
        )
        .map_err(store_error)?;
        Ok(())
    }

    async fn insert_active_kek(&self, kek: &KekRecord, events: &[OutboxMessage]) -> Result<(), StoreError> {
        on_pool!(self, pool => async {
            let mut tx = pool.begin().await?;
            sqlx::query("UPDATE vault_keks SET state = 'previous' WHERE state = 'active'").execute(&mut *tx).await?;
            sqlx::query(
                "INSERT INTO vault_keks (version, kms_key_id, wrapped, state, created_at, retired_at) \
                 VALUES ($1, $2, $3, 'active', $4, NULL)",
            )
            .bind(i64::from(kek.version))
            .bind(kek.kms_key_id.as_str())
            .bind(kek.wrapped.as_deref())
            .bind(kek.created_at.unix_millis())
            .execute(&mut *tx)
            .await?;
            write_messages!(tx, events);
            tx.commit().await
        }.await)
        .map_err(store_error)
    }

    async fn retire_kek(&self, version: u32, at: Timestamp, events: &[OutboxMessage]) -> Result<bool, StoreError> {
        let sql = "UPDATE vault_keks SET state = 'retired', wrapped = NULL, retired_at = $1 \
                   WHERE version = $2 AND state = 'previous' \
                   AND NOT EXISTS (SELECT 1 FROM vault_data_keys WHERE kek_version = $2)";
        let changed =
            change_with_messages!(self, sqlx::query(sql).bind(at.unix_millis()).bind(i64::from(version)), events)?;
        Ok(changed == 1)
    }

    async fn data_key_for(
        &self,
        merchant: &MerchantId,
        mode: Mode,
        customer: &str,
    ) -> Result<Option<DataKeyRecord>, StoreError> {
        static SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
            format!(
                "SELECT {DATA_KEY_COLUMNS} FROM vault_data_keys WHERE merchant_id = $1 AND customer_id = $2 \
                 AND mode = $3"
            )
        });
        // Every new customer's first token asks (an indexed point read): on SQLite's direct path,
        let row: Option<DataKeyRow> = if let Some(direct) = &self.direct {
            direct.read(|conn| {
                use rusqlite::OptionalExtension;
                conn.prepare_cached(SQL.as_str())?
                    .query_row([merchant.as_str(), customer, mode.as_str()], |row| {
                        Ok(DataKeyRow {
                            id: row.get(0)?,
                            merchant_id: row.get(1)?,
                            customer_id: row.get(2)?,
                            kek_version: row.get(3)?,
                            wrapped: row.get(4)?,
                            created_at: row.get(5)?,
                            mode: row.get(6)?,
                        })
                    })
                    .optional()
            })?
        } else if let Some(reads) = &self.data_key_reads {
            // And on PostgreSQL, gathered with the other owners asked for meanwhile into one query
            // on the read lane (one statement per owner cost more than the probe itself).
            reads.get(owner_key(merchant.as_str(), mode.as_str(), customer)).await?
        } else {
            on_pool!(self, pool =>
                sqlx::query_as(SQL.as_str())
                    .bind(merchant.as_str())
                    .bind(customer)
                    .bind(mode.as_str())
                    .fetch_optional(pool)
                    .await
            )
            .map_err(store_error)?
        };
        row.map(DataKeyRecord::try_from).transpose()
    }

    async fn insert_data_key_if_absent(&self, key: &DataKeyRecord) -> Result<Option<DataKeyRecord>, StoreError> {
        on_pool!(self, pool =>
            sqlx::query(INSERT_DATA_KEY)
                .bind(key.id.as_str())
                .bind(key.merchant_id.as_str())
                .bind(key.customer.as_str())
                .bind(i64::from(key.kek_version))
                .bind(key.wrapped.as_slice())
                .bind(key.created_at.unix_millis())
                .bind(key.mode.as_str())
                .execute(pool)
                .await
                .map(|r| r.rows_affected())
        )
        .map_err(store_error)?;
        self.data_key_for(&key.merchant_id, key.mode, &key.customer).await
    }

    async fn data_key(&self, id: &str) -> Result<Option<DataKeyRecord>, StoreError> {
        let sql = format!("SELECT {DATA_KEY_COLUMNS} FROM vault_data_keys WHERE id = $1");
        let row: Option<DataKeyRow> =
            on_pool!(self, pool => sqlx::query_as(&sql).bind(id).fetch_optional(pool).await).map_err(store_error)?;
        row.map(DataKeyRecord::try_from).transpose()
    }

    async fn data_keys_older_than(
        &self,
        version: u32,
        after: &str,
        limit: u32,
    ) -> Result<Vec<DataKeyRecord>, StoreError> {
        let sql = format!(
            "SELECT {DATA_KEY_COLUMNS} FROM vault_data_keys WHERE kek_version < $1 AND id > $2 ORDER BY id LIMIT $3"
        );
        let rows: Vec<DataKeyRow> = on_pool!(self, pool =>
            sqlx::query_as(&sql).bind(i64::from(version)).bind(after).bind(i64::from(limit)).fetch_all(pool).await
        )
        .map_err(store_error)?;
        rows.into_iter().map(DataKeyRecord::try_from).collect()
    }

    async fn rewrap_data_keys(&self, keys: &[RewrappedKey]) -> Result<u64, StoreError> {
        let sql = "UPDATE vault_data_keys SET wrapped = $1, kek_version = $2 WHERE id = $3 AND kek_version = $4";
        // A rotation rewraps every data key (a million in well under the two minutes a key
        // rotation may take): one hop to the SQLite writer per batch, one statement per batch
        // on PostgreSQL, rather than a statement (and a thread hop or a round trip) per key.
        if let Some(direct) = &self.direct {
            let keys = keys.to_vec();
            return direct
                .write_batch(keys.len(), move |tx| {
                    let mut update = tx.prepare_cached(sql)?;
                    let mut applied = 0;
                    for key in &keys {
                        applied += update.execute(rusqlite::params![
                            key.wrapped.as_slice(),
                            i64::from(key.to_version),
                            key.id.as_str(),
                            i64::from(key.from_version)
                        ])?;
                    }
                    Ok(u64::try_from(applied).unwrap_or(u64::MAX))
                })
                .await;
        }
        if let crate::Backend::Postgres(pool) = &self.backend {
            let sql = "UPDATE vault_data_keys AS d SET wrapped = u.wrapped, kek_version = u.to_version \
                       FROM UNNEST($1::text[], $2::bytea[], $3::bigint[], $4::bigint[]) \
                         AS u (id, wrapped, to_version, from_version) \
                       WHERE d.id = u.id AND d.kek_version = u.from_version";
            return sqlx::query(sql)
                .bind(keys.iter().map(|k| k.id.clone()).collect::<Vec<_>>())
                .bind(keys.iter().map(|k| k.wrapped.clone()).collect::<Vec<_>>())
                .bind(keys.iter().map(|k| i64::from(k.to_version)).collect::<Vec<_>>())
                .bind(keys.iter().map(|k| i64::from(k.from_version)).collect::<Vec<_>>())
                .execute(pool)
                .await
                .map(|done| done.rows_affected())
                .map_err(store_error);
        }
        on_pool!(self, pool => async {
            let mut tx = pool.begin().await?;
            let mut applied = 0;
            for key in keys {
                applied += sqlx::query(sql)
                    .bind(key.wrapped.as_slice())
                    .bind(i64::from(key.to_version))
                    .bind(key.id.as_str())
                    .bind(i64::from(key.from_version))
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
            }
            tx.commit().await?;
            Ok::<_, sqlx::Error>(applied)
        }.await)
        .map_err(store_error)
    }

    async fn data_key_counts(&self) -> Result<Vec<(u32, u64)>, StoreError> {
        let sql = "SELECT kek_version, COUNT(*) FROM vault_data_keys GROUP BY kek_version";
        let rows: Vec<(i64, i64)> =
            on_pool!(self, pool => sqlx::query_as(sql).fetch_all(pool).await).map_err(store_error)?;
        rows.into_iter().map(|(v, n)| Ok((version(v)?, u64::try_from(n).unwrap_or(0)))).collect()
    }

    async fn insert_tokens(
        &self,
        tokens: &[TokenRecord],
        new_keys: &[DataKeyRecord],
        now: Timestamp,
    ) -> Result<Vec<TokenInsert>, StoreError> {
        // Keys in one order by owner: two groups on PostgreSQL that insert keys of the same owners
        // (a node's requests share a new owner's key) then wait for each other in one order
        // rather than deadlock.
        let mut sorted = new_keys.to_vec();
        sorted.sort_by(|a, b| (a.merchant_id.as_str(), &a.customer).cmp(&(b.merchant_id.as_str(), &b.customer)));
        let new_keys = sorted.as_slice();
        let (refused, raw) = if let Some(direct) = &self.direct {
            let (tokens, new_keys) = (tokens.to_vec(), new_keys.to_vec());
            direct
                .write_batch(tokens.len() + new_keys.len(), move |tx| {
                    let stored = insert_data_keys_sqlite(tx, &new_keys)?;
                    let refused = under_refused_keys(&tokens, &new_keys, &stored);
                    let outcomes = insert_tokens_sqlite(tx, &kept(&tokens, &refused), now)?;
                    Ok((refused, outcomes))
                })
                .await?
        } else if let Some(lane) = &self.pg_writes {
            let distinct_ids = tokens.iter().map(|t| t.id.as_str()).collect::<std::collections::HashSet<_>>().len();
            if distinct_ids == tokens.len() && tokens.iter().all(|t| t.dedupe_key.is_none()) {
                let columns = std::sync::Arc::new((PgTokenColumns::new(tokens), PgKeyColumns::new(new_keys)));
                lane.run_repeatable(move |conn| {
                    let columns = columns.clone();
                    Box::pin(async move { insert_tokens_pg(conn, &columns.0, &columns.1).await })
                })
                .await?
            } else {
                let (tokens, new_keys) = (tokens.to_vec(), new_keys.to_vec());
                lane.run(move |conn| {
                    Box::pin(async move {
                        let mut tx = sqlx::Connection::begin(conn).await?;
                        let stored = insert_data_keys_in!(tx, &new_keys)?;
                        let refused = under_refused_keys(&tokens, &new_keys, &stored);
                        let kept = kept(&tokens, &refused);
                        let outcomes = insert_tokens_in!(tx, &kept, now)?;
                        tx.commit().await?;
                        Ok((refused, outcomes))
                    })
                })
                .await?
            }
        } else {
            on_pool!(self, pool => async {
                let mut tx = pool.begin().await?;
                let stored = insert_data_keys_in!(tx, new_keys)?;
                let refused = under_refused_keys(tokens, new_keys, &stored);
                let kept = kept(tokens, &refused);
                let outcomes = insert_tokens_in!(tx, &kept, now)?;
                tx.commit().await?;
                Ok::<_, sqlx::Error>((refused, outcomes))
            }.await)
            .map_err(store_error)?
        };
        let mut raw = raw.into_iter();
        refused
            .into_iter()
            .map(|refused| match if refused { None } else { Some(raw.next()) } {
                None => Ok(TokenInsert::KeyNotStored),
                Some(Some(None)) => Ok(TokenInsert::Created),
                Some(Some(Some(Some(row)))) => Ok(TokenInsert::Existing(Box::new(TokenRecord::try_from(row)?))),
                Some(Some(Some(None))) => Ok(TokenInsert::IdTaken),
                Some(None) => Err(StoreError::Other("a token insert gave fewer outcomes than tokens".into())),
            })
            .collect()
    }

    async fn token(&self, id: &str) -> Result<Option<TokenRecord>, StoreError> {
        let sql = SELECT_TOKEN_BY_ID.as_str();
        let row: Option<TokenRow> = if let Some(direct) = &self.direct {
            direct.read(|conn| {
                use rusqlite::OptionalExtension;
                conn.prepare_cached(sql)?.query_row([id], TokenRow::from_sqlite).optional()
            })?
        } else if let Some(reads) = &self.token_reads {
            reads.get(id.to_owned()).await?
        } else {
            on_pool!(self, pool => sqlx::query_as(sql).bind(id).fetch_optional(pool).await).map_err(store_error)?
        };
        row.map(TokenRecord::try_from).transpose()
    }

    async fn tokens_by_fingerprint(
        &self,
        merchant: &MerchantId,
        mode: Mode,
        kind: ValueKind,
        fingerprint: &[u8],
        now: Timestamp,
        limit: u32,
    ) -> Result<Vec<TokenRecord>, StoreError> {
        let sql = format!(
            "SELECT {TOKEN_COLUMNS} FROM vault_tokens WHERE merchant_id = $1 AND mode = $6 AND kind = $2 \
             AND fingerprint = $3 AND (expires_at IS NULL OR expires_at > $4) AND erased_at IS NULL \
             ORDER BY created_at, id LIMIT $5"
        );
        let rows: Vec<TokenRow> = on_pool!(self, pool =>
            sqlx::query_as(&sql)
                .bind(merchant.as_str())
                .bind(kind.as_str())
                .bind(fingerprint)
                .bind(now.unix_millis())
                .bind(i64::from(limit))
                .bind(mode.as_str())
                .fetch_all(pool)
                .await
        )
        .map_err(store_error)?;
        rows.into_iter().map(TokenRecord::try_from).collect()
    }

    async fn token_by_dedupe_key(
        &self,
        merchant: &MerchantId,
        mode: Mode,
        kind: ValueKind,
        dedupe_key: &[u8],
    ) -> Result<Option<TokenRecord>, StoreError> {
        let sql = select_by_dedupe_key();
        let row: Option<TokenRow> = on_pool!(self, pool =>
            sqlx::query_as(&sql)
                .bind(merchant.as_str())
                .bind(kind.as_str())
                .bind(dedupe_key)
                .bind(mode.as_str())
                .fetch_optional(pool)
                .await
        )
        .map_err(store_error)?;
        row.map(TokenRecord::try_from).transpose()
    }

    async fn tokens_fingerprinted_before(
        &self,
        version: u32,
        after: &str,
        limit: u32,
    ) -> Result<Vec<TokenRecord>, StoreError> {
        let sql = format!(
            "SELECT {TOKEN_COLUMNS} FROM vault_tokens WHERE fingerprint_version < $1 AND erased_at IS NULL \
             AND id > $2 ORDER BY id LIMIT $3"
        );
        let rows: Vec<TokenRow> = on_pool!(self, pool =>
            sqlx::query_as(&sql).bind(i64::from(version)).bind(after).bind(i64::from(limit)).fetch_all(pool).await
        )
        .map_err(store_error)?;
        rows.into_iter().map(TokenRecord::try_from).collect()
    }

    async fn set_fingerprint(
        &self,
        id: &str,
        from_version: u32,
        to_version: u32,
        fingerprint: &[u8],
        dedupe_key: Option<&[u8]>,
    ) -> Result<bool, StoreError> {
        let sql = "UPDATE vault_tokens SET fingerprint = $1, dedupe_fp = $2, fingerprint_version = $3 \
                   WHERE id = $4 AND fingerprint_version = $5 AND erased_at IS NULL";
        let changed = on_pool!(self, pool =>
            sqlx::query(sql)
                .bind(fingerprint)
                .bind(dedupe_key)
                .bind(i64::from(to_version))
                .bind(id)
                .bind(i64::from(from_version))
                .execute(pool)
                .await
                .map(|r| r.rows_affected())
        )
        .map_err(store_error)?;
        Ok(changed == 1)
    }

    async fn fingerprint_version_counts(&self) -> Result<Vec<(u32, u64)>, StoreError> {
        let sql = "SELECT fingerprint_version, COUNT(*) FROM vault_tokens WHERE erased_at IS NULL GROUP BY fingerprint_version";
        let rows: Vec<(i64, i64)> =
            on_pool!(self, pool => sqlx::query_as(sql).fetch_all(pool).await).map_err(store_error)?;
        rows.into_iter().map(|(v, n)| Ok((version(v)?, u64::try_from(n).unwrap_or(0)))).collect()
    }

    async fn delete_token(&self, merchant: &MerchantId, id: &str) -> Result<bool, StoreError> {
        let sql = "DELETE FROM vault_tokens WHERE merchant_id = $1 AND id = $2";
        let deleted = on_pool!(self, pool =>
            sqlx::query(sql).bind(merchant.as_str()).bind(id).execute(pool).await.map(|r| r.rows_affected())
        )
        .map_err(store_error)?;
        Ok(deleted == 1)
    }

    async fn erase_customer(
        &self,
        merchant: &MerchantId,
        mode: Mode,
        customer: &str,
        at: Timestamp,
        events: &[OutboxMessage],
    ) -> Result<u64, StoreError> {
        on_pool!(self, pool => async {
            let mut tx = pool.begin().await?;
            sqlx::query("DELETE FROM vault_data_keys WHERE merchant_id = $1 AND mode = $2 AND customer_id = $3")
                .bind(merchant.as_str())
                .bind(mode.as_str())
                .bind(customer)
                .execute(&mut *tx)
                .await?;
            let erased = sqlx::query(
                "UPDATE vault_tokens SET ciphertext = NULL, fingerprint = NULL, dedupe_fp = NULL, display = '{}', \
                 metadata = NULL, erased_at = $1 WHERE merchant_id = $2 AND mode = $3 AND customer_id = $4 \
                 AND erased_at IS NULL",
            )
            .bind(at.unix_millis())
            .bind(merchant.as_str())
            .bind(mode.as_str())
            .bind(customer)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            // Their saved cards go with the tokens behind them.
            sqlx::query(
                "UPDATE saved_cards SET status = 'removed', removed_at = $1, removed_by = 'erasure' \
                 WHERE merchant_id = $2 AND mode = $3 AND customer = $4 AND status = 'active'",
            )
            .bind(at.unix_millis())
            .bind(merchant.as_str())
            .bind(mode.as_str())
            .bind(customer)
            .execute(&mut *tx)
            .await?;
            // The customer's account goes with their data (only in this mode: an id of the other
            // mode is left alone): its passkeys, and by cascade its sessions, recovery codes and
            // challenges.
            sqlx::query(
                "DELETE FROM passkeys WHERE merchant_id = $1 AND owner_kind = 'customer' AND owner_id = $2 \
                 AND EXISTS (SELECT 1 FROM customers WHERE merchant_id = $1 AND id = $2 AND mode = $3)",
            )
            .bind(merchant.as_str())
            .bind(customer)
            .bind(mode.as_str())
            .execute(&mut *tx)
            .await?;
            sqlx::query("DELETE FROM customers WHERE merchant_id = $1 AND id = $2 AND mode = $3")
                .bind(merchant.as_str())
                .bind(customer)
                .bind(mode.as_str())
                .execute(&mut *tx)
                .await?;
            write_messages!(tx, events);
            tx.commit().await?;
            Ok::<_, sqlx::Error>(erased)
        }.await)
        .map_err(store_error)
    }

    async fn purge_expired_tokens(&self, now: Timestamp, limit: u32) -> Result<u64, StoreError> {
        let sql = "DELETE FROM vault_tokens WHERE id IN (SELECT id FROM vault_tokens \
                   WHERE expires_at IS NOT NULL AND expires_at <= $1 LIMIT $2)";
        on_pool!(self, pool =>
            sqlx::query(sql).bind(now.unix_millis()).bind(i64::from(limit)).execute(pool).await.map(|r| r.rows_affected())
        )
        .map_err(store_error)
    }
}
