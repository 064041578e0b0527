//! Sessions: opaque 256-bit tokens (`srs_…`) whose keyed hash alone is stored, with an idle and
//! an absolute timeout; listing and ending them.
//! Must never: store or log a token, accept a token of an ended, expired or idle session, or
//! trust a cached session past [`super::IdentitySettings::session_cache_ttl`].

use std::sync::Arc;

use strongroom_types::{Secret, Timestamp};

use super::{Client, CustomerSession, IdentityService, SessionId, short_agent};
use crate::DomainError;
use crate::audit::event::Outcome;
use crate::merchants::MerchantId;
use crate::ports::{AccountStatus, CustomerRecord, SessionRecord};

/// A session as its owner sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionView {
    /// `ses_…`
    pub id: String,
    /// How it was authenticated.
    pub factors: String,
    /// The browser.
    pub user_agent: Option<String>,
    /// The address.
    pub ip: Option<String>,
    /// When it began.
    pub created_at: Timestamp,
    /// Last use (to the minute).
    pub last_seen_at: Timestamp,
    /// When it ends if unused.
    pub idle_expires_at: Timestamp,
    /// When it ends regardless.
    pub expires_at: Timestamp,
}

/// A new session and its token (shown once).
#[derive(Debug)]
pub struct IssuedSession {
    /// The session.
    pub session: SessionView,
    /// `cus_…`
    pub customer_id: String,
    /// The bearer token or cookie value.
    pub token: Secret<String>,
}

/// How often a session's last use is written.
const TOUCH_RESOLUTION_MS: i64 = 60_000;

/// The token's prefix.
pub const TOKEN_PREFIX: &str = "srs";

impl IdentityService {
    fn session_view(&self, record: &SessionRecord) -> SessionView {
        let idle = record.last_seen_at.saturating_add(self.settings.session_idle).min(record.expires_at);
        SessionView {
            id: record.id.clone(),
            factors: record.factors.clone(),
            user_agent: record.user_agent.clone(),
            ip: record.ip.clone(),
            created_at: record.created_at,
            last_seen_at: record.last_seen_at,
            idle_expires_at: idle,
            expires_at: record.expires_at,
        }
    }

    /// Issues a new session for a customer.
    pub(super) async fn issue_session(
        &self,
        customer: &CustomerRecord,
        factors: &str,
        client: &Client,
    ) -> Result<IssuedSession, DomainError> {
        let now = self.now();
        let token = self.fresh_secret(TOKEN_PREFIX);
        let record = SessionRecord {
            id: SessionId::generate(self.entropy.as_ref()).as_str().to_owned(),
            merchant_id: customer.merchant_id.clone(),
            customer_id: customer.id.clone(),
            token_digest: self.keyed("session", token.expose().as_bytes()),
            factors: factors.to_owned(),
            user_agent: short_agent(client.user_agent.as_deref()),
            ip: client.ip.map(|ip| ip.to_string()),
            created_at: now,
            last_seen_at: now,
            expires_at: now.saturating_add(self.settings.session_absolute),
            ended_at: None,
        };
        self.repo.insert_session(&record).await?;
        Ok(IssuedSession { session: self.session_view(&record), customer_id: customer.id.clone(), token })
    }

    /// Authenticates a session token. `None` for anything that is not a live session (the caller
    /// answers one 401 for every case).
    pub async fn authenticate_session(&self, token: &str) -> Result<Option<CustomerSession>, DomainError> {
        if !super::is_secret_shaped(token, TOKEN_PREFIX) {
            return Ok(None);
        }
        let digest = self.keyed("session", token.as_bytes());
        let now = self.now();
        let record = match self.sessions.get(&digest, now) {
            Some(record) => record,
            None => match self.repo.session_by_digest(&digest).await? {
                Some(record) => {
                    let record = Arc::new(record);
                    self.sessions.put(digest.clone(), record.clone(), now);
                    record
                }
                None => return Ok(None),
            },
        };
        let idle_ms = i64::try_from(self.settings.session_idle.as_millis()).unwrap_or(i64::MAX);
        if record.ended_at.is_some() || record.expires_at <= now || now.millis_since(record.last_seen_at) >= idle_ms {
            return Ok(None);
        }
        if now.millis_since(record.last_seen_at) >= TOUCH_RESOLUTION_MS {
            self.repo.touch_session(&record.id, now).await?;
            self.sessions.update(&digest, |cached| {
                let mut fresh = (**cached).clone();
                fresh.last_seen_at = now;
                *cached = Arc::new(fresh);
            });
        }
        Ok(Some(CustomerSession {
            merchant_id: record.merchant_id.clone(),
            customer_id: record.customer_id.clone(),
            session_id: record.id.clone(),
            factors: record.factors.clone(),
            authenticated_at: record.created_at,
        }))
    }

