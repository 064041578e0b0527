//! The vault: card numbers and personal data, stored only encrypted and referred to by tokens.
//! (Issue 4; so far the card rules.)

pub mod card;
