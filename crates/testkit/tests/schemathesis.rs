//! The OpenAPI document against the server, checked by schemathesis (an independent tool that
//! generates requests from the document and checks every answer against it): every status code,
//! content type, header and body the server sends must be documented, no request may cause a
//! server error, and requests the schema calls invalid must be refused. A pinned schemathesis
//! from the test tools' virtual environment, a fixed seed and a bounded number of examples per
//! operation keep the run repeatable and a few minutes long.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code fails loudly")]

use strongroom_testkit::{Backend, TestServer, test_python};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_matches_the_server() {
    let Some(python) = test_python() else { return };
    let Some(server) = TestServer::spawn(Backend::Sqlite).await else { return };
    let dir = tempfile::tempdir().unwrap();
    let document = server.request(reqwest::Method::GET, "/openapi.json").send().await.unwrap().text().await.unwrap();
    let (schema, ca) = (dir.path().join("openapi.json"), dir.path().join("ca.pem"));
    std::fs::write(&schema, document).unwrap();
    std::fs::write(&ca, &server.ca_pem).unwrap();
    let schemathesis = std::path::Path::new(&python).with_file_name("schemathesis");
    assert!(schemathesis.exists(), "schemathesis is not installed next to {python} (run scripts/test)");
    let base = server.url("");
    let output = tokio::process::Command::new(&schemathesis)
        .arg("run")
        .arg(&schema)
        .args(["--experimental=openapi-3.1", "--base-url", base.trim_end_matches('/')])
        .arg("--request-tls-verify")
        .arg(&ca)
        .args(["-H", &format!("Authorization: Bearer {}", server.bootstrap_key)])
        .args(["--checks", "all", "--hypothesis-max-examples", "25", "--hypothesis-seed", "20261205"])
        .args(["--hypothesis-derandomize", "--no-color", "--workers", "2"])
        // Revoking API keys by id could revoke the key the run itself uses.
        .args(["--exclude-path-regex", r"^/v1/api-keys/\{id\}$"])
        .output()
        .await
        .unwrap();
    let report = String::from_utf8_lossy(&output.stdout);
    let summary = report.lines().rev().find(|l| l.contains("passed") || l.contains("failed")).unwrap_or_default();
    eprintln!("schemathesis: {summary}");
    assert!(
        output.status.success(),
        "schemathesis found disagreements:\n{report}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    server.shutdown().await;
}
