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
use strongroom_domain::identity::Client;
use strongroom_domain::merchants::MerchantId;
use strongroom_testkit::{Backend, TestServer, on_both_backends};

on_both_backends!(
    credential_stuffing_opens_an_incident_that_later_detections_join,
    thirty_concurrent_detections_open_one_incident,
    incidents_are_opened_moved_assigned_and_noted_by_hand,
    incident_bodies_hold_no_password_or_card_number,
    freezing_refunds_and_forwarding_refuses_them_until_unfrozen,
    dangerous_steps_by_staff_need_a_second_security_member,
    account_steps_end_sessions_force_resets_notify_and_suspend_keys,
    exported_evidence_proves_against_the_signed_checkpoint,
    the_operator_lists_shows_works_and_resolves_incidents_from_the_command_line,
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
    assert_eq!(incident["subjects"], json!([{"kind": "client", "id": ATTACKER}]));

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
        "note": "reported by three customers", "subjects": [{"kind": "client", "id": "192.0.2.9"}]});
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
            json!({"title": "x", "severity": "low", "subjects": [{"kind": "account", "id": "secret-canary-9@example.com"}]}),
            "/subjects/0/id",
        ),
        (json!({"title": "x", "severity": "low", "subjects": [{"kind": "card", "id": "1"}]}), "/subjects/0/kind"),
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

// ---------------------------------------------------------------------------------------------
// Playbooks

/// An incident opened by hand about `subjects`: its id.
async fn incident_about(server: &TestServer, subjects: Value) -> String {
    let body = json!({"title": "Suspicious activity", "severity": "high", "subjects": subjects});
    let (status, opened) = post(server, "/v1/security/incidents", &body).await;
    assert_eq!(status, 201, "{opened}");
    opened["id"].as_str().unwrap().to_owned()
}

async fn step_as(server: &TestServer, key: &str, id: &str, step: &str, body: &Value) -> (u16, Value) {
    server.call(key, Method::POST, &format!("/v1/security/incidents/{id}/playbooks/{step}"), Some(body)).await
}

async fn step(server: &TestServer, id: &str, step: &str, body: &Value) -> Value {
    let (status, done) = step_as(server, &server.bootstrap_key, id, step, body).await;
    assert_eq!(status, 200, "{step}: {done}");
    assert_eq!(done["entry"]["kind"], "playbook");
    assert_eq!(done["entry"]["data"]["step"], step);
    done
}

/// A succeeded payment of 50.00 EUR: its id.
async fn paid(server: &TestServer) -> String {
    let card = json!({"type": "card", "value": {"number": "4242424242424242", "exp_month": 12, "exp_year": 2040, "cvc": "123"}});
    let (status, token) = post(server, "/v1/tokens", &card).await;
    assert_eq!(status, 201, "{token}");
    let body = json!({"amount": 5000, "currency": "EUR", "payment_method": token["id"]});
    let (status, intent) = post(server, "/v1/payment_intents", &body).await;
    assert_eq!(status, 201, "{intent}");
    let id = intent["id"].as_str().unwrap().to_owned();
    let (status, confirmed) = post(server, &format!("/v1/payment_intents/{id}/confirm"), &json!({})).await;
    assert_eq!((status, confirmed["status"].as_str()), (200, Some("succeeded")), "{confirmed}");
    id
}

