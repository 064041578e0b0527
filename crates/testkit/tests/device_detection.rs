//! Black-box tests of intrusion detection by device, on a real server, on SQLite and PostgreSQL:
//! the shop names the customer's device (`client.device`, its own id of it) on sign-ins and
//! payments, and an attacker who rotates through addresses on one device is counted and blocked
//! as that device: failed sign-ins for many accounts (`credential_stuffing_device`) and card
//! testing each block the device, whatever address it comes from next, while the same
//! addresses with another device, and other devices, go on. Staff block and lift devices by
//! hand, and a device id that is not one (a card number, control characters) is refused by name.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code fails loudly")]

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use strongroom_testkit::{Backend, TestServer, on_both_backends};
use strongroom_types::Clock;

on_both_backends!(
    sign_ins_from_one_device_over_many_addresses_block_the_device,
    card_testing_from_one_device_over_many_addresses_blocks_the_device,
    staff_block_and_lift_a_device_and_bad_device_ids_are_refused
);

const PASSWORD: &str = "violet tractor anthem 1987";
const ROTATING: &str = "fp_8c1e0a-rotating-attacker";
const NEIGHBOUR: &str = "fp_77aa01-shared-laptop";

async fn post(server: &TestServer, key: &str, path: &str, body: &Value) -> (u16, Value) {
    server.call(key, Method::POST, path, Some(body)).await
}

async fn decisions(server: &TestServer) -> Vec<Value> {
    server.get_json("/v1/security/decisions").await["data"].as_array().unwrap().clone()
}

async fn login(server: &TestServer, email: &str, password: &str, ip: &str, device: Option<&str>) -> (u16, Value) {
    let mut client = json!({"ip": ip});
    if let Some(device) = device {
        client["device"] = json!(device);
    }
    let body = json!({"email": email, "password": password, "client": client});
    post(server, &server.bootstrap_key, "/v1/identity/login", &body).await
}

/// Creates and confirms a payment of a new token of `number` from `ip` and `device`.
async fn pay(server: &TestServer, number: &str, ip: &str, device: &str) -> (u16, Value) {
    let body = json!({"type": "card", "value": {"number": number, "exp_month": 12, "exp_year": 2040, "cvc": "123"}});
    let (status, token) = post(server, &server.bootstrap_key, "/v1/tokens", &body).await;
    assert_eq!(status, 201, "{token}");
    let body = json!({"amount": 1200, "currency": "EUR", "payment_method": token["id"], "confirm": true,
        "client": {"ip": ip, "device": device}});
    post(server, &server.bootstrap_key, "/v1/payment_intents", &body).await
}

