//! Tokens: values sealed under their owner's data key and referred to by id everywhere else.
//!
//! A value is sealed with AES-256-GCM under associated data naming the merchant, the token, the
//! field, the data key and the kind, so a ciphertext moved to another row does not open. Its
//! fingerprint is HMAC-SHA-256 under the deployment's fingerprint key over the merchant, kind and
//! normalized value, so equal values can be found (search, dedupe) without decrypting anything.
//! Reveals are checked against the caller's scopes, rate-limited per key, and logged durably in
//! the audit log before the value is returned. Canary tokens answer like any other and raise a
//! security event whenever they are read.
//! Must never: return or log a value without a scope that allows it, answer differently for
//! another merchant's token than for a missing one, or keep a CVC anywhere but [`CvcStore`].

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use data_encoding::BASE32_NOPAD;
use serde_json::{Map, Value};
use strongroom_crypto::{KeyedDigest, envelope};
use strongroom_types::{Clock, Entropy, Secret, Timestamp, define_id};

use crate::alerts::{SecurityAlert, SecurityAlerts};
use crate::api_keys::{Principal, Scope};
use crate::audit::event::{AuditEvent, Outcome};
use crate::audit::log::AuditLog;
use crate::error::{DomainError, FieldError, StoreError};
use crate::merchants::MerchantId;
use crate::modes::Mode;
use crate::ports::{DataKeyRecord, TokenInsert, TokenRecord, VaultRepository};
use crate::vault::cvc::CvcStore;
use crate::vault::fingerprints::FingerprintKeys;
use crate::vault::keys::{TokenKey, VaultKeys};
use crate::vault::values::{self, Prepared, ValueError, ValueKind, masked_view, prepare};
use crate::vault::writer::TokenWriter;

define_id!(TokenId, TokenKind, "tok");

/// Most values in one batch.
pub const MAX_BATCH: usize = 1000;
/// Shortest and longest token lifetime, in seconds.
pub const TTL_RANGE: std::ops::RangeInclusive<u64> = 60..=315_360_000;

/// Settings of the vault service.
#[derive(Debug, Clone, Copy)]
pub struct VaultSettings {
    /// Reveals per API key (or staff member) per minute, refilled evenly, on all nodes together.
    pub reveals_per_minute: u32,
    /// How long a CVC is held (at most ten minutes).
    pub cvc_ttl: Duration,
    /// Token writer tasks (group commit): 1 for SQLite, a few for PostgreSQL.
    pub writers: usize,
}

impl Default for VaultSettings {
    fn default() -> Self {
        Self { reveals_per_minute: 3000, cvc_ttl: Duration::from_secs(600), writers: 1 }
    }
}

/// How a token id looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TokenFormat {
    /// `tok_` and 26 random characters.
    #[default]
    Random,
    /// Cards only: digits of the card's length keeping its first 6 and last 4, failing Luhn.
    PanPreserving,
}

/// A request to tokenize one value. Its `Debug` print never shows the value.
#[derive(Clone)]
pub struct TokenizeInput {
    /// What the value is.
    pub kind: ValueKind,
    /// The value.
    pub value: Value,
    /// The shop's customer reference.
    pub customer: Option<String>,
    /// Lifetime in seconds.
    pub ttl_seconds: Option<u64>,
    /// Return the existing token for an equal value of the same customer instead of a new one.
    pub dedupe: bool,
    /// Id format.
    pub format: TokenFormat,
    /// The shop's own non-sensitive metadata.
    pub metadata: Option<Map<String, Value>>,
    /// Make a honey token.
    pub canary: bool,
}

impl std::fmt::Debug for TokenizeInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenizeInput")
            .field("kind", &self.kind)
            .field("customer", &self.customer)
            .field("dedupe", &self.dedupe)
            .field("canary", &self.canary)
            .finish_non_exhaustive()
    }
}

/// Where a request came from, for the audit log.
#[derive(Debug, Clone, Default)]
pub struct Source {
    /// Client address.
    pub ip: Option<IpAddr>,
    /// Request id.
    pub request_id: Option<String>,
}

/// A token as the API shows it: never the value.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenView {
    /// The id.
    pub id: String,
    /// The kind.
    pub kind: ValueKind,
    /// The customer reference.
    pub customer: Option<String>,
    /// Whether it lives in the live data space (false: made with a test key).
    pub livemode: bool,
    /// Masked, non-sensitive metadata (card: brand, first 6, last 4, expiry, fingerprint).
    pub display: Map<String, Value>,
    /// The shop's metadata.
    pub metadata: Option<Value>,
    /// When it was made.
    pub created_at: Timestamp,
    /// When it expires.
    pub expires_at: Option<Timestamp>,
}

/// How to reveal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevealView {
    /// The whole value.
    Plain,
    /// The masked form.
    Masked,
}

/// A revealed value.
#[derive(Debug)]
pub struct Revealed {
    /// The token.
    pub token: TokenView,
    /// The value (plain or masked) as JSON text.
    pub value: Secret<Vec<u8>>,
    /// The audit entry that records the reveal.
    pub audit_index: u64,
}

/// The receipt of a customer's erasure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErasureReceipt {
    /// The customer reference.
    pub customer: String,
    /// When.
    pub erased_at: Timestamp,
    /// Tokens whose values are gone.
    pub tokens_erased: u64,
    /// The audit entry that records the erasure.
    pub audit_index: u64,
}

/// A card token as a payment method shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentCardInfo {
    /// The token's customer reference.
    pub customer: Option<String>,
    /// `visa`, `mastercard`, …
    pub brand: String,
    /// Last four digits.
    pub last4: String,
    /// The card's fingerprint id (`fp_…`, keyed per merchant), for the fraud checks' counts.
    pub fingerprint: Option<String>,
    /// The first six digits (the issuer's BIN), when the number is long enough to show them.
    pub first6: Option<String>,
    /// The stored token this was read from, which a gateway call of the same request opens
    /// instead of reading the token again.
    read: Option<ReadToken>,
}

