//! Passkeys of customers and staff: WebAuthn registration and sign-in ceremonies, their
//! server-side state (taken once), and the registered credentials.
//!
//! Owns: ceremony lifetimes, the opaque user handle (a keyed hash of the owner's id, never an
//! email), one registration per credential id across the deployment, and finding a
//! discoverable credential's owner.
//! Must never: let a ceremony be answered twice, let one owner's passkey sign in another owner
//! or merchant, or store anything but public keys and counters.

use std::sync::Arc;
use std::time::Duration;

use strongroom_crypto::KeyedDigest;
use strongroom_crypto::webauthn::{PasskeyError, RelyingParty};
use strongroom_types::{Clock, Entropy, Timestamp, define_id};

use crate::DomainError;
use crate::merchants::MerchantId;
use crate::ports::{CeremonyRecord, PasskeyRecord, PasskeyRepository};

define_id!(PasskeyId, PasskeyKind, "pk");
define_id!(CeremonyId, CeremonyKind, "wac");

/// How long a browser has to answer a ceremony.
pub const CEREMONY_TTL: Duration = Duration::from_secs(5 * 60);
/// Passkeys an owner may register.
pub const MAX_PER_OWNER: usize = 20;

/// Whose passkey.
#[derive(Debug, Clone, Copy)]
pub struct Owner<'a> {
    /// `customer` or `staff`.
    pub kind: &'static str,
    /// `cus_…` or `stf_…`
    pub id: &'a str,
    /// The merchant.
    pub merchant: &'a MerchantId,
}

/// A ceremony begun.
#[derive(Debug, Clone)]
pub struct Ceremony {
    /// `wac_…`: send it back with the browser's answer.
    pub id: String,
    /// For `navigator.credentials.create()` or `.get()`.
    pub options: serde_json::Value,
    /// When it stops.
    pub expires_at: Timestamp,
}

/// Passkey ceremonies and credentials.
pub struct Passkeys {
    rp: RelyingParty,
    repo: Arc<dyn PasskeyRepository>,
    digest: Arc<KeyedDigest>,
    clock: Arc<dyn Clock>,
    entropy: Arc<dyn Entropy>,
}

impl std::fmt::Debug for Passkeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Passkeys").field("rp", &self.rp).finish_non_exhaustive()
    }
}

fn refused(err: PasskeyError) -> DomainError {
    match err {
        PasskeyError::Stored(why) | PasskeyError::Settings(why) => DomainError::Store(crate::StoreError::Other(why)),
        PasskeyError::Refused(why) => {
            tracing::info!(reason = %why, "passkey answer refused");
            DomainError::InvalidFactor
        }
    }
}

impl Passkeys {
    /// The service over a relying party; `digest` derives user handles.
    pub fn new(
        rp: RelyingParty,
        repo: Arc<dyn PasskeyRepository>,
        digest: Arc<KeyedDigest>,
        clock: Arc<dyn Clock>,
        entropy: Arc<dyn Entropy>,
    ) -> Self {
        Self { rp, repo, digest, clock, entropy }
    }

    fn handle(&self, owner: &Owner<'_>) -> [u8; 16] {
        let digest = self.digest.digest(format!("webauthn_user\0{}\0{}", owner.kind, owner.id).as_bytes());
        let mut handle = [0u8; 16];
        handle.copy_from_slice(&digest[..16]);
        handle
    }

    async fn store_ceremony(
        &self,
        merchant: &MerchantId,
        kind: &'static str,
        owner: Option<&str>,
        purpose: &str,
        state: String,
        options: serde_json::Value,
    ) -> Result<Ceremony, DomainError> {
        let now = self.clock.now();
        let id = CeremonyId::generate(self.entropy.as_ref()).as_str().to_owned();
        let expires_at = now.saturating_add(CEREMONY_TTL);
        self.repo
            .insert_ceremony(&CeremonyRecord {
                id: id.clone(),
                merchant_id: merchant.clone(),
                owner_kind: kind.to_owned(),
                owner_id: owner.map(str::to_owned),
                purpose: purpose.to_owned(),
                state,
                created_at: now,
                expires_at,
            })
            .await?;
        Ok(Ceremony { id, options, expires_at })
    }

    /// Takes a ceremony of this merchant, kind and purpose (once).
    async fn take(
        &self,
        id: &str,
        merchant: &MerchantId,
        kind: &str,
        purpose: &str,
    ) -> Result<CeremonyRecord, DomainError> {
        let ceremony = self.repo.take_ceremony(id, self.clock.now()).await?.ok_or(DomainError::InvalidFactor)?;
        if &ceremony.merchant_id != merchant || ceremony.owner_kind != kind || ceremony.purpose != purpose {
            return Err(DomainError::InvalidFactor);
        }
        Ok(ceremony)
    }

    /// Begins registering a passkey. `name` is what the authenticator shows (the email).
    pub async fn begin_registration(&self, owner: Owner<'_>, name: &str) -> Result<Ceremony, DomainError> {
        let existing = self.repo.passkeys_of(owner.kind, owner.id).await?;
        if existing.len() >= MAX_PER_OWNER {
            return Err(DomainError::Conflict("too_many_passkeys", "remove a passkey before adding another"));
        }
        let ids: Vec<Vec<u8>> = existing.into_iter().map(|p| p.credential_id).collect();
        let begun = self.rp.begin_registration(self.handle(&owner), name, name, &ids).map_err(refused)?;
        self.store_ceremony(owner.merchant, owner.kind, Some(owner.id), "register", begun.state, begun.options).await
    }

