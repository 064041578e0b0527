//! Sign-in throttling.
//!
//! Per subject (a keyed hash of the email tried, whether or not an account has it): the first
//! [`FREE_FAILURES`] failures cost nothing, then each further attempt waits twice as long as the
//! one before (1 s, 2 s, 4 s … up to 15 minutes), and after [`HARD_STOP`] consecutive failures
//! password sign-in stops until the password is reset. Customers are never locked out by a
//! fixed lock an attacker could trigger at will; the delays bound an online attack to about 100
//! guesses a day.
//! Per merchant and client address (IPv6: its /64), shared by every node (a rate limit in the
//! shared store, [`crate::detection::DecisionService::limited`]): [`CLIENT_FAILURE_LIMIT`] failures
//! within [`CLIENT_WINDOW`], refilled evenly, then the address waits for the next to come free. (Credential
//! stuffing, many accounts from one client, is intrusion detection's, counted on every node:
//! [`crate::detection::Point::CredentialStuffing`].)
//! Must never: treat a known and an unknown email differently, or grow without bound.

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use strongroom_types::Timestamp;

use crate::ports::LoginFailures;

/// Failures without a delay.
pub const FREE_FAILURES: u32 = 5;

/// Consecutive failures after which password sign-in stops (NIST: at most 100).
pub const HARD_STOP: u32 = 100;

/// Consecutive failures after which a right password must be followed by an emailed code (for
/// accounts without TOTP, which ask for TOTP anyway).
pub const EMAIL_CODE_AFTER: u32 = 10;

/// Longest delay between attempts.
pub const MAX_DELAY: Duration = Duration::from_secs(15 * 60);

/// Length of a client address's window.
pub const CLIENT_WINDOW: Duration = Duration::from_secs(15 * 60);

/// Failures per address and window before the address is blocked for the rest of it.
pub const CLIENT_FAILURE_LIMIT: u32 = 100;

/// How long a subject with `failures` consecutive failures must wait after the last one.
pub fn delay_after(failures: u32) -> Duration {
    if failures < FREE_FAILURES {
        return Duration::ZERO;
    }
    let exponent = (failures - FREE_FAILURES).min(20);
    Duration::from_secs(1u64 << exponent).min(MAX_DELAY)
}

/// What the subject's state allows now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubjectGate {
    /// Try.
    Open,
    /// Wait this many seconds.
    Wait(u32),
    /// Password sign-in has stopped (reset the password).
    Stopped,
}

impl SubjectGate {
    /// The error a closed gate answers (429 `login_throttled` with the wait, or `login_stopped`).
    pub fn check(self) -> Result<(), crate::DomainError> {
        match self {
            SubjectGate::Open => Ok(()),
            SubjectGate::Wait(seconds) => {
                Err(crate::DomainError::Throttled { code: "login_throttled", retry_after: Some(seconds) })
            }
            SubjectGate::Stopped => Err(crate::DomainError::Throttled { code: "login_stopped", retry_after: None }),
        }
    }
}

/// Whether a subject may try now.
pub fn subject_gate(failures: LoginFailures, now: Timestamp) -> SubjectGate {
    if failures.count >= HARD_STOP {
        return SubjectGate::Stopped;
    }
    let Some(last) = failures.last_at else { return SubjectGate::Open };
    let delay = i64::try_from(delay_after(failures.count).as_millis()).unwrap_or(i64::MAX);
    let waited = now.millis_since(last);
    if waited >= delay {
        SubjectGate::Open
    } else {
        let seconds = (delay - waited + 999) / 1000;
        SubjectGate::Wait(u32::try_from(seconds).unwrap_or(u32::MAX).max(1))
    }
}

/// The unit an address is counted in: itself for IPv4, its /64 for IPv6 (one host usually holds
/// a whole /64).
fn group(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => {
            let mut octets = v6.octets();
            octets[8..].fill(0);
            IpAddr::V6(std::net::Ipv6Addr::from(octets))
        }
    }
}

/// The shared limit failed sign-ins from one address are counted against.
const CLIENT_LIMIT: &str = "sign_in_failures";

