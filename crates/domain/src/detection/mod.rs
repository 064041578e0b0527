//! Intrusion detection's responses: decisions about a client (an address, its /24 or /64
//! prefix, or the device the shop names: blocked), an API key (suspended) or an account (a customer or staff member: stepped
//! up, or locked), made by a detection (credential stuffing, token guessing, password guessing)
//! or by a staff member, stored so that every node applies them, and enforced where the actor
//! acts: a customer sign-in (the customer's address as the shop passes it, or the browser's on
//! the hosted pages), every request with a suspended key (the gate), and every sign-in of a
//! stepped-up or locked account (a lock also ends the account's sessions and mails its owner,
//! through [`AccountResponses`]).
//!
//! Each node keeps the decisions that hold in memory ([`DecisionBook`]) and reloads them when
//! the stored version changes (checked every [`REFRESH`]), so a decision made or lifted on one
//! node is applied by every node within a second, and a check costs no database read.
//! A scope decided again within a day is blocked twice as long as the time before
//! ([`escalated`]), up to a day.
//! Must never: decide "not already blocked" by a read and a write (the store's conditional upsert
//! decides), block a client for longer than [`MAX_BLOCK`], let one merchant's staff lift
//! another merchant's decision, or decide about an account that is not the merchant's.

pub mod accounts;
pub mod alert_mail;
pub mod incidents;
pub mod playbooks;
pub mod travel;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde_json::json;
use strongroom_types::{Clock, Entropy, Timestamp, define_id};

use crate::api_keys::Principal;
use crate::audit::event::{ActorKind, AuditEvent, Outcome};
use crate::audit::log::AuditLog;
use crate::error::DomainError;
use crate::merchants::MerchantId;
use crate::modes::Mode;
use crate::outbox::{Outbox, OutboxMessage};
use crate::ports::detection::{Allowance, DecisionRecord, DecisionsRepository, Observation, SharedCounts, Tally};

pub mod points;

pub use points::{Point, Severity, Sighting};

define_id!(DecisionId, DecisionKind, "dec");

/// How often a node looks for changed decisions.
pub const REFRESH: Duration = Duration::from_millis(500);
/// The longest block.
pub const MAX_BLOCK: Duration = Duration::from_secs(86_400);
/// How long an ended decision stays listed (`?in_force=false`) before the purge deletes it.
pub const DECISION_RETENTION: Duration = Duration::from_secs(30 * 86_400);
/// Decisions within this time of the last one count as strikes.
pub const STRIKE_MEMORY: Duration = Duration::from_secs(86_400);

/// Settings of detection (`[detection]`): each point's threshold and its first response's
/// length (doubled per strike within a day).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DetectionSettings {
    /// Decisions are made and enforced.
    pub enabled: bool,
    /// Accounts failed from one client in 15 minutes that make credential stuffing; 0: never.
    pub stuffing_accounts: u32,
    /// How long a first credential-stuffing block lasts (of a client or of its network).
    pub stuffing_block: Duration,
    /// Accounts failed from the addresses of one IPv4 /24 in 15 minutes that make credential
    /// stuffing spread over a network (each address below `stuffing_accounts`); 0: never.
    pub stuffing_network_accounts: u32,
    /// Accounts failed from one device (`client.device`, the shop's id of it) in 15 minutes,
    /// from any addresses, that block the device for that merchant; 0: never.
    pub stuffing_device_accounts: u32,
    /// Distinct email addresses that belong to no account, tried from one client within an hour,
    /// that block the client for that merchant; 0: never.
    pub unknown_accounts: u32,
    /// How long a first unknown-accounts block lasts.
    pub unknown_accounts_block: Duration,
    /// Wrong one-time or recovery codes for one account in 15 minutes that block the client
    /// giving them; 0: never.
    pub code_guesses: u32,
    /// How long a first code-guessing block lasts.
    pub code_guessing_block: Duration,
    /// How long a client whose payment the fraud checks refused as card testing may not pay
    /// (also the first block of the other card-testing signals).
    pub card_testing_block: Duration,
    /// The share of one client's payments in an hour, in percent, that the gateway declined
    /// which blocks the client's payments (with at least [`Self::decline_ratio_attempts`] of
    /// them); 0: never.
    pub decline_ratio_percent: u32,
    /// The fewest payments of a client in an hour the decline ratio is judged on; 0: never.
    pub decline_ratio_attempts: u32,
    /// Distinct cards paying a small amount (`payments.fraud.small_amounts`) from one client in
    /// an hour that block its payments; 0: never.
    pub small_amount_cards: u32,
    /// Distinct cards sharing their first six digits from one client in an hour that block its
    /// payments; 0: never.
    pub iin_cluster_cards: u32,
    /// Distinct cards paying one identical amount from one client in an hour that block its
    /// payments; 0: never.
    pub identical_amount_cards: u32,
    /// Distinct objects one API key asked for in 10 minutes and got 404 or 403 for, that suspend
    /// the key; 0: never.
    pub enumeration_ids: u32,
    /// How long a first enumeration suspension lasts.
    pub enumeration_suspension: Duration,
    /// Lookups of distinct tokens that do not exist, by one API key within 10 minutes, that
    /// suspend the key (token guessing); 0: never.
    pub token_guesses: u32,
    /// How long a first token-guessing suspension lasts.
    pub guessing_suspension: Duration,
    /// Distinct API keys that do not exist (or malformed credentials) presented by one client
    /// within 10 minutes that block the client everywhere (API key probing); 0: never.
    pub api_key_probes: u32,
    /// How long a first API-key-probing block lasts.
    pub api_key_probing_block: Duration,
    /// Session cookies or signed tokens failing verification from one client in 10 minutes that
    /// block the client everywhere; 0: never.
    pub tampered_credentials: u32,
    /// How long a first tampering block lasts.
    pub tampering_block: Duration,
    /// Single-use tokens (verification and reset links, step-up proofs) presented again after
    /// use, from one client within an hour, that block the client for that merchant; 0: never.
    pub replayed_tokens: u32,
    /// How long a first replay block lasts.
    pub replay_block: Duration,
    /// Decoy routes: a request for one blocks the client everywhere (empty: none).
    pub decoy_paths: Vec<String>,
    /// How long a decoy-route or decoy-account block lasts.
    pub decoy_block: Duration,
    /// Decoy accounts: e-mail addresses (lower case) no customer has; a sign-in for one answers
    /// as a wrong password does and blocks the client for that merchant (empty: none).
    pub decoy_accounts: Vec<String>,
    /// Requests with a method or body type no client sends, from one client (or with one API
    /// key) within an hour, that block the client everywhere (for a key: an alert); 0: never.
    pub unusual_requests: u32,
    /// How long a first unusual-request block lasts.
    pub unusual_request_block: Duration,
    /// Reveals in one hour by one API key that suspend it (by a staff member: an alert); 0: never.
    pub reveals_per_hour: u32,
    /// How long a first insider suspension lasts.
    pub insider_suspension: Duration,
    /// The usual hours of reveals (UTC): a reveal by a staff member or an API key outside them
    /// is an alert (one per caller and day); `None`: never.
    pub usual_hours: Option<points::UsualHours>,
    /// Wrong passwords for one customer account within an hour, from any clients, that make
    /// its password sign-ins pass a second factor (step-up); 0: never.
    pub password_guesses: u32,
    /// How long a first password-guessing step-up lasts.
    pub password_guessing_step_up: Duration,
    /// Failed sign-ins per 100 attempts of one shop within 15 minutes above which a
    /// `failure_ratio` alert is raised (an incident, no block); 0: never.
    pub failure_ratio_percent: u32,
    /// Attempts within the 15 minutes before the ratio counts.
    pub failure_ratio_min_attempts: u32,
    /// Impossible travel is detected (a GeoIP database is configured).
    pub impossible_travel: bool,
    /// How long a first impossible-travel step-up lasts.
    pub travel_step_up: Duration,
}

