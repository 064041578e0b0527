//! Every outcome type that carries a secret (a session token, an API key, a TOTP seed, recovery
//! codes, a step-up proof, an invitation token, an access token, a webhook signing secret, a
//! revealed value) prints it masked with `{:?}`: one test per type, each with a canary in every
//! secret field. The HTTP answers built from them are tested in `http/src/routes/secret_debug.rs`.

use strongroom_domain::api_keys::{ApiKeyId, ApiKeyRecord, CreatedApiKey, Mode, Principal, Scope, StaffPrincipal};
use strongroom_domain::bootstrap::Bootstrapped;
use strongroom_domain::identity::accounts::LoginOutcome;
use strongroom_domain::identity::factors::TotpEnrolment;
use strongroom_domain::identity::sessions::{IssuedSession, SessionView};
use strongroom_domain::identity::step_up::StepUpProof;
use strongroom_domain::merchants::{Merchant, MerchantId};
use strongroom_domain::oauth::IssuedToken;
use strongroom_domain::ports::StaffStatus;
use strongroom_domain::staff::{Invitation, IssuedStaffSession, StaffTotpEnrolment, StaffView};
use strongroom_domain::vault::tokens::{Revealed, TokenView};
use strongroom_domain::vault::values::ValueKind;
use strongroom_domain::webhooks::{EndpointView, EndpointWithSecret};
use strongroom_types::{OsEntropy, Secret, Timestamp};

const CANARY: &str = "canary-secret-9d2e";

fn assert_masked(debug: &str) {
    assert!(!debug.contains(CANARY), "the secret is printed: {debug}");
}

fn secret(prefix: &str) -> Secret<String> {
    Secret::new(format!("{prefix}{CANARY}"))
}

const T: Timestamp = Timestamp::from_unix_millis(1_800_000_000_000);

fn issued_session() -> IssuedSession {
    IssuedSession {
        session: SessionView {
            id: "ses_1".into(),
            factors: "password".into(),
            user_agent: None,
            ip: None,
            created_at: T,
            last_seen_at: T,
            idle_expires_at: T,
            expires_at: T,
        },
        customer_id: "cus_1".into(),
        token: secret("srs_"),
    }
}

fn merchant_id() -> MerchantId {
    MerchantId::generate(&OsEntropy)
}

#[test]
fn issued_session_masks_the_token() {
    let debug = format!("{:?}", issued_session());
    assert_masked(&debug);
    assert!(debug.contains("ses_1"), "the rest is shown: {debug}");
}

#[test]
fn login_outcome_masks_the_token() {
    assert_masked(&format!("{:?}", LoginOutcome::Authenticated(issued_session())));
}

#[test]
fn step_up_proof_masks_the_proof_and_the_token() {
    let proof = StepUpProof { proof: secret("sup_"), expires_at: T, session: issued_session() };
    assert_masked(&format!("{proof:?}"));
}

#[test]
fn totp_enrolment_masks_the_seed_and_the_uri() {
    let enrolment = TotpEnrolment { secret: secret(""), otpauth_uri: secret("otpauth://totp/x?secret=") };
    assert_masked(&format!("{enrolment:?}"));
}

#[test]
fn recovery_codes_are_masked() {
    let codes: Vec<Secret<String>> = (0..10).map(|_| secret("")).collect();
    assert_masked(&format!("{codes:?}"));
}

#[test]
fn created_api_key_masks_the_key() {
    let created = CreatedApiKey {
        record: ApiKeyRecord {
            id: ApiKeyId::generate(&OsEntropy),
            merchant_id: merchant_id(),
            name: "ci".into(),
            mode: Mode::Live,
            scopes: vec![Scope::VaultRead],
            digest: vec![0; 32],
            created_at: T,
            expires_at: None,
            last_used_at: None,
            revoked_at: None,
            decoy: false,
        },
        secret: secret("sr_live_"),
    };
    assert_masked(&format!("{created:?}"));
}

#[test]
fn bootstrapped_masks_the_bootstrap_key() {
    let boot = Bootstrapped {
        merchant: Merchant { id: merchant_id(), name: "Default merchant".into(), created_at: T },
        api_key: secret("sr_live_"),
    };
    assert_masked(&format!("{boot:?}"));
}

fn staff_view() -> StaffView {
    StaffView {
        id: "stf_1".into(),
        email: "ann@shop.example".into(),
        status: StaffStatus::Invited,
        totp: false,
        locked_until: None,
        roles: Vec::new(),
        permissions: Vec::new(),
        created_at: T,
    }
}

#[test]
fn invitation_masks_the_token() {
    let invitation = Invitation { staff: staff_view(), token: secret("inv_"), expires_at: T };
    assert_masked(&format!("{invitation:?}"));
}

#[test]
fn issued_staff_session_masks_the_token() {
    let session = IssuedStaffSession {
        id: "sss_1".into(),
        staff_id: "stf_1".into(),
        token: secret("sst_"),
        idle_expires_at: T,
        expires_at: T,
    };
    assert_masked(&format!("{session:?}"));
}

#[test]
fn staff_totp_enrolment_masks_the_seed_and_the_uri() {
    let enrolment = StaffTotpEnrolment { secret: secret(""), otpauth_uri: secret("otpauth://totp/x?secret=") };
    assert_masked(&format!("{enrolment:?}"));
}

#[test]
fn issued_access_token_masks_the_jwt() {
    let token = IssuedToken {
        access_token: secret("eyJ."),
        expires_in: 300,
        scope: "vault:read".into(),
        client: Principal::staff(StaffPrincipal {
            staff_id: "stf_1".into(),
            merchant_id: merchant_id(),
            session_id: "sss_1".into(),
            permissions: Vec::new(),
            grantable: Vec::new(),
            roles: Vec::new(),
            authenticated_at: T,
        }),
    };
    assert_masked(&format!("{token:?}"));
}

#[test]
fn endpoint_with_secret_masks_the_signing_secret() {
    let endpoint = EndpointWithSecret {
        endpoint: EndpointView {
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
        secret: secret("whsec_"),
    };
    assert_masked(&format!("{endpoint:?}"));
}

#[test]
fn revealed_masks_the_value() {
    let revealed = Revealed {
        token: TokenView {
            id: "tok_1".into(),
            kind: ValueKind::Email,
            customer: None,
            livemode: true,
            display: serde_json::Map::new(),
            metadata: None,
            created_at: T,
            expires_at: None,
        },
        value: Secret::new(format!("\"{CANARY}@example.com\"").into_bytes()),
        audit_index: 3,
    };
    let debug = format!("{revealed:?}");
    assert_masked(&debug);
    // Nor as numbers: `Secret<Vec<u8>>` prints no bytes.
    let as_numbers = format!("{:?}", &CANARY.as_bytes()[..4]);
    assert!(!debug.contains(as_numbers.trim_matches(|c| c == '[' || c == ']')), "{debug}");
}

#[test]
fn confirm_extras_mask_the_step_up_proof() {
    let extras = strongroom_domain::payments::checkout::ConfirmExtras {
        step_up_proof: Some(secret("sup_")),
        client: Default::default(),
        return_url: None,
        card_on_file: Default::default(),
    };
    assert_masked(&format!("{extras:?}"));
}
