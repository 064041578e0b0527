//! Black-box tests of the vault on a real server, on SQLite and PostgreSQL: tokenization of every
//! kind, errors, reveal by scope with its audit entry, dedupe under concurrency, TTLs, deletion,
//! crypto-shredding, canary tokens, tampering, rate limits, and key rotation under load.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code fails loudly")]

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use strongroom_domain::ports::VaultRepository;
use strongroom_testkit::{Backend, TestServer, captured_logs, on_both_backends};

on_both_backends!(
    tokenize_every_kind,
    bad_input_is_named_never_echoed,
    reveal_follows_scopes_and_is_audited,
    dedupe_gives_one_token_under_concurrency,
    search_finds_without_revealing,
    expiry_and_purge,
    delete_and_erase,
    canary_tokens_raise_security_events,
    tampered_ciphertext_is_an_integrity_error,
    reveal_rate_limit,
    batch_items_succeed_or_fail_alone,
    pan_preserving_tokens,
    rotation_under_load_keeps_every_value,
    cvc_lives_in_memory_only,
    fingerprint_rotation_keeps_search_and_dedupe,
    card_numbers_stay_out_of_free_text,
    short_cards_show_their_last4_only,
);

const VISA: &str = "4242424242424242";

fn card(number: &str) -> Value {
    json!({"type": "card", "value": {"number": number, "exp_month": 12, "exp_year": 2031, "cvc": "123"}})
}

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

async fn tokenize(server: &TestServer, body: &Value) -> Value {
    let (status, token) = send(server, &server.bootstrap_key, Method::POST, "/v1/tokens", Some(body)).await;
    assert_eq!(status, 201, "{token}");
    token
}

async fn reveal(server: &TestServer, key: &str, id: &str, view: &str) -> (u16, Value) {
    let body = json!({"view": view, "reason": "test_run"});
    send(server, key, Method::POST, &format!("/v1/tokens/{id}/reveal"), Some(&body)).await
}

async fn tokenize_every_kind(backend: Backend) {
    let Some(server) = TestServer::spawn(backend).await else { return };
    let token = tokenize(&server, &card(VISA)).await;
    let id = token["id"].as_str().unwrap();
    assert!(id.starts_with("tok_"));
    assert_eq!(token["type"], "card");
    assert_eq!(token["display"]["brand"], "visa");
    assert_eq!(token["display"]["first6"], "424242");
    assert_eq!(token["display"]["last4"], "4242");
    assert_eq!(token["display"]["exp_year"], 2031);
    assert!(token["display"]["fingerprint"].as_str().unwrap().starts_with("fp_"));
    assert!(!token.to_string().contains(VISA));
    let read = server.get_json(&format!("/v1/tokens/{id}")).await;
    assert_eq!(read["display"]["last4"], "4242");
    assert!(!read.to_string().contains(VISA));

    let cases = [
        (json!({"type": "email", "value": "Jane.Doe@Example.com"}), "display", json!({"masked": "J***@example.com"})),
        (
            json!({"type": "phone", "value": "+44 20 7946 0958"}),
            "display",
            json!({"masked": "+********0958", "last4": "0958"}),
        ),
        (
            json!({"type": "bank_account", "value": "DE89 3704 0044 0532 0130 00"}),
            "display",
            json!({"country": "DE", "last4": "3000"}),
        ),
        (json!({"type": "name", "value": "Jane Doe"}), "display", json!({"masked": "J*** D***"})),
        (
            json!({"type": "address", "value": {"line1": "1 High St", "city": "London", "postal_code": "N1 1AA", "country": "gb"}}),
            "display",
            json!({"country": "GB"}),
        ),
        (
            json!({"type": "json", "value": {"a": 1, "b": [2]}, "metadata": {"order": "o_1"}}),
            "display",
            json!({"fields": 2}),
        ),
    ];
    for (body, field, expected) in cases {
        let token = tokenize(&server, &body).await;
        for (key, value) in expected.as_object().unwrap() {
            assert_eq!(&token[field][key], value, "{body} → {token}");
        }
        let (status, plain) = reveal(&server, &server.bootstrap_key, token["id"].as_str().unwrap(), "plain").await;
        assert_eq!(status, 200, "{plain}");
        assert_eq!(plain["view"], "plain");
        assert_eq!(plain["value"], body["value"], "a reveal returns the value as given");
    }
    // Spacing and case are kept, and equal values still share one fingerprint.
    for (kind, given, same) in [
        ("email", "Jane.Doe@Example.com", "jane.doe@example.com"),
        ("phone", "+49 (30) 1234-0958", "+493012340958"),
        ("bank_account", "de89 3704 0044 0532 0130 00", "DE89370400440532013000"),
    ] {
        let token = tokenize(&server, &json!({"type": kind, "value": given})).await;
        let other = tokenize(&server, &json!({"type": kind, "value": same})).await;
        assert_eq!(token["display"]["fingerprint"], other["display"]["fingerprint"], "{kind}");
        let (_, plain) = reveal(&server, &server.bootstrap_key, token["id"].as_str().unwrap(), "plain").await;
        assert_eq!(plain["value"], given, "{kind}");
    }
    let (_, plain) = reveal(&server, &server.bootstrap_key, id, "plain").await;
    assert_eq!(plain["value"]["number"], VISA);
    assert_eq!(plain["value"]["exp_month"], 12);
    assert!(plain["value"].get("cvc").is_none(), "a CVC is never revealed");
    server.shutdown().await;
}

