//! The hosted account pages in headless Chromium (`tools/browser/account_pages.mjs`, with
//! playwright-core): sign-in, the security centre, TOTP enrolment with codes computed in the
//! browser test, a passkey from Chromium's virtual authenticator, sign-out and passkey sign-in;
//! cookie flags, CSP and CSRF checked on the way. The pages links in mail open
//! (`tools/browser/link_pages.mjs`): sign-up, the address check, a password reset and a staff
//! invitation, each from the link the server mailed, with weak and breached passwords refused.
//! Plus the pages' HTTP rules without a browser: CSRF refusals on every form and script request,
//! sign-up off unless allowed, the invitation page without the customers' pages.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code fails loudly")]

use clap::Parser;
use reqwest::Method;
use serde_json::json;
use sha1::{Digest, Sha1};
use strongroom::config::TlsMode;
use strongroom_domain::identity::Client;
use strongroom_domain::merchants::MerchantId;
use strongroom_testkit::{Backend, TestServer, captured_logs, on_both_backends, test_browser};

on_both_backends!(
    account_pages_in_chromium,
    pages_refuse_forged_posts_and_set_strict_headers,
    mailed_links_open_working_pages_in_chromium,
    link_pages_refuse_requests_without_the_csrf_token,
    sign_up_is_served_only_when_allowed,
    a_new_address_is_confirmed_on_the_verify_page,
    the_security_centre_shows_payments_and_removes_saved_cards,
);

const PASSWORD: &str = "violet tractor anthem 1987";

/// A server on plain HTTP (a browser treats http://localhost as a secure context, so `Secure`
/// cookies and WebAuthn work without a certificate), with passkeys for that origin.
async fn spawn(backend: Backend) -> Option<TestServer> {
    spawn_with(backend, |_| {}).await
}

async fn spawn_with(backend: Backend, customize: impl FnOnce(&mut strongroom::config::Config)) -> Option<TestServer> {
    TestServer::spawn_with(backend, |config| {
        config.server.tls = TlsMode::TerminatedUpstream;
        config.webauthn.rp_id = "localhost".into();
        config.webauthn.origins = vec!["http://localhost".into()];
        config.webauthn.allow_any_port = true;
        customize(config);
    })
    .await
}

