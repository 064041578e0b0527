//! Black-box tests of payments on a real server, on SQLite and PostgreSQL: orders priced,
//! versioned and locked; payment intents through every legal transition and refused on illegal
//! ones (409 with the current state); each sandbox test card; 3-D Secure passed and failed; the
//! CVC used once; `Idempotency-Key` replays; 30 concurrent confirms charging once and 30
//! concurrent refunds never over the captured amount (both counted in the sandbox's ledger
//! table); bad input with stable codes; live and test apart; lists paged with `starting_after`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code fails loudly")]

use reqwest::Method;
use serde_json::{Value, json};
use strongroom_testkit::{Backend, TestServer, on_both_backends};

on_both_backends!(
    automatic_capture_succeeds_with_its_events,
    manual_capture_full_partial_and_void,
    every_sandbox_test_card,
    three_d_secure_passes_and_fails,
    illegal_transitions_answer_409_with_the_state,
    thirty_concurrent_confirms_charge_once,
    thirty_concurrent_refunds_never_exceed_the_captured_amount,
    idempotency_keys_replay_and_refuse_a_changed_body,
    bad_input_has_stable_codes_naming_the_field,
    live_and_test_are_apart,
    orders_are_priced_versioned_and_locked,
    lists_page_with_starting_after,
    the_cvc_is_used_by_the_first_authorisation_only,
    a_deleted_card_token_is_a_declined_payment_method,
    create_with_confirm_pays_in_one_request
);

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

async fn post(server: &TestServer, key: &str, path: &str, body: &Value) -> (u16, Value) {
    send(server, key, Method::POST, path, Some(body)).await
}

/// A test-mode key with the payment and vault scopes.
async fn test_key(server: &TestServer) -> String {
    let scopes = ["payments:write", "payments:read", "payments:refund", "vault:write", "vault:read", "admin:webhooks"];
    let body = json!({"name": "ci", "scopes": scopes, "mode": "test"});
    let (status, key) = post(server, &server.bootstrap_key, "/v1/api-keys", &body).await;
    assert_eq!(status, 201, "{key}");
    key["secret"].as_str().unwrap().to_owned()
}

async fn card(server: &TestServer, key: &str, number: &str, customer: Option<&str>) -> String {
    let mut body =
        json!({"type": "card", "value": {"number": number, "exp_month": 12, "exp_year": 2040, "cvc": "123"}});
    if let Some(customer) = customer {
        body["customer"] = json!(customer);
    }
    let (status, token) = post(server, key, "/v1/tokens", &body).await;
    assert_eq!(status, 201, "{token}");
    token["id"].as_str().unwrap().to_owned()
}

async fn intent(server: &TestServer, key: &str, body: Value) -> Value {
    let (status, intent) = post(server, key, "/v1/payment_intents", &body).await;
    assert_eq!(status, 201, "{intent}");
    intent
}

/// An intent of `amount` EUR on `number`, created with the card attached.
async fn intent_on(server: &TestServer, key: &str, number: &str, amount: i64, capture: &str) -> Value {
    let token = card(server, key, number, None).await;
    let body = json!({"amount": amount, "currency": "EUR", "payment_method": token, "capture_method": capture});
    let created = intent(server, key, body).await;
    assert_eq!(created["status"], "requires_confirmation");
    assert_eq!(created["currency"], "eur", "lower case out");
    created
}

async fn confirm(server: &TestServer, key: &str, id: &str) -> (u16, Value) {
    post(server, key, &format!("/v1/payment_intents/{id}/confirm"), &json!({})).await
}

/// Rows of the sandbox gateway's ledger for an intent: `(operation, outcome, amount)`.
async fn ledger(server: &TestServer, reference: &str) -> Vec<(String, String, i64)> {
    // The test clock stands still: within a millisecond, by operation (authorize < cancel < capture < refund).
    let sql =
        "SELECT operation, outcome, amount FROM sandbox_ledger WHERE reference = $1 ORDER BY created_at, operation";
    match server.backend {
        Backend::Sqlite => {
            let path = server.data_dir().join("strongroom.db");
            let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}?mode=ro", path.display())).await.unwrap();
            let rows = sqlx::query_as(sql).bind(reference).fetch_all(&pool).await.unwrap();
            pool.close().await;
            rows
        }
        Backend::Postgres => {
            let url = server.config.database_url.as_ref().unwrap().expose().clone();
            let pool = sqlx::PgPool::connect(&url).await.unwrap();
            let rows = sqlx::query_as(sql).bind(reference).fetch_all(&pool).await.unwrap();
            pool.close().await;
            rows
        }
    }
}

/// Event types written to the outbox for an object, sorted (the test clock stands still, so their
/// order within a millisecond is not kept).
async fn events_of(server: &TestServer, id: &str) -> Vec<String> {
    let pattern = format!("%\"id\":\"{id}\"%");
    match server.backend {
        Backend::Sqlite => {
            let path = server.data_dir().join("strongroom.db");
            let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}?mode=ro", path.display())).await.unwrap();
            let sql = "SELECT event_type FROM outbox WHERE CAST(payload AS TEXT) LIKE $1 ORDER BY created_at, event_id";
            let rows: Vec<(String,)> = sqlx::query_as(sql).bind(&pattern).fetch_all(&pool).await.unwrap();
            pool.close().await;
            sorted(rows.into_iter().map(|r| r.0).collect())
        }
        Backend::Postgres => {
            let url = server.config.database_url.as_ref().unwrap().expose().clone();
            let pool = sqlx::PgPool::connect(&url).await.unwrap();
            let sql = "SELECT event_type FROM outbox WHERE convert_from(payload, 'UTF8') LIKE $1 \
                       ORDER BY created_at, event_id";
            let rows: Vec<(String,)> = sqlx::query_as(sql).bind(&pattern).fetch_all(&pool).await.unwrap();
            pool.close().await;
            sorted(rows.into_iter().map(|r| r.0).collect())
        }
    }
}

