//! The pages that links in mail (and the printed staff invitation) open: address verification
//! (`/account/verify-email`), a new password (`/account/reset-password`, with
//! `/account/forgot-password` that mails its link) and staff invitations (`/staff/invitation`).
//! Their tokens travel in the URL's fragment, which browsers never send to a server, so no log
//! holds them: the pages' script reads the fragment, drops it from the address bar and posts the
//! token in the body of a script request ([`PageScript`]: CSRF-checked before the body is read).
//! They call the same domain code as the API's routes for these links.
//! Must never: put a token in a page or an answer, echo a password, or answer differently for an
//! address that has an account and one that has not.

use axum::Json;
use axum::extract::State;
use axum::response::Response;
use http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};
use strongroom_domain::DomainError;
use strongroom_domain::identity::factors::FactorAnswer;
use strongroom_types::Secret;

use super::Csrf;
use super::account::{live, merchant, respond};
use super::guard::{PageForm, PageScript};
use super::html::{esc, form};
use crate::problem::ApiError;
use crate::state::AppState;

/// What a link page's script shows once the link worked (text only: the script sets it with
/// `textContent`).
#[derive(Serialize)]
pub(super) struct Done {
    message: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    next: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_text: Option<&'static str>,
    /// For a passkey-only account without a passkey yet: the ceremony that registers its first
    /// one (`customer`, `ceremony`, `options`), finished at `/account/verify-email/passkey`.
    #[serde(skip_serializing_if = "Option::is_none")]
    passkey: Option<serde_json::Value>,
}

#[derive(Deserialize)]
pub(super) struct TokenJson {
    token: String,
}

#[derive(Deserialize)]
pub(super) struct FirstPasskeyJson {
    customer: String,
    ceremony: String,
    credential: serde_json::Value,
}

#[derive(Deserialize)]
pub(super) struct ResetJson {
    token: String,
    new_password: String,
    #[serde(default)]
    code: String,
    #[serde(default)]
    recovery_code: String,
}

#[derive(Deserialize)]
pub(super) struct InvitationJson {
    token: String,
    password: String,
}

#[derive(Deserialize)]
pub(super) struct EmailForm {
    email: String,
}

/// What a person calls a field the domain names by its pointer.
fn field_name(pointer: &str) -> &'static str {
    match pointer {
        "/email" => "The email address",
        "/new_password" | "/password" => "The password",
        "/token" => "The link",
        _ => "A field",
    }
}

/// A refusal for a page's script: the problem, with a `detail` a person can act on. Field errors
/// (a weak or breached password, a malformed address) become sentences naming the field, never
/// its value; a dead link says what to do instead.
pub(super) fn refusal(err: DomainError, dead_link: &'static str) -> ApiError {
    let sentences = match &err {
        DomainError::Rejected { code: "invalid_link" | "invalid_invitation", .. } => Some(dead_link.to_owned()),
        DomainError::Rejected { errors, .. } | DomainError::Validation(errors) => Some(
            errors.iter().map(|e| format!("{} {}.", field_name(&e.pointer), e.detail)).collect::<Vec<_>>().join(" "),
        ),
        _ => None,
    };
    let api = ApiError::from(err);
    match sentences {
        Some(text) => api.detail(text),
        None => api,
    }
}

/// A page whose form the script completes with the link's token: the button stays disabled
/// until the script has found one. Without script the page says why nothing happens.
fn link_page(headers: &HeaderMap, title: &str, intro: &str, action: &str, fields: &str, button: &str) -> Response {
    let csrf = Csrf::of(headers);
    let body = format!(
        "<p>{intro}</p><form method=\"post\" action=\"{action}\" data-link-form>{fields}\
         <button type=\"submit\" disabled>{button}</button></form>\
         <p id=\"link-status\" role=\"status\"></p>\
         <noscript><p class=\"error\">This page needs JavaScript: it reads the link's code from the address \
         bar, where it never reaches our server.</p></noscript>",
        action = esc(action),
        button = esc(button),
    );
    respond(&csrf, StatusCode::OK, title, &body)
}

