//! A down-track: one sending m-line of a subscriber's connection and the
//! receiver it currently carries. It owns what makes the subscriber's
//! stream its own — payload type mapping and the sequence number and
//! timestamp rebasing — and keeps that stream continuous when it is bound
//! to another receiver (or, with simulcast, another layer).
//!
//! Sans-IO: it computes the outgoing header fields; `engine/forward.rs`
//! writes them into the connection.

use std::time::Instant;

use str0m::format::PayloadParams;
use str0m::media::{MediaKind, Mid, Pt};
use str0m::rtp::Vp8Patch;

use super::allocator::{Choice, Tile};
use super::ids::{PeerKey, ReceiverKey};
use super::packet::MediaPacket;
use super::rebaser::Rebaser;
use super::vp8::Vp8Info;

/// The subscriber's header fields for one forwarded packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outgoing {
    /// Payload type on the subscriber's connection.
    pub pt: Pt,
    /// Extended sequence number of the subscriber's stream.
    pub seq: u64,
    /// RTP timestamp of the subscriber's stream.
    pub rtp_time: u32,
    /// The VP8 picture id sent, if the packet has one.
    pub picture_id: Option<u16>,
    /// VP8 picture id / TL0PICIDX rewrite keeping them continuous.
    pub vp8_patch: Option<Vp8Patch>,
}

/// Why a packet is not sent on a down-track.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// The subscriber's connection has no payload type for the codec.
    CodecMismatch,
    /// Older than the start of this subscriber's stream.
    TooOld,
    /// Another layer than the one carried (not a drop: simulcast at work).
    OtherLayer,
    /// A frame of a temporal layer above the one carried (not a drop
    /// either: the allocator chose a lower frame rate).
    OtherTemporal,
}

impl Skip {
    /// The `reason` label of `sfu_dropped_packets_total`.
    pub fn label(self) -> &'static str {
        match self {
            Skip::CodecMismatch => "codec_mismatch",
            Skip::TooOld => "too_old",
            Skip::OtherLayer => "other_layer",
            Skip::OtherTemporal => "other_temporal",
        }
    }
}

/// One sending m-line of a subscriber.
#[derive(Debug)]
pub struct DownTrack {
    /// The subscriber's connection.
    pub subscriber: PeerKey,
    /// The m-line there.
    pub mid: Mid,
    /// Audio or video (fixed by the m-line).
    pub kind: MediaKind,
    /// The receiver whose packets it carries, if bound.
    pub receiver: Option<ReceiverKey>,
    /// Negotiated: packets may be written.
    pub ready: bool,
    /// The first m-line of a server-offered connection: it carries the
    /// transport, so it is set inactive rather than stopped when unbound.
    pub anchor: bool,
    /// How the subscriber shows it.
    pub tile: Tile,
    /// The spatial layer it should carry; `None`: paused.
    target: Option<u8>,
    /// The spatial layer it carries now (switches to `target` at a switch point).
    current: Option<u8>,
    /// Highest temporal id to carry, and carried now: frames above it are
    /// left out (down at any frame, up at a frame others can follow).
    temporal_target: u8,
    temporal_current: u8,
    /// Layer changes made.
    pub switches: u64,
    /// What the subscriber was last told (`track_layer`): target and
    /// whether its downlink limits it.
    pub told: Option<(Option<Choice>, bool)>,
    rebaser: Rebaser,
    /// Last payload type mapping (publisher PT → subscriber PT).
    pt_map: Option<(Pt, Pt)>,
    vp8: Vp8Continuity,
}

/// Keeps VP8 picture ids and TL0PICIDX continuous when the source changes
/// (decoders use them to find references and detect loss).
#[derive(Debug, Clone, Copy, Default)]
struct Vp8Continuity {
    /// Added (wrapping) to incoming picture ids / TL0PICIDX.
    pid_offset: u16,
    tl0_offset: u8,
    /// Last values sent, to continue from at the next switch.
    last_pid: Option<u16>,
    last_tl0: Option<u8>,
    /// Set at a switch: the next packet recomputes the offsets.
    rebase: bool,
}

