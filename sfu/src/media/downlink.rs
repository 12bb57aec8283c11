//! A subscriber's downlink as its allocator sees it: str0m's estimate, with
//! a single fall held back until it is confirmed.
//!
//! Why: a transport-wide estimate of a subscriber who receives one stream
//! hugs 1.5 × what it is sent (the estimator never climbs further without a
//! probe), and one overuse signal sets it to 0.85 × the rate acknowledged,
//! below what the current layers cost. On a busy receiver a single such
//! signal is often jitter, not congestion (measured: an unimpaired Chromium
//! subscriber dropped from 1,359 to 638 kbit/s once and stayed on the lower
//! layer for 20 s, as the estimate climbs back slowly). Congestion repeats:
//! while a link carries less than is sent, the estimate falls again within
//! a few round trips. So a fall counts once a second fall follows while the
//! first is held, or after [`HOLD`]; an estimate back at the held figure
//! ends the hold. LiveKit's stream allocator likewise waits for a downward
//! trend over several estimates before it lowers layers.
//!
//! ```
//! # use std::time::{Duration, Instant};
//! # use sfu::media::downlink::Downlink;
//! let t0 = Instant::now();
//! let mut link = Downlink::new(2_000_000);
//! link.estimate(1_200_000, t0);
//! assert_eq!(link.bps(t0), 2_000_000); // one fall: held
//! assert!(link.holding());
//! link.estimate(900_000, t0 + Duration::from_millis(50));
//! assert_eq!(link.bps(t0), 900_000); // a second fall: congestion
//! ```

use std::time::{Duration, Instant};

/// How long a single fall is held at most before it counts anyway.
pub const HOLD: Duration = Duration::from_secs(10);

/// The figure a subscriber's layers are chosen by.
#[derive(Debug, Clone)]
pub struct Downlink {
    /// What the allocator is given.
    committed: u64,
    /// The estimator's latest figure.
    last: u64,
    /// Since when `last` has been below `committed` (a fall is held).
    held_since: Option<Instant>,
}

impl Downlink {
    /// A downlink taken to be `initial` bit/s until estimates arrive.
    pub fn new(initial: u64) -> Self {
        Self {
            committed: initial,
            last: initial,
            held_since: None,
        }
    }

    /// A new estimate (bit/s). Rises count at once.
    pub fn estimate(&mut self, bps: u64, now: Instant) {
        let fell = bps < self.last;
        self.last = bps;
        if bps >= self.committed {
            self.committed = bps;
            self.held_since = None;
        } else if self.held_since.is_some() && fell {
            self.commit();
        } else {
            self.held_since.get_or_insert(now);
        }
    }

    /// The downlink to allocate by at `now`.
    pub fn bps(&mut self, now: Instant) -> u64 {
        if self
            .held_since
            .is_some_and(|since| now.saturating_duration_since(since) >= HOLD)
        {
            self.commit();
        }
        self.committed
    }

    /// The estimator's latest figure, held or not.
    pub fn estimated(&self) -> u64 {
        self.last
    }

    /// Whether a fall is being held (no layer should climb meanwhile).
    pub fn holding(&self) -> bool {
        self.held_since.is_some()
    }

    fn commit(&mut self) {
        self.committed = self.last;
        self.held_since = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn rises_count_at_once() {
        let t0 = Instant::now();
        let mut link = Downlink::new(1_000_000);
        link.estimate(1_500_000, t0);
        assert_eq!(link.bps(t0), 1_500_000);
        assert!(!link.holding());
    }

    #[test]
    fn a_single_fall_is_held_and_ends_when_the_estimate_recovers() {
        let t0 = Instant::now();
        let mut link = Downlink::new(1_359_000);
        link.estimate(638_000, t0);
        assert_eq!(link.bps(t0 + 100 * MS), 1_359_000);
        assert!(link.holding());
        assert_eq!(link.estimated(), 638_000);
        // Climbing back (the estimator's increases) keeps the hold.
        link.estimate(700_000, t0 + 1000 * MS);
        link.estimate(900_000, t0 + 2000 * MS);
        assert_eq!(link.bps(t0 + 2000 * MS), 1_359_000);
        // Back at the held figure: the hold ends.
        link.estimate(1_400_000, t0 + 3000 * MS);
        assert_eq!(link.bps(t0 + 3000 * MS), 1_400_000);
        assert!(!link.holding());
    }

    #[test]
    fn a_second_fall_while_held_counts() {
        let t0 = Instant::now();
        let mut link = Downlink::new(2_000_000);
        link.estimate(1_161_000, t0);
        link.estimate(1_300_000, t0 + 100 * MS); // a rise in between
        assert_eq!(link.bps(t0 + 100 * MS), 2_000_000);
        link.estimate(840_000, t0 + 200 * MS);
        assert_eq!(link.bps(t0 + 200 * MS), 840_000);
        assert!(!link.holding());
        // Each further fall is a first fall again, below the new figure.
        link.estimate(681_000, t0 + 300 * MS);
        assert_eq!(link.bps(t0 + 300 * MS), 840_000);
        link.estimate(586_000, t0 + 400 * MS);
        assert_eq!(link.bps(t0 + 400 * MS), 586_000);
    }

    #[test]
    fn a_fall_held_too_long_counts() {
        let t0 = Instant::now();
        let mut link = Downlink::new(2_000_000);
        link.estimate(1_000_000, t0);
        link.estimate(1_100_000, t0 + 1000 * MS);
        assert_eq!(link.bps(t0 + HOLD - MS), 2_000_000);
        assert_eq!(link.bps(t0 + HOLD), 1_100_000);
        assert!(!link.holding());
    }
}
