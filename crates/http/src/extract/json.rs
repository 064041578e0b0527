//! `ApiJson<T>`: a JSON body parsed into `T`.
//!
//! Wrong content type → 415, body over the limit → 413, invalid JSON → 400 `malformed_json`,
//! well-formed JSON of the wrong shape → 422 `validation_failed` naming the field by JSON pointer.
//!
//! A body that turns out too large while streaming is read on and discarded (up to a bound) before
//! the 413 goes out: an HTTP/1.1 client still writing when the server closes the connection gets a
//! reset instead of the answer (the "lingering close" web servers do).

use std::time::Duration;

use axum::body::Body;
use axum::extract::{FromRequest, Request};
use bytes::{Bytes, BytesMut};
use http::{StatusCode, header};
use http_body_util::{BodyExt, LengthLimitError};
use serde::de::DeserializeOwned;

use crate::problem::ApiError;

/// A JSON request body parsed into `T`.
#[derive(Debug, Clone)]
pub struct ApiJson<T>(pub T);

fn is_json(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json"))
}

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, ApiError> {
        let content_type = req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
        if !is_json(content_type) {
            return Err(ApiError::for_bare_status(StatusCode::UNSUPPORTED_MEDIA_TYPE));
        }
        let bytes = read_body(req.into_body()).await?;
        parse(&bytes).map(ApiJson)
    }
}

/// How much of an oversized body is read and thrown away, at most, before answering 413.
const DRAIN_FRAMES: usize = 256;
const DRAIN_TIME: Duration = Duration::from_secs(2);

/// Reads the whole body. The body arrives already limited by the router's body-limit layer, whose
/// error ends the read with 413 after a bounded drain.
pub(crate) async fn read_body(mut body: Body) -> Result<Bytes, ApiError> {
    let mut collected = BytesMut::new();
    loop {
        match body.frame().await {
            None => return Ok(collected.freeze()),
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    collected.extend_from_slice(&data);
                }
            }
            Some(Err(err)) if is_length_limit(&err) => {
                drop(collected);
                // The limited body keeps passing the client's frames (as errors) until it ends.
                let _ = tokio::time::timeout(DRAIN_TIME, drain(&mut body)).await;
                return Err(ApiError::for_bare_status(StatusCode::PAYLOAD_TOO_LARGE));
            }
            Some(Err(_)) => {
                return Err(
                    ApiError::new(StatusCode::BAD_REQUEST, "malformed_request").detail("the body could not be read")
                );
            }
        }
    }
}

async fn drain(body: &mut Body) {
    for _ in 0..DRAIN_FRAMES {
        match body.frame().await {
            Some(Ok(_)) => {}
            Some(Err(err)) if is_length_limit(&err) => {}
            None | Some(Err(_)) => return,
        }
    }
}

fn is_length_limit(err: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(current) = source {
        if current.is::<LengthLimitError>() {
            return true;
        }
        source = current.source();
    }
    false
}

/// Parses a JSON document into `T` with the error mapping of [`ApiJson`].
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|err| {
        let path = err.path().clone();
        let inner = err.into_inner();
        match inner.classify() {
            serde_json::error::Category::Data => {
                ApiError::validation(vec![super::field_error(&path, &inner.to_string())])
            }
            serde_json::error::Category::Syntax
            | serde_json::error::Category::Eof
            | serde_json::error::Category::Io => ApiError::new(StatusCode::BAD_REQUEST, "malformed_json")
                .detail(format!("the body is not valid JSON (line {}, column {})", inner.line(), inner.column())),
        }
    })?;
    deserializer.end().map_err(|_| {
        ApiError::new(StatusCode::BAD_REQUEST, "malformed_json")
            .detail("the body has trailing characters after the JSON value")
    })?;
    Ok(value)
}

/// Parses an already-parsed JSON value into `T` (a batch item), naming fields under `base`.
pub fn parse_value<T: DeserializeOwned>(value: serde_json::Value, base: &str) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(value).map_err(|err| {
        let path = err.path().clone();
        let mut field = super::field_error(&path, &err.into_inner().to_string());
        field.pointer = format!("{base}{}", field.pointer);
        ApiError::validation(vec![field])
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Input {
        name: String,
        scopes: Vec<u8>,
    }

    #[test]
    fn pointers_name_the_field_without_the_value() {
        let err = parse::<Input>(br#"{"name": "x", "scopes": [1, "canary-4111111111111111"]}"#).unwrap_err();
        assert_eq!(err.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(err.fields[0].pointer, "/scopes/1");
        assert!(!err.fields[0].detail.contains("canary"), "{:?}", err.fields);

        let err = parse::<Input>(br#"{"scopes": []}"#).unwrap_err();
        assert_eq!(err.fields[0].pointer, "/name");
        assert_eq!(err.fields[0].detail, "is required");

        let err = parse::<Input>(br#"{"name": "x", "scopes": [], "role": "owner"}"#).unwrap_err();
        assert_eq!(err.fields[0].pointer, "/role");

        let err = parse::<Input>(br#"{"name": "x", "#).unwrap_err();
        assert_eq!((err.status, err.code), (StatusCode::BAD_REQUEST, "malformed_json"));
        let err = parse::<Input>(br#"{"name": "x", "scopes": []} {}"#).unwrap_err();
        assert_eq!(err.code, "malformed_json");
    }

    #[test]
    fn content_types() {
        assert!(is_json("application/json"));
        assert!(is_json("application/json; charset=utf-8"));
        assert!(is_json("application/merge-patch+json"));
        assert!(!is_json("text/plain"));
        assert!(!is_json(""));
    }
}
