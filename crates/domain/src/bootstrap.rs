//! First start: the default merchant and a bootstrap API key with every scope, created exactly
//! once per deployment. There is no default password and no default account.
//! Must never: create a second bootstrap key on a later start, or log the key.

use strongroom_types::{Entropy, Secret};

use crate::DomainError;
use crate::api_keys::{ApiKeyService, NewApiKey, Scope};
use crate::merchants::{Merchant, MerchantId};
use crate::ports::{BootstrapRecords, MerchantRepository};

/// What a first start made: shown to the operator once.
#[derive(Debug)]
pub struct Bootstrapped {
    /// The default merchant.
    pub merchant: Merchant,
    /// The bootstrap key, all scopes.
    pub api_key: Secret<String>,
}

/// Creates the default merchant and bootstrap key unless the deployment already has them.
/// Returns `None` on every start after the first.
pub async fn bootstrap_if_new(
    merchants: &dyn MerchantRepository,
    api_keys: &ApiKeyService,
    entropy: &dyn Entropy,
) -> Result<Option<Bootstrapped>, DomainError> {
    let merchant =
        Merchant { id: MerchantId::generate(entropy), name: "Default merchant".to_owned(), created_at: api_keys.now() };
    let input = NewApiKey {
        name: "bootstrap".to_owned(),
        scopes: Scope::ALL.iter().map(|s| s.as_str().to_owned()).collect(),
        mode: Some("live".to_owned()),
        expires_at: None,
    };
    let created = api_keys.mint(&merchant.id, input, None)?;
    let records = BootstrapRecords { merchant, api_key: created.record };
    if merchants.bootstrap_once(&records).await? {
        Ok(Some(Bootstrapped { merchant: records.merchant, api_key: created.secret }))
    } else {
        Ok(None)
    }
}
