//! Payment gateways, one folder (or file) per gateway with its wire types: `forward`, the
//! detokenize-and-forward proxy to any allow-listed HTTPS gateway.
//! Must never: send card data anywhere but through the outbound client's policy, or log it.

pub mod forward;
