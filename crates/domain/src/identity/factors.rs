//! Second factors: TOTP (RFC 6238, replay blocked by storing the last accepted step) and ten
//! single-use recovery codes, stored as keyed hashes.
//! Must never: accept a TOTP code of a step at or before the last accepted one, accept a recovery
//! code twice, show a seed or recovery code after the answer that created it, or store either in
//! the clear.

use data_encoding::BASE32_NOPAD;
use strongroom_crypto::totp;
use strongroom_types::Secret;

use super::{Client, CustomerSession, IdentityService};
use crate::DomainError;
use crate::audit::event::Outcome;
use crate::ports::CustomerRecord;

/// Recovery codes issued at a time.
pub const RECOVERY_CODES: usize = 10;

/// Steps of clock drift accepted either side.
const TOTP_DRIFT: u64 = 1;

/// How long an emailed sign-in code works.
const EMAIL_CODE_TTL: std::time::Duration = std::time::Duration::from_secs(10 * 60);

/// Bytes of a TOTP seed (160 bits, as RFC 4226 recommends).
const TOTP_SEED_BYTES: usize = 20;

/// A second factor as the customer gives it.
#[derive(Clone)]
pub enum FactorAnswer {
    /// A 6-digit code from the authenticator app.
    Totp(Secret<String>),
    /// One of the recovery codes.
    RecoveryCode(Secret<String>),
    /// The code mailed for this sign-in (only for a sign-in that asked for one).
    EmailCode(Secret<String>),
    /// A passkey's answer to the ceremony the challenge offered (step-up).
    Passkey {
        /// `wac_…`
        ceremony: String,
        /// The browser's `PublicKeyCredential`, as JSON.
        credential: serde_json::Value,
    },
}

impl std::fmt::Debug for FactorAnswer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FactorAnswer::Totp(_) => "FactorAnswer::Totp(..)",
            FactorAnswer::RecoveryCode(_) => "FactorAnswer::RecoveryCode(..)",
            FactorAnswer::EmailCode(_) => "FactorAnswer::EmailCode(..)",
            FactorAnswer::Passkey { .. } => "FactorAnswer::Passkey(..)",
        })
    }
}

/// A TOTP enrolment waiting for its first code.
#[derive(Debug)]
pub struct TotpEnrolment {
    /// The seed in base32, for typing into an app.
    pub secret: Secret<String>,
    /// The `otpauth://` URI, for a QR code.
    pub otpauth_uri: Secret<String>,
}

fn normalize_recovery(code: &str) -> String {
    code.chars().filter(|c| c.is_ascii_alphanumeric()).map(|c| c.to_ascii_lowercase()).collect()
}

impl IdentityService {
    /// Starts TOTP enrolment: a fresh seed, shown once. Refused while TOTP is on.
    pub async fn begin_totp(&self, session: &CustomerSession, client: &Client) -> Result<TotpEnrolment, DomainError> {
        self.require_recent_sign_in(session)?;
        let merchant = &session.merchant_id;
        let space = session.space();
        let customer = self.customer_record(session.space(), &session.customer_id).await?;
        if customer.totp_confirmed_at.is_some() {
            return Err(DomainError::Conflict("totp_already_enrolled", "TOTP is already on; remove it first"));
        }
        // Whoever registered an address first must not lock its owner out with their own factor.
        if customer.email_verified_at.is_none() {
            return Err(DomainError::Conflict(
                "email_not_verified",
                "verify the email address before adding a second factor",
            ));
        }
        let mut seed = [0u8; TOTP_SEED_BYTES];
        self.entropy.fill(&mut seed);
        let (_, sealed) = self.seal_for(customer.space(), &customer.id, "totp", &seed).await?;
        let secret = BASE32_NOPAD.encode(&seed);
        zeroize::Zeroize::zeroize(&mut seed);
        if !self.repo.begin_totp(merchant, &customer.id, &sealed).await? {
            return Err(DomainError::Conflict("totp_already_enrolled", "TOTP is already on; remove it first"));
        }
        let email =
            self.open_for(merchant, &customer.id, "email", &customer.data_key_id, &customer.email_sealed).await?;
        let account = String::from_utf8_lossy(email.expose()).into_owned();
        let uri = totp::otpauth_uri(&self.settings.totp_issuer, &account, &secret);
        self.audit_factor(space, &customer.id, client, "customer.totp_enrolment_started", Outcome::Success).await?;
        Ok(TotpEnrolment { secret: Secret::new(secret), otpauth_uri: Secret::new(uri) })
    }

