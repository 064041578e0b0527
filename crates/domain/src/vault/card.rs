//! Card numbers: parsing (digits, length, Luhn), brand by IIN range, CVC length by brand, expiry,
//! masking (PCI DSS 3.4.1: at most the first 6 and last 4 digits, and only the last 4 of a number
//! shorter than 16 digits) and format-preserving tokens that keep the first 6 and last 4 and
//! deliberately fail Luhn, so a token can never be mistaken for a card.
//!
//! Why short numbers show less: with the first 6 and last 4 shown, a 12-digit number hides 2
//! digits, one of them fixed by the Luhn check: 10 candidates. Below 16 digits only the last 4 are
//! shown ([`Pan::first6`] is `None`), and a format-preserving token, which would show the first 6
//! and last 4 in its id, needs at least [`MIN_HIDDEN_SPACE`] possible values for the digits it
//! hides ([`Pan::allows_format_preserving`]): 16 digits or more.
//! Must never: show more than [`Pan::masked`] shows outside [`Pan::expose_digits`], or echo a
//! rejected number in an error.

use std::fmt;

use strongroom_types::{Entropy, Secret, Timestamp};

/// Card brands recognised by IIN (issuer identification number) range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Brand {
    /// Visa: 4.
    Visa,
    /// Mastercard: 51–55 and 2221–2720.
    Mastercard,
    /// American Express: 34, 37.
    Amex,
    /// Discover: 6011, 644–649, 65.
    Discover,
    /// JCB: 3528–3589.
    Jcb,
    /// UnionPay: 62 (outside Discover's co-branded 622126–622925), 81.
    UnionPay,
    /// Diners Club: 300–305, 36, 38–39.
    Diners,
    /// Maestro: 50, 56–58, 6304, 6759, 6761–6763.
    Maestro,
}

impl Brand {
    /// The stable name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Brand::Visa => "visa",
            Brand::Mastercard => "mastercard",
            Brand::Amex => "amex",
            Brand::Discover => "discover",
            Brand::Jcb => "jcb",
            Brand::UnionPay => "unionpay",
            Brand::Diners => "diners",
            Brand::Maestro => "maestro",
        }
    }

    /// Lengths a number of this brand may have.
    fn lengths(self) -> &'static [usize] {
        match self {
            Brand::Visa => &[13, 16, 19],
            Brand::Mastercard => &[16],
            Brand::Amex => &[15],
            Brand::Discover => &[16, 17, 18, 19],
            Brand::Jcb => &[16, 17, 18, 19],
            Brand::UnionPay => &[16, 17, 18, 19],
            Brand::Diners => &[14, 15, 16, 17, 18, 19],
            Brand::Maestro => &[12, 13, 14, 15, 16, 17, 18, 19],
        }
    }

    /// Digits of the card verification code.
    pub const fn cvc_length(self) -> usize {
        match self {
            Brand::Amex => 4,
            _ => 3,
        }
    }

    /// The brand of a number from its leading digits.
    pub fn of(digits: &str) -> Option<Brand> {
        let prefix = |n: usize| digits.get(..n).and_then(|p| p.parse::<u32>().ok());
        let in_range = |n: usize, low: u32, high: u32| prefix(n).is_some_and(|p| (low..=high).contains(&p));
        // Most specific ranges first: co-branded and overlapping ranges decide by the longest prefix.
        if in_range(6, 622_126, 622_925) || in_range(4, 6011, 6011) || in_range(3, 644, 649) || in_range(2, 65, 65) {
            return Some(Brand::Discover);
        }
        if in_range(4, 3528, 3589) {
            return Some(Brand::Jcb);
        }
        if in_range(2, 34, 34) || in_range(2, 37, 37) {
            return Some(Brand::Amex);
        }
        if in_range(3, 300, 305) || in_range(2, 36, 36) || in_range(2, 38, 39) {
            return Some(Brand::Diners);
        }
        if in_range(2, 51, 55) || in_range(4, 2221, 2720) {
            return Some(Brand::Mastercard);
        }
        if in_range(4, 6304, 6304)
            || in_range(4, 6759, 6759)
            || in_range(4, 6761, 6763)
            || in_range(2, 50, 50)
            || in_range(2, 56, 58)
        {
            return Some(Brand::Maestro);
        }
        if in_range(2, 62, 62) || in_range(2, 81, 81) {
            return Some(Brand::UnionPay);
        }
        if in_range(1, 4, 4) {
            return Some(Brand::Visa);
        }
        None
    }
}

