//! The vault's routes: `/v1/tokens` (tokenize, batch, search, read, reveal, delete) and
//! `DELETE /v1/customers/{id}/data` (crypto-shredding).
//! Must never: put a value, or anything derived from one beyond its masked form, into a log line;
//! answer a reveal before its audit entry is durable (the service guarantees it).

use super::MASKED;
use axum::Json;
use axum::extract::{Path, State};
use http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use strongroom_domain::DomainError;
use strongroom_domain::vault::tokens::{ErasureReceipt, RevealView, Source, TokenFormat, TokenView, TokenizeInput};
use strongroom_domain::vault::values::ValueKind;
use strongroom_types::Timestamp;
use utoipa::ToSchema;

use crate::extract::{ApiJson, ApiKeyAuth, RequestContext, scope};
use crate::problem::{ApiError, Problem, ProblemField};
use crate::state::AppState;

/// A token: never the value, only what may be shown.
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenBody {
    /// Always `token`.
    pub object: &'static str,
    /// `tok_…`, or digits for a format-preserving card token.
    pub id: String,
    /// `card`, `bank_account`, `email`, `phone`, `address`, `name` or `json`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The shop's customer reference.
    pub customer: Option<String>,
    /// True for a token made with a live key; false for one made with a test key (`sr_test_…`),
    /// which only test keys see.
    pub livemode: bool,
    /// Masked, non-sensitive facts: for a card brand, first6 (only for numbers of 16 digits or
    /// more), last4, exp_month, exp_year, fingerprint and cvc_held; for an email or phone a masked
    /// form; and so on.
    #[schema(value_type = Object)]
    pub display: Map<String, Value>,
    /// The shop's metadata.
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Value>,
    /// RFC 3339 UTC.
    pub created_at: String,
    /// RFC 3339 UTC, when the token expires.
    pub expires_at: Option<String>,
}

impl From<TokenView> for TokenBody {
    fn from(view: TokenView) -> Self {
        Self {
            object: "token",
            id: view.id,
            kind: view.kind.as_str(),
            customer: view.customer,
            livemode: view.livemode,
            display: view.display,
            metadata: view.metadata,
            created_at: view.created_at.to_rfc3339(),
            expires_at: view.expires_at.map(Timestamp::to_rfc3339),
        }
    }
}

/// A value to tokenize.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenizeRequest {
    /// `card` (`{number, exp_month, exp_year, cvc?, holder_name?}`), `bank_account` (IBAN),
    /// `email`, `phone` (E.164), `address` (`{line1, line2?, city, region?, postal_code?,
    /// country}`), `name` or `json` (an object). At most 4 KiB.
    #[serde(rename = "type")]
    pub kind: String,
    /// The value.
    #[schema(value_type = Object)]
    pub value: Value,
    /// The shop's customer reference (1 to 64 of `A-Z a-z 0-9 _ . : -`, never a card number); a
    /// customer's values are sealed under their own data key, so they can be erased together.
    #[serde(default)]
    pub customer: Option<String>,
    /// Lifetime in seconds (60 to 10 years).
    #[serde(default)]
    pub ttl: Option<u64>,
    /// Return the existing token of an equal value (same customer) instead of a new one.
    #[serde(default)]
    pub dedupe: bool,
    /// `random` (default) or `pan_preserving` (cards of 16 digits or more: keeps first 6 and last 4,
    /// fails Luhn; a shorter card answers 422 `pan_preserving_too_short`).
    #[serde(default)]
    pub format: Option<String>,
    /// Up to 20 string values of up to 500 characters: never put sensitive data here (card
    /// numbers are refused).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Map<String, Value>>,
    /// A honey token: any read or reveal raises a security event.
    #[serde(default)]
    pub canary: bool,
}

/// Values are card numbers and personal data: a `Debug` print names the type, never the value.
impl std::fmt::Debug for TokenizeRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenizeRequest").field("type", &self.kind).finish_non_exhaustive()
    }
}

impl std::fmt::Debug for SearchRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SearchRequest").field("type", &self.kind).finish_non_exhaustive()
    }
}

impl std::fmt::Debug for BatchRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchRequest").field("items", &self.items.len()).finish_non_exhaustive()
    }
}

fn kind_at(text: &str, pointer: &str) -> Result<ValueKind, (String, &'static str)> {
    ValueKind::parse(text)
        .ok_or_else(|| (pointer.to_owned(), "must be card, bank_account, email, phone, address, name or json"))
}

