//! `strongroom drill credential-stuffing|card-testing|enumeration|token-guessing|insider`: replays
//! a bounded attack against a running strongroom through its public API, with a concurrent
//! normal-user load, and reports how detection did (time to first detection, requests before the
//! first block, decisions made, refusals of normal users, incidents).
//!
//! Owns: the target check ([`target`]), seeding and removing the drill's data through the API
//! (customers with passwords, API keys, tokens), the attacks ([`attacks`]), the normal users
//! ([`normal`]) and the report ([`report`]). It lives in the `strongroom` library, not in the
//! bench, so `testkit` tests call [`run`] directly and the binary's `drill` subcommand is a thin
//! wrapper ([`command`]).
//! Must never: send a request to a host [`target::check`] did not approve (no redirects, no
//! proxies), go beyond its request bound, read or change the target other than through its public
//! API, print a key, a password, a session token or a revealed value, or leave a key it made
//! without an expiry (they expire after two hours even if the clean-up fails).

pub mod api;
pub mod attacks;
pub mod normal;
pub mod report;
pub mod target;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::{Value, json};
use strongroom_types::{Entropy, OsEntropy, Secret};

pub use api::{Answer, Api, Trust};
pub use report::{About, AttackOutcome, CleanupReport, DecisionSeen, IncidentView, NormalSummary, Refusal, Report};
pub use target::Target;

use crate::config::Config;

/// Which attack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DrillKind {
    /// Sign-ins of many emails with wrong passwords from one client address.
    CredentialStuffing,
    /// Many distinct cards tokenized and paid with small amounts from one client address.
    CardTesting,
    /// An API key reading many object ids that do not exist.
    Enumeration,
    /// An API key reading many token ids that do not exist.
    TokenGuessing,
    /// A key with reveal rights revealing many real tokens.
    Insider,
}

impl DrillKind {
    /// `credential-stuffing`, as on the command line.
    pub fn name(self) -> &'static str {
        match self {
            DrillKind::CredentialStuffing => "credential-stuffing",
            DrillKind::CardTesting => "card-testing",
            DrillKind::Enumeration => "enumeration",
            DrillKind::TokenGuessing => "token-guessing",
            DrillKind::Insider => "insider",
        }
    }

    /// What one attack attempt is.
    pub fn unit(self) -> &'static str {
        match self {
            DrillKind::CredentialStuffing => "sign-ins",
            DrillKind::CardTesting => "cards",
            DrillKind::Enumeration => "lookups",
            DrillKind::TokenGuessing => "guesses",
            DrillKind::Insider => "reveals",
        }
    }

    /// The most attempts that may get through before the first block (issue 15's figures;
    /// enumeration: twice its default threshold of 50 ids; insider: its default policy of 500
    /// reveals an hour, with a quarter to spare).
    pub fn bound(self) -> u32 {
        match self {
            DrillKind::CredentialStuffing => 50,
            DrillKind::CardTesting => 10,
            DrillKind::Enumeration => 100,
            DrillKind::TokenGuessing => 100,
            DrillKind::Insider => 625,
        }
    }

    /// What a block looks like, for the report.
    pub fn blocked_means(self) -> &'static str {
        match self {
            DrillKind::CredentialStuffing => "429 client_blocked",
            DrillKind::CardTesting => "payment refused (fraud_blocked) or 429 client_blocked",
            DrillKind::Enumeration | DrillKind::TokenGuessing | DrillKind::Insider => "403 api_key_suspended",
        }
    }

    /// Scopes of the attacker's own API key (`None`: the attacker comes through the shop's
    /// storefront, whose key the normal users share).
    fn attacker_scopes(self) -> Option<&'static [&'static str]> {
        match self {
            DrillKind::CredentialStuffing | DrillKind::CardTesting => None,
            DrillKind::TokenGuessing => Some(&["vault:read"]),
            DrillKind::Enumeration => Some(&["identity:customers", "payments:read"]),
            DrillKind::Insider => Some(&["vault:read", "vault:reveal:pii"]),
        }
    }
}

