//! UTF-8 text attributes and their RFC 8489 length limits.
//!
//! USERNAME (§14.3): fewer than 509 bytes when sending; a receiver must
//! accept up to 763 bytes (RFC 5389 compatibility). REALM (§14.9), NONCE
//! (§14.10) and SOFTWARE (§14.14): fewer than 128 characters. Valid UTF-8
//! of at most 127 characters is at most 508 bytes, so the byte limits
//! (509 sending / 763 receiving) follow from the character limit.

use super::super::attr;
use super::super::error::AttrError;
use super::super::header::TransactionId;
use super::Attribute;

/// Longest USERNAME accepted when decoding (RFC 8489 §14.3).
pub const MAX_USERNAME_DECODE: usize = 763;
/// USERNAME must be shorter than this when encoding (RFC 8489 §14.3).
pub const USERNAME_ENCODE_LIMIT: usize = 509;
/// REALM, NONCE, SOFTWARE and reason phrases must have fewer characters.
pub const TEXT_CHAR_LIMIT: usize = 128;
/// Byte bound checked before counting characters.
const MAX_TEXT_DECODE: usize = 763;

/// Validates UTF-8 of at most `max_bytes` bytes.
fn utf8(attr: u16, value: &[u8], max_bytes: usize) -> Result<&str, AttrError> {
    if value.len() > max_bytes {
        return Err(AttrError::TooLong { attr });
    }
    std::str::from_utf8(value).map_err(|_| AttrError::InvalidUtf8 { attr })
}

/// Validates UTF-8 of fewer than 128 characters.
pub(crate) fn short_text(attr: u16, value: &[u8]) -> Result<&str, AttrError> {
    let s = utf8(attr, value, MAX_TEXT_DECODE)?;
    check_short_text(attr, s)?;
    Ok(s)
}

/// Fewer than 128 characters (then also at most 508 bytes).
pub(crate) fn check_short_text(attr: u16, s: &str) -> Result<(), AttrError> {
    // ASCII is the common case: its byte length is its character count.
    if s.len() < TEXT_CHAR_LIMIT || s.chars().count() < TEXT_CHAR_LIMIT {
        Ok(())
    } else {
        Err(AttrError::TooLong { attr })
    }
}

/// Defines a newtype over `&str` for a text attribute.
macro_rules! text_attribute {
    ($(#[$doc:meta])* $name:ident, $typ:expr, decode = $decode:expr, check = $check:expr) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub struct $name<'a>(pub &'a str);

        impl<'a> Attribute<'a> for $name<'a> {
            const TYPE: u16 = $typ;

            fn decode(value: &'a [u8], _: &TransactionId) -> Result<Self, AttrError> {
                let decode: fn(&'a [u8]) -> Result<&'a str, AttrError> = $decode;
                decode(value).map($name)
            }

            fn value_len(&self) -> usize {
                self.0.len()
            }

            fn encode_value(&self, _: &TransactionId, out: &mut Vec<u8>) {
                out.extend_from_slice(self.0.as_bytes());
            }

            fn check(&self) -> Result<(), AttrError> {
                let check: fn(&str) -> Result<(), AttrError> = $check;
                check(self.0)
            }
        }
    };
}

text_attribute!(
    /// USERNAME: taken as given (UTF-8); see
    /// [`credentials`](crate::stun::credentials) on SASLprep/OpaqueString.
    Username,
    attr::USERNAME,
    decode = |v| utf8(attr::USERNAME, v, MAX_USERNAME_DECODE),
    check = |s| {
        if s.len() < USERNAME_ENCODE_LIMIT {
            Ok(())
        } else {
            Err(AttrError::TooLong {
                attr: attr::USERNAME,
            })
        }
    }
);
text_attribute!(
    /// REALM: the long-term credential realm.
    Realm,
    attr::REALM,
    decode = |v| short_text(attr::REALM, v),
    check = |s| check_short_text(attr::REALM, s)
);
text_attribute!(
    /// NONCE: the server's (stateless, signed) nonce, echoed by clients.
    Nonce,
    attr::NONCE,
    decode = |v| short_text(attr::NONCE, v),
    check = |s| check_short_text(attr::NONCE, s)
);
text_attribute!(
    /// SOFTWARE: diagnostic product/version string (not sent by default:
    /// it helps attackers fingerprint the server).
    Software,
    attr::SOFTWARE,
    decode = |v| short_text(attr::SOFTWARE, v),
    check = |s| check_short_text(attr::SOFTWARE, s)
);

#[cfg(test)]
mod tests {
    use super::*;

    const TID: TransactionId = [0; 12];

    #[test]
    fn username_limits() {
        let long = "u".repeat(MAX_USERNAME_DECODE);
        assert_eq!(Username::decode(long.as_bytes(), &TID), Ok(Username(&long)));
        let too_long = "u".repeat(MAX_USERNAME_DECODE + 1);
        assert_eq!(
            Username::decode(too_long.as_bytes(), &TID),
            Err(AttrError::TooLong {
                attr: attr::USERNAME
            })
        );
        assert!(Username(&"u".repeat(508)).check().is_ok());
        assert!(Username(&"u".repeat(509)).check().is_err());
    }

    #[test]
    fn realm_counts_characters_not_bytes() {
        let ok = "é".repeat(127); // 254 bytes, 127 characters
        assert_eq!(Realm::decode(ok.as_bytes(), &TID), Ok(Realm(&ok)));
        assert!(Realm(&ok).check().is_ok());
        let too_many = "é".repeat(128);
        assert_eq!(
            Realm::decode(too_many.as_bytes(), &TID),
            Err(AttrError::TooLong { attr: attr::REALM })
        );
        assert!(Nonce(&"n".repeat(128)).check().is_err());
        assert!(Software(&"s".repeat(127)).check().is_ok());
    }

    #[test]
    fn invalid_utf8() {
        assert_eq!(
            Nonce::decode(&[0x66, 0xff], &TID),
            Err(AttrError::InvalidUtf8 { attr: attr::NONCE })
        );
        assert_eq!(
            Username::decode(&[0xc3], &TID),
            Err(AttrError::InvalidUtf8 {
                attr: attr::USERNAME
            })
        );
    }
}
