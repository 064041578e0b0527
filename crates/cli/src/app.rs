//! Wiring: concrete adapters (store, KMS) to domain services, then the HTTP server.
//! Must never: be bypassed; every process that serves strongroom goes through [`Application::build`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use sha2::{Digest, Sha256};
use strongroom_crypto::signing::SigningKey;
use strongroom_crypto::{Kms, LocalKeyFile};
use strongroom_domain::api_keys::{ApiKeyService, ApiKeySettings};
use strongroom_domain::audit::checkpoint::CheckpointSigner;
use strongroom_domain::audit::event::{AuditEvent, Outcome};
use strongroom_domain::audit::log::AuditLog;
use strongroom_domain::bootstrap::{Bootstrapped, bootstrap_if_new};
use strongroom_domain::identity::{HashingSettings, IdentityService, IdentitySettings, PasswordHasher, PasswordPolicy};
use strongroom_domain::keyring::Keyring;
use strongroom_domain::merchants::MerchantDirectory;
use strongroom_domain::staff::{StaffService, StaffSettings};
use strongroom_domain::vault::fingerprints::FingerprintKeys;
use strongroom_domain::vault::keys::{KeySettings, VaultKeys};
use strongroom_domain::vault::tokens::{VaultService, VaultSettings};
use strongroom_http::server::{ApiTransport, RunningServer, ServeConfig};
use strongroom_http::{AppState, HttpSettings, Services};
use strongroom_store::{PoolSettings, Store};
use strongroom_types::{Clock, Entropy};

use crate::config::{Config, KmsProvider, TlsMode};
use crate::data_dir;
use strongroom_domain::payments::gateway_events::GatewayNotices;

/// The payments service and, for a gateway that sends its own notices (Stripe), their reader.
pub type PaymentsParts = (Arc<strongroom_domain::payments::PaymentsService>, Option<Arc<dyn GatewayNotices>>);

/// A connected store with migrations applied, the KMS, the unwrapped keyring and the audit log.
#[derive(Debug)]
pub struct Core {
    /// The database.
    pub store: Store,
    /// The root key provider.
    pub kms: Arc<dyn Kms>,
    /// Deployment keys.
    pub keyring: Keyring,
    /// Whether the root key file was created now.
    pub root_key_created: bool,
    /// The audit log (its writer task runs until [`AuditLog::close`]).
    pub audit: AuditLog,
    /// The vault's key hierarchy.
    pub vault_keys: Arc<VaultKeys>,
    /// The vault's fingerprint key versions.
    pub fingerprints: Arc<FingerprintKeys>,
    /// The outbox (mail, alerts and webhooks leave through it).
    pub outbox: strongroom_domain::outbox::Outbox,
}

/// The audit log's origin: configured, or `strongroom/` and 16 hex digits of the signing key's
/// SHA-256, which is stable for the deployment and unique to it.
pub fn audit_origin(config: &Config, public_key: &[u8; 32]) -> String {
    config.audit.origin.clone().unwrap_or_else(|| {
        let digest = Sha256::digest(public_key);
        let hex: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
        format!("strongroom/{hex}")
    })
}

/// The root key provider. With `create`, the local provider makes its key file when absent.
/// OpenBao's transit key is checked first: one that is not derived is refused.
async fn open_kms(config: &Config, entropy: Arc<dyn Entropy>, create: bool) -> anyhow::Result<(Arc<dyn Kms>, bool)> {
    Ok(match config.kms.provider {
        KmsProvider::Local if create => {
            let (kms, created) = LocalKeyFile::open_or_create(&config.root_key_file(), entropy)?;
            (Arc::new(kms), created)
        }
        KmsProvider::Local => (Arc::new(LocalKeyFile::open_existing(&config.root_key_file(), entropy)?), false),
        KmsProvider::Openbao => {
            let (Some(address), Some(token)) = (&config.kms.address, &config.kms.token) else {
                anyhow::bail!("kms.address and kms.token are required for the openbao provider");
            };
            let outbound = strongroom_connectors::kms::OpenBaoTransit::outbound_settings(config.kms.ca_file.clone());
            let kms = strongroom_connectors::kms::OpenBaoTransit::new(
                address,
                token.clone(),
                &config.kms.mount,
                &config.kms.key_name,
                &outbound,
            )?;
            kms.check_key().await.context("kms: the OpenBao transit key cannot be used")?;
            (Arc::new(kms), false)
        }
    })
}

/// Connects to the configured database (creating a new SQLite file with mode 0600); no migrations.
pub async fn open_store(config: &Config) -> anyhow::Result<Store> {
    let pool = PoolSettings {
        max_connections: config.database.max_connections,
        acquire_timeout: config.database.acquire_timeout,
    };
    let url = config.database_url();
    data_dir::precreate_sqlite_file(url.expose())?;
    Store::connect(url.expose(), pool)
        .await
        .with_context(|| format!("cannot open the database {}", crate::config::mask_url(url.expose())))
}

/// The deployment's checkpoint verifier key, read without changing anything: no migration, no
/// new key, no writer. Fails when the deployment has no audit signing key.
pub async fn deployment_verifier_key(config: &Config, store: &Store) -> anyhow::Result<String> {
    let kms = open_kms(config, Arc::new(strongroom_types::OsEntropy), false).await?.0;
    let seed =
        strongroom_domain::keyring::load_existing(strongroom_domain::keyring::AUDIT_SIGNING, store, kms.as_ref())
            .await?
            .context("the deployment has no audit signing key")?;
    let key = Arc::new(SigningKey::from_seed(&seed));
    let signer =
        CheckpointSigner::new(audit_origin(config, &key.public()), key).context("audit.origin is not valid")?;
    Ok(signer.verifier_key())
}

