//! The plaintext of a synthetic media frame: who sent it, on which track,
//! spatial layer (index, rid, picture size) and temporal layer, its number
//! and send time, then padding to the preset size. The padding is a function
//! of the header, so a receiver can check every byte; and what a receiver
//! says it got (which layer) comes from this verified plaintext, not from
//! what the SFU's RTP says.

use thiserror::Error;

use crate::media::generator::Kind;

const MAGIC: [u8; 2] = *b"LT";
const VERSION: u8 = 2;
/// Bytes of the header.
pub const HEADER_LEN: usize = 28;

/// The header of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Sender index (also its SFrame key id).
    pub sender: u32,
    /// Audio or video.
    pub kind: Kind,
    /// Spatial (simulcast) layer index, 0 = lowest.
    pub layer: u8,
    /// The layer's rid as one ASCII byte (`q`, `h`, `f`), 0 without simulcast.
    pub rid: u8,
    /// Picture width and height (0 × 0 for audio).
    pub size: (u16, u16),
    /// Temporal layer id (0 for audio).
    pub temporal: u8,
    /// Keyframe flag.
    pub keyframe: bool,
    /// Frame number within (sender, kind, layer).
    pub number: u32,
    /// Send time, µs since the process epoch.
    pub sent_us: u64,
}

/// Why a frame's content is not what its sender wrote.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum FrameError {
    /// Shorter than a header.
    #[error("frame of {0} bytes is shorter than a header")]
    Short(usize),
    /// No magic.
    #[error("bad magic or version")]
    Magic,
    /// A padding byte differs.
    #[error("padding byte {0} differs")]
    Padding(usize),
}

/// A seed from every header byte, so a change anywhere in the header also
/// changes the expected padding.
fn seed(header: &[u8]) -> u32 {
    header.iter().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(*b)).wrapping_mul(0x0100_0193)
    })
}

fn pad_byte(seed: u32, i: usize) -> u8 {
    (seed.wrapping_add((i as u32).wrapping_mul(0x9e37_79b1)) >> 13) as u8
}

impl FrameHeader {
    /// The plaintext: header then padding up to `len` bytes (at least the header).
    pub fn encode(&self, len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len.max(HEADER_LEN));
        out.extend_from_slice(&MAGIC);
        out.push(VERSION);
        out.push(match self.kind {
            Kind::Audio => 0,
            Kind::Video => 1,
        });
        out.push(self.layer);
        out.push(u8::from(self.keyframe));
        out.push(self.temporal);
        out.push(self.rid);
        out.extend_from_slice(&self.sender.to_be_bytes());
        out.extend_from_slice(&self.number.to_be_bytes());
        out.extend_from_slice(&self.sent_us.to_be_bytes());
        out.extend_from_slice(&self.size.0.to_be_bytes());
        out.extend_from_slice(&self.size.1.to_be_bytes());
        let seed = seed(&out);
        out.extend((HEADER_LEN..len).map(|i| pad_byte(seed, i)));
        out
    }

    /// Parses and checks a plaintext.
    pub fn decode(bytes: &[u8]) -> Result<FrameHeader, FrameError> {
        if bytes.len() < HEADER_LEN {
            return Err(FrameError::Short(bytes.len()));
        }
        if bytes[..3] != [MAGIC[0], MAGIC[1], VERSION] || bytes[3] > 1 {
            return Err(FrameError::Magic);
        }
        let u32_at =
            |i: usize| u32::from_be_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
        let u16_at = |i: usize| u16::from_be_bytes([bytes[i], bytes[i + 1]]);
        let mut t = [0u8; 8];
        t.copy_from_slice(&bytes[16..24]);
        let h = FrameHeader {
            kind: if bytes[3] == 0 {
                Kind::Audio
            } else {
                Kind::Video
            },
            layer: bytes[4],
            keyframe: bytes[5] == 1,
            temporal: bytes[6],
            rid: bytes[7],
            size: (u16_at(24), u16_at(26)),
            sender: u32_at(8),
            number: u32_at(12),
            sent_us: u64::from_be_bytes(t),
        };
        let seed = seed(&bytes[..HEADER_LEN]);
        if let Some(i) = (HEADER_LEN..bytes.len()).find(|&i| bytes[i] != pad_byte(seed, i)) {
            return Err(FrameError::Padding(i));
        }
        Ok(h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_every_byte_checked() {
        let h = FrameHeader {
            sender: 7,
            kind: Kind::Video,
            layer: 2,
            rid: b'f',
            size: (1280, 720),
            temporal: 1,
            keyframe: true,
            number: 1234,
            sent_us: 987_654_321,
        };
        let bytes = h.encode(500);
        assert_eq!(bytes.len(), 500);
        assert_eq!(FrameHeader::decode(&bytes), Ok(h));
        for i in [0, 3, 6, 7, 20, 25, 27, 100, 499] {
            let mut bad = bytes.clone();
            bad[i] ^= 0x01;
            assert_ne!(FrameHeader::decode(&bad), Ok(h), "byte {i}");
        }
        assert_eq!(
            FrameHeader::decode(&bytes[..10]),
            Err(FrameError::Short(10))
        );
        assert_eq!(h.encode(3).len(), HEADER_LEN);
    }
}
