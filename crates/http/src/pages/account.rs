//! The account pages: sign-in, second factor, passkeys, TOTP enrolment and the security centre,
//! and the page helpers the other page modules share.
//! Must never: show a secret after the response that created it (TOTP seed and recovery codes
//! are shown once), or act on a request without its guard (the extractors of [`super::guard`]).

use axum::Json;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use serde::Deserialize;
use strongroom_domain::DomainError;
use strongroom_domain::identity::accounts::LoginOutcome;
use strongroom_domain::identity::factors::FactorAnswer;
use strongroom_domain::identity::sessions::IssuedSession;
use strongroom_domain::merchants::MerchantId;
use strongroom_domain::modes::{Mode, Space};
use strongroom_types::Secret;

use super::guard::{Button, PageForm, PageScript, SignedIn, SignedInForm, SignedInScript, optional_session};
use super::html::{esc, form, page};
use super::{Csrf, PageError, SESSION_COOKIE, redirect, set_cookie};
use crate::extract::RequestContext;
use crate::problem::ApiError;
use crate::state::AppState;

/// The hosted pages serve the live customers of their merchant (test-mode customers exist only
/// through test keys).
pub(super) fn live(merchant: &MerchantId) -> Space<'_> {
    Space { merchant, mode: Mode::Live }
}

pub(super) fn merchant(state: &AppState) -> Result<MerchantId, PageError> {
    state
        .settings
        .pages_merchant
        .clone()
        .ok_or_else(|| PageError::Failed(StatusCode::NOT_FOUND, "The account pages are not set up here.".into()))
}

/// A page, with the CSRF cookie set when the browser had none.
pub(super) fn respond(csrf: &Csrf, status: StatusCode, title: &str, body: &str) -> Response {
    let mut response = page(status, title, &csrf.token, body);
    if let Some(cookie) = &csrf.set {
        response.headers_mut().append(header::SET_COOKIE, cookie.clone());
    }
    response
}

/// Signed in: the session cookie, then the security centre.
fn signed_in(issued: &IssuedSession) -> Response {
    let mut response = redirect("/account/security");
    response.headers_mut().append(header::SET_COOKIE, set_cookie(SESSION_COOKIE, issued.token.expose(), None));
    response
}

#[derive(Deserialize)]
pub(super) struct LoginForm {
    email: String,
    password: String,
}

#[derive(Deserialize)]
pub(super) struct FactorForm {
    challenge: String,
    #[serde(default)]
    code: String,
    #[serde(default)]
    recovery_code: String,
    #[serde(default)]
    email_code: String,
}

#[derive(Deserialize)]
pub(super) struct CodeForm {
    code: String,
}

#[derive(Deserialize)]
pub(super) struct PhraseForm {
    phrase: String,
}

#[derive(Deserialize)]
pub(super) struct FinishJson {
    ceremony: String,
    credential: serde_json::Value,
    #[serde(default)]
    label: String,
}

pub(super) async fn home() -> Response {
    redirect("/account/security")
}

fn login_body(csrf: &str, sign_up: bool, error: Option<&str>) -> String {
    let error = error.map(|e| format!("<p class=\"error\" role=\"alert\">{}</p>", esc(e))).unwrap_or_default();
    let sign_up = if sign_up { " New here? <a href=\"/account/sign-up\">Create an account</a>." } else { "" };
    let fields = "<label for=\"email\">Email</label><input id=\"email\" name=\"email\" type=\"email\" autocomplete=\"username webauthn\" required>\
                  <label for=\"password\">Password</label><input id=\"password\" name=\"password\" type=\"password\" autocomplete=\"current-password\" required>";
    format!(
        "{error}{}<p><a href=\"/account/forgot-password\">Forgot your password?</a>{sign_up}</p>\
         <h2>Or use a passkey</h2><p class=\"note\">Your phone, your computer's fingerprint or face \
         unlock, or a security key: nothing to type, and nothing a fake site can steal.</p>\
         <button id=\"passkey-login\" type=\"button\" class=\"secondary\">Sign in with a passkey</button>\
         <p id=\"passkey-status\" role=\"status\"></p>",
        form("/account/login", csrf, fields, "Sign in")
    )
}

