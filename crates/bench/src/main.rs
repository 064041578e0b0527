//! `strongroom-bench`: starts strongroom (release build) and the bare axum baseline (`bench-echo`)
//! with the same transport, drives each with the same loopback load, and prints requests per
//! second, p50 and p99 for each, the ratio to the baseline, and strongroom's idle memory.
//!
//! Run it with `scripts/bench` (which builds both in release mode first). Timings on a shared
//! machine are noisy: compare the ratio, which is measured in the same run. Never a test.
#![allow(clippy::print_stdout, reason = "a benchmark tool reports on standard output")]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

mod audit_bench;
mod detection_bench;
mod forward_bench;
mod identity_bench;
mod outbox_bench;
mod passwords_bench;
mod payments_bench;
mod vault_bench;
use hdrhistogram::Histogram;
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

#[derive(Debug, Clone)]
struct Options {
    connections: usize,
    duration: Duration,
    warmup: Duration,
    transports: Vec<Transport>,
    bin_dir: PathBuf,
    rounds: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transport {
    Tls,
    Plain,
}

impl Transport {
    fn name(self) -> &'static str {
        match self {
            Transport::Tls => "TLS",
            Transport::Plain => "plain",
        }
    }
}

fn parse_options() -> anyhow::Result<Options> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!(
            "strongroom-bench [--connections 32] [--duration-secs 4] [--warmup-secs 2] [--rounds 5] [--transport tls|plain|both] [--bin-dir DIR]\nstrongroom-bench audit [--entries 1000000]\nstrongroom-bench vault [--database-url postgres://…] [--fill 1000000] [--only tokenize|reveal] [--connections 32] [--rounds 5]\nstrongroom-bench forward [--database-url postgres://…] [--connections 32] [--rounds 5]\nstrongroom-bench payments [--database-url postgres://…] [--clients] [--connections 32] [--rounds 5]\nstrongroom-bench identity [--connections 32] [--rounds 5] [--duration-secs 4]\nstrongroom-bench detection [--decisions 1000] [--connections 32] [--rounds 5]\nstrongroom-bench passwords [--hashes 1000000]"
        );
        std::process::exit(0);
    }
    let exe_dir = std::env::current_exe()?.parent().map(Path::to_path_buf).context("no executable directory")?;
    let transports = match value("--transport").as_deref() {
        None | Some("both") => vec![Transport::Tls, Transport::Plain],
        Some("tls") => vec![Transport::Tls],
        Some("plain") => vec![Transport::Plain],
        Some(other) => bail!("--transport: {other} is not tls, plain or both"),
    };
    Ok(Options {
        connections: value("--connections").map(|v| v.parse()).transpose()?.unwrap_or(32),
        duration: Duration::from_secs(value("--duration-secs").map(|v| v.parse()).transpose()?.unwrap_or(4)),
        warmup: Duration::from_secs(value("--warmup-secs").map(|v| v.parse()).transpose()?.unwrap_or(2)),
        transports,
        bin_dir: value("--bin-dir").map(PathBuf::from).unwrap_or(exe_dir),
        rounds: value("--rounds").map(|v| v.parse()).transpose()?.unwrap_or(5).max(1),
    })
}

/// A server process we started, killed on drop.
struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let _ = self.child.wait();
    }
}

impl Server {
    /// CPU time the process has used (user + system), in clock ticks (1/100 s on Linux).
    fn cpu_ticks(&self) -> Option<u64> {
        process_ticks(self.child.id())
    }

    fn rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.split_whitespace().next()?.parse().ok())
    }
}

