//! Black-box tests of intrusion detection's points on a real server, on SQLite and PostgreSQL:
//! each point, driven through the public API as an attacker would, detects once and makes the
//! decision it should, and a bystander (another client, another key) is not touched:
//! card testing blocks the client's payments; a key walking through ids it does not own is
//! suspended; a key revealing more than an hour's work is suspended; many wrong one-time codes
//! block the client giving them; a decoy route and forged session cookies block the client for
//! the whole deployment (at the edge, before any route); detections are counted in the metrics;
//! and on PostgreSQL two nodes count together (in the database, and in Redis), so an attack
//! spread over both is seen at the threshold, and share the rate limits (reveals per minute,
//! failed sign-ins per client), so a limit spent on one node is spent on the other.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code fails loudly")]

use std::sync::Arc;

use reqwest::Method;
use serde_json::{Value, json};
use strongroom_testkit::{Backend, TestServer, on_both_backends, test_python};
use strongroom_types::{Clock, ManualClock, OsEntropy};

on_both_backends!(
    card_testing_blocks_the_clients_payments,
    a_key_walking_through_ids_is_suspended,
    a_key_revealing_more_than_an_hours_work_is_suspended,
    wrong_one_time_codes_block_the_client_guessing,
    decoy_routes_and_forged_cookies_block_the_client_everywhere,
    two_nodes_count_one_attack_together,
    two_nodes_share_rate_limits
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

/// Creates and confirms a payment of a new token of `number` for a customer at `ip`.
async fn pay(server: &TestServer, number: &str, ip: &str) -> (u16, Value) {
    let body = json!({"type": "card", "value": {"number": number, "exp_month": 12, "exp_year": 2040, "cvc": "123"}});
    let (status, token) = post(server, &server.bootstrap_key, "/v1/tokens", &body).await;
    assert_eq!(status, 201, "{token}");
    let body = json!({"amount": 1200, "currency": "EUR", "payment_method": token["id"], "confirm": true,
        "client": {"ip": ip}});
    post(server, &server.bootstrap_key, "/v1/payment_intents", &body).await
}

async fn card_testing_blocks_the_clients_payments(backend: Backend) {
    let Some(server) = TestServer::spawn_with(backend, |c| {
        let f = &mut c.payments.fraud;
        f.max_attempts_per_ip = 0;
        f.max_attempts_per_card = 0;
        f.max_cards_per_client = 3;
    })
    .await
    else {
        return;
    };
    let cards = ["4242424242424242", "5555555555554444", "4012888888881881", "4111111111111111", "5105105105105100"];
    for number in &cards[..3] {
        let (status, paid) = pay(&server, number, ATTACKER).await;
        assert_eq!((status, paid["status"].as_str()), (201, Some("succeeded")), "{paid}");
    }
    // The fourth card from one client: the fraud checks refuse it as card testing ...
    let (status, refused) = pay(&server, cards[3], ATTACKER).await;
    assert_eq!(status, 201, "{refused}");
    assert_eq!(refused["fraud"]["reasons"], json!(["card_testing"]), "{refused}");
    // ... and intrusion detection blocks the client: any payment of it now, even a known card.
    let (status, blocked) = pay(&server, cards[0], ATTACKER).await;
    assert_eq!((status, blocked["code"].as_str()), (429, Some("client_blocked")), "{blocked}");
    let (status, other) = pay(&server, cards[4], BYSTANDER).await;
    assert_eq!((status, other["status"].as_str()), (201, Some("succeeded")), "another client pays: {other}");
    let made = decisions(&server).await;
    assert_eq!(made.len(), 1, "one detection, one decision: {made:?}");
    assert_eq!(made[0]["reason"], "card_testing");
    assert_eq!(made[0]["scope"], json!({"kind": "ip", "address": ATTACKER}));
    let until = strongroom_types::Timestamp::parse_rfc3339(made[0]["until"].as_str().unwrap()).unwrap();
    assert_eq!(until.millis_since(server.clock.now()), 3_600_000, "blocked for card_testing_block (1h)");
    // A high-severity detection opens the shop's incident, naming the decision and the client.
    let incidents = server.get_json("/v1/security/incidents").await;
    let id = incidents["data"][0]["id"].as_str().expect("an incident").to_owned();
    let incident = server.get_json(&format!("/v1/security/incidents/{id}")).await;
    assert_eq!(incident["severity"], "high", "{incident}");
    assert_eq!(incident["timeline"][0]["data"]["point"], "card_testing", "{incident}");
    assert_eq!(incident["timeline"][0]["data"]["decision"], made[0]["id"], "{incident}");
    assert!(incident.to_string().contains(ATTACKER), "the client is a subject: {incident}");
    let metrics = server.request(Method::GET, "/metrics").send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("strongroom_detections_total{point=\"card_testing\"} 1"), "{metrics}");
}

