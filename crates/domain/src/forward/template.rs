//! Forward templates: the body a shop sends to `POST /v1/forward`, with placeholders
//! `{{<token>:<field>}}` that strongroom fills from the vault before the body leaves for the
//! gateway, and the escaping that keeps a filled-in value inside its place.
//!
//! A placeholder is `{{`, a token id (`tok_…`, or the digits of a format-preserving token), `:`,
//! a field name, `}}`, with nothing else between the braces. Fields of a card token: `number`
//! (digits only), `exp_month` (two digits, `01`–`12`), `exp_year` (four digits), `cvc` (held in
//! memory, handed out once) and `name` (the holder's name as given; `holder_name` is the same
//! field). A value is escaped by the body's content type: inside a JSON body as the content of
//! a JSON string (quotes, backslashes and control characters escaped), inside a form body
//! percent-encoded (everything but `A–Z a–z 0–9 - . _ ~`). Bodies of other types take no
//! placeholders: raw substitution would let a value break out of its place.
//! Must never: put a value, a template or any part of one into an error; leave a filled-in body
//! outside a [`Secret`].

use strongroom_types::Secret;

use crate::error::{DomainError, FieldError};

/// Most placeholders in one template.
pub const MAX_PLACEHOLDERS: usize = 64;
/// Most distinct tokens in one template.
pub const MAX_TOKENS: usize = 8;

/// Problem code: a placeholder or its braces are malformed, or there are too many.
pub const TEMPLATE_INVALID: &str = "forward_template_invalid";
/// Problem code: a placeholder names a field a card token does not have.
pub const UNKNOWN_FIELD: &str = "forward_placeholder_unknown_field";

/// A field of a card token a placeholder may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Field {
    /// The card number, digits only.
    Number,
    /// The expiry month, two digits.
    ExpMonth,
    /// The expiry year, four digits.
    ExpYear,
    /// The card verification code (held in memory, handed out once).
    Cvc,
    /// The holder's name as given.
    Name,
}

impl Field {
    /// Every field, in the order the audit log names them.
    pub const ALL: &'static [Field] = &[Field::Number, Field::ExpMonth, Field::ExpYear, Field::Cvc, Field::Name];

    /// The name in a placeholder and in the audit log.
    pub const fn as_str(self) -> &'static str {
        match self {
            Field::Number => "number",
            Field::ExpMonth => "exp_month",
            Field::ExpYear => "exp_year",
            Field::Cvc => "cvc",
            Field::Name => "name",
        }
    }

    /// Parses a field name (`holder_name` is `name`, as the vault stores it).
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "holder_name" => Some(Field::Name),
            _ => Self::ALL.iter().copied().find(|f| f.as_str() == name),
        }
    }
}

/// One piece of a template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Segment<'a> {
    /// Text sent as it is.
    Text(&'a str),
    /// A value to fill in.
    Placeholder {
        /// The token id.
        token: &'a str,
        /// Which of its fields.
        field: Field,
    },
}

/// How filled-in values are escaped, by the body's content type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// `application/json` and `application/*+json`: the content of a JSON string.
    Json,
    /// `application/x-www-form-urlencoded`: percent-encoded.
    Form,
}

impl Encoding {
    /// The encoding of a `Content-Type` value; `None` for a type that takes no placeholders.
    pub fn of_content_type(content_type: &str) -> Option<Self> {
        let essence = content_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
        if essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json")) {
            Some(Encoding::Json)
        } else if essence == "application/x-www-form-urlencoded" {
            Some(Encoding::Form)
        } else {
            None
        }
    }
}

fn template_error(detail: String) -> DomainError {
    DomainError::Rejected { code: TEMPLATE_INVALID, errors: vec![FieldError::new("/body", detail)] }
}

