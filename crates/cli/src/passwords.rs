//! `strongroom passwords import`: builds the offline breached-password corpus from Have I Been
//! Pwned's "Pwned Passwords" SHA-1 list (format and lookup: `strongroom_store::pwned`).
//! Needs neither the database nor the root key. Servers read the corpus at start.
//! Must never: read the whole list into memory, or replace a good corpus with a partial one.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use clap::Subcommand;
use strongroom_store::pwned::{self, ImportOptions};

use crate::commands::print;
use crate::config::Config;

/// `passwords` subcommands.
#[derive(Debug, Subcommand)]
pub enum PasswordsCommand {
    /// Build the breached-password corpus from Have I Been Pwned's "Pwned Passwords" SHA-1 list:
    /// one file sorted by hash (`HEX40:COUNT` lines, as its downloader writes it; `-` reads standard
    /// input) or a directory of range files (`00000.txt` … `FFFFF.txt`, `HEX35:COUNT` lines).
    /// Memory stays small; input out of hash order is refused. Written atomically to the data
    /// directory; servers use it from their next start.
    Import {
        /// The SHA-1 list, `-` for standard input, or the directory of range files.
        #[arg(value_name = "FILE")]
        input: PathBuf,
        /// Where to write it (default: passwords.pwned_file, or <data_dir>/pwned-passwords.bin).
        #[arg(long)]
        output: Option<PathBuf>,
        /// Bytes of each SHA-1 kept, 6 to 20. Fewer make a smaller file with more false matches:
        /// about (hashes / 2^(8 × bytes)) per lookup, 5e-11 for a billion hashes at 8.
        #[arg(long, default_value_t = pwned::DEFAULT_WIDTH)]
        hash_bytes: usize,
        /// Leave out hashes seen fewer times than this in breaches (1 keeps every one).
        #[arg(long, default_value_t = 1)]
        min_count: u64,
    },
}

/// Runs a `passwords` subcommand.
pub async fn run(config: &Config, command: PasswordsCommand) -> anyhow::Result<()> {
    let PasswordsCommand::Import { input, output, hash_bytes, min_count } = command;
    let output = output.unwrap_or_else(|| config.pwned_file());
    if output.parent() == Some(config.data_dir.as_path()) {
        crate::data_dir::ensure_dir(&config.data_dir)?;
    }
    let options = ImportOptions { width: hash_bytes, min_count };
    let started = Instant::now();
    let (from, to) = (input.clone(), output.clone());
    let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let report = tokio::task::spawn_blocking(move || {
        let mut progress = |lines: u64| {
            if tty {
                let _ = write!(std::io::stderr(), "\rimporting: {lines} lines read");
            }
        };
        pwned::import(&from, &to, options, &mut progress)
    })
    .await
    .context("the import task failed")?;
    if tty {
        let _ = writeln!(std::io::stderr());
    }
    let report = report.with_context(|| format!("cannot import {}", input.display()))?;
    let seconds = started.elapsed().as_secs_f64();
    let from_ranges =
        if report.range_files > 0 { format!(" from {} range files", report.range_files) } else { String::new() };
    print(&format!(
        "imported {} hashes into {} ({} bytes, {hash_bytes}-byte prefixes: a false match about {:.1e} per lookup)\n\
         read {} lines{from_ranges} ({} duplicates, {} below --min-count {min_count}) in {seconds:.2} s, {:.0} lines/s\n\
         running servers use it from their next start",
        report.written,
        output.display(),
        report.bytes,
        pwned::false_positive_rate(report.written, hash_bytes),
        report.lines,
        report.duplicates,
        report.below_min_count,
        report.lines as f64 / seconds.max(1e-9),
    ));
    Ok(())
}
