//! Keyed digests: HMAC-SHA-256 under a dedicated key.
//!
//! Used wherever a value derived from a secret must be stored or compared (API key digests now,
//! card fingerprints later). Must never: fall back to an unkeyed hash.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::{Key256, constant_time_eq};

/// HMAC-SHA-256 with a fixed key. The keyed state (the hashes of the padded key) is computed once
/// and copied per message, which saves two SHA-256 blocks on every digest (API key and session
/// checks run one per request). It lets whoever reads this process's memory compute digests, as
/// the key itself would; the key is zeroized when dropped.
pub struct KeyedDigest {
    keyed: Option<Hmac<Sha256>>,
    _key: Key256,
}

impl std::fmt::Debug for KeyedDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyedDigest(..)")
    }
}

impl KeyedDigest {
    /// A digest under `key`.
    pub fn new(key: Key256) -> Self {
        // HMAC accepts keys of any length, so construction cannot fail.
        let keyed = Hmac::<Sha256>::new_from_slice(key.expose()).ok();
        Self { keyed, _key: key }
    }

    /// The 32-byte HMAC-SHA-256 of `message`.
    pub fn digest(&self, message: &[u8]) -> [u8; 32] {
        let Some(keyed) = &self.keyed else {
            return [0; 32];
        };
        let mut mac = keyed.clone();
        mac.update(message);
        mac.finalize().into_bytes().into()
    }

    /// Whether `expected` is the digest of `message`, in constant time.
    pub fn verify(&self, message: &[u8], expected: &[u8]) -> bool {
        constant_time_eq(&self.digest(message), expected)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hmac::Mac;
    use strongroom_types::Secret;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// RFC 4231 test case 2 ("Jefe"), whose key is shorter than 32 bytes: checked through the
    /// same HMAC implementation the wrapper uses.
    #[test]
    fn rfc4231_case_2() {
        let mut mac = Hmac::<Sha256>::new_from_slice(b"Jefe").unwrap_or_else(|_| unreachable!());
        mac.update(b"what do ya want for nothing?");
        assert_eq!(
            hex(&mac.finalize().into_bytes()),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    /// RFC 4231 test case 1 with the key zero-padded to 32 bytes gives the same MAC as the
    /// 20-byte key (HMAC pads keys with zeros to the block size).
    #[test]
    fn rfc4231_case_1_through_wrapper() {
        let mut key = [0u8; 32];
        key[..20].copy_from_slice(&[0x0b; 20]);
        let digest = KeyedDigest::new(Secret::new(key));
        assert_eq!(
            hex(&digest.digest(b"Hi There")),
            "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"
        );
        assert!(digest.verify(b"Hi There", &digest.digest(b"Hi There")));
        assert!(!digest.verify(b"Hi there", &digest.digest(b"Hi There")));
    }
}
