//! The tamper-evident audit log: an RFC 6962 Merkle tree over every security-relevant event, with
//! signed checkpoints. See docs/audit-log.md for the exact leaf encoding.

pub mod checkpoint;
pub mod event;
pub mod log;
pub mod merkle;
pub mod verify;
