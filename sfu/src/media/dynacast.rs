//! Dynacast: which simulcast layers of one published track the publisher
//! keeps encoding. A layer nobody wants costs the publisher CPU and uplink
//! for nothing, so it is switched off at the publisher (the web client sets
//! `active: false` on that encoding) and switched on again as soon as a
//! subscriber wants it.
//!
//! "Wanted" follows the subscribers' tiles, not their bandwidth (as
//! LiveKit's dynacast keeps the highest quality any subscriber asks for):
//! a layer is wanted while some subscriber shows the track in a tile that
//! needs it (`allocator::needed_layer`), whatever its downlink allows now.
//! Estimates move in seconds; a layer switched off for one subscriber's
//! dip would cost a restart and a keyframe to climb back, so a
//! bandwidth-limited subscriber keeps the layers above it on.
//!
//! - The lowest layer is always on: it is the fallback when a downlink
//!   collapses and what a new subscriber or a tile shown again starts on at
//!   once; it costs the publisher least. With no subscribers at all, only
//!   it stays on.
//! - Off only after a layer has been unwanted for [`OFF_AFTER`] (a tile
//!   resized by a drag, or a subscriber reconnecting, does not make the
//!   publisher restart an encoder); on at once when wanted again.
//! - Only layers the publisher has sent can be switched (their rid is
//!   known).
//!
//! Sans-IO: wanted layers and time in, switches out; `engine/dynacast.rs`
//! gathers the tiles and tells the publisher.

use std::time::{Duration, Instant};

use super::layers::MAX_LAYERS;

/// A layer unwanted this long is switched off.
pub const OFF_AFTER: Duration = Duration::from_secs(3);

/// Layers switched at the publisher by one update (bit `i`: spatial layer `i`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Switch {
    /// Switched on now.
    pub on: u8,
    /// Switched off now.
    pub off: u8,
}

/// The publisher-side layer state of one simulcast track.
#[derive(Debug, Clone, Default)]
pub struct Dynacast {
    /// Layers switched off at the publisher (bit per spatial index).
    off: u8,
    /// Since when each layer has been wanted by nobody.
    unwanted_since: [Option<Instant>; MAX_LAYERS],
}

impl Dynacast {
    /// Layers switched off now (bit per spatial index).
    pub fn off(&self) -> u8 {
        self.off
    }

    /// Updates the state for `known`, the layers the publisher has sent
    /// (bit per spatial index), when the highest layer any subscriber wants
    /// is `wanted` (`None`: nobody wants any). Returns what changed, if
    /// anything.
    pub fn update(&mut self, known: u8, wanted: Option<u8>, now: Instant) -> Option<Switch> {
        let mut switch = Switch { on: 0, off: 0 };
        let lowest = known.trailing_zeros() as usize;
        for i in 0..MAX_LAYERS {
            let bit = 1u8 << i;
            if known & bit == 0 {
                self.unwanted_since[i] = None;
                continue;
            }
            let want = i == lowest || wanted.is_some_and(|w| i <= usize::from(w));
            if want {
                self.unwanted_since[i] = None;
                if self.off & bit != 0 {
                    self.off &= !bit;
                    switch.on |= bit;
                }
            } else {
                let since = *self.unwanted_since[i].get_or_insert(now);
                if self.off & bit == 0 && now.saturating_duration_since(since) >= OFF_AFTER {
                    self.off |= bit;
                    switch.off |= bit;
                }
            }
        }
        (switch.on | switch.off != 0).then_some(switch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const QHF: u8 = 0b111;
    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn an_unwanted_layer_goes_off_after_the_hold_and_comes_back_at_once() {
        let t0 = Instant::now();
        let mut d = Dynacast::default();
        assert_eq!(d.update(QHF, Some(2), t0), None, "all wanted: all on");
        // Tiles shrink: only h is wanted; f stays on for OFF_AFTER.
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(d.update(QHF, Some(1), t1), None);
        assert_eq!(d.update(QHF, Some(1), t1 + OFF_AFTER - MS), None);
        assert_eq!(
            d.update(QHF, Some(1), t1 + OFF_AFTER),
            Some(Switch { on: 0, off: 0b100 })
        );
        assert_eq!(d.off(), 0b100);
        assert_eq!(d.update(QHF, Some(1), t1 + OFF_AFTER * 2), None, "once");
        // A tile grows: f on at the very next update.
        let t2 = t1 + OFF_AFTER * 2 + MS;
        assert_eq!(
            d.update(QHF, Some(2), t2),
            Some(Switch { on: 0b100, off: 0 })
        );
        assert_eq!(d.off(), 0);
    }

    #[test]
    fn a_short_dip_in_demand_switches_nothing() {
        let t0 = Instant::now();
        let mut d = Dynacast::default();
        assert_eq!(d.update(QHF, Some(0), t0), None);
        assert_eq!(d.update(QHF, Some(2), t0 + OFF_AFTER - MS), None);
        // The hold starts again from the next time it is unwanted.
        assert_eq!(d.update(QHF, Some(0), t0 + OFF_AFTER), None);
        assert_eq!(d.update(QHF, Some(0), t0 + OFF_AFTER * 2 - MS), None);
        assert_eq!(
            d.update(QHF, Some(0), t0 + OFF_AFTER * 2),
            Some(Switch { on: 0, off: 0b110 })
        );
    }

    #[test]
    fn the_lowest_layer_stays_on_even_with_no_subscribers() {
        let t0 = Instant::now();
        let mut d = Dynacast::default();
        d.update(QHF, None, t0);
        assert_eq!(
            d.update(QHF, None, t0 + OFF_AFTER),
            Some(Switch { on: 0, off: 0b110 })
        );
        // A camera too small for q sends h and f: h is its lowest.
        let mut d = Dynacast::default();
        d.update(0b110, None, t0);
        assert_eq!(
            d.update(0b110, None, t0 + OFF_AFTER),
            Some(Switch { on: 0, off: 0b100 })
        );
    }

    #[test]
    fn only_layers_the_publisher_sent_are_switched() {
        let t0 = Instant::now();
        let mut d = Dynacast::default();
        // Only q seen so far: nothing to name, nothing to switch.
        d.update(0b001, None, t0);
        assert_eq!(d.update(0b001, None, t0 + OFF_AFTER), None);
        // h appears later: its hold starts when it is first seen.
        let t1 = t0 + OFF_AFTER;
        assert_eq!(d.update(0b011, None, t1), None);
        assert_eq!(
            d.update(0b011, None, t1 + OFF_AFTER),
            Some(Switch { on: 0, off: 0b010 })
        );
    }
}
