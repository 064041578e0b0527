//! Merchants: the tenants of a deployment. Every object belongs to exactly one merchant, and no
//! query crosses merchants. Must never: answer one merchant's request with another's data.

use serde::Serialize;
use strongroom_types::{Timestamp, define_id};

define_id!(MerchantId, MerchantKind, "mer");

/// A merchant (tenant).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Merchant {
    /// Its id.
    pub id: MerchantId,
    /// Display name.
    pub name: String,
    /// When it was created.
    pub created_at: Timestamp,
}
