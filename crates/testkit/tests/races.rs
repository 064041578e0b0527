//! Check-then-act races on a real server, on SQLite and PostgreSQL: each rule that reads, decides
//! and writes is raced by 30 parallel requests, of which exactly one may win (counted by 2xx
//! answers). Accepting one invitation, removing a staff member's last passkey, demoting or
//! disabling the last owner, deleting a role while a grant or a request names it, and two
//! passkey assertions with one signature counter; and a reveal refused for its rate keeps its
//! four-eyes approval. And 30 first tokens of one new customer at once (each would make the
//! customer's data key) leave exactly one data key, with every token sealed under it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code fails loudly")]

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use futures::future::join_all;
use reqwest::Method;
use serde_json::{Value, json};
use strongroom_domain::identity::Client;
use strongroom_domain::merchants::MerchantId;
use strongroom_testkit::{Backend, TestServer, on_both_backends, test_python};
use strongroom_types::Clock;

on_both_backends!(
    one_acceptance_of_an_invitation_wins,
    the_last_owner_stays_under_parallel_demotions_and_disables,
    a_role_is_deleted_or_granted_never_both,
    staff_keep_a_second_factor_under_parallel_removals,
    one_assertion_per_passkey_counter,
    a_reveal_refused_for_its_rate_keeps_its_approval,
    first_tokens_of_a_new_customer_share_one_data_key,
);

const PASSWORD: &str = "copper meadow lantern 4711";
const RACERS: usize = 30;

