//! Which spatial and temporal layers receivers got. Each received video
//! track counts its verified frames per spatial layer (index, rid and
//! picture size from the frame's plaintext, so it stays right whichever
//! layer the SFU picks for whom) and per temporal id, and checks that the
//! temporal ids follow the L1T3 cycle; the run adds the tracks up per group
//! of receivers (publishers that also receive, and receive-only subscribers).
//! Each track also notes when its frames last moved to another spatial
//! layer, so a run can tell how long a receiver took to settle on the layer
//! it ended on (e.g. to climb once a capped downlink is freed), and the
//! gaps between its frames: a gap of [`FREEZE_US`] or more is a freeze.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::frame::FrameHeader;
use crate::media::temporal::{PatternCheck, TEMPORAL_LAYERS};
use crate::vp8_descriptor::Temporal;

/// A gap between two verified frames of a video track this long or longer
/// is a freeze: a viewer sees the picture stop. (30 fps is 33 ms a frame,
/// 7.5 fps with only TL0 133 ms; a browser counts a freeze from about three
/// frame durations, so 500 ms is a freeze at any of the loadtest's rates.)
pub const FREEZE_US: u64 = 500_000;

/// Receivers that publish too.
pub const PUBLISHERS: &str = "publishers";
/// Receive-only participants.
pub const SUBSCRIBERS: &str = "subscribers";

/// Frames of one spatial layer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LayerFrames {
    /// Spatial layer index, 0 = lowest.
    pub layer: u8,
    /// Its rid; empty without simulcast.
    pub rid: String,
    /// Picture width.
    pub width: u16,
    /// Picture height.
    pub height: u16,
    /// Tracks that received frames of this layer.
    pub tracks: u64,
    /// Verified frames per temporal id (TL0, TL1, TL2).
    pub frames_by_temporal: [u64; TEMPORAL_LAYERS],
}

impl LayerFrames {
    fn add(&mut self, o: &LayerFrames) {
        self.tracks += o.tracks;
        for (a, b) in self.frames_by_temporal.iter_mut().zip(o.frames_by_temporal) {
            *a += b;
        }
    }

    /// `q 320×180` (or `single 640×360`).
    pub fn name(&self) -> String {
        let rid = if self.rid.is_empty() {
            "single"
        } else {
            &self.rid
        };
        format!("{rid} {}×{}", self.width, self.height)
    }
}

/// The layers one received video track got.
#[derive(Debug, Default)]
pub struct TrackLayers {
    layers: BTreeMap<u8, LayerFrames>,
    checks: BTreeMap<u8, PatternCheck>,
    /// The spatial layer of the latest frame, and when (µs on the
    /// `clock` epoch) the first frame of this run of that layer arrived.
    current: Option<(u8, u64)>,
    last_frame_us: Option<u64>,
    longest_gap_us: u64,
    freezes: u64,
    stopped: bool,
}

impl TrackLayers {
    /// Records a verified frame that arrived at `now_us` (µs on the `clock`
    /// epoch) and its descriptor's temporal fields.
    pub fn on_frame(&mut self, h: &FrameHeader, temporal: Temporal, now_us: u64) {
        if self.current.is_none_or(|(layer, _)| layer != h.layer) {
            self.current = Some((h.layer, now_us));
        }
        if let Some(last) = self.last_frame_us {
            let gap = now_us.saturating_sub(last);
            self.longest_gap_us = self.longest_gap_us.max(gap);
            self.freezes += u64::from(gap >= FREEZE_US);
        }
        self.last_frame_us = Some(now_us);
        let l = self.layers.entry(h.layer).or_insert_with(|| LayerFrames {
            layer: h.layer,
            rid: if h.rid == 0 {
                String::new()
            } else {
                char::from(h.rid).to_string()
            },
            width: h.size.0,
            height: h.size.1,
            tracks: 1,
            ..LayerFrames::default()
        });
        if let Some(n) = l.frames_by_temporal.get_mut(usize::from(temporal.tid)) {
            *n += 1;
        }
        self.checks
            .entry(h.layer)
            .or_default()
            .observe(h.number, h.keyframe, temporal);
    }

    /// Frames whose temporal layering broke the L1T3 cycle.
    pub fn temporal_breaks(&self) -> u64 {
        self.checks.values().map(|c| c.breaks).sum()
    }

    /// Spatial layers with frames.
    pub fn layers(&self) -> impl Iterator<Item = &LayerFrames> {
        self.layers.values()
    }

