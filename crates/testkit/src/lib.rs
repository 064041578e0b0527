//! Test kit: a real strongroom server on port 0 against a fresh database (a temporary SQLite
//! file, or a PostgreSQL database created for the server and dropped after it), a client that
//! trusts the server's development CA, a clock the test moves by hand, and capture of every log
//! line so tests can assert that secrets never reach one.
//!
//! PostgreSQL: `STRONGROOM_TEST_POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`)
//! names a server where databases may be created. When it does not answer, PostgreSQL tests print
//! that they were skipped, except under `CI=true`, where they fail.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test support code")]

pub mod bao;
pub mod gateway;

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use strongroom::Application;
use strongroom::config::{Config, Overrides};
use strongroom_types::{Clock, ManualClock, OsEntropy, SystemClock};

/// Which database a test server uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A temporary SQLite file.
    Sqlite,
    /// A fresh PostgreSQL database.
    Postgres,
}

/// The default admin URL of the test PostgreSQL.
pub fn postgres_admin_url() -> String {
    std::env::var("STRONGROOM_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// The Python that has the independent peers installed (`STRONGROOM_TEST_PYTHON`, set by
/// `scripts/test`), or `None` (skip, said on standard error) outside CI; under `CI=true` its
/// absence fails the test.
pub fn test_python() -> Option<String> {
    match std::env::var("STRONGROOM_TEST_PYTHON") {
        Ok(python) => Some(python),
        Err(_) => {
            assert!(!ci(), "STRONGROOM_TEST_PYTHON is required under CI=true");
            eprintln!("SKIPPED: STRONGROOM_TEST_PYTHON not set (run scripts/test); independent checks skipped");
            None
        }
    }
}

/// A headless browser for page tests: `(node, the playwright-core node_modules folder,
/// chromium)` from `STRONGROOM_TEST_NODE_MODULES` and `STRONGROOM_TEST_CHROMIUM` (set by
/// `scripts/test`), or `None` (skip, said on standard error) outside CI; under `CI=true` their
/// absence fails the test.
pub fn test_browser() -> Option<(String, String, String)> {
    let modules = std::env::var("STRONGROOM_TEST_NODE_MODULES").ok().filter(|m| std::path::Path::new(m).is_dir());
    let chromium = std::env::var("STRONGROOM_TEST_CHROMIUM").ok().filter(|c| std::path::Path::new(c).exists());
    match (modules, chromium) {
        (Some(modules), Some(chromium)) => Some(("node".to_owned(), modules, chromium)),
        _ => {
            assert!(!ci(), "STRONGROOM_TEST_NODE_MODULES and STRONGROOM_TEST_CHROMIUM are required under CI=true");
            eprintln!("SKIPPED: no browser (run scripts/test, which installs chromium and playwright-core)");
            None
        }
    }
}

/// A PostgreSQL database that exists for one test server and is dropped with it.
#[derive(Debug)]
pub struct PgDatabase {
    /// Its URL.
    pub url: String,
    name: String,
}

impl PgDatabase {
    /// Creates a fresh database, or `None` (skip) when PostgreSQL does not answer outside CI.
    pub async fn create() -> Option<Self> {
        let admin_url = postgres_admin_url();
        let settings = strongroom_store::PoolSettings {
            max_connections: Some(1),
            acquire_timeout: std::time::Duration::from_secs(3),
        };
        let admin = match strongroom_store::Store::connect(&admin_url, settings).await {
            Ok(admin) => admin,
            Err(err) => {
                assert!(!ci(), "PostgreSQL is required under CI=true but {admin_url} does not answer: {err}");
                eprintln!("SKIPPED: PostgreSQL at {admin_url} does not answer ({err}); PostgreSQL tests skipped");
                return None;
            }
        };
        let suffix = strongroom_domain::merchants::MerchantId::generate(&OsEntropy).as_str()[4..].to_owned();
        let name = format!("strongroom_test_{suffix}");
        admin.execute_admin(&format!("CREATE DATABASE {name}")).await.expect("create test database");
        admin.close().await;
        let (base, _) = admin_url.rsplit_once('/').expect("postgres URL with a database name");
        Some(Self { url: format!("{base}/{name}"), name })
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop runs outside async context guarantees: use a private runtime on a plain thread.
        let joined = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
                return;
            };
            runtime.block_on(async move {
                let settings = strongroom_store::PoolSettings { max_connections: Some(1), ..Default::default() };
                if let Ok(admin) = strongroom_store::Store::connect(&postgres_admin_url(), settings).await {
                    let _ = admin.execute_admin(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await;
                    admin.close().await;
                }
            });
        })
        .join();
        drop(joined);
    }
}