async fn sign_ins_from_one_device_over_many_addresses_block_the_device(backend: Backend) {
    let Some(server) = TestServer::spawn_with(backend, |c| c.detection.stuffing_device_accounts = 4).await else {
        return;
    };
    server.advance_to_window_start(Duration::from_secs(900));
    let known = "dora-device@example.com";
    server.signed_in_customer(known, PASSWORD).await;
    // Below the threshold: three accounts from three addresses of three networks on one device,
    // and three accounts from another device (each address far below credential stuffing's 10).
    for n in 0..3 {
        let ip = format!("203.0.{}.9", 110 + n);
        let (status, _) = login(&server, &format!("rot{n}@example.org"), PASSWORD, &ip, Some(ROTATING)).await;
        assert_eq!(status, 401);
        let (status, _) = login(&server, &format!("nb{n}@example.org"), PASSWORD, &ip, Some(NEIGHBOUR)).await;
        assert_eq!(status, 401);
    }
    assert!(decisions(&server).await.is_empty(), "nothing below the threshold");
    // The fourth distinct account from the device, from a fourth address, blocks the device.
    let (status, _) = login(&server, known, "not the password at all", "192.0.2.44", Some(ROTATING)).await;
    assert_eq!(status, 401);
    let made = decisions(&server).await;
    assert_eq!(made.len(), 1, "one detection, one decision: {made:?}");
    assert_eq!(made[0]["reason"], "credential_stuffing_device", "{made:?}");
    assert_eq!(made[0]["scope"], json!({"kind": "device", "address": ROTATING}));
    assert_eq!(made[0]["action"], "block");
    assert!(made[0]["detail"].as_str().unwrap().starts_with("4 distinct"), "{}", made[0]);
    let until = strongroom_types::Timestamp::parse_rfc3339(made[0]["until"].as_str().unwrap()).unwrap();
    assert_eq!(until.millis_since(server.clock.now()), 900_000, "blocked for stuffing_block (15m)");
    // The device is refused from a fresh address, even with the right password; the same address
    // with another device, or with none, signs in.
    let (status, blocked) = login(&server, known, PASSWORD, "198.51.100.77", Some(ROTATING)).await;
    assert_eq!((status, blocked["code"].as_str()), (429, Some("client_blocked")), "{blocked}");
    let (status, _) = login(&server, known, PASSWORD, "198.51.100.77", Some(NEIGHBOUR)).await;
    assert_eq!(status, 200, "another device at the same address signs in");
    let (status, _) = login(&server, known, PASSWORD, "198.51.100.77", None).await;
    assert_eq!(status, 200, "no device named: the address decides");
    // The device's payments are refused too.
    let (status, blocked) = pay(&server, "4242424242424242", "198.51.100.78", ROTATING).await;
    assert_eq!((status, blocked["code"].as_str()), (429, Some("client_blocked")), "{blocked}");
    // Audited, in the metrics, and a high-severity incident that names the decision.
    let size = server.get_json("/v1/audit/entries?start=0&limit=1").await["tree_size"].as_u64().unwrap();
    let audit = server.get_json(&format!("/v1/audit/entries?start=0&limit={}", size.clamp(1, 1000))).await;
    assert!(audit.to_string().contains("credential_stuffing_device"), "audited");
    let metrics = server.request(Method::GET, "/metrics").send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("strongroom_detections_total{point=\"credential_stuffing_device\"} 1"), "{metrics}");
    let incidents = server.get_json("/v1/security/incidents").await;
    let id = incidents["data"][0]["id"].as_str().expect("an incident").to_owned();
    let incident = server.get_json(&format!("/v1/security/incidents/{id}")).await;
    assert_eq!(incident["severity"], "high", "{incident}");
    assert_eq!(incident["timeline"][0]["data"]["decision"], made[0]["id"], "{incident}");
    // Lifted by staff: the device signs in again.
    let path = format!("/v1/security/decisions/{}/lift", made[0]["id"].as_str().unwrap());
    let (status, lifted) = post(&server, &server.bootstrap_key, &path, &json!({})).await;
    assert_eq!(status, 200, "{lifted}");
    server.clock.advance(Duration::from_secs(1));
    let (status, _) = login(&server, known, PASSWORD, "198.51.100.77", Some(ROTATING)).await;
    assert_eq!(status, 200, "the lifted device signs in");
}

async fn card_testing_from_one_device_over_many_addresses_blocks_the_device(backend: Backend) {
    let Some(server) = TestServer::spawn_with(backend, |c| {
        let f = &mut c.payments.fraud;
        f.max_attempts_per_ip = 0;
        f.max_attempts_per_card = 0;
        f.max_attempts_per_device = 0;
        f.max_cards_per_client = 3;
    })
    .await
    else {
        return;
    };
    let cards = ["4242424242424242", "5555555555554444", "4012888888881881", "4111111111111111", "5105105105105100"];
    // Three cards from three addresses on one device: the fraud checks count the device's cards.
    for (n, number) in cards[..3].iter().enumerate() {
        let (status, paid) = pay(&server, number, &format!("203.0.{}.5", 120 + n), ROTATING).await;
        assert_eq!((status, paid["status"].as_str()), (201, Some("succeeded")), "{paid}");
    }
    // The fourth card, from a fourth address: refused as card testing, and the device and that
    // address are blocked.
    let (status, refused) = pay(&server, cards[3], "192.0.2.55", ROTATING).await;
    assert_eq!(status, 201, "{refused}");
    assert_eq!(refused["fraud"]["reasons"], json!(["card_testing"]), "{refused}");
    let made = decisions(&server).await;
    let scopes: Vec<&Value> = made.iter().map(|d| &d["scope"]).collect();
    assert_eq!(made.len(), 2, "the device and the address: {made:?}");
    assert!(scopes.contains(&&json!({"kind": "device", "address": ROTATING})), "{made:?}");
    assert!(scopes.contains(&&json!({"kind": "ip", "address": "192.0.2.55"})), "{made:?}");
    assert!(made.iter().all(|d| d["reason"] == "card_testing"), "{made:?}");
    // The device pays from no other address; another device does, from an address the device used.
    let (status, blocked) = pay(&server, cards[0], "198.51.100.90", ROTATING).await;
    assert_eq!((status, blocked["code"].as_str()), (429, Some("client_blocked")), "{blocked}");
    let (status, paid) = pay(&server, cards[4], "203.0.120.5", NEIGHBOUR).await;
    assert_eq!((status, paid["status"].as_str()), (201, Some("succeeded")), "another device pays: {paid}");
    // And it cannot sign in either.
    server.signed_in_customer("eve-device@example.com", PASSWORD).await;
    let (status, blocked) = login(&server, "eve-device@example.com", PASSWORD, "198.51.100.91", Some(ROTATING)).await;
    assert_eq!((status, blocked["code"].as_str()), (429, Some("client_blocked")), "{blocked}");
}

