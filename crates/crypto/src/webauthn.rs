//! WebAuthn (passkeys) as a relying party, through webauthn-rs: registration and sign-in
//! ceremonies whose options go to the browser as JSON and whose state stays on the server.
//!
//! Owns: the relying party's identity (id, origins), user verification always required (a
//! passkey is then a phishing-resistant multi-factor credential on its own), and the opaque
//! serialized forms the domain stores: ceremony state and registered passkeys.
//! Must never: hand ceremony state to a client (it is stored server-side, or a replay becomes
//! possible), or accept an assertion without user verification.

use webauthn_rs::prelude::{
    AuthenticationResult, DiscoverableAuthentication, DiscoverableKey, Passkey, PasskeyAuthentication,
    PasskeyRegistration, PublicKeyCredential, RegisterPublicKeyCredential, Url, Uuid, Webauthn, WebauthnBuilder,
};

/// What went wrong in a ceremony. The messages are for logs; clients get one answer.
#[derive(Debug, thiserror::Error)]
pub enum PasskeyError {
    /// The relying party settings are unusable (a bad id or origin).
    #[error("relying party settings: {0}")]
    Settings(String),
    /// The browser's answer is malformed or fails verification.
    #[error("ceremony refused: {0}")]
    Refused(String),
    /// Stored state or a stored passkey does not parse (corruption or a version change).
    #[error("stored passkey data is unreadable: {0}")]
    Stored(String),
}

/// Who the relying party is.
#[derive(Debug, Clone)]
pub struct RelyingPartySettings {
    /// The RP id: the site's registrable domain (`shop.example`), or `localhost`.
    pub id: String,
    /// The origins pages run on (`https://shop.example`); the first is the main one.
    pub origins: Vec<String>,
    /// The name authenticators show.
    pub name: String,
    /// Accept any port on the origins' hosts (development, tests).
    pub allow_any_port: bool,
}

/// The relying party.
pub struct RelyingParty {
    inner: Webauthn,
    settings: RelyingPartySettings,
}

impl std::fmt::Debug for RelyingParty {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelyingParty").field("settings", &self.settings).finish()
    }
}

/// A ceremony begun: options for the browser, state for the server.
#[derive(Debug)]
pub struct Begun {
    /// `{"publicKey": …}`, for `navigator.credentials.create()` or `.get()`.
    pub options: serde_json::Value,
    /// Serialized state, stored server-side until the answer comes.
    pub state: String,
}

/// A passkey just registered.
#[derive(Debug)]
pub struct Registered {
    /// The credential id (unique per authenticator).
    pub credential_id: Vec<u8>,
    /// The serialized passkey (public key, counter, flags): public data.
    pub passkey: String,
}

/// A verified sign-in.
#[derive(Debug)]
pub struct Verified {
    /// The credential that signed.
    pub credential_id: Vec<u8>,
    /// The passkey to store back when its counter or backup state moved.
    pub updated_passkey: Option<String>,
    /// The signature counter the authenticator reported (0: it keeps none, which WebAuthn
    /// allows; such a passkey's uses cannot be ordered by it).
    pub counter: u32,
}

fn refused(err: impl std::fmt::Display) -> PasskeyError {
    PasskeyError::Refused(err.to_string())
}

fn stored(err: impl std::fmt::Display) -> PasskeyError {
    PasskeyError::Stored(err.to_string())
}

impl RelyingParty {
    /// The relying party for these settings.
    pub fn new(settings: RelyingPartySettings) -> Result<Self, PasskeyError> {
        let mut origins =
            settings.origins.iter().map(|o| Url::parse(o).map_err(|e| PasskeyError::Settings(e.to_string())));
        let first = origins.next().ok_or_else(|| PasskeyError::Settings("no origin".into()))??;
        let mut builder = WebauthnBuilder::new(&settings.id, &first)
            .map_err(|e| PasskeyError::Settings(e.to_string()))?
            .rp_name(&settings.name)
            .allow_any_port(settings.allow_any_port);
        let rest: Vec<Url> = origins.collect::<Result<_, _>>()?;
        for origin in &rest {
            builder = builder.append_allowed_origin(origin);
        }
        let inner = builder.build().map_err(|e| PasskeyError::Settings(e.to_string()))?;
        Ok(Self { inner, settings })
    }

    /// The settings.
    pub fn settings(&self) -> &RelyingPartySettings {
        &self.settings
    }

    /// Begins registering a passkey for a user (`handle`: 16 opaque bytes, never personal data),
    /// excluding credentials they already have.
    pub fn begin_registration(
        &self,
        handle: [u8; 16],
        name: &str,
        display_name: &str,
        existing: &[Vec<u8>],
    ) -> Result<Begun, PasskeyError> {
        let exclude = (!existing.is_empty()).then(|| existing.to_vec());
        let (options, state) = self
            .inner
            .start_passkey_registration(Uuid::from_bytes(handle), name, display_name, exclude)
            .map_err(refused)?;
        let mut options = serde_json::to_value(options).map_err(stored)?;
        // Sign-in is discoverable (no user named first), so the credential must be one the
        // authenticator can find by itself: a resident (discoverable) credential, as passkeys are.
        if let Some(selection) =
            options.pointer_mut("/publicKey/authenticatorSelection").and_then(|s| s.as_object_mut())
        {
            selection.insert("residentKey".into(), "required".into());
            selection.insert("requireResidentKey".into(), true.into());
        }
        Ok(Begun { options, state: serde_json::to_string(&state).map_err(stored)? })
    }

