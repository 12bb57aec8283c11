//! Media: the sans-IO engine (rooms + str0m peers) and the tokio shell that
//! owns the sockets.

pub mod engine;
pub mod ice_tcp;
pub mod peer;
pub mod shell;
