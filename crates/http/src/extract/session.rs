//! The customer session guard: `CustomerAuth` in a handler's signature authenticates a session
//! token (`Authorization: Bearer srs_…`) and yields the customer it belongs to.
//! Must never: tell the client whether a token was unknown, ended, idle or expired (one 401 for
//! all), accept an API key or any other token in its place, or log the token.

use axum::extract::FromRequestParts;
use http::request::Parts;
use http::{HeaderValue, header};
use strongroom_domain::identity::{Client, CustomerSession};

use super::RequestContext;
use super::auth::bearer;
use crate::problem::ApiError;
use crate::state::AppState;

/// A customer with a live session, and where the request came from.
#[derive(Debug)]
pub struct CustomerAuth {
    /// The session.
    pub session: CustomerSession,
    /// The client (address, user agent, request id).
    pub client: Client,
}

/// The user agent in request headers.
pub fn user_agent_of(headers: &http::HeaderMap) -> Option<String> {
    headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok()).map(str::to_owned)
}

/// The user agent of a request, for session lists.
pub fn user_agent(parts: &Parts) -> Option<String> {
    parts.headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok()).map(str::to_owned)
}

fn unauthenticated() -> ApiError {
    ApiError::new(http::StatusCode::UNAUTHORIZED, "unauthenticated")
        .detail("a live session token is required: Authorization: Bearer srs_…")
        .header(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"strongroom-customer\""))
}

impl FromRequestParts<AppState> for CustomerAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let context = RequestContext::of(parts);
        let Some(token) = bearer(parts) else {
            return Err(unauthenticated());
        };
        match state.identity.authenticate_session(token).await? {
            Some(session) => Ok(Self {
                session,
                client: Client {
                    ip: context.ip,
                    user_agent: user_agent(parts),
                    request_id: context.request_id,
                    ip_is_the_customers: true,
                    device: None,
                },
            }),
            None => {
                tracing::info!(request_id = context.request_id.as_deref(), "session token refused");
                let reason = if token.starts_with("srs_") { "invalid_session" } else { "not_a_session_token" };
                let client = Client {
                    ip: context.ip,
                    user_agent: None,
                    request_id: context.request_id,
                    ip_is_the_customers: true,
                    device: None,
                };
                state.identity.record_refused_session(None, reason, &client).await?;
                Err(unauthenticated())
            }
        }
    }
}
