//! Card numbers through side doors: the one check every free-text or reference field outside the
//! vault's values goes through (reveal reasons, customer references, names, labels and
//! descriptions, metadata, `Idempotency-Key` values…). Such fields are stored in clear, echoed
//! back, and some (a reveal reason) end up in the append-only audit log beyond the reach of
//! erasure, so a card number must never get in through them.
//!
//! A text holds a card number when a run of its digits, read with single spaces or dashes between
//! digits ignored, is a number the vault itself would accept as a card: 12 to 19 digits, a card
//! brand's prefix and length, and a valid Luhn check digit ([`Pan::parse`]). Any stretch of
//! consecutive digit groups counts (`card 4242 4242 4242 4242 123` is caught though the whole run
//! has 19 digits), but an unbroken run of more than 19 digits is a long number, not a card. A
//! canonical UUID (`8-4-4-4-12` hexadecimal digits, not inside a longer hexadecimal run) is one
//! identifier, not digit groups: about one random UUID in 2,000 would otherwise read as a card.
//! The same scan masks the card numbers in what a payment gateway answers to a forward
//! ([`mask_card_numbers`], `crate::forward`).
//! Must never: echo the text or the number found in it.

use serde_json::{Map, Value};

use crate::error::{DomainError, FieldError};
use crate::vault::card::Pan;

/// The stable problem code (422).
pub const CODE: &str = "card_number_in_free_text";

/// What the field error says (never the value).
pub const DETAIL: &str = "must not hold a card number (12 to 19 digits of a card brand that pass the Luhn check, \
                          with or without spaces or dashes): card numbers belong in the vault";

/// Whether `text` holds something that reads as a card number.
pub fn holds_card_number(text: &str) -> bool {
    let mut found = false;
    scan(text.as_bytes(), |_, _| {
        found = true;
        false
    });
    found
}

/// `bytes` with every card number in it (as [`holds_card_number`] finds them) replaced by its
/// masked form ([`Pan::masked`]: at most the first 6 and last 4 digits, the separators dropped).
/// Used on what comes back from a payment gateway; bytes that are not card numbers are kept as
/// they are, so a JSON or form body stays what it was.
pub fn mask_card_numbers(bytes: &[u8]) -> Vec<u8> {
    let mut spans: Vec<(usize, usize)> = Vec::new();
    scan(bytes, |from, to| {
        spans.push((from, to));
        true
    });
    if spans.is_empty() {
        return bytes.to_vec();
    }
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0;
    for (from, to) in spans {
        out.extend_from_slice(bytes.get(at..from).unwrap_or_default());
        let digits: String = bytes.get(from..to).unwrap_or_default().iter().map(|b| char::from(*b)).collect();
        let masked = Pan::parse(&digits).map(|pan| pan.masked()).unwrap_or_else(|_| "*".repeat(digits.len()));
        out.extend_from_slice(masked.as_bytes());
        at = to;
    }
    out.extend_from_slice(bytes.get(at..).unwrap_or_default());
    out
}

/// Calls `found(from, to)` with the byte span of each card number in `bytes` (from its first
/// digit to its last, separators included), left to right and without overlaps, as long as
/// `found` returns true. In a run of digit groups the longest card number starting at a group is
/// taken, so a 19-digit number is not cut at a 16-digit prefix that happens to pass.
fn scan(bytes: &[u8], mut found: impl FnMut(usize, usize) -> bool) {
    let in_uuid = uuid_positions(bytes);
    let digit = |i: usize| bytes.get(i).is_some_and(u8::is_ascii_digit) && !in_uuid.get(i).copied().unwrap_or(false);
    let mut i = 0;
    while i < bytes.len() {
        if !digit(i) {
            i += 1;
            continue;
        }
        // The digit groups of one run: digits, joined by single spaces or dashes.
        let mut groups: Vec<(usize, usize)> = Vec::new();
        let mut start = i;
        let mut end = i;
        loop {
            while digit(end) {
                end += 1;
            }
            groups.push((start, end));
            let joined = matches!(bytes.get(end), Some(b' ' | b'-')) && digit(end + 1);
            if !joined {
                break;
            }
            start = end + 1;
            end = start;
        }
        let mut first = 0;
        while first < groups.len() {
            let mut digits = String::new();
            let mut longest: Option<usize> = None;
            for (k, &(from, to)) in groups.iter().enumerate().skip(first) {
                digits.extend(bytes.get(from..to).unwrap_or_default().iter().map(|b| char::from(*b)));
                if digits.len() > 19 {
                    break;
                }
                if digits.len() >= 12 && Pan::parse(&digits).is_ok() {
                    longest = Some(k);
                }
            }
            match longest {
                Some(last) => {
                    let (Some(&(from, _)), Some(&(_, to))) = (groups.get(first), groups.get(last)) else { break };
                    if !found(from, to) {
                        return;
                    }
                    first = last + 1;
                }
                None => first += 1,
            }
        }
        i = end;
    }
}

