//! A track the subscribe connection receives: whose it is, its frames being
//! put back together, and what arrived.

use crate::media::generator::Kind;
use crate::packetize::Reassembler;
use crate::stats::TrackStats;

/// One received track (an m-line of the subscribe connection).
pub(super) struct RxTrack {
    /// Audio or video.
    pub kind: Kind,
    /// The publisher's participant id.
    pub owner: String,
    /// What arrived.
    pub stats: TrackStats,
    /// Video frames being reassembled.
    pub reassembler: Reassembler,
}

impl RxTrack {
    /// A track of `owner` with nothing received yet.
    pub fn new(kind: Kind, owner: String) -> RxTrack {
        RxTrack {
            kind,
            owner,
            stats: TrackStats::default(),
            reassembler: Reassembler::default(),
        }
    }
}
