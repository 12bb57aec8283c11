//! A parsed, borrowed view of a STUN message.
//!
//! [`Message::parse`] validates the header and walks the attribute TLVs
//! once, remembering only offsets: nothing is copied or allocated, so the
//! relay can afford it on every datagram. Accessors re-walk the (already
//! validated) TLVs; messages carry a handful of attributes, so a walk is
//! cheaper than building an index.

use super::attr;
use super::attributes::Attribute;
use super::error::{AttrError, ParseError};
use super::header::{split_message_type, Class, Method, TransactionId, HEADER_LEN, MAGIC_COOKIE};
use super::wire::{pad4, read_u16, read_u32};

/// A validated STUN message borrowed from a receive buffer.
///
/// Attributes are split in two regions (RFC 8489 §14.5–14.7): the
/// *considered* attributes before the first MESSAGE-INTEGRITY,
/// MESSAGE-INTEGRITY-SHA256 or FINGERPRINT, which [`attr`](Self::attr),
/// [`attrs`](Self::attrs), [`attributes`](Self::attributes) and
/// [`get`](Self::get) return; and the security attributes, reached through
/// [`message_integrity`](Self::message_integrity),
/// [`message_integrity_sha256`](Self::message_integrity_sha256) and
/// [`fingerprint`](Self::fingerprint). Other attributes after an integrity
/// attribute are bounds-checked and then ignored, as the RFC requires.
#[derive(Clone, Copy, Debug)]
pub struct Message<'a> {
    pub(crate) buf: &'a [u8],
    pub(crate) class: Class,
    pub(crate) method: Method,
    pub(crate) transaction_id: TransactionId,
    /// End of the considered attributes.
    pub(crate) attrs_end: usize,
    /// Offset of the MESSAGE-INTEGRITY attribute header.
    pub(crate) integrity: Option<usize>,
    /// Offset of the MESSAGE-INTEGRITY-SHA256 attribute header.
    pub(crate) integrity_sha256: Option<usize>,
    /// Offset of the FINGERPRINT attribute header.
    pub(crate) fingerprint: Option<usize>,
}

/// One attribute as it appears on the wire: type and unpadded value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawAttr<'a> {
    /// Attribute type.
    pub typ: u16,
    /// Value, without padding.
    pub value: &'a [u8],
}