impl Default for DetectionSettings {
    /// Thresholds a normal shop never reaches (its customers, its backend, its staff) and an
    /// attack reaches within minutes.
    fn default() -> Self {
        let minutes = |m: u64| Duration::from_secs(m * 60);
        Self {
            enabled: true,
            stuffing_accounts: 10,
            stuffing_block: minutes(15),
            stuffing_network_accounts: 50,
            stuffing_device_accounts: 10,
            unknown_accounts: 20,
            unknown_accounts_block: minutes(60),
            code_guesses: 10,
            code_guessing_block: minutes(60),
            card_testing_block: minutes(60),
            decline_ratio_percent: 80,
            decline_ratio_attempts: 10,
            small_amount_cards: 5,
            iin_cluster_cards: 5,
            identical_amount_cards: 10,
            enumeration_ids: 50,
            enumeration_suspension: minutes(60),
            token_guesses: 100,
            guessing_suspension: minutes(15),
            api_key_probes: 20,
            api_key_probing_block: minutes(60),
            tampered_credentials: 10,
            tampering_block: minutes(60),
            replayed_tokens: 5,
            replay_block: minutes(60),
            decoy_paths: ["/admin", "/wp-login.php", "/.env", "/.git/config", "/phpmyadmin"]
                .map(str::to_owned)
                .to_vec(),
            decoy_block: minutes(24 * 60),
            decoy_accounts: Vec::new(),
            unusual_requests: 3,
            unusual_request_block: minutes(60),
            reveals_per_hour: 500,
            insider_suspension: minutes(60),
            usual_hours: None,
            password_guesses: 10,
            password_guessing_step_up: minutes(24 * 60),
            failure_ratio_percent: 80,
            failure_ratio_min_attempts: 100,
            impossible_travel: false,
            travel_step_up: minutes(24 * 60),
        }
    }
}

/// What a decision is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecisionScope {
    /// One address.
    Ip(IpAddr),
    /// An IPv4 /24 or IPv6 /64: the network an address is in.
    Prefix(IpAddr),
    /// An API key (`key_…`): suspended.
    ApiKey(String),
    /// A customer's device, by the shop's id of it (`client.device`): its sign-ins and
    /// payments are refused, from whatever address.
    Device(String),
    /// A customer account (`cus_…`) or a staff member (`stf_…`): its sign-ins must pass a second
    /// factor, or it cannot sign in at all.
    Account(String, AccountAction),
}

/// What a decision about an account does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountAction {
    /// A password sign-in must also pass the account's second factor (TOTP or a recovery code),
    /// or a code mailed to it when it has none.
    StepUp,
    /// No sign-in at all; its sessions end and its owner is mailed.
    Lock,
}

impl AccountAction {
    /// `step_up` or `lock`.
    pub fn as_str(self) -> &'static str {
        match self {
            AccountAction::StepUp => "step_up",
            AccountAction::Lock => "lock",
        }
    }
}

impl DecisionScope {
    /// `ip` or `prefix`.
    pub fn kind(&self) -> &'static str {
        match self {
            DecisionScope::Ip(_) => "ip",
            DecisionScope::Prefix(_) => "prefix",
            DecisionScope::ApiKey(_) => "api_key",
            DecisionScope::Device(_) => "device",
            DecisionScope::Account(..) => "account",
        }
    }

    /// What a decision on it does: `suspend` an API key, `block` a client, `step_up` or `lock`
    /// an account.
    pub fn action(&self) -> &'static str {
        match self {
            DecisionScope::ApiKey(_) => "suspend",
            DecisionScope::Account(_, action) => action.as_str(),
            DecisionScope::Ip(_) | DecisionScope::Prefix(_) | DecisionScope::Device(_) => "block",
        }
    }

    /// The stored value: `203.0.113.7`, `203.0.113.0/24`, `2001:db8:1:2::/64`.
    pub fn value(&self) -> String {
        match self {
            DecisionScope::Ip(ip) => ip.to_string(),
            DecisionScope::Prefix(ip) => match prefix_of(*ip) {
                IpAddr::V4(net) => format!("{net}/24"),
                IpAddr::V6(net) => format!("{net}/64"),
            },
            DecisionScope::ApiKey(id) | DecisionScope::Account(id, _) | DecisionScope::Device(id) => id.clone(),
        }
    }

    /// Parses `kind` and `address` as the API takes them (`ip` with an address; `prefix` with an
    /// address or `a.b.c.0/24`, `x:x:x:x::/64`; `device` with the shop's id of a device).
    pub fn parse(kind: &str, value: &str) -> Result<Self, DomainError> {
        Self::parse_with_action(kind, value, None)
    }

    /// Parses a scope and the action asked for: an account takes `step_up` or `lock`; the other
    /// kinds have one action each, which may be named or left out.
    pub fn parse_with_action(kind: &str, value: &str, action: Option<&str>) -> Result<Self, DomainError> {
        let well_formed = |prefix: &str| {
            value.strip_prefix(prefix).is_some_and(|rest| {
                rest.len() == 26 && rest.bytes().all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b))
            })
        };
        if kind == "account" {
            if !well_formed("cus_") && !well_formed("stf_") {
                return Err(DomainError::invalid("/scope/address", "must be an account id (cus_… or stf_…)"));
            }
            let action = match action {
                Some("step_up") => AccountAction::StepUp,
                Some("lock") => AccountAction::Lock,
                _ => return Err(DomainError::invalid("/action", "must be step_up or lock for an account")),
            };
            return Ok(DecisionScope::Account(value.to_owned(), action));
        }
        let scope = Self::parse_plain(kind, value)?;
        if action.is_some_and(|a| a != scope.action()) {
            return Err(DomainError::invalid(
                "/action",
                "must be block for ip, prefix and device, suspend for api_key",
            ));
        }
        Ok(scope)
    }

    fn parse_plain(kind: &str, value: &str) -> Result<Self, DomainError> {
        match kind {
            "ip" => value
                .parse::<IpAddr>()
                .map(DecisionScope::Ip)
                .map_err(|_| DomainError::invalid("/scope/address", "must be an IPv4 or IPv6 address")),
            "prefix" => {
                let (address, bits) = value.split_once('/').unwrap_or((value, ""));
                let ip = address.parse::<IpAddr>().map_err(|_| {
                    DomainError::invalid("/scope/address", "must be an address or a /24 (IPv4) or /64 (IPv6) prefix")
                })?;
                let expected = if ip.is_ipv4() { "24" } else { "64" };
                if !bits.is_empty() && bits != expected {
                    return Err(DomainError::invalid("/scope/address", "prefixes are /24 for IPv4 and /64 for IPv6"));
                }
                Ok(DecisionScope::Prefix(ip))
            }
            "api_key" => {
                let well_formed = value.strip_prefix("key_").is_some_and(|rest| {
                    rest.len() == 26 && rest.bytes().all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b))
                });
                if !well_formed {
                    return Err(DomainError::invalid("/scope/address", "must be an API key id (key_…)"));
                }
                Ok(DecisionScope::ApiKey(value.to_owned()))
            }
            "device" => Ok(DecisionScope::Device(points::device_id("/scope/address", value)?)),
            _ => Err(DomainError::invalid("/scope/kind", "must be ip, prefix, api_key, account or device")),
        }
    }
}

