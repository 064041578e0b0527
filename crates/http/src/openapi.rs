//! The OpenAPI 3.1 document, generated from the handlers' annotations.

use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::routes::{
    api_keys, audit, forward, health, identity, merchant, oauth, passkeys, payments, staff, vault, webhooks,
};

/// The document.
#[derive(Debug, OpenApi)]
#[openapi(
    info(title = "strongroom", description = "Security core for online shops: card and customer-data vault, identity, staff access, audit log, webhooks, payments."),
    paths(
        health::healthz,
        health::readyz,
        health::metrics,
        merchant::get_merchant,
        api_keys::create,
        api_keys::list,
        api_keys::get,
        api_keys::revoke,
        webhooks::create,
        webhooks::list,
        webhooks::get,
        webhooks::delete,
        webhooks::rotate_secret,
        webhooks::enable,
        webhooks::disable,
        webhooks::deliveries,
        webhooks::redeliver,
        webhooks::test,
        webhooks::event_types,
        webhooks::jobs,
        payments::create_order,
        payments::list_orders,
        payments::get_order,
        payments::amend_order,
        payments::create_intent,
        payments::list_intents,
        payments::get_intent,
        payments::confirm,
        payments::capture,
        payments::cancel,
        payments::sandbox_challenge,
        payments::create_refund,
        payments::list_refunds,
        payments::get_refund,
        payments::my_payments,
        crate::routes::security::list_decisions,
        crate::routes::security::get_decision,
        crate::routes::security::create_decision,
        crate::routes::security::lift_decision,
        crate::routes::security::extend_decision,
        crate::routes::incidents::list_incidents,
        crate::routes::incidents::get_incident,
        crate::routes::incidents::open_incident,
        crate::routes::incidents::change_incident,
        crate::routes::incidents::add_note,
        crate::routes::incidents::run_playbook_step,
        crate::routes::saved_cards::list_saved_cards,
        crate::routes::saved_cards::get_saved_card,
        crate::routes::saved_cards::remove_saved_card,
        crate::routes::saved_cards::my_saved_cards,
        crate::routes::saved_cards::remove_my_saved_card,
        crate::routes::disputes::list_disputes,
        crate::routes::disputes::get_dispute,
        crate::routes::disputes::stripe_webhook,
        audit::checkpoint,
        audit::entries,
        audit::inclusion,
        audit::consistency,
        vault::create,
        vault::batch,
        vault::search,
        vault::get,
        vault::reveal,
        vault::delete,
        vault::erase_customer,
        forward::forward,
        oauth::token,
        oauth::jwks,
        identity::register,
        identity::get_customer,
        identity::disable,
        identity::enable,
        identity::login,
        identity::login_second_factor,
        identity::authenticate_session,
        identity::redeem_step_up,
        identity::password_strength,
        identity::me,
        identity::current_session,
        identity::logout,
        identity::sessions,
        identity::end_session,
        identity::end_other_sessions,
        identity::change_password,
        identity::begin_totp,
        identity::confirm_totp,
        identity::remove_totp,
        identity::regenerate_recovery_codes,
        identity::begin_step_up,
        identity::verify_step_up,
        identity::verify_email,
        identity::request_password_reset,
        identity::complete_password_reset,
        identity::set_phrase,
        identity::change_email,
        staff::login,
        staff::login_second_factor,
        staff::begin_enrolment,
        staff::confirm_enrolment,
        staff::accept_invitation,
        staff::me,
        staff::logout,
        staff::change_password,
        staff::list,
        staff::invite,
        staff::get,
        staff::disable,
        staff::enable,
        staff::unlock,
        staff::reset_factors,
        staff::grant_role,
        staff::revoke_role,
        staff::roles,
        staff::create_role,
        staff::delete_role,
        staff::approvals,
        staff::approval,
        staff::approve,
        staff::deny,
        passkeys::begin_customer_registration,
        passkeys::finish_customer_registration,
        passkeys::customer_passkeys,
        passkeys::remove_customer_passkey,
        passkeys::begin_customer_login,
        passkeys::finish_customer_login,
        passkeys::finish_first_passkey,
        passkeys::begin_staff_factor,
        passkeys::finish_staff_factor,
        passkeys::begin_staff_enrolment,
        passkeys::finish_staff_enrolment,
        passkeys::begin_staff_registration,
        passkeys::finish_staff_registration,
        passkeys::staff_passkeys,
        passkeys::remove_staff_passkey,
    ),
    components(schemas(crate::problem::Problem, crate::problem::ProblemField)),
    modifiers(&Security, &StandardResponses),
)]
pub struct ApiDoc;