/// Whether a digit string passes the Luhn check (ISO/IEC 7812-1).
pub fn luhn_valid(digits: &str) -> bool {
    let mut sum = 0u32;
    for (i, byte) in digits.bytes().rev().enumerate() {
        if !byte.is_ascii_digit() {
            return false;
        }
        let mut d = u32::from(byte - b'0');
        if i % 2 == 1 {
            d *= 2;
            if d > 9 {
                d -= 9;
            }
        }
        sum += d;
    }
    !digits.is_empty() && sum.is_multiple_of(10)
}

/// Why a card number was refused. Never carries the number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CardError {
    /// Not 12 to 19 digits (spaces and dashes between digit groups are allowed).
    #[error("must be 12 to 19 digits")]
    Shape,
    /// The check digit is wrong.
    #[error("fails the Luhn check")]
    Luhn,
    /// No known brand starts this way, or the length does not fit the brand.
    #[error("is not a number of a supported card brand")]
    Brand,
}

/// Numbers shorter than this show only their last 4 digits.
pub const SHOW_FIRST6_FROM: usize = 16;

/// Fewest possible values of the digits a format-preserving token hides (those between the first
/// 6 and the last 4): 10^6, so cards of 16 digits or more.
pub const MIN_HIDDEN_SPACE: u64 = 1_000_000;

/// A primary account number: valid by construction, masked in `Debug`, zeroized on drop.
pub struct Pan {
    digits: Secret<String>,
    brand: Brand,
}

impl fmt::Debug for Pan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pan({})", self.masked())
    }
}

impl Pan {
    /// Parses a card number. Spaces and dashes between digits are ignored.
    pub fn parse(input: &str) -> Result<Self, CardError> {
        let digits: String = input.chars().filter(|c| *c != ' ' && *c != '-').collect();
        let digits = Secret::new(digits);
        let text = digits.expose();
        if !(12..=19).contains(&text.len()) || !text.bytes().all(|b| b.is_ascii_digit()) {
            return Err(CardError::Shape);
        }
        if !luhn_valid(text) {
            return Err(CardError::Luhn);
        }
        let brand = Brand::of(text).ok_or(CardError::Brand)?;
        if !brand.lengths().contains(&text.len()) {
            return Err(CardError::Brand);
        }
        Ok(Self { digits, brand })
    }

    /// The brand.
    pub fn brand(&self) -> Brand {
        self.brand
    }

    /// The first six digits (the BIN), which PCI DSS allows to be shown with the last 4 when the
    /// number has at least 16 digits; `None` for a shorter number, which shows only its last 4.
    pub fn first6(&self) -> Option<&str> {
        let digits = self.digits.expose();
        if digits.len() < SHOW_FIRST6_FROM {
            return None;
        }
        digits.get(..6)
    }

    /// The last four digits.
    pub fn last4(&self) -> &str {
        let digits = self.digits.expose();
        digits.get(digits.len().saturating_sub(4)..).unwrap_or_default()
    }

    /// `424242******4242`: first 6, last 4, the rest masked; `***********0005` (last 4 only) for
    /// a number shorter than 16 digits.
    pub fn masked(&self) -> String {
        let len = self.digits.expose().len();
        match self.first6() {
            Some(first6) => format!("{first6}{}{}", "*".repeat(len.saturating_sub(10)), self.last4()),
            None => format!("{}{}", "*".repeat(len.saturating_sub(4)), self.last4()),
        }
    }

