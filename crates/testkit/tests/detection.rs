//! Black-box tests of intrusion detection's decisions on a real server, on SQLite and PostgreSQL:
//! credential stuffing from one client blocks that client's customer sign-ins (and only its),
//! the decision is listed, audited and sent as an event; of 30 concurrent lifts one wins and the
//! client may sign in again; blocks made by hand are extended and lifted; bad input is named;
//! token guessing suspends the guessing API key (and only it) until lifted; and on PostgreSQL a
//! block made on one node is enforced by a second node within a second.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code fails loudly")]

use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};
use strongroom_testkit::{Backend, TestServer, on_both_backends};
use strongroom_types::{Clock, ManualClock, OsEntropy, SystemClock};

on_both_backends!(
    credential_stuffing_blocks_the_client_until_lifted_once,
    blocks_made_by_hand_are_extended_lifted_and_checked,
    token_guessing_suspends_the_key_until_lifted,
    the_operator_lists_extends_and_lifts_decisions_from_the_command_line,
    a_block_on_one_node_holds_on_another_within_a_second
);

const ATTACKER: &str = "203.0.113.50";
const BYSTANDER: &str = "198.51.100.9";

async fn post(server: &TestServer, path: &str, body: &Value) -> (u16, Value) {
    server.call(&server.bootstrap_key, Method::POST, path, Some(body)).await
}

async fn get(server: &TestServer, path: &str) -> (u16, Value) {
    server.call(&server.bootstrap_key, Method::GET, path, None).await
}

/// A customer sign-in from `ip` (the shop passes its customer's address).
async fn login(base: &str, server: &TestServer, email: &str, ip: &str) -> (u16, Value, Option<String>) {
    let body = json!({"email": email, "password": "not the password 1234", "client": {"ip": ip}});
    let response = server
        .client
        .post(format!("{base}/v1/identity/login"))
        .bearer_auth(&server.bootstrap_key)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let retry = response.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(str::to_owned);
    (status, response.json().await.unwrap_or(Value::Null), retry)
}

async fn audit_text(server: &TestServer) -> String {
    let size = server.get_json("/v1/audit/entries?start=0&limit=1").await["tree_size"].as_u64().unwrap();
    server.get_json(&format!("/v1/audit/entries?start=0&limit={}", size.clamp(1, 1000))).await.to_string()
}

