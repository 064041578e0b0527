//! Sessions: one mechanism for customers and staff (two owners, the same rules).
//!
//! Owns: minting opaque 256-bit tokens (`srs_…` for customers, `sst_…` for staff) of which only a
//! keyed hash is stored; the idle and absolute timeouts; a short memory cache; listing, ending
//! and purging sessions. The identity and staff services hold one [`Sessions`] each and add what
//! differs (what a session proves, what it may do); a fix to how a session lives or dies lands
//! here once.
//!
//! Across nodes: a validated session is trusted from memory for at most
//! [`SessionPolicy::cache_ttl`] (one second by default), so a session ended, an account disabled,
//! a password reset or a role changed on one node takes effect on every node within that time.
//! On the node that made the change it takes effect at once: ending forgets the cached entries,
//! and a read that began before the forget cannot put its stale answer back
//! ([`TtlCache::put_unless_forgotten`]).
//!
//! Must never: store or log a token; accept a token of an ended, expired or idle session; trust a
//! cached session longer than the cache's time to live.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use strongroom_crypto::KeyedDigest;
use strongroom_types::{Clock, Entropy, Secret, Timestamp};

use crate::cache::TtlCache;
use crate::identity::{Client, fresh_secret, is_secret_shaped, keyed, short_agent};
use crate::merchants::MerchantId;
use crate::{DomainError, StoreError};

/// Whose session it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SessionOwner {
    /// A shop's customer (`cus_…`).
    Customer,
    /// A shop's staff member (`stf_…`).
    Staff,
}

impl SessionOwner {
    /// The token's prefix.
    pub fn token_prefix(self) -> &'static str {
        match self {
            Self::Customer => "srs",
            Self::Staff => "sst",
        }
    }

    /// The label of the token's keyed hash (so a customer token never matches a staff one).
    fn digest_label(self) -> &'static str {
        match self {
            Self::Customer => "session",
            Self::Staff => "staff_session",
        }
    }
}

/// A session as stored (the token itself never is: only its keyed hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    /// `ses_…` or `sss_…`
    pub id: String,
    /// Whose it is.
    pub owner: SessionOwner,
    /// Its merchant.
    pub merchant_id: MerchantId,
    /// The customer's or staff member's id.
    pub subject_id: String,
    /// Keyed hash of the token.
    pub token_digest: Vec<u8>,
    /// How it was authenticated, e.g. `password+totp`.
    pub factors: String,
    /// The client's user agent, shortened.
    pub user_agent: Option<String>,
    /// The client's address.
    pub ip: Option<String>,
    /// When it began.
    pub created_at: Timestamp,
    /// Last use (written at most once a minute).
    pub last_seen_at: Timestamp,
    /// Absolute end.
    pub expires_at: Timestamp,
    /// When it was ended, if it was.
    pub ended_at: Option<Timestamp>,
}

/// Sessions of both owners in storage. Every method names the owner; every read but the look-up
/// by a token's keyed hash names the merchant.
#[async_trait]
pub trait SessionRepository: Send + Sync {
    /// Stores a new session.
    async fn insert_session(&self, session: &SessionRecord) -> Result<(), StoreError>;

    /// A session by the keyed hash of its token.
    async fn session_by_digest(&self, owner: SessionOwner, digest: &[u8]) -> Result<Option<SessionRecord>, StoreError>;

    /// Records a use (never moves `last_seen_at` backwards).
    async fn touch_session(&self, owner: SessionOwner, id: &str, at: Timestamp) -> Result<(), StoreError>;

    /// The subject's sessions that were not ended and have not passed their absolute end.
    async fn live_sessions(
        &self,
        owner: SessionOwner,
        merchant: &MerchantId,
        subject: &str,
        now: Timestamp,
    ) -> Result<Vec<SessionRecord>, StoreError>;

    /// Ends one live session of the subject; false when there was none.
    async fn end_session(
        &self,
        owner: SessionOwner,
        merchant: &MerchantId,
        subject: &str,
        id: &str,
        at: Timestamp,
    ) -> Result<bool, StoreError>;

    /// Ends every live session of the subject but `keep`; returns the ids ended.
    async fn end_sessions_except(
        &self,
        owner: SessionOwner,
        merchant: &MerchantId,
        subject: &str,
        keep: Option<&str>,
        at: Timestamp,
    ) -> Result<Vec<String>, StoreError>;

