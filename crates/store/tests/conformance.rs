//! One conformance suite for the repository ports, run against SQLite and, when it answers,
//! PostgreSQL (`STRONGROOM_TEST_POSTGRES_URL`, default `postgres://postgres@127.0.0.1:5432/postgres`).
//! Under `CI=true` an unreachable PostgreSQL fails the suite instead of skipping it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code fails loudly")]

use std::sync::Arc;

use strongroom_domain::api_keys::{ApiKeyId, ApiKeyService, ApiKeySettings, AuthError, AuthFailure, NewApiKey};
use strongroom_domain::bootstrap::bootstrap_if_new;
use strongroom_domain::keyring::Keyring;
use strongroom_domain::merchants::MerchantId;
use strongroom_domain::modes::{Mode, Space};
use strongroom_domain::ports::{ApiKeyRepository, HealthRepository, MerchantRepository};
use strongroom_store::{PoolSettings, Store};
use strongroom_types::{Clock, ManualClock, OsEntropy, Secret, Timestamp};

async fn sqlite_store() -> (Store, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("db.sqlite").display());
    let store = Store::connect(&url, PoolSettings::default()).await.unwrap();
    (store, dir)
}

/// A fresh PostgreSQL database, dropped by the returned guard's owner at the end of the test.
async fn postgres_store() -> Option<(Store, String)> {
    let admin_url = std::env::var("STRONGROOM_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    let admin = match Store::connect(&admin_url, PoolSettings { max_connections: Some(1), ..Default::default() }).await
    {
        Ok(store) => store,
        Err(err) => {
            assert!(std::env::var("CI").as_deref() != Ok("true"), "PostgreSQL is required under CI=true: {err}");
            eprintln!("PostgreSQL not reachable at {admin_url}: PostgreSQL conformance suite SKIPPED");
            return None;
        }
    };
    let name = format!("strongroom_store_{}", ApiKeyId::generate(&OsEntropy).as_str().trim_start_matches("key_"));
    admin.execute_admin(&format!("CREATE DATABASE {name}")).await.unwrap();
    admin.close().await;
    let url = match admin_url.rsplit_once('/') {
        Some((base, _)) => format!("{base}/{name}"),
        None => unreachable!(),
    };
    Some((Store::connect(&url, PoolSettings::default()).await.unwrap(), name))
}

async fn drop_postgres(name: &str) {
    let admin_url = std::env::var("STRONGROOM_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    let admin =
        Store::connect(&admin_url, PoolSettings { max_connections: Some(1), ..Default::default() }).await.unwrap();
    admin.execute_admin(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await.unwrap();
    admin.close().await;
}

async fn suite(store: Store) {
    assert_eq!(store.migrate().await.unwrap(), 25, "first migrate applies every migration");
    assert_eq!(store.migrate().await.unwrap(), 0, "second migrate is a no-op");
    store.ping().await.unwrap();

    let clock = Arc::new(ManualClock::new(Timestamp::from_unix_millis(1_800_000_000_000)));
    let kms = strongroom_crypto::LocalKeyFile::open_or_create(
        &std::env::temp_dir().join(format!("sr-conformance-{}.key", std::process::id())),
        Arc::new(OsEntropy),
    )
    .unwrap()
    .0;
    let keyring = Keyring::load(&store, &kms, clock.as_ref(), &OsEntropy).await.unwrap();
    let again = Keyring::load(&store, &kms, clock.as_ref(), &OsEntropy).await.unwrap();
    assert_eq!(keyring.api_key_digest.digest(b"x"), again.api_key_digest.digest(b"x"), "keyring key is stable");

    let repo: Arc<dyn ApiKeyRepository> = Arc::new(store.clone());
    let service = ApiKeyService::new(
        repo.clone(),
        keyring.api_key_digest.clone(),
        clock.clone(),
        Arc::new(OsEntropy),
        ApiKeySettings::default(),
    );

    let boot = bootstrap_if_new(&store, &service, &OsEntropy).await.unwrap().expect("first bootstrap");
    assert!(bootstrap_if_new(&store, &service, &OsEntropy).await.unwrap().is_none(), "bootstrap happens once");
    let merchant = boot.merchant.id.clone();
    assert_eq!(store.merchant(&merchant).await.unwrap().unwrap().name, "Default merchant");

    let principal = service.authenticate(boot.api_key.expose()).await.unwrap();
    assert_eq!(principal.merchant_id(), &merchant);

    // Listing with a cursor, newest first.
    let mut ids = Vec::new();
    for i in 0..5 {
        clock.advance(std::time::Duration::from_millis(10));
        let created = service
            .create(
                &merchant,
                NewApiKey { name: format!("k{i}"), scopes: vec!["admin:metrics".into()], mode: None, expires_at: None },
                None,
            )
            .await
            .unwrap();
        ids.push(created.record.id);
    }
    let first_page = service.list(Space { merchant: &merchant, mode: Mode::Live }, None, 2).await.unwrap();
    assert_eq!(first_page.iter().map(|k| k.name.as_str()).collect::<Vec<_>>(), ["k4", "k3"]);
    let second_page =
        service.list(Space { merchant: &merchant, mode: Mode::Live }, Some(&first_page[1].id), 10).await.unwrap();
    assert_eq!(second_page.iter().map(|k| k.name.as_str()).collect::<Vec<_>>(), ["k2", "k1", "k0", "bootstrap"]);

    // Another merchant's key is invisible.
    let stranger = MerchantId::generate(&OsEntropy);
    assert!(service.get(Space { merchant: &stranger, mode: Mode::Live }, &ids[0]).await.is_err());
    assert!(repo.revoke(&stranger, &ids[0], clock.now()).await.unwrap().is_none());

    // Revocation is immediate on this node and idempotent.
    let key_id = principal.key_id().unwrap().clone();
    let revoked = service.revoke(&merchant, &key_id).await.unwrap();
    assert!(revoked.revoked_at.is_some());
    let again = service.revoke(&merchant, &key_id).await.unwrap();
    assert_eq!(again.revoked_at, revoked.revoked_at);
    assert!(matches!(
        service.authenticate(boot.api_key.expose()).await,
        Err(AuthError::Refused(AuthFailure::Revoked, _))
    ));

    // A forged secret with a real id is unknown.
    let real = boot.api_key.expose();
    let forged = Secret::new(format!("{}{}", &real[..real.len() - 1], if real.ends_with('a') { "b" } else { "a" }));
    assert!(matches!(service.authenticate(forged.expose()).await, Err(AuthError::Refused(AuthFailure::Unknown, _))));
    audit_suite(&store).await;
    identity_suite(&store, &merchant).await;
    staff_suite(&store, &merchant).await;
    outbox_suite(&store, &merchant).await;
    vault_suite(&store, &merchant).await;
    races_suite(&store).await;
    gateway_events_suite(&store).await;
    create_and_confirm_suite(&store).await;
    ledger_suite(&store).await;
    detection_counts_suite(&store).await;
    incidents_suite(&store).await;
    store.close().await;
}

/// Incidents: of 30 concurrent open-or-joins for one merchant one opens and 29 join (the partial
/// unique index decides), each with its timeline entry and subjects once; a hand-made open
/// while one is active writes nothing; a state change applies from its states once; a resolved
/// incident frees the merchant for a new one; a freeze is set and lifted once.
async fn incidents_suite(store: &Store) {
    use strongroom_domain::detection::incidents::Severity;
    use strongroom_domain::ports::incidents::{
        FreezeKind, IncidentChange, IncidentRecord, IncidentsRepository, Landed, SubjectRecord, TimelineEntry,
    };
    let t = |ms: i64| Timestamp::from_unix_millis(1_800_000_000_000 + ms);
    let store = Arc::new(store.clone());
    let record = |id: String, severity: Severity| IncidentRecord {
        id,
        merchant: Some("mer_incidents".to_owned()),
        title: "Detected: credential stuffing".to_owned(),
        severity,
        state: "open".to_owned(),
        assignee: None,
        opened_by: "detector".to_owned(),
        opened_at: t(0),
        updated_at: t(0),
        resolved_at: None,
    };
    let entry = |kind: &str| TimelineEntry {
        at: t(0),
        actor: "detector".to_owned(),
        kind: kind.to_owned(),
        text: Some("ten accounts from one client".to_owned()),
        data: serde_json::json!({"point": "credential_stuffing"}),
    };
    let landings = Arc::new(std::sync::Mutex::new(Vec::new()));
    let opened = winners(30, |n| {
        let store = store.clone();
        let landings = landings.clone();
        let new = record(format!("inc_race{n:02}"), if n == 7 { Severity::Critical } else { Severity::High });
        let subjects = vec![
            SubjectRecord { kind: "client".to_owned(), value: "192.0.2.1".to_owned(), added_at: t(0) },
            SubjectRecord { kind: "client".to_owned(), value: format!("198.51.100.{n}"), added_at: t(0) },
        ];
        let entry = entry("detection");
        async move {
            let events = |_: &IncidentRecord, _: Landed| Vec::new();
            let (incident, landed) = store.open_or_join(&new, &entry, &subjects, true, &events).await.unwrap().unwrap();
            landings.lock().unwrap().push((incident.id, landed));
            landed == Landed::Opened
        }
    })
    .await;
    assert_eq!(opened, 1, "one opens");
    let landings = landings.lock().unwrap().clone();
    let id = landings.iter().find(|l| l.1 == Landed::Opened).unwrap().0.clone();
    assert!(landings.iter().all(|l| l.0 == id), "the others joined it");
    let active = store.list_incidents(Some("mer_incidents"), Some("open"), 100).await.unwrap();
    assert_eq!(active.len(), 1);
    assert_eq!(active[0].severity, Severity::Critical, "the highest joined");
    assert_eq!(store.timeline(&id).await.unwrap().len(), 30);
    assert_eq!(store.subjects(&id).await.unwrap().len(), 31, "192.0.2.1 once");

    // A later detection that joins at the incident's severity still marks it changed.
    let mut later = record("inc_later".to_owned(), Severity::High);
    later.opened_at = t(5);
    let events = |_: &IncidentRecord, _: Landed| Vec::new();
    let (joined, landed) = store.open_or_join(&later, &entry("detection"), &[], true, &events).await.unwrap().unwrap();
    assert_eq!((joined.id.as_str(), landed), (id.as_str(), Landed::Joined));
    assert_eq!(joined.updated_at, t(5), "a join updates the incident");

    // By hand while one is active: nothing written.
    let none = |_: &IncidentRecord, _: Landed| Vec::new();
    let manual = record("inc_manual".to_owned(), Severity::Low);
    assert!(store.open_or_join(&manual, &entry("opened"), &[], false, &none).await.unwrap().is_none());
    assert!(store.incident("inc_manual").await.unwrap().is_none());

    // Contained once, then resolved once; a resolved incident takes notes but no steps.
    let contain = IncidentChange { id: &id, from: &["open"], state: Some("contained"), assignee: None, at: t(1) };
    let won = winners(30, |_| {
        let store = store.clone();
        let (id, entry) = (id.clone(), entry("state"));
        async move {
            let change =
                IncidentChange { id: &id, from: &["open"], state: Some("contained"), assignee: None, at: t(1) };
            store.change_incident(&change, &entry, &[]).await.unwrap()
        }
    })
    .await;
    assert_eq!(won, 1, "contained once");
    assert!(!store.change_incident(&contain, &entry("state"), &[]).await.unwrap());
    let resolve = IncidentChange {
        id: &id,
        from: &["open", "contained"],
        state: Some("resolved"),
        assignee: Some(None),
        at: t(2),
    };
    assert!(store.change_incident(&resolve, &entry("state"), &[]).await.unwrap());
    let resolved = store.incident(&id).await.unwrap().unwrap();
    assert_eq!((resolved.state.as_str(), resolved.resolved_at), ("resolved", Some(t(2))));
    assert!(store.add_to_incident(&id, &["open", "contained", "resolved"], &entry("note"), &[], &[]).await.unwrap());
    assert!(!store.add_to_incident(&id, &["open", "contained"], &entry("playbook"), &[], &[]).await.unwrap());
    // The merchant is free for a new incident.
    let (fresh, landed) = store.open_or_join(&manual, &entry("opened"), &[], false, &none).await.unwrap().unwrap();
    assert_eq!((fresh.id.as_str(), landed), ("inc_manual", Landed::Opened));

    // Freezes: set once, lifted once, per kind.
    let frozen = winners(30, |_| {
        let store = store.clone();
        async move { store.freeze("mer_incidents", FreezeKind::Refunds, "stf_a", t(3)).await.unwrap() }
    })
    .await;
    assert_eq!(frozen, 1, "frozen once");
    assert_eq!(store.frozen("mer_incidents", FreezeKind::Refunds).await.unwrap(), Some((t(3), "stf_a".to_owned())));
    assert_eq!(store.frozen("mer_incidents", FreezeKind::Forwarding).await.unwrap(), None);
    assert!(store.unfreeze("mer_incidents", FreezeKind::Refunds).await.unwrap());
    assert!(!store.unfreeze("mer_incidents", FreezeKind::Refunds).await.unwrap());
    assert_eq!(store.frozen("mer_incidents", FreezeKind::Refunds).await.unwrap(), None);
}

/// A token row of `merchant` with `ciphertext` as its sealed value, as the store receives it.
fn token_record(
    merchant: &MerchantId,
    id: &str,
    ciphertext: Vec<u8>,
    now: Timestamp,
) -> strongroom_domain::ports::TokenRecord {
    strongroom_domain::ports::TokenRecord {
        id: id.into(),
        merchant_id: merchant.clone(),
        mode: Mode::Live,
        customer: None,
        kind: strongroom_domain::vault::values::ValueKind::Email,
        data_key_id: "dk_conformance".into(),
        ciphertext: Some(ciphertext),
        fingerprint: Some(vec![1; 32]),
        fingerprint_version: 1,
        dedupe_key: None,
        display: "{}".into(),
        metadata: None,
        canary: false,
        created_at: now,
        expires_at: None,
        erased_at: None,
    }
}

/// The vault's writes and reads as both backends do them: a batch of inserts (one statement on
/// PostgreSQL when it can be), ids already taken inside and outside the batch, dedupe, many
/// concurrent reads by id (coalesced on PostgreSQL), and a rewrap that applies only to keys still
/// under the version it names.
async fn vault_suite(store: &Store, merchant: &MerchantId) {
    use strongroom_domain::ports::{DataKeyRecord, KekRecord, KekState, RewrappedKey, TokenInsert, VaultRepository};

    let now = Timestamp::from_unix_millis(1_800_000_000_000);
    let token = |id: &str, dedupe: Option<u8>, value: u8| {
        let mut record = token_record(merchant, id, vec![value; 40], now);
        record.fingerprint = Some(vec![value; 32]);
        record.dedupe_key = dedupe.map(|d| vec![d; 32]);
        record
    };
    let sealed = |id: &str| {
        let store = store.clone();
        let id = id.to_owned();
        async move { store.token(&id).await.unwrap().and_then(|t| t.ciphertext) }
    };
    let created = TokenInsert::Created;
    let fresh = store.insert_tokens(&[token("tok_va", None, 1), token("tok_vb", None, 2)], &[], now).await.unwrap();
    assert_eq!(fresh, [created.clone(), created.clone()]);
    let taken = store.insert_tokens(&[token("tok_va", None, 3), token("tok_vc", None, 4)], &[], now).await.unwrap();
    assert_eq!(taken, [TokenInsert::IdTaken, created.clone()], "an id taken by an older row");
    assert_eq!(sealed("tok_va").await, Some(vec![1; 40]), "the older row stays");
    let twice = store.insert_tokens(&[token("tok_vd", None, 5), token("tok_vd", None, 6)], &[], now).await.unwrap();
    assert_eq!(twice, [created.clone(), TokenInsert::IdTaken], "one id twice in a batch: the first is stored");
    assert_eq!(sealed("tok_vd").await, Some(vec![5; 40]));
    let deduped =
        store.insert_tokens(&[token("tok_ve", Some(9), 7), token("tok_vf", Some(9), 7)], &[], now).await.unwrap();
    assert_eq!(deduped[0], created);
    assert!(matches!(&deduped[1], TokenInsert::Existing(t) if t.id == "tok_ve"), "{deduped:?}");

    // Many reads at once: each key gets its own row, a missing key none.
    let keys = ["tok_va", "tok_vb", "tok_vc", "tok_vd", "tok_ve", "tok_vmissing"];
    let expected =
        [Some(vec![1; 40]), Some(vec![2; 40]), Some(vec![4; 40]), Some(vec![5; 40]), Some(vec![7; 40]), None];
    let reads: Vec<_> = (0..300).map(|i| tokio::spawn(sealed(keys[i % keys.len()]))).collect();
    for (i, read) in reads.into_iter().enumerate() {
        assert_eq!(read.await.unwrap(), expected[i % keys.len()], "read {i} of {}", keys[i % keys.len()]);
    }

    // Rewrap: only keys still under the version named move.
    let latest = store.keks().await.unwrap().iter().map(|k| k.version).max().unwrap_or(0);
    let kek = |version: u32| KekRecord {
        version,
        kms_key_id: "conformance".into(),
        wrapped: Some(vec![version as u8; 48]),
        state: KekState::Active,
        created_at: now,
        retired_at: None,
    };
    store.insert_active_kek(&kek(latest + 1), &[]).await.unwrap();
    let data_key = |id: &str, customer: &str| DataKeyRecord {
        id: id.into(),
        merchant_id: merchant.clone(),
        mode: Mode::Live,
        customer: customer.into(),
        kek_version: latest + 1,
        wrapped: vec![1; 60],
        created_at: now,
    };
    for (id, customer) in [("dk_v1", "cus_v1"), ("dk_v2", "cus_v2"), ("dk_v3", "cus_v3")] {
        assert_eq!(store.insert_data_key_if_absent(&data_key(id, customer)).await.unwrap().unwrap().id, id);
    }
    // One data key per customer in each mode: the test space's "cus_v1" is another owner.
    let test_key = DataKeyRecord { mode: Mode::Test, ..data_key("dk_v1_test", "cus_v1") };
    assert_eq!(store.insert_data_key_if_absent(&test_key).await.unwrap().unwrap().id, "dk_v1_test");
    assert_eq!(store.data_key_for(merchant, Mode::Live, "cus_v1").await.unwrap().unwrap().id, "dk_v1");
    assert_eq!(store.data_key_for(merchant, Mode::Test, "cus_v1").await.unwrap().unwrap().id, "dk_v1_test");
    store.insert_active_kek(&kek(latest + 2), &[]).await.unwrap();
    let moved = |id: &str, from_version: u32| RewrappedKey {
        id: id.into(),
        from_version,
        to_version: latest + 2,
        wrapped: vec![2; 60],
    };
    let applied =
        store.rewrap_data_keys(&[moved("dk_v1", latest + 1), moved("dk_v2", latest), moved("dk_v3", latest + 1)]).await;
    assert_eq!(applied.unwrap(), 2, "the key named under a version it is not under stays");
    for (id, version, wrapped) in [("dk_v1", latest + 2, 2), ("dk_v2", latest + 1, 1), ("dk_v3", latest + 2, 2)] {
        let key = store.data_key(id).await.unwrap().unwrap();
        assert_eq!((key.kek_version, key.wrapped), (version, vec![wrapped; 60]), "{id}");
    }
    let left: Vec<String> =
        store.data_keys_older_than(latest + 2, "", 1000).await.unwrap().into_iter().map(|k| k.id).collect();
    assert!(left.contains(&"dk_v2".to_owned()) && !left.iter().any(|id| id == "dk_v1" || id == "dk_v3"), "{left:?}");

    // A new customer's data key goes in with the tokens sealed under it, in one transaction: a
    // token under a new key is stored only if that key is (now, or by an earlier call).
    let active = latest + 2;
    let new_key = |id: &str, customer: &str, kek_version: u32| DataKeyRecord {
        mode: Mode::Live,
        id: id.into(),
        merchant_id: merchant.clone(),
        customer: customer.into(),
        kek_version,
        wrapped: vec![3; 60],
        created_at: now,
    };
    let under = |id: &str, customer: &str, key: &str, value: u8| {
        let mut record = token(id, None, value);
        record.customer = Some(customer.into());
        record.data_key_id = key.into();
        record
    };
    let first = store
        .insert_tokens(
            &[under("tok_n1", "cus_n", "dk_n1", 11), under("tok_n2", "cus_n", "dk_n1", 12), token("tok_n3", None, 13)],
            &[new_key("dk_n1", "cus_n", active)],
            now,
        )
        .await
        .unwrap();
    assert_eq!(first, [created.clone(), created.clone(), created.clone()]);
    assert_eq!(store.data_key_for(merchant, Mode::Live, "cus_n").await.unwrap().map(|k| k.id), Some("dk_n1".into()));
    let second = store
        .insert_tokens(
            &[under("tok_n4", "cus_n", "dk_n2", 14), under("tok_n5", "cus_n", "dk_n1", 15)],
            &[new_key("dk_n2", "cus_n", active), new_key("dk_n1", "cus_n", active)],
            now,
        )
        .await
        .unwrap();
    assert_eq!(
        second,
        [TokenInsert::KeyNotStored, created.clone()],
        "a second key for the customer loses, with its token; the stored one named again still counts"
    );
    assert_eq!(sealed("tok_n4").await, None);
    assert!(store.data_key("dk_n2").await.unwrap().is_none());
    let stale = store
        .insert_tokens(&[under("tok_n6", "cus_m", "dk_n3", 16)], &[new_key("dk_n3", "cus_m", latest + 1)], now)
        .await
        .unwrap();
    assert_eq!(stale, [TokenInsert::KeyNotStored], "a key under a version no longer active is refused");
    assert!(store.data_key_for(merchant, Mode::Live, "cus_m").await.unwrap().is_none());
    assert_eq!(sealed("tok_n6").await, None);
    // The statement-per-row path (dedupe keys) does the same, and two new keys of one customer
    // in one call leave one.
    let mut kept = under("tok_n7", "cus_d", "dk_n4", 17);
    kept.dedupe_key = Some(vec![17; 32]);
    let mut lost = under("tok_n8", "cus_d", "dk_n5", 18);
    lost.dedupe_key = Some(vec![18; 32]);
    let fourth = store
        .insert_tokens(&[kept, lost], &[new_key("dk_n4", "cus_d", active), new_key("dk_n5", "cus_d", active)], now)
        .await
        .unwrap();
    assert_eq!(fourth, [created.clone(), TokenInsert::KeyNotStored]);
    assert_eq!(store.data_key_for(merchant, Mode::Live, "cus_d").await.unwrap().map(|k| k.id), Some("dk_n4".into()));
    assert_eq!(sealed("tok_n8").await, None);
}

/// Identity's single-use rules hold in the database itself, under concurrent requests.
async fn identity_suite(store: &Store, merchant: &MerchantId) {
    use strongroom_domain::ports::{
        AccountStatus, ChallengePurpose, ChallengeRecord, CustomerRecord, IdentityRepository,
    };
    use strongroom_domain::sessions::{SessionOwner, SessionRecord, SessionRepository};
    const C: SessionOwner = SessionOwner::Customer;
    let t = |ms: i64| Timestamp::from_unix_millis(1_800_000_000_000 + ms);
    let customer = |id: &str, lookup: &[u8]| CustomerRecord {
        id: id.to_owned(),
        merchant_id: merchant.clone(),
        mode: Mode::Live,
        email_lookup: lookup.to_vec(),
        email_sealed: vec![1, 2, 3],
        data_key_id: "dk_x".into(),
        email_verified_at: None,
        password_hash: Some("$argon2id$…".into()),
        password_changed_at: Some(t(0)),
        status: AccountStatus::Active,
        totp_sealed: None,
        totp_confirmed_at: None,
        totp_last_step: None,
        phrase_sealed: None,
        pending_email: None,
        created_at: t(0),
    };
    assert!(store.insert_customer(&customer("cus_a", b"lookup-a")).await.unwrap());
    assert!(!store.insert_customer(&customer("cus_b", b"lookup-a")).await.unwrap(), "one account per email");
    let stranger = MerchantId::generate(&OsEntropy);
    assert!(
        store.customer(&stranger, Mode::Live, "cus_a").await.unwrap().is_none(),
        "another merchant's customer is invisible"
    );
    assert!(store.customer(merchant, Mode::Test, "cus_a").await.unwrap().is_none(), "a live customer is not test's");
    assert_eq!(store.customer_by_email(merchant, Mode::Live, b"lookup-a").await.unwrap().unwrap().id, "cus_a");
    assert!(store.customer_by_email(merchant, Mode::Test, b"lookup-a").await.unwrap().is_none());
    let test_customer = CustomerRecord { mode: Mode::Test, ..customer("cus_a_test", b"lookup-a") };
    assert!(store.insert_customer(&test_customer).await.unwrap(), "one account per email in each mode");
    assert_eq!(store.customer_by_email(merchant, Mode::Test, b"lookup-a").await.unwrap().unwrap().id, "cus_a_test");

    // TOTP: enrol, confirm once, then each step is accepted once even by concurrent requests.
    assert!(store.begin_totp(merchant, "cus_a", b"sealed").await.unwrap());
    let codes = vec![vec![1u8; 32], vec![2u8; 32]];
    assert!(store.confirm_totp(merchant, "cus_a", 100, t(1), &codes).await.unwrap());
    assert!(!store.confirm_totp(merchant, "cus_a", 101, t(1), &codes).await.unwrap(), "confirmed once");
    assert!(!store.begin_totp(merchant, "cus_a", b"other").await.unwrap(), "no new seed while enrolled");
    assert!(!store.accept_totp_step("cus_a", 100).await.unwrap(), "the enrolment step is spent");
    let racers: Vec<_> = (0..8)
        .map(|_| {
            let s = store.clone();
            tokio::spawn(async move { s.accept_totp_step("cus_a", 101).await.unwrap() })
        })
        .collect();
    let mut won = 0;
    for racer in racers {
        won += u32::from(racer.await.unwrap());
    }
    assert_eq!(won, 1, "one of eight concurrent uses of a step wins");
    assert!(!store.accept_totp_step("cus_a", 99).await.unwrap(), "earlier steps are refused");

    // Recovery codes: each once.
    assert_eq!(store.recovery_codes_left("cus_a").await.unwrap(), 2);
    assert!(store.use_recovery_code("cus_a", &codes[0], t(2)).await.unwrap());
    assert!(!store.use_recovery_code("cus_a", &codes[0], t(3)).await.unwrap());
    assert_eq!(store.recovery_codes_left("cus_a").await.unwrap(), 1);

    // Failures per subject count up atomically and clear.
    for i in 1..=3 {
        assert_eq!(store.add_login_failure(merchant, b"subject", t(i)).await.unwrap().count, u32::try_from(i).unwrap());
    }
    assert_eq!(store.login_failures(merchant, b"subject").await.unwrap().last_at, Some(t(3)));
    store.clear_login_failures(merchant, b"subject").await.unwrap();
    assert_eq!(store.login_failures(merchant, b"subject").await.unwrap().count, 0);

    // Sessions: found by digest, ended once; disabling ends the rest.
    let session = |id: &str, digest: u8| SessionRecord {
        id: id.to_owned(),
        owner: C,
        merchant_id: merchant.clone(),
        subject_id: "cus_a".into(),
        token_digest: vec![digest; 32],
        factors: "password".into(),
        user_agent: None,
        ip: None,
        created_at: t(0),
        last_seen_at: t(0),
        expires_at: t(1_000_000),
        ended_at: None,
    };
    store.insert_session(&session("ses_1", 1)).await.unwrap();
    store.insert_session(&session("ses_2", 2)).await.unwrap();
    store.insert_session(&session("ses_3", 3)).await.unwrap();
    assert_eq!(store.session_by_digest(C, &[2; 32]).await.unwrap().unwrap().id, "ses_2");
    assert!(store.session_by_digest(SessionOwner::Staff, &[2; 32]).await.unwrap().is_none(), "owners never mix");
    store.touch_session(C, "ses_2", t(4)).await.unwrap();
    store.touch_session(C, "ses_2", t(3)).await.unwrap();
    assert_eq!(store.session_by_digest(C, &[2; 32]).await.unwrap().unwrap().last_seen_at, t(4), "never backwards");
    let racers: Vec<_> = (0..30)
        .map(|_| {
            let (s, m) = (store.clone(), merchant.clone());
            tokio::spawn(async move { s.end_session(C, &m, "cus_a", "ses_1", t(5)).await.unwrap() })
        })
        .collect();
    let mut won = 0;
    for racer in racers {
        won += u32::from(racer.await.unwrap());
    }
    assert_eq!(won, 1, "one of thirty concurrent ends of a session wins");
    assert!(!store.end_session(C, &stranger, "cus_a", "ses_2", t(6)).await.unwrap(), "not across merchants");
    assert_eq!(
        store.end_sessions_except(C, merchant, "cus_a", Some("ses_2"), t(7)).await.unwrap(),
        vec!["ses_3".to_owned()]
    );
    assert!(store.set_status(merchant, "cus_a", AccountStatus::Disabled, t(8)).await.unwrap());
    assert!(store.live_sessions(C, merchant, "cus_a", t(9)).await.unwrap().is_empty(), "disabling ends every session");

    // A step-up proof is redeemed once, and not after it expires.
    let challenge = |id: &str| ChallengeRecord {
        id: id.to_owned(),
        merchant_id: merchant.clone(),
        customer_id: "cus_a".into(),
        purpose: ChallengePurpose::StepUp,
        binding_digest: Some(vec![9; 32]),
        session_id: Some("ses_2".into()),
        client: None,
        created_at: t(0),
        expires_at: t(300_000),
        failures: 0,
        completed_at: None,
        proof_digest: None,
        proof_expires_at: None,
        proof_used_at: None,
        code_digest: None,
        code_expires_at: None,
    };
    store.insert_challenge(&challenge("chl_1")).await.unwrap();
    let racers: Vec<_> = (0..8)
        .map(|_| {
            let s = store.clone();
            tokio::spawn(async move { s.reserve_challenge_try("chl_1", 5, t(1)).await.unwrap() })
        })
        .collect();
    let mut reserved = 0;
    for racer in racers {
        reserved += u32::from(racer.await.unwrap());
    }
    assert_eq!(reserved, 5, "eight parallel answers, five tries");
    assert!(!store.reserve_challenge_try("chl_1", 6, t(400_000)).await.unwrap(), "not after expiry");
    assert!(store.complete_challenge("chl_1", t(10), Some((&[7; 32], t(300_000)))).await.unwrap());
    assert!(!store.complete_challenge("chl_1", t(11), Some((&[8; 32], t(300_000)))).await.unwrap(), "completed once");
    let racers: Vec<_> = (0..8)
        .map(|_| {
            let s = store.clone();
            tokio::spawn(async move { s.redeem_proof(&[7; 32], t(20)).await.unwrap().is_some() })
        })
        .collect();
    let mut won = 0;
    for racer in racers {
        won += u32::from(racer.await.unwrap());
    }
    assert_eq!(won, 1, "one of eight concurrent redemptions wins");
    store.insert_challenge(&challenge("chl_2")).await.unwrap();
    assert!(store.complete_challenge("chl_2", t(10), Some((&[6; 32], t(300_000)))).await.unwrap());
    assert!(store.redeem_proof(&[6; 32], t(300_000)).await.unwrap().is_none(), "expired");

    // Purging removes what ended long ago; the cascade takes a deleted customer's rows with it.
    assert!(store.purge_identity(t(2_000_000), 100).await.unwrap() >= 1);
    assert_eq!(store.purge_sessions(C, t(2_000_000), 100).await.unwrap(), 3);
    assert!(store.session_by_digest(C, &[2; 32]).await.unwrap().is_none());
}

async fn audit_suite(store: &Store) {
    use strongroom_crypto::signing::SigningKey;
    use strongroom_domain::audit::checkpoint::{CheckpointSigner, VerifierKey};
    use strongroom_domain::audit::event::{AuditEvent, Outcome};
    use strongroom_domain::audit::log::AuditLog;
    use strongroom_domain::audit::merkle;

    let repo: Arc<dyn strongroom_domain::ports::AuditRepository> = Arc::new(store.clone());
    let signer = || {
        Arc::new(CheckpointSigner::new("test/log".into(), SigningKey::from_seed(&Secret::new([3; 32])).into()).unwrap())
    };
    let clock = Arc::new(ManualClock::new(Timestamp::from_unix_millis(1_800_000_000_000)));
    let (log, _task) = AuditLog::open(repo.clone(), signer(), clock.clone()).await.unwrap();
    // A second writer on the same database (another node): appends interleave without a gap or a clash.
    let (other, _other_task) = AuditLog::open(repo.clone(), signer(), clock.clone()).await.unwrap();
    let mut handles = Vec::new();
    for i in 0..200u64 {
        let writer = if i % 2 == 0 { log.clone() } else { other.clone() };
        handles.push(tokio::spawn(async move {
            writer.record(AuditEvent::system("test.event", Outcome::Success).on("n", i.to_string())).await.unwrap()
        }));
    }
    let mut seqs = Vec::new();
    for handle in handles {
        seqs.push(handle.await.unwrap());
    }
    seqs.sort_unstable();
    assert_eq!(seqs, (0..200).collect::<Vec<_>>(), "every event got its own leaf index");
    let checkpoint = log.checkpoint().await.unwrap();
    assert_eq!(checkpoint.size, 200);
    let key = VerifierKey::parse(&log.signer().verifier_key()).unwrap();
    let opened = key.open(&checkpoint.note).unwrap();
    assert_eq!((opened.size, opened.root), (200, checkpoint.root));
    assert_eq!(log.size().await.unwrap(), 201, "the checkpoint logged itself");
    // A quiet log makes no new checkpoint.
    assert_eq!(log.checkpoint().await.unwrap().size, 200);

    let entries = log.entries(0, 1000).await.unwrap();
    assert_eq!(entries.len(), 201);
    let leaves: Vec<merkle::Hash> = entries.iter().map(|e| merkle::leaf_hash(&e.leaf)).collect();
    let mut frontier = merkle::Frontier::default();
    for leaf in &leaves[..200] {
        frontier.push(*leaf);
    }
    assert_eq!(frontier.root(), checkpoint.root, "the signed root is the root of the stored leaves");
    for index in [0u64, 1, 99, 199] {
        let (leaf, proof) = log.inclusion_proof(index, 200).await.unwrap();
        assert_eq!(leaf, leaves[index as usize]);
        merkle::verify_inclusion(index, 200, &leaf, &proof, &checkpoint.root).unwrap();
    }
    let root_150 = log.root(150).await.unwrap();
    let proof = log.consistency_proof(150, 200).await.unwrap();
    merkle::verify_consistency(150, 200, &root_150, &checkpoint.root, &proof).unwrap();
    assert!(log.inclusion_proof(5, 500).await.is_err());
    assert!(log.consistency_proof(0, 10).await.is_err());
    log.close().await;
    other.close().await;
}

#[tokio::test]
async fn sqlite_conformance() {
    let (store, _dir) = sqlite_store().await;
    suite(store).await;
}

/// An in-memory SQLite database has no direct connections: the audit append, token inserts and
/// reads and the rewrap take the pool's statements, which must keep the same rules.
#[tokio::test]
async fn sqlite_in_memory_pool_paths() {
    let store = Store::connect("sqlite::memory:", PoolSettings { max_connections: Some(1), ..Default::default() })
        .await
        .unwrap();
    store.migrate().await.unwrap();
    let merchant = MerchantId::generate(&OsEntropy);
    store
        .execute_admin(&format!("INSERT INTO merchants (id, name, created_at) VALUES ('{merchant}', 'Memory', 0)"))
        .await
        .unwrap();
    audit_suite(&store).await;
    vault_suite(&store, &merchant).await;
    store.close().await;
}

#[tokio::test]
async fn postgres_conformance() {
    let Some((store, name)) = postgres_store().await else {
        return;
    };
    suite(store).await;
    drop_postgres(&name).await;
}

/// Staff rules that hold in the database itself: lock-out counting, single-use TOTP steps under
/// concurrency, role changes by compare-and-set, and approvals nobody decides for themselves and
/// that are used once, for exactly their action and target.
async fn staff_suite(store: &Store, merchant: &MerchantId) {
    use strongroom_domain::ports::{ApprovalRecord, StaffGuard, StaffRecord, StaffRepository, StaffStatus};
    let t = |ms: i64| Timestamp::from_unix_millis(1_800_000_000_000 + ms);
    let staff = |id: &str, lookup: &[u8]| StaffRecord {
        id: id.to_owned(),
        merchant_id: merchant.clone(),
        email_lookup: lookup.to_vec(),
        email_sealed: vec![1, 2, 3],
        data_key_id: "dk_x".into(),
        password_hash: None,
        password_history: Vec::new(),
        password_changed_at: None,
        status: StaffStatus::Invited,
        failures: 0,
        locked_until: None,
        totp_sealed: None,
        totp_confirmed_at: None,
        totp_last_step: None,
        roles: vec!["owner".into()],
        invite_digest: Some(lookup.iter().rev().copied().collect()),
        invite_expires_at: Some(t(1_000)),
        created_by: "cli".into(),
        created_at: t(0),
    };
    assert!(store.insert_staff(&staff("stf_a", b"staff-a"), &[]).await.unwrap());
    assert!(!store.insert_staff(&staff("stf_b", b"staff-a"), &[]).await.unwrap(), "one account per email");
    assert!(store.insert_staff(&staff("stf_b", b"staff-b"), &[]).await.unwrap());

    // Staff sessions go through the same statements as customers', into their own table.
    {
        use strongroom_domain::sessions::{SessionOwner, SessionRecord, SessionRepository};
        let at = Timestamp::from_unix_millis(1_800_000_000_000);
        let session = |id: &str, digest: u8| SessionRecord {
            id: id.to_owned(),
            owner: SessionOwner::Staff,
            merchant_id: merchant.clone(),
            subject_id: "stf_a".into(),
            token_digest: vec![digest; 32],
            factors: "password+totp".into(),
            user_agent: None,
            ip: None,
            created_at: at,
            last_seen_at: at,
            expires_at: Timestamp::from_unix_millis(1_800_000_000_000 + 60_000),
            ended_at: None,
        };
        store.insert_session(&session("sss_1", 41)).await.unwrap();
        store.insert_session(&session("sss_2", 42)).await.unwrap();
        assert_eq!(store.session_by_digest(SessionOwner::Staff, &[41; 32]).await.unwrap().unwrap().subject_id, "stf_a");
        assert!(store.session_by_digest(SessionOwner::Customer, &[41; 32]).await.unwrap().is_none());
        assert_eq!(store.live_sessions(SessionOwner::Staff, merchant, "stf_a", at).await.unwrap().len(), 2);
        assert_eq!(
            store.end_sessions_except(SessionOwner::Staff, merchant, "stf_a", Some("sss_2"), at).await.unwrap(),
            vec!["sss_1".to_owned()]
        );
        assert!(store.end_session(SessionOwner::Staff, merchant, "stf_a", "sss_2", at).await.unwrap());
        assert!(store.live_sessions(SessionOwner::Staff, merchant, "stf_a", at).await.unwrap().is_empty());
    }
    let stranger = MerchantId::generate(&OsEntropy);
    assert!(store.staff(Some(&stranger), "stf_a").await.unwrap().is_none());
    assert!(store.staff(None, "stf_a").await.unwrap().is_some());

    // The invitation works until it expires and only while invited; the password closes it.
    let invite: Vec<u8> = b"staff-a".iter().rev().copied().collect();
    assert!(store.staff_by_invite(&invite, t(1_000)).await.unwrap().is_none(), "expired");
    assert_eq!(store.staff_by_invite(&invite, t(999)).await.unwrap().unwrap().id, "stf_a");
    let history = vec!["$argon2id$old1".to_owned(), "$argon2id$old2".to_owned()];
    store.set_staff_password("stf_a", "$argon2id$new", &history, t(5)).await.unwrap();
    let a = store.staff(None, "stf_a").await.unwrap().unwrap();
    assert_eq!((a.status, a.password_history), (StaffStatus::Active, history));
    assert!(store.staff_by_invite(&invite, t(6)).await.unwrap().is_none(), "used");

    // Lock-out: the tenth failure sets the lock; clearing lifts it.
    for expected in 1..=10 {
        assert_eq!(store.staff_login_failed("stf_a", 10, t(60_000)).await.unwrap(), expected);
    }
    assert_eq!(store.staff(None, "stf_a").await.unwrap().unwrap().locked_until, Some(t(60_000)));
    store.clear_staff_failures("stf_a").await.unwrap();
    let a = store.staff(None, "stf_a").await.unwrap().unwrap();
    assert_eq!((a.failures, a.locked_until), (0, None));

    // TOTP: each step once, even under concurrency.
    assert!(store.begin_staff_totp("stf_a", b"seed").await.unwrap());
    assert!(store.confirm_staff_totp("stf_a", 50, t(7)).await.unwrap());
    assert!(!store.begin_staff_totp("stf_a", b"other").await.unwrap());
    let racers: Vec<_> = (0..8)
        .map(|_| {
            let s = store.clone();
            tokio::spawn(async move { s.use_staff_totp_step("stf_a", 51).await.unwrap() })
        })
        .collect();
    let mut won = 0;
    for racer in racers {
        won += u32::from(racer.await.unwrap());
    }
    assert_eq!(won, 1, "one request gets a TOTP step");

    // Roles change by compare-and-set.
    let owner = vec!["owner".to_owned()];
    let both = vec!["owner".to_owned(), "auditor".to_owned()];
    let none = StaffGuard::None;
    assert!(store.set_staff_roles(merchant, "stf_a", &owner, &both, none, &[]).await.unwrap());
    assert!(!store.set_staff_roles(merchant, "stf_a", &owner, &owner, none, &[]).await.unwrap(), "stale expectation");
    assert!(!store.set_staff_roles(&stranger, "stf_a", &both, &owner, none, &[]).await.unwrap());

    // Approvals: never decided by the requester, used once, for exactly their action and target.
    let approval = ApprovalRecord {
        id: "apr_1".into(),
        merchant_id: merchant.clone(),
        action: "staff.grant_role".into(),
        target: "stf_b:auditor".into(),
        reason: "r".into(),
        requested_by: "stf_a".into(),
        requested_at: t(10),
        status: "pending".into(),
        decided_by: None,
        decided_at: None,
        expires_at: t(100_000),
        used_at: None,
    };
    assert!(store.insert_approval(&approval, StaffGuard::None).await.unwrap());
    assert!(!store.decide_approval(merchant, "apr_1", "stf_a", "approved", t(11), t(20_000)).await.unwrap());
    assert!(!store.use_approval(merchant, "apr_1", "stf_a", "staff.grant_role", "stf_b:auditor", t(12)).await.unwrap());
    assert!(store.decide_approval(merchant, "apr_1", "stf_b", "approved", t(13), t(20_000)).await.unwrap());
    assert!(!store.decide_approval(merchant, "apr_1", "stf_c", "denied", t(14), t(20_000)).await.unwrap(), "once");
    assert!(!store.use_approval(merchant, "apr_1", "stf_a", "staff.grant_role", "stf_b:owner", t(15)).await.unwrap());
    assert!(!store.use_approval(merchant, "apr_1", "stf_b", "staff.grant_role", "stf_b:auditor", t(15)).await.unwrap());
    assert!(
        !store.use_approval(merchant, "apr_1", "stf_a", "staff.grant_role", "stf_b:auditor", t(20_000)).await.unwrap(),
        "expired"
    );
    let racers: Vec<_> = (0..8)
        .map(|_| {
            let s = store.clone();
            let m = merchant.clone();
            tokio::spawn(async move {
                s.use_approval(&m, "apr_1", "stf_a", "staff.grant_role", "stf_b:auditor", t(16)).await.unwrap()
            })
        })
        .collect();
    let mut won = 0;
    for racer in racers {
        won += u32::from(racer.await.unwrap());
    }
    assert_eq!(won, 1, "an approval is used once");
    assert_eq!(store.list_approvals(merchant, Some("used"), 10).await.unwrap().len(), 1);
    assert!(store.list_approvals(merchant, Some("pending"), 10).await.unwrap().is_empty());

    // The database itself refuses an approver equal to the requester.
    let mut own = approval.clone();
    own.id = "apr_2".into();
    own.decided_by = Some("stf_a".into());
    assert!(store.insert_approval(&own, StaffGuard::None).await.is_err());
}

/// The token read and the group-commit writers run on connections kept out of sqlx's pool; when
/// the server has closed them (a restart, an administrator), the next read or write opens a fresh
/// one instead of failing, and a write run twice recognises its own earlier effect.
#[tokio::test]
async fn postgres_lanes_survive_closed_connections() {
    use strongroom_domain::ports::{
        AppendError, AuditRecord, AuditRepository, DataKeyRecord, TokenInsert, VaultRepository,
    };
    let Some((store, name)) = postgres_store().await else {
        return;
    };
    store.migrate().await.unwrap();
    let admin_url = std::env::var("STRONGROOM_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    let terminate_backends = || async {
        let admin =
            Store::connect(&admin_url, PoolSettings { max_connections: Some(1), ..Default::default() }).await.unwrap();
        admin
            .execute_admin(&format!(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}' AND pid <> pg_backend_pid()"
            ))
            .await
            .unwrap();
        admin.close().await;
    };
    let merchant = MerchantId::generate(&OsEntropy);
    store
        .execute_admin(&format!("INSERT INTO merchants (id, name, created_at) VALUES ('{merchant}', 'Lanes', 0)"))
        .await
        .unwrap();
    let now = Timestamp::from_unix_millis(1_800_000_000_000);
    let token = |id: &str| token_record(&merchant, id, id.as_bytes().to_vec(), now);
    let kek = strongroom_domain::ports::KekRecord {
        version: 1,
        kms_key_id: "lanes".into(),
        wrapped: Some(vec![1; 48]),
        state: strongroom_domain::ports::KekState::Active,
        created_at: now,
        retired_at: None,
    };
    store.insert_active_kek(&kek, &[]).await.unwrap();
    let version = 1;
    let record = |seq: u64| AuditRecord { seq, merchant: None, time: now, leaf: vec![seq as u8; 40], subject: None };

    // Each lane holds an idle connection, which the server then closes.
    assert!(store.token("tok_missing").await.unwrap().is_none());
    assert_eq!(store.insert_tokens(&[token("tok_l1")], &[], now).await.unwrap(), [TokenInsert::Created]);
    store.append(0, &[record(0)], &[]).await.unwrap();
    terminate_backends().await;

    assert!(store.token("tok_missing").await.unwrap().is_none(), "a read replaces a dead idle connection");
    assert_eq!(
        store.insert_tokens(&[token("tok_l2")], &[], now).await.unwrap(),
        [TokenInsert::Created],
        "so does a token insert"
    );
    terminate_backends().await;
    store.append(1, &[record(1)], &[]).await.expect("so does an audit append");

    // Run again after its commit (as when the answer was lost), each write knows its own effect.
    assert_eq!(store.insert_tokens(&[token("tok_l2")], &[], now).await.unwrap(), [TokenInsert::Created]);
    let new_key = DataKeyRecord {
        mode: Mode::Live,
        id: "dk_l3".into(),
        merchant_id: merchant.clone(),
        customer: "cus_l3".into(),
        kek_version: version,
        wrapped: vec![3; 60],
        created_at: now,
    };
    let mut first = token("tok_l3");
    first.data_key_id = "dk_l3".into();
    first.customer = Some("cus_l3".into());
    for _ in 0..2 {
        let again = store.insert_tokens(std::slice::from_ref(&first), std::slice::from_ref(&new_key), now).await;
        assert_eq!(again.unwrap(), [TokenInsert::Created], "a first token with its new data key, twice");
    }
    let mut other = token("tok_l2");
    other.ciphertext = Some(b"another value".to_vec());
    assert_eq!(store.insert_tokens(&[other], &[], now).await.unwrap(), [TokenInsert::IdTaken], "another row's id");
    store.append(1, &[record(1)], &[]).await.expect("the same entries at the same index");
    let mut forged = record(1);
    forged.leaf = vec![9; 40];
    assert!(
        matches!(store.append(1, &[forged], &[]).await, Err(AppendError::Conflict { actual_size: 2 })),
        "other entries at that index are a conflict"
    );
    store.close().await;
    drop_postgres(&name).await;
}

fn message(id: &str, merchant: &MerchantId, at: i64) -> strongroom_domain::outbox::OutboxMessage {
    strongroom_domain::outbox::OutboxMessage {
        id: id.to_owned(),
        event_id: format!("evt_{id}"),
        merchant: Some(merchant.clone()),
        channel: strongroom_domain::outbox::Channel::Alert,
        destination: None,
        event_type: "security.test".into(),
        payload: b"{}".to_vec(),
        created_at: Timestamp::from_unix_millis(at),
        next_attempt_at: Timestamp::from_unix_millis(at),
        attempts: 0,
    }
}

/// The outbox: messages commit with the change that carries them (and not without it), a
/// claimed message is leased (30 concurrent claimers, one winner), attempts are recorded, and
/// `Idempotency-Key` claims have one winner too.
async fn outbox_suite(store: &Store, merchant: &MerchantId) {
    use strongroom_domain::idempotency::{IdempotencyRecord, IdempotencyRepository};
    use strongroom_domain::outbox::{DeliveryResult, OutboxRepository};
    use strongroom_domain::ports::{StaffGuard, StaffRepository};
    let t = Timestamp::from_unix_millis;
    let base = 1_900_000_000_000;
    // A stale compare-and-set writes neither the change nor its event; a good one writes both.
    let roles = store.staff(None, "stf_a").await.unwrap().unwrap().roles;
    let stale = vec!["nobody".to_owned()];
    assert!(
        !store
            .set_staff_roles(
                merchant,
                "stf_a",
                &stale,
                &roles,
                StaffGuard::None,
                &[message("obx_lost", merchant, base)]
            )
            .await
            .unwrap()
    );
    assert!(
        store
            .set_staff_roles(
                merchant,
                "stf_a",
                &roles,
                &roles,
                StaffGuard::None,
                &[message("obx_kept", merchant, base)]
            )
            .await
            .unwrap()
    );
    let claimed = store.claim_due(t(base), t(base + 60_000), 100).await.unwrap();
    let ids: Vec<&str> = claimed.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(ids, ["obx_kept"], "only the committed change's event is in the outbox");
    assert!(store.claim_due(t(base + 1), t(base + 60_000), 100).await.unwrap().is_empty(), "a leased message waits");

    // A failed attempt with a retry time: pending again, due then.
    let failed = DeliveryResult {
        id: "obx_kept".into(),
        at: t(base + 2),
        status_code: Some(500),
        latency_ms: 3,
        error: Some("answered 500".into()),
        delivered: false,
        retry_at: Some(t(base + 10_000)),
    };
    store.record_attempts(&[failed]).await.unwrap();
    assert!(store.claim_due(t(base + 9_999), t(base + 70_000), 100).await.unwrap().is_empty());
    let retried = store.claim_due(t(base + 10_000), t(base + 70_000), 100).await.unwrap();
    assert_eq!((retried.len(), retried[0].attempts), (1, 1));
    let delivered = DeliveryResult {
        id: "obx_kept".into(),
        at: t(base + 10_001),
        status_code: Some(200),
        latency_ms: 2,
        error: None,
        delivered: true,
        retry_at: None,
    };
    store.record_attempts(&[delivered]).await.unwrap();
    let stats = store.stats().await.unwrap();
    assert_eq!((stats.pending, stats.delivered), (0, 1));

    // 30 claimers race for one due message: one gets it.
    store.enqueue(&[message("obx_race", merchant, base + 20_000)]).await.unwrap();
    let racers: Vec<_> = (0..30)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.claim_due(t(base + 20_000), t(base + 80_000), 10).await.unwrap().len() })
        })
        .collect();
    let mut won = 0;
    for racer in racers {
        won += racer.await.unwrap();
    }
    assert_eq!(won, 1, "one claimer gets the message");

    // At most 5 endpoints: 30 racers, 5 winners.
    use strongroom_domain::webhooks::{EndpointRecord, WebhookRepository};
    let racers: Vec<_> = (0..30)
        .map(|i| {
            let store = store.clone();
            let endpoint = EndpointRecord {
                id: format!("we_race{i}"),
                merchant: merchant.clone(),
                mode: if i % 2 == 0 { Mode::Live } else { Mode::Test },
                url: "https://example.com/hook".into(),
                event_types: vec!["*".into()],
                description: String::new(),
                secret_sealed: vec![1, 2, 3],
                previous_secret: None,
                status: "enabled".into(),
                failing_since: None,
                created_at: t(base),
            };
            tokio::spawn(async move { store.insert_endpoint(&endpoint, 5).await.unwrap() })
        })
        .collect();
    let mut won = 0;
    for racer in racers {
        won += u32::from(racer.await.unwrap());
    }
    assert_eq!(won, 5, "at most 5 endpoints");
    assert_eq!(store.endpoints(merchant).await.unwrap().len(), 5);
    // Events of one mode go to that mode's endpoints only.
    let modes: std::collections::HashMap<String, Mode> =
        store.endpoints(merchant).await.unwrap().into_iter().map(|e| (e.id, e.mode)).collect();
    for mode in [Mode::Live, Mode::Test] {
        let enabled = store.enabled_endpoints(Some(merchant), mode).await.unwrap();
        assert_eq!(enabled.len(), modes.values().filter(|m| **m == mode).count(), "{mode}");
        assert!(enabled.iter().all(|e| modes[&e.id] == mode && &e.merchant == merchant), "{mode}: {enabled:?}");
    }

    // Idempotency keys: 30 racers, one claim; an expired key is taken over.
    let claim = |at: i64| IdempotencyRecord {
        scope: b"scope".to_vec(),
        key: "k1".into(),
        request_hash: b"hash".to_vec(),
        state: "in_progress".into(),
        status: None,
        content_type: None,
        body_sealed: None,
        locked_until: t(at + 60_000),
        expires_at: t(at + 86_400_000),
    };
    let racers: Vec<_> = (0..30)
        .map(|_| {
            let (store, record) = (store.clone(), claim(base));
            tokio::spawn(async move { store.claim_key(&record, t(base)).await.unwrap() })
        })
        .collect();
    let mut won = 0;
    for racer in racers {
        won += u32::from(racer.await.unwrap());
    }
    assert_eq!(won, 1, "one request claims a key");
    store.finish_key(b"scope", "k1", "done", 201, Some("application/json"), Some(b"sealed")).await.unwrap();
    assert!(!store.claim_key(&claim(base + 120_000), t(base + 120_000)).await.unwrap(), "answered, not expired");
    let next_day = base + 86_400_001;
    assert!(store.claim_key(&claim(next_day), t(next_day)).await.unwrap(), "an expired key is free again");
}

