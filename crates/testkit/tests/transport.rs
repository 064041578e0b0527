//! Transport: TLS versions and suites, plain HTTP, the redirect listener, the plain API listener
//! behind a proxy with trusted-proxy client IPs, the metrics listener, and panics.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code fails loudly")]

use std::sync::Arc;

use reqwest::Method;
use serde_json::Value;
use strongroom_testkit::{Backend, TestServer, captured_logs, client_trusting};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn root_store(ca_pem: &[u8]) -> rustls::RootCertStore {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_slice_iter(ca_pem) {
        roots.add(cert.unwrap()).unwrap();
    }
    roots
}

async fn handshake(
    server: &TestServer,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Result<(rustls::ProtocolVersion, rustls::SupportedCipherSuite), std::io::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(root_store(&server.ca_pem))
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(server.app().api_addr()).await?;
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let tls = connector.connect(name, tcp).await?;
    let (_, conn) = tls.get_ref();
    Ok((conn.protocol_version().unwrap(), conn.negotiated_cipher_suite().unwrap()))
}

#[tokio::test]
async fn tls13_and_tls12_with_aead_ecdhe_suites() {
    let server = TestServer::spawn(Backend::Sqlite).await.unwrap();
    let (version, suite) = handshake(&server, &[&rustls::version::TLS13]).await.unwrap();
    assert_eq!(version, rustls::ProtocolVersion::TLSv1_3);
    assert!(format!("{:?}", suite.suite()).contains("GCM") || format!("{:?}", suite.suite()).contains("CHACHA20"));
    let (version, suite) = handshake(&server, &[&rustls::version::TLS12]).await.unwrap();
    assert_eq!(version, rustls::ProtocolVersion::TLSv1_2);
    let name = format!("{:?}", suite.suite());
    assert!(name.starts_with("TLS_ECDHE_") && (name.contains("GCM") || name.contains("CHACHA20")), "{name}");
    server.shutdown().await;
}

/// The development chain passes strict X.509 verification: Python's ssl module with
/// VERIFY_X509_STRICT (Python 3.13's default; OpenSSL refuses, among others, a leaf without an
/// authority key identifier) trusting only `tls/ca.pem`, for each name the certificate is for,
/// with HTTP/2 chosen by ALPN.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_x509_verification_accepts_the_development_chain() {
    let Some(python) = strongroom_testkit::test_python() else { return };
    let server = TestServer::spawn(Backend::Sqlite).await.unwrap();
    let ca = server.app().dev_ca.clone().expect("the development certificate");
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tools/python/tls_strict_check.py");
    let port = server.app().api_addr().port().to_string();
    let output = tokio::process::Command::new(&python)
        .arg(&script)
        .args([port.as_str(), ca.to_str().unwrap(), "localhost", "127.0.0.1", "not-localhost.example"])
        .output()
        .await
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let lines: Vec<Value> =
        String::from_utf8(output.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    for line in &lines[..2] {
        assert_eq!(line["ok"], true, "{line}");
        assert_eq!(line["alpn"], "h2", "{line}");
        assert_eq!(line["http"], "HTTP/1.1 200 OK", "{line}");
    }
    // The check can fail: a name the certificate is not for is refused.
    assert_eq!(lines[2]["ok"], false, "{}", lines[2]);
    assert!(lines[2]["error"].as_str().unwrap().contains("CERTIFICATE_VERIFY_FAILED"), "{}", lines[2]);
    server.shutdown().await;
}

/// HTTP/2 by ALPN: a request over an h2 connection is answered over HTTP/2.
#[tokio::test]
async fn http2_is_served_when_alpn_chooses_it() {
    use http_body_util::{BodyExt, Empty};
    use hyper_util::rt::{TokioExecutor, TokioIo};

    let server = TestServer::spawn(Backend::Sqlite).await.unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(root_store(&server.ca_pem))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(server.app().api_addr()).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let tls = connector.connect(name, tcp).await.unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls)).await.unwrap();
    tokio::spawn(connection);
    let request = http::Request::get(format!("https://localhost:{}/healthz", server.app().api_addr().port()))
        .body(Empty::<bytes::Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.version(), http::Version::HTTP_2);
    assert_eq!(response.status(), 200);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert!(!body.is_empty());
    server.shutdown().await;
}

