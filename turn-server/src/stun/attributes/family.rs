//! REQUESTED-ADDRESS-FAMILY and ADDITIONAL-ADDRESS-FAMILY (RFC 8656 §18.6,
//! §18.11; RFC 6156): one family byte (0x01 IPv4, 0x02 IPv6) and three
//! reserved bytes.

use super::super::attr;
use super::super::error::AttrError;
use super::super::header::TransactionId;
use super::{fixed, Attribute};

/// An IP address family as encoded in STUN attributes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AddressFamily {
    /// 0x01.
    V4,
    /// 0x02.
    V6,
}

impl AddressFamily {
    /// The wire value.
    pub const fn to_byte(self) -> u8 {
        match self {
            AddressFamily::V4 => 0x01,
            AddressFamily::V6 => 0x02,
        }
    }

    /// The family with this wire value.
    pub const fn from_byte(b: u8) -> Option<AddressFamily> {
        match b {
            0x01 => Some(AddressFamily::V4),
            0x02 => Some(AddressFamily::V6),
            _ => None,
        }
    }
}

fn decode(attr: u16, value: &[u8]) -> Result<AddressFamily, AttrError> {
    // The three bytes after the family are reserved (RFFU) and ignored.
    let [family, ..] = *fixed::<4>(attr, value)?;
    AddressFamily::from_byte(family).ok_or(AttrError::UnknownFamily { attr, family })
}

/// Defines a newtype over `AddressFamily` for one family attribute.
macro_rules! family_attribute {
    ($(#[$doc:meta])* $name:ident, $typ:expr) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub struct $name(pub AddressFamily);

        impl<'a> Attribute<'a> for $name {
            const TYPE: u16 = $typ;

            fn decode(value: &'a [u8], _: &TransactionId) -> Result<Self, AttrError> {
                decode(Self::TYPE, value).map($name)
            }

            fn value_len(&self) -> usize {
                4
            }

            fn encode_value(&self, _: &TransactionId, out: &mut Vec<u8>) {
                out.extend_from_slice(&[self.0.to_byte(), 0, 0, 0]);
            }
        }
    };
}

family_attribute!(
    /// REQUESTED-ADDRESS-FAMILY: the family of the relayed address asked for
    /// in an Allocate (default IPv4). An unknown family gets 440.
    RequestedAddressFamily,
    attr::REQUESTED_ADDRESS_FAMILY
);
family_attribute!(
    /// ADDITIONAL-ADDRESS-FAMILY: asks for a second relayed address; RFC
    /// 8656 allows only IPv6 here, which the server (not the codec) checks.
    AdditionalAddressFamily,
    attr::ADDITIONAL_ADDRESS_FAMILY
);

#[cfg(test)]
mod tests {
    use super::*;

    const TID: TransactionId = [0; 12];

    #[test]
    fn decode_families() {
        assert_eq!(
            RequestedAddressFamily::decode(&[1, 0, 0, 0], &TID),
            Ok(RequestedAddressFamily(AddressFamily::V4))
        );
        assert_eq!(
            AdditionalAddressFamily::decode(&[2, 9, 9, 9], &TID),
            Ok(AdditionalAddressFamily(AddressFamily::V6))
        );
        assert_eq!(
            RequestedAddressFamily::decode(&[3, 0, 0, 0], &TID),
            Err(AttrError::UnknownFamily {
                attr: attr::REQUESTED_ADDRESS_FAMILY,
                family: 3
            })
        );
        assert_eq!(
            RequestedAddressFamily::decode(&[1], &TID),
            Err(AttrError::BadLength {
                attr: attr::REQUESTED_ADDRESS_FAMILY,
                len: 1
            })
        );
    }
}
