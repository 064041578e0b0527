//! strongroom's HTTP interface.
//!
//! Owns: the routes ([`routes`]), the guards and input parsers handlers take as arguments
//! ([`extract`]), the single error type and its RFC 9457 rendering ([`problem`]), the middleware
//! stack ([`middleware`]), `Idempotency-Key` on every POST ([`idempotency`]), metrics, the OpenAPI document, the hosted account pages ([`pages`]), and
//! serving over TLS ([`server`], [`tls`]).
//! Must never: reach the database or a KMS except through domain services and ports; put a secret,
//! a raw path or a query string in a log line or metric label; answer an error with internal detail.

pub mod extract;
pub mod idempotency;
pub mod metrics;
pub mod middleware;
pub mod openapi;
pub mod pages;
pub mod problem;
pub mod routes;
pub mod server;
pub mod state;
pub mod tls;

pub use problem::ApiError;
pub use state::{AppState, HttpSettings, Services};
