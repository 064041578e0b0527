//! The hosted pages' guards, as extractors: a page handler states what it needs in its signature
//! and cannot run without the check.
//!
//! - [`PageForm<T>`]: a form posted from one of our pages, CSRF-checked (the double-submit token
//!   in the form, same origin) before its fields are read.
//! - [`PageScript`]: a script request from one of our pages (`X-CSRF-Token` header), checked the
//!   same way; its refusals are JSON.
//! - [`SignedIn`]: the signed-in customer, for reading a page (`GET`/`HEAD` only).
//! - [`SignedInForm<T>`] and [`SignedInScript`]: the signed-in customer for a state change, CSRF
//!   checked first. A state change cannot get a session any other way, since [`SignedIn`]
//!   refuses every method but `GET` and `HEAD`.
//!
//! Must never: read a form's fields before its CSRF check, hand out a session for a state change
//! without one, or tell the client why a session cookie was refused.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use http::request::Parts;
use http::{HeaderMap, Method, StatusCode, header};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use strongroom_domain::identity::{Client, CustomerSession};

use super::{CSRF_COOKIE, Csrf, PageError, SESSION_COOKIE, cookie};
use crate::extract::RequestContext;
use crate::problem::ApiError;
use crate::state::AppState;

/// Whether a state change carries the CSRF token and comes from this site.
fn csrf_holds(headers: &HeaderMap, presented: Option<&str>) -> bool {
    let same_site = match headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        Some(site) => site == "same-origin" || site == "none",
        None => true,
    };
    let origin_ok = match (headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()), headers.get(header::HOST)) {
        (Some(origin), Some(host)) => {
            let host = host.to_str().unwrap_or_default();
            origin.strip_prefix("https://").or_else(|| origin.strip_prefix("http://")) == Some(host)
        }
        _ => true,
    };
    let expected = cookie(headers, CSRF_COOKIE).unwrap_or_default();
    let presented = presented.unwrap_or_default();
    let token_ok =
        !expected.is_empty() && bool::from(subtle::ConstantTimeEq::ct_eq(expected.as_bytes(), presented.as_bytes()));
    if !(same_site && origin_ok && token_ok) {
        tracing::info!(same_site, origin_ok, token_ok, "page request refused: CSRF check");
    }
    same_site && origin_ok && token_ok
}

/// The client of a page request.
pub(crate) fn client_of(context: &RequestContext, headers: &HeaderMap) -> Client {
    let agent = headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok()).map(str::to_owned);
    Client {
        ip: context.ip,
        user_agent: agent,
        request_id: context.request_id.clone(),
        ip_is_the_customers: true,
        device: None,
    }
}

/// The signed-in customer from the session cookie, or `None`. A cookie that is not a live
/// session of the pages' merchant is audited.
async fn session_from_cookie(
    state: &AppState,
    headers: &HeaderMap,
    context: &RequestContext,
) -> Result<Option<CustomerSession>, ApiError> {
    let Some(token) = cookie(headers, SESSION_COOKIE) else {
        return Ok(None);
    };
    let session = state.identity.authenticate_session(token).await?;
    match (session, &state.settings.pages_merchant) {
        (Some(session), Some(merchant)) if merchant == &session.merchant_id && session.mode.is_live() => {
            Ok(Some(session))
        }
        _ => {
            let client = client_of(context, headers);
            let forged = state.identity.watch_session_cookie(token, &client).await;
            let reason = if forged { "forged_session_cookie" } else { "invalid_session_cookie" };
            state.identity.record_refused_session(state.settings.pages_merchant.as_ref(), reason, &client).await?;
            Ok(None)
        }
    }
}

fn unavailable(err: &ApiError) -> PageError {
    PageError::Failed(err.status, "the service is unavailable; try again shortly".into())
}

#[derive(Deserialize)]
struct CsrfField {
    #[serde(default)]
    csrf: String,
}

/// A form posted from one of our pages, CSRF-checked before its fields are read, with the
/// request's client and the page's CSRF token (for the page it answers with).
pub(crate) struct PageForm<T> {
    /// The form's fields.
    pub fields: T,
    /// Where the request came from.
    pub client: Client,
    /// The CSRF token to put in the answer's forms.
    pub csrf: Csrf,
}

