//! OAuth 2.0 client credentials (RFC 6749 §4.4) for services: an API key is the client (its id is
//! the `client_id`, the key itself the `client_secret`), and the token endpoint trades it for a
//! short-lived signed access token (JWT, EdDSA, RFC 9068) carrying a subset of the key's scopes,
//! an audience and the purpose `api`. A service can then hold a 5-minute token instead of the key.
//!
//! Signing keys are versioned in the keyring (`oauth_signing`, `oauth_signing_v2`, …): tokens are
//! signed with the newest and verified with any, so a rotation overlaps until old tokens expire.
//! Must never: issue a scope the key does not hold, accept a token after its key was revoked,
//! accept a token of another purpose, or log a token or a client secret.

use std::sync::Arc;
use std::time::Duration;

use data_encoding::BASE32_NOPAD;
use strongroom_crypto::jwt::{self, API_PURPOSE, AccessClaims, AccessTokenKey};
use strongroom_types::{Clock, Entropy, Secret};

use strongroom_crypto::Kms;

use crate::DomainError;
use crate::api_keys::{ApiKeyId, ApiKeyService, AuthError, AuthFailure, Principal, Scope};
use crate::ports::KeyringRepository;

/// Keyring name of signing key `version` (1: `oauth_signing`).
pub fn key_name(version: u32) -> String {
    if version <= 1 { "oauth_signing".to_owned() } else { format!("oauth_signing_v{version}") }
}

/// Settings of the token endpoint.
#[derive(Debug, Clone)]
pub struct OAuthSettings {
    /// The `iss` of tokens.
    pub issuer: String,
    /// The `aud` of tokens (and the only one accepted).
    pub audience: String,
    /// Token lifetime.
    pub token_ttl: Duration,
}

/// Why the token endpoint refused (RFC 6749 §5.2 error codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Unknown client, wrong secret, revoked or expired key.
    #[error("invalid_client")]
    InvalidClient,
    /// A scope the key does not hold, or an unknown one.
    #[error("invalid_scope")]
    InvalidScope,
    /// Anything but `client_credentials`.
    #[error("unsupported_grant_type")]
    UnsupportedGrantType,
    /// Storage failed.
    #[error("server_error")]
    Server,
}

impl TokenError {
    /// The RFC 6749 error code.
    pub const fn code(self) -> &'static str {
        match self {
            TokenError::InvalidClient => "invalid_client",
            TokenError::InvalidScope => "invalid_scope",
            TokenError::UnsupportedGrantType => "unsupported_grant_type",
            TokenError::Server => "server_error",
        }
    }
}

/// An issued token.
#[derive(Debug)]
pub struct IssuedToken {
    /// The JWT.
    pub access_token: Secret<String>,
    /// Seconds until it expires.
    pub expires_in: u64,
    /// Granted scopes, space-separated.
    pub scope: String,
    /// The client it was issued to.
    pub client: Principal,
}

/// One signing key version.
#[derive(Debug)]
struct SigningVersion {
    version: u32,
    created_at: strongroom_types::Timestamp,
    key: AccessTokenKey,
}

/// How long a new signing key is only published (in the JWK set, and accepted) before tokens are
/// signed with it: every node reloads keys every [`REFRESH`], so by then all of them accept it.
pub const PUBLISH_BEFORE_SIGNING: Duration = Duration::from_secs(150);

/// How often servers look for new signing key versions.
pub const REFRESH: Duration = Duration::from_secs(60);

/// Loads every signing key version (creating version 1 on a new deployment), oldest first.
async fn load_versions(
    repo: &dyn KeyringRepository,
    kms: &dyn Kms,
    clock: &dyn Clock,
    entropy: &dyn Entropy,
) -> Result<Vec<Arc<SigningVersion>>, DomainError> {
    let mut versions = Vec::new();
    if !repo.get(&key_name(1)).await?.is_some_and(|k| crate::keyring::is_retired(&k)) {
        let first = crate::keyring::load_or_create(&key_name(1), repo, kms, clock, entropy).await?;
        // Version 1 signs at once (there is nothing to overlap with): it counts as published forever.
        versions.push(Arc::new(SigningVersion {
            version: 1,
            created_at: strongroom_types::Timestamp::from_unix_millis(0),
            key: AccessTokenKey::from_seed(&first),
        }));
    }
    versions.extend(load_from(repo, kms, 2).await?);
    Ok(versions)
}

