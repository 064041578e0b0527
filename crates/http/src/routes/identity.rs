//! Identity's routes. The shop's backend, with an API key holding `identity:customers`, registers
//! customers, signs them in (`/v1/identity/…`), checks their sessions and redeems their step-up
//! proofs. A signed-in customer acts on their own account with their session token (`/v1/me/…`).
//! Must never: put a password, code, token, proof or email into a log line or an error body;
//! answer differently for an unknown account than for a wrong password.

use super::MASKED;
use axum::Json;
use axum::extract::{Path, State};
use http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use strongroom_domain::identity::accounts::{CustomerView, LoginOutcome, Registration};
use strongroom_domain::identity::factors::FactorAnswer;
use strongroom_domain::identity::sessions::{IssuedSession, SessionView};
use strongroom_domain::identity::step_up::StepUpRedemption;
use strongroom_domain::identity::{Client, CustomerId};
use strongroom_domain::modes::Space;
use strongroom_domain::ports::AccountStatus;
use strongroom_types::Secret;
use utoipa::ToSchema;

use crate::extract::{ApiJson, ApiKeyAuth, CustomerAuth, RequestContext, scope};
use crate::problem::{ApiError, Problem};
use crate::state::AppState;

/// A secret string in a request: never printed by `Debug`.
#[derive(Deserialize, ToSchema, Clone)]
#[serde(transparent)]
#[schema(value_type = String)]
pub struct SecretText(String);

impl std::fmt::Debug for SecretText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("\"***\"")
    }
}

impl SecretText {
    pub(crate) fn secret(self) -> Secret<String> {
        Secret::new(self.0)
    }
}

/// A customer account.
#[derive(Debug, Serialize, ToSchema)]
pub struct CustomerBody {
    /// Always `customer`.
    pub object: &'static str,
    /// `cus_…`
    pub id: String,
    /// The email: in full for the customer, masked (`j***@example.com`) for the shop's backend.
    pub email: String,
    /// Whether the email is verified.
    pub email_verified: bool,
    /// True for a live customer; false for one registered with a test key, which only test keys
    /// see.
    pub livemode: bool,
    /// Whether the account has a password.
    pub has_password: bool,
    /// Whether TOTP is on.
    pub totp: bool,
    /// Unused recovery codes.
    pub recovery_codes_left: u32,
    /// `active` or `disabled`.
    pub status: &'static str,
    /// RFC 3339 UTC.
    pub created_at: String,
}

fn mask_email(email: &str) -> String {
    match email.rsplit_once('@') {
        Some((local, domain)) => format!("{}***@{domain}", local.chars().next().unwrap_or('*')),
        None => "***".to_owned(),
    }
}

impl CustomerBody {
    fn of(view: CustomerView, masked: bool) -> Self {
        Self {
            object: "customer",
            email: if masked { mask_email(&view.email) } else { view.email },
            id: view.id,
            email_verified: view.email_verified,
            livemode: view.livemode,
            has_password: view.has_password,
            totp: view.totp,
            recovery_codes_left: view.recovery_codes_left,
            status: view.status.as_str(),
            created_at: view.created_at.to_rfc3339(),
        }
    }
}

/// A session.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionBody {
    /// Always `session`.
    pub object: &'static str,
    /// `ses_…`
    pub id: String,
    /// How it was authenticated: `password`, `password+totp`, `password+recovery_code`.
    pub factors: String,
    /// The browser.
    pub user_agent: Option<String>,
    /// The address.
    pub ip: Option<String>,
    /// RFC 3339 UTC.
    pub created_at: String,
    /// RFC 3339 UTC, to the minute.
    pub last_seen_at: String,
    /// RFC 3339 UTC: when it ends if unused.
    pub idle_expires_at: String,
    /// RFC 3339 UTC: when it ends regardless.
    pub expires_at: String,
    /// Whether it is the session making this request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current: Option<bool>,
}

impl SessionBody {
    fn of(view: SessionView, current: Option<&str>) -> Self {
        Self {
            object: "session",
            current: current.map(|c| c == view.id),
            id: view.id,
            factors: view.factors,
            user_agent: view.user_agent,
            ip: view.ip,
            created_at: view.created_at.to_rfc3339(),
            last_seen_at: view.last_seen_at.to_rfc3339(),
            idle_expires_at: view.idle_expires_at.to_rfc3339(),
            expires_at: view.expires_at.to_rfc3339(),
        }
    }
}

/// A new session with its token (shown once).
#[derive(Serialize, ToSchema)]
pub struct IssuedSessionBody {
    /// The session.
    pub session: SessionBody,
    /// `cus_…`
    pub customer: String,
    /// The bearer token (`srs_…`): keep it in an `HttpOnly` cookie or memory, never in a URL.
    pub token: String,
}

/// Masks the secret: this answer is shown once, and a `Debug` print must not repeat it.
impl std::fmt::Debug for IssuedSessionBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedSessionBody")
            .field("session", &self.session)
            .field("customer", &self.customer)
            .field("token", &MASKED)
            .finish()
    }
}

impl From<IssuedSession> for IssuedSessionBody {
    fn from(issued: IssuedSession) -> Self {
        Self {
            session: SessionBody::of(issued.session, None),
            customer: issued.customer_id,
            token: issued.token.expose().clone(),
        }
    }
}