impl Core {
    /// The payments service on the configured gateway.
    pub fn payments(
        &self,
        config: &Config,
        listening: SocketAddr,
        vault: Arc<VaultService>,
        clock: Arc<dyn Clock>,
        entropy: Arc<dyn Entropy>,
    ) -> anyhow::Result<PaymentsParts> {
        let pages_origin = config.payments_pages_origin(listening);
        let (gateway, simulator, notices) = payment_gateway(config, self, clock.clone(), &pages_origin)?;
        let payments = Arc::new(strongroom_domain::payments::PaymentsService::new(
            strongroom_domain::payments::PaymentPorts {
                repo: Arc::new(self.store.clone()),
                vault,
                gateway,
                simulator,
                outbox: self.outbox.clone(),
                audit: self.audit.clone(),
                clock,
                entropy,
            },
            strongroom_domain::payments::PaymentSettings {
                gateway_timeout: config.payments.gateway_timeout,
                pages_origin,
            },
        ));
        Ok((payments, notices))
    }

    /// The checkout rules of the payments service, with the identity and staff services they use
    /// (receipts to customers, four-eyes refunds).
    pub fn checkout(
        &self,
        config: &Config,
        identity: Arc<IdentityService>,
        staff: Arc<StaffService>,
    ) -> strongroom_domain::payments::checkout::Checkout {
        strongroom_domain::payments::checkout::Checkout {
            repo: Arc::new(self.store.clone()),
            identity,
            staff,
            rules: config.payments.checkout_rules(),
        }
    }

    /// [`Self::payments`] with its checkout rules, for a command that settles payments outside
    /// the server (`payments reconcile --settle`): a payment it settles gets its receipt mail
    /// (queued in the outbox, sent by the server) as one the server settles does.
    pub async fn payments_with_checkout(
        &self,
        config: &Config,
        listening: SocketAddr,
        vault: Arc<VaultService>,
        clock: Arc<dyn Clock>,
        entropy: Arc<dyn Entropy>,
    ) -> anyhow::Result<PaymentsParts> {
        let parts = self.payments(config, listening, vault, clock.clone(), entropy.clone())?;
        let hasher = self.password_hasher(config, entropy.clone()).await?;
        let postman = strongroom_domain::mail::Postman::new(self.outbox.clone());
        let identity = self
            .identity(config, config.identity_link_base(listening), hasher.clone(), clock.clone(), entropy.clone())
            .with_postman(postman.clone());
        let staff = self.staff(config, config.staff_link_base(listening), hasher, clock, entropy).with_postman(postman);
        parts.0.set_checkout(self.checkout(config, Arc::new(identity), Arc::new(staff)));
        Ok(parts)
    }

    /// Opens the data directory, root key and database; applies migrations; loads the keyring.
    pub async fn open(config: &Config, clock: Arc<dyn Clock>, entropy: Arc<dyn Entropy>) -> anyhow::Result<Self> {
        data_dir::ensure_dir(&config.data_dir)?;
        let (kms, root_key_created) = open_kms(config, entropy.clone(), true).await?;
        let store = open_store(config).await?;
        let applied = store.migrate().await?;
        if applied > 0 {
            tracing::info!(applied, backend = store.kind().as_str(), "database migrations applied");
        }
        // A log with entries but no signing key has lost its key (or had it removed): refuse to
        // make a new one, which would sign whatever the database now holds.
        {
            use strongroom_domain::ports::{AuditRepository, KeyringRepository};
            let has_key = KeyringRepository::get(&store, strongroom_domain::keyring::AUDIT_SIGNING).await?.is_some();
            if !has_key && AuditRepository::size(&store).await? > 0 {
                anyhow::bail!(
                    "the audit log has entries but its signing key is missing from the keyring: refusing to create a new one"
                );
            }
        }
        let keyring = Keyring::load(&store, kms.as_ref(), clock.as_ref(), entropy.as_ref())
            .await
            .context("cannot load the deployment keyring (is this the root key the database was created with?)")?;
        let origin = audit_origin(config, &keyring.audit_signing.public());
        let signer = CheckpointSigner::new(origin, keyring.audit_signing.clone())
            .context("audit.origin is not a valid checkpoint key name")?;
        let (audit, _writer) = AuditLog::open(Arc::new(store.clone()), Arc::new(signer), clock.clone())
            .await
            .context("cannot open the audit log")?;
        let key_settings = KeySettings {
            kek_cache_ttl: config.vault.kek_cache_ttl,
            data_key_cache_ttl: config.vault.data_key_cache_ttl,
            ..KeySettings::default()
        };
        let fingerprints = FingerprintKeys::load(Arc::new(store.clone()), kms.clone(), clock.clone(), entropy.clone())
            .await
            .context("cannot load the vault's fingerprint keys")?;
        let outbox = strongroom_domain::outbox::Outbox::new(
            Arc::new(store.clone()),
            keyring.outbox_seal.clone(),
            clock.clone(),
            entropy.clone(),
        );
        let vault_keys = VaultKeys::open(Arc::new(store.clone()), kms.clone(), clock, entropy, key_settings)
            .await
            .context("cannot open the vault's keys")?;
        vault_keys.set_outbox(outbox.clone());
        Ok(Self {
            store,
            kms,
            keyring,
            root_key_created,
            audit,
            vault_keys: Arc::new(vault_keys),
            fingerprints: Arc::new(fingerprints),
            outbox,
        })
    }

    /// The vault service over this core.
    pub fn vault(&self, config: &Config, clock: Arc<dyn Clock>, entropy: Arc<dyn Entropy>) -> VaultService {
        VaultService::new(
            Arc::new(self.store.clone()),
            self.vault_keys.clone(),
            self.fingerprints.clone(),
            self.audit.clone(),
            clock,
            entropy,
            VaultSettings {
                reveals_per_minute: config.vault.reveals_per_minute,
                cvc_ttl: config.vault.cvc_ttl,
                writers: match self.store.kind() {
                    strongroom_store::BackendKind::Sqlite => 1,
                    strongroom_store::BackendKind::Postgres => 4,
                },
            },
        )
    }

