//! Black-box tests of incidents and playbooks on a real server, on SQLite and PostgreSQL:
//! credential stuffing opens an incident (with its decision, client and events) and a second
//! detection joins it; thirty concurrent detections open exactly one; incidents opened by hand,
//! moved through their states (a stale change is refused), assigned and noted, all audited;
//! bad input named and never echoed; no password or card number in any incident body; and the
//! playbook steps.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code fails loudly")]

use std::sync::Arc;

use reqwest::Method;
use serde_json::{Value, json};
use strongroom_domain::detection::incidents::{Detected, Severity, Subject};
use strongroom_domain::merchants::MerchantId;
use strongroom_testkit::{Backend, TestServer, on_both_backends};

on_both_backends!(
    credential_stuffing_opens_an_incident_that_later_detections_join,
    thirty_concurrent_detections_open_one_incident,
    incidents_are_opened_moved_assigned_and_noted_by_hand,
    incident_bodies_hold_no_password_or_card_number,
);

const ATTACKER: &str = "203.0.113.50";
const PASSWORD: &str = "correct horse battery staple 42";

async fn post(server: &TestServer, path: &str, body: &Value) -> (u16, Value) {
    server.call(&server.bootstrap_key, Method::POST, path, Some(body)).await
}

async fn get(server: &TestServer, path: &str) -> (u16, Value) {
    server.call(&server.bootstrap_key, Method::GET, path, None).await
}

async fn audit_text(server: &TestServer) -> String {
    let size = server.get_json("/v1/audit/entries?start=0&limit=1").await["tree_size"].as_u64().unwrap();
    server.get_json(&format!("/v1/audit/entries?start=0&limit={}", size.clamp(1, 1000))).await.to_string()
}

/// Ten failed sign-ins on ten accounts from one client: credential stuffing.
async fn stuff_credentials(server: &TestServer, from: &str) {
    for n in 0..10 {
        let body = json!({"email": format!("victim{n}@example.com"), "password": "not the password 1234",
            "client": {"ip": from}});
        let (status, _) = post(server, "/v1/identity/login", &body).await;
        assert_eq!(status, 401);
    }
    let body = json!({"email": "victim0@example.com", "password": "x", "client": {"ip": from}});
    assert_eq!(post(server, "/v1/identity/login", &body).await.0, 429, "blocked");
}

