//! Passkey routes. Customers add passkeys from their session (`/v1/me/passkeys…`) and sign in
//! with one through the shop's backend (`/v1/identity/login/passkey…`); a passkey-only account
//! registers its first from its address check. Staff add passkeys from a recent session and use
//! them as their second factor at sign-in (`/v1/staff/login/passkey…`), or enrol one as their
//! first.
//! Options go to `navigator.credentials.create()`/`.get()` as they are; the browser's answer
//! comes back as `credential` (the `PublicKeyCredential` JSON, base64url fields).
//! Must never: put ceremony state in an answer (it stays in the database), or log a credential.

use axum::Json;
use axum::extract::{Path, State};
use http::StatusCode;
use serde::{Deserialize, Serialize};
use strongroom_domain::passkeys::Ceremony;
use strongroom_domain::ports::PasskeyRecord;
use utoipa::ToSchema;

use super::identity::{ClientInfo, LoginBody, client_of};
use super::staff::{StaffSignedInBody, client, plausible_id};
use crate::extract::session::user_agent_of;
use crate::extract::{ApiJson, ApiKeyAuth, CustomerAuth, RequestContext, StaffAuth, scope};
use crate::problem::{ApiError, Problem};
use crate::state::AppState;

/// A WebAuthn ceremony begun.
#[derive(Debug, Serialize, ToSchema)]
pub struct CeremonyBody {
    /// `wac_…`: send it back with the browser's answer.
    pub ceremony: String,
    /// `{"publicKey": …}` for `navigator.credentials.create()` or `.get()` (base64url binary).
    #[schema(value_type = Object)]
    pub options: serde_json::Value,
    /// RFC 3339 UTC: the browser must answer before then (5 minutes).
    pub expires_at: String,
}

impl From<Ceremony> for CeremonyBody {
    fn from(c: Ceremony) -> Self {
        Self { ceremony: c.id, options: c.options, expires_at: c.expires_at.to_rfc3339() }
    }
}

/// A registered passkey.
#[derive(Debug, Serialize, ToSchema)]
pub struct PasskeyBody {
    /// Always `passkey`.
    pub object: &'static str,
    /// `pk_…`
    pub id: String,
    /// Its name.
    pub label: String,
    /// RFC 3339 UTC.
    pub created_at: String,
    /// RFC 3339 UTC.
    pub last_used_at: Option<String>,
}

impl From<PasskeyRecord> for PasskeyBody {
    fn from(p: PasskeyRecord) -> Self {
        Self {
            object: "passkey",
            id: p.id,
            label: p.label,
            created_at: p.created_at.to_rfc3339(),
            last_used_at: p.last_used_at.map(|t| t.to_rfc3339()),
        }
    }
}

/// Passkeys.
#[derive(Debug, Serialize, ToSchema)]
pub struct PasskeyListBody {
    /// Always `list`.
    pub object: &'static str,
    /// Oldest first.
    pub data: Vec<PasskeyBody>,
}

/// The browser's answer to a registration.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FinishRegistrationRequest {
    /// `wac_…`
    pub ceremony: String,
    /// The `PublicKeyCredential` from `navigator.credentials.create()`, as JSON.
    #[schema(value_type = Object)]
    pub credential: serde_json::Value,
    /// A name for it ("work laptop"), at most 64 characters.
    #[serde(default)]
    pub label: String,
}

/// Begins adding a passkey (needs a sign-in within 10 minutes and a verified address).
#[utoipa::path(post, path = "/v1/me/passkeys", tag = "customer", security(("session" = [])),
    responses((status = 200, body = CeremonyBody), (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json", description = "email_not_verified, too_many_passkeys")))]
pub async fn begin_customer_registration(
    auth: CustomerAuth,
    State(state): State<AppState>,
) -> Result<Json<CeremonyBody>, ApiError> {
    Ok(Json(state.identity.begin_passkey_registration(&auth.session).await?.into()))
}

/// Finishes adding a passkey; a notice goes to the customer.
#[utoipa::path(post, path = "/v1/me/passkeys/finish", tag = "customer", security(("session" = [])),
    request_body = FinishRegistrationRequest,
    responses((status = 201, body = PasskeyBody), (status = 401, body = Problem, content_type = "application/problem+json", description = "unauthenticated, invalid_code"),
        (status = 409, body = Problem, content_type = "application/problem+json", description = "passkey_exists")))]