    /// Confirms TOTP enrolment with a first code; answers the recovery codes, shown once. Other
    /// sessions end unless `keep_other_sessions`.
    pub async fn confirm_totp(
        &self,
        session: &CustomerSession,
        code: Secret<String>,
        keep_other_sessions: bool,
        client: &Client,
    ) -> Result<(Vec<Secret<String>>, u64), DomainError> {
        self.require_recent_sign_in(session)?;
        let merchant = &session.merchant_id;
        let space = session.space();
        let customer = self.customer_record(session.space(), &session.customer_id).await?;
        let (Some(sealed), None) = (&customer.totp_sealed, customer.totp_confirmed_at) else {
            return Err(DomainError::Conflict("no_pending_enrolment", "start TOTP enrolment first"));
        };
        let seed = self.open_for(merchant, &customer.id, "totp", &customer.data_key_id, sealed).await?;
        let now = self.now();
        let unix = u64::try_from(now.unix_millis() / 1000).unwrap_or(0);
        let Some(step) = totp::verify(seed.expose(), code.expose(), unix, TOTP_DRIFT, None) else {
            self.audit_factor(space, &customer.id, client, "customer.totp_enrolled", Outcome::Denied("wrong_code"))
                .await?;
            return Err(DomainError::InvalidFactor);
        };
        let (codes, digests) = self.fresh_recovery_codes();
        if !self.repo.confirm_totp(merchant, &customer.id, step, now, &digests).await? {
            return Err(DomainError::Conflict("no_pending_enrolment", "start TOTP enrolment first"));
        }
        let ended = if keep_other_sessions { 0 } else { self.end_other_sessions(session, client).await? };
        self.audit_factor(space, &customer.id, client, "customer.totp_enrolled", Outcome::Success).await?;
        self.notify_change(
            space,
            &customer.id,
            "totp_enrolled",
            "An authenticator app was added to your account as a second factor.",
        )
        .await?;
        Ok((codes, ended))
    }

    /// Turns TOTP off; needs a current TOTP code or a recovery code.
    pub async fn remove_totp(
        &self,
        session: &CustomerSession,
        answer: FactorAnswer,
        client: &Client,
    ) -> Result<(), DomainError> {
        let merchant = &session.merchant_id;
        let space = session.space();
        let customer = self.customer_record(session.space(), &session.customer_id).await?;
        if customer.totp_confirmed_at.is_none() {
            return Err(DomainError::NotFound);
        }
        if self.check_factor_throttled(&customer, &answer, client).await?.is_none() {
            self.audit_factor(space, &customer.id, client, "customer.totp_removed", Outcome::Denied("wrong_code"))
                .await?;
            return Err(DomainError::InvalidFactor);
        }
        self.repo.remove_totp(merchant, &customer.id).await?;
        self.audit_factor(space, &customer.id, client, "customer.totp_removed", Outcome::Success).await?;
        self.notify_change(
            space,
            &customer.id,
            "totp_removed",
            "The authenticator app was removed from your account: it no longer has a second factor.",
        )
        .await?;
        Ok(())
    }

    /// New recovery codes (the old ones stop working); needs a current TOTP code.
    pub async fn regenerate_recovery_codes(
        &self,
        session: &CustomerSession,
        code: Secret<String>,
        client: &Client,
    ) -> Result<Vec<Secret<String>>, DomainError> {
        let space = session.space();
        let customer = self.customer_record(space, &session.customer_id).await?;
        if customer.totp_confirmed_at.is_none() {
            return Err(DomainError::Conflict("totp_not_enrolled", "recovery codes come with TOTP"));
        }
        if self.check_factor_throttled(&customer, &FactorAnswer::Totp(code), client).await?.is_none() {
            self.audit_factor(
                space,
                &customer.id,
                client,
                "customer.recovery_codes_replaced",
                Outcome::Denied("wrong_code"),
            )
            .await?;
            return Err(DomainError::InvalidFactor);
        }
        let (codes, digests) = self.fresh_recovery_codes();
        self.repo.replace_recovery_codes(&customer.id, &digests, self.now()).await?;
        self.audit_factor(space, &customer.id, client, "customer.recovery_codes_replaced", Outcome::Success).await?;
        Ok(codes)
    }

