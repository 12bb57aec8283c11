//! Permissions (RFC 8656 §9): which peer IPs may talk through a relay.
//!
//! A permission is keyed by the relayed address and the peer's IP (never
//! its port) and lives 300 s unless refreshed by CreatePermission or
//! ChannelBind; it cannot be deleted explicitly. The table keeps them in one
//! hash map keyed by `(relay address, peer IP)`, so the check on every
//! datagram from a peer is a single O(1) lookup; the allocation keeps only
//! the list of its peer IPs (17 bytes each) to clean up when it goes.

use std::time::Duration;

use crate::allocation::AllocId;

/// RFC 8656 §9: "The Permission Lifetime MUST be 300 seconds".
pub const PERMISSION_LIFETIME: Duration = Duration::from_secs(300);

/// Default cap on permissions per allocation (a call needs a handful: one
/// per remote candidate IP).
pub const DEFAULT_MAX_PERMISSIONS: usize = 64;

/// One installed permission, stored in the table's index.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Permission {
    /// The allocation it belongs to.
    pub(crate) alloc: AllocId,
    /// Expiry, in table milliseconds. Collected by the owning allocation's
    /// timer, which always fires at or before the earliest expiry among the
    /// allocation and its permissions and channels (see `table`).
    pub(crate) expires: u64,
}
