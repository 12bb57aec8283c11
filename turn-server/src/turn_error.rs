//! Errors of the allocation core, each carrying its RFC 8656 error code.

use crate::address_policy::DenyReason;

/// A refused TURN request; [`code`](TurnError::code) and
/// [`reason_phrase`](TurnError::reason_phrase) go into ERROR-CODE.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TurnError {
    /// 400: the request breaks a protocol rule (the detail is for logs).
    #[error("400 Bad Request: {0}")]
    BadRequest(&'static str),
    /// 403: the peer address is denied by policy.
    #[error("403 Forbidden: peer address denied ({0})")]
    Forbidden(DenyReason),
    /// 437: no allocation on this 5-tuple (or one exists and this is a new
    /// Allocate).
    #[error("437 Allocation Mismatch")]
    AllocationMismatch,
    /// 440: the requested relay address family is not offered.
    #[error("440 Address Family not Supported")]
    AddressFamilyNotSupported,
    /// 441: the request's username is not the allocation's.
    #[error("441 Wrong Credentials")]
    WrongCredentials,
    /// 442: REQUESTED-TRANSPORT other than UDP.
    #[error("442 Unsupported Transport Protocol")]
    UnsupportedTransportProtocol,
    /// 443: the peer's family has no relayed address in this allocation.
    #[error("443 Peer Address Family Mismatch")]
    PeerAddressFamilyMismatch,
    /// 486: the user's or the server's allocation quota is used up.
    #[error("486 Allocation Quota Reached")]
    AllocationQuotaReached,
    /// 508: out of ports, permissions, channels or reservation.
    #[error("508 Insufficient Capacity: {0}")]
    InsufficientCapacity(&'static str),
}

impl TurnError {
    /// The numeric ERROR-CODE.
    pub fn code(&self) -> u16 {
        match self {
            Self::BadRequest(_) => 400,
            Self::Forbidden(_) => 403,
            Self::AllocationMismatch => 437,
            Self::AddressFamilyNotSupported => 440,
            Self::WrongCredentials => 441,
            Self::UnsupportedTransportProtocol => 442,
            Self::PeerAddressFamilyMismatch => 443,
            Self::AllocationQuotaReached => 486,
            Self::InsufficientCapacity(_) => 508,
        }
    }

    /// The RFC's reason phrase for the code (what goes on the wire; the
    /// `Display` form adds detail for logs).
    pub fn reason_phrase(&self) -> &'static str {
        match self {
            Self::BadRequest(_) => "Bad Request",
            Self::Forbidden(_) => "Forbidden",
            Self::AllocationMismatch => "Allocation Mismatch",
            Self::AddressFamilyNotSupported => "Address Family not Supported",
            Self::WrongCredentials => "Wrong Credentials",
            Self::UnsupportedTransportProtocol => "Unsupported Transport Protocol",
            Self::PeerAddressFamilyMismatch => "Peer Address Family Mismatch",
            Self::AllocationQuotaReached => "Allocation Quota Reached",
            Self::InsufficientCapacity(_) => "Insufficient Capacity",
        }
    }
}