fn sorted(mut names: Vec<String>) -> Vec<String> {
    names.sort();
    names
}

fn sorted_of(names: &[&str]) -> Vec<String> {
    sorted(names.iter().map(|n| (*n).to_owned()).collect())
}

/// The actions of the audit entries about object `id`, in log order, as `key` reads them.
async fn audit_actions(server: &TestServer, key: &str, id: &str) -> Vec<String> {
    let path = "/v1/audit/entries?start=0&limit=1000";
    let (_, entries) = send(server, key, Method::GET, path, None).await;
    entries["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["entry"]["object"]["id"] == id)
        .map(|e| e["entry"]["action"].as_str().unwrap().to_owned())
        .collect()
}

/// Subscribes a loopback endpoint to every event, so the outbox holds them.
async fn subscribe(server: &TestServer, key: &str) {
    let body = json!({"url": "http://127.0.0.1:9/hook", "event_types": ["*"]});
    let (status, endpoint) = post(server, key, "/v1/webhook_endpoints", &body).await;
    assert_eq!(status, 201, "{endpoint}");
}

async fn automatic_capture_succeeds_with_its_events(backend: Backend) {
    let Some(server) = TestServer::spawn(backend).await else { return };
    let key = server.bootstrap_key.clone();
    subscribe(&server, &key).await;
    let created = intent_on(&server, &key, "4242424242424242", 1999, "automatic").await;
    let id = created["id"].as_str().unwrap();
    assert!(id.starts_with("pi_"));
    assert_eq!(created["livemode"], true);
    assert_eq!(created["card"], json!({"brand": "visa", "last4": "4242"}));
    let (status, paid) = confirm(&server, &key, id).await;
    assert_eq!(status, 200, "{paid}");
    assert_eq!(paid["status"], "succeeded");
    assert_eq!(paid["amount_received"], 1999);
    assert_eq!(paid["amount_capturable"], 0);
    assert_eq!(ledger(&server, id).await, [("authorize".into(), "captured".into(), 1999)]);
    let events = events_of(&server, id).await;
    assert_eq!(events, sorted_of(&["payment_intent.created", "payment_intent.processing", "payment_intent.succeeded"]));
    let (_, read) = send(&server, &key, Method::GET, &format!("/v1/payment_intents/{id}"), None).await;
    assert_eq!(read, paid);
    // Every transition has its audit entry.
    assert_eq!(
        audit_actions(&server, &key, id).await,
        [
            "payment_intent.created",
            "payment_intent.fraud_checked",
            "payment_intent.confirmed",
            "payment_intent.succeeded"
        ]
    );
    server.shutdown().await;
}

async fn manual_capture_full_partial_and_void(backend: Backend) {
    let Some(server) = TestServer::spawn(backend).await else { return };
    let key = test_key(&server).await;
    subscribe(&server, &key).await;
    // Partial capture: the rest of the authorisation is released.
    let created = intent_on(&server, &key, "4242424242424242", 1000, "manual").await;
    let id = created["id"].as_str().unwrap();
    let (_, authorised) = confirm(&server, &key, id).await;
    assert_eq!(authorised["status"], "requires_capture");
    assert_eq!(authorised["amount_capturable"], 1000);
    let path = format!("/v1/payment_intents/{id}/capture");
    let (status, problem) = post(&server, &key, &path, &json!({"amount_to_capture": 1001})).await;
    assert_eq!((status, problem["code"].as_str()), (422, Some("amount_too_large")));
    assert_eq!(problem["errors"][0]["pointer"], "/amount_to_capture");
    let (status, captured) = post(&server, &key, &path, &json!({"amount_to_capture": 600})).await;
    assert_eq!(status, 200, "{captured}");
    assert_eq!((captured["status"].as_str(), captured["amount_received"].as_i64()), (Some("succeeded"), Some(600)));
    assert_eq!(
        ledger(&server, id).await,
        [("authorize".into(), "authorized".into(), 1000), ("capture".into(), "captured".into(), 600)]
    );
    assert_eq!(
        events_of(&server, id).await,
        sorted_of(&[
            "payment_intent.created",
            "payment_intent.processing",
            "payment_intent.amount_capturable_updated",
            "payment_intent.processing",
            "payment_intent.succeeded"
        ])
    );
    // Full capture by default.
    let created = intent_on(&server, &key, "4242424242424242", 700, "manual").await;
    let id = created["id"].as_str().unwrap();
    confirm(&server, &key, id).await;
    let (_, captured) = post(&server, &key, &format!("/v1/payment_intents/{id}/capture"), &json!({})).await;
    assert_eq!(captured["amount_received"], 700);
    // A void of an authorisation goes to the gateway.
    let created = intent_on(&server, &key, "4242424242424242", 500, "manual").await;
    let id = created["id"].as_str().unwrap();
    confirm(&server, &key, id).await;
    let body = json!({"cancellation_reason": "requested_by_customer"});
    let (status, canceled) = post(&server, &key, &format!("/v1/payment_intents/{id}/cancel"), &body).await;
    assert_eq!(status, 200, "{canceled}");
    assert_eq!(canceled["status"], "canceled");
    assert_eq!(canceled["cancellation_reason"], "requested_by_customer");
    assert_eq!(canceled["amount_capturable"], 0);
    assert_eq!(ledger(&server, id).await[1], ("cancel".into(), "voided".into(), 500));
    assert!(events_of(&server, id).await.contains(&"payment_intent.canceled".to_owned()));
    server.shutdown().await;
}

async fn every_sandbox_test_card(backend: Backend) {
    let Some(server) = TestServer::spawn(backend).await else { return };
    let key = test_key(&server).await;
    let cards = [
        ("4242424242424242", "succeeded", None, None),
        ("5555555555554444", "succeeded", None, None),
        ("4000000000000002", "requires_payment_method", Some("card_declined"), Some("generic_decline")),
        ("4000000000009995", "requires_payment_method", Some("card_declined"), Some("insufficient_funds")),
        ("4000000000000069", "requires_payment_method", Some("expired_card"), None),
        ("4000000000000127", "requires_payment_method", Some("incorrect_cvc"), None),
        ("4000000000000119", "requires_payment_method", Some("processing_error"), None),
        ("4000000000001000", "processing", None, None),
        ("4000002760003184", "requires_action", None, None),
    ];
    for (number, status, code, decline_code) in cards {
        let created = intent_on(&server, &key, number, 1500, "automatic").await;
        let id = created["id"].as_str().unwrap();
        let (http, got) = confirm(&server, &key, id).await;
        assert_eq!(http, 200, "{number}: {got}");
        assert_eq!(got["status"], status, "{number}: {got}");
        assert_eq!(got["last_payment_error"]["code"].as_str(), code, "{number}");
        assert_eq!(got["last_payment_error"]["decline_code"].as_str(), decline_code, "{number}");
        if code.is_some() {
            assert!(got["payment_method"].is_null(), "a declined card is detached: {number}");
            assert!(!got["last_payment_error"]["message"].as_str().unwrap().is_empty());
            // Confirming again needs a new card.
            let (again, problem) = confirm(&server, &key, id).await;
            assert_eq!((again, problem["current_state"].as_str()), (409, Some("requires_payment_method")));
            let token = card(&server, &key, "4242424242424242", None).await;
            let path = format!("/v1/payment_intents/{id}/confirm");
            let (_, paid) = post(&server, &key, &path, &json!({"payment_method": token})).await;
            assert_eq!(paid["status"], "succeeded", "{number}: a new card pays");
            assert!(paid["last_payment_error"].is_null());
            assert_eq!(ledger(&server, id).await.len(), 2, "{number}: one decline, one charge");
        }
        if status == "processing" {
            // The gateway authorised but its answer was lost: the intent waits for reconciliation
            // and is never charged again.
            assert_eq!(ledger(&server, id).await, [("authorize".into(), "captured".into(), 1500)]);
            let (again, problem) = confirm(&server, &key, id).await;
            assert_eq!((again, problem["current_state"].as_str()), (409, Some("processing")));
            assert_eq!(ledger(&server, id).await.len(), 1);
        }
        if status == "requires_action" {
            // The shop sends the customer to strongroom's hand-off page, which leads on to the
            // (sandbox's) issuer page.
            let url = got["next_action"]["redirect_to_url"]["url"].as_str().unwrap();
            assert!(
                url.starts_with("https://localhost:") && url.ends_with(&format!("/pay/authenticate/{id}")),
                "{url}"
            );
        }
    }
    server.shutdown().await;
}

async fn three_d_secure_passes_and_fails(backend: Backend) {
    let Some(server) = TestServer::spawn(backend).await else { return };
    let key = test_key(&server).await;
    for (outcome, status, code) in [
        ("pass", "succeeded", None),
        ("fail", "requires_payment_method", Some("payment_intent_authentication_failure")),
    ] {
        let created = intent_on(&server, &key, "4000002760003184", 2500, "automatic").await;
        let id = created["id"].as_str().unwrap();
        let (_, pending) = confirm(&server, &key, id).await;
        assert_eq!(pending["status"], "requires_action");
        // Confirming again before the customer acted asks for the challenge again.
        let (_, still) = confirm(&server, &key, id).await;
        assert_eq!(still["status"], "requires_action");
        let path = format!("/v1/payment_intents/{id}/sandbox_challenge");
        let (http, unchanged) = post(&server, &key, &path, &json!({"outcome": outcome})).await;
        assert_eq!(http, 200, "{unchanged}");
        assert_eq!(unchanged["status"], "requires_action", "the browser's word moves nothing");
        let (http, problem) = post(&server, &key, &path, &json!({"outcome": "pass"})).await;
        assert_eq!((http, problem["code"].as_str()), (409, Some("challenge_not_pending")));
        let (_, done) = confirm(&server, &key, id).await;
        assert_eq!(done["status"], status, "{outcome}: {done}");
        assert_eq!(done["last_payment_error"]["code"].as_str(), code);
        assert!(done["next_action"].is_null());
    }
    server.shutdown().await;
}

async fn illegal_transitions_answer_409_with_the_state(backend: Backend) {
    let Some(server) = TestServer::spawn(backend).await else { return };
    let key = test_key(&server).await;
    let expect_409 = |got: (u16, Value), state: &str| {
        assert_eq!(got.0, 409, "{}", got.1);
        assert_eq!(got.1["code"], "payment_intent_unexpected_state");
        assert_eq!(got.1["current_state"], state, "{}", got.1);
    };
    // requires_payment_method: no confirm, capture; cancel works.
    let bare = intent(&server, &key, json!({"amount": 100, "currency": "usd"})).await;
    let id = bare["id"].as_str().unwrap();
    assert_eq!(bare["status"], "requires_payment_method");
    expect_409(confirm(&server, &key, id).await, "requires_payment_method");
    expect_409(
        post(&server, &key, &format!("/v1/payment_intents/{id}/capture"), &json!({})).await,
        "requires_payment_method",
    );
    let path = format!("/v1/payment_intents/{id}/sandbox_challenge");
    expect_409(post(&server, &key, &path, &json!({"outcome": "pass"})).await, "requires_payment_method");
    let (_, canceled) = post(&server, &key, &format!("/v1/payment_intents/{id}/cancel"), &json!({})).await;
    assert_eq!(canceled["status"], "canceled");
    // canceled: nothing more.
    expect_409(confirm(&server, &key, id).await, "canceled");
    expect_409(post(&server, &key, &format!("/v1/payment_intents/{id}/capture"), &json!({})).await, "canceled");
    expect_409(post(&server, &key, &format!("/v1/payment_intents/{id}/cancel"), &json!({})).await, "canceled");
    let token = card(&server, &key, "4242424242424242", None).await;
    let path = format!("/v1/payment_intents/{id}/confirm");
    expect_409(post(&server, &key, &path, &json!({"payment_method": token})).await, "canceled");
    // requires_confirmation: no capture; cancel works.
    let waiting = intent_on(&server, &key, "4242424242424242", 100, "manual").await;
    let id = waiting["id"].as_str().unwrap();
    expect_409(
        post(&server, &key, &format!("/v1/payment_intents/{id}/capture"), &json!({})).await,
        "requires_confirmation",
    );
    let (_, canceled) = post(&server, &key, &format!("/v1/payment_intents/{id}/cancel"), &json!({})).await;
    assert_eq!(canceled["status"], "canceled");
    assert!(ledger(&server, id).await.is_empty(), "nothing was authorised, nothing voided");
    // requires_capture: no second confirm.
    let authorised = intent_on(&server, &key, "4242424242424242", 100, "manual").await;
    let id = authorised["id"].as_str().unwrap();
    confirm(&server, &key, id).await;
    expect_409(confirm(&server, &key, id).await, "requires_capture");
    // succeeded: no confirm, capture or cancel.
    post(&server, &key, &format!("/v1/payment_intents/{id}/capture"), &json!({})).await;
    expect_409(confirm(&server, &key, id).await, "succeeded");
    expect_409(post(&server, &key, &format!("/v1/payment_intents/{id}/capture"), &json!({})).await, "succeeded");
    expect_409(post(&server, &key, &format!("/v1/payment_intents/{id}/cancel"), &json!({})).await, "succeeded");
    // requires_action: no capture; cancel works.
    let challenged = intent_on(&server, &key, "4000002760003184", 100, "automatic").await;
    let id = challenged["id"].as_str().unwrap();
    confirm(&server, &key, id).await;
    expect_409(post(&server, &key, &format!("/v1/payment_intents/{id}/capture"), &json!({})).await, "requires_action");
    let (_, canceled) = post(&server, &key, &format!("/v1/payment_intents/{id}/cancel"), &json!({})).await;
    assert_eq!(canceled["status"], "canceled");
    // A refund of an intent that is not succeeded.
    let body = json!({"payment_intent": id});
    expect_409(post(&server, &key, "/v1/refunds", &body).await, "canceled");
    server.shutdown().await;
}

async fn thirty_concurrent_confirms_charge_once(backend: Backend) {
    let Some(server) = TestServer::spawn(backend).await else { return };
    let key = test_key(&server).await;
    let created = intent_on(&server, &key, "4242424242424242", 4200, "automatic").await;
    let id = created["id"].as_str().unwrap().to_owned();
    let server = std::sync::Arc::new(server);
    let racers: Vec<_> = (0..30)
        .map(|_| {
            let (server, key, id) = (server.clone(), key.clone(), id.clone());
            tokio::spawn(async move { confirm(&server, &key, &id).await })
        })
        .collect();
    let mut statuses = Vec::new();
    for racer in racers {
        let (status, body) = racer.await.unwrap();
        if status == 409 {
            assert_eq!(body["code"], "payment_intent_unexpected_state");
        }
        statuses.push(status);
    }
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 1, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 409).count(), 29, "{statuses:?}");
    assert_eq!(ledger(&server, &id).await, [("authorize".into(), "captured".into(), 4200)], "charged once");
    let (_, paid) = send(&server, &key, Method::GET, &format!("/v1/payment_intents/{id}"), None).await;
    assert_eq!(paid["status"], "succeeded");
    std::sync::Arc::into_inner(server).unwrap().shutdown().await;
}

