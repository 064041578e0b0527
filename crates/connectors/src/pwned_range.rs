//! Have I Been Pwned's k-anonymity range API as a breach corpus: `GET {base}/range/{first 5 hex
//! digits of the SHA-1}` with `Add-Padding: true` answers the suffixes (35 digits) of every
//! breached hash with that prefix, `SUFFIX:COUNT` per line, padded with entries of count 0. The
//! password's own suffix is compared here. Calls go through the outbound client (its address and
//! TLS policy, no redirects, no proxies).
//!
//! Must never: send more of the hash than its first five digits (no query string, no body, no
//! header derived from it), log the hash or the path, or read an answer of unbounded size.

use async_trait::async_trait;
use strongroom_domain::ports::{BreachSourceError, BreachedPasswords};
use zeroize::Zeroizing;

use crate::outbound::{OutboundError, OutboundSettings, check_url, client};

/// The largest answer read (a real one is about 30 KiB with padding).
const MAX_BODY: usize = 1 << 20;

/// The range API at a base URL, e.g. `https://api.pwnedpasswords.com`.
#[derive(Debug)]
pub struct PwnedRange {
    client: reqwest::Client,
    base: String,
}

impl PwnedRange {
    /// A client of the API at `base_url` under the outbound policy of `settings` (whose timeouts
    /// bound each lookup).
    pub fn new(base_url: &str, settings: &OutboundSettings) -> Result<Self, OutboundError> {
        let url = check_url(base_url, settings)?;
        if url.query().is_some() || url.fragment().is_some() {
            return Err(OutboundError::InvalidUrl("the range API's base URL takes no query or fragment".into()));
        }
        Ok(Self { client: client(settings)?, base: url.as_str().trim_end_matches('/').to_owned() })
    }
}

fn upper_hex(bytes: &[u8]) -> Zeroizing<String> {
    const DIGITS: &[u8; 16] = b"0123456789ABCDEF";
    let mut text = Zeroizing::new(String::with_capacity(bytes.len() * 2));
    for byte in bytes {
        for nibble in [byte >> 4, byte & 0x0f] {
            text.push(char::from(DIGITS.get(usize::from(nibble)).copied().unwrap_or(b'0')));
        }
    }
    text
}

/// Whether a range answer lists `suffix` with a count above 0 (padding entries have count 0).
fn listed(body: &[u8], suffix: &str) -> bool {
    body.split(|b| *b == b'\n').any(|line| {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|b| *b == b':') else { return false };
        let (found, count) = line.split_at(colon);
        found.eq_ignore_ascii_case(suffix.as_bytes())
            && std::str::from_utf8(count.get(1..).unwrap_or_default())
                .ok()
                .and_then(|c| c.trim().parse::<u64>().ok())
                .is_some_and(|c| c > 0)
    })
}

#[async_trait]
impl BreachedPasswords for PwnedRange {
    fn name(&self) -> &'static str {
        "range_api"
    }

    async fn contains(&self, sha1: &[u8; 20]) -> Result<bool, BreachSourceError> {
        let failed = |e: OutboundError| BreachSourceError(format!("range API: {e}"));
        let hex = upper_hex(sha1);
        let (prefix, suffix) = hex.split_at(5);
        let mut response = self
            .client
            .get(format!("{}/range/{prefix}", self.base))
            .header("Add-Padding", "true")
            .send()
            .await
            .map_err(|e| failed(e.into()))?;
        if !response.status().is_success() {
            return Err(BreachSourceError(format!("range API: answered {}", response.status().as_u16())));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| failed(e.into()))? {
            if body.len() + chunk.len() > MAX_BODY {
                return Err(BreachSourceError(format!("range API: the answer exceeds {MAX_BODY} bytes")));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(listed(&body, suffix))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn suffixes_are_matched_whole_and_padding_is_not_a_match() {
        let body = b"0018A45C4D1DEF81644B54AB7F969B88D65:1\r\n00D4F6E8FA6EECAD2A3AA415EEC418D38EC:0\r\n1E4C9B93F3F0682250B6CF8331B7EE68FD8:9545824";
        assert!(listed(body, "1E4C9B93F3F0682250B6CF8331B7EE68FD8"));
        assert!(listed(body, "0018a45c4d1def81644b54ab7f969b88d65"), "case does not matter");
        assert!(!listed(body, "00D4F6E8FA6EECAD2A3AA415EEC418D38EC"), "count 0 is padding");
        assert!(!listed(body, "1E4C9B93F3F0682250B6CF8331B7EE68FD"), "a prefix of a suffix is not one");
        assert!(!listed(b"", "1E4C9B93F3F0682250B6CF8331B7EE68FD8"));
        assert_eq!(upper_hex(&[0x5b, 0xaa, 0x0f]).as_str(), "5BAA0F");
    }

    #[test]
    fn the_base_url_passes_the_outbound_policy() {
        let settings = OutboundSettings::default();
        assert!(PwnedRange::new("https://api.pwnedpasswords.com/", &settings).is_ok());
        assert!(matches!(PwnedRange::new("http://127.0.0.1:9", &settings), Err(OutboundError::PrivateAddress { .. })));
        assert!(PwnedRange::new("https://api.pwnedpasswords.com/?x=1", &settings).is_err());
        let loopback = OutboundSettings { allow_loopback: true, ..settings };
        assert!(PwnedRange::new("http://127.0.0.1:9", &loopback).is_ok());
    }
}