/// Marks the bytes of canonical UUIDs that are not part of a longer hexadecimal run.
fn uuid_positions(bytes: &[u8]) -> Vec<bool> {
    const LEN: usize = 36;
    let mut marked = vec![false; bytes.len()];
    if bytes.len() < LEN {
        return marked;
    }
    for start in 0..=bytes.len() - LEN {
        let Some(window) = bytes.get(start..start + LEN) else { break };
        let shaped = window
            .iter()
            .enumerate()
            .all(|(k, b)| if matches!(k, 8 | 13 | 18 | 23) { *b == b'-' } else { b.is_ascii_hexdigit() });
        let before = start.checked_sub(1).and_then(|k| bytes.get(k));
        let after = bytes.get(start + LEN);
        if shaped && !before.is_some_and(u8::is_ascii_hexdigit) && !after.is_some_and(u8::is_ascii_hexdigit) {
            marked.iter_mut().skip(start).take(LEN).for_each(|m| *m = true);
        }
    }
    marked
}

/// The field error for a field that holds a card number.
pub fn field_error(pointer: impl Into<String>) -> FieldError {
    FieldError::new(pointer, DETAIL)
}

/// The 422 for fields that hold card numbers.
pub fn rejection(errors: Vec<FieldError>) -> DomainError {
    DomainError::Rejected { code: CODE, errors }
}

/// Checks one field.
pub fn check(pointer: &str, text: &str) -> Result<(), DomainError> {
    check_all([(pointer, text)])
}

/// Checks several fields, naming every one that holds a card number.
pub fn check_all<'a>(fields: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<(), DomainError> {
    let errors: Vec<FieldError> = fields
        .into_iter()
        .filter(|(_, text)| holds_card_number(text))
        .map(|(pointer, _)| field_error(pointer))
        .collect();
    if errors.is_empty() { Ok(()) } else { Err(rejection(errors)) }
}

/// The first place in an object's keys or string values (at any depth) that holds a card number:
/// a value is named by its pointer, a key by the object that holds it (so the pointer never
/// repeats the number).
pub fn find_in_object(pointer: &str, object: &Map<String, Value>) -> Option<FieldError> {
    if object.keys().any(|key| holds_card_number(key)) {
        return Some(field_error(pointer));
    }
    object.iter().find_map(|(key, value)| find_in_value(&format!("{pointer}/{}", escape_pointer(key)), value))
}

fn find_in_value(pointer: &str, value: &Value) -> Option<FieldError> {
    match value {
        Value::String(text) => holds_card_number(text).then(|| field_error(pointer)),
        Value::Object(object) => find_in_object(pointer, object),
        Value::Array(items) => items.iter().enumerate().find_map(|(i, v)| find_in_value(&format!("{pointer}/{i}"), v)),
        _ => None,
    }
}