async fn thirty_concurrent_refunds_never_exceed_the_captured_amount(backend: Backend) {
    let Some(server) = TestServer::spawn(backend).await else { return };
    let key = test_key(&server).await;
    subscribe(&server, &key).await;
    let created = intent_on(&server, &key, "4242424242424242", 1000, "automatic").await;
    let id = created["id"].as_str().unwrap().to_owned();
    confirm(&server, &key, &id).await;
    let server = std::sync::Arc::new(server);
    let racers: Vec<_> = (0..30)
        .map(|_| {
            let (server, key, id) = (server.clone(), key.clone(), id.clone());
            tokio::spawn(async move {
                post(&server, &key, "/v1/refunds", &json!({"payment_intent": id, "amount": 100})).await
            })
        })
        .collect();
    let mut won = Vec::new();
    for racer in racers {
        let (status, body) = racer.await.unwrap();
        match status {
            201 => {
                assert_eq!(body["status"], "succeeded", "{body}");
                won.push(body["id"].as_str().unwrap().to_owned());
            }
            // Refused by the deciding update, or (a racer that read the intent after the last
            // winner committed) by the check before it.
            422 => assert_eq!(body["code"], "refund_exceeds_captured", "{body}"),
            409 => assert_eq!(body["code"], "charge_already_refunded", "{body}"),
            other => panic!("{other}: {body}"),
        }
    }
    assert_eq!(won.len(), 10, "exactly the captured amount is refunded");
    let refunds: Vec<_> = ledger(&server, &id).await.into_iter().filter(|(op, _, _)| op == "refund").collect();
    assert_eq!(refunds.len(), 10, "the gateway refunded ten times, no more");
    assert_eq!(refunds.iter().map(|(_, _, amount)| amount).sum::<i64>(), 1000);
    let (_, intent) = send(&server, &key, Method::GET, &format!("/v1/payment_intents/{id}"), None).await;
    assert_eq!((intent["amount_refunded"].as_i64(), intent["status"].as_str()), (Some(1000), Some("succeeded")));
    let (status, problem) = post(&server, &key, "/v1/refunds", &json!({"payment_intent": id})).await;
    assert_eq!((status, problem["code"].as_str()), (409, Some("charge_already_refunded")));
    // A refund's events and its listing.
    assert_eq!(events_of(&server, &won[0]).await, sorted_of(&["refund.created", "refund.succeeded"]));
    let path = format!("/v1/refunds?payment_intent={id}&limit=100");
    let (_, listed) = send(&server, &key, Method::GET, &path, None).await;
    assert_eq!(listed["data"].as_array().unwrap().len(), 10);
    let (status, one) = send(&server, &key, Method::GET, &format!("/v1/refunds/{}", won[0]), None).await;
    assert_eq!((status, one["amount"].as_i64(), one["currency"].as_str()), (200, Some(100), Some("eur")));
    std::sync::Arc::into_inner(server).unwrap().shutdown().await;
}

