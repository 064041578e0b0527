//! A drill's report: what the attack got, what the normal users got, the decisions and incidents
//! that followed, the clean-up; as JSON and as a table for people, and the verdict.
//! Must never: hold a key, a password, a session token, a card number or a revealed value (only
//! ids, addresses of the documentation ranges, statuses and codes).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use serde_json::{Value, json};

use super::DrillKind;

/// What the attack got.
#[derive(Debug, Default, Clone)]
pub struct AttackOutcome {
    /// Attempts made before and including the first block (sign-ins, guesses, cards, …).
    pub attempts: u32,
    /// HTTP requests the attack sent, follow-ups included (a card is two).
    pub http_requests: u32,
    /// Whether it was blocked.
    pub blocked: bool,
    /// Attempts answered before the first block.
    pub requests_before_block: Option<u32>,
    /// From the first attack request to the first block's answer (real clock).
    pub time_to_detection: Option<Duration>,
    /// The first block's answer (`429 client_blocked`, `fraud_blocked (card_testing)`).
    pub first_block: Option<String>,
    /// Its `Retry-After`.
    pub retry_after: Option<u64>,
    /// Follow-up attempts after the first block, and how many of them were blocked too.
    pub follow_ups: u32,
    /// See `follow_ups`.
    pub held: u32,
    /// Every answer the attack got, by status and code, with counts.
    pub answers: BTreeMap<String, u32>,
    /// `429 rate_limited` answers (a limit, not a detection).
    pub rate_limited: u32,
    /// How long the attack ran.
    pub duration: Duration,
    /// The most attempts that may pass before the block.
    pub bound: u32,
}

/// A normal user's request that was not answered with a success.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Which user.
    pub user: usize,
    /// `sign_in`, `pay`, `read_me`, …
    pub step: String,
    /// `429 client_blocked`, …
    pub answer: String,
}

impl Refusal {
    /// A block by intrusion detection (rather than another refusal).
    pub fn is_block(&self) -> bool {
        self.answer.contains("client_blocked") || self.answer.contains("api_key_suspended")
    }
}

/// What the normal users got.
#[derive(Debug, Default, Clone)]
pub struct NormalSummary {
    /// How many.
    pub users: usize,
    /// Requests they sent.
    pub requests: u32,
    /// Rounds they completed.
    pub rounds: u32,
    /// Their payments that succeeded.
    pub payments: u32,
    /// Payment intents they made.
    pub intents: u32,
    /// Every refusal.
    pub refusals: Vec<Refusal>,
}

impl NormalSummary {
    /// Adds one user's tally.
    pub fn add(&mut self, tally: super::normal::Tally) {
        self.requests += tally.requests;
        self.rounds += tally.rounds;
        self.payments += tally.payments;
        self.intents += tally.intents;
        self.refusals.extend(tally.refusals);
    }
}

/// Whom a decision is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum About {
    /// The attacker's address (or its prefix) or key.
    Attacker,
    /// A normal user's address (or prefix) or the shop's key they use: a false positive.
    NormalUsers,
    /// Someone else (the target's other traffic).
    Other,
}

impl About {
    fn as_str(self) -> &'static str {
        match self {
            About::Attacker => "attacker",
            About::NormalUsers => "normal users",
            About::Other => "other",
        }
    }
}

/// A decision made while the drill ran.
#[derive(Debug, Clone)]
pub struct DecisionSeen {
    /// `dec_…`
    pub id: String,
    /// `ip:198.51.100.7`, `api_key:key_…`
    pub scope: String,
    /// `block`, `suspend`
    pub action: String,
    /// `credential_stuffing`, …
    pub reason: String,
    /// Strikes.
    pub strikes: u64,
    /// Its end (the target's clock).
    pub until: String,
    /// In force when read.
    pub in_force: bool,
    /// Whom it is about.
    pub about: About,
}

/// Whether an incident was opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IncidentView {
    /// `GET /v1/security/incidents` answered 404.
    Missing,
    /// It answered something else.
    Unavailable(String),
    /// Incidents opened, and incidents that changed (joined), while the drill ran.
    Seen {
        /// New ones.
        opened: Vec<String>,
        /// Changed ones.
        joined: Vec<String>,
    },
}

impl IncidentView {
    fn text(&self) -> String {
        match self {
            IncidentView::Missing => "unknown (endpoint missing)".to_owned(),
            IncidentView::Unavailable(why) => format!("unknown ({why})"),
            IncidentView::Seen { opened, joined } if opened.is_empty() && joined.is_empty() => "none".to_owned(),
            IncidentView::Seen { opened, joined } => {
                let mut parts = Vec::new();
                if !opened.is_empty() {
                    parts.push(format!("opened {}", opened.join(", ")));
                }
                if !joined.is_empty() {
                    parts.push(format!("joined {}", joined.join(", ")));
                }
                parts.join("; ")
            }
        }
    }
}

