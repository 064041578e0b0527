//! Tampering with a real audit log — a SQLite file and a PostgreSQL table — and `verify_log`
//! naming what happened: a changed, removed, inserted or reordered entry, a forged checkpoint, a
//! truncated log.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code fails loudly")]

use std::sync::Arc;

use strongroom_crypto::signing::SigningKey;
use strongroom_domain::audit::checkpoint::{CheckpointSigner, VerifierKey};
use strongroom_domain::audit::event::{AuditEvent, Outcome};
use strongroom_domain::audit::log::AuditLog;
use strongroom_domain::audit::verify::{Finding, verify_log};
use strongroom_domain::ports::AuditRepository;
use strongroom_store::{PoolSettings, Store};
use strongroom_types::{ManualClock, OsEntropy, Secret, Timestamp};

fn signer() -> Arc<CheckpointSigner> {
    Arc::new(
        CheckpointSigner::new("test/tamper".into(), Arc::new(SigningKey::from_seed(&Secret::new([5; 32])))).unwrap(),
    )
}

/// A log of 40 entries with checkpoints at 10, 21 and 32 (each checkpoint logs itself).
async fn populated(store: &Store) -> VerifierKey {
    store.migrate().await.unwrap();
    let clock = Arc::new(ManualClock::new(Timestamp::from_unix_millis(1_800_000_000_000)));
    let (log, _task) = AuditLog::open(Arc::new(store.clone()), signer(), clock).await.unwrap();
    for i in 0..37u64 {
        log.record(AuditEvent::system("test.event", Outcome::Success).on("n", i.to_string())).await.unwrap();
        if i == 9 || i == 19 || i == 29 {
            log.checkpoint().await.unwrap();
        }
    }
    assert_eq!(log.size().await.unwrap(), 40);
    log.close().await;
    VerifierKey::parse(&signer().verifier_key()).unwrap()
}

async fn finding(store: &Store, key: &VerifierKey) -> Option<Finding> {
    verify_log(store, key, |_, _| {}).await.unwrap().finding
}

