//! `strongroom keys`: the vault's key-encryption keys — status, rotation, rewrap, retirement.
//!
//! Rotation makes a new active version and then rewraps every data key onto it (no value is
//! decrypted), showing progress; an interrupted rewrap resumes with `keys rewrap` or is finished
//! by any running server's background job. On a production configuration (a production-grade
//! KMS, or `vault.dual_control = "required"`) rotation and retirement need a second operator's
//! approval: an API key holding `admin:keys`, given through `STRONGROOM_APPROVAL_KEY` (never on
//! the command line, where `ps` would show it). The approval is checked and recorded in the audit
//! log with the approver's key id.
//! Must never: print or log key material, or accept an approval from a test key.

use std::io::Write;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::Subcommand;
use strongroom_domain::api_keys::{Mode, Scope};
use strongroom_domain::key_ceremonies::KeyCeremonies;
use strongroom_types::{Clock, Entropy, OsEntropy, SystemClock};

use crate::app::Core;
use crate::commands::print;
use crate::config::{Config, DualControl};

/// `keys` subcommands.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Key-encryption key versions, their state and how many data keys each wraps.
    Status,
    /// Make a new key-encryption key version and rewrap every data key onto it.
    Rotate,
    /// Finish moving data keys onto the active version (after an interrupted rotation).
    Rewrap,
    /// After rotating the root key in the KMS: re-encrypt every key it wraps (keyring entries and
    /// key-encryption keys) under its newest version, so older KMS versions can be disabled
    /// (OpenBao: `min_decryption_version`).
    RewrapRoot,
    /// Make a new fingerprint key version and recompute every token's fingerprint under it (from
    /// the decrypted value). Fingerprint ids (`fp_…`) change.
    RotateFingerprint,
    /// Make a new access-token signing key version. Servers publish it within a minute and sign
    /// with it after 150 s; tokens signed with older versions stay valid until they expire.
    RotateOauth,
    /// Retire an access-token signing key version once every token it signed has expired: its
    /// key is deleted and servers stop accepting its tokens within a minute.
    RetireOauth {
        /// The version to retire.
        #[arg(value_name = "VERSION")]
        key_version: u32,
    },
    /// Retire a previous version that no data key uses (its wrapped material is deleted).
    Retire {
        /// The version to retire.
        #[arg(value_name = "VERSION")]
        kek_version: u32,
    },
}

/// A progress bar on standard error, redrawn in place (see [`progress_line`]). Drawn here rather
/// than with a progress-bar crate: one line is all it needs.
fn progress(label: &'static str, total: u64) -> impl FnMut(u64) {
    let started = std::time::Instant::now();
    move |done| {
        let mut stderr = std::io::stderr().lock();
        let _ = write!(stderr, "\r{}   ", progress_line(label, done, total, started.elapsed().as_secs_f64()));
        let _ = stderr.flush();
    }
}

/// `label [#####-----] done/total (percent%, about N s left)`, the time left extrapolated from
/// the pace so far.
fn progress_line(label: &str, done: u64, total: u64, elapsed_secs: f64) -> String {
    const WIDTH: u64 = 30;
    let percent = (done * 100).checked_div(total).map_or(100, |p| p.min(100));
    let filled = (done * WIDTH).checked_div(total).map_or(WIDTH, |f| f.min(WIDTH));
    let bar: String = (0..WIDTH).map(|i| if i < filled { '#' } else { '-' }).collect();
    let left = match done {
        0 => String::new(),
        _ => format!(", about {:.0} s left", elapsed_secs / done as f64 * total.saturating_sub(done) as f64),
    };
    format!("{label} [{bar}] {done}/{total} ({percent}%{left})")
}

/// Whether this configuration needs a second operator for rotation and retirement.
fn needs_approval(config: &Config, core: &Core) -> bool {
    match config.vault.dual_control {
        DualControl::Required => true,
        DualControl::Waived => false,
        DualControl::Auto => core.kms.production_grade(),
    }
}

/// Checks the second operator's approval; returns the approving key's id.
pub(crate) async fn approval(
    config: &Config,
    core: &Core,
    clock: Arc<dyn Clock>,
    entropy: Arc<dyn Entropy>,
) -> anyhow::Result<Option<String>> {
    if !needs_approval(config, core) {
        return Ok(None);
    }
    let Ok(token) = std::env::var("STRONGROOM_APPROVAL_KEY") else {
        bail!(
            "this deployment requires a second operator's approval (vault.dual_control): set \
             STRONGROOM_APPROVAL_KEY to an API key of theirs that holds admin:keys"
        );
    };
    let service = core.api_keys(config, clock, entropy);
    let principal =
        service.authenticate(token.trim()).await.map_err(|_| anyhow::anyhow!("the approval key was refused"))?;
    if principal.mode() != Mode::Live || !principal.has(Scope::AdminKeys) {
        bail!("the approval key must be a live key holding admin:keys");
    }
    Ok(Some(principal.actor_id().to_owned()))
}

async fn rewrap(core: &Core, ceremonies: &KeyCeremonies<'_>) -> anyhow::Result<u64> {
    let total: u64 = core
        .vault_keys
        .status()
        .await?
        .iter()
        .filter(|k| k.state != strongroom_domain::ports::KekState::Active)
        .map(|k| k.data_keys)
        .sum();
    let started = std::time::Instant::now();
    let moved = ceremonies.rewrap(&core.vault_keys, progress("rewrapping data keys", total)).await?;
    let _ = writeln!(std::io::stderr());
    print(&format!("{moved} data keys rewrapped in {:.1} s", started.elapsed().as_secs_f64()));
    Ok(moved)
}

