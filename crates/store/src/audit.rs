//! The audit log's tables. Appends compare-and-set `audit_head.size` first, which takes the write
//! lock (SQLite) or the row lock (PostgreSQL), so concurrent writers serialize and a stale one
//! learns the new size instead of writing a second leaf at the same index.

use async_trait::async_trait;
use sqlx::FromRow;
use strongroom_domain::StoreError;
use strongroom_domain::audit::merkle::{Hash, NodeId};
use strongroom_domain::merchants::MerchantId;
use strongroom_domain::ports::{AppendError, AuditRecord, AuditRepository, StoredCheckpoint};
use strongroom_types::Timestamp;

use crate::{Store, on_pool, store_error};

/// Rows per multi-row INSERT (SQLite allows 32,766 parameters per statement).
const ENTRY_ROWS_PER_STATEMENT: usize = 2000;
const NODE_ROWS_PER_STATEMENT: usize = 3000;

fn to_i64(value: u64) -> Result<i64, StoreError> {
    i64::try_from(value).map_err(|_| StoreError::Other("value out of range".into()))
}

fn hash_of(bytes: Vec<u8>) -> Result<Hash, StoreError> {
    bytes.try_into().map_err(|_| StoreError::Other("stored hash is not 32 bytes".into()))
}

#[derive(FromRow)]
struct EntryRow {
    seq: i64,
    merchant_id: Option<String>,
    time: i64,
    leaf: Vec<u8>,
    subject: Option<String>,
}

fn entry(row: EntryRow) -> Result<AuditRecord, StoreError> {
    Ok(AuditRecord {
        seq: u64::try_from(row.seq).map_err(|_| StoreError::Other("negative seq".into()))?,
        merchant: match row.merchant_id {
            Some(id) => Some(MerchantId::parse(&id).map_err(|_| StoreError::Other("bad merchant id".into()))?),
            None => None,
        },
        time: Timestamp::from_unix_millis(row.time),
        leaf: row.leaf,
        subject: row.subject,
    })
}

#[derive(FromRow)]
struct CheckpointRow {
    tree_size: i64,
    root: Vec<u8>,
    note: String,
    created_at: i64,
}

impl TryFrom<CheckpointRow> for StoredCheckpoint {
    type Error = StoreError;
    fn try_from(row: CheckpointRow) -> Result<Self, StoreError> {
        Ok(StoredCheckpoint {
            size: u64::try_from(row.tree_size).map_err(|_| StoreError::Other("negative size".into()))?,
            root: hash_of(row.root)?,
            note: row.note,
            created_at: Timestamp::from_unix_millis(row.created_at),
        })
    }
}

/// The PostgreSQL append as one statement (so one round trip and no explicit transaction): the
/// compare-and-set of the head and both inserts in data-modifying CTEs, the rows passed as arrays
/// so the statement's text, and so its prepared plan, is the same for every batch size.
const APPEND_PG: &str = "WITH claimed AS (\
       UPDATE audit_head SET size = $1 WHERE singleton = 1 AND size = $2 RETURNING size), \
     entries AS (\
       INSERT INTO audit_entries (seq, merchant_id, time, leaf, subject) \
       SELECT * FROM UNNEST($3::bigint[], $4::text[], $5::bigint[], $6::bytea[], $7::text[]) \
       WHERE EXISTS (SELECT 1 FROM claimed)), \
     nodes AS (\
       INSERT INTO audit_nodes (level, idx, hash) \
       SELECT * FROM UNNEST($8::int[], $9::bigint[], $10::bytea[]) \
       WHERE EXISTS (SELECT 1 FROM claimed)) \
     SELECT count(*) FROM claimed";

/// An append's rows as the columns [`APPEND_PG`] binds.
struct PgAppendColumns {
    seqs: Vec<i64>,
    merchants: Vec<Option<String>>,
    times: Vec<i64>,
    leaves: Vec<Vec<u8>>,
    subjects: Vec<Option<String>>,
    levels: Vec<i32>,
    indexes: Vec<i64>,
    hashes: Vec<Vec<u8>>,
}

