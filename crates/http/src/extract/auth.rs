//! The API key guard: `ApiKeyAuth<S>` in a handler's signature authenticates the caller and checks
//! the scope `S` names, so a handler cannot be reached without its guard.
//!
//! ```ignore
//! async fn revoke(auth: ApiKeyAuth<scope::AdminApiKeys>, …) -> … { … }
//! ```
//! Must never: tell the client whether a key was unknown, revoked or expired (one 401 for all),
//! or accept a key from anywhere but the `Authorization: Bearer` header (never a URL).

use std::marker::PhantomData;

use axum::extract::FromRequestParts;
use http::request::Parts;
use http::{HeaderValue, StatusCode, header};
use strongroom_domain::api_keys::{Principal, Scope};
use strongroom_domain::gate::{Gate, GateError};
use strongroom_domain::identity::Client;

use crate::problem::ApiError;
use crate::state::AppState;

/// A scope a route requires, as a type.
pub trait RequiredScope: Send + Sync + 'static {
    /// The scope, or `None` for routes any valid key may call.
    const SCOPE: Option<Scope>;
}

/// Scope markers for [`ApiKeyAuth`].
pub mod scope {
    use super::{RequiredScope, Scope};

    /// Any valid key.
    #[derive(Debug)]
    pub struct AnyKey;
    impl RequiredScope for AnyKey {
        const SCOPE: Option<Scope> = None;
    }

    /// `admin:api_keys`
    #[derive(Debug)]
    pub struct AdminApiKeys;
    impl RequiredScope for AdminApiKeys {
        const SCOPE: Option<Scope> = Some(Scope::AdminApiKeys);
    }

    /// `admin:webhooks`
    #[derive(Debug)]
    pub struct AdminWebhooks;
    impl RequiredScope for AdminWebhooks {
        const SCOPE: Option<Scope> = Some(Scope::AdminWebhooks);
    }

    /// `security:manage`
    #[derive(Debug)]
    pub struct SecurityManage;
    impl RequiredScope for SecurityManage {
        const SCOPE: Option<Scope> = Some(Scope::SecurityManage);
    }

    /// `payments:write`
    #[derive(Debug)]
    pub struct PaymentsWrite;
    impl RequiredScope for PaymentsWrite {
        const SCOPE: Option<Scope> = Some(Scope::PaymentsWrite);
    }

    /// `payments:read`
    #[derive(Debug)]
    pub struct PaymentsRead;
    impl RequiredScope for PaymentsRead {
        const SCOPE: Option<Scope> = Some(Scope::PaymentsRead);
    }

    /// `payments:refund`
    #[derive(Debug)]
    pub struct PaymentsRefund;
    impl RequiredScope for PaymentsRefund {
        const SCOPE: Option<Scope> = Some(Scope::PaymentsRefund);
    }

    /// `admin:metrics`
    #[derive(Debug)]
    pub struct AdminMetrics;
    impl RequiredScope for AdminMetrics {
        const SCOPE: Option<Scope> = Some(Scope::AdminMetrics);
    }

    /// `audit:read`
    #[derive(Debug)]
    pub struct AuditRead;
    impl RequiredScope for AuditRead {
        const SCOPE: Option<Scope> = Some(Scope::AuditRead);
    }

    /// `admin:keys`
    #[derive(Debug)]
    pub struct AdminKeys;
    impl RequiredScope for AdminKeys {
        const SCOPE: Option<Scope> = Some(Scope::AdminKeys);
    }

    /// `vault:write`
    #[derive(Debug)]
    pub struct VaultWrite;
    impl RequiredScope for VaultWrite {
        const SCOPE: Option<Scope> = Some(Scope::VaultWrite);
    }

    /// `vault:read`
    #[derive(Debug)]
    pub struct VaultRead;
    impl RequiredScope for VaultRead {
        const SCOPE: Option<Scope> = Some(Scope::VaultRead);
    }

    /// `vault:forward`
    #[derive(Debug)]
    pub struct VaultForward;
    impl RequiredScope for VaultForward {
        const SCOPE: Option<Scope> = Some(Scope::VaultForward);
    }

    /// `identity:customers`
    #[derive(Debug)]
    pub struct IdentityCustomers;
    impl RequiredScope for IdentityCustomers {
        const SCOPE: Option<Scope> = Some(Scope::IdentityCustomers);
    }

    /// `admin:staff`
    #[derive(Debug)]
    pub struct AdminStaff;
    impl RequiredScope for AdminStaff {
        const SCOPE: Option<Scope> = Some(Scope::AdminStaff);
    }