/// A new customer.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    /// Their email.
    pub email: String,
    /// Their password (at least 15 characters; any Unicode; no composition rules). Leave out for
    /// a passkey-only account.
    #[serde(default)]
    pub password: Option<SecretText>,
    /// The customer's address and browser, as the shop saw them.
    #[serde(default)]
    pub client: Option<ClientInfo>,
}

/// Where the customer is, as the shop's backend saw them.
#[derive(Debug, Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct ClientInfo {
    /// The customer's IP address.
    #[serde(default)]
    pub ip: Option<String>,
    /// Their browser's user agent.
    #[serde(default)]
    pub user_agent: Option<String>,
    /// The shop's id of the customer's device (1 to 128 characters; e.g. from its device
    /// fingerprinting or its app's install id): intrusion detection counts failed sign-ins per
    /// device and can block one device whatever address it comes from.
    #[serde(default)]
    pub device: Option<String>,
}

pub(crate) fn client_of(info: Option<ClientInfo>, context: &RequestContext, pointer: &str) -> Result<Client, ApiError> {
    let info = info.unwrap_or_default();
    // The user agent is kept with the session and listed to the customer.
    if let Some(agent) = &info.user_agent {
        strongroom_domain::free_text::check(&format!("{pointer}/user_agent"), agent)?;
    }
    let ip_is_the_customers = info.ip.is_some();
    let ip = match info.ip.as_deref() {
        Some(text) => Some(
            text.trim()
                .parse()
                .map_err(|_| ApiError::invalid_field(format!("{pointer}/ip"), "must be an IPv4 or IPv6 address"))?,
        ),
        None => context.ip,
    };
    let device = match info.device.as_deref() {
        Some(text) => Some(strongroom_domain::detection::points::device_id(&format!("{pointer}/device"), text)?),
        None => None,
    };
    Ok(Client { ip, user_agent: info.user_agent, request_id: context.request_id.clone(), ip_is_the_customers, device })
}

/// Registration accepted.
#[derive(Debug, Serialize, ToSchema)]
pub struct RegisteredBody {
    /// Always `registration`.
    pub object: &'static str,
    /// `cus_…`. An email the shop already has gets an answer of the same shape whose id leads
    /// nowhere, so registration cannot reveal who is a customer.
    pub customer: String,
}

