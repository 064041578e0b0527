//! `strongroom decisions list|lift|extend`: intrusion detection's decisions (blocked clients,
//! suspended API keys) of every merchant, for the operator; the same rules as the API's
//! `/v1/security/decisions` (a lift or an extension of one in force, audited as `operator`).
//! Must never: change a decision without the audit entry, or print anything but ids, scopes,
//! reasons and times.

use std::sync::Arc;

use anyhow::Context;
use clap::Subcommand;
use strongroom_domain::detection::{Decider, DecisionService};
use strongroom_domain::ports::detection::DecisionRecord;
use strongroom_types::{Clock, Entropy, OsEntropy, SystemClock};

use crate::app::Core;
use crate::commands::print;
use crate::config::Config;

/// `decisions` subcommands.
#[derive(Debug, Subcommand)]
pub enum DecisionsCommand {
    /// The decisions in force now, of every merchant: one line each (`--json`: as JSON).
    List {
        /// Print them as JSON.
        #[arg(long)]
        json: bool,
    },
    /// End a decision in force now.
    Lift {
        /// Its id (`dec_…`).
        id: String,
    },
    /// Set a decision in force to end this long from now (`2h`, `30m`; at most 24h).
    Extend {
        /// Its id (`dec_…`).
        id: String,
        /// How long from now.
        #[arg(long = "for")]
        duration: String,
    },
}

fn line(d: &DecisionRecord) -> String {
    format!(
        "{:<30} {:<8} {:<8} {:<36} {:<20} {:<28} {}",
        d.id,
        d.merchant.as_deref().map_or("(all)", |m| if m.len() > 8 { &m[..8] } else { m }),
        d.action,
        format!("{}:{}", d.scope_kind, d.scope_value),
        d.reason,
        d.until.to_rfc3339(),
        d.created_by
    )
}

fn json(d: &DecisionRecord) -> serde_json::Value {
    serde_json::json!({
        "id": d.id, "merchant": d.merchant, "scope": {"kind": d.scope_kind, "address": d.scope_value},
        "action": d.action, "reason": d.reason, "detail": d.detail, "created_by": d.created_by,
        "created_at": d.created_at.to_rfc3339(), "until": d.until.to_rfc3339(), "strikes": d.strikes,
        "lifted_at": d.lifted_at.map(|t| t.to_rfc3339()), "lifted_by": d.lifted_by,
    })
}

/// Runs a `decisions` subcommand.
pub async fn run(config: &Config, command: DecisionsCommand) -> anyhow::Result<()> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let entropy: Arc<dyn Entropy> = Arc::new(OsEntropy);
    crate::commands::require_root_key(config)?;
    let core = Core::open(config, clock.clone(), entropy.clone()).await?;
    let result = async {
        let decisions = DecisionService::new(
            Arc::new(core.store.clone()),
            Arc::new(core.store.clone()),
            core.outbox.clone(),
            core.audit.clone(),
            clock,
            entropy,
            config.detection.settings(),
        );
        match command {
            DecisionsCommand::List { json: as_json } => {
                let holding = decisions.holding().await?;
                if as_json {
                    print(&serde_json::to_string_pretty(&holding.iter().map(json).collect::<Vec<_>>())?);
                } else {
                    let mut text = format!(
                        "{:<30} {:<8} {:<8} {:<36} {:<20} {:<28} {}\n",
                        "ID", "MERCHANT", "ACTION", "SCOPE", "REASON", "UNTIL", "BY"
                    );
                    for d in &holding {
                        text.push_str(&line(d));
                        text.push('\n');
                    }
                    text.push_str(&format!("{} decision(s) in force", holding.len()));
                    print(&text);
                }
            }
            DecisionsCommand::Lift { id } => {
                let lifted = decisions.lift(Decider::Operator, &id).await.with_context(|| format!("lifting {id}"))?;
                print(&format!("lifted {}", lifted.id));
            }
            DecisionsCommand::Extend { id, duration } => {
                let length = humantime_serde::re::humantime::parse_duration(&duration)
                    .with_context(|| format!("--for: {duration:?} is not a duration such as 2h"))?;
                let extended = decisions
                    .extend(Decider::Operator, &id, length)
                    .await
                    .with_context(|| format!("extending {id}"))?;
                print(&format!("{} now ends at {}", extended.id, extended.until.to_rfc3339()));
            }
        }
        Ok(())
    }
    .await;
    core.audit.close().await;
    core.store.close().await;
    result
}
