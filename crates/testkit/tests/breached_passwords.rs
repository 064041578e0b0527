//! Breached passwords, black-box on SQLite and PostgreSQL. The word list the tests ship
//! (`testdata/passwords/common-passwords.txt`) is SHA-1 hashed here into a corpus in Have I Been
//! Pwned's format, imported with `strongroom passwords import`, and then refuses its passwords at
//! registration, change, reset and staff invitation acceptance (422 `breached_password`, the field
//! named, the password never echoed). The range API, played by a stand-in server, is sent only
//! the first five hex digits of the hash, with padding asked for; when it fails, passwords are
//! accepted without it (fail open), with a warning and a counter.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code fails loudly")]

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Parser;
use reqwest::Method;
use serde_json::{Value, json};
use sha1::{Digest, Sha1};
use strongroom_domain::identity::Client;
use strongroom_domain::merchants::MerchantId;
use strongroom_testkit::{Backend, TestServer, captured_logs, on_both_backends};

on_both_backends!(an_imported_corpus_refuses_breached_passwords, the_range_api_gets_five_digits_and_fails_open);

/// In the word list, and long and varied enough for the length rules and zxcvbn.
const BREACHED: &str = "correct horse battery staple";
const ALSO_BREACHED: &str = "purple monkey dishwasher 1993";
const STAFF_BREACHED: &str = "liverpool champions 2005";
/// In no list.
const CLEAN: &str = "violet tractor anthem 1987";

fn words() -> Vec<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/passwords/common-passwords.txt");
    let text = std::fs::read_to_string(path).unwrap();
    let words: Vec<String> = text.lines().filter(|l| !l.is_empty() && !l.starts_with('#')).map(str::to_owned).collect();
    assert!(words.len() > 300 && words.iter().any(|w| w == BREACHED) && !words.iter().any(|w| w == CLEAN));
    words
}

fn sha1_hex(password: &str) -> String {
    Sha1::digest(password.as_bytes()).iter().map(|b| format!("{b:02X}")).collect()
}

/// The word list as Have I Been Pwned's downloader writes it: `HEX40:COUNT` sorted by hash, CRLF.
fn hibp_corpus() -> String {
    let mut lines: Vec<String> =
        words().iter().enumerate().map(|(i, w)| format!("{}:{}\r\n", sha1_hex(w), 1000 - i)).collect();
    lines.sort();
    lines.concat()
}