fn valid_token_id(id: &str) -> bool {
    (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Splits a template into text and placeholders. Errors name the placeholder by its position
/// (1-based), never by its content.
pub fn parse(template: &str) -> Result<Vec<Segment<'_>>, DomainError> {
    let mut segments = Vec::new();
    let mut rest = template;
    let mut count = 0usize;
    let mut tokens: Vec<&str> = Vec::new();
    while let Some(open) = rest.find("{{") {
        count += 1;
        if count > MAX_PLACEHOLDERS {
            return Err(template_error(format!("at most {MAX_PLACEHOLDERS} placeholders")));
        }
        let (before, after_open) = rest.split_at(open);
        if !before.is_empty() {
            segments.push(Segment::Text(before));
        }
        let inner_and_rest = after_open.get(2..).unwrap_or_default();
        let Some(close) = inner_and_rest.find("}}") else {
            return Err(template_error(format!("placeholder {count} has no closing }}}}")));
        };
        let inner = inner_and_rest.get(..close).unwrap_or_default();
        let Some((token, field)) = inner.split_once(':') else {
            return Err(template_error(format!("placeholder {count} must read {{{{tok_…:field}}}}")));
        };
        if !valid_token_id(token) {
            return Err(template_error(format!("placeholder {count} does not name a token id")));
        }
        let Some(field) = Field::parse(field) else {
            return Err(DomainError::Rejected {
                code: UNKNOWN_FIELD,
                errors: vec![FieldError::new(
                    "/body",
                    format!(
                        "placeholder {count} names a field a card does not have: use number, exp_month, exp_year, cvc or name"
                    ),
                )],
            });
        };
        if !tokens.contains(&token) {
            tokens.push(token);
            if tokens.len() > MAX_TOKENS {
                return Err(template_error(format!("at most {MAX_TOKENS} distinct tokens")));
            }
        }
        segments.push(Segment::Placeholder { token, field });
        rest = inner_and_rest.get(close + 2..).unwrap_or_default();
    }
    if !rest.is_empty() {
        segments.push(Segment::Text(rest));
    }
    Ok(segments)
}

/// The distinct tokens of a parsed template, in order of first use, each with the fields used.
pub fn tokens<'a>(segments: &[Segment<'a>]) -> Vec<(&'a str, Vec<Field>)> {
    let mut out: Vec<(&str, Vec<Field>)> = Vec::new();
    for segment in segments {
        if let Segment::Placeholder { token, field } = *segment {
            match out.iter_mut().find(|(t, _)| *t == token) {
                Some((_, fields)) if !fields.contains(&field) => fields.push(field),
                Some(_) => {}
                None => out.push((token, vec![field])),
            }
        }
    }
    for (_, fields) in &mut out {
        fields.sort();
    }
    out
}

/// Appends `value` escaped for `encoding`.
pub fn escape_into(out: &mut Vec<u8>, value: &str, encoding: Encoding) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let hex = |n: u8| HEX.get(usize::from(n & 0x0f)).copied().unwrap_or(b'0');
    match encoding {
        Encoding::Json => {
            for c in value.chars() {
                match c {
                    '"' => out.extend_from_slice(b"\\\""),
                    '\\' => out.extend_from_slice(b"\\\\"),
                    '\n' => out.extend_from_slice(b"\\n"),
                    '\r' => out.extend_from_slice(b"\\r"),
                    '\t' => out.extend_from_slice(b"\\t"),
                    c if u32::from(c) < 0x20 => {
                        let b = u8::try_from(u32::from(c)).unwrap_or(0);
                        out.extend_from_slice(b"\\u00");
                        out.push(hex(b >> 4));
                        out.push(hex(b));
                    }
                    c => {
                        let mut buf = [0u8; 4];
                        out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                    }
                }
            }
        }
        Encoding::Form => {
            for b in value.bytes() {
                if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                    out.push(b);
                } else {
                    out.push(b'%');
                    out.push(hex(b >> 4));
                    out.push(hex(b));
                }
            }
        }
    }
}

