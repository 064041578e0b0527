//! What handlers take as arguments: guards ([`auth`]) and parsers ([`json`], [`query`]) that turn
//! bad input into [`crate::ApiError`] with the field's JSON pointer.
//! Must never: echo an input value in an error.

pub mod auth;
pub mod context;
pub mod json;
pub mod query;
pub mod session;

pub use auth::{ApiKeyAuth, StaffAuth, scope};
pub use context::RequestContext;
pub use json::ApiJson;
pub use query::ApiQuery;
pub use session::CustomerAuth;

use crate::problem::ProblemField;

/// Turns a serde error at a path into a field error without the offending value.
pub(crate) fn field_error(path: &serde_path_to_error::Path, message: &str) -> ProblemField {
    let mut pointer = pointer_of(path);
    let detail = if let Some(field) = quoted_after(message, "missing field ") {
        push_segment(&mut pointer, field);
        "is required".to_owned()
    } else if let Some(field) = quoted_after(message, "unknown field ") {
        // The name of an unknown field is input too: echo it only when it is a plain identifier.
        if !echoable_field_name(field) {
            let escaped = format!("/{}", field.replace('~', "~0").replace('/', "~1"));
            if let Some(parent) = pointer.strip_suffix(&escaped) {
                pointer = parent.to_owned();
            }
            return ProblemField { pointer, detail: "has a field that is not known here".to_owned() };
        }
        if !pointer.ends_with(&format!("/{field}")) {
            push_segment(&mut pointer, field);
        }
        "is not a known field".to_owned()
    } else if message.starts_with("invalid type") {
        with_expectation("has the wrong type", message)
    } else if message.starts_with("invalid value") || message.starts_with("invalid length") {
        with_expectation("has an invalid value", message)
    } else if message.starts_with("unknown variant") {
        with_expectation("is not one of the accepted values", message)
    } else if message.starts_with("expected") {
        // Our own Deserialize impls phrase their errors as "expected …" and never include the value.
        message.to_owned()
    } else {
        "is invalid".to_owned()
    };
    ProblemField { pointer, detail }
}

/// A short identifier (`merchant_id`), not something that could carry a secret or a card number.
fn echoable_field_name(name: &str) -> bool {
    let mut chars = name.chars();
    let starts_well = chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    let digits = name.chars().filter(char::is_ascii_digit).count();
    starts_well && name.len() <= 40 && digits < 4 && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn with_expectation(prefix: &str, message: &str) -> String {
    // serde's messages end with ", expected <what the type wants>", which names the type, not the value.
    match message.rsplit_once(", expected ") {
        Some((_, expected)) if !expected.contains('"') => format!("{prefix}: expected {expected}"),
        Some((_, expected)) if expected.starts_with("one of") => {
            format!("{prefix}: expected {expected}")
        }
        _ => prefix.to_owned(),
    }
}

fn quoted_after<'a>(message: &'a str, prefix: &str) -> Option<&'a str> {
    let rest = message.strip_prefix(prefix)?.strip_prefix('`')?;
    rest.split_once('`').map(|(field, _)| field)
}

fn pointer_of(path: &serde_path_to_error::Path) -> String {
    let mut pointer = String::new();
    for segment in path.iter() {
        match segment {
            serde_path_to_error::Segment::Seq { index } => push_segment(&mut pointer, &index.to_string()),
            serde_path_to_error::Segment::Map { key } => push_segment(&mut pointer, key),
            serde_path_to_error::Segment::Enum { variant } => push_segment(&mut pointer, variant),
            serde_path_to_error::Segment::Unknown => {}
        }
    }
    pointer
}

fn push_segment(pointer: &mut String, segment: &str) {
    pointer.push('/');
    pointer.push_str(&segment.replace('~', "~0").replace('/', "~1"));
}
