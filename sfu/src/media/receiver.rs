//! A receiver: one published track as the SFU receives it — its simulcast
//! layers and what each carries, its codec map, the keyframe requests
//! towards its publisher and the down-tracks it fans out to.
//!
//! Sans-IO: it decides, the engine does (`engine/forward.rs`).

use std::time::{Duration, Instant};

use str0m::format::PayloadParams;
use str0m::media::{MediaKind, Mid, Pt, Rid};

use super::dynacast::Dynacast;
use super::ids::{DownTrackKey, NodeKey, PeerKey, RoomKey};
use super::keyframe::KeyframeThrottle;
use super::layers::{MAX_LAYERS, TEMPORAL_LAYERS};

/// How long a layer stays "active" after its last packet.
const ACTIVE_FOR: Duration = Duration::from_millis(1500);
/// Bitrates are measured over windows of this length.
const METER_WINDOW: Duration = Duration::from_millis(500);

/// A rate smoothed over about four windows, so that one keyframe does not
/// make a layer look too dear for a subscriber for half a second (each
/// layer switch asks for another keyframe).
fn smooth(old: u64, new: u64) -> u64 {
    if old == 0 {
        new
    } else {
        (old * 3 + new) / 4
    }
}

/// Why a publisher's packet is not forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A simulcast layer beyond [`MAX_LAYERS`].
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

/// The spatial index of a simulcast rid, lowest quality first: LiveKit's
/// and our web client's `q`/`h`/`f`, or a trailing digit (`r0`, `1`, ...).
/// Other names take the first free index in the order they appear.
fn rid_rank(rid: &str) -> Option<usize> {
    match rid {
        "q" => Some(0),
        "h" => Some(1),
        "f" => Some(2),
        _ => rid
            .bytes()
            .last()
            .filter(u8::is_ascii_digit)
            .map(|d| usize::from(d - b'0'))
            .filter(|&i| i < MAX_LAYERS),
    }
}

/// The rid a simulcast layer that came over the trunk is known by (the
/// publisher's own rids stay on its node; these rank the same way).
pub fn trunk_rid(layer: u8) -> Option<Rid> {
    ["q", "h", "f"]
        .get(usize::from(layer))
        .map(|r| Rid::from(*r))
}

/// Where a receiver's packets come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A publisher's connection on this shard.
    Peer(PeerKey),
    /// Another node of the cluster, by its number for the track.
    Trunk {
        /// The publisher's node.
        node: NodeKey,
        /// That node's number for the track.
        track: u32,
    },
}

/// A packet the receiver forwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Accepted {
    /// Its codec.
    pub codec: PayloadParams,
    /// Its spatial layer.
    pub layer: u8,
    /// Its layer was not being sent before it.
    pub started: bool,
}

/// What the receiver knows of one simulcast layer.
#[derive(Debug, Clone, Default)]
pub struct Layer {
    rid: Option<Rid>,
    last_packet: Option<Instant>,
    window_start: Option<Instant>,
    window_bytes: u64,
    /// Bits per second, smoothed over the last few windows.
    bitrate: u64,
    /// The same per temporal id, for packets that name one (VP8).
    temporal_window: [u64; TEMPORAL_LAYERS],
    temporal: [u64; TEMPORAL_LAYERS],
    /// Frame size of its last keyframe, when the codec tells.
    size: Option<(u16, u16)>,
    keyframes: Option<KeyframeThrottle>,
}

