//! Fraud and card-testing checks before an authorisation: one function per rule over what the
//! database counted for this attempt's customer, card, client address and device in the window
//! ([`Observation`]), and one place that combines them ([`decide`]) into `allow`,
//! `require_step_up` or `block` with the reason code of every rule that fired.
//!
//! The rules are pure; the counting is the store's (`ports::checkout`), which records the attempt
//! before it counts, so the limits hold across nodes and under concurrency.
//! Must never: count from an in-process map, call the gateway for a blocked attempt, let a
//! lower outcome hide a higher one (the combination is the maximum), or put a card number, an
//! address or a device id into a reason (reasons are fixed codes).

use std::collections::BTreeMap;
use std::time::Duration;

use strongroom_types::Money;

use crate::error::DomainError;
use crate::ports::checkout::{SignalKind, WindowCounts};

/// What the checks decided, from least to most severe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Outcome {
    /// Go on to the gateway.
    Allow,
    /// Go on only with the customer's step-up proof for this payment.
    RequireStepUp,
    /// Do not ask the gateway: the intent goes back to `requires_payment_method`.
    Block,
}

impl Outcome {
    /// The stable name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Outcome::Allow => "allow",
            Outcome::RequireStepUp => "require_step_up",
            Outcome::Block => "block",
        }
    }

    /// Parses a stable name.
    pub fn parse(text: &str) -> Option<Self> {
        [Outcome::Allow, Outcome::RequireStepUp, Outcome::Block].into_iter().find(|o| o.as_str() == text)
    }
}

/// The decision kept on the intent and shown in its JSON.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FraudDecision {
    /// `allow`, `require_step_up` or `block`.
    pub outcome: String,
    /// The reason code of every rule that fired, in rule order.
    pub reasons: Vec<String>,
}

/// Thresholds of the rules. A count limit of 0 turns its rule off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FraudSettings {
    /// Whether the checks run at all.
    pub enabled: bool,
    /// How far back the counts look.
    pub window: Duration,
    /// Most confirmation attempts per customer in the window (more: block `customer_velocity`).
    pub max_attempts_per_customer: u32,
    /// Most attempts per card (`card_velocity`).
    pub max_attempts_per_card: u32,
    /// Most attempts per client address (`ip_velocity`).
    pub max_attempts_per_ip: u32,
    /// Most attempts per device (`device_velocity`).
    pub max_attempts_per_device: u32,
    /// Most distinct cards per client address or device (`card_testing`).
    pub max_cards_per_client: u32,
    /// Most distinct cards per customer (`many_cards_on_account`).
    pub max_cards_per_customer: u32,
    /// Declines of any of the attempt's keys after which a step-up is needed (`recent_declines`).
    pub step_up_after_declines: u32,
    /// Declines after which attempts are blocked (`too_many_declines`).
    pub max_declines: u32,
    /// Most small amounts per card, client address or device (`repeated_small_amounts`).
    pub max_small_amounts: u32,
    /// What counts as small, in minor units per lower-case currency; a currency not listed: one
    /// major unit (100 for EUR, 1 for JPY, 1000 for BHD).
    pub small_amounts: BTreeMap<String, i64>,
    /// The largest amount per lower-case currency (more: block `amount_over_limit`); a currency
    /// not listed has no limit beyond the API's.
    pub amount_limits: BTreeMap<String, i64>,
    /// What a card issued in another country than the client's leads to (`country_mismatch`).
    pub country_mismatch: Outcome,
    /// Issuing countries by card number prefix (1 to 8 digits, longest match wins). The vault
    /// keeps no BIN table, so a card's country is known only through this list.
    pub issuer_countries: BTreeMap<String, String>,
}

