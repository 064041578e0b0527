//! Intrusion detection's shared counts in Redis (`[detection] redis_url`), for deployments that
//! keep their database free of per-request writes: one Lua script per observation adds the item
//! to the window's set (up to the cap), increments the window's hits and distinct count, sets
//! both keys to expire with the window, and returns the tally, atomically (Redis runs a script
//! alone), so exactly one observation of all nodes' sees a threshold's count. A batch of
//! observations (a payment's) is one script call doing the same for each in turn.
//!
//! Keys: `strongroom:dc:{window start}:{counter}` (a hash: `hits`, `distinct`) and `…:items` (a
//! set). Items are keyed hashes or ids, never an email or a card number.
//! Shared rate limits: one key per limited key (`strongroom:rl:{key}`) holding its GCRA arrival
//! time, read, checked and pushed on by one script, and expiring when the allowance is whole again.
//! Connections: `redis://` in the clear (loopback or a private network), or `rediss://` over TLS
//! (rustls), verified against the machine's roots or the operator's CA file.
//! Must never: split the read and the increment over two commands, keep a key past its window,
//! or reach a `rediss://` server without verifying its certificate.

use async_trait::async_trait;
use strongroom_domain::StoreError;
use strongroom_domain::ports::detection::{
    Allowance, DetectionCounts, MAX_DISTINCT_ITEMS, Observation, RateLimits, Tally,
};

