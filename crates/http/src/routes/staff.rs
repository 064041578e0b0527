//! Staff routes: sign-in with a mandatory second factor (`/v1/staff/login…`), invitations, the
//! signed-in staff member (`/v1/staff/me…`), staff administration (`admin:staff`), roles and
//! four-eyes approvals. A staff session token (`sst_…`) works as a bearer token on every guarded
//! route, with the permissions of the staff member's roles.
//! Must never: put a password, code, token or seed in a log line or error body; answer
//! differently for an email that is not staff.

use super::MASKED;
use axum::Json;
use axum::extract::{Path, State};
use http::StatusCode;
use serde::{Deserialize, Serialize};
use strongroom_domain::identity::Client;
use strongroom_domain::ports::{ApprovalRecord, RoleRecord, StaffStatus};
use strongroom_domain::staff::{IssuedStaffSession, StaffLoginOutcome, StaffView};
use utoipa::{IntoParams, ToSchema};

use super::identity::SecretText;
use crate::extract::session::user_agent_of;
use crate::extract::{ApiJson, ApiKeyAuth, ApiQuery, RequestContext, StaffAuth, scope};
use crate::problem::{ApiError, Problem};
use crate::state::AppState;

pub(crate) fn client(context: &RequestContext, agent: Option<String>) -> Client {
    Client {
        ip: context.ip,
        user_agent: agent,
        request_id: context.request_id.clone(),
        ip_is_the_customers: true,
        device: None,
    }
}

/// A staff member.
#[derive(Debug, Serialize, ToSchema)]
pub struct StaffBody {
    /// Always `staff`.
    pub object: &'static str,
    /// `stf_…`
    pub id: String,
    /// Their email.
    pub email: String,
    /// `invited`, `active` or `disabled`.
    pub status: &'static str,
    /// Whether TOTP is on.
    pub totp: bool,
    /// RFC 3339 UTC, while the account is locked after too many failures.
    pub locked_until: Option<String>,
    /// Roles held.
    pub roles: Vec<String>,
    /// The permissions those roles give.
    pub permissions: Vec<&'static str>,
    /// RFC 3339 UTC.
    pub created_at: String,
}

impl From<StaffView> for StaffBody {
    fn from(v: StaffView) -> Self {
        Self {
            object: "staff",
            id: v.id,
            email: v.email,
            status: v.status.as_str(),
            totp: v.totp,
            locked_until: v.locked_until.map(|t| t.to_rfc3339()),
            roles: v.roles,
            permissions: v.permissions.iter().map(|s| s.as_str()).collect(),
            created_at: v.created_at.to_rfc3339(),
        }
    }
}

/// A staff session just issued; the token is shown once.
#[derive(Serialize, ToSchema)]
pub struct StaffSessionBody {
    /// Always `staff_session`.
    pub object: &'static str,
    /// `sss_…`
    pub id: String,
    /// `stf_…`
    pub staff: String,
    /// `sst_…`: send as `Authorization: Bearer …`.
    pub token: String,
    /// RFC 3339 UTC: when it ends if unused (15 minutes of idleness).
    pub idle_expires_at: String,
    /// RFC 3339 UTC: when it ends regardless.
    pub expires_at: String,
}

/// Masks the secret: this answer is shown once, and a `Debug` print must not repeat it.
impl std::fmt::Debug for StaffSessionBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StaffSessionBody")
            .field("id", &self.id)
            .field("staff", &self.staff)
            .field("token", &MASKED)
            .field("idle_expires_at", &self.idle_expires_at)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

impl From<IssuedStaffSession> for StaffSessionBody {
    fn from(s: IssuedStaffSession) -> Self {
        Self {
            object: "staff_session",
            id: s.id,
            staff: s.staff_id,
            token: s.token.expose().clone(),
            idle_expires_at: s.idle_expires_at.to_rfc3339(),
            expires_at: s.expires_at.to_rfc3339(),
        }
    }
}

/// A completed staff sign-in: every way one ends (a TOTP code, a first TOTP code, a passkey, a
/// first passkey) answers `{"status": "authenticated", "session": …}`, the shape of a customer's.
#[derive(Debug, Serialize, ToSchema)]
pub struct StaffSignedInBody {
    /// Always `authenticated`.
    pub status: &'static str,
    /// The new session.
    pub session: StaffSessionBody,
}

