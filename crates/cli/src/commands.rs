//! The subcommands of the `strongroom` binary.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use strongroom_domain::api_keys::{ApiKeyId, NewApiKey};
use strongroom_domain::merchants::MerchantId;
use strongroom_types::{Clock, Entropy, OsEntropy, SystemClock};

use crate::app::{Application, Core};
use crate::config::{self, Config, LogFormat, Overrides, TlsMode};

/// strongroom: the security core of an online shop (vault, identity, staff, webhooks, audit).
#[derive(Debug, Parser)]
#[command(name = "strongroom", version, propagate_version = true)]
pub struct Cli {
    /// Configuration file (default: ./strongroom.toml when present).
    #[arg(long, global = true, env = "STRONGROOM_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Data directory: database, root key, TLS files (default ./strongroom-data).
    #[arg(long, global = true, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Database: sqlite://PATH (default, in the data directory) or postgres://…
    #[arg(long, global = true, value_name = "URL")]
    pub database_url: Option<String>,
    /// Log format on standard error.
    #[arg(long, global = true, value_enum)]
    pub log_format: Option<LogFormat>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (HTTPS on 127.0.0.1:8443 by default). The first start creates the data
    /// directory, the default merchant and a bootstrap API key, printed once.
    Serve,
    /// Apply pending database migrations and exit (serve also applies them at start).
    Migrate,
    /// Inspect the configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Create, list and revoke API keys directly in the database.
    #[command(subcommand)]
    Apikey(ApiKeyCommand),
    /// The tamper-evident audit log: public key, checkpoint, verification, export, witness.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// The deployment's keys: the vault's key-encryption keys (status, rotate, rewrap, retire), the
    /// KMS root key (rewrap-root), the fingerprint key (rotate-fingerprint) and the access-token
    /// signing keys (rotate-oauth, retire-oauth).
    #[command(subcommand)]
    Keys(crate::keys::KeysCommand),
    /// Staff accounts: invite the first owner.
    #[command(subcommand)]
    Staff(StaffCommand),
    /// Breached passwords: import Have I Been Pwned's corpus for offline checks.
    #[command(subcommand)]
    Passwords(crate::passwords::PasswordsCommand),
    /// The background job runner: leader, each job's last run, the outbox's depth and lag.
    #[command(subcommand)]
    Jobs(JobsCommand),
    /// Payments: reconcile calls the gateway did not answer with what the gateway says.
    #[command(subcommand)]
    Payments(crate::payments::PaymentsCommand),
    /// Intrusion detection's decisions (blocked clients, suspended API keys): list, lift, extend.
    #[command(subcommand)]
    Decisions(crate::decisions::DecisionsCommand),
    /// Replay a bounded attack against a running strongroom (loopback, or a host named with
    /// --allow-host) with a concurrent normal-user load, and report how detection did. Exit 0
    /// when the attack was blocked within its bound and no normal user was refused.
    Drill(crate::drill::DrillArgs),
    /// Security incidents of every merchant: list, show, resolve, run a playbook step.
    #[command(subcommand)]
    Incidents(crate::incidents::IncidentsCommand),
    /// Exit 0 when a running server answers /readyz with 200, 1 otherwise.
    Healthcheck {
        /// The readiness URL (default: derived from server.listen).
        #[arg(long)]
        url: Option<String>,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 5)]
        timeout_secs: u64,
    },
}

/// `config` subcommands.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate the configuration and print the effective values, secrets masked.
    Check,
}