    /// The full number. Every call is a place where card data leaves the vault.
    pub fn expose_digits(&self) -> &str {
        self.digits.expose()
    }

    /// Possible values of the digits a format-preserving token hides (all but the first 6 and
    /// last 4).
    pub fn hidden_space(&self) -> u64 {
        let hidden = self.digits.expose().len().saturating_sub(10);
        10u64.saturating_pow(u32::try_from(hidden).unwrap_or(u32::MAX))
    }

    /// Whether a format-preserving token is safe for this number: it hides at least
    /// [`MIN_HIDDEN_SPACE`] values (so the number has 16 digits or more, and shows its first 6
    /// anyway).
    pub fn allows_format_preserving(&self) -> bool {
        self.hidden_space() >= MIN_HIDDEN_SPACE && self.first6().is_some()
    }

    /// A numeric token of the same length that keeps the first 6 and last 4 digits, has random
    /// digits between, and fails the Luhn check, so it can never pass for a card. Only for numbers
    /// that [allow it](Self::allows_format_preserving): callers check first.
    pub fn format_preserving_token(&self, entropy: &dyn Entropy) -> String {
        let digits = self.digits.expose();
        let len = digits.len();
        let first6 = digits.get(..6).unwrap_or_default();
        let middle_len = len.saturating_sub(10);
        let mut middle: Vec<u8> = (0..middle_len)
            .map(|_| {
                let mut byte = [0u8; 1];
                // Rejection sampling keeps the digits uniform.
                loop {
                    entropy.fill(&mut byte);
                    if byte[0] < 250 {
                        return b'0' + byte[0] % 10;
                    }
                }
            })
            .collect();
        let assemble = |middle: &[u8]| format!("{first6}{}{}", String::from_utf8_lossy(middle), self.last4());
        let mut token = assemble(&middle);
        if luhn_valid(&token) {
            // Changing one middle digit by one changes the Luhn sum by a non-multiple of 10 (by 1
            // or 2, or by 1 minus 10 when doubling wraps), so the result fails.
            if let Some(digit) = middle.first_mut() {
                *digit = if *digit == b'9' { b'0' } else { *digit + 1 };
            }
            token = assemble(&middle);
        }
        token
    }
}

/// A card's expiry month.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expiry {
    /// 1 to 12.
    pub month: u8,
    /// Four digits.
    pub year: u16,
}

/// Why an expiry was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ExpiryError {
    /// The month is not 1 to 12.
    #[error("month must be 1 to 12")]
    Month,
    /// The year is not a four-digit year within 50 years from now.
    #[error("year must be a four-digit year no more than 50 years ahead")]
    Year,
    /// The card has expired (a card is valid through the last day of its expiry month, UTC).
    #[error("the card has expired")]
    Expired,
}

impl Expiry {
    /// Checks an expiry against `now`.
    pub fn new(month: u8, year: u16, now: Timestamp) -> Result<Self, ExpiryError> {
        if !(1..=12).contains(&month) {
            return Err(ExpiryError::Month);
        }
        let (this_year, this_month) = year_month(now);
        if year < 1000 || u32::from(year) > u32::from(this_year) + 50 {
            return Err(ExpiryError::Year);
        }
        if (year, month) < (this_year, this_month) {
            return Err(ExpiryError::Expired);
        }
        Ok(Self { month, year })
    }
}

/// UTC year and month of a timestamp (civil-from-days, Howard Hinnant's algorithm).
fn year_month(t: Timestamp) -> (u16, u8) {
    let days = t.unix_millis().div_euclid(86_400_000);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (u16::try_from(year).unwrap_or(u16::MAX), u8::try_from(month).unwrap_or(1))
}

