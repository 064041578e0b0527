//! Signed access tokens for services (OAuth 2.0 client credentials): JWTs (RFC 7519, RFC 9068
//! `at+jwt`) signed with Ed25519 (`EdDSA`) through the `jsonwebtoken` crate.
//!
//! Owns: the key (from a keyring seed, with a `kid`), signing, and verification that accepts one
//! algorithm only (EdDSA), one token type (`at+jwt`), known key ids, and then checks issuer,
//! audience, purpose, `exp` and `nbf` against the caller's clock.
//! Must never: accept `alg: none`, an HMAC or any algorithm but EdDSA (so a public key can never
//! be used as an HMAC secret), a token whose purpose is not `api`, or take keys from the token.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::Key256;

/// The token type of an access token (RFC 9068).
pub const TOKEN_TYPE: &str = "at+jwt";

/// The only purpose an API access token may carry; tokens made for mail actions or chat
/// hand-offs carry others and are refused as API tokens.
pub const API_PURPOSE: &str = "api";

/// An Ed25519 signing key for access tokens.
pub struct AccessTokenKey {
    kid: String,
    public: [u8; 32],
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl std::fmt::Debug for AccessTokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessTokenKey").field("kid", &self.kid).finish_non_exhaustive()
    }
}

/// PKCS#8 v1 DER of an Ed25519 private key is this fixed prefix and the 32-byte seed (RFC 8410).
const PKCS8_ED25519_PREFIX: [u8; 16] =
    [0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20];

impl AccessTokenKey {
    /// The key of a 32-byte seed.
    pub fn from_seed(seed: &Key256) -> Self {
        let signing = ed25519_dalek::SigningKey::from_bytes(seed.expose());
        let public = signing.verifying_key().to_bytes();
        let mut der = zeroize::Zeroizing::new(Vec::with_capacity(48));
        der.extend_from_slice(&PKCS8_ED25519_PREFIX);
        der.extend_from_slice(seed.expose());
        let digest = Sha256::digest(public);
        let kid = URL_SAFE_NO_PAD.encode(&digest[..12]);
        Self { kid, public, encoding: EncodingKey::from_ed_der(&der), decoding: DecodingKey::from_ed_der(&public) }
    }

    /// The key id (`kid`): base64url of the first 12 bytes of SHA-256 of the public key.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public key as a JWK (RFC 8037), for `/.well-known/jwks.json`.
    pub fn jwk(&self) -> serde_json::Value {
        serde_json::json!({
            "kty": "OKP",
            "crv": "Ed25519",
            "x": URL_SAFE_NO_PAD.encode(self.public),
            "kid": self.kid,
            "alg": "EdDSA",
            "use": "sig",
        })
    }
}

/// The claims of an access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    /// Issuer.
    pub iss: String,
    /// The client (API key id) it was issued to.
    pub sub: String,
    /// Audience.
    pub aud: String,
    /// Expiry, Unix seconds.
    pub exp: i64,
    /// Not before, Unix seconds.
    pub nbf: i64,
    /// Issued at, Unix seconds.
    pub iat: i64,
    /// Unique id.
    pub jti: String,
    /// Granted scopes, space-separated.
    pub scope: String,
    /// What the token is for: [`API_PURPOSE`].
    pub purpose: String,
    /// The client id again (RFC 9068 `client_id`).
    pub client_id: String,
}

/// Why a token was refused (the caller answers one 401 for all).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    /// Not a well-formed JWT of our kind (algorithm, type, key id).
    #[error("malformed or foreign token")]
    Malformed,
    /// The signature does not verify.
    #[error("bad signature")]
    Signature,
    /// Wrong issuer, audience or purpose.
    #[error("token not for us")]
    NotForUs,
    /// Outside its validity window.
    #[error("expired or not yet valid")]
    Expired,
    /// Signing failed.
    #[error("signing failed")]
    Signing,
}

/// Signs claims with the key.
pub fn sign(key: &AccessTokenKey, claims: &AccessClaims) -> Result<String, JwtError> {
    let mut header = Header::new(Algorithm::EdDSA);
    header.typ = Some(TOKEN_TYPE.to_owned());
    header.kid = Some(key.kid.clone());
    jsonwebtoken::encode(&header, claims, &key.encoding).map_err(|_| JwtError::Signing)
}

