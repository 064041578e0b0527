//! The one outbound HTTP client factory: every HTTP client strongroom builds (webhooks to the shop,
//! the OpenBao KMS, the alert webhook, payment gateways) comes from [`client`], and every URL a
//! merchant or an operator hands over passes [`check_url`] before it is stored or used.
//!
//! Owns the outbound policy: TLS 1.2 or 1.3 with the ring provider, verified against the webpki
//! roots plus an optional extra CA per destination; plain `http://` only to loopback; no
//! redirects; no proxies (not even from the environment); private, loopback, link-local and other
//! non-public addresses refused unless [`OutboundSettings`] allows private or loopback ranges
//! (link-local, which holds the cloud metadata endpoint, multicast, documentation and reserved
//! ranges never are). Addresses are checked three times: on the URL ([`check_url`], for a clear
//! error up front), on every DNS answer at connect time (the resolver drops refused addresses, so
//! a name that resolves to a private address is refused too, and a rebinding answer cannot slip
//! through between a check and the connection), and on the peer of every new connection, which
//! covers IP-literal hosts (reqwest never calls the resolver for them). That last check runs once
//! the connection (and for https the handshake) is up, before any byte of the request is written.
//!
//! Must never: follow a redirect, use a proxy, trust a certificate outside the configured roots,
//! send a request to a refused address or plain text to anything but loopback, or put a URL's
//! credentials, path or query string into an error (an [`OutboundError`] is safe to log; convert a
//! `reqwest::Error` with `OutboundError::from` rather than logging it, since its Display and Debug
//! carry the whole URL).

use std::error::Error as StdError;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::client::legacy::connect::{Connection, HttpInfo};
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

type BoxError = Box<dyn StdError + Send + Sync>;

/// The outbound policy of one destination (or one kind of destination).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundSettings {
    /// Allows the private ranges: 10/8, 172.16/12, 192.168/16, 100.64/10 (CGNAT), fc00::/7 (unique
    /// local) and fec0::/10 (old site-local), e.g. for an OpenBao server on the operator's network.
    pub allow_private: bool,
    /// Allows loopback (127/8, ::1, `localhost`): for development, tests and a KMS on the same host.
    pub allow_loopback: bool,
    /// A PEM file of extra trusted CA certificates (added to the webpki roots, not replacing them).
    pub ca_file: Option<PathBuf>,
    /// How long establishing a connection (TCP and TLS) may take.
    pub connect_timeout: Duration,
    /// How long a whole call may take, from connecting to the end of the response body.
    pub timeout: Duration,
}

impl Default for OutboundSettings {
    /// Public destinations only, 5 s to connect, 10 s per call.
    fn default() -> Self {
        Self {
            allow_private: false,
            allow_loopback: false,
            ca_file: None,
            connect_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(10),
        }
    }
}

/// Why a URL or a call was refused or failed. The Display never holds a URL's credentials, path
/// or query string: hosts, addresses and configuration paths only.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OutboundError {
    /// Not a URL (the reason comes from the URL parser and never quotes the input).
    #[error("invalid URL: {0}")]
    InvalidUrl(String),
    /// A scheme other than https and http.
    #[error("unsupported URL scheme {scheme:?}: use https")]
    UnsupportedScheme {
        /// The scheme.
        scheme: String,
    },
    /// Plain http to something other than loopback.
    #[error("{host} must be reached over https (plain http is allowed to loopback only)")]
    NotHttps {
        /// The host (or the connected address).
        host: String,
    },
    /// A user name or password in the URL.
    #[error("the URL holds credentials (user:password@host); they are not accepted in URLs")]
    HasCredentials,
    /// The host is, or resolves only to, an address the policy refuses.
    #[error("{host} is or resolves to a private, loopback or reserved address, refused by the outbound policy")]
    PrivateAddress {
        /// The host name or address.
        host: String,
    },
    /// The host name could not be resolved.
    #[error("cannot resolve {host}: {reason}")]
    Dns {
        /// The host name.
        host: String,
        /// Why.
        reason: String,
    },
    /// The connection's peer address is unknown, so the policy cannot be checked.
    #[error("the address of the connected peer is unknown; refused")]
    UnknownPeer,
    /// The extra CA file cannot be used.
    #[error("extra CA file {}: {reason}", .path.display())]
    CaFile {
        /// The configured path.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The TLS configuration cannot be built.
    #[error("TLS configuration: {0}")]
    Tls(String),
    /// The HTTP client cannot be built.
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
    /// The connection or the whole call took longer than allowed.
    #[error("the call timed out")]
    Timeout,
    /// The call failed otherwise (connection refused, TLS verification, a broken response…).
    #[error("{0}")]
    Request(String),
}