/// Versions from `first` on, as many as exist (each unwrapped by the KMS once).
async fn load_from(
    repo: &dyn KeyringRepository,
    kms: &dyn Kms,
    first: u32,
) -> Result<Vec<Arc<SigningVersion>>, DomainError> {
    let mut versions = Vec::new();
    let mut version = first;
    while let Some(stored) = repo.get(&key_name(version)).await? {
        if crate::keyring::is_retired(&stored) {
            version += 1;
            continue;
        }
        let seed = kms.unwrap(&format!("keyring/{}", key_name(version)), &stored.wrapped).await?;
        versions.push(Arc::new(SigningVersion {
            version,
            created_at: stored.created_at,
            key: AccessTokenKey::from_seed(&seed),
        }));
        version += 1;
    }
    Ok(versions)
}

/// Adds the next signing key version; answers it. Servers publish it within [`REFRESH`] and sign
/// with it after [`PUBLISH_BEFORE_SIGNING`]; tokens signed with older versions stay valid until
/// they expire.
pub async fn rotate(
    repo: &dyn KeyringRepository,
    kms: &dyn Kms,
    clock: &dyn Clock,
    entropy: &dyn Entropy,
) -> Result<u32, DomainError> {
    crate::keyring::load_or_create(&key_name(1), repo, kms, clock, entropy).await?;
    let mut next = 2;
    while repo.get(&key_name(next)).await?.is_some() {
        next += 1;
    }
    crate::keyring::load_or_create(&key_name(next), repo, kms, clock, entropy).await?;
    Ok(next)
}

/// Retires signing key version `version`: its key material is deleted and servers stop
/// publishing it and accepting its tokens (within [`REFRESH`]). Refused for the newest version,
/// and while tokens it signed may still be valid: until the next version has been signing for
/// `token_ttl` plus the clock leeway.
pub async fn retire(
    repo: &dyn KeyringRepository,
    clock: &dyn Clock,
    version: u32,
    token_ttl: Duration,
) -> Result<(), DomainError> {
    let stored = repo.get(&key_name(version)).await?.ok_or(DomainError::NotFound)?;
    if crate::keyring::is_retired(&stored) {
        return Err(DomainError::Conflict("already_retired", "this version is retired already"));
    }
    let mut next = version + 1;
    let successor = loop {
        match repo.get(&key_name(next)).await? {
            Some(k) if !crate::keyring::is_retired(&k) => break k,
            Some(_) => next += 1,
            None => {
                return Err(DomainError::Conflict(
                    "newest_version",
                    "the newest signing key cannot be retired: rotate first",
                ));
            }
        }
    };
    let signing_since = successor.created_at.saturating_add(PUBLISH_BEFORE_SIGNING);
    let safe_after = signing_since.saturating_add(token_ttl).saturating_add(Duration::from_secs(LEEWAY_SECS as u64));
    if clock.now() < safe_after {
        return Err(DomainError::Conflict(
            "tokens_may_be_live",
            "tokens this version signed may still be valid; retire it once the next version has signed for the token lifetime",
        ));
    }
    repo.replace_wrapped(&key_name(version), crate::keyring::RETIRED, &[]).await?;
    Ok(())
}

/// The token endpoint and access-token verification.
pub struct AccessTokens {
    /// Oldest first.
    versions: std::sync::RwLock<Arc<Vec<Arc<SigningVersion>>>>,
    repo: Arc<dyn KeyringRepository>,
    kms: Arc<dyn Kms>,
    api_keys: Arc<ApiKeyService>,
    clock: Arc<dyn Clock>,
    entropy: Arc<dyn Entropy>,
    settings: OAuthSettings,
}

impl std::fmt::Debug for AccessTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessTokens").field("settings", &self.settings).finish_non_exhaustive()
    }
}

/// Clock skew allowed when checking `exp` and `nbf`.
const LEEWAY_SECS: i64 = 30;

impl AccessTokens {
    /// Loads the signing keys (making the first on a new deployment).
    pub async fn open(
        repo: Arc<dyn KeyringRepository>,
        kms: Arc<dyn Kms>,
        api_keys: Arc<ApiKeyService>,
        clock: Arc<dyn Clock>,
        entropy: Arc<dyn Entropy>,
        settings: OAuthSettings,
    ) -> Result<Self, DomainError> {
        let versions = load_versions(repo.as_ref(), kms.as_ref(), clock.as_ref(), entropy.as_ref()).await?;
        Ok(Self { versions: std::sync::RwLock::new(Arc::new(versions)), repo, kms, api_keys, clock, entropy, settings })
    }

