//! `strongroom-bench detection`: what intrusion detection costs an authenticated request.
//! Two strongroom servers over TLS on SQLite, one with `[detection]` on (the default) holding
//! `--decisions` blocks and suspensions in force (made through the API first, so every node's
//! book is as large as an attack leaves it), one with detection off, and the bare axum baseline,
//! alternated for several rounds; the round with the median on/off ratio is shown.
//! The request is `GET /v1/merchant` with an API key: every one checks whether its key is
//! suspended, whether its client is blocked everywhere, and (on a 404 or 403) counts.

use anyhow::Context;

use crate::identity_bench::post;

use crate::{Load, Measurement, Options, Target, Transport, measure, start_echo, start_strongroom, tls_connector};

fn row(name: &str, m: &Measurement, ratio: f64) {
    println!(
        "| {name} | {:.0} | {:.2} | {:.2} | {:.1} | {} | {:.3} |",
        m.requests_per_sec, m.p50_ms, m.p99_ms, m.cpu_us_per_request, m.failed, ratio
    );
}

/// Runs the detection benchmark with `decisions` decisions in force on the server with detection.
pub async fn run(options: Options, decisions: usize) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let on_dir = dir.path().join("detection-on");
    let off_dir = dir.path().join("detection-off");
    println!(
        "strongroom-bench detection: SQLite, TLS, {} connections, {}s per target after {}s warm-up, {} rounds, \
         {decisions} decisions in force",
        options.connections,
        options.duration.as_secs(),
        options.warmup.as_secs(),
        options.rounds
    );
    let (on, on_key) = start_strongroom(&options, &on_dir, Transport::Tls, &[])?;
    let off_env = [("STRONGROOM_DETECTION__ENABLED", "false".to_owned())];
    let (off, off_key) = start_strongroom(&options, &off_dir, Transport::Tls, &off_env)?;
    let (on_key, off_key) = (on_key.context("no bootstrap key")?, off_key.context("no bootstrap key")?);
    let echo = start_echo(&options, Some((&on_dir.join("tls/cert.pem"), &on_dir.join("tls/key.pem"))))?;
    let on_tls = Some(tls_connector(&on_dir.join("tls/ca.pem"))?);
    let off_tls = Some(tls_connector(&off_dir.join("tls/ca.pem"))?);
    let with_detection = Target {
        addr: on.addr,
        tls: on_tls.clone(),
        path: "/v1/merchant",
        authorization: Some(format!("Bearer {on_key}")),
        load: Load::Get,
    };
    // Blocks of distinct addresses (10.x.y.z), as a long attack leaves them.
    for n in 0..decisions {
        let address = format!("10.{}.{}.{}", (n >> 16) & 0xff, (n >> 8) & 0xff, n & 0xff);
        let body = serde_json::json!({"scope": {"kind": "ip", "address": address}, "duration_seconds": 86_400});
        post(&with_detection, "/v1/security/decisions", body).await?;
    }
    let without_detection = Target {
        addr: off.addr,
        tls: off_tls,
        path: "/v1/merchant",
        authorization: Some(format!("Bearer {off_key}")),
        load: Load::Get,
    };
    let baseline = Target { addr: echo.addr, tls: on_tls, path: "/v1/merchant", authorization: None, load: Load::Get };

    println!();
    println!("| target | req/s | p50 ms | p99 ms | server CPU µs/request | failed | ratio |");
    println!("|---|---|---|---|---|---|---|");
    let mut rounds = Vec::new();
    for _ in 0..options.rounds {
        let base = measure(&options, &baseline, &echo).await?;
        let measured_on = measure(&options, &with_detection, &on).await?;
        let measured_off = measure(&options, &without_detection, &off).await?;
        rounds.push((measured_on.requests_per_sec / measured_off.requests_per_sec, base, measured_on, measured_off));
    }
    rounds.sort_by(|a, b| a.0.total_cmp(&b.0));
    let ratios: Vec<String> = rounds.iter().map(|r| format!("{:.3}", r.0)).collect();
    let (ratio, base, measured_on, measured_off) = rounds.swap_remove(rounds.len() / 2);
    println!("| on/off ratios of the rounds, sorted: {} |  |  |  |  |  |  |", ratios.join(", "));
    row("axum JSON GET (baseline)", &base, 1.0);
    row(
        "strongroom, detection off: GET /v1/merchant (ratio to baseline)",
        &measured_off,
        measured_off.requests_per_sec / base.requests_per_sec,
    );
    row(
        &format!("strongroom, detection on, {decisions} decisions in force (ratio to detection off)"),
        &measured_on,
        ratio,
    );
    Ok(())
}
