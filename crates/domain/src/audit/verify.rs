//! `audit verify`: recomputes the whole tree from the stored entries and checks it against every
//! signed checkpoint, and the stored hashes against the entries. Names the first problem found.
//!
//! What each tampering looks like here: a *changed* entry no longer matches its stored leaf hash,
//! or (if that was changed too) the signed root of the first checkpoint after it; a *removed* entry
//! leaves a gap in the sequence; an *inserted* or *reordered* entry carries a `seq` in its leaf that
//! differs from its row; a *truncated* log is shorter than a signed checkpoint; a *forged*
//! checkpoint fails its signature.
//! Must never: report success when any checked fact fails.

use super::checkpoint::VerifierKey;
use super::merkle::{self, Frontier, Hash};
use crate::StoreError;
use crate::ports::AuditRepository;

/// What verification found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    /// A row's position and the `seq` in its leaf disagree, or a position is missing.
    Sequence { index: u64, detail: String },
    /// An entry's leaf does not match the stored leaf hash.
    LeafChanged { index: u64 },
    /// A checkpoint's signature does not verify.
    ForgedCheckpoint { size: u64, detail: String },
    /// The recomputed root at a checkpoint's size differs from the signed one: an entry below that
    /// size was changed, removed, inserted or reordered.
    RootMismatch { size: u64, after: u64 },
    /// The log is shorter than a signed checkpoint.
    Truncated { entries: u64, checkpoint_size: u64 },
    /// The stored head disagrees with the entries.
    HeadMismatch { head: u64, entries: u64 },
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Finding::Sequence { index, detail } => {
                write!(f, "entry {index}: {detail} (removed, inserted or reordered)")
            }
            Finding::LeafChanged { index } => {
                write!(f, "entry {index} was changed: its leaf does not match the stored leaf hash")
            }
            Finding::ForgedCheckpoint { size, detail } => write!(f, "checkpoint of size {size} is not valid: {detail}"),
            Finding::RootMismatch { size, after } => write!(
                f,
                "the signed root of the checkpoint of size {size} does not match the entries: an entry at index {after}..{size} was changed, removed, inserted or reordered"
            ),
            Finding::Truncated { entries, checkpoint_size } => {
                write!(
                    f,
                    "the log has {entries} entries but a signed checkpoint covers {checkpoint_size}: entries were removed"
                )
            }
            Finding::HeadMismatch { head, entries } => {
                write!(f, "the log head says {head} entries but {entries} are stored")
            }
        }
    }
}

/// The result of a verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Entries read.
    pub entries: u64,
    /// Checkpoints whose signature and root were confirmed.
    pub checkpoints: u64,
    /// The root of all entries.
    pub root: Hash,
    /// The first problem, if any.
    pub finding: Option<Finding>,
}

const PAGE: u32 = 10_000;

/// Verifies the log in `repo` against the checkpoint key; `progress` is called with the number
/// of entries read so far.
pub async fn verify_log(
    repo: &dyn AuditRepository,
    key: &VerifierKey,
    mut progress: impl FnMut(u64, u64),
) -> Result<Report, StoreError> {
    let head = repo.size().await?;
    let mut checkpoints = Vec::new();
    for stored in repo.checkpoints().await? {
        match key.open(&stored.note) {
            Ok(opened) if opened.size == stored.size && opened.root == stored.root => checkpoints.push(opened),
            Ok(_) => {
                let detail = "its stored size or root differs from the signed note".to_owned();
                return Ok(report(0, 0, None, Finding::ForgedCheckpoint { size: stored.size, detail }));
            }
            Err(err) => {
                return Ok(report(
                    0,
                    0,
                    None,
                    Finding::ForgedCheckpoint { size: stored.size, detail: err.to_string() },
                ));
            }
        }
    }
    checkpoints.sort_by_key(|c| c.size);
    let mut pending = checkpoints.iter().peekable();
    let mut confirmed = 0u64;
    let mut last_confirmed = 0u64;
    let mut frontier = Frontier::default();
    // A checkpoint of size 0 (empty log) is confirmed by the empty root.
    while let Some(cp) = pending.next_if(|c| c.size == 0) {
        if cp.root != merkle::empty_root() {
            return Ok(report(0, confirmed, None, Finding::RootMismatch { size: 0, after: 0 }));
        }
        confirmed += 1;
    }
    let mut next = 0u64;
    loop {
        let records = repo.entries(next, PAGE).await?;
        if records.is_empty() {
            break;
        }
        let stored_hashes = repo.leaf_hashes(next, PAGE).await?;
        let mut stored = stored_hashes.iter().peekable();
        for record in &records {
            if record.seq != next {
                let detail = format!("expected entry {next}, found entry {} next", record.seq);
                return Ok(report(next, confirmed, Some(frontier.root()), Finding::Sequence { index: next, detail }));
            }
            let claimed = serde_json::from_slice::<serde_json::Value>(&record.leaf)
                .ok()
                .and_then(|v| v.get("seq").and_then(serde_json::Value::as_u64));
            if claimed != Some(record.seq) {
                let detail = match claimed {
                    Some(seq) => format!("its leaf says it is entry {seq}"),
                    None => "its leaf is not a valid entry".to_owned(),
                };
                return Ok(report(next, confirmed, Some(frontier.root()), Finding::Sequence { index: next, detail }));
            }
            let hash = merkle::leaf_hash(&record.leaf);
            while stored.next_if(|(idx, _)| *idx < record.seq).is_some() {}
            match stored.peek() {
                Some((idx, stored_hash)) if *idx == record.seq && *stored_hash != hash => {
                    return Ok(report(next, confirmed, Some(frontier.root()), Finding::LeafChanged { index: next }));
                }
                _ => {}
            }
            frontier.push(hash);
            next += 1;
            while let Some(cp) = pending.next_if(|c| c.size == next) {
                if cp.root != frontier.root() {
                    let finding = Finding::RootMismatch { size: cp.size, after: last_confirmed };
                    return Ok(report(next, confirmed, Some(frontier.root()), finding));
                }
                confirmed += 1;
                last_confirmed = cp.size;
            }
        }
        progress(next, head);
    }
    if let Some(cp) = pending.next() {
        let finding = Finding::Truncated { entries: next, checkpoint_size: cp.size };
        return Ok(report(next, confirmed, Some(frontier.root()), finding));
    }
    if head != next {
        return Ok(report(next, confirmed, Some(frontier.root()), Finding::HeadMismatch { head, entries: next }));
    }
    Ok(Report { entries: next, checkpoints: confirmed, root: frontier.root(), finding: None })
}

fn report(entries: u64, checkpoints: u64, root: Option<Hash>, finding: Finding) -> Report {
    Report { entries, checkpoints, root: root.unwrap_or_else(merkle::empty_root), finding: Some(finding) }
}
