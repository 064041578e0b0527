//! The storage backend's durability barrier: for a reader about to show what it read.
//! Must never: let a caller through before every commit it could have read is on disk.

use async_trait::async_trait;

use crate::StoreError;

/// Whether what a reader saw will survive a crash.
///
/// A backend may make a commit visible to other connections a moment before it is on disk (SQLite
/// here commits a group and syncs its log on another thread, answering the group's writes only
/// after the sync). A write is never acknowledged before it is durable, and a later write's sync
/// covers every earlier commit. What remains is a reader that answers a request with what it
/// read: the API's responses wait here, so no client is shown a row that a crash takes back.
/// (The outbox needs no wait: its claim of the messages it sends is itself a durable write.)
#[async_trait]
pub trait Durability: Send + Sync {
    /// Returns once every commit begun before the call is on disk (at once when none is pending,
    /// and always at once on a backend whose commits are durable before they are visible); fails
    /// when the backend could not make its commits durable.
    async fn settled(&self) -> Result<(), StoreError>;
}