/// `audit` subcommands.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Print the checkpoint verifier key (signed-note form: name+id+key).
    PublicKey,
    /// Make a signed checkpoint now (servers also make one at start, every
    /// audit.checkpoint_interval and at stop) and print it.
    Checkpoint,
    /// Recompute the tree from every stored entry, check every checkpoint's signature and root and
    /// the stored hashes; name the first entry that was changed, removed, inserted or reordered.
    /// Exit 0 only when everything holds.
    Verify {
        /// The verifier key to trust (from `audit public-key`, kept apart from the database).
        /// Without it the key in the deployment's own keyring is used, which an attacker with
        /// the database and the root key could have replaced.
        #[arg(long)]
        public_key: Option<String>,
    },
    /// Write entries (JSON lines with leaf encodings), checkpoints and the public key to a
    /// directory, for verification without strongroom.
    Export {
        /// The directory to create.
        #[arg(long)]
        out: PathBuf,
    },
    /// Follow another instance's checkpoints and report (exit 1) a rollback or a split view.
    /// Needs an API key with audit:read in STRONGROOM_WITNESS_API_KEY.
    Witness {
        /// The instance's base URL, e.g. https://vault.shop.internal:8443
        #[arg(long)]
        url: String,
        /// The instance's checkpoint verifier key (from `strongroom audit public-key`, obtained out of band).
        #[arg(long)]
        public_key: String,
        /// Where the last verified checkpoint is kept.
        #[arg(long, default_value = "strongroom-witness.json")]
        state: PathBuf,
        /// A CA certificate to trust for the instance's TLS (e.g. its tls/ca.pem in development).
        #[arg(long)]
        cacert: Option<PathBuf>,
        /// Keep following, checking every N seconds (default: check once and exit).
        #[arg(long)]
        follow_secs: Option<u64>,
    },
}

/// `staff` subcommands.
#[derive(Debug, Subcommand)]
pub enum StaffCommand {
    /// Invite a staff member with roles (the way to make the first owner) and print the
    /// invitation link once (JSON on standard output), for the operator to hand over.
    Invite {
        /// Their email.
        #[arg(long)]
        email: String,
        /// A role to give (repeat for several): owner, admin, support, finance, security, auditor.
        #[arg(long = "role", required = true)]
        roles: Vec<String>,
        /// The merchant (default: the deployment's first merchant).
        #[arg(long)]
        merchant: Option<String>,
    },
}

/// `apikey` subcommands.
#[derive(Debug, Subcommand)]
pub enum ApiKeyCommand {
    /// Create a key and print it once (JSON on standard output).
    Create {
        /// A name for the key.
        #[arg(long)]
        name: String,
        /// A scope to grant (repeat for several). Known scopes: admin:api_keys, admin:metrics.
        #[arg(long = "scope", required = true)]
        scopes: Vec<String>,
        /// live or test.
        #[arg(long, default_value = "live")]
        mode: String,
        /// Expire after this long, e.g. 30d or 12h.
        #[arg(long, value_parser = humantime_duration)]
        expires_in: Option<Duration>,
        /// The merchant (default: the deployment's first merchant).
        #[arg(long)]
        merchant: Option<String>,
    },
    /// Make a decoy key and print it once (JSON): shaped and stored like any key, without
    /// scopes. Plant it where only a thief would find it; any request presenting it answers 401
    /// as an unknown key does, blocks the client everywhere and opens a critical incident.
    Decoy {
        /// A name for the key (listed like any key's: make it plausible).
        #[arg(long)]
        name: String,
        /// live or test (which key prefix it carries).
        #[arg(long, default_value = "live")]
        mode: String,
        /// The merchant (default: the deployment's first merchant).
        #[arg(long)]
        merchant: Option<String>,
    },
    /// List a merchant's keys (never their secrets).
    List {
        /// The merchant (default: the deployment's first merchant).
        #[arg(long)]
        merchant: Option<String>,
    },
    /// Revoke a key. A running server notices within api_keys.cache_ttl (5 s by default).
    Revoke {
        /// `key_…`
        id: String,
        /// The merchant (default: the deployment's first merchant).
        #[arg(long)]
        merchant: Option<String>,
    },
}

fn humantime_duration(text: &str) -> Result<Duration, String> {
    humantime_serde::re::humantime::parse_duration(text).map_err(|e| e.to_string())
}

