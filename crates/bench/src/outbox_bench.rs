//! `strongroom-bench outbox`: webhook deliveries per second from the outbox to a local receiver,
//! in-process on SQLite and PostgreSQL, against a baseline measured in the same run: the same
//! signed POSTs sent straight by the same HTTP client with the same concurrency, no outbox.
//! A round: N events fanned out to one endpoint are written (one transaction per 1,000), then
//! the deliverer claims, sends and records them until none is pending.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use anyhow::Context;
use strongroom_domain::audit::checkpoint::CheckpointSigner;
use strongroom_domain::audit::event::{AuditEvent, Outcome};
use strongroom_domain::audit::log::AuditLog;
use strongroom_domain::keyring::Keyring;
use strongroom_domain::mail::{Mail, MailError, Mailer};
use strongroom_domain::outbox::Outbox;
use strongroom_domain::outbox::deliver::{Deliverer, WebhookRequest, WebhookSender};
use strongroom_domain::webhooks::{DestinationPolicy, WebhookEndpoints};
use strongroom_store::{PoolSettings, Store};
use strongroom_types::{OsEntropy, Secret, SystemClock};

/// No mail in this benchmark.
#[derive(Debug)]
struct NoMail;

#[async_trait::async_trait]
impl Mailer for NoMail {
    async fn send(&self, _mail: &Mail) -> Result<(), MailError> {
        Ok(())
    }
}

#[derive(Debug)]
struct Loopback;

impl DestinationPolicy for Loopback {
    fn check(&self, _url: &str) -> Result<(), String> {
        Ok(())
    }
}