    /// Finishes a registration: the passkey is stored under `label`.
    pub async fn finish_registration(
        &self,
        owner: Owner<'_>,
        ceremony: &str,
        answer: &serde_json::Value,
        label: &str,
    ) -> Result<PasskeyRecord, DomainError> {
        let label = label.trim();
        if label.chars().count() > 64 || label.chars().any(char::is_control) {
            return Err(DomainError::invalid("/label", "must be at most 64 characters, no control characters"));
        }
        crate::free_text::check("/label", label)?;
        let taken = self.take(ceremony, owner.merchant, owner.kind, "register").await?;
        if taken.owner_id.as_deref() != Some(owner.id) {
            return Err(DomainError::InvalidFactor);
        }
        let registered = self.rp.finish_registration(answer, &taken.state).map_err(refused)?;
        let record = PasskeyRecord {
            id: PasskeyId::generate(self.entropy.as_ref()).as_str().to_owned(),
            merchant_id: owner.merchant.clone(),
            owner_kind: owner.kind.to_owned(),
            owner_id: owner.id.to_owned(),
            credential_id: registered.credential_id,
            passkey: registered.passkey,
            label: if label.is_empty() { "passkey".to_owned() } else { label.to_owned() },
            created_at: self.clock.now(),
            last_used_at: None,
        };
        if !self.repo.insert_passkey(&record, MAX_PER_OWNER).await? {
            if self.repo.passkeys_of(owner.kind, owner.id).await?.len() >= MAX_PER_OWNER {
                return Err(DomainError::Conflict("too_many_passkeys", "remove a passkey before adding another"));
            }
            return Err(DomainError::Conflict("passkey_exists", "this passkey is registered already"));
        }
        Ok(record)
    }

    /// Begins a sign-in with one of the owner's passkeys; `None` when they have none.
    pub async fn begin_sign_in(&self, owner: Owner<'_>) -> Result<Option<Ceremony>, DomainError> {
        let passkeys: Vec<String> =
            self.repo.passkeys_of(owner.kind, owner.id).await?.into_iter().map(|p| p.passkey).collect();
        if passkeys.is_empty() {
            return Ok(None);
        }
        let begun = self.rp.begin_authentication(&passkeys).map_err(refused)?;
        let ceremony =
            self.store_ceremony(owner.merchant, owner.kind, Some(owner.id), "sign_in", begun.state, begun.options);
        Ok(Some(ceremony.await?))
    }

    /// Begins a sign-in by whichever passkey the person picks (nothing about any account is
    /// revealed).
    pub async fn begin_discoverable(&self, merchant: &MerchantId, kind: &'static str) -> Result<Ceremony, DomainError> {
        let begun = self.rp.begin_discoverable().map_err(refused)?;
        self.store_ceremony(merchant, kind, None, "sign_in", begun.state, begun.options).await
    }

    /// Finishes a sign-in; answers the owner id the passkey belongs to. A ceremony begun for one
    /// owner is answered only by that owner's passkeys; a discoverable one by any passkey of the
    /// merchant's owners of that kind.
    pub async fn finish_sign_in(
        &self,
        merchant: &MerchantId,
        kind: &str,
        ceremony: &str,
        answer: &serde_json::Value,
    ) -> Result<String, DomainError> {
        let taken = self.take(ceremony, merchant, kind, "sign_in").await?;
        let credential = RelyingParty::credential_of(answer).map_err(refused)?;
        let record = self.repo.passkey_by_credential(&credential).await?.ok_or(DomainError::InvalidFactor)?;
        if &record.merchant_id != merchant || record.owner_kind != kind {
            return Err(DomainError::InvalidFactor);
        }
        let verified = match &taken.owner_id {
            Some(owner) => {
                if owner != &record.owner_id {
                    return Err(DomainError::InvalidFactor);
                }
                let stored = record.passkey.clone();
                self.rp.finish_authentication(answer, &taken.state, |_| Some(stored.clone())).map_err(refused)?
            }
            None => self.rp.finish_discoverable(answer, &taken.state, &record.passkey).map_err(refused)?,
        };
        // With a counter, the new state is stored only over the exact state it was verified
        // against: of two assertions verified in parallel against one counter, one passes.
        let expected = (verified.counter > 0).then_some(record.passkey.as_str());
        if !self.repo.passkey_used(&record.id, expected, verified.updated_passkey.as_deref(), self.clock.now()).await? {
            tracing::info!("passkey answer refused: its counter was used meanwhile");
            return Err(DomainError::InvalidFactor);
        }
        Ok(record.owner_id)
    }

    /// An owner's passkeys.
    pub async fn list(&self, owner: Owner<'_>) -> Result<Vec<PasskeyRecord>, DomainError> {
        Ok(self.repo.passkeys_of(owner.kind, owner.id).await?)
    }

    /// Whether the owner has any passkey.
    pub async fn has_any(&self, owner: Owner<'_>) -> Result<bool, DomainError> {
        Ok(!self.repo.passkeys_of(owner.kind, owner.id).await?.is_empty())
    }

    /// Removes one of an owner's passkeys.
    pub async fn remove(&self, owner: Owner<'_>, id: &str) -> Result<(), DomainError> {
        if self.repo.delete_passkey(owner.kind, owner.id, id).await? { Ok(()) } else { Err(DomainError::NotFound) }
    }
}
