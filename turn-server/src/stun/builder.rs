//! Building STUN messages into a caller-owned `Vec<u8>`.
//!
//! The builder appends to the vector (so several messages can be queued in
//! one TCP output buffer) and never allocates beyond the vector's own
//! growth: with enough capacity, building a response costs no allocation.
//! MESSAGE-INTEGRITY is computed over the bytes already written, with the
//! header length set to end after it, before the attribute is appended, so
//! no placeholder is written and patched.

use std::net::SocketAddr;

use super::attr;
use super::attributes::{
    AdditionalAddressFamily, AddressFamily, Attribute, ChannelNumber, Data, DontFragment,
    ErrorCode, EvenPort, Lifetime, MappedAddress, Nonce, PasswordAlgorithm, Realm,
    RequestedAddressFamily, RequestedTransport, ReservationToken, Software, Username,
    XorMappedAddress, XorPeerAddress, XorRelayedAddress,
};
use super::error::{AttrError, BuildError};
use super::fingerprint;
use super::header::{
    message_type, Class, Method, TransactionId, HEADER_LEN, MAGIC_COOKIE, MAX_BODY_LEN,
};
use super::integrity::{
    hmac_sha1, hmac_sha256, Integrity, Sha1Key, Sha256Key, SHA1_MAC_LEN, SHA256_MAC_LEN,
};
use super::wire::{pad4, push_padding};

/// Which integrity attributes have been appended; later attributes are
/// restricted accordingly (RFC 8489 §14.5–14.7).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    Open,
    AfterSha1,
    AfterSha256,
}

/// Appends one STUN message to a `Vec<u8>`.
///
/// Attribute methods chain and record the first error instead of
/// returning it, so a response is written straight-line; [`finish`](Self::finish)
/// reports the error and then removes the partial message from the buffer.
/// A builder dropped without `finish` also removes its partial message, so
/// a half-built message can never reach a stream.
///
/// ```
/// use turn_server::stun::{Class, Integrity, Message, MessageBuilder, Method};
///
/// let mut buf = Vec::with_capacity(256);
/// let tid = [1; 12];
/// let mut b = MessageBuilder::new(&mut buf, Class::Success, Method::ALLOCATE, tid);
/// b.xor_relayed_address("203.0.113.7:49152".parse().unwrap())
///     .lifetime(600)
///     .xor_mapped_address("198.51.100.2:40000".parse().unwrap());
/// let len = b.finish(Some(Integrity::Sha1(b"key")), true).unwrap();
/// let msg = Message::parse(&buf[buf.len() - len..]).unwrap();
/// assert!(msg.verify_integrity(b"key") && msg.verify_fingerprint());
/// ```
#[derive(Debug)]
pub struct MessageBuilder<'b> {
    buf: &'b mut Vec<u8>,
    start: usize,
    transaction_id: TransactionId,
    stage: Stage,
    error: Option<BuildError>,
    finished: bool,
}

