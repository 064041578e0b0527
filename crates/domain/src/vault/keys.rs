//! The vault's key hierarchy: KMS root key → versioned key-encryption keys (KEKs) → data keys, one
//! per merchant and one per customer → sealed values.
//!
//! KEKs are stored wrapped by the KMS (context `vault/kek/<version>`) and held unwrapped in memory
//! for at most `kek_cache_ttl`, after which the KMS is asked again (so revoking the root key stops
//! the vault within that time). Data keys are stored wrapped by a KEK under associated data that
//! names the data key, its owner and the KEK version, and are cached unwrapped for at most
//! `data_key_cache_ttl`; a cached key is a [`Key256`], zeroized when its last holder drops it.
//!
//! A new owner's first token does not wait for its data key's own commit: [`VaultKeys::key_for_token`]
//! makes the key in memory (shared by this node's concurrent first tokens of that owner) and the
//! token writer inserts it in the same transaction as the token, only if the owner still has no
//! key and its KEK version is still active; a token whose new key lost is sealed again under the
//! stored one ([`VaultKeys::key_after_refusal`]). So a token is never stored under a key that
//! was not, and an owner never has two keys.
//!
//! Rotation makes a new active KEK version; [`VaultKeys::rewrap_batch`] moves data keys to it
//! without touching any sealed value (resumable: each step is a compare-and-set per key); a
//! version no data key uses can be retired, which deletes its wrapped material.
//! Must never: store or log an unwrapped key, or wrap a data key without binding it to its owner.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use strongroom_crypto::{Key256, Kms, envelope};
use strongroom_types::{Clock, Entropy, Secret, Timestamp, define_id};

use crate::cache::TtlCache;
use crate::error::{DomainError, StoreError};
use crate::merchants::MerchantId;
use crate::modes::Mode;
use crate::ports::{DataKeyRecord, KekRecord, KekState, RewrappedKey, VaultRepository};

define_id!(DataKeyId, DataKeyKind, "dk");

/// Cache lifetimes.
#[derive(Debug, Clone, Copy)]
pub struct KeySettings {
    /// How long an unwrapped KEK is trusted before the KMS is asked again.
    pub kek_cache_ttl: Duration,
    /// How long an unwrapped data key stays in memory.
    pub data_key_cache_ttl: Duration,
    /// Most data keys held unwrapped at once.
    pub data_key_cache_capacity: usize,
}

impl Default for KeySettings {
    fn default() -> Self {
        Self {
            kek_cache_ttl: Duration::from_secs(3600),
            data_key_cache_ttl: Duration::from_secs(300),
            data_key_cache_capacity: 100_000,
        }
    }
}

/// An unwrapped data key and its id.
#[derive(Debug, Clone)]
pub struct DataKey {
    /// `dk_…`
    pub id: String,
    /// The key.
    pub key: Arc<Key256>,
}

/// The data key a new token is sealed under.
#[derive(Debug, Clone)]
pub struct TokenKey {
    /// The key.
    pub key: DataKey,
    /// The key as stored, when it is new: not stored yet, it is to be inserted with the token (in
    /// the same transaction), which stands only if the key gets stored.
    pub new: Option<DataKeyRecord>,
}

/// A KEK version with how many data keys it wraps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KekStatus {
    /// The version.
    pub version: u32,
    /// Its state.
    pub state: KekState,
    /// Data keys under it.
    pub data_keys: u64,
    /// When it was made.
    pub created_at: Timestamp,
    /// When it was retired.
    pub retired_at: Option<Timestamp>,
}

struct KekCache {
    /// Unwrapped KEKs by version, with the wrapped bytes they came from.
    keys: BTreeMap<u32, (Vec<u8>, Arc<Key256>)>,
    active: u32,
    loaded_at: Timestamp,
}

/// The vault's keys.
pub struct VaultKeys {
    repo: Arc<dyn VaultRepository>,
    kms: Arc<dyn Kms>,
    clock: Arc<dyn Clock>,
    entropy: Arc<dyn Entropy>,
    settings: KeySettings,
    keks: RwLock<Option<KekCache>>,
    refresh: tokio::sync::Mutex<()>,
    by_id: TtlCache<String, Arc<Key256>>,
    by_owner: TtlCache<(MerchantId, Mode, String), String>,
    /// Data keys made for owners without one and not confirmed stored yet, shared by this node's
    /// concurrent first tokens of an owner (so they race with one key, not one each).
    provisional: TtlCache<(MerchantId, Mode, String), (DataKeyRecord, Arc<Key256>)>,
    /// Where rotations and retirements are announced (set once the outbox exists).
    outbox: std::sync::OnceLock<crate::outbox::Outbox>,
}