impl Default for FraudSettings {
    /// Limits that a normal checkout (a few attempts of one customer with one or two cards) never
    /// reaches, and that a card tester reaches within minutes.
    fn default() -> Self {
        Self {
            enabled: true,
            window: Duration::from_secs(3600),
            max_attempts_per_customer: 30,
            max_attempts_per_card: 20,
            max_attempts_per_ip: 50,
            max_attempts_per_device: 30,
            max_cards_per_client: 4,
            max_cards_per_customer: 5,
            step_up_after_declines: 3,
            max_declines: 10,
            max_small_amounts: 5,
            small_amounts: BTreeMap::new(),
            amount_limits: BTreeMap::new(),
            country_mismatch: Outcome::RequireStepUp,
            issuer_countries: BTreeMap::new(),
        }
    }
}

impl FraudSettings {
    /// Whether `amount` counts as small for its currency.
    pub fn is_small(&self, amount: Money) -> bool {
        let currency = amount.currency().lowercase();
        let limit = self
            .small_amounts
            .get(&currency)
            .copied()
            .unwrap_or_else(|| 10_i64.saturating_pow(u32::from(amount.currency().exponent())));
        amount.minor() <= limit
    }

    /// The issuing country of a card by its leading digits, if the list knows it.
    pub fn issuer_country(&self, leading_digits: &str) -> Option<&str> {
        (1..=leading_digits.len().min(8))
            .rev()
            .find_map(|n| leading_digits.get(..n).and_then(|prefix| self.issuer_countries.get(prefix)))
            .map(String::as_str)
    }
}

/// What a client (the customer's browser or app, as the shop saw it) is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientSignals {
    /// The customer's address.
    pub ip: Option<std::net::IpAddr>,
    /// The shop's id of the customer's device (1 to 128 printable characters).
    pub device: Option<String>,
    /// ISO 3166-1 alpha-2, upper case.
    pub country: Option<String>,
}

impl ClientSignals {
    /// Parses what the shop sent as `client` (`{ip, device, country}`, each optional).
    pub fn parse(ip: Option<&str>, device: Option<&str>, country: Option<&str>) -> Result<Self, DomainError> {
        let ip = match ip {
            Some(text) => Some(
                text.trim()
                    .parse::<std::net::IpAddr>()
                    .map_err(|_| DomainError::invalid("/client/ip", "must be an IPv4 or IPv6 address"))?,
            ),
            None => None,
        };
        let device = match device {
            Some(text) => Some(crate::detection::points::device_id("/client/device", text)?),
            None => None,
        };
        let country = match country {
            Some(text) => {
                let upper = text.to_ascii_uppercase();
                if !crate::vault::countries::is_country(&upper) {
                    return Err(DomainError::invalid(
                        "/client/country",
                        "must be an assigned ISO 3166-1 alpha-2 country code",
                    ));
                }
                Some(upper)
            }
            None => None,
        };
        Ok(Self { ip, device, country })
    }
}

/// Everything the rules look at for one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    /// The amount to authorise.
    pub amount: Money,
    /// The window's counts per kind of key this attempt has (this attempt included).
    pub counts: BTreeMap<SignalKind, WindowCounts>,
    /// The card's issuing country, if known.
    pub card_country: Option<String>,
    /// The client's country, if the shop said.
    pub client_country: Option<String>,
}

impl Observation {
    fn of(&self, kind: SignalKind) -> WindowCounts {
        self.counts.get(&kind).copied().unwrap_or_default()
    }
}

/// A rule that fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Finding {
    /// What it asks for.
    pub outcome: Outcome,
    /// Its reason code.
    pub reason: &'static str,
}

const fn block(reason: &'static str) -> Finding {
    Finding { outcome: Outcome::Block, reason }
}

fn over(count: u32, limit: u32) -> bool {
    limit > 0 && count > limit
}

/// More attempts by this customer than allowed in the window.
pub fn customer_velocity(s: &FraudSettings, o: &Observation) -> Option<Finding> {
    over(o.of(SignalKind::Customer).attempts, s.max_attempts_per_customer).then_some(block("customer_velocity"))
}

/// More attempts with this card.
pub fn card_velocity(s: &FraudSettings, o: &Observation) -> Option<Finding> {
    over(o.of(SignalKind::Card).attempts, s.max_attempts_per_card).then_some(block("card_velocity"))
}

