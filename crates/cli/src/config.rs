//! Configuration: defaults, then `strongroom.toml`, then `STRONGROOM_*` variables (nested keys with
//! `__`, e.g. `STRONGROOM_SERVER__LISTEN`), then `STRONGROOM_*_FILE` variables whose file holds the
//! value (for secrets), then command-line flags. Loaded once, in the binary; unknown keys are
//! rejected and every error names the key.
//! Must never: print or log a secret value (serializing a [`Config`] masks them).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use figment::Figment;
use figment::providers::{Format, Serialized, Toml};
use ipnet::IpNet;
use serde::{Deserialize, Serialize, Serializer};
use strongroom_types::Secret;

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Which requests get an access-log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum AccessLogConfig {
    /// Every request.
    All,
    /// 4xx, 5xx and slow requests.
    #[default]
    Errors,
    /// Only server failures.
    None,
}

/// How the API listener speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TlsMode {
    /// strongroom terminates TLS itself (the default).
    Builtin,
    /// A load balancer in front terminates TLS; the API listener speaks plain HTTP.
    /// Only for deployments where the hop to strongroom is private.
    TerminatedUpstream,
}

/// The whole configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where the database, root key and TLS files live. Default `./strongroom-data`.
    pub data_dir: PathBuf,
    /// `sqlite://…` or `postgres://…`. Default: SQLite in the data directory.
    #[serde(serialize_with = "masked_url", skip_serializing_if = "Option::is_none")]
    pub database_url: Option<Secret<String>>,
    /// `text` or `json`.
    pub log_format: LogFormat,
    /// A tracing filter, e.g. `info` or `info,strongroom_http=debug`.
    pub log_level: String,
    /// Which requests get an access-log line: `all`, `errors` (4xx, 5xx and requests slower than a
    /// second; the default) or `none`. Server failures are always logged.
    pub access_log: AccessLogConfig,
    /// Listeners and HTTP limits.
    pub server: ServerConfig,
    /// TLS certificate.
    pub tls: TlsConfig,
    /// Metrics.
    pub metrics: MetricsConfig,
    /// Database pool.
    pub database: DatabaseConfig,
    /// API keys.
    pub api_keys: ApiKeysConfig,
    /// Root key provider.
    pub kms: KmsConfig,
    /// Audit log.
    pub audit: AuditConfig,
    /// The vault.
    pub vault: VaultConfig,
    /// Security alerts.
    pub alerts: AlertsConfig,
    /// Every outbound HTTP call (the shop's webhooks, the alert webhook, forwards).
    pub outbound: OutboundConfig,
    /// The detokenize-and-forward proxy (`POST /v1/forward`).
    pub forward: ForwardConfig,
    /// The job runner.
    pub jobs: JobsConfig,
    /// Customer identity.
    pub identity: IdentityConfig,
    /// Breached-password checks (customers and staff).
    pub passwords: PasswordsConfig,
    /// Staff accounts.
    pub staff: StaffConfig,
    /// Passkeys (WebAuthn).
    pub webauthn: WebauthnConfig,
    /// The hosted account pages.
    pub pages: PagesConfig,
    /// Outgoing mail.
    pub mail: MailConfig,
    /// OAuth 2.0 access tokens for services.
    pub oauth: OAuthConfig,
    /// Payments.
    pub payments: PaymentsConfig,
    /// Intrusion detection's responses.
    pub detection: DetectionConfig,
}

/// `[detection]`: intrusion detection's points and responses. Durations are first responses,
/// doubled each time within a day, up to a day.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DetectionConfig {
    /// Make and enforce decisions about clients and keys (blocks, suspensions). Default true.
    pub enabled: bool,
    /// Accounts failed to sign in from one client within 15 minutes that block the client for
    /// the merchant whose customers it tried (credential stuffing); 0: never. Default 10.
    pub stuffing_accounts: u32,
    /// How long a credential-stuffing client (or network) is first blocked. Default 15m.
    #[serde(with = "humantime_serde")]
    pub stuffing_block: Duration,
    /// Accounts failed to sign in from the addresses of one IPv4 /24 within 15 minutes that
    /// block the /24 for that merchant (credential stuffing spread over a network); 0: never.
    /// Default 50.
    pub stuffing_network_accounts: u32,
    /// Accounts failed to sign in from one device (`client.device`, the shop's id of it) within
    /// 15 minutes, from any addresses, that block the device for that merchant; 0: never.
    /// Default 10.
    pub stuffing_device_accounts: u32,
    /// Distinct email addresses that belong to no account, tried from one client within an hour,
    /// that block the client for that merchant (unknown accounts); 0: never. Default 20.
    pub unknown_accounts: u32,
    /// How long an unknown-accounts client is first blocked. Default 1h.
    #[serde(with = "humantime_serde")]
    pub unknown_accounts_block: Duration,
    /// Wrong one-time or recovery codes for one account within 15 minutes that block the client
    /// giving them; 0: never. Default 10.
    pub code_guesses: u32,
    /// How long a code-guessing client is first blocked. Default 1h.
    #[serde(with = "humantime_serde")]
    pub code_guessing_block: Duration,
    /// How long a client whose payment the fraud checks refused as card testing may not pay.
    /// Default 1h.
    #[serde(with = "humantime_serde")]
    pub card_testing_block: Duration,
    /// The share of one client's payments within an hour, in percent, that the gateway declined
    /// which blocks the client's payments (for `card_testing_block`), judged from
    /// `decline_ratio_attempts` payments on; 0: never. Default 80.
    pub decline_ratio_percent: u32,
    /// The fewest payments of a client within an hour the decline ratio is judged on; 0: never.
    /// Default 10.
    pub decline_ratio_attempts: u32,
    /// Distinct cards paying a small amount (`payments.fraud.small_amounts`) from one client
    /// within an hour that block its payments; 0: never. Default 5.
    pub small_amount_cards: u32,
    /// Distinct cards sharing their first six digits from one client within an hour that block
    /// its payments; 0: never. Default 5.
    pub iin_cluster_cards: u32,
    /// Distinct cards paying one identical amount from one client within an hour that block its
    /// payments; 0: never. Default 10.
    pub identical_amount_cards: u32,
    /// Distinct objects one API key asked for within 10 minutes and got 404 or 403 for, that
    /// suspend the key (enumeration); 0: never. Default 50.
    pub enumeration_ids: u32,
    /// How long an enumerating key is first suspended. Default 1h.
    #[serde(with = "humantime_serde")]
    pub enumeration_suspension: Duration,
    /// Lookups of distinct tokens that do not exist by one API key within 10 minutes that
    /// suspend the key (token guessing); 0: never. Default 100.
    pub token_guesses: u32,
    /// How long a token-guessing key is first suspended. Default 15m.
    #[serde(with = "humantime_serde")]
    pub guessing_suspension: Duration,
    /// Distinct API keys that do not exist (or malformed credentials) presented by one client
    /// within 10 minutes that block the client everywhere (API key probing); 0: never.
    /// Default 20.
    pub api_key_probes: u32,
    /// How long an API-key-probing client is first blocked. Default 1h.
    #[serde(with = "humantime_serde")]
    pub api_key_probing_block: Duration,
    /// Session cookies or signed tokens failing verification from one client within 10 minutes
    /// that block the client everywhere; 0: never. Default 10.
    pub tampered_credentials: u32,
    /// How long a tampering client is first blocked. Default 1h.
    #[serde(with = "humantime_serde")]
    pub tampering_block: Duration,
    /// Single-use tokens (e-mail verification, password-reset and staff invitation links,
    /// step-up proofs) presented again after use, from one client within an hour, that block the
    /// client for the merchant; 0: never. Default 5.
    pub replayed_tokens: u32,
    /// How long a replaying client is first blocked. Default 1h.
    #[serde(with = "humantime_serde")]
    pub replay_block: Duration,
    /// Decoy routes (paths no client of strongroom's calls): a request for one blocks the client
    /// everywhere. Default `/admin`, `/wp-login.php`, `/.env`, `/.git/config`, `/phpmyadmin`.
    pub decoy_paths: Vec<String>,
    /// How long a decoy-route (or decoy-account) client is blocked. Default 24h.
    #[serde(with = "humantime_serde")]
    pub decoy_block: Duration,
    /// Decoy accounts: e-mail addresses no customer has (at a domain the shop owns); a sign-in
    /// for one answers as a wrong password does and blocks the client for that merchant.
    /// Default none.
    pub decoy_accounts: Vec<String>,
    /// Requests with a method (`TRACE`, `CONNECT`, WebDAV's) or a body type (XML, serialised
    /// Java) no client of strongroom's sends, from one client within an hour, that block the
    /// client everywhere; with a valid API key counted per key, and an alert only; 0: never.
    /// Default 3.
    pub unusual_requests: u32,
    /// How long an unusual-request client is first blocked. Default 1h.
    #[serde(with = "humantime_serde")]
    pub unusual_request_block: Duration,
    /// Reveals (card data, personal data) by one API key within an hour that suspend it (by a
    /// staff member: an alert and an incident); 0: never. Default 500.
    pub reveals_per_hour: u32,
    /// How long an insider-reveal key is first suspended. Default 1h.
    #[serde(with = "humantime_serde")]
    pub insider_suspension: Duration,
    /// The usual hours of reveals, in UTC (`"07:00-20:00"`; `"22:00-06:00"` spans midnight): a
    /// reveal of card or personal data by a staff member or an API key outside them is an alert
    /// and an incident, one per caller and day, nobody suspended. Default unset: never.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usual_hours: Option<String>,
    /// Wrong passwords for one customer account within an hour, from any clients, that make its
    /// password sign-ins pass a second factor (a step-up decision); 0: never. Default 10.
    pub password_guesses: u32,
    /// How long a first password-guessing step-up lasts. Default 24h.
    #[serde(with = "humantime_serde")]
    pub password_guessing_step_up: Duration,
    /// Failed customer sign-ins per 100 attempts of one shop within 15 minutes above which an
    /// alert (and an incident) is raised; nothing is blocked. 0: never. Default 80.
    pub failure_ratio_percent: u32,
    /// Attempts of the shop within the 15 minutes before the ratio counts. Default 100.
    pub failure_ratio_min_attempts: u32,
    /// A GeoIP database in MaxMind's format (`.mmdb`, read at start, never downloaded): with it,
    /// two sign-ins of one account from places too far apart for the time between step the
    /// account up (impossible travel). Unset (the default): that point is off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub geoip_database: Option<std::path::PathBuf>,
    /// How long a first impossible-travel step-up lasts. Default 24h.
    #[serde(with = "humantime_serde")]
    pub travel_step_up: Duration,
    /// Count in Redis (`redis://host:6379/0` in the clear: loopback or a private network;
    /// `rediss://host:6380/0` over TLS) instead of the database. Unset (the default): the
    /// database counts. A secret when it holds a password (use
    /// `STRONGROOM_DETECTION__REDIS_URL_FILE`).
    #[serde(serialize_with = "masked_url", skip_serializing_if = "Option::is_none")]
    pub redis_url: Option<Secret<String>>,
    /// PEM certificates a `rediss://` server's certificate is verified against (its CA), instead
    /// of the machine's trusted roots. Default none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_ca_file: Option<std::path::PathBuf>,
    /// Detections at or above this severity (`low`, `medium`, `high`, `critical`) open an
    /// incident, or join the one open. Default `medium`.
    pub incident_severity: strongroom_domain::detection::incidents::Severity,
    /// Addresses that get every security alert mail (detections at or above
    /// `incident_severity`, incidents opened), besides each shop's staff with the `security`
    /// role. Default none.
    pub alert_emails: Vec<String>,
    /// Detection alert mails per shop and hour (incidents opened are always mailed). Default 20.
    pub alert_mails_per_hour: u32,
}

