//! Black-box tests of saved cards on a real server, on SQLite and PostgreSQL: a payment with the
//! customer's consent saves the card (consent, network transaction id and events recorded);
//! later customer-initiated and merchant-initiated payments use it and the sandbox gateway is
//! told which, with the first payment's network transaction id; every misuse has its code; a
//! removal is immediate and happens once under 30 concurrent requests; erasure removes them; the
//! customer sees and removes only their own.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code fails loudly")]

use reqwest::Method;
use serde_json::{Value, json};
use strongroom_testkit::{Backend, TestServer, on_both_backends};

on_both_backends!(
    a_consented_payment_saves_the_card_for_later_payments,
    saving_and_using_saved_cards_refuse_misuse_with_codes,
    a_declined_payment_saves_nothing,
    removing_a_saved_card_is_immediate_and_happens_once,
    a_card_that_needs_the_customer_is_declined_without_them,
    erasing_the_customer_removes_their_saved_cards,
    customers_see_and_remove_only_their_own_saved_cards
);

const PASSWORD: &str = "violet tractor anthem 1987";
const CONSENT: &str = "Keep my card for my next orders and the monthly box";

async fn send(server: &TestServer, key: &str, method: Method, path: &str, body: Option<&Value>) -> (u16, Value) {
    server.call(key, method, path, body).await
}

async fn post(server: &TestServer, path: &str, body: &Value) -> (u16, Value) {
    send(server, &server.bootstrap_key, Method::POST, path, Some(body)).await
}

async fn get(server: &TestServer, path: &str) -> (u16, Value) {
    send(server, &server.bootstrap_key, Method::GET, path, None).await
}

/// A card token of `customer`.
async fn card(server: &TestServer, number: &str, customer: &str) -> String {
    let body = json!({"type": "card", "customer": customer, "ttl": 600,
        "value": {"number": number, "exp_month": 12, "exp_year": 2040, "cvc": "123"}});
    let (status, token) = post(server, "/v1/tokens", &body).await;
    assert_eq!(status, 201, "{token}");
    token["id"].as_str().unwrap().to_owned()
}

fn consent() -> Value {
    json!({"text": CONSENT, "ip_address": "198.51.100.7", "user_agent": "Mozilla/5.0 (X11; Linux x86_64)"})
}

/// Pays `amount` EUR with a new token of `number` for `customer`, saving the card for `usage`;
/// returns the answer.
async fn pay_and_save(server: &TestServer, number: &str, customer: &str, usage: &str) -> (u16, Value) {
    let token = card(server, number, customer).await;
    let body = json!({"amount": 2500, "currency": "eur", "customer": customer, "payment_method": token,
        "confirm": true, "setup_future_usage": usage, "consent": consent()});
    post(server, "/v1/payment_intents", &body).await
}

/// Saves a 4242 card for `customer`: its `pm_…` and the first payment.
async fn saved_card(server: &TestServer, customer: &str, usage: &str) -> (String, Value) {
    let (status, paid) = pay_and_save(server, "4242424242424242", customer, usage).await;
    assert_eq!((status, paid["status"].as_str()), (201, Some("succeeded")), "{paid}");
    (paid["saved_card"].as_str().expect("a saved card").to_owned(), paid)
}

/// Creates (and with `confirm`, confirms) an intent paid with `payment_method`.
async fn pay_with(server: &TestServer, payment_method: &str, customer: &str, extra: Value) -> (u16, Value) {
    let mut body = json!({"amount": 1200, "currency": "eur", "customer": customer,
        "payment_method": payment_method, "confirm": true});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    post(server, "/v1/payment_intents", &body).await
}

async fn pay_with_key(server: &TestServer, key: &str, payment_method: &str, customer: &str) -> (u16, Value) {
    let body = json!({"amount": 1200, "currency": "eur", "customer": customer, "payment_method": payment_method});
    send(server, key, Method::POST, "/v1/payment_intents", Some(&body)).await
}

async fn code_of(answer: &(u16, Value)) -> (u16, String, String) {
    (
        answer.0,
        answer.1["code"].as_str().unwrap_or_default().to_owned(),
        answer.1["errors"][0]["pointer"].as_str().unwrap_or_default().to_owned(),
    )
}

