//! Randomness enters the program only through the [`Entropy`] trait.
//!
//! Production uses [`OsEntropy`] (the operating system's CSPRNG). Tests may substitute a
//! deterministic source. Must never: fall back to a non-cryptographic generator.

use std::fmt;

/// A source of cryptographically secure random bytes.
pub trait Entropy: Send + Sync + fmt::Debug {
    /// Fills `buf` with random bytes. Failure of the OS random source is unrecoverable.
    fn fill(&self, buf: &mut [u8]);

    /// An array of random bytes.
    fn array<const N: usize>(&self) -> [u8; N]
    where
        Self: Sized,
    {
        let mut out = [0u8; N];
        self.fill(&mut out);
        out
    }
}

/// Random bytes from the operating system.
#[derive(Debug, Default, Clone, Copy)]
pub struct OsEntropy;

impl Entropy for OsEntropy {
    #[expect(clippy::panic, reason = "no secure randomness means no safe way to continue")]
    fn fill(&self, buf: &mut [u8]) {
        if let Err(err) = getrandom::fill(buf) {
            panic!("the operating system's random source failed: {err}");
        }
    }
}

/// Random bytes into a fixed array, usable through `&dyn Entropy`.
pub fn random_array<const N: usize>(entropy: &dyn Entropy) -> [u8; N] {
    let mut out = [0u8; N];
    entropy.fill(&mut out);
    out
}
