//! Black-box tests of the detokenize-and-forward proxy (`POST /v1/forward`) on SQLite and
//! PostgreSQL, against a local HTTPS gateway that records what it receives (rustls, a test CA
//! trusted through `outbound.ca_file`): values arrive exactly (JSON and form escaping, a name with
//! quotes and `&`), answers come back with card numbers masked and unsafe headers dropped, the
//! allow-list refuses other hosts, `http://` and IP literals, redirects are not followed, loopback
//! is refused under the default address policy, a CVC serves one forward, tokens of another mode
//! answer 404, failures are 502/504 and a retried forward under one `Idempotency-Key` reaches the
//! gateway once, and every forward is in the audit log with its destination and tokens.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code fails loudly")]

use reqwest::Method;
use serde_json::{Value, json};
use strongroom_testkit::gateway::TestGateway;
use strongroom_testkit::{Backend, TestServer, captured_logs, on_both_backends};

on_both_backends!(
    values_arrive_exactly_and_answers_come_back_masked,
    the_allow_list_refuses_other_hosts_plain_http_and_ip_literals,
    redirects_are_not_followed,
    loopback_is_refused_under_the_default_policy,
    only_the_callers_card_tokens_are_filled_in,
    gateway_failures_are_502_or_504_and_retries_reach_the_gateway_once,
);

const VISA: &str = "4242424242424242";
const NAME: &str = r#"Jane "Q" O'Neil & Sons"#;
const GATEWAY_KEY: &str = "Bearer sk_test_gatewaysecret7f3a";

/// A server whose allow-list holds the gateway (and `extra` entries), trusting its CA.
async fn spawn(backend: Backend, gateway: &TestGateway, loopback: bool, extra: &[String]) -> Option<TestServer> {
    let ca = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(ca.path(), &gateway.ca_pem).unwrap();
    let (_, ca_path) = ca.keep().unwrap();
    let mut hosts = vec![format!("localhost:{}", gateway.port)];
    hosts.extend(extra.iter().cloned());
    TestServer::spawn_with(backend, move |config| {
        config.outbound.ca_file = Some(ca_path);
        config.outbound.allow_loopback = loopback;
        config.forward.allowed_hosts = hosts;
        config.forward.timeout = std::time::Duration::from_secs(2);
        config.forward.max_response_bytes = 16 * 1024;
    })
    .await
}

async fn send(server: &TestServer, key: &str, body: &Value, idempotency: Option<&str>) -> (u16, Value, bool) {
    let mut request = server.request_as(key, Method::POST, "/v1/forward").json(body);
    if let Some(idempotency) = idempotency {
        request = request.header("idempotency-key", idempotency);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let replayed = response.headers().get("idempotent-replayed").is_some();
    let text = response.text().await.unwrap();
    assert!(!text.contains(VISA), "an answer shows the card number: {text}");
    assert!(!text.contains("gatewaysecret7f3a"), "an answer shows the gateway's key: {text}");
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)), replayed)
}

async fn card(server: &TestServer, key: &str, cvc: bool) -> String {
    let mut value = json!({"number": VISA, "exp_month": 3, "exp_year": 2031, "holder_name": NAME});
    if cvc {
        value["cvc"] = json!("737");
    }
    let token = server.post_json_as(key, "/v1/tokens", &json!({"type": "card", "value": value})).await;
    token["id"].as_str().unwrap().to_owned()
}

fn charge(gateway: &TestGateway, path: &str, token: &str) -> Value {
    json!({
        "destination": gateway.url(path),
        "headers": {"Authorization": GATEWAY_KEY, "Content-Type": "application/json", "Idempotency-Key": "gw-1"},
        "body": format!(
            r#"{{"amount":4242,"card":{{"number":"{{{{{token}:number}}}}","exp_month":"{{{{{token}:exp_month}}}}","exp_year":{{{{{token}:exp_year}}}},"cvc":"{{{{{token}:cvc}}}}","name":"{{{{{token}:name}}}}"}}}}"#
        ),
    })
}

async fn audit_entries(server: &TestServer) -> Vec<Value> {
    let mut all = Vec::new();
    loop {
        let page = server.get_json(&format!("/v1/audit/entries?start={}&limit=1000", all.len())).await;
        let data = page["data"].as_array().unwrap().clone();
        if data.is_empty() {
            return all;
        }
        all.extend(data);
    }
}

