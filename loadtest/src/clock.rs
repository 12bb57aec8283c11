//! One monotonic epoch for the whole process: publishers stamp frames with
//! microseconds since it and subscribers (in the same process, maybe on
//! another thread) subtract, so latency needs no clock synchronisation.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

static EPOCH: OnceLock<Instant> = OnceLock::new();

/// The process epoch (fixed at the first call).
pub fn epoch() -> Instant {
    *EPOCH.get_or_init(Instant::now)
}

/// Microseconds from the epoch to `at` (0 for instants before it).
pub fn micros(at: Instant) -> u64 {
    at.saturating_duration_since(epoch()).as_micros() as u64
}

/// The instant `us` microseconds after the epoch.
pub fn instant(us: u64) -> Instant {
    epoch() + Duration::from_micros(us)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let t = epoch() + Duration::from_millis(1234);
        assert_eq!(micros(t), 1_234_000);
        assert_eq!(instant(micros(t)), t);
        assert_eq!(micros(epoch() - Duration::from_secs(0)), 0);
    }
}
