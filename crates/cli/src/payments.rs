//! `strongroom payments reconcile`: asks the gateway what became of every call that got no
//! answer (intents left `processing`, refunds left `pending`) and reports the differences; with
//! `--settle` it settles them as the server's reconciliation job does (a payment it settles gets
//! its receipt mail, queued in the outbox for the server to send).
//! Must never: settle without `--settle`, or print a card detail (the report holds ids, keys and
//! outcomes only).

use std::sync::Arc;

use anyhow::{Context, bail};
use clap::Subcommand;
use strongroom_domain::payments::reconcile::{ReconcileMode, ReconcileReport};
use strongroom_types::{Clock, Entropy, OsEntropy, SystemClock, Timestamp};

use crate::app::Core;
use crate::commands::print;
use crate::config::Config;

/// `payments` subcommands.
#[derive(Debug, Subcommand)]
pub enum PaymentsCommand {
    /// Compare the calls strongroom made to the gateway without getting an answer against what
    /// the gateway says became of them. Prints one line per call, then a summary; `--json`
    /// prints the report as JSON. Exit 0 when nothing differs, 3 when something does.
    Reconcile {
        /// Look at calls made since this time: an RFC 3339 timestamp or a duration back from now
        /// (`24h`, `7d`). Default 24h.
        #[arg(long, default_value = "24h")]
        since: String,
        /// Settle what the gateway decided (as the server's job does); without it, only report.
        #[arg(long)]
        settle: bool,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// The exit code when differences were found.
pub const DIFFERENCES_FOUND: i32 = 3;

/// `--since`: an RFC 3339 timestamp, or a duration back from `now`.
fn parse_since(text: &str, now: Timestamp) -> anyhow::Result<Timestamp> {
    if let Some(at) = Timestamp::parse_rfc3339(text) {
        return Ok(at);
    }
    let back = humantime_serde::re::humantime::parse_duration(text)
        .with_context(|| format!("--since: {text:?} is neither an RFC 3339 time nor a duration such as 24h"))?;
    let millis = i64::try_from(back.as_millis()).unwrap_or(i64::MAX);
    Ok(Timestamp::from_unix_millis(now.unix_millis().saturating_sub(millis)))
}

/// The readable table of a report.
fn table(report: &ReconcileReport) -> String {
    let mut text = format!(
        "{:<32} {:<10} {:<26} {:<12} {:<30} {}\n",
        "OBJECT", "OPERATION", "RECORDED", "OURS", "GATEWAY", "ACTION"
    );
    for d in &report.differences {
        text.push_str(&format!(
            "{:<32} {:<10} {:<26} {:<12} {:<30} {}\n",
            d.object, d.operation, d.recorded_at, d.ours, d.gateway, d.action
        ));
    }
    text.push_str(&format!(
        "{} unanswered calls: {} settled ({} after sending again), {} left",
        report.examined, report.settled, report.resent, report.left
    ));
    text
}

/// Runs a `payments` subcommand; returns the exit code.
pub async fn run(config: &Config, command: PaymentsCommand) -> anyhow::Result<i32> {
    let PaymentsCommand::Reconcile { since, settle, json } = command;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let entropy: Arc<dyn Entropy> = Arc::new(OsEntropy);
    let since = parse_since(&since, clock.now())?;
    if since > clock.now() {
        bail!("--since is in the future");
    }
    crate::commands::require_root_key(config)?;
    let core = Core::open(config, clock.clone(), entropy.clone()).await?;
    let result = async {
        let vault = Arc::new(core.vault(config, clock.clone(), entropy.clone()));
        let (payments, _) =
            core.payments_with_checkout(config, config.server.listen, vault, clock.clone(), entropy.clone()).await?;
        let mode = if settle { ReconcileMode::Settle } else { ReconcileMode::Report };
        let report = payments.reconcile(since, mode).await?;
        if json {
            print(&serde_json::to_string_pretty(&report)?);
        } else {
            print(&table(&report));
        }
        Ok(if report.examined == 0 { 0 } else { DIFFERENCES_FOUND })
    }
    .await;
    core.audit.close().await;
    core.store.close().await;
    result
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code")]
    use strongroom_types::Timestamp;

    use super::parse_since;

    #[test]
    fn since_takes_a_time_or_a_duration_back() {
        let now = Timestamp::from_unix_millis(10 * 86_400_000);
        assert_eq!(parse_since("24h", now).unwrap().unix_millis(), 9 * 86_400_000);
        assert_eq!(parse_since("7d", now).unwrap().unix_millis(), 3 * 86_400_000);
        assert_eq!(parse_since("1970-01-02T00:00:00Z", now).unwrap().unix_millis(), 86_400_000);
        assert!(parse_since("yesterday", now).is_err());
    }
}