async fn a_key_walking_through_ids_is_suspended(backend: Backend) {
    let Some(server) = TestServer::spawn_with(backend, |c| c.detection.enumeration_ids = 10).await else { return };
    let (key_id, walker) = server.create_key("walker", &["payments:read"]).await;
    let id =
        |n: usize| format!("pi_{}", "abcdefghijklmnopqrstuvwxyz".chars().cycle().skip(n).take(26).collect::<String>());
    // The same missing id again and again is one id: a retrying client is not walking.
    for _ in 0..15 {
        let (status, _) = server.call(&walker, Method::GET, &format!("/v1/payment_intents/{}", id(0)), None).await;
        assert_eq!(status, 404);
    }
    for n in 1..10 {
        let (status, _) = server.call(&walker, Method::GET, &format!("/v1/payment_intents/{}", id(n)), None).await;
        assert_eq!(status, 404, "id {n}");
    }
    let (status, problem) = server.call(&walker, Method::GET, "/v1/payment_intents", None).await;
    assert_eq!((status, problem["code"].as_str()), (403, Some("api_key_suspended")), "{problem}");
    // Another key goes on.
    let (status, _) = server.call(&server.bootstrap_key, Method::GET, "/v1/payment_intents", None).await;
    assert_eq!(status, 200);
    let made = decisions(&server).await;
    assert_eq!(made.len(), 1, "{made:?}");
    assert_eq!((made[0]["reason"].as_str(), made[0]["action"].as_str()), (Some("enumeration"), Some("suspend")));
    assert_eq!(made[0]["scope"]["address"], key_id);
    assert!(made[0]["detail"].as_str().unwrap().contains("10 distinct"), "{}", made[0]);
    // A scope the key lacks is probing too: 403s count like 404s (a fresh key, a lower bar).
    let Some(server) = TestServer::spawn_with(backend, |c| c.detection.enumeration_ids = 3).await else { return };
    let (_, prober) = server.create_key("prober", &["payments:read"]).await;
    for path in ["/v1/api-keys", "/v1/webhook_endpoints", "/v1/staff"] {
        let (status, problem) = server.call(&prober, Method::GET, path, None).await;
        assert_eq!((status, problem["code"].as_str()), (403, Some("insufficient_scope")), "{path}: {problem}");
    }
    let (status, problem) = server.call(&prober, Method::GET, "/v1/payment_intents", None).await;
    assert_eq!((status, problem["code"].as_str()), (403, Some("api_key_suspended")), "{problem}");
}