impl Default for DetectionConfig {
    fn default() -> Self {
        let d = strongroom_domain::detection::DetectionSettings::default();
        Self {
            enabled: d.enabled,
            stuffing_accounts: d.stuffing_accounts,
            stuffing_block: d.stuffing_block,
            stuffing_network_accounts: d.stuffing_network_accounts,
            stuffing_device_accounts: d.stuffing_device_accounts,
            unknown_accounts: d.unknown_accounts,
            unknown_accounts_block: d.unknown_accounts_block,
            code_guesses: d.code_guesses,
            code_guessing_block: d.code_guessing_block,
            card_testing_block: d.card_testing_block,
            decline_ratio_percent: d.decline_ratio_percent,
            decline_ratio_attempts: d.decline_ratio_attempts,
            small_amount_cards: d.small_amount_cards,
            iin_cluster_cards: d.iin_cluster_cards,
            identical_amount_cards: d.identical_amount_cards,
            enumeration_ids: d.enumeration_ids,
            enumeration_suspension: d.enumeration_suspension,
            token_guesses: d.token_guesses,
            guessing_suspension: d.guessing_suspension,
            api_key_probes: d.api_key_probes,
            api_key_probing_block: d.api_key_probing_block,
            tampered_credentials: d.tampered_credentials,
            tampering_block: d.tampering_block,
            replayed_tokens: d.replayed_tokens,
            replay_block: d.replay_block,
            decoy_paths: d.decoy_paths,
            decoy_block: d.decoy_block,
            decoy_accounts: d.decoy_accounts,
            unusual_requests: d.unusual_requests,
            unusual_request_block: d.unusual_request_block,
            reveals_per_hour: d.reveals_per_hour,
            insider_suspension: d.insider_suspension,
            usual_hours: None,
            password_guesses: d.password_guesses,
            password_guessing_step_up: d.password_guessing_step_up,
            failure_ratio_percent: d.failure_ratio_percent,
            failure_ratio_min_attempts: d.failure_ratio_min_attempts,
            geoip_database: None,
            travel_step_up: d.travel_step_up,
            redis_url: None,
            redis_ca_file: None,
            incident_severity: strongroom_domain::detection::incidents::IncidentSettings::default().threshold,
            alert_emails: Vec::new(),
            alert_mails_per_hour: strongroom_domain::detection::alert_mail::AlertMailSettings::default().per_hour,
        }
    }
}

impl DetectionConfig {
    /// The domain's settings.
    pub fn settings(&self) -> strongroom_domain::detection::DetectionSettings {
        strongroom_domain::detection::DetectionSettings {
            enabled: self.enabled,
            stuffing_accounts: self.stuffing_accounts,
            stuffing_block: self.stuffing_block,
            stuffing_network_accounts: self.stuffing_network_accounts,
            stuffing_device_accounts: self.stuffing_device_accounts,
            unknown_accounts: self.unknown_accounts,
            unknown_accounts_block: self.unknown_accounts_block,
            code_guesses: self.code_guesses,
            code_guessing_block: self.code_guessing_block,
            card_testing_block: self.card_testing_block,
            decline_ratio_percent: self.decline_ratio_percent,
            decline_ratio_attempts: self.decline_ratio_attempts,
            small_amount_cards: self.small_amount_cards,
            iin_cluster_cards: self.iin_cluster_cards,
            identical_amount_cards: self.identical_amount_cards,
            enumeration_ids: self.enumeration_ids,
            enumeration_suspension: self.enumeration_suspension,
            token_guesses: self.token_guesses,
            guessing_suspension: self.guessing_suspension,
            api_key_probes: self.api_key_probes,
            api_key_probing_block: self.api_key_probing_block,
            tampered_credentials: self.tampered_credentials,
            tampering_block: self.tampering_block,
            replayed_tokens: self.replayed_tokens,
            replay_block: self.replay_block,
            decoy_paths: self.decoy_paths.clone(),
            decoy_block: self.decoy_block,
            decoy_accounts: self.decoy_accounts.iter().map(|a| a.trim().to_lowercase()).collect(),
            unusual_requests: self.unusual_requests,
            unusual_request_block: self.unusual_request_block,
            reveals_per_hour: self.reveals_per_hour,
            insider_suspension: self.insider_suspension,
            usual_hours: self.usual_hours.as_deref().and_then(strongroom_domain::detection::points::UsualHours::parse),
            password_guesses: self.password_guesses,
            password_guessing_step_up: self.password_guessing_step_up,
            failure_ratio_percent: self.failure_ratio_percent,
            failure_ratio_min_attempts: self.failure_ratio_min_attempts,
            impossible_travel: self.geoip_database.is_some(),
            travel_step_up: self.travel_step_up,
        }
    }

    /// The first problem, as (field, message).
    fn problem(&self) -> Option<(&'static str, &'static str)> {
        let durations = [
            ("detection.stuffing_block", self.stuffing_block),
            ("detection.unknown_accounts_block", self.unknown_accounts_block),
            ("detection.code_guessing_block", self.code_guessing_block),
            ("detection.card_testing_block", self.card_testing_block),
            ("detection.enumeration_suspension", self.enumeration_suspension),
            ("detection.guessing_suspension", self.guessing_suspension),
            ("detection.api_key_probing_block", self.api_key_probing_block),
            ("detection.tampering_block", self.tampering_block),
            ("detection.replay_block", self.replay_block),
            ("detection.decoy_block", self.decoy_block),
            ("detection.unusual_request_block", self.unusual_request_block),
            ("detection.insider_suspension", self.insider_suspension),
            ("detection.password_guessing_step_up", self.password_guessing_step_up),
            ("detection.travel_step_up", self.travel_step_up),
        ];
        for (field, duration) in durations {
            if duration < Duration::from_secs(60) || duration > strongroom_domain::detection::MAX_BLOCK {
                return Some((field, "must be between 1m and 24h"));
            }
        }
        if self
            .usual_hours
            .as_deref()
            .is_some_and(|h| strongroom_domain::detection::points::UsualHours::parse(h).is_none())
        {
            return Some((
                "detection.usual_hours",
                "must be HH:MM-HH:MM in UTC (00:00 to 24:00), start and end differing",
            ));
        }
        for address in &self.decoy_accounts {
            let address = address.trim();
            let well_formed = address.len() <= 254
                && address.split_once('@').is_some_and(|(local, domain)| !local.is_empty() && domain.contains('.'))
                && !address.contains(char::is_whitespace);
            if !well_formed {
                return Some(("detection.decoy_accounts", "each must be an e-mail address"));
            }
        }
        if self.decline_ratio_percent > 100 {
            return Some(("detection.decline_ratio_percent", "must be 0 to 100"));
        }
        if self.failure_ratio_percent > 99 {
            return Some(("detection.failure_ratio_percent", "must be 0 (off) to 99"));
        }
        if self.failure_ratio_min_attempts < 10 {
            return Some(("detection.failure_ratio_min_attempts", "must be at least 10"));
        }
        for email in &self.alert_emails {
            let (local, domain) = email.split_once('@').unwrap_or_default();
            if local.is_empty()
                || !domain.contains('.')
                || email.len() > 254
                || email.chars().any(|c| c.is_control() || c.is_whitespace() || c == ',' || c == '<' || c == '>')
            {
                return Some(("detection.alert_emails", "each must be one plain email address (name@example.com)"));
            }
        }
        let url = self.redis_url.as_ref().map(|url| url.expose().as_str());
        if url.is_some_and(|url| !url.starts_with("redis://") && !url.starts_with("rediss://")) {
            return Some(("detection.redis_url", "must be a redis:// or rediss:// (TLS) URL"));
        }
        if self.redis_ca_file.is_some() && !url.is_some_and(|url| url.starts_with("rediss://")) {
            return Some(("detection.redis_ca_file", "is for a rediss:// (TLS) detection.redis_url"));
        }
        for path in &self.decoy_paths {
            let well_formed = path.starts_with('/')
                && path.len() > 1
                && path != "/"
                && path.len() <= 200
                && !path.contains(['?', '#', '{', '}', '*', ' '])
                && ![
                    "/v1/",
                    "/pay",
                    "/account",
                    "/staff",
                    "/oauth",
                    "/dev",
                    "/healthz",
                    "/readyz",
                    "/metrics",
                    "/openapi",
                    "/.well-known",
                ]
                .iter()
                .any(|taken| path.starts_with(taken));
            if !well_formed {
                return Some((
                    "detection.decoy_paths",
                    "each must be a plain path starting with / that no strongroom route uses",
                ));
            }
        }
        None
    }

    /// The alert mails' settings.
    pub fn alert_mail_settings(&self) -> strongroom_domain::detection::alert_mail::AlertMailSettings {
        strongroom_domain::detection::alert_mail::AlertMailSettings {
            alert_emails: self.alert_emails.clone(),
            per_hour: self.alert_mails_per_hour,
        }
    }

    /// The incidents' settings.
    pub fn incident_settings(&self) -> strongroom_domain::detection::incidents::IncidentSettings {
        strongroom_domain::detection::incidents::IncidentSettings { threshold: self.incident_severity }
    }
}

/// `[payments]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PaymentsConfig {
    /// The gateway: `sandbox` (the default) or `stripe` (then `[payments.stripe]`).
    pub gateway: String,
    /// How long a gateway call may take before the payment is left `processing` for
    /// reconciliation. Default 30 s.
    #[serde(with = "humantime_serde")]
    pub gateway_timeout: Duration,
    /// How long each sandbox call takes (to rehearse a slow gateway). Default 0.
    #[serde(with = "humantime_serde")]
    pub sandbox_latency: Duration,
    /// How often the leader asks the gateway about calls that got no answer (intents left
    /// `processing`, refunds left `pending`) and settles them. Default 1 min.
    #[serde(with = "humantime_serde")]
    pub reconcile_interval: Duration,
    /// How far back the reconciliation job looks for unanswered calls. Default 7 days.
    #[serde(with = "humantime_serde")]
    pub reconcile_lookback: Duration,
    /// The origin customers' browsers reach strongroom's payment pages at (the 3-D Secure
    /// hand-off and return pages), e.g. `https://pay.shop.example`. Default: derived from the
    /// API listener, as the other link bases are.
    pub pages_origin: Option<String>,
    /// Amounts above which confirming a payment needs the customer's step-up, in minor units
    /// per currency, e.g. `{ eur = 50000 }`. Default: none.
    pub step_up_above: std::collections::BTreeMap<String, i64>,
    /// Amounts above which a refund by staff needs a second staff member's approval (finance),
    /// in minor units per currency. Default: none.
    pub refund_approval_above: std::collections::BTreeMap<String, i64>,
    /// The fraud and card-testing checks before an authorisation.
    pub fraud: FraudConfig,
    /// The Stripe gateway, when `gateway = "stripe"`.
    pub stripe: StripeConfig,
}

