//! The KMS port: a root key that only wraps and unwraps other keys.
//!
//! [`LocalKeyFile`] is the development provider: a 256-bit key in a file created with mode 0600.
//! It is flagged as unfit for production by `doctor` (a later issue). Network providers (Vault /
//! OpenBao transit, AWS KMS) implement the same trait in `connectors`.
//! Must never: return or log the root key, or wrap without binding the wrapped key to its purpose.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use strongroom_types::{Entropy, Secret};

use crate::Key256;
use crate::envelope;

/// What can go wrong talking to a KMS.
#[derive(Debug, thiserror::Error)]
pub enum KmsError {
    /// The KMS could not be reached or refused to answer; retrying later may work.
    #[error("the key management service is unavailable: {0}")]
    Unavailable(String),
    /// A wrapped key failed to unwrap: wrong root key, wrong context, or tampering.
    #[error("a wrapped key failed its integrity check")]
    Integrity,
    /// The KMS is set up in a way strongroom refuses (e.g. an OpenBao transit key that is not
    /// derived); found at start, and not fixed by retrying.
    #[error("the key management service is misconfigured: {0}")]
    Misconfigured(String),
    /// The root key file could not be read or created.
    #[error("root key file {path}: {reason}")]
    KeyFile {
        /// The file.
        path: PathBuf,
        /// What went wrong (never key material).
        reason: String,
    },
}

/// A root of trust that wraps data keys. `context` names what the wrapped key is for and is bound
/// into the wrapping, so a wrapped key can't be unwrapped as something else.
#[async_trait]
pub trait Kms: Send + Sync + fmt::Debug {
    /// A stable, non-secret name of the root key (shown in `config check` and stored beside wrapped keys).
    fn key_id(&self) -> String;

    /// Whether this provider is fit for production use.
    fn production_grade(&self) -> bool;

    /// Wraps `key` for `context`.
    async fn wrap(&self, context: &str, key: &Key256) -> Result<Vec<u8>, KmsError>;

    /// Unwraps what [`Kms::wrap`] produced for the same `context`.
    async fn unwrap(&self, context: &str, wrapped: &[u8]) -> Result<Key256, KmsError>;

    /// Re-encrypts a wrapped key under the root key's newest version (after the KMS rotated it),
    /// for the same `context`. Providers that can do this without exposing the key override it;
    /// the default unwraps and wraps again.
    async fn rewrap(&self, context: &str, wrapped: &[u8]) -> Result<Vec<u8>, KmsError> {
        let key = self.unwrap(context, wrapped).await?;
        self.wrap(context, &key).await
    }
}

/// A root key kept in a local file: fine for development, flagged for production.
pub struct LocalKeyFile {
    path: PathBuf,
    key: Key256,
    key_id: String,
    entropy: std::sync::Arc<dyn Entropy>,
}

impl fmt::Debug for LocalKeyFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalKeyFile").field("path", &self.path).finish_non_exhaustive()
    }
}

const FILE_HEADER: &str = "strongroom-root-key-v1:";

impl LocalKeyFile {
    /// Opens the key file, creating it (mode 0600, fresh random key) when absent.
    /// Returns the provider and whether the file was created now.
    pub fn open_or_create(path: &Path, entropy: std::sync::Arc<dyn Entropy>) -> Result<(Self, bool), KmsError> {
        let fail = |reason: String| KmsError::KeyFile { path: path.to_owned(), reason };
        // The permissions are checked on the open file before it is read; its text is wiped
        // once parsed.
        match crate::secret_file::read_secret_file(path) {
            Ok(text) => {
                let key = parse_key_file(&text).ok_or_else(|| fail("not a strongroom root key file".into()))?;
                Ok((Self::with_key(path, key, entropy), false))
            }
            Err(crate::secret_file::SecretFileError::NotFound) => {
                let key: Key256 = Secret::new(random_key(entropy.as_ref()));
                write_new_key_file(path, &key).map_err(fail)?;
                Ok((Self::with_key(path, key, entropy), true))
            }
            Err(err) => Err(fail(err.to_string())),
        }
    }

    /// Opens an existing key file; never creates one.
    pub fn open_existing(path: &Path, entropy: std::sync::Arc<dyn Entropy>) -> Result<Self, KmsError> {
        if !path.exists() {
            return Err(KmsError::KeyFile { path: path.to_owned(), reason: "does not exist".into() });
        }
        Self::open_or_create(path, entropy).map(|(kms, _)| kms)
    }

    fn with_key(path: &Path, key: Key256, entropy: std::sync::Arc<dyn Entropy>) -> Self {
        // A non-secret identifier: the first bytes of a keyed digest of a fixed label.
        let id = crate::KeyedDigest::new(key.clone()).digest(b"strongroom/kms/local/key-id");
        let hex: String = id.iter().take(8).map(|b| format!("{b:02x}")).collect();
        Self { path: path.to_owned(), key, key_id: format!("local:{hex}"), entropy }
    }