impl Layer {
    /// Counts a packet; true when the layer was not active before it.
    fn count(&mut self, bytes: usize, now: Instant) -> bool {
        let started = self.bitrate(now).is_none();
        if started {
            // Measure from now, not across the silence; the rate it had
            // before stays the best guess until the first window ends.
            self.window_start = Some(now);
            self.window_bytes = 0;
            self.temporal_window = [0; TEMPORAL_LAYERS];
        }
        self.last_packet = Some(now);
        let start = *self.window_start.get_or_insert(now);
        let elapsed = now.saturating_duration_since(start);
        if elapsed >= METER_WINDOW {
            let ms = (elapsed.as_millis() as u64).max(1);
            self.bitrate = smooth(self.bitrate, self.window_bytes * 8 * 1000 / ms);
            for (r, bytes) in self.temporal.iter_mut().zip(&mut self.temporal_window) {
                *r = smooth(*r, std::mem::take(bytes) * 8 * 1000 / ms);
            }
            self.window_start = Some(now);
            self.window_bytes = 0;
        }
        self.window_bytes += bytes as u64;
        started
    }

    /// Bits per second, if it is sending.
    pub fn bitrate(&self, now: Instant) -> Option<u64> {
        let last = self.last_packet?;
        (now.saturating_duration_since(last) < ACTIVE_FOR).then_some(self.bitrate)
    }

    /// Bits per second carrying temporal ids up to 0, 1 and 2, if it is
    /// sending (all equal for a stream without temporal layers).
    pub fn rates_by_temporal(&self, now: Instant) -> Option<[u64; TEMPORAL_LAYERS]> {
        let total = self.bitrate(now)?;
        let measured: u64 = self.temporal.iter().sum();
        if measured == 0 {
            return Some([total; TEMPORAL_LAYERS]);
        }
        // The split of the smoothed total follows the per-id shares.
        let mut out = [total; TEMPORAL_LAYERS];
        let mut upto = 0;
        for (t, r) in self.temporal.iter().enumerate() {
            upto += r;
            out[t] = total * upto / measured;
        }
        Some(out)
    }

    /// Frame size seen on its last keyframe.
    pub fn size(&self) -> Option<(u16, u16)> {
        self.size
    }
}

/// One published track.
#[derive(Debug)]
pub struct Receiver {
    /// The room's id for the track (edge name, for descriptions and logs).
    pub track_id: String,
    /// Audio or video.
    pub kind: MediaKind,
    /// The publishing connection, or the node it publishes on.
    pub origin: Origin,
    /// Its room (for the room's speaker detector, per audio packet).
    pub room: RoomKey,
    /// This node's number for the track on the trunk (docs/cluster.md);
    /// 0 for a track of another node, which never goes out on a trunk.
    pub trunk_number: u32,
    /// Its m-line there.
    pub mid: Mid,
    /// Allocation priority: screen shares (1) before cameras (0).
    pub priority: u8,
    /// Simulcast layers by spatial index (one, index 0, without simulcast).
    layers: [Layer; MAX_LAYERS],
    /// Last payload type seen and its codec, so the codec table is searched
    /// only when the publisher changes payload type.
    codec: Option<(Pt, PayloadParams)>,
    keyframe_interval: Duration,
    /// Where its packets go.
    down_tracks: Vec<DownTrackKey>,
    /// Other nodes it is sent to, with the spatial layers each asked for
    /// (bit per layer).
    trunk_sinks: Vec<(NodeKey, u8)>,
    /// Which of its layers the publisher is told to send (`media/dynacast.rs`).
    pub dynacast: Dynacast,
}

impl Receiver {
    /// A receiver with no down-tracks yet; keyframe requests go to the
    /// publisher at most once per `keyframe_interval`.
    pub fn new(
        track_id: String,
        kind: MediaKind,
        origin: Origin,
        room: RoomKey,
        mid: Mid,
        keyframe_interval: Duration,
    ) -> Self {
        Self {
            track_id,
            kind,
            origin,
            room,
            trunk_number: 0,
            mid,
            priority: 0,
            layers: Default::default(),
            codec: None,
            keyframe_interval,
            down_tracks: Vec::new(),
            trunk_sinks: Vec::new(),
            dynacast: Dynacast::default(),
        }
    }

