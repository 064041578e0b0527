//! Black-box tests of the detection points that watch sign-ins for addresses of no account and
//! the payments' card-testing signals, on a real server, on SQLite and PostgreSQL: each, driven
//! through the public API as an attacker would, detects once (audited, in the metrics, an
//! incident) and makes its decision, while normal use below its threshold trips nothing and a
//! bystander is not touched.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code fails loudly")]

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use strongroom_testkit::{Backend, TestServer, on_both_backends};
use strongroom_types::Clock;

on_both_backends!(
    sign_ins_for_addresses_of_no_account_block_the_client,
    sign_ins_spread_over_a_network_block_its_prefix,
    mostly_declined_payments_block_the_client,
    payments_failing_three_d_secure_count_toward_the_decline_ratio,
    many_cards_paying_small_amounts_block_the_client,
    many_cards_of_one_issuer_range_block_the_client,
    many_cards_paying_one_identical_amount_block_the_client,
    unusual_methods_and_body_types_block_a_client_and_alert_on_a_key,
    a_used_link_presented_again_and_again_blocks_the_client,
    reveals_outside_the_usual_hours_alert_once_a_day,
    a_sign_in_for_a_decoy_account_blocks_the_client,
    a_decoy_api_key_blocks_the_client_everywhere,
    a_client_trying_many_api_keys_is_blocked_everywhere,
    an_accepted_staff_invitation_presented_again_blocks_the_client,
    a_used_reset_link_presented_again_blocks_the_client
);

const ATTACKER: &str = "203.0.113.66";
const BYSTANDER: &str = "198.51.100.23";
const PASSWORD: &str = "violet tractor anthem 1987";

async fn post(server: &TestServer, key: &str, path: &str, body: &Value) -> (u16, Value) {
    server.call(key, Method::POST, path, Some(body)).await
}

async fn decisions(server: &TestServer) -> Vec<Value> {
    server.get_json("/v1/security/decisions").await["data"].as_array().unwrap().clone()
}

