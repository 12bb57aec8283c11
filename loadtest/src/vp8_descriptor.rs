//! The VP8 RTP payload descriptor (RFC 7741 §4.2) as a browser writes it for
//! temporal layers: X, I with a 15-bit picture id, L with TL0PICIDX, T with
//! TID and the layer-sync bit Y. Written by the loadtest's packetizer in
//! front of every packet of a frame and read back by its receivers; the
//! frame after it stays an SFrame the SFU cannot read.

use thiserror::Error;

const X: u8 = 0x80;
const S: u8 = 0x10;
const PID: u8 = 0x07;
const I: u8 = 0x80;
const L: u8 = 0x40;
const T: u8 = 0x20;
const K: u8 = 0x10;
const M: u8 = 0x80;
const Y: u8 = 0x20;

/// Temporal-layer fields of a descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Temporal {
    /// Temporal layer id (0 … 3).
    pub tid: u8,
    /// Y: the frame depends only on TL0 frames (a receiver may switch up here).
    pub layer_sync: bool,
    /// TL0PICIDX: counts TL0 frames; the TL0 frame this one belongs to.
    pub tl0_pic_idx: u8,
}

/// One packet's VP8 payload descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Vp8Descriptor {
    /// S: first packet of the frame (partition 0).
    pub start: bool,
    /// 15-bit picture id, when present.
    pub picture_id: Option<u16>,
    /// TID, Y and TL0PICIDX, when present.
    pub temporal: Option<Temporal>,
}

/// Why a payload does not start with a VP8 descriptor.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum DescriptorError {
    /// The payload ends inside the descriptor.
    #[error("VP8 payload descriptor truncated ({0} bytes)")]
    Truncated(usize),
}

impl Vp8Descriptor {
    /// Appends the descriptor to `out`.
    pub fn write(&self, out: &mut Vec<u8>) {
        let extended = self.picture_id.is_some() || self.temporal.is_some();
        let mut first = if self.start { S } else { 0 };
        if !extended {
            out.push(first);
            return;
        }
        first |= X;
        out.push(first);
        let mut ext = 0;
        if self.picture_id.is_some() {
            ext |= I;
        }
        if self.temporal.is_some() {
            ext |= L | T;
        }
        out.push(ext);
        if let Some(id) = self.picture_id {
            out.push(M | ((id >> 8) as u8 & 0x7f));
            out.push(id as u8);
        }
        if let Some(t) = self.temporal {
            out.push(t.tl0_pic_idx);
            out.push((t.tid & 0x03) << 6 | if t.layer_sync { Y } else { 0 });
        }
    }

    /// Parses the descriptor at the start of `payload`; returns it and its length.
    pub fn parse(payload: &[u8]) -> Result<(Vp8Descriptor, usize), DescriptorError> {
        let short = || DescriptorError::Truncated(payload.len());
        let &first = payload.first().ok_or_else(short)?;
        let mut d = Vp8Descriptor {
            start: first & S != 0 && first & PID == 0,
            ..Vp8Descriptor::default()
        };
        if first & X == 0 {
            return Ok((d, 1));
        }
        let &ext = payload.get(1).ok_or_else(short)?;
        let mut at = 2;
        if ext & I != 0 {
            let &b = payload.get(at).ok_or_else(short)?;
            if b & M != 0 {
                let &lo = payload.get(at + 1).ok_or_else(short)?;
                d.picture_id = Some(u16::from(b & 0x7f) << 8 | u16::from(lo));
                at += 2;
            } else {
                d.picture_id = Some(u16::from(b & 0x7f));
                at += 1;
            }
        }
        let mut tl0_pic_idx = None;
        if ext & L != 0 {
            tl0_pic_idx = Some(*payload.get(at).ok_or_else(short)?);
            at += 1;
        }
        if ext & (T | K) != 0 {
            let &b = payload.get(at).ok_or_else(short)?;
            at += 1;
            if ext & T != 0 {
                d.temporal = Some(Temporal {
                    tid: b >> 6,
                    layer_sync: b & Y != 0,
                    tl0_pic_idx: tl0_pic_idx.unwrap_or(0),
                });
            }
        }
        Ok((d, at))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_known_bytes() {
        let d = Vp8Descriptor {
            start: true,
            picture_id: Some(0x1234),
            temporal: Some(Temporal {
                tid: 2,
                layer_sync: true,
                tl0_pic_idx: 7,
            }),
        };
        let mut out = Vec::new();
        d.write(&mut out);
        // X|S, I|L|T, M|0x12, 0x34, TL0PICIDX, TID 2 | Y.
        assert_eq!(out, [0x90, 0xe0, 0x92, 0x34, 7, 0xa0]);
        out.extend_from_slice(b"frame");
        assert_eq!(Vp8Descriptor::parse(&out), Ok((d, 6)));
        let plain = Vp8Descriptor {
            start: false,
            ..Vp8Descriptor::default()
        };
        let mut one = Vec::new();
        plain.write(&mut one);
        assert_eq!(one, [0x00]);
        assert_eq!(Vp8Descriptor::parse(&one), Ok((plain, 1)));
        // A 7-bit picture id (M clear), as older senders write.
        assert_eq!(
            Vp8Descriptor::parse(&[0x90, 0x80, 0x05, 0xff]).map(|(d, n)| (d.picture_id, n)),
            Ok((Some(5), 3))
        );
        for n in 1..6 {
            assert_eq!(
                Vp8Descriptor::parse(&out[..n]),
                Err(DescriptorError::Truncated(n)),
                "{n}"
            );
        }
        assert!(Vp8Descriptor::parse(&[]).is_err());
    }

    #[test]
    fn any_bytes_parse_or_are_refused_within_the_input() {
        // Every first and extension byte, with every tail length up to the
        // longest descriptor: never a panic, never a length past the input.
        for head in 0..=u16::MAX {
            let [a, b] = head.to_be_bytes();
            let bytes = [a, b, 0xff, 0x80, 0x01, 0xe0];
            for len in 0..=bytes.len() {
                if let Ok((_, n)) = Vp8Descriptor::parse(&bytes[..len]) {
                    assert!(n <= len, "{head:04x}/{len}");
                }
            }
        }
    }
}
