//! A small read-through cache with a time-to-live on the injected clock, for rows read on every
//! request (API keys, merchants). Bounded: when full it empties, which is cheap and keeps a flood
//! of distinct keys from growing memory.
//! Must never: serve an entry older than its TTL, or outlive an explicit [`TtlCache::forget`].

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::Duration;

use strongroom_types::Timestamp;

/// Entries of type `V` by `K`, each trusted for `ttl` after it was read from its source.
#[derive(Debug)]
pub struct TtlCache<K, V> {
    ttl_ms: i64,
    capacity: usize,
    entries: Mutex<HashMap<K, (V, Timestamp)>>,
}

impl<K: Eq + Hash + Clone, V: Clone> TtlCache<K, V> {
    /// A cache of at most `capacity` entries, each trusted for `ttl` (zero disables caching).
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        Self {
            ttl_ms: i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX),
            capacity,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The entry for `key` if it is younger than the TTL at `now`.
    pub fn get(&self, key: &K, now: Timestamp) -> Option<V> {
        let entries = self.entries.lock().ok()?;
        let (value, fetched_at) = entries.get(key)?;
        (now.millis_since(*fetched_at) < self.ttl_ms).then(|| value.clone())
    }

    /// Stores `value` as read from the source at `now`.
    pub fn put(&self, key: K, value: V, now: Timestamp) {
        if self.ttl_ms <= 0 {
            return;
        }
        let Ok(mut entries) = self.entries.lock() else {
            return;
        };
        if entries.len() >= self.capacity {
            entries.clear();
        }
        entries.insert(key, (value, now));
    }

    /// Changes a cached entry in place (keeping its age), when present.
    pub fn update(&self, key: &K, change: impl FnOnce(&mut V)) {
        if let Ok(mut entries) = self.entries.lock()
            && let Some((value, _)) = entries.get_mut(key)
        {
            change(value);
        }
    }

    /// Keeps only the entries `keep` approves.
    pub fn retain(&self, mut keep: impl FnMut(&K, &V) -> bool) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.retain(|k, (v, _)| keep(k, v));
        }
    }

    /// Drops the entry for `key`.
    pub fn forget(&self, key: &K) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_expire_on_the_clock_and_can_be_forgotten() {
        let cache = TtlCache::new(Duration::from_secs(5), 10);
        let t0 = Timestamp::from_unix_millis(1_000_000);
        cache.put("a", 1, t0);
        assert_eq!(cache.get(&"a", t0.saturating_add(Duration::from_millis(4999))), Some(1));
        assert_eq!(cache.get(&"a", t0.saturating_add(Duration::from_secs(5))), None);
        cache.put("b", 2, t0);
        cache.forget(&"b");
        assert_eq!(cache.get(&"b", t0), None);
    }

    #[test]
    fn zero_ttl_caches_nothing_and_capacity_bounds_memory() {
        let off = TtlCache::new(Duration::ZERO, 10);
        off.put(1, 1, Timestamp::from_unix_millis(0));
        assert_eq!(off.get(&1, Timestamp::from_unix_millis(0)), None);
        let small = TtlCache::new(Duration::from_secs(1), 2);
        let t = Timestamp::from_unix_millis(0);
        for i in 0..5 {
            small.put(i, i, t);
        }
        assert!(small.entries.lock().map(|e| e.len()).unwrap_or(0) <= 2);
    }
}
