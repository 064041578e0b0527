//! Customers' passkeys: adding and removing them from a recent session, signing in with one
//! (discoverable: no email asked, so nothing to enumerate), and a passkey-only account's first
//! passkey, registered from its address-check link.
//! A passkey sign-in is multi-factor on its own (possession of the authenticator plus user
//! verification), so it ends in a session without a further factor.
//! Must never: accept a passkey of another merchant or customer, or register one for an account
//! without proof of its address or a recent sign-in.

use super::sessions::IssuedSession;
use super::{Client, CustomerSession, IdentityService};
use crate::DomainError;
use crate::audit::event::Outcome;
use crate::merchants::MerchantId;
use crate::modes::Space;
use crate::passkeys::{Ceremony, Owner, Passkeys};
use crate::ports::{AccountStatus, PasskeyRecord};

const KIND: &str = "customer";

fn owner<'a>(merchant: &'a MerchantId, customer: &'a str) -> Owner<'a> {
    Owner { kind: KIND, id: customer, merchant }
}

impl IdentityService {
    fn passkey_service(&self) -> Result<&Passkeys, DomainError> {
        self.passkeys.as_deref().ok_or(DomainError::Conflict("passkeys_off", "passkeys are not set up here"))
    }

    /// Begins adding a passkey to the signed-in customer's account.
    pub async fn begin_passkey_registration(&self, session: &CustomerSession) -> Result<Ceremony, DomainError> {
        self.require_recent_sign_in(session)?;
        let customer = self.customer_record(session.space(), &session.customer_id).await?;
        if customer.email_verified_at.is_none() {
            return Err(DomainError::Conflict(
                "email_not_verified",
                "verify the email address before adding a second factor",
            ));
        }
        self.begin_registration_for(&customer).await
    }

    async fn begin_registration_for(&self, customer: &crate::ports::CustomerRecord) -> Result<Ceremony, DomainError> {
        let email = self
            .open_for(&customer.merchant_id, &customer.id, "email", &customer.data_key_id, &customer.email_sealed)
            .await?;
        let name = String::from_utf8_lossy(email.expose()).into_owned();
        self.passkey_service()?.begin_registration(owner(&customer.merchant_id, &customer.id), &name).await
    }

    /// Finishes adding a passkey; a notice goes to the customer.
    pub async fn finish_passkey_registration(
        &self,
        session: &CustomerSession,
        ceremony: &str,
        answer: &serde_json::Value,
        label: &str,
        client: &Client,
    ) -> Result<PasskeyRecord, DomainError> {
        let merchant = &session.merchant_id;
        let space = session.space();
        let record = self
            .passkey_service()?
            .finish_registration(owner(merchant, &session.customer_id), ceremony, answer, label)
            .await?;
        self.audit_factor(space, &session.customer_id, client, "customer.passkey_added", Outcome::Success).await?;
        self.notify_change(space, &session.customer_id, "passkey_added", "A passkey was added to your account.")
            .await?;
        Ok(record)
    }

    /// The signed-in customer's passkeys.
    pub async fn passkeys(&self, session: &CustomerSession) -> Result<Vec<PasskeyRecord>, DomainError> {
        self.passkey_service()?.list(owner(&session.merchant_id, &session.customer_id)).await
    }

    /// Removes one of the signed-in customer's passkeys (needs a recent sign-in); a notice goes
    /// to the customer.
    pub async fn remove_passkey(
        &self,
        session: &CustomerSession,
        id: &str,
        client: &Client,
    ) -> Result<(), DomainError> {
        self.require_recent_sign_in(session)?;
        let merchant = &session.merchant_id;
        let space = session.space();
        self.passkey_service()?.remove(owner(merchant, &session.customer_id), id).await?;
        self.audit_factor(space, &session.customer_id, client, "customer.passkey_removed", Outcome::Success).await?;
        self.notify_change(space, &session.customer_id, "passkey_removed", "A passkey was removed from your account.")
            .await?;
        Ok(())
    }

