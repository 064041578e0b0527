//! 3-D Secure's pages on a real server, on SQLite and PostgreSQL: in headless Chromium
//! (`tools/browser/three_d_secure.mjs`), a customer goes from the hand-off link the API gave the
//! shop to the sandbox's challenge page, passes (or fails) it, and lands on the shop's return page
//! on another origin, told the intent and its outcome, while the intent moved by the gateway's
//! answer alone. Without a browser: a return before the challenge is answered moves nothing, a
//! return cannot be replayed into a second charge, hand-off links of unknown intents are dead,
//! and `return_url` is checked.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code fails loudly")]

use reqwest::Method;
use serde_json::{Value, json};
use strongroom::config::TlsMode;
use strongroom_testkit::{Backend, TestServer, on_both_backends, test_browser};

on_both_backends!(
    three_d_secure_in_chromium,
    an_early_or_repeated_return_moves_only_by_the_gateway,
    dead_links_and_bad_return_urls
);

/// The sandbox's card that asks for 3-D Secure.
const CHALLENGE_CARD: &str = "4000002760003184";

/// A server on plain HTTP (`http://localhost` is a secure context for the browser).
async fn spawn(backend: Backend) -> Option<TestServer> {
    TestServer::spawn_with(backend, |config| config.server.tls = TlsMode::TerminatedUpstream).await
}

async fn post(server: &TestServer, key: &str, path: &str, body: &Value) -> (u16, Value) {
    let response = server.request_as(key, Method::POST, path).json(body).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

async fn get(server: &TestServer, key: &str, path: &str) -> Value {
    server.request_as(key, Method::GET, path).send().await.unwrap().json().await.unwrap()
}

async fn test_key(server: &TestServer) -> String {
    let body = json!({"name": "ci", "scopes": ["payments:write", "payments:read", "vault:write"], "mode": "test"});
    let (status, key) = post(server, &server.bootstrap_key, "/v1/api-keys", &body).await;
    assert_eq!(status, 201, "{key}");
    key["secret"].as_str().unwrap().to_owned()
}

/// An intent of 25.00 EUR on the challenge card, confirmed with `return_url`: `requires_action`.
async fn challenged(server: &TestServer, key: &str, return_url: &str) -> Value {
    let card =
        json!({"type": "card", "value": {"number": CHALLENGE_CARD, "exp_month": 12, "exp_year": 2040, "cvc": "123"}});
    let (status, token) = post(server, key, "/v1/tokens", &card).await;
    assert_eq!(status, 201, "{token}");
    let body = json!({"amount": 2500, "currency": "EUR", "payment_method": token["id"]});
    let (status, intent) = post(server, key, "/v1/payment_intents", &body).await;
    assert_eq!(status, 201, "{intent}");
    let id = intent["id"].as_str().unwrap();
    let (status, intent) =
        post(server, key, &format!("/v1/payment_intents/{id}/confirm"), &json!({"return_url": return_url})).await;
    assert_eq!(status, 200, "{intent}");
    assert_eq!(intent["status"], "requires_action", "{intent}");
    assert_eq!(intent["next_action"]["type"], "redirect_to_url");
    assert_eq!(intent["next_action"]["redirect_to_url"]["return_url"], return_url);
    intent
}

fn handoff(intent: &Value) -> String {
    intent["next_action"]["redirect_to_url"]["url"].as_str().unwrap().to_owned()
}

async fn three_d_secure_in_chromium(backend: Backend) {
    let Some((node, modules, chromium)) = test_browser() else { return };
    let Some(server) = spawn(backend).await else { return };
    let key = test_key(&server).await;
    // The shop's return page is on another origin than strongroom's pages (localhost).
    let shop = server.base_url.replace("localhost", "127.0.0.1");
    let return_url = format!("{shop}/healthz?cart=7");
    let passing = challenged(&server, &key, &return_url).await;
    let failing = challenged(&server, &key, &return_url).await;
    let (pass_url, fail_url) = (handoff(&passing), handoff(&failing));
    assert!(pass_url.starts_with("http://localhost:"), "{pass_url}");

    let shots = tempfile::tempdir().unwrap();
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tools/browser/three_d_secure.mjs");
    let output = tokio::process::Command::new(node)
        .arg(script)
        .args([&pass_url, &fail_url, &format!("{shop}/healthz"), &shots.path().to_string_lossy().into_owned()])
        .env("STRONGROOM_TEST_NODE_MODULES", modules)
        .env("STRONGROOM_TEST_CHROMIUM", chromium)
        .output();
    let output =
        tokio::time::timeout(std::time::Duration::from_secs(120), output).await.expect("browser run in time").unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "browser run failed: {}\n{stdout}", String::from_utf8_lossy(&output.stderr));
    let findings: Value = serde_json::from_str(stdout.trim().lines().last().unwrap()).unwrap();
    assert_eq!(findings["pass"]["payment_intent"], passing["id"], "{findings}");
    assert_eq!(findings["pass"]["redirect_status"], "succeeded", "{findings}");
    assert_eq!(findings["fail"]["payment_intent"], failing["id"], "{findings}");
    assert_eq!(findings["fail"]["redirect_status"], "failed", "{findings}");
    assert_eq!(findings["pass"]["violations"], json!([]), "no CSP violation: {findings}");
    assert!(shots.path().join("challenge-pass.png").exists());

    // The intents moved by the gateway's answers.
    let paid = get(&server, &key, &format!("/v1/payment_intents/{}", passing["id"].as_str().unwrap())).await;
    assert_eq!((paid["status"].as_str(), paid["amount_received"].as_i64()), (Some("succeeded"), Some(2500)), "{paid}");
    assert!(paid["next_action"].is_null(), "{paid}");
    let refused = get(&server, &key, &format!("/v1/payment_intents/{}", failing["id"].as_str().unwrap())).await;
    assert_eq!(refused["status"], "requires_payment_method", "{refused}");
    assert_eq!(refused["last_payment_error"]["decline_code"], json!(null), "{refused}");
    assert_eq!(refused["last_payment_error"]["code"], "payment_intent_authentication_failure", "{refused}");
    server.shutdown().await;
}

