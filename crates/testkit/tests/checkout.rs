//! Black-box tests of the checkout rules on a real server, on SQLite and PostgreSQL: each fraud
//! rule blocks (or asks for a step-up) on its own signal with the gateway not asked, the decision
//! and its reasons are on the intent and in the audit log, counting holds under 30 concurrent
//! confirmations (separate, and made with the intent by `confirm: true`); step-up on confirm with a proof bound to amount, currency, payee and intent,
//! good once, also under 30 concurrent confirmations.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code fails loudly")]

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use strongroom::config::FraudConfig;
use strongroom_domain::identity::Client;
use strongroom_domain::merchants::MerchantId;
use strongroom_testkit::{Backend, TestServer, on_both_backends, test_python};

on_both_backends!(
    a_normal_checkout_is_allowed_and_the_decision_is_audited,
    customer_velocity_blocks_without_asking_the_gateway,
    card_velocity_counts_one_card_across_tokens,
    ip_velocity_counts_the_client_address,
    device_velocity_counts_the_device,
    card_testing_many_cards_from_one_client_is_blocked,
    many_cards_on_one_customer_are_blocked,
    declines_ask_for_step_up,
    failed_three_d_secure_counts_as_a_decline,
    declines_block,
    repeated_small_amounts_are_blocked,
    amount_limits_are_per_currency,
    a_card_from_another_country_needs_step_up,
    the_window_passes,
    old_signals_are_purged_after_the_window,
    thirty_concurrent_confirms_from_one_address_pass_at_most_the_limit,
    thirty_concurrent_creates_with_confirm_from_one_address_pass_at_most_the_limit,
    bad_client_fields_are_named,
    step_up_above_the_threshold_needs_a_bound_proof_good_once,
    thirty_concurrent_confirms_with_one_proof_authorise_at_most_once,
    large_refunds_by_staff_need_a_second_finance_member_once,
    customers_see_their_own_payments_and_get_receipts_with_their_phrase
);

const PASSWORD: &str = "violet tractor anthem 1987";

async fn send(server: &TestServer, key: &str, method: Method, path: &str, body: Option<&Value>) -> (u16, Value) {
    server.call(key, method, path, body).await
}

async fn post(server: &TestServer, key: &str, path: &str, body: &Value) -> (u16, Value) {
    send(server, key, Method::POST, path, Some(body)).await
}

/// A server whose fraud rules are all off but those `configure` sets.
async fn spawn_with_rules(backend: Backend, configure: impl FnOnce(&mut FraudConfig)) -> Option<TestServer> {
    TestServer::spawn_with(backend, |config| {
        let f = &mut config.payments.fraud;
        f.max_attempts_per_customer = 0;
        f.max_attempts_per_card = 0;
        f.max_attempts_per_ip = 0;
        f.max_attempts_per_device = 0;
        f.max_cards_per_client = 0;
        f.max_cards_per_customer = 0;
        f.step_up_after_declines = 0;
        f.max_declines = 0;
        f.max_small_amounts = 0;
        configure(f);
    })
    .await
}

async fn card(server: &TestServer, number: &str) -> String {
    let body = json!({"type": "card", "value": {"number": number, "exp_month": 12, "exp_year": 2040, "cvc": "123"}});
    let (status, token) = post(server, &server.bootstrap_key, "/v1/tokens", &body).await;
    assert_eq!(status, 201, "{token}");
    token["id"].as_str().unwrap().to_owned()
}

/// An intent of `amount` `currency` on a new token of `number`, for `customer`.
async fn intent(server: &TestServer, number: &str, amount: i64, currency: &str, customer: Option<&str>) -> String {
    let token = card(server, number).await;
    let mut body = json!({"amount": amount, "currency": currency, "payment_method": token});
    if let Some(customer) = customer {
        body["customer"] = json!(customer);
    }
    let (status, created) = post(server, &server.bootstrap_key, "/v1/payment_intents", &body).await;
    assert_eq!(status, 201, "{created}");
    created["id"].as_str().unwrap().to_owned()
}

async fn confirm(server: &TestServer, id: &str, body: &Value) -> (u16, Value) {
    post(server, &server.bootstrap_key, &format!("/v1/payment_intents/{id}/confirm"), body).await
}

async fn get_intent(server: &TestServer, id: &str) -> Value {
    send(server, &server.bootstrap_key, Method::GET, &format!("/v1/payment_intents/{id}"), None).await.1
}

/// Authorisations the sandbox gateway was asked for on an intent.
async fn ledger_rows(server: &TestServer, reference: &str) -> i64 {
    ledger_count(server, reference, "authorize").await
}

/// Rows of the sandbox's ledger for an intent and operation (what the gateway was asked).
async fn ledger_count(server: &TestServer, reference: &str, operation: &str) -> i64 {
    let sql = "SELECT COUNT(*) FROM sandbox_ledger WHERE reference = $1 AND operation = $2";
    match server.backend {
        Backend::Sqlite => {
            let path = server.data_dir().join("strongroom.db");
            let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}?mode=ro", path.display())).await.unwrap();
            let n: i64 = sqlx::query_scalar(sql).bind(reference).bind(operation).fetch_one(&pool).await.unwrap();
            pool.close().await;
            n
        }
        Backend::Postgres => {
            let url = server.config.database_url.as_ref().unwrap().expose().clone();
            let pool = sqlx::PgPool::connect(&url).await.unwrap();
            let n: i64 = sqlx::query_scalar(sql).bind(reference).bind(operation).fetch_one(&pool).await.unwrap();
            pool.close().await;
            n
        }
    }
}

