//! `RequestContext`: where a request came from (client IP through the trusted proxies, request
//! id), for audit events. Never fails.

use std::net::IpAddr;

use axum::extract::FromRequestParts;
use http::request::Parts;
use strongroom_domain::audit::event::AuditEvent;

use crate::middleware::{ClientIp, RequestId};

/// The request's source.
#[derive(Debug, Clone, Default)]
pub struct RequestContext {
    /// Client IP.
    pub ip: Option<IpAddr>,
    /// Request id.
    pub request_id: Option<String>,
}

impl RequestContext {
    /// Reads the context the middleware put into the request.
    pub fn of(parts: &Parts) -> Self {
        Self {
            ip: parts.extensions.get::<ClientIp>().map(|c| c.0),
            request_id: parts.extensions.get::<RequestId>().map(|r| r.0.to_string()),
        }
    }

    /// Stamps an event with this source.
    pub fn stamp(&self, event: AuditEvent) -> AuditEvent {
        event.from_source(self.ip, self.request_id.clone())
    }
}

impl<S: Send + Sync> FromRequestParts<S> for RequestContext {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(Self::of(parts))
    }
}