/// The network of an address: its /24 (IPv4) or /64 (IPv6).
pub fn prefix_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            IpAddr::V4(std::net::Ipv4Addr::new(a, b, c, 0))
        }
        IpAddr::V6(v6) => {
            let mut octets = v6.octets();
            octets[8..].fill(0);
            IpAddr::V6(std::net::Ipv6Addr::from(octets))
        }
    }
}

/// How long the `strikes`-th decision within a day lasts: `base`, doubled per earlier strike,
/// at most [`MAX_BLOCK`].
pub fn escalated(base: Duration, strikes: u32) -> Duration {
    let factor = 1u32.checked_shl(strikes.saturating_sub(1).min(16)).unwrap_or(u32::MAX);
    base.saturating_mul(factor).min(MAX_BLOCK)
}

/// The decisions that hold, in memory, reloaded when the stored version changes.
#[derive(Debug, Default)]
pub struct DecisionBook {
    /// Decisions in force, by what they are about (`kind:address`): a check is a map lookup
    /// however many clients are blocked (every authenticated request checks its key).
    holding: RwLock<Arc<HashMap<String, Vec<DecisionRecord>>>>,
    version: std::sync::atomic::AtomicI64,
    /// Whether any decision in force is deployment-wide (else the edge skips its lookup).
    everywhere: std::sync::atomic::AtomicBool,
}

fn book_key(kind: &str, value: &str) -> String {
    format!("{kind}:{value}")
}

impl DecisionBook {
    fn about(&self, kind: &str, value: &str) -> Vec<DecisionRecord> {
        let Ok(holding) = self.holding.read() else { return Vec::new() };
        holding.get(&book_key(kind, value)).cloned().unwrap_or_default()
    }

    /// The decision that blocks a client (its address `ip`, its network, or its `device`) for
    /// `merchant` at `now` (its own or a deployment-wide one), if any: the one that ends last.
    pub fn blocking(
        &self,
        merchant: Option<&MerchantId>,
        ip: Option<IpAddr>,
        device: Option<&str>,
        now: Timestamp,
    ) -> Option<DecisionRecord> {
        let mut found = Vec::new();
        if let Some(ip) = ip {
            found.extend(self.about("ip", &ip.to_string()));
            found.extend(self.about("prefix", &DecisionScope::Prefix(ip).value()));
        }
        if let Some(device) = device {
            found.extend(self.about("device", device));
        }
        found
            .into_iter()
            .filter(|d| d.holds(now))
            .filter(|d| d.merchant.is_none() || d.merchant.as_deref() == merchant.map(MerchantId::as_str))
            .max_by_key(|d| d.until.unix_millis())
    }

    /// The decision of `merchant` that suspends its API key `key` at `now`, if any (a decision of
    /// another merchant naming the key suspends nothing).
    pub fn suspending(&self, merchant: &MerchantId, key: &str, now: Timestamp) -> Option<DecisionRecord> {
        self.about("api_key", key)
            .into_iter()
            .find(|d| d.merchant.as_deref() == Some(merchant.as_str()) && d.holds(now))
    }

    /// The decision of `merchant` about its account `account` with `action` that holds at
    /// `now`, if any.
    pub fn about_account(
        &self,
        merchant: &MerchantId,
        account: &str,
        action: AccountAction,
        now: Timestamp,
    ) -> Option<DecisionRecord> {
        self.about("account", account)
            .into_iter()
            .find(|d| d.merchant.as_deref() == Some(merchant.as_str()) && d.action == action.as_str() && d.holds(now))
    }

    fn replace(&self, decisions: Vec<DecisionRecord>, version: i64) {
        let mut by_scope: HashMap<String, Vec<DecisionRecord>> = HashMap::new();
        let everywhere = decisions.iter().any(|d| d.merchant.is_none());
        self.everywhere.store(everywhere, std::sync::atomic::Ordering::Release);
        for decision in decisions {
            by_scope.entry(book_key(&decision.scope_kind, &decision.scope_value)).or_default().push(decision);
        }
        if let Ok(mut holding) = self.holding.write() {
            *holding = Arc::new(by_scope);
        }
        self.version.store(version, std::sync::atomic::Ordering::Release);
    }
}

/// Who changes a decision.
#[derive(Debug, Clone, Copy)]
pub enum Decider<'a> {
    /// strongroom's detection.
    Detector,
    /// A staff member or API key (with `security:manage`), from an address: only decisions of
    /// its merchant.
    Caller(&'a Principal, Option<IpAddr>, Option<&'a str>),
    /// The operator at the command line (`strongroom decisions`): any merchant's decisions.
    Operator,
    /// The account's owner, by resetting its password: lifts the detector's decisions about the
    /// account.
    PasswordReset,
}

impl Decider<'_> {
    fn name(&self) -> String {
        match self {
            Decider::Detector => "detector".to_owned(),
            Decider::Caller(principal, _, _) => principal.actor_id().to_owned(),
            Decider::Operator => "operator".to_owned(),
            Decider::PasswordReset => "password_reset".to_owned(),
        }
    }

    /// The decision `id`, if this decider may change it (a caller: its merchant's only).
    async fn reach(&self, repo: &dyn DecisionsRepository, id: &str) -> Result<DecisionRecord, DomainError> {
        let found = repo.decision(id).await?.ok_or(DomainError::NotFound)?;
        match self {
            Decider::Caller(principal, _, _) if found.merchant.as_deref() != Some(principal.merchant_id().as_str()) => {
                Err(DomainError::NotFound)
            }
            _ => Ok(found),
        }
    }

    fn event(&self, action: &'static str, merchant: Option<&MerchantId>, outcome: Outcome) -> AuditEvent {
        match self {
            Decider::Detector | Decider::Operator | Decider::PasswordReset => {
                let event = AuditEvent::by(ActorKind::System, Some(self.name()), action, outcome);
                match merchant {
                    Some(m) => event.for_merchant(m),
                    None => event,
                }
            }
            Decider::Caller(principal, ip, request_id) => {
                principal.event(action, outcome).from_source(*ip, request_id.map(str::to_owned))
            }
        }
    }
}

/// A decision asked for.
#[derive(Debug, Clone)]
pub struct NewDecision {
    /// The merchant it protects (`None`: deployment-wide).
    pub merchant: Option<MerchantId>,
    /// About what.
    pub scope: DecisionScope,
    /// The detection point, or `manual`.
    pub reason: String,
    /// For people: what was seen, or the staff member's note.
    pub detail: Option<String>,
    /// The first decision's length (escalated per strike).
    pub base: Duration,
}

/// Detection's responses: decide, list, lift, extend; the book every check reads.
#[derive(Debug, Clone)]
pub struct DecisionService {
    repo: Arc<dyn DecisionsRepository>,
    book: Arc<DecisionBook>,
    counts: Arc<dyn SharedCounts>,
    /// Detections per point since this process started (the metrics).
    detections: Arc<[std::sync::atomic::AtomicU64; Point::ALL.len()]>,
    outbox: Outbox,
    audit: AuditLog,
    clock: Arc<dyn Clock>,
    entropy: Arc<dyn Entropy>,
    settings: DetectionSettings,
    /// Where the detector's decisions are reported as incidents (wired once at start).
    incidents: Arc<std::sync::OnceLock<incidents::IncidentService>>,
    /// What a decision about an account does to it (wired once at start).
    accounts: Arc<std::sync::OnceLock<Arc<dyn AccountResponses>>>,
    /// The GeoIP database impossible travel is detected with (wired once at start, if any).
    geo: Arc<std::sync::OnceLock<Arc<dyn travel::GeoLocator>>>,
}

