//! Black-box tests of OAuth 2.0 client credentials on a real server, on SQLite and PostgreSQL:
//! an API key trades itself for a short-lived EdDSA access token that works in its place with
//! the granted scopes; PyJWT verifies the token against the published JWK set; `alg: none`, an
//! HMAC keyed with the public key, a changed payload, an expired token, a revoked key and a
//! session token used as an API token are all refused.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code fails loudly")]

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::Method;
use serde_json::{Value, json};
use strongroom_testkit::{Backend, TestServer, captured_logs, on_both_backends, test_python};

on_both_backends!(client_credentials_give_scoped_short_lived_tokens, forged_and_foreign_tokens_are_refused);

async fn token(server: &TestServer, form: &[(&str, &str)]) -> (u16, Value, reqwest::header::HeaderMap) {
    let response = server.client.post(server.url("/oauth/token")).form(form).send().await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (status, response.json().await.unwrap(), headers)
}

fn key_id(key: &str) -> String {
    let body = key.split('_').nth(2).unwrap();
    format!("key_{body}")
}

async fn status_with(server: &TestServer, bearer: &str, method: Method, path: &str) -> u16 {
    let mut request = server.client.request(method.clone(), server.url(path)).bearer_auth(bearer);
    if method == Method::POST {
        request = request.json(&json!({"name": "from a token", "scopes": ["audit:read"]}));
    }
    request.send().await.unwrap().status().as_u16()
}