impl std::fmt::Debug for VaultKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VaultKeys").field("settings", &self.settings).finish_non_exhaustive()
    }
}

fn kek_context(version: u32) -> String {
    format!("vault/kek/{version}")
}

/// Associated data of a wrapped data key: the key, its owner and the KEK version.
/// The associated data a data key is wrapped under. A test-mode key also names its mode (live
/// keys keep the form they had before modes existed, so their wrapping still opens).
fn data_key_aad(id: &str, merchant: &MerchantId, mode: Mode, customer: &str, kek_version: u32) -> Vec<u8> {
    let space = match mode {
        Mode::Live => String::new(),
        Mode::Test => "|mode:test".to_owned(),
    };
    format!("strongroom/vault/data-key/v1|{id}|{}|{customer}|kek:{kek_version}{space}", merchant.as_str()).into_bytes()
}

impl VaultKeys {
    /// Opens the key hierarchy, creating KEK version 1 on a new deployment, and unwraps the
    /// versions in use (the KMS must answer).
    pub async fn open(
        repo: Arc<dyn VaultRepository>,
        kms: Arc<dyn Kms>,
        clock: Arc<dyn Clock>,
        entropy: Arc<dyn Entropy>,
        settings: KeySettings,
    ) -> Result<Self, DomainError> {
        let keys = Self {
            repo,
            kms,
            clock,
            entropy,
            settings,
            keks: RwLock::new(None),
            refresh: tokio::sync::Mutex::new(()),
            by_id: TtlCache::new(settings.data_key_cache_ttl, settings.data_key_cache_capacity),
            by_owner: TtlCache::new(settings.data_key_cache_ttl, settings.data_key_cache_capacity),
            provisional: TtlCache::new(settings.data_key_cache_ttl, settings.data_key_cache_capacity),
            outbox: std::sync::OnceLock::new(),
        };
        if keys.repo.keks().await?.is_empty() {
            match keys.insert_new_version(1).await {
                Ok(()) | Err(DomainError::Store(StoreError::Conflict(_))) => {}
                Err(err) => return Err(err),
            }
        }
        keys.reload(false).await?;
        Ok(keys)
    }

    async fn insert_new_version(&self, version: u32) -> Result<(), DomainError> {
        let fresh: Key256 = Secret::new(strongroom_types::entropy::random_array(self.entropy.as_ref()));
        let wrapped = self.kms.wrap(&kek_context(version), &fresh).await?;
        let record = KekRecord {
            version,
            kms_key_id: self.kms.key_id(),
            wrapped: Some(wrapped),
            state: KekState::Active,
            created_at: self.clock.now(),
            retired_at: None,
        };
        let events = self.events("vault.key_rotated", serde_json::json!({"version": version})).await?;
        self.repo.insert_active_kek(&record, &events).await?;
        Ok(())
    }

    /// Announces key operations to every merchant's webhook endpoints (from now on).
    pub fn set_outbox(&self, outbox: crate::outbox::Outbox) {
        let _ = self.outbox.set(outbox);
    }

    /// The messages of a deployment-wide key event, written with the change.
    async fn events(
        &self,
        event_type: &str,
        data: serde_json::Value,
    ) -> Result<Vec<crate::outbox::OutboxMessage>, DomainError> {
        match self.outbox.get() {
            Some(outbox) => outbox.event_messages(None, Mode::Live, event_type, data, false).await,
            None => Ok(Vec::new()),
        }
    }