/// RFC 6901 escaping of one reference token.
fn escape_pointer(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    /// Published test numbers of several brands and lengths (12 to 19 digits).
    const CARDS: &[&str] = &[
        "4242424242424242",
        "4111111111111111",
        "5555555555554444",
        "378282246310005",
        "36227206271667",
        "6011111111111117",
        "4222222222222",
        "6759649826438453",
        "4000000000000000006",
        "501800000009",
    ];

    #[test]
    fn card_numbers_are_found_in_any_layout() {
        for card in CARDS {
            assert!(Pan::parse(card).is_ok(), "{card} is a test card");
            let spaced: String = card
                .chars()
                .enumerate()
                .flat_map(|(i, c)| (i > 0 && i % 4 == 0).then_some(' ').into_iter().chain([c]))
                .collect();
            let dashed = spaced.replace(' ', "-");
            for text in [
                (*card).to_owned(),
                spaced,
                dashed,
                format!("customer asked, card {card}, please check"),
                format!("cus_{card}"),
                format!("ref:{card}."),
                format!("x{card}y"),
                format!("{card} 123"),
                format!("2024 {card}"),
            ] {
                assert!(holds_card_number(&text), "{text}");
            }
        }
    }

    #[test]
    fn ordinary_text_passes() {
        for text in [
            "",
            "customer_support",
            "order 1234 of 2024-05-01",
            "+44 20 7946 0958",
            "4242424242424241",         // wrong check digit
            "424242424242424242424242", // a long number, not a card
            "9999999999999995",         // no brand starts with 99
            "12345678901",              // 11 digits
            "4242.4242.4242.4242",      // dots do not join groups
            "550e8400-e29b-41d4-a716-446655440000",
            "idem-42424242-4242-4242-4242-424242424242",
            "Work laptop (2023)",
        ] {
            assert!(!holds_card_number(text), "{text}");
        }
        // Digits beside a UUID still count when the UUID is not a UUID after all.
        assert!(holds_card_number("4242424242424242-4242-4242-4242-424242424242"));
    }

    #[test]
    fn card_numbers_are_masked_and_nothing_else_changes() {
        let body = br#"{"card":"4242 4242 4242 4242","amex":"378282246310005","id":"ch_1","amount":4242,"long":"4000000000000000006"}"#;
        let masked = String::from_utf8(mask_card_numbers(body)).unwrap();
        assert_eq!(
            masked,
            r#"{"card":"424242******4242","amex":"***********0005","id":"ch_1","amount":4242,"long":"400000*********0006"}"#
        );
        assert!(!holds_card_number(&masked));
        let plain = b"order 1234 of 2024-05-01, uuid 550e8400-e29b-41d4-a716-446655440000";
        assert_eq!(mask_card_numbers(plain), plain.to_vec());
        assert_eq!(
            mask_card_numbers(b"a=4111-1111-1111-1111&b=4111111111111111"),
            b"a=411111******1111&b=411111******1111"
        );
    }

    #[test]
    fn errors_name_fields_not_values() {
        let Err(DomainError::Rejected { code, errors }) =
            check_all([("/name", "fine"), ("/description", "card 4242 4242 4242 4242")])
        else {
            panic!("expected a rejection")
        };
        assert_eq!(code, CODE);
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].pointer, "/description");
        assert!(!errors[0].detail.contains("4242"));
        assert!(check("/name", "fine").is_ok());

        let metadata = json!({"order": "o_1", "note": {"lines": ["x", "4111 1111 1111 1111"]}});
        let found = find_in_object("/metadata", metadata.as_object().unwrap()).unwrap();
        assert_eq!(found.pointer, "/metadata/note/lines/1");
        let keyed = json!({"4111111111111111": "x"});
        assert_eq!(find_in_object("/metadata", keyed.as_object().unwrap()).unwrap().pointer, "/metadata");
        assert!(find_in_object("/metadata", json!({"a": 4_111_111_111_111_111_u64}).as_object().unwrap()).is_none());
    }

    /// A Luhn-valid number of a brand: a prefix, random digits, and the check digit.
    fn card_strategy() -> impl Strategy<Value = String> {
        let shapes = prop_oneof![
            Just(("4", 16usize)),
            Just(("4", 13)),
            Just(("4", 19)),
            Just(("51", 16)),
            Just(("2221", 16)),
            Just(("34", 15)),
            Just(("37", 15)),
            Just(("36", 14)),
            Just(("6011", 16)),
            Just(("3528", 19)),
            Just(("50", 12)),
            Just(("62", 17)),
        ];
        (shapes, proptest::collection::vec(0u8..10, 19)).prop_map(|((prefix, len), random)| {
            let mut body: String = prefix.to_owned();
            for d in random.iter().take(len - 1 - prefix.len()) {
                body.push(char::from(b'0' + d));
            }
            (0..10).map(|d| format!("{body}{d}")).find(|n| crate::vault::card::luhn_valid(n)).unwrap_or_default()
        })
    }

    proptest! {
        /// Any card number, with single spaces or dashes anywhere between its digits, inside any
        /// text that does not glue further digits to it, is found.
        #[test]
        fn every_card_number_is_found(
            card in card_strategy(),
            separators in proptest::collection::vec(prop_oneof![Just(""), Just(" "), Just("-")], 19),
            before in "[a-zA-Z _.:,;/()]{0,12}",
            after in "[a-zA-Z _.:,;/()]{0,12}",
        ) {
            prop_assert!(Pan::parse(&card).is_ok());
            let mut text = before.clone();
            for (i, c) in card.chars().enumerate() {
                if i > 0 {
                    text.push_str(separators[i]);
                }
                text.push(c);
            }
            text.push_str(&after);
            prop_assert!(holds_card_number(&text), "{}", text);
            let masked = String::from_utf8(mask_card_numbers(text.as_bytes())).unwrap_or_default();
            prop_assert!(!holds_card_number(&masked), "{}", masked);
            prop_assert!(!masked.contains(&card), "{}", masked);
        }

        /// Text with fewer than 12 digits in total never trips the check.
        #[test]
        fn short_digit_runs_pass(text in "([a-z -]{0,5}[0-9]){0,11}[a-z -]{0,5}") {
            prop_assert!(!holds_card_number(&text));
        }

        /// A number that fails the Luhn check is never taken for a card.
        #[test]
        fn luhn_failures_pass(card in card_strategy(), delta in 1u8..10, before in "[a-z _]{0,8}") {
            let mut bytes = card.into_bytes();
            if let Some(last) = bytes.last_mut() {
                *last = b'0' + (*last - b'0' + delta) % 10;
            }
            let number = String::from_utf8(bytes).unwrap_or_default();
            let text = format!("{before}{number}");
            prop_assert!(!holds_card_number(&text));
        }
    }
}
