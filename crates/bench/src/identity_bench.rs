//! `strongroom-bench identity`: identity's figures over TLS, each against a baseline from the
//! same run.
//! - Session validation: `GET /v1/me/session` with a customer's bearer token against the bare
//!   axum baseline answering `GET /v1/merchant`, alternated for several rounds (median ratio).
//! - Sign-in flood: 200 connections send sign-ins with wrong passwords (new email and client
//!   address each time, so every one costs an Argon2id verification) while two connections probe
//!   `/healthz` and two call an authenticated endpoint (`GET /v1/merchant` with an API key). The
//!   probes' p50/p99 are shown without and with the flood, with resident memory before and after.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hdrhistogram::Histogram;

use crate::{
    Load, Measurement, Options, Target, Transport, drive, measure, start_echo, start_strongroom, tls_connector,
};

const FLOOD_CONNECTIONS: usize = 200;
const PROBE_CONNECTIONS: usize = 2;

/// `POST path` with a JSON body on a new connection; its JSON answer, or an error naming the status.
pub(crate) async fn post(target: &Target, path: &str, body: serde_json::Value) -> anyhow::Result<serde_json::Value> {
    use http_body_util::BodyExt;
    let io = crate::connect(target).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake::<_, http_body_util::Full<bytes::Bytes>>(
        hyper_util::rt::TokioIo::new(io),
    )
    .await?;
    tokio::spawn(conn);
    let mut request = http::Request::post(path)
        .header(http::header::HOST, "localhost")
        .header(http::header::CONTENT_TYPE, "application/json");
    if let Some(auth) = &target.authorization {
        request = request.header(http::header::AUTHORIZATION, auth);
    }
    let response =
        sender.send_request(request.body(http_body_util::Full::new(bytes::Bytes::from(body.to_string())))?).await?;
    let status = response.status();
    let bytes = response.into_body().collect().await?.to_bytes();
    if !status.is_success() {
        bail!("{path} answered {status}: {}", String::from_utf8_lossy(&bytes));
    }
    Ok(serde_json::from_slice(&bytes)?)
}

/// p50 and p99 of a probe running `connections` connections until `until`.
async fn probe(target: &Target, connections: usize, until: Instant) -> anyhow::Result<(f64, f64, u64, u64)> {
    let histogram = Arc::new(Mutex::new(Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?));
    let tasks: Vec<_> =
        (0..connections).map(|_| tokio::spawn(drive(target.clone(), until, true, histogram.clone()))).collect();
    let (mut ok, mut failed) = (0, 0);
    for task in tasks {
        let outcome = task.await?;
        ok += outcome.ok;
        failed += outcome.failed;
    }
    let h = histogram.lock().map_err(|_| anyhow::anyhow!("histogram lock"))?;
    Ok((h.value_at_quantile(0.50) as f64 / 1000.0, h.value_at_quantile(0.99) as f64 / 1000.0, ok, failed))
}

fn row(name: &str, m: &Measurement, ratio: f64) {
    println!(
        "| {name} | {:.0} | {:.2} | {:.2} | {:.1} | {} | {:.3} |",
        m.requests_per_sec, m.p50_ms, m.p99_ms, m.cpu_us_per_request, m.failed, ratio
    );
}