/// How many of `racers` parallel calls of `call` answered true.
async fn winners<F, Fut>(racers: usize, call: F) -> usize
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = bool> + Send + 'static,
{
    let handles: Vec<_> = (0..racers).map(|i| tokio::spawn(call(i))).collect();
    let mut won = 0;
    for handle in handles {
        won += usize::from(handle.await.unwrap());
    }
    won
}

/// Check-then-act rules the store decides in one conditional statement (after a row lock where
/// the rule spans rows), each raced by 30 parallel callers: accepting one invitation, removing a
/// staff member's last second factor, storing a passkey's counter, demoting or disabling the last
/// owner, and deleting a role while a grant or a request names it.
async fn races_suite(store: &Store) {
    use strongroom_domain::ports::{
        ApprovalRecord, PasskeyRecord, PasskeyRepository, RoleRecord, StaffGuard, StaffRecord, StaffRepository,
        StaffStatus,
    };
    let t = |ms: i64| Timestamp::from_unix_millis(1_800_000_000_000 + ms);
    // A merchant of its own, so no owner of another suite counts.
    let merchant = MerchantId::generate(&OsEntropy);
    store
        .execute_admin(&format!("INSERT INTO merchants (id, name, created_at) VALUES ('{merchant}', 'Races', 0)"))
        .await
        .unwrap();
    let staff = |id: &str, status: StaffStatus, roles: &[&str]| StaffRecord {
        id: id.to_owned(),
        merchant_id: merchant.clone(),
        email_lookup: format!("lookup-{id}").into_bytes(),
        email_sealed: vec![1],
        data_key_id: "dk_x".into(),
        password_hash: (status != StaffStatus::Invited).then(|| "$argon2id$x".to_owned()),
        password_history: Vec::new(),
        password_changed_at: None,
        status,
        failures: 0,
        locked_until: None,
        totp_sealed: None,
        totp_confirmed_at: None,
        totp_last_step: None,
        roles: roles.iter().map(|r| (*r).to_owned()).collect(),
        invite_digest: (status == StaffStatus::Invited).then(|| format!("invite-{id}").into_bytes()),
        invite_expires_at: Some(t(10_000)),
        created_by: "cli".into(),
        created_at: t(0),
    };
    let passkey = |id: &str, owner: &str, state: &str| PasskeyRecord {
        id: id.to_owned(),
        merchant_id: merchant.clone(),
        owner_kind: "staff".into(),
        owner_id: owner.to_owned(),
        credential_id: format!("credential-{id}").into_bytes(),
        passkey: state.to_owned(),
        label: "key".into(),
        created_at: t(0),
        last_used_at: None,
    };

    // One invitation, 30 acceptances with 30 passwords: one wins, and its password stays.
    assert!(store.insert_staff(&staff("stf_rinv", StaffStatus::Invited, &[]), &[]).await.unwrap());
    assert!(!store.accept_staff_invite("stf_rinv", b"invite-other", "$argon2id$p", t(5)).await.unwrap(), "digest");
    assert!(!store.accept_staff_invite("stf_rinv", b"invite-stf_rinv", "$argon2id$p", t(10_000)).await.unwrap());
    let won = winners(30, |i| {
        let store = store.clone();
        async move {
            store.accept_staff_invite("stf_rinv", b"invite-stf_rinv", &format!("$argon2id$r{i}"), t(5)).await.unwrap()
        }
    })
    .await;
    assert_eq!(won, 1, "one acceptance of an invitation wins");
    let accepted = store.staff(None, "stf_rinv").await.unwrap().unwrap();
    assert_eq!((accepted.status, accepted.invite_digest), (StaffStatus::Active, None));
    assert!(store.staff_by_invite(b"invite-stf_rinv", t(6)).await.unwrap().is_none());

    // Two passkeys and no TOTP: of 30 parallel removals (15 of each) one wins, one passkey stays.
    assert!(store.insert_staff(&staff("stf_rpk", StaffStatus::Active, &[]), &[]).await.unwrap());
    for id in ["pk_r1", "pk_r2"] {
        assert!(store.insert_passkey(&passkey(id, "stf_rpk", "{}"), 20).await.unwrap());
    }
    let won = winners(30, |i| {
        let store = store.clone();
        async move { store.remove_staff_passkey("stf_rpk", if i % 2 == 0 { "pk_r1" } else { "pk_r2" }).await.unwrap() }
    })
    .await;
    assert_eq!(won, 1, "the last second factor stays");
    assert_eq!(store.passkeys_of("staff", "stf_rpk").await.unwrap().len(), 1);
    // With TOTP confirmed, the last passkey may go; another's passkey never.
    assert!(store.begin_staff_totp("stf_rpk", b"seed").await.unwrap());
    assert!(store.confirm_staff_totp("stf_rpk", 1, t(1)).await.unwrap());
    let left = store.passkeys_of("staff", "stf_rpk").await.unwrap().remove(0).id;
    assert!(!store.remove_staff_passkey("stf_rinv", &left).await.unwrap(), "not theirs");
    assert!(store.remove_staff_passkey("stf_rpk", &left).await.unwrap());

    // A passkey's counter by compare-and-set: 30 sign-ins verified against one stored state,
    // one stores its counter; a stale state never replaces a newer one. Without a counter
    // (`expected` none) a use is recorded as before.
    assert!(store.insert_passkey(&passkey("pk_r3", "stf_rpk", "state-0"), 20).await.unwrap());
    let won =
        winners(30, |i| {
            let store = store.clone();
            async move {
                store.passkey_used("pk_r3", Some("state-0"), Some(&format!("state-{}", i + 1)), t(7)).await.unwrap()
            }
        })
        .await;
    assert_eq!(won, 1, "one assertion per counter");
    let stored = store.passkey_by_credential(b"credential-pk_r3").await.unwrap().unwrap();
    assert_ne!(stored.passkey, "state-0");
    assert!(!store.passkey_used("pk_r3", Some("state-0"), Some("older"), t(8)).await.unwrap());
    assert!(store.passkey_used("pk_r3", None, None, t(9)).await.unwrap());
    assert!(store.passkey_used("pk_r3", None, None, t(10)).await.unwrap());
    let stored = store.passkey_by_credential(b"credential-pk_r3").await.unwrap().unwrap();
    assert_eq!(stored.last_used_at, Some(t(10)));
    assert_ne!(stored.passkey, "older");
    assert!(!store.passkey_used("pk_gone", None, None, t(11)).await.unwrap());

    // At most 3 passkeys (the cap is 20 in use): 30 parallel registrations, 3 winners; a
    // credential id registered already is refused.
    assert!(store.insert_staff(&staff("stf_rcap", StaffStatus::Active, &[]), &[]).await.unwrap());
    let won = winners(30, |i| {
        let (store, record) = (store.clone(), passkey(&format!("pk_cap{i}"), "stf_rcap", "{}"));
        async move { store.insert_passkey(&record, 3).await.unwrap() }
    })
    .await;
    assert_eq!(won, 3, "at most 3 passkeys");
    assert_eq!(store.passkeys_of("staff", "stf_rcap").await.unwrap().len(), 3);
    assert!(!store.insert_passkey(&passkey("pk_r3", "stf_rcap", "{}"), 20).await.unwrap(), "registered already");

    // Two owners demote each other, 15 times each in parallel: one demotion wins.
    for id in ["stf_ro1", "stf_ro2"] {
        assert!(store.insert_staff(&staff(id, StaffStatus::Active, &["owner"]), &[]).await.unwrap());
    }
    let owner = vec!["owner".to_owned()];
    let owners = StaffGuard::AnotherHolder("owner");
    let won = winners(30, |i| {
        let (store, merchant, owner) = (store.clone(), merchant.clone(), owner.clone());
        let id = if i % 2 == 0 { "stf_ro1" } else { "stf_ro2" };
        async move { store.set_staff_roles(&merchant, id, &owner, &[], owners, &[]).await.unwrap() }
    })
    .await;
    assert_eq!(won, 1, "the last owner stays");
    let demoted =
        if store.staff(None, "stf_ro1").await.unwrap().unwrap().roles.is_empty() { "stf_ro1" } else { "stf_ro2" };
    assert!(store.set_staff_roles(&merchant, demoted, &[], &owner, StaffGuard::None, &[]).await.unwrap());
    // And disable each other: one disable wins.
    let won = winners(30, |i| {
        let (store, merchant) = (store.clone(), merchant.clone());
        let id = if i % 2 == 0 { "stf_ro1" } else { "stf_ro2" };
        async move { store.set_staff_status(&merchant, id, StaffStatus::Disabled, owners, &[]).await.unwrap() }
    })
    .await;
    assert_eq!(won, 1, "the last active owner stays");
    // A disabled owner is no other owner; an invited one neither.
    let active = if store.staff(None, "stf_ro1").await.unwrap().unwrap().status == StaffStatus::Active {
        "stf_ro1"
    } else {
        "stf_ro2"
    };
    assert!(!store.set_staff_roles(&merchant, active, &owner, &[], owners, &[]).await.unwrap());

    // Deleting a role while grants of it run: of 15 deletes and 15 grants one wins, and nobody
    // holds a deleted role. `night_shift`'s underscore is no wildcard: `night1shift` is another.
    let role = |name: &str| RoleRecord {
        merchant_id: merchant.clone(),
        name: name.to_owned(),
        description: String::new(),
        permissions: vec!["vault:read".into()],
        created_at: t(0),
    };
    assert!(store.insert_staff(&staff("stf_rg", StaffStatus::Active, &[]), &[]).await.unwrap());
    assert!(store.insert_staff(&staff("stf_rh", StaffStatus::Active, &["night1shift"]), &[]).await.unwrap());
    assert!(store.insert_role(&role("night_shift"), &[]).await.unwrap());
    let granted = vec!["night_shift".to_owned()];
    let won = winners(30, |i| {
        let (store, merchant, granted) = (store.clone(), merchant.clone(), granted.clone());
        async move {
            if i % 2 == 0 {
                store.delete_role(&merchant, "night_shift", t(20), &[]).await.unwrap()
            } else {
                let guard = StaffGuard::RoleExists("night_shift");
                store.set_staff_roles(&merchant, "stf_rg", &[], &granted, guard, &[]).await.unwrap()
            }
        }
    })
    .await;
    assert_eq!(won, 1, "a role is deleted or granted, never both");
    let deleted = store.roles(&merchant).await.unwrap().is_empty();
    let held = store.staff(None, "stf_rg").await.unwrap().unwrap().roles == granted;
    assert!(deleted != held, "deleted {deleted}, held {held}");
    if held {
        assert!(store.set_staff_roles(&merchant, "stf_rg", &granted, &[], StaffGuard::None, &[]).await.unwrap());
        assert!(store.delete_role(&merchant, "night_shift", t(20), &[]).await.unwrap(), "night1shift is another role");
    }
    assert!(
        !store
            .set_staff_roles(&merchant, "stf_rg", &[], &granted, StaffGuard::RoleExists("night_shift"), &[])
            .await
            .unwrap()
    );

    // Deleting a role while requests to grant it are opened: deleted, or requested, never both.
    // An expired request no longer holds a role.
    let request = |id: &str, role: &str, expires: i64| ApprovalRecord {
        id: id.to_owned(),
        merchant_id: merchant.clone(),
        action: "staff.grant_role".into(),
        target: format!("stf_rg:{role}"),
        reason: "r".into(),
        requested_by: "stf_rh".into(),
        requested_at: t(0),
        status: "pending".into(),
        decided_by: None,
        decided_at: None,
        expires_at: t(expires),
        used_at: None,
    };
    assert!(store.insert_role(&role("day-shift"), &[]).await.unwrap());
    let won = winners(30, |i| {
        let (store, merchant) = (store.clone(), merchant.clone());
        let record = request(&format!("apr_r{i}"), "day-shift", 100_000);
        async move {
            if i % 2 == 0 {
                store.delete_role(&merchant, "day-shift", t(20), &[]).await.unwrap()
            } else {
                store.insert_approval(&record, StaffGuard::RoleExists("day-shift")).await.unwrap()
            }
        }
    })
    .await;
    let deleted = store.roles(&merchant).await.unwrap().is_empty();
    let requested = store.list_approvals(&merchant, Some("pending"), 100).await.unwrap().len();
    assert!(deleted != (requested > 0), "deleted {deleted}, requested {requested}");
    assert_eq!(won, usize::from(deleted) + requested);
    assert!(store.insert_role(&role("old-shift"), &[]).await.unwrap());
    assert!(
        store.insert_approval(&request("apr_old", "old-shift", 30), StaffGuard::RoleExists("old-shift")).await.unwrap()
    );
    assert!(!store.delete_role(&merchant, "old-shift", t(29), &[]).await.unwrap(), "an open request names it");
    assert!(store.delete_role(&merchant, "old-shift", t(30), &[]).await.unwrap(), "expired");
    assert!(
        !store
            .insert_approval(&request("apr_late", "old-shift", 100), StaffGuard::RoleExists("old-shift"))
            .await
            .unwrap()
    );
}

