//! `strongroom-bench audit`: the audit log in-process on SQLite and PostgreSQL — sustained batched
//! appends, awaited appends under 32 concurrent callers, proof latency on a large log, and
//! `audit verify` time.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use hdrhistogram::Histogram;
use strongroom_crypto::signing::SigningKey;
use strongroom_domain::audit::checkpoint::{CheckpointSigner, VerifierKey};
use strongroom_domain::audit::event::{AuditEvent, Outcome};
use strongroom_domain::audit::log::AuditLog;
use strongroom_domain::audit::verify::verify_log;
use strongroom_store::{PoolSettings, Store};
use strongroom_types::{OsEntropy, Secret, SystemClock};

/// Options of the audit benchmark.
#[derive(Debug, Clone)]
pub struct AuditOptions {
    /// Entries in the log used for proofs and verify.
    pub entries: u64,
    /// PostgreSQL admin URL, when PostgreSQL should be measured too.
    pub postgres: Option<String>,
}

fn signer() -> Arc<CheckpointSigner> {
    let key = Arc::new(SigningKey::from_seed(&Secret::new(strongroom_types::entropy::random_array(&OsEntropy))));
    Arc::new(
        CheckpointSigner::new("bench/audit".into(), key).unwrap_or_else(|| unreachable!("constant origin is valid")),
    )
}

fn event(i: u64) -> AuditEvent {
    AuditEvent::system("bench.event", Outcome::Success).on("n", i.to_string())
}

fn ms(micros: u64) -> f64 {
    micros as f64 / 1000.0
}

async fn run_backend(name: &str, store: Store, options: &AuditOptions) -> anyhow::Result<()> {
    store.migrate().await?;
    let signer = signer();
    let key = VerifierKey::parse(&signer.verifier_key()).context("verifier key")?;
    let (log, _task) = AuditLog::open(Arc::new(store.clone()), signer, Arc::new(SystemClock)).await?;

    // Sustained append: 8,192 events in flight at a time, each awaited to its commit; the writer batches.
    let started = Instant::now();
    let mut next = 0;
    while next < options.entries {
        let end = (next + 8192).min(options.entries);
        let mut inflight = tokio::task::JoinSet::new();
        for i in next..end {
            let log = log.clone();
            inflight.spawn(async move { log.record(event(i)).await });
        }
        while let Some(done) = inflight.join_next().await {
            done??;
        }
        next = end;
    }
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "| {name} | sustained append, batched | {:.0} events/s | {} events in {elapsed:.1} s |",
        options.entries as f64 / elapsed,
        options.entries
    );

    // Awaited appends from 32 concurrent callers.
    let histogram = Arc::new(std::sync::Mutex::new(Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?));
    let until = Instant::now() + Duration::from_secs(5);
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let (log, histogram) = (log.clone(), histogram.clone());
        tasks.push(tokio::spawn(async move {
            let mut local = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).ok();
            let mut n = 0u64;
            while Instant::now() < until {
                let t = Instant::now();
                if log.record(event(n)).await.is_err() {
                    break;
                }
                if let Some(h) = local.as_mut() {
                    let _ = h.record(u64::try_from(t.elapsed().as_micros()).unwrap_or(u64::MAX).max(1));
                }
                n += 1;
            }
            if let (Some(local), Ok(mut shared)) = (local, histogram.lock()) {
                let _ = shared.add(&local);
            }
            n
        }));
    }
    let mut awaited = 0;
    for task in tasks {
        awaited += task.await?;
    }
    let (p50, p99) = {
        let h = histogram.lock().map_err(|_| anyhow::anyhow!("lock"))?;
        (h.value_at_quantile(0.5), h.value_at_quantile(0.99))
    };
    println!(
        "| {name} | awaited append, 32 concurrent callers | p50 {:.2} ms, p99 {:.2} ms | {:.0} events/s |",
        ms(p50),
        ms(p99),
        awaited as f64 / 5.0
    );

    // Proofs on the log as it is now.
    let size = log.size().await?;
    let mut inclusion = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut consistency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..1000 {
        let index = next() % size;
        let t = Instant::now();
        log.inclusion_proof(index, size).await?;
        inclusion.record(u64::try_from(t.elapsed().as_micros()).unwrap_or(u64::MAX).max(1))?;
        let first = 1 + next() % size;
        let t = Instant::now();
        log.consistency_proof(first, size).await?;
        consistency.record(u64::try_from(t.elapsed().as_micros()).unwrap_or(u64::MAX).max(1))?;
    }
    println!(
        "| {name} | inclusion proof, log of {size} | p50 {:.2} ms, p99 {:.2} ms | 1000 random indices |",
        ms(inclusion.value_at_quantile(0.5)),
        ms(inclusion.value_at_quantile(0.99))
    );
    println!(
        "| {name} | consistency proof, log of {size} | p50 {:.2} ms, p99 {:.2} ms | 1000 random sizes |",
        ms(consistency.value_at_quantile(0.5)),
        ms(consistency.value_at_quantile(0.99))
    );

    log.checkpoint().await?;
    log.close().await;
    let t = Instant::now();
    let report = verify_log(&store, &key, |_, _| {}).await?;
    anyhow::ensure!(report.finding.is_none(), "the benchmark log does not verify: {:?}", report.finding);
    println!(
        "| {name} | audit verify | {:.1} s | {} entries, {} checkpoints |",
        t.elapsed().as_secs_f64(),
        report.entries,
        report.checkpoints
    );
    store.close().await;
    Ok(())
}

/// Runs the audit benchmark and prints a Markdown table.
pub async fn run(options: AuditOptions) -> anyhow::Result<()> {
    println!("audit log benchmark: {} entries for proofs and verify", options.entries);
    println!();
    println!("| backend | what | figure | notes |");
    println!("|---|---|---|---|");
    let dir = tempfile::tempdir()?;
    let url = format!("sqlite://{}", dir.path().join("audit.db").display());
    run_backend("SQLite", Store::connect(&url, PoolSettings::default()).await?, &options).await?;
    if let Some(admin_url) = &options.postgres {
        let settings = PoolSettings { max_connections: Some(1), ..Default::default() };
        match Store::connect(admin_url, settings).await {
            Ok(admin) => {
                let name = format!("strongroom_bench_{}", std::process::id());
                admin.execute_admin(&format!("DROP DATABASE IF EXISTS {name}")).await?;
                admin.execute_admin(&format!("CREATE DATABASE {name}")).await?;
                let (base, _) = admin_url.rsplit_once('/').context("postgres URL")?;
                let store = Store::connect(&format!("{base}/{name}"), PoolSettings::default()).await?;
                let result = run_backend("PostgreSQL", store, &options).await;
                admin.execute_admin(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await?;
                admin.close().await;
                result?;
            }
            Err(err) => println!("| PostgreSQL | skipped | {err} | |"),
        }
    }
    Ok(())
}
