//! Breached passwords: a new password (customers and staff, at registration, change, reset and
//! invitation acceptance) is looked up by its SHA-1 in the configured breach corpora — the
//! offline corpus first, then Have I Been Pwned's range API — and refused when found.
//!
//! Fails open: a source that cannot answer is skipped with a warning and counted
//! (`strongroom_password_breach_checks_total{outcome="failed"}`), so an unreachable API never
//! stops registrations; the length rules and zxcvbn's lists still apply.
//! Must never: log the password or its hash, or keep the hash after the check (it is an unsalted
//! hash of a secret: wiped when done).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use sha1::{Digest, Sha1};
use zeroize::Zeroize;

use crate::ports::BreachedPasswords;

/// What a lookup came to, for the counters.
const OUTCOMES: [&str; 3] = ["breached", "clean", "failed"];

#[derive(Debug)]
struct Source {
    port: Arc<dyn BreachedPasswords>,
    counts: [AtomicU64; 3],
}

/// The breach corpora a new password is checked against (none: no check).
#[derive(Debug, Default)]
pub struct BreachCheck {
    sources: Vec<Source>,
}

impl BreachCheck {
    /// Checks against `sources`, in order; the first that finds the password decides.
    pub fn new(sources: Vec<Arc<dyn BreachedPasswords>>) -> Self {
        Self { sources: sources.into_iter().map(|port| Source { port, counts: Default::default() }).collect() }
    }

    /// Whether any source is configured.
    pub fn is_enabled(&self) -> bool {
        !self.sources.is_empty()
    }

    /// Whether a source holds the password. A source that fails is skipped (fail open).
    pub async fn is_breached(&self, password: &str) -> bool {
        if self.sources.is_empty() {
            return false;
        }
        let mut sha1: [u8; 20] = Sha1::digest(password.as_bytes()).into();
        let mut found = false;
        for source in &self.sources {
            let outcome = match source.port.contains(&sha1).await {
                Ok(true) => 0,
                Ok(false) => 1,
                Err(err) => {
                    tracing::warn!(
                        source = source.port.name(),
                        error = %err,
                        "breached-password check failed: the password was not checked against this source (fail open)"
                    );
                    2
                }
            };
            if let Some(count) = source.counts.get(outcome) {
                count.fetch_add(1, Ordering::Relaxed);
            }
            if outcome == 0 {
                found = true;
                break;
            }
        }
        sha1.zeroize();
        found
    }

    /// Lookups so far: `(source, outcome, count)` for every source and outcome (`breached`,
    /// `clean`, `failed`).
    pub fn counts(&self) -> Vec<(&'static str, &'static str, u64)> {
        let mut out = Vec::new();
        for source in &self.sources {
            for (outcome, count) in OUTCOMES.iter().zip(&source.counts) {
                out.push((source.port.name(), *outcome, count.load(Ordering::Relaxed)));
            }
        }
        out
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use std::sync::Mutex;

    use async_trait::async_trait;

    use super::*;
    use crate::ports::BreachSourceError;

    /// Holds hashes; or fails; records what it was asked.
    #[derive(Debug, Default)]
    struct Corpus {
        hashes: Vec<[u8; 20]>,
        fails: bool,
        asked: Mutex<Vec<[u8; 20]>>,
    }

    #[async_trait]
    impl BreachedPasswords for Corpus {
        fn name(&self) -> &'static str {
            if self.fails { "range_api" } else { "file" }
        }

        async fn contains(&self, sha1: &[u8; 20]) -> Result<bool, BreachSourceError> {
            self.asked.lock().unwrap().push(*sha1);
            if self.fails {
                return Err(BreachSourceError("timed out".into()));
            }
            Ok(self.hashes.contains(sha1))
        }
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02X}")).collect()
    }

    #[test]
    fn the_key_is_the_sha1_have_i_been_pwned_uses() {
        // The SHA-1 of "password" as Have I Been Pwned lists it.
        let sha1: [u8; 20] = Sha1::digest(b"password").into();
        assert_eq!(hex(&sha1), "5BAA61E4C9B93F3F0682250B6CF8331B7EE68FD8");
    }

    #[tokio::test]
    async fn found_in_any_source_and_failures_fail_open() {
        let breached: [u8; 20] = Sha1::digest("hunter2 hunter2 hunter2".as_bytes()).into();
        let failing = Arc::new(Corpus { fails: true, ..Corpus::default() });
        let file = Arc::new(Corpus { hashes: vec![breached], ..Corpus::default() });
        let check = BreachCheck::new(vec![file.clone(), failing.clone()]);
        assert!(check.is_breached("hunter2 hunter2 hunter2").await);
        assert!(failing.asked.lock().unwrap().is_empty(), "the first source that finds it decides");
        assert!(!check.is_breached("a password in no corpus").await, "a failing source fails open");
        assert_eq!(failing.asked.lock().unwrap().len(), 1);
        let counts = check.counts();
        assert!(counts.contains(&("file", "breached", 1)) && counts.contains(&("file", "clean", 1)), "{counts:?}");
        assert!(counts.contains(&("range_api", "failed", 1)), "{counts:?}");
        assert!(!BreachCheck::default().is_breached("hunter2 hunter2 hunter2").await);
        assert!(!BreachCheck::default().is_enabled());
    }
}
