//! Cutting STUN and ChannelData messages out of a TCP/TLS byte stream
//! (RFC 8656 §12.5, RFC 8489 §6.2.2).
//!
//! A stream carries STUN messages (first two bits 0b00, 20 + length bytes)
//! and ChannelData messages (0b01, 4 + length padded to 4) back to back.
//! [`next_frame_len`] looks at the front of the receive buffer and says
//! how many bytes the next message takes. It returns
//! [`Framing::Complete`] only when all of them are present, and the caller
//! removes exactly that many bytes, so a lying length can only make the
//! caller wait (bounded by the cap) or close the connection: it can never
//! shift the frame boundaries onto garbage.

use super::channel_data::{self, stream_frame_len};
use super::header::{HEADER_LEN, MAGIC_COOKIE, MAX_BODY_LEN};

/// Largest frame [`next_frame_len`] accepts: a STUN message with the
/// largest 16-bit length (ChannelData frames are at most 4 + 65536).
pub const MAX_FRAME_LEN: usize = HEADER_LEN + MAX_BODY_LEN;

/// What the front of a stream buffer holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// A whole frame of this many bytes is present: hand
    /// `&buf[..len]` to the STUN or ChannelData parser and drop it.
    Complete(usize),
    /// The frame is not complete yet: read more (the buffer never needs
    /// more than the cap).
    NeedMore,
    /// Not STUN or ChannelData, or a length no valid frame has: close the
    /// connection (there is no way to resynchronise a stream).
    Invalid,
}

/// [`next_frame_len_capped`] with the protocol maximum.
pub fn next_frame_len(buf: &[u8]) -> Framing {
    next_frame_len_capped(buf, MAX_FRAME_LEN)
}

/// Length of the frame at the front of `buf`, refusing frames longer than
/// `max_len` (so per-connection buffers stay bounded).
///
/// Invalid: first two bits 0b10/0b11; a STUN length not a multiple of 4 or
/// a wrong magic cookie (checked once 8 bytes are present); a channel
/// number outside [`MIN_CHANNEL`](super::channel_data::MIN_CHANNEL)..=
/// [`MAX_CHANNEL`](super::channel_data::MAX_CHANNEL); a frame longer than
/// `max_len`.
pub fn next_frame_len_capped(buf: &[u8], max_len: usize) -> Framing {
    let Some(&[b0, b1, l0, l1]) = buf.first_chunk::<4>() else {
        // Even the first byte alone can already be rejected.
        return match buf.first() {
            Some(b) if b & 0x80 != 0 => Framing::Invalid,
            _ => Framing::NeedMore,
        };
    };
    let length = u16::from_be_bytes([l0, l1]);
    let frame_len = match b0 >> 6 {
        0b00 => {
            if length % 4 != 0 {
                return Framing::Invalid;
            }
            if let Some(cookie) = buf.get(4..8) {
                if cookie != MAGIC_COOKIE.to_be_bytes() {
                    return Framing::Invalid;
                }
            }
            HEADER_LEN + usize::from(length)
        }
        0b01 => {
            if !channel_data::is_valid_channel(u16::from_be_bytes([b0, b1])) {
                return Framing::Invalid;
            }
            stream_frame_len(length)
        }
        _ => return Framing::Invalid,
    };
    if frame_len > max_len {
        Framing::Invalid
    } else if buf.len() >= frame_len {
        Framing::Complete(frame_len)
    } else {
        Framing::NeedMore
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stun(len: u16) -> Vec<u8> {
        let mut v = vec![0x00, 0x01];
        v.extend_from_slice(&len.to_be_bytes());
        v.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
        v.extend_from_slice(&[0; 12]);
        v.resize(20 + usize::from(len), 0);
        v
    }

    #[test]
    fn stun_frames() {
        let m = stun(8);
        assert_eq!(next_frame_len(&m), Framing::Complete(28));
        for n in 0..m.len() {
            assert_eq!(next_frame_len(&m[..n]), Framing::NeedMore, "{n}");
        }
        let mut two = m.clone();
        two.extend_from_slice(&stun(0));
        assert_eq!(next_frame_len(&two), Framing::Complete(28));
    }

    #[test]
    fn channel_data_frames_include_padding() {
        let f = [0x40, 0x00, 0x00, 0x05, 1, 2, 3, 4, 5, 0, 0, 0];
        assert_eq!(next_frame_len(&f), Framing::Complete(12));
        assert_eq!(next_frame_len(&f[..9]), Framing::NeedMore);
        assert_eq!(next_frame_len(&[0x4f, 0xff, 0, 0]), Framing::Complete(4));
    }

    #[test]
    fn invalid_frames() {
        assert_eq!(next_frame_len(&[0x80]), Framing::Invalid);
        assert_eq!(next_frame_len(&[0xC0, 0, 0, 0]), Framing::Invalid);
        // STUN length not a multiple of 4.
        assert_eq!(next_frame_len(&[0x00, 0x01, 0x00, 0x05]), Framing::Invalid);
        // Bad cookie, detected as soon as 8 bytes are present.
        let mut m = stun(0);
        m[4] = 0;
        assert_eq!(next_frame_len(&m[..7]), Framing::NeedMore);
        assert_eq!(next_frame_len(&m[..8]), Framing::Invalid);
        // Reserved channel numbers.
        assert_eq!(next_frame_len(&[0x7f, 0xff, 0, 0]), Framing::Invalid);
        assert_eq!(next_frame_len(&[0x7f, 0xff, 0, 0]), Framing::Invalid);
    }

    #[test]
    fn cap_bounds_buffering() {
        let header = [0x40, 0x00, 0xff, 0xff];
        assert_eq!(next_frame_len(&header), Framing::NeedMore);
        assert_eq!(next_frame_len_capped(&header, 4096), Framing::Invalid);
        let m = stun(0xFFFC);
        assert_eq!(next_frame_len(&m), Framing::Complete(MAX_FRAME_LEN));
        assert_eq!(next_frame_len_capped(&m, 1500), Framing::Invalid);
    }
}
