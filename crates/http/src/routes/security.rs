//! Intrusion detection's decisions (`/v1/security/decisions`, scope `security:manage`): list the
//! clients strongroom blocked, keys it suspended and accounts it stepped up or locked (and why,
//! until when), make one by hand, lift or extend one.
//! A merchant sees and changes its own decisions (and sees deployment-wide ones).
//! Must never: show or change another merchant's decision, or echo an input in an error.

use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use http::StatusCode;
use serde::{Deserialize, Serialize};
use strongroom_domain::DomainError;
use strongroom_domain::detection::{Decider, DecisionScope, NewDecision};
use strongroom_domain::ports::detection::DecisionRecord;
use strongroom_types::Timestamp;
use utoipa::{IntoParams, ToSchema};

use crate::extract::{ApiJson, ApiKeyAuth, ApiQuery, RequestContext, scope};
use crate::problem::{ApiError, Problem};
use crate::state::AppState;

/// What a decision is about.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScopeBody {
    /// `ip` (one address), `prefix` (its /24, or /64 for IPv6), `api_key`, `account` or `device`
    /// (the shop's id of a customer's device, as it passes it in `client.device`).
    pub kind: String,
    /// `203.0.113.7`; for a prefix `203.0.113.0/24` or `2001:db8:1:2::/64` (an address in it is
    /// taken too); for an API key its id `key_…`; for an account a customer `cus_…` or a staff
    /// member `stf_…` of the shop; for a device the shop's id of it (1 to 128 characters).
    pub address: String,
}

/// A decision about a client.
#[derive(Debug, Serialize, ToSchema)]
pub struct DecisionBody {
    /// Always `security_decision`.
    pub object: &'static str,
    /// `dec_…`
    pub id: String,
    /// What it is about.
    pub scope: ScopeBody,
    /// `block`: the client's (address's, network's or device's) customer sign-ins and payments
    /// are refused (`429 client_blocked`); `suspend`: the
    /// API key's requests are refused (`403 api_key_suspended`); `step_up`: the account's password
    /// sign-ins must pass a second factor (or a mailed code); `lock`: the account cannot sign in.
    pub action: String,
    /// The detection that made it (`credential_stuffing`, `token_guessing`), or `manual`.
    pub reason: String,
    /// What was seen, or the staff member's note.
    pub detail: Option<String>,
    /// `detector`, or the staff member or API key that made it.
    pub created_by: String,
    /// RFC 3339.
    pub created_at: String,
    /// When it ends (RFC 3339).
    pub until: String,
    /// Decisions on this client within a day, this one included (each lasts twice as long).
    pub strikes: u32,
    /// Whether it is in force now.
    pub in_force: bool,
    /// When it was lifted (RFC 3339).
    pub lifted_at: Option<String>,
    /// Who lifted it.
    pub lifted_by: Option<String>,
    /// Whether it applies to every merchant of the deployment.
    pub deployment_wide: bool,
}

impl DecisionBody {
    fn of(d: DecisionRecord, now: Timestamp) -> Self {
        Self {
            object: "security_decision",
            in_force: d.holds(now),
            scope: ScopeBody { kind: d.scope_kind, address: d.scope_value },
            created_at: d.created_at.to_rfc3339(),
            until: d.until.to_rfc3339(),
            lifted_at: d.lifted_at.map(Timestamp::to_rfc3339),
            deployment_wide: d.merchant.is_none(),
            id: d.id,
            action: d.action,
            reason: d.reason,
            detail: d.detail,
            created_by: d.created_by,
            strikes: d.strikes,
            lifted_by: d.lifted_by,
        }
    }
}

/// A list of decisions.
#[derive(Debug, Serialize, ToSchema)]
pub struct DecisionList {
    /// Always `list`.
    pub object: &'static str,
    /// Newest change first.
    pub data: Vec<DecisionBody>,
}

/// Which decisions.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct DecisionListParams {
    /// Only those in force now (default true).
    pub in_force: Option<bool>,
    /// 1 to 100, default 10.
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
}

/// A block made by hand.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateDecisionRequest {
    /// Whom to block, suspend, step up or lock.
    pub scope: ScopeBody,
    /// For an account (required): `step_up` or `lock`. Other scopes have one action each
    /// (`block`, `suspend`), which may be left out.
    pub action: Option<String>,
    /// For how long: 60 to 86400 seconds.
    #[schema(minimum = 60, maximum = 86400)]
    pub duration_seconds: u64,
    /// Why, for the people who read the decision later (up to 500 characters).
    pub note: Option<String>,
}

/// A new end for a decision.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExtendDecisionRequest {
    /// From now: 1 to 86400 seconds.
    #[schema(minimum = 1, maximum = 86400)]
    pub duration_seconds: u64,
}

fn decider<'a>(auth: &'a ApiKeyAuth<scope::SecurityManage>, context: &'a RequestContext) -> Decider<'a> {
    Decider::Caller(&auth.principal, context.ip, context.request_id.as_deref())
}

