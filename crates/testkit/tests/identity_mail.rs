//! Black-box tests of identity's mail on a real server, on SQLite and PostgreSQL: address
//! verification, password reset (single use, 15 minutes, never past the second factor),
//! security notices with the anti-phishing phrase, read from the development mailbox; and one
//! delivery to a real SMTP server (aiosmtpd) whose DKIM signature an independent verifier
//! (dkimpy) checks.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code fails loudly")]

use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use strongroom::config::DkimAlgorithm;
use strongroom_testkit::{Backend, TestServer, captured_logs, on_both_backends, test_python};
use strongroom_types::Clock;

on_both_backends!(
    verification_reset_and_notices,
    reset_never_bypasses_the_second_factor,
    risky_sign_in_needs_an_emailed_code,
    email_change_needs_step_up_and_tells_the_old_address
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

async fn api(server: &TestServer, path: &str, body: &Value) -> (u16, Value) {
    send(server, &server.bootstrap_key, Method::POST, path, Some(body)).await
}

/// Undoes quoted-printable soft breaks and `=3D`, enough to read links and phrases.
fn unfold(raw: &str) -> String {
    raw.replace("=\r\n", "").replace("=\n", "").replace("=3D", "=")
}

/// Mails of one kind in a folder, oldest first, unfolded.
fn mails_in(dir: &Path, kind: &str) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut names: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().ends_with(&format!("-{kind}.eml")))
        .collect();
    names.sort();
    names.iter().map(|p| unfold(&std::fs::read_to_string(p).unwrap())).collect()
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

