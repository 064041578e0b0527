//! The forward proxy's outbound side: the operator's allow-list of gateway hosts and the
//! [`GatewayTransport`] over the one outbound client ([`crate::outbound`]: the address policy
//! against SSRF, no redirects, no proxies, timeouts, rustls with verified certificates).
//!
//! An allow-list entry is a DNS name with an optional port (`api.gateway.example` or
//! `api.gateway.example:8443`), compared exactly (case and a final dot aside; no wildcards). A
//! destination must be `https://`, name a host (never an IP literal), carry no credentials, and
//! match an entry: its port, or 443 for an entry without one. It then passes the outbound
//! address policy, here and again on every DNS answer and connection. Answers are read up to
//! `max_response_bytes`.
//! Must never: send to a host outside the allow-list, follow a redirect, log or return a URL's
//! path or query, a header value or a body.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use strongroom_domain::forward::{
    Destination, GatewayAnswer, GatewayFailure, GatewayRequest, GatewayTransport, Method,
};
use strongroom_types::Secret;
use zeroize::Zeroize;

use crate::outbound::{OutboundError, OutboundSettings, check_url, client};

/// One allow-list entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedHost {
    host: String,
    port: Option<u16>,
}

impl AllowedHost {
    /// Parses `host` or `host:port`: a DNS name (letters, digits, `-`, dots), never an IP
    /// address, a scheme, a path or a wildcard. The reason never repeats the entry.
    pub fn parse(entry: &str) -> Result<Self, &'static str> {
        let (host, port) = match entry.rsplit_once(':') {
            Some((host, port)) => {
                let port: u16 = port.parse().map_err(|_| "the port must be a number from 1 to 65535")?;
                if port == 0 {
                    return Err("the port must be a number from 1 to 65535");
                }
                (host, Some(port))
            }
            None => (entry, None),
        };
        let host = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
        if host.is_empty() || host.len() > 253 {
            return Err("must be a host name, optionally with :port");
        }
        let labels_ok = host.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
        if !labels_ok {
            return Err("must be a host name (letters, digits, dashes and dots; no scheme, path or wildcard)");
        }
        if host.parse::<std::net::Ipv4Addr>().is_ok() || host.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
            return Err("must be a host name, not an IP address");
        }
        Ok(Self { host, port })
    }

    fn matches(&self, host: &str, port: u16) -> bool {
        let host = host.strip_suffix('.').unwrap_or(host);
        self.host.eq_ignore_ascii_case(host) && self.port.unwrap_or(443) == port
    }

    /// `host` or `host:port`, as configured: the metric label and the audit entry's host.
    pub fn label(&self) -> String {
        match self.port {
            Some(port) => format!("{}:{port}", self.host),
            None => self.host.clone(),
        }
    }
}

/// Settings of the forward proxy.
#[derive(Debug, Clone)]
pub struct ForwardSettings {
    /// The gateway hosts a forward may go to; empty: every forward is refused.
    pub allowed_hosts: Vec<AllowedHost>,
    /// The outbound policy (address ranges, extra CA, timeouts).
    pub outbound: OutboundSettings,
    /// The most of an answer's body that is read.
    pub max_response_bytes: usize,
}

/// Sends forwards.
#[derive(Debug)]
pub struct HttpForwarder {
    client: reqwest::Client,
    settings: ForwardSettings,
}

impl HttpForwarder {
    /// A forwarder with its own outbound client.
    pub fn new(settings: ForwardSettings) -> Result<Self, OutboundError> {
        Ok(Self { client: client(&settings.outbound)?, settings })
    }
}

fn method(method: Method) -> reqwest::Method {
    match method {
        Method::Post => reqwest::Method::POST,
        Method::Put => reqwest::Method::PUT,
        Method::Patch => reqwest::Method::PATCH,
        Method::Get => reqwest::Method::GET,
        Method::Delete => reqwest::Method::DELETE,
    }
}

fn elapsed_ms(started: Instant) -> u64 {
    u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// What a failed call was: refused by the policy or never connected (nothing sent), a timeout,
/// or broken after the request went out.
fn failure(err: &reqwest::Error) -> GatewayFailure {
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        if let Some(OutboundError::PrivateAddress { .. }) = cause.downcast_ref::<OutboundError>() {
            return GatewayFailure::Refused;
        }
        source = cause.source();
    }
    if err.is_connect() {
        GatewayFailure::Unreachable
    } else if err.is_timeout() {
        GatewayFailure::Timeout
    } else {
        GatewayFailure::Failed
    }
}