pub(super) async fn login_page(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let csrf = Csrf::of(&headers);
    respond(&csrf, StatusCode::OK, "Sign in", &login_body(&csrf.token, state.settings.pages_sign_up, None))
}

fn factor_body(csrf: &str, challenge: &str, factors: &[&str], error: Option<&str>) -> String {
    let error = error.map(|e| format!("<p class=\"error\" role=\"alert\">{}</p>", esc(e))).unwrap_or_default();
    let hidden = format!("<input type=\"hidden\" name=\"challenge\" value=\"{}\">", esc(challenge));
    let fields = if factors.contains(&"email_code") {
        format!(
            "{hidden}<label for=\"email_code\">The code we just emailed you</label>\
                 <input id=\"email_code\" name=\"email_code\" type=\"text\" inputmode=\"numeric\" autocomplete=\"one-time-code\" required>"
        )
    } else {
        format!(
            "{hidden}<label for=\"code\">The 6-digit code from your authenticator app</label>\
                 <input id=\"code\" name=\"code\" type=\"text\" inputmode=\"numeric\" autocomplete=\"one-time-code\">\
                 <label for=\"recovery_code\">…or one of your recovery codes</label>\
                 <input id=\"recovery_code\" name=\"recovery_code\" type=\"text\" autocomplete=\"off\">"
        )
    };
    format!("{error}{}", form("/account/login/second-factor", csrf, &fields, "Continue"))
}

pub(super) async fn login(
    State(state): State<AppState>,
    PageForm { fields: input, client, csrf }: PageForm<LoginForm>,
) -> Result<Response, PageError> {
    let merchant = merchant(&state)?;
    let decoy = state.decisions.is_decoy_account(&input.email);
    let outcome = state.identity.login(live(&merchant), &input.email, Secret::new(input.password), &client).await;
    if decoy {
        state.decisions.decoy_sign_in(&merchant, client.ip);
    }
    match outcome {
        Ok(LoginOutcome::Authenticated(issued)) => Ok(signed_in(&issued)),
        Ok(LoginOutcome::SecondFactorRequired { challenge, factors, .. }) => {
            Ok(respond(&csrf, StatusCode::OK, "One more step", &factor_body(&csrf.token, &challenge, &factors, None)))
        }
        Err(DomainError::InvalidCredentials) => Ok(respond(
            &csrf,
            StatusCode::UNAUTHORIZED,
            "Sign in",
            &login_body(&csrf.token, state.settings.pages_sign_up, Some("The email or password is not right.")),
        )),
        Err(err) => Err(err.into()),
    }
}

pub(super) async fn second_factor(
    State(state): State<AppState>,
    PageForm { fields: input, client, csrf }: PageForm<FactorForm>,
) -> Result<Response, PageError> {
    let merchant = merchant(&state)?;
    let (answer, factors) = if !input.email_code.trim().is_empty() {
        (FactorAnswer::EmailCode(Secret::new(input.email_code)), vec!["email_code"])
    } else if !input.recovery_code.trim().is_empty() {
        (FactorAnswer::RecoveryCode(Secret::new(input.recovery_code)), vec!["totp"])
    } else {
        (FactorAnswer::Totp(Secret::new(input.code)), vec!["totp"])
    };
    match state.identity.login_second_factor(live(&merchant), &input.challenge, answer, &client).await {
        Ok(issued) => Ok(signed_in(&issued)),
        Err(DomainError::InvalidFactor) => {
            let body = factor_body(
                &csrf.token,
                &input.challenge,
                &factors,
                Some("That code is not right, was used already, or this sign-in has expired."),
            );
            Ok(respond(&csrf, StatusCode::UNAUTHORIZED, "One more step", &body))
        }
        Err(err) => Err(err.into()),
    }
}

pub(super) async fn passkey_login_options(
    State(state): State<AppState>,
    PageScript { client }: PageScript,
) -> Result<Json<serde_json::Value>, ApiError> {
    let merchant = state.settings.pages_merchant.clone().ok_or_else(ApiError::not_found)?;
    let ceremony = state.identity.begin_passkey_login(live(&merchant), &client).await?;
    Ok(Json(serde_json::json!({"ceremony": ceremony.id, "options": ceremony.options})))
}

