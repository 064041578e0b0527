//! What every handler can reach: domain services and ports behind `Arc`, and HTTP settings.

use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use strongroom_domain::api_keys::ApiKeyService;
use strongroom_domain::merchants::MerchantDirectory;
use strongroom_domain::ports::HealthRepository;

use crate::metrics::Metrics;

/// Settings of the HTTP layer, validated by the configuration loader.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    /// Largest accepted request body in bytes.
    pub body_limit: usize,
    /// Longest a request may take before it is answered 503.
    pub request_timeout: Duration,
    /// Most requests in flight; more are shed with 503.
    pub concurrency_limit: usize,
    /// Proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<IpNet>,
    /// Whether `/metrics` is served on the API listener (with the `admin:metrics` scope).
    pub metrics_on_api: bool,
    /// The development mailbox's folder: `/dev/mailbox` lists it to clients on this machine.
    /// `None` (the default, and always when SMTP is configured): no such route.
    pub dev_mailbox: Option<std::path::PathBuf>,
    /// The merchant whose customers the hosted account pages (`/account/…`) serve; `None`: no
    /// such pages.
    pub pages_merchant: Option<strongroom_domain::merchants::MerchantId>,
    /// Whether the hosted pages let visitors create customer accounts (`/account/sign-up`).
    pub pages_sign_up: bool,
    /// Which requests get an access-log line.
    pub access_log: AccessLog,
}

/// Which requests get an access-log line (failures of the server always do, as warnings).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AccessLog {
    /// Every request.
    All,
    /// Requests answered 4xx or 5xx, and those slower than a second (the default: at full load
    /// a line per successful request costs about a quarter of the server's CPU, BENCHMARKS.md).
    #[default]
    Errors,
    /// Only server failures.
    None,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            body_limit: 1024 * 1024,
            request_timeout: Duration::from_secs(30),
            concurrency_limit: 1024,
            trusted_proxies: Vec::new(),
            metrics_on_api: true,
            dev_mailbox: None,
            pages_merchant: None,
            pages_sign_up: false,
            access_log: AccessLog::default(),
        }
    }
}

/// Shared state of the router: one `Arc`, so the per-request clones that axum makes of its state
/// cost one reference count, not one per service.
#[derive(Clone)]
pub struct AppState(Arc<Services>);

impl AppState {
    /// State over these services.
    pub fn new(services: Services) -> Self {
        Self(Arc::new(services))
    }
}

impl std::ops::Deref for AppState {
    type Target = Services;
    fn deref(&self) -> &Services {
        &self.0
    }
}

/// The services handlers reach through [`AppState`].
pub struct Services {
    /// API keys.
    pub api_keys: Arc<ApiKeyService>,
    /// Merchants.
    pub merchants: Arc<MerchantDirectory>,
    /// Database health.
    pub health: Arc<dyn HealthRepository>,
    /// Waits until what a response shows is on disk (see [`strongroom_domain::ports::Durability`]).
    pub durability: Arc<dyn strongroom_domain::ports::Durability>,
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// The audit log.
    pub audit: strongroom_domain::audit::log::AuditLog,
    /// The vault.
    pub vault: Arc<strongroom_domain::vault::tokens::VaultService>,
    /// The detokenize-and-forward proxy.
    pub forward: Arc<strongroom_domain::forward::ForwardService>,
    /// Orders, payment intents and refunds.
    pub payments: Arc<strongroom_domain::payments::PaymentsService>,
    /// Gateway events (Stripe's webhooks) and disputes.
    pub gateway_events: Arc<strongroom_domain::payments::gateway_events::GatewayEvents>,
    /// The shop's webhook endpoints.
    pub webhooks: Arc<strongroom_domain::webhooks::WebhookEndpoints>,
    /// The job runner's status.
    pub jobs: strongroom_domain::jobs::JobsStatusReader,
    /// `Idempotency-Key`.
    pub idempotency: strongroom_domain::idempotency::Idempotency,
    /// Whether this process leads the background jobs.
    pub leading: Arc<std::sync::atomic::AtomicBool>,
    /// Outbox delivery outcomes of this process, for the metrics.
    pub delivery_counters: Arc<strongroom_domain::outbox::deliver::DeliveryCounters>,
    /// OAuth 2.0 access tokens for services.
    pub access_tokens: Arc<strongroom_domain::oauth::AccessTokens>,
    /// Customer identity.
    pub identity: Arc<strongroom_domain::identity::IdentityService>,
    /// Intrusion detection's decisions (blocked clients).
    pub decisions: Arc<strongroom_domain::detection::DecisionService>,
    /// Incidents (opened by detections and staff).
    pub incidents: Arc<strongroom_domain::detection::incidents::IncidentService>,
    /// Incident playbook steps.
    pub playbooks: Arc<strongroom_domain::detection::playbooks::Playbooks>,
    /// Staff, roles and approvals.
    pub staff: Arc<strongroom_domain::staff::StaffService>,
    /// HTTP settings.
    pub settings: HttpSettings,
}

impl Services {
    /// Whether this process leads the background jobs now.
    pub fn leading(&self) -> bool {
        self.leading.load(std::sync::atomic::Ordering::Acquire)
    }
}

impl std::fmt::Debug for Services {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").field("settings", &self.settings).finish_non_exhaustive()
    }
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}