    /// Picks up signing key versions added since (by `strongroom keys rotate-oauth`): only the
    /// newer ones are read and unwrapped, so a refresh with nothing new is one keyring read.
    pub async fn refresh(&self) -> Result<usize, DomainError> {
        let known = self.snapshot();
        let next = known.last().map_or(1, |v| v.version + 1);
        let newer = load_from(self.repo.as_ref(), self.kms.as_ref(), next).await?;
        // Versions retired since (by `strongroom keys retire-oauth`) stop verifying here too.
        let mut retired = Vec::new();
        for v in known.iter() {
            if self.repo.get(&key_name(v.version)).await?.is_none_or(|k| crate::keyring::is_retired(&k)) {
                retired.push(v.version);
            }
        }
        if newer.is_empty() && retired.is_empty() {
            return Ok(known.len());
        }
        let mut versions: Vec<_> = known.iter().filter(|v| !retired.contains(&v.version)).cloned().collect();
        versions.extend(newer);
        let count = versions.len();
        if let Ok(mut current) = self.versions.write() {
            *current = Arc::new(versions);
        }
        Ok(count)
    }

    fn snapshot(&self) -> Arc<Vec<Arc<SigningVersion>>> {
        self.versions.read().map(|v| Arc::clone(&v)).unwrap_or_default()
    }

    /// The public keys, as a JWK set.
    pub fn jwks(&self) -> serde_json::Value {
        let versions = self.snapshot();
        serde_json::json!({ "keys": versions.iter().rev().map(|v| v.key.jwk()).collect::<Vec<_>>() })
    }

    /// The version tokens are signed with now: the newest published for long enough.
    pub fn signing_version(&self) -> Option<u32> {
        let now = self.clock.now();
        let delay = i64::try_from(PUBLISH_BEFORE_SIGNING.as_millis()).unwrap_or(i64::MAX);
        self.snapshot().iter().rev().find(|v| now.millis_since(v.created_at) >= delay).map(|v| v.version)
    }

    /// Issues a token like [`AccessTokens::issue`] and records the outcome in `audit` before the
    /// caller answers: `oauth.token_issued`, or `oauth.token_refused` with the reason (every
    /// refusal, including credentials that could not be read, which arrive as `None`). The outer
    /// error means the entry could not be made durable (503); the inner one is the refusal.
    pub async fn issue_recorded(
        &self,
        audit: &crate::audit::log::AuditLog,
        grant_type: &str,
        credentials: Option<(&str, &str)>,
        scope: Option<&str>,
        client: &crate::identity::Client,
    ) -> Result<Result<IssuedToken, TokenError>, crate::DomainError> {
        use crate::audit::event::{ActorKind, AuditEvent, Outcome};
        let outcome = match credentials {
            Some((id, secret)) => self.issue(grant_type, id, secret, scope).await,
            None => Err(TokenError::InvalidClient),
        };
        let event = match &outcome {
            Ok(issued) => {
                issued.client.event("oauth.token_issued", Outcome::SuccessBecause(issued.scope.replace(' ', ",")))
            }
            Err(error) => {
                let id =
                    credentials.and_then(|(id, _)| crate::api_keys::ApiKeyId::parse(id).ok()).map(|id| id.to_string());
                AuditEvent::by(ActorKind::Anonymous, id, "oauth.token_refused", Outcome::Denied(error.code()))
            }
        };
        audit.record(event.from_source(client.ip, client.request_id.clone())).await?;
        Ok(outcome)
    }

    /// Trades client credentials for an access token.
    pub async fn issue(
        &self,
        grant_type: &str,
        client_id: &str,
        client_secret: &str,
        scope: Option<&str>,
    ) -> Result<IssuedToken, TokenError> {
        if grant_type != "client_credentials" {
            return Err(TokenError::UnsupportedGrantType);
        }
        let principal = match self.api_keys.authenticate(client_secret).await {
            Ok(principal) => principal,
            Err(AuthError::Refused(..)) => return Err(TokenError::InvalidClient),
            Err(AuthError::Store(_)) => return Err(TokenError::Server),
        };
        if principal.key_id().is_none_or(|id| id.as_str() != client_id) {
            return Err(TokenError::InvalidClient);
        }
        let granted: Vec<Scope> = match scope.map(str::trim).filter(|s| !s.is_empty()) {
            None => principal.scopes().to_vec(),
            Some(requested) => {
                let mut granted = Vec::new();
                for name in requested.split_ascii_whitespace() {
                    match Scope::parse(name) {
                        Some(s) if principal.has(s) => granted.push(s),
                        _ => return Err(TokenError::InvalidScope),
                    }
                }
                granted.sort();
                granted.dedup();
                granted
            }
        };
        let scope = granted.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(" ");
        let now = self.clock.now().unix_millis() / 1000;
        let ttl = i64::try_from(self.settings.token_ttl.as_secs()).unwrap_or(300);
        let mut jti = [0u8; 16];
        self.entropy.fill(&mut jti);
        let claims = AccessClaims {
            iss: self.settings.issuer.clone(),
            sub: client_id.to_owned(),
            aud: self.settings.audience.clone(),
            exp: now + ttl,
            nbf: now,
            iat: now,
            jti: BASE32_NOPAD.encode(&jti).to_ascii_lowercase(),
            scope: scope.clone(),
            purpose: API_PURPOSE.to_owned(),
            client_id: client_id.to_owned(),
        };
        let versions = self.snapshot();
        let version = self.signing_version().ok_or(TokenError::Server)?;
        let key = versions.iter().find(|v| v.version == version).ok_or(TokenError::Server)?;
        let token = jwt::sign(&key.key, &claims).map_err(|_| TokenError::Server)?;
        Ok(IssuedToken {
            access_token: Secret::new(token),
            expires_in: u64::try_from(ttl).unwrap_or(300),
            scope,
            client: principal,
        })
    }