    /// Whether a packet of simulcast layer `rid` with payload type `pt`
    /// and `bytes` of payload is forwarded: its codec and spatial layer,
    /// and whether that layer (re)started with it (subscribers' layer
    /// choices are then out of date). `lookup` maps a payload type through
    /// the publisher's negotiated codecs (asked only when `pt` changes).
    pub fn accept(
        &mut self,
        rid: Option<Rid>,
        pt: Pt,
        bytes: usize,
        now: Instant,
        lookup: impl FnOnce(Pt) -> Option<PayloadParams>,
    ) -> Result<Accepted, Refusal> {
        let layer = self.layer_of(rid).ok_or(Refusal::OtherLayer)?;
        let codec = match self.codec {
            Some((seen, params)) if seen == pt => params,
            _ => {
                let params = lookup(pt).ok_or(Refusal::UnknownPayloadType)?;
                self.codec = Some((pt, params));
                params
            }
        };
        let started = self.layers[layer].count(bytes, now);
        Ok(Accepted {
            codec,
            layer: layer as u8,
            started,
        })
    }

    /// The spatial index of `rid`, giving it one on first sight.
    fn layer_of(&mut self, rid: Option<Rid>) -> Option<usize> {
        if let Some(i) = self.layers.iter().position(|l| l.rid == rid) {
            if self.layers[i].last_packet.is_some() || rid.is_none() {
                return Some(i);
            }
        }
        let free = |i: &usize| self.layers[*i].last_packet.is_none();
        let i = match rid {
            None => 0,
            Some(r) => rid_rank(&r)
                .filter(free)
                .or_else(|| (0..MAX_LAYERS).find(free))?,
        };
        self.layers[i].rid = rid;
        Some(i)
    }

    /// Counts an accepted packet's `bytes` under its temporal id (VP8's
    /// descriptor names it), after `accept` counted it for its layer.
    pub fn temporal_seen(&mut self, layer: u8, temporal: u8, bytes: usize) {
        if let Some(l) = self.layers.get_mut(usize::from(layer)) {
            if let Some(w) = l.temporal_window.get_mut(usize::from(temporal)) {
                *w += bytes as u64;
            }
        }
    }

    /// Notes the frame size of a keyframe on `layer`.
    pub fn keyframe_seen(&mut self, layer: u8, size: Option<(u16, u16)>) {
        if let (Some(l), Some(size)) = (self.layers.get_mut(usize::from(layer)), size) {
            l.size = Some(size);
        }
    }

    /// More than one layer has been seen.
    pub fn is_simulcast(&self) -> bool {
        self.layers
            .iter()
            .filter(|l| l.last_packet.is_some())
            .count()
            > 1
    }

    /// The layers by spatial index.
    pub fn layers(&self) -> &[Layer; MAX_LAYERS] {
        &self.layers
    }

    /// The simulcast layers seen so far, by rid (bit per spatial index;
    /// 0 without simulcast).
    pub fn named_layers(&self) -> u8 {
        (0..MAX_LAYERS)
            .filter(|&i| self.layers[i].rid.is_some() && self.layers[i].last_packet.is_some())
            .fold(0, |mask, i| mask | 1 << i)
    }

    /// The rid of a spatial layer (`None`: no simulcast).
    pub fn rid(&self, layer: u8) -> Option<Rid> {
        self.layers.get(usize::from(layer)).and_then(|l| l.rid)
    }