/// The decisions in force once one for `reason` is there (detections counted after the answer
/// arrive a moment later); fails after five seconds.
async fn decisions_once(server: &TestServer, reason: &str) -> Vec<Value> {
    for _ in 0..100 {
        let made = decisions(server).await;
        if made.iter().any(|d| d["reason"] == reason) {
            return made;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no {reason} decision: {:?}", decisions(server).await);
}

async fn audit_text(server: &TestServer) -> String {
    let size = server.get_json("/v1/audit/entries?start=0&limit=1").await["tree_size"].as_u64().unwrap();
    server.get_json(&format!("/v1/audit/entries?start=0&limit={}", size.clamp(1, 1000))).await.to_string()
}

async fn metrics(server: &TestServer) -> String {
    server.request(Method::GET, "/metrics").send().await.unwrap().text().await.unwrap()
}

fn without_request_id(mut problem: Value) -> Value {
    if let Some(object) = problem.as_object_mut() {
        object.remove("request_id");
        object.remove("instance");
    }
    problem
}

async fn login(server: &TestServer, email: &str, password: &str, ip: &str) -> (u16, Value) {
    let body = json!({"email": email, "password": password, "client": {"ip": ip}});
    post(server, &server.bootstrap_key, "/v1/identity/login", &body).await
}

async fn sign_ins_for_addresses_of_no_account_block_the_client(backend: Backend) {
    let Some(server) = TestServer::spawn_with(backend, |c| c.detection.unknown_accounts = 4).await else { return };
    let known = "ann-known@example.com";
    server.signed_in_customer(known, PASSWORD).await;
    // Normal use: a customer mistypes their address three times (below the threshold), and
    // wrong passwords of a real account are not addresses of no account.
    for typo in ["ann-knwon@example.com", "ann-known@exmaple.com", "ann-known@example.co"] {
        let (status, _) = login(&server, typo, PASSWORD, BYSTANDER).await;
        assert_eq!(status, 401);
    }
    for _ in 0..3 {
        let (status, _) = login(&server, known, "not the password at all", ATTACKER).await;
        assert_eq!(status, 401);
    }
    let (status, signed_in) = login(&server, known, PASSWORD, BYSTANDER).await;
    assert_eq!(status, 200, "{signed_in}");
    // The attacker works through addresses nobody has: each answer is a wrong password's.
    let (_, wrong) = login(&server, known, "not the password at all", ATTACKER).await;
    for n in 0..4 {
        let (status, unknown) = login(&server, &format!("list{n}@example.org"), PASSWORD, ATTACKER).await;
        assert_eq!(status, 401, "{unknown}");
        assert_eq!(without_request_id(unknown), without_request_id(wrong.clone()), "told apart at {n}");
    }
    let made = decisions_once(&server, "unknown_accounts").await;
    assert_eq!(made.len(), 1, "one detection, one decision: {made:?}");
    assert_eq!(made[0]["scope"], json!({"kind": "ip", "address": ATTACKER}));
    assert!(made[0]["detail"].as_str().unwrap().starts_with("4 distinct"), "{}", made[0]);
    let until = strongroom_types::Timestamp::parse_rfc3339(made[0]["until"].as_str().unwrap()).unwrap();
    assert_eq!(until.millis_since(server.clock.now()), 3_600_000, "blocked for unknown_accounts_block (1h)");
    // The attacker's sign-ins are refused now, even with the right password; others go on.
    let (status, blocked) = login(&server, known, PASSWORD, ATTACKER).await;
    assert_eq!((status, blocked["code"].as_str()), (429, Some("client_blocked")), "{blocked}");
    let (status, _) = login(&server, known, PASSWORD, BYSTANDER).await;
    assert_eq!(status, 200, "the bystander signs in");
    let audit = audit_text(&server).await;
    assert!(audit.contains("security.detected") && audit.contains("unknown_accounts"), "audited");
    assert!(!audit.contains("list0@example.org"), "addresses are counted by keyed hash only");
    let incidents = server.get_json("/v1/security/incidents").await;
    let id = incidents["data"][0]["id"].as_str().expect("an incident").to_owned();
    let incident = server.get_json(&format!("/v1/security/incidents/{id}")).await;
    assert_eq!(incident["severity"], "medium", "{incident}");
    assert_eq!(incident["timeline"][0]["data"]["point"], "unknown_accounts", "{incident}");
    assert!(metrics(&server).await.contains("strongroom_detections_total{point=\"unknown_accounts\"} 1"));
}

async fn sign_ins_spread_over_a_network_block_its_prefix(backend: Backend) {
    let Some(server) = TestServer::spawn_with(backend, |c| c.detection.stuffing_network_accounts = 6).await else {
        return;
    };
    let known = "ann-net@example.com";
    server.signed_in_customer(known, PASSWORD).await;
    // Below the threshold: five accounts fail from three addresses of one /24, and an IPv6
    // client's failures are its /64's (credential stuffing's), never a /24's.
    for (n, ip) in ["203.0.113.10", "203.0.113.11", "203.0.113.12", "203.0.113.10", "203.0.113.11"].iter().enumerate() {
        let (status, _) = login(&server, &format!("net{n}@example.org"), PASSWORD, ip).await;
        assert_eq!(status, 401);
    }
    for n in 0..3 {
        let (status, _) = login(&server, &format!("v6-{n}@example.org"), PASSWORD, "2001:db8:1:2::7").await;
        assert_eq!(status, 401);
    }
    assert!(decisions(&server).await.is_empty(), "nothing below the threshold");
    // The sixth distinct account from a fourth address of the /24 (each address far below
    // credential stuffing's 10) blocks the whole /24 for this shop.
    let (status, _) = login(&server, known, "not the password at all", "203.0.113.13").await;
    assert_eq!(status, 401);
    let made = decisions(&server).await;
    assert_eq!(made.len(), 1, "one detection, one decision: {made:?}");
    assert_eq!(made[0]["reason"], "credential_stuffing_network", "{made:?}");
    assert_eq!(made[0]["scope"], json!({"kind": "prefix", "address": "203.0.113.0/24"}));
    assert!(made[0]["detail"].as_str().unwrap().starts_with("6 distinct"), "{}", made[0]);
    let until = strongroom_types::Timestamp::parse_rfc3339(made[0]["until"].as_str().unwrap()).unwrap();
    assert_eq!(until.millis_since(server.clock.now()), 900_000, "blocked for stuffing_block (15m)");
    // Every address of the /24 is refused, even with the right password; another network is not.
    let (status, blocked) = login(&server, known, PASSWORD, "203.0.113.200").await;
    assert_eq!((status, blocked["code"].as_str()), (429, Some("client_blocked")), "{blocked}");
    let (status, _) = login(&server, known, PASSWORD, BYSTANDER).await;
    assert_eq!(status, 200, "the bystander signs in");
    let audit = audit_text(&server).await;
    assert!(audit.contains("security.detected") && audit.contains("credential_stuffing_network"), "audited");
    let incidents = server.get_json("/v1/security/incidents").await;
    let id = incidents["data"][0]["id"].as_str().expect("an incident").to_owned();
    let incident = server.get_json(&format!("/v1/security/incidents/{id}")).await;
    assert_eq!(incident["severity"], "high", "{incident}");
    assert!(metrics(&server).await.contains("strongroom_detections_total{point=\"credential_stuffing_network\"} 1"));
}

/// Creates and confirms a payment of `amount` cents of a new token of `number` from `ip`.
async fn pay(server: &TestServer, number: &str, amount: i64, ip: &str) -> (u16, Value) {
    let body = json!({"type": "card", "value": {"number": number, "exp_month": 12, "exp_year": 2040, "cvc": "123"}});
    let (status, token) = post(server, &server.bootstrap_key, "/v1/tokens", &body).await;
    assert_eq!(status, 201, "{token}");
    let body = json!({"amount": amount, "currency": "EUR", "payment_method": token["id"], "confirm": true,
        "client": {"ip": ip}});
    post(server, &server.bootstrap_key, "/v1/payment_intents", &body).await
}

/// A 16-digit number starting with `prefix`, then `n`, with a valid Luhn check digit.
fn card(prefix: &str, n: u64) -> String {
    let body = format!("{prefix}{n:0width$}", width = 15 - prefix.len());
    let sum: u32 = body
        .chars()
        .rev()
        .enumerate()
        .map(|(i, c)| {
            let d = c.to_digit(10).unwrap();
            if i % 2 == 0 { if d * 2 > 9 { d * 2 - 9 } else { d * 2 } } else { d }
        })
        .sum();
    format!("{body}{}", (10 - sum % 10) % 10)
}

async fn assert_blocked_for(server: &TestServer, reason: &str, detail: &str) {
    let made = decisions(server).await;
    assert_eq!(made.len(), 1, "one detection, one decision: {made:?}");
    assert_eq!(made[0]["reason"], reason, "{made:?}");
    assert_eq!(made[0]["scope"], json!({"kind": "ip", "address": ATTACKER}));
    assert!(made[0]["detail"].as_str().unwrap().starts_with(detail), "{}", made[0]);
    let until = strongroom_types::Timestamp::parse_rfc3339(made[0]["until"].as_str().unwrap()).unwrap();
    assert_eq!(until.millis_since(server.clock.now()), 3_600_000, "blocked for card_testing_block (1h)");
    let (status, blocked) = pay(server, "4242424242424242", 2500, ATTACKER).await;
    assert_eq!((status, blocked["code"].as_str()), (429, Some("client_blocked")), "{blocked}");
    let (status, paid) = pay(server, "4242424242424242", 2500, BYSTANDER).await;
    assert_eq!((status, paid["status"].as_str()), (201, Some("succeeded")), "another client pays: {paid}");
    let audit = audit_text(server).await;
    assert!(audit.contains("security.detected") && audit.contains(reason), "audited");
    let incidents = server.get_json("/v1/security/incidents").await;
    let id = incidents["data"][0]["id"].as_str().expect("an incident").to_owned();
    let incident = server.get_json(&format!("/v1/security/incidents/{id}")).await;
    assert_eq!(incident["severity"], "high", "{incident}");
    assert_eq!(incident["timeline"][0]["data"]["point"], reason, "{incident}");
    assert!(metrics(server).await.contains(&format!("strongroom_detections_total{{point=\"{reason}\"}} 1")));
}

async fn mostly_declined_payments_block_the_client(backend: Backend) {
    let Some(server) = TestServer::spawn_with(backend, |c| {
        // The fraud checks would ask for step-up after three declines; the ratio is counted
        // without them.
        c.payments.fraud.enabled = false;
        c.detection.decline_ratio_attempts = 4;
        c.detection.decline_ratio_percent = 75;
    })
    .await
    else {
        return;
    };
    let declined = "4000000000000002";
    // Normal use: a customer whose card is declined three times is below the fewest payments
    // judged; one declined payment in four is below the ratio.
    for _ in 0..3 {
        let (status, paid) = pay(&server, declined, 2500, BYSTANDER).await;
        assert_eq!((status, paid["status"].as_str()), (201, Some("requires_payment_method")), "{paid}");
    }
    for number in ["4242424242424242", "5555555555554444", "4242424242424242"] {
        let (status, paid) = pay(&server, number, 2500, ATTACKER).await;
        assert_eq!((status, paid["status"].as_str()), (201, Some("succeeded")), "{paid}");
    }
    let (status, paid) = pay(&server, declined, 2500, ATTACKER).await;
    assert_eq!((status, paid["status"].as_str()), (201, Some("requires_payment_method")), "{paid}");
    assert!(decisions(&server).await.is_empty(), "nothing below the thresholds");
    // Now the attacker's cards fail, one after another: 2 of 5 declined, 3 of 6, … 8 of 11
    // (73%), 9 of 12 (75%).
    for n in 0..8 {
        if n == 7 {
            assert!(decisions(&server).await.is_empty(), "8 of 11 is below the ratio");
        }
        let (status, paid) = pay(&server, declined, 2500, ATTACKER).await;
        assert_eq!((status, paid["status"].as_str()), (201, Some("requires_payment_method")), "{n}: {paid}");
    }
    assert_blocked_for(&server, "decline_ratio", "9 of 12 payments from one client declined").await;
}

/// Answers that come after the request (the customer failing 3-D Secure, then the shop
/// confirming again without the client) count for the client the checked attempt recorded.
async fn payments_failing_three_d_secure_count_toward_the_decline_ratio(backend: Backend) {
    let Some(server) = TestServer::spawn_with(backend, |c| {
        c.payments.fraud.step_up_after_declines = 0;
        c.payments.fraud.max_declines = 0;
        c.detection.decline_ratio_attempts = 3;
        c.detection.decline_ratio_percent = 100;
    })
    .await
    else {
        return;
    };
    for n in 0..3 {
        assert!(decisions(&server).await.is_empty(), "{n} failed: below the threshold");
        let (status, pending) = pay(&server, "4000002760003184", 2500, ATTACKER).await;
        assert_eq!((status, pending["status"].as_str()), (201, Some("requires_action")), "{pending}");
        let id = pending["id"].as_str().unwrap();
        let path = format!("/v1/payment_intents/{id}/sandbox_challenge");
        assert_eq!(post(&server, &server.bootstrap_key, &path, &json!({"outcome": "fail"})).await.0, 200);
        let path = format!("/v1/payment_intents/{id}/confirm");
        let (status, failed) = post(&server, &server.bootstrap_key, &path, &json!({})).await;
        assert_eq!((status, failed["status"].as_str()), (200, Some("requires_payment_method")), "{failed}");
    }
    assert_blocked_for(&server, "decline_ratio", "3 of 3 payments from one client declined").await;
}

async fn many_cards_paying_small_amounts_block_the_client(backend: Backend) {
    let Some(server) = TestServer::spawn_with(backend, |c| {
        // The fraud checks' own card-testing and small-amount rules off: what they let through.
        c.payments.fraud.max_cards_per_client = 0;
        c.payments.fraud.max_small_amounts = 0;
        c.detection.small_amount_cards = 3;
    })
    .await
    else {
        return;
    };
    // Normal use: one card paying small amounts again and again, and two cards paying one each.
    for number in ["4242424242424242", "4242424242424242", "4242424242424242", "5555555555554444"] {
        let (status, paid) = pay(&server, number, 99, BYSTANDER).await;
        assert_eq!((status, paid["status"].as_str()), (201, Some("succeeded")), "{paid}");
    }
    // Cards paying more than a small amount are not counted.
    for n in 0..3 {
        let (status, paid) = pay(&server, &card("555555", n), 2500, ATTACKER).await;
        assert_eq!((status, paid["status"].as_str()), (201, Some("succeeded")), "{paid}");
    }
    assert!(decisions(&server).await.is_empty(), "nothing below the threshold");
    // Three distinct cards paying 1.00 EUR from one client (the third still goes through).
    for number in ["4242424242424242", "5555555555554444", "4012888888881881"] {
        let (status, paid) = pay(&server, number, 100, ATTACKER).await;
        assert_eq!((status, paid["status"].as_str()), (201, Some("succeeded")), "{paid}");
    }
    assert_blocked_for(&server, "small_amount_cards", "3 distinct cards paying small amounts").await;
}

async fn many_cards_of_one_issuer_range_block_the_client(backend: Backend) {
    let Some(server) = TestServer::spawn_with(backend, |c| {
        c.payments.fraud.max_cards_per_client = 0;
        c.detection.iin_cluster_cards = 3;
    })
    .await
    else {
        return;
    };
    // Normal use: two cards of one bank and one of another from one client.
    for number in ["4242424242424242", &card("424242", 77), "5555555555554444"] {
        let (status, paid) = pay(&server, number, 2500, BYSTANDER).await;
        assert_eq!((status, paid["status"].as_str()), (201, Some("succeeded")), "{paid}");
    }
    // Cards of one range, and the same card again: two distinct so far.
    for number in [card("411111", 1), card("411111", 2), card("411111", 2)] {
        let (status, paid) = pay(&server, &number, 2500, ATTACKER).await;
        assert_eq!((status, paid["status"].as_str()), (201, Some("succeeded")), "{paid}");
    }
    assert!(decisions(&server).await.is_empty(), "nothing below the threshold");
    let (status, paid) = pay(&server, &card("411111", 3), 2500, ATTACKER).await;
    assert_eq!((status, paid["status"].as_str()), (201, Some("succeeded")), "{paid}");
    assert_blocked_for(&server, "iin_cluster", "3 distinct cards sharing their first six digits").await;
}

async fn many_cards_paying_one_identical_amount_block_the_client(backend: Backend) {
    let Some(server) = TestServer::spawn_with(backend, |c| {
        c.payments.fraud.max_cards_per_client = 0;
        c.detection.iin_cluster_cards = 0;
        c.detection.identical_amount_cards = 4;
    })
    .await
    else {
        return;
    };
    // Normal use: three cards paying one price, and a fourth paying another; one card paying
    // the price again.
    for (number, amount) in [("4242424242424242", 1999), ("5555555555554444", 1999), ("4012888888881881", 1999)] {
        let (status, paid) = pay(&server, number, amount, ATTACKER).await;
        assert_eq!((status, paid["status"].as_str()), (201, Some("succeeded")), "{paid}");
    }
    for (number, amount) in [("4111111111111111", 2000), ("4242424242424242", 1999)] {
        let (status, paid) = pay(&server, number, amount, ATTACKER).await;
        assert_eq!((status, paid["status"].as_str()), (201, Some("succeeded")), "{paid}");
    }
    assert!(decisions(&server).await.is_empty(), "nothing below the threshold");
    // The fourth distinct card paying 19.99 EUR.
    let (status, paid) = pay(&server, &card("510510", 7), 1999, ATTACKER).await;
    assert_eq!((status, paid["status"].as_str()), (201, Some("succeeded")), "{paid}");
    assert_blocked_for(&server, "identical_amount_cards", "4 distinct cards paying one identical amount").await;
}

async fn unusual_methods_and_body_types_block_a_client_and_alert_on_a_key(backend: Backend) {
    let Some(server) = TestServer::spawn_with(backend, |c| {
        // The test's requests all come from 127.0.0.1, a proxy naming the client.
        c.server.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()];
    })
    .await
    else {
        return;
    };
    let propfind = Method::from_bytes(b"PROPFIND").unwrap();
    let anonymous = |ip: &str, method: Method, path: &str| {
        // Without a key (`server.request` sends the shop's).
        server.client.request(method, server.url(path)).header("x-forwarded-for", ip.to_owned())
    };
    let keyed = |method: Method, path: &str| {
        server.request_as(&server.bootstrap_key, method, path).header("x-forwarded-for", BYSTANDER)
    };
    let xml = |request: reqwest::RequestBuilder| {
        request
            .header("content-type", "application/xml")
            .body("<!DOCTYPE x [<!ENTITY e SYSTEM \"file:///etc/passwd\">]><x>&e;</x>")
    };
    // Below the threshold (3 in an hour): two probes, and the client is still served.
    for _ in 0..2 {
        let response = anonymous("192.0.2.211", Method::TRACE, "/v1/merchant").send().await.unwrap();
        assert_eq!(response.status(), 405);
    }
    assert_eq!(anonymous("192.0.2.211", Method::GET, "/healthz").send().await.unwrap().status(), 200);
    // A scanner's probes get the answers they always got ...
    let response = anonymous("192.0.2.210", Method::TRACE, "/v1/merchant").send().await.unwrap();
    assert_eq!(response.status(), 405);
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["code"], "method_not_allowed");
    assert_eq!(anonymous("192.0.2.210", propfind.clone(), "/v1/merchant").send().await.unwrap().status(), 405);
    let response = xml(anonymous("192.0.2.210", Method::POST, "/v1/identity/login")).send().await.unwrap();
    assert_eq!(response.status(), 401, "no key: refused as ever");
    // ... and after the third nothing answers the client, anywhere.
    let response = anonymous("192.0.2.210", Method::GET, "/healthz").send().await.unwrap();
    assert_eq!(response.status(), 429);
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["code"], "client_blocked");
    let made = decisions(&server).await;
    assert_eq!(made.len(), 1, "{made:?}");
    assert_eq!(made[0]["reason"], "unusual_request");
    assert_eq!(made[0]["scope"], json!({"kind": "ip", "address": "192.0.2.210"}));

    // The shop's own key sending them: the same answers (415 for the XML body), counted per key,
    // an alert and an incident, and nobody blocked.
    for _ in 0..3 {
        let response = xml(keyed(Method::POST, "/v1/identity/login")).send().await.unwrap();
        assert_eq!(response.status(), 415);
        let problem: Value = response.json().await.unwrap();
        assert_eq!(problem["code"], "unsupported_media_type");
    }
    assert_eq!(keyed(Method::TRACE, "/v1/merchant").send().await.unwrap().status(), 405);
    assert_eq!(keyed(Method::GET, "/v1/merchant").send().await.unwrap().status(), 200, "the key works");
    assert_eq!(decisions(&server).await.len(), 1, "no decision about the key or its client");
    let incidents = server.get_json("/v1/security/incidents").await;
    let id = incidents["data"][0]["id"].as_str().expect("an incident").to_owned();
    let incident = server.get_json(&format!("/v1/security/incidents/{id}")).await;
    assert_eq!(incident["severity"], "medium", "{incident}");
    assert_eq!(incident["timeline"][0]["data"]["point"], "unusual_request_with_key", "{incident}");
    assert!(incident.to_string().contains("\"key_"), "the key is a subject: {incident}");
    let audit = audit_text(&server).await;
    assert!(audit.contains("unusual_request_with_key"), "audited");
    let metrics = metrics(&server).await;
    assert!(metrics.contains("strongroom_detections_total{point=\"unusual_request\"} 1"), "{metrics}");
    assert!(metrics.contains("strongroom_detections_total{point=\"unusual_request_with_key\"} 1"), "{metrics}");
}

