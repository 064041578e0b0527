//! The ports: traits that storage and other adapters implement, one module per capability.
//! Plain `dyn` traits held in `Arc`. A new capability adds its own module here (or a `ports`
//! module inside its own folder, as the outbox, webhooks, jobs and idempotency do); everything is
//! re-exported so that `crate::ports::VaultRepository` names the same trait as
//! `crate::ports::vault::VaultRepository`.
//! Must never: expose a database type, or a method that could read across merchants without
//! naming the merchant.

pub mod api_keys;
pub mod audit;
pub mod breached;
pub mod checkout;
pub mod detection;
pub mod disputes;
pub mod durability;
pub mod health;
pub mod identity;
pub mod incidents;
pub mod keyring;
pub mod merchants;
pub mod passkeys;
pub mod payments;
pub mod staff;
pub mod vault;

pub use api_keys::*;
pub use audit::*;
pub use breached::*;
pub use checkout::*;
pub use disputes::*;
pub use durability::*;
pub use health::*;
pub use identity::*;
pub use keyring::*;
pub use merchants::*;
pub use passkeys::*;
pub use payments::*;
pub use staff::*;
pub use vault::*;