/// Exit codes: 0 success, 1 failure, 2 bad configuration or usage.
pub async fn run(cli: Cli) -> i32 {
    let overrides = Overrides {
        config_file: cli.config.clone(),
        data_dir: cli.data_dir.clone(),
        database_url: cli.database_url.clone(),
        log_format: cli.log_format,
    };
    let config = match config::load(&overrides, std::env::vars()) {
        Ok(config) => config,
        Err(err) => {
            let _ = writeln!(std::io::stderr(), "configuration error: {err}");
            return 2;
        }
    };
    let logs_to_stderr = !matches!(cli.command, Command::Config(_) | Command::Healthcheck { .. });
    let _flush_logs_at_exit = logs_to_stderr.then(|| crate::logging::init(config.log_format, &config.log_level));
    let result = match cli.command {
        Command::Serve => serve(&config).await,
        Command::Migrate => migrate(&config).await,
        Command::Config(ConfigCommand::Check) => {
            print(&config.to_masked_toml());
            match &config.detection.geoip_database {
                None => print("# impossible travel: off (detection.geoip_database is not set)"),
                Some(path) => match strongroom_connectors::geoip::MmdbLocator::open(path) {
                    Ok(_) => print("# impossible travel: on (detection.geoip_database)"),
                    Err(err) => print(&format!("# impossible travel: detection.geoip_database cannot be read: {err}")),
                },
            }
            Ok(())
        }
        Command::Apikey(command) => apikey(&config, command).await,
        Command::Keys(command) => crate::keys::run(&config, command).await,
        Command::Staff(command) => staff(&config, command).await,
        Command::Passwords(command) => crate::passwords::run(&config, command).await,
        Command::Jobs(JobsCommand::Status) => jobs_status(&config).await,
        Command::Decisions(command) => crate::decisions::run(&config, command).await,
        Command::Drill(args) => return crate::drill::command(&config, args).await,
        Command::Incidents(command) => crate::incidents::run(&config, command).await,
        Command::Payments(command) => match crate::payments::run(&config, command).await {
            Ok(code) => return code,
            Err(err) => Err(err),
        },
        Command::Audit(command) => match audit(&config, command).await {
            Ok(code) => return code,
            Err(err) => Err(err),
        },
        Command::Healthcheck { url, timeout_secs } => {
            return healthcheck(&config, url, timeout_secs).await;
        }
    };
    match result {
        Ok(()) => 0,
        Err(err) => {
            let _ = writeln!(std::io::stderr(), "error: {err:#}");
            1
        }
    }
}

/// Writes a command's result to standard output (logs go to standard error).
pub(crate) fn print(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    if !text.ends_with('\n') {
        let _ = out.write_all(b"\n");
    }
    let _ = out.flush();
}

async fn serve(config: &Config) -> anyhow::Result<()> {
    let signals = ShutdownSignals::install();
    let app = Application::build(config, Arc::new(SystemClock), Arc::new(OsEntropy)).await?;
    print(&banner(config, &app));
    signals.wait().await;
    tracing::info!("shutdown requested; finishing in-flight requests");
    app.shutdown().await;
    Ok(())
}

/// The URL clients use for a listener (an unspecified address is reached on 127.0.0.1).
fn base_url(tls: TlsMode, addr: std::net::SocketAddr) -> String {
    let scheme = if tls == TlsMode::Builtin { "https" } else { "http" };
    let host = match addr.ip() {
        ip if ip.is_unspecified() => "127.0.0.1".to_owned(),
        std::net::IpAddr::V6(ip) => format!("[{ip}]"),
        ip => ip.to_string(),
    };
    format!("{scheme}://{host}:{}", addr.port())
}

fn banner(config: &Config, app: &Application) -> String {
    let base = base_url(config.server.tls, app.api_addr());
    let mut text = format!(
        "strongroom {} is serving ({} database)\n  API        {base}/v1/\n  OpenAPI    {base}/openapi.json\n  Health     {base}/healthz  (ready: {base}/readyz)\n",
        env!("CARGO_PKG_VERSION"),
        app.store.kind().as_str(),
    );
    let ca = app.dev_ca.as_ref().map(|ca| ca.display().to_string());
    if let Some(ca) = &ca {
        text.push_str(&format!("  TLS        development certificate; clients trust {ca}\n"));
    }
    let curl_ca = ca.map(|ca| format!("--cacert {ca} ")).unwrap_or_default();
    match &app.bootstrapped {
        Some(boot) => {
            text.push_str(&format!(
                "\nFirst start: created merchant {} and this bootstrap API key with every scope.\n\
                 It is shown only now (strongroom keeps only a keyed digest); store it in your secret manager:\n\n    {}\n\n\
                 Try it:\n    curl {curl_ca}-H \"Authorization: Bearer <key>\" {base}/v1/merchant\n\
                 Then create narrower keys (POST /v1/api-keys or `strongroom apikey create`) and revoke this one.\n",
                boot.merchant.id,
                boot.api_key.expose(),
            ));
        }
        None => text.push_str(&format!(
            "\n  Try        curl {curl_ca}-H \"Authorization: Bearer $STRONGROOM_API_KEY\" {base}/v1/merchant\n"
        )),
    }
    text.push_str("Stop with Ctrl-C (in-flight requests finish first).\n");
    text
}

