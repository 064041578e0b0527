//! Outbound integrations. Owns: network KMS providers ([`kms`]), signed webhooks to the shop and
//! the operator's alert webhook ([`webhooks`]), the mailers ([`mail`]: SMTP and the development mailbox) and the one factory of
//! outbound HTTP clients with its address and TLS policy ([`outbound`]), and Have I Been Pwned's
//! k-anonymity range API as a breached-password source ([`pwned_range`]), and the payment
//! gateways ([`gateways`]: the sandbox, and the detokenize-and-forward proxy's allow-list and transport),
//! and intrusion detection's shared counts in Redis ([`redis_counts`]).
//! Must never: log a token, a key, a plaintext or a mail's recipient or body; follow a redirect
//! with credentials.

pub mod gateways;
pub mod geoip;
pub mod kms;
pub mod mail;
pub mod outbound;
pub mod pwned_range;
pub mod redis_counts;
pub mod webhooks;
