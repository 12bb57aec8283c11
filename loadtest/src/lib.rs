//! Load testing for the SFU and its TURN relay: simulated participants on
//! str0m with SFrame-encrypted synthetic media, verified frame by frame,
//! measured (latency, loss, jitter, join time) and priced (server CPU per
//! forwarded packet); and a TURN allocation/relay driver.

pub mod clock;
pub mod frame;
pub mod inbox;
pub mod key_exchange;
pub mod layers_received;
pub mod media;
pub mod packetize;
pub mod participant;
pub mod progress;
pub mod report;
pub mod runner;
pub mod scenario;
pub mod server_cost;
pub mod sframe_keys;
pub mod signaling;
pub mod signaling_url;
pub mod stats;
pub mod turn;
pub mod vp8_descriptor;
pub mod worker;
