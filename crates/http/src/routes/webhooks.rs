//! The shop's webhook endpoints (`/v1/webhook_endpoints`, scope `admin:webhooks`), the event
//! catalogue (`/v1/webhook_event_types`) and the job runner's status (`/v1/admin/jobs`, scope
//! `admin:metrics`).
//! Must never: show a signing secret except in the answer that made it, or echo a URL in an error.

use super::MASKED;
use axum::Json;
use axum::extract::{Path, State};
use http::StatusCode;
use serde::{Deserialize, Serialize};
use strongroom_domain::audit::event::{AuditEvent, Outcome};
use strongroom_domain::outbox::ports::DeliveryRecord;
use strongroom_domain::webhooks::{EVENT_TYPES, EndpointView, EndpointWithSecret};
use strongroom_types::Timestamp;
use utoipa::{IntoParams, ToSchema};

use crate::extract::{ApiJson, ApiKeyAuth, ApiQuery, RequestContext, scope};
use crate::problem::{ApiError, Problem};
use crate::state::AppState;

/// A webhook endpoint.
#[derive(Debug, Serialize, ToSchema)]
pub struct EndpointBody {
    /// Always `webhook_endpoint`.
    pub object: &'static str,
    /// `we_…`
    pub id: String,
    /// Where events are POSTed.
    pub url: String,
    /// Subscribed event types (`*` for all).
    pub event_types: Vec<String>,
    /// Whether it receives live events; false: the events of test-mode keys (`sr_test_…`), which
    /// created it.
    pub livemode: bool,
    /// Free text.
    pub description: String,
    /// `enabled` or `disabled` (by hand, or after failing for five days).
    pub status: String,
    /// Failing without a success since (RFC 3339).
    pub failing_since: Option<String>,
    /// After a rotation: until when the previous secret still signs (a second signature).
    pub previous_secret_expires_at: Option<String>,
    /// RFC 3339.
    pub created_at: String,
}

impl From<EndpointView> for EndpointBody {
    fn from(v: EndpointView) -> Self {
        Self {
            object: v.object,
            id: v.id,
            url: v.url,
            event_types: v.event_types,
            livemode: v.livemode,
            description: v.description,
            status: v.status,
            failing_since: v.failing_since,
            previous_secret_expires_at: v.previous_secret_expires_at,
            created_at: v.created_at,
        }
    }
}

/// An endpoint with its signing secret, shown only in this answer.
#[derive(Serialize, ToSchema)]
pub struct EndpointWithSecretBody {
    /// The endpoint.
    #[serde(flatten)]
    pub endpoint: EndpointBody,
    /// `whsec_…`: verify `webhook-signature` with it (Standard Webhooks). strongroom shows it once.
    pub secret: String,
}

/// Masks the secret: this answer is shown once, and a `Debug` print must not repeat it.
impl std::fmt::Debug for EndpointWithSecretBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EndpointWithSecretBody").field("endpoint", &self.endpoint).field("secret", &MASKED).finish()
    }
}

impl From<EndpointWithSecret> for EndpointWithSecretBody {
    fn from(e: EndpointWithSecret) -> Self {
        Self { endpoint: e.endpoint.into(), secret: e.secret.expose().clone() }
    }
}

/// A new endpoint.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateEndpointRequest {
    /// `https://…` (plain `http://` only to loopback, when the deployment allows it).
    #[schema(min_length = 1, max_length = 2048)]
    pub url: String,
    /// Event types of the catalogue (`WebhookEventType`, also `GET /v1/webhook_event_types`), or `["*"]`.
    #[schema(min_items = 1, value_type = Vec<WebhookEventTypeRef>)]
    pub event_types: Vec<String>,
    /// Up to 200 characters.
    #[serde(default)]
    pub description: String,
}