/// More attempts from this client address.
pub fn ip_velocity(s: &FraudSettings, o: &Observation) -> Option<Finding> {
    over(o.of(SignalKind::Ip).attempts, s.max_attempts_per_ip).then_some(block("ip_velocity"))
}

/// More attempts from this device.
pub fn device_velocity(s: &FraudSettings, o: &Observation) -> Option<Finding> {
    over(o.of(SignalKind::Device).attempts, s.max_attempts_per_device).then_some(block("device_velocity"))
}

/// Card testing: many distinct cards tried from one client address or device.
pub fn cards_per_client(s: &FraudSettings, o: &Observation) -> Option<Finding> {
    let cards = o.of(SignalKind::Ip).cards.max(o.of(SignalKind::Device).cards);
    over(cards, s.max_cards_per_client).then_some(block("card_testing"))
}

/// Many distinct cards on one customer account.
pub fn cards_per_customer(s: &FraudSettings, o: &Observation) -> Option<Finding> {
    over(o.of(SignalKind::Customer).cards, s.max_cards_per_customer).then_some(block("many_cards_on_account"))
}

/// Declines of this customer, card, address or device in the window: a step-up after a few, a
/// block after many.
pub fn declines(s: &FraudSettings, o: &Observation) -> Option<Finding> {
    let most = SignalKind::ALL.into_iter().map(|k| o.of(k).declines).max().unwrap_or(0);
    if s.max_declines > 0 && most >= s.max_declines {
        Some(block("too_many_declines"))
    } else if s.step_up_after_declines > 0 && most >= s.step_up_after_declines {
        Some(Finding { outcome: Outcome::RequireStepUp, reason: "recent_declines" })
    } else {
        None
    }
}

/// Repeated small amounts on one card, address or device (card testers check cards with them).
pub fn small_amounts(s: &FraudSettings, o: &Observation) -> Option<Finding> {
    let most = [SignalKind::Card, SignalKind::Ip, SignalKind::Device].into_iter().map(|k| o.of(k).small).max();
    over(most.unwrap_or(0), s.max_small_amounts).then_some(block("repeated_small_amounts"))
}

/// An amount above the limit of its currency.
pub fn amount_limit(s: &FraudSettings, o: &Observation) -> Option<Finding> {
    let limit = s.amount_limits.get(&o.amount.currency().lowercase())?;
    (o.amount.minor() > *limit).then_some(block("amount_over_limit"))
}

/// A card issued in another country than the client's, when both are known.
pub fn country_mismatch(s: &FraudSettings, o: &Observation) -> Option<Finding> {
    let (Some(card), Some(client)) = (&o.card_country, &o.client_country) else { return None };
    (card != client && s.country_mismatch != Outcome::Allow)
        .then_some(Finding { outcome: s.country_mismatch, reason: "country_mismatch" })
}

/// Every rule, in the order reasons are listed.
pub const RULES: &[fn(&FraudSettings, &Observation) -> Option<Finding>] = &[
    customer_velocity,
    card_velocity,
    ip_velocity,
    device_velocity,
    cards_per_client,
    cards_per_customer,
    declines,
    small_amounts,
    amount_limit,
    country_mismatch,
];

