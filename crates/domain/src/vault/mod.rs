//! The vault: card numbers and personal data, stored only encrypted and referred to by tokens.
//!
//! `card` (card number rules), `countries` (ISO 3166-1 alpha-2 codes), `values` (every kind of
//! value: validation, masking, normalization), `keys` (KMS root → versioned key-encryption keys → data keys, rotation and
//! rewrap), `tokens` (the service: tokenize, search, reveal, delete, erase, purge), `cvc` (card
//! verification codes, in memory only), `writer` (group commit of token inserts).

pub mod card;
pub mod countries;
pub mod cvc;
pub mod fingerprints;
pub mod keys;
pub mod tokens;
pub mod values;
pub mod writer;
