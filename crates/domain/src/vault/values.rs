//! The kinds of value the vault holds and the rules for each: validation, the plaintext that gets
//! encrypted (the value as given), the normalized form that gets fingerprinted, and the masked
//! forms that may be shown without a reveal.
//!
//! Normalization serves fingerprints (search, dedupe) and validation only: a reveal returns the
//! value as the shop sent it (`Jane.Doe@Example.com`, `+49 (30) 1234-0958`, `de89 3704 …`, an
//! address with its own spacing and case), byte for byte as JSON. The one exception is a card's
//! number, which is kept as its digits: spaces and dashes in a PAN are presentation (ISO/IEC 7812
//! defines the number as digits, and every gateway takes digits), so a revealed card answers
//! `4242424242424242` for `4242 4242-4242 4242`; its other fields (expiry, holder name) are kept
//! as given. The normalized forms, which are what fingerprints and dedupe compare: a card's digits;
//! an IBAN without whitespace, in upper case; an email with its domain and local part in lower
//! case; a phone as `+` and its digits; a name trimmed, its whitespace collapsed, in lower case; an
//! address's fields trimmed and its country in upper case, as sorted JSON in lower case; a JSON
//! object as sorted JSON. Values stored before reveals kept the given form (issue 13) were sealed
//! normalized; they reveal as stored, and every function here accepts either form.
//!
//! Kinds: `card` (`{number, exp_month, exp_year, cvc?, holder_name?}`), `bank_account` (an IBAN),
//! `email`, `phone` (E.164), `address` (`{line1, line2?, city, region?, postal_code?, country}`),
//! `name`, and `json` (any object).
//! Must never: put a rejected value, or any part of an accepted one beyond what its masked form
//! shows, into an error, a log line or the display metadata.

use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::{Map, Value, json};
use strongroom_types::{Secret, Timestamp};

use crate::error::FieldError;
use crate::vault::card::{CardError, Expiry, ExpiryError, Pan, cvc_valid};

/// Largest accepted value: its canonical JSON form, in bytes.
pub const MAX_VALUE_BYTES: usize = 4096;

/// What a token stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ValueKind {
    /// A payment card.
    Card,
    /// A bank account by IBAN.
    BankAccount,
    /// An email address.
    Email,
    /// A phone number.
    Phone,
    /// A postal address.
    Address,
    /// A person's name.
    Name,
    /// Any JSON object.
    Json,
}

impl ValueKind {
    /// Every kind.
    pub const ALL: &'static [ValueKind] = &[
        ValueKind::Card,
        ValueKind::BankAccount,
        ValueKind::Email,
        ValueKind::Phone,
        ValueKind::Address,
        ValueKind::Name,
        ValueKind::Json,
    ];

    /// The stable name.
    pub const fn as_str(self) -> &'static str {
        match self {
            ValueKind::Card => "card",
            ValueKind::BankAccount => "bank_account",
            ValueKind::Email => "email",
            ValueKind::Phone => "phone",
            ValueKind::Address => "address",
            ValueKind::Name => "name",
            ValueKind::Json => "json",
        }
    }

    /// Parses a stable name.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|k| k.as_str() == text)
    }

    /// Whether a plain reveal needs `vault:reveal:card` (cards and bank accounts) rather than
    /// `vault:reveal:pii`.
    pub const fn is_payment_data(self) -> bool {
        matches!(self, ValueKind::Card | ValueKind::BankAccount)
    }
}

/// A value that passed its rules, ready to be sealed.
#[derive(Debug)]
pub struct Prepared {
    /// Its kind.
    pub kind: ValueKind,
    /// JSON of the value as given (for a card: its number as digits, and without the CVC), to be
    /// encrypted; what a reveal returns.
    pub plaintext: Secret<Vec<u8>>,
    /// The normalized form the fingerprint is computed over.
    pub normalized: Secret<String>,
    /// Non-sensitive display metadata (for a card: brand, first 6, last 4, expiry).
    pub display: Map<String, Value>,
    /// The card's verification code, held only in memory.
    pub cvc: Option<Secret<String>>,
    /// The card number, for a format-preserving token.
    pub pan: Option<Pan>,
}

/// Why a value was refused: a stable problem code and the field, never the value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValueError {
    /// Stable code, e.g. `invalid_card_number`.
    pub code: &'static str,
    /// Where and what.
    pub field: FieldError,
}

impl ValueError {
    fn new(code: &'static str, pointer: String, detail: impl Into<String>) -> Self {
        Self { code, field: FieldError::new(pointer, detail) }
    }
}

fn text<'a>(value: &'a Value, pointer: &str, code: &'static str) -> Result<&'a str, ValueError> {
    value.as_str().ok_or_else(|| ValueError::new(code, pointer.to_owned(), "must be a string"))
}

fn no_control(text: &str) -> bool {
    !text.chars().any(char::is_control)
}

