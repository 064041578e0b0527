//! The operator's view: `/metrics` after some traffic carries the process, pool, audit, outbox,
//! job and key figures, passes `promtool check metrics`, never carries an input value in a label,
//! and the shipped alert rules and their unit tests pass `promtool` (Debian's `prometheus`
//! package, installed by `scripts/test`; under `CI=true` its absence fails).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code fails loudly")]

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::json;
use strongroom_testkit::{Backend, TestServer, on_both_backends};

on_both_backends!(metrics_describe_the_service_without_values);

fn promtool() -> Option<String> {
    match std::env::var("STRONGROOM_TEST_PROMTOOL") {
        Ok(path) => Some(path),
        Err(_) => {
            let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
            assert!(!ci, "STRONGROOM_TEST_PROMTOOL is required under CI=true");
            eprintln!("SKIPPED: STRONGROOM_TEST_PROMTOOL not set (run scripts/test); promtool checks skipped");
            None
        }
    }
}

fn repo_file(path: &str) -> String {
    format!("{}/../../{path}", env!("CARGO_MANIFEST_DIR"))
}

async fn metrics_describe_the_service_without_values(backend: Backend) {
    let Some(server) = TestServer::spawn(backend).await else { return };
    // Some of everything: a token, a refused key, a failed sign-in, a webhook endpoint.
    let canary_email = "metrics-canary@example.com";
    let body = json!({"type": "email", "customer": "cus_metrics", "value": canary_email});
    assert_eq!(server.request(reqwest::Method::POST, "/v1/tokens").json(&body).send().await.unwrap().status(), 201);
    let bad = server.client.get(server.url("/v1/merchant")).bearer_auth("sr_live_not_a_real_key").send().await.unwrap();
    assert_eq!(bad.status(), 401);
    let login = json!({"email": "nobody@example.com", "password": "wrong password 123456"});
    let refused = server.request(reqwest::Method::POST, "/v1/identity/login").json(&login).send().await.unwrap();
    assert_eq!(refused.status(), 401);

    let scrape = server.request(reqwest::Method::GET, "/metrics").send().await.unwrap().text().await.unwrap();
    for name in [
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_cpu_seconds_total",
        "strongroom_http_requests_total",
        "strongroom_db_pool_connections{state=\"in_use\"}",
        "strongroom_db_pool_max_connections",
        "strongroom_db_pool_acquire_seconds",
        "strongroom_db_up 1",
        "strongroom_audit_log_entries",
        "strongroom_audit_last_checkpoint_age_seconds",
        "strongroom_audit_events_total{action=\"customer.login\",result=\"denied\"",
        "strongroom_audit_events_total{action=\"security.canary_token_used\",result=\"failed\",reason=\"revealed\"} 0",
        "strongroom_outbox_pending",
        "strongroom_outbox_oldest_pending_age_seconds",
        "strongroom_jobs_leading 1",
        "strongroom_key_versions{key=\"kek\"} 1",
        "strongroom_key_active_age_seconds{key=\"kek\"}",
    ] {
        assert!(scrape.contains(name), "{name} missing from:\n{scrape}");
    }
    assert!(scrape.ends_with("# EOF\n"));
    assert!(
        !scrape.contains(canary_email) && !scrape.contains("nobody@example.com") && !scrape.contains("not_a_real_key")
    );

    if let Some(promtool) = promtool() {
        let mut child = Command::new(&promtool)
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(as_prometheus_text(&scrape).as_bytes()).unwrap();
        let output = child.wait_with_output().unwrap();
        let said = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        assert!(output.status.success(), "promtool check metrics: {said}");
        let rules = Command::new(&promtool)
            .args(["check", "rules", &repo_file("deploy/prometheus/alerts.yml")])
            .output()
            .unwrap();
        assert!(rules.status.success(), "{}", String::from_utf8_lossy(&rules.stdout));
        let tests = Command::new(&promtool)
            .args(["test", "rules", &repo_file("deploy/prometheus/alerts_test.yml")])
            .output()
            .unwrap();
        assert!(tests.status.success(), "{}", String::from_utf8_lossy(&tests.stdout));
    }
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(repo_file("deploy/grafana/strongroom.json")).unwrap()).unwrap();
    assert_eq!(dashboard["uid"], "strongroom");
    server.shutdown().await;
}

/// The scrape as Prometheus reads it: promtool 2.42 lints the classic text format, where a
/// counter's HELP and TYPE name the `_total` series and there is no `# EOF` (Prometheus makes
/// the same translation when it ingests OpenMetrics).
fn as_prometheus_text(openmetrics: &str) -> String {
    let counters: Vec<String> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ").and_then(|r| r.strip_suffix(" counter")).map(str::to_owned))
        .collect();
    let mut out = String::new();
    for line in openmetrics.lines() {
        if line == "# EOF" {
            continue;
        }
        let mut line = line.to_owned();
        for name in &counters {
            for kind in ["# HELP ", "# TYPE "] {
                let prefix = format!("{kind}{name} ");
                if let Some(rest) = line.strip_prefix(&prefix) {
                    line = format!("{kind}{name}_total {rest}");
                }
            }
        }
        out.push_str(&line);
        out.push('\n');
    }
    out
}
