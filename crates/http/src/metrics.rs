//! Prometheus metrics: request counts and latency histograms per route template.
//! Must never: use a raw path, a query string, an id or any input as a label value (cardinality
//! and privacy): routes are labelled by their template, or `unmatched`.

use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: &'static str,
    route: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: &'static str,
    route: &'static str,
}

/// Route templates as `&'static str`, so recording a request allocates nothing. The set is
/// bounded: templates come from the router (plus `unmatched`), never from the request path.
fn intern(route: &str) -> &'static str {
    static ROUTES: std::sync::OnceLock<std::sync::RwLock<std::collections::HashSet<&'static str>>> =
        std::sync::OnceLock::new();
    let routes = ROUTES.get_or_init(Default::default);
    if let Some(found) = routes.read().ok().and_then(|set| set.get(route).copied()) {
        return found;
    }
    let Ok(mut set) = routes.write() else {
        return "unmatched";
    };
    if let Some(found) = set.get(route) {
        return found;
    }
    let leaked: &'static str = Box::leak(route.to_owned().into_boxed_str());
    set.insert(leaked);
    leaked
}

/// The process's metrics registry.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    durations: Family<RouteLabels, Histogram>,
    encode_lock: Mutex<()>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Methods outside this list are labelled `OTHER`, so a client cannot mint label values.
