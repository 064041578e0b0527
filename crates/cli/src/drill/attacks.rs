//! The five attacks of a drill, one attempt at a time, and the loop that drives them: it stops at
//! the first block (after three more attempts that check the block holds) or at the request
//! bound, and times the first block on the real clock.
//!
//! - credential stuffing: sign-ins of the drill's existing and of non-existent emails with wrong
//!   passwords from one attacker address, through the shop's key (as a storefront relays them);
//!   blocked = `429 client_blocked`.
//! - card testing: a new Luhn-valid card tokenized and paid (1.00 EUR, no customer) from one
//!   attacker address through the shop's key; blocked = the payment refused by the fraud checks
//!   (`fraud_blocked`) or `429 client_blocked`.
//! - token guessing: the attacker's key reads random `tok_…` ids; blocked = `403 api_key_suspended`.
//! - enumeration: the attacker's key reads random `cus_…` and `pi_…` ids; blocked = `403
//!   api_key_suspended`.
//! - insider: the attacker's key (with `vault:reveal:pii`) reveals the drill's real tokens;
//!   blocked = `403 api_key_suspended`; `429 rate_limited` (the per-minute reveal limit) is
//!   counted apart, waited out (at most a minute at a time), and is not a detection.
//!
//! Must never: attack beyond `max` attempts (plus the three follow-ups after a block), or use a
//! card number outside a card token's value.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::json;
use strongroom_types::Secret;

use super::api::{Answer, Api};
use super::normal::NormalUser;
use super::report::AttackOutcome;
use super::{DrillKind, Seeds, card_number, expiry_year, lock, random_text, register};

/// Existing accounts among the emails a credential stuffer tries.
const VICTIMS: usize = 10;
/// Real tokens the insider reveals (round after round).
const INSIDER_TOKENS: usize = 50;
/// Attempts after the first block that check it holds.
const FOLLOW_UPS: u32 = 3;

/// What an attack needs made first.
#[derive(Debug)]
pub enum Plan {
    /// Nothing.
    Nothing,
    /// Existing accounts' emails (credential stuffing).
    Victims(Vec<String>),
    /// Real tokens (insider).
    Tokens(Vec<String>),
}

/// Makes what `kind` needs: victims' accounts, or tokens under the normal users (erased with them).
pub async fn prepare(
    kind: DrillKind,
    api: &Api,
    shop: &Secret<String>,
    seeds: &Mutex<Seeds>,
    run_id: &str,
    users: &[NormalUser],
) -> anyhow::Result<Plan> {
    match kind {
        DrillKind::CredentialStuffing => {
            let mut victims = Vec::with_capacity(VICTIMS);
            for n in 0..VICTIMS {
                let email = format!("drill-{run_id}-victim{n}@example.com");
                let password = Secret::new(format!("{}-{}", random_text(12), random_text(12)));
                register(api, shop, seeds, &email, &password).await?;
                victims.push(email);
            }
            Ok(Plan::Victims(victims))
        }
        DrillKind::Insider => {
            let mut tokens = Vec::with_capacity(INSIDER_TOKENS);
            for n in 0..INSIDER_TOKENS {
                let owner = users.get(n % users.len().max(1)).context("no normal user to own the tokens")?;
                let body = json!({"type": "email", "customer": owner.customer,
                    "value": format!("drill-{run_id}-record{n}@example.com")});
                let answer = api.post(shop, "/v1/tokens", &body).await?;
                if answer.status != 201 {
                    anyhow::bail!("tokenizing the insider's records answered {}", answer.label());
                }
                tokens.push(answer.text("id").context("a token without an id")?);
            }
            Ok(Plan::Tokens(tokens))
        }
        DrillKind::CardTesting | DrillKind::TokenGuessing | DrillKind::Enumeration => Ok(Plan::Nothing),
    }
}

/// What one attempt got.
#[derive(Debug)]
enum Verdict {
    /// What the attack gets while undetected (`401 invalid_credentials`, `404`, `200`).
    Answered(String),
    /// The block this drill is about.
    Blocked { label: String, retry_after: Option<u64> },
    /// `429 rate_limited`: a limit, not a detection.
    RateLimited { label: String, retry_after: Option<u64> },
    /// Anything else (`login_throttled`, `503 overloaded`, …).
    Refused(String),
}

