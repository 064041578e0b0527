//! `ApiJson<T>`: a JSON body parsed into `T`.
//!
//! Wrong content type → 415, body over the limit → 413, invalid JSON → 400 `malformed_json`,
//! well-formed JSON of the wrong shape → 422 `validation_failed` naming the field by JSON pointer.

use axum::extract::{FromRequest, Request};
use bytes::Bytes;
use http::{StatusCode, header};
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

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let content_type = req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
        if !is_json(content_type) {
            return Err(ApiError::for_bare_status(StatusCode::UNSUPPORTED_MEDIA_TYPE));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::for_bare_status(StatusCode::PAYLOAD_TOO_LARGE)
            } else {
                ApiError::new(StatusCode::BAD_REQUEST, "malformed_request").detail("the body could not be read")
            }
        })?;
        parse(&bytes).map(ApiJson)
    }
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