    /// Reads the KEK versions and unwraps every one still holding material. With `reuse`, keys
    /// already unwrapped from the same bytes are kept (no KMS call, and the cache keeps its age);
    /// without, the KMS is asked for every one.
    async fn reload(&self, reuse: bool) -> Result<(), DomainError> {
        let _one_at_a_time = self.refresh.lock().await;
        let records = self.repo.keks().await?;
        let (previous, previous_loaded_at) = match self.keks.read() {
            Ok(slot) if reuse => match slot.as_ref() {
                Some(cache) => (cache.keys.clone(), Some(cache.loaded_at)),
                None => (BTreeMap::new(), None),
            },
            _ => (BTreeMap::new(), None),
        };
        let mut keys = BTreeMap::new();
        let mut active = 0;
        for record in records {
            if record.state == KekState::Active {
                active = record.version;
            }
            let Some(wrapped) = record.wrapped else { continue };
            let key = match previous.get(&record.version) {
                Some((bytes, key)) if *bytes == wrapped => key.clone(),
                _ => Arc::new(self.kms.unwrap(&kek_context(record.version), &wrapped).await?),
            };
            keys.insert(record.version, (wrapped, key));
        }
        if active == 0 {
            return Err(StoreError::Other("the vault has no active key-encryption key".into()).into());
        }
        let loaded_at = previous_loaded_at.unwrap_or_else(|| self.clock.now());
        if let Ok(mut slot) = self.keks.write() {
            *slot = Some(KekCache { keys, active, loaded_at });
        }
        Ok(())
    }

    /// The KEK of `version` (`None`: the active one), reloading when the cache is stale or does
    /// not know the version (another node rotated).
    async fn kek(&self, version: Option<u32>) -> Result<(u32, Arc<Key256>), DomainError> {
        let ttl = i64::try_from(self.settings.kek_cache_ttl.as_millis()).unwrap_or(i64::MAX);
        let stale = || {
            self.keks
                .read()
                .ok()
                .and_then(|k| k.as_ref().map(|c| self.clock.now().millis_since(c.loaded_at) >= ttl))
                .unwrap_or(true)
        };
        let lookup = || -> Option<(u32, Arc<Key256>)> {
            let slot = self.keks.read().ok()?;
            let cache = slot.as_ref()?;
            let version = version.unwrap_or(cache.active);
            cache.keys.get(&version).map(|(_, key)| (version, key.clone()))
        };
        if stale() {
            // The KMS is asked again: revoking the root key stops the vault within the TTL.
            self.reload(false).await?;
        } else if let Some(found) = lookup() {
            return Ok(found);
        } else {
            // A version this node has not seen (another process rotated).
            self.reload(true).await?;
        }
        lookup().ok_or_else(|| {
            StoreError::Other("a data key names a key-encryption key version that is gone".into()).into()
        })
    }

    /// The active KEK version as this node last read it.
    pub async fn active_version(&self) -> Result<u32, DomainError> {
        Ok(self.kek(None).await?.0)
    }

    /// The data key of a merchant's customer in one data space (`None`: the space's own), made
    /// on first use.
    pub async fn data_key_for(
        &self,
        merchant: &MerchantId,
        mode: Mode,
        customer: Option<&str>,
    ) -> Result<DataKey, DomainError> {
        let customer = customer.unwrap_or("");
        let now = self.clock.now();
        let owner = (merchant.clone(), mode, customer.to_owned());
        if let Some(id) = self.by_owner.get(&owner, now)
            && let Some(key) = self.by_id.get(&id, now)
        {
            return Ok(DataKey { id, key });
        }
        let record = match self.repo.data_key_for(merchant, mode, customer).await? {
            Some(record) => record,
            None => self.create_data_key(merchant, mode, customer, now).await?,
        };
        let key = self.unwrap_record(&record).await?;
        self.by_owner.put(owner, record.id.clone(), now);
        Ok(DataKey { id: record.id, key })
    }

