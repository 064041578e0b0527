//! The sandbox's test cards, in the manner of Stripe's: the card number decides the outcome.
//! Any other valid number is approved.
//! Must never: hold a real customer's card (these are published test numbers), or keep the number
//! it was asked about.

/// What the sandbox does with a card.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// Approved.
    Approve,
    /// Declined: Stripe's error `code`, its `decline_code`, and a sentence.
    Decline(&'static str, Option<&'static str>, &'static str),
    /// Needs 3-D Secure: a challenge that passes or fails.
    Challenge,
    /// The gateway does it but its answer never arrives (a timeout).
    Timeout,
}

/// The test cards (number, behaviour, what it is for), as docs/payments.md lists them.
pub const TEST_CARDS: &[(&str, Behaviour, &str)] = &[
    ("4242424242424242", Behaviour::Approve, "success"),
    ("5555555555554444", Behaviour::Approve, "success (Mastercard)"),
    (
        "4000000000000002",
        Behaviour::Decline("card_declined", Some("generic_decline"), "the card was declined"),
        "generic decline",
    ),
    (
        "4000000000009995",
        Behaviour::Decline("card_declined", Some("insufficient_funds"), "the card has insufficient funds"),
        "insufficient funds",
    ),
    ("4000000000000069", Behaviour::Decline("expired_card", None, "the card has expired"), "expired card"),
    (
        "4000000000000127",
        Behaviour::Decline("incorrect_cvc", None, "the card's security code is incorrect"),
        "incorrect CVC",
    ),
    ("4000002760003184", Behaviour::Challenge, "requires 3-D Secure"),
    (
        "4000000000000119",
        Behaviour::Decline("processing_error", None, "an error occurred while processing the card"),
        "processing error",
    ),
    ("4000000000001000", Behaviour::Timeout, "the gateway times out (it authorised; the answer is lost)"),
];

/// Declines the sandbox makes whatever the card, as a network would: stored `code[:decline_code]`
/// and the sentence.
const OTHER_DECLINES: &[(&str, &str)] = &[
    (
        "authentication_required",
        "the card needs the customer's authentication (3-D Secure), and the payment was made without them",
    ),
    (
        "card_declined:transaction_not_allowed",
        "a payment without the customer must name the network transaction id of the card's first payment",
    ),
    ("payment_intent_authentication_failure", "the customer did not pass 3-D Secure"),
];

/// What the sandbox does with `number`.
pub fn behaviour(number: &str) -> Behaviour {
    TEST_CARDS.iter().find(|(n, _, _)| *n == number).map_or(Behaviour::Approve, |(_, b, _)| *b)
}

/// The decline of a stored `code[:decline_code]`.
pub fn decline_of(stored: &str) -> (String, Option<String>, &'static str) {
    let (code, decline) = match stored.split_once(':') {
        Some((code, decline)) => (code, Some(decline.to_owned())),
        None => (stored, None),
    };
    let message = TEST_CARDS
        .iter()
        .find_map(|(_, b, _)| match b {
            Behaviour::Decline(c, d, m) if *c == code && d.map(str::to_owned) == decline => Some(*m),
            _ => None,
        })
        .or_else(|| OTHER_DECLINES.iter().find(|(stored_code, _)| *stored_code == stored).map(|(_, m)| *m))
        .unwrap_or("the payment was declined");
    (code.to_owned(), decline, message)
}
