//! The payment intent's state machine: one total function, [`next`], from a state and an event
//! to the next state, or `None` when the event is not allowed there.
//!
//! `processing` is three states inside (authorising, capturing, voiding), so the answer a
//! gateway gives can only move the intent the way the call it answers was meant to; the API
//! shows all three as `processing`, and the store keeps which one in `pending_operation`.
//! Must never: accept an event outside the table below (the property test checks it against a
//! separately written list), or let `succeeded` or `canceled` move again.

/// Where an intent stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// No card yet.
    RequiresPaymentMethod,
    /// A card, not yet confirmed.
    RequiresConfirmation,
    /// The customer must authenticate (3-D Secure); confirm again afterwards.
    RequiresAction,
    /// An authorisation is with the gateway.
    Authorizing,
    /// Authorised, waiting for a capture (manual capture).
    RequiresCapture,
    /// A capture is with the gateway.
    Capturing,
    /// A void (cancel of an authorisation) is with the gateway.
    Voiding,
    /// Captured (terminal; refunds do not change it).
    Succeeded,
    /// Canceled (terminal).
    Canceled,
}

/// How an authorised amount is captured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CaptureMethod {
    /// With the authorisation.
    Automatic,
    /// By a later `capture` call.
    Manual,
}

impl CaptureMethod {
    /// Stable name.
    pub const fn as_str(self) -> &'static str {
        match self {
            CaptureMethod::Automatic => "automatic",
            CaptureMethod::Manual => "manual",
        }
    }

    /// Parses a stable name.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "automatic" => Some(CaptureMethod::Automatic),
            "manual" => Some(CaptureMethod::Manual),
            _ => None,
        }
    }
}

/// What can happen to an intent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Event {
    /// A card is attached (or replaced before confirmation).
    AttachPaymentMethod,
    /// The shop confirms: an authorisation is asked for (again after 3-D Secure).
    Confirm,
    /// The gateway authorised; with automatic capture it also captured.
    Authorized {
        /// Whether the gateway captured with the authorisation.
        captured: bool,
    },
    /// The gateway needs the customer to authenticate.
    ActionRequired,
    /// The gateway declined.
    Declined,
    /// The shop captures.
    Capture,
    /// The gateway captured.
    Captured,
    /// The gateway refused the capture; the authorisation stands.
    CaptureFailed,
    /// The shop cancels.
    Cancel,
    /// The gateway voided the authorisation.
    Voided,
    /// The gateway refused the void; the authorisation stands.
    VoidFailed,
    /// strongroom's fraud checks blocked the confirmation; the gateway was not asked.
    FraudBlocked,
}

impl State {
    /// Every state.
    pub const ALL: [State; 9] = [
        State::RequiresPaymentMethod,
        State::RequiresConfirmation,
        State::RequiresAction,
        State::Authorizing,
        State::RequiresCapture,
        State::Capturing,
        State::Voiding,
        State::Succeeded,
        State::Canceled,
    ];

    /// The status the API shows (and the store keeps).
    pub const fn status(self) -> &'static str {
        match self {
            State::RequiresPaymentMethod => "requires_payment_method",
            State::RequiresConfirmation => "requires_confirmation",
            State::RequiresAction => "requires_action",
            State::Authorizing | State::Capturing | State::Voiding => "processing",
            State::RequiresCapture => "requires_capture",
            State::Succeeded => "succeeded",
            State::Canceled => "canceled",
        }
    }

    /// The gateway call a `processing` intent waits for.
    pub const fn pending_operation(self) -> Option<&'static str> {
        match self {
            State::Authorizing => Some("authorize"),
            State::Capturing => Some("capture"),
            State::Voiding => Some("cancel"),
            State::RequiresPaymentMethod
            | State::RequiresConfirmation
            | State::RequiresAction
            | State::RequiresCapture
            | State::Succeeded
            | State::Canceled => None,
        }
    }

    /// The state of a stored status and pending operation.
    pub fn from_stored(status: &str, pending: Option<&str>) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.status() == status && s.pending_operation() == pending)
    }

    /// Whether nothing can happen to it any more.
    pub const fn is_terminal(self) -> bool {
        matches!(self, State::Succeeded | State::Canceled)
    }
}

