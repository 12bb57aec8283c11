//! Synthetic media: presets (sizes and rates) and the generator that says
//! which frame is due when.

pub mod generator;
pub mod preset;