    /// Whether a bearer token looks like one of ours (three base64url parts).
    pub fn looks_like_token(token: &str) -> bool {
        token.len() < 4096
            && token.split('.').count() == 3
            && token.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    }

    /// Authenticates an access token: the principal of its key, narrowed to the token's scopes.
    pub async fn authenticate(&self, token: &str) -> Result<Principal, AuthError> {
        let now = self.clock.now().unix_millis() / 1000;
        let versions = self.snapshot();
        let keys: Vec<&AccessTokenKey> = versions.iter().map(|v| &v.key).collect();
        let claims = jwt::verify(&keys, token, &self.settings.issuer, &self.settings.audience, now, LEEWAY_SECS)
            .map_err(|_| AuthError::Refused(AuthFailure::Malformed, None))?;
        let id = ApiKeyId::parse(&claims.sub).map_err(|_| AuthError::Refused(AuthFailure::Malformed, None))?;
        let scopes: Vec<Scope> = claims.scope.split_ascii_whitespace().filter_map(Scope::parse).collect();
        self.api_keys.principal_for_token(&id, &scopes).await
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Mutex;

    use super::*;
    use crate::ports::WrappedKey;

    /// A keyring in memory.
    #[derive(Default)]
    struct MemoryKeyring(Mutex<HashMap<String, WrappedKey>>);

    #[async_trait::async_trait]
    impl KeyringRepository for MemoryKeyring {
        async fn get(&self, name: &str) -> Result<Option<WrappedKey>, crate::StoreError> {
            Ok(self.0.lock().unwrap_or_else(|e| e.into_inner()).get(name).cloned())
        }
        async fn insert_if_absent(&self, key: &WrappedKey) -> Result<WrappedKey, crate::StoreError> {
            let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
            Ok(map.entry(key.name.clone()).or_insert_with(|| key.clone()).clone())
        }
        async fn replace_wrapped(&self, name: &str, kms_key_id: &str, wrapped: &[u8]) -> Result<(), crate::StoreError> {
            if let Some(k) = self.0.lock().unwrap_or_else(|e| e.into_inner()).get_mut(name) {
                k.kms_key_id = kms_key_id.to_owned();
                k.wrapped = wrapped.to_vec();
            }
            Ok(())
        }
    }

    #[tokio::test]
    async fn retiring_waits_for_the_old_tokens_to_expire() {
        let repo = MemoryKeyring::default();
        let at = |secs: i64| strongroom_types::Timestamp::from_unix_millis(secs * 1000);
        for (version, created) in [(1, 0), (2, 1_000)] {
            let key = WrappedKey {
                name: key_name(version),
                kms_key_id: "k".into(),
                wrapped: vec![1],
                created_at: at(created),
            };
            assert!(repo.insert_if_absent(&key).await.is_ok());
        }
        let ttl = Duration::from_secs(300);
        // Version 2 signs from 1,150 s; version 1's last tokens expire by 1,150 + 300 + 30 s.
        let clock = strongroom_types::ManualClock::new(at(1_400));
        assert!(matches!(retire(&repo, &clock, 2, ttl).await, Err(DomainError::Conflict("newest_version", _))));
        assert!(matches!(retire(&repo, &clock, 1, ttl).await, Err(DomainError::Conflict("tokens_may_be_live", _))));
        clock.set(at(1_481));
        assert!(retire(&repo, &clock, 1, ttl).await.is_ok());
        let stored = repo.get(&key_name(1)).await.ok().flatten();
        assert!(stored.is_some_and(|k| crate::keyring::is_retired(&k) && k.wrapped.is_empty()), "the key is gone");
        assert!(matches!(retire(&repo, &clock, 1, ttl).await, Err(DomainError::Conflict("already_retired", _))));
        assert!(matches!(retire(&repo, &clock, 9, ttl).await, Err(DomainError::NotFound)));
    }
}
