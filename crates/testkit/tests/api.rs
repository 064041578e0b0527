//! Black-box tests of the HTTP API on a real server, on SQLite and PostgreSQL.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code fails loudly")]

use reqwest::Method;
use serde_json::{Value, json};
use strongroom_testkit::{Backend, TestServer, on_both_backends};

on_both_backends!(
    health_and_readiness,
    security_headers_on_every_response,
    request_ids,
    error_shapes,
    unauthenticated_answers_are_identical,
    api_key_lifecycle,
    expiry_follows_the_clock,
    scopes_are_enforced,
    listing_pages,
    body_limit,
    metrics_use_route_templates,
    openapi_covers_every_route,
    restart_keeps_state,
    validation_names_fields_without_echoing,
);

async fn problem(response: reqwest::Response) -> (u16, reqwest::header::HeaderMap, Value) {
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    assert_eq!(
        headers.get("content-type").and_then(|v| v.to_str().ok()),
        Some("application/problem+json"),
        "status {status} should be a problem document"
    );
    let body: Value = response.json().await.expect("problem body is JSON");
    assert_eq!(body["status"], status, "{body}");
    assert!(body["code"].is_string() && body["title"].is_string(), "{body}");
    assert_eq!(body["type"].as_str().unwrap(), format!("urn:strongroom:problem:{}", body["code"].as_str().unwrap()));
    assert_eq!(
        body["request_id"].as_str(),
        headers.get("x-request-id").and_then(|v| v.to_str().ok()),
        "the body names the request id of the header"
    );
    (status, headers, body)
}

async fn health_and_readiness(backend: Backend) {
    let Some(server) = TestServer::spawn(backend).await else {
        return;
    };
    let healthz = server.client.get(server.url("/healthz")).send().await.unwrap();
    assert_eq!(healthz.status(), 200);
    assert_eq!(healthz.json::<Value>().await.unwrap(), json!({"status": "ok"}));
    let readyz = server.client.get(server.url("/readyz")).send().await.unwrap();
    assert_eq!(readyz.status(), 200);
    assert_eq!(readyz.json::<Value>().await.unwrap(), json!({"status": "ready"}));
    // With the pool closed, readiness fails while liveness still answers.
    server.app().store.close().await;
    let readyz = server.client.get(server.url("/readyz")).send().await.unwrap();
    let (status, headers, body) = problem(readyz).await;
    assert_eq!((status, body["code"].as_str()), (503, Some("not_ready")));
    assert!(headers.contains_key("retry-after"));
    assert_eq!(server.client.get(server.url("/healthz")).send().await.unwrap().status(), 200);
    server.shutdown().await;
}