    /// The track ends at `end_us`: if its last frame came [`FREEZE_US`] or
    /// more before, it stopped (paused by the SFU, or starved) rather than
    /// froze, and counts as stopped.
    pub fn end(&mut self, end_us: u64) {
        self.stopped = self
            .last_frame_us
            .is_some_and(|last| end_us.saturating_sub(last) >= FREEZE_US);
    }

    /// Whether frames stopped coming [`FREEZE_US`] or more before the end.
    pub fn stopped(&self) -> bool {
        self.stopped
    }

    /// Gaps of [`FREEZE_US`] or more between frames, and the longest gap (µs).
    pub fn freezes(&self) -> (u64, u64) {
        (self.freezes, self.longest_gap_us)
    }

    /// The layer the track ended on and since when (µs on the `clock` epoch).
    pub fn settled(&self) -> Option<(u8, u64)> {
        self.current
    }
}

/// The tracks of a group that ended on one spatial layer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Settled {
    /// Spatial layer index, 0 = lowest.
    pub layer: u8,
    /// Tracks whose last frame was of this layer.
    pub tracks: u64,
    /// The earliest of their last switches onto it, µs on the `clock` epoch
    /// (`CLOCK_MONOTONIC`, shared by the machine's processes).
    pub first_since_us: u64,
    /// The latest of their last switches onto it: from then on every one of
    /// these tracks stayed on this layer.
    pub last_since_us: u64,
}

impl Settled {
    fn add(&mut self, o: &Settled) {
        self.tracks += o.tracks;
        self.first_since_us = self.first_since_us.min(o.first_since_us);
        self.last_since_us = self.last_since_us.max(o.last_since_us);
    }
}

/// The video tracks of one group of receivers.
#[derive(Debug, Clone, Default, Serialize)]
pub struct GroupLayers {
    /// `publishers` or `subscribers`.
    pub group: String,
    /// Receivers in the group.
    pub receivers: u64,
    /// Video tracks with at least one verified frame.
    pub video_tracks: u64,
    /// Of those, tracks whose frames all came from one spatial layer.
    pub one_layer_tracks: u64,
    /// Per spatial layer, lowest first.
    pub layers: Vec<LayerFrames>,
    /// Frames whose temporal layering broke the L1T3 cycle.
    pub temporal_breaks: u64,
    /// Per spatial layer the tracks ended on, lowest first.
    pub settled: Vec<Settled>,
    /// Gaps of [`FREEZE_US`] or more between frames of a track, all tracks.
    pub freezes: u64,
    /// The longest gap between two frames of one track, µs.
    pub longest_gap_us: u64,
    /// Tracks whose frames stopped [`FREEZE_US`] or more before they ended
    /// (paused by the SFU, or starved).
    pub stopped_tracks: u64,
}

impl GroupLayers {
    fn add_track(&mut self, t: &TrackLayers) {
        if t.layers.is_empty() {
            return;
        }
        self.video_tracks += 1;
        self.one_layer_tracks += u64::from(t.layers.len() == 1);
        self.temporal_breaks += t.temporal_breaks();
        let (freezes, longest) = t.freezes();
        self.freezes += freezes;
        self.longest_gap_us = self.longest_gap_us.max(longest);
        self.stopped_tracks += u64::from(t.stopped());
        for l in t.layers() {
            self.add_layer(l);
        }
        if let Some((layer, since)) = t.settled() {
            self.add_settled(&Settled {
                layer,
                tracks: 1,
                first_since_us: since,
                last_since_us: since,
            });
        }
    }

    fn add_settled(&mut self, s: &Settled) {
        match self.settled.iter_mut().find(|m| m.layer == s.layer) {
            Some(m) => m.add(s),
            None => {
                self.settled.push(s.clone());
                self.settled.sort_by_key(|m| m.layer);
            }
        }
    }

    fn add_layer(&mut self, l: &LayerFrames) {
        match self
            .layers
            .iter_mut()
            .find(|m| (m.layer, &m.rid, m.width, m.height) == (l.layer, &l.rid, l.width, l.height))
        {
            Some(m) => m.add(l),
            None => {
                self.layers.push(l.clone());
                self.layers.sort_by_key(|m| (m.layer, m.width));
            }
        }
    }

