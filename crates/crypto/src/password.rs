//! Password hashing: Argon2id in PHC string form (`$argon2id$v=19$m=…,t=…,p=…$salt$hash`).
//!
//! Owns: the parameters, hashing with a caller-supplied salt, verification of any stored PHC
//! string (older parameters included), and whether a stored hash should be recomputed.
//! Must never: accept an algorithm other than Argon2id when verifying, keep the password after
//! hashing, or run on an async executor thread (callers hash on a bounded blocking pool).

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

/// Argon2id cost parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PasswordParams {
    /// Memory in KiB (OWASP minimum 19,456 = 19 MiB).
    pub memory_kib: u32,
    /// Passes.
    pub iterations: u32,
    /// Lanes.
    pub parallelism: u32,
}

impl PasswordParams {
    /// OWASP's minimum for Argon2id: m = 19 MiB, t = 2, p = 1.
    pub const OWASP_MINIMUM: PasswordParams = PasswordParams { memory_kib: 19 * 1024, iterations: 2, parallelism: 1 };

    /// Whether these parameters meet [`PasswordParams::OWASP_MINIMUM`].
    pub fn meets_minimum(&self) -> bool {
        self.memory_kib >= Self::OWASP_MINIMUM.memory_kib
            && self.iterations >= Self::OWASP_MINIMUM.iterations
            && self.parallelism >= 1
    }

    fn argon2(&self) -> Result<Argon2<'static>, PasswordError> {
        let params = Params::new(self.memory_kib, self.iterations, self.parallelism, Some(32))
            .map_err(|_| PasswordError::Parameters)?;
        Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
    }
}

impl Default for PasswordParams {
    fn default() -> Self {
        Self::OWASP_MINIMUM
    }
}

/// Why hashing or verification could not run (a wrong password is not an error: `Ok(false)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PasswordError {
    /// The parameters are outside Argon2's limits.
    #[error("argon2 parameters are out of range")]
    Parameters,
    /// The stored string is not an Argon2id PHC string.
    #[error("the stored password hash is not an Argon2id PHC string")]
    Malformed,
}

/// Hashes a password with a 16-byte salt from the caller's random source.
pub fn hash(params: &PasswordParams, password: &str, salt: &[u8; 16]) -> Result<String, PasswordError> {
    let salt = SaltString::encode_b64(salt).map_err(|_| PasswordError::Parameters)?;
    let hashed = params.argon2()?.hash_password(password.as_bytes(), &salt).map_err(|_| PasswordError::Parameters)?;
    Ok(hashed.to_string())
}

/// Verifies a password against a stored PHC string, with the parameters the string names.
pub fn verify(stored: &str, password: &str) -> Result<bool, PasswordError> {
    let parsed = PasswordHash::new(stored).map_err(|_| PasswordError::Malformed)?;
    if parsed.algorithm.as_str() != "argon2id" {
        return Err(PasswordError::Malformed);
    }
    // The verifier takes the algorithm, version and parameters from the string itself.
    Ok(Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok())
}

/// Whether a stored hash uses weaker parameters than `params` (recompute it at the next login).
pub fn needs_rehash(stored: &str, params: &PasswordParams) -> bool {
    let Ok(parsed) = PasswordHash::new(stored) else { return true };
    let Ok(found) = Params::try_from(&parsed) else { return true };
    parsed.algorithm.as_str() != "argon2id"
        || found.m_cost() < params.memory_kib
        || found.t_cost() < params.iterations
        || found.p_cost() < params.parallelism
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    /// Small parameters keep the unit tests fast; the format is the same.
    const FAST: PasswordParams = PasswordParams { memory_kib: 64, iterations: 1, parallelism: 1 };

    #[test]
    fn hashes_verify_and_are_phc_argon2id() {
        let phc = hash(&FAST, "correct horse battery staple", &[7u8; 16]).unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=64,t=1,p=1$"), "{phc}");
        assert!(verify(&phc, "correct horse battery staple").unwrap());
        assert!(!verify(&phc, "correct horse battery stapler").unwrap());
    }

    #[test]
    fn other_algorithms_are_refused() {
        let argon2i = "$argon2i$v=19$m=65536,t=2,p=1$c29tZXNhbHQ$wWKIMhR9lyDFvRz9YTZweHKfbftvj+qf+YFY4NeBbtA";
        assert_eq!(verify(argon2i, "password"), Err(PasswordError::Malformed));
        assert_eq!(verify("plain", "password"), Err(PasswordError::Malformed));
    }

    /// RFC 9106 §5.3, the Argon2id test vector (with its secret and associated data, which the
    /// PHC form does not use, but the core function is the same).
    #[test]
    fn rfc9106_argon2id_vector() {
        let params = argon2::ParamsBuilder::new()
            .m_cost(32)
            .t_cost(3)
            .p_cost(4)
            .data(argon2::AssociatedData::new(&[4u8; 12]).unwrap())
            .output_len(32)
            .build()
            .unwrap();
        let argon = Argon2::new_with_secret(&[3u8; 8], Algorithm::Argon2id, Version::V0x13, params).unwrap();
        let mut tag = [0u8; 32];
        argon.hash_password_into(&[1u8; 32], &[2u8; 16], &mut tag).unwrap();
        let expected = "0d640df58d78766c08c037a34a8b53c9d01ef0452d75b65eb52520e96b01e659";
        let hex: String = tag.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, expected);
    }

    #[test]
    fn weaker_hashes_need_a_rehash() {
        let phc = hash(&FAST, "pw", &[1u8; 16]).unwrap();
        assert!(needs_rehash(&phc, &PasswordParams::OWASP_MINIMUM));
        assert!(!needs_rehash(&phc, &FAST));
        assert!(PasswordParams::OWASP_MINIMUM.meets_minimum());
        assert!(!FAST.meets_minimum());
    }
}