async fn credential_stuffing_opens_an_incident_that_later_detections_join(backend: Backend) {
    let Some(server) = TestServer::spawn(backend).await else { return };
    let body = json!({"url": "http://127.0.0.1:9/hook", "event_types": ["security.incident_opened"]});
    assert_eq!(post(&server, "/v1/webhook_endpoints", &body).await.0, 201);
    assert_eq!(get(&server, "/v1/security/incidents").await.1["data"], json!([]));
    stuff_credentials(&server, ATTACKER).await;

    let (status, list) = get(&server, "/v1/security/incidents").await;
    assert_eq!(status, 200, "{list}");
    let data = list["data"].as_array().unwrap();
    assert_eq!(data.len(), 1, "{list}");
    let listed = &data[0];
    assert_eq!((listed["state"].as_str(), listed["severity"].as_str()), (Some("open"), Some("high")), "{listed}");
    assert_eq!(listed["opened_by"], "detector");
    assert!(listed.get("timeline").is_none(), "lists leave the timeline out");
    let id = listed["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("inc_"), "{id}");

    let (status, incident) = get(&server, &format!("/v1/security/incidents/{id}")).await;
    assert_eq!(status, 200, "{incident}");
    let decision = get(&server, "/v1/security/decisions").await.1["data"][0]["id"].as_str().unwrap().to_owned();
    let timeline = incident["timeline"].as_array().unwrap();
    assert_eq!(timeline.len(), 1, "{incident}");
    assert_eq!((timeline[0]["kind"].as_str(), timeline[0]["actor"].as_str()), (Some("detection"), Some("detector")));
    assert_eq!(timeline[0]["data"]["point"], "credential_stuffing");
    assert_eq!(timeline[0]["data"]["decision"], decision.as_str());
    assert_eq!(incident["subjects"], json!([{"kind": "client", "value": ATTACKER}]));

    // A second client stuffing credentials joins the open incident; its client is added once.
    stuff_credentials(&server, "198.51.100.77").await;
    let (_, list) = get(&server, "/v1/security/incidents").await;
    assert_eq!(list["data"].as_array().unwrap().len(), 1, "joined, not opened: {list}");
    let (_, incident) = get(&server, &format!("/v1/security/incidents/{id}")).await;
    assert_eq!(incident["timeline"].as_array().unwrap().len(), 2, "{incident}");
    assert_eq!(incident["subjects"].as_array().unwrap().len(), 2, "{incident}");

    let audit = audit_text(&server).await;
    assert!(audit.contains("security.incident_opened") && audit.contains("security.incident_joined"), "audited");
    let events: Vec<(String,)> =
        server.query_rows("SELECT channel FROM outbox WHERE event_type = $1", "security.incident_opened").await;
    let mut channels: Vec<&str> = events.iter().map(|e| e.0.as_str()).collect();
    channels.sort_unstable();
    assert_eq!(channels, ["alert", "webhook"], "once, to the shop's endpoint and the alert webhook");
}

async fn thirty_concurrent_detections_open_one_incident(backend: Backend) {
    let Some(server) = TestServer::spawn(backend).await else { return };
    let server = Arc::new(server);
    let merchant = MerchantId::parse(&server.merchant_id).unwrap();
    let racers: Vec<_> = (0..30)
        .map(|n| {
            let server = server.clone();
            let merchant = merchant.clone();
            tokio::spawn(async move {
                let detected = Detected {
                    merchant: Some(merchant),
                    point: "credential_stuffing".to_owned(),
                    severity: if n == 29 { Severity::Critical } else { Severity::High },
                    summary: format!("client {n} tried many accounts"),
                    decision: None,
                    subjects: vec![Subject::Client(format!("192.0.2.{n}")), Subject::Client("192.0.2.1".to_owned())],
                };
                server.app().state.incidents.detected(detected).await
            })
        })
        .collect();
    let mut ids = Vec::new();
    for racer in racers {
        ids.push(racer.await.unwrap().unwrap().expect("at or above the threshold").id);
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "one incident: {ids:?}");
    let rows: Vec<(String,)> =
        server.query_rows("SELECT id FROM security_incidents WHERE merchant_key = $1", &server.merchant_id).await;
    assert_eq!(rows.len(), 1, "one row");
    let (_, incident) = get(&server, &format!("/v1/security/incidents/{}", ids[0])).await;
    assert_eq!(incident["timeline"].as_array().unwrap().len(), 30, "every detection on the timeline");
    assert_eq!(incident["subjects"].as_array().unwrap().len(), 30, "192.0.2.1 once: {incident}");
    assert_eq!(incident["severity"], "critical", "the highest that joined");
    let opened: Vec<(String,)> =
        server.query_rows("SELECT id FROM outbox WHERE event_type = $1", "security.incident_opened").await;
    assert_eq!(opened.len(), 1, "opened once (alert webhook)");

    // Below the threshold (medium by default): nothing.
    let low = Detected {
        merchant: Some(merchant),
        point: "odd_header".to_owned(),
        severity: Severity::Low,
        summary: "a header no client of ours sends".to_owned(),
        decision: None,
        subjects: vec![],
    };
    assert!(server.app().state.incidents.detected(low).await.unwrap().is_none());
}

async fn incidents_are_opened_moved_assigned_and_noted_by_hand(backend: Backend) {
    let Some(server) = TestServer::spawn(backend).await else { return };
    let body = json!({"title": "Phishing mail impersonating the shop", "severity": "medium",
        "note": "reported by three customers", "subjects": [{"kind": "client", "value": "192.0.2.9"}]});
    let (status, opened) = post(&server, "/v1/security/incidents", &body).await;
    assert_eq!(status, 201, "{opened}");
    let id = opened["id"].as_str().unwrap().to_owned();
    assert_eq!(
        (opened["state"].as_str(), opened["opened_by"].as_str().map(|s| s.starts_with("key_"))),
        (Some("open"), Some(true))
    );
    assert_eq!(opened["timeline"][0]["kind"], "opened");
    // One active incident per shop.
    let (status, again) = post(&server, "/v1/security/incidents", &body).await;
    assert_eq!((status, again["code"].as_str()), (409, Some("incident_already_open")), "{again}");

    let path = format!("/v1/security/incidents/{id}");
    let (status, contained) = post(&server, &path, &json!({"state": "contained"})).await;
    assert_eq!((status, contained["state"].as_str()), (200, Some("contained")), "{contained}");
    // A stale change: contained again from contained.
    let (status, stale) = post(&server, &path, &json!({"state": "contained"})).await;
    assert_eq!((status, stale["code"].as_str()), (409, Some("incident_state_conflict")), "{stale}");
    // An assignee must be a staff member of the shop.
    let (status, problem) = post(&server, &path, &json!({"assignee": "stf_notastaffmember000000000"})).await;
    assert_eq!((status, problem["errors"][0]["pointer"].as_str()), (422, Some("/assignee")), "{problem}");
    let (status, noted) = post(&server, &format!("{path}/notes"), &json!({"text": "blocked the sender domain"})).await;
    assert_eq!((status, noted["kind"].as_str()), (201, Some("note")), "{noted}");

    // Thirty concurrent resolves: one resolves it; the others are told it is resolved.
    let resolve = json!({"state": "resolved"});
    let answers = futures::future::join_all((0..30).map(|_| post(&server, &path, &resolve))).await;
    assert_eq!(answers.iter().filter(|a| a.0 == 200).count(), 1, "{answers:?}");
    assert!(answers.iter().all(|a| a.0 == 200 || (a.0 == 409 && a.1["code"] == "incident_resolved")), "{answers:?}");
    let (_, resolved) = get(&server, &path).await;
    assert_eq!(resolved["state"], "resolved");
    assert!(resolved["resolved_at"].is_string());
    let kinds: Vec<&str> =
        resolved["timeline"].as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["opened", "state", "note", "state"]);
    // Resolved is final; a note is still taken (the review); a new one may be opened.
    let (status, reopen) = post(&server, &path, &json!({"state": "open"})).await;
    assert_eq!((status, reopen["code"].as_str()), (409, Some("incident_resolved")), "{reopen}");
    assert_eq!(post(&server, &format!("{path}/notes"), &json!({"text": "review done"})).await.0, 201);
    assert_eq!(post(&server, "/v1/security/incidents", &body).await.0, 201);
    let (_, open_only) = get(&server, "/v1/security/incidents?state=open").await;
    assert_eq!(open_only["data"].as_array().unwrap().len(), 1);
    let (_, all) = get(&server, "/v1/security/incidents").await;
    assert_eq!(all["data"].as_array().unwrap().len(), 2);

    let audit = audit_text(&server).await;
    for action in ["security.incident_opened", "security.incident_updated", "security.incident_noted"] {
        assert!(audit.contains(action), "{action} audited");
    }
    let updated: Vec<(String,)> =
        server.query_rows("SELECT channel FROM outbox WHERE event_type = $1", "security.incident_updated").await;
    assert!(updated.iter().any(|u| u.0 == "alert"), "state changes reach the alert webhook");

    // Bad input is named, never echoed.
    for (body, pointer) in [
        (json!({"title": "x", "severity": "apocalyptic"}), "/severity"),
        (json!({"title": "", "severity": "low"}), "/title"),
        (
            json!({"title": "x", "severity": "low", "subjects": [{"kind": "account", "value": "secret-canary-9@example.com"}]}),
            "/subjects/0/value",
        ),
        (json!({"title": "x", "severity": "low", "subjects": [{"kind": "card", "value": "1"}]}), "/subjects/0/kind"),
    ] {
        let (status, problem) = post(&server, "/v1/security/incidents", &body).await;
        assert_eq!((status, problem["errors"][0]["pointer"].as_str()), (422, Some(pointer)), "{problem}");
        assert!(!problem.to_string().contains("secret-canary-9"));
    }
    let (status, problem) = get(&server, "/v1/security/incidents?state=closed").await;
    assert_eq!(status, 422, "{problem}");
    assert_eq!(get(&server, "/v1/security/incidents/inc_unknown").await.0, 404);
    // Only holders of security:manage; a test key never.
    let (_, reader) = server.create_key("payments reader", &["payments:read"]).await;
    assert_eq!(server.call(&reader, Method::GET, "/v1/security/incidents", None).await.0, 403);
}