async fn idempotency_keys_replay_and_refuse_a_changed_body(backend: Backend) {
    let Some(server) = TestServer::spawn(backend).await else { return };
    let key = test_key(&server).await;
    let token = card(&server, &key, "4242424242424242", None).await;
    let body = json!({"amount": 800, "currency": "eur", "payment_method": token});
    let create = |idem: &str, body: &Value| {
        server.request_as(&key, Method::POST, "/v1/payment_intents").header("idempotency-key", idem).json(body).send()
    };
    let first = create("order-77-pay", &body).await.unwrap();
    assert_eq!(first.status(), 201);
    let first: Value = first.json().await.unwrap();
    let again = create("order-77-pay", &body).await.unwrap();
    assert_eq!(again.status(), 201);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(again.json::<Value>().await.unwrap()["id"], first["id"], "the same intent, not a second one");
    let changed = create("order-77-pay", &json!({"amount": 801, "currency": "eur"})).await.unwrap();
    assert_eq!(changed.status(), 422);
    assert_eq!(changed.json::<Value>().await.unwrap()["code"], "idempotency_key_reuse");
    let (_, listed) = send(&server, &key, Method::GET, "/v1/payment_intents", None).await;
    assert_eq!(listed["data"].as_array().unwrap().len(), 1);
    // A retried confirm replays its answer and charges once.
    let id = first["id"].as_str().unwrap();
    let path = format!("/v1/payment_intents/{id}/confirm");
    let confirm =
        || server.request_as(&key, Method::POST, &path).header("idempotency-key", "confirm-77").json(&json!({})).send();
    let paid: Value = confirm().await.unwrap().json().await.unwrap();
    let replay = confirm().await.unwrap();
    assert_eq!(replay.status(), 200);
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    assert_eq!(replay.json::<Value>().await.unwrap(), paid);
    assert_eq!(ledger(&server, id).await.len(), 1);
    // A retried refund too.
    let refund = || {
        server
            .request_as(&key, Method::POST, "/v1/refunds")
            .header("idempotency-key", "refund-77")
            .json(&json!({"payment_intent": id, "amount": 300}))
            .send()
    };
    let refunded: Value = refund().await.unwrap().json().await.unwrap();
    let replay: Value = refund().await.unwrap().json().await.unwrap();
    assert_eq!(replay["id"], refunded["id"]);
    assert_eq!(ledger(&server, id).await.iter().filter(|(op, _, _)| op == "refund").count(), 1);
    server.shutdown().await;
}

