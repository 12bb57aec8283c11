//! One allocation (RFC 8656 §2.2, §7) and the typed Allocate request and
//! answer.
//!
//! The table stores allocations in a slab; what lives here is the
//! per-allocation state that is not an index: owner, cached session key,
//! relayed addresses (one per family, RFC 6156 dual allocation), expiry,
//! the list of its permissions and channels (for clean-up; the hot-path
//! indexes live in the table) and its bandwidth bucket. It is kept compact:
//! no per-allocation hash maps, inline fixed-size key.
//!
//! DONT-FRAGMENT: we relay UDP only and open one relay socket per relayed
//! address, so the flag is stored and reported back in [`Allocated`]; the
//! I/O shell sets `IP_MTU_DISCOVER = IP_PMTUDISC_DO` (IPv4; IPv6 never
//! fragments in the network) on that socket. A shell that cannot must
//! answer 420 Unknown Attribute instead, as RFC 8656 §7.2 prescribes.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crate::bandwidth::ByteBucket;
use crate::five_tuple::FiveTuple;
use crate::turn_error::TurnError;

/// REQUESTED-TRANSPORT value for UDP, the only relay transport offered
/// (RFC 6062 TCP allocations are not implemented: 442).
pub const TRANSPORT_UDP: u8 = 17;

/// Address family of a relayed or peer address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AddressFamily {
    /// IPv4 (wire value 0x01).
    V4,
    /// IPv6 (wire value 0x02).
    V6,
}

impl AddressFamily {
    /// The family of `ip`.
    pub fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(_) => Self::V4,
            IpAddr::V6(_) => Self::V6,
        }
    }

    /// From REQUESTED-ADDRESS-FAMILY / ADDITIONAL-ADDRESS-FAMILY values.
    pub fn from_wire(value: u8) -> Option<Self> {
        match value {
            0x01 => Some(Self::V4),
            0x02 => Some(Self::V6),
            _ => None,
        }
    }

    /// The attribute value.
    pub fn to_wire(self) -> u8 {
        match self {
            Self::V4 => 0x01,
            Self::V6 => 0x02,
        }
    }

    pub(crate) fn index(self) -> usize {
        match self {
            Self::V4 => 0,
            Self::V6 => 1,
        }
    }
}

/// The long-term key (or any per-session secret) the wire layer derived
/// when the allocation was authenticated, cached so later requests on it
/// verify without a credential lookup. Opaque to the core; up to 32 bytes
/// inline (MD5 keys are 16, SHA-256 keys 32).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SessionKey {
    len: u8,
    bytes: [u8; 32],
}

impl SessionKey {
    /// Maximum key length.
    pub const MAX_LEN: usize = 32;

    /// Copies `key`; `None` if longer than [`SessionKey::MAX_LEN`].
    pub fn from_slice(key: &[u8]) -> Option<Self> {
        let len = u8::try_from(key.len())
            .ok()
            .filter(|l| usize::from(*l) <= Self::MAX_LEN)?;
        let mut bytes = [0u8; 32];
        bytes[..key.len()].copy_from_slice(key);
        Some(Self { len, bytes })
    }

    /// The key bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

impl fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionKey(<{} bytes>)", self.len)
    }
}

/// RESERVATION-TOKEN value (8 bytes from the CSPRNG).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ReservationToken(pub [u8; 8]);

/// The relayed transport addresses of an allocation, at most one per family.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RelayAddrs {
    /// The IPv4 relayed address.
    pub v4: Option<SocketAddr>,
    /// The IPv6 relayed address.
    pub v6: Option<SocketAddr>,
}

impl RelayAddrs {
    /// The relayed address of `family`.
    pub fn get(&self, family: AddressFamily) -> Option<SocketAddr> {
        match family {
            AddressFamily::V4 => self.v4,
            AddressFamily::V6 => self.v6,
        }
    }

    pub(crate) fn set(&mut self, family: AddressFamily, addr: Option<SocketAddr>) {
        match family {
            AddressFamily::V4 => self.v4 = addr,
            AddressFamily::V6 => self.v6 = addr,
        }
    }

    /// The relayed address serving a peer at `peer_ip`.
    pub fn for_peer(&self, peer_ip: IpAddr) -> Option<SocketAddr> {
        self.get(AddressFamily::of(peer_ip))
    }