async fn staff_block_and_lift_a_device_and_bad_device_ids_are_refused(backend: Backend) {
    let Some(server) = TestServer::spawn(backend).await else {
        return;
    };
    server.signed_in_customer("finn-device@example.com", PASSWORD).await;
    let body = json!({"scope": {"kind": "device", "address": NEIGHBOUR}, "duration_seconds": 3600,
        "note": "reported stolen by its owner"});
    let (status, made) = post(&server, &server.bootstrap_key, "/v1/security/decisions", &body).await;
    assert_eq!(status, 201, "{made}");
    assert_eq!((made["scope"]["kind"].as_str(), made["action"].as_str()), (Some("device"), Some("block")), "{made}");
    // Made again while it holds: a conflict; with another action: refused by name.
    let (status, again) = post(&server, &server.bootstrap_key, "/v1/security/decisions", &body).await;
    assert_eq!((status, again["code"].as_str()), (409, Some("decision_exists")), "{again}");
    let mut suspend = body.clone();
    suspend["action"] = json!("suspend");
    let (status, refused) = post(&server, &server.bootstrap_key, "/v1/security/decisions", &suspend).await;
    assert_eq!((status, refused["errors"][0]["pointer"].as_str()), (422, Some("/action")), "{refused}");
    let (status, blocked) = login(&server, "finn-device@example.com", PASSWORD, "198.51.100.5", Some(NEIGHBOUR)).await;
    assert_eq!((status, blocked["code"].as_str()), (429, Some("client_blocked")), "{blocked}");
    let path = format!("/v1/security/decisions/{}/lift", made["id"].as_str().unwrap());
    let (status, _) = post(&server, &server.bootstrap_key, &path, &json!({})).await;
    assert_eq!(status, 200);
    server.clock.advance(Duration::from_secs(1));
    let (status, _) = login(&server, "finn-device@example.com", PASSWORD, "198.51.100.5", Some(NEIGHBOUR)).await;
    assert_eq!(status, 200, "lifted");
    // Device ids that are not one, on a decision, a sign-in and a payment: named, never echoed.
    let card = "4242 4242 4242 4242";
    for (kind, address) in [("device", ""), ("device", card), ("device", "tab\there")] {
        let body = json!({"scope": {"kind": kind, "address": address}, "duration_seconds": 600});
        let (status, refused) = post(&server, &server.bootstrap_key, "/v1/security/decisions", &body).await;
        assert_eq!(status, 422, "{refused}");
        assert_eq!(refused["errors"][0]["pointer"], "/scope/address", "{refused}");
        assert!(!refused.to_string().contains("4242"), "never echoed: {refused}");
    }
    let long = "d".repeat(129);
    for device in [card, long.as_str(), ""] {
        let (status, refused) = login(&server, "finn-device@example.com", PASSWORD, "198.51.100.5", Some(device)).await;
        assert_eq!(status, 422, "{refused}");
        assert_eq!(refused["errors"][0]["pointer"], "/client/device", "{refused}");
        assert!(!refused.to_string().contains("4242"), "never echoed: {refused}");
    }
    let body = json!({"type": "card", "value": {"number": "4242424242424242", "exp_month": 12, "exp_year": 2040}});
    let (_, token) = post(&server, &server.bootstrap_key, "/v1/tokens", &body).await;
    let body = json!({"amount": 1200, "currency": "EUR", "payment_method": token["id"], "confirm": true,
        "client": {"device": card}});
    let (status, refused) = post(&server, &server.bootstrap_key, "/v1/payment_intents", &body).await;
    assert_eq!(status, 422, "{refused}");
    assert_eq!(refused["errors"][0]["pointer"], "/client/device", "{refused}");
    assert!(!refused.to_string().contains("4242 4242"), "never echoed: {refused}");
}