/// The sandbox's ledger, written by group commit: of 30 concurrent entries under one key one is
/// recorded and every caller reads that one back; 30 concurrent entries under distinct keys are
/// all recorded (however the writer batched them).
async fn ledger_suite(store: &Store) {
    use strongroom_domain::ports::payments::{LedgerEntry, SandboxLedger};
    let entry = |key: String, n: usize| LedgerEntry {
        idempotency_key: key,
        operation: "authorize".to_owned(),
        reference: format!("pi_ledger{n:02}"),
        amount: 100 + i64::try_from(n).unwrap(),
        currency: "eur".to_owned(),
        outcome: "captured".to_owned(),
        decline_code: None,
        challenge: None,
        gateway_reference: format!("sbx_pay_{n:02}"),
        stored_credential: None,
        network_transaction_id: Some(format!("ntid{n:02}")),
        at: Timestamp::from_unix_millis(1_800_000_000_000),
    };
    let stored = Arc::new(std::sync::Mutex::new(Vec::new()));
    let recorded = winners(30, |n| {
        let (store, stored) = (store.clone(), stored.clone());
        let entry = entry("pi_ledger:authorize:1".to_owned(), n);
        async move {
            let (kept, now) = store.record_entry(&entry).await.unwrap();
            stored.lock().unwrap().push((kept, now.then_some(entry)));
            now
        }
    })
    .await;
    assert_eq!(recorded, 1, "one of 30 entries under one key is recorded");
    let stored = std::mem::take(&mut *stored.lock().unwrap());
    let winner = stored.iter().find_map(|(_, won)| won.clone()).unwrap();
    assert!(stored.iter().all(|(kept, _)| *kept == winner), "every caller reads the recorded entry back");
    assert_eq!(store.ledger_entry("pi_ledger:authorize:1").await.unwrap(), Some(winner));
    let distinct = winners(30, |n| {
        let store = store.clone();
        let entry = entry(format!("pi_ledger{n:02}:authorize:1"), n);
        async move { store.record_entry(&entry).await.unwrap().1 }
    })
    .await;
    assert_eq!(distinct, 30, "entries under distinct keys are all recorded");
}

