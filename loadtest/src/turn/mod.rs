//! `loadtest turn`: drives a TURN server directly. Many UDP clients (one
//! socket each, spread over 127.0.0.0/8 source addresses on loopback)
//! allocate, permit and bind a channel to an echo peer the tool runs, then
//! exchange ChannelData with it; allocation rate, throughput, loss, RTT and
//! server CPU per relayed datagram are reported.

pub mod allocation;
pub mod driver;
pub mod echo;
pub mod path;