impl<'b> MessageBuilder<'b> {
    /// Starts a message at the end of `buf` (clear it first to reuse it for
    /// one message at a time).
    pub fn new(
        buf: &'b mut Vec<u8>,
        class: Class,
        method: Method,
        transaction_id: TransactionId,
    ) -> MessageBuilder<'b> {
        let start = buf.len();
        let [t0, t1] = message_type(class, method).to_be_bytes();
        let [c0, c1, c2, c3] = MAGIC_COOKIE.to_be_bytes();
        buf.extend_from_slice(&[t0, t1, 0, 0, c0, c1, c2, c3]);
        buf.extend_from_slice(&transaction_id);
        MessageBuilder {
            buf,
            start,
            transaction_id,
            stage: Stage::Open,
            error: None,
            finished: false,
        }
    }

    /// The transaction id the message was started with.
    pub fn transaction_id(&self) -> TransactionId {
        self.transaction_id
    }

    fn body_len(&self) -> usize {
        self.buf.len() - self.start - HEADER_LEN
    }

    fn fail(&mut self, e: BuildError) {
        self.error.get_or_insert(e);
    }

    fn set_length(&mut self, len: u16) {
        if let Some(field) = self.buf.get_mut(self.start + 2..self.start + 4) {
            field.copy_from_slice(&len.to_be_bytes());
        }
    }

    /// Header length once an attribute with a `len`-byte value is added,
    /// or `None` (error recorded) if it would not fit.
    fn length_with(&mut self, len: usize) -> Option<u16> {
        let total = self.body_len() + 4 + pad4(len);
        match u16::try_from(total) {
            Ok(total) if usize::from(total) <= MAX_BODY_LEN => Some(total),
            _ => {
                self.fail(BuildError::TooLong);
                None
            }
        }
    }

    /// Appends the header of an ordinary attribute and its value written
    /// by `write`, then padding. `write` must append exactly `len` bytes.
    fn put(&mut self, typ: u16, len: usize, write: impl FnOnce(&mut Vec<u8>)) -> &mut Self {
        if self.error.is_some() {
            return self;
        }
        if self.stage != Stage::Open {
            self.fail(BuildError::AfterIntegrity);
            return self;
        }
        if self.length_with(len).is_none() {
            return self;
        }
        // `length_with` bounded the body, so `len` fits in 16 bits.
        let len16 = len as u16;
        self.buf.extend_from_slice(&typ.to_be_bytes());
        self.buf.extend_from_slice(&len16.to_be_bytes());
        let before = self.buf.len();
        write(self.buf);
        if self.buf.len() - before != len {
            // An encoder disagreeing with its own `value_len`: refuse to
            // emit a malformed message.
            self.fail(BuildError::Attr(AttrError::BadLength {
                attr: typ,
                len: self.buf.len() - before,
            }));
            return self;
        }
        push_padding(self.buf, len);
        self
    }

    /// Appends a typed attribute after checking its sending limits.
    pub fn add<'x, A: Attribute<'x>>(&mut self, attribute: &A) -> &mut Self {
        if let Err(e) = attribute.check() {
            self.fail(e.into());
            return self;
        }
        let tid = self.transaction_id;
        self.put(A::TYPE, attribute.value_len(), |out| {
            attribute.encode_value(&tid, out)
        })
    }

    /// Appends an attribute from raw bytes (e.g. one this codec has no
    /// type for). MESSAGE-INTEGRITY, MESSAGE-INTEGRITY-SHA256 and
    /// FINGERPRINT are refused: they are computed, see [`finish`](Self::finish).
    pub fn raw(&mut self, typ: u16, value: &[u8]) -> &mut Self {
        if matches!(
            typ,
            attr::MESSAGE_INTEGRITY | attr::MESSAGE_INTEGRITY_SHA256 | attr::FINGERPRINT
        ) {
            self.fail(BuildError::ComputedAttribute(typ));
            return self;
        }
        self.put(typ, value.len(), |out| out.extend_from_slice(value))
    }

    /// USERNAME (fewer than 509 bytes).
    pub fn username(&mut self, username: &str) -> &mut Self {
        self.add(&Username(username))
    }

    /// REALM (fewer than 128 characters).
    pub fn realm(&mut self, realm: &str) -> &mut Self {
        self.add(&Realm(realm))
    }

    /// NONCE (fewer than 128 characters).
    pub fn nonce(&mut self, nonce: &str) -> &mut Self {
        self.add(&Nonce(nonce))
    }

    /// SOFTWARE (fewer than 128 characters).
    pub fn software(&mut self, software: &str) -> &mut Self {
        self.add(&Software(software))
    }

    /// MAPPED-ADDRESS.
    pub fn mapped_address(&mut self, addr: SocketAddr) -> &mut Self {
        self.add(&MappedAddress(addr))
    }

    /// XOR-MAPPED-ADDRESS.
    pub fn xor_mapped_address(&mut self, addr: SocketAddr) -> &mut Self {
        self.add(&XorMappedAddress(addr))
    }

    /// XOR-PEER-ADDRESS.
    pub fn xor_peer_address(&mut self, addr: SocketAddr) -> &mut Self {
        self.add(&XorPeerAddress(addr))
    }

    /// XOR-RELAYED-ADDRESS.
    pub fn xor_relayed_address(&mut self, addr: SocketAddr) -> &mut Self {
        self.add(&XorRelayedAddress(addr))
    }

    /// LIFETIME in seconds.
    pub fn lifetime(&mut self, seconds: u32) -> &mut Self {
        self.add(&Lifetime(seconds))
    }

    /// REQUESTED-TRANSPORT with an IP protocol number (17 = UDP).
    pub fn requested_transport(&mut self, protocol: u8) -> &mut Self {
        self.add(&RequestedTransport(protocol))
    }

    /// DATA.
    pub fn data(&mut self, data: &[u8]) -> &mut Self {
        self.add(&Data(data))
    }

    /// CHANNEL-NUMBER (see [`channel_data::is_valid_channel`](super::channel_data::is_valid_channel);
    /// others are an error).
    pub fn channel_number(&mut self, channel: u16) -> &mut Self {
        self.add(&ChannelNumber(channel))
    }

    /// EVEN-PORT with the R (reserve next port) bit.
    pub fn even_port(&mut self, reserve: bool) -> &mut Self {
        self.add(&EvenPort { reserve })
    }

    /// DONT-FRAGMENT.
    pub fn dont_fragment(&mut self) -> &mut Self {
        self.add(&DontFragment)
    }

    /// RESERVATION-TOKEN.
    pub fn reservation_token(&mut self, token: [u8; 8]) -> &mut Self {
        self.add(&ReservationToken(token))
    }

    /// REQUESTED-ADDRESS-FAMILY.
    pub fn requested_address_family(&mut self, family: AddressFamily) -> &mut Self {
        self.add(&RequestedAddressFamily(family))
    }

    /// ADDITIONAL-ADDRESS-FAMILY.
    pub fn additional_address_family(&mut self, family: AddressFamily) -> &mut Self {
        self.add(&AdditionalAddressFamily(family))
    }

    /// ERROR-CODE: `code` in 300..=699, `reason` fewer than 128 characters.
    pub fn error_code(&mut self, code: u16, reason: &str) -> &mut Self {
        self.add(&ErrorCode { code, reason })
    }

    /// UNKNOWN-ATTRIBUTES listing `types` (for 420 responses).
    pub fn unknown_attributes(&mut self, types: &[u16]) -> &mut Self {
        self.put(attr::UNKNOWN_ATTRIBUTES, 2 * types.len(), |out| {
            for t in types {
                out.extend_from_slice(&t.to_be_bytes());
            }
        })
    }

    /// PASSWORD-ALGORITHM (in requests).
    pub fn password_algorithm(&mut self, algorithm: PasswordAlgorithm<'_>) -> &mut Self {
        self.add(&algorithm)
    }

    /// PASSWORD-ALGORITHMS listing what the server supports (in 401/438
    /// responses).
    pub fn password_algorithms(&mut self, algorithms: &[PasswordAlgorithm<'_>]) -> &mut Self {
        if let Some(bad) = algorithms.iter().find_map(|a| a.check().err()) {
            self.fail(bad.into());
            return self;
        }
        let len = algorithms.iter().map(PasswordAlgorithm::entry_len).sum();
        self.put(attr::PASSWORD_ALGORITHMS, len, |out| {
            for a in algorithms {
                a.encode_entry(out);
            }
        })
    }

    /// Appends MESSAGE-INTEGRITY (HMAC-SHA1 with `key`). Only
    /// MESSAGE-INTEGRITY-SHA256 and FINGERPRINT may follow.
    pub fn message_integrity(&mut self, key: &[u8]) -> &mut Self {
        self.message_integrity_with(&Sha1Key::new(key))
    }

    /// [`message_integrity`](Self::message_integrity) with a prepared key.
    pub fn message_integrity_with(&mut self, key: &Sha1Key) -> &mut Self {
        if self.error.is_some() {
            return self;
        }
        if self.stage != Stage::Open {
            self.fail(BuildError::AfterIntegrity);
            return self;
        }
        let Some(adjusted) = self.length_with(SHA1_MAC_LEN) else {
            return self;
        };
        let Some(mac) = hmac_sha1(key, &self.buf[self.start..], adjusted) else {
            self.fail(BuildError::Internal);
            return self;
        };
        self.push_security(attr::MESSAGE_INTEGRITY, &mac, adjusted);
        self.stage = Stage::AfterSha1;
        self
    }

    /// Appends MESSAGE-INTEGRITY-SHA256 (full 32-byte HMAC-SHA256 with
    /// `key`). Only FINGERPRINT may follow.
    pub fn message_integrity_sha256(&mut self, key: &[u8]) -> &mut Self {
        self.message_integrity_sha256_with(&Sha256Key::new(key))
    }

    /// [`message_integrity_sha256`](Self::message_integrity_sha256) with a
    /// prepared key.
    pub fn message_integrity_sha256_with(&mut self, key: &Sha256Key) -> &mut Self {
        if self.error.is_some() {
            return self;
        }
        if self.stage == Stage::AfterSha256 {
            self.fail(BuildError::AfterIntegrity);
            return self;
        }
        let Some(adjusted) = self.length_with(SHA256_MAC_LEN) else {
            return self;
        };
        let Some(mac) = hmac_sha256(key, &self.buf[self.start..], adjusted) else {
            self.fail(BuildError::Internal);
            return self;
        };
        self.push_security(attr::MESSAGE_INTEGRITY_SHA256, &mac, adjusted);
        self.stage = Stage::AfterSha256;
        self
    }

    /// Appends a computed attribute (`value` is a multiple of 4 bytes) and
    /// sets the header length to `length`.
    fn push_security(&mut self, typ: u16, value: &[u8], length: u16) {
        // `value` is a MAC or CRC: 4, 20 or 32 bytes.
        let len = value.len() as u16;
        self.buf.extend_from_slice(&typ.to_be_bytes());
        self.buf.extend_from_slice(&len.to_be_bytes());
        self.buf.extend_from_slice(value);
        self.set_length(length);
    }

    /// Completes the message: appends the requested integrity attribute,
    /// then FINGERPRINT if asked (always last), and writes the final
    /// length. Returns the message's length; it occupies the last that
    /// many bytes of the buffer. On error the buffer is restored.
    pub fn finish(
        mut self,
        integrity: Option<Integrity<'_>>,
        fingerprint: bool,
    ) -> Result<usize, BuildError> {
        match integrity {
            Some(Integrity::Sha1(key)) => {
                self.message_integrity(key);
            }
            Some(Integrity::Sha256(key)) => {
                self.message_integrity_sha256(key);
            }
            Some(Integrity::Sha1Prepared(key)) => {
                self.message_integrity_with(key);
            }
            Some(Integrity::Sha256Prepared(key)) => {
                self.message_integrity_sha256_with(key);
            }
            None => {}
        }
        if fingerprint && self.error.is_none() {
            if let Some(length) = self.length_with(4) {
                // The CRC covers the header with its final length.
                self.set_length(length);
                let crc = fingerprint::compute(&self.buf[self.start..]);
                self.push_security(attr::FINGERPRINT, &crc.to_be_bytes(), length);
            }
        }
        if let Some(e) = self.error {
            // `Drop` truncates the partial message.
            return Err(e);
        }
        // The body length was bounded by `length_with` on every append.
        let body = self.body_len() as u16;
        self.set_length(body);
        self.finished = true;
        Ok(self.buf.len() - self.start)
    }
}

