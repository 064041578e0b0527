//! `Idempotency-Key`: the first answer to a POST is kept for 24 hours per caller and key, so a
//! retry gets that answer again instead of a second effect.
//!
//! One conditional insert decides who runs a key: the first request claims it (`in_progress`),
//! a concurrent duplicate finds the claim (409 `idempotency_in_progress`), a retry after the
//! answer finds the stored answer (replayed), and the same key with another request body is a
//! mistake (422 `idempotency_key_reuse`), and a claim whose request was cut off by a crash is
//! never run again (409 `idempotency_outcome_unknown`: its effect may have happened, and the key,
//! the effect and the answer are separate commits). Answers are stored sealed. An answer that shows a secret
//! once (a new API key, a TOTP seed, recovery codes, a session token, a revealed value, a signing
//! secret) is not stored at all: its replay answers 409 `idempotency_replay_unavailable`.
//! Must never: run a key's request twice while its claim is live, replay an answer to another
//! caller, or store a once-shown secret.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sha2::{Digest, Sha256};
use strongroom_crypto::{Key256, KeyedDigest};
use strongroom_types::{Clock, Entropy, Secret, Timestamp};

use crate::{DomainError, StoreError};

/// How long an answer is kept.
pub const KEEP_FOR: Duration = Duration::from_secs(24 * 3600);
/// Longest accepted key.
pub const MAX_KEY_LEN: usize = 255;

/// A stored claim or answer.
#[derive(Clone, PartialEq, Eq)]
pub struct IdempotencyRecord {
    /// Keyed digest of the caller's credential (or of `anonymous`).
    pub scope: Vec<u8>,
    /// The key as sent.
    pub key: String,
    /// SHA-256 of the method, path and body.
    pub request_hash: Vec<u8>,
    /// `in_progress`, `done` or `unavailable` (answered, not replayable).
    pub state: String,
    /// The answer's status.
    pub status: Option<u16>,
    /// The answer's content type.
    pub content_type: Option<String>,
    /// The answer's body, sealed.
    pub body_sealed: Option<Vec<u8>>,
    /// Until when a claim is taken for a request still running; after it, a claim without an
    /// answer belongs to a request that was cut off.
    pub locked_until: Timestamp,
    /// When the record may be deleted.
    pub expires_at: Timestamp,
}

impl std::fmt::Debug for IdempotencyRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdempotencyRecord")
            .field("state", &self.state)
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

/// Storage of keys.
#[async_trait]
pub trait IdempotencyRepository: Send + Sync + std::fmt::Debug {
    /// Inserts a claim unless the (scope, key) exists; `true` when this call claimed. An expired
    /// record (older than a day) is taken over by the same statement. A claim whose request was
    /// cut off is not: its effect may have happened.
    async fn claim_key(&self, claim: &IdempotencyRecord, now: Timestamp) -> Result<bool, StoreError>;
    /// The record of (scope, key).
    async fn key_record(&self, scope: &[u8], key: &str) -> Result<Option<IdempotencyRecord>, StoreError>;
    /// Stores the answer of a claim (only while it is still `in_progress` with this hash).
    async fn finish_key(
        &self,
        scope: &[u8],
        key: &str,
        state: &str,
        status: u16,
        content_type: Option<&str>,
        body_sealed: Option<&[u8]>,
    ) -> Result<(), StoreError>;
    /// Deletes a claim whose request ended without an answer worth keeping (a 5xx, a refusal
    /// before anything happened), so the caller may retry with the same key.
    async fn release_key(&self, scope: &[u8], key: &str) -> Result<(), StoreError>;
    /// Deletes expired records, at most `limit`.
    async fn purge_keys(&self, now: Timestamp, limit: u32) -> Result<u64, StoreError>;
}

/// What to do with a request that carries a key.
#[derive(Debug)]
pub enum Begin {
    /// Run it, then [`Idempotency::finish`] or [`Idempotency::release`] with this claim.
    Proceed(Claim),
    /// Answer this stored answer again.
    Replay {
        /// Status.
        status: u16,
        /// Content type.
        content_type: Option<String>,
        /// Body.
        body: Vec<u8>,
    },
}

/// A claimed key.
#[derive(Debug, Clone)]
pub struct Claim {
    scope: Vec<u8>,
    key: String,
}

/// The `Idempotency-Key` service.
#[derive(Debug, Clone)]
pub struct Idempotency {
    repo: Arc<dyn IdempotencyRepository>,
    digest: Arc<KeyedDigest>,
    seal_key: Arc<Key256>,
    clock: Arc<dyn Clock>,
    entropy: Arc<dyn Entropy>,
    lock_for: Duration,
}

/// The problem codes of this module.
pub mod codes {
    /// The same key with a different request.
    pub const REUSE: &str = "idempotency_key_reuse";
    /// The first request with this key is still running.
    pub const IN_PROGRESS: &str = "idempotency_in_progress";
    /// The first answer showed a secret once and was not kept.
    pub const REPLAY_UNAVAILABLE: &str = "idempotency_replay_unavailable";
    /// The first request was cut off (strongroom stopped while it ran): it may or may not have
    /// taken effect, so it is not run again under this key.
    pub const OUTCOME_UNKNOWN: &str = "idempotency_outcome_unknown";
}

