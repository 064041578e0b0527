//! Versioned fingerprint keys. A fingerprint is HMAC-SHA-256 under the active version; rotating
//! adds a version (stored wrapped in the keyring: `vault_fingerprint` is version 1,
//! `vault_fingerprint_v<N>` the later ones) and a background job recomputes every token's
//! fingerprint from its decrypted value. Until it finishes, search and dedupe look under every
//! version.
//! Must never: hash a value without a key, or drop an older version while tokens still use it.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use strongroom_crypto::{KeyedDigest, Kms};
use strongroom_types::{Clock, Entropy};

use crate::error::{DomainError, StoreError};
use crate::keyring::{VAULT_FINGERPRINT, load_existing, load_or_create};
use crate::ports::KeyringRepository;

/// The keyring name of fingerprint key `version`.
pub fn key_name(version: u32) -> String {
    if version == 1 { VAULT_FINGERPRINT.to_owned() } else { format!("{VAULT_FINGERPRINT}_v{version}") }
}

/// The fingerprint key versions this process holds.
pub struct FingerprintKeys {
    repo: Arc<dyn KeyringRepository>,
    kms: Arc<dyn Kms>,
    clock: Arc<dyn Clock>,
    entropy: Arc<dyn Entropy>,
    versions: RwLock<BTreeMap<u32, Arc<KeyedDigest>>>,
}

impl std::fmt::Debug for FingerprintKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FingerprintKeys").finish_non_exhaustive()
    }
}

impl FingerprintKeys {
    /// Loads version 1 (creating it on a new deployment) and every later version.
    pub async fn load(
        repo: Arc<dyn KeyringRepository>,
        kms: Arc<dyn Kms>,
        clock: Arc<dyn Clock>,
        entropy: Arc<dyn Entropy>,
    ) -> Result<Self, DomainError> {
        let first =
            load_or_create(VAULT_FINGERPRINT, repo.as_ref(), kms.as_ref(), clock.as_ref(), entropy.as_ref()).await?;
        let keys = Self {
            repo,
            kms,
            clock,
            entropy,
            versions: RwLock::new(BTreeMap::from([(1, Arc::new(KeyedDigest::new(first)))])),
        };
        keys.refresh().await?;
        Ok(keys)
    }

    /// Picks up versions made since (by another process): one keyring read when there are none.
    pub async fn refresh(&self) -> Result<(), DomainError> {
        loop {
            let next = self.active().0 + 1;
            match load_existing(&key_name(next), self.repo.as_ref(), self.kms.as_ref()).await? {
                Some(key) => {
                    if let Ok(mut versions) = self.versions.write() {
                        versions.insert(next, Arc::new(KeyedDigest::new(key)));
                    }
                }
                None => return Ok(()),
            }
        }
    }

    /// The active (newest) version and its key.
    pub fn active(&self) -> (u32, Arc<KeyedDigest>) {
        self.versions
            .read()
            .ok()
            .and_then(|v| v.iter().next_back().map(|(n, k)| (*n, k.clone())))
            .unwrap_or_else(|| (1, Arc::new(KeyedDigest::new(strongroom_types::Secret::new([0; 32])))))
    }

    /// Every version, newest first.
    pub fn all(&self) -> Vec<(u32, Arc<KeyedDigest>)> {
        self.versions.read().map(|v| v.iter().rev().map(|(n, k)| (*n, k.clone())).collect()).unwrap_or_default()
    }

    /// Makes a new version, active at once; returns it.
    pub async fn rotate(&self) -> Result<u32, DomainError> {
        self.refresh().await?;
        let next = self.active().0 + 1;
        let key = load_or_create(
            &key_name(next),
            self.repo.as_ref(),
            self.kms.as_ref(),
            self.clock.as_ref(),
            self.entropy.as_ref(),
        )
        .await?;
        match self.versions.write() {
            Ok(mut versions) => {
                versions.insert(next, Arc::new(KeyedDigest::new(key)));
                Ok(next)
            }
            Err(_) => Err(StoreError::Other("fingerprint key lock poisoned".into()).into()),
        }
    }
}
