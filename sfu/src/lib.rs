//! A payload-blind selective forwarding unit for end-to-end encrypted
//! browser calls.
//!
//! Layout: [`room`] is the pure room model, [`media`] the shards (each a
//! sans-IO engine of rooms + str0m peers with its tokio shell) and the
//! edge's routing to them, [`signal`] the WebSocket protocol, [`http`] the
//! routes, [`app_state`] what they share, [`server`] the wiring.

pub mod app_state;
pub mod auth;
pub mod cluster;
pub mod config;
pub mod files;
pub mod http;
pub mod media;
pub mod metrics;
pub mod room;
pub mod server;
pub mod signal;
pub mod turn;
pub mod web;
