//! UNKNOWN-ATTRIBUTES (RFC 8489 §14.13): the 16-bit types a 420 response
//! did not understand. Padded like any attribute (RFC 3489's duplication of
//! the last type is not used).

use super::super::attr;
use super::super::error::AttrError;
use super::super::header::TransactionId;
use super::Attribute;
use crate::stun::wire::read_u16;

/// The list of types, borrowed from the message; iterate with
/// [`iter`](Self::iter). Build one with
/// [`MessageBuilder::unknown_attributes`](crate::stun::MessageBuilder::unknown_attributes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct UnknownAttributes<'a>(&'a [u8]);

impl<'a> UnknownAttributes<'a> {
    /// The attribute types, in order.
    pub fn iter(&self) -> impl Iterator<Item = u16> + 'a {
        let bytes = self.0;
        (0..bytes.len() / 2).filter_map(move |i| read_u16(bytes, 2 * i))
    }
}

impl<'a> Attribute<'a> for UnknownAttributes<'a> {
    const TYPE: u16 = attr::UNKNOWN_ATTRIBUTES;

    fn decode(value: &'a [u8], _: &TransactionId) -> Result<Self, AttrError> {
        if value.len() % 2 != 0 {
            return Err(AttrError::BadLength {
                attr: Self::TYPE,
                len: value.len(),
            });
        }
        Ok(UnknownAttributes(value))
    }

    fn value_len(&self) -> usize {
        self.0.len()
    }

    fn encode_value(&self, _: &TransactionId, out: &mut Vec<u8>) {
        out.extend_from_slice(self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode() {
        let v = [0x00, 0x2a, 0x7f, 0x00];
        let u = UnknownAttributes::decode(&v, &[0; 12]).expect("even");
        assert_eq!(u.iter().collect::<Vec<_>>(), [0x002a, 0x7f00]);
        assert!(UnknownAttributes::decode(&v[..3], &[0; 12]).is_err());
    }
}