impl Default for PaymentsConfig {
    fn default() -> Self {
        Self {
            gateway: "sandbox".to_owned(),
            gateway_timeout: Duration::from_secs(30),
            sandbox_latency: Duration::ZERO,
            reconcile_interval: Duration::from_secs(60),
            reconcile_lookback: Duration::from_secs(7 * 86_400),
            pages_origin: None,
            step_up_above: std::collections::BTreeMap::new(),
            refund_approval_above: std::collections::BTreeMap::new(),
            fraud: FraudConfig::default(),
            stripe: StripeConfig::default(),
        }
    }
}

/// `[payments.fraud]`: thresholds of the fraud checks (docs/payments.md, "Fraud checks"). A
/// count limit of 0 turns its rule off. The defaults are far above what a customer's checkout
/// does and within what a card tester does in minutes.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FraudConfig {
    /// Whether the checks run. Default true.
    pub enabled: bool,
    /// How far back the counts look (1m to 30d). Default 1h.
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// Most confirmation attempts per customer in the window. Default 30.
    pub max_attempts_per_customer: u32,
    /// Most attempts per card (fingerprint). Default 20.
    pub max_attempts_per_card: u32,
    /// Most attempts per client address (`client.ip`). Default 50.
    pub max_attempts_per_ip: u32,
    /// Most attempts per device (`client.device`). Default 30.
    pub max_attempts_per_device: u32,
    /// Most distinct cards per client address or device (card testing). Default 4.
    pub max_cards_per_client: u32,
    /// Most distinct cards per customer. Default 5.
    pub max_cards_per_customer: u32,
    /// Declines of the attempt's customer, card, address or device after which a step-up is
    /// needed. Default 3.
    pub step_up_after_declines: u32,
    /// Declines after which attempts are blocked. Default 10.
    pub max_declines: u32,
    /// Most small amounts per card, address or device. Default 5.
    pub max_small_amounts: u32,
    /// What is small, in minor units per currency; a currency not listed: one major unit.
    pub small_amounts: std::collections::BTreeMap<String, i64>,
    /// The largest amount per currency (more is blocked). Default: none.
    pub amount_limits: std::collections::BTreeMap<String, i64>,
    /// `allow`, `require_step_up` (default) or `block`: a card issued in another country than
    /// the client's (`client.country`), when both are known.
    pub country_mismatch: String,
    /// Issuing countries by card number prefix (1 to 8 digits), e.g. `{ "400005" = "GB" }`.
    /// The vault keeps no BIN table: a card's country is known only through this list.
    pub issuer_countries: std::collections::BTreeMap<String, String>,
}

impl Default for FraudConfig {
    fn default() -> Self {
        let d = strongroom_domain::payments::fraud::FraudSettings::default();
        Self {
            enabled: d.enabled,
            window: d.window,
            max_attempts_per_customer: d.max_attempts_per_customer,
            max_attempts_per_card: d.max_attempts_per_card,
            max_attempts_per_ip: d.max_attempts_per_ip,
            max_attempts_per_device: d.max_attempts_per_device,
            max_cards_per_client: d.max_cards_per_client,
            max_cards_per_customer: d.max_cards_per_customer,
            step_up_after_declines: d.step_up_after_declines,
            max_declines: d.max_declines,
            max_small_amounts: d.max_small_amounts,
            small_amounts: d.small_amounts,
            amount_limits: d.amount_limits,
            country_mismatch: d.country_mismatch.as_str().to_owned(),
            issuer_countries: d.issuer_countries,
        }
    }
}

/// Checks a per-currency map of amounts; errors name the key.
fn check_amounts(key: &str, map: &std::collections::BTreeMap<String, i64>) -> Result<(), ConfigError> {
    for (currency, amount) in map {
        if strongroom_types::Currency::parse(currency).is_err() {
            return Err(ConfigError(format!("{key}: {currency} is not an ISO 4217 currency code")));
        }
        if !(0..=strongroom_domain::payments::MAX_AMOUNT).contains(amount) {
            return Err(ConfigError(format!("{key}.{currency}: must be 0 to 999999999999 minor units")));
        }
    }
    Ok(())
}

fn lower_keys(map: &std::collections::BTreeMap<String, i64>) -> std::collections::BTreeMap<String, i64> {
    map.iter().map(|(k, v)| (k.to_ascii_lowercase(), *v)).collect()
}

impl PaymentsConfig {
    /// Validates `[payments]`'s checkout rules.
    fn validate_rules(&self) -> Result<(), ConfigError> {
        check_amounts("payments.step_up_above", &self.step_up_above)?;
        check_amounts("payments.refund_approval_above", &self.refund_approval_above)?;
        let f = &self.fraud;
        check_amounts("payments.fraud.small_amounts", &f.small_amounts)?;
        check_amounts("payments.fraud.amount_limits", &f.amount_limits)?;
        if f.window < Duration::from_secs(60) || f.window > Duration::from_secs(30 * 86_400) {
            return Err(ConfigError("payments.fraud.window: must be between 1m and 30d".into()));
        }
        if strongroom_domain::payments::fraud::Outcome::parse(&f.country_mismatch).is_none() {
            return Err(ConfigError("payments.fraud.country_mismatch: must be allow, require_step_up or block".into()));
        }
        for (prefix, country) in &f.issuer_countries {
            if prefix.is_empty() || prefix.len() > 8 || !prefix.bytes().all(|b| b.is_ascii_digit()) {
                return Err(ConfigError("payments.fraud.issuer_countries: keys must be 1 to 8 digits".into()));
            }
            if !strongroom_domain::vault::countries::is_country(&country.to_ascii_uppercase()) {
                return Err(ConfigError(format!(
                    "payments.fraud.issuer_countries.{prefix}: must be an ISO 3166-1 alpha-2 country code"
                )));
            }
        }
        Ok(())
    }

    /// The checkout rules the payments service applies.
    pub fn checkout_rules(&self) -> strongroom_domain::payments::checkout::CheckoutRules {
        use strongroom_domain::payments::fraud::{FraudSettings, Outcome};
        let f = &self.fraud;
        strongroom_domain::payments::checkout::CheckoutRules {
            fraud: FraudSettings {
                enabled: f.enabled,
                window: f.window,
                max_attempts_per_customer: f.max_attempts_per_customer,
                max_attempts_per_card: f.max_attempts_per_card,
                max_attempts_per_ip: f.max_attempts_per_ip,
                max_attempts_per_device: f.max_attempts_per_device,
                max_cards_per_client: f.max_cards_per_client,
                max_cards_per_customer: f.max_cards_per_customer,
                step_up_after_declines: f.step_up_after_declines,
                max_declines: f.max_declines,
                max_small_amounts: f.max_small_amounts,
                small_amounts: lower_keys(&f.small_amounts),
                amount_limits: lower_keys(&f.amount_limits),
                country_mismatch: Outcome::parse(&f.country_mismatch).unwrap_or(Outcome::RequireStepUp),
                issuer_countries: f.issuer_countries.iter().map(|(k, v)| (k.clone(), v.to_ascii_uppercase())).collect(),
            },
            step_up_above: lower_keys(&self.step_up_above),
            refund_approval_above: lower_keys(&self.refund_approval_above),
        }
    }
}

/// `[payments.stripe]`. Its calls pass `[outbound]`'s address policy (so a loopback `api_base`
/// needs `outbound.allow_loopback`, for tests only) and take `payments.gateway_timeout`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StripeConfig {
    /// The secret API key `sk_live_…`/`sk_test_…` (use `STRONGROOM_PAYMENTS__STRIPE__SECRET_KEY_FILE`).
    #[serde(serialize_with = "masked_secret", skip_serializing_if = "Option::is_none")]
    pub secret_key: Option<Secret<String>>,
    /// The signing secret `whsec_…` of the webhook endpoint registered at Stripe
    /// (use `STRONGROOM_PAYMENTS__STRIPE__WEBHOOK_SECRET_FILE`).
    #[serde(serialize_with = "masked_secret", skip_serializing_if = "Option::is_none")]
    pub webhook_secret: Option<Secret<String>>,
    /// Stripe's API. Default `https://api.stripe.com`.
    pub api_base: String,
    /// Where Stripe sends the customer back after 3-D Secure (Stripe's `return_url`). Unset:
    /// strongroom's own return page (`{payments.pages_origin}/pay/return/{intent}`), which asks
    /// Stripe for the outcome and sends the customer on to the shop's `return_url`.
    pub return_url: Option<String>,
    /// How long a payment may take to show in Stripe's search, which reconciliation asks: a
    /// call not found is taken as never made only after this. Default 2m (Stripe's search is
    /// eventually consistent); a test stand-in that answers at once may set less.
    #[serde(with = "humantime_serde")]
    pub search_lag: Duration,
}

impl Default for StripeConfig {
    fn default() -> Self {
        Self {
            secret_key: None,
            webhook_secret: None,
            api_base: strongroom_connectors::gateways::stripe::DEFAULT_API_BASE.to_owned(),
            return_url: None,
            search_lag: strongroom_connectors::gateways::stripe::DEFAULT_SEARCH_LAG,
        }
    }
}

/// `[oauth]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OAuthConfig {
    /// The `iss` of access tokens. Default `strongroom`.
    pub issuer: String,
    /// The `aud` of access tokens, and the only audience accepted. Default `strongroom`.
    pub audience: String,
    /// Access token lifetime (at most 1 h). Default 5 min.
    #[serde(with = "humantime_serde")]
    pub token_ttl: Duration,
}

impl Default for OAuthConfig {
    fn default() -> Self {
        Self { issuer: "strongroom".to_owned(), audience: "strongroom".to_owned(), token_ttl: Duration::from_secs(300) }
    }
}

/// How the SMTP connection is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SmtpSecurity {
    /// STARTTLS, required (port 587).
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
    /// None: only for a server on this machine.
    None,
}

/// The DKIM signature algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DkimAlgorithm {
    /// The key's own: `ed25519-sha256` for an Ed25519 key, `rsa-sha256` for an RSA key.
    #[default]
    Auto,
    /// `rsa-sha256` (RFC 6376).
    RsaSha256,
    /// `ed25519-sha256` (RFC 8463).
    Ed25519Sha256,
}

/// `[mail]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MailConfig {
    /// The SMTP server. Unset: mail is written to `<data_dir>/mail` and listed at `/dev/mailbox`
    /// (development only).
    pub smtp_host: Option<String>,
    /// Its port. Default 587.
    pub smtp_port: u16,
    /// `starttls` (default), `tls` or `none` (only for a server on this machine).
    pub smtp_security: SmtpSecurity,
    /// SMTP user name.
    pub smtp_username: Option<String>,
    /// SMTP password (use `STRONGROOM_MAIL__SMTP_PASSWORD_FILE`).
    #[serde(serialize_with = "masked_secret", skip_serializing_if = "Option::is_none")]
    pub smtp_password: Option<Secret<String>>,
    /// The sender. Default `strongroom <security@localhost>`.
    pub from: String,
    /// DKIM signing domain (with `dkim_selector` and `dkim_private_key_file`).
    pub dkim_domain: Option<String>,
    /// DKIM selector.
    pub dkim_selector: Option<String>,
    /// DKIM private key: RSA (PKCS#1 or PKCS#8 PEM) or Ed25519 (PKCS#8 PEM, or the base64 of
    /// its seed); owner-only permissions required.
    pub dkim_private_key_file: Option<PathBuf>,
    /// `auto` (default: the key's algorithm), `rsa-sha256` or `ed25519-sha256` (must fit the key).
    pub dkim_algorithm: DkimAlgorithm,
}

