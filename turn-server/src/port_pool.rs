//! Relay ports of one relay IP: which are free, picked at random.
//!
//! RFC 8656 §7.2 asks for ports chosen at random from 49152–65535 (so
//! off-path attackers cannot guess relayed addresses), never handing out a
//! port that is still in use. The pool is a bitset over the configured range
//! (8 KB for the full 64 K range) plus a FIFO of ports in quarantine: ports
//! the I/O shell could not bind (another process holds them) are kept out of
//! circulation for a while instead of being offered again at once.

use std::collections::VecDeque;
use std::net::IpAddr;

use rand::Rng;

/// Parity constraint from EVEN-PORT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Parity {
    /// Any port.
    Any,
    /// An even port.
    Even,
    /// An even port whose successor is also free (EVEN-PORT with R=1).
    EvenPair,
}

/// Tries of uniform random picks before falling back to a scan; with the
/// pool at most 97 % full, 32 tries miss with probability below 40 %, and
/// the scan from a random start is still unpredictable enough.
const RANDOM_TRIES: usize = 32;

#[derive(Debug)]
pub(crate) struct PortPool {
    ip: IpAddr,
    lo: u16,
    hi: u16,
    used: Vec<u64>,
    in_use: usize,
    /// (release time in table ms, port), in release-time order because the
    /// quarantine duration is constant.
    quarantine: VecDeque<(u64, u16)>,
}

impl PortPool {
    /// A pool over `lo..=hi` (the caller validated `lo <= hi`).
    pub(crate) fn new(ip: IpAddr, lo: u16, hi: u16) -> Self {
        let size = usize::from(hi - lo) + 1;
        Self {
            ip,
            lo,
            hi,
            used: vec![0; size.div_ceil(64)],
            in_use: 0,
            quarantine: VecDeque::new(),
        }
    }

    pub(crate) fn ip(&self) -> IpAddr {
        self.ip
    }

    pub(crate) fn capacity(&self) -> usize {
        usize::from(self.hi - self.lo) + 1
    }

    pub(crate) fn in_use(&self) -> usize {
        self.in_use
    }

    fn index(&self, port: u16) -> Option<usize> {
        (self.lo..=self.hi)
            .contains(&port)
            .then(|| usize::from(port - self.lo))
    }

    pub(crate) fn is_used(&self, port: u16) -> bool {
        self.index(port)
            .is_some_and(|i| self.used[i / 64] & (1 << (i % 64)) != 0)
    }

    fn is_free(&self, port: u16) -> bool {
        self.index(port).is_some() && !self.is_used(port)
    }

    /// Marks `port` taken; `false` if it was already taken or out of range.
    pub(crate) fn take(&mut self, port: u16) -> bool {
        match self.index(port) {
            Some(i) if self.used[i / 64] & (1 << (i % 64)) == 0 => {
                self.used[i / 64] |= 1 << (i % 64);
                self.in_use += 1;
                true
            }
            _ => false,
        }
    }

    /// Returns `port` to the pool.
    pub(crate) fn release(&mut self, port: u16) {
        if let Some(i) = self.index(port) {
            if self.used[i / 64] & (1 << (i % 64)) != 0 {
                self.used[i / 64] &= !(1 << (i % 64));
                self.in_use -= 1;
            }
        }
    }

    /// Keeps an already-taken `port` out of circulation until `until_ms`.
    pub(crate) fn quarantine(&mut self, port: u16, until_ms: u64) {
        self.quarantine.push_back((until_ms, port));
    }

    /// Releases quarantined ports whose time has come.
    pub(crate) fn release_quarantined(&mut self, now_ms: u64) {
        while let Some(&(until, port)) = self.quarantine.front() {
            if until > now_ms {
                break;
            }
            self.quarantine.pop_front();
            self.release(port);
        }
    }

    /// The earliest quarantine release, for the table's wake-up time.
    pub(crate) fn next_release(&self) -> Option<u64> {
        self.quarantine.front().map(|&(until, _)| until)
    }

    fn fits(&self, port: u16, parity: Parity) -> bool {
        match parity {
            Parity::Any => self.is_free(port),
            Parity::Even => port % 2 == 0 && self.is_free(port),
            Parity::EvenPair => {
                port % 2 == 0 && self.is_free(port) && port < u16::MAX && self.is_free(port + 1)
            }
        }
    }