impl From<reqwest::Error> for OutboundError {
    /// Turns a reqwest error into one that is safe to log: a refusal of this module travels inside
    /// reqwest's error and comes back as itself; anything else keeps its cause chain, not the URL.
    fn from(err: reqwest::Error) -> Self {
        let mut source = err.source();
        while let Some(cause) = source {
            if let Some(own) = cause.downcast_ref::<OutboundError>() {
                return own.clone();
            }
            source = cause.source();
        }
        if err.is_timeout() {
            return Self::Timeout;
        }
        let err = err.without_url();
        let mut text = err.to_string();
        let mut source = err.source();
        while let Some(cause) = source {
            text.push_str(": ");
            text.push_str(&cause.to_string());
            source = cause.source();
        }
        Self::Request(text)
    }
}

/// What an address is, for the policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AddressClass {
    Public,
    Loopback,
    /// Private ranges: allowed with `allow_private`.
    Private,
    /// Never a destination: unspecified, link-local, multicast, broadcast, documentation,
    /// benchmarking, reserved, deprecated transition ranges.
    Reserved,
}

fn classify(ip: IpAddr) -> AddressClass {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn classify_v4(ip: Ipv4Addr) -> AddressClass {
    use AddressClass::*;
    match ip.octets() {
        [127, ..] => Loopback,
        [10, ..] | [172, 16..=31, ..] | [192, 168, ..] | [100, 64..=127, ..] => Private,
        [0, ..] => Reserved,        // "this network", 0.0.0.0 included
        [169, 254, ..] => Reserved, // link-local, 169.254.169.254 (cloud metadata) included
        [192, 0, 0, _] => Reserved, // IETF protocol assignments
        [192, 0, 2, _] | [198, 51, 100, _] | [203, 0, 113, _] => Reserved, // documentation
        [192, 88, 99, _] => Reserved, // 6to4 relay anycast
        [198, 18..=19, ..] => Reserved, // benchmarking
        [224..=255, ..] => Reserved, // multicast, reserved, 255.255.255.255
        _ => Public,
    }
}

fn classify_v6(ip: Ipv6Addr) -> AddressClass {
    use AddressClass::*;
    if let Some(v4) = ip.to_ipv4_mapped() {
        return classify_v4(v4); // ::ffff:a.b.c.d is a.b.c.d
    }
    if ip == Ipv6Addr::LOCALHOST {
        return Loopback;
    }
    let s = ip.segments();
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        // NAT64 (64:ff9b::/96): the translator connects to the embedded IPv4 address.
        return classify_v4(Ipv4Addr::from((u32::from(s[6]) << 16) | u32::from(s[7])));
    }
    match s[0] {
        0xfc00..=0xfdff => return Private,  // unique local, fc00::/7
        0xfec0..=0xfeff => return Private,  // site-local (deprecated), fec0::/10
        0xfe80..=0xfebf => return Reserved, // link-local, fe80::/10
        _ => {}
    }
    // Only 2000::/3 is global unicast; everything outside it not handled above (::, the
    // IPv4-compatible ::/96, 100::/64, 64:ff9b:1::/48, multicast ff00::/8, unassigned space) is refused.
    if s[0] & 0xe000 != 0x2000 {
        return Reserved;
    }
    match (s[0], s[1]) {
        (0x2001, 0..=0x01ff) => Reserved, // IETF protocol assignments, 2001::/23 (Teredo, ORCHID…)
        (0x2001, 0x0db8) => Reserved,     // documentation, 2001:db8::/32
        (0x2002, _) => Reserved,          // 6to4, 2002::/16: embeds any IPv4, private ones too
        (0x3fff, 0..=0x0fff) => Reserved, // documentation, 3fff::/20 (RFC 9637)
        _ => Public,
    }
}