/// What the clean-up did.
#[derive(Debug, Default, Clone)]
pub struct CleanupReport {
    /// Keys made / revoked.
    pub keys_made: usize,
    /// See `keys_made`.
    pub keys_revoked: usize,
    /// Customers made / erased.
    pub customers_made: usize,
    /// See `customers_made`.
    pub customers_erased: usize,
    /// Tokens (not under a customer) made / deleted.
    pub tokens_made: usize,
    /// See `tokens_made`.
    pub tokens_deleted: usize,
    /// Decisions about the drill's actors lifted.
    pub decisions_lifted: usize,
    /// What stays on the target on purpose.
    pub kept: Vec<String>,
    /// What could not be removed.
    pub failures: Vec<String>,
}

/// A drill's report.
#[derive(Debug, Clone)]
pub struct Report {
    /// Which drill.
    pub drill: DrillKind,
    /// The target's base URL.
    pub target: String,
    /// When it began (RFC 3339, the drill's clock).
    pub started_at: String,
    /// The run's id (in the drill's emails, key names and idempotency keys).
    pub run_id: String,
    /// Who attacked.
    pub attacker: String,
    /// What the attack got (`None` when the drill failed before or during it).
    pub attack: Option<AttackOutcome>,
    /// The most attempts the attack could make.
    pub max_requests: u32,
    /// What the normal users got.
    pub normal: NormalSummary,
    /// Decisions made while the drill ran.
    pub decisions: Vec<DecisionSeen>,
    /// Incidents.
    pub incident: IncidentView,
    /// The clean-up.
    pub cleanup: CleanupReport,
    /// Why the drill stopped early.
    pub error: Option<String>,
}

fn seconds(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}

impl Report {
    /// Why the drill failed: not blocked within the bound, a normal user refused or blocked, a
    /// decision against the normal users, an error. Empty: it passed. (Incidents and the
    /// clean-up are reported, not judged.)
    pub fn failures(&self) -> Vec<String> {
        let mut failures = Vec::new();
        if let Some(error) = &self.error {
            failures.push(format!("the drill stopped: {error}"));
        }
        match &self.attack {
            Some(attack) if !attack.blocked => failures.push(format!(
                "not blocked: {} {} got through (max {})",
                attack.attempts,
                self.drill.unit(),
                self.max_requests
            )),
            Some(attack) => {
                let before = attack.requests_before_block.unwrap_or(0);
                if before > attack.bound {
                    failures.push(format!(
                        "blocked too late: after {before} {}, the bound is {}",
                        self.drill.unit(),
                        attack.bound
                    ));
                }
            }
            None => {}
        }
        let blocks = self.normal.refusals.iter().filter(|r| r.is_block()).count();
        if blocks > 0 {
            failures.push(format!("{blocks} request(s) of normal users blocked"));
        }
        let others = self.normal.refusals.len() - blocks;
        if others > 0 {
            failures.push(format!("{others} request(s) of normal users refused otherwise"));
        }
        let against = self.decisions.iter().filter(|d| d.about == About::NormalUsers).count();
        if against > 0 {
            failures.push(format!("{against} decision(s) against the normal users"));
        }
        failures
    }

    /// Whether it passed.
    pub fn passed(&self) -> bool {
        self.failures().is_empty()
    }

    /// The report as JSON.
    pub fn to_json(&self) -> Value {
        let attack = self.attack.as_ref().map(|a| {
            json!({
                "attempts": a.attempts,
                "unit": self.drill.unit(),
                "http_requests": a.http_requests,
                "bound": a.bound,
                "max_requests": self.max_requests,
                "blocked": a.blocked,
                "blocked_means": self.drill.blocked_means(),
                "requests_before_block": a.requests_before_block,
                "time_to_first_detection_seconds": a.time_to_detection.map(seconds),
                "first_block": a.first_block,
                "retry_after_seconds": a.retry_after,
                "block_held": {"follow_ups": a.follow_ups, "blocked": a.held},
                "rate_limited": a.rate_limited,
                "answers": a.answers,
                "duration_seconds": seconds(a.duration),
            })
        });
        let refusals: Vec<Value> = self
            .normal
            .refusals
            .iter()
            .map(|r| json!({"user": r.user, "step": r.step, "answer": r.answer, "block": r.is_block()}))
            .collect();
        let decisions: Vec<Value> = self
            .decisions
            .iter()
            .map(|d| {
                json!({"id": d.id, "scope": d.scope, "action": d.action, "reason": d.reason, "strikes": d.strikes,
                       "until": d.until, "in_force": d.in_force, "about": d.about.as_str()})
            })
            .collect();
        let incident = match &self.incident {
            IncidentView::Seen { opened, joined } => {
                json!({"known": true, "opened": opened, "joined": joined, "summary": self.incident.text()})
            }
            other => json!({"known": false, "summary": other.text()}),
        };
        let c = &self.cleanup;
        json!({
            "drill": self.drill.name(),
            "target": self.target,
            "started_at": self.started_at,
            "run_id": self.run_id,
            "passed": self.passed(),
            "failures": self.failures(),
            "attacker": self.attacker,
            "attack": attack,
            "normal_users": {
                "users": self.normal.users,
                "requests": self.normal.requests,
                "rounds": self.normal.rounds,
                "payments_succeeded": self.normal.payments,
                "false_positives": self.normal.refusals.len(),
                "blocked": self.normal.refusals.iter().filter(|r| r.is_block()).count(),
                "refusals": refusals,
            },
            "decisions": decisions,
            "incident": incident,
            "cleanup": {
                "keys": {"made": c.keys_made, "revoked": c.keys_revoked},
                "customers": {"made": c.customers_made, "erased": c.customers_erased},
                "tokens": {"made": c.tokens_made, "deleted": c.tokens_deleted},
                "decisions_lifted": c.decisions_lifted,
                "kept": c.kept,
                "failures": c.failures,
            },
            "error": self.error,
        })
    }