impl TokenizeRequest {
    fn into_input(self, base: &str) -> Result<TokenizeInput, ProblemField> {
        let field = |(pointer, detail): (String, &str)| ProblemField { pointer, detail: detail.to_owned() };
        let kind = kind_at(&self.kind, &format!("{base}/type")).map_err(field)?;
        let format = match self.format.as_deref() {
            None | Some("random") => TokenFormat::Random,
            Some("pan_preserving") => TokenFormat::PanPreserving,
            Some(_) => return Err(field((format!("{base}/format"), "must be random or pan_preserving"))),
        };
        Ok(TokenizeInput {
            kind,
            value: self.value,
            customer: self.customer,
            ttl_seconds: self.ttl,
            dedupe: self.dedupe,
            format,
            metadata: self.metadata,
            canary: self.canary,
        })
    }
}

fn source(context: &RequestContext) -> Source {
    Source { ip: context.ip, request_id: context.request_id.clone() }
}

const TOKEN_ID_DESCRIPTION: &str = "tok_… or a format-preserving number";

/// Whether a path segment can be a token id at all (anything else is a plain 404).
fn plausible_token_id(id: &str) -> bool {
    strongroom_domain::vault::tokens::TokenId::parse(id).is_ok()
        || ((12..=19).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_digit()))
}

/// Tokenizes a value: 201 with a new token, or 200 with the existing one (`dedupe`).
#[utoipa::path(post, path = "/v1/tokens", tag = "vault", security(("api_key" = ["vault:write"])),
    request_body = TokenizeRequest,
    responses(
        (status = 201, body = TokenBody, description = "a new token"),
        (status = 200, body = TokenBody, description = "the existing token of an equal value (dedupe)"),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 413, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json",
            description = "validation_failed, invalid_card_number, card_expired, invalid_expiry, invalid_cvc, invalid_iban, invalid_email, invalid_phone, invalid_address, value_too_large, pan_preserving_too_short or card_number_in_free_text (customer, metadata, Idempotency-Key)"),
        (status = 503, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn create(
    auth: ApiKeyAuth<scope::VaultWrite>,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<TokenizeRequest>,
) -> Result<(StatusCode, Json<TokenBody>), ApiError> {
    let input = body.into_input("").map_err(|f| ApiError::validation(vec![f]))?;
    let (view, created) = state.vault.tokenize(&auth.principal, input).await?;
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(view.into())))
}

/// Up to 1,000 values to tokenize in one transaction.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    /// Each item as for `POST /v1/tokens`.
    #[schema(value_type = Vec<TokenizeRequest>)]
    pub items: Vec<Value>,
}

/// One item's result.
#[derive(Debug, Serialize, ToSchema)]
pub struct BatchItemBody {
    /// 201 (created), 200 (existing, dedupe) or 422.
    pub status: u16,
    /// The token, when there is one.
    pub token: Option<TokenBody>,
    /// The problem code, when the item was refused.
    pub code: Option<&'static str>,
    /// The fields concerned, when the item was refused.
    pub errors: Vec<ProblemField>,
}

/// The batch's results, in item order.
#[derive(Debug, Serialize, ToSchema)]
pub struct BatchBody {
    /// Always `list`.
    pub object: &'static str,
    /// One result per item.
    pub data: Vec<BatchItemBody>,
}

fn refused(code: &'static str, errors: Vec<ProblemField>) -> BatchItemBody {
    BatchItemBody { status: 422, token: None, code: Some(code), errors }
}