/// Gateway events are claimed once: 30 parallel claims of one event id, one winner; a dead claim
/// (never finished, older than the cut-off) is taken over; a finished one never; a released one
/// is free again.
async fn gateway_events_suite(store: &Store) {
    use strongroom_domain::ports::disputes::{EventClaim, GatewayEventsRepository};
    let t = |ms: i64| Timestamp::from_unix_millis(1_800_000_000_000 + ms);
    let racing = store.clone();
    let won = winners(30, move |_| {
        let store = racing.clone();
        async move {
            store.claim_gateway_event("stripe", "evt_race", "payment_intent", t(0), t(-1)).await.unwrap()
                == EventClaim::Claimed
        }
    })
    .await;
    assert_eq!(won, 1, "one of 30 concurrent deliveries processes the event");
    let claim = |id: &'static str, now: i64, cut: i64| async move {
        store.claim_gateway_event("stripe", id, "dispute.created", t(now), t(cut)).await.unwrap()
    };
    assert_eq!(claim("evt_race", 10, 0).await, EventClaim::Seen, "a claim younger than the cut-off holds");
    assert_eq!(claim("evt_race", 10, 1).await, EventClaim::Claimed, "a dead claim is taken over");
    store.finish_gateway_event("stripe", "evt_race", t(11)).await.unwrap();
    assert_eq!(claim("evt_race", 1_000_000, 999_999).await, EventClaim::Seen, "a processed event never again");
    assert_eq!(claim("evt_other", 0, -1).await, EventClaim::Claimed);
    store.release_gateway_event("stripe", "evt_other").await.unwrap();
    assert_eq!(claim("evt_other", 1, 0).await, EventClaim::Claimed, "a released claim is free again");
    assert_eq!(
        store.claim_gateway_event("other", "evt_race", "x", t(0), t(-1)).await.unwrap(),
        EventClaim::Claimed,
        "ids are per gateway"
    );
}

