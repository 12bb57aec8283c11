//! The packet that travels from a receiver to its down-tracks: plain header
//! fields the SFU decides on and the payload, shared, never copied.
//!
//! It is ours rather than str0m's `RtpPacket` so that a sink need not be a
//! str0m connection (a trunk to another shard or node carries the same
//! fields), and so that what the SFU reads is written down in one place:
//! header fields and header extensions, never the (end-to-end encrypted)
//! payload.

use std::sync::Arc;
use std::time::Instant;

use str0m::format::PayloadParams;
use str0m::rtp::{ExtensionValues, VideoOrientation};

use super::peer::DependencyDescriptor;
use super::vp8::Vp8Info;

/// One RTP packet as a publisher sent it.
#[derive(Debug, Clone)]
pub struct MediaPacket {
    /// The publisher's SSRC (a new one restarts the subscribers' numbering).
    pub ssrc: u32,
    /// Extended (rollover-free) sequence number.
    pub seq: u64,
    /// RTP timestamp.
    pub rtp_time: u32,
    /// RTP marker bit (last packet of a video frame).
    pub marker: bool,
    /// When it arrived.
    pub arrival: Instant,
    /// The codec, as the publisher's payload type maps it.
    pub codec: PayloadParams,
    /// Spatial (simulcast) layer, 0 = lowest or only.
    pub layer: u8,
    /// A down-track may start or change layer here: the first packet of a
    /// keyframe where the codec lets the SFU see it (VP8), any packet
    /// otherwise (audio, codecs whose frames the SFU cannot read).
    pub switch_point: bool,
    /// VP8 descriptor fields.
    pub vp8: Option<Vp8Info>,
    /// Header extensions subscribers use.
    pub extensions: Extensions,
    /// The payload, shared by every copy sent.
    pub payload: Arc<[u8]>,
}

/// The header extension values a forwarded packet keeps. Transport-level
/// ones (mid, rid, transport-cc, abs-send-time) belong to each connection
/// and are written by it.
#[derive(Debug, Clone, Default)]
pub struct Extensions {
    /// RFC 6464 audio level (-dBov).
    pub audio_level: Option<i8>,
    /// RFC 6464 voice activity flag.
    pub voice_activity: Option<bool>,
    /// Coordination of video orientation.
    pub video_orientation: Option<VideoOrientation>,
    /// AV1 dependency descriptor, opaque.
    pub dependency_descriptor: Option<Arc<[u8]>>,
}

impl Extensions {
    /// The forwarded subset of what str0m parsed.
    pub fn from_str0m(incoming: &ExtensionValues) -> Self {
        Self {
            audio_level: incoming.audio_level,
            voice_activity: incoming.voice_activity,
            video_orientation: incoming.video_orientation,
            dependency_descriptor: incoming
                .user_values
                .get::<DependencyDescriptor>()
                .map(|d| d.0.clone()),
        }
    }

    /// str0m's form, for writing into a connection.
    pub fn to_str0m(&self) -> ExtensionValues {
        let mut ev = ExtensionValues {
            audio_level: self.audio_level,
            voice_activity: self.voice_activity,
            video_orientation: self.video_orientation,
            ..Default::default()
        };
        if let Some(dd) = &self.dependency_descriptor {
            ev.user_values.set(DependencyDescriptor(dd.clone()));
        }
        ev
    }
}