async fn leaf(store: &Store, seq: u64) -> Vec<u8> {
    store.entries(seq, 1).await.unwrap().remove(0).leaf
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// SQL literal for bytes on either backend.
fn blob(store: &Store, bytes: &[u8]) -> String {
    match store.kind() {
        strongroom_store::BackendKind::Sqlite => format!("X'{}'", hex(bytes)),
        strongroom_store::BackendKind::Postgres => format!("'\\x{}'::bytea", hex(bytes)),
    }
}

async fn tampering_cases(fresh: impl AsyncFn() -> (Store, Box<dyn std::any::Any>)) {
    // Untouched: verifies.
    let (store, _guard) = fresh().await;
    let key = populated(&store).await;
    let report = verify_log(&store, &key, |_, _| {}).await.unwrap();
    assert_eq!(report.finding, None);
    assert_eq!((report.entries, report.checkpoints), (40, 3));
    store.close().await;

    // Changed entry (leaf only): named exactly.
    let (store, _guard) = fresh().await;
    let key = populated(&store).await;
    let changed = String::from_utf8(leaf(&store, 13).await).unwrap().replace("\"success\"", "\"denied!\"");
    store
        .execute_admin(&format!("UPDATE audit_entries SET leaf = {} WHERE seq = 13", blob(&store, changed.as_bytes())))
        .await
        .unwrap();
    assert_eq!(finding(&store, &key).await, Some(Finding::LeafChanged { index: 13 }));
    store.close().await;

    // Changed entry and its stored hash: the signed root of the next checkpoint catches it.
    let (store, _guard) = fresh().await;
    let key = populated(&store).await;
    let changed = String::from_utf8(leaf(&store, 13).await).unwrap().replace("\"success\"", "\"denied!\"");
    let hash = strongroom_domain::audit::merkle::leaf_hash(changed.as_bytes());
    store
        .execute_admin(&format!("UPDATE audit_entries SET leaf = {} WHERE seq = 13", blob(&store, changed.as_bytes())))
        .await
        .unwrap();
    store
        .execute_admin(&format!("UPDATE audit_nodes SET hash = {} WHERE level = 0 AND idx = 13", blob(&store, &hash)))
        .await
        .unwrap();
    assert_eq!(finding(&store, &key).await, Some(Finding::RootMismatch { size: 21, after: 10 }));
    store.close().await;

    // Removed entry.
    let (store, _guard) = fresh().await;
    let key = populated(&store).await;
    store.execute_admin("DELETE FROM audit_entries WHERE seq = 5").await.unwrap();
    assert!(matches!(finding(&store, &key).await, Some(Finding::Sequence { index: 5, .. })));
    store.close().await;

    // Inserted entry: rows from 7 on shifted up by one to make room for a forged one.
    let (store, _guard) = fresh().await;
    let key = populated(&store).await;
    store.execute_admin("UPDATE audit_entries SET seq = seq + 1000 WHERE seq >= 7").await.unwrap();
    store.execute_admin("UPDATE audit_entries SET seq = seq - 999 WHERE seq >= 1007").await.unwrap();
    let forged = String::from_utf8(leaf(&store, 6).await).unwrap().replace("\"seq\":6", "\"seq\":7");
    store
        .execute_admin(&format!(
            "INSERT INTO audit_entries (seq, merchant_id, time, leaf) VALUES (7, NULL, 0, {})",
            blob(&store, forged.as_bytes())
        ))
        .await
        .unwrap();
    assert!(matches!(
        finding(&store, &key).await,
        Some(Finding::Sequence { index: 8, .. }) | Some(Finding::LeafChanged { index: 7 })
    ));
    store.close().await;

    // Reordered entries: two leaves swapped between rows.
    let (store, _guard) = fresh().await;
    let key = populated(&store).await;
    let (a, b) = (leaf(&store, 2).await, leaf(&store, 3).await);
    store.execute_admin(&format!("UPDATE audit_entries SET leaf = {} WHERE seq = 2", blob(&store, &b))).await.unwrap();
    store.execute_admin(&format!("UPDATE audit_entries SET leaf = {} WHERE seq = 3", blob(&store, &a))).await.unwrap();
    assert!(matches!(finding(&store, &key).await, Some(Finding::Sequence { index: 2, .. })));
    store.close().await;

    // Forged checkpoint: a note whose size was edited.
    let (store, _guard) = fresh().await;
    let key = populated(&store).await;
    store
        .execute_admin("UPDATE audit_checkpoints SET note = REPLACE(note, '\n21\n', '\n22\n') WHERE tree_size = 21")
        .await
        .unwrap();
    assert!(matches!(finding(&store, &key).await, Some(Finding::ForgedCheckpoint { size: 21, .. })));
    store.close().await;

    // Truncated log: the newest entries and the head rolled back below a signed checkpoint.
    let (store, _guard) = fresh().await;
    let key = populated(&store).await;
    store.execute_admin("DELETE FROM audit_entries WHERE seq >= 25").await.unwrap();
    store.execute_admin("DELETE FROM audit_nodes WHERE idx >= 0 AND level = 0 AND idx >= 25").await.unwrap();
    store.execute_admin("UPDATE audit_head SET size = 25").await.unwrap();
    assert_eq!(finding(&store, &key).await, Some(Finding::Truncated { entries: 25, checkpoint_size: 32 }));
    store.close().await;
}

#[tokio::test]
async fn tampering_with_a_sqlite_file_is_detected() {
    tampering_cases(async || {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("audit.db").display());
        let store = Store::connect(&url, PoolSettings::default()).await.unwrap();
        (store, Box::new(dir) as Box<dyn std::any::Any>)
    })
    .await;
}

struct DropDatabase(String);

impl Drop for DropDatabase {
    fn drop(&mut self) {
        let name = self.0.clone();
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(async {
                let admin =
                    Store::connect(&admin_url(), PoolSettings { max_connections: Some(1), ..Default::default() })
                        .await
                        .unwrap();
                admin.execute_admin(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await.unwrap();
                admin.close().await;
            });
        })
        .join();
    }
}

fn admin_url() -> String {
    std::env::var("STRONGROOM_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

#[tokio::test]
async fn tampering_with_a_postgres_table_is_detected() {
    let settings = PoolSettings { max_connections: Some(1), ..Default::default() };
    let Ok(admin) = Store::connect(&admin_url(), settings).await else {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "PostgreSQL is required under CI=true");
        eprintln!("SKIPPED: PostgreSQL does not answer; PostgreSQL tampering tests skipped");
        return;
    };
    admin.close().await;
    tampering_cases(async || {
        let name = format!(
            "strongroom_tamper_{}",
            strongroom_domain::merchants::MerchantId::generate(&OsEntropy).as_str()[4..].to_owned()
        );
        let admin = Store::connect(&admin_url(), PoolSettings { max_connections: Some(1), ..Default::default() })
            .await
            .unwrap();
        admin.execute_admin(&format!("CREATE DATABASE {name}")).await.unwrap();
        admin.close().await;
        let url = format!("{}/{name}", admin_url().rsplit_once('/').unwrap().0);
        let store = Store::connect(&url, PoolSettings::default()).await.unwrap();
        (store, Box::new(DropDatabase(name)) as Box<dyn std::any::Any>)
    })
    .await;
}
