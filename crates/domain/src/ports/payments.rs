//! Storage of payments: orders and their versions, payment intents and their transitions, the
//! gateway calls recorded before they are made, refunds, and the sandbox gateway's ledger.
//! Must never: decide a state change by reading and then writing (every "only if" is the
//! condition of the one statement whose affected-row count decides), or split a change from its
//! outbox messages.

use async_trait::async_trait;
use strongroom_types::{Money, Timestamp};

use crate::StoreError;
use crate::merchants::MerchantId;
use crate::modes::Mode;
use crate::outbox::OutboxMessage;
use crate::payments::state::{CaptureMethod, State};

/// A stored order (the newest version). `body` is the order's JSON as the API shows it, less the
/// fields kept in columns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderRecord {
    /// `ord_…`
    pub id: String,
    /// Owner.
    pub merchant: MerchantId,
    /// Data space.
    pub mode: Mode,
    /// 1, then one more per amendment.
    pub version: u32,
    /// What strongroom computed.
    pub total: Money,
    /// Line items, shipping, tax, discounts and metadata (JSON text).
    pub body: String,
    /// The shop's customer reference.
    pub customer: Option<String>,
    /// When a payment on the order was confirmed (then it cannot change).
    pub locked_at: Option<Timestamp>,
    /// Made.
    pub created_at: Timestamp,
    /// Last amended.
    pub updated_at: Timestamp,
}

/// How an amendment ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AmendOutcome {
    /// The new version is stored.
    Amended,
    /// A payment on the order was confirmed: it cannot change.
    Locked,
    /// Another amendment came first (or the order is gone).
    Stale,
}

/// Why an authorisation was declined, or a gateway call failed: codes Stripe's clients know.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PaymentError {
    /// `card_declined`, `expired_card`, `incorrect_cvc`, `processing_error`,
    /// `payment_intent_authentication_failure`, `payment_method_unusable`.
    pub code: String,
    /// The issuer's reason for a `card_declined` (`generic_decline`, `insufficient_funds`).
    pub decline_code: Option<String>,
    /// A sentence for the shop's engineer (never a card detail).
    pub message: String,
}

impl PaymentError {
    /// An error with Stripe's `code`, its `decline_code` and a sentence. (Not a problem code:
    /// these live in an intent's `last_payment_error`.)
    pub fn of(code: &str, decline_code: Option<&str>, message: &str) -> Self {
        Self { code: code.to_owned(), decline_code: decline_code.map(str::to_owned), message: message.to_owned() }
    }
}

/// What the customer must do before the intent can go on (3-D Secure).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NextAction {
    /// The gateway's page for the customer (the issuer's challenge).
    pub redirect_url: String,
    /// The gateway's id of the challenge.
    pub challenge: String,
    /// strongroom's hand-off page, where the shop sends the customer's browser: it leads to the
    /// gateway's page, and the customer comes back to strongroom, which asks the gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handoff_url: Option<String>,
    /// The shop's page the customer returns to afterwards (given at confirmation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub return_url: Option<String>,
}

/// The card an intent is paid with, as it may be shown.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CardSummary {
    /// `visa`, `mastercard`, …
    pub brand: String,
    /// Last four digits.
    pub last4: String,
}