async fn customer(server: &TestServer, email: &str) {
    let response = server
        .request(Method::POST, "/v1/identity/customers")
        .json(&json!({"email": email, "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    server.verify_customer_email(email).await;
}

async fn account_pages_in_chromium(backend: Backend) {
    let Some((node, modules, chromium)) = test_browser() else { return };
    let Some(server) = spawn(backend).await else { return };
    customer(&server, "cleo@example.com").await;
    let base = server.base_url.replace("127.0.0.1", "localhost");
    let shots = tempfile::tempdir().unwrap();
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tools/browser/account_pages.mjs");
    let output = tokio::process::Command::new(node)
        .arg(script)
        .args([&base, "cleo@example.com", PASSWORD, &shots.path().to_string_lossy()])
        .env("STRONGROOM_TEST_NODE_MODULES", modules)
        .env("STRONGROOM_TEST_CHROMIUM", chromium)
        .output();
    let output =
        tokio::time::timeout(std::time::Duration::from_secs(120), output).await.expect("browser run in time").unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "browser run failed: {}\n{stdout}", String::from_utf8_lossy(&output.stderr));
    let findings: serde_json::Value = serde_json::from_str(stdout.trim().lines().last().unwrap()).unwrap();
    assert_eq!(findings["recovery_codes"], 10);
    assert_eq!(findings["passkey_sign_in"], true);
    assert!(shots.path().join("security-centre.png").exists());
    server.shutdown().await;
}

async fn pages_refuse_forged_posts_and_set_strict_headers(backend: Backend) {
    let Some(server) = spawn(backend).await else { return };
    customer(&server, "dan@example.com").await;
    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let page = client.get(server.url("/account/login")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let csp = page.headers()["content-security-policy"].to_str().unwrap().to_owned();
    assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'") && !csp.contains("unsafe"));
    assert_eq!(page.headers()["cache-control"], "no-store");
    let csrf_cookie = page.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(
        csrf_cookie.starts_with("__Host-sr_csrf=")
            && csrf_cookie.contains("Secure")
            && csrf_cookie.contains("HttpOnly")
    );
    assert!(
        csrf_cookie.contains("SameSite=Strict") && csrf_cookie.contains("Path=/") && !csrf_cookie.contains("Domain")
    );
    let token = csrf_cookie.trim_start_matches("__Host-sr_csrf=").split(';').next().unwrap().to_owned();
    let html = page.text().await.unwrap();
    assert!(html.contains(&format!("value=\"{token}\"")), "the form carries the token");

    let login = |csrf: &str| {
        client.post(server.url("/account/login")).header("cookie", format!("__Host-sr_csrf={token}")).form(&[
            ("csrf", csrf),
            ("email", "dan@example.com"),
            ("password", PASSWORD),
        ])
    };
    // Without the right token, or from another site: refused, and no session.
    let forged = login("forged").send().await.unwrap();
    assert_eq!(forged.status(), 403);
    assert!(forged.headers().get("set-cookie").is_none());
    let cross = login(&token).header("origin", "https://evil.example").send().await.unwrap();
    assert_eq!(cross.status(), 403);
    // With it: a session cookie of the strict kind, and the security centre.
    let signed_in = login(&token).send().await.unwrap();
    assert_eq!(signed_in.status(), 303);
    let session = signed_in.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(
        session.starts_with("__Host-sr_session=srs_")
            && session.contains("HttpOnly")
            && session.contains("SameSite=Strict")
    );
    let cookie = session.split(';').next().unwrap().to_owned();
    let centre = client.get(server.url("/account/security")).header("cookie", &cookie).send().await.unwrap();
    assert_eq!(centre.status(), 200);
    let centre = centre.text().await.unwrap();
    assert!(centre.contains("dan@example.com") && centre.contains("Sessions and devices"));
    // A tampered session cookie leads back to sign-in.
    let tampered = format!("{}x", &cookie[..cookie.len() - 1]);
    let refused = client.get(server.url("/account/security")).header("cookie", tampered).send().await.unwrap();
    assert_eq!((refused.status().as_u16(), refused.headers()["location"].to_str().unwrap()), (303, "/account/login"));
    let mut audited = false;
    for _ in 0..50 {
        let entries = server.get_json("/v1/audit/entries?start=0&limit=1000").await.to_string();
        if entries.contains("invalid_session_cookie") {
            audited = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(audited, "a tampered session cookie is audited");
    // Logout clears the cookie and site data.
    let out = client
        .post(server.url("/account/logout"))
        .header("cookie", format!("{cookie}; __Host-sr_csrf={token}"))
        .form(&[("csrf", token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), 303);
    assert!(out.headers()["set-cookie"].to_str().unwrap().contains("Max-Age=0"));
    assert!(out.headers()["clear-site-data"].to_str().unwrap().contains("cookies"));
    let after = client.get(server.url("/account/security")).header("cookie", &cookie).send().await.unwrap();
    assert_eq!(after.status(), 303, "the session is dead on the server");
    server.shutdown().await;
}

/// In the breach corpus the link-pages test builds (long and varied enough for the other rules).
const BREACHED: &str = "correct horse battery staple";
const NEW_PASSWORD: &str = "quiet harbour lantern 2044";
const STAFF_PASSWORD: &str = "copper meadow lantern 4711";

/// A breached-password corpus holding [`BREACHED`], imported with `strongroom passwords import`
/// into `dir`; answers the corpus file.
async fn corpus_with_breached(dir: &std::path::Path) -> std::path::PathBuf {
    let hex: String = Sha1::digest(BREACHED.as_bytes()).iter().map(|b| format!("{b:02X}")).collect();
    let list = dir.join("pwnedpasswords.txt");
    std::fs::write(&list, format!("{hex}:1000\r\n")).unwrap();
    let args = ["strongroom", "--data-dir", dir.to_str().unwrap(), "passwords", "import", list.to_str().unwrap()];
    assert_eq!(strongroom::commands::run(strongroom::commands::Cli::try_parse_from(args).unwrap()).await, 0);
    dir.join("pwned-passwords.bin")
}

/// The token of the newest mail of `kind` to `to` (waits up to 10 s).
async fn mailed_token(server: &TestServer, kind: &str, to: &str) -> String {
    let dir = server.data_dir().join("mail");
    for _ in 0..100 {
        let mut names: Vec<std::path::PathBuf> =
            std::fs::read_dir(&dir).map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect()).unwrap_or_default();
        names.retain(|p| p.to_string_lossy().ends_with(&format!("-{kind}.eml")));
        names.sort();
        for name in names.iter().rev() {
            let text = std::fs::read_to_string(name).unwrap().replace("=\r\n", "").replace("=3D", "=");
            if let (true, Some(at)) = (text.contains(&format!("To: {to}")), text.find("#token=")) {
                let start = at + "#token=".len();
                return text[start..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("no {kind} mail to {to}");
}

async fn invite_staff(server: &TestServer, email: &str) {
    let merchant = MerchantId::parse(&server.merchant_id).unwrap();
    let roles = vec!["support".to_owned()];
    server.app().state.staff.invite(&merchant, email, &roles, None, &Client::default()).await.unwrap();
}

async fn mailed_links_open_working_pages_in_chromium(backend: Backend) {
    let Some((node, modules, chromium)) = test_browser() else { return };
    let corpus_dir = tempfile::tempdir().unwrap();
    let corpus = corpus_with_breached(corpus_dir.path()).await;
    let Some(server) = spawn_with(backend, |config| {
        config.pages.sign_up = true;
        config.passwords.pwned_file = Some(corpus);
    })
    .await
    else {
        return;
    };
    invite_staff(&server, "sam@shop.example").await;
    // A passkey-only account, as the shop's backend makes them.
    let passkey_only = json!({"email": "pia@example.com"});
    let response = server.request(Method::POST, "/v1/identity/customers").json(&passkey_only).send().await.unwrap();
    assert_eq!(response.status(), 202);
    // The links lead where this server really listens: plain HTTP (TLS is terminated upstream
    // here) on localhost and the port the system chose.
    let base = server.base_url.replace("127.0.0.1", "localhost");
    let shots = tempfile::tempdir().unwrap();
    let mail_dir = server.data_dir().join("mail");
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tools/browser/link_pages.mjs");
    let output = tokio::process::Command::new(node)
        .arg(script)
        .arg(&base)
        .arg(&mail_dir)
        .args(["erin@example.com", "sam@shop.example", "pia@example.com"])
        .arg(shots.path())
        .env("STRONGROOM_TEST_NODE_MODULES", modules)
        .env("STRONGROOM_TEST_CHROMIUM", chromium)
        .output();
    let output =
        tokio::time::timeout(std::time::Duration::from_secs(180), output).await.expect("browser run in time").unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "browser run failed: {}\n{stdout}", String::from_utf8_lossy(&output.stderr));
    let findings: serde_json::Value = serde_json::from_str(stdout.trim().lines().last().unwrap()).unwrap();
    assert_eq!(findings["csp_violations"], 0);
    assert_eq!(findings["reset"], true);
    assert_eq!(findings["invitation_accepted"], true);
    assert_eq!(findings["first_passkey"], true);
    assert!(findings["sign_up_refusals"]["breached"].as_str().unwrap().contains("data breaches"), "{findings}");
    assert!(shots.path().join("invitation-accepted.png").exists());

    // What the pages did is what the API sees: the customer signs in with the new password, the
    // staff member with theirs (and is asked to enrol a second factor).
    let login = json!({"email": "erin@example.com", "password": NEW_PASSWORD});
    let response = server.request(Method::POST, "/v1/identity/login").json(&login).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let staff = json!({"email": "sam@shop.example", "password": STAFF_PASSWORD});
    let answer: serde_json::Value =
        server.client.post(server.url("/v1/staff/login")).json(&staff).send().await.unwrap().json().await.unwrap();
    assert_eq!(answer["status"], "enrolment_required", "{answer}");
    // The tokens travelled in fragments and request bodies: no log line holds one.
    let logs = captured_logs();
    for link in findings["links"].as_object().unwrap().values() {
        let token = link.as_str().unwrap().split("#token=").nth(1).unwrap();
        assert!(!logs.contains(token), "a link's token reached a log line");
    }
    assert!(!logs.contains(BREACHED) && !logs.contains(NEW_PASSWORD), "a password reached a log line");
    server.shutdown().await;
}

/// The page's CSRF token and a cookie header carrying it, from a GET of `path`.
async fn page_token(client: &reqwest::Client, server: &TestServer, path: &str) -> (String, String) {
    let page = client.get(server.url(path)).send().await.unwrap();
    assert_eq!(page.status(), 200, "{path}");
    assert!(page.headers()["content-security-policy"].to_str().unwrap().contains("script-src 'self'"));
    assert_eq!(page.headers()["cache-control"], "no-store");
    let set = page.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(set.starts_with("__Host-sr_csrf=") && set.contains("Secure") && set.contains("SameSite=Strict"));
    let token = set.trim_start_matches("__Host-sr_csrf=").split(';').next().unwrap().to_owned();
    let html = page.text().await.unwrap();
    assert!(!html.contains("<script>") && html.contains("/account/assets/account.js"), "{path}: {html}");
    (token.clone(), format!("__Host-sr_csrf={token}"))
}

async fn link_pages_refuse_requests_without_the_csrf_token(backend: Backend) {
    let Some(server) = spawn_with(backend, |config| config.pages.sign_up = true).await else { return };
    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    customer(&server, "fay@example.com").await;
    invite_staff(&server, "gil@shop.example").await;
    let invitation = mailed_token(&server, "staff_invitation", "gil@shop.example").await;
    server
        .request(Method::POST, "/v1/identity/password-reset")
        .json(&json!({"email": "fay@example.com"}))
        .send()
        .await
        .unwrap();
    let reset = mailed_token(&server, "password_reset", "fay@example.com").await;

    // Script requests: no X-CSRF-Token, a wrong one, or the right one from another site.
    let first_passkey = json!({"customer": "cus_none", "ceremony": "wac_none", "credential": {}});
    let script_requests = [
        ("/account/verify-email", "/account/verify-email", json!({"token": "evt_whatever"})),
        ("/account/verify-email", "/account/verify-email/passkey", first_passkey),
        ("/account/reset-password", "/account/reset-password", json!({"token": reset, "new_password": NEW_PASSWORD})),
        ("/staff/invitation", "/staff/invitation", json!({"token": invitation, "password": STAFF_PASSWORD})),
    ];
    for (page, path, body) in &script_requests {
        let (token, cookie) = page_token(&client, &server, page).await;
        let post = || client.post(server.url(path)).header("cookie", &cookie).json(body);
        let missing = post().send().await.unwrap();
        let wrong = post().header("x-csrf-token", "forged").send().await.unwrap();
        let cross =
            post().header("x-csrf-token", &token).header("origin", "https://evil.example").send().await.unwrap();
        let cross_site =
            post().header("x-csrf-token", &token).header("sec-fetch-site", "cross-site").send().await.unwrap();
        for refused in [missing, wrong, cross, cross_site] {
            assert_eq!(refused.status(), 403, "{path}");
            let problem: serde_json::Value = refused.json().await.unwrap();
            assert_eq!(problem["code"], "forbidden", "{path}: {problem}");
        }
    }
    // Nothing was acted on: the reset link and the invitation still work.
    let (token, cookie) = page_token(&client, &server, "/staff/invitation").await;
    let accepted = client
        .post(server.url("/staff/invitation"))
        .header("cookie", &cookie)
        .header("x-csrf-token", &token)
        .json(&json!({"token": invitation, "password": STAFF_PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(accepted.status(), 200);
    let (token, cookie) = page_token(&client, &server, "/account/reset-password").await;
    let weak = client
        .post(server.url("/account/reset-password"))
        .header("cookie", &cookie)
        .header("x-csrf-token", &token)
        .json(&json!({"token": reset, "new_password": "password123"}))
        .send()
        .await
        .unwrap();
    assert_eq!(weak.status(), 422);
    let problem: serde_json::Value = weak.json().await.unwrap();
    assert_eq!(problem["code"], "weak_password");
    let detail = problem["detail"].as_str().unwrap();
    assert!(detail.starts_with("The password must be at least") && !detail.contains("password123"), "{problem}");
    let done = client
        .post(server.url("/account/reset-password"))
        .header("cookie", &cookie)
        .header("x-csrf-token", &token)
        .json(&json!({"token": reset, "new_password": NEW_PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(done.status(), 200);

    // Forms: a forged or cross-site sign-up creates nothing and mails nobody; a forged reset
    // request mails nobody.
    customer(&server, "gus@example.com").await;
    let (token, cookie) = page_token(&client, &server, "/account/sign-up").await;
    let sign_up = |csrf: &str| {
        client.post(server.url("/account/sign-up")).header("cookie", &cookie).form(&[
            ("csrf", csrf),
            ("email", "hal@example.com"),
            ("password", PASSWORD),
        ])
    };
    assert_eq!(sign_up("forged").send().await.unwrap().status(), 403);
    assert_eq!(sign_up(&token).header("origin", "https://evil.example").send().await.unwrap().status(), 403);
    let (_, cookie) = page_token(&client, &server, "/account/forgot-password").await;
    let forgot = client
        .post(server.url("/account/forgot-password"))
        .header("cookie", &cookie)
        .form(&[("csrf", "forged"), ("email", "gus@example.com")])
        .send()
        .await
        .unwrap();
    assert_eq!(forgot.status(), 403);
    assert_eq!(
        forgot.headers()["content-type"].to_str().unwrap(),
        "text/html; charset=utf-8",
        "the pages' refusals stay HTML"
    );
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let mails: Vec<(String, String)> = std::fs::read_dir(server.data_dir().join("mail"))
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| (e.file_name().to_string_lossy().into_owned(), std::fs::read_to_string(e.path()).unwrap()))
        .collect();
    assert!(!mails.iter().any(|(_, m)| m.contains("To: hal@example.com")), "a refused sign-up mailed");
    let resets = mails.iter().filter(|(n, m)| n.ends_with("-password_reset.eml") && m.contains("To: gus@example.com"));
    assert_eq!(resets.count(), 0, "a refused reset request mailed");
    server.shutdown().await;
}

async fn sign_up_is_served_only_when_allowed(backend: Backend) {
    // Off by default: no page, no link to it.
    let Some(server) = spawn(backend).await else { return };
    let client = reqwest::Client::new();
    assert_eq!(client.get(server.url("/account/sign-up")).send().await.unwrap().status(), 404);
    let login = client.get(server.url("/account/login")).send().await.unwrap().text().await.unwrap();
    assert!(!login.contains("/account/sign-up") && login.contains("/account/forgot-password"));
    server.shutdown().await;

    // On: a visitor signs up with the page alone, and the address check is mailed.
    let Some(server) = spawn_with(backend, |config| config.pages.sign_up = true).await else { return };
    let login = client.get(server.url("/account/login")).send().await.unwrap().text().await.unwrap();
    assert!(login.contains("/account/sign-up"));
    let (token, cookie) = page_token(&client, &server, "/account/sign-up").await;
    let signed_up = client
        .post(server.url("/account/sign-up"))
        .header("cookie", &cookie)
        .form(&[("csrf", token.as_str()), ("email", "ivy@example.com"), ("password", PASSWORD)])
        .send()
        .await
        .unwrap();
    assert_eq!(signed_up.status(), 200);
    assert!(signed_up.text().await.unwrap().contains("id=\"signed-up\""));
    let verify = mailed_token(&server, "verify_email", "ivy@example.com").await;
    assert!(verify.starts_with("evt_"));
    server.shutdown().await;

    // Without the customers' pages, the staff invitation page is still served: strongroom's own
    // invitation links lead there.
    let Some(server) = spawn_with(backend, |config| config.pages.enabled = false).await else { return };
    assert_eq!(client.get(server.url("/account/login")).send().await.unwrap().status(), 404);
    let invitation = client.get(server.url("/staff/invitation")).send().await.unwrap();
    assert_eq!(invitation.status(), 200);
    assert!(invitation.text().await.unwrap().contains("data-link-form"));
    server.shutdown().await;
}

async fn a_new_address_is_confirmed_on_the_verify_page(backend: Backend) {
    let Some(server) = spawn(backend).await else { return };
    let client = reqwest::Client::new();
    customer(&server, "jo@example.com").await;
    let login = json!({"email": "jo@example.com", "password": PASSWORD});
    let signed_in: serde_json::Value =
        server.request(Method::POST, "/v1/identity/login").json(&login).send().await.unwrap().json().await.unwrap();
    let session = signed_in["session"]["token"].as_str().unwrap().to_owned();
    let change = json!({"email": "jo.new@example.com", "current_password": PASSWORD});
    let requested = server.request_as(&session, Method::POST, "/v1/me/email").json(&change).send().await.unwrap();
    assert_eq!(requested.status(), 202);
    // The confirmation mailed to the new address opens the same page as an address check.
    let token = mailed_token(&server, "confirm_email_change", "jo.new@example.com").await;
    let (csrf, cookie) = page_token(&client, &server, "/account/verify-email").await;
    let confirm = |token: &str| {
        client
            .post(server.url("/account/verify-email"))
            .header("cookie", &cookie)
            .header("x-csrf-token", &csrf)
            .json(&json!({"token": token}))
    };
    let confirmed = confirm(&token).send().await.unwrap();
    assert_eq!(confirmed.status(), 200);
    assert!(confirmed.text().await.unwrap().contains("confirmed"));
    let me: serde_json::Value =
        server.request_as(&session, Method::GET, "/v1/me").send().await.unwrap().json().await.unwrap();
    assert_eq!(me["email"], "jo.new@example.com", "{me}");
    // Used once; and a dead link says what to do, never echoing the token.
    let again = confirm(&token).send().await.unwrap();
    assert_eq!(again.status(), 422);
    let problem: serde_json::Value = again.json().await.unwrap();
    assert_eq!(problem["code"], "invalid_link");
    let detail = problem["detail"].as_str().unwrap();
    assert!(detail.starts_with("This link does not work") && !problem.to_string().contains(&token), "{problem}");
    server.shutdown().await;
}

async fn the_security_centre_shows_payments_and_removes_saved_cards(backend: Backend) {
    let Some(server) = spawn(backend).await else { return };
    let response = server
        .request(Method::POST, "/v1/identity/customers")
        .json(&json!({"email": "eve@example.com", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let customer = response.json::<serde_json::Value>().await.unwrap()["customer"].as_str().unwrap().to_owned();
    server.verify_customer_email("eve@example.com").await;
    // A payment that saves the card, and a declined one.
    let token = |number: &str| {
        json!({"type": "card", "customer": customer,
        "value": {"number": number, "exp_month": 12, "exp_year": 2040, "cvc": "123"}})
    };
    let saved = server.post_json_as(&server.bootstrap_key, "/v1/tokens", &token("4242424242424242")).await;
    let paid = server
        .post_json_as(
            &server.bootstrap_key,
            "/v1/payment_intents",
            &json!({"amount": 4200, "currency": "eur",
            "customer": customer, "payment_method": saved["id"], "confirm": true,
            "setup_future_usage": "on_session", "consent": {"text": "Keep my card <for> next time"}}),
        )
        .await;
    assert_eq!(paid["status"], "succeeded", "{paid}");
    let pm = paid["saved_card"].as_str().unwrap().to_owned();
    let declined = server.post_json_as(&server.bootstrap_key, "/v1/tokens", &token("4000000000000002")).await;
    let failed = server
        .post_json_as(
            &server.bootstrap_key,
            "/v1/payment_intents",
            &json!({"amount": 900, "currency": "eur",
            "customer": customer, "payment_method": declined["id"], "confirm": true}),
        )
        .await;
    assert_eq!(failed["status"], "requires_payment_method", "{failed}");

    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let (csrf, csrf_cookie) = page_token(&client, &server, "/account/login").await;
    let signed_in = client
        .post(server.url("/account/login"))
        .header("cookie", &csrf_cookie)
        .form(&[("csrf", csrf.as_str()), ("email", "eve@example.com"), ("password", PASSWORD)])
        .send()
        .await
        .unwrap();
    assert_eq!(signed_in.status(), 303);
    let session = signed_in.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_owned();
    let cookies = format!("{session}; {csrf_cookie}");
    let centre = client.get(server.url("/account/security")).header("cookie", &cookies).send().await.unwrap();
    let html = centre.text().await.unwrap();
    assert!(html.contains("Your payments") && html.contains("42.00 EUR") && html.contains("9.00 EUR"), "{html}");
    assert!(html.contains("Paid") && html.contains("Declined"), "{html}");
    assert!(html.contains("visa •••• 4242") && !html.contains("4242424242424242"), "{html}");
    assert!(html.contains("Keep my card &lt;for&gt; next time"), "the consent text is escaped: {html}");
    let action = format!("/account/saved-cards/{pm}/remove");
    assert!(html.contains(&action), "{html}");

    // Without the CSRF token: refused, the card stays.
    let forged = client.post(server.url(&action)).header("cookie", &session).form(&[("csrf", "x")]).send().await;
    assert_eq!(forged.unwrap().status(), 403);
    assert_eq!(server.get_json(&format!("/v1/saved_cards/{pm}")).await["status"], "active");
    let removed = client
        .post(server.url(&action))
        .header("cookie", &cookies)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(removed.status(), 303);
    let card = server.get_json(&format!("/v1/saved_cards/{pm}")).await;
    assert_eq!((card["status"].as_str(), card["removed_by"].as_str()), (Some("removed"), Some("customer")));
    let centre = client.get(server.url("/account/security")).header("cookie", &cookies).send().await.unwrap();
    let html = centre.text().await.unwrap();
    assert!(html.contains("No saved cards.") && !html.contains(&action), "{html}");
    server.shutdown().await;
}
