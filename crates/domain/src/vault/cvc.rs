//! Card verification codes, held only in memory: sealed under a key made at start (never stored),
//! for at most ten minutes, handed out once (to the first authorisation) and gone after a restart.
//! Must never: write a CVC anywhere, or hand one out twice.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use strongroom_crypto::{Key256, envelope};
use strongroom_types::{Entropy, Secret, Timestamp};

/// The longest a CVC is held (PCI DSS forbids storing it after authorisation; we hold it only
/// until then, and never longer than this).
pub const MAX_CVC_TTL: Duration = Duration::from_secs(600);

/// Sealed CVCs by token id.
pub struct CvcStore {
    key: Key256,
    ttl_ms: i64,
    entries: Mutex<Entries>,
}

#[derive(Default)]
struct Entries {
    by_token: HashMap<String, (Vec<u8>, Timestamp)>,
    /// When expired entries were last swept out (at most once a second, so a put stays O(1)).
    swept_at: i64,
}

impl std::fmt::Debug for CvcStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CvcStore").field("ttl_ms", &self.ttl_ms).finish_non_exhaustive()
    }
}

fn aad(token: &str) -> Vec<u8> {
    format!("strongroom/vault/cvc/v1|{token}").into_bytes()
}

impl CvcStore {
    /// A store with a fresh in-memory key; `ttl` is capped at [`MAX_CVC_TTL`].
    pub fn new(ttl: Duration, entropy: &dyn Entropy) -> Self {
        let ttl = ttl.min(MAX_CVC_TTL);
        Self {
            key: Secret::new(strongroom_types::entropy::random_array(entropy)),
            ttl_ms: i64::try_from(ttl.as_millis()).unwrap_or(600_000),
            entries: Mutex::new(Entries::default()),
        }
    }

    /// Holds `cvc` for `token` from `now`.
    pub fn put(&self, token: &str, cvc: &Secret<String>, now: Timestamp, entropy: &dyn Entropy) {
        let sealed = envelope::seal(&self.key, &aad(token), cvc.expose().as_bytes(), entropy);
        if let Ok(mut entries) = self.entries.lock() {
            if entries.by_token.len() >= 4096 && now.unix_millis() - entries.swept_at >= 1000 {
                entries.by_token.retain(|_, (_, expires)| expires.millis_since(now) > 0);
                entries.swept_at = now.unix_millis();
            }
            let expires = Timestamp::from_unix_millis(now.unix_millis() + self.ttl_ms);
            entries.by_token.insert(token.to_owned(), (sealed, expires));
        }
    }

    /// Whether a CVC is held for `token` at `now`.
    pub fn held(&self, token: &str, now: Timestamp) -> bool {
        self.entries.lock().ok().and_then(|e| e.by_token.get(token).map(|(_, expires)| expires.millis_since(now) > 0))
            == Some(true)
    }

    /// Hands out the CVC of `token` once, removing it.
    pub fn take(&self, token: &str, now: Timestamp) -> Option<Secret<String>> {
        let (sealed, expires) = self.entries.lock().ok()?.by_token.remove(token)?;
        if expires.millis_since(now) <= 0 {
            return None;
        }
        let plain = envelope::open(&self.key, &aad(token), &sealed).ok()?;
        String::from_utf8(plain).ok().map(Secret::new)
    }

    /// Drops the CVC of `token`, if held.
    pub fn forget(&self, token: &str) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.by_token.remove(token);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strongroom_types::OsEntropy;

    #[test]
    fn handed_out_once_and_only_in_time() {
        let store = CvcStore::new(Duration::from_secs(3600), &OsEntropy);
        let t0 = Timestamp::from_unix_millis(1_000_000);
        store.put("tok_a", &Secret::new("123".into()), t0, &OsEntropy);
        assert!(store.held("tok_a", t0));
        assert_eq!(store.take("tok_a", t0).map(|c| c.expose().clone()), Some("123".to_owned()));
        assert!(store.take("tok_a", t0).is_none(), "only once");
        store.put("tok_b", &Secret::new("456".into()), t0, &OsEntropy);
        let late = Timestamp::from_unix_millis(t0.unix_millis() + 600_000);
        assert!(!store.held("tok_b", late), "the TTL is capped at ten minutes");
        assert!(store.take("tok_b", late).is_none());
    }
}
