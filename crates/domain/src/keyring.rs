//! The deployment keyring: named 256-bit keys, created on first use, stored wrapped by the KMS
//! root key, unwrapped once at start and held in memory as [`strongroom_crypto::Key256`].
//! Must never: store or log an unwrapped key.

use std::sync::Arc;

use strongroom_crypto::{Key256, Kms};
use strongroom_types::{Clock, Entropy, Secret};

use crate::DomainError;
use crate::ports::{KeyringRepository, WrappedKey};

/// The key that API key digests are computed under.
pub const API_KEY_DIGEST: &str = "api_key_digest";

/// The key vault fingerprints (keyed hashes of values) are computed under.
pub const VAULT_FINGERPRINT: &str = "vault_fingerprint";

/// The key identity's keyed hashes (emails, session tokens, proofs, recovery codes) are computed under.
pub const IDENTITY_DIGEST: &str = "identity_digest";

/// The seed of the Ed25519 key that signs audit checkpoints.
pub const AUDIT_SIGNING: &str = "audit_signing";

/// Loads the named key, creating and storing it (wrapped) when the deployment has none yet.
pub async fn load_or_create(
    name: &str,
    repo: &dyn KeyringRepository,
    kms: &dyn Kms,
    clock: &dyn Clock,
    entropy: &dyn Entropy,
) -> Result<Key256, DomainError> {
    let context = format!("keyring/{name}");
    let stored = match repo.get(name).await? {
        Some(stored) => stored,
        None => {
            let fresh: Key256 = Secret::new(strongroom_types::entropy::random_array(entropy));
            let wrapped = kms.wrap(&context, &fresh).await?;
            let candidate =
                WrappedKey { name: name.to_owned(), kms_key_id: kms.key_id(), wrapped, created_at: clock.now() };
            repo.insert_if_absent(&candidate).await?
        }
    };
    Ok(kms.unwrap(&context, &stored.wrapped).await?)
}

/// Loads the named key if the deployment has it; never creates one.
pub async fn load_existing(
    name: &str,
    repo: &dyn KeyringRepository,
    kms: &dyn Kms,
) -> Result<Option<Key256>, DomainError> {
    match repo.get(name).await? {
        Some(stored) => Ok(Some(kms.unwrap(&format!("keyring/{name}"), &stored.wrapped).await?)),
        None => Ok(None),
    }
}

/// The AES-256 key that seals outbox payloads (queued mail) and webhook signing secrets.
pub const OUTBOX_SEAL: &str = "outbox_seal";

/// Every keyring entry.
pub const ALL: &[&str] = &[API_KEY_DIGEST, AUDIT_SIGNING, VAULT_FINGERPRINT, IDENTITY_DIGEST, OUTBOX_SEAL];

/// Re-encrypts every keyring entry under the KMS root key's newest version (after the KMS rotated
/// it; the keys themselves do not change). Returns how many entries moved.
pub async fn rewrap_all(repo: &dyn KeyringRepository, kms: &dyn Kms) -> Result<usize, DomainError> {
    let mut moved = 0;
    let mut names: Vec<String> = ALL.iter().map(|n| (*n).to_owned()).collect();
    // Later fingerprint key versions, as many as exist.
    let mut version = 2;
    while repo.get(&crate::vault::fingerprints::key_name(version)).await?.is_some() {
        names.push(crate::vault::fingerprints::key_name(version));
        version += 1;
    }
    names.push(crate::oauth::key_name(1));
    let mut version = 2;
    while repo.get(&crate::oauth::key_name(version)).await?.is_some() {
        names.push(crate::oauth::key_name(version));
        version += 1;
    }
    for name in &names {
        if let Some(stored) = repo.get(name).await?
            && !is_retired(&stored)
        {
            let wrapped = kms.rewrap(&format!("keyring/{name}"), &stored.wrapped).await?;
            repo.replace_wrapped(name, &kms.key_id(), &wrapped).await?;
            moved += 1;
        }
    }
    Ok(moved)
}

/// The `kms_key_id` of a retired entry, whose key material is gone (its wrapped bytes are
/// emptied): the name stays, so versioned names keep counting up.
pub const RETIRED: &str = "retired";

/// Whether a keyring entry was retired.
pub fn is_retired(key: &WrappedKey) -> bool {
    key.kms_key_id == RETIRED
}

/// Keys the running process holds, unwrapped.
#[derive(Debug, Clone)]
pub struct Keyring {
    /// Digest key for API keys.
    pub api_key_digest: Arc<strongroom_crypto::KeyedDigest>,
    /// Signs audit checkpoints.
    pub audit_signing: Arc<strongroom_crypto::signing::SigningKey>,
    /// Digest key for identity's secrets and look-ups.
    pub identity_digest: Arc<strongroom_crypto::KeyedDigest>,
    /// Seals outbox payloads and webhook signing secrets.
    pub outbox_seal: Arc<strongroom_crypto::Key256>,
}

impl Keyring {
    /// Loads (or creates) every key the process needs.
    pub async fn load(
        repo: &dyn KeyringRepository,
        kms: &dyn Kms,
        clock: &dyn Clock,
        entropy: &dyn Entropy,
    ) -> Result<Self, DomainError> {
        let api_key_digest = load_or_create(API_KEY_DIGEST, repo, kms, clock, entropy).await?;
        let audit_seed = load_or_create(AUDIT_SIGNING, repo, kms, clock, entropy).await?;
        let identity_digest = load_or_create(IDENTITY_DIGEST, repo, kms, clock, entropy).await?;
        let outbox_seal = load_or_create(OUTBOX_SEAL, repo, kms, clock, entropy).await?;

        Ok(Self {
            api_key_digest: Arc::new(strongroom_crypto::KeyedDigest::new(api_key_digest)),
            audit_signing: Arc::new(strongroom_crypto::signing::SigningKey::from_seed(&audit_seed)),
            identity_digest: Arc::new(strongroom_crypto::KeyedDigest::new(identity_digest)),
            outbox_seal: Arc::new(outbox_seal),
        })
    }
}
