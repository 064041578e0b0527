//! Routes by capability, and the assembly of the router with its middleware.

pub mod api_keys;
pub mod audit;
pub mod dev;
pub mod disputes;
pub mod forward;
pub mod health;
pub mod identity;
pub mod incidents;
pub mod merchant;
pub mod oauth;
pub mod passkeys;
pub mod payments;
pub mod saved_cards;
pub mod security;
pub mod staff;
pub mod vault;
pub mod webhooks;

#[cfg(test)]
mod secret_debug;

/// What a response type's `Debug` prints in place of a secret it carries (a session token, an API
/// key, a TOTP seed, recovery codes, a revealed value, a webhook signing secret).
pub(crate) const MASKED: &str = "***";

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, get, post, put};
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;

use crate::middleware;
use crate::problem::ApiError;
use crate::state::AppState;

/// The API router with every middleware layer.
pub fn router(state: AppState) -> Router {
    with_middleware(routes(&state.settings), state)
}

/// The API's routes, without middleware.
pub fn routes(settings: &crate::state::HttpSettings) -> Router<AppState> {
    let mut routes = Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/openapi.json", get(crate::openapi::document))
        .route("/v1/merchant", get(merchant::get_merchant))
        .route("/v1/api-keys", get(api_keys::list).post(api_keys::create))
        .route("/v1/api-keys/{id}", get(api_keys::get).delete(api_keys::revoke))
        .route("/v1/webhook_endpoints", get(webhooks::list).post(webhooks::create))
        .route("/v1/webhook_endpoints/{id}", get(webhooks::get).delete(webhooks::delete))
        .route("/v1/webhook_endpoints/{id}/rotate_secret", post(webhooks::rotate_secret))
        .route("/v1/webhook_endpoints/{id}/enable", post(webhooks::enable))
        .route("/v1/webhook_endpoints/{id}/disable", post(webhooks::disable))
        .route("/v1/webhook_endpoints/{id}/test", post(webhooks::test))
        .route("/v1/webhook_endpoints/{id}/deliveries", get(webhooks::deliveries))
        .route("/v1/webhook_endpoints/{id}/deliveries/{delivery}/redeliver", post(webhooks::redeliver))
        .route("/v1/webhook_event_types", get(webhooks::event_types))
        .route("/v1/orders", get(payments::list_orders).post(payments::create_order))
        .route("/v1/orders/{id}", get(payments::get_order).post(payments::amend_order))
        .route("/v1/payment_intents", get(payments::list_intents).post(payments::create_intent))
        .route("/v1/payment_intents/{id}", get(payments::get_intent))
        .route("/v1/payment_intents/{id}/confirm", post(payments::confirm))
        .route("/v1/payment_intents/{id}/capture", post(payments::capture))
        .route("/v1/payment_intents/{id}/cancel", post(payments::cancel))
        .route("/v1/payment_intents/{id}/sandbox_challenge", post(payments::sandbox_challenge))
        .route("/v1/refunds", get(payments::list_refunds).post(payments::create_refund))
        .route("/v1/refunds/{id}", get(payments::get_refund))
        .route("/v1/saved_cards", get(saved_cards::list_saved_cards))
        .route("/v1/saved_cards/{id}", get(saved_cards::get_saved_card).delete(saved_cards::remove_saved_card))
        .route("/v1/security/decisions", get(security::list_decisions).post(security::create_decision))
        .route("/v1/security/decisions/{id}", get(security::get_decision))
        .route("/v1/security/decisions/{id}/lift", post(security::lift_decision))
        .route("/v1/security/decisions/{id}/extend", post(security::extend_decision))
        .route("/v1/security/incidents", get(incidents::list_incidents).post(incidents::open_incident))
        .route("/v1/security/incidents/{id}", get(incidents::get_incident).post(incidents::change_incident))
        .route("/v1/security/incidents/{id}/notes", post(incidents::add_note))
        .route("/v1/security/incidents/{id}/playbooks/{step}", post(incidents::run_playbook_step))
        .route("/v1/disputes", get(disputes::list_disputes))
        .route("/v1/disputes/{id}", get(disputes::get_dispute))
        .route("/v1/gateways/stripe/webhook", post(disputes::stripe_webhook))
        .route("/v1/admin/jobs", get(webhooks::jobs))
        .route("/v1/audit/checkpoint", get(audit::checkpoint))
        .route("/v1/audit/entries", get(audit::entries))
        .route("/v1/audit/proofs/inclusion", get(audit::inclusion))
        .route("/v1/audit/proofs/consistency", get(audit::consistency))
        .route("/v1/tokens", post(vault::create))
        .route("/v1/tokens/batch", post(vault::batch))
        .route("/v1/tokens/search", post(vault::search))
        .route("/v1/tokens/{id}", get(vault::get).delete(vault::delete))
        .route("/v1/tokens/{id}/reveal", post(vault::reveal))
        .route("/v1/forward", post(forward::forward))
        .route("/v1/customers/{id}/data", delete(vault::erase_customer))
        .route("/oauth/token", post(oauth::token))
        .route("/.well-known/jwks.json", get(oauth::jwks))
        .route("/v1/identity/customers", post(identity::register))
        .route("/v1/identity/customers/{id}", get(identity::get_customer))
        .route("/v1/identity/customers/{id}/disable", post(identity::disable))
        .route("/v1/identity/customers/{id}/enable", post(identity::enable))
        .route("/v1/identity/login", post(identity::login))
        .route("/v1/identity/login/second-factor", post(identity::login_second_factor))
        .route("/v1/identity/sessions/authenticate", post(identity::authenticate_session))
        .route("/v1/identity/step-up/redeem", post(identity::redeem_step_up))
        .route("/v1/identity/password-strength", post(identity::password_strength))
        .route("/v1/identity/verify-email", post(identity::verify_email))
        .route("/v1/identity/password-reset", post(identity::request_password_reset))
        .route("/v1/identity/password-reset/complete", post(identity::complete_password_reset))
        .route("/v1/me/anti-phishing-phrase", put(identity::set_phrase))
        .route("/v1/me/email", post(identity::change_email))
        .route("/v1/me", get(identity::me))
        .route("/v1/me/session", get(identity::current_session))
        .route("/v1/me/logout", post(identity::logout))
        .route("/v1/me/sessions", get(identity::sessions))
        .route("/v1/me/payments", get(payments::my_payments))
        .route("/v1/me/saved_cards", get(saved_cards::my_saved_cards))
        .route("/v1/me/saved_cards/{id}", delete(saved_cards::remove_my_saved_card))
        .route("/v1/me/sessions/end-others", post(identity::end_other_sessions))
        .route("/v1/me/sessions/{id}", delete(identity::end_session))
        .route("/v1/me/password", post(identity::change_password))
        .route("/v1/me/totp", post(identity::begin_totp))
        .route("/v1/me/totp/confirm", post(identity::confirm_totp))
        .route("/v1/me/totp/remove", post(identity::remove_totp))
        .route("/v1/me/recovery-codes", post(identity::regenerate_recovery_codes))
        .route("/v1/me/step-up", post(identity::begin_step_up))
        .route("/v1/me/step-up/{id}/verify", post(identity::verify_step_up))
        .route("/v1/me/passkeys", get(passkeys::customer_passkeys).post(passkeys::begin_customer_registration))
        .route("/v1/me/passkeys/finish", post(passkeys::finish_customer_registration))
        .route("/v1/me/passkeys/{id}", delete(passkeys::remove_customer_passkey))
        .route("/v1/identity/login/passkey", post(passkeys::begin_customer_login))
        .route("/v1/identity/login/passkey/finish", post(passkeys::finish_customer_login))
        .route("/v1/identity/passkey-registration/finish", post(passkeys::finish_first_passkey))
        .route("/v1/staff/login/passkey", post(passkeys::begin_staff_factor))
        .route("/v1/staff/login/passkey/finish", post(passkeys::finish_staff_factor))
        .route("/v1/staff/login/passkey-enrolment", post(passkeys::begin_staff_enrolment))
        .route("/v1/staff/login/passkey-enrolment/finish", post(passkeys::finish_staff_enrolment))
        .route("/v1/staff/me/passkeys", get(passkeys::staff_passkeys).post(passkeys::begin_staff_registration))
        .route("/v1/staff/me/passkeys/finish", post(passkeys::finish_staff_registration))
        .route("/v1/staff/me/passkeys/{id}", delete(passkeys::remove_staff_passkey))
        .route("/v1/staff/login", post(staff::login))
        .route("/v1/staff/login/second-factor", post(staff::login_second_factor))
        .route("/v1/staff/login/totp", post(staff::begin_enrolment))
        .route("/v1/staff/login/totp/confirm", post(staff::confirm_enrolment))
        .route("/v1/staff/invitation/accept", post(staff::accept_invitation))
        .route("/v1/staff/me", get(staff::me))
        .route("/v1/staff/me/logout", post(staff::logout))
        .route("/v1/staff/me/password", post(staff::change_password))
        .route("/v1/staff", get(staff::list).post(staff::invite))
        .route("/v1/staff/{id}", get(staff::get))
        .route("/v1/staff/{id}/disable", post(staff::disable))
        .route("/v1/staff/{id}/enable", post(staff::enable))
        .route("/v1/staff/{id}/unlock", post(staff::unlock))
        .route("/v1/staff/{id}/reset-factors", post(staff::reset_factors))
        .route("/v1/staff/{id}/roles", post(staff::grant_role))
        .route("/v1/staff/{id}/roles/{role}", delete(staff::revoke_role))
        .route("/v1/roles", get(staff::roles).post(staff::create_role))
        .route("/v1/roles/{name}", delete(staff::delete_role))
        .route("/v1/approvals", get(staff::approvals))
        .route("/v1/approvals/{id}", get(staff::approval))
        .route("/v1/approvals/{id}/approve", post(staff::approve))
        .route("/v1/approvals/{id}/deny", post(staff::deny));
    if settings.dev_mailbox.is_some() {
        routes = routes.route("/dev/mailbox", get(dev::mailbox));
    }
    if settings.metrics_on_api {
        routes = routes.route("/metrics", get(health::metrics));
    }
    routes.merge(crate::pages::routes(settings))
}

