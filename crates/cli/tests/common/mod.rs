//! What the binary's tests share: running `strongroom` on a data directory, reading its banner,
//! stopping it, and a client that trusts its development CA.
#![allow(dead_code, reason = "each test binary uses its own part")]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

pub const BIN: &str = env!("CARGO_BIN_EXE_strongroom");

pub fn strongroom(data_dir: &Path) -> Command {
    let mut command = Command::new(BIN);
    command
        .arg("--data-dir")
        .arg(data_dir)
        .env_remove("STRONGROOM_DATABASE_URL")
        .env_remove("STRONGROOM_CONFIG")
        .env("STRONGROOM_SERVER__LISTEN", "127.0.0.1:0")
        .env("STRONGROOM_API_KEYS__CACHE_TTL", "0s")
        .current_dir(data_dir.parent().unwrap());
    command
}

pub struct Serving {
    pub child: Child,
    pub banner: String,
    pub port: u16,
    pub stderr: std::thread::JoinHandle<String>,
}

/// Starts `serve` and reads standard output until the banner is complete.
pub fn serve(data_dir: &Path) -> Serving {
    serve_command(strongroom(data_dir))
}

/// Starts `serve` with a prepared command (see [`strongroom`]) and reads its banner.
pub fn serve_command(mut command: Command) -> Serving {
    let mut child = command.arg("serve").stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let stderr = std::thread::spawn(move || {
        let mut text = String::new();
        for line in BufReader::new(stderr).lines() {
            text.push_str(&line.unwrap_or_default());
            text.push('\n');
        }
        text
    });
    let mut banner = String::new();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    for line in &mut lines {
        let line = line.unwrap();
        banner.push_str(&line);
        banner.push('\n');
        if line.starts_with("Stop with Ctrl-C") {
            break;
        }
    }
    assert!(banner.contains("is serving"), "serve did not start: {banner}");
    let port = banner
        .lines()
        .find_map(|l| l.trim().strip_prefix("API").map(str::trim))
        .and_then(|url| url.strip_prefix("https://127.0.0.1:"))
        .and_then(|rest| rest.split('/').next())
        .and_then(|p| p.parse().ok())
        .unwrap();
    Serving { child, banner, port, stderr }
}

pub fn terminate(serving: &mut Serving) -> i32 {
    let pid = serving.child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let status = serving.child.wait().unwrap();
    status.code().unwrap_or(-1)
}

pub fn client(data_dir: &Path) -> reqwest::Client {
    let ca = std::fs::read(data_dir.join("tls/ca.pem")).unwrap();
    reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
        .build()
        .unwrap()
}

/// The bootstrap API key a first start prints.
pub fn bootstrap_key(banner: &str) -> String {
    banner.split_whitespace().find(|w| w.starts_with("sr_live_")).unwrap().to_owned()
}
