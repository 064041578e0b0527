//! Black-box tests of customer identity on a real server, on SQLite and PostgreSQL: registration
//! and the password policy, sign-in without account enumeration, throttling, sessions, TOTP with
//! codes from an independent implementation (pyotp), recovery codes, step-up bound to one action,
//! disabling and erasure; password hashes checked by an independent Argon2 (argon2-cffi).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code fails loudly")]

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use strongroom_domain::merchants::MerchantId;
use strongroom_domain::ports::{AuditRepository, IdentityRepository};
use strongroom_testkit::{Backend, TestServer, captured_logs, on_both_backends, test_python};
use strongroom_types::Clock;

on_both_backends!(
    registration_and_sign_in_never_reveal_accounts,
    sessions_list_end_and_expire,
    totp_with_pyotp_codes_and_recovery_codes,
    step_up_proof_is_bound_to_one_action,
    throttling_delays_known_and_unknown_alike,
    disabling_and_erasure_end_everything,
    password_hashes_are_standard_argon2id,
    second_factor_guessing_is_bounded,
);

const PASSWORD: &str = "violet tractor anthem 1987";
const NEW_PASSWORD: &str = "harbour lantern quietly 2031";

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

async fn api(server: &TestServer, method: Method, path: &str, body: &Value) -> (u16, Value) {
    send(server, &server.bootstrap_key, method, path, Some(body)).await
}

async fn register(server: &TestServer, email: &str) -> String {
    let (status, body) =
        api(server, Method::POST, "/v1/identity/customers", &json!({"email": email, "password": PASSWORD})).await;
    assert_eq!(status, 202, "{body}");
    body["customer"].as_str().unwrap().to_owned()
}

async fn login(server: &TestServer, email: &str, password: &str) -> (u16, Value) {
    let body =
        json!({"email": email, "password": password, "client": {"ip": "198.51.100.7", "user_agent": "Firefox/140"}});
    api(server, Method::POST, "/v1/identity/login", &body).await
}

async fn session_token(server: &TestServer, email: &str) -> String {
    session_token_with(server, email, PASSWORD).await
}

async fn session_token_with(server: &TestServer, email: &str, password: &str) -> String {
    let (status, body) = login(server, email, password).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "authenticated", "{body}");
    body["session"]["token"].as_str().unwrap().to_owned()
}

/// Problem bodies without their request ids, for comparing two answers.
fn without_request_id(mut body: Value) -> Value {
    body.as_object_mut().unwrap().remove("request_id");
    body
}

/// The audit log as text once it holds every needle (entries are committed in the background
/// for failures; waits up to 10 s).
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

