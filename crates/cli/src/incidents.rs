//! `strongroom incidents list|show|resolve`: security incidents of every merchant, for the
//! operator; the same rules as the API's `/v1/security/incidents` (a resolve is a conditional
//! change from open or contained, audited as `operator`).
//! Must never: change an incident without its audit entry, or print anything but ids, codes,
//! times and the incident's own checked text.

use std::sync::Arc;

use anyhow::Context;
use clap::Subcommand;
use strongroom_domain::detection::incidents::{ChangeIncident, IncidentService, IncidentState, IncidentView};
use strongroom_domain::detection::playbooks::{KeyRotation, Playbooks, Step, StepInput};
use strongroom_domain::detection::{Decider, DecisionService};
use strongroom_domain::ports::incidents::IncidentRecord;
use strongroom_types::{Clock, Entropy, OsEntropy, SystemClock};

use crate::app::Core;
use crate::commands::print;
use crate::config::Config;

/// `incidents` subcommands.
#[derive(Debug, Subcommand)]
pub enum IncidentsCommand {
    /// Incidents of every merchant, newest first: one line each (`--json`: as JSON).
    List {
        /// Only those in this state: open, contained or resolved.
        #[arg(long)]
        state: Option<String>,
        /// Print them as JSON.
        #[arg(long)]
        json: bool,
    },
    /// One incident with its timeline and affected subjects.
    Show {
        /// Its id (`inc_…`).
        id: String,
        /// Print it as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Resolve an open or contained incident (final).
    Resolve {
        /// Its id (`inc_…`).
        id: String,
    },
    /// Run a playbook step on an incident (as the operator: no four-eyes; `revoke_sessions
    /// --scope everyone` ends every session of the deployment). Prints what it did;
    /// `export_evidence` prints the evidence as JSON.
    Playbook {
        /// The incident (`inc_…`).
        id: String,
        /// revoke_sessions, suspend_api_keys, freeze_refunds, freeze_forwarding,
        /// unfreeze_refunds, unfreeze_forwarding, force_password_reset, export_evidence,
        /// notify_customers, rotate_keys (a second operator's key in STRONGROOM_APPROVAL_KEY
        /// under vault.dual_control, as for `keys rotate`).
        step: String,
        /// revoke_sessions: subjects (default), account, merchant or everyone.
        #[arg(long)]
        scope: Option<String>,
        /// revoke_sessions --scope account: the account (`cus_…`, `stf_…`).
        #[arg(long)]
        account: Option<String>,
        /// suspend_api_keys: a key to suspend (`key_…`; repeat for more; none: the incident's).
        #[arg(long = "api-key")]
        api_keys: Vec<String>,
    },
}

fn line(i: &IncidentRecord) -> String {
    format!(
        "{:<30} {:<8} {:<9} {:<10} {:<28} {}",
        i.id,
        i.merchant.as_deref().map_or("(all)", |m| if m.len() > 8 { &m[..8] } else { m }),
        i.severity.as_str(),
        i.state,
        i.opened_at.to_rfc3339(),
        i.title
    )
}

fn json(i: &IncidentRecord) -> serde_json::Value {
    serde_json::json!({
        "id": i.id, "merchant": i.merchant, "title": i.title, "severity": i.severity.as_str(),
        "state": i.state, "assignee": i.assignee, "opened_by": i.opened_by,
        "opened_at": i.opened_at.to_rfc3339(), "updated_at": i.updated_at.to_rfc3339(),
        "resolved_at": i.resolved_at.map(|t| t.to_rfc3339()),
    })
}

fn full_json(view: &IncidentView) -> serde_json::Value {
    let mut value = json(&view.incident);
    value["timeline"] = view
        .timeline
        .iter()
        .map(|e| {
            serde_json::json!({"at": e.at.to_rfc3339(), "actor": e.actor, "kind": e.kind, "text": e.text, "data": e.data})
        })
        .collect();
    value["subjects"] = view.subjects.iter().map(|s| serde_json::json!({"kind": s.kind, "id": s.value})).collect();
    value
}

/// The incident service over the configured database, as the operator uses it.
pub(crate) fn service(
    core: &Core,
    config: &Config,
    clock: Arc<dyn Clock>,
    entropy: Arc<dyn Entropy>,
) -> IncidentService {
    IncidentService::new(
        Arc::new(core.store.clone()),
        core.outbox.clone(),
        core.audit.clone(),
        clock,
        entropy,
        config.detection.incident_settings(),
    )
}

/// The playbook steps over the configured database, as the operator runs them (customer
/// notices are queued in the outbox; a running server sends them).
async fn playbooks(core: &Core, config: &Config, incidents: IncidentService) -> anyhow::Result<Playbooks> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let entropy: Arc<dyn Entropy> = Arc::new(OsEntropy);
    let hasher = core.password_hasher(config, entropy.clone()).await?;
    let postman = strongroom_domain::mail::Postman::new(core.outbox.clone());
    let listen = config.server.listen;
    let identity = core
        .identity(config, config.identity_link_base(listen), hasher.clone(), clock.clone(), entropy.clone())
        .with_postman(postman.clone());
    let staff = core
        .staff(config, config.staff_link_base(listen), hasher, clock.clone(), entropy.clone())
        .with_postman(postman);
    let decisions = DecisionService::new(
        Arc::new(core.store.clone()),
        Arc::new(core.store.clone()),
        core.outbox.clone(),
        core.audit.clone(),
        clock,
        entropy,
        config.detection.settings(),
    );
    Ok(Playbooks::new(incidents, decisions, Arc::new(identity), Arc::new(staff), core.audit.clone()))
}

