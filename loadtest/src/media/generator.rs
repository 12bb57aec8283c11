//! Sans-IO media generator: which frame of which track is due at a given
//! instant. Time is injected, so the schedule is unit-tested without sleeping.

use std::time::{Duration, Instant};

use super::preset::{
    audio_frame_bytes, video_frame_bytes, VideoLayer, VideoPreset, AUDIO_CLOCK, AUDIO_FRAME_MS,
    KEYFRAME_EVERY, VIDEO_CLOCK, VIDEO_FPS,
};
use super::temporal::{Layering, TemporalLayers};

/// A loop stalled longer than this skips the frames it missed instead of
/// sending them in a burst (an encoder would not catch up either).
const MAX_BEHIND: Duration = Duration::from_millis(200);

/// Audio or video.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Opus-like audio.
    Audio,
    /// VP8-like video.
    Video,
}

impl Kind {
    /// The RTP clock rate, Hz.
    pub fn clock_rate(self) -> u32 {
        match self {
            Kind::Audio => AUDIO_CLOCK,
            Kind::Video => VIDEO_CLOCK,
        }
    }
}

/// One frame to encode and send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameSpec {
    /// Audio or video.
    pub kind: Kind,
    /// Simulcast layer index (0 for audio and single-layer video).
    pub layer: u8,
    /// The layer's rid when sent as simulcast.
    pub rid: Option<&'static str>,
    /// Picture width and height (0 for audio).
    pub size: (u16, u16),
    /// Temporal layering (video).
    pub layering: Option<Layering>,
    /// Frame number within the (track, layer), from 0.
    pub number: u32,
    /// Plaintext size in bytes.
    pub bytes: usize,
    /// A keyframe (periodic or requested).
    pub keyframe: bool,
    /// RTP timestamp in the track's clock.
    pub rtp_time: u32,
}

#[derive(Debug)]
struct Stream {
    kind: Kind,
    /// The spatial layer (video).
    layer: Option<VideoLayer>,
    temporal: TemporalLayers,
    interval: Duration,
    next_due: Instant,
    number: u32,
    keyframe_requested: bool,
}

/// The frame schedule of one publisher.
#[derive(Debug)]
pub struct Generator {
    streams: Vec<Stream>,
    /// Frames skipped because the caller was late by more than 200 ms.
    pub skipped: u64,
}

impl Generator {
    /// Audio if `audio`; video at `video` (as simulcast layers if `simulcast`).
    pub fn new(start: Instant, audio: bool, video: Option<VideoPreset>, simulcast: bool) -> Self {
        let mut streams = Vec::new();
        if audio {
            streams.push(Stream {
                kind: Kind::Audio,
                layer: None,
                temporal: TemporalLayers::new(0),
                interval: Duration::from_millis(AUDIO_FRAME_MS),
                next_due: start,
                number: 0,
                keyframe_requested: false,
            });
        }
        if let Some(preset) = video {
            let layers = if simulcast {
                preset.simulcast_layers()
            } else {
                vec![preset.single_layer()]
            };
            for layer in layers {
                streams.push(Stream {
                    kind: Kind::Video,
                    layer: Some(layer),
                    temporal: TemporalLayers::new(rand::random()),
                    interval: Duration::from_micros(1_000_000 / VIDEO_FPS),
                    // Audio and video do not start on the same instant.
                    next_due: start + Duration::from_millis(5),
                    number: 0,
                    keyframe_requested: false,
                });
            }
        }
        Generator {
            streams,
            skipped: 0,
        }
    }