impl Default for MailConfig {
    fn default() -> Self {
        Self {
            smtp_host: None,
            smtp_port: 587,
            smtp_security: SmtpSecurity::Starttls,
            smtp_username: None,
            smtp_password: None,
            from: "strongroom <security@localhost>".to_owned(),
            dkim_domain: None,
            dkim_selector: None,
            dkim_private_key_file: None,
            dkim_algorithm: DkimAlgorithm::Auto,
        }
    }
}

/// `[identity]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IdentityConfig {
    /// A customer session unused this long ends. Default 30 min.
    #[serde(with = "humantime_serde")]
    pub session_idle: Duration,
    /// A customer session ends this long after sign-in, used or not. Default 12 h.
    #[serde(with = "humantime_serde")]
    pub session_absolute: Duration,
    /// Argon2id memory in KiB (at least 19456, OWASP's minimum). Default 19456.
    pub argon2_memory_kib: u32,
    /// Argon2id passes (at least 2). Default 2.
    pub argon2_iterations: u32,
    /// Argon2id lanes. Default 1.
    pub argon2_parallelism: u32,
    /// Passwords hashed at once (each holds the Argon2id memory). Default: cores - 1, at least 1.
    pub hash_concurrency: Option<usize>,
    /// Hashes that may wait for a slot; more are answered 503 at once. Default 64.
    pub hash_queue: usize,
    /// Words a password must not be built on: the shop's name, its domain.
    pub context_words: Vec<String>,
    /// The shop's name: authenticator apps show it next to the code, and mails are signed with
    /// it. Default `strongroom`.
    pub totp_issuer: String,
    /// Where the shop serves the pages mailed links open: `<link_base>/verify-email#token=…` and
    /// `<link_base>/reset-password#token=…`. Default: the hosted pages on the API listener,
    /// `<origin>/account` with the origin [`link_origin`] makes.
    pub link_base: Option<String>,
    /// How often ended sessions and spent challenges are deleted. Default 10 min.
    #[serde(with = "humantime_serde")]
    pub purge_interval: Duration,
}

impl Default for IdentityConfig {
    fn default() -> Self {
        Self {
            session_idle: Duration::from_secs(30 * 60),
            session_absolute: Duration::from_secs(12 * 3600),
            argon2_memory_kib: 19 * 1024,
            argon2_iterations: 2,
            argon2_parallelism: 1,
            hash_concurrency: None,
            hash_queue: 64,
            context_words: Vec::new(),
            totp_issuer: "strongroom".to_owned(),
            link_base: None,
            purge_interval: Duration::from_secs(600),
        }
    }
}

/// `[passwords]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PasswordsConfig {
    /// The breached-password corpus `strongroom passwords import` writes and the server reads at
    /// start. Default `<data_dir>/pwned-passwords.bin`, used when present; a file named here must
    /// exist.
    pub pwned_file: Option<PathBuf>,
    /// Have I Been Pwned's range API (or a mirror), e.g. `https://api.pwnedpasswords.com`: only the
    /// first 5 hex digits of a new password's SHA-1 are sent. Default unset (off).
    pub pwned_range_url: Option<String>,
    /// How long a range lookup may take before the password is accepted without it (fail open).
    /// Default 2 s.
    #[serde(with = "humantime_serde")]
    pub pwned_range_timeout: Duration,
}

impl Default for PasswordsConfig {
    fn default() -> Self {
        Self { pwned_file: None, pwned_range_url: None, pwned_range_timeout: Duration::from_secs(2) }
    }
}

/// `[staff]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StaffConfig {
    /// A staff session unused this long ends: at most 15 min (PCI DSS 8.2.8). Default 15 min.
    #[serde(with = "humantime_serde")]
    pub session_idle: Duration,
    /// A staff session ends this long after sign-in. Default 12 h.
    #[serde(with = "humantime_serde")]
    pub session_absolute: Duration,
    /// Where invitation links point: `<link_base>/staff/invitation#token=…`. Default: the
    /// invitation page on the API listener, at the origin [`link_origin`] makes.
    pub link_base: Option<String>,
}

impl Default for StaffConfig {
    fn default() -> Self {
        Self {
            session_idle: Duration::from_secs(15 * 60),
            session_absolute: Duration::from_secs(12 * 3600),
            link_base: None,
        }
    }
}

/// `[pages]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PagesConfig {
    /// Serve the hosted account pages (`/account/login`, `/account/security`, …). Default true.
    pub enabled: bool,
    /// Whose customers they serve (`mer_…`). Default: the deployment's first merchant.
    pub merchant: Option<String>,
    /// Let visitors create customer accounts at `/account/sign-up`. Default false: anyone could
    /// then create accounts and have mail sent to any address, and many shops create their
    /// customers from their own backend.
    pub sign_up: bool,
}

impl Default for PagesConfig {
    fn default() -> Self {
        Self { enabled: true, merchant: None, sign_up: false }
    }
}

/// `[webauthn]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebauthnConfig {
    /// The relying party id: the shop's registrable domain (`shop.example`). Passkeys are bound
    /// to it: changing it orphans every passkey. Default `localhost`.
    pub rp_id: String,
    /// The origins the pages that use passkeys run on (`https://shop.example`), each on the RP id
    /// or a subdomain of it. Default `https://localhost:8443`.
    pub origins: Vec<String>,
    /// Accept any port on those origins (development only). Default false.
    pub allow_any_port: bool,
}

impl Default for WebauthnConfig {
    fn default() -> Self {
        Self {
            rp_id: "localhost".to_owned(),
            origins: vec!["https://localhost:8443".to_owned()],
            allow_any_port: false,
        }
    }
}

/// `[outbound]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutboundConfig {
    /// Allow destinations on loopback (127.0.0.0/8, ::1, `localhost`), also over plain `http://`.
    /// Default false: for development and tests only.
    pub allow_loopback: bool,
    /// Allow destinations in private ranges (10/8, 172.16/12, 192.168/16, 100.64/10, fc00::/7).
    /// Default false.
    pub allow_private: bool,
    /// A PEM file of extra CA certificates to trust beside the webpki roots.
    pub ca_file: Option<PathBuf>,
    /// How long connecting may take. Default 5 s.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// How long a whole call may take. Default 10 s.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

impl Default for OutboundConfig {
    fn default() -> Self {
        Self {
            allow_loopback: false,
            allow_private: false,
            ca_file: None,
            connect_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(10),
        }
    }
}

/// `[forward]`: the detokenize-and-forward proxy. Its destinations also pass `[outbound]`'s
/// address policy and trust its `ca_file`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ForwardConfig {
    /// The payment gateway hosts forwards may go to: host names, each with an optional port
    /// (`api.gateway.example` or `api.gateway.example:8443`; without a port only 443), matched
    /// exactly, no wildcards, no IP addresses. Empty (the default): every forward is refused.
    pub allowed_hosts: Vec<String>,
    /// How long a whole forward may take, from connecting to the end of the gateway's answer.
    /// Default 20 s; less than `server.request_timeout`.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// The largest gateway answer read, in bytes. Default 1 MiB.
    pub max_response_bytes: usize,
}

impl Default for ForwardConfig {
    fn default() -> Self {
        Self {
            allowed_hosts: Vec::new(),
            timeout: strongroom_connectors::gateways::forward::DEFAULT_TIMEOUT,
            max_response_bytes: 1024 * 1024,
        }
    }
}

/// `[jobs]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JobsConfig {
    /// This process's name in the job status and the audit log. Default: host name and process id.
    pub node_name: Option<String>,
    /// How long delivered and given-up outbox messages stay in the delivery log. Default 30 days.
    #[serde(with = "humantime_serde")]
    pub delivery_log_retention: Duration,
}

impl Default for JobsConfig {
    fn default() -> Self {
        Self { node_name: None, delivery_log_retention: Duration::from_secs(30 * 24 * 3600) }
    }
}

/// `[alerts]`
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsConfig {
    /// Where security alerts (canary token used, integrity failure) are POSTed, signed per
    /// Standard Webhooks. Unset: alerts reach the log and the audit log only. A secret: many
    /// webhook URLs carry their credential in the path (masked when shown).
    #[serde(serialize_with = "masked_secret", skip_serializing_if = "Option::is_none")]
    pub webhook_url: Option<Secret<String>>,
    /// The signing secret (use `STRONGROOM_ALERTS__WEBHOOK_SECRET_FILE`).
    #[serde(serialize_with = "masked_secret", skip_serializing_if = "Option::is_none")]
    pub webhook_secret: Option<Secret<String>>,
}

/// Whether `keys rotate` and `keys retire` need a second operator's approval.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DualControl {
    /// Required when the KMS is production-grade (not the local key file).
    Auto,
    /// Always required.
    Required,
    /// Never required (say why in your runbook).
    Waived,
}

/// `[vault]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VaultConfig {
    /// Reveals per API key per minute. Default 3000.
    pub reveals_per_minute: u32,
    /// How long a card's CVC is held in memory (at most 10 minutes). Default 10 min.
    #[serde(with = "humantime_serde")]
    pub cvc_ttl: Duration,
    /// How long an unwrapped key-encryption key is trusted before the KMS is asked again. Default 1 h.
    #[serde(with = "humantime_serde")]
    pub kek_cache_ttl: Duration,
    /// How long an unwrapped data key stays in memory. Default 5 min.
    #[serde(with = "humantime_serde")]
    pub data_key_cache_ttl: Duration,
    /// How often expired tokens are purged. Default 60 s.
    #[serde(with = "humantime_serde")]
    pub purge_interval: Duration,
    /// How often the server looks for data keys to rewrap after a rotation. Default 30 s.
    #[serde(with = "humantime_serde")]
    pub rewrap_interval: Duration,
    /// `auto` (default), `required` or `waived`.
    pub dual_control: DualControl,
}

impl Default for VaultConfig {
    fn default() -> Self {
        Self {
            reveals_per_minute: 3000,
            cvc_ttl: Duration::from_secs(600),
            kek_cache_ttl: Duration::from_secs(3600),
            data_key_cache_ttl: Duration::from_secs(300),
            purge_interval: Duration::from_secs(60),
            rewrap_interval: Duration::from_secs(30),
            dual_control: DualControl::Auto,
        }
    }
}

/// `[audit]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// How often a signed checkpoint is made when the log has grown. Default 60 s.
    #[serde(with = "humantime_serde")]
    pub checkpoint_interval: Duration,
    /// The log's origin line (and checkpoint key name). Default `strongroom/<16 hex digits of the
    /// signing key's hash>`, unique per deployment.
    pub origin: Option<String>,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self { checkpoint_interval: Duration::from_secs(60), origin: None }
    }
}