/// A stored card token as one request read it (`Debug` shows its id only).
#[derive(Clone, PartialEq, Eq)]
struct ReadToken(std::sync::Arc<TokenRecord>);

impl std::fmt::Debug for ReadToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("ReadToken").field(&self.0.id).finish()
    }
}

/// One item of a batch: its token and whether it was made now, or why it was refused.
pub type BatchItem = Result<(TokenView, bool), ValueError>;

/// The vault service.
pub struct VaultService {
    repo: Arc<dyn VaultRepository>,
    writer: TokenWriter,
    keys: Arc<VaultKeys>,
    fingerprints: Arc<FingerprintKeys>,
    audit: AuditLog,
    clock: Arc<dyn Clock>,
    entropy: Arc<dyn Entropy>,
    cvcs: CvcStore,
    alerts: SecurityAlerts,
    settings: VaultSettings,
    /// Four-eyes approval of full card reveals by staff (set once at wiring; unset: refused).
    dual_control: std::sync::OnceLock<Arc<crate::staff::StaffService>>,
    /// Intrusion detection: lookups of tokens that do not exist are counted (token guessing),
    /// and reveals are taken from its shared rate limit (`reveals_per_minute`).
    detection: std::sync::OnceLock<crate::detection::DecisionService>,
}

impl std::fmt::Debug for VaultService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VaultService").field("settings", &self.settings).finish_non_exhaustive()
    }
}

/// Associated data of a sealed value.
fn value_aad(merchant: &MerchantId, token: &str, data_key: &str, kind: ValueKind) -> Vec<u8> {
    format!("strongroom/vault/token/v1|{}|{token}|value|{data_key}|{}", merchant.as_str(), kind.as_str()).into_bytes()
}

/// `fp_` and the first 128 bits of the fingerprint in base32.
fn fingerprint_id(fingerprint: &[u8]) -> String {
    let encoded = BASE32_NOPAD.encode(fingerprint.get(..16).unwrap_or(fingerprint)).to_ascii_lowercase();
    format!("fp_{encoded}")
}

/// Checks a customer reference: 1 to 64 of `A-Z a-z 0-9 _ . : -` (an id, never an email address).
pub fn valid_customer(customer: &str) -> bool {
    !customer.is_empty()
        && customer.len() <= 64
        && customer.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'))
}

/// Checks a reveal reason: a code of 1 to 64 of `a-z 0-9 _ . : -` (it goes into the audit log).
pub fn valid_reason(reason: &str) -> bool {
    !reason.is_empty()
        && reason.len() <= 64
        && reason
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.' | b':' | b'-'))
}

fn check_metadata(metadata: &Map<String, Value>, pointer: &str) -> Result<(), ValueError> {
    let invalid =
        |at: String, detail: &str| ValueError { code: "validation_failed", field: FieldError::new(at, detail) };
    if metadata.len() > 20 {
        return Err(invalid(pointer.to_owned(), "at most 20 keys"));
    }
    for (key, value) in metadata {
        let key_ok = !key.is_empty() && key.len() <= 40 && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !key_ok {
            return Err(invalid(pointer.to_owned(), "keys are 1 to 40 of a-z, A-Z, 0-9 and _"));
        }
        match value {
            Value::String(s) if s.chars().count() <= 500 => {}
            _ => return Err(invalid(format!("{pointer}/{key}"), "must be a string of at most 500 characters")),
        }
    }
    if let Some(field) = crate::free_text::find_in_object(pointer, metadata) {
        return Err(ValueError { code: crate::free_text::CODE, field });
    }
    Ok(())
}

/// A format-preserving id shows the card's first 6 and last 4 digits and hides the rest: refused
/// when the hidden digits have fewer than [`crate::vault::card::MIN_HIDDEN_SPACE`] possible values (a number
/// under 16 digits), as the id would show more than the card's mask and could be guessed.
fn check_format(input: &TokenizeInput, prepared: Prepared, base: &str) -> Result<Prepared, ValueError> {
    match (&input.format, &prepared.pan) {
        (TokenFormat::PanPreserving, Some(pan)) if !pan.allows_format_preserving() => Err(ValueError {
            code: "pan_preserving_too_short",
            field: FieldError::new(
                format!("{base}/format"),
                "pan_preserving needs a card number of at least 16 digits (a shorter one leaves fewer than \
                 1,000,000 possible ids and would show more than its mask); use the random format",
            ),
        }),
        _ => Ok(prepared),
    }
}

impl VaultService {
    /// The service.
    #[allow(clippy::too_many_arguments, reason = "wiring of distinct collaborators")]
    pub fn new(
        repo: Arc<dyn VaultRepository>,
        keys: Arc<VaultKeys>,
        fingerprints: Arc<FingerprintKeys>,
        audit: AuditLog,
        clock: Arc<dyn Clock>,
        entropy: Arc<dyn Entropy>,
        settings: VaultSettings,
    ) -> Self {
        let cvcs = CvcStore::new(settings.cvc_ttl, entropy.as_ref());
        Self {
            writer: TokenWriter::start(repo.clone(), settings.writers),
            repo,
            keys,
            fingerprints,
            audit,
            clock,
            entropy,
            cvcs,
            alerts: SecurityAlerts::log_only(),
            settings,
            dual_control: std::sync::OnceLock::new(),
            detection: std::sync::OnceLock::new(),
        }
    }

    /// Sends security alerts (canary use, integrity failures) to `alerts` as well as to the log
    /// and the audit log.
    pub fn with_alerts(mut self, alerts: SecurityAlerts) -> Self {
        self.alerts = alerts;
        self
    }

