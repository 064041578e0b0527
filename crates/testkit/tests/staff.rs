//! Black-box tests of staff accounts on a real server, on SQLite and PostgreSQL: invitations,
//! PCI password rules and history, sign-in that always needs a second factor (TOTP codes from
//! pyotp), lock-out after 10 failures, staff sessions as bearer tokens with role permissions, and
//! four-eyes approval of role grants and full card reveals.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code fails loudly")]

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use strongroom_domain::identity::Client;
use strongroom_domain::merchants::MerchantId;
use strongroom_testkit::{Backend, TestServer, on_both_backends, test_python};
use strongroom_types::Clock;

on_both_backends!(
    sign_in_always_needs_a_second_factor_and_locks_after_ten,
    four_eyes_guards_role_grants_and_card_reveals,
);

const PASSWORD: &str = "copper meadow lantern 4711";

async fn send(server: &TestServer, bearer: &str, method: Method, path: &str, body: Option<&Value>) -> (u16, Value) {
    let mut request = server.client.request(method, server.url(path)).bearer_auth(bearer);
    if let Some(body) = body {
        request = request.json(body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

async fn public(server: &TestServer, path: &str, body: &Value) -> (u16, Value) {
    let response = server.client.post(server.url(path)).json(body).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn pyotp_code(python: &str, server: &TestServer, secret: &str, offset: i64) -> String {
    let at = server.clock.now().unix_millis() / 1000 + offset;
    let script = "import sys, pyotp; print(pyotp.TOTP(sys.argv[1]).at(int(sys.argv[2])))";
    let output = std::process::Command::new(python).args(["-c", script, secret, &at.to_string()]).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

/// Invites as the operator at the command line would (`strongroom staff invite`): the token.
async fn invite_as_operator(server: &TestServer, email: &str, roles: &[&str]) -> String {
    let merchant = MerchantId::parse(&server.merchant_id).unwrap();
    let roles: Vec<String> = roles.iter().map(|r| (*r).to_owned()).collect();
    let invitation = server.app().state.staff.invite(&merchant, email, &roles, None, &Client::default()).await.unwrap();
    invitation.token.expose().clone()
}

/// A staff member who accepted their invitation and enrolled TOTP: (session token, TOTP seed).
async fn onboard(server: &TestServer, python: &str, invitation: &str, email: &str) -> (String, String) {
    let (status, body) =
        public(server, "/v1/staff/invitation/accept", &json!({"token": invitation, "password": PASSWORD})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "active");
    let (status, body) = public(server, "/v1/staff/login", &json!({"email": email, "password": PASSWORD})).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("enrolment_required")), "{body}");
    let challenge = body["challenge"].as_str().unwrap().to_owned();
    let (status, enrolment) = public(server, "/v1/staff/login/totp", &json!({"challenge": challenge})).await;
    assert_eq!(status, 200, "{enrolment}");
    assert!(enrolment["otpauth_uri"].as_str().unwrap().starts_with("otpauth://totp/"));
    let secret = enrolment["secret"].as_str().unwrap().to_owned();
    let code = pyotp_code(python, server, &secret, 0);
    let (status, session) =
        public(server, "/v1/staff/login/totp/confirm", &json!({"challenge": challenge, "code": code})).await;
    assert_eq!(status, 200, "{session}");
    assert_eq!(session["status"], "authenticated");
    (session["session"]["token"].as_str().unwrap().to_owned(), secret)
}

/// The invitation token mailed to `email` (waits up to 10 s).
async fn mailed_invitation(server: &TestServer, email: &str) -> String {
    for _ in 0..100 {
        let dir = server.data_dir().join("mail");
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let text =
                std::fs::read_to_string(entry.path()).unwrap_or_default().replace("=\r\n", "").replace("=3D", "=");
            if name.ends_with("-staff_invitation.eml") && text.contains(&format!("To: {email}")) {
                let start = text.find("#token=sti_").unwrap() + "#token=".len();
                return text[start..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no invitation mail for {email}");
}

/// The audit log as text once it holds every needle (waits up to 10 s).
async fn audit_with(server: &TestServer, needles: &[&str]) -> String {
    let mut text = String::new();
    for _ in 0..100 {
        text = server.get_json("/v1/audit/entries?start=0&limit=1000").await["data"].to_string();
        if needles.iter().all(|n| text.contains(n)) {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let missing: Vec<&&str> = needles.iter().filter(|n| !text.contains(*n)).collect();
    panic!("the audit log lacks {missing:?}");
}

fn without_request_id(mut body: Value) -> Value {
    body.as_object_mut().unwrap().remove("request_id");
    body
}

async fn sign_in_always_needs_a_second_factor_and_locks_after_ten(backend: Backend) {
    let Some(python) = test_python() else { return };
    let Some(server) = TestServer::spawn(backend).await else { return };
    let email = "owner@shop.example";
    let invitation = invite_as_operator(&server, email, &["owner"]).await;

    // PCI rules: 12+ characters, letters and digits; the invitation is single-use.
    for (password, code) in [("short1pass", "weak_password"), ("onlyletterswithoutdigits", "weak_password")] {
        let (status, body) =
            public(&server, "/v1/staff/invitation/accept", &json!({"token": invitation, "password": password})).await;
        assert_eq!((status, body["code"].as_str()), (422, Some(code)), "{body}");
        assert_eq!(body["errors"][0]["pointer"], "/password");
        assert!(!body.to_string().contains(password), "the password is never echoed");
    }
    let (token, secret) = onboard(&server, &python, &invitation, email).await;
    let (status, body) =
        public(&server, "/v1/staff/invitation/accept", &json!({"token": invitation, "password": PASSWORD})).await;
    assert_eq!((status, body["code"].as_str()), (422, Some("invalid_invitation")));

    // The session is a bearer token with the owner's permissions.
    let (status, me) = send(&server, &token, Method::GET, "/v1/staff/me", None).await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["roles"], json!(["owner"]));
    assert!(me["permissions"].as_array().unwrap().contains(&json!("admin:staff")));
    // Staff-only routes take a staff session, never an API key (even one with every scope).
    for path in ["/v1/staff/me", "/v1/approvals", "/v1/staff/me/passkeys"] {
        let (status, body) = send(&server, &server.bootstrap_key, Method::GET, path, None).await;
        assert_eq!((status, body["code"].as_str()), (403, Some("forbidden")), "{path}: {body}");
    }
    assert_eq!(me["totp"], true);
    let (status, _) = send(&server, &token, Method::GET, "/v1/api-keys", None).await;
    assert_eq!(status, 200, "a staff session works on guarded routes");

    // Unknown email and wrong password: one answer.
    let (s1, unknown) =
        public(&server, "/v1/staff/login", &json!({"email": "nobody@shop.example", "password": PASSWORD})).await;
    let (s2, wrong) =
        public(&server, "/v1/staff/login", &json!({"email": email, "password": "wrong password 123"})).await;
    assert_eq!((s1, s2), (401, 401));
    assert_eq!(without_request_id(unknown), without_request_id(wrong.clone()));
    assert_eq!(wrong["code"], "invalid_credentials");

    // The right password alone is never a session; a replayed TOTP code is refused.
    let (status, body) = public(&server, "/v1/staff/login", &json!({"email": email, "password": PASSWORD})).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("second_factor_required")), "{body}");
    let challenge = body["challenge"].as_str().unwrap().to_owned();
    let replayed = pyotp_code(&python, &server, &secret, 0);
    let (status, body) =
        public(&server, "/v1/staff/login/second-factor", &json!({"challenge": challenge, "code": replayed})).await;
    assert_eq!((status, body["code"].as_str()), (401, Some("invalid_code")), "the enrolment's code is spent");
    server.clock.advance(Duration::from_secs(30));
    let fresh = pyotp_code(&python, &server, &secret, 0);
    let (status, second) =
        public(&server, "/v1/staff/login/second-factor", &json!({"challenge": challenge, "code": fresh})).await;
    assert_eq!(status, 200, "{second}");
    assert_eq!(second["status"], "authenticated");
    let second_token = second["session"]["token"].as_str().unwrap().to_owned();

    // Logout ends that session only.
    let (status, _) = send(&server, &second_token, Method::POST, "/v1/staff/me/logout", None).await;
    assert_eq!(status, 204);
    let (status, _) = send(&server, &second_token, Method::GET, "/v1/staff/me", None).await;
    assert_eq!(status, 401);
    let (status, _) = send(&server, &token, Method::GET, "/v1/staff/me", None).await;
    assert_eq!(status, 200);

    // Idle for 15 minutes: the session is dead.
    server.clock.advance(Duration::from_secs(15 * 60 + 1));
    let (status, _) = send(&server, &token, Method::GET, "/v1/staff/me", None).await;
    assert_eq!(status, 401, "staff sessions end after 15 idle minutes");

    // Ten wrong passwords lock the account for 30 minutes, even against the right password.
    for _ in 0..10 {
        let (status, _) =
            public(&server, "/v1/staff/login", &json!({"email": email, "password": "wrong password 123"})).await;
        assert_eq!(status, 401);
    }
    let (status, body) = public(&server, "/v1/staff/login", &json!({"email": email, "password": PASSWORD})).await;
    assert_eq!((status, body["code"].as_str()), (401, Some("invalid_credentials")), "locked: {body}");
    audit_with(&server, &["staff.locked", "\"locked\""]).await;
    server.clock.advance(Duration::from_secs(31 * 60));
    let (status, body) = public(&server, "/v1/staff/login", &json!({"email": email, "password": PASSWORD})).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("second_factor_required")), "{body}");

    // Password change: history of 4, current password required.
    let challenge = body["challenge"].as_str().unwrap().to_owned();
    server.clock.advance(Duration::from_secs(30));
    let code = pyotp_code(&python, &server, &secret, 0);
    let (_, session) =
        public(&server, "/v1/staff/login/second-factor", &json!({"challenge": challenge, "code": code})).await;
    let token = session["session"]["token"].as_str().unwrap().to_owned();
    let change = |current: &str, new: &str| json!({"current_password": current, "new_password": new});
    let (status, body) =
        send(&server, &token, Method::POST, "/v1/staff/me/password", Some(&change("nope", "granite harbour 8812")))
            .await;
    assert_eq!((status, body["code"].as_str()), (422, Some("wrong_password")));
    let (status, body) =
        send(&server, &token, Method::POST, "/v1/staff/me/password", Some(&change(PASSWORD, PASSWORD))).await;
    assert_eq!((status, body["code"].as_str()), (422, Some("password_reused")), "{body}");
    let (status, _) =
        send(&server, &token, Method::POST, "/v1/staff/me/password", Some(&change(PASSWORD, "granite harbour 8812")))
            .await;
    assert_eq!(status, 204);
    let (status, body) =
        send(&server, &token, Method::POST, "/v1/staff/me/password", Some(&change("granite harbour 8812", PASSWORD)))
            .await;
    assert_eq!((status, body["code"].as_str()), (422, Some("password_reused")), "one of the last 4");

    // Guessing codes across fresh sign-ins: a right password does not reset the count, so ten
    // wrong codes lock the account like ten wrong passwords.
    server.clock.advance(Duration::from_secs(60));
    let login = json!({"email": email, "password": "granite harbour 8812"});
    for _ in 0..2 {
        let (status, started) = public(&server, "/v1/staff/login", &login).await;
        assert_eq!(status, 200, "{started}");
        for _ in 0..5 {
            let guess = json!({"challenge": started["challenge"], "code": "000000"});
            let (status, _) = public(&server, "/v1/staff/login/second-factor", &guess).await;
            assert_eq!(status, 401);
        }
    }
    let (status, body) = public(&server, "/v1/staff/login", &login).await;
    assert_eq!((status, body["code"].as_str()), (401, Some("invalid_credentials")), "locked by code guesses");
    server.shutdown().await;
}

async fn four_eyes_guards_role_grants_and_card_reveals(backend: Backend) {
    let Some(python) = test_python() else { return };
    let Some(server) = TestServer::spawn(backend).await else { return };
    let invitation = invite_as_operator(&server, "ada@shop.example", &["owner"]).await;
    let (ada, _) = onboard(&server, &python, &invitation, "ada@shop.example").await;
    let invitation = invite_as_operator(&server, "bob@shop.example", &["owner"]).await;
    let (bob, _) = onboard(&server, &python, &invitation, "bob@shop.example").await;

    // Ada invites Cy; the link goes to Cy's mailbox, not to Ada. Roles cannot ride along.
    let (status, body) =
        send(&server, &ada, Method::POST, "/v1/staff", Some(&json!({"email": "cy@shop.example", "roles": ["owner"]})))
            .await;
    assert_eq!(status, 422, "no mass assignment of roles: {body}");
    let (status, invited) =
        send(&server, &ada, Method::POST, "/v1/staff", Some(&json!({"email": "cy@shop.example"}))).await;
    assert_eq!(status, 201, "{invited}");
    assert!(!invited.to_string().contains("sti_"), "the invitation token is mailed, never returned");
    let cy_id = invited["staff"]["id"].as_str().unwrap().to_owned();
    assert_eq!(invited["staff"]["roles"], json!([]));
    let (status, body) =
        send(&server, &ada, Method::POST, "/v1/staff", Some(&json!({"email": "cy@shop.example"}))).await;
    assert_eq!((status, body["code"].as_str()), (409, Some("staff_exists")));
    let token = mailed_invitation(&server, "cy@shop.example").await;
    let (cy, _) = onboard(&server, &python, &token, "cy@shop.example").await;

    // A grant needs a second person.
    let grant = |role: &str, approval: Option<&str>| json!({"role": role, "approval_id": approval});
    let path = format!("/v1/staff/{cy_id}/roles");
    let (status, asked) = send(&server, &ada, Method::POST, &path, Some(&grant("support", None))).await;
    assert_eq!((status, asked["code"].as_str()), (403, Some("approval_required")), "{asked}");
    let approval = asked["approval_id"].as_str().unwrap().to_owned();
    let (status, body) = send(&server, &ada, Method::POST, &path, Some(&grant("support", Some(&approval)))).await;
    assert_eq!((status, body["code"].as_str()), (422, Some("approval_not_usable")), "not approved yet");
    let (status, body) = send(&server, &ada, Method::POST, &format!("/v1/approvals/{approval}/approve"), None).await;
    assert_eq!(status, 403, "nobody approves their own request: {body}");
    let (status, pending) = send(&server, &bob, Method::GET, "/v1/approvals?status=pending", None).await;
    assert_eq!(status, 200);
    assert_eq!(pending["data"][0]["id"], approval.as_str());
    assert_eq!(pending["data"][0]["target"], format!("{cy_id}:support"));
    let (status, body) = send(&server, &cy, Method::POST, &format!("/v1/approvals/{approval}/approve"), None).await;
    assert_eq!((status, body["code"].as_str()), (403, Some("insufficient_scope")), "Cy lacks admin:staff");
    let (status, decided) = send(&server, &bob, Method::POST, &format!("/v1/approvals/{approval}/approve"), None).await;
    assert_eq!((status, decided["status"].as_str()), (200, Some("approved")), "{decided}");
    let (status, _) = send(&server, &bob, Method::POST, &format!("/v1/approvals/{approval}/deny"), None).await;
    assert_eq!(status, 409, "decided once");
    // The approval serves exactly that grant, for its requester.
    let (status, body) = send(&server, &ada, Method::POST, &path, Some(&grant("finance", Some(&approval)))).await;
    assert_eq!((status, body["code"].as_str()), (422, Some("approval_not_usable")), "another role, another request");
    let (status, body) = send(&server, &bob, Method::POST, &path, Some(&grant("support", Some(&approval)))).await;
    assert_eq!((status, body["code"].as_str()), (422, Some("approval_not_usable")), "not Bob's request");
    let (status, granted) = send(&server, &ada, Method::POST, &path, Some(&grant("support", Some(&approval)))).await;
    assert_eq!(status, 200, "{granted}");
    assert_eq!(granted["roles"], json!(["support"]));
    let (status, used) = send(&server, &bob, Method::GET, &format!("/v1/approvals/{approval}"), None).await;
    assert_eq!((status, used["status"].as_str()), (200, Some("used")));

    // Support sees masked data only and cannot run staff.
    let (status, card) = send(
        &server,
        &server.bootstrap_key,
        Method::POST,
        "/v1/tokens",
        Some(&json!({"type": "card", "value": {"number": "4242424242424242", "exp_month": 12, "exp_year": 2031}})),
    )
    .await;
    assert_eq!(status, 201, "{card}");
    let reveal_path = format!("/v1/tokens/{}/reveal", card["id"].as_str().unwrap());
    let reveal =
        |view: &str, approval: Option<&str>| json!({"view": view, "reason": "support_call", "approval_id": approval});
    let (status, masked) = send(&server, &cy, Method::POST, &reveal_path, Some(&reveal("masked", None))).await;
    assert_eq!(status, 200, "{masked}");
    assert!(!masked.to_string().contains("4242424242424242"));
    let (status, _) = send(&server, &cy, Method::POST, &reveal_path, Some(&reveal("plain", None))).await;
    assert_eq!(status, 403);
    let (status, _) = send(&server, &cy, Method::GET, "/v1/staff", None).await;
    assert_eq!(status, 403);

    // A full card number by staff: four eyes too. An API key is the shop's backend: no approval.
    let (status, asked) = send(&server, &ada, Method::POST, &reveal_path, Some(&reveal("plain", None))).await;
    assert_eq!((status, asked["code"].as_str()), (403, Some("approval_required")), "{asked}");
    assert!(!asked.to_string().contains("4242424242424242"));
    let approval = asked["approval_id"].as_str().unwrap().to_owned();
    let (status, _) = send(&server, &bob, Method::POST, &format!("/v1/approvals/{approval}/approve"), None).await;
    assert_eq!(status, 200);
    let (status, shown) =
        send(&server, &ada, Method::POST, &reveal_path, Some(&reveal("plain", Some(&approval)))).await;
    assert_eq!(status, 200, "{shown}");
    assert_eq!(shown["value"]["number"], "4242424242424242");
    let (status, _) = send(&server, &ada, Method::POST, &reveal_path, Some(&reveal("plain", Some(&approval)))).await;
    assert_eq!(status, 422, "an approval is used once");
    let (status, _) =
        send(&server, &server.bootstrap_key, Method::POST, &reveal_path, Some(&reveal("plain", None))).await;
    assert_eq!(status, 200);

    // Custom roles: validated, never beyond the creator, and gone at once when deleted.
    let (status, body) = send(
        &server,
        &ada,
        Method::POST,
        "/v1/roles",
        Some(&json!({"name": "night-shift", "permissions": ["vault:read", "vault:fly"]})),
    )
    .await;
    assert_eq!((status, body["errors"][0]["pointer"].as_str()), (422, Some("/permissions/1")), "{body}");
    let (status, body) =
        send(&server, &ada, Method::POST, "/v1/roles", Some(&json!({"name": "owner", "permissions": ["vault:read"]})))
            .await;
    assert_eq!((status, body["code"].as_str()), (409, Some("role_exists")));
    let (status, role) = send(
        &server,
        &ada,
        Method::POST,
        "/v1/roles",
        Some(&json!({"name": "night-shift", "description": "Weekend cover", "permissions": ["vault:read"]})),
    )
    .await;
    assert_eq!(status, 201, "{role}");
    let (_, roles) = send(&server, &ada, Method::GET, "/v1/roles", None).await;
    let names: Vec<&str> = roles["data"].as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["owner", "admin", "support", "finance", "security", "auditor", "night-shift"]);
    let (status, _) = send(&server, &ada, Method::DELETE, "/v1/roles/owner", None).await;
    assert_eq!(status, 403);
    let (status, _) = send(&server, &ada, Method::DELETE, "/v1/roles/night-shift", None).await;
    assert_eq!(status, 204);

    // Staff cannot mint an API key that acts alone where four eyes are needed.
    let (status, body) = send(
        &server,
        &ada,
        Method::POST,
        "/v1/api-keys",
        Some(&json!({"name": "shortcut", "scopes": ["vault:reveal:card"]})),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    let (status, _) =
        send(&server, &ada, Method::POST, "/v1/api-keys", Some(&json!({"name": "ok", "scopes": ["vault:read"]}))).await;
    assert_eq!(status, 201);

    // Cy lost their phone: a factor reset, four eyes; their sessions end and the next sign-in
    // enrols a factor again.
    let reset = format!("/v1/staff/{cy_id}/reset-factors");
    let (status, asked) = send(&server, &ada, Method::POST, &reset, Some(&json!({}))).await;
    assert_eq!((status, asked["code"].as_str()), (403, Some("approval_required")), "{asked}");
    let request = asked["approval_id"].as_str().unwrap().to_owned();
    let (status, _) = send(&server, &bob, Method::POST, &format!("/v1/approvals/{request}/approve"), None).await;
    assert_eq!(status, 200);
    let (status, body) = send(&server, &ada, Method::POST, &reset, Some(&json!({"approval_id": request}))).await;
    assert_eq!((status, body["totp"].as_bool()), (200, Some(false)), "{body}");
    let (status, _) = send(&server, &cy, Method::GET, "/v1/staff/me", None).await;
    assert_eq!(status, 401, "Cy's sessions ended");
    let login = json!({"email": "cy@shop.example", "password": PASSWORD});
    let (_, started) = public(&server, "/v1/staff/login", &login).await;
    assert_eq!(started["status"], "enrolment_required");
    let challenge = started["challenge"].clone();
    let (_, enrolment) = public(&server, "/v1/staff/login/totp", &json!({"challenge": challenge})).await;
    let code = pyotp_code(&python, &server, enrolment["secret"].as_str().unwrap(), 0);
    let (status, session) =
        public(&server, "/v1/staff/login/totp/confirm", &json!({"challenge": challenge, "code": code})).await;
    assert_eq!(status, 200, "{session}");
    let cy = session["session"]["token"].as_str().unwrap().to_owned();

    // A custom role someone holds cannot be deleted (and recreated with other permissions).
    let (status, _) = send(
        &server,
        &ada,
        Method::POST,
        "/v1/roles",
        Some(&json!({"name": "readers", "permissions": ["vault:read"]})),
    )
    .await;
    assert_eq!(status, 201);
    let readers = format!("/v1/staff/{cy_id}/roles");
    let (_, asked) = send(&server, &ada, Method::POST, &readers, Some(&grant("readers", None))).await;
    let request = asked["approval_id"].as_str().unwrap().to_owned();
    let (status, body) = send(&server, &ada, Method::DELETE, "/v1/roles/readers", None).await;
    assert_eq!((status, body["code"].as_str()), (409, Some("role_in_use")), "an open request names it");
    send(&server, &bob, Method::POST, &format!("/v1/approvals/{request}/approve"), None).await;
    let (status, _) = send(&server, &ada, Method::POST, &readers, Some(&grant("readers", Some(&request)))).await;
    assert_eq!(status, 200);
    let (status, body) = send(&server, &ada, Method::DELETE, "/v1/roles/readers", None).await;
    assert_eq!((status, body["code"].as_str()), (409, Some("role_in_use")), "Cy holds it");
    let (status, _) = send(&server, &ada, Method::DELETE, &format!("/v1/staff/{cy_id}/roles/readers"), None).await;
    assert_eq!(status, 200);
    let (status, _) = send(&server, &ada, Method::DELETE, "/v1/roles/readers", None).await;
    assert_eq!(status, 204);

    // Nobody demotes someone more powerful, and the last owner stays.
    let (status, _) = send(&server, &cy, Method::POST, &format!("/v1/staff/{cy_id}/disable"), None).await;
    assert_eq!(status, 403);
    let (_, bob_me) = send(&server, &bob, Method::GET, "/v1/staff/me", None).await;
    let bob_id = bob_me["id"].as_str().unwrap().to_owned();
    let (status, _) = send(&server, &ada, Method::DELETE, &format!("/v1/staff/{bob_id}/roles/owner"), None).await;
    assert_eq!(status, 200, "Ada stays an owner");
    let (_, ada_me) = send(&server, &ada, Method::GET, "/v1/staff/me", None).await;
    let ada_id = ada_me["id"].as_str().unwrap().to_owned();
    let (status, body) = send(&server, &bob, Method::POST, &format!("/v1/staff/{ada_id}/disable"), None).await;
    assert_eq!(status, 403, "Bob is no owner any more: {body}");
    let (status, body) = send(&server, &ada, Method::DELETE, &format!("/v1/staff/{ada_id}/roles/owner"), None).await;
    assert_eq!((status, body["code"].as_str()), (409, Some("last_owner")));

    // Disabling ends Cy's sessions at once; nobody disables themselves.
    let (status, _) = send(&server, &ada, Method::POST, &format!("/v1/staff/{cy_id}/disable"), None).await;
    assert_eq!(status, 200);
    let (status, _) = send(&server, &cy, Method::GET, "/v1/staff/me", None).await;
    assert_eq!(status, 401);
    let (_, me) = send(&server, &ada, Method::GET, "/v1/staff/me", None).await;
    let (status, _) =
        send(&server, &ada, Method::POST, &format!("/v1/staff/{}/disable", me["id"].as_str().unwrap()), None).await;
    assert_eq!(status, 403);

    audit_with(
        &server,
        &[
            "approval.requested",
            "own_request",
            "approval.decided",
            "approval.used",
            "staff.role_granted",
            "staff.disabled",
        ],
    )
    .await;
    server.shutdown().await;
}
