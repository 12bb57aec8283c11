//! Media presets: the shape of real media (frame rate, bitrate, keyframe
//! interval) without real codecs.

use serde::{Deserialize, Serialize};

/// Audio: Opus-like, 20 ms frames.
pub const AUDIO_FRAME_MS: u64 = 20;
/// Audio bitrate (Opus voice in browsers is ≈ 32–48 kbit/s).
pub const AUDIO_BITRATE: u64 = 40_000;
/// RTP clock rates.
pub const AUDIO_CLOCK: u32 = 48_000;
/// Video RTP clock rate.
pub const VIDEO_CLOCK: u32 = 90_000;

/// A video preset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VideoPreset {
    /// 320×180, 160 kbit/s.
    #[serde(rename = "180p")]
    P180,
    /// 640×360, 450 kbit/s.
    #[serde(rename = "360p")]
    P360,
    /// 1280×720, 1.7 Mbit/s.
    #[serde(rename = "720p")]
    P720,
}

impl VideoPreset {
    /// Parses `180p`, `360p`, `720p`.
    pub fn parse(s: &str) -> Option<VideoPreset> {
        match s {
            "180p" => Some(VideoPreset::P180),
            "360p" => Some(VideoPreset::P360),
            "720p" => Some(VideoPreset::P720),
            _ => None,
        }
    }

    /// Bits per second.
    pub fn bitrate(self) -> u64 {
        match self {
            VideoPreset::P180 => 160_000,
            VideoPreset::P360 => 450_000,
            VideoPreset::P720 => 1_700_000,
        }
    }

    /// The name used in scenarios and reports.
    pub fn name(self) -> &'static str {
        match self {
            VideoPreset::P180 => "180p",
            VideoPreset::P360 => "360p",
            VideoPreset::P720 => "720p",
        }
    }

    /// Width and height in pixels.
    pub fn size(self) -> (u16, u16) {
        match self {
            VideoPreset::P180 => (320, 180),
            VideoPreset::P360 => (640, 360),
            VideoPreset::P720 => (1280, 720),
        }
    }

    /// The one layer of a stream sent without simulcast.
    pub fn single_layer(self) -> VideoLayer {
        let (width, height) = self.size();
        VideoLayer {
            index: 0,
            rid: None,
            width,
            height,
            bitrate: self.bitrate(),
        }
    }

    /// Simulcast layers, lowest first, as the web client sends a camera at
    /// this size: rids q, h, f at a quarter, half and the full width and
    /// height, with a tenth, a third and all of the preset's bitrate (720p:
    /// 170 k, 567 k, 1.7 M; browsers use about 150 k, 500 k, 1.5 M).
    pub fn simulcast_layers(self) -> Vec<VideoLayer> {
        let (w, h) = self.size();
        let b = self.bitrate();
        [("q", 4, 10), ("h", 2, 3), ("f", 1, 1)]
            .into_iter()
            .enumerate()
            .map(|(i, (rid, scale, share))| VideoLayer {
                index: i as u8,
                rid: Some(rid),
                width: w / scale,
                height: h / scale,
                bitrate: b / share,
            })
            .collect()
    }
}

/// One spatial layer of a video stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VideoLayer {
    /// 0 (lowest) … 2; 0 without simulcast.
    pub index: u8,
    /// Its rid when sent as simulcast.
    pub rid: Option<&'static str>,
    /// Width in pixels.
    pub width: u16,
    /// Height in pixels.
    pub height: u16,
    /// Bits per second.
    pub bitrate: u64,
}

/// Video frame rate.
pub const VIDEO_FPS: u64 = 30;
/// A keyframe every this many frames (2 s), and on request.
pub const KEYFRAME_EVERY: u64 = 60;
/// A keyframe is this many times the size of a delta frame.
pub const KEYFRAME_FACTOR: u64 = 5;

/// Bytes of a video frame at `bitrate` so that the average over a keyframe
/// period matches the bitrate.
pub fn video_frame_bytes(bitrate: u64, keyframe: bool) -> usize {
    let per_period = bitrate / 8 * KEYFRAME_EVERY / VIDEO_FPS;
    let delta = per_period / (KEYFRAME_EVERY - 1 + KEYFRAME_FACTOR);
    let bytes = if keyframe {
        delta * KEYFRAME_FACTOR
    } else {
        delta
    };
    bytes.max(64) as usize
}

/// Bytes of an audio frame.
pub fn audio_frame_bytes() -> usize {
    (AUDIO_BITRATE / 8 * AUDIO_FRAME_MS / 1000) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn average_matches_bitrate() {
        for p in [VideoPreset::P180, VideoPreset::P360, VideoPreset::P720] {
            let period: u64 = (0..KEYFRAME_EVERY)
                .map(|i| video_frame_bytes(p.bitrate(), i == 0) as u64)
                .sum();
            let bps = period * 8 * VIDEO_FPS / KEYFRAME_EVERY;
            let err = bps.abs_diff(p.bitrate()) as f64 / p.bitrate() as f64;
            assert!(err < 0.01, "{p:?}: {bps}");
        }
        assert_eq!(audio_frame_bytes(), 100);
        assert_eq!(VideoPreset::parse("720p"), Some(VideoPreset::P720));
        let layers = VideoPreset::P720.simulcast_layers();
        let shape: Vec<_> = layers
            .iter()
            .map(|l| (l.rid, l.width, l.height, l.bitrate))
            .collect();
        assert_eq!(
            shape,
            [
                (Some("q"), 320, 180, 170_000),
                (Some("h"), 640, 360, 566_666),
                (Some("f"), 1280, 720, 1_700_000)
            ]
        );
        assert_eq!(VideoPreset::P360.simulcast_layers()[0].width, 160);
        assert_eq!(VideoPreset::P180.single_layer().rid, None);
    }
}