/// Tokenizes up to 1,000 values in one transaction; each item gets its own result.
#[utoipa::path(post, path = "/v1/tokens/batch", tag = "vault", security(("api_key" = ["vault:write"])),
    request_body = BatchRequest,
    responses(
        (status = 200, body = BatchBody),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 413, body = Problem, content_type = "application/problem+json", description = "more than 1,000 items"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn batch(
    auth: ApiKeyAuth<scope::VaultWrite>,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<BatchRequest>,
) -> Result<Json<BatchBody>, ApiError> {
    if body.items.len() > strongroom_domain::vault::tokens::MAX_BATCH {
        return Err(ApiError::from(DomainError::TooLarge("a batch holds at most 1000 items")));
    }
    let mut data: Vec<Option<BatchItemBody>> = Vec::with_capacity(body.items.len());
    let mut inputs = Vec::new();
    let mut positions = Vec::new();
    for (index, item) in body.items.into_iter().enumerate() {
        let base = format!("/items/{index}");
        let parsed = crate::extract::json::parse_value::<TokenizeRequest>(item, &base)
            .map_err(|err| err.fields)
            .and_then(|request| request.into_input(&base).map_err(|f| vec![f]));
        match parsed {
            Ok(input) => {
                positions.push(index);
                inputs.push((base, input));
                data.push(None);
            }
            Err(fields) => data.push(Some(refused("validation_failed", fields))),
        }
    }
    let results = state.vault.tokenize_batch(&auth.principal, inputs).await?;
    for (index, result) in positions.into_iter().zip(results) {
        let body = match result {
            Ok((view, created)) => BatchItemBody {
                status: if created { 201 } else { 200 },
                token: Some(view.into()),
                code: None,
                errors: Vec::new(),
            },
            Err(err) => refused(err.code, vec![ProblemField::from(err.field)]),
        };
        if let Some(slot) = data.get_mut(index) {
            *slot = Some(body);
        }
    }
    let data = data.into_iter().map(|d| d.unwrap_or_else(|| refused("internal_error", Vec::new()))).collect();
    Ok(Json(BatchBody { object: "list", data }))
}

/// Find tokens by value.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SearchRequest {
    /// The value's type.
    #[serde(rename = "type")]
    pub kind: String,
    /// The value, as for tokenizing; a card by its number alone, `{"number": "…"}`
    /// (`exp_month`, `exp_year`, `cvc` and `holder_name` are accepted and ignored).
    #[schema(value_type = Object)]
    pub value: Value,
}

/// Tokens found.
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenList {
    /// Always `list`.
    pub object: &'static str,
    /// The tokens (at most 100).
    pub data: Vec<TokenBody>,
}

/// Finds the merchant's live tokens holding a value (by fingerprint; nothing is decrypted).
#[utoipa::path(post, path = "/v1/tokens/search", tag = "vault", security(("api_key" = ["vault:read"])),
    request_body = SearchRequest,
    responses(
        (status = 200, body = TokenList),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn search(
    auth: ApiKeyAuth<scope::VaultRead>,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<SearchRequest>,
) -> Result<Json<TokenList>, ApiError> {
    let kind = kind_at(&body.kind, "/type").map_err(|(p, d)| ApiError::invalid_field(p, d))?;
    let found = state.vault.search(&auth.principal, kind, &body.value).await?;
    Ok(Json(TokenList { object: "list", data: found.into_iter().map(TokenBody::from).collect() }))
}

/// A token's metadata (never its value).
#[utoipa::path(get, path = "/v1/tokens/{id}", tag = "vault", security(("api_key" = ["vault:read"])),
    params(("id" = String, Path, description = TOKEN_ID_DESCRIPTION)),
    responses(
        (status = 200, body = TokenBody),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 410, body = Problem, content_type = "application/problem+json", description = "the customer's data was erased"),
    ))]
pub async fn get(
    auth: ApiKeyAuth<scope::VaultRead>,
    context: RequestContext,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<TokenBody>, ApiError> {
    if !plausible_token_id(&id) {
        return Err(ApiError::not_found());
    }
    Ok(Json(state.vault.get(&auth.principal, &source(&context), &id).await?.into()))
}

/// How to reveal.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevealRequest {
    /// `masked` (needs any `vault:reveal:*` scope) or `plain` (`vault:reveal:card` for cards and
    /// bank accounts, `vault:reveal:pii` for the rest).
    pub view: String,
    /// Why, as a code (1 to 64 of `a-z 0-9 _ . : -`, never a card number), recorded in the audit
    /// log.
    pub reason: String,
    /// For staff revealing a full card number: the approved request (`apr_…`) a first attempt
    /// opened (it answered 403 `approval_required` with its id) and a second staff member approved.
    #[serde(default)]
    pub approval_id: Option<String>,
}

/// A revealed value.
#[derive(Serialize, ToSchema)]
pub struct RevealedBody {
    /// Always `revealed_value`.
    pub object: &'static str,
    /// `plain` or `masked`.
    pub view: &'static str,
    /// The token.
    pub token: TokenBody,
    /// The value.
    #[schema(value_type = Object)]
    pub value: Box<RawValue>,
    /// The audit log entry recording this reveal.
    pub audit_index: u64,
}

/// Masks the secret: this answer is shown once, and a `Debug` print must not repeat it.
impl std::fmt::Debug for RevealedBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RevealedBody")
            .field("view", &self.view)
            .field("token", &self.token)
            .field("value", &MASKED)
            .field("audit_index", &self.audit_index)
            .finish()
    }
}

