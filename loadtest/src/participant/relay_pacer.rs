//! Pacing of a participant's signaling messages under the SFU's rate limit:
//! a token bucket, and the relay messages waiting for it.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Signaling messages per second, and at once, a participant allows itself:
/// under the SFU's default rate limit (50/s, burst 200) with room for SDP and
/// pings, since joining a big room costs a relay message per peer.
pub const SEND_RATE: f64 = 40.0;
/// The bucket's size.
pub const SEND_BURST: f64 = 100.0;

/// The token bucket and the queue of relay messages behind it.
#[derive(Debug)]
pub struct RelayPacer {
    queue: VecDeque<String>,
    tokens: f64,
    refilled: Instant,
}

impl RelayPacer {
    /// A full bucket at `now`.
    pub fn new(now: Instant) -> RelayPacer {
        RelayPacer {
            queue: VecDeque::new(),
            tokens: SEND_BURST,
            refilled: now,
        }
    }

    /// Counts a message sent outside the queue (SDP, leave): it spends a
    /// token even if the bucket is empty.
    pub fn spend(&mut self) {
        self.tokens -= 1.0;
    }

    /// Queues relay messages.
    pub fn push(&mut self, texts: impl IntoIterator<Item = String>) {
        self.queue.extend(texts);
    }

    /// The queued messages the bucket allows at `now`, in order.
    pub fn release(&mut self, now: Instant) -> Vec<String> {
        let refill = now.saturating_duration_since(self.refilled).as_secs_f64() * SEND_RATE;
        self.tokens = (self.tokens + refill).min(SEND_BURST);
        self.refilled = now;
        let mut out = Vec::new();
        while self.tokens >= 1.0 {
            let Some(text) = self.queue.pop_front() else {
                break;
            };
            self.tokens -= 1.0;
            out.push(text);
        }
        out
    }

    /// When the bucket allows the next queued message.
    pub fn due(&self) -> Option<Instant> {
        if self.queue.is_empty() {
            return None;
        }
        let missing = (1.0 - self.tokens).max(0.0);
        Some(self.refilled + Duration::from_secs_f64(missing / SEND_RATE))
    }
}
