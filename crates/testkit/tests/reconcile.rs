//! Black-box tests of payment reconciliation on a real server, on SQLite and PostgreSQL: an
//! authorisation whose answer was lost (the sandbox's timeout card) is settled by the job from
//! the gateway's ledger, once; an authorisation the gateway never received goes back to
//! `requires_payment_method` without a charge; `strongroom payments reconcile` reports without
//! changing anything, settles with `--settle` (and the customer's receipt is sent), and then has
//! nothing left to report; a payment or refund request that fails after its gateway call (a
//! fault injected into the database) keeps its idempotency key, so its retry replays the failure
//! instead of charging, capturing or refunding again, and the job settles it once the fault is gone;
//! a claim whose audit entry cannot be written never reaches the gateway.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code fails loudly")]

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use strongroom_testkit::{Backend, TestServer, on_both_backends};

on_both_backends!(
    a_lost_answer_is_settled_by_the_job_from_the_gateway_ledger,
    an_authorisation_the_gateway_never_saw_is_not_charged,
    the_command_reports_then_settles,
    a_request_that_fails_after_its_gateway_call_is_not_run_again,
    a_claim_whose_audit_entry_fails_charges_nothing
);

/// The sandbox card whose authorisation happens but whose answer is lost.
const TIMEOUT_CARD: &str = "4000000000001000";

async fn post(server: &TestServer, key: &str, path: &str, body: &Value) -> (u16, Value) {
    let response = server.request_as(key, Method::POST, path).json(body).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

async fn get(server: &TestServer, key: &str, path: &str) -> Value {
    let response = server.request_as(key, Method::GET, path).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 200);
    response.json().await.unwrap()
}

async fn test_key(server: &TestServer) -> String {
    let scopes = ["payments:write", "payments:read", "payments:refund", "vault:write", "admin:webhooks"];
    let body = json!({"name": "ci", "scopes": scopes, "mode": "test"});
    let (status, key) = post(server, &server.bootstrap_key, "/v1/api-keys", &body).await;
    assert_eq!(status, 201, "{key}");
    let key = key["secret"].as_str().unwrap().to_owned();
    // A loopback endpoint subscribed to every event, so the outbox holds them.
    let body = json!({"url": "http://127.0.0.1:9/hook", "event_types": ["*"]});
    let (status, endpoint) = post(server, &key, "/v1/webhook_endpoints", &body).await;
    assert_eq!(status, 201, "{endpoint}");
    key
}

/// A new card token for `number`, as the vault answered it.
async fn card_token(server: &TestServer, key: &str, number: &str) -> Value {
    let card = json!({"type": "card", "value": {"number": number, "exp_month": 12, "exp_year": 2040, "cvc": "123"}});
    let (status, token) = post(server, key, "/v1/tokens", &card).await;
    assert_eq!(status, 201, "{token}");
    token
}

/// A confirmed intent of 2500 EUR on `number`, as the confirm answered it.
async fn confirmed(server: &TestServer, key: &str, number: &str) -> Value {
    confirmed_for(server, key, number, None).await
}

/// [`confirmed`], paid by `customer` when given.
async fn confirmed_for(server: &TestServer, key: &str, number: &str, customer: Option<&str>) -> Value {
    let token = card_token(server, key, number).await;
    let mut body = json!({"amount": 2500, "currency": "EUR", "payment_method": token["id"]});
    if let Some(customer) = customer {
        body["customer"] = json!(customer);
    }
    let (status, intent) = post(server, key, "/v1/payment_intents", &body).await;
    assert_eq!(status, 201, "{intent}");
    let id = intent["id"].as_str().unwrap();
    let (status, intent) = post(server, key, &format!("/v1/payment_intents/{id}/confirm"), &json!({})).await;
    assert_eq!(status, 200, "{intent}");
    intent
}