/// Checks a card verification code's shape for the brand (it is never stored).
pub fn cvc_valid(cvc: &str, brand: Brand) -> bool {
    cvc.len() == brand.cvc_length() && cvc.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use strongroom_types::OsEntropy;

    /// Test numbers published by the card networks and payment processors.
    const KNOWN: &[(&str, Brand)] = &[
        ("4242424242424242", Brand::Visa),
        ("4000056655665556", Brand::Visa),
        ("4222222222222", Brand::Visa),
        ("5555555555554444", Brand::Mastercard),
        ("2223003122003222", Brand::Mastercard),
        ("5200828282828210", Brand::Mastercard),
        ("378282246310005", Brand::Amex),
        ("371449635398431", Brand::Amex),
        ("6011111111111117", Brand::Discover),
        ("6011000990139424", Brand::Discover),
        ("3566002020360505", Brand::Jcb),
        ("6200000000000005", Brand::UnionPay),
        ("30569309025904", Brand::Diners),
        ("36227206271667", Brand::Diners),
        ("6759649826438453", Brand::Maestro),
    ];

    #[test]
    fn published_test_numbers_parse_with_their_brand() {
        for (number, brand) in KNOWN {
            let pan = Pan::parse(number).unwrap_or_else(|e| panic!("{number}: {e}"));
            assert_eq!(pan.brand(), *brand, "{number}");
        }
        assert_eq!(Pan::parse("4242 4242 4242 4242").map(|p| p.brand()), Ok(Brand::Visa));
        assert_eq!(Pan::parse("4242-4242-4242-4242").map(|p| p.brand()), Ok(Brand::Visa));
    }

    #[test]
    fn refusals() {
        assert_eq!(Pan::parse("4242424242424241").err(), Some(CardError::Luhn));
        assert_eq!(Pan::parse("42424242").err(), Some(CardError::Shape));
        assert_eq!(Pan::parse("4242x24242424242").err(), Some(CardError::Shape));
        assert_eq!(Pan::parse("").err(), Some(CardError::Shape));
        assert_eq!(Pan::parse("9999999999999995").err(), Some(CardError::Brand));
        // Amex must be 15 digits.
        assert_eq!(Pan::parse("3782822463100052").err(), Some(CardError::Brand));
    }

    #[test]
    fn masking_shows_first6_and_last4_only() {
        let pan = Pan::parse("4242424242424242").unwrap();
        assert_eq!(pan.masked(), "424242******4242");
        assert_eq!(format!("{pan:?}"), "Pan(424242******4242)");
        assert_eq!(pan.first6(), Some("424242"));
    }

    #[test]
    fn numbers_under_16_digits_show_only_their_last4() {
        for (number, masked) in [
            ("378282246310005", "***********0005"),
            ("36227206271667", "**********1667"),
            ("4222222222222", "*********2222"),
            ("501800000009", "********0009"),
        ] {
            let pan = Pan::parse(number).unwrap();
            assert_eq!(pan.first6(), None, "{number}");
            assert_eq!(pan.masked(), masked);
            assert!(!format!("{pan:?}").contains(&number[..6]));
            assert!(!pan.allows_format_preserving(), "{number}: {} hidden values", pan.hidden_space());
        }
        let nineteen = Pan::parse("4000000000000000006").unwrap();
        assert_eq!(nineteen.masked(), "400000*********0006");
        assert!(nineteen.allows_format_preserving());
        let sixteen = Pan::parse("4242424242424242").unwrap();
        assert_eq!(sixteen.hidden_space(), MIN_HIDDEN_SPACE);
        assert!(sixteen.allows_format_preserving());
    }

    #[test]
    fn cvc_and_expiry() {
        assert!(cvc_valid("123", Brand::Visa) && !cvc_valid("1234", Brand::Visa));
        assert!(cvc_valid("1234", Brand::Amex) && !cvc_valid("123", Brand::Amex));
        assert!(!cvc_valid("12a", Brand::Visa));
        let now = Timestamp::parse_rfc3339("2026-11-25T12:00:00Z").unwrap();
        assert!(Expiry::new(11, 2026, now).is_ok(), "valid through the end of its month");
        assert_eq!(Expiry::new(10, 2026, now), Err(ExpiryError::Expired));
        assert_eq!(Expiry::new(13, 2027, now), Err(ExpiryError::Month));
        assert_eq!(Expiry::new(1, 27, now), Err(ExpiryError::Year));
        assert_eq!(Expiry::new(1, 2090, now), Err(ExpiryError::Year));
    }

    #[test]
    fn civil_dates() {
        for (text, expected) in [
            ("1970-01-01T00:00:00Z", (1970, 1)),
            ("2000-02-29T23:59:59Z", (2000, 2)),
            ("2026-12-31T23:59:59Z", (2026, 12)),
            ("2027-01-01T00:00:00Z", (2027, 1)),
        ] {
            assert_eq!(year_month(Timestamp::parse_rfc3339(text).unwrap()), expected, "{text}");
        }
    }

    fn with_check_digit(body: &str) -> String {
        (0..10).map(|d| format!("{body}{d}")).find(|n| luhn_valid(n)).unwrap()
    }

    proptest! {
        #[test]
        fn exactly_one_check_digit_is_valid(body in "[0-9]{11,18}") {
            let valid = (0..10).filter(|d| luhn_valid(&format!("{body}{d}"))).count();
            prop_assert_eq!(valid, 1);
        }

        #[test]
        fn any_single_digit_change_breaks_luhn(body in "4[0-9]{14}", position in 0usize..16, delta in 1u8..10) {
            let number = with_check_digit(&body);
            let mut bytes = number.clone().into_bytes();
            let i = position % bytes.len();
            bytes[i] = b'0' + (bytes[i] - b'0' + delta) % 10;
            prop_assert!(!luhn_valid(&String::from_utf8(bytes).unwrap()));
        }

        #[test]
        fn masks_never_show_the_middle(body in "4[0-9]{14}") {
            let number = with_check_digit(&body);
            let pan = Pan::parse(&number).unwrap();
            let masked = pan.masked();
            prop_assert_eq!(masked.len(), number.len());
            prop_assert_eq!(&masked[..6], &number[..6]);
            prop_assert_eq!(&masked[12..], &number[12..]);
            prop_assert!(masked[6..12].bytes().all(|b| b == b'*'));
        }

        /// At every length (Maestro takes 12 to 19 digits): the last 4 below 16 digits, the first
        /// 6 and last 4 from 16, never a digit of the middle.
        #[test]
        fn masks_show_what_pci_dss_allows(body in "50[0-9]{9,16}") {
            let number = with_check_digit(&body);
            let pan = Pan::parse(&number).unwrap();
            let masked = pan.masked();
            let len = number.len();
            prop_assert_eq!(masked.len(), len);
            let shown_from_start = if len < 16 { 0 } else { 6 };
            prop_assert_eq!(&masked[..shown_from_start], &number[..shown_from_start]);
            prop_assert!(masked[shown_from_start..len - 4].bytes().all(|b| b == b'*'));
            prop_assert_eq!(&masked[len - 4..], &number[len - 4..]);
            prop_assert_eq!(pan.allows_format_preserving(), len >= 16);
        }

        #[test]
        fn format_preserving_tokens_keep_the_ends_and_fail_luhn(body in "(4[0-9]{14}|5[1-5][0-9]{13}|3[47][0-9]{12})") {
            let number = with_check_digit(&body);
            let Ok(pan) = Pan::parse(&number) else { return Ok(()) };
            if !pan.allows_format_preserving() {
                prop_assert!(number.len() < 16);
                return Ok(());
            }
            let token = pan.format_preserving_token(&OsEntropy);
            prop_assert_eq!(token.len(), number.len());
            prop_assert_eq!(&token[..6], &number[..6]);
            prop_assert_eq!(&token[token.len() - 4..], &number[number.len() - 4..]);
            prop_assert!(!luhn_valid(&token));
            prop_assert!(Pan::parse(&token).is_err());
        }
    }
}
