//! The gate: who is calling, from the bearer credential a request presents (an API key, an OAuth
//! access token or a staff session), and the audit entry of every refusal.
//!
//! Every refused credential and every missing scope is recorded durably before the caller
//! answers 401 or 403: a flood waits for the audit writer's group commits and is never thinned.
//! When the entry cannot be made durable the gate fails with `audit_unavailable` (503) instead.
//! Only the audit log learns why a credential was refused (unknown, malformed, revoked,
//! expired); the client gets one answer for all.
//!
//! Must never: record a credential's secret part (a key's id is its public name and may be
//! recorded), or let a request through whose refusal could not be recorded.

use crate::DomainError;
use crate::api_keys::{ApiKeyService, AuthError, AuthFailure, Principal, Scope, parse_presented};
use crate::audit::event::{ActorKind, AuditEvent, Outcome};
use crate::audit::log::AuditLog;
use crate::identity::Client;
use crate::oauth::AccessTokens;
use crate::staff::StaffService;

/// Why the gate refused.
#[derive(Debug)]
pub enum GateError {
    /// No credential, or one that is not valid (401; the reason is in the audit log only).
    Unauthenticated,
    /// A valid caller (the second field) without the scope (403).
    MissingScope(Scope, Box<Principal>),
    /// A test-mode caller asking for a deployment-wide scope (403).
    LiveModeRequired(Scope),
    /// The caller's API key is suspended by intrusion detection until the given time (403).
    Suspended(strongroom_types::Timestamp),
    /// The refusal could not be recorded, or storage failed while checking.
    Failed(DomainError),
}

impl From<DomainError> for GateError {
    fn from(err: DomainError) -> Self {
        Self::Failed(err)
    }
}

/// The services that know callers, borrowed for one request.
#[derive(Debug, Clone, Copy)]
pub struct Gate<'a> {
    /// API keys.
    pub api_keys: &'a ApiKeyService,
    /// OAuth access tokens.
    pub access_tokens: &'a AccessTokens,
    /// Staff sessions.
    pub staff: &'a StaffService,
    /// Where refusals are recorded.
    pub audit: &'a AuditLog,
    /// Intrusion detection's decisions (suspended API keys).
    pub decisions: Option<&'a crate::detection::DecisionService>,
}

impl Gate<'_> {
    /// The caller presenting `bearer` (the `Authorization: Bearer` value, if any) and holding
    /// `scope` when one is required.
    pub async fn admit(
        &self,
        bearer: Option<&str>,
        scope: Option<Scope>,
        client: &Client,
    ) -> Result<Principal, GateError> {
        let Some(token) = bearer else {
            let event =
                AuditEvent::by(ActorKind::Anonymous, None, "auth.failed", Outcome::Denied("missing_credentials"));
            self.record(event, client).await?;
            return Err(GateError::Unauthenticated);
        };
        let verified = if StaffService::looks_like_session(token) {
            match self.staff.authenticate(token).await? {
                Some(principal) => Ok(principal),
                None => Err(AuthError::Refused(AuthFailure::Unknown, None)),
            }
        } else if AccessTokens::looks_like_token(token) {
            self.access_tokens.authenticate(token).await
        } else {
            self.api_keys.authenticate(token).await
        };
        let principal = match verified {
            Ok(principal) => principal,
            Err(AuthError::Refused(why, merchant)) => {
                let key_id = parse_presented(token).map(|(_, id)| id.to_string());
                let (action, reason) = match why {
                    AuthFailure::Malformed => ("auth.failed", "malformed_key"),
                    AuthFailure::Unknown => ("auth.failed", "unknown_key"),
                    AuthFailure::Revoked => ("api_key.used_after_revocation", "revoked_key"),
                    AuthFailure::Expired => ("api_key.used_after_expiry", "expired_key"),
                    AuthFailure::Decoy => ("api_key.decoy_used", "decoy_key"),
                };
                let mut event = AuditEvent::by(ActorKind::Anonymous, key_id.clone(), action, Outcome::Denied(reason));
                event.merchant = merchant.clone();
                self.record(event, client).await?;
                if let (AuthFailure::Unknown | AuthFailure::Malformed, Some(decisions), Some(ip)) =
                    (why, self.decisions, client.ip)
                    && !StaffService::looks_like_session(token)
                    && !AccessTokens::looks_like_token(token)
                {
                    // API key probing: distinct keys, each counted by a digest of the whole
                    // credential (never the credential), so a varied secret counts anew and the
                    // shop's server retrying its one wrong key counts once. Staff sessions and
                    // access tokens expire in normal use and are not counted here.
                    use sha2::Digest;
                    let digest = sha2::Sha256::new()
                        .chain_update(b"strongroom api key probe\0")
                        .chain_update(token.as_bytes())
                        .finalize();
                    let sighting = crate::detection::Sighting::new(
                        crate::detection::Point::ApiKeyProbing,
                        None,
                        crate::detection::points::client_group(ip),
                    )
                    .item(&digest[..16])
                    .respond(crate::detection::points::client_scope(ip))
                    .everywhere()
                    .from_ip(Some(ip));
                    decisions.sighted(sighting).await;
                }
                if let (AuthFailure::Decoy, Some(decisions), Some(ip)) = (why, self.decisions, client.ip) {
                    // A planted key: the client gets the unknown key's answer, and is blocked
                    // everywhere (the decision holds before its next request).
                    let mut sighting = crate::detection::Sighting::new(
                        crate::detection::Point::DecoyApiKey,
                        merchant.as_ref(),
                        crate::detection::points::client_group(ip),
                    )
                    .respond(crate::detection::points::client_scope(ip))
                    .everywhere()
                    .from_ip(Some(ip));
                    if let Some(key) = key_id {
                        sighting = sighting.subject(key);
                    }
                    decisions.sighted(sighting).await;
                }
                return Err(GateError::Unauthenticated);
            }
            Err(AuthError::Store(err)) => return Err(GateError::Failed(err.into())),
        };
        if let Some(decision) = self.decisions.and_then(|d| d.suspending(&principal)) {
            let event = principal
                .event("authz.denied", Outcome::Denied("api_key_suspended"))
                .on("security_decision", &decision.id);
            self.record(event, client).await?;
            return Err(GateError::Suspended(decision.until));
        }
        if let Some(required) = scope
            && !principal.mode().allows(required)
        {
            let event =
                principal.event("authz.denied", Outcome::Denied("live_mode_required")).on("scope", required.as_str());
            self.record(event, client).await?;
            return Err(GateError::LiveModeRequired(required));
        }
        if let Some(required) = scope
            && !principal.has(required)
        {
            let event =
                principal.event("authz.denied", Outcome::Denied("insufficient_scope")).on("scope", required.as_str());
            self.record(event, client).await?;
            return Err(GateError::MissingScope(required, Box::new(principal)));
        }
        Ok(principal)
    }

    async fn record(&self, event: AuditEvent, client: &Client) -> Result<(), DomainError> {
        self.audit.record(event.from_source(client.ip, client.request_id.clone())).await?;
        Ok(())
    }
}