#[derive(Debug)]
struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("sr_live_… / sr_test_…")
                    .description(Some("An API key in the Authorization header"))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "session",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("srs_…")
                    .description(Some("A customer's session token in the Authorization header"))
                    .build(),
            ),
        );
        // The webhook event catalogue, as an enumeration (what `event_types` may name).
        let catalogue: String = strongroom_domain::webhooks::EVENT_TYPES
            .iter()
            .map(|(name, meaning)| format!("- `{name}`: {meaning}\n"))
            .collect();
        let mut names: Vec<serde_json::Value> = vec![serde_json::Value::from("*")];
        names.extend(strongroom_domain::webhooks::EVENT_TYPES.iter().map(|(name, _)| serde_json::Value::from(*name)));
        let event_type = utoipa::openapi::schema::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .enum_values(Some(names))
            .description(Some(format!(
                "A webhook event type (`*`: every type). Each event is POSTed as `{{id, type, created_at, data}}`, \
                 signed per Standard Webhooks; `data` holds ids and reason codes only.\n\n{catalogue}"
            )))
            .build();
        components.schemas.insert("WebhookEventType".to_owned(), event_type.into());
    }
}

/// The answers every operation of a kind can give, added where an operation does not list them
/// itself, so the document names every status the server sends (a client generated from it, and
/// schemathesis, check that): 401 and 403 where a credential is required, 404 where a path names
/// an object, 400, 413, 415 and 422 where a body is read, 409 and 422 for an `Idempotency-Key` on
/// a POST, 429 and 503 everywhere (throttling, load shedding, timeouts, an unavailable database
/// or audit log). Each is a problem document.
#[derive(Debug)]
struct StandardResponses;

impl StandardResponses {
    fn problem(description: &str) -> utoipa::openapi::RefOr<utoipa::openapi::Response> {
        use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
        ResponseBuilder::new()
            .description(description)
            .content(
                "application/problem+json",
                ContentBuilder::new().schema(Some(Ref::from_schema_name("Problem"))).build(),
            )
            .build()
            .into()
    }
}

impl Modify for StandardResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for (path, item) in openapi.paths.paths.iter_mut() {
            let names_object = path.contains('{');
            let operations = [
                (&mut item.get, false),
                (&mut item.post, true),
                (&mut item.put, true),
                (&mut item.patch, true),
                (&mut item.delete, false),
            ];
            for (operation, is_write) in operations {
                let Some(operation) = operation.as_mut() else { continue };
                let secured = operation.security.as_ref().is_some_and(|s| !s.is_empty());
                let has_body = operation.request_body.is_some();
                let mut standard: Vec<(&str, &str)> = Vec::new();
                if secured {
                    standard.push(("401", "No valid credential (`unauthenticated`)"));
                    standard.push((
                        "403",
                        "The credential lacks a scope (`insufficient_scope`) or is of the wrong kind (`forbidden`)",
                    ));
                }
                if names_object {
                    standard.push(("404", "No such object (`not_found`)"));
                }
                if has_body {
                    standard.push(("400", "The body is not JSON, or malformed (`malformed_request`)"));
                    standard.push(("413", "The body exceeds the limit (`payload_too_large`)"));
                    standard.push(("415", "The body is not `application/json` (`unsupported_media_type`)"));
                }
                if has_body || is_write {
                    standard.push(("422", "Invalid fields, or an invalid `Idempotency-Key` (see `errors`)"));
                }
                if is_write {
                    standard.push((
                        "409",
                        "A conflict, or an `Idempotency-Key` in progress, unavailable for replay or of unknown outcome",
                    ));
                }
                standard.push(("429", "Too many requests (`rate_limited`, with `Retry-After`)"));
                standard.push((
                    "503",
                    "Overloaded, timed out, or the database or audit log is unavailable (retry with back-off)",
                ));
                for (status, description) in standard {
                    operation
                        .responses
                        .responses
                        .entry(status.to_owned())
                        .or_insert_with(|| Self::problem(description));
                }
            }
        }
    }
}

/// `GET /openapi.json`
pub async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
