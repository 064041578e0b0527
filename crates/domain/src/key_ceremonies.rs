//! Key ceremonies an operator runs (`strongroom keys …`): rotating and retiring key-encryption
//! keys, rewrapping data keys, rotating the fingerprint key, rotating and retiring the OAuth
//! signing key, rewrapping everything under a new KMS root key. Each makes its change through the
//! service that owns the key and records its audit entry here, naming the operator and, under
//! dual control, the approving key; the command line only parses, asks for approval and prints.
//!
//! Must never: make a change without recording it (an entry that cannot be made durable fails
//! the ceremony after the change, which the operator sees), or record a key's material.

use std::time::Duration;

use strongroom_crypto::Kms;
use strongroom_types::{Clock, Entropy};

use crate::DomainError;
use crate::audit::event::{ActorKind, AuditEvent, Outcome};
use crate::audit::log::AuditLog;
use crate::ports::KeyringRepository;
use crate::vault::fingerprints::FingerprintKeys;
use crate::vault::keys::VaultKeys;
use crate::vault::tokens::VaultService;

/// Who runs the ceremonies: the operator at the command line, approved by a second operator's
/// key under dual control.
#[derive(Debug, Clone, Copy)]
pub struct KeyCeremonies<'a> {
    /// Where every ceremony is recorded.
    pub audit: &'a AuditLog,
    /// The approving key (`key_…`), when the deployment requires one.
    pub approver: Option<&'a str>,
}

impl KeyCeremonies<'_> {
    fn actor(&self) -> String {
        self.approver.map_or_else(|| "cli".to_owned(), |key| format!("cli+approved_by:{key}"))
    }

    async fn record(&self, action: &'static str, kind: &'static str, id: String) -> Result<(), DomainError> {
        let event = AuditEvent::by(ActorKind::System, Some(self.actor()), action, Outcome::Success).on(kind, id);
        self.audit.record(event).await?;
        Ok(())
    }

    /// Makes a new key-encryption key version active; answers it.
    pub async fn rotate_kek(&self, keys: &VaultKeys) -> Result<u32, DomainError> {
        let version = keys.rotate().await?;
        self.record("vault.kek_rotated", "kek", version.to_string()).await?;
        Ok(version)
    }

    /// Rewraps every data key under the active version; answers how many moved.
    pub async fn rewrap(&self, keys: &VaultKeys, progress: impl FnMut(u64)) -> Result<u64, DomainError> {
        let moved = keys.rewrap_all(1000, progress).await?;
        let version = keys.active_version().await?;
        self.record("vault.data_keys_rewrapped", "kek", version.to_string()).await?;
        Ok(moved)
    }

    /// Retires a previous key-encryption key version no data key uses; false when it cannot be.
    pub async fn retire_kek(&self, keys: &VaultKeys, version: u32) -> Result<bool, DomainError> {
        if !keys.retire(version).await? {
            return Ok(false);
        }
        self.record("vault.kek_retired", "kek", version.to_string()).await?;
        Ok(true)
    }

    /// Makes a new fingerprint key version active; answers it.
    pub async fn rotate_fingerprint(&self, fingerprints: &FingerprintKeys) -> Result<u32, DomainError> {
        let version = fingerprints.rotate().await?;
        self.record("vault.fingerprint_key_rotated", "kek", version.to_string()).await?;
        Ok(version)
    }

    /// Recomputes every fingerprint under the active version; answers how many moved.
    pub async fn refingerprint(
        &self,
        vault: &VaultService,
        version: u32,
        progress: impl FnMut(u64),
    ) -> Result<u64, DomainError> {
        let moved = vault.refingerprint_all(progress).await?;
        self.record("vault.fingerprints_recomputed", "kek", version.to_string()).await?;
        Ok(moved)
    }

    /// Adds the next OAuth signing key version; answers it.
    pub async fn rotate_oauth(
        &self,
        repo: &dyn KeyringRepository,
        kms: &dyn Kms,
        clock: &dyn Clock,
        entropy: &dyn Entropy,
    ) -> Result<u32, DomainError> {
        let version = crate::oauth::rotate(repo, kms, clock, entropy).await?;
        self.record("oauth.signing_key_rotated", "oauth_signing_key", version.to_string()).await?;
        Ok(version)
    }

    /// Retires an OAuth signing key version.
    pub async fn retire_oauth(
        &self,
        repo: &dyn KeyringRepository,
        clock: &dyn Clock,
        version: u32,
        token_ttl: Duration,
    ) -> Result<(), DomainError> {
        crate::oauth::retire(repo, clock, version, token_ttl).await?;
        self.record("oauth.signing_key_retired", "oauth_signing_key", version.to_string()).await
    }

    /// Rewraps the keyring and every key-encryption key under the KMS's current root key;
    /// answers (keyring entries, key-encryption keys).
    pub async fn rewrap_root(
        &self,
        repo: &dyn KeyringRepository,
        kms: &dyn Kms,
        keys: &VaultKeys,
    ) -> Result<(usize, usize), DomainError> {
        let keyring = crate::keyring::rewrap_all(repo, kms).await?;
        let keks = keys.rewrap_root().await?;
        self.record("kms.root_rewrapped", "kms", kms.key_id().to_owned()).await?;
        Ok((keyring, keks))
    }
}