    /// The password hasher customers and staff share (computes its dummy hash first).
    pub async fn password_hasher(
        &self,
        config: &Config,
        entropy: Arc<dyn Entropy>,
    ) -> anyhow::Result<Arc<PasswordHasher>> {
        let c = &config.identity;
        let defaults = HashingSettings::default();
        let hashing = HashingSettings {
            params: strongroom_crypto::password::PasswordParams {
                memory_kib: c.argon2_memory_kib,
                iterations: c.argon2_iterations,
                parallelism: c.argon2_parallelism,
            },
            concurrency: c.hash_concurrency.unwrap_or(defaults.concurrency),
            queue_limit: c.hash_queue,
        };
        let hasher = PasswordHasher::new(hashing, entropy).await.context("cannot set up password hashing")?;
        Ok(Arc::new(hasher))
    }

    /// The identity service over this core; mailed links start with `link_base`
    /// ([`Config::identity_link_base`]).
    pub fn identity(
        &self,
        config: &Config,
        link_base: String,
        hasher: Arc<PasswordHasher>,
        clock: Arc<dyn Clock>,
        entropy: Arc<dyn Entropy>,
    ) -> IdentityService {
        let c = &config.identity;
        let policy = PasswordPolicy { context_words: c.context_words.clone(), ..PasswordPolicy::default() };
        let settings = IdentitySettings {
            session_idle: c.session_idle,
            session_absolute: c.session_absolute,
            totp_issuer: c.totp_issuer.clone(),
            link_base,
            ..IdentitySettings::default()
        };
        IdentityService::new(
            Arc::new(self.store.clone()),
            self.vault_keys.clone(),
            self.keyring.identity_digest.clone(),
            hasher,
            policy,
            self.audit.clone(),
            clock,
            entropy,
            settings,
        )
    }

    /// Passkey ceremonies over this core, for the configured relying party.
    pub fn passkeys(
        &self,
        config: &Config,
        clock: Arc<dyn Clock>,
        entropy: Arc<dyn Entropy>,
    ) -> anyhow::Result<strongroom_domain::passkeys::Passkeys> {
        let c = &config.webauthn;
        let rp = strongroom_crypto::webauthn::RelyingParty::new(strongroom_crypto::webauthn::RelyingPartySettings {
            id: c.rp_id.clone(),
            origins: c.origins.clone(),
            name: config.identity.totp_issuer.clone(),
            allow_any_port: c.allow_any_port,
        })
        .context("webauthn: the relying party id or origins are not usable")?;
        Ok(strongroom_domain::passkeys::Passkeys::new(
            rp,
            Arc::new(self.store.clone()),
            self.keyring.identity_digest.clone(),
            clock,
            entropy,
        ))
    }

    /// The staff service over this core; invitation links start with `link_base`
    /// ([`Config::staff_link_base`]).
    pub fn staff(
        &self,
        config: &Config,
        link_base: String,
        hasher: Arc<PasswordHasher>,
        clock: Arc<dyn Clock>,
        entropy: Arc<dyn Entropy>,
    ) -> StaffService {
        let c = &config.staff;
        let settings = StaffSettings {
            session_idle: c.session_idle,
            session_absolute: c.session_absolute,
            link_base,
            totp_issuer: format!("{} staff", config.identity.totp_issuer),
            ..StaffSettings::default()
        };
        StaffService::new(
            Arc::new(self.store.clone()),
            self.vault_keys.clone(),
            self.keyring.identity_digest.clone(),
            hasher,
            config.identity.context_words.clone(),
            self.audit.clone(),
            clock,
            entropy,
            settings,
        )
    }

    /// The API key service over this core.
    pub fn api_keys(&self, config: &Config, clock: Arc<dyn Clock>, entropy: Arc<dyn Entropy>) -> ApiKeyService {
        ApiKeyService::new(
            Arc::new(self.store.clone()),
            self.keyring.api_key_digest.clone(),
            clock,
            entropy,
            ApiKeySettings { cache_ttl: config.api_keys.cache_ttl, ..ApiKeySettings::default() },
        )
        .with_audit(self.audit.clone())
    }
}

/// A running strongroom.
#[derive(Debug)]
pub struct Application {
    /// The listeners.
    pub server: RunningServer,
    /// The database.
    pub store: Store,
    /// What a first start created (only on the first start of a deployment).
    pub bootstrapped: Option<Bootstrapped>,
    /// The CA certificate clients should trust, when strongroom made its own certificate.
    pub dev_ca: Option<PathBuf>,
    /// The router's state (tests build routers of their own over it).
    pub state: AppState,
    /// The audit log.
    pub audit: AuditLog,
    /// The background jobs (they run while this process leads).
    pub jobs: strongroom_domain::jobs::RunningJobs,
    refresh: tokio::task::JoinHandle<()>,
    /// Keeps this node's copy of the intrusion-detection decisions fresh.
    decisions_refresh: tokio::task::JoinHandle<()>,
    /// SQLite: the data directory's lock, held until the application is dropped.
    _data_dir_lock: Option<std::fs::File>,
}

/// SHA-256 of the effective configuration with secrets masked: which configuration ran is
/// recorded without recording any value.
pub fn config_digest(config: &Config) -> String {
    let digest = Sha256::digest(config.to_masked_toml().as_bytes());
    format!("sha256:{}", digest.iter().map(|b| format!("{b:02x}")).collect::<String>())
}

/// A ticker for a background job: a slow round delays the next instead of bunching them up.
fn ticker(interval: std::time::Duration) -> tokio::time::Interval {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker
}

