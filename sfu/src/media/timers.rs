//! When each peer next needs the engine's attention, as a min-heap.
//!
//! An idle str0m wake-up costs time linear in a peer's m-lines, and the
//! engine used to scan every peer for its deadline on each loop turn. The
//! heap answers "what is due?" in O(log n) and touches only due peers.
//!
//! Deadlines move all the time (every drain of a peer gives str0m's next
//! timeout; every datagram pushes its liveness deadline later), so entries
//! are never updated in place: [`Timers::schedule`] pushes only when a
//! deadline comes *earlier* than the one already queued for the key, and a
//! popped entry that no longer matches the key's current schedule is
//! discarded (lazy deletion). A deadline that moved later is found when its
//! old entry fires early; the caller then schedules it again.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

/// Keys whose schedule is tracked by the caller (one `Option<Instant>` per
/// key, see [`Timers::schedule`]).
#[derive(Debug)]
pub struct Timers<K: Ord + Copy> {
    heap: BinaryHeap<Reverse<(Instant, K)>>,
}

impl<K: Ord + Copy> Default for Timers<K> {
    fn default() -> Self {
        Self {
            heap: BinaryHeap::new(),
        }
    }
}

impl<K: Ord + Copy> Timers<K> {
    /// Asks for `key` to be due at `at`. `scheduled` is the key's current
    /// schedule, owned by the caller; it is updated here.
    pub fn schedule(&mut self, key: K, at: Instant, scheduled: &mut Option<Instant>) {
        if scheduled.is_none_or(|s| at < s) {
            self.heap.push(Reverse((at, key)));
            *scheduled = Some(at);
        }
    }

    /// The earliest queued instant (possibly of a stale entry: waking for
    /// it is harmless, [`Timers::pop_due`] discards it).
    pub fn next(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, _))| *at)
    }

    /// Pops the next key due at `now`. `claim(key, at)` says whether `at`
    /// is still the key's schedule (the caller then clears it); entries it
    /// refuses are stale and dropped.
    pub fn pop_due(
        &mut self,
        now: Instant,
        mut claim: impl FnMut(K, Instant) -> bool,
    ) -> Option<K> {
        while let Some(&Reverse((at, key))) = self.heap.peek() {
            if at > now {
                return None;
            }
            self.heap.pop();
            if claim(key, at) {
                return Some(key);
            }
        }
        None
    }

    /// Entries queued (stale ones included).
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::time::Duration;

    /// Keys with their schedules, as the engine keeps them in its peers.
    #[derive(Default)]
    struct Owner {
        timers: Timers<u32>,
        scheduled: HashMap<u32, Option<Instant>>,
    }

    impl Owner {
        fn schedule(&mut self, key: u32, at: Instant) {
            let slot = self.scheduled.entry(key).or_default();
            self.timers.schedule(key, at, slot);
        }
        fn due(&mut self, now: Instant) -> Vec<u32> {
            let mut out = Vec::new();
            let scheduled = &mut self.scheduled;
            while let Some(k) = self.timers.pop_due(now, |k, at| {
                let slot = scheduled.get_mut(&k);
                match slot {
                    Some(s) if *s == Some(at) => {
                        *s = None;
                        true
                    }
                    _ => false,
                }
            }) {
                out.push(k);
            }
            out
        }
    }

    #[test]
    fn due_keys_come_out_in_deadline_order() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut o = Owner::default();
        o.schedule(1, ms(30));
        o.schedule(2, ms(10));
        o.schedule(3, ms(20));
        assert_eq!(o.timers.next(), Some(ms(10)));
        assert_eq!(o.due(ms(5)), Vec::<u32>::new());
        assert_eq!(o.due(ms(20)), [2, 3]);
        assert_eq!(o.due(ms(100)), [1]);
        assert!(o.timers.is_empty());
    }

    #[test]
    fn an_earlier_deadline_replaces_a_later_one() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut o = Owner::default();
        o.schedule(1, ms(50));
        o.schedule(1, ms(10));
        // A later deadline than the queued one is not pushed: the earlier
        // entry fires and the owner schedules again then.
        o.schedule(1, ms(70));
        assert_eq!(o.timers.len(), 2);
        assert_eq!(o.due(ms(10)), [1]);
        // The stale 50 ms entry is dropped, not reported.
        assert_eq!(o.due(ms(60)), Vec::<u32>::new());
        assert!(o.timers.is_empty());
    }

    #[test]
    fn removed_keys_never_fire() {
        let t0 = Instant::now();
        let mut o = Owner::default();
        o.schedule(7, t0);
        o.scheduled.remove(&7);
        assert_eq!(o.due(t0 + Duration::from_secs(1)), Vec::<u32>::new());
    }
}