    async fn alert(
        &self,
        kind: &'static str,
        principal: &Principal,
        source: &Source,
        token: &str,
        detail: &'static str,
    ) -> Result<(), DomainError> {
        self.alerts
            .raise(SecurityAlert {
                kind,
                merchant: Some(principal.merchant_id().clone()),
                mode: principal.mode(),
                object: Some(token.to_owned()),
                actor: Some(principal.actor_id().to_owned()),
                detail,
                request_id: source.request_id.clone(),
                at: self.clock.now(),
            })
            .await
    }

    /// The key hierarchy.
    pub fn keys(&self) -> &Arc<VaultKeys> {
        &self.keys
    }

    /// The fingerprint key versions.
    pub fn fingerprints(&self) -> &Arc<FingerprintKeys> {
        &self.fingerprints
    }

    fn fingerprint(key: &KeyedDigest, merchant: &MerchantId, kind: ValueKind, normalized: &Secret<String>) -> Vec<u8> {
        let message = Secret::new(format!(
            "strongroom/vault/fingerprint/v1|{}|{}|{}",
            merchant.as_str(),
            kind.as_str(),
            normalized.expose()
        ));
        key.digest(message.expose().as_bytes()).to_vec()
    }

    fn dedupe_key(key: &KeyedDigest, customer: Option<&str>, fingerprint: &[u8]) -> Vec<u8> {
        let mut message = format!("strongroom/vault/dedupe/v1|{}|", customer.unwrap_or("")).into_bytes();
        message.extend_from_slice(fingerprint);
        key.digest(&message).to_vec()
    }

    /// A live deduplicated token of an equal value under an older fingerprint key version (while
    /// a rotation's recomputation is under way).
    async fn dedupe_under_older_versions(
        &self,
        merchant: &MerchantId,
        mode: Mode,
        input: &TokenizeInput,
        prepared: &Prepared,
    ) -> Result<Option<TokenRecord>, DomainError> {
        let now = self.clock.now();
        for (_, key) in self.fingerprints.all().into_iter().skip(1) {
            let fingerprint = Self::fingerprint(&key, merchant, prepared.kind, &prepared.normalized);
            let dedupe = Self::dedupe_key(&key, input.customer.as_deref(), &fingerprint);
            if let Some(found) = self.repo.token_by_dedupe_key(merchant, mode, prepared.kind, &dedupe).await?
                && found.erased_at.is_none()
                && found.expires_at.is_none_or(|at| now.millis_since(at) < 0)
            {
                return Ok(Some(found));
            }
        }
        Ok(None)
    }

    fn view(&self, record: &TokenRecord) -> TokenView {
        let mut display: Map<String, Value> = serde_json::from_str(&record.display).unwrap_or_default();
        if let Some(fingerprint) = &record.fingerprint {
            display.insert("fingerprint".into(), fingerprint_id(fingerprint).into());
        }
        if record.kind == ValueKind::Card && record.erased_at.is_none() {
            display.insert("cvc_held".into(), self.cvcs.held(&record.id, self.clock.now()).into());
        }
        TokenView {
            id: record.id.clone(),
            kind: record.kind,
            customer: record.customer.clone(),
            livemode: record.mode.is_live(),
            display,
            metadata: record.metadata.as_deref().and_then(|m| serde_json::from_str(m).ok()),
            created_at: record.created_at,
            expires_at: record.expires_at,
        }
    }

    /// Checks the parts of an input other than the value.
    fn check_input(&self, input: &TokenizeInput, base: &str) -> Result<(), ValueError> {
        let invalid = |at: &str, detail: &str| ValueError {
            code: "validation_failed",
            field: FieldError::new(format!("{base}/{at}"), detail),
        };
        if let Some(customer) = &input.customer
            && !valid_customer(customer)
        {
            return Err(invalid("customer", "must be 1 to 64 of A-Z, a-z, 0-9, _ . : -"));
        }
        if let Some(customer) = &input.customer
            && crate::free_text::holds_card_number(customer)
        {
            let field = crate::free_text::field_error(format!("{base}/customer"));
            return Err(ValueError { code: crate::free_text::CODE, field });
        }
        if let Some(ttl) = input.ttl_seconds
            && !TTL_RANGE.contains(&ttl)
        {
            return Err(invalid("ttl", "must be 60 to 315360000 seconds"));
        }
        if input.format == TokenFormat::PanPreserving && input.kind != ValueKind::Card {
            return Err(invalid("format", "pan_preserving applies to cards only"));
        }
        if input.canary && input.dedupe {
            return Err(invalid("dedupe", "canary tokens are never deduplicated"));
        }
        if let Some(metadata) = &input.metadata {
            check_metadata(metadata, &format!("{base}/metadata"))?;
        }
        Ok(())
    }

    async fn seal(
        &self,
        merchant: &MerchantId,
        mode: Mode,
        input: &TokenizeInput,
        prepared: &Prepared,
        now: Timestamp,
    ) -> Result<(TokenRecord, TokenKey), DomainError> {
        let token_key = self.keys.key_for_token(merchant, mode, input.customer.as_deref()).await?;
        let data_key = &token_key.key;
        let id = match (&input.format, &prepared.pan) {
            (TokenFormat::PanPreserving, Some(pan)) => pan.format_preserving_token(self.entropy.as_ref()),
            _ => TokenId::generate_at(self.entropy.as_ref(), now.unix_millis()).as_str().to_owned(),
        };
        let aad = value_aad(merchant, &id, &data_key.id, prepared.kind);
        let ciphertext = envelope::seal(&data_key.key, &aad, prepared.plaintext.expose(), self.entropy.as_ref());
        let (fingerprint_version, fingerprint_key) = self.fingerprints.active();
        let fingerprint = Self::fingerprint(&fingerprint_key, merchant, prepared.kind, &prepared.normalized);
        let ttl_ms = input.ttl_seconds.map(|s| i64::try_from(s).unwrap_or(i64::MAX / 2_000) * 1000);
        let record = TokenRecord {
            id,
            merchant_id: merchant.clone(),
            mode,
            customer: input.customer.clone(),
            kind: prepared.kind,
            data_key_id: data_key.id.clone(),
            ciphertext: Some(ciphertext),
            dedupe_key: input
                .dedupe
                .then(|| Self::dedupe_key(&fingerprint_key, input.customer.as_deref(), &fingerprint)),
            fingerprint_version,
            display: Value::Object(prepared.display.clone()).to_string(),
            metadata: input.metadata.as_ref().map(|m| Value::Object(m.clone()).to_string()),
            canary: input.canary,
            created_at: now,
            expires_at: ttl_ms.map(|ms| Timestamp::from_unix_millis(now.unix_millis().saturating_add(ms))),
            erased_at: None,
            fingerprint: Some(fingerprint),
        };
        Ok((record, token_key))
    }

