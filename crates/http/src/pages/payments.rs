//! The customer's pages of 3-D Secure: strongroom's hand-off page (`/pay/authenticate/{id}`),
//! where the shop sends the browser and which leads to the gateway's page; the return
//! (`/pay/return/{id}`), where strongroom asks the gateway what became of the payment and sends
//! the customer on to the shop; and, with the sandbox gateway, its stand-in for the issuer's
//! challenge page (`/sandbox/challenges/{id}`), whose buttons pass or fail the challenge.
//!
//! The return is a `GET` because gateways send the browser back with one. It changes nothing on
//! the browser's word: it only asks the gateway, as the reconciliation job would, so a forged or
//! early return cannot make a payment succeed or fail.
//! Must never: show more of an intent than its amount, currency and status, take an outcome
//! from the request, or answer the sandbox's challenge without the CSRF check.

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde::Deserialize;
use strongroom_domain::payments::authentication::AuthenticationView;

use super::account::respond;
use super::guard::PageForm;
use super::html::{esc, form, page_going_on};
use super::{Csrf, PageError};
use crate::state::AppState;

/// What a customer reads for each status of an intent.
fn status_text(status: &str) -> &'static str {
    match status {
        "succeeded" | "requires_capture" => "Your payment went through.",
        "processing" => "Your payment is being processed. The shop will let you know when it is complete.",
        "requires_action" => "Your bank still asks you to confirm this payment.",
        "canceled" => "This payment was canceled.",
        _ => "Your payment did not go through. Go back to the shop to try again or use another card.",
    }
}

/// The link back to the shop, when it gave one.
fn back_to_shop(view: &AuthenticationView) -> String {
    view.return_url
        .as_deref()
        .map(|url| format!("<p><a class=\"button\" href=\"{}\" id=\"return\">Return to the shop</a></p>", esc(url)))
        .unwrap_or_default()
}

/// `GET /pay/authenticate/{id}`: the hand-off page.
pub(super) async fn authenticate_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    let csrf = Csrf::of(&headers);
    let view = state.payments.authentication_page(&id).await.map_err(not_found)?;
    let body = match &view.gateway_url {
        Some(gateway) => format!(
            "<p>Your bank asks you to confirm this payment of <strong>{}</strong>.</p>\
             <p><a class=\"button\" href=\"{}\" id=\"continue\">Continue to your bank</a></p>",
            esc(&view.amount),
            esc(gateway)
        ),
        None => format!("<p id=\"status\">{}</p>{}", esc(status_text(view.status)), back_to_shop(&view)),
    };
    Ok(respond(&csrf, StatusCode::OK, "Confirm your payment", &body))
}

/// `GET /pay/return/{id}`: back from the gateway's page. strongroom asks the gateway, shows the
/// outcome and sends the customer on to the shop's page at once (not by a 303: after the
/// sandbox's form, a redirect to another origin would be the form's, which the CSP forbids).
pub(super) async fn return_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    let view = state.payments.return_from_authentication(&id).await.map_err(not_found)?;
    let csrf = Csrf::of(&headers);
    let body = format!("<p id=\"status\">{}</p>{}", esc(status_text(view.status)), back_to_shop(&view));
    let mut response = page_going_on(StatusCode::OK, "Your payment", &csrf.token, &body, view.return_url.as_deref());
    if let Some(cookie) = &csrf.set {
        response.headers_mut().append(header::SET_COOKIE, cookie.clone());
    }
    Ok(response)
}

/// `GET /sandbox/challenges/{id}`: the sandbox's stand-in for the issuer's page.
pub(super) async fn sandbox_challenge_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(challenge): Path<String>,
) -> Result<Response, PageError> {
    let csrf = Csrf::of(&headers);
    let (view, status) = state.payments.sandbox_challenge(&challenge).await.map_err(not_found)?;
    let action = format!("/sandbox/challenges/{challenge}");
    let body = if status == "pending" {
        format!(
            "<p class=\"notice\">This is strongroom's sandbox: no bank is involved and no money moves.</p>\
             <p>Confirm the payment of <strong>{}</strong>?</p>{}{}",
            esc(&view.amount),
            form(&action, &csrf.token, "<input type=\"hidden\" name=\"outcome\" value=\"pass\">", "Pass the challenge"),
            form(&action, &csrf.token, "<input type=\"hidden\" name=\"outcome\" value=\"fail\">", "Fail the challenge"),
        )
    } else {
        format!("<p id=\"status\">This challenge was answered already.</p>{}", back_to_shop(&view))
    };
    Ok(respond(&csrf, StatusCode::OK, "Sandbox bank: confirm a payment", &body))
}

/// The sandbox challenge's form.
#[derive(Deserialize)]
pub(super) struct ChallengeForm {
    outcome: String,
}

/// `POST /sandbox/challenges/{id}`: passes or fails the challenge, then back through the return.
pub(super) async fn answer_sandbox_challenge(
    State(state): State<AppState>,
    Path(challenge): Path<String>,
    input: PageForm<ChallengeForm>,
) -> Result<Response, PageError> {
    let passed = match input.fields.outcome.as_str() {
        "pass" => true,
        "fail" => false,
        _ => return Err(PageError::Failed(StatusCode::BAD_REQUEST, "The form is missing a field.".into())),
    };
    let intent = state.payments.answer_sandbox_challenge(&challenge, passed).await.map_err(not_found)?;
    let location = HeaderValue::from_str(&format!("/pay/return/{intent}"))
        .map_err(|_| PageError::Failed(StatusCode::BAD_REQUEST, "The challenge is not valid.".into()))?;
    Ok((StatusCode::SEE_OTHER, [(header::LOCATION, location)]).into_response())
}

/// A missing intent or challenge reads as a dead link.
fn not_found(err: strongroom_domain::DomainError) -> PageError {
    match err {
        strongroom_domain::DomainError::NotFound => PageError::Failed(
            StatusCode::NOT_FOUND,
            "This payment link does not work: it was cut short, or the payment does not exist.".into(),
        ),
        other => other.into(),
    }
}
