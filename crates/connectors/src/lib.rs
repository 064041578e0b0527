//! Outbound integrations. Owns: network KMS providers ([`kms`]), the security alert webhook
//! ([`alerts`]) and the mailers ([`mail`]: SMTP and the development mailbox).
//! Must never: log a token, a key, a plaintext or a mail's recipient or body; follow a redirect
//! with credentials.

pub mod alerts;
pub mod kms;
pub mod mail;