#[async_trait]
impl GatewayTransport for HttpForwarder {
    fn destination(&self, url: &str) -> Result<Destination, String> {
        let parsed = reqwest::Url::parse(url.trim()).map_err(|_| "must be an https:// URL".to_owned())?;
        if parsed.scheme() != "https" {
            return Err("must be an https:// URL".into());
        }
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err("must not hold credentials (user:password@host)".into());
        }
        // The parser has normalised IP literals (`0x7f.1` is `127.0.0.1`, IPv6 is bracketed).
        let host = parsed.host_str().filter(|h| !h.is_empty()).ok_or_else(|| "must name a host".to_owned())?;
        if host.starts_with('[') || host.parse::<std::net::Ipv4Addr>().is_ok() {
            return Err("must name a host on the allow-list, not an IP address".into());
        }
        let host = host.to_owned();
        let port = parsed.port_or_known_default().unwrap_or(443);
        let Some(entry) = self.settings.allowed_hosts.iter().find(|entry| entry.matches(&host, port)) else {
            return Err("the host is not on the forward allow-list ([forward] allowed_hosts)".into());
        };
        check_url(parsed.as_str(), &self.settings.outbound).map_err(|err| match err {
            OutboundError::PrivateAddress { .. } => {
                "the host is a private, loopback or reserved address, refused by the outbound policy".to_owned()
            }
            _ => "must be an https:// URL".to_owned(),
        })?;
        Ok(Destination {
            url: Secret::new(parsed.as_str().to_owned()),
            host: entry.label(),
            path: parsed.path().to_owned(),
        })
    }

    async fn send(&self, request: GatewayRequest) -> Result<GatewayAnswer, (GatewayFailure, u64)> {
        let started = Instant::now();
        let mut builder = self.client.request(method(request.method), request.url.expose().as_str());
        for (name, value) in &request.headers {
            builder = builder.header(name.as_str(), value.expose().as_str());
        }
        let body = request.body.expose().clone();
        drop(request);
        let sent = builder.body(body).send().await;
        let mut response = match sent {
            Ok(response) => response,
            Err(err) => return Err((failure(&err), elapsed_ms(started))),
        };
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .filter_map(|(name, value)| Some((name.as_str().to_owned(), value.to_str().ok()?.to_owned())))
            .collect();
        let limit = self.settings.max_response_bytes;
        if response.content_length().is_some_and(|len| len > limit as u64) {
            return Err((GatewayFailure::TooLarge, elapsed_ms(started)));
        }
        let expected = response.content_length().and_then(|len| usize::try_from(len).ok()).unwrap_or(16 * 1024);
        // Grown by hand and wiped on every exit: no copy of the answer is left behind.
        let mut body: Vec<u8> = Vec::with_capacity(expected.min(limit));
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    let needed = body.len() + chunk.len();
                    if needed > limit {
                        body.zeroize();
                        return Err((GatewayFailure::TooLarge, elapsed_ms(started)));
                    }
                    if needed > body.capacity() {
                        let mut grown = Vec::with_capacity(needed.max(body.capacity() * 2).min(limit));
                        grown.extend_from_slice(&body);
                        body.zeroize();
                        body = grown;
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(err) => {
                    body.zeroize();
                    let failed = if err.is_timeout() { GatewayFailure::Timeout } else { GatewayFailure::Failed };
                    return Err((failed, elapsed_ms(started)));
                }
            }
        }
        let body = Secret::new(body);
        Ok(GatewayAnswer { status, headers, body, elapsed_ms: elapsed_ms(started) })
    }
}

/// The default timeout of a whole forward, from connecting to the end of the answer.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(20);

#[cfg(test)]
mod tests {
    use super::*;

    fn forwarder(entries: &[&str], outbound: OutboundSettings) -> HttpForwarder {
        let allowed_hosts = entries.iter().map(|e| AllowedHost::parse(e).unwrap()).collect();
        HttpForwarder::new(ForwardSettings { allowed_hosts, outbound, max_response_bytes: 1024 }).unwrap()
    }

    #[test]
    fn entries_are_host_names_with_an_optional_port() {
        assert_eq!(AllowedHost::parse("API.Gateway.example.").unwrap().label(), "api.gateway.example");
        assert_eq!(AllowedHost::parse("api.gateway.example:8443").unwrap().label(), "api.gateway.example:8443");
        for bad in [
            "",
            "https://api.gateway.example",
            "api.gateway.example/v1",
            "*.gateway.example",
            "10.0.0.1",
            "127.0.0.1:443",
            "[::1]:443",
            "::1",
            "api.gateway.example:0",
            "api.gateway.example:99999",
            "-bad.example",
            "two words.example",
        ] {
            assert!(AllowedHost::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn destinations_must_match_the_allow_list_exactly() {
        let f = forwarder(&["gateway.example", "other.example:8443"], OutboundSettings::default());
        let ok = f.destination("https://Gateway.Example/v1/charges?key=s3cret").unwrap();
        assert_eq!(ok.host, "gateway.example");
        assert_eq!(ok.path, "/v1/charges");
        assert!(f.destination("https://gateway.example:443/v1").is_ok());
        assert!(f.destination("https://other.example:8443/").is_ok());
        for refused in [
            "http://gateway.example/v1/charges",
            "https://gateway.example:8443/v1",
            "https://other.example/",
            "https://sub.gateway.example/",
            "https://gateway.example.evil.example/",
            "https://user:pw@gateway.example/",
            "https://93.184.215.14/",
            "https://[2606:2800:21f:cb07:6820:80da:af6b:8b2c]/",
            "ftp://gateway.example/",
            "not a url",
        ] {
            let why = f.destination(refused).unwrap_err();
            assert!(!why.contains("s3cret") && !why.contains("gateway.example/"), "{why}");
        }
    }

    #[test]
    fn loopback_is_refused_under_the_default_policy() {
        let f = forwarder(&["localhost:8443"], OutboundSettings::default());
        let why = f.destination("https://localhost:8443/charge").unwrap_err();
        assert!(why.contains("loopback"), "{why}");
        let allowed =
            forwarder(&["localhost:8443"], OutboundSettings { allow_loopback: true, ..OutboundSettings::default() });
        assert!(allowed.destination("https://localhost:8443/charge").is_ok());
    }
}
