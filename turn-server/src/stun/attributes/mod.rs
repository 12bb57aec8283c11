//! Typed attribute values: decoded from a [`Message`](super::Message) with
//! [`Message::get`](super::Message::get), encoded with
//! [`MessageBuilder::add`](super::MessageBuilder::add).
//!
//! Decoders borrow from the message (text and data are `&str` / `&[u8]`
//! into the receive buffer) and check every length; encoders append to the
//! builder's buffer.

pub(crate) mod address;
mod error_code;
mod family;
mod icmp;
mod password;
mod text;
mod turn;
mod unknown;

pub use address::{
    AlternateServer, MappedAddress, XorMappedAddress, XorPeerAddress, XorRelayedAddress,
};
pub use error_code::ErrorCode;
pub use family::{AdditionalAddressFamily, AddressFamily, RequestedAddressFamily};
pub use icmp::Icmp;
pub use password::{PasswordAlgorithm, PasswordAlgorithms, UserHash};
pub use text::{
    Nonce, Realm, Software, Username, MAX_USERNAME_DECODE, TEXT_CHAR_LIMIT, USERNAME_ENCODE_LIMIT,
};
pub use turn::{
    ChannelNumber, Data, DontFragment, EvenPort, Lifetime, RequestedTransport, ReservationToken,
};
pub use unknown::UnknownAttributes;

use super::error::AttrError;
use super::header::TransactionId;

/// An attribute with a typed value.
///
/// `'a` is the lifetime of the bytes a decoded value borrows.
pub trait Attribute<'a>: Sized {
    /// The attribute type number.
    const TYPE: u16;

    /// Decodes a value (without padding). `transaction_id` is needed by
    /// the XOR-address attributes.
    fn decode(value: &'a [u8], transaction_id: &TransactionId) -> Result<Self, AttrError>;

    /// Length of the encoded value, before padding.
    fn value_len(&self) -> usize;

    /// Appends exactly [`value_len`](Self::value_len) bytes.
    fn encode_value(&self, transaction_id: &TransactionId, out: &mut Vec<u8>);

    /// Checks the limits that apply when sending (RFC 8489 gives tighter
    /// limits for encoding than for decoding).
    fn check(&self) -> Result<(), AttrError> {
        Ok(())
    }
}

/// Checks that a fixed-size attribute has exactly `N` bytes and returns
/// them as an array.
pub(crate) fn fixed<const N: usize>(attr: u16, value: &[u8]) -> Result<&[u8; N], AttrError> {
    value.try_into().map_err(|_| AttrError::BadLength {
        attr,
        len: value.len(),
    })
}