/// A hand-made ClientHello, so versions and suites that no modern Rust client offers can be tried.
fn client_hello(version: u16, suites: &[u16]) -> Vec<u8> {
    let mut ext = Vec::new();
    let mut push_ext = |kind: u16, data: &[u8]| {
        ext.extend_from_slice(&kind.to_be_bytes());
        ext.extend_from_slice(&(data.len() as u16).to_be_bytes());
        ext.extend_from_slice(data);
    };
    push_ext(0x000a, &[0x00, 0x04, 0x00, 0x1d, 0x00, 0x17]); // supported_groups: x25519, secp256r1
    push_ext(0x000b, &[0x01, 0x00]); // ec_point_formats: uncompressed
    push_ext(0x000d, &[0x00, 0x06, 0x04, 0x03, 0x08, 0x04, 0x04, 0x01]); // signature_algorithms
    let mut body = Vec::new();
    body.extend_from_slice(&version.to_be_bytes());
    body.extend_from_slice(&[0x42; 32]); // random
    body.push(0); // session id
    body.extend_from_slice(&((suites.len() * 2) as u16).to_be_bytes());
    for suite in suites {
        body.extend_from_slice(&suite.to_be_bytes());
    }
    body.extend_from_slice(&[0x01, 0x00]); // compression: null
    body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
    body.extend_from_slice(&ext);
    let mut handshake = vec![0x01];
    handshake.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    handshake.extend_from_slice(&body);
    let mut record = vec![0x16, 0x03, 0x01];
    record.extend_from_slice(&(handshake.len() as u16).to_be_bytes());
    record.extend_from_slice(&handshake);
    record
}

/// The first byte the server answers with: 0x16 = handshake (ServerHello), 0x15 = alert, None = closed.
async fn first_answer(server: &TestServer, hello: &[u8]) -> Option<u8> {
    let mut tcp = TcpStream::connect(server.app().api_addr()).await.unwrap();
    tcp.write_all(hello).await.unwrap();
    let mut buf = [0u8; 1];
    match tokio::time::timeout(std::time::Duration::from_secs(5), tcp.read(&mut buf)).await {
        Ok(Ok(1)) => Some(buf[0]),
        _ => None,
    }
}

#[tokio::test]
async fn old_versions_and_weak_suites_are_refused() {
    let server = TestServer::spawn(Backend::Sqlite).await.unwrap();
    const ECDHE_ECDSA_AES128_GCM: u16 = 0xc02b;
    const ECDHE_RSA_AES128_CBC_SHA: u16 = 0xc013;
    const RSA_AES128_GCM: u16 = 0x009c;
    const RSA_AES128_CBC_SHA: u16 = 0x002f;
    // Control: the same hand-made hello for TLS 1.2 with an AEAD ECDHE suite gets a ServerHello.
    assert_eq!(first_answer(&server, &client_hello(0x0303, &[ECDHE_ECDSA_AES128_GCM])).await, Some(0x16));
    // TLS 1.1 and 1.0 are refused, whatever the suites.
    for version in [0x0302, 0x0301] {
        let answer =
            first_answer(&server, &client_hello(version, &[ECDHE_ECDSA_AES128_GCM, ECDHE_RSA_AES128_CBC_SHA])).await;
        assert_ne!(answer, Some(0x16), "TLS version {version:#06x} must not get a ServerHello");
    }
    // TLS 1.2 with CBC suites or without ECDHE is refused.
    for suite in [ECDHE_RSA_AES128_CBC_SHA, RSA_AES128_GCM, RSA_AES128_CBC_SHA] {
        let answer = first_answer(&server, &client_hello(0x0303, &[suite])).await;
        assert_ne!(answer, Some(0x16), "suite {suite:#06x} must not be negotiated");
    }
    // Plain HTTP on the TLS port gets no HTTP answer.
    let mut tcp = TcpStream::connect(server.app().api_addr()).await.unwrap();
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n").await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), tcp.read_to_end(&mut answer)).await;
    assert!(!answer.starts_with(b"HTTP/"), "plain HTTP must not be served on the TLS port");
    server.shutdown().await;
}