/// Runs an `incidents` subcommand.
pub async fn run(config: &Config, command: IncidentsCommand) -> anyhow::Result<()> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let entropy: Arc<dyn Entropy> = Arc::new(OsEntropy);
    crate::commands::require_root_key(config)?;
    let core = Core::open(config, clock.clone(), entropy.clone()).await?;
    let result = async {
        let incidents = service(&core, config, clock, entropy);
        match command {
            IncidentsCommand::List { state, json: as_json } => {
                let found = incidents.list(None, state.as_deref(), Some(100)).await.context("--state")?;
                if as_json {
                    print(&serde_json::to_string_pretty(&found.iter().map(json).collect::<Vec<_>>())?);
                } else {
                    let mut text = format!(
                        "{:<30} {:<8} {:<9} {:<10} {:<28} {}\n",
                        "ID", "MERCHANT", "SEVERITY", "STATE", "OPENED", "TITLE"
                    );
                    for i in &found {
                        text.push_str(&line(i));
                        text.push('\n');
                    }
                    text.push_str(&format!("{} incident(s)", found.len()));
                    print(&text);
                }
            }
            IncidentsCommand::Show { id, json: as_json } => {
                let view = incidents.view(None, &id).await.with_context(|| format!("reading {id}"))?;
                if as_json {
                    print(&serde_json::to_string_pretty(&full_json(&view))?);
                } else {
                    let mut text = line(&view.incident);
                    text.push_str(&format!("\nassignee: {}\n", view.incident.assignee.as_deref().unwrap_or("-")));
                    for e in &view.timeline {
                        text.push_str(&format!(
                            "  {} {:<10} {:<30} {} {}\n",
                            e.at.to_rfc3339(),
                            e.kind,
                            e.actor,
                            e.text.as_deref().unwrap_or(""),
                            e.data
                        ));
                    }
                    for s in &view.subjects {
                        text.push_str(&format!("  subject {}:{}\n", s.kind, s.value));
                    }
                    print(text.trim_end());
                }
            }
            IncidentsCommand::Playbook { id, step, scope, account, api_keys } => {
                let mut playbooks = playbooks(&core, config, incidents.clone()).await?;
                let step = Step::parse(&step).map_err(|_| anyhow::anyhow!("no playbook step is called {step:?}"))?;
                if step == Step::RotateKeys {
                    let (clock, entropy): (Arc<dyn Clock>, Arc<dyn Entropy>) =
                        (Arc::new(SystemClock), Arc::new(OsEntropy));
                    let approver = crate::keys::approval(config, &core, clock, entropy).await?;
                    playbooks = playbooks.with_key_rotation(KeyRotation { keys: core.vault_keys.clone(), approver });
                }
                let input = StepInput { scope, account, api_keys, approval_id: None };
                let done = playbooks
                    .run(Decider::Operator, None, &id, step, input)
                    .await
                    .with_context(|| format!("{} on {id}", step.as_str()))?;
                match done.evidence {
                    Some(evidence) => print(&serde_json::to_string_pretty(&evidence)?),
                    None => print(&format!("{} {}: {}", id, step.as_str(), done.entry.data["outcome"])),
                }
            }
            IncidentsCommand::Resolve { id } => {
                let change = ChangeIncident { state: Some(IncidentState::Resolved), assignee: None };
                let resolved = incidents
                    .change(Decider::Operator, None, &id, change)
                    .await
                    .with_context(|| format!("resolving {id}"))?;
                print(&format!("resolved {}", resolved.id));
            }
        }
        Ok(())
    }
    .await;
    core.audit.close().await;
    core.store.close().await;
    result
}
