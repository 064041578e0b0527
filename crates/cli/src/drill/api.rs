//! The drill's HTTP client: JSON calls to the target's public API, each with an API key.
//!
//! Why reqwest here and not the bench's client: `strongroom-bench` drives raw hyper connections
//! over tokio-rustls for throughput and lives in a binary crate nothing can depend on; a drill
//! makes a few hundred JSON calls and reads problem codes and `Retry-After`. It trusts the
//! server the way the bench and `healthcheck` do (a CA file, by default the data directory's
//! development CA), or `--insecure`.
//! Must never: follow a redirect or go through a proxy (either would take the attack to a host
//! the target check did not approve), or put a key or a password in an error message.

use std::time::Duration;

use anyhow::Context;
use reqwest::Method;
use serde_json::Value;
use strongroom_types::Secret;

/// How the drill trusts the target's TLS certificate.
#[derive(Debug, Clone)]
pub enum Trust {
    /// Only this CA (PEM).
    CaPem(Vec<u8>),
    /// Any certificate (`--insecure`): for a test host with a self-signed certificate.
    Insecure,
}

/// A client of one target.
#[derive(Debug, Clone)]
pub struct Api {
    http: reqwest::Client,
    base: String,
}

/// An answer: status, JSON body (`Null` when it is not JSON), `Retry-After` in seconds.
#[derive(Debug, Clone)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// The body as JSON.
    pub body: Value,
    /// `Retry-After`, when sent as seconds.
    pub retry_after: Option<u64>,
}

impl Answer {
    /// The problem's `code`, when there is one.
    pub fn code(&self) -> Option<&str> {
        self.body.get("code").and_then(Value::as_str)
    }

    /// 2xx.
    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// `429 client_blocked`, `404`: status and code, for the report.
    /// A validation problem also names its first field (`422 validation_failed /client/ip`).
    pub fn label(&self) -> String {
        let pointer = self.body["errors"][0]["pointer"].as_str();
        match (self.code(), pointer) {
            (Some(code), Some(pointer)) => format!("{} {code} {pointer}", self.status),
            (Some(code), None) => format!("{} {code}", self.status),
            (None, _) => self.status.to_string(),
        }
    }

    /// A string field of the body.
    pub fn text(&self, field: &str) -> Option<String> {
        self.body.get(field).and_then(Value::as_str).map(str::to_owned)
    }
}

impl Api {
    /// A client for a checked target.
    pub fn new(target: &super::target::Target, trust: &Trust) -> anyhow::Result<Self> {
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .timeout(Duration::from_secs(60))
            .user_agent(concat!("strongroom-drill/", env!("CARGO_PKG_VERSION")));
        builder = match trust {
            Trust::CaPem(pem) => builder
                .tls_built_in_root_certs(false)
                .add_root_certificate(reqwest::Certificate::from_pem(pem).context("--tls-ca: not a PEM certificate")?),
            Trust::Insecure => builder.danger_accept_invalid_certs(true),
        };
        Ok(Self { http: builder.build().context("cannot build the HTTP client")?, base: target.base().to_owned() })
    }

    /// `method path` with `key`, a JSON body and an `Idempotency-Key`. A transport failure is
    /// an error naming the route (never the key).
    pub async fn call(
        &self,
        key: &Secret<String>,
        method: Method,
        path: &str,
        body: Option<&Value>,
        idempotency_key: Option<&str>,
    ) -> anyhow::Result<Answer> {
        let mut request = self.http.request(method.clone(), format!("{}{path}", self.base)).bearer_auth(key.expose());
        if let Some(body) = body {
            request = request.json(body);
        }
        if let Some(idempotency) = idempotency_key {
            request = request.header("Idempotency-Key", idempotency);
        }
        let response =
            request.send().await.map_err(|e| anyhow::anyhow!("{method} {}: {}", route(path), e.without_url()))?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok());
        let text = response.text().await.unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Ok(Answer { status, body, retry_after })
    }

    /// `GET path`.
    pub async fn get(&self, key: &Secret<String>, path: &str) -> anyhow::Result<Answer> {
        self.call(key, Method::GET, path, None, None).await
    }

    /// `POST path` with a JSON body.
    pub async fn post(&self, key: &Secret<String>, path: &str, body: &Value) -> anyhow::Result<Answer> {
        self.call(key, Method::POST, path, Some(body), None).await
    }

    /// `DELETE path`.
    pub async fn delete(&self, key: &Secret<String>, path: &str) -> anyhow::Result<Answer> {
        self.call(key, Method::DELETE, path, None, None).await
    }
}

/// A path with its ids and query cut off, for error messages (`/v1/tokens/…`).
fn route(path: &str) -> String {
    let path = path.split('?').next().unwrap_or_default();
    path.split('/')
        .map(
            |part| {
                if part.contains('_') && !part.starts_with("payment_") && !part.starts_with("api") {
                    "…"
                } else {
                    part
                }
            },
        )
        .collect::<Vec<_>>()
        .join("/")
}

#[cfg(test)]
mod tests {
    #[test]
    fn routes_in_errors_hide_ids() {
        assert_eq!(super::route("/v1/tokens/tok_abc/reveal"), "/v1/tokens/…/reveal");
        assert_eq!(super::route("/v1/payment_intents/pi_x?x=1"), "/v1/payment_intents/…");
        assert_eq!(super::route("/v1/api-keys/key_1"), "/v1/api-keys/…");
    }
}