impl PgAppendColumns {
    fn new(records: &[AuditRecord], nodes: &[(NodeId, Hash)]) -> Self {
        Self {
            seqs: records.iter().map(|r| i64::try_from(r.seq).unwrap_or(i64::MAX)).collect(),
            merchants: records.iter().map(|r| r.merchant.as_ref().map(|m| m.as_str().to_owned())).collect(),
            times: records.iter().map(|r| r.time.unix_millis()).collect(),
            leaves: records.iter().map(|r| r.leaf.clone()).collect(),
            subjects: records.iter().map(|r| r.subject.clone()).collect(),
            levels: nodes.iter().map(|((level, _), _)| i32::try_from(*level).unwrap_or(i32::MAX)).collect(),
            indexes: nodes.iter().map(|((_, idx), _)| i64::try_from(*idx).unwrap_or(i64::MAX)).collect(),
            hashes: nodes.iter().map(|(_, hash)| hash.to_vec()).collect(),
        }
    }
}

/// [`APPEND_PG`] on a lane connection: `Ok(Err(actual size))`, with nothing written, when the log
/// is no longer `expected` entries long. The actual size is read by a second statement, which
/// (read committed) sees the append that won; the first statement's snapshot may predate it.
///
/// Safe to run twice: when the head has moved past these entries and the leaves stored at their
/// indexes are exactly these, the append already happened (an earlier attempt committed and its
/// answer was lost with its connection), and that counts as done.
async fn append_pg(
    conn: &mut sqlx::PgConnection,
    expected: i64,
    new_size: i64,
    c: &PgAppendColumns,
) -> Result<Result<(), i64>, sqlx::Error> {
    let claimed: i64 = sqlx::query_scalar(APPEND_PG)
        .bind(new_size)
        .bind(expected)
        .bind(&c.seqs)
        .bind(&c.merchants)
        .bind(&c.times)
        .bind(&c.leaves)
        .bind(&c.subjects)
        .bind(&c.levels)
        .bind(&c.indexes)
        .bind(&c.hashes)
        .fetch_one(&mut *conn)
        .await?;
    if claimed == 1 {
        return Ok(Ok(()));
    }
    let actual: i64 =
        sqlx::query_scalar("SELECT size FROM audit_head WHERE singleton = 1").fetch_one(&mut *conn).await?;
    if actual >= new_size {
        let stored: Vec<Vec<u8>> =
            sqlx::query_scalar("SELECT leaf FROM audit_entries WHERE seq >= $1 AND seq < $2 ORDER BY seq")
                .bind(expected)
                .bind(new_size)
                .fetch_all(conn)
                .await?;
        if stored == c.leaves {
            return Ok(Ok(()));
        }
    }
    Ok(Err(actual))
}

/// An append on the direct SQLite writer, in its transaction: `Err(actual size)` (nothing
/// written) when the log is no longer `expected` entries long.
fn append_sqlite(
    tx: &rusqlite::Connection,
    expected: i64,
    new_size: i64,
    records: &[AuditRecord],
    nodes: &[(NodeId, Hash)],
) -> rusqlite::Result<Result<(), i64>> {
    use rusqlite::params;
    let claimed = tx
        .prepare_cached("UPDATE audit_head SET size = $1 WHERE singleton = 1 AND size = $2")?
        .execute(params![new_size, expected])?;
    if claimed == 0 {
        let actual = tx.query_row("SELECT size FROM audit_head WHERE singleton = 1", [], |row| row.get(0))?;
        return Ok(Err(actual));
    }
    let mut insert_entry = tx.prepare_cached(
        "INSERT INTO audit_entries (seq, merchant_id, time, leaf, subject) VALUES ($1, $2, $3, $4, $5)",
    )?;
    for record in records {
        insert_entry.execute(params![
            i64::try_from(record.seq).unwrap_or(i64::MAX),
            record.merchant.as_ref().map(|m| m.as_str()),
            record.time.unix_millis(),
            record.leaf.as_slice(),
            record.subject.as_deref(),
        ])?;
    }
    let mut insert_node = tx.prepare_cached("INSERT INTO audit_nodes (level, idx, hash) VALUES ($1, $2, $3)")?;
    for ((level, idx), hash) in nodes {
        insert_node.execute(params![
            i32::try_from(*level).unwrap_or(i32::MAX),
            i64::try_from(*idx).unwrap_or(i64::MAX),
            hash.as_slice()
        ])?;
    }
    Ok(Ok(()))
}