/// Fills in a parsed template. `value(token, field)` gives each value; `encoding` is required
/// when the template holds a placeholder. The output is sized up front (an escaped byte takes at
/// most six), so it is never reallocated and no copy of a value is left behind unwiped.
pub fn render<'v>(
    segments: &[Segment<'_>],
    encoding: Option<Encoding>,
    mut value: impl FnMut(&str, Field) -> Option<&'v str>,
) -> Option<Secret<Vec<u8>>> {
    let mut capacity = 0usize;
    for segment in segments {
        capacity += match *segment {
            Segment::Text(text) => text.len(),
            Segment::Placeholder { token, field } => value(token, field)?.len() * 6,
        };
    }
    let mut buffer = Vec::with_capacity(capacity);
    for segment in segments {
        match *segment {
            Segment::Text(text) => buffer.extend_from_slice(text.as_bytes()),
            Segment::Placeholder { token, field } => {
                let Some((filled, encoding)) = value(token, field).zip(encoding) else {
                    zeroize::Zeroize::zeroize(&mut buffer);
                    return None;
                };
                escape_into(&mut buffer, filled, encoding);
            }
        }
    }
    Some(Secret::new(buffer))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(err: DomainError) -> &'static str {
        match err {
            DomainError::Rejected { code, errors } => {
                assert_eq!(errors[0].pointer, "/body");
                code
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn placeholders_are_found_between_text() {
        let segments = parse(r#"{"n":"{{tok_abc:number}}","m":{{tok_abc:exp_month}},"x":{"y":{}}}"#).unwrap();
        assert_eq!(
            segments,
            vec![
                Segment::Text(r#"{"n":""#),
                Segment::Placeholder { token: "tok_abc", field: Field::Number },
                Segment::Text(r#"","m":"#),
                Segment::Placeholder { token: "tok_abc", field: Field::ExpMonth },
                Segment::Text(r#","x":{"y":{}}}"#),
            ]
        );
        assert_eq!(tokens(&segments), vec![("tok_abc", vec![Field::Number, Field::ExpMonth])]);
        assert_eq!(parse("").unwrap(), vec![]);
        assert_eq!(parse("plain").unwrap(), vec![Segment::Text("plain")]);
        assert_eq!(parse("{{4242420123454242:holder_name}}").unwrap().len(), 1);
    }

    #[test]
    fn malformed_templates_are_refused_without_echo() {
        for bad in ["{{tok_a:number", "{{tok_a}}", "{{tok a:number}}", "{{:number}}", "a {{ tok_a:number }}"] {
            let err = parse(bad).unwrap_err();
            assert_eq!(code(err), TEMPLATE_INVALID, "{bad}");
        }
        assert_eq!(code(parse("{{tok_a:pin}}").unwrap_err()), UNKNOWN_FIELD);
        let many: String = (0..=MAX_PLACEHOLDERS).map(|_| "{{tok_a:number}}").collect();
        assert_eq!(code(parse(&many).unwrap_err()), TEMPLATE_INVALID);
        let distinct: String = (0..=MAX_TOKENS).map(|i| format!("{{{{tok_{i}:number}}}}")).collect();
        assert_eq!(code(parse(&distinct).unwrap_err()), TEMPLATE_INVALID);
        let Err(DomainError::Rejected { errors, .. }) = parse("x {{tok_secretish:pin}}") else { panic!() };
        assert!(!errors[0].detail.contains("secretish") && !errors[0].detail.contains("pin"));
    }

    #[test]
    fn values_stay_inside_their_place() {
        let name = "Jane \"Q\" O'Neil & Sons\\\n<b>=1+1%";
        let json_template = r#"{"name":"{{tok_a:name}}","amount":100}"#;
        let segments = parse(json_template).unwrap();
        let body = render(&segments, Some(Encoding::Json), |_, _| Some(name)).unwrap();
        let parsed: serde_json::Value = serde_json::from_slice(body.expose()).unwrap();
        assert_eq!(parsed["name"], name);
        assert_eq!(parsed["amount"], 100);
        assert_eq!(parsed.as_object().unwrap().len(), 2);

        let form = parse("name={{tok_a:name}}&amount=100").unwrap();
        let body = render(&form, Some(Encoding::Form), |_, _| Some(name)).unwrap();
        let text = String::from_utf8(body.expose().clone()).unwrap();
        assert_eq!(text, "name=Jane%20%22Q%22%20O%27Neil%20%26%20Sons%5C%0A%3Cb%3E%3D1%2B1%25&amount=100");
        assert_eq!(text.matches('&').count(), 1);

        let control = render(&segments, Some(Encoding::Json), |_, _| Some("a\u{1}b")).unwrap();
        assert!(std::str::from_utf8(control.expose()).unwrap().contains("a\\u0001b"));
        assert!(render(&segments, None, |_, _| Some("x")).is_none(), "a placeholder needs an encoding");
        assert_eq!(render(&parse("plain").unwrap(), None, |_, _| None).unwrap().expose(), b"plain");
    }

    #[test]
    fn content_types_decide_the_encoding() {
        assert_eq!(Encoding::of_content_type("application/json; charset=utf-8"), Some(Encoding::Json));
        assert_eq!(Encoding::of_content_type("application/vnd.api+json"), Some(Encoding::Json));
        assert_eq!(Encoding::of_content_type("Application/X-WWW-Form-Urlencoded"), Some(Encoding::Form));
        assert_eq!(Encoding::of_content_type("text/xml"), None);
        assert_eq!(Encoding::of_content_type("text/plain"), None);
    }
}