pub(super) async fn passkey_login_finish(
    State(state): State<AppState>,
    PageScript { client }: PageScript,
    Json(input): Json<FinishJson>,
) -> Result<Response, ApiError> {
    let merchant = state.settings.pages_merchant.clone().ok_or_else(ApiError::not_found)?;
    let issued =
        state.identity.finish_passkey_login(live(&merchant), &input.ceremony, &input.credential, &client).await?;
    Ok(signed_in_json(&issued))
}

/// Signed in by a script request: the session cookie, and `{"signed_in": true}`.
pub(super) fn signed_in_json(issued: &IssuedSession) -> Response {
    let mut response = Json(serde_json::json!({"signed_in": true})).into_response();
    response.headers_mut().append(header::SET_COOKIE, set_cookie(SESSION_COOKIE, issued.token.expose(), None));
    response
}

fn when(t: strongroom_types::Timestamp) -> String {
    let text = t.to_rfc3339();
    text.get(..16).map(|s| s.replace('T', " ")).unwrap_or(text)
}

/// A payment's status as its customer reads it.
fn payment_status(intent: &strongroom_domain::ports::payments::IntentRecord) -> &'static str {
    use strongroom_domain::payments::state::State as S;
    match intent.state {
        S::Succeeded if intent.amount_refunded >= intent.amount_received && intent.amount_refunded > 0 => "Refunded",
        S::Succeeded if intent.amount_refunded > 0 => "Partly refunded",
        S::Succeeded => "Paid",
        S::RequiresCapture => "Authorised",
        S::Canceled => "Canceled",
        S::RequiresAction => "Waiting for your confirmation",
        S::RequiresPaymentMethod if intent.last_payment_error.is_some() => "Declined",
        S::RequiresPaymentMethod | S::RequiresConfirmation => "Not paid",
        S::Authorizing | S::Capturing | S::Voiding => "Processing",
    }
}

/// What an audit action means to a customer.
fn describe(action: &str) -> &str {
    match action {
        "customer.login" => "Sign-in",
        "customer.login_second_factor" => "Second factor at sign-in",
        "customer.logout" => "Signed out",
        "customer.session_ended" => "Session ended",
        "customer.sessions_ended" => "Other sessions ended",
        "customer.password_changed" => "Password changed",
        "customer.password_reset" | "customer.password_reset_completed" => "Password reset",
        "customer.totp_enrolled" => "Authenticator app turned on",
        "customer.totp_removed" => "Authenticator app turned off",
        "customer.totp_enrolment_started" => "Authenticator app set-up started",
        "customer.recovery_code_used" => "Recovery code used",
        "customer.recovery_codes_regenerated" => "New recovery codes",
        "customer.passkey_added" => "Passkey added",
        "customer.passkey_removed" => "Passkey removed",
        "customer.email_verified" => "Email address verified",
        "customer.phrase_set" => "Anti-phishing phrase set",
        "customer.step_up_verified" | "customer.step_up_redeemed" => "Payment confirmation",
        "customer.registered" => "Account created",
        "customer.disabled" => "Account disabled by the shop",
        "customer.enabled" => "Account enabled by the shop",
        "saved_card.removed" => "Saved card removed",
        other => other,
    }
}