/// Runs the identity benchmark.
pub async fn run(options: Options) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let data_dir = dir.path().join("strongroom-data");
    println!(
        "strongroom-bench identity: SQLite, TLS, {} connections, {}s per target after {}s warm-up, {} rounds",
        options.connections,
        options.duration.as_secs(),
        options.warmup.as_secs(),
        options.rounds
    );
    let (strongroom, key) = start_strongroom(&options, &data_dir, Transport::Tls, &[])?;
    let key = key.context("no bootstrap key was printed")?;
    let echo = start_echo(&options, Some((&data_dir.join("tls/cert.pem"), &data_dir.join("tls/key.pem"))))?;
    let connector = Some(tls_connector(&data_dir.join("tls/ca.pem"))?);
    let api = |path: &'static str, load: Load| Target {
        addr: strongroom.addr,
        tls: connector.clone(),
        path,
        authorization: Some(format!("Bearer {key}")),
        load,
    };
    let password = "orchid velvet thunder lantern 2026";
    post(
        &api("", Load::Get),
        "/v1/identity/customers",
        serde_json::json!({"email": "bench@example.com", "password": password}),
    )
    .await?;
    let login = post(
        &api("", Load::Get),
        "/v1/identity/login",
        serde_json::json!({"email": "bench@example.com", "password": password}),
    )
    .await?;
    let token = login["session"]["token"].as_str().context("sign-in gave no session")?.to_owned();

    println!();
    println!("| target | req/s | p50 ms | p99 ms | server CPU µs/request | failed | ratio to baseline |");
    println!("|---|---|---|---|---|---|---|");
    let session = Target {
        addr: strongroom.addr,
        tls: connector.clone(),
        path: "/v1/me/session",
        authorization: Some(format!("Bearer {token}")),
        load: Load::Get,
    };
    let baseline =
        Target { addr: echo.addr, tls: connector.clone(), path: "/v1/merchant", authorization: None, load: Load::Get };
    let mut rounds = Vec::new();
    for _ in 0..options.rounds {
        let base = measure(&options, &baseline, &echo).await?;
        let measured = measure(&options, &session, &strongroom).await?;
        rounds.push((measured.requests_per_sec / base.requests_per_sec, base, measured));
    }
    rounds.sort_by(|a, b| a.0.total_cmp(&b.0));
    let ratios: Vec<String> = rounds.iter().map(|(r, _, _)| format!("{r:.3}")).collect();
    let (ratio, base, measured) = rounds.swap_remove(rounds.len() / 2);
    println!("| ratios of the rounds, sorted: {} |  |  |  |  |  |  |", ratios.join(", "));
    row("axum JSON GET (baseline)", &base, 1.0);
    row("strongroom: GET /v1/me/session (session token validated)", &measured, ratio);

    let healthz = Target {
        addr: strongroom.addr,
        tls: connector.clone(),
        path: "/healthz",
        authorization: None,
        load: Load::Get,
    };
    let merchant = api("/v1/merchant", Load::Get);
    println!();
    println!("| probe ({PROBE_CONNECTIONS} connections each) | p50 ms | p99 ms | answered | failed |");
    println!("|---|---|---|---|---|");
    let quiet_until = Instant::now() + options.duration;
    let (h, m) =
        tokio::join!(probe(&healthz, PROBE_CONNECTIONS, quiet_until), probe(&merchant, PROBE_CONNECTIONS, quiet_until));
    let ((h50, h99, hok, hf), (m50, m99, mok, mf)) = (h?, m?);
    println!("| /healthz, no flood | {h50:.2} | {h99:.2} | {hok} | {hf} |");
    println!("| GET /v1/merchant (API key), no flood | {m50:.2} | {m99:.2} | {mok} | {mf} |");
    let rss_before = strongroom.rss_kib().unwrap_or(0);

    let flood = api("/v1/identity/login", Load::WrongLogin);
    let flood_until = Instant::now() + options.warmup + options.duration;
    let sink = Arc::new(Mutex::new(Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?));
    let flooders: Vec<_> =
        (0..FLOOD_CONNECTIONS).map(|_| tokio::spawn(drive(flood.clone(), flood_until, false, sink.clone()))).collect();
    tokio::time::sleep(options.warmup).await;
    let (h, m) =
        tokio::join!(probe(&healthz, PROBE_CONNECTIONS, flood_until), probe(&merchant, PROBE_CONNECTIONS, flood_until));
    let ((h50, h99, hok, hf), (m50, m99, mok, mf)) = (h?, m?);
    let rss_during = strongroom.rss_kib().unwrap_or(0);
    let mut answered = 0;
    for flooder in flooders {
        let outcome = flooder.await?;
        answered += outcome.ok + outcome.failed;
    }
    println!("| /healthz, during the flood | {h50:.2} | {h99:.2} | {hok} | {hf} |");
    println!("| GET /v1/merchant (API key), during the flood | {m50:.2} | {m99:.2} | {mok} | {mf} |");
    println!();
    let seconds = (options.warmup + options.duration).as_secs_f64();
    println!(
        "flood: {FLOOD_CONNECTIONS} connections, {answered} sign-ins answered in {seconds:.0} s ({:.0}/s: 401 after a full Argon2id verification, or 503 `overloaded` at once when the hashing queue is full); resident memory {:.1} MB before, {:.1} MB during",
        answered as f64 / seconds,
        rss_before as f64 / 1024.0,
        rss_during as f64 / 1024.0
    );
    drop(echo);
    drop(strongroom);
    let _ = Duration::ZERO;
    Ok(())
}
