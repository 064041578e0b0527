//! Hosted pages for customers: sign-in (password, second factor, passkey), second-factor
//! enrolment and the security centre, the pages mailed links open (address verification, a new
//! password), and sign-up when the shop allows it; server-rendered, for shops that do not build
//! their own. Plus the one page for staff, where a staff invitation link leads, and the payment
//! pages of 3-D Secure (the hand-off to the gateway's page and the return from it, [`payments`]).
//!
//! Owns: the session cookie (`__Host-sr_session`: `Secure; HttpOnly; SameSite=Strict; Path=/`,
//! no `Domain`), CSRF protection (a `__Host-sr_csrf` cookie whose value every form and script
//! request must repeat, and a same-origin check of `Origin`/`Sec-Fetch-Site`), the pages' strict
//! CSP (scripts and styles from this origin only, no inline code), and HTML escaping.
//! The guards are extractors in [`guard`]: a handler names the one it needs and cannot run
//! without its check.
//! Must never: put a token in a URL or a page, render a value unescaped, change state on GET, or
//! accept a state change without the CSRF token.

mod account;
mod guard;
mod html;
mod links;
mod payments;
mod sign_up;

use axum::Router;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http::{HeaderMap, HeaderValue, StatusCode, header};

use crate::state::{AppState, HttpSettings};

/// The session cookie.
pub const SESSION_COOKIE: &str = "__Host-sr_session";
/// The CSRF cookie.
pub const CSRF_COOKIE: &str = "__Host-sr_csrf";

/// The pages' content security policy: nothing inline, nothing from elsewhere.
pub const PAGE_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The hosted pages' routes: the staff invitation page, the payment pages of 3-D Secure and the
/// pages' assets always (the invitation links strongroom prints and mails, and the hand-off
/// links of payments, lead there); the customers' pages when the
/// settings name their merchant; sign-up when the settings also allow it.
pub fn routes(settings: &HttpSettings) -> Router<AppState> {
    let always = Router::new()
        .route("/staff/invitation", get(links::invitation_page).post(links::accept_invitation))
        .route("/account/assets/account.js", get(account::script))
        .route("/account/assets/account.css", get(account::stylesheet))
        .route("/pay/authenticate/{id}", get(payments::authenticate_page))
        .route("/pay/return/{id}", get(payments::return_page))
        .route(
            "/sandbox/challenges/{challenge}",
            get(payments::sandbox_challenge_page).post(payments::answer_sandbox_challenge),
        );
    if settings.pages_merchant.is_none() {
        return always;
    }
    let mut customers = always
        .route("/account", get(account::home))
        .route("/account/login", get(account::login_page).post(account::login))
        .route("/account/login/second-factor", post(account::second_factor))
        .route("/account/login/passkey/options", post(account::passkey_login_options))
        .route("/account/login/passkey/finish", post(account::passkey_login_finish))
        .route("/account/security", get(account::security))
        .route("/account/mfa", get(account::mfa_page))
        .route("/account/mfa/totp", post(account::totp_begin))
        .route("/account/mfa/totp/confirm", post(account::totp_confirm))
        .route("/account/passkeys/options", post(account::passkey_add_options))
        .route("/account/passkeys/finish", post(account::passkey_add_finish))
        .route("/account/sessions/end-others", post(account::end_other_sessions))
        .route("/account/saved-cards/{id}/remove", post(account::remove_saved_card))
        .route("/account/sessions/{id}/end", post(account::end_session))
        .route("/account/phrase", post(account::set_phrase))
        .route("/account/logout", post(account::logout))
        .route("/account/verify-email", get(links::verify_email_page).post(links::verify_email))
        .route("/account/verify-email/passkey", post(links::verify_email_passkey))
        .route("/account/reset-password", get(links::reset_password_page).post(links::reset_password))
        .route("/account/forgot-password", get(links::forgot_password_page).post(links::forgot_password));
    if settings.pages_sign_up {
        customers = customers.route("/account/sign-up", get(sign_up::sign_up_page).post(sign_up::sign_up));
    }
    customers
}

/// A cookie's value from the request.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find_map(|(k, v)| (k == name).then_some(v))
}

/// A `Set-Cookie` for a `__Host-` cookie (`max_age` 0 deletes it).
fn set_cookie(name: &str, value: &str, max_age: Option<u64>) -> HeaderValue {
    let age = max_age.map(|s| format!("; Max-Age={s}")).unwrap_or_default();
    HeaderValue::from_str(&format!("{name}={value}; Path=/; Secure; HttpOnly; SameSite=Strict{age}"))
        .unwrap_or_else(|_| HeaderValue::from_static("invalid=1"))
}

/// The request's CSRF token, and the cookie to set when the browser has none yet.
pub(crate) struct Csrf {
    token: String,
    set: Option<HeaderValue>,
}

impl Csrf {
    fn of(headers: &HeaderMap) -> Self {
        match cookie(headers, CSRF_COOKIE).filter(|v| v.len() == 43) {
            Some(token) => Self { token: token.to_owned(), set: None },
            None => {
                let bytes: [u8; 32] = strongroom_types::entropy::random_array(&strongroom_types::OsEntropy);
                let token = base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, bytes);
                let set = Some(set_cookie(CSRF_COOKIE, &token, None));
                Self { token, set }
            }
        }
    }
}

/// Why a page request was refused.
#[derive(Debug)]
pub(crate) enum PageError {
    /// Not signed in (or the session ended): to the sign-in page.
    SignIn,
    /// A state change without the CSRF token, or from another site.
    Forbidden,
    /// Anything else, shown as a short page.
    Failed(StatusCode, String),
}

impl From<strongroom_domain::DomainError> for PageError {
    fn from(err: strongroom_domain::DomainError) -> Self {
        let api = crate::problem::ApiError::from(err);
        let message = api.detail.clone().unwrap_or_else(|| crate::problem::ApiError::title_of(api.code).to_owned());
        if api.status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!(code = api.code, "page failed");
        }
        PageError::Failed(api.status, message)
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        match self {
            PageError::SignIn => redirect("/account/login"),
            PageError::Forbidden => html::error_page(
                StatusCode::FORBIDDEN,
                "This request did not come from this site's own page. Go back, reload the page and try again.",
            ),
            PageError::Failed(status, message) => html::error_page(status, &message),
        }
    }
}

/// 303 to a path on this site.
fn redirect(to: &'static str) -> Response {
    (StatusCode::SEE_OTHER, [(header::LOCATION, HeaderValue::from_static(to))]).into_response()
}
