//! Media: shards, each a sans-IO engine (rooms + str0m peers) driven by a
//! tokio shell that owns the shard's sockets, and the edge's routing to them.

pub mod command;
pub mod engine;
pub mod ice_tcp;
pub mod peer;
pub mod placement;
pub mod shard;
pub mod shards;
pub mod shell;
pub mod timers;
