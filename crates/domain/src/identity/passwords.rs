//! Passwords: the policy a new password must meet (NIST SP 800-63B rev. 4 lengths, no composition
//! rules, common and guessable passwords refused with zxcvbn's estimate and dictionaries, the
//! shop's context words, breached passwords refused through [`super::breached`]), and Argon2id
//! hashing on a bounded blocking pool.
//!
//! Must never: hash or verify on an async executor thread, let a flood of logins queue without
//! bound (more than [`HashingSettings::queue_limit`] waiting hashes are refused at once), return
//! faster for an unknown account than for a wrong password, or log a password.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use strongroom_crypto::password::{self, PasswordParams};
use strongroom_types::{Entropy, Secret};
use tokio::sync::Semaphore;

use super::breached::BreachCheck;
use crate::error::{DomainError, FieldError};

/// Longest accepted password, in characters (NIST asks for at least 64).
pub const MAX_CHARS: usize = 256;

/// Characters zxcvbn looks at (its matching is superlinear; the rest only adds strength).
const ESTIMATE_CHARS: usize = 100;

/// Lowest zxcvbn score accepted: 3, "safely unguessable: moderate protection from an offline
/// slow-hash scenario".
const MIN_SCORE: u8 = 3;

/// The problem code of a password found in a breach corpus.
pub const BREACHED_PASSWORD: &str = "breached_password";

/// What a password may look like.
#[derive(Debug, Clone)]
pub struct PasswordPolicy {
    /// Shortest password when it is the only factor (NIST: 15).
    pub min_single_factor: usize,
    /// Shortest password when a second factor is enrolled (NIST: 8).
    pub min_with_mfa: usize,
    /// Words a password must not be built on: the shop's name and domain.
    pub context_words: Vec<String>,
    /// The breach corpora new passwords are looked up in ([`PasswordPolicy::check_new`]).
    pub breaches: Arc<BreachCheck>,
}

impl Default for PasswordPolicy {
    fn default() -> Self {
        Self { min_single_factor: 15, min_with_mfa: 8, context_words: Vec::new(), breaches: Arc::default() }
    }
}

/// Strength feedback a page can show as guidance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Strength {
    /// zxcvbn's score, 0 (too guessable) to 4 (very unguessable).
    pub score: u8,
    /// Whether the policy accepts it.
    pub acceptable: bool,
    /// Why it is weak, if it is.
    pub warning: Option<String>,
    /// How to make it stronger.
    pub suggestions: Vec<String>,
    /// The shortest length the policy asks for here.
    pub min_length: usize,
}

impl PasswordPolicy {
    /// Rates a password. `personal` are the user's own words (their email's parts).
    pub fn rate(&self, password: &str, personal: &[&str], has_mfa: bool) -> Strength {
        let min_length = if has_mfa { self.min_with_mfa } else { self.min_single_factor };
        let chars = password.chars().count();
        let head: String = password.chars().take(ESTIMATE_CHARS).collect();
        let mut inputs: Vec<&str> = self.context_words.iter().map(String::as_str).collect();
        inputs.extend_from_slice(personal);
        let estimate = zxcvbn::zxcvbn(&head, &inputs);
        let score = u8::from(estimate.score());
        let (mut warning, mut suggestions) = match estimate.feedback() {
            Some(feedback) => (
                feedback.warning().map(|w| w.to_string()),
                feedback.suggestions().iter().map(ToString::to_string).collect(),
            ),
            None => (None, Vec::new()),
        };
        let lowered = password.to_lowercase();
        let contains_context =
            inputs.iter().any(|word| word.chars().count() >= 4 && lowered.contains(&word.to_lowercase()));
        if contains_context && warning.is_none() {
            warning = Some("Avoid the shop's name and words from your email address.".to_owned());
        }
        if chars < min_length {
            suggestions.insert(
                0,
                format!("Use at least {min_length} characters: a few unrelated words are easy to remember."),
            );
        }
        let acceptable = chars >= min_length && chars <= MAX_CHARS && score >= MIN_SCORE && !contains_context;
        if !acceptable && warning.is_none() && score < MIN_SCORE {
            warning = Some("This password would be easy to guess.".to_owned());
        }
        Strength { score, acceptable, warning, suggestions, min_length }
    }