/// A stored payment intent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntentRecord {
    /// `pi_…`
    pub id: String,
    /// Owner.
    pub merchant: MerchantId,
    /// Data space.
    pub mode: Mode,
    /// What is to be paid.
    pub amount: Money,
    /// The order it pays, if any.
    pub order: Option<String>,
    /// The shop's customer reference.
    pub customer: Option<String>,
    /// A vault card token of the same space.
    pub payment_method: Option<String>,
    /// Capture at authorisation or later.
    pub capture_method: CaptureMethod,
    /// Where it stands.
    pub state: State,
    /// Gateway calls made for it so far (each has its own idempotency key).
    pub attempt: u32,
    /// Authorised and not yet captured.
    pub amount_capturable: i64,
    /// Captured.
    pub amount_received: i64,
    /// Refunded (pending and succeeded refunds).
    pub amount_refunded: i64,
    /// Why the last authorisation failed.
    pub last_payment_error: Option<PaymentError>,
    /// What the customer must do while `requires_action`; kept afterwards (not shown) so that
    /// the return page still knows the shop's `return_url`.
    pub next_action: Option<NextAction>,
    /// The fraud checks' last decision (set when a confirmation was checked).
    pub fraud: Option<crate::payments::fraud::FraudDecision>,
    /// The card, once an authorisation was asked for.
    pub card: Option<CardSummary>,
    /// Which gateway.
    pub gateway: String,
    /// The gateway's id of the payment.
    pub gateway_reference: Option<String>,
    /// Free text.
    pub description: String,
    /// The shop's metadata (JSON object text).
    pub metadata: Option<String>,
    /// Why it was canceled.
    pub cancellation_reason: Option<String>,
    /// When it was canceled.
    pub canceled_at: Option<Timestamp>,
    /// Made.
    pub created_at: Timestamp,
    /// Last changed.
    pub updated_at: Timestamp,
    /// How it saves or uses a stored card (absent: an ordinary one-time card payment).
    pub card_on_file: Option<CardOnFile>,
}

/// How a saved card will be used: with the customer in the checkout (`on_session`), or also by
/// the shop without them (`off_session`: subscriptions, split shipments, top-ups).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FutureUsage {
    /// Later payments with the customer present (they pick the card at checkout).
    OnSession,
    /// Later payments the shop starts without the customer (merchant-initiated).
    OffSession,
}

impl FutureUsage {
    /// `on_session` or `off_session`.
    pub fn as_str(self) -> &'static str {
        match self {
            FutureUsage::OnSession => "on_session",
            FutureUsage::OffSession => "off_session",
        }
    }

    /// From its name.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "on_session" => Some(FutureUsage::OnSession),
            "off_session" => Some(FutureUsage::OffSession),
            _ => None,
        }
    }
}

/// Why the shop charges a saved card without the customer (the card networks' stored-credential
/// framework): a regular charge on a schedule, an instalment of a known total, or an unscheduled
/// one the customer agreed to (a split shipment, a top-up, a no-show fee).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MitReason {
    /// A subscription's charge.
    Recurring,
    /// One of a fixed number of payments.
    Installment,
    /// Any other charge the customer agreed to in advance.
    Unscheduled,
}

impl MitReason {
    /// `recurring`, `installment` or `unscheduled`.
    pub fn as_str(self) -> &'static str {
        match self {
            MitReason::Recurring => "recurring",
            MitReason::Installment => "installment",
            MitReason::Unscheduled => "unscheduled",
        }
    }

    /// From its name.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "recurring" => Some(MitReason::Recurring),
            "installment" => Some(MitReason::Installment),
            "unscheduled" => Some(MitReason::Unscheduled),
            _ => None,
        }
    }
}

/// The customer's agreement to keep their card, as the shop recorded it at checkout.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CardConsent {
    /// The words the customer agreed to, as the shop showed them.
    pub text: String,
    /// When strongroom recorded the agreement.
    pub accepted_at: Timestamp,
    /// The customer's address, as the shop saw it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_address: Option<String>,
    /// The customer's browser, as the shop saw it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
}

/// A request to save the card of a payment once it is authorised.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SaveCard {
    /// For which later payments.
    pub usage: FutureUsage,
    /// The customer's agreement.
    pub consent: CardConsent,
}

/// How a payment intent saves or uses a stored card.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CardOnFile {
    /// Save the card after the authorisation (the first payment of a stored credential).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub save: Option<SaveCard>,
    /// The saved card (`pm_…`) this payment made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub saved_card: Option<String>,
    /// A payment the shop starts without the customer, with a saved card, and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merchant_initiated: Option<MitReason>,
    /// The card network's id of this payment's authorisation, as the gateway reported it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_transaction_id: Option<String>,
}

