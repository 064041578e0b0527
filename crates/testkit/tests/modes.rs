//! Black-box tests of live and test mode on a real server, on SQLite and PostgreSQL: a test key
//! (`sr_test_…`) and a live key each see only their own data space, per endpoint family (tokens,
//! search, reveal, deletion and erasure; customers, sign-in and sessions; webhook endpoints and
//! the events they receive; API keys), test keys cannot hold deployment-wide scopes, and the
//! audit log says which mode acted.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code fails loudly")]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use strongroom_testkit::{Backend, TestServer, on_both_backends};

on_both_backends!(
    tokens_live_in_one_mode,
    customers_and_sessions_live_in_one_mode,
    webhook_endpoints_receive_their_own_mode_only,
    api_keys_and_deployment_wide_scopes,
);

const VISA: &str = "4242424242424242";

/// Every scope a test key may hold.
const TEST_SCOPES: &[&str] = &[
    "admin:api_keys",
    "admin:webhooks",
    "vault:write",
    "vault:read",
    "vault:reveal:masked",
    "vault:reveal:pii",
    "vault:reveal:card",
    "vault:forward",
    "privacy:erase",
    "identity:customers",
];

async fn send(server: &TestServer, key: &str, method: Method, path: &str, body: Option<&Value>) -> (u16, Value) {
    let mut request = server.request_as(key, method, path);
    if let Some(body) = body {
        request = request.json(body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

/// A test key with every scope a test key may hold: `(id, secret)`.
async fn test_key(server: &TestServer) -> (String, String) {
    let body = json!({"name": "ci", "scopes": TEST_SCOPES, "mode": "test"});
    let (status, key) = send(server, &server.bootstrap_key, Method::POST, "/v1/api-keys", Some(&body)).await;
    assert_eq!(status, 201, "{key}");
    assert_eq!(key["mode"], "test");
    let secret = key["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("sr_test_"));
    (key["id"].as_str().unwrap().to_owned(), secret)
}

fn card(customer: &str) -> Value {
    json!({"type": "card", "customer": customer, "dedupe": true,
           "value": {"number": VISA, "exp_month": 12, "exp_year": 2031}})
}

async fn tokens_live_in_one_mode(backend: Backend) {
    let Some(server) = TestServer::spawn(backend).await else { return };
    let live = server.bootstrap_key.clone();
    let (_, test) = test_key(&server).await;

    // The same card for the same customer reference, deduplicated: one token in each mode.
    let (status, live_token) = send(&server, &live, Method::POST, "/v1/tokens", Some(&card("cus_shared"))).await;
    assert_eq!((status, live_token["livemode"].as_bool()), (201, Some(true)), "{live_token}");
    let (status, test_token) = send(&server, &test, Method::POST, "/v1/tokens", Some(&card("cus_shared"))).await;
    assert_eq!((status, test_token["livemode"].as_bool()), (201, Some(false)), "{test_token}");
    let (live_id, test_id) = (live_token["id"].as_str().unwrap(), test_token["id"].as_str().unwrap());
    assert_ne!(live_id, test_id, "dedupe never crosses modes");
    let (status, again) = send(&server, &test, Method::POST, "/v1/tokens", Some(&card("cus_shared"))).await;
    assert_eq!((status, again["id"].as_str()), (200, Some(test_id)), "dedupe holds within a mode");

    // Each key reads, reveals and deletes its own mode's tokens only; the other mode's answer as
    // missing ones, exactly.
    let reveal = json!({"view": "plain", "reason": "mode_check"});
    for (key, own, foreign) in [(&test, test_id, live_id), (&live, live_id, test_id)] {
        let (status, _) = send(&server, key, Method::GET, &format!("/v1/tokens/{own}"), None).await;
        assert_eq!(status, 200);
        let (status, missing) = send(&server, key, Method::GET, &format!("/v1/tokens/{foreign}"), None).await;
        let (_, unknown) = send(&server, key, Method::GET, "/v1/tokens/tok_00000000000000000000000000", None).await;
        assert_eq!((status, &missing["code"]), (404, &unknown["code"]), "{missing}");
        let path = format!("/v1/tokens/{foreign}/reveal");
        let (status, body) = send(&server, key, Method::POST, &path, Some(&reveal)).await;
        assert_eq!(status, 404, "{body}");
        assert!(!body.to_string().contains(VISA));
        let (status, _) = send(&server, key, Method::DELETE, &format!("/v1/tokens/{foreign}"), None).await;
        assert_eq!(status, 404);
        let (status, body) = send(&server, key, Method::POST, &format!("/v1/tokens/{own}/reveal"), Some(&reveal)).await;
        assert_eq!((status, body["value"]["number"].as_str()), (200, Some(VISA)), "{body}");
        // Search finds the caller's mode only.
        let search = json!({"type": "card", "value": {"number": VISA}});
        let (status, found) = send(&server, key, Method::POST, "/v1/tokens/search", Some(&search)).await;
        assert_eq!(status, 200, "{found}");
        let ids: Vec<&str> = found["data"].as_array().unwrap().iter().map(|t| t["id"].as_str().unwrap()).collect();
        assert_eq!(ids, vec![own], "search stays in its mode");
    }

    // A batch from a test key makes test tokens.
    let batch = json!({"items": [{"type": "email", "value": "ci@example.com"}]});
    let (status, made) = send(&server, &test, Method::POST, "/v1/tokens/batch", Some(&batch)).await;
    assert_eq!(status, 200, "{made}");
    assert_eq!(made["data"][0]["token"]["livemode"], false, "{made}");

    // Erasing a customer with a test key erases the test space's customer only.
    let (status, receipt) = send(&server, &test, Method::DELETE, "/v1/customers/cus_shared/data", None).await;
    assert_eq!((status, receipt["tokens_erased"].as_u64()), (200, Some(1)), "{receipt}");
    let (status, _) = send(&server, &test, Method::GET, &format!("/v1/tokens/{test_id}"), None).await;
    assert_eq!(status, 410);
    let (status, body) =
        send(&server, &live, Method::POST, &format!("/v1/tokens/{live_id}/reveal"), Some(&reveal)).await;
    assert_eq!((status, body["value"]["number"].as_str()), (200, Some(VISA)), "the live customer is untouched");

    // The audit log says which mode acted.
    let mut modes = Vec::new();
    let mut start = 0;
    loop {
        let (status, page) =
            send(&server, &live, Method::GET, &format!("/v1/audit/entries?start={start}&limit=100"), None).await;
        assert_eq!(status, 200, "{page}");
        let data = page["data"].as_array().unwrap();
        for entry in data.iter().filter_map(|e| e.get("entry")) {
            if entry["action"] == "vault.token_revealed" {
                modes.push(entry["mode"].as_str().unwrap_or("none").to_owned());
            }
        }
        if data.len() < 100 {
            break;
        }
        start += 100;
    }
    assert!(modes.contains(&"test".to_owned()) && modes.contains(&"live".to_owned()), "{modes:?}");
    server.shutdown().await;
}

async fn customers_and_sessions_live_in_one_mode(backend: Backend) {
    let Some(server) = TestServer::spawn(backend).await else { return };
    let live = server.bootstrap_key.clone();
    let (_, test) = test_key(&server).await;
    let password = "correct horse battery staple 42";
    let register = json!({"email": "jane@example.com", "password": password});

    // One address, an account in each mode: neither registration is "taken".
    let mut ids = Vec::new();
    for (key, livemode) in [(&live, true), (&test, false)] {
        let (status, made) = send(&server, key, Method::POST, "/v1/identity/customers", Some(&register)).await;
        assert_eq!(status, 202, "{made}");
        let id = made["customer"].as_str().unwrap().to_owned();
        let (status, read) = send(&server, key, Method::GET, &format!("/v1/identity/customers/{id}"), None).await;
        assert_eq!((status, read["livemode"].as_bool()), (200, Some(livemode)), "{read}");
        ids.push(id);
    }
    let (live_customer, test_customer) = (&ids[0], &ids[1]);
    for (key, foreign) in [(&test, live_customer), (&live, test_customer)] {
        let (status, _) = send(&server, key, Method::GET, &format!("/v1/identity/customers/{foreign}"), None).await;
        assert_eq!(status, 404);
        let path = format!("/v1/identity/customers/{foreign}/disable");
        let (status, _) = send(&server, key, Method::POST, &path, Some(&json!({}))).await;
        assert_eq!(status, 404, "another mode's customer cannot be disabled");
    }

    // Each key signs in its own mode's customer, and a session is checked only by its own mode.
    let login = json!({"email": "jane@example.com", "password": password});
    let mut tokens = Vec::new();
    for (key, expected) in [(&live, live_customer), (&test, test_customer)] {
        let (status, signed_in) = send(&server, key, Method::POST, "/v1/identity/login", Some(&login)).await;
        assert_eq!((status, signed_in["status"].as_str()), (200, Some("authenticated")), "{signed_in}");
        assert_eq!(signed_in["session"]["customer"].as_str(), Some(expected.as_str()), "{signed_in}");
        tokens.push(signed_in["session"]["token"].as_str().unwrap().to_owned());
    }
    for (key, own, foreign) in [(&live, &tokens[0], &tokens[1]), (&test, &tokens[1], &tokens[0])] {
        let check = |token: &str| json!({"token": token});
        let path = "/v1/identity/sessions/authenticate";
        let (status, _) = send(&server, key, Method::POST, path, Some(&check(own))).await;
        assert_eq!(status, 200);
        let (status, refused) = send(&server, key, Method::POST, path, Some(&check(foreign))).await;
        assert_eq!((status, refused["code"].as_str()), (401, Some("invalid_session")), "{refused}");
    }
    // Wrong passwords against the test account do not throttle the live one.
    let wrong = json!({"email": "jane@example.com", "password": "not the password at all 1"});
    for _ in 0..12 {
        let (status, _) = send(&server, &test, Method::POST, "/v1/identity/login", Some(&wrong)).await;
        assert!(status == 401 || status == 429, "{status}");
    }
    let (status, signed_in) = send(&server, &live, Method::POST, "/v1/identity/login", Some(&login)).await;
    assert_eq!((status, signed_in["status"].as_str()), (200, Some("authenticated")), "{signed_in}");
    server.shutdown().await;
}

type Received = Arc<Mutex<Vec<String>>>;

async fn receiver() -> (String, Received) {
    let received: Received = Arc::default();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post({
            let received = received.clone();
            move |body: String| async move {
                received.lock().unwrap().push(body);
                http::StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, received)
}

async fn webhook_endpoints_receive_their_own_mode_only(backend: Backend) {
    let Some(server) = TestServer::spawn(backend).await else { return };
    let live = server.bootstrap_key.clone();
    let (_, test) = test_key(&server).await;
    let mut endpoints = Vec::new();
    let mut inboxes = Vec::new();
    for (key, livemode) in [(&live, true), (&test, false)] {
        let (url, received) = receiver().await;
        let body = json!({"url": url, "event_types": ["customer.data_erased"]});
        let (status, made) = send(&server, key, Method::POST, "/v1/webhook_endpoints", Some(&body)).await;
        assert_eq!((status, made["livemode"].as_bool()), (201, Some(livemode)), "{made}");
        endpoints.push(made["id"].as_str().unwrap().to_owned());
        inboxes.push(received);
    }
    // Each key lists and reads its own mode's endpoints only.
    for (key, own, foreign) in [(&live, &endpoints[0], &endpoints[1]), (&test, &endpoints[1], &endpoints[0])] {
        let (status, list) = send(&server, key, Method::GET, "/v1/webhook_endpoints", None).await;
        assert_eq!(status, 200);
        let ids: Vec<&str> = list["data"].as_array().unwrap().iter().map(|e| e["id"].as_str().unwrap()).collect();
        assert_eq!(ids, vec![own.as_str()]);
        for (method, path) in [
            (Method::GET, format!("/v1/webhook_endpoints/{foreign}")),
            (Method::POST, format!("/v1/webhook_endpoints/{foreign}/disable")),
            (Method::POST, format!("/v1/webhook_endpoints/{foreign}/rotate_secret")),
            (Method::POST, format!("/v1/webhook_endpoints/{foreign}/test")),
            (Method::GET, format!("/v1/webhook_endpoints/{foreign}/deliveries")),
            (Method::DELETE, format!("/v1/webhook_endpoints/{foreign}")),
        ] {
            let body = (method == Method::POST).then(|| json!({}));
            let (status, _) = send(&server, key, method.clone(), &path, body.as_ref()).await;
            assert_eq!(status, 404, "{method} {path}");
        }
    }
    // An erasure in each mode reaches that mode's endpoint, and says which mode it is.
    for (key, customer) in [(&test, "cus_test_gone"), (&live, "cus_live_gone")] {
        let token = json!({"type": "email", "customer": customer, "value": "gone@example.com"});
        let (status, _) = send(&server, key, Method::POST, "/v1/tokens", Some(&token)).await;
        assert_eq!(status, 201);
        let (status, _) = send(&server, key, Method::DELETE, &format!("/v1/customers/{customer}/data"), None).await;
        assert_eq!(status, 200);
    }
    for _ in 0..200 {
        if inboxes.iter().all(|inbox| !inbox.lock().unwrap().is_empty()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Each endpoint's delivery log (written with the event, so nothing is still on its way)
    // holds exactly the one event of its own mode.
    for (key, endpoint) in [(&live, &endpoints[0]), (&test, &endpoints[1])] {
        let path = format!("/v1/webhook_endpoints/{endpoint}/deliveries");
        let (status, log) = send(&server, key, Method::GET, &path, None).await;
        assert_eq!(status, 200, "{log}");
        let types: Vec<&str> =
            log["data"].as_array().unwrap().iter().map(|d| d["event_type"].as_str().unwrap()).collect();
        assert_eq!(types, vec!["customer.data_erased"], "{log}");
    }
    for (inbox, (livemode, customer)) in inboxes.iter().zip([(true, "cus_live_gone"), (false, "cus_test_gone")]) {
        let got = inbox.lock().unwrap().clone();
        assert_eq!(got.len(), 1, "{got:?}");
        let event: Value = serde_json::from_str(&got[0]).unwrap();
        assert_eq!((event["livemode"].as_bool(), event["data"]["customer"].as_str()), (Some(livemode), Some(customer)));
    }
    server.shutdown().await;
}

async fn api_keys_and_deployment_wide_scopes(backend: Backend) {
    let Some(server) = TestServer::spawn(backend).await else { return };
    let live = server.bootstrap_key.clone();
    let (test_id, test) = test_key(&server).await;

    // Deployment-wide scopes are refused to test keys, naming the element.
    for scope in ["admin:keys", "admin:staff", "admin:metrics", "audit:read"] {
        let body = json!({"name": "too much", "scopes": ["vault:read", scope], "mode": "test"});
        let (status, problem) = send(&server, &live, Method::POST, "/v1/api-keys", Some(&body)).await;
        assert_eq!(status, 422, "{scope}: {problem}");
        assert_eq!(problem["errors"][0]["pointer"], "/scopes/1", "{problem}");
    }
    // A test key creates test keys, and sees only test keys: the live keys answer as missing,
    // so it cannot read or revoke them.
    let body = json!({"name": "ci child", "scopes": ["vault:read"]});
    let (status, child) = send(&server, &test, Method::POST, "/v1/api-keys", Some(&body)).await;
    assert_eq!((status, child["mode"].as_str()), (201, Some("test")), "{child}");
    let (status, list) = send(&server, &test, Method::GET, "/v1/api-keys", None).await;
    assert_eq!(status, 200);
    assert!(list["data"].as_array().unwrap().iter().all(|k| k["mode"] == "test"), "{list}");
    assert_eq!(list["data"].as_array().unwrap().len(), 2, "{list}");
    let (status, me) = send(&server, &live, Method::GET, "/v1/merchant", None).await;
    assert_eq!(status, 200, "{me}");
    let (status, live_keys) = send(&server, &live, Method::GET, "/v1/api-keys", None).await;
    assert_eq!(status, 200);
    let live_id = live_keys["data"].as_array().unwrap().iter().find(|k| k["mode"] == "live").unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(live_keys["data"].as_array().unwrap().iter().any(|k| k["id"] == test_id.as_str()), "live sees all");
    let (status, _) = send(&server, &test, Method::GET, &format!("/v1/api-keys/{live_id}"), None).await;
    assert_eq!(status, 404);
    let (status, _) = send(&server, &test, Method::DELETE, &format!("/v1/api-keys/{live_id}"), None).await;
    assert_eq!(status, 404, "a test key cannot revoke a live key");
    let (status, _) = send(&server, &live, Method::GET, "/v1/merchant", None).await;
    assert_eq!(status, 200, "the live key still works");
    server.shutdown().await;
}
