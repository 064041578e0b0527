//! Money: integer minor units of an ISO 4217 currency.
//!
//! [`Currency`] is one of the table's alphabetic codes with its minor-unit exponent (JPY 0, EUR 2,
//! BHD 3); [`Money`] is a non-negative `i64` count of minor units of one currency, made only
//! through [`Money::new`], with arithmetic that fails on overflow or on mixed currencies instead of
//! wrapping. On the wire it is Stripe's shape: `{"amount": 1999, "currency": "eur"}` (lowercase
//! out, any case in).
//! Must never: hold a float, hold a negative amount, wrap on overflow, or add two currencies.

use std::fmt;

/// ISO 4217 alphabetic codes and their minor-unit exponents: every active code (which covers
/// every currency Stripe settles or presents), with the older `SLL` Stripe still accepts.
const CURRENCIES: &[(&str, u8)] = &[
    ("AED", 2),
    ("AFN", 2),
    ("ALL", 2),
    ("AMD", 2),
    ("ANG", 2),
    ("AOA", 2),
    ("ARS", 2),
    ("AUD", 2),
    ("AWG", 2),
    ("AZN", 2),
    ("BAM", 2),
    ("BBD", 2),
    ("BDT", 2),
    ("BGN", 2),
    ("BHD", 3),
    ("BIF", 0),
    ("BMD", 2),
    ("BND", 2),
    ("BOB", 2),
    ("BOV", 2),
    ("BRL", 2),
    ("BSD", 2),
    ("BTN", 2),
    ("BWP", 2),
    ("BYN", 2),
    ("BZD", 2),
    ("CAD", 2),
    ("CDF", 2),
    ("CHE", 2),
    ("CHF", 2),
    ("CHW", 2),
    ("CLF", 4),
    ("CLP", 0),
    ("CNY", 2),
    ("COP", 2),
    ("COU", 2),
    ("CRC", 2),
    ("CUP", 2),
    ("CVE", 2),
    ("CZK", 2),
    ("DJF", 0),
    ("DKK", 2),
    ("DOP", 2),
    ("DZD", 2),
    ("EGP", 2),
    ("ERN", 2),
    ("ETB", 2),
    ("EUR", 2),
    ("FJD", 2),
    ("FKP", 2),
    ("GBP", 2),
    ("GEL", 2),
    ("GHS", 2),
    ("GIP", 2),
    ("GMD", 2),
    ("GNF", 0),
    ("GTQ", 2),
    ("GYD", 2),
    ("HKD", 2),
    ("HNL", 2),
    ("HTG", 2),
    ("HUF", 2),
    ("IDR", 2),
    ("ILS", 2),
    ("INR", 2),
    ("IQD", 3),
    ("IRR", 2),
    ("ISK", 0),
    ("JMD", 2),
    ("JOD", 3),
    ("JPY", 0),
    ("KES", 2),
    ("KGS", 2),
    ("KHR", 2),
    ("KMF", 0),
    ("KPW", 2),
    ("KRW", 0),
    ("KWD", 3),
    ("KYD", 2),
    ("KZT", 2),
    ("LAK", 2),
    ("LBP", 2),
    ("LKR", 2),
    ("LRD", 2),
    ("LSL", 2),
    ("LYD", 3),
    ("MAD", 2),
    ("MDL", 2),
    ("MGA", 2),
    ("MKD", 2),
    ("MMK", 2),
    ("MNT", 2),
    ("MOP", 2),
    ("MRU", 2),
    ("MUR", 2),
    ("MVR", 2),
    ("MWK", 2),
    ("MXN", 2),
    ("MXV", 2),
    ("MYR", 2),
    ("MZN", 2),
    ("NAD", 2),
    ("NGN", 2),
    ("NIO", 2),
    ("NOK", 2),
    ("NPR", 2),
    ("NZD", 2),
    ("OMR", 3),
    ("PAB", 2),
    ("PEN", 2),
    ("PGK", 2),
    ("PHP", 2),
    ("PKR", 2),
    ("PLN", 2),
    ("PYG", 0),
    ("QAR", 2),
    ("RON", 2),
    ("RSD", 2),
    ("RUB", 2),
    ("RWF", 0),
    ("SAR", 2),
    ("SBD", 2),
    ("SCR", 2),
    ("SDG", 2),
    ("SEK", 2),
    ("SGD", 2),
    ("SHP", 2),
    ("SLE", 2),
    ("SLL", 2),
    ("SOS", 2),
    ("SRD", 2),
    ("SSP", 2),
    ("STN", 2),
    ("SVC", 2),
    ("SYP", 2),
    ("SZL", 2),
    ("THB", 2),
    ("TJS", 2),
    ("TMT", 2),
    ("TND", 3),
    ("TOP", 2),
    ("TRY", 2),
    ("TTD", 2),
    ("TWD", 2),
    ("TZS", 2),
    ("UAH", 2),
    ("UGX", 0),
    ("USD", 2),
    ("USN", 2),
    ("UYI", 0),
    ("UYU", 2),
    ("UYW", 4),
    ("UZS", 2),
    ("VED", 2),
    ("VES", 2),
    ("VND", 0),
    ("VUV", 0),
    ("WST", 2),
    ("XAF", 0),
    ("XCD", 2),
    ("XCG", 2),
    ("XOF", 0),
    ("XPF", 0),
    ("YER", 2),
    ("ZAR", 2),
    ("ZMW", 2),
    ("ZWG", 2),
];