/// Whether the policy of `settings` refuses `ip` as a destination.
pub fn is_refused(ip: IpAddr, settings: &OutboundSettings) -> bool {
    Policy::of(settings).refuses(ip)
}

/// The address part of the settings, cheap to copy into the resolver and the connector.
#[derive(Debug, Clone, Copy)]
struct Policy {
    allow_private: bool,
    allow_loopback: bool,
}

impl Policy {
    fn of(settings: &OutboundSettings) -> Self {
        Self { allow_private: settings.allow_private, allow_loopback: settings.allow_loopback }
    }

    fn refuses(self, ip: IpAddr) -> bool {
        self.refuses_class(classify(ip))
    }

    fn refuses_class(self, class: AddressClass) -> bool {
        match class {
            AddressClass::Public => false,
            AddressClass::Loopback => !self.allow_loopback,
            AddressClass::Private => !self.allow_private,
            AddressClass::Reserved => true,
        }
    }
}

/// `localhost` and the names under it are loopback (RFC 6761), whatever DNS says.
fn is_localhost_name(host: &str) -> bool {
    let host = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
    host == "localhost" || host.ends_with(".localhost")
}

/// Checks a destination URL before it is stored or used: https (http only to loopback), no
/// credentials, and a host that is not a refused address. A host name is accepted here and checked
/// again at every connection, against what it resolves to then.
pub fn check_url(url: &str, settings: &OutboundSettings) -> Result<reqwest::Url, OutboundError> {
    let parsed = reqwest::Url::parse(url.trim()).map_err(|e| OutboundError::InvalidUrl(e.to_string()))?;
    let scheme = parsed.scheme();
    if scheme != "https" && scheme != "http" {
        return Err(OutboundError::UnsupportedScheme { scheme: scheme.to_owned() });
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(OutboundError::HasCredentials);
    }
    let host = match parsed.host_str() {
        Some(host) if !host.is_empty() => host.to_owned(),
        _ => return Err(OutboundError::InvalidUrl("no host".into())),
    };
    // The parser has normalised IP literals (`0x7f.1` is `127.0.0.1`, IPv6 is bracketed).
    let literal = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(&host).parse::<IpAddr>();
    let class = match literal {
        Ok(ip) => classify(ip),
        Err(_) if is_localhost_name(&host) => AddressClass::Loopback,
        Err(_) => AddressClass::Public, // the resolver checks it at connect time
    };
    if Policy::of(settings).refuses_class(class) {
        return Err(OutboundError::PrivateAddress { host });
    }
    if scheme == "http" && class != AddressClass::Loopback {
        return Err(OutboundError::NotHttps { host });
    }
    Ok(parsed)
}

