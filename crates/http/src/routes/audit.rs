//! The audit log over HTTP: the latest signed checkpoint, entries, and RFC 6962 proofs. Scope
//! `audit:read`. A caller sees its own merchant's entries (and deployment-wide ones) in full, and
//! other merchants' entries only as leaf hashes, which is enough to verify the tree.

use axum::Json;
use axum::extract::State;
use axum::response::IntoResponse;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use http::header;
use serde::{Deserialize, Serialize};
use strongroom_domain::audit::log::AuditError;
use strongroom_domain::audit::merkle;
use utoipa::{IntoParams, ToSchema};

use crate::extract::{ApiKeyAuth, ApiQuery, scope};
use crate::problem::{ApiError, Problem};
use crate::state::AppState;

fn audit_error(err: AuditError, pointer: &'static str) -> ApiError {
    match err {
        AuditError::OutOfRange(why) => {
            let mut error = ApiError::invalid_field(pointer, why);
            error.code = "proof_out_of_range";
            error
        }
        AuditError::Store(store) => store.into(),
        other => ApiError::internal(&other),
    }
}

/// The latest signed checkpoint, in the C2SP signed-note format.
#[utoipa::path(get, path = "/v1/audit/checkpoint", tag = "audit", security(("api_key" = ["audit:read"])), responses(
    (status = 200, description = "signed note: origin, size, base64 root, blank line, signature line", content_type = "text/plain"),
    (status = 401, body = Problem, content_type = "application/problem+json"),
    (status = 403, body = Problem, content_type = "application/problem+json"),
    (status = 404, body = Problem, content_type = "application/problem+json"),
))]
pub async fn checkpoint(
    _auth: ApiKeyAuth<scope::AuditRead>,
    State(state): State<AppState>,
) -> Result<impl IntoResponse, ApiError> {
    let latest =
        state.audit.latest_checkpoint().await.map_err(|e| audit_error(e, ""))?.ok_or_else(ApiError::not_found)?;
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], latest.note))
}

/// Which entries.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct EntriesParams {
    /// First leaf index (default 0).
    pub start: Option<u64>,
    /// At most this many (1 to 1000, default 100).
    pub limit: Option<u32>,
}

/// One entry.
#[derive(Debug, Serialize, ToSchema)]
pub struct EntryBody {
    /// Leaf index.
    pub index: u64,
    /// Base64 SHA-256(0x00 ‖ leaf).
    pub leaf_hash: String,
    /// Base64 leaf bytes (docs/audit-log.md), for the caller's own and deployment-wide entries.
    pub leaf: Option<String>,
    /// The leaf decoded, when shown.
    #[schema(value_type = Option<Object>)]
    pub entry: Option<serde_json::Value>,
}

/// A page of entries.
#[derive(Debug, Serialize, ToSchema)]
pub struct EntriesBody {
    /// Always `list`.
    pub object: &'static str,
    /// Entries in the log now.
    pub tree_size: u64,
    /// The entries.
    pub data: Vec<EntryBody>,
}

/// Entries with their leaf index and encoding.
#[utoipa::path(get, path = "/v1/audit/entries", tag = "audit", security(("api_key" = ["audit:read"])), params(EntriesParams),
    responses(
        (status = 200, body = EntriesBody),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn entries(
    auth: ApiKeyAuth<scope::AuditRead>,
    State(state): State<AppState>,
    ApiQuery(params): ApiQuery<EntriesParams>,
) -> Result<Json<EntriesBody>, ApiError> {
    let limit = params.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::invalid_field("/limit", "must be between 1 and 1000"));
    }
    let start = params.start.unwrap_or(0);
    if i64::try_from(start).is_err() {
        return Err(ApiError::invalid_field("/start", "is larger than any index"));
    }
    let tree_size = state.audit.size().await.map_err(|e| audit_error(e, ""))?;
    let records = state.audit.entries(start, limit).await.map_err(|e| audit_error(e, ""))?;
    let own = auth.principal.merchant_id();
    let data = records
        .into_iter()
        .map(|record| {
            let entry: Option<serde_json::Value> = serde_json::from_slice(&record.leaf).ok();
            // A merchant's own entries, and deployment events by strongroom itself; never another
            // merchant's, nor anonymous failures that name no merchant (they may be anyone's).
            let visible = match &record.merchant {
                Some(merchant) => merchant == own,
                None => entry.as_ref().is_some_and(|e| e["actor"]["kind"] == "system"),
            };
            EntryBody {
                index: record.seq,
                leaf_hash: STANDARD.encode(merkle::leaf_hash(&record.leaf)),
                leaf: visible.then(|| STANDARD.encode(&record.leaf)),
                entry: if visible { entry } else { None },
            }
        })
        .collect();
    Ok(Json(EntriesBody { object: "list", tree_size, data }))
}