/// A receiver answering 200 to every POST; returns its URL and a counter of requests.
async fn receiver() -> anyhow::Result<(String, Arc<AtomicU64>)> {
    let count = Arc::new(AtomicU64::new(0));
    let counted = count.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |_body: axum::body::Bytes| {
            let counted = counted.clone();
            async move {
                counted.fetch_add(1, Ordering::Relaxed);
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/hook", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((url, count))
}

/// The same signed POSTs, straight from the same client: the baseline.
async fn baseline(sender: Arc<dyn WebhookSender>, url: &str, n: u64, concurrency: usize) -> f64 {
    let url = Secret::new(url.to_owned());
    let secrets = vec![Secret::new(b"bench-secret-bench-secret".to_vec())];
    let body = br#"{"id":"evt_bench","type":"webhook.test","data":{}}"#;
    let started = Instant::now();
    let mut sent = 0;
    while sent < n {
        let batch = (n - sent).min(concurrency as u64);
        let posts = (0..batch).map(|_| {
            sender.send(WebhookRequest { url: &url, event_id: "evt_bench", timestamp: 1, body, secrets: &secrets })
        });
        futures::future::join_all(posts).await;
        sent += batch;
    }
    n as f64 / started.elapsed().as_secs_f64()
}

async fn run_backend(name: &str, store: Store, messages: u64) -> anyhow::Result<()> {
    store.migrate().await?;
    let clock = Arc::new(SystemClock);
    let kms = strongroom_crypto::LocalKeyFile::open_or_create(
        &std::env::temp_dir().join(format!("sr-bench-outbox-{}.key", std::process::id())),
        Arc::new(OsEntropy),
    )?
    .0;
    let keyring = Keyring::load(&store, &kms, clock.as_ref(), &OsEntropy).await?;
    let signer = Arc::new(
        CheckpointSigner::new("bench/outbox".into(), keyring.audit_signing.clone()).context("checkpoint signer")?,
    );
    let (audit, _writer) = AuditLog::open(Arc::new(store.clone()), signer, clock.clone()).await?;
    let outbox = Outbox::new(Arc::new(store.clone()), keyring.outbox_seal.clone(), clock.clone(), Arc::new(OsEntropy));
    let endpoints = Arc::new(WebhookEndpoints::new(
        Arc::new(store.clone()),
        Arc::new(store.clone()),
        outbox.clone(),
        keyring.outbox_seal.clone(),
        Arc::new(Loopback),
        audit.clone(),
        clock.clone(),
        Arc::new(OsEntropy),
    ));
    let merchant = strongroom_domain::merchants::MerchantId::generate(&OsEntropy);
    store
        .execute_admin(&format!(
            "INSERT INTO merchants (id, name, created_at) VALUES ('{}', 'bench', 0)",
            merchant.as_str()
        ))
        .await?;
    let (url, received) = receiver().await?;
    let actor = AuditEvent::system("bench", Outcome::Success).for_merchant(&merchant);
    endpoints
        .create(
            strongroom_domain::modes::Space { merchant: &merchant, mode: strongroom_domain::modes::Mode::Live },
            actor,
            &url,
            &["webhook.test".to_owned()],
            "bench",
        )
        .await?;
    let sender: Arc<dyn WebhookSender> = Arc::new(strongroom_connectors::webhooks::HttpWebhookSender::new(
        strongroom_connectors::outbound::OutboundSettings { allow_loopback: true, ..Default::default() },
    )?);
    let deliverer =
        Deliverer::new(outbox.clone(), endpoints.clone(), Arc::new(NoMail), sender.clone(), None, Arc::new(OsEntropy));

    // Write the events: one transaction per 1,000 messages.
    let written = Instant::now();
    let mut batch = Vec::new();
    for _ in 0..messages {
        batch.extend(
            outbox
                .event_messages(
                    Some(&merchant),
                    strongroom_domain::modes::Mode::Live,
                    "webhook.test",
                    serde_json::json!({}),
                    false,
                )
                .await?,
        );
        if batch.len() >= 1000 {
            outbox.write(std::mem::take(&mut batch)).await?;
        }
    }
    outbox.write(batch).await?;
    let write_rate = messages as f64 / written.elapsed().as_secs_f64();

    let base = baseline(sender.clone(), &url, messages.min(20_000), deliverer.concurrency).await;
    let before = received.load(Ordering::Relaxed);
    let started = Instant::now();
    loop {
        let round = deliverer.round().await?;
        if round.claimed == 0 {
            break;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let delivered = received.load(Ordering::Relaxed) - before;
    let stats = outbox.repo().stats().await?;
    anyhow::ensure!(stats.pending == 0 && delivered == messages, "not everything was delivered");
    let rate = delivered as f64 / elapsed;
    println!("| {name} | {delivered} | {rate:.0} | {base:.0} | {:.2} | {write_rate:.0} |", rate / base);
    audit.close().await;
    store.close().await;
    Ok(())
}

/// Runs the benchmark on SQLite and, when `postgres` answers, PostgreSQL.
pub async fn run(messages: u64, postgres: Option<String>) -> anyhow::Result<()> {
    println!(
        "| backend | deliveries | deliveries/s | baseline POSTs/s (same client, no outbox) | ratio | events written/s |"
    );
    println!("|---|---|---|---|---|---|");
    let dir = tempfile::tempdir()?;
    let url = format!("sqlite://{}", dir.path().join("bench.db").display());
    run_backend("SQLite", Store::connect(&url, PoolSettings::default()).await?, messages).await?;
    if let Some(admin_url) = postgres {
        let admin = Store::connect(&admin_url, PoolSettings::default()).await?;
        let name = format!("sr_bench_outbox_{}", std::process::id());
        admin.execute_admin(&format!("DROP DATABASE IF EXISTS {name}")).await?;
        admin.execute_admin(&format!("CREATE DATABASE {name}")).await?;
        let (base, _) = admin_url.rsplit_once('/').context("postgres URL")?;
        let store = Store::connect(&format!("{base}/{name}"), PoolSettings::default()).await?;
        run_backend("PostgreSQL", store, messages).await?;
        admin.execute_admin(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await?;
        admin.close().await;
    }
    Ok(())
}