#[async_trait]
impl AuditRepository for Store {
    async fn size(&self) -> Result<u64, StoreError> {
        let size: i64 = on_pool!(self, pool =>
            sqlx::query_scalar("SELECT size FROM audit_head WHERE singleton = 1").fetch_one(pool).await
        )
        .map_err(store_error)?;
        u64::try_from(size).map_err(|_| StoreError::Other("negative audit size".into()))
    }

    async fn nodes(&self, ids: &[NodeId]) -> Result<Vec<Option<Hash>>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut found = std::collections::HashMap::new();
        for chunk in ids.chunks(500) {
            let rows: Vec<(i32, i64, Vec<u8>)> = on_pool!(self, pool => {
                let mut query = sqlx::QueryBuilder::new("SELECT level, idx, hash FROM audit_nodes WHERE ");
                for (i, (level, idx)) in chunk.iter().enumerate() {
                    if i > 0 {
                        query.push(" OR ");
                    }
                    query.push("(level = ").push_bind(i32::try_from(*level).unwrap_or(i32::MAX));
                    query.push(" AND idx = ").push_bind(i64::try_from(*idx).unwrap_or(i64::MAX)).push(")");
                }
                query.build_query_as().fetch_all(pool).await
            })
            .map_err(store_error)?;
            for (level, idx, hash) in rows {
                found.insert(
                    (u32::try_from(level).unwrap_or(u32::MAX), u64::try_from(idx).unwrap_or(u64::MAX)),
                    hash_of(hash)?,
                );
            }
        }
        Ok(ids.iter().map(|id| found.get(id).copied()).collect())
    }

    async fn append(
        &self,
        expected_size: u64,
        records: &[AuditRecord],
        nodes: &[(NodeId, Hash)],
    ) -> Result<(), AppendError> {
        let new_size = to_i64(expected_size + records.len() as u64)?;
        let expected = to_i64(expected_size)?;
        if let Some(direct) = &self.direct {
            let (records, nodes) = (records.to_vec(), nodes.to_vec());
            return match direct
                .write_batch(records.len() + nodes.len(), move |tx| {
                    append_sqlite(tx, expected, new_size, &records, &nodes)
                })
                .await?
            {
                Ok(()) => Ok(()),
                Err(actual) => Err(AppendError::Conflict { actual_size: u64::try_from(actual).unwrap_or(0) }),
            };
        }
        let claimed = if let Some(lane) = &self.pg_writes {
            let columns = std::sync::Arc::new(PgAppendColumns::new(records, nodes));
            lane.run_repeatable(move |conn| {
                let columns = columns.clone();
                Box::pin(async move { append_pg(conn, expected, new_size, &columns).await })
            })
            .await?
        } else {
            // An in-memory SQLite database (tests): the statements on the pool, in one transaction.
            on_pool!(self, pool => async {
                let mut tx = pool.begin().await?;
                let claimed = sqlx::query("UPDATE audit_head SET size = $1 WHERE singleton = 1 AND size = $2")
                    .bind(new_size)
                    .bind(expected)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                if claimed == 0 {
                    let actual: i64 =
                        sqlx::query_scalar("SELECT size FROM audit_head WHERE singleton = 1").fetch_one(&mut *tx).await?;
                    return Ok::<_, sqlx::Error>(Err(actual));
                }
                for chunk in records.chunks(ENTRY_ROWS_PER_STATEMENT) {
                    let mut query =
                        sqlx::QueryBuilder::new("INSERT INTO audit_entries (seq, merchant_id, time, leaf, subject) ");
                    query.push_values(chunk, |mut row, record: &AuditRecord| {
                        row.push_bind(i64::try_from(record.seq).unwrap_or(i64::MAX))
                            .push_bind(record.merchant.as_ref().map(|m| m.as_str().to_owned()))
                            .push_bind(record.time.unix_millis())
                            .push_bind(record.leaf.clone())
                            .push_bind(record.subject.clone());
                    });
                    query.build().execute(&mut *tx).await?;
                }
                for chunk in nodes.chunks(NODE_ROWS_PER_STATEMENT) {
                    let mut query = sqlx::QueryBuilder::new("INSERT INTO audit_nodes (level, idx, hash) ");
                    query.push_values(chunk, |mut row, ((level, idx), hash): &(NodeId, Hash)| {
                        row.push_bind(i32::try_from(*level).unwrap_or(i32::MAX))
                            .push_bind(i64::try_from(*idx).unwrap_or(i64::MAX))
                            .push_bind(hash.to_vec());
                    });
                    query.build().execute(&mut *tx).await?;
                }
                tx.commit().await?;
                Ok(Ok(()))
            }.await)
            .map_err(store_error)?
        };
        claimed.map_err(|actual| AppendError::Conflict { actual_size: u64::try_from(actual).unwrap_or(0) })
    }

    async fn entries(&self, start: u64, limit: u32) -> Result<Vec<AuditRecord>, StoreError> {
        let sql =
            "SELECT seq, merchant_id, time, leaf, subject FROM audit_entries WHERE seq >= $1 ORDER BY seq LIMIT $2";
        let rows: Vec<EntryRow> = on_pool!(self, pool =>
            sqlx::query_as(sql).bind(to_i64(start)?).bind(i64::from(limit)).fetch_all(pool).await
        )
        .map_err(store_error)?;
        rows.into_iter().map(entry).collect()
    }

    async fn entries_about(
        &self,
        merchant: &MerchantId,
        subject: &str,
        limit: u32,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        let sql = "SELECT seq, merchant_id, time, leaf, subject FROM audit_entries \
                   WHERE merchant_id = $1 AND subject = $2 ORDER BY seq DESC LIMIT $3";
        let rows: Vec<EntryRow> = on_pool!(self, pool =>
            sqlx::query_as(sql).bind(merchant.as_str()).bind(subject).bind(i64::from(limit)).fetch_all(pool).await
        )
        .map_err(store_error)?;
        rows.into_iter().map(entry).collect()
    }

    async fn entries_with_leaf_hashes(
        &self,
        start: u64,
        limit: u32,
    ) -> Result<Vec<(AuditRecord, Option<Hash>)>, StoreError> {
        let sql = "SELECT e.seq, e.merchant_id, e.time, e.leaf, n.hash FROM audit_entries e \
                   LEFT JOIN audit_nodes n ON n.level = 0 AND n.idx = e.seq \
                   WHERE e.seq >= $1 ORDER BY e.seq LIMIT $2";
        let rows: Vec<(i64, Option<String>, i64, Vec<u8>, Option<Vec<u8>>)> = on_pool!(self, pool =>
            sqlx::query_as(sql).bind(to_i64(start)?).bind(i64::from(limit)).fetch_all(pool).await
        )
        .map_err(store_error)?;
        rows.into_iter()
            .map(|(seq, merchant_id, time, leaf, hash)| {
                let record = entry(EntryRow { seq, merchant_id, time, leaf, subject: None })?;
                Ok((record, hash.map(hash_of).transpose()?))
            })
            .collect()
    }

    async fn insert_checkpoint(&self, checkpoint: &StoredCheckpoint) -> Result<(), StoreError> {
        let sql = "INSERT INTO audit_checkpoints (tree_size, root, note, created_at) VALUES ($1, $2, $3, $4) \
                   ON CONFLICT (tree_size) DO NOTHING";
        on_pool!(self, pool =>
            sqlx::query(sql)
                .bind(to_i64(checkpoint.size)?)
                .bind(checkpoint.root.to_vec())
                .bind(checkpoint.note.as_str())
                .bind(checkpoint.created_at.unix_millis())
                .execute(pool)
                .await
                .map(|r| r.rows_affected())
        )
        .map_err(store_error)?;
        Ok(())
    }

    async fn latest_checkpoint(&self) -> Result<Option<StoredCheckpoint>, StoreError> {
        let sql = "SELECT tree_size, root, note, created_at FROM audit_checkpoints ORDER BY tree_size DESC LIMIT 1";
        let row: Option<CheckpointRow> =
            on_pool!(self, pool => sqlx::query_as(sql).fetch_optional(pool).await).map_err(store_error)?;
        row.map(StoredCheckpoint::try_from).transpose()
    }

    async fn checkpoints(&self) -> Result<Vec<StoredCheckpoint>, StoreError> {
        let sql = "SELECT tree_size, root, note, created_at FROM audit_checkpoints ORDER BY tree_size";
        let rows: Vec<CheckpointRow> =
            on_pool!(self, pool => sqlx::query_as(sql).fetch_all(pool).await).map_err(store_error)?;
        rows.into_iter().map(StoredCheckpoint::try_from).collect()
    }
}