/// What decisions about accounts need from the accounts: whether one is the shop's, and what a
/// lock does besides refusing sign-ins (end the sessions, mail the owner).
#[async_trait::async_trait]
pub trait AccountResponses: Send + Sync + std::fmt::Debug {
    /// Whether `account` (`cus_…` or `stf_…`) is an account of `merchant`.
    async fn exists(&self, merchant: &MerchantId, account: &str) -> Result<bool, DomainError>;
    /// The account of `decision` was locked: end its sessions and mail its owner.
    async fn locked(&self, merchant: &MerchantId, decision: &DecisionRecord) -> Result<(), DomainError>;
}

impl DecisionService {
    /// The service.
    pub fn new(
        repo: Arc<dyn DecisionsRepository>,
        counts: Arc<dyn SharedCounts>,
        outbox: Outbox,
        audit: AuditLog,
        clock: Arc<dyn Clock>,
        entropy: Arc<dyn Entropy>,
        settings: DetectionSettings,
    ) -> Self {
        Self {
            repo,
            book: Arc::new(DecisionBook::default()),
            counts,
            detections: Arc::new(std::array::from_fn(|_| std::sync::atomic::AtomicU64::new(0))),
            outbox,
            audit,
            clock,
            entropy,
            settings,
            incidents: Arc::default(),
            accounts: Arc::default(),
            geo: Arc::default(),
        }
    }

    /// Reports the detector's decisions to `incidents` from now on.
    pub fn set_incidents(&self, incidents: incidents::IncidentService) {
        let _ = self.incidents.set(incidents);
    }

    /// The incidents detections are reported to, once wired.
    pub fn incidents(&self) -> Option<&incidents::IncidentService> {
        self.incidents.get()
    }

    /// Reports a detection to the incidents (for detection points that hold this service): a
    /// failure is logged, never raised, so a detection point goes on either way.
    pub async fn detected(&self, detected: incidents::Detected) {
        let Some(incidents) = self.incidents.get() else { return };
        let point = detected.point.clone();
        if let Err(err) = incidents.detected(detected).await {
            tracing::warn!(error = %err, point = %point, "reporting a detection as an incident failed");
        }
    }

    /// The settings.
    pub fn settings(&self) -> &DetectionSettings {
        &self.settings
    }

    /// The time by this service's clock.
    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// Whether `email` is a decoy account's address (`[detection] decoy_accounts`, compared
    /// without case and surrounding space).
    pub fn is_decoy_account(&self, email: &str) -> bool {
        let email = email.trim();
        self.settings.decoy_accounts.iter().any(|decoy| decoy.eq_ignore_ascii_case(email))
    }

    /// Reports a sign-in for a decoy account from `ip` for `merchant`: counted after the answer
    /// (which the sign-in gave as for any address of no account), in a task of its own, so the
    /// answer neither waits for it nor differs in time.
    pub fn decoy_sign_in(&self, merchant: &MerchantId, ip: Option<IpAddr>) {
        let Some(ip) = ip else { return };
        let (service, merchant) = (self.clone(), merchant.clone());
        tokio::spawn(async move {
            let sighting = Sighting::new(Point::DecoyAccount, Some(&merchant), points::client_group(ip))
                .respond(points::client_scope(ip))
                .from_ip(Some(ip));
            service.sighted(sighting).await;
        });
    }

    /// Whether now (UTC) is outside the usual hours of reveals, when they are set.
    pub fn outside_usual_hours(&self) -> bool {
        let Some(hours) = self.settings.usual_hours else { return false };
        let minute = self.clock.now().unix_millis().div_euclid(60_000).rem_euclid(1440);
        !hours.contains(u32::try_from(minute).unwrap_or(0))
    }

    /// The decision that blocks a client (by its address `ip` or its `device`) for `merchant`
    /// now, if decisions are enforced.
    pub fn blocking(
        &self,
        merchant: Option<&MerchantId>,
        ip: Option<IpAddr>,
        device: Option<&str>,
    ) -> Option<DecisionRecord> {
        if !self.settings.enabled || (ip.is_none() && device.is_none()) {
            return None;
        }
        self.book.blocking(merchant, ip, device, self.clock.now())
    }

    /// The deployment-wide decision that blocks `ip` now (made by a decoy route or a forged
    /// cookie, or by the operator), if decisions are enforced: such a client is refused at the
    /// edge, before any route runs.
    pub fn blocking_everywhere(&self, ip: IpAddr) -> Option<DecisionRecord> {
        if !self.settings.enabled || !self.book.everywhere.load(std::sync::atomic::Ordering::Acquire) {
            return None;
        }
        self.book.blocking(None, Some(ip), None, self.clock.now()).filter(|d| d.merchant.is_none())
    }

    /// The decision that suspends this caller's API key now, if decisions are enforced (staff
    /// sessions and access tokens have no key to suspend).
    pub fn suspending(&self, principal: &Principal) -> Option<DecisionRecord> {
        if !self.settings.enabled {
            return None;
        }
        let key = principal.key_id()?;
        self.book.suspending(principal.merchant_id(), key.as_str(), self.clock.now())
    }

    /// Counts a lookup of a token that does not exist by `principal`'s API key (token
    /// guessing): the [`DetectionSettings::token_guesses`]-th distinct one in a window suspends
    /// the key on every node.
    pub async fn unknown_token(&self, principal: &Principal, token: &str) {
        let Some(key) = principal.key_id().map(|k| k.as_str().to_owned()) else { return };
        let sighting = Sighting::new(Point::TokenGuessing, Some(principal.merchant_id()), key.clone())
            .item(token)
            .respond(DecisionScope::ApiKey(key.clone()))
            .subject(key);
        self.sighted(sighting).await;
    }

    /// Deletes the detection counts whose windows are over, and the decisions that ended more
    /// than [`DECISION_RETENTION`] ago (a job; their history stays in the audit log); how many
    /// rows went.
    pub async fn purge(&self) -> Result<u64, DomainError> {
        let now = self.clock.now();
        let counts = self.counts.purge_counts(now.unix_millis()).await?;
        let limits = self.counts.purge_limits(now.unix_millis()).await?;
        let retention = i64::try_from(DECISION_RETENTION.as_millis()).unwrap_or(i64::MAX);
        let before = Timestamp::from_unix_millis(now.unix_millis().saturating_sub(retention));
        let decisions = self.repo.purge_decisions(before).await?;
        Ok(counts + limits + decisions)
    }

    /// Whether `actor` of `merchant` (`""`: none) has spent its allowance of the limit `name`,
    /// shared by every node (a GCRA in the shared store, refilled evenly over the period):
    /// `Some(seconds)` to wait when it has. With `take`, a unit is taken if one is left (the
    /// allowance counts failures, reveals …); without, only asked. Limits hold whether
    /// detection is on or not; a store that does not answer lets the request through (logged),
    /// like a count that failed.
    pub async fn limited(
        &self,
        name: &str,
        merchant: &str,
        actor: &str,
        allowance: Option<Allowance>,
        take: bool,
    ) -> Option<u32> {
        let allowance = allowance?;
        let key = format!("{name}:{merchant}:{actor}");
        let now = self.clock.now().unix_millis();
        let answer = if take {
            self.counts.take(&key, allowance, now).await
        } else {
            self.counts.peek(&key, allowance, now).await
        };
        match answer {
            Ok(0) => None,
            Ok(wait_ms) => Some(u32::try_from((wait_ms + 999) / 1000).unwrap_or(u32::MAX).max(1)),
            Err(err) => {
                tracing::warn!(error = %err, limit = name, "a shared rate limit could not be read; the request goes through");
                None
            }
        }
    }

