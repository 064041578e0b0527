//! Staff passkeys: a second factor (user verification always required) that can replace TOTP,
//! enrolled at the first sign-in or later from a recent session.
//! Must never: issue a session for a passkey of another staff member, or enrol one without the
//! password step of the same sign-in or a recent session.

use super::{IssuedStaffSession, StaffService};
use crate::DomainError;
use crate::api_keys::StaffPrincipal;
use crate::audit::event::Outcome;
use crate::identity::Client;
use crate::passkeys::{Ceremony, Owner, Passkeys};
use crate::ports::{PasskeyRecord, StaffRecord};

const KIND: &str = "staff";

fn owner(staff: &StaffRecord) -> Owner<'_> {
    Owner { kind: KIND, id: &staff.id, merchant: &staff.merchant_id }
}

impl StaffService {
    fn passkey_service(&self) -> Result<&Passkeys, DomainError> {
        self.passkeys.as_deref().ok_or(DomainError::Conflict("passkeys_off", "passkeys are not set up here"))
    }

    /// Whether a staff member has a passkey (a second factor).
    pub(super) async fn has_passkey(&self, staff: &StaffRecord) -> Result<bool, DomainError> {
        match self.passkeys.as_deref() {
            Some(passkeys) => passkeys.has_any(owner(staff)).await,
            None => Ok(false),
        }
    }

    /// Begins a sign-in's second factor with a passkey.
    pub async fn begin_passkey_factor(&self, challenge: &str) -> Result<Ceremony, DomainError> {
        let (_, staff) = self.open_challenge(challenge, "login").await?;
        self.passkey_service()?.begin_sign_in(owner(&staff)).await?.ok_or(DomainError::InvalidFactor)
    }

    /// Completes a sign-in with a passkey.
    pub async fn finish_passkey_factor(
        &self,
        challenge: &str,
        ceremony: &str,
        answer: &serde_json::Value,
        client: &Client,
    ) -> Result<IssuedStaffSession, DomainError> {
        let (record, staff) = self.open_challenge(challenge, "login").await?;
        let now = self.now();
        if !self.repo.reserve_staff_challenge_try(&record.id, super::CHALLENGE_TRIES, now).await? {
            return Err(DomainError::InvalidFactor);
        }
        match self.passkey_service()?.finish_sign_in(&staff.merchant_id, KIND, ceremony, answer).await {
            Ok(id) if id == staff.id => {}
            _ => return Err(self.wrong_code(&staff, client, "staff.login_second_factor").await),
        }
        if !self.repo.complete_staff_challenge(&record.id, now).await? {
            return Err(DomainError::InvalidFactor);
        }
        self.repo.clear_staff_failures(&staff.id).await?;
        self.record(
            self.staff_event(&staff, "staff.login_second_factor", Outcome::SuccessBecause("passkey".into())),
            client,
        )
        .await?;
        self.issue_session(&staff, "password+passkey", client).await
    }

    /// Begins enrolling a passkey as the first factor of a sign-in that requires one.
    pub async fn begin_passkey_enrolment(&self, challenge: &str) -> Result<Ceremony, DomainError> {
        let (_, staff) = self.open_challenge(challenge, "enrol").await?;
        let email = self.email_of(&staff).await?;
        self.passkey_service()?.begin_registration(owner(&staff), &email).await
    }

    /// Finishes enrolling a first passkey, completing the sign-in.
    pub async fn finish_passkey_enrolment(
        &self,
        challenge: &str,
        ceremony: &str,
        answer: &serde_json::Value,
        label: &str,
        client: &Client,
    ) -> Result<IssuedStaffSession, DomainError> {
        let (record, staff) = self.open_challenge(challenge, "enrol").await?;
        let now = self.now();
        if !self.repo.reserve_staff_challenge_try(&record.id, super::CHALLENGE_TRIES, now).await? {
            return Err(DomainError::InvalidFactor);
        }
        self.passkey_service()?.finish_registration(owner(&staff), ceremony, answer, label).await?;
        if !self.repo.complete_staff_challenge(&record.id, now).await? {
            return Err(DomainError::InvalidFactor);
        }
        self.record(self.staff_event(&staff, "staff.passkey_added", Outcome::Success), client).await?;
        self.issue_session(&staff, "password+passkey", client).await
    }

    fn require_recent(&self, staff: &StaffPrincipal) -> Result<(), DomainError> {
        let recent = i64::try_from(self.settings.recent_sign_in.as_millis()).unwrap_or(i64::MAX);
        if self.now().millis_since(staff.authenticated_at) > recent {
            return Err(DomainError::Forbidden(
                "sign in again first: factors change only within 15 minutes of signing in",
            ));
        }
        Ok(())
    }

    /// Begins adding a passkey from a recent session.
    pub async fn begin_passkey_registration(&self, staff: &StaffPrincipal) -> Result<Ceremony, DomainError> {
        self.require_recent(staff)?;
        let record = self.staff_of(&staff.merchant_id, &staff.staff_id).await?;
        let email = self.email_of(&record).await?;
        self.passkey_service()?.begin_registration(owner(&record), &email).await
    }

    /// Finishes adding a passkey.
    pub async fn finish_passkey_registration(
        &self,
        staff: &StaffPrincipal,
        ceremony: &str,
        answer: &serde_json::Value,
        label: &str,
        client: &Client,
    ) -> Result<PasskeyRecord, DomainError> {
        let record = self.staff_of(&staff.merchant_id, &staff.staff_id).await?;
        let passkey = self.passkey_service()?.finish_registration(owner(&record), ceremony, answer, label).await?;
        self.record(self.staff_event(&record, "staff.passkey_added", Outcome::Success), client).await?;
        Ok(passkey)
    }

    /// The caller's passkeys.
    pub async fn passkeys(&self, staff: &StaffPrincipal) -> Result<Vec<PasskeyRecord>, DomainError> {
        let record = self.staff_of(&staff.merchant_id, &staff.staff_id).await?;
        self.passkey_service()?.list(owner(&record)).await
    }

    /// Removes one of the caller's passkeys; never the last second factor.
    pub async fn remove_passkey(&self, staff: &StaffPrincipal, id: &str, client: &Client) -> Result<(), DomainError> {
        self.require_recent(staff)?;
        let record = self.staff_of(&staff.merchant_id, &staff.staff_id).await?;
        let passkeys = self.passkey_service()?;
        // One locked, conditional delete: two parallel removals cannot both pass the rule.
        if !self.repo.remove_staff_passkey(&record.id, id).await? {
            if passkeys.list(owner(&record)).await?.iter().any(|p| p.id == id) {
                return Err(DomainError::Conflict("last_factor", "staff keep at least one second factor"));
            }
            return Err(DomainError::NotFound);
        }
        self.record(self.staff_event(&record, "staff.passkey_removed", Outcome::Success), client).await?;
        Ok(())
    }
}
