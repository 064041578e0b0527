//! `POST /v1/forward` (scope `vault:forward`): the detokenize-and-forward proxy. The shop's
//! request for its gateway comes in with placeholders, goes out with card data filled in, and the
//! gateway's answer comes back with card numbers masked (`strongroom_domain::forward`).
//! The answer is kept by the idempotency middleware like any other, so a retry under the same
//! `Idempotency-Key` replays it instead of charging twice; so are a timeout (504) and a
//! connection broken after sending (502 `forward_gateway_failed`), after which the gateway may
//! have acted (`crate::idempotency`).
//! Must never: log or echo a header value, the body or the destination's query.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use http::StatusCode;
use serde::{Deserialize, Serialize};
use strongroom_domain::forward::{ForwardError, ForwardInput, GatewayFailure};
use strongroom_domain::vault::tokens::Source;
use strongroom_types::Secret;
use utoipa::ToSchema;

use crate::extract::{ApiJson, ApiKeyAuth, RequestContext, scope};
use crate::problem::{ApiError, Problem};
use crate::state::AppState;

/// A request for a payment gateway, with placeholders where card data belongs.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ForwardRequest {
    /// `https://host[:port]/path?query` on the deployment's allow-list (`[forward] allowed_hosts`).
    #[schema(min_length = 1, max_length = 2048)]
    pub destination: String,
    /// `POST` (the default), `PUT`, `PATCH`, `GET` or `DELETE`.
    #[serde(default)]
    pub method: Option<String>,
    /// Headers for the gateway (e.g. its `Authorization` and `Content-Type`), sent as given and
    /// never logged or stored. `Host`, `Content-Length`, hop-by-hop and proxy headers are refused.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// The body as text, with placeholders `{{tok_…:number}}`, `{{tok_…:exp_month}}`,
    /// `{{tok_…:exp_year}}`, `{{tok_…:cvc}}` and `{{tok_…:name}}`, escaped by the `Content-Type`
    /// header (JSON string content, or percent-encoding for a form).
    #[serde(default)]
    pub body: String,
}

/// Shows neither header values (the gateway's secret key) nor the body.
impl std::fmt::Debug for ForwardRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ForwardRequest")
            .field("method", &self.method)
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// The gateway's answer, card numbers masked.
#[derive(Debug, Serialize, ToSchema)]
pub struct ForwardResponseBody {
    /// Always `forward_response`.
    pub object: &'static str,
    /// The gateway's HTTP status (a redirect is not followed: its 3xx comes back as it is).
    pub status: u16,
    /// The gateway's `content-type`, `content-language`, `retry-after`, `location`,
    /// `request-id` and `x-request-id`, when it sent them (card numbers masked).
    pub headers: BTreeMap<String, String>,
    /// The gateway's body as text (invalid UTF-8 replaced), every card number in it masked
    /// (`424242******4242`).
    pub body: String,
    /// The gateway's time, from connecting to the end of its answer, in milliseconds.
    pub duration_ms: u64,
    /// The `forward.sent` audit entry.
    pub audit_index: u64,
}

fn gateway_error(failure: GatewayFailure) -> ApiError {
    match failure {
        GatewayFailure::Unreachable => ApiError::new(StatusCode::BAD_GATEWAY, "forward_gateway_unreachable")
            .detail("could not connect to the gateway (refused, unresolvable or its certificate not trusted); nothing was sent"),
        GatewayFailure::Failed => ApiError::new(StatusCode::BAD_GATEWAY, "forward_gateway_failed").detail(
            "the gateway's answer broke off after the request was sent: it may have acted; ask the gateway before \
             retrying",
        ),
        GatewayFailure::TooLarge => ApiError::new(StatusCode::BAD_GATEWAY, "forward_response_too_large")
            .detail("the gateway answered with a body larger than the limit ([forward] max_response_bytes)"),
        GatewayFailure::Timeout => ApiError::new(StatusCode::GATEWAY_TIMEOUT, "forward_gateway_timeout").detail(
            "the gateway did not answer in time ([forward] timeout): it may have acted; ask the gateway before retrying",
        ),
        // Mapped to 422 by the service; kept total here.
        GatewayFailure::Refused => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "forward_destination_not_allowed")
            .detail("the destination is refused by the outbound policy"),
    }
}

/// Fills in card data from the caller's own tokens and sends the request to an allow-listed
/// HTTPS gateway; answers with the gateway's status, safe headers and masked body.
#[utoipa::path(post, path = "/v1/forward", tag = "vault", security(("api_key" = ["vault:forward"])),
    request_body = ForwardRequest,
    responses(
        (status = 200, body = ForwardResponseBody, description = "The gateway answered (whatever its status)"),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json", description = "insufficient_scope, or forbidden for staff sessions"),
        (status = 404, body = Problem, content_type = "application/problem+json", description = "a placeholder names a token that is missing or not the caller's (merchant and mode)"),
        (status = 409, body = Problem, content_type = "application/problem+json"),
        (status = 410, body = Problem, content_type = "application/problem+json", description = "a token's customer was erased"),
        (status = 413, body = Problem, content_type = "application/problem+json"),
        (status = 415, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json", description = "forward_destination_not_allowed, forward_template_invalid, forward_placeholder_unknown_field, forward_token_not_card, forward_cvc_unavailable, forward_field_empty, forward_content_type_unsupported, forward_header_not_allowed, card_number_in_free_text or validation_failed"),
        (status = 429, body = Problem, content_type = "application/problem+json"),
        (status = 500, body = Problem, content_type = "application/problem+json", description = "integrity_error"),
        (status = 502, body = Problem, content_type = "application/problem+json", description = "forward_gateway_unreachable (nothing sent), forward_gateway_failed or forward_response_too_large"),
        (status = 503, body = Problem, content_type = "application/problem+json"),
        (status = 504, body = Problem, content_type = "application/problem+json", description = "forward_gateway_timeout: the gateway may have acted"),
    ))]
pub async fn forward(
    auth: ApiKeyAuth<scope::VaultForward>,
    context: RequestContext,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<ForwardRequest>,
) -> Result<Json<ForwardResponseBody>, ApiError> {
    let source = Source { ip: context.ip, request_id: context.request_id.clone() };
    let ForwardRequest { destination, method, headers, body } = body;
    let input = ForwardInput {
        destination,
        method,
        headers: headers.into_iter().map(|(name, value)| (name, Secret::new(value))).collect(),
        body: Secret::new(body),
    };
    let output = match state.forward.forward(&auth.principal, &source, input).await {
        Ok(output) => output,
        Err(ForwardError::Domain(err)) => return Err(err.into()),
        Err(ForwardError::Gateway(failure)) => return Err(gateway_error(failure)),
    };
    Ok(Json(ForwardResponseBody {
        object: "forward_response",
        status: output.status,
        headers: output.headers.into_iter().collect(),
        body: String::from_utf8_lossy(&output.body).into_owned(),
        duration_ms: output.duration_ms,
        audit_index: output.audit_index,
    }))
}