/// `[server]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// API listener. Default `127.0.0.1:8443`.
    pub listen: SocketAddr,
    /// `builtin` (default) or `terminated_upstream`.
    pub tls: TlsMode,
    /// Optional plain-HTTP listener that redirects browser routes to HTTPS.
    pub redirect_listen: Option<SocketAddr>,
    /// Largest request body in bytes. Default 1 MiB.
    pub body_limit_bytes: usize,
    /// Longest a request may take. Default 30 s.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Most requests in flight; more are answered 503. Default 1024.
    pub concurrency_limit: usize,
    /// Proxies (CIDR) whose `X-Forwarded-For` is believed. Default none.
    pub trusted_proxies: Vec<IpNet>,
    /// How long in-flight requests may take to finish at shutdown. Default 30 s.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
}

/// `[tls]`
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM certificate chain. Default: a development certificate created in the data directory.
    pub cert_file: Option<PathBuf>,
    /// PEM private key.
    pub key_file: Option<PathBuf>,
}

/// `[metrics]`
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// A separate plain-HTTP listener for `/metrics` without authentication (bind it to an
    /// internal address). When unset, `/metrics` is on the API listener and needs `admin:metrics`.
    pub listen: Option<SocketAddr>,
}

/// `[database]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// Pool size; default sized for the machine (SQLite 2×cores, PostgreSQL 4×cores).
    pub max_connections: Option<u32>,
    /// How long to wait for a connection. Default 5 s.
    #[serde(with = "humantime_serde")]
    pub acquire_timeout: Duration,
}

/// `[api_keys]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiKeysConfig {
    /// How long a verified key (and its merchant) is trusted before the database is asked again:
    /// other nodes see a revocation within this time. Default 5 s; at most 60 s; 0 disables it.
    #[serde(with = "humantime_serde")]
    pub cache_ttl: Duration,
}

/// `[kms]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KmsConfig {
    /// `local` (a key file; development only) or `openbao` (OpenBao / Vault transit).
    pub provider: KmsProvider,
    /// Root key file for the `local` provider. Default `<data_dir>/root.key`.
    pub key_file: Option<PathBuf>,
    /// `openbao`: the server, e.g. `https://bao.internal:8200`.
    pub address: Option<String>,
    /// `openbao`: the token (secret: use `STRONGROOM_KMS__TOKEN_FILE`).
    #[serde(serialize_with = "masked_secret", skip_serializing_if = "Option::is_none")]
    pub token: Option<Secret<String>>,
    /// `openbao`: the transit engine's mount. Default `transit`.
    pub mount: String,
    /// `openbao`: the transit key (created with `derived=true`). Default `strongroom`.
    pub key_name: String,
    /// `openbao`: a PEM file of CA certificates to trust for the server beside the webpki roots.
    pub ca_file: Option<PathBuf>,
}

impl Default for KmsConfig {
    fn default() -> Self {
        Self {
            provider: KmsProvider::Local,
            key_file: None,
            address: None,
            token: None,
            mount: "transit".to_owned(),
            key_name: "strongroom".to_owned(),
            ca_file: None,
        }
    }
}

/// Root key providers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KmsProvider {
    /// A local key file (mode 0600). Unfit for production.
    #[default]
    Local,
    /// An OpenBao or HashiCorp Vault transit key.
    Openbao,
}

fn masked_secret<S: Serializer>(secret: &Option<Secret<String>>, serializer: S) -> Result<S::Ok, S::Error> {
    match secret {
        Some(_) => serializer.serialize_str("****"),
        None => serializer.serialize_none(),
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./strongroom-data"),
            database_url: None,
            log_format: LogFormat::Text,
            log_level: "info".to_owned(),
            access_log: AccessLogConfig::default(),
            server: ServerConfig::default(),
            tls: TlsConfig::default(),
            metrics: MetricsConfig::default(),
            database: DatabaseConfig::default(),
            api_keys: ApiKeysConfig::default(),
            kms: KmsConfig::default(),
            audit: AuditConfig::default(),
            vault: VaultConfig::default(),
            alerts: AlertsConfig::default(),
            outbound: OutboundConfig::default(),
            forward: ForwardConfig::default(),
            jobs: JobsConfig::default(),
            identity: IdentityConfig::default(),
            passwords: PasswordsConfig::default(),
            staff: StaffConfig::default(),
            webauthn: WebauthnConfig::default(),
            pages: PagesConfig::default(),
            mail: MailConfig::default(),
            oauth: OAuthConfig::default(),
            payments: PaymentsConfig::default(),
            detection: DetectionConfig::default(),
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8443)),
            tls: TlsMode::Builtin,
            redirect_listen: None,
            body_limit_bytes: 1024 * 1024,
            request_timeout: Duration::from_secs(30),
            concurrency_limit: 1024,
            trusted_proxies: Vec::new(),
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self { max_connections: None, acquire_timeout: Duration::from_secs(5) }
    }
}

impl Default for ApiKeysConfig {
    fn default() -> Self {
        Self { cache_ttl: Duration::from_secs(5) }
    }
}

/// The origin of the links strongroom makes when `identity.link_base` or `staff.link_base` is not
/// set: the API listener's own, from the address it is bound to (so port 0 is the port the system
/// chose). A loopback or unspecified address (`127.0.0.1`, `::1`, `0.0.0.0`, `::`) becomes
/// `localhost`: the development certificate names it, the default passkey relying party is
/// `localhost`, and an unspecified address names no host a link could use. Any other address is
/// written as it is. The scheme is `https`, or `http` when TLS is terminated upstream (this
/// listener's own scheme; such deployments set their public address as the link bases). Port
/// 443 of `https` and 80 of `http` are left out.
pub fn link_origin(tls: TlsMode, listening: SocketAddr) -> String {
    let scheme = match tls {
        TlsMode::Builtin => "https",
        TlsMode::TerminatedUpstream => "http",
    };
    let ip = listening.ip();
    let host = if ip.is_loopback() || ip.is_unspecified() {
        "localhost".to_owned()
    } else {
        match ip {
            std::net::IpAddr::V4(v4) => v4.to_string(),
            std::net::IpAddr::V6(v6) => format!("[{v6}]"),
        }
    };
    match (scheme, listening.port()) {
        ("https", 443) | ("http", 80) => format!("{scheme}://{host}"),
        (_, port) => format!("{scheme}://{host}:{port}"),
    }
}

/// Masks the password and query of a URL: `postgres://app:****@db/strongroom?****`. The user
/// information ends at the last `@` before the path, so a password containing `/` or `@` is
/// masked whole.
pub fn mask_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "<not a URL>".to_owned();
    };
    let (userinfo, after) = match rest.rfind('@') {
        Some(at) => (rest.get(..at), rest.get(at + 1..).unwrap_or_default()),
        None => (None, rest),
    };
    let host_end = after.find('/').unwrap_or(after.len());
    let (host, path) = after.split_at(host_end);
    let path = match path.split_once('?') {
        Some((path, _query)) => format!("{path}?****"),
        None => path.to_owned(),
    };
    match userinfo {
        Some(userinfo) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(user, _)| user);
            format!("{scheme}://{user}:****@{host}{path}")
        }
        None => format!("{scheme}://{host}{path}"),
    }
}

fn masked_url<S: Serializer>(url: &Option<Secret<String>>, serializer: S) -> Result<S::Ok, S::Error> {
    match url {
        Some(url) => serializer.serialize_str(&mask_url(url.expose())),
        None => serializer.serialize_none(),
    }
}

/// Command-line values that override everything else.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    /// `--config`
    pub config_file: Option<PathBuf>,
    /// `--data-dir`
    pub data_dir: Option<PathBuf>,
    /// `--database-url`
    pub database_url: Option<String>,
    /// `--log-format`
    pub log_format: Option<LogFormat>,
}

/// A configuration error, naming the key.
#[derive(Debug)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

const ENV_PREFIX: &str = "STRONGROOM_";

/// Variables with the prefix that are not configuration keys.
fn is_reserved_env(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    key == "config"
        || key == "witness_api_key"
        || key == "approval_key"
        || key == "drill_api_key"
        || key.starts_with("test_")
}

/// Loads the configuration from `vars` (normally `std::env::vars()`) and the overrides.
pub fn load(overrides: &Overrides, vars: impl IntoIterator<Item = (String, String)>) -> Result<Config, ConfigError> {
    let mut figment = Figment::from(Serialized::defaults(Config::default()));
    let default_file = PathBuf::from("strongroom.toml");
    // Absolute, so that errors name the file wherever the command was run from.
    let file = match &overrides.config_file {
        Some(path) => Some(absolute(path)),
        None if default_file.exists() => Some(absolute(&default_file)),
        None => None,
    };
    match file {
        Some(path) if !path.exists() => {
            return Err(ConfigError(format!("config file {} does not exist", path.display())));
        }
        Some(path) => figment = figment.merge(Toml::file_exact(path)),
        None => {}
    }
    let vars: Vec<(String, String)> = vars.into_iter().collect();
    let plain: Vec<(String, String)> = vars
        .iter()
        .filter_map(|(k, v)| k.strip_prefix(ENV_PREFIX).map(|k| (k.to_owned(), v.clone())))
        .filter(|(k, _)| !is_reserved_env(k) && !k.ends_with("_FILE"))
        .collect();
    let names: Vec<String> = plain.iter().map(|(k, _)| k.clone()).collect();
    // Built from `vars` rather than read from the process environment, so tests stay hermetic.
    figment = figment.merge(EnvVars(plain));
    for (name, path) in vars.iter().filter_map(|(k, v)| {
        let key = k.strip_prefix(ENV_PREFIX)?.strip_suffix("_FILE")?;
        (!is_reserved_env(key)).then(|| (k.clone(), (key.to_ascii_lowercase().replace("__", "."), v.clone())))
    }) {
        let (key, file) = path;
        let value =
            std::fs::read_to_string(&file).map_err(|e| ConfigError(format!("{name}: cannot read {file}: {e}")))?;
        figment = figment.merge(Named(name, (key, value.trim_end_matches(['\r', '\n']).to_owned())));
    }
    if let Some(dir) = &overrides.data_dir {
        figment = figment.merge(Named("--data-dir".to_owned(), ("data_dir", dir.display().to_string())));
    }
    if let Some(url) = &overrides.database_url {
        figment = figment.merge(Named("--database-url".to_owned(), ("database_url", url.clone())));
    }
    if let Some(format) = overrides.log_format {
        figment = figment.merge(Named("--log-format".to_owned(), ("log_format", format)));
    }
    let config: Config = figment.extract().map_err(|e| ConfigError(describe(&e, &names)))?;
    config.validate()?;
    Ok(config)
}

/// `path` from the file system's root, without `..` (the file itself need not exist).
fn absolute(path: &std::path::Path) -> PathBuf {
    let resolved = match (path.parent(), path.file_name()) {
        (Some(parent), Some(name)) => {
            let parent = if parent.as_os_str().is_empty() { std::path::Path::new(".") } else { parent };
            std::fs::canonicalize(parent).map(|parent| parent.join(name)).ok()
        }
        _ => None,
    };
    resolved.or_else(|| std::path::absolute(path).ok()).unwrap_or_else(|| path.to_owned())
}