/// Rows of one text column (and an optional second) by SQL with one text parameter.
async fn sql_rows(server: &TestServer, sql: &str, param: &str) -> Vec<(String, Option<String>)> {
    server.query_rows(sql, param).await
}

/// What the sandbox gateway was told of stored credentials for an intent's authorisations, and
/// the network transaction id it issued.
async fn ledger(server: &TestServer, intent: &str) -> Vec<(String, Option<String>)> {
    let sql = "SELECT COALESCE(stored_credential, ''), network_transaction_id FROM sandbox_ledger \
               WHERE reference = $1 AND operation = 'authorize' ORDER BY created_at";
    sql_rows(server, sql, intent).await
}

/// Event types in the outbox whose payload names `id`.
async fn events_of(server: &TestServer, id: &str) -> Vec<String> {
    let sql = match server.backend {
        Backend::Sqlite => "SELECT event_type, NULL FROM outbox WHERE CAST(payload AS TEXT) LIKE $1",
        Backend::Postgres => "SELECT event_type, NULL FROM outbox WHERE convert_from(payload, 'UTF8') LIKE $1",
    };
    let mut types: Vec<String> =
        sql_rows(server, sql, &format!("%\"id\":\"{id}\"%")).await.into_iter().map(|r| r.0).collect();
    types.sort();
    types
}

/// Subscribes a loopback endpoint to every event, so the outbox holds them.
async fn subscribe(server: &TestServer) {
    let body = json!({"url": "http://127.0.0.1:9/hook", "event_types": ["*"]});
    let (status, endpoint) = post(server, "/v1/webhook_endpoints", &body).await;
    assert_eq!(status, 201, "{endpoint}");
}

async fn signed_in_customer(server: &TestServer, email: &str) -> (String, String) {
    server.signed_in_customer(email, PASSWORD).await
}

