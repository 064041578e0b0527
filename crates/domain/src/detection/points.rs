//! Detection points, in the sense of OWASP AppSensor: places inside strongroom where a normal
//! client cannot end up, each counted per actor (a client address or network, an API key, an
//! account) over a window in the shared store, each with the response a detection decides.
//!
//! A point is one row of [`Point`]: its id (the audit event's and the metric's label), how it
//! counts ([`Counting`]), its threshold and window ([`DetectionSettings::rule`]) and how severe a
//! detection is. The places that see something call [`crate::detection::DecisionService::sighted`]
//! with a [`Sighting`]; what is decided is decided there, in one place.
//!
//! Must never: count an email or a card number in the clear (callers pass keyed hashes or ids),
//! detect twice in one window for one actor (the store's returned tally decides which one
//! observation crossed the threshold), or let a failure to count change the answer the client
//! gets.

use std::net::IpAddr;
use std::time::Duration;

use super::{DecisionScope, DetectionSettings};
use crate::merchants::MerchantId;

pub use super::incidents::Severity;

/// What a point counts in its window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counting {
    /// Distinct items (accounts tried, ids asked for): repeats of one item count once.
    Distinct,
    /// Every observation.
    Hits,
}

/// A detection point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Point {
    /// Failed sign-ins for many different accounts (existing or not: the two are never told
    /// apart) from one client address (IPv6: its /64).
    CredentialStuffing,
    /// Wrong one-time or recovery codes for one account: someone who has its password guesses
    /// the second factor.
    CodeGuessing,
    /// Payments the fraud checks refused as card testing (many distinct cards from one client).
    CardTesting,
    /// Requests of one API key for many distinct objects that do not exist or are not its
    /// merchant's (404), or that its scopes do not allow (403).
    Enumeration,
    /// Lookups of many distinct tokens that do not exist by one API key.
    TokenGuessing,
    /// Distinct session cookies from one client that are not even shaped like a session token
    /// (forged or edited; one browser resending one bad cookie counts once).
    TamperedCredential,
    /// A request for a decoy route no client of strongroom's ever calls (`/admin`, `/.env`).
    DecoyRoute,
    /// A canary token was read or revealed.
    CanaryToken,
    /// More reveals of card data or personal data in an hour than one API key or staff member
    /// needs.
    InsiderReveals,
    /// Wrong passwords for one customer account, from any clients: someone guesses its
    /// password (the per-account delays slow them; this makes the password alone not enough).
    PasswordGuessing,
    /// A shop's sign-ins fail far more often than they succeed (failures per attempts over a
    /// window, from a minimum of attempts): an attack spread over many clients. An alert and an
    /// incident only: there is no one client to block.
    FailureRatio,
    /// Two successful sign-ins of one account from places no traveller could cover in the time
    /// between (`detection.geoip_database`; off without it).
    ImpossibleTravel,
}

impl Point {
    /// Every point, in the order of the metrics.
    pub const ALL: [Point; 12] = [
        Point::CredentialStuffing,
        Point::CodeGuessing,
        Point::CardTesting,
        Point::Enumeration,
        Point::TokenGuessing,
        Point::TamperedCredential,
        Point::DecoyRoute,
        Point::CanaryToken,
        Point::InsiderReveals,
        Point::PasswordGuessing,
        Point::FailureRatio,
        Point::ImpossibleTravel,
    ];

    /// The id in audit entries, decisions (`reason`) and metrics.
    pub fn id(self) -> &'static str {
        match self {
            Point::CredentialStuffing => "credential_stuffing",
            Point::CodeGuessing => "code_guessing",
            Point::CardTesting => "card_testing",
            Point::Enumeration => "enumeration",
            Point::TokenGuessing => "token_guessing",
            Point::TamperedCredential => "tampered_credential",
            Point::DecoyRoute => "decoy_route",
            Point::CanaryToken => "canary_token",
            Point::InsiderReveals => "insider_reveals",
            Point::PasswordGuessing => "password_guessing",
            Point::FailureRatio => "failure_ratio",
            Point::ImpossibleTravel => "impossible_travel",
        }
    }

    /// The point's position in [`Point::ALL`].
    pub fn index(self) -> usize {
        Point::ALL.iter().position(|p| *p == self).unwrap_or(0)
    }

    /// How it counts.
    pub fn counting(self) -> Counting {
        match self {
            Point::CredentialStuffing | Point::Enumeration | Point::TokenGuessing | Point::TamperedCredential => {
                Counting::Distinct
            }
            Point::CodeGuessing
            | Point::CardTesting
            | Point::DecoyRoute
            | Point::CanaryToken
            | Point::InsiderReveals
            | Point::PasswordGuessing
            | Point::FailureRatio
            | Point::ImpossibleTravel => Counting::Hits,
        }
    }

    /// How severe a detection is.
    pub fn severity(self) -> Severity {
        match self {
            Point::DecoyRoute => Severity::Low,
            Point::TamperedCredential | Point::CodeGuessing | Point::PasswordGuessing => Severity::Medium,
            Point::CredentialStuffing
            | Point::CardTesting
            | Point::Enumeration
            | Point::TokenGuessing
            | Point::InsiderReveals
            | Point::FailureRatio
            | Point::ImpossibleTravel => Severity::High,
            Point::CanaryToken => Severity::Critical,
        }
    }
}