    /// The report for people.
    pub fn table(&self) -> String {
        let mut t = String::new();
        let verdict = if self.passed() { "PASSED" } else { "FAILED" };
        let _ = writeln!(t, "strongroom drill {} against {}: {verdict}", self.drill.name(), self.target);
        let _ = writeln!(t, "  run {} started {}", self.run_id, self.started_at);
        let row = |t: &mut String, name: &str, value: String| {
            let _ = writeln!(t, "  {name:<28} {value}");
        };
        row(&mut t, "attacker", self.attacker.clone());
        match &self.attack {
            Some(a) => {
                let blocked = match &a.first_block {
                    Some(first) => match a.retry_after {
                        Some(retry) => format!("yes: {first} (Retry-After {retry} s)"),
                        None => format!("yes: {first}"),
                    },
                    None => format!("no (blocked means {})", self.drill.blocked_means()),
                };
                row(&mut t, "blocked", blocked);
                row(
                    &mut t,
                    "requests before the block",
                    match a.requests_before_block {
                        Some(n) => format!("{n} {} (bound {})", self.drill.unit(), a.bound),
                        None => format!("- ({} {} sent, max {})", a.attempts, self.drill.unit(), self.max_requests),
                    },
                );
                row(
                    &mut t,
                    "time to first detection",
                    a.time_to_detection.map_or_else(|| "-".to_owned(), |d| format!("{:.3} s", d.as_secs_f64())),
                );
                if a.blocked {
                    row(&mut t, "block held", format!("{} of {} follow-ups refused", a.held, a.follow_ups));
                }
                if a.rate_limited > 0 {
                    row(&mut t, "rate limited (not detection)", format!("{} × 429 rate_limited", a.rate_limited));
                }
                let answers: Vec<String> = a.answers.iter().map(|(k, v)| format!("{v} × {k}")).collect();
                row(&mut t, "attack answers", answers.join(", "));
                row(
                    &mut t,
                    "attack duration",
                    format!("{:.3} s, {} HTTP requests", a.duration.as_secs_f64(), a.http_requests),
                );
            }
            None => row(&mut t, "attack", "did not run to its end".to_owned()),
        }
        let blocks = self.normal.refusals.iter().filter(|r| r.is_block()).count();
        row(
            &mut t,
            "normal users",
            format!(
                "{} users, {} requests, {} rounds, {} payments succeeded",
                self.normal.users, self.normal.requests, self.normal.rounds, self.normal.payments
            ),
        );
        row(
            &mut t,
            "false positives",
            format!(
                "{} ({blocks} blocked, {} refused otherwise)",
                self.normal.refusals.len(),
                self.normal.refusals.len() - blocks
            ),
        );
        for r in self.normal.refusals.iter().take(10) {
            row(&mut t, "", format!("user {} {}: {}", r.user, r.step, r.answer));
        }
        if self.decisions.is_empty() {
            row(&mut t, "decisions made", "none".to_owned());
        }
        for (i, d) in self.decisions.iter().enumerate() {
            row(
                &mut t,
                if i == 0 { "decisions made" } else { "" },
                format!(
                    "{} {} {} ({}, strike {}, until {}, about the {})",
                    d.id,
                    d.action,
                    d.scope,
                    d.reason,
                    d.strikes,
                    d.until,
                    d.about.as_str()
                ),
            );
        }
        row(&mut t, "incident", self.incident.text());
        let c = &self.cleanup;
        row(
            &mut t,
            "clean-up",
            format!(
                "{}/{} keys revoked, {}/{} customers erased, {}/{} tokens deleted, {} decision(s) lifted",
                c.keys_revoked,
                c.keys_made,
                c.customers_erased,
                c.customers_made,
                c.tokens_deleted,
                c.tokens_made,
                c.decisions_lifted
            ),
        );
        for kept in &c.kept {
            row(&mut t, "  kept", kept.clone());
        }
        for failure in &c.failures {
            row(&mut t, "  not cleaned up", failure.clone());
        }
        if let Some(error) = &self.error {
            row(&mut t, "error", error.clone());
        }
        for failure in self.failures() {
            row(&mut t, "FAILED", failure);
        }
        t
    }
}