impl<'a> Message<'a> {
    /// Validates `buf` as exactly one STUN message.
    ///
    /// Checks: at least 20 bytes; the first two bits zero; the magic
    /// cookie; a length that is a multiple of 4 and equals the bytes after
    /// the header; every attribute (with its padding) inside the message;
    /// lengths of MESSAGE-INTEGRITY (20), MESSAGE-INTEGRITY-SHA256 (16..=32,
    /// multiple of 4) and FINGERPRINT (4); nothing after FINGERPRINT.
    pub fn parse(buf: &'a [u8]) -> Result<Message<'a>, ParseError> {
        let Some((header, _)) = buf.split_first_chunk::<HEADER_LEN>() else {
            return Err(ParseError::Truncated);
        };
        let msg_type = u16::from_be_bytes([header[0], header[1]]);
        if msg_type & 0xC000 != 0 {
            return Err(ParseError::NotStun);
        }
        let declared = u16::from_be_bytes([header[2], header[3]]);
        if u32::from_be_bytes([header[4], header[5], header[6], header[7]]) != MAGIC_COOKIE {
            return Err(ParseError::BadMagicCookie);
        }
        if declared % 4 != 0 {
            return Err(ParseError::UnalignedLength(declared));
        }
        let actual = buf.len() - HEADER_LEN;
        if usize::from(declared) != actual {
            return Err(ParseError::LengthMismatch { declared, actual });
        }
        let mut transaction_id = [0u8; 12];
        transaction_id.copy_from_slice(&header[8..20]);
        let (class, method) = split_message_type(msg_type);

        let mut msg = Message {
            buf,
            class,
            method,
            transaction_id,
            attrs_end: buf.len(),
            integrity: None,
            integrity_sha256: None,
            fingerprint: None,
        };
        let mut off = HEADER_LEN;
        while off < buf.len() {
            if msg.fingerprint.is_some() {
                return Err(ParseError::AfterFingerprint);
            }
            // The body length is a multiple of 4 and so is every padded
            // attribute, so a header always fits; checked anyway.
            let Some((&[t0, t1, l0, l1], rest)) =
                buf.get(off..).and_then(|b| b.split_first_chunk::<4>())
            else {
                return Err(ParseError::AttributeOverrun {
                    attr: 0,
                    offset: off,
                });
            };
            let typ = u16::from_be_bytes([t0, t1]);
            let len = u16::from_be_bytes([l0, l1]);
            let padded = pad4(usize::from(len));
            if padded > rest.len() {
                return Err(ParseError::AttributeOverrun {
                    attr: typ,
                    offset: off,
                });
            }
            let bad_len = ParseError::BadSecurityAttributeLength { attr: typ, len };
            match typ {
                // Only the first MESSAGE-INTEGRITY counts, and only when no
                // MESSAGE-INTEGRITY-SHA256 precedes it: after that, only
                // FINGERPRINT is looked at (RFC 8489 §14.6).
                attr::MESSAGE_INTEGRITY
                    if msg.integrity.is_none() && msg.integrity_sha256.is_none() =>
                {
                    if len != 20 {
                        return Err(bad_len);
                    }
                    msg.integrity = Some(off);
                    msg.attrs_end = msg.attrs_end.min(off);
                }
                attr::MESSAGE_INTEGRITY_SHA256 if msg.integrity_sha256.is_none() => {
                    if !(16..=32).contains(&len) || len % 4 != 0 {
                        return Err(bad_len);
                    }
                    msg.integrity_sha256 = Some(off);
                    msg.attrs_end = msg.attrs_end.min(off);
                }
                attr::FINGERPRINT => {
                    if len != 4 {
                        return Err(bad_len);
                    }
                    msg.fingerprint = Some(off);
                    msg.attrs_end = msg.attrs_end.min(off);
                }
                _ => {}
            }
            off += 4 + padded;
        }
        Ok(msg)
    }

    /// The whole message as received.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.buf
    }

    /// The message class.
    pub fn class(&self) -> Class {
        self.class
    }

    /// The message method.
    pub fn method(&self) -> Method {
        self.method
    }

    /// The 96-bit transaction id.
    pub fn transaction_id(&self) -> TransactionId {
        self.transaction_id
    }

