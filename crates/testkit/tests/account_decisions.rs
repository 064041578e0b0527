//! Black-box tests of decisions about accounts on a real server, on SQLite and PostgreSQL:
//! a lock made by hand refuses the customer's sign-in (as a wrong password would), ends their
//! sessions and mails them with their phrase; a step-up makes the right password ask for the
//! mailed code; a step-up and a lock hold side by side, a second one of each is refused; of 30
//! concurrent lifts one wins; bad input is named; a locked staff member cannot sign in and is
//! mailed; many wrong passwords for one account (from many clients) step it up until its
//! owner resets the password; detections and incidents opened are mailed to the shop's security
//! staff and the configured addresses, at most so many detection mails an hour; and a shop whose
//! sign-ins mostly fail gets one alert and an incident, with nobody blocked; with a GeoIP
//! database, a sign-in from a place too far from the previous one for the time between steps
//! the account up (a flight, a neighbouring town, an unknown address do not).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code fails loudly")]

use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use strongroom_domain::identity::Client;
use strongroom_domain::merchants::MerchantId;
use strongroom_testkit::{Backend, TestServer, geoip_database, on_both_backends, test_python};
use strongroom_types::Clock;

on_both_backends!(
    a_locked_account_cannot_sign_in_and_its_owner_is_told,
    a_locked_staff_member_cannot_sign_in,
    many_wrong_passwords_for_one_account_step_it_up,
    security_alerts_are_mailed_within_the_hours_bound,
    a_shops_failure_ratio_raises_an_alert_and_blocks_nobody,
    impossible_travel_steps_the_account_up
);

const PASSWORD: &str = "violet tractor anthem 1987";