fn token_in(mail: &str, prefix: &str) -> String {
    let start = mail.find(&format!("#token={prefix}_")).expect("a link with a token") + "#token=".len();
    mail[start..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect()
}

async fn login(server: &TestServer, email: &str, password: &str, agent: &str) -> (u16, Value) {
    api(server, "/v1/identity/login", &json!({"email": email, "password": password, "client": {"user_agent": agent}}))
        .await
}

async fn verification_reset_and_notices(backend: Backend) {
    let Some(server) = TestServer::spawn(backend).await else { return };
    let (status, registered) =
        api(&server, "/v1/identity/customers", &json!({"email": "ann@example.com", "password": PASSWORD})).await;
    assert_eq!(status, 202);
    let customer = registered["customer"].as_str().unwrap().to_owned();
    let verify = mail(&server, "verify_email", 1).await;
    assert!(verify.contains("To: ann@example.com"), "{verify}");
    // The link leads to the hosted page on the port this server really listens on.
    let port = server.app().api_addr().port();
    let link = format!("https://localhost:{port}/account/verify-email#token=evt_");
    assert!(verify.contains(&link), "{verify}");
    let token = token_in(&verify, "evt");
    let (status, verified) = api(&server, "/v1/identity/verify-email", &json!({"token": token})).await;
    assert_eq!((status, verified["customer"].as_str()), (200, Some(customer.as_str())), "{verified}");
    let (status, problem) = api(&server, "/v1/identity/verify-email", &json!({"token": token})).await;
    assert_eq!((status, problem["code"].as_str()), (422, Some("invalid_link")), "a link works once");
    let (_, shown) =
        send(&server, &server.bootstrap_key, Method::GET, &format!("/v1/identity/customers/{customer}"), None).await;
    assert_eq!(shown["email_verified"], true);

    // Registering a taken address warns its owner, and says nothing to the caller.
    let (status, _) = api(
        &server,
        "/v1/identity/customers",
        &json!({"email": "ANN@example.com", "password": "another long passphrase 77"}),
    )
    .await;
    assert_eq!(status, 202);
    let attempt = mail(&server, "registration_attempt", 1).await;
    assert!(attempt.contains("To: ann@example.com") && !attempt.contains("#token="));

    // The phrase shows in every notice; a new browser is a notice, a known one is not.
    let (_, first) = login(&server, "ann@example.com", PASSWORD, "Firefox/140").await;
    let session = first["session"]["token"].as_str().unwrap().to_owned();
    mail(&server, "new_device_sign_in", 1).await;
    let phrase = json!({"phrase": "purple <b>giraffe</b> & co"});
    assert_eq!(send(&server, &session, Method::PUT, "/v1/me/anti-phishing-phrase", Some(&phrase)).await.0, 204);
    let too_short = json!({"phrase": "ab"});
    assert_eq!(send(&server, &session, Method::PUT, "/v1/me/anti-phishing-phrase", Some(&too_short)).await.0, 422);
    login(&server, "ann@example.com", PASSWORD, "Firefox/140").await;
    login(&server, "ann@example.com", PASSWORD, "Safari/18 <script>").await;
    let notice = mail(&server, "new_device_sign_in", 2).await;
    assert!(
        notice.contains("Your security phrase: purple <b>giraffe</b> & co"),
        "the text part shows the phrase as typed"
    );
    assert!(notice.contains("purple &lt;b&gt;giraffe&lt;/b&gt; &amp; co"), "the HTML part escapes it");
    let html = &notice[notice.find("text/html").unwrap()..];
    assert!(
        html.contains("Safari/18 &lt;script&gt;") && !html.contains("<script>"),
        "the HTML part escapes the user agent"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(mails_in(&server.data_dir().join("mail"), "new_device_sign_in").len(), 2, "a known browser is no news");

    // Reset: an unknown address answers the same and gets nothing.
    assert_eq!(api(&server, "/v1/identity/password-reset", &json!({"email": "nobody@example.com"})).await.0, 202);
    assert_eq!(api(&server, "/v1/identity/password-reset", &json!({"email": "ann@example.com"})).await.0, 202);
    let reset = mail(&server, "password_reset", 1).await;
    assert!(reset.contains("purple"), "the reset mail shows the phrase");
    assert_eq!(mails_in(&server.data_dir().join("mail"), "password_reset").len(), 1);
    let token = token_in(&reset, "rst");
    let weak = json!({"token": token, "new_password": "password"});
    let (status, problem) = api(&server, "/v1/identity/password-reset/complete", &weak).await;
    assert_eq!((status, problem["code"].as_str()), (422, Some("weak_password")));
    let good = json!({"token": token, "new_password": "marble canyon whistle 2040"});
    assert_eq!(api(&server, "/v1/identity/password-reset/complete", &good).await.0, 204);
    assert_eq!(api(&server, "/v1/identity/password-reset/complete", &good).await.0, 422, "once");
    assert_eq!(send(&server, &session, Method::GET, "/v1/me", None).await.0, 401, "every session ended");
    assert_eq!(login(&server, "ann@example.com", PASSWORD, "Firefox/140").await.0, 401);
    assert_eq!(login(&server, "ann@example.com", "marble canyon whistle 2040", "Firefox/140").await.0, 200);
    let changed = mail(&server, "password_changed", 1).await;
    assert!(changed.contains("reset"));

    // One reset mail a minute per address, whatever the number of requests.
    api(&server, "/v1/identity/password-reset", &json!({"email": "ann@example.com"})).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        mails_in(&server.data_dir().join("mail"), "password_reset").len(),
        1,
        "a second request within a minute mails nothing"
    );
    // A link is good for 15 minutes; it dies with a completed reset too.
    server.clock.advance(Duration::from_secs(61));
    api(&server, "/v1/identity/password-reset", &json!({"email": "ann@example.com"})).await;
    let late = token_in(&mail(&server, "password_reset", 2).await, "rst");
    server.clock.advance(Duration::from_secs(15 * 60 + 1));
    let body = json!({"token": late, "new_password": "another fine passphrase 9"});
    assert_eq!(api(&server, "/v1/identity/password-reset/complete", &body).await.0, 422, "expired");

    let logs = captured_logs();
    assert!(
        !logs.contains(&token) && !logs.contains(&late) && !logs.contains("ann@example.com"),
        "no link or address in a log line"
    );
    server.shutdown().await;
}

async fn reset_never_bypasses_the_second_factor(backend: Backend) {
    let Some(python) = test_python() else { return };
    let Some(server) = TestServer::spawn(backend).await else { return };
    api(&server, "/v1/identity/customers", &json!({"email": "bo@example.com", "password": PASSWORD})).await;
    let (_, first) = login(&server, "bo@example.com", PASSWORD, "Firefox/140").await;
    let session = first["session"]["token"].as_str().unwrap().to_owned();
    server.verify_customer_email("bo@example.com").await;
    let (_, enrolment) = send(&server, &session, Method::POST, "/v1/me/totp", None).await;
    let secret = enrolment["secret"].as_str().unwrap().to_owned();
    let code = |offset: i64| {
        let at = server.clock.now().unix_millis() / 1000 + offset;
        let script = "import sys, pyotp; print(pyotp.TOTP(sys.argv[1]).at(int(sys.argv[2])))";
        let out = std::process::Command::new(&python).args(["-c", script, &secret, &at.to_string()]).output().unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    let (status, _) =
        send(&server, &session, Method::POST, "/v1/me/totp/confirm", Some(&json!({"code": code(0)}))).await;
    assert_eq!(status, 200);
    mail(&server, "totp_enrolled", 1).await;

    api(&server, "/v1/identity/password-reset", &json!({"email": "bo@example.com"})).await;
    let reset = mail(&server, "password_reset", 1).await;
    assert!(reset.contains("authenticator app"), "the mail says a code will be needed");
    let token = token_in(&reset, "rst");
    let no_code = json!({"token": token, "new_password": "marble canyon whistle 2040"});
    let (status, problem) = api(&server, "/v1/identity/password-reset/complete", &no_code).await;
    assert_eq!((status, problem["code"].as_str()), (401, Some("invalid_code")), "the link alone is not enough");
    server.clock.advance(Duration::from_secs(30));
    let with_code = json!({"token": token, "new_password": "marble canyon whistle 2040", "code": code(0)});
    assert_eq!(api(&server, "/v1/identity/password-reset/complete", &with_code).await.0, 204);
    // The reset signed nobody in: the password leads to the second factor as before.
    let (_, after) = login(&server, "bo@example.com", "marble canyon whistle 2040", "Firefox/140").await;
    assert_eq!(after["status"], "second_factor_required");
    server.shutdown().await;
}

/// A free TCP port on 127.0.0.1.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtp_delivery_with_a_dkim_signature_dkimpy_accepts() {
    dkim_round("rsa-pkcs1", DkimAlgorithm::Auto, "rsa", "rsa-sha256").await;
}

/// Ed25519 DKIM (RFC 8463), chosen by the key file: an `openssl genpkey`-style PKCS#8 key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ed25519_dkim_signatures_dkimpy_accepts() {
    dkim_round("ed25519-pkcs8", DkimAlgorithm::Auto, "ed25519", "ed25519-sha256").await;
}

