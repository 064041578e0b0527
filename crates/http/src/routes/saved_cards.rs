//! Saved cards (`/v1/saved_cards`, scopes `payments:read` and `payments:write`) and the signed-in
//! customer's own (`/v1/me/saved_cards`): list, read, remove. A card is saved by a payment intent
//! with `setup_future_usage` and `consent`, and used by naming its `pm_…` as `payment_method`.
//! Must never: show the vault token behind a saved card, or let one customer see or remove
//! another's.

use axum::Json;
use axum::extract::{Path, State};
use serde::{Deserialize, Serialize};
use strongroom_domain::ports::payments::SavedCardRecord;
use strongroom_domain::vault::tokens::Source;
use strongroom_types::Timestamp;
use utoipa::{IntoParams, ToSchema};

use super::payments::{CardBody, ListParams};
use crate::extract::{ApiKeyAuth, ApiQuery, CustomerAuth, RequestContext, scope};
use crate::problem::{ApiError, Problem};
use crate::state::AppState;

/// The customer's agreement to keep the card.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConsentBody {
    /// The words the customer agreed to.
    pub text: String,
    /// When strongroom recorded it (RFC 3339).
    pub accepted_at: String,
    /// The customer's address, as the shop saw it.
    pub ip_address: Option<String>,
    /// The customer's browser, as the shop saw it.
    pub user_agent: Option<String>,
}

/// A saved card.
#[derive(Debug, Serialize, ToSchema)]
pub struct SavedCardBody {
    /// Always `saved_card`.
    pub object: &'static str,
    /// `pm_…`: the `payment_method` of later payment intents.
    pub id: String,
    /// The customer it is saved for.
    pub customer: String,
    /// The card, as it may be shown.
    pub card: CardBody,
    /// `on_session` (payments the customer makes) or `off_session` (also payments the shop
    /// makes without them).
    pub usage: &'static str,
    /// The customer's agreement.
    pub consent: ConsentBody,
    /// The card network's id of the first payment, sent with payments without the customer
    /// (absent in the customer's own view, and when the gateway reports none).
    pub network_transaction_id: Option<String>,
    /// The payment intent that saved it.
    pub first_payment_intent: String,
    /// `active` or `removed`.
    pub status: String,
    /// When a payment last used it (RFC 3339).
    pub last_used_at: Option<String>,
    /// Saved (RFC 3339).
    pub created_at: String,
    /// Removed (RFC 3339).
    pub removed_at: Option<String>,
    /// Who removed it: `merchant`, `customer` or `erasure`.
    pub removed_by: Option<String>,
    /// Whether it is live (false: saved with a test key).
    pub livemode: bool,
}

impl From<SavedCardRecord> for SavedCardBody {
    fn from(r: SavedCardRecord) -> Self {
        Self {
            object: "saved_card",
            card: CardBody { brand: r.card.brand, last4: r.card.last4 },
            usage: r.usage.as_str(),
            consent: ConsentBody {
                text: r.consent.text,
                accepted_at: r.consent.accepted_at.to_rfc3339(),
                ip_address: r.consent.ip_address,
                user_agent: r.consent.user_agent,
            },
            last_used_at: r.last_used_at.map(Timestamp::to_rfc3339),
            created_at: r.created_at.to_rfc3339(),
            removed_at: r.removed_at.map(Timestamp::to_rfc3339),
            livemode: r.mode.is_live(),
            id: r.id,
            customer: r.customer,
            network_transaction_id: r.network_transaction_id,
            first_payment_intent: r.first_payment_intent,
            status: r.status,
            removed_by: r.removed_by,
        }
    }
}

/// A page of saved cards.
#[derive(Debug, Serialize, ToSchema)]
pub struct SavedCardList {
    /// Always `list`.
    pub object: &'static str,
    /// Newest first.
    pub data: Vec<SavedCardBody>,
    /// Whether more follow (`starting_after` = the last id).
    pub has_more: bool,
}