/// SIGTERM and SIGINT, listened for from the moment this is made: a signal that arrives while
/// the server is still starting, or right after the banner, still shuts it down gracefully
/// instead of killing it with the default disposition.
struct ShutdownSignals {
    #[cfg(unix)]
    terminate: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    interrupt: Option<tokio::signal::unix::Signal>,
}

impl ShutdownSignals {
    fn install() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Self { terminate: signal(SignalKind::terminate()).ok(), interrupt: signal(SignalKind::interrupt()).ok() }
        }
        #[cfg(not(unix))]
        {
            Self {}
        }
    }

    async fn wait(mut self) {
        #[cfg(unix)]
        {
            async fn next(signal: Option<&mut tokio::signal::unix::Signal>) {
                match signal {
                    Some(signal) => {
                        signal.recv().await;
                    }
                    None => std::future::pending().await,
                }
            }
            tokio::select! {
                () = next(self.terminate.as_mut()) => {},
                () = next(self.interrupt.as_mut()) => {},
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// `strongroom jobs …`
#[derive(Debug, Subcommand)]
pub enum JobsCommand {
    /// Prints the job runner's status as JSON (read from the database; no server needed).
    Status,
}

async fn jobs_status(config: &Config) -> anyhow::Result<()> {
    let store = crate::app::open_store(config).await?;
    store.migrate().await?;
    let clock: std::sync::Arc<dyn strongroom_types::Clock> = std::sync::Arc::new(strongroom_types::SystemClock);
    let reader = strongroom_domain::jobs::JobsStatusReader::new(
        std::sync::Arc::new(store.clone()),
        std::sync::Arc::new(store.clone()),
        clock,
    );
    let status = reader.status().await?;
    store.close().await;
    print(&serde_json::to_string_pretty(&status)?);
    Ok(())
}

async fn migrate(config: &Config) -> anyhow::Result<()> {
    let url = config.database_url();
    crate::data_dir::ensure_dir(&config.data_dir)?;
    let store = strongroom_store::Store::connect(url.expose(), strongroom_store::PoolSettings::default())
        .await
        .with_context(|| format!("cannot open the database {}", config::mask_url(url.expose())))?;
    let applied = store.migrate().await?;
    store.close().await;
    print(&format!("{applied} migration(s) applied; the database is up to date"));
    Ok(())
}

async fn default_merchant(core: &Core, given: Option<String>) -> anyhow::Result<MerchantId> {
    match given {
        Some(text) => MerchantId::parse(&text).map_err(|e| anyhow::anyhow!("--merchant: {e}")),
        None => core
            .store
            .first_merchant()
            .await?
            .context("the deployment has no merchant yet: run `strongroom serve` once first"),
    }
}

/// Commands that work on an existing deployment refuse to create a new root key.
pub(crate) fn require_root_key(config: &Config) -> anyhow::Result<()> {
    if !config.root_key_file().exists() && config.kms.provider == config::KmsProvider::Local {
        bail!("no root key at {}: run `strongroom serve` once first", config.root_key_file().display());
    }
    Ok(())
}

async fn staff(config: &Config, command: StaffCommand) -> anyhow::Result<()> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let entropy: Arc<dyn Entropy> = Arc::new(OsEntropy);
    require_root_key(config)?;
    let core = Core::open(config, clock.clone(), entropy.clone()).await?;
    let result = match command {
        StaffCommand::Invite { email, roles, merchant } => {
            let merchant = default_merchant(&core, merchant).await?;
            let link_base = invitation_link_base(config)?;
            let hasher = core.password_hasher(config, entropy.clone()).await?;
            // No postman: the operator hands the printed link over (mail may not be set up yet).
            let service = core.staff(config, link_base.clone(), hasher, clock.clone(), entropy);
            let client = strongroom_domain::identity::Client::default();
            let invitation = service.invite(&merchant, &email, &roles, None, &client).await.map_err(describe_domain)?;
            let link = format!("{link_base}/staff/invitation#token={}", invitation.token.expose());
            let out = serde_json::json!({
                "id": invitation.staff.id,
                "merchant": merchant.as_str(),
                "roles": invitation.staff.roles,
                "invitation_token": invitation.token.expose(),
                "invitation_link": link,
                "expires_at": invitation.expires_at.to_rfc3339(),
            });
            print(&serde_json::to_string_pretty(&out)?);
            let _ = writeln!(
                std::io::stderr(),
                "Invitation created. The command line does not mail it: give the invitation_link to {email} \
                 yourself, over a channel you trust. It works once, until {}. (Staff invited later with \
                 POST /v1/staff get theirs by mail.)",
                invitation.expires_at.to_rfc3339()
            );
            Ok(())
        }
    };
    core.audit.close().await;
    result
}

/// Where the printed invitation link points: `staff.link_base`, or the server's listener as
/// configured in `server.listen`. With port 0 the port is chosen when the server starts, so no
/// link can be made here: refused before anything changes, naming the key to set.
fn invitation_link_base(config: &Config) -> anyhow::Result<String> {
    if config.staff.link_base.is_none() && config.server.listen.port() == 0 {
        bail!(
            "staff.link_base: not set, and server.listen has port 0 (chosen at start), so the invitation link's \
             address is unknown; set staff.link_base (STRONGROOM_STAFF__LINK_BASE) to where the server is reached"
        );
    }
    Ok(config.staff_link_base(config.server.listen))
}

async fn apikey(config: &Config, command: ApiKeyCommand) -> anyhow::Result<()> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let entropy: Arc<dyn Entropy> = Arc::new(OsEntropy);
    require_root_key(config)?;
    let core = Core::open(config, clock.clone(), entropy.clone()).await?;
    let service = core.api_keys(config, clock.clone(), entropy);
    let result = match command {
        ApiKeyCommand::Create { name, scopes, mode, expires_in, merchant } => {
            let merchant = default_merchant(&core, merchant).await?;
            let expires_at = expires_in.map(|d| clock.now().saturating_add(d));
            let input = NewApiKey { name, scopes, mode: Some(mode), expires_at };
            let created = service
                .create_recorded(&merchant, input, None, cli_event("api_key.created", &merchant))
                .await
                .map_err(describe_domain)?;
            let out = serde_json::json!({
                "id": created.record.id.as_str(),
                "merchant": merchant.as_str(),
                "mode": created.record.mode.as_str(),
                "scopes": created.record.scopes.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
                "expires_at": created.record.expires_at.map(|t| t.to_rfc3339()),
                "secret": created.secret.expose(),
            });
            print(&serde_json::to_string_pretty(&out)?);
            Ok(())
        }
        ApiKeyCommand::Decoy { name, mode, merchant } => {
            let merchant = default_merchant(&core, merchant).await?;
            let mode = strongroom_domain::modes::Mode::parse(&mode)
                .ok_or_else(|| anyhow::anyhow!("--mode must be live or test"))?;
            let created = service
                .create_decoy_recorded(&merchant, name, mode, cli_event("api_key.decoy_created", &merchant))
                .await
                .map_err(describe_domain)?;
            let out = serde_json::json!({
                "id": created.record.id.as_str(),
                "merchant": merchant.as_str(),
                "mode": created.record.mode.as_str(),
                "decoy": true,
                "secret": created.secret.expose(),
            });
            print(&serde_json::to_string_pretty(&out)?);
            Ok(())
        }
        ApiKeyCommand::List { merchant } => {
            let merchant = default_merchant(&core, merchant).await?;
            let now = clock.now();
            let mut text =
                format!("{:<30} {:<8} {:<5} {:<30} {:<25} {}\n", "ID", "STATUS", "MODE", "NAME", "LAST USED", "SCOPES");
            let mut cursor: Option<ApiKeyId> = None;
            loop {
                let page =
                    service.list(operator_view(&merchant), cursor.as_ref(), 100).await.map_err(describe_domain)?;
                for key in &page {
                    text.push_str(&format!(
                        "{:<30} {:<8} {:<5} {:<30} {:<25} {}\n",
                        key.id.as_str(),
                        key.status(now).as_str(),
                        key.mode.as_str(),
                        key.name.chars().take(30).collect::<String>(),
                        key.last_used_at.map_or_else(|| "never".to_owned(), |t| t.to_rfc3339()),
                        key.scopes.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(" "),
                    ));
                }
                match page.last() {
                    Some(last) if page.len() == 100 => cursor = Some(last.id.clone()),
                    _ => break,
                }
            }
            print(&text);
            Ok(())
        }
        ApiKeyCommand::Revoke { id, merchant } => {
            let merchant = default_merchant(&core, merchant).await?;
            let id = ApiKeyId::parse(&id).map_err(|e| anyhow::anyhow!("id: {e}"))?;
            let key = service
                .revoke_recorded(operator_view(&merchant), &id, cli_event("api_key.revoked", &merchant))
                .await
                .map_err(describe_domain)?;
            print(&format!("{} revoked at {}", key.id, key.revoked_at.map(|t| t.to_rfc3339()).unwrap_or_default()));
            Ok(())
        }
    };
    core.audit.close().await;
    core.store.close().await;
    result
}

/// An audit event by an operator at the command line.
/// The operator at the command line sees every key of the merchant, as a live caller does.
fn operator_view(merchant: &MerchantId) -> strongroom_domain::modes::Space<'_> {
    strongroom_domain::modes::Space { merchant, mode: strongroom_domain::modes::Mode::Live }
}

