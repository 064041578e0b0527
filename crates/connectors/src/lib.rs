//! Outbound integrations. Owns: network KMS providers ([`kms`]).
//! Must never: log a token, a key or a plaintext; follow a redirect with credentials.

pub mod alerts;
pub mod kms;
