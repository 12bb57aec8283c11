//! TURN relay server (RFC 8656).
//!
//! For now this crate holds the wire codec, [`stun`]: STUN messages
//! (RFC 8489) with the TURN attributes, ChannelData, TCP/TLS framing and the
//! credential derivations. The allocation engine and I/O shell build on it.

// The one exception is `datagram_batch` (recvmmsg/sendmmsg, UDP GSO).
#![deny(unsafe_code)]

pub mod address_policy;
pub mod allocation;
pub mod bandwidth;
pub mod channel;
pub mod config;
pub mod credentials;
pub mod datagram_batch;
pub mod fd_limit;
pub mod five_tuple;
pub mod metrics;
pub mod nonce;
pub mod permission;
pub mod port_pool;
pub mod quota;
pub mod rate_limit;
pub mod server;
#[cfg(test)]
mod server_tests;
pub mod service;
pub mod stream;
pub mod stun;
pub mod table;
pub mod tls;
pub mod turn_error;
pub mod worker;