impl DownTrack {
    /// An unbound, un-negotiated down-track for m-line `mid` of `subscriber`.
    pub fn new(subscriber: PeerKey, mid: Mid, kind: MediaKind) -> Self {
        Self {
            subscriber,
            mid,
            kind,
            receiver: None,
            ready: false,
            anchor: false,
            tile: Tile::default(),
            target: initial_target(kind),
            current: None,
            temporal_target: ALL_TEMPORAL,
            temporal_current: ALL_TEMPORAL,
            switches: 0,
            told: None,
            rebaser: Rebaser::default(),
            pt_map: None,
            vp8: Vp8Continuity::default(),
        }
    }

    /// Chooses the layer to carry (`None`: pause). The switch happens at
    /// the target layer's next switch point; until then the current layer
    /// keeps flowing.
    pub fn set_target(&mut self, target: Option<u8>) {
        self.target = target;
        if target.is_none() {
            self.current = None;
        }
    }

    /// Chooses the highest temporal id to carry.
    pub fn set_temporal(&mut self, temporal: u8) {
        self.temporal_target = temporal;
    }

    /// The highest temporal id carried now.
    pub fn temporal(&self) -> u8 {
        self.temporal_current
    }

    /// The highest temporal id it should carry.
    pub fn temporal_target(&self) -> u8 {
        self.temporal_target
    }

    /// The layer it should carry.
    pub fn target(&self) -> Option<u8> {
        self.target
    }

    /// The layer it carries now.
    pub fn current(&self) -> Option<u8> {
        self.current
    }

    /// The layer it waits for a keyframe of, if any.
    pub fn awaits_keyframe(&self) -> Option<u8> {
        self.target.filter(|t| self.current != Some(*t))
    }

    /// Back to the state of a fresh binding (another receiver): the next
    /// packet must be a switch point; the outgoing stream stays continuous.
    pub fn rebind(&mut self, receiver: Option<ReceiverKey>) {
        self.receiver = receiver;
        self.current = None;
        self.target = initial_target(self.kind);
    }

    /// Whether `packet` is carried: its layer is the current one, or it is
    /// a switch point of the target layer (which then becomes current).
    fn admit(&mut self, packet: &MediaPacket) -> bool {
        let Some(target) = self.target else {
            return false;
        };
        if packet.layer == target && self.current != Some(target) && packet.switch_point {
            if self.current.is_some() {
                self.switches += 1;
            }
            self.current = Some(target);
            self.rebaser.restart();
            self.vp8.rebase = true;
        }
        self.current == Some(packet.layer)
    }
    /// Whether a VP8 packet's temporal layer is carried. The choice moves
    /// at frame starts only (every packet of a frame names the same
    /// temporal id): down at once (no frame depends on a higher temporal
    /// id), up at a base-layer or layer-sync frame, which depends on base
    /// frames only.
    fn admit_temporal(&mut self, info: &Vp8Info) -> bool {
        let Some(tid) = info.temporal else {
            return true;
        };
        if info.frame_start
            && self.temporal_target != self.temporal_current
            && (self.temporal_target < self.temporal_current || tid == 0 || info.layer_sync)
        {
            self.temporal_current = self.temporal_target;
        }
        // All layers chosen: nothing is left out (a fourth temporal id too).
        tid <= self.temporal_current || self.temporal_current == ALL_TEMPORAL
    }

    /// The subscriber's header fields for `packet` sent at `now`.
    /// `out_pt` maps the publisher's codec to this connection's payload
    /// type (asked only when the publisher's payload type changes).
    pub fn rewrite(
        &mut self,
        packet: &MediaPacket,
        out_pt: impl FnOnce(&PayloadParams) -> Option<Pt>,
        now: Instant,
    ) -> Result<Outgoing, Skip> {
        if !self.admit(packet) {
            return Err(Skip::OtherLayer);
        }
        if let Some(info) = &packet.vp8 {
            if !self.admit_temporal(info) {
                // The subscriber's numbering closes over the frame left out.
                self.rebaser.skip();
                if info.frame_start {
                    self.vp8.skip_picture();
                }
                return Err(Skip::OtherTemporal);
            }
        }
        let pt = match self.pt_map {
            Some((pt_in, pt_out)) if pt_in == packet.codec.pt() => pt_out,
            _ => {
                let pt_out = out_pt(&packet.codec).ok_or(Skip::CodecMismatch)?;
                self.pt_map = Some((packet.codec.pt(), pt_out));
                pt_out
            }
        };
        let rebased = self
            .rebaser
            .rebase(
                packet.ssrc,
                packet.seq,
                packet.rtp_time,
                packet.codec.spec().clock_rate.get(),
                now,
            )
            .ok_or(Skip::TooOld)?;
        let (picture_id, vp8_patch) = match &packet.vp8 {
            Some(info) => self.vp8.rewrite(info, &packet.payload),
            None => (None, None),
        };
        Ok(Outgoing {
            pt,
            seq: rebased.seq,
            rtp_time: rebased.ts,
            picture_id,
            vp8_patch,
        })
    }
}

