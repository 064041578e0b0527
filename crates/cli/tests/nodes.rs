//! Two `strongroom serve` processes on one PostgreSQL database: exactly one leads the background
//! jobs; events written through either node reach the shop's webhook receiver once each (ids are
//! checked at the receiver); when the leader is killed with SIGKILL the other takes over, and the
//! time from the kill to its first delivery is printed (BENCHMARKS.md quotes it). A customer
//! session ended, or an account disabled, through one node is refused by the other within a
//! second.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code fails loudly")]
#![allow(clippy::print_stdout, reason = "prints the figure BENCHMARKS.md quotes")]

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Serving, bootstrap_key, client, strongroom};
use serde_json::{Value, json};

type Seen = Arc<Mutex<HashMap<String, (u32, Instant)>>>;

/// A webhook receiver on loopback counting deliveries by `webhook-id`.
fn receiver() -> (String, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let seen: Seen = Arc::default();
    let record = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let record = record.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                loop {
                    let mut id = None;
                    let mut length = 0usize;
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    loop {
                        let mut header = String::new();
                        if reader.read_line(&mut header).unwrap_or(0) == 0 {
                            return;
                        }
                        let header = header.trim_end();
                        if header.is_empty() {
                            break;
                        }
                        let (name, value) = header.split_once(':').unwrap_or((header, ""));
                        match name.to_ascii_lowercase().as_str() {
                            "webhook-id" => id = Some(value.trim().to_owned()),
                            "content-length" => length = value.trim().parse().unwrap_or(0),
                            _ => {}
                        }
                    }
                    let mut body = vec![0; length];
                    if reader.read_exact(&mut body).is_err() {
                        return;
                    }
                    if let Some(id) = id {
                        let mut seen = record.lock().unwrap();
                        seen.entry(id).or_insert((0, Instant::now())).0 += 1;
                    }
                    let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
                }
            });
        }
    });
    (url, seen)
}

fn postgres_url() -> Option<String> {
    let admin = std::env::var("STRONGROOM_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
    let answers =
        std::net::TcpStream::connect_timeout(&"127.0.0.1:5432".parse().unwrap(), Duration::from_secs(2)).is_ok();
    if !answers {
        assert!(!ci, "PostgreSQL is required under CI=true");
        eprintln!("SKIPPED: PostgreSQL does not answer; the two-node test needs it");
        return None;
    }
    Some(admin)
}

fn node(data: &Path, database: &str, name: &str) -> Serving {
    let mut command = strongroom(data);
    command
        .env("STRONGROOM_DATABASE_URL", database)
        .env("STRONGROOM_JOBS__NODE_NAME", name)
        .env("STRONGROOM_OUTBOUND__ALLOW_LOOPBACK", "true");
    serve_with(command)
}

fn serve_with(command: std::process::Command) -> Serving {
    common::serve_command(command)
}

fn jobs_status(data: &Path, database: &str) -> Value {
    let output = strongroom(data).env("STRONGROOM_DATABASE_URL", database).args(["jobs", "status"]).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).unwrap()
}

async fn leading(http: &reqwest::Client, port: u16, key: &str) -> bool {
    let text = http
        .get(format!("https://127.0.0.1:{port}/metrics"))
        .bearer_auth(key)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines().any(|l| l == "strongroom_jobs_leading 1")
}

async fn test_event(http: &reqwest::Client, port: u16, key: &str, endpoint: &str) -> String {
    let response = http
        .post(format!("https://127.0.0.1:{port}/v1/webhook_endpoints/{endpoint}/test"))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    response.json::<Value>().await.unwrap()["event_id"].as_str().unwrap().to_owned()
}