/// A payment intent created and confirmed in one transaction: claimed with its gateway call and
/// its signals when the plan says so; held with its decision otherwise; nothing at all written
/// when the order changed; and of 30 racers on one key with a limit of 5, exactly 5 are claimed
/// (the counts are made under the key's lock, inside the transaction that inserts the intent).
async fn create_and_confirm_suite(store: &Store) {
    use strongroom_domain::payments::fraud::FraudDecision;
    use strongroom_domain::payments::state::{CaptureMethod, State};
    use strongroom_domain::ports::checkout::{
        AttemptSignals, CheckoutRepository, Claim, ConfirmPlan, CreateAndConfirm, CreateAndConfirmOutcome, SignalKind,
        WindowCounts,
    };
    use strongroom_domain::ports::payments::{GatewayCallRecord, IntentRecord, PaymentsRepository};
    use strongroom_types::{Currency, Money};

    let at = Timestamp::from_unix_millis(1_800_000_000_000);
    let merchant = MerchantId::generate(&OsEntropy);
    store
        .execute_admin(&format!("INSERT INTO merchants (id, name, created_at) VALUES ('{merchant}', 'Pay', 0)"))
        .await
        .unwrap();
    let intent = |id: &str, order: Option<&str>| IntentRecord {
        id: id.to_owned(),
        merchant: merchant.clone(),
        mode: Mode::Test,
        amount: Money::new(1000, Currency::parse("eur").unwrap()).unwrap(),
        order: order.map(str::to_owned),
        customer: None,
        payment_method: Some("tok_x".into()),
        capture_method: CaptureMethod::Automatic,
        state: State::RequiresConfirmation,
        attempt: 0,
        amount_capturable: 0,
        amount_received: 0,
        amount_refunded: 0,
        last_payment_error: None,
        next_action: None,
        fraud: None,
        card: None,
        gateway: "sandbox".into(),
        gateway_reference: None,
        description: String::new(),
        metadata: None,
        cancellation_reason: None,
        canceled_at: None,
        created_at: at,
        updated_at: at,
        card_on_file: None,
    };
    let signals = |id: &str, ip: &str| AttemptSignals {
        merchant: merchant.clone(),
        mode: Mode::Test,
        intent: id.to_owned(),
        attempt: 1,
        keys: vec![(SignalKind::Ip, ip.to_owned()), (SignalKind::Card, "fp_x".to_owned())],
        card: "fp_x".into(),
        amount: 1000,
        currency: "eur".into(),
        small: false,
        at,
    };
    // Claims while the address has at most `limit` attempts (this one included).
    let plan_for = |new: IntentRecord, limit: u32| {
        move |counts: &[(SignalKind, WindowCounts)]| {
            let ip = counts.iter().find(|(kind, _)| *kind == SignalKind::Ip).map(|(_, c)| c.attempts).unwrap_or(0);
            let card = counts.iter().find(|(kind, _)| *kind == SignalKind::Card).map(|(_, c)| c.attempts);
            assert!(card.is_some_and(|n| n >= 1), "every key is counted, this attempt included");
            let allow = ip <= limit;
            let fraud = Some(FraudDecision {
                outcome: if allow { "allow" } else { "block" }.into(),
                reasons: if allow { Vec::new() } else { vec!["ip_velocity".into()] },
            });
            let claim = allow.then(|| {
                let mut claimed = new.clone();
                claimed.state = State::Authorizing;
                claimed.attempt = 1;
                claimed.fraud = fraud.clone();
                let call = GatewayCallRecord {
                    idempotency_key: format!("{}:authorize:1", new.id),
                    intent: new.id.clone(),
                    operation: "authorize",
                    amount: 1000,
                    at,
                };
                Claim { claimed, call, events: Vec::new() }
            });
            Ok(ConfirmPlan { fraud, claim })
        }
    };
    let open_calls = |store: &Store| {
        let store = store.clone();
        async move { store.open_gateway_calls(at, Timestamp::from_unix_millis(at.unix_millis() + 1), 1000).await.unwrap() }
    };

    // Claimed: in processing, with its call and its decision.
    let first = intent("pi_cc1", None);
    let attempt = signals("pi_cc1", "198.51.100.1");
    let write =
        CreateAndConfirm { intent: &first, created_events: &[], signals: Some((&attempt, at)), lock_order: None };
    let outcome = store.create_and_confirm(&write, &plan_for(first.clone(), 5)).await.unwrap();
    assert!(matches!(&outcome, CreateAndConfirmOutcome::Written(plan) if plan.claim.is_some()));
    let stored = store.intent("pi_cc1").await.unwrap().unwrap();
    assert_eq!((stored.state, stored.attempt), (State::Authorizing, 1));
    assert_eq!(stored.fraud.unwrap().outcome, "allow");
    assert!(open_calls(store).await.iter().any(|c| c.idempotency_key == "pi_cc1:authorize:1"), "the call is recorded");

    // Held: created with its decision, no call.
    let held = intent("pi_cc2", None);
    let attempt = signals("pi_cc2", "198.51.100.1");
    let write =
        CreateAndConfirm { intent: &held, created_events: &[], signals: Some((&attempt, at)), lock_order: None };
    store.create_and_confirm(&write, &plan_for(held.clone(), 1)).await.unwrap();
    let stored = store.intent("pi_cc2").await.unwrap().unwrap();
    assert_eq!(stored.state, State::RequiresConfirmation);
    assert_eq!(stored.fraud.unwrap().outcome, "block");
    assert!(!open_calls(store).await.iter().any(|c| c.intent == "pi_cc2"));

    // The order changed (its total is not the intent's any more): nothing is written.
    store
        .execute_admin(&format!(
            "INSERT INTO orders (id, merchant_id, mode, version, currency, amount_total, body, created_at, updated_at) \
             VALUES ('ord_cc', '{merchant}', 'test', 2, 'eur', 2000, '{{}}', 0, 0)"
        ))
        .await
        .unwrap();
    let orphan = intent("pi_cc3", Some("ord_cc"));
    let attempt = signals("pi_cc3", "198.51.100.3");
    let write = CreateAndConfirm {
        intent: &orphan,
        created_events: &[],
        signals: Some((&attempt, at)),
        lock_order: Some(("ord_cc", 1000)),
    };
    let outcome = store.create_and_confirm(&write, &plan_for(orphan.clone(), 5)).await.unwrap();
    assert!(matches!(outcome, CreateAndConfirmOutcome::OrderChanged));
    assert!(store.intent("pi_cc3").await.unwrap().is_none(), "the intent is not written");
    let later = AttemptSignals { attempt: 7, ..signals("pi_cc1", "198.51.100.3") };
    let counted = store.record_and_count(&later, at).await.unwrap();
    assert_eq!(counted.iter().find(|(k, _)| *k == SignalKind::Ip).unwrap().1.attempts, 1, "nor its signals");

    // 30 racers on one address with a limit of 5: exactly 5 claimed.
    let won = winners(30, |i| {
        let store = store.clone();
        let new = intent(&format!("pi_race{i:02}"), None);
        let attempt = signals(&new.id, "198.51.100.30");
        let plan = plan_for(new.clone(), 5);
        async move {
            let write =
                CreateAndConfirm { intent: &new, created_events: &[], signals: Some((&attempt, at)), lock_order: None };
            match store.create_and_confirm(&write, &plan).await.unwrap() {
                CreateAndConfirmOutcome::Written(plan) => plan.claim.is_some(),
                CreateAndConfirmOutcome::OrderChanged => false,
            }
        }
    })
    .await;
    assert_eq!(won, 5, "a limit of 5 lets exactly 5 through");
}