    /// Tokenizes one value. Returns the token and whether it was made now (false: the existing
    /// deduplicated token).
    pub async fn tokenize(
        &self,
        principal: &Principal,
        input: TokenizeInput,
    ) -> Result<(TokenView, bool), DomainError> {
        let mut results = self.tokenize_many(principal, vec![(String::new(), input)]).await?;
        match results.pop() {
            Some(Ok(done)) => Ok(done),
            Some(Err(err)) => Err(DomainError::Rejected { code: err.code, errors: vec![err.field] }),
            None => Err(StoreError::Other("tokenize produced no result".into()).into()),
        }
    }

    /// Tokenizes up to [`MAX_BATCH`] values in one transaction, with one result per item. Each
    /// input comes with the JSON pointer of its item (`/items/3`), which its errors name.
    pub async fn tokenize_batch(
        &self,
        principal: &Principal,
        inputs: Vec<(String, TokenizeInput)>,
    ) -> Result<Vec<BatchItem>, DomainError> {
        if inputs.len() > MAX_BATCH {
            return Err(DomainError::TooLarge("a batch holds at most 1000 items"));
        }
        self.tokenize_many(principal, inputs).await
    }

    /// Creating a token is not an audit event (reveals, deletions and erasures are: they are
    /// where data leaves or disappears); the access log and metrics count creations.
    async fn tokenize_many(
        &self,
        principal: &Principal,
        inputs: Vec<(String, TokenizeInput)>,
    ) -> Result<Vec<BatchItem>, DomainError> {
        let merchant = principal.merchant_id();
        let mode = principal.mode();
        let now = self.clock.now();
        // Before any key is handed out: an erasure from now on keeps new keys out of the cache.
        let generation = self.keys.owner_generation();
        let mut results: Vec<Option<BatchItem>> = Vec::with_capacity(inputs.len());
        let mut pending: Vec<Pending> = Vec::new();
        for (index, (base, input)) in inputs.iter().enumerate() {
            let checked = self
                .check_input(input, base)
                .and_then(|()| prepare(input.kind, &input.value, now, &format!("{base}/value")))
                .and_then(|prepared| check_format(input, prepared, base));
            match checked {
                Err(err) => results.push(Some(Err(err))),
                Ok(prepared) => {
                    if input.dedupe
                        && let Some(existing) =
                            self.dedupe_under_older_versions(merchant, mode, input, &prepared).await?
                    {
                        results.push(Some(Ok((self.view(&existing), false))));
                        continue;
                    }
                    let (record, key) = self.seal(merchant, mode, input, &prepared, now).await?;
                    results.push(None);
                    pending.push(Pending {
                        index,
                        record,
                        key,
                        plaintext: prepared.plaintext,
                        cvc: prepared.cvc,
                        pan: prepared.pan,
                    });
                }
            }
        }
        // Format-preserving ids can collide, and a new customer's data key can lose to another
        // request's: such items are sealed again (under a new id, or under the key that won) and
        // go again (a few rounds).
        for _round in 0..5 {
            if pending.is_empty() {
                break;
            }
            let records: Vec<TokenRecord> = pending.iter().map(|p| p.record.clone()).collect();
            let mut new_keys: Vec<DataKeyRecord> = Vec::new();
            let mut seen = std::collections::HashSet::new();
            for new in pending.iter().filter_map(|p| p.key.new.as_ref()) {
                if seen.insert(new.id.as_str()) {
                    new_keys.push(new.clone());
                }
            }
            let outcomes = self.writer.insert(records, new_keys, now).await?;
            let mut retry = Vec::new();
            for (mut item, outcome) in pending.into_iter().zip(outcomes) {
                // Whatever became of the token, its new key is stored unless it was refused.
                if !matches!(outcome, TokenInsert::KeyNotStored)
                    && let Some(new) = item.key.new.take()
                {
                    self.keys.confirm_stored(&new, &item.key.key.key, generation);
                }
                match outcome {
                    TokenInsert::Created => {
                        if let Some(cvc) = &item.cvc {
                            self.cvcs.put(&item.record.id, cvc, now, self.entropy.as_ref());
                        }
                        if let Some(slot) = results.get_mut(item.index) {
                            *slot = Some(Ok((self.view(&item.record), true)));
                        }
                    }
                    TokenInsert::Existing(existing) => {
                        if let Some(slot) = results.get_mut(item.index) {
                            *slot = Some(Ok((self.view(&existing), false)));
                        }
                    }
                    TokenInsert::IdTaken => {
                        item.record.id = match &item.pan {
                            Some(pan) => pan.format_preserving_token(self.entropy.as_ref()),
                            None => TokenId::generate_at(self.entropy.as_ref(), now.unix_millis()).as_str().to_owned(),
                        };
                        // The sealed value is bound to its id: seal it again under the new one.
                        self.reseal(merchant, &mut item);
                        retry.push(item);
                    }
                    TokenInsert::KeyNotStored => {
                        // Never stored under a key that was not: seal it under the owner's key.
                        let refused = item.record.data_key_id.clone();
                        item.key = self
                            .keys
                            .key_after_refusal(merchant, item.record.mode, item.record.customer.as_deref(), &refused)
                            .await?;
                        item.record.data_key_id = item.key.key.id.clone();
                        self.reseal(merchant, &mut item);
                        retry.push(item);
                    }
                }
            }
            pending = retry;
        }
        if !pending.is_empty() {
            return Err(
                StoreError::Conflict("could not store the tokens: ids or data keys kept colliding".into()).into()
            );
        }
        Ok(results.into_iter().map(|r| r.unwrap_or_else(|| Err(internal_item()))).collect())
    }

