//! `strongroom-bench forward`: the forward proxy's overhead. The bare axum echo (`bench-echo`) on
//! HTTPS stands for the payment gateway; each round measures a direct call to it (`POST /echo`
//! with a card body) and the same call through strongroom (`POST /v1/forward` whose template
//! fills in the card from a token), alternated, with the same connections. strongroom's own
//! outbound client keeps its connections to the gateway alive, as it would in production. The
//! figure that matters is the difference of the p50s (target: at most 2 ms). SQLite, or a fresh
//! PostgreSQL database with `--database-url`.

use std::sync::Arc;

use anyhow::{Context, bail};
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;

use crate::{
    Load, Measurement, Options, Target, Transport, connect, measure, start_echo, start_strongroom, tls_connector,
};

async fn post(target: &Target, path: &str, body: String) -> anyhow::Result<(http::StatusCode, bytes::Bytes)> {
    let io = connect(target).await?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake::<_, http_body_util::Full<bytes::Bytes>>(TokioIo::new(io)).await?;
    tokio::spawn(conn);
    let mut request = http::Request::post(path)
        .header(http::header::HOST, "localhost")
        .header(http::header::CONTENT_TYPE, "application/json");
    if let Some(auth) = &target.authorization {
        request = request.header(http::header::AUTHORIZATION, auth);
    }
    let response = sender.send_request(request.body(http_body_util::Full::new(bytes::Bytes::from(body)))?).await?;
    let status = response.status();
    Ok((status, response.into_body().collect().await?.to_bytes()))
}

fn row(name: &str, m: &Measurement) {
    println!(
        "| {name} | {:.0} | {:.2} | {:.2} | {:.1} | {} |",
        m.requests_per_sec, m.p50_ms, m.p99_ms, m.cpu_us_per_request, m.failed
    );
}

/// Runs the forward benchmark.
pub async fn run(options: Options, database_url: Option<String>) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let data_dir = dir.path().join("strongroom-data");
    let mut env = Vec::new();
    let mut cleanup = None;
    if let Some(admin_url) = &database_url {
        let database = crate::BenchDatabase::create(admin_url, "strongroom_bench_forward").await?;
        env.push(("STRONGROOM_DATABASE_URL", database.url.clone()));
        cleanup = Some(database);
    }
    let backend = if database_url.is_some() { "PostgreSQL" } else { "SQLite" };
    println!(
        "strongroom-bench forward: {backend}, TLS both ways, {} connections, {}s per target after {}s warm-up, {} rounds",
        options.connections,
        options.duration.as_secs(),
        options.warmup.as_secs(),
        options.rounds
    );
    // A first start makes the data directory and its development CA and certificate, which the
    // echo (the "gateway") then serves; the second start trusts that CA for outbound calls.
    let (first, key) = start_strongroom(&options, &data_dir, Transport::Tls, &env)?;
    let key = key.context("no bootstrap key was printed")?;
    drop(first);
    let echo = start_echo(&options, Some((&data_dir.join("tls/cert.pem"), &data_dir.join("tls/key.pem"))))?;
    // A file, not variables: a `STRONGROOM_…_FILE` variable names a file holding the value.
    let config = dir.path().join("forward.toml");
    std::fs::write(
        &config,
        format!(
            "[outbound]\nallow_loopback = true\nca_file = {:?}\n\n[forward]\nallowed_hosts = [\"localhost:{}\"]\n",
            data_dir.join("tls/ca.pem").display().to_string(),
            echo.addr.port()
        ),
    )?;
    env.push(("STRONGROOM_CONFIG", config.display().to_string()));
    let (strongroom, _) = start_strongroom(&options, &data_dir, Transport::Tls, &env)?;
    let connector = Some(tls_connector(&data_dir.join("tls/ca.pem"))?);
    let ours = Target {
        addr: strongroom.addr,
        tls: connector.clone(),
        path: "/v1/forward",
        authorization: Some(format!("Bearer {key}")),
        load: Load::Get,
    };
    let card = r#"{"type":"card","value":{"number":"4242424242424242","exp_month":12,"exp_year":2031,"holder_name":"Bench O'Mark"}}"#;
    let (status, body) = post(&ours, "/v1/tokens", card.to_owned()).await?;
    if !status.is_success() {
        bail!("tokenizing answered {status}: {}", String::from_utf8_lossy(&body));
    }
    let token: serde_json::Value = serde_json::from_slice(&body)?;
    let token = token["id"].as_str().context("no token id")?.to_owned();
    let template = format!(
        r#"{{"type":"card","value":{{"number":"{{{{{token}:number}}}}","exp_month":{{{{{token}:exp_month}}}},"exp_year":{{{{{token}:exp_year}}}},"holder_name":"{{{{{token}:name}}}}"}}}}"#
    );
    let forward = serde_json::json!({
        "destination": format!("https://localhost:{}/echo", echo.addr.port()),
        "headers": {"content-type": "application/json", "authorization": "Bearer sk_test_bench"},
        "body": template,
    })
    .to_string();
    let (status, body) = post(&ours, "/v1/forward", forward.clone()).await?;
    let answer: serde_json::Value = serde_json::from_slice(&body)?;
    if !status.is_success() || answer["status"] != 200 {
        bail!("a forward answered {status}: {}", String::from_utf8_lossy(&body));
    }
    let through = Target { load: Load::Forward(Arc::new(forward)), ..ours };
    let direct =
        Target { addr: echo.addr, tls: connector.clone(), path: "/echo", authorization: None, load: Load::EchoCard };

    println!();
    println!("| target | req/s | p50 ms | p99 ms | server CPU µs/request | failed |");
    println!("|---|---|---|---|---|---|");
    let mut rounds = Vec::new();
    for round in 0..options.rounds {
        let (d, f) = if round % 2 == 0 {
            let d = measure(&options, &direct, &echo).await?;
            (d, measure(&options, &through, &strongroom).await?)
        } else {
            let f = measure(&options, &through, &strongroom).await?;
            (measure(&options, &direct, &echo).await?, f)
        };
        rounds.push((f.p50_ms - d.p50_ms, d, f));
    }
    let list: Vec<String> = rounds.iter().map(|(o, ..)| format!("{o:.2}")).collect();
    rounds.sort_by(|a, b| a.0.total_cmp(&b.0));
    let sorted: Vec<String> = rounds.iter().map(|(o, ..)| format!("{o:.2}")).collect();
    let (overhead, d, f) = rounds.swap_remove(rounds.len() / 2);
    row("direct: the gateway (axum echo, HTTPS) called with the card", &d);
    row("through strongroom: POST /v1/forward, the card filled in from a token", &f);
    println!(
        "| p50 overhead of the median round: {overhead:.2} ms (p99 {:.2} ms); p50 overheads by round {}, sorted {} |  |  |  |  |  |",
        f.p99_ms - d.p99_ms,
        list.join(", "),
        sorted.join(", ")
    );
    drop(strongroom);
    if let Some(database) = cleanup {
        database.drop_now().await?;
    }
    Ok(())
}
