//! Security invariant: secrets and canary values sent through every endpoint never appear in a
//! log line, an error body, or the database file.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code fails loudly")]

use reqwest::Method;
use serde_json::json;
use strongroom_testkit::{Backend, TestServer, captured_logs};

const CANARY: &str = "CANARY7f3a-4111111111111111-hunter2";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canaries_never_reach_logs_bodies_or_the_database() {
    let server = TestServer::spawn(Backend::Sqlite).await.unwrap();
    let (created_id, created_secret) = server.create_key("canary-run", &["admin:metrics", "admin:api_keys"]).await;
    let forged = format!("{}{}", &created_secret[..created_secret.len() - 6], "abcdef");
    let mut bodies = Vec::new();
    let routes = [
        (Method::GET, "/healthz".to_owned()),
        (Method::GET, "/readyz".to_owned()),
        (Method::GET, "/openapi.json".to_owned()),
        (Method::GET, "/metrics".to_owned()),
        (Method::GET, "/v1/merchant".to_owned()),
        (Method::GET, "/v1/api-keys".to_owned()),
        (Method::POST, "/v1/api-keys".to_owned()),
        (Method::GET, format!("/v1/api-keys/{created_id}")),
        (Method::GET, format!("/v1/api-keys/{CANARY}")),
        (Method::DELETE, format!("/v1/api-keys/{CANARY}")),
        (Method::GET, format!("/v1/{CANARY}")),
    ];
    let credentials = [
        Some(server.bootstrap_key.clone()),
        Some(created_secret.clone()),
        Some(forged.clone()),
        Some(CANARY.to_owned()),
        None,
    ];
    for (method, path) in &routes {
        for key in &credentials {
            let query = format!("{path}?limit={CANARY}&token={CANARY}");
            for target in [path.as_str(), query.as_str()] {
                let mut request = server.client.request(method.clone(), server.url(target));
                if let Some(key) = key {
                    request = request.bearer_auth(key);
                }
                let request = request
                    .header("x-request-id", format!("{CANARY} not well formed"))
                    .header("cookie", format!("session={CANARY}"))
                    .header("x-forwarded-for", CANARY);
                let request = if *method == Method::POST {
                    request.json(
                        &json!({"name": "n", "scopes": [CANARY], "mode": CANARY, CANARY: CANARY, "expires_at": CANARY}),
                    )
                } else {
                    request
                };
                let response = request.send().await.unwrap();
                let status = response.status();
                let text = response.text().await.unwrap();
                if status.is_client_error() || status.is_server_error() {
                    bodies.push(text);
                }
            }
        }
    }
    // A malformed body carrying the canary.
    let response = server
        .request(Method::POST, "/v1/api-keys")
        .header("content-type", "application/json")
        .body(format!("{{\"name\": \"{CANARY}"))
        .send()
        .await
        .unwrap();
    bodies.push(response.text().await.unwrap());

    let secrets = [CANARY, server.bootstrap_key.as_str(), created_secret.as_str(), forged.as_str()];
    let secret_parts: Vec<&str> = secrets.iter().map(|s| &s[s.len() - 24..]).collect();
    for body in &bodies {
        for part in &secret_parts {
            assert!(!body.contains(part), "an error body contains a secret: {body}");
        }
        assert!(!body.contains("4111111111111111"), "{body}");
    }
    let logs = captured_logs();
    assert!(logs.contains("credential refused"), "the run was logged at all");
    for part in &secret_parts {
        assert!(!logs.contains(part), "a log line contains a secret ({part})");
    }
    assert!(!logs.contains("4111111111111111") && !logs.contains("hunter2"));

    // The database holds digests, never the keys.
    let mut database = Vec::new();
    for entry in std::fs::read_dir(server.data_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().unwrap().to_string_lossy().starts_with("strongroom.db") {
            database.extend(std::fs::read(&path).unwrap());
        }
    }
    assert!(!database.is_empty());
    let haystack = String::from_utf8_lossy(&database);
    assert!(haystack.contains(&created_id), "the database file was read");
    for part in &secret_parts {
        assert!(!haystack.contains(part), "the database file contains a secret ({part})");
    }
    server.shutdown().await;
}

/// Canary values (cards, personal data) sent through every vault endpoint never reach a log line,
/// an error body, an audit entry, the SQLite file (with its WAL) or the PostgreSQL tables.
mod vault {
    use super::*;
    use strongroom_testkit::on_both_backends;

    on_both_backends!(vault_values_stay_sealed);

    const PAN: &str = "4111111111111111";
    const BAD_PAN: &str = "4111111111111112";
    const PII: [&str; 6] = [
        "canary.person.7f3a@example.com",
        "+447700900731",
        "GB33BUKB20201555555555",
        "Zebulon Canaryfield",
        "77 Canary Wharf Lane",
        "canary-json-secret-7f3a",
    ];