/// Confirms and expects success.
async fn confirm_ok(server: &TestServer, id: &str, body: &Value) {
    let (status, confirmed) = confirm(server, id, body).await;
    assert_eq!((status, confirmed["status"].as_str()), (200, Some("succeeded")), "{confirmed}");
    assert_eq!(confirmed["fraud"]["outcome"], "allow", "{confirmed}");
}

/// Confirms and expects a block with `reason`, the gateway not asked.
async fn confirm_blocked(server: &TestServer, id: &str, body: &Value, reason: &str) {
    let (status, blocked) = confirm(server, id, body).await;
    assert_eq!(status, 200, "{blocked}");
    assert_eq!(blocked["status"], "requires_payment_method", "{blocked}");
    assert_eq!(blocked["last_payment_error"]["code"], "fraud_blocked", "{blocked}");
    assert_eq!(blocked["payment_method"], Value::Null, "the card is detached, as on a decline");
    assert_eq!(blocked["fraud"]["outcome"], "block", "{blocked}");
    let reasons = blocked["fraud"]["reasons"].as_array().unwrap();
    assert!(reasons.iter().any(|r| r == reason), "{reason}: {blocked}");
    assert_eq!(ledger_rows(server, id).await, 0, "the gateway was not asked");
    assert_eq!(get_intent(server, id).await["fraud"], blocked["fraud"], "the decision is stored");
}