/// A name from the event catalogue (the schema is filled in from the catalogue itself).
#[derive(Debug, ToSchema)]
#[schema(as = WebhookEventType)]
pub struct WebhookEventTypeRef(#[allow(dead_code, reason = "a schema only")] String);

/// A list of endpoints.
#[derive(Debug, Serialize, ToSchema)]
pub struct EndpointList {
    /// Always `list`.
    pub object: &'static str,
    /// The endpoints, oldest first.
    pub data: Vec<EndpointBody>,
}

/// A deleted endpoint.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeletedEndpoint {
    /// `we_…`
    pub id: String,
    /// Always `webhook_endpoint`.
    pub object: &'static str,
    /// Always true.
    pub deleted: bool,
}

/// One delivery of an event to an endpoint.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryBody {
    /// Always `webhook_delivery`.
    pub object: &'static str,
    /// `obx_…`
    pub id: String,
    /// `evt_…`: the `webhook-id` header, the same on every retry.
    pub event_id: String,
    /// The event type.
    pub event_type: String,
    /// `pending`, `delivered` or `failed` (given up).
    pub status: String,
    /// Attempts so far.
    pub attempts: u32,
    /// RFC 3339.
    pub created_at: String,
    /// The last attempt.
    pub last_attempt_at: Option<String>,
    /// The HTTP status of the last answer.
    pub last_response_code: Option<u16>,
    /// The last attempt's duration.
    pub last_latency_ms: Option<u32>,
    /// Why the last attempt failed (no body is kept).
    pub last_error: Option<String>,
    /// When it was delivered.
    pub delivered_at: Option<String>,
    /// When the next attempt is due.
    pub next_attempt_at: Option<String>,
}

impl From<DeliveryRecord> for DeliveryBody {
    fn from(r: DeliveryRecord) -> Self {
        Self {
            object: "webhook_delivery",
            id: r.id,
            event_id: r.event_id,
            event_type: r.event_type,
            status: r.status,
            attempts: r.attempts,
            created_at: r.created_at.to_rfc3339(),
            last_attempt_at: r.last_attempt_at.map(Timestamp::to_rfc3339),
            last_response_code: r.last_status_code,
            last_latency_ms: r.last_latency_ms,
            last_error: r.last_error,
            delivered_at: r.delivered_at.map(Timestamp::to_rfc3339),
            next_attempt_at: r.next_attempt_at.map(Timestamp::to_rfc3339),
        }
    }
}

/// A page of deliveries, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryList {
    /// Always `list`.
    pub object: &'static str,
    /// The deliveries.
    pub data: Vec<DeliveryBody>,
    /// Whether older ones follow.
    pub has_more: bool,
}

/// Paging.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct DeliveryParams {
    /// 1 to 100, default 20.
    pub limit: Option<u32>,
    /// The id of the last delivery of the previous page.
    pub starting_after: Option<String>,
}

/// An event type of the catalogue.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventTypeBody {
    /// e.g. `security.canary_token_used`.
    pub name: &'static str,
    /// What it means.
    pub description: &'static str,
}

/// The catalogue.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventTypeList {
    /// Always `list`.
    pub object: &'static str,
    /// Every event type.
    pub data: Vec<EventTypeBody>,
}

/// A test event was queued.
#[derive(Debug, Serialize, ToSchema)]
pub struct TestEventBody {
    /// `evt_…`
    pub event_id: String,
}

fn actor(auth: &ApiKeyAuth<scope::AdminWebhooks>, context: &RequestContext) -> AuditEvent {
    context.stamp(auth.principal.event("webhook_endpoint", Outcome::Success))
}