fn problem(status: u16, answer: &Value, expected_status: u16, code: &str, pointer: Option<&str>) {
    assert_eq!(status, expected_status, "{answer}");
    assert_eq!(answer["code"], code, "{answer}");
    if let Some(pointer) = pointer {
        assert_eq!(answer["errors"][0]["pointer"], pointer, "{answer}");
    }
}

async fn values_arrive_exactly_and_answers_come_back_masked(backend: Backend) {
    let gateway = TestGateway::start().await;
    let Some(server) = spawn(backend, &gateway, true, &[]).await else { return };
    let (_, key) = server.create_key("shop", &["vault:write", "vault:read", "vault:forward"]).await;
    let token = card(&server, &key, true).await;

    let (status, answer, _) = send(&server, &key, &charge(&gateway, "/v1/charges?capture=true", &token), None).await;
    assert_eq!(status, 200, "{answer}");
    let received = gateway.requests();
    assert_eq!(received.len(), 1);
    let request = &received[0];
    assert_eq!(request.method, "POST");
    assert_eq!(request.target, "/v1/charges?capture=true");
    assert_eq!(request.header("authorization"), Some(GATEWAY_KEY));
    assert_eq!(request.header("idempotency-key"), Some("gw-1"));
    let sent: Value = serde_json::from_slice(&request.body).unwrap();
    assert_eq!(
        sent,
        json!({"amount": 4242, "card": {"number": VISA, "exp_month": "03", "exp_year": 2031, "cvc": "737", "name": NAME}})
    );

    // The gateway echoed the number (plain and spaced): both come back masked.
    assert_eq!(answer["object"], "forward_response");
    assert_eq!(answer["status"], 201);
    let body: Value = serde_json::from_str(answer["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["id"], "ch_test_1");
    assert_eq!(body["amount"], 4242);
    assert_eq!(body["payment_method_details"]["card"]["number"], "424242******4242");
    assert_eq!(body["payment_method_details"]["card"]["display"], "424242******4242");
    assert_eq!(answer["headers"], json!({"content-type": "application/json", "x-request-id": "req_gateway_1"}));
    assert!(answer["duration_ms"].as_u64().is_some());

    // The CVC served that forward and is gone.
    let view = server.request_as(&key, Method::GET, &format!("/v1/tokens/{token}")).send().await.unwrap();
    let view: Value = view.json().await.unwrap();
    assert_eq!(view["display"]["cvc_held"], false, "{view}");
    let (status, answer, _) = send(&server, &key, &charge(&gateway, "/v1/charges", &token), None).await;
    problem(status, &answer, 422, "forward_cvc_unavailable", Some("/body"));
    assert_eq!(gateway.requests().len(), 1, "nothing was sent without the CVC");

    // A form body: the name is percent-encoded, so its `&` and quotes stay inside its field.
    let form = json!({
        "destination": gateway.url("/v1/form"),
        "method": "post",
        "headers": {"content-type": "application/x-www-form-urlencoded", "authorization": GATEWAY_KEY},
        "body": format!("card[number]={{{{{token}:number}}}}&card[name]={{{{{token}:holder_name}}}}&amount=4242"),
    });
    let (status, answer, _) = send(&server, &key, &form, None).await;
    assert_eq!(status, 200, "{answer}");
    let received = gateway.requests();
    let text = String::from_utf8(received[1].body.clone()).unwrap();
    assert_eq!(
        text,
        format!("card[number]={VISA}&card[name]=Jane%20%22Q%22%20O%27Neil%20%26%20Sons&amount=4242"),
        "the name's & did not start a field of its own"
    );

    // Audited: the destination (host and path, no query) and the tokens with the fields used;
    // never a value or the gateway's key.
    let entries = audit_entries(&server).await;
    let sent: Vec<&Value> = entries.iter().filter(|e| e["entry"]["action"] == "forward.sent").collect();
    assert_eq!(sent.len(), 2, "the forward refused for its CVC sent nothing: {sent:?}");
    let first = sent[0]["entry"].clone();
    assert_eq!(first["object"], json!({"kind": "destination", "id": format!("localhost:{}/v1/charges", gateway.port)}));
    assert_eq!(first["outcome"]["result"], "success");
    let reason = first["outcome"]["reason"].as_str().unwrap();
    assert!(reason.starts_with("POST;status:201;ms:"), "{reason}");
    assert!(reason.ends_with(";tokens:1;fields:number+exp_month+exp_year+cvc+name"), "{reason}");
    let detokenized: Vec<&Value> =
        entries.iter().filter(|e| e["entry"]["action"] == "forward.token_detokenized").collect();
    assert_eq!(detokenized.len(), 2);
    assert_eq!(detokenized[0]["entry"]["object"], json!({"kind": "token", "id": token}));
    assert_eq!(
        detokenized[0]["entry"]["outcome"]["reason"],
        format!("fields:number+exp_month+exp_year+cvc+name;host:localhost:{}", gateway.port)
    );
    assert_eq!(detokenized[0]["entry"]["source"]["request_id"], first["source"]["request_id"]);
    let all = serde_json::to_string(&entries).unwrap();
    for secret in [VISA, "gatewaysecret7f3a", "capture=true", "O'Neil"] {
        assert!(!all.contains(secret), "the audit log holds {secret}");
    }

    // A metric per destination host.
    let metrics = server.request(Method::GET, "/metrics").send().await.unwrap().text().await.unwrap();
    let line =
        format!("strongroom_forwards_total{{destination=\"localhost:{}\",outcome=\"answered\"}} 2", gateway.port);
    assert!(metrics.contains(&line), "{metrics}");

    let logs = captured_logs();
    assert!(logs.contains("/v1/forward"), "the forwards were logged");
    assert!(!logs.contains(VISA) && !logs.contains("gatewaysecret7f3a"));
    server.shutdown().await;
}

async fn the_allow_list_refuses_other_hosts_plain_http_and_ip_literals(backend: Backend) {
    let gateway = TestGateway::start().await;
    let Some(server) = spawn(backend, &gateway, true, &["gateway.example".to_owned()]).await else { return };
    let (_, key) = server.create_key("shop", &["vault:write", "vault:forward"]).await;
    let token = card(&server, &key, false).await;
    let port = gateway.port;
    for destination in [
        "https://other.example/v1/charges?secret=q7f3a".to_owned(),
        format!("https://gateway.example:{port}/v1/charges?secret=q7f3a"),
        format!("https://localhost:{}/v1/charges?secret=q7f3a", port.wrapping_add(1)),
        format!("http://localhost:{port}/v1/charges?secret=q7f3a"),
        format!("https://127.0.0.1:{port}/v1/charges?secret=q7f3a"),
        format!("https://[::1]:{port}/v1/charges?secret=q7f3a"),
        format!("https://user:pw@localhost:{port}/v1/charges?secret=q7f3a"),
        "file:///etc/passwd?secret=q7f3a".to_owned(),
        format!("localhost:{port}/v1/charges?secret=q7f3a"),
    ] {
        let body = json!({
            "destination": destination,
            "headers": {"content-type": "application/json"},
            "body": format!(r#"{{"n":"{{{{{token}:number}}}}"}}"#),
        });
        let (status, answer, _) = send(&server, &key, &body, None).await;
        problem(status, &answer, 422, "forward_destination_not_allowed", Some("/destination"));
        assert!(!answer.to_string().contains("q7f3a") && !answer.to_string().contains("charges"), "{answer}");
    }
    assert!(gateway.requests().is_empty(), "nothing reached the gateway");
    let entries = audit_entries(&server).await;
    let refused = entries
        .iter()
        .filter(|e| e["entry"]["action"] == "forward.sent" && e["entry"]["outcome"]["result"] == "denied")
        .count();
    assert_eq!(refused, 9, "every refusal is audited");
    assert!(!entries.iter().any(|e| e["entry"]["action"] == "forward.token_detokenized"));

    // The allow-list is empty by default: every forward is refused.
    let Some(bare) = TestServer::spawn(backend).await else { return };
    let (_, key) = bare.create_key("shop", &["vault:forward"]).await;
    let body = json!({"destination": "https://api.stripe.com/v1/charges", "body": "amount=1"});
    let (status, answer, _) = send(&bare, &key, &body, None).await;
    problem(status, &answer, 422, "forward_destination_not_allowed", Some("/destination"));
    bare.shutdown().await;
    server.shutdown().await;
}

async fn redirects_are_not_followed(backend: Backend) {
    let gateway = TestGateway::start().await;
    let Some(server) = spawn(backend, &gateway, true, &[]).await else { return };
    let (_, key) = server.create_key("shop", &["vault:write", "vault:forward"]).await;
    let token = card(&server, &key, false).await;
    let body = json!({
        "destination": gateway.url("/redirect"),
        "headers": {"content-type": "application/json"},
        "body": format!(r#"{{"n":"{{{{{token}:number}}}}"}}"#),
    });
    let (status, answer, _) = send(&server, &key, &body, None).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["status"], 302);
    assert_eq!(answer["headers"]["location"], gateway.url("/v1/charges"));
    let received = gateway.requests();
    assert_eq!(received.len(), 1, "the redirect was not followed");
    assert_eq!(received[0].target, "/redirect");
    server.shutdown().await;
}

async fn loopback_is_refused_under_the_default_policy(backend: Backend) {
    let gateway = TestGateway::start().await;
    // On the allow-list, but loopback (like every private range) is refused by default.
    let Some(server) = spawn(backend, &gateway, false, &["gw.localhost".to_owned()]).await else { return };
    let (_, key) = server.create_key("shop", &["vault:write", "vault:forward"]).await;
    let token = card(&server, &key, false).await;
    for destination in [gateway.url("/v1/charges"), "https://gw.localhost/v1/charges".to_owned()] {
        let body = json!({
            "destination": destination,
            "headers": {"content-type": "application/json"},
            "body": format!(r#"{{"n":"{{{{{token}:number}}}}"}}"#),
        });
        let (status, answer, _) = send(&server, &key, &body, None).await;
        problem(status, &answer, 422, "forward_destination_not_allowed", Some("/destination"));
        assert!(answer["errors"][0]["detail"].as_str().unwrap().contains("loopback"), "{answer}");
    }
    assert!(gateway.requests().is_empty(), "no request reached a refused address");
    server.shutdown().await;
}

async fn only_the_callers_card_tokens_are_filled_in(backend: Backend) {
    let gateway = TestGateway::start().await;
    let Some(server) = spawn(backend, &gateway, true, &[]).await else { return };
    let (_, live) = server.create_key("live", &["vault:write", "vault:forward"]).await;
    let test_body = json!({"name": "ci", "scopes": ["vault:write", "vault:forward"], "mode": "test"});
    let test = server.post_json_as(&server.bootstrap_key, "/v1/api-keys", &test_body).await["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    let (_, no_scope) = server.create_key("no-forward", &["vault:write", "vault:read"]).await;
    let live_card = card(&server, &live, false).await;
    let test_card = card(&server, &test, false).await;
    let email = server
        .post_json_as(&live, "/v1/tokens", &json!({"type": "email", "value": "jane.canary@example.com"}))
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let with = |template: String, content_type: &str| {
        json!({
            "destination": gateway.url("/v1/charges"),
            "headers": {"content-type": content_type, "authorization": GATEWAY_KEY},
            "body": template,
        })
    };
    let number = |token: &str| format!(r#"{{"n":"{{{{{token}:number}}}}"}}"#);

    // Another mode's token is a missing one, both ways.
    let (status, answer, _) = send(&server, &live, &with(number(&test_card), "application/json"), None).await;
    problem(status, &answer, 404, "not_found", None);
    let (status, answer, _) = send(&server, &test, &with(number(&live_card), "application/json"), None).await;
    problem(status, &answer, 404, "not_found", None);
    let (status, answer, _) =
        send(&server, &live, &with(number("tok_aaaaaaaaaaaaaaaaaaaaaaaaaa"), "application/json"), None).await;
    problem(status, &answer, 404, "not_found", None);
    // A test key forwards its own test card.
    let (status, answer, _) = send(&server, &test, &with(number(&test_card), "application/json"), None).await;
    assert_eq!(status, 200, "{answer}");

    let cases = [
        (with(number(&email), "application/json"), 422, "forward_token_not_card", "/body"),
        (
            with(format!("{{{{{live_card}:pin}}}}"), "application/json"),
            422,
            "forward_placeholder_unknown_field",
            "/body",
        ),
        (with(format!("{{{{{live_card}:number"), "application/json"), 422, "forward_template_invalid", "/body"),
        (with(format!("{{{{ {live_card} }}}}"), "application/json"), 422, "forward_template_invalid", "/body"),
        (with(number(&live_card), "text/plain"), 422, "forward_content_type_unsupported", "/headers/content-type"),
        (with(format!("{{{{{live_card}:name}}}}"), "application/json"), 200, "", ""),
    ];
    for (body, status, code, pointer) in cases {
        let (got, answer, _) = send(&server, &live, &body, None).await;
        if status == 200 {
            assert_eq!(got, 200, "{answer}");
            continue;
        }
        problem(got, &answer, status, code, Some(pointer));
        assert!(!answer.to_string().contains(&live_card[4..]), "the error names no token: {answer}");
    }
    let mut host = with(number(&live_card), "application/json");
    host["headers"]["Host"] = json!("evil.example");
    let (status, answer, _) = send(&server, &live, &host, None).await;
    problem(status, &answer, 422, "forward_header_not_allowed", Some("/headers/Host"));
    assert!(!answer.to_string().contains("evil.example"));

    let (status, answer, _) = send(&server, &no_scope, &with(number(&live_card), "application/json"), None).await;
    problem(status, &answer, 403, "insufficient_scope", None);
    assert_eq!(gateway.requests().len(), 2, "only the two accepted forwards were sent");
    server.shutdown().await;
}

async fn gateway_failures_are_502_or_504_and_retries_reach_the_gateway_once(backend: Backend) {
    let gateway = TestGateway::start().await;
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let Some(server) = spawn(backend, &gateway, true, &[format!("localhost:{closed}")]).await else { return };
    let (_, key) = server.create_key("shop", &["vault:write", "vault:forward"]).await;
    let token = card(&server, &key, false).await;
    let to = |url: String| {
        json!({
            "destination": url,
            "headers": {"content-type": "application/json", "authorization": GATEWAY_KEY},
            "body": format!(r#"{{"n":"{{{{{token}:number}}}}"}}"#),
        })
    };

    // A success is kept: the retry replays it without a second charge.
    let charge = to(gateway.url("/v1/charges"));
    let (status, first, replayed) = send(&server, &key, &charge, Some("order-1")).await;
    assert_eq!((status, replayed), (200, false), "{first}");
    let (status, again, replayed) = send(&server, &key, &charge, Some("order-1")).await;
    assert_eq!((status, replayed), (200, true), "{again}");
    assert_eq!(again, first);
    assert_eq!(gateway.requests().len(), 1, "the retry did not reach the gateway");

    // A timeout: the gateway may have acted, so the 504 is kept and the retry is not sent.
    let slow = to(gateway.url("/slow"));
    let (status, answer, _) = send(&server, &key, &slow, Some("order-2")).await;
    problem(status, &answer, 504, "forward_gateway_timeout", None);
    let (status, answer, replayed) = send(&server, &key, &slow, Some("order-2")).await;
    problem(status, &answer, 504, "forward_gateway_timeout", None);
    assert!(replayed);
    assert_eq!(gateway.requests().len(), 2, "the retried timeout was not sent again");

    // Nothing listens: nothing was sent, so a retry may go out.
    let (status, answer, _) = send(&server, &key, &to(format!("https://localhost:{closed}/v1/charges")), None).await;
    problem(status, &answer, 502, "forward_gateway_unreachable", None);

    // An answer over the limit is not shown.
    let (status, answer, _) = send(&server, &key, &to(gateway.url("/big")), None).await;
    problem(status, &answer, 502, "forward_response_too_large", None);

    let entries = audit_entries(&server).await;
    let failed: Vec<&str> = entries
        .iter()
        .filter(|e| e["entry"]["action"] == "forward.sent" && e["entry"]["outcome"]["result"] == "failed")
        .map(|e| e["entry"]["outcome"]["reason"].as_str().unwrap())
        .collect();
    assert_eq!(failed, ["timeout", "unreachable", "response_too_large"]);
    server.shutdown().await;
}