/// Registers a customer.
#[utoipa::path(post, path = "/v1/identity/customers", tag = "identity", security(("api_key" = ["identity:customers"])),
    request_body = RegisterRequest,
    responses((status = 401, body = Problem, content_type = "application/problem+json"), 
        (status = 202, body = RegisteredBody),
        (status = 422, body = Problem, content_type = "application/problem+json", description = "validation_failed, invalid_email, weak_password, breached_password"),
        (status = 503, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn register(
    auth: ApiKeyAuth<scope::IdentityCustomers>,
    State(state): State<AppState>,
    context: RequestContext,
    ApiJson(body): ApiJson<RegisterRequest>,
) -> Result<(StatusCode, Json<RegisteredBody>), ApiError> {
    let client = client_of(body.client, &context, "/client")?;
    let input = Registration { email: body.email, password: body.password.map(SecretText::secret) };
    let customer = state.identity.register(auth.principal.space(), input, &client).await?;
    Ok((StatusCode::ACCEPTED, Json(RegisteredBody { object: "registration", customer })))
}

/// A customer, email masked.
#[utoipa::path(get, path = "/v1/identity/customers/{id}", tag = "identity", security(("api_key" = ["identity:customers"])),
    params(("id" = String, Path, description = "cus_…")),
    responses((status = 401, body = Problem, content_type = "application/problem+json"), (status = 200, body = CustomerBody), (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn get_customer(
    auth: ApiKeyAuth<scope::IdentityCustomers>,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<CustomerBody>, ApiError> {
    CustomerId::parse(&id).map_err(|_| ApiError::not_found())?;
    let view = state.identity.customer(auth.principal.space(), &id).await?;
    Ok(Json(CustomerBody::of(view, true)))
}

async fn set_status(
    auth: ApiKeyAuth<scope::IdentityCustomers>,
    state: AppState,
    context: RequestContext,
    id: String,
    status: AccountStatus,
) -> Result<Json<CustomerBody>, ApiError> {
    CustomerId::parse(&id).map_err(|_| ApiError::not_found())?;
    let client = Client {
        ip: context.ip,
        user_agent: None,
        request_id: context.request_id,
        ip_is_the_customers: false,
        device: None,
    };
    let view = state.identity.set_status(auth.principal.space(), &id, status, &auth.principal, &client).await?;
    Ok(Json(CustomerBody::of(view, true)))
}

/// Disables a customer: every session ends at once and sign-in is refused.
#[utoipa::path(post, path = "/v1/identity/customers/{id}/disable", tag = "identity", security(("api_key" = ["identity:customers"])),
    params(("id" = String, Path, description = "cus_…")),
    responses((status = 401, body = Problem, content_type = "application/problem+json"), (status = 200, body = CustomerBody), (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn disable(
    auth: ApiKeyAuth<scope::IdentityCustomers>,
    State(state): State<AppState>,
    context: RequestContext,
    Path(id): Path<String>,
) -> Result<Json<CustomerBody>, ApiError> {
    set_status(auth, state, context, id, AccountStatus::Disabled).await
}

/// Enables a disabled customer again.
#[utoipa::path(post, path = "/v1/identity/customers/{id}/enable", tag = "identity", security(("api_key" = ["identity:customers"])),
    params(("id" = String, Path, description = "cus_…")),
    responses((status = 401, body = Problem, content_type = "application/problem+json"), (status = 200, body = CustomerBody), (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn enable(
    auth: ApiKeyAuth<scope::IdentityCustomers>,
    State(state): State<AppState>,
    context: RequestContext,
    Path(id): Path<String>,
) -> Result<Json<CustomerBody>, ApiError> {
    set_status(auth, state, context, id, AccountStatus::Active).await
}

/// A sign-in.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    /// The email.
    pub email: String,
    /// The password.
    pub password: SecretText,
    /// The customer's address and browser, as the shop saw them (throttling and the session
    /// list use them).
    #[serde(default)]
    pub client: Option<ClientInfo>,
}

/// How a sign-in step ended. Every way a sign-in completes (password alone, a second factor, a
/// passkey, a first passkey's registration) answers `{"status": "authenticated", "session": …}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct LoginBody {
    /// `authenticated` or `second_factor_required`.
    pub status: &'static str,
    /// The new session, when authenticated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session: Option<IssuedSessionBody>,
    /// `chl_…`, when a second factor must follow.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub challenge: Option<String>,
    /// What may answer the challenge.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub factors: Option<Vec<&'static str>>,
    /// RFC 3339 UTC, when the challenge ends.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
}

/// A completed sign-in.
impl From<IssuedSession> for LoginBody {
    fn from(issued: IssuedSession) -> Self {
        Self { status: "authenticated", session: Some(issued.into()), challenge: None, factors: None, expires_at: None }
    }
}

/// Signs a customer in with email and password.
#[utoipa::path(post, path = "/v1/identity/login", tag = "identity", security(("api_key" = ["identity:customers"])),
    request_body = LoginRequest,
    responses(
        (status = 200, body = LoginBody),
        (status = 401, body = Problem, content_type = "application/problem+json", description = "invalid_credentials: wrong password, unknown email or disabled account alike"),
        (status = 429, body = Problem, content_type = "application/problem+json", description = "login_throttled (with Retry-After) or login_stopped"),
        (status = 503, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn login(
    auth: ApiKeyAuth<scope::IdentityCustomers>,
    State(state): State<AppState>,
    context: RequestContext,
    ApiJson(body): ApiJson<LoginRequest>,
) -> Result<Json<LoginBody>, ApiError> {
    let client = client_of(body.client, &context, "/client")?;
    let decoy = state.decisions.is_decoy_account(&body.email);
    let outcome = state.identity.login(auth.principal.space(), &body.email, body.password.secret(), &client).await;
    if decoy {
        // A decoy account: answered as the sign-in answers it (a wrong password's), then reported.
        state.decisions.decoy_sign_in(auth.principal.merchant_id(), client.ip);
    }
    let outcome = outcome?;
    Ok(Json(match outcome {
        LoginOutcome::Authenticated(issued) => issued.into(),
        LoginOutcome::SecondFactorRequired { challenge, factors, expires_at } => LoginBody {
            status: "second_factor_required",
            session: None,
            challenge: Some(challenge),
            factors: Some(factors),
            expires_at: Some(expires_at.to_rfc3339()),
        },
    }))
}

/// A second factor: exactly one of `code` (TOTP) and `recovery_code`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FactorRequest {
    /// A 6-digit code from the authenticator app.
    #[serde(default)]
    pub code: Option<SecretText>,
    /// One of the recovery codes.
    #[serde(default)]
    pub recovery_code: Option<SecretText>,
    /// The code mailed for this sign-in (when the sign-in asked for `email_code`).
    #[serde(default)]
    pub email_code: Option<SecretText>,
    /// A passkey's answer to the ceremony a step-up offered.
    #[serde(default)]
    pub passkey: Option<PasskeyAnswer>,
}

/// A passkey's answer to a ceremony.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasskeyAnswer {
    /// `wac_…`
    pub ceremony: String,
    /// The `PublicKeyCredential` from `navigator.credentials.get()`, as JSON.
    #[schema(value_type = Object)]
    pub credential: Value,
}

impl FactorRequest {
    fn answer(self) -> Result<FactorAnswer, ApiError> {
        match (self.code, self.recovery_code, self.email_code, self.passkey) {
            (Some(code), None, None, None) => Ok(FactorAnswer::Totp(code.secret())),
            (None, Some(code), None, None) => Ok(FactorAnswer::RecoveryCode(code.secret())),
            (None, None, Some(code), None) => Ok(FactorAnswer::EmailCode(code.secret())),
            (None, None, None, Some(p)) => Ok(FactorAnswer::Passkey { ceremony: p.ceremony, credential: p.credential }),
            _ => {
                Err(ApiError::invalid_field("/code", "give exactly one of code, recovery_code, email_code and passkey"))
            }
        }
    }
}

/// The second step of a sign-in.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SecondFactorRequest {
    /// The `chl_…` the sign-in answered.
    pub challenge: String,
    /// The TOTP code.
    #[serde(default)]
    pub code: Option<SecretText>,
    /// Or a recovery code.
    #[serde(default)]
    pub recovery_code: Option<SecretText>,
    /// Or the code mailed for this sign-in.
    #[serde(default)]
    pub email_code: Option<SecretText>,
    /// The customer's address and browser.
    #[serde(default)]
    pub client: Option<ClientInfo>,
}

/// Completes a sign-in with its second factor (5 tries per challenge, 10 minutes): answers
/// `{"status": "authenticated", "session": …}` like a sign-in that needed none.
#[utoipa::path(post, path = "/v1/identity/login/second-factor", tag = "identity", security(("api_key" = ["identity:customers"])),
    request_body = SecondFactorRequest,
    responses(
        (status = 200, body = LoginBody),
        (status = 401, body = Problem, content_type = "application/problem+json", description = "invalid_code"),
    ))]
pub async fn login_second_factor(
    auth: ApiKeyAuth<scope::IdentityCustomers>,
    State(state): State<AppState>,
    context: RequestContext,
    ApiJson(body): ApiJson<SecondFactorRequest>,
) -> Result<Json<LoginBody>, ApiError> {
    let client = client_of(body.client, &context, "/client")?;
    let answer = FactorRequest {
        code: body.code,
        recovery_code: body.recovery_code,
        email_code: body.email_code,
        passkey: None,
    }
    .answer()?;
    let issued =
        state.identity.login_second_factor(auth.principal.space(), body.challenge.trim(), answer, &client).await?;
    Ok(Json(issued.into()))
}

/// A session token to check.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AuthenticateRequest {
    /// The `srs_…` token.
    pub token: SecretText,
}

/// A live session and its customer.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuthenticatedBody {
    /// `cus_…`
    pub customer: String,
    /// `ses_…`
    pub session: String,
    /// How it was authenticated.
    pub factors: String,
}

/// Checks a customer's session token (for a backend that holds it in a cookie).
#[utoipa::path(post, path = "/v1/identity/sessions/authenticate", tag = "identity", security(("api_key" = ["identity:customers"])),
    request_body = AuthenticateRequest,
    responses(
        (status = 200, body = AuthenticatedBody),
        (status = 401, body = Problem, content_type = "application/problem+json", description = "not a live session of this merchant"),
    ))]