/// The state after `event` in `from`, or `None` when the event is not allowed there.
pub const fn next(from: State, event: Event) -> Option<State> {
    use Event as E;
    use State as S;
    match (from, event) {
        (S::RequiresPaymentMethod | S::RequiresConfirmation, E::AttachPaymentMethod) => Some(S::RequiresConfirmation),
        (S::RequiresConfirmation | S::RequiresAction, E::Confirm) => Some(S::Authorizing),
        (S::Authorizing, E::Authorized { captured: true }) => Some(S::Succeeded),
        (S::Authorizing, E::Authorized { captured: false }) => Some(S::RequiresCapture),
        (S::Authorizing, E::ActionRequired) => Some(S::RequiresAction),
        (S::Authorizing, E::Declined) => Some(S::RequiresPaymentMethod),
        (S::RequiresCapture, E::Capture) => Some(S::Capturing),
        (S::Capturing, E::Captured) => Some(S::Succeeded),
        (S::Capturing, E::CaptureFailed) => Some(S::RequiresCapture),
        (S::RequiresPaymentMethod | S::RequiresConfirmation | S::RequiresAction, E::Cancel) => Some(S::Canceled),
        (S::RequiresCapture, E::Cancel) => Some(S::Voiding),
        (S::Voiding, E::Voided) => Some(S::Canceled),
        (S::Voiding, E::VoidFailed) => Some(S::RequiresCapture),
        (S::RequiresConfirmation, E::FraudBlocked) => Some(S::RequiresPaymentMethod),
        (
            S::RequiresPaymentMethod
            | S::RequiresConfirmation
            | S::RequiresAction
            | S::Authorizing
            | S::RequiresCapture
            | S::Capturing
            | S::Voiding
            | S::Succeeded
            | S::Canceled,
            E::AttachPaymentMethod
            | E::Confirm
            | E::Authorized { .. }
            | E::ActionRequired
            | E::Declined
            | E::Capture
            | E::Captured
            | E::CaptureFailed
            | E::Cancel
            | E::Voided
            | E::VoidFailed
            | E::FraudBlocked,
        ) => None,
    }
}

/// The webhook event (and audit action) of arriving in `to` by `event`, if the catalogue has one.
pub const fn event_type(event: Event, to: State) -> Option<&'static str> {
    match (event, to) {
        (Event::Confirm | Event::Capture | Event::Cancel, State::Authorizing | State::Capturing | State::Voiding) => {
            Some("payment_intent.processing")
        }
        (_, State::RequiresAction) => Some("payment_intent.requires_action"),
        (Event::Authorized { .. }, State::RequiresCapture) => Some("payment_intent.amount_capturable_updated"),
        (_, State::Succeeded) => Some("payment_intent.succeeded"),
        (Event::Declined | Event::FraudBlocked, _) => Some("payment_intent.payment_failed"),
        (_, State::Canceled) => Some("payment_intent.canceled"),
        _ => None,
    }
}