/// The audit log's entries as text, once it holds every needle (waits up to 5 s).
async fn audit_with(server: &TestServer, needles: &[&str]) -> String {
    let mut text = String::new();
    for _ in 0..50 {
        let size = server.get_json("/v1/audit/entries?start=0&limit=1").await["tree_size"].as_u64().unwrap();
        text = server.get_json(&format!("/v1/audit/entries?start=0&limit={}", size.clamp(1, 1000))).await.to_string();
        if needles.iter().all(|n| text.contains(n)) {
            return text;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    text
}

async fn a_consented_payment_saves_the_card_for_later_payments(backend: Backend) {
    let Some(server) = TestServer::spawn(backend).await else { return };
    subscribe(&server).await;
    let customer = "cust_7001";
    let (pm, first) = saved_card(&server, customer, "off_session").await;
    assert!(pm.starts_with("pm_"), "{first}");
    assert_eq!(first["setup_future_usage"], "off_session");
    let network_id = first["network_transaction_id"].as_str().expect("the sandbox reports one").to_owned();
    assert_eq!(network_id.len(), 15, "{network_id}");
    let first_id = first["id"].as_str().unwrap().to_owned();
    assert_eq!(ledger(&server, &first_id).await, [("first:off_session".to_owned(), Some(network_id.clone()))]);

    // The saved card: consent as recorded, the first payment's network id, no token.
    let (status, saved) = get(&server, &format!("/v1/saved_cards/{pm}")).await;
    assert_eq!(status, 200, "{saved}");
    assert_eq!(saved["object"], "saved_card");
    assert_eq!(saved["customer"], customer);
    assert_eq!(saved["card"], json!({"brand": "visa", "last4": "4242"}));
    assert_eq!(saved["usage"], "off_session");
    assert_eq!(saved["status"], "active");
    assert_eq!(saved["consent"]["text"], CONSENT);
    assert_eq!(saved["consent"]["ip_address"], "198.51.100.7");
    assert!(saved["consent"]["accepted_at"].as_str().is_some_and(|t| t.ends_with('Z')), "{saved}");
    assert_eq!(saved["network_transaction_id"], network_id.as_str());
    assert_eq!(saved["first_payment_intent"], first_id.as_str());
    assert!(!saved.to_string().contains("tok_"), "the token behind it is never shown: {saved}");
    let token = first["payment_method"].as_str().unwrap();
    let (status, kept) = get(&server, &format!("/v1/tokens/{token}")).await;
    assert_eq!(status, 200, "{kept}");
    assert_eq!(kept["expires_at"], Value::Null, "the checkout token's ttl is lifted: {kept}");
    let (_, listed) = get(&server, &format!("/v1/saved_cards?customer={customer}")).await;
    assert_eq!(listed["data"].as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed["data"][0]["id"], pm.as_str());

    // The customer pays again with it (customer-initiated): the gateway is told, with the id.
    let (status, again) = pay_with(&server, &pm, customer, json!({})).await;
    assert_eq!((status, again["status"].as_str()), (201, Some("succeeded")), "{again}");
    assert_eq!(again["payment_method"], pm.as_str());
    assert_eq!(again["card"]["last4"], "4242");
    assert_eq!(again["off_session"], false);
    let again_id = again["id"].as_str().unwrap();
    let told = ledger(&server, again_id).await;
    assert_eq!(told[0].0, format!("customer:{network_id}"));

    // The shop charges it without the customer (merchant-initiated, a subscription).
    let (status, monthly) =
        pay_with(&server, &pm, customer, json!({"off_session": true, "mit_reason": "recurring"})).await;
    assert_eq!((status, monthly["status"].as_str()), (201, Some("succeeded")), "{monthly}");
    assert_eq!((monthly["off_session"].as_bool(), monthly["mit_reason"].as_str()), (Some(true), Some("recurring")));
    let told = ledger(&server, monthly["id"].as_str().unwrap()).await;
    assert_eq!(told[0].0, format!("merchant:recurring:{network_id}"));

    // Events and audit entries.
    assert_eq!(events_of(&server, &pm).await, ["saved_card.created"]);
    let audit = audit_with(&server, &["saved_card.created", &pm]).await;
    assert!(audit.contains("saved_card.created") && audit.contains(&pm), "the save is audited");
    let (_, used) = get(&server, &format!("/v1/saved_cards/{pm}")).await;
    assert!(used["last_used_at"].is_string(), "{used}");
}

async fn saving_and_using_saved_cards_refuse_misuse_with_codes(backend: Backend) {
    let Some(server) = TestServer::spawn(backend).await else { return };
    let token = card(&server, "4242424242424242", "cust_1").await;
    let base = json!({"amount": 1000, "currency": "eur", "payment_method": token});
    let with = |extra: Value| {
        let mut body = base.clone();
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        body
    };
    let cases = [
        (json!({"setup_future_usage": "off_session", "consent": consent()}), "customer_required", "/customer"),
        (json!({"customer": "cust_1", "setup_future_usage": "off_session"}), "consent_required", "/consent"),
        (
            json!({"customer": "cust_1", "setup_future_usage": "on_session", "consent": {"text": " "}}),
            "consent_required",
            "/consent/text",
        ),
        (json!({"customer": "cust_1", "consent": consent()}), "validation_failed", "/consent"),
        (
            json!({"customer": "cust_1", "setup_future_usage": "on_session",
                "consent": {"text": "ok", "ip_address": "not an address"}}),
            "validation_failed",
            "/consent/ip_address",
        ),
        (json!({"customer": "cust_1", "mit_reason": "recurring"}), "validation_failed", "/mit_reason"),
        (json!({"customer": "cust_1", "off_session": true}), "saved_card_required", "/payment_method"),
        (
            json!({"customer": "cust_1", "off_session": true, "setup_future_usage": "off_session",
                "consent": consent()}),
            "validation_failed",
            "/off_session",
        ),
    ];
    for (extra, code, pointer) in cases {
        let answer = post(&server, "/v1/payment_intents", &with(extra.clone())).await;
        assert_eq!(code_of(&answer).await, (422, code.to_owned(), pointer.to_owned()), "{extra}: {}", answer.1);
    }
    let (status, bad) =
        post(&server, "/v1/payment_intents", &with(json!({"customer": "cust_1", "setup_future_usage": "sometimes"})))
            .await;
    assert_eq!(status, 422, "{bad}");

    // A saved card: not another customer's, not saved twice, not off-session unless saved so.
    let (pm, _) = saved_card(&server, "cust_1", "on_session").await;
    let answer = pay_with(&server, &pm, "cust_2", json!({})).await;
    assert_eq!(code_of(&answer).await, (422, "payment_method_customer_mismatch".into(), "/payment_method".into()));
    let answer =
        pay_with(&server, &pm, "cust_1", json!({"setup_future_usage": "on_session", "consent": consent()})).await;
    assert_eq!(code_of(&answer).await, (422, "validation_failed".into(), "/setup_future_usage".into()));
    let answer = pay_with(&server, &pm, "cust_1", json!({"off_session": true})).await;
    assert_eq!(
        code_of(&answer).await,
        (422, "saved_card_not_for_off_session".into(), "/payment_method".into()),
        "{}",
        answer.1
    );
    let answer = pay_with(&server, "pm_aaaaaaaaaaaaaaaaaaaaaaaaaa", "cust_1", json!({})).await;
    assert_eq!(code_of(&answer).await, (422, "payment_method_not_found".into(), "/payment_method".into()));
    // A key of the other mode sees no live saved card.
    let body = json!({"name": "test mode", "scopes": ["payments:read", "payments:write"], "mode": "test"});
    let (status, key) = post(&server, "/v1/api-keys", &body).await;
    assert_eq!(status, 201, "{key}");
    let test_key = key["secret"].as_str().unwrap().to_owned();
    let (status, _) = send(&server, &test_key, Method::GET, &format!("/v1/saved_cards/{pm}"), None).await;
    assert_eq!(status, 404, "another mode's saved card answers as a missing one");
    let answer = pay_with_key(&server, &test_key, &pm, "cust_1").await;
    assert_eq!(code_of(&answer).await, (422, "payment_method_not_found".into(), "/payment_method".into()));
    // No error body echoes what was sent.
    let (status, body) = pay_with(
        &server,
        &pm,
        "cust_1",
        json!({"setup_future_usage": "on_session", "consent": {"text": "ok", "ip_address": "canary-7f3a"}}),
    )
    .await;
    assert_eq!(status, 422);
    assert!(!body.to_string().contains("canary-7f3a"), "{body}");
}

async fn a_declined_payment_saves_nothing(backend: Backend) {
    let Some(server) = TestServer::spawn(backend).await else { return };
    let (status, declined) = pay_and_save(&server, "4000000000000002", "cust_3", "off_session").await;
    assert_eq!(status, 201, "{declined}");
    assert_eq!(declined["status"], "requires_payment_method");
    assert_eq!(declined["saved_card"], Value::Null);
    assert_eq!(declined["network_transaction_id"], Value::Null);
    let (_, listed) = get(&server, "/v1/saved_cards?customer=cust_3&include_removed=true").await;
    assert_eq!(listed["data"], json!([]), "{listed}");
}

async fn removing_a_saved_card_is_immediate_and_happens_once(backend: Backend) {
    // The race is between payments and a removal, not with the fraud checks: 31 payments of one
    // card (two customers) would cross the per-card and per-customer velocity limits, whose
    // count depends on when the removal lands.
    let Some(server) = TestServer::spawn_with(backend, |config| {
        config.payments.fraud.max_attempts_per_card = 0;
        config.payments.fraud.max_attempts_per_customer = 0;
    })
    .await
    else {
        return;
    };
    subscribe(&server).await;
    let (pm, first) = saved_card(&server, "cust_4", "off_session").await;
    let token = first["payment_method"].as_str().unwrap().to_owned();
    // An intent made with it before the removal, confirmed after.
    let body = json!({"amount": 900, "currency": "eur", "customer": "cust_4", "payment_method": pm});
    let (status, waiting) = post(&server, "/v1/payment_intents", &body).await;
    assert_eq!((status, waiting["status"].as_str()), (201, Some("requires_confirmation")), "{waiting}");

    let removals = (0..30).map(|_| {
        let server = &server;
        let pm = pm.clone();
        async move { send(server, &server.bootstrap_key, Method::DELETE, &format!("/v1/saved_cards/{pm}"), None).await }
    });
    let answers = futures::future::join_all(removals).await;
    let won: Vec<&Value> = answers.iter().filter(|a| a.0 == 200).map(|a| &a.1).collect();
    assert_eq!(won.len(), 1, "one removal wins: {answers:?}");
    assert!(answers.iter().all(|a| a.0 == 200 || a.0 == 404), "{answers:?}");
    assert_eq!((won[0]["status"].as_str(), won[0]["removed_by"].as_str()), (Some("removed"), Some("merchant")));

    // No payment starts with it afterwards, and the card data behind it is gone.
    let id = waiting["id"].as_str().unwrap();
    let answer = post(&server, &format!("/v1/payment_intents/{id}/confirm"), &json!({})).await;
    assert_eq!(code_of(&answer).await, (422, "saved_card_removed".into(), "/payment_method".into()), "{}", answer.1);
    assert!(ledger(&server, id).await.is_empty(), "the gateway was not asked");
    let answer = pay_with(&server, &pm, "cust_4", json!({"off_session": true})).await;
    assert_eq!(code_of(&answer).await, (422, "saved_card_removed".into(), "/payment_method".into()));
    let (status, _) = get(&server, &format!("/v1/tokens/{token}")).await;
    assert_eq!(status, 404, "the token behind the card was deleted");
    let (status, still) = get(&server, &format!("/v1/saved_cards/{pm}")).await;
    assert_eq!((status, still["status"].as_str()), (200, Some("removed")));
    assert_eq!(events_of(&server, &pm).await, ["saved_card.created", "saved_card.removed"]);
    let (_, active) = get(&server, "/v1/saved_cards?customer=cust_4").await;
    assert_eq!(active["data"], json!([]));
    let (_, all) = get(&server, "/v1/saved_cards?customer=cust_4&include_removed=true").await;
    assert_eq!(all["data"].as_array().unwrap().len(), 1);

    // Payments racing a removal: each either went through before it or was refused after it.
    let (pm, _) = saved_card(&server, "cust_5", "off_session").await;
    let mut racers = Vec::new();
    for n in 0..29 {
        let server = &server;
        let pm = pm.clone();
        racers.push(Box::pin(async move {
            let body = json!({"amount": 100 + n, "currency": "eur", "customer": "cust_5", "payment_method": pm,
                "confirm": true, "off_session": true});
            post(server, "/v1/payment_intents", &body).await
        }) as std::pin::Pin<Box<dyn std::future::Future<Output = (u16, Value)> + Send>>);
    }
    let server_ref = &server;
    let removing = pm.clone();
    racers.insert(
        15,
        Box::pin(async move {
            send(server_ref, &server_ref.bootstrap_key, Method::DELETE, &format!("/v1/saved_cards/{removing}"), None)
                .await
        }),
    );
    let answers = futures::future::join_all(racers).await;
    for (status, body) in &answers {
        let ok = (*status == 201 && body["status"] == "succeeded")
            || (*status == 422 && body["code"] == "saved_card_removed")
            || (*status == 200 && body["object"] == "saved_card");
        assert!(ok, "{status} {body}");
    }
    let (_, after) = pay_with(&server, &pm, "cust_5", json!({"off_session": true})).await;
    assert_eq!(after["code"], "saved_card_removed");
}

async fn a_card_that_needs_the_customer_is_declined_without_them(backend: Backend) {
    let Some(server) = TestServer::spawn(backend).await else { return };
    // Saved from a payment that needed 3-D Secure: the card is saved when the customer passed.
    let (status, first) = pay_and_save(&server, "4000002760003184", "cust_6", "off_session").await;
    assert_eq!((status, first["status"].as_str()), (201, Some("requires_action")), "{first}");
    assert_eq!(first["saved_card"], Value::Null, "not saved before it is authorised");
    let id = first["id"].as_str().unwrap();
    let (status, _) =
        post(&server, &format!("/v1/payment_intents/{id}/sandbox_challenge"), &json!({"outcome": "pass"})).await;
    assert_eq!(status, 200);
    let (status, paid) = post(&server, &format!("/v1/payment_intents/{id}/confirm"), &json!({})).await;
    assert_eq!((status, paid["status"].as_str()), (200, Some("succeeded")), "{paid}");
    let pm = paid["saved_card"].as_str().expect("saved after the challenge").to_owned();

    // Without the customer, the issuer's challenge cannot be answered: declined, not stuck.
    let (status, mit) = pay_with(&server, &pm, "cust_6", json!({"off_session": true})).await;
    assert_eq!(status, 201, "{mit}");
    assert_eq!(mit["status"], "requires_payment_method", "{mit}");
    assert_eq!(mit["last_payment_error"]["code"], "authentication_required", "{mit}");
    // With the customer (on session) the challenge is theirs to answer.
    let (status, cit) = pay_with(&server, &pm, "cust_6", json!({})).await;
    assert_eq!((status, cit["status"].as_str()), (201, Some("requires_action")), "{cit}");
}

async fn erasing_the_customer_removes_their_saved_cards(backend: Backend) {
    let Some(server) = TestServer::spawn(backend).await else { return };
    let (pm, _) = saved_card(&server, "cust_8", "off_session").await;
    let (other, _) = saved_card(&server, "cust_9", "off_session").await;
    let (status, erased) =
        send(&server, &server.bootstrap_key, Method::DELETE, "/v1/customers/cust_8/data", None).await;
    assert_eq!(status, 200, "{erased}");
    let (_, gone) = get(&server, &format!("/v1/saved_cards/{pm}")).await;
    assert_eq!((gone["status"].as_str(), gone["removed_by"].as_str()), (Some("removed"), Some("erasure")), "{gone}");
    let answer = pay_with(&server, &pm, "cust_8", json!({"off_session": true})).await;
    assert_eq!(answer.1["code"], "saved_card_removed");
    let (_, kept) = get(&server, &format!("/v1/saved_cards/{other}")).await;
    assert_eq!(kept["status"], "active", "another customer's card stays");
}

async fn customers_see_and_remove_only_their_own_saved_cards(backend: Backend) {
    let Some(server) = TestServer::spawn(backend).await else { return };
    let (amy, amy_session) = signed_in_customer(&server, "amy@example.com").await;
    let (bo, bo_session) = signed_in_customer(&server, "bo@example.com").await;
    let (amys, _) = saved_card(&server, &amy, "on_session").await;
    let (bos, _) = saved_card(&server, &bo, "off_session").await;

    let (status, list) = send(&server, &amy_session, Method::GET, "/v1/me/saved_cards", None).await;
    assert_eq!(status, 200, "{list}");
    let data = list["data"].as_array().unwrap();
    assert_eq!(data.len(), 1, "{list}");
    assert_eq!(data[0]["id"], amys.as_str());
    assert_eq!(data[0]["consent"]["text"], CONSENT);
    assert_eq!(data[0]["network_transaction_id"], Value::Null, "not in the customer's view");

    // Bo cannot remove Amy's card (it answers as a missing one); Amy can, once.
    let path = format!("/v1/me/saved_cards/{amys}");
    assert_eq!(send(&server, &bo_session, Method::DELETE, &path, None).await.0, 404);
    let (status, removed) = send(&server, &amy_session, Method::DELETE, &path, None).await;
    assert_eq!((status, removed["removed_by"].as_str()), (200, Some("customer")), "{removed}");
    assert_eq!(send(&server, &amy_session, Method::DELETE, &path, None).await.0, 404);
    let (_, list) = send(&server, &amy_session, Method::GET, "/v1/me/saved_cards", None).await;
    assert_eq!(list["data"], json!([]));
    let (_, list) = send(&server, &bo_session, Method::GET, "/v1/me/saved_cards", None).await;
    assert_eq!(list["data"][0]["id"], bos.as_str());
    assert_eq!(send(&server, &server.bootstrap_key, Method::GET, "/v1/me/saved_cards", None).await.0, 401);
    let audit = audit_with(&server, &["saved_card.removed"]).await;
    assert!(audit.contains("saved_card.removed") && audit.contains(&amys), "the removal is audited");
}