async fn wait_for(seen: &Seen, ids: &[String], limit: Duration) -> bool {
    let started = Instant::now();
    while started.elapsed() < limit {
        if ids.iter().all(|id| seen.lock().unwrap().contains_key(id)) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leader_takes_over_from_a_killed_one() {
    let Some(admin_url) = postgres_url() else { return };
    let name = format!("sr_nodes_{}", std::process::id());
    let admin = strongroom_store::Store::connect(&admin_url, strongroom_store::PoolSettings::default()).await.unwrap();
    admin.execute_admin(&format!("DROP DATABASE IF EXISTS {name}")).await.unwrap();
    admin.execute_admin(&format!("CREATE DATABASE {name}")).await.unwrap();
    let database = format!("{}/{name}", admin_url.rsplit_once('/').unwrap().0);

    let dir = tempfile::tempdir().unwrap();
    let (data_a, data_b) = (dir.path().join("a"), dir.path().join("b"));
    let mut a = node(&data_a, &database, "node-a");
    let key = bootstrap_key(&a.banner);
    // The second node shares the database and the root key (one deployment).
    std::fs::create_dir_all(&data_b).unwrap();
    std::fs::copy(data_a.join("root.key"), data_b.join("root.key")).unwrap();
    let mut b = node(&data_b, &database, "node-b");
    let (http_a, http_b) = (client(&data_a), client(&data_b));

    // Exactly one leader.
    let mut leaders = (false, false);
    for _ in 0..100 {
        leaders = (leading(&http_a, a.port, &key).await, leading(&http_b, b.port, &key).await);
        if leaders.0 ^ leaders.1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(leaders.0 ^ leaders.1, "exactly one node leads: {leaders:?}");
    let status = jobs_status(&data_a, &database);
    let leader_name = if leaders.0 { "node-a" } else { "node-b" };
    assert_eq!(status["leader"]["node"], leader_name, "{status}");

    // Events written through both nodes: each delivered once, by the leader alone.
    let (url, seen) = receiver();
    let created = http_a
        .post(format!("https://127.0.0.1:{}/v1/webhook_endpoints", a.port))
        .bearer_auth(&key)
        .json(&json!({"url": url, "event_types": ["webhook.test"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let endpoint = created.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    let mut ids = Vec::new();
    for i in 0..40 {
        let (http, port) = if i % 2 == 0 { (&http_a, a.port) } else { (&http_b, b.port) };
        ids.push(test_event(http, port, &key, &endpoint).await);
    }
    assert!(wait_for(&seen, &ids, Duration::from_secs(20)).await, "every event arrives");
    tokio::time::sleep(Duration::from_millis(500)).await;
    {
        let seen = seen.lock().unwrap();
        let twice: Vec<_> = seen.iter().filter(|(_, (count, _))| *count > 1).collect();
        assert!(twice.is_empty(), "no event is delivered twice: {twice:?}");
        assert_eq!(seen.len(), ids.len());
    }

    // A session ended, or an account disabled, on one node is refused by the other within a
    // second (the session cache's time to live), and at once on the node that made the change.
    let base_a = format!("https://127.0.0.1:{}", a.port);
    let base_b = format!("https://127.0.0.1:{}", b.port);
    let registered = http_a
        .post(format!("{base_a}/v1/identity/customers"))
        .bearer_auth(&key)
        .json(&json!({"email": "two.nodes@example.com", "password": "correct horse battery staple 42"}))
        .send()
        .await
        .unwrap();
    assert_eq!(registered.status(), 202);
    let customer = registered.json::<Value>().await.unwrap()["customer"].as_str().unwrap().to_owned();
    let sign_in = async || {
        let response = http_a
            .post(format!("{base_a}/v1/identity/login"))
            .bearer_auth(&key)
            .json(&json!({"email": "two.nodes@example.com", "password": "correct horse battery staple 42"}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        response.json::<Value>().await.unwrap()["session"]["token"].as_str().unwrap().to_owned()
    };
    let me = async |base: &str, http: &reqwest::Client, token: &str| {
        http.get(format!("{base}/v1/me")).bearer_auth(token).send().await.unwrap().status().as_u16()
    };
    let refused_within = async |base: &str, http: &reqwest::Client, token: &str, since: Instant| {
        while since.elapsed() < Duration::from_secs(5) {
            if me(base, http, token).await == 401 {
                return since.elapsed();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the other node still accepts the session after 5 s");
    };
    for change in ["logout", "disable"] {
        let token = sign_in().await;
        assert_eq!(me(&base_b, &http_b, &token).await, 200, "node B validates (and caches) the session");
        let changed = Instant::now();
        let response = if change == "logout" {
            http_a.post(format!("{base_a}/v1/me/logout")).bearer_auth(&token).send().await.unwrap()
        } else {
            http_a
                .post(format!("{base_a}/v1/identity/customers/{customer}/disable"))
                .bearer_auth(&key)
                .send()
                .await
                .unwrap()
        };
        assert!(response.status().is_success(), "{change}: {}", response.status());
        assert_eq!(me(&base_a, &http_a, &token).await, 401, "{change}: refused at once on the node that made it");
        let took = refused_within(&base_b, &http_b, &token, changed).await;
        println!("session {change} seen by the other node after {} ms", took.as_millis());
        assert!(took <= Duration::from_millis(1500), "{change} took {} ms to reach the other node", took.as_millis());
        if change == "disable" {
            let enabled = http_a
                .post(format!("{base_a}/v1/identity/customers/{customer}/enable"))
                .bearer_auth(&key)
                .send()
                .await
                .unwrap();
            assert!(enabled.status().is_success());
        }
    }

    // Kill the leader; the other node takes over and delivers what is written through it.
    let (leader, standby, standby_http, standby_name, standby_data) = if leaders.0 {
        (&mut a, &mut b, &http_b, "node-b", &data_b)
    } else {
        (&mut b, &mut a, &http_a, "node-a", &data_a)
    };
    let killed = Instant::now();
    leader.child.kill().unwrap();
    leader.child.wait().unwrap();
    let after = test_event(standby_http, standby.port, &key, &endpoint).await;
    assert!(wait_for(&seen, std::slice::from_ref(&after), Duration::from_secs(30)).await, "the standby takes over");
    let delivered_at = seen.lock().unwrap()[&after].1;
    let failover = delivered_at.duration_since(killed);
    println!("leader failover: {} ms from SIGKILL to the first delivery by the other node", failover.as_millis());
    assert!(leading(standby_http, standby.port, &key).await);
    let status = jobs_status(standby_data, &database);
    assert_eq!(status["leader"]["node"], standby_name, "{status}");

    let _ = standby.child.kill();
    let _ = standby.child.wait();
    admin.execute_admin(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await.unwrap();
    admin.close().await;
}