async fn bad_input_is_named_never_echoed(backend: Backend) {
    let Some(server) = TestServer::spawn(backend).await else { return };
    let key = server.bootstrap_key.clone();
    let cases = [
        (card("4242424242424241"), 422, "invalid_card_number", "/value/number"),
        (card("1234"), 422, "invalid_card_number", "/value/number"),
        (
            json!({"type": "card", "value": {"number": VISA, "exp_month": 1, "exp_year": 2020}}),
            422,
            "card_expired",
            "/value/exp_year",
        ),
        (
            json!({"type": "card", "value": {"number": VISA, "exp_month": 13, "exp_year": 2031}}),
            422,
            "invalid_expiry",
            "/value/exp_month",
        ),
        (
            json!({"type": "card", "value": {"number": "378282246310005", "exp_month": 1, "exp_year": 2031, "cvc": "123"}}),
            422,
            "invalid_cvc",
            "/value/cvc",
        ),
        (json!({"type": "bank_account", "value": "DE89370400440532013001"}), 422, "invalid_iban", "/value"),
        (json!({"type": "email", "value": "not an email 4242424242424242"}), 422, "invalid_email", "/value"),
        (json!({"type": "phone", "value": "0207946"}), 422, "invalid_phone", "/value"),
        (
            json!({"type": "address", "value": {"line1": "1 High St", "city": "Nowhere", "country": "ZZ"}}),
            422,
            "invalid_address",
            "/value/country",
        ),
        (json!({"type": "ssn", "value": "x"}), 422, "validation_failed", "/type"),
        (json!({"type": "json", "value": {"blob": "x".repeat(5000)}}), 422, "value_too_large", "/value"),
        (
            json!({"type": "email", "value": "a@example.com", "customer": "jane@example.com"}),
            422,
            "validation_failed",
            "/customer",
        ),
        (json!({"type": "email", "value": "a@example.com", "ttl": 5}), 422, "validation_failed", "/ttl"),
        (
            json!({"type": "email", "value": "a@example.com", "format": "pan_preserving"}),
            422,
            "validation_failed",
            "/format",
        ),
        (json!({"type": "email", "value": "a@example.com", "colour": "red"}), 422, "validation_failed", "/colour"),
    ];
    for (body, status, code, pointer) in cases {
        let (got, problem) = send(&server, &key, Method::POST, "/v1/tokens", Some(&body)).await;
        assert_eq!((got, problem["code"].as_str()), (status, Some(code)), "{body} → {problem}");
        let pointers: Vec<&str> =
            problem["errors"].as_array().unwrap().iter().map(|e| e["pointer"].as_str().unwrap()).collect();
        assert!(pointers.contains(&pointer), "{body} → {problem}");
        let text = problem.to_string();
        for secret in ["4242424242424241", "42424242", "DE89370400440532013001", "jane@example.com", "0207946"] {
            assert!(!text.contains(secret), "{text}");
        }
    }
    // Too many batch items.
    let items: Vec<Value> = (0..1001).map(|_| json!({"type": "name", "value": "x"})).collect();
    let (got, problem) = send(&server, &key, Method::POST, "/v1/tokens/batch", Some(&json!({"items": items}))).await;
    assert_eq!((got, problem["code"].as_str()), (413, Some("payload_too_large")));

    // Unknown and another merchant's tokens answer the same 404.
    let other = other_merchant_key(&server).await;
    let mine = tokenize(&server, &card(VISA)).await;
    let id = mine["id"].as_str().unwrap();
    for (caller, path) in [
        (&key, "/v1/tokens/tok_aaaaaaaaaaaaaaaaaaaaaaaaaa".to_owned()),
        (&key, "/v1/tokens/not-a-token".to_owned()),
        (&other, format!("/v1/tokens/{id}")),
    ] {
        let (status, problem) = send(&server, caller, Method::GET, &path, None).await;
        assert_eq!((status, problem["code"].as_str()), (404, Some("not_found")), "{path}");
        assert_eq!(problem["detail"], "no such object");
    }
    let (status, _) = reveal(&server, &other, id, "plain").await;
    assert_eq!(status, 404);
    let (status, _) = send(&server, &other, Method::DELETE, &format!("/v1/tokens/{id}"), None).await;
    assert_eq!(status, 404);
    let (status, _) = send(&server, &key, Method::GET, &format!("/v1/tokens/{id}"), None).await;
    assert_eq!(status, 200, "still there for its owner");
    server.shutdown().await;
}

/// A key of a second merchant (created directly in the database; the API has one merchant).
async fn other_merchant_key(server: &TestServer) -> String {
    let other = "mer_bbbbbbbbbbbbbbbbbbbbbbbbbb";
    server
        .app()
        .store
        .execute_admin(&format!("INSERT INTO merchants (id, name, created_at) VALUES ('{other}', 'other', 0)"))
        .await
        .unwrap();
    let merchant = strongroom_domain::merchants::MerchantId::parse(other).unwrap();
    let input = strongroom_domain::api_keys::NewApiKey {
        name: "other".into(),
        scopes: ["vault:write", "vault:read", "vault:reveal:card", "vault:reveal:pii", "privacy:erase"]
            .map(String::from)
            .to_vec(),
        mode: None,
        expires_at: None,
    };
    let created = server.app().state.api_keys.create(&merchant, input, None).await.unwrap();
    created.secret.expose().clone()
}

async fn audit_entry(server: &TestServer, index: u64) -> Value {
    let page = server.get_json(&format!("/v1/audit/entries?start={index}&limit=1")).await;
    page["data"][0]["entry"].clone()
}