    /// Detections per point since this process started.
    pub fn detections(&self) -> Vec<(&'static str, u64)> {
        Point::ALL
            .into_iter()
            .zip(self.detections.iter())
            .map(|(p, n)| (p.id(), n.load(std::sync::atomic::Ordering::Relaxed)))
            .collect()
    }

    /// Decisions in force on this node's book.
    pub fn decisions_in_force(&self) -> usize {
        self.book.holding.read().map(|h| h.values().map(Vec::len).sum()).unwrap_or(0)
    }

    /// Counts one observation of `part` of `point` (what a point deciding from two counts counts,
    /// such as the decline ratio's attempts and declines) by `actor` in the point's window, in the
    /// shared store: the window's tally, or `None` when the point is off or counting failed.
    /// `item`: counted distinctly (an observation repeated counts once in `distinct`).
    pub async fn count(
        &self,
        point: Point,
        part: &str,
        merchant: Option<&MerchantId>,
        actor: &str,
        item: Option<&[u8]>,
    ) -> Option<crate::ports::detection::Tally> {
        let rule = self.settings.rule(point);
        if !self.settings.enabled || rule.threshold == 0 {
            return None;
        }
        let (window_start, window_end) = self.window(rule);
        let counter = format!("{}.{part}:{}:{actor}", point.id(), merchant.map_or("", MerchantId::as_str));
        match self.counts.observe(&counter, window_start, item, window_end).await {
            Ok(tally) => Some(tally),
            Err(err) => {
                tracing::warn!(error = %err, point = point.id(), "counting a detection point failed");
                None
            }
        }
    }

    /// [`Self::count`] of the same `part` of `point` for several actors, in one round trip to
    /// the shared store: each actor's tally in order (`None` when the point is off or the count
    /// failed, logged).
    pub async fn count_all(
        &self,
        point: Point,
        part: &str,
        merchant: Option<&MerchantId>,
        actors: &[&str],
        item: Option<&[u8]>,
    ) -> Option<Vec<crate::ports::detection::Tally>> {
        let rule = self.settings.rule(point);
        if !self.settings.enabled || rule.threshold == 0 || actors.is_empty() {
            return None;
        }
        let (window_start, expires_at) = self.window(rule);
        let merchant = merchant.map_or("", MerchantId::as_str);
        let observations: Vec<Observation<'_>> = actors
            .iter()
            .map(|actor| Observation {
                counter: format!("{}.{part}:{merchant}:{actor}", point.id()),
                window_start,
                item,
                expires_at,
            })
            .collect();
        match self.counts.observe_many(&observations).await {
            Ok(tallies) => Some(tallies),
            Err(err) => {
                tracing::warn!(error = %err, point = point.id(), "counting a detection point failed");
                None
            }
        }
    }

    /// The start and end (Unix milliseconds) of the rule's window that holds now.
    fn window(&self, rule: points::Rule) -> (i64, i64) {
        let now = self.clock.now().unix_millis();
        let window = i64::try_from(rule.window.as_millis()).unwrap_or(i64::MAX).max(1);
        let window_start = now - now.rem_euclid(window);
        (window_start, window_start.saturating_add(window))
    }

    /// Counts what a detection point saw, in the shared store; the observation that crosses the
    /// point's threshold (one per actor and window, whichever node counts it) is a detection:
    /// logged, audited, counted in the metrics, and answered with a decision about
    /// `sighting.respond`. Returns the decision made, if any. A failure to count or decide is
    /// logged and changes nothing for the caller.
    pub async fn sighted(&self, sighting: Sighting<'_>) -> Option<DecisionRecord> {
        let (rule, observation) = self.observation(&sighting)?;
        let tally = match self
            .counts
            .observe(&observation.counter, observation.window_start, observation.item, observation.expires_at)
            .await
        {
            Ok(tally) => tally,
            Err(err) => {
                tracing::warn!(error = %err, point = sighting.point.id(), "counting a detection point failed");
                return None;
            }
        };
        self.judge(&sighting, rule, tally).await
    }

    /// [`Self::sighted`] of several sightings, counted together in one round trip to the
    /// shared store (a payment's signals: its address and device, each for several points).
    pub async fn sighted_all(&self, sightings: Vec<Sighting<'_>>) {
        let mut rules = Vec::with_capacity(sightings.len());
        let mut observations = Vec::with_capacity(sightings.len());
        let mut counted = Vec::with_capacity(sightings.len());
        for sighting in &sightings {
            if let Some((rule, observation)) = self.observation(sighting) {
                rules.push(rule);
                observations.push(observation);
                counted.push(sighting);
            }
        }
        if observations.is_empty() {
            return;
        }
        let tallies = match self.counts.observe_many(&observations).await {
            Ok(tallies) => tallies,
            Err(err) => {
                tracing::warn!(error = %err, "counting detection points failed");
                return;
            }
        };
        for ((sighting, rule), tally) in counted.into_iter().zip(rules).zip(tallies) {
            self.judge(sighting, rule, tally).await;
        }
    }

