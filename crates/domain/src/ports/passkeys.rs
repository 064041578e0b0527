//! Passkeys' storage port: registered credentials and ceremonies in flight.
//! Must never: store a private key (there is none) or a ceremony past its expiry.

use async_trait::async_trait;
use strongroom_types::Timestamp;

use crate::StoreError;
use crate::merchants::MerchantId;

/// A registered passkey as stored: public data only (the credential id and public key, in the
/// serialized form the WebAuthn library reads back).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasskeyRecord {
    /// `pk_…`
    pub id: String,
    /// Its merchant.
    pub merchant_id: MerchantId,
    /// `customer` or `staff`.
    pub owner_kind: String,
    /// `cus_…` or `stf_…`
    pub owner_id: String,
    /// The credential id (unique across the deployment).
    pub credential_id: Vec<u8>,
    /// The serialized passkey.
    pub passkey: String,
    /// A name the owner gave it ("work laptop").
    pub label: String,
    /// When it was registered.
    pub created_at: Timestamp,
    /// When it last signed in.
    pub last_used_at: Option<Timestamp>,
}

/// A WebAuthn ceremony in flight: its server-side state, used once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CeremonyRecord {
    /// `wac_…`
    pub id: String,
    /// Its merchant.
    pub merchant_id: MerchantId,
    /// `customer` or `staff`.
    pub owner_kind: String,
    /// Whose passkey is being registered or asked for (`None`: a discoverable sign-in).
    pub owner_id: Option<String>,
    /// `register` or `sign_in`.
    pub purpose: String,
    /// The serialized ceremony state.
    pub state: String,
    /// When it began.
    pub created_at: Timestamp,
    /// When it stops.
    pub expires_at: Timestamp,
}

/// Passkeys and WebAuthn ceremonies.
#[async_trait]
pub trait PasskeyRepository: Send + Sync {
    /// Stores a passkey while its owner has fewer than `max` (counted after a lock on the
    /// owner's row, so parallel registrations cannot pass the cap); false when its credential id
    /// is registered already or the owner has `max`.
    async fn insert_passkey(&self, passkey: &PasskeyRecord, max: usize) -> Result<bool, StoreError>;

    /// An owner's passkeys, oldest first.
    async fn passkeys_of(&self, owner_kind: &str, owner_id: &str) -> Result<Vec<PasskeyRecord>, StoreError>;

    /// The passkey with this credential id.
    async fn passkey_by_credential(&self, credential_id: &[u8]) -> Result<Option<PasskeyRecord>, StoreError>;

    /// Records a passkey's use and stores its new state (counter, backup flags). With `expected`,
    /// a compare-and-set: only while the stored passkey is still exactly `expected` (the state
    /// the assertion was verified against), so an older counter never replaces a newer one and
    /// of two assertions verified against one state only one passes. False when nothing was
    /// written (the passkey changed meanwhile, or is gone).
    async fn passkey_used(
        &self,
        id: &str,
        expected: Option<&str>,
        passkey: Option<&str>,
        at: Timestamp,
    ) -> Result<bool, StoreError>;

    /// Deletes one of an owner's passkeys; false when it is not theirs.
    async fn delete_passkey(&self, owner_kind: &str, owner_id: &str, id: &str) -> Result<bool, StoreError>;

    /// Stores a ceremony.
    async fn insert_ceremony(&self, ceremony: &CeremonyRecord) -> Result<(), StoreError>;

    /// Takes a ceremony once: deletes and returns it if it is unexpired at `now`.
    async fn take_ceremony(&self, id: &str, now: Timestamp) -> Result<Option<CeremonyRecord>, StoreError>;
}