    /// The data key a new token of a merchant's customer in one data space (`None`: the space's
    /// own) is sealed under: the stored one, or, for an owner without one, a new key to be stored
    /// with the token (the same one for this node's concurrent first tokens of the owner, until it
    /// is confirmed).
    pub async fn key_for_token(
        &self,
        merchant: &MerchantId,
        mode: Mode,
        customer: Option<&str>,
    ) -> Result<TokenKey, DomainError> {
        let customer = customer.unwrap_or("");
        let now = self.clock.now();
        let owner = (merchant.clone(), mode, customer.to_owned());
        if let Some(id) = self.by_owner.get(&owner, now)
            && let Some(key) = self.by_id.get(&id, now)
        {
            return Ok(TokenKey { key: DataKey { id, key }, new: None });
        }
        if let Some((record, key)) = self.provisional.get(&owner, now) {
            return Ok(TokenKey { key: DataKey { id: record.id.clone(), key }, new: Some(record) });
        }
        // Not asked of the database first: an owner this node has no key for is most often a new
        // customer, so the token goes with a new key, and the insert (which stores a new key only
        // for an owner without one) decides. An owner that had a key after all costs a second
        // group commit instead of a read ([`VaultKeys::key_after_refusal`]).
        let made = self.make_data_key(merchant, mode, customer, now).await?;
        let (record, key) = self.provisional.get_or_put(owner, made, now);
        Ok(TokenKey { key: DataKey { id: record.id.clone(), key }, new: Some(record) })
    }

    /// Records that a new key handed out by [`VaultKeys::key_for_token`] is stored: the owner's
    /// later tokens use it from the cache. `generation` is the owner cache's
    /// [`VaultKeys::owner_generation`] from before the key was handed out (an erasure since then
    /// keeps it out of the cache).
    pub fn confirm_stored(&self, record: &DataKeyRecord, key: &Arc<Key256>, generation: u64) {
        let now = self.clock.now();
        let owner = (record.merchant_id.clone(), record.mode, record.customer.clone());
        self.by_id.put(record.id.clone(), key.clone(), now);
        self.by_owner.put_unless_forgotten(owner.clone(), record.id.clone(), now, generation);
        if self.provisional.get(&owner, now).is_some_and(|(pending, _)| pending.id == record.id) {
            self.provisional.forget(&owner);
        }
    }

    /// How many owners the owner cache has forgotten: take it before [`VaultKeys::key_for_token`]
    /// and hand it to [`VaultKeys::confirm_stored`].
    pub fn owner_generation(&self) -> u64 {
        self.by_owner.generation()
    }

    /// The key to seal a token under again after its new key `refused` was not stored: the
    /// owner's stored key (another request's won), or, when the owner still has none (the KEK
    /// version stopped being active, or the winner was erased), a new key under the active version
    /// as the database has it now.
    pub async fn key_after_refusal(
        &self,
        merchant: &MerchantId,
        mode: Mode,
        customer: Option<&str>,
        refused: &str,
    ) -> Result<TokenKey, DomainError> {
        let customer = customer.unwrap_or("");
        let now = self.clock.now();
        let owner = (merchant.clone(), mode, customer.to_owned());
        if self.provisional.get(&owner, now).is_some_and(|(pending, _)| pending.id == refused) {
            self.provisional.forget(&owner);
        }
        // Another token of the same batch or group may have found the winner already.
        if let Some(id) = self.by_owner.get(&owner, now)
            && id != refused
            && let Some(key) = self.by_id.get(&id, now)
        {
            return Ok(TokenKey { key: DataKey { id, key }, new: None });
        }
        if let Some(record) = self.repo.data_key_for(merchant, mode, customer).await? {
            let key = self.unwrap_record(&record).await?;
            self.by_owner.put(owner, record.id.clone(), now);
            return Ok(TokenKey { key: DataKey { id: record.id, key }, new: None });
        }
        self.reload(true).await?;
        let made = self.make_data_key(merchant, mode, customer, now).await?;
        let (record, key) = self.provisional.get_or_put(owner, made, now);
        Ok(TokenKey { key: DataKey { id: record.id.clone(), key }, new: Some(record) })
    }

    /// A new data key for an owner, wrapped under the active KEK version as this node knows it
    /// (not stored: the insert checks the version is still the active one).
    async fn make_data_key(
        &self,
        merchant: &MerchantId,
        mode: Mode,
        customer: &str,
        now: Timestamp,
    ) -> Result<(DataKeyRecord, Arc<Key256>), DomainError> {
        let (version, kek) = self.kek(None).await?;
        // Time-ordered, as token ids are: a checkout meets a new customer on most requests, and a
        // random id put each new key's two index entries (by id, by KEK version and id) on a page
        // of their own in every group commit.
        let id = DataKeyId::generate_at(self.entropy.as_ref(), now.unix_millis()).as_str().to_owned();
        let fresh: Key256 = Secret::new(strongroom_types::entropy::random_array(self.entropy.as_ref()));
        let aad = data_key_aad(&id, merchant, mode, customer, version);
        let wrapped = envelope::seal(&kek, &aad, fresh.expose(), self.entropy.as_ref());
        let record = DataKeyRecord {
            id,
            merchant_id: merchant.clone(),
            mode,
            customer: customer.to_owned(),
            kek_version: version,
            wrapped,
            created_at: now,
        };
        Ok((record, Arc::new(fresh)))
    }

