//! OAuth 2.0 for services: `POST /oauth/token` (client credentials: an API key's id and the key
//! itself, in HTTP Basic or the form) answers a 5-minute EdDSA-signed access token; `GET
//! /.well-known/jwks.json` publishes the verification keys. Access tokens work wherever an API
//! key does, with the scopes they were granted.
//! Answers follow RFC 6749 (`application/json`, `{error, error_description}`, `Cache-Control:
//! no-store`), which OAuth clients expect, rather than problem+json.
//! Must never: log a client secret or a token, or answer a token in a redirect or a URL.

use axum::Form;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde::Deserialize;
use strongroom_domain::audit::event::{ActorKind, AuditEvent, Outcome};
use strongroom_domain::oauth::TokenError;

use crate::extract::RequestContext;
use crate::extract::auth::record_failure;
use crate::problem::ApiError;
use crate::state::AppState;

/// The token request (RFC 6749 §4.4.2), form-encoded. The client may authenticate with HTTP
/// Basic instead of `client_id` and `client_secret`.
#[derive(Deserialize, utoipa::ToSchema)]
pub struct TokenForm {
    /// `client_credentials`.
    grant_type: Option<String>,
    /// The API key's id (`key_…`).
    client_id: Option<String>,
    /// The API key itself.
    client_secret: Option<String>,
    /// Scopes wanted, space-separated (default: all the key holds).
    scope: Option<String>,
}

impl std::fmt::Debug for TokenForm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenForm")
            .field("grant_type", &self.grant_type)
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

fn no_store(mut response: Response) -> Response {
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response.headers_mut().insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    response
}

fn refusal(error: TokenError) -> Response {
    let (status, description) = match error {
        TokenError::InvalidClient => (StatusCode::UNAUTHORIZED, "client authentication failed"),
        TokenError::InvalidScope => (StatusCode::BAD_REQUEST, "a requested scope is unknown or not held by the client"),
        TokenError::UnsupportedGrantType => {
            (StatusCode::BAD_REQUEST, "only grant_type=client_credentials is supported")
        }
        TokenError::Server => (StatusCode::SERVICE_UNAVAILABLE, "try again shortly"),
    };
    let body = axum::Json(serde_json::json!({"error": error.code(), "error_description": description}));
    let mut response = (status, body).into_response();
    response.extensions_mut().insert(crate::middleware::OwnErrorBody);
    if error == TokenError::InvalidClient {
        response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"strongroom\""));
    }
    no_store(response)
}

/// Client id and secret from `Authorization: Basic` (RFC 6749 §2.3.1), if present.
fn basic(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (id, secret) = text.split_once(':')?;
    Some((id.to_owned(), secret.to_owned()))
}

/// Trades an API key for a short-lived access token (OAuth 2.0 client credentials).
#[utoipa::path(post, path = "/oauth/token", tag = "oauth",
    request_body(content = TokenForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "`{access_token, token_type: \"Bearer\", expires_in, scope}`"),
        (status = 400, description = "`{error: \"invalid_scope\" | \"unsupported_grant_type\"}`"),
        (status = 401, description = "`{error: \"invalid_client\"}`"),
    ))]
pub async fn token(
    State(state): State<AppState>,
    context: RequestContext,
    headers: HeaderMap,
    Form(form): Form<TokenForm>,
) -> Response {
    let (client_id, client_secret) = match (basic(&headers), form.client_id, form.client_secret) {
        (Some(pair), None, None) => pair,
        (None, Some(id), Some(secret)) => (id, secret),
        _ => return refusal(TokenError::InvalidClient),
    };
    let grant_type = form.grant_type.unwrap_or_default();
    match state.access_tokens.issue(&grant_type, &client_id, &client_secret, form.scope.as_deref()).await {
        Ok(issued) => {
            let event =
                issued.client.event("oauth.token_issued", Outcome::SuccessBecause(issued.scope.replace(' ', ",")));
            if let Err(err) = state.audit.record(context.stamp(event)).await {
                return ApiError::from(strongroom_domain::DomainError::from(err)).into_response();
            }
            let body = serde_json::json!({
                "access_token": issued.access_token.expose(),
                "token_type": "Bearer",
                "expires_in": issued.expires_in,
                "scope": issued.scope,
            });
            no_store(axum::Json(body).into_response())
        }
        Err(error) => {
            tracing::info!(request_id = context.request_id.as_deref(), error = error.code(), "token request refused");
            let client = strongroom_domain::api_keys::ApiKeyId::parse(&client_id).ok().map(|id| id.to_string());
            let event =
                AuditEvent::by(ActorKind::Anonymous, client, "oauth.token_refused", Outcome::Denied(error.code()));
            match record_failure(&state, &context, event).await {
                Ok(()) => refusal(error),
                Err(err) => err.into_response(),
            }
        }
    }
}

/// The public keys access tokens are signed with (RFC 7517 JWK set).
#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "oauth", responses((status = 200, description = "`{keys: [{kty: \"OKP\", crv: \"Ed25519\", x, kid, alg: \"EdDSA\", use: \"sig\"}]}`")))]
pub async fn jwks(State(state): State<AppState>) -> Response {
    let mut response = axum::Json(state.access_tokens.jwks()).into_response();
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=300"));
    response
}