/// Checks `value` against the rules of `kind` at `now`. `pointer` names the value in the request
/// (`/value`, or `/items/3/value` in a batch).
pub fn prepare(kind: ValueKind, value: &Value, now: Timestamp, pointer: &str) -> Result<Prepared, ValueError> {
    let size = serde_json::to_vec(value).map(|v| v.len()).unwrap_or(usize::MAX);
    if size > MAX_VALUE_BYTES {
        return Err(ValueError::new(
            "value_too_large",
            pointer.to_owned(),
            format!("must be at most {MAX_VALUE_BYTES} bytes as JSON"),
        ));
    }
    match kind {
        ValueKind::Card => card(value, now, pointer),
        ValueKind::BankAccount => bank_account(value, pointer),
        ValueKind::Email => email(value, pointer),
        ValueKind::Phone => phone(value, pointer),
        ValueKind::Address => address(value, pointer),
        ValueKind::Name => name(value, pointer),
        ValueKind::Json => json_object(value, pointer),
    }
}

/// A value of one string: sealed as `given`, fingerprinted as `normalized`.
fn simple(kind: ValueKind, given: &Value, normalized: String, display: Map<String, Value>) -> Prepared {
    let plaintext = serde_json::to_vec(given).unwrap_or_default();
    Prepared {
        kind,
        plaintext: Secret::new(plaintext),
        normalized: Secret::new(normalized),
        display,
        cvc: None,
        pan: None,
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CardInput {
    number: Value,
    exp_month: Value,
    exp_year: Value,
    #[serde(default)]
    cvc: Option<Value>,
    #[serde(default)]
    holder_name: Option<Value>,
}

fn card(value: &Value, now: Timestamp, pointer: &str) -> Result<Prepared, ValueError> {
    let input: CardInput = serde_json::from_value(value.clone()).map_err(|_| {
        ValueError::new(
            "validation_failed",
            pointer.to_owned(),
            "must be an object {number, exp_month, exp_year, cvc?, holder_name?}",
        )
    })?;
    let number_at = format!("{pointer}/number");
    let number = text(&input.number, &number_at, "invalid_card_number")?;
    let pan = Pan::parse(number)
        .map_err(|err| ValueError::new("invalid_card_number", number_at.clone(), card_error_detail(err)))?;
    let month = input
        .exp_month
        .as_u64()
        .and_then(|m| u8::try_from(m).ok())
        .ok_or_else(|| ValueError::new("invalid_expiry", format!("{pointer}/exp_month"), "must be 1 to 12"))?;
    let year =
        input.exp_year.as_u64().and_then(|y| u16::try_from(y).ok()).ok_or_else(|| {
            ValueError::new("invalid_expiry", format!("{pointer}/exp_year"), "must be a four-digit year")
        })?;
    let expiry = Expiry::new(month, year, now).map_err(|err| match err {
        ExpiryError::Month => ValueError::new("invalid_expiry", format!("{pointer}/exp_month"), err.to_string()),
        ExpiryError::Year => ValueError::new("invalid_expiry", format!("{pointer}/exp_year"), err.to_string()),
        ExpiryError::Expired => ValueError::new("card_expired", format!("{pointer}/exp_year"), err.to_string()),
    })?;
    let cvc = match &input.cvc {
        None | Some(Value::Null) => None,
        Some(cvc) => {
            let at = format!("{pointer}/cvc");
            let cvc = text(cvc, &at, "invalid_cvc")?;
            if !cvc_valid(cvc, pan.brand()) {
                let detail = format!("must be {} digits for this brand", pan.brand().cvc_length());
                return Err(ValueError::new("invalid_cvc", at, detail));
            }
            Some(Secret::new(cvc.to_owned()))
        }
    };
    let holder = match &input.holder_name {
        None | Some(Value::Null) => None,
        Some(holder) => {
            let at = format!("{pointer}/holder_name");
            let given = text(holder, &at, "validation_failed")?;
            let trimmed = given.trim();
            if trimmed.is_empty() || trimmed.chars().count() > 200 || !no_control(trimmed) {
                return Err(ValueError::new("validation_failed", at, "must be 1 to 200 printable characters"));
            }
            // Kept as given; only the check trims.
            Some(given.to_owned())
        }
    };
    let plaintext = json!({
        "number": pan.expose_digits(),
        "exp_month": expiry.month,
        "exp_year": expiry.year,
        "holder_name": holder,
    });
    let mut display = Map::new();
    display.insert("brand".into(), pan.brand().as_str().into());
    // A number under 16 digits shows its last 4 only (PCI DSS 3.4.1; see `card`).
    if let Some(first6) = pan.first6() {
        display.insert("first6".into(), first6.into());
    }
    display.insert("last4".into(), pan.last4().into());
    display.insert("exp_month".into(), expiry.month.into());
    display.insert("exp_year".into(), expiry.year.into());
    Ok(Prepared {
        kind: ValueKind::Card,
        plaintext: Secret::new(serde_json::to_vec(&plaintext).unwrap_or_default()),
        normalized: Secret::new(pan.expose_digits().to_owned()),
        display,
        cvc,
        pan: Some(pan),
    })
}

/// A card to search for: the number is what a card's fingerprint is made of; the expiry and the
/// rest are accepted (earlier clients sent them) and ignored.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CardSearchInput {
    number: Value,
    #[serde(default, rename = "exp_month")]
    _exp_month: Option<IgnoredAny>,
    #[serde(default, rename = "exp_year")]
    _exp_year: Option<IgnoredAny>,
    #[serde(default, rename = "cvc")]
    _cvc: Option<IgnoredAny>,
    #[serde(default, rename = "holder_name")]
    _holder_name: Option<IgnoredAny>,
}

/// The normalized form a search for `value` looks up (by fingerprint): for a card its number
/// alone (`{number}`; `exp_month`, `exp_year`, `cvc` and `holder_name` may come along and are
/// ignored), for the other kinds the value checked as [`prepare`] checks it.
pub fn search_normalized(
    kind: ValueKind,
    value: &Value,
    now: Timestamp,
    pointer: &str,
) -> Result<Secret<String>, ValueError> {
    if kind != ValueKind::Card {
        return prepare(kind, value, now, pointer).map(|prepared| prepared.normalized);
    }
    let input: CardSearchInput = serde_json::from_value(value.clone()).map_err(|_| {
        ValueError::new(
            "validation_failed",
            pointer.to_owned(),
            "must be an object {number} (exp_month, exp_year optional)",
        )
    })?;
    let number_at = format!("{pointer}/number");
    let pan = Pan::parse(text(&input.number, &number_at, "invalid_card_number")?)
        .map_err(|err| ValueError::new("invalid_card_number", number_at.clone(), card_error_detail(err)))?;
    Ok(Secret::new(pan.expose_digits().to_owned()))
}

fn card_error_detail(err: CardError) -> &'static str {
    match err {
        CardError::Shape => "must be 12 to 19 digits",
        CardError::Luhn => "is not a valid card number (check digit)",
        CardError::Brand => "is not a number of a supported card brand",
    }
}