    /// `privacy:erase`
    #[derive(Debug)]
    pub struct PrivacyErase;
    impl RequiredScope for PrivacyErase {
        const SCOPE: Option<Scope> = Some(Scope::PrivacyErase);
    }
}

/// An authenticated caller holding scope `S`.
#[derive(Debug)]
pub struct ApiKeyAuth<S: RequiredScope> {
    /// Who is calling.
    pub principal: Principal,
    scope: PhantomData<S>,
}

/// Reads the bearer token; `None` when absent or not a bearer token.
pub(crate) fn bearer(parts: &Parts) -> Option<&str> {
    let value = parts.headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

impl<S: RequiredScope> FromRequestParts<AppState> for ApiKeyAuth<S> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let context = super::RequestContext::of(parts);
        let gate = Gate {
            api_keys: &state.api_keys,
            access_tokens: &state.access_tokens,
            staff: &state.staff,
            audit: &state.audit,
            decisions: Some(&state.decisions),
        };
        let client = Client {
            ip: context.ip,
            user_agent: None,
            request_id: context.request_id.clone(),
            ip_is_the_customers: false,
            device: None,
        };
        let principal = match gate.admit(bearer(parts), S::SCOPE, &client).await {
            Ok(principal) => principal,
            Err(GateError::Unauthenticated) => {
                tracing::info!(request_id = context.request_id.as_deref(), "credential refused");
                return Err(ApiError::unauthenticated());
            }
            Err(GateError::MissingScope(required, caller)) => {
                // Who asked is known: a key probing scopes it lacks counts as enumeration.
                fill_key_slot(parts, &caller);
                tracing::info!(request_id = context.request_id.as_deref(), scope = required.as_str(), "scope missing");
                let challenge =
                    format!("Bearer realm=\"strongroom\", error=\"insufficient_scope\", scope=\"{required}\"");
                let mut err = ApiError::new(StatusCode::FORBIDDEN, "insufficient_scope")
                    .detail(format!("this API key lacks the scope {required}"));
                if let Ok(value) = HeaderValue::from_str(&challenge) {
                    err = err.header(header::WWW_AUTHENTICATE, value);
                }
                return Err(err);
            }
            Err(GateError::LiveModeRequired(required)) => {
                tracing::info!(request_id = context.request_id.as_deref(), scope = required.as_str(), "test mode");
                return Err(ApiError::live_mode_required(required));
            }
            Err(GateError::Suspended(until)) => {
                tracing::info!(request_id = context.request_id.as_deref(), "suspended API key");
                let wait = until.millis_since(state.decisions.now()).max(1000) / 1000;
                let mut err = ApiError::new(StatusCode::FORBIDDEN, "api_key_suspended").detail(
                    "intrusion detection (or the shop's security staff) suspended this API key; see \
                     /v1/security/decisions",
                );
                if let Ok(value) = HeaderValue::from_str(&wait.to_string()) {
                    err = err.header(header::RETRY_AFTER, value);
                }
                return Err(err);
            }
            Err(GateError::Failed(err)) => return Err(err.into()),
        };
        fill_key_slot(parts, &principal);
        Ok(Self { principal, scope: PhantomData })
    }
}

/// Leaves who called where the access log and the enumeration count find it.
fn fill_key_slot(parts: &Parts, principal: &Principal) {
    if let Some(slot) = parts.extensions.get::<crate::middleware::KeySlot>() {
        let _ = slot.0.set(crate::middleware::SlotCaller {
            actor: principal.actor_id().to_owned(),
            merchant: principal.merchant_id().clone(),
            api_key: principal.key_id().is_some() && principal.as_staff().is_none(),
        });
    }
}

/// A staff session holding the scope `S`: the guard of staff-only routes. An API key (even one
/// with the scope) is refused with 403, so a handler that takes it cannot be reached without a
/// staff session.
#[derive(Debug)]
pub struct StaffAuth<S: RequiredScope> {
    /// The caller (always a staff principal).
    pub principal: Principal,
    scope: PhantomData<S>,
}

impl<S: RequiredScope> StaffAuth<S> {
    /// The staff member and their session.
    pub fn staff(&self) -> Result<&strongroom_domain::api_keys::StaffPrincipal, ApiError> {
        self.principal.as_staff().ok_or_else(ApiError::unauthenticated)
    }
}

impl<S: RequiredScope> FromRequestParts<AppState> for StaffAuth<S> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let auth = ApiKeyAuth::<S>::from_request_parts(parts, state).await?;
        if auth.principal.as_staff().is_none() {
            return Err(
                ApiError::new(StatusCode::FORBIDDEN, "forbidden").detail("this needs a staff session token (sst_…)")
            );
        }
        Ok(Self { principal: auth.principal, scope: PhantomData })
    }
}
