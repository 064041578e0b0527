//! API key management: `POST/GET/DELETE /v1/api-keys`, scope `admin:api_keys`.

use super::MASKED;
use axum::Json;
use axum::extract::{Path, State};
use http::StatusCode;
use serde::{Deserialize, Serialize};
use strongroom_domain::api_keys::{ApiKeyId, ApiKeyRecord, NewApiKey};
use strongroom_types::Timestamp;
use utoipa::{IntoParams, ToSchema};

use crate::extract::{ApiJson, ApiKeyAuth, ApiQuery, RequestContext, scope};
use crate::problem::{ApiError, Problem};
use crate::state::AppState;
use strongroom_domain::audit::event::Outcome;

/// An API key as shown to its owners (never the secret, except once at creation).
#[derive(Debug, Serialize, ToSchema)]
pub struct ApiKeyBody {
    /// Always `api_key`.
    pub object: &'static str,
    /// `key_…`
    pub id: String,
    /// The name given at creation.
    pub name: String,
    /// `live` or `test`.
    pub mode: &'static str,
    /// Granted scopes.
    pub scopes: Vec<&'static str>,
    /// `active`, `expired` or `revoked`.
    pub status: &'static str,
    /// RFC 3339 UTC.
    pub created_at: String,
    /// RFC 3339 UTC, if the key expires.
    pub expires_at: Option<String>,
    /// Last successful use (to the minute).
    pub last_used_at: Option<String>,
    /// When it was revoked.
    pub revoked_at: Option<String>,
}

impl ApiKeyBody {
    fn new(record: &ApiKeyRecord, now: Timestamp) -> Self {
        Self {
            object: "api_key",
            id: record.id.to_string(),
            name: record.name.clone(),
            mode: record.mode.as_str(),
            scopes: record.scopes.iter().map(|s| s.as_str()).collect(),
            status: record.status(now).as_str(),
            created_at: record.created_at.to_rfc3339(),
            expires_at: record.expires_at.map(Timestamp::to_rfc3339),
            last_used_at: record.last_used_at.map(Timestamp::to_rfc3339),
            revoked_at: record.revoked_at.map(Timestamp::to_rfc3339),
        }
    }
}

/// A newly created key: the record and its secret, shown this once.
#[derive(Serialize, ToSchema)]
pub struct CreatedApiKeyBody {
    /// The key.
    #[serde(flatten)]
    pub key: ApiKeyBody,
    /// The full key (`sr_live_…`). Shown only now; strongroom keeps only a keyed digest.
    pub secret: String,
}

/// Masks the secret: this answer is shown once, and a `Debug` print must not repeat it.
impl std::fmt::Debug for CreatedApiKeyBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreatedApiKeyBody").field("key", &self.key).field("secret", &MASKED).finish()
    }
}

/// What a new key should be.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateApiKeyRequest {
    /// 1 to 100 characters.
    pub name: String,
    /// Scopes to grant; each must be held by the calling key.
    pub scopes: Vec<String>,
    /// `live` (default) or `test`.
    #[serde(default)]
    pub mode: Option<String>,
    /// RFC 3339 time at which the key stops working.
    #[serde(default)]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub expires_at: Option<Timestamp>,
}

/// Paging of the list.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    /// 1 to 100, default 20.
    pub limit: Option<u32>,
    /// Id of the last key of the previous page.
    pub starting_after: Option<String>,
}

/// A page of keys, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct ApiKeyList {
    /// Always `list`.
    pub object: &'static str,
    /// The keys.
    pub data: Vec<ApiKeyBody>,
    /// Whether more keys follow the last one.
    pub has_more: bool,
}

fn parse_id(id: &str) -> Result<ApiKeyId, ApiError> {
    // A malformed id names no key: the answer is the same 404 as for another merchant's key.
    ApiKeyId::parse(id).map_err(|_| ApiError::not_found())
}

