//! The normal users of a drill: customers who sign in with the right password, tokenize their own
//! card and pay once, read their own objects and sign out, each from its own address, through the
//! shop's backend key, for as long as the attack runs (at least one full round each).
//! Must never: share an address with the attacker or another normal user, reuse the attacker's
//! emails or cards, or treat any refusal as normal: every answer that is not a success is
//! recorded as a refusal of a normal user.

use std::sync::Mutex;
use std::time::Duration;

use reqwest::Method;
use serde_json::json;
use strongroom_types::Secret;

use super::api::{Answer, Api};
use super::report::Refusal;
use super::{Seeds, card_for, expiry_year, random_text, register};

/// One normal user.
#[derive(Debug)]
pub struct NormalUser {
    /// Its number in the drill.
    pub n: usize,
    /// `drill-<run>-user<n>@example.com`
    pub email: String,
    /// Its password.
    pub password: Secret<String>,
    /// `cus_…`
    pub customer: String,
    /// Its client address.
    pub ip: String,
}

/// Registers the normal users (with the shop's key).
pub async fn seed(
    api: &Api,
    shop: &Secret<String>,
    seeds: &Mutex<Seeds>,
    run_id: &str,
    ips: &[String],
) -> anyhow::Result<Vec<NormalUser>> {
    let mut users = Vec::with_capacity(ips.len());
    for (n, ip) in ips.iter().enumerate() {
        let email = format!("drill-{run_id}-user{n}@example.com");
        let password = Secret::new(format!("{}-{}", random_text(12), random_text(12)));
        let customer = register(api, shop, seeds, &email, &password).await?;
        users.push(NormalUser { n, email, password, customer, ip: ip.clone() });
    }
    Ok(users)
}

/// What one normal user saw.
#[derive(Debug, Default)]
pub struct Tally {
    /// Requests sent.
    pub requests: u32,
    /// Rounds completed.
    pub rounds: u32,
    /// Payments that succeeded.
    pub payments: u32,
    /// Payment intents made (whatever their outcome).
    pub intents: u32,
    /// Every answer that was not a success.
    pub refusals: Vec<Refusal>,
}

struct User<'a> {
    api: &'a Api,
    shop: &'a Secret<String>,
    user: &'a NormalUser,
    tally: Tally,
}

impl User<'_> {
    /// Sends a request and records a refusal (or a transport failure) for `step`.
    async fn call(
        &mut self,
        step: &str,
        key: &Secret<String>,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
        idempotency_key: Option<&str>,
    ) -> Option<Answer> {
        self.tally.requests += 1;
        match self.api.call(key, method, path, body, idempotency_key).await {
            Ok(answer) if answer.ok() => Some(answer),
            Ok(answer) => {
                self.refuse(step, answer.label());
                None
            }
            Err(err) => {
                self.refuse(step, format!("no answer: {err:#}"));
                None
            }
        }
    }

    fn refuse(&mut self, step: &str, answer: String) {
        self.tally.refusals.push(Refusal { user: self.user.n, step: step.to_owned(), answer });
    }

    fn client(&self) -> serde_json::Value {
        json!({"ip": self.user.ip, "user_agent": "Mozilla/5.0 (strongroom drill; normal user)"})
    }

    /// Signs in: the session token.
    async fn sign_in(&mut self) -> Option<Secret<String>> {
        let body = json!({"email": self.user.email, "password": self.user.password.expose(), "client": self.client()});
        let shop = self.shop.clone();
        let answer = self.call("sign_in", &shop, Method::POST, "/v1/identity/login", Some(&body), None).await?;
        match answer.body["session"]["token"].as_str() {
            Some(token) if answer.text("status").as_deref() == Some("authenticated") => {
                Some(Secret::new(token.to_owned()))
            }
            _ => {
                let status = answer.text("status").unwrap_or_default();
                self.refuse("sign_in", format!("{} without a session ({status})", answer.status));
                None
            }
        }
    }

    /// Tokenizes the user's card and pays with it: `(tok_…, pi_…)`.
    async fn pay(&mut self, run_id: &str) -> (Option<String>, Option<String>) {
        let shop = self.shop.clone();
        let card = json!({"type": "card", "customer": self.user.customer,
            "value": {"number": card_for(&self.user.ip), "exp_month": 12, "exp_year": expiry_year(), "cvc": "123"}});
        let Some(token) = self.call("tokenize", &shop, Method::POST, "/v1/tokens", Some(&card), None).await else {
            return (None, None);
        };
        let Some(token) = token.text("id") else {
            self.refuse("tokenize", "201 without a token id".to_owned());
            return (None, None);
        };
        let payment = json!({"amount": 2599, "currency": "eur", "customer": self.user.customer,
            "payment_method": token, "confirm": true, "client": {"ip": self.user.ip}});
        let idempotency = format!("drill-{run_id}-pay-{}", self.user.n);
        let answer =
            self.call("pay", &shop, Method::POST, "/v1/payment_intents", Some(&payment), Some(&idempotency)).await;
        let Some(answer) = answer else { return (Some(token), None) };
        self.tally.intents += 1;
        let intent = answer.text("id");
        match answer.text("status").as_deref() {
            Some("succeeded") => self.tally.payments += 1,
            other => {
                let error = answer.body["last_payment_error"]["code"].as_str().unwrap_or("none").to_owned();
                let reasons = answer.body["fraud"]["reasons"].to_string();
                self.refuse(
                    "pay",
                    format!("{} {} ({error}, fraud reasons {reasons})", answer.status, other.unwrap_or("?")),
                );
            }
        }
        (Some(token), intent)
    }
}

/// One normal user's work until `stop` says the attack is over (after the round under way).
pub async fn run(
    api: Api,
    shop: Secret<String>,
    user: NormalUser,
    run_id: String,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Tally {
    let mut me = User { api: &api, shop: &shop, user: &user, tally: Tally::default() };
    let (mut token, mut intent) = (None, None);
    let mut paid = false;
    loop {
        if let Some(session) = me.sign_in().await {
            me.call("read_me", &session, Method::GET, "/v1/me", None, None).await;
            if !paid {
                paid = true;
                (token, intent) = me.pay(&run_id).await;
            }
            me.call("sign_out", &session, Method::POST, "/v1/me/logout", Some(&json!({})), None).await;
        }
        if let Some(token) = &token {
            me.call("read_token", &shop, Method::GET, &format!("/v1/tokens/{token}"), None, None).await;
        }
        if let Some(intent) = &intent {
            me.call("read_payment", &shop, Method::GET, &format!("/v1/payment_intents/{intent}"), None, None).await;
        }
        me.tally.rounds += 1;
        if *stop.borrow() {
            break;
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(200)) => {}
            _ = stop.changed() => {}
        }
        if *stop.borrow() {
            break;
        }
    }
    me.tally
}