/// Registers an endpoint. The signing secret is in this answer only.
#[utoipa::path(post, path = "/v1/webhook_endpoints", tag = "webhooks", security(("api_key" = ["admin:webhooks"])),
    request_body = CreateEndpointRequest,
    responses(
        (status = 201, body = EndpointWithSecretBody),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json"),
        (status = 413, body = Problem, content_type = "application/problem+json"),
        (status = 415, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn create(
    auth: ApiKeyAuth<scope::AdminWebhooks>,
    context: RequestContext,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<CreateEndpointRequest>,
) -> Result<(StatusCode, Json<EndpointWithSecretBody>), ApiError> {
    let created = state
        .webhooks
        .create(auth.principal.space(), actor(&auth, &context), &body.url, &body.event_types, &body.description)
        .await?;
    Ok((StatusCode::CREATED, Json(created.into())))
}

/// The merchant's endpoints.
#[utoipa::path(get, path = "/v1/webhook_endpoints", tag = "webhooks", security(("api_key" = ["admin:webhooks"])),
    responses(
        (status = 200, body = EndpointList),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn list(
    auth: ApiKeyAuth<scope::AdminWebhooks>,
    State(state): State<AppState>,
) -> Result<Json<EndpointList>, ApiError> {
    let data = state.webhooks.list(auth.principal.space()).await?.into_iter().map(EndpointBody::from).collect();
    Ok(Json(EndpointList { object: "list", data }))
}

/// One endpoint.
#[utoipa::path(get, path = "/v1/webhook_endpoints/{id}", tag = "webhooks", security(("api_key" = ["admin:webhooks"])),
    params(("id" = String, Path, description = "`we_…`")),
    responses(
        (status = 200, body = EndpointBody),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn get(
    auth: ApiKeyAuth<scope::AdminWebhooks>,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<EndpointBody>, ApiError> {
    Ok(Json(state.webhooks.get(auth.principal.space(), &id).await?.into()))
}

/// Deletes an endpoint; deliveries still pending to it are given up.
#[utoipa::path(delete, path = "/v1/webhook_endpoints/{id}", tag = "webhooks", security(("api_key" = ["admin:webhooks"])),
    params(("id" = String, Path, description = "`we_…`")),
    responses(
        (status = 200, body = DeletedEndpoint),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn delete(
    auth: ApiKeyAuth<scope::AdminWebhooks>,
    context: RequestContext,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<DeletedEndpoint>, ApiError> {
    state.webhooks.delete(auth.principal.space(), actor(&auth, &context), &id).await?;
    Ok(Json(DeletedEndpoint { id, object: "webhook_endpoint", deleted: true }))
}

/// A new signing secret; the previous one keeps signing (a second `v1,` signature) for 24 hours.
#[utoipa::path(post, path = "/v1/webhook_endpoints/{id}/rotate_secret", tag = "webhooks", security(("api_key" = ["admin:webhooks"])),
    params(("id" = String, Path, description = "`we_…`")),
    responses(
        (status = 200, body = EndpointWithSecretBody),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn rotate_secret(
    auth: ApiKeyAuth<scope::AdminWebhooks>,
    context: RequestContext,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<EndpointWithSecretBody>, ApiError> {
    let rotated = state.webhooks.rotate_secret(auth.principal.space(), actor(&auth, &context), &id).await?;
    Ok(Json(rotated.into()))
}

/// Enables an endpoint (after it was disabled by hand or for failing five days).
#[utoipa::path(post, path = "/v1/webhook_endpoints/{id}/enable", tag = "webhooks", security(("api_key" = ["admin:webhooks"])),
    params(("id" = String, Path, description = "`we_…`")),
    responses(
        (status = 200, body = EndpointBody),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn enable(
    auth: ApiKeyAuth<scope::AdminWebhooks>,
    context: RequestContext,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<EndpointBody>, ApiError> {
    let view = state.webhooks.set_enabled(auth.principal.space(), actor(&auth, &context), &id, true).await?;
    Ok(Json(view.into()))
}

/// Disables an endpoint: nothing new is sent to it until it is enabled.
#[utoipa::path(post, path = "/v1/webhook_endpoints/{id}/disable", tag = "webhooks", security(("api_key" = ["admin:webhooks"])),
    params(("id" = String, Path, description = "`we_…`")),
    responses(
        (status = 200, body = EndpointBody),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn disable(
    auth: ApiKeyAuth<scope::AdminWebhooks>,
    context: RequestContext,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<EndpointBody>, ApiError> {
    let view = state.webhooks.set_enabled(auth.principal.space(), actor(&auth, &context), &id, false).await?;
    Ok(Json(view.into()))
}

/// The endpoint's delivery log, newest first (kept 30 days by default).
#[utoipa::path(get, path = "/v1/webhook_endpoints/{id}/deliveries", tag = "webhooks", security(("api_key" = ["admin:webhooks"])),
    params(("id" = String, Path, description = "`we_…`"), DeliveryParams),
    responses(
        (status = 200, body = DeliveryList),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn deliveries(
    auth: ApiKeyAuth<scope::AdminWebhooks>,
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiQuery(params): ApiQuery<DeliveryParams>,
) -> Result<Json<DeliveryList>, ApiError> {
    let limit = params.limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(strongroom_domain::DomainError::invalid("/limit", "must be between 1 and 100").into());
    }
    let mut data =
        state.webhooks.deliveries(auth.principal.space(), &id, params.starting_after.as_deref(), limit + 1).await?;
    let has_more = data.len() > limit as usize;
    data.truncate(limit as usize);
    Ok(Json(DeliveryList { object: "list", data: data.into_iter().map(DeliveryBody::from).collect(), has_more }))
}

/// Sends a delivered or given-up delivery again, with the same event id.
#[utoipa::path(post, path = "/v1/webhook_endpoints/{id}/deliveries/{delivery}/redeliver", tag = "webhooks", security(("api_key" = ["admin:webhooks"])),
    params(("id" = String, Path, description = "`we_…`"), ("delivery" = String, Path, description = "`obx_…`")),
    responses(
        (status = 202, description = "queued"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn redeliver(
    auth: ApiKeyAuth<scope::AdminWebhooks>,
    context: RequestContext,
    State(state): State<AppState>,
    Path((id, delivery)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    state.webhooks.redeliver(auth.principal.space(), actor(&auth, &context), &id, &delivery).await?;
    Ok(StatusCode::ACCEPTED)
}

/// Queues a `webhook.test` event to this endpoint.
#[utoipa::path(post, path = "/v1/webhook_endpoints/{id}/test", tag = "webhooks", security(("api_key" = ["admin:webhooks"])),
    params(("id" = String, Path, description = "`we_…`")),
    responses(
        (status = 202, body = TestEventBody),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn test(
    auth: ApiKeyAuth<scope::AdminWebhooks>,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<TestEventBody>), ApiError> {
    let event_id = state.webhooks.send_test(auth.principal.space(), &id).await?;
    Ok((StatusCode::ACCEPTED, Json(TestEventBody { event_id })))
}

/// Every event type strongroom sends.
#[utoipa::path(get, path = "/v1/webhook_event_types", tag = "webhooks", security(("api_key" = ["admin:webhooks"])),
    responses(
        (status = 200, body = EventTypeList),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn event_types(_auth: ApiKeyAuth<scope::AdminWebhooks>) -> Json<EventTypeList> {
    let data = EVENT_TYPES.iter().map(|(name, description)| EventTypeBody { name, description }).collect();
    Json(EventTypeList { object: "list", data })
}

/// The job runner: leader, each job's last run, and the outbox's depth and lag.
#[utoipa::path(get, path = "/v1/admin/jobs", tag = "operations", security(("api_key" = ["admin:metrics"])),
    responses(
        (status = 200, description = "the job runner's status", content_type = "application/json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn jobs(
    _auth: ApiKeyAuth<scope::AdminMetrics>,
    State(state): State<AppState>,
) -> Result<Json<strongroom_domain::jobs::JobsStatus>, ApiError> {
    Ok(Json(state.jobs.status().await?))
}
