//! A [`MediaPacket`] as the RTP packet that crosses the trunk to another
//! node (docs/cluster.md): the publisher's SSRC, sequence number, timestamp,
//! marker and payload type, the forwarded header extensions, and the payload
//! as received (end-to-end encrypted, never read).
//!
//! The extensions travel in an RFC 8285 two-byte-header block with ids of
//! our own (1 audio level, 2 video orientation, 3 AV1 dependency
//! descriptor), since the publisher's negotiated ids mean nothing to the
//! other node. Transport extensions (transport-cc, abs-send-time, mid, rid)
//! belong to each connection and are not carried.

use std::sync::Arc;

use str0m::rtp::VideoOrientation;

use super::packet::{Extensions, MediaPacket};

const FIXED_HEADER: usize = 12;
/// RFC 8285 two-byte header profile.
const TWO_BYTE_PROFILE: u16 = 0x1000;
const EXT_AUDIO_LEVEL: u8 = 1;
const EXT_VIDEO_ORIENTATION: u8 = 2;
const EXT_DEPENDENCY_DESCRIPTOR: u8 = 3;

/// Why bytes are not an RTP packet of the trunk.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrunkRtpError {
    /// Shorter than its headers say.
    #[error("RTP packet truncated")]
    Truncated,
    /// Not RTP version 2.
    #[error("not RTP version 2")]
    Version,
}

/// The fields of a trunk RTP packet; the payload borrows the datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrunkRtp<'a> {
    /// The publisher's payload type.
    pub pt: u8,
    /// The publisher's SSRC.
    pub ssrc: u32,
    /// Sequence number (16 bits, as on the wire).
    pub seq: u16,
    /// RTP timestamp.
    pub rtp_time: u32,
    /// Marker bit.
    pub marker: bool,
    /// Audio level (-dBov) and voice activity.
    pub audio_level: Option<(i8, bool)>,
    /// Video orientation.
    pub video_orientation: Option<VideoOrientation>,
    /// AV1 dependency descriptor, opaque.
    pub dependency_descriptor: Option<&'a [u8]>,
    /// The payload.
    pub payload: &'a [u8],
}

impl TrunkRtp<'_> {
    /// The forwarded extensions in the engine's form.
    pub fn extensions(&self) -> Extensions {
        Extensions {
            audio_level: self.audio_level.map(|(l, _)| l),
            voice_activity: self.audio_level.map(|(_, v)| v),
            video_orientation: self.video_orientation,
            dependency_descriptor: self.dependency_descriptor.map(Arc::from),
        }
    }
}

/// Appends `packet` as RTP with payload type `pt` to `out`.
pub fn write(packet: &MediaPacket, pt: u8, out: &mut Vec<u8>) {
    let mut ext = Vec::new();
    let e = &packet.extensions;
    if let Some(level) = e.audio_level {
        let v = u8::from(e.voice_activity.unwrap_or(false)) << 7;
        ext.extend_from_slice(&[EXT_AUDIO_LEVEL, 1, v | (level.unsigned_abs() & 0x7f)]);
    }
    if let Some(o) = e.video_orientation {
        ext.extend_from_slice(&[EXT_VIDEO_ORIENTATION, 1, o as u8]);
    }
    if let Some(dd) = e
        .dependency_descriptor
        .as_deref()
        .filter(|d| d.len() <= 255)
    {
        ext.extend_from_slice(&[EXT_DEPENDENCY_DESCRIPTOR, dd.len() as u8]);
        ext.extend_from_slice(dd);
    }
    while ext.len() % 4 != 0 {
        ext.push(0);
    }
    let x = u8::from(!ext.is_empty()) << 4;
    out.push(0x80 | x);
    out.push(u8::from(packet.marker) << 7 | (pt & 0x7f));
    out.extend_from_slice(&(packet.seq as u16).to_be_bytes());
    out.extend_from_slice(&packet.rtp_time.to_be_bytes());
    out.extend_from_slice(&packet.ssrc.to_be_bytes());
    if !ext.is_empty() {
        out.extend_from_slice(&TWO_BYTE_PROFILE.to_be_bytes());
        out.extend_from_slice(&((ext.len() / 4) as u16).to_be_bytes());
        out.extend_from_slice(&ext);
    }
    out.extend_from_slice(&packet.payload);
}

/// Parses a trunk RTP packet. Unknown extensions are skipped; CSRCs and
/// padding are honoured so any RTP packet parses.
pub fn parse(bytes: &[u8]) -> Result<TrunkRtp<'_>, TrunkRtpError> {
    let fixed: &[u8; FIXED_HEADER] = bytes.first_chunk().ok_or(TrunkRtpError::Truncated)?;
    if fixed[0] >> 6 != 2 {
        return Err(TrunkRtpError::Version);
    }
    let padded = fixed[0] & 0x20 != 0;
    let has_ext = fixed[0] & 0x10 != 0;
    let csrcs = usize::from(fixed[0] & 0x0f);
    let mut rtp = TrunkRtp {
        pt: fixed[1] & 0x7f,
        marker: fixed[1] & 0x80 != 0,
        seq: u16::from_be_bytes([fixed[2], fixed[3]]),
        rtp_time: u32::from_be_bytes([fixed[4], fixed[5], fixed[6], fixed[7]]),
        ssrc: u32::from_be_bytes([fixed[8], fixed[9], fixed[10], fixed[11]]),
        audio_level: None,
        video_orientation: None,
        dependency_descriptor: None,
        payload: &[],
    };
    let mut at = FIXED_HEADER + 4 * csrcs;
    if has_ext {
        let head = bytes.get(at..at + 4).ok_or(TrunkRtpError::Truncated)?;
        let profile = u16::from_be_bytes([head[0], head[1]]);
        let words = usize::from(u16::from_be_bytes([head[2], head[3]]));
        let block = bytes
            .get(at + 4..at + 4 + 4 * words)
            .ok_or(TrunkRtpError::Truncated)?;
        if profile == TWO_BYTE_PROFILE {
            read_extensions(block, &mut rtp)?;
        }
        at += 4 + 4 * words;
    }
    let mut end = bytes.len();
    if padded {
        let pad = usize::from(*bytes.last().ok_or(TrunkRtpError::Truncated)?);
        end = end.checked_sub(pad).ok_or(TrunkRtpError::Truncated)?;
    }
    rtp.payload = bytes.get(at..end).ok_or(TrunkRtpError::Truncated)?;
    Ok(rtp)
}