pub(super) async fn security(
    State(state): State<AppState>,
    SignedIn { session, csrf }: SignedIn,
) -> Result<Response, PageError> {
    let me = state.identity.me(&session).await?;
    let sessions = state.identity.list_sessions(&session).await?;
    let passkeys = state.identity.passkeys(&session).await?;
    let (payments, _) = state.payments.customer_payments(&session, None, Some(10)).await?;
    let (cards, _) = state.payments.customer_saved_cards(&session, None, Some(20)).await?;
    let activity = state.audit.entries_about(&session.merchant_id, &session.customer_id, 20).await.map_err(|e| {
        tracing::error!(error = %e, "reading the security history failed");
        PageError::Failed(StatusCode::SERVICE_UNAVAILABLE, "Your security history is unavailable; try again.".into())
    })?;
    let token = &csrf.token;
    let mut body = format!(
        "<p>Signed in as <strong>{}</strong>{}.</p>",
        esc(&me.email),
        if me.email_verified { "" } else { " (address not verified yet)" }
    );
    body.push_str("<h2>Sessions and devices</h2><table><tr><th>Device</th><th>Address</th><th>Signed in</th><th>Last seen</th><th></th></tr>");
    for s in &sessions {
        let current = s.id == session.session_id;
        let action = if current {
            "<strong>this session</strong>".to_owned()
        } else {
            format!(
                "<form class=\"inline\" method=\"post\" action=\"/account/sessions/{}/end\"><input type=\"hidden\" name=\"csrf\" value=\"{}\"><button type=\"submit\">End</button></form>",
                esc(&s.id),
                esc(token)
            )
        };
        body.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{action}</td></tr>",
            esc(s.user_agent.as_deref().unwrap_or("unknown")),
            esc(s.ip.as_deref().unwrap_or("unknown")),
            when(s.created_at),
            when(s.last_seen_at),
        ));
    }
    body.push_str("</table>");
    body.push_str(&form("/account/sessions/end-others", token, "", "End all other sessions"));

    body.push_str("<h2>Second factors</h2>");
    body.push_str(&format!(
        "<p>Authenticator app: <strong>{}</strong>. Recovery codes left: {}. <a href=\"/account/mfa\">{}</a></p>",
        if me.totp { "on" } else { "off" },
        me.recovery_codes_left,
        if me.totp { "Manage" } else { "Turn on" }
    ));
    body.push_str("<p>Passkeys:</p><ul id=\"passkeys\">");
    if passkeys.is_empty() {
        body.push_str("<li>none yet</li>");
    }
    for p in &passkeys {
        body.push_str(&format!(
            "<li>{} (added {}{})</li>",
            esc(&p.label),
            when(p.created_at),
            p.last_used_at.map(|t| format!(", last used {}", when(t))).unwrap_or_default()
        ));
    }
    body.push_str(
        "</ul><label for=\"passkey-label\">Name for a new passkey</label>\
         <input id=\"passkey-label\" type=\"text\" maxlength=\"64\" value=\"my device\">\
         <button id=\"passkey-add\" type=\"button\">Add a passkey</button><p id=\"passkey-status\" role=\"status\"></p>",
    );

    body.push_str("<h2>Your payments</h2>");
    if payments.is_empty() {
        body.push_str("<p id=\"payments\">No payments yet.</p>");
    } else {
        body.push_str(
            "<table id=\"payments\"><tr><th>When</th><th>Amount</th><th>Card</th><th>Status</th><th>Reference</th></tr>",
        );
        for p in &payments {
            let card = p.card.as_ref().map(|c| format!("{} •••• {}", c.brand, c.last4)).unwrap_or_default();
            body.push_str(&format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                when(p.created_at),
                esc(&p.amount.to_string()),
                esc(&card),
                payment_status(p),
                esc(&p.id),
            ));
        }
        body.push_str("</table>");
    }
    body.push_str(
        "<h2>Saved cards</h2><p class=\"note\">Cards you agreed to keep for later payments. Removing one takes \
         effect at once; the shop can no longer charge it.</p>",
    );
    if cards.is_empty() {
        body.push_str("<p id=\"saved-cards\">No saved cards.</p>");
    } else {
        body.push_str("<table id=\"saved-cards\"><tr><th>Card</th><th>Used for</th><th>Saved</th><th>You agreed to</th><th></th></tr>");
        for c in &cards {
            let used_for = match c.usage {
                strongroom_domain::ports::payments::FutureUsage::OnSession => "your own checkouts",
                strongroom_domain::ports::payments::FutureUsage::OffSession => {
                    "your checkouts and charges the shop makes without you"
                }
            };
            body.push_str(&format!(
                "<tr><td>{} •••• {}</td><td>{used_for}</td><td>{}</td><td>{}</td><td><form class=\"inline\" method=\"post\" action=\"/account/saved-cards/{}/remove\"><input type=\"hidden\" name=\"csrf\" value=\"{}\"><button type=\"submit\">Remove</button></form></td></tr>",
                esc(&c.card.brand),
                esc(&c.card.last4),
                when(c.created_at),
                esc(&c.consent.text),
                esc(&c.id),
                esc(token),
            ));
        }
        body.push_str("</table>");
    }

    body.push_str("<h2>Recent security activity</h2><table id=\"activity\"><tr><th>When</th><th>What</th><th>Result</th><th>From</th></tr>");
    for record in &activity {
        let leaf: serde_json::Value = serde_json::from_slice(&record.leaf).unwrap_or_default();
        let action = leaf["action"].as_str().unwrap_or_default();
        body.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            when(record.time),
            esc(describe(action)),
            esc(leaf["outcome"]["result"].as_str().unwrap_or_default()),
            esc(leaf["source"]["ip"].as_str().unwrap_or("")),
        ));
    }
    body.push_str("</table><p class=\"note\">Something here that was not you? Change your password and end the other sessions.</p>");

    body.push_str(
        "<h2>Anti-phishing phrase</h2><p class=\"note\">Every email we send you shows this phrase. An email \
         without it, or with a different one, is not from us.</p>",
    );
    body.push_str(&form(
        "/account/phrase",
        token,
        "<label for=\"phrase\">Your phrase</label><input id=\"phrase\" name=\"phrase\" type=\"text\" maxlength=\"64\" required>",
        "Save phrase",
    ));

    body.push_str(
        "<h2>Staying safe</h2><ul>\
         <li><strong>Passwords:</strong> use a long passphrase of several unrelated words, different for every \
         site, kept in a password manager. Length beats symbols.</li>\
         <li><strong>Phishing:</strong> we never ask for your password, codes or card number by email, phone or \
         chat. Sign in by typing the shop's address yourself, not from a link in a message.</li>\
         <li><strong>Passkeys</strong> cannot be phished: your device only offers them to the real site.</li></ul>",
    );
    body.push_str(&form("/account/logout", token, "", "Sign out"));
    Ok(respond(&csrf, StatusCode::OK, "Security centre", &body))
}

