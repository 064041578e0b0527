//! The middleware every request passes through, outermost first:
//! edge (request id, client IP; on the way out problem bodies and security headers) → load
//! shedding → body limit → (per route) logging and metrics → idempotency → timeout → reading the
//! whole body → panic catching → handler.
//! Must never: log a query string, a header value that carries credentials, or a body.

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{HeaderName, HeaderValue, StatusCode, header};
use ipnet::IpNet;
use strongroom_types::{Entropy, OsEntropy};

use crate::problem::ApiError;
use crate::state::AppState;

/// The request id header.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The id of the current request: the client's `X-Request-Id` when well-formed, else generated.
#[derive(Debug, Clone)]
pub struct RequestId(pub std::sync::Arc<str>);

/// The client's address as seen through the trusted proxy list.
#[derive(Debug, Clone, Copy)]
pub struct ClientIp(pub IpAddr);

fn well_formed_request_id(value: &str) -> bool {
    (1..=64).contains(&value.len()) && value.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
}

/// `req_` + a random per-process prefix + a counter: unique across processes and restarts, and
/// cheap (no system call per request). Request ids are correlation handles, not secrets.
fn generate_request_id() -> String {
    static PREFIX: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let prefix = PREFIX.get_or_init(|| u64::from_le_bytes(OsEntropy.array()));
    let count = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("req_{prefix:016x}{count:016x}")
}

/// Assigns the request id and echoes it in the response.
pub async fn request_id(mut req: Request, next: Next) -> Response {
    let id = assign_request_id(&mut req);
    let response = next.run(req).await;
    with_request_id(response, &id)
}

fn assign_request_id(req: &mut Request) -> std::sync::Arc<str> {
    let id: std::sync::Arc<str> = req
        .headers()
        .get(&X_REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| well_formed_request_id(v))
        .map_or_else(|| generate_request_id().into(), Into::into);
    req.extensions_mut().insert(RequestId(id.clone()));
    id
}

fn with_request_id(mut response: Response, id: &str) -> Response {
    if let Ok(value) = HeaderValue::from_str(id) {
        response.headers_mut().insert(X_REQUEST_ID.clone(), value);
    }
    response
}

/// The API's outermost layer, in one step: request id, client IP, then on the way out problem
/// bodies, security headers and the request id header.
pub async fn edge(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let id = assign_request_id(&mut req);
    let peer = req.extensions().get::<ConnectInfo<SocketAddr>>().map_or(IpAddr::from([127, 0, 0, 1]), |c| c.0.ip());
    // Every X-Forwarded-For line, in order: a proxy that appends its own line after the client's
    // must not leave the client's line as the only one read.
    let forwarded: Vec<&str> =
        req.headers().get_all("x-forwarded-for").iter().filter_map(|v| v.to_str().ok()).collect();
    let forwarded = forwarded.join(",");
    let forwarded = (!forwarded.is_empty()).then_some(forwarded.as_str());
    let ip = client_ip(peer, forwarded, &state.settings.trusted_proxies);
    req.extensions_mut().insert(ClientIp(ip));
    let response = match state.decisions.blocking_everywhere(ip) {
        // A client blocked for the whole deployment (a decoy route, a forged cookie): refused
        // before anything else runs.
        Some(decision) => {
            let err: ApiError = strongroom_domain::detection::blocked_error(&decision, state.decisions.now()).into();
            err.into_response()
        }
        None => {
            if unusual(&req) {
                let token = req
                    .headers()
                    .get(header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.split_once(' '))
                    .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
                    .map(|(_, token)| token.trim().to_owned());
                count_unusual(&state, token, ip).await;
            }
            next.run(req).await
        }
    };
    let mut response = render_problem(response, &id);
    add_security_headers(response.headers_mut());
    with_request_id(response, &id)
}

/// Methods no client of strongroom's sends (tracing, tunnelling, WebDAV): a scanner's probes.
const UNUSUAL_METHODS: [&str; 12] = [
    "TRACE",
    "TRACK",
    "CONNECT",
    "DEBUG",
    "PROPFIND",
    "PROPPATCH",
    "MKCOL",
    "COPY",
    "MOVE",
    "LOCK",
    "UNLOCK",
    "SEARCH",
];