async fn incident_bodies_hold_no_password_or_card_number(backend: Backend) {
    let Some(server) = TestServer::spawn(backend).await else { return };
    let card = "4242424242424242";
    // A customer whose password is a canary, stuffed along with the others.
    let (customer, _) = server.signed_in_customer("canary@example.com", PASSWORD).await;
    stuff_credentials(&server, ATTACKER).await;
    let (_, list) = get(&server, "/v1/security/incidents").await;
    let id = list["data"][0]["id"].as_str().unwrap().to_owned();
    // Card numbers are refused in titles and notes, and masked in a detection's summary.
    let path = format!("/v1/security/incidents/{id}");
    let (status, problem) =
        post(&server, &format!("{path}/notes"), &json!({"text": format!("card {card} used")})).await;
    assert_eq!((status, problem["errors"][0]["pointer"].as_str()), (422, Some("/text")), "{problem}");
    let merchant = MerchantId::parse(&server.merchant_id).unwrap();
    let detected = Detected {
        merchant: Some(merchant),
        point: "card_testing".to_owned(),
        severity: Severity::High,
        summary: format!("many cards tried, the last {card}"),
        decision: None,
        subjects: vec![Subject::Account(customer.clone())],
    };
    server.app().state.incidents.detected(detected).await.unwrap();
    let (_, incident) = get(&server, &path).await;
    let mut text = incident.to_string();
    text.push_str(&get(&server, "/v1/security/incidents").await.1.to_string());
    for canary in [card, PASSWORD, "canary@example.com", "victim0@example.com"] {
        assert!(!text.contains(canary), "{canary} in {text}");
    }
    assert!(text.contains(&customer), "the account is named by its id");
    let stored: Vec<(String,)> =
        server.query_rows("SELECT data FROM security_incident_timeline WHERE text LIKE $1", &format!("%{card}%")).await;
    assert!(stored.is_empty(), "no card number stored");
}