/// IBAN lengths by country (SWIFT IBAN registry).
const IBAN_LENGTHS: &[(&str, usize)] = &[
    ("AD", 24),
    ("AE", 23),
    ("AL", 28),
    ("AT", 20),
    ("AZ", 28),
    ("BA", 20),
    ("BE", 16),
    ("BG", 22),
    ("BH", 22),
    ("BR", 29),
    ("BY", 28),
    ("CH", 21),
    ("CR", 22),
    ("CY", 28),
    ("CZ", 24),
    ("DE", 22),
    ("DK", 18),
    ("DO", 28),
    ("EE", 20),
    ("EG", 29),
    ("ES", 24),
    ("FI", 18),
    ("FO", 18),
    ("FR", 27),
    ("GB", 22),
    ("GE", 22),
    ("GI", 23),
    ("GL", 18),
    ("GR", 27),
    ("GT", 28),
    ("HR", 21),
    ("HU", 28),
    ("IE", 22),
    ("IL", 23),
    ("IQ", 23),
    ("IS", 26),
    ("IT", 27),
    ("JO", 30),
    ("KW", 30),
    ("KZ", 20),
    ("LB", 28),
    ("LC", 32),
    ("LI", 21),
    ("LT", 20),
    ("LU", 20),
    ("LV", 21),
    ("MC", 27),
    ("MD", 24),
    ("ME", 22),
    ("MK", 19),
    ("MR", 27),
    ("MT", 31),
    ("MU", 30),
    ("NL", 18),
    ("NO", 15),
    ("PK", 24),
    ("PL", 28),
    ("PS", 29),
    ("PT", 25),
    ("QA", 29),
    ("RO", 24),
    ("RS", 22),
    ("SA", 24),
    ("SC", 31),
    ("SE", 24),
    ("SI", 19),
    ("SK", 24),
    ("SM", 27),
    ("ST", 25),
    ("SV", 28),
    ("TL", 23),
    ("TN", 24),
    ("TR", 26),
    ("UA", 29),
    ("VA", 22),
    ("VG", 24),
    ("XK", 20),
];

/// Whether an IBAN (upper case, no spaces) has its country's length and a valid ISO 7064
/// MOD 97-10 check.
pub fn iban_valid(iban: &str) -> bool {
    let bytes = iban.as_bytes();
    if bytes.len() < 15 || !bytes.iter().all(u8::is_ascii_alphanumeric) {
        return false;
    }
    let Some(country) = iban.get(..2) else { return false };
    if !IBAN_LENGTHS.iter().any(|(c, len)| *c == country && *len == bytes.len()) {
        return false;
    }
    if !bytes.get(2..4).is_some_and(|d| d.iter().all(u8::is_ascii_digit)) {
        return false;
    }
    let rearranged = bytes.iter().skip(4).chain(bytes.iter().take(4));
    let mut remainder = 0u32;
    for &b in rearranged {
        let value = if b.is_ascii_digit() { u32::from(b - b'0') } else { u32::from(b - b'A') + 10 };
        remainder = if value >= 10 { (remainder * 100 + value) % 97 } else { (remainder * 10 + value) % 97 };
    }
    remainder == 1
}

fn bank_account(value: &Value, pointer: &str) -> Result<Prepared, ValueError> {
    let raw = text(value, pointer, "invalid_iban")?;
    let iban: String = raw.chars().filter(|c| !c.is_whitespace()).collect::<String>().to_ascii_uppercase();
    if !iban_valid(&iban) {
        return Err(ValueError::new(
            "invalid_iban",
            pointer.to_owned(),
            "is not a valid IBAN (country, length or check digits)",
        ));
    }
    let mut display = Map::new();
    display.insert("country".into(), iban.get(..2).unwrap_or_default().into());
    display.insert("last4".into(), iban.get(iban.len() - 4..).unwrap_or_default().into());
    Ok(simple(ValueKind::BankAccount, value, iban, display))
}