    /// Deletes at most `limit` sessions that ended or expired before `before`; returns how many.
    async fn purge_sessions(&self, owner: SessionOwner, before: Timestamp, limit: u32) -> Result<u64, StoreError>;
}

/// How long sessions live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionPolicy {
    /// A session unused this long is dead.
    pub idle: Duration,
    /// A session is dead this long after it began, used or not.
    pub absolute: Duration,
    /// How long a validated session is trusted from memory (the bound on how late another node
    /// sees a session ended, an account disabled or a role changed).
    pub cache_ttl: Duration,
}

/// How often a session's last use is written.
const TOUCH_RESOLUTION_MS: i64 = 60_000;

/// A new session and its token (shown once).
#[derive(Debug)]
pub struct NewSession {
    /// The session as stored.
    pub record: SessionRecord,
    /// The bearer token or cookie value.
    pub token: Secret<String>,
}

/// The sessions of one owner. `A` is what the owning service attaches to a validated session on
/// a cache miss (a staff member's permissions, say) and trusts for as long as the session.
pub struct Sessions<A> {
    owner: SessionOwner,
    repo: Arc<dyn SessionRepository>,
    digest: Arc<KeyedDigest>,
    clock: Arc<dyn Clock>,
    entropy: Arc<dyn Entropy>,
    policy: SessionPolicy,
    cache: TtlCache<Vec<u8>, Arc<(SessionRecord, A)>>,
}

impl<A> std::fmt::Debug for Sessions<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions").field("owner", &self.owner).field("policy", &self.policy).finish_non_exhaustive()
    }
}