    /// Seals a waiting item's value again, under its (new) id and data key.
    fn reseal(&self, merchant: &MerchantId, item: &mut Pending) {
        let aad = value_aad(merchant, &item.record.id, &item.record.data_key_id, item.record.kind);
        item.record.ciphertext =
            Some(envelope::seal(&item.key.key.key, &aad, item.plaintext.expose(), self.entropy.as_ref()));
    }

    fn event(&self, principal: &Principal, source: &Source, action: &'static str, outcome: Outcome) -> AuditEvent {
        principal.event(action, outcome).from_source(source.ip, source.request_id.clone())
    }

    /// An unexpired token of the caller's data space (its merchant and mode): missing, expired,
    /// foreign and other-mode tokens are one 404; erased ones are 410.
    async fn own_token(&self, principal: &Principal, id: &str) -> Result<TokenRecord, DomainError> {
        let record = self.repo.token(id).await?.ok_or(DomainError::NotFound)?;
        if &record.merchant_id != principal.merchant_id() || record.mode != principal.mode() {
            return Err(DomainError::NotFound);
        }
        if record.expires_at.is_some_and(|at| self.clock.now().millis_since(at) >= 0) {
            return Err(DomainError::NotFound);
        }
        if record.erased_at.is_some() {
            return Err(DomainError::Gone);
        }
        Ok(record)
    }

    async fn canary_tripped(
        &self,
        principal: &Principal,
        source: &Source,
        record: &TokenRecord,
        how: &'static str,
    ) -> Result<(), DomainError> {
        tracing::warn!(
            target: "strongroom::security",
            token = %record.id,
            actor = principal.actor_id(),
            how,
            "canary token used"
        );
        self.alert("canary_token_used", principal, source, &record.id, how).await?;
        let event = self
            .event(principal, source, "security.canary_token_used", Outcome::Failed(how))
            .on("token", record.id.as_str());
        self.audit.record(event).await?;
        // Only an intruder reads a canary: the key that did is suspended on every node.
        let sighting = crate::detection::Sighting::new(
            crate::detection::Point::CanaryToken,
            Some(principal.merchant_id()),
            principal.actor_id(),
        )
        .from_ip(source.ip)
        .subject(record.id.as_str())
        .subject(principal.actor_id());
        self.sight(principal, sighting).await;
        Ok(())
    }

    /// Reports a sighting to intrusion detection; a detection suspends `principal`'s API key
    /// (a staff member is alerted on, not suspended).
    async fn sight(&self, principal: &Principal, mut sighting: crate::detection::Sighting<'_>) {
        let Some(detection) = self.detection.get() else { return };
        if let Some(key) = principal.key_id() {
            sighting = sighting.respond(crate::detection::DecisionScope::ApiKey(key.as_str().to_owned()));
        }
        detection.sighted(sighting).await;
    }

    /// A token's metadata.
    pub async fn get(&self, principal: &Principal, source: &Source, id: &str) -> Result<TokenView, DomainError> {
        let record = self.own_token_watched(principal, id).await?;
        if record.canary {
            self.canary_tripped(principal, source, &record, "read").await?;
        }
        Ok(self.view(&record))
    }

    /// Tokens of the caller's merchant holding an equal value (never the value).
    pub async fn search(
        &self,
        principal: &Principal,
        kind: ValueKind,
        value: &Value,
    ) -> Result<Vec<TokenView>, DomainError> {
        let now = self.clock.now();
        let normalized = values::search_normalized(kind, value, now, "/value")
            .map_err(|err| DomainError::Rejected { code: err.code, errors: vec![err.field] })?;
        // Under every fingerprint key version: a rotation's recomputation may be under way.
        let mut found: Vec<TokenView> = Vec::new();
        for (_, key) in self.fingerprints.all() {
            let fingerprint = Self::fingerprint(&key, principal.merchant_id(), kind, &normalized);
            let records = self
                .repo
                .tokens_by_fingerprint(principal.merchant_id(), principal.mode(), kind, &fingerprint, now, 100)
                .await?;
            for record in records.iter().filter(|r| !r.canary) {
                if !found.iter().any(|v| v.id == record.id) {
                    found.push(self.view(record));
                }
            }
        }
        Ok(found)
    }

    /// Takes one reveal from the caller's allowance (`reveals_per_minute`, refilled evenly),
    /// shared by every node through intrusion detection's store.
    async fn check_reveal_rate(&self, principal: &Principal) -> Result<(), DomainError> {
        let Some(detection) = self.detection.get() else { return Ok(()) };
        let allowance =
            crate::ports::detection::Allowance::new(self.settings.reveals_per_minute, Duration::from_secs(60));
        match detection
            .limited("reveals", principal.merchant_id().as_str(), principal.actor_id(), allowance, true)
            .await
        {
            Some(wait) => Err(DomainError::RateLimited(wait)),
            None => Ok(()),
        }
    }

