//! Random, prefixed identifiers such as `mer_5x2k…` and `key_…`.
//!
//! An id is a fixed prefix, an underscore and 26 characters of lowercase base32 (128 random bits),
//! so ids are unguessable, URL-safe and tell at a glance what they name.

use std::fmt;
use std::marker::PhantomData;

use data_encoding::BASE32_NOPAD;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::entropy::{Entropy, random_array};

/// Names the prefix of one kind of id.
pub trait IdKind: 'static {
    /// The prefix, without the underscore.
    const PREFIX: &'static str;
}

/// An id that failed to parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdError {
    /// The prefix that was expected.
    pub expected_prefix: &'static str,
}

impl fmt::Display for IdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "expected an id of the form {}_…", self.expected_prefix)
    }
}

impl std::error::Error for IdError {}

/// An identifier of kind `K`.
pub struct PrefixedId<K: IdKind> {
    text: String,
    kind: PhantomData<K>,
}

const BODY_LEN: usize = 26;

impl<K: IdKind> PrefixedId<K> {
    /// A fresh random id.
    pub fn generate(entropy: &dyn Entropy) -> Self {
        let bytes: [u8; 16] = random_array(entropy);
        let body = BASE32_NOPAD.encode(&bytes).to_ascii_lowercase();
        Self { text: format!("{}_{body}", K::PREFIX), kind: PhantomData }
    }

    /// A fresh id whose first 48 bits are `unix_millis` and whose other 80 bits are random, for
    /// rows written at a high rate: ids made close in time share their leading characters, so a
    /// database index on them takes new ids into a few neighbouring pages instead of a random
    /// page each (a random primary key dirtied one more page per row in every commit). The id
    /// reveals when it was made, to the millisecond, and stays unguessable (80 random bits).
    pub fn generate_at(entropy: &dyn Entropy, unix_millis: i64) -> Self {
        let mut bytes: [u8; 16] = random_array(entropy);
        let millis = u64::try_from(unix_millis).unwrap_or(0).to_be_bytes();
        bytes[..6].copy_from_slice(&millis[2..]);
        let body = BASE32_NOPAD.encode(&bytes).to_ascii_lowercase();
        Self { text: format!("{}_{body}", K::PREFIX), kind: PhantomData }
    }

    /// Parses an id, checking prefix, length and alphabet.
    pub fn parse(text: &str) -> Result<Self, IdError> {
        let error = IdError { expected_prefix: K::PREFIX };
        let body = text.strip_prefix(K::PREFIX).and_then(|rest| rest.strip_prefix('_')).ok_or_else(|| error.clone())?;
        let well_formed =
            body.len() == BODY_LEN && body.bytes().all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b));
        if !well_formed {
            return Err(error);
        }
        Ok(Self { text: text.to_owned(), kind: PhantomData })
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl<K: IdKind> Clone for PrefixedId<K> {
    fn clone(&self) -> Self {
        Self { text: self.text.clone(), kind: PhantomData }
    }
}

impl<K: IdKind> PartialEq for PrefixedId<K> {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl<K: IdKind> Eq for PrefixedId<K> {}

impl<K: IdKind> std::hash::Hash for PrefixedId<K> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.text.hash(state);
    }
}

impl<K: IdKind> fmt::Debug for PrefixedId<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl<K: IdKind> fmt::Display for PrefixedId<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl<K: IdKind> Serialize for PrefixedId<K> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.text)
    }
}

impl<'de, K: IdKind> Deserialize<'de> for PrefixedId<K> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// Declares an id kind and its alias: `define_id!(MerchantId, Merchant, "mer")`.
#[macro_export]
macro_rules! define_id {
    ($alias:ident, $kind:ident, $prefix:literal) => {
        #[doc = concat!("Marker for ids prefixed `", $prefix, "_`.")]
        #[derive(Debug)]
        pub enum $kind {}
        impl $crate::id::IdKind for $kind {
            const PREFIX: &'static str = $prefix;
        }
        #[doc = concat!("An id prefixed `", $prefix, "_`.")]
        pub type $alias = $crate::id::PrefixedId<$kind>;
    };
}

#[cfg(test)]
mod tests {

    use crate::entropy::OsEntropy;

    define_id!(TestId, TestKind, "tst");

    #[test]
    fn ids_made_close_in_time_share_a_prefix_and_still_differ() {
        let a = TestId::generate_at(&OsEntropy, 1_790_000_000_000);
        let b = TestId::generate_at(&OsEntropy, 1_790_000_000_100);
        assert_eq!(TestId::parse(a.as_str()), Ok(a.clone()));
        assert_eq!(a.as_str()[..12], b.as_str()[..12]);
        assert_ne!(a, b);
        let same_time = TestId::generate_at(&OsEntropy, 1_790_000_000_000);
        assert_ne!(a, same_time);
    }

    #[test]
    fn generated_ids_parse() {
        let id = TestId::generate(&OsEntropy);
        assert!(id.as_str().starts_with("tst_"));
        assert_eq!(TestId::parse(id.as_str()), Ok(id));
    }

    #[test]
    fn rejects_wrong_prefix_and_shape() {
        assert!(TestId::parse("mer_aaaaaaaaaaaaaaaaaaaaaaaaaa").is_err());
        assert!(TestId::parse("tst_AAAAAAAAAAAAAAAAAAAAAAAAAA").is_err());
        assert!(TestId::parse("tst_short").is_err());
        assert!(TestId::parse("tst_aaaaaaaaaaaaaaaaaaaaaaaaa1").is_err());
        assert!(TestId::parse("tst_aaaaaaaaaaaaaaaaaaaaaaaaaa").is_ok());
    }
}