pub async fn authenticate_session(
    auth: ApiKeyAuth<scope::IdentityCustomers>,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<AuthenticateRequest>,
) -> Result<Json<AuthenticatedBody>, ApiError> {
    match state.identity.authenticate_session(&body.token.0).await? {
        // Another merchant's or mode's session answers as an unknown one.
        Some(session) if session.space() == auth.principal.space() => Ok(Json(AuthenticatedBody {
            customer: session.customer_id,
            session: session.session_id,
            factors: session.factors,
        })),
        _ => Err(ApiError::new(StatusCode::UNAUTHORIZED, "invalid_session").detail("not a live session")),
    }
}

/// A step-up proof to redeem.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RedeemRequest {
    /// `cus_…`
    pub customer: String,
    /// The `sup_…` proof.
    pub proof: SecretText,
    /// The purpose it must have been made for.
    pub purpose: String,
    /// The binding it must have been made for (same fields and values, any order).
    #[schema(value_type = Object)]
    pub binding: Map<String, Value>,
    /// The customer's address and browser, as the shop saw them: a link or proof presented again
    /// after use is counted against this address (intrusion detection's `replayed_token`), never
    /// against the shop's server.
    #[serde(default)]
    pub client: Option<ClientInfo>,
}

/// Redeemed.
#[derive(Debug, Serialize, ToSchema)]
pub struct RedeemedBody {
    /// Always true: anything else is an error.
    pub valid: bool,
}

/// Redeems a customer's step-up proof for one action: once, within 5 minutes, for exactly the
/// purpose and binding it was made for. Any other use spends it.
#[utoipa::path(post, path = "/v1/identity/step-up/redeem", tag = "identity", security(("api_key" = ["identity:customers"])),
    request_body = RedeemRequest,
    responses((status = 401, body = Problem, content_type = "application/problem+json"), 
        (status = 200, body = RedeemedBody),
        (status = 422, body = Problem, content_type = "application/problem+json", description = "step_up_invalid or validation_failed"),
    ))]
pub async fn redeem_step_up(
    auth: ApiKeyAuth<scope::IdentityCustomers>,
    State(state): State<AppState>,
    context: RequestContext,
    ApiJson(mut body): ApiJson<RedeemRequest>,
) -> Result<Json<RedeemedBody>, ApiError> {
    let client = client_of(body.client.take(), &context, "/client")?;
    let redemption = StepUpRedemption {
        customer: &body.customer,
        proof: &body.proof.0,
        purpose: &body.purpose,
        binding: &body.binding,
    };
    state.identity.redeem_step_up(auth.principal.space(), redemption, &auth.principal, &client).await?;
    Ok(Json(RedeemedBody { valid: true }))
}

/// A password to rate.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StrengthRequest {
    /// The candidate.
    pub password: SecretText,
    /// The customer's email, whose words the password should not be built on.
    #[serde(default)]
    pub email: Option<String>,
    /// Whether the customer has a second factor (the minimum length is then 8, not 15).
    #[serde(default)]
    pub has_second_factor: bool,
}