    /// Picks and takes a free port satisfying `parity` (for
    /// [`Parity::EvenPair`] only the even port is taken: the caller
    /// reserves its successor). `None` when none is left.
    pub(crate) fn pick<R: Rng>(&mut self, rng: &mut R, parity: Parity) -> Option<u16> {
        let free = self.capacity() - self.in_use;
        let needed = if parity == Parity::EvenPair { 2 } else { 1 };
        if free < needed {
            return None;
        }
        for _ in 0..RANDOM_TRIES {
            let mut port = rng.random_range(self.lo..=self.hi);
            if parity != Parity::Any {
                port &= !1;
            }
            if self.fits(port, parity) {
                self.take(port);
                return Some(port);
            }
        }
        // Dense pool: scan once around the range from a random start.
        let size = self.capacity();
        let start = rng.random_range(0..size);
        for k in 0..size {
            let offset = (start + k) % size;
            let Ok(offset) = u16::try_from(offset) else {
                continue;
            };
            let port = self.lo + offset;
            if self.fits(port, parity) {
                self.take(port);
                return Some(port);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;
    use std::collections::HashSet;

    fn pool(lo: u16, hi: u16) -> PortPool {
        PortPool::new("192.0.2.1".parse().expect("ip"), lo, hi)
    }

    #[test]
    fn never_hands_out_a_port_twice() {
        let mut rng = StdRng::seed_from_u64(1);
        let mut p = pool(50000, 50099);
        let mut seen = HashSet::new();
        for _ in 0..100 {
            let port = p.pick(&mut rng, Parity::Any).expect("free port");
            assert!((50000..=50099).contains(&port));
            assert!(seen.insert(port), "port {port} reused");
        }
        assert_eq!(p.pick(&mut rng, Parity::Any), None);
        p.release(50042);
        assert_eq!(p.pick(&mut rng, Parity::Any), Some(50042));
    }

    #[test]
    fn parity_rules() {
        let mut rng = StdRng::seed_from_u64(2);
        let mut p = pool(40001, 40010);
        for _ in 0..5 {
            let port = p.pick(&mut rng, Parity::Even).expect("even");
            assert_eq!(port % 2, 0);
        }
        assert_eq!(p.pick(&mut rng, Parity::Even), None);
        assert!(p.pick(&mut rng, Parity::Any).is_some_and(|p| p % 2 == 1));
        let mut p = pool(40000, 40003);
        assert!(p.take(40001));
        // 40000 is even but 40001 is taken: only 40002 pairs.
        assert_eq!(p.pick(&mut rng, Parity::EvenPair), Some(40002));
        assert_eq!(p.pick(&mut rng, Parity::EvenPair), None);
        // The top of the port space has no successor.
        let mut p = pool(65534, 65535);
        assert_eq!(p.pick(&mut rng, Parity::EvenPair), Some(65534));
        let mut p = pool(65535, 65535);
        assert_eq!(p.pick(&mut rng, Parity::Even), None);
        assert_eq!(p.pick(&mut rng, Parity::Any), Some(65535));
    }

    #[test]
    fn quarantine_releases_in_time() {
        let mut rng = StdRng::seed_from_u64(3);
        let mut p = pool(1000, 1000);
        let port = p.pick(&mut rng, Parity::Any).expect("port");
        p.quarantine(port, 500);
        assert_eq!(p.next_release(), Some(500));
        p.release_quarantined(499);
        assert_eq!(p.pick(&mut rng, Parity::Any), None);
        p.release_quarantined(500);
        assert_eq!(p.next_release(), None);
        assert_eq!(p.pick(&mut rng, Parity::Any), Some(1000));
        assert_eq!(p.in_use(), 1);
    }

    #[test]
    fn picks_are_spread() {
        let mut rng = StdRng::seed_from_u64(4);
        let mut p = pool(49152, 65535);
        let ports: Vec<u16> = (0..64)
            .map(|_| p.pick(&mut rng, Parity::Any).expect("port"))
            .collect();
        // Not sequential: a guessable pattern would be a finding.
        let sequential = ports.windows(2).filter(|w| w[1] == w[0] + 1).count();
        assert!(sequential < 4, "{ports:?}");
    }
}
