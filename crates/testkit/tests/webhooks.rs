//! Black-box tests of the outbox's webhooks on a real server, on SQLite and PostgreSQL: endpoint
//! registration (the secret shown once), Standard Webhooks signatures checked by the reference
//! `standardwebhooks` Python package (also across a secret rotation, when both secrets sign),
//! retries with back-off on the injected clock, the delivery log and manual redelivery, the
//! refusal of private and loopback destinations, the disabling of an endpoint that failed for five
//! days (its owners mailed), the job runner's status, and endpoints created, disabled and
//! enabled addressing the very next event (the node's read of them is forgotten).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code fails loudly")]

use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use strongroom_testkit::{Backend, TestServer, captured_logs, on_both_backends, test_python};

on_both_backends!(
    events_reach_the_endpoint_signed_and_retried,
    private_and_loopback_destinations_are_refused,
    an_erasure_and_its_event_commit_together,
    an_endpoint_failing_for_five_days_is_disabled_and_the_owners_mailed,
    endpoint_changes_address_the_next_event
);

type Received = Arc<Mutex<Vec<(http::HeaderMap, String)>>>;

/// A receiver on loopback answering with the status in `answer`.
async fn receiver(answer: Arc<AtomicU16>) -> (String, Received) {
    let received: Received = Arc::default();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post({
            let received = received.clone();
            move |headers: http::HeaderMap, body: String| async move {
                received.lock().unwrap().push((headers, body));
                http::StatusCode::from_u16(answer.load(Ordering::SeqCst)).unwrap()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, received)
}

async fn send(server: &TestServer, method: Method, path: &str, body: Option<&Value>) -> (u16, Value) {
    let mut request = server.request(method, path);
    if let Some(body) = body {
        request = request.json(body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

async fn wait_for(received: &Received, count: usize) -> Vec<(http::HeaderMap, String)> {
    for _ in 0..200 {
        let got = received.lock().unwrap().clone();
        if got.len() >= count {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("expected {count} deliveries, got {}", received.lock().unwrap().len());
}

fn header(headers: &http::HeaderMap, name: &str) -> String {
    headers.get(name).unwrap().to_str().unwrap().to_owned()
}

/// Checks deliveries with the reference implementation; returns its verdict per delivery.
fn verify_with_standardwebhooks(python: &str, secret: &str, deliveries: &[(http::HeaderMap, String)]) -> Vec<String> {
    let input = json!({
        "secret": secret,
        "deliveries": deliveries.iter().map(|(h, body)| json!({
            "headers": {
                "webhook-id": header(h, "webhook-id"),
                "webhook-timestamp": header(h, "webhook-timestamp"),
                "webhook-signature": header(h, "webhook-signature"),
            },
            "body": body,
        })).collect::<Vec<_>>(),
    });
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tools/python/webhook_verify.py");
    let mut child = std::process::Command::new(python)
        .arg(script)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(input.to_string().as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success());
    String::from_utf8(output.stdout).unwrap().lines().map(str::to_owned).collect()
}

async fn events_reach_the_endpoint_signed_and_retried(backend: Backend) {
    let Some(server) = TestServer::spawn(backend).await else { return };
    let answer = Arc::new(AtomicU16::new(200));
    let (url, received) = receiver(answer.clone()).await;

    // Registration: the secret is in the answer, and nowhere else.
    let body =
        json!({"url": url, "event_types": ["security.canary_token_used", "webhook.test"], "description": "shop"});
    let (status, created) = send(&server, Method::POST, "/v1/webhook_endpoints", Some(&body)).await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    let secret = created["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("whsec_"));
    let (_, listed) = send(&server, Method::GET, "/v1/webhook_endpoints", None).await;
    assert_eq!(listed["data"][0]["id"], id.as_str());
    assert!(!listed.to_string().contains(&secret[6..]), "a list never shows the secret");
    let (status, _) =
        send(&server, Method::POST, "/v1/webhook_endpoints", Some(&json!({"url": url, "event_types": ["no.such"]})))
            .await;
    assert_eq!(status, 422);

    // A canary token used: the event reaches the endpoint, with ids and codes only.
    let (status, honey) = send(
        &server,
        Method::POST,
        "/v1/tokens",
        Some(&json!({"type": "email", "value": "honey-hook@example.com", "canary": true})),
    )
    .await;
    assert_eq!(status, 201, "{honey}");
    let token = honey["id"].as_str().unwrap();
    // Read by a key of its own: intrusion detection suspends the key that reads a canary.
    let (_, reader) = server.create_key("canary-reader", &["vault:read"]).await;
    let (status, _) = server.call(&reader, Method::GET, &format!("/v1/tokens/{token}"), None).await;
    assert_eq!(status, 200);
    let first = wait_for(&received, 1).await;
    let (headers, body) = &first[0];
    let event: Value = serde_json::from_str(body).unwrap();
    assert_eq!(event["type"], "security.canary_token_used");
    assert_eq!(event["data"]["object"], token);
    assert_eq!(event["id"].as_str().unwrap(), header(headers, "webhook-id"));
    assert!(header(headers, "webhook-id").starts_with("evt_"));
    assert!(!body.contains("honey-hook@example.com"));

    // The test event, then a rotation: both secrets sign during the overlap.
    let (status, queued) = send(&server, Method::POST, &format!("/v1/webhook_endpoints/{id}/test"), None).await;
    assert_eq!(status, 202, "{queued}");
    wait_for(&received, 2).await;
    let (status, rotated) =
        send(&server, Method::POST, &format!("/v1/webhook_endpoints/{id}/rotate_secret"), None).await;
    assert_eq!(status, 200, "{rotated}");
    let new_secret = rotated["secret"].as_str().unwrap().to_owned();
    assert_ne!(new_secret, secret);
    assert!(rotated["previous_secret_expires_at"].is_string());
    send(&server, Method::POST, &format!("/v1/webhook_endpoints/{id}/test"), None).await;
    let all = wait_for(&received, 3).await;
    assert_eq!(header(&all[2].0, "webhook-signature").split(' ').count(), 2, "both secrets sign after a rotation");
    if let Some(python) = test_python() {
        let verdicts = verify_with_standardwebhooks(&python, &secret, &all);
        assert_eq!(verdicts, ["ok", "ok", "ok"], "the old secret verifies every delivery");
        let verdicts = verify_with_standardwebhooks(&python, &new_secret, &all[2..]);
        assert_eq!(verdicts, ["ok"], "the new secret verifies the delivery after the rotation");
        let mut tampered = all[0].clone();
        tampered.1 = tampered.1.replace("canary", "cAnary");
        assert!(verify_with_standardwebhooks(&python, &secret, &[tampered])[0].starts_with("bad"));
    }

    // A failing receiver: the delivery stays pending with its error, and is retried (same
    // event id) once the back-off has passed on the server's clock.
    answer.store(500, Ordering::SeqCst);
    let (_, queued) = send(&server, Method::POST, &format!("/v1/webhook_endpoints/{id}/test"), None).await;
    let event_id = queued["event_id"].as_str().unwrap().to_owned();
    wait_for(&received, 4).await;
    let mut pending = Value::Null;
    for _ in 0..100 {
        let (_, log) =
            send(&server, Method::GET, &format!("/v1/webhook_endpoints/{id}/deliveries?limit=10"), None).await;
        let entry = log["data"].as_array().unwrap().iter().find(|d| d["event_id"] == event_id.as_str()).cloned();
        if let Some(entry) = entry.filter(|e| e["attempts"] == 1) {
            pending = entry;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(pending["status"], "pending", "{pending}");
    assert_eq!(pending["last_response_code"], 500);
    assert!(pending["next_attempt_at"].is_string());
    answer.store(200, Ordering::SeqCst);
    server.clock.advance(Duration::from_secs(10));
    let retried = wait_for(&received, 5).await;
    assert_eq!(header(&retried[4].0, "webhook-id"), event_id, "a retry keeps the event id");
    let mut delivered = Value::Null;
    for _ in 0..100 {
        let (_, log) = send(&server, Method::GET, &format!("/v1/webhook_endpoints/{id}/deliveries"), None).await;
        let entry = log["data"].as_array().unwrap().iter().find(|d| d["event_id"] == event_id.as_str()).cloned();
        if let Some(entry) = entry.filter(|e| e["status"] == "delivered") {
            delivered = entry;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!((delivered["attempts"].as_u64(), delivered["last_response_code"].as_u64()), (Some(2), Some(200)));

    // Manual redelivery of a delivered message: sent again with the same id.
    let delivery = delivered["id"].as_str().unwrap();
    let (status, _) =
        send(&server, Method::POST, &format!("/v1/webhook_endpoints/{id}/deliveries/{delivery}/redeliver"), None).await;
    assert_eq!(status, 202);
    let again = wait_for(&received, 6).await;
    assert_eq!(header(&again[5].0, "webhook-id"), event_id);

    // The job runner: this process leads and the delivery job has run.
    let (status, jobs) = send(&server, Method::GET, "/v1/admin/jobs", None).await;
    assert_eq!(status, 200, "{jobs}");
    assert!(jobs["leader"]["node"].is_string(), "{jobs}");
    let names: Vec<&str> = jobs["jobs"].as_array().unwrap().iter().filter_map(|j| j["name"].as_str()).collect();
    assert!(names.contains(&"outbox.deliver"), "{jobs}");
    assert!(jobs["outbox"]["pending"].is_u64());

    // Another merchant's key (none here) aside, a delete gives the endpoint up.
    let (status, _) = send(&server, Method::DELETE, &format!("/v1/webhook_endpoints/{id}"), None).await;
    assert_eq!(status, 200);
    let (status, _) = send(&server, Method::GET, &format!("/v1/webhook_endpoints/{id}"), None).await;
    assert_eq!(status, 404);
    let logs = captured_logs();
    assert!(!logs.contains(&secret[6..]) && !logs.contains(&new_secret[6..]), "no signing secret in the logs");
    server.shutdown().await;
}

async fn private_and_loopback_destinations_are_refused(backend: Backend) {
    let Some(server) = TestServer::spawn_with(backend, |c| c.outbound.allow_loopback = false).await else { return };
    let (url, _) = receiver(Arc::new(AtomicU16::new(200))).await;
    for (target, why) in [
        ("http://example.com/hook", "plain http to a public host"),
        ("https://10.0.0.7/hook", "a private address"),
        ("https://169.254.169.254/latest/meta-data", "the link-local metadata address"),
        ("https://[::1]/hook", "IPv6 loopback"),
        ("https://user:pw@example.com/hook", "credentials in the URL"),
        (url.as_str(), "loopback while not allowed"),
    ] {
        let body = json!({"url": target, "event_types": ["*"]});
        let (status, problem) = send(&server, Method::POST, "/v1/webhook_endpoints", Some(&body)).await;
        assert_eq!(status, 422, "{why}: {problem}");
        assert_eq!(problem["errors"][0]["pointer"], "/url", "{why}: {problem}");
        assert!(!problem.to_string().contains("pw@"), "no URL echoed: {problem}");
    }
    let (status, created) = send(
        &server,
        Method::POST,
        "/v1/webhook_endpoints",
        Some(&json!({"url": "https://example.com/hook", "event_types": ["*"]})),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    server.shutdown().await;
}

async fn an_erasure_and_its_event_commit_together(backend: Backend) {
    let Some(server) = TestServer::spawn(backend).await else { return };
    let (url, received) = receiver(Arc::new(AtomicU16::new(200))).await;
    let (status, _) = send(
        &server,
        Method::POST,
        "/v1/webhook_endpoints",
        Some(&json!({"url": url, "event_types": ["customer.data_erased"]})),
    )
    .await;
    assert_eq!(status, 201);
    let (status, _) = send(
        &server,
        Method::POST,
        "/v1/tokens",
        Some(&json!({"type": "email", "customer": "cus_gone", "value": "gone@example.com"})),
    )
    .await;
    assert_eq!(status, 201);
    let (status, receipt) = send(&server, Method::DELETE, "/v1/customers/cus_gone/data", None).await;
    assert_eq!(status, 200, "{receipt}");
    let got = wait_for(&received, 1).await;
    let event: Value = serde_json::from_str(&got[0].1).unwrap();
    assert_eq!(
        (event["type"].as_str(), event["data"]["customer"].as_str()),
        (Some("customer.data_erased"), Some("cus_gone"))
    );
    assert!(!got[0].1.contains("gone@example.com"));
    server.shutdown().await;
}

/// An endpoint that has failed every delivery for five days is disabled, audited, and the shop's
/// active owners are mailed (and nobody else).
async fn an_endpoint_failing_for_five_days_is_disabled_and_the_owners_mailed(backend: Backend) {
    use strongroom_domain::identity::Client;
    use strongroom_domain::merchants::MerchantId;
    let Some(server) = TestServer::spawn(backend).await else { return };
    let merchant = MerchantId::parse(&server.merchant_id).unwrap();
    for (email, roles) in [
        ("owner.hooks@example.com", vec!["owner".to_owned()]),
        ("support.hooks@example.com", vec!["support".to_owned()]),
    ] {
        let invitation =
            server.app().state.staff.invite(&merchant, email, &roles, None, &Client::default()).await.unwrap();
        let accepted = server
            .request(Method::POST, "/v1/staff/invitation/accept")
            .json(&json!({"token": invitation.token.expose(), "password": "a long staff passphrase 4 hooks"}))
            .send()
            .await
            .unwrap();
        assert_eq!(accepted.status(), 200, "{email}");
    }
    let answer = Arc::new(AtomicU16::new(500));
    let (url, received) = receiver(answer).await;
    let (status, created) = send(
        &server,
        Method::POST,
        "/v1/webhook_endpoints",
        Some(&json!({"url": url, "event_types": ["webhook.test"]})),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    let (status, _) = send(&server, Method::POST, &format!("/v1/webhook_endpoints/{id}/test"), None).await;
    assert_eq!(status, 202);
    wait_for(&received, 1).await;
    // The failure is recorded with the attempt; wait until the delivery log shows it.
    for _ in 0..200 {
        let (_, log) = send(&server, Method::GET, &format!("/v1/webhook_endpoints/{id}/deliveries"), None).await;
        if log["data"].as_array().unwrap().iter().any(|d| d["attempts"].as_u64() >= Some(1)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let webhooks = server.app().state.webhooks.clone();
    assert_eq!(webhooks.disable_failing().await.unwrap(), 0, "not after minutes");
    server.clock.advance(Duration::from_secs(5 * 86_400 + 60));
    assert_eq!(webhooks.disable_failing().await.unwrap(), 1, "failing for five days disables the endpoint");
    assert_eq!(webhooks.disable_failing().await.unwrap(), 0, "once");
    let (_, endpoint) = send(&server, Method::GET, &format!("/v1/webhook_endpoints/{id}"), None).await;
    assert_eq!(endpoint["status"], "disabled", "{endpoint}");
    let mut mailed = Vec::new();
    for _ in 0..200 {
        mailed = std::fs::read_dir(server.data_dir().join("mail"))
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with("-webhook_endpoint_disabled.eml"))
            .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
            .collect::<Vec<_>>();
        if !mailed.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(mailed.len(), 1, "one mail, to the one owner");
    assert!(mailed[0].contains("To: owner.hooks@example.com"), "{}", mailed[0]);
    assert!(mailed[0].replace("=\r\n", "").contains(&id), "the mail names the endpoint");
}

/// How many deliveries the endpoint `id` has (pending ones included).
async fn deliveries(server: &TestServer, id: &str) -> usize {
    let (status, page) = send(server, Method::GET, &format!("/v1/webhook_endpoints/{id}/deliveries"), None).await;
    assert_eq!(status, 200, "{page}");
    page["data"].as_array().unwrap().len()
}

async fn endpoint_changes_address_the_next_event(backend: Backend) {
    // The test server's clock stands still: a read of the endpoints would stay fresh for ever,
    // so only forgetting it on a change lets these changes take effect.
    let Some(server) = TestServer::spawn(backend).await else { return };
    let (url, _received) = receiver(Arc::new(AtomicU16::new(200))).await;
    let subscribe = json!({"url": url, "event_types": ["payment_intent.created"]});
    let intent = || async {
        let body = json!({"amount": 1000, "currency": "EUR"});
        let (status, created) = send(&server, Method::POST, "/v1/payment_intents", Some(&body)).await;
        assert_eq!(status, 201, "{created}");
    };
    let (status, first) = send(&server, Method::POST, "/v1/webhook_endpoints", Some(&subscribe)).await;
    assert_eq!(status, 201, "{first}");
    let first = first["id"].as_str().unwrap().to_owned();
    intent().await;
    assert_eq!(deliveries(&server, &first).await, 1);
    // Disabled: the next event is not addressed to it.
    let (status, _) = send(&server, Method::POST, &format!("/v1/webhook_endpoints/{first}/disable"), None).await;
    assert_eq!(status, 200);
    intent().await;
    assert_eq!(deliveries(&server, &first).await, 1, "a disabled endpoint gets no new event");
    // A new endpoint gets the next event at once.
    let (status, second) = send(&server, Method::POST, "/v1/webhook_endpoints", Some(&subscribe)).await;
    assert_eq!(status, 201, "{second}");
    let second = second["id"].as_str().unwrap().to_owned();
    intent().await;
    assert_eq!(deliveries(&server, &second).await, 1, "a new endpoint gets the next event");
    // Enabled again: it gets the next one too.
    let (status, _) = send(&server, Method::POST, &format!("/v1/webhook_endpoints/{first}/enable"), None).await;
    assert_eq!(status, 200);
    intent().await;
    assert_eq!((deliveries(&server, &first).await, deliveries(&server, &second).await), (2, 2));
    // Deleted: the other one alone gets the next event.
    let (status, _) = send(&server, Method::DELETE, &format!("/v1/webhook_endpoints/{second}"), None).await;
    assert!(status == 200 || status == 204, "{status}");
    intent().await;
    assert_eq!(deliveries(&server, &first).await, 3);
    server.shutdown().await;
}