/// The script, for one observation or several in one call, each in turn: the item goes into the
/// window's set unless it holds the cap, the window's hits and distinct count go up, both keys
/// expire with the window. KEYS[2i-1] and KEYS[2i] the i-th window's hash and item set; ARGV[1] the item cap, then per observation `1` with an item
/// or `0`, the item, the expiry. Returns hits, distinct and added of each, flattened.
const OBSERVE_MANY: &str = r"
local cap = tonumber(ARGV[1])
local out = {}
for i = 1, #KEYS / 2 do
  local hash, items = KEYS[2 * i - 1], KEYS[2 * i]
  local at = 2 + (i - 1) * 3
  local added = 0
  if ARGV[at] == '1' then
    if redis.call('SCARD', items) < cap then
      added = redis.call('SADD', items, ARGV[at + 1])
    end
    redis.call('PEXPIREAT', items, ARGV[at + 2])
  end
  out[#out + 1] = redis.call('HINCRBY', hash, 'hits', 1)
  out[#out + 1] = redis.call('HINCRBY', hash, 'distinct', added)
  out[#out + 1] = added
  redis.call('PEXPIREAT', hash, ARGV[at + 2])
end
return out
";

/// The generic cell rate algorithm: KEYS[1] the key's arrival time; ARGV[1] now (unix ms),
/// ARGV[2] the emission interval, ARGV[3] the period, ARGV[4] `1` to take a unit. Returns 0 when
/// a unit is (or would be) taken, else the milliseconds until one is free.
const TAKE_UNIT: &str = r"
local now = tonumber(ARGV[1])
local tat = tonumber(redis.call('GET', KEYS[1]) or ARGV[1])
if tat < now then tat = now end
local next = tat + tonumber(ARGV[2])
local wait = next - tonumber(ARGV[3]) - now
if wait > 0 then return wait end
if ARGV[4] == '1' then
  redis.call('SET', KEYS[1], next)
  redis.call('PEXPIREAT', KEYS[1], next)
end
return 0
";

/// Detection counts and rate limits in Redis.
#[derive(Clone)]
pub struct RedisCounts {
    connection: redis::aio::ConnectionManager,
    batch: redis::Script,
    limit: redis::Script,
}

impl std::fmt::Debug for RedisCounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RedisCounts")
    }
}

impl RedisCounts {
    /// Connects to `url` (`redis://host:port/db` in the clear, or `rediss://host:port/db` over
    /// TLS; with `user:password@` when needed) and checks that it answers. A `rediss://`
    /// server's certificate is verified against `ca_pem` (PEM certificates) when given, else
    /// against the machine's trusted roots; there is no way to skip the check (`#insecure` is
    /// refused).
    pub async fn connect(url: &str, ca_pem: Option<&[u8]>) -> Result<Self, StoreError> {
        let tls = url.starts_with("rediss://");
        if !tls && !url.starts_with("redis://") {
            return Err(StoreError::Unavailable(
                "detection.redis_url must be a redis:// or rediss:// (TLS) URL".to_owned(),
            ));
        }
        if url.contains('#') {
            return Err(StoreError::Unavailable(
                "detection.redis_url must not have a #fragment (a rediss:// certificate is always verified)".to_owned(),
            ));
        }
        if ca_pem.is_some() && !tls {
            return Err(StoreError::Unavailable(
                "detection.redis_ca_file is for a rediss:// URL; this one is redis:// (no TLS)".to_owned(),
            ));
        }
        let client = match ca_pem {
            Some(pem) => redis::Client::build_with_tls(
                url,
                redis::TlsCertificates { client_tls: None, root_cert: Some(pem.to_vec()) },
            ),
            None => redis::Client::open(url),
        }
        .map_err(|e| StoreError::Unavailable(format!("redis: {e}")))?;
        // Two quick retries (0.1, 0.2 s), each connection given two seconds: a Redis that does not
        // answer, or answers in the wrong protocol, is reported at start within seven seconds.
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_number_of_retries(2)
            .set_connection_timeout(Some(std::time::Duration::from_secs(2)));
        let mut connection = redis::aio::ConnectionManager::new_with_config(client, config)
            .await
            .map_err(|e| StoreError::Unavailable(format!("redis: {e}")))?;
        let _: String = redis::cmd("PING")
            .query_async(&mut connection)
            .await
            .map_err(|e| StoreError::Unavailable(format!("redis: {e}")))?;
        Ok(Self { connection, batch: redis::Script::new(OBSERVE_MANY), limit: redis::Script::new(TAKE_UNIT) })
    }
}

#[async_trait]
impl DetectionCounts for RedisCounts {
    async fn observe(
        &self,
        counter: &str,
        window_start: i64,
        item: Option<&[u8]>,
        expires_at: i64,
    ) -> Result<Tally, StoreError> {
        let one = Observation { counter: counter.to_owned(), window_start, item, expires_at };
        self.observe_many(&[one])
            .await?
            .pop()
            .ok_or_else(|| StoreError::Unavailable("redis: a count came back empty".to_owned()))
    }

    async fn observe_many(&self, observations: &[Observation<'_>]) -> Result<Vec<Tally>, StoreError> {
        if observations.is_empty() {
            return Ok(Vec::new());
        }
        let mut invocation = self.batch.prepare_invoke();
        invocation.arg(MAX_DISTINCT_ITEMS);
        for o in observations {
            let key = format!("strongroom:dc:{}:{}", o.window_start, o.counter);
            invocation.key(&key).key(format!("{key}:items"));
            invocation.arg(if o.item.is_some() { "1" } else { "0" }).arg(o.item.unwrap_or_default()).arg(o.expires_at);
        }
        let mut connection = self.connection.clone();
        let flat: Vec<i64> = invocation
            .invoke_async(&mut connection)
            .await
            .map_err(|e| StoreError::Unavailable(format!("redis: {e}")))?;
        if flat.len() != observations.len() * 3 {
            return Err(StoreError::Unavailable("redis: a batch of counts came back incomplete".to_owned()));
        }
        Ok(flat
            .chunks_exact(3)
            .map(|c| Tally {
                hits: u64::try_from(c[0]).unwrap_or(0),
                distinct: u64::try_from(c[1]).unwrap_or(0),
                new_item: c[2] > 0,
            })
            .collect())
    }

    async fn purge_counts(&self, _now: i64) -> Result<u64, StoreError> {
        // Every key expires with its window.
        Ok(0)
    }
}

impl RedisCounts {
    async fn gcra(&self, key: &str, allowance: Allowance, now: i64, take: bool) -> Result<i64, StoreError> {
        let mut invocation = self.limit.key(format!("strongroom:rl:{key}"));
        invocation.arg(now).arg(allowance.emission_ms).arg(allowance.period_ms).arg(if take { "1" } else { "0" });
        let mut connection = self.connection.clone();
        invocation.invoke_async(&mut connection).await.map_err(|e| StoreError::Unavailable(format!("redis: {e}")))
    }
}

#[async_trait]
impl RateLimits for RedisCounts {
    async fn take(&self, key: &str, allowance: Allowance, now: i64) -> Result<i64, StoreError> {
        self.gcra(key, allowance, now, true).await
    }

    async fn peek(&self, key: &str, allowance: Allowance, now: i64) -> Result<i64, StoreError> {
        self.gcra(key, allowance, now, false).await
    }

    async fn purge_limits(&self, _now: i64) -> Result<u64, StoreError> {
        // Every key expires when its allowance is whole again.
        Ok(0)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code fails loudly")]
mod tests {
    use super::*;

    /// Against the machine's Redis (`STRONGROOM_TEST_REDIS_URL`, default `redis://127.0.0.1:6379`);
    /// skipped when it does not answer, a failure under `CI=true`.
    async fn redis() -> Option<RedisCounts> {
        let url = std::env::var("STRONGROOM_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
        match RedisCounts::connect(&url, None).await {
            Ok(counts) => Some(counts),
            Err(err) => {
                assert!(std::env::var("CI").as_deref() != Ok("true"), "Redis is required under CI=true: {err}");
                eprintln!("Redis not reachable at {url}: SKIPPED");
                None
            }
        }
    }

    #[tokio::test]
    async fn thirty_parallel_observations_each_read_their_own_tally() {
        let Some(counts) = redis().await else { return };
        let counter = format!("test:{}", std::process::id());
        let window = 1_000;
        let expires = 4_000_000_000_000;
        let handles: Vec<_> = (0..30u8)
            .map(|i| {
                let (counts, counter) = (counts.clone(), counter.clone());
                tokio::spawn(async move { counts.observe(&counter, window, Some(&[i % 10]), expires).await.unwrap() })
            })
            .collect();
        let mut hits = Vec::new();
        let (mut new_items, mut tenth) = (0, 0);
        for handle in handles {
            let tally = handle.await.unwrap();
            hits.push(tally.hits);
            new_items += usize::from(tally.new_item);
            tenth += usize::from(tally.new_item && tally.distinct == 10);
        }
        hits.sort_unstable();
        assert_eq!(hits, (1..=30).collect::<Vec<u64>>());
        assert_eq!((new_items, tenth), (10, 1));
        let tally = counts.observe(&counter, window, None, expires).await.unwrap();
        assert_eq!((tally.hits, tally.distinct, tally.new_item), (31, 10, false));
        // Keys expire with their window.
        let past = counts.observe(&format!("{counter}:past"), window, Some(b"x"), 1).await.unwrap();
        assert_eq!(past.hits, 1);
        let again = counts.observe(&format!("{counter}:past"), window, Some(b"x"), 1).await.unwrap();
        assert_eq!((again.hits, again.new_item), (1, true), "an expired window starts again");
        // TLS to a port that speaks none fails; an address that is no Redis URL is refused.
        assert!(RedisCounts::connect("rediss://127.0.0.1:6379", None).await.is_err());
        assert!(RedisCounts::connect("http://127.0.0.1:6379", None).await.is_err());
    }

    #[tokio::test]
    async fn batches_answer_as_single_observations_would() {
        let Some(counts) = redis().await else { return };
        let run = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
        let counter = |name: &str| format!("batch:{}:{run}:{name}", std::process::id());
        let expires = 4_000_000_000_000;
        // 30 batches at once over four counters, in different orders.
        let handles: Vec<_> = (0..30u8)
            .map(|i| {
                let counts = counts.clone();
                let names: Vec<String> = ["a", "b", "c", "d"].iter().map(|n| counter(n)).collect();
                tokio::spawn(async move {
                    let mut order = names;
                    order.rotate_left(usize::from(i % 4));
                    let item = [i % 5];
                    let batch: Vec<Observation<'_>> = order
                        .iter()
                        .map(|c| Observation {
                            counter: c.clone(),
                            window_start: 1_000,
                            item: Some(&item),
                            expires_at: expires,
                        })
                        .collect();
                    let tallies = counts.observe_many(&batch).await.unwrap();
                    order.into_iter().zip(tallies).collect::<Vec<_>>()
                })
            })
            .collect();
        let mut by_counter: std::collections::HashMap<String, Vec<Tally>> = Default::default();
        for handle in handles {
            for (name, tally) in handle.await.unwrap() {
                by_counter.entry(name).or_default().push(tally);
            }
        }
        for (name, tallies) in by_counter {
            let mut hits: Vec<u64> = tallies.iter().map(|t| t.hits).collect();
            hits.sort_unstable();
            assert_eq!(hits, (1..=30).collect::<Vec<u64>>(), "{name}");
            assert_eq!(tallies.iter().filter(|t| t.new_item).count(), 5, "{name}");
            assert_eq!(tallies.iter().filter(|t| t.new_item && t.distinct == 5).count(), 1, "{name}");
        }
        // In the order given, one window named twice counted twice, a count without an item.
        let obs = |name: &str, item: Option<&'static [u8]>| Observation {
            counter: counter(name),
            window_start: 2_000,
            item,
            expires_at: expires,
        };
        let tallies = counts.observe_many(&[obs("e", Some(b"x")), obs("f", None), obs("e", Some(b"x"))]).await.unwrap();
        let got: Vec<(u64, u64, bool)> = tallies.iter().map(|t| (t.hits, t.distinct, t.new_item)).collect();
        assert_eq!(got, [(1, 1, true), (1, 0, false), (2, 1, false)]);
    }

    /// A Redis that speaks only TLS, on a free loopback port, with a certificate for 127.0.0.1
    /// from a CA of its own (`ca`); stopped when dropped.
    struct TlsRedis {
        child: std::process::Child,
        port: u16,
        ca: String,
        _dir: tempfile::TempDir,
    }

    impl Drop for TlsRedis {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    /// A CA (its PEM) and a server certificate and key (PEM) for 127.0.0.1 signed by it.
    fn test_pki() -> (String, String, String) {
        use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        ca_params.distinguished_name.push(DnType::CommonName, "strongroom redis test CA");
        let ca_key = KeyPair::generate().unwrap();
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let mut leaf_params = CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
        leaf_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let leaf_key = KeyPair::generate().unwrap();
        let leaf = leaf_params.signed_by(&leaf_key, &ca, &ca_key).unwrap();
        (ca.pem(), leaf.pem(), leaf_key.serialize_pem())
    }

    /// Starts `redis-server` (the machine's) with TLS only; skipped when it is not installed, a
    /// failure under `CI=true`.
    fn tls_redis() -> Option<TlsRedis> {
        let dir = tempfile::tempdir().unwrap();
        let (ca, cert, key) = test_pki();
        std::fs::write(dir.path().join("cert.pem"), cert).unwrap();
        std::fs::write(dir.path().join("key.pem"), key).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let spawned = std::process::Command::new("redis-server")
            .args(["--port", "0", "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--tls-port", &port.to_string(), "--tls-auth-clients", "no"])
            .arg("--tls-cert-file")
            .arg(dir.path().join("cert.pem"))
            .arg("--tls-key-file")
            .arg(dir.path().join("key.pem"))
            .stdout(std::process::Stdio::null())
            .spawn();
        let child = match spawned {
            Ok(child) => child,
            Err(err) => {
                assert!(std::env::var("CI").as_deref() != Ok("true"), "redis-server is required under CI=true: {err}");
                eprintln!("redis-server not found: SKIPPED");
                return None;
            }
        };
        let server = TlsRedis { child, port, ca, _dir: dir };
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Some(server);
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("redis-server with TLS did not listen on {port}");
    }

    #[tokio::test]
    async fn rediss_verifies_the_servers_certificate() {
        let Some(server) = tls_redis() else { return };
        let url = format!("rediss://127.0.0.1:{}/0", server.port);
        // Verified against the CA named: counts as over a plain connection.
        let counts = RedisCounts::connect(&url, Some(server.ca.as_bytes())).await.unwrap();
        let counter = format!("tls:{}", std::process::id());
        let first = counts.observe(&counter, 1_000, Some(b"a"), 4_000_000_000_000).await.unwrap();
        let second = counts.observe(&counter, 1_000, Some(b"b"), 4_000_000_000_000).await.unwrap();
        assert_eq!((first.hits, second.hits, second.distinct), (1, 2, 2));
        // A certificate of another CA, or one the machine's roots do not know: refused.
        let (other_ca, _, _) = test_pki();
        assert!(RedisCounts::connect(&url, Some(other_ca.as_bytes())).await.is_err());
        assert!(RedisCounts::connect(&url, None).await.is_err());
        // Skipping the check is not possible; the CA file is for TLS only; the TLS port does not
        // speak in the clear.
        let insecure = format!("{url}#insecure");
        let refused = RedisCounts::connect(&insecure, Some(server.ca.as_bytes())).await.unwrap_err();
        assert!(refused.to_string().contains("fragment"), "{refused}");
        let clear = format!("redis://127.0.0.1:{}/0", server.port);
        assert!(RedisCounts::connect(&clear, Some(server.ca.as_bytes())).await.is_err());
        assert!(RedisCounts::connect(&clear, None).await.is_err());
    }

    #[tokio::test]
    async fn thirty_parallel_takes_share_one_allowance() {
        let Some(counts) = redis().await else { return };
        let allowance = Allowance::new(10, std::time::Duration::from_secs(100)).unwrap();
        // Keys expire at their arrival time on Redis's own clock: use a real "now".
        let now =
            i64::try_from(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis())
                .unwrap();
        let key = format!("test:{}:{now}", std::process::id());
        let handles: Vec<_> = (0..30)
            .map(|_| {
                let (counts, key) = (counts.clone(), key.clone());
                tokio::spawn(async move { counts.take(&key, allowance, now).await.unwrap() })
            })
            .collect();
        let mut won = 0;
        for handle in handles {
            won += usize::from(handle.await.unwrap() == 0);
        }
        assert_eq!(won, 10, "exactly the allowance is taken");
        assert_eq!(counts.peek(&key, allowance, now).await.unwrap(), 10_000);
        assert_eq!(counts.take(&key, allowance, now + 9_999).await.unwrap(), 1);
        assert_eq!(counts.take(&key, allowance, now + 10_000).await.unwrap(), 0, "one refilled unit");
        assert!(counts.take(&key, allowance, now + 10_000).await.unwrap() > 0);
        assert_eq!(counts.peek(&format!("{key}:other"), allowance, now).await.unwrap(), 0);
    }
}