/// Creates a key. The secret is in this response only.
#[utoipa::path(post, path = "/v1/api-keys", tag = "api_keys", security(("api_key" = ["admin:api_keys"])),
    request_body = CreateApiKeyRequest,
    responses(
        (status = 201, body = CreatedApiKeyBody),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 413, body = Problem, content_type = "application/problem+json"),
        (status = 415, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn create(
    auth: ApiKeyAuth<scope::AdminApiKeys>,
    context: RequestContext,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<CreateApiKeyRequest>,
) -> Result<(StatusCode, Json<CreatedApiKeyBody>), ApiError> {
    let input = NewApiKey { name: body.name, scopes: body.scopes, mode: body.mode, expires_at: body.expires_at };
    let merchant = auth.principal.merchant_id();
    let actor = context.stamp(auth.principal.event("api_key.created", Outcome::Success));
    let created = state.api_keys.create_recorded(merchant, input, Some(auth.principal.grant()), actor).await?;
    tracing::info!(request_id = context.request_id.as_deref(), new_key_id = %created.record.id, "api key created");
    let key = ApiKeyBody::new(&created.record, state.api_keys.now());
    Ok((StatusCode::CREATED, Json(CreatedApiKeyBody { key, secret: created.secret.expose().clone() })))
}

/// Lists the merchant's keys, newest first.
#[utoipa::path(get, path = "/v1/api-keys", tag = "api_keys", security(("api_key" = ["admin:api_keys"])),
    params(ListParams),
    responses(
        (status = 200, body = ApiKeyList),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn list(
    auth: ApiKeyAuth<scope::AdminApiKeys>,
    State(state): State<AppState>,
    ApiQuery(params): ApiQuery<ListParams>,
) -> Result<Json<ApiKeyList>, ApiError> {
    let limit = params.limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(ApiError::invalid_field("/limit", "must be between 1 and 100"));
    }
    let viewer = auth.principal.space();
    let cursor = match params.starting_after.as_deref() {
        None => None,
        Some(text) => {
            let invalid = || ApiError::invalid_field("/starting_after", "is not a key of this merchant");
            let id = ApiKeyId::parse(text).map_err(|_| invalid())?;
            state.api_keys.get(viewer, &id).await.map_err(|_| invalid())?;
            Some(id)
        }
    };
    let mut keys = state.api_keys.list(viewer, cursor.as_ref(), limit + 1).await?;
    let has_more = keys.len() > limit as usize;
    keys.truncate(limit as usize);
    let now = state.api_keys.now();
    Ok(Json(ApiKeyList { object: "list", data: keys.iter().map(|k| ApiKeyBody::new(k, now)).collect(), has_more }))
}

/// One key.
#[utoipa::path(get, path = "/v1/api-keys/{id}", tag = "api_keys", security(("api_key" = ["admin:api_keys"])),
    params(("id" = String, Path, description = "key_…")),
    responses(
        (status = 200, body = ApiKeyBody),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn get(
    auth: ApiKeyAuth<scope::AdminApiKeys>,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<ApiKeyBody>, ApiError> {
    let record = state.api_keys.get(auth.principal.space(), &parse_id(&id)?).await?;
    Ok(Json(ApiKeyBody::new(&record, state.api_keys.now())))
}

/// Revokes a key, at once on this node (other nodes within the key cache's lifetime, 5 s by
/// default). Revoking a revoked key answers the same.
#[utoipa::path(delete, path = "/v1/api-keys/{id}", tag = "api_keys", security(("api_key" = ["admin:api_keys"])),
    params(("id" = String, Path, description = "key_…")),
    responses(
        (status = 200, body = ApiKeyBody),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn revoke(
    auth: ApiKeyAuth<scope::AdminApiKeys>,
    context: RequestContext,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<ApiKeyBody>, ApiError> {
    let actor = context.stamp(auth.principal.event("api_key.revoked", Outcome::Success));
    let record = state.api_keys.revoke_recorded(auth.principal.space(), &parse_id(&id)?, actor).await?;
    tracing::info!(request_id = context.request_id.as_deref(), revoked_key_id = %record.id, "api key revoked");
    Ok(Json(ApiKeyBody::new(&record, state.api_keys.now())))
}
