//! The OpenBao / HashiCorp Vault transit engine as the root key: strongroom's data keys are
//! wrapped by `POST /v1/<mount>/encrypt/<key>` and unwrapped by `…/decrypt/<key>`, never leaving
//! the KMS as root key material.
//!
//! The transit key must be *derived* (`derived=true`): the wrap context (what the wrapped key is
//! for) is passed as the derivation `context`, so a wrapped key unwraps only for its own purpose.
//! (Transit cannot rewrap data encrypted with associated data, which is why derivation is used
//! instead.) [`OpenBaoTransit::check_key`] refuses a key that is not derived, and runs at start.
//! The connection is HTTPS with a certificate verified against the webpki roots and `kms.ca_file`
//! unless the server is on loopback (the outbound policy of [`OpenBaoTransit::outbound_settings`]).
//!
//! The request and response bodies that carry a plaintext key are built and read in buffers wiped
//! when they are dropped (what the HTTP and TLS layers copy internally is beyond reach).
//! Must never: log the token or a plaintext, or treat an authentication failure of a ciphertext as
//! "unavailable".

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::json;
use strongroom_crypto::{Key256, Kms, KmsError};
use strongroom_types::Secret;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

/// The largest answer read from the KMS (transit answers are well under 1 KiB).
const MAX_ANSWER: usize = 64 * 1024;

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
        let request = serde_json::to_vec(&body).map_err(|e| KmsError::Unavailable(e.to_string()))?;
        let (status, answer) = self.send(reqwest::Method::POST, path, Some(Zeroizing::new(request))).await?;
        Ok((status, serde_json::from_slice(&answer).unwrap_or(serde_json::Value::Null)))
    }

    /// One call: the request body (if any) is handed over in a buffer wiped once sent, and the
    /// answer is read into a buffer wiped when dropped, each chunk wiped where it is not shared.
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Zeroizing<Vec<u8>>>,
    ) -> Result<(reqwest::StatusCode, Zeroizing<Vec<u8>>), KmsError> {
        // The outbound error keeps the cause (e.g. why a certificate was refused), never the URL.
        let unavailable = |e: reqwest::Error| {
            KmsError::Unavailable(format!("{}: {}", self.address, crate::outbound::OutboundError::from(e)))
        };
        let mut request = self
            .client
            .request(method, format!("{}/v1/{}", self.address, path))
            .header("X-Vault-Token", self.token.expose());
        if let Some(body) = body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(reqwest::Body::from(bytes::Bytes::from_owner(body)));
        }
        let mut response = request.send().await.map_err(unavailable)?;
        let status = response.status();
        let mut answer = Zeroizing::new(Vec::with_capacity(MAX_ANSWER));
        while let Some(chunk) = response.chunk().await.map_err(unavailable)? {
            if answer.len() + chunk.len() > MAX_ANSWER {
                return Err(KmsError::Unavailable(format!(
                    "{}: the answer is larger than {MAX_ANSWER} bytes",
                    self.address
                )));
            }
            answer.extend_from_slice(&chunk);
            if let Ok(mut own) = chunk.try_into_mut() {
                own.as_mut().zeroize();
            }
        }
        Ok((status, answer))
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

    /// Checks that the transit key exists and is derived (`derived=true`), which binds every
    /// wrapped key to its purpose. Run at start: a key that is not derived is refused.
    pub async fn check_key(&self) -> Result<(), KmsError> {
        let name = format!("{}/keys/{}", self.mount, self.key);
        let (status, answer) = self.send(reqwest::Method::GET, &name, None).await?;
        let body: serde_json::Value = serde_json::from_slice(&answer).unwrap_or(serde_json::Value::Null);
        match status {
            reqwest::StatusCode::OK => {}
            reqwest::StatusCode::NOT_FOUND => {
                return Err(KmsError::Misconfigured(format!(
                    "the transit key {name} does not exist: create it with type=aes256-gcm96 and derived=true"
                )));
            }
            reqwest::StatusCode::FORBIDDEN => {
                return Err(KmsError::Misconfigured(format!(
                    "the token may not read {name}: grant it `read` there, so strongroom can check the key is derived"
                )));
            }
            status => return Err(self.failure("key read", status, &body)),
        }
        match body["data"]["derived"].as_bool() {
            Some(true) => Ok(()),
            Some(false) => Err(KmsError::Misconfigured(format!(
                "the transit key {name} is not derived: strongroom binds each wrapped key to its purpose through the \
                 derivation context, which a key made without derived=true ignores; create a new key with \
                 type=aes256-gcm96 and derived=true"
            ))),
            None => {
                Err(KmsError::Misconfigured(format!("reading {name} answered without `derived`: is it a transit key?")))
            }
        }
    }
}

