//! The strongroom application: configuration, the data directory, wiring, and the commands.
//!
//! Owns: loading and validating configuration ([`config`]), creating the data directory with its
//! root key and development TLS certificate ([`data_dir`]), wiring adapters to domain services and
//! starting the server ([`app`]), the subcommands ([`commands`]), and attack drills against a
//! running server through its public API ([`drill`]).
//! Must never: be depended on by another strongroom crate except `testkit`; print a secret anywhere
//! but the operator's terminal at the moment it is created.

pub mod app;
pub mod commands;
pub mod config;
pub mod data_dir;
pub mod decisions;
pub mod drill;
pub mod incidents;
pub mod keys;
pub mod logging;
pub mod passwords;
pub mod payments;

pub use app::Application;
pub use config::Config;
pub mod witness;