/// Every temporal layer of L1T3 (ids 0 to 2).
const ALL_TEMPORAL: u8 = 2;

/// Audio has one layer and is never allocated; video waits for its
/// subscriber's allocator to choose a layer (so the first frames are
/// already of the right size, with no switch right after the start).
fn initial_target(kind: MediaKind) -> Option<u8> {
    match kind {
        MediaKind::Audio => Some(0),
        MediaKind::Video => None,
    }
}

impl Vp8Continuity {
    /// A frame left out: the picture ids after it close the gap, so the
    /// decoder sees no missing picture.
    fn skip_picture(&mut self) {
        self.pid_offset = self.pid_offset.wrapping_sub(1);
    }

    /// The picture id to send and the rewrite for one packet (no patch
    /// when nothing changes).
    fn rewrite(&mut self, info: &Vp8Info, payload: &[u8]) -> (Option<u16>, Option<Vp8Patch>) {
        let mask = if info.long_picture_id { 0x7fff } else { 0x7f };
        if std::mem::take(&mut self.rebase) {
            if let (Some(last), Some(pid)) = (self.last_pid, info.picture_id) {
                self.pid_offset = last.wrapping_add(1).wrapping_sub(pid) & mask;
            }
            if let (Some(last), Some(tl0)) = (self.last_tl0, info.tl0_pic_idx) {
                self.tl0_offset = last.wrapping_add(1).wrapping_sub(tl0);
            }
        }
        let pid = info
            .picture_id
            .map(|p| p.wrapping_add(self.pid_offset) & mask);
        let tl0 = info.tl0_pic_idx.map(|t| t.wrapping_add(self.tl0_offset));
        self.last_pid = pid.or(self.last_pid);
        self.last_tl0 = tl0.or(self.last_tl0);
        if self.pid_offset == 0 && self.tl0_offset == 0 {
            return (pid, None);
        }
        // str0m's own parse locates the fields it patches; only packets that
        // need rewriting (after a layer change) pay for it.
        let Ok(descriptor) = str0m::rtp::Vp8Descriptor::parse(payload) else {
            return (pid, None);
        };
        let mut builder = descriptor.patch();
        if let Some(pid) = pid {
            builder = builder.picture_id(pid);
        }
        if let Some(tl0) = tl0 {
            builder = builder.tl0_pic_idx(tl0);
        }
        (pid, builder.build().ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::arena::Arena;
    use crate::media::ids::PeerTag;
    use crate::media::packet::Extensions;
    use crate::media::receiver::tests::vp8;
    use std::time::Duration;

    fn down_track() -> DownTrack {
        let mut peers: Arena<PeerTag, ()> = Arena::default();
        let mut d = DownTrack::new(peers.insert(()), Mid::from("1"), MediaKind::Video);
        assert_eq!(d.target(), None, "video waits for its allocator");
        d.set_target(Some(0));
        d
    }

    fn packet(ssrc: u32, seq: u64, rtp_time: u32, pt: u8, at: Instant) -> MediaPacket {
        MediaPacket {
            ssrc,
            seq,
            rtp_time,
            marker: false,
            arrival: at,
            codec: vp8(pt),
            layer: 0,
            switch_point: true,
            vp8: None,
            extensions: Extensions::default(),
            payload: vec![1, 2, 3].into(),
        }
    }

    #[test]
    fn maps_payload_type_once_per_change_and_starts_at_one() {
        let t0 = Instant::now();
        let mut d = down_track();
        let asked = std::cell::Cell::new(0);
        let map = |c: &PayloadParams| {
            asked.set(asked.get() + 1);
            Some(Pt::from(*c.pt() + 10))
        };
        let a = d.rewrite(&packet(7, 5000, 90_000, 96, t0), map, t0);
        let b = d.rewrite(&packet(7, 5001, 93_000, 96, t0), map, t0);
        assert_eq!(
            a,
            Ok(Outgoing {
                pt: 106.into(),
                seq: 1,
                rtp_time: 90_000,
                picture_id: None,
                vp8_patch: None,
            })
        );
        assert_eq!(b.map(|o| (o.seq, o.rtp_time)), Ok((2, 93_000)));
        assert_eq!(asked.get(), 1);
        let c = d.rewrite(&packet(7, 5002, 96_000, 98, t0), map, t0);
        assert_eq!(c.map(|o| o.pt), Ok(108.into()));
        assert_eq!(asked.get(), 2);
    }

    #[test]
    fn a_new_source_continues_the_stream() {
        let t0 = Instant::now();
        let mut d = down_track();
        let map = |c: &PayloadParams| Some(c.pt());
        for i in 0..3 {
            assert!(d
                .rewrite(&packet(1, 100 + i, 1000, 96, t0), map, t0)
                .is_ok());
        }
        // Rebound to another receiver 100 ms later: numbering continues, the
        // timestamp advances by the gap (9000 ticks at 90 kHz).
        let t1 = t0 + Duration::from_millis(100);
        let o = d.rewrite(&packet(2, 70_000, 5, 96, t1), map, t1);
        assert_eq!(o.map(|o| (o.seq, o.rtp_time)), Ok((4, 10_000)));
    }

    #[test]
    fn refuses_what_it_cannot_send() {
        let t0 = Instant::now();
        let mut d = down_track();
        assert_eq!(
            d.rewrite(&packet(1, 10, 0, 96, t0), |_| None, t0),
            Err(Skip::CodecMismatch)
        );
        let map = |c: &PayloadParams| Some(c.pt());
        assert!(d.rewrite(&packet(1, 10, 0, 96, t0), map, t0).is_ok());
        assert_eq!(
            d.rewrite(&packet(1, 9, 0, 96, t0), map, t0),
            Err(Skip::TooOld),
            "before the stream's first packet"
        );
    }

    /// A VP8 packet of `layer` (its own SSRC) with picture id `pid`.
    fn vp8_packet(layer: u8, seq: u64, pid: u16, keyframe: bool, at: Instant) -> MediaPacket {
        let p0 = if keyframe { 0x00 } else { 0x01 };
        let payload = vec![0x90, 0x80, 0x80 | (pid >> 8) as u8, pid as u8, p0, 0, 0];
        let info = crate::media::vp8::parse(&payload).unwrap();
        let mut p = packet(100 + u32::from(layer), seq, 3000 * seq as u32, 96, at);
        p.layer = layer;
        p.switch_point = info.keyframe;
        p.vp8 = Some(info);
        p.payload = payload.into();
        p
    }

    /// A one-packet VP8 frame of temporal layer `tid` (L1T3 descriptor
    /// with TL0PICIDX and the layer-sync bit).
    fn temporal_packet(seq: u64, pid: u16, tid: u8, sync: bool, at: Instant) -> MediaPacket {
        let keyframe = seq == 0;
        let tl0 = (pid / 4) as u8;
        let payload = vec![
            0x90,
            0xe0,
            0x80 | (pid >> 8) as u8,
            pid as u8,
            tl0,
            (tid << 6) | (u8::from(sync) << 5),
            if keyframe { 0x00 } else { 0x01 },
            0,
            0,
        ];
        let info = crate::media::vp8::parse(&payload).unwrap();
        assert_eq!(info.temporal, Some(tid));
        let mut p = packet(100, 1000 + seq, 3000 * seq as u32, 96, at);
        p.switch_point = info.keyframe;
        p.vp8 = Some(info);
        p.payload = payload.into();
        p
    }

    #[test]
    fn temporal_layers_above_the_choice_are_left_out_without_gaps() {
        let t0 = Instant::now();
        let mut d = down_track();
        d.set_temporal(0);
        let map = |c: &PayloadParams| Some(c.pt());
        let l1t3 = [0u8, 2, 1, 2];
        let mut sent = Vec::new();
        for n in 0..9u16 {
            let tid = l1t3[usize::from(n) % 4];
            let p = temporal_packet(u64::from(n), n, tid, tid != 0, t0);
            match d.rewrite(&p, map, t0) {
                Ok(out) => sent.push((n, out.seq, out.picture_id)),
                Err(skip) => assert_eq!(skip, Skip::OtherTemporal),
            }
        }
        // Base frames only, numbered and named with no gap.
        assert_eq!(sent, [(0, 1, Some(0)), (4, 2, Some(1)), (8, 3, Some(2))]);
        // Up to all temporal layers: from the next base or sync frame.
        d.set_temporal(2);
        let mut ids = Vec::new();
        for n in 9..13u16 {
            let tid = l1t3[usize::from(n) % 4];
            let p = temporal_packet(u64::from(n), n, tid, false, t0);
            if let Ok(out) = d.rewrite(&p, map, t0) {
                ids.push((n, out.seq, out.picture_id));
            }
        }
        // 9 (tid 2, not a sync frame) and 10 (tid 1) wait; 12 is a base frame.
        assert_eq!(ids, [(12, 4, Some(3))]);
        let p = temporal_packet(13, 13, 2, false, t0);
        let out = d.rewrite(&p, map, t0).unwrap();
        assert_eq!((out.seq, out.picture_id), (5, Some(4)));
        assert_eq!(d.temporal(), 2);
    }

    #[test]
    fn switches_layer_only_at_a_keyframe_of_the_target() {
        let t0 = Instant::now();
        let mut d = down_track();
        let map = |c: &PayloadParams| Some(c.pt());
        // Starts at layer 0 only from a keyframe.
        assert_eq!(
            d.rewrite(&vp8_packet(0, 10, 1, false, t0), map, t0),
            Err(Skip::OtherLayer)
        );
        assert_eq!(d.awaits_keyframe(), Some(0));
        assert!(d.rewrite(&vp8_packet(0, 11, 2, true, t0), map, t0).is_ok());
        assert!(d.rewrite(&vp8_packet(0, 12, 3, false, t0), map, t0).is_ok());
        assert_eq!(d.awaits_keyframe(), None);
        // Target 2: layer 0 keeps flowing until layer 2 has a keyframe.
        d.set_target(Some(2));
        assert_eq!(d.awaits_keyframe(), Some(2));
        assert_eq!(
            d.rewrite(&vp8_packet(2, 500, 900, false, t0), map, t0),
            Err(Skip::OtherLayer)
        );
        assert!(d.rewrite(&vp8_packet(0, 13, 4, false, t0), map, t0).is_ok());
        let t1 = t0 + Duration::from_millis(33);
        let sw = d
            .rewrite(&vp8_packet(2, 501, 901, true, t1), map, t1)
            .unwrap();
        assert_eq!((d.current(), d.switches), (Some(2), 1));
        assert_eq!(
            d.rewrite(&vp8_packet(0, 14, 5, false, t1), map, t1),
            Err(Skip::OtherLayer)
        );
        let next = d
            .rewrite(&vp8_packet(2, 502, 902, false, t1), map, t1)
            .unwrap();
        // Sequence numbers continue across the switch (3 sent before it),
        // and picture ids continue from the last one sent (4 → 5, 6).
        assert_eq!((sw.seq, next.seq), (4, 5));
        assert_eq!((sw.picture_id, next.picture_id), (Some(5), Some(6)));
        assert!(sw.vp8_patch.is_some() && next.vp8_patch.is_some());
    }

    #[test]
    fn pauses_and_resumes_at_a_keyframe() {
        let t0 = Instant::now();
        let mut d = down_track();
        let map = |c: &PayloadParams| Some(c.pt());
        assert!(
            d.rewrite(&vp8_packet(1, 1, 1, true, t0), map, t0).is_err(),
            "target is 0"
        );
        d.set_target(Some(1));
        assert!(d.rewrite(&vp8_packet(1, 2, 2, true, t0), map, t0).is_ok());
        d.set_target(None);
        assert_eq!(
            d.rewrite(&vp8_packet(1, 3, 3, false, t0), map, t0),
            Err(Skip::OtherLayer)
        );
        assert_eq!(d.awaits_keyframe(), None, "paused waits for nothing");
        d.set_target(Some(1));
        assert_eq!(
            d.rewrite(&vp8_packet(1, 4, 4, false, t0), map, t0),
            Err(Skip::OtherLayer)
        );
        let resumed = d.rewrite(&vp8_packet(1, 5, 5, true, t0), map, t0).unwrap();
        // The packets skipped while paused leave no gap (which the
        // subscriber would take for loss and NACK).
        assert_eq!((resumed.seq, resumed.picture_id), (2, Some(3)));
    }
}
