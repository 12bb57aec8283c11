//! Transport-address attributes (RFC 8489 §14.1, §14.2, §14.15; RFC 8656
//! §18.3, §18.5): MAPPED-ADDRESS and ALTERNATE-SERVER in the clear, and the
//! XOR-* forms, whose port is XORed with the top of the magic cookie and
//! whose address is XORed with the cookie (IPv4) or cookie ‖ transaction id
//! (IPv6) so that NAT "helpers" rewriting addresses in payloads miss them.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use super::super::attr;
use super::super::error::AttrError;
use super::super::header::{TransactionId, MAGIC_COOKIE};
use super::Attribute;

const FAMILY_V4: u8 = 0x01;
const FAMILY_V6: u8 = 0x02;
/// The port is XORed with the cookie's most significant 16 bits.
const PORT_MASK: u16 = (MAGIC_COOKIE >> 16) as u16;

/// The 128 bits an IPv6 address is XORed with: cookie ‖ transaction id.
fn v6_mask(tid: &TransactionId) -> u128 {
    let mut mask = [0u8; 16];
    mask[..4].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
    mask[4..].copy_from_slice(tid);
    u128::from_be_bytes(mask)
}

/// Decodes `0 | family | port | address`, XORing when `xor` holds the
/// transaction id. Inlined: returned through memory, the `SocketAddr`
/// costs store-forwarding stalls on the Send-indication path.
#[inline]
fn decode(attr: u16, value: &[u8], xor: Option<&TransactionId>) -> Result<SocketAddr, AttrError> {
    let bad_len = AttrError::BadLength {
        attr,
        len: value.len(),
    };
    let Some((head, rest)) = value.split_first_chunk::<4>() else {
        return Err(bad_len);
    };
    // The first byte is reserved and ignored by receivers (RFC 8489 §14.1).
    let [_, family, p0, p1] = *head;
    let mut port = u16::from_be_bytes([p0, p1]);
    if xor.is_some() {
        port ^= PORT_MASK;
    }
    match family {
        FAMILY_V4 => {
            let ip: [u8; 4] = rest.try_into().map_err(|_| bad_len)?;
            let mut ip = u32::from_be_bytes(ip);
            if xor.is_some() {
                ip ^= MAGIC_COOKIE;
            }
            Ok(SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from(ip), port)))
        }
        FAMILY_V6 => {
            let ip: [u8; 16] = rest.try_into().map_err(|_| bad_len)?;
            let mut ip = u128::from_be_bytes(ip);
            if let Some(tid) = xor {
                ip ^= v6_mask(tid);
            }
            Ok(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(ip),
                port,
                0,
                0,
            )))
        }
        family => Err(AttrError::UnknownFamily { attr, family }),
    }
}

/// Encoded value length: 8 for IPv4, 20 for IPv6.
pub(crate) fn value_len(addr: &SocketAddr) -> usize {
    match addr {
        SocketAddr::V4(_) => 8,
        SocketAddr::V6(_) => 20,
    }
}

/// Appends `0 | family | port | address`, XORed when `xor` holds the
/// transaction id.
pub(crate) fn encode(addr: &SocketAddr, xor: Option<&TransactionId>, out: &mut Vec<u8>) {
    let mut port = addr.port();
    if xor.is_some() {
        port ^= PORT_MASK;
    }
    let [p0, p1] = port.to_be_bytes();
    match addr.ip() {
        IpAddr::V4(ip) => {
            let mut ip = u32::from(ip);
            if xor.is_some() {
                ip ^= MAGIC_COOKIE;
            }
            out.extend_from_slice(&[0, FAMILY_V4, p0, p1]);
            out.extend_from_slice(&ip.to_be_bytes());
        }
        IpAddr::V6(ip) => {
            let mut ip = u128::from(ip);
            if let Some(tid) = xor {
                ip ^= v6_mask(tid);
            }
            out.extend_from_slice(&[0, FAMILY_V6, p0, p1]);
            out.extend_from_slice(&ip.to_be_bytes());
        }
    }
}