/// The other key forms: dkimpy's own Ed25519 seed file with the algorithm set explicitly, and an
/// RSA key in PKCS#8.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dkim_keys_in_other_forms_and_an_explicit_algorithm() {
    dkim_round("ed25519-seed", DkimAlgorithm::Ed25519Sha256, "ed25519", "ed25519-sha256").await;
    dkim_round("rsa-pkcs8", DkimAlgorithm::RsaSha256, "rsa", "rsa-sha256").await;
}

/// A DKIM key file others can read is refused at start, as the root key is; so is an algorithm
/// setting that does not fit the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dkim_key_file_others_can_read_or_of_another_algorithm_is_refused() {
    let Some(python) = test_python() else { return };
    let tools = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tools/python");
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("dkim.key");
    let keygen = std::process::Command::new(&python)
        .arg(tools.join("dkim_key.py"))
        .args(["ed25519-pkcs8", key_file.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(keygen.status.success(), "{}", String::from_utf8_lossy(&keygen.stderr));
    let config = |algorithm: DkimAlgorithm| {
        let overrides = strongroom::config::Overrides { data_dir: Some(dir.path().join("data")), ..Default::default() };
        let mut config = strongroom::config::load(&overrides, Vec::new()).unwrap();
        config.server.listen = "127.0.0.1:0".parse().unwrap();
        config.mail.smtp_host = Some("127.0.0.1".into());
        config.mail.smtp_port = free_port();
        config.mail.smtp_security = strongroom::config::SmtpSecurity::None;
        config.mail.dkim_domain = Some("shop.example".into());
        config.mail.dkim_selector = Some("sr2026".into());
        config.mail.dkim_private_key_file = Some(key_file.clone());
        config.mail.dkim_algorithm = algorithm;
        config
    };
    let start_error = |config: strongroom::config::Config| async move {
        let clock = std::sync::Arc::new(strongroom_types::SystemClock);
        match strongroom::Application::build(&config, clock, std::sync::Arc::new(strongroom_types::OsEntropy)).await {
            Ok(app) => {
                app.shutdown().await;
                None
            }
            Err(err) => Some(format!("{err:#}")),
        }
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let message = start_error(config(DkimAlgorithm::Auto)).await.expect("refused");
        assert!(message.contains("mail.dkim_private_key_file") && message.contains("chmod 600"), "{message}");
        assert!(!message.contains("PRIVATE KEY"), "{message}");
        std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let message = start_error(config(DkimAlgorithm::RsaSha256)).await.expect("refused");
    assert!(message.contains("rsa-sha256 but the key is an Ed25519 key"), "{message}");
    assert_eq!(start_error(config(DkimAlgorithm::Ed25519Sha256)).await, None);
}

/// Sends a verification mail through a real SMTP server with a DKIM key of `kind` and checks the
/// signature with dkimpy (and that a tampered copy fails the same check).
async fn dkim_round(kind: &str, algorithm: DkimAlgorithm, key_type: &str, signed_as: &str) {
    let Some(python) = test_python() else { return };
    let tools = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tools/python");
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("dkim.key");
    let keygen = std::process::Command::new(&python)
        .arg(tools.join("dkim_key.py"))
        .args([kind, key_file.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(keygen.status.success(), "{}", String::from_utf8_lossy(&keygen.stderr));
    let public = String::from_utf8(keygen.stdout).unwrap().trim().to_owned();
    let inbox = dir.path().join("inbox");
    std::fs::create_dir_all(&inbox).unwrap();
    let port = free_port();
    let mut sink = std::process::Command::new(&python)
        .arg(tools.join("smtp_sink.py"))
        .arg(port.to_string())
        .arg(&inbox)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::BufRead;
        let mut line = String::new();
        std::io::BufReader::new(sink.stdout.as_mut().unwrap()).read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "ready");
    }
    let key_path = key_file.clone();
    let server = TestServer::spawn_with(Backend::Sqlite, move |config| {
        config.mail.smtp_host = Some("127.0.0.1".into());
        config.mail.smtp_port = port;
        config.mail.smtp_security = strongroom::config::SmtpSecurity::None;
        config.mail.from = "Acme Shop <security@shop.example>".into();
        config.mail.dkim_domain = Some("shop.example".into());
        config.mail.dkim_selector = Some("sr2026".into());
        config.mail.dkim_private_key_file = Some(key_path);
        config.mail.dkim_algorithm = algorithm;
    })
    .await
    .unwrap();
    let (status, _) =
        api(&server, "/v1/identity/customers", &json!({"email": "cy@example.com", "password": PASSWORD})).await;
    assert_eq!(status, 202);
    let mut received = None;
    for _ in 0..100 {
        if let Some(entry) = std::fs::read_dir(&inbox)
            .unwrap()
            .filter_map(Result::ok)
            .find(|e| e.path().extension().is_some_and(|x| x == "eml"))
        {
            received = Some(entry.path());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let received = received.expect("the SMTP server received the verification mail");
    let raw = std::fs::read_to_string(&received).unwrap();
    assert!(raw.contains("DKIM-Signature:") && raw.contains("d=shop.example") && raw.contains("s=sr2026"), "{raw}");
    assert!(raw.contains("To: cy@example.com"));
    let check = |file: &Path| {
        let output = std::process::Command::new(&python)
            .arg(tools.join("dkim_check.py"))
            .arg(file)
            .arg(&public)
            .arg(key_type)
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    };
    assert_eq!(check(&received), format!("valid {signed_as}"), "{kind}");
    // A tampered copy fails the same check, so the check can fail.
    let tampered = dir.path().join("tampered.eml");
    std::fs::write(&tampered, raw.replace("Confirm my email address", "Confirm my e-mail address")).unwrap();
    assert_eq!(check(&tampered), format!("invalid {signed_as}"), "{kind}");
    assert!(!server.data_dir().join("mail").exists(), "with SMTP configured, nothing goes to the development mailbox");
    drop(sink.stdin.take());
    let _ = sink.wait();
    server.shutdown().await;
}

async fn risky_sign_in_needs_an_emailed_code(backend: Backend) {
    let Some(server) = TestServer::spawn(backend).await else { return };
    api(&server, "/v1/identity/customers", &json!({"email": "ivy@example.com", "password": PASSWORD})).await;
    // Detection counts in fixed windows (an hour for `password_guessing`): the ten failures below
    // span seven minutes, so they start at the top of an hour, not across two windows.
    server.advance_to_window_start(Duration::from_secs(3600));
    for _ in 0..10 {
        server.clock.advance(Duration::from_secs(40));
        assert_eq!(login(&server, "ivy@example.com", "wrong wrong wrong wrong", "Firefox/140").await.0, 401);
    }
    server.clock.advance(Duration::from_secs(60));
    let (status, first) = login(&server, "ivy@example.com", PASSWORD, "Firefox/140").await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["status"], "second_factor_required", "after 10 failures the password alone is not enough");
    assert_eq!(first["factors"], json!(["email_code"]));
    let challenge = first["challenge"].as_str().unwrap().to_owned();
    let mail = mail(&server, "login_code", 1).await;
    let start = mail.find("Code: ").unwrap() + "Code: ".len();
    let code: String = mail[start..].chars().take(6).collect();
    assert!(code.chars().all(|c| c.is_ascii_digit()), "{code}");
    let wrong = if code == "000001" { "000002" } else { "000001" };
    let answer = |field: &str, value: &str| json!({"challenge": challenge, field: value});
    assert_eq!(api(&server, "/v1/identity/login/second-factor", &answer("email_code", wrong)).await.0, 401);
    assert_eq!(
        api(&server, "/v1/identity/login/second-factor", &answer("code", &code)).await.0,
        401,
        "not a TOTP code"
    );
    let (status, signed_in) = api(&server, "/v1/identity/login/second-factor", &answer("email_code", &code)).await;
    assert_eq!(status, 200, "{signed_in}");
    assert_eq!(signed_in["status"], "authenticated");
    assert_eq!(signed_in["session"]["session"]["factors"], "password+email_code");
    assert_eq!(api(&server, "/v1/identity/login/second-factor", &answer("email_code", &code)).await.0, 401, "once");
    // Ten wrong passwords within the hour are also intrusion detection's `password_guessing`: the
    // account is stepped up for a day, so the next sign-in still asks for a code ...
    let (_, next) = login(&server, "ivy@example.com", PASSWORD, "Firefox/140").await;
    assert_eq!(next["status"], "second_factor_required", "{next}");
    // ... and once the step-up is over (the right answer cleared the throttle's count), the
    // password alone signs in again.
    server.clock.advance(Duration::from_secs(25 * 3600));
    let (_, later) = login(&server, "ivy@example.com", PASSWORD, "Firefox/140").await;
    assert_eq!(later["status"], "authenticated", "{later}");
    assert!(!captured_logs().contains(&format!("Code: {code}")), "the code never reaches a log line");
    server.shutdown().await;
}

async fn email_change_needs_step_up_and_tells_the_old_address(backend: Backend) {
    let Some(python) = test_python() else { return };
    let Some(server) = TestServer::spawn(backend).await else { return };
    api(&server, "/v1/identity/customers", &json!({"email": "eve@example.com", "password": PASSWORD})).await;
    let (_, first) = login(&server, "eve@example.com", PASSWORD, "Firefox/140").await;
    let session = first["session"]["token"].as_str().unwrap().to_owned();
    server.verify_customer_email("eve@example.com").await;
    let change = |body: Value| {
        let server = &server;
        let session = session.clone();
        async move { send(server, &session, Method::POST, "/v1/me/email", Some(&body)).await }
    };

    // Without a second factor: the current password, and a notice plus a link.
    let (status, problem) = change(json!({"email": "eve.new@example.com"})).await;
    assert_eq!((status, problem["code"].as_str()), (422, Some("step_up_required")), "{problem}");
    let (status, problem) = change(json!({"email": "eve.new@example.com", "current_password": "nope"})).await;
    assert_eq!((status, problem["code"].as_str()), (422, Some("wrong_password")));
    let (status, _) = change(json!({"email": "eve.new@example.com", "current_password": PASSWORD})).await;
    assert_eq!(status, 202);
    let requested = mail(&server, "email_change_requested", 1).await;
    assert!(requested.contains("To: eve@example.com") && requested.contains("e***@example.com"), "{requested}");
    let confirm = mail(&server, "confirm_email_change", 1).await;
    assert!(confirm.contains("To: eve.new@example.com"), "{confirm}");
    let token = token_in(&confirm, "evt");
    let (status, _) = api(&server, "/v1/identity/verify-email", &json!({"token": token})).await;
    assert_eq!(status, 200);
    let changed = mail(&server, "email_changed", 1).await;
    assert!(changed.contains("To: eve@example.com"), "the old address is told: {changed}");
    let (_, me) = send(&server, &session, Method::GET, "/v1/me", None).await;
    assert_eq!((me["email"].as_str(), me["email_verified"].as_bool()), (Some("eve.new@example.com"), Some(true)));
    assert_eq!(login(&server, "eve@example.com", PASSWORD, "Firefox/140").await.0, 401);
    assert_eq!(login(&server, "eve.new@example.com", PASSWORD, "Firefox/140").await.0, 200);
    let (status, _) = api(&server, "/v1/identity/verify-email", &json!({"token": token})).await;
    assert_eq!(status, 422, "the link works once");

    // With TOTP on: only a step-up proof bound to the exact new address will do.
    let (_, enrolment) = send(&server, &session, Method::POST, "/v1/me/totp", None).await;
    let secret = enrolment["secret"].as_str().unwrap().to_owned();
    let code = |server: &TestServer| {
        let at = server.clock.now().unix_millis() / 1000;
        let script = "import sys, pyotp; print(pyotp.TOTP(sys.argv[1]).at(int(sys.argv[2])))";
        let out = std::process::Command::new(&python).args(["-c", script, &secret, &at.to_string()]).output().unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    let (status, _) =
        send(&server, &session, Method::POST, "/v1/me/totp/confirm", Some(&json!({"code": code(&server)}))).await;
    assert_eq!(status, 200);
    let (status, problem) = change(json!({"email": "eve.third@example.com", "current_password": PASSWORD})).await;
    assert_eq!((status, problem["code"].as_str()), (422, Some("step_up_required")), "a password is not enough now");
    let (proof, renewed) = email_change_proof(&server, &session, "someone.else@example.com", &code).await;
    let (status, problem) = send(
        &server,
        &renewed,
        Method::POST,
        "/v1/me/email",
        Some(&json!({"email": "eve.third@example.com", "proof": proof})),
    )
    .await;
    assert_eq!((status, problem["code"].as_str()), (422, Some("step_up_invalid")), "bound to another address");
    let (proof, renewed) = email_change_proof(&server, &renewed, "eve.third@example.com", &code).await;
    let body = json!({"email": "eve.third@example.com", "proof": proof});
    let (status, _) = send(&server, &renewed, Method::POST, "/v1/me/email", Some(&body)).await;
    assert_eq!(status, 202);
    let (status, _) = send(&server, &renewed, Method::POST, "/v1/me/email", Some(&body)).await;
    assert_eq!(status, 422, "a proof is spent once");
    let confirm = mail(&server, "confirm_email_change", 2).await;
    assert!(confirm.contains("To: eve.third@example.com"));
    server.shutdown().await;
}

/// A step-up proof for changing the address to `email`, and the session renewed by the step-up.
async fn email_change_proof(
    server: &TestServer,
    session: &str,
    email: &str,
    code: &dyn Fn(&TestServer) -> String,
) -> (String, String) {
    let body = json!({"purpose": "email_change", "binding": {"email": email}});
    let (status, challenge) = send(server, session, Method::POST, "/v1/me/step-up", Some(&body)).await;
    assert_eq!(status, 201, "{challenge}");
    server.clock.advance(Duration::from_secs(30));
    let path = format!("/v1/me/step-up/{}/verify", challenge["challenge"].as_str().unwrap());
    let (status, proof) = send(server, session, Method::POST, &path, Some(&json!({"code": code(server)}))).await;
    assert_eq!(status, 200, "{proof}");
    (proof["proof"].as_str().unwrap().to_owned(), proof["session"]["token"].as_str().unwrap().to_owned())
}
