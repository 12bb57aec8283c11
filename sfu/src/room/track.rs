//! A published track as the room announces it. Its media side (layers,
//! down-tracks) is the receiver it names (`media/receiver.rs`).

use str0m::media::{MediaKind, Mid};

use crate::media::ids::ReceiverKey;
use crate::signal::protocol::TrackInfo;

/// One published audio or video track.
#[derive(Debug, Clone)]
pub struct Track {
    /// Room-unique id.
    pub id: String,
    /// Publisher's participant id.
    pub owner: String,
    /// Audio or video.
    pub kind: MediaKind,
    /// The m-line on the publisher's connection.
    pub mid: Mid,
    /// Its media side.
    pub receiver: ReceiverKey,
    /// Client-supplied label, e.g. `camera`.
    pub source: Option<String>,
    /// Mute state as signaled by the publisher.
    pub muted: bool,
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