/// Whether a request has a method no client of strongroom's sends, or a body type no route takes
/// and only probes send (XML, for external entities; serialised Java or AMF objects). Its answer
/// stays what the routes make of it (`405`, `404`, `415`).
fn unusual(req: &Request) -> bool {
    let method = req.method().as_str();
    if UNUSUAL_METHODS.iter().any(|m| m.eq_ignore_ascii_case(method)) {
        return true;
    }
    let Some(content_type) = req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    // Compared without changing case, so the JSON every client sends costs no allocation.
    let essence = content_type.split(';').next().unwrap_or_default().trim();
    const PROBES: [&str; 5] = [
        "application/xml",
        "text/xml",
        "application/x-java-serialized-object",
        "application/x-java-object",
        "application/x-amf",
    ];
    PROBES.iter().any(|probe| probe.eq_ignore_ascii_case(essence))
        || essence.len() > 4
            && essence.get(essence.len() - 4..).is_some_and(|suffix| suffix.eq_ignore_ascii_case("+xml"))
}

/// Counts an unusual request: with a valid API key, per key (an alert: the shop's server relays
/// its customers and must never be blocked for everyone); else per client, which is blocked
/// everywhere, as a decoy route's is.
async fn count_unusual(state: &AppState, token: Option<String>, ip: IpAddr) {
    use strongroom_domain::detection::{Point, Sighting, points};
    let principal = match token {
        Some(token) => state.api_keys.authenticate(&token).await.ok(),
        None => None,
    };
    let key = principal.as_ref().and_then(|p| Some((p.merchant_id(), p.key_id()?.as_str().to_owned())));
    let sighting = match key {
        Some((merchant, key)) => {
            Sighting::new(Point::UnusualRequestWithKey, Some(merchant), key.clone()).from_ip(Some(ip)).subject(key)
        }
        None => Sighting::new(Point::UnusualRequest, None, points::client_group(ip))
            .respond(points::client_scope(ip))
            .from_ip(Some(ip)),
    };
    state.decisions.sighted(sighting).await;
}

pub(crate) const PROBLEM_JSON: &str = "application/problem+json";

/// Marks an error response whose body a protocol defines (RFC 6749 token errors): the edge leaves
/// it as it is instead of writing a problem document.
#[derive(Debug, Clone, Copy)]
pub struct OwnErrorBody;

/// Writes problem bodies (for [`ApiError`]s and bare error statuses from framework layers) and the
/// security headers every response carries.
pub async fn finish_response(req: Request, next: Next) -> Response {
    let request_id = req.extensions().get::<RequestId>().map_or_else(|| "".into(), |r| r.0.clone());
    let response = next.run(req).await;
    let mut response = render_problem(response, &request_id);
    add_security_headers(response.headers_mut());
    response
}

fn render_problem(response: Response, request_id: &str) -> Response {
    let error = response.extensions().get::<ApiError>().cloned();
    if let Some(cause) = error.as_ref().and_then(|e| e.cause.as_deref().map(String::as_str)) {
        let status = error.as_ref().map_or(500, |e| e.status.as_u16());
        if status >= 500 {
            tracing::error!(request_id, status, cause, "request failed inside");
        } else {
            tracing::warn!(request_id, status, cause, "request refused");
        }
    }
    let already_problem =
        response.headers().get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(PROBLEM_JSON.as_bytes()));
    let error = match error {
        Some(error) => error,
        None if response.status().is_client_error() || response.status().is_server_error() => {
            if already_problem || response.extensions().get::<OwnErrorBody>().is_some() {
                return response;
            }
            ApiError::for_bare_status(response.status())
        }
        None => return response,
    };
    let (mut parts, _body) = response.into_parts();
    let problem = error.to_problem(request_id);
    let body = serde_json::to_vec(&problem).unwrap_or_default();
    parts.status = error.status;
    parts.headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    parts.headers.remove(header::CONTENT_LENGTH);
    for (name, value) in &error.headers {
        parts.headers.insert(name.clone(), value.clone());
    }
    Response::from_parts(parts, axum::body::Body::from(body))
}

/// Headers on every response. The API serves no HTML, so the CSP forbids everything.
pub fn add_security_headers(headers: &mut http::HeaderMap) {
    let fixed: [(&str, &str); 6] = [
        ("strict-transport-security", "max-age=63072000; includeSubDomains"),
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        ("cross-origin-opener-policy", "same-origin"),
        ("cross-origin-resource-policy", "same-origin"),
        ("permissions-policy", "camera=(), microphone=(), geolocation=(), payment=()"),
    ];
    for (name, value) in fixed {
        headers.insert(HeaderName::from_static(name), HeaderValue::from_static(value));
    }
    // The API serves no HTML, so its CSP forbids everything; the hosted pages set their own.
    if !headers.contains_key(header::CONTENT_SECURITY_POLICY) {
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"),
        );
    }
    // The pages send `same-origin`, so a browser's own form posts carry a real `Origin`.
    if !headers.contains_key(header::REFERRER_POLICY) {
        headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    }
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
}