    /// The considered attributes in wire order (see the type's docs).
    pub fn attributes(&self) -> AttrIter<'a> {
        AttrIter {
            buf: self.buf,
            off: HEADER_LEN,
            end: self.attrs_end,
        }
    }

    /// Value of the first considered attribute of type `typ`. Per RFC 8489
    /// §14 only the first occurrence needs processing.
    pub fn attr(&self, typ: u16) -> Option<&'a [u8]> {
        self.attrs(typ).next()
    }

    /// Values of every considered attribute of type `typ`, in order
    /// (XOR-PEER-ADDRESS may repeat in CreatePermission).
    pub fn attrs(&self, typ: u16) -> impl Iterator<Item = &'a [u8]> {
        self.attributes()
            .filter(move |a| a.typ == typ)
            .map(|a| a.value)
    }

    /// The first attribute of type `A::TYPE`, decoded: `Ok(None)` when
    /// absent, `Err` when present but malformed.
    pub fn get<A: Attribute<'a>>(&self) -> Result<Option<A>, AttrError> {
        match self.attr(A::TYPE) {
            None => Ok(None),
            Some(value) => A::decode(value, &self.transaction_id).map(Some),
        }
    }

    /// Every attribute of type `A::TYPE`, decoded.
    pub fn get_all<A: Attribute<'a>>(&self) -> impl Iterator<Item = Result<A, AttrError>> + 'a {
        let tid = self.transaction_id;
        self.attributes()
            .filter(|a| a.typ == A::TYPE)
            .map(move |a| A::decode(a.value, &tid))
    }

    /// Comprehension-required attributes (type < 0x8000) among the
    /// considered ones that this codec does not understand, each once, in
    /// order: the list for a 420 response's UNKNOWN-ATTRIBUTES. `None` (no
    /// allocation) in the normal case.
    pub fn unknown_comprehension_required(&self) -> Option<Vec<u16>> {
        self.unknown_comprehension_required_by(attr::is_understood)
    }

    /// Like [`unknown_comprehension_required`](Self::unknown_comprehension_required)
    /// with the caller's notion of understood types (e.g. a Binding-only
    /// handler).
    pub fn unknown_comprehension_required_by(
        &self,
        understood: impl Fn(u16) -> bool,
    ) -> Option<Vec<u16>> {
        let mut unknown: Option<Vec<u16>> = None;
        for a in self.attributes() {
            if attr::is_comprehension_required(a.typ) && !understood(a.typ) {
                let list = unknown.get_or_insert_with(Vec::new);
                if !list.contains(&a.typ) {
                    list.push(a.typ);
                }
            }
        }
        unknown
    }

    /// The 20-byte MESSAGE-INTEGRITY value, if present and considered.
    pub fn message_integrity(&self) -> Option<&'a [u8]> {
        self.integrity.and_then(|off| self.value_at(off))
    }

    /// The MESSAGE-INTEGRITY-SHA256 value (16..=32 bytes), if present and
    /// considered.
    pub fn message_integrity_sha256(&self) -> Option<&'a [u8]> {
        self.integrity_sha256.and_then(|off| self.value_at(off))
    }

    /// The FINGERPRINT value as sent, if present.
    pub fn fingerprint(&self) -> Option<u32> {
        self.fingerprint.and_then(|off| read_u32(self.buf, off + 4))
    }

    /// Value of the attribute whose header starts at `off`.
    fn value_at(&self, off: usize) -> Option<&'a [u8]> {
        let len = usize::from(read_u16(self.buf, off + 2)?);
        self.buf.get(off + 4..off + 4 + len)
    }
}

/// Iterator over attributes in wire order; see [`Message::attributes`].
#[derive(Clone, Debug)]
pub struct AttrIter<'a> {
    buf: &'a [u8],
    off: usize,
    end: usize,
}

impl<'a> Iterator for AttrIter<'a> {
    type Item = RawAttr<'a>;

    fn next(&mut self) -> Option<RawAttr<'a>> {
        // One bounds check for the TLV header, one for the value; the
        // parser has validated both, these only keep the code panic-free.
        let rest = self.buf.get(self.off..self.end)?;
        let (&[t0, t1, l0, l1], tail) = rest.split_first_chunk::<4>()?;
        let len = usize::from(u16::from_be_bytes([l0, l1]));
        let value = tail.get(..len)?;
        self.off += 4 + pad4(len);
        Some(RawAttr {
            typ: u16::from_be_bytes([t0, t1]),
            value,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A header with the given type and length, followed by `body`.
    fn msg(typ: u16, body: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&typ.to_be_bytes());
        v.extend_from_slice(&(body.len() as u16).to_be_bytes());
        v.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
        v.extend_from_slice(&[7; 12]);
        v.extend_from_slice(body);
        v
    }

    fn tlv(typ: u16, value: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&typ.to_be_bytes());
        v.extend_from_slice(&(value.len() as u16).to_be_bytes());
        v.extend_from_slice(value);
        while v.len() % 4 != 0 {
            v.push(0);
        }
        v
    }