/// A saved card.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedCardRecord {
    /// `pm_…`
    pub id: String,
    /// Owner.
    pub merchant: MerchantId,
    /// Data space.
    pub mode: Mode,
    /// The customer it was saved for.
    pub customer: String,
    /// The vault's card token behind it (never shown; deleted with the saved card).
    pub token: String,
    /// The card, as it may be shown.
    pub card: CardSummary,
    /// For which later payments.
    pub usage: FutureUsage,
    /// The customer's agreement.
    pub consent: CardConsent,
    /// The network's id of the first payment's authorisation (sent with merchant-initiated ones).
    pub network_transaction_id: Option<String>,
    /// The gateway's own handle on the card, from its first payment (Stripe: its Customer and
    /// PaymentMethod); given back to the gateway with later payments, never shown.
    pub stored_method: Option<String>,
    /// The payment that saved it.
    pub first_payment_intent: String,
    /// `active` or `removed`.
    pub status: String,
    /// When a payment last claimed it.
    pub last_used_at: Option<Timestamp>,
    /// Saved.
    pub created_at: Timestamp,
    /// Removed.
    pub removed_at: Option<Timestamp>,
    /// Who removed it: `customer`, `merchant`, `erasure`.
    pub removed_by: Option<String>,
}

/// A gateway call, recorded before it is made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayCallRecord {
    /// What the gateway sees as the idempotency key.
    pub idempotency_key: String,
    /// The intent it is made for.
    pub intent: String,
    /// `authorize`, `capture`, `cancel` or `refund`.
    pub operation: &'static str,
    /// The amount it moves.
    pub amount: i64,
    /// When it was recorded.
    pub at: Timestamp,
}

/// A gateway call with no recorded answer, as the reconciliation job reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenGatewayCall {
    /// The idempotency key (`<intent or refund id>:<operation>:<attempt>`).
    pub idempotency_key: String,
    /// The intent it was made for.
    pub intent: String,
    /// `authorize`, `capture`, `cancel` or `refund`.
    pub operation: String,
    /// The amount it moves.
    pub amount: i64,
    /// When it was recorded.
    pub at: Timestamp,
}

/// One state change of an intent: `UPDATE … WHERE id = before.id AND status (and pending
/// operation and attempt) = before's`, with what must commit with it.
#[derive(Debug)]
pub struct IntentTransition<'a> {
    /// The intent as it was read (its state is the condition).
    pub before: &'a IntentRecord,
    /// The intent as it will be.
    pub after: &'a IntentRecord,
    /// A gateway call about to be made (recorded first).
    pub call: Option<&'a GatewayCallRecord>,
    /// A gateway call that was answered: its key and outcome.
    pub answered: Option<(&'a str, &'a str)>,
    /// An order to lock (its id and the total the intent pays): refused unless it still has
    /// that total.
    pub lock_order: Option<(&'a str, i64)>,
    /// Outbox messages of the change.
    pub events: &'a [OutboxMessage],
    /// A saved card this payment claims (refused unless it is still active).
    pub use_saved_card: Option<&'a str>,
    /// A card this payment saves (inserted once: one per first payment).
    pub save_card: Option<&'a SavedCardRecord>,
}

/// How a transition ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransitionOutcome {
    /// It happened.
    Done,
    /// The intent was not in the expected state any more (someone else moved it).
    Stale,
    /// The order's total changed since the intent was made.
    OrderChanged,
    /// The saved card it would use was removed.
    SavedCardRemoved,
}