/// An ISO 4217 currency of the table. Made only by [`Currency::parse`].
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Currency {
    /// Index into the table.
    index: u16,
}

/// Why money was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MoneyError {
    /// Not an ISO 4217 code of the table.
    UnknownCurrency,
    /// Below zero.
    Negative,
    /// Beyond `i64` minor units.
    Overflow,
    /// Two currencies in one sum.
    CurrencyMismatch,
}

impl fmt::Display for MoneyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MoneyError::UnknownCurrency => "not an ISO 4217 currency code",
            MoneyError::Negative => "must not be negative",
            MoneyError::Overflow => "is too large",
            MoneyError::CurrencyMismatch => "mixes currencies",
        })
    }
}

impl std::error::Error for MoneyError {}

impl Currency {
    /// Every currency of the table.
    pub fn all() -> impl Iterator<Item = Currency> {
        (0..CURRENCIES.len()).filter_map(|i| u16::try_from(i).ok()).map(|index| Currency { index })
    }

    /// Parses a three-letter code in any case (`eur`, `EUR`).
    pub fn parse(code: &str) -> Result<Self, MoneyError> {
        if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_alphabetic()) {
            return Err(MoneyError::UnknownCurrency);
        }
        let upper = code.to_ascii_uppercase();
        CURRENCIES
            .binary_search_by(|(known, _)| known.cmp(&upper.as_str()))
            .ok()
            .and_then(|i| u16::try_from(i).ok())
            .map(|index| Currency { index })
            .ok_or(MoneyError::UnknownCurrency)
    }

    fn entry(self) -> (&'static str, u8) {
        CURRENCIES.get(usize::from(self.index)).copied().unwrap_or(("XXX", 2))
    }

    /// The upper-case code (`EUR`).
    pub fn code(self) -> &'static str {
        self.entry().0
    }

    /// The lower-case code Stripe's API uses (`eur`).
    pub fn lowercase(self) -> String {
        self.code().to_ascii_lowercase()
    }

    /// Digits after the decimal point: how many minor units make one major unit (as a power of ten).
    pub fn exponent(self) -> u8 {
        self.entry().1
    }
}

impl fmt::Debug for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.lowercase())
    }
}

impl serde::Serialize for Currency {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.lowercase())
    }
}

impl<'de> serde::Deserialize<'de> for Currency {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Currency::parse(&text).map_err(|_| serde::de::Error::custom("not an ISO 4217 currency code"))
    }
}

/// A non-negative amount of one currency, in minor units.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Money {
    minor: i64,
    currency: Currency,
}

impl Money {
    /// `minor` units of `currency`; refused below zero.
    pub fn new(minor: i64, currency: Currency) -> Result<Self, MoneyError> {
        if minor < 0 {
            return Err(MoneyError::Negative);
        }
        Ok(Self { minor, currency })
    }

    /// Zero of `currency`.
    pub fn zero(currency: Currency) -> Self {
        Self { minor: 0, currency }
    }

    /// The amount in minor units.
    pub fn minor(self) -> i64 {
        self.minor
    }

    /// The currency.
    pub fn currency(self) -> Currency {
        self.currency
    }

    /// Whether it is zero.
    pub fn is_zero(self) -> bool {
        self.minor == 0
    }

    fn same(self, other: Money) -> Result<(), MoneyError> {
        if self.currency == other.currency { Ok(()) } else { Err(MoneyError::CurrencyMismatch) }
    }

    /// `self + other`, refused on overflow or mixed currencies.
    pub fn checked_add(self, other: Money) -> Result<Money, MoneyError> {
        self.same(other)?;
        let minor = self.minor.checked_add(other.minor).ok_or(MoneyError::Overflow)?;
        Money::new(minor, self.currency)
    }