/// Strength feedback to show while a customer types.
#[derive(Debug, Serialize, ToSchema)]
pub struct StrengthBody {
    /// 0 (too guessable) to 4 (very unguessable).
    pub score: u8,
    /// Whether the policy accepts it.
    pub acceptable: bool,
    /// The shortest length accepted here.
    pub min_length: usize,
    /// Why it is weak.
    pub warning: Option<String>,
    /// How to make it stronger.
    pub suggestions: Vec<String>,
}

/// Rates a candidate password (zxcvbn) against the policy; nothing is stored or logged.
#[utoipa::path(post, path = "/v1/identity/password-strength", tag = "identity", security(("api_key" = ["identity:customers"])),
    request_body = StrengthRequest, responses((status = 401, body = Problem, content_type = "application/problem+json"), (status = 200, body = StrengthBody)))]
pub async fn password_strength(
    _auth: ApiKeyAuth<scope::IdentityCustomers>,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<StrengthRequest>,
) -> Json<StrengthBody> {
    let strength = state.identity.rate_password(&body.password.0, body.email.as_deref(), body.has_second_factor);
    Json(StrengthBody {
        score: strength.score,
        acceptable: strength.acceptable,
        min_length: strength.min_length,
        warning: strength.warning,
        suggestions: strength.suggestions,
    })
}

/// The signed-in customer's account, email in full.
#[utoipa::path(get, path = "/v1/me", tag = "customer", security(("session" = [])),
    responses((status = 200, body = CustomerBody), (status = 401, body = Problem, content_type = "application/problem+json")))]
pub async fn me(auth: CustomerAuth, State(state): State<AppState>) -> Result<Json<CustomerBody>, ApiError> {
    Ok(Json(CustomerBody::of(state.identity.me(&auth.session).await?, false)))
}

/// The session making this request: who is signed in, and how (validation only, nothing else is
/// read).
#[utoipa::path(get, path = "/v1/me/session", tag = "customer", security(("session" = [])),
    responses((status = 200, body = AuthenticatedBody), (status = 401, body = Problem, content_type = "application/problem+json")))]
pub async fn current_session(auth: CustomerAuth) -> Json<AuthenticatedBody> {
    Json(AuthenticatedBody {
        customer: auth.session.customer_id,
        session: auth.session.session_id,
        factors: auth.session.factors,
    })
}

/// Ends the current session.
#[utoipa::path(post, path = "/v1/me/logout", tag = "customer", security(("session" = [])),
    responses((status = 204), (status = 401, body = Problem, content_type = "application/problem+json")))]
pub async fn logout(auth: CustomerAuth, State(state): State<AppState>) -> Result<StatusCode, ApiError> {
    state.identity.end_session(&auth.session, &auth.session.session_id.clone(), &auth.client).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Sessions.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionListBody {
    /// Always `list`.
    pub object: &'static str,
    /// Live sessions, newest first.
    pub data: Vec<SessionBody>,
}

/// The customer's live sessions and devices.
#[utoipa::path(get, path = "/v1/me/sessions", tag = "customer", security(("session" = [])),
    responses((status = 401, body = Problem, content_type = "application/problem+json"), (status = 200, body = SessionListBody)))]
pub async fn sessions(auth: CustomerAuth, State(state): State<AppState>) -> Result<Json<SessionListBody>, ApiError> {
    let list = state.identity.list_sessions(&auth.session).await?;
    let current = auth.session.session_id.as_str();
    Ok(Json(SessionListBody {
        object: "list",
        data: list.into_iter().map(|s| SessionBody::of(s, Some(current))).collect(),
    }))
}

/// Ends one of the customer's sessions.
#[utoipa::path(delete, path = "/v1/me/sessions/{id}", tag = "customer", security(("session" = [])),
    params(("id" = String, Path, description = "ses_…")),
    responses((status = 401, body = Problem, content_type = "application/problem+json"), (status = 204), (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn end_session(
    auth: CustomerAuth,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.identity.end_session(&auth.session, &id, &auth.client).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// How many sessions ended.
#[derive(Debug, Serialize, ToSchema)]
pub struct EndedBody {
    /// Sessions ended.
    pub sessions_ended: u64,
}

/// Ends every session but the current one.
#[utoipa::path(post, path = "/v1/me/sessions/end-others", tag = "customer", security(("session" = [])),
    responses((status = 401, body = Problem, content_type = "application/problem+json"), (status = 200, body = EndedBody)))]
pub async fn end_other_sessions(
    auth: CustomerAuth,
    State(state): State<AppState>,
) -> Result<Json<EndedBody>, ApiError> {
    let ended = state.identity.end_other_sessions(&auth.session, &auth.client).await?;
    Ok(Json(EndedBody { sessions_ended: ended }))
}

fn default_true() -> bool {
    true
}

/// A password change.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordChangeRequest {
    /// The current password.
    pub current_password: SecretText,
    /// The new one.
    pub new_password: SecretText,
    /// End every other session (default true).
    #[serde(default = "default_true")]
    pub end_other_sessions: bool,
}