/// Detection's shared counts: 30 parallel observations of one counter each read a different
/// tally (so exactly one sees a threshold's count), distinct items are counted once however
/// often they come, windows are apart, and expired windows are purged.
async fn detection_counts_suite(store: &Store) {
    use strongroom_domain::ports::detection::DetectionCounts;
    let store = Arc::new(store.clone());
    let expires = 2_000_000;
    // 30 parallel observations, 10 distinct items (each three times).
    let handles: Vec<_> = (0..30u8)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move { store.observe("race:c", 1_000, Some(&[i % 10]), expires).await.unwrap() })
        })
        .collect();
    let mut hits = Vec::new();
    let mut new_items = 0;
    let mut saw_ten_new = 0;
    for handle in handles {
        let tally = handle.await.unwrap();
        hits.push(tally.hits);
        new_items += usize::from(tally.new_item);
        saw_ten_new += usize::from(tally.new_item && tally.distinct == 10);
    }
    hits.sort_unstable();
    assert_eq!(hits, (1..=30).collect::<Vec<u64>>(), "every observation read its own count");
    assert_eq!(new_items, 10, "each distinct item was new once");
    assert_eq!(saw_ten_new, 1, "exactly one observation brought the tenth distinct item");
    // Without an item only hits grow; another window starts from nothing.
    let tally = store.observe("race:c", 1_000, None, expires).await.unwrap();
    assert_eq!((tally.hits, tally.distinct, tally.new_item), (31, 10, false));
    let tally = store.observe("race:c", 2_000, Some(&[1]), expires).await.unwrap();
    assert_eq!((tally.hits, tally.distinct, tally.new_item), (1, 1, true));
    assert!(store.purge_counts(expires - 1).await.unwrap() == 0, "nothing expired yet");
    assert!(store.purge_counts(expires).await.unwrap() >= 13, "expired windows and items go");
    let tally = store.observe("race:c", 1_000, Some(&[1]), expires + 10).await.unwrap();
    assert_eq!((tally.hits, tally.distinct), (1, 1), "a purged window starts again");

    // Batches (a payment's counts, its address and device each for several points): 30 batches
    // at once over the same four counters, given in different orders, answer as 30 x 4 single
    // observations would: every tally its own, each distinct item new once, and no deadlock.
    use strongroom_domain::ports::detection::Observation;
    let counters = ["batch:a", "batch:b", "batch:c", "batch:d"];
    let handles: Vec<_> = (0..30u8)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut order: Vec<&str> = counters.to_vec();
                order.rotate_left(usize::from(i % 4));
                let items: Vec<[u8; 1]> = order.iter().map(|_| [i % 5]).collect();
                let batch: Vec<Observation<'_>> = order
                    .iter()
                    .zip(&items)
                    .map(|(counter, item)| Observation {
                        counter: (*counter).to_owned(),
                        window_start: 1_000,
                        item: Some(item.as_slice()),
                        expires_at: expires,
                    })
                    .collect();
                let tallies = store.observe_many(&batch).await.unwrap();
                assert_eq!(tallies.len(), 4);
                order.into_iter().map(str::to_owned).zip(tallies).collect::<Vec<_>>()
            })
        })
        .collect();
    let mut by_counter: std::collections::HashMap<String, Vec<(u64, bool, u64)>> = Default::default();
    for handle in handles {
        for (counter, tally) in handle.await.unwrap() {
            by_counter.entry(counter).or_default().push((tally.hits, tally.new_item, tally.distinct));
        }
    }
    for counter in counters {
        let mut seen = by_counter.remove(counter).unwrap();
        seen.sort_unstable();
        let hits: Vec<u64> = seen.iter().map(|s| s.0).collect();
        assert_eq!(hits, (1..=30).collect::<Vec<u64>>(), "{counter}: every observation read its own count");
        assert_eq!(seen.iter().filter(|s| s.1).count(), 5, "{counter}: each distinct item was new once");
        assert_eq!(seen.iter().filter(|s| s.1 && s.2 == 5).count(), 1, "{counter}: one brought the fifth item");
    }
    // Answered in the order given, also when a batch names one window twice (counted one by one).
    let same = |counter: &str, item: &'static [u8]| Observation {
        counter: counter.to_owned(),
        window_start: 1_000,
        item: Some(item),
        expires_at: expires,
    };
    let tallies =
        store.observe_many(&[same("batch:e", b"x"), same("batch:a", b"new"), same("batch:e", b"x")]).await.unwrap();
    let got: Vec<(u64, u64, bool)> = tallies.iter().map(|t| (t.hits, t.distinct, t.new_item)).collect();
    assert_eq!(got, [(1, 1, true), (31, 6, true), (2, 1, false)]);

    // Ended decisions go after their retention; one in force, or ended later, stays.
    use strongroom_domain::ports::detection::{DecisionRecord, DecisionsRepository};
    let t = Timestamp::from_unix_millis;
    let decision = |id: &str, value: &str, until: i64| DecisionRecord {
        id: id.to_owned(),
        merchant: None,
        scope_kind: "ip".to_owned(),
        scope_value: value.to_owned(),
        action: "block".to_owned(),
        reason: "manual".to_owned(),
        detail: None,
        created_by: "operator".to_owned(),
        created_at: t(1_000),
        until: t(until),
        strikes: 1,
        lifted_at: None,
        lifted_by: None,
        updated_at: t(1_000),
    };
    assert!(store.decide(&decision("dec_old", "192.0.2.1", 5_000), &[]).await.unwrap());
    assert!(store.decide(&decision("dec_new", "192.0.2.2", 50_000), &[]).await.unwrap());
    assert_eq!(store.purge_decisions(t(10_000)).await.unwrap(), 1);
    assert!(store.decision("dec_old").await.unwrap().is_none());
    assert!(store.decision("dec_new").await.unwrap().is_some());

    rate_limits_suite(&store).await;
}

