//! Black-box tests of `Idempotency-Key` on a real server, on SQLite and PostgreSQL: a retry gets
//! the first answer (and no second effect), the same key with another body is refused, 30
//! concurrent requests with one key have exactly one winner, answers that showed a secret are not
//! kept, keys belong to the caller that sent them, and bad keys are refused.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code fails loudly")]

use std::collections::HashSet;

use serde_json::{Value, json};
use strongroom_testkit::{Backend, TestServer, on_both_backends};

on_both_backends!(
    a_retry_gets_the_first_answer_and_no_second_effect,
    thirty_concurrent_requests_with_one_key_have_one_winner,
    answers_with_secrets_are_not_kept,
);

async fn post(server: &TestServer, bearer: &str, path: &str, key: Option<&str>, body: &Value) -> (u16, Value, bool) {
    let mut request = server.client.post(server.url(path)).bearer_auth(bearer).json(body);
    if let Some(key) = key {
        request = request.header("Idempotency-Key", key);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let replayed = response.headers().get("idempotent-replayed").is_some_and(|v| v == "true");
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)), replayed)
}

async fn a_retry_gets_the_first_answer_and_no_second_effect(backend: Backend) {
    let Some(server) = TestServer::spawn(backend).await else { return };
    let key = &server.bootstrap_key;
    let card = json!({"type": "card", "customer": "cus_idem", "value": {"number": "4242424242424242", "exp_month": 12, "exp_year": 2031}});
    let (status, first, replayed) = post(&server, key, "/v1/tokens", Some("order-1842-card"), &card).await;
    assert_eq!((status, replayed), (201, false), "{first}");
    let (status, again, replayed) = post(&server, key, "/v1/tokens", Some("order-1842-card"), &card).await;
    assert_eq!((status, replayed), (201, true));
    assert_eq!(again, first, "the retry answers the first answer");
    // Without the key the same request makes a second token: the key is what prevented it.
    let (_, other, _) = post(&server, key, "/v1/tokens", None, &card).await;
    assert_ne!(other["id"], first["id"]);

    // The same key with a different body is a mistake.
    let mut changed = card.clone();
    changed["customer"] = json!("cus_other");
    let (status, problem, _) = post(&server, key, "/v1/tokens", Some("order-1842-card"), &changed).await;
    assert_eq!((status, problem["code"].as_str()), (422, Some("idempotency_key_reuse")), "{problem}");

    // A refusal of the request as sent is kept too; an invalid key is refused.
    let bad = json!({"type": "card", "value": {"number": "4242424242424241", "exp_month": 12, "exp_year": 2031}});
    let (status, refused, _) = post(&server, key, "/v1/tokens", Some("bad-card"), &bad).await;
    assert_eq!(status, 422);
    let (status, replay, replayed) = post(&server, key, "/v1/tokens", Some("bad-card"), &bad).await;
    assert_eq!((status, replayed), (422, true));
    assert_eq!(replay["code"], refused["code"]);
    let long = "k".repeat(256);
    let (status, problem, _) = post(&server, key, "/v1/tokens", Some(&long), &card).await;
    assert_eq!((status, problem["code"].as_str()), (422, Some("invalid_idempotency_key")), "{problem}");

    // Keys belong to the credential that sent them: another key's same idempotency key is its own.
    let (_, other_key) = server.create_key("second", &["vault:write"]).await;
    let (status, theirs, replayed) = post(&server, &other_key, "/v1/tokens", Some("order-1842-card"), &card).await;
    assert_eq!((status, replayed), (201, false));
    assert_ne!(theirs["id"], first["id"]);
    server.shutdown().await;
}

async fn thirty_concurrent_requests_with_one_key_have_one_winner(backend: Backend) {
    let Some(server) = TestServer::spawn(backend).await else { return };
    let body = json!({"type": "email", "customer": "cus_race", "value": "race@example.com"});
    let mut tasks = Vec::new();
    for _ in 0..30 {
        let (client, url, key, body) =
            (server.client.clone(), server.url("/v1/tokens"), server.bootstrap_key.clone(), body.clone());
        tasks.push(tokio::spawn(async move {
            let response = client
                .post(url)
                .bearer_auth(key)
                .header("Idempotency-Key", "race-key")
                .json(&body)
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            let replayed = response.headers().get("idempotent-replayed").is_some();
            (status, replayed, response.json::<Value>().await.unwrap())
        }));
    }
    let mut ran = 0;
    let mut ids = HashSet::new();
    for task in tasks {
        let (status, replayed, body) = task.await.unwrap();
        match status {
            201 if !replayed => {
                ran += 1;
                ids.insert(body["id"].as_str().unwrap().to_owned());
            }
            201 => {
                ids.insert(body["id"].as_str().unwrap().to_owned());
            }
            409 => assert_eq!(body["code"], "idempotency_in_progress", "{body}"),
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!(ran, 1, "exactly one request ran");
    assert_eq!(ids.len(), 1, "every answer names the one token made");
    server.shutdown().await;
}

async fn answers_with_secrets_are_not_kept(backend: Backend) {
    let Some(server) = TestServer::spawn(backend).await else { return };
    let body = json!({"name": "storefront", "scopes": ["vault:read"]});
    let (status, created, _) = post(&server, &server.bootstrap_key, "/v1/api-keys", Some("new-key-1"), &body).await;
    assert_eq!(status, 201, "{created}");
    let secret = created["secret"].as_str().unwrap().to_owned();
    let (status, problem, _) = post(&server, &server.bootstrap_key, "/v1/api-keys", Some("new-key-1"), &body).await;
    assert_eq!((status, problem["code"].as_str()), (409, Some("idempotency_replay_unavailable")), "{problem}");
    assert!(!problem.to_string().contains(&secret));
    // No second key was made.
    let listed = server.get_json("/v1/api-keys?limit=100").await;
    let named = listed["data"].as_array().unwrap().iter().filter(|k| k["name"] == "storefront").count();
    assert_eq!(named, 1);
    // The database holds no copy of the secret (SQLite: the file itself).
    if backend == Backend::Sqlite {
        let db = std::fs::read(server.data_dir().join("strongroom.db")).unwrap_or_default();
        let wal = std::fs::read(server.data_dir().join("strongroom.db-wal")).unwrap_or_default();
        let needle = secret.as_bytes();
        for bytes in [db, wal] {
            assert!(!bytes.windows(needle.len()).any(|w| w == needle), "the secret is not stored");
        }
    }
    server.shutdown().await;
}
