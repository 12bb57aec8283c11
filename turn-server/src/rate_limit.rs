//! Per-source rate limit for unauthenticated requests.
//!
//! Every 401 challenge costs the server an HMAC and sends back a larger
//! message than it received, so an unauthenticated flood (or a reflection
//! with spoofed sources) must be capped per source. A token bucket per
//! source prefix does that: `burst` requests at once, `per_second`
//! sustained.
//!
//! Memory is bounded whatever the number of sources: buckets live in two
//! generations of at most `max_sources / 2` entries each. A hit in the old
//! generation is promoted; when the young generation is full, the old one
//! is dropped whole and the young one takes its place. Eviction is O(1)
//! amortised and drops the least recently seen sources; a dropped source
//! simply starts again with a full bucket, which is what an idle source
//! would have had anyway.
//!
//! IPv6 sources are keyed by their /64 (configurable): one host owns a whole
//! /64 and could otherwise rotate through 2^64 fresh buckets.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Instant;

use crate::address_policy::Cidr;

/// Rate limit settings.
#[derive(Clone, Debug, PartialEq)]
pub struct RateLimitConfig {
    /// Sustained requests per second per source.
    pub per_second: f64,
    /// Requests a source may make at once.
    pub burst: f64,
    /// Upper bound on tracked sources (memory: ~40 bytes each).
    pub max_sources: usize,
    /// IPv4 sources are grouped by this prefix length (32 = per address).
    pub ipv4_prefix: u8,
    /// IPv6 sources are grouped by this prefix length (64 = per subnet).
    pub ipv6_prefix: u8,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            per_second: 50.0,
            burst: 200.0,
            max_sources: 100_000,
            ipv4_prefix: 32,
            ipv6_prefix: 64,
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f32,
    /// Milliseconds since the limiter's epoch.
    last_ms: u64,
}

/// Token buckets per source prefix, with bounded memory and injected time.
#[derive(Debug)]
pub struct RateLimiter {
    config: RateLimitConfig,
    epoch: Instant,
    young: HashMap<IpAddr, Bucket>,
    old: HashMap<IpAddr, Bucket>,
    generation_cap: usize,
    limited: u64,
}

impl RateLimiter {
    /// A limiter whose clock starts at `now`. Nonsensical values are
    /// clamped (at least 1 token of burst, at least 2 sources).
    pub fn new(mut config: RateLimitConfig, now: Instant) -> Self {
        if !config.per_second.is_finite() || config.per_second < 0.0 {
            config.per_second = 0.0;
        }
        if !config.burst.is_finite() || config.burst < 1.0 {
            config.burst = 1.0;
        }
        config.ipv4_prefix = config.ipv4_prefix.min(32);
        config.ipv6_prefix = config.ipv6_prefix.min(128);
        let generation_cap = (config.max_sources / 2).max(1);
        Self {
            config,
            epoch: now,
            young: HashMap::new(),
            old: HashMap::new(),
            generation_cap,
            limited: 0,
        }
    }

    fn key(&self, source: IpAddr) -> IpAddr {
        let prefix = match source {
            IpAddr::V4(_) => self.config.ipv4_prefix,
            IpAddr::V6(_) => self.config.ipv6_prefix,
        };
        Cidr::new(source, prefix).map_or(source, |c| c.network())
    }

    /// Takes one token for `source` at `now`: `true` to process the
    /// request, `false` to drop it silently.
    pub fn try_acquire(&mut self, source: IpAddr, now: Instant) -> bool {
        let now_ms = u64::try_from(now.saturating_duration_since(self.epoch).as_millis())
            .unwrap_or(u64::MAX);
        let key = self.key(source);
        let burst = self.config.burst as f32;
        if !self.young.contains_key(&key) {
            let promoted = self.old.remove(&key).unwrap_or(Bucket {
                tokens: burst,
                last_ms: now_ms,
            });
            if self.young.len() >= self.generation_cap {
                // Rotate: the old generation (the least recently seen
                // sources) is forgotten.
                self.old = std::mem::take(&mut self.young);
            }
            self.young.insert(key, promoted);
        }
        let Some(bucket) = self.young.get_mut(&key) else {
            return false;
        };
        let elapsed_ms = now_ms.saturating_sub(bucket.last_ms);
        bucket.last_ms = bucket.last_ms.max(now_ms);
        let refill = (elapsed_ms as f64 / 1000.0 * self.config.per_second) as f32;
        bucket.tokens = (bucket.tokens + refill).min(burst);
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            self.limited += 1;
            false
        }
    }

    /// Sources currently tracked (both generations).
    pub fn tracked_sources(&self) -> usize {
        self.young.len() + self.old.len()
    }

    /// Requests refused since creation.
    pub fn limited_total(&self) -> u64 {
        self.limited
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test address")
    }

    fn limiter(per_second: f64, burst: f64, max_sources: usize, t0: Instant) -> RateLimiter {
        RateLimiter::new(
            RateLimitConfig {
                per_second,
                burst,
                max_sources,
                ..RateLimitConfig::default()
            },
            t0,
        )
    }

    #[test]
    fn burst_then_sustained_rate() {
        let t0 = Instant::now();
        let mut l = limiter(10.0, 5.0, 100, t0);
        let a = ip("192.0.2.1");
        for _ in 0..5 {
            assert!(l.try_acquire(a, t0));
        }
        assert!(!l.try_acquire(a, t0));
        assert_eq!(l.limited_total(), 1);
        // 100 ms later one token is back.
        assert!(l.try_acquire(a, t0 + Duration::from_millis(100)));
        assert!(!l.try_acquire(a, t0 + Duration::from_millis(100)));
        // Idle for long: refilled to the burst, not beyond.
        let later = t0 + Duration::from_secs(3600);
        for _ in 0..5 {
            assert!(l.try_acquire(a, later));
        }
        assert!(!l.try_acquire(a, later));
        // Another source is independent.
        assert!(l.try_acquire(ip("192.0.2.2"), later));
    }

    #[test]
    fn ipv6_grouped_by_64() {
        let t0 = Instant::now();
        let mut l = limiter(1.0, 2.0, 100, t0);
        assert!(l.try_acquire(ip("2001:db8::1"), t0));
        assert!(l.try_acquire(ip("2001:db8::ffff:2"), t0));
        assert!(!l.try_acquire(ip("2001:db8::3"), t0), "same /64");
        assert!(l.try_acquire(ip("2001:db8:0:1::1"), t0), "other /64");
    }

    #[test]
    fn memory_is_bounded() {
        let t0 = Instant::now();
        let mut l = limiter(1.0, 1.0, 1000, t0);
        for i in 0..100_000u32 {
            l.try_acquire(IpAddr::V4(i.into()), t0);
            assert!(l.tracked_sources() <= 1000);
        }
        // Recently seen sources are still remembered (and still limited).
        assert!(!l.try_acquire(IpAddr::V4(99_999u32.into()), t0));
    }

    #[test]
    fn time_going_backwards_is_harmless() {
        let t0 = Instant::now();
        let later = t0 + Duration::from_secs(10);
        let mut l = limiter(1.0, 1.0, 10, t0);
        assert!(l.try_acquire(ip("192.0.2.1"), later));
        assert!(!l.try_acquire(ip("192.0.2.1"), t0));
        assert!(l.try_acquire(ip("192.0.2.1"), later + Duration::from_secs(1)));
    }
}