async fn bad_input_has_stable_codes_naming_the_field(backend: Backend) {
    let Some(server) = TestServer::spawn(backend).await else { return };
    let key = test_key(&server).await;
    let token = card(&server, &key, "4242424242424242", Some("cus_alice")).await;
    let cases = [
        (json!({"amount": 100, "currency": "eur0"}), 422, "unknown_currency", "/currency"),
        (json!({"amount": 100, "currency": "xyz"}), 422, "unknown_currency", "/currency"),
        (json!({"amount": -100, "currency": "eur"}), 422, "invalid_amount", "/amount"),
        (json!({"amount": 0, "currency": "eur"}), 422, "invalid_amount", "/amount"),
        (json!({"amount": 10.5, "currency": "eur"}), 422, "invalid_amount", "/amount"),
        (json!({"amount": "100", "currency": "eur"}), 422, "invalid_amount", "/amount"),
        (json!({"amount": 1_000_000_000_000_i64, "currency": "eur"}), 422, "invalid_amount", "/amount"),
        (json!({"amount": u64::MAX, "currency": "eur"}), 422, "invalid_amount", "/amount"),
        (json!({"amount": 1e30, "currency": "eur"}), 422, "invalid_amount", "/amount"),
        (
            json!({"amount": 100, "currency": "eur", "capture_method": "later"}),
            422,
            "validation_failed",
            "/capture_method",
        ),
        (
            json!({"amount": 100, "currency": "eur", "payment_method": "tok_nope"}),
            422,
            "payment_method_not_found",
            "/payment_method",
        ),
        (
            json!({"amount": 100, "currency": "eur", "payment_method": token}),
            422,
            "payment_method_customer_mismatch",
            "/payment_method",
        ),
        (
            json!({"amount": 100, "currency": "eur", "payment_method": token, "customer": "cus_bob"}),
            422,
            "payment_method_customer_mismatch",
            "/payment_method",
        ),
        (
            json!({"amount": 100, "currency": "eur", "order": "ord_aaaaaaaaaaaaaaaaaaaaaaaaaa"}),
            422,
            "order_not_found",
            "/order",
        ),
        (
            json!({"amount": 100, "currency": "eur", "description": "4242 4242 4242 4242"}),
            422,
            "card_number_in_free_text",
            "/description",
        ),
    ];
    for (body, status, code, pointer) in cases {
        let (got, problem) = post(&server, &key, "/v1/payment_intents", &body).await;
        assert_eq!((got, problem["code"].as_str()), (status, Some(code)), "{body}: {problem}");
        assert_eq!(problem["errors"][0]["pointer"], pointer, "{body}");
        assert!(!problem.to_string().contains("4242 4242"), "never echoed");
    }
    // The customer's own card is fine.
    let ok = json!({"amount": 100, "currency": "eur", "payment_method": token, "customer": "cus_alice"});
    assert_eq!(post(&server, &key, "/v1/payment_intents", &ok).await.0, 201);
    // Another merchant's (here: another mode's) card token.
    let live_token = card(&server, &server.bootstrap_key, "4242424242424242", None).await;
    let body = json!({"amount": 100, "currency": "eur", "payment_method": live_token});
    let (got, problem) = post(&server, &key, "/v1/payment_intents", &body).await;
    assert_eq!((got, problem["code"].as_str()), (422, Some("payment_method_not_found")));
    // Orders.
    let order_cases = [
        (
            json!({"currency": "eur", "line_items": [{"sku": "A", "name": "a", "quantity": 0, "unit_amount": 100}]}),
            "invalid_quantity",
            "/line_items/0/quantity",
        ),
        (
            json!({"currency": "eur", "line_items": [{"sku": "A", "name": "a", "quantity": 1, "unit_amount": -1}]}),
            "invalid_amount",
            "/line_items/0/unit_amount",
        ),
        (json!({"currency": "eur", "line_items": []}), "validation_failed", "/line_items"),
        (
            json!({"currency": "zzz", "line_items": [{"sku": "A", "name": "a", "quantity": 1, "unit_amount": 1}]}),
            "unknown_currency",
            "/currency",
        ),
        (
            // Ten lines of 10^6 × 999,999,999,999: each fits an i64, their sum does not.
            json!({"currency": "eur", "line_items": vec![json!({"sku": "A", "name": "a", "quantity": 1_000_000, "unit_amount": 999_999_999_999_i64}); 10]}),
            "invalid_amount",
            "/line_items",
        ),
        (
            json!({"currency": "eur", "line_items": [{"sku": "A", "name": "a", "quantity": 2, "unit_amount": 500}], "amount_total": 999}),
            "order_total_mismatch",
            "/amount_total",
        ),
        (
            json!({"currency": "eur", "line_items": [{"sku": "A", "name": "a", "quantity": 1, "unit_amount": 5}], "discounts": [{"amount": 6}]}),
            "invalid_amount",
            "/discounts",
        ),
    ];
    for (body, code, pointer) in order_cases {
        let (got, problem) = post(&server, &key, "/v1/orders", &body).await;
        assert_eq!((got, problem["code"].as_str()), (422, Some(code)), "{body}: {problem}");
        assert_eq!(problem["errors"][0]["pointer"], pointer, "{body}");
    }
    // Refunds over the captured amount, and of a missing intent.
    let paid = intent_on(&server, &key, "4242424242424242", 500, "automatic").await;
    let id = paid["id"].as_str().unwrap();
    confirm(&server, &key, id).await;
    let (got, problem) = post(&server, &key, "/v1/refunds", &json!({"payment_intent": id, "amount": 501})).await;
    assert_eq!(
        (got, problem["code"].as_str(), problem["errors"][0]["pointer"].as_str()),
        (422, Some("refund_exceeds_captured"), Some("/amount"))
    );
    let (got, problem) = post(&server, &key, "/v1/refunds", &json!({"payment_intent": id, "amount": -1})).await;
    assert_eq!((got, problem["code"].as_str()), (422, Some("invalid_amount")));
    let body = json!({"payment_intent": "pi_aaaaaaaaaaaaaaaaaaaaaaaaaa"});
    assert_eq!(post(&server, &key, "/v1/refunds", &body).await.0, 404);
    // Scopes: a read-only key cannot pay, a key without payments:refund cannot refund.
    let body = json!({"name": "ro", "scopes": ["payments:read", "payments:write"], "mode": "test"});
    let (_, created) = post(&server, &server.bootstrap_key, "/v1/api-keys", &body).await;
    let no_refund = created["secret"].as_str().unwrap();
    let (got, problem) = post(&server, no_refund, "/v1/refunds", &json!({"payment_intent": id})).await;
    assert_eq!((got, problem["code"].as_str()), (403, Some("insufficient_scope")));
    server.shutdown().await;
}