/// One attack, ready to run.
#[derive(Debug)]
pub struct Attack<'a> {
    /// Which.
    pub kind: DrillKind,
    /// The target.
    pub api: &'a Api,
    /// The shop's key (storefront attacks come through it).
    pub shop: &'a Secret<String>,
    /// The attacker's own key (token guessing, enumeration, insider).
    pub attacker: Option<&'a Secret<String>>,
    /// The attacker's client address.
    pub attacker_ip: &'a str,
    /// The run's id (in emails and idempotency keys).
    pub run_id: &'a str,
    /// Where tokens the attack makes are recorded for deletion.
    pub seeds: &'a Mutex<Seeds>,
    /// What was made for it.
    pub plan: Plan,
}

fn suspended(answer: &Answer, expected: u16) -> Verdict {
    match (answer.status, answer.code()) {
        (403, Some("api_key_suspended")) => Verdict::Blocked { label: answer.label(), retry_after: answer.retry_after },
        (429, Some("rate_limited")) => Verdict::RateLimited { label: answer.label(), retry_after: answer.retry_after },
        (status, _) if status == expected => Verdict::Answered(answer.label()),
        _ => Verdict::Refused(answer.label()),
    }
}

fn client_blocked(answer: &Answer) -> bool {
    answer.status == 429 && answer.code() == Some("client_blocked")
}

impl Attack<'_> {
    fn key(&self) -> anyhow::Result<&Secret<String>> {
        self.attacker.context("this attack needs the attacker's key")
    }

    /// Attempt `n` (counting from 0): the requests it took and what it got.
    async fn attempt(&self, n: u32) -> anyhow::Result<(u32, Verdict)> {
        let api = self.api;
        match self.kind {
            DrillKind::CredentialStuffing => {
                let victim = match &self.plan {
                    Plan::Victims(victims) if n % 2 == 1 => victims.get((n / 2) as usize),
                    _ => None,
                };
                let email = victim.cloned().unwrap_or_else(|| format!("drill-{}-nobody{n}@example.com", self.run_id));
                let body = json!({"email": email, "password": format!("{}-{}", random_text(10), random_text(10)),
                    "client": {"ip": self.attacker_ip, "user_agent": "python-requests/2.31"}});
                let answer = api.post(self.shop, "/v1/identity/login", &body).await?;
                let verdict = if client_blocked(&answer) {
                    Verdict::Blocked { label: answer.label(), retry_after: answer.retry_after }
                } else if answer.status == 401 {
                    Verdict::Answered(answer.label())
                } else {
                    Verdict::Refused(answer.label())
                };
                Ok((1, verdict))
            }
            DrillKind::TokenGuessing => {
                let answer = api.get(self.key()?, &format!("/v1/tokens/tok_{}", random_text(26))).await?;
                Ok((1, suspended(&answer, 404)))
            }
            DrillKind::Enumeration => {
                let path = if n.is_multiple_of(2) {
                    format!("/v1/identity/customers/cus_{}", random_text(26))
                } else {
                    format!("/v1/payment_intents/pi_{}", random_text(26))
                };
                let answer = api.get(self.key()?, &path).await?;
                Ok((1, suspended(&answer, 404)))
            }
            DrillKind::Insider => {
                let Plan::Tokens(tokens) = &self.plan else { anyhow::bail!("the insider has no tokens to reveal") };
                let token = tokens.get(n as usize % tokens.len().max(1)).context("the insider has no tokens")?;
                let body = json!({"view": "plain", "reason": "drill.insider"});
                let answer = api.post(self.key()?, &format!("/v1/tokens/{token}/reveal"), &body).await?;
                Ok((1, suspended(&answer, 200)))
            }
            DrillKind::CardTesting => self.test_card(n).await,
        }
    }

    async fn test_card(&self, n: u32) -> anyhow::Result<(u32, Verdict)> {
        // A new random Luhn-valid number each time, which the sandbox approves (it has rules only
        // for its listed test cards). Not those listed cards: the small payments earlier drills
        // made with them within the fraud window would count against this run (on the third
        // drill within an hour the first card was refused for repeated small amounts).
        let number = card_number("411111");
        let card = json!({"type": "card", "value": {"number": number, "exp_month": 12, "exp_year": expiry_year(), "cvc": "123"}});
        let answer = self.api.post(self.shop, "/v1/tokens", &card).await?;
        if client_blocked(&answer) {
            return Ok((1, Verdict::Blocked { label: answer.label(), retry_after: answer.retry_after }));
        }
        let Some(token) = answer.ok().then(|| answer.text("id")).flatten() else {
            return Ok((1, Verdict::Refused(format!("tokenize: {}", answer.label()))));
        };
        lock(self.seeds).tokens.push(token.clone());
        let payment = json!({"amount": 100, "currency": "eur", "payment_method": token, "confirm": true,
            "client": {"ip": self.attacker_ip}});
        let idempotency = format!("drill-{}-card-{n}", self.run_id);
        let answer = self
            .api
            .call(self.shop, reqwest::Method::POST, "/v1/payment_intents", Some(&payment), Some(&idempotency))
            .await?;
        if client_blocked(&answer) {
            return Ok((2, Verdict::Blocked { label: answer.label(), retry_after: answer.retry_after }));
        }
        if !answer.ok() {
            return Ok((2, Verdict::Refused(format!("pay: {}", answer.label()))));
        }
        lock(self.seeds).payment_intents += 1;
        let status = answer.text("status").unwrap_or_default();
        let error = answer.body["last_payment_error"]["code"].as_str().unwrap_or_default().to_owned();
        if error == "fraud_blocked" {
            let reasons: Vec<&str> = answer.body["fraud"]["reasons"]
                .as_array()
                .map(|r| r.iter().filter_map(serde_json::Value::as_str).collect())
                .unwrap_or_default();
            return Ok((
                2,
                Verdict::Blocked { label: format!("fraud_blocked ({})", reasons.join(", ")), retry_after: None },
            ));
        }
        let label = if error.is_empty() { status } else { format!("{status} {error}") };
        Ok((2, Verdict::Answered(label)))
    }
}

