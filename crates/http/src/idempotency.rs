//! `Idempotency-Key` on every POST of the API: the middleware claims the key before the handler
//! runs, keeps the answer afterwards, and answers a retry with the kept answer
//! (`Idempotent-Replayed: true`). The rules live in `strongroom_domain::idempotency`.
//! Must never: keep the answer of a route that shows a secret once ([`SHOWS_SECRET`]), or let a
//! key's second request run while the first holds its claim.

use axum::body::{Body, Bytes};
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, Method, StatusCode, header};
use strongroom_domain::DomainError;
use strongroom_domain::idempotency::{Begin, request_hash, valid_key};

use crate::problem::ApiError;
use crate::state::AppState;

/// The header.
pub const HEADER: &str = "idempotency-key";

/// POST routes whose successful answer shows a secret once: a new API key, a session or access
/// token, a TOTP seed, recovery codes, a step-up proof, a revealed value, a webhook signing
/// secret. Their answers are not kept; a replay answers 409 `idempotency_replay_unavailable`.
/// (`api.rs` checks this list against the OpenAPI document's response schemas.)
pub const SHOWS_SECRET: &[&str] = &[
    "/v1/api-keys",
    "/v1/tokens/{id}/reveal",
    "/v1/identity/login",
    "/v1/identity/login/second-factor",
    "/v1/identity/login/passkey/finish",
    "/v1/identity/passkey-registration/finish",
    "/v1/identity/password-reset/complete",
    "/v1/me/totp",
    "/v1/me/totp/confirm",
    "/v1/me/recovery-codes",
    "/v1/me/step-up/{id}/verify",
    "/v1/staff/login",
    "/v1/staff/login/second-factor",
    "/v1/staff/login/totp",
    "/v1/staff/login/totp/confirm",
    "/v1/staff/login/passkey/finish",
    "/v1/staff/login/passkey-enrolment/finish",
    "/v1/webhook_endpoints",
    "/v1/webhook_endpoints/{id}/rotate_secret",
];

/// POST routes that change nothing: questions asked with a body. A retry asks again.
const QUERIES: &[&str] = &["/v1/tokens/search", "/v1/identity/sessions/authenticate", "/v1/identity/password-strength"];

/// POST routes outside this scheme: queries ([`QUERIES`]), OAuth's token endpoint (it answers in
/// RFC 6749's own format and shows a token every time), and the hosted pages (browser forms
/// protected by their CSRF tokens).
pub fn exempt(route: &str) -> bool {
    QUERIES.contains(&route)
        || route == "/oauth/token"
        || route.starts_with("/account")
        || route == "/staff/invitation"
        || route.starts_with("/dev/")
}

/// Whether an answer is kept for replays: a success, or a refusal of the request as sent.
/// Answers that a retry may change (authentication, rate limits, conflicts with the current
/// state, timeouts, server errors) release the key instead.
fn keep(status: StatusCode) -> bool {
    status.is_success() || (status.is_client_error() && !matches!(status.as_u16(), 401 | 403 | 408 | 409 | 423 | 429))
}

/// Failures after which a payment gateway may have acted on the request (a forward that timed
/// out, or whose answer broke off after it was sent; a payment or refund whose gateway call was
/// recorded before the request failed): their answers are kept like a success, so a retry under
/// the same key replays the failure instead of running the request again (a second charge or
/// refund). The shop asks the gateway (or, for a payment or refund, strongroom) what happened, or
/// sends a new key once it knows.
pub const GATEWAY_MAY_HAVE_ACTED: &[&str] =
    &["forward_gateway_timeout", "forward_gateway_failed", "forward_response_too_large", "payment_outcome_pending"];

/// Routes that may call a payment gateway. A 500 `internal_error` of theirs (a bug: a panic, an
/// unexpected database error) may have come after the call, so it is kept like
/// [`GATEWAY_MAY_HAVE_ACTED`]: strongroom cannot tell where the request stopped.
pub const MAY_CALL_A_GATEWAY: &[&str] = &[
    "/v1/payment_intents",
    "/v1/payment_intents/{id}/confirm",
    "/v1/payment_intents/{id}/capture",
    "/v1/payment_intents/{id}/cancel",
    "/v1/refunds",
    "/v1/forward",
];

/// Whether a failure with `code` on `route` may have come after a gateway acted (its answer is
/// then kept, see [`GATEWAY_MAY_HAVE_ACTED`] and [`MAY_CALL_A_GATEWAY`]).
fn gateway_may_have_acted(code: &str, route: &str) -> bool {
    GATEWAY_MAY_HAVE_ACTED.contains(&code) || (code == "internal_error" && MAY_CALL_A_GATEWAY.contains(&route))
}

fn key_problem(detail: &str) -> Response {
    ApiError::from(DomainError::Rejected {
        code: "invalid_idempotency_key",
        errors: vec![strongroom_domain::error::FieldError::new("/Idempotency-Key", detail)],
    })
    .into_response()
}

