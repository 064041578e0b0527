//! Black-box tests of the Stripe gateway on a real server, on SQLite and PostgreSQL, against
//! localstripe started on 127.0.0.1 (`tools/python/localstripe_server.py`): automatic capture,
//! manual capture then capture, a declined card, a 3-D Secure card (`requires_action`), cancel
//! (a void at Stripe), refund, and our idempotency keys forwarded as `Idempotency-Key`. Then
//! Stripe's webhooks, signed with the official `stripe` package (`tools/python/stripe_sign.py`):
//! a bad signature, a stale one, a replay, an unknown event type, a dispute made with its
//! evidence deadline, 30 concurrent deliveries of one event taking effect once, and an intent
//! left `processing` and a refund left `pending` settled by the gateway's word. And a saved card:
//! its first payment is sent with `setup_future_usage` and a Stripe Customer of its own, and the
//! network's transaction id on Stripe's charge is kept; later payments, with the customer or
//! without (`off_session`), charge the kept PaymentMethod of that Customer. Reconciliation
//! settles refunds whose answer was lost, or that Stripe answered `pending`, from the payment's
//! refunds at Stripe. Reconciliation finds a payment whose answer was lost through Stripe's search
//! (the stand-in adds it to localstripe) and settles it.
//! localstripe ignores idempotency keys and allows over-refunds: those rules stay tested against
//! our own code (`payments.rs`). Outside CI a missing localstripe skips (said on standard error);
//! under `CI=true` it fails.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code fails loudly")]

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use strongroom_testkit::{Backend, TestServer, on_both_backends};
use strongroom_types::{Clock, Secret};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

on_both_backends!(
    payments_move_at_localstripe_with_our_idempotency_keys,
    webhooks_are_verified_and_replays_do_nothing,
    disputes_come_from_signed_webhooks_once,
    a_webhook_settles_an_intent_left_processing,
    saved_cards_tell_stripe_their_stored_credential_use,
    reconciliation_finds_a_lost_answer_by_stripes_search,
    reconciliation_settles_refunds_from_stripes_list
);

const WEBHOOK_SECRET: &str = "whsec_strongroom_test_0123456789";
const SECRET_KEY: &str = "sk_test_strongroom_0123456789";

fn tools() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tools/python")
}

fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// localstripe on a loopback port, killed when dropped.
struct LocalStripe {
    python: String,
    port: u16,
    _child: tokio::process::Child,
}

impl LocalStripe {
    /// Starts it, or `None` (skip, said on standard error) when the tools are missing outside CI.
    async fn start() -> Option<Self> {
        let python = strongroom_testkit::test_python()?;
        let probe = tokio::process::Command::new(&python).args(["-c", "import localstripe, stripe"]).output().await;
        if !probe.is_ok_and(|o| o.status.success()) {
            assert!(!ci(), "localstripe and stripe must be installed under CI=true (tools/requirements-test.txt)");
            eprintln!("SKIPPED: localstripe or stripe is not installed in STRONGROOM_TEST_PYTHON (run scripts/test)");
            return None;
        }
        let mut child = tokio::process::Command::new(&python)
            .arg(tools().join("localstripe_server.py"))
            .current_dir(std::env::temp_dir())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("localstripe starts");
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        tokio::time::timeout(Duration::from_secs(30), BufReader::new(stdout).read_line(&mut line))
            .await
            .expect("localstripe says its port in time")
            .unwrap();
        let port = line.trim().parse().expect("a port");
        Some(Self { python, port, _child: child })
    }

    fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    async fn get(&self, path: &str) -> Value {
        let response =
            reqwest::Client::new().get(format!("{}{path}", self.base())).bearer_auth(SECRET_KEY).send().await.unwrap();
        response.json().await.unwrap()
    }

    async fn post(&self, path: &str) -> Value {
        let response =
            reqwest::Client::new().post(format!("{}{path}", self.base())).bearer_auth(SECRET_KEY).send().await.unwrap();
        response.json().await.unwrap()
    }