    /// Checks a new password; the error names `pointer` and says why, never echoing it.
    pub fn check(&self, password: &str, personal: &[&str], has_mfa: bool, pointer: &str) -> Result<(), DomainError> {
        let chars = password.chars().count();
        let min = if has_mfa { self.min_with_mfa } else { self.min_single_factor };
        let refuse = |detail: String| {
            Err(DomainError::Rejected { code: "weak_password", errors: vec![FieldError::new(pointer, detail)] })
        };
        if chars < min {
            return refuse(format!("must be at least {min} characters"));
        }
        if chars > MAX_CHARS {
            return refuse(format!("must be at most {MAX_CHARS} characters"));
        }
        let strength = self.rate(password, personal, has_mfa);
        if !strength.acceptable {
            let why = strength.warning.unwrap_or_else(|| "is too easy to guess".to_owned());
            return refuse(format!("is too easy to guess: {why}"));
        }
        Ok(())
    }

    /// [`PasswordPolicy::check`], then the breach corpora: a password found there is refused with
    /// `breached_password` at `pointer`. A corpus that cannot answer is skipped (fail open).
    pub async fn check_new(
        &self,
        password: &str,
        personal: &[&str],
        has_mfa: bool,
        pointer: &str,
    ) -> Result<(), DomainError> {
        self.check(password, personal, has_mfa, pointer)?;
        if self.breaches.is_breached(password).await {
            return Err(DomainError::Rejected {
                code: BREACHED_PASSWORD,
                errors: vec![FieldError::new(
                    pointer,
                    "appears in a list of passwords exposed in data breaches: choose one you have not used anywhere else",
                )],
            });
        }
        Ok(())
    }
}

/// Limits of the hashing pool.
#[derive(Debug, Clone, Copy)]
pub struct HashingSettings {
    /// Argon2id parameters for new hashes.
    pub params: PasswordParams,
    /// Hashes computed at once (each holds `params.memory_kib` of memory).
    pub concurrency: usize,
    /// Hashes that may wait for a slot; more are refused with 503 at once.
    pub queue_limit: usize,
}

impl Default for HashingSettings {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get);
        Self { params: PasswordParams::default(), concurrency: cores.saturating_sub(1).max(1), queue_limit: 64 }
    }
}

/// Argon2id on a bounded pool of blocking threads.
#[derive(Debug)]
pub struct PasswordHasher {
    settings: HashingSettings,
    permits: Arc<Semaphore>,
    waiting: AtomicUsize,
    entropy: Arc<dyn Entropy>,
    /// A hash of a random password with the current parameters: unknown accounts are verified
    /// against it, so they cost the same work as known ones.
    dummy: String,
}

impl PasswordHasher {
    /// A hasher; computes the dummy hash once (on a blocking thread).
    pub async fn new(settings: HashingSettings, entropy: Arc<dyn Entropy>) -> Result<Self, DomainError> {
        let salt: [u8; 16] = strongroom_types::entropy::random_array(entropy.as_ref());
        let filler: [u8; 16] = strongroom_types::entropy::random_array(entropy.as_ref());
        let filler = data_encoding::BASE32_NOPAD.encode(&filler);
        let params = settings.params;
        let dummy = tokio::task::spawn_blocking(move || password::hash(&params, &filler, &salt))
            .await
            .map_err(|e| crate::StoreError::Other(format!("hashing task failed: {e}")))?
            .map_err(|e| crate::StoreError::Other(e.to_string()))?;
        Ok(Self {
            permits: Arc::new(Semaphore::new(settings.concurrency.max(1))),
            settings,
            waiting: AtomicUsize::new(0),
            entropy,
            dummy,
        })
    }

    /// The parameters new hashes use.
    pub fn params(&self) -> PasswordParams {
        self.settings.params
    }

