//! TOTP (RFC 6238 over RFC 4226 HOTP): HMAC-SHA-1, 30-second steps, 6 digits, the form every
//! authenticator app understands.
//!
//! Written here rather than taken from a crate because verification must say *which* step matched,
//! so that the caller can store it and refuse any code of that step or an earlier one (replay);
//! the HMAC itself comes from RustCrypto. Tested against RFC 6238 appendix B.
//! Must never: accept a code of a step at or before the last accepted one, or compare codes with `==`.

use hmac::{Hmac, Mac};
use sha1::Sha1;

/// Seconds per step.
pub const STEP_SECONDS: u64 = 30;

/// Digits of a code.
pub const DIGITS: u32 = 6;

/// The HOTP value of `counter` with `digits` digits (RFC 4226 §5.3).
pub fn hotp(secret: &[u8], counter: u64, digits: u32) -> u32 {
    #[expect(clippy::expect_used, reason = "HMAC-SHA-1 takes keys of any length")]
    let mut mac = Hmac::<Sha1>::new_from_slice(secret).expect("HMAC accepts any key length");
    mac.update(&counter.to_be_bytes());
    let digest = mac.finalize().into_bytes();
    let offset = usize::from(digest[19] & 0x0f);
    let binary = (u32::from(digest[offset]) & 0x7f) << 24
        | u32::from(digest[offset + 1]) << 16
        | u32::from(digest[offset + 2]) << 8
        | u32::from(digest[offset + 3]);
    binary % 10u32.pow(digits)
}

/// The step a Unix time falls in.
pub fn step_of(unix_seconds: u64) -> u64 {
    unix_seconds / STEP_SECONDS
}

/// The code of a step, zero-padded to [`DIGITS`] digits.
pub fn code_at(secret: &[u8], step: u64) -> String {
    format!("{:0width$}", hotp(secret, step, DIGITS), width = DIGITS as usize)
}

/// Checks `code` against the steps around `unix_seconds` (±`drift` steps), skipping every step at
/// or before `last_accepted`. Returns the step that matched.
pub fn verify(secret: &[u8], code: &str, unix_seconds: u64, drift: u64, last_accepted: Option<u64>) -> Option<u64> {
    let code = code.trim();
    if code.len() != DIGITS as usize || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let now = step_of(unix_seconds);
    let mut matched = None;
    // Every candidate is computed and compared in constant time, whichever matches.
    for step in now.saturating_sub(drift)..=now.saturating_add(drift) {
        let candidate = code_at(secret, step);
        let equal = crate::constant_time_eq(candidate.as_bytes(), code.as_bytes());
        if equal && last_accepted.is_none_or(|last| step > last) && matched.is_none() {
            matched = Some(step);
        }
    }
    matched
}

/// The `otpauth://` URI authenticator apps read from a QR code.
pub fn otpauth_uri(issuer: &str, account: &str, secret_base32: &str) -> String {
    let issuer_enc = percent_encode(issuer);
    let account_enc = percent_encode(account);
    format!(
        "otpauth://totp/{issuer_enc}:{account_enc}?secret={secret_base32}&issuer={issuer_enc}&algorithm=SHA1&digits={DIGITS}&period={STEP_SECONDS}"
    )
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    /// RFC 6238 appendix B, SHA-1 rows: the 20-byte ASCII key "12345678901234567890", 8 digits.
    #[test]
    fn rfc6238_appendix_b_sha1() {
        let secret = b"12345678901234567890";
        let vectors = [
            (59u64, 94_287_082u32),
            (1_111_111_109, 7_081_804),
            (1_111_111_111, 14_050_471),
            (1_234_567_890, 89_005_924),
            (2_000_000_000, 69_279_037),
            (20_000_000_000, 65_353_130),
        ];
        for (time, expected) in vectors {
            assert_eq!(hotp(secret, step_of(time), 8), expected, "T = {time}");
        }
    }

    /// RFC 4226 appendix D: the first HOTP values of the same key, 6 digits.
    #[test]
    fn rfc4226_appendix_d() {
        let expected = [755_224, 287_082, 359_152, 969_429, 338_314, 254_676, 287_922, 162_583, 399_871, 520_489];
        for (counter, value) in expected.iter().enumerate() {
            assert_eq!(hotp(b"12345678901234567890", counter as u64, 6), *value);
        }
    }

    #[test]
    fn drift_and_replay() {
        let secret = b"12345678901234567890";
        let now = 1_700_000_000;
        let step = step_of(now);
        let previous = code_at(secret, step - 1);
        assert_eq!(verify(secret, &previous, now, 1, None), Some(step - 1));
        assert_eq!(verify(secret, &previous, now, 1, Some(step - 1)), None, "replay of the same step");
        assert_eq!(verify(secret, &code_at(secret, step), now, 1, Some(step - 1)), Some(step));
        assert_eq!(verify(secret, &code_at(secret, step - 2), now, 1, None), None, "outside the drift");
        assert_eq!(verify(secret, "12345", now, 1, None), None);
        assert_eq!(verify(secret, "abcdef", now, 1, None), None);
    }

    #[test]
    fn uri_is_encoded() {
        let uri = otpauth_uri("Shop & Co", "ann@example.com", "JBSWY3DPEHPK3PXP");
        assert_eq!(
            uri,
            "otpauth://totp/Shop%20%26%20Co:ann%40example.com?secret=JBSWY3DPEHPK3PXP&issuer=Shop%20%26%20Co&algorithm=SHA1&digits=6&period=30"
        );
    }
}
