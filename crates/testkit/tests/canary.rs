//! Security invariant: secrets and canary values sent through every endpoint never appear in a
//! log line, an error body, or the database file.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code fails loudly")]

use reqwest::Method;
use serde_json::json;
use strongroom_testkit::{Backend, TestServer, captured_logs};

const CANARY: &str = "CANARY7f3a-4111111111111111-hunter2";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canaries_never_reach_logs_bodies_or_the_database() {
    let server = TestServer::spawn(Backend::Sqlite).await.unwrap();
    let (created_id, created_secret) = server.create_key("canary-run", &["admin:metrics", "admin:api_keys"]).await;
    let forged = format!("{}{}", &created_secret[..created_secret.len() - 6], "abcdef");
    let mut bodies = Vec::new();
    let routes = [
        (Method::GET, "/healthz".to_owned()),
        (Method::GET, "/readyz".to_owned()),
        (Method::GET, "/openapi.json".to_owned()),
        (Method::GET, "/metrics".to_owned()),
        (Method::GET, "/v1/merchant".to_owned()),
        (Method::GET, "/v1/api-keys".to_owned()),
        (Method::POST, "/v1/api-keys".to_owned()),
        (Method::GET, format!("/v1/api-keys/{created_id}")),
        (Method::GET, format!("/v1/api-keys/{CANARY}")),
        (Method::DELETE, format!("/v1/api-keys/{CANARY}")),
        (Method::GET, format!("/v1/{CANARY}")),
    ];
    let credentials = [
        Some(server.bootstrap_key.clone()),
        Some(created_secret.clone()),
        Some(forged.clone()),
        Some(CANARY.to_owned()),
        None,
    ];
    for (method, path) in &routes {
        for key in &credentials {
            let query = format!("{path}?limit={CANARY}&token={CANARY}");
            for target in [path.as_str(), query.as_str()] {
                let mut request = server.client.request(method.clone(), server.url(target));
                if let Some(key) = key {
                    request = request.bearer_auth(key);
                }
                let request = request
                    .header("x-request-id", format!("{CANARY} not well formed"))
                    .header("cookie", format!("session={CANARY}"))
                    .header("x-forwarded-for", CANARY);
                let request = if *method == Method::POST {
                    request.json(
                        &json!({"name": "n", "scopes": [CANARY], "mode": CANARY, CANARY: CANARY, "expires_at": CANARY}),
                    )
                } else {
                    request
                };
                let response = request.send().await.unwrap();
                let status = response.status();
                let text = response.text().await.unwrap();
                if status.is_client_error() || status.is_server_error() {
                    bodies.push(text);
                }
            }
        }
    }
    // A malformed body carrying the canary.
    let response = server
        .request(Method::POST, "/v1/api-keys")
        .header("content-type", "application/json")
        .body(format!("{{\"name\": \"{CANARY}"))
        .send()
        .await
        .unwrap();
    bodies.push(response.text().await.unwrap());

    let secrets = [CANARY, server.bootstrap_key.as_str(), created_secret.as_str(), forged.as_str()];
    let secret_parts: Vec<&str> = secrets.iter().map(|s| &s[s.len() - 24..]).collect();
    for body in &bodies {
        for part in &secret_parts {
            assert!(!body.contains(part), "an error body contains a secret: {body}");
        }
        assert!(!body.contains("4111111111111111"), "{body}");
    }
    let logs = captured_logs();
    assert!(logs.contains("api key refused"), "the run was logged at all");
    for part in &secret_parts {
        assert!(!logs.contains(part), "a log line contains a secret ({part})");
    }
    assert!(!logs.contains("4111111111111111") && !logs.contains("hunter2"));

    // The database holds digests, never the keys.
    let mut database = Vec::new();
    for entry in std::fs::read_dir(server.data_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().unwrap().to_string_lossy().starts_with("strongroom.db") {
            database.extend(std::fs::read(&path).unwrap());
        }
    }
    assert!(!database.is_empty());
    let haystack = String::from_utf8_lossy(&database);
    assert!(haystack.contains(&created_id), "the database file was read");
    for part in &secret_parts {
        assert!(!haystack.contains(part), "the database file contains a secret ({part})");
    }
    server.shutdown().await;
}