async fn a_key_revealing_more_than_an_hours_work_is_suspended(backend: Backend) {
    let Some(server) = TestServer::spawn_with(backend, |c| c.detection.reveals_per_hour = 5).await else { return };
    let (key_id, insider) = server.create_key("support-export", &["vault:read", "vault:reveal:pii"]).await;
    let mut ids = Vec::new();
    for n in 0..6 {
        let body = json!({"type": "email", "value": format!("person{n}@example.com")});
        let (status, token) = post(&server, &server.bootstrap_key, "/v1/tokens", &body).await;
        assert_eq!(status, 201);
        ids.push(token["id"].as_str().unwrap().to_owned());
    }
    let reveal = json!({"view": "plain", "reason": "export"});
    for id in &ids[..5] {
        let (status, shown) = post(&server, &insider, &format!("/v1/tokens/{id}/reveal"), &reveal).await;
        assert_eq!(status, 200, "{shown}");
    }
    let (status, problem) = post(&server, &insider, &format!("/v1/tokens/{}/reveal", ids[5]), &reveal).await;
    assert_eq!((status, problem["code"].as_str()), (403, Some("api_key_suspended")), "{problem}");
    let made = decisions(&server).await;
    assert_eq!(
        (made[0]["reason"].as_str(), made[0]["scope"]["address"].as_str()),
        (Some("insider_reveals"), Some(key_id.as_str()))
    );
    let incidents = server.get_json("/v1/security/incidents").await;
    let id = incidents["data"][0]["id"].as_str().expect("an incident").to_owned();
    let incident = server.get_json(&format!("/v1/security/incidents/{id}")).await;
    assert_eq!(incident["timeline"][0]["data"]["point"], "insider_reveals", "{incident}");
    assert!(incident.to_string().contains(&key_id), "the key is a subject: {incident}");
    // An hour later the count starts again (the suspension itself ends on its own clock).
    let (status, _) = post(&server, &server.bootstrap_key, &format!("/v1/tokens/{}/reveal", ids[5]), &reveal).await;
    assert_eq!(status, 200, "another key reveals");
}

async fn wrong_one_time_codes_block_the_client_guessing(backend: Backend) {
    let Some(python) = test_python() else { return };
    let Some(server) = TestServer::spawn_with(backend, |c| c.detection.code_guesses = 3).await else { return };
    let key = server.bootstrap_key.clone();
    let email = "mallory-target@example.com";
    let (_, token) = server.signed_in_customer(email, PASSWORD).await;
    let (status, enrolment) = server.call(&token, Method::POST, "/v1/me/totp", None).await;
    assert_eq!(status, 201, "{enrolment}");
    let secret = enrolment["secret"].as_str().unwrap().to_owned();
    let at = server.clock.now().unix_millis() / 1000;
    let script = "import sys, pyotp; print(pyotp.TOTP(sys.argv[1]).at(int(sys.argv[2])))";
    let output = std::process::Command::new(&python).args(["-c", script, &secret, &at.to_string()]).output().unwrap();
    let code = String::from_utf8(output.stdout).unwrap().trim().to_owned();
    let (status, _) = server.call(&token, Method::POST, "/v1/me/totp/confirm", Some(&json!({"code": code}))).await;
    assert_eq!(status, 200);
    // Someone with the password guesses the second factor from one address, one challenge at a
    // time (each challenge's own limit is five answers).
    let login = json!({"email": email, "password": PASSWORD, "client": {"ip": ATTACKER}});
    for guess in 0..3 {
        let (status, first) = post(&server, &key, "/v1/identity/login", &login).await;
        assert_eq!((status, first["status"].as_str()), (200, Some("second_factor_required")), "{first}");
        let wrong = json!({"challenge": first["challenge"], "code": format!("{:06}", 123_450 + guess),
            "client": {"ip": ATTACKER}});
        let (status, _) = post(&server, &key, "/v1/identity/login/second-factor", &wrong).await;
        assert!(status == 401 || status == 429, "{status}");
    }
    let (status, blocked) = post(&server, &key, "/v1/identity/login", &login).await;
    assert_eq!((status, blocked["code"].as_str()), (429, Some("client_blocked")), "{blocked}");
    let made = decisions(&server).await;
    assert_eq!(made[0]["reason"], "code_guessing", "{made:?}");
    assert_eq!(made[0]["scope"], json!({"kind": "ip", "address": ATTACKER}));
}