/// The plaintext of a decrypt answer, wiped when dropped.
#[derive(serde::Deserialize, Zeroize, ZeroizeOnDrop)]
struct DecryptAnswer {
    data: DecryptData,
}

#[derive(serde::Deserialize, Zeroize, ZeroizeOnDrop)]
struct DecryptData {
    plaintext: String,
}

/// The body of an encrypt request: the key as base64 and the context, built in a wiped buffer.
fn encrypt_request(key: &Key256, context: &str) -> Zeroizing<Vec<u8>> {
    let mut plaintext = Zeroizing::new(String::with_capacity(64));
    STANDARD.encode_string(key.expose(), &mut plaintext);
    let context = b64(context.as_bytes());
    // Base64 needs no JSON escaping; the capacity is exact, so the buffer never moves.
    let mut body = Zeroizing::new(Vec::with_capacity(plaintext.len() + context.len() + 32));
    body.extend_from_slice(b"{\"plaintext\":\"");
    body.extend_from_slice(plaintext.as_bytes());
    body.extend_from_slice(b"\",\"context\":\"");
    body.extend_from_slice(context.as_bytes());
    body.extend_from_slice(b"\"}");
    body
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
        let path = format!("{}/encrypt/{}", self.mount, self.key);
        let (status, answer) = self.send(reqwest::Method::POST, &path, Some(encrypt_request(key, context))).await?;
        let body: serde_json::Value = serde_json::from_slice(&answer).unwrap_or(serde_json::Value::Null);
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
        let request = serde_json::to_vec(&json!({"ciphertext": ciphertext, "context": b64(context.as_bytes())}))
            .map_err(|e| KmsError::Unavailable(e.to_string()))?;
        let path = format!("{}/decrypt/{}", self.mount, self.key);
        let (status, answer) = self.send(reqwest::Method::POST, &path, Some(Zeroizing::new(request))).await?;
        if status == reqwest::StatusCode::BAD_REQUEST {
            // Transit answers 400 for a ciphertext that fails authentication (wrong context,
            // tampering, or a version below min_decryption_version).
            return Err(KmsError::Integrity);
        }
        if !status.is_success() {
            let body: serde_json::Value = serde_json::from_slice(&answer).unwrap_or(serde_json::Value::Null);
            return Err(self.failure("decrypt", status, &body));
        }
        // Parsed straight into a type that wipes itself, never into a `serde_json::Value`.
        let decrypted: DecryptAnswer = serde_json::from_slice(&answer).map_err(|_| KmsError::Integrity)?;
        let mut plaintext = Zeroizing::new([0u8; 48]);
        let key = match STANDARD.decode_slice(decrypted.data.plaintext.as_bytes(), plaintext.as_mut_slice()) {
            Ok(32) => plaintext[..32].try_into().ok(),
            _ => None,
        };
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

#[cfg(test)]
mod tests {
    use super::*;

    fn provider(address: &str) -> Result<OpenBaoTransit, KmsError> {
        OpenBaoTransit::new(
            address,
            Secret::new("canary-token".into()),
            "transit",
            "k",
            &OpenBaoTransit::outbound_settings(None),
        )
    }

    #[test]
    fn plain_http_is_refused_unless_the_server_is_on_loopback() {
        for address in ["http://10.1.2.3:8200", "http://bao.internal:8200", "http://[fd00::5]:8200"] {
            match provider(address) {
                Err(KmsError::Unavailable(message)) => assert!(message.contains("https"), "{address}: {message}"),
                other => panic!("{address}: expected a refusal, got {other:?}"),
            }
        }
        for address in ["http://127.0.0.1:8200", "http://localhost:8200", "http://[::1]:8200"] {
            assert!(provider(address).is_ok(), "{address}");
        }
        for address in ["https://10.1.2.3:8200", "https://bao.internal:8200"] {
            assert!(provider(address).is_ok(), "{address}");
        }
    }

    #[test]
    fn the_encrypt_request_is_exact_json_in_a_buffer_that_never_moved() {
        let key: Key256 = Secret::new([7u8; 32]);
        let body = encrypt_request(&key, "keyring/x");
        let parsed: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        assert_eq!(parsed["plaintext"], STANDARD.encode([7u8; 32]));
        assert_eq!(parsed["context"], STANDARD.encode("keyring/x"));
        assert!(body.capacity() >= body.len() && body.capacity() - body.len() < 8, "sized up front");
    }
}