    /// Mails a 6-digit code bound to a sign-in challenge, good for 10 minutes.
    pub(super) async fn send_login_code(
        &self,
        customer: &CustomerRecord,
        challenge_id: &str,
    ) -> Result<(), DomainError> {
        let code = loop {
            let mut bytes = [0u8; 4];
            self.entropy.fill(&mut bytes);
            let n = u32::from_le_bytes(bytes);
            // Rejection sampling keeps every code equally likely.
            if n < 4_294_000_000 {
                break format!("{:06}", n % 1_000_000);
            }
        };
        let now = self.now();
        let digest = self.keyed("email_code", format!("{challenge_id}|{code}").as_bytes());
        self.repo.set_challenge_code(challenge_id, &digest, now.saturating_add(EMAIL_CODE_TTL)).await?;
        let notice = super::notices::Notice {
            kind: "login_code",
            subject: "Your sign-in code",
            intro: "Your account was signed in to with the right password after several failed attempts. To finish, enter this code; it works for 10 minutes, for that sign-in only.",
            facts: vec![("Code", code)],
            link: None,
            closing: "If this was not you, someone knows your password: change it now.",
        };
        self.notify(customer, notice).await?;
        Ok(())
    }

    /// Checks the emailed code of a sign-in challenge (its try was reserved), counted with the
    /// customer's other second-factor answers.
    async fn check_email_code(
        &self,
        challenge_id: &str,
        customer: &CustomerRecord,
        code: &Secret<String>,
    ) -> Result<Option<&'static str>, DomainError> {
        let merchant = &customer.merchant_id;
        let subject = self.keyed("second_factor", customer.id.as_bytes());
        let now = self.now();
        super::throttle::subject_gate(self.repo.login_failures(merchant, &subject).await?, now).check()?;
        let challenge = self.repo.challenge(merchant, challenge_id).await?;
        let expected = self.keyed("email_code", format!("{challenge_id}|{}", code.expose().trim()).as_bytes());
        let right = challenge.is_some_and(|c| {
            c.purpose == crate::ports::ChallengePurpose::Login
                && c.code_expires_at.is_some_and(|at| at > now)
                && c.code_digest.as_deref().is_some_and(|d| strongroom_crypto::constant_time_eq(d, &expected))
        });
        if right {
            self.repo.clear_login_failures(merchant, &subject).await?;
            Ok(Some("email_code"))
        } else {
            self.repo.add_login_failure(merchant, &subject, now).await?;
            Ok(None)
        }
    }

    fn fresh_recovery_codes(&self) -> (Vec<Secret<String>>, Vec<Vec<u8>>) {
        let mut codes = Vec::with_capacity(RECOVERY_CODES);
        let mut digests = Vec::with_capacity(RECOVERY_CODES);
        for _ in 0..RECOVERY_CODES {
            let mut bytes = [0u8; 10];
            self.entropy.fill(&mut bytes);
            // 16 base32 characters: 80 bits, shown as xxxx-xxxx-xxxx-xxxx.
            let body = BASE32_NOPAD.encode(&bytes).to_ascii_lowercase();
            zeroize::Zeroize::zeroize(&mut bytes);
            let shown = format!("{}-{}-{}-{}", &body[0..4], &body[4..8], &body[8..12], &body[12..16]);
            digests.push(self.keyed("recovery_code", body.as_bytes()));
            codes.push(Secret::new(shown));
        }
        (codes, digests)
    }

    /// Checks a second factor, throttled per customer across every challenge and call: one check
    /// at a time per customer on this node, growing delays after 5 wrong answers, a stop at 100
    /// (the same schedule as passwords; a right answer clears it, a right password does not).
    pub(super) async fn check_factor_throttled(
        &self,
        customer: &CustomerRecord,
        answer: &FactorAnswer,
        client: &Client,
    ) -> Result<Option<&'static str>, DomainError> {
        let subject = self.keyed("second_factor", customer.id.as_bytes());
        let merchant = &customer.merchant_id;
        let space = customer.space();
        let now = self.now();
        let gate = super::throttle::subject_gate(self.repo.login_failures(merchant, &subject).await?, now);
        if let Err(err) = gate.check() {
            self.audit_factor(space, &customer.id, client, "customer.second_factor", Outcome::Denied("throttled"))
                .await?;
            return Err(err);
        }
        let Some(_slot) = self.in_flight.enter(&subject) else {
            self.audit_factor(
                space,
                &customer.id,
                client,
                "customer.second_factor",
                Outcome::Denied("concurrent_attempt"),
            )
            .await?;
            return Err(DomainError::Throttled { code: "login_throttled", retry_after: Some(1) });
        };
        let used = self.check_factor(customer, answer, client).await?;
        if used.is_some() {
            self.repo.clear_login_failures(merchant, &subject).await?;
        } else {
            self.repo.add_login_failure(merchant, &subject, now).await?;
        }
        Ok(used)
    }

    /// Answers a challenge: reserves one of its tries first (atomically, so parallel answers
    /// cannot exceed them), then checks the factor with the per-customer throttle. `None`: spent
    /// or wrong.
    pub(super) async fn answer_challenge(
        &self,
        challenge_id: &str,
        customer: &CustomerRecord,
        answer: &FactorAnswer,
        client: &Client,
    ) -> Result<Option<&'static str>, DomainError> {
        if !self.repo.reserve_challenge_try(challenge_id, self.settings.challenge_tries, self.now()).await? {
            return Ok(None);
        }
        if let FactorAnswer::EmailCode(code) = answer {
            return self.check_email_code(challenge_id, customer, code).await;
        }
        if let FactorAnswer::Passkey { ceremony, credential } = answer {
            let Some(passkeys) = self.passkeys.as_deref() else { return Ok(None) };
            let owner = passkeys.finish_sign_in(&customer.merchant_id, "customer", ceremony, credential).await;
            return Ok(matches!(owner, Ok(id) if id == customer.id).then_some("passkey"));
        }
        self.check_factor_throttled(customer, answer, client).await
    }

    /// Checks a second factor of an enrolled customer; answers which factor was used, or `None`.
    /// A TOTP code is consumed (its step recorded); a recovery code is used up, and its use raises
    /// a security notice in the audit log.
    pub(super) async fn check_factor(
        &self,
        customer: &CustomerRecord,
        answer: &FactorAnswer,
        client: &Client,
    ) -> Result<Option<&'static str>, DomainError> {
        let (Some(sealed), Some(_)) = (&customer.totp_sealed, customer.totp_confirmed_at) else {
            return Ok(None);
        };
        match answer {
            FactorAnswer::Totp(code) => {
                let seed =
                    self.open_for(&customer.merchant_id, &customer.id, "totp", &customer.data_key_id, sealed).await?;
                let unix = u64::try_from(self.now().unix_millis() / 1000).unwrap_or(0);
                let Some(step) = totp::verify(seed.expose(), code.expose(), unix, TOTP_DRIFT, customer.totp_last_step)
                else {
                    return Ok(None);
                };
                // Compare-and-set: of two requests with the same code, one wins.
                Ok(self.repo.accept_totp_step(&customer.id, step).await?.then_some("totp"))
            }
            // Only a sign-in challenge that mailed one takes an emailed code, and only a challenge
            // that offered a ceremony takes a passkey (see answer_challenge).
            FactorAnswer::EmailCode(_) | FactorAnswer::Passkey { .. } => Ok(None),
            FactorAnswer::RecoveryCode(code) => {
                let normalized = normalize_recovery(code.expose());
                let digest = self.keyed("recovery_code", normalized.as_bytes());
                if !self.repo.use_recovery_code(&customer.id, &digest, self.now()).await? {
                    return Ok(None);
                }
                self.audit_factor(
                    customer.space(),
                    &customer.id,
                    client,
                    "customer.recovery_code_used",
                    Outcome::Success,
                )
                .await?;
                let left = self.repo.recovery_codes_left(&customer.id).await.unwrap_or(0);
                let what: &'static str = if left <= 2 {
                    "A recovery code was used to sign in to your account. Few codes are left: make new ones in your security centre."
                } else {
                    "A recovery code was used to sign in to your account. Each code works once."
                };
                self.notify(
                    customer,
                    super::notices::Notice::changed("recovery_code_used", what, &self.now().to_rfc3339()),
                )
                .await?;
                Ok(Some("recovery_code"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::normalize_recovery;

    #[test]
    fn recovery_codes_normalize() {
        assert_eq!(normalize_recovery(" ABCD-efgh-2345-6677 "), "abcdefgh23456677");
    }
}
