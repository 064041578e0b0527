//! Disputes (`/v1/disputes`, scope `payments:read`, in Stripe's list shape) and the inbound
//! gateway webhook (`POST /v1/gateways/stripe/webhook`): no API key, authenticated by its
//! `Stripe-Signature` alone, handed raw to the domain, which verifies it and processes each event
//! once.
//! Must never: parse the webhook body before its signature is verified, echo the body, the
//! signature or the signing secret in an answer or a log line, or answer 2xx for an event whose
//! processing failed (the gateway must retry it).

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};
use strongroom_domain::payments::gateway_events::{Receipt, ReceiveError};
use strongroom_domain::ports::disputes::DisputeRecord;
use strongroom_types::Timestamp;
use utoipa::{IntoParams, ToSchema};

use crate::extract::{ApiKeyAuth, ApiQuery, scope};
use crate::problem::{ApiError, Problem};
use crate::state::AppState;

/// A dispute (a chargeback the customer opened at the card issuer).
#[derive(Debug, Serialize, ToSchema)]
pub struct DisputeBody {
    /// Always `dispute`.
    pub object: &'static str,
    /// `dp_…`
    pub id: String,
    /// The disputed payment intent (`pi_…`).
    pub payment_intent: String,
    /// Disputed amount, minor units.
    pub amount: i64,
    /// Lower-case ISO 4217 code.
    pub currency: String,
    /// The gateway's reason: `fraudulent`, `product_not_received`, `duplicate`, …
    pub reason: String,
    /// The gateway's status: `warning_needs_response`, `needs_response`, `under_review`, `won`,
    /// `lost`, …
    pub status: String,
    /// Until when evidence can be submitted at the gateway (RFC 3339).
    pub evidence_due_by: Option<String>,
    /// `stripe`
    pub gateway: String,
    /// The gateway's id of the dispute.
    pub gateway_reference: String,
    /// Whether it is live.
    pub livemode: bool,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub updated_at: String,
}

impl From<DisputeRecord> for DisputeBody {
    fn from(r: DisputeRecord) -> Self {
        Self {
            object: "dispute",
            amount: r.amount.minor(),
            currency: r.amount.currency().lowercase(),
            evidence_due_by: r.evidence_due_by.map(Timestamp::to_rfc3339),
            livemode: r.mode.is_live(),
            created_at: r.created_at.to_rfc3339(),
            updated_at: r.updated_at.to_rfc3339(),
            id: r.id,
            payment_intent: r.payment_intent,
            reason: r.reason,
            status: r.status,
            gateway: r.gateway,
            gateway_reference: r.gateway_reference,
        }
    }
}

/// A page of disputes, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct DisputeList {
    /// Always `list`.
    pub object: &'static str,
    /// The disputes.
    pub data: Vec<DisputeBody>,
    /// Whether older ones follow (pass the last id as `starting_after`).
    pub has_more: bool,
}

/// Paging of a dispute list.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct DisputeListParams {
    /// 1 to 100, default 10.
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    /// The id of the last dispute of the previous page.
    pub starting_after: Option<String>,
}

/// The answer to a gateway's delivery.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookReceipt {
    /// Always true.
    pub received: bool,
    /// False when the event was seen before (nothing was done again).
    pub processed: bool,
}

/// One dispute.
#[utoipa::path(get, path = "/v1/disputes/{id}", tag = "payments", security(("api_key" = ["payments:read"])),
    params(("id" = String, Path, description = "`dp_…`")),
    responses(
        (status = 200, body = DisputeBody),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn get_dispute(
    auth: ApiKeyAuth<scope::PaymentsRead>,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<DisputeBody>, ApiError> {
    Ok(Json(state.gateway_events.dispute(auth.principal.space(), &id).await?.into()))
}

/// Disputes of the key's data space, newest first.
#[utoipa::path(get, path = "/v1/disputes", tag = "payments", security(("api_key" = ["payments:read"])),
    params(DisputeListParams),
    responses(
        (status = 200, body = DisputeList),
        (status = 422, body = Problem, content_type = "application/problem+json", description = "bad `limit` or `starting_after`"),
    ))]
pub async fn list_disputes(
    auth: ApiKeyAuth<scope::PaymentsRead>,
    State(state): State<AppState>,
    ApiQuery(params): ApiQuery<DisputeListParams>,
) -> Result<Json<DisputeList>, ApiError> {
    let (found, has_more) =
        state.gateway_events.disputes(auth.principal.space(), params.starting_after.as_deref(), params.limit).await?;
    Ok(Json(DisputeList { object: "list", data: found.into_iter().map(DisputeBody::from).collect(), has_more }))
}

/// Stripe's webhook: register this URL at Stripe with its signing secret in
/// `payments.stripe.webhook_secret`. Each event takes effect once (a replay answers 200 and does
/// nothing); unknown event types are acknowledged.
#[utoipa::path(post, path = "/v1/gateways/stripe/webhook", tag = "payments",
    request_body(content = String, content_type = "application/json", description = "a Stripe event, signed"),
    responses(
        (status = 200, body = WebhookReceipt),
        (status = 400, body = Problem, content_type = "application/problem+json",
            description = "`gateway_signature_missing`, `gateway_signature_malformed`, `gateway_signature_invalid`, `gateway_signature_expired`, `gateway_event_malformed`"),
        (status = 409, body = Problem, content_type = "application/problem+json", description = "`stripe_not_configured`: the gateway is not Stripe"),
    ))]
pub async fn stripe_webhook(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<WebhookReceipt>, ApiError> {
    if !state.gateway_events.receives("stripe") {
        return Err(ApiError::new(StatusCode::CONFLICT, "stripe_not_configured")
            .detail("the payment gateway is not Stripe (payments.gateway); this endpoint receives nothing"));
    }
    let signature = headers.get("stripe-signature").and_then(|v| v.to_str().ok());
    match state.gateway_events.receive(signature, &body).await {
        Ok(receipt) => Ok(Json(WebhookReceipt { received: true, processed: receipt == Receipt::Processed })),
        Err(ReceiveError::Rejected(why)) => {
            Err(ApiError::new(StatusCode::BAD_REQUEST, why.code()).detail(why.detail()))
        }
        Err(ReceiveError::Failed(err)) => Err(err.into()),
    }
}