    /// Decrypts a token's value; a ciphertext that fails to open is a security event.
    async fn open_value(
        &self,
        principal: &Principal,
        source: &Source,
        record: &TokenRecord,
    ) -> Result<Secret<Vec<u8>>, DomainError> {
        let merchant = principal.merchant_id();
        let key = self.keys.data_key(&record.data_key_id, merchant).await?.ok_or(DomainError::Gone)?;
        let aad = value_aad(merchant, &record.id, &record.data_key_id, record.kind);
        let opened = record
            .ciphertext
            .as_deref()
            .ok_or(DomainError::Gone)
            .and_then(|c| envelope::open(&key, &aad, c).map_err(|_| DomainError::Integrity))
            .map(Secret::new);
        match opened {
            Ok(plain) => Ok(plain),
            Err(DomainError::Integrity) => {
                tracing::error!(target: "strongroom::security", token = %record.id, "a sealed value failed its integrity check");
                if let Err(err) = self.alert("integrity_error", principal, source, &record.id, "decrypt_failed").await {
                    tracing::error!(error = %err, "could not queue an integrity alert");
                }
                let event = self
                    .event(principal, source, "security.integrity_error", Outcome::Failed("decrypt_failed"))
                    .on("token", record.id.as_str());
                if let Err(err) = self.audit.record(event).await {
                    tracing::error!(error = %err, "could not log an integrity error");
                }
                Err(DomainError::Integrity)
            }
            Err(other) => Err(other),
        }
    }

    /// Reveals a token's value in the requested view, if the caller's scopes allow it, logging
    /// the reveal durably first.
    pub async fn reveal(
        &self,
        principal: &Principal,
        source: &Source,
        id: &str,
        view: RevealView,
        reason: &str,
        approval: Option<&str>,
    ) -> Result<Revealed, DomainError> {
        if !valid_reason(reason) {
            return Err(DomainError::invalid("/reason", "must be a reason code: 1 to 64 of a-z, 0-9, _ . : -"));
        }
        // The reason goes into the audit log, which nothing ever erases.
        crate::free_text::check("/reason", reason)?;
        let record = self.own_token_watched(principal, id).await?;
        let needed = match view {
            RevealView::Masked => [Scope::VaultRevealMasked, Scope::VaultRevealPii, Scope::VaultRevealCard]
                .into_iter()
                .find(|s| principal.has(*s))
                .unwrap_or(Scope::VaultRevealMasked),
            RevealView::Plain if record.kind.is_payment_data() => Scope::VaultRevealCard,
            RevealView::Plain => Scope::VaultRevealPii,
        };
        if !principal.has(needed) {
            let event = self
                .event(principal, source, "vault.token_revealed", Outcome::Denied("insufficient_scope"))
                .on("token", record.id.as_str());
            self.audit.record(event).await?;
            return Err(DomainError::MissingScope(needed));
        }
        // The rate is checked (and counted) before a four-eyes approval is used up: a 429 must
        // not burn an approval.
        self.check_reveal_rate(principal).await?;
        if view == RevealView::Plain && record.kind.is_payment_data() && principal.as_staff().is_some() {
            let Some(staff) = self.dual_control.get() else {
                return Err(DomainError::Forbidden(
                    "staff reveal card numbers only with dual control, which is not set up",
                ));
            };
            let client = crate::identity::Client {
                ip: source.ip,
                user_agent: None,
                request_id: source.request_id.clone(),
                ip_is_the_customers: false,
                device: None,
            };
            let action = crate::staff::approvals::Action::RevealCard;
            staff.require_approval(principal, action, record.id.as_str(), reason, approval, &client).await?;
        }
        if record.canary {
            self.canary_tripped(principal, source, &record, "revealed").await?;
        }
        // Insider use: more reveals in an hour than a key's work needs.
        let sighting = crate::detection::Sighting::new(
            crate::detection::Point::InsiderReveals,
            Some(principal.merchant_id()),
            principal.actor_id(),
        )
        .from_ip(source.ip)
        .subject(principal.actor_id());
        self.sight(principal, sighting).await;
        // Outside the shop's usual hours: an alert (no suspension), one per caller and day.
        if let Some(detection) = self.detection.get().filter(|d| d.outside_usual_hours()) {
            let sighting = crate::detection::Sighting::new(
                crate::detection::Point::OffHoursReveals,
                Some(principal.merchant_id()),
                principal.actor_id(),
            )
            .from_ip(source.ip)
            .subject(principal.actor_id());
            detection.sighted(sighting).await;
        }
        let value = self.open_value(principal, source, &record).await?;
        let shown = match view {
            RevealView::Plain => value,
            RevealView::Masked => {
                let parsed: Value = serde_json::from_slice(value.expose()).map_err(|_| DomainError::Integrity)?;
                Secret::new(masked_view(record.kind, &parsed).to_string().into_bytes())
            }
        };
        let reason_code = match view {
            RevealView::Plain => format!("plain:{reason}"),
            RevealView::Masked => format!("masked:{reason}"),
        };
        let event = self
            .event(principal, source, "vault.token_revealed", Outcome::SuccessBecause(reason_code))
            .on("token", record.id.as_str());
        let audit_index = self.audit.record(event).await?;
        Ok(Revealed { token: self.view(&record), value: shown, audit_index })
    }

    /// Puts full card reveals by staff under four-eyes approval (called once at wiring).
    pub fn set_dual_control(&self, staff: Arc<crate::staff::StaffService>) {
        let _ = self.dual_control.set(staff);
    }

    /// Wires intrusion detection (called once at wiring).
    pub fn set_detection(&self, decisions: crate::detection::DecisionService) {
        let _ = self.detection.set(decisions);
    }

    /// A token of the caller's, as [`Self::own_token`]; a token that does not exist (or is
    /// another's) counts as a guess for intrusion detection.
    async fn own_token_watched(&self, principal: &Principal, id: &str) -> Result<TokenRecord, DomainError> {
        let found = self.own_token(principal, id).await;
        if let (Err(DomainError::NotFound), Some(detection)) = (&found, self.detection.get()) {
            detection.unknown_token(principal, id).await;
        }
        found
    }

