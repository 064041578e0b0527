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
    /// The same spread over the addresses of one IPv4 /24 (each address staying below
    /// credential stuffing's threshold): the /24 is blocked. (An IPv6 client is counted by its
    /// /64 already.)
    NetworkStuffing,
    /// The same from one device (the shop's id of it, `client.device`), whatever addresses it
    /// comes from: an attacker rotating through proxies on one machine. The device is blocked.
    DeviceStuffing,
    /// Sign-ins for many different email addresses that belong to no account, from one client
    /// (IPv6: its /64): someone working through a list of addresses, slower than credential
    /// stuffing's window, or finding out which addresses are customers.
    UnknownAccounts,
    /// Wrong one-time or recovery codes for one account: someone who has its password guesses
    /// the second factor.
    CodeGuessing,
    /// Payments the fraud checks refused as card testing (many distinct cards from one client).
    CardTesting,
    /// Most of one client's payments declined by the gateway within an hour, over a minimum
    /// number of them: someone trying cards to find the ones that work.
    DeclineRatio,
    /// Many distinct cards paying small amounts from one client (IPv6: its /64), among the
    /// payments the fraud checks let through.
    SmallAmountCards,
    /// Many distinct cards sharing their first six digits (one issuer's range) from one client,
    /// among the payments the fraud checks let through: numbers generated in a range.
    IinCluster,
    /// Many distinct cards paying one identical amount (amount and currency) from one client,
    /// among the payments the fraud checks let through: a tester's script, which sends the
    /// same amount with every card it tries.
    IdenticalAmounts,
    /// Requests of one API key for many distinct objects that do not exist or are not its
    /// merchant's (404), or that its scopes do not allow (403).
    Enumeration,
    /// Lookups of many distinct tokens that do not exist by one API key.
    TokenGuessing,
    /// Many distinct API keys that do not exist (or are not even shaped like one) presented by
    /// one client: someone trying keys. The shop's server retrying its one wrong key counts once.
    ApiKeyProbing,
    /// Distinct session cookies from one client that are not even shaped like a session token
    /// (forged or edited; one browser resending one bad cookie counts once).
    TamperedCredential,
    /// A single-use token presented again after it was used (an e-mail verification,
    /// password-reset or staff invitation link, a step-up proof), from one client: a stolen or
    /// replayed token.
    ReplayedToken,
    /// A sign-in for a decoy account (`[detection] decoy_accounts`): an address no customer has,
    /// planted where only a thief of the shop's data would find it.
    DecoyAccount,
    /// A request presenting a decoy API key (`strongroom apikey decoy`): a key planted where only
    /// a thief would find it.
    DecoyApiKey,
    /// A request for a decoy route no client of strongroom's ever calls (`/admin`, `/.env`).
    DecoyRoute,
    /// Requests with a method no client of strongroom's sends (`TRACE`, `CONNECT`, WebDAV's
    /// `PROPFIND`…) or a body type no route takes (XML, serialised Java objects): a scanner's
    /// probes, without a valid API key: counted per client, which is blocked everywhere.
    UnusualRequest,
    /// The same with a valid API key: counted per key, an alert and an incident only (the shop's
    /// server, which relays its customers, is never blocked for everyone).
    UnusualRequestWithKey,
    /// A canary token was read or revealed.
    CanaryToken,
    /// More reveals of card data or personal data in an hour than one API key or staff member
    /// needs.
    InsiderReveals,
    /// Reveals of card data or personal data by a staff member or an API key outside the shop's
    /// usual hours (`[detection] usual_hours`): an alert, one per caller and day.
    OffHoursReveals,
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
    pub const ALL: [Point; 26] = [
        Point::CredentialStuffing,
        Point::NetworkStuffing,
        Point::DeviceStuffing,
        Point::UnknownAccounts,
        Point::CodeGuessing,
        Point::CardTesting,
        Point::DeclineRatio,
        Point::SmallAmountCards,
        Point::IinCluster,
        Point::IdenticalAmounts,
        Point::Enumeration,
        Point::TokenGuessing,
        Point::ApiKeyProbing,
        Point::TamperedCredential,
        Point::ReplayedToken,
        Point::DecoyAccount,
        Point::DecoyApiKey,
        Point::DecoyRoute,
        Point::UnusualRequest,
        Point::UnusualRequestWithKey,
        Point::CanaryToken,
        Point::InsiderReveals,
        Point::OffHoursReveals,
        Point::PasswordGuessing,
        Point::FailureRatio,
        Point::ImpossibleTravel,
    ];

    /// The id in audit entries, decisions (`reason`) and metrics.
    pub fn id(self) -> &'static str {
        match self {
            Point::CredentialStuffing => "credential_stuffing",
            Point::NetworkStuffing => "credential_stuffing_network",
            Point::DeviceStuffing => "credential_stuffing_device",
            Point::UnknownAccounts => "unknown_accounts",
            Point::CodeGuessing => "code_guessing",
            Point::CardTesting => "card_testing",
            Point::DeclineRatio => "decline_ratio",
            Point::SmallAmountCards => "small_amount_cards",
            Point::IinCluster => "iin_cluster",
            Point::IdenticalAmounts => "identical_amount_cards",
            Point::Enumeration => "enumeration",
            Point::TokenGuessing => "token_guessing",
            Point::ApiKeyProbing => "api_key_probing",
            Point::TamperedCredential => "tampered_credential",
            Point::ReplayedToken => "replayed_token",
            Point::DecoyAccount => "decoy_account",
            Point::DecoyApiKey => "decoy_api_key",
            Point::DecoyRoute => "decoy_route",
            Point::UnusualRequest => "unusual_request",
            Point::UnusualRequestWithKey => "unusual_request_with_key",
            Point::CanaryToken => "canary_token",
            Point::InsiderReveals => "insider_reveals",
            Point::OffHoursReveals => "off_hours_reveals",
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
            Point::CredentialStuffing
            | Point::NetworkStuffing
            | Point::DeviceStuffing
            | Point::UnknownAccounts
            | Point::SmallAmountCards
            | Point::IinCluster
            | Point::IdenticalAmounts
            | Point::Enumeration
            | Point::TokenGuessing
            | Point::ApiKeyProbing
            | Point::TamperedCredential => Counting::Distinct,
            Point::CodeGuessing
            | Point::CardTesting
            | Point::DeclineRatio
            | Point::ReplayedToken
            | Point::DecoyAccount
            | Point::DecoyApiKey
            | Point::DecoyRoute
            | Point::UnusualRequest
            | Point::UnusualRequestWithKey
            | Point::CanaryToken
            | Point::InsiderReveals
            | Point::OffHoursReveals
            | Point::PasswordGuessing
            | Point::FailureRatio
            | Point::ImpossibleTravel => Counting::Hits,
        }
    }

    /// How severe a detection is.
    pub fn severity(self) -> Severity {
        match self {
            Point::DecoyRoute | Point::UnusualRequest => Severity::Low,
            Point::TamperedCredential
            | Point::CodeGuessing
            | Point::UnknownAccounts
            | Point::ReplayedToken
            | Point::UnusualRequestWithKey
            | Point::OffHoursReveals
            | Point::PasswordGuessing => Severity::Medium,
            Point::CredentialStuffing
            | Point::NetworkStuffing
            | Point::DeviceStuffing
            | Point::CardTesting
            | Point::DeclineRatio
            | Point::SmallAmountCards
            | Point::IinCluster
            | Point::IdenticalAmounts
            | Point::DecoyAccount
            | Point::Enumeration
            | Point::TokenGuessing
            | Point::ApiKeyProbing
            | Point::InsiderReveals
            | Point::FailureRatio
            | Point::ImpossibleTravel => Severity::High,
            Point::CanaryToken | Point::DecoyApiKey => Severity::Critical,
        }
    }
}