/// Wraps routes in the full middleware stack (tests use it to add routes of their own).
pub fn with_middleware(routes: Router<AppState>, state: AppState) -> Router {
    let settings = state.settings.clone();
    let per_route = ServiceBuilder::new()
        .layer(axum::middleware::from_fn_with_state(state.clone(), middleware::observe))
        .layer(axum::middleware::from_fn_with_state(state.clone(), crate::idempotency::idempotency))
        // 408 marks our timeout; the finishing middleware answers it as 503 `timeout`.
        .layer(TimeoutLayer::with_status_code(http::StatusCode::REQUEST_TIMEOUT, settings.request_timeout))
        .layer(axum::middleware::from_fn(middleware::read_whole_body))
        .layer(CatchPanicLayer::custom(middleware::panic_response));
    let outer = ServiceBuilder::new()
        .layer(axum::middleware::from_fn_with_state(state.clone(), middleware::edge))
        .layer(axum::error_handling::HandleErrorLayer::new(middleware::layer_error))
        .load_shed()
        .layer(tower::limit::GlobalConcurrencyLimitLayer::new(settings.concurrency_limit))
        .layer(RequestBodyLimitLayer::new(settings.body_limit));
    routes
        .fallback(not_found)
        .layer(per_route)
        .layer(DefaultBodyLimit::max(settings.body_limit))
        .with_state(state)
        .layer(outer)
}

/// Any path no route serves: 404. A decoy path (`[detection] decoy_paths`) answers the same 404
/// and blocks the client for the whole deployment: no client of strongroom's asks for one.
async fn not_found(
    axum::extract::State(state): axum::extract::State<AppState>,
    uri: http::Uri,
    client: Option<axum::extract::Extension<middleware::ClientIp>>,
) -> ApiError {
    let path = uri.path();
    let decoy =
        state.decisions.settings().decoy_paths.iter().any(|decoy| {
            path.strip_prefix(decoy.as_str()).is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        });
    if decoy && let Some(axum::extract::Extension(middleware::ClientIp(ip))) = client {
        let sighting = strongroom_domain::detection::Sighting::new(
            strongroom_domain::detection::Point::DecoyRoute,
            None,
            strongroom_domain::detection::points::client_group(ip),
        )
        .respond(strongroom_domain::detection::points::client_scope(ip))
        .from_ip(Some(ip));
        state.decisions.sighted(sighting).await;
    }
    ApiError::for_bare_status(http::StatusCode::NOT_FOUND)
}