/// Shared rate limits (GCRA): 30 parallel takes of an allowance of 10 per 100 seconds, exactly 10
/// win; the allowance refills one unit per emission interval; purged keys start whole.
async fn rate_limits_suite(store: &Arc<Store>) {
    use strongroom_domain::ports::detection::{Allowance, RateLimits};
    let allowance = Allowance::new(10, std::time::Duration::from_secs(100)).unwrap();
    let now = 1_000_000;
    let won = winners(30, |_| {
        let store = store.clone();
        async move { store.take("race:limit", allowance, now).await.unwrap() == 0 }
    })
    .await;
    assert_eq!(won, 10, "exactly the allowance is taken, whatever the race");
    assert_eq!(store.peek("race:limit", allowance, now).await.unwrap(), 10_000, "one unit is free in 10 s");
    assert_eq!(store.take("race:limit", allowance, now + 9_999).await.unwrap(), 1);
    assert_eq!(store.take("race:limit", allowance, now + 10_000).await.unwrap(), 0, "one refilled unit");
    assert!(store.take("race:limit", allowance, now + 10_000).await.unwrap() > 0);
    assert_eq!(store.peek("race:other", allowance, now).await.unwrap(), 0, "another key is whole");
    assert_eq!(store.purge_limits(now + 99_999).await.unwrap(), 0, "not whole again yet");
    assert_eq!(store.purge_limits(now + 110_000).await.unwrap(), 1);
    assert_eq!(store.peek("race:limit", allowance, now + 110_000).await.unwrap(), 0);
}