/// The hours in which a shop's staff and systems usually reveal data, in UTC: `07:00-20:00`
/// (start included, end excluded); a start after the end spans midnight (`22:00-06:00`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UsualHours {
    /// Minutes after midnight UTC.
    pub start: u32,
    /// Minutes after midnight UTC (1440: midnight at the end of the day).
    pub end: u32,
}

impl UsualHours {
    /// Parses `HH:MM-HH:MM` (00:00 to 24:00; start and end differ).
    pub fn parse(text: &str) -> Option<Self> {
        let minutes = |part: &str| -> Option<u32> {
            let (h, m) = part.trim().split_once(':')?;
            let (h, m) = (h.parse::<u32>().ok()?, m.parse::<u32>().ok()?);
            let total = h.checked_mul(60)?.checked_add(m)?;
            (h <= 24 && m < 60 && total <= 1440 && part.trim().len() == 5).then_some(total)
        };
        let (start, end) = text.split_once('-')?;
        let (start, end) = (minutes(start)?, minutes(end)?);
        (start != end && start < 1440).then_some(Self { start, end })
    }

    /// Whether the minute of the day (UTC) `minute` is within the hours.
    pub fn contains(self, minute: u32) -> bool {
        if self.start < self.end {
            (self.start..self.end).contains(&minute)
        } else {
            minute >= self.start || minute < self.end
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
            Point::NetworkStuffing => (self.stuffing_network_accounts, minutes(15), self.stuffing_block),
            Point::DeviceStuffing => (self.stuffing_device_accounts, minutes(15), self.stuffing_block),
            Point::UnknownAccounts => (self.unknown_accounts, minutes(60), self.unknown_accounts_block),
            Point::CodeGuessing => (self.code_guesses, minutes(15), self.code_guessing_block),
            // The fraud checks counted the cards: their first refusal is the detection.
            Point::CardTesting => (1, minutes(60), self.card_testing_block),
            // The payments decide from the attempts and declines they count: the first sighting
            // in a window is the detection.
            Point::DeclineRatio => (
                u32::from(self.decline_ratio_percent > 0 && self.decline_ratio_attempts > 0),
                minutes(60),
                self.card_testing_block,
            ),
            Point::SmallAmountCards => (self.small_amount_cards, minutes(60), self.card_testing_block),
            Point::IinCluster => (self.iin_cluster_cards, minutes(60), self.card_testing_block),
            Point::IdenticalAmounts => (self.identical_amount_cards, minutes(60), self.card_testing_block),
            Point::Enumeration => (self.enumeration_ids, minutes(10), self.enumeration_suspension),
            Point::TokenGuessing => (self.token_guesses, minutes(10), self.guessing_suspension),
            Point::ApiKeyProbing => (self.api_key_probes, minutes(10), self.api_key_probing_block),
            Point::TamperedCredential => (self.tampered_credentials, minutes(10), self.tampering_block),
            Point::ReplayedToken => (self.replayed_tokens, minutes(60), self.replay_block),
            Point::DecoyAccount => (u32::from(!self.decoy_accounts.is_empty()), minutes(60), self.decoy_block),
            Point::DecoyApiKey => (1, minutes(60), self.decoy_block),
            Point::DecoyRoute => (u32::from(!self.decoy_paths.is_empty()), minutes(60), self.decoy_block),
            Point::UnusualRequest | Point::UnusualRequestWithKey => {
                (self.unusual_requests, minutes(60), self.unusual_request_block)
            }
            Point::CanaryToken => (1, minutes(60), super::MAX_BLOCK),
            Point::InsiderReveals => (self.reveals_per_hour, minutes(60), self.insider_suspension),
            // The first reveal outside the usual hours in a day is the detection (an alert: no
            // decision is made, so its length is never used).
            Point::OffHoursReveals => (u32::from(self.usual_hours.is_some()), minutes(24 * 60), minutes(60)),
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
    /// What was seen, for people, when the count alone does not say it (a ratio).
    pub note: Option<String>,
    /// The decision holds for the whole deployment, though the count and the incident are the
    /// merchant's (a decoy key of the shop's presented by a client acting on its own).
    pub everywhere: bool,
}

impl<'a> Sighting<'a> {
    /// A sighting of `point` by `actor` with nothing decided yet.
    pub fn new(point: Point, merchant: Option<&'a MerchantId>, actor: impl Into<String>) -> Self {
        Self {
            point,
            merchant,
            actor: actor.into(),
            item: None,
            respond: None,
            ip: None,
            subjects: Vec::new(),
            note: None,
            everywhere: false,
        }
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

    /// The decision blocks the client for the whole deployment.
    pub fn everywhere(mut self) -> Self {
        self.everywhere = true;
        self
    }

    /// Says what was seen (the decision's detail).
    pub fn noting(mut self, note: impl Into<String>) -> Self {
        self.note = Some(note.into());
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

/// The counted name of a device (never mistaken for an address's).
pub fn device_group(device: &str) -> String {
    format!("device:{device}")
}

/// What the shop names a customer's device by (`client.device`: the id its device-fingerprinting
/// or app-instance code gives): 1 to 128 printable characters, never holding a card number.
/// `pointer` names the field in the error.
pub fn device_id(pointer: &str, text: &str) -> Result<String, crate::error::DomainError> {
    if text.is_empty() || text.chars().count() > 128 || text.chars().any(char::is_control) {
        return Err(crate::error::DomainError::invalid(pointer, "must be 1 to 128 printable characters"));
    }
    crate::free_text::check(pointer, text)?;
    Ok(text.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_point_has_a_rule_and_an_index() {
        // Decoy accounts, usual hours and a GeoIP database are the shop's to name: off until named.
        let defaults = DetectionSettings::default();
        assert_eq!(defaults.rule(Point::DecoyAccount).threshold, 0);
        assert_eq!(defaults.rule(Point::OffHoursReveals).threshold, 0);
        assert_eq!(defaults.rule(Point::ImpossibleTravel).threshold, 0);
        let settings = DetectionSettings {
            decoy_accounts: vec!["ceo-backup@shop.example".to_owned()],
            usual_hours: UsualHours::parse("07:00-20:00"),
            impossible_travel: true,
            ..defaults
        };
        for (i, point) in Point::ALL.into_iter().enumerate() {
            assert_eq!(point.index(), i);
            let rule = settings.rule(point);
            assert!(rule.threshold > 0, "{} is on", point.id());
            assert!(!rule.window.is_zero() && !rule.base.is_zero());
        }
        let v6: IpAddr = "2001:db8:1:2:3:4:5:6".parse().unwrap_or(IpAddr::from([0u16; 8]));
        assert_eq!(client_group(v6), "2001:db8:1:2::/64");
    }

    #[test]
    fn usual_hours_parse_and_span_midnight() {
        let day = UsualHours::parse("07:00-20:00");
        assert_eq!(day, Some(UsualHours { start: 420, end: 1200 }));
        let day = day.unwrap_or(UsualHours { start: 0, end: 1 });
        assert!(day.contains(420) && day.contains(1199) && !day.contains(1200) && !day.contains(419));
        let night = UsualHours::parse("22:00-06:00").unwrap_or(UsualHours { start: 0, end: 1 });
        assert!(night.contains(1380) && night.contains(0) && night.contains(359) && !night.contains(360));
        assert_eq!(UsualHours::parse("00:00-24:00"), Some(UsualHours { start: 0, end: 1440 }));
        for bad in ["7:00-20:00", "07:00-07:00", "25:00-01:00", "07:60-08:00", "07:00", "24:00-01:00", "a-b"] {
            assert_eq!(UsualHours::parse(bad), None, "{bad}");
        }
    }
}