async fn an_early_or_repeated_return_moves_only_by_the_gateway(backend: Backend) {
    let Some(server) = spawn(backend).await else { return };
    let key = test_key(&server).await;
    let intent = challenged(&server, &key, "https://shop.example/done").await;
    let id = intent["id"].as_str().unwrap();
    let browser = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();

    // A return before the customer answered the challenge: the gateway says it still waits.
    let early = browser.get(server.url(&format!("/pay/return/{id}"))).send().await.unwrap();
    assert_eq!(early.status(), 200);
    let page = early.text().await.unwrap();
    let onward = format!("0;url=https://shop.example/done?payment_intent={id}&amp;redirect_status=failed");
    assert!(page.contains(&onward), "the page sends the customer on to the shop: {page}");
    assert!(page.contains("Your bank still asks you to confirm this payment."), "{page}");
    let still = get(&server, &key, &format!("/v1/payment_intents/{id}")).await;
    assert_eq!(still["status"], "requires_action", "{still}");
    assert_eq!(handoff(&still), handoff(&intent), "the same hand-off link still works");

    // The hand-off page leads to the sandbox's page; its form is CSRF-checked.
    let page = browser.get(handoff(&intent).replace("localhost", "127.0.0.1")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.headers()["content-security-policy"].to_str().unwrap().contains("form-action 'self'"));
    let html = page.text().await.unwrap();
    let challenge = html.split("/sandbox/challenges/").nth(1).unwrap().split('"').next().unwrap().to_owned();
    let forged = browser
        .post(server.url(&format!("/sandbox/challenges/{challenge}")))
        .form(&[("outcome", "pass"), ("csrf", "forged")])
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);

    // Passed by the API's sandbox helper (the customer at the issuer's page), then returns, many
    // at once: one authorisation at the gateway, one success.
    let (status, _) =
        post(&server, &key, &format!("/v1/payment_intents/{id}/sandbox_challenge"), &json!({"outcome": "pass"})).await;
    assert_eq!(status, 200);
    let returns = (0..10).map(|_| browser.get(server.url(&format!("/pay/return/{id}"))).send());
    for response in futures::future::join_all(returns).await {
        assert_eq!(response.unwrap().status(), 200);
    }
    let paid = get(&server, &key, &format!("/v1/payment_intents/{id}")).await;
    assert_eq!(paid["status"], "succeeded", "{paid}");
    let again = browser.get(server.url(&format!("/pay/return/{id}"))).send().await.unwrap();
    assert!(again.text().await.unwrap().contains("&amp;redirect_status=succeeded\""));
    server.shutdown().await;
}

async fn dead_links_and_bad_return_urls(backend: Backend) {
    let Some(server) = spawn(backend).await else { return };
    let key = test_key(&server).await;
    for path in [
        "/pay/authenticate/pi_0000000000000000000000000",
        "/pay/return/pi_0000000000000000000000000",
        "/pay/authenticate/nonsense",
        "/sandbox/challenges/sbx3ds_000",
    ] {
        let response = server.request(Method::GET, path).send().await.unwrap();
        assert_eq!(response.status(), 404, "{path}");
        let text = response.text().await.unwrap();
        assert!(text.contains("This payment link does not work"), "{path}: {text}");
    }
    let card = json!({"type": "card", "value": {"number": CHALLENGE_CARD, "exp_month": 12, "exp_year": 2040}});
    let (_, token) = post(&server, &key, "/v1/tokens", &card).await;
    let (_, intent) = post(
        &server,
        &key,
        "/v1/payment_intents",
        &json!({"amount": 100, "currency": "EUR", "payment_method": token["id"]}),
    )
    .await;
    let id = intent["id"].as_str().unwrap();
    for bad in [
        "javascript:alert(1)",
        "http://shop.example/done",
        "https://user:pw@shop.example/",
        "https:///nohost",
        "https://shop.example/<script>",
        "ftp://shop.example/",
    ] {
        let (status, problem) =
            post(&server, &key, &format!("/v1/payment_intents/{id}/confirm"), &json!({"return_url": bad})).await;
        assert_eq!(status, 422, "{bad}: {problem}");
        assert_eq!(problem["code"], "invalid_return_url", "{bad}: {problem}");
        assert_eq!(problem["errors"][0]["pointer"], "/return_url", "{problem}");
    }
    let after = get(&server, &key, &format!("/v1/payment_intents/{id}")).await;
    assert_eq!(after["status"], "requires_confirmation", "a refused confirm changes nothing: {after}");
    server.shutdown().await;
}