fn read_extensions<'a>(mut block: &'a [u8], rtp: &mut TrunkRtp<'a>) -> Result<(), TrunkRtpError> {
    // Each element is at least its two header bytes, so this ends.
    while let [id, rest @ ..] = block {
        if *id == 0 {
            block = rest; // padding
            continue;
        }
        let [len, rest @ ..] = rest else {
            return Err(TrunkRtpError::Truncated);
        };
        let len = usize::from(*len);
        let data = rest.get(..len).ok_or(TrunkRtpError::Truncated)?;
        match (*id, data) {
            (EXT_AUDIO_LEVEL, [b]) => {
                rtp.audio_level = Some((-((b & 0x7f) as i8), b & 0x80 != 0));
            }
            (EXT_VIDEO_ORIENTATION, [b]) => {
                rtp.video_orientation = Some(VideoOrientation::from(*b));
            }
            (EXT_DEPENDENCY_DESCRIPTOR, dd) => rtp.dependency_descriptor = Some(dd),
            _ => {}
        }
        block = &rest[len..];
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::time::Instant;
    use str0m::format::{Codec, CodecSpec, FormatParams, PayloadParams};
    use str0m::media::Frequency;

    fn packet(payload: &[u8], ext: Extensions) -> MediaPacket {
        MediaPacket {
            ssrc: 0xdead_beef,
            seq: 70_000,
            rtp_time: 123_456,
            marker: true,
            arrival: Instant::now(),
            codec: PayloadParams::new(
                96.into(),
                None,
                CodecSpec {
                    codec: Codec::Vp8,
                    clock_rate: Frequency::NINETY_KHZ,
                    channels: None,
                    format: FormatParams::default(),
                },
            ),
            layer: 0,
            switch_point: false,
            vp8: None,
            extensions: ext,
            payload: payload.into(),
        }
    }

    #[test]
    fn fields_and_extensions_round_trip() {
        let ext = Extensions {
            audio_level: Some(-42),
            voice_activity: Some(true),
            video_orientation: Some(VideoOrientation::Deg90),
            dependency_descriptor: Some(Arc::from(&[1u8, 2, 3, 4, 5][..])),
        };
        let mut out = Vec::new();
        write(&packet(b"opaque", ext), 111, &mut out);
        let rtp = parse(&out).unwrap();
        assert_eq!(
            (rtp.pt, rtp.ssrc, rtp.seq, rtp.rtp_time, rtp.marker),
            (111, 0xdead_beef, (70_000u64 as u16), 123_456, true)
        );
        assert_eq!(rtp.audio_level, Some((-42, true)));
        assert_eq!(rtp.video_orientation, Some(VideoOrientation::Deg90));
        assert_eq!(rtp.dependency_descriptor, Some(&[1u8, 2, 3, 4, 5][..]));
        assert_eq!(rtp.payload, b"opaque");
        let plain = {
            let mut out = Vec::new();
            write(&packet(b"x", Extensions::default()), 96, &mut out);
            out
        };
        assert_eq!(plain.len(), FIXED_HEADER + 1, "no extension block");
        assert_eq!(parse(&plain).unwrap().payload, b"x");
    }

    #[test]
    fn truncated_or_foreign_bytes_are_refused() {
        let mut out = Vec::new();
        let ext = Extensions {
            audio_level: Some(-3),
            ..Default::default()
        };
        write(&packet(b"", ext), 96, &mut out);
        assert_eq!(parse(&out[..14]), Err(TrunkRtpError::Truncated));
        assert_eq!(parse(&[0u8; 12]), Err(TrunkRtpError::Version));
        let mut padded = vec![0xa0, 96, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 200];
        assert_eq!(parse(&padded), Err(TrunkRtpError::Truncated));
        padded[12] = 1;
        assert_eq!(parse(&padded).unwrap().payload, b"");
    }

    proptest! {
        #[test]
        fn any_bytes_parse_or_fail_cleanly(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = parse(&bytes);
        }

        #[test]
        fn payloads_round_trip(payload in proptest::collection::vec(any::<u8>(), 0..1200),
                               level in proptest::option::of(0i8..=127)) {
            let ext = Extensions { audio_level: level.map(|l| -l), voice_activity: level.map(|_| false), ..Default::default() };
            let mut out = Vec::new();
            write(&packet(&payload, ext), 100, &mut out);
            let rtp = parse(&out).unwrap();
            prop_assert_eq!(rtp.payload, &payload[..]);
            prop_assert_eq!(rtp.audio_level, level.map(|l| (-l, false)));
        }
    }
}