/// Waits (real time: the job runs every second) until the intent leaves `processing`.
async fn settled(server: &TestServer, key: &str, id: &str) -> Value {
    for _ in 0..100 {
        let intent = get(server, key, &format!("/v1/payment_intents/{id}")).await;
        if intent["status"] != "processing" {
            return intent;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("the intent {id} stayed processing");
}

/// Rows of `sql` (one text column, one bind) in the server's database.
async fn column(server: &TestServer, sql: &str, bind: &str) -> Vec<String> {
    match server.backend {
        Backend::Sqlite => {
            let path = server.data_dir().join("strongroom.db");
            let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}?mode=ro", path.display())).await.unwrap();
            let rows: Vec<(String,)> = sqlx::query_as(sql).bind(bind).fetch_all(&pool).await.unwrap();
            pool.close().await;
            rows.into_iter().map(|r| r.0).collect()
        }
        Backend::Postgres => {
            let url = server.config.database_url.as_ref().unwrap().expose().clone();
            let pool = sqlx::PgPool::connect(&url).await.unwrap();
            let rows: Vec<(String,)> = sqlx::query_as(sql).bind(bind).fetch_all(&pool).await.unwrap();
            pool.close().await;
            rows.into_iter().map(|r| r.0).collect()
        }
    }
}

/// Runs `statements` on the server's database, through its own store.
async fn execute(server: &TestServer, statements: &[&str]) {
    for statement in statements {
        server.app().store.execute_admin(statement).await.unwrap();
    }
}

/// A fault injected into the database: a trigger that fails the statements it matches, until
/// [`heal`] drops it.
struct Fault {
    trigger: String,
    table: String,
    /// When it fires, in SQLite's trigger syntax (`BEFORE … ON table WHEN …`).
    sqlite: String,
    /// When it fires, in PostgreSQL's (`BEFORE … ON table FOR EACH ROW WHEN (…)`).
    postgres: String,
}

/// Every update of a `table` row to `status = 'succeeded'` fails: the settle of a payment or
/// refund the gateway has just made.
fn settles_of(table: &str) -> Fault {
    Fault {
        trigger: format!("fail_{table}_settle"),
        table: table.to_owned(),
        sqlite: format!("BEFORE UPDATE OF status ON {table} WHEN NEW.status = 'succeeded'"),
        postgres: format!("BEFORE UPDATE ON {table} FOR EACH ROW WHEN (NEW.status = 'succeeded')"),
    }
}

/// Every append of an audit entry recording a confirm (`payment_intent.confirmed`) fails.
fn confirm_entries() -> Fault {
    Fault {
        trigger: "fail_confirm_entries".to_owned(),
        table: "audit_entries".to_owned(),
        sqlite: "BEFORE INSERT ON audit_entries \
                 WHEN instr(CAST(NEW.leaf AS TEXT), '\"payment_intent.confirmed\"') > 0"
            .to_owned(),
        postgres: "BEFORE INSERT ON audit_entries FOR EACH ROW \
                   WHEN (position(convert_to('\"payment_intent.confirmed\"', 'UTF8') IN NEW.leaf) > 0)"
            .to_owned(),
    }
}

/// Installs `fault`.
async fn inject(server: &TestServer, fault: &Fault) {
    let trigger = &fault.trigger;
    match server.backend {
        Backend::Sqlite => {
            let create =
                format!("CREATE TRIGGER {trigger} {} BEGIN SELECT RAISE(ABORT, 'injected fault'); END", fault.sqlite);
            execute(server, &[&create]).await;
        }
        Backend::Postgres => {
            let function = "CREATE OR REPLACE FUNCTION injected_fault() RETURNS trigger LANGUAGE plpgsql AS \
                            $$ BEGIN RAISE EXCEPTION 'injected fault'; END $$";
            let create = format!("CREATE TRIGGER {trigger} {} EXECUTE FUNCTION injected_fault()", fault.postgres);
            execute(server, &[function, &create]).await;
        }
    }
}

/// Removes `fault`.
async fn heal(server: &TestServer, fault: &Fault) {
    let drop = match server.backend {
        Backend::Sqlite => format!("DROP TRIGGER {}", fault.trigger),
        Backend::Postgres => format!("DROP TRIGGER {} ON {}", fault.trigger, fault.table),
    };
    execute(server, &[&drop]).await;
}

/// `POST path` with `body` under `Idempotency-Key: idempotency_key`: status, whether it was a
/// replay, and the answer.
async fn post_once(
    server: &TestServer,
    key: &str,
    path: &str,
    body: &Value,
    idempotency_key: &str,
) -> (u16, bool, Value) {
    let response = server
        .request_as(key, Method::POST, path)
        .header("Idempotency-Key", idempotency_key)
        .json(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let replayed = response.headers().get("idempotent-replayed").is_some_and(|v| v == "true");
    (status, replayed, response.json().await.unwrap())
}

async fn ledger(server: &TestServer, id: &str) -> Vec<String> {
    let sql = "SELECT operation || ':' || outcome FROM sandbox_ledger WHERE reference = $1 ORDER BY created_at";
    column(server, sql, id).await
}

async fn events(server: &TestServer, id: &str) -> Vec<String> {
    let pattern = format!("%\"id\":\"{id}\"%");
    let sql = match server.backend {
        Backend::Sqlite => "SELECT event_type FROM outbox WHERE CAST(payload AS TEXT) LIKE $1",
        Backend::Postgres => "SELECT event_type FROM outbox WHERE convert_from(payload, 'UTF8') LIKE $1",
    };
    let mut found = column(server, sql, &pattern).await;
    found.sort();
    found
}

async fn a_lost_answer_is_settled_by_the_job_from_the_gateway_ledger(backend: Backend) {
    let Some(server) = TestServer::spawn_with(backend, |config| {
        config.payments.gateway_timeout = Duration::from_secs(1);
        config.payments.reconcile_interval = Duration::from_secs(1);
    })
    .await
    else {
        return;
    };
    let key = test_key(&server).await;
    let intent = confirmed(&server, &key, TIMEOUT_CARD).await;
    assert_eq!(intent["status"], "processing", "{intent}");
    let id = intent["id"].as_str().unwrap();

    // Within the gateway's timeout the job leaves it alone: the request may still be waiting.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let still = get(&server, &key, &format!("/v1/payment_intents/{id}")).await;
    assert_eq!(still["status"], "processing", "{still}");

    server.clock.advance(Duration::from_secs(5));
    let after = settled(&server, &key, id).await;
    assert_eq!(after["status"], "succeeded", "{after}");
    assert_eq!(after["amount_received"], 2500);
    assert!(after["last_payment_error"].is_null(), "{after}");
    // The gateway authorised once, and nothing was sent again.
    assert_eq!(ledger(&server, id).await, ["authorize:captured"]);
    let events = events(&server, id).await;
    assert_eq!(events.iter().filter(|e| *e == "payment_intent.succeeded").count(), 1, "{events:?}");

    // Later runs find nothing more to do.
    server.clock.advance(Duration::from_secs(5));
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(ledger(&server, id).await, ["authorize:captured"]);
    let open = column(
        &server,
        "SELECT idempotency_key FROM payment_gateway_calls WHERE intent_id = $1 AND outcome IS NULL",
        id,
    )
    .await;
    assert!(open.is_empty(), "{open:?}");
    server.shutdown().await;
}

async fn an_authorisation_the_gateway_never_saw_is_not_charged(backend: Backend) {
    // Each sandbox call takes 3 s and the gateway timeout is 1 s: the call is abandoned before
    // the sandbox records it.
    let Some(server) = TestServer::spawn_with(backend, |config| {
        config.payments.gateway_timeout = Duration::from_secs(1);
        config.payments.sandbox_latency = Duration::from_secs(3);
        config.payments.reconcile_interval = Duration::from_secs(1);
    })
    .await
    else {
        return;
    };
    let key = test_key(&server).await;
    let intent = confirmed(&server, &key, "4242424242424242").await;
    assert_eq!(intent["status"], "processing", "{intent}");
    let id = intent["id"].as_str().unwrap();

    server.clock.advance(Duration::from_secs(5));
    let after = settled(&server, &key, id).await;
    assert_eq!(after["status"], "requires_payment_method", "{after}");
    assert_eq!(after["last_payment_error"]["code"], "gateway_not_reached", "{after}");
    assert_eq!(after["amount_received"], 0);
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(ledger(&server, id).await.is_empty(), "no authorisation reached the gateway, and none was re-sent");
    let events = events(&server, id).await;
    assert!(events.contains(&"payment_intent.payment_failed".to_owned()), "{events:?}");
    server.shutdown().await;
}

async fn the_command_reports_then_settles(backend: Backend) {
    use clap::Parser as _;
    let Some(mut server) = TestServer::spawn_with(backend, |config| {
        config.payments.gateway_timeout = Duration::from_secs(1);
        config.payments.reconcile_interval = Duration::from_secs(3600);
    })
    .await
    else {
        return;
    };
    test_key(&server).await;
    // A registered customer pays: the payment the command settles gets its receipt.
    let (customer, _) = server.signed_in_customer("cli@example.com", "violet tractor anthem 1987").await;
    let key = server.bootstrap_key.clone();
    let intent = confirmed_for(&server, &key, TIMEOUT_CARD, Some(&customer)).await;
    assert_eq!(intent["status"], "processing", "{intent}");
    let id = intent["id"].as_str().unwrap().to_owned();
    server.stop().await;
    // The command reads the system clock: let the call be older than the gateway's timeout.
    tokio::time::sleep(Duration::from_millis(2500)).await;

    let dir = tempfile::tempdir().unwrap();
    let config_file = dir.path().join("strongroom.toml");
    std::fs::write(&config_file, "[payments]\ngateway_timeout = \"1s\"\n").unwrap();
    let data_dir = server.data_dir();
    let database_url = server.config.database_url.as_ref().map(|url| url.expose().clone());
    let run = |extra: &'static [&'static str]| {
        let mut args = vec![
            "strongroom".to_owned(),
            "--data-dir".into(),
            data_dir.to_str().unwrap().into(),
            "--config".into(),
            config_file.to_str().unwrap().into(),
        ];
        if let Some(url) = &database_url {
            args.extend(["--database-url".into(), url.clone()]);
        }
        args.extend(["payments", "reconcile", "--since", "1h"].map(str::to_owned));
        args.extend(extra.iter().map(|a| (*a).to_owned()));
        strongroom::commands::run(strongroom::commands::Cli::try_parse_from(args).unwrap())
    };
    // A report changes nothing and says something differs (exit 3).
    assert_eq!(run(&[]).await, 3);
    assert_eq!(run(&["--json"]).await, 3);
    let status = column(&server, "SELECT status FROM payment_intents WHERE id = $1", &id).await;
    assert_eq!(status, ["processing"]);
    // --settle settles it by the gateway's word; then nothing is left.
    assert_eq!(run(&["--settle"]).await, 3);
    assert_eq!(run(&[]).await, 0);

    server.restart().await;
    let after = get(&server, &key, &format!("/v1/payment_intents/{id}")).await;
    assert_eq!(after["status"], "succeeded", "{after}");
    assert_eq!(ledger(&server, &id).await, ["authorize:captured"]);
    // The receipt the command queued is sent by the server once it runs again (the command
    // queued it at the system clock's time, which the test server's clock has not reached).
    server.clock.advance(Duration::from_secs(60));
    let mail_dir = server.data_dir().join("mail");
    let mut receipt = None;
    for _ in 0..100 {
        receipt = std::fs::read_dir(&mail_dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with("-payment_receipt.eml"))
            .map(|e| std::fs::read_to_string(e.path()).unwrap().replace("=\r\n", ""))
            .find(|text| text.contains("To: cli@example.com"));
        if receipt.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let receipt = receipt.expect("a receipt for the payment the command settled");
    assert!(receipt.contains(&id), "the receipt names the payment");
    server.shutdown().await;
}

async fn a_request_that_fails_after_its_gateway_call_is_not_run_again(backend: Backend) {
    let Some(server) = TestServer::spawn_with(backend, |config| {
        // Long enough for the sandbox to answer on a busy machine: the requests must see its answer.
        config.payments.gateway_timeout = Duration::from_secs(10);
        config.payments.reconcile_interval = Duration::from_secs(1);
    })
    .await
    else {
        return;
    };
    let key = test_key(&server).await;
    let token = card_token(&server, &key, "4242424242424242").await;

    // The gateway charges, then recording its answer fails.
    inject(&server, &settles_of("payment_intents")).await;
    let pay = json!({"amount": 2500, "currency": "EUR", "payment_method": token["id"], "confirm": true});
    let (status, replayed, problem) = post_once(&server, &key, "/v1/payment_intents", &pay, "checkout-7").await;
    assert_eq!((status, replayed), (500, false), "{problem}");
    assert_eq!(problem["code"], "payment_outcome_pending", "{problem}");
    let id = problem["object_id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("pi_"), "{problem}");
    assert_eq!(ledger(&server, &id).await, ["authorize:captured"]);

    // The shop's retry replays that answer: no second intent, no second charge.
    let (status, replayed, again) = post_once(&server, &key, "/v1/payment_intents", &pay, "checkout-7").await;
    assert_eq!((status, replayed), (500, true), "{again}");
    assert_eq!(again["object_id"], id.as_str(), "{again}");
    let charges = column(&server, "SELECT reference FROM sandbox_ledger WHERE operation = $1", "authorize").await;
    assert_eq!(charges, [id.as_str()]);
    let intents = column(&server, "SELECT id FROM payment_intents WHERE id LIKE $1", "pi_%").await;
    assert_eq!(intents, [id.as_str()]);

    // A manual capture whose answer cannot be recorded: the same, and its retry is not refused
    // as a conflict (the intent is `processing`) but replayed.
    let token = card_token(&server, &key, "4242424242424242").await;
    let manual = json!({"amount": 1800, "currency": "EUR", "payment_method": token["id"], "confirm": true,
        "capture_method": "manual"});
    let (status, authorised) = post(&server, &key, "/v1/payment_intents", &manual).await;
    assert_eq!((status, &authorised["status"]), (201, &json!("requires_capture")), "{authorised}");
    let manual_id = authorised["id"].as_str().unwrap().to_owned();
    let capture = format!("/v1/payment_intents/{manual_id}/capture");
    let (status, replayed, problem) = post_once(&server, &key, &capture, &json!({}), "capture-7").await;
    assert_eq!((status, replayed, &problem["code"]), (500, false, &json!("payment_outcome_pending")), "{problem}");
    assert_eq!(problem["object_id"], manual_id.as_str(), "{problem}");
    let (status, replayed, again) = post_once(&server, &key, &capture, &json!({}), "capture-7").await;
    assert_eq!((status, replayed), (500, true), "{again}");

    // Once the fault is gone, the job settles both by the gateway's word.
    heal(&server, &settles_of("payment_intents")).await;
    server.clock.advance(Duration::from_secs(15));
    let after = settled(&server, &key, &id).await;
    assert_eq!(after["status"], "succeeded", "{after}");
    assert_eq!(after["amount_received"], 2500, "{after}");
    let captured = settled(&server, &key, &manual_id).await;
    assert_eq!((&captured["status"], &captured["amount_received"]), (&json!("succeeded"), &json!(1800)), "{captured}");
    assert_eq!(ledger(&server, &manual_id).await, ["authorize:authorized", "capture:captured"]);

    // The same for a refund: refunded once, however often the shop retries.
    inject(&server, &settles_of("refunds")).await;
    let refund = json!({"payment_intent": id, "amount": 1000});
    let (status, replayed, problem) = post_once(&server, &key, "/v1/refunds", &refund, "refund-7").await;
    assert_eq!((status, replayed), (500, false), "{problem}");
    assert_eq!(problem["code"], "payment_outcome_pending", "{problem}");
    let refund_id = problem["object_id"].as_str().unwrap().to_owned();
    assert!(refund_id.starts_with("re_"), "{problem}");
    let (status, replayed, again) = post_once(&server, &key, "/v1/refunds", &refund, "refund-7").await;
    assert_eq!((status, replayed), (500, true), "{again}");
    assert_eq!(again["object_id"], refund_id.as_str(), "{again}");
    let refunds = |ledger: Vec<String>| ledger.iter().filter(|entry| entry.starts_with("refund:")).count();
    assert_eq!(refunds(ledger(&server, &id).await), 1);

    heal(&server, &settles_of("refunds")).await;
    server.clock.advance(Duration::from_secs(15));
    let mut status = Value::Null;
    for _ in 0..100 {
        status = get(&server, &key, &format!("/v1/refunds/{refund_id}")).await["status"].clone();
        if status != "pending" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(status, "succeeded");
    assert_eq!(refunds(ledger(&server, &id).await), 1);
    let after = get(&server, &key, &format!("/v1/payment_intents/{id}")).await;
    assert_eq!(after["amount_refunded"], 1000, "{after}");
    server.shutdown().await;
}

/// Money moves only once the audit log holds who confirmed: a claim whose audit entry cannot be
/// written answers 500 `payment_outcome_pending` without the card going to the gateway, and
/// reconciliation then gives the intent back, uncharged. In one request and in a separate confirm.
async fn a_claim_whose_audit_entry_fails_charges_nothing(backend: Backend) {
    let Some(server) = TestServer::spawn_with(backend, |config| {
        config.payments.gateway_timeout = Duration::from_secs(1);
        config.payments.reconcile_interval = Duration::from_secs(1);
    })
    .await
    else {
        return;
    };
    let key = test_key(&server).await;
    let mut ids = Vec::new();
    inject(&server, &confirm_entries()).await;
    // Created and confirmed in one request.
    let token = card_token(&server, &key, "4242424242424242").await;
    let pay = json!({"amount": 2500, "currency": "EUR", "payment_method": token["id"], "confirm": true});
    let (status, problem) = post(&server, &key, "/v1/payment_intents", &pay).await;
    assert_eq!((status, problem["code"].as_str()), (500, Some("payment_outcome_pending")), "{problem}");
    ids.push(problem["object_id"].as_str().unwrap().to_owned());
    // Created, then confirmed.
    let token = card_token(&server, &key, "4242424242424242").await;
    let body = json!({"amount": 2500, "currency": "EUR", "payment_method": token["id"]});
    let (status, intent) = post(&server, &key, "/v1/payment_intents", &body).await;
    assert_eq!(status, 201, "{intent}");
    let id = intent["id"].as_str().unwrap().to_owned();
    let (status, problem) = post(&server, &key, &format!("/v1/payment_intents/{id}/confirm"), &json!({})).await;
    assert_eq!((status, problem["code"].as_str()), (500, Some("payment_outcome_pending")), "{problem}");
    ids.push(id);
    heal(&server, &confirm_entries()).await;

    for id in &ids {
        assert!(ledger(&server, id).await.is_empty(), "the gateway never saw {id}");
        server.clock.advance(Duration::from_secs(5));
        let after = settled(&server, &key, id).await;
        assert_eq!(after["status"], "requires_payment_method", "{after}");
        assert_eq!(after["last_payment_error"]["code"], "gateway_not_reached", "{after}");
        assert_eq!(after["amount_received"], 0, "{after}");
        assert!(ledger(&server, id).await.is_empty(), "and reconciliation did not send it either");
    }
    server.shutdown().await;
}
