//! Black-box tests of passkeys on a real server, on SQLite and PostgreSQL, with an independent
//! software authenticator (`tools/python/passkey_authenticator.py`, built on python-fido2 and
//! cryptography) playing the browser and the passkey: registration, discoverable sign-in,
//! replayed, tampered, phished and unverified answers refused, a passkey-only account's first
//! passkey, staff using a passkey as their second factor, and impossible travel seen on passkey
//! sign-ins.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code fails loudly")]

use std::io::Write;
use std::process::{Command, Stdio};

use reqwest::Method;
use serde_json::{Value, json};
use strongroom_domain::identity::Client;
use strongroom_domain::merchants::MerchantId;
use strongroom_testkit::{Backend, TestServer, geoip_database, on_both_backends, test_python};

on_both_backends!(
    customers_sign_in_with_passkeys,
    passkey_only_accounts_and_staff_passkeys,
    a_passkey_sign_in_from_an_impossible_place_steps_the_account_up
);

const PASSWORD: &str = "violet tractor anthem 1987";
const STAFF_PASSWORD: &str = "copper meadow lantern 4711";

async fn spawn(backend: Backend) -> Option<TestServer> {
    spawn_with_geoip(backend, None).await
}

async fn spawn_with_geoip(backend: Backend, geoip: Option<std::path::PathBuf>) -> Option<TestServer> {
    TestServer::spawn_with(backend, |config| {
        config.webauthn.rp_id = "localhost".into();
        config.webauthn.origins = vec!["https://localhost".into()];
        config.webauthn.allow_any_port = true;
        config.detection.geoip_database = geoip;
    })
    .await
}

fn origin(server: &TestServer) -> String {
    let port = server.base_url.rsplit(':').next().unwrap();
    format!("https://localhost:{port}")
}

