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
use strongroom_domain::api_keys::{AuthError, AuthFailure, Principal, Scope, parse_presented};
use strongroom_domain::audit::event::{ActorKind, AuditEvent, Outcome};

use crate::problem::ApiError;
use crate::state::AppState;
use strongroom_domain::DomainError;

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
        let Some(token) = bearer(parts) else {
            let event =
                AuditEvent::by(ActorKind::Anonymous, None, "auth.failed", Outcome::Denied("missing_credentials"));
            record_failure(state, &context, event).await?;
            return Err(ApiError::unauthenticated());
        };
        let verified = if strongroom_domain::staff::StaffService::looks_like_session(token) {
            match state.staff.authenticate(token).await? {
                Some(principal) => Ok(principal),
                None => Err(AuthError::Refused(AuthFailure::Unknown, None)),
            }
        } else if strongroom_domain::oauth::AccessTokens::looks_like_token(token) {
            state.access_tokens.authenticate(token).await
        } else {
            state.api_keys.authenticate(token).await
        };
        let principal = match verified {
            Ok(principal) => principal,
            Err(AuthError::Refused(why, merchant)) => {
                tracing::info!(request_id = context.request_id.as_deref(), reason = ?why, "api key refused");
                // The key id is public (it is the key's name); the secret part never leaves here.
                let key_id = parse_presented(token).map(|(_, id)| id.to_string());
                let (action, reason) = match why {
                    AuthFailure::Malformed => ("auth.failed", "malformed_key"),
                    AuthFailure::Unknown => ("auth.failed", "unknown_key"),
                    AuthFailure::Revoked => ("api_key.used_after_revocation", "revoked_key"),
                    AuthFailure::Expired => ("api_key.used_after_expiry", "expired_key"),
                };
                let mut event = AuditEvent::by(ActorKind::Anonymous, key_id, action, Outcome::Denied(reason));
                event.merchant = merchant;
                record_failure(state, &context, event).await?;
                return Err(ApiError::unauthenticated());
            }
            Err(AuthError::Store(err)) => return Err(err.into()),
        };
        if let Some(required) = S::SCOPE
            && !principal.has(required)
        {
            tracing::info!(
                request_id = context.request_id.as_deref(),
                actor = principal.actor_id(),
                scope = required.as_str(),
                "scope missing"
            );
            let event =
                principal.event("authz.denied", Outcome::Denied("insufficient_scope")).on("scope", required.as_str());
            record_failure(state, &context, event).await?;
            let challenge = format!("Bearer realm=\"strongroom\", error=\"insufficient_scope\", scope=\"{required}\"");
            let mut err = ApiError::new(StatusCode::FORBIDDEN, "insufficient_scope")
                .detail(format!("this API key lacks the scope {required}"));
            if let Ok(value) = HeaderValue::from_str(&challenge) {
                err = err.header(header::WWW_AUTHENTICATE, value);
            }
            return Err(err);
        }
        if let Some(slot) = parts.extensions.get::<crate::middleware::KeySlot>() {
            let _ = slot.0.set(principal.actor_id().to_owned());
        }
        Ok(Self { principal, scope: PhantomData })
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

/// Records an authentication or authorization failure durably before the request is answered:
/// every failed attempt has its audit entry, however many arrive (a flood waits for the audit
/// writer's group commits; it is never thinned). When the entry cannot be made durable the request
/// fails with 503 `audit_unavailable` instead of its 401 or 403.
pub(crate) async fn record_failure(
    state: &AppState,
    context: &super::RequestContext,
    event: AuditEvent,
) -> Result<(), ApiError> {
    state.audit.record(context.stamp(event)).await.map_err(|e| ApiError::from(DomainError::from(e)))?;
    Ok(())
}
