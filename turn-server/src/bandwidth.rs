//! Per-allocation bandwidth quota: a token bucket in bytes.
//!
//! Both directions draw from one bucket, so an allocation's total relayed
//! volume is capped (a client cannot turn the relay into an amplifier by
//! pushing, nor pull unbounded traffic from peers). Over-quota datagrams are
//! dropped, never queued: UDP media tolerates loss better than delay.

/// A byte rate with its burst allowance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BandwidthLimit {
    /// Sustained bytes per second.
    pub bytes_per_second: u32,
    /// Bytes that may pass at once (at least one maximum datagram).
    pub burst_bytes: u32,
}

impl Default for BandwidthLimit {
    /// 4 MB/s (32 Mbit/s) with one second of burst: a participant's
    /// simulcast upload plus a gallery download fit; a flood does not.
    fn default() -> Self {
        Self {
            bytes_per_second: 4_000_000,
            burst_bytes: 4_000_000,
        }
    }
}

/// The bucket state: 12 bytes, kept inline in the allocation.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ByteBucket {
    tokens: u32,
    last_ms: u64,
}

impl ByteBucket {
    pub(crate) fn full(limit: &BandwidthLimit, now_ms: u64) -> Self {
        Self {
            tokens: limit.burst_bytes,
            last_ms: now_ms,
        }
    }

    /// Takes `len` bytes at `now_ms`; `false` means drop the datagram.
    pub(crate) fn take(&mut self, limit: &BandwidthLimit, len: usize, now_ms: u64) -> bool {
        let elapsed = now_ms.saturating_sub(self.last_ms);
        if elapsed > 0 {
            // Integer refill; u64 cannot overflow: elapsed is clamped to an
            // hour, the rate is u32.
            let refill = elapsed.min(3_600_000) * u64::from(limit.bytes_per_second) / 1000;
            if refill > 0 {
                let tokens = (u64::from(self.tokens) + refill).min(u64::from(limit.burst_bytes));
                self.tokens = u32::try_from(tokens).unwrap_or(u32::MAX);
                self.last_ms = now_ms;
            }
        }
        match u32::try_from(len) {
            Ok(len) if len <= self.tokens => {
                self.tokens -= len;
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_refills_at_rate() {
        let limit = BandwidthLimit {
            bytes_per_second: 1000,
            burst_bytes: 1500,
        };
        let mut b = ByteBucket::full(&limit, 0);
        assert!(b.take(&limit, 1200, 0));
        assert!(!b.take(&limit, 1200, 0));
        assert!(b.take(&limit, 300, 0));
        assert!(!b.take(&limit, 1, 0));
        // 1 ms = 1 byte; partial refills accumulate without losing time.
        assert!(!b.take(&limit, 1200, 999));
        assert!(b.take(&limit, 999, 999));
        assert!(b.take(&limit, 1500, 1_000_000));
        assert!(!b.take(&limit, usize::MAX, 10_000_000));
    }
}