/// Every log line of this test process (JSON lines), for canary assertions.
pub fn captured_logs() -> String {
    let buffer = log_buffer().lock().map(|b| b.clone()).unwrap_or_default();
    String::from_utf8_lossy(&buffer).into_owned()
}

fn log_buffer() -> &'static Arc<Mutex<Vec<u8>>> {
    static BUFFER: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    BUFFER.get_or_init(|| Arc::new(Mutex::new(Vec::new())))
}

#[derive(Clone)]
struct CaptureWriter;

impl Write for CaptureWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut buffer) = log_buffer().lock() {
            buffer.extend_from_slice(buf);
        }
        if std::env::var_os("STRONGROOM_TEST_LOG").is_some() {
            let _ = std::io::stderr().write_all(buf);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Installs the capturing subscriber once per test process (JSON lines, debug level for ours).
pub fn capture_logs() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let _ = tracing_subscriber::fmt()
            .json()
            .with_current_span(true)
            .with_env_filter("debug,sqlx=info,hyper=info,h2=info,rustls=info,tower=info,reqwest=info")
            .with_writer(|| CaptureWriter)
            .try_init();
    });
}

/// A running strongroom for one test.
#[derive(Debug)]
pub struct TestServer {
    /// `https://127.0.0.1:PORT`
    pub base_url: String,
    /// Trusts the server's development CA.
    pub client: reqwest::Client,
    /// The bootstrap key (every scope).
    pub bootstrap_key: String,
    /// The default merchant.
    pub merchant_id: String,
    /// The clock the server reads; tests move it.
    pub clock: Arc<ManualClock>,
    /// The configuration the server runs with.
    pub config: Config,
    /// PEM of the development CA.
    pub ca_pem: Vec<u8>,
    /// Which database.
    pub backend: Backend,
    app: Option<Application>,
    pg: Option<PgDatabase>,
    dir: tempfile::TempDir,
}

impl TestServer {
    /// Moves the clock forward to the start of the next `window` (a multiple of it since the
    /// epoch). Detection counts in fixed windows aligned so; a test whose sightings span clock
    /// time starts here, or they may fall into two windows and never reach a threshold.
    pub fn advance_to_window_start(&self, window: Duration) {
        let window = i64::try_from(window.as_millis()).unwrap();
        let into = self.clock.now().unix_millis().rem_euclid(window);
        self.clock.advance(Duration::from_millis(u64::try_from(window - into).unwrap()));
    }

    /// A server with default settings, or `None` when the backend is unavailable (outside CI).
    pub async fn spawn(backend: Backend) -> Option<Self> {
        Self::spawn_with(backend, |_| {}).await
    }

    /// A server whose configuration `customize` may change first.
    pub async fn spawn_with(backend: Backend, customize: impl FnOnce(&mut Config)) -> Option<Self> {
        capture_logs();
        let dir = tempfile::tempdir().expect("temp dir");
        let pg = match backend {
            Backend::Sqlite => None,
            Backend::Postgres => Some(PgDatabase::create().await?),
        };
        let overrides = Overrides {
            data_dir: Some(dir.path().join("data")),
            database_url: pg.as_ref().map(|db| db.url.clone()),
            ..Default::default()
        };
        let mut config = strongroom::config::load(&overrides, Vec::new()).expect("test config");
        config.server.listen = "127.0.0.1:0".parse().expect("addr");
        config.server.shutdown_grace = std::time::Duration::from_secs(5);
        // Every request logged: the log tests and the canary tests read every line.
        config.access_log = strongroom::config::AccessLogConfig::All;
        // Webhook receivers in the tests listen on loopback (the SSRF tests turn this off).
        config.outbound.allow_loopback = true;
        customize(&mut config);
        let clock = Arc::new(ManualClock::new(SystemClock.now()));
        let app = Application::build(&config, clock.clone(), Arc::new(OsEntropy)).await.expect("server starts");
        let boot = app.bootstrapped.as_ref().expect("a fresh deployment bootstraps");
        let bootstrap_key = boot.api_key.expose().clone();
        let merchant_id = boot.merchant.id.to_string();
        let ca_pem = app.dev_ca.as_ref().map(|ca| std::fs::read(ca).expect("ca.pem")).unwrap_or_default();
        let scheme = if ca_pem.is_empty() { "http" } else { "https" };
        let base_url = format!("{scheme}://{}", app.api_addr());
        let client = client_trusting(&ca_pem);
        Some(Self {
            base_url,
            client,
            bootstrap_key,
            merchant_id,
            clock,
            config,
            ca_pem,
            backend,
            app: Some(app),
            pg,
            dir,
        })
    }