/// Changes the password (the current one must be right); other sessions end by default.
#[utoipa::path(post, path = "/v1/me/password", tag = "customer", security(("session" = [])),
    request_body = PasswordChangeRequest,
    responses((status = 401, body = Problem, content_type = "application/problem+json"), 
        (status = 200, body = EndedBody),
        (status = 422, body = Problem, content_type = "application/problem+json", description = "invalid_credentials (current password), weak_password, breached_password"),
        (status = 429, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn change_password(
    auth: CustomerAuth,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<PasswordChangeRequest>,
) -> Result<Json<EndedBody>, ApiError> {
    let ended = state
        .identity
        .change_password(
            &auth.session,
            body.current_password.secret(),
            body.new_password.secret(),
            !body.end_other_sessions,
            &auth.client,
        )
        .await?;
    Ok(Json(EndedBody { sessions_ended: ended }))
}

/// A TOTP enrolment to confirm.
#[derive(Serialize, ToSchema)]
pub struct TotpEnrolmentBody {
    /// The seed in base32, to type into an authenticator app.
    pub secret: String,
    /// The `otpauth://` URI, to show as a QR code.
    pub otpauth_uri: String,
}

/// Masks the secret: this answer is shown once, and a `Debug` print must not repeat it.
impl std::fmt::Debug for TotpEnrolmentBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TotpEnrolmentBody").field("secret", &MASKED).field("otpauth_uri", &MASKED).finish()
    }
}

/// Starts TOTP enrolment: the seed is shown this once.
#[utoipa::path(post, path = "/v1/me/totp", tag = "customer", security(("session" = [])),
    responses((status = 401, body = Problem, content_type = "application/problem+json"), (status = 201, body = TotpEnrolmentBody), (status = 409, body = Problem, content_type = "application/problem+json")))]
pub async fn begin_totp(
    auth: CustomerAuth,
    State(state): State<AppState>,
) -> Result<(StatusCode, Json<TotpEnrolmentBody>), ApiError> {
    let enrolment = state.identity.begin_totp(&auth.session, &auth.client).await?;
    Ok((
        StatusCode::CREATED,
        Json(TotpEnrolmentBody {
            secret: enrolment.secret.expose().clone(),
            otpauth_uri: enrolment.otpauth_uri.expose().clone(),
        }),
    ))
}

/// A first TOTP code.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TotpConfirmRequest {
    /// The code the app shows.
    pub code: SecretText,
    /// End every other session (default true).
    #[serde(default = "default_true")]
    pub end_other_sessions: bool,
}

/// Recovery codes, shown once.
#[derive(Serialize, ToSchema)]
pub struct RecoveryCodesBody {
    /// Ten single-use codes.
    pub recovery_codes: Vec<String>,
    /// Other sessions ended.
    pub sessions_ended: u64,
}

/// Masks the secret: this answer is shown once, and a `Debug` print must not repeat it.
impl std::fmt::Debug for RecoveryCodesBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecoveryCodesBody")
            .field("recovery_codes", &format_args!("[{} × {MASKED}]", self.recovery_codes.len()))
            .field("sessions_ended", &self.sessions_ended)
            .finish()
    }
}

/// Confirms TOTP with a first code; answers ten recovery codes, shown this once.
#[utoipa::path(post, path = "/v1/me/totp/confirm", tag = "customer", security(("session" = [])),
    request_body = TotpConfirmRequest,
    responses((status = 200, body = RecoveryCodesBody), (status = 401, body = Problem, content_type = "application/problem+json")))]
pub async fn confirm_totp(
    auth: CustomerAuth,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<TotpConfirmRequest>,
) -> Result<Json<RecoveryCodesBody>, ApiError> {
    let (codes, ended) =
        state.identity.confirm_totp(&auth.session, body.code.secret(), !body.end_other_sessions, &auth.client).await?;
    Ok(Json(RecoveryCodesBody {
        recovery_codes: codes.iter().map(|c| c.expose().clone()).collect(),
        sessions_ended: ended,
    }))
}

/// Turns TOTP off (needs a current code or a recovery code); the recovery codes go with it.
#[utoipa::path(post, path = "/v1/me/totp/remove", tag = "customer", security(("session" = [])),
    request_body = FactorRequest,
    responses((status = 204), (status = 401, body = Problem, content_type = "application/problem+json")))]
pub async fn remove_totp(
    auth: CustomerAuth,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<FactorRequest>,
) -> Result<StatusCode, ApiError> {
    state.identity.remove_totp(&auth.session, body.answer()?, &auth.client).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A current TOTP code.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CodeRequest {
    /// The code the app shows.
    pub code: SecretText,
}

/// Replaces the recovery codes (needs a current TOTP code).
#[utoipa::path(post, path = "/v1/me/recovery-codes", tag = "customer", security(("session" = [])),
    request_body = CodeRequest,
    responses((status = 200, body = RecoveryCodesBody), (status = 401, body = Problem, content_type = "application/problem+json")))]
pub async fn regenerate_recovery_codes(
    auth: CustomerAuth,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<CodeRequest>,
) -> Result<Json<RecoveryCodesBody>, ApiError> {
    let codes = state.identity.regenerate_recovery_codes(&auth.session, body.code.secret(), &auth.client).await?;
    Ok(Json(RecoveryCodesBody {
        recovery_codes: codes.iter().map(|c| c.expose().clone()).collect(),
        sessions_ended: 0,
    }))
}