    /// `self - other`, refused below zero or on mixed currencies.
    pub fn checked_sub(self, other: Money) -> Result<Money, MoneyError> {
        self.same(other)?;
        let minor = self.minor.checked_sub(other.minor).ok_or(MoneyError::Overflow)?;
        Money::new(minor, self.currency)
    }

    /// `self × quantity`, refused on overflow.
    pub fn checked_mul(self, quantity: u32) -> Result<Money, MoneyError> {
        let minor = self.minor.checked_mul(i64::from(quantity)).ok_or(MoneyError::Overflow)?;
        Money::new(minor, self.currency)
    }

    /// The sum of `items` (zero when empty), refused on overflow or mixed currencies.
    pub fn sum(currency: Currency, items: impl IntoIterator<Item = Money>) -> Result<Money, MoneyError> {
        items.into_iter().try_fold(Money::zero(currency), Money::checked_add)
    }
}

impl fmt::Debug for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.minor, self.currency.code())
    }
}

/// `12.34 EUR`, `1000 JPY`, `1.234 BHD`: the decimal form, for people (never parsed back).
impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let exponent = u32::from(self.currency.exponent());
        let unit = 10i64.pow(exponent);
        if exponent == 0 {
            return write!(f, "{} {}", self.minor, self.currency.code());
        }
        let width = usize::from(self.currency.exponent());
        write!(f, "{}.{:0width$} {}", self.minor / unit, self.minor % unit, self.currency.code())
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire {
    amount: i64,
    currency: Currency,
}

impl serde::Serialize for Money {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        Wire { amount: self.minor, currency: self.currency }.serialize(serializer)
    }
}

impl<'de> serde::Deserialize<'de> for Money {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let wire = Wire::deserialize(deserializer)?;
        Money::new(wire.amount, wire.currency).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code")]
    use super::*;
    use proptest::prelude::*;

    fn eur() -> Currency {
        Currency::parse("eur").unwrap()
    }

    #[test]
    fn the_table_is_sorted_unique_and_upper_case() {
        for pair in CURRENCIES.windows(2) {
            assert!(pair[0].0 < pair[1].0, "{} before {}", pair[0].0, pair[1].0);
        }
        assert!(CURRENCIES.iter().all(|(c, e)| c.len() == 3 && c.bytes().all(|b| b.is_ascii_uppercase()) && *e <= 4));
        assert!(CURRENCIES.len() >= 135);
    }

    #[test]
    fn exponents_follow_iso_4217() {
        for (code, exponent) in [
            ("jpy", 0),
            ("krw", 0),
            ("vnd", 0),
            ("clp", 0),
            ("eur", 2),
            ("usd", 2),
            ("gbp", 2),
            ("bhd", 3),
            ("kwd", 3),
            ("jod", 3),
            ("omr", 3),
            ("tnd", 3),
            ("clf", 4),
        ] {
            assert_eq!(Currency::parse(code).unwrap().exponent(), exponent, "{code}");
        }
    }

    #[test]
    fn stripe_currencies_are_known() {
        let stripe = "usd aed afn all amd ang aoa ars aud awg azn bam bbd bdt bgn bhd bif bmd bnd bob brl bsd bwp byn \
                      bzd cad cdf chf clp cny cop crc cve czk djf dkk dop dzd egp etb eur fjd fkp gbp gel gip gmd gnf \
                      gtq gyd hkd hnl htg huf idr ils inr isk jmd jod jpy kes kgs khr kmf krw kwd kyd kzt lak lbp lkr \
                      lrd lsl mad mdl mga mkd mmk mnt mop mur mvr mwk mxn myr mzn nad ngn nio nok npr nzd omr pab pen \
                      pgk php pkr pln pyg qar ron rsd rub rwf sar sbd scr sek sgd shp sle sll sos srd std szl thb tjs \
                      tnd top try ttd twd tzs uah ugx uyu uzs vnd vuv wst xaf xcd xof xpf yer zar zmw";
        let missing: Vec<&str> = stripe.split_whitespace().filter(|c| Currency::parse(c).is_err()).collect();
        // STD (São Tomé's old dobra) became STN in 2018; Stripe's list still names it.
        assert_eq!(missing, ["std"]);
    }

    #[test]
    fn unknown_or_malformed_codes_are_refused() {
        for code in ["", "eu", "euro", "xxx", "e1r", "€ur", "EU R"] {
            assert_eq!(Currency::parse(code), Err(MoneyError::UnknownCurrency), "{code}");
        }
    }