    /// The count a sighting adds to, with its point's rule; `None` when the point is off.
    fn observation<'s>(&self, sighting: &'s Sighting<'_>) -> Option<(points::Rule, Observation<'s>)> {
        let rule = self.settings.rule(sighting.point);
        if !self.settings.enabled || rule.threshold == 0 {
            return None;
        }
        let (window_start, expires_at) = self.window(rule);
        let counter =
            format!("{}:{}:{}", sighting.point.id(), sighting.merchant.map_or("", MerchantId::as_str), sighting.actor);
        let item = match sighting.point.counting() {
            points::Counting::Distinct => sighting.item.as_deref().or(Some(&[])),
            points::Counting::Hits => None,
        };
        Some((rule, Observation { counter, window_start, item, expires_at }))
    }

    /// Whether the tally a sighting got crosses its point's threshold (one observation per
    /// actor and window does): then it is a detection.
    async fn judge(&self, sighting: &Sighting<'_>, rule: points::Rule, tally: Tally) -> Option<DecisionRecord> {
        let threshold = u64::from(rule.threshold);
        let crossed = match sighting.point.counting() {
            points::Counting::Distinct => tally.new_item && tally.distinct == threshold,
            points::Counting::Hits => tally.hits == threshold,
        };
        if !crossed {
            return None;
        }
        let seen = match sighting.point.counting() {
            points::Counting::Distinct => tally.distinct,
            points::Counting::Hits => tally.hits,
        };
        self.detection(sighting, rule, seen).await
    }

    /// Counts a password sign-in of `merchant` (`failed` or not) for the shop's failure ratio:
    /// the first failure in a window that takes the shop's failures above
    /// [`DetectionSettings::failure_ratio_percent`] of at least
    /// [`DetectionSettings::failure_ratio_min_attempts`] attempts is a detection (an alert and
    /// an incident; nothing is blocked). Failures to count are logged.
    pub async fn sign_in_attempt(&self, merchant: &MerchantId, failed: bool) {
        let rule = self.settings.rule(Point::FailureRatio);
        if !self.settings.enabled || rule.threshold == 0 {
            return;
        }
        let now = self.clock.now().unix_millis();
        let window = i64::try_from(rule.window.as_millis()).unwrap_or(i64::MAX).max(1);
        let window_start = now - now.rem_euclid(window);
        let ends = window_start.saturating_add(window);
        let counter = |what: &str| format!("{}:{what}:{}", Point::FailureRatio.id(), merchant.as_str());
        let count = |name: String| async move {
            match self.counts.observe(&name, window_start, None, ends).await {
                Ok(tally) => Some(tally.hits),
                Err(err) => {
                    tracing::warn!(error = %err, "counting sign-in attempts failed");
                    None
                }
            }
        };
        let Some(attempts) = count(counter("attempts")).await else { return };
        if !failed {
            return;
        }
        let Some(failures) = count(counter("failures")).await else { return };
        if attempts < u64::from(self.settings.failure_ratio_min_attempts)
            || failures.saturating_mul(100) <= attempts.saturating_mul(u64::from(rule.threshold))
        {
            return;
        }
        // Above the ratio: the first observation to say so in this window is the detection.
        if count(counter("detected")).await != Some(1) {
            return;
        }
        let percent = failures.saturating_mul(100) / attempts.max(1);
        let sighting = Sighting::new(Point::FailureRatio, Some(merchant), merchant.as_str());
        self.detection(&sighting, rule, percent).await;
    }

    async fn detection(&self, sighting: &Sighting<'_>, rule: points::Rule, seen: u64) -> Option<DecisionRecord> {
        let point = sighting.point;
        if let Some(counter) = self.detections.get(point.index()) {
            counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        let minutes = rule.window.as_secs() / 60;
        let detail = match (&sighting.note, point.counting()) {
            (Some(note), _) => note.clone(),
            (None, points::Counting::Distinct) => {
                format!("{seen} distinct {} within {minutes} minutes", what_is_counted(point))
            }
            (None, points::Counting::Hits) => format!("{seen} {} within {minutes} minutes", what_is_counted(point)),
        };
        tracing::warn!(target: "strongroom::security", point = point.id(), severity = point.severity().as_str(),
            detail = %detail, "intrusion detected");
        let mut event = AuditEvent::by(
            ActorKind::System,
            Some("detector".to_owned()),
            "security.detected",
            Outcome::SuccessBecause(point.id().to_owned()),
        )
        .on("detection_point", point.id())
        .from_source(sighting.ip, None);
        if let Some(merchant) = sighting.merchant {
            event = event.for_merchant(merchant);
        }
        if let Err(err) = self.audit.record(event).await {
            tracing::warn!(error = %err, "auditing a detection failed");
        }
        let decision = match sighting.respond.clone() {
            Some(scope) => {
                let new = NewDecision {
                    merchant: if sighting.everywhere { None } else { sighting.merchant.cloned() },
                    scope,
                    reason: point.id().to_owned(),
                    detail: Some(detail.clone()),
                    base: rule.base,
                };
                match self.decide(Decider::Detector, new).await {
                    Ok(decision) => decision,
                    Err(err) => {
                        tracing::warn!(error = %err, point = point.id(), "deciding on a detection failed");
                        None
                    }
                }
            }
            None => None,
        };
        // Every detection goes to the incidents, which open or join one from its severity on.
        let mut subjects: Vec<incidents::Subject> = sighting
            .subjects
            .iter()
            .filter_map(|id| match id.split_once('_').map(|(prefix, _)| prefix) {
                Some("cus" | "stf") => Some(incidents::Subject::Account(id.clone())),
                Some("tok") => Some(incidents::Subject::Token(id.clone())),
                Some("key") => Some(incidents::Subject::ApiKey(id.clone())),
                _ => None,
            })
            .collect();
        if let Some(ip) = sighting.ip {
            subjects.push(incidents::Subject::Client(points::client_group(ip)));
        }
        let summary = match &decision {
            Some(d) => format!("{}: {detail}; {} {} {}", point.id(), d.action, d.scope_kind, d.scope_value),
            None => format!("{}: {detail}", point.id()),
        };
        self.detected(incidents::Detected {
            merchant: sighting.merchant.cloned(),
            point: point.id().to_owned(),
            severity: point.severity(),
            summary,
            decision: decision.as_ref().map(|d| d.id.clone()),
            subjects,
        })
        .await;
        decision
    }

    /// Reloads the book when the stored version changed (or `force`).
    pub async fn refresh(&self, force: bool) -> Result<(), DomainError> {
        let version = self.repo.decisions_version().await?;
        if !force && version == self.book.version.load(std::sync::atomic::Ordering::Acquire) {
            return Ok(());
        }
        let holding = self.repo.holding_decisions(self.clock.now()).await?;
        self.book.replace(holding, version);
        Ok(())
    }

    /// Keeps the book fresh until the process ends: every [`REFRESH`], and a full reload each
    /// minute (decisions that ended drop out).
    pub fn spawn_refresh(&self) -> tokio::task::JoinHandle<()> {
        let service = self.clone();
        tokio::spawn(async move {
            let mut tick = 0u32;
            loop {
                let force = tick.is_multiple_of(120);
                if let Err(err) = service.refresh(force).await {
                    tracing::warn!(error = %err, "reading the intrusion-detection decisions failed");
                }
                tick = tick.wrapping_add(1);
                tokio::time::sleep(REFRESH).await;
            }
        })
    }

    fn events_for(&self, decision: &DecisionRecord) -> serde_json::Value {
        json!({
            "object": "security_decision",
            "id": decision.id,
            "scope": {"kind": decision.scope_kind, "value": decision.scope_value},
            "action": decision.action,
            "reason": decision.reason,
            "until": decision.until.to_rfc3339(),
            "strikes": decision.strikes,
            "lifted_at": decision.lifted_at.map(Timestamp::to_rfc3339),
        })
    }

    async fn messages(
        &self,
        merchant: Option<&MerchantId>,
        event_type: &str,
        decision: &DecisionRecord,
    ) -> Result<Vec<OutboxMessage>, DomainError> {
        // To the shop's webhooks (its live endpoints) and the operator's alert webhook.
        self.outbox.event_messages(merchant, Mode::Live, event_type, self.events_for(decision), true).await
    }

    /// Decides about a scope unless a decision on it holds: `Ok(None)` when one holds (the first
    /// detection decided), else the new decision. Audited, with `security.decision_made` sent.
    pub async fn decide(&self, decider: Decider<'_>, new: NewDecision) -> Result<Option<DecisionRecord>, DomainError> {
        let now = self.clock.now();
        let merchant_key = new.merchant.as_ref().map_or("", MerchantId::as_str).to_owned();
        let (kind, value) = (new.scope.kind(), new.scope.value());
        if let (DecisionScope::Account(account, _), Some(merchant), Some(accounts)) =
            (&new.scope, &new.merchant, self.accounts.get())
            && !accounts.exists(merchant, account).await?
        {
            return Err(DomainError::invalid("/scope/address", "is not an account of this shop"));
        }
        let earlier = self.repo.decision_for(&merchant_key, kind, &value, new.scope.action()).await?;
        if earlier.as_ref().is_some_and(|d| d.holds(now)) {
            return Ok(None);
        }
        let memory = i64::try_from(STRIKE_MEMORY.as_millis()).unwrap_or(i64::MAX);
        let strikes = match &earlier {
            Some(d) if now.millis_since(d.created_at) < memory => d.strikes.saturating_add(1),
            _ => 1,
        };
        let decision = DecisionRecord {
            id: DecisionId::generate_at(self.entropy.as_ref(), now.unix_millis()).to_string(),
            merchant: new.merchant.as_ref().map(|m| m.as_str().to_owned()),
            scope_kind: kind.to_owned(),
            scope_value: value,
            action: new.scope.action().to_owned(),
            reason: new.reason,
            detail: new.detail,
            created_by: decider.name(),
            created_at: now,
            // A detection's block grows with each strike; a staff member's lasts what they asked.
            until: now.saturating_add(match decider {
                Decider::Detector => escalated(new.base, strikes),
                Decider::Caller(..) | Decider::Operator | Decider::PasswordReset => new.base.min(MAX_BLOCK),
            }),
            strikes,
            lifted_at: None,
            lifted_by: None,
            updated_at: now,
        };
        let events = self.messages(new.merchant.as_ref(), "security.decision_made", &decision).await?;
        if !self.repo.decide(&decision, &events).await? {
            return Ok(None);
        }
        self.outbox.wake().notify_one();
        tracing::warn!(target: "strongroom::security", decision = %decision.id, scope = decision.scope_kind,
            reason = %decision.reason, strikes = decision.strikes, "a client was blocked");
        let event = decider
            .event("security.decision_made", new.merchant.as_ref(), Outcome::SuccessBecause(decision.reason.clone()))
            .on("security_decision", &decision.id);
        self.audit.record(event).await?;
        self.refresh(true).await?;
        if let (DecisionScope::Account(_, AccountAction::Lock), Some(merchant), Some(accounts)) =
            (&new.scope, &new.merchant, self.accounts.get())
            && let Err(err) = accounts.locked(merchant, &decision).await
        {
            // The lock holds on every sign-in either way; the sessions and the mail are logged.
            tracing::warn!(error = %err, decision = %decision.id, "ending a locked account's sessions or mailing it failed");
        }
        Ok(Some(decision))
    }

    /// The decision of `merchant` about its account with `action` in force now, if decisions
    /// are enforced.
    pub fn account_decision(
        &self,
        merchant: &MerchantId,
        account: &str,
        action: AccountAction,
    ) -> Option<DecisionRecord> {
        if !self.settings.enabled {
            return None;
        }
        self.book.about_account(merchant, account, action, self.clock.now())
    }

    /// After the owner of `account` reset its password: lifts the detector's step-up and lock
    /// on it (a staff member's or the operator's decisions stay). How many were lifted.
    pub async fn lift_after_reset(&self, merchant: &MerchantId, account: &str) -> Result<u32, DomainError> {
        let mut lifted = 0;
        for action in [AccountAction::Lock, AccountAction::StepUp] {
            let found = self.repo.decision_for(merchant.as_str(), "account", account, action.as_str()).await?;
            let Some(decision) = found.filter(|d| d.created_by == "detector" && d.holds(self.clock.now())) else {
                continue;
            };
            match self.lift(Decider::PasswordReset, &decision.id).await {
                Ok(_) => lifted += 1,
                // Lifted or ended meanwhile: nothing left to lift.
                Err(DomainError::Conflict("decision_not_in_force", _)) => {}
                Err(err) => return Err(err),
            }
        }
        Ok(lifted)
    }

    /// Whether impossible travel is detected (decisions on, a GeoIP database wired).
    pub fn detects_travel(&self) -> bool {
        self.settings.enabled && self.settings.impossible_travel && self.geo.get().is_some()
    }

    /// Wires the GeoIP database impossible travel is detected with (once, at start).
    pub fn set_geo(&self, geo: Arc<dyn travel::GeoLocator>) {
        let _ = self.geo.set(geo);
    }

    /// A right password for `account` of `merchant` from `ip`, whose previous sign-in (its
    /// latest session) began at `previous`: when the two places are farther apart than
    /// [`travel::MAX_SPEED_KMH`] allows in the time between, a detection steps the account up
    /// (so this sign-in, too, must pass a second factor). Off without a GeoIP database.
    pub async fn signed_in_from(
        &self,
        merchant: &MerchantId,
        account: &str,
        previous: Option<(IpAddr, Timestamp)>,
        ip: Option<IpAddr>,
    ) {
        let (Some(geo), Some((before, before_at)), Some(ip)) = (self.geo.get(), previous, ip) else { return };
        if !self.settings.impossible_travel || before == ip {
            return;
        }
        let (Some(from), Some(to)) = (geo.locate(before), geo.locate(ip)) else { return };
        let Some(km) = travel::impossible(from, before_at, to, self.clock.now()) else { return };
        tracing::info!(target: "strongroom::security", distance_km = km.round(), "impossible travel between two sign-ins");
        let sighting = Sighting::new(Point::ImpossibleTravel, Some(merchant), account)
            .respond(DecisionScope::Account(account.to_owned(), AccountAction::StepUp))
            .from_ip(Some(ip))
            .subject(account);
        self.sighted(sighting).await;
    }

    /// Wires what locking an account does to the accounts (once, at start).
    pub fn set_accounts(&self, accounts: Arc<dyn AccountResponses>) {
        let _ = self.accounts.set(accounts);
    }

    /// Reports a decision of the detector as a detection to the incidents (a failure is
    /// logged: the decision holds either way).
    /// One decision the caller may see: its merchant's or a deployment-wide one.
    pub async fn decision(&self, merchant: &MerchantId, id: &str) -> Result<DecisionRecord, DomainError> {
        match self.repo.decision(id).await? {
            Some(d) if d.merchant.is_none() || d.merchant.as_deref() == Some(merchant.as_str()) => Ok(d),
            _ => Err(DomainError::NotFound),
        }
    }

    /// A merchant's and the deployment-wide decisions, newest first (`holding_only`: those in
    /// force now).
    pub async fn list(
        &self,
        merchant: &MerchantId,
        holding_only: bool,
        limit: Option<u32>,
    ) -> Result<Vec<DecisionRecord>, DomainError> {
        let limit = crate::payments::page_limit(limit)?;
        Ok(self.repo.list_decisions(merchant.as_str(), holding_only, self.clock.now(), limit).await?)
    }

    /// Decisions in force now, of every merchant (the operator's view), newest change first.
    pub async fn holding(&self) -> Result<Vec<DecisionRecord>, DomainError> {
        let mut found = self.repo.holding_decisions(self.clock.now()).await?;
        found.sort_by_key(|d| std::cmp::Reverse(d.updated_at.unix_millis()));
        Ok(found)
    }

    /// Lifts a decision in force (a caller: of its own merchant): of concurrent lifts one does
    /// it, the others answer `decision_not_in_force`.
    pub async fn lift(&self, decider: Decider<'_>, id: &str) -> Result<DecisionRecord, DomainError> {
        let mut decision = decider.reach(self.repo.as_ref(), id).await?;
        let now = self.clock.now();
        decision.lifted_at = Some(now);
        decision.lifted_by = Some(decider.name());
        let owner = owner_of(&decision)?;
        let owner = owner.as_ref();
        let events = self.messages(owner, "security.decision_lifted", &decision).await?;
        if !self.repo.lift_decision(id, now, &decider.name(), &events).await? {
            return Err(not_in_force());
        }
        self.outbox.wake().notify_one();
        let event = decider.event("security.decision_lifted", owner, Outcome::Success).on("security_decision", id);
        self.audit.record(event).await?;
        self.refresh(true).await?;
        Ok(decision)
    }

    /// Moves the end of a decision in force to `until` (later or earlier, at most
    /// [`MAX_BLOCK`] from now).
    pub async fn extend(
        &self,
        decider: Decider<'_>,
        id: &str,
        duration: Duration,
    ) -> Result<DecisionRecord, DomainError> {
        if duration.is_zero() || duration > MAX_BLOCK {
            return Err(DomainError::invalid("/duration_seconds", "must be 1 to 86400 seconds"));
        }
        let mut decision = decider.reach(self.repo.as_ref(), id).await?;
        let now = self.clock.now();
        let until = now.saturating_add(duration);
        if !self.repo.extend_decision(id, until, now).await? {
            return Err(not_in_force());
        }
        decision.until = until;
        decision.updated_at = now;
        let owner = owner_of(&decision)?;
        let owner = owner.as_ref();
        let event = decider
            .event("security.decision_extended", owner, Outcome::SuccessBecause(format!("{}s", duration.as_secs())))
            .on("security_decision", id);
        self.audit.record(event).await?;
        self.refresh(true).await?;
        Ok(decision)
    }
}

