//! Throttling of keyframe requests on their way to a publisher.
//!
//! Browsers repeat PLIs every ~200 ms while they wait and several subscribers
//! ask at once; a publisher needs one request per interval.

use std::time::{Duration, Instant};

/// Lets at most one keyframe request through per interval.
#[derive(Debug, Clone)]
pub struct KeyframeThrottle {
    interval: Duration,
    last: Option<Instant>,
}

impl KeyframeThrottle {
    /// A throttle passing one request per `interval`.
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            last: None,
        }
    }

    /// Whether a request at `now` should go to the publisher.
    pub fn allow(&mut self, now: Instant) -> bool {
        match self.last {
            Some(last) if now.saturating_duration_since(last) < self.interval => false,
            _ => {
                self.last = Some(now);
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_per_interval() {
        let t0 = Instant::now();
        let mut k = KeyframeThrottle::new(Duration::from_millis(500));
        assert!(k.allow(t0));
        assert!(!k.allow(t0 + Duration::from_millis(200)));
        assert!(!k.allow(t0 + Duration::from_millis(499)));
        assert!(k.allow(t0 + Duration::from_millis(500)));
        assert!(!k.allow(t0 + Duration::from_millis(600)));
    }
}