    /// Both addresses, IPv4 first.
    pub fn iter(&self) -> impl Iterator<Item = SocketAddr> {
        self.v4.into_iter().chain(self.v6)
    }

    /// How many addresses (1 or 2 for a live allocation).
    pub fn len(&self) -> usize {
        usize::from(self.v4.is_some()) + usize::from(self.v6.is_some())
    }

    /// No address at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The typed content of an authenticated Allocate request.
#[derive(Clone, Copy, Debug)]
pub struct AllocateRequest<'a> {
    /// Transaction ID, remembered so a retransmitted Allocate gets the same
    /// success answer instead of 437.
    pub transaction_id: [u8; 12],
    /// USERNAME as authenticated; later requests must carry the same (441).
    pub username: &'a str,
    /// Whom the quotas count against
    /// ([`crate::credentials::Resolved::quota_user`]).
    pub quota_user: &'a str,
    /// The key that verified this request, cached for later ones.
    pub key: SessionKey,
    /// The credentials' generation `key` was verified under.
    pub key_generation: u64,
    /// REQUESTED-TRANSPORT protocol number (17 = UDP).
    pub requested_transport: u8,
    /// REQUESTED-ADDRESS-FAMILY (absent = IPv4).
    pub requested_family: Option<AddressFamily>,
    /// ADDITIONAL-ADDRESS-FAMILY (only IPv6 is valid) for a dual allocation.
    pub additional_family: Option<AddressFamily>,
    /// LIFETIME in seconds, if present.
    pub lifetime: Option<u32>,
    /// EVEN-PORT, with its R bit: `Some(true)` also reserves port + 1.
    pub even_port: Option<bool>,
    /// RESERVATION-TOKEN from an earlier EVEN-PORT R=1 allocation.
    pub reservation_token: Option<ReservationToken>,
    /// DONT-FRAGMENT present.
    pub dont_fragment: bool,
}

impl<'a> AllocateRequest<'a> {
    /// A plain UDP/IPv4 request with no optional attribute.
    pub fn new(transaction_id: [u8; 12], username: &'a str, key: SessionKey) -> Self {
        Self {
            transaction_id,
            username,
            quota_user: username,
            key,
            key_generation: 0,
            requested_transport: TRANSPORT_UDP,
            requested_family: None,
            additional_family: None,
            lifetime: None,
            even_port: None,
            reservation_token: None,
            dont_fragment: false,
        }
    }
}

/// The success answer to Allocate. The shell binds a socket on every relayed
/// address (calling [`crate::table::AllocationTable::bind_failed`] if it
/// cannot) and then answers with XOR-RELAYED-ADDRESS per address, LIFETIME,
/// RESERVATION-TOKEN and ADDRESS-ERROR-CODE as given here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Allocated {
    /// The relayed addresses.
    pub relays: RelayAddrs,
    /// Granted lifetime (whole seconds).
    pub lifetime: Duration,
    /// Token for the reserved port + 1 (EVEN-PORT R=1).
    pub reservation_token: Option<ReservationToken>,
    /// The address that token reserves. The table marks the port taken
    /// but no socket holds it until it is claimed (possibly by another
    /// worker), so the shell should check now that it can be bound (open
    /// and close a socket) and report a failure to
    /// [`crate::table::AllocationTable::bind_failed`] like a relayed
    /// address's: the pair then moves to ports that work.
    pub reserved: Option<SocketAddr>,
    /// A dual allocation that got only one family: the family that failed
    /// and why (440 or 508), for ADDRESS-ERROR-CODE.
    pub address_error: Option<(AddressFamily, TurnError)>,
    /// The client asked for DONT-FRAGMENT: set DF on the relay sockets.
    pub dont_fragment: bool,
    /// This answers a retransmitted Allocate (same 5-tuple, transaction
    /// and user): the allocation existed already and its relay sockets are
    /// bound. The shell must not bind them again (that would fail and send
    /// it to [`crate::table::AllocationTable::bind_failed`]); it only
    /// repeats the answer.
    pub retransmission: bool,
}

/// Slab handle: index plus generation, so a stale timer or index entry can
/// never reach a newer allocation that reused the slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct AllocId {
    pub(crate) index: u32,
    pub(crate) generation: u32,
}

