//! The caller's merchant.

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;

use crate::extract::{ApiKeyAuth, scope};
use crate::problem::{ApiError, Problem};
use crate::state::AppState;

/// A merchant (tenant).
#[derive(Debug, Serialize, ToSchema)]
pub struct MerchantBody {
    /// Always `merchant`.
    pub object: &'static str,
    /// `mer_…`
    pub id: String,
    /// Display name.
    pub name: String,
    /// RFC 3339 UTC.
    pub created_at: String,
    /// Mode of the key that asked: `live` or `test`.
    pub mode: &'static str,
}

/// The merchant the calling API key belongs to. Any valid key may call it.
#[utoipa::path(get, path = "/v1/merchant", tag = "merchant", security(("api_key" = [])), responses(
    (status = 200, body = MerchantBody),
    (status = 401, body = Problem, content_type = "application/problem+json"),
))]
pub async fn get_merchant(
    auth: ApiKeyAuth<scope::AnyKey>,
    State(state): State<AppState>,
) -> Result<Json<MerchantBody>, ApiError> {
    let merchant = state.merchants.get(auth.principal.merchant_id()).await?;
    Ok(Json(MerchantBody {
        object: "merchant",
        id: merchant.id.to_string(),
        name: merchant.name.clone(),
        created_at: merchant.created_at.to_rfc3339(),
        mode: auth.principal.mode().as_str(),
    }))
}
