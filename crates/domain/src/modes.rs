//! Live and test: the two data spaces of every merchant.
//!
//! A key is `sr_live_…` or `sr_test_…`, and it sees only the objects of its own mode: tokens and
//! their data keys, customers with their sessions and challenges, webhook endpoints and the events
//! they receive. A live object is never read, listed, changed or erased with a test key, nor a
//! test object with a live one; a foreign-mode id answers exactly as a missing one does. Staff
//! act live. Deployment-wide powers (the vault's keys, staff and roles, metrics, the audit log)
//! belong to live keys only: a test key is what a shop hands to its CI and its developers.
//!
//! Must never: let a mode be inferred from anything a client sends other than the key it
//! presents, or default a stored object to test.

use crate::api_keys::Scope;
use crate::merchants::MerchantId;

/// The data space a caller acts in and an object belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Mode {
    /// Real customers and real money (`sr_live_…`, staff).
    Live,
    /// The shop's tests and development (`sr_test_…`).
    Test,
}

impl Mode {
    /// The stable name stored and shown: `live` or `test`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Mode::Live => "live",
            Mode::Test => "test",
        }
    }

    /// Parses a stable name.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "live" => Some(Mode::Live),
            "test" => Some(Mode::Test),
            _ => None,
        }
    }

    /// Stripe's `livemode` flag, which the JSON bodies carry.
    pub const fn is_live(self) -> bool {
        matches!(self, Mode::Live)
    }

    /// Whether a caller of this mode may use `scope` at all: test keys hold only the scopes that
    /// act inside a data space.
    pub const fn allows(self, scope: Scope) -> bool {
        match self {
            Mode::Live => true,
            Mode::Test => !scope.is_deployment_wide(),
        }
    }
}

/// One merchant's data space: what a caller acts in, and what an object must belong to for the
/// caller to see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Space<'a> {
    /// The merchant.
    pub merchant: &'a MerchantId,
    /// Live or test.
    pub mode: Mode,
}

impl Space<'_> {
    /// Whether an object of `merchant` and `mode` belongs to this space.
    pub fn holds(&self, merchant: &MerchantId, mode: Mode) -> bool {
        self.merchant == merchant && self.mode == mode
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for mode in [Mode::Live, Mode::Test] {
            assert_eq!(Mode::parse(mode.as_str()), Some(mode));
        }
        assert_eq!(Mode::parse("Live"), None);
    }

    #[test]
    fn test_keys_hold_only_data_space_scopes() {
        let test_only: Vec<_> = Scope::ALL.iter().copied().filter(|s| Mode::Test.allows(*s)).collect();
        assert!(test_only.contains(&Scope::VaultWrite));
        assert!(test_only.contains(&Scope::IdentityCustomers));
        assert!(test_only.contains(&Scope::AdminWebhooks));
        assert!(test_only.contains(&Scope::VaultForward));
        for scope in [Scope::AdminKeys, Scope::AdminStaff, Scope::AdminMetrics, Scope::AuditRead] {
            assert!(!Mode::Test.allows(scope), "{scope}");
            assert!(Mode::Live.allows(scope), "{scope}");
        }
    }
}