const NEW_PASSWORD_HINT: &str = "<p class=\"note\">Use a long passphrase of several unrelated words that you \
     use nowhere else. Passwords known from data breaches are refused.</p>";

pub(super) async fn verify_email_page(headers: HeaderMap) -> Response {
    link_page(
        &headers,
        "Confirm your email address",
        "Confirm that this address is yours, and your account is ready.",
        "/account/verify-email",
        "",
        "Confirm my address",
    )
}

pub(super) async fn verify_email(
    State(state): State<AppState>,
    PageScript { client }: PageScript,
    Json(input): Json<TokenJson>,
) -> Result<Json<Done>, ApiError> {
    let merchant = state.settings.pages_merchant.clone().ok_or_else(ApiError::not_found)?;
    let customer = state.identity.verify_email(live(&merchant), &input.token, &client).await.map_err(|e| {
        refusal(
            e,
            "This link does not work: it was used already, has expired, or was cut short. If your address \
             is not confirmed yet, ask the shop for a new link.",
        )
    })?;
    // A passkey-only account has no way in until its first passkey exists: make it now.
    if let Some(ceremony) = state.identity.first_passkey_ceremony(live(&merchant), &customer).await? {
        return Ok(Json(Done {
            message: "Thank you: your email address is confirmed. Your account signs in with a passkey: \
                      create it now on this device.",
            next: None,
            next_text: None,
            passkey: Some(serde_json::json!({
                "customer": customer,
                "ceremony": ceremony.id,
                "options": ceremony.options,
            })),
        }));
    }
    Ok(Json(Done {
        message: "Thank you: your email address is confirmed.",
        next: Some("/account/login"),
        next_text: Some("Sign in"),
        passkey: None,
    }))
}

/// The first passkey of a passkey-only account whose address was just confirmed: registered,
/// and the customer signed in.
pub(super) async fn verify_email_passkey(
    State(state): State<AppState>,
    PageScript { client }: PageScript,
    Json(input): Json<FirstPasskeyJson>,
) -> Result<Response, ApiError> {
    let merchant = state.settings.pages_merchant.clone().ok_or_else(ApiError::not_found)?;
    let issued = state
        .identity
        .finish_first_passkey(live(&merchant), &input.customer, &input.ceremony, &input.credential, "passkey", &client)
        .await?;
    Ok(super::account::signed_in_json(&issued))
}

pub(super) async fn reset_password_page(headers: HeaderMap) -> Response {
    let fields = format!(
        "<label for=\"new_password\">New password</label>\
         <input id=\"new_password\" name=\"new_password\" type=\"password\" autocomplete=\"new-password\" required>\
         {NEW_PASSWORD_HINT}<details><summary>Turned on an authenticator app?</summary>\
         <label for=\"code\">The 6-digit code from your authenticator app</label>\
         <input id=\"code\" name=\"code\" type=\"text\" inputmode=\"numeric\" autocomplete=\"one-time-code\">\
         <label for=\"recovery_code\">…or one of your recovery codes</label>\
         <input id=\"recovery_code\" name=\"recovery_code\" type=\"text\" autocomplete=\"off\"></details>"
    );
    link_page(
        &headers,
        "Choose a new password",
        "Choose the new password for your account. Every place you are signed in will be signed out.",
        "/account/reset-password",
        &fields,
        "Set my new password",
    )
}