    /// One line: tracks, then per layer its tracks and frames per temporal id.
    pub fn describe(&self) -> String {
        let mut s = format!(
            "{} receivers, {} video tracks, {} of one layer",
            self.receivers, self.video_tracks, self.one_layer_tracks
        );
        for l in &self.layers {
            let f = l.frames_by_temporal;
            s += &format!(
                "; {} on {} tracks, frames T0 {} T1 {} T2 {}",
                l.name(),
                l.tracks,
                f[0],
                f[1],
                f[2]
            );
        }
        if self.temporal_breaks > 0 {
            s += &format!("; {} frames off the L1T3 cycle", self.temporal_breaks);
        }
        if self.stopped_tracks > 0 {
            s += &format!(
                "; {} tracks stopped ≥ {} ms before the end",
                self.stopped_tracks,
                FREEZE_US / 1000
            );
        }
        if self.freezes > 0 {
            s += &format!(
                "; {} freezes ≥ {} ms (longest {} ms)",
                self.freezes,
                FREEZE_US / 1000,
                self.longest_gap_us / 1000
            );
        }
        s
    }
}

/// Per group of receivers.
#[derive(Debug, Clone, Default)]
pub struct LayersReceived {
    /// Groups in the order first seen.
    pub groups: Vec<GroupLayers>,
}

impl LayersReceived {
    fn group(&mut self, name: &str) -> &mut GroupLayers {
        let i = match self.groups.iter().position(|g| g.group == name) {
            Some(i) => i,
            None => {
                self.groups.push(GroupLayers {
                    group: name.into(),
                    ..GroupLayers::default()
                });
                self.groups.len() - 1
            }
        };
        &mut self.groups[i]
    }

    /// Counts a receiver of `group`.
    pub fn add_receiver(&mut self, group: &str) {
        self.group(group).receivers += 1;
    }

    /// Adds a received video track of a receiver of `group`.
    pub fn add_track(&mut self, group: &str, t: &TrackLayers) {
        self.group(group).add_track(t);
    }

    /// Adds another worker's tallies.
    pub fn merge(&mut self, o: &LayersReceived) {
        for g in &o.groups {
            let m = self.group(&g.group);
            m.receivers += g.receivers;
            m.video_tracks += g.video_tracks;
            m.one_layer_tracks += g.one_layer_tracks;
            m.temporal_breaks += g.temporal_breaks;
            m.freezes += g.freezes;
            m.stopped_tracks += g.stopped_tracks;
            m.longest_gap_us = m.longest_gap_us.max(g.longest_gap_us);
            for l in &g.layers {
                m.add_layer(l);
            }
            for s in &g.settled {
                m.add_settled(s);
            }
        }
        self.groups.sort_by(|a, b| a.group.cmp(&b.group));
    }