impl<A: Clone + Send + Sync + 'static> Sessions<A> {
    /// Sessions of `owner`; `digest` is the deployment's identity key.
    pub fn new(
        owner: SessionOwner,
        repo: Arc<dyn SessionRepository>,
        digest: Arc<KeyedDigest>,
        clock: Arc<dyn Clock>,
        entropy: Arc<dyn Entropy>,
        policy: SessionPolicy,
        cache_capacity: usize,
    ) -> Self {
        let cache = TtlCache::new(policy.cache_ttl, cache_capacity);
        Self { owner, repo, digest, clock, entropy, policy, cache }
    }

    /// The policy.
    pub fn policy(&self) -> &SessionPolicy {
        &self.policy
    }

    /// Whether `token` has the shape of this owner's tokens (it may still be dead).
    pub fn is_token_shaped(&self, token: &str) -> bool {
        is_secret_shaped(token, self.owner.token_prefix())
    }

    /// When the session dies if unused from now on.
    pub fn idle_deadline(&self, record: &SessionRecord) -> Timestamp {
        record.last_seen_at.saturating_add(self.policy.idle).min(record.expires_at)
    }

    fn idle_ms(&self) -> i64 {
        i64::try_from(self.policy.idle.as_millis()).unwrap_or(i64::MAX)
    }

    fn is_live(&self, record: &SessionRecord, now: Timestamp) -> bool {
        record.ended_at.is_none() && record.expires_at > now && now.millis_since(record.last_seen_at) < self.idle_ms()
    }

    /// Starts a session for `subject`.
    pub async fn issue(
        &self,
        merchant: &MerchantId,
        subject: &str,
        factors: &str,
        client: &Client,
    ) -> Result<NewSession, DomainError> {
        let now = self.clock.now();
        let token = fresh_secret(self.entropy.as_ref(), self.owner.token_prefix());
        let id = match self.owner {
            SessionOwner::Customer => crate::identity::SessionId::generate(self.entropy.as_ref()).as_str().to_owned(),
            SessionOwner::Staff => crate::staff::StaffSessionId::generate(self.entropy.as_ref()).as_str().to_owned(),
        };
        let record = SessionRecord {
            id,
            owner: self.owner,
            merchant_id: merchant.clone(),
            subject_id: subject.to_owned(),
            token_digest: keyed(&self.digest, self.owner.digest_label(), token.expose().as_bytes()),
            factors: factors.to_owned(),
            user_agent: short_agent(client.user_agent.as_deref()),
            ip: client.ip.map(|ip| ip.to_string()),
            created_at: now,
            last_seen_at: now,
            expires_at: now.saturating_add(self.policy.absolute),
            ended_at: None,
        };
        self.repo.insert_session(&record).await?;
        Ok(NewSession { record, token })
    }

    /// Validates a token: the live session and what `attach` made of it, or `None` for anything
    /// that is not a live session (the caller answers one 401 for every case). `attach` runs on a
    /// cache miss; it answers `None` to refuse the session (a disabled account, say).
    pub async fn authenticate<F, Fut>(&self, token: &str, attach: F) -> Result<Option<(SessionRecord, A)>, DomainError>
    where
        F: FnOnce(SessionRecord) -> Fut,
        Fut: Future<Output = Result<Option<A>, DomainError>>,
    {
        if !self.is_token_shaped(token) {
            return Ok(None);
        }
        let digest = keyed(&self.digest, self.owner.digest_label(), token.as_bytes());
        let now = self.clock.now();
        let entry = match self.cache.get(&digest, now) {
            Some(entry) => entry,
            None => {
                let generation = self.cache.generation();
                let Some(record) = self.repo.session_by_digest(self.owner, &digest).await? else {
                    return Ok(None);
                };
                if !self.is_live(&record, now) {
                    return Ok(None);
                }
                let Some(attached) = attach(record.clone()).await? else {
                    return Ok(None);
                };
                let entry = Arc::new((record, attached));
                self.cache.put_unless_forgotten(digest.clone(), entry.clone(), now, generation);
                entry
            }
        };
        if !self.is_live(&entry.0, now) {
            return Ok(None);
        }
        if now.millis_since(entry.0.last_seen_at) >= TOUCH_RESOLUTION_MS {
            self.repo.touch_session(self.owner, &entry.0.id, now).await?;
            self.cache.update(&digest, |cached| {
                let mut fresh = (**cached).clone();
                fresh.0.last_seen_at = now;
                *cached = Arc::new(fresh);
            });
        }
        Ok(Some((*entry).clone()))
    }

    /// The subject's live sessions, newest first.
    pub async fn live(&self, merchant: &MerchantId, subject: &str) -> Result<Vec<SessionRecord>, DomainError> {
        let now = self.clock.now();
        let mut live: Vec<SessionRecord> = self
            .repo
            .live_sessions(self.owner, merchant, subject, now)
            .await?
            .into_iter()
            .filter(|s| self.is_live(s, now))
            .collect();
        live.sort_by_key(|s| std::cmp::Reverse(s.created_at));
        Ok(live)
    }

    /// Ends one session of the subject; false when it was not a live one of theirs.
    pub async fn end(&self, merchant: &MerchantId, subject: &str, id: &str) -> Result<bool, DomainError> {
        let ended = self.repo.end_session(self.owner, merchant, subject, id, self.clock.now()).await?;
        self.cache.retain(|_, entry| entry.0.id != id);
        Ok(ended)
    }

    /// Ends every session of the subject but `keep`; returns the ids ended.
    pub async fn end_all(
        &self,
        merchant: &MerchantId,
        subject: &str,
        keep: Option<&str>,
    ) -> Result<Vec<String>, DomainError> {
        let ended = self.repo.end_sessions_except(self.owner, merchant, subject, keep, self.clock.now()).await?;
        self.forget_subject(subject);
        Ok(ended)
    }

    /// Forgets the cached sessions of one subject (after a change that a session's cached
    /// attachment or liveness depends on: a disabled account, erased data, new roles).
    pub fn forget_subject(&self, subject: &str) {
        self.cache.retain(|_, entry| entry.0.subject_id != subject);
    }

    /// Forgets every cached session (after a change to something many sessions depend on, such
    /// as a custom role's permissions).
    pub fn forget_all(&self) {
        self.cache.retain(|_, _| false);
    }

    /// Deletes sessions that ended or expired before `before`; returns how many.
    pub async fn purge(&self, before: Timestamp) -> Result<u64, DomainError> {
        let mut total = 0;
        loop {
            let purged = self.repo.purge_sessions(self.owner, before, 1000).await?;
            total += purged;
            if purged < 1000 {
                return Ok(total);
            }
        }
    }
}