async fn decoy_routes_and_forged_cookies_block_the_client_everywhere(backend: Backend) {
    let Some(server) = TestServer::spawn_with(backend, |c| {
        // The test's requests all come from 127.0.0.1, a proxy naming the client.
        c.server.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()];
        c.detection.tampered_credentials = 3;
    })
    .await
    else {
        return;
    };
    let from = |ip: &str, method: Method, path: &str| {
        server.request_as(&server.bootstrap_key, method, path).header("x-forwarded-for", ip.to_owned())
    };
    // A scanner asks for a decoy: the same 404 as any unknown path ...
    let response = from("192.0.2.200", Method::GET, "/wp-login.php").send().await.unwrap();
    assert_eq!(response.status(), 404);
    // ... and then nothing at all answers it (not even the health check), before any route.
    for path in ["/healthz", "/v1/merchant", "/account/login"] {
        let response = from("192.0.2.200", Method::GET, path).send().await.unwrap();
        assert_eq!(response.status(), 429, "{path}");
        assert!(response.headers().contains_key("retry-after"));
        let problem: Value = response.json().await.unwrap();
        assert_eq!(problem["code"], "client_blocked");
    }
    assert_eq!(from(BYSTANDER, Method::GET, "/v1/merchant").send().await.unwrap().status(), 200);

    // Forged session cookies on the hosted pages (an expired one is well-formed and not counted).
    for n in 0..3 {
        let response = from("192.0.2.201", Method::GET, "/account")
            .header("cookie", format!("__Host-sr_session=srs_forged{n}' OR 1=1"))
            .send()
            .await
            .unwrap();
        // The page redirects to the sign-in page (followed here); after the third forged cookie
        // that follow-up request is already refused.
        let status = response.status();
        let expected = status.is_redirection() || status == 200 || (n == 2 && status == 429);
        assert!(expected, "{n}: {status} {}", response.text().await.unwrap());
    }
    assert_eq!(from("192.0.2.201", Method::GET, "/v1/merchant").send().await.unwrap().status(), 429);
    let made = decisions(&server).await;
    let mut reasons: Vec<(&str, &str)> =
        made.iter().map(|d| (d["reason"].as_str().unwrap(), d["scope"]["address"].as_str().unwrap())).collect();
    reasons.sort_unstable();
    assert_eq!(reasons, [("decoy_route", "192.0.2.200"), ("tampered_credential", "192.0.2.201")]);
    // Deployment-wide decisions are the operator's: a merchant's staff see them, cannot lift them.
    let id = made[0]["id"].as_str().unwrap();
    let (status, _) =
        post(&server, &server.bootstrap_key, &format!("/v1/security/decisions/{id}/lift"), &json!({})).await;
    assert_eq!(status, 404);
}

async fn two_nodes_count_one_attack_together(backend: Backend) {
    if backend != Backend::Postgres {
        return; // several nodes share PostgreSQL only
    }
    // Counted in the database (the default), then in Redis.
    let redis = std::env::var("STRONGROOM_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let redis_answers = redis_answers(&redis).await;
    assert!(redis_answers || std::env::var("CI").as_deref() != Ok("true"), "Redis is required under CI=true");
    for counted_in in ["database", "redis"] {
        if counted_in == "redis" && !redis_answers {
            eprintln!("Redis not reachable at {redis}: the Redis case is SKIPPED");
            continue;
        }
        let Some(server) = TestServer::spawn_with(backend, |c| {
            if counted_in == "redis" {
                c.detection.redis_url = Some(strongroom_types::Secret::new(redis.clone()));
            }
        })
        .await
        else {
            return;
        };
        let clock = Arc::new(ManualClock::new(server.clock.now()));
        let node_b = strongroom::Application::build(&server.config, clock, Arc::new(OsEntropy)).await.unwrap();
        let scheme = if server.base_url.starts_with("https") { "https" } else { "http" };
        let bases = [server.base_url.clone(), format!("{scheme}://{}", node_b.api_addr())];
        // Ten accounts tried from one client, alternating between the nodes: five each, ten in all.
        for n in 0..10 {
            let body = json!({"email": format!("split{n}@example.com"), "password": "not it at all 1234",
                "client": {"ip": ATTACKER}});
            let response = server
                .client
                .post(format!("{}/v1/identity/login", bases[n % 2]))
                .bearer_auth(&server.bootstrap_key)
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status().as_u16(), 401, "{counted_in}: attempt {n}");
        }
        let made = decisions(&server).await;
        assert_eq!(made.len(), 1, "{counted_in}: {made:?}");
        assert_eq!(made[0]["reason"], "credential_stuffing");
        assert!(made[0]["detail"].as_str().unwrap().starts_with("10 distinct"), "{counted_in}: {}", made[0]);
        node_b.shutdown().await;
        server.shutdown().await;
    }
}