/// The merchant a stored decision protects (`None`: deployment-wide).
fn owner_of(decision: &DecisionRecord) -> Result<Option<MerchantId>, DomainError> {
    decision.merchant.as_deref().map(MerchantId::parse).transpose().map_err(|_| DomainError::Integrity)
}

/// The answer to a client a decision blocks: `429 client_blocked`, with the seconds until the
/// decision ends as `Retry-After`.
pub fn blocked_error(decision: &DecisionRecord, now: Timestamp) -> DomainError {
    let wait = decision.until.millis_since(now).max(1000) / 1000;
    DomainError::Throttled { code: "client_blocked", retry_after: Some(u32::try_from(wait).unwrap_or(u32::MAX)) }
}

/// What a point counts, for the decision's detail.
fn what_is_counted(point: Point) -> &'static str {
    match point {
        Point::CredentialStuffing => "accounts failed to sign in from one client",
        Point::NetworkStuffing => "accounts failed to sign in from the addresses of one /24",
        Point::DeviceStuffing => "accounts failed to sign in from one device",
        Point::UnknownAccounts => "email addresses of no account tried from one client",
        Point::CodeGuessing => "wrong one-time or recovery codes for one account",
        Point::CardTesting => "payments refused as card testing from one client",
        Point::DeclineRatio => "clients with most payments declined",
        Point::SmallAmountCards => "cards paying small amounts from one client",
        Point::IinCluster => "cards sharing their first six digits from one client",
        Point::IdenticalAmounts => "cards paying one identical amount from one client",
        Point::Enumeration => "objects not found or not allowed for one API key",
        Point::TokenGuessing => "lookups of tokens that do not exist by one API key",
        Point::ApiKeyProbing => "API keys that do not exist presented by one client",
        Point::TamperedCredential => "credentials failing verification from one client",
        Point::ReplayedToken => "single-use tokens presented again from one client",
        Point::DecoyAccount => "sign-ins for a decoy account",
        Point::DecoyApiKey => "requests presenting a decoy API key",
        Point::DecoyRoute => "requests for a decoy route",
        Point::UnusualRequest => "requests with a method or body type no client sends",
        Point::UnusualRequestWithKey => "requests with a method or body type no client sends, by one API key",
        Point::CanaryToken => "uses of a canary token",
        Point::InsiderReveals => "reveals by one caller",
        Point::OffHoursReveals => "reveals outside the usual hours by one caller",
        Point::PasswordGuessing => "wrong passwords for one account",
        Point::FailureRatio => "failed sign-ins per 100 attempts of the shop",
        Point::ImpossibleTravel => "sign-ins of one account from places too far apart for the time between",
    }
}