async fn live_and_test_are_apart(backend: Backend) {
    let Some(server) = TestServer::spawn(backend).await else { return };
    let test = test_key(&server).await;
    let live = server.bootstrap_key.clone();
    let created = intent_on(&server, &test, "4242424242424242", 900, "automatic").await;
    let id = created["id"].as_str().unwrap();
    assert_eq!(created["livemode"], false);
    confirm(&server, &test, id).await;
    for (method, path, body) in [
        (Method::GET, format!("/v1/payment_intents/{id}"), None),
        (Method::POST, format!("/v1/payment_intents/{id}/confirm"), Some(json!({}))),
        (Method::POST, format!("/v1/payment_intents/{id}/capture"), Some(json!({}))),
        (Method::POST, format!("/v1/payment_intents/{id}/cancel"), Some(json!({}))),
        (Method::POST, "/v1/refunds".to_owned(), Some(json!({"payment_intent": id}))),
    ] {
        let (status, problem) = send(&server, &live, method, &path, body.as_ref()).await;
        assert_eq!((status, problem["code"].as_str()), (404, Some("not_found")), "{path}");
    }
    let (_, listed) = send(&server, &live, Method::GET, "/v1/payment_intents", None).await;
    assert!(listed["data"].as_array().unwrap().is_empty());
    let (_, listed) = send(&server, &test, Method::GET, "/v1/payment_intents", None).await;
    assert_eq!(listed["data"][0]["id"], id);
    // The other way round: a live intent is missing for the test key.
    let live_intent = intent_on(&server, &live, "4242424242424242", 900, "automatic").await;
    let path = format!("/v1/payment_intents/{}", live_intent["id"].as_str().unwrap());
    assert_eq!(send(&server, &test, Method::GET, &path, None).await.0, 404);
    let (status, refund) = post(&server, &test, "/v1/refunds", &json!({"payment_intent": id})).await;
    assert_eq!(status, 201);
    assert_eq!(refund["livemode"], false);
    let path = format!("/v1/refunds/{}", refund["id"].as_str().unwrap());
    assert_eq!(send(&server, &live, Method::GET, &path, None).await.0, 404);
    server.shutdown().await;
}