fn cli_event(action: &'static str, merchant: &MerchantId) -> strongroom_domain::audit::event::AuditEvent {
    use strongroom_domain::audit::event::{ActorKind, AuditEvent, Outcome};
    AuditEvent::by(ActorKind::System, Some("cli".to_owned()), action, Outcome::Success).for_merchant(merchant)
}

pub(crate) fn describe_domain(err: strongroom_domain::DomainError) -> anyhow::Error {
    match err {
        strongroom_domain::DomainError::Validation(fields) => anyhow::anyhow!(
            "invalid input: {}",
            fields
                .iter()
                .map(|f| format!("{} {}", f.pointer.trim_start_matches('/'), f.detail))
                .collect::<Vec<_>>()
                .join("; ")
        ),
        strongroom_domain::DomainError::NotFound => {
            anyhow::anyhow!("no such key for this merchant")
        }
        strongroom_domain::DomainError::Conflict(code, why) => anyhow::anyhow!("{why} ({code})"),
        other => anyhow::anyhow!(other),
    }
}

async fn healthcheck(config: &Config, url: Option<String>, timeout_secs: u64) -> i32 {
    let url = url.unwrap_or_else(|| format!("{}/readyz", base_url(config.server.tls, config.server.listen)));
    let mut builder = reqwest::Client::builder().timeout(Duration::from_secs(timeout_secs));
    let ca = crate::data_dir::DevTls::in_dir(&config.tls_dir()).ca;
    if let Ok(pem) = std::fs::read(&ca)
        && let Ok(cert) = reqwest::Certificate::from_pem(&pem)
    {
        builder = builder.add_root_certificate(cert);
    }
    let client = match builder.build() {
        Ok(client) => client,
        Err(err) => {
            let _ = writeln!(std::io::stderr(), "healthcheck: {err}");
            return 1;
        }
    };
    match client.get(&url).send().await {
        Ok(response) if response.status().is_success() => {
            print(&format!("ready: {url} answered {}", response.status()));
            0
        }
        Ok(response) => {
            let _ = writeln!(std::io::stderr(), "not ready: {url} answered {}", response.status());
            1
        }
        Err(err) => {
            let _ = writeln!(std::io::stderr(), "not ready: {url}: {err}");
            1
        }
    }
}