/// Reveals a value, by scope. The audit entry is committed before the answer.
#[utoipa::path(post, path = "/v1/tokens/{id}/reveal", tag = "vault",
    security(("api_key" = ["vault:reveal:masked"]), ("api_key" = ["vault:reveal:pii"]), ("api_key" = ["vault:reveal:card"])),
    params(("id" = String, Path, description = TOKEN_ID_DESCRIPTION)),
    request_body = RevealRequest,
    responses(
        (status = 200, body = RevealedBody),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 410, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json", description = "validation_failed or card_number_in_free_text (reason)"),
        (status = 429, body = Problem, content_type = "application/problem+json"),
        (status = 500, body = Problem, content_type = "application/problem+json", description = "integrity_error"),
        (status = 503, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn reveal(
    auth: ApiKeyAuth<scope::AnyKey>,
    context: RequestContext,
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<RevealRequest>,
) -> Result<Json<RevealedBody>, ApiError> {
    let view = match body.view.as_str() {
        "plain" => RevealView::Plain,
        "masked" => RevealView::Masked,
        _ => return Err(ApiError::invalid_field("/view", "must be plain or masked")),
    };
    if !plausible_token_id(&id) {
        return Err(ApiError::not_found());
    }
    let revealed = state
        .vault
        .reveal(&auth.principal, &source(&context), &id, view, &body.reason, body.approval_id.as_deref())
        .await?;
    let text = String::from_utf8(revealed.value.expose().clone()).map_err(|e| ApiError::internal(&e))?;
    let value = RawValue::from_string(text).map_err(|e| ApiError::internal(&e))?;
    Ok(Json(RevealedBody {
        object: "revealed_value",
        view: if view == RevealView::Plain { "plain" } else { "masked" },
        token: revealed.token.into(),
        value,
        audit_index: revealed.audit_index,
    }))
}

/// A deleted token.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeletedBody {
    /// Always `token`.
    pub object: &'static str,
    /// The id.
    pub id: String,
    /// Always true.
    pub deleted: bool,
}

/// Deletes a token: it answers 404 afterwards.
#[utoipa::path(delete, path = "/v1/tokens/{id}", tag = "vault", security(("api_key" = ["vault:write"])),
    params(("id" = String, Path, description = TOKEN_ID_DESCRIPTION)),
    responses(
        (status = 200, body = DeletedBody),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 410, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn delete(
    auth: ApiKeyAuth<scope::VaultWrite>,
    context: RequestContext,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<DeletedBody>, ApiError> {
    if !plausible_token_id(&id) {
        return Err(ApiError::not_found());
    }
    state.vault.delete(&auth.principal, &source(&context), &id).await?;
    Ok(Json(DeletedBody { object: "token", id, deleted: true }))
}

/// The receipt of an erasure.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErasureReceiptBody {
    /// Always `erasure_receipt`.
    pub object: &'static str,
    /// The customer reference.
    pub customer: String,
    /// RFC 3339 UTC.
    pub erased_at: String,
    /// Tokens whose values were destroyed.
    pub tokens_erased: u64,
    /// The audit log entry recording the erasure.
    pub audit_index: u64,
}

impl From<ErasureReceipt> for ErasureReceiptBody {
    fn from(receipt: ErasureReceipt) -> Self {
        Self {
            object: "erasure_receipt",
            customer: receipt.customer,
            erased_at: receipt.erased_at.to_rfc3339(),
            tokens_erased: receipt.tokens_erased,
            audit_index: receipt.audit_index,
        }
    }
}

/// Crypto-shreds a customer: destroys their data key and empties their tokens, which answer 410
/// afterwards. Erasing again answers a receipt with no tokens.
#[utoipa::path(delete, path = "/v1/customers/{id}/data", tag = "vault", security(("api_key" = ["privacy:erase"])),
    params(("id" = String, Path, description = "the shop's customer reference")),
    responses(
        (status = 200, body = ErasureReceiptBody),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn erase_customer(
    auth: ApiKeyAuth<scope::PrivacyErase>,
    context: RequestContext,
    State(state): State<AppState>,
    Path(customer): Path<String>,
) -> Result<Json<ErasureReceiptBody>, ApiError> {
    let receipt = state.vault.erase_customer(&auth.principal, &source(&context), &customer).await?;
    // The account went with the data (same transaction): its cached sessions go now.
    state.identity.forget_customer(&customer);
    tracing::info!(
        request_id = context.request_id.as_deref(),
        tokens_erased = receipt.tokens_erased,
        "customer data erased"
    );
    Ok(Json(receipt.into()))
}
