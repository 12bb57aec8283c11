//! Errors of the STUN codec. All are small `Copy` values so that rejecting
//! a datagram on the hot path never allocates.

use thiserror::Error;

/// Why bytes are not a well-formed STUN message (RFC 8489 §6, §14).
///
/// A server silently discards such datagrams (and closes a stream whose
/// framing they came from); none of these warrant an error response.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
pub enum ParseError {
    /// Fewer than the 20 header bytes.
    #[error("shorter than the 20-byte STUN header")]
    Truncated,
    /// The two most significant bits are not zero: not STUN (maybe
    /// ChannelData, RTP, DTLS...).
    #[error("first two bits are not 0b00")]
    NotStun,
    /// The magic cookie is not 0x2112A442 (e.g. an RFC 3489 message).
    #[error("bad magic cookie")]
    BadMagicCookie,
    /// The header's length is not a multiple of 4.
    #[error("length {0} is not a multiple of 4")]
    UnalignedLength(u16),
    /// The header's length disagrees with the bytes after the header.
    #[error("header says {declared} bytes follow, {actual} do")]
    LengthMismatch {
        /// The header's length field.
        declared: u16,
        /// Bytes after the header.
        actual: usize,
    },
    /// An attribute's (padded) value runs past the end of the message.
    #[error("attribute {attr:#06x} at offset {offset} overruns the message")]
    AttributeOverrun {
        /// The attribute's type.
        attr: u16,
        /// Offset of its header in the message.
        offset: usize,
    },
    /// Something follows FINGERPRINT, which must be last.
    #[error("attribute after FINGERPRINT")]
    AfterFingerprint,
    /// MESSAGE-INTEGRITY not 20 bytes, MESSAGE-INTEGRITY-SHA256 not 16..=32
    /// bytes in steps of 4, or FINGERPRINT not 4 bytes.
    #[error("attribute {attr:#06x} has invalid length {len}")]
    BadSecurityAttributeLength {
        /// The attribute's type.
        attr: u16,
        /// Its value length.
        len: u16,
    },
}

/// Why an attribute's value cannot be decoded into its typed form.
///
/// A server answers requests carrying such an attribute with 400 Bad
/// Request (or 440/442... where RFC 8656 names a specific code).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
pub enum AttrError {
    /// The value has a length the attribute's format does not allow.
    #[error("attribute {attr:#06x}: invalid length {len}")]
    BadLength {
        /// The attribute's type.
        attr: u16,
        /// Its value length.
        len: usize,
    },
    /// A text attribute is not UTF-8.
    #[error("attribute {attr:#06x}: not UTF-8")]
    InvalidUtf8 {
        /// The attribute's type.
        attr: u16,
    },
    /// A text attribute exceeds its RFC 8489 limit.
    #[error("attribute {attr:#06x}: text too long")]
    TooLong {
        /// The attribute's type.
        attr: u16,
    },
    /// An address family other than 0x01 (IPv4) / 0x02 (IPv6).
    #[error("attribute {attr:#06x}: unknown address family {family:#04x}")]
    UnknownFamily {
        /// The attribute's type.
        attr: u16,
        /// The family byte.
        family: u8,
    },
    /// A numeric field out of its valid range (channel number outside
    /// [`MIN_CHANNEL`](super::channel_data::MIN_CHANNEL)..=[`MAX_CHANNEL`](super::channel_data::MAX_CHANNEL),
    /// error class outside 3..=6, ...).
    #[error("attribute {attr:#06x}: value out of range")]
    OutOfRange {
        /// The attribute's type.
        attr: u16,
    },
}

/// Why a message could not be built. The builder's buffer is restored to
/// its length before the message was started.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
pub enum BuildError {
    /// The attributes would exceed the 16-bit message length.
    #[error("message longer than the 16-bit length field allows")]
    TooLong,
    /// An attribute value violates its format or RFC limits.
    #[error(transparent)]
    Attr(#[from] AttrError),
    /// An attribute other than MESSAGE-INTEGRITY-SHA256 after
    /// MESSAGE-INTEGRITY, or any attribute after MESSAGE-INTEGRITY-SHA256:
    /// receivers would ignore it (RFC 8489 §14.5, §14.6).
    #[error("attribute added after message integrity")]
    AfterIntegrity,
    /// MESSAGE-INTEGRITY, MESSAGE-INTEGRITY-SHA256 or FINGERPRINT passed
    /// as a raw attribute: they are computed by the builder.
    #[error("attribute {0:#06x} is computed, not added raw")]
    ComputedAttribute(u16),
    /// An internal invariant did not hold (the message being built was
    /// shorter than its header). Cannot happen; reported rather than
    /// panicking.
    #[error("internal builder error")]
    Internal,
}
