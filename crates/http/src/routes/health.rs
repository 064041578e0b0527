//! Liveness, readiness and metrics.

use axum::Json;
use axum::extract::State;
use axum::response::IntoResponse;
use http::header;
use serde::Serialize;
use utoipa::ToSchema;

use crate::extract::{ApiKeyAuth, scope};
use crate::problem::{ApiError, Problem};
use crate::state::AppState;

/// Health status.
#[derive(Debug, Serialize, ToSchema)]
pub struct Status {
    /// `ok` or `ready`.
    pub status: &'static str,
}

/// Alive: the process answers. Never touches the database.
#[utoipa::path(get, path = "/healthz", tag = "health", responses((status = 200, body = Status)))]
pub async fn healthz() -> Json<Status> {
    Json(Status { status: "ok" })
}

/// Ready: the database answers.
#[utoipa::path(get, path = "/readyz", tag = "health", responses(
    (status = 200, body = Status),
    (status = 503, description = "the database does not answer", body = Problem, content_type = "application/problem+json"),
))]
pub async fn readyz(State(state): State<AppState>) -> Result<Json<Status>, ApiError> {
    match state.health.ping().await {
        Ok(()) => Ok(Json(Status { status: "ready" })),
        Err(err) => {
            tracing::warn!(error = %err, "readiness check failed");
            Err(ApiError::unavailable("not_ready", 2).detail("the database does not answer"))
        }
    }
}

/// Prometheus metrics (OpenMetrics text). Needs the `admin:metrics` scope.
#[utoipa::path(get, path = "/metrics", tag = "health", security(("api_key" = ["admin:metrics"])), responses(
    (status = 200, description = "OpenMetrics text", content_type = "application/openmetrics-text"),
    (status = 401, body = Problem, content_type = "application/problem+json"),
    (status = 403, body = Problem, content_type = "application/problem+json"),
))]
pub async fn metrics(_auth: ApiKeyAuth<scope::AdminMetrics>, State(state): State<AppState>) -> impl IntoResponse {
    render_metrics(&state).await
}

/// The metrics response (also served by the separate metrics listener): the request metrics,
/// then the figures gathered now (process, database pool, audit log, outbox, jobs, keys).
pub async fn render_metrics(state: &AppState) -> impl IntoResponse + use<> {
    let requests = state.metrics.render();
    let mut body = requests.strip_suffix("# EOF\n").map(str::to_owned).unwrap_or(requests);
    body.push_str(&crate::metrics::operational::render(state).await);
    body.push_str("# EOF\n");
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], body)
}