pub(super) async fn mfa_page(
    State(state): State<AppState>,
    SignedIn { session, csrf }: SignedIn,
) -> Result<Response, PageError> {
    let me = state.identity.me(&session).await?;
    let body = if me.totp {
        "<p>Your authenticator app is on. To replace it, turn it off with the API or contact the shop.</p>\
         <p><a href=\"/account/security\">Back to the security centre</a></p>"
            .to_owned()
    } else {
        format!(
            "<p>An authenticator app (such as one on your phone) makes a new 6-digit code every 30 seconds. \
             With it on, a stolen password is not enough to sign in.</p>{}",
            form("/account/mfa/totp", &csrf.token, "", "Set up an authenticator app")
        )
    };
    Ok(respond(&csrf, StatusCode::OK, "Two-step sign-in", &body))
}

fn qr_svg(text: &str) -> Result<String, PageError> {
    let code = qrcode::QrCode::new(text.as_bytes())
        .map_err(|_| PageError::Failed(StatusCode::INTERNAL_SERVER_ERROR, "Could not draw the QR code.".into()))?;
    let svg = code.render::<qrcode::render::svg::Color<'_>>().min_dimensions(200, 200).build();
    Ok(base64::Engine::encode(&base64::engine::general_purpose::STANDARD, svg))
}

pub(super) async fn totp_begin(
    State(state): State<AppState>,
    SignedInForm { session, form: posted }: SignedInForm<Button>,
) -> Result<Response, PageError> {
    let PageForm { client, csrf, .. } = posted;
    let enrolment = state.identity.begin_totp(&session, &client).await?;
    let qr = qr_svg(enrolment.otpauth_uri.expose())?;
    let fields = "<label for=\"code\">The 6-digit code your app shows now</label>\
                  <input id=\"code\" name=\"code\" type=\"text\" inputmode=\"numeric\" autocomplete=\"one-time-code\" required>";
    let body = format!(
        "<p>Scan this code with your authenticator app, or type the key below into it.</p>\
         <img class=\"qr\" alt=\"QR code for your authenticator app\" src=\"data:image/svg+xml;base64,{qr}\">\
         <p>Key: <code id=\"totp-secret\">{}</code></p>{}",
        esc(enrolment.secret.expose()),
        form("/account/mfa/totp/confirm", &csrf.token, fields, "Turn on")
    );
    Ok(respond(&csrf, StatusCode::OK, "Set up your authenticator app", &body))
}

