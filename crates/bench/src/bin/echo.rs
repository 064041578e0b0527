//! The baseline: a bare axum JSON echo with the same transport as strongroom (rustls with the same
//! configuration, or plain HTTP) and nothing else: no middleware, no database, no authentication.
//!
//! `bench-echo --listen 127.0.0.1:0 [--cert FILE --key FILE]` prints `listening on ADDR` when ready.
#![allow(clippy::print_stdout, reason = "a benchmark tool reports on standard output")]

use std::net::SocketAddr;

use axum::Json;
use axum::routing::{get, post};
use axum_server::tls_rustls::RustlsConfig;

async fn merchant() -> Json<serde_json::Value> {
    Json(serde_json::json!({
        "object": "merchant",
        "id": "mer_aaaaaaaaaaaaaaaaaaaaaaaaaa",
        "name": "Default merchant",
        "created_at": "2026-11-25T00:00:00.000Z",
        "mode": "live"
    }))
}

async fn echo(Json(body): Json<serde_json::Value>) -> Json<serde_json::Value> {
    Json(body)
}

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned()
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let listen: SocketAddr = arg(&args, "--listen").unwrap_or_else(|| "127.0.0.1:0".to_owned()).parse()?;
    let tls = match (arg(&args, "--cert"), arg(&args, "--key")) {
        (Some(cert), Some(key)) => {
            Some(strongroom_http::tls::server_config(&std::fs::read(cert)?, &std::fs::read(key)?)?)
        }
        _ => None,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        let app = axum::Router::new().route("/v1/merchant", get(merchant)).route("/echo", post(echo));
        let listener = std::net::TcpListener::bind(listen)?;
        listener.set_nonblocking(true)?;
        println!("listening on {}", listener.local_addr()?);
        match tls {
            Some(tls) => {
                axum_server::from_tcp_rustls(listener, RustlsConfig::from_config(tls))?
                    .serve(app.into_make_service())
                    .await?
            }
            None => axum_server::from_tcp(listener)?.serve(app.into_make_service()).await?,
        }
        Ok(())
    })
}
