//! Frames to RTP payloads and back. Video frames are split into payloads of
//! at most 1200 bytes, each starting with a VP8 payload descriptor (S bit on
//! the first packet of a frame; picture id, TL0PICIDX and temporal id on
//! every packet, as Chromium repeats them), the RTP marker on the last, as a
//! browser's VP8 packetizer does with an SFrame-encrypted frame. Audio frames
//! are one packet each, without descriptor (as Opus).

use std::collections::{BTreeMap, HashMap};

use crate::media::temporal::Layering;
use crate::vp8_descriptor::Vp8Descriptor;

/// Largest RTP payload.
pub const MAX_PAYLOAD: usize = 1200;
/// Frames still incomplete when this many newer ones are pending are dropped.
const MAX_PENDING: usize = 16;
/// A partial frame whose newest packet is this many sequence numbers behind
/// the newest packet seen is given up (late packets are reordering no more).
const REORDER_WINDOW: u64 = 64;

/// One RTP payload of a video frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VideoPacket {
    /// Descriptor and a piece of the frame.
    pub payload: Vec<u8>,
    /// Last packet of the frame.
    pub marker: bool,
}

/// Splits an (encrypted) video frame into RTP payloads, each with the
/// descriptor of `layering` (a one-byte descriptor without it).
pub fn packetize_video(frame: &[u8], layering: Option<&Layering>) -> Vec<VideoPacket> {
    let mut descriptor = Vp8Descriptor {
        start: true,
        picture_id: layering.map(|l| l.picture_id),
        temporal: layering.map(|l| l.temporal),
    };
    let mut head = Vec::with_capacity(8);
    descriptor.write(&mut head);
    let chunk = MAX_PAYLOAD - head.len();
    let n = frame.len().div_ceil(chunk).max(1);
    // Equal-sized packets, as libwebrtc balances them.
    let per = frame.len().div_ceil(n).max(1);
    let mut out = Vec::with_capacity(n);
    let mut pieces = frame.chunks(per).peekable();
    while let Some(piece) = pieces.next() {
        let mut payload = Vec::with_capacity(piece.len() + head.len());
        descriptor.write(&mut payload);
        payload.extend_from_slice(piece);
        out.push(VideoPacket {
            payload,
            marker: pieces.peek().is_none(),
        });
        descriptor.start = false;
    }
    out
}

/// A frame put back together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VideoFrame {
    /// The frame without descriptors.
    pub data: Vec<u8>,
    /// The descriptor of its first packet.
    pub descriptor: Vp8Descriptor,
}

#[derive(Default)]
struct Partial {
    first: Option<(u64, Vp8Descriptor)>,
    last: Option<u64>,
    parts: BTreeMap<u64, Vec<u8>>,
}

/// Reassembles video frames from packets by RTP timestamp, sequence number,
/// S bit and marker. Duplicates (retransmissions) are ignored.
#[derive(Default)]
pub struct Reassembler {
    pending: HashMap<u32, Partial>,
    newest: u64,
    /// Frames given up on because packets were missing.
    pub incomplete: u64,
}

impl Reassembler {
    /// Adds one packet; returns the frame if it completed one. A payload
    /// without a whole descriptor is ignored.
    pub fn push(
        &mut self,
        seq: u64,
        rtp_time: u32,
        marker: bool,
        payload: &[u8],
    ) -> Option<VideoFrame> {
        let (descriptor, len) = Vp8Descriptor::parse(payload).ok()?;
        let piece = &payload[len..];
        if seq + REORDER_WINDOW < self.newest {
            return None;
        }
        if seq > self.newest {
            self.newest = seq;
            let before = self.pending.len();
            let newest = self.newest;
            self.pending.retain(|_, p| {
                p.parts
                    .keys()
                    .next_back()
                    .is_some_and(|&s| s + REORDER_WINDOW >= newest)
            });
            self.incomplete += (before - self.pending.len()) as u64;
        }
        let p = self.pending.entry(rtp_time).or_default();
        if descriptor.start {
            p.first = Some((seq, descriptor));
        }
        if marker {
            p.last = Some(seq);
        }
        p.parts.entry(seq).or_insert_with(|| piece.to_vec());
        if let (Some((first, descriptor)), Some(last)) = (p.first, p.last) {
            let complete = last >= first
                && p.parts.len() as u64 == last - first + 1
                && p.parts.keys().next() == Some(&first);
            if complete {
                let p = self.pending.remove(&rtp_time)?;
                let len = p.parts.values().map(Vec::len).sum();
                let mut frame = Vec::with_capacity(len);
                for part in p.parts.values() {
                    frame.extend_from_slice(part);
                }
                return Some(VideoFrame {
                    data: frame,
                    descriptor,
                });
            }
        }
        if self.pending.len() > MAX_PENDING {
            let oldest = self
                .pending
                .iter()
                .min_by_key(|(_, p)| p.parts.keys().next_back().copied().unwrap_or(0))
                .map(|(ts, _)| *ts);
            if let Some(ts) = oldest {
                self.pending.remove(&ts);
                self.incomplete += 1;
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_and_reassemble_in_any_order() {
        let frame: Vec<u8> = (0..5000u32).map(|i| i as u8).collect();
        let layering = crate::media::temporal::TemporalLayers::new(77).next(true);
        let packets = packetize_video(&frame, Some(&layering));
        assert_eq!(packets.len(), 5);
        for (i, p) in packets.iter().enumerate() {
            let (d, n) = Vp8Descriptor::parse(&p.payload).unwrap();
            assert_eq!(n, 6);
            assert_eq!(d.start, i == 0);
            assert_eq!(d.picture_id, Some(77));
            assert_eq!(d.temporal, Some(layering.temporal));
        }
        assert!(packets.iter().all(|p| p.payload.len() <= MAX_PAYLOAD));
        assert_eq!(packets.iter().filter(|p| p.marker).count(), 1);
        assert!(packets[4].marker);
        let mut r = Reassembler::default();
        let order = [2usize, 0, 4, 1, 1, 3];
        let mut got = None;
        for (k, &i) in order.iter().enumerate() {
            let p = &packets[i];
            let out = r.push(100 + i as u64, 9000, p.marker, &p.payload);
            if k < order.len() - 1 {
                assert!(out.is_none());
            } else {
                got = out;
            }
        }
        let got = got.unwrap();
        assert_eq!(got.data, frame);
        assert_eq!(got.descriptor.picture_id, Some(77));
        assert!(got.descriptor.start);
        let small = packetize_video(&[1, 2, 3], None);
        assert_eq!(small.len(), 1);
        assert!(small[0].marker);
        assert_eq!(small[0].payload, [0x10, 1, 2, 3]);
        assert_eq!(
            r.push(200, 1, true, &small[0].payload).unwrap().data,
            vec![1, 2, 3]
        );
        // Far older than the newest packet: ignored.
        assert!(r.push(7, 2, true, &small[0].payload).is_none());
    }

    #[test]
    fn a_lost_packet_drops_the_frame_later() {
        let frame = vec![9u8; 3000];
        let packets = packetize_video(&frame, None);
        let mut r = Reassembler::default();
        let mut seq = 0u64;
        for ts in 0..40u32 {
            for (i, p) in packets.iter().enumerate() {
                seq += 1;
                if ts == 0 && i == 1 {
                    continue;
                }
                let out = r.push(seq, ts * 3000, p.marker, &p.payload);
                assert_eq!(out.is_some(), p.marker && ts != 0);
            }
        }
        assert_eq!(r.incomplete, 1);
        assert!(r.push(1, 0, false, &[]).is_none());
    }
}