async fn freezing_refunds_and_forwarding_refuses_them_until_unfrozen(backend: Backend) {
    let Some(server) = TestServer::spawn(backend).await else { return };
    let id = incident_about(&server, json!([])).await;
    let intent = paid(&server).await;
    let refund = json!({"payment_intent": intent, "amount": 100});
    assert_eq!(post(&server, "/v1/refunds", &refund).await.0, 201, "refunds work before");

    let frozen = step(&server, &id, "freeze_refunds", &json!({})).await;
    assert_eq!(frozen["entry"]["data"]["outcome"], json!({"frozen": "refunds", "already_frozen": false}));
    let again = step(&server, &id, "freeze_refunds", &json!({})).await;
    assert_eq!(again["entry"]["data"]["outcome"]["already_frozen"], true, "one row, frozen once");
    let (status, problem) = post(&server, "/v1/refunds", &refund).await;
    assert_eq!((status, problem["code"].as_str()), (409, Some("refunds_frozen")), "{problem}");
    // Forwards go on until they are frozen too.
    let forward = json!({"destination": "https://api.stripe.com/v1/charges", "body": "amount=1"});
    let (status, answer) = post(&server, "/v1/forward", &forward).await;
    assert_ne!(answer["code"], "forwarding_frozen", "{status} {answer}");
    step(&server, &id, "freeze_forwarding", &json!({})).await;
    let (status, problem) = post(&server, "/v1/forward", &forward).await;
    assert_eq!((status, problem["code"].as_str()), (409, Some("forwarding_frozen")), "{problem}");

    // Lifting works on a resolved incident too; then both work again.
    let (status, _) = post(&server, &format!("/v1/security/incidents/{id}"), &json!({"state": "resolved"})).await;
    assert_eq!(status, 200);
    let (status, late) = step_as(&server, &server.bootstrap_key, &id, "freeze_refunds", &json!({})).await;
    assert_eq!((status, late["code"].as_str()), (409, Some("incident_resolved")), "{late}");
    let lifted = step(&server, &id, "unfreeze_refunds", &json!({})).await;
    assert_eq!(lifted["entry"]["data"]["outcome"]["was_frozen"], true);
    step(&server, &id, "unfreeze_forwarding", &json!({})).await;
    assert_eq!(post(&server, "/v1/refunds", &refund).await.0, 201, "refunds work again");
    let (_, answer) = post(&server, "/v1/forward", &forward).await;
    assert_ne!(answer["code"], "forwarding_frozen", "{answer}");

    let (_, incident) = get(&server, &format!("/v1/security/incidents/{id}")).await;
    let steps: Vec<&str> = incident["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "playbook")
        .map(|e| e["data"]["step"].as_str().unwrap())
        .collect();
    assert_eq!(
        steps,
        ["freeze_refunds", "freeze_refunds", "freeze_forwarding", "unfreeze_refunds", "unfreeze_forwarding"]
    );
    let audit = audit_text(&server).await;
    assert!(audit.contains("security.playbook_step") && audit.contains("forwarding_frozen"), "audited");
    let (status, _) = step_as(&server, &server.bootstrap_key, &id, "launch_missiles", &json!({})).await;
    assert_eq!(status, 404, "unknown steps are not found");
    let (status, problem) = step_as(&server, &server.bootstrap_key, &id, "export_evidence", &json!({})).await;
    assert_eq!(status, 200, "evidence after resolution: {problem}");
    let second = incident_about(&server, json!([])).await;
    let (status, problem) = step_as(&server, &server.bootstrap_key, &second, "rotate_keys", &json!({})).await;
    assert_eq!(status, 403, "the deployment's keys are the operator's: {problem}");
}

/// A staff member with `roles` who accepted an invitation and enrolled TOTP: the session token.
async fn staff_member(server: &TestServer, email: &str, roles: &[&str]) -> String {
    use strongroom_types::Clock;
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
    assert_eq!(public("/v1/staff/invitation/accept", accept).await.0, 200);
    let (status, body) = public("/v1/staff/login", json!({"email": email, "password": PASSWORD})).await;
    assert_eq!(status, 200, "{body}");
    let challenge = body["challenge"].as_str().unwrap().to_owned();
    let (status, enrolment) = public("/v1/staff/login/totp", json!({"challenge": challenge})).await;
    assert_eq!(status, 200, "{enrolment}");
    let secret = data_encoding::BASE32_NOPAD
        .decode(enrolment["secret"].as_str().unwrap().trim_end_matches('=').as_bytes())
        .unwrap();
    let now = u64::try_from(server.clock.now().unix_millis() / 1000).unwrap();
    let code = strongroom_crypto::totp::code_at(&secret, strongroom_crypto::totp::step_of(now));
    let (status, session) = public("/v1/staff/login/totp/confirm", json!({"challenge": challenge, "code": code})).await;
    assert_eq!(status, 200, "{session}");
    session["session"]["token"].as_str().unwrap().to_owned()
}

async fn dangerous_steps_by_staff_need_a_second_security_member(backend: Backend) {
    let Some(server) = TestServer::spawn(backend).await else { return };
    let ann = staff_member(&server, "ann@shop.example", &["security"]).await;
    let ben = staff_member(&server, "ben@shop.example", &["security"]).await;
    let sue = staff_member(&server, "sue@shop.example", &["support"]).await;
    let id = incident_about(&server, json!([])).await;
    let intent = paid(&server).await;
    let refund = json!({"payment_intent": intent, "amount": 100});

    // Ann asks: nothing is frozen, a request is opened.
    let (status, asked) = step_as(&server, &ann, &id, "freeze_refunds", &json!({})).await;
    assert_eq!((status, asked["code"].as_str()), (403, Some("approval_required")), "{asked}");
    let approval = asked["approval_id"].as_str().unwrap().to_owned();
    assert_eq!(post(&server, "/v1/refunds", &refund).await.0, 201, "not frozen yet");
    let approve = format!("/v1/approvals/{approval}/approve");
    assert_eq!(server.call(&ann, Method::POST, &approve, None).await.0, 403, "not her own request");
    assert_eq!(server.call(&sue, Method::POST, &approve, None).await.0, 403, "support is not security");
    let (status, target) = server.call(&ben, Method::GET, &format!("/v1/approvals/{approval}"), None).await;
    assert_eq!((status, target["target"].as_str()), (200, Some(format!("{id}:freeze_refunds:subjects").as_str())));
    let (status, decided) = server.call(&ben, Method::POST, &approve, None).await;
    assert_eq!((status, decided["status"].as_str()), (200, Some("approved")), "{decided}");
    // The approval serves that step only, once.
    let with = json!({"approval_id": approval});
    let (status, wrong) = step_as(&server, &ann, &id, "freeze_forwarding", &with).await;
    assert_eq!((status, wrong["code"].as_str()), (422, Some("approval_not_usable")), "{wrong}");
    let (status, done) = step_as(&server, &ann, &id, "freeze_refunds", &with).await;
    assert_eq!(status, 200, "{done}");
    assert!(done["entry"]["actor"].as_str().unwrap().starts_with("stf_"));
    let (status, twice) = step_as(&server, &ann, &id, "freeze_refunds", &with).await;
    assert_eq!((status, twice["code"].as_str()), (422, Some("approval_not_usable")), "{twice}");
    assert_eq!(post(&server, "/v1/refunds", &refund).await.1["code"], "refunds_frozen");
    // Safe steps need no second person; ending every session of the deployment is the operator's.
    let (status, _) = step_as(&server, &ann, &id, "unfreeze_refunds", &json!({})).await;
    assert_eq!(status, 200);
    let (status, problem) =
        step_as(&server, &server.bootstrap_key, &id, "revoke_sessions", &json!({"scope": "everyone"})).await;
    assert_eq!(status, 403, "{problem}");
    // Support staff cannot reach incidents at all.
    assert_eq!(server.call(&sue, Method::GET, "/v1/security/incidents", None).await.0, 403);
    let audit = audit_text(&server).await;
    assert!(audit.contains("approval.requested") && audit.contains("approval.used"), "audited");
}

async fn account_steps_end_sessions_force_resets_notify_and_suspend_keys(backend: Backend) {
    let Some(server) = TestServer::spawn(backend).await else { return };
    let (alice, alice_session) = server.signed_in_customer("alice@example.com", PASSWORD).await;
    let (_, bob_session) = server.signed_in_customer("bob@example.com", PASSWORD).await;
    let (key_id, key) = server.create_key("leaked", &["vault:read"]).await;
    let id =
        incident_about(&server, json!([{"kind": "account", "id": alice}, {"kind": "api_key", "id": key_id}])).await;
    assert_eq!(server.call(&alice_session, Method::GET, "/v1/me", None).await.0, 200);

    let done = step(&server, &id, "revoke_sessions", &json!({})).await;
    assert_eq!(done["entry"]["data"]["outcome"]["customer_sessions_ended"], 1, "{done}");
    assert_eq!(server.call(&alice_session, Method::GET, "/v1/me", None).await.0, 401, "signed out");
    assert_eq!(server.call(&bob_session, Method::GET, "/v1/me", None).await.0, 200, "others stay");
    let (status, problem) =
        step_as(&server, &server.bootstrap_key, &id, "revoke_sessions", &json!({"scope": "account"})).await;
    assert_eq!((status, problem["errors"][0]["pointer"].as_str()), (422, Some("/account")), "{problem}");
    step(&server, &id, "revoke_sessions", &json!({"scope": "merchant"})).await;
    assert_eq!(server.call(&bob_session, Method::GET, "/v1/me", None).await.0, 401, "every customer");

    let login = |email: &str| json!({"email": email, "password": PASSWORD, "client": {"ip": "198.51.100.7"}});
    let done = step(&server, &id, "force_password_reset", &json!({})).await;
    assert_eq!(done["entry"]["data"]["outcome"]["accounts_reset"], 1);
    assert_eq!(post(&server, "/v1/identity/login", &login("alice@example.com")).await.0, 401, "the password is gone");
    assert_eq!(post(&server, "/v1/identity/login", &login("bob@example.com")).await.0, 200, "not affected");

    let mails_before: Vec<(String,)> = server.query_rows("SELECT id FROM outbox WHERE channel = $1", "mail").await;
    let done = step(&server, &id, "notify_customers", &json!({})).await;
    assert_eq!(done["entry"]["data"]["outcome"]["customers_notified"], 1);
    let mails_after: Vec<(String,)> = server.query_rows("SELECT id FROM outbox WHERE channel = $1", "mail").await;
    assert_eq!(mails_after.len(), mails_before.len() + 1, "one mail, queued");

    let done = step(&server, &id, "suspend_api_keys", &json!({})).await;
    assert_eq!(done["entry"]["data"]["outcome"]["decisions"].as_array().unwrap().len(), 1, "{done}");
    let (status, problem) = server.call(&key, Method::GET, "/v1/tokens/tok_abcdefghijklmnopqrstuvwxyz", None).await;
    assert_eq!((status, problem["code"].as_str()), (403, Some("api_key_suspended")), "{problem}");
    let again = step(&server, &id, "suspend_api_keys", &json!({})).await;
    assert_eq!(again["entry"]["data"]["outcome"]["already_suspended"], json!([key_id]));
    let (status, problem) =
        step_as(&server, &server.bootstrap_key, &id, "suspend_api_keys", &json!({"api_keys": ["secret-canary-3"]}))
            .await;
    assert_eq!((status, problem["errors"][0]["pointer"].as_str()), (422, Some("/api_keys/0")), "{problem}");
    assert!(!problem.to_string().contains("secret-canary-3"));
}

async fn exported_evidence_proves_against_the_signed_checkpoint(backend: Backend) {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use strongroom_domain::audit::checkpoint::VerifierKey;
    use strongroom_domain::audit::merkle;
    let Some(server) = TestServer::spawn(backend).await else { return };
    let (alice, _) = server.signed_in_customer("alice@example.com", PASSWORD).await;
    stuff_credentials(&server, ATTACKER).await;
    let id = get(&server, "/v1/security/incidents").await.1["data"][0]["id"].as_str().unwrap().to_owned();
    // The account joins the incident through a detection about it.
    let detected = Detected {
        merchant: Some(MerchantId::parse(&server.merchant_id).unwrap()),
        point: "impossible_travel".to_owned(),
        severity: Severity::Medium,
        summary: "two sign-ins far apart".to_owned(),
        decision: None,
        subjects: vec![Subject::Account(alice.clone())],
    };
    server.app().state.incidents.detected(detected).await.unwrap();

    let done = step(&server, &id, "export_evidence", &json!({})).await;
    let evidence = &done["evidence"];
    let checkpoint = &evidence["checkpoint"];
    let key = VerifierKey::parse(checkpoint["verifier_key"].as_str().unwrap()).expect("a verifier key");
    let note = key.open(checkpoint["note"].as_str().unwrap()).expect("a checkpoint signed by the log");
    let size = checkpoint["size"].as_u64().unwrap();
    assert_eq!(note.size, size);
    let root: [u8; 32] = STANDARD.decode(checkpoint["root"].as_str().unwrap()).unwrap().try_into().unwrap();
    assert_eq!(note.root, root, "the root is the signed one");
    let entries = evidence["entries"].as_array().unwrap();
    let leaves: Vec<&str> = entries.iter().map(|e| e["leaf"].as_str().unwrap()).collect();
    assert!(leaves.iter().any(|l| l.contains(&alice)), "about the account");
    assert!(leaves.iter().any(|l| l.contains(ATTACKER)), "about the client");
    assert!(leaves.iter().any(|l| l.contains(&id) && l.contains("security.incident_opened")), "about the incident");
    for entry in entries {
        let leaf = entry["leaf"].as_str().unwrap();
        let hash = merkle::leaf_hash(leaf.as_bytes());
        assert_eq!(STANDARD.encode(hash), entry["leaf_hash"].as_str().unwrap());
        let proof: Vec<[u8; 32]> = entry["proof"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| STANDARD.decode(p.as_str().unwrap()).unwrap().try_into().unwrap())
            .collect();
        merkle::verify_inclusion(entry["index"].as_u64().unwrap(), size, &hash, &proof, &root)
            .expect("the entry is in the signed tree");
    }
    assert!(!evidence.to_string().contains("alice@example.com"), "ids only, no personal data");
    assert_eq!(done["entry"]["data"]["outcome"]["entries"].as_u64(), Some(entries.len() as u64));
}

async fn the_operator_lists_shows_works_and_resolves_incidents_from_the_command_line(backend: Backend) {
    use clap::Parser;
    let Some(mut server) = TestServer::spawn(backend).await else { return };
    let (_, session) = server.signed_in_customer("carol@example.com", PASSWORD).await;
    let id = incident_about(&server, json!([])).await;
    server.stop().await;
    let data_dir = server.data_dir();
    let database_url = server.config.database_url.as_ref().map(|url| url.expose().clone());
    let run = |extra: Vec<&str>| {
        let mut args = vec!["strongroom".to_owned(), "--data-dir".into(), data_dir.to_str().unwrap().into()];
        if let Some(url) = &database_url {
            args.extend(["--database-url".into(), url.clone()]);
        }
        args.push("incidents".into());
        args.extend(extra.into_iter().map(str::to_owned));
        strongroom::commands::run(strongroom::commands::Cli::try_parse_from(args).unwrap())
    };
    assert_eq!(run(vec!["list"]).await, 0);
    assert_eq!(run(vec!["list", "--state", "open", "--json"]).await, 0);
    assert_ne!(run(vec!["list", "--state", "closed"]).await, 0);
    assert_eq!(run(vec!["show", &id, "--json"]).await, 0);
    assert_eq!(run(vec!["playbook", &id, "revoke_sessions", "--scope", "everyone"]).await, 0, "the operator may");
    assert_eq!(run(vec!["playbook", &id, "export_evidence"]).await, 0);
    assert_eq!(run(vec!["playbook", &id, "rotate_keys"]).await, 0, "the operator rotates the keys");
    assert_ne!(run(vec!["playbook", &id, "no_such_step"]).await, 0);
    assert_eq!(run(vec!["resolve", &id]).await, 0);
    assert_ne!(run(vec!["resolve", &id]).await, 0, "resolved once");
    server.restart().await;
    assert_eq!(server.call(&session, Method::GET, "/v1/me", None).await.0, 401, "every session ended");
    let (_, read) = get(&server, &format!("/v1/security/incidents/{id}")).await;
    assert_eq!(read["state"], "resolved", "{read}");
    let actors: Vec<&str> = read["timeline"].as_array().unwrap().iter().map(|e| e["actor"].as_str().unwrap()).collect();
    assert_eq!(actors.iter().filter(|a| **a == "operator").count(), 4, "{read}");
    let rotated = read["timeline"].as_array().unwrap().iter().find(|e| e["data"]["step"] == "rotate_keys").unwrap();
    assert_eq!(rotated["data"]["outcome"]["kek_version"], 2, "{rotated}");
    // Tokens made before the rotation still open.
    let made = post(&server, "/v1/tokens", &json!({"type": "email", "value": "d@example.com"})).await.1;
    assert_eq!(get(&server, &format!("/v1/tokens/{}", made["id"].as_str().unwrap())).await.0, 200);
    let audit = audit_text(&server).await;
    assert!(audit.contains("security.playbook_step") && audit.contains("operator"), "audited as the operator");
    server.shutdown().await;
}
