//! One monotonic epoch for the whole machine: publishers stamp frames with
//! microseconds since it and subscribers subtract, so latency needs no clock
//! synchronisation, also between loadtest processes on one machine (e.g. in
//! different network namespaces): the epoch is the zero of
//! `CLOCK_MONOTONIC`, which every process of the machine shares and which
//! `Instant` reads on Linux.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

static EPOCH: OnceLock<Instant> = OnceLock::new();

/// `CLOCK_MONOTONIC` now, or `None` if the system will not tell.
fn monotonic_now() -> Option<Duration> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec through a valid pointer.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (rc == 0).then(|| {
        Duration::new(
            u64::try_from(ts.tv_sec).unwrap_or(0),
            u32::try_from(ts.tv_nsec).unwrap_or(0),
        )
    })
}

/// The epoch (fixed at the first call): the zero of `CLOCK_MONOTONIC`;
/// if that cannot be had, the first call (then latency is only right
/// within one process).
pub fn epoch() -> Instant {
    *EPOCH.get_or_init(|| {
        let now = Instant::now();
        monotonic_now()
            .and_then(|since_zero| now.checked_sub(since_zero))
            .unwrap_or(now)
    })
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
        assert_eq!(micros(t), micros(epoch()) + 1_234_000);
        assert_eq!(instant(micros(t)), t);
        assert_eq!(micros(epoch() - Duration::from_secs(0)), micros(epoch()));
    }

    #[test]
    fn epoch_is_the_machines_monotonic_zero() {
        // What another process reads from CLOCK_MONOTONIC is what this one
        // computes from its Instant: the two agree to well under a millisecond.
        let ours = micros(Instant::now());
        let system = monotonic_now().expect("CLOCK_MONOTONIC").as_micros() as u64;
        assert!(system.abs_diff(ours) < 1_000, "{ours} vs {system}");
    }
}
