//! A payload-blind selective forwarding unit for end-to-end encrypted
//! browser calls.
//!
//! Layout: [`room`] is the pure room model, [`media`] the sans-IO engine
//! (rooms + str0m peers) with its tokio shell, [`signal`] the WebSocket
//! protocol, [`http`] the routes, [`server`] the wiring.

pub mod auth;
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