async fn send(
    server: &TestServer,
    bearer: Option<&str>,
    method: Method,
    path: &str,
    body: Option<&Value>,
) -> (u16, Value) {
    let mut request = server.client.request(method, server.url(path));
    if let Some(bearer) = bearer {
        request = request.bearer_auth(bearer);
    }
    if let Some(body) = body {
        request = request.json(body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

async fn public(server: &TestServer, path: &str, body: &Value) -> (u16, Value) {
    send(server, None, Method::POST, path, Some(body)).await
}

/// The statuses of parallel requests: (method, bearer, path, body) each.
async fn race(server: &TestServer, requests: Vec<(Method, String, String, Option<Value>)>) -> Vec<(u16, Value)> {
    join_all(requests.into_iter().map(|(method, bearer, path, body)| async move {
        let bearer = (!bearer.is_empty()).then_some(bearer);
        send(server, bearer.as_deref(), method, &path, body.as_ref()).await
    }))
    .await
}

fn successes(answers: &[(u16, Value)]) -> usize {
    answers.iter().filter(|(status, _)| (200..300).contains(status)).count()
}

fn pyotp_code(python: &str, server: &TestServer, secret: &str) -> String {
    let at = server.clock.now().unix_millis() / 1000;
    let script = "import sys, pyotp; print(pyotp.TOTP(sys.argv[1]).at(int(sys.argv[2])))";
    let output = Command::new(python).args(["-c", script, secret, &at.to_string()]).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

/// Invites as the operator at the command line would: the token.
async fn invite_as_operator(server: &TestServer, email: &str, roles: &[&str]) -> String {
    let merchant = MerchantId::parse(&server.merchant_id).unwrap();
    let roles: Vec<String> = roles.iter().map(|r| (*r).to_owned()).collect();
    let invitation = server.app().state.staff.invite(&merchant, email, &roles, None, &Client::default()).await.unwrap();
    invitation.token.expose().clone()
}

/// A staff member invited with `roles`, signed in with TOTP: (session token, staff id).
async fn staff_member(server: &TestServer, python: &str, email: &str, roles: &[&str]) -> (String, String) {
    let invitation = invite_as_operator(server, email, roles).await;
    let (status, body) =
        public(server, "/v1/staff/invitation/accept", &json!({"token": invitation, "password": PASSWORD})).await;
    assert_eq!(status, 200, "{body}");
    let (_, started) = public(server, "/v1/staff/login", &json!({"email": email, "password": PASSWORD})).await;
    let challenge = started["challenge"].as_str().unwrap().to_owned();
    let (_, enrolment) = public(server, "/v1/staff/login/totp", &json!({"challenge": challenge})).await;
    let code = pyotp_code(python, server, enrolment["secret"].as_str().unwrap());
    let (status, session) =
        public(server, "/v1/staff/login/totp/confirm", &json!({"challenge": challenge, "code": code})).await;
    assert_eq!(status, 200, "{session}");
    (session["session"]["token"].as_str().unwrap().to_owned(), body["id"].as_str().unwrap().to_owned())
}

async fn one_acceptance_of_an_invitation_wins(backend: Backend) {
    let Some(server) = TestServer::spawn(backend).await else { return };
    let email = "ivy@shop.example";
    let invitation = invite_as_operator(&server, email, &["auditor"]).await;
    let passwords: Vec<String> = (0..RACERS).map(|i| format!("{PASSWORD} racer {i}")).collect();
    let answers = race(
        &server,
        passwords
            .iter()
            .map(|p| {
                let body = json!({"token": invitation, "password": p});
                (Method::POST, String::new(), "/v1/staff/invitation/accept".to_owned(), Some(body))
            })
            .collect(),
    )
    .await;
    assert_eq!(successes(&answers), 1, "{answers:?}");
    for (status, body) in answers.iter().filter(|(s, _)| *s != 200) {
        assert_eq!((*status, body["code"].as_str()), (422, Some("invalid_invitation")), "{body}");
    }
    // The winner's password is the account's; no other racer's.
    let winner = answers.iter().position(|(s, _)| *s == 200).unwrap();
    let login = |password: &str| json!({"email": email, "password": password});
    let (status, body) = public(&server, "/v1/staff/login", &login(&passwords[winner])).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("enrolment_required")), "{body}");
    let (status, _) = public(&server, "/v1/staff/login", &login(&passwords[(winner + 1) % RACERS])).await;
    assert_eq!(status, 401);
    server.shutdown().await;
}

async fn the_last_owner_stays_under_parallel_demotions_and_disables(backend: Backend) {
    let Some(python) = test_python() else { return };
    let Some(server) = TestServer::spawn(backend).await else { return };
    let (ada, ada_id) = staff_member(&server, &python, "ada@shop.example", &["owner"]).await;
    let (bob, bob_id) = staff_member(&server, &python, "bob@shop.example", &["owner"]).await;

    // Ada demotes Bob while Bob demotes Ada, 15 times each: one demotion passes.
    let demotions = (0..RACERS)
        .map(|i| {
            let (by, target) = if i % 2 == 0 { (&ada, &bob_id) } else { (&bob, &ada_id) };
            (Method::DELETE, by.clone(), format!("/v1/staff/{target}/roles/owner"), None)
        })
        .collect();
    let answers = race(&server, demotions).await;
    assert_eq!(successes(&answers), 1, "{answers:?}");
    // The losers are told the last owner stays or the roles changed meanwhile, or (once the
    // demoted owner's sessions lost the role, at once on this node) that they lack the scope, or
    // that the role is gone.
    for (status, body) in answers.iter().filter(|(s, _)| *s != 200) {
        let code = body["code"].as_str().unwrap_or_default();
        assert!(["last_owner", "roles_changed", "insufficient_scope", "not_found"].contains(&code), "{status} {body}");
    }
    let (_, staff) = send(&server, Some(&server.bootstrap_key), Method::GET, "/v1/staff", None).await;
    let owners = staff["data"].as_array().unwrap().iter().filter(|s| s["roles"] == json!(["owner"])).count();
    assert_eq!(owners, 1);

    // A second owner again; then they disable each other, 15 times each: one of them ends
    // disabled, and every request that passed disabled that one (disabling twice is no change).
    let ada_owner =
        staff["data"].as_array().unwrap().iter().any(|s| s["id"] == ada_id.as_str() && s["roles"] == json!(["owner"]));
    let (owner, owner_id) = if ada_owner { (ada, ada_id) } else { (bob, bob_id) };
    let (cy, cy_id) = staff_member(&server, &python, "cy@shop.example", &["owner"]).await;
    let targets: Vec<&String> = (0..RACERS).map(|i| if i % 2 == 0 { &cy_id } else { &owner_id }).collect();
    let disables = (0..RACERS)
        .map(|i| {
            let by = if i % 2 == 0 { &owner } else { &cy };
            (Method::POST, by.clone(), format!("/v1/staff/{}/disable", targets[i]), None)
        })
        .collect();
    let answers = race(&server, disables).await;
    let (_, staff) = send(&server, Some(&server.bootstrap_key), Method::GET, "/v1/staff", None).await;
    let disabled: Vec<&str> = staff["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["status"] == "disabled")
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(disabled.len(), 1, "the last active owner stays: {answers:?}");
    let passed: Vec<&String> =
        answers.iter().zip(&targets).filter(|((status, _), _)| *status == 200).map(|(_, target)| *target).collect();
    assert!(!passed.is_empty() && passed.iter().all(|t| t.as_str() == disabled[0]), "{answers:?}");
    server.shutdown().await;
}

async fn a_role_is_deleted_or_granted_never_both(backend: Backend) {
    let Some(python) = test_python() else { return };
    let Some(server) = TestServer::spawn(backend).await else { return };
    let (ada, _) = staff_member(&server, &python, "ada@shop.example", &["owner"]).await;
    let (bob, _) = staff_member(&server, &python, "bob@shop.example", &["owner"]).await;
    let (_, cy_id) = staff_member(&server, &python, "cy@shop.example", &[]).await;
    let create = json!({"name": "night-shift", "permissions": ["vault:read"]});
    assert_eq!(send(&server, Some(&ada), Method::POST, "/v1/roles", Some(&create)).await.0, 201);

    // An approved grant of the role to Cy races 29 deletions of it (which its open approval holds
    // off until the grant uses it up): the grant or one deletion passes, never both.
    let grant = format!("/v1/staff/{cy_id}/roles");
    let (status, asked) = send(&server, Some(&ada), Method::POST, &grant, Some(&json!({"role": "night-shift"}))).await;
    assert_eq!(status, 403, "{asked}");
    let approval = asked["approval_id"].as_str().unwrap().to_owned();
    assert_eq!(
        send(&server, Some(&bob), Method::POST, &format!("/v1/approvals/{approval}/approve"), None).await.0,
        200
    );
    let requests = (0..RACERS)
        .map(|i| {
            if i == 0 {
                let body = json!({"role": "night-shift", "approval_id": approval});
                (Method::POST, ada.clone(), grant.clone(), Some(body))
            } else {
                (Method::DELETE, ada.clone(), "/v1/roles/night-shift".to_owned(), None)
            }
        })
        .collect();
    let answers = race(&server, requests).await;
    assert_eq!(successes(&answers), 1, "{answers:?}");
    let (_, cy) = send(&server, Some(&ada), Method::GET, &format!("/v1/staff/{cy_id}"), None).await;
    let (_, roles) = send(&server, Some(&ada), Method::GET, "/v1/roles", None).await;
    let exists = roles["data"].as_array().unwrap().iter().any(|r| r["name"] == "night-shift");
    let held = cy["roles"] == json!(["night-shift"]);
    assert_eq!((exists, held), (answers[0].0 == 200, answers[0].0 == 200), "{answers:?}");

    // Requests to grant a role race its deletion: deleted, or requested, never both.
    let create = json!({"name": "day-shift", "permissions": ["vault:read"]});
    assert_eq!(send(&server, Some(&ada), Method::POST, "/v1/roles", Some(&create)).await.0, 201);
    let requests = (0..RACERS)
        .map(|i| {
            if i % 2 == 0 {
                (Method::POST, ada.clone(), grant.clone(), Some(json!({"role": "day-shift"})))
            } else {
                (Method::DELETE, ada.clone(), "/v1/roles/day-shift".to_owned(), None)
            }
        })
        .collect();
    let answers = race(&server, requests).await;
    let deleted = answers.iter().filter(|(status, _)| *status == 204).count();
    let requested = answers.iter().filter(|(_, body)| body["code"] == "approval_required").count();
    assert!(
        deleted <= 1 && (deleted == 0) != (requested == 0),
        "deleted {deleted}, requested {requested}: {answers:?}"
    );
    server.shutdown().await;
}

/// Runs the software authenticator (`tools/python/passkey_authenticator.py`).
fn authenticator(python: &str, args: &[&str], options: &Value) -> Value {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tools/python/passkey_authenticator.py");
    let mut child = Command::new(python)
        .arg(script)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(options.to_string().as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).unwrap()
}

/// Sets the authenticator's stored signature counter: its next assertion reports `next`.
fn set_counter(state: &str, next: i64) {
    let mut saved: Value = serde_json::from_str(&std::fs::read_to_string(state).unwrap()).unwrap();
    saved["sign_count"] = json!(next - 1);
    std::fs::write(state, saved.to_string()).unwrap();
}

async fn spawn_with_passkeys(backend: Backend) -> Option<TestServer> {
    TestServer::spawn_with(backend, |config| {
        config.webauthn.rp_id = "localhost".into();
        config.webauthn.origins = vec!["https://localhost".into()];
        config.webauthn.allow_any_port = true;
    })
    .await
}

fn origin(server: &TestServer) -> String {
    format!("https://localhost:{}", server.base_url.rsplit(':').next().unwrap())
}

async fn staff_keep_a_second_factor_under_parallel_removals(backend: Backend) {
    let Some(python) = test_python() else { return };
    let Some(server) = spawn_with_passkeys(backend).await else { return };
    let dir = tempfile::tempdir().unwrap();
    let first = dir.path().join("first.json").to_string_lossy().into_owned();
    let second = dir.path().join("second.json").to_string_lossy().into_owned();
    let origin = origin(&server);

    // Sam enrols a passkey as the first factor, then adds a second one from the session.
    let email = "sam@shop.example";
    let invitation = invite_as_operator(&server, email, &["auditor"]).await;
    let accept = json!({"token": invitation, "password": PASSWORD});
    assert_eq!(public(&server, "/v1/staff/invitation/accept", &accept).await.0, 200);
    let login = json!({"email": email, "password": PASSWORD});
    let (_, started) = public(&server, "/v1/staff/login", &login).await;
    let challenge = json!({"challenge": started["challenge"]});
    let (_, begun) = public(&server, "/v1/staff/login/passkey-enrolment", &challenge).await;
    let credential = authenticator(&python, &["create", "--state", &first, "--origin", &origin], &begun["options"]);
    let finish = json!({"challenge": started["challenge"], "ceremony": begun["ceremony"], "credential": credential});
    let (status, session) = public(&server, "/v1/staff/login/passkey-enrolment/finish", &finish).await;
    assert_eq!(status, 200, "{session}");
    let sam = session["session"]["token"].as_str().unwrap().to_owned();
    let (status, begun) = send(&server, Some(&sam), Method::POST, "/v1/staff/me/passkeys", None).await;
    assert_eq!(status, 200, "{begun}");
    let credential = authenticator(&python, &["create", "--state", &second, "--origin", &origin], &begun["options"]);
    let finish = json!({"ceremony": begun["ceremony"], "credential": credential, "label": "spare"});
    let (status, added) = send(&server, Some(&sam), Method::POST, "/v1/staff/me/passkeys/finish", Some(&finish)).await;
    assert_eq!(status, 201, "{added}");

    // A ceremony begun before another sign-in moved the counter is refused with the old counter
    // (the counter must pass the stored one, not only the one the ceremony began with).
    let (_, started_a) = public(&server, "/v1/staff/login", &login).await;
    let (_, begun_a) = public(&server, "/v1/staff/login/passkey", &json!({"challenge": started_a["challenge"]})).await;
    let (_, started_b) = public(&server, "/v1/staff/login", &login).await;
    let (_, begun_b) = public(&server, "/v1/staff/login/passkey", &json!({"challenge": started_b["challenge"]})).await;
    set_counter(&first, 5);
    let answer_b = authenticator(&python, &["get", "--state", &first, "--origin", &origin], &begun_b["options"]);
    set_counter(&first, 5);
    let answer_a = authenticator(&python, &["get", "--state", &first, "--origin", &origin], &begun_a["options"]);
    let finish_b =
        json!({"challenge": started_b["challenge"], "ceremony": begun_b["ceremony"], "credential": answer_b});
    assert_eq!(public(&server, "/v1/staff/login/passkey/finish", &finish_b).await.0, 200);
    let finish_a =
        json!({"challenge": started_a["challenge"], "ceremony": begun_a["ceremony"], "credential": answer_a});
    assert_eq!(public(&server, "/v1/staff/login/passkey/finish", &finish_a).await.0, 401, "a counter used already");

    // 30 parallel removals, 15 of each passkey: one passes, one passkey stays.
    let (_, list) = send(&server, Some(&sam), Method::GET, "/v1/staff/me/passkeys", None).await;
    let ids: Vec<String> =
        list["data"].as_array().unwrap().iter().map(|p| p["id"].as_str().unwrap().to_owned()).collect();
    assert_eq!(ids.len(), 2);
    let removals = (0..RACERS)
        .map(|i| (Method::DELETE, sam.clone(), format!("/v1/staff/me/passkeys/{}", ids[i % 2]), None))
        .collect();
    let answers = race(&server, removals).await;
    assert_eq!(successes(&answers), 1, "{answers:?}");
    assert!(answers.iter().any(|(_, body)| body["code"] == "last_factor"), "{answers:?}");
    let (_, list) = send(&server, Some(&sam), Method::GET, "/v1/staff/me/passkeys", None).await;
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
    let (_, started) = public(&server, "/v1/staff/login", &login).await;
    assert_eq!(started["status"], "second_factor_required", "Sam still has a second factor");
    server.shutdown().await;
}

/// A customer with a verified address and a passkey held in `state`.
async fn customer_with_passkey(server: &TestServer, python: &str, email: &str, state: &str) {
    let key = server.bootstrap_key.clone();
    let (status, _) = send(
        server,
        Some(&key),
        Method::POST,
        "/v1/identity/customers",
        Some(&json!({"email": email, "password": PASSWORD})),
    )
    .await;
    assert_eq!(status, 202);
    server.verify_customer_email(email).await;
    let (_, login) = send(
        server,
        Some(&key),
        Method::POST,
        "/v1/identity/login",
        Some(&json!({"email": email, "password": PASSWORD})),
    )
    .await;
    let session = login["session"]["token"].as_str().unwrap().to_owned();
    let (_, begun) = send(server, Some(&session), Method::POST, "/v1/me/passkeys", None).await;
    let credential =
        authenticator(python, &["create", "--state", state, "--origin", &origin(server)], &begun["options"]);
    let finish = json!({"ceremony": begun["ceremony"], "credential": credential, "label": "phone"});
    let (status, body) = send(server, Some(&session), Method::POST, "/v1/me/passkeys/finish", Some(&finish)).await;
    assert_eq!(status, 201, "{body}");
}

/// `n` passkey sign-ins begun, each answered with signature counter `counter` (0: none).
async fn answered_logins(server: &TestServer, python: &str, state: &str, n: usize, counter: i64) -> Vec<Value> {
    let mut finishes = Vec::new();
    for _ in 0..n {
        let key = server.bootstrap_key.clone();
        let (status, begun) =
            send(server, Some(&key), Method::POST, "/v1/identity/login/passkey", Some(&json!({}))).await;
        assert_eq!(status, 200, "{begun}");
        set_counter(state, counter);
        let answer = authenticator(python, &["get", "--state", state, "--origin", &origin(server)], &begun["options"]);
        finishes.push(json!({"ceremony": begun["ceremony"], "credential": answer}));
    }
    finishes
}

async fn one_assertion_per_passkey_counter(backend: Backend) {
    let Some(python) = test_python() else { return };
    let Some(server) = spawn_with_passkeys(backend).await else { return };
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("pia.json").to_string_lossy().into_owned();
    customer_with_passkey(&server, &python, "pia@example.com", &state).await;

    // 30 sign-ins answered with one counter (a cloned authenticator): one passes.
    let finishes = answered_logins(&server, &python, &state, RACERS, 7).await;
    let key = server.bootstrap_key.clone();
    let path = "/v1/identity/login/passkey/finish".to_owned();
    let answers =
        race(&server, finishes.into_iter().map(|f| (Method::POST, key.clone(), path.clone(), Some(f))).collect()).await;
    assert_eq!(successes(&answers), 1, "{answers:?}");
    // An older counter after a newer one is refused; a newer one passes.
    for (counter, expected) in [(6, 401), (7, 401), (9, 200)] {
        let finish = answered_logins(&server, &python, &state, 1, counter).await.remove(0);
        assert_eq!(
            send(&server, Some(&key), Method::POST, &path, Some(&finish)).await.0,
            expected,
            "counter {counter}"
        );
    }

    // An authenticator that keeps no counter (always 0, as WebAuthn allows) keeps working.
    let zero = dir.path().join("zoe.json").to_string_lossy().into_owned();
    customer_with_passkey(&server, &python, "zoe@example.com", &zero).await;
    for finish in answered_logins(&server, &python, &zero, 3, 0).await {
        let (status, body) = send(&server, Some(&key), Method::POST, &path, Some(&finish)).await;
        assert_eq!(status, 200, "{body}");
    }
    server.shutdown().await;
}

async fn a_reveal_refused_for_its_rate_keeps_its_approval(backend: Backend) {
    let Some(python) = test_python() else { return };
    let Some(server) = TestServer::spawn_with(backend, |c| c.vault.reveals_per_minute = 2).await else { return };
    let (ada, _) = staff_member(&server, &python, "ada@shop.example", &["owner"]).await;
    let (bob, _) = staff_member(&server, &python, "bob@shop.example", &["owner"]).await;
    let card = json!({"type": "card", "value": {"number": "4242424242424242", "exp_month": 12, "exp_year": 2031}});
    let key = server.bootstrap_key.clone();
    let (status, token) = send(&server, Some(&key), Method::POST, "/v1/tokens", Some(&card)).await;
    assert_eq!(status, 201, "{token}");
    let path = format!("/v1/tokens/{}/reveal", token["id"].as_str().unwrap());
    let reveal =
        |view: &str, approval: Option<&str>| json!({"view": view, "reason": "chargeback", "approval_id": approval});

    let (status, asked) = send(&server, Some(&ada), Method::POST, &path, Some(&reveal("plain", None))).await;
    assert_eq!(status, 403, "{asked}");
    let approval = asked["approval_id"].as_str().unwrap().to_owned();
    assert_eq!(
        send(&server, Some(&bob), Method::POST, &format!("/v1/approvals/{approval}/approve"), None).await.0,
        200
    );
    assert_eq!(send(&server, Some(&ada), Method::POST, &path, Some(&reveal("masked", None))).await.0, 200);
    let (status, _) = send(&server, Some(&ada), Method::POST, &path, Some(&reveal("plain", Some(&approval)))).await;
    assert_eq!(status, 429, "over the rate");
    let (_, kept) = send(&server, Some(&bob), Method::GET, &format!("/v1/approvals/{approval}"), None).await;
    assert_eq!(kept["status"], "approved", "the 429 did not use the approval up");
    server.clock.advance(Duration::from_secs(61));
    let (status, shown) = send(&server, Some(&ada), Method::POST, &path, Some(&reveal("plain", Some(&approval)))).await;
    assert_eq!((status, shown["value"]["number"].as_str()), (200, Some("4242424242424242")), "{shown}");
    server.shutdown().await;
}

async fn data_keys(server: &TestServer) -> u64 {
    use strongroom_domain::ports::VaultRepository;
    VaultRepository::data_key_counts(&server.app().store).await.unwrap().iter().map(|(_, n)| n).sum()
}

async fn first_tokens_of_a_new_customer_share_one_data_key(backend: Backend) {
    use strongroom_domain::ports::VaultRepository;
    let Some(server) = TestServer::spawn(backend).await else { return };
    let key = server.bootstrap_key.clone();
    let merchant = MerchantId::parse(&server.merchant_id).unwrap();
    let card = |n: usize| {
        // 16 digits with a valid check digit, different for each n.
        let body = format!("4{:014}", 4_000_000 + n);
        let number =
            (0..10).map(|d| format!("{body}{d}")).find(|c| strongroom_domain::vault::card::luhn_valid(c)).unwrap();
        json!({"type": "card", "customer": "cus_first", "value": {"number": number, "exp_month": 12, "exp_year": 2031}})
    };
    let before = data_keys(&server).await;
    let answers = race(
        &server,
        (0..RACERS).map(|n| (Method::POST, key.clone(), "/v1/tokens".to_owned(), Some(card(n)))).collect(),
    )
    .await;
    assert_eq!(successes(&answers), RACERS, "{answers:?}");
    // A batch of first tokens of another new customer, and single ones racing it.
    let batch: Vec<Value> = (100..100 + RACERS)
        .map(|n| {
            let mut item = card(n);
            item["customer"] = json!("cus_batch");
            item
        })
        .collect();
    let mut requests = vec![(Method::POST, key.clone(), "/v1/tokens/batch".to_owned(), Some(json!({"items": batch})))];
    requests.extend((200..210).map(|n| {
        let mut item = card(n);
        item["customer"] = json!("cus_batch");
        (Method::POST, key.clone(), "/v1/tokens".to_owned(), Some(item))
    }));
    let batch_answers = race(&server, requests).await;
    assert_eq!(successes(&batch_answers), 11, "{batch_answers:?}");
    assert_eq!(data_keys(&server).await, before + 2, "one data key per new customer");

    let store = &server.app().store;
    let mut ids: Vec<(String, &str)> =
        answers.iter().map(|(_, token)| (token["id"].as_str().unwrap().to_owned(), "cus_first")).collect();
    for (_, body) in &batch_answers {
        match body["data"].as_array() {
            Some(items) => {
                ids.extend(items.iter().map(|i| (i["token"]["id"].as_str().unwrap().to_owned(), "cus_batch")))
            }
            None => ids.push((body["id"].as_str().unwrap().to_owned(), "cus_batch")),
        }
    }
    assert_eq!(ids.len(), 2 * RACERS + 10);
    for (id, customer) in &ids {
        let stored_key =
            VaultRepository::data_key_for(store, &merchant, strongroom_domain::modes::Mode::Live, customer)
                .await
                .unwrap()
                .unwrap();
        let token = VaultRepository::token(store, id).await.unwrap().unwrap();
        assert_eq!(token.data_key_id, stored_key.id, "{id} is sealed under {customer}'s one stored key");
        let path = format!("/v1/tokens/{id}/reveal");
        let (status, shown) =
            send(&server, Some(&key), Method::POST, &path, Some(&json!({"view": "plain", "reason": "test"}))).await;
        assert_eq!(status, 200, "{shown}");
        assert!(shown["value"]["number"].as_str().is_some_and(|n| n.len() == 16), "{shown}");
    }
    server.shutdown().await;
}