impl<T: DeserializeOwned> FromRequest<AppState> for PageForm<T> {
    type Rejection = PageError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, PageError> {
        let (parts, body) = request.into_parts();
        let context = RequestContext::of(&parts);
        let headers = parts.headers.clone();
        let bytes = Bytes::from_request(Request::from_parts(parts, body), state)
            .await
            .map_err(|_| PageError::Failed(StatusCode::BAD_REQUEST, "The form could not be read.".into()))?;
        let presented: CsrfField = serde_urlencoded::from_bytes(&bytes).map_err(|_| PageError::Forbidden)?;
        if !csrf_holds(&headers, Some(&presented.csrf)) {
            return Err(PageError::Forbidden);
        }
        let fields = serde_urlencoded::from_bytes(&bytes)
            .map_err(|_| PageError::Failed(StatusCode::BAD_REQUEST, "The form is missing a field.".into()))?;
        Ok(Self { fields, client: client_of(&context, &headers), csrf: Csrf::of(&headers) })
    }
}

/// A form with no fields of its own (a button).
#[derive(Deserialize)]
pub(crate) struct Button {}

/// A script request from one of our pages, CSRF-checked by its `X-CSRF-Token` header.
pub(crate) struct PageScript {
    /// Where the request came from.
    pub client: Client,
}

fn forbidden_api() -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, "forbidden")
        .detail("the page's CSRF token is missing or wrong; reload the page")
}

impl FromRequestParts<AppState> for PageScript {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &AppState) -> Result<Self, ApiError> {
        let presented = parts.headers.get("x-csrf-token").and_then(|v| v.to_str().ok());
        if !csrf_holds(&parts.headers, presented) {
            return Err(forbidden_api());
        }
        Ok(Self { client: client_of(&RequestContext::of(parts), &parts.headers) })
    }
}

/// The signed-in customer of a page that only reads (`GET` or `HEAD`); anything else is refused,
/// so a state change must use [`SignedInForm`] or [`SignedInScript`].
pub(crate) struct SignedIn {
    /// The session.
    pub session: CustomerSession,
    /// The CSRF token for the page's forms.
    pub csrf: Csrf,
}

impl FromRequestParts<AppState> for SignedIn {
    type Rejection = PageError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, PageError> {
        if parts.method != Method::GET && parts.method != Method::HEAD {
            return Err(PageError::Forbidden);
        }
        let context = RequestContext::of(parts);
        match session_from_cookie(state, &parts.headers, &context).await {
            Ok(Some(session)) => Ok(Self { session, csrf: Csrf::of(&parts.headers) }),
            Ok(None) => Err(PageError::SignIn),
            Err(err) => Err(unavailable(&err)),
        }
    }
}

/// A signed-in customer's form: the CSRF check first, then the session.
pub(crate) struct SignedInForm<T> {
    /// The session.
    pub session: CustomerSession,
    /// The form's fields, the client and the CSRF token.
    pub form: PageForm<T>,
}

impl<T: DeserializeOwned + Send> FromRequest<AppState> for SignedInForm<T> {
    type Rejection = PageError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, PageError> {
        let (parts, body) = request.into_parts();
        let context = RequestContext::of(&parts);
        let headers = parts.headers.clone();
        let form = PageForm::<T>::from_request(Request::from_parts(parts, body), state).await?;
        match session_from_cookie(state, &headers, &context).await {
            Ok(Some(session)) => Ok(Self { session, form }),
            Ok(None) => Err(PageError::SignIn),
            Err(err) => Err(unavailable(&err)),
        }
    }
}

/// A signed-in customer's script request: the CSRF header first, then the session; JSON errors.
pub(crate) struct SignedInScript {
    /// The session.
    pub session: CustomerSession,
    /// Where the request came from.
    pub client: Client,
}

impl FromRequestParts<AppState> for SignedInScript {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let script = PageScript::from_request_parts(parts, state).await?;
        let context = RequestContext::of(parts);
        match session_from_cookie(state, &parts.headers, &context).await? {
            Some(session) => Ok(Self { session, client: script.client }),
            None => Err(ApiError::unauthenticated()),
        }
    }
}

/// The session cookie's customer when there is one, for pages that work either way (signing
/// out); never refuses.
pub(crate) async fn optional_session(
    state: &AppState,
    parts_headers: &HeaderMap,
    context: &RequestContext,
) -> Option<CustomerSession> {
    session_from_cookie(state, parts_headers, context).await.ok().flatten()
}