/// Defines a newtype over `SocketAddr` for one address attribute.
macro_rules! address_attribute {
    ($(#[$doc:meta])* $name:ident, $typ:expr, xor = $xor:expr) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub struct $name(pub SocketAddr);

        impl<'a> Attribute<'a> for $name {
            const TYPE: u16 = $typ;

            #[inline]
            fn decode(value: &'a [u8], tid: &TransactionId) -> Result<Self, AttrError> {
                decode(Self::TYPE, value, $xor.then_some(tid)).map($name)
            }

            fn value_len(&self) -> usize {
                value_len(&self.0)
            }

            fn encode_value(&self, tid: &TransactionId, out: &mut Vec<u8>) {
                encode(&self.0, $xor.then_some(tid), out)
            }
        }
    };
}

address_attribute!(
    /// MAPPED-ADDRESS: the client's reflexive address in the clear (only
    /// for RFC 3489 clients).
    MappedAddress,
    attr::MAPPED_ADDRESS,
    xor = false
);
address_attribute!(
    /// ALTERNATE-SERVER: where a 300 Try Alternate sends the client.
    AlternateServer,
    attr::ALTERNATE_SERVER,
    xor = false
);
address_attribute!(
    /// XOR-MAPPED-ADDRESS: the client's reflexive address.
    XorMappedAddress,
    attr::XOR_MAPPED_ADDRESS,
    xor = true
);
address_attribute!(
    /// XOR-PEER-ADDRESS: a peer of an allocation (may repeat in
    /// CreatePermission).
    XorPeerAddress,
    attr::XOR_PEER_ADDRESS,
    xor = true
);
address_attribute!(
    /// XOR-RELAYED-ADDRESS: the relayed transport address of an allocation.
    XorRelayedAddress,
    attr::XOR_RELAYED_ADDRESS,
    xor = true
);

#[cfg(test)]
mod tests {
    use super::*;

    const TID: TransactionId = [
        0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86, 0xfa, 0x87, 0xdf, 0xae,
    ];

    fn enc<'a, A: Attribute<'a>>(a: &A) -> Vec<u8> {
        let mut v = Vec::new();
        a.encode_value(&TID, &mut v);
        assert_eq!(v.len(), a.value_len());
        v
    }

    #[test]
    fn xor_v4_matches_rfc5769() {
        let a = XorMappedAddress("192.0.2.1:32853".parse().expect("addr"));
        assert_eq!(enc(&a), [0x00, 0x01, 0xa1, 0x47, 0xe1, 0x12, 0xa6, 0x43]);
        assert_eq!(XorMappedAddress::decode(&enc(&a), &TID), Ok(a));
    }

    #[test]
    fn xor_v6_matches_rfc5769() {
        let a = XorMappedAddress(
            "[2001:db8:1234:5678:11:2233:4455:6677]:32853"
                .parse()
                .expect("addr"),
        );
        let expected = [
            0x00, 0x02, 0xa1, 0x47, 0x01, 0x13, 0xa9, 0xfa, 0xa5, 0xd3, 0xf1, 0x79, 0xbc, 0x25,
            0xf4, 0xb5, 0xbe, 0xd2, 0xb9, 0xd9,
        ];
        assert_eq!(enc(&a), expected);
        assert_eq!(XorMappedAddress::decode(&expected, &TID), Ok(a));
    }

    #[test]
    fn plain_address_is_not_xored() {
        let a = MappedAddress("192.0.2.1:32853".parse().expect("addr"));
        assert_eq!(enc(&a), [0, 1, 0x80, 0x55, 192, 0, 2, 1]);
        assert_eq!(MappedAddress::decode(&enc(&a), &TID), Ok(a));
    }

    #[test]
    fn errors() {
        let t = attr::XOR_PEER_ADDRESS;
        assert_eq!(
            XorPeerAddress::decode(&[0, 1, 0], &TID),
            Err(AttrError::BadLength { attr: t, len: 3 })
        );
        // IPv4 family with an IPv6-sized address and vice versa.
        assert_eq!(
            XorPeerAddress::decode(&[0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], &TID),
            Err(AttrError::BadLength { attr: t, len: 12 })
        );
        assert_eq!(
            XorPeerAddress::decode(&[0, 2, 0, 0, 0, 0, 0, 0], &TID),
            Err(AttrError::BadLength { attr: t, len: 8 })
        );
        assert_eq!(
            XorPeerAddress::decode(&[0, 3, 0, 0, 0, 0, 0, 0], &TID),
            Err(AttrError::UnknownFamily { attr: t, family: 3 })
        );
    }
}
