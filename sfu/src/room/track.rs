//! A published track and the subscriber slots it is forwarded to.

use str0m::media::{MediaKind, Mid, Rid};

use super::keyframe::KeyframeThrottle;
use super::participant::PeerId;
use crate::signal::protocol::TrackInfo;

/// Where a track's packets go: an m-line of a subscriber's peer connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sink {
    /// The subscriber's peer.
    pub peer: PeerId,
    /// The sending m-line on that peer.
    pub mid: Mid,
}

/// One published audio or video track.
#[derive(Debug, Clone)]
pub struct Track {
    /// Room-unique id.
    pub id: String,
    /// Publisher's participant id.
    pub owner: String,
    /// Audio or video.
    pub kind: MediaKind,
    /// The publisher's peer connection.
    pub peer: PeerId,
    /// The m-line on the publisher's connection.
    pub mid: Mid,
    /// The simulcast layer forwarded (the first seen), if the publisher uses rids.
    pub rid: Option<Rid>,
    /// Client-supplied label, e.g. `camera`.
    pub source: Option<String>,
    /// Mute state as signaled by the publisher.
    pub muted: bool,
    /// Throttles keyframe requests towards the publisher.
    pub keyframes: KeyframeThrottle,
    /// Subscriber slots currently receiving this track.
    pub sinks: Vec<Sink>,
}

impl Track {
    /// Public description.
    pub fn info(&self) -> TrackInfo {
        TrackInfo {
            id: self.id.clone(),
            participant_id: self.owner.clone(),
            kind: kind_name(self.kind).to_string(),
            mid: self.mid.to_string(),
            source: self.source.clone(),
            muted: self.muted,
        }
    }
}

/// `audio` or `video`.
pub fn kind_name(kind: MediaKind) -> &'static str {
    match kind {
        MediaKind::Audio => "audio",
        MediaKind::Video => "video",
    }
}