    /// Makes and stores an owner's data key under the active KEK version, in a commit of its own
    /// (for callers outside the token writer). The insert refuses any version but the active one,
    /// so a rotation racing with it cannot leave a data key under a version about to be retired;
    /// then the KEK versions are read again and it tries once more (twice at most).
    async fn create_data_key(
        &self,
        merchant: &MerchantId,
        mode: Mode,
        customer: &str,
        now: Timestamp,
    ) -> Result<DataKeyRecord, DomainError> {
        for attempt in 0..3 {
            if attempt > 0 {
                self.reload(true).await?;
            }
            let (candidate, _) = self.make_data_key(merchant, mode, customer, now).await?;
            if let Some(record) = self.repo.insert_data_key_if_absent(&candidate).await? {
                return Ok(record);
            }
        }
        Err(StoreError::Conflict("the active key-encryption key kept changing".into()).into())
    }

    /// A data key by id, for `merchant`; `None` when it no longer exists (crypto-shredded).
    pub async fn data_key(&self, id: &str, merchant: &MerchantId) -> Result<Option<Arc<Key256>>, DomainError> {
        let now = self.clock.now();
        if let Some(key) = self.by_id.get(&id.to_owned(), now) {
            return Ok(Some(key));
        }
        match self.repo.data_key(id).await? {
            Some(record) if &record.merchant_id == merchant => Ok(Some(self.unwrap_record(&record).await?)),
            Some(_) => Err(StoreError::Other("a token names another merchant's data key".into()).into()),
            None => Ok(None),
        }
    }

    async fn unwrap_record(&self, record: &DataKeyRecord) -> Result<Arc<Key256>, DomainError> {
        let (_, kek) = self.kek(Some(record.kek_version)).await?;
        let aad = data_key_aad(&record.id, &record.merchant_id, record.mode, &record.customer, record.kek_version);
        let mut bytes = envelope::open(&kek, &aad, &record.wrapped).map_err(|_| DomainError::Integrity)?;
        let array: Result<[u8; 32], _> = bytes.as_slice().try_into();
        zeroize::Zeroize::zeroize(&mut bytes);
        let key = Arc::new(Secret::new(array.map_err(|_| DomainError::Integrity)?));
        self.by_id.put(record.id.clone(), key.clone(), self.clock.now());
        Ok(key)
    }

    /// Forgets a customer's cached data key (after erasure), on this node at once.
    pub fn forget(&self, merchant: &MerchantId, mode: Mode, customer: &str, data_key_id: Option<&str>) {
        self.by_owner.forget(&(merchant.clone(), mode, customer.to_owned()));
        self.provisional.forget(&(merchant.clone(), mode, customer.to_owned()));
        if let Some(id) = data_key_id {
            self.by_id.forget(&id.to_owned());
        }
    }

    /// Makes a new active KEK version; returns it. Data keys move to it through
    /// [`VaultKeys::rewrap_batch`].
    pub async fn rotate(&self) -> Result<u32, DomainError> {
        let latest = self.repo.keks().await?.iter().map(|k| k.version).max().unwrap_or(0);
        self.insert_new_version(latest + 1).await?;
        self.reload(true).await?;
        Ok(latest + 1)
    }