/// A point's threshold, window and first response length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    /// Observations (or distinct items) in one window that make a detection; 0: the point is off.
    pub threshold: u32,
    /// The window.
    pub window: Duration,
    /// How long the first decision lasts (doubled per strike within a day).
    pub base: Duration,
}

impl DetectionSettings {
    /// The rule of a point.
    pub fn rule(&self, point: Point) -> Rule {
        let minutes = |m: u64| Duration::from_secs(m * 60);
        let (threshold, window, base) = match point {
            Point::CredentialStuffing => (self.stuffing_accounts, minutes(15), self.stuffing_block),
            Point::CodeGuessing => (self.code_guesses, minutes(15), self.code_guessing_block),
            // The fraud checks counted the cards: their first refusal is the detection.
            Point::CardTesting => (1, minutes(60), self.card_testing_block),
            Point::Enumeration => (self.enumeration_ids, minutes(10), self.enumeration_suspension),
            Point::TokenGuessing => (self.token_guesses, minutes(10), self.guessing_suspension),
            Point::TamperedCredential => (self.tampered_credentials, minutes(10), self.tampering_block),
            Point::DecoyRoute => (u32::from(!self.decoy_paths.is_empty()), minutes(60), self.decoy_block),
            Point::CanaryToken => (1, minutes(60), super::MAX_BLOCK),
            Point::InsiderReveals => (self.reveals_per_hour, minutes(60), self.insider_suspension),
            Point::PasswordGuessing => (self.password_guesses, minutes(60), self.password_guessing_step_up),
            // The threshold is a percentage of the window's attempts; nothing is decided.
            Point::FailureRatio => (self.failure_ratio_percent, minutes(15), minutes(15)),
            // Each impossible pair is a detection (one an hour per account).
            Point::ImpossibleTravel => (u32::from(self.impossible_travel), minutes(60), self.travel_step_up),
        };
        Rule { threshold, window, base }
    }
}

/// What a detection point saw once.
#[derive(Debug, Clone)]
pub struct Sighting<'a> {
    /// The point.
    pub point: Point,
    /// The merchant whose API or customers it concerns (`None`: the deployment's, e.g. a decoy
    /// route, which has no merchant).
    pub merchant: Option<&'a MerchantId>,
    /// Who is counted: a client's address group ([`client_group`]), an API key id, an account id.
    pub actor: String,
    /// The item counted distinctly (a keyed hash of the email tried, the id asked for).
    pub item: Option<Vec<u8>>,
    /// What a detection decides about (a client to block, a key to suspend); `None`: it alerts
    /// (and opens an incident) only.
    pub respond: Option<DecisionScope>,
    /// The client address the sighting came from (for the audit entry).
    pub ip: Option<IpAddr>,
    /// Affected records (accounts, tokens, keys), for the incident.
    pub subjects: Vec<String>,
}

impl<'a> Sighting<'a> {
    /// A sighting of `point` by `actor` with nothing decided yet.
    pub fn new(point: Point, merchant: Option<&'a MerchantId>, actor: impl Into<String>) -> Self {
        Self { point, merchant, actor: actor.into(), item: None, respond: None, ip: None, subjects: Vec::new() }
    }

    /// Counts `item` distinctly.
    pub fn item(mut self, item: impl AsRef<[u8]>) -> Self {
        self.item = Some(item.as_ref().to_vec());
        self
    }

    /// A detection decides about `scope`.
    pub fn respond(mut self, scope: DecisionScope) -> Self {
        self.respond = Some(scope);
        self
    }

    /// From `ip`.
    pub fn from_ip(mut self, ip: Option<IpAddr>) -> Self {
        self.ip = ip;
        self
    }

    /// Names an affected record.
    pub fn subject(mut self, subject: impl Into<String>) -> Self {
        self.subjects.push(subject.into());
        self
    }
}

/// The unit a client address is counted and blocked as: itself (IPv4) or its /64 (IPv6, where
/// one host usually holds a whole /64).
pub fn client_scope(ip: IpAddr) -> DecisionScope {
    match ip {
        IpAddr::V4(_) => DecisionScope::Ip(ip),
        IpAddr::V6(_) => DecisionScope::Prefix(ip),
    }
}

/// The counted name of a client: its address, or its /64.
pub fn client_group(ip: IpAddr) -> String {
    client_scope(ip).value()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_point_has_a_rule_and_an_index() {
        let settings = DetectionSettings::default();
        for (i, point) in Point::ALL.into_iter().enumerate() {
            assert_eq!(point.index(), i);
            let rule = settings.rule(point);
            // Impossible travel needs a GeoIP database, which no default has.
            if point != Point::ImpossibleTravel {
                assert!(rule.threshold > 0, "{} is on by default", point.id());
            }
            assert!(!rule.window.is_zero() && !rule.base.is_zero());
        }
        let v6: IpAddr = "2001:db8:1:2:3:4:5:6".parse().unwrap_or(IpAddr::from([0u16; 8]));
        assert_eq!(client_group(v6), "2001:db8:1:2::/64");
    }
}
