//! STUN (RFC 8489) and TURN (RFC 8656) wire codec.
//!
//! Built for the relay's hot path, which parses every datagram:
//!
//! * [`Message::parse`] validates a message in one pass and returns a
//!   borrowed view (offsets only, no allocation); attribute values are
//!   slices of the receive buffer, decoded on demand with
//!   [`Message::get`] into the typed values of [`attributes`].
//! * [`MessageBuilder`] appends to a caller-owned `Vec<u8>` that can be
//!   reused, so responses and Data indications are built without
//!   allocating once the buffer has capacity.
//! * [`channel_data`] parses/encodes the 4-byte ChannelData framing,
//!   [`framing`] cuts both kinds of message out of TCP/TLS streams.
//! * Nothing panics on any input: every length is checked, reads go
//!   through `slice::get`, and errors are small `Copy` enums.
//!
//! Integrity: [`Message::verify_integrity`] (HMAC-SHA1),
//! [`Message::verify_integrity_sha256`] (HMAC-SHA256, full 32 bytes; see
//! [`Message::verify_integrity_sha256_truncated`]) and
//! [`Message::verify_fingerprint`]; MACs are compared in constant time.
//! Keys come from [`credentials`].

#![warn(missing_docs)]

pub mod attr;
pub mod attributes;
mod builder;
pub mod channel_data;
pub mod credentials;
mod error;
mod fingerprint;
pub mod framing;
mod header;
mod indication;
mod integrity;
mod message;
mod wire;

pub use builder::MessageBuilder;
pub use error::{AttrError, BuildError, ParseError};
pub use fingerprint::FINGERPRINT_XOR;
pub use header::{Class, Method, TransactionId, HEADER_LEN, MAGIC_COOKIE, MAX_BODY_LEN};
pub use indication::{
    encode_data_indication, encode_send_indication, DataIndication, IndicationError, SendIndication,
};
pub use integrity::{
    Integrity, Sha1Key, Sha256Key, SHA1_MAC_LEN, SHA256_MAC_LEN, SHA256_MIN_TRUNCATED_LEN,
};
pub use message::{AttrIter, Message, RawAttr};

/// What a datagram on a TURN server's shared socket is, from its first
/// byte (RFC 8656 §12, RFC 7983 demultiplexing).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PacketKind {
    /// First two bits 0b00: a STUN message.
    Stun,
    /// First two bits 0b01: ChannelData.
    ChannelData,
    /// Anything else (or empty): not for the TURN server.
    Other,
}

/// Classifies a datagram by its first two bits, before any parsing.
pub fn packet_kind(datagram: &[u8]) -> PacketKind {
    match datagram.first().map(|b| b >> 6) {
        Some(0b00) => PacketKind::Stun,
        Some(0b01) => PacketKind::ChannelData,
        _ => PacketKind::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packet_kinds() {
        assert_eq!(packet_kind(&[0x00, 0x01]), PacketKind::Stun);
        assert_eq!(packet_kind(&[0x40]), PacketKind::ChannelData);
        assert_eq!(packet_kind(&[0x80]), PacketKind::Other);
        assert_eq!(packet_kind(&[0xC0]), PacketKind::Other);
        assert_eq!(packet_kind(&[]), PacketKind::Other);
    }
}