/// Runs the software authenticator; `Err(exit code)` when it refuses.
fn authenticator(python: &str, args: &[&str], options: &Value) -> Result<Value, i32> {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tools/python/passkey_authenticator.py");
    let mut child = Command::new(python)
        .arg(script)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(options.to_string().as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    if !output.status.success() {
        return Err(output.status.code().unwrap_or(-1));
    }
    Ok(serde_json::from_slice(&output.stdout).unwrap())
}

async fn send(
    server: &TestServer,
    bearer: Option<&str>,
    method: Method,
    path: &str,
    body: Option<&Value>,
) -> (u16, Value) {
    let mut request = server.client.request(method, server.url(path));
    if let Some(bearer) = bearer {
        request = request.bearer_auth(bearer);
    }
    if let Some(body) = body {
        request = request.json(body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

async fn api(server: &TestServer, path: &str, body: &Value) -> (u16, Value) {
    send(server, Some(&server.bootstrap_key), Method::POST, path, Some(body)).await
}

/// A passkey sign-in through the shop's backend with the authenticator's extra `flags`.
async fn passkey_login(server: &TestServer, python: &str, state: &str, flags: &[&str]) -> (u16, Value) {
    passkey_login_from(server, python, state, flags, None).await
}

/// The same, the shop passing the customer's address `ip`.
async fn passkey_login_from(
    server: &TestServer,
    python: &str,
    state: &str,
    flags: &[&str],
    ip: Option<&str>,
) -> (u16, Value) {
    let client = ip.map_or(json!({}), |ip| json!({"client": {"ip": ip}}));
    let (status, begun) = api(server, "/v1/identity/login/passkey", &client).await;
    assert_eq!(status, 200, "{begun}");
    assert_eq!(begun["options"]["publicKey"]["allowCredentials"], json!([]), "nothing about accounts is revealed");
    let origin = origin(server);
    let mut args = vec!["get", "--state", state, "--origin", &origin];
    args.extend_from_slice(flags);
    let credential = authenticator(python, &args, &begun["options"]).unwrap();
    let mut finish = json!({"ceremony": begun["ceremony"], "credential": credential});
    if let Some(ip) = ip {
        finish["client"] = json!({"ip": ip});
    }
    api(server, "/v1/identity/login/passkey/finish", &finish).await
}

async fn a_passkey_sign_in_from_an_impossible_place_steps_the_account_up(backend: Backend) {
    let Some(python) = test_python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let database = dir.path().join("geo.mmdb");
    geoip_database(&python, &database);
    let Some(server) = spawn_with_geoip(backend, Some(database)).await else { return };
    let state = dir.path().join("passkey.json").to_string_lossy().into_owned();
    let email = "quinn@example.com";
    let (status, _) = api(&server, "/v1/identity/customers", &json!({"email": email, "password": PASSWORD})).await;
    assert_eq!(status, 202);
    server.verify_customer_email(email).await;
    // Signed in with the password in Berlin; a passkey registered from that session.
    let berlin = json!({"email": email, "password": PASSWORD, "client": {"ip": "203.0.113.9"}});
    let (_, login) = api(&server, "/v1/identity/login", &berlin).await;
    let session = login["session"]["token"].as_str().unwrap().to_owned();
    let customer = login["session"]["customer"].as_str().unwrap().to_owned();
    let (_, begun) = send(&server, Some(&session), Method::POST, "/v1/me/passkeys", None).await;
    let credential =
        authenticator(&python, &["create", "--state", &state, "--origin", &origin(&server)], &begun["options"])
            .unwrap();
    let finish = json!({"ceremony": begun["ceremony"], "credential": credential, "label": "laptop"});
    assert_eq!(send(&server, Some(&session), Method::POST, "/v1/me/passkeys/finish", Some(&finish)).await.0, 201);
    // Ten minutes later with the passkey from Potsdam, next door: nothing.
    server.clock.advance(std::time::Duration::from_secs(600));
    let (status, body) = passkey_login_from(&server, &python, &state, &[], Some("192.0.2.9")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(server.get_json("/v1/security/decisions").await["data"], json!([]));
    // An hour later with the passkey from New York: the sign-in goes on (a passkey is a second
    // factor already), and the account's password sign-ins are stepped up.
    server.clock.advance(std::time::Duration::from_secs(3600));
    let (status, body) = passkey_login_from(&server, &python, &state, &[], Some("198.51.100.20")).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("authenticated")), "{body}");
    let made = server.get_json("/v1/security/decisions").await["data"].as_array().unwrap().clone();
    assert_eq!(made.len(), 1, "{made:?}");
    assert_eq!(made[0]["reason"], "impossible_travel");
    assert_eq!(made[0]["scope"], json!({"kind": "account", "address": customer}));
    assert_eq!(made[0]["action"], "step_up");
    let new_york = json!({"email": email, "password": PASSWORD, "client": {"ip": "198.51.100.20"}});
    let (status, body) = api(&server, "/v1/identity/login", &new_york).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("second_factor_required")), "{body}");
    assert_eq!(body["factors"], json!(["email_code"]), "{body}");
    server.shutdown().await;
}

async fn customers_sign_in_with_passkeys(backend: Backend) {
    let Some(python) = test_python() else { return };
    let Some(server) = spawn(backend).await else { return };
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("passkey.json").to_string_lossy().into_owned();
    let email = "pia@example.com";
    let (status, _) = api(&server, "/v1/identity/customers", &json!({"email": email, "password": PASSWORD})).await;
    assert_eq!(status, 202);
    server.verify_customer_email(email).await;
    let (_, login) = api(&server, "/v1/identity/login", &json!({"email": email, "password": PASSWORD})).await;
    let session = login["session"]["token"].as_str().unwrap().to_owned();

    // Register a passkey from the session.
    let (status, begun) = send(&server, Some(&session), Method::POST, "/v1/me/passkeys", None).await;
    assert_eq!(status, 200, "{begun}");
    let options = &begun["options"]["publicKey"];
    assert_eq!(options["rp"]["id"], "localhost");
    assert_eq!(options["authenticatorSelection"]["userVerification"], "required");
    assert!(!options["user"]["id"].as_str().unwrap().contains("pia"), "the user handle is opaque");
    let credential =
        authenticator(&python, &["create", "--state", &state, "--origin", &origin(&server)], &begun["options"])
            .unwrap();
    let finish = json!({"ceremony": begun["ceremony"], "credential": credential, "label": "test phone"});
    let (status, passkey) = send(&server, Some(&session), Method::POST, "/v1/me/passkeys/finish", Some(&finish)).await;
    assert_eq!(status, 201, "{passkey}");
    assert_eq!(passkey["label"], "test phone");
    let (status, _) = send(&server, Some(&session), Method::POST, "/v1/me/passkeys/finish", Some(&finish)).await;
    assert_eq!(status, 401, "a ceremony is answered once");
    // A second registration of the same authenticator is excluded by the options themselves.
    let (_, again) = send(&server, Some(&session), Method::POST, "/v1/me/passkeys", None).await;
    assert_eq!(
        authenticator(&python, &["create", "--state", &state, "--origin", &origin(&server)], &again["options"]),
        Err(3)
    );

    // Sign in with it: a session, with no password and no email asked.
    let (status, signed_in) = passkey_login(&server, &python, &state, &[]).await;
    assert_eq!(status, 200, "{signed_in}");
    assert_eq!(signed_in["status"], "authenticated");
    assert_eq!(signed_in["session"]["session"]["factors"], "passkey");
    let token = signed_in["session"]["token"].as_str().unwrap().to_owned();
    let (status, me) = send(&server, Some(&token), Method::GET, "/v1/me", None).await;
    assert_eq!((status, me["email"].as_str()), (200, Some(email)));

    // Step-up with the passkey: a proof bound to one payment.
    let binding = json!({"amount": 4200, "currency": "EUR", "payee": "acme"});
    let (status, challenge) = send(
        &server,
        Some(&token),
        Method::POST,
        "/v1/me/step-up",
        Some(&json!({"purpose": "payment", "binding": binding})),
    )
    .await;
    assert_eq!(status, 201, "{challenge}");
    assert_eq!(challenge["factors"], json!(["passkey"]));
    let ceremony = &challenge["passkey"];
    let answer =
        authenticator(&python, &["get", "--state", &state, "--origin", &origin(&server)], &ceremony["options"])
            .unwrap();
    let path = format!("/v1/me/step-up/{}/verify", challenge["challenge"].as_str().unwrap());
    let body = json!({"passkey": {"ceremony": ceremony["ceremony"], "credential": answer}});
    let (status, proof) = send(&server, Some(&token), Method::POST, &path, Some(&body)).await;
    assert_eq!(status, 200, "{proof}");
    let token = proof["session"]["token"].as_str().unwrap().to_owned();
    let customer = signed_in["session"]["customer"].as_str().unwrap().to_owned();
    let redeem = json!({"customer": customer, "proof": proof["proof"], "purpose": "payment", "binding": binding});
    let (status, redeemed) = api(&server, "/v1/identity/step-up/redeem", &redeem).await;
    assert_eq!((status, redeemed["valid"].as_bool()), (200, Some(true)), "{redeemed}");

    // Refused: a tampered signature, a phishing origin, no user verification, a replayed answer.
    let (status, body) = passkey_login(&server, &python, &state, &["--tamper"]).await;
    assert_eq!((status, body["code"].as_str()), (401, Some("invalid_code")));
    let (_, begun) = api(&server, "/v1/identity/login/passkey", &json!({})).await;
    let phished = authenticator(
        &python,
        &["get", "--state", &state, "--origin", "https://localhost.evil.example"],
        &begun["options"],
    )
    .unwrap();
    let (status, _) = api(
        &server,
        "/v1/identity/login/passkey/finish",
        &json!({"ceremony": begun["ceremony"], "credential": phished}),
    )
    .await;
    assert_eq!(status, 401, "an answer made for another origin is refused");
    let (status, _) = passkey_login(&server, &python, &state, &["--no-uv"]).await;
    assert_eq!(status, 401, "user verification is required");
    let (_, begun) = api(&server, "/v1/identity/login/passkey", &json!({})).await;
    let answer =
        authenticator(&python, &["get", "--state", &state, "--origin", &origin(&server)], &begun["options"]).unwrap();
    let finish = json!({"ceremony": begun["ceremony"], "credential": answer});
    assert_eq!(api(&server, "/v1/identity/login/passkey/finish", &finish).await.0, 200);
    assert_eq!(api(&server, "/v1/identity/login/passkey/finish", &finish).await.0, 401, "replayed");

    // The list, and removal; a disabled account cannot sign in with its passkey.
    let (_, list) = send(&server, Some(&token), Method::GET, "/v1/me/passkeys", None).await;
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
    assert_eq!(api(&server, &format!("/v1/identity/customers/{customer}/disable"), &json!({})).await.0, 200);
    let (status, _) = passkey_login(&server, &python, &state, &[]).await;
    assert_eq!(status, 401);
    assert_eq!(api(&server, &format!("/v1/identity/customers/{customer}/enable"), &json!({})).await.0, 200);
    let (_, fresh) = passkey_login(&server, &python, &state, &[]).await;
    let fresh = fresh["session"]["token"].as_str().unwrap().to_owned();
    let id = list["data"][0]["id"].as_str().unwrap();
    let (status, _) = send(&server, Some(&fresh), Method::DELETE, &format!("/v1/me/passkeys/{id}"), None).await;
    assert_eq!(status, 204);
    let (status, _) = passkey_login(&server, &python, &state, &[]).await;
    assert_eq!(status, 401, "a removed passkey signs nobody in");
    server.shutdown().await;
}

async fn passkey_only_accounts_and_staff_passkeys(backend: Backend) {
    let Some(python) = test_python() else { return };
    let Some(server) = spawn(backend).await else { return };
    let dir = tempfile::tempdir().unwrap();
    let customer_state = dir.path().join("customer.json").to_string_lossy().into_owned();
    let staff_state = dir.path().join("staff.json").to_string_lossy().into_owned();

    // A passkey-only account gets its first passkey from its address check.
    let email = "noa@example.com";
    let (status, registered) = api(&server, "/v1/identity/customers", &json!({"email": email})).await;
    assert_eq!(status, 202);
    let customer = registered["customer"].as_str().unwrap().to_owned();
    let token = mailed_token(&server, "-verify_email.eml", "evt_").await;
    let (status, verified) = api(&server, "/v1/identity/verify-email", &json!({"token": token})).await;
    assert_eq!(status, 200, "{verified}");
    let begun = &verified["passkey_registration"];
    let credential = authenticator(
        &python,
        &["create", "--state", &customer_state, "--origin", &origin(&server)],
        &begun["options"],
    )
    .unwrap();
    let finish = json!({"customer": customer, "ceremony": begun["ceremony"], "credential": credential});
    let (status, session) = api(&server, "/v1/identity/passkey-registration/finish", &finish).await;
    assert_eq!(status, 200, "{session}");
    assert_eq!(session["status"], "authenticated");
    assert_eq!(session["session"]["session"]["factors"], "passkey");
    let (status, _) = passkey_login(&server, &python, &customer_state, &[]).await;
    assert_eq!(status, 200);

    // Staff enrol a passkey as their first factor, then sign in with it as the second.
    let merchant = MerchantId::parse(&server.merchant_id).unwrap();
    let invitation = server
        .app()
        .state
        .staff
        .invite(&merchant, "sam@shop.example", &["auditor".into()], None, &Client::default())
        .await
        .unwrap();
    let accept = json!({"token": invitation.token.expose(), "password": STAFF_PASSWORD});
    assert_eq!(send(&server, None, Method::POST, "/v1/staff/invitation/accept", Some(&accept)).await.0, 200);
    let login = json!({"email": "sam@shop.example", "password": STAFF_PASSWORD});
    let (_, started) = send(&server, None, Method::POST, "/v1/staff/login", Some(&login)).await;
    assert_eq!(started["status"], "enrolment_required");
    let challenge = json!({"challenge": started["challenge"]});
    let (status, begun) =
        send(&server, None, Method::POST, "/v1/staff/login/passkey-enrolment", Some(&challenge)).await;
    assert_eq!(status, 200, "{begun}");
    let credential =
        authenticator(&python, &["create", "--state", &staff_state, "--origin", &origin(&server)], &begun["options"])
            .unwrap();
    let finish = json!({"challenge": started["challenge"], "ceremony": begun["ceremony"], "credential": credential});
    let (status, first) =
        send(&server, None, Method::POST, "/v1/staff/login/passkey-enrolment/finish", Some(&finish)).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["status"], "authenticated");
    let staff_token = first["session"]["token"].as_str().unwrap().to_owned();

    let (_, started) = send(&server, None, Method::POST, "/v1/staff/login", Some(&login)).await;
    assert_eq!(
        (started["status"].as_str(), &started["factors"]),
        (Some("second_factor_required"), &json!(["passkey"]))
    );
    let challenge = json!({"challenge": started["challenge"]});
    let (status, begun) = send(&server, None, Method::POST, "/v1/staff/login/passkey", Some(&challenge)).await;
    assert_eq!(status, 200, "{begun}");
    assert_eq!(begun["options"]["publicKey"]["allowCredentials"].as_array().unwrap().len(), 1);
    // A customer's passkey is no staff factor.
    let wrong =
        authenticator(&python, &["get", "--state", &customer_state, "--origin", &origin(&server)], &begun["options"]);
    assert_eq!(wrong, Err(3), "the options name only the staff member's credential");
    let answer =
        authenticator(&python, &["get", "--state", &staff_state, "--origin", &origin(&server)], &begun["options"])
            .unwrap();
    let finish = json!({"challenge": started["challenge"], "ceremony": begun["ceremony"], "credential": answer});
    let (status, second) = send(&server, None, Method::POST, "/v1/staff/login/passkey/finish", Some(&finish)).await;
    assert_eq!(status, 200, "{second}");
    assert_eq!(second["status"], "authenticated");
    assert!(second["session"]["token"].as_str().unwrap().starts_with("sst_"));
    let (_, list) = send(&server, Some(&staff_token), Method::GET, "/v1/staff/me/passkeys", None).await;
    let id = list["data"][0]["id"].as_str().unwrap();
    let (status, body) =
        send(&server, Some(&staff_token), Method::DELETE, &format!("/v1/staff/me/passkeys/{id}"), None).await;
    assert_eq!((status, body["code"].as_str()), (409, Some("last_factor")), "staff keep a second factor");
    server.shutdown().await;
}

/// The token of the newest mail whose file name ends with `suffix` (waits up to 10 s).
async fn mailed_token(server: &TestServer, suffix: &str, prefix: &str) -> String {
    for _ in 0..100 {
        let dir = server.data_dir().join("mail");
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            if entry.file_name().to_string_lossy().ends_with(suffix) {
                let text = std::fs::read_to_string(entry.path()).unwrap().replace("=\r\n", "").replace("=3D", "=");
                let start = text.find(&format!("#token={prefix}")).unwrap() + "#token=".len();
                return text[start..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("no mail ending {suffix}");
}
