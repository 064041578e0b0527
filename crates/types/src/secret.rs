//! [`Secret<T>`]: a value that must not leak by accident.
//!
//! The wrapper has a masked `Debug`, no `Display`, no `Serialize`, and zeroizes its content on drop.
//! The only way to read the value is [`Secret::expose`], a name that is easy to grep for in review.

use std::fmt;

use zeroize::Zeroize;

/// A secret value. `Debug` prints `Secret([REDACTED])`; there is deliberately no `Display`,
/// `Serialize` or `PartialEq` (use a constant-time comparison). Clones are zeroized on drop too.
pub struct Secret<T: Zeroize>(T);

impl<T: Zeroize> Secret<T> {
    /// Wraps a value.
    pub fn new(value: T) -> Self {
        Self(value)
    }

    /// Gives read access to the secret. Every call site is a place where the secret leaves the
    /// wrapper and deserves a reviewer's look.
    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T: Zeroize + Clone> Clone for Secret<T> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<T: Zeroize> Drop for Secret<T> {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl<T: Zeroize> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([REDACTED])")
    }
}

impl<T: Zeroize> From<T> for Secret<T> {
    fn from(value: T) -> Self {
        Self::new(value)
    }
}

impl<'de, T: Zeroize + serde::Deserialize<'de>> serde::Deserialize<'de> for Secret<T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        T::deserialize(deserializer).map(Secret::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_is_masked() {
        let secret = Secret::new(String::from("hunter2-canary"));
        let printed = format!("{secret:?} {:#?}", secret);
        assert!(!printed.contains("hunter2"), "{printed}");
        assert_eq!(format!("{secret:?}"), "Secret([REDACTED])");
    }

    #[test]
    fn expose_gives_the_value() {
        let secret = Secret::new(vec![1u8, 2, 3]);
        assert_eq!(secret.expose(), &vec![1, 2, 3]);
        assert_eq!(secret.clone().expose(), &vec![1, 2, 3]);
    }

    #[test]
    fn deserializes_without_serializing() {
        let secret: Secret<String> = serde_json::from_str("\"abc\"").unwrap_or_else(|_| Secret::new(String::new()));
        assert_eq!(secret.expose(), "abc");
    }
}
