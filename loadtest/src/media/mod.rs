//! Synthetic media: presets (sizes and rates), temporal layering, and the
//! generator that says which frame is due when.

pub mod generator;
pub mod preset;
pub mod temporal;
