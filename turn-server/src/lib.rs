//! TURN relay server (RFC 8656), as a library (the SFU embeds it) and the
//! `turn-server` binary.
//!
//! Layers, bottom up: [`stun`], the wire codec (STUN with the TURN
//! attributes, ChannelData, TCP/TLS framing, credential derivations);
//! [`table`], the sans-IO allocation table (input and time in, decisions
//! out); [`server`], the protocol on top of it (authentication, answers);
//! [`worker`], the thin mio shell that owns sockets and timers; and
//! [`service`], which starts workers from a [`config::TurnConfig`] and
//! reloads what can change while running ([`live`]).

#![deny(unsafe_code)]

pub mod address_policy;
pub mod allocation;
pub mod bandwidth;
pub mod channel;
pub mod config;
pub mod credentials;
pub mod five_tuple;
pub mod live;
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