/// Finds the client address: the peer, or, when the peer is a trusted proxy, the nearest
/// untrusted address in `X-Forwarded-For` (read right to left). Anyone else's header is ignored.
pub fn client_ip(peer: IpAddr, forwarded_for: Option<&str>, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let Some(header) = forwarded_for else {
        return peer;
    };
    let mut candidate = peer;
    for part in header.rsplit(',') {
        let Ok(ip) = part.trim().parse::<IpAddr>() else {
            return candidate;
        };
        candidate = ip;
        if !is_trusted(&ip) {
            return ip;
        }
    }
    candidate
}

/// Where the authentication guard leaves who called, for the access-log line and for counting
/// refusals (enumeration).
#[derive(Debug, Clone, Default)]
pub struct KeySlot(pub std::sync::Arc<std::sync::OnceLock<SlotCaller>>);

/// Who called, as the authentication guard found.
#[derive(Debug, Clone)]
pub struct SlotCaller {
    /// The key id or staff id.
    pub actor: String,
    /// The caller's merchant.
    pub merchant: strongroom_domain::merchants::MerchantId,
    /// Whether `actor` is an API key (which intrusion detection can suspend).
    pub api_key: bool,
}

/// Per route: metrics, and an access-log line (request id, method, route template, client, key,
/// status, latency) for the requests `access_log` names. Deliberately no span: a span per request cost about a
/// quarter of the server's CPU per request in BENCHMARKS.md; the lines written during a request
/// that need its id carry it as a field.
pub async fn observe(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().clone();
    let route = req.extensions().get::<MatchedPath>().cloned();
    let route = route.as_ref().map_or("unmatched", MatchedPath::as_str);
    let request_id = req.extensions().get::<RequestId>().map_or_else(|| "".into(), |r| r.0.clone());
    let client = req.extensions().get::<ClientIp>().map_or(IpAddr::from([0, 0, 0, 0]), |c| c.0);
    let key = KeySlot::default();
    req.extensions_mut().insert(key.clone());
    // A reference-counted copy (no allocation): only a 404 or 403 reads its path.
    let uri = req.uri().clone();
    let mut response = next.run(req).await;
    // What the handler read may be a commit of another request's that is not on disk yet: the
    // answer waits for it (its own writes already were), so no client sees what a crash undoes.
    let settled = tokio::time::timeout(state.settings.request_timeout, state.durability.settled()).await;
    match settled {
        Ok(Ok(())) => {}
        Ok(Err(err)) => response = ApiError::from(err).into_response(),
        Err(_) => {
            response = ApiError::from(strongroom_domain::StoreError::Unavailable(
                "the database did not make what this request read durable in time".to_owned(),
            ))
            .into_response();
        }
    }
    let elapsed = started.elapsed();
    let status = response.status().as_u16();
    state.metrics.observe(&method, route, status, elapsed.as_secs_f64());
    let latency_ms = elapsed.as_secs_f64() * 1000.0;
    // Tokens that do not exist are the vault's to count (token guessing, its own threshold).
    if matches!(status, 404 | 403)
        && !uri.path().starts_with("/v1/tokens/")
        && let Some(caller) = key.0.get().filter(|c| c.api_key)
    {
        count_refusal(&state, caller, &method, uri.path(), client).await;
    }
    let key_id = key.0.get().map(|c| c.actor.as_str());
    let request_id: &str = &request_id;
    let logged = match state.settings.access_log {
        crate::state::AccessLog::All => true,
        crate::state::AccessLog::Errors => status >= 400 || elapsed.as_secs() >= 1,
        crate::state::AccessLog::None => false,
    };
    if status >= 500 {
        tracing::warn!(request_id, %method, route, client_ip = %client, key_id, status, latency_ms, "request failed");
    } else if logged {
        tracing::info!(request_id, %method, route, client_ip = %client, key_id, status, latency_ms, "request");
    }
    response
}

/// Enumeration: an API key's 404 (an object that does not exist or is another merchant's) or 403
/// (a scope it lacks), counted per distinct method and path, so the key that walks through ids
/// is suspended on every node.
async fn count_refusal(state: &AppState, caller: &SlotCaller, method: &http::Method, path: &str, client: IpAddr) {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::hash::DefaultHasher::new();
    (method.as_str(), path).hash(&mut hasher);
    let sighting = strongroom_domain::detection::Sighting::new(
        strongroom_domain::detection::Point::Enumeration,
        Some(&caller.merchant),
        caller.actor.clone(),
    )
    .item(hasher.finish().to_be_bytes())
    .respond(strongroom_domain::detection::DecisionScope::ApiKey(caller.actor.clone()))
    .from_ip(Some(client))
    .subject(caller.actor.clone());
    state.decisions.sighted(sighting).await;
}