/// One allocation's own state.
#[derive(Debug)]
pub struct Allocation {
    pub(crate) tuple: FiveTuple,
    pub(crate) username: Box<str>,
    /// `None` when equal to `username` (the common case): saves a string.
    pub(crate) quota_user: Option<Box<str>>,
    pub(crate) key: SessionKey,
    pub(crate) key_generation: u64,
    pub(crate) relays: RelayAddrs,
    /// Expiry, table milliseconds.
    pub(crate) expires: u64,
    /// Time of this allocation's live timer entry: at or before the
    /// earliest of `expires` and its permissions' and channels' expiries.
    pub(crate) scheduled: u64,
    /// Peer IPs with a permission (each keyed in the table with the relay
    /// of its family).
    pub(crate) permissions: Vec<IpAddr>,
    /// Bound channel numbers.
    pub(crate) channels: Vec<u16>,
    pub(crate) bucket: ByteBucket,
    pub(crate) transaction_id: [u8; 12],
    /// Reservation created by this allocation's EVEN-PORT R=1, if any.
    pub(crate) reservation: Option<ReservationToken>,
    /// Port constraints to respect when re-picking after a bind failure.
    pub(crate) even_port: bool,
    pub(crate) from_reservation: bool,
    pub(crate) dont_fragment: bool,
}

impl Allocation {
    /// The 5-tuple it lives on.
    pub fn tuple(&self) -> &FiveTuple {
        &self.tuple
    }

    /// The authenticated owner.
    pub fn username(&self) -> &str {
        &self.username
    }

    /// Whom the quotas count it against.
    pub fn quota_user(&self) -> &str {
        self.quota_user.as_deref().unwrap_or(&self.username)
    }

    /// The cached key to verify later requests with.
    pub fn session_key(&self) -> &SessionKey {
        &self.key
    }

    /// The credentials' generation the cached key was verified under.
    pub fn key_generation(&self) -> u64 {
        self.key_generation
    }

    /// Its relayed addresses.
    pub fn relays(&self) -> RelayAddrs {
        self.relays
    }

    /// Installed permissions.
    pub fn permission_count(&self) -> usize {
        self.permissions.len()
    }

    /// Bound channels.
    pub fn channel_count(&self) -> usize {
        self.channels.len()
    }

    /// DONT-FRAGMENT was requested.
    pub fn dont_fragment(&self) -> bool {
        self.dont_fragment
    }

    /// Heap bytes owned by this allocation beyond `size_of::<Allocation>()`
    /// (the table's index entries are accounted separately).
    pub fn heap_bytes(&self) -> usize {
        self.username.len()
            + self.quota_user.as_ref().map_or(0, |q| q.len())
            + self.permissions.capacity() * std::mem::size_of::<IpAddr>()
            + self.channels.capacity() * std::mem::size_of::<u16>()
    }
}

/// RFC 8656 §7.2/§7.3 lifetime rule: the requested value capped at the
/// maximum, but never below the default.
pub fn granted_lifetime(requested: Option<u32>, default: Duration, max: Duration) -> Duration {
    match requested {
        None => default,
        Some(secs) => Duration::from_secs(u64::from(secs)).min(max).max(default),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifetime_rule() {
        let d = Duration::from_secs(600);
        let m = Duration::from_secs(3600);
        assert_eq!(granted_lifetime(None, d, m), d);
        assert_eq!(granted_lifetime(Some(30), d, m), d);
        assert_eq!(
            granted_lifetime(Some(1200), d, m),
            Duration::from_secs(1200)
        );
        assert_eq!(granted_lifetime(Some(u32::MAX), d, m), m);
    }

    #[test]
    fn session_key_bounds() {
        assert_eq!(
            SessionKey::from_slice(&[1; 16]).map(|k| k.as_bytes().len()),
            Some(16)
        );
        assert!(SessionKey::from_slice(&[1; 32]).is_some());
        assert!(SessionKey::from_slice(&[1; 33]).is_none());
        assert!(!format!("{:?}", SessionKey::from_slice(&[0xab; 16])).contains("ab"));
    }

    #[test]
    fn families() {
        assert_eq!(AddressFamily::from_wire(1), Some(AddressFamily::V4));
        assert_eq!(AddressFamily::from_wire(2), Some(AddressFamily::V6));
        assert_eq!(AddressFamily::from_wire(3), None);
        assert_eq!(AddressFamily::V6.to_wire(), 2);
    }
}
