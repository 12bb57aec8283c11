//! A receiver: one published track as the SFU receives it — its layer, its
//! codec map, the keyframe requests towards its publisher and the
//! down-tracks it fans out to.
//!
//! Sans-IO: it decides, the engine does (`engine/forward.rs`).

use std::time::{Duration, Instant};

use str0m::format::PayloadParams;
use str0m::media::{MediaKind, Mid, Pt, Rid};

use super::ids::{DownTrackKey, PeerKey};
use super::keyframe::KeyframeThrottle;

/// Why a publisher's packet is not forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A simulcast layer other than the one forwarded.
    OtherLayer,
    /// A payload type the publisher's connection did not negotiate.
    UnknownPayloadType,
}

impl Refusal {
    /// The `reason` label of `sfu_dropped_packets_total`.
    pub fn label(self) -> &'static str {
        match self {
            Refusal::OtherLayer => "simulcast_layer",
            Refusal::UnknownPayloadType => "unknown_payload_type",
        }
    }
}

/// One published track.
#[derive(Debug)]
pub struct Receiver {
    /// The room's id for the track (edge name, for descriptions and logs).
    pub track_id: String,
    /// Audio or video.
    pub kind: MediaKind,
    /// The publishing connection.
    pub publisher: PeerKey,
    /// Its m-line there.
    pub mid: Mid,
    /// The simulcast layer forwarded (the first seen), if the publisher uses rids.
    layer: Option<Option<Rid>>,
    /// Last payload type seen and its codec, so the codec table is searched
    /// only when the publisher changes payload type.
    codec: Option<(Pt, PayloadParams)>,
    keyframes: KeyframeThrottle,
    /// Where its packets go.
    down_tracks: Vec<DownTrackKey>,
}

impl Receiver {
    /// A receiver with no down-tracks yet; keyframe requests go to the
    /// publisher at most once per `keyframe_interval`.
    pub fn new(
        track_id: String,
        kind: MediaKind,
        publisher: PeerKey,
        mid: Mid,
        keyframe_interval: Duration,
    ) -> Self {
        Self {
            track_id,
            kind,
            publisher,
            mid,
            layer: None,
            codec: None,
            keyframes: KeyframeThrottle::new(keyframe_interval),
            down_tracks: Vec::new(),
        }
    }

    /// Whether a packet of simulcast layer `rid` with payload type `pt` is
    /// forwarded, and its codec. `lookup` maps a payload type through the
    /// publisher's negotiated codecs (asked only when `pt` changes).
    pub fn accept(
        &mut self,
        rid: Option<Rid>,
        pt: Pt,
        lookup: impl FnOnce(Pt) -> Option<PayloadParams>,
    ) -> Result<PayloadParams, Refusal> {
        if *self.layer.get_or_insert(rid) != rid {
            return Err(Refusal::OtherLayer);
        }
        match self.codec {
            Some((seen, params)) if seen == pt => Ok(params),
            _ => {
                let params = lookup(pt).ok_or(Refusal::UnknownPayloadType)?;
                self.codec = Some((pt, params));
                Ok(params)
            }
        }
    }

    /// The layer forwarded (`None` before the first packet or without rids).
    pub fn layer(&self) -> Option<Rid> {
        self.layer.flatten()
    }

    /// Whether a keyframe request at `now` should reach the publisher:
    /// video only, throttled (browsers repeat PLIs and subscribers ask at once).
    pub fn keyframe_request(&mut self, now: Instant) -> bool {
        self.kind == MediaKind::Video && self.keyframes.allow(now)
    }

    /// Where its packets go, in the order they were added.
    pub fn down_tracks(&self) -> &[DownTrackKey] {
        &self.down_tracks
    }

    /// Starts forwarding to `down_track` (once).
    pub(super) fn attach(&mut self, down_track: DownTrackKey) {
        if !self.down_tracks.contains(&down_track) {
            self.down_tracks.push(down_track);
        }
    }

    /// Stops forwarding to `down_track`.
    pub(super) fn detach(&mut self, down_track: DownTrackKey) {
        self.down_tracks.retain(|d| *d != down_track);
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::media::arena::Arena;
    use crate::media::ids::{DownTrackTag, PeerTag};
    use str0m::format::{Codec, CodecSpec, FormatParams};
    use str0m::media::Frequency;

    fn receiver(kind: MediaKind) -> Receiver {
        // The receiver only stores its publisher's key.
        let mut peers: Arena<PeerTag, ()> = Arena::default();
        let publisher = peers.insert(());
        Receiver::new(
            "TR_x".into(),
            kind,
            publisher,
            Mid::from("0"),
            Duration::from_millis(500),
        )
    }

    pub(crate) fn vp8(pt: u8) -> PayloadParams {
        let spec = CodecSpec {
            codec: Codec::Vp8,
            clock_rate: Frequency::NINETY_KHZ,
            channels: None,
            format: FormatParams::default(),
        };
        PayloadParams::new(pt.into(), None, spec)
    }

    #[test]
    fn forwards_the_first_layer_seen_and_refuses_others() {
        let mut r = receiver(MediaKind::Video);
        let (q, f) = (Rid::from("q"), Rid::from("f"));
        assert!(r.accept(Some(q), 96.into(), |pt| Some(vp8(*pt))).is_ok());
        assert_eq!(r.layer(), Some(q));
        assert_eq!(
            r.accept(Some(f), 96.into(), |pt| Some(vp8(*pt))),
            Err(Refusal::OtherLayer)
        );
        assert!(r.accept(Some(q), 96.into(), |_| None).is_ok(), "cached");
    }

    #[test]
    fn asks_the_codec_table_only_when_the_payload_type_changes() {
        let mut r = receiver(MediaKind::Video);
        let mut asked = 0;
        for pt in [96u8, 96, 96, 98, 98] {
            let got = r.accept(None, pt.into(), |p| {
                asked += 1;
                Some(vp8(*p))
            });
            assert_eq!(got.map(|c| *c.pt()), Ok(pt));
        }
        assert_eq!(asked, 2);
        assert_eq!(
            r.accept(None, 111.into(), |_| None),
            Err(Refusal::UnknownPayloadType)
        );
    }

    #[test]
    fn keyframe_requests_are_throttled_and_video_only() {
        let t0 = Instant::now();
        let mut v = receiver(MediaKind::Video);
        assert!(v.keyframe_request(t0));
        assert!(!v.keyframe_request(t0 + Duration::from_millis(200)));
        assert!(v.keyframe_request(t0 + Duration::from_millis(600)));
        let mut a = receiver(MediaKind::Audio);
        assert!(!a.keyframe_request(t0));
    }

    #[test]
    fn down_tracks_attach_once_and_detach() {
        let mut r = receiver(MediaKind::Audio);
        let mut arena: Arena<DownTrackTag, ()> = Arena::default();
        let (d1, d2) = (arena.insert(()), arena.insert(()));
        r.attach(d1);
        r.attach(d2);
        r.attach(d1);
        assert_eq!(r.down_tracks(), &[d1, d2]);
        r.detach(d1);
        assert_eq!(r.down_tracks(), &[d2]);
    }
}