fn email(value: &Value, pointer: &str) -> Result<Prepared, ValueError> {
    let raw = text(value, pointer, "invalid_email")?.trim();
    let invalid = || ValueError::new("invalid_email", pointer.to_owned(), "is not a valid email address");
    let (local, domain) = raw.rsplit_once('@').ok_or_else(invalid)?;
    let domain = domain.to_ascii_lowercase();
    let local_ok = !local.is_empty()
        && local.len() <= 64
        && !local.contains('@')
        && local.chars().all(|c| !c.is_whitespace() && !c.is_control());
    let domain_ok = domain.len() <= 253
        && domain.contains('.')
        && domain.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || !c.is_ascii())
        });
    if !local_ok || !domain_ok || raw.len() > 254 {
        return Err(invalid());
    }
    let canonical = format!("{}@{domain}", local.to_lowercase());
    let first: String = local.chars().take(1).collect();
    let mut display = Map::new();
    display.insert("masked".into(), format!("{first}***@{domain}").into());
    Ok(simple(ValueKind::Email, value, canonical, display))
}

fn phone(value: &Value, pointer: &str) -> Result<Prepared, ValueError> {
    let raw = text(value, pointer, "invalid_phone")?.trim();
    let invalid =
        || ValueError::new("invalid_phone", pointer.to_owned(), "must be an E.164 number: + and 8 to 15 digits");
    let rest = raw.strip_prefix('+').ok_or_else(invalid)?;
    if !rest.chars().all(|c| c.is_ascii_digit() || matches!(c, ' ' | '-' | '(' | ')' | '.')) {
        return Err(invalid());
    }
    let digits: String = rest.chars().filter(char::is_ascii_digit).collect();
    if !(8..=15).contains(&digits.len()) || digits.starts_with('0') {
        return Err(invalid());
    }
    let last4 = digits.get(digits.len() - 4..).unwrap_or_default().to_owned();
    let mut display = Map::new();
    display.insert("masked".into(), format!("+{}{last4}", "*".repeat(digits.len() - 4)).into());
    display.insert("last4".into(), last4.into());
    Ok(simple(ValueKind::Phone, value, format!("+{digits}"), display))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddressInput {
    line1: Value,
    #[serde(default)]
    line2: Option<Value>,
    city: Value,
    #[serde(default)]
    region: Option<Value>,
    #[serde(default)]
    postal_code: Option<Value>,
    country: Value,
}

fn address(value: &Value, pointer: &str) -> Result<Prepared, ValueError> {
    let input: AddressInput = serde_json::from_value(value.clone()).map_err(|_| {
        ValueError::new(
            "invalid_address",
            pointer.to_owned(),
            "must be an object {line1, line2?, city, region?, postal_code?, country}",
        )
    })?;
    let field = |name: &str, value: &Value, required: bool| -> Result<Option<String>, ValueError> {
        let at = format!("{pointer}/{name}");
        match value {
            Value::Null if !required => Ok(None),
            Value::String(s) if !s.trim().is_empty() && s.chars().count() <= 200 && no_control(s) => {
                Ok(Some(s.trim().to_owned()))
            }
            _ => Err(ValueError::new("invalid_address", at, "must be 1 to 200 printable characters")),
        }
    };
    let line1 = field("line1", &input.line1, true)?;
    let line2 = field("line2", input.line2.as_ref().unwrap_or(&Value::Null), false)?;
    let city = field("city", &input.city, true)?;
    let region = field("region", input.region.as_ref().unwrap_or(&Value::Null), false)?;
    let postal_code = field("postal_code", input.postal_code.as_ref().unwrap_or(&Value::Null), false)?;
    let country = input.country.as_str().unwrap_or_default().to_ascii_uppercase();
    if !crate::vault::countries::is_country(&country) {
        return Err(ValueError::new(
            "invalid_address",
            format!("{pointer}/country"),
            "must be an assigned ISO 3166-1 alpha-2 country code",
        ));
    }
    let canonical = json!({
        "city": city, "country": country, "line1": line1, "line2": line2,
        "postal_code": postal_code, "region": region,
    });
    let normalized = canonical.to_string().to_lowercase();
    let mut display = Map::new();
    display.insert("country".into(), country.into());
    Ok(Prepared {
        kind: ValueKind::Address,
        plaintext: Secret::new(serde_json::to_vec(value).unwrap_or_default()),
        normalized: Secret::new(normalized),
        display,
        cvc: None,
        pan: None,
    })
}

fn name(value: &Value, pointer: &str) -> Result<Prepared, ValueError> {
    let raw = text(value, pointer, "validation_failed")?.trim();
    if raw.is_empty() || raw.chars().count() > 200 || !no_control(raw) {
        return Err(ValueError::new("validation_failed", pointer.to_owned(), "must be 1 to 200 printable characters"));
    }
    let mut display = Map::new();
    display.insert("masked".into(), mask_name(raw).into());
    let normalized = raw.split_whitespace().collect::<Vec<_>>().join(" ");
    let plaintext = serde_json::to_vec(value).unwrap_or_default();
    Ok(Prepared {
        kind: ValueKind::Name,
        plaintext: Secret::new(plaintext),
        normalized: Secret::new(normalized.to_lowercase()),
        display,
        cvc: None,
        pan: None,
    })
}

/// `J*** D***`: the first letter of each word.
fn mask_name(name: &str) -> String {
    name.split_whitespace()
        .map(|word| format!("{}***", word.chars().next().unwrap_or('*')))
        .collect::<Vec<_>>()
        .join(" ")
}

fn json_object(value: &Value, pointer: &str) -> Result<Prepared, ValueError> {
    if !value.is_object() {
        return Err(ValueError::new("validation_failed", pointer.to_owned(), "must be a JSON object"));
    }
    // serde_json's map is ordered by key, so this text is canonical for fingerprinting.
    let canonical = value.to_string();
    let mut display = Map::new();
    display.insert("fields".into(), value.as_object().map_or(0, Map::len).into());
    Ok(Prepared {
        kind: ValueKind::Json,
        plaintext: Secret::new(canonical.clone().into_bytes()),
        normalized: Secret::new(canonical),
        display,
        cvc: None,
        pan: None,
    })
}

/// The normalized form of a stored (decrypted) value, as [`prepare`] computed it: what a
/// fingerprint is recomputed from after the fingerprint key rotated. The value is normalized
/// again by its kind's rules, so a value stored as given and one stored normalized (before issue
/// 13) come to the same form. `None` for a plaintext that is not what the vault stores.
pub fn normalized_of_stored(kind: ValueKind, plaintext: &[u8]) -> Option<Secret<String>> {
    let value: Value = serde_json::from_slice(plaintext).ok()?;
    match kind {
        // Stored as digits either way; no expiry check (a stored card may have expired since).
        ValueKind::Card => Some(Secret::new(value["number"].as_str()?.chars().filter(char::is_ascii_digit).collect())),
        _ => prepare(kind, &value, Timestamp::from_unix_millis(0), "").ok().map(|prepared| prepared.normalized),
    }
}

/// The masked view of a decrypted value, as `POST …/reveal {view: "masked"}` shows it.
pub fn masked_view(kind: ValueKind, plaintext: &Value) -> Value {
    match kind {
        ValueKind::Card => {
            let number = plaintext["number"].as_str().unwrap_or_default();
            let masked = Pan::parse(number).map(|p| p.masked()).unwrap_or_else(|_| "****".into());
            json!({
                "number": masked,
                "exp_month": plaintext["exp_month"],
                "exp_year": plaintext["exp_year"],
                "holder_name": plaintext["holder_name"].as_str().map(mask_name),
            })
        }
        ValueKind::BankAccount => {
            // Stored as given (spaces, any case) or, before issue 13, compact in upper case.
            let iban: String =
                plaintext.as_str().unwrap_or_default().chars().filter(|c| !c.is_whitespace()).collect::<String>();
            let iban = iban.to_ascii_uppercase();
            let len = iban.len();
            Value::String(format!(
                "{}{}{}",
                iban.get(..2).unwrap_or_default(),
                "*".repeat(len.saturating_sub(6)),
                iban.get(len.saturating_sub(4)..).unwrap_or_default()
            ))
        }
        ValueKind::Email | ValueKind::Phone => {
            let kind_fn = if kind == ValueKind::Email { email } else { phone };
            kind_fn(plaintext, "").map(|p| p.display["masked"].clone()).unwrap_or_else(|_| "***".into())
        }
        ValueKind::Address => json!({
            "line1": "***",
            "city": plaintext["city"].as_str().map(str::trim),
            "country": plaintext["country"].as_str().map(str::to_ascii_uppercase),
        }),
        ValueKind::Name => Value::String(mask_name(plaintext.as_str().unwrap_or_default())),
        ValueKind::Json => {
            let keys: Map<String, Value> = plaintext
                .as_object()
                .map(|o| o.keys().map(|k| (k.clone(), Value::String("***".into()))).collect())
                .unwrap_or_default();
            Value::Object(keys)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn now() -> Timestamp {
        Timestamp::from_unix_millis(1_795_000_000_000) // 2026-11
    }

    #[test]
    fn cards_are_checked_and_masked() {
        let ok = prepare(
            ValueKind::Card,
            &json!({"number": "4242 4242 4242 4242", "exp_month": 12, "exp_year": 2030, "cvc": "123"}),
            now(),
            "/value",
        )
        .unwrap();
        assert_eq!(ok.display["brand"], "visa");
        assert_eq!(ok.display["last4"], "4242");
        assert!(ok.cvc.is_some());
        assert!(!String::from_utf8_lossy(ok.plaintext.expose()).contains("123\""), "no CVC in the plaintext");
        let bad = prepare(
            ValueKind::Card,
            &json!({"number": "4242424242424241", "exp_month": 12, "exp_year": 2030}),
            now(),
            "/value",
        )
        .unwrap_err();
        assert_eq!((bad.code, bad.field.pointer.as_str()), ("invalid_card_number", "/value/number"));
        assert!(!bad.field.detail.contains("4242"));
        let expired = prepare(
            ValueKind::Card,
            &json!({"number": "4242424242424242", "exp_month": 1, "exp_year": 2020}),
            now(),
            "/value",
        )
        .unwrap_err();
        assert_eq!(expired.code, "card_expired");
        let amex_cvc = prepare(
            ValueKind::Card,
            &json!({"number": "378282246310005", "exp_month": 1, "exp_year": 2030, "cvc": "123"}),
            now(),
            "/value",
        )
        .unwrap_err();
        assert_eq!(amex_cvc.code, "invalid_cvc");
    }

    #[test]
    fn ibans_follow_the_registry() {
        // Examples from the SWIFT IBAN registry.
        for iban in
            ["DE89370400440532013000", "GB29NWBK60161331926819", "FR1420041010050500013M02606", "NO9386011117947"]
        {
            assert!(iban_valid(iban), "{iban}");
        }
        assert!(!iban_valid("DE89370400440532013001"), "check digits");
        assert!(!iban_valid("DE8937040044053201300"), "length");
        assert!(!iban_valid("ZZ89370400440532013000"), "country");
        let prepared = prepare(ValueKind::BankAccount, &json!("de89 3704 0044 0532 0130 00"), now(), "/value").unwrap();
        assert_eq!(prepared.normalized.expose(), "DE89370400440532013000");
        assert_eq!(
            masked_view(ValueKind::BankAccount, &json!("DE89370400440532013000")),
            json!("DE****************3000")
        );
    }

    #[test]
    fn emails_phones_and_names_mask() {
        let e = prepare(ValueKind::Email, &json!("Jane.Doe@Example.com"), now(), "/value").unwrap();
        assert_eq!(e.display["masked"], "J***@example.com");
        assert_eq!(e.normalized.expose(), "jane.doe@example.com");
        for bad in ["no-at", "a@b", "a b@example.com", "@example.com"] {
            assert!(prepare(ValueKind::Email, &json!(bad), now(), "/value").is_err(), "{bad}");
        }
        let p = prepare(ValueKind::Phone, &json!("+44 20 7946 0958"), now(), "/value").unwrap();
        assert_eq!(p.normalized.expose(), "+442079460958");
        assert_eq!(p.display["masked"], "+********0958");
        assert!(prepare(ValueKind::Phone, &json!("020 7946 0958"), now(), "/value").is_err());
        assert_eq!(mask_name("Jane  van Doe"), "J*** v*** D***");
    }

    #[test]
    fn stored_values_normalize_as_when_they_were_prepared() {
        let samples = [
            (
                ValueKind::Card,
                json!({"number": "4242 4242 4242 4242", "exp_month": 1, "exp_year": 2040, "holder_name": "J D"}),
            ),
            (ValueKind::BankAccount, json!("de89 3704 0044 0532 0130 00")),
            (ValueKind::Email, json!("Jane.Doe@Example.COM")),
            (ValueKind::Phone, json!("+44 (20) 7946-0958")),
            (ValueKind::Name, json!("  Jane   van DOE ")),
            (ValueKind::Address, json!({"line1": "1 High St", "city": "London", "country": "gb"})),
            (ValueKind::Json, json!({"b": [1, 2], "a": "X"})),
        ];
        for (kind, value) in samples {
            let prepared = prepare(kind, &value, now(), "/value").unwrap();
            let again = normalized_of_stored(kind, prepared.plaintext.expose()).unwrap();
            assert_eq!(again.expose(), prepared.normalized.expose(), "{kind:?}");
        }
    }

    #[test]
    fn short_cards_display_only_their_last4() {
        let amex = prepare(
            ValueKind::Card,
            &json!({"number": "378282246310005", "exp_month": 1, "exp_year": 2040}),
            now(),
            "/value",
        )
        .unwrap();
        assert!(amex.display.get("first6").is_none(), "{:?}", amex.display);
        assert_eq!(amex.display["last4"], "0005");
        let plain: Value = serde_json::from_slice(amex.plaintext.expose()).unwrap();
        assert_eq!(masked_view(ValueKind::Card, &plain)["number"], "***********0005");
    }

    #[test]
    fn addresses_need_an_assigned_country() {
        let address = |country: &str| json!({"line1": "1 High St", "city": "London", "country": country});
        assert!(prepare(ValueKind::Address, &address("gb"), now(), "/value").is_ok());
        assert!(prepare(ValueKind::Address, &address("XK"), now(), "/value").is_ok());
        for bad in ["ZZ", "UK", "EU", "G", "GBR", "1A"] {
            let err = prepare(ValueKind::Address, &address(bad), now(), "/value").unwrap_err();
            assert_eq!((err.code, err.field.pointer.as_str()), ("invalid_address", "/value/country"), "{bad}");
        }
    }

    #[test]
    fn card_search_takes_the_number_alone() {
        let alone = search_normalized(ValueKind::Card, &json!({"number": "4242 4242 4242 4242"}), now(), "/value");
        assert_eq!(alone.unwrap().expose(), "4242424242424242");
        // The old fields are accepted and ignored, even an expiry that has passed.
        let old = json!({"number": "4242424242424242", "exp_month": 1, "exp_year": 2020, "cvc": "123"});
        assert_eq!(search_normalized(ValueKind::Card, &old, now(), "/value").unwrap().expose(), "4242424242424242");
        let stored = prepare(
            ValueKind::Card,
            &json!({"number": "4242424242424242", "exp_month": 1, "exp_year": 2040}),
            now(),
            "/value",
        )
        .unwrap();
        let found =
            search_normalized(ValueKind::Card, &json!({"number": "4242424242424242"}), now(), "/value").unwrap();
        assert_eq!(found.expose(), stored.normalized.expose());
        let bad = search_normalized(ValueKind::Card, &json!({"number": "4242424242424241"}), now(), "/value");
        assert_eq!(bad.unwrap_err().code, "invalid_card_number");
        let unknown = search_normalized(ValueKind::Card, &json!({"number": "4242424242424242", "x": 1}), now(), "/v");
        assert_eq!(unknown.unwrap_err().code, "validation_failed");
        let email = search_normalized(ValueKind::Email, &json!("Jane@Example.com"), now(), "/value").unwrap();
        let prepared = prepare(ValueKind::Email, &json!("Jane@Example.com"), now(), "/value").unwrap();
        assert_eq!(email.expose(), prepared.normalized.expose());
    }

    #[test]
    fn oversized_values_are_refused() {
        let big = json!({"blob": "x".repeat(MAX_VALUE_BYTES)});
        assert_eq!(prepare(ValueKind::Json, &big, now(), "/value").unwrap_err().code, "value_too_large");
    }

    /// What a reveal of `prepared` answers: its plaintext as JSON.
    fn revealed(prepared: &Prepared) -> Value {
        serde_json::from_slice(prepared.plaintext.expose()).unwrap()
    }

    /// The checks every kind's property test makes: the reveal gives `expected` back, the value
    /// normalizes like `canonical` (its plain form: equal values share a fingerprint), the stored
    /// plaintext normalizes again to the same form, and so does the plaintext a token stored
    /// before issue 13 holds (`old`: the value sealed normalized), which masks alike.
    fn check_kind(kind: ValueKind, given: &Value, expected: &Value, canonical: &Value, old: &Value) {
        let prepared = prepare(kind, given, now(), "/value").unwrap();
        assert_eq!(&revealed(&prepared), expected, "{kind:?}: the reveal returns the value as given");
        let plain = prepare(kind, canonical, now(), "/value").unwrap();
        assert_eq!(prepared.normalized.expose(), plain.normalized.expose(), "{kind:?}: one fingerprint");
        let again = normalized_of_stored(kind, prepared.plaintext.expose()).unwrap();
        assert_eq!(again.expose(), prepared.normalized.expose(), "{kind:?}: refingerprinting");
        let old_bytes = serde_json::to_vec(old).unwrap();
        let from_old = normalized_of_stored(kind, &old_bytes).unwrap();
        assert_eq!(from_old.expose(), prepared.normalized.expose(), "{kind:?}: an old token");
        // (An email's mask shows its first letter, in the case the plaintext has.)
        let mask = |plain: &Value| masked_view(kind, plain).to_string().to_lowercase();
        assert_eq!(mask(old), mask(expected), "{kind:?}: masks alike");
    }

    /// Puts `separators` (cycled) between some characters of `text`.
    fn spaced(text: &str, gaps: &[usize], separators: &[&str]) -> String {
        let mut out = String::new();
        for (i, c) in text.chars().enumerate() {
            if i > 0 && gaps.contains(&i) {
                out.push_str(separators[i % separators.len()]);
            }
            out.push(c);
        }
        out
    }

    fn with_case(text: &str, upper: &[bool]) -> String {
        text.chars()
            .enumerate()
            .map(|(i, c)| {
                if upper.get(i % upper.len().max(1)).copied().unwrap_or(false) {
                    c.to_ascii_uppercase()
                } else {
                    c.to_ascii_lowercase()
                }
            })
            .collect()
    }

    #[test]
    fn reveals_return_the_issue_examples_as_given() {
        for (kind, given) in [
            (ValueKind::Email, json!("Jane.Doe@Example.com")),
            (ValueKind::Phone, json!("+49 (30) 1234-0958")),
            (ValueKind::BankAccount, json!("de89 3704 0044 0532 0130 00")),
            (ValueKind::Name, json!("  Jane   van DOE ")),
            (ValueKind::Address, json!({"line1": " 1 High St ", "city": "London", "country": "gb", "line2": null})),
        ] {
            assert_eq!(revealed(&prepare(kind, &given, now(), "/value").unwrap()), given, "{kind:?}");
        }
        let card =
            json!({"number": "4242 4242-4242 4242", "exp_month": 1, "exp_year": 2040, "holder_name": " J. Doe "});
        let shown = revealed(&prepare(ValueKind::Card, &card, now(), "/value").unwrap());
        assert_eq!(shown["number"], "4242424242424242", "a card number is kept as its digits");
        assert_eq!(shown["holder_name"], " J. Doe ", "the rest as given");
    }

    proptest! {
        #[test]
        fn emails_reveal_as_given(
            local in "[A-Za-z0-9._%+-]{1,20}",
            labels in proptest::collection::vec("[A-Za-z0-9]{1,10}", 1..3),
            tld in "[A-Za-z]{2,6}",
            pad in "[ ]{0,2}",
        ) {
            let address = format!("{local}@{}.{tld}", labels.join("."));
            let given = json!(format!("{pad}{address}{pad}"));
            let canonical = json!(address.to_lowercase());
            check_kind(ValueKind::Email, &given, &given, &canonical, &canonical);
        }

        #[test]
        fn phones_reveal_as_given(
            first in 1u8..10,
            rest in proptest::collection::vec(0u8..10, 7..=14),
            gaps in proptest::collection::vec(1usize..15, 0..5),
            separator in proptest::sample::select(vec![" ", "-", ".", " (", ") "]),
        ) {
            let digits: String = std::iter::once(first).chain(rest).map(|d| char::from(b'0' + d)).collect();
            let given = json!(format!("+{}", spaced(&digits, &gaps, &[separator])));
            let canonical = json!(format!("+{digits}"));
            check_kind(ValueKind::Phone, &given, &given, &canonical, &canonical);
        }

        #[test]
        fn ibans_reveal_as_given(
            bban in proptest::collection::vec(0u8..10, 18),
            gaps in proptest::collection::vec(1usize..22, 0..6),
            upper in proptest::collection::vec(any::<bool>(), 1..4),
        ) {
            let bban: String = bban.into_iter().map(|d| char::from(b'0' + d)).collect();
            let iban = (2..=98).map(|check| format!("DE{check:02}{bban}")).find(|iban| iban_valid(iban)).unwrap();
            let given = json!(spaced(&with_case(&iban, &upper), &gaps, &[" "]));
            let canonical = json!(iban);
            check_kind(ValueKind::BankAccount, &given, &given, &canonical, &canonical);
        }

        #[test]
        fn names_reveal_as_given(
            words in proptest::collection::vec("[A-Za-z]{1,10}", 1..4),
            space in "[ ]{1,3}",
            pad in "[ ]{0,2}",
        ) {
            let given = json!(format!("{pad}{}{pad}", words.join(&space)));
            let canonical = json!(words.join(" ").to_lowercase());
            let old = json!(words.join(&space));
            check_kind(ValueKind::Name, &given, &given, &canonical, &old);
        }

        #[test]
        fn addresses_reveal_as_given(
            line1 in "[A-Za-z0-9][A-Za-z0-9 ]{0,20}",
            city in "[A-Za-z][A-Za-z ]{0,12}",
            postal in proptest::option::of("[A-Z0-9]{3,8}"),
            country in proptest::sample::select(vec!["gb", "GB", "De", "fr", "US"]),
            pad in "[ ]{0,2}",
        ) {
            let mut given = json!({"line1": format!("{pad}{line1}"), "city": format!("{city}{pad}"), "country": country});
            if let Some(postal) = &postal {
                given["postal_code"] = json!(postal);
            }
            let canonical = json!({
                "line1": line1.trim(), "city": city.trim(), "country": country.to_ascii_uppercase(),
                "postal_code": postal,
            });
            // Before issue 13 an address was sealed in its canonical form, every field named.
            let old = json!({
                "city": city.trim(), "country": country.to_ascii_uppercase(), "line1": line1.trim(), "line2": null,
                "postal_code": postal, "region": null,
            });
            check_kind(ValueKind::Address, &given, &given, &canonical, &old);
        }

        #[test]
        fn cards_keep_their_digits_and_the_rest_as_given(
            middle in proptest::collection::vec(0u8..10, 9),
            gaps in proptest::collection::vec(1usize..16, 0..4),
            separator in proptest::sample::select(vec![" ", "-"]),
            holder in proptest::option::of("[A-Za-z][A-Za-z .]{0,20}"),
            pad in "[ ]{0,2}",
        ) {
            let mut digits = String::from("424242");
            for d in &middle { digits.push(char::from(b'0' + d)); }
            let number = (0..10).map(|d| format!("{digits}{d}")).find(|n| crate::vault::card::luhn_valid(n)).unwrap();
            let holder = holder.map(|h| format!("{pad}{h}{pad}"));
            let given = json!({"number": spaced(&number, &gaps, &[separator]), "exp_month": 3, "exp_year": 2040, "holder_name": holder, "cvc": "123"});
            let expected = json!({"number": number, "exp_month": 3, "exp_year": 2040, "holder_name": holder});
            let canonical = json!({"number": number, "exp_month": 3, "exp_year": 2040});
            let old = json!({"number": number, "exp_month": 3, "exp_year": 2040, "holder_name": holder.as_deref().map(str::trim)});
            check_kind(ValueKind::Card, &given, &expected, &canonical, &old);
        }

        #[test]
        fn json_objects_reveal_as_given(
            fields in proptest::collection::btree_map("[a-z]{1,8}", proptest::option::of("[ -~]{0,12}"), 0..6),
        ) {
            let given = json!(fields);
            check_kind(ValueKind::Json, &given, &given, &given, &given);
        }

        #[test]
        fn masked_cards_show_at_most_first6_and_last4(middle in proptest::collection::vec(0u8..10, 6..=9)) {
            let mut digits = String::from("424242");
            for d in &middle { digits.push(char::from(b'0' + d)); }
            digits.push_str("424");
            // Complete the Luhn check digit.
            let check = (0..10).map(|d| format!("{digits}{d}")).find(|n| crate::vault::card::luhn_valid(n)).unwrap();
            if let Ok(prepared) = prepare(ValueKind::Card, &json!({"number": check, "exp_month": 1, "exp_year": 2040}), now(), "/v") {
                let shown = serde_json::to_string(&prepared.display).unwrap();
                let masked = masked_view(ValueKind::Card, &serde_json::from_slice(prepared.plaintext.expose()).unwrap());
                let expected = format!("{}{}{}", &check[..6], "*".repeat(check.len() - 10), &check[check.len() - 4..]);
                prop_assert!(!shown.contains(&check));
                prop_assert_eq!(masked["number"].as_str(), Some(expected.as_str()));
            }
        }
    }
}