/// Verifies a token against the keys, issuer, audience and `now` (Unix seconds), allowing
/// `leeway` seconds of clock skew.
pub fn verify(
    keys: &[&AccessTokenKey],
    token: &str,
    issuer: &str,
    audience: &str,
    now: i64,
    leeway: i64,
) -> Result<AccessClaims, JwtError> {
    let header = jsonwebtoken::decode_header(token).map_err(|_| JwtError::Malformed)?;
    if header.alg != Algorithm::EdDSA || header.typ.as_deref() != Some(TOKEN_TYPE) {
        return Err(JwtError::Malformed);
    }
    let kid = header.kid.ok_or(JwtError::Malformed)?;
    let key = keys.iter().find(|k| k.kid == kid).ok_or(JwtError::Malformed)?;
    let mut validation = Validation::new(Algorithm::EdDSA);
    validation.algorithms = vec![Algorithm::EdDSA];
    // Time is checked below against the injected clock, not the system's.
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.required_spec_claims = ["exp", "nbf", "iss", "sub", "aud"].into_iter().map(str::to_owned).collect();
    let data = jsonwebtoken::decode::<AccessClaims>(token, &key.decoding, &validation).map_err(|e| match e.kind() {
        jsonwebtoken::errors::ErrorKind::InvalidSignature => JwtError::Signature,
        _ => JwtError::Malformed,
    })?;
    let claims = data.claims;
    if claims.iss != issuer || claims.aud != audience || claims.purpose != API_PURPOSE {
        return Err(JwtError::NotForUs);
    }
    if now >= claims.exp + leeway || now + leeway < claims.nbf {
        return Err(JwtError::Expired);
    }
    Ok(claims)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;
    use strongroom_types::Secret;

    fn key(byte: u8) -> AccessTokenKey {
        AccessTokenKey::from_seed(&Secret::new([byte; 32]))
    }

    fn claims(purpose: &str) -> AccessClaims {
        AccessClaims {
            iss: "https://sr.example".into(),
            sub: "key_a".into(),
            aud: "strongroom".into(),
            exp: 1_000_300,
            nbf: 1_000_000,
            iat: 1_000_000,
            jti: "j1".into(),
            scope: "vault:read".into(),
            purpose: purpose.into(),
            client_id: "key_a".into(),
        }
    }

    fn b64(json: &serde_json::Value) -> String {
        URL_SAFE_NO_PAD.encode(json.to_string())
    }

    #[test]
    fn round_trip_and_every_refusal() {
        let keys = [&key(1)];
        let token = sign(keys[0], &claims("api")).unwrap();
        let ok = |t: &str, now| verify(&keys, t, "https://sr.example", "strongroom", now, 30);
        assert_eq!(ok(&token, 1_000_100).unwrap(), claims("api"));
        assert_eq!(ok(&token, 1_000_400), Err(JwtError::Expired));
        assert_eq!(ok(&token, 999_000), Err(JwtError::Expired));
        assert_eq!(verify(&keys, &token, "https://other", "strongroom", 1_000_100, 30), Err(JwtError::NotForUs));
        assert_eq!(verify(&keys, &token, "https://sr.example", "other", 1_000_100, 30), Err(JwtError::NotForUs));
        assert_eq!(
            verify(&[&key(2)], &token, "https://sr.example", "strongroom", 1_000_100, 30),
            Err(JwtError::Malformed),
            "unknown kid"
        );
        // Another purpose (a mail-action token signed with the same key) is not an API token.
        let mail = sign(keys[0], &claims("email_action")).unwrap();
        assert_eq!(ok(&mail, 1_000_100), Err(JwtError::NotForUs));
        // A changed payload breaks the signature.
        let parts: Vec<&str> = token.split('.').collect();
        let mut forged = claims("api");
        forged.scope = "admin:keys".into();
        let tampered = format!("{}.{}.{}", parts[0], b64(&serde_json::to_value(&forged).unwrap()), parts[2]);
        assert_eq!(ok(&tampered, 1_000_100), Err(JwtError::Signature));
        // alg none, and HS256 keyed with the public key (key confusion).
        let payload = b64(&serde_json::to_value(claims("api")).unwrap());
        let none =
            format!("{}.{payload}.", b64(&serde_json::json!({"alg": "none", "typ": "at+jwt", "kid": keys[0].kid()})));
        assert_eq!(ok(&none, 1_000_100), Err(JwtError::Malformed));
        let hs_header = b64(&serde_json::json!({"alg": "HS256", "typ": "at+jwt", "kid": keys[0].kid()}));
        let hs = {
            use hmac::{Hmac, Mac};
            let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&keys[0].public).unwrap();
            mac.update(format!("{hs_header}.{payload}").as_bytes());
            format!("{hs_header}.{payload}.{}", URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()))
        };
        assert_eq!(ok(&hs, 1_000_100), Err(JwtError::Malformed));
        assert_eq!(ok("not.a.jwt", 1_000_100), Err(JwtError::Malformed));
    }

    #[test]
    fn jwk_names_the_key() {
        let jwk = key(1).jwk();
        assert_eq!(jwk["kty"], "OKP");
        assert_eq!(jwk["crv"], "Ed25519");
        assert_eq!(jwk["kid"], key(1).kid());
    }
}
