//! Payment gateways, one folder each with its wire types: [`sandbox`] (the default, built in).
//! Each implements `strongroom_domain::payments::gateway::Gateway`.
//! Must never: log or return a card number or CVC, or make a call without the idempotency key
//! the domain recorded for it.

pub mod sandbox;