    /// Forgets a card token's CVC, if one is still held (its token was deleted another way).
    pub fn forget_cvc(&self, id: &str) {
        self.cvcs.forget(id);
    }

    /// Deletes a token (it answers 404 afterwards).
    pub async fn delete(&self, principal: &Principal, source: &Source, id: &str) -> Result<(), DomainError> {
        let record = self.own_token(principal, id).await?;
        if !self.repo.delete_token(principal.merchant_id(), id).await? {
            return Err(DomainError::NotFound);
        }
        self.cvcs.forget(id);
        if record.canary {
            self.canary_tripped(principal, source, &record, "deleted").await?;
        }
        let event = self.event(principal, source, "vault.token_deleted", Outcome::Success).on("token", id);
        self.audit.record(event).await?;
        Ok(())
    }

    /// Crypto-shreds a customer: destroys their data key and empties their tokens, which answer
    /// 410 afterwards.
    pub async fn erase_customer(
        &self,
        principal: &Principal,
        source: &Source,
        customer: &str,
    ) -> Result<ErasureReceipt, DomainError> {
        if !valid_customer(customer) {
            return Err(DomainError::NotFound);
        }
        let merchant = principal.merchant_id();
        let mode = principal.mode();
        let data_key = self.repo.data_key_for(merchant, mode, customer).await?;
        let at = self.clock.now();
        let events = match self.alerts.outbox() {
            Some(outbox) => {
                let data = serde_json::json!({"customer": customer, "erased_at": at.to_rfc3339()});
                outbox.event_messages(Some(merchant), mode, "customer.data_erased", data, false).await?
            }
            None => Vec::new(),
        };
        let erased = self.repo.erase_customer(merchant, mode, customer, at, &events).await?;
        self.keys.forget(merchant, mode, customer, data_key.as_ref().map(|k| k.id.as_str()));
        let event = self.event(principal, source, "privacy.customer_erased", Outcome::Success).on("customer", customer);
        let audit_index = self.audit.record(event).await?;
        Ok(ErasureReceipt { customer: customer.to_owned(), erased_at: at, tokens_erased: erased, audit_index })
    }

    /// Hands out a card token's CVC once (to an authorisation); a canary raises a security event.
    pub async fn take_cvc(
        &self,
        principal: &Principal,
        source: &Source,
        id: &str,
    ) -> Result<Option<Secret<String>>, DomainError> {
        let record = self.own_token(principal, id).await?;
        if record.canary {
            self.canary_tripped(principal, source, &record, "used").await?;
        }
        Ok(self.cvcs.take(id, self.clock.now()))
    }

    /// A token's kind and, for a card, its sealed value opened, for a detokenize-and-forward
    /// (`crate::forward`, whose route checks `vault:forward`): a token of another space is
    /// `NotFound`, an erased one `Gone`, a canary raises its security event. Nothing is opened
    /// for a token that is not a card. The forward service records the use in the audit log.
    pub async fn open_for_forward(
        &self,
        principal: &Principal,
        source: &Source,
        id: &str,
    ) -> Result<(ValueKind, Option<Secret<Vec<u8>>>), DomainError> {
        let record = self.own_token(principal, id).await?;
        if record.canary {
            self.canary_tripped(principal, source, &record, "forwarded").await?;
        }
        if record.kind != ValueKind::Card {
            return Ok((record.kind, None));
        }
        let value = self.open_value(principal, source, &record).await?;
        Ok((record.kind, Some(value)))
    }

    /// Hands out the CVC of a card token already opened by [`Self::open_for_forward`] in this
    /// request, once: it is gone from memory afterwards.
    pub fn take_cvc_of_opened(&self, id: &str) -> Option<Secret<String>> {
        self.cvcs.take(id, self.clock.now())
    }

    /// A card token of the caller's space as a payment method: its customer and what may be
    /// shown of it. Any other kind of token answers as a missing one.
    pub async fn payment_card(&self, principal: &Principal, id: &str) -> Result<PaymentCardInfo, DomainError> {
        let record = self.own_token(principal, id).await?;
        if record.kind != ValueKind::Card {
            return Err(DomainError::NotFound);
        }
        let display: Map<String, Value> = serde_json::from_str(&record.display).unwrap_or_default();
        let text = |key: &str| display.get(key).and_then(Value::as_str).unwrap_or_default().to_owned();
        Ok(PaymentCardInfo {
            customer: record.customer.clone(),
            brand: text("brand"),
            last4: text("last4"),
            fingerprint: record.fingerprint.as_deref().map(fingerprint_id),
            first6: display.get("first6").and_then(Value::as_str).map(str::to_owned),
            read: Some(ReadToken(std::sync::Arc::new(record))),
        })
    }

    /// Opens a card token for a gateway call (the only way a card number leaves the vault, and
    /// only towards a gateway), taking its CVC if one is still held: the first authorisation
    /// uses it, and it is gone afterwards. `read`: what [`Self::payment_card`] answered for this
    /// token earlier in the same request, whose stored token is then opened without reading it
    /// again (a request that confirms later reads it afresh: it may have been deleted meanwhile).
    pub async fn card_for_gateway(
        &self,
        principal: &Principal,
        source: &Source,
        id: &str,
        read: Option<&PaymentCardInfo>,
    ) -> Result<crate::payments::gateway::GatewayCard, DomainError> {
        #[derive(serde::Deserialize)]
        struct Stored {
            number: String,
            exp_month: u8,
            exp_year: u16,
        }
        let known = read.and_then(|info| info.read.as_ref()).filter(|known| known.0.id == id);
        let record = match known {
            Some(known) => known.0.clone(),
            None => std::sync::Arc::new(self.own_token(principal, id).await?),
        };
        if record.kind != ValueKind::Card {
            return Err(DomainError::NotFound);
        }
        if record.canary {
            self.canary_tripped(principal, source, &record, "used").await?;
        }
        let plain = self.open_value(principal, source, &record).await?;
        let stored: Stored = serde_json::from_slice(plain.expose()).map_err(|_| DomainError::Integrity)?;
        Ok(crate::payments::gateway::GatewayCard {
            number: Secret::new(stored.number),
            exp_month: stored.exp_month,
            exp_year: stored.exp_year,
            cvc: self.cvcs.take(id, self.clock.now()),
        })
    }

