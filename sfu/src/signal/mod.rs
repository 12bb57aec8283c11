//! WebSocket signaling: the message types and the per-connection task.

pub mod protocol;
pub mod rate_limit;
pub mod websocket;