    fn values() -> Vec<Value> {
        vec![
            json!({"type": "card", "value": {"number": PAN, "exp_month": 12, "exp_year": 2031, "cvc": "737", "holder_name": PII[3]}, "customer": "cus_canary"}),
            json!({"type": "email", "value": PII[0], "customer": "cus_canary", "dedupe": true}),
            json!({"type": "phone", "value": PII[1]}),
            json!({"type": "bank_account", "value": PII[2]}),
            json!({"type": "name", "value": PII[3], "canary": true}),
            json!({"type": "address", "value": {"line1": PII[4], "city": "London", "country": "GB"}}),
            json!({"type": "json", "value": {"note": PII[5]}}),
        ]
    }

    use serde_json::Value;

    async fn vault_values_stay_sealed(backend: Backend) {
        let Some(server) = TestServer::spawn_with(backend, |c| {
            // A canary token is read below on purpose; intrusion detection would suspend the key.
            c.detection.enabled = false;
        })
        .await
        else {
            return;
        };
        let mut bodies = Vec::new();
        let mut ids = Vec::new();
        for body in values() {
            let response = server.request(Method::POST, "/v1/tokens").json(&body).send().await.unwrap();
            assert_eq!(response.status(), 201);
            let token: Value = response.json().await.unwrap();
            ids.push(token["id"].as_str().unwrap().to_owned());
            bodies.push(token.to_string());
        }
        let batch = json!({"items": values()});
        let text =
            server.request(Method::POST, "/v1/tokens/batch").json(&batch).send().await.unwrap().text().await.unwrap();
        bodies.push(text);
        for body in values() {
            let search = json!({"type": body["type"], "value": body["value"]});
            let text = server
                .request(Method::POST, "/v1/tokens/search")
                .json(&search)
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            bodies.push(text);
        }
        for id in &ids {
            bodies.push(
                server.request(Method::GET, &format!("/v1/tokens/{id}")).send().await.unwrap().text().await.unwrap(),
            );
            let masked = json!({"view": "masked", "reason": "canary"});
            bodies.push(
                server
                    .request(Method::POST, &format!("/v1/tokens/{id}/reveal"))
                    .json(&masked)
                    .send()
                    .await
                    .unwrap()
                    .text()
                    .await
                    .unwrap(),
            );
            // Plain reveals answer the value (that is their job) but must not log it.
            let plain = json!({"view": "plain", "reason": "canary"});
            let response =
                server.request(Method::POST, &format!("/v1/tokens/{id}/reveal")).json(&plain).send().await.unwrap();
            assert_eq!(response.status(), 200);
        }
        // Errors carrying the values.
        let mut errors = Vec::new();
        for bad in [
            json!({"type": "card", "value": {"number": BAD_PAN, "exp_month": 12, "exp_year": 2031}}),
            json!({"type": "card", "value": {"number": PAN, "exp_month": 1, "exp_year": 2020, "cvc": "737"}}),
            json!({"type": "card", "value": {"number": PAN, "exp_month": 12, "exp_year": 2031, "cvc": "73"}}),
            json!({"type": "email", "value": format!("{} x", PII[0])}),
            json!({"type": "phone", "value": format!("{}99999999", PII[1])}),
            json!({"type": "bank_account", "value": format!("{}0", PII[2])}),
            json!({"type": "card", "value": PAN}),
            json!({"type": PAN, "value": PAN}),
            json!({"type": "email", "value": PII[0], PII[0]: PAN}),
            json!({"type": "email", "value": PII[0], "customer": PII[0]}),
        ] {
            for path in ["/v1/tokens", "/v1/tokens/search"] {
                let body = if path.ends_with("search") {
                    json!({"type": bad["type"], "value": bad["value"]})
                } else {
                    bad.clone()
                };
                let response = server.request(Method::POST, path).json(&body).send().await.unwrap();
                // (A search ignores the fields only tokenizing checks, so it may succeed.)
                assert!(response.status().is_client_error() || path.ends_with("search"), "{body}");
                errors.push(response.text().await.unwrap());
            }
        }
        let (_, weak) = server.create_key("weak", &["vault:reveal:masked"]).await;
        for id in &ids {
            let plain = json!({"view": "plain", "reason": "canary"});
            let response = server
                .request_as(&weak, Method::POST, &format!("/v1/tokens/{id}/reveal"))
                .json(&plain)
                .send()
                .await
                .unwrap();
            errors.push(response.text().await.unwrap());
        }
        for path in [format!("/v1/tokens/{PAN}"), format!("/v1/customers/{PAN}/data"), format!("/v1/tokens/{}", PII[0])]
        {
            errors.push(server.request(Method::GET, &path).send().await.unwrap().text().await.unwrap());
        }
        let malformed = format!("{{\"type\": \"card\", \"value\": {{\"number\": \"{PAN}\"");
        errors.push(
            server
                .request(Method::POST, "/v1/tokens")
                .header("content-type", "application/json")
                .body(malformed)
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap(),
        );
        let erased = server.request(Method::DELETE, "/v1/customers/cus_canary/data").send().await.unwrap();
        assert_eq!(erased.status(), 200);
        bodies.push(erased.text().await.unwrap());

        // The audit log, as the API exports it.
        let size = server.get_json("/v1/audit/entries?start=0&limit=1").await["tree_size"].as_u64().unwrap();
        let mut audit = String::new();
        let mut start = 0;
        while start < size {
            audit.push_str(&server.get_json(&format!("/v1/audit/entries?start={start}&limit=1000")).await.to_string());
            start += 1000;
        }
        assert!(audit.contains("vault.token_revealed"), "the audit log was read");

        let forbidden: Vec<&str> = [PAN, BAD_PAN, "737"].into_iter().chain(PII).collect();
        for text in bodies.iter().chain(&errors) {
            for value in &forbidden {
                if *value == "737" {
                    continue; // three digits occur naturally in ids and times
                }
                assert!(!text.contains(value), "a response other than a plain reveal contains {value}: {text}");
            }
        }
        for value in &forbidden[3..] {
            assert!(!audit.contains(value), "an audit entry contains {value}");
        }
        assert!(!audit.contains(PAN) && !audit.contains(BAD_PAN));
        let logs = captured_logs();
        assert!(logs.contains("/v1/tokens"), "the run was logged");
        for value in &forbidden {
            if *value == "737" {
                continue;
            }
            assert!(!logs.contains(value), "a log line contains {value}");
        }

        // At rest: the database holds ciphertext only.
        let stored = stored_text(&server, backend);
        assert!(stored.contains(&ids[2]), "the stored data was read");
        for value in &forbidden {
            if *value == "737" {
                continue;
            }
            assert!(!stored.contains(value), "the database holds {value} in the clear");
        }
        // PostgreSQL's dump writes bytea as hex: the values must not appear hex-encoded either.
        for value in &forbidden[..2] {
            let hex: String = value.bytes().map(|b| format!("{b:02x}")).collect();
            assert!(!stored.contains(&hex), "the database holds {value} hex-encoded");
        }
        server.shutdown().await;
    }
}