/// The token of the address-check mail sent to `email` (waits up to 10 s for the mail).
async fn verification_token(server: &TestServer, email: &str) -> String {
    mailed_token(server, email, "verify_email", "evt_").await
}

/// The token (`prefix…`) of the newest `kind` mail sent to `email` (waits up to 10 s for it).
async fn mailed_token(server: &TestServer, email: &str, kind: &str, prefix: &str) -> String {
    let dir = server.data_dir().join("mail");
    for _ in 0..100 {
        let mails = std::fs::read_dir(&dir)
            .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect::<Vec<_>>())
            .unwrap_or_default();
        let mut mails: Vec<_> =
            mails.iter().filter(|p| p.to_string_lossy().ends_with(&format!("-{kind}.eml"))).collect();
        mails.sort();
        for path in mails.into_iter().rev() {
            let text = std::fs::read_to_string(path).unwrap_or_default().replace("=\r\n", "").replace("=3D", "=");
            if let Some(start) =
                text.contains(&format!("To: {email}")).then(|| text.find(&format!("#token={prefix}"))).flatten()
            {
                let start = start + "#token=".len();
                return text[start..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no {kind} mail for {email}");
}

/// A used password-reset link presented again with the customer's address passed by the shop is
/// a replay like a used verification link: refused as before, counted, and at the threshold the
/// client is blocked for the shop.
async fn a_used_reset_link_presented_again_blocks_the_client(backend: Backend) {
    let Some(server) = TestServer::spawn_with(backend, |c| c.detection.replayed_tokens = 3).await else { return };
    let email = "cleo-reset@example.com";
    let _ = server.signed_in_customer(email, PASSWORD).await;
    let (status, _) =
        post(&server, &server.bootstrap_key, "/v1/identity/password-reset", &json!({"email": email})).await;
    assert_eq!(status, 202);
    let token = mailed_token(&server, email, "password_reset", "rst_").await;
    let complete = |ip: &str, password: &str| json!({"token": token, "new_password": password, "client": {"ip": ip}});
    let new_password = "quartz lagoon pepper 3141";
    let (status, done) = post(
        &server,
        &server.bootstrap_key,
        "/v1/identity/password-reset/complete",
        &complete(BYSTANDER, new_password),
    )
    .await;
    assert_eq!(status, 204, "{done}");
    for n in 0..3 {
        let (status, problem) = post(
            &server,
            &server.bootstrap_key,
            "/v1/identity/password-reset/complete",
            &complete(ATTACKER, "another password entirely 99"),
        )
        .await;
        assert_eq!((status, problem["code"].as_str()), (422, Some("invalid_link")), "replay {n}: {problem}");
    }
    let made = decisions_once(&server, "replayed_token").await;
    assert_eq!(made.len(), 1, "{made:?}");
    assert_eq!(made[0]["scope"], json!({"kind": "ip", "address": ATTACKER}));
    let (status, blocked) = login(&server, email, new_password, ATTACKER).await;
    assert_eq!((status, blocked["code"].as_str()), (429, Some("client_blocked")), "{blocked}");
    let (status, _) = login(&server, email, new_password, BYSTANDER).await;
    assert_eq!(status, 200, "the new password works from the customer's address");
}

async fn a_used_link_presented_again_and_again_blocks_the_client(backend: Backend) {
    let Some(server) = TestServer::spawn_with(backend, |c| {
        c.server.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()];
        c.detection.replayed_tokens = 3;
    })
    .await
    else {
        return;
    };
    let email = "bob-links@example.com";
    let body = json!({"email": email, "password": PASSWORD});
    let (status, registered) = post(&server, &server.bootstrap_key, "/v1/identity/customers", &body).await;
    assert_eq!(status, 202, "{registered}");
    let token = verification_token(&server, email).await;
    // The shop relays the link with its customer's address.
    let verify = |ip: &str, token: &str| {
        server
            .request_as(&server.bootstrap_key, Method::POST, "/v1/identity/verify-email")
            .json(&json!({"token": token, "client": {"ip": ip}}))
    };
    assert_eq!(verify(BYSTANDER, &token).send().await.unwrap().status(), 200);
    // Relayed without the customer's address, a replay is never counted: the address would be
    // the shop's server's, which serves every customer.
    for _ in 0..5 {
        let relayed = server
            .request_as(&server.bootstrap_key, Method::POST, "/v1/identity/verify-email")
            .json(&json!({"token": token}))
            .send()
            .await
            .unwrap();
        assert_eq!(relayed.status(), 422);
    }
    // Normal use: the customer opens the link a second time; links that never existed are not
    // replays.
    assert_eq!(verify(BYSTANDER, &token).send().await.unwrap().status(), 422);
    for n in 0..5 {
        let made_up =
            format!("evt_{}", "abcdefghijklmnopqrstuvwxyz234567".chars().cycle().skip(n).take(40).collect::<String>());
        let response = verify("192.0.2.99", &made_up).send().await.unwrap();
        assert_eq!(response.status(), 422);
    }
    assert!(decisions(&server).await.is_empty(), "nothing below the threshold");
    // Someone presents the used link again and again: the same refusal each time ...
    for _ in 0..3 {
        let response = verify(ATTACKER, &token).send().await.unwrap();
        assert_eq!(response.status(), 422);
        let problem: Value = response.json().await.unwrap();
        assert_eq!(problem["code"], "invalid_link");
    }
    // ... and the client's sign-ins are refused for this shop; the customer's are not.
    let made = decisions(&server).await;
    assert_eq!(made.len(), 1, "{made:?}");
    assert_eq!(made[0]["reason"], "replayed_token");
    assert_eq!(made[0]["scope"], json!({"kind": "ip", "address": ATTACKER}));
    let (status, blocked) = login(&server, email, PASSWORD, ATTACKER).await;
    assert_eq!((status, blocked["code"].as_str()), (429, Some("client_blocked")), "{blocked}");
    let (status, _) = login(&server, email, PASSWORD, BYSTANDER).await;
    assert_eq!(status, 200);
    let audit = audit_text(&server).await;
    assert!(audit.contains("security.detected") && audit.contains("replayed_token"), "audited");
    let incidents = server.get_json("/v1/security/incidents").await;
    let id = incidents["data"][0]["id"].as_str().expect("an incident").to_owned();
    let incident = server.get_json(&format!("/v1/security/incidents/{id}")).await;
    assert_eq!(incident["timeline"][0]["data"]["point"], "replayed_token", "{incident}");
    assert!(metrics(&server).await.contains("strongroom_detections_total{point=\"replayed_token\"} 1"));
}

async fn reveals_outside_the_usual_hours_alert_once_a_day(backend: Backend) {
    let Some(server) =
        TestServer::spawn_with(backend, |c| c.detection.usual_hours = Some("07:00-20:00".to_owned())).await
    else {
        return;
    };
    let (key_id, support) = server.create_key("support", &["vault:read", "vault:reveal:pii"]).await;
    let mut ids = Vec::new();
    for n in 0..3 {
        let body = json!({"type": "email", "value": format!("person{n}@example.com")});
        let (status, token) = post(&server, &server.bootstrap_key, "/v1/tokens", &body).await;
        assert_eq!(status, 201);
        ids.push(token["id"].as_str().unwrap().to_owned());
    }
    // To 10:00 UTC of the next day: within the hours, nothing.
    let minute = u64::try_from(server.clock.now().unix_millis() / 60_000 % 1440).unwrap();
    server.clock.advance(Duration::from_secs(((600 + 1440 - minute) % 1440 + 1440) * 60));
    reveal_all(&server, &support, &ids).await;
    assert_eq!(off_hours_detections(&server).await, 0, "reveals within the usual hours");
    // 21:00: a late shift reveals three times: one alert, and the key goes on working.
    server.clock.advance(Duration::from_secs(11 * 3600));
    reveal_all(&server, &support, &ids).await;
    assert_eq!(off_hours_detections(&server).await, 1, "one alert for the evening, not one per reveal");
    assert!(decisions(&server).await.is_empty(), "nobody is suspended");
    let incidents = server.get_json("/v1/security/incidents").await;
    let id = incidents["data"][0]["id"].as_str().expect("an incident").to_owned();
    let incident = server.get_json(&format!("/v1/security/incidents/{id}")).await;
    assert_eq!(incident["severity"], "medium", "{incident}");
    assert_eq!(incident["timeline"][0]["data"]["point"], "off_hours_reveals", "{incident}");
    assert!(incident.to_string().contains(&key_id), "the key is a subject: {incident}");
    let audit = audit_text(&server).await;
    assert!(audit.contains("off_hours_reveals"), "audited");
    // The next evening is another alert.
    server.clock.advance(Duration::from_secs(24 * 3600));
    reveal_all(&server, &support, &ids).await;
    assert_eq!(off_hours_detections(&server).await, 2);
}

async fn reveal_all(server: &TestServer, key: &str, ids: &[String]) {
    for id in ids {
        let reveal = json!({"view": "plain", "reason": "support_ticket"});
        let (status, shown) = post(server, key, &format!("/v1/tokens/{id}/reveal"), &reveal).await;
        assert_eq!(status, 200, "{shown}");
    }
}

async fn off_hours_detections(server: &TestServer) -> u64 {
    metrics(server)
        .await
        .lines()
        .find_map(|l| l.strip_prefix("strongroom_detections_total{point=\"off_hours_reveals\"} ").map(str::to_owned))
        .map_or(0, |n| n.trim().parse::<u64>().unwrap())
}

async fn a_sign_in_for_a_decoy_account_blocks_the_client(backend: Backend) {
    let decoy = "ceo-backup@shop.example";
    let Some(server) =
        TestServer::spawn_with(backend, |c| c.detection.decoy_accounts = vec!["CEO-Backup@shop.example".to_owned()])
            .await
    else {
        return;
    };
    let known = "carol-decoys@example.com";
    server.signed_in_customer(known, PASSWORD).await;
    // Normal use: wrong passwords and mistyped addresses trip nothing.
    let (_, wrong) = login(&server, known, "not the password at all", BYSTANDER).await;
    let (status, _) = login(&server, "ceo-backup@shop.exampel", PASSWORD, BYSTANDER).await;
    assert_eq!(status, 401);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(decisions(&server).await.is_empty(), "nothing for near misses");
    // Someone who stole the shop's customer list tries the planted address: a wrong password's
    // answer ...
    let (status, answer) = login(&server, decoy, "Spring2026!", ATTACKER).await;
    assert_eq!(status, 401);
    assert_eq!(without_request_id(answer), without_request_id(wrong));
    // ... and the client is blocked for the shop at once.
    let made = decisions_once(&server, "decoy_account").await;
    assert_eq!(made.len(), 1, "{made:?}");
    assert_eq!(made[0]["scope"], json!({"kind": "ip", "address": ATTACKER}));
    let until = strongroom_types::Timestamp::parse_rfc3339(made[0]["until"].as_str().unwrap()).unwrap();
    assert_eq!(until.millis_since(server.clock.now()), 86_400_000, "blocked for decoy_block (24h)");
    let (status, blocked) = login(&server, known, PASSWORD, ATTACKER).await;
    assert_eq!((status, blocked["code"].as_str()), (429, Some("client_blocked")), "{blocked}");
    let (status, _) = login(&server, known, PASSWORD, BYSTANDER).await;
    assert_eq!(status, 200, "the customer signs in");
    let incidents = server.get_json("/v1/security/incidents").await;
    let id = incidents["data"][0]["id"].as_str().expect("an incident").to_owned();
    let incident = server.get_json(&format!("/v1/security/incidents/{id}")).await;
    assert_eq!(incident["severity"], "high", "{incident}");
    assert_eq!(incident["timeline"][0]["data"]["point"], "decoy_account", "{incident}");
    let audit = audit_text(&server).await;
    assert!(audit.contains("decoy_account") && !audit.contains(decoy), "audited, without the address");
}

async fn a_decoy_api_key_blocks_the_client_everywhere(backend: Backend) {
    let Some(server) = TestServer::spawn_with(backend, |c| {
        c.server.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()];
    })
    .await
    else {
        return;
    };
    // The operator makes one (`strongroom apikey decoy`) and plants it in the shop's old
    // deployment scripts.
    let merchant =
        strongroom_domain::merchants::MerchantId::parse(server.get_json("/v1/merchant").await["id"].as_str().unwrap())
            .unwrap();
    let event = strongroom_domain::audit::event::AuditEvent::by(
        strongroom_domain::audit::event::ActorKind::System,
        Some("cli".to_owned()),
        "api_key.decoy_created",
        strongroom_domain::audit::event::Outcome::Success,
    );
    let decoy = server
        .app()
        .state
        .api_keys
        .create_decoy_recorded(&merchant, "deploy (old)".to_owned(), strongroom_domain::modes::Mode::Live, event)
        .await
        .unwrap();
    let (secret, key_id) = (decoy.secret.expose().clone(), decoy.record.id.as_str().to_owned());
    assert!(secret.starts_with("sr_live_"), "shaped like any live key");
    // Listed like any key (it is one, without scopes); the shop's own key goes on working.
    let (status, listed) = server.call(&server.bootstrap_key, Method::GET, "/v1/api-keys", None).await;
    assert_eq!(status, 200);
    assert!(listed.to_string().contains(&key_id), "{listed}");
    // A thief tries it: the answer of a key that does not exist ...
    let unknown = format!("{}x", &secret[..secret.len() - 1]);
    let try_key = |key: &str, ip: &str| {
        server.request_as(key, Method::GET, "/v1/merchant").header("x-forwarded-for", ip.to_owned())
    };
    let response = try_key(&unknown, BYSTANDER).send().await.unwrap();
    assert_eq!(response.status(), 401);
    let unknown_answer = without_request_id(response.json().await.unwrap());
    let response = try_key(&secret, ATTACKER).send().await.unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(without_request_id(response.json().await.unwrap()), unknown_answer);
    // ... and nothing answers the client any more, anywhere, even with the shop's real key.
    let response = try_key(&server.bootstrap_key, ATTACKER).send().await.unwrap();
    assert_eq!(response.status(), 429);
    assert_eq!(try_key(&server.bootstrap_key, BYSTANDER).send().await.unwrap().status(), 200, "others go on");
    let made = decisions(&server).await;
    assert_eq!(made.len(), 1, "{made:?}");
    assert_eq!(made[0]["reason"], "decoy_api_key");
    assert_eq!(made[0]["scope"], json!({"kind": "ip", "address": ATTACKER}));
    // A critical incident for the shop, naming the key.
    let incidents = server.get_json("/v1/security/incidents").await;
    let id = incidents["data"][0]["id"].as_str().expect("an incident").to_owned();
    let incident = server.get_json(&format!("/v1/security/incidents/{id}")).await;
    assert_eq!(incident["severity"], "critical", "{incident}");
    assert_eq!(incident["timeline"][0]["data"]["point"], "decoy_api_key", "{incident}");
    assert!(incident.to_string().contains(&key_id), "{incident}");
    let audit = audit_text(&server).await;
    assert!(audit.contains("api_key.decoy_used") && !audit.contains(&secret), "audited, without the secret");
}

async fn a_client_trying_many_api_keys_is_blocked_everywhere(backend: Backend) {
    let Some(server) = TestServer::spawn_with(backend, |c| {
        c.server.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()];
        c.detection.api_key_probes = 8;
    })
    .await
    else {
        return;
    };
    let get = |key: String, ip: &str| {
        server.request_as(&key, Method::GET, "/v1/merchant").header("x-forwarded-for", ip.to_owned())
    };
    // A shop's server with a wrong key retries it fifty times: one distinct key, nothing decided.
    let real = server.bootstrap_key.clone();
    let wrong = format!("{}x", &real[..real.len() - 1]);
    for _ in 0..50 {
        assert_eq!(get(wrong.clone(), BYSTANDER).send().await.unwrap().status(), 401);
    }
    // Someone tries keys: the same key id with other secrets, then garbage; each answer stays a
    // plain 401, until the eighth distinct one blocks the client for every route.
    let secret_at = real.rfind('_').unwrap() + 1;
    for n in 0..7 {
        let mut key = real.clone();
        key.replace_range(secret_at..secret_at + 2, &format!("{}{}", (b'a' + n) as char, (b'a' + n) as char));
        let key = if n < 4 { key } else { format!("not-a-key-{n}") };
        let response = get(key, ATTACKER).send().await.unwrap();
        assert_eq!(response.status(), 401, "{n}");
    }
    assert!(decisions(&server).await.is_empty(), "below the threshold");
    assert_eq!(get("sr_live_guess".to_owned(), ATTACKER).send().await.unwrap().status(), 401);
    let made = decisions(&server).await;
    assert_eq!(made.len(), 1, "{made:?}");
    assert_eq!(made[0]["reason"], "api_key_probing");
    assert_eq!(made[0]["scope"], json!({"kind": "ip", "address": ATTACKER}));
    assert!(made[0]["detail"].as_str().unwrap().starts_with("8 distinct"), "{}", made[0]);
    let until = strongroom_types::Timestamp::parse_rfc3339(made[0]["until"].as_str().unwrap()).unwrap();
    assert_eq!(until.millis_since(server.clock.now()), 3_600_000, "blocked for api_key_probing_block (1h)");
    // Refused at the edge, even with the shop's real key; the shop's server goes on.
    assert_eq!(get(real.clone(), ATTACKER).send().await.unwrap().status(), 429);
    assert_eq!(get(real.clone(), BYSTANDER).send().await.unwrap().status(), 200);
    let audit = audit_text(&server).await;
    assert!(audit.contains("api_key_probing") && !audit.contains("not-a-key"), "audited, without the keys");
    assert!(metrics(&server).await.contains("strongroom_detections_total{point=\"api_key_probing\"} 1"));
}

