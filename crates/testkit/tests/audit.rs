//! The audit log through the HTTP API, on SQLite and PostgreSQL: which events are recorded, the
//! signed checkpoint, proofs that verify against it, merchant visibility, and range errors.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code fails loudly")]

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use reqwest::Method;
use serde_json::Value;
use strongroom_domain::audit::checkpoint::VerifierKey;
use strongroom_domain::audit::event::{AuditEvent, Outcome};
use strongroom_domain::audit::merkle;
use strongroom_testkit::{Backend, TestServer, on_both_backends};

on_both_backends!(
    events_are_recorded_with_their_source,
    checkpoints_and_proofs_verify,
    other_merchants_see_leaf_hashes_only
);

async fn entries(server: &TestServer) -> Vec<Value> {
    let mut all = Vec::new();
    let mut start = 0;
    loop {
        let page: Value = server.get_json(&format!("/v1/audit/entries?start={start}&limit=1000")).await;
        let data = page["data"].as_array().unwrap().clone();
        if data.is_empty() {
            return all;
        }
        start += data.len();
        all.extend(data);
    }
}

fn actions(entries: &[Value]) -> Vec<String> {
    entries.iter().filter_map(|e| e["entry"]["action"].as_str().map(str::to_owned)).collect()
}

/// Waits for queued (not awaited) events to be committed: a durable event after them is
/// committed after them, since one writer appends in order.
async fn settle(server: &TestServer) {
    server.app().audit.record(AuditEvent::system("test.settle", Outcome::Success)).await.unwrap();
}

async fn events_are_recorded_with_their_source(backend: Backend) {
    let Some(server) = TestServer::spawn(backend).await else { return };
    let start = actions(&entries(&server).await);
    for expected in ["deployment.bootstrapped", "server.started", "config.loaded", "audit.checkpoint.made"] {
        assert!(start.contains(&expected.to_owned()), "{expected} missing from {start:?}");
    }
    let (id, secret) = server.create_key("audited", &["admin:metrics"]).await;
    let revoke = server
        .request(Method::DELETE, &format!("/v1/api-keys/{id}"))
        .header("x-request-id", "revoke-request-1")
        .send()
        .await
        .unwrap();
    assert_eq!(revoke.status(), 200);
    // 401 (no key, unknown key, revoked key) and 403.
    server.client.get(server.url("/v1/merchant")).send().await.unwrap();
    server
        .request_as(&format!("{}aaaa", &secret[..secret.len() - 4]), Method::GET, "/v1/merchant")
        .send()
        .await
        .unwrap();
    server.request_as(&secret, Method::GET, "/v1/merchant").send().await.unwrap();
    let (_, metrics_only) = server.create_key("metrics", &["admin:metrics"]).await;
    server.request_as(&metrics_only, Method::GET, "/v1/audit/entries").send().await.unwrap();
    settle(&server).await;

    let all = entries(&server).await;
    let find = |action: &str| {
        all.iter().find(|e| e["entry"]["action"] == action).unwrap_or_else(|| panic!("{action} missing"))
    };
    let created = find("api_key.created");
    assert_eq!(created["entry"]["object"]["id"], id.as_str());
    assert_eq!(created["entry"]["actor"]["kind"], "api_key");
    assert_eq!(created["entry"]["source"]["ip"], "127.0.0.1");
    assert_eq!(created["entry"]["merchant"], server.merchant_id.as_str());
    let revoked = find("api_key.revoked");
    assert_eq!(revoked["entry"]["source"]["request_id"], "revoke-request-1");
    // Anonymous failures name no merchant: they are in the log (the operator sees them in an
    // export) but a merchant's key sees only their leaf hashes.
    let records = server.app().audit.entries(0, 10_000).await.unwrap();
    let leaves: Vec<Value> = records.iter().map(|r| serde_json::from_slice(&r.leaf).unwrap()).collect();
    let reasons: Vec<&str> = leaves
        .iter()
        .filter(|e| e["action"] == "auth.failed")
        .map(|e| e["outcome"]["reason"].as_str().unwrap())
        .collect();
    assert!(reasons.contains(&"missing_credentials") && reasons.contains(&"unknown_key"), "{reasons:?}");
    assert!(
        all.iter().all(|e| e["entry"]["action"] != "auth.failed"),
        "anonymous failures are not shown to a merchant"
    );
    let after_revocation = find("api_key.used_after_revocation");
    assert_eq!(after_revocation["entry"]["actor"]["id"], id.as_str(), "the key id is named, never the secret");
    let denied = find("authz.denied");
    assert_eq!(denied["entry"]["object"]["id"], "audit:read");
    // No secret in any leaf.
    let text = serde_json::to_string(&all).unwrap();
    for s in [&secret, &metrics_only, &server.bootstrap_key] {
        assert!(!text.contains(&s[s.len() - 30..]), "a key secret reached the audit log");
    }
    server.shutdown().await;
}