/// Builds an HTTP client with the outbound policy of `settings`. Reads the extra CA file, if any,
/// now. Callers still pass each destination through [`check_url`] first, for the clear error.
pub fn client(settings: &OutboundSettings) -> Result<reqwest::Client, OutboundError> {
    let policy = Policy::of(settings);
    reqwest::Client::builder()
        .use_preconfigured_tls(tls_config(settings.ca_file.as_deref())?)
        // Makes the connector report whether a connection is TLS, for the plain-text rule.
        .tls_info(true)
        .redirect(reqwest::redirect::Policy::none())
        .referer(false)
        // A proxy would be the peer, the resolver would check the proxy's name: none at all.
        .no_proxy()
        .dns_resolver(Arc::new(CheckingResolver { policy }))
        .connector_layer(PeerCheckLayer { policy })
        .connect_timeout(settings.connect_timeout)
        .timeout(settings.timeout)
        .user_agent(concat!("strongroom/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| OutboundError::Client(e.without_url().to_string()))
}

/// The rustls configuration: ring, TLS 1.3 and 1.2, the webpki roots plus the extra CA file.
///
/// The roots come from the `webpki-roots` crate rather than reqwest's `rustls-tls-webpki-roots`
/// feature: this configuration is built here and handed to reqwest preconfigured, so reqwest's
/// built-in roots would never be used, and the feature would change the reqwest of every crate in
/// the workspace (it is a workspace dependency). The crate was already in the build, via lettre.
fn tls_config(ca_file: Option<&Path>) -> Result<rustls::ClientConfig, OutboundError> {
    let mut roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
    if let Some(path) = ca_file {
        let failed = |reason: String| OutboundError::CaFile { path: path.to_owned(), reason };
        let mut added = 0usize;
        for cert in CertificateDer::pem_file_iter(path).map_err(|e| failed(e.to_string()))? {
            let cert = cert.map_err(|e| failed(e.to_string()))?;
            roots.add(cert).map_err(|e| failed(e.to_string()))?;
            added += 1;
        }
        if added == 0 {
            return Err(failed("no PEM certificate in the file".into()));
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| OutboundError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    // reqwest is built without HTTP/2 here; a preconfigured configuration keeps its ALPN as is.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Resolves host names and drops the addresses the policy refuses; fails when none is left.
#[derive(Debug)]
struct CheckingResolver {
    policy: Policy,
}

impl Resolve for CheckingResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy;
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let found: Vec<SocketAddr> = if is_localhost_name(&host) {
                vec![SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), SocketAddr::from((Ipv6Addr::LOCALHOST, 0))]
            } else {
                tokio::net::lookup_host((host.as_str(), 0))
                    .await
                    .map_err(|e| Box::new(OutboundError::Dns { host: host.clone(), reason: e.to_string() }))?
                    .collect()
            };
            let allowed = allowed_addresses(&host, found, policy)?;
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

fn allowed_addresses(host: &str, found: Vec<SocketAddr>, policy: Policy) -> Result<Vec<SocketAddr>, OutboundError> {
    if found.is_empty() {
        return Err(OutboundError::Dns { host: host.to_owned(), reason: "no address".into() });
    }
    let allowed: Vec<SocketAddr> = found.into_iter().filter(|a| !policy.refuses(a.ip())).collect();
    if allowed.is_empty() {
        return Err(OutboundError::PrivateAddress { host: host.to_owned() });
    }
    Ok(allowed)
}

/// Wraps reqwest's connector: checks the peer address of every new connection.
#[derive(Debug, Clone)]
struct PeerCheckLayer {
    policy: Policy,
}

impl<S> tower::Layer<S> for PeerCheckLayer {
    type Service = PeerCheck<S>;

    fn layer(&self, inner: S) -> PeerCheck<S> {
        PeerCheck { inner, policy: self.policy }
    }
}

#[derive(Debug, Clone)]
struct PeerCheck<S> {
    inner: S,
    policy: Policy,
}

impl<S, R> tower::Service<R> for PeerCheck<S>
where
    S: tower::Service<R, Error = BoxError>,
    S::Response: Connection + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: R) -> Self::Future {
        let connecting = self.inner.call(request);
        let policy = self.policy;
        Box::pin(async move {
            let connection = connecting.await?;
            check_peer(&connection, policy)?;
            Ok(connection)
        })
    }
}

/// The connection goes to an allowed address, and is TLS unless that address is loopback. Dropping
/// a refused connection closes it before the request is written.
fn check_peer(connection: &impl Connection, policy: Policy) -> Result<(), OutboundError> {
    let mut extras = http::Extensions::new();
    connection.connected().get_extras(&mut extras);
    let Some(info) = extras.get::<HttpInfo>() else {
        return Err(OutboundError::UnknownPeer);
    };
    let ip = info.remote_addr().ip();
    let class = classify(ip);
    if policy.refuses_class(class) {
        return Err(OutboundError::PrivateAddress { host: ip.to_string() });
    }
    if class != AddressClass::Loopback && extras.get::<reqwest::tls::TlsInfo>().is_none() {
        return Err(OutboundError::NotHttps { host: ip.to_string() });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Instant;

    use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose};
    use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
    use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    const OK: &str = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok";

    fn loopback() -> OutboundSettings {
        OutboundSettings { allow_loopback: true, ..OutboundSettings::default() }
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn the_address_table() {
        let settings = OutboundSettings::default();
        let refused = [
            "10.0.0.1",
            "172.16.0.1",
            "172.31.255.254",
            "192.168.1.1",
            "169.254.169.254",
            "127.0.0.1",
            "127.1.2.3",
            "::1",
            "fe80::1",
            "fc00::1",
            "fd12:3456::1",
            "::ffff:10.0.0.1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "100.64.0.1",
            "100.127.255.254",
            "0.0.0.0",
            "0.1.2.3",
            "::",
            "255.255.255.255",
            "224.0.0.1",
            "239.255.255.250",
            "240.0.0.1",
            "ff02::1",
            "192.0.0.8",
            "192.0.2.1",
            "198.51.100.7",
            "203.0.113.9",
            "198.18.0.1",
            "2001:db8::1",
            "3fff::1",
            "2002:a00:1::1",
            "2001::1",
            "64:ff9b::a00:1",
            "64:ff9b::7f00:1",
            "::10.0.0.1",
            "fec0::1",
        ];
        for address in refused {
            assert!(is_refused(ip(address), &settings), "{address} should be refused");
        }
        let allowed = [
            "8.8.8.8",
            "1.1.1.1",
            "172.32.0.1",
            "100.128.0.1",
            "2606:4700::1111",
            "2a00:1450:4001::200e",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
        ];
        for address in allowed {
            assert!(!is_refused(ip(address), &settings), "{address} should be allowed");
        }
    }

    #[test]
    fn the_settings_open_their_ranges_only() {
        let loopback = loopback();
        assert!(!is_refused(ip("127.0.0.1"), &loopback));
        assert!(!is_refused(ip("::1"), &loopback));
        assert!(!is_refused(ip("::ffff:127.0.0.1"), &loopback));
        assert!(is_refused(ip("10.0.0.1"), &loopback));

        let private = OutboundSettings { allow_private: true, ..OutboundSettings::default() };
        for address in ["10.0.0.1", "172.16.0.1", "192.168.1.1", "100.64.0.1", "fc00::1", "::ffff:10.0.0.1"] {
            assert!(!is_refused(ip(address), &private), "{address} should be allowed as private");
        }
        assert!(is_refused(ip("127.0.0.1"), &private));

        let everything = OutboundSettings { allow_private: true, allow_loopback: true, ..OutboundSettings::default() };
        for address in ["169.254.169.254", "fe80::1", "0.0.0.0", "::", "224.0.0.1", "255.255.255.255", "192.0.2.1"] {
            assert!(is_refused(ip(address), &everything), "{address} should never be allowed");
        }
    }

    #[test]
    fn check_url_refuses_what_the_policy_refuses() {
        let settings = OutboundSettings::default();
        assert!(matches!(check_url("http://example.com", &settings), Err(OutboundError::NotHttps { .. })));
        assert!(matches!(check_url("https://10.0.0.1/x", &settings), Err(OutboundError::PrivateAddress { .. })));
        assert!(matches!(
            check_url("https://[::ffff:10.0.0.1]/x", &settings),
            Err(OutboundError::PrivateAddress { .. })
        ));
        assert!(matches!(check_url("https://0x7f.1/x", &settings), Err(OutboundError::PrivateAddress { .. })));
        assert!(matches!(
            check_url("https://169.254.169.254/latest", &settings),
            Err(OutboundError::PrivateAddress { .. })
        ));
        assert!(matches!(check_url("https://localhost/x", &settings), Err(OutboundError::PrivateAddress { .. })));
        assert_eq!(check_url("https://user:pw@example.com", &settings), Err(OutboundError::HasCredentials));
        assert_eq!(check_url("https://user@example.com", &settings), Err(OutboundError::HasCredentials));
        assert!(matches!(check_url("ftp://example.com/file", &settings), Err(OutboundError::UnsupportedScheme { .. })));
        assert!(matches!(check_url("file:///etc/passwd", &settings), Err(OutboundError::UnsupportedScheme { .. })));
        assert!(matches!(check_url("not a url", &settings), Err(OutboundError::InvalidUrl(_))));
        assert!(matches!(check_url("https://", &settings), Err(OutboundError::InvalidUrl(_))));

        assert_eq!(check_url("https://example.com/hook", &settings).unwrap().as_str(), "https://example.com/hook");
        assert!(check_url("https://[2606:4700::1111]/hook", &settings).is_ok());

        assert!(matches!(check_url("http://127.0.0.1:9/x", &settings), Err(OutboundError::PrivateAddress { .. })));
        let loopback = loopback();
        assert!(check_url("http://127.0.0.1:9/x", &loopback).is_ok());
        assert!(check_url("http://[::1]:9/x", &loopback).is_ok());
        assert!(check_url("http://localhost:9/x", &loopback).is_ok());
        assert!(matches!(check_url("http://example.com/x", &loopback), Err(OutboundError::NotHttps { .. })));
        let private = OutboundSettings { allow_private: true, ..OutboundSettings::default() };
        assert!(check_url("https://10.0.0.1/x", &private).is_ok());
        assert!(matches!(check_url("http://10.0.0.1/x", &private), Err(OutboundError::NotHttps { .. })));
    }

    #[test]
    fn errors_never_show_credentials_or_queries() {
        let settings = OutboundSettings::default();
        let errors = [
            check_url("https://alice:hunter2@example.com/x?token=s3cret", &settings),
            check_url("http://example.com/path-secret?token=s3cret", &settings),
            check_url("https://10.0.0.1/path-secret?token=s3cret", &settings),
            check_url("gopher://example.com/path-secret?token=s3cret", &settings),
            check_url("https://exa mple.com/path-secret?token=s3cret", &settings),
        ];
        for error in errors {
            let text = error.unwrap_err().to_string();
            for secret in ["alice", "hunter2", "s3cret", "path-secret"] {
                assert!(!text.contains(secret), "{text:?} shows {secret:?}");
            }
        }
    }

    #[test]
    fn the_resolver_keeps_allowed_addresses_only() {
        let policy = Policy::of(&OutboundSettings::default());
        let private: SocketAddr = "10.0.0.1:0".parse().unwrap();
        let public: SocketAddr = "8.8.8.8:0".parse().unwrap();
        assert_eq!(allowed_addresses("mixed.test", vec![private, public], policy), Ok(vec![public]));
        assert_eq!(
            allowed_addresses("inside.test", vec![private], policy),
            Err(OutboundError::PrivateAddress { host: "inside.test".into() })
        );
        assert!(matches!(allowed_addresses("nothing.test", vec![], policy), Err(OutboundError::Dns { .. })));
    }

    #[test]
    fn a_connection_without_a_known_peer_is_refused() {
        struct NoPeerInfo;
        impl Connection for NoPeerInfo {
            fn connected(&self) -> hyper_util::client::legacy::connect::Connected {
                hyper_util::client::legacy::connect::Connected::new()
            }
        }
        let everything = OutboundSettings { allow_private: true, allow_loopback: true, ..OutboundSettings::default() };
        assert_eq!(check_peer(&NoPeerInfo, Policy::of(&everything)), Err(OutboundError::UnknownPeer));
    }

    #[test]
    fn the_ca_file_must_hold_certificates() {
        let missing = std::env::temp_dir().join("strongroom-outbound-no-such-ca.pem");
        let settings = OutboundSettings { ca_file: Some(missing), ..OutboundSettings::default() };
        assert!(matches!(client(&settings), Err(OutboundError::CaFile { .. })));

        let empty = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(empty.path(), "not a certificate\n").unwrap();
        let settings = OutboundSettings { ca_file: Some(empty.path().to_owned()), ..OutboundSettings::default() };
        assert!(matches!(client(&settings), Err(OutboundError::CaFile { .. })));

        assert!(client(&OutboundSettings::default()).is_ok());
    }

    /// A local server: counts the connections it accepts and the requests it reads (a request is a
    /// complete head), and answers each request with `response`.
    struct Server {
        port: u16,
        connections: Arc<AtomicUsize>,
        requests: Arc<AtomicUsize>,
    }

    async fn read_head<S: AsyncRead + Unpin>(stream: &mut S) -> bool {
        let mut head = Vec::new();
        let mut chunk = [0u8; 1024];
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => head.extend_from_slice(&chunk[..n]),
            }
            if head.windows(4).any(|w| w == b"\r\n\r\n") {
                return true;
            }
        }
    }

    async fn answer<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, response: &str, requests: &AtomicUsize) {
        if read_head(&mut stream).await {
            requests.fetch_add(1, Ordering::SeqCst);
            let _ = stream.write_all(response.as_bytes()).await;
            let _ = stream.shutdown().await;
        }
    }

    async fn serve(response: String) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let connections = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(AtomicUsize::new(0));
        let (counted, answered) = (connections.clone(), requests.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                let (response, answered) = (response.clone(), answered.clone());
                tokio::spawn(async move { answer(stream, &response, &answered).await });
            }
        });
        Server { port, connections, requests }
    }

    #[tokio::test]
    async fn redirects_are_not_followed() {
        let other = serve(OK.into()).await;
        let redirect =
            format!("HTTP/1.1 302 Found\r\nlocation: http://127.0.0.1:{}/\r\ncontent-length: 0\r\n\r\n", other.port);
        let first = serve(redirect).await;
        let client = client(&loopback()).unwrap();
        let response = client.get(format!("http://127.0.0.1:{}/", first.port)).send().await.unwrap();
        assert_eq!(response.status(), reqwest::StatusCode::FOUND);
        assert_eq!(first.requests.load(Ordering::SeqCst), 1);
        assert_eq!(other.connections.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn a_name_resolving_to_loopback_is_refused_unless_allowed() {
        let server = serve(OK.into()).await;
        let url = format!("http://localhost:{}/", server.port);
        let refused = client(&OutboundSettings::default()).unwrap().get(&url).send().await.unwrap_err();
        assert_eq!(OutboundError::from(refused), OutboundError::PrivateAddress { host: "localhost".into() });
        assert_eq!(server.connections.load(Ordering::SeqCst), 0);

        let response = client(&loopback()).unwrap().get(&url).send().await.unwrap();
        assert_eq!(response.status(), reqwest::StatusCode::OK);
        assert_eq!(response.text().await.unwrap(), "ok");
    }

    #[tokio::test]
    async fn an_ip_literal_is_refused_unless_allowed() {
        let server = serve(OK.into()).await;
        let url = format!("http://127.0.0.1:{}/hook?token=s3cret", server.port);
        assert!(matches!(check_url(&url, &OutboundSettings::default()), Err(OutboundError::PrivateAddress { .. })));
        let refused = client(&OutboundSettings::default()).unwrap().get(&url).send().await.unwrap_err();
        let refused = OutboundError::from(refused);
        assert_eq!(refused, OutboundError::PrivateAddress { host: "127.0.0.1".into() });
        assert!(!refused.to_string().contains("s3cret"));
        assert_eq!(server.requests.load(Ordering::SeqCst), 0, "no request may reach a refused address");

        let response = client(&loopback()).unwrap().get(&url).send().await.unwrap();
        assert_eq!(response.status(), reqwest::StatusCode::OK);
        assert_eq!(server.requests.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn other_failures_keep_their_cause_but_not_the_url() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let url = format!("http://127.0.0.1:{port}/path-secret?token=s3cret");
        let failed = OutboundError::from(client(&loopback()).unwrap().get(&url).send().await.unwrap_err());
        let text = failed.to_string();
        assert!(matches!(failed, OutboundError::Request(_)), "{failed:?}");
        assert!(!text.contains("s3cret") && !text.contains("path-secret"), "{text}");
        assert!(text.to_lowercase().contains("connect"), "{text}");
    }

    #[tokio::test]
    async fn a_silent_server_times_out() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                held.push(stream);
            }
        });
        let settings = OutboundSettings {
            connect_timeout: Duration::from_millis(300),
            timeout: Duration::from_millis(300),
            ..loopback()
        };
        let started = Instant::now();
        let failed = client(&settings).unwrap().get(format!("http://127.0.0.1:{port}/")).send().await.unwrap_err();
        let elapsed = started.elapsed();
        assert_eq!(OutboundError::from(failed), OutboundError::Timeout);
        assert!(elapsed >= Duration::from_millis(250) && elapsed < Duration::from_secs(2), "{elapsed:?}");
    }

    /// A CA and a certificate for `localhost` and 127.0.0.1 signed by it: the CA in PEM, the leaf
    /// and its key in DER.
    fn test_pki() -> (String, CertificateDer<'static>, PrivateKeyDer<'static>) {
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        ca_params.distinguished_name.push(DnType::CommonName, "strongroom outbound test CA");
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_key = KeyPair::generate().unwrap();
        let ca = ca_params.self_signed(&ca_key).unwrap();

        let mut leaf_params = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        leaf_params.distinguished_name.push(DnType::CommonName, "localhost");
        leaf_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        leaf_params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let leaf_key = KeyPair::generate().unwrap();
        let leaf = leaf_params.signed_by(&leaf_key, &ca, &ca_key).unwrap();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
        (ca.pem(), leaf.der().clone(), key)
    }

    async fn serve_tls(leaf: CertificateDer<'static>, key: PrivateKeyDer<'static>) -> Server {
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![leaf], key)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let connections = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(AtomicUsize::new(0));
        let (counted, answered) = (connections.clone(), requests.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                let (acceptor, answered) = (acceptor.clone(), answered.clone());
                tokio::spawn(async move {
                    if let Ok(tls) = acceptor.accept(stream).await {
                        answer(tls, OK, &answered).await;
                    }
                });
            }
        });
        Server { port, connections, requests }
    }

    #[tokio::test]
    async fn https_trusts_the_extra_ca_only_when_configured() {
        let (ca_pem, leaf, key) = test_pki();
        let server = serve_tls(leaf, key).await;
        for host in ["localhost", "127.0.0.1"] {
            let url = format!("https://{host}:{}/hook", server.port);

            let failed = client(&loopback()).unwrap().get(&url).send().await.unwrap_err();
            let failed = OutboundError::from(failed);
            assert!(matches!(&failed, OutboundError::Request(text) if text.contains("certificate")), "{failed:?}");

            let ca_file = tempfile::NamedTempFile::new().unwrap();
            std::fs::write(ca_file.path(), &ca_pem).unwrap();
            let settings = OutboundSettings { ca_file: Some(ca_file.path().to_owned()), ..loopback() };
            let response = client(&settings).unwrap().get(&url).send().await.unwrap();
            assert_eq!(response.status(), reqwest::StatusCode::OK);
            assert_eq!(response.text().await.unwrap(), "ok");
        }
        assert_eq!(server.requests.load(Ordering::SeqCst), 2);
        assert!(server.connections.load(Ordering::SeqCst) >= 4);
    }
}
