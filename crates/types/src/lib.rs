//! Leaf types shared by every strongroom crate.
//!
//! Owns: the [`Secret`] wrapper, prefixed random identifiers, the [`Clock`] and [`Entropy`] ports
//! through which time and randomness enter the program, [`Timestamp`], and [`Money`] (integer
//! minor units of an ISO 4217 [`Currency`]).
//! Must never: perform I/O (other than reading the OS random source in [`OsEntropy`]), depend on
//! another strongroom crate, or give a secret a `Display`/`Serialize` implementation.

pub mod clock;
pub mod entropy;
pub mod id;
pub mod money;
pub mod secret;

pub use clock::{Clock, ManualClock, SystemClock, Timestamp};
pub use entropy::{Entropy, OsEntropy};
pub use id::{IdError, PrefixedId};
pub use money::{Currency, Money, MoneyError};
pub use secret::Secret;