/// A step-up for one action.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StepUpRequest {
    /// What for, e.g. `payment`, `email_change`.
    pub purpose: String,
    /// What exactly: a flat object of strings, integers and booleans, e.g.
    /// `{"amount": 1999, "currency": "EUR", "payee": "acme", "order": "ord_1"}`.
    #[schema(value_type = Object)]
    pub binding: Map<String, Value>,
}

/// A step-up challenge.
#[derive(Debug, Serialize, ToSchema)]
pub struct StepUpChallengeBody {
    /// `chl_…`
    pub challenge: String,
    /// What may answer it: `totp`, `recovery_code`, `passkey`.
    pub factors: Vec<&'static str>,
    /// RFC 3339 UTC.
    pub expires_at: String,
    /// For `passkey`: the WebAuthn ceremony to answer (`navigator.credentials.get(options)`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub passkey: Option<super::passkeys::CeremonyBody>,
}

/// Asks for a step-up bound to one action.
#[utoipa::path(post, path = "/v1/me/step-up", tag = "customer", security(("session" = [])),
    request_body = StepUpRequest,
    responses((status = 401, body = Problem, content_type = "application/problem+json"), (status = 201, body = StepUpChallengeBody), (status = 409, body = Problem, content_type = "application/problem+json", description = "no_second_factor")))]
pub async fn begin_step_up(
    auth: CustomerAuth,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<StepUpRequest>,
) -> Result<(StatusCode, Json<StepUpChallengeBody>), ApiError> {
    let challenge = state.identity.begin_step_up(&auth.session, &body.purpose, &body.binding, &auth.client).await?;
    Ok((
        StatusCode::CREATED,
        Json(StepUpChallengeBody {
            challenge: challenge.id,
            factors: challenge.factors,
            expires_at: challenge.expires_at.to_rfc3339(),
            passkey: challenge.passkey.map(Into::into),
        }),
    ))
}

/// An answered step-up.
#[derive(Serialize, ToSchema)]
pub struct StepUpProofBody {
    /// `sup_…`: hand it to the shop, which redeems it for the bound action.
    pub proof: String,
    /// RFC 3339 UTC.
    pub expires_at: String,
    /// The renewed session: the previous token no longer works.
    pub session: IssuedSessionBody,
}

/// Masks the secret: this answer is shown once, and a `Debug` print must not repeat it.
impl std::fmt::Debug for StepUpProofBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StepUpProofBody")
            .field("proof", &MASKED)
            .field("expires_at", &self.expires_at)
            .field("session", &self.session)
            .finish()
    }
}

/// Answers a step-up challenge with a second factor.
#[utoipa::path(post, path = "/v1/me/step-up/{id}/verify", tag = "customer", security(("session" = [])),
    params(("id" = String, Path, description = "chl_…")),
    request_body = FactorRequest,
    responses((status = 200, body = StepUpProofBody), (status = 401, body = Problem, content_type = "application/problem+json")))]
pub async fn verify_step_up(
    auth: CustomerAuth,
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<FactorRequest>,
) -> Result<Json<StepUpProofBody>, ApiError> {
    let proof = state.identity.verify_step_up(&auth.session, &id, body.answer()?, &auth.client).await?;
    Ok(Json(StepUpProofBody {
        proof: proof.proof.expose().clone(),
        expires_at: proof.expires_at.to_rfc3339(),
        session: proof.session.into(),
    }))
}

/// An emailed link's token.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LinkRequest {
    /// The `evt_…` token from the link's fragment.
    pub token: SecretText,
    /// The customer's address and browser, as the shop saw them: a link or proof presented again
    /// after use is counted against this address (intrusion detection's `replayed_token`), never
    /// against the shop's server.
    #[serde(default)]
    pub client: Option<ClientInfo>,
}

/// A verified address.
#[derive(Debug, Serialize, ToSchema)]
pub struct VerifiedBody {
    /// `cus_…`
    pub customer: String,
    /// Always true.
    pub email_verified: bool,
    /// For a passkey-only account without a passkey yet: the ceremony that registers its first
    /// one (finish it at `POST /v1/identity/passkey-registration/finish`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub passkey_registration: Option<super::passkeys::CeremonyBody>,
}

/// Verifies a customer's address with the emailed link (once, within 24 hours).
#[utoipa::path(post, path = "/v1/identity/verify-email", tag = "identity", security(("api_key" = ["identity:customers"])),
    request_body = LinkRequest,
    responses((status = 200, body = VerifiedBody), (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json", description = "invalid_link")))]
pub async fn verify_email(
    auth: ApiKeyAuth<scope::IdentityCustomers>,
    State(state): State<AppState>,
    context: RequestContext,
    ApiJson(mut body): ApiJson<LinkRequest>,
) -> Result<Json<VerifiedBody>, ApiError> {
    let client = client_of(body.client.take(), &context, "/client")?;
    let space = auth.principal.space();
    let customer = state.identity.verify_email(space, &body.token.0, &client).await?;
    let passkey_registration = state.identity.first_passkey_ceremony(space, &customer).await?.map(Into::into);
    Ok(Json(VerifiedBody { customer, email_verified: true, passkey_registration }))
}

/// A forgotten password.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResetRequest {
    /// The address.
    pub email: String,
    /// The customer's address and browser.
    #[serde(default)]
    pub client: Option<ClientInfo>,
}

/// Mails a 15-minute single-use reset link when the address has an account; answers 202 either way.
#[utoipa::path(post, path = "/v1/identity/password-reset", tag = "identity", security(("api_key" = ["identity:customers"])),
    request_body = ResetRequest,
    responses((status = 202), (status = 401, body = Problem, content_type = "application/problem+json")))]