    #[test]
    fn wire_form_is_stripes() {
        let money = Money::new(1999, eur()).unwrap();
        assert_eq!(serde_json::to_string(&money).unwrap(), r#"{"amount":1999,"currency":"eur"}"#);
        let back: Money = serde_json::from_str(r#"{"amount":1999,"currency":"EuR"}"#).unwrap();
        assert_eq!(back, money);
        assert!(serde_json::from_str::<Money>(r#"{"amount":-1,"currency":"eur"}"#).is_err());
        assert!(serde_json::from_str::<Money>(r#"{"amount":1.5,"currency":"eur"}"#).is_err());
        assert!(serde_json::from_str::<Money>(r#"{"amount":1,"currency":"zzz"}"#).is_err());
        assert!(serde_json::from_str::<Money>(r#"{"amount":9223372036854775808,"currency":"eur"}"#).is_err());
    }

    #[test]
    fn display_places_the_decimal_point_by_exponent() {
        assert_eq!(Money::new(1234, eur()).unwrap().to_string(), "12.34 EUR");
        assert_eq!(Money::new(5, eur()).unwrap().to_string(), "0.05 EUR");
        assert_eq!(Money::new(1000, Currency::parse("jpy").unwrap()).unwrap().to_string(), "1000 JPY");
        assert_eq!(Money::new(1234, Currency::parse("bhd").unwrap()).unwrap().to_string(), "1.234 BHD");
    }

    #[test]
    fn mixed_currencies_and_negatives_are_refused() {
        let usd = Money::new(1, Currency::parse("usd").unwrap()).unwrap();
        let eur1 = Money::new(1, eur()).unwrap();
        assert_eq!(eur1.checked_add(usd), Err(MoneyError::CurrencyMismatch));
        assert_eq!(eur1.checked_sub(usd), Err(MoneyError::CurrencyMismatch));
        assert_eq!(Money::zero(eur()).checked_sub(eur1), Err(MoneyError::Negative));
        assert_eq!(Money::new(-1, eur()), Err(MoneyError::Negative));
    }

    fn currency() -> impl Strategy<Value = Currency> {
        (0..CURRENCIES.len()).prop_map(|i| Currency { index: u16::try_from(i).unwrap() })
    }

    proptest! {
        #[test]
        fn addition_is_exact_or_refused(a in 0i64..=i64::MAX, b in 0i64..=i64::MAX, c in currency()) {
            let (x, y) = (Money::new(a, c).unwrap(), Money::new(b, c).unwrap());
            match a.checked_add(b) {
                Some(sum) => prop_assert_eq!(x.checked_add(y).unwrap().minor(), sum),
                None => prop_assert_eq!(x.checked_add(y), Err(MoneyError::Overflow)),
            }
            prop_assert_eq!(x.checked_add(y), y.checked_add(x));
        }

        #[test]
        fn subtraction_undoes_addition(a in 0i64..=i64::MAX / 2, b in 0i64..=i64::MAX / 2, c in currency()) {
            let (x, y) = (Money::new(a, c).unwrap(), Money::new(b, c).unwrap());
            prop_assert_eq!(x.checked_add(y).unwrap().checked_sub(y).unwrap(), x);
            prop_assert_eq!(x.checked_sub(y).is_ok(), a >= b);
        }

        #[test]
        fn multiplication_is_exact_or_refused(a in 0i64..=i64::MAX, q in any::<u32>(), c in currency()) {
            let x = Money::new(a, c).unwrap();
            match a.checked_mul(i64::from(q)) {
                Some(product) => prop_assert_eq!(x.checked_mul(q).unwrap().minor(), product),
                None => prop_assert_eq!(x.checked_mul(q), Err(MoneyError::Overflow)),
            }
        }

        #[test]
        fn a_sum_is_repeated_addition(items in proptest::collection::vec(0i64..=i64::MAX / 4, 0..8), c in currency()) {
            let money: Vec<Money> = items.iter().map(|m| Money::new(*m, c).unwrap()).collect();
            let expected = items.iter().try_fold(0i64, |acc, m| acc.checked_add(*m));
            match expected {
                Some(total) => prop_assert_eq!(Money::sum(c, money).unwrap().minor(), total),
                None => prop_assert_eq!(Money::sum(c, money), Err(MoneyError::Overflow)),
            }
        }

        #[test]
        fn wire_form_round_trips_in_any_case(a in 0i64..=i64::MAX, c in currency(), upper in any::<bool>()) {
            let money = Money::new(a, c).unwrap();
            let text = serde_json::to_string(&money).unwrap();
            let quoted = format!("\"{}\"", c.lowercase());
            prop_assert!(text.contains(&quoted));
            let sent = if upper { text.replace(&c.lowercase(), c.code()) } else { text };
            prop_assert_eq!(serde_json::from_str::<Money>(&sent).unwrap(), money);
        }
    }
}
