//! ERROR-CODE (RFC 8489 §14.8): 21 reserved bits, a 3-bit class (the
//! hundreds digit, 3..=6), an 8-bit number (0..=99), then a UTF-8 reason
//! phrase of fewer than 128 characters.

use super::super::attr;
use super::super::error::AttrError;
use super::super::header::TransactionId;
use super::text::{check_short_text, short_text};
use super::Attribute;

/// An error code (300..=699) with its reason phrase.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ErrorCode<'a> {
    /// `class * 100 + number`, e.g. 401.
    pub code: u16,
    /// Diagnostic text; RFC 8489 §14.8 recommends standard phrases.
    pub reason: &'a str,
}

impl ErrorCode<'_> {
    /// 300 Try Alternate.
    pub const TRY_ALTERNATE: u16 = 300;
    /// 400 Bad Request.
    pub const BAD_REQUEST: u16 = 400;
    /// 401 Unauthenticated.
    pub const UNAUTHENTICATED: u16 = 401;
    /// 403 Forbidden (RFC 8656).
    pub const FORBIDDEN: u16 = 403;
    /// 420 Unknown Attribute.
    pub const UNKNOWN_ATTRIBUTE: u16 = 420;
    /// 437 Allocation Mismatch (RFC 8656).
    pub const ALLOCATION_MISMATCH: u16 = 437;
    /// 438 Stale Nonce.
    pub const STALE_NONCE: u16 = 438;
    /// 440 Address Family not Supported (RFC 8656).
    pub const ADDRESS_FAMILY_NOT_SUPPORTED: u16 = 440;
    /// 441 Wrong Credentials (RFC 8656).
    pub const WRONG_CREDENTIALS: u16 = 441;
    /// 442 Unsupported Transport Protocol (RFC 8656).
    pub const UNSUPPORTED_TRANSPORT_PROTOCOL: u16 = 442;
    /// 443 Peer Address Family Mismatch (RFC 8656).
    pub const PEER_ADDRESS_FAMILY_MISMATCH: u16 = 443;
    /// 486 Allocation Quota Reached (RFC 8656).
    pub const ALLOCATION_QUOTA_REACHED: u16 = 486;
    /// 500 Server Error.
    pub const SERVER_ERROR: u16 = 500;
    /// 508 Insufficient Capacity (RFC 8656).
    pub const INSUFFICIENT_CAPACITY: u16 = 508;
}

impl<'a> Attribute<'a> for ErrorCode<'a> {
    const TYPE: u16 = attr::ERROR_CODE;

    fn decode(value: &'a [u8], _: &TransactionId) -> Result<Self, AttrError> {
        let Some((head, reason)) = value.split_first_chunk::<4>() else {
            return Err(AttrError::BadLength {
                attr: Self::TYPE,
                len: value.len(),
            });
        };
        // The reserved bits above the class are ignored (RFC 8489 §14.8).
        let class = u16::from(head[2] & 0x07);
        let number = u16::from(head[3]);
        if !(3..=6).contains(&class) || number > 99 {
            return Err(AttrError::OutOfRange { attr: Self::TYPE });
        }
        Ok(ErrorCode {
            code: class * 100 + number,
            reason: short_text(Self::TYPE, reason)?,
        })
    }

    fn value_len(&self) -> usize {
        4 + self.reason.len()
    }

    fn encode_value(&self, _: &TransactionId, out: &mut Vec<u8>) {
        // `check` guarantees 300..=699; clamp anyway so the bytes stay
        // well-formed whatever the caller did.
        let class = (self.code / 100).clamp(3, 6) as u8;
        let number = (self.code % 100) as u8;
        out.extend_from_slice(&[0, 0, class, number]);
        out.extend_from_slice(self.reason.as_bytes());
    }

    fn check(&self) -> Result<(), AttrError> {
        if !(300..=699).contains(&self.code) {
            return Err(AttrError::OutOfRange { attr: Self::TYPE });
        }
        check_short_text(Self::TYPE, self.reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TID: TransactionId = [0; 12];

    #[test]
    fn round_trip() {
        let e = ErrorCode {
            code: 438,
            reason: "Stale Nonce",
        };
        let mut v = Vec::new();
        e.encode_value(&TID, &mut v);
        assert_eq!(&v[..4], &[0, 0, 4, 38]);
        assert_eq!(ErrorCode::decode(&v, &TID), Ok(e));
    }

    #[test]
    fn reserved_bits_ignored() {
        let v = [0xff, 0xff, 0xf8 | 4, 1, b'x'];
        assert_eq!(
            ErrorCode::decode(&v, &TID).map(|e| e.code),
            Ok(401),
            "bits above the class are reserved"
        );
    }

    #[test]
    fn errors() {
        let t = attr::ERROR_CODE;
        assert_eq!(
            ErrorCode::decode(&[0, 0, 4], &TID),
            Err(AttrError::BadLength { attr: t, len: 3 })
        );
        assert_eq!(
            ErrorCode::decode(&[0, 0, 2, 0], &TID),
            Err(AttrError::OutOfRange { attr: t })
        );
        assert_eq!(
            ErrorCode::decode(&[0, 0, 7, 0], &TID),
            Err(AttrError::OutOfRange { attr: t })
        );
        assert_eq!(
            ErrorCode::decode(&[0, 0, 4, 100], &TID),
            Err(AttrError::OutOfRange { attr: t })
        );
        assert_eq!(
            ErrorCode::decode(&[0, 0, 4, 0, 0xff], &TID),
            Err(AttrError::InvalidUtf8 { attr: t })
        );
        let e = ErrorCode {
            code: 700,
            reason: "",
        };
        assert_eq!(e.check(), Err(AttrError::OutOfRange { attr: t }));
        let e = ErrorCode {
            code: 299,
            reason: "",
        };
        assert!(e.check().is_err());
    }
}
