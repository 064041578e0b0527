//! The rules of strongroom, one module per capability, and the ports adapters implement.
//!
//! Owns: merchants (tenants), API keys and their scopes, the deployment keyring, first-start
//! bootstrap, and the repository traits in [`ports`].
//! Must never: import axum, sqlx, reqwest or any other adapter; read the clock or the random source
//! except through the injected [`strongroom_types::Clock`] and [`strongroom_types::Entropy`].

pub mod alerts;
pub mod api_keys;
pub mod audit;
pub mod bootstrap;
pub mod cache;
pub mod detection;
pub mod error;
pub mod forward;
pub mod free_text;
pub mod gate;
pub mod idempotency;
pub mod identity;
pub mod jobs;
pub mod key_ceremonies;
pub mod keyring;
pub mod mail;
pub mod merchants;
pub mod modes;
pub mod oauth;
pub mod outbox;
pub mod passkeys;
pub mod payments;
pub mod ports;
pub mod sessions;
pub mod staff;
pub mod vault;
pub mod webhooks;

pub use error::{DomainError, StoreError};