/// The middleware (per route, so the route template is known).
pub async fn idempotency(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if request.method() != Method::POST {
        return next.run(request).await;
    }
    let Some(raw_key) = request.headers().get(HEADER).cloned() else {
        return next.run(request).await;
    };
    let route = request.extensions().get::<MatchedPath>().map(|m| m.as_str().to_owned()).unwrap_or_default();
    if exempt(&route) {
        return next.run(request).await;
    }
    let Some(key) = raw_key.to_str().ok().filter(|k| valid_key(k)).map(str::to_owned) else {
        return key_problem("must be 1 to 255 visible ASCII characters");
    };
    // The key is stored with the answer: never a card number.
    if let Err(err) = strongroom_domain::free_text::check("/Idempotency-Key", &key) {
        return ApiError::from(err).into_response();
    }
    let credential = request.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let (parts, body) = request.into_parts();
    // The body limit layer outside bounds what this reads.
    let bytes = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(bytes) => bytes,
        Err(_) => return ApiError::for_bare_status(StatusCode::PAYLOAD_TOO_LARGE).into_response(),
    };
    let path = parts.uri.path().to_owned();
    let request_id =
        parts.extensions.get::<crate::middleware::RequestId>().map_or_else(String::new, |r| r.0.to_string());
    let scope = state.idempotency.scope_of(credential.as_deref());
    let claim = match state.idempotency.begin(scope, &key, request_hash("POST", &path, &bytes)).await {
        Ok(Begin::Proceed(claim)) => claim,
        Ok(Begin::Replay { status, content_type, body }) => {
            let is_problem = content_type.as_deref().is_some_and(|c| c.starts_with(crate::middleware::PROBLEM_JSON));
            let body = if is_problem {
                // A kept problem document names this request, not the first one.
                let mut problem: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                problem["request_id"] = serde_json::Value::String(request_id);
                serde_json::to_vec(&problem).unwrap_or(body)
            } else {
                body
            };
            let mut response = Response::new(Body::from(body));
            *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
            if let Some(value) = content_type.and_then(|c| HeaderValue::from_str(&c).ok()) {
                response.headers_mut().insert(header::CONTENT_TYPE, value);
            }
            response.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
            return response;
        }
        Err(err) => return ApiError::from(err).into_response(),
    };
    let response = next.run(Request::from_parts(parts, Body::from(bytes))).await;
    let status = response.status();
    if status == StatusCode::REQUEST_TIMEOUT {
        // The handler may still have acted: the claim stays until its lock passes.
        return response;
    }
    let gateway_may_have_acted =
        response.extensions().get::<ApiError>().is_some_and(|e| gateway_may_have_acted(e.code, &route));
    if !keep(status) && !gateway_may_have_acted {
        if let Err(err) = state.idempotency.release(&claim).await {
            tracing::warn!(error = %err, "an idempotency key could not be released");
        }
        return response;
    }
    // An error's problem document is written by the edge from the response's `ApiError`: keep
    // that document (without a request id), not the still empty body.
    if let Some(error) = response.extensions().get::<ApiError>() {
        let problem = serde_json::to_vec(&error.to_problem("")).unwrap_or_default();
        if let Err(err) = state
            .idempotency
            .finish(&claim, error.status.as_u16(), Some(crate::middleware::PROBLEM_JSON), &problem, false)
            .await
        {
            tracing::error!(error = %err, "an idempotent answer could not be kept");
        }
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let bytes: Bytes = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(bytes) => bytes,
        Err(_) => return ApiError::internal(&"response body").into_response(),
    };
    let content_type = parts.headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let shows_secret = SHOWS_SECRET.contains(&route.as_str());
    if let Err(err) =
        state.idempotency.finish(&claim, status.as_u16(), content_type.as_deref(), &bytes, shows_secret).await
    {
        // The effect happened and its answer goes out; only a later replay is affected.
        tracing::error!(error = %err, "an idempotent answer could not be kept");
    }
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_after_a_gateway_may_have_acted_are_kept() {
        assert!(gateway_may_have_acted("payment_outcome_pending", "/v1/payment_intents"));
        assert!(gateway_may_have_acted("forward_gateway_timeout", "/v1/forward"));
        // A bug's 500 on a route that may call a gateway: where it stopped is unknown.
        assert!(gateway_may_have_acted("internal_error", "/v1/payment_intents/{id}/confirm"));
        assert!(gateway_may_have_acted("internal_error", "/v1/refunds"));
        // Elsewhere, and for failures that come before anything happened, the key is released.
        assert!(!gateway_may_have_acted("internal_error", "/v1/tokens"));
        assert!(!gateway_may_have_acted("database_unavailable", "/v1/payment_intents"));
        assert!(!gateway_may_have_acted("audit_unavailable", "/v1/refunds"));
        assert!(!keep(StatusCode::INTERNAL_SERVER_ERROR));
    }
}