/// Identity's secrets (passwords, session tokens, TOTP seeds, recovery codes, step-up proofs, link
/// tokens) and personal data (email, anti-phishing phrase) sent through every identity endpoint
/// never reach a log line, an error body, an audit entry, the SQLite file (with its WAL) or the
/// PostgreSQL tables: they are stored hashed or sealed.
mod identity {
    use super::*;
    use serde_json::Value;
    use strongroom_testkit::on_both_backends;
    use strongroom_types::Clock;

    on_both_backends!(identity_secrets_stay_hashed_or_sealed);

    const EMAIL: &str = "canary.identity.9c1d@example.com";
    const PASSWORD: &str = "moonlit 7e2b harpsichord zebra";
    const NEW_PASSWORD: &str = "quartet 5d8a walrus lantern";
    const PHRASE: &str = "canary phrase 9c1d";

    async fn call(server: &TestServer, bearer: &str, method: Method, path: &str, body: Value) -> (u16, String) {
        let response =
            server.client.request(method, server.url(path)).bearer_auth(bearer).json(&body).send().await.unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    }

    async fn identity_secrets_stay_hashed_or_sealed(backend: Backend) {
        let Some(server) = TestServer::spawn(backend).await else { return };
        let key = server.bootstrap_key.clone();
        let mut errors = Vec::new();
        let mut secrets: Vec<String> = vec![EMAIL.into(), PASSWORD.into(), NEW_PASSWORD.into(), PHRASE.into()];
        // Errors carrying the secrets first.
        for body in [
            json!({"email": EMAIL, "password": "canary 9c1d"}),
            json!({"email": format!("{EMAIL} x"), "password": PASSWORD}),
            json!({"email": EMAIL, "password": PASSWORD, PASSWORD: EMAIL}),
        ] {
            errors.push(call(&server, &key, Method::POST, "/v1/identity/customers", body).await.1);
        }
        let (status, _) =
            call(&server, &key, Method::POST, "/v1/identity/customers", json!({"email": EMAIL, "password": PASSWORD}))
                .await;
        assert_eq!(status, 202);
        errors.push(
            call(&server, &key, Method::POST, "/v1/identity/login", json!({"email": EMAIL, "password": NEW_PASSWORD}))
                .await
                .1,
        );
        let strength = call(
            &server,
            &key,
            Method::POST,
            "/v1/identity/password-strength",
            json!({"password": PASSWORD, "email": EMAIL}),
        )
        .await
        .1;
        let (_, login) =
            call(&server, &key, Method::POST, "/v1/identity/login", json!({"email": EMAIL, "password": PASSWORD}))
                .await;
        let login: Value = serde_json::from_str(&login).unwrap();
        let session = login["session"]["token"].as_str().unwrap().to_owned();
        secrets.push(session.clone());
        errors.push(
            call(
                &server,
                &session,
                Method::POST,
                "/v1/me/password",
                json!({"current_password": NEW_PASSWORD, "new_password": PASSWORD}),
            )
            .await
            .1,
        );
        assert_eq!(
            call(&server, &session, Method::PUT, "/v1/me/anti-phishing-phrase", json!({"phrase": PHRASE})).await.0,
            204
        );
        server.verify_customer_email(EMAIL).await;
        let (_, enrolment) = call(&server, &session, Method::POST, "/v1/me/totp", json!({})).await;
        let enrolment: Value = serde_json::from_str(&enrolment).unwrap();
        let seed_text = enrolment["secret"].as_str().unwrap().to_owned();
        let seed = data_encoding::BASE32_NOPAD.decode(seed_text.as_bytes()).unwrap();
        secrets.push(seed_text);
        let step = u64::try_from(server.clock.now().unix_millis() / 1000).unwrap() / 30;
        let code = strongroom_crypto::totp::code_at(&seed, step);
        let (_, confirmed) = call(&server, &session, Method::POST, "/v1/me/totp/confirm", json!({"code": code})).await;
        let confirmed: Value = serde_json::from_str(&confirmed).unwrap();
        for code in confirmed["recovery_codes"].as_array().unwrap() {
            secrets.push(code.as_str().unwrap().replace('-', ""));
            secrets.push(code.as_str().unwrap().to_owned());
        }
        let (_, challenge) = call(
            &server,
            &session,
            Method::POST,
            "/v1/me/step-up",
            json!({"purpose": "payment", "binding": {"amount": 100}}),
        )
        .await;
        let challenge: Value = serde_json::from_str(&challenge).unwrap();
        let recovery = confirmed["recovery_codes"][0].as_str().unwrap();
        let path = format!("/v1/me/step-up/{}/verify", challenge["challenge"].as_str().unwrap());
        let (_, proof) = call(&server, &session, Method::POST, &path, json!({"recovery_code": recovery})).await;
        let proof: Value = serde_json::from_str(&proof).unwrap();
        secrets.push(proof["proof"].as_str().unwrap().to_owned());
        secrets.push(proof["session"]["token"].as_str().unwrap().to_owned());
        let customer = login["session"]["customer"].as_str().unwrap().to_owned();
        let redeem =
            json!({"customer": customer, "proof": proof["proof"], "purpose": "payment", "binding": {"amount": 101}});
        errors.push(call(&server, &key, Method::POST, "/v1/identity/step-up/redeem", redeem).await.1);
        assert_eq!(
            call(&server, &key, Method::POST, "/v1/identity/password-reset", json!({"email": EMAIL})).await.0,
            202
        );
        let mut reset = None;
        for _ in 0..100 {
            let dir = server.data_dir().join("mail");
            if let Some(entry) = std::fs::read_dir(&dir).ok().and_then(|mut d| {
                d.find_map(|e| e.ok().filter(|e| e.file_name().to_string_lossy().ends_with("password_reset.eml")))
            }) {
                reset = Some(std::fs::read_to_string(entry.path()).unwrap().replace("=\r\n", "").replace("=3D", "="));
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        let reset = reset.expect("a reset mail");
        let start = reset.find("#token=rst_").unwrap() + "#token=".len();
        let token: String = reset[start..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
        secrets.push(token.clone());
        errors.push(
            call(
                &server,
                &key,
                Method::POST,
                "/v1/identity/password-reset/complete",
                json!({"token": token, "new_password": NEW_PASSWORD}),
            )
            .await
            .1,
        );
        for error in &errors {
            assert!(error.contains("\"code\""), "every error is a problem document: {error}");
        }
        errors.push(strength);

        let mut audit = String::new();
        let size = server.get_json("/v1/audit/entries?start=0&limit=1").await["tree_size"].as_u64().unwrap();
        let mut start = 0;
        while start < size {
            audit.push_str(&server.get_json(&format!("/v1/audit/entries?start={start}&limit=1000")).await.to_string());
            start += 1000;
        }
        assert!(audit.contains("customer.totp_enrolled"), "the audit log was read");
        let logs = captured_logs();
        let stored = stored_text(&server, backend);
        assert!(stored.contains(&customer), "the stored data was read");
        for secret in &secrets {
            for (place, text) in [("a log line", &logs), ("the audit log", &audit), ("the database", &stored)] {
                assert!(!text.contains(secret.as_str()), "{place} holds a secret in the clear");
            }
            let hex: String = secret.bytes().map(|b| format!("{b:02x}")).collect();
            assert!(!stored.contains(&hex), "the database holds a secret hex-encoded");
            for error in &errors {
                assert!(!error.contains(secret.as_str()), "an error body repeats a secret: {error}");
            }
        }
        server.shutdown().await;
    }
}

/// Everything the database holds, as text: the SQLite file with its WAL, or a PostgreSQL dump.
fn stored_text(server: &TestServer, backend: Backend) -> String {
    match backend {
        Backend::Sqlite => {
            let mut bytes = Vec::new();
            for entry in std::fs::read_dir(server.data_dir()).unwrap() {
                let path = entry.unwrap().path();
                if path.file_name().unwrap().to_string_lossy().starts_with("strongroom.db") {
                    bytes.extend(std::fs::read(&path).unwrap());
                }
            }
            String::from_utf8_lossy(&bytes).into_owned()
        }
        Backend::Postgres => {
            let url = server.config.database_url.as_ref().unwrap().expose().clone();
            let dump =
                std::process::Command::new("pg_dump").arg("--data-only").arg(&url).output().expect("pg_dump runs");
            assert!(dump.status.success());
            String::from_utf8_lossy(&dump.stdout).into_owned()
        }
    }
}

/// Staff secrets (email, passwords, invitation token, TOTP seed, session token) never reach a log
/// line, an error body, an audit entry or the database.
mod staff {
    use super::*;
    use serde_json::Value;
    use strongroom_domain::identity::Client;
    use strongroom_domain::merchants::MerchantId;
    use strongroom_testkit::on_both_backends;
    use strongroom_types::Clock;

    on_both_backends!(staff_secrets_stay_hashed_or_sealed);

    const EMAIL: &str = "canary.staff.4e7a@shop.example";
    const PASSWORD: &str = "ember 4e7a quokka trellis";
    const NEW_PASSWORD: &str = "saffron 6b1c otter bellows";

    async fn call(server: &TestServer, bearer: Option<&str>, method: Method, path: &str, body: Value) -> (u16, String) {
        let mut request = server.client.request(method, server.url(path)).json(&body);
        if let Some(bearer) = bearer {
            request = request.bearer_auth(bearer);
        }
        let response = request.send().await.unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    }

    async fn staff_secrets_stay_hashed_or_sealed(backend: Backend) {
        let Some(server) = TestServer::spawn(backend).await else { return };
        let merchant = MerchantId::parse(&server.merchant_id).unwrap();
        let invitation = server
            .app()
            .state
            .staff
            .invite(&merchant, EMAIL, &["owner".to_owned()], None, &Client::default())
            .await
            .unwrap();
        let token = invitation.token.expose().clone();
        let mut secrets = vec![EMAIL.to_owned(), PASSWORD.to_owned(), NEW_PASSWORD.to_owned(), token.clone()];
        let mut errors = Vec::new();
        let accept = |password: &str| json!({"token": token, "password": password});
        errors.push(call(&server, None, Method::POST, "/v1/staff/invitation/accept", accept("ember 4e7a")).await.1);
        assert_eq!(call(&server, None, Method::POST, "/v1/staff/invitation/accept", accept(PASSWORD)).await.0, 200);
        errors.push(call(&server, None, Method::POST, "/v1/staff/invitation/accept", accept(PASSWORD)).await.1);
        let login = json!({"email": EMAIL, "password": PASSWORD});
        errors.push(
            call(&server, None, Method::POST, "/v1/staff/login", json!({"email": EMAIL, "password": NEW_PASSWORD}))
                .await
                .1,
        );
        let (_, started) = call(&server, None, Method::POST, "/v1/staff/login", login).await;
        let challenge = serde_json::from_str::<Value>(&started).unwrap()["challenge"].as_str().unwrap().to_owned();
        let (_, enrolment) =
            call(&server, None, Method::POST, "/v1/staff/login/totp", json!({"challenge": challenge})).await;
        let seed_text = serde_json::from_str::<Value>(&enrolment).unwrap()["secret"].as_str().unwrap().to_owned();
        let seed = data_encoding::BASE32_NOPAD.decode(seed_text.as_bytes()).unwrap();
        secrets.push(seed_text);
        let step = u64::try_from(server.clock.now().unix_millis() / 1000).unwrap() / 30;
        let wrong = strongroom_crypto::totp::code_at(&seed, step + 5);
        let confirm = |code: &str| json!({"challenge": challenge, "code": code});
        errors.push(call(&server, None, Method::POST, "/v1/staff/login/totp/confirm", confirm(&wrong)).await.1);
        let code = strongroom_crypto::totp::code_at(&seed, step);
        let (status, session) = call(&server, None, Method::POST, "/v1/staff/login/totp/confirm", confirm(&code)).await;
        assert_eq!(status, 200, "{session}");
        let session = serde_json::from_str::<Value>(&session).unwrap()["session"]["token"].as_str().unwrap().to_owned();
        secrets.push(session.clone());
        let change = json!({"current_password": NEW_PASSWORD, "new_password": PASSWORD});
        errors.push(call(&server, Some(&session), Method::POST, "/v1/staff/me/password", change).await.1);
        let change = json!({"current_password": PASSWORD, "new_password": NEW_PASSWORD});
        assert_eq!(call(&server, Some(&session), Method::POST, "/v1/staff/me/password", change).await.0, 204);
        for error in &errors {
            assert!(error.contains("\"code\""), "every error is a problem document: {error}");
        }
        let audit = server.get_json("/v1/audit/entries?start=0&limit=1000").await.to_string();
        assert!(audit.contains("staff.totp_enrolled"), "the audit log was read");
        let logs = captured_logs();
        let stored = stored_text(&server, backend);
        assert!(stored.contains(&invitation.staff.id), "the stored data was read");
        for secret in &secrets {
            for (place, text) in [("a log line", &logs), ("the audit log", &audit), ("the database", &stored)] {
                assert!(!text.contains(secret.as_str()), "{place} holds a staff secret in the clear");
            }
            for error in &errors {
                assert!(!error.contains(secret.as_str()), "an error body repeats a secret: {error}");
            }
        }
        server.shutdown().await;
    }
}

/// A canary card sent through the forward proxy (`POST /v1/forward`), answered, refused and
/// failing, never reaches a log line, an error body, an audit entry, the SQLite file (with its
/// WAL) or the PostgreSQL tables; the gateway's echo of it comes back masked.
mod forward {
    use super::*;
    use serde_json::Value;
    use strongroom_testkit::gateway::TestGateway;
    use strongroom_testkit::on_both_backends;

    on_both_backends!(forwarded_cards_stay_out_of_logs_bodies_and_the_database);

    const PAN: &str = "4111111111111111";
    const CVC: &str = "7391";
    const HOLDER: &str = "Zebulon Forwardfield";
    const GATEWAY_KEY: &str = "sk_live_canarygateway7f3a";

    async fn forwarded_cards_stay_out_of_logs_bodies_and_the_database(backend: Backend) {
        let gateway = TestGateway::start().await;
        let ca = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(ca.path(), &gateway.ca_pem).unwrap();
        let ca_path = ca.path().to_owned();
        let host = format!("localhost:{}", gateway.port);
        let Some(server) = TestServer::spawn_with(backend, |config| {
            config.outbound.ca_file = Some(ca_path);
            config.forward.allowed_hosts = vec![host];
            config.forward.timeout = std::time::Duration::from_secs(2);
        })
        .await
        else {
            return;
        };
        // Amex: a four-digit CVC, which occurs less by chance than three digits.
        let amex = "378282246310005";
        let mut ids = Vec::new();
        for (number, cvc) in [(PAN, "739"), (amex, CVC)] {
            let value = json!({"number": number, "exp_month": 12, "exp_year": 2031, "cvc": cvc, "holder_name": HOLDER});
            let token = server
                .post_json_as(&server.bootstrap_key, "/v1/tokens", &json!({"type": "card", "value": value}))
                .await;
            ids.push(token["id"].as_str().unwrap().to_owned());
        }
        let template = |token: &str| {
            format!(
                r#"{{"number":"{{{{{token}:number}}}}","cvc":"{{{{{token}:cvc}}}}","name":"{{{{{token}:name}}}}"}}"#
            )
        };
        let request = |destination: String, body: String| {
            json!({
                "destination": destination,
                "headers": {"content-type": "application/json", "authorization": format!("Bearer {GATEWAY_KEY}")},
                "body": body,
            })
        };
        let mut bodies = Vec::new();
        let mut send = async |body: Value, idempotency: Option<&str>| {
            let mut builder = server.request(Method::POST, "/v1/forward").json(&body);
            if let Some(key) = idempotency {
                builder = builder.header("idempotency-key", key);
            }
            let response = builder.send().await.unwrap();
            let status = response.status().as_u16();
            bodies.push(response.text().await.unwrap());
            status
        };
        for id in &ids {
            let ok = request(gateway.url("/v1/charges"), template(id));
            assert_eq!(send(ok.clone(), Some(&format!("canary-{id}"))).await, 200);
            // The replay of a kept answer, and the CVC that is gone.
            assert_eq!(send(ok.clone(), Some(&format!("canary-{id}"))).await, 200);
            assert_eq!(send(ok, None).await, 422);
        }
        let token = &ids[0];
        let failing = [
            // A card number in the destination's path or query, a refused host, a timeout.
            request(gateway.url(&format!("/v1/cards/{PAN}")), template(token)),
            request(gateway.url(&format!("/v1/charges?card={PAN}")), template(token)),
            request(format!("https://{PAN}.example/v1/charges"), template(token)),
            request(gateway.url("/slow"), format!(r#"{{"n":"{{{{{token}:number}}}}"}}"#)),
            // Templates that go wrong around the values.
            request(gateway.url("/v1/charges"), format!(r#"{{"n":"{PAN}","c":"{{{{{token}:pin}}}}"}}"#)),
            request(gateway.url("/v1/charges"), format!(r#"{{"n":"{PAN}","c":"{{{{{token}:number"}}"#)),
            request(gateway.url("/v1/charges"), format!(r#"{{"n":"{{{{{PAN}:number}}}}"}}"#)),
        ];
        for body in failing {
            let status = send(body, None).await;
            assert!(status >= 400, "{status}");
        }
        let mut headers_with_pan = request(gateway.url("/v1/charges"), template(token));
        headers_with_pan["headers"][format!("x-{PAN}")] = json!(PAN);
        headers_with_pan["headers"]["Host"] = json!(PAN);
        assert_eq!(send(headers_with_pan, None).await, 422);

        let received = gateway.requests();
        assert!(received.iter().any(|r| String::from_utf8_lossy(&r.body).contains(PAN)), "the gateway got the card");
        assert!(
            received.iter().any(|r| String::from_utf8_lossy(&r.body).contains(&format!("\"cvc\":\"{CVC}\""))),
            "the gateway got the CVC"
        );

        let size = server.get_json("/v1/audit/entries?start=0&limit=1").await["tree_size"].as_u64().unwrap();
        let audit = server.get_json(&format!("/v1/audit/entries?start=0&limit={size}")).await.to_string();
        assert!(
            audit.contains("forward.sent") && audit.contains("forward.token_detokenized"),
            "the audit log was read"
        );

        let forbidden = [PAN, amex, HOLDER, GATEWAY_KEY];
        for text in &bodies {
            for value in forbidden {
                assert!(!text.contains(value), "an answer of /v1/forward contains {value}: {text}");
            }
        }
        for value in forbidden {
            assert!(!audit.contains(value), "an audit entry contains {value}");
        }
        // Four digits occur by chance in ids and times: the CVC is looked for as the body held it.
        let cvc = format!("\"{CVC}\"");
        assert!(!audit.contains(&cvc), "an audit entry contains the CVC");
        for text in &bodies {
            assert!(!text.contains(&cvc), "an answer of /v1/forward contains the CVC: {text}");
        }
        let logs = captured_logs();
        assert!(logs.contains("/v1/forward"), "the run was logged");
        for value in forbidden.into_iter().chain([cvc.as_str()]) {
            assert!(!logs.contains(value), "a log line contains {value}");
        }
        let stored = stored_text(&server, backend);
        assert!(stored.contains(&ids[1]), "the stored data was read");
        assert!(!stored.contains(&cvc), "the database holds the CVC");
        for value in forbidden {
            assert!(!stored.contains(value), "the database holds {value} in the clear");
            let hex: String = value.bytes().map(|b| format!("{b:02x}")).collect();
            assert!(!stored.contains(&hex), "the database holds {value} hex-encoded");
        }
        server.shutdown().await;
    }
}

/// Card numbers and CVCs sent through the payment routes (orders, payment intents with their
/// confirmation by the sandbox gateway, refunds, and every field a client could misuse) never
/// reach a log line, an error body, an answer, the SQLite file (with its WAL) or the PostgreSQL
/// tables: the number reaches the gateway from the vault only, and the CVC lives in memory.
mod payments {
    use super::*;
    use serde_json::Value;
    use strongroom_testkit::on_both_backends;

    on_both_backends!(card_numbers_and_cvcs_stay_out_of_payments);

    /// An American Express test number (15 digits, so its CVC has 4 digits: rare in logs and files).
    const PAN: &str = "378282246310005";
    const SPACED: &str = "3782 822463 10005";
    const CVC: &str = "7319";

    async fn call(server: &TestServer, method: Method, path: &str, body: Option<&Value>) -> (u16, String) {
        let mut request = server.request(method, path);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    }

    async fn card_numbers_and_cvcs_stay_out_of_payments(backend: Backend) {
        let Some(server) = TestServer::spawn(backend).await else { return };
        let mut answers = Vec::new();
        let mut errors = Vec::new();
        let card = json!({"type": "card", "customer": "cus_pay_canary",
                          "value": {"number": PAN, "exp_month": 12, "exp_year": 2040, "cvc": CVC}});
        let (status, token) = call(&server, Method::POST, "/v1/tokens", Some(&card)).await;
        assert_eq!(status, 201, "{token}");
        let token: Value = serde_json::from_str(&token).unwrap();
        let token = token["id"].as_str().unwrap().to_owned();
        let line = |name: &str| json!({"sku": "S-1", "name": name, "quantity": 1, "unit_amount": 4200});
        let (status, order) = call(
            &server,
            Method::POST,
            "/v1/orders",
            Some(&json!({"currency": "usd", "line_items": [line("Kettle")], "customer": "cus_pay_canary"})),
        )
        .await;
        assert_eq!(status, 201, "{order}");
        let order_id = serde_json::from_str::<Value>(&order).unwrap()["id"].as_str().unwrap().to_owned();
        answers.push(order);
        for bad in [
            json!({"currency": "usd", "line_items": [line(PAN)]}),
            json!({"currency": "usd", "line_items": [line(SPACED)]}),
            json!({"currency": "usd", "line_items": [line("Kettle")], "metadata": {"note": PAN}}),
            json!({"currency": "usd", "line_items": [line("Kettle")], "customer": PAN}),
            json!({"currency": PAN, "line_items": [line("Kettle")]}),
            json!({"currency": "usd", "line_items": [{"sku": PAN, "name": "x", "quantity": 1, "unit_amount": 1}]}),
            json!({"currency": "usd", "line_items": [line("Kettle")], "discounts": [{"code": CVC, "amount": PAN}]}),
        ] {
            let (status, body) = call(&server, Method::POST, "/v1/orders", Some(&bad)).await;
            assert_eq!(status, 422, "{body}");
            errors.push(body);
        }
        let (status, body) = call(
            &server,
            Method::POST,
            &format!("/v1/orders/{order_id}"),
            Some(&json!({"currency": "usd", "line_items": [line(PAN)]})),
        )
        .await;
        assert_eq!(status, 422, "{body}");
        errors.push(body);
        for bad in [
            json!({"amount": 4200, "currency": "usd", "payment_method": PAN}),
            json!({"amount": 4200, "currency": "usd", "payment_method": token, "description": SPACED}),
            json!({"amount": 4200, "currency": "usd", "metadata": {"card": PAN, "cvc": CVC}}),
            json!({"amount": 4200, "currency": "usd", "customer": PAN}),
            json!({"amount": PAN, "currency": "usd"}),
            json!({"amount": 4200, "currency": "usd", "order": PAN}),
            json!({"amount": 4200, "currency": "usd", "card": {"number": PAN, "cvc": CVC}}),
        ] {
            let (status, body) = call(&server, Method::POST, "/v1/payment_intents", Some(&bad)).await;
            assert_eq!(status, 422, "{bad}: {body}");
            errors.push(body);
        }
        let body = json!({"amount": 4200, "currency": "usd", "order": order_id, "payment_method": token});
        let (status, created) = call(&server, Method::POST, "/v1/payment_intents", Some(&body)).await;
        assert_eq!(status, 201, "{created}");
        let id = serde_json::from_str::<Value>(&created).unwrap()["id"].as_str().unwrap().to_owned();
        answers.push(created);
        let path = format!("/v1/payment_intents/{id}/confirm");
        let (status, body) = call(&server, Method::POST, &path, Some(&json!({"payment_method": PAN}))).await;
        assert_eq!(status, 422, "{body}");
        errors.push(body);
        let (status, paid) = call(&server, Method::POST, &path, Some(&json!({}))).await;
        assert_eq!(status, 200, "{paid}");
        assert!(paid.contains("\"succeeded\"") && paid.contains("\"last4\":\"0005\""), "{paid}");
        answers.push(paid);
        for (method, path, body) in [
            (Method::GET, format!("/v1/payment_intents/{id}"), None),
            (Method::GET, "/v1/payment_intents".to_owned(), None),
            (Method::GET, format!("/v1/orders/{order_id}"), None),
            (Method::POST, "/v1/refunds".to_owned(), Some(json!({"payment_intent": id, "amount": 1000}))),
            (Method::GET, "/v1/refunds".to_owned(), None),
            (Method::GET, format!("/v1/tokens/{token}"), None),
        ] {
            let (status, text) = call(&server, method, &path, body.as_ref()).await;
            assert!(status == 200 || status == 201, "{path}: {text}");
            answers.push(text);
        }
        for (path, body) in [
            ("/v1/refunds".to_owned(), json!({"payment_intent": id, "amount": PAN})),
            ("/v1/refunds".to_owned(), json!({"payment_intent": PAN})),
            ("/v1/refunds".to_owned(), json!({"payment_intent": id, "metadata": {"x": SPACED}})),
            (format!("/v1/payment_intents/{id}/capture"), json!({"amount_to_capture": PAN})),
            (format!("/v1/payment_intents/{PAN}/cancel"), json!({})),
        ] {
            let (status, text) = call(&server, Method::POST, &path, Some(&body)).await;
            assert!((400..500).contains(&status), "{path}: {status} {text}");
            errors.push(text);
        }
        for path in [
            format!("/v1/payment_intents/{PAN}"),
            format!("/v1/orders?starting_after={PAN}"),
            format!("/v1/refunds?payment_intent={PAN}"),
        ] {
            errors.push(call(&server, Method::GET, &path, None).await.1);
        }
        let (_, after) = call(&server, Method::GET, &format!("/v1/tokens/{token}"), None).await;
        assert!(after.contains("\"cvc_held\":false"), "the authorisation used the CVC up: {after}");

        for text in answers.iter().chain(&errors) {
            assert!(!text.contains(PAN) && !text.contains(SPACED), "an answer holds the card number: {text}");
            assert!(!text.contains(&format!("\"{CVC}\"")), "an answer holds the CVC: {text}");
        }
        let logs = captured_logs();
        assert!(logs.contains("/v1/payment_intents"), "the run was logged");
        assert!(!logs.contains(PAN) && !logs.contains(SPACED), "a log line holds the card number");
        for form in [format!("\"{CVC}\""), format!("={CVC}"), format!(": {CVC}")] {
            assert!(!logs.contains(&form), "a log line holds the CVC");
        }
        let stored = stored_text(&server, backend);
        match backend {
            // Ids are base32 (digits 2 to 7) and times are integers: the CVC's digits appear in
            // the file only if the CVC itself was written.
            Backend::Sqlite => assert!(!stored.contains(CVC), "the database holds the CVC"),
            // bytea is dumped as hex, where any four digits occur: look for the CVC as text.
            Backend::Postgres => {
                assert!(!stored.contains(&format!("\"{CVC}\"")) && !stored.contains(&format!("\t{CVC}\t")));
                let hex: String = PAN.bytes().map(|b| format!("{b:02x}")).collect();
                assert!(!stored.contains(&hex), "the database holds the card number hex-encoded");
            }
        }
        assert!(stored.contains(&id), "the stored data was read");
        assert!(!stored.contains(PAN) && !stored.contains(SPACED), "the database holds the card number");
        server.shutdown().await;
    }
}