fn not_in_force() -> DomainError {
    DomainError::Conflict("decision_not_in_force", "the decision was lifted or has ended")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_are_normalised() {
        let ip: IpAddr = "203.0.113.77".parse().unwrap_or(IpAddr::from([0, 0, 0, 0]));
        assert_eq!(DecisionScope::Prefix(ip).value(), "203.0.113.0/24");
        assert_eq!(DecisionScope::Ip(ip).value(), "203.0.113.77");
        let v6: IpAddr = "2001:db8:1:2:3:4:5:6".parse().unwrap_or(IpAddr::from([0u16; 8]));
        assert_eq!(DecisionScope::Prefix(v6).value(), "2001:db8:1:2::/64");
        assert!(DecisionScope::parse("prefix", "203.0.113.0/16").is_err());
        assert!(DecisionScope::parse("ip", "nope").is_err());
        assert!(DecisionScope::parse("asn", "1").is_err());
        assert_eq!(
            DecisionScope::parse("prefix", "203.0.113.0/24").map(|s| s.value()).ok().as_deref(),
            Some("203.0.113.0/24")
        );
        let device = DecisionScope::parse_with_action("device", "fp_8c1e0a", Some("block"));
        assert_eq!(
            device.as_ref().map(|s| (s.kind(), s.value(), s.action())).ok(),
            Some(("device", "fp_8c1e0a".to_owned(), "block"))
        );
        assert!(DecisionScope::parse_with_action("device", "fp_8c1e0a", Some("suspend")).is_err());
        for bad in ["", "tab\there", "4242 4242 4242 4242", &"d".repeat(129)] {
            assert!(DecisionScope::parse("device", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_book_blocks_a_client_by_address_network_or_device() {
        let book = DecisionBook::default();
        let now = Timestamp::from_unix_millis(1_800_000_000_000);
        let merchant = MerchantId::parse("mer_aaaaaaaaaaaaaaaaaaaaaaaaaa").ok();
        let decision = |kind: &str, value: &str, merchant: Option<&str>| DecisionRecord {
            id: format!("dec_{kind}"),
            merchant: merchant.map(str::to_owned),
            scope_kind: kind.to_owned(),
            scope_value: value.to_owned(),
            action: "block".to_owned(),
            reason: "manual".to_owned(),
            detail: None,
            created_by: "operator".to_owned(),
            created_at: now,
            until: now.saturating_add(Duration::from_secs(60)),
            strikes: 1,
            lifted_at: None,
            lifted_by: None,
            updated_at: now,
        };
        let shop = merchant.as_ref().map(MerchantId::as_str);
        book.replace(vec![decision("device", "fp_1", shop), decision("prefix", "203.0.113.0/24", shop)], 1);
        let ip = |text: &str| text.parse::<IpAddr>().ok();
        let found = |ip, device| book.blocking(merchant.as_ref(), ip, device, now).map(|d| d.id);
        assert_eq!(found(ip("198.51.100.1"), Some("fp_1")).as_deref(), Some("dec_device"));
        assert_eq!(found(None, Some("fp_1")).as_deref(), Some("dec_device"));
        assert_eq!(found(ip("203.0.113.9"), Some("fp_2")).as_deref(), Some("dec_prefix"));
        assert_eq!(found(ip("198.51.100.1"), Some("fp_2")), None);
        assert_eq!(found(None, None), None);
        // Another merchant's device decision blocks nothing here; it ends when it ends.
        let other = MerchantId::parse("mer_bbbbbbbbbbbbbbbbbbbbbbbbbb").ok();
        assert_eq!(book.blocking(other.as_ref(), None, Some("fp_1"), now), None);
        let later = now.saturating_add(Duration::from_secs(61));
        assert_eq!(book.blocking(merchant.as_ref(), None, Some("fp_1"), later), None);
    }

    #[test]
    fn strikes_double_the_block_up_to_a_day() {
        let base = Duration::from_secs(900);
        assert_eq!(escalated(base, 1), base);
        assert_eq!(escalated(base, 2), Duration::from_secs(1800));
        assert_eq!(escalated(base, 3), Duration::from_secs(3600));
        assert_eq!(escalated(base, 40), MAX_BLOCK);
        assert_eq!(escalated(base, 0), base);
    }
}