#[tokio::test]
async fn redirect_listener_redirects_browsers_only() {
    let server =
        TestServer::spawn_with(Backend::Sqlite, |c| c.server.redirect_listen = Some("127.0.0.1:0".parse().unwrap()))
            .await
            .unwrap();
    let redirect = server.app().server.redirect_addr.unwrap();
    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let response = client.get(format!("http://{redirect}/login?next=%2Faccount")).send().await.unwrap();
    assert_eq!(response.status(), 308);
    let api_port = server.app().api_addr().port();
    assert_eq!(
        response.headers().get("location").unwrap(),
        &format!("https://127.0.0.1:{api_port}/login?next=%2Faccount")
    );
    for (method, path) in [(Method::GET, "/v1/merchant"), (Method::POST, "/login"), (Method::GET, "/metrics")] {
        let response = client.request(method.clone(), format!("http://{redirect}{path}")).send().await.unwrap();
        assert_eq!(response.status(), 403, "{method} {path}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["code"], "https_required");
    }
    server.shutdown().await;
}

#[tokio::test]
async fn plain_api_behind_a_proxy_trusts_only_configured_proxies() {
    use strongroom::config::TlsMode;
    for (trusted, expected) in [(vec![], "127.0.0.1"), (vec!["127.0.0.0/8".parse().unwrap()], "198.51.100.7")] {
        let server = TestServer::spawn_with(Backend::Sqlite, |c| {
            c.server.tls = TlsMode::TerminatedUpstream;
            c.server.trusted_proxies = trusted.clone();
        })
        .await
        .unwrap();
        assert!(server.base_url.starts_with("http://"));
        let request_id = format!("xff-test-{}", expected.replace('.', "-"));
        let response = server
            .request(Method::GET, "/v1/merchant")
            .header("x-forwarded-for", "203.0.113.1, 198.51.100.7")
            .header("x-request-id", &request_id)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let logs = captured_logs();
        let line = logs.lines().find(|l| l.contains(&request_id) && l.contains("client_ip")).expect("request logged");
        assert!(line.contains(&format!("\"client_ip\":\"{expected}\"")), "{line}");
        // A proxy that appends its own X-Forwarded-For line: the client's own line is not believed.
        let request_id = format!("xff-lines-{}", expected.replace('.', "-"));
        let response = server
            .request(Method::GET, "/v1/merchant")
            .header("x-forwarded-for", "6.6.6.6")
            .header("x-forwarded-for", "198.51.100.7")
            .header("x-request-id", &request_id)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let logs = captured_logs();
        let line = logs.lines().find(|l| l.contains(&request_id) && l.contains("client_ip")).expect("request logged");
        assert!(line.contains(&format!("\"client_ip\":\"{expected}\"")), "{line}");
        server.shutdown().await;
    }
}

#[tokio::test]
async fn separate_metrics_listener() {
    let server = TestServer::spawn_with(Backend::Sqlite, |c| c.metrics.listen = Some("127.0.0.1:0".parse().unwrap()))
        .await
        .unwrap();
    assert_eq!(server.request(Method::GET, "/metrics").send().await.unwrap().status(), 404);
    server.request(Method::GET, "/v1/merchant").send().await.unwrap();
    let metrics = server.app().server.metrics_addr.unwrap();
    let text = reqwest::get(format!("http://{metrics}/metrics")).await.unwrap().text().await.unwrap();
    assert!(text.contains("route=\"/v1/merchant\""), "{text}");
    server.shutdown().await;
}

#[tokio::test]
async fn a_panicking_handler_answers_500_and_the_router_keeps_serving() {
    use axum::routing::get;
    use tower::ServiceExt;
    let server = TestServer::spawn(Backend::Sqlite).await.unwrap();
    let state = server.app().state.clone();
    let routes = strongroom_http::routes::routes(&state.settings).route("/boom", get(boom));
    let router = strongroom_http::routes::with_middleware(routes, state);
    let request = || http::Request::builder().uri("/boom").body(axum::body::Body::empty()).unwrap();
    for _ in 0..2 {
        let response = router.clone().oneshot(request()).await.unwrap();
        assert_eq!(response.status(), 500);
        let body = axum::body::to_bytes(response.into_body(), 1 << 16).await.unwrap();
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["code"], "internal_error");
        assert!(!body.to_string().contains("internal detail"));
    }
    let healthy = http::Request::builder().uri("/healthz").body(axum::body::Body::empty()).unwrap();
    assert_eq!(router.oneshot(healthy).await.unwrap().status(), 200);
    // The real server is unaffected too.
    let client = client_trusting(&server.ca_pem);
    assert_eq!(client.get(server.url("/healthz")).send().await.unwrap().status(), 200);
    server.shutdown().await;
}