async fn security_headers_on_every_response(backend: Backend) {
    let Some(server) = TestServer::spawn(backend).await else {
        return;
    };
    let responses = vec![
        server.request(Method::GET, "/v1/merchant").send().await.unwrap(),
        server.client.get(server.url("/v1/merchant")).send().await.unwrap(),
        server.client.get(server.url("/nope")).send().await.unwrap(),
        server.client.get(server.url("/healthz")).send().await.unwrap(),
        server
            .request(Method::POST, "/v1/api-keys")
            .body("{")
            .header("content-type", "application/json")
            .send()
            .await
            .unwrap(),
    ];
    for response in responses {
        let h = response.headers();
        let status = response.status();
        let hsts = h.get("strict-transport-security").and_then(|v| v.to_str().ok()).unwrap_or_default();
        let max_age: u64 =
            hsts.split(';').find_map(|p| p.trim().strip_prefix("max-age=")).and_then(|v| v.parse().ok()).unwrap_or(0);
        assert!(max_age >= 31_536_000, "{status}: HSTS max-age {max_age}");
        assert_eq!(h.get("x-content-type-options").unwrap(), "nosniff", "{status}");
        let csp = h.get("content-security-policy").unwrap().to_str().unwrap();
        assert!(csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"), "{csp}");
        assert!(h.contains_key("referrer-policy"), "{status}");
        assert_eq!(h.get("cache-control").unwrap(), "no-store", "{status}");
        assert!(h.contains_key("x-request-id"), "{status}");
    }
    server.shutdown().await;
}

async fn request_ids(backend: Backend) {
    let Some(server) = TestServer::spawn(backend).await else {
        return;
    };
    let given = server.client.get(server.url("/nope")).header("x-request-id", "shop-trace-42").send().await.unwrap();
    assert_eq!(given.headers().get("x-request-id").unwrap(), "shop-trace-42");
    let (_, _, body) = problem(given).await;
    assert_eq!(body["request_id"], "shop-trace-42");
    let bad = server
        .client
        .get(server.url("/healthz"))
        .header("x-request-id", "has spaces and {braces}")
        .send()
        .await
        .unwrap();
    let id = bad.headers().get("x-request-id").unwrap().to_str().unwrap().to_owned();
    assert!(id.starts_with("req_") && id.len() == 36, "malformed ids are replaced: {id}");
    let fresh = server.client.get(server.url("/healthz")).send().await.unwrap();
    assert_ne!(fresh.headers().get("x-request-id").unwrap().to_str().unwrap(), id, "ids are unique");
    server.shutdown().await;
}

async fn error_shapes(backend: Backend) {
    let Some(server) = TestServer::spawn(backend).await else {
        return;
    };
    // Unknown route → 404.
    let (status, _, body) = problem(server.request(Method::GET, "/v1/no-such-thing").send().await.unwrap()).await;
    assert_eq!((status, body["code"].as_str()), (404, Some("not_found")));
    // Wrong method → 405 with Allow.
    let (status, headers, body) = problem(server.request(Method::PUT, "/v1/api-keys").send().await.unwrap()).await;
    assert_eq!((status, body["code"].as_str()), (405, Some("method_not_allowed")));
    let allow = headers.get("allow").unwrap().to_str().unwrap();
    assert!(allow.contains("GET") && allow.contains("POST"), "{allow}");
    // Wrong content type → 415.
    let response = server
        .request(Method::POST, "/v1/api-keys")
        .header("content-type", "text/plain")
        .body("name=x")
        .send()
        .await
        .unwrap();
    let (status, _, body) = problem(response).await;
    assert_eq!((status, body["code"].as_str()), (415, Some("unsupported_media_type")));
    // Malformed JSON → 400.
    let response = server
        .request(Method::POST, "/v1/api-keys")
        .header("content-type", "application/json")
        .body("{\"name\": ")
        .send()
        .await
        .unwrap();
    let (status, _, body) = problem(response).await;
    assert_eq!((status, body["code"].as_str()), (400, Some("malformed_json")));
    // Well-formed JSON of the wrong shape → 422 naming the field.
    let response = server
        .request(Method::POST, "/v1/api-keys")
        .json(&json!({"name": "x", "scopes": "admin:metrics"}))
        .send()
        .await
        .unwrap();
    let (status, _, body) = problem(response).await;
    assert_eq!((status, body["code"].as_str()), (422, Some("validation_failed")));
    assert_eq!(body["errors"][0]["pointer"], "/scopes");
    // A malformed id names nothing → 404 like any unknown key.
    let (status, _, _) = problem(server.request(Method::GET, "/v1/api-keys/not-an-id").send().await.unwrap()).await;
    assert_eq!(status, 404);
    // Bad query parameters → 422 naming the parameter.
    let (status, _, body) = problem(server.request(Method::GET, "/v1/api-keys?limit=lots").send().await.unwrap()).await;
    assert_eq!((status, body["errors"][0]["pointer"].as_str()), (422, Some("/limit")));
    let (status, _, body) = problem(server.request(Method::GET, "/v1/api-keys?limit=0").send().await.unwrap()).await;
    assert_eq!((status, body["errors"][0]["pointer"].as_str()), (422, Some("/limit")));
    // Every code has a title of its own ("Internal error" is internal_error's alone).
    let response = server
        .request(Method::POST, "/v1/identity/verify-email")
        .json(&json!({"token": "evt_x"}))
        .send()
        .await
        .unwrap();
    let (status, _, body) = problem(response).await;
    assert_eq!((status, body["code"].as_str()), (422, Some("invalid_link")));
    assert_eq!(body["title"], "The link is not valid: unknown, used or expired");
    let response = server
        .request(Method::POST, "/v1/api-keys")
        .header("idempotency-key", "")
        .json(&json!({"name": "x", "scopes": ["admin:metrics"]}))
        .send()
        .await
        .unwrap();
    let (status, _, body) = problem(response).await;
    assert_eq!((status, body["code"].as_str()), (422, Some("invalid_idempotency_key")));
    assert_ne!(body["title"], "Internal error");
    server.shutdown().await;
}

async fn unauthenticated_answers_are_identical(backend: Backend) {
    let Some(server) = TestServer::spawn(backend).await else {
        return;
    };
    let (revoked_id, revoked) = server.create_key("to revoke", &["admin:metrics"]).await;
    assert_eq!(
        server.request(Method::DELETE, &format!("/v1/api-keys/{revoked_id}")).send().await.unwrap().status(),
        200
    );
    let expiring = server
        .request(Method::POST, "/v1/api-keys")
        .json(&json!({"name": "short-lived", "scopes": ["admin:metrics"],
                      "expires_at": strongroom_types::Timestamp::from_unix_millis(
                          strongroom_types::Clock::now(server.clock.as_ref()).unix_millis() + 60_000).to_rfc3339()}))
        .send()
        .await
        .unwrap();
    assert_eq!(expiring.status(), 201);
    let expired: String = expiring.json::<Value>().await.unwrap()["secret"].as_str().unwrap().to_owned();
    server.clock.advance(std::time::Duration::from_secs(61));
    let real = server.bootstrap_key.clone();
    let unknown = format!("{}{}", &real[..real.len() - 4], "aaaa");
    let mut bodies = Vec::new();
    for key in [None, Some("garbage".to_owned()), Some(unknown), Some(revoked), Some(expired)] {
        let mut request = server.client.get(server.url("/v1/merchant"));
        if let Some(key) = &key {
            request = request.bearer_auth(key);
        }
        let (status, headers, mut body) = problem(request.send().await.unwrap()).await;
        assert_eq!(status, 401, "{key:?}");
        assert!(headers.get("www-authenticate").unwrap().to_str().unwrap().starts_with("Bearer"), "{key:?}");
        body.as_object_mut().unwrap().remove("request_id");
        bodies.push(body);
    }
    assert!(bodies.windows(2).all(|w| w[0] == w[1]), "401 bodies differ: {bodies:?}");
    // A key in the query string is never looked at.
    let response = server.client.get(server.url(&format!("/v1/merchant?api_key={real}"))).send().await.unwrap();
    assert_eq!(response.status(), 401);
    server.shutdown().await;
}

async fn api_key_lifecycle(backend: Backend) {
    let Some(server) = TestServer::spawn(backend).await else {
        return;
    };
    let response = server
        .request(Method::POST, "/v1/api-keys")
        .json(&json!({"name": "storefront", "scopes": ["vault:read"], "mode": "test"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let created: Value = response.json().await.unwrap();
    let secret = created["secret"].as_str().unwrap();
    let id = created["id"].as_str().unwrap();
    assert!(secret.starts_with("sr_test_"), "{secret}");
    assert!(secret.contains(id.trim_start_matches("key_")), "the public id part names the key");
    assert!(secret.len() >= 8 + 26 + 1 + 52, "≥ 256 bits of secret");
    assert_eq!(created["status"], "active");
    assert_eq!(created["scopes"], json!(["vault:read"]));
    assert_eq!(created["last_used_at"], Value::Null);

    // The new key works and is bound to the same merchant.
    let merchant: Value =
        server.request_as(secret, Method::GET, "/v1/merchant").send().await.unwrap().json().await.unwrap();
    assert_eq!(merchant["id"], server.merchant_id.as_str());
    assert_eq!(merchant["mode"], "test");

    // Reading it shows the use, never the secret.
    let fetched: Value = server.get_json(&format!("/v1/api-keys/{id}")).await;
    assert!(fetched["last_used_at"].is_string(), "{fetched}");
    assert!(fetched.get("secret").is_none());
    assert!(!fetched.to_string().contains(&secret[20..]));

    // Revocation is immediate on this node, and idempotent.
    let revoked = server.request(Method::DELETE, &format!("/v1/api-keys/{id}")).send().await.unwrap();
    assert_eq!(revoked.status(), 200);
    let revoked: Value = revoked.json().await.unwrap();
    assert_eq!(revoked["status"], "revoked");
    assert_eq!(server.request_as(secret, Method::GET, "/v1/merchant").send().await.unwrap().status(), 401);
    let again: Value =
        server.request(Method::DELETE, &format!("/v1/api-keys/{id}")).send().await.unwrap().json().await.unwrap();
    assert_eq!(again["revoked_at"], revoked["revoked_at"]);

    // Unknown ids → 404.
    let missing = "key_aaaaaaaaaaaaaaaaaaaaaaaaaa";
    assert_eq!(server.request(Method::GET, &format!("/v1/api-keys/{missing}")).send().await.unwrap().status(), 404);
    assert_eq!(server.request(Method::DELETE, &format!("/v1/api-keys/{missing}")).send().await.unwrap().status(), 404);
    server.shutdown().await;
}

async fn expiry_follows_the_clock(backend: Backend) {
    let Some(server) = TestServer::spawn(backend).await else {
        return;
    };
    let now = strongroom_types::Clock::now(server.clock.as_ref()).unix_millis();
    let at = |ms| strongroom_types::Timestamp::from_unix_millis(ms).to_rfc3339();
    let past = server
        .request(Method::POST, "/v1/api-keys")
        .json(&json!({"name": "past", "scopes": ["admin:metrics"], "expires_at": at(now - 1000)}))
        .send()
        .await
        .unwrap();
    let (status, _, body) = problem(past).await;
    assert_eq!((status, body["errors"][0]["pointer"].as_str()), (422, Some("/expires_at")));
    let created: Value = server
        .request(Method::POST, "/v1/api-keys")
        .json(&json!({"name": "hour", "scopes": ["admin:metrics"], "expires_at": at(now + 3_600_000)}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let secret = created["secret"].as_str().unwrap();
    server.clock.advance(std::time::Duration::from_secs(3599));
    assert_eq!(server.request_as(secret, Method::GET, "/v1/merchant").send().await.unwrap().status(), 200);
    server.clock.advance(std::time::Duration::from_secs(2));
    assert_eq!(server.request_as(secret, Method::GET, "/v1/merchant").send().await.unwrap().status(), 401);
    let shown: Value = server.get_json(&format!("/v1/api-keys/{}", created["id"].as_str().unwrap())).await;
    assert_eq!(shown["status"], "expired");
    server.shutdown().await;
}

async fn scopes_are_enforced(backend: Backend) {
    let Some(server) = TestServer::spawn(backend).await else {
        return;
    };
    let (_, metrics_only) = server.create_key("metrics", &["admin:metrics"]).await;
    let (_, keys_only) = server.create_key("keys", &["admin:api_keys"]).await;
    let (status, headers, body) =
        problem(server.request_as(&metrics_only, Method::GET, "/v1/api-keys").send().await.unwrap()).await;
    assert_eq!((status, body["code"].as_str()), (403, Some("insufficient_scope")));
    assert!(headers.get("www-authenticate").unwrap().to_str().unwrap().contains("scope=\"admin:api_keys\""));
    assert_eq!(server.request_as(&keys_only, Method::GET, "/metrics").send().await.unwrap().status(), 403);
    assert_eq!(server.request_as(&metrics_only, Method::GET, "/metrics").send().await.unwrap().status(), 200);
    // Any valid key reads its merchant.
    assert_eq!(server.request_as(&metrics_only, Method::GET, "/v1/merchant").send().await.unwrap().status(), 200);
    // A key cannot grant what it does not hold.
    let escalate = server
        .request_as(&keys_only, Method::POST, "/v1/api-keys")
        .json(&json!({"name": "escalate", "scopes": ["admin:api_keys", "admin:metrics"]}))
        .send()
        .await
        .unwrap();
    let (status, _, body) = problem(escalate).await;
    assert_eq!((status, body["code"].as_str()), (403, Some("forbidden")));
    let same = server
        .request_as(&keys_only, Method::POST, "/v1/api-keys")
        .json(&json!({"name": "same", "scopes": ["admin:api_keys"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(same.status(), 201);
    // A test key creates test keys only.
    let test_admin = server
        .request(Method::POST, "/v1/api-keys")
        .json(&json!({"name": "sandbox admin", "scopes": ["admin:api_keys"], "mode": "test"}))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap()["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    let live_from_test = server
        .request_as(&test_admin, Method::POST, "/v1/api-keys")
        .json(&json!({"name": "escape", "scopes": ["admin:api_keys"], "mode": "live"}))
        .send()
        .await
        .unwrap();
    let (status, _, body) = problem(live_from_test).await;
    assert_eq!((status, body["code"].as_str()), (403, Some("forbidden")));
    let child: Value =
        server.post_json_as(&test_admin, "/v1/api-keys", &json!({"name": "child", "scopes": ["admin:api_keys"]})).await;
    assert_eq!(child["mode"], "test", "a test key's keys default to test");
    // A key made by an expiring key expires with it at the latest.
    let now = strongroom_types::Clock::now(server.clock.as_ref()).unix_millis();
    let at = |ms| strongroom_types::Timestamp::from_unix_millis(ms).to_rfc3339();
    let expiring: Value = server
        .request(Method::POST, "/v1/api-keys")
        .json(&json!({"name": "temp admin", "scopes": ["admin:api_keys"], "expires_at": at(now + 60_000)}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let temp = expiring["secret"].as_str().unwrap();
    let longer = server
        .request_as(temp, Method::POST, "/v1/api-keys")
        .json(&json!({"name": "longer", "scopes": ["admin:api_keys"], "expires_at": at(now + 120_000)}))
        .send()
        .await
        .unwrap();
    let (status, _, body) = problem(longer).await;
    assert_eq!((status, body["errors"][0]["pointer"].as_str()), (422, Some("/expires_at")));
    let inherited: Value =
        server.post_json_as(temp, "/v1/api-keys", &json!({"name": "inherits", "scopes": ["admin:api_keys"]})).await;
    assert_eq!(inherited["expires_at"], expiring["expires_at"], "no expiry given: the creator's applies");
    // Mass assignment: a merchant or status in the body is refused, not applied.
    let sneaky = server
        .request(Method::POST, "/v1/api-keys")
        .json(&json!({"name": "x", "scopes": ["admin:metrics"], "merchant_id": "mer_aaaaaaaaaaaaaaaaaaaaaaaaaa"}))
        .send()
        .await
        .unwrap();
    let (status, _, body) = problem(sneaky).await;
    assert_eq!((status, body["errors"][0]["pointer"].as_str()), (422, Some("/merchant_id")));
    server.shutdown().await;
}

async fn listing_pages(backend: Backend) {
    let Some(server) = TestServer::spawn(backend).await else {
        return;
    };
    for i in 0..4 {
        server.clock.advance(std::time::Duration::from_millis(5));
        server.create_key(&format!("k{i}"), &["admin:metrics"]).await;
    }
    let page: Value = server.get_json("/v1/api-keys?limit=2").await;
    let names: Vec<&str> = page["data"].as_array().unwrap().iter().map(|k| k["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["k3", "k2"]);
    assert_eq!(page["has_more"], true);
    let last = page["data"][1]["id"].as_str().unwrap();
    let page: Value = server.get_json(&format!("/v1/api-keys?limit=10&starting_after={last}")).await;
    let names: Vec<&str> = page["data"].as_array().unwrap().iter().map(|k| k["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["k1", "k0", "bootstrap"]);
    assert_eq!(page["has_more"], false);
    let (status, _, body) = problem(
        server.request(Method::GET, "/v1/api-keys?starting_after=key_aaaaaaaaaaaaaaaaaaaaaaaaaa").send().await.unwrap(),
    )
    .await;
    assert_eq!((status, body["errors"][0]["pointer"].as_str()), (422, Some("/starting_after")));
    server.shutdown().await;
}

async fn metrics_use_route_templates(backend: Backend) {
    let Some(server) = TestServer::spawn(backend).await else {
        return;
    };
    let (id, _) = server.create_key("m", &["admin:metrics"]).await;
    server.request(Method::GET, &format!("/v1/api-keys/{id}")).send().await.unwrap();
    server.request(Method::GET, "/v1/some/random/path/4111111111111111").send().await.unwrap();
    let text = server.request(Method::GET, "/metrics").send().await.unwrap().text().await.unwrap();
    assert!(text.contains("strongroom_http_requests_total"), "{text}");
    assert!(text.contains("route=\"/v1/api-keys/{id}\""), "{text}");
    assert!(text.contains("strongroom_http_request_duration_seconds_bucket"), "{text}");
    assert!(!text.contains(&id), "raw ids never become labels");
    assert!(!text.contains("4111111111111111"), "raw paths never become labels");
    server.shutdown().await;
}

async fn openapi_covers_every_route(backend: Backend) {
    let Some(server) = TestServer::spawn(backend).await else {
        return;
    };
    let doc: Value = server.client.get(server.url("/openapi.json")).send().await.unwrap().json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"), "{}", doc["openapi"]);
    let routes = [
        ("/healthz", "get"),
        ("/readyz", "get"),
        ("/metrics", "get"),
        ("/v1/merchant", "get"),
        ("/v1/api-keys", "get"),
        ("/v1/api-keys", "post"),
        ("/v1/api-keys/{id}", "get"),
        ("/v1/api-keys/{id}", "delete"),
        ("/v1/audit/checkpoint", "get"),
        ("/v1/audit/entries", "get"),
        ("/v1/audit/proofs/inclusion", "get"),
        ("/v1/audit/proofs/consistency", "get"),
        ("/v1/tokens", "post"),
        ("/v1/tokens/batch", "post"),
        ("/v1/tokens/search", "post"),
        ("/v1/tokens/{id}", "get"),
        ("/v1/tokens/{id}", "delete"),
        ("/v1/tokens/{id}/reveal", "post"),
        ("/v1/forward", "post"),
        ("/v1/customers/{id}/data", "delete"),
        ("/oauth/token", "post"),
        ("/.well-known/jwks.json", "get"),
        ("/v1/identity/customers", "post"),
        ("/v1/identity/customers/{id}", "get"),
        ("/v1/identity/customers/{id}/disable", "post"),
        ("/v1/identity/customers/{id}/enable", "post"),
        ("/v1/identity/login", "post"),
        ("/v1/identity/login/second-factor", "post"),
        ("/v1/identity/sessions/authenticate", "post"),
        ("/v1/identity/step-up/redeem", "post"),
        ("/v1/identity/password-strength", "post"),
        ("/v1/identity/verify-email", "post"),
        ("/v1/identity/password-reset", "post"),
        ("/v1/identity/password-reset/complete", "post"),
        ("/v1/me/anti-phishing-phrase", "put"),
        ("/v1/me", "get"),
        ("/v1/me/session", "get"),
        ("/v1/me/logout", "post"),
        ("/v1/me/sessions", "get"),
        ("/v1/me/sessions/{id}", "delete"),
        ("/v1/me/sessions/end-others", "post"),
        ("/v1/me/password", "post"),
        ("/v1/me/totp", "post"),
        ("/v1/me/totp/confirm", "post"),
        ("/v1/me/totp/remove", "post"),
        ("/v1/me/recovery-codes", "post"),
        ("/v1/me/step-up", "post"),
        ("/v1/me/step-up/{id}/verify", "post"),
        ("/v1/staff/login", "post"),
        ("/v1/staff/login/second-factor", "post"),
        ("/v1/staff/login/totp", "post"),
        ("/v1/staff/login/totp/confirm", "post"),
        ("/v1/staff/invitation/accept", "post"),
        ("/v1/staff/me", "get"),
        ("/v1/staff/me/logout", "post"),
        ("/v1/staff/me/password", "post"),
        ("/v1/staff", "get"),
        ("/v1/staff", "post"),
        ("/v1/staff/{id}", "get"),
        ("/v1/staff/{id}/disable", "post"),
        ("/v1/staff/{id}/enable", "post"),
        ("/v1/staff/{id}/unlock", "post"),
        ("/v1/staff/{id}/reset-factors", "post"),
        ("/v1/staff/{id}/roles", "post"),
        ("/v1/staff/{id}/roles/{role}", "delete"),
        ("/v1/roles", "get"),
        ("/v1/roles", "post"),
        ("/v1/roles/{name}", "delete"),
        ("/v1/approvals", "get"),
        ("/v1/approvals/{id}", "get"),
        ("/v1/approvals/{id}/approve", "post"),
        ("/v1/approvals/{id}/deny", "post"),
        ("/v1/me/email", "post"),
        ("/v1/me/passkeys", "get"),
        ("/v1/me/passkeys", "post"),
        ("/v1/me/passkeys/finish", "post"),
        ("/v1/me/passkeys/{id}", "delete"),
        ("/v1/identity/login/passkey", "post"),
        ("/v1/identity/login/passkey/finish", "post"),
        ("/v1/identity/passkey-registration/finish", "post"),
        ("/v1/staff/login/passkey", "post"),
        ("/v1/staff/login/passkey/finish", "post"),
        ("/v1/staff/login/passkey-enrolment", "post"),
        ("/v1/staff/login/passkey-enrolment/finish", "post"),
        ("/v1/staff/me/passkeys", "get"),
        ("/v1/staff/me/passkeys", "post"),
        ("/v1/staff/me/passkeys/finish", "post"),
        ("/v1/staff/me/passkeys/{id}", "delete"),
        ("/v1/webhook_endpoints", "get"),
        ("/v1/webhook_endpoints", "post"),
        ("/v1/webhook_endpoints/{id}", "get"),
        ("/v1/webhook_endpoints/{id}", "delete"),
        ("/v1/webhook_endpoints/{id}/rotate_secret", "post"),
        ("/v1/webhook_endpoints/{id}/enable", "post"),
        ("/v1/webhook_endpoints/{id}/disable", "post"),
        ("/v1/webhook_endpoints/{id}/test", "post"),
        ("/v1/webhook_endpoints/{id}/deliveries", "get"),
        ("/v1/webhook_endpoints/{id}/deliveries/{delivery}/redeliver", "post"),
        ("/v1/webhook_event_types", "get"),
        ("/v1/admin/jobs", "get"),
        ("/v1/orders", "get"),
        ("/v1/orders", "post"),
        ("/v1/orders/{id}", "get"),
        ("/v1/orders/{id}", "post"),
        ("/v1/payment_intents", "get"),
        ("/v1/payment_intents", "post"),
        ("/v1/payment_intents/{id}", "get"),
        ("/v1/payment_intents/{id}/confirm", "post"),
        ("/v1/payment_intents/{id}/capture", "post"),
        ("/v1/payment_intents/{id}/cancel", "post"),
        ("/v1/payment_intents/{id}/sandbox_challenge", "post"),
        ("/v1/refunds", "get"),
        ("/v1/refunds", "post"),
        ("/v1/refunds/{id}", "get"),
        ("/v1/me/payments", "get"),
        ("/v1/me/saved_cards", "get"),
        ("/v1/me/saved_cards/{id}", "delete"),
        ("/v1/saved_cards", "get"),
        ("/v1/security/decisions", "get"),
        ("/v1/security/decisions", "post"),
        ("/v1/security/decisions/{id}", "get"),
        ("/v1/security/decisions/{id}/lift", "post"),
        ("/v1/security/decisions/{id}/extend", "post"),
        ("/v1/security/incidents", "get"),
        ("/v1/security/incidents", "post"),
        ("/v1/security/incidents/{id}", "get"),
        ("/v1/security/incidents/{id}", "post"),
        ("/v1/security/incidents/{id}/notes", "post"),
        ("/v1/security/incidents/{id}/playbooks/{step}", "post"),
        ("/v1/saved_cards/{id}", "get"),
        ("/v1/saved_cards/{id}", "delete"),
        ("/v1/disputes", "get"),
        ("/v1/disputes/{id}", "get"),
        ("/v1/gateways/stripe/webhook", "post"),
    ];
    for (path, method) in routes {
        let operation = &doc["paths"][path][method];
        assert!(operation.is_object(), "{method} {path} missing from the OpenAPI document");
        // Every route is real: it does not answer 404/405.
        let concrete = path
            .replace("{id}", "key_aaaaaaaaaaaaaaaaaaaaaaaaaa")
            .replace("{name}", "none")
            .replace("{role}", "none")
            .replace("{delivery}", "obx_none");
        let status = server.request(method.to_uppercase().parse().unwrap(), &concrete).send().await.unwrap().status();
        assert!(status != 405 && (status != 404 || concrete != path), "{method} {path} answered {status}");
        if operation.get("security").is_some() {
            assert!(operation["responses"]["401"].is_object(), "{method} {path} documents 401");
        }
    }
    let documented: usize = doc["paths"].as_object().unwrap().values().map(|p| p.as_object().unwrap().len()).sum();
    assert_eq!(documented, routes.len(), "every documented operation is in the list above");
    // Every POST whose success shows a secret is one whose answer Idempotency-Key never keeps.
    let mut missing = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        let Some(post) = item.get("post") else { continue };
        let mut names = Vec::new();
        for (status, response) in post["responses"].as_object().unwrap() {
            if status.starts_with('2') {
                collect_properties(&doc, &response["content"]["application/json"]["schema"], &mut names, 0);
            }
        }
        let secret = names.iter().find(|n| SECRET_PROPERTIES.contains(&n.as_str()));
        if let Some(name) = secret
            && !strongroom_http::idempotency::exempt(path)
            && !strongroom_http::idempotency::SHOWS_SECRET.contains(&path.as_str())
        {
            missing.push(format!("POST {path} answers `{name}`"));
        }
    }
    assert!(missing.is_empty(), "add these to idempotency::SHOWS_SECRET: {missing:?}");
    assert!(doc["components"]["schemas"]["Problem"].is_object());
    server.shutdown().await;
}

async fn restart_keeps_state(backend: Backend) {
    let Some(mut server) = TestServer::spawn(backend).await else {
        return;
    };
    let (id, secret) = server.create_key("survivor", &["admin:metrics"]).await;
    let boot = server.restart().await;
    assert!(boot.is_none(), "a second start bootstraps nothing");
    assert_eq!(server.request_as(&secret, Method::GET, "/v1/merchant").send().await.unwrap().status(), 200);
    assert_eq!(server.request(Method::GET, &format!("/v1/api-keys/{id}")).send().await.unwrap().status(), 200);
    server.shutdown().await;
}

async fn validation_names_fields_without_echoing(backend: Backend) {
    let Some(server) = TestServer::spawn(backend).await else {
        return;
    };
    let canary = "CANARY-4111111111111111-pw";
    let cases = [
        (json!({"name": "", "scopes": ["admin:metrics"]}), "/name"),
        (json!({"name": "ok", "scopes": []}), "/scopes"),
        (json!({"name": "ok", "scopes": ["admin:metrics", canary]}), "/scopes/1"),
        (json!({"name": "ok", "scopes": ["admin:metrics"], "mode": canary}), "/mode"),
        (json!({"name": "ok", "scopes": ["admin:metrics"], "expires_at": canary}), "/expires_at"),
        (json!({"name": 42, "scopes": ["admin:metrics"]}), "/name"),
        (json!({"name": "ok"}), "/scopes"),
        (json!({"name": "ok", "scopes": ["admin:metrics"], canary: 1}), ""),
        (json!({"name": "ok", "scopes": ["admin:metrics"], "role": "owner"}), "/role"),
    ];
    for (body, pointer) in cases {
        let pointer: &str = pointer;
        let response = server.request(Method::POST, "/v1/api-keys").json(&body).send().await.unwrap();
        let (status, _, problem_body) = problem(response).await;
        assert_eq!(status, 422, "{body}");
        let pointers: Vec<&str> =
            problem_body["errors"].as_array().unwrap().iter().map(|e| e["pointer"].as_str().unwrap()).collect();
        assert!(pointers.contains(&pointer), "{body} → {problem_body}");
        let details: String =
            problem_body["errors"].as_array().unwrap().iter().map(|e| e["detail"].as_str().unwrap()).collect();
        assert!(!problem_body.to_string().contains(canary), "{problem_body}");
        assert!(!details.is_empty());
    }
    server.shutdown().await;
}

async fn body_limit(backend: Backend) {
    // A small limit so a body announced too large by Content-Length is written whole before the
    // server answers at once.
    let Some(server) = TestServer::spawn_with(backend, |c| c.server.body_limit_bytes = 1024).await else {
        return;
    };
    let huge = format!("{{\"name\": \"{}\", \"scopes\": []}}", "x".repeat(2000));
    let response = server
        .request(Method::POST, "/v1/api-keys")
        .header("content-type", "application/json")
        .body(huge.clone())
        .send()
        .await
        .unwrap();
    let (status, _, body) = problem(response).await;
    assert_eq!((status, body["code"].as_str()), (413, Some("payload_too_large")), "announced by Content-Length");
    // Streamed slowly, so the client is still writing when the server has seen enough: the server
    // must read on (bounded) before answering, or the client gets a reset instead of the 413.
    let chunks: Vec<Vec<u8>> = huge.into_bytes().chunks(300).map(<[u8]>::to_vec).collect();
    let slow = futures::StreamExt::then(futures::stream::iter(chunks), |chunk| async move {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        Ok::<_, std::io::Error>(chunk)
    });
    let streamed = reqwest::Body::wrap_stream(slow);
    let response = server
        .request(Method::POST, "/v1/api-keys")
        .header("content-type", "application/json")
        .body(streamed)
        .send()
        .await
        .unwrap();
    let (status, _, body) = problem(response).await;
    assert_eq!((status, body["code"].as_str()), (413, Some("payload_too_large")), "streamed without a length");
    let fits = format!("{{\"name\": \"{}\", \"scopes\": [\"admin:metrics\"]}}", "x".repeat(50));
    let response = server
        .request(Method::POST, "/v1/api-keys")
        .header("content-type", "application/json")
        .body(fits)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    server.shutdown().await;
}

/// Property names of answers that carry a secret shown once.
const SECRET_PROPERTIES: &[&str] =
    &["secret", "session", "proof", "recovery_codes", "otpauth_uri", "value", "access_token"];

/// Every property name in a schema, following `$ref`s into the components.
fn collect_properties(doc: &Value, schema: &Value, names: &mut Vec<String>, depth: u32) {
    if depth > 8 || schema.is_null() {
        return;
    }
    if let Some(reference) = schema["$ref"].as_str() {
        let name = reference.trim_start_matches("#/components/schemas/");
        collect_properties(doc, &doc["components"]["schemas"][name], names, depth + 1);
        return;
    }
    if let Some(properties) = schema["properties"].as_object() {
        for (name, inner) in properties {
            names.push(name.clone());
            collect_properties(doc, inner, names, depth + 1);
        }
    }
    for combinator in ["allOf", "oneOf", "anyOf"] {
        if let Some(parts) = schema[combinator].as_array() {
            for part in parts {
                collect_properties(doc, part, names, depth + 1);
            }
        }
    }
    collect_properties(doc, &schema["items"], names, depth + 1);
}