/// Starts strongroom and returns it with the bootstrap key (on the first start of `data_dir`).
fn start_strongroom(
    options: &Options,
    data_dir: &Path,
    transport: Transport,
    env: &[(&str, String)],
) -> anyhow::Result<(Server, Option<String>)> {
    let log = std::fs::File::create(data_dir.with_extension(format!("{}.log", transport.name())))?;
    let mut child = Command::new(options.bin_dir.join("strongroom"))
        .arg("--data-dir")
        .arg(data_dir)
        .arg("serve")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .env("STRONGROOM_SERVER__LISTEN", "127.0.0.1:0")
        .env("STRONGROOM_SERVER__TLS", if transport == Transport::Tls { "builtin" } else { "terminated_upstream" })
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .context("cannot start strongroom: run scripts/bench, which builds it")?;
    let mut banner = String::new();
    let stdout = child.stdout.take().context("stdout")?;
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        banner.push_str(&line);
        banner.push('\n');
        if line.starts_with("Stop with Ctrl-C") {
            break;
        }
    }
    let addr = banner
        .lines()
        .find_map(|l| l.trim().strip_prefix("API").map(str::trim))
        .and_then(|url| url.split("://").nth(1))
        .and_then(|rest| rest.split('/').next())
        .and_then(|a| a.parse().ok())
        .with_context(|| format!("no API address in strongroom's banner:\n{banner}"))?;
    let key = banner.split_whitespace().find(|w| w.starts_with("sr_live_")).map(str::to_owned);
    Ok((Server { child, addr }, key))
}

/// A PostgreSQL database made for one benchmark run next to the one `admin_url` names, dropped by
/// [`BenchDatabase::drop_now`].
struct BenchDatabase {
    admin: strongroom_store::Store,
    name: String,
    /// The database's own URL.
    url: String,
    /// The administrative URL it was made from.
    admin_url: String,
}

impl BenchDatabase {
    async fn create(admin_url: &str, prefix: &str) -> anyhow::Result<Self> {
        let name = format!("{prefix}_{}", std::process::id());
        let admin = strongroom_store::Store::connect(admin_url, strongroom_store::PoolSettings::default()).await?;
        admin.execute_admin(&format!("CREATE DATABASE {name}")).await?;
        // The database name is the path's last part; a query (`?host=/run/postgresql` for a
        // Unix socket) is kept as it is.
        let (path, query) = admin_url.split_once('?').map_or((admin_url, ""), |(path, query)| (path, query));
        let (base, _) = path.rsplit_once('/').context("--database-url needs a database name")?;
        let url = if query.is_empty() { format!("{base}/{name}") } else { format!("{base}/{name}?{query}") };
        Ok(Self { admin, name, url, admin_url: admin_url.to_owned() })
    }

    /// What reads the CPU time of the database's server processes.
    async fn cpu(&self) -> anyhow::Result<DatabaseCpu> {
        use sqlx::Connection;
        let conn = sqlx::PgConnection::connect(&self.admin_url).await?;
        Ok(DatabaseCpu { conn: tokio::sync::Mutex::new(conn), database: self.name.clone() })
    }

    async fn drop_now(self) -> anyhow::Result<()> {
        self.admin.execute_admin(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name)).await?;
        Ok(())
    }
}

/// The CPU time of the PostgreSQL server processes serving one database (its backends, found in
/// `pg_stat_activity`, read from `/proc`): what the work costs the database besides strongroom.
/// Only meaningful when PostgreSQL runs on this machine; otherwise nothing is found.
struct DatabaseCpu {
    conn: tokio::sync::Mutex<sqlx::PgConnection>,
    database: String,
}

impl DatabaseCpu {
    /// Each backend's CPU time so far, in clock ticks, by process id.
    async fn ticks(&self) -> std::collections::HashMap<i32, u64> {
        let mut conn = self.conn.lock().await;
        let pids: Vec<i32> =
            sqlx::query_scalar("SELECT pid FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()")
                .bind(&self.database)
                .fetch_all(&mut *conn)
                .await
                .unwrap_or_default();
        pids.into_iter().filter_map(|pid| Some((pid, process_ticks(u32::try_from(pid).ok()?)?))).collect()
    }
}

/// CPU time a process has used (user + system), in clock ticks (1/100 s on Linux).
fn process_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which is in parentheses and may contain spaces).
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