/// A stored refund.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundRecord {
    /// `re_…`
    pub id: String,
    /// Owner.
    pub merchant: MerchantId,
    /// Data space.
    pub mode: Mode,
    /// The intent refunded.
    pub payment_intent: String,
    /// How much.
    pub amount: Money,
    /// `duplicate`, `fraudulent` or `requested_by_customer`.
    pub reason: Option<String>,
    /// `pending`, `succeeded` or `failed`.
    pub status: String,
    /// Why it failed.
    pub failure_reason: Option<String>,
    /// The gateway's id.
    pub gateway_reference: Option<String>,
    /// The shop's metadata (JSON object text).
    pub metadata: Option<String>,
    /// Made.
    pub created_at: Timestamp,
    /// Last changed.
    pub updated_at: Timestamp,
}

/// A page of a list: newest first, after a cursor.
#[derive(Debug, Clone, Copy)]
pub struct Page<'a> {
    /// The data space listed.
    pub merchant: &'a MerchantId,
    /// Its mode.
    pub mode: Mode,
    /// Only objects after this one in the list's order (newest first: by creation time, then id).
    pub starting_after: Option<&'a str>,
    /// How many at most.
    pub limit: u32,
}

/// Storage of orders, intents and refunds.
#[async_trait]
pub trait PaymentsRepository: Send + Sync + std::fmt::Debug {
    /// Stores a new order (version 1) with its events.
    async fn insert_order(&self, order: &OrderRecord, events: &[OutboxMessage]) -> Result<(), StoreError>;
    /// One order, whoever owns it (the service checks the space).
    async fn order(&self, id: &str) -> Result<Option<OrderRecord>, StoreError>;
    /// Orders of a space, newest first.
    async fn orders(&self, page: Page<'_>) -> Result<Vec<OrderRecord>, StoreError>;
    /// Stores `order` as the version after `expected_version`, unless the order is locked or
    /// another amendment came first.
    async fn amend_order(
        &self,
        order: &OrderRecord,
        expected_version: u32,
        events: &[OutboxMessage],
    ) -> Result<AmendOutcome, StoreError>;

    /// Stores a new intent with its events.
    async fn insert_intent(&self, intent: &IntentRecord, events: &[OutboxMessage]) -> Result<(), StoreError>;
    /// One intent, whoever owns it (the service checks the space).
    async fn intent(&self, id: &str) -> Result<Option<IntentRecord>, StoreError>;
    /// Intents of a space, newest first.
    async fn intents(&self, page: Page<'_>) -> Result<Vec<IntentRecord>, StoreError>;
    /// Moves an intent from `before`'s state to `after`'s, in one conditional statement.
    async fn transition_intent(&self, transition: &IntentTransition<'_>) -> Result<TransitionOutcome, StoreError>;

    /// Stores a pending refund and adds its amount to the intent's refunded amount, only while
    /// the intent is `succeeded` and refunded stays within received: one conditional update
    /// decides. The gateway call is recorded with it. False: over the captured amount.
    async fn insert_refund(
        &self,
        refund: &RefundRecord,
        call: &GatewayCallRecord,
        events: &[OutboxMessage],
    ) -> Result<bool, StoreError>;
    /// Settles a pending refund as `refund.status` (`succeeded` or `failed`; a failed one gives
    /// its amount back to the intent). False: it was settled already.
    async fn settle_refund(
        &self,
        refund: &RefundRecord,
        call_outcome: (&str, &str),
        events: &[OutboxMessage],
    ) -> Result<bool, StoreError>;
    /// One refund, whoever owns it.
    async fn refund(&self, id: &str) -> Result<Option<RefundRecord>, StoreError>;
    /// Refunds of a space, newest first, optionally of one intent.
    async fn refunds(&self, page: Page<'_>, payment_intent: Option<&str>) -> Result<Vec<RefundRecord>, StoreError>;
    /// Gateway calls without a recorded answer, recorded at or after `since` and before
    /// `before`, oldest first, at most `limit`.
    async fn open_gateway_calls(
        &self,
        since: Timestamp,
        before: Timestamp,
        limit: u32,
    ) -> Result<Vec<OpenGatewayCall>, StoreError>;
    /// Records the outcome of a call whose answer moves nothing (its intent moved on without
    /// it). False: it had an outcome already.
    async fn close_gateway_call(&self, idempotency_key: &str, outcome: &str, at: Timestamp)
    -> Result<bool, StoreError>;

    /// One saved card, whoever owns it (the service checks the space).
    async fn saved_card(&self, id: &str) -> Result<Option<SavedCardRecord>, StoreError>;
    /// Saved cards of a space, newest first, optionally of one customer, optionally only active.
    async fn saved_cards(
        &self,
        page: Page<'_>,
        customer: Option<&str>,
        active_only: bool,
    ) -> Result<Vec<SavedCardRecord>, StoreError>;
    /// Removes an active saved card and deletes its vault token, with its events, in one
    /// transaction; false: it was not active (removed already, or by a racing request).
    async fn remove_saved_card(
        &self,
        card: &SavedCardRecord,
        at: Timestamp,
        by: &str,
        events: &[OutboxMessage],
    ) -> Result<bool, StoreError>;
}

/// One operation in the sandbox gateway's ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerEntry {
    /// The caller's idempotency key (unique).
    pub idempotency_key: String,
    /// `authorize`, `capture`, `cancel` or `refund`.
    pub operation: String,
    /// The caller's reference (the intent id).
    pub reference: String,
    /// The amount.
    pub amount: i64,
    /// Lower-case ISO 4217 code.
    pub currency: String,
    /// `authorized`, `captured`, `requires_action`, `declined`, `voided`, `refunded`, `failed`.
    pub outcome: String,
    /// Why it was declined.
    pub decline_code: Option<String>,
    /// The 3-D Secure challenge it asked for.
    pub challenge: Option<String>,
    /// The sandbox's id of the payment.
    pub gateway_reference: String,
    /// What it was told of a stored card: `first:<usage>`, `customer:<network id>` or
    /// `merchant:<reason>:<network id>`.
    pub stored_credential: Option<String>,
    /// The network transaction id it issued for an authorisation.
    pub network_transaction_id: Option<String>,
    /// When.
    pub at: Timestamp,
}

/// A simulated 3-D Secure challenge of the sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxChallenge {
    /// `sbx3ds_…`
    pub id: String,
    /// The intent it is for.
    pub reference: String,
    /// `pending`, `passed`, `failed` or `consumed`.
    pub status: String,
    /// When.
    pub at: Timestamp,
}

/// The sandbox gateway's durable ledger.
#[async_trait]
pub trait SandboxLedger: Send + Sync + std::fmt::Debug {
    /// Records `entry` unless its idempotency key is recorded already; returns what is stored
    /// under the key (the earlier entry on a replay) and whether it was recorded now.
    async fn record_entry(&self, entry: &LedgerEntry) -> Result<(LedgerEntry, bool), StoreError>;
    /// The entry of an idempotency key.
    async fn ledger_entry(&self, idempotency_key: &str) -> Result<Option<LedgerEntry>, StoreError>;
    /// Stores a new challenge.
    async fn insert_sandbox_challenge(&self, challenge: &SandboxChallenge) -> Result<(), StoreError>;
    /// One challenge.
    async fn sandbox_challenge(&self, id: &str) -> Result<Option<SandboxChallenge>, StoreError>;
    /// The open (not consumed) challenge of a reference; there is at most one.
    async fn open_sandbox_challenge(&self, reference: &str) -> Result<Option<SandboxChallenge>, StoreError>;
    /// Moves a challenge from `from` to `to`; false when it was not in `from`.
    async fn set_sandbox_challenge(&self, id: &str, from: &str, to: &str) -> Result<bool, StoreError>;
    /// Whether the sandbox issued this network transaction id (to an approved authorisation).
    async fn issued_network_transaction(&self, id: &str) -> Result<bool, StoreError>;
}