    /// The customer's live sessions, newest first.
    pub async fn list_sessions(&self, session: &CustomerSession) -> Result<Vec<SessionView>, DomainError> {
        let now = self.now();
        let idle_ms = i64::try_from(self.settings.session_idle.as_millis()).unwrap_or(i64::MAX);
        let mut live: Vec<SessionView> = self
            .repo
            .live_sessions(&session.merchant_id, &session.customer_id, now)
            .await?
            .iter()
            .filter(|s| now.millis_since(s.last_seen_at) < idle_ms)
            .map(|s| self.session_view(s))
            .collect();
        live.sort_by_key(|s| std::cmp::Reverse(s.created_at));
        Ok(live)
    }

    /// Ends one of the customer's sessions (their own current one is a logout).
    pub async fn end_session(&self, session: &CustomerSession, id: &str, client: &Client) -> Result<(), DomainError> {
        let ended = self.repo.end_session(&session.merchant_id, &session.customer_id, id, self.now()).await?;
        if !ended {
            return Err(DomainError::NotFound);
        }
        self.sessions.retain(|_, record| record.id != id);
        let action = if id == session.session_id { "customer.logout" } else { "customer.session_ended" };
        self.audit_factor(&session.merchant_id, &session.customer_id, client, action, Outcome::Success).await?;
        Ok(())
    }

    /// Ends every session of the customer but the current one; returns how many ended.
    pub async fn end_other_sessions(&self, session: &CustomerSession, client: &Client) -> Result<u64, DomainError> {
        let ended = self
            .repo
            .end_sessions_except(&session.merchant_id, &session.customer_id, Some(&session.session_id), self.now())
            .await?;
        self.sessions.retain(|_, record| !ended.contains(&record.id));
        if !ended.is_empty() {
            self.audit_factor(
                &session.merchant_id,
                &session.customer_id,
                client,
                "customer.other_sessions_ended",
                Outcome::Success,
            )
            .await?;
        }
        Ok(u64::try_from(ended.len()).unwrap_or(u64::MAX))
    }

    /// Forgets every cached session of a customer (after disabling the account or erasing its
    /// data).
    pub fn forget_customer(&self, customer: &str) {
        self.sessions.retain(|_, record| record.customer_id != customer);
    }

    /// Replaces the current session with a new one (after step-up): the old token stops working.
    pub(super) async fn renew_session(
        &self,
        session: &CustomerSession,
        merchant: &MerchantId,
        factors: &str,
        client: &Client,
    ) -> Result<IssuedSession, DomainError> {
        let customer = self.customer_record(merchant, &session.customer_id).await?;
        if customer.status != AccountStatus::Active {
            return Err(DomainError::InvalidFactor);
        }
        let issued = self.issue_session(&customer, factors, client).await?;
        self.repo.end_session(merchant, &session.customer_id, &session.session_id, self.now()).await?;
        self.sessions.retain(|_, record| record.id != session.session_id);
        Ok(issued)
    }
}

impl IdentityService {
    /// Deletes sessions and challenges that ended or expired more than a day ago.
    pub async fn purge(&self) -> Result<u64, DomainError> {
        let before = Timestamp::from_unix_millis(self.now().unix_millis() - 86_400_000);
        let mut total = 0;
        loop {
            let purged = self.repo.purge_identity(before, 1000).await?;
            total += purged;
            if purged < 1000 {
                return Ok(total);
            }
        }
    }
}