    #[test]
    fn minimal_binding_request() {
        let m = msg(0x0001, &[]);
        let p = Message::parse(&m).expect("valid");
        assert_eq!(p.class(), Class::Request);
        assert_eq!(p.method(), Method::BINDING);
        assert_eq!(p.transaction_id(), [7; 12]);
        assert_eq!(p.attributes().count(), 0);
        assert!(p.message_integrity().is_none());
        assert!(p.fingerprint().is_none());
        assert_eq!(p.as_bytes(), &m[..]);
    }

    #[test]
    fn truncated_header() {
        let m = msg(0x0001, &[]);
        for n in 0..HEADER_LEN {
            assert_eq!(Message::parse(&m[..n]).err(), Some(ParseError::Truncated));
        }
    }

    #[test]
    fn first_two_bits_must_be_zero() {
        for top in [0x4000, 0x8000, 0xC000] {
            let m = msg(0x0001 | top, &[]);
            assert_eq!(Message::parse(&m).err(), Some(ParseError::NotStun));
        }
    }

    #[test]
    fn bad_cookie() {
        let mut m = msg(0x0001, &[]);
        m[7] ^= 1;
        assert_eq!(Message::parse(&m).err(), Some(ParseError::BadMagicCookie));
    }

    #[test]
    fn unaligned_length() {
        let mut m = msg(0x0001, &[0; 4]);
        m[3] = 3;
        m.truncate(23);
        assert_eq!(
            Message::parse(&m).err(),
            Some(ParseError::UnalignedLength(3))
        );
    }

    #[test]
    fn length_mismatch_both_ways() {
        let m = msg(0x0001, &tlv(attr::LIFETIME, &[0, 0, 0, 1]));
        let mut longer = m.clone();
        longer.extend_from_slice(&[0; 4]);
        assert_eq!(
            Message::parse(&longer).err(),
            Some(ParseError::LengthMismatch {
                declared: 8,
                actual: 12
            })
        );
        assert_eq!(
            Message::parse(&m[..m.len() - 4]).err(),
            Some(ParseError::LengthMismatch {
                declared: 8,
                actual: 4
            })
        );
    }

    #[test]
    fn attribute_overrun() {
        // LIFETIME claims 8 bytes, only 4 follow.
        let mut body = tlv(attr::LIFETIME, &[0, 0, 0, 1]);
        body[3] = 8;
        let m = msg(0x0001, &body);
        assert_eq!(
            Message::parse(&m).err(),
            Some(ParseError::AttributeOverrun {
                attr: attr::LIFETIME,
                offset: 20
            })
        );
    }

    #[test]
    fn padding_overrun() {
        // A 5-byte value needs 8 bytes with padding; only 5 + 3 = 8 ok,
        // but claim 6 in a body that ends after 4 + 4 bytes.
        let mut body = tlv(attr::DATA, &[1, 2, 3, 4]);
        body[3] = 5;
        let m = msg(0x0016, &body);
        assert!(matches!(
            Message::parse(&m),
            Err(ParseError::AttributeOverrun { .. })
        ));
    }

    #[test]
    fn attribute_after_fingerprint() {
        let mut body = tlv(attr::FINGERPRINT, &[0; 4]);
        body.extend(tlv(attr::SOFTWARE, b"x"));
        let m = msg(0x0001, &body);
        assert_eq!(Message::parse(&m).err(), Some(ParseError::AfterFingerprint));
    }

    #[test]
    fn security_attribute_lengths() {
        let cases = [
            (attr::MESSAGE_INTEGRITY, 16),
            (attr::MESSAGE_INTEGRITY, 24),
            (attr::MESSAGE_INTEGRITY_SHA256, 12),
            (attr::MESSAGE_INTEGRITY_SHA256, 36),
            (attr::MESSAGE_INTEGRITY_SHA256, 18),
            (attr::FINGERPRINT, 8),
        ];
        for (typ, len) in cases {
            let m = msg(0x0001, &tlv(typ, &vec![0; len]));
            assert_eq!(
                Message::parse(&m).err(),
                Some(ParseError::BadSecurityAttributeLength {
                    attr: typ,
                    len: len as u16
                }),
                "{typ:#x} {len}"
            );
        }
    }