fn start_echo(options: &Options, tls: Option<(&Path, &Path)>) -> anyhow::Result<Server> {
    let mut command = Command::new(options.bin_dir.join("bench-echo"));
    command.args(["--listen", "127.0.0.1:0"]);
    if let Some((cert, key)) = tls {
        command.arg("--cert").arg(cert).arg("--key").arg(key);
    }
    let mut child = command.stdout(Stdio::piped()).spawn().context("cannot start bench-echo")?;
    let stdout = child.stdout.take().context("stdout")?;
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    let addr = line.trim().strip_prefix("listening on ").context("bench-echo did not report its address")?.parse()?;
    Ok(Server { child, addr })
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

#[derive(Clone)]
struct Target {
    addr: SocketAddr,
    tls: Option<tokio_rustls::TlsConnector>,
    path: &'static str,
    authorization: Option<String>,
    load: Load,
}

/// What each request of a run is.
#[derive(Clone)]
enum Load {
    /// `GET path`.
    Get,
    /// `POST path` with a new card to tokenize each time (a fresh, Luhn-valid number).
    TokenizeCard,
    /// `POST path` with a new card of a customer each time: one of [`RETURNING_CUSTOMERS`]
    /// customers in turn (`Returning`, their data keys made in the warm-up), or a customer never
    /// seen before (`New`, so every request also makes a data key).
    TokenizeCardFor(Customers),
    /// `POST /v1/tokens/{id}/reveal` over these tokens in turn.
    Reveal(Arc<Vec<String>>),
    /// `POST path` with a tokenize-sized JSON body (the baseline for POSTs).
    EchoCard,
    /// `POST path` with this body every time (a forward).
    Forward(Arc<String>),
    /// `POST path`: a payment intent confirmed at once, with these card tokens in turn and an
    /// amount that changes with every request.
    Pay(Arc<Vec<String>>),
    /// As [`Load::Pay`], each payment with the customer's `client` (a new address of
    /// 198.18.0.0/15 and a new device every request), so the fraud checks count it per client
    /// and device as well.
    PayFromClient(Arc<Vec<String>>),
    /// `POST path` with a sign-in of a new email with a wrong password, from a new client
    /// address each time (so neither throttle stops the hashing).
    WrongLogin,
}

/// Whose cards a [`Load::TokenizeCardFor`] run stores.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Customers {
    /// A few customers over and over.
    Returning,
    /// A new customer every request.
    New,
}

/// How many customers a returning-customer run cycles through.
const RETURNING_CUSTOMERS: u64 = 100;

static REQUEST_COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// A 16-digit Visa-range number with a valid check digit, different for every `n`.
fn card_number(n: u64) -> String {
    let body = format!("4{:014}", n % 100_000_000_000_000);
    (0..10)
        .map(|check| format!("{body}{check}"))
        .find(|number| strongroom_domain::vault::card::luhn_valid(number))
        .unwrap_or(body)
}

fn card_body(n: u64) -> String {
    format!(
        "{{\"type\":\"card\",\"value\":{{\"number\":\"{}\",\"exp_month\":12,\"exp_year\":2031,\"cvc\":\"123\"}}}}",
        card_number(n)
    )
}

/// [`card_body`] with a customer reference (the request counter makes `cus_new_{n}` unique within
/// a run; a run uses a fresh database).
fn card_body_for(n: u64, customers: Customers) -> String {
    let customer = match customers {
        Customers::Returning => format!("cus_returning_{}", n % RETURNING_CUSTOMERS),
        Customers::New => format!("cus_new_{n}"),
    };
    format!(
        "{{\"type\":\"card\",\"customer\":\"{customer}\",\"value\":{{\"number\":\"{}\",\"exp_month\":12,\"exp_year\":2031,\"cvc\":\"123\"}}}}",
        card_number(n)
    )
}