pub async fn finish_customer_registration(
    auth: CustomerAuth,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<FinishRegistrationRequest>,
) -> Result<(StatusCode, Json<PasskeyBody>), ApiError> {
    let record = state
        .identity
        .finish_passkey_registration(&auth.session, &body.ceremony, &body.credential, &body.label, &auth.client)
        .await?;
    Ok((StatusCode::CREATED, Json(record.into())))
}

/// The signed-in customer's passkeys.
#[utoipa::path(get, path = "/v1/me/passkeys", tag = "customer", security(("session" = [])),
    responses((status = 200, body = PasskeyListBody), (status = 401, body = Problem, content_type = "application/problem+json")))]
pub async fn customer_passkeys(
    auth: CustomerAuth,
    State(state): State<AppState>,
) -> Result<Json<PasskeyListBody>, ApiError> {
    let data = state.identity.passkeys(&auth.session).await?.into_iter().map(Into::into).collect();
    Ok(Json(PasskeyListBody { object: "list", data }))
}

/// Removes a passkey (needs a sign-in within 10 minutes); a notice goes to the customer.
#[utoipa::path(delete, path = "/v1/me/passkeys/{id}", tag = "customer", security(("session" = [])),
    params(("id" = String, Path, description = "`pk_…`")),
    responses((status = 204), (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn remove_customer_passkey(
    auth: CustomerAuth,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    plausible_id(&id, "pk_")?;
    state.identity.remove_passkey(&auth.session, &id, &auth.client).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Where the customer is.
#[derive(Debug, Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct PasskeyLoginRequest {
    /// The customer's address and browser, as the shop saw them.
    #[serde(default)]
    pub client: Option<ClientInfo>,
}

/// Begins a passkey sign-in: no email is asked, so the answer says nothing about any account.
#[utoipa::path(post, path = "/v1/identity/login/passkey", tag = "identity", security(("api_key" = ["identity:customers"])),
    request_body = PasskeyLoginRequest,
    responses((status = 200, body = CeremonyBody), (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 429, body = Problem, content_type = "application/problem+json")))]
pub async fn begin_customer_login(
    auth: ApiKeyAuth<scope::IdentityCustomers>,
    State(state): State<AppState>,
    context: RequestContext,
    ApiJson(body): ApiJson<PasskeyLoginRequest>,
) -> Result<Json<CeremonyBody>, ApiError> {
    let client = client_of(body.client, &context, "/client")?;
    Ok(Json(state.identity.begin_passkey_login(auth.principal.space(), &client).await?.into()))
}

/// The browser's answer to a sign-in.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FinishLoginRequest {
    /// `wac_…`
    pub ceremony: String,
    /// The `PublicKeyCredential` from `navigator.credentials.get()`, as JSON.
    #[schema(value_type = Object)]
    pub credential: serde_json::Value,
    /// The customer's address and browser, as the shop saw them.
    #[serde(default)]
    pub client: Option<ClientInfo>,
}

/// Finishes a passkey sign-in: `{"status": "authenticated", "session": …}` (a passkey with user
/// verification is multi-factor).
#[utoipa::path(post, path = "/v1/identity/login/passkey/finish", tag = "identity", security(("api_key" = ["identity:customers"])),
    request_body = FinishLoginRequest,
    responses((status = 200, body = LoginBody), (status = 401, body = Problem, content_type = "application/problem+json", description = "invalid_code")))]
pub async fn finish_customer_login(
    auth: ApiKeyAuth<scope::IdentityCustomers>,
    State(state): State<AppState>,
    context: RequestContext,
    ApiJson(body): ApiJson<FinishLoginRequest>,
) -> Result<Json<LoginBody>, ApiError> {
    let client = client_of(body.client, &context, "/client")?;
    let issued =
        state.identity.finish_passkey_login(auth.principal.space(), &body.ceremony, &body.credential, &client).await?;
    Ok(Json(issued.into()))
}