    /// Whether a keyframe request for `layer` at `now` should reach the
    /// publisher: video only, throttled per layer (browsers repeat PLIs and
    /// subscribers ask at once).
    pub fn keyframe_request(&mut self, layer: u8, now: Instant) -> bool {
        let interval = self.keyframe_interval;
        match self.layers.get_mut(usize::from(layer)) {
            Some(l) if self.kind == MediaKind::Video => l
                .keyframes
                .get_or_insert_with(|| KeyframeThrottle::new(interval))
                .allow(now),
            _ => false,
        }
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

    /// The other nodes it goes to and the layers each wants.
    pub fn trunk_sinks(&self) -> &[(NodeKey, u8)] {
        &self.trunk_sinks
    }

    /// Sends `layers` (bit per layer; 0: none) to `node`. Only a track
    /// published on this node is sent on (one hop: no loops).
    pub(super) fn set_trunk_sink(&mut self, node: NodeKey, layers: u8) {
        self.trunk_sinks.retain(|(n, _)| *n != node);
        if layers != 0 && matches!(self.origin, Origin::Peer(_)) {
            self.trunk_sinks.push((node, layers));
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::media::arena::Arena;
    use crate::media::ids::{DownTrackTag, PeerTag, RoomTag};
    use str0m::format::{Codec, CodecSpec, FormatParams};
    use str0m::media::Frequency;

    fn receiver(kind: MediaKind) -> Receiver {
        // The receiver only stores its publisher's key.
        let mut peers: Arena<PeerTag, ()> = Arena::default();
        let publisher = peers.insert(());
        let mut rooms: Arena<RoomTag, ()> = Arena::default();
        Receiver::new(
            "TR_x".into(),
            kind,
            Origin::Peer(publisher),
            rooms.insert(()),
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
    fn simulcast_rids_get_stable_spatial_indexes() {
        let t0 = Instant::now();
        let mut r = receiver(MediaKind::Video);
        let ok = |pt: Pt| Some(vp8(*pt));
        // Layers announce themselves in any order; q/h/f keep their rank.
        let f = r.accept(Some(Rid::from("f")), 96.into(), 1000, t0, ok);
        let q = r.accept(Some(Rid::from("q")), 96.into(), 100, t0, ok);
        let h = r.accept(Some(Rid::from("h")), 96.into(), 300, t0, ok);
        assert_eq!([f, q, h].map(|x| x.map(|a| a.layer)), [Ok(2), Ok(0), Ok(1)]);
        assert_eq!(r.rid(1), Some(Rid::from("h")));
        assert_eq!(
            r.accept(Some(Rid::from("x")), 96.into(), 1, t0, ok),
            Err(Refusal::OtherLayer),
            "a fourth layer has no place"
        );
        // Other names: a trailing digit, else the first free index.
        let mut r = receiver(MediaKind::Video);
        let a = r.accept(Some(Rid::from("r1")), 96.into(), 1, t0, ok);
        let b = r.accept(Some(Rid::from("hi")), 96.into(), 1, t0, ok);
        assert_eq!([a, b].map(|x| x.map(|a| a.layer)), [Ok(1), Ok(0)]);
        // No simulcast: layer 0.
        let mut r = receiver(MediaKind::Audio);
        assert_eq!(
            r.accept(None, 111.into(), 1, t0, ok).map(|a| a.layer),
            Ok(0)
        );
    }

    #[test]
    fn measures_each_layer_and_forgets_silent_ones() {
        let t0 = Instant::now();
        let mut r = receiver(MediaKind::Video);
        let ok = |pt: Pt| Some(vp8(*pt));
        // 100 packets of 1000 bytes over one second on q; nothing on f.
        for i in 0..=100u64 {
            let at = t0 + Duration::from_millis(i * 10);
            r.accept(Some(Rid::from("q")), 96.into(), 1000, at, ok)
                .unwrap();
        }
        let now = t0 + Duration::from_millis(1000);
        let bps = r.layers()[0].bitrate(now).unwrap();
        assert!((700_000..=900_000).contains(&bps), "{bps}");
        assert_eq!(r.layers()[2].bitrate(now), None);
        assert_eq!(r.layers()[0].bitrate(now + Duration::from_secs(2)), None);
        r.keyframe_seen(0, Some((320, 180)));
        assert_eq!(r.layers()[0].size(), Some((320, 180)));
    }

    #[test]
    fn measures_the_rate_up_to_each_temporal_layer() {
        let t0 = Instant::now();
        let mut r = receiver(MediaKind::Video);
        let ok = |pt: Pt| Some(vp8(*pt));
        // L1T3 frames of 2000, 1000 and 1000 bytes (T0, T1, T2 twice).
        let cycle = [(0u8, 2000usize), (2, 1000), (1, 1000), (2, 1000)];
        for i in 0..=100u64 {
            let at = t0 + Duration::from_millis(i * 10);
            let (tid, bytes) = cycle[(i % 4) as usize];
            r.accept(Some(Rid::from("h")), 96.into(), bytes, at, ok)
                .unwrap();
            r.temporal_seen(1, tid, bytes);
        }
        let now = t0 + Duration::from_millis(1000);
        let [t0_rate, t1_rate, all] = r.layers()[1].rates_by_temporal(now).unwrap();
        assert_eq!(Some(all), r.layers()[1].bitrate(now));
        // T0 is 2/5 of the bytes, T0+T1 3/5.
        assert!(
            t0_rate * 5 / all == 2 && t1_rate * 5 / all == 3,
            "{t0_rate} {t1_rate} {all}"
        );
        // Without temporal ids: one rate for all.
        let mut r = receiver(MediaKind::Video);
        for i in 0..=100u64 {
            let at = t0 + Duration::from_millis(i * 10);
            r.accept(Some(Rid::from("q")), 96.into(), 1000, at, ok)
                .unwrap();
        }
        let [a, b, c] = r.layers()[0].rates_by_temporal(now).unwrap();
        assert!(a == b && b == c && a > 0);
    }

    #[test]
    fn a_layer_that_comes_back_keeps_its_last_rate_and_size() {
        let t0 = Instant::now();
        let mut r = receiver(MediaKind::Video);
        let ok = |pt: Pt| Some(vp8(*pt));
        let f = || Some(Rid::from("f"));
        for i in 0..=100u64 {
            let at = t0 + Duration::from_millis(i * 10);
            r.accept(f(), 96.into(), 1000, at, ok).unwrap();
        }
        r.keyframe_seen(2, Some((640, 360)));
        assert_eq!(r.named_layers(), 0b100);
        // Switched off for 10 s, then on again: the first packets are no
        // measurement (10 kB over 10 s would read as 8 kbit/s).
        let back = t0 + Duration::from_secs(11);
        let first = r.accept(f(), 96.into(), 1000, back, ok).unwrap();
        assert!(first.started);
        let later = back + Duration::from_millis(10);
        let accepted = r.accept(f(), 96.into(), 1000, later, ok).unwrap();
        assert!(!accepted.started);
        let bps = r.layers()[2].bitrate(later).unwrap();
        assert!((700_000..=900_000).contains(&bps), "{bps}");
        assert_eq!(r.layers()[2].size(), Some((640, 360)));
        assert_eq!(r.rid(2), f(), "same rid, same layer");
    }

    #[test]
    fn asks_the_codec_table_only_when_the_payload_type_changes() {
        let t0 = Instant::now();
        let mut r = receiver(MediaKind::Video);
        let mut asked = 0;
        for pt in [96u8, 96, 96, 98, 98] {
            let got = r.accept(None, pt.into(), 1, t0, |p| {
                asked += 1;
                Some(vp8(*p))
            });
            assert_eq!(got.map(|a| *a.codec.pt()), Ok(pt));
        }
        assert_eq!(asked, 2);
        assert_eq!(
            r.accept(None, 111.into(), 1, t0, |_| None),
            Err(Refusal::UnknownPayloadType)
        );
    }

    #[test]
    fn keyframe_requests_are_throttled_per_layer_and_video_only() {
        let t0 = Instant::now();
        let mut v = receiver(MediaKind::Video);
        assert!(v.keyframe_request(0, t0));
        assert!(!v.keyframe_request(0, t0 + Duration::from_millis(200)));
        assert!(v.keyframe_request(1, t0 + Duration::from_millis(200)));
        assert!(v.keyframe_request(0, t0 + Duration::from_millis(600)));
        assert!(!v.keyframe_request(3, t0), "no such layer");
        let mut a = receiver(MediaKind::Audio);
        assert!(!a.keyframe_request(0, t0));
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
