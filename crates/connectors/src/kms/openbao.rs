//! The OpenBao / HashiCorp Vault transit engine as the root key: strongroom's data keys are
//! wrapped by `POST /v1/<mount>/encrypt/<key>` and unwrapped by `…/decrypt/<key>`, never leaving
//! the KMS as root key material.
//!
//! The transit key must be *derived* (`derived=true`): the wrap context (what the wrapped key is
//! for) is passed as the derivation `context`, so a wrapped key unwraps only for its own purpose.
//! (Transit cannot rewrap data encrypted with associated data, which is why derivation is used
//! instead.) Must never: log the token or a plaintext, or treat an authentication failure of a
//! ciphertext as "unavailable".

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::json;
use strongroom_crypto::{Key256, Kms, KmsError};
use strongroom_types::Secret;

/// A transit key on an OpenBao or Vault server.
pub struct OpenBaoTransit {
    client: reqwest::Client,
    address: String,
    token: Secret<String>,
    mount: String,
    key: String,
}

impl fmt::Debug for OpenBaoTransit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenBaoTransit")
            .field("address", &self.address)
            .field("mount", &self.mount)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl OpenBaoTransit {
    /// A provider for `key` on the transit engine mounted at `mount` of the server at `address`.
    pub fn new(
        address: &str,
        token: Secret<String>,
        mount: &str,
        key: &str,
        outbound: &crate::outbound::OutboundSettings,
    ) -> Result<Self, KmsError> {
        crate::outbound::check_url(address, outbound)
            .map_err(|e| KmsError::Unavailable(format!("kms.address: {e}")))?;
        let client = crate::outbound::client(outbound).map_err(|e| KmsError::Unavailable(e.to_string()))?;
        Ok(Self {
            client,
            address: address.trim_end_matches('/').to_owned(),
            token,
            mount: mount.trim_matches('/').to_owned(),
            key: key.to_owned(),
        })
    }

    /// The outbound rules for a KMS: it usually lives on the operator's own network (private and
    /// loopback addresses allowed), speaks HTTPS verified against the webpki roots plus `ca_file`
    /// (plain `http://` only on loopback), follows no redirect, and answers within 10 seconds.
    pub fn outbound_settings(ca_file: Option<std::path::PathBuf>) -> crate::outbound::OutboundSettings {
        crate::outbound::OutboundSettings {
            allow_private: true,
            allow_loopback: true,
            ca_file,
            connect_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(10),
        }
    }

    async fn post(
        &self,
        path: &str,
        body: serde_json::Value,
    ) -> Result<(reqwest::StatusCode, serde_json::Value), KmsError> {
        let response = self
            .client
            .post(format!("{}/v1/{}", self.address, path))
            .header("X-Vault-Token", self.token.expose())
            .json(&body)
            .send()
            .await
            .map_err(|e| KmsError::Unavailable(format!("{}: {}", self.address, e.without_url())))?;
        let status = response.status();
        let body = response.json().await.unwrap_or(serde_json::Value::Null);
        Ok((status, body))
    }

    fn failure(&self, action: &str, status: reqwest::StatusCode, body: &serde_json::Value) -> KmsError {
        let errors =
            body["errors"].as_array().map(|e| e.iter().filter_map(|m| m.as_str()).collect::<Vec<_>>().join("; "));
        KmsError::Unavailable(format!("transit {action} answered {status}: {}", errors.unwrap_or_default()))
    }

    /// Creates the transit key (derived AES-256-GCM) unless it exists. For development and tests;
    /// in production an operator creates it with the same parameters.
    pub async fn ensure_key(&self) -> Result<(), KmsError> {
        let (status, body) = self
            .post(&format!("{}/keys/{}", self.mount, self.key), json!({"type": "aes256-gcm96", "derived": true}))
            .await?;
        if status.is_success() { Ok(()) } else { Err(self.failure("key creation", status, &body)) }
    }
}

fn b64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

#[async_trait]
impl Kms for OpenBaoTransit {
    fn key_id(&self) -> String {
        format!("openbao:{}/{}", self.mount, self.key)
    }

    fn production_grade(&self) -> bool {
        true
    }

    async fn wrap(&self, context: &str, key: &Key256) -> Result<Vec<u8>, KmsError> {
        let mut plaintext = b64(key.expose());
        let request = json!({"plaintext": plaintext, "context": b64(context.as_bytes())});
        zeroize::Zeroize::zeroize(&mut plaintext);
        let (status, body) = self.post(&format!("{}/encrypt/{}", self.mount, self.key), request).await?;
        if !status.is_success() {
            return Err(self.failure("encrypt", status, &body));
        }
        body["data"]["ciphertext"]
            .as_str()
            .map(|c| c.as_bytes().to_vec())
            .ok_or_else(|| KmsError::Unavailable("transit encrypt answered without a ciphertext".into()))
    }

    async fn unwrap(&self, context: &str, wrapped: &[u8]) -> Result<Key256, KmsError> {
        let ciphertext = std::str::from_utf8(wrapped).map_err(|_| KmsError::Integrity)?;
        let request = json!({"ciphertext": ciphertext, "context": b64(context.as_bytes())});
        let (status, body) = self.post(&format!("{}/decrypt/{}", self.mount, self.key), request).await?;
        if status == reqwest::StatusCode::BAD_REQUEST {
            // Transit answers 400 for a ciphertext that fails authentication (wrong context,
            // tampering, or a version below min_decryption_version).
            return Err(KmsError::Integrity);
        }
        if !status.is_success() {
            return Err(self.failure("decrypt", status, &body));
        }
        let mut plaintext =
            STANDARD.decode(body["data"]["plaintext"].as_str().unwrap_or_default()).map_err(|_| KmsError::Integrity)?;
        let key: Option<[u8; 32]> = plaintext.as_slice().try_into().ok();
        zeroize::Zeroize::zeroize(&mut plaintext);
        key.map(Secret::new).ok_or(KmsError::Integrity)
    }

    /// Transit's own rewrap: the key never leaves OpenBao.
    async fn rewrap(&self, context: &str, wrapped: &[u8]) -> Result<Vec<u8>, KmsError> {
        let ciphertext = std::str::from_utf8(wrapped).map_err(|_| KmsError::Integrity)?;
        let request = json!({"ciphertext": ciphertext, "context": b64(context.as_bytes())});
        let (status, body) = self.post(&format!("{}/rewrap/{}", self.mount, self.key), request).await?;
        if status == reqwest::StatusCode::BAD_REQUEST {
            return Err(KmsError::Integrity);
        }
        if !status.is_success() {
            return Err(self.failure("rewrap", status, &body));
        }
        body["data"]["ciphertext"]
            .as_str()
            .map(|c| c.as_bytes().to_vec())
            .ok_or_else(|| KmsError::Unavailable("transit rewrap answered without a ciphertext".into()))
    }
}