/// Figment's errors in the user's terms: the key as the documentation writes it (`server.listen`,
/// not the loader's `default.server.listen`), where it was set (the file's absolute path, the
/// variable or the flag), and for an unknown key the nearest known one. `env_names` are the
/// `STRONGROOM_*` variables as written, without the prefix.
fn describe(err: &figment::Error, env_names: &[String]) -> String {
    err.clone().into_iter().map(|e| describe_one(&e, env_names)).collect::<Vec<_>>().join("; ")
}

fn describe_one(err: &figment::Error, env_names: &[String]) -> String {
    use figment::error::Kind;
    let mut path = err.path.clone();
    if let Kind::UnknownField(found, _) = &err.kind
        && path.last() != Some(found)
    {
        path.push(found.clone());
    }
    let key = path.join(".");
    let origin = err.metadata.as_ref().and_then(|metadata| match &metadata.source {
        Some(figment::Source::File(file)) => Some(("in", absolute(file).display().to_string())),
        _ if metadata.name == ENV_METADATA => {
            let written = path.join("__");
            let name = env_names.iter().find(|n| n.eq_ignore_ascii_case(&written)).cloned();
            Some(("set by", format!("{ENV_PREFIX}{}", name.unwrap_or_else(|| written.to_ascii_uppercase()))))
        }
        None if metadata.name.starts_with(ENV_PREFIX) || metadata.name.starts_with("--") => {
            Some(("set by", metadata.name.to_string()))
        }
        _ => None,
    });
    let source = origin.as_ref().map(|(how, what)| format!(" ({how} {what})")).unwrap_or_default();
    match &err.kind {
        Kind::UnknownField(found, expected) => {
            let parent: String = path.iter().take(path.len().saturating_sub(1)).map(|p| format!("{p}.")).collect();
            let hint = match nearest(found, expected) {
                Some(near) => format!("did you mean {parent}{near}?"),
                None => {
                    let known: Vec<String> = expected.iter().map(|k| format!("{parent}{k}")).collect();
                    format!("the known keys here are {}", known.join(", "))
                }
            };
            format!("{key} is unknown{source}; {hint}")
        }
        kind if key.is_empty() => match origin {
            Some((_, what)) => format!("{what}: {kind}"),
            None => kind.to_string(),
        },
        kind => format!("{key}: {kind}{source}"),
    }
}

/// The known key closest to a mistyped one, if it is close enough to be the one meant.
fn nearest<'a>(typed: &str, known: &[&'a str]) -> Option<&'a str> {
    let distance = |a: &str, b: &str| {
        let b: Vec<char> = b.chars().collect();
        let mut row: Vec<usize> = (0..=b.len()).collect();
        for (i, ca) in a.chars().enumerate() {
            let mut diagonal = row[0];
            row[0] = i + 1;
            for (j, cb) in b.iter().enumerate() {
                let above = row[j + 1];
                row[j + 1] = (diagonal + usize::from(!ca.eq_ignore_ascii_case(cb))).min(above + 1).min(row[j] + 1);
                diagonal = above;
            }
        }
        row[b.len()]
    };
    let limit = (typed.chars().count() / 3).max(2);
    known.iter().map(|k| (distance(typed, k), *k)).filter(|(d, _)| *d <= limit).min_by_key(|(d, _)| *d).map(|(_, k)| k)
}

/// A provider under the name the user set it by (a `_FILE` variable, a flag), so that an error
/// about its value names that rather than a line of this file.
#[derive(Debug)]
struct Named<P>(String, P);

impl<P: figment::Provider> figment::Provider for Named<P> {
    fn metadata(&self) -> figment::Metadata {
        figment::Metadata::named(self.0.clone())
    }

    fn data(&self) -> Result<figment::value::Map<figment::Profile, figment::value::Dict>, figment::Error> {
        self.1.data()
    }
}

const ENV_METADATA: &str = "STRONGROOM_* environment variable";

/// `STRONGROOM_*` variables as a provider: `SERVER__LISTEN` becomes `server.listen`, and values
/// are parsed as figment's own environment provider parses them (numbers, booleans, arrays).
struct EnvVars(Vec<(String, String)>);

impl figment::Provider for EnvVars {
    fn metadata(&self) -> figment::Metadata {
        figment::Metadata::named(ENV_METADATA)
    }

    fn data(&self) -> Result<figment::value::Map<figment::Profile, figment::value::Dict>, figment::Error> {
        let mut dict = figment::value::Dict::new();
        for (key, value) in &self.0 {
            let parsed: figment::value::Value = value.parse().unwrap_or_else(|_| value.clone().into());
            let key = key.to_ascii_lowercase();
            let segments: Vec<&str> = key.split("__").collect();
            let nested = segments.into_iter().rev().fold(parsed, |acc, segment| {
                let mut map = figment::value::Dict::new();
                map.insert(segment.to_owned(), acc);
                map.into()
            });
            if let figment::value::Value::Dict(_, map) = nested {
                dict = merge_dicts(dict, map);
            }
        }
        Ok(figment::Profile::Default.collect(dict))
    }
}

fn merge_dicts(mut base: figment::value::Dict, other: figment::value::Dict) -> figment::value::Dict {
    for (key, value) in other {
        let merged = match (base.remove(&key), value) {
            (Some(figment::value::Value::Dict(_, a)), figment::value::Value::Dict(_, b)) => merge_dicts(a, b).into(),
            (_, value) => value,
        };
        base.insert(key, merged);
    }
    base
}

