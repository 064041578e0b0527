//! Payment gateways, one folder (or file) per gateway with its wire types: [`sandbox`] (the
//! default, built in; implements `strongroom_domain::payments::gateway::Gateway`), [`stripe`]
//! (Stripe's PaymentIntents and its signed webhooks) and `forward`, the detokenize-and-forward
//! proxy to any allow-listed HTTPS gateway.
//! Must never: log or return a card number or CVC, send card data anywhere but through the
//! outbound client's policy, or make a gateway call without the idempotency key the domain
//! recorded for it.

pub mod forward;
pub mod sandbox;
pub mod stripe;
