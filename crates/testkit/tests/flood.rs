//! A flood of 50,000 bad API keys and wrong passwords, on SQLite and PostgreSQL: every attempt
//! that got its 401 or 429 has its entry in the audit log (nothing thinned, nothing dropped), and
//! the log still verifies.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code fails loudly")]
#![allow(clippy::print_stdout, reason = "prints the figure BENCHMARKS.md quotes")]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{Value, json};
use strongroom_testkit::{Backend, TestServer, on_both_backends};

on_both_backends!(every_failed_attempt_of_a_flood_is_in_the_audit_log);

const BAD_KEYS: u64 = 45_000;
const WRONG_PASSWORDS: u64 = 5_000;
const CONCURRENCY: u64 = 48;

async fn every_failed_attempt_of_a_flood_is_in_the_audit_log(backend: Backend) {
    // The flood comes from one client, which API key probing would block everywhere after 20
    // keys (more_detection_points.rs tests that): off here, so every key reaches the gate.
    let Some(server) = TestServer::spawn_with(backend, |c| c.detection.api_key_probes = 0).await else { return };
    let before = server.app().audit.size().await.unwrap();
    let key_refusals = Arc::new(AtomicU64::new(0));
    let login_refusals = Arc::new(AtomicU64::new(0));
    let started = std::time::Instant::now();
    let mut workers = Vec::new();
    for worker in 0..CONCURRENCY {
        let (client, api, login, key) = (
            server.client.clone(),
            server.url("/v1/merchant"),
            server.url("/v1/identity/login"),
            server.bootstrap_key.clone(),
        );
        let (key_refusals, login_refusals) = (key_refusals.clone(), login_refusals.clone());
        workers.push(tokio::spawn(async move {
            let mut n = worker;
            while n < BAD_KEYS + WRONG_PASSWORDS {
                if n < BAD_KEYS {
                    // Well-formed keys that do not exist, and malformed ones.
                    let bearer = if n % 2 == 0 {
                        format!("sr_live_{:0>26}_{}", n, "a".repeat(52))
                    } else {
                        format!("not-a-key-{n}")
                    };
                    let status = client.get(&api).bearer_auth(bearer).send().await.unwrap().status().as_u16();
                    assert_eq!(status, 401);
                    key_refusals.fetch_add(1, Ordering::Relaxed);
                } else {
                    let body =
                        json!({"email": format!("flood{}@example.com", n % 40), "password": "not the password 0000"});
                    let status =
                        client.post(&login).bearer_auth(&key).json(&body).send().await.unwrap().status().as_u16();
                    assert!(status == 401 || status == 429, "a wrong password is refused or throttled: {status}");
                    login_refusals.fetch_add(1, Ordering::Relaxed);
                }
                n += CONCURRENCY;
            }
        }));
    }
    for worker in workers {
        worker.await.unwrap();
    }
    let elapsed = started.elapsed();
    let (keys, logins) = (key_refusals.load(Ordering::Relaxed), login_refusals.load(Ordering::Relaxed));
    assert_eq!(keys + logins, BAD_KEYS + WRONG_PASSWORDS);
    println!(
        "{backend:?}: {} refused requests in {:.1} s ({:.0}/s)",
        keys + logins,
        elapsed.as_secs_f64(),
        (keys + logins) as f64 / elapsed.as_secs_f64()
    );

    // Count the entries appended since the flood began.
    let (mut auth_failed, mut login_denied) = (0u64, 0u64);
    let size = server.app().audit.size().await.unwrap();
    let mut start = before;
    while start < size {
        let page = server.app().audit.entries(start, 1000).await.unwrap();
        assert!(!page.is_empty());
        for record in &page {
            let entry: Value = serde_json::from_slice(&record.leaf).unwrap();
            match (entry["action"].as_str(), entry["outcome"]["result"].as_str()) {
                (Some("auth.failed"), Some("denied")) => auth_failed += 1,
                (Some("customer.login"), Some("denied")) => login_denied += 1,
                _ => {}
            }
        }
        start += page.len() as u64;
    }
    assert_eq!(auth_failed, keys, "every refused key has its audit entry");
    assert_eq!(login_denied, logins, "every refused sign-in has its audit entry");
    let checkpoint = server.app().audit.checkpoint().await.unwrap();
    assert!(checkpoint.size >= size);
    server.shutdown().await;
}