    /// Rewraps up to `limit` data keys not under the active version, after id `after`; returns
    /// how many it moved and the last id it looked at (`None`: nothing left).
    pub async fn rewrap_batch(&self, after: &str, limit: u32) -> Result<(u64, Option<String>), DomainError> {
        // Always the freshest view of which version is active.
        self.reload(true).await?;
        let (active, active_kek) = self.kek(None).await?;
        let records = self.repo.data_keys_older_than(active, after, limit).await?;
        let Some(last) = records.last().map(|r| r.id.clone()) else {
            return Ok((0, None));
        };
        let mut moved = Vec::with_capacity(records.len());
        for record in &records {
            let (_, old_kek) = self.kek(Some(record.kek_version)).await?;
            let old_aad =
                data_key_aad(&record.id, &record.merchant_id, record.mode, &record.customer, record.kek_version);
            let plain = envelope::open(&old_kek, &old_aad, &record.wrapped).map_err(|_| DomainError::Integrity)?;
            let plain = Secret::new(plain);
            let new_aad = data_key_aad(&record.id, &record.merchant_id, record.mode, &record.customer, active);
            moved.push(RewrappedKey {
                id: record.id.clone(),
                from_version: record.kek_version,
                to_version: active,
                wrapped: envelope::seal(&active_kek, &new_aad, plain.expose(), self.entropy.as_ref()),
            });
        }
        let applied = self.repo.rewrap_data_keys(&moved).await?;
        Ok((applied, Some(last)))
    }

    /// Rewraps every data key onto the active version, calling `progress(done)` after each batch.
    pub async fn rewrap_all(&self, batch: u32, mut progress: impl FnMut(u64)) -> Result<u64, DomainError> {
        let mut after = String::new();
        let mut total = 0;
        while let (moved, Some(last)) = self.rewrap_batch(&after, batch).await? {
            total += moved;
            progress(total);
            after = last;
        }
        Ok(total)
    }

    /// Re-encrypts every KEK version's wrapped material under the KMS root key's newest version
    /// (after the KMS rotated it; with OpenBao, transit's rewrap, so no key leaves the KMS).
    /// Returns how many versions moved.
    pub async fn rewrap_root(&self) -> Result<usize, DomainError> {
        let mut moved = 0;
        for kek in self.repo.keks().await? {
            if let Some(wrapped) = &kek.wrapped {
                let rewrapped = self.kms.rewrap(&kek_context(kek.version), wrapped).await?;
                self.repo.replace_kek_wrapping(kek.version, &self.kms.key_id(), &rewrapped).await?;
                moved += 1;
            }
        }
        Ok(moved)
    }

    /// Each version's (number, creation, retirement), without counting data keys: cheap enough
    /// for every metrics scrape.
    pub async fn versions(&self) -> Result<Vec<(u32, Timestamp, Option<Timestamp>)>, DomainError> {
        Ok(self.repo.keks().await?.into_iter().map(|k| (k.version, k.created_at, k.retired_at)).collect())
    }

    /// Every KEK version with its number of data keys.
    pub async fn status(&self) -> Result<Vec<KekStatus>, DomainError> {
        let counts: BTreeMap<u32, u64> = self.repo.data_key_counts().await?.into_iter().collect();
        Ok(self
            .repo
            .keks()
            .await?
            .into_iter()
            .map(|k| KekStatus {
                version: k.version,
                state: k.state,
                data_keys: counts.get(&k.version).copied().unwrap_or(0),
                created_at: k.created_at,
                retired_at: k.retired_at,
            })
            .collect())
    }

    /// Retires a previous version no data key uses. False when it cannot be retired.
    pub async fn retire(&self, version: u32) -> Result<bool, DomainError> {
        let events = self.events("vault.key_retired", serde_json::json!({"version": version})).await?;
        let retired = self.repo.retire_kek(version, self.clock.now(), &events).await?;
        if retired {
            self.reload(true).await?;
        }
        Ok(retired)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_key_aad_names_everything() {
        let m = MerchantId::parse("mer_aaaaaaaaaaaaaaaaaaaaaaaaaa").unwrap();
        let a = data_key_aad("dk_1", &m, Mode::Live, "c1", 1);
        assert_ne!(a, data_key_aad("dk_1", &m, Mode::Live, "c2", 1));
        assert_ne!(a, data_key_aad("dk_1", &m, Mode::Live, "c1", 2));
        assert_ne!(a, data_key_aad("dk_2", &m, Mode::Live, "c1", 1));
        assert_ne!(a, data_key_aad("dk_1", &m, Mode::Test, "c1", 1));
        // Live keys wrapped before modes existed still open.
        assert_eq!(a, b"strongroom/vault/data-key/v1|dk_1|mer_aaaaaaaaaaaaaaaaaaaaaaaaaa|c1|kek:1".to_vec());
    }
}