/// The scopes of the shop's backend key the drill makes (the normal users' requests go through
/// it, as do the storefront attacks).
pub const SHOP_SCOPES: &[&str] =
    &["identity:customers", "vault:write", "vault:read", "payments:write", "payments:read"];

/// How a drill runs.
#[derive(Debug, Clone)]
pub struct DrillOptions {
    /// Which attack.
    pub kind: DrillKind,
    /// Where (checked by [`target::check`]).
    pub target: Target,
    /// A live key with `admin:api_keys`, `security:manage`, `privacy:erase` and every scope of
    /// the keys the drill makes.
    pub api_key: Secret<String>,
    /// How to trust the target's certificate.
    pub trust: Trust,
    /// How many normal users run beside the attack.
    pub normal_users: usize,
    /// The most attack attempts.
    pub max_requests: u32,
    /// Leave the decisions the drill caused in force (by default they are lifted at the end).
    pub keep_decisions: bool,
    /// Stop (and clean up) on Ctrl-C; the command line sets it, tests do not.
    pub stop_on_ctrl_c: bool,
}

/// What the drill made, to remove at the end.
#[derive(Debug, Default)]
pub struct Seeds {
    /// `(key_…, what for)`
    pub keys: Vec<(String, &'static str)>,
    /// `cus_…` (erased: account, data key, their tokens).
    pub customers: Vec<String>,
    /// Tokens not under a customer (`tok_…`), deleted one by one.
    pub tokens: Vec<String>,
    /// Payment intents made (the API deletes none).
    pub payment_intents: u32,
}

/// Locks the seeds (a panic elsewhere does not lose what must be cleaned up).
pub(crate) fn lock(seeds: &Mutex<Seeds>) -> std::sync::MutexGuard<'_, Seeds> {
    seeds.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Random lowercase base32 text (an id's alphabet).
pub(crate) fn random_text(len: usize) -> String {
    const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
    let mut bytes = vec![0u8; len];
    OsEntropy.fill(&mut bytes);
    bytes.iter().map(|b| char::from(ALPHABET[usize::from(b % 32)])).collect()
}

/// A random number below `below` (small ranges; the bias of a byte is irrelevant here).
pub(crate) fn random_below(below: u32) -> u32 {
    let bytes: [u8; 4] = OsEntropy.array();
    u32::from_le_bytes(bytes) % below.max(1)
}

/// The attacker's address for a run: the next of 198.51.100.1–254 after a random start, so drills
/// run by one process never share an address (two runs with one address within the fraud checks'
/// hour would see the first run's cards). Separate processes start at random places: two of them
/// meet on one address once in 254.
fn attacker_ip() -> String {
    static NEXT: std::sync::OnceLock<std::sync::atomic::AtomicU32> = std::sync::OnceLock::new();
    let next = NEXT.get_or_init(|| std::sync::atomic::AtomicU32::new(random_below(254)));
    let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("198.51.100.{}", 1 + n % 254)
}

/// A 16-digit card number starting with `prefix` with a valid Luhn check digit.
pub(crate) fn card_number(prefix: &str) -> String {
    let mut digits: Vec<u32> = prefix.chars().filter_map(|c| c.to_digit(10)).collect();
    while digits.len() < 15 {
        digits.push(random_below(10));
    }
    let sum: u32 =
        digits.iter().rev().enumerate().map(|(i, d)| if i % 2 == 0 { (d * 2) / 10 + (d * 2) % 10 } else { *d }).sum();
    digits.push((10 - sum % 10) % 10);
    digits.iter().filter_map(|d| char::from_digit(*d, 10)).collect()
}

/// A year three years ahead (for card expiries), from the real clock.
pub(crate) fn expiry_year() -> i32 {
    time::OffsetDateTime::now_utc().year() + 3
}

/// The addresses of the drill's actors.
#[derive(Debug, Clone)]
pub struct Actors {
    /// The attacker's client address (198.51.100.0/24, a new one each run).
    pub attacker_ip: String,
    /// The attacker's own key, when it has one.
    pub attacker_key: Option<String>,
    /// The shop's backend key the normal users use.
    pub shop_key: String,
    /// The normal users' addresses (203.0.113.0/24 and 192.0.2.0/24).
    pub normal_ips: Vec<String>,
}

impl Actors {
    /// Whom a decision's scope is about.
    pub fn about(&self, kind: &str, address: &str) -> About {
        let covers = |ip: &str| match kind {
            "ip" => address == ip,
            "prefix" => address
                .parse::<ipnet::IpNet>()
                .ok()
                .zip(ip.parse::<std::net::IpAddr>().ok())
                .is_some_and(|(net, ip)| net.contains(&ip)),
            _ => false,
        };
        if (kind == "api_key" && address == self.shop_key) || self.normal_ips.iter().any(|ip| covers(ip)) {
            return About::NormalUsers;
        }
        if (kind == "api_key" && self.attacker_key.as_deref() == Some(address)) || covers(&self.attacker_ip) {
            return About::Attacker;
        }
        About::Other
    }
}

/// The normal users' client addresses: alternately in 203.0.113.0/24 and 192.0.2.0/24, one each,
/// drawn anew for each run, so that the drills run within the fraud checks' window (an hour) do
/// not add up on one address.
pub fn normal_ips(count: usize) -> Vec<String> {
    let mut taken = std::collections::BTreeSet::new();
    let mut ips = Vec::with_capacity(count);
    while ips.len() < count {
        let net = if ips.len() % 2 == 0 { "203.0.113" } else { "192.0.2" };
        let ip = format!("{net}.{}", 1 + random_below(254));
        if taken.insert(ip.clone()) {
            ips.push(ip);
        }
    }
    ips
}

/// The card a normal user at `ip` pays with: always the same for one address (a customer at
/// home uses their card), so repeated drills never make one address look like a card tester.
pub(crate) fn card_for(ip: &str) -> String {
    let digits: String = ip.split('.').map(|part| format!("{:0>3}", part)).collect::<String>();
    // 424242 and the last 9 digits of the zero-padded address (net and host), then Luhn.
    let tail = digits.get(digits.len().saturating_sub(9)..).unwrap_or_default();
    card_number(&format!("424242{tail}"))
}

/// RFC 3339, two hours from now: the expiry of every key the drill makes.
fn key_expiry() -> anyhow::Result<String> {
    let at = time::OffsetDateTime::now_utc() + time::Duration::hours(2);
    Ok(at.format(&time::format_description::well_known::Rfc3339)?)
}

/// Makes a key (recorded in `seeds` for revocation) and returns `(id, secret)`.
async fn make_key(
    api: &Api,
    admin: &Secret<String>,
    seeds: &Mutex<Seeds>,
    name: String,
    scopes: &[&str],
    role: &'static str,
) -> anyhow::Result<(String, Secret<String>)> {
    let body = json!({"name": name, "scopes": scopes, "mode": "live", "expires_at": key_expiry()?});
    let answer = api.post(admin, "/v1/api-keys", &body).await?;
    if answer.status == 403 || answer.status == 422 {
        bail!(
            "--api-key: cannot make the drill's {role} key with {} ({}): it needs admin:api_keys and each of those scopes",
            scopes.join(" "),
            answer.label()
        );
    }
    if answer.status != 201 {
        bail!("making the drill's {role} key answered {}", answer.label());
    }
    let id = answer.text("id").context("the new key has no id")?;
    let secret = answer.text("secret").context("the new key has no secret")?;
    lock(seeds).keys.push((id.clone(), role));
    Ok((id, Secret::new(secret)))
}

/// Registers a customer with the shop's key (recorded in `seeds` for erasure): `cus_…`.
async fn register(
    api: &Api,
    shop: &Secret<String>,
    seeds: &Mutex<Seeds>,
    email: &str,
    password: &Secret<String>,
) -> anyhow::Result<String> {
    let body = json!({"email": email, "password": password.expose()});
    let answer = api.post(shop, "/v1/identity/customers", &body).await?;
    if answer.status != 202 {
        bail!("registering a drill customer answered {}", answer.label());
    }
    let customer = answer.text("customer").context("the registration named no customer")?;
    lock(seeds).customers.push(customer.clone());
    Ok(customer)
}

/// The decisions the caller's merchant has (in force or not), newest first: `id → decision`.
async fn decisions(api: &Api, admin: &Secret<String>) -> anyhow::Result<BTreeMap<String, Value>> {
    let answer = api.get(admin, "/v1/security/decisions?in_force=false&limit=100").await?;
    match answer.status {
        200 => {}
        401 => bail!("--api-key: the target does not accept it (401)"),
        403 => {
            bail!("--api-key: it lacks security:manage (a live key), needed to read the decisions ({})", answer.label())
        }
        _ => bail!("GET /v1/security/decisions answered {}", answer.label()),
    }
    let list = answer.body.get("data").and_then(Value::as_array).cloned().unwrap_or_default();
    Ok(list
        .into_iter()
        .filter_map(|d| d.get("id").and_then(Value::as_str).map(str::to_owned).map(|id| (id, d.clone())))
        .collect())
}

/// The incidents as listed now: `None` when the endpoint is missing (404); `Err` for another answer.
async fn incidents(api: &Api, admin: &Secret<String>) -> Result<Option<BTreeMap<String, Value>>, String> {
    let answer = api.get(admin, "/v1/security/incidents").await.map_err(|e| e.to_string())?;
    match answer.status {
        404 => Ok(None),
        200 => {
            let list = answer.body.get("data").and_then(Value::as_array).cloned().unwrap_or_default();
            Ok(Some(
                list.into_iter()
                    .filter_map(|i| i.get("id").and_then(Value::as_str).map(str::to_owned).map(|id| (id, i.clone())))
                    .collect(),
            ))
        }
        _ => Err(format!("GET /v1/security/incidents answered {}", answer.label())),
    }
}

/// Runs a drill against its checked target: seeds, attacks while the normal users work, reads the
/// decisions and incidents, cleans up. An error before anything was made is an `Err`; a failure
/// after that is in the report's `error`, with the clean-up done.
pub async fn run(options: DrillOptions) -> anyhow::Result<Report> {
    let started_at =
        time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap_or_default();
    let api = Api::new(&options.target, &options.trust)?;
    let admin = options.api_key.clone();
    let decisions_before = decisions(&api, &admin).await?;
    let incidents_before = incidents(&api, &admin).await;
    let run_id = random_text(8);
    let mut actors = Actors {
        attacker_ip: attacker_ip(),
        attacker_key: None,
        shop_key: String::new(),
        normal_ips: normal_ips(options.normal_users),
    };
    let seeds = Mutex::new(Seeds::default());
    let mut tasks = Vec::new();
    let phase = drill_phase(&options, &api, &admin, &run_id, &seeds, &mut actors, &mut tasks);
    let (outcome, normal) = if options.stop_on_ctrl_c {
        tokio::select! {
            result = phase => result,
            _ = tokio::signal::ctrl_c() => (Err(anyhow::anyhow!("interrupted (Ctrl-C)")), NormalSummary::default()),
        }
    } else {
        phase.await
    };
    for task in &tasks {
        task.abort();
    }
    let (attack, error) = match outcome {
        Ok(attack) => (Some(attack), None),
        Err(err) => (None, Some(format!("{err:#}"))),
    };

    // What was decided during the drill: decisions not listed before (a decision's id changes
    // with each new decision about the same client).
    let mut seen = Vec::new();
    let mut after_error = None;
    match decisions(&api, &admin).await {
        Ok(after) => {
            for (id, d) in after.iter().filter(|(id, _)| !decisions_before.contains_key(*id)) {
                let kind = d["scope"]["kind"].as_str().unwrap_or_default();
                let address = d["scope"]["address"].as_str().unwrap_or_default();
                seen.push(DecisionSeen {
                    id: id.clone(),
                    scope: format!("{kind}:{address}"),
                    action: d["action"].as_str().unwrap_or_default().to_owned(),
                    reason: d["reason"].as_str().unwrap_or_default().to_owned(),
                    strikes: d["strikes"].as_u64().unwrap_or(0),
                    until: d["until"].as_str().unwrap_or_default().to_owned(),
                    in_force: d["in_force"].as_bool().unwrap_or(false),
                    about: actors.about(kind, address),
                });
            }
        }
        Err(err) => after_error = Some(format!("reading the decisions after the attack: {err:#}")),
    }
    let incident = incident_view(&api, &admin, incidents_before, attack.as_ref().is_some_and(|a| a.blocked)).await;
    let cleanup = clean_up(&api, &admin, &seeds, &seen, options.keep_decisions).await;
    Ok(Report {
        drill: options.kind,
        target: options.target.base().to_owned(),
        started_at,
        run_id,
        attacker: match &actors.attacker_key {
            Some(key) => format!("API key {key}"),
            None => format!("client {} through the shop's key", actors.attacker_ip),
        },
        attack,
        max_requests: options.max_requests,
        normal,
        decisions: seen,
        incident,
        cleanup,
        error: error.or(after_error),
    })
}

/// Seeds, then runs the attack and the normal users together.
async fn drill_phase(
    options: &DrillOptions,
    api: &Api,
    admin: &Secret<String>,
    run_id: &str,
    seeds: &Mutex<Seeds>,
    actors: &mut Actors,
    tasks: &mut Vec<tokio::task::JoinHandle<normal::Tally>>,
) -> (anyhow::Result<AttackOutcome>, NormalSummary) {
    let prepared = async {
        let (shop_id, shop) =
            make_key(api, admin, seeds, format!("drill {run_id} shop backend"), SHOP_SCOPES, "shop backend").await?;
        actors.shop_key = shop_id;
        let attacker = match options.kind.attacker_scopes() {
            Some(scopes) => {
                let (id, secret) =
                    make_key(api, admin, seeds, format!("drill {run_id} attacker"), scopes, "attacker").await?;
                actors.attacker_key = Some(id);
                Some(secret)
            }
            None => None,
        };
        let users = normal::seed(api, &shop, seeds, run_id, &actors.normal_ips).await?;
        let plan = attacks::prepare(options.kind, api, &shop, seeds, run_id, &users).await?;
        anyhow::Ok((shop, attacker, users, plan))
    }
    .await;
    let (shop, attacker, users, plan) = match prepared {
        Ok(prepared) => prepared,
        Err(err) => return (Err(err.context("seeding the drill's data")), NormalSummary::default()),
    };
    let (stop, stopped) = tokio::sync::watch::channel(false);
    for user in users {
        tasks.push(tokio::spawn(normal::run(api.clone(), shop.clone(), user, run_id.to_owned(), stopped.clone())));
    }
    let attack = attacks::Attack {
        kind: options.kind,
        api,
        shop: &shop,
        attacker: attacker.as_ref(),
        attacker_ip: &actors.attacker_ip,
        run_id,
        seeds,
        plan,
    };
    let outcome = attacks::drive(attack, options.max_requests).await;
    let _ = stop.send(true);
    let mut summary = NormalSummary { users: options.normal_users, ..NormalSummary::default() };
    for task in tasks.drain(..) {
        match task.await {
            Ok(tally) => summary.add(tally),
            Err(err) => summary.refusals.push(Refusal {
                user: 0,
                step: "task".to_owned(),
                answer: format!("a normal user stopped: {err}"),
            }),
        }
    }
    lock(seeds).payment_intents += summary.intents;
    (outcome, summary)
}

/// Whether an incident was opened or joined: incidents not listed before (opened) or changed
/// since (joined). Waits up to 3 s for one when the attack was blocked (an incident may be opened
/// after the decision).
async fn incident_view(
    api: &Api,
    admin: &Secret<String>,
    before: Result<Option<BTreeMap<String, Value>>, String>,
    blocked: bool,
) -> IncidentView {
    let before = match before {
        Ok(Some(before)) => before,
        Ok(None) => return IncidentView::Missing,
        Err(why) => return IncidentView::Unavailable(why),
    };
    let mut waited = Duration::ZERO;
    loop {
        let after = match incidents(api, admin).await {
            Ok(Some(after)) => after,
            Ok(None) => return IncidentView::Missing,
            Err(why) => return IncidentView::Unavailable(why),
        };
        let (opened, joined) = incident_changes(&before, &after);
        if !opened.is_empty() || !joined.is_empty() || !blocked || waited >= Duration::from_secs(3) {
            return IncidentView::Seen { opened, joined };
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        waited += Duration::from_millis(500);
    }
}

/// Incidents in `after` that `before` did not list (opened), and those listed in both that
/// changed (joined: an active incident took the drill's detection).
fn incident_changes(before: &BTreeMap<String, Value>, after: &BTreeMap<String, Value>) -> (Vec<String>, Vec<String>) {
    let opened = after.keys().filter(|id| !before.contains_key(*id)).cloned().collect();
    let joined =
        after.iter().filter(|(id, i)| before.get(*id).is_some_and(|b| b != *i)).map(|(id, _)| id.clone()).collect();
    (opened, joined)
}

/// Removes what the drill made, best effort: lifts the decisions it caused about its own actors
/// (unless kept), deletes the tokens not under a customer, erases the customers (account, data
/// key and their tokens), revokes the keys. Every failure is reported, none stops the rest.
async fn clean_up(
    api: &Api,
    admin: &Secret<String>,
    seeds: &Mutex<Seeds>,
    decisions: &[DecisionSeen],
    keep_decisions: bool,
) -> CleanupReport {
    let seeds = std::mem::take(&mut *lock(seeds));
    let mut report = CleanupReport::default();
    let mut failed = |what: String, outcome: anyhow::Result<Answer>, ok: &[u16]| match outcome {
        Ok(answer) if answer.ok() || ok.contains(&answer.status) => true,
        Ok(answer) => {
            report.failures.push(format!("{what}: {}", answer.label()));
            false
        }
        Err(err) => {
            report.failures.push(format!("{what}: {err:#}"));
            false
        }
    };
    let mut lifted = 0;
    for decision in decisions.iter().filter(|d| d.in_force && d.about != About::Other) {
        if keep_decisions {
            continue;
        }
        let outcome = api.post(admin, &format!("/v1/security/decisions/{}/lift", decision.id), &json!({})).await;
        // 409 decision_not_in_force: it ended meanwhile.
        if failed(format!("lifting {}", decision.id), outcome, &[409]) {
            lifted += 1;
        }
    }
    let mut tokens = 0;
    for token in &seeds.tokens {
        // 404: gone already.
        if failed(format!("deleting {token}"), api.delete(admin, &format!("/v1/tokens/{token}")).await, &[404]) {
            tokens += 1;
        }
    }
    let mut customers = 0;
    for customer in &seeds.customers {
        let outcome = api.delete(admin, &format!("/v1/customers/{customer}/data")).await;
        if failed(format!("erasing {customer}"), outcome, &[]) {
            customers += 1;
        }
    }
    let mut keys = 0;
    for (key, _) in &seeds.keys {
        if failed(format!("revoking {key}"), api.delete(admin, &format!("/v1/api-keys/{key}")).await, &[]) {
            keys += 1;
        }
    }
    report.decisions_lifted = lifted;
    report.tokens_deleted = tokens;
    report.customers_erased = customers;
    report.keys_revoked = keys;
    report.keys_made = seeds.keys.len();
    report.customers_made = seeds.customers.len();
    report.tokens_made = seeds.tokens.len();
    if seeds.payment_intents > 0 {
        report.kept.push(format!(
            "{} payment intent(s) of the drill (the API deletes none; their cards are erased or deleted)",
            seeds.payment_intents
        ));
    }
    if keep_decisions && decisions.iter().any(|d| d.in_force && d.about != About::Other) {
        report.kept.push("the decisions the drill caused (--keep-decisions)".to_owned());
    }
    report
}

/// `strongroom drill …` on the command line.
#[derive(Debug, clap::Args)]
pub struct DrillArgs {
    /// Which attack to replay.
    #[arg(value_enum)]
    pub kind: DrillKind,
    /// The strongroom to attack, e.g. https://127.0.0.1:8443. Loopback only, unless the host is
    /// named with --allow-host.
    #[arg(long)]
    pub target: String,
    /// Allow this exact host name or address as a target besides loopback (repeat for several).
    #[arg(long = "allow-host", value_name = "NAME")]
    pub allow_hosts: Vec<String>,
    /// A live secret key of the target with admin:api_keys, security:manage, privacy:erase and
    /// the scopes of the drill's keys (docs/detection.md, "Drills").
    #[arg(long, env = "STRONGROOM_DRILL_API_KEY", hide_env_values = true)]
    pub api_key: String,
    /// The CA certificate (PEM) to trust for the target (default: the data directory's
    /// development CA, when there is one).
    #[arg(long, value_name = "FILE", conflicts_with = "insecure")]
    pub tls_ca: Option<PathBuf>,
    /// Accept any certificate of the target (a test host with a self-signed certificate).
    #[arg(long)]
    pub insecure: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Normal users working beside the attack (1 to 50).
    #[arg(long, default_value_t = 4)]
    pub normal_users: usize,
    /// The most attack attempts (1 to 10000); the attack also stops when blocked.
    #[arg(long, default_value_t = 1000)]
    pub max_requests: u32,
    /// Leave the decisions the drill caused in force (by default they are lifted at the end).
    #[arg(long)]
    pub keep_decisions: bool,
}

/// Turns the command line into options: `Err` names the flag.
pub fn options(config: &Config, args: DrillArgs) -> anyhow::Result<DrillOptions> {
    let target = target::check(&args.target, &args.allow_hosts)?;
    if !(1..=50).contains(&args.normal_users) {
        bail!("--normal-users: {} is not 1 to 50", args.normal_users);
    }
    if !(1..=10_000).contains(&args.max_requests) {
        bail!("--max-requests: {} is not 1 to 10000", args.max_requests);
    }
    if args.api_key.trim().is_empty() {
        bail!("--api-key: empty (or set STRONGROOM_DRILL_API_KEY)");
    }
    let trust = match (args.tls_ca, args.insecure) {
        (_, true) => Trust::Insecure,
        (Some(file), false) => {
            Trust::CaPem(std::fs::read(&file).with_context(|| format!("--tls-ca: cannot read {}", file.display()))?)
        }
        (None, false) => {
            let dev_ca = crate::data_dir::DevTls::in_dir(&config.tls_dir()).ca;
            match std::fs::read(&dev_ca) {
                Ok(pem) => Trust::CaPem(pem),
                Err(_) if target.base().starts_with("https://") => bail!(
                    "--tls-ca: needed for an https target (no development CA at {}); or --insecure for a test host",
                    dev_ca.display()
                ),
                Err(_) => Trust::CaPem(Vec::new()),
            }
        }
    };
    if let Trust::CaPem(pem) = &trust
        && !pem.is_empty()
    {
        reqwest::Certificate::from_pem(pem).context("--tls-ca: not a PEM certificate")?;
    }
    Ok(DrillOptions {
        kind: args.kind,
        target,
        api_key: Secret::new(args.api_key),
        trust,
        normal_users: args.normal_users,
        max_requests: args.max_requests,
        keep_decisions: args.keep_decisions,
        stop_on_ctrl_c: true,
    })
}

/// Runs `strongroom drill …`: 0 when the attack was blocked within its bound and no normal user
/// was refused, 1 otherwise (or on an error), 2 for bad usage (a refused target, a bad flag).
pub async fn command(config: &Config, args: DrillArgs) -> i32 {
    let as_json = args.json;
    let options = match options(config, args) {
        Ok(options) => options,
        Err(err) => {
            let _ = writeln!(std::io::stderr(), "drill: {err:#}");
            return 2;
        }
    };
    let report = match run(options).await {
        Ok(report) => report,
        Err(err) => {
            let _ = writeln!(std::io::stderr(), "drill: {err:#}");
            return 1;
        }
    };
    if as_json {
        crate::commands::print(&serde_json::to_string_pretty(&report.to_json()).unwrap_or_default());
    } else {
        crate::commands::print(&report.table());
    }
    let failures = report.failures();
    if failures.is_empty() {
        0
    } else {
        for failure in &failures {
            let _ = writeln!(std::io::stderr(), "drill failed: {failure}");
        }
        1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn luhn_ok(number: &str) -> bool {
        let sum: u32 = number
            .chars()
            .rev()
            .filter_map(|c| c.to_digit(10))
            .enumerate()
            .map(|(i, d)| if i % 2 == 1 { (d * 2) / 10 + (d * 2) % 10 } else { d })
            .sum();
        sum.is_multiple_of(10)
    }

    #[test]
    fn card_numbers_pass_luhn_and_keep_their_prefix() {
        for _ in 0..200 {
            let number = card_number("411111");
            assert_eq!(number.len(), 16);
            assert!(number.starts_with("411111"));
            assert!(luhn_ok(&number), "{number}");
        }
        assert!(luhn_ok("4242424242424242") && !luhn_ok("4242424242424241"));
    }

    #[test]
    fn decisions_are_told_apart_by_whom_they_are_about() {
        let actors = Actors {
            attacker_ip: "198.51.100.7".to_owned(),
            attacker_key: Some("key_attacker".to_owned()),
            shop_key: "key_shop".to_owned(),
            normal_ips: vec!["203.0.113.10".to_owned(), "192.0.2.10".to_owned()],
        };
        assert_eq!(actors.about("ip", "198.51.100.7"), About::Attacker);
        assert_eq!(actors.about("prefix", "198.51.100.0/24"), About::Attacker);
        assert_eq!(actors.about("api_key", "key_attacker"), About::Attacker);
        assert_eq!(actors.about("api_key", "key_shop"), About::NormalUsers);
        assert_eq!(actors.about("ip", "192.0.2.10"), About::NormalUsers);
        assert_eq!(actors.about("prefix", "203.0.113.0/24"), About::NormalUsers);
        assert_eq!(actors.about("ip", "198.51.100.8"), About::Other);
        assert_eq!(actors.about("api_key", "key_other"), About::Other);
    }

    #[test]
    fn normal_users_have_addresses_of_their_own_and_one_card_each() {
        let ips = normal_ips(50);
        assert_eq!(ips.iter().collect::<std::collections::BTreeSet<_>>().len(), 50, "{ips:?}");
        assert!(ips.iter().step_by(2).all(|ip| ip.starts_with("203.0.113.")), "{ips:?}");
        assert!(ips.iter().skip(1).step_by(2).all(|ip| ip.starts_with("192.0.2.")), "{ips:?}");
        assert_eq!(card_for("203.0.113.7"), card_for("203.0.113.7"));
        assert_ne!(card_for("203.0.113.7"), card_for("192.0.2.7"));
        assert_ne!(card_for("203.0.113.7"), card_for("203.0.113.8"));
        assert!(card_for("192.0.2.254").starts_with("424242"));
        assert!(luhn_ok(&card_for("192.0.2.254")));
    }

    #[test]
    fn incidents_opened_and_joined_are_told_apart() {
        let list = |items: &[(&str, &str)]| -> BTreeMap<String, Value> {
            items.iter().map(|(id, at)| ((*id).to_owned(), json!({"id": id, "updated_at": at}))).collect()
        };
        let before = list(&[("inc_a", "1"), ("inc_b", "1")]);
        let after = list(&[("inc_a", "1"), ("inc_b", "2"), ("inc_c", "2")]);
        assert_eq!(incident_changes(&before, &after), (vec!["inc_c".to_owned()], vec!["inc_b".to_owned()]));
        assert_eq!(incident_changes(&before, &before), (vec![], vec![]));
    }

    #[test]
    fn random_text_uses_the_id_alphabet() {
        let text = random_text(26);
        assert_eq!(text.len(), 26);
        assert!(text.bytes().all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b)));
        assert_ne!(random_text(8), random_text(8));
    }
}