/// Two nodes take from one allowance: the per-minute reveals of a key and the failed sign-ins of
/// a client, alternating between the nodes, are refused at the limit on either node (counted in
/// the database, then in Redis). Detection is off: limits hold without it.
async fn two_nodes_share_rate_limits(backend: Backend) {
    if backend != Backend::Postgres {
        return; // several nodes share PostgreSQL only
    }
    let redis = std::env::var("STRONGROOM_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let redis_answers = redis_answers(&redis).await;
    assert!(redis_answers || std::env::var("CI").as_deref() != Ok("true"), "Redis is required under CI=true");
    for counted_in in ["database", "redis"] {
        if counted_in == "redis" && !redis_answers {
            eprintln!("Redis not reachable at {redis}: the Redis case is SKIPPED");
            continue;
        }
        let Some(server) = TestServer::spawn_with(backend, |c| {
            c.detection.enabled = false;
            c.vault.reveals_per_minute = 4;
            if counted_in == "redis" {
                c.detection.redis_url = Some(strongroom_types::Secret::new(redis.clone()));
            }
        })
        .await
        else {
            return;
        };
        let clock = Arc::new(ManualClock::new(server.clock.now()));
        let node_b = strongroom::Application::build(&server.config, clock, Arc::new(OsEntropy)).await.unwrap();
        let scheme = if server.base_url.starts_with("https") { "https" } else { "http" };
        let bases = [server.base_url.clone(), format!("{scheme}://{}", node_b.api_addr())];
        let send = |n: usize, path: &str, body: Value| {
            server.client.post(format!("{}{path}", bases[n % 2])).bearer_auth(&server.bootstrap_key).json(&body).send()
        };

        // Reveals: four a minute for the key, two on each node; the fifth is refused on both.
        let (status, token) =
            post(&server, &server.bootstrap_key, "/v1/tokens", &json!({"type": "name", "value": "Ada"})).await;
        assert_eq!(status, 201, "{token}");
        let reveal = format!("/v1/tokens/{}/reveal", token["id"].as_str().unwrap());
        let body = json!({"view": "masked", "reason": "support"});
        for n in 0..4 {
            assert_eq!(send(n, &reveal, body.clone()).await.unwrap().status(), 200, "{counted_in}: reveal {n}");
        }
        for n in 0..2 {
            let refused = send(n, &reveal, body.clone()).await.unwrap();
            assert_eq!(refused.status(), 429, "{counted_in}: node {n} knows the key's minute is spent");
            assert!(refused.headers().get("retry-after").is_some());
        }

        // Failed sign-ins: 100 per client in 15 minutes, half on each node; the 101st waits on
        // both, while another client signs in (and fails) as usual.
        let failures: Vec<_> = (0..100usize)
            .map(|n| {
                let body = json!({"email": format!("limit{n}@example.com"), "password": "not it at all 1234",
                    "client": {"ip": ATTACKER}});
                send(n, "/v1/identity/login", body)
            })
            .collect();
        for (n, failure) in futures::future::join_all(failures).await.into_iter().enumerate() {
            assert_eq!(failure.unwrap().status(), 401, "{counted_in}: failure {n}");
        }
        for n in 0..2 {
            let body = json!({"email": "limit-next@example.com", "password": "not it at all 1234",
                "client": {"ip": ATTACKER}});
            let refused = send(n, "/v1/identity/login", body).await.unwrap();
            assert_eq!(refused.status(), 429, "{counted_in}: node {n}");
            assert!(refused.headers().get("retry-after").is_some());
            let problem: Value = refused.json().await.unwrap();
            assert_eq!(problem["code"], "login_throttled", "{counted_in}: {problem}");
        }
        let body = json!({"email": "limit-next@example.com", "password": "not it at all 1234",
            "client": {"ip": BYSTANDER}});
        assert_eq!(send(1, "/v1/identity/login", body).await.unwrap().status(), 401, "{counted_in}: another client");
        node_b.shutdown().await;
        server.shutdown().await;
    }
}

async fn redis_answers(url: &str) -> bool {
    strongroom_connectors::redis_counts::RedisCounts::connect(url, None).await.is_ok()
}