/// The TOTP code pyotp computes for `secret` at the server's current time (plus `offset` seconds).
fn pyotp_code(python: &str, server: &TestServer, secret: &str, offset: i64) -> String {
    let at = server.clock.now().unix_millis() / 1000 + offset;
    let script = "import sys, pyotp; print(pyotp.TOTP(sys.argv[1]).at(int(sys.argv[2])))";
    let output = std::process::Command::new(python).args(["-c", script, secret, &at.to_string()]).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

async fn registration_and_sign_in_never_reveal_accounts(backend: Backend) {
    let Some(server) = TestServer::spawn(backend).await else { return };
    // Policy: too short, common, built on the email; any Unicode is fine.
    for (password, why) in
        [("short one", "at least 15"), ("passwordpassword123", "guess"), ("annabelle annabelle 12", "guess")]
    {
        let body = json!({"email": "annabelle@example.com", "password": password});
        let (status, problem) = api(&server, Method::POST, "/v1/identity/customers", &body).await;
        assert_eq!(status, 422, "{problem}");
        assert_eq!(problem["code"], "weak_password");
        assert_eq!(problem["errors"][0]["pointer"], "/password");
        assert!(problem["errors"][0]["detail"].as_str().unwrap().contains(why), "{problem}");
        assert!(!problem.to_string().contains(password), "the password is never echoed");
    }
    let (status, problem) =
        api(&server, Method::POST, "/v1/identity/customers", &json!({"email": "not-an-email", "password": PASSWORD}))
            .await;
    assert_eq!((status, problem["code"].as_str()), (422, Some("invalid_email")));
    // Mass assignment: unknown fields are refused, never applied.
    let body = json!({"email": "ann@example.com", "password": PASSWORD, "email_verified": true});
    let (status, problem) = api(&server, Method::POST, "/v1/identity/customers", &body).await;
    assert_eq!(status, 422, "{problem}");
    assert_eq!(problem["errors"][0]["pointer"], "/email_verified");

    let strength =
        api(&server, Method::POST, "/v1/identity/password-strength", &json!({"password": "password1"})).await.1;
    assert_eq!(strength["acceptable"], false);
    assert!(strength["warning"].is_string() && strength["min_length"] == 15, "{strength}");

    let id = register(&server, "Ann@Example.com").await;
    assert!(id.starts_with("cus_"));
    // The same email again (any case): the same answer, with an id that leads nowhere.
    let (status, again) = api(
        &server,
        Method::POST,
        "/v1/identity/customers",
        &json!({"email": "ann@example.com", "password": "völlig anderes passwort 42"}),
    )
    .await;
    assert_eq!(status, 202);
    assert_ne!(again["customer"], id);
    let (status, _) = send(
        &server,
        &server.bootstrap_key,
        Method::GET,
        &format!("/v1/identity/customers/{}", again["customer"].as_str().unwrap()),
        None,
    )
    .await;
    assert_eq!(status, 404);
    let (status, customer) =
        send(&server, &server.bootstrap_key, Method::GET, &format!("/v1/identity/customers/{id}"), None).await;
    assert_eq!(status, 200);
    assert_eq!(customer["email"], "a***@example.com", "the shop's backend sees a masked email");

    // Wrong password, unknown email, malformed email: one answer.
    let (s1, wrong) = login(&server, "ann@example.com", "not the password at all").await;
    let (s2, unknown) = login(&server, "nobody@example.com", PASSWORD).await;
    let (s3, malformed) = login(&server, "nobody", PASSWORD).await;
    assert_eq!((s1, s2, s3), (401, 401, 401));
    assert_eq!(without_request_id(wrong.clone()), without_request_id(unknown));
    assert_eq!(without_request_id(wrong), without_request_id(malformed));

    let token = session_token(&server, "ANN@example.com").await;
    assert!(token.starts_with("srs_"));
    let (status, me) = send(&server, &token, Method::GET, "/v1/me", None).await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["email"], "ann@example.com");
    assert_eq!(me["id"], id);
    assert_eq!(me["totp"], false);
    let (status, current) = send(&server, &token, Method::GET, "/v1/me/session", None).await;
    assert_eq!(
        (status, current["customer"].as_str(), current["factors"].as_str()),
        (200, Some(id.as_str()), Some("password"))
    );
    // The backend checks the token it holds.
    let (status, checked) =
        api(&server, Method::POST, "/v1/identity/sessions/authenticate", &json!({"token": token})).await;
    assert_eq!((status, checked["customer"].as_str()), (200, Some(id.as_str())));

    // An API key is not a session token, nor is a tampered token.
    let (status, _) = send(&server, &server.bootstrap_key, Method::GET, "/v1/me", None).await;
    assert_eq!(status, 401);
    let mut tampered = token.clone();
    tampered.replace_range(10..11, if &token[10..11] == "a" { "b" } else { "a" });
    let (status, problem) = send(&server, &tampered, Method::GET, "/v1/me", None).await;
    assert_eq!((status, problem["code"].as_str()), (401, Some("unauthenticated")));

    // Secrets never reach a log line.
    let logs = captured_logs();
    for secret in [PASSWORD, token.as_str(), "not the password at all", "völlig anderes passwort 42"] {
        assert!(!logs.contains(secret), "a secret reached the logs");
    }
    let entries = audit_with(&server, &["wrong_password", "unknown_email"]).await;
    // A refused session names no merchant, so the merchant's view of the log leaves it out; the
    // log itself holds it.
    let mut everything = String::new();
    for _ in 0..100 {
        let records = AuditRepository::entries(&server.app().store, 0, 10_000).await.unwrap();
        everything = records.iter().map(|r| String::from_utf8_lossy(&r.leaf).into_owned()).collect();
        if everything.contains("customer.session_refused") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(everything.contains("customer.session_refused"), "the tampered token is audited");
    assert!(!entries.contains("ann@example.com") && !entries.contains(PASSWORD), "no personal data in the audit log");
    server.shutdown().await;
}

async fn sessions_list_end_and_expire(backend: Backend) {
    let Some(server) = TestServer::spawn(backend).await else { return };
    register(&server, "bo@example.com").await;
    let first = session_token(&server, "bo@example.com").await;
    let second = session_token(&server, "bo@example.com").await;
    let (status, list) = send(&server, &second, Method::GET, "/v1/me/sessions", None).await;
    assert_eq!(status, 200);
    let data = list["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    assert_eq!(data.iter().filter(|s| s["current"] == true).count(), 1);
    assert_eq!(data[0]["user_agent"], "Firefox/140");
    assert_eq!(data[0]["ip"], "198.51.100.7");

    // End the others: the first token dies at once.
    let (status, ended) = send(&server, &second, Method::POST, "/v1/me/sessions/end-others", None).await;
    assert_eq!((status, ended["sessions_ended"].as_u64()), (200, Some(1)));
    assert_eq!(send(&server, &first, Method::GET, "/v1/me", None).await.0, 401);

    // A password change ends the other sessions and needs the current password.
    let third = session_token(&server, "bo@example.com").await;
    let body = json!({"current_password": "wrong wrong wrong wrong", "new_password": NEW_PASSWORD});
    let (status, problem) = send(&server, &second, Method::POST, "/v1/me/password", Some(&body)).await;
    assert_eq!((status, problem["code"].as_str()), (422, Some("invalid_credentials")));
    let body = json!({"current_password": PASSWORD, "new_password": NEW_PASSWORD});
    let (status, changed) = send(&server, &second, Method::POST, "/v1/me/password", Some(&body)).await;
    assert_eq!((status, changed["sessions_ended"].as_u64()), (200, Some(1)), "{changed}");
    assert_eq!(send(&server, &third, Method::GET, "/v1/me", None).await.0, 401);
    assert_eq!(login(&server, "bo@example.com", PASSWORD).await.0, 401);
    assert_eq!(login(&server, "bo@example.com", NEW_PASSWORD).await.0, 200);

    // Idle timeout (30 min by default), then the absolute one (12 h) even when used.
    server.clock.advance(Duration::from_secs(29 * 60));
    assert_eq!(send(&server, &second, Method::GET, "/v1/me", None).await.0, 200);
    server.clock.advance(Duration::from_secs(29 * 60));
    assert_eq!(send(&server, &second, Method::GET, "/v1/me", None).await.0, 200, "use keeps it alive");
    server.clock.advance(Duration::from_secs(31 * 60));
    assert_eq!(send(&server, &second, Method::GET, "/v1/me", None).await.0, 401, "idle too long");
    let busy = session_token_with(&server, "bo@example.com", NEW_PASSWORD).await;
    for _ in 0..25 {
        server.clock.advance(Duration::from_secs(29 * 60));
        let _ = send(&server, &busy, Method::GET, "/v1/me", None).await;
    }
    assert_eq!(send(&server, &busy, Method::GET, "/v1/me", None).await.0, 401, "past the absolute timeout");

    // Logout kills the token; ending an unknown session is a 404.
    let token = session_token_with(&server, "bo@example.com", NEW_PASSWORD).await;
    let (status, _) =
        send(&server, &token, Method::DELETE, "/v1/me/sessions/ses_aaaaaaaaaaaaaaaaaaaaaaaaaa", None).await;
    assert_eq!(status, 404);
    assert_eq!(send(&server, &token, Method::POST, "/v1/me/logout", None).await.0, 204);
    assert_eq!(send(&server, &token, Method::GET, "/v1/me", None).await.0, 401);
    server.shutdown().await;
}

/// Enrols TOTP for a signed-in customer; answers the seed and the recovery codes.
async fn enrol_totp(server: &TestServer, python: &str, token: &str) -> (String, Vec<String>) {
    let (_, me) = send(server, token, Method::GET, "/v1/me", None).await;
    let (status, problem) = send(server, token, Method::POST, "/v1/me/totp", None).await;
    if me["email_verified"] == false {
        assert_eq!((status, problem["code"].as_str()), (409, Some("email_not_verified")), "{problem}");
        server.verify_customer_email(me["email"].as_str().unwrap()).await;
    }
    let (status, enrolment) = send(server, token, Method::POST, "/v1/me/totp", None).await;
    assert_eq!(status, 201, "{enrolment}");
    let secret = enrolment["secret"].as_str().unwrap().to_owned();
    let uri = enrolment["otpauth_uri"].as_str().unwrap();
    assert!(uri.starts_with("otpauth://totp/strongroom:") && uri.contains(&format!("secret={secret}")), "{uri}");
    let wrong = json!({"code": "000000"});
    let (status, _) = send(server, token, Method::POST, "/v1/me/totp/confirm", Some(&wrong)).await;
    assert!(status == 401 || pyotp_code(python, server, &secret, 0) == "000000");
    let code = pyotp_code(python, server, &secret, 0);
    let (status, confirmed) =
        send(server, token, Method::POST, "/v1/me/totp/confirm", Some(&json!({"code": code}))).await;
    assert_eq!(status, 200, "{confirmed}");
    let codes: Vec<String> =
        confirmed["recovery_codes"].as_array().unwrap().iter().map(|c| c.as_str().unwrap().to_owned()).collect();
    assert_eq!(codes.len(), 10);
    (secret, codes)
}

async fn totp_with_pyotp_codes_and_recovery_codes(backend: Backend) {
    let Some(python) = test_python() else { return };
    let Some(server) = TestServer::spawn(backend).await else { return };
    register(&server, "cy@example.com").await;
    let token = session_token(&server, "cy@example.com").await;
    let (secret, codes) = enrol_totp(&server, &python, &token).await;
    let (_, me) = send(&server, &token, Method::GET, "/v1/me", None).await;
    assert_eq!((me["totp"].as_bool(), me["recovery_codes_left"].as_u64()), (Some(true), Some(10)));
    assert_eq!(send(&server, &token, Method::POST, "/v1/me/totp", None).await.0, 409, "already enrolled");

    // The password alone no longer signs in.
    let (status, first) = login(&server, "cy@example.com", PASSWORD).await;
    assert_eq!((status, first["status"].as_str()), (200, Some("second_factor_required")), "{first}");
    assert!(first.get("session").is_none());
    let challenge = first["challenge"].as_str().unwrap();
    // The code used for enrolment is spent: the same step is refused (replay).
    let replay = pyotp_code(&python, &server, &secret, 0);
    let body = json!({"challenge": challenge, "code": replay});
    let (status, problem) = api(&server, Method::POST, "/v1/identity/login/second-factor", &body).await;
    assert_eq!((status, problem["code"].as_str()), (401, Some("invalid_code")));
    server.clock.advance(Duration::from_secs(30));
    let body = json!({"challenge": challenge, "code": pyotp_code(&python, &server, &secret, 0)});
    let (status, signed_in) = api(&server, Method::POST, "/v1/identity/login/second-factor", &body).await;
    assert_eq!(status, 200, "{signed_in}");
    // Every way a sign-in ends answers one shape.
    assert_eq!(signed_in["status"], "authenticated");
    assert_eq!(signed_in["session"]["session"]["factors"], "password+totp");
    assert!(signed_in["session"]["token"].as_str().unwrap().starts_with("srs_"));
    // The challenge is spent once answered.
    server.clock.advance(Duration::from_secs(30));
    let body = json!({"challenge": challenge, "code": pyotp_code(&python, &server, &secret, 0)});
    assert_eq!(api(&server, Method::POST, "/v1/identity/login/second-factor", &body).await.0, 401);

    // A recovery code works once.
    let (_, second) = login(&server, "cy@example.com", PASSWORD).await;
    let body = json!({"challenge": second["challenge"], "recovery_code": codes[0].to_uppercase()});
    let (status, recovered) = api(&server, Method::POST, "/v1/identity/login/second-factor", &body).await;
    assert_eq!(
        (status, recovered["session"]["session"]["factors"].as_str()),
        (200, Some("password+recovery_code")),
        "{recovered}"
    );
    let (_, third) = login(&server, "cy@example.com", PASSWORD).await;
    let body = json!({"challenge": third["challenge"], "recovery_code": codes[0]});
    assert_eq!(api(&server, Method::POST, "/v1/identity/login/second-factor", &body).await.0, 401, "used already");
    // Five wrong answers spend a challenge.
    for _ in 0..5 {
        let body = json!({"challenge": third["challenge"], "code": "123456"});
        assert_eq!(api(&server, Method::POST, "/v1/identity/login/second-factor", &body).await.0, 401);
    }
    server.clock.advance(Duration::from_secs(30));
    let body = json!({"challenge": third["challenge"], "code": pyotp_code(&python, &server, &secret, 0)});
    assert_eq!(
        api(&server, Method::POST, "/v1/identity/login/second-factor", &body).await.0,
        401,
        "spent by 5 failures"
    );

    // New recovery codes replace the old ones.
    server.clock.advance(Duration::from_secs(30));
    let body = json!({"code": pyotp_code(&python, &server, &secret, 0)});
    let (status, fresh) = send(&server, &token, Method::POST, "/v1/me/recovery-codes", Some(&body)).await;
    assert_eq!(status, 200, "{fresh}");
    let (_, fourth) = login(&server, "cy@example.com", PASSWORD).await;
    let body = json!({"challenge": fourth["challenge"], "recovery_code": codes[1]});
    assert_eq!(
        api(&server, Method::POST, "/v1/identity/login/second-factor", &body).await.0,
        401,
        "old codes are void"
    );

    // Removing TOTP needs a factor; then the password alone signs in again.
    server.clock.advance(Duration::from_secs(30));
    let body = json!({"code": pyotp_code(&python, &server, &secret, 0)});
    assert_eq!(send(&server, &token, Method::POST, "/v1/me/totp/remove", Some(&body)).await.0, 204);
    assert_eq!(login(&server, "cy@example.com", PASSWORD).await.1["status"], "authenticated");

    let logs = captured_logs();
    assert!(!logs.contains(&secret) && !logs.contains(&codes[0]), "seeds and recovery codes never reach a log line");
    audit_with(
        &server,
        &[
            "customer.totp_enrolled",
            "customer.recovery_code_used",
            "customer.login_second_factor",
            "customer.totp_removed",
        ],
    )
    .await;
    server.shutdown().await;
}

async fn step_up_proof_is_bound_to_one_action(backend: Backend) {
    let Some(python) = test_python() else { return };
    let Some(server) = TestServer::spawn(backend).await else { return };
    let customer = register(&server, "di@example.com").await;
    let token = session_token(&server, "di@example.com").await;
    let binding = json!({"amount": 1999, "currency": "EUR", "payee": "acme", "order": "ord_1"});
    let (status, problem) =
        send(&server, &token, Method::POST, "/v1/me/step-up", Some(&json!({"purpose": "payment", "binding": binding})))
            .await;
    assert_eq!((status, problem["code"].as_str()), (409, Some("no_second_factor")));
    let (secret, _) = enrol_totp(&server, &python, &token).await;

    let step_up = |token: String| {
        let server = &server;
        let binding = binding.clone();
        let secret = secret.clone();
        let python = python.clone();
        async move {
            let (status, challenge) = send(
                server,
                &token,
                Method::POST,
                "/v1/me/step-up",
                Some(&json!({"purpose": "payment", "binding": binding})),
            )
            .await;
            assert_eq!(status, 201, "{challenge}");
            server.clock.advance(Duration::from_secs(30));
            let code = pyotp_code(&python, server, &secret, 0);
            let path = format!("/v1/me/step-up/{}/verify", challenge["challenge"].as_str().unwrap());
            let (status, proof) = send(server, &token, Method::POST, &path, Some(&json!({"code": code}))).await;
            assert_eq!(status, 200, "{proof}");
            (proof["proof"].as_str().unwrap().to_owned(), proof["session"]["token"].as_str().unwrap().to_owned())
        }
    };
    let (proof, renewed) = step_up(token.clone()).await;
    assert!(proof.starts_with("sup_"));
    assert_eq!(send(&server, &token, Method::GET, "/v1/me", None).await.0, 401, "step-up renews the session");
    assert_eq!(send(&server, &renewed, Method::GET, "/v1/me", None).await.0, 200);

    let redeem = |proof: &str, binding: &Value, customer: &str| json!({"customer": customer, "proof": proof, "purpose": "payment", "binding": binding});
    // A different amount: refused, and the proof is spent.
    let other = json!({"amount": 1998, "currency": "EUR", "payee": "acme", "order": "ord_1"});
    let (status, problem) =
        api(&server, Method::POST, "/v1/identity/step-up/redeem", &redeem(&proof, &other, &customer)).await;
    assert_eq!((status, problem["code"].as_str()), (422, Some("step_up_invalid")));
    let (status, _) =
        api(&server, Method::POST, "/v1/identity/step-up/redeem", &redeem(&proof, &binding, &customer)).await;
    assert_eq!(status, 422, "a proof presented with the wrong binding is spent");

    // The right binding, in another field order: good once.
    let (proof, renewed) = step_up(renewed).await;
    let reordered = json!({"order": "ord_1", "payee": "acme", "currency": "EUR", "amount": 1999});
    let (status, ok) =
        api(&server, Method::POST, "/v1/identity/step-up/redeem", &redeem(&proof, &reordered, &customer)).await;
    assert_eq!((status, ok["valid"].as_bool()), (200, Some(true)), "{ok}");
    let (status, _) =
        api(&server, Method::POST, "/v1/identity/step-up/redeem", &redeem(&proof, &binding, &customer)).await;
    assert_eq!(status, 422, "a proof is good once");

    // A malformed binding spends the proof as well.
    let (proof, renewed) = step_up(renewed).await;
    let malformed = json!({"amount": 19.99});
    let (status, problem) =
        api(&server, Method::POST, "/v1/identity/step-up/redeem", &redeem(&proof, &malformed, &customer)).await;
    assert_eq!((status, problem["code"].as_str()), (422, Some("validation_failed")));
    let (status, _) =
        api(&server, Method::POST, "/v1/identity/step-up/redeem", &redeem(&proof, &binding, &customer)).await;
    assert_eq!(status, 422, "spent by the malformed attempt");

    // Another customer, or after 5 minutes: refused.
    let (proof, renewed) = step_up(renewed).await;
    let (status, _) = api(
        &server,
        Method::POST,
        "/v1/identity/step-up/redeem",
        &redeem(&proof, &binding, "cus_aaaaaaaaaaaaaaaaaaaaaaaaaa"),
    )
    .await;
    assert_eq!(status, 422);
    let (proof, renewed) = step_up(renewed).await;
    server.clock.advance(Duration::from_secs(5 * 60 + 1));
    let (status, _) =
        api(&server, Method::POST, "/v1/identity/step-up/redeem", &redeem(&proof, &binding, &customer)).await;
    assert_eq!(status, 422, "expired");

    // A redeemed proof presented again and again with the customer's address (as the shop
    // passes it): the same refusal each time, and after `detection.replayed_tokens` (5) the
    // client is blocked for the shop. Replays relayed without an address (above) were not counted.
    let (proof, _) = step_up(renewed).await;
    let (status, ok) =
        api(&server, Method::POST, "/v1/identity/step-up/redeem", &redeem(&proof, &binding, &customer)).await;
    assert_eq!((status, ok["valid"].as_bool()), (200, Some(true)), "{ok}");
    let decisions = || server.get_json("/v1/security/decisions");
    assert_eq!(decisions().await["data"], json!([]), "nothing yet");
    for n in 0..5 {
        let mut replay = redeem(&proof, &binding, &customer);
        replay["client"] = json!({"ip": "203.0.113.77"});
        let (status, problem) = api(&server, Method::POST, "/v1/identity/step-up/redeem", &replay).await;
        assert_eq!((status, problem["code"].as_str()), (422, Some("step_up_invalid")), "replay {n}");
    }
    let made = decisions().await;
    assert_eq!(made["data"].as_array().map(Vec::len), Some(1), "{made}");
    assert_eq!(made["data"][0]["reason"], "replayed_token", "{made}");
    assert_eq!(made["data"][0]["scope"], json!({"kind": "ip", "address": "203.0.113.77"}), "{made}");
    audit_with(&server, &["wrong_binding", "customer.step_up_redeemed", "replayed_token"]).await;
    server.shutdown().await;
}

async fn throttling_delays_known_and_unknown_alike(backend: Backend) {
    let Some(server) = TestServer::spawn(backend).await else { return };
    register(&server, "ed@example.com").await;
    for email in ["ed@example.com", "ghost@example.com"] {
        for _ in 0..5 {
            assert_eq!(login(&server, email, "wrong wrong wrong wrong").await.0, 401);
        }
        let response = server
            .client
            .post(server.url("/v1/identity/login"))
            .bearer_auth(&server.bootstrap_key)
            .json(&json!({"email": email, "password": PASSWORD}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 429, "{email}: the sixth failure waits");
        assert_eq!(response.headers()["retry-after"], "1");
        let problem: Value = response.json().await.unwrap();
        assert_eq!(problem["code"], "login_throttled");
    }
    // After the delay, the right password works and the count starts again.
    server.clock.advance(Duration::from_secs(2));
    assert_eq!(login(&server, "ed@example.com", PASSWORD).await.0, 200);
    assert_eq!(login(&server, "ed@example.com", "wrong wrong wrong wrong").await.0, 401);
    assert_eq!(login(&server, "ed@example.com", PASSWORD).await.0, 200);
    audit_with(&server, &["\"throttled\""]).await;
    server.shutdown().await;
}

async fn disabling_and_erasure_end_everything(backend: Backend) {
    let Some(server) = TestServer::spawn(backend).await else { return };
    let id = register(&server, "flo@example.com").await;
    let token = session_token(&server, "flo@example.com").await;
    let (status, disabled) =
        api(&server, Method::POST, &format!("/v1/identity/customers/{id}/disable"), &json!({})).await;
    assert_eq!((status, disabled["status"].as_str()), (200, Some("disabled")));
    assert_eq!(send(&server, &token, Method::GET, "/v1/me", None).await.0, 401, "sessions die with the account");
    let (status, problem) = login(&server, "flo@example.com", PASSWORD).await;
    assert_eq!((status, problem["code"].as_str()), (401, Some("invalid_credentials")), "no hint that it exists");
    api(&server, Method::POST, &format!("/v1/identity/customers/{id}/enable"), &json!({})).await;
    let token = session_token(&server, "flo@example.com").await;

    // Crypto-shredding the customer's data erases the account with it.
    let (status, receipt) =
        send(&server, &server.bootstrap_key, Method::DELETE, &format!("/v1/customers/{id}/data"), None).await;
    assert_eq!(status, 200, "{receipt}");
    assert_eq!(send(&server, &token, Method::GET, "/v1/me", None).await.0, 401);
    assert_eq!(login(&server, "flo@example.com", PASSWORD).await.0, 401);
    let (status, _) =
        send(&server, &server.bootstrap_key, Method::GET, &format!("/v1/identity/customers/{id}"), None).await;
    assert_eq!(status, 404);
    // The email can be registered again, as a new customer.
    let again = register(&server, "flo@example.com").await;
    assert_ne!(again, id);
    assert_eq!(login(&server, "flo@example.com", PASSWORD).await.0, 200);
    server.shutdown().await;
}

async fn password_hashes_are_standard_argon2id(backend: Backend) {
    let Some(python) = test_python() else { return };
    let Some(server) = TestServer::spawn(backend).await else { return };
    let id = register(&server, "gus@example.com").await;
    let merchant = MerchantId::parse(&server.merchant_id).unwrap();
    let record =
        IdentityRepository::customer(&server.app().store, &merchant, strongroom_domain::modes::Mode::Live, &id)
            .await
            .unwrap()
            .unwrap();
    let phc = record.password_hash.unwrap();
    assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
    assert!(!String::from_utf8_lossy(&record.email_sealed).contains("gus@"), "the email is sealed");
    let script = "import sys, argon2\n\
        from argon2.low_level import Type\n\
        h = argon2.PasswordHasher()\n\
        assert h.verify(sys.argv[1], sys.argv[2])\n\
        p = argon2.extract_parameters(sys.argv[1])\n\
        assert p.type == Type.ID and p.memory_cost >= 19456 and p.time_cost >= 2, p\n\
        try:\n    h.verify(sys.argv[1], sys.argv[2] + 'x'); print('accepted a wrong password')\n\
        except argon2.exceptions.VerifyMismatchError: print('ok')";
    let output = std::process::Command::new(&python).args(["-c", script, &phc, PASSWORD]).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "ok");
    server.shutdown().await;
}

async fn second_factor_guessing_is_bounded(backend: Backend) {
    let Some(python) = test_python() else { return };
    // The per-customer bound on its own: intrusion detection would block the guessing client
    // first (detection_points.rs tests that).
    let Some(server) = TestServer::spawn_with(backend, |c| c.detection.code_guesses = 0).await else { return };
    register(&server, "hal@example.com").await;
    let token = session_token(&server, "hal@example.com").await;
    // Security settings change only soon after signing in.
    server.clock.advance(Duration::from_secs(11 * 60));
    let (status, problem) = send(&server, &token, Method::POST, "/v1/me/totp", None).await;
    assert_eq!((status, problem["code"].as_str()), (403, Some("forbidden")), "{problem}");
    let token = session_token(&server, "hal@example.com").await;
    let (secret, _) = enrol_totp(&server, &python, &token).await;

    // Forty parallel guesses on one challenge: at most five are checked, the rest are refused.
    let (_, first) = login(&server, "hal@example.com", PASSWORD).await;
    let challenge = first["challenge"].as_str().unwrap().to_owned();
    let guesses: Vec<_> = (0..40)
        .map(|i| {
            let body = json!({"challenge": challenge, "code": format!("{:06}", 100_000 + i)});
            let request = server
                .client
                .post(server.url("/v1/identity/login/second-factor"))
                .bearer_auth(&server.bootstrap_key)
                .json(&body);
            tokio::spawn(async move { request.send().await.unwrap().status().as_u16() })
        })
        .collect();
    for guess in guesses {
        let status = guess.await.unwrap();
        assert!(status == 401 || status == 429, "{status}");
    }
    server.clock.advance(Duration::from_secs(30));
    let right = json!({"challenge": challenge, "code": pyotp_code(&python, &server, &secret, 0)});
    assert_eq!(
        api(&server, Method::POST, "/v1/identity/login/second-factor", &right).await.0,
        401,
        "the challenge is spent"
    );

    // New challenges do not reset the count: after five wrong answers in all, the customer's
    // second factor waits, whatever the challenge.
    let mut throttled = false;
    for _ in 0..6 {
        let (_, again) = login(&server, "hal@example.com", PASSWORD).await;
        let wrong = json!({"challenge": again["challenge"], "code": "000001"});
        let (status, problem) = api(&server, Method::POST, "/v1/identity/login/second-factor", &wrong).await;
        if status == 429 {
            assert_eq!(problem["code"], "login_throttled");
            throttled = true;
            break;
        }
        assert_eq!(status, 401);
    }
    assert!(throttled, "at most five wrong answers pass before the customer's second factor waits");
    let (_, next) = login(&server, "hal@example.com", PASSWORD).await;
    let right = json!({"challenge": next["challenge"], "code": pyotp_code(&python, &server, &secret, 0)});
    let (status, _) = api(&server, Method::POST, "/v1/identity/login/second-factor", &right).await;
    assert_eq!(status, 429, "even the right code waits");
    server.clock.advance(Duration::from_secs(10 * 60));
    let (_, last) = login(&server, "hal@example.com", PASSWORD).await;
    let right = json!({"challenge": last["challenge"], "code": pyotp_code(&python, &server, &secret, 0)});
    assert_eq!(api(&server, Method::POST, "/v1/identity/login/second-factor", &right).await.0, 200, "after the delay");
    server.shutdown().await;
}
