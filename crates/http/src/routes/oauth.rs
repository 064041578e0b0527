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
use strongroom_domain::identity::Client;
use strongroom_domain::oauth::TokenError;

use crate::extract::RequestContext;
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
    let credentials = match (basic(&headers), form.client_id, form.client_secret) {
        (Some(pair), None, None) => Some(pair),
        (None, Some(id), Some(secret)) => Some((id, secret)),
        _ => None,
    };
    let grant_type = form.grant_type.unwrap_or_default();
    let client = Client {
        ip: context.ip,
        user_agent: None,
        request_id: context.request_id.clone(),
        ip_is_the_customers: false,
        device: None,
    };
    let presented = credentials.as_ref().map(|(id, secret)| (id.as_str(), secret.as_str()));
    match state.access_tokens.issue_recorded(&state.audit, &grant_type, presented, form.scope.as_deref(), &client).await
    {
        Ok(Ok(issued)) => {
            let body = serde_json::json!({
                "access_token": issued.access_token.expose(),
                "token_type": "Bearer",
                "expires_in": issued.expires_in,
                "scope": issued.scope,
            });
            no_store(axum::Json(body).into_response())
        }
        Ok(Err(error)) => {
            tracing::info!(request_id = context.request_id.as_deref(), error = error.code(), "token request refused");
            refusal(error)
        }
        Err(err) => ApiError::from(err).into_response(),
    }
}

/// The public keys access tokens are signed with (RFC 7517 JWK set).
#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "oauth", responses((status = 200, description = "`{keys: [{kty: \"OKP\", crv: \"Ed25519\", x, kid, alg: \"EdDSA\", use: \"sig\"}]}`")))]
pub async fn jwks(State(state): State<AppState>) -> Response {
    let mut response = axum::Json(state.access_tokens.jwks()).into_response();
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=300"));
    response
}