fn method_label(method: &http::Method) -> &'static str {
    match *method {
        http::Method::GET => "GET",
        http::Method::POST => "POST",
        http::Method::PUT => "PUT",
        http::Method::PATCH => "PATCH",
        http::Method::DELETE => "DELETE",
        http::Method::HEAD => "HEAD",
        http::Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

impl Metrics {
    /// A fresh registry with the HTTP metrics registered.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("strongroom");
        let requests = Family::<RequestLabels, Counter>::default();
        let durations = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.000_25, 2.0, 16))
        });
        registry.register("http_requests", "HTTP requests answered, by route template and status", requests.clone());
        registry.register(
            "http_request_duration_seconds",
            "Time to answer HTTP requests, by route template",
            durations.clone(),
        );
        Self { registry, requests, durations, encode_lock: Mutex::new(()) }
    }

    /// Records one answered request.
    pub fn observe(&self, method: &http::Method, route: &str, status: u16, seconds: f64) {
        let method = method_label(method);
        let route = intern(route);
        self.requests.get_or_create(&RequestLabels { method, route, status }).inc();
        self.durations.get_or_create(&RouteLabels { method, route }).observe(seconds);
    }

    /// The OpenMetrics text exposition.
    pub fn render(&self) -> String {
        let _guard = self.encode_lock.lock();
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// Figures read at scrape time from the services and the process: they describe state (depths,
/// ages, sizes) rather than events, so they are gathered when asked for instead of kept updated.
pub mod operational {
    use std::sync::atomic::{AtomicI64, AtomicU64};

    use prometheus_client::encoding::EncodeLabelSet;
    use prometheus_client::metrics::counter::Counter;
    use prometheus_client::metrics::family::Family;
    use prometheus_client::metrics::gauge::Gauge;
    use prometheus_client::registry::Registry;

    use crate::state::AppState;

    type FloatGauge = Gauge<f64, AtomicU64>;

    #[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
    struct StateLabel {
        state: &'static str,
    }

    #[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
    struct JobLabel {
        /// Not `job`: Prometheus sets that label to the scrape job's name.
        job_name: String,
    }

    #[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
    struct DeliveryLabels {
        channel: &'static str,
        endpoint: String,
        outcome: &'static str,
    }

    #[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
    struct ForwardLabels {
        /// The allow-list entry the destination matched (`-` for refused destinations): a
        /// configured value, never the requested URL.
        destination: String,
        outcome: &'static str,
    }

    #[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
    struct AuditLabels {
        action: &'static str,
        result: &'static str,
        reason: &'static str,
    }

    #[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
    struct BreachLabels {
        source: &'static str,
        outcome: &'static str,
    }

    #[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
    struct PointLabel {
        /// A detection point's id (a fixed list).
        point: &'static str,
    }

    #[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
    struct KeyLabels {
        key: &'static str,
    }

    fn gauge(registry: &mut Registry, name: &str, help: &str, value: i64) {
        let gauge = Gauge::<i64, AtomicI64>::default();
        gauge.set(value);
        registry.register(name, help, gauge);
    }

    fn float_gauge(registry: &mut Registry, name: &str, help: &str, value: f64) {
        let gauge = FloatGauge::default();
        gauge.set(value);
        registry.register(name, help, gauge);
    }

    /// The process's own figures from `/proc` (Linux); absent elsewhere.
    fn process(registry: &mut Registry) {
        // Clock ticks per second and the page size are 100 and 4096 on every Linux this runs on.
        const TICKS: f64 = 100.0;
        const PAGE: i64 = 4096;
        if let Ok(stat) = std::fs::read_to_string("/proc/self/stat")
            && let Some(after) = stat.rsplit_once(") ").map(|(_, rest)| rest)
        {
            let fields: Vec<&str> = after.split_whitespace().collect();
            // Fields 14 and 15 of stat (utime, stime) are the 12th and 13th after the command name.
            let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
            let cpu = (ticks(11) + ticks(12)) / TICKS;
            let counter = Counter::<f64, AtomicU64>::default();
            counter.inc_by(cpu);
            registry.register("process_cpu_seconds", "User and system CPU time spent", counter);
        }
        if let Ok(statm) = std::fs::read_to_string("/proc/self/statm")
            && let Some(pages) = statm.split_whitespace().nth(1).and_then(|v| v.parse::<i64>().ok())
        {
            gauge(registry, "process_resident_memory_bytes", "Resident memory size in bytes", pages * PAGE);
        }
        if let Ok(entries) = std::fs::read_dir("/proc/self/fd") {
            let open = i64::try_from(entries.count()).unwrap_or(i64::MAX);
            gauge(registry, "process_open_fds", "Open file descriptors", open);
        }
        if let Ok(limits) = std::fs::read_to_string("/proc/self/limits")
            && let Some(line) = limits.lines().find(|l| l.starts_with("Max open files"))
            && let Some(soft) = line.split_whitespace().nth(3).and_then(|v| v.parse::<i64>().ok())
        {
            gauge(registry, "process_max_fds", "Most open file descriptors allowed", soft);
        }
    }

    /// Everything gathered at scrape time, as OpenMetrics text (without the final `# EOF`).
    pub async fn render(state: &AppState) -> String {
        let mut root = Registry::default();
        process(&mut root);
        let registry = root.sub_registry_with_prefix("strongroom");

        let pool = state.health.pool_stats();
        let connections = Family::<StateLabel, Gauge>::default();
        connections.get_or_create(&StateLabel { state: "idle" }).set(i64::from(pool.idle));
        connections.get_or_create(&StateLabel { state: "in_use" }).set(i64::from(pool.open.saturating_sub(pool.idle)));
        registry.register("db_pool_connections", "Database pool connections by state", connections);
        gauge(registry, "db_pool_max_connections", "The database pool's size limit", i64::from(pool.max));
        if let Ok(wait) = state.health.acquire_wait().await {
            float_gauge(
                registry,
                "db_pool_acquire_seconds",
                "How long the scrape waited for a database connection from the pool",
                wait.as_secs_f64(),
            );
        }
        let started = std::time::Instant::now();
        let up = state.health.ping().await.is_ok();
        gauge(registry, "db_up", "1 when the database answered the scrape's ping", i64::from(up));
        float_gauge(
            registry,
            "db_ping_seconds",
            "How long the scrape's database ping took",
            started.elapsed().as_secs_f64(),
        );

        let now = state.api_keys.now();
        if let Ok(size) = state.audit.size().await {
            gauge(registry, "audit_log_entries", "Entries in the audit log", i64::try_from(size).unwrap_or(i64::MAX));
        }
        if let Ok(Some(checkpoint)) = state.audit.latest_checkpoint().await {
            let age = now.millis_since(checkpoint.created_at).max(0) as f64 / 1000.0;
            float_gauge(registry, "audit_last_checkpoint_age_seconds", "Age of the newest signed checkpoint", age);
        }
        let detections = Family::<PointLabel, Counter>::default();
        for (point, count) in state.decisions.detections() {
            detections.get_or_create(&PointLabel { point }).inc_by(count);
        }
        registry.register(
            "detections",
            "Intrusion detections by detection point, by this process since it started",
            detections,
        );
        gauge(
            registry,
            "security_decisions_in_force",
            "Blocks and suspensions intrusion detection (or staff) decided that hold now",
            i64::try_from(state.decisions.decisions_in_force()).unwrap_or(i64::MAX),
        );
        let events = Family::<AuditLabels, Counter>::default();
        for ((action, result, reason), count) in state.audit.event_counts() {
            events.get_or_create(&AuditLabels { action, result, reason }).inc_by(count);
        }
        registry.register(
            "audit_events",
            "Audit events this process committed, by action, result and reason code (sign-in failures, throttles, reveals by view, refusals)",
            events,
        );

        if let Ok(status) = state.jobs.status().await {
            gauge(
                registry,
                "outbox_pending",
                "Outbox messages waiting for delivery",
                i64::try_from(status.outbox.pending).unwrap_or(i64::MAX),
            );
            gauge(
                registry,
                "outbox_failed",
                "Outbox messages given up",
                i64::try_from(status.outbox.failed).unwrap_or(i64::MAX),
            );
            gauge(
                registry,
                "outbox_oldest_pending_age_seconds",
                "Age of the oldest message waiting for delivery (0 when none waits)",
                status.outbox.oldest_pending_age_seconds.unwrap_or(0),
            );
            if let Some(leader) = &status.leader {
                float_gauge(
                    registry,
                    "jobs_leader_heartbeat_age_seconds",
                    "Time since the job runner's leader last confirmed its lead",
                    leader.heartbeat_age_ms.max(0) as f64 / 1000.0,
                );
            }
            let last_run = Family::<JobLabel, Gauge>::default();
            let failures = Family::<JobLabel, Counter>::default();
            let last_ok = Family::<JobLabel, Gauge>::default();
            for job in &status.jobs {
                let label = JobLabel { job_name: job.name.clone() };
                if let Some(at) = job.last_finished_at.as_deref().and_then(strongroom_types::Timestamp::parse_rfc3339) {
                    last_run.get_or_create(&label).set(at.unix_millis() / 1000);
                }
                last_ok.get_or_create(&label).set(i64::from(job.last_outcome.as_deref() == Some("ok")));
                failures.get_or_create(&label).inc_by(u64::try_from(job.failures).unwrap_or(0));
            }
            registry.register("job_last_run_timestamp_seconds", "When each job last finished (Unix time)", last_run);
            registry.register("job_last_run_ok", "1 when the job's last run succeeded", last_ok);
            registry.register("job_failures", "Failed runs of each job since the deployment began", failures);
        }
        gauge(registry, "jobs_leading", "1 when this process leads the background jobs", i64::from(state.leading()));

        let deliveries = Family::<DeliveryLabels, Counter>::default();
        if let Ok(counters) = state.delivery_counters.by_destination.lock() {
            for ((channel, endpoint), (delivered, failed)) in counters.iter() {
                let labels = |outcome| DeliveryLabels { channel, endpoint: endpoint.clone(), outcome };
                deliveries.get_or_create(&labels("delivered")).inc_by(*delivered);
                deliveries.get_or_create(&labels("failed")).inc_by(*failed);
            }
        }
        registry.register(
            "outbox_deliveries",
            "Delivery attempts by this process, by channel, webhook endpoint id (- for mail and alerts) and outcome",
            deliveries,
        );

        let forwards = Family::<ForwardLabels, Counter>::default();
        let forward_seconds = Family::<ForwardLabels, Counter<f64, AtomicU64>>::default();
        if let Ok(counters) = state.forward.counters().by_host.lock() {
            for ((destination, outcome), (count, ms)) in counters.iter() {
                let labels = ForwardLabels { destination: destination.clone(), outcome };
                forwards.get_or_create(&labels).inc_by(*count);
                forward_seconds.get_or_create(&labels).inc_by(*ms as f64 / 1000.0);
            }
        }
        registry.register(
            "forwards",
            "Forwards by this process, by destination (the allow-list entry; - when refused) and outcome (answered, refused, address_refused, unreachable, timeout, failed, response_too_large)",
            forwards,
        );
        registry.register(
            "forward_gateway_seconds",
            "Time spent waiting for gateways by this process's forwards, by destination and outcome",
            forward_seconds,
        );

        let breach_checks = Family::<BreachLabels, Counter>::default();
        for (source, outcome, count) in state.identity.breach_counts() {
            breach_checks.get_or_create(&BreachLabels { source, outcome }).inc_by(count);
        }
        registry.register(
            "password_breach_checks",
            "Breached-password lookups of new passwords by this process, by source (file, range_api) and outcome (breached, clean, failed: not checked there, accepted without it)",
            breach_checks,
        );

        if let Ok(keks) = state.vault.keys().versions().await {
            let versions = Family::<KeyLabels, Gauge>::default();
            let age = Family::<KeyLabels, FloatGauge>::default();
            let live: Vec<_> = keks.iter().filter(|(_, _, retired)| retired.is_none()).collect();
            versions.get_or_create(&KeyLabels { key: "kek" }).set(i64::try_from(live.len()).unwrap_or(i64::MAX));
            if let Some((_, created, _)) = live.iter().max_by_key(|(version, _, _)| *version) {
                age.get_or_create(&KeyLabels { key: "kek" }).set(now.millis_since(*created).max(0) as f64 / 1000.0);
            }
            registry.register("key_versions", "Key versions not retired, by key", versions);
            registry.register("key_active_age_seconds", "Age of the active version, by key", age);
        }

        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &root).is_err() {
            return String::new();
        }
        out.strip_suffix("# EOF\n").map(str::to_owned).unwrap_or(out)
    }
}