/// A passkey-only account's first passkey.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FirstPasskeyRequest {
    /// `cus_…`, from the address check.
    pub customer: String,
    /// `wac_…`, from the address check.
    pub ceremony: String,
    /// The `PublicKeyCredential` from `navigator.credentials.create()`, as JSON.
    #[schema(value_type = Object)]
    pub credential: serde_json::Value,
    /// A name for it.
    #[serde(default)]
    pub label: String,
    /// The customer's address and browser.
    #[serde(default)]
    pub client: Option<ClientInfo>,
}

/// Registers a passkey-only account's first passkey (the ceremony its address check answered)
/// and signs the customer in: `{"status": "authenticated", "session": …}`.
#[utoipa::path(post, path = "/v1/identity/passkey-registration/finish", tag = "identity", security(("api_key" = ["identity:customers"])),
    request_body = FirstPasskeyRequest,
    responses((status = 200, body = LoginBody), (status = 401, body = Problem, content_type = "application/problem+json", description = "invalid_code")))]
pub async fn finish_first_passkey(
    auth: ApiKeyAuth<scope::IdentityCustomers>,
    State(state): State<AppState>,
    context: RequestContext,
    ApiJson(body): ApiJson<FirstPasskeyRequest>,
) -> Result<Json<LoginBody>, ApiError> {
    let client = client_of(body.client, &context, "/client")?;
    let issued = state
        .identity
        .finish_first_passkey(
            auth.principal.space(),
            &body.customer,
            &body.ceremony,
            &body.credential,
            &body.label,
            &client,
        )
        .await?;
    Ok(Json(issued.into()))
}

/// A staff sign-in challenge.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StaffChallengeRequest {
    /// `chl_…`
    pub challenge: String,
}

/// Begins a staff sign-in's second factor with a passkey.
#[utoipa::path(post, path = "/v1/staff/login/passkey", tag = "staff", request_body = StaffChallengeRequest,
    responses((status = 200, body = CeremonyBody), (status = 401, body = Problem, content_type = "application/problem+json", description = "invalid_code")))]
pub async fn begin_staff_factor(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<StaffChallengeRequest>,
) -> Result<Json<CeremonyBody>, ApiError> {
    Ok(Json(state.staff.begin_passkey_factor(&body.challenge).await?.into()))
}

/// The browser's answer for a staff sign-in.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StaffPasskeyRequest {
    /// `chl_…`
    pub challenge: String,
    /// `wac_…`
    pub ceremony: String,
    /// The `PublicKeyCredential`, as JSON.
    #[schema(value_type = Object)]
    pub credential: serde_json::Value,
    /// A name for a passkey being enrolled.
    #[serde(default)]
    pub label: String,
}

/// Completes a staff sign-in with a passkey.
#[utoipa::path(post, path = "/v1/staff/login/passkey/finish", tag = "staff", request_body = StaffPasskeyRequest,
    responses((status = 200, body = StaffSignedInBody), (status = 401, body = Problem, content_type = "application/problem+json", description = "invalid_code")))]
pub async fn finish_staff_factor(
    State(state): State<AppState>,
    context: RequestContext,
    headers: http::HeaderMap,
    ApiJson(body): ApiJson<StaffPasskeyRequest>,
) -> Result<Json<StaffSignedInBody>, ApiError> {
    let client = client(&context, user_agent_of(&headers));
    let issued = state.staff.finish_passkey_factor(&body.challenge, &body.ceremony, &body.credential, &client).await?;
    Ok(Json(issued.into()))
}

/// Begins enrolling a passkey as a staff member's first second factor (for `enrolment_required`).
#[utoipa::path(post, path = "/v1/staff/login/passkey-enrolment", tag = "staff", request_body = StaffChallengeRequest,
    responses((status = 200, body = CeremonyBody), (status = 401, body = Problem, content_type = "application/problem+json", description = "invalid_code")))]