    async fn run<T: Send + 'static>(&self, work: impl FnOnce() -> T + Send + 'static) -> Result<T, DomainError> {
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.settings.queue_limit + self.settings.concurrency {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(DomainError::Busy);
        }
        let permit = self.permits.clone().acquire_owned().await;
        let result = match permit {
            Ok(permit) => tokio::task::spawn_blocking(move || {
                let out = work();
                drop(permit);
                out
            })
            .await
            .map_err(|e| DomainError::Store(crate::StoreError::Other(format!("hashing task failed: {e}")))),
            Err(_) => Err(DomainError::Busy),
        };
        self.waiting.fetch_sub(1, Ordering::AcqRel);
        result
    }

    /// Hashes a new password.
    pub async fn hash(&self, candidate: Secret<String>) -> Result<String, DomainError> {
        let salt: [u8; 16] = strongroom_types::entropy::random_array(self.entropy.as_ref());
        let params = self.settings.params;
        self.run(move || password::hash(&params, candidate.expose(), &salt))
            .await?
            .map_err(|e| DomainError::Store(crate::StoreError::Other(e.to_string())))
    }

    /// Verifies a password against a stored hash, or against the dummy hash when there is none
    /// (same work, answer always false).
    pub async fn verify(&self, stored: Option<&str>, candidate: Secret<String>) -> Result<bool, DomainError> {
        let (hash, real) = match stored {
            Some(hash) => (hash.to_owned(), true),
            None => (self.dummy.clone(), false),
        };
        let verified = self.run(move || password::verify(&hash, candidate.expose()).unwrap_or(false)).await?;
        Ok(real && verified)
    }

    /// Whether a stored hash should be recomputed with the current parameters.
    pub fn needs_rehash(&self, stored: &str) -> bool {
        password::needs_rehash(stored, &self.settings.params)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    fn policy() -> PasswordPolicy {
        PasswordPolicy { context_words: vec!["acmeshop".into()], ..PasswordPolicy::default() }
    }

    #[test]
    fn lengths_follow_nist() {
        let p = policy();
        assert!(p.check("vanilla orbit", &[], false, "/password").is_err(), "13 characters, no MFA");
        assert!(p.check("vanilla orbit trombone", &[], false, "/password").is_ok());
        assert!(p.check("qK7#vz!mW2", &[], true, "/password").is_ok(), "10 characters with MFA");
        assert!(p.check(&"x".repeat(MAX_CHARS + 1), &[], true, "/password").is_err());
    }

    #[test]
    fn common_and_context_passwords_are_refused() {
        let p = policy();
        for weak in ["passwordpassword", "123456789012345", "qwertyuiopasdfgh", "iloveyouiloveyou1"] {
            let err = p.check(weak, &[], false, "/password").unwrap_err();
            assert!(matches!(err, DomainError::Rejected { code: "weak_password", .. }), "{weak}");
        }
        assert!(p.check("my acmeshop account 2026", &[], false, "/password").is_err());
        assert!(p.check("annabelle-lee-1849 ok", &["annabelle"], false, "/password").is_err());
    }

    #[test]
    fn any_unicode_is_accepted_and_feedback_is_given() {
        let p = policy();
        assert!(p.check("Zwölf Boxkämpfer jagen Viktor", &[], false, "/password").is_ok());
        assert!(p.check("日本語のパスワードはとても長い", &[], false, "/password").is_ok());
        let weak = p.rate("password1", &[], false);
        assert!(!weak.acceptable);
        assert!(weak.warning.is_some());
        assert!(!weak.suggestions.is_empty());
    }

    #[tokio::test]
    async fn hasher_verifies_and_the_dummy_never_matches() {
        let settings = HashingSettings {
            params: PasswordParams { memory_kib: 64, iterations: 1, parallelism: 1 },
            concurrency: 1,
            queue_limit: 4,
        };
        let hasher = PasswordHasher::new(settings, Arc::new(strongroom_types::OsEntropy)).await.unwrap();
        let hash = hasher.hash(Secret::new("a long passphrase".to_owned())).await.unwrap();
        assert!(hasher.verify(Some(&hash), Secret::new("a long passphrase".to_owned())).await.unwrap());
        assert!(!hasher.verify(Some(&hash), Secret::new("a long passphrasE".to_owned())).await.unwrap());
        assert!(!hasher.verify(None, Secret::new("a long passphrase".to_owned())).await.unwrap());
    }
}