impl From<IssuedStaffSession> for StaffSignedInBody {
    fn from(s: IssuedStaffSession) -> Self {
        Self { status: "authenticated", session: s.into() }
    }
}

/// Email and password.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StaffLoginRequest {
    /// The staff member's email.
    pub email: String,
    /// Their password.
    pub password: SecretText,
}

/// What a right password leads to: a second factor, or its enrolment. Never a session at once.
#[derive(Debug, Serialize, ToSchema)]
pub struct StaffLoginBody {
    /// `second_factor_required` or `enrolment_required`.
    pub status: &'static str,
    /// For `second_factor_required`: what may answer (`totp`, `passkey`). For
    /// `enrolment_required`: what may be enrolled.
    pub factors: Vec<&'static str>,
    /// `chl_…`
    pub challenge: String,
    /// RFC 3339 UTC.
    pub expires_at: String,
}

/// Signs a staff member in (first step).
#[utoipa::path(post, path = "/v1/staff/login", tag = "staff", request_body = StaffLoginRequest,
    responses(
        (status = 200, body = StaffLoginBody),
        (status = 401, body = Problem, content_type = "application/problem+json", description = "invalid_credentials"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
        (status = 429, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn login(
    State(state): State<AppState>,
    context: RequestContext,
    headers: http::HeaderMap,
    ApiJson(body): ApiJson<StaffLoginRequest>,
) -> Result<Json<StaffLoginBody>, ApiError> {
    let client = client(&context, user_agent_of(&headers));
    let outcome = state.staff.login(&body.email, body.password.secret(), &client).await?;
    Ok(Json(match outcome {
        StaffLoginOutcome::SecondFactorRequired { challenge, factors, expires_at } => {
            StaffLoginBody { status: "second_factor_required", factors, challenge, expires_at: expires_at.to_rfc3339() }
        }
        StaffLoginOutcome::EnrolmentRequired { challenge, expires_at } => StaffLoginBody {
            status: "enrolment_required",
            factors: vec!["totp", "passkey"],
            challenge,
            expires_at: expires_at.to_rfc3339(),
        },
    }))
}

/// A challenge and a TOTP code.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StaffCodeRequest {
    /// `chl_…`
    pub challenge: String,
    /// The 6-digit code.
    pub code: SecretText,
}

/// Completes a staff sign-in with a TOTP code.
#[utoipa::path(post, path = "/v1/staff/login/second-factor", tag = "staff", request_body = StaffCodeRequest,
    responses(
        (status = 200, body = StaffSignedInBody),
        (status = 401, body = Problem, content_type = "application/problem+json", description = "invalid_code"),
    ))]
pub async fn login_second_factor(
    State(state): State<AppState>,
    context: RequestContext,
    headers: http::HeaderMap,
    ApiJson(body): ApiJson<StaffCodeRequest>,
) -> Result<Json<StaffSignedInBody>, ApiError> {
    let client = client(&context, user_agent_of(&headers));
    let issued = state.staff.login_second_factor(&body.challenge, body.code.secret(), &client).await?;
    Ok(Json(issued.into()))
}

/// A sign-in challenge.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChallengeRequest {
    /// `chl_…`
    pub challenge: String,
}

/// A TOTP seed to enrol, shown once.
#[derive(Serialize, ToSchema)]
pub struct StaffTotpBody {
    /// Base32 seed, for typing in.
    pub secret: String,
    /// `otpauth://totp/…`, for a QR code.
    pub otpauth_uri: String,
}

/// Masks the secret: this answer is shown once, and a `Debug` print must not repeat it.
impl std::fmt::Debug for StaffTotpBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StaffTotpBody").field("secret", &MASKED).field("otpauth_uri", &MASKED).finish()
    }
}

/// Starts TOTP enrolment during a sign-in that requires it.
#[utoipa::path(post, path = "/v1/staff/login/totp", tag = "staff", request_body = ChallengeRequest,
    responses(
        (status = 200, body = StaffTotpBody),
        (status = 401, body = Problem, content_type = "application/problem+json", description = "invalid_code"),
    ))]
