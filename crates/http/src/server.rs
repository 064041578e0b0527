//! Serving: the API listener (TLS, or plain only when a load balancer terminates TLS), an optional
//! plain-HTTP listener that only redirects browser routes to HTTPS, an optional metrics listener,
//! and graceful shutdown.
//! Must never: serve the API over plain HTTP unless configured to, or redirect API calls (a client
//! that sent a key over plain HTTP gets an error, not a silent retry).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum_server::Handle;
use axum_server::tls_rustls::RustlsConfig;
use http::StatusCode;
use tokio::task::JoinHandle;

use crate::middleware;
use crate::problem::ApiError;
use crate::state::AppState;

/// How the API listener speaks.
#[derive(Debug, Clone)]
pub enum ApiTransport {
    /// TLS with this configuration.
    Tls(Arc<rustls::ServerConfig>),
    /// Plain HTTP, for deployments whose load balancer terminates TLS.
    PlainBehindProxy,
}

/// Where and how to listen.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// API listener address (port 0 picks a free port).
    pub api_addr: SocketAddr,
    /// API transport.
    pub transport: ApiTransport,
    /// Plain-HTTP redirect listener.
    pub redirect_addr: Option<SocketAddr>,
    /// Metrics listener (plain HTTP, no authentication: bind it to an internal address).
    pub metrics_addr: Option<SocketAddr>,
    /// How long in-flight requests may take to finish at shutdown.
    pub shutdown_grace: Duration,
}

/// Listeners that are serving.
#[derive(Debug)]
pub struct RunningServer {
    /// Where the API listens.
    pub api_addr: SocketAddr,
    /// Where the redirect listener listens.
    pub redirect_addr: Option<SocketAddr>,
    /// Where the metrics listener listens.
    pub metrics_addr: Option<SocketAddr>,
    handle: Handle<SocketAddr>,
    grace: Duration,
    tasks: Vec<JoinHandle<std::io::Result<()>>>,
}

fn bind(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let listener = std::net::TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// Listeners bound but not yet serving: binding first lets start-up fail on a busy port before it
/// changes anything (a first start must not create its bootstrap key and then fail to serve it).
#[derive(Debug)]
pub struct BoundListeners {
    api: std::net::TcpListener,
    redirect: Option<std::net::TcpListener>,
    metrics: Option<std::net::TcpListener>,
}

impl BoundListeners {
    /// Binds every configured listener.
    pub fn bind(config: &ServeConfig) -> std::io::Result<Self> {
        Ok(Self {
            api: bind(config.api_addr)?,
            redirect: config.redirect_addr.map(bind).transpose()?,
            metrics: config.metrics_addr.map(bind).transpose()?,
        })
    }

    /// Where the API listener is bound.
    pub fn api_addr(&self) -> std::io::Result<SocketAddr> {
        self.api.local_addr()
    }
}

impl RunningServer {
    /// Binds every listener and starts serving.
    pub async fn start(config: ServeConfig, state: AppState) -> std::io::Result<Self> {
        let listeners = BoundListeners::bind(&config)?;
        Self::serve(listeners, config, state)
    }

    /// Starts serving on listeners bound before.
    pub fn serve(listeners: BoundListeners, config: ServeConfig, state: AppState) -> std::io::Result<Self> {
        let handle = Handle::new();
        let mut tasks = Vec::new();
        let api = crate::routes::router(state.clone()).into_make_service_with_connect_info::<SocketAddr>();
        let listener = listeners.api;
        let api_addr = listener.local_addr()?;
        match &config.transport {
            ApiTransport::Tls(tls) => {
                let server = axum_server::from_tcp_rustls(listener, RustlsConfig::from_config(tls.clone()))?;
                let server = server.handle(handle.clone());
                tasks.push(tokio::spawn(async move { server.serve(api).await }));
            }
            ApiTransport::PlainBehindProxy => {
                let server = axum_server::from_tcp(listener)?.handle(handle.clone());
                tasks.push(tokio::spawn(async move { server.serve(api).await }));
            }
        }
        let mut redirect_addr = None;
        if let Some(listener) = listeners.redirect {
            redirect_addr = Some(listener.local_addr()?);
            let app = redirect_router(api_addr.port()).into_make_service();
            let server = axum_server::from_tcp(listener)?.handle(handle.clone());
            tasks.push(tokio::spawn(async move { server.serve(app).await }));
        }
        let mut metrics_addr = None;
        if let Some(listener) = listeners.metrics {
            metrics_addr = Some(listener.local_addr()?);
            let app = metrics_router(state).into_make_service();
            let server = axum_server::from_tcp(listener)?.handle(handle.clone());
            tasks.push(tokio::spawn(async move { server.serve(app).await }));
        }
        Ok(Self { api_addr, redirect_addr, metrics_addr, handle, grace: config.shutdown_grace, tasks })
    }

    /// Stops accepting connections, lets in-flight requests finish (up to the grace period) and
    /// returns when every listener has stopped.
    pub async fn shutdown(self) {
        self.handle.graceful_shutdown(Some(self.grace));
        for task in self.tasks {
            match task.await {
                Ok(Ok(())) => {}
                Ok(Err(err)) => tracing::warn!(error = %err, "listener stopped with an error"),
                Err(err) => tracing::warn!(error = %err, "listener task failed"),
            }
        }
    }
}

/// Whether a path belongs to the machine API (never redirected) rather than to browser pages.
fn is_api_path(path: &str) -> bool {
    ["/v1/", "/oauth/", "/metrics", "/openapi.json", "/healthz", "/readyz"]
        .iter()
        .any(|prefix| path == prefix.trim_end_matches('/') || path.starts_with(prefix))
}

fn redirect_router(https_port: u16) -> Router {
    Router::new()
        .fallback(move |req: Request| async move { redirect(https_port, req) })
        .layer(axum::middleware::from_fn(middleware::finish_response))
        .layer(axum::middleware::from_fn(middleware::request_id))
}

fn redirect(https_port: u16, req: Request) -> Response {
    let path_and_query = req.uri().path_and_query().map_or("/", |p| p.as_str()).to_owned();
    let browser = matches!(*req.method(), http::Method::GET | http::Method::HEAD) && !is_api_path(req.uri().path());
    if !browser {
        return ApiError::new(StatusCode::FORBIDDEN, "https_required")
            .detail("this listener only redirects browsers; call the API over HTTPS")
            .into_response();
    }
    let host = req
        .headers()
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(|h| h.rsplit_once(':').map_or(h, |(name, port)| if port.contains(']') { h } else { name }))
        .filter(|h| h.bytes().all(|b| b.is_ascii_alphanumeric() || b"-.[]:".contains(&b)))
        .unwrap_or("localhost")
        .to_owned();
    let target = if https_port == 443 {
        format!("https://{host}{path_and_query}")
    } else {
        format!("https://{host}:{https_port}{path_and_query}")
    };
    Redirect::permanent(&target).into_response()
}

fn metrics_router(state: AppState) -> Router {
    Router::new()
        .route(
            "/metrics",
            axum::routing::get(|State(state): State<AppState>| async move {
                crate::routes::health::render_metrics(&state).await
            }),
        )
        .with_state(state)
        .layer(axum::middleware::from_fn(middleware::finish_response))
        .layer(axum::middleware::from_fn(middleware::request_id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_paths_are_never_redirected() {
        assert!(is_api_path("/v1/merchant"));
        assert!(is_api_path("/metrics"));
        assert!(is_api_path("/openapi.json"));
        assert!(!is_api_path("/login"));
        assert!(!is_api_path("/"));
        assert!(!is_api_path("/v1x"));
    }
}