async fn witness(
    url: &str,
    public_key: &str,
    state: PathBuf,
    cacert: Option<PathBuf>,
    follow: Option<u64>,
) -> anyhow::Result<i32> {
    let api_key = std::env::var("STRONGROOM_WITNESS_API_KEY")
        .context("set STRONGROOM_WITNESS_API_KEY to an API key of the instance with the audit:read scope")?;
    let witness = crate::witness::Witness::new(url, public_key, api_key, state, cacert.as_deref())?;
    loop {
        let observation = witness.observe().await?;
        if observation.is_alarm() {
            let _ = writeln!(std::io::stderr(), "witness: {observation}");
            return Ok(1);
        }
        print(&format!("witness: {observation}"));
        match follow {
            Some(seconds) => tokio::time::sleep(Duration::from_secs(seconds.max(1))).await,
            None => return Ok(0),
        }
    }
}

/// `audit verify`: reads the database without changing it (no migration, no writer, no new key).
async fn verify(config: &Config, public_key: Option<String>) -> anyhow::Result<i32> {
    use strongroom_domain::audit::checkpoint::VerifierKey;
    let store = crate::app::open_store(config).await?;
    let trusted = match public_key {
        Some(key) => key,
        None => crate::app::deployment_verifier_key(config, &store).await?,
    };
    let key = VerifierKey::parse(&trusted).context("--public-key is not a signed-note verifier key")?;
    let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let report = strongroom_domain::audit::verify::verify_log(&store, &key, |done, total| {
        if tty {
            let percent = if total == 0 { 100 } else { done * 100 / total.max(1) };
            let _ = write!(std::io::stderr(), "\rverifying: {done}/{total} entries ({percent}%)");
        }
    })
    .await;
    store.close().await;
    let report = report?;
    if tty {
        let _ = writeln!(std::io::stderr());
    }
    match &report.finding {
        None => {
            print(&format!(
                "audit log OK: {} entries, {} signed checkpoints confirmed, root {}",
                report.entries,
                report.checkpoints,
                base64_of(&report.root)
            ));
            Ok(0)
        }
        Some(finding) => {
            let _ = writeln!(std::io::stderr(), "audit log TAMPERED: {finding}");
            Ok(1)
        }
    }
}