/// Picks up access-token signing key versions added by `strongroom keys rotate-oauth`.
fn spawn_signing_key_refresh(tokens: Arc<strongroom_domain::oauth::AccessTokens>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticker = ticker(strongroom_domain::oauth::REFRESH);
        ticker.tick().await;
        loop {
            ticker.tick().await;
            if let Err(err) = tokens.refresh().await {
                tracing::error!(error = %err, "reading access-token signing keys failed");
            }
        }
    })
}

/// This process's name in the job status: configured, or host name and process id.
fn node_name(config: &Config) -> String {
    config.jobs.node_name.clone().unwrap_or_else(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "localhost".to_owned());
        format!("{host}:{}", std::process::id())
    })
}

/// The outbound HTTP policy of the configuration.
pub fn outbound_settings(config: &Config) -> strongroom_connectors::outbound::OutboundSettings {
    strongroom_connectors::outbound::OutboundSettings {
        allow_private: config.outbound.allow_private,
        allow_loopback: config.outbound.allow_loopback,
        ca_file: config.outbound.ca_file.clone(),
        connect_timeout: config.outbound.connect_timeout,
        timeout: config.outbound.timeout,
    }
}

/// The payment gateway of `[payments]`: the sandbox (with its 3-D Secure stand-in) or Stripe
/// (with its webhook reader).
type GatewayParts = (
    Arc<dyn strongroom_domain::payments::gateway::Gateway>,
    Option<Arc<dyn strongroom_domain::payments::gateway::ChallengeSimulator>>,
    Option<Arc<dyn strongroom_domain::payments::gateway_events::GatewayNotices>>,
);

fn payment_gateway(
    config: &Config,
    core: &Core,
    clock: Arc<dyn strongroom_types::Clock>,
    pages_origin: &str,
) -> anyhow::Result<GatewayParts> {
    if config.payments.gateway == "stripe" {
        use strongroom_connectors::gateways::stripe::{StripeGateway, StripeNotices, StripeSettings};
        let stripe = &config.payments.stripe;
        let (Some(secret_key), Some(webhook_secret)) = (&stripe.secret_key, &stripe.webhook_secret) else {
            anyhow::bail!("payments.stripe.secret_key and payments.stripe.webhook_secret are required");
        };
        let mut outbound = outbound_settings(config);
        outbound.timeout = config.payments.gateway_timeout;
        outbound.connect_timeout = outbound.connect_timeout.min(config.payments.gateway_timeout);
        let gateway = StripeGateway::new(StripeSettings {
            api_base: stripe.api_base.clone(),
            secret_key: secret_key.clone(),
            return_url: stripe.return_url.clone(),
            pages_origin: Some(pages_origin.to_owned()),
            outbound,
            search_lag: stripe.search_lag,
        })
        .map_err(|e| anyhow::anyhow!("payments.stripe.api_base: {e}"))?;
        return Ok((Arc::new(gateway), None, Some(Arc::new(StripeNotices::new(webhook_secret.clone())))));
    }
    let sandbox = Arc::new(strongroom_connectors::gateways::sandbox::SandboxGateway::new(
        Arc::new(core.store.clone()),
        clock,
        strongroom_connectors::gateways::sandbox::SandboxSettings {
            latency: config.payments.sandbox_latency,
            challenge_base: format!("{pages_origin}/sandbox/challenges"),
        },
    ));
    Ok((sandbox.clone(), Some(sandbox), None))
}

