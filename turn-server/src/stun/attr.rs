//! Attribute type numbers (IANA "STUN Attributes" registry) and the
//! comprehension rules of RFC 8489 §14.

/// MAPPED-ADDRESS (RFC 8489 §14.1).
pub const MAPPED_ADDRESS: u16 = 0x0001;
/// USERNAME (RFC 8489 §14.3).
pub const USERNAME: u16 = 0x0006;
/// MESSAGE-INTEGRITY (RFC 8489 §14.5).
pub const MESSAGE_INTEGRITY: u16 = 0x0008;
/// ERROR-CODE (RFC 8489 §14.8).
pub const ERROR_CODE: u16 = 0x0009;
/// UNKNOWN-ATTRIBUTES (RFC 8489 §14.13).
pub const UNKNOWN_ATTRIBUTES: u16 = 0x000A;
/// CHANNEL-NUMBER (RFC 8656 §18.1).
pub const CHANNEL_NUMBER: u16 = 0x000C;
/// LIFETIME (RFC 8656 §18.2).
pub const LIFETIME: u16 = 0x000D;
/// XOR-PEER-ADDRESS (RFC 8656 §18.3).
pub const XOR_PEER_ADDRESS: u16 = 0x0012;
/// DATA (RFC 8656 §18.4).
pub const DATA: u16 = 0x0013;
/// REALM (RFC 8489 §14.9).
pub const REALM: u16 = 0x0014;
/// NONCE (RFC 8489 §14.10).
pub const NONCE: u16 = 0x0015;
/// XOR-RELAYED-ADDRESS (RFC 8656 §18.5).
pub const XOR_RELAYED_ADDRESS: u16 = 0x0016;
/// REQUESTED-ADDRESS-FAMILY (RFC 8656 §18.6).
pub const REQUESTED_ADDRESS_FAMILY: u16 = 0x0017;
/// EVEN-PORT (RFC 8656 §18.7).
pub const EVEN_PORT: u16 = 0x0018;
/// REQUESTED-TRANSPORT (RFC 8656 §18.8).
pub const REQUESTED_TRANSPORT: u16 = 0x0019;
/// DONT-FRAGMENT (RFC 8656 §18.9).
pub const DONT_FRAGMENT: u16 = 0x001A;
/// MESSAGE-INTEGRITY-SHA256 (RFC 8489 §14.6).
pub const MESSAGE_INTEGRITY_SHA256: u16 = 0x001C;
/// PASSWORD-ALGORITHM (RFC 8489 §14.12).
pub const PASSWORD_ALGORITHM: u16 = 0x001D;
/// USERHASH (RFC 8489 §14.4).
pub const USERHASH: u16 = 0x001E;
/// XOR-MAPPED-ADDRESS (RFC 8489 §14.2).
pub const XOR_MAPPED_ADDRESS: u16 = 0x0020;
/// RESERVATION-TOKEN (RFC 8656 §18.10).
pub const RESERVATION_TOKEN: u16 = 0x0022;
/// PRIORITY (RFC 8445 ICE).
pub const PRIORITY: u16 = 0x0024;
/// USE-CANDIDATE (RFC 8445 ICE).
pub const USE_CANDIDATE: u16 = 0x0025;
/// ADDITIONAL-ADDRESS-FAMILY (RFC 8656 §18.11).
pub const ADDITIONAL_ADDRESS_FAMILY: u16 = 0x8000;
/// ADDRESS-ERROR-CODE (RFC 8656 §18.12).
pub const ADDRESS_ERROR_CODE: u16 = 0x8001;
/// PASSWORD-ALGORITHMS (RFC 8489 §14.11).
pub const PASSWORD_ALGORITHMS: u16 = 0x8002;
/// ALTERNATE-DOMAIN (RFC 8489 §14.16).
pub const ALTERNATE_DOMAIN: u16 = 0x8003;
/// ICMP (RFC 8656 §18.13).
pub const ICMP: u16 = 0x8004;
/// SOFTWARE (RFC 8489 §14.14).
pub const SOFTWARE: u16 = 0x8022;
/// ALTERNATE-SERVER (RFC 8489 §14.15).
pub const ALTERNATE_SERVER: u16 = 0x8023;
/// FINGERPRINT (RFC 8489 §14.7).
pub const FINGERPRINT: u16 = 0x8028;
/// ICE-CONTROLLED (RFC 8445 ICE).
pub const ICE_CONTROLLED: u16 = 0x8029;
/// ICE-CONTROLLING (RFC 8445 ICE).
pub const ICE_CONTROLLING: u16 = 0x802A;

/// Types 0x0000..=0x7FFF are comprehension-required: a request carrying one
/// the agent does not understand is answered with 420 (RFC 8489 §14).
pub const fn is_comprehension_required(attr: u16) -> bool {
    attr < 0x8000
}

/// The comprehension-required attributes this codec understands.
///
/// RFC 6062's CONNECTION-ID is deliberately absent (TCP allocations are not
/// implemented, so a request carrying it gets 420). The ICE attributes
/// PRIORITY and USE-CANDIDATE are listed because a Binding request from an
/// ICE agent (RFC 5769's sample request carries PRIORITY) is answerable
/// without acting on them.
pub const fn is_understood(attr: u16) -> bool {
    matches!(
        attr,
        MAPPED_ADDRESS
            | USERNAME
            | MESSAGE_INTEGRITY
            | ERROR_CODE
            | UNKNOWN_ATTRIBUTES
            | CHANNEL_NUMBER
            | LIFETIME
            | XOR_PEER_ADDRESS
            | DATA
            | REALM
            | NONCE
            | XOR_RELAYED_ADDRESS
            | REQUESTED_ADDRESS_FAMILY
            | EVEN_PORT
            | REQUESTED_TRANSPORT
            | DONT_FRAGMENT
            | MESSAGE_INTEGRITY_SHA256
            | PASSWORD_ALGORITHM
            | USERHASH
            | XOR_MAPPED_ADDRESS
            | RESERVATION_TOKEN
            | PRIORITY
            | USE_CANDIDATE
    ) || !is_comprehension_required(attr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comprehension_ranges() {
        assert!(is_comprehension_required(0x0000));
        assert!(is_comprehension_required(0x7FFF));
        assert!(!is_comprehension_required(0x8000));
        assert!(is_understood(LIFETIME));
        assert!(is_understood(0xC001), "optional types never need 420");
        assert!(!is_understood(0x002A), "CONNECTION-ID (RFC 6062)");
        assert!(!is_understood(0x0003), "RFC 3489 CHANGE-REQUEST");
    }
}