async fn audit(config: &Config, command: AuditCommand) -> anyhow::Result<i32> {
    use strongroom_domain::ports::AuditRepository;

    let command = match command {
        AuditCommand::Witness { url, public_key, state, cacert, follow_secs } => {
            return witness(&url, &public_key, state, cacert, follow_secs).await;
        }
        AuditCommand::Verify { public_key } => return verify(config, public_key).await,
        other => other,
    };

    require_root_key(config)?;
    let core = Core::open(config, Arc::new(SystemClock), Arc::new(OsEntropy)).await?;
    let verifier_key = core.audit.signer().verifier_key();
    let result = match command {
        AuditCommand::PublicKey => {
            print(&verifier_key);
            Ok(0)
        }
        AuditCommand::Verify { .. } | AuditCommand::Witness { .. } => Ok(2),
        AuditCommand::Checkpoint => {
            let checkpoint = core.audit.checkpoint().await?;
            print(&checkpoint.note);
            Ok(0)
        }
        AuditCommand::Export { out } => {
            std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
            let mut entries = std::io::BufWriter::new(std::fs::File::create(out.join("entries.jsonl"))?);
            let mut next = 0u64;
            loop {
                let page = core.store.entries_with_leaf_hashes(next, 10_000).await?;
                if page.is_empty() {
                    break;
                }
                for (record, stored) in &page {
                    // The stored leaf hash lets an outside verifier name a changed entry (the
                    // signed roots alone only narrow it to the entries under one checkpoint).
                    let line = serde_json::json!({
                        "index": record.seq,
                        "leaf": base64_of(&record.leaf),
                        "leaf_hash": stored.as_ref().map(|hash| base64_of(hash)),
                    });
                    writeln!(entries, "{line}")?;
                    next = record.seq + 1;
                }
            }
            entries.flush()?;
            let mut checkpoints = std::io::BufWriter::new(std::fs::File::create(out.join("checkpoints.jsonl"))?);
            let stored = core.store.checkpoints().await?;
            for checkpoint in &stored {
                writeln!(checkpoints, "{}", serde_json::json!({ "size": checkpoint.size, "note": checkpoint.note }))?;
            }
            checkpoints.flush()?;
            std::fs::write(out.join("public-key.txt"), format!("{verifier_key}\n"))?;
            print(&format!(
                "exported {next} entries and {} checkpoints to {} (entries.jsonl, checkpoints.jsonl, public-key.txt)",
                stored.len(),
                out.display()
            ));
            Ok(0)
        }
    };
    core.audit.close().await;
    core.store.close().await;
    result
}

fn base64_of(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[cfg(test)]
mod definition_tests {
    #[test]
    fn the_command_line_definition_is_consistent() {
        // clap checks names and flags only when a subcommand is used; check them all at once.
        <super::Cli as clap::CommandFactory>::command().debug_assert();
    }
}