    /// The rids of the video layers, lowest first (empty without simulcast).
    pub fn rids(&self) -> Vec<&'static str> {
        self.streams
            .iter()
            .filter_map(|s| s.layer.and_then(|l| l.rid))
            .collect()
    }

    /// When the next frame is due.
    pub fn next_due(&self) -> Option<Instant> {
        self.streams.iter().map(|s| s.next_due).min()
    }

    /// The next frame due at or before `now`, if any.
    pub fn poll(&mut self, now: Instant) -> Option<FrameSpec> {
        let s = self
            .streams
            .iter_mut()
            .filter(|s| s.next_due <= now)
            .min_by_key(|s| s.next_due)?;
        if now - s.next_due > MAX_BEHIND {
            let missed = ((now - s.next_due).as_micros() / s.interval.as_micros()) as u32;
            s.number += missed;
            s.next_due += s.interval * missed;
            self.skipped += u64::from(missed);
        }
        let number = s.number;
        s.number = s.number.wrapping_add(1);
        s.next_due += s.interval;
        let spec = match s.layer {
            None => FrameSpec {
                kind: Kind::Audio,
                layer: 0,
                rid: None,
                size: (0, 0),
                layering: None,
                number,
                bytes: audio_frame_bytes(),
                keyframe: false,
                rtp_time: number.wrapping_mul(AUDIO_CLOCK / 1000 * AUDIO_FRAME_MS as u32),
            },
            Some(layer) => {
                let keyframe = s.keyframe_requested || u64::from(number) % KEYFRAME_EVERY == 0;
                s.keyframe_requested = false;
                FrameSpec {
                    kind: Kind::Video,
                    layer: layer.index,
                    rid: layer.rid,
                    size: (layer.width, layer.height),
                    layering: Some(s.temporal.next(keyframe)),
                    number,
                    bytes: video_frame_bytes(layer.bitrate, keyframe),
                    keyframe,
                    rtp_time: number.wrapping_mul(VIDEO_CLOCK / VIDEO_FPS as u32),
                }
            }
        };
        Some(spec)
    }

    /// Makes the next frame of the video layer `rid` a keyframe (of every
    /// video layer without a rid), as a browser answers a PLI per layer.
    pub fn request_keyframe(&mut self, rid: Option<&str>) {
        for s in self.streams.iter_mut().filter(|s| s.kind == Kind::Video) {
            let layer_rid = s.layer.and_then(|l| l.rid);
            if rid.is_none() || layer_rid == rid {
                s.keyframe_requested = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(g: &mut Generator, now: Instant) -> Vec<FrameSpec> {
        std::iter::from_fn(|| g.poll(now)).collect()
    }

    #[test]
    fn one_second_has_the_right_frame_counts() {
        let t0 = Instant::now();
        let mut g = Generator::new(t0, true, Some(VideoPreset::P720), true);
        assert_eq!(g.rids(), vec!["q", "h", "f"]);
        let mut frames = Vec::new();
        for ms in 0..1000 {
            frames.extend(drain(&mut g, t0 + Duration::from_millis(ms)));
        }
        let audio = frames.iter().filter(|f| f.kind == Kind::Audio).count();
        let video: Vec<_> = frames.iter().filter(|f| f.kind == Kind::Video).collect();
        assert_eq!(audio, 50);
        assert_eq!(video.iter().filter(|f| f.layer == 2).count(), 30);
        assert_eq!(video.len(), 90);
        assert!(video.iter().find(|f| f.layer == 2).unwrap().keyframe);
        assert_eq!(video.iter().filter(|f| f.keyframe).count(), 3);
        let f2: Vec<_> = video.iter().filter(|f| f.layer == 2).collect();
        assert_eq!(f2[1].rtp_time - f2[0].rtp_time, 3000);
        assert!(f2[0].bytes > f2[1].bytes);
        assert_eq!(f2[0].size, (1280, 720));
        let q: Vec<_> = video.iter().filter(|f| f.layer == 0).collect();
        assert_eq!((q[0].rid, q[0].size), (Some("q"), (320, 180)));
        // Every layer cycles through the temporal ids 0, 2, 1, 2.
        for layer in 0..3 {
            let tids: Vec<u8> = video
                .iter()
                .filter(|f| f.layer == layer)
                .take(8)
                .map(|f| f.layering.unwrap().temporal.tid)
                .collect();
            assert_eq!(tids, [0, 2, 1, 2, 0, 2, 1, 2], "layer {layer}");
        }
        assert!(frames
            .iter()
            .all(|f| (f.kind == Kind::Video) == f.layering.is_some()));
        // A keyframe request for one rid: that layer's next frame only,
        // which also restarts its temporal cycle.
        g.request_keyframe(Some("h"));
        let next: Vec<_> = (1000..1034)
            .flat_map(|ms| drain(&mut g, t0 + Duration::from_millis(ms)))
            .filter(|f| f.kind == Kind::Video)
            .collect();
        assert_eq!(next.len(), 3);
        let key: Vec<_> = next.iter().map(|f| (f.rid, f.keyframe)).collect();
        assert_eq!(
            key,
            [(Some("q"), false), (Some("h"), true), (Some("f"), false)]
        );
        assert_eq!(next[1].layering.unwrap().temporal.tid, 0);
        assert_eq!(g.skipped, 0);
    }

    #[test]
    fn keyframe_on_request_and_skip_when_stalled() {
        let t0 = Instant::now();
        let mut g = Generator::new(t0, false, Some(VideoPreset::P180), false);
        assert!(drain(&mut g, t0 + Duration::from_millis(10))[0].keyframe);
        g.request_keyframe(None);
        let f = drain(&mut g, t0 + Duration::from_millis(40));
        assert_eq!(f.len(), 1);
        assert!(f[0].keyframe && f[0].number == 1);
        // A 1 s stall: frames skipped, not burst.
        let f = drain(&mut g, t0 + Duration::from_millis(1040));
        assert!(f.len() <= 2, "{}", f.len());
        assert!(g.skipped >= 25);
        assert!(g.next_due().unwrap() > t0 + Duration::from_millis(1040));
    }
}