async fn reveal_follows_scopes_and_is_audited(backend: Backend) {
    let Some(server) = TestServer::spawn(backend).await else { return };
    let card_token = tokenize(&server, &card(VISA)).await["id"].as_str().unwrap().to_owned();
    let email_token = tokenize(&server, &json!({"type": "email", "value": "jane@example.com"})).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (_, masked_only) = server.create_key("masked", &["vault:reveal:masked"]).await;
    let (_, pii) = server.create_key("pii", &["vault:reveal:pii"]).await;
    let (_, cards) = server.create_key("cards", &["vault:reveal:card"]).await;
    let (_, none) = server.create_key("none", &["vault:read"]).await;

    let (status, masked) = reveal(&server, &masked_only, &card_token, "masked").await;
    assert_eq!(status, 200, "{masked}");
    assert_eq!(masked["value"]["number"], "424242******4242");
    let (status, problem) = reveal(&server, &masked_only, &card_token, "plain").await;
    assert_eq!((status, problem["code"].as_str()), (403, Some("insufficient_scope")));
    let (status, _) = reveal(&server, &none, &card_token, "masked").await;
    assert_eq!(status, 403);
    let (status, problem) = reveal(&server, &pii, &card_token, "plain").await;
    assert_eq!(status, 403, "pii does not cover cards: {problem}");
    let (status, plain) = reveal(&server, &pii, &email_token, "plain").await;
    assert_eq!((status, plain["value"].as_str()), (200, Some("jane@example.com")));
    let (status, _) = reveal(&server, &cards, &email_token, "plain").await;
    assert_eq!(status, 403, "cards do not cover personal data");
    let (status, plain) = reveal(&server, &cards, &card_token, "plain").await;
    assert_eq!((status, plain["value"]["number"].as_str()), (200, Some(VISA)));

    // The reveal's audit entry exists (committed before the answer) and names no value.
    let entry = audit_entry(&server, plain["audit_index"].as_u64().unwrap()).await;
    assert_eq!(entry["action"], "vault.token_revealed");
    assert_eq!(entry["object"]["id"], card_token.as_str());
    assert_eq!(entry["outcome"]["reason"], "plain:test_run");
    assert!(!entry.to_string().contains(VISA));

    let bad_reason = json!({"view": "plain", "reason": "Because I can"});
    let (status, problem) =
        send(&server, &cards, Method::POST, &format!("/v1/tokens/{card_token}/reveal"), Some(&bad_reason)).await;
    assert_eq!((status, problem["errors"][0]["pointer"].as_str()), (422, Some("/reason")));
    let bad_view = json!({"view": "everything", "reason": "x"});
    let (status, problem) =
        send(&server, &cards, Method::POST, &format!("/v1/tokens/{card_token}/reveal"), Some(&bad_view)).await;
    assert_eq!((status, problem["errors"][0]["pointer"].as_str()), (422, Some("/view")));
    server.shutdown().await;
}

async fn dedupe_gives_one_token_under_concurrency(backend: Backend) {
    let Some(server) = TestServer::spawn(backend).await else { return };
    let mut body = card("5555555555554444");
    body["dedupe"] = json!(true);
    body["customer"] = json!("cus_1");
    let requests = (0..16).map(|_| {
        let request = server.request(Method::POST, "/v1/tokens").json(&body);
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            let token: Value = response.json().await.unwrap();
            (status, token["id"].as_str().unwrap().to_owned())
        }
    });
    let results = futures::future::join_all(requests).await;
    let created = results.iter().filter(|(s, _)| *s == 201).count();
    assert_eq!(created, 1, "{results:?}");
    assert!(results.iter().all(|(s, id)| (*s == 200 || *s == 201) && *id == results[0].1), "{results:?}");
    // Another customer, or no dedupe, gets its own token.
    let mut other = body.clone();
    other["customer"] = json!("cus_2");
    assert_ne!(tokenize(&server, &other).await["id"], json!(results[0].1));
    let mut plain = body.clone();
    plain["dedupe"] = json!(false);
    assert_ne!(tokenize(&server, &plain).await["id"], json!(results[0].1));
    server.shutdown().await;
}

