//! A small read-through cache with a time-to-live on the injected clock, for rows read on every
//! request (API keys, merchants). Bounded: when full it empties, which is cheap and keeps a flood
//! of distinct keys from growing memory.
//! A read that began before a forget cannot put back what the forget removed: a caller takes a
//! [`TtlCache::generation`] before it reads the source and stores with [`TtlCache::put_unless_forgotten`],
//! which refuses when anything was forgotten meanwhile.
//! Must never: serve an entry older than its TTL, or outlive an explicit [`TtlCache::forget`] or
//! [`TtlCache::retain`].

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
    /// The entries, and how many forgets (`forget`, `retain`) there have been.
    entries: Mutex<Entries<K, V>>,
}

/// Values with the time each was read from its source, and the forget count.
type Entries<K, V> = (HashMap<K, (V, Timestamp)>, u64);

impl<K: Eq + Hash + Clone, V: Clone> TtlCache<K, V> {
    /// A cache of at most `capacity` entries, each trusted for `ttl` (zero disables caching).
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        Self {
            ttl_ms: i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX),
            capacity,
            entries: Mutex::new((HashMap::new(), 0)),
        }
    }

    /// The entry for `key` if it is younger than the TTL at `now`.
    pub fn get(&self, key: &K, now: Timestamp) -> Option<V> {
        let entries = self.entries.lock().ok()?;
        let (value, fetched_at) = entries.0.get(key)?;
        (now.millis_since(*fetched_at) < self.ttl_ms).then(|| value.clone())
    }

    /// The entry for `key` if it is younger than the TTL at `now`; otherwise stores `value` (made
    /// at `now`) and returns it. One lock: of two concurrent callers, both get the first's value.
    pub fn get_or_put(&self, key: K, value: V, now: Timestamp) -> V {
        if self.ttl_ms <= 0 {
            return value;
        }
        let Ok(mut entries) = self.entries.lock() else {
            return value;
        };
        if let Some((existing, made_at)) = entries.0.get(&key)
            && now.millis_since(*made_at) < self.ttl_ms
        {
            return existing.clone();
        }
        if entries.0.len() >= self.capacity {
            entries.0.clear();
        }
        entries.0.insert(key, (value.clone(), now));
        value
    }

    /// Stores `value` as read from the source at `now`.
    pub fn put(&self, key: K, value: V, now: Timestamp) {
        self.put_checked(key, value, now, None);
    }

    /// How many forgets there have been; take it before reading the source of an entry.
    pub fn generation(&self) -> u64 {
        self.entries.lock().map(|entries| entries.1).unwrap_or(u64::MAX)
    }

    /// Stores `value` (read from the source at `now`) unless something was forgotten since
    /// `generation` was taken: the read may have raced the change that forget stood for.
    pub fn put_unless_forgotten(&self, key: K, value: V, now: Timestamp, generation: u64) {
        self.put_checked(key, value, now, Some(generation));
    }

    fn put_checked(&self, key: K, value: V, now: Timestamp, generation: Option<u64>) {
        if self.ttl_ms <= 0 {
            return;
        }
        let Ok(mut entries) = self.entries.lock() else {
            return;
        };
        if generation.is_some_and(|g| g != entries.1) {
            return;
        }
        if entries.0.len() >= self.capacity {
            entries.0.clear();
        }
        entries.0.insert(key, (value, now));
    }

    /// Changes a cached entry in place (keeping its age), when present.
    pub fn update(&self, key: &K, change: impl FnOnce(&mut V)) {
        if let Ok(mut entries) = self.entries.lock()
            && let Some((value, _)) = entries.0.get_mut(key)
        {
            change(value);
        }
    }

    /// Keeps only the entries `keep` approves.
    pub fn retain(&self, mut keep: impl FnMut(&K, &V) -> bool) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.0.retain(|k, (v, _)| keep(k, v));
            entries.1 = entries.1.wrapping_add(1);
        }
    }

    /// Drops the entry for `key`.
    pub fn forget(&self, key: &K) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.0.remove(key);
            entries.1 = entries.1.wrapping_add(1);
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
        assert!(small.entries.lock().map(|e| e.0.len()).unwrap_or(0) <= 2);
    }

    #[test]
    fn get_or_put_keeps_the_first_live_value() {
        let cache = TtlCache::new(Duration::from_secs(5), 10);
        let t0 = Timestamp::from_unix_millis(1_000_000);
        assert_eq!(cache.get_or_put("a", 1, t0), 1);
        assert_eq!(cache.get_or_put("a", 2, t0), 1, "the first value stays");
        let later = t0.saturating_add(Duration::from_secs(5));
        assert_eq!(cache.get_or_put("a", 3, later), 3, "an expired value is replaced");
        let off = TtlCache::new(Duration::ZERO, 10);
        assert_eq!((off.get_or_put("a", 1, t0), off.get_or_put("a", 2, t0)), (1, 2), "nothing is kept");
    }

    #[test]
    fn a_read_that_raced_a_forget_is_not_cached() {
        let cache = TtlCache::new(Duration::from_secs(5), 10);
        let t = Timestamp::from_unix_millis(0);
        let before_read = cache.generation();
        cache.retain(|_: &&str, _: &i32| false);
        cache.put_unless_forgotten("a", 1, t, before_read);
        assert_eq!(cache.get(&"a", t), None, "the stale read must not be cached");
        let fresh = cache.generation();
        cache.put_unless_forgotten("a", 2, t, fresh);
        assert_eq!(cache.get(&"a", t), Some(2));
    }
}