    /// Finishes a registration with the browser's answer.
    pub fn finish_registration(&self, answer: &serde_json::Value, state: &str) -> Result<Registered, PasskeyError> {
        let answer: RegisterPublicKeyCredential = serde_json::from_value(answer.clone()).map_err(refused)?;
        let state: PasskeyRegistration = serde_json::from_str(state).map_err(stored)?;
        let passkey = self.inner.finish_passkey_registration(&answer, &state).map_err(refused)?;
        Ok(Registered {
            credential_id: passkey.cred_id().to_vec(),
            passkey: serde_json::to_string(&passkey).map_err(stored)?,
        })
    }

    /// Begins a sign-in with one of the given passkeys (a known user: second factor, step-up).
    pub fn begin_authentication(&self, passkeys: &[String]) -> Result<Begun, PasskeyError> {
        let passkeys: Vec<Passkey> =
            passkeys.iter().map(|p| serde_json::from_str(p)).collect::<Result<_, _>>().map_err(stored)?;
        let (options, state) = self.inner.start_passkey_authentication(&passkeys).map_err(refused)?;
        Ok(Begun {
            options: serde_json::to_value(options).map_err(stored)?,
            state: serde_json::to_string(&state).map_err(stored)?,
        })
    }

    /// Finishes a sign-in begun with [`RelyingParty::begin_authentication`]. `passkey_of` finds
    /// the stored passkey of a credential id, to update its counter.
    pub fn finish_authentication(
        &self,
        answer: &serde_json::Value,
        state: &str,
        stored_passkey: impl Fn(&[u8]) -> Option<String>,
    ) -> Result<Verified, PasskeyError> {
        let answer: PublicKeyCredential = serde_json::from_value(answer.clone()).map_err(refused)?;
        let state: PasskeyAuthentication = serde_json::from_str(state).map_err(stored)?;
        let result = self.inner.finish_passkey_authentication(&answer, &state).map_err(refused)?;
        verified(&result, stored_passkey(result.cred_id()))
    }

    /// Begins a sign-in by whichever passkey the user picks (no user named: nothing to
    /// enumerate). The options ask for a modal prompt, not conditional mediation.
    pub fn begin_discoverable(&self) -> Result<Begun, PasskeyError> {
        let (mut options, state) = self.inner.start_discoverable_authentication().map_err(refused)?;
        options.mediation = None;
        Ok(Begun {
            options: serde_json::to_value(options).map_err(stored)?,
            state: serde_json::to_string(&state).map_err(stored)?,
        })
    }

    /// The credential id a discoverable answer names (to find its owner), before verification.
    pub fn credential_of(answer: &serde_json::Value) -> Result<Vec<u8>, PasskeyError> {
        let answer: PublicKeyCredential = serde_json::from_value(answer.clone()).map_err(refused)?;
        Ok(answer.get_credential_id().to_vec())
    }

    /// Finishes a discoverable sign-in against the stored passkey its credential id found.
    pub fn finish_discoverable(
        &self,
        answer: &serde_json::Value,
        state: &str,
        stored_passkey: &str,
    ) -> Result<Verified, PasskeyError> {
        let answer: PublicKeyCredential = serde_json::from_value(answer.clone()).map_err(refused)?;
        let state: DiscoverableAuthentication = serde_json::from_str(state).map_err(stored)?;
        let passkey: Passkey = serde_json::from_str(stored_passkey).map_err(stored)?;
        let key = DiscoverableKey::from(&passkey);
        let result = self.inner.finish_discoverable_authentication_v2(&answer, state, &key).map_err(refused)?;
        verified(&result, Some(stored_passkey.to_owned()))
    }
}

fn verified(result: &AuthenticationResult, stored_passkey: Option<String>) -> Result<Verified, PasskeyError> {
    if !result.user_verified() {
        return Err(PasskeyError::Refused("the authenticator did not verify the user".into()));
    }
    let mut updated_passkey = None;
    if let Some(text) = stored_passkey {
        let mut passkey: Passkey = serde_json::from_str(&text).map_err(stored)?;
        // The ceremony's state may hold an older counter than the one stored now (another sign-in
        // came between begin and finish): the counter must move past the stored one too, unless
        // the authenticator keeps none (both 0).
        let current = stored_counter(&passkey)?;
        if (result.counter() > 0 || current > 0) && result.counter() <= current {
            return Err(PasskeyError::Refused(format!(
                "the signature counter did not advance ({} after {current}): a replayed or cloned authenticator",
                result.counter()
            )));
        }
        if passkey.update_credential(result) == Some(true) {
            updated_passkey = Some(serde_json::to_string(&passkey).map_err(stored)?);
        }
    }
    Ok(Verified { credential_id: result.cred_id().to_vec(), updated_passkey, counter: result.counter() })
}

/// The signature counter a stored passkey holds (webauthn-rs serializes it as `cred.counter`).
fn stored_counter(passkey: &Passkey) -> Result<u32, PasskeyError> {
    let value = serde_json::to_value(passkey).map_err(stored)?;
    value
        .pointer("/cred/counter")
        .and_then(serde_json::Value::as_u64)
        .and_then(|c| u32::try_from(c).ok())
        .ok_or_else(|| PasskeyError::Stored("the stored passkey has no counter".into()))
}