pub(super) async fn totp_confirm(
    State(state): State<AppState>,
    SignedInForm { session, form: posted }: SignedInForm<CodeForm>,
) -> Result<Response, PageError> {
    let PageForm { fields: input, client, csrf } = posted;
    match state.identity.confirm_totp(&session, Secret::new(input.code), true, &client).await {
        Ok((codes, _)) => {
            let list: String = codes.iter().map(|c| format!("<li>{}</li>", esc(c.expose()))).collect();
            let body = format!(
                "<p>Your authenticator app is on. Keep these recovery codes somewhere safe: each signs you in \
                 once if you lose your phone. They are shown only now.</p><ul class=\"codes\" id=\"recovery-codes\">{list}</ul>\
                 <p><a href=\"/account/security\">Back to the security centre</a></p>"
            );
            Ok(respond(&csrf, StatusCode::OK, "Authenticator app on", &body))
        }
        Err(DomainError::InvalidFactor) => Ok(respond(
            &csrf,
            StatusCode::UNAUTHORIZED,
            "Set up your authenticator app",
            &format!(
                "<p class=\"error\" role=\"alert\">That code is not right. Start again.</p>{}",
                form("/account/mfa/totp", &csrf.token, "", "Start again")
            ),
        )),
        Err(err) => Err(err.into()),
    }
}

pub(super) async fn passkey_add_options(
    State(state): State<AppState>,
    SignedInScript { session, .. }: SignedInScript,
) -> Result<Json<serde_json::Value>, ApiError> {
    let ceremony = state.identity.begin_passkey_registration(&session).await?;
    Ok(Json(serde_json::json!({"ceremony": ceremony.id, "options": ceremony.options})))
}

pub(super) async fn passkey_add_finish(
    State(state): State<AppState>,
    SignedInScript { session, client }: SignedInScript,
    Json(input): Json<FinishJson>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let record = state
        .identity
        .finish_passkey_registration(&session, &input.ceremony, &input.credential, &input.label, &client)
        .await?;
    Ok(Json(serde_json::json!({"passkey": record.id})))
}

pub(super) async fn end_session(
    State(state): State<AppState>,
    Path(id): Path<String>,
    SignedInForm { session, form: posted }: SignedInForm<Button>,
) -> Result<Response, PageError> {
    state.identity.end_session(&session, &id, &posted.client).await?;
    Ok(redirect("/account/security"))
}

pub(super) async fn remove_saved_card(
    State(state): State<AppState>,
    Path(id): Path<String>,
    SignedInForm { session, form: posted }: SignedInForm<Button>,
) -> Result<Response, PageError> {
    let source =
        strongroom_domain::vault::tokens::Source { ip: posted.client.ip, request_id: posted.client.request_id.clone() };
    state.payments.remove_customer_saved_card(&session, &source, &id).await?;
    Ok(redirect("/account/security"))
}

pub(super) async fn end_other_sessions(
    State(state): State<AppState>,
    SignedInForm { session, form: posted }: SignedInForm<Button>,
) -> Result<Response, PageError> {
    state.identity.end_other_sessions(&session, &posted.client).await?;
    Ok(redirect("/account/security"))
}

pub(super) async fn set_phrase(
    State(state): State<AppState>,
    SignedInForm { session, form: posted }: SignedInForm<PhraseForm>,
) -> Result<Response, PageError> {
    state.identity.set_phrase(&session, &posted.fields.phrase, &posted.client).await?;
    Ok(redirect("/account/security"))
}

pub(super) async fn logout(
    State(state): State<AppState>,
    context: RequestContext,
    headers: HeaderMap,
    form: PageForm<Button>,
) -> Result<Response, PageError> {
    // Signing out works with or without a live session (the cookie is cleared either way); the
    // form's CSRF check has run before this line.
    if let Some(session) = optional_session(&state, &headers, &context).await {
        state.identity.end_session(&session, &session.session_id, &form.client).await?;
    }
    let mut response = redirect("/account/login");
    let headers = response.headers_mut();
    headers.append(header::SET_COOKIE, set_cookie(SESSION_COOKIE, "", Some(0)));
    headers.insert(HeaderName::from_static("clear-site-data"), HeaderValue::from_static("\"cookies\", \"storage\""));
    Ok(response)
}

pub(super) async fn script() -> Response {
    asset(include_str!("../../assets/account.js"), "text/javascript; charset=utf-8")
}

pub(super) async fn stylesheet() -> Response {
    asset(include_str!("../../assets/account.css"), "text/css; charset=utf-8")
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=300"));
    response
}