/// The audit log as text once it holds every needle.
async fn audit_with(server: &TestServer, needles: &[&str]) -> String {
    let mut text = String::new();
    for _ in 0..100 {
        let size = server.get_json("/v1/audit/entries?start=0&limit=1").await["tree_size"].as_u64().unwrap();
        text = String::new();
        let mut start = 0;
        while start < size {
            let page = server.get_json(&format!("/v1/audit/entries?start={start}&limit=1000")).await;
            text.push_str(&page["data"].to_string());
            start += 1000;
        }
        if needles.iter().all(|n| text.contains(n)) {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let missing: Vec<&&str> = needles.iter().filter(|n| !text.contains(*n)).collect();
    panic!("the audit log lacks {missing:?}");
}

fn client(ip: &str, device: &str) -> Value {
    json!({"client": {"ip": ip, "device": device}})
}

async fn a_normal_checkout_is_allowed_and_the_decision_is_audited(backend: Backend) {
    // Default thresholds: a few attempts of one customer with two cards never trip them.
    let Some(server) = TestServer::spawn(backend).await else { return };
    for number in ["4242424242424242", "5555555555554444", "4242424242424242"] {
        let id = intent(&server, number, 2599, "EUR", Some("shopper-1")).await;
        confirm_ok(&server, &id, &json!({"client": {"ip": "203.0.113.5", "device": "dev-a", "country": "de"}})).await;
    }
    let id = intent(&server, "4242424242424242", 2599, "EUR", None).await;
    confirm_ok(&server, &id, &json!({})).await;
    assert_eq!(get_intent(&server, &id).await["fraud"], json!({"outcome": "allow", "reasons": []}));
    audit_with(&server, &["payment_intent.fraud_checked", "allow"]).await;
    server.shutdown().await;
}

async fn customer_velocity_blocks_without_asking_the_gateway(backend: Backend) {
    let Some(server) = spawn_with_rules(backend, |f| f.max_attempts_per_customer = 2).await else { return };
    for _ in 0..2 {
        let id = intent(&server, "4242424242424242", 1000, "EUR", Some("shopper-2")).await;
        confirm_ok(&server, &id, &json!({})).await;
    }
    let other = intent(&server, "4242424242424242", 1000, "EUR", Some("shopper-3")).await;
    confirm_ok(&server, &other, &json!({})).await;
    let id = intent(&server, "4242424242424242", 1000, "EUR", Some("shopper-2")).await;
    confirm_blocked(&server, &id, &json!({}), "customer_velocity").await;
    audit_with(&server, &["block:customer_velocity", "payment_intent.fraud_blocked"]).await;
    server.shutdown().await;
}

async fn card_velocity_counts_one_card_across_tokens(backend: Backend) {
    let Some(server) = spawn_with_rules(backend, |f| f.max_attempts_per_card = 2).await else { return };
    for _ in 0..2 {
        let id = intent(&server, "5555555555554444", 1000, "EUR", None).await;
        confirm_ok(&server, &id, &json!({})).await;
    }
    let other = intent(&server, "4242424242424242", 1000, "EUR", None).await;
    confirm_ok(&server, &other, &json!({})).await;
    // A new token of the same number is the same card (its fingerprint).
    let id = intent(&server, "5555555555554444", 1000, "EUR", None).await;
    confirm_blocked(&server, &id, &json!({}), "card_velocity").await;
    server.shutdown().await;
}

async fn ip_velocity_counts_the_client_address(backend: Backend) {
    let Some(server) = spawn_with_rules(backend, |f| f.max_attempts_per_ip = 2).await else { return };
    for device in ["d1", "d2"] {
        let id = intent(&server, "4242424242424242", 1000, "EUR", None).await;
        confirm_ok(&server, &id, &client("198.51.100.1", device)).await;
    }
    let other = intent(&server, "4242424242424242", 1000, "EUR", None).await;
    confirm_ok(&server, &other, &client("198.51.100.2", "d1")).await;
    let id = intent(&server, "4242424242424242", 1000, "EUR", None).await;
    confirm_blocked(&server, &id, &client("198.51.100.1", "d3"), "ip_velocity").await;
    server.shutdown().await;
}

async fn device_velocity_counts_the_device(backend: Backend) {
    let Some(server) = spawn_with_rules(backend, |f| f.max_attempts_per_device = 2).await else { return };
    for ip in ["198.51.100.1", "198.51.100.2"] {
        let id = intent(&server, "4242424242424242", 1000, "EUR", None).await;
        confirm_ok(&server, &id, &client(ip, "phone-1")).await;
    }
    let id = intent(&server, "4242424242424242", 1000, "EUR", None).await;
    confirm_blocked(&server, &id, &client("198.51.100.3", "phone-1"), "device_velocity").await;
    server.shutdown().await;
}

const CARDS: [&str; 4] = ["4242424242424242", "5555555555554444", "4012888888881881", "4111111111111111"];

async fn card_testing_many_cards_from_one_client_is_blocked(backend: Backend) {
    let Some(server) = spawn_with_rules(backend, |f| f.max_cards_per_client = 2).await else { return };
    for number in &CARDS[..2] {
        let id = intent(&server, number, 1000, "EUR", None).await;
        confirm_ok(&server, &id, &client("192.0.2.7", "laptop")).await;
    }
    // The same two cards again pass; a third card from the address, or the device, does not.
    let id = intent(&server, CARDS[0], 1000, "EUR", None).await;
    confirm_ok(&server, &id, &client("192.0.2.7", "laptop")).await;
    let id = intent(&server, CARDS[2], 1000, "EUR", None).await;
    confirm_blocked(&server, &id, &client("192.0.2.7", "other-device"), "card_testing").await;
    let id = intent(&server, CARDS[3], 1000, "EUR", None).await;
    confirm_blocked(&server, &id, &client("192.0.2.99", "laptop"), "card_testing").await;
    server.shutdown().await;
}

async fn many_cards_on_one_customer_are_blocked(backend: Backend) {
    let Some(server) = spawn_with_rules(backend, |f| f.max_cards_per_customer = 2).await else { return };
    for number in &CARDS[..2] {
        let id = intent(&server, number, 1000, "EUR", Some("shopper-4")).await;
        confirm_ok(&server, &id, &json!({})).await;
    }
    let id = intent(&server, CARDS[2], 1000, "EUR", Some("shopper-5")).await;
    confirm_ok(&server, &id, &json!({})).await;
    let id = intent(&server, CARDS[2], 1000, "EUR", Some("shopper-4")).await;
    confirm_blocked(&server, &id, &json!({}), "many_cards_on_account").await;
    server.shutdown().await;
}

async fn declines_ask_for_step_up(backend: Backend) {
    let Some(server) = spawn_with_rules(backend, |f| f.step_up_after_declines = 2).await else { return };
    for _ in 0..2 {
        let id = intent(&server, DECLINED, 1000, "EUR", Some("shopper-6")).await;
        let (status, answer) = confirm(&server, &id, &json!({})).await;
        assert_eq!((status, answer["last_payment_error"]["code"].as_str()), (200, Some("card_declined")), "{answer}");
    }
    let other = intent(&server, "4242424242424242", 1000, "EUR", Some("shopper-7")).await;
    confirm_ok(&server, &other, &json!({})).await;
    // Two declines: the customer's next attempt needs a step-up (a shop customer cannot give one).
    let id = intent(&server, "4242424242424242", 1000, "EUR", Some("shopper-6")).await;
    let (status, problem) = confirm(&server, &id, &json!({})).await;
    assert_eq!((status, problem["code"].as_str()), (409, Some("step_up_unavailable")), "{problem}");
    let stored = get_intent(&server, &id).await;
    assert_eq!(stored["status"], "requires_confirmation");
    assert_eq!(stored["fraud"], json!({"outcome": "require_step_up", "reasons": ["recent_declines"]}));
    assert_eq!(ledger_rows(&server, &id).await, 0);
    server.shutdown().await;
}

/// An authorisation the customer failed to authenticate (3-D Secure) is a decline for the
/// rules, like one the issuer refused at once: the decline is counted against the attempt the
/// fraud checks recorded, though the answer came on a later attempt (the resumption).
async fn failed_three_d_secure_counts_as_a_decline(backend: Backend) {
    let Some(server) = spawn_with_rules(backend, |f| f.step_up_after_declines = 2).await else { return };
    for _ in 0..2 {
        let id = intent(&server, "4000002760003184", 1000, "EUR", Some("shopper-3ds")).await;
        let (status, pending) = confirm(&server, &id, &json!({})).await;
        assert_eq!((status, pending["status"].as_str()), (200, Some("requires_action")), "{pending}");
        let path = format!("/v1/payment_intents/{id}/sandbox_challenge");
        assert_eq!(post(&server, &server.bootstrap_key, &path, &json!({"outcome": "fail"})).await.0, 200);
        let (status, failed) = confirm(&server, &id, &json!({})).await;
        assert_eq!(
            (status, failed["last_payment_error"]["code"].as_str()),
            (200, Some("payment_intent_authentication_failure")),
            "{failed}"
        );
    }
    let id = intent(&server, "4242424242424242", 1000, "EUR", Some("shopper-3ds")).await;
    let (status, problem) = confirm(&server, &id, &json!({})).await;
    assert_eq!((status, problem["code"].as_str()), (409, Some("step_up_unavailable")), "{problem}");
    let stored = get_intent(&server, &id).await;
    assert_eq!(stored["fraud"], json!({"outcome": "require_step_up", "reasons": ["recent_declines"]}));
    server.shutdown().await;
}

const DECLINED: &str = "4000000000000002";

async fn declines_block(backend: Backend) {
    let Some(server) = spawn_with_rules(backend, |f| f.max_declines = 2).await else { return };
    for customer in ["shopper-8", "shopper-9"] {
        let id = intent(&server, DECLINED, 1000, "EUR", Some(customer)).await;
        let (status, answer) = confirm(&server, &id, &json!({})).await;
        assert_eq!((status, answer["last_payment_error"]["code"].as_str()), (200, Some("card_declined")), "{answer}");
    }
    // The card was declined twice: it is blocked, for any customer.
    let id = intent(&server, DECLINED, 1000, "EUR", Some("shopper-10")).await;
    confirm_blocked(&server, &id, &json!({}), "too_many_declines").await;
    server.shutdown().await;
}

async fn repeated_small_amounts_are_blocked(backend: Backend) {
    let Some(server) = spawn_with_rules(backend, |f| f.max_small_amounts = 2).await else { return };
    for _ in 0..2 {
        let id = intent(&server, "4242424242424242", 50, "EUR", None).await;
        confirm_ok(&server, &id, &json!({})).await;
    }
    // Larger amounts on the card are not small; JPY's small is one yen.
    let id = intent(&server, "4242424242424242", 101, "EUR", None).await;
    confirm_ok(&server, &id, &json!({})).await;
    let id = intent(&server, "4242424242424242", 2, "JPY", None).await;
    confirm_ok(&server, &id, &json!({})).await;
    let id = intent(&server, "4242424242424242", 100, "EUR", None).await;
    confirm_blocked(&server, &id, &json!({}), "repeated_small_amounts").await;
    server.shutdown().await;
}

async fn amount_limits_are_per_currency(backend: Backend) {
    let Some(server) = spawn_with_rules(backend, |f| {
        f.amount_limits.insert("EUR".into(), 100_000);
    })
    .await
    else {
        return;
    };
    let id = intent(&server, "4242424242424242", 100_000, "EUR", None).await;
    confirm_ok(&server, &id, &json!({})).await;
    let id = intent(&server, "4242424242424242", 100_001, "USD", None).await;
    confirm_ok(&server, &id, &json!({})).await;
    let id = intent(&server, "4242424242424242", 100_001, "EUR", None).await;
    confirm_blocked(&server, &id, &json!({}), "amount_over_limit").await;
    server.shutdown().await;
}

async fn a_card_from_another_country_needs_step_up(backend: Backend) {
    let Some(server) = spawn_with_rules(backend, |f| {
        f.issuer_countries.insert("424242".into(), "us".into());
    })
    .await
    else {
        return;
    };
    for country in [json!({}), json!({"client": {"country": "US"}})] {
        let id = intent(&server, "4242424242424242", 1000, "EUR", Some("shopper-9")).await;
        confirm_ok(&server, &id, &country).await;
    }
    let id = intent(&server, "5555555555554444", 1000, "EUR", Some("shopper-9")).await;
    confirm_ok(&server, &id, &json!({"client": {"country": "DE"}})).await;
    let id = intent(&server, "4242424242424242", 1000, "EUR", Some("shopper-9")).await;
    let (status, problem) = confirm(&server, &id, &json!({"client": {"country": "de"}})).await;
    assert_eq!((status, problem["code"].as_str()), (409, Some("step_up_unavailable")), "{problem}");
    assert_eq!(get_intent(&server, &id).await["fraud"]["reasons"], json!(["country_mismatch"]));
    server.shutdown().await;
}

async fn the_window_passes(backend: Backend) {
    let Some(server) = spawn_with_rules(backend, |f| {
        f.max_attempts_per_card = 1;
        f.window = Duration::from_secs(600);
    })
    .await
    else {
        return;
    };
    let id = intent(&server, "4242424242424242", 1000, "EUR", None).await;
    confirm_ok(&server, &id, &json!({})).await;
    let id = intent(&server, "4242424242424242", 1000, "EUR", None).await;
    confirm_blocked(&server, &id, &json!({}), "card_velocity").await;
    server.clock.advance(Duration::from_secs(601));
    let id = intent(&server, "4242424242424242", 1000, "EUR", None).await;
    confirm_ok(&server, &id, &json!({})).await;
    server.shutdown().await;
}

async fn old_signals_are_purged_after_the_window(backend: Backend) {
    let Some(server) = spawn_with_rules(backend, |f| {
        f.max_attempts_per_card = 1;
        f.window = Duration::from_secs(600);
    })
    .await
    else {
        return;
    };
    let id = intent(&server, "4242424242424242", 1000, "EUR", Some("shopper-11")).await;
    confirm_ok(&server, &id, &client("198.51.100.9", "d9")).await;
    let payments = &server.app().state.payments;
    assert_eq!(payments.purge_fraud_signals().await.unwrap(), 0, "within the window: kept");
    server.clock.advance(Duration::from_secs(601));
    assert_eq!(payments.purge_fraud_signals().await.unwrap(), 4, "customer, card, address and device");
    assert_eq!(payments.purge_fraud_signals().await.unwrap(), 0);
    server.shutdown().await;
}

async fn thirty_concurrent_confirms_from_one_address_pass_at_most_the_limit(backend: Backend) {
    let Some(server) = spawn_with_rules(backend, |f| f.max_attempts_per_ip = 5).await else { return };
    let mut ids = Vec::new();
    for _ in 0..30 {
        ids.push(intent(&server, "4242424242424242", 1000, "EUR", None).await);
    }
    let server = std::sync::Arc::new(server);
    let racers: Vec<_> = ids
        .iter()
        .map(|id| {
            let server = server.clone();
            let id = id.clone();
            tokio::spawn(async move { confirm(&server, &id, &client("203.0.113.77", "same")).await })
        })
        .collect();
    let mut passed = 0;
    for racer in racers {
        let (status, answer) = racer.await.unwrap();
        assert_eq!(status, 200, "{answer}");
        match answer["status"].as_str() {
            Some("succeeded") => passed += 1,
            Some("requires_payment_method") => assert_eq!(answer["last_payment_error"]["code"], "fraud_blocked"),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(passed, 5, "a limit of 5 lets exactly 5 through");
    let mut authorised = 0;
    for id in &ids {
        authorised += ledger_rows(&server, id).await;
    }
    assert_eq!(authorised, passed, "the gateway saw only the attempts that passed");
    // Everyone after the race is blocked.
    let id = intent(&server, "4242424242424242", 1000, "EUR", None).await;
    confirm_blocked(&server, &id, &client("203.0.113.77", "same"), "ip_velocity").await;
}

/// The same race through `POST /v1/payment_intents` with `confirm: true`, where the intent, its
/// signals, the decision and the claim are one transaction: still exactly the limit passes, the
/// blocked ones and their decisions are stored and audited, and only the passed ones reached the
/// gateway.
async fn thirty_concurrent_creates_with_confirm_from_one_address_pass_at_most_the_limit(backend: Backend) {
    let Some(server) = spawn_with_rules(backend, |f| f.max_attempts_per_ip = 5).await else { return };
    let mut tokens = Vec::new();
    for _ in 0..30 {
        tokens.push(card(&server, "4242424242424242").await);
    }
    let server = std::sync::Arc::new(server);
    let racers: Vec<_> = tokens
        .iter()
        .map(|token| {
            let server = server.clone();
            let body = json!({
                "amount": 1000, "currency": "EUR", "payment_method": token, "confirm": true,
                "client": {"ip": "203.0.113.78", "device": "same"},
            });
            tokio::spawn(async move { post(&server, &server.bootstrap_key, "/v1/payment_intents", &body).await })
        })
        .collect();
    let (mut passed, mut ids) = (0, Vec::new());
    for racer in racers {
        let (status, answer) = racer.await.unwrap();
        assert_eq!(status, 201, "{answer}");
        let id = answer["id"].as_str().unwrap().to_owned();
        match answer["status"].as_str() {
            Some("succeeded") => {
                passed += 1;
                assert_eq!(answer["fraud"]["outcome"], "allow", "{answer}");
                assert_eq!(ledger_rows(&server, &id).await, 1, "{answer}");
            }
            Some("requires_payment_method") => {
                assert_eq!(answer["last_payment_error"]["code"], "fraud_blocked", "{answer}");
                assert_eq!(answer["fraud"]["outcome"], "block", "{answer}");
                assert_eq!(ledger_rows(&server, &id).await, 0, "the gateway was not asked");
            }
            other => panic!("unexpected {other:?}: {answer}"),
        }
        let stored = get_intent(&server, &id).await;
        assert_eq!(
            (stored["status"].clone(), stored["fraud"].clone()),
            (answer["status"].clone(), answer["fraud"].clone())
        );
        ids.push(id);
    }
    assert_eq!(passed, 5, "a limit of 5 lets exactly 5 through");
    let needles: Vec<String> = ids.iter().map(|id| format!("\"{id}\"")).collect();
    let needles: Vec<&str> = needles.iter().map(String::as_str).collect();
    let audit = audit_with(&server, &needles).await;
    for action in [
        "payment_intent.created",
        "payment_intent.fraud_checked",
        "payment_intent.confirmed",
        "payment_intent.fraud_blocked",
    ] {
        assert!(audit.contains(action), "{action}");
    }
    let id = intent(&server, "4242424242424242", 1000, "EUR", None).await;
    confirm_blocked(&server, &id, &client("203.0.113.78", "same"), "ip_velocity").await;
}

async fn bad_client_fields_are_named(backend: Backend) {
    let Some(server) = TestServer::spawn(backend).await else { return };
    let id = intent(&server, "4242424242424242", 1000, "EUR", None).await;
    for (client, pointer) in [
        (json!({"ip": "300.1.1.1"}), "/client/ip"),
        (json!({"device": ""}), "/client/device"),
        (json!({"country": "XX"}), "/client/country"),
    ] {
        let (status, problem) = confirm(&server, &id, &json!({"client": client})).await;
        assert_eq!(status, 422, "{problem}");
        assert_eq!(problem["errors"][0]["pointer"], pointer, "{problem}");
    }
    let (status, problem) = confirm(&server, &id, &json!({"client": {"device": "4242424242424242"}})).await;
    assert_eq!((status, problem["code"].as_str()), (422, Some("card_number_in_free_text")), "{problem}");
    assert!(!problem.to_string().contains("4242424242424242"), "never echoed");
    assert_eq!(get_intent(&server, &id).await["status"], "requires_confirmation", "nothing happened");
    server.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Step-up

/// Registers a customer with TOTP; answers the customer id, a session token and the TOTP seed.
async fn customer_with_totp(server: &TestServer, python: &str, email: &str) -> (String, String, String) {
    let (status, body) =
        post(server, &server.bootstrap_key, "/v1/identity/customers", &json!({"email": email, "password": PASSWORD}))
            .await;
    assert_eq!(status, 202, "{body}");
    let customer = body["customer"].as_str().unwrap().to_owned();
    server.verify_customer_email(email).await;
    let login = json!({"email": email, "password": PASSWORD, "client": {"ip": "198.51.100.7"}});
    let (status, body) = post(server, &server.bootstrap_key, "/v1/identity/login", &login).await;
    assert_eq!(status, 200, "{body}");
    let token = body["session"]["token"].as_str().unwrap().to_owned();
    let (status, enrolment) = send(server, &token, Method::POST, "/v1/me/totp", None).await;
    assert_eq!(status, 201, "{enrolment}");
    let secret = enrolment["secret"].as_str().unwrap().to_owned();
    let code = pyotp_code(python, server, &secret);
    let (status, confirmed) =
        send(server, &token, Method::POST, "/v1/me/totp/confirm", Some(&json!({"code": code}))).await;
    assert_eq!(status, 200, "{confirmed}");
    (customer, token, secret)
}

fn pyotp_code(python: &str, server: &TestServer, secret: &str) -> String {
    use strongroom_types::Clock;
    let at = server.clock.now().unix_millis() / 1000;
    let script = "import sys, pyotp; print(pyotp.TOTP(sys.argv[1]).at(int(sys.argv[2])))";
    let output = std::process::Command::new(python).args(["-c", script, secret, &at.to_string()]).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

/// The customer's step-up for `step_up` (`{purpose, binding}`): answers the proof and the renewed
/// session token.
async fn step_up(server: &TestServer, python: &str, token: &str, secret: &str, step_up: &Value) -> (String, String) {
    let (status, challenge) = send(server, token, Method::POST, "/v1/me/step-up", Some(step_up)).await;
    assert_eq!(status, 201, "{challenge}");
    server.clock.advance(Duration::from_secs(30));
    let code = pyotp_code(python, server, secret);
    let path = format!("/v1/me/step-up/{}/verify", challenge["challenge"].as_str().unwrap());
    let (status, proof) = send(server, token, Method::POST, &path, Some(&json!({"code": code}))).await;
    assert_eq!(status, 200, "{proof}");
    (proof["proof"].as_str().unwrap().to_owned(), proof["session"]["token"].as_str().unwrap().to_owned())
}

async fn step_up_above_the_threshold_needs_a_bound_proof_good_once(backend: Backend) {
    let Some(python) = test_python() else { return };
    let Some(server) = TestServer::spawn_with(backend, |config| {
        config.payments.step_up_above.insert("EUR".into(), 50_000);
    })
    .await
    else {
        return;
    };
    let (customer, token, secret) = customer_with_totp(&server, &python, "pay@example.com").await;
    // At the threshold: no step-up.
    let id = intent(&server, "4242424242424242", 50_000, "EUR", Some(&customer)).await;
    confirm_ok(&server, &id, &json!({})).await;
    // Above: 403 naming the purpose and binding; the gateway is not asked.
    let id = intent(&server, "4242424242424242", 50_001, "EUR", Some(&customer)).await;
    let (status, problem) = confirm(&server, &id, &json!({})).await;
    assert_eq!((status, problem["code"].as_str()), (403, Some("step_up_required")), "{problem}");
    let expected = json!({"purpose": "payment", "binding": {
        "amount": 50_001, "currency": "eur", "payee": server.merchant_id, "payment_intent": id}});
    assert_eq!(problem["step_up"], expected, "{problem}");
    assert_eq!(ledger_rows(&server, &id).await, 0);

    // A proof for another amount, and one for another intent: refused (and spent).
    let mut other_amount = expected.clone();
    other_amount["binding"]["amount"] = json!(50_000);
    let (proof, token) = step_up(&server, &python, &token, &secret, &other_amount).await;
    let (status, problem) = confirm(&server, &id, &json!({"step_up_proof": proof})).await;
    assert_eq!((status, problem["code"].as_str()), (422, Some("step_up_invalid")), "{problem}");
    assert_eq!(problem["errors"][0]["pointer"], "/step_up_proof");
    let other_id = intent(&server, "4242424242424242", 50_001, "EUR", Some(&customer)).await;
    let mut other_intent = expected.clone();
    other_intent["binding"]["payment_intent"] = json!(other_id);
    let (proof, token) = step_up(&server, &python, &token, &secret, &other_intent).await;
    let (status, _) = confirm(&server, &id, &json!({"step_up_proof": proof})).await;
    assert_eq!(status, 422);
    // The right proof of another customer: refused.
    let (_, other_token, other_secret) = customer_with_totp(&server, &python, "other@example.com").await;
    let (proof, _) = step_up(&server, &python, &other_token, &other_secret, &expected).await;
    let (status, _) = confirm(&server, &id, &json!({"step_up_proof": proof})).await;
    assert_eq!(status, 422, "another customer's proof");
    assert_eq!(ledger_rows(&server, &id).await, 0);

    // The right proof passes once.
    let (proof, _) = step_up(&server, &python, &token, &secret, &expected).await;
    let (status, confirmed) = confirm(&server, &id, &json!({"step_up_proof": proof})).await;
    assert_eq!((status, confirmed["status"].as_str()), (200, Some("succeeded")), "{confirmed}");
    assert_eq!(ledger_rows(&server, &id).await, 1);
    // Reused on the other intent (same amount): refused.
    let (status, problem) = confirm(&server, &other_id, &json!({"step_up_proof": proof})).await;
    assert_eq!((status, problem["code"].as_str()), (422, Some("step_up_invalid")), "{problem}");

    // A shop customer reference (not cus_…) cannot step up.
    let id = intent(&server, "4242424242424242", 60_000, "EUR", Some("shop-ref-1")).await;
    let (status, problem) = confirm(&server, &id, &json!({})).await;
    assert_eq!((status, problem["code"].as_str()), (409, Some("step_up_unavailable")), "{problem}");
    audit_with(&server, &["customer.step_up_redeemed", "wrong_binding", "wrong_customer"]).await;
    server.shutdown().await;
}

async fn thirty_concurrent_confirms_with_one_proof_authorise_at_most_once(backend: Backend) {
    let Some(python) = test_python() else { return };
    let Some(server) = TestServer::spawn_with(backend, |config| {
        config.payments.step_up_above.insert("eur".into(), 100);
    })
    .await
    else {
        return;
    };
    let (customer, token, secret) = customer_with_totp(&server, &python, "race@example.com").await;
    let id = intent(&server, "4242424242424242", 4200, "EUR", Some(&customer)).await;
    let (status, problem) = confirm(&server, &id, &json!({})).await;
    assert_eq!(status, 403, "{problem}");
    let (proof, _) = step_up(&server, &python, &token, &secret, &problem["step_up"]).await;
    let server = std::sync::Arc::new(server);
    let racers: Vec<_> = (0..30)
        .map(|_| {
            let server = server.clone();
            let id = id.clone();
            let proof = proof.clone();
            tokio::spawn(async move { confirm(&server, &id, &json!({"step_up_proof": proof})).await })
        })
        .collect();
    let mut succeeded = 0;
    for racer in racers {
        let (status, answer) = racer.await.unwrap();
        match status {
            200 => {
                assert_eq!(answer["status"], "succeeded", "{answer}");
                succeeded += 1;
            }
            409 | 422 => {}
            other => panic!("unexpected {other}: {answer}"),
        }
    }
    assert_eq!(succeeded, 1, "one proof, one payment");
    assert_eq!(ledger_rows(&server, &id).await, 1, "authorised once at the gateway");
}

// ---------------------------------------------------------------------------------------------
// Four-eyes refunds

/// A staff member with `roles` who accepted the operator's invitation and enrolled TOTP: the
/// session token.
async fn staff_member(server: &TestServer, python: &str, email: &str, roles: &[&str]) -> String {
    let merchant = MerchantId::parse(&server.merchant_id).unwrap();
    let roles: Vec<String> = roles.iter().map(|r| (*r).to_owned()).collect();
    let invitation = server.app().state.staff.invite(&merchant, email, &roles, None, &Client::default()).await.unwrap();
    let public = |path: &str, body: Value| {
        let request = server.client.post(server.url(path)).json(&body);
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.unwrap())
        }
    };
    let accept = json!({"token": invitation.token.expose(), "password": PASSWORD});
    let (status, body) = public("/v1/staff/invitation/accept", accept).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = public("/v1/staff/login", json!({"email": email, "password": PASSWORD})).await;
    assert_eq!(status, 200, "{body}");
    let challenge = body["challenge"].as_str().unwrap().to_owned();
    let (status, enrolment) = public("/v1/staff/login/totp", json!({"challenge": challenge})).await;
    assert_eq!(status, 200, "{enrolment}");
    let code = pyotp_code(python, server, enrolment["secret"].as_str().unwrap());
    let (status, session) = public("/v1/staff/login/totp/confirm", json!({"challenge": challenge, "code": code})).await;
    assert_eq!(status, 200, "{session}");
    session["session"]["token"].as_str().unwrap().to_owned()
}

async fn large_refunds_by_staff_need_a_second_finance_member_once(backend: Backend) {
    let Some(python) = test_python() else { return };
    let Some(server) = TestServer::spawn_with(backend, |config| {
        config.payments.refund_approval_above.insert("eur".into(), 10_000);
    })
    .await
    else {
        return;
    };
    let ann = staff_member(&server, &python, "ann@shop.example", &["finance"]).await;
    let ben = staff_member(&server, &python, "ben@shop.example", &["finance"]).await;
    let sue = staff_member(&server, &python, "sue@shop.example", &["support"]).await;
    let id = intent(&server, "4242424242424242", 50_000, "EUR", None).await;
    confirm_ok(&server, &id, &json!({})).await;
    let refund = |amount: i64, approval: Option<&str>| json!({"payment_intent": id, "amount": amount, "reason": "requested_by_customer", "approval_id": approval});

    // At the threshold: no approval needed.
    let (status, body) = post(&server, &ann, "/v1/refunds", &refund(10_000, None)).await;
    assert_eq!((status, body["status"].as_str()), (201, Some("succeeded")), "{body}");
    // Above: a request is opened and nothing is refunded.
    let (status, asked) = post(&server, &ann, "/v1/refunds", &refund(20_000, None)).await;
    assert_eq!((status, asked["code"].as_str()), (403, Some("approval_required")), "{asked}");
    let approval = asked["approval_id"].as_str().unwrap().to_owned();
    assert_eq!(get_intent(&server, &id).await["amount_refunded"], 10_000);
    assert_eq!(ledger_count(&server, &id, "refund").await, 1);
    // Not by the requester, not by someone without payments:refund; then by a second finance member.
    let approve = format!("/v1/approvals/{approval}/approve");
    assert_eq!(send(&server, &ann, Method::POST, &approve, None).await.0, 403, "own request");
    assert_eq!(send(&server, &sue, Method::POST, &approve, None).await.0, 403, "support cannot refund");
    let (status, target) = send(&server, &ben, Method::GET, &format!("/v1/approvals/{approval}"), None).await;
    assert_eq!(status, 200, "{target}");
    assert_eq!(target["target"], format!("{id}:20000:eur"), "bound to intent, amount and currency");
    let (status, decided) = send(&server, &ben, Method::POST, &approve, None).await;
    assert_eq!((status, decided["status"].as_str()), (200, Some("approved")), "{decided}");
    // The approval serves exactly that refund, for its requester.
    let (status, body) = post(&server, &ann, "/v1/refunds", &refund(20_001, Some(&approval))).await;
    assert_eq!((status, body["code"].as_str()), (422, Some("approval_not_usable")), "{body}");
    let (status, _) = post(&server, &ben, "/v1/refunds", &refund(20_000, Some(&approval))).await;
    assert_eq!(status, 422, "not Ben's request");

    // Thirty concurrent re-submits: one refund.
    let server = std::sync::Arc::new(server);
    let racers: Vec<_> = (0..30)
        .map(|_| {
            let server = server.clone();
            let ann = ann.clone();
            let body = refund(20_000, Some(&approval));
            tokio::spawn(async move { post(&server, &ann, "/v1/refunds", &body).await })
        })
        .collect();
    let mut made = 0;
    for racer in racers {
        let (status, body) = racer.await.unwrap();
        match status {
            201 => made += 1,
            422 => assert_eq!(body["code"], "approval_not_usable", "{body}"),
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!(made, 1, "an approval refunds once");
    assert_eq!(get_intent(&server, &id).await["amount_refunded"], 30_000);
    assert_eq!(ledger_count(&server, &id, "refund").await, 2, "the gateway refunded once more");
    // The shop's backend (an API key) is not a person: its scope is the control.
    let (status, body) = post(&server, &server.bootstrap_key, "/v1/refunds", &refund(20_000, None)).await;
    assert_eq!(status, 201, "{body}");
    audit_with(&server, &["approval.requested", "approval.used", "payments.refund"]).await;
}

// ---------------------------------------------------------------------------------------------
// The customer's own payments and receipts

/// A registered, verified, signed-in customer: (customer id, session token).
async fn signed_in_customer(server: &TestServer, email: &str) -> (String, String) {
    server.signed_in_customer(email, PASSWORD).await
}

/// Receipt mails to `email` in the development mailbox once there are `count` (waits up to 10 s).
async fn receipts(server: &TestServer, email: &str, count: usize) -> Vec<String> {
    let dir = server.data_dir().join("mail");
    let mut found = Vec::new();
    for _ in 0..100 {
        found = std::fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with("-payment_receipt.eml"))
            .map(|e| std::fs::read_to_string(e.path()).unwrap().replace("=\r\n", "").replace("=3D", "="))
            .filter(|text| text.contains(&format!("To: {email}")))
            .collect();
        if found.len() >= count {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{} receipts for {email}, not {count}", found.len());
}

async fn customers_see_their_own_payments_and_get_receipts_with_their_phrase(backend: Backend) {
    let Some(server) = TestServer::spawn(backend).await else { return };
    let (amy, amy_token) = signed_in_customer(&server, "amy@example.com").await;
    let (bo, bo_token) = signed_in_customer(&server, "bo@example.com").await;
    let phrase = json!({"phrase": "blue heron at dawn"});
    assert_eq!(send(&server, &amy_token, Method::PUT, "/v1/me/anti-phishing-phrase", Some(&phrase)).await.0, 204);

    // Amy: one automatic capture, one manual capture, one decline; Bo: one payment.
    let paid = intent(&server, "4242424242424242", 4200, "EUR", Some(&amy)).await;
    confirm_ok(&server, &paid, &json!({})).await;
    let token = card(&server, "5555555555554444").await;
    let body = json!({"amount": 1500, "currency": "EUR", "payment_method": token, "customer": amy,
        "capture_method": "manual", "metadata": {"internal": "note"}});
    let (status, manual) = post(&server, &server.bootstrap_key, "/v1/payment_intents", &body).await;
    assert_eq!(status, 201, "{manual}");
    let manual = manual["id"].as_str().unwrap().to_owned();
    let (status, _) = confirm(&server, &manual, &json!({})).await;
    assert_eq!(status, 200);
    let (status, captured) =
        post(&server, &server.bootstrap_key, &format!("/v1/payment_intents/{manual}/capture"), &json!({})).await;
    assert_eq!((status, captured["status"].as_str()), (200, Some("succeeded")), "{captured}");
    let declined = intent(&server, "4000000000000002", 900, "EUR", Some(&amy)).await;
    let (_, answer) = confirm(&server, &declined, &json!({})).await;
    assert_eq!(answer["status"], "requires_payment_method");
    let bos = intent(&server, "4242424242424242", 700, "EUR", Some(&bo)).await;
    confirm_ok(&server, &bos, &json!({})).await;

    // Each sees their own, newest first, without the shop's metadata or the fraud decision.
    let (status, list) = send(&server, &amy_token, Method::GET, "/v1/me/payments", None).await;
    assert_eq!(status, 200, "{list}");
    let ids: Vec<&str> = list["data"].as_array().unwrap().iter().map(|i| i["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 3, "{list}");
    for id in [&paid, &manual, &declined] {
        assert!(ids.contains(&id.as_str()), "{id}: {list}");
    }
    assert!(!ids.contains(&bos.as_str()));
    for item in list["data"].as_array().unwrap() {
        assert_eq!(item["metadata"], Value::Null);
        assert_eq!(item["fraud"], Value::Null);
        assert_eq!(item["customer"], amy.as_str());
    }
    let (_, page) = send(&server, &amy_token, Method::GET, "/v1/me/payments?limit=1", None).await;
    assert_eq!((page["data"].as_array().unwrap().len(), page["has_more"].as_bool()), (1, Some(true)));
    let (_, theirs) = send(&server, &bo_token, Method::GET, "/v1/me/payments", None).await;
    assert_eq!(theirs["data"].as_array().unwrap().len(), 1);
    assert_eq!(theirs["data"][0]["id"], bos.as_str());
    let (status, _) = send(&server, &server.bootstrap_key, Method::GET, "/v1/me/payments", None).await;
    assert_eq!(status, 401, "an API key is not a customer");
    let (status, _) = send(&server, &amy_token, Method::GET, "/v1/me/payments?starting_after=nope", None).await;
    assert_eq!(status, 422);

    // A receipt per succeeded payment (not the decline), with the phrase and no card number.
    let mails = receipts(&server, "amy@example.com", 2).await;
    assert_eq!(mails.len(), 2, "one receipt per payment");
    let all = mails.join("\n");
    assert!(all.contains("blue heron at dawn"), "the phrase is in every receipt");
    assert!(all.contains("42.00 EUR") && all.contains("15.00 EUR"), "{all}");
    assert!(all.contains(&paid) && all.contains(&manual));
    assert!(!all.contains(&declined));
    assert!(!all.contains("4242424242424242") && !all.contains("5555555555554444"));
    let bo_mails = receipts(&server, "bo@example.com", 1).await;
    assert!(!bo_mails[0].contains("blue heron"));
    server.shutdown().await;
}
