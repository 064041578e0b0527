//! Customer sessions: what a customer sees of the shared session mechanism
//! ([`crate::sessions`]): issuing one at sign-in, authenticating, listing and ending, and
//! renewing after step-up, each audited.
//! Must never: keep session rules of its own (they live in [`crate::sessions`] for customers and
//! staff alike), or return a token other than the one just issued.

use strongroom_types::{Secret, Timestamp};

use super::{Client, CustomerSession, IdentityService};
use crate::DomainError;
use crate::audit::event::{ActorKind, AuditEvent, Outcome};
use crate::merchants::MerchantId;
use crate::modes::Mode;
use crate::ports::{AccountStatus, CustomerRecord};
use crate::sessions::SessionRecord;

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

/// The token's prefix.
pub const TOKEN_PREFIX: &str = "srs";

impl IdentityService {
    fn session_view(&self, record: &SessionRecord) -> SessionView {
        SessionView {
            id: record.id.clone(),
            factors: record.factors.clone(),
            user_agent: record.user_agent.clone(),
            ip: record.ip.clone(),
            created_at: record.created_at,
            last_seen_at: record.last_seen_at,
            idle_expires_at: self.sessions.idle_deadline(record),
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
        if self.is_locked(&customer.merchant_id, &customer.id) {
            // Locked by a decision: no way in (a second factor, a passkey), whatever began first.
            let event = AuditEvent::by(
                ActorKind::Customer,
                Some(customer.id.clone()),
                "customer.login",
                Outcome::Denied("account_locked"),
            )
            .for_merchant(&customer.merchant_id)
            .in_mode(customer.mode)
            .from_source(client.ip, client.request_id.clone());
            self.audit.record(event).await?;
            return Err(DomainError::InvalidFactor);
        }
        let new = self.sessions.issue(&customer.merchant_id, &customer.id, factors, client).await?;
        Ok(IssuedSession {
            session: self.session_view(&new.record),
            customer_id: customer.id.clone(),
            token: new.token,
        })
    }

    /// Authenticates a session token. `None` for anything that is not a live session (the caller
    /// answers one 401 for every case).
    pub async fn authenticate_session(&self, token: &str) -> Result<Option<CustomerSession>, DomainError> {
        // Disabling an account ends its sessions in the same transaction; the customer's mode
        // (which never changes) is read once and cached with the session.
        let repo = &self.repo;
        let attach = |record: SessionRecord| {
            let (merchant, customer) = (record.merchant_id, record.subject_id);
            async move {
                for mode in [Mode::Live, Mode::Test] {
                    if repo.customer(&merchant, mode, &customer).await?.is_some() {
                        return Ok(Some(mode));
                    }
                }
                Ok(None)
            }
        };
        let Some((record, mode)) = self.sessions.authenticate(token, attach).await? else {
            return Ok(None);
        };
        Ok(Some(CustomerSession {
            mode,
            merchant_id: record.merchant_id,
            customer_id: record.subject_id,
            session_id: record.id,
            factors: record.factors,
            authenticated_at: record.created_at,
        }))
    }

    /// Reports a session cookie that is not even shaped like a session token (a forged or edited
    /// cookie: an ended session's cookie is well-shaped) from a browser on the hosted pages to
    /// intrusion detection, which blocks a client that sends many everywhere. Returns whether
    /// the token was forged.
    pub async fn watch_session_cookie(&self, token: &str, client: &Client) -> bool {
        if self.sessions.is_token_shaped(token) {
            return false;
        }
        if let (Some(decisions), Some(ip)) = (self.decisions.get(), client.ip) {
            // Counted by a hash of the cookie (never the cookie: an edited real token is close to
            // a credential).
            use std::hash::{Hash, Hasher};
            let mut hasher = std::hash::DefaultHasher::new();
            token.hash(&mut hasher);
            let sighting = crate::detection::Sighting::new(
                crate::detection::Point::TamperedCredential,
                None,
                crate::detection::points::client_group(ip),
            )
            .item(hasher.finish().to_be_bytes())
            .respond(crate::detection::points::client_scope(ip))
            .from_ip(Some(ip));
            decisions.sighted(sighting).await;
        }
        true
    }

    /// Records a refused session token (unknown, ended, idle, expired, not a session token, or
    /// another merchant's session on the hosted pages) before the caller answers 401; `merchant`
    /// is the one the request was for, when known. Every refusal has its entry.
    pub async fn record_refused_session(
        &self,
        merchant: Option<&MerchantId>,
        reason: &'static str,
        client: &Client,
    ) -> Result<(), DomainError> {
        let mut event = AuditEvent::by(ActorKind::Anonymous, None, "customer.session_refused", Outcome::Denied(reason))
            .from_source(client.ip, client.request_id.clone());
        event.merchant = merchant.cloned();
        self.audit.record(event).await?;
        Ok(())
    }

    /// The customer's live sessions, newest first.
    pub async fn list_sessions(&self, session: &CustomerSession) -> Result<Vec<SessionView>, DomainError> {
        let live = self.sessions.live(&session.merchant_id, &session.customer_id).await?;
        Ok(live.iter().map(|s| self.session_view(s)).collect())
    }

    /// Ends one of the customer's sessions (their own current one is a logout).
    pub async fn end_session(&self, session: &CustomerSession, id: &str, client: &Client) -> Result<(), DomainError> {
        if !self.sessions.end(&session.merchant_id, &session.customer_id, id).await? {
            return Err(DomainError::NotFound);
        }
        let action = if id == session.session_id { "customer.logout" } else { "customer.session_ended" };
        self.audit_factor(session.space(), &session.customer_id, client, action, Outcome::Success).await?;
        Ok(())
    }

    /// Ends every session of the customer but the current one; returns how many ended.
    pub async fn end_other_sessions(&self, session: &CustomerSession, client: &Client) -> Result<u64, DomainError> {
        let ended =
            self.sessions.end_all(&session.merchant_id, &session.customer_id, Some(&session.session_id)).await?;
        if !ended.is_empty() {
            self.audit_factor(
                session.space(),
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
        self.sessions.forget_subject(customer);
    }

    /// Replaces the current session with a new one (after step-up): the old token stops working.
    pub(super) async fn renew_session(
        &self,
        session: &CustomerSession,
        merchant: &MerchantId,
        factors: &str,
        client: &Client,
    ) -> Result<IssuedSession, DomainError> {
        let customer = self.customer_record(session.space(), &session.customer_id).await?;
        if customer.status != AccountStatus::Active {
            return Err(DomainError::InvalidFactor);
        }
        let issued = self.issue_session(&customer, factors, client).await?;
        self.sessions.end(merchant, &session.customer_id, &session.session_id).await?;
        Ok(issued)
    }
}

impl IdentityService {
    /// Deletes sessions and challenges that ended or expired more than a day ago.
    pub async fn purge(&self) -> Result<u64, DomainError> {
        let before = Timestamp::from_unix_millis(self.now().unix_millis() - 86_400_000);
        let mut total = self.sessions.purge(before).await?;
        loop {
            let purged = self.repo.purge_identity(before, 1000).await?;
            total += purged;
            if purged < 1000 {
                return Ok(total);
            }
        }
    }
}