async fn search_finds_without_revealing(backend: Backend) {
    let Some(server) = TestServer::spawn(backend).await else { return };
    let a = tokenize(&server, &json!({"type": "email", "value": "Jane@Example.com"})).await;
    let b = tokenize(&server, &json!({"type": "email", "value": "jane@example.com"})).await;
    tokenize(&server, &json!({"type": "email", "value": "john@example.com"})).await;
    let (_, reader) = server.create_key("reader", &["vault:read"]).await;
    let found =
        server.post_json_as(&reader, "/v1/tokens/search", &json!({"type": "email", "value": "JANE@example.com"})).await;
    let ids: Vec<&str> = found["data"].as_array().unwrap().iter().map(|t| t["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 2, "{found}");
    assert!(ids.contains(&a["id"].as_str().unwrap()) && ids.contains(&b["id"].as_str().unwrap()));
    assert!(!found.to_string().contains("jane@"), "{found}");
    assert_eq!(a["display"]["fingerprint"], b["display"]["fingerprint"], "equal values, equal fingerprints");
    let (status, problem) =
        send(&server, &reader, Method::POST, "/v1/tokens/search", Some(&json!({"type": "email", "value": "x"}))).await;
    assert_eq!((status, problem["code"].as_str()), (422, Some("invalid_email")));

    // A card is found by its number alone; the expiry, which never was part of the fingerprint,
    // is accepted and ignored (even one that has passed).
    let card_token = tokenize(&server, &card(VISA)).await;
    for value in [
        json!({"number": VISA}),
        json!({"number": "4242 4242 4242 4242", "exp_month": 12, "exp_year": 2031}),
        json!({"number": VISA, "exp_month": 1, "exp_year": 2020}),
    ] {
        let found = server.post_json_as(&reader, "/v1/tokens/search", &json!({"type": "card", "value": value})).await;
        assert_eq!(found["data"][0]["id"], card_token["id"], "{value} → {found}");
        assert!(!found.to_string().contains(VISA));
    }
    let (status, problem) = send(
        &server,
        &reader,
        Method::POST,
        "/v1/tokens/search",
        Some(&json!({"type": "card", "value": {"number": "4242424242424241"}})),
    )
    .await;
    assert_eq!((status, problem["errors"][0]["pointer"].as_str()), (422, Some("/value/number")), "{problem}");
    server.shutdown().await;
}

async fn expiry_and_purge(backend: Backend) {
    let Some(server) = TestServer::spawn(backend).await else { return };
    let short = tokenize(&server, &json!({"type": "name", "value": "Jane", "ttl": 60})).await;
    let long = tokenize(&server, &json!({"type": "name", "value": "John"})).await;
    let id = short["id"].as_str().unwrap();
    assert!(short["expires_at"].is_string());
    server.clock.advance(Duration::from_secs(61));
    let (status, _) = send(&server, &server.bootstrap_key, Method::GET, &format!("/v1/tokens/{id}"), None).await;
    assert_eq!(status, 404, "expired tokens answer 404 at once");
    let (status, _) = reveal(&server, &server.bootstrap_key, id, "plain").await;
    assert_eq!(status, 404);
    let purged = server.app().state.vault.purge_expired().await.unwrap();
    assert_eq!(purged, 1);
    assert_eq!(server.app().state.vault.purge_expired().await.unwrap(), 0);
    let (status, _) = send(
        &server,
        &server.bootstrap_key,
        Method::GET,
        &format!("/v1/tokens/{}", long["id"].as_str().unwrap()),
        None,
    )
    .await;
    assert_eq!(status, 200);
    server.shutdown().await;
}

async fn delete_and_erase(backend: Backend) {
    let Some(server) = TestServer::spawn(backend).await else { return };
    let key = server.bootstrap_key.clone();
    let gone = tokenize(&server, &json!({"type": "name", "value": "Temp"})).await;
    let gone_id = gone["id"].as_str().unwrap();
    let (status, body) = send(&server, &key, Method::DELETE, &format!("/v1/tokens/{gone_id}"), None).await;
    assert_eq!((status, body["deleted"].as_bool()), (200, Some(true)));
    let (status, _) = send(&server, &key, Method::GET, &format!("/v1/tokens/{gone_id}"), None).await;
    assert_eq!(status, 404);

    let mut jane_card = card(VISA);
    jane_card["customer"] = json!("cus_jane");
    let jane_card = tokenize(&server, &jane_card).await["id"].as_str().unwrap().to_owned();
    let jane_email = tokenize(&server, &json!({"type": "email", "value": "jane@example.com", "customer": "cus_jane"}))
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let john = tokenize(&server, &json!({"type": "email", "value": "john@example.com", "customer": "cus_john"})).await
        ["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (_, eraser) = server.create_key("eraser", &["privacy:erase"]).await;
    let (status, receipt) = send(&server, &eraser, Method::DELETE, "/v1/customers/cus_jane/data", None).await;
    assert_eq!(status, 200, "{receipt}");
    assert_eq!(receipt["object"], "erasure_receipt");
    assert_eq!(receipt["customer"], "cus_jane");
    assert_eq!(receipt["tokens_erased"], 2);
    let entry = audit_entry(&server, receipt["audit_index"].as_u64().unwrap()).await;
    assert_eq!(entry["action"], "privacy.customer_erased");
    for id in [&jane_card, &jane_email] {
        let (status, problem) = send(&server, &key, Method::GET, &format!("/v1/tokens/{id}"), None).await;
        assert_eq!((status, problem["code"].as_str()), (410, Some("gone")));
        let (status, _) = reveal(&server, &key, id, "plain").await;
        assert_eq!(status, 410);
    }
    let (status, _) = reveal(&server, &key, &john, "plain").await;
    assert_eq!(status, 200, "another customer is untouched");
    // The data key is gone from the database, so no backup can bring the values back.
    let merchant = strongroom_domain::merchants::MerchantId::parse(&server.merchant_id).unwrap();
    let stored =
        VaultRepository::data_key_for(&server.app().store, &merchant, strongroom_domain::modes::Mode::Live, "cus_jane")
            .await
            .unwrap();
    assert!(stored.is_none(), "the customer's data key is destroyed");
    let (status, again) = send(&server, &eraser, Method::DELETE, "/v1/customers/cus_jane/data", None).await;
    assert_eq!((status, again["tokens_erased"].as_u64()), (200, Some(0)));
    // The same customer can come back with new data, under a new key.
    let fresh = tokenize(&server, &json!({"type": "email", "value": "jane@example.com", "customer": "cus_jane"})).await;
    let (status, _) = reveal(&server, &key, fresh["id"].as_str().unwrap(), "plain").await;
    assert_eq!(status, 200);
    server.shutdown().await;
}

async fn canary_tokens_raise_security_events(backend: Backend) {
    let Some(server) = TestServer::spawn(backend).await else { return };
    let honey = tokenize(&server, &json!({"type": "email", "value": "honey@example.com", "canary": true})).await;
    let normal = tokenize(&server, &json!({"type": "email", "value": "plain@example.com"})).await;
    let strip = |mut v: Value| {
        v.as_object_mut().unwrap().retain(|k, _| k != "id" && k != "created_at" && k != "display");
        v
    };
    assert_eq!(strip(honey.clone()), strip(normal.clone()), "a canary looks like any token");
    let id = honey["id"].as_str().unwrap();
    let (key_id, intruder) = server.create_key("intruder", &["vault:read", "vault:reveal:pii"]).await;
    let (status, plain) = reveal(&server, &intruder, id, "plain").await;
    assert_eq!((status, plain["value"].as_str()), (200, Some("honey@example.com")), "it still answers");
    // Only an intruder reads a canary: the key that did is suspended (and only it).
    let (status, problem) = reveal(&server, &intruder, normal["id"].as_str().unwrap(), "plain").await;
    assert_eq!((status, problem["code"].as_str()), (403, Some("api_key_suspended")), "{problem}");
    let decisions = server.get_json("/v1/security/decisions").await;
    assert_eq!(decisions["data"][0]["scope"]["address"], key_id, "{decisions}");
    assert_eq!(decisions["data"][0]["reason"], "canary_token", "{decisions}");
    let size = server.get_json("/v1/audit/entries?start=0&limit=1").await["tree_size"].as_u64().unwrap();
    let page = server.get_json(&format!("/v1/audit/entries?start=0&limit={size}")).await;
    let tripped = page["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["entry"]["action"] == "security.canary_token_used" && e["entry"]["object"]["id"] == id)
        .count();
    assert_eq!(tripped, 1, "one security event for the reveal");
    assert!(captured_logs().contains("canary token used"));
    let (status, problem) = send(
        &server,
        &server.bootstrap_key,
        Method::POST,
        "/v1/tokens",
        Some(&json!({"type": "email", "value": "x@example.com", "canary": true, "dedupe": true})),
    )
    .await;
    assert_eq!((status, problem["errors"][0]["pointer"].as_str()), (422, Some("/dedupe")));
    server.shutdown().await;
}

async fn tampered_ciphertext_is_an_integrity_error(backend: Backend) {
    let Some(server) = TestServer::spawn(backend).await else { return };
    let a = tokenize(&server, &json!({"type": "name", "value": "Alice"})).await["id"].as_str().unwrap().to_owned();
    let b = tokenize(&server, &json!({"type": "name", "value": "Bob"})).await["id"].as_str().unwrap().to_owned();
    // Move Bob's ciphertext onto Alice's row: the associated data binds it to its row.
    server
        .app()
        .store
        .execute_admin(&format!(
            "UPDATE vault_tokens SET ciphertext = (SELECT ciphertext FROM vault_tokens WHERE id = '{b}') WHERE id = '{a}'"
        ))
        .await
        .unwrap();
    let (status, problem) = reveal(&server, &server.bootstrap_key, &a, "plain").await;
    assert_eq!((status, problem["code"].as_str()), (500, Some("integrity_error")), "{problem}");
    assert!(!problem.to_string().contains("Bob"));
    let size = server.get_json("/v1/audit/entries?start=0&limit=1").await["tree_size"].as_u64().unwrap();
    let page = server.get_json(&format!("/v1/audit/entries?start=0&limit={size}")).await;
    assert!(
        page["data"].as_array().unwrap().iter().any(|e| e["entry"]["action"] == "security.integrity_error"),
        "the integrity failure is in the audit log"
    );
    let (status, _) = reveal(&server, &server.bootstrap_key, &b, "plain").await;
    assert_eq!(status, 200, "the untouched row still opens");
    server.shutdown().await;
}

async fn reveal_rate_limit(backend: Backend) {
    let Some(server) = TestServer::spawn_with(backend, |c| c.vault.reveals_per_minute = 3).await else { return };
    let id = tokenize(&server, &json!({"type": "name", "value": "Jane"})).await["id"].as_str().unwrap().to_owned();
    for _ in 0..3 {
        assert_eq!(reveal(&server, &server.bootstrap_key, &id, "masked").await.0, 200);
    }
    let response = server
        .request(Method::POST, &format!("/v1/tokens/{id}/reveal"))
        .json(&json!({"view": "masked", "reason": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    assert!(response.headers().get("retry-after").is_some());
    let (_, other) = server.create_key("other", &["vault:reveal:pii"]).await;
    assert_eq!(reveal(&server, &other, &id, "masked").await.0, 200, "the limit is per key");
    server.clock.advance(Duration::from_secs(61));
    assert_eq!(reveal(&server, &server.bootstrap_key, &id, "masked").await.0, 200, "a new minute");
    server.shutdown().await;
}

async fn batch_items_succeed_or_fail_alone(backend: Backend) {
    let Some(server) = TestServer::spawn(backend).await else { return };
    let mut dedupe = card("4000056655665556");
    dedupe["dedupe"] = json!(true);
    let items = json!({"items": [
        card(VISA),
        card("4242424242424241"),
        {"type": "email", "value": "a@example.com"},
        {"type": "email", "value": "a@example.com", "bogus": 1},
        dedupe,
        dedupe,
    ]});
    let (status, result) = send(&server, &server.bootstrap_key, Method::POST, "/v1/tokens/batch", Some(&items)).await;
    assert_eq!(status, 200, "{result}");
    let data = result["data"].as_array().unwrap();
    let statuses: Vec<u64> = data.iter().map(|d| d["status"].as_u64().unwrap()).collect();
    assert_eq!(statuses, vec![201, 422, 201, 422, 201, 200], "{result}");
    assert_eq!(data[1]["code"], "invalid_card_number");
    assert_eq!(data[1]["errors"][0]["pointer"], "/items/1/value/number");
    assert_eq!(data[3]["errors"][0]["pointer"], "/items/3/bogus");
    assert_eq!(data[4]["token"]["id"], data[5]["token"]["id"], "dedupe within one batch");
    assert!(!result.to_string().contains("4242424242424241"));
    let (status, _) = reveal(&server, &server.bootstrap_key, data[0]["token"]["id"].as_str().unwrap(), "plain").await;
    assert_eq!(status, 200);
    server.shutdown().await;
}

fn luhn(digits: &str) -> bool {
    let sum: u32 = digits
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, b)| {
            let d = u32::from(b - b'0');
            if i % 2 == 1 { if d * 2 > 9 { d * 2 - 9 } else { d * 2 } } else { d }
        })
        .sum();
    sum.is_multiple_of(10)
}

async fn pan_preserving_tokens(backend: Backend) {
    let Some(server) = TestServer::spawn(backend).await else { return };
    for number in [VISA, "6011111111111117", "4000000000000000006"] {
        let mut body = card(number);
        body["format"] = json!("pan_preserving");
        let token = tokenize(&server, &body).await;
        let id = token["id"].as_str().unwrap();
        assert_eq!(id.len(), number.len());
        assert_eq!(&id[..6], &number[..6]);
        assert_eq!(&id[id.len() - 4..], &number[number.len() - 4..]);
        assert!(!luhn(id), "a format-preserving token fails Luhn: {id}");
        assert_ne!(id, number);
        let (_, plain) = reveal(&server, &server.bootstrap_key, id, "plain").await;
        assert_eq!(plain["value"]["number"], number);
    }
    // Under 16 digits the hidden digits have fewer than 10^6 values (a 12-digit card: about 90
    // ids), and the id would show the first 6 digits the card's mask hides: refused.
    for number in ["378282246310005", "36227206271667", "4222222222222", "501800000009"] {
        let mut body = card(number);
        body["format"] = json!("pan_preserving");
        if number.starts_with("37") {
            body["value"]["cvc"] = json!("1234");
        }
        let (status, problem) = send(&server, &server.bootstrap_key, Method::POST, "/v1/tokens", Some(&body)).await;
        assert_eq!((status, problem["code"].as_str()), (422, Some("pan_preserving_too_short")), "{number}: {problem}");
        assert_eq!(problem["errors"][0]["pointer"], "/format");
        assert_ne!(problem["title"], "Internal error");
        assert!(!problem.to_string().contains(&number[..6]), "{problem}");
        // In a batch the item alone is refused.
        let batch = json!({"items": [body, card(VISA)]});
        let (status, answer) =
            send(&server, &server.bootstrap_key, Method::POST, "/v1/tokens/batch", Some(&batch)).await;
        assert_eq!(status, 200);
        assert_eq!(answer["data"][0]["code"], "pan_preserving_too_short");
        assert_eq!(answer["data"][0]["errors"][0]["pointer"], "/items/0/format");
        assert_eq!(answer["data"][1]["status"], 201);
    }
    server.shutdown().await;
}

/// PCI DSS 3.4.1: a card under 16 digits shows its last 4 digits only (with its first 6 too, a
/// 12-digit number would leave 10 candidates).
async fn short_cards_show_their_last4_only(backend: Backend) {
    let Some(server) = TestServer::spawn(backend).await else { return };
    for (number, masked) in [
        ("378282246310005", "***********0005"),
        ("36227206271667", "**********1667"),
        ("4222222222222", "*********2222"),
        ("501800000009", "********0009"),
    ] {
        let mut body = card(number);
        if number.starts_with("37") {
            body["value"]["cvc"] = json!("1234");
        }
        let token = tokenize(&server, &body).await;
        assert!(token["display"].get("first6").is_none(), "{token}");
        assert_eq!(token["display"]["last4"], &number[number.len() - 4..]);
        let id = token["id"].as_str().unwrap();
        let read = server.get_json(&format!("/v1/tokens/{id}")).await;
        assert!(!read.to_string().contains(&number[..6]), "{read}");
        let (status, shown) = reveal(&server, &server.bootstrap_key, id, "masked").await;
        assert_eq!(status, 200, "{shown}");
        assert_eq!(shown["value"]["number"], masked);
    }
    // 16 digits and more: the first 6 and last 4.
    let token = tokenize(&server, &card("4000000000000000006")).await;
    assert_eq!(token["display"]["first6"], "400000");
    let (_, shown) = reveal(&server, &server.bootstrap_key, token["id"].as_str().unwrap(), "masked").await;
    assert_eq!(shown["value"]["number"], "400000*********0006");
    server.shutdown().await;
}

/// A card number is refused wherever it could slip past the vault: in a field stored in clear
/// (customer reference, metadata, a webhook description), in the audit log (a reveal reason) or in
/// the idempotency table (the key). 422 `card_number_in_free_text` names the field and never
/// repeats the number.
async fn card_numbers_stay_out_of_free_text(backend: Backend) {
    let Some(server) = TestServer::spawn(backend).await else { return };
    let key = server.bootstrap_key.clone();
    const DIGITS: &str = "4111111111111111";
    let spellings = ["4111111111111111", "4111-1111-1111-1111", "4111 1111 1111 1111"];
    let refused = |problem: &Value, pointer: &str| {
        assert_eq!(problem["status"], 422, "{problem}");
        assert_eq!(problem["code"], "card_number_in_free_text", "{problem}");
        assert_ne!(problem["title"], "Internal error");
        let pointers: Vec<&str> =
            problem["errors"].as_array().unwrap().iter().map(|e| e["pointer"].as_str().unwrap()).collect();
        assert_eq!(pointers, [pointer], "{problem}");
        let text = problem.to_string();
        for needle in [DIGITS, "4111-1111", "4111 1111", "1111111111"] {
            assert!(!text.contains(needle), "{text}");
        }
    };
    let token = tokenize(&server, &json!({"type": "email", "value": "a@example.com"})).await;
    let id = token["id"].as_str().unwrap().to_owned();
    for pan in spellings {
        // The customer reference (its alphabet has no spaces: that spelling is refused as a shape).
        if !pan.contains(' ') {
            let body = json!({"type": "email", "value": "b@example.com", "customer": format!("cus_{pan}")});
            let (_, problem) = send(&server, &key, Method::POST, "/v1/tokens", Some(&body)).await;
            refused(&problem, "/customer");
            let batch = json!({"items": [{"type": "email", "value": "b@example.com", "customer": pan}]});
            let (status, answer) = send(&server, &key, Method::POST, "/v1/tokens/batch", Some(&batch)).await;
            assert_eq!((status, answer["data"][0]["code"].as_str()), (200, Some("card_number_in_free_text")));
            assert_eq!(answer["data"][0]["errors"][0]["pointer"], "/items/0/customer");
            assert!(!answer.to_string().contains(DIGITS));
            // The reveal reason, which would stay in the audit log for good.
            let body = json!({"view": "masked", "reason": format!("support:{pan}")});
            let (_, problem) = send(&server, &key, Method::POST, &format!("/v1/tokens/{id}/reveal"), Some(&body)).await;
            refused(&problem, "/reason");
        }
        // Metadata, stored as sent.
        let body = json!({"type": "email", "value": "c@example.com", "metadata": {"note": format!("paid with {pan}")}});
        let (_, problem) = send(&server, &key, Method::POST, "/v1/tokens", Some(&body)).await;
        refused(&problem, "/metadata/note");
        // A webhook endpoint's description.
        let body =
            json!({"url": "http://127.0.0.1:9/hook", "event_types": ["*"], "description": format!("card {pan}")});
        let (_, problem) = send(&server, &key, Method::POST, "/v1/webhook_endpoints", Some(&body)).await;
        refused(&problem, "/description");
        // An API key's name.
        let body = json!({"name": format!("key for {pan}"), "scopes": ["vault:read"]});
        let (_, problem) = send(&server, &key, Method::POST, "/v1/api-keys", Some(&body)).await;
        refused(&problem, "/name");
        // The Idempotency-Key header, which is kept with the answer.
        let response = server
            .request(Method::POST, "/v1/tokens")
            .header("idempotency-key", format!("order-{pan}"))
            .json(&json!({"type": "email", "value": "d@example.com"}))
            .send()
            .await
            .unwrap();
        let problem: Value = response.json().await.unwrap();
        refused(&problem, "/Idempotency-Key");
    }
    // Ordinary values still pass: a UUID key, a numeric customer id, a reason code.
    let response = server
        .request(Method::POST, "/v1/tokens")
        .header("idempotency-key", "550e8400-e29b-41d4-a716-446655440000")
        .json(&json!({"type": "email", "value": "e@example.com", "customer": "1234567890123", "metadata": {"order": "o_2024-0001"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let (status, _) = send(
        &server,
        &key,
        Method::POST,
        &format!("/v1/tokens/{id}/reveal"),
        Some(&json!({"view": "masked", "reason": "support:ticket-4711"})),
    )
    .await;
    assert_eq!(status, 200);
    // Nothing of the number reached the audit log, the webhook endpoints or the logs.
    let audit = server.get_json("/v1/audit/entries?limit=1000").await;
    assert!(!audit.to_string().contains(DIGITS));
    let endpoints = server.get_json("/v1/webhook_endpoints").await;
    assert_eq!(endpoints["data"].as_array().map(Vec::len), Some(0), "{endpoints}");
    assert!(!captured_logs().contains(DIGITS));
    server.shutdown().await;
}

async fn rotation_under_load_keeps_every_value(backend: Backend) {
    let Some(mut server) = TestServer::spawn(backend).await else { return };
    let mut expected = Vec::new();
    for i in 0..20 {
        let value = format!("person{i}@example.com");
        let token = tokenize(&server, &json!({"type": "email", "value": value, "customer": format!("cus_{i}")})).await;
        expected.push((token["id"].as_str().unwrap().to_owned(), value));
    }
    let keys = server.app().state.vault.keys().clone();
    // Tokenize and reveal while rotating twice and rewrapping.
    let load = {
        let requests: Vec<_> = (20..60)
            .map(|i| {
                let value = format!("person{i}@example.com");
                let body = json!({"type": "email", "value": value, "customer": format!("cus_{i}")});
                let request = server.request(Method::POST, "/v1/tokens").json(&body);
                async move {
                    let token: Value = request.send().await.unwrap().json().await.unwrap();
                    (token["id"].as_str().unwrap().to_owned(), value)
                }
            })
            .collect();
        futures::future::join_all(requests)
    };
    let rotate = async {
        let v2 = keys.rotate().await.unwrap();
        keys.rewrap_all(7, |_| {}).await.unwrap();
        let v3 = keys.rotate().await.unwrap();
        keys.rewrap_all(7, |_| {}).await.unwrap();
        (v2, v3)
    };
    let reveals = async {
        for (id, value) in &expected {
            let (status, plain) = reveal(&server, &server.bootstrap_key, id, "plain").await;
            assert_eq!((status, plain["value"].as_str()), (200, Some(value.as_str())));
        }
    };
    let (created, (v2, v3), ()) = tokio::join!(load, rotate, reveals);
    assert_eq!((v2, v3), (2, 3));
    expected.extend(created);
    // Anything created under an older version during the rotation moves too.
    keys.rewrap_all(100, |_| {}).await.unwrap();
    let status = keys.status().await.unwrap();
    let under_active: Vec<(u32, u64)> = status.iter().map(|k| (k.version, k.data_keys)).collect();
    assert_eq!(under_active.iter().filter(|(v, n)| *v != 3 && *n > 0).count(), 0, "{under_active:?}");
    assert!(keys.retire(1).await.unwrap(), "an unused previous version retires");
    assert!(!keys.retire(3).await.unwrap(), "the active version never retires");
    server.restart().await;
    for (id, value) in &expected {
        let (status, plain) = reveal(&server, &server.bootstrap_key, id, "plain").await;
        assert_eq!((status, plain["value"].as_str()), (200, Some(value.as_str())), "{id} after rotation and restart");
    }
    server.shutdown().await;
}

async fn cvc_lives_in_memory_only(backend: Backend) {
    let Some(mut server) = TestServer::spawn(backend).await else { return };
    let token = tokenize(&server, &card(VISA)).await;
    let id = token["id"].as_str().unwrap().to_owned();
    assert_eq!(token["display"]["cvc_held"], true);
    server.clock.advance(Duration::from_secs(601));
    assert_eq!(server.get_json(&format!("/v1/tokens/{id}")).await["display"]["cvc_held"], false, "ten minutes at most");
    let fresh = tokenize(&server, &card("5555555555554444")).await["id"].as_str().unwrap().to_owned();
    server.restart().await;
    assert_eq!(
        server.get_json(&format!("/v1/tokens/{fresh}")).await["display"]["cvc_held"],
        false,
        "gone after a restart"
    );
    server.shutdown().await;
}

async fn fingerprint_rotation_keeps_search_and_dedupe(backend: Backend) {
    let Some(mut server) = TestServer::spawn(backend).await else { return };
    let deduped = json!({"type": "email", "value": "jane@example.com", "customer": "cus_1", "dedupe": true});
    let first = tokenize(&server, &deduped).await;
    let other = tokenize(&server, &json!({"type": "email", "value": "Jane@Example.com"})).await;
    let search = json!({"type": "email", "value": "jane@example.com"});
    let found = |server: &TestServer| {
        let request = server.request(Method::POST, "/v1/tokens/search").json(&search);
        async move {
            let body: Value = request.send().await.unwrap().json().await.unwrap();
            let mut ids: Vec<String> =
                body["data"].as_array().unwrap().iter().map(|t| t["id"].as_str().unwrap().to_owned()).collect();
            ids.sort();
            ids
        }
    };
    let mut expected = vec![first["id"].as_str().unwrap().to_owned(), other["id"].as_str().unwrap().to_owned()];
    expected.sort();
    assert_eq!(found(&server).await, expected);

    let vault = server.app().state.vault.clone();
    assert_eq!(vault.fingerprints().rotate().await.unwrap(), 2);
    // Before the recomputation: search and dedupe still find the old fingerprints.
    assert_eq!(found(&server).await, expected, "search looks under every version");
    let (status, again) = send(&server, &server.bootstrap_key, Method::POST, "/v1/tokens", Some(&deduped)).await;
    assert_eq!((status, again["id"].as_str()), (200, first["id"].as_str()), "dedupe looks under every version");

    assert_eq!(vault.refingerprint_all(|_| {}).await.unwrap(), 2);
    assert_eq!(vault.fingerprint_status().await.unwrap(), vec![(2, 2)]);
    assert_eq!(found(&server).await, expected, "search after the recomputation");
    let (status, again) = send(&server, &server.bootstrap_key, Method::POST, "/v1/tokens", Some(&deduped)).await;
    assert_eq!((status, again["id"].as_str()), (200, first["id"].as_str()), "dedupe after the recomputation");
    let read = server.get_json(&format!("/v1/tokens/{}", first["id"].as_str().unwrap())).await;
    assert_ne!(read["display"]["fingerprint"], first["display"]["fingerprint"], "fingerprint ids change with the key");
    assert_eq!(read["display"]["fingerprint"], found_fingerprint(&server, other["id"].as_str().unwrap()).await);
    // A restart loads both versions and keeps working under the new one.
    server.restart().await;
    assert_eq!(found(&server).await, expected);
    let (status, _) = reveal(&server, &server.bootstrap_key, first["id"].as_str().unwrap(), "plain").await;
    assert_eq!(status, 200);
    server.shutdown().await;
}

async fn found_fingerprint(server: &TestServer, id: &str) -> Value {
    server.get_json(&format!("/v1/tokens/{id}")).await["display"]["fingerprint"].clone()
}

/// Canary use reaches the alert webhook, signed per Standard Webhooks, without any value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_use_reaches_the_alert_webhook() {
    use std::sync::{Arc, Mutex};
    type Received = Arc<Mutex<Vec<(http::HeaderMap, String)>>>;
    let received: Received = Arc::default();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post({
            let received = received.clone();
            move |headers: http::HeaderMap, body: String| async move {
                received.lock().unwrap().push((headers, body));
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let secret = "alert-signing-secret-0123456789";
    let server = TestServer::spawn_with(Backend::Sqlite, |c| {
        c.alerts.webhook_url = Some(strongroom_types::Secret::new(url));
        c.alerts.webhook_secret = Some(strongroom_types::Secret::new(secret.to_owned()));
    })
    .await
    .unwrap();
    let honey = tokenize(&server, &json!({"type": "email", "value": "honey@example.com", "canary": true})).await;
    let id = honey["id"].as_str().unwrap();
    assert_eq!(reveal(&server, &server.bootstrap_key, id, "plain").await.0, 200);
    let mut delivered = None;
    for _ in 0..100 {
        if let Some(first) = received.lock().unwrap().first().cloned() {
            delivered = Some(first);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (headers, body) = delivered.expect("the alert webhook was called");
    let alert: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(alert["type"], "security.canary_token_used");
    assert_eq!(alert["data"]["object"], id);
    assert_eq!(alert["data"]["detail"], "revealed");
    assert!(!body.contains("honey@example.com"), "no value in an alert: {body}");
    let header = |name: &str| headers.get(name).unwrap().to_str().unwrap().to_owned();
    let timestamp: i64 = header("webhook-timestamp").parse().unwrap();
    let expected = strongroom_connectors::webhooks::signature(
        secret.as_bytes(),
        &header("webhook-id"),
        timestamp,
        body.as_bytes(),
    );
    assert_eq!(header("webhook-signature"), expected);
    assert!(!captured_logs().contains(secret));
    server.shutdown().await;
}