/// The one place the rules are combined: the most severe outcome any rule asks for, with the
/// reasons of all that fired.
pub fn decide(settings: &FraudSettings, observation: &Observation) -> (Outcome, Vec<&'static str>) {
    let findings: Vec<Finding> = RULES.iter().filter_map(|rule| rule(settings, observation)).collect();
    let outcome = findings.iter().map(|f| f.outcome).max().unwrap_or(Outcome::Allow);
    (outcome, findings.into_iter().map(|f| f.reason).collect())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use strongroom_types::Currency;

    fn eur(minor: i64) -> Money {
        Money::new(minor, Currency::parse("EUR").unwrap()).unwrap()
    }

    fn observation(counts: &[(SignalKind, WindowCounts)]) -> Observation {
        Observation {
            amount: eur(5000),
            counts: counts.iter().copied().collect(),
            card_country: None,
            client_country: None,
        }
    }

    fn one_attempt() -> WindowCounts {
        WindowCounts { attempts: 1, cards: 1, declines: 0, small: 0 }
    }

    fn reasons(o: &Observation) -> (Outcome, Vec<&'static str>) {
        decide(&FraudSettings::default(), o)
    }

    #[test]
    fn a_normal_checkout_is_allowed() {
        let o = observation(&SignalKind::ALL.map(|k| (k, one_attempt())));
        assert_eq!(reasons(&o), (Outcome::Allow, vec![]));
    }

    #[test]
    fn each_rule_fires_on_its_own_signal() {
        let s = FraudSettings::default();
        let count = |attempts, cards, declines, small| WindowCounts { attempts, cards, declines, small };
        let cases: Vec<(Observation, Outcome, &str)> = vec![
            (observation(&[(SignalKind::Customer, count(31, 1, 0, 0))]), Outcome::Block, "customer_velocity"),
            (observation(&[(SignalKind::Card, count(21, 1, 0, 0))]), Outcome::Block, "card_velocity"),
            (observation(&[(SignalKind::Ip, count(51, 1, 0, 0))]), Outcome::Block, "ip_velocity"),
            (observation(&[(SignalKind::Device, count(31, 1, 0, 0))]), Outcome::Block, "device_velocity"),
            (observation(&[(SignalKind::Ip, count(5, 5, 0, 0))]), Outcome::Block, "card_testing"),
            (observation(&[(SignalKind::Device, count(5, 5, 0, 0))]), Outcome::Block, "card_testing"),
            (observation(&[(SignalKind::Customer, count(6, 6, 0, 0))]), Outcome::Block, "many_cards_on_account"),
            (observation(&[(SignalKind::Card, count(4, 1, 3, 0))]), Outcome::RequireStepUp, "recent_declines"),
            (observation(&[(SignalKind::Ip, count(11, 1, 10, 0))]), Outcome::Block, "too_many_declines"),
            (observation(&[(SignalKind::Card, count(6, 1, 0, 6))]), Outcome::Block, "repeated_small_amounts"),
        ];
        for (o, outcome, reason) in cases {
            let (got, why) = decide(&s, &o);
            assert_eq!(got, outcome, "{reason}");
            assert!(why.contains(&reason), "{reason}: {why:?}");
            // Each rule on its own: turning its threshold off (or below) lets it pass.
            let at_limit = |c: WindowCounts| WindowCounts {
                attempts: c.attempts.min(20),
                cards: c.cards.min(4),
                declines: c.declines.min(2),
                small: c.small.min(5),
            };
            let lower = Observation { counts: o.counts.iter().map(|(k, c)| (*k, at_limit(*c))).collect(), ..o };
            assert_eq!(decide(&s, &lower).0, Outcome::Allow, "{reason} at its limit");
        }
    }

    #[test]
    fn amount_limits_are_per_currency() {
        let mut s = FraudSettings::default();
        s.amount_limits.insert("eur".into(), 100_000);
        let mut o = observation(&[]);
        o.amount = eur(100_000);
        assert_eq!(decide(&s, &o).0, Outcome::Allow);
        o.amount = eur(100_001);
        assert_eq!(decide(&s, &o), (Outcome::Block, vec!["amount_over_limit"]));
        o.amount = Money::new(100_001, Currency::parse("USD").unwrap()).unwrap();
        assert_eq!(decide(&s, &o).0, Outcome::Allow, "no limit for usd");
    }

    #[test]
    fn country_mismatch_needs_both_countries() {
        let mut s = FraudSettings::default();
        let mut o = observation(&[]);
        o.card_country = Some("US".into());
        assert_eq!(decide(&s, &o).0, Outcome::Allow, "client country unknown");
        o.client_country = Some("US".into());
        assert_eq!(decide(&s, &o).0, Outcome::Allow, "same country");
        o.client_country = Some("DE".into());
        assert_eq!(decide(&s, &o), (Outcome::RequireStepUp, vec!["country_mismatch"]));
        s.country_mismatch = Outcome::Block;
        assert_eq!(decide(&s, &o).0, Outcome::Block);
        s.country_mismatch = Outcome::Allow;
        assert_eq!(decide(&s, &o).0, Outcome::Allow);
    }

    #[test]
    fn small_amounts_follow_the_exponent_and_issuers_the_longest_prefix() {
        let s = FraudSettings::default();
        assert!(s.is_small(eur(100)) && !s.is_small(eur(101)));
        assert!(s.is_small(Money::new(1, Currency::parse("JPY").unwrap()).unwrap()));
        assert!(!s.is_small(Money::new(2, Currency::parse("JPY").unwrap()).unwrap()));
        assert!(s.is_small(Money::new(1000, Currency::parse("BHD").unwrap()).unwrap()));
        let mut s = FraudSettings::default();
        s.issuer_countries.insert("4".into(), "US".into());
        s.issuer_countries.insert("400005".into(), "GB".into());
        assert_eq!(s.issuer_country("400005"), Some("GB"));
        assert_eq!(s.issuer_country("424242"), Some("US"));
        assert_eq!(s.issuer_country("555555"), None);
    }

    #[test]
    fn clients_are_parsed_naming_the_field() {
        let ok = ClientSignals::parse(Some("203.0.113.9"), Some("dev-1"), Some("de")).unwrap();
        assert_eq!(ok.country.as_deref(), Some("DE"));
        let pointer = |e: DomainError| match e {
            DomainError::Validation(f) => f[0].pointer.clone(),
            DomainError::Rejected { errors, .. } => errors[0].pointer.clone(),
            _ => String::new(),
        };
        assert_eq!(pointer(ClientSignals::parse(Some("nope"), None, None).unwrap_err()), "/client/ip");
        assert_eq!(pointer(ClientSignals::parse(None, Some(""), None).unwrap_err()), "/client/device");
        assert_eq!(pointer(ClientSignals::parse(None, Some("4242424242424242"), None).unwrap_err()), "/client/device");
        assert_eq!(pointer(ClientSignals::parse(None, None, Some("ZZ")).unwrap_err()), "/client/country");
    }

    fn counts() -> impl Strategy<Value = WindowCounts> {
        (0u32..80, 0u32..10, 0u32..15, 0u32..10).prop_map(|(attempts, cards, declines, small)| WindowCounts {
            attempts,
            cards,
            declines,
            small,
        })
    }

    proptest! {
        #[test]
        fn the_combination_is_the_most_severe_rule(c in proptest::collection::vec(counts(), 4)) {
            let s = FraudSettings::default();
            let o = observation(&SignalKind::ALL.iter().copied().zip(c).collect::<Vec<_>>());
            let (outcome, why) = decide(&s, &o);
            let each: Vec<Finding> = RULES.iter().filter_map(|r| r(&s, &o)).collect();
            prop_assert_eq!(outcome, each.iter().map(|f| f.outcome).max().unwrap_or(Outcome::Allow));
            prop_assert_eq!(why.len(), each.len());
        }

        #[test]
        fn more_activity_never_lowers_the_outcome(c in proptest::collection::vec(counts(), 4), extra in 0u32..20) {
            let s = FraudSettings::default();
            let kinds: Vec<_> = SignalKind::ALL.iter().copied().zip(c).collect();
            let more: Vec<_> = kinds.iter().map(|(k, w)| (*k, WindowCounts {
                attempts: w.attempts + extra, cards: w.cards + extra / 4, declines: w.declines + extra / 3, small: w.small + extra / 2,
            })).collect();
            prop_assert!(decide(&s, &observation(&more)).0 >= decide(&s, &observation(&kinds)).0);
        }

        #[test]
        fn a_first_attempt_is_always_allowed(amount in 1i64..=crate::payments::MAX_AMOUNT) {
            let mut o = observation(&SignalKind::ALL.map(|k| (k, one_attempt())));
            o.amount = eur(amount);
            prop_assert_eq!(decide(&FraudSettings::default(), &o).0, Outcome::Allow);
        }
    }
}