    /// Stripe's PaymentIntent made for our intent `id` (by the metadata we send).
    async fn intent_for(&self, id: &str) -> Value {
        let list = self.get("/v1/payment_intents?limit=100").await;
        list["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|pi| pi["metadata"]["strongroom_intent"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("no Stripe PaymentIntent for {id}: {list}"))
    }

    /// `Idempotency-Key`s localstripe received on `path`.
    async fn keys_on(&self, path: &str) -> Vec<String> {
        let seen = self.get("/_config/requests").await;
        seen.as_array()
            .unwrap()
            .iter()
            .filter(|r| r["path"] == path)
            .filter_map(|r| r["key"].as_str().map(str::to_owned))
            .collect()
    }

    /// The `Stripe-Signature` header the official `stripe` package makes for `body` at `t`.
    async fn sign(&self, body: &str, t: i64) -> String {
        let mut child = tokio::process::Command::new(&self.python)
            .arg(tools().join("stripe_sign.py"))
            .arg(WEBHOOK_SECRET)
            .arg(t.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(body.as_bytes()).await.unwrap();
        let out = child.wait_with_output().await.unwrap();
        assert!(out.status.success(), "stripe signs");
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }
}

async fn stripe_server(backend: Backend, stripe: &LocalStripe) -> Option<TestServer> {
    let base = stripe.base();
    TestServer::spawn_with(backend, |config| {
        config.payments.gateway = "stripe".into();
        config.payments.gateway_timeout = Duration::from_secs(2);
        config.payments.stripe.secret_key = Some(Secret::new(SECRET_KEY.into()));
        config.payments.stripe.webhook_secret = Some(Secret::new(WEBHOOK_SECRET.into()));
        config.payments.stripe.api_base = base;
    })
    .await
}

async fn send(server: &TestServer, key: &str, method: Method, path: &str, body: Option<&Value>) -> (u16, Value) {
    let mut request = server.request_as(key, method, path);
    if let Some(body) = body {
        request = request.json(body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

async fn post(server: &TestServer, key: &str, path: &str, body: &Value) -> (u16, Value) {
    send(server, key, Method::POST, path, Some(body)).await
}

/// An intent of `amount` EUR on card `number`, confirmed.
async fn paid(server: &TestServer, key: &str, number: &str, amount: i64, capture: &str) -> Value {
    let card = json!({"type": "card", "value": {"number": number, "exp_month": 12, "exp_year": 2040, "cvc": "123"}});
    let (status, token) = post(server, key, "/v1/tokens", &card).await;
    assert_eq!(status, 201, "{token}");
    let body = json!({"amount": amount, "currency": "EUR", "payment_method": token["id"], "capture_method": capture});
    let (status, created) = post(server, key, "/v1/payment_intents", &body).await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap();
    let (status, confirmed) = post(server, key, &format!("/v1/payment_intents/{id}/confirm"), &json!({})).await;
    assert_eq!(status, 200, "{confirmed}");
    assert_eq!(confirmed["gateway"], "stripe");
    confirmed
}

async fn deliver(server: &TestServer, body: &str, signature: Option<&str>) -> (u16, Value) {
    let mut request = server
        .request(Method::POST, "/v1/gateways/stripe/webhook")
        .header("content-type", "application/json")
        .body(body.to_owned());
    if let Some(signature) = signature {
        request = request.header("Stripe-Signature", signature);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

fn now_secs(server: &TestServer) -> i64 {
    server.clock.now().unix_millis() / 1000
}

/// Audit actions on an object.
async fn audit_actions(server: &TestServer, id: &str) -> Vec<String> {
    let (_, entries) =
        send(server, &server.bootstrap_key, Method::GET, "/v1/audit/entries?start=0&limit=1000", None).await;
    entries["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["entry"]["object"]["id"] == id)
        .map(|e| e["entry"]["action"].as_str().unwrap().to_owned())
        .collect()
}

async fn payments_move_at_localstripe_with_our_idempotency_keys(backend: Backend) {
    let Some(stripe) = LocalStripe::start().await else { return };
    let Some(server) = stripe_server(backend, &stripe).await else { return };
    let key = server.bootstrap_key.clone();

    // Automatic capture.
    let auto = paid(&server, &key, "4242424242424242", 1999, "automatic").await;
    let auto_id = auto["id"].as_str().unwrap();
    assert_eq!((auto["status"].as_str(), auto["amount_received"].as_i64()), (Some("succeeded"), Some(1999)), "{auto}");
    let at_stripe = stripe.intent_for(auto_id).await;
    assert_eq!((at_stripe["status"].as_str(), at_stripe["amount"].as_i64()), (Some("succeeded"), Some(1999)));
    assert_eq!(at_stripe["currency"], "eur");

    // Manual capture, then a partial capture.
    let manual = paid(&server, &key, "4242424242424242", 1000, "manual").await;
    let manual_id = manual["id"].as_str().unwrap();
    assert_eq!(
        (manual["status"].as_str(), manual["amount_capturable"].as_i64()),
        (Some("requires_capture"), Some(1000))
    );
    assert_eq!(stripe.intent_for(manual_id).await["status"], "requires_capture");
    let path = format!("/v1/payment_intents/{manual_id}/capture");
    let (status, captured) = post(&server, &key, &path, &json!({"amount_to_capture": 600})).await;
    assert_eq!(status, 200, "{captured}");
    assert_eq!((captured["status"].as_str(), captured["amount_received"].as_i64()), (Some("succeeded"), Some(600)));
    assert_eq!(stripe.intent_for(manual_id).await["status"], "succeeded");

    // A card Stripe declines when charged.
    let declined = paid(&server, &key, "4000000000000341", 500, "automatic").await;
    assert_eq!(declined["status"], "requires_payment_method", "{declined}");
    assert_eq!(declined["last_payment_error"]["code"], "card_declined");
    assert_eq!(declined["payment_method"], Value::Null, "a declined card is detached");

    // A card that needs 3-D Secure.
    let secure = paid(&server, &key, "4000002500003155", 700, "automatic").await;
    assert_eq!(secure["status"], "requires_action", "{secure}");
    assert_eq!(secure["next_action"]["type"], "redirect_to_url");
    let secure_id = secure["id"].as_str().unwrap();
    let at_stripe = stripe.intent_for(secure_id).await;
    assert_eq!(at_stripe["status"], "requires_action");
    // The customer authenticates at Stripe; the shop confirms again and that payment goes on.
    let authenticate =
        format!("{}/v1/payment_intents/{}/_authenticate", stripe.base(), at_stripe["id"].as_str().unwrap());
    let form = [("client_secret", at_stripe["client_secret"].as_str().unwrap()), ("success", "true")];
    let response = reqwest::Client::new().post(authenticate).bearer_auth(SECRET_KEY).form(&form).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let (status, resumed) = post(&server, &key, &format!("/v1/payment_intents/{secure_id}/confirm"), &json!({})).await;
    assert_eq!((status, resumed["status"].as_str()), (200, Some("succeeded")), "{resumed}");
    assert_eq!(resumed["amount_received"], 700);
    let stripe_list = stripe.get("/v1/payment_intents?limit=100").await;
    let made =
        stripe_list["data"].as_array().unwrap().iter().filter(|pi| pi["metadata"]["strongroom_intent"] == secure_id);
    assert_eq!(made.count(), 1, "one PaymentIntent at Stripe for the intent, resumed");

    // Another: Stripe was told to send the customer back to strongroom's return page, which asks
    // Stripe (not the browser) what became of the payment.
    let returning = paid(&server, &key, "4000002500003155", 900, "automatic").await;
    let returning_id = returning["id"].as_str().unwrap();
    let return_urls = stripe.get("/_config/return_urls").await;
    let expected = format!("/pay/return/{returning_id}");
    assert!(
        return_urls.as_array().unwrap().iter().any(|u| u.as_str().unwrap().ends_with(&expected)),
        "Stripe's return_url is strongroom's return page: {return_urls}"
    );
    let at_stripe = stripe.intent_for(returning_id).await;
    let early = server.request(reqwest::Method::GET, &expected).send().await.unwrap();
    assert_eq!(early.status(), 200);
    let still = server
        .request_as(&key, reqwest::Method::GET, &format!("/v1/payment_intents/{returning_id}"))
        .send()
        .await
        .unwrap();
    let still: Value = still.json().await.unwrap();
    assert_eq!(still["status"], "requires_action", "a return before authenticating moves nothing: {still}");
    let authenticate =
        format!("{}/v1/payment_intents/{}/_authenticate", stripe.base(), at_stripe["id"].as_str().unwrap());
    let form = [("client_secret", at_stripe["client_secret"].as_str().unwrap()), ("success", "true")];
    let response = reqwest::Client::new().post(authenticate).bearer_auth(SECRET_KEY).form(&form).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let back = server.request(reqwest::Method::GET, &expected).send().await.unwrap();
    assert_eq!(back.status(), 200);
    let done = server
        .request_as(&key, reqwest::Method::GET, &format!("/v1/payment_intents/{returning_id}"))
        .send()
        .await
        .unwrap();
    let done: Value = done.json().await.unwrap();
    assert_eq!((done["status"].as_str(), done["amount_received"].as_i64()), (Some("succeeded"), Some(900)), "{done}");

    // Cancel an authorisation: a void at Stripe.
    let held = paid(&server, &key, "4242424242424242", 800, "manual").await;
    let held_id = held["id"].as_str().unwrap();
    let (status, canceled) = post(&server, &key, &format!("/v1/payment_intents/{held_id}/cancel"), &json!({})).await;
    assert_eq!((status, canceled["status"].as_str()), (200, Some("canceled")), "{canceled}");
    assert_eq!(stripe.intent_for(held_id).await["status"], "canceled");

    // Refund part of the automatic capture.
    let body = json!({"payment_intent": auto_id, "amount": 500});
    let (status, refund) = post(&server, &key, "/v1/refunds", &body).await;
    assert_eq!((status, refund["status"].as_str()), (201, Some("succeeded")), "{refund}");
    let refund_id = refund["id"].as_str().unwrap();
    let stripe_refunds = stripe.get("/v1/refunds?limit=100").await;
    let at_stripe = stripe_refunds["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["metadata"]["strongroom_key"] == format!("{refund_id}:refund:1"))
        .cloned()
        .unwrap();
    assert_eq!(at_stripe["amount"], 500);

    // localstripe would refund more than was captured: our rule refuses first.
    let (status, problem) =
        post(&server, &key, "/v1/refunds", &json!({"payment_intent": auto_id, "amount": 1500})).await;
    assert_eq!((status, problem["code"].as_str()), (422, Some("refund_exceeds_captured")), "{problem}");
    assert_eq!(stripe.keys_on("/v1/refunds").await.len(), 1, "nothing more reached Stripe");

    // localstripe ignores idempotency keys: a retried confirm is answered by us, and Stripe sees
    // one PaymentIntent.
    let card = json!({"type": "card", "value": {"number": "4242424242424242", "exp_month": 12, "exp_year": 2040, "cvc": "123"}});
    let (_, token) = post(&server, &key, "/v1/tokens", &card).await;
    let body = json!({"amount": 4200, "currency": "EUR", "payment_method": token["id"]});
    let (_, retried) = post(&server, &key, "/v1/payment_intents", &body).await;
    let retried_id = retried["id"].as_str().unwrap();
    let mut answers = Vec::new();
    for _ in 0..2 {
        let response = server
            .request_as(&key, Method::POST, &format!("/v1/payment_intents/{retried_id}/confirm"))
            .header("Idempotency-Key", "confirm-retry-1")
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        answers.push((response.status().as_u16(), response.json::<Value>().await.unwrap()));
    }
    assert_eq!(answers[0], answers[1]);
    assert_eq!(answers[0].1["status"], "succeeded", "{:?}", answers[0]);
    let listed = stripe.get("/v1/payment_intents?limit=100").await;
    let made = listed["data"].as_array().unwrap().iter().filter(|pi| pi["metadata"]["strongroom_intent"] == retried_id);
    assert_eq!(made.count(), 1);

    // Our idempotency keys went to Stripe, one per call.
    let intents = stripe.keys_on("/v1/payment_intents").await;
    for id in [auto_id, manual_id, held_id] {
        assert!(intents.contains(&format!("{id}:authorize:1")), "{intents:?}");
    }
    let methods = stripe.keys_on("/v1/payment_methods").await;
    assert!(methods.contains(&format!("{auto_id}:authorize:1:payment_method")), "{methods:?}");
    let capture_path =
        format!("/v1/payment_intents/{}/capture", stripe.intent_for(manual_id).await["id"].as_str().unwrap());
    assert_eq!(stripe.keys_on(&capture_path).await, [format!("{manual_id}:capture:2")]);
    let cancel_path =
        format!("/v1/payment_intents/{}/cancel", stripe.intent_for(held_id).await["id"].as_str().unwrap());
    assert_eq!(stripe.keys_on(&cancel_path).await, [format!("{held_id}:cancel:2")]);
    assert_eq!(stripe.keys_on("/v1/refunds").await, [format!("{refund_id}:refund:1")]);

    // The secret key is in no log line.
    let logs = strongroom_testkit::captured_logs();
    assert!(!logs.contains(SECRET_KEY) && !logs.contains(WEBHOOK_SECRET), "a Stripe secret was logged");
    server.shutdown().await;
}

fn event(id: &str, kind: &str, t: i64, object: Value) -> String {
    json!({"id": id, "object": "event", "type": kind, "created": t, "livemode": false, "data": {"object": object}})
        .to_string()
}

async fn webhooks_are_verified_and_replays_do_nothing(backend: Backend) {
    let Some(stripe) = LocalStripe::start().await else { return };
    let Some(server) = stripe_server(backend, &stripe).await else { return };
    let t = now_secs(&server);
    let body = event("evt_unknown_1", "customer.created", t, json!({"id": "cus_1", "object": "customer"}));

    // No signature, a malformed one, another secret's, and one signed over another body.
    let (status, problem) = deliver(&server, &body, None).await;
    assert_eq!((status, problem["code"].as_str()), (400, Some("gateway_signature_missing")), "{problem}");
    let (status, problem) = deliver(&server, &body, Some("v1=abc")).await;
    assert_eq!((status, problem["code"].as_str()), (400, Some("gateway_signature_malformed")));
    let good = stripe.sign(&body, t).await;
    let forged = good.replace("v1=", "v1=00");
    let (status, problem) = deliver(&server, &body, Some(&forged)).await;
    assert_eq!((status, problem["code"].as_str()), (400, Some("gateway_signature_invalid")));
    assert_eq!(problem["type"], "urn:strongroom:problem:gateway_signature_invalid");
    let other_body = body.replace("cus_1", "cus_2");
    let (status, _) = deliver(&server, &other_body, Some(&good)).await;
    assert_eq!(status, 400);
    assert!(!problem.to_string().contains(WEBHOOK_SECRET), "the secret is never echoed");

    // Any of several v1 signatures may match.
    let several = format!("{good},v1={}", "ab".repeat(32));
    let (status, receipt) = deliver(&server, &body, Some(&several)).await;
    assert_eq!(status, 200, "{receipt}");
    assert_eq!(receipt, json!({"received": true, "processed": true}));
    // A replay is acknowledged and does nothing.
    let (status, receipt) = deliver(&server, &body, Some(&good)).await;
    assert_eq!((status, receipt["processed"].as_bool()), (200, Some(false)));
    // An unknown type is audited once per type, not per event.
    let again = event("evt_unknown_2", "customer.created", t, json!({"id": "cus_3", "object": "customer"}));
    let (status, _) = deliver(&server, &again, Some(&stripe.sign(&again, t).await)).await;
    assert_eq!(status, 200);
    assert_eq!(audit_actions(&server, "customer.created").await, ["gateway_event.unknown_type"]);

    // Stale: signed 301 s before the server's clock (and 301 s after).
    let fresh = event("evt_stale_1", "customer.created", t, json!({"id": "cus_4", "object": "customer"}));
    let old = stripe.sign(&fresh, t - 301).await;
    let (status, problem) = deliver(&server, &fresh, Some(&old)).await;
    assert_eq!((status, problem["code"].as_str()), (400, Some("gateway_signature_expired")), "{problem}");
    let future = stripe.sign(&fresh, t + 301).await;
    let (status, _) = deliver(&server, &fresh, Some(&future)).await;
    assert_eq!(status, 400);
    let edge = stripe.sign(&fresh, t - 299).await;
    let (status, _) = deliver(&server, &fresh, Some(&edge)).await;
    assert_eq!(status, 200, "within the tolerance");
    // The same check against the injected clock: move it on, and a signature of `t` is stale.
    server.clock.advance(Duration::from_secs(400));
    let late = event("evt_stale_2", "customer.created", t, json!({"id": "cus_5", "object": "customer"}));
    let signed = stripe.sign(&late, t).await;
    let (status, _) = deliver(&server, &late, Some(&signed)).await;
    assert_eq!(status, 400);

    // Malformed body, correctly signed.
    let t = now_secs(&server);
    let junk = "{\"not\": \"an event\"}";
    let (status, problem) = deliver(&server, junk, Some(&stripe.sign(junk, t).await)).await;
    assert_eq!((status, problem["code"].as_str()), (400, Some("gateway_event_malformed")));
    server.shutdown().await;
}

async fn disputes_come_from_signed_webhooks_once(backend: Backend) {
    let Some(stripe) = LocalStripe::start().await else { return };
    let Some(server) = stripe_server(backend, &stripe).await else { return };
    let key = server.bootstrap_key.clone();
    let body = json!({"url": "http://127.0.0.1:9/hook", "event_types": ["*"]});
    let (status, _) = post(&server, &key, "/v1/webhook_endpoints", &body).await;
    assert_eq!(status, 201);
    let intent = paid(&server, &key, "4242424242424242", 2500, "automatic").await;
    let intent_id = intent["id"].as_str().unwrap();
    let stripe_pi = stripe.intent_for(intent_id).await["id"].as_str().unwrap().to_owned();

    let t = now_secs(&server);
    let due = t + 7 * 24 * 3600;
    let dispute = |status: &str| {
        json!({"id": "dp_1StripeDispute", "object": "dispute", "amount": 2500, "currency": "eur",
               "reason": "fraudulent", "status": status, "payment_intent": stripe_pi, "charge": "ch_1",
               "evidence_details": {"due_by": due, "has_evidence": false}})
    };
    let created = event("evt_dispute_created", "charge.dispute.created", t, dispute("needs_response"));
    let signature = stripe.sign(&created, t).await;
    // 30 concurrent deliveries of one event: exactly one takes effect.
    let mut handles = Vec::new();
    for _ in 0..30 {
        let client = server.client.clone();
        let url = server.url("/v1/gateways/stripe/webhook");
        let (body, signature) = (created.clone(), signature.clone());
        handles.push(tokio::spawn(async move {
            let response = client
                .post(url)
                .header("content-type", "application/json")
                .header("Stripe-Signature", signature)
                .body(body)
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.unwrap())
        }));
    }
    let mut processed = 0;
    for handle in handles {
        let (status, receipt) = handle.await.unwrap();
        assert_eq!(status, 200, "{receipt}");
        processed += usize::from(receipt["processed"] == true);
    }
    assert_eq!(processed, 1, "one delivery processed, 29 acknowledged");

    let (status, list) = send(&server, &key, Method::GET, "/v1/disputes", None).await;
    assert_eq!(status, 200, "{list}");
    let data = list["data"].as_array().unwrap();
    assert_eq!(data.len(), 1, "{list}");
    let ours = &data[0];
    let dispute_id = ours["id"].as_str().unwrap();
    assert!(dispute_id.starts_with("dp_") && dispute_id != "dp_1StripeDispute");
    assert_eq!(ours["payment_intent"], intent_id);
    assert_eq!((ours["amount"].as_i64(), ours["currency"].as_str()), (Some(2500), Some("eur")));
    assert_eq!((ours["reason"].as_str(), ours["status"].as_str()), (Some("fraudulent"), Some("needs_response")));
    let deadline = strongroom_types::Timestamp::from_unix_millis(due * 1000).to_rfc3339();
    assert_eq!(ours["evidence_due_by"], deadline);
    assert_eq!(ours["gateway_reference"], "dp_1StripeDispute");
    assert_eq!(audit_actions(&server, dispute_id).await, ["dispute.created"]);

    // Updated, then closed: the same dispute of ours.
    let updated = event("evt_dispute_updated", "charge.dispute.updated", t, dispute("under_review"));
    let (status, _) = deliver(&server, &updated, Some(&stripe.sign(&updated, t).await)).await;
    assert_eq!(status, 200);
    let closed = event("evt_dispute_closed", "charge.dispute.closed", t, dispute("lost"));
    let (status, _) = deliver(&server, &closed, Some(&stripe.sign(&closed, t).await)).await;
    assert_eq!(status, 200);
    let (status, read) = send(&server, &key, Method::GET, &format!("/v1/disputes/{dispute_id}"), None).await;
    assert_eq!((status, read["status"].as_str()), (200, Some("lost")), "{read}");
    assert_eq!(audit_actions(&server, dispute_id).await, ["dispute.created", "dispute.updated", "dispute.closed"]);

    // Paging, a bad cursor, another space's key.
    let (status, page) = send(&server, &key, Method::GET, "/v1/disputes?limit=1", None).await;
    assert_eq!((status, page["has_more"].as_bool()), (200, Some(false)));
    let (status, problem) = send(&server, &key, Method::GET, "/v1/disputes?starting_after=nope", None).await;
    assert_eq!(status, 422, "{problem}");
    let test_key = {
        let body = json!({"name": "t", "scopes": ["payments:read"], "mode": "test"});
        let (_, created) = post(&server, &key, "/v1/api-keys", &body).await;
        created["secret"].as_str().unwrap().to_owned()
    };
    let (status, _) = send(&server, &test_key, Method::GET, &format!("/v1/disputes/{dispute_id}"), None).await;
    assert_eq!(status, 404, "another data space's dispute answers as a missing one");
    server.shutdown().await;
}

async fn a_webhook_settles_an_intent_left_processing(backend: Backend) {
    let Some(stripe) = LocalStripe::start().await else { return };
    let Some(server) = stripe_server(backend, &stripe).await else { return };
    let key = server.bootstrap_key.clone();
    // localstripe answers an amount of 1313 after 6 s; the gateway timeout is 2 s.
    let slow = paid(&server, &key, "4242424242424242", 1313, "automatic").await;
    let id = slow["id"].as_str().unwrap();
    assert_eq!(slow["status"], "processing", "{slow}");

    let t = now_secs(&server);
    let object = |status: &str| {
        json!({"id": "pi_3StripeSlow", "object": "payment_intent", "status": status, "amount": 1313,
               "amount_received": 1313, "currency": "eur", "metadata": {"strongroom_intent": id}})
    };
    let body = event("evt_pi_succeeded", "payment_intent.succeeded", t, object("succeeded"));
    let (status, receipt) = deliver(&server, &body, Some(&stripe.sign(&body, t).await)).await;
    assert_eq!((status, receipt["processed"].as_bool()), (200, Some(true)));
    let (_, read) = send(&server, &key, Method::GET, &format!("/v1/payment_intents/{id}"), None).await;
    assert_eq!((read["status"].as_str(), read["amount_received"].as_i64()), (Some("succeeded"), Some(1313)), "{read}");
    assert_eq!(audit_actions(&server, id).await.last().map(String::as_str), Some("payment_intent.succeeded"));
    // A late word that contradicts it moves nothing: the intent waits for the gateway no more.
    let body = event("evt_pi_failed_late", "payment_intent.payment_failed", t, object("requires_payment_method"));
    let (status, receipt) = deliver(&server, &body, Some(&stripe.sign(&body, t).await)).await;
    assert_eq!((status, receipt["processed"].as_bool()), (200, Some(true)));
    let (_, again) = send(&server, &key, Method::GET, &format!("/v1/payment_intents/{id}"), None).await;
    assert_eq!(again, read);

    // A refund Stripe does not answer in time stays pending; `refund.updated` settles it.
    let (status, refund) = post(&server, &key, "/v1/refunds", &json!({"payment_intent": id})).await;
    assert_eq!((status, refund["status"].as_str()), (201, Some("pending")), "{refund}");
    let refund_id = refund["id"].as_str().unwrap();
    let object = json!({"id": "re_3StripeSlow", "object": "refund", "amount": 1313, "status": "succeeded",
                        "payment_intent": "pi_3StripeSlow", "metadata": {"strongroom_key": format!("{refund_id}:refund:1")}});
    let body = event("evt_refund_updated", "refund.updated", t, object);
    let (status, _) = deliver(&server, &body, Some(&stripe.sign(&body, t).await)).await;
    assert_eq!(status, 200);
    let (_, settled) = send(&server, &key, Method::GET, &format!("/v1/refunds/{refund_id}"), None).await;
    assert_eq!(settled["status"], "succeeded", "{settled}");
    assert_eq!(audit_actions(&server, refund_id).await, ["refund.created", "refund.succeeded"]);
    server.shutdown().await;
}

async fn saved_cards_tell_stripe_their_stored_credential_use(backend: Backend) {
    let Some(stripe) = LocalStripe::start().await else { return };
    let Some(server) = stripe_server(backend, &stripe).await else { return };
    let key = server.bootstrap_key.clone();
    let body = json!({"type": "card", "customer": "cust_s1",
        "value": {"number": "4242424242424242", "exp_month": 12, "exp_year": 2040, "cvc": "123"}});
    let (status, token) = post(&server, &key, "/v1/tokens", &body).await;
    assert_eq!(status, 201, "{token}");
    let body = json!({"amount": 3000, "currency": "eur", "customer": "cust_s1", "payment_method": token["id"],
        "confirm": true, "setup_future_usage": "off_session", "consent": {"text": "Keep my card for the monthly box"}});
    let (status, first) = post(&server, &key, "/v1/payment_intents", &body).await;
    assert_eq!((status, first["status"].as_str()), (201, Some("succeeded")), "{first}");
    let pm = first["saved_card"].as_str().expect("saved").to_owned();
    let body = json!({"amount": 3000, "currency": "eur", "customer": "cust_s1", "payment_method": pm,
        "confirm": true, "off_session": true, "mit_reason": "recurring"});
    let (status, monthly) = post(&server, &key, "/v1/payment_intents", &body).await;
    assert_eq!((status, monthly["status"].as_str()), (201, Some("succeeded")), "{monthly}");

    let sent = stripe.get("/_config/stored_credentials").await;
    let of = |id: &str| {
        sent["intents"].as_array().unwrap().iter().find(|s| s["strongroom_intent"] == id).cloned().unwrap_or_default()
    };
    let first_sent = of(first["id"].as_str().unwrap());
    assert_eq!(
        (first_sent["setup_future_usage"].as_str(), first_sent["off_session"].as_bool()),
        (Some("off_session"), Some(false)),
        "{sent}"
    );
    let customer = first_sent["customer"].as_str().expect("the kept card is given a Stripe Customer").to_owned();
    assert!(customer.starts_with("cus_"), "{sent}");
    // The network's id of the first authorisation, as Stripe's charge reports it, is on our
    // intent and kept with the saved card.
    let at_stripe = stripe.intent_for(first["id"].as_str().unwrap()).await;
    let network_id = at_stripe["latest_charge"]["payment_method_details"]["card"]["network_transaction_id"]
        .as_str()
        .expect("the stand-in reports one")
        .to_owned();
    assert_eq!(first["network_transaction_id"], network_id.as_str(), "{first}");
    let (_, saved) = send(&server, &key, Method::GET, &format!("/v1/saved_cards/{pm}"), None).await;
    assert_eq!(saved["network_transaction_id"], network_id.as_str(), "{saved}");
    assert!(!saved.to_string().contains(&customer), "Stripe's handle on the card is never shown: {saved}");

    // The payment without the customer names the kept PaymentMethod and its Customer: Stripe
    // links it to the first payment. No new PaymentMethod is made (Stripe refuses to reuse one
    // that was not attached to the Customer, so this passing shows the first attached it).
    let monthly_sent = of(monthly["id"].as_str().unwrap());
    assert_eq!(
        (monthly_sent["setup_future_usage"].as_str(), monthly_sent["off_session"].as_bool()),
        (None, Some(true)),
        "{sent}"
    );
    assert_eq!(
        (monthly_sent["customer"].as_str(), monthly_sent["payment_method"].as_str()),
        (Some(customer.as_str()), first_sent["payment_method"].as_str()),
        "{sent}"
    );
    // The customer pays again with the saved card, present: the same kept PaymentMethod.
    let body = json!({"amount": 1200, "currency": "eur", "customer": "cust_s1", "payment_method": pm, "confirm": true});
    let (status, again) = post(&server, &key, "/v1/payment_intents", &body).await;
    assert_eq!((status, again["status"].as_str()), (201, Some("succeeded")), "{again}");
    let sent = stripe.get("/_config/stored_credentials").await;
    let again_sent =
        sent["intents"].as_array().unwrap().iter().find(|s| s["strongroom_intent"] == again["id"]).unwrap();
    assert_eq!(
        (again_sent["customer"].as_str(), again_sent["payment_method"].as_str(), again_sent["off_session"].as_bool()),
        (Some(customer.as_str()), first_sent["payment_method"].as_str(), Some(false)),
        "{sent}"
    );
    assert_eq!(stripe.keys_on("/v1/payment_methods").await.len(), 1, "only the first payment sent the card");
    assert_eq!(sent["without_cvc"], 0, "{sent}");
    // Removed: the handle on the card at Stripe goes with it.
    let sql = "SELECT COALESCE(stored_method, '') FROM saved_cards WHERE id = $1";
    let kept: Vec<(String,)> = server.query_rows(sql, &pm).await;
    assert!(kept[0].0.starts_with("stripe:cus_"), "{kept:?}");
    let (status, _) = send(&server, &key, Method::DELETE, &format!("/v1/saved_cards/{pm}"), None).await;
    assert_eq!(status, 200);
    let kept: Vec<(String,)> = server.query_rows(sql, &pm).await;
    assert_eq!(kept[0].0, "", "no handle is kept for a removed card");
}

/// A server on the Stripe gateway whose reconciliation runs every second, for calls older than
/// one second (the gateway's timeout), believing "not found" at Stripe's search after 8 s.
async fn reconciling_server(backend: Backend, stripe: &LocalStripe) -> Option<TestServer> {
    let base = stripe.base();
    TestServer::spawn_with(backend, |config| {
        config.payments.gateway = "stripe".into();
        config.payments.gateway_timeout = Duration::from_secs(1);
        config.payments.reconcile_interval = Duration::from_secs(1);
        config.payments.stripe.search_lag = Duration::from_secs(8);
        config.payments.stripe.secret_key = Some(Secret::new(SECRET_KEY.into()));
        config.payments.stripe.webhook_secret = Some(Secret::new(WEBHOOK_SECRET.into()));
        config.payments.stripe.api_base = base;
    })
    .await
}

/// Reads `path` every 200 ms until `done` says so (20 s at most), and gives the last read.
async fn read_until(server: &TestServer, path: &str, done: impl Fn(&Value) -> bool) -> Value {
    let mut read = Value::Null;
    for _ in 0..100 {
        read = send(server, &server.bootstrap_key, Method::GET, path, None).await.1;
        if done(&read) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    read
}

async fn reconciliation_finds_a_lost_answer_by_stripes_search(backend: Backend) {
    let Some(stripe) = LocalStripe::start().await else { return };
    let Some(server) = reconciling_server(backend, &stripe).await else { return };
    let key = server.bootstrap_key.clone();
    // The stand-in answers 13.13 after 6 s: strongroom gave up after 1 s, Stripe charged.
    let slow = paid(&server, &key, "4242424242424242", 1313, "automatic").await;
    let id = slow["id"].as_str().unwrap().to_owned();
    assert_eq!(slow["status"], "processing", "{slow}");
    // Before the search lag has passed, not found is not believed: it stays processing.
    server.clock.advance(Duration::from_secs(3));
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let early = send(&server, &key, Method::GET, &format!("/v1/payment_intents/{id}"), None).await.1;
    assert_eq!(early["status"], "processing", "{early}");
    // Once Stripe has answered (6 s, real time), let the call be older than the timeout and the
    // lag by the test clock, which stands still otherwise.
    tokio::time::sleep(Duration::from_secs(5)).await;
    server.clock.advance(Duration::from_secs(10));
    let read = read_until(&server, &format!("/v1/payment_intents/{id}"), |r| r["status"] != "processing").await;
    assert_eq!((read["status"].as_str(), read["amount_received"].as_i64()), (Some("succeeded"), Some(1313)), "{read}");
    let at_stripe = stripe.intent_for(&id).await;
    assert_eq!(at_stripe["status"], "succeeded");
    let actions = audit_actions(&server, &id).await;
    assert_eq!(actions.last().map(String::as_str), Some("payment_intent.succeeded"), "{actions:?}");
    // The call was made once at Stripe (its key acted once).
    let effects = stripe.get("/_config/effects").await;
    assert!(effects["acted"].as_object().unwrap().values().all(|n| n == 1), "{effects}");
}

async fn reconciliation_settles_refunds_from_stripes_list(backend: Backend) {
    let Some(stripe) = LocalStripe::start().await else { return };
    let Some(server) = reconciling_server(backend, &stripe).await else { return };
    let key = server.bootstrap_key.clone();
    let payment = paid(&server, &key, "4242424242424242", 5000, "automatic").await;
    assert_eq!(payment["status"], "succeeded", "{payment}");
    let id = payment["id"].as_str().unwrap();
    // A refund whose answer is lost: the stand-in answers 13.13 after 6 s, strongroom gives up
    // after 1 s; Stripe made it.
    let (status, lost) = post(&server, &key, "/v1/refunds", &json!({"payment_intent": id, "amount": 1313})).await;
    assert_eq!((status, lost["status"].as_str()), (201, Some("pending")), "{lost}");
    let lost_id = lost["id"].as_str().unwrap().to_owned();
    // A refund Stripe answers `pending` (the stand-in keeps 14.14 pending until told).
    let (status, slow) = post(&server, &key, "/v1/refunds", &json!({"payment_intent": id, "amount": 1414})).await;
    assert_eq!((status, slow["status"].as_str()), (201, Some("pending")), "{slow}");
    let slow_id = slow["id"].as_str().unwrap().to_owned();

    // Once Stripe has made the lost one (6 s, real time), let both calls be older than the
    // timeout by the test clock: reconciliation finds the lost refund among the payment's
    // refunds at Stripe, by our key in its metadata, and settles it. No webhook is sent.
    tokio::time::sleep(Duration::from_secs(6)).await;
    server.clock.advance(Duration::from_secs(10));
    let settled = read_until(&server, &format!("/v1/refunds/{lost_id}"), |r| r["status"] != "pending").await;
    assert_eq!((settled["status"].as_str(), settled["amount"].as_i64()), (Some("succeeded"), Some(1313)), "{settled}");
    assert_eq!(audit_actions(&server, &lost_id).await, ["refund.created", "refund.succeeded"]);
    // The one Stripe still says is pending stays pending, run after run.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (_, still) = send(&server, &key, Method::GET, &format!("/v1/refunds/{slow_id}"), None).await;
    assert_eq!(still["status"], "pending", "{still}");
    // Stripe settles it; the next run reads that and settles ours.
    assert_eq!(stripe.post("/_config/settle_refunds").await["settled"], 1);
    let settled = read_until(&server, &format!("/v1/refunds/{slow_id}"), |r| r["status"] != "pending").await;
    assert_eq!(settled["status"], "succeeded", "{settled}");
    assert_eq!(audit_actions(&server, &slow_id).await, ["refund.created", "refund.succeeded"]);
    let (_, intent) = send(&server, &key, Method::GET, &format!("/v1/payment_intents/{id}"), None).await;
    assert_eq!(intent["amount_refunded"], 1313 + 1414, "{intent}");
    // Each refund was made once at Stripe: reconciliation found them and sent nothing again.
    assert_eq!(stripe.keys_on("/v1/refunds").await, [format!("{lost_id}:refund:1"), format!("{slow_id}:refund:1")]);
    let effects = stripe.get("/_config/effects").await;
    assert!(effects["acted"].as_object().unwrap().values().all(|n| n == 1), "{effects}");
    server.shutdown().await;
}