fn seal_context(scope: &[u8], key: &str) -> Vec<u8> {
    let mut context = b"strongroom/idempotency/v1|".to_vec();
    context.extend_from_slice(scope);
    context.push(b'|');
    context.extend_from_slice(key.as_bytes());
    context
}

/// Checks a key: 1 to 255 visible ASCII characters.
pub fn valid_key(key: &str) -> bool {
    !key.is_empty() && key.len() <= MAX_KEY_LEN && key.bytes().all(|b| b.is_ascii_graphic() || b == b' ')
}

/// The fingerprint of a request: method, path and body.
pub fn request_hash(method: &str, path: &str, body: &[u8]) -> Vec<u8> {
    let mut hasher = Sha256::new();
    hasher.update(method.as_bytes());
    hasher.update(b" ");
    hasher.update(path.as_bytes());
    hasher.update(b"\n");
    hasher.update(body);
    hasher.finalize().to_vec()
}

impl Idempotency {
    /// The service. `lock_for` is how long a claim holds: longer than any request may run.
    pub fn new(
        repo: Arc<dyn IdempotencyRepository>,
        digest: Arc<KeyedDigest>,
        seal_key: Arc<Key256>,
        clock: Arc<dyn Clock>,
        entropy: Arc<dyn Entropy>,
        lock_for: Duration,
    ) -> Self {
        Self { repo, digest, seal_key, clock, entropy, lock_for }
    }

    /// The scope of a caller: a keyed digest of the credential it presented (`None`: anonymous).
    pub fn scope_of(&self, credential: Option<&str>) -> Vec<u8> {
        let message = match credential {
            Some(credential) => format!("strongroom/idempotency-scope/v1|{credential}"),
            None => "strongroom/idempotency-scope/v1|anonymous".to_owned(),
        };
        self.digest.digest(message.as_bytes()).to_vec()
    }

    /// Claims `key` for a request, or says how to answer it.
    pub async fn begin(&self, scope: Vec<u8>, key: &str, hash: Vec<u8>) -> Result<Begin, DomainError> {
        let now = self.clock.now();
        let claim = IdempotencyRecord {
            scope: scope.clone(),
            key: key.to_owned(),
            request_hash: hash.clone(),
            state: "in_progress".into(),
            status: None,
            content_type: None,
            body_sealed: None,
            locked_until: now.saturating_add(self.lock_for),
            expires_at: now.saturating_add(KEEP_FOR),
        };
        for _ in 0..3 {
            if self.repo.claim_key(&claim, now).await? {
                return Ok(Begin::Proceed(Claim { scope, key: key.to_owned() }));
            }
            let Some(found) = self.repo.key_record(&scope, key).await? else {
                continue; // released or purged meanwhile: claim again
            };
            if !strongroom_crypto::constant_time_eq(&found.request_hash, &hash) {
                return Err(DomainError::Rejected {
                    code: codes::REUSE,
                    errors: vec![crate::error::FieldError::new(
                        "/Idempotency-Key",
                        "this key was used with a different request; use a new key for a new request",
                    )],
                });
            }
            return match (found.state.as_str(), found.status, found.body_sealed) {
                ("done", Some(status), Some(sealed)) => {
                    let body = strongroom_crypto::envelope::open(&self.seal_key, &seal_context(&scope, key), &sealed)
                        .map_err(|_| DomainError::Integrity)?;
                    Ok(Begin::Replay { status, content_type: found.content_type, body })
                }
                ("unavailable", _, _) => Err(DomainError::Conflict(
                    codes::REPLAY_UNAVAILABLE,
                    "the first request with this key succeeded and showed a secret once; it is not shown again",
                )),
                ("in_progress", _, _) if found.locked_until <= now => Err(DomainError::Conflict(
                    codes::OUTCOME_UNKNOWN,
                    "the first request with this key was cut off and may have taken effect; look the object up, or send a new key",
                )),
                _ => Err(DomainError::Conflict(
                    codes::IN_PROGRESS,
                    "a request with this key is still being processed; retry shortly",
                )),
            };
        }
        Err(DomainError::Conflict(
            codes::IN_PROGRESS,
            "a request with this key is still being processed; retry shortly",
        ))
    }

    /// Keeps the answer of a claimed request (sealed), or only its status when it showed a secret.
    pub async fn finish(
        &self,
        claim: &Claim,
        status: u16,
        content_type: Option<&str>,
        body: &[u8],
        shows_secret: bool,
    ) -> Result<(), DomainError> {
        if shows_secret {
            self.repo.finish_key(&claim.scope, &claim.key, "unavailable", status, content_type, None).await?;
            return Ok(());
        }
        let body = Secret::new(body.to_vec());
        let sealed = strongroom_crypto::envelope::seal(
            &self.seal_key,
            &seal_context(&claim.scope, &claim.key),
            body.expose(),
            self.entropy.as_ref(),
        );
        self.repo.finish_key(&claim.scope, &claim.key, "done", status, content_type, Some(&sealed)).await?;
        Ok(())
    }

    /// Lets the key be used again (the request ended without an answer worth keeping).
    pub async fn release(&self, claim: &Claim) -> Result<(), DomainError> {
        Ok(self.repo.release_key(&claim.scope, &claim.key).await?)
    }

    /// Deletes expired keys; returns how many.
    pub async fn purge(&self) -> Result<u64, DomainError> {
        Ok(self.repo.purge_keys(self.clock.now(), 10_000).await?)
    }
}
