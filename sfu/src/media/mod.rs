//! Media: shards, each a sans-IO engine (rooms + str0m peers) driven by a
//! tokio shell that owns the shard's sockets, and the edge's routing to them.

pub mod allocator;
pub mod arena;
pub mod command;
pub mod down_track;
pub mod downlink;
pub mod dynacast;
pub mod engine;
pub mod ice_tcp;
pub mod ids;
pub mod keyframe;
pub mod layers;
pub mod packet;
pub mod peer;
pub mod placement;
pub mod rebaser;
pub mod receiver;
pub mod rooms;
pub mod shard;
pub mod shards;
pub mod shell;
pub mod timers;
pub mod trunk_rtp;
pub mod vp8;
