//! Storage of the checkout rules: the fraud signals of each confirmation attempt and the counts
//! over a window that the fraud rules read, and the fraud decision kept on an intent.
//! Must never: count from memory (the counts must hold across nodes and restarts), or count one
//! attempt twice.

use async_trait::async_trait;
use strongroom_types::Timestamp;

use crate::StoreError;
use crate::merchants::MerchantId;
use crate::modes::Mode;

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
    /// Marks an attempt as declined by the gateway.
    async fn mark_declined(&self, intent: &str, attempt: u32) -> Result<(), StoreError>;
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
