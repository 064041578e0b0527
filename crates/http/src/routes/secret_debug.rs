//! Every response type that carries a secret (shown once to its owner) prints it masked with
//! `{:?}`, so a debug log line or a panic message cannot leak it: one test per type, each with a
//! canary in every secret field. The domain's outcome types are tested in
//! `crates/domain/tests/secret_debug.rs`.

use serde_json::{Map, Value};

use super::{api_keys, identity, staff, vault, webhooks};

const CANARY: &str = "canary-secret-5f0c";

fn assert_masked(debug: String) {
    assert!(!debug.contains(CANARY), "the secret is printed: {debug}");
    assert!(debug.contains(super::MASKED), "no mask shown: {debug}");
}

fn session() -> identity::SessionBody {
    identity::SessionBody {
        object: "session",
        id: "ses_1".into(),
        factors: "password".into(),
        user_agent: None,
        ip: None,
        created_at: "2026-01-01T00:00:00Z".into(),
        last_seen_at: "2026-01-01T00:00:00Z".into(),
        idle_expires_at: "2026-01-01T00:30:00Z".into(),
        expires_at: "2026-01-02T00:00:00Z".into(),
        current: None,
    }
}

fn issued_session() -> identity::IssuedSessionBody {
    identity::IssuedSessionBody { session: session(), customer: "cus_1".into(), token: format!("srs_{CANARY}") }
}

#[test]
fn issued_session_body_masks_the_session_token() {
    let body = issued_session();
    let debug = format!("{body:?}");
    assert_masked(debug.clone());
    assert!(debug.contains("ses_1") && debug.contains("cus_1"), "the rest is shown: {debug}");
}

#[test]
fn login_body_masks_the_session_token() {
    let body = identity::LoginBody {
        status: "authenticated",
        session: Some(issued_session()),
        challenge: None,
        factors: None,
        expires_at: None,
    };
    assert_masked(format!("{body:?}"));
}

#[test]
fn step_up_proof_body_masks_the_proof_and_the_renewed_token() {
    let body = identity::StepUpProofBody {
        proof: format!("sup_{CANARY}"),
        expires_at: "2026-01-01T00:05:00Z".into(),
        session: issued_session(),
    };
    assert_masked(format!("{body:?}"));
}

#[test]
fn totp_enrolment_body_masks_the_seed_and_the_uri() {
    let body = identity::TotpEnrolmentBody {
        secret: CANARY.into(),
        otpauth_uri: format!("otpauth://totp/shop:ann?secret={CANARY}"),
    };
    assert_masked(format!("{body:?}"));
}

#[test]
fn recovery_codes_body_masks_every_code() {
    let body = identity::RecoveryCodesBody {
        recovery_codes: (0..10).map(|i| format!("{CANARY}-{i}")).collect(),
        sessions_ended: 2,
    };
    let debug = format!("{body:?}");
    assert_masked(debug.clone());
    assert!(debug.contains("10 ×"), "the count is shown: {debug}");
}

#[test]
fn staff_session_body_masks_the_token() {
    let body = staff::StaffSessionBody {
        object: "staff_session",
        id: "sss_1".into(),
        staff: "stf_1".into(),
        token: format!("sst_{CANARY}"),
        idle_expires_at: "2026-01-01T00:15:00Z".into(),
        expires_at: "2026-01-01T12:00:00Z".into(),
    };
    assert_masked(format!("{body:?}"));
}

#[test]
fn staff_totp_body_masks_the_seed_and_the_uri() {
    let body = staff::StaffTotpBody { secret: CANARY.into(), otpauth_uri: format!("otpauth://totp/x?secret={CANARY}") };
    assert_masked(format!("{body:?}"));
}

#[test]
fn created_api_key_body_masks_the_key() {
    let body = api_keys::CreatedApiKeyBody {
        key: api_keys::ApiKeyBody {
            object: "api_key",
            id: "key_1".into(),
            name: "ci".into(),
            mode: "live",
            scopes: vec!["vault:read"],
            status: "active",
            created_at: "2026-01-01T00:00:00Z".into(),
            expires_at: None,
            last_used_at: None,
            revoked_at: None,
        },
        secret: format!("sr_live_{CANARY}"),
    };
    let debug = format!("{body:?}");
    assert_masked(debug.clone());
    assert!(debug.contains("key_1"), "{debug}");
}

#[test]
fn endpoint_with_secret_body_masks_the_signing_secret() {
    let body = webhooks::EndpointWithSecretBody {
        endpoint: webhooks::EndpointBody {
            object: "webhook_endpoint",
            id: "we_1".into(),
            url: "https://shop.example/hooks".into(),
            event_types: vec!["*".into()],
            livemode: true,
            description: String::new(),
            status: "enabled".into(),
            failing_since: None,
            previous_secret_expires_at: None,
            created_at: "2026-01-01T00:00:00Z".into(),
        },
        secret: format!("whsec_{CANARY}"),
    };
    assert_masked(format!("{body:?}"));
}

#[test]
fn revealed_body_masks_the_value() {
    let body = vault::RevealedBody {
        object: "revealed_value",
        view: "plain",
        token: vault::TokenBody {
            object: "token",
            id: "tok_1".into(),
            kind: "email",
            customer: None,
            livemode: true,
            display: Map::new(),
            metadata: None::<Value>,
            created_at: "2026-01-01T00:00:00Z".into(),
            expires_at: None,
        },
        value: serde_json::value::to_raw_value(&format!("{CANARY}@example.com")).unwrap_or_else(|e| panic!("{e}")),
        audit_index: 7,
    };
    let debug = format!("{body:?}");
    assert_masked(debug.clone());
    assert!(debug.contains("tok_1") && debug.contains('7'), "{debug}");
}

#[test]
fn confirm_request_masks_the_step_up_proof() {
    let body: super::payments::ConfirmRequest =
        serde_json::from_value(serde_json::json!({"step_up_proof": format!("sup_{CANARY}")}))
            .unwrap_or_else(|e| panic!("{e}"));
    assert_masked(format!("{body:?}"));
}