async fn an_accepted_staff_invitation_presented_again_blocks_the_client(backend: Backend) {
    let Some(server) = TestServer::spawn_with(backend, |c| {
        c.server.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()];
        c.detection.replayed_tokens = 3;
    })
    .await
    else {
        return;
    };
    let merchant = strongroom_domain::merchants::MerchantId::parse(&server.merchant_id).unwrap();
    let invitation = server
        .app()
        .state
        .staff
        .invite(&merchant, "dana-staff@example.com", &["owner".to_owned()], None, &Default::default())
        .await
        .unwrap();
    let token = invitation.token.expose().clone();
    let accept = |ip: &str| {
        server
            .client
            .post(server.url("/v1/staff/invitation/accept"))
            .header("x-forwarded-for", ip.to_owned())
            .json(&json!({"token": token, "password": "Violet tractor anthem 1987"}))
    };
    assert_eq!(accept(BYSTANDER).send().await.unwrap().status(), 200);
    // The new staff member clicks the link once more: below the threshold.
    assert_eq!(accept(BYSTANDER).send().await.unwrap().status(), 422);
    for _ in 0..3 {
        let response = accept(ATTACKER).send().await.unwrap();
        assert_eq!(response.status(), 422);
        let problem: Value = response.json().await.unwrap();
        assert_eq!(problem["code"], "invalid_invitation");
    }
    let made = decisions(&server).await;
    assert_eq!(made.len(), 1, "{made:?}");
    assert_eq!(made[0]["reason"], "replayed_token");
    assert_eq!(made[0]["scope"], json!({"kind": "ip", "address": ATTACKER}));
}