    /// The running application.
    pub fn app(&self) -> &Application {
        self.app.as_ref().expect("running")
    }

    /// `base_url + path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// A request with the bootstrap key.
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.request_as(&self.bootstrap_key, method, path)
    }

    /// A request with the given key.
    pub fn request_as(&self, key: &str, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.client.request(method, self.url(path)).bearer_auth(key)
    }

    /// `GET path` with the bootstrap key, answered with JSON.
    pub async fn get_json(&self, path: &str) -> serde_json::Value {
        let response = self.request(reqwest::Method::GET, path).send().await.expect("request");
        response.json().await.expect("a JSON answer")
    }

    /// `POST path` with `key` and a JSON body, answered with JSON.
    pub async fn post_json_as(&self, key: &str, path: &str, body: &serde_json::Value) -> serde_json::Value {
        let response = self.request_as(key, reqwest::Method::POST, path).json(body).send().await.expect("request");
        response.json().await.expect("a JSON answer")
    }

    /// `method path` with `key` (and a JSON body): the status and the answer as JSON (a body
    /// that is not JSON comes back as a JSON string).
    pub async fn call(
        &self,
        key: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let mut request = self.request_as(key, method, path);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.expect("request");
        let status = response.status().as_u16();
        let text = response.text().await.expect("an answer");
        (status, serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)))
    }

    /// Registers a customer with `email` and `password`, verifies the address and signs them in:
    /// `(cus_…, session token)`.
    pub async fn signed_in_customer(&self, email: &str, password: &str) -> (String, String) {
        let body = serde_json::json!({"email": email, "password": password});
        let (status, body) =
            self.call(&self.bootstrap_key, reqwest::Method::POST, "/v1/identity/customers", Some(&body)).await;
        assert_eq!(status, 202, "{body}");
        let customer = body["customer"].as_str().expect("a customer id").to_owned();
        self.verify_customer_email(email).await;
        let login = serde_json::json!({"email": email, "password": password, "client": {"ip": "198.51.100.7"}});
        let (status, body) =
            self.call(&self.bootstrap_key, reqwest::Method::POST, "/v1/identity/login", Some(&login)).await;
        assert_eq!(status, 200, "{body}");
        (customer, body["session"]["token"].as_str().expect("a session token").to_owned())
    }

    /// Rows of a read-only query with one text parameter on the server's database (SQLite opened
    /// read-only beside the running server, or the PostgreSQL database), as `T`.
    pub async fn query_rows<T>(&self, sql: &str, param: &str) -> Vec<T>
    where
        T: Send
            + Unpin
            + for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow>
            + for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow>,
    {
        match self.backend {
            Backend::Sqlite => {
                let path = self.data_dir().join("strongroom.db");
                let pool =
                    sqlx::SqlitePool::connect(&format!("sqlite://{}?mode=ro", path.display())).await.expect("open");
                let rows = sqlx::query_as(sql).bind(param).fetch_all(&pool).await.expect("query");
                pool.close().await;
                rows
            }
            Backend::Postgres => {
                let url = self.config.database_url.as_ref().expect("a database url").expose().clone();
                let pool = sqlx::PgPool::connect(&url).await.expect("connect");
                let rows = sqlx::query_as(sql).bind(param).fetch_all(&pool).await.expect("query");
                pool.close().await;
                rows
            }
        }
    }

    /// Creates a key through the API and returns `(id, secret)`.
    pub async fn create_key(&self, name: &str, scopes: &[&str]) -> (String, String) {
        let response = self
            .request(reqwest::Method::POST, "/v1/api-keys")
            .json(&serde_json::json!({ "name": name, "scopes": scopes }))
            .send()
            .await
            .expect("create key");
        assert_eq!(response.status(), 201, "create key");
        let body: serde_json::Value = response.json().await.expect("json");
        (body["id"].as_str().expect("id").to_owned(), body["secret"].as_str().expect("secret").to_owned())
    }

    /// Verifies a customer's address as the customer would: reads the address-check mail from the
    /// development mailbox and posts its token (waits up to 10 s for the mail).
    pub async fn verify_customer_email(&self, email: &str) {
        let dir = self.data_dir().join("mail");
        for _ in 0..100 {
            let mails = std::fs::read_dir(&dir)
                .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect::<Vec<_>>())
                .unwrap_or_default();
            for path in mails.iter().filter(|p| p.to_string_lossy().ends_with("-verify_email.eml")) {
                let text = std::fs::read_to_string(path).unwrap_or_default().replace("=\r\n", "").replace("=3D", "=");
                if !text.contains(&format!("To: {email}")) {
                    continue;
                }
                let start = text.find("#token=evt_").expect("a verification link") + "#token=".len();
                let token: String =
                    text[start..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                let response = self
                    .request(reqwest::Method::POST, "/v1/identity/verify-email")
                    .json(&serde_json::json!({ "token": token }))
                    .send()
                    .await
                    .expect("verify email");
                assert_eq!(response.status(), 200, "verify email");
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        panic!("no verification mail for {email}");
    }

    /// The data directory.
    pub fn data_dir(&self) -> std::path::PathBuf {
        self.dir.path().join("data")
    }

    /// Stops the server (graceful), keeping the data directory and database.
    pub async fn stop(&mut self) {
        if let Some(app) = self.app.take() {
            app.shutdown().await;
        }
    }

    /// Starts again on the same data directory and database (a new port).
    pub async fn restart(&mut self) -> Option<strongroom_domain::bootstrap::Bootstrapped> {
        self.stop().await;
        let app = Application::build(&self.config, self.clock.clone(), Arc::new(OsEntropy)).await.expect("restart");
        self.base_url = format!("{}://{}", if self.ca_pem.is_empty() { "http" } else { "https" }, app.api_addr());
        let mut app = app;
        let boot = app.bootstrapped.take();
        self.app = Some(app);
        boot
    }

    /// Stops the server and drops its database.
    pub async fn shutdown(mut self) {
        self.stop().await;
        drop(self.pg.take());
    }
}

/// A client that trusts only the given CA (or plain HTTP when empty).
pub fn client_trusting(ca_pem: &[u8]) -> reqwest::Client {
    let mut builder = reqwest::Client::builder().tls_built_in_root_certs(false).use_rustls_tls();
    if !ca_pem.is_empty() {
        builder = builder.add_root_certificate(reqwest::Certificate::from_pem(ca_pem).expect("ca pem"));
    }
    builder.build().expect("client")
}

/// Declares each listed `async fn name(backend: Backend)` as a test on SQLite and one on PostgreSQL.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::Backend::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::Backend::Postgres).await
                }
            )*
        }
    };
}

/// Builds a small MaxMind-format database with `mmdb-writer` (tools/requirements-test.txt):
/// 203.0.113.0/24 in Berlin, 192.0.2.0/24 in Potsdam (27 km away), 198.51.100.0/24 in New York.
pub fn geoip_database(python: &str, path: &std::path::Path) {
    let script = r#"
import sys
from netaddr import IPSet
from mmdb_writer import MMDBWriter
w = MMDBWriter(ip_version=6, database_type="GeoLite2-City", languages=["en"], description="strongroom test", ipv4_compatible=True)
for network, lat, lon in [("203.0.113.0/24", 52.52, 13.405), ("192.0.2.0/24", 52.3906, 13.0645), ("198.51.100.0/24", 40.7128, -74.006)]:
    w.insert_network(IPSet([network]), {"location": {"latitude": lat, "longitude": lon, "accuracy_radius": 20}})
w.to_db_file(sys.argv[1])
"#;
    let output = std::process::Command::new(python).args(["-c", script]).arg(path).output().unwrap();
    assert!(output.status.success(), "mmdb-writer: {}", String::from_utf8_lossy(&output.stderr));
}