/// Paging of saved cards: newest first, optionally of one customer.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct SavedCardListParams {
    /// 1 to 100, default 10.
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    /// The id of the last saved card of the previous page.
    pub starting_after: Option<String>,
    /// Only this customer's.
    pub customer: Option<String>,
    /// Removed ones too (default: only active ones).
    pub include_removed: Option<bool>,
}

fn list(found: Vec<SavedCardRecord>, has_more: bool) -> SavedCardList {
    SavedCardList { object: "list", data: found.into_iter().map(SavedCardBody::from).collect(), has_more }
}

/// Saved cards of the caller's data space.
#[utoipa::path(get, path = "/v1/saved_cards", tag = "payments", security(("api_key" = ["payments:read"])),
    params(SavedCardListParams),
    responses(
        (status = 200, body = SavedCardList),
        (status = 422, body = Problem, content_type = "application/problem+json", description = "bad `limit`, `starting_after` or `customer`"),
    ))]
pub async fn list_saved_cards(
    auth: ApiKeyAuth<scope::PaymentsRead>,
    State(state): State<AppState>,
    ApiQuery(params): ApiQuery<SavedCardListParams>,
) -> Result<Json<SavedCardList>, ApiError> {
    let active_only = !params.include_removed.unwrap_or(false);
    let (found, has_more) = state
        .payments
        .saved_cards(
            auth.principal.space(),
            params.customer.as_deref(),
            active_only,
            params.starting_after.as_deref(),
            params.limit,
        )
        .await?;
    Ok(Json(list(found, has_more)))
}

/// One saved card.
#[utoipa::path(get, path = "/v1/saved_cards/{id}", tag = "payments", security(("api_key" = ["payments:read"])),
    params(("id" = String, Path, description = "`pm_…`")),
    responses((status = 200, body = SavedCardBody), (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn get_saved_card(
    auth: ApiKeyAuth<scope::PaymentsRead>,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<SavedCardBody>, ApiError> {
    Ok(Json(state.payments.saved_card(auth.principal.space(), &id).await?.into()))
}

/// Removes a saved card at once, with the card data behind it: no payment starts with it after
/// this answer (a payment already authorising goes on). A second removal answers 404.
#[utoipa::path(delete, path = "/v1/saved_cards/{id}", tag = "payments", security(("api_key" = ["payments:write"])),
    params(("id" = String, Path, description = "`pm_…`")),
    responses((status = 200, body = SavedCardBody), (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn remove_saved_card(
    auth: ApiKeyAuth<scope::PaymentsWrite>,
    context: RequestContext,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<SavedCardBody>, ApiError> {
    let source = Source { ip: context.ip, request_id: context.request_id.clone() };
    let caller = strongroom_domain::payments::Caller { principal: &auth.principal, source: &source };
    Ok(Json(state.payments.remove_saved_card(caller, &id).await?.into()))
}

/// The signed-in customer's saved cards, newest first.
#[utoipa::path(get, path = "/v1/me/saved_cards", tag = "customer", security(("session" = [])),
    params(ListParams),
    responses(
        (status = 200, body = SavedCardList),
        (status = 401, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn my_saved_cards(
    auth: CustomerAuth,
    State(state): State<AppState>,
    ApiQuery(params): ApiQuery<ListParams>,
) -> Result<Json<SavedCardList>, ApiError> {
    let (found, has_more) =
        state.payments.customer_saved_cards(&auth.session, params.starting_after.as_deref(), params.limit).await?;
    let mut page = list(found, has_more);
    for card in &mut page.data {
        card.network_transaction_id = None;
    }
    Ok(Json(page))
}

/// Removes one of the signed-in customer's saved cards, at once.
#[utoipa::path(delete, path = "/v1/me/saved_cards/{id}", tag = "customer", security(("session" = [])),
    params(("id" = String, Path, description = "`pm_…`")),
    responses(
        (status = 200, body = SavedCardBody),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn remove_my_saved_card(
    auth: CustomerAuth,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<SavedCardBody>, ApiError> {
    let source = Source { ip: auth.client.ip, request_id: auth.client.request_id.clone() };
    let mut body: SavedCardBody = state.payments.remove_customer_saved_card(&auth.session, &source, &id).await?.into();
    body.network_transaction_id = None;
    Ok(Json(body))
}