/// Inclusion proof parameters.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct InclusionParams {
    /// Leaf index.
    pub index: u64,
    /// Size of the tree the proof is for (e.g. a checkpoint's).
    pub tree_size: u64,
}

/// An inclusion proof.
#[derive(Debug, Serialize, ToSchema)]
pub struct InclusionBody {
    /// Leaf index.
    pub index: u64,
    /// Tree size.
    pub tree_size: u64,
    /// Base64 leaf hash.
    pub leaf_hash: String,
    /// Base64 root of the tree of `tree_size` entries.
    pub root_hash: String,
    /// Base64 hashes, leaf to root (RFC 6962 audit path).
    pub proof: Vec<String>,
}

/// RFC 6962 inclusion proof of one entry.
#[utoipa::path(get, path = "/v1/audit/proofs/inclusion", tag = "audit", security(("api_key" = ["audit:read"])), params(InclusionParams),
    responses(
        (status = 200, body = InclusionBody),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "index or tree_size out of range (code proof_out_of_range)", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn inclusion(
    _auth: ApiKeyAuth<scope::AuditRead>,
    State(state): State<AppState>,
    ApiQuery(params): ApiQuery<InclusionParams>,
) -> Result<Json<InclusionBody>, ApiError> {
    let pointer = if params.index >= params.tree_size { "/index" } else { "/tree_size" };
    let (leaf, proof) =
        state.audit.inclusion_proof(params.index, params.tree_size).await.map_err(|e| audit_error(e, pointer))?;
    let root = state.audit.root(params.tree_size).await.map_err(|e| audit_error(e, "/tree_size"))?;
    Ok(Json(InclusionBody {
        index: params.index,
        tree_size: params.tree_size,
        leaf_hash: STANDARD.encode(leaf),
        root_hash: STANDARD.encode(root),
        proof: proof.iter().map(|h| STANDARD.encode(h)).collect(),
    }))
}

/// Consistency proof parameters.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ConsistencyParams {
    /// The older size (at least 1).
    pub first: u64,
    /// The newer size.
    pub second: u64,
}

/// A consistency proof.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConsistencyBody {
    /// Older size.
    pub first: u64,
    /// Newer size.
    pub second: u64,
    /// Base64 root of the older tree.
    pub first_root_hash: String,
    /// Base64 root of the newer tree.
    pub second_root_hash: String,
    /// Base64 hashes (RFC 6962 consistency proof).
    pub proof: Vec<String>,
}

/// RFC 6962 consistency proof between two tree sizes.
#[utoipa::path(get, path = "/v1/audit/proofs/consistency", tag = "audit", security(("api_key" = ["audit:read"])), params(ConsistencyParams),
    responses(
        (status = 200, body = ConsistencyBody),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "sizes out of range (code proof_out_of_range)", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn consistency(
    _auth: ApiKeyAuth<scope::AuditRead>,
    State(state): State<AppState>,
    ApiQuery(params): ApiQuery<ConsistencyParams>,
) -> Result<Json<ConsistencyBody>, ApiError> {
    let pointer = if params.first == 0 || params.first > params.second { "/first" } else { "/second" };
    let proof =
        state.audit.consistency_proof(params.first, params.second).await.map_err(|e| audit_error(e, pointer))?;
    let first_root = state.audit.root(params.first).await.map_err(|e| audit_error(e, "/first"))?;
    let second_root = state.audit.root(params.second).await.map_err(|e| audit_error(e, "/second"))?;
    Ok(Json(ConsistencyBody {
        first: params.first,
        second: params.second,
        first_root_hash: STANDARD.encode(first_root),
        second_root_hash: STANDARD.encode(second_root),
        proof: proof.iter().map(|h| STANDARD.encode(h)).collect(),
    }))
}
