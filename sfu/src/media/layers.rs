//! How many layers a published video track may have: spatial (simulcast)
//! layers, and temporal layers within each. Fixed-size arrays of these
//! sizes hold per-layer state in the receiver, allocator and dynacast.

/// Most simulcast layers a track may have (a fourth rid is refused).
pub const MAX_LAYERS: usize = 3;
/// Temporal layers a spatial layer may carry (L1T3: ids 0, 1, 2).
pub const TEMPORAL_LAYERS: usize = 3;