    fn associated_data(&self, context: &str) -> Vec<u8> {
        format!("strongroom/kms/local/v1|{}|{context}", self.key_id()).into_bytes()
    }
}

fn random_key(entropy: &dyn Entropy) -> [u8; 32] {
    strongroom_types::entropy::random_array(entropy)
}

fn parse_key_file(text: &str) -> Option<Key256> {
    let encoded = text.trim().strip_prefix(FILE_HEADER)?;
    let mut bytes = STANDARD.decode(encoded).ok()?;
    let key: Option<[u8; 32]> = bytes.as_slice().try_into().ok();
    zeroize::Zeroize::zeroize(&mut bytes);
    key.map(Secret::new)
}

fn write_new_key_file(path: &Path, key: &Key256) -> Result<(), String> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(|e| e.to_string())?;
    let mut text = format!("{FILE_HEADER}{}\n", STANDARD.encode(key.expose()));
    let written = file.write_all(text.as_bytes()).and_then(|()| file.sync_all());
    zeroize::Zeroize::zeroize(&mut text);
    written.map_err(|e| e.to_string())
}

#[async_trait]
impl Kms for LocalKeyFile {
    fn key_id(&self) -> String {
        self.key_id.clone()
    }

    fn production_grade(&self) -> bool {
        false
    }

    async fn wrap(&self, context: &str, key: &Key256) -> Result<Vec<u8>, KmsError> {
        Ok(envelope::seal(&self.key, &self.associated_data(context), key.expose(), self.entropy.as_ref()))
    }

    async fn unwrap(&self, context: &str, wrapped: &[u8]) -> Result<Key256, KmsError> {
        let mut plain =
            envelope::open(&self.key, &self.associated_data(context), wrapped).map_err(|_| KmsError::Integrity)?;
        let key: Option<[u8; 32]> = plain.as_slice().try_into().ok();
        zeroize::Zeroize::zeroize(&mut plain);
        key.map(Secret::new).ok_or(KmsError::Integrity)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use strongroom_types::OsEntropy;

    #[tokio::test]
    async fn creates_with_0600_and_reopens_the_same_key() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| unreachable!("{e}"));
        let path = dir.path().join("root.key");
        let (kms, created) =
            LocalKeyFile::open_or_create(&path, Arc::new(OsEntropy)).unwrap_or_else(|e| unreachable!("{e}"));
        assert!(created);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).map(|m| m.permissions().mode() & 0o777).unwrap_or(0);
            assert_eq!(mode, 0o600);
        }
        let data_key: Key256 = Secret::new([7u8; 32]);
        let wrapped = kms.wrap("api_key_digest", &data_key).await.unwrap_or_default();
        let (again, created) =
            LocalKeyFile::open_or_create(&path, Arc::new(OsEntropy)).unwrap_or_else(|e| unreachable!("{e}"));
        assert!(!created);
        assert_eq!(again.key_id(), kms.key_id());
        let unwrapped = again.unwrap("api_key_digest", &wrapped).await.map(|k| *k.expose());
        assert_eq!(unwrapped.ok(), Some([7u8; 32]));
        assert!(matches!(again.unwrap("other_purpose", &wrapped).await, Err(KmsError::Integrity)));
    }

    #[test]
    fn refuses_group_readable_key_file() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| unreachable!("{e}"));
        let path = dir.path().join("root.key");
        let _ = LocalKeyFile::open_or_create(&path, Arc::new(OsEntropy));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            for mode in [0o644, 0o640, 0o604] {
                let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode));
                let err = LocalKeyFile::open_or_create(&path, Arc::new(OsEntropy)).map(|_| ()).unwrap_err();
                assert!(err.to_string().contains("chmod 600"), "{err}");
            }
            // The permissions are checked before the file is read: a file that is not a key at
            // all is refused for its permissions first.
            let other = dir.path().join("other.key");
            let _ = std::fs::write(&other, "not a key");
            let _ = std::fs::set_permissions(&other, std::fs::Permissions::from_mode(0o644));
            let err = LocalKeyFile::open_or_create(&other, Arc::new(OsEntropy)).map(|_| ()).unwrap_err();
            assert!(err.to_string().contains("permissions are 0644"), "{err}");
            let _ = std::fs::set_permissions(&other, std::fs::Permissions::from_mode(0o600));
            let err = LocalKeyFile::open_or_create(&other, Arc::new(OsEntropy)).map(|_| ()).unwrap_err();
            assert!(err.to_string().contains("not a strongroom root key file"), "{err}");
        }
    }
}