    /// Frames off the L1T3 cycle in all groups.
    pub fn temporal_breaks(&self) -> u64 {
        self.groups.iter().map(|g| g.temporal_breaks).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::generator::Kind;
    use crate::media::temporal::TemporalLayers;

    fn header(layer: u8, rid: u8, number: u32, keyframe: bool, tid: u8) -> FrameHeader {
        FrameHeader {
            sender: 1,
            kind: Kind::Video,
            layer,
            rid,
            size: (320 << layer, 180 << layer),
            temporal: tid,
            keyframe,
            number,
            sent_us: 0,
        }
    }

    #[test]
    fn tracks_add_up_per_group_and_layer() {
        let mut all = LayersReceived::default();
        let mut pattern = TemporalLayers::new(0);
        let mut one = TrackLayers::default();
        for n in 0..8 {
            let l = pattern.next(n == 0);
            one.on_frame(
                &header(0, b'q', n, n == 0, l.temporal.tid),
                l.temporal,
                1_000 + u64::from(n),
            );
        }
        assert_eq!(one.temporal_breaks(), 0);
        // A track that got frames of two layers (the SFU switched).
        let mut two = TrackLayers::default();
        let mut pattern = TemporalLayers::new(0);
        for n in 0..8 {
            let l = pattern.next(n == 0);
            let layer = u8::from(n >= 4);
            two.on_frame(
                &header(layer, b"qh"[usize::from(layer)], n, n == 0, l.temporal.tid),
                l.temporal,
                2_000 + u64::from(n),
            );
        }
        assert_eq!(two.temporal_breaks(), 0);
        all.add_receiver(SUBSCRIBERS);
        all.add_track(SUBSCRIBERS, &one);
        all.add_track(SUBSCRIBERS, &two);
        all.add_track(SUBSCRIBERS, &TrackLayers::default());
        let mut other = LayersReceived::default();
        other.add_receiver(PUBLISHERS);
        other.add_receiver(SUBSCRIBERS);
        other.add_track(SUBSCRIBERS, &one);
        all.merge(&other);
        let subs = all.groups.iter().find(|g| g.group == SUBSCRIBERS).unwrap();
        assert_eq!(
            (subs.receivers, subs.video_tracks, subs.one_layer_tracks),
            (2, 3, 2)
        );
        assert_eq!(subs.layers.len(), 2);
        assert_eq!(subs.layers[0].name(), "q 320×180");
        assert_eq!(subs.layers[0].tracks, 3);
        // Two full cycles on each `one` and half of `two`'s frames.
        assert_eq!(
            subs.layers[0].frames_by_temporal,
            [2 + 2 + 1, 2 + 2 + 1, 4 + 4 + 2]
        );
        assert_eq!(subs.layers[1].name(), "h 640×360");
        assert_eq!(
            subs.describe(),
            "2 receivers, 3 video tracks, 2 of one layer; q 320×180 on 3 tracks, frames T0 5 T1 5 T2 10; \
             h 640×360 on 1 tracks, frames T0 1 T1 1 T2 2"
        );
        // `one` (twice) ended on q, settled at its first frame; `two` moved
        // to h at its fifth frame.
        assert_eq!(
            subs.settled,
            vec![
                Settled {
                    layer: 0,
                    tracks: 2,
                    first_since_us: 1_000,
                    last_since_us: 1_000
                },
                Settled {
                    layer: 1,
                    tracks: 1,
                    first_since_us: 2_004,
                    last_since_us: 2_004
                },
            ]
        );
        let pubs = all.groups.iter().find(|g| g.group == PUBLISHERS).unwrap();
        assert_eq!((pubs.receivers, pubs.video_tracks), (1, 0));
        assert_eq!(all.temporal_breaks(), 0);
        // A TL2 frame where TL1 belongs is counted.
        let mut bad = TrackLayers::default();
        let t = |tid| Temporal {
            tid,
            layer_sync: false,
            tl0_pic_idx: 0,
        };
        bad.on_frame(&header(0, 0, 0, true, 0), t(0), 0);
        bad.on_frame(&header(0, 0, 1, false, 2), t(2), 1);
        bad.on_frame(&header(0, 0, 2, false, 2), t(2), 2);
        assert_eq!(bad.temporal_breaks(), 1);
        assert_eq!(bad.layers().next().unwrap().name(), "single 320×180");
    }

    #[test]
    fn settling_is_the_last_switch_of_spatial_layer() {
        let t = Temporal {
            tid: 0,
            layer_sync: false,
            tl0_pic_idx: 0,
        };
        let mut track = TrackLayers::default();
        assert_eq!(track.settled(), None);
        // Up to f, down to q (a cap), up to f again (the cap lifted).
        for (n, (layer, at)) in [(2, 10), (2, 20), (0, 30), (0, 40), (2, 50), (2, 60)]
            .into_iter()
            .enumerate()
        {
            track.on_frame(
                &header(layer, b"qhf"[usize::from(layer)], n as u32, true, 0),
                t,
                at,
            );
        }
        assert_eq!(track.settled(), Some((2, 50)));
        assert_eq!(track.freezes(), (0, 10));
        let mut g = LayersReceived::default();
        g.add_track(SUBSCRIBERS, &track);
        let mut other = TrackLayers::default();
        other.on_frame(&header(2, b'f', 0, true, 0), t, 70);
        // Half a second without a frame is a freeze; a shorter gap is not.
        other.on_frame(&header(2, b'f', 1, false, 0), t, 70 + FREEZE_US);
        other.on_frame(&header(2, b'f', 2, false, 0), t, 70 + 2 * FREEZE_US - 1);
        assert_eq!(other.freezes(), (1, FREEZE_US));
        // Ending right after its last frame: not stopped; long after: stopped.
        other.end(70 + 2 * FREEZE_US);
        assert!(!other.stopped());
        track.end(60 + FREEZE_US);
        assert!(track.stopped());
        let mut stopped = LayersReceived::default();
        stopped.add_track(SUBSCRIBERS, &track);
        assert_eq!(stopped.groups[0].stopped_tracks, 1);
        assert!(stopped.groups[0]
            .describe()
            .ends_with("; 1 tracks stopped ≥ 500 ms before the end"));
        g.add_track(SUBSCRIBERS, &other);
        assert_eq!(
            (g.groups[0].freezes, g.groups[0].longest_gap_us),
            (1, FREEZE_US)
        );
        assert!(
            g.groups[0]
                .describe()
                .ends_with("; 1 freezes ≥ 500 ms (longest 500 ms)"),
            "{}",
            g.groups[0].describe()
        );
        assert_eq!(
            g.groups[0].settled,
            vec![Settled {
                layer: 2,
                tracks: 2,
                first_since_us: 50,
                last_since_us: 70
            }]
        );
    }
}