    /// Begins a passkey sign-in: options any of the merchant's customers' passkeys can answer.
    pub async fn begin_passkey_login(&self, space: Space<'_>, client: &Client) -> Result<Ceremony, DomainError> {
        let merchant = space.merchant;
        self.refuse_blocked_client(space, client).await?;
        if let Some(wait) = super::throttle::client_wait(self.decisions.get(), merchant.as_str(), client.ip).await {
            self.audit_login(space, None, client, Outcome::Denied("client_throttled")).await?;
            return Err(DomainError::Throttled { code: "login_throttled", retry_after: Some(wait) });
        }
        self.passkey_service()?.begin_discoverable(merchant, KIND).await
    }

    /// Finishes a passkey sign-in: a session for the passkey's customer.
    pub async fn finish_passkey_login(
        &self,
        space: Space<'_>,
        ceremony: &str,
        answer: &serde_json::Value,
        client: &Client,
    ) -> Result<IssuedSession, DomainError> {
        let merchant = space.merchant;
        self.refuse_blocked_client(space, client).await?;
        let customer_id = match self.passkey_service()?.finish_sign_in(merchant, KIND, ceremony, answer).await {
            Ok(id) => id,
            Err(err) => {
                super::throttle::client_failed(self.decisions.get(), merchant.as_str(), client.ip).await;
                let event = crate::audit::event::AuditEvent::by(
                    crate::audit::event::ActorKind::Anonymous,
                    None,
                    "customer.login",
                    Outcome::Denied("passkey_refused"),
                );
                self.audit
                    .record(
                        event
                            .for_merchant(merchant)
                            .in_mode(space.mode)
                            .from_source(client.ip, client.request_id.clone()),
                    )
                    .await?;
                return Err(err);
            }
        };
        let customer = self.customer_record(space, &customer_id).await.map_err(|_| DomainError::InvalidFactor)?;
        if customer.status != AccountStatus::Active {
            self.audit_factor(space, &customer.id, client, "customer.login", Outcome::Denied("disabled")).await?;
            return Err(DomainError::InvalidFactor);
        }
        // A passkey is a second factor already, so this sign-in goes on; an impossible place
        // steps the account's password sign-ins up and is reported (a synced passkey's cloud
        // account taken over, a device stolen).
        self.watch_travel(merchant, &customer.id, client).await?;
        let known_device = self.known_device(&customer, client).await?;
        let issued = self.issue_session(&customer, "passkey", client).await?;
        self.audit_factor(space, &customer.id, client, "customer.login", Outcome::SuccessBecause("passkey".into()))
            .await?;
        if !known_device {
            self.notify_new_device(&customer, client).await?;
        }
        Ok(issued)
    }

    /// For a passkey-only account whose address was just verified: the ceremony that registers
    /// its first passkey (`None` for accounts with a password or a passkey already).
    pub async fn first_passkey_ceremony(
        &self,
        space: Space<'_>,
        customer_id: &str,
    ) -> Result<Option<Ceremony>, DomainError> {
        let merchant = space.merchant;
        let Some(passkeys) = self.passkeys.as_deref() else { return Ok(None) };
        let customer = self.customer_record(space, customer_id).await?;
        if customer.password_hash.is_some() || passkeys.has_any(owner(merchant, customer_id)).await? {
            return Ok(None);
        }
        Ok(Some(self.begin_registration_for(&customer).await?))
    }

    /// Finishes a passkey-only account's first passkey (the ceremony from its address check is
    /// the proof) and signs the customer in.
    pub async fn finish_first_passkey(
        &self,
        space: Space<'_>,
        customer_id: &str,
        ceremony: &str,
        answer: &serde_json::Value,
        label: &str,
        client: &Client,
    ) -> Result<IssuedSession, DomainError> {
        let merchant = space.merchant;
        let customer = self.customer_record(space, customer_id).await.map_err(|_| DomainError::InvalidFactor)?;
        let has_passkey = self.passkey_service()?.has_any(owner(merchant, customer_id)).await?;
        if customer.password_hash.is_some()
            || customer.email_verified_at.is_none()
            || customer.status != AccountStatus::Active
            || has_passkey
        {
            return Err(DomainError::InvalidFactor);
        }
        self.passkey_service()?.finish_registration(owner(merchant, customer_id), ceremony, answer, label).await?;
        self.audit_factor(space, customer_id, client, "customer.passkey_added", Outcome::Success).await?;
        let issued = self.issue_session(&customer, "passkey", client).await?;
        self.audit_factor(space, customer_id, client, "customer.login", Outcome::SuccessBecause("passkey".into()))
            .await?;
        Ok(issued)
    }
}