/// Runs a `keys` subcommand.
pub async fn run(config: &Config, command: KeysCommand) -> anyhow::Result<()> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let entropy: Arc<dyn Entropy> = Arc::new(OsEntropy);
    crate::commands::require_root_key(config)?;
    let core = Core::open(config, clock.clone(), entropy.clone()).await?;
    let result = async {
        match command {
            KeysCommand::Status => {
                let mut text =
                    format!("{:<8} {:<9} {:>10}  {:<25} {}\n", "VERSION", "STATE", "DATA KEYS", "CREATED", "RETIRED");
                for kek in core.vault_keys.status().await? {
                    text.push_str(&format!(
                        "{:<8} {:<9} {:>10}  {:<25} {}\n",
                        kek.version,
                        kek.state.as_str(),
                        kek.data_keys,
                        kek.created_at.to_rfc3339(),
                        kek.retired_at.map(|t| t.to_rfc3339()).unwrap_or_default()
                    ));
                }
                let vault = core.vault(config, clock.clone(), entropy.clone());
                let (active, _) = core.fingerprints.active();
                let counts = vault.fingerprint_status().await?;
                let behind: u64 = counts.iter().filter(|(v, _)| *v != active).map(|(_, n)| n).sum();
                text.push_str(&format!(
                    "fingerprint key: version {active} active; {behind} tokens still to recompute\n"
                ));
                text.push_str(&format!(
                    "kms: {} (production grade: {})",
                    core.kms.key_id(),
                    core.kms.production_grade()
                ));
                print(&text);
            }
            KeysCommand::Rotate => {
                let approver = approval(config, &core, clock.clone(), entropy.clone()).await?;
                let ceremonies = KeyCeremonies { audit: &core.audit, approver: approver.as_deref() };
                let version = ceremonies.rotate_kek(&core.vault_keys).await.context("rotation failed")?;
                print(&format!("key-encryption key version {version} is active"));
                rewrap(&core, &ceremonies).await?;
            }
            KeysCommand::Rewrap => {
                rewrap(&core, &KeyCeremonies { audit: &core.audit, approver: None }).await?;
            }
            KeysCommand::RotateFingerprint => {
                let approver = approval(config, &core, clock.clone(), entropy.clone()).await?;
                let ceremonies = KeyCeremonies { audit: &core.audit, approver: approver.as_deref() };
                let vault = core.vault(config, clock.clone(), entropy.clone());
                let version = ceremonies.rotate_fingerprint(&core.fingerprints).await?;
                print(&format!("fingerprint key version {version} is active"));
                let total: u64 =
                    vault.fingerprint_status().await?.iter().filter(|(v, _)| *v != version).map(|(_, n)| n).sum();
                let started = std::time::Instant::now();
                let moved =
                    ceremonies.refingerprint(&vault, version, progress("recomputing fingerprints", total)).await?;
                let _ = writeln!(std::io::stderr());
                print(&format!("{moved} fingerprints recomputed in {:.1} s", started.elapsed().as_secs_f64()));
            }
            KeysCommand::RotateOauth => {
                let approver = approval(config, &core, clock.clone(), entropy.clone()).await?;
                let ceremonies = KeyCeremonies { audit: &core.audit, approver: approver.as_deref() };
                let version =
                    ceremonies.rotate_oauth(&core.store, core.kms.as_ref(), clock.as_ref(), entropy.as_ref()).await?;
                print(&format!(
                    "access-token signing key version {version} added: published within a minute, used for signing after 150 s"
                ));
            }
            KeysCommand::RetireOauth { key_version: version } => {
                let approver = approval(config, &core, clock.clone(), entropy.clone()).await?;
                let ceremonies = KeyCeremonies { audit: &core.audit, approver: approver.as_deref() };
                ceremonies
                    .retire_oauth(&core.store, clock.as_ref(), version, config.oauth.token_ttl)
                    .await
                    .map_err(crate::commands::describe_domain)?;
                print(&format!("access-token signing key version {version} retired: servers drop it within a minute"));
            }
            KeysCommand::RewrapRoot => {
                let ceremonies = KeyCeremonies { audit: &core.audit, approver: None };
                let (keyring, keks) = ceremonies.rewrap_root(&core.store, core.kms.as_ref(), &core.vault_keys).await?;
                print(&format!(
                    "{keyring} keyring entries and {keks} key-encryption keys rewrapped by {}",
                    core.kms.key_id()
                ));
            }
            KeysCommand::Retire { kek_version: version } => {
                let approver = approval(config, &core, clock.clone(), entropy.clone()).await?;
                let ceremonies = KeyCeremonies { audit: &core.audit, approver: approver.as_deref() };
                if !ceremonies.retire_kek(&core.vault_keys, version).await? {
                    bail!(
                        "version {version} cannot be retired: it must be a previous version that no data key uses \
                         (see `strongroom keys status`; `strongroom keys rewrap` moves data keys off it)"
                    );
                }
                print(&format!("key-encryption key version {version} retired"));
            }
        }
        Ok(())
    }
    .await;
    core.audit.close().await;
    core.store.close().await;
    result
}

#[cfg(test)]
mod tests {
    use super::progress_line;

    #[test]
    fn the_progress_bar_fills_with_the_work_and_says_the_time_left() {
        assert_eq!(
            progress_line("rewrapping data keys", 0, 1000, 0.0),
            "rewrapping data keys [------------------------------] 0/1000 (0%)"
        );
        assert_eq!(
            progress_line("x", 250, 1000, 10.0),
            "x [#######-----------------------] 250/1000 (25%, about 30 s left)"
        );
        assert_eq!(
            progress_line("x", 1000, 1000, 40.0),
            "x [##############################] 1000/1000 (100%, about 0 s left)"
        );
        assert_eq!(progress_line("x", 5, 0, 1.0), "x [##############################] 5/0 (100%, about 0 s left)");
    }
}