async fn send(server: &TestServer, bearer: &str, method: Method, path: &str, body: Option<&Value>) -> (u16, Value) {
    let mut request = server.client.request(method, server.url(path)).bearer_auth(bearer);
    if let Some(body) = body {
        request = request.json(body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

async fn post(server: &TestServer, path: &str, body: &Value) -> (u16, Value) {
    send(server, &server.bootstrap_key, Method::POST, path, Some(body)).await
}

async fn public(server: &TestServer, path: &str, body: &Value) -> (u16, Value) {
    let response = server.client.post(server.url(path)).json(body).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// A customer sign-in the shop relays, from `ip`.
async fn login(server: &TestServer, email: &str, password: &str, ip: &str) -> (u16, Value) {
    post(server, "/v1/identity/login", &json!({"email": email, "password": password, "client": {"ip": ip}})).await
}

/// Mails of one kind in the development mailbox, oldest first, unfolded.
fn mails_in(dir: &Path, kind: &str) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut names: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().ends_with(&format!("-{kind}.eml")))
        .collect();
    names.sort();
    names
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap().replace("=\r\n", "").replace("=\n", "").replace("=3D", "="))
        .collect()
}

/// Waits (up to 10 s) until the mailbox holds `count` mails of `kind`; answers the newest.
async fn mail(server: &TestServer, kind: &str, count: usize) -> String {
    let dir = server.data_dir().join("mail");
    for _ in 0..100 {
        let mails = mails_in(&dir, kind);
        if mails.len() >= count {
            return mails.last().unwrap().clone();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no {kind} mail number {count} arrived");
}

async fn audit_text(server: &TestServer) -> String {
    let size = server.get_json("/v1/audit/entries?start=0&limit=1").await["tree_size"].as_u64().unwrap();
    server.get_json(&format!("/v1/audit/entries?start=0&limit={}", size.clamp(1, 1000))).await.to_string()
}

fn account_decision(scope: &str, action: &str, seconds: u64) -> Value {
    json!({"scope": {"kind": "account", "address": scope}, "action": action, "duration_seconds": seconds,
           "note": "suspicious orders"})
}

async fn a_locked_account_cannot_sign_in_and_its_owner_is_told(backend: Backend) {
    let Some(server) = TestServer::spawn(backend).await else { return };
    let (customer, session) = server.signed_in_customer("lena@example.com", PASSWORD).await;
    let (other, _) = server.signed_in_customer("otto@example.com", PASSWORD).await;
    let phrase = json!({"phrase": "green heron"});
    assert_eq!(send(&server, &session, Method::PUT, "/v1/me/anti-phishing-phrase", Some(&phrase)).await.0, 204);
    assert_eq!(send(&server, &session, Method::GET, "/v1/me", None).await.0, 200);

    // Bad input is named, and an account of no one in this shop is not decided about.
    let cases = [
        (json!({"scope": {"kind": "account", "address": customer}, "duration_seconds": 600}), "/action"),
        (account_decision(&customer, "block", 600), "/action"),
        (account_decision("cus_nope", "lock", 600), "/scope/address"),
        (account_decision("cus_aaaaaaaaaaaaaaaaaaaaaaaaaa", "lock", 600), "/scope/address"),
        (
            json!({"scope": {"kind": "ip", "address": "203.0.113.5"}, "action": "lock", "duration_seconds": 600}),
            "/action",
        ),
    ];
    for (body, pointer) in cases {
        let (status, problem) = post(&server, "/v1/security/decisions", &body).await;
        assert_eq!((status, problem["errors"][0]["pointer"].as_str()), (422, Some(pointer)), "{body} {problem}");
    }

    let (status, lock) = post(&server, "/v1/security/decisions", &account_decision(&customer, "lock", 3600)).await;
    assert_eq!(status, 201, "{lock}");
    assert_eq!(lock["scope"], json!({"kind": "account", "address": customer}));
    assert_eq!((lock["action"].as_str(), lock["reason"].as_str()), (Some("lock"), Some("manual")));
    let lock_id = lock["id"].as_str().unwrap().to_owned();
    let (status, again) = post(&server, "/v1/security/decisions", &account_decision(&customer, "lock", 600)).await;
    assert_eq!((status, again["code"].as_str()), (409, Some("decision_exists")), "{again}");

    // Its sessions ended; the right password answers as a wrong one would; its owner is told.
    assert_eq!(send(&server, &session, Method::GET, "/v1/me", None).await.0, 401, "sessions ended");
    let (status, refused) = login(&server, "lena@example.com", PASSWORD, "198.51.100.40").await;
    assert_eq!((status, refused["code"].as_str()), (401, Some("invalid_credentials")), "{refused}");
    let (status, wrong) = login(&server, "lena@example.com", "not the password at all 1", "198.51.100.40").await;
    assert_eq!((status, wrong["code"].as_str()), (401, Some("invalid_credentials")), "the same answer");
    let notice = mail(&server, "account_locked", 1).await;
    assert!(notice.contains("To: lena@example.com"), "{notice}");
    assert!(notice.contains("Your security phrase: green heron"), "with the phrase: {notice}");
    assert!(notice.contains("Locked until (UTC)") && notice.contains("contact the shop"), "{notice}");
    assert!(audit_text(&server).await.contains("account_locked"), "the refusal is audited");
    // Another customer is not affected.
    let (status, fine) = login(&server, "otto@example.com", PASSWORD, "198.51.100.40").await;
    assert_eq!((status, fine["status"].as_str()), (200, Some("authenticated")), "{fine}");
    assert_ne!(customer, other);

    // A step-up holds beside the lock.
    let (status, step_up) =
        post(&server, "/v1/security/decisions", &account_decision(&customer, "step_up", 3600)).await;
    assert_eq!((status, step_up["action"].as_str()), (201, Some("step_up")), "{step_up}");
    let step_up_id = step_up["id"].as_str().unwrap().to_owned();

    // Thirty concurrent lifts of the lock: one lifts it.
    let path = format!("/v1/security/decisions/{lock_id}/lift");
    let empty = json!({});
    let answers = futures::future::join_all((0..30).map(|_| post(&server, &path, &empty))).await;
    assert_eq!(answers.iter().filter(|a| a.0 == 200).count(), 1, "{answers:?}");
    assert!(answers.iter().all(|a| a.0 == 200 || (a.0 == 409 && a.1["code"] == "decision_not_in_force")));

    // Unlocked, but stepped up: the right password asks for the mailed code.
    let (status, first) = login(&server, "lena@example.com", PASSWORD, "198.51.100.40").await;
    assert_eq!(status, 200, "{first}");
    assert_eq!((first["status"].as_str(), &first["factors"]), (Some("second_factor_required"), &json!(["email_code"])));
    let (status, extended) =
        post(&server, &format!("/v1/security/decisions/{step_up_id}/extend"), &json!({"duration_seconds": 60})).await;
    assert_eq!(status, 200, "{extended}");
    server.clock.advance(Duration::from_secs(61));
    let (status, free) = login(&server, "lena@example.com", PASSWORD, "198.51.100.40").await;
    assert_eq!((status, free["status"].as_str()), (200, Some("authenticated")), "the step-up ended: {free}");

    let audit = audit_text(&server).await;
    assert!(audit.contains("security.decision_made") && audit.contains("security.decision_lifted"));
    assert!(audit.contains("security.decision_extended"));
}

fn pyotp_code(python: &str, server: &TestServer, secret: &str) -> String {
    let at = server.clock.now().unix_millis() / 1000;
    let script = "import sys, pyotp; print(pyotp.TOTP(sys.argv[1]).at(int(sys.argv[2])))";
    let output = std::process::Command::new(python).args(["-c", script, secret, &at.to_string()]).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

async fn a_locked_staff_member_cannot_sign_in(backend: Backend) {
    let Some(python) = test_python() else { return };
    let Some(server) = TestServer::spawn(backend).await else { return };
    let email = "clerk@shop.example";
    let merchant = MerchantId::parse(&server.merchant_id).unwrap();
    let invitation =
        server.app().state.staff.invite(&merchant, email, &["support".to_owned()], None, &Client::default()).await;
    let token = invitation.unwrap().token.expose().clone();
    let (status, accepted) =
        public(&server, "/v1/staff/invitation/accept", &json!({"token": token, "password": PASSWORD})).await;
    assert_eq!(status, 200, "{accepted}");
    let staff = accepted["id"].as_str().unwrap().to_owned();
    assert!(staff.starts_with("stf_"), "{accepted}");
    let (status, body) = public(&server, "/v1/staff/login", &json!({"email": email, "password": PASSWORD})).await;
    assert_eq!(status, 200, "{body}");
    let challenge = body["challenge"].as_str().unwrap().to_owned();
    let (_, enrolment) = public(&server, "/v1/staff/login/totp", &json!({"challenge": challenge})).await;
    let secret = enrolment["secret"].as_str().unwrap().to_owned();
    let code = pyotp_code(&python, &server, &secret);
    let (status, session) =
        public(&server, "/v1/staff/login/totp/confirm", &json!({"challenge": challenge, "code": code})).await;
    assert_eq!(status, 200, "{session}");
    let session = session["session"]["token"].as_str().unwrap().to_owned();
    assert_eq!(send(&server, &session, Method::GET, "/v1/staff/me", None).await.0, 200);

    // A sign-in begun before the lock cannot be completed after it.
    server.clock.advance(Duration::from_secs(31));
    let (status, begun) = public(&server, "/v1/staff/login", &json!({"email": email, "password": PASSWORD})).await;
    assert_eq!((status, begun["status"].as_str()), (200, Some("second_factor_required")), "{begun}");
    let (status, lock) = post(&server, "/v1/security/decisions", &account_decision(&staff, "lock", 3600)).await;
    assert_eq!(status, 201, "{lock}");
    assert_eq!(send(&server, &session, Method::GET, "/v1/staff/me", None).await.0, 401, "sessions ended");
    let challenge = begun["challenge"].as_str().unwrap().to_owned();
    let code = pyotp_code(&python, &server, &secret);
    let (status, late) =
        public(&server, "/v1/staff/login/second-factor", &json!({"challenge": challenge, "code": code})).await;
    assert_eq!(status, 401, "no session for a locked staff member: {late}");
    let (status, refused) = public(&server, "/v1/staff/login", &json!({"email": email, "password": PASSWORD})).await;
    assert_eq!((status, refused["code"].as_str()), (401, Some("invalid_credentials")), "{refused}");
    let notice = mail(&server, "staff_account_locked", 1).await;
    assert!(notice.contains(&format!("To: {email}")) && notice.contains(lock["id"].as_str().unwrap()), "{notice}");
    assert!(audit_text(&server).await.contains("account_locked"));

    // Lifted: the staff member signs in again.
    let lift = format!("/v1/security/decisions/{}/lift", lock["id"].as_str().unwrap());
    assert_eq!(post(&server, &lift, &json!({})).await.0, 200);
    let (status, open) = public(&server, "/v1/staff/login", &json!({"email": email, "password": PASSWORD})).await;
    assert_eq!((status, open["status"].as_str()), (200, Some("second_factor_required")), "{open}");
}

async fn many_wrong_passwords_for_one_account_step_it_up(backend: Backend) {
    let Some(server) = TestServer::spawn(backend).await else { return };
    let (customer, _) = server.signed_in_customer("mia@example.com", PASSWORD).await;
    server.signed_in_customer("noah@example.com", PASSWORD).await;
    // Counting windows are fixed clock hours: start at the beginning of one.
    server.advance_to_window_start(Duration::from_secs(3600));
    // Nine wrong passwords from nine clients (the per-account delays waited out): nothing yet.
    for n in 1..=9 {
        server.clock.advance(Duration::from_secs(40));
        let (status, _) = login(&server, "mia@example.com", "not the password at all 1", &format!("192.0.2.{n}")).await;
        assert_eq!(status, 401);
    }
    assert_eq!(server.get_json("/v1/security/decisions").await["data"], json!([]));
    server.clock.advance(Duration::from_secs(40));
    assert_eq!(login(&server, "mia@example.com", "not the password at all 1", "192.0.2.10").await.0, 401);
    let decisions = server.get_json("/v1/security/decisions").await["data"].as_array().unwrap().clone();
    assert_eq!(decisions.len(), 1, "one step-up, no client blocked: {decisions:?}");
    let decision = &decisions[0];
    assert_eq!(decision["scope"], json!({"kind": "account", "address": customer}));
    assert_eq!(
        (decision["action"].as_str(), decision["reason"].as_str(), decision["created_by"].as_str()),
        (Some("step_up"), Some("password_guessing"), Some("detector"))
    );
    let id = decision["id"].as_str().unwrap().to_owned();

    // The right password asks for the mailed code, also after a sign-in ended the failures.
    server.clock.advance(Duration::from_secs(60));
    for round in 1..=2 {
        let (status, first) = login(&server, "mia@example.com", PASSWORD, "198.51.100.7").await;
        assert_eq!(status, 200, "{first}");
        assert_eq!(first["status"], "second_factor_required", "round {round}: {first}");
        assert_eq!(first["factors"], json!(["email_code"]));
        let challenge = first["challenge"].as_str().unwrap().to_owned();
        let code_mail = mail(&server, "login_code", round).await;
        let start = code_mail.find("Code: ").unwrap() + "Code: ".len();
        let code: String = code_mail[start..].chars().take(6).collect();
        let answer = json!({"challenge": challenge, "email_code": code});
        let (status, signed_in) = post(&server, "/v1/identity/login/second-factor", &answer).await;
        assert_eq!((status, signed_in["status"].as_str()), (200, Some("authenticated")), "{signed_in}");
    }
    // Another account is not affected.
    let (status, other) = login(&server, "noah@example.com", PASSWORD, "192.0.2.10").await;
    assert_eq!((status, other["status"].as_str()), (200, Some("authenticated")), "{other}");

    // The owner resets the password: the detector's step-up is lifted.
    assert_eq!(post(&server, "/v1/identity/password-reset", &json!({"email": "mia@example.com"})).await.0, 202);
    let reset = mail(&server, "password_reset", 1).await;
    let start = reset.find("#token=rst_").unwrap() + "#token=".len();
    let token: String = reset[start..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
    let new_password = "marble canyon whistle 2040";
    let body = json!({"token": token, "new_password": new_password});
    assert_eq!(post(&server, "/v1/identity/password-reset/complete", &body).await.0, 204);
    let lifted = server.get_json(&format!("/v1/security/decisions/{id}")).await;
    assert_eq!((lifted["in_force"].as_bool(), lifted["lifted_by"].as_str()), (Some(false), Some("password_reset")));
    let (status, free) = login(&server, "mia@example.com", new_password, "198.51.100.7").await;
    assert_eq!((status, free["status"].as_str()), (200, Some("authenticated")), "{free}");
    let audit = audit_text(&server).await;
    assert!(audit.contains("password_guessing") && audit.contains("security.decision_lifted"), "audited");
}

/// Mails of `kind` to `to` in the development mailbox.
fn mails_to(server: &TestServer, kind: &str, to: &str) -> Vec<String> {
    mails_in(&server.data_dir().join("mail"), kind).into_iter().filter(|m| m.contains(&format!("To: {to}"))).collect()
}

/// Waits (up to 10 s) until `to` has `count` mails of `kind`; answers them.
async fn mails_to_at_least(server: &TestServer, kind: &str, to: &str, count: usize) -> Vec<String> {
    for _ in 0..100 {
        let mails = mails_to(server, kind, to);
        if mails.len() >= count {
            return mails;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{to} did not get {count} {kind} mails");
}

/// Credential stuffing from `ip`: ten unknown accounts fail, the tenth is a detection.
async fn stuff_from(server: &TestServer, ip: &str) {
    for n in 0..10 {
        let (status, _) = login(server, &format!("victim{n}-{ip}@example.com"), "not the password at all 1", ip).await;
        assert_eq!(status, 401);
    }
}

async fn security_alerts_are_mailed_within_the_hours_bound(backend: Backend) {
    let Some(server) = TestServer::spawn_with(backend, |config| {
        config.detection.alert_emails = vec!["soc@example.net".to_owned()];
        config.detection.alert_mails_per_hour = 2;
    })
    .await
    else {
        return;
    };
    let merchant = MerchantId::parse(&server.merchant_id).unwrap();
    let staff = &server.app().state.staff;
    for (email, role) in [("guard@shop.example", "security"), ("helper@shop.example", "support")] {
        let invitation = staff.invite(&merchant, email, &[role.to_owned()], None, &Client::default()).await.unwrap();
        let body = json!({"token": invitation.token.expose(), "password": PASSWORD});
        assert_eq!(public(&server, "/v1/staff/invitation/accept", &body).await.0, 200);
    }

    // The first detection opens the incident: one mail to each, saying so.
    stuff_from(&server, "203.0.113.81").await;
    let incidents = server.get_json("/v1/security/incidents").await["data"].as_array().unwrap().clone();
    assert_eq!(incidents.len(), 1, "{incidents:?}");
    let incident = incidents[0]["id"].as_str().unwrap().to_owned();
    for to in ["guard@shop.example", "soc@example.net"] {
        let first = mails_to_at_least(&server, "security_alert", to, 1).await;
        assert!(first[0].contains("security incident opened") && first[0].contains(&incident), "{}", first[0]);
        assert!(first[0].contains("credential stuffing") && first[0].contains("203.0.113.81"), "{}", first[0]);
    }
    // The second joins it: a mail each, the hour's last.
    stuff_from(&server, "203.0.113.82").await;
    for to in ["guard@shop.example", "soc@example.net"] {
        let mails = mails_to_at_least(&server, "security_alert", to, 2).await;
        let second = mails.iter().find(|m| m.contains("203.0.113.82")).expect("the second detection's mail");
        assert!(second.contains("security alert") && second.contains("the last one"), "{second}");
    }
    // The third is over the bound: on the timeline, not mailed.
    stuff_from(&server, "203.0.113.83").await;
    let shown = server.get_json(&format!("/v1/security/incidents/{incident}")).await;
    assert!(shown.to_string().contains("203.0.113.83"), "the timeline has it: {shown}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for to in ["guard@shop.example", "soc@example.net"] {
        assert_eq!(mails_to(&server, "security_alert", to).len(), 2, "{to}: the bound holds");
    }
    assert!(mails_to(&server, "security_alert", "helper@shop.example").is_empty(), "only the security role");

    // An incident opened by hand is mailed even with the hour's allowance spent.
    let resolve = json!({"state": "resolved"});
    let (status, resolved) = post(&server, &format!("/v1/security/incidents/{incident}"), &resolve).await;
    assert_eq!(status, 200, "{resolved}");
    let body = json!({"title": "Phishing mail impersonating the shop", "severity": "medium"});
    let (status, opened) = post(&server, "/v1/security/incidents", &body).await;
    assert_eq!(status, 201, "{opened}");
    let opened = opened["id"].as_str().unwrap();
    for to in ["guard@shop.example", "soc@example.net"] {
        let mails = mails_to_at_least(&server, "security_alert", to, 3).await;
        assert!(mails.iter().any(|m| m.contains(opened) && m.contains("Phishing mail")), "{to}");
    }
}

async fn a_shops_failure_ratio_raises_an_alert_and_blocks_nobody(backend: Backend) {
    let Some(server) = TestServer::spawn_with(backend, |config| {
        config.detection.failure_ratio_percent = 80;
        config.detection.failure_ratio_min_attempts = 20;
    })
    .await
    else {
        return;
    };
    // Four good sign-ins (and the two made by the helper), then failures from many clients,
    // each for another address: no client or account reaches its own threshold.
    server.signed_in_customer("pia@example.com", PASSWORD).await;
    for _ in 0..3 {
        assert_eq!(login(&server, "pia@example.com", PASSWORD, "198.51.100.7").await.0, 200);
    }
    let incidents = || async { server.get_json("/v1/security/incidents").await["data"].as_array().unwrap().clone() };
    // 4 good, then 16 failures: 20 attempts, 80 % failed, not above the ratio.
    for n in 1..=16 {
        let (status, _) =
            login(&server, &format!("who{n}@example.com"), "not the password at all 1", &format!("192.0.2.{n}")).await;
        assert_eq!(status, 401);
    }
    assert_eq!(incidents().await, Vec::<Value>::new(), "at the ratio, not above it");
    // The 17th failure: 17 of 21, above 80 %: one alert, an incident, nobody blocked.
    assert_eq!(login(&server, "who17@example.com", "not the password at all 1", "192.0.2.17").await.0, 401);
    let found = incidents().await;
    assert_eq!(found.len(), 1, "{found:?}");
    let incident = server.get_json(&format!("/v1/security/incidents/{}", found[0]["id"].as_str().unwrap())).await;
    assert!(incident.to_string().contains("failure_ratio"), "{incident}");
    // More failures in the window are not another detection.
    for n in 18..=25 {
        login(&server, &format!("who{n}@example.com"), "not the password at all 1", &format!("192.0.2.{n}")).await;
    }
    let incident = server.get_json(&format!("/v1/security/incidents/{}", found[0]["id"].as_str().unwrap())).await;
    let detections = incident["timeline"].as_array().unwrap().iter().filter(|e| e["kind"] == "detection").count();
    assert_eq!(detections, 1, "one detection per window: {incident}");
    assert_eq!(server.get_json("/v1/security/decisions").await["data"], json!([]), "nobody is blocked");
    assert_eq!(login(&server, "pia@example.com", PASSWORD, "192.0.2.1").await.0, 200);
    let audit = audit_text(&server).await;
    assert!(audit.contains("security.detected") && audit.contains("failure_ratio"), "audited");
}

async fn impossible_travel_steps_the_account_up(backend: Backend) {
    let Some(python) = test_python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let database = dir.path().join("geo.mmdb");
    geoip_database(&python, &database);
    let path = database.clone();
    let Some(server) = TestServer::spawn_with(backend, move |config| {
        config.detection.geoip_database = Some(path);
    })
    .await
    else {
        return;
    };
    // Each signed in once from New York (198.51.100.7).
    let (far, _) = server.signed_in_customer("ada@example.com", PASSWORD).await;
    server.signed_in_customer("ben@example.com", PASSWORD).await;
    server.signed_in_customer("cem@example.com", PASSWORD).await;
    let nobody = || async { server.get_json("/v1/security/decisions").await["data"].clone() };

    // Nine hours later, Berlin: a flight. Then Potsdam at once: next door.
    server.clock.advance(Duration::from_secs(9 * 3600));
    let (status, ben) = login(&server, "ben@example.com", PASSWORD, "203.0.113.9").await;
    assert_eq!((status, ben["status"].as_str()), (200, Some("authenticated")), "{ben}");
    let (status, ben) = login(&server, "ben@example.com", PASSWORD, "192.0.2.9").await;
    assert_eq!((status, ben["status"].as_str()), (200, Some("authenticated")), "{ben}");
    // An address the database does not know places nobody.
    let (status, cem) = login(&server, "cem@example.com", PASSWORD, "10.1.2.3").await;
    assert_eq!((status, cem["status"].as_str()), (200, Some("authenticated")), "{cem}");
    assert_eq!(nobody().await, json!([]));

    // Ada from Berlin, then from New York an hour later: 6,400 km in an hour.
    let (status, ada) = login(&server, "ada@example.com", PASSWORD, "203.0.113.9").await;
    assert_eq!((status, ada["status"].as_str()), (200, Some("authenticated")), "{ada}");
    server.clock.advance(Duration::from_secs(3600));
    let (status, ada) = login(&server, "ada@example.com", PASSWORD, "198.51.100.20").await;
    assert_eq!(status, 200, "{ada}");
    assert_eq!(ada["status"], "second_factor_required", "this sign-in is stepped up too: {ada}");
    assert_eq!(ada["factors"], json!(["email_code"]));
    let decisions = nobody().await;
    let decisions = decisions.as_array().unwrap();
    assert_eq!(decisions.len(), 1, "{decisions:?}");
    assert_eq!(decisions[0]["scope"], json!({"kind": "account", "address": far}));
    assert_eq!(
        (decisions[0]["action"].as_str(), decisions[0]["reason"].as_str()),
        (Some("step_up"), Some("impossible_travel"))
    );
    let audit = audit_text(&server).await;
    assert!(audit.contains("impossible_travel"), "audited");
    let incidents = server.get_json("/v1/security/incidents").await;
    assert!(incidents.to_string().contains("impossible"), "an alert and an incident: {incidents}");
}
