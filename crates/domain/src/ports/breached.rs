//! The breached-password port: is this SHA-1 in a breach corpus? Implemented by the offline
//! corpus file (`strongroom-store`, built by `strongroom passwords import`) and by Have I Been
//! Pwned's k-anonymity range API (`strongroom-connectors`).
//! Must never: receive the password itself (only its SHA-1, the form the corpora use), send more
//! than the hash's first five hexadecimal digits off the machine, or log the hash.

use async_trait::async_trait;

/// A source that could not answer (I/O error, timeout, an unexpected answer). The message is for
/// logs and never holds the hash.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BreachSourceError(pub String);

/// A corpus of breached passwords, keyed by the SHA-1 of the password's UTF-8 bytes.
#[async_trait]
pub trait BreachedPasswords: Send + Sync + std::fmt::Debug {
    /// A short name for logs and metrics labels: `file`, `range_api`.
    fn name(&self) -> &'static str;

    /// Whether `sha1` is in the corpus (a truncated corpus may answer yes for a hash it does not
    /// hold, at its documented rate; never no for one it holds).
    async fn contains(&self, sha1: &[u8; 20]) -> Result<bool, BreachSourceError>;
}