async fn boom() -> &'static str {
    panic!("internal detail that must not reach the client")
}

/// A POST whose body is held open until `release` fires: a request in flight for as long as the
/// test wants.
type HeldResponse = tokio::task::JoinHandle<reqwest::Result<reqwest::Response>>;
type BodySender = futures::channel::mpsc::UnboundedSender<Result<Vec<u8>, std::io::Error>>;

fn held_request(server: &TestServer) -> (HeldResponse, BodySender) {
    let (tx, rx) = futures::channel::mpsc::unbounded::<Result<Vec<u8>, std::io::Error>>();
    let request = server
        .request(Method::POST, "/v1/api-keys")
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(rx));
    tx.unbounded_send(Ok(b"{\"name\": \"held\", ".to_vec())).unwrap();
    (tokio::spawn(request.send()), tx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_over_the_concurrency_limit_are_shed() {
    let server = TestServer::spawn_with(Backend::Sqlite, |c| c.server.concurrency_limit = 1).await.unwrap();
    let (mut held, mut release) = held_request(&server);
    // Wait until the held request occupies the only slot.
    // (Bounded by time, not by attempts: on a loaded machine the held request may take a while
    // to reach the server.)
    let mut shed = None;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::time::Instant::now() < deadline {
        // A probe that held the slot when the held request arrived gets the held request shed
        // instead: start it again.
        if held.is_finished() {
            (held, release) = held_request(&server);
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let response = server.client.get(server.url("/healthz")).send().await.unwrap();
        if response.status() == 503 {
            shed = Some(response);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    let Some(shed) = shed else {
        // Say what became of the held request, so that a failure here can be told apart from a
        // held request that never held anything.
        let finished = held.is_finished();
        let outcome =
            if finished { format!("{:?}", held.await.unwrap().map(|r| r.status())) } else { "still pending".into() };
        panic!("a second request is shed while the first holds the only slot (held request: {outcome})");
    };
    assert!(shed.headers().contains_key("retry-after"));
    let body: Value = shed.json().await.unwrap();
    assert_eq!(body["code"], "overloaded");
    release.unbounded_send(Ok(b"\"scopes\": [\"admin:metrics\"]}".to_vec())).unwrap();
    drop(release);
    assert_eq!(held.await.unwrap().unwrap().status(), 201);
    assert_eq!(server.client.get(server.url("/healthz")).send().await.unwrap().status(), 200);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_requests_time_out_with_503() {
    let server =
        TestServer::spawn_with(Backend::Sqlite, |c| c.server.request_timeout = std::time::Duration::from_millis(200))
            .await
            .unwrap();
    // The body never completes; the server gives up after the timeout (tokio's timer, real time).
    let (held, _keep_open) = held_request(&server);
    let response = tokio::time::timeout(std::time::Duration::from_secs(10), held).await.unwrap().unwrap().unwrap();
    assert_eq!(response.status(), 503);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "timeout");
    server.shutdown().await;
}

#[tokio::test]
async fn the_default_access_log_keeps_failures_and_skips_successes() {
    let server =
        TestServer::spawn_with(Backend::Sqlite, |c| c.access_log = strongroom::config::AccessLogConfig::Errors)
            .await
            .unwrap();
    for (path, id) in [("/v1/merchant", "access-ok-1"), ("/v1/no-such-route", "access-missing-1")] {
        let response = server.request(Method::GET, path).header("x-request-id", id).send().await.unwrap();
        assert!(response.status() == 200 || response.status() == 404);
    }
    let logs = captured_logs();
    assert!(logs.lines().any(|l| l.contains("access-missing-1") && l.contains("status")), "a 404 is logged");
    assert!(!logs.lines().any(|l| l.contains("access-ok-1") && l.contains("latency_ms")), "a 200 is not");
    server.shutdown().await;
}

/// An early answer (a bad key, a missing scope) to a request with a body reaches an HTTP/2
/// client whole: the server reads the upload before it answers, so the stream is not reset
/// under the answer. curl (HTTP/2 by ALPN) is the client that lost such answers before ("Stream
/// error in the HTTP/2 framing layer", 6 in 20 tries with a 300 kB body).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn early_answers_reach_http2_clients_intact() {
    let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
    let Ok(version) = std::process::Command::new("curl").arg("--version").output() else {
        assert!(!ci, "curl is required under CI=true for the HTTP/2 test");
        eprintln!("SKIPPED: no curl for the HTTP/2 test");
        return;
    };
    assert!(String::from_utf8_lossy(&version.stdout).contains("HTTP2"), "this curl lacks HTTP/2");
    let Some(server) = TestServer::spawn(Backend::Sqlite).await else { return };
    let (_, narrow) = server.create_key("no vault scope", &["audit:read"]).await;
    let dir = tempfile::tempdir().unwrap();
    let (ca, body) = (dir.path().join("ca.pem"), dir.path().join("body.json"));
    std::fs::write(&ca, &server.ca_pem).unwrap();
    let padding = "x".repeat(300_000);
    std::fs::write(
        &body,
        serde_json::json!({"type": "email", "value": "a@example.com", "padding": padding}).to_string(),
    )
    .unwrap();
    let url = server.url("/v1/tokens");
    let mut lost = Vec::new();
    for round in 0..20 {
        let (key, expected) =
            if round % 2 == 0 { ("sr_live_notakey_notasecret", "401") } else { (narrow.as_str(), "403") };
        let output = tokio::process::Command::new("curl")
            .args(["-sS", "--http2", "--cacert"])
            .arg(&ca)
            .args(["-H", &format!("Authorization: Bearer {key}"), "-H", "Content-Type: application/json"])
            .arg("--data-binary")
            .arg(format!("@{}", body.display()))
            .args(["-w", "\n%{http_version} %{http_code}", &url])
            .output()
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        let last = text.lines().last().unwrap_or_default().to_owned();
        if !output.status.success() || last != format!("2 {expected}") || !text.contains("\"code\"") {
            lost.push(format!("round {round}: {last} {}", String::from_utf8_lossy(&output.stderr).trim()));
        }
    }
    assert!(lost.is_empty(), "answers lost or wrong over HTTP/2: {lost:?}");
    server.shutdown().await;
}