async fn send(server: &TestServer, bearer: Option<&str>, method: Method, path: &str, body: &Value) -> (u16, Value) {
    let mut request = server.client.request(method, server.url(path)).json(body);
    if let Some(bearer) = bearer {
        request = request.bearer_auth(bearer);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

async fn api(server: &TestServer, path: &str, body: &Value) -> (u16, Value) {
    send(server, Some(&server.bootstrap_key), Method::POST, path, body).await
}

async fn register(server: &TestServer, email: &str, password: &str) -> (u16, Value) {
    api(server, "/v1/identity/customers", &json!({"email": email, "password": password})).await
}

/// A 422 `breached_password` naming `pointer`, without the password.
fn assert_breached(status: u16, problem: &Value, pointer: &str, password: &str) {
    assert_eq!((status, problem["code"].as_str()), (422, Some("breached_password")), "{problem}");
    assert_eq!(problem["errors"][0]["pointer"], pointer, "{problem}");
    assert!(problem["errors"][0]["detail"].as_str().unwrap().contains("data breaches"), "{problem}");
    assert!(!problem.to_string().contains(password), "the password is never echoed");
}

async fn scrape(server: &TestServer) -> String {
    server.request(Method::GET, "/metrics").send().await.unwrap().text().await.unwrap()
}

/// The newest mail of `kind` in the development mailbox (waits up to 10 s).
async fn mail(server: &TestServer, kind: &str) -> String {
    let dir = server.data_dir().join("mail");
    for _ in 0..100 {
        let mut found: Vec<std::path::PathBuf> =
            std::fs::read_dir(&dir).map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect()).unwrap_or_default();
        found.retain(|p| p.to_string_lossy().ends_with(&format!("-{kind}.eml")));
        found.sort();
        if let Some(newest) = found.last() {
            return std::fs::read_to_string(newest).unwrap().replace("=\r\n", "").replace("=3D", "=");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no {kind} mail arrived");
}

async fn an_imported_corpus_refuses_breached_passwords(backend: Backend) {
    let Some(mut server) = TestServer::spawn(backend).await else { return };
    // Without a corpus the password passes: what refuses it below is the corpus alone.
    let (status, body) = register(&server, "first@example.com", BREACHED).await;
    assert_eq!(status, 202, "{body}");

    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("pwnedpasswords.txt");
    std::fs::write(&corpus, hibp_corpus()).unwrap();
    let data_dir = server.data_dir();
    let args =
        ["strongroom", "--data-dir", data_dir.to_str().unwrap(), "passwords", "import", corpus.to_str().unwrap()];
    assert_eq!(strongroom::commands::run(strongroom::commands::Cli::try_parse_from(args).unwrap()).await, 0);
    assert!(data_dir.join("pwned-passwords.bin").is_file());
    server.restart().await;

    // Registration.
    let (status, problem) = register(&server, "second@example.com", BREACHED).await;
    assert_breached(status, &problem, "/password", BREACHED);
    let (status, body) = register(&server, "third@example.com", CLEAN).await;
    assert_eq!(status, 202, "{body}");

    // Change: an account made before the import still signs in, but cannot pick another one.
    let login = json!({"email": "first@example.com", "password": BREACHED});
    let (status, body) = api(&server, "/v1/identity/login", &login).await;
    assert_eq!(status, 200, "{body}");
    let token = body["session"]["token"].as_str().unwrap().to_owned();
    let change = json!({"current_password": BREACHED, "new_password": ALSO_BREACHED});
    let (status, problem) = send(&server, Some(&token), Method::POST, "/v1/me/password", &change).await;
    assert_breached(status, &problem, "/new_password", ALSO_BREACHED);

    // Reset.
    assert_eq!(api(&server, "/v1/identity/password-reset", &json!({"email": "first@example.com"})).await.0, 202);
    let reset = mail(&server, "password_reset").await;
    let start = reset.find("#token=rst_").expect("a reset link") + "#token=".len();
    let reset_token: String = reset[start..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
    let complete = |password: &str| json!({"token": reset_token, "new_password": password});
    let (status, problem) = api(&server, "/v1/identity/password-reset/complete", &complete(ALSO_BREACHED)).await;
    assert_breached(status, &problem, "/new_password", ALSO_BREACHED);
    assert_eq!(api(&server, "/v1/identity/password-reset/complete", &complete(CLEAN)).await.0, 204);

    // Staff invitation acceptance.
    let merchant = MerchantId::parse(&server.merchant_id).unwrap();
    let roles = ["owner".to_owned()];
    let staff = &server.app().state.staff;
    let invitation = staff.invite(&merchant, "owner@example.com", &roles, None, &Client::default()).await.unwrap();
    let token = invitation.token.expose().clone();
    let accept = json!({"token": token, "password": STAFF_BREACHED});
    let (status, problem) = send(&server, None, Method::POST, "/v1/staff/invitation/accept", &accept).await;
    assert_breached(status, &problem, "/password", STAFF_BREACHED);

    let metrics = scrape(&server).await;
    assert!(
        metrics.contains("strongroom_password_breach_checks_total{source=\"file\",outcome=\"breached\"} 4"),
        "{metrics}"
    );
    assert!(
        metrics.contains("strongroom_password_breach_checks_total{source=\"file\",outcome=\"clean\"} 2"),
        "{metrics}"
    );
    let logs = captured_logs();
    for password in [BREACHED, ALSO_BREACHED, STAFF_BREACHED] {
        assert!(!logs.contains(password) && !logs.contains(&sha1_hex(password)), "a password or its hash was logged");
    }
    server.shutdown().await;
}

/// What the stand-in was sent: the request target and the `Add-Padding` header.
type Seen = Arc<Mutex<Vec<(String, Option<String>)>>>;

/// A stand-in for the range API: answers `/range/{prefix}` from the word list, padded, and
/// records what it was sent; or answers 503.
#[derive(Clone, Default)]
struct StandIn {
    hashes: Arc<Vec<String>>,
    seen: Seen,
    failing: Arc<AtomicBool>,
}

async fn range(
    axum::extract::State(stand_in): axum::extract::State<StandIn>,
    uri: axum::http::Uri,
    headers: axum::http::HeaderMap,
) -> (axum::http::StatusCode, String) {
    let padding = headers.get("add-padding").and_then(|v| v.to_str().ok()).map(str::to_owned);
    stand_in.seen.lock().unwrap().push((uri.to_string(), padding));
    if stand_in.failing.load(Ordering::SeqCst) {
        return (axum::http::StatusCode::SERVICE_UNAVAILABLE, String::new());
    }
    let prefix = uri.path().trim_start_matches("/range/").to_ascii_uppercase();
    let mut lines: Vec<String> =
        stand_in.hashes.iter().filter(|h| h.starts_with(&prefix)).map(|h| format!("{}:{}", &h[5..], 42)).collect();
    // Padding as the real API sends it: made-up suffixes with count 0, here also the clean
    // password's own suffix, which must not count as found.
    let clean = sha1_hex(CLEAN);
    if clean.starts_with(&prefix) {
        lines.push(format!("{}:0", &clean[5..]));
    }
    lines.extend((0..5).map(|i| format!("{:035X}:0", i * 7919)));
    (axum::http::StatusCode::OK, lines.join("\r\n"))
}

async fn the_range_api_gets_five_digits_and_fails_open(backend: Backend) {
    let stand_in = StandIn { hashes: Arc::new(words().iter().map(|w| sha1_hex(w)).collect()), ..StandIn::default() };
    let app = axum::Router::new().route("/range/{prefix}", axum::routing::get(range)).with_state(stand_in.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let serving = tokio::spawn(async move { axum::serve(listener, app).await });
    let Some(server) = TestServer::spawn_with(backend, |config| {
        config.passwords.pwned_range_url = Some(format!("http://127.0.0.1:{port}/"));
    })
    .await
    else {
        serving.abort();
        return;
    };

    let (status, problem) = register(&server, "a@example.com", BREACHED).await;
    assert_breached(status, &problem, "/password", BREACHED);
    let hash = sha1_hex(BREACHED);
    {
        let seen = stand_in.seen.lock().unwrap();
        assert_eq!(*seen, vec![(format!("/range/{}", &hash[..5]), Some("true".to_owned()))], "five digits, padded");
    }
    // The clean password's suffix is listed with count 0 (padding) when its range is asked for.
    let (status, body) = register(&server, "b@example.com", CLEAN).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(stand_in.seen.lock().unwrap().len(), 2);

    // The API fails: the password is accepted without it, with a warning and a count.
    stand_in.failing.store(true, Ordering::SeqCst);
    let (status, body) = register(&server, "c@example.com", BREACHED).await;
    assert_eq!(status, 202, "fail open: {body}");
    let metrics = scrape(&server).await;
    for counted in ["source=\"range_api\",outcome=\"breached\"} 1", "source=\"range_api\",outcome=\"failed\"} 1"] {
        assert!(metrics.contains(&format!("strongroom_password_breach_checks_total{{{counted}")), "{metrics}");
    }
    let logs = captured_logs();
    assert!(logs.contains("breached-password check failed"), "the failure is logged");
    assert!(!logs.contains(&hash[5..]) && !logs.contains(BREACHED), "neither the hash nor the password is logged");
    server.shutdown().await;
    serving.abort();
}
