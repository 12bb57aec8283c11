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

use super::ids::{PeerKey, ReceiverKey};
use super::packet::MediaPacket;
use super::rebaser::Rebaser;

/// The subscriber's header fields for one forwarded packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outgoing {
    /// Payload type on the subscriber's connection.
    pub pt: Pt,
    /// Extended sequence number of the subscriber's stream.
    pub seq: u64,
    /// RTP timestamp of the subscriber's stream.
    pub rtp_time: u32,
}

/// Why a packet is not sent on a down-track.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// The subscriber's connection has no payload type for the codec.
    CodecMismatch,
    /// Older than the start of this subscriber's stream.
    TooOld,
}

impl Skip {
    /// The `reason` label of `sfu_dropped_packets_total`.
    pub fn label(self) -> &'static str {
        match self {
            Skip::CodecMismatch => "codec_mismatch",
            Skip::TooOld => "too_old",
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
    rebaser: Rebaser,
    /// Last payload type mapping (publisher PT → subscriber PT).
    pt_map: Option<(Pt, Pt)>,
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
            rebaser: Rebaser::default(),
            pt_map: None,
        }
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
        Ok(Outgoing {
            pt,
            seq: rebased.seq,
            rtp_time: rebased.ts,
        })
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
        DownTrack::new(peers.insert(()), Mid::from("1"), MediaKind::Video)
    }

    fn packet(ssrc: u32, seq: u64, rtp_time: u32, pt: u8, at: Instant) -> MediaPacket {
        MediaPacket {
            ssrc,
            seq,
            rtp_time,
            marker: false,
            arrival: at,
            codec: vp8(pt),
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
                rtp_time: 90_000
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
}