fn build_request(target: &Target) -> Option<http::Request<http_body_util::Full<bytes::Bytes>>> {
    let n = REQUEST_COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let (method, path, body) = match &target.load {
        Load::Get => (http::Method::GET, target.path.to_owned(), String::new()),
        Load::TokenizeCard | Load::EchoCard => (http::Method::POST, target.path.to_owned(), card_body(n)),
        Load::TokenizeCardFor(customers) => (http::Method::POST, target.path.to_owned(), card_body_for(n, *customers)),
        Load::WrongLogin => (
            http::Method::POST,
            target.path.to_owned(),
            format!(
                r#"{{"email":"flood{n}@example.com","password":"not the right password {n}","client":{{"ip":"10.{}.{}.{}"}}}}"#,
                (n >> 16) & 255,
                (n >> 8) & 255,
                n & 255
            ),
        ),
        Load::Forward(body) => (http::Method::POST, target.path.to_owned(), body.as_str().to_owned()),
        Load::Pay(cards) => {
            let card = cards.get(usize::try_from(n).ok()? % cards.len().max(1))?;
            let body = format!(
                r#"{{"amount":{},"currency":"EUR","payment_method":"{card}","confirm":true}}"#,
                100 + n % 50_000
            );
            (http::Method::POST, target.path.to_owned(), body)
        }
        Load::PayFromClient(cards) => {
            let card = cards.get(usize::try_from(n).ok()? % cards.len().max(1))?;
            let address = n % 131_072;
            let body = format!(
                r#"{{"amount":{},"currency":"EUR","payment_method":"{card}","confirm":true,"client":{{"ip":"198.{}.{}.{}","device":"bench-device-{n}"}}}}"#,
                100 + n % 50_000,
                18 + address / 65_536,
                (address / 256) % 256,
                address % 256
            );
            (http::Method::POST, target.path.to_owned(), body)
        }
        Load::Reveal(ids) => {
            let id = ids.get(usize::try_from(n).ok()? % ids.len().max(1))?;
            (http::Method::POST, format!("/v1/tokens/{id}/reveal"), r#"{"view":"plain","reason":"bench"}"#.to_owned())
        }
    };
    let mut request = http::Request::builder().method(method).uri(path).header(http::header::HOST, "localhost");
    if !body.is_empty() {
        request = request.header(http::header::CONTENT_TYPE, "application/json");
    }
    if let Some(auth) = &target.authorization {
        request = request.header(http::header::AUTHORIZATION, auth);
    }
    request.body(http_body_util::Full::new(bytes::Bytes::from(body))).ok()
}

#[derive(Debug, Default)]
struct Outcome {
    ok: u64,
    failed: u64,
}

async fn connect(target: &Target) -> anyhow::Result<Box<dyn Io>> {
    let tcp = TcpStream::connect(target.addr).await?;
    tcp.set_nodelay(true)?;
    Ok(match &target.tls {
        Some(connector) => {
            let name = rustls_pki_types::ServerName::try_from("localhost")?;
            Box::new(connector.connect(name, tcp).await?)
        }
        None => Box::new(tcp),
    })
}

async fn drive(target: Target, until: Instant, record: bool, histogram: Arc<Mutex<Histogram<u64>>>) -> Outcome {
    let mut outcome = Outcome::default();
    let mut local = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap_or_else(|_| unreachable_histogram());
    while Instant::now() < until {
        let Ok(io) = connect(&target).await else {
            outcome.failed += 1;
            continue;
        };
        let Ok((mut sender, conn)) =
            hyper::client::conn::http1::handshake::<_, http_body_util::Full<bytes::Bytes>>(TokioIo::new(io)).await
        else {
            outcome.failed += 1;
            continue;
        };
        tokio::spawn(conn);
        while Instant::now() < until {
            let Some(request) = build_request(&target) else {
                break;
            };
            let started = Instant::now();
            let response = match sender.send_request(request).await {
                Ok(response) => response,
                Err(_) => {
                    outcome.failed += 1;
                    break;
                }
            };
            let status = response.status();
            let complete = response.into_body().collect().await.is_ok();
            let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
            if status.is_success() && complete {
                outcome.ok += 1;
                if record {
                    let _ = local.record(micros.max(1));
                }
            } else {
                outcome.failed += 1;
            }
        }
    }
    if let Ok(mut shared) = histogram.lock() {
        let _ = shared.add(&local);
    }
    outcome
}

#[expect(clippy::panic, reason = "the bounds above are constants that hdrhistogram accepts")]
fn unreachable_histogram() -> Histogram<u64> {
    panic!("histogram bounds rejected")
}

#[derive(Debug)]
struct Measurement {
    /// Server CPU time per answered request, in microseconds (the load generator excluded).
    cpu_us_per_request: f64,
    /// The database server's CPU time per answered request, in microseconds, when measured.
    db_cpu_us_per_request: Option<f64>,
    requests_per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    failed: u64,
}

async fn measure(options: &Options, target: &Target, server: &Server) -> anyhow::Result<Measurement> {
    measure_with(options, target, server, None).await
}

/// [`measure`], and the database server's CPU time when `database` is given.
async fn measure_with(
    options: &Options,
    target: &Target,
    server: &Server,
    database: Option<&DatabaseCpu>,
) -> anyhow::Result<Measurement> {
    // Warm-up: connections, caches and the allocator settle; nothing is recorded.
    let warm = Arc::new(Mutex::new(Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?));
    let until = Instant::now() + options.warmup;
    let tasks: Vec<_> =
        (0..options.connections).map(|_| tokio::spawn(drive(target.clone(), until, false, warm.clone()))).collect();
    for task in tasks {
        task.await?;
    }
    let histogram = Arc::new(Mutex::new(Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?));
    let db_before = match database {
        Some(database) => Some(database.ticks().await),
        None => None,
    };
    let cpu_before = server.cpu_ticks().unwrap_or(0);
    let started = Instant::now();
    let until = started + options.duration;
    let tasks: Vec<_> =
        (0..options.connections).map(|_| tokio::spawn(drive(target.clone(), until, true, histogram.clone()))).collect();
    let mut total = Outcome::default();
    for task in tasks {
        let outcome = task.await?;
        total.ok += outcome.ok;
        total.failed += outcome.failed;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu_ticks = server.cpu_ticks().unwrap_or(0).saturating_sub(cpu_before);
    // A backend that started during the round counts whole; one that ended is missed.
    let db_ticks = match (database, db_before) {
        (Some(database), Some(before)) => {
            let after = database.ticks().await;
            let used: u64 = after.iter().map(|(pid, t)| t.saturating_sub(before.get(pid).copied().unwrap_or(0))).sum();
            (!after.is_empty()).then_some(used)
        }
        _ => None,
    };
    let histogram = histogram.lock().map_err(|_| anyhow::anyhow!("histogram lock"))?;
    if total.ok == 0 {
        bail!("no successful request against {}", target.addr);
    }
    Ok(Measurement {
        cpu_us_per_request: cpu_ticks as f64 * 10_000.0 / total.ok as f64,
        db_cpu_us_per_request: db_ticks.map(|ticks| ticks as f64 * 10_000.0 / total.ok as f64),
        requests_per_sec: total.ok as f64 / elapsed,
        p50_ms: histogram.value_at_quantile(0.50) as f64 / 1000.0,
        p99_ms: histogram.value_at_quantile(0.99) as f64 / 1000.0,
        failed: total.failed,
    })
}

fn tls_connector(ca_file: &Path) -> anyhow::Result<tokio_rustls::TlsConnector> {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_file_iter(ca_file)? {
        roots.add(cert?)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

fn main() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("vault") {
        let options = parse_options()?;
        let value = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
        return runtime.block_on(vault_bench::run(
            options,
            value("--database-url"),
            value("--fill").map(|v| v.parse()).transpose()?,
            value("--only"),
        ));
    }
    if args.get(1).map(String::as_str) == Some("payments") {
        let options = parse_options()?;
        let value = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
        let clients = args.iter().any(|a| a == "--clients");
        return runtime.block_on(payments_bench::run(options, value("--database-url"), clients));
    }
    if args.get(1).map(String::as_str) == Some("forward") {
        let options = parse_options()?;
        let value = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
        return runtime.block_on(forward_bench::run(options, value("--database-url")));
    }
    if args.get(1).map(String::as_str) == Some("detection") {
        let value = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
        let decisions = value("--decisions").map(|v| v.parse()).transpose()?.unwrap_or(1_000);
        return runtime.block_on(detection_bench::run(parse_options()?, decisions));
    }
    if args.get(1).map(String::as_str) == Some("identity") {
        return runtime.block_on(identity_bench::run(parse_options()?));
    }
    if args.get(1).map(String::as_str) == Some("outbox") {
        let value = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
        let messages = value("--messages").map(|v| v.parse()).transpose()?.unwrap_or(50_000);
        let postgres = Some(
            std::env::var("STRONGROOM_TEST_POSTGRES_URL")
                .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned()),
        );
        return runtime.block_on(outbox_bench::run(messages, postgres));
    }
    if args.get(1).map(String::as_str) == Some("passwords") {
        let value = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
        let hashes = value("--hashes").map(|v| v.parse()).transpose()?.unwrap_or(1_000_000);
        return runtime.block_on(passwords_bench::run(hashes));
    }
    if args.get(1).map(String::as_str) == Some("audit") {
        let value = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
        let entries = value("--entries").map(|v| v.parse()).transpose()?.unwrap_or(1_000_000);
        let postgres = Some(
            std::env::var("STRONGROOM_TEST_POSTGRES_URL")
                .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned()),
        );
        return runtime.block_on(audit_bench::run(audit_bench::AuditOptions { entries, postgres }));
    }
    let options = parse_options()?;
    runtime.block_on(run(options))
}

async fn run(options: Options) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let data_dir = dir.path().join("strongroom-data");
    let date = Command::new("date")
        .arg("-u")
        .arg("+%Y-%m-%d")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "strongroom-bench {date}: {} connections, {}s per target after {}s warm-up, {cores} cores, loopback",
        options.connections,
        options.duration.as_secs(),
        options.warmup.as_secs()
    );
    println!();
    println!("| transport | target | req/s | p50 ms | p99 ms | server CPU µs/request | failed | ratio to baseline |");
    println!("|---|---|---|---|---|---|---|---|");
    let mut key: Option<String> = None;
    let mut idle_rss = None;
    for transport in options.transports.clone() {
        let (strongroom, bootstrap) = start_strongroom(&options, &data_dir, transport, &[])?;
        key = key.or(bootstrap);
        let key = key.clone().context("no bootstrap key was printed")?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        idle_rss = idle_rss.or_else(|| strongroom.rss_kib());
        let tls_files = (data_dir.join("tls/cert.pem"), data_dir.join("tls/key.pem"));
        let echo = match transport {
            Transport::Tls => start_echo(&options, Some((&tls_files.0, &tls_files.1)))?,
            Transport::Plain => start_echo(&options, None)?,
        };
        let connector = match transport {
            Transport::Tls => Some(tls_connector(&data_dir.join("tls/ca.pem"))?),
            Transport::Plain => None,
        };
        let baseline_target = Target {
            addr: echo.addr,
            tls: connector.clone(),
            path: "/v1/merchant",
            authorization: None,
            load: Load::Get,
        };
        let strongroom_target = Target {
            addr: strongroom.addr,
            tls: connector,
            path: "/v1/merchant",
            authorization: Some(format!("Bearer {key}")),
            load: Load::Get,
        };
        // Alternate baseline and strongroom for several rounds and keep the round with the median
        // ratio: on a shared machine the available CPU drifts within a run, and alternating
        // exposes both targets to the same drift.
        let mut rounds = Vec::new();
        for _ in 0..options.rounds {
            let baseline = measure(&options, &baseline_target, &echo).await?;
            let ours = measure(&options, &strongroom_target, &strongroom).await?;
            rounds.push((ours.requests_per_sec / baseline.requests_per_sec, baseline, ours));
        }
        rounds.sort_by(|a, b| a.0.total_cmp(&b.0));
        let ratios: Vec<String> = rounds.iter().map(|(r, _, _)| format!("{r:.2}")).collect();
        let (_, baseline, ours) = rounds.swap_remove(rounds.len() / 2);
        println!("|  | ratios of the {} rounds, sorted: {} |  |  |  |  |  |  |", options.rounds, ratios.join(", "));
        let row = |name: &str, m: &Measurement, ratio: f64| {
            println!(
                "| {} | {name} | {:.0} | {:.2} | {:.2} | {:.1} | {} | {:.2} |",
                transport.name(),
                m.requests_per_sec,
                m.p50_ms,
                m.p99_ms,
                m.cpu_us_per_request,
                m.failed,
                ratio
            );
        };
        row("axum JSON echo (baseline)", &baseline, 1.0);
        row("strongroom GET /v1/merchant (authenticated)", &ours, ours.requests_per_sec / baseline.requests_per_sec);
        if transport == Transport::Tls {
            let loaded = strongroom.rss_kib();
            if let (Some(idle), Some(loaded)) = (idle_rss, loaded) {
                println!(
                    "|  | strongroom resident memory | idle {:.1} MB | after load {:.1} MB |  |  |  |  |",
                    idle as f64 / 1024.0,
                    loaded as f64 / 1024.0
                );
            }
        }
        drop(echo);
        drop(strongroom);
    }
    Ok(())
}
