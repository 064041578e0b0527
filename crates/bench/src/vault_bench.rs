//! `strongroom-bench vault`: the vault's figures against the bare axum baseline in the same run,
//! over TLS: tokenizing a new card (`POST /v1/tokens`) and revealing one (`POST
//! /v1/tokens/{id}/reveal`, plain, audited), each alternated with the baseline echoing a body of
//! the same size; and tokenizing for a returning customer against tokenizing for a new customer
//! (every request a customer never seen, so its data key is made too), alternated in the same
//! rounds, with the ratio new / returning of each round. With `--fill N`, it then stores N more card tokens (one customer, so one data
//! key, each) through the batch endpoint, reports resident memory and times `strongroom keys
//! rotate` rewrapping every data key. `--database-url` runs on a fresh PostgreSQL database made
//! next to the one named (dropped afterwards).

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;

use crate::{
    Customers, Load, Measurement, Options, Target, Transport, card_number, connect, measure, start_echo,
    start_strongroom, tls_connector,
};

async fn call(target: &Target, path: &str, body: String) -> anyhow::Result<(http::StatusCode, bytes::Bytes)> {
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

/// Tokenizes `count` cards in batches of 1,000 (each with its own customer when `customers`);
/// returns the ids.
pub(crate) async fn fill(target: &Target, start: u64, count: u64, customers: bool) -> anyhow::Result<Vec<String>> {
    let mut ids = Vec::with_capacity(usize::try_from(count).unwrap_or(0));
    let mut next = start;
    while next < start + count {
        let end = (next + 1000).min(start + count);
        let items: Vec<serde_json::Value> = (next..end)
            .map(|n| {
                let mut item = serde_json::json!({"type": "card", "value": {"number": card_number(n), "exp_month": 12, "exp_year": 2031}});
                if customers {
                    item["customer"] = serde_json::json!(format!("cus_{n}"));
                }
                item
            })
            .collect();
        let (status, body) =
            call(target, "/v1/tokens/batch", serde_json::json!({ "items": items }).to_string()).await?;
        if !status.is_success() {
            bail!("batch answered {status}: {}", String::from_utf8_lossy(&body));
        }
        let parsed: serde_json::Value = serde_json::from_slice(&body)?;
        for item in parsed["data"].as_array().context("batch answer")? {
            ids.push(item["token"]["id"].as_str().context("a batch item failed")?.to_owned());
        }
        next = end;
    }
    Ok(ids)
}

fn row(name: &str, m: &Measurement, ratio: f64) {
    println!(
        "| {name} | {:.0} | {:.2} | {:.2} | {:.1} | {} | {:.3} |",
        m.requests_per_sec, m.p50_ms, m.p99_ms, m.cpu_us_per_request, m.failed, ratio
    );
}

/// The median of `values` (the upper one of an even count).
fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

/// Tokenizing for a returning customer and for a new one, alternated within each round (which goes
/// first alternates too) after the echo baseline.
async fn customers(
    options: &Options,
    ours: impl Fn(Load) -> Target,
    baseline: &Target,
    echo: &crate::Server,
    strongroom: &crate::Server,
) -> anyhow::Result<()> {
    let returning = ours(Load::TokenizeCardFor(Customers::Returning));
    let new = ours(Load::TokenizeCardFor(Customers::New));
    let mut rounds = Vec::new();
    for round in 0..options.rounds {
        let base = measure(options, baseline, echo).await?;
        let (r, n) = if round % 2 == 0 {
            let r = measure(options, &returning, strongroom).await?;
            (r, measure(options, &new, strongroom).await?)
        } else {
            let n = measure(options, &new, strongroom).await?;
            (measure(options, &returning, strongroom).await?, n)
        };
        rounds.push((n.requests_per_sec / r.requests_per_sec, base, r, n));
    }
    let mut new_to_returning: Vec<f64> = rounds.iter().map(|(q, ..)| *q).collect();
    let mut returning_ratio: Vec<f64> =
        rounds.iter().map(|(_, b, r, _)| r.requests_per_sec / b.requests_per_sec).collect();
    let mut new_ratio: Vec<f64> = rounds.iter().map(|(_, b, _, n)| n.requests_per_sec / b.requests_per_sec).collect();
    let mut returning_rps: Vec<f64> = rounds.iter().map(|(_, _, r, _)| r.requests_per_sec).collect();
    let mut new_rps: Vec<f64> = rounds.iter().map(|(.., n)| n.requests_per_sec).collect();
    let list = |values: &[f64]| values.iter().map(|v| format!("{v:.3}")).collect::<Vec<_>>().join(", ");
    println!(
        "| rounds, in order: new / returning {}; returning / echo {}; new / echo {} |  |  |  |  |  |  |",
        list(&new_to_returning),
        list(&returning_ratio),
        list(&new_ratio)
    );
    rounds.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (quotient, base, r, n) = rounds.swap_remove(rounds.len() / 2);
    row("axum JSON echo of the same body (baseline, round of the median new / returning)", &base, 1.0);
    row("strongroom: tokenize a new card for a returning customer", &r, r.requests_per_sec / base.requests_per_sec);
    row("strongroom: tokenize a new card for a new customer", &n, n.requests_per_sec / base.requests_per_sec);
    println!(
        "| medians over the rounds: returning {:.0} req/s, new {:.0} req/s; new / returning {:.3} (that round's {quotient:.3}); returning / echo {:.3}, new / echo {:.3} |  |  |  |  |  |  |",
        median(&mut returning_rps),
        median(&mut new_rps),
        median(&mut new_to_returning),
        median(&mut returning_ratio),
        median(&mut new_ratio)
    );
    Ok(())
}

/// Runs the vault benchmark.
/// `only` names one measurement to run (`tokenize`, `reveal` or `customers`), to profile it alone.
pub async fn run(
    options: Options,
    database_url: Option<String>,
    fill_count: Option<u64>,
    only: Option<String>,
) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let data_dir = dir.path().join("strongroom-data");
    let mut env = vec![("STRONGROOM_VAULT__REVEALS_PER_MINUTE", "4000000000".to_owned())];
    let mut cleanup = None;
    if let Some(admin_url) = &database_url {
        let database = crate::BenchDatabase::create(admin_url, "strongroom_bench").await?;
        env.push(("STRONGROOM_DATABASE_URL", database.url.clone()));
        cleanup = Some(database);
    }
    let backend = if database_url.is_some() { "PostgreSQL" } else { "SQLite" };
    println!(
        "strongroom-bench vault: {backend}, TLS, {} connections, {}s per target after {}s warm-up, {} rounds",
        options.connections,
        options.duration.as_secs(),
        options.warmup.as_secs(),
        options.rounds
    );
    let (strongroom, key) = start_strongroom(&options, &data_dir, Transport::Tls, &env)?;
    let key = key.context("no bootstrap key was printed")?;
    let echo = start_echo(&options, Some((&data_dir.join("tls/cert.pem"), &data_dir.join("tls/key.pem"))))?;
    let connector = Some(tls_connector(&data_dir.join("tls/ca.pem"))?);
    let ours = |load: Load| Target {
        addr: strongroom.addr,
        tls: connector.clone(),
        path: "/v1/tokens",
        authorization: Some(format!("Bearer {key}")),
        load,
    };
    let baseline =
        Target { addr: echo.addr, tls: connector.clone(), path: "/echo", authorization: None, load: Load::EchoCard };
    let reveal_ids = Arc::new(fill(&ours(Load::Get), 9_000_000_000, 1000, false).await?);

    println!();
    println!("| target | req/s | p50 ms | p99 ms | server CPU µs/request | failed | ratio to baseline |");
    println!("|---|---|---|---|---|---|---|");
    for (name, load) in [
        ("tokenize a new card", Load::TokenizeCard),
        ("reveal a card (plain, audited)", Load::Reveal(reveal_ids.clone())),
    ] {
        if only.as_deref().is_some_and(|only| !name.starts_with(only)) {
            continue;
        }
        let target = ours(load);
        let mut rounds = Vec::new();
        for _ in 0..options.rounds {
            let base = measure(&options, &baseline, &echo).await?;
            let measured = measure(&options, &target, &strongroom).await?;
            rounds.push((measured.requests_per_sec / base.requests_per_sec, base, measured));
        }
        rounds.sort_by(|a, b| a.0.total_cmp(&b.0));
        let ratios: Vec<String> = rounds.iter().map(|(r, _, _)| format!("{r:.3}")).collect();
        let (ratio, base, measured) = rounds.swap_remove(rounds.len() / 2);
        println!("| ratios of the rounds, sorted: {} |  |  |  |  |  |  |", ratios.join(", "));
        row("axum JSON echo of the same body (baseline)", &base, 1.0);
        row(&format!("strongroom: {name}"), &measured, ratio);
    }
    if only.as_deref().is_none_or(|only| "customers".starts_with(only) || only == "tokenize") {
        customers(&options, &ours, &baseline, &echo, &strongroom).await?;
    }
    if let Some(count) = fill_count {
        let started = Instant::now();
        fill(&ours(Load::Get), 0, count, true).await?;
        let filled = started.elapsed();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let rss = strongroom.rss_kib().unwrap_or(0);
        println!();
        println!(
            "filled {count} card tokens, one customer (data key) each, in {:.0} s ({:.0} tokens/s); resident memory {:.1} MB",
            filled.as_secs_f64(),
            count as f64 / filled.as_secs_f64(),
            rss as f64 / 1024.0
        );
        let started = Instant::now();
        let mut rotate = Command::new(options.bin_dir.join("strongroom"));
        rotate
            .arg("--data-dir")
            .arg(&data_dir)
            .args(["keys", "rotate"])
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())));
        let output = rotate.output().context("strongroom keys rotate")?;
        if !output.status.success() {
            bail!("keys rotate failed: {}", String::from_utf8_lossy(&output.stderr));
        }
        println!(
            "keys rotate: {} ({:.1} s wall time)",
            String::from_utf8_lossy(&output.stdout).trim().replace('\n', "; "),
            started.elapsed().as_secs_f64()
        );
    }
    drop(echo);
    drop(strongroom);
    if let Some(database) = cleanup {
        database.drop_now().await?;
    }
    Ok(())
}