async fn client_credentials_give_scoped_short_lived_tokens(backend: Backend) {
    let Some(server) = TestServer::spawn(backend).await else { return };
    let (_, key) = server.create_key("service", &["audit:read", "vault:read", "admin:api_keys"]).await;
    let id = key_id(&key);
    let (status, issued, headers) = token(
        &server,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", &id),
            ("client_secret", &key),
            ("scope", "audit:read vault:read"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{issued}");
    assert_eq!(headers["cache-control"], "no-store");
    assert_eq!((issued["token_type"].as_str(), issued["expires_in"].as_u64()), (Some("Bearer"), Some(300)));
    assert_eq!(issued["scope"], "audit:read vault:read");
    let access = issued["access_token"].as_str().unwrap().to_owned();
    assert_eq!(status_with(&server, &access, Method::GET, "/v1/audit/checkpoint").await, 200);
    assert_eq!(
        status_with(&server, &access, Method::POST, "/v1/api-keys").await,
        403,
        "a scope the token was not granted"
    );
    assert_eq!(status_with(&server, &key, Method::POST, "/v1/api-keys").await, 201, "the key itself still holds it");

    // HTTP Basic works too; asking for a scope the key lacks does not.
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{id}:{key}"));
    let response = server
        .client
        .post(server.url("/oauth/token"))
        .header("authorization", format!("Basic {basic}"))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let (status, refused, _) = token(
        &server,
        &[("grant_type", "client_credentials"), ("client_id", &id), ("client_secret", &key), ("scope", "admin:keys")],
    )
    .await;
    assert_eq!((status, refused["error"].as_str()), (400, Some("invalid_scope")));
    let (status, refused, headers) = token(
        &server,
        &[("grant_type", "client_credentials"), ("client_id", &id), ("client_secret", &server.bootstrap_key)],
    )
    .await;
    assert_eq!((status, refused["error"].as_str()), (401, Some("invalid_client")), "another key's secret");
    assert!(headers.contains_key("www-authenticate"));
    let (status, refused, _) =
        token(&server, &[("grant_type", "password"), ("client_id", &id), ("client_secret", &key)]).await;
    assert_eq!((status, refused["error"].as_str()), (400, Some("unsupported_grant_type")));

    // An independent verifier (PyJWT) accepts it with the published keys.
    if let Some(python) = test_python() {
        let jwks = server.client.get(server.url("/.well-known/jwks.json")).send().await.unwrap().text().await.unwrap();
        let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tools/python/jwt_check.py");
        let out = std::process::Command::new(&python)
            .arg(&script)
            .args([&access, &jwks, "strongroom", "strongroom"])
            .output()
            .unwrap();
        let printed = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        let claims: Value = serde_json::from_str(&printed)
            .unwrap_or_else(|_| panic!("PyJWT refused: {printed} {}", String::from_utf8_lossy(&out.stderr)));
        assert_eq!((claims["sub"].as_str(), claims["purpose"].as_str()), (Some(id.as_str()), Some("api")));
        let out = std::process::Command::new(&python)
            .arg(&script)
            .args([&access, &jwks, "strongroom", "another-audience"])
            .output()
            .unwrap();
        assert!(String::from_utf8_lossy(&out.stdout).starts_with("invalid"), "PyJWT checks the audience too");
    }

    // Five minutes later the token is dead; revoking the key kills tokens at once.
    server.clock.advance(Duration::from_secs(5 * 60 + 31));
    assert_eq!(status_with(&server, &access, Method::GET, "/v1/audit/checkpoint").await, 401, "expired");
    let (_, fresh, _) =
        token(&server, &[("grant_type", "client_credentials"), ("client_id", &id), ("client_secret", &key)]).await;
    let fresh = fresh["access_token"].as_str().unwrap().to_owned();
    assert_eq!(status_with(&server, &fresh, Method::GET, "/v1/audit/checkpoint").await, 200);
    let revoke = server.request(Method::DELETE, &format!("/v1/api-keys/{id}")).send().await.unwrap();
    assert_eq!(revoke.status(), 200);
    assert_eq!(status_with(&server, &fresh, Method::GET, "/v1/audit/checkpoint").await, 401, "its key was revoked");
    assert!(!captured_logs().contains(&access) && !captured_logs().contains(&key), "no token or secret in a log line");
    server.shutdown().await;
}

async fn forged_and_foreign_tokens_are_refused(backend: Backend) {
    let Some(server) = TestServer::spawn(backend).await else { return };
    let id = key_id(&server.bootstrap_key);
    let (_, issued, _) = token(
        &server,
        &[("grant_type", "client_credentials"), ("client_id", &id), ("client_secret", &server.bootstrap_key)],
    )
    .await;
    let access = issued["access_token"].as_str().unwrap().to_owned();
    let parts: Vec<&str> = access.split('.').collect();
    let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
    let mut claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    let jwks: Value =
        server.client.get(server.url("/.well-known/jwks.json")).send().await.unwrap().json().await.unwrap();
    let public = URL_SAFE_NO_PAD.decode(jwks["keys"][0]["x"].as_str().unwrap()).unwrap();
    let b64 = |v: &Value| URL_SAFE_NO_PAD.encode(v.to_string());

    let none = format!("{}.{}.", b64(&json!({"alg": "none", "typ": "at+jwt", "kid": header["kid"]})), parts[1]);
    let hs_header = b64(&json!({"alg": "HS256", "typ": "at+jwt", "kid": header["kid"]}));
    let hs = {
        use hmac::{Hmac, Mac};
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&public).unwrap();
        mac.update(format!("{hs_header}.{}", parts[1]).as_bytes());
        format!("{hs_header}.{}.{}", parts[1], URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()))
    };
    claims["scope"] = json!("admin:keys admin:api_keys");
    let widened = format!("{}.{}.{}", parts[0], b64(&claims), parts[2]);
    let session_shaped = format!("srs_{}", "a".repeat(52));
    for (what, forged) in [
        ("alg none", none),
        ("HS256 keyed with the public key", hs),
        ("a changed payload", widened),
        ("a session token", session_shaped),
    ] {
        assert_eq!(status_with(&server, &forged, Method::GET, "/v1/audit/checkpoint").await, 401, "{what}");
    }
    // An access token is not a customer session either.
    assert_eq!(status_with(&server, &access, Method::GET, "/v1/me").await, 401);
    server.shutdown().await;
}