/// The answer for a handler that panicked: a generic 500; the panic message is logged, not shown.
pub fn panic_response(payload: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let message = payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".to_owned());
    ApiError::for_bare_status(StatusCode::INTERNAL_SERVER_ERROR)
        .caused_by(&format_args!("handler panicked: {message}"))
        .into_response()
}

/// The answer when the concurrency limit sheds a request, or another layer error occurs.
pub async fn layer_error(err: tower::BoxError) -> Response {
    if err.is::<tower::load_shed::error::Overloaded>() {
        ApiError::unavailable("overloaded", 1).detail("too many requests in flight; try again shortly").into_response()
    } else {
        ApiError::internal(&err).into_response()
    }
}

/// Reads a request's whole body (within the body limit, under the request timeout) before the
/// handler runs. A handler that answers early (401, 403, 415, 422, …) then never leaves the
/// client's upload half-read: on HTTP/2 a half-read request stream is reset when the answer
/// ends, and clients such as curl then report a framing error instead of the problem document.
/// Handlers read JSON bodies whole anyway, so this costs no extra memory at the limit.
pub async fn read_whole_body(request: Request, next: Next) -> Response {
    use axum::body::HttpBody as _;
    if request.body().size_hint().exact() == Some(0) {
        return next.run(request).await;
    }
    let (parts, body) = request.into_parts();
    match crate::extract::json::read_body(body).await {
        Ok(bytes) => next.run(Request::from_parts(parts, axum::body::Body::from(bytes))).await,
        Err(err) => err.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn unusual_requests_are_methods_and_body_types_only_probes_send() {
        let request = |method: &str, content_type: Option<&str>| {
            let mut builder = axum::http::Request::builder().method(method).uri("/v1/identity/login");
            if let Some(content_type) = content_type {
                builder = builder.header(header::CONTENT_TYPE, content_type);
            }
            builder.body(axum::body::Body::empty()).unwrap()
        };
        assert!(unusual(&request("TRACE", None)));
        assert!(unusual(&request("PROPFIND", None)));
        assert!(unusual(&request("POST", Some("application/xml"))));
        assert!(unusual(&request("POST", Some("Text/XML; charset=utf-8"))), "any case, any parameters");
        assert!(unusual(&request("POST", Some("application/soap+XML"))), "any +xml");
        assert!(unusual(&request("POST", Some("application/x-java-serialized-object"))));
        assert!(!unusual(&request("POST", Some("application/json"))));
        assert!(!unusual(&request("POST", Some("Application/JSON; charset=utf-8"))));
        assert!(!unusual(&request("POST", Some("application/x-www-form-urlencoded"))));
        assert!(!unusual(&request("POST", Some("+xml"))), "a suffix alone is not a type");
        assert!(!unusual(&request("GET", None)));
    }

    #[test]
    fn forwarded_for_only_from_trusted_proxies() {
        let proxy: IpAddr = "10.0.0.5".parse().unwrap();
        let stranger: IpAddr = "203.0.113.9".parse().unwrap();
        let trusted = nets(&["10.0.0.0/8"]);
        assert_eq!(client_ip(stranger, Some("1.2.3.4"), &trusted), stranger, "untrusted peer's header ignored");
        assert_eq!(client_ip(proxy, Some("1.2.3.4"), &trusted), "1.2.3.4".parse::<IpAddr>().unwrap());
        assert_eq!(
            client_ip(proxy, Some("6.6.6.6, 1.2.3.4, 10.0.0.7"), &trusted),
            "1.2.3.4".parse::<IpAddr>().unwrap(),
            "a spoofed left-most entry is not believed"
        );
        assert_eq!(client_ip(proxy, Some("garbage"), &trusted), proxy);
        assert_eq!(client_ip(proxy, None, &trusted), proxy);
        assert_eq!(client_ip(proxy, Some("1.2.3.4"), &[]), proxy);
    }

    #[test]
    fn request_id_shape() {
        assert!(well_formed_request_id("abc-123_x.y:z"));
        assert!(!well_formed_request_id(""));
        assert!(!well_formed_request_id(&"a".repeat(65)));
        assert!(!well_formed_request_id("a b"));
        assert!(!well_formed_request_id("a\nb"));
        assert!(well_formed_request_id(&generate_request_id()));
    }
}
