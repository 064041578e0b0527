//! Reading a file that holds a secret (the local root key, the DKIM signing key), as ssh reads a
//! private key: refused when its group or others have any access to it, checked on the opened file
//! before a byte is read; the text comes back in a buffer that is wiped when it is dropped.
//! Must never: read a secret from a file others can read, keep an unwiped copy of its text, or
//! put any of its bytes into an error.

use std::io::Read;
use std::path::Path;

use zeroize::{Zeroize, Zeroizing};

/// The largest secret file read (an RSA-4096 PEM key is about 3.3 KiB).
pub const MAX_SECRET_FILE: usize = 64 * 1024;

/// Why a secret file was not read. Never holds any of its contents.
#[derive(Debug, thiserror::Error)]
pub enum SecretFileError {
    /// The file does not exist.
    #[error("does not exist")]
    NotFound,
    /// Group or others have access: the mode is shown, with the fix.
    #[error("permissions are {0:04o}: a file holding a secret must be accessible by its owner only (chmod 600)")]
    TooOpen(u32),
    /// Not a regular file.
    #[error("is not a regular file")]
    NotAFile,
    /// Larger than [`MAX_SECRET_FILE`].
    #[error("is larger than {MAX_SECRET_FILE} bytes, which no key file is")]
    TooLarge,
    /// Not UTF-8 text.
    #[error("is not UTF-8 text")]
    NotText,
    /// Any other I/O failure.
    #[error("{0}")]
    Io(String),
}

/// Reads the text of a file that holds a secret. Refuses it when group or others have any
/// permission on it (`mode & 0o077`, as ssh does for private keys), checked on the open file.
pub fn read_secret_file(path: &Path) -> Result<Zeroizing<String>, SecretFileError> {
    let mut file = std::fs::File::open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => SecretFileError::NotFound,
        _ => SecretFileError::Io(e.to_string()),
    })?;
    let metadata = file.metadata().map_err(|e| SecretFileError::Io(e.to_string()))?;
    if !metadata.is_file() {
        return Err(SecretFileError::NotAFile);
    }
    check_mode(&metadata)?;
    // A buffer that never grows (so no unwiped copy is left behind by a reallocation).
    let mut buffer = Zeroizing::new(vec![0u8; MAX_SECRET_FILE]);
    let mut filled = 0;
    loop {
        if filled == MAX_SECRET_FILE {
            return Err(SecretFileError::TooLarge);
        }
        match file.read(&mut buffer[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(SecretFileError::Io(e.to_string())),
        }
    }
    buffer.truncate(filled);
    match String::from_utf8(std::mem::take(&mut *buffer)) {
        Ok(text) => Ok(Zeroizing::new(text)),
        Err(err) => {
            err.into_bytes().zeroize();
            Err(SecretFileError::NotText)
        }
    }
}

#[cfg(unix)]
fn check_mode(metadata: &std::fs::Metadata) -> Result<(), SecretFileError> {
    use std::os::unix::fs::PermissionsExt;
    let mode = metadata.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(SecretFileError::TooOpen(mode & 0o777));
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_mode(_metadata: &std::fs::Metadata) -> Result<(), SecretFileError> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_with(mode: u32, text: &[u8]) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret.pem");
        std::fs::write(&path, text).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        }
        (dir, path)
    }

    #[test]
    fn reads_an_owner_only_file() {
        for mode in [0o600, 0o400] {
            let (_dir, path) = file_with(mode, b"secret text\n");
            assert_eq!(read_secret_file(&path).unwrap().as_str(), "secret text\n");
        }
    }

    #[cfg(unix)]
    #[test]
    fn refuses_a_file_group_or_others_can_reach_and_says_how_to_fix_it() {
        for mode in [0o640, 0o644, 0o604, 0o660, 0o620, 0o602, 0o610] {
            let (_dir, path) = file_with(mode, b"canary-secret-41");
            let err = read_secret_file(&path).unwrap_err();
            assert!(matches!(err, SecretFileError::TooOpen(m) if m == mode), "{mode:o}: {err}");
            let message = err.to_string();
            assert!(message.contains(&format!("{mode:04o}")) && message.contains("chmod 600"), "{message}");
            assert!(!message.contains("canary"), "{message}");
        }
    }

    #[test]
    fn refuses_missing_directories_large_files_and_binary() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(read_secret_file(&dir.path().join("absent")), Err(SecretFileError::NotFound)));
        assert!(matches!(read_secret_file(dir.path()), Err(SecretFileError::NotAFile | SecretFileError::TooOpen(_))));
        let (_d, big) = file_with(0o600, &vec![b'a'; MAX_SECRET_FILE + 1]);
        assert!(matches!(read_secret_file(&big), Err(SecretFileError::TooLarge)));
        let (_d, exact) = file_with(0o600, &vec![b'a'; MAX_SECRET_FILE - 1]);
        assert_eq!(read_secret_file(&exact).unwrap().len(), MAX_SECRET_FILE - 1);
        let (_d, binary) = file_with(0o600, &[0xff, 0xfe, 0x00]);
        assert!(matches!(read_secret_file(&binary), Err(SecretFileError::NotText)));
    }
}
