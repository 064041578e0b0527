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
        // Only what the head covered when verification began: a server appending meanwhile
        // does not make the log look wrong.
        if next >= head {
            break;
        }
        let page = u32::try_from((head - next).min(u64::from(PAGE))).unwrap_or(PAGE);
        let records = repo.entries_with_leaf_hashes(next, page).await?;
        if records.is_empty() {
            break;
        }
        for (record, stored) in &records {
            if record.seq != next {
                let detail = format!("expected entry {next}, found entry {} next", record.seq);
                return Ok(report(next, confirmed, Some(frontier.root()), Finding::Sequence { index: next, detail }));
            }
            let claimed = leaf_seq(&record.leaf);
            if claimed != Some(record.seq) {
                let detail = match claimed {
                    Some(seq) => format!("its leaf says it is entry {seq}"),
                    None => "its leaf is not a valid entry".to_owned(),
                };
                return Ok(report(next, confirmed, Some(frontier.root()), Finding::Sequence { index: next, detail }));
            }
            let hash = merkle::leaf_hash(&record.leaf);
            if stored.is_none_or(|stored| stored != hash) {
                return Ok(report(next, confirmed, Some(frontier.root()), Finding::LeafChanged { index: next }));
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
    if next < head {
        return Ok(report(next, confirmed, Some(frontier.root()), Finding::HeadMismatch { head, entries: next }));
    }
    Ok(Report { entries: next, checkpoints: confirmed, root: frontier.root(), finding: None })
}

/// The `seq` a leaf states about itself. The encoding is exact (`…"outcome":{…},"seq":N,"source":…`
/// with no escapes), so a scan for the one `"seq":` key suffices; anything else is not a valid leaf.
fn leaf_seq(leaf: &[u8]) -> Option<u64> {
    const KEY: &[u8] = b"},\"seq\":";
    let at = leaf.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
    let digits = leaf.get(at..)?.iter().take_while(|b| b.is_ascii_digit()).count();
    let text = std::str::from_utf8(leaf.get(at..at + digits)?).ok()?;
    if leaf.get(at + digits) != Some(&b',') || (digits > 1 && text.starts_with('0')) {
        return None;
    }
    text.parse().ok()
}

fn report(entries: u64, checkpoints: u64, root: Option<Hash>, finding: Finding) -> Report {
    Report { entries, checkpoints, root: root.unwrap_or_else(merkle::empty_root), finding: Some(finding) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::event::{AuditEvent, Outcome, encode_leaf};
    use strongroom_types::Timestamp;

    #[test]
    fn leaf_seq_reads_what_the_encoder_wrote() {
        for seq in [0u64, 7, 10, 123_456_789] {
            let leaf =
                encode_leaf(&AuditEvent::system("x.y", Outcome::Denied("r")), seq, Timestamp::from_unix_millis(0));
            assert_eq!(leaf_seq(&leaf), Some(seq));
        }
        assert_eq!(leaf_seq(br#"{"outcome":{},"seq":07,"source":1}"#), None);
        assert_eq!(leaf_seq(br#"{"outcome":{},"seq":"7","source":1}"#), None);
        assert_eq!(leaf_seq(b"garbage"), None);
    }
}
