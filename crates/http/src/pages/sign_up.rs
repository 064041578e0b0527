//! Customer self-registration (`/account/sign-up`), served only when the shop turned it on
//! (`pages.sign_up`): a page anyone may use creates accounts and sends mail to any address, which
//! a shop whose customers are created by its own backend does not want.
//! It calls the same registration as `POST /v1/identity/customers`: an address that has an
//! account gets the same answer, and its owner a notice instead of a second account.
//! Must never: say whether an address has an account, or echo a password.

use axum::extract::State;
use axum::response::Response;
use http::{HeaderMap, StatusCode};
use serde::Deserialize;
use strongroom_domain::DomainError;
use strongroom_domain::identity::accounts::Registration;
use strongroom_types::Secret;

use super::account::{live, merchant, respond};
use super::guard::PageForm;
use super::html::{esc, form};
use super::{Csrf, PageError};
use crate::state::AppState;

#[derive(Deserialize)]
pub(super) struct SignUpForm {
    email: String,
    password: String,
}

fn sign_up_body(csrf: &str, email: &str, error: Option<&str>) -> String {
    let error = error.map(|e| format!("<p class=\"error\" role=\"alert\">{}</p>", esc(e))).unwrap_or_default();
    let fields = format!(
        "<label for=\"email\">Email</label>\
         <input id=\"email\" name=\"email\" type=\"email\" autocomplete=\"username\" value=\"{}\" required>\
         <label for=\"password\">Password</label>\
         <input id=\"password\" name=\"password\" type=\"password\" autocomplete=\"new-password\" required>\
         <p class=\"note\">Use a long passphrase of several unrelated words that you use nowhere else. \
         Passwords known from data breaches are refused.</p>",
        esc(email)
    );
    format!(
        "{error}{}<p>Have an account? <a href=\"/account/login\">Sign in</a>.</p>",
        form("/account/sign-up", csrf, &fields, "Create my account")
    )
}

pub(super) async fn sign_up_page(headers: HeaderMap) -> Response {
    let csrf = Csrf::of(&headers);
    respond(&csrf, StatusCode::OK, "Create an account", &sign_up_body(&csrf.token, "", None))
}

pub(super) async fn sign_up(
    State(state): State<AppState>,
    PageForm { fields: input, client, csrf }: PageForm<SignUpForm>,
) -> Result<Response, PageError> {
    let merchant = merchant(&state)?;
    let registration = Registration { email: input.email.clone(), password: Some(Secret::new(input.password)) };
    match state.identity.register(live(&merchant), registration, &client).await {
        Ok(_) => {
            let body = format!(
                "<p id=\"signed-up\">We sent a mail to <strong>{}</strong>. Open the link in it to confirm your \
                 address; then <a href=\"/account/login\">sign in</a>. The link works once, for 24 hours.</p>",
                esc(&input.email)
            );
            Ok(respond(&csrf, StatusCode::OK, "Look in your mailbox", &body))
        }
        Err(err @ (DomainError::Rejected { .. } | DomainError::Validation(_))) => {
            let message = super::links::refusal(err, "").detail.unwrap_or_default();
            let body = sign_up_body(&csrf.token, &input.email, Some(&message));
            Ok(respond(&csrf, StatusCode::UNPROCESSABLE_ENTITY, "Create an account", &body))
        }
        Err(err) => Err(err.into()),
    }
}