async fn credential_stuffing_blocks_the_client_until_lifted_once(backend: Backend) {
    let Some(server) = TestServer::spawn(backend).await else { return };
    let body = json!({"url": "http://127.0.0.1:9/hook", "event_types": ["security.decision_made"]});
    assert_eq!(post(&server, "/v1/webhook_endpoints", &body).await.0, 201);
    let base = server.base_url.clone();
    // Ten different accounts from one client: credential stuffing.
    for n in 0..10 {
        let (status, _, _) = login(&base, &server, &format!("victim{n}@example.com"), ATTACKER).await;
        assert_eq!(status, 401);
    }
    let (status, refused, retry) = login(&base, &server, "victim0@example.com", ATTACKER).await;
    assert_eq!((status, refused["code"].as_str()), (429, Some("client_blocked")), "{refused}");
    let retry: u64 = retry.expect("Retry-After").parse().unwrap();
    assert!((850..=900).contains(&retry), "blocked for the 15 minutes: {retry}");
    // Another client is not affected.
    assert_eq!(login(&base, &server, "victim0@example.com", BYSTANDER).await.0, 401);

    let (status, list) = get(&server, "/v1/security/decisions").await;
    assert_eq!(status, 200, "{list}");
    let data = list["data"].as_array().unwrap();
    assert_eq!(data.len(), 1, "{list}");
    let decision = &data[0];
    assert_eq!(decision["scope"], json!({"kind": "ip", "address": ATTACKER}));
    assert_eq!(
        (decision["reason"].as_str(), decision["created_by"].as_str()),
        (Some("credential_stuffing"), Some("detector"))
    );
    assert_eq!((decision["in_force"].as_bool(), decision["strikes"].as_u64()), (Some(true), Some(1)));
    let id = decision["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("dec_"));
    let audit = audit_text(&server).await;
    assert!(audit.contains("security.decision_made") && audit.contains("client_blocked"), "audited");
    let events: Vec<(String,)> =
        server.query_rows("SELECT channel FROM outbox WHERE event_type = $1", "security.decision_made").await;
    let mut channels: Vec<&str> = events.iter().map(|e| e.0.as_str()).collect();
    channels.sort_unstable();
    assert_eq!(channels, ["alert", "webhook"], "the shop's endpoint and the operator's alert webhook get it");

    // Thirty concurrent lifts: one lifts it, the others are told it is not in force.
    let path = format!("/v1/security/decisions/{id}/lift");
    let empty = json!({});
    let lifts = (0..30).map(|_| post(&server, &path, &empty));
    let answers = futures::future::join_all(lifts).await;
    let won = answers.iter().filter(|a| a.0 == 200).count();
    assert_eq!(won, 1, "{answers:?}");
    assert!(answers.iter().all(|a| a.0 == 200 || (a.0 == 409 && a.1["code"] == "decision_not_in_force")));
    assert_eq!(login(&base, &server, "victim0@example.com", ATTACKER).await.0, 401, "free again at once");
    let (_, lifted) = get(&server, &format!("/v1/security/decisions/{id}")).await;
    assert_eq!((lifted["in_force"].as_bool(), lifted["lifted_by"].is_string()), (Some(false), true), "{lifted}");
    let (_, holding) = get(&server, "/v1/security/decisions").await;
    assert_eq!(holding["data"], json!([]));
    let (_, all) = get(&server, "/v1/security/decisions?in_force=false").await;
    assert_eq!(all["data"].as_array().unwrap().len(), 1);
}

async fn blocks_made_by_hand_are_extended_lifted_and_checked(backend: Backend) {
    let Some(server) = TestServer::spawn(backend).await else { return };
    let base = server.base_url.clone();
    let body = json!({"scope": {"kind": "prefix", "address": "203.0.113.0/24"}, "duration_seconds": 600,
        "note": "scraping the sign-in page"});
    let (status, made) = post(&server, "/v1/security/decisions", &body).await;
    assert_eq!(status, 201, "{made}");
    assert_eq!((made["reason"].as_str(), made["action"].as_str()), (Some("manual"), Some("block")));
    assert_eq!(made["scope"]["address"], "203.0.113.0/24");
    let id = made["id"].as_str().unwrap().to_owned();
    // Any address of the prefix is refused; others are not.
    assert_eq!(login(&base, &server, "a@example.com", "203.0.113.201").await.0, 429);
    assert_eq!(login(&base, &server, "a@example.com", "203.0.114.1").await.0, 401);
    // Once in force, a second one for the same client is refused.
    let (status, again) = post(&server, "/v1/security/decisions", &body).await;
    assert_eq!((status, again["code"].as_str()), (409, Some("decision_exists")), "{again}");

    let (status, extended) =
        post(&server, &format!("/v1/security/decisions/{id}/extend"), &json!({"duration_seconds": 7200})).await;
    assert_eq!(status, 200, "{extended}");
    let (_, _, retry) = login(&base, &server, "a@example.com", "203.0.113.5").await;
    let retry: u64 = retry.unwrap().parse().unwrap();
    assert!((7100..=7200).contains(&retry), "{retry}");
    // It ends on its own: the test clock moves past it.
    server.clock.advance(Duration::from_secs(7201));
    assert_eq!(login(&base, &server, "a@example.com", "203.0.113.5").await.0, 401, "ended");
    let (status, late) = post(&server, &format!("/v1/security/decisions/{id}/lift"), &json!({})).await;
    assert_eq!((status, late["code"].as_str()), (409, Some("decision_not_in_force")));
    // Decided again within a day: the second strike (a hand-made block lasts what was asked).
    let (status, second) = post(&server, "/v1/security/decisions", &body).await;
    assert_eq!((status, second["strikes"].as_u64()), (201, Some(2)), "{second}");
    assert_ne!(second["id"], made["id"]);

    // Bad input is named, never echoed.
    for (body, pointer) in [
        (json!({"scope": {"kind": "asn", "address": "64500"}, "duration_seconds": 600}), "/scope/kind"),
        (json!({"scope": {"kind": "ip", "address": "secret-canary-1"}, "duration_seconds": 600}), "/scope/address"),
        (json!({"scope": {"kind": "prefix", "address": "203.0.0.0/16"}, "duration_seconds": 600}), "/scope/address"),
        (json!({"scope": {"kind": "ip", "address": "192.0.2.1"}, "duration_seconds": 5}), "/duration_seconds"),
    ] {
        let (status, problem) = post(&server, "/v1/security/decisions", &body).await;
        assert_eq!((status, problem["errors"][0]["pointer"].as_str()), (422, Some(pointer)), "{problem}");
        assert!(!problem.to_string().contains("secret-canary-1"));
    }
    assert_eq!(get(&server, "/v1/security/decisions/dec_unknown").await.0, 404);
    // Only holders of security:manage.
    let (_, reader) = server.create_key("payments reader", &["payments:read"]).await;
    let (status, _) = server.call(&reader, Method::GET, "/v1/security/decisions", None).await;
    assert_eq!(status, 403);
}

async fn a_block_on_one_node_holds_on_another_within_a_second(backend: Backend) {
    if backend != Backend::Postgres {
        return; // several nodes share PostgreSQL only
    }
    let Some(server) = TestServer::spawn(backend).await else { return };
    let clock = Arc::new(ManualClock::new(SystemClock.now()));
    let node_b = strongroom::Application::build(&server.config, clock, Arc::new(OsEntropy)).await.unwrap();
    let scheme = if server.base_url.starts_with("https") { "https" } else { "http" };
    let base_b = format!("{scheme}://{}", node_b.api_addr());
    assert_eq!(login(&base_b, &server, "b@example.com", "192.0.2.77").await.0, 401);

    let body = json!({"scope": {"kind": "ip", "address": "192.0.2.77"}, "duration_seconds": 600});
    let (status, made) = post(&server, "/v1/security/decisions", &body).await;
    assert_eq!(status, 201, "{made}");
    let started = Instant::now();
    let blocked_after = loop {
        if login(&base_b, &server, "b@example.com", "192.0.2.77").await.0 == 429 {
            break started.elapsed();
        }
        assert!(started.elapsed() < Duration::from_secs(3), "node B never applied the block");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(blocked_after <= Duration::from_millis(1100), "node B applied it after {blocked_after:?}");

    let id = made["id"].as_str().unwrap();
    assert_eq!(post(&server, &format!("/v1/security/decisions/{id}/lift"), &json!({})).await.0, 200);
    let started = Instant::now();
    let mut attempt = 0;
    let freed_after = loop {
        // A new account each time: failed sign-ins of one account are slowed down on their own.
        attempt += 1;
        if login(&base_b, &server, &format!("b{attempt}@example.com"), "192.0.2.77").await.0 == 401 {
            break started.elapsed();
        }
        assert!(started.elapsed() < Duration::from_secs(3), "node B never applied the lift");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(freed_after <= Duration::from_millis(1100), "node B applied the lift after {freed_after:?}");
    node_b.shutdown().await;
}

async fn token_guessing_suspends_the_key_until_lifted(backend: Backend) {
    let Some(server) = TestServer::spawn_with(backend, |config| config.detection.token_guesses = 20).await else {
        return;
    };
    let (key_id, guesser) = server.create_key("guesser", &["vault:read"]).await;
    let unknown =
        |n: usize| format!("tok_{}", "abcdefghijklmnopqrstuvwxyz".chars().cycle().skip(n).take(26).collect::<String>());
    for n in 0..20 {
        let (status, _) = server.call(&guesser, Method::GET, &format!("/v1/tokens/{}", unknown(n)), None).await;
        assert_eq!(status, 404, "guess {n}");
    }
    // The twentieth guess suspended the key: every request of it is refused now.
    let response =
        server.request_as(&guesser, Method::GET, &format!("/v1/tokens/{}", unknown(0))).send().await.unwrap();
    assert_eq!(response.status(), 403);
    let retry: u64 = response.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((850..=900).contains(&retry), "{retry}");
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["code"], "api_key_suspended", "{problem}");
    // Other keys go on.
    let token = post(&server, "/v1/tokens", &json!({"type": "email", "value": "a@example.com"})).await.1;
    assert_eq!(get(&server, &format!("/v1/tokens/{}", token["id"].as_str().unwrap())).await.0, 200);

    let (_, list) = get(&server, "/v1/security/decisions").await;
    let decision = &list["data"][0];
    assert_eq!(decision["scope"], json!({"kind": "api_key", "address": key_id}), "{list}");
    assert_eq!((decision["action"].as_str(), decision["reason"].as_str()), (Some("suspend"), Some("token_guessing")));
    let audit = audit_text(&server).await;
    assert!(audit.contains("api_key_suspended"), "the refusal is audited");

    let id = decision["id"].as_str().unwrap();
    assert_eq!(post(&server, &format!("/v1/security/decisions/{id}/lift"), &json!({})).await.0, 200);
    let (status, _) = server.call(&guesser, Method::GET, &format!("/v1/tokens/{}", unknown(0)), None).await;
    assert_eq!(status, 404, "the key works again");
}

async fn the_operator_lists_extends_and_lifts_decisions_from_the_command_line(backend: Backend) {
    let Some(mut server) = TestServer::spawn(backend).await else { return };
    let body = json!({"scope": {"kind": "ip", "address": "192.0.2.99"}, "duration_seconds": 600});
    let (status, made) = post(&server, "/v1/security/decisions", &body).await;
    assert_eq!(status, 201, "{made}");
    let id = made["id"].as_str().unwrap().to_owned();
    server.stop().await;
    let data_dir = server.data_dir();
    let database_url = server.config.database_url.as_ref().map(|url| url.expose().clone());
    let run = |extra: Vec<String>| {
        let mut args = vec!["strongroom".to_owned(), "--data-dir".into(), data_dir.to_str().unwrap().into()];
        if let Some(url) = &database_url {
            args.extend(["--database-url".into(), url.clone()]);
        }
        args.push("decisions".into());
        args.extend(extra);
        strongroom::commands::run(strongroom::commands::Cli::try_parse_from(args).unwrap())
    };
    use clap::Parser;
    assert_eq!(run(vec!["list".into()]).await, 0);
    assert_eq!(run(vec!["list".into(), "--json".into()]).await, 0);
    assert_eq!(run(vec!["extend".into(), id.clone(), "--for".into(), "2h".into()]).await, 0);
    assert_eq!(run(vec!["lift".into(), id.clone()]).await, 0);
    assert_ne!(run(vec!["lift".into(), id.clone()]).await, 0, "a second lift finds none in force");
    assert_ne!(run(vec!["extend".into(), id.clone(), "--for".into(), "soon".into()]).await, 0);
    server.restart().await;
    let (_, read) = get(&server, &format!("/v1/security/decisions/{id}")).await;
    assert_eq!((read["in_force"].as_bool(), read["lifted_by"].as_str()), (Some(false), Some("operator")), "{read}");
    let audit = audit_text(&server).await;
    assert!(audit.contains("security.decision_extended") && audit.contains("operator"), "audited as the operator");
    server.shutdown().await;
}
