//! Password algorithm negotiation and anonymous usernames (RFC 8489
//! §14.4, §14.11, §14.12, §18.5): PASSWORD-ALGORITHM, PASSWORD-ALGORITHMS
//! and USERHASH.

use super::super::attr;
use super::super::error::AttrError;
use super::super::header::TransactionId;
use super::{fixed, Attribute};
use crate::stun::wire::{pad4, push_padding, read_u16};

/// One algorithm entry: number and parameters (none for MD5 and SHA-256).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PasswordAlgorithm<'a> {
    /// IANA "STUN Password Algorithms" number.
    pub algorithm: u16,
    /// Algorithm-specific parameters.
    pub params: &'a [u8],
}

impl PasswordAlgorithm<'static> {
    /// MD5 (0x0001): key = MD5(username ":" realm ":" password).
    pub const MD5: PasswordAlgorithm<'static> = PasswordAlgorithm {
        algorithm: 0x0001,
        params: &[],
    };
    /// SHA-256 (0x0002): key = SHA-256(username ":" realm ":" password).
    pub const SHA256: PasswordAlgorithm<'static> = PasswordAlgorithm {
        algorithm: 0x0002,
        params: &[],
    };
}

impl<'a> PasswordAlgorithm<'a> {
    /// Encoded size: 4-byte header and padded parameters.
    pub(crate) fn entry_len(&self) -> usize {
        4 + pad4(self.params.len())
    }

    /// Appends the entry (header, parameters, padding).
    pub(crate) fn encode_entry(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.algorithm.to_be_bytes());
        // `check` bounds the length; saturate rather than wrap otherwise.
        let plen = u16::try_from(self.params.len()).unwrap_or(u16::MAX);
        out.extend_from_slice(&plen.to_be_bytes());
        out.extend_from_slice(self.params);
        push_padding(out, self.params.len());
    }

    /// Parses the entry at the start of `bytes`; returns it and the bytes
    /// it occupies with padding (which may be absent at the very end).
    fn parse_entry(attr: u16, bytes: &'a [u8]) -> Result<(Self, usize), AttrError> {
        let bad_len = AttrError::BadLength {
            attr,
            len: bytes.len(),
        };
        let algorithm = read_u16(bytes, 0).ok_or(bad_len)?;
        let plen = usize::from(read_u16(bytes, 2).ok_or(bad_len)?);
        let params = bytes.get(4..4 + plen).ok_or(bad_len)?;
        let used = (4 + pad4(plen)).min(bytes.len());
        Ok((PasswordAlgorithm { algorithm, params }, used))
    }
}

impl<'a> Attribute<'a> for PasswordAlgorithm<'a> {
    const TYPE: u16 = attr::PASSWORD_ALGORITHM;

    fn decode(value: &'a [u8], _: &TransactionId) -> Result<Self, AttrError> {
        let (alg, used) = PasswordAlgorithm::parse_entry(Self::TYPE, value)?;
        if used != value.len() {
            return Err(AttrError::BadLength {
                attr: Self::TYPE,
                len: value.len(),
            });
        }
        Ok(alg)
    }

    fn value_len(&self) -> usize {
        self.entry_len()
    }

    fn encode_value(&self, _: &TransactionId, out: &mut Vec<u8>) {
        self.encode_entry(out)
    }

    fn check(&self) -> Result<(), AttrError> {
        check_params(Self::TYPE, self)
    }
}

fn check_params(attr: u16, alg: &PasswordAlgorithm<'_>) -> Result<(), AttrError> {
    if alg.params.len() > usize::from(u16::MAX) {
        return Err(AttrError::TooLong { attr });
    }
    Ok(())
}

/// The list of algorithms a server offers, borrowed from the message and
/// validated on decode; iterate with [`iter`](Self::iter). Build one with
/// [`MessageBuilder::password_algorithms`](crate::stun::MessageBuilder::password_algorithms).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PasswordAlgorithms<'a>(&'a [u8]);

impl<'a> PasswordAlgorithms<'a> {
    /// The algorithms, in order.
    pub fn iter(&self) -> impl Iterator<Item = PasswordAlgorithm<'a>> + 'a {
        let mut rest = self.0;
        std::iter::from_fn(move || {
            let (alg, used) =
                PasswordAlgorithm::parse_entry(attr::PASSWORD_ALGORITHMS, rest).ok()?;
            rest = rest.get(used..)?;
            Some(alg)
        })
    }
}