/// Runs `attack` until it is blocked (then three more attempts check the block holds) or `max`
/// attempts were made.
pub async fn drive(attack: Attack<'_>, max: u32) -> anyhow::Result<AttackOutcome> {
    let mut outcome = AttackOutcome { bound: attack.kind.bound(), ..AttackOutcome::default() };
    let mut answers: BTreeMap<String, u32> = BTreeMap::new();
    let started = Instant::now();
    let mut n = 0;
    while n < max {
        let (requests, verdict) = attack.attempt(n).await?;
        n += 1;
        outcome.attempts += 1;
        outcome.http_requests += requests;
        match verdict {
            Verdict::Answered(label) | Verdict::Refused(label) => *answers.entry(label).or_default() += 1,
            Verdict::RateLimited { label, retry_after } => {
                *answers.entry(label).or_default() += 1;
                outcome.rate_limited += 1;
                tokio::time::sleep(Duration::from_secs(retry_after.unwrap_or(1).clamp(1, 60))).await;
            }
            Verdict::Blocked { label, retry_after } => {
                outcome.time_to_detection = Some(started.elapsed());
                outcome.requests_before_block = Some(outcome.attempts - 1);
                outcome.blocked = true;
                *answers.entry(label.clone()).or_default() += 1;
                outcome.first_block = Some(label);
                outcome.retry_after = retry_after;
                break;
            }
        }
    }
    if outcome.blocked {
        for _ in 0..FOLLOW_UPS {
            let (requests, verdict) = attack.attempt(n).await?;
            n += 1;
            outcome.follow_ups += 1;
            outcome.http_requests += requests;
            let label = match verdict {
                Verdict::Blocked { label, .. } => {
                    outcome.held += 1;
                    label
                }
                Verdict::Answered(label) | Verdict::Refused(label) | Verdict::RateLimited { label, .. } => label,
            };
            *answers.entry(label).or_default() += 1;
        }
    }
    outcome.duration = started.elapsed();
    outcome.answers = answers;
    Ok(outcome)
}
