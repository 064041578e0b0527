//! `strongroom audit witness`: follows another instance's signed checkpoints and checks that each
//! new one is consistent with the last one it saw (RFC 6962 consistency proof), so a rollback or a
//! split view (two different trees shown as the same log) is reported. Its state — the last
//! verified size and root — is kept in a local file.
//! Must never: accept a checkpoint it could not verify with the given public key, or move its
//! state backwards.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use strongroom_domain::audit::checkpoint::{Checkpoint, VerifierKey};
use strongroom_domain::audit::merkle::{self, Hash};

/// What the witness remembers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WitnessState {
    /// The log's origin.
    pub origin: String,
    /// Last verified size.
    pub size: u64,
    /// Its root, base64.
    pub root: String,
}

/// How one observation ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observation {
    /// First checkpoint seen; now trusted.
    Trusted { size: u64 },
    /// The same checkpoint as before.
    Unchanged { size: u64 },
    /// Grew consistently.
    Extended { from: u64, to: u64 },
    /// The log is smaller than a checkpoint already seen.
    Rollback { seen: u64, now: u64 },
    /// Two different trees claim to be the same log.
    SplitView { detail: String },
}

impl Observation {
    /// Whether the observation is a problem.
    pub fn is_alarm(&self) -> bool {
        matches!(self, Observation::Rollback { .. } | Observation::SplitView { .. })
    }
}

impl std::fmt::Display for Observation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Observation::Trusted { size } => write!(f, "trusting the first checkpoint seen, size {size}"),
            Observation::Unchanged { size } => write!(f, "unchanged at size {size}"),
            Observation::Extended { from, to } => write!(f, "consistent: grew from {from} to {to}"),
            Observation::Rollback { seen, now } => {
                write!(f, "ROLLBACK: a checkpoint of size {seen} was seen, the log now claims {now}")
            }
            Observation::SplitView { detail } => write!(f, "SPLIT VIEW: {detail}"),
        }
    }
}

/// A witness of one log.
#[derive(Debug)]
pub struct Witness {
    base_url: String,
    key: VerifierKey,
    api_key: strongroom_types::Secret<String>,
    state_file: PathBuf,
    client: reqwest::Client,
}

fn hash_of(b64: &str) -> anyhow::Result<Hash> {
    STANDARD.decode(b64).ok().and_then(|bytes| bytes.try_into().ok()).context("not a base64 SHA-256 hash")
}

impl Witness {
    /// A witness of the instance at `base_url` (e.g. `https://shop-vault:8443`).
    pub fn new(
        base_url: &str,
        public_key: &str,
        api_key: String,
        state_file: PathBuf,
        ca_file: Option<&Path>,
    ) -> anyhow::Result<Self> {
        let key = VerifierKey::parse(public_key).context("--public-key is not a signed-note verifier key")?;
        let mut builder = reqwest::Client::builder().timeout(Duration::from_secs(30));
        if let Some(ca) = ca_file {
            let pem = std::fs::read(ca).with_context(|| format!("--cacert {}", ca.display()))?;
            builder = builder.add_root_certificate(reqwest::Certificate::from_pem(&pem)?);
        }
        Ok(Self {
            base_url: base_url.trim_end_matches('/').to_owned(),
            key,
            api_key: strongroom_types::Secret::new(api_key),
            state_file,
            client: builder.build()?,
        })
    }

    fn load(&self) -> anyhow::Result<Option<WitnessState>> {
        match std::fs::read_to_string(&self.state_file) {
            Ok(text) => Ok(Some(serde_json::from_str(&text).context("witness state file is not valid")?)),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(err) => Err(err).with_context(|| format!("cannot read {}", self.state_file.display())),
        }
    }

    fn save(&self, state: &WitnessState) -> anyhow::Result<()> {
        let tmp = self.state_file.with_extension("tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(state)?)?;
        std::fs::rename(&tmp, &self.state_file)?;
        Ok(())
    }

    async fn get(&self, path: &str) -> anyhow::Result<reqwest::Response> {
        let response =
            self.client.get(format!("{}{path}", self.base_url)).bearer_auth(self.api_key.expose()).send().await?;
        if !response.status().is_success() {
            bail!("{path} answered {}", response.status());
        }
        Ok(response)
    }

    /// Fetches the latest checkpoint, checks it against the state, and advances the state.
    pub async fn observe(&self) -> anyhow::Result<Observation> {
        let note = self.get("/v1/audit/checkpoint").await?.text().await?;
        let checkpoint = self.key.open(&note).map_err(|e| anyhow::anyhow!("the checkpoint does not verify: {e}"))?;
        let observation = match self.load()? {
            None => Observation::Trusted { size: checkpoint.size },
            Some(seen) => self.compare(&seen, &checkpoint).await?,
        };
        if !observation.is_alarm() {
            self.save(&WitnessState {
                origin: checkpoint.origin,
                size: checkpoint.size,
                root: STANDARD.encode(checkpoint.root),
            })?;
        }
        Ok(observation)
    }

    async fn compare(&self, seen: &WitnessState, now: &Checkpoint) -> anyhow::Result<Observation> {
        let seen_root = hash_of(&seen.root)?;
        if seen.origin != now.origin {
            return Ok(Observation::SplitView {
                detail: format!("origin changed from {} to {}", seen.origin, now.origin),
            });
        }
        if now.size < seen.size {
            return Ok(Observation::Rollback { seen: seen.size, now: now.size });
        }
        if now.size == seen.size {
            return Ok(if now.root == seen_root {
                Observation::Unchanged { size: now.size }
            } else {
                Observation::SplitView { detail: format!("two different roots for size {}", now.size) }
            });
        }
        if seen.size == 0 {
            return Ok(Observation::Extended { from: 0, to: now.size });
        }
        let body: serde_json::Value = self
            .get(&format!("/v1/audit/proofs/consistency?first={}&second={}", seen.size, now.size))
            .await?
            .json()
            .await?;
        let proof: Vec<Hash> = body["proof"]
            .as_array()
            .context("no proof in the answer")?
            .iter()
            .map(|h| hash_of(h.as_str().unwrap_or_default()))
            .collect::<anyhow::Result<_>>()?;
        Ok(match merkle::verify_consistency(seen.size, now.size, &seen_root, &now.root, &proof) {
            Ok(()) => Observation::Extended { from: seen.size, to: now.size },
            Err(err) => Observation::SplitView {
                detail: format!(
                    "the tree of size {} does not extend the one of size {} seen before ({err:?})",
                    now.size, seen.size
                ),
            },
        })
    }
}