async fn orders_are_priced_versioned_and_locked(backend: Backend) {
    let Some(server) = TestServer::spawn(backend).await else { return };
    let key = test_key(&server).await;
    let body = json!({
        "currency": "JPY",
        "line_items": [{"sku": "TEA-1", "name": "Sencha", "quantity": 3, "unit_amount": 1200},
                       {"sku": "CUP-2", "name": "Cup", "quantity": 1, "unit_amount": 800}],
        "shipping_amount": 500,
        "tax_amount": 440,
        "discounts": [{"code": "WELCOME", "amount": 300}],
        "customer": "cus_42",
        "metadata": {"cart": "c-9"},
        "status": "paid",
        "amount_total": 5040
    });
    let (status, order) = post(&server, &key, "/v1/orders", &body).await;
    assert_eq!(status, 201, "{order}");
    assert_eq!(order["amount_total"], 3600 + 800 + 500 + 440 - 300);
    assert_eq!(order["amount_subtotal"], 4400);
    assert_eq!(order["line_items"][0]["amount_total"], 3600);
    assert_eq!((order["version"].as_u64(), order["locked"].as_bool()), (Some(1), Some(false)));
    assert_eq!(order["currency"], "jpy");
    let id = order["id"].as_str().unwrap();
    // An amendment is a new version with its own audit entry.
    let mut amended = body.clone();
    amended["line_items"][0]["quantity"] = json!(1);
    amended.as_object_mut().unwrap().remove("amount_total");
    let (status, v2) = post(&server, &key, &format!("/v1/orders/{id}"), &amended).await;
    assert_eq!(status, 200, "{v2}");
    assert_eq!((v2["version"].as_u64(), v2["amount_total"].as_i64()), (Some(2), Some(2640)));
    let (_, read) = send(&server, &key, Method::GET, &format!("/v1/orders/{id}"), None).await;
    assert_eq!(read, v2);
    // A payment intent must pay the order's total.
    let token = card(&server, &key, "4242424242424242", Some("cus_42")).await;
    let wrong = json!({"amount": 5040, "currency": "jpy", "order": id, "payment_method": token});
    let (status, problem) = post(&server, &key, "/v1/payment_intents", &wrong).await;
    assert_eq!((status, problem["code"].as_str()), (422, Some("amount_does_not_match_order")));
    let right = json!({"amount": 2640, "currency": "jpy", "order": id, "payment_method": token});
    let pay = intent(&server, &key, right.clone()).await;
    assert_eq!(pay["customer"], "cus_42", "taken from the order");
    // An amendment after the intent was made: confirming it is refused, nothing is charged.
    let mut third = amended.clone();
    third["tax_amount"] = json!(441);
    let (_, v3) = post(&server, &key, &format!("/v1/orders/{id}"), &third).await;
    assert_eq!(v3["version"], 3);
    let pay_id = pay["id"].as_str().unwrap();
    let (status, problem) = confirm(&server, &key, pay_id).await;
    assert_eq!((status, problem["code"].as_str()), (409, Some("order_changed")));
    assert!(ledger(&server, pay_id).await.is_empty());
    // Paying the current total locks the order.
    let token = card(&server, &key, "4242424242424242", Some("cus_42")).await;
    let pay =
        intent(&server, &key, json!({"amount": 2641, "currency": "jpy", "order": id, "payment_method": token})).await;
    let (_, paid) = confirm(&server, &key, pay["id"].as_str().unwrap()).await;
    assert_eq!(paid["status"], "succeeded");
    let (status, problem) = post(&server, &key, &format!("/v1/orders/{id}"), &amended).await;
    assert_eq!((status, problem["code"].as_str()), (409, Some("order_locked")));
    let (_, locked) = send(&server, &key, Method::GET, &format!("/v1/orders/{id}"), None).await;
    assert_eq!((locked["locked"].as_bool(), locked["version"].as_u64()), (Some(true), Some(3)));
    let (status, problem) = post(&server, &key, "/v1/payment_intents", &right).await;
    assert_eq!((status, problem["code"].as_str()), (409, Some("order_locked")));
    let (_, entries) =
        send(&server, &server.bootstrap_key, Method::GET, "/v1/audit/entries?start=0&limit=1000", None).await;
    let amendments = entries["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["entry"]["object"]["id"] == id && e["entry"]["action"] == "order.amended")
        .count();
    assert_eq!(amendments, 2);
    // Another data space does not see it.
    assert_eq!(send(&server, &server.bootstrap_key, Method::GET, &format!("/v1/orders/{id}"), None).await.0, 404);
    let (_, listed) = send(&server, &key, Method::GET, "/v1/orders", None).await;
    assert_eq!(listed["data"][0]["id"], id);
    server.shutdown().await;
}

async fn lists_page_with_starting_after(backend: Backend) {
    let Some(server) = TestServer::spawn(backend).await else { return };
    let key = test_key(&server).await;
    let mut made = Vec::new();
    for amount in 1..=5 {
        // Ids carry their millisecond; the test clock moves only when told.
        server.clock.advance(std::time::Duration::from_millis(1));
        made.push(
            intent(&server, &key, json!({"amount": amount, "currency": "eur"})).await["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    let mut seen = Vec::new();
    let mut path = "/v1/payment_intents?limit=2".to_owned();
    loop {
        let (status, page) = send(&server, &key, Method::GET, &path, None).await;
        assert_eq!(status, 200, "{page}");
        let ids: Vec<String> =
            page["data"].as_array().unwrap().iter().map(|i| i["id"].as_str().unwrap().to_owned()).collect();
        assert!(ids.len() <= 2);
        seen.extend(ids.clone());
        if page["has_more"] != true {
            break;
        }
        path = format!("/v1/payment_intents?limit=2&starting_after={}", ids.last().unwrap());
    }
    made.reverse();
    assert_eq!(seen, made, "newest first, each once");
    for bad in ["limit=0", "limit=101", "starting_after=nope"] {
        let (status, problem) = send(&server, &key, Method::GET, &format!("/v1/payment_intents?{bad}"), None).await;
        assert_eq!((status, problem["code"].as_str()), (422, Some("validation_failed")), "{bad}");
    }
    server.shutdown().await;
}

async fn the_cvc_is_used_by_the_first_authorisation_only(backend: Backend) {
    let Some(server) = TestServer::spawn(backend).await else { return };
    let key = test_key(&server).await;
    let token = card(&server, &key, "4000000000000002", None).await;
    let (_, before) = send(&server, &key, Method::GET, &format!("/v1/tokens/{token}"), None).await;
    assert_eq!(before["display"]["cvc_held"], true, "{before}");
    let created = intent(&server, &key, json!({"amount": 100, "currency": "eur", "payment_method": token})).await;
    // Creating an intent does not use the CVC; the authorisation does, declined or not.
    let (_, held) = send(&server, &key, Method::GET, &format!("/v1/tokens/{token}"), None).await;
    assert_eq!(held["display"]["cvc_held"], true);
    confirm(&server, &key, created["id"].as_str().unwrap()).await;
    let (_, after) = send(&server, &key, Method::GET, &format!("/v1/tokens/{token}"), None).await;
    assert_eq!(after["display"]["cvc_held"], false, "{after}");
    server.shutdown().await;
}

async fn a_deleted_card_token_is_a_declined_payment_method(backend: Backend) {
    let Some(server) = TestServer::spawn(backend).await else { return };
    let key = test_key(&server).await;
    let created = intent_on(&server, &key, "4242424242424242", 300, "automatic").await;
    let (id, token) = (created["id"].as_str().unwrap(), created["payment_method"].as_str().unwrap());
    let (status, _) = send(&server, &key, Method::DELETE, &format!("/v1/tokens/{token}"), None).await;
    assert_eq!(status, 200);
    let (status, got) = confirm(&server, &key, id).await;
    assert_eq!(status, 200, "{got}");
    assert_eq!(got["status"], "requires_payment_method");
    assert_eq!(got["last_payment_error"]["code"], "payment_method_unusable");
    assert!(ledger(&server, id).await.is_empty(), "the gateway never saw it");
    server.shutdown().await;
}

async fn create_with_confirm_pays_in_one_request(backend: Backend) {
    let Some(server) = TestServer::spawn(backend).await else { return };
    let key = test_key(&server).await;
    let token = card(&server, &key, "4242424242424242", None).await;
    let body = json!({"amount": 1999, "currency": "EUR", "payment_method": token, "confirm": true});
    let (status, paid) = post(&server, &key, "/v1/payment_intents", &body).await;
    assert_eq!(status, 201, "{paid}");
    assert_eq!((paid["status"].as_str(), paid["amount_received"].as_i64()), (Some("succeeded"), Some(1999)), "{paid}");
    let id = paid["id"].as_str().unwrap();
    assert_eq!(ledger(&server, id).await, [("authorize".into(), "captured".into(), 1999)]);
    // Every step has its entry, in order (the claim's is written before the gateway is asked).
    assert_eq!(
        audit_actions(&server, &server.bootstrap_key, id).await,
        [
            "payment_intent.created",
            "payment_intent.fraud_checked",
            "payment_intent.confirmed",
            "payment_intent.succeeded"
        ]
    );

    // Without a card there is nothing to confirm; return_url only goes with confirm.
    let (status, problem) =
        post(&server, &key, "/v1/payment_intents", &json!({"amount": 100, "currency": "EUR", "confirm": true})).await;
    assert_eq!((status, problem["errors"][0]["pointer"].as_str()), (422, Some("/payment_method")), "{problem}");
    let body =
        json!({"amount": 100, "currency": "EUR", "payment_method": token, "return_url": "https://shop.example/"});
    let (status, problem) = post(&server, &key, "/v1/payment_intents", &body).await;
    assert_eq!((status, problem["errors"][0]["pointer"].as_str()), (422, Some("/return_url")), "{problem}");
    server.shutdown().await;
}