/// Decisions of the caller's merchant and the deployment-wide ones, newest change first.
#[utoipa::path(get, path = "/v1/security/decisions", tag = "security", security(("api_key" = ["security:manage"])),
    params(DecisionListParams),
    responses((status = 200, body = DecisionList), (status = 422, body = Problem, content_type = "application/problem+json")))]
pub async fn list_decisions(
    auth: ApiKeyAuth<scope::SecurityManage>,
    State(state): State<AppState>,
    ApiQuery(params): ApiQuery<DecisionListParams>,
) -> Result<Json<DecisionList>, ApiError> {
    let found =
        state.decisions.list(auth.principal.merchant_id(), params.in_force.unwrap_or(true), params.limit).await?;
    let now = state.decisions.now();
    Ok(Json(DecisionList { object: "list", data: found.into_iter().map(|d| DecisionBody::of(d, now)).collect() }))
}

/// One decision.
#[utoipa::path(get, path = "/v1/security/decisions/{id}", tag = "security", security(("api_key" = ["security:manage"])),
    params(("id" = String, Path, description = "`dec_…`")),
    responses((status = 200, body = DecisionBody), (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn get_decision(
    auth: ApiKeyAuth<scope::SecurityManage>,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<DecisionBody>, ApiError> {
    let decision = state.decisions.decision(auth.principal.merchant_id(), &id).await?;
    Ok(Json(DecisionBody::of(decision, state.decisions.now())))
}

/// Blocks a client, suspends a key, or steps up or locks an account by hand, for the caller's
/// merchant, until the decision ends or is lifted. `409 decision_exists` while one with the same
/// scope and action is in force.
#[utoipa::path(post, path = "/v1/security/decisions", tag = "security", security(("api_key" = ["security:manage"])),
    request_body = CreateDecisionRequest,
    responses(
        (status = 201, body = DecisionBody),
        (status = 409, body = Problem, content_type = "application/problem+json", description = "`decision_exists`"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn create_decision(
    auth: ApiKeyAuth<scope::SecurityManage>,
    context: RequestContext,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<CreateDecisionRequest>,
) -> Result<(StatusCode, Json<DecisionBody>), ApiError> {
    let scope = DecisionScope::parse_with_action(&body.scope.kind, &body.scope.address, body.action.as_deref())?;
    if !(60..=86_400).contains(&body.duration_seconds) {
        return Err(DomainError::invalid("/duration_seconds", "must be 60 to 86400 seconds").into());
    }
    if let Some(note) = &body.note
        && (note.chars().count() > 500 || note.chars().any(char::is_control))
    {
        return Err(DomainError::invalid("/note", "must be at most 500 printable characters").into());
    }
    let new = NewDecision {
        merchant: Some(auth.principal.merchant_id().clone()),
        scope,
        reason: "manual".to_owned(),
        detail: body.note,
        base: Duration::from_secs(body.duration_seconds),
    };
    let made = state.decisions.decide(decider(&auth, &context), new).await?.ok_or(DomainError::Conflict(
        "decision_exists",
        "a decision with this scope and action is in force; extend or lift it instead",
    ))?;
    Ok((StatusCode::CREATED, Json(DecisionBody::of(made, state.decisions.now()))))
}

/// Lifts a decision in force: the client may sign in again at once, on every node within a
/// second. Of concurrent lifts one succeeds; the others answer `409 decision_not_in_force`.
#[utoipa::path(post, path = "/v1/security/decisions/{id}/lift", tag = "security", security(("api_key" = ["security:manage"])),
    params(("id" = String, Path, description = "`dec_…`")),
    responses(
        (status = 200, body = DecisionBody),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json", description = "`decision_not_in_force`"),
    ))]
pub async fn lift_decision(
    auth: ApiKeyAuth<scope::SecurityManage>,
    context: RequestContext,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<DecisionBody>, ApiError> {
    let lifted = state.decisions.lift(decider(&auth, &context), &id).await?;
    Ok(Json(DecisionBody::of(lifted, state.decisions.now())))
}

/// Sets a decision in force to end `duration_seconds` from now (longer or shorter).
#[utoipa::path(post, path = "/v1/security/decisions/{id}/extend", tag = "security", security(("api_key" = ["security:manage"])),
    params(("id" = String, Path, description = "`dec_…`")),
    request_body = ExtendDecisionRequest,
    responses(
        (status = 200, body = DecisionBody),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json", description = "`decision_not_in_force`"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn extend_decision(
    auth: ApiKeyAuth<scope::SecurityManage>,
    context: RequestContext,
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<ExtendDecisionRequest>,
) -> Result<Json<DecisionBody>, ApiError> {
    let duration = Duration::from_secs(body.duration_seconds);
    let extended = state.decisions.extend(decider(&auth, &context), &id, duration).await?;
    Ok(Json(DecisionBody::of(extended, state.decisions.now())))
}
