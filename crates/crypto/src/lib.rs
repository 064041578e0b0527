//! Cryptography for strongroom.
//!
//! Owns: the AEAD envelope format ([`envelope`]), keyed digests ([`digest`]), the [`kms::Kms`]
//! port with its local key-file provider, reading secret files ([`secret_file`]), password hashing ([`password`]), TOTP ([`totp`]) and signed access tokens ([`jwt`]).
//! Must never: hand out raw key bytes except through [`strongroom_types::Secret::expose`], use an
//! unkeyed hash for anything derived from a secret, or compare secrets with `==`.

pub mod digest;
pub mod envelope;
pub mod jwt;
pub mod kms;
pub mod password;
pub mod secret_file;
pub mod signing;
pub mod totp;
pub mod webauthn;

pub use digest::KeyedDigest;
pub use kms::{Kms, KmsError, LocalKeyFile};

/// A 256-bit symmetric key.
pub type Key256 = strongroom_types::Secret<[u8; 32]>;

/// Constant-time equality of two byte strings (lengths are not secret).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.ct_eq(b))
}
