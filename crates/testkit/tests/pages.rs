//! The hosted account pages in headless Chromium (`tools/browser/account_pages.mjs`, with
//! playwright-core): sign-in, the security centre, TOTP enrolment with codes computed in the
//! browser test, a passkey from Chromium's virtual authenticator, sign-out and passkey sign-in;
//! cookie flags, CSP and CSRF checked on the way. Plus the pages' HTTP rules without a browser.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code fails loudly")]

use reqwest::Method;
use serde_json::json;
use strongroom::config::TlsMode;
use strongroom_testkit::{Backend, TestServer, on_both_backends, test_browser};

on_both_backends!(account_pages_in_chromium, pages_refuse_forged_posts_and_set_strict_headers);

const PASSWORD: &str = "violet tractor anthem 1987";

/// A server on plain HTTP (a browser treats http://localhost as a secure context, so `Secure`
/// cookies and WebAuthn work without a certificate), with passkeys for that origin.
async fn spawn(backend: Backend) -> Option<TestServer> {
    TestServer::spawn_with(backend, |config| {
        config.server.tls = TlsMode::TerminatedUpstream;
        config.webauthn.rp_id = "localhost".into();
        config.webauthn.origins = vec!["http://localhost".into()];
        config.webauthn.allow_any_port = true;
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
