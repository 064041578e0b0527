//! `strongroom-bench payments`: paying with a card token, as a checkout does: one
//! `POST /v1/payment_intents` with `"confirm": true` per payment (create, fraud checks when
//! configured, the sandbox gateway's authorisation and capture, the audit entries and the outbox
//! events), each payment with another of 10,000 distinct cards, against the bare axum echo of a
//! body of the same size in the same rounds. SQLite, or a fresh PostgreSQL database with
//! `--database-url`. With `--clients` each round also measures the same payments carrying the
//! customer's `client` (a new address and device each), which the fraud checks count per client
//! and device (distinct cards, small amounts, IIN clusters, identical amounts).

use std::sync::Arc;

use anyhow::Context;

use crate::{Load, Measurement, Options, Target, Transport, measure, start_echo, start_strongroom, tls_connector};

/// Distinct cards the payments cycle through.
const CARDS: u64 = 10_000;

fn row(name: &str, m: &Measurement, ratio: f64) {
    let database = m.db_cpu_us_per_request.map_or_else(|| "–".to_owned(), |us| format!("{us:.1}"));
    println!(
        "| {name} | {:.0} | {:.2} | {:.2} | {:.1} | {database} | {} | {:.3} |",
        m.requests_per_sec, m.p50_ms, m.p99_ms, m.cpu_us_per_request, m.failed, ratio
    );
}

/// Runs the payments benchmark.
pub async fn run(options: Options, database_url: Option<String>, clients: bool) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let data_dir = dir.path().join("strongroom-data");
    let mut env = Vec::new();
    let mut cleanup = None;
    let mut database_cpu = None;
    if let Some(admin_url) = &database_url {
        let database = crate::BenchDatabase::create(admin_url, "strongroom_bench_payments").await?;
        env.push(("STRONGROOM_DATABASE_URL", database.url.clone()));
        database_cpu = Some(database.cpu().await?);
        cleanup = Some(database);
    }
    let backend = if database_url.is_some() { "PostgreSQL" } else { "SQLite" };
    println!(
        "strongroom-bench payments: {backend}, TLS, {} connections, {}s per target after {}s warm-up, {} rounds",
        options.connections,
        options.duration.as_secs(),
        options.warmup.as_secs(),
        options.rounds
    );
    let (strongroom, key) = start_strongroom(&options, &data_dir, Transport::Tls, &env)?;
    let key = key.context("no bootstrap key was printed")?;
    let echo = start_echo(&options, Some((&data_dir.join("tls/cert.pem"), &data_dir.join("tls/key.pem"))))?;
    let connector = Some(tls_connector(&data_dir.join("tls/ca.pem"))?);
    let ours = |load: Load, path: &'static str| Target {
        addr: strongroom.addr,
        tls: connector.clone(),
        path,
        authorization: Some(format!("Bearer {key}")),
        load,
    };
    let cards = Arc::new(crate::vault_bench::fill(&ours(Load::Get, "/v1/tokens"), 7_000_000_000, CARDS, false).await?);
    let pay = ours(Load::Pay(cards.clone()), "/v1/payment_intents");
    let pay_from_client = ours(Load::PayFromClient(cards), "/v1/payment_intents");
    let baseline =
        Target { addr: echo.addr, tls: connector.clone(), path: "/echo", authorization: None, load: Load::EchoCard };

    println!();
    println!(
        "| target | req/s | p50 ms | p99 ms | server CPU µs/request | PostgreSQL CPU µs/request | failed | ratio to \
         baseline |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let mut rounds = Vec::new();
    let mut with_clients = Vec::new();
    for _ in 0..options.rounds {
        let base = measure(&options, &baseline, &echo).await?;
        let measured = crate::measure_with(&options, &pay, &strongroom, database_cpu.as_ref()).await?;
        if clients {
            let from_client =
                crate::measure_with(&options, &pay_from_client, &strongroom, database_cpu.as_ref()).await?;
            with_clients.push((from_client.requests_per_sec / base.requests_per_sec, from_client));
        }
        rounds.push((measured.requests_per_sec / base.requests_per_sec, base, measured));
    }
    let list: Vec<String> = rounds.iter().map(|(r, _, m)| format!("{r:.4} ({:.0}/s)", m.requests_per_sec)).collect();
    println!("| rounds, in order: payments / echo {} |  |  |  |  |  |  |  |", list.join(", "));
    if clients {
        let list: Vec<String> =
            with_clients.iter().map(|(r, m)| format!("{r:.4} ({:.0}/s)", m.requests_per_sec)).collect();
        println!("| rounds, in order: payments with a client / echo {} |  |  |  |  |  |  |  |", list.join(", "));
    }
    rounds.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (ratio, base, measured) = rounds.swap_remove(rounds.len() / 2);
    row("axum JSON echo of a body of the same size (baseline, round of the median)", &base, 1.0);
    row("strongroom: create and confirm a payment intent (sandbox, automatic capture)", &measured, ratio);
    if clients {
        with_clients.sort_by(|a, b| a.0.total_cmp(&b.0));
        let (ratio, measured) = with_clients.swap_remove(with_clients.len() / 2);
        row("the same with the customer's client address and device (median round)", &measured, ratio);
    }
    drop(echo);
    drop(strongroom);
    drop(database_cpu);
    if let Some(database) = cleanup {
        database.drop_now().await?;
    }
    Ok(())
}