impl Config {
    /// Checks rules serde cannot express; errors name the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let fail = |key: &str, why: &str| Err(ConfigError(format!("{key}: {why}")));
        if let Some(url) = &self.database_url
            && strongroom_store::BackendKind::of_url(url.expose()).is_none()
        {
            return fail("database_url", "must start with sqlite:// or postgres://");
        }
        if self.server.body_limit_bytes == 0 {
            return fail("server.body_limit_bytes", "must be greater than 0");
        }
        if self.server.concurrency_limit == 0 {
            return fail("server.concurrency_limit", "must be greater than 0");
        }
        if self.server.request_timeout.is_zero() {
            return fail("server.request_timeout", "must be greater than 0");
        }
        if self.api_keys.cache_ttl > Duration::from_secs(60) {
            return fail("api_keys.cache_ttl", "must be at most 60s (revocations must reach every node quickly)");
        }
        if self.audit.checkpoint_interval < Duration::from_secs(1) {
            return fail("audit.checkpoint_interval", "must be at least 1s");
        }
        if let Some(origin) = &self.audit.origin
            && (origin.is_empty() || origin.chars().any(|c| c.is_whitespace() || c.is_control() || c == '+'))
        {
            return fail("audit.origin", "must be non-empty, without spaces or '+'");
        }
        if self.kms.provider == KmsProvider::Openbao {
            if self.kms.address.as_deref().is_none_or(|a| !(a.starts_with("https://") || a.starts_with("http://"))) {
                return fail("kms.address", "the openbao provider needs an http(s):// address");
            }
            if self.kms.token.is_none() {
                return fail("kms.token", "the openbao provider needs a token (STRONGROOM_KMS__TOKEN_FILE)");
            }
        }
        if let Some(url) = &self.alerts.webhook_url {
            let url = url.expose();
            if !(url.starts_with("https://") || url.starts_with("http://")) {
                return fail("alerts.webhook_url", "must be an http(s):// URL");
            }
            if self.alerts.webhook_secret.as_ref().is_none_or(|s| s.expose().len() < 16) {
                return fail("alerts.webhook_secret", "a webhook URL needs a signing secret of at least 16 characters");
            }
        }
        for entry in &self.forward.allowed_hosts {
            if let Err(why) = strongroom_connectors::gateways::forward::AllowedHost::parse(entry) {
                return fail("forward.allowed_hosts", why);
            }
        }
        // Checked against the request timeout only when forwards are on: a deployment without them
        // keeps whatever request timeout it had.
        if self.forward.timeout < Duration::from_millis(100)
            || (!self.forward.allowed_hosts.is_empty() && self.forward.timeout >= self.server.request_timeout)
        {
            return fail(
                "forward.timeout",
                "must be at least 100ms, and less than server.request_timeout when forward.allowed_hosts is set",
            );
        }
        if !(1024..=64 * 1024 * 1024).contains(&self.forward.max_response_bytes) {
            return fail("forward.max_response_bytes", "must be between 1 KiB and 64 MiB");
        }
        if self.vault.cvc_ttl > Duration::from_secs(600) {
            return fail("vault.cvc_ttl", "must be at most 10m (a CVC is never kept longer)");
        }
        if self.vault.reveals_per_minute == 0 {
            return fail("vault.reveals_per_minute", "must be greater than 0");
        }
        for (key, value) in [
            ("vault.kek_cache_ttl", self.vault.kek_cache_ttl),
            ("vault.data_key_cache_ttl", self.vault.data_key_cache_ttl),
            ("vault.purge_interval", self.vault.purge_interval),
            ("vault.rewrap_interval", self.vault.rewrap_interval),
        ] {
            if value < Duration::from_secs(1) {
                return fail(key, "must be at least 1s");
            }
        }
        let params = strongroom_crypto::password::PasswordParams {
            memory_kib: self.identity.argon2_memory_kib,
            iterations: self.identity.argon2_iterations,
            parallelism: self.identity.argon2_parallelism,
        };
        if !params.meets_minimum() {
            return fail("identity.argon2_memory_kib", "Argon2id needs at least m=19456 KiB, t=2, p=1 (OWASP)");
        }
        if self.identity.argon2_memory_kib > 1024 * 1024 || self.identity.argon2_parallelism > 16 {
            return fail("identity.argon2_memory_kib", "must be at most 1 GiB with at most 16 lanes");
        }
        if self.identity.hash_concurrency == Some(0) {
            return fail("identity.hash_concurrency", "must be at least 1");
        }
        if self.staff.session_idle < Duration::from_secs(60) || self.staff.session_idle > Duration::from_secs(15 * 60) {
            return fail("staff.session_idle", "must be between 1m and 15m (PCI DSS 8.2.8)");
        }
        if self.webauthn.origins.is_empty() {
            return fail("webauthn.origins", "must name at least one origin");
        }
        if self.staff.session_absolute < self.staff.session_idle {
            return fail("staff.session_absolute", "must be at least staff.session_idle");
        }
        if self.identity.session_idle < Duration::from_secs(60)
            || self.identity.session_idle > self.identity.session_absolute
        {
            return fail("identity.session_idle", "must be at least 1m and at most identity.session_absolute");
        }
        if self.identity.session_absolute > Duration::from_secs(30 * 86_400) {
            return fail("identity.session_absolute", "must be at most 30 days");
        }
        if self.identity.purge_interval < Duration::from_secs(1) {
            return fail("identity.purge_interval", "must be at least 1s");
        }
        if self.identity.totp_issuer.trim().is_empty() || self.identity.totp_issuer.contains(':') {
            return fail("identity.totp_issuer", "must be a non-empty name without ':'");
        }
        if self.oauth.token_ttl < Duration::from_secs(30) || self.oauth.token_ttl > Duration::from_secs(3600) {
            return fail("oauth.token_ttl", "must be between 30s and 1h");
        }
        match self.payments.gateway.as_str() {
            "sandbox" => {}
            "stripe" => {
                let stripe = &self.payments.stripe;
                if stripe.secret_key.as_ref().is_none_or(|k| k.expose().trim().is_empty()) {
                    return fail(
                        "payments.stripe.secret_key",
                        "is required with payments.gateway = stripe (or STRONGROOM_PAYMENTS__STRIPE__SECRET_KEY_FILE)",
                    );
                }
                if stripe.webhook_secret.as_ref().is_none_or(|k| k.expose().trim().is_empty()) {
                    return fail(
                        "payments.stripe.webhook_secret",
                        "is required with payments.gateway = stripe (or STRONGROOM_PAYMENTS__STRIPE__WEBHOOK_SECRET_FILE)",
                    );
                }
                if !(stripe.api_base.starts_with("https://") || stripe.api_base.starts_with("http://")) {
                    return fail("payments.stripe.api_base", "must be an https:// URL");
                }
            }
            _ => return fail("payments.gateway", "must be sandbox or stripe"),
        }
        if self.payments.gateway_timeout < Duration::from_secs(1)
            || self.payments.gateway_timeout > Duration::from_secs(120)
        {
            return fail("payments.gateway_timeout", "must be between 1s and 2m");
        }
        if self.payments.sandbox_latency > Duration::from_secs(60) {
            return fail("payments.sandbox_latency", "must be at most 1m");
        }
        if self.payments.reconcile_interval < Duration::from_secs(1)
            || self.payments.reconcile_interval > Duration::from_secs(3600)
        {
            return fail("payments.reconcile_interval", "must be between 1s and 1h");
        }
        if let Some((field, message)) = self.detection.problem() {
            return fail(field, message);
        }
        if self.payments.stripe.search_lag > Duration::from_secs(3600) {
            return fail("payments.stripe.search_lag", "must be at most 1h");
        }
        if self.payments.reconcile_lookback < Duration::from_secs(3600)
            || self.payments.reconcile_lookback > Duration::from_secs(90 * 86_400)
        {
            return fail("payments.reconcile_lookback", "must be between 1h and 90 days");
        }
        if let Some(origin) = &self.payments.pages_origin {
            let rest = origin.strip_prefix("https://").or_else(|| origin.strip_prefix("http://"));
            if rest.is_none_or(|host| host.is_empty() || host.trim_end_matches('/').contains(['/', '?', '#', '@', ' ']))
            {
                return fail("payments.pages_origin", "must be an origin such as https://pay.shop.example (no path)");
            }
        }
        self.payments.validate_rules()?;
        if self.oauth.issuer.trim().is_empty() || self.oauth.audience.trim().is_empty() {
            return fail("oauth.issuer", "oauth.issuer and oauth.audience must not be empty");
        }
        if let Some(url) = &self.passwords.pwned_range_url
            && !(url.starts_with("https://") || url.starts_with("http://"))
        {
            return fail("passwords.pwned_range_url", "must be an http(s):// URL, e.g. https://api.pwnedpasswords.com");
        }
        if self.passwords.pwned_range_timeout < Duration::from_millis(100)
            || self.passwords.pwned_range_timeout > Duration::from_secs(30)
        {
            return fail("passwords.pwned_range_timeout", "must be between 100ms and 30s");
        }
        if let Some(base) = &self.identity.link_base
            && !base.starts_with("https://")
        {
            return fail("identity.link_base", "must be an https:// URL");
        }
        if !self.mail.from.contains('@') || self.mail.from.chars().any(char::is_control) {
            return fail("mail.from", "must be an address, optionally with a name: Shop <security@shop.example>");
        }
        let dkim = [
            self.mail.dkim_domain.is_some(),
            self.mail.dkim_selector.is_some(),
            self.mail.dkim_private_key_file.is_some(),
        ];
        if dkim.iter().any(|set| *set) && !dkim.iter().all(|set| *set) {
            return fail(
                "mail.dkim_domain",
                "mail.dkim_domain, mail.dkim_selector and mail.dkim_private_key_file go together",
            );
        }
        if self.mail.smtp_security == SmtpSecurity::None
            && let Some(host) = &self.mail.smtp_host
            && !(host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback()))
        {
            return fail("mail.smtp_security", "\"none\" is only allowed for a server on this machine");
        }
        if self.tls.cert_file.is_some() != self.tls.key_file.is_some() {
            return fail("tls.cert_file", "tls.cert_file and tls.key_file go together");
        }
        let mut ports = vec![("server.listen", self.server.listen)];
        ports.extend(self.server.redirect_listen.map(|a| ("server.redirect_listen", a)));
        ports.extend(self.metrics.listen.map(|a| ("metrics.listen", a)));
        for (i, (key, addr)) in ports.iter().enumerate() {
            if addr.port() != 0 && ports.iter().skip(i + 1).any(|(_, other)| other == addr) {
                return fail(key, "shares its address with another listener");
            }
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log_level).is_err() {
            return fail("log_level", "is not a valid filter (e.g. info, or info,strongroom_http=debug)");
        }
        Ok(())
    }

    /// The database URL in effect.
    pub fn database_url(&self) -> Secret<String> {
        match &self.database_url {
            Some(url) => url.clone(),
            None => Secret::new(format!("sqlite://{}", self.data_dir.join("strongroom.db").display())),
        }
    }

    /// The breached-password corpus file in effect.
    pub fn pwned_file(&self) -> PathBuf {
        self.passwords.pwned_file.clone().unwrap_or_else(|| self.data_dir.join("pwned-passwords.bin"))
    }

    /// The root key file of the local KMS.
    pub fn root_key_file(&self) -> PathBuf {
        self.kms.key_file.clone().unwrap_or_else(|| self.data_dir.join("root.key"))
    }

    /// The effective configuration as TOML, secrets masked.
    pub fn to_masked_toml(&self) -> String {
        let mut effective = self.clone();
        effective.database_url = Some(self.database_url());
        // The link bases in effect, when the configured port says which they are.
        if self.server.listen.port() != 0 {
            effective.identity.link_base = Some(self.identity_link_base(self.server.listen));
            effective.staff.link_base = Some(self.staff_link_base(self.server.listen));
        }
        toml::to_string_pretty(&effective).unwrap_or_else(|e| format!("# could not render: {e}"))
    }

    /// `identity.link_base`, or its default for a server whose API listener is bound to
    /// `listening`: `<origin>/account` (origin by [`link_origin`]), where the hosted pages answer.
    pub fn identity_link_base(&self, listening: SocketAddr) -> String {
        match &self.identity.link_base {
            Some(base) => base.trim_end_matches('/').to_owned(),
            None => format!("{}/account", link_origin(self.server.tls, listening)),
        }
    }

    /// `payments.pages_origin`, or its default for a server whose API listener is bound to
    /// `listening`: [`link_origin`].
    pub fn payments_pages_origin(&self, listening: SocketAddr) -> String {
        match &self.payments.pages_origin {
            Some(origin) => origin.trim_end_matches('/').to_owned(),
            None => link_origin(self.server.tls, listening),
        }
    }

    /// `staff.link_base`, or its default for a server whose API listener is bound to
    /// `listening`: [`link_origin`], where the invitation page answers.
    pub fn staff_link_base(&self, listening: SocketAddr) -> String {
        match &self.staff.link_base {
            Some(base) => base.trim_end_matches('/').to_owned(),
            None => link_origin(self.server.tls, listening),
        }
    }

    /// Whether a link base is left to its default while the listener's address says nothing about
    /// where people reach it (an unspecified address such as `0.0.0.0`, or TLS terminated by a
    /// proxy): the default then only works on this machine, worth a warning at start.
    pub fn link_bases_guessed(&self) -> bool {
        (self.identity.link_base.is_none() || self.staff.link_base.is_none())
            && (self.server.listen.ip().is_unspecified() || self.server.tls == TlsMode::TerminatedUpstream)
    }

    /// The directory of the development TLS files.
    pub fn tls_dir(&self) -> PathBuf {
        self.data_dir.join("tls")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn link_bases_default_to_the_address_listened_on() {
        let addr = |text: &str| text.parse::<SocketAddr>().unwrap();
        assert_eq!(link_origin(TlsMode::Builtin, addr("127.0.0.1:8443")), "https://localhost:8443");
        assert_eq!(link_origin(TlsMode::Builtin, addr("0.0.0.0:443")), "https://localhost");
        assert_eq!(link_origin(TlsMode::Builtin, addr("[::]:9000")), "https://localhost:9000");
        assert_eq!(link_origin(TlsMode::Builtin, addr("192.0.2.7:8443")), "https://192.0.2.7:8443");
        assert_eq!(link_origin(TlsMode::Builtin, addr("[2001:db8::7]:8443")), "https://[2001:db8::7]:8443");
        assert_eq!(link_origin(TlsMode::TerminatedUpstream, addr("10.0.0.2:8080")), "http://10.0.0.2:8080");
        assert_eq!(link_origin(TlsMode::TerminatedUpstream, addr("10.0.0.2:80")), "http://10.0.0.2");

        let config = load(&Overrides::default(), vars(&[("STRONGROOM_SERVER__LISTEN", "127.0.0.1:0")])).unwrap();
        // Port 0: the port the system chose when the listener was bound.
        let bound = addr("127.0.0.1:40123");
        assert_eq!(config.identity_link_base(bound), "https://localhost:40123/account");
        assert_eq!(config.staff_link_base(bound), "https://localhost:40123");
        assert!(!config.link_bases_guessed());
        let open = load(&Overrides::default(), vars(&[("STRONGROOM_SERVER__LISTEN", "0.0.0.0:8443")])).unwrap();
        assert!(open.link_bases_guessed(), "an unspecified address is worth a warning");

        let set = load(
            &Overrides::default(),
            vars(&[
                ("STRONGROOM_IDENTITY__LINK_BASE", "https://shop.example/account/"),
                ("STRONGROOM_STAFF__LINK_BASE", "https://admin.shop.example"),
                ("STRONGROOM_SERVER__LISTEN", "0.0.0.0:8443"),
            ]),
        )
        .unwrap();
        assert_eq!(set.identity_link_base(bound), "https://shop.example/account");
        assert_eq!(set.staff_link_base(bound), "https://admin.shop.example");
        assert!(!set.link_bases_guessed());
        let shown = set.to_masked_toml();
        assert!(shown.contains("link_base = \"https://shop.example/account\""), "{shown}");
        let derived = load(&Overrides::default(), vars(&[])).unwrap().to_masked_toml();
        assert!(derived.contains("link_base = \"https://localhost:8443/account\""), "{derived}");
        let err = load(&Overrides::default(), vars(&[("STRONGROOM_IDENTITY__LINK_BASE", "http://shop.example")]));
        assert!(err.unwrap_err().0.starts_with("identity.link_base: must be an https:// URL"));
    }

    #[test]
    fn the_forward_allow_list_is_checked_at_start_and_shown() {
        let config = load(
            &Overrides::default(),
            vars(&[("STRONGROOM_FORWARD__ALLOWED_HOSTS", r#"["api.gateway.example", "pay.example:8443"]"#)]),
        )
        .unwrap();
        assert_eq!(config.forward.allowed_hosts, ["api.gateway.example", "pay.example:8443"]);
        let shown = config.to_masked_toml();
        assert!(shown.contains("[forward]") && shown.contains("pay.example:8443"), "{shown}");
        assert!(load(&Overrides::default(), vars(&[])).unwrap().forward.allowed_hosts.is_empty());
        for bad in [r#"["10.0.0.1"]"#, r#"["https://api.gateway.example"]"#, r#"["*.gateway.example"]"#] {
            let err = load(&Overrides::default(), vars(&[("STRONGROOM_FORWARD__ALLOWED_HOSTS", bad)])).unwrap_err();
            assert!(err.0.starts_with("forward.allowed_hosts: "), "{}", err.0);
        }
        let slow = [("STRONGROOM_FORWARD__TIMEOUT", "40s"), ("STRONGROOM_FORWARD__ALLOWED_HOSTS", r#"["a.example"]"#)];
        let err = load(&Overrides::default(), vars(&slow)).unwrap_err();
        assert!(err.0.starts_with("forward.timeout: "), "{}", err.0);
        assert!(load(&Overrides::default(), vars(&slow[..1])).is_ok(), "forwards off: the timeout is not in the way");
    }

    #[test]
    fn defaults_load() {
        let config = load(&Overrides::default(), vars(&[])).unwrap();
        assert_eq!(config.server.listen.to_string(), "127.0.0.1:8443");
        assert_eq!(config.server.body_limit_bytes, 1024 * 1024);
        assert!(config.database_url().expose().starts_with("sqlite://"));
    }

    #[test]
    fn environment_overrides_and_nested_keys() {
        let config = load(
            &Overrides::default(),
            vars(&[
                ("STRONGROOM_SERVER__LISTEN", "127.0.0.1:9999"),
                ("STRONGROOM_SERVER__REQUEST_TIMEOUT", "5s"),
                ("STRONGROOM_LOG_FORMAT", "json"),
                ("STRONGROOM_TEST_POSTGRES_URL", "ignored"),
                ("STRONGROOM_DRILL_API_KEY", "ignored: the drill's key, not configuration"),
                ("OTHER", "ignored"),
            ]),
        )
        .unwrap();
        assert_eq!(config.server.listen.port(), 9999);
        assert_eq!(config.server.request_timeout, Duration::from_secs(5));
        assert_eq!(config.log_format, LogFormat::Json);
    }

    #[test]
    fn unknown_keys_are_rejected_by_name() {
        let err = load(&Overrides::default(), vars(&[("STRONGROOM_SERVER__LISTN", "x")])).unwrap_err();
        assert_eq!(err.0, "server.listn is unknown (set by STRONGROOM_SERVER__LISTN); did you mean server.listen?");
        let err = load(&Overrides::default(), vars(&[("STRONGROOM_SERVER__LISTEN", "not-an-address")])).unwrap_err();
        assert!(err.0.starts_with("server.listen: ") && err.0.ends_with("(set by STRONGROOM_SERVER__LISTEN)"), "{err}");
        // A key nothing like a known one: the known keys of its table instead of a guess.
        let err = load(&Overrides::default(), vars(&[("STRONGROOM_OAUTH__ZZZZZZZZ", "x")])).unwrap_err();
        assert!(err.0.starts_with("oauth.zzzzzzzz is unknown") && err.0.contains("oauth.token_ttl"), "{err}");
        let err = load(&Overrides::default(), vars(&[("STRONGROOM_SERVR__LISTEN", "x")])).unwrap_err();
        assert!(err.0.starts_with("servr is unknown") && err.0.ends_with("did you mean server?"), "{err}");
        // A `_FILE` variable is named as the source of its value, not the loader's code.
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("limit");
        std::fs::write(&file, "lots\n").unwrap();
        let err =
            load(&Overrides::default(), vars(&[("STRONGROOM_SERVER__BODY_LIMIT_BYTES_FILE", file.to_str().unwrap())]))
                .unwrap_err();
        assert!(
            err.0.starts_with("server.body_limit_bytes: ")
                && err.0.ends_with("(set by STRONGROOM_SERVER__BODY_LIMIT_BYTES_FILE)"),
            "{err}"
        );
    }

    #[test]
    fn file_indirection_and_masking() {
        let dir = tempfile::tempdir().unwrap();
        let secret_file = dir.path().join("db-url");
        std::fs::write(&secret_file, "postgres://app:canary-pw-123@db.internal/strongroom?sslmode=require\n").unwrap();
        let config =
            load(&Overrides::default(), vars(&[("STRONGROOM_DATABASE_URL_FILE", secret_file.to_str().unwrap())]))
                .unwrap();
        assert_eq!(
            config.database_url().expose(),
            "postgres://app:canary-pw-123@db.internal/strongroom?sslmode=require"
        );
        let shown = config.to_masked_toml();
        assert!(!shown.contains("canary-pw-123"), "{shown}");
        assert!(shown.contains("postgres://app:****@db.internal/strongroom?****"), "{shown}");
        assert!(!format!("{config:?}").contains("canary-pw-123"));
        assert_eq!(mask_url("postgres://u:p/ss@w@db:5432/x"), "postgres://u:****@db:5432/x");
        assert_eq!(mask_url("sqlite://./data/db.sqlite"), "sqlite://./data/db.sqlite");
        assert_eq!(mask_url("garbage"), "<not a URL>");
    }

    #[test]
    fn openbao_settings_are_checked_and_the_token_masked() {
        let err = load(&Overrides::default(), vars(&[("STRONGROOM_KMS__PROVIDER", "openbao")])).unwrap_err();
        assert!(err.0.starts_with("kms.address"), "{err}");
        let config = load(
            &Overrides::default(),
            vars(&[
                ("STRONGROOM_KMS__PROVIDER", "openbao"),
                ("STRONGROOM_KMS__ADDRESS", "https://bao.internal:8200"),
                ("STRONGROOM_KMS__TOKEN", "s.canary-token-9"),
            ]),
        )
        .unwrap();
        assert!(!config.to_masked_toml().contains("canary-token"), "{}", config.to_masked_toml());
        assert!(!format!("{config:?}").contains("canary-token"));
    }

    #[test]
    fn stripe_needs_its_secrets_read_from_files_and_masked() {
        let err = load(&Overrides::default(), vars(&[("STRONGROOM_PAYMENTS__GATEWAY", "stripe")])).unwrap_err();
        assert!(err.0.starts_with("payments.stripe.secret_key"), "{err}");
        let err = load(&Overrides::default(), vars(&[("STRONGROOM_PAYMENTS__GATEWAY", "adyen")])).unwrap_err();
        assert!(err.0.starts_with("payments.gateway"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let key_file = dir.path().join("stripe-key");
        std::fs::write(&key_file, "sk_test_canary-stripe-key\n").unwrap();
        let hook_file = dir.path().join("stripe-whsec");
        std::fs::write(&hook_file, "whsec_canary-signing\n").unwrap();
        let config = load(
            &Overrides::default(),
            vars(&[
                ("STRONGROOM_PAYMENTS__GATEWAY", "stripe"),
                ("STRONGROOM_PAYMENTS__STRIPE__SECRET_KEY_FILE", key_file.to_str().unwrap()),
                ("STRONGROOM_PAYMENTS__STRIPE__WEBHOOK_SECRET_FILE", hook_file.to_str().unwrap()),
            ]),
        )
        .unwrap();
        let stripe = &config.payments.stripe;
        assert_eq!(stripe.secret_key.as_ref().unwrap().expose(), "sk_test_canary-stripe-key");
        assert_eq!(stripe.webhook_secret.as_ref().unwrap().expose(), "whsec_canary-signing");
        assert_eq!(stripe.api_base, "https://api.stripe.com");
        let shown = format!("{}{config:?}", config.to_masked_toml());
        assert!(!shown.contains("canary-stripe-key") && !shown.contains("canary-signing"), "{shown}");
    }

    #[test]
    fn validation_names_the_key() {
        let err = load(&Overrides::default(), vars(&[("STRONGROOM_DATABASE_URL", "mysql://x")])).unwrap_err();
        assert!(err.0.starts_with("database_url"), "{err}");
        let err = load(&Overrides::default(), vars(&[("STRONGROOM_SERVER__BODY_LIMIT_BYTES", "0")])).unwrap_err();
        assert!(err.0.starts_with("server.body_limit_bytes"), "{err}");
    }

    #[test]
    fn checkout_rules_are_checked_by_key_and_default_safely() {
        let config = load(&Overrides::default(), vars(&[])).unwrap();
        let rules = config.payments.checkout_rules();
        assert_eq!(rules.fraud, strongroom_domain::payments::fraud::FraudSettings::default());
        assert!(rules.step_up_above.is_empty() && rules.refund_approval_above.is_empty());
        for (key, value, named) in [
            ("STRONGROOM_PAYMENTS__STEP_UP_ABOVE", "{xyz = 100}", "payments.step_up_above"),
            ("STRONGROOM_PAYMENTS__REFUND_APPROVAL_ABOVE", "{eur = -1}", "payments.refund_approval_above.eur"),
            ("STRONGROOM_PAYMENTS__FRAUD__WINDOW", "10s", "payments.fraud.window"),
            ("STRONGROOM_PAYMENTS__FRAUD__COUNTRY_MISMATCH", "maybe", "payments.fraud.country_mismatch"),
            ("STRONGROOM_PAYMENTS__FRAUD__ISSUER_COUNTRIES", "{\"4x\" = \"US\"}", "payments.fraud.issuer_countries"),
            ("STRONGROOM_PAYMENTS__FRAUD__ISSUER_COUNTRIES", "{\"4\" = \"ZZ\"}", "payments.fraud.issuer_countries.4"),
            ("STRONGROOM_PAYMENTS__FRAUD__AMOUNT_LIMITS", "{eur = 1000000000000}", "payments.fraud.amount_limits.eur"),
        ] {
            let err = load(&Overrides::default(), vars(&[(key, value)])).unwrap_err();
            assert!(err.0.starts_with(named), "{key}: {err}");
        }
        let config =
            load(&Overrides::default(), vars(&[("STRONGROOM_PAYMENTS__STEP_UP_ABOVE", "{EUR = 50000}")])).unwrap();
        assert_eq!(
            config.payments.checkout_rules().step_up_above.get("eur"),
            Some(&50_000),
            "currencies in lower case"
        );
    }

    #[test]
    fn config_file_and_flags() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("strongroom.toml");
        std::fs::write(&file, "[server]\nlisten = \"127.0.0.1:7000\"\nbogus = 1\n").unwrap();
        let overrides = Overrides { config_file: Some(file.clone()), ..Default::default() };
        let err = load(&overrides, vars(&[])).unwrap_err();
        let file_shown = dir.path().canonicalize().unwrap().join("strongroom.toml");
        assert!(err.0.starts_with(&format!("server.bogus is unknown (in {}); ", file_shown.display())), "{err}");
        std::fs::write(&file, "[server]\nlisten = \"127.0.0.1:7000\"\n").unwrap();
        let overrides =
            Overrides { config_file: Some(file), data_dir: Some(dir.path().join("d")), ..Default::default() };
        let config = load(&overrides, vars(&[])).unwrap();
        assert_eq!(config.server.listen.port(), 7000);
        assert_eq!(config.data_dir, dir.path().join("d"));
    }
}