/// The forward proxy's settings: its allow-list, and the outbound policy with its own timeout.
pub fn forward_settings(config: &Config) -> anyhow::Result<strongroom_connectors::gateways::forward::ForwardSettings> {
    use strongroom_connectors::gateways::forward::{AllowedHost, ForwardSettings};
    let allowed_hosts = config
        .forward
        .allowed_hosts
        .iter()
        .map(|entry| AllowedHost::parse(entry).map_err(|why| anyhow::anyhow!("forward.allowed_hosts: {why}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut outbound = outbound_settings(config);
    outbound.timeout = config.forward.timeout;
    outbound.connect_timeout = outbound.connect_timeout.min(config.forward.timeout);
    Ok(ForwardSettings { allowed_hosts, outbound, max_response_bytes: config.forward.max_response_bytes })
}

/// The breach corpora new passwords are looked up in: the imported file when present (or
/// configured), then the range API when configured.
pub fn breach_check(config: &Config) -> anyhow::Result<Arc<strongroom_domain::identity::BreachCheck>> {
    use strongroom_domain::ports::BreachedPasswords;
    let mut sources: Vec<Arc<dyn BreachedPasswords>> = Vec::new();
    let file = config.pwned_file();
    match strongroom_store::pwned::PwnedFile::open(&file) {
        Ok(corpus) => {
            tracing::info!(
                file = %file.display(),
                hashes = corpus.len(),
                prefix_bytes = corpus.width(),
                false_positive_rate = corpus.false_positive_rate(),
                "breached-password corpus opened"
            );
            sources.push(Arc::new(corpus));
        }
        Err(err) if err.is_not_found() && config.passwords.pwned_file.is_none() => tracing::info!(
            file = %file.display(),
            "no breached-password corpus (make one with `strongroom passwords import`); zxcvbn's lists still apply"
        ),
        Err(err) => return Err(err).context("passwords.pwned_file"),
    }
    if let Some(url) = &config.passwords.pwned_range_url {
        let timeout = config.passwords.pwned_range_timeout;
        let mut settings = outbound_settings(config);
        settings.connect_timeout = settings.connect_timeout.min(timeout);
        settings.timeout = timeout;
        let range =
            strongroom_connectors::pwned_range::PwnedRange::new(url, &settings).context("passwords.pwned_range_url")?;
        tracing::info!("breached passwords are also looked up in the range API (5 hex digits of the hash are sent)");
        sources.push(Arc::new(range));
    }
    Ok(Arc::new(strongroom_domain::identity::BreachCheck::new(sources)))
}

fn detail(what: &str, n: u64) -> String {
    if n == 0 { String::new() } else { format!("{what} {n}") }
}

/// What the periodic jobs work on.
struct JobServices {
    audit: AuditLog,
    vault: Arc<VaultService>,
    identity: Arc<IdentityService>,
    staff: Arc<StaffService>,
    deliverer: Arc<strongroom_domain::outbox::deliver::Deliverer>,
    webhooks: Arc<strongroom_domain::webhooks::WebhookEndpoints>,
    idempotency: strongroom_domain::idempotency::Idempotency,
    payments: Arc<strongroom_domain::payments::PaymentsService>,
    decisions: strongroom_domain::detection::DecisionService,
}

/// Every periodic job of the deployment; they run on the leader only.
fn jobs(config: &Config, services: JobServices) -> Vec<strongroom_domain::jobs::Job> {
    use futures::FutureExt;
    let JobServices { audit, vault, identity, staff, deliverer, webhooks, idempotency, payments, decisions } = services;
    use strongroom_domain::jobs::Job;
    let wake = deliverer.outbox().wake();
    let retention = config.jobs.delivery_log_retention;
    let mut jobs = Vec::new();
    {
        let deliverer = deliverer.clone();
        jobs.push(
            Job::new("outbox.deliver", std::time::Duration::from_millis(250), move || {
                let deliverer = deliverer.clone();
                async move {
                    let mut total = strongroom_domain::outbox::deliver::Round::default();
                    // Drain while there is work; a full batch means more may be due.
                    loop {
                        let round = deliverer.round().await?;
                        total.claimed += round.claimed;
                        total.delivered += round.delivered;
                        total.failed += round.failed;
                        if round.claimed < deliverer.batch as usize {
                            break;
                        }
                    }
                    Ok(if total.claimed == 0 {
                        String::new()
                    } else {
                        format!("delivered {}, failed {}", total.delivered, total.failed)
                    })
                }
                .boxed()
            })
            .woken_by(wake)
            .quiet(),
        );
    }
    {
        let (deliverer, webhooks) = (deliverer.clone(), webhooks.clone());
        jobs.push(Job::new("outbox.maintenance", std::time::Duration::from_secs(300), move || {
            let (deliverer, webhooks) = (deliverer.clone(), webhooks.clone());
            async move {
                let outbox = deliverer.outbox();
                let before = strongroom_types::Timestamp::from_unix_millis(
                    outbox.now().unix_millis() - i64::try_from(retention.as_millis()).unwrap_or(i64::MAX),
                );
                let purged = outbox.repo().purge_outbox(before, 10_000).await?;
                let disabled = webhooks.disable_failing().await?;
                let mut parts = vec![detail("purged", purged), detail("endpoints disabled", disabled as u64)];
                parts.retain(|p| !p.is_empty());
                Ok(parts.join(", "))
            }
            .boxed()
        }));
    }
    jobs.push(Job::new("detection.purge", std::time::Duration::from_secs(300), move || {
        let decisions = decisions.clone();
        async move { Ok(detail("purged", decisions.purge().await?)) }.boxed()
    }));
    {
        let payments = payments.clone();
        jobs.push(Job::new("payments.fraud_signals_purge", std::time::Duration::from_secs(600), move || {
            let payments = payments.clone();
            async move { Ok(detail("purged", payments.purge_fraud_signals().await?)) }.boxed()
        }));
    }
    jobs.push(Job::new("idempotency.purge", std::time::Duration::from_secs(600), move || {
        let idempotency = idempotency.clone();
        async move { Ok(detail("purged", idempotency.purge().await?)) }.boxed()
    }));
    jobs.push(Job::new("audit.checkpoint", config.audit.checkpoint_interval, move || {
        let audit = audit.clone();
        async move { Ok(format!("size {}", audit.checkpoint().await?.size)) }.boxed()
    }));
    {
        let vault = vault.clone();
        jobs.push(Job::new("vault.purge_expired", config.vault.purge_interval, move || {
            let vault = vault.clone();
            async move { Ok(detail("purged", vault.purge_expired().await?)) }.boxed()
        }));
    }
    jobs.push(Job::new("vault.rewrap", config.vault.rewrap_interval, move || {
        let vault = vault.clone();
        async move {
            // Resumable: each data key and fingerprint moves by compare-and-set.
            let moved = vault.keys().rewrap_all(1000, |_| {}).await?;
            vault.fingerprints().refresh().await?;
            let refingerprinted = vault.refingerprint_all(|_| {}).await?;
            let mut parts =
                vec![detail("data keys rewrapped", moved), detail("fingerprints recomputed", refingerprinted)];
            parts.retain(|p| !p.is_empty());
            Ok(parts.join(", "))
        }
        .boxed()
    }));
    jobs.push(Job::new("identity.purge", config.identity.purge_interval, move || {
        let (identity, staff) = (identity.clone(), staff.clone());
        async move { Ok(detail("purged", identity.purge().await? + staff.purge().await?)) }.boxed()
    }));
    let lookback = config.payments.reconcile_lookback;
    jobs.push(Job::new(strongroom_domain::payments::reconcile::JOB, config.payments.reconcile_interval, move || {
        let payments = payments.clone();
        async move {
            use strongroom_domain::payments::reconcile::ReconcileMode;
            Ok(payments.reconcile_within(lookback, ReconcileMode::Settle).await?.summary())
        }
        .boxed()
    }));
    jobs
}

/// The configured mailer: SMTP, or (with no SMTP server configured) the development mailbox in
/// the data directory, whose folder is returned for `/dev/mailbox`.
fn mailer(config: &Config) -> anyhow::Result<(Arc<dyn strongroom_domain::mail::Mailer>, Option<PathBuf>)> {
    use strongroom_connectors::mail::{FileMailer, SmtpMailer, SmtpSecurity, SmtpSettings};
    let mail = &config.mail;
    let Some(host) = &mail.smtp_host else {
        let dir = config.data_dir.join("mail");
        let mailer = FileMailer::new(dir.clone(), &mail.from).context("cannot set up the development mailbox")?;
        tracing::warn!(dir = %dir.display(), "no SMTP server configured: mail goes to the development mailbox (/dev/mailbox)");
        return Ok((Arc::new(mailer), Some(dir)));
    };
    let dkim = match (&mail.dkim_domain, &mail.dkim_selector, &mail.dkim_private_key_file) {
        (Some(domain), Some(selector), Some(file)) => {
            // Owner-only permissions, checked before reading, as for the root key.
            let mut text = strongroom_crypto::secret_file::read_secret_file(file)
                .with_context(|| format!("mail.dkim_private_key_file {}", file.display()))?;
            Some(strongroom_connectors::mail::DkimSettings {
                domain: domain.clone(),
                selector: selector.clone(),
                private_key: strongroom_types::Secret::new(std::mem::take(&mut *text)),
                algorithm: match mail.dkim_algorithm {
                    crate::config::DkimAlgorithm::Auto => strongroom_connectors::mail::DkimAlgorithm::Auto,
                    crate::config::DkimAlgorithm::RsaSha256 => strongroom_connectors::mail::DkimAlgorithm::RsaSha256,
                    crate::config::DkimAlgorithm::Ed25519Sha256 => {
                        strongroom_connectors::mail::DkimAlgorithm::Ed25519Sha256
                    }
                },
            })
        }
        _ => None,
    };
    let settings = SmtpSettings {
        host: host.clone(),
        port: mail.smtp_port,
        security: match mail.smtp_security {
            crate::config::SmtpSecurity::Starttls => SmtpSecurity::StartTls,
            crate::config::SmtpSecurity::Tls => SmtpSecurity::Tls,
            crate::config::SmtpSecurity::None => SmtpSecurity::None,
        },
        credentials: match (&mail.smtp_username, &mail.smtp_password) {
            (Some(user), Some(password)) => Some((user.clone(), password.clone())),
            _ => None,
        },
        from: mail.from.clone(),
        dkim,
    };
    Ok((Arc::new(SmtpMailer::new(&settings).context("cannot set up the SMTP mailer")?), None))
}

/// The API transport and, for a development certificate, the CA file clients should trust.
fn transport(config: &Config) -> anyhow::Result<(ApiTransport, Option<PathBuf>)> {
    Ok(match config.server.tls {
        TlsMode::TerminatedUpstream => (ApiTransport::PlainBehindProxy, None),
        TlsMode::Builtin => {
            let (cert, key, dev_ca) = match (&config.tls.cert_file, &config.tls.key_file) {
                (Some(cert), Some(key)) => (cert.clone(), key.clone(), None),
                _ => {
                    let (files, _) = data_dir::ensure_dev_tls(&config.tls_dir())?;
                    (files.cert, files.key, Some(files.ca))
                }
            };
            let cert_pem = std::fs::read(&cert).with_context(|| format!("tls.cert_file {}", cert.display()))?;
            let key_pem = std::fs::read(&key).with_context(|| format!("tls.key_file {}", key.display()))?;
            let tls = strongroom_http::tls::server_config(&cert_pem, &key_pem)?;
            (ApiTransport::Tls(tls), dev_ca)
        }
    })
}

impl Application {
    /// Opens everything, bootstraps a new deployment, and starts serving.
    pub async fn build(config: &Config, clock: Arc<dyn Clock>, entropy: Arc<dyn Entropy>) -> anyhow::Result<Self> {
        // SQLite: this process alone serves the data directory, and so leads the jobs.
        let data_dir_lock = match strongroom_store::BackendKind::of_url(config.database_url().expose()) {
            Some(strongroom_store::BackendKind::Sqlite) => Some(data_dir::lock_for_serving(&config.data_dir)?),
            _ => None,
        };
        let core = Core::open(config, clock.clone(), entropy.clone()).await?;
        if data_dir_lock.is_some() {
            // Deliveries leased by this directory's previous process died with it.
            use strongroom_domain::outbox::OutboxRepository;
            let released = core.store.release_leases().await?;
            if released > 0 {
                tracing::info!(released, "outbox deliveries left in flight by the previous run are due again");
            }
        }
        let api_keys = Arc::new(core.api_keys(config, clock.clone(), entropy.clone()));
        let transport = transport(config)?;
        // Before the first start's bootstrap key is made: an unusable corpus fails the start first.
        let breaches = breach_check(config)?;
        let serve = ServeConfig {
            api_addr: config.server.listen,
            transport: transport.0.clone(),
            redirect_addr: config.server.redirect_listen,
            metrics_addr: config.metrics.listen,
            shutdown_grace: config.server.shutdown_grace,
        };
        // Bind before anything changes: a busy port must fail the first start before the
        // bootstrap key is created (it is shown only once).
        let listeners = strongroom_http::server::BoundListeners::bind(&serve)
            .with_context(|| format!("cannot listen on server.listen {}", config.server.listen))?;
        let dev_ca = transport.1;
        // Links in mail lead to this listener unless the configuration says where people reach
        // it; with port 0 that is the port the system chose.
        let listening = listeners.api_addr().context("cannot read the API listener's address")?;
        if config.link_bases_guessed() {
            tracing::warn!(
                identity_link_base = %config.identity_link_base(listening),
                staff_link_base = %config.staff_link_base(listening),
                "identity.link_base or staff.link_base is not set and the listener's address does not say where \
                 people reach it: mailed links use these defaults, which work only on this machine; set both"
            );
        }
        let bootstrapped = bootstrap_if_new(&core.store, &api_keys, entropy.as_ref()).await?;
        let audit = core.audit.clone();
        if let Some(boot) = &bootstrapped {
            let event = AuditEvent::system("deployment.bootstrapped", Outcome::Success)
                .for_merchant(&boot.merchant.id)
                .on("merchant", boot.merchant.id.as_str());
            audit.record(event).await?;
        }
        audit.record(AuditEvent::system("server.started", Outcome::Success)).await?;
        let loaded = AuditEvent::system("config.loaded", Outcome::Success).on("configuration", config_digest(config));
        audit.record(loaded).await?;

        let mut settings = HttpSettings {
            body_limit: config.server.body_limit_bytes,
            request_timeout: config.server.request_timeout,
            concurrency_limit: config.server.concurrency_limit,
            trusted_proxies: config.server.trusted_proxies.clone(),
            metrics_on_api: config.metrics.listen.is_none(),
            dev_mailbox: None,
            pages_merchant: None,
            pages_sign_up: config.pages.enabled && config.pages.sign_up,
            access_log: match config.access_log {
                crate::config::AccessLogConfig::All => strongroom_http::state::AccessLog::All,
                crate::config::AccessLogConfig::Errors => strongroom_http::state::AccessLog::Errors,
                crate::config::AccessLogConfig::None => strongroom_http::state::AccessLog::None,
            },
        };
        if config.pages.enabled {
            settings.pages_merchant = match &config.pages.merchant {
                Some(id) => Some(
                    strongroom_domain::merchants::MerchantId::parse(id)
                        .map_err(|e| anyhow::anyhow!("pages.merchant: {e}"))?,
                ),
                None => core.store.first_merchant().await?,
            };
        }
        let alert_destination = match (&config.alerts.webhook_url, &config.alerts.webhook_secret) {
            (Some(url), Some(secret)) => Some(strongroom_domain::outbox::deliver::AlertDestination {
                url: url.clone(),
                secret: strongroom_types::Secret::new(secret.expose().as_bytes().to_vec()),
            }),
            _ => None,
        };
        let alerts = strongroom_domain::alerts::SecurityAlerts::new(core.outbox.clone(), alert_destination.is_some());
        let vault = Arc::new(core.vault(config, clock.clone(), entropy.clone()).with_alerts(alerts));
        let (mailer, dev_mailbox) = mailer(config)?;
        let hasher = core.password_hasher(config, entropy.clone()).await?;
        let postman = strongroom_domain::mail::Postman::new(core.outbox.clone());
        let outbound = outbound_settings(config);
        let webhooks = Arc::new(strongroom_domain::webhooks::WebhookEndpoints::new(
            Arc::new(core.store.clone()),
            Arc::new(core.store.clone()),
            core.outbox.clone(),
            core.keyring.outbox_seal.clone(),
            Arc::new(strongroom_connectors::webhooks::OutboundPolicy(outbound.clone())),
            audit.clone(),
            clock.clone(),
            entropy.clone(),
        ));
        let forwarder = strongroom_connectors::gateways::forward::HttpForwarder::new(forward_settings(config)?)
            .context("cannot set up the forward proxy's HTTP client")?;
        let forward = Arc::new(strongroom_domain::forward::ForwardService::new(
            vault.clone(),
            Arc::new(forwarder),
            audit.clone(),
        ));
        let sender = strongroom_connectors::webhooks::HttpWebhookSender::new(outbound)
            .context("cannot set up the outbound HTTP client")?;
        let deliverer = Arc::new(strongroom_domain::outbox::deliver::Deliverer::new(
            core.outbox.clone(),
            webhooks.clone(),
            mailer,
            Arc::new(sender),
            alert_destination,
            entropy.clone(),
        ));
        let passkeys = Arc::new(core.passkeys(config, clock.clone(), entropy.clone())?);
        let identity = Arc::new(
            core.identity(config, config.identity_link_base(listening), hasher.clone(), clock.clone(), entropy.clone())
                .with_postman(postman.clone())
                .with_passkeys(passkeys.clone())
                .with_breach_check(breaches.clone()),
        );
        let staff = Arc::new(
            core.staff(config, config.staff_link_base(listening), hasher, clock.clone(), entropy.clone())
                .with_postman(postman)
                .with_passkeys(passkeys)
                .with_breach_check(breaches),
        );
        let (payments, notices) = core.payments(config, listening, vault.clone(), clock.clone(), entropy.clone())?;
        payments.set_checkout(core.checkout(config, identity.clone(), staff.clone()));
        let gateway_events = Arc::new(strongroom_domain::payments::gateway_events::GatewayEvents::new(
            payments.clone(),
            Arc::new(core.store.clone()),
            notices,
        ));
        let counts: Arc<dyn strongroom_domain::ports::detection::SharedCounts> = match &config.detection.redis_url {
            Some(url) => {
                let ca = match &config.detection.redis_ca_file {
                    Some(path) => Some(
                        std::fs::read(path)
                            .with_context(|| format!("detection.redis_ca_file: reading {}", path.display()))?,
                    ),
                    None => None,
                };
                Arc::new(
                    strongroom_connectors::redis_counts::RedisCounts::connect(url.expose(), ca.as_deref())
                        .await
                        .context("detection.redis_url: Redis does not answer")?,
                )
            }
            None => Arc::new(core.store.clone()),
        };
        let decisions = strongroom_domain::detection::DecisionService::new(
            Arc::new(core.store.clone()),
            counts.clone(),
            core.outbox.clone(),
            audit.clone(),
            clock.clone(),
            entropy.clone(),
            config.detection.settings(),
        );
        decisions.refresh(true).await.context("cannot read the intrusion-detection decisions")?;
        if let Some(path) = &config.detection.geoip_database {
            let geo = strongroom_connectors::geoip::MmdbLocator::open(path)
                .with_context(|| format!("detection.geoip_database: {}", path.display()))?;
            decisions.set_geo(Arc::new(geo));
        }
        let decisions_refresh = decisions.spawn_refresh();
        let incidents = strongroom_domain::detection::incidents::IncidentService::new(
            Arc::new(core.store.clone()),
            core.outbox.clone(),
            audit.clone(),
            clock.clone(),
            entropy.clone(),
            config.detection.incident_settings(),
        );
        decisions.set_incidents(incidents.clone());
        incidents.set_alert_mail(strongroom_domain::detection::alert_mail::AlertMail::new(
            staff.clone(),
            counts,
            core.outbox.clone(),
            clock.clone(),
            config.detection.alert_mail_settings(),
        ));
        let freezes = strongroom_domain::detection::playbooks::Freezes::new(Arc::new(core.store.clone()));
        payments.set_freezes(freezes.clone());
        forward.set_freezes(freezes);
        let playbooks = strongroom_domain::detection::playbooks::Playbooks::new(
            incidents.clone(),
            decisions.clone(),
            identity.clone(),
            staff.clone(),
            audit.clone(),
        );
        identity.set_decisions(decisions.clone());
        staff.set_decisions(decisions.clone());
        decisions.set_accounts(Arc::new(strongroom_domain::detection::accounts::AccountResponder::new(
            identity.clone(),
            staff.clone(),
        )));
        vault.set_detection(decisions.clone());
        payments.set_detection(decisions.clone());
        vault.set_dual_control(staff.clone());
        webhooks.set_owner_notices(staff.clone());
        // Behind a TLS-terminating proxy every client reaches us from the proxy: no dev mailbox.
        settings.dev_mailbox = dev_mailbox.filter(|_| config.server.tls == TlsMode::Builtin);
        let access_tokens = Arc::new(
            strongroom_domain::oauth::AccessTokens::open(
                Arc::new(core.store.clone()),
                core.kms.clone(),
                api_keys.clone(),
                clock.clone(),
                entropy.clone(),
                strongroom_domain::oauth::OAuthSettings {
                    issuer: config.oauth.issuer.clone(),
                    audience: config.oauth.audience.clone(),
                    token_ttl: config.oauth.token_ttl,
                },
            )
            .await
            .context("cannot load the access-token signing keys")?,
        );
        let refresh = spawn_signing_key_refresh(access_tokens.clone());
        let leadership: Arc<dyn strongroom_domain::jobs::Leadership> =
            match strongroom_store::PgLeadership::for_store(&core.store) {
                Some(pg) => Arc::new(pg),
                None => Arc::new(strongroom_domain::jobs::SoleProcess),
            };
        let runner = strongroom_domain::jobs::JobRunner::new(
            leadership,
            Arc::new(core.store.clone()),
            clock.clone(),
            node_name(config),
        );
        let delivery_counters = deliverer.counters.clone();
        let idempotency = strongroom_domain::idempotency::Idempotency::new(
            Arc::new(core.store.clone()),
            core.keyring.identity_digest.clone(),
            core.keyring.outbox_seal.clone(),
            clock.clone(),
            entropy.clone(),
            config.server.request_timeout + std::time::Duration::from_secs(30),
        );
        let jobs = runner.start(jobs(
            config,
            JobServices {
                audit: audit.clone(),
                vault: vault.clone(),
                identity: identity.clone(),
                staff: staff.clone(),
                deliverer,
                webhooks: webhooks.clone(),
                idempotency: idempotency.clone(),
                payments: payments.clone(),
                decisions: decisions.clone(),
            },
        ));
        let state = AppState::new(Services {
            decisions: Arc::new(decisions),
            incidents: Arc::new(incidents),
            playbooks: Arc::new(playbooks),
            access_tokens,
            identity,
            staff,
            vault,
            forward,
            payments,
            gateway_events,
            webhooks,
            jobs: strongroom_domain::jobs::JobsStatusReader::new(
                Arc::new(core.store.clone()),
                Arc::new(core.store.clone()),
                clock.clone(),
            ),
            idempotency,
            leading: jobs.leading_flag(),
            delivery_counters,
            api_keys,
            merchants: Arc::new(MerchantDirectory::new(
                Arc::new(core.store.clone()),
                clock.clone(),
                config.api_keys.cache_ttl,
            )),
            health: Arc::new(core.store.clone()),
            durability: Arc::new(core.store.clone()),
            metrics: Arc::new(strongroom_http::metrics::Metrics::new()),
            audit: audit.clone(),
            settings,
        });
        let server = RunningServer::serve(listeners, serve, state.clone()).context("cannot start serving")?;
        tracing::info!(
            api = %server.api_addr,
            backend = core.store.kind().as_str(),
            kms = %core.kms.key_id(),
            "strongroom serving"
        );
        audit.checkpoint().await?;
        Ok(Self {
            server,
            store: core.store,
            bootstrapped,
            dev_ca,
            state,
            audit,
            jobs,
            refresh,
            decisions_refresh,
            _data_dir_lock: data_dir_lock,
        })
    }

    /// Where the API listens.
    pub fn api_addr(&self) -> SocketAddr {
        self.server.api_addr
    }

    /// Stops accepting, finishes in-flight requests, logs the stop, makes a last checkpoint,
    /// flushes the audit log and closes the pool.
    pub async fn shutdown(self) {
        self.server.shutdown().await;
        self.refresh.abort();
        self.decisions_refresh.abort();
        self.jobs.stop().await;
        if let Err(err) = self.audit.record(AuditEvent::system("server.stopped", Outcome::Success)).await {
            tracing::error!(error = %err, "could not log the stop");
        }
        if let Err(err) = self.audit.checkpoint().await {
            tracing::error!(error = %err, "could not make the final checkpoint");
        }
        self.audit.close().await;
        self.store.close().await;
        tracing::info!("strongroom stopped");
    }
}