pub(super) async fn reset_password(
    State(state): State<AppState>,
    PageScript { client }: PageScript,
    Json(input): Json<ResetJson>,
) -> Result<Json<Done>, ApiError> {
    let merchant = state.settings.pages_merchant.clone().ok_or_else(ApiError::not_found)?;
    let factor = if !input.code.trim().is_empty() {
        Some(FactorAnswer::Totp(Secret::new(input.code)))
    } else if !input.recovery_code.trim().is_empty() {
        Some(FactorAnswer::RecoveryCode(Secret::new(input.recovery_code)))
    } else {
        None
    };
    let outcome = state
        .identity
        .complete_password_reset(live(&merchant), &input.token, Secret::new(input.new_password), factor, &client)
        .await;
    match outcome {
        Ok(()) => Ok(Json(Done {
            message: "Your new password is set, and every session of your account was ended.",
            next: Some("/account/login"),
            next_text: Some("Sign in with it"),
            passkey: None,
        })),
        Err(DomainError::InvalidFactor) => Err(ApiError::new(StatusCode::UNAUTHORIZED, "invalid_code").detail(
            "Your account has an authenticator app: enter the 6-digit code it shows now, or one of your \
             recovery codes.",
        )),
        Err(err) => Err(refusal(
            err,
            "This link does not work: it was used already, is older than 15 minutes, or was cut short. \
             Ask for a new one.",
        )),
    }
}

fn forgot_body(csrf: &str) -> String {
    let fields = "<label for=\"email\">Your email address</label>\
                  <input id=\"email\" name=\"email\" type=\"email\" autocomplete=\"username\" required>";
    format!(
        "<p>We mail you a link to choose a new password. It works once, for 15 minutes.</p>{}",
        form("/account/forgot-password", csrf, fields, "Mail me a link")
    )
}

pub(super) async fn forgot_password_page(headers: HeaderMap) -> Response {
    let csrf = Csrf::of(&headers);
    respond(&csrf, StatusCode::OK, "Forgot your password?", &forgot_body(&csrf.token))
}

pub(super) async fn forgot_password(
    State(state): State<AppState>,
    PageForm { fields: input, client, csrf }: PageForm<EmailForm>,
) -> Result<Response, super::PageError> {
    let merchant = merchant(&state)?;
    // Answered at once, as the API does: the look-up and the mail happen afterwards, so the
    // answer's timing says nothing about whether the address has an account.
    let identity = state.identity.clone();
    tokio::spawn(async move {
        if let Err(err) = identity.request_password_reset(live(&merchant), &input.email, &client).await {
            tracing::error!(error = %err, "password reset request failed");
        }
    });
    let body = "<p id=\"reset-requested\">If this address has an account here, a link to choose a new password \
                is on its way. It works once, for 15 minutes. Nothing arrived? Look in your spam folder, \
                and ask again in a minute.</p><p><a href=\"/account/login\">Back to sign-in</a></p>";
    Ok(respond(&csrf, StatusCode::OK, "Look in your mailbox", body))
}

pub(super) async fn invitation_page(headers: HeaderMap) -> Response {
    let fields = format!(
        "<label for=\"password\">Your password</label>\
         <input id=\"password\" name=\"password\" type=\"password\" autocomplete=\"new-password\" required>\
         {NEW_PASSWORD_HINT}"
    );
    link_page(
        &headers,
        "Accept your staff invitation",
        "You were invited to the shop's staff. Choose the password for your staff account; at your first \
         sign-in you will also set up an authenticator app, which every staff account needs.",
        "/staff/invitation",
        &fields,
        "Accept the invitation",
    )
}

pub(super) async fn accept_invitation(
    State(state): State<AppState>,
    PageScript { client }: PageScript,
    Json(input): Json<InvitationJson>,
) -> Result<Json<Done>, ApiError> {
    state.staff.accept_invitation(&input.token, Secret::new(input.password), &client).await.map_err(|e| {
        refusal(
            e,
            "This invitation does not work: it was accepted already, has expired, or the link was cut short. \
             Ask the person who invited you for a new one.",
        )
    })?;
    Ok(Json(Done {
        message: "Your staff account is ready. Sign in to the shop's staff tools with your email address and \
                  this password; at your first sign-in you set up your authenticator app.",
        next: None,
        next_text: None,
        passkey: None,
    }))
}