    #[test]
    fn attributes_after_integrity_are_ignored() {
        let mut body = tlv(attr::USERNAME, b"alice");
        body.extend(tlv(attr::MESSAGE_INTEGRITY, &[1; 20]));
        body.extend(tlv(attr::REALM, b"ignored"));
        body.extend(tlv(attr::MESSAGE_INTEGRITY, &[2; 20]));
        body.extend(tlv(attr::MESSAGE_INTEGRITY_SHA256, &[3; 32]));
        body.extend(tlv(attr::LIFETIME, &[0; 4]));
        body.extend(tlv(attr::FINGERPRINT, &[0, 0, 0, 9]));
        let m = msg(0x0003, &body);
        let p = Message::parse(&m).expect("valid");
        let types: Vec<u16> = p.attributes().map(|a| a.typ).collect();
        assert_eq!(types, [attr::USERNAME]);
        assert!(p.attr(attr::REALM).is_none());
        assert_eq!(p.message_integrity(), Some(&[1u8; 20][..]));
        assert_eq!(p.message_integrity_sha256(), Some(&[3u8; 32][..]));
        assert_eq!(p.fingerprint(), Some(9));
    }

    #[test]
    fn integrity_after_sha256_is_ignored() {
        let mut body = tlv(attr::MESSAGE_INTEGRITY_SHA256, &[3; 16]);
        body.extend(tlv(attr::MESSAGE_INTEGRITY, &[1; 20]));
        let m = msg(0x0001, &body);
        let p = Message::parse(&m).expect("valid");
        assert!(p.message_integrity().is_none());
        assert_eq!(p.message_integrity_sha256(), Some(&[3u8; 16][..]));
    }

    #[test]
    fn ignored_attributes_are_still_bounds_checked() {
        let mut body = tlv(attr::MESSAGE_INTEGRITY, &[1; 20]);
        let mut bad = tlv(attr::REALM, b"abcd");
        bad[3] = 200;
        body.extend(bad);
        let m = msg(0x0001, &body);
        assert!(matches!(
            Message::parse(&m),
            Err(ParseError::AttributeOverrun { .. })
        ));
    }

    #[test]
    fn repeated_attributes_and_first_occurrence() {
        let mut body = tlv(attr::XOR_PEER_ADDRESS, &[0, 1, 0, 1, 1, 2, 3, 4]);
        body.extend(tlv(attr::XOR_PEER_ADDRESS, &[0, 1, 0, 2, 5, 6, 7, 8]));
        let m = msg(0x0008, &body);
        let p = Message::parse(&m).expect("valid");
        assert_eq!(p.attrs(attr::XOR_PEER_ADDRESS).count(), 2);
        assert_eq!(p.attr(attr::XOR_PEER_ADDRESS).map(|v| v[3]), Some(1));
    }

    #[test]
    fn unknown_comprehension_required_attributes() {
        let mut body = tlv(0x7F00, b"");
        body.extend(tlv(attr::LIFETIME, &[0; 4]));
        body.extend(tlv(0xC000, b"optional"));
        body.extend(tlv(0x7F00, b"again"));
        body.extend(tlv(0x002A, &[0; 4]));
        let m = msg(0x0003, &body);
        let p = Message::parse(&m).expect("valid");
        assert_eq!(
            p.unknown_comprehension_required(),
            Some(vec![0x7F00, 0x002A])
        );
        assert_eq!(p.unknown_comprehension_required_by(|_| true), None);

        let known = msg(0x0003, &tlv(attr::LIFETIME, &[0; 4]));
        let p = Message::parse(&known).expect("valid");
        assert_eq!(p.unknown_comprehension_required(), None);
    }
}
