//! Channel bindings (RFC 8656 §12): a 2-byte number standing for a peer
//! transport address, so data can travel in 4-byte ChannelData headers
//! instead of 36-byte Send/Data indications.
//!
//! Rules enforced by the table: numbers are 0x4000–0x7FFE (RFC 5766's
//! range, which older clients such as coturn's use; RFC 8656 narrowed it to
//! 0x4FFF); within an
//! allocation a channel is bound to one peer and a peer to one channel —
//! rebinding either to something else is 400 Bad Request, binding the same
//! pair again refreshes it (600 s) together with the peer's permission.
//! Bindings cannot be deleted, only expire. (RFC 8656 asks the *client* to
//! wait 5 minutes after expiry before reusing a number or peer elsewhere;
//! the server needs no state for that.)
//!
//! Two indexes serve the two directions in O(1): `(5-tuple, number)` for
//! ChannelData from the client and `(relay, peer)` for datagrams from the
//! peer.

use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::time::Duration;

use crate::allocation::AllocId;

/// Valid channel numbers (RFC 8656 §12).
pub const CHANNEL_NUMBERS: RangeInclusive<u16> = 0x4000..=0x7FFE;

/// A channel binding lasts 10 minutes unless refreshed.
pub const CHANNEL_LIFETIME: Duration = Duration::from_secs(600);

/// Default cap on channels per allocation.
pub const DEFAULT_MAX_CHANNELS: usize = 64;

/// Whether `number` may be bound.
pub fn is_valid_channel_number(number: u16) -> bool {
    CHANNEL_NUMBERS.contains(&number)
}

/// A binding as seen from the client side (index by 5-tuple and number).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Channel {
    pub(crate) alloc: AllocId,
    /// The peer transport address (canonical form).
    pub(crate) peer: SocketAddr,
    /// Expiry, in table milliseconds (collected like permissions).
    pub(crate) expires: u64,
}

/// A binding as seen from the peer side (index by relay and peer).
#[derive(Clone, Copy, Debug)]
pub(crate) struct PeerChannel {
    pub(crate) number: u16,
    /// Same as the [`Channel`]'s, kept here so the peer-to-client path needs
    /// no second lookup.
    pub(crate) expires: u64,
}
