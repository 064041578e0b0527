//! The AEAD envelope: `version (1 byte) || nonce (12 bytes) || AES-256-GCM ciphertext and tag`.
//!
//! The associated data binds an envelope to where it belongs (its purpose, tenant, record, field and
//! key version), so an envelope copied elsewhere fails to open. Must never: encrypt with empty
//! associated data, reuse a nonce (each seal draws 96 fresh random bits), or slice without a length check.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use strongroom_types::Entropy;
use strongroom_types::entropy::random_array;

use crate::Key256;

/// The only envelope version so far: AES-256-GCM with a 96-bit random nonce.
pub const VERSION_AES256GCM: u8 = 1;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;

/// An envelope did not open. Deliberately carries no detail: which check failed is not the
/// caller's business and must not reach a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the envelope failed its integrity check")]
pub struct OpenError;

/// Encrypts `plaintext` under `key`, bound to `associated_data`.
pub fn seal(key: &Key256, associated_data: &[u8], plaintext: &[u8], entropy: &dyn Entropy) -> Vec<u8> {
    let cipher = Aes256Gcm::new(key.expose().into());
    let nonce_bytes: [u8; NONCE_LEN] = random_array(entropy);
    let payload = Payload { msg: plaintext, aad: associated_data };
    // AES-GCM encryption only fails for messages over 64 GiB, which nothing here produces.
    let ciphertext = cipher.encrypt(Nonce::from_slice(&nonce_bytes), payload).unwrap_or_default();
    let mut out = Vec::with_capacity(1 + NONCE_LEN + ciphertext.len());
    out.push(VERSION_AES256GCM);
    out.extend_from_slice(&nonce_bytes);
    out.extend_from_slice(&ciphertext);
    out
}

/// Decrypts an envelope made by [`seal`] with the same key and associated data.
pub fn open(key: &Key256, associated_data: &[u8], envelope: &[u8]) -> Result<Vec<u8>, OpenError> {
    let (&version, rest) = envelope.split_first().ok_or(OpenError)?;
    if version != VERSION_AES256GCM || rest.len() < NONCE_LEN + TAG_LEN {
        return Err(OpenError);
    }
    let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
    let cipher = Aes256Gcm::new(key.expose().into());
    cipher.decrypt(Nonce::from_slice(nonce), Payload { msg: ciphertext, aad: associated_data }).map_err(|_| OpenError)
}

#[cfg(test)]
mod tests {
    use super::*;
    use aes_gcm::aead::generic_array::GenericArray;
    use proptest::prelude::*;
    use strongroom_types::{OsEntropy, Secret};

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2).unwrap_or("00"), 16).unwrap_or(0)).collect()
    }

    /// NIST GCM test vector (gcmEncryptExtIV256.rsp, Count 0 of the 96-bit IV, 128-bit AAD set),
    /// as also published in the McGrew & Viega GCM spec, test case 16.
    #[test]
    fn aes256gcm_known_answer() {
        let key: [u8; 32] =
            hex("feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308").try_into().unwrap_or([0; 32]);
        let iv = hex("cafebabefacedbaddecaf888");
        let pt = hex(
            "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39",
        );
        let aad = hex("feedfacedeadbeeffeedfacedeadbeefabaddad2");
        let expected_ct = hex(
            "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662",
        );
        let expected_tag = hex("76fc6ece0f4e1768cddf8853bb2d551b");
        let cipher = Aes256Gcm::new(GenericArray::from_slice(&key));
        let out = cipher.encrypt(Nonce::from_slice(&iv), Payload { msg: &pt, aad: &aad }).unwrap_or_default();
        assert_eq!(out.len(), expected_ct.len() + 16);
        assert_eq!(out.get(..expected_ct.len()), Some(expected_ct.as_slice()));
        assert_eq!(out.get(expected_ct.len()..), Some(expected_tag.as_slice()));
    }

    fn key() -> Key256 {
        Secret::new(OsEntropy.array())
    }

    #[test]
    fn round_trip_and_wrong_aad() {
        let k = key();
        let env = seal(&k, b"merchant=m1|field=x", b"hello", &OsEntropy);
        assert_eq!(env.first(), Some(&VERSION_AES256GCM));
        assert_eq!(open(&k, b"merchant=m1|field=x", &env), Ok(b"hello".to_vec()));
        assert_eq!(open(&k, b"merchant=m2|field=x", &env), Err(OpenError));
        assert_eq!(open(&key(), b"merchant=m1|field=x", &env), Err(OpenError));
    }

    #[test]
    fn short_or_unknown_envelopes_fail_cleanly() {
        let k = key();
        for bad in [&[][..], &[1][..], &[1; 28][..], &[2; 60][..]] {
            assert_eq!(open(&k, b"aad", bad), Err(OpenError));
        }
    }

    proptest! {
        #[test]
        fn any_flipped_bit_fails(msg in proptest::collection::vec(any::<u8>(), 0..200), bit in 0usize..10_000) {
            let k = key();
            let mut env = seal(&k, b"aad", &msg, &OsEntropy);
            let bit = bit % (env.len() * 8);
            if let Some(byte) = env.get_mut(bit / 8) { *byte ^= 1 << (bit % 8); }
            prop_assert_eq!(open(&k, b"aad", &env), Err(OpenError));
        }
    }
}