pub async fn begin_enrolment(
    State(state): State<AppState>,
    context: RequestContext,
    ApiJson(body): ApiJson<ChallengeRequest>,
) -> Result<Json<StaffTotpBody>, ApiError> {
    let enrolment = state.staff.begin_enrolment(&body.challenge, &client(&context, None)).await?;
    Ok(Json(StaffTotpBody {
        secret: enrolment.secret.expose().clone(),
        otpauth_uri: enrolment.otpauth_uri.expose().clone(),
    }))
}

/// Confirms TOTP enrolment with a first code, completing the sign-in.
#[utoipa::path(post, path = "/v1/staff/login/totp/confirm", tag = "staff", request_body = StaffCodeRequest,
    responses(
        (status = 200, body = StaffSignedInBody),
        (status = 401, body = Problem, content_type = "application/problem+json", description = "invalid_code"),
    ))]
pub async fn confirm_enrolment(
    State(state): State<AppState>,
    context: RequestContext,
    headers: http::HeaderMap,
    ApiJson(body): ApiJson<StaffCodeRequest>,
) -> Result<Json<StaffSignedInBody>, ApiError> {
    let client = client(&context, user_agent_of(&headers));
    let issued = state.staff.confirm_enrolment(&body.challenge, body.code.secret(), &client).await?;
    Ok(Json(issued.into()))
}

/// An invitation's token and the first password.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AcceptInvitationRequest {
    /// `sti_…`, from the invitation link.
    pub token: SecretText,
    /// At least 12 characters with letters and digits.
    pub password: SecretText,
}

/// Accepts an invitation by setting the first password.
#[utoipa::path(post, path = "/v1/staff/invitation/accept", tag = "staff", request_body = AcceptInvitationRequest,
    responses(
        (status = 200, body = StaffBody),
        (status = 422, body = Problem, content_type = "application/problem+json", description = "invalid_invitation, weak_password, breached_password"),
    ))]
pub async fn accept_invitation(
    State(state): State<AppState>,
    context: RequestContext,
    ApiJson(body): ApiJson<AcceptInvitationRequest>,
) -> Result<Json<StaffBody>, ApiError> {
    let token = body.token.secret();
    let view = state.staff.accept_invitation(token.expose(), body.password.secret(), &client(&context, None)).await?;
    Ok(Json(view.into()))
}

/// The signed-in staff member.
#[utoipa::path(get, path = "/v1/staff/me", tag = "staff", security(("api_key" = [])),
    responses((status = 200, body = StaffBody), (status = 401, body = Problem, content_type = "application/problem+json")))]
pub async fn me(auth: StaffAuth<scope::AnyKey>, State(state): State<AppState>) -> Result<Json<StaffBody>, ApiError> {
    let staff = auth.staff()?;
    Ok(Json(state.staff.me(staff).await?.into()))
}

/// Ends the calling staff session.
#[utoipa::path(post, path = "/v1/staff/me/logout", tag = "staff", security(("api_key" = [])),
    responses((status = 204), (status = 401, body = Problem, content_type = "application/problem+json")))]
pub async fn logout(
    auth: StaffAuth<scope::AnyKey>,
    State(state): State<AppState>,
    context: RequestContext,
) -> Result<StatusCode, ApiError> {
    let staff = auth.staff()?;
    state.staff.logout(staff, &client(&context, None)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A password change.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StaffPasswordRequest {
    /// The current password.
    pub current_password: SecretText,
    /// The new one: 12+ characters with letters and digits, not one of the last 4.
    pub new_password: SecretText,
}

/// Changes the caller's password; their other sessions end.
#[utoipa::path(post, path = "/v1/staff/me/password", tag = "staff", security(("api_key" = [])),
    request_body = StaffPasswordRequest,
    responses((status = 401, body = Problem, content_type = "application/problem+json"), (status = 204), (status = 422, body = Problem, content_type = "application/problem+json", description = "wrong_password, weak_password, breached_password, password_reused")))]
pub async fn change_password(
    auth: StaffAuth<scope::AnyKey>,
    State(state): State<AppState>,
    context: RequestContext,
    ApiJson(body): ApiJson<StaffPasswordRequest>,
) -> Result<StatusCode, ApiError> {
    let staff = auth.staff()?;
    state
        .staff
        .change_password(staff, body.current_password.secret(), body.new_password.secret(), &client(&context, None))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A list of staff.
#[derive(Debug, Serialize, ToSchema)]
pub struct StaffListBody {
    /// Always `list`.
    pub object: &'static str,
    /// Oldest first.
    pub data: Vec<StaffBody>,
}

/// The shop's staff.
#[utoipa::path(get, path = "/v1/staff", tag = "staff", security(("api_key" = ["admin:staff"])),
    responses((status = 401, body = Problem, content_type = "application/problem+json"), (status = 200, body = StaffListBody), (status = 403, body = Problem, content_type = "application/problem+json")))]