pub async fn request_password_reset(
    auth: ApiKeyAuth<scope::IdentityCustomers>,
    State(state): State<AppState>,
    context: RequestContext,
    ApiJson(body): ApiJson<ResetRequest>,
) -> Result<StatusCode, ApiError> {
    let client = client_of(body.client, &context, "/client")?;
    // Answered at once; the look-up and the mail happen afterwards, so the answer's timing says
    // nothing about whether the address has an account.
    let identity = state.identity.clone();
    let merchant = auth.principal.merchant_id().clone();
    let mode = auth.principal.mode();
    tokio::spawn(async move {
        let space = Space { merchant: &merchant, mode };
        if let Err(err) = identity.request_password_reset(space, &body.email, &client).await {
            tracing::error!(error = %err, "password reset request failed");
        }
    });
    Ok(StatusCode::ACCEPTED)
}

/// A new password from a reset link.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResetCompleteRequest {
    /// The `rst_…` token from the link's fragment.
    pub token: SecretText,
    /// The new password.
    pub new_password: SecretText,
    /// The TOTP code, when the account has TOTP (a reset never bypasses the second factor).
    #[serde(default)]
    pub code: Option<SecretText>,
    /// Or a recovery code.
    #[serde(default)]
    pub recovery_code: Option<SecretText>,
    /// The customer's address and browser, as the shop saw them: a link or proof presented again
    /// after use is counted against this address (intrusion detection's `replayed_token`), never
    /// against the shop's server.
    #[serde(default)]
    pub client: Option<ClientInfo>,
}

/// Sets a new password with a reset link (and the second factor, when enrolled); every session
/// ends and nobody is signed in by it.
#[utoipa::path(post, path = "/v1/identity/password-reset/complete", tag = "identity", security(("api_key" = ["identity:customers"])),
    request_body = ResetCompleteRequest,
    responses((status = 204), (status = 401, body = Problem, content_type = "application/problem+json", description = "invalid_code: the second factor is missing or wrong"),
        (status = 422, body = Problem, content_type = "application/problem+json", description = "invalid_link, weak_password or breached_password")))]
pub async fn complete_password_reset(
    auth: ApiKeyAuth<scope::IdentityCustomers>,
    State(state): State<AppState>,
    context: RequestContext,
    ApiJson(mut body): ApiJson<ResetCompleteRequest>,
) -> Result<StatusCode, ApiError> {
    let client = client_of(body.client.take(), &context, "/client")?;
    let factor = match (body.code, body.recovery_code) {
        (None, None) => None,
        (code, recovery_code) => Some(FactorRequest { code, recovery_code, email_code: None, passkey: None }.answer()?),
    };
    state
        .identity
        .complete_password_reset(auth.principal.space(), &body.token.0, body.new_password.secret(), factor, &client)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A new address.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EmailChangeRequest {
    /// The new address.
    pub email: String,
    /// A step-up proof (`sup_…`) for purpose `email_change` with binding `{"email": <the new
    /// address exactly as sent here>}`: required when the account has a second factor.
    #[serde(default)]
    pub proof: Option<SecretText>,
    /// The current password: instead of a proof, for accounts without a second factor (and a
    /// sign-in within 10 minutes).
    #[serde(default)]
    pub current_password: Option<SecretText>,
}

/// Starts an email change: a confirmation link goes to the new address, a notice to the current
/// one; the address changes when the link is opened (`POST /v1/identity/verify-email`).
#[utoipa::path(post, path = "/v1/me/email", tag = "customer", security(("session" = [])),
    request_body = EmailChangeRequest,
    responses((status = 202), (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json", description = "same_email"),
        (status = 422, body = Problem, content_type = "application/problem+json", description = "step_up_required, step_up_invalid, wrong_password")))]
pub async fn change_email(
    auth: CustomerAuth,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<EmailChangeRequest>,
) -> Result<StatusCode, ApiError> {
    let proof = body.proof.map(SecretText::secret);
    state
        .identity
        .request_email_change(
            &auth.session,
            &body.email,
            proof.as_ref().map(|p| p.expose().as_str()),
            body.current_password.map(SecretText::secret),
            &auth.client,
        )
        .await?;
    Ok(StatusCode::ACCEPTED)
}

/// The anti-phishing phrase.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PhraseRequest {
    /// 3 to 64 characters every mail will show; empty to remove it.
    pub phrase: String,
}

/// Sets the anti-phishing phrase shown at the top of every mail.
#[utoipa::path(put, path = "/v1/me/anti-phishing-phrase", tag = "customer", security(("session" = [])),
    request_body = PhraseRequest,
    responses((status = 204), (status = 401, body = Problem, content_type = "application/problem+json"), (status = 422, body = Problem, content_type = "application/problem+json")))]
pub async fn set_phrase(
    auth: CustomerAuth,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<PhraseRequest>,
) -> Result<StatusCode, ApiError> {
    state.identity.set_phrase(&auth.session, &body.phrase, &auth.client).await?;
    Ok(StatusCode::NO_CONTENT)
}