/// The audit action of `event`.
pub const fn audit_action(event: Event) -> &'static str {
    match event {
        Event::AttachPaymentMethod => "payment_intent.payment_method_attached",
        Event::Confirm => "payment_intent.confirmed",
        Event::Authorized { captured: true } => "payment_intent.succeeded",
        Event::Authorized { captured: false } => "payment_intent.authorized",
        Event::ActionRequired => "payment_intent.requires_action",
        Event::Declined => "payment_intent.payment_failed",
        Event::Capture => "payment_intent.capture_requested",
        Event::Captured => "payment_intent.captured",
        Event::CaptureFailed => "payment_intent.capture_failed",
        Event::Cancel => "payment_intent.cancel_requested",
        Event::Voided => "payment_intent.canceled",
        Event::VoidFailed => "payment_intent.cancel_failed",
        Event::FraudBlocked => "payment_intent.fraud_blocked",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const EVENTS: [Event; 13] = [
        Event::AttachPaymentMethod,
        Event::Confirm,
        Event::Authorized { captured: true },
        Event::Authorized { captured: false },
        Event::ActionRequired,
        Event::Declined,
        Event::Capture,
        Event::Captured,
        Event::CaptureFailed,
        Event::Cancel,
        Event::Voided,
        Event::VoidFailed,
        Event::FraudBlocked,
    ];

    /// The legal edges, written out apart from [`next`] (issue 14's state diagram).
    const LEGAL: &[(State, Event, State)] = &[
        (State::RequiresPaymentMethod, Event::AttachPaymentMethod, State::RequiresConfirmation),
        (State::RequiresConfirmation, Event::AttachPaymentMethod, State::RequiresConfirmation),
        (State::RequiresConfirmation, Event::Confirm, State::Authorizing),
        (State::RequiresAction, Event::Confirm, State::Authorizing),
        (State::Authorizing, Event::Authorized { captured: true }, State::Succeeded),
        (State::Authorizing, Event::Authorized { captured: false }, State::RequiresCapture),
        (State::Authorizing, Event::ActionRequired, State::RequiresAction),
        (State::Authorizing, Event::Declined, State::RequiresPaymentMethod),
        (State::RequiresCapture, Event::Capture, State::Capturing),
        (State::Capturing, Event::Captured, State::Succeeded),
        (State::Capturing, Event::CaptureFailed, State::RequiresCapture),
        (State::RequiresPaymentMethod, Event::Cancel, State::Canceled),
        (State::RequiresConfirmation, Event::Cancel, State::Canceled),
        (State::RequiresAction, Event::Cancel, State::Canceled),
        (State::RequiresCapture, Event::Cancel, State::Voiding),
        (State::Voiding, Event::Voided, State::Canceled),
        (State::Voiding, Event::VoidFailed, State::RequiresCapture),
        (State::RequiresConfirmation, Event::FraudBlocked, State::RequiresPaymentMethod),
    ];

    fn state() -> impl Strategy<Value = State> {
        proptest::sample::select(State::ALL.to_vec())
    }

    fn event() -> impl Strategy<Value = Event> {
        proptest::sample::select(EVENTS.to_vec())
    }

    proptest! {
        #[test]
        fn only_the_legal_edges_are_accepted(from in state(), event in event()) {
            let expected = LEGAL.iter().find(|(f, e, _)| *f == from && *e == event).map(|(_, _, to)| *to);
            prop_assert_eq!(next(from, event), expected);
        }

        #[test]
        fn any_walk_stays_on_legal_edges_and_terminal_states_never_move(events in proptest::collection::vec(event(), 0..40)) {
            let mut at = State::RequiresPaymentMethod;
            for event in events {
                match next(at, event) {
                    Some(to) => {
                        prop_assert!(!at.is_terminal(), "{at:?} moved");
                        prop_assert!(LEGAL.contains(&(at, event, to)));
                        at = to;
                    }
                    None => prop_assert!(!LEGAL.iter().any(|(f, e, _)| *f == at && *e == event)),
                }
            }
        }
    }

    #[test]
    fn every_state_round_trips_through_the_store() {
        for state in State::ALL {
            assert_eq!(State::from_stored(state.status(), state.pending_operation()), Some(state));
        }
        assert_eq!(State::from_stored("processing", None), None);
        assert_eq!(State::from_stored("paid", None), None);
    }

    #[test]
    fn every_state_is_reachable_and_terminal_states_have_no_exit() {
        for state in State::ALL {
            let reachable = state == State::RequiresPaymentMethod || LEGAL.iter().any(|(_, _, to)| *to == state);
            assert!(reachable, "{state:?}");
            if state.is_terminal() {
                assert!(EVENTS.iter().all(|e| next(state, *e).is_none()), "{state:?}");
            }
        }
    }

    #[test]
    fn transitions_name_catalogue_events() {
        for (from, event, to) in LEGAL {
            if let Some(name) = event_type(*event, *to) {
                assert!(crate::webhooks::EVENT_TYPES.iter().any(|(n, _)| *n == name), "{from:?} {name}");
            }
        }
        assert_eq!(event_type(Event::Declined, State::RequiresPaymentMethod), Some("payment_intent.payment_failed"));
        assert_eq!(
            event_type(Event::Authorized { captured: true }, State::Succeeded),
            Some("payment_intent.succeeded")
        );
    }
}