pub async fn list(
    auth: ApiKeyAuth<scope::AdminStaff>,
    State(state): State<AppState>,
) -> Result<Json<StaffListBody>, ApiError> {
    let data = state.staff.list(&auth.principal).await?.into_iter().map(Into::into).collect();
    Ok(Json(StaffListBody { object: "list", data }))
}

/// Someone to invite.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InviteRequest {
    /// Their email; the invitation link goes there (and only there).
    pub email: String,
}

/// An invitation sent.
#[derive(Debug, Serialize, ToSchema)]
pub struct InvitedBody {
    /// The new staff member, without roles (grant them afterwards; a second person approves).
    pub staff: StaffBody,
    /// RFC 3339 UTC: when the mailed link stops working.
    pub invitation_expires_at: String,
}

/// Invites a staff member: the link to set a password is mailed to them, never returned.
#[utoipa::path(post, path = "/v1/staff", tag = "staff", security(("api_key" = ["admin:staff"])),
    request_body = InviteRequest,
    responses((status = 401, body = Problem, content_type = "application/problem+json"), 
        (status = 201, body = InvitedBody),
        (status = 409, body = Problem, content_type = "application/problem+json", description = "staff_exists"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn invite(
    auth: ApiKeyAuth<scope::AdminStaff>,
    State(state): State<AppState>,
    context: RequestContext,
    ApiJson(body): ApiJson<InviteRequest>,
) -> Result<(StatusCode, Json<InvitedBody>), ApiError> {
    let merchant = auth.principal.merchant_id().clone();
    let invitation =
        state.staff.invite(&merchant, &body.email, &[], Some(&auth.principal), &client(&context, None)).await?;
    Ok((
        StatusCode::CREATED,
        Json(InvitedBody { staff: invitation.staff.into(), invitation_expires_at: invitation.expires_at.to_rfc3339() }),
    ))
}

pub(crate) fn plausible_id(id: &str, prefix: &str) -> Result<(), ApiError> {
    let ok = id.len() <= 64 && id.starts_with(prefix) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if ok { Ok(()) } else { Err(ApiError::not_found()) }
}

/// One staff member.
#[utoipa::path(get, path = "/v1/staff/{id}", tag = "staff", security(("api_key" = ["admin:staff"])),
    params(("id" = String, Path, description = "`stf_…`")),
    responses((status = 401, body = Problem, content_type = "application/problem+json"), (status = 200, body = StaffBody), (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn get(
    auth: ApiKeyAuth<scope::AdminStaff>,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<StaffBody>, ApiError> {
    plausible_id(&id, "stf_")?;
    Ok(Json(state.staff.get(&auth.principal, &id).await?.into()))
}

async fn set_status(
    auth: ApiKeyAuth<scope::AdminStaff>,
    state: AppState,
    context: RequestContext,
    id: String,
    status: StaffStatus,
) -> Result<Json<StaffBody>, ApiError> {
    plausible_id(&id, "stf_")?;
    Ok(Json(state.staff.set_status(&auth.principal, &id, status, &client(&context, None)).await?.into()))
}

/// Disables a staff member: every session ends at once.
#[utoipa::path(post, path = "/v1/staff/{id}/disable", tag = "staff", security(("api_key" = ["admin:staff"])),
    params(("id" = String, Path, description = "`stf_…`")),
    responses((status = 401, body = Problem, content_type = "application/problem+json"), (status = 200, body = StaffBody), (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn disable(
    auth: ApiKeyAuth<scope::AdminStaff>,
    State(state): State<AppState>,
    context: RequestContext,
    Path(id): Path<String>,
) -> Result<Json<StaffBody>, ApiError> {
    set_status(auth, state, context, id, StaffStatus::Disabled).await
}

/// Enables a disabled staff member.
#[utoipa::path(post, path = "/v1/staff/{id}/enable", tag = "staff", security(("api_key" = ["admin:staff"])),
    params(("id" = String, Path, description = "`stf_…`")),
    responses((status = 401, body = Problem, content_type = "application/problem+json"), (status = 200, body = StaffBody), (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn enable(
    auth: ApiKeyAuth<scope::AdminStaff>,
    State(state): State<AppState>,
    context: RequestContext,
    Path(id): Path<String>,
) -> Result<Json<StaffBody>, ApiError> {
    set_status(auth, state, context, id, StaffStatus::Active).await
}

/// Lifts a lock-out before its 30 minutes end.
#[utoipa::path(post, path = "/v1/staff/{id}/unlock", tag = "staff", security(("api_key" = ["admin:staff"])),
    params(("id" = String, Path, description = "`stf_…`")),
    responses((status = 401, body = Problem, content_type = "application/problem+json"), (status = 200, body = StaffBody), (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn unlock(
    auth: ApiKeyAuth<scope::AdminStaff>,
    State(state): State<AppState>,
    context: RequestContext,
    Path(id): Path<String>,
) -> Result<Json<StaffBody>, ApiError> {
    plausible_id(&id, "stf_")?;
    Ok(Json(state.staff.unlock(&auth.principal, &id, &client(&context, None)).await?.into()))
}

/// A role to grant.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GrantRequest {
    /// The role's name.
    pub role: String,
    /// The approved request (`apr_…`) a first attempt opened.
    #[serde(default)]
    pub approval_id: Option<String>,
}

/// Grants a role. Four eyes: the first call answers 403 `approval_required` with a request id; a
/// second staff member approves it; the same call with `approval_id` then grants the role.
#[utoipa::path(post, path = "/v1/staff/{id}/roles", tag = "staff", security(("api_key" = ["admin:staff"])),
    params(("id" = String, Path, description = "`stf_…`")),
    request_body = GrantRequest,
    responses((status = 401, body = Problem, content_type = "application/problem+json"), 
        (status = 200, body = StaffBody),
        (status = 403, body = Problem, content_type = "application/problem+json", description = "approval_required"),
        (status = 409, body = Problem, content_type = "application/problem+json", description = "role_held"),
        (status = 422, body = Problem, content_type = "application/problem+json", description = "approval_not_usable"),
    ))]
pub async fn grant_role(
    auth: ApiKeyAuth<scope::AdminStaff>,
    State(state): State<AppState>,
    context: RequestContext,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<GrantRequest>,
) -> Result<Json<StaffBody>, ApiError> {
    plausible_id(&id, "stf_")?;
    let view = state
        .staff
        .grant_role(&auth.principal, &id, &body.role, body.approval_id.as_deref(), &client(&context, None))
        .await?;
    Ok(Json(view.into()))
}

/// An approval for a factor reset.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResetFactorsRequest {
    /// The approved request (`apr_…`) a first attempt opened.
    #[serde(default)]
    pub approval_id: Option<String>,
}

/// Resets a staff member's second factors (they lost them). Four eyes, like a role grant; TOTP and
/// passkeys are removed, every session ends, and the next sign-in enrols a factor again.
#[utoipa::path(post, path = "/v1/staff/{id}/reset-factors", tag = "staff", security(("api_key" = ["admin:staff"])),
    params(("id" = String, Path, description = "`stf_…`")),
    request_body = ResetFactorsRequest,
    responses(
        (status = 200, body = StaffBody),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json", description = "approval_required"),
        (status = 422, body = Problem, content_type = "application/problem+json", description = "approval_not_usable"),
    ))]
pub async fn reset_factors(
    auth: ApiKeyAuth<scope::AdminStaff>,
    State(state): State<AppState>,
    context: RequestContext,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<ResetFactorsRequest>,
) -> Result<Json<StaffBody>, ApiError> {
    plausible_id(&id, "stf_")?;
    let view =
        state.staff.reset_factors(&auth.principal, &id, body.approval_id.as_deref(), &client(&context, None)).await?;
    Ok(Json(view.into()))
}

/// Takes a role away (no approval needed).
#[utoipa::path(delete, path = "/v1/staff/{id}/roles/{role}", tag = "staff", security(("api_key" = ["admin:staff"])),
    params(("id" = String, Path, description = "`stf_…`"), ("role" = String, Path, description = "The role")),
    responses((status = 401, body = Problem, content_type = "application/problem+json"), (status = 200, body = StaffBody), (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn revoke_role(
    auth: ApiKeyAuth<scope::AdminStaff>,
    State(state): State<AppState>,
    context: RequestContext,
    Path((id, role)): Path<(String, String)>,
) -> Result<Json<StaffBody>, ApiError> {
    plausible_id(&id, "stf_")?;
    Ok(Json(state.staff.revoke_role(&auth.principal, &id, &role, &client(&context, None)).await?.into()))
}

/// A role.
#[derive(Debug, Serialize, ToSchema)]
pub struct RoleBody {
    /// Always `role`.
    pub object: &'static str,
    /// Its name.
    pub name: String,
    /// Whether it is built in.
    pub builtin: bool,
    /// What it is for.
    pub description: String,
    /// What it may do.
    pub permissions: Vec<String>,
}

fn role_body(r: RoleRecord) -> RoleBody {
    RoleBody {
        object: "role",
        builtin: strongroom_domain::staff::roles::builtin(&r.name).is_some(),
        name: r.name,
        description: r.description,
        permissions: r.permissions,
    }
}

/// Roles.
#[derive(Debug, Serialize, ToSchema)]
pub struct RoleListBody {
    /// Always `list`.
    pub object: &'static str,
    /// Built-in roles, then custom ones.
    pub data: Vec<RoleBody>,
}

/// The shop's roles: the built-in matrix and custom roles.
#[utoipa::path(get, path = "/v1/roles", tag = "staff", security(("api_key" = ["admin:staff"])),
    responses((status = 401, body = Problem, content_type = "application/problem+json"), (status = 200, body = RoleListBody)))]
pub async fn roles(
    auth: ApiKeyAuth<scope::AdminStaff>,
    State(state): State<AppState>,
) -> Result<Json<RoleListBody>, ApiError> {
    let data = state.staff.roles(auth.principal.merchant_id()).await?.into_iter().map(role_body).collect();
    Ok(Json(RoleListBody { object: "list", data }))
}

/// A custom role.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RoleRequest {
    /// 2 to 40 of `a-z 0-9 _ -`, starting with a letter; not a built-in role's name.
    pub name: String,
    /// What it is for (at most 200 characters).
    #[serde(default)]
    pub description: String,
    /// Permission names (the API key scopes); the creator must hold each.
    pub permissions: Vec<String>,
}

/// Defines a custom role.
#[utoipa::path(post, path = "/v1/roles", tag = "staff", security(("api_key" = ["admin:staff"])),
    request_body = RoleRequest,
    responses((status = 401, body = Problem, content_type = "application/problem+json"), 
        (status = 201, body = RoleBody),
        (status = 409, body = Problem, content_type = "application/problem+json", description = "role_exists"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn create_role(
    auth: ApiKeyAuth<scope::AdminStaff>,
    State(state): State<AppState>,
    context: RequestContext,
    ApiJson(body): ApiJson<RoleRequest>,
) -> Result<(StatusCode, Json<RoleBody>), ApiError> {
    let role = state
        .staff
        .create_role(&auth.principal, &body.name, &body.description, &body.permissions, &client(&context, None))
        .await?;
    Ok((StatusCode::CREATED, Json(role_body(role))))
}

/// Deletes a custom role; staff holding it lose its permissions at once.
#[utoipa::path(delete, path = "/v1/roles/{name}", tag = "staff", security(("api_key" = ["admin:staff"])),
    params(("name" = String, Path, description = "The role")),
    responses((status = 401, body = Problem, content_type = "application/problem+json"), (status = 204), (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn delete_role(
    auth: ApiKeyAuth<scope::AdminStaff>,
    State(state): State<AppState>,
    context: RequestContext,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.staff.delete_role(&auth.principal, &name, &client(&context, None)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// An approval request.
#[derive(Debug, Serialize, ToSchema)]
pub struct ApprovalBody {
    /// Always `approval`.
    pub object: &'static str,
    /// `apr_…`
    pub id: String,
    /// `vault.reveal_card` or `staff.grant_role`.
    pub action: String,
    /// What it acts on: a token id, or `stf_…:role`.
    pub target: String,
    /// The requester's reason code.
    pub reason: String,
    /// `stf_…`
    pub requested_by: String,
    /// RFC 3339 UTC.
    pub requested_at: String,
    /// `pending`, `approved`, `denied`, `used` or `expired`.
    pub status: String,
    /// Who decided.
    pub decided_by: Option<String>,
    /// RFC 3339 UTC.
    pub decided_at: Option<String>,
    /// RFC 3339 UTC: a pending request expires then; an approved one must be used by then.
    pub expires_at: String,
    /// RFC 3339 UTC.
    pub used_at: Option<String>,
}

impl From<ApprovalRecord> for ApprovalBody {
    fn from(a: ApprovalRecord) -> Self {
        Self {
            object: "approval",
            id: a.id,
            action: a.action,
            target: a.target,
            reason: a.reason,
            requested_by: a.requested_by,
            requested_at: a.requested_at.to_rfc3339(),
            status: a.status,
            decided_by: a.decided_by,
            decided_at: a.decided_at.map(|t| t.to_rfc3339()),
            expires_at: a.expires_at.to_rfc3339(),
            used_at: a.used_at.map(|t| t.to_rfc3339()),
        }
    }
}

/// Approval requests.
#[derive(Debug, Serialize, ToSchema)]
pub struct ApprovalListBody {
    /// Always `list`.
    pub object: &'static str,
    /// Newest first (at most 200).
    pub data: Vec<ApprovalBody>,
}

/// Which approvals to list.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ApprovalQuery {
    /// `pending`, `approved`, `denied` or `used`.
    pub status: Option<String>,
}

/// The shop's approval requests.
#[utoipa::path(get, path = "/v1/approvals", tag = "staff", security(("api_key" = [])), params(ApprovalQuery),
    responses((status = 401, body = Problem, content_type = "application/problem+json"), (status = 200, body = ApprovalListBody), (status = 422, body = Problem, content_type = "application/problem+json")))]
pub async fn approvals(
    auth: StaffAuth<scope::AnyKey>,
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<ApprovalQuery>,
) -> Result<Json<ApprovalListBody>, ApiError> {
    let data =
        state.staff.approvals(&auth.principal, query.status.as_deref()).await?.into_iter().map(Into::into).collect();
    Ok(Json(ApprovalListBody { object: "list", data }))
}

/// One approval request.
#[utoipa::path(get, path = "/v1/approvals/{id}", tag = "staff", security(("api_key" = [])),
    params(("id" = String, Path, description = "`apr_…`")),
    responses((status = 401, body = Problem, content_type = "application/problem+json"), (status = 200, body = ApprovalBody), (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn approval(
    auth: StaffAuth<scope::AnyKey>,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<ApprovalBody>, ApiError> {
    plausible_id(&id, "apr_")?;
    Ok(Json(state.staff.approval(&auth.principal, &id).await?.into()))
}

/// Approves someone else's request (never one's own).
#[utoipa::path(post, path = "/v1/approvals/{id}/approve", tag = "staff", security(("api_key" = [])),
    params(("id" = String, Path, description = "`apr_…`")),
    responses((status = 401, body = Problem, content_type = "application/problem+json"), 
        (status = 200, body = ApprovalBody),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json", description = "approval_not_pending"),
    ))]
pub async fn approve(
    auth: StaffAuth<scope::AnyKey>,
    State(state): State<AppState>,
    context: RequestContext,
    Path(id): Path<String>,
) -> Result<Json<ApprovalBody>, ApiError> {
    plausible_id(&id, "apr_")?;
    Ok(Json(state.staff.decide(&auth.principal, &id, true, &client(&context, None)).await?.into()))
}

/// Denies someone else's request.
#[utoipa::path(post, path = "/v1/approvals/{id}/deny", tag = "staff", security(("api_key" = [])),
    params(("id" = String, Path, description = "`apr_…`")),
    responses((status = 401, body = Problem, content_type = "application/problem+json"), 
        (status = 200, body = ApprovalBody),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json", description = "approval_not_pending"),
    ))]
pub async fn deny(
    auth: StaffAuth<scope::AnyKey>,
    State(state): State<AppState>,
    context: RequestContext,
    Path(id): Path<String>,
) -> Result<Json<ApprovalBody>, ApiError> {
    plausible_id(&id, "apr_")?;
    Ok(Json(state.staff.decide(&auth.principal, &id, false, &client(&context, None)).await?.into()))
}