/// Seconds `ip` must wait before signing in to `scope` (a merchant id, or `staff`), if it has
/// failed [`CLIENT_FAILURE_LIMIT`] times within [`CLIENT_WINDOW`] (refilled evenly: one failure
/// more every window / limit), counted on every node.
pub(crate) async fn client_wait(
    decisions: Option<&crate::detection::DecisionService>,
    scope: &str,
    ip: Option<IpAddr>,
) -> Option<u32> {
    let (decisions, ip) = (decisions?, ip?);
    decisions.limited(CLIENT_LIMIT, scope, &group(ip).to_string(), client_allowance(), false).await
}

/// Counts a failed sign-in from `ip` against its allowance.
pub(crate) async fn client_failed(
    decisions: Option<&crate::detection::DecisionService>,
    scope: &str,
    ip: Option<IpAddr>,
) {
    if let (Some(decisions), Some(ip)) = (decisions, ip) {
        let _ = decisions.limited(CLIENT_LIMIT, scope, &group(ip).to_string(), client_allowance(), true).await;
    }
}

fn client_allowance() -> Option<crate::ports::detection::Allowance> {
    crate::ports::detection::Allowance::new(CLIENT_FAILURE_LIMIT, CLIENT_WINDOW)
}

/// One verification at a time per subject on this node: a burst of parallel guesses cannot all
/// pass one open gate before any of them is counted.
#[derive(Debug, Default)]
pub struct InFlight {
    subjects: std::sync::Arc<Mutex<HashSet<Vec<u8>>>>,
}

/// Holds a subject's slot until dropped.
#[derive(Debug)]
pub struct InFlightGuard {
    subjects: std::sync::Arc<Mutex<HashSet<Vec<u8>>>>,
    subject: Vec<u8>,
}

impl InFlight {
    /// The subject's slot, or `None` while another verification of it runs.
    pub fn enter(&self, subject: &[u8]) -> Option<InFlightGuard> {
        let mut subjects = self.subjects.lock().ok()?;
        subjects
            .insert(subject.to_vec())
            .then(|| InFlightGuard { subjects: self.subjects.clone(), subject: subject.to_vec() })
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        if let Ok(mut subjects) = self.subjects.lock() {
            subjects.remove(&self.subject);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    #[test]
    fn one_verification_per_subject_at_a_time() {
        let in_flight = InFlight::default();
        let first = in_flight.enter(b"a").unwrap();
        assert!(in_flight.enter(b"a").is_none());
        assert!(in_flight.enter(b"b").is_some());
        drop(first);
        assert!(in_flight.enter(b"a").is_some());
    }

    use super::*;

    #[test]
    fn delays_grow_and_stop() {
        assert_eq!(delay_after(0), Duration::ZERO);
        assert_eq!(delay_after(4), Duration::ZERO);
        assert_eq!(delay_after(5), Duration::from_secs(1));
        assert_eq!(delay_after(8), Duration::from_secs(8));
        assert_eq!(delay_after(40), MAX_DELAY);
        let now = Timestamp::from_unix_millis(1_000_000);
        let f = |count, ago_ms: i64| LoginFailures {
            count,
            last_at: Some(Timestamp::from_unix_millis(1_000_000 - ago_ms)),
        };
        assert_eq!(subject_gate(f(4, 0), now), SubjectGate::Open);
        assert_eq!(subject_gate(f(7, 1_000), now), SubjectGate::Wait(3));
        assert_eq!(subject_gate(f(7, 4_000), now), SubjectGate::Open);
        assert_eq!(subject_gate(f(HARD_STOP, 10_000_000), now), SubjectGate::Stopped);
    }

    #[test]
    fn at_most_one_hundred_guesses_without_a_stop() {
        // Whatever the pacing, the 101st consecutive failure cannot be tried.
        let mut count = 0;
        let mut now = 0i64;
        while subject_gate(
            LoginFailures { count, last_at: Some(Timestamp::from_unix_millis(now)) },
            Timestamp::from_unix_millis(now + 1_000_000_000),
        ) != SubjectGate::Stopped
        {
            count += 1;
            now += 1;
        }
        assert_eq!(count, HARD_STOP);
    }
}
