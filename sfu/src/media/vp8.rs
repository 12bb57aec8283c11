//! What the SFU may read of a VP8 packet: the RTP payload descriptor that
//! the browser's packetizer writes in clear (RFC 7741 section 4.2) and the
//! first bytes of the frame that the web client's SFrame leaves clear and
//! authenticated (3-byte frame tag; on keyframes also the start code and
//! the dimensions, 10 bytes; see `sfu/web/e2ee/sframe.js`). Enough to find
//! keyframes, their size, temporal layers and layer-sync points — never the
//! encrypted bytes.
//!
//! Rewriting the picture id and TL0PICIDX (so that a subscriber's stream
//! stays continuous across layer switches) is str0m's `Vp8Descriptor`
//! patch, applied as the packet is serialized, without copying the payload.

/// The fields of one VP8 RTP packet the SFU decides on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Vp8Info {
    /// First packet of a frame (S bit set, partition 0).
    pub frame_start: bool,
    /// First packet of a keyframe (a frame start whose frame tag has P = 0).
    pub keyframe: bool,
    /// Keyframe dimensions (width, height) from its clear header.
    pub size: Option<(u16, u16)>,
    /// Temporal layer id, if the descriptor carries one.
    pub temporal: Option<u8>,
    /// Layer sync (Y): the frame depends only on temporal layer 0.
    pub layer_sync: bool,
    /// Picture id (7 or 15 bits).
    pub picture_id: Option<u16>,
    /// The picture id field is 15 bits wide.
    pub long_picture_id: bool,
    /// TL0PICIDX.
    pub tl0_pic_idx: Option<u8>,
}

/// Why a payload is not a VP8 packet the SFU can read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Vp8Error {
    /// The descriptor runs past the payload, or leaves no frame bytes.
    #[error("VP8 payload shorter than its descriptor")]
    Short,
}

/// Reads the descriptor and, on a frame start, the clear frame header.
pub fn parse(payload: &[u8]) -> Result<Vp8Info, Vp8Error> {
    let mut at = 0usize;
    let mut next = || {
        let b = payload.get(at).copied().ok_or(Vp8Error::Short);
        at += 1;
        b
    };
    let first = next()?;
    let mut info = Vp8Info::default();
    let extended = first & 0x80 != 0;
    let start = first & 0x10 != 0;
    let partition = first & 0x07;
    if extended {
        let x = next()?;
        let (has_pid, has_tl0, has_tid, has_key) =
            (x & 0x80 != 0, x & 0x40 != 0, x & 0x20 != 0, x & 0x10 != 0);
        if has_pid {
            let b = next()?;
            info.long_picture_id = b & 0x80 != 0;
            info.picture_id = Some(if b & 0x80 != 0 {
                (u16::from(b & 0x7f) << 8) | u16::from(next()?)
            } else {
                u16::from(b)
            });
        }
        if has_tl0 {
            info.tl0_pic_idx = Some(next()?);
        }
        if has_tid || has_key {
            let b = next()?;
            if has_tid {
                info.temporal = Some(b >> 6);
                info.layer_sync = b & 0x20 != 0;
            }
        }
    }
    let frame = payload
        .get(at..)
        .filter(|f| !f.is_empty())
        .ok_or(Vp8Error::Short)?;
    info.frame_start = start && partition == 0;
    if info.frame_start && frame[0] & 0x01 == 0 {
        info.keyframe = true;
        // Frame tag (3) + start code 9d 01 2a (3) + 14-bit width and height.
        if let [_, _, _, 0x9d, 0x01, 0x2a, w0, w1, h0, h1, ..] = *frame {
            let w = u16::from_le_bytes([w0, w1]) & 0x3fff;
            let h = u16::from_le_bytes([h0, h1]) & 0x3fff;
            info.size = Some((w, h));
        }
    }
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A keyframe packet as Chromium sends it: X, S; I with a 15-bit
    /// picture id, L, T; then the frame tag, start code and 640×360.
    fn keyframe() -> Vec<u8> {
        vec![
            0x90,
            0xe0,
            0x80 | 0x12,
            0x34,
            7,
            0x20, // descriptor: pid 0x1234, tl0 7, tid 0 + Y
            0x50,
            0x2a,
            0x01,
            0x9d,
            0x01,
            0x2a,
            0x80,
            0x02,
            0x68,
            0x01,
            0xff,
            0xff,
        ]
    }

    #[test]
    fn reads_a_keyframe_with_its_size_and_layer_fields() {
        let info = parse(&keyframe()).unwrap();
        assert_eq!(
            info,
            Vp8Info {
                frame_start: true,
                keyframe: true,
                size: Some((640, 360)),
                temporal: Some(0),
                layer_sync: true,
                picture_id: Some(0x1234),
                long_picture_id: true,
                tl0_pic_idx: Some(7),
            }
        );
    }

    #[test]
    fn delta_frames_and_continuations_are_not_keyframes() {
        // P = 1 in the frame tag: an inter frame, temporal layer 2.
        let delta = [0x90, 0xe0, 0x05, 3, 0x80, 0x51, 0x00, 0x00, 0xaa];
        let info = parse(&delta).unwrap();
        assert!(info.frame_start && !info.keyframe);
        assert_eq!((info.picture_id, info.temporal), (Some(5), Some(2)));
        // S = 0: a later packet of the keyframe.
        let mut cont = keyframe();
        cont[0] = 0x80;
        assert!(!parse(&cont).unwrap().keyframe);
        // No extension at all: only S and P are known.
        let plain = [0x10, 0x00, 0x00, 0x00];
        let info = parse(&plain).unwrap();
        assert!(info.keyframe && info.size.is_none() && info.temporal.is_none());
    }

    #[test]
    fn truncated_descriptors_are_refused() {
        for n in 0..=6 {
            assert_eq!(parse(&keyframe()[..n]), Err(Vp8Error::Short), "{n} bytes");
        }
    }

    proptest! {
        #[test]
        fn never_panics(payload in proptest::collection::vec(any::<u8>(), 0..32)) {
            let _ = parse(&payload);
        }
    }
}
