//! ICMP (RFC 8656 §18.13): carried in Data indications to tell the client
//! about an ICMP error from a peer. 16 reserved bits, type, code, and 32
//! bits of error data.

use super::super::attr;
use super::super::error::AttrError;
use super::super::header::TransactionId;
use super::{fixed, Attribute};

/// An ICMP error reported by the relay.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Icmp {
    /// ICMP (or ICMPv6) type.
    pub icmp_type: u8,
    /// ICMP code.
    pub code: u8,
    /// Type-specific data (e.g. the MTU of "fragmentation needed").
    pub error_data: u32,
}

impl<'a> Attribute<'a> for Icmp {
    const TYPE: u16 = attr::ICMP;

    fn decode(value: &'a [u8], _: &TransactionId) -> Result<Self, AttrError> {
        let [_, _, icmp_type, code, d0, d1, d2, d3] = *fixed::<8>(Self::TYPE, value)?;
        Ok(Icmp {
            icmp_type,
            code,
            error_data: u32::from_be_bytes([d0, d1, d2, d3]),
        })
    }

    fn value_len(&self) -> usize {
        8
    }

    fn encode_value(&self, _: &TransactionId, out: &mut Vec<u8>) {
        out.extend_from_slice(&[0, 0, self.icmp_type, self.code]);
        out.extend_from_slice(&self.error_data.to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode() {
        let v = [0xff, 0xff, 3, 4, 0, 0, 0x05, 0xdc];
        assert_eq!(
            Icmp::decode(&v, &[0; 12]),
            Ok(Icmp {
                icmp_type: 3,
                code: 4,
                error_data: 1500
            })
        );
        assert!(Icmp::decode(&v[..7], &[0; 12]).is_err());
    }
}
