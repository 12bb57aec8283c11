//! The typed keys of a shard's core: rooms, peers, receivers and down-tracks are
//! named by these `Copy` keys into the engine's arenas (`media/arena.rs`);
//! strings (room names, participant and track ids) stay at the edges.

use super::arena::Key;

/// Tag of [`PeerKey`].
#[derive(Debug)]
pub enum PeerTag {}
/// Tag of [`ReceiverKey`].
#[derive(Debug)]
pub enum ReceiverTag {}
/// Tag of [`DownTrackKey`].
#[derive(Debug)]
pub enum DownTrackTag {}
/// Tag of [`RoomKey`].
#[derive(Debug)]
pub enum RoomTag {}

/// Names a peer connection (`media/peer.rs`).
pub type PeerKey = Key<PeerTag>;
/// Names a receiver: one published track (`media/receiver.rs`).
pub type ReceiverKey = Key<ReceiverTag>;
/// Names a down-track: one sending m-line of a subscriber (`media/down_track.rs`).
pub type DownTrackKey = Key<DownTrackTag>;
/// Names a room of the shard (`media/rooms.rs`).
pub type RoomKey = Key<RoomTag>;

/// Names another node of the cluster (docs/cluster.md): numbered by this
/// node's trunk when it first connects to that node, and never reused, so
/// the packet path names a node without its string id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeKey(pub u16);

impl std::fmt::Display for NodeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "node#{}", self.0)
    }
}