impl Drop for MessageBuilder<'_> {
    fn drop(&mut self) {
        if !self.finished {
            self.buf.truncate(self.start);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stun::message::Message;
    use crate::stun::ParseError;

    const TID: TransactionId = [9; 12];

    #[test]
    fn appends_after_existing_bytes() {
        let mut buf = vec![0xAA; 3];
        let b = MessageBuilder::new(&mut buf, Class::Request, Method::BINDING, TID);
        let len = b.finish(None, true).expect("fits");
        assert_eq!(len, 28);
        assert_eq!(&buf[..3], &[0xAA; 3]);
        let m = Message::parse(&buf[3..]).expect("valid");
        assert!(m.verify_fingerprint());
    }

    #[test]
    fn dropped_builder_leaves_no_partial_message() {
        let mut buf = vec![1, 2];
        {
            let mut b = MessageBuilder::new(&mut buf, Class::Request, Method::BINDING, TID);
            b.lifetime(5);
        }
        assert_eq!(buf, [1, 2]);
    }

    #[test]
    fn error_restores_buffer() {
        let mut buf = vec![7];
        let mut b = MessageBuilder::new(&mut buf, Class::Request, Method::CHANNEL_BIND, TID);
        b.channel_number(0x7fff).lifetime(1);
        assert_eq!(
            b.finish(None, false),
            Err(BuildError::Attr(AttrError::OutOfRange {
                attr: attr::CHANNEL_NUMBER
            }))
        );
        assert_eq!(buf, [7]);
    }

    #[test]
    fn too_long() {
        let mut buf = Vec::new();
        let big = vec![0u8; 0xFFFC - 4];
        let mut b = MessageBuilder::new(&mut buf, Class::Indication, Method::SEND, TID);
        b.data(&big);
        assert_eq!(b.finish(None, false).map(|n| n - 20), Ok(0xFFFC));
        buf.clear();
        let mut b = MessageBuilder::new(&mut buf, Class::Indication, Method::SEND, TID);
        b.data(&big);
        assert_eq!(b.finish(None, true), Err(BuildError::TooLong));
        let mut b = MessageBuilder::new(&mut buf, Class::Indication, Method::SEND, TID);
        b.data(&vec![0u8; 70_000]);
        assert_eq!(b.finish(None, false), Err(BuildError::TooLong));
        assert!(buf.is_empty());
    }

    #[test]
    fn nothing_after_integrity_but_sha256_and_fingerprint() {
        let mut buf = Vec::new();
        let mut b = MessageBuilder::new(&mut buf, Class::Request, Method::REFRESH, TID);
        b.message_integrity(b"k").lifetime(0);
        assert_eq!(b.finish(None, false), Err(BuildError::AfterIntegrity));

        let mut b = MessageBuilder::new(&mut buf, Class::Request, Method::REFRESH, TID);
        b.message_integrity_sha256(b"k").message_integrity(b"k");
        assert_eq!(b.finish(None, false), Err(BuildError::AfterIntegrity));

        let mut b = MessageBuilder::new(&mut buf, Class::Request, Method::REFRESH, TID);
        b.lifetime(0).message_integrity(b"k");
        let len = b
            .finish(Some(Integrity::Sha256(b"k")), true)
            .expect("MI, MI-SHA256, FINGERPRINT is the RFC order");
        let m = Message::parse(&buf[buf.len() - len..]).expect("valid");
        assert!(m.verify_integrity(b"k"));
        assert!(m.verify_integrity_sha256(b"k"));
        assert!(m.verify_fingerprint());
    }

    #[test]
    fn raw_refuses_computed_attributes() {
        let mut buf = Vec::new();
        let mut b = MessageBuilder::new(&mut buf, Class::Request, Method::BINDING, TID);
        b.raw(attr::FINGERPRINT, &[0; 4]);
        assert_eq!(
            b.finish(None, false),
            Err(BuildError::ComputedAttribute(attr::FINGERPRINT))
        );
    }

    #[test]
    fn padding_is_zero_and_lengths_unpadded() {
        let mut buf = Vec::new();
        let mut b = MessageBuilder::new(&mut buf, Class::Request, Method::BINDING, TID);
        b.software("abcde").even_port(true);
        b.finish(None, false).expect("fits");
        assert_eq!(&buf[20..32], b"\x80\x22\x00\x05abcde\0\0\0");
        assert_eq!(&buf[32..40], b"\x00\x18\x00\x01\x80\0\0\0");
        assert_eq!(Message::parse(&buf).err(), None::<ParseError>);
    }

    #[test]
    fn no_allocation_with_capacity() {
        let mut buf = Vec::with_capacity(512);
        let ptr = buf.as_ptr();
        for _ in 0..3 {
            buf.clear();
            let mut b = MessageBuilder::new(&mut buf, Class::Success, Method::ALLOCATE, TID);
            b.xor_relayed_address("[2001:db8::1]:50000".parse().expect("addr"))
                .lifetime(600)
                .xor_mapped_address("192.0.2.1:4000".parse().expect("addr"));
            b.finish(Some(Integrity::Sha1(&[1; 16])), true)
                .expect("fits");
        }
        assert_eq!(buf.as_ptr(), ptr, "the buffer was never reallocated");
    }
}
