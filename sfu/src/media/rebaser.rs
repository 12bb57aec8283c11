//! Per-subscriber rewriting of one track's RTP sequence numbers and timestamps.
//!
//! Each subscriber sees a stream that starts at sequence number 1 (so the SRTP
//! rollover counter starts at 0, which receivers assume) and stays continuous
//! when the publisher's SSRC changes or the slot is rebound to another track.
//! Only header fields are touched; payloads pass through untouched.

use std::time::{Duration, Instant};

/// Where the outgoing stream continues from.
#[derive(Debug, Clone, Copy)]
struct Source {
    ssrc: u32,
    /// Added to the incoming extended sequence number.
    seq_offset: i64,
    /// Added (wrapping) to the incoming timestamp.
    ts_offset: u32,
}

/// Rewrites one incoming stream for one subscriber.
#[derive(Debug, Clone, Default)]
pub struct Rebaser {
    source: Option<Source>,
    /// Highest sequence number sent so far (0 = none yet).
    max_seq: u64,
    /// Timestamp and send time of the packet with `max_seq`.
    last_ts: u32,
    last_sent: Option<Instant>,
}

/// An outgoing packet's rewritten header fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rebased {
    /// Extended sequence number for the subscriber's stream.
    pub seq: u64,
    /// RTP timestamp for the subscriber's stream.
    pub ts: u32,
}

impl Rebaser {
    /// Maps an incoming packet (`ssrc`, extended `seq`, `ts`) arriving at `now`
    /// to the subscriber's numbering. `clock_rate` (Hz) bridges the timestamp
    /// gap when the source changes. Returns `None` for a packet older than the
    /// point where this subscriber's stream started (it cannot be numbered).
    pub fn rebase(
        &mut self,
        ssrc: u32,
        seq: u64,
        ts: u32,
        clock_rate: u32,
        now: Instant,
    ) -> Option<Rebased> {
        let source = match self.source {
            Some(s) if s.ssrc == ssrc => s,
            _ => {
                let s = self.continue_from(ssrc, seq, ts, clock_rate, now);
                self.source = Some(s);
                s
            }
        };
        let out_seq = i64::try_from(seq).ok()?.checked_add(source.seq_offset)?;
        if out_seq < 1 {
            return None;
        }
        let out_seq = out_seq as u64;
        let out_ts = ts.wrapping_add(source.ts_offset);
        if out_seq > self.max_seq {
            self.max_seq = out_seq;
            self.last_ts = out_ts;
            self.last_sent = Some(now);
        }
        Some(Rebased {
            seq: out_seq,
            ts: out_ts,
        })
    }

    /// A packet of the current source left out on purpose (a temporal
    /// layer not carried): the packets after it close the gap. Assumes the
    /// source's packets arrive in order; one reordered across the skip
    /// would take its neighbour's number (and be asked for again).
    pub fn skip(&mut self) {
        if let Some(s) = &mut self.source {
            s.seq_offset -= 1;
        }
    }

    /// Makes the next packet start a new mapping even from the same SSRC
    /// (after a pause or a layer change: the packets skipped in between
    /// leave no gap in the subscriber's numbering).
    pub fn restart(&mut self) {
        self.source = None;
    }

    /// Starts mapping a new source so that its first packet directly follows
    /// the last one sent.
    fn continue_from(&self, ssrc: u32, seq: u64, ts: u32, clock_rate: u32, now: Instant) -> Source {
        let next_seq = self.max_seq as i64 + 1;
        let seq_offset = next_seq - seq as i64;
        let ts_offset = match self.last_sent {
            // First source: keep its timestamps.
            None => 0,
            Some(last) => {
                let gap = now
                    .saturating_duration_since(last)
                    .max(Duration::from_millis(1));
                let ticks = (gap.as_secs_f64() * f64::from(clock_rate)) as u32;
                self.last_ts.wrapping_add(ticks.max(1)).wrapping_sub(ts)
            }
        };
        Source {
            ssrc,
            seq_offset,
            ts_offset,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn first_packet_is_one_and_sequence_is_continuous() {
        let t0 = Instant::now();
        let mut r = Rebaser::default();
        // A long-running publisher: extended seq well past one rollover.
        let base = 3 * 65_536 + 65_530;
        for i in 0..20u64 {
            let out = r
                .rebase(7, base + i, 1000 + i as u32 * 960, 48_000, t0)
                .unwrap();
            assert_eq!(out.seq, 1 + i);
            assert_eq!(out.ts, 1000 + i as u32 * 960);
        }
    }

    #[test]
    fn reordered_and_old_packets() {
        let t0 = Instant::now();
        let mut r = Rebaser::default();
        assert_eq!(r.rebase(1, 100, 0, 90_000, t0).unwrap().seq, 1);
        assert_eq!(r.rebase(1, 102, 0, 90_000, t0).unwrap().seq, 3);
        // Late packet in between keeps its place.
        assert_eq!(r.rebase(1, 101, 0, 90_000, t0).unwrap().seq, 2);
        // Older than the start of this subscriber's stream.
        assert_eq!(r.rebase(1, 99, 0, 90_000, t0), None);
    }

    #[test]
    fn ssrc_change_continues_numbering_and_time() {
        let t0 = Instant::now();
        let mut r = Rebaser::default();
        r.rebase(1, 500, 10_000, 90_000, t0).unwrap();
        let last = r.rebase(1, 501, 13_000, 90_000, t0).unwrap();
        let t1 = t0 + Duration::from_millis(100);
        let next = r.rebase(2, 9, 777, 90_000, t1).unwrap();
        assert_eq!(next.seq, last.seq + 1);
        assert_eq!(next.ts, last.ts.wrapping_add(9_000));
        let after = r.rebase(2, 10, 777 + 3000, 90_000, t1).unwrap();
        assert_eq!(after.seq, last.seq + 2);
        assert_eq!(after.ts, next.ts + 3000);
    }

    #[test]
    fn skipped_packets_leave_no_gap() {
        let t0 = Instant::now();
        let mut r = Rebaser::default();
        assert_eq!(r.rebase(1, 100, 0, 90_000, t0).unwrap().seq, 1);
        // 101 and 102 left out.
        r.skip();
        r.skip();
        assert_eq!(r.rebase(1, 103, 0, 90_000, t0).unwrap().seq, 2);
        assert_eq!(r.rebase(1, 104, 0, 90_000, t0).unwrap().seq, 3);
        // Before the first packet there is nothing to close.
        let mut r = Rebaser::default();
        r.skip();
        assert_eq!(r.rebase(1, 7, 0, 90_000, t0).unwrap().seq, 1);
    }

    proptest! {
        /// Whatever the incoming numbering, in-order input gives a gap-free
        /// output starting at 1 (RTP needs this; SRTP needs ROC 0 at start).
        #[test]
        fn in_order_input_gives_gapless_output(
            start in 0u64..(1 << 40),
            ssrc_changes in proptest::collection::vec((1u32..5, 1u64..1000), 1..5),
        ) {
            let t0 = Instant::now();
            let mut r = Rebaser::default();
            let mut expected = 1;
            let mut seq = start;
            for (i, (ssrc, n)) in ssrc_changes.into_iter().enumerate() {
                // Consecutive sources always differ.
                let ssrc = ssrc * 10 + i as u32;
                for _ in 0..n {
                    let out = r.rebase(ssrc, seq, 0, 90_000, t0).unwrap();
                    prop_assert_eq!(out.seq, expected);
                    expected += 1;
                    seq += 1;
                }
                seq = seq.wrapping_mul(7) % (1 << 40);
            }
        }
    }
}