impl<'a> Attribute<'a> for PasswordAlgorithms<'a> {
    const TYPE: u16 = attr::PASSWORD_ALGORITHMS;

    fn decode(value: &'a [u8], _: &TransactionId) -> Result<Self, AttrError> {
        let mut rest = value;
        while !rest.is_empty() {
            // Each entry is padded to 4 inside the value; only the last
            // may end without its padding (the attribute's own padding
            // then follows).
            let (_, used) = PasswordAlgorithm::parse_entry(Self::TYPE, rest)?;
            rest = rest.get(used..).unwrap_or_default();
        }
        Ok(PasswordAlgorithms(value))
    }

    fn value_len(&self) -> usize {
        self.0.len()
    }

    fn encode_value(&self, _: &TransactionId, out: &mut Vec<u8>) {
        out.extend_from_slice(self.0);
    }
}

/// USERHASH: SHA-256(username ":" realm) in place of USERNAME, for
/// username anonymity (see
/// [`credentials::userhash`](crate::stun::credentials::userhash)).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct UserHash(pub [u8; 32]);

impl<'a> Attribute<'a> for UserHash {
    const TYPE: u16 = attr::USERHASH;

    fn decode(value: &'a [u8], _: &TransactionId) -> Result<Self, AttrError> {
        fixed::<32>(Self::TYPE, value).map(|h| UserHash(*h))
    }

    fn value_len(&self) -> usize {
        32
    }

    fn encode_value(&self, _: &TransactionId, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TID: TransactionId = [0; 12];

    #[test]
    fn single_algorithm() {
        assert_eq!(
            PasswordAlgorithm::decode(&[0, 2, 0, 0], &TID),
            Ok(PasswordAlgorithm::SHA256)
        );
        let with_params = PasswordAlgorithm {
            algorithm: 0x1234,
            params: &[1, 2, 3],
        };
        let mut v = Vec::new();
        with_params.encode_value(&TID, &mut v);
        assert_eq!(v, [0x12, 0x34, 0, 3, 1, 2, 3, 0]);
        assert_eq!(PasswordAlgorithm::decode(&v, &TID), Ok(with_params));
        // Unpadded form is accepted too; anything longer is not.
        assert_eq!(PasswordAlgorithm::decode(&v[..7], &TID), Ok(with_params));
        let mut longer = v.clone();
        longer.extend_from_slice(&[0; 4]);
        assert!(PasswordAlgorithm::decode(&longer, &TID).is_err());
        // Parameters running past the value.
        assert!(PasswordAlgorithm::decode(&[0, 1, 0, 9, 1], &TID).is_err());
        assert!(PasswordAlgorithm::decode(&[0, 1, 0], &TID).is_err());
    }

    #[test]
    fn algorithm_list() {
        let v = [0, 1, 0, 0, 0, 2, 0, 0, 0, 9, 0, 1, 7, 0, 0, 0];
        let list = PasswordAlgorithms::decode(&v, &TID).expect("valid");
        let got: Vec<_> = list.iter().collect();
        assert_eq!(
            got,
            [
                PasswordAlgorithm::MD5,
                PasswordAlgorithm::SHA256,
                PasswordAlgorithm {
                    algorithm: 9,
                    params: &[7]
                }
            ]
        );
        assert!(PasswordAlgorithms::decode(&v[..15], &TID).is_ok());
        assert!(PasswordAlgorithms::decode(&v[..11], &TID).is_err());
        assert!(PasswordAlgorithms::decode(&v[..6], &TID).is_err());
        // An unpadded entry followed by another is malformed (the next
        // entry would start inside the padding).
        let unpadded = [0, 9, 0, 1, 7, 0, 1, 0, 0];
        assert!(PasswordAlgorithms::decode(&unpadded, &TID).is_err());
    }

    #[test]
    fn userhash_length() {
        assert!(UserHash::decode(&[0; 32], &TID).is_ok());
        assert!(UserHash::decode(&[0; 31], &TID).is_err());
    }
}