pub async fn begin_staff_enrolment(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<StaffChallengeRequest>,
) -> Result<Json<CeremonyBody>, ApiError> {
    Ok(Json(state.staff.begin_passkey_enrolment(&body.challenge).await?.into()))
}

/// Finishes enrolling a first passkey, completing the sign-in.
#[utoipa::path(post, path = "/v1/staff/login/passkey-enrolment/finish", tag = "staff", request_body = StaffPasskeyRequest,
    responses((status = 200, body = StaffSignedInBody), (status = 401, body = Problem, content_type = "application/problem+json", description = "invalid_code")))]
pub async fn finish_staff_enrolment(
    State(state): State<AppState>,
    context: RequestContext,
    headers: http::HeaderMap,
    ApiJson(body): ApiJson<StaffPasskeyRequest>,
) -> Result<Json<StaffSignedInBody>, ApiError> {
    let client = client(&context, user_agent_of(&headers));
    let issued = state
        .staff
        .finish_passkey_enrolment(&body.challenge, &body.ceremony, &body.credential, &body.label, &client)
        .await?;
    Ok(Json(issued.into()))
}

/// Begins adding a passkey to the signed-in staff member (a sign-in within 15 minutes).
#[utoipa::path(post, path = "/v1/staff/me/passkeys", tag = "staff", security(("api_key" = [])),
    responses((status = 200, body = CeremonyBody), (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json")))]
pub async fn begin_staff_registration(
    auth: StaffAuth<scope::AnyKey>,
    State(state): State<AppState>,
) -> Result<Json<CeremonyBody>, ApiError> {
    let staff = auth.staff()?;
    Ok(Json(state.staff.begin_passkey_registration(staff).await?.into()))
}

/// Finishes adding a passkey to the signed-in staff member.
#[utoipa::path(post, path = "/v1/staff/me/passkeys/finish", tag = "staff", security(("api_key" = [])),
    request_body = FinishRegistrationRequest,
    responses((status = 201, body = PasskeyBody), (status = 401, body = Problem, content_type = "application/problem+json")))]
pub async fn finish_staff_registration(
    auth: StaffAuth<scope::AnyKey>,
    State(state): State<AppState>,
    context: RequestContext,
    ApiJson(body): ApiJson<FinishRegistrationRequest>,
) -> Result<(StatusCode, Json<PasskeyBody>), ApiError> {
    let staff = auth.staff()?;
    let record = state
        .staff
        .finish_passkey_registration(staff, &body.ceremony, &body.credential, &body.label, &client(&context, None))
        .await?;
    Ok((StatusCode::CREATED, Json(record.into())))
}

/// The signed-in staff member's passkeys.
#[utoipa::path(get, path = "/v1/staff/me/passkeys", tag = "staff", security(("api_key" = [])),
    responses((status = 200, body = PasskeyListBody), (status = 401, body = Problem, content_type = "application/problem+json")))]
pub async fn staff_passkeys(
    auth: StaffAuth<scope::AnyKey>,
    State(state): State<AppState>,
) -> Result<Json<PasskeyListBody>, ApiError> {
    let staff = auth.staff()?;
    let data = state.staff.passkeys(staff).await?.into_iter().map(Into::into).collect();
    Ok(Json(PasskeyListBody { object: "list", data }))
}

/// Removes one of the signed-in staff member's passkeys (never their last second factor).
#[utoipa::path(delete, path = "/v1/staff/me/passkeys/{id}", tag = "staff", security(("api_key" = [])),
    params(("id" = String, Path, description = "`pk_…`")),
    responses((status = 204), (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json", description = "last_factor")))]
pub async fn remove_staff_passkey(
    auth: StaffAuth<scope::AnyKey>,
    State(state): State<AppState>,
    context: RequestContext,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    plausible_id(&id, "pk_")?;
    let staff = auth.staff()?;
    state.staff.remove_passkey(staff, &id, &client(&context, None)).await?;
    Ok(StatusCode::NO_CONTENT)
}
