//! Storage of the checkout rules: the fraud signals of each confirmation attempt and the counts
//! over a window that the fraud rules read, the fraud decision kept on an intent, and a new
//! intent's confirmation written with its signals in one transaction (`confirm: true`).
//! Must never: count from memory (the counts must hold across nodes and restarts), or count one
//! attempt twice.

use async_trait::async_trait;
use strongroom_types::Timestamp;

use crate::StoreError;
use crate::merchants::MerchantId;
use crate::modes::Mode;
use crate::outbox::OutboxMessage;
use crate::payments::fraud::FraudDecision;
use crate::ports::payments::{GatewayCallRecord, IntentRecord};

/// What a signal is keyed by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SignalKind {
    /// The intent's customer reference.
    Customer,
    /// The card's fingerprint.
    Card,
    /// The customer's address, as the shop passed it.
    Ip,
    /// The customer's device, as the shop passed it.
    Device,
}

impl SignalKind {
    /// Every kind.
    pub const ALL: [SignalKind; 4] = [SignalKind::Customer, SignalKind::Card, SignalKind::Ip, SignalKind::Device];

    /// The stored name.
    pub const fn as_str(self) -> &'static str {
        match self {
            SignalKind::Customer => "customer",
            SignalKind::Card => "card",
            SignalKind::Ip => "ip",
            SignalKind::Device => "device",
        }
    }

    /// Parses a stored name.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == text)
    }
}

/// One confirmation attempt, as the fraud rules count it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptSignals {
    /// The data space.
    pub merchant: MerchantId,
    /// Its mode.
    pub mode: Mode,
    /// `pi_…`
    pub intent: String,
    /// The intent's attempt number this confirmation would use.
    pub attempt: u32,
    /// The keys this attempt is counted under (a kind without a key is not counted).
    pub keys: Vec<(SignalKind, String)>,
    /// The card's fingerprint id (`fp_…`).
    pub card: String,
    /// Minor units.
    pub amount: i64,
    /// Lower-case ISO 4217 code.
    pub currency: String,
    /// Whether the amount is a small one for its currency.
    pub small: bool,
    /// When.
    pub at: Timestamp,
}

/// What one key did within a window (this attempt included).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WindowCounts {
    /// Confirmation attempts.
    pub attempts: u32,
    /// Distinct cards among them.
    pub cards: u32,
    /// Attempts the gateway declined.
    pub declines: u32,
    /// Attempts with a small amount.
    pub small: u32,
}

/// A payment intent created and confirmed by one request (`confirm: true`), written in one
/// transaction: the intent as created, its attempt's signals counted under the keys' locks (as
/// [`CheckoutRepository::record_and_count`] does), then what the checks decided on those counts.
#[derive(Debug)]
pub struct CreateAndConfirm<'a> {
    /// The new intent, as created (`requires_confirmation`, attempt 0).
    pub intent: &'a IntentRecord,
    /// Its `payment_intent.created` messages.
    pub created_events: &'a [OutboxMessage],
    /// The attempt's signals and the start of their window (none when the fraud checks are off).
    pub signals: Option<(&'a AttemptSignals, Timestamp)>,
    /// The order to lock with the claim (its id and the total the intent pays): the whole
    /// transaction is undone unless it still has that total.
    pub lock_order: Option<(&'a str, i64)>,
}

/// What the checks decided on an attempt's counts, to be written in the same transaction.
#[derive(Debug)]
pub struct ConfirmPlan {
    /// The fraud decision to keep on the intent (none when the checks are off).
    pub fraud: Option<FraudDecision>,
    /// The claim into `processing`, when the checks let the attempt straight through; none: the
    /// intent stays `requires_confirmation` (blocked, or waiting for the customer's step-up) and
    /// the caller moves it on as a separate confirmation would.
    pub claim: Option<Claim>,
}

/// The claim of a new intent into `processing` (`authorizing`), with the gateway call recorded
/// before it is made.
#[derive(Debug)]
pub struct Claim {
    /// The intent as claimed.
    pub claimed: IntentRecord,
    /// The authorisation about to be asked for.
    pub call: GatewayCallRecord,
    /// The claim's `payment_intent.processing` messages.
    pub events: Vec<OutboxMessage>,
}

/// How a [`CreateAndConfirm`] ended.
#[derive(Debug)]
pub enum CreateAndConfirmOutcome {
    /// Everything was written as planned.
    Written(Box<ConfirmPlan>),
    /// The order's total changed since it was read: nothing was written (not even the intent).
    OrderChanged,
}

/// Decides, on the counts of an attempt's keys (this attempt included), what to write.
pub type PlanConfirm<'a> = dyn Fn(&[(SignalKind, WindowCounts)]) -> Result<ConfirmPlan, StoreError> + Send + Sync + 'a;

/// Storage of the fraud signals.
#[async_trait]
pub trait CheckoutRepository: Send + Sync + std::fmt::Debug {
    /// Records the attempt's signals (once per intent, attempt and kind: a repeat changes
    /// nothing) and counts, per kind of this attempt, what its key did since `since`, in one
    /// transaction that holds each key's lock until it commits: of racing attempts of a key,
    /// each later one sees every earlier one, so a limit lets exactly as many through.
    async fn record_and_count(
        &self,
        attempt: &AttemptSignals,
        since: Timestamp,
    ) -> Result<Vec<(SignalKind, WindowCounts)>, StoreError>;
    /// Writes a new intent and its confirmation in one transaction: inserts the intent, records
    /// and counts the attempt's signals under the keys' locks, asks `plan` what the counts mean,
    /// then keeps the fraud decision and, with a claim, moves the intent into `processing` with
    /// the order's lock, the gateway call and both events' messages. An order whose total
    /// changed undoes everything.
    async fn create_and_confirm(
        &self,
        write: &CreateAndConfirm<'_>,
        plan: &PlanConfirm<'_>,
    ) -> Result<CreateAndConfirmOutcome, StoreError>;
    /// Marks an attempt as declined by the gateway: the intent's latest checked attempt up to
    /// `attempt` (an authorisation resumed after 3-D Secure is a new attempt of the same check).
    async fn mark_declined(&self, intent: &str, attempt: u32) -> Result<(), StoreError>;
    /// The client of the intent's latest checked attempt up to `attempt`, as its signals recorded
    /// it: `(address, device)`, each if the shop named it.
    async fn attempt_client(&self, intent: &str, attempt: u32) -> Result<(Option<String>, Option<String>), StoreError>;
    /// Keeps the fraud decision (JSON text) on an intent.
    async fn set_fraud_decision(&self, intent: &str, decision: &str) -> Result<(), StoreError>;
    /// Intents of one customer in a data space, newest first (the customer's own payments).
    async fn customer_intents(
        &self,
        page: crate::ports::payments::Page<'_>,
        customer: &str,
    ) -> Result<Vec<crate::ports::payments::IntentRecord>, StoreError>;
    /// Deletes up to `limit` signals recorded before `before` (older than any window counts);
    /// returns how many.
    async fn purge_signals(&self, before: Timestamp, limit: u32) -> Result<u64, StoreError>;
}