    /// Recomputes the fingerprints of up to `limit` tokens still under an older fingerprint key
    /// version, by id after `after`; returns how many moved and the last id looked at (`None`:
    /// nothing left). A token whose value cannot be opened is logged and left as it is.
    pub async fn refingerprint_batch(&self, after: &str, limit: u32) -> Result<(u64, Option<String>), DomainError> {
        let (version, key) = self.fingerprints.active();
        let records = self.repo.tokens_fingerprinted_before(version, after, limit).await?;
        let Some(last) = records.last().map(|r| r.id.clone()) else {
            return Ok((0, None));
        };
        let mut moved = 0;
        for record in &records {
            let Some(data_key) = self.keys.data_key(&record.data_key_id, &record.merchant_id).await? else {
                continue;
            };
            let aad = value_aad(&record.merchant_id, &record.id, &record.data_key_id, record.kind);
            let opened = record.ciphertext.as_deref().map(|c| envelope::open(&data_key, &aad, c));
            let Some(Ok(plain)) = opened else {
                tracing::error!(target: "strongroom::security", token = %record.id, "a sealed value failed its integrity check while refingerprinting");
                continue;
            };
            let plain = Secret::new(plain);
            let Some(normalized) = values::normalized_of_stored(record.kind, plain.expose()) else {
                continue;
            };
            let fingerprint = Self::fingerprint(&key, &record.merchant_id, record.kind, &normalized);
            let dedupe =
                record.dedupe_key.as_ref().map(|_| Self::dedupe_key(&key, record.customer.as_deref(), &fingerprint));
            let set = self.repo.set_fingerprint(
                &record.id,
                record.fingerprint_version,
                version,
                &fingerprint,
                dedupe.as_deref(),
            );
            let changed = match set.await {
                Ok(changed) => changed,
                // An equal value was deduplicated under the new version meanwhile: this token
                // stays valid but stops being the deduplication target.
                Err(StoreError::Conflict(_)) => {
                    self.repo
                        .set_fingerprint(&record.id, record.fingerprint_version, version, &fingerprint, None)
                        .await?
                }
                Err(err) => return Err(err.into()),
            };
            moved += u64::from(changed);
        }
        Ok((moved, Some(last)))
    }

    /// Recomputes every fingerprint still under an older version, calling `progress(done)`.
    pub async fn refingerprint_all(&self, mut progress: impl FnMut(u64)) -> Result<u64, DomainError> {
        let mut after = String::new();
        let mut total = 0;
        while let (moved, Some(last)) = self.refingerprint_batch(&after, 500).await? {
            total += moved;
            progress(total);
            after = last;
        }
        Ok(total)
    }

    /// Tokens (not erased) per fingerprint key version.
    pub async fn fingerprint_status(&self) -> Result<Vec<(u32, u64)>, DomainError> {
        Ok(self.repo.fingerprint_version_counts().await?)
    }

    /// Deletes tokens that have expired; returns how many.
    pub async fn purge_expired(&self) -> Result<u64, DomainError> {
        let mut total = 0;
        loop {
            let purged = self.repo.purge_expired_tokens(self.clock.now(), 1000).await?;
            total += purged;
            if purged < 1000 {
                return Ok(total);
            }
        }
    }
}

/// A sealed value waiting for its insert: its position, record, CVC and (for a format-preserving
/// id) its card number.
struct Pending {
    index: usize,
    record: TokenRecord,
    /// The data key (with its record while it is new) and plaintext, to seal again under a new id
    /// after a collision or under another key after the new one was refused.
    key: TokenKey,
    plaintext: Secret<Vec<u8>>,
    cvc: Option<Secret<String>>,
    pan: Option<crate::vault::card::Pan>,
}

fn internal_item() -> ValueError {
    ValueError { code: "internal_error", field: FieldError::new("", "the item was not processed") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_prints_never_show_the_value() {
        let input = TokenizeInput {
            kind: ValueKind::Card,
            value: serde_json::json!({"number": "4242424242424242", "exp_month": 1, "exp_year": 2040}),
            customer: None,
            ttl_seconds: None,
            dedupe: false,
            format: TokenFormat::Random,
            metadata: None,
            canary: false,
        };
        assert!(!format!("{input:?}").contains("4242"), "{input:?}");
    }

    #[test]
    fn references_and_reasons() {
        assert!(valid_customer("cus_123.a:b-c"));
        assert!(!valid_customer("jane@example.com"));
        assert!(!valid_customer(""));
        assert!(valid_reason("customer_support"));
        assert!(!valid_reason("Customer asked"));
    }

    #[test]
    fn value_aad_binds_row_and_kind() {
        let m = MerchantId::parse("mer_aaaaaaaaaaaaaaaaaaaaaaaaaa").unwrap();
        let a = value_aad(&m, "tok_a", "dk_a", ValueKind::Card);
        assert_ne!(a, value_aad(&m, "tok_b", "dk_a", ValueKind::Card));
        assert_ne!(a, value_aad(&m, "tok_a", "dk_b", ValueKind::Card));
        assert_ne!(a, value_aad(&m, "tok_a", "dk_a", ValueKind::Email));
    }
}