async fn checkpoints_and_proofs_verify(backend: Backend) {
    let Some(server) = TestServer::spawn(backend).await else { return };
    let key = VerifierKey::parse(&server.app().audit.signer().verifier_key()).unwrap();
    let first_note = server.request(Method::GET, "/v1/audit/checkpoint").send().await.unwrap().text().await.unwrap();
    let first = key.open(&first_note).unwrap();
    for i in 0..30 {
        server.create_key(&format!("k{i}"), &["admin:metrics"]).await;
    }
    server.app().audit.checkpoint().await.unwrap();
    let response = server.request(Method::GET, "/v1/audit/checkpoint").send().await.unwrap();
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
    let second = key.open(&response.text().await.unwrap()).unwrap();
    assert!(second.size > first.size + 30);

    // Every entry's inclusion proof verifies against the signed root.
    let all = entries(&server).await;
    for entry in all.iter().take(second.size as usize) {
        let index = entry["index"].as_u64().unwrap();
        let proof: Value =
            server.get_json(&format!("/v1/audit/proofs/inclusion?index={index}&tree_size={}", second.size)).await;
        let leaf: merkle::Hash = STANDARD.decode(entry["leaf_hash"].as_str().unwrap()).unwrap().try_into().unwrap();
        let recomputed = merkle::leaf_hash(&STANDARD.decode(entry["leaf"].as_str().unwrap()).unwrap());
        assert_eq!(leaf, recomputed, "leaf_hash is the hash of leaf");
        let path: Vec<merkle::Hash> = hashes(&proof["proof"]);
        merkle::verify_inclusion(index, second.size, &leaf, &path, &second.root).unwrap();
    }
    // The two checkpoints are consistent.
    let proof: Value =
        server.get_json(&format!("/v1/audit/proofs/consistency?first={}&second={}", first.size, second.size)).await;
    let path: Vec<merkle::Hash> = hashes(&proof["proof"]);
    merkle::verify_consistency(first.size, second.size, &first.root, &second.root, &path).unwrap();

    // Out of range → 422 proof_out_of_range naming the parameter.
    let size = all.len();
    for (query, pointer) in [
        (format!("/v1/audit/proofs/inclusion?index={size}&tree_size={size}"), "/index"),
        (format!("/v1/audit/proofs/inclusion?index=0&tree_size={}", size + 100), "/tree_size"),
        ("/v1/audit/proofs/consistency?first=0&second=3".to_owned(), "/first"),
        ("/v1/audit/proofs/consistency?first=5&second=3".to_owned(), "/first"),
        (format!("/v1/audit/proofs/consistency?first=1&second={}", size + 100), "/second"),
    ] {
        let response = server.request(Method::GET, &query).send().await.unwrap();
        assert_eq!(response.status(), 422, "{query}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["code"], "proof_out_of_range", "{query}");
        assert_eq!(body["errors"][0]["pointer"], pointer, "{query}");
    }
    let response = server.request(Method::GET, "/v1/audit/proofs/inclusion?index=-1&tree_size=x").send().await.unwrap();
    assert_eq!(response.status(), 422);
    server.shutdown().await;
}

async fn other_merchants_see_leaf_hashes_only(backend: Backend) {
    let Some(server) = TestServer::spawn(backend).await else { return };
    let stranger = strongroom_domain::merchants::MerchantId::generate(&strongroom_types::OsEntropy);
    let index = server
        .app()
        .audit
        .record(AuditEvent::system("test.other_merchant", Outcome::Success).for_merchant(&stranger))
        .await
        .unwrap();
    let page: Value = server.get_json(&format!("/v1/audit/entries?start={index}&limit=1")).await;
    let entry = &page["data"][0];
    assert_eq!(entry["index"], index);
    assert!(entry["leaf_hash"].is_string());
    assert!(entry["leaf"].is_null() && entry["entry"].is_null(), "{entry}");
    assert!(!page.to_string().contains(stranger.as_str()));
    server.shutdown().await;
}

/// A JSON array of base64 SHA-256 hashes.
fn hashes(value: &Value) -> Vec<merkle::Hash> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|h| STANDARD.decode(h.as_str().unwrap()).unwrap().try_into().unwrap())
        .collect()
}
