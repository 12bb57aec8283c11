//! ChannelData messages (RFC 8656 §12.4): the 4-byte framing that replaces
//! a 36+-byte Send/Data indication once a channel is bound.
//!
//! ```text
//! 0                   1                   2                   3
//! |        Channel Number         |            Length             |
//! |                    Application Data ...                       |
//! ```
//!
//! Channel numbers 0x4000..=0x4FFF are RFC 8656's; 0x5000..=0x7FFE, valid in
//! RFC 5766 and still used by older clients (coturn's among them), are
//! accepted too; 0x7FFF is not (RFC 8656 §12 reserves 0x5000..=0x7FFF only
//! to avoid DTLS-SRTP multiplexing collisions, which a TURN port does not
//! have). The first two bits, 0b01, are what tell
//! ChannelData from STUN (0b00) on a shared socket.

use thiserror::Error;

use super::wire::{pad4, push_padding};

/// Smallest valid channel number.
pub const MIN_CHANNEL: u16 = 0x4000;
/// Largest valid channel number.
pub const MAX_CHANNEL: u16 = 0x7FFE;
/// Size of the ChannelData header.
pub const HEADER_LEN: usize = 4;

/// True for channel numbers a client may bind: [`MIN_CHANNEL`]..=[`MAX_CHANNEL`]
/// (RFC 8656's 0x4000..=0x4FFF widened to RFC 5766's range, see above).
pub const fn is_valid_channel(channel: u16) -> bool {
    channel >= MIN_CHANNEL && channel <= MAX_CHANNEL
}

/// Why bytes are not a valid ChannelData message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
pub enum ChannelDataError {
    /// Fewer than 4 bytes.
    #[error("shorter than the 4-byte ChannelData header")]
    Truncated,
    /// The first two bits are not 0b01.
    #[error("first two bits are not 0b01")]
    NotChannelData,
    /// A channel number outside 0x4000..=0x7FFE (RFC 5766's range; 0x7FFF is
    /// reserved).
    #[error("channel number {0:#06x} outside 0x4000..=0x7FFE")]
    InvalidChannel(u16),
    /// The length field exceeds the bytes present.
    #[error("length {declared} exceeds the {available} bytes present")]
    LengthOverrun {
        /// The length field.
        declared: u16,
        /// Bytes after the header.
        available: usize,
    },
    /// Data longer than the 16-bit length field (encoding).
    #[error("data longer than 65535 bytes")]
    TooLong,
}

/// Parses a ChannelData message: returns the channel number and the data,
/// borrowed from `buf`.
///
/// Bytes after `length` are ignored: over UDP they are optional padding
/// (RFC 8656 §12.5); over TCP/TLS [`framing`](super::framing) has already
/// cut the frame at the padded length.
pub fn parse(buf: &[u8]) -> Result<(u16, &[u8]), ChannelDataError> {
    let Some((&[c0, c1, l0, l1], rest)) = buf.split_first_chunk::<HEADER_LEN>() else {
        return Err(ChannelDataError::Truncated);
    };
    if c0 & 0xC0 != 0x40 {
        return Err(ChannelDataError::NotChannelData);
    }
    let channel = u16::from_be_bytes([c0, c1]);
    if !is_valid_channel(channel) {
        return Err(ChannelDataError::InvalidChannel(channel));
    }
    let declared = u16::from_be_bytes([l0, l1]);
    match rest.get(..usize::from(declared)) {
        Some(data) => Ok((channel, data)),
        None => Err(ChannelDataError::LengthOverrun {
            declared,
            available: rest.len(),
        }),
    }
}

/// Appends a ChannelData message to `buf` and returns its length. Padding
/// to a multiple of 4 is mandatory over TCP/TLS (RFC 8656 §12.5) and
/// pointless over UDP, hence `pad_to_4`.
pub fn encode(
    buf: &mut Vec<u8>,
    channel: u16,
    data: &[u8],
    pad_to_4: bool,
) -> Result<usize, ChannelDataError> {
    if !is_valid_channel(channel) {
        return Err(ChannelDataError::InvalidChannel(channel));
    }
    let len = u16::try_from(data.len()).map_err(|_| ChannelDataError::TooLong)?;
    let start = buf.len();
    buf.extend_from_slice(&channel.to_be_bytes());
    buf.extend_from_slice(&len.to_be_bytes());
    buf.extend_from_slice(data);
    if pad_to_4 {
        push_padding(buf, data.len());
    }
    Ok(buf.len() - start)
}

/// Length of a ChannelData frame on a stream: header plus data padded to
/// 4.
pub const fn stream_frame_len(data_len: u16) -> usize {
    HEADER_LEN + pad4(data_len as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_valid() {
        let buf = [0x40, 0x01, 0x00, 0x03, 1, 2, 3];
        assert_eq!(parse(&buf), Ok((0x4001, &[1u8, 2, 3][..])));
        // Padding (or anything) after the data is ignored.
        let padded = [0x4f, 0xff, 0x00, 0x01, 9, 0, 0, 0];
        assert_eq!(parse(&padded), Ok((0x4fff, &[9u8][..])));
        assert_eq!(parse(&[0x40, 0, 0, 0]), Ok((0x4000, &[][..])));
        // RFC 5766's range, kept for coturn-era clients.
        assert_eq!(parse(&[0x50, 0x00, 0, 0]), Ok((0x5000, &[][..])));
        assert_eq!(parse(&[0x7f, 0xfe, 0, 0]), Ok((0x7ffe, &[][..])));
    }

    #[test]
    fn parse_errors() {
        assert_eq!(parse(&[0x40, 0, 0]), Err(ChannelDataError::Truncated));
        assert_eq!(
            parse(&[0x00, 0x01, 0, 0]),
            Err(ChannelDataError::NotChannelData)
        );
        assert_eq!(
            parse(&[0x80, 0x00, 0, 0]),
            Err(ChannelDataError::NotChannelData)
        );
        assert_eq!(
            parse(&[0x7f, 0xff, 0, 0]),
            Err(ChannelDataError::InvalidChannel(0x7fff))
        );
        assert_eq!(
            parse(&[0x7f, 0xff, 0, 0]),
            Err(ChannelDataError::InvalidChannel(0x7fff))
        );
        assert_eq!(
            parse(&[0x40, 0x00, 0, 5, 1, 2, 3, 4]),
            Err(ChannelDataError::LengthOverrun {
                declared: 5,
                available: 4
            })
        );
    }

    #[test]
    fn encode_with_and_without_padding() {
        let mut buf = Vec::new();
        assert_eq!(encode(&mut buf, 0x4000, &[1, 2, 3, 4, 5], false), Ok(9));
        assert_eq!(encode(&mut buf, 0x4000, &[1, 2, 3, 4, 5], true), Ok(12));
        assert_eq!(&buf[9..], &[0x40, 0, 0, 5, 1, 2, 3, 4, 5, 0, 0, 0]);
        assert_eq!(stream_frame_len(5), 12);
        assert_eq!(
            encode(&mut buf, 0x3fff, &[], false),
            Err(ChannelDataError::InvalidChannel(0x3fff))
        );
        assert_eq!(
            encode(&mut buf, 0x4000, &vec![0; 65536], false),
            Err(ChannelDataError::TooLong)
        );
        assert_eq!(buf.len(), 21, "failed encodes append nothing");
    }
}
