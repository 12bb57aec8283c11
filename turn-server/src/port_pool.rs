//! Relay ports: which are free, picked at random, and EVEN-PORT
//! reservations.
//!
//! RFC 8656 §7.2 asks for ports chosen at random from 49152–65535 (so
//! off-path attackers cannot guess relayed addresses), never handing out a
//! port that is still in use.
//!
//! # Shared between the worker tables of one server
//!
//! Each worker owns its [`AllocationTable`](crate::table::AllocationTable)
//! and picks ports from its own slice of the range (`split_port_range`), so
//! workers do not compete for the same ports. Port *ownership*, though, is
//! server-wide: [`SharedPorts`] holds one bitset per relay IP over the whole
//! port space (8 KB per IP) and the registry of EVEN-PORT reservations,
//! behind one mutex. Why:
//!
//! An EVEN-PORT R=1 Allocate reserves port + 1 under a RESERVATION-TOKEN,
//! and the client claims it with a *second* Allocate from another client
//! port. With SO_REUSEPORT the kernel hashes that second 5-tuple to any
//! worker, so the claim must work in any table, for a port in another
//! table's slice (coturn's `turnutils_uclient` does exactly this). With a
//! shared bitset the claiming table simply takes over the port: it was never
//! free, and when the claimed allocation ends the port is released into the
//! same bitset, where the reserving table's picks see it free again. No
//! table has to know which table a port "came from", and no port can be
//! handed out twice, whatever the slices are. (The other design, per-table
//! pools with released foreign ports sent back to their home table, needs a
//! home id per allocation, return queues and a home-side quarantine: more
//! moving parts for the same result.)
//!
//! The mutex is taken only when a port is picked, taken or released and
//! when a reservation is made, claimed or dropped — Allocate, deletion,
//! bind failure — never on the relay paths, which only use each table's
//! own hash indexes. Quarantine stays per table (`PortPool`): a worker
//! that has nothing due does not touch the lock on its timer path.
//!
//! # Reservations
//!
//! The registry maps a token to the reserved relayed address, the user who
//! may claim it (RFC 8656 §7.2: the same credentials) and its expiry as an
//! [`Instant`] (tables have different epochs). Whoever *removes* a
//! registry entry owns its port from then on: a claim moves it into the
//! claimant's allocation, an expiry or a cancellation releases it. The
//! reserving table keeps a timer per reservation and drops the entry when
//! it is due, unless it was claimed first; both happen under the mutex, so
//! a token is claimed at most once and an expired one never.
//!
//! A reservation only marks the port here: no socket holds it until the
//! claim binds it, and the claim may run in another worker, whose shell
//! cannot take a socket over from this one. Relay ports share the range
//! with the OS's ephemeral ports and other servers, so before answering the
//! reserving Allocate the protocol layer checks that the reserved port can
//! be bound (opens and closes it) and otherwise moves the pair
//! (`AllocationTable::bind_failed` with the reserved address, which
//! quarantines it). Only a bind by another process within the round trip
//! between that answer and the claim can still fail the claim: 508, as
//! RFC 8656 §7.2 prescribes for a token that cannot be honoured.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use rand::{Rng, RngCore};

use crate::allocation::ReservationToken;

/// Parity constraint from EVEN-PORT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Parity {
    /// Any port.
    Any,
    /// An even port.
    Even,
    /// An even port whose successor is also free (EVEN-PORT with R=1); both
    /// are taken, the caller reserves the successor.
    EvenPair,
}

/// Tries of uniform random picks before falling back to a scan; with the
/// pool at most 97 % full, 32 tries miss with probability below 40 %, and
/// the scan from a random start is still unpredictable enough.
const RANDOM_TRIES: usize = 32;

/// 64-bit words covering ports 0..=65535.
const WORDS: usize = (u16::MAX as usize + 1) / 64;

/// Which ports of one relay IP are taken, by any table of the server.
struct PortBits {
    ip: IpAddr,
    used: Box<[u64]>,
    in_use: usize,
}

impl PortBits {
    fn new(ip: IpAddr) -> Self {
        Self {
            ip,
            used: vec![0; WORDS].into_boxed_slice(),
            in_use: 0,
        }
    }

    fn word(&self, port: u16) -> u64 {
        self.used
            .get(usize::from(port) / 64)
            .copied()
            .unwrap_or(u64::MAX)
    }

    fn is_used(&self, port: u16) -> bool {
        self.word(port) & (1 << (port % 64)) != 0
    }

    fn take(&mut self, port: u16) -> bool {
        match self.used.get_mut(usize::from(port) / 64) {
            Some(w) if *w & (1 << (port % 64)) == 0 => {
                *w |= 1 << (port % 64);
                self.in_use += 1;
                true
            }
            _ => false,
        }
    }

    fn release(&mut self, port: u16) {
        if let Some(w) = self.used.get_mut(usize::from(port) / 64) {
            if *w & (1 << (port % 64)) != 0 {
                *w &= !(1 << (port % 64));
                self.in_use -= 1;
            }
        }
    }

    /// `port` is in `lo..=hi`, free, and satisfies `parity` there.
    fn fits(&self, port: u16, lo: u16, hi: u16, parity: Parity) -> bool {
        if port < lo || port > hi || self.is_used(port) {
            return false;
        }
        match parity {
            Parity::Any => true,
            Parity::Even => port % 2 == 0,
            // The pair lies inside the range: the successor of `hi` belongs
            // to another table's slice.
            Parity::EvenPair => port % 2 == 0 && port < hi && !self.is_used(port + 1),
        }
    }

    fn take_fitting(&mut self, port: u16, parity: Parity) -> u16 {
        self.take(port);
        if parity == Parity::EvenPair {
            self.take(port + 1);
        }
        port
    }

    fn pick<R: RngCore>(&mut self, lo: u16, hi: u16, rng: &mut R, parity: Parity) -> Option<u16> {
        if lo > hi {
            return None;
        }
        for _ in 0..RANDOM_TRIES {
            let mut port = rng.random_range(lo..=hi);
            if parity != Parity::Any {
                port &= !1;
            }
            if self.fits(port, lo, hi, parity) {
                return Some(self.take_fitting(port, parity));
            }
        }
        // Dense range: scan it once from a random start, skipping the rest
        // of any fully used 64-port word (a full range costs ~size/64 steps).
        let size = usize::from(hi - lo) + 1;
        let start = rng.random_range(0..size);
        let mut k = 0;
        while k < size {
            let Ok(offset) = u16::try_from((start + k) % size) else {
                return None;
            };
            let port = lo + offset;
            if self.fits(port, lo, hi, parity) {
                return Some(self.take_fitting(port, parity));
            }
            k += if self.word(port) == u64::MAX {
                // Stop at `hi` so the wrap to `lo` skips nothing.
                usize::from(64 - port % 64).min(usize::from(hi - port) + 1)
            } else {
                1
            };
        }
        None
    }
}

/// A reservation in the registry.
struct Held {
    relay: SocketAddr,
    /// Only this user may claim the port.
    username: Box<str>,
    expires: Instant,
    /// The reserving table's count of its live reservations (its stats);
    /// also identifies that table.
    owner: Arc<AtomicUsize>,
}

#[derive(Default)]
struct Inner {
    spaces: Vec<PortBits>,
    reservations: HashMap<ReservationToken, Held>,
}

impl Inner {
    fn space(&self, ip: IpAddr) -> Option<&PortBits> {
        self.spaces.iter().find(|s| s.ip == ip)
    }

    fn space_mut(&mut self, ip: IpAddr) -> &mut PortBits {
        // A handful of relay IPs at most: a linear search is the fastest.
        match self.spaces.iter().position(|s| s.ip == ip) {
            Some(i) => &mut self.spaces[i],
            None => {
                self.spaces.push(PortBits::new(ip));
                let last = self.spaces.len() - 1;
                &mut self.spaces[last]
            }
        }
    }

    /// Removes the entry and releases its port (the caller decided it must
    /// go: expired or cancelled).
    fn drop_reservation(&mut self, token: &ReservationToken) {
        if let Some(h) = self.reservations.remove(token) {
            h.owner.fetch_sub(1, Ordering::AcqRel);
            self.space_mut(h.relay.ip()).release(h.relay.port());
        }
    }
}

/// Why a RESERVATION-TOKEN cannot be claimed (all answered 508).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ClaimError {
    /// No such token (never issued, already claimed, or expired and
    /// collected).
    Unknown,
    /// The token's time is up.
    Expired,
    /// Reserved by another user.
    WrongUser,
}

/// Relay port ownership and EVEN-PORT reservations of one server, shared by
/// all its tables; see the [module documentation](self).
pub struct SharedPorts {
    inner: Mutex<Inner>,
}

impl fmt::Debug for SharedPorts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = self.lock();
        f.debug_struct("SharedPorts")
            .field("relay_ips", &inner.spaces.len())
            .field("reservations", &inner.reservations.len())
            .finish()
    }
}

impl Default for SharedPorts {
    fn default() -> Self {
        Self::new()
    }
}

impl SharedPorts {
    /// No port taken, no reservation.
    pub fn new() -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every update below is complete before it can panic (it cannot),
        // so a poisoned lock still guards consistent data.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Ports of `ip` taken by any table (allocations, reservations,
    /// quarantine).
    pub fn in_use(&self, ip: IpAddr) -> usize {
        self.lock().space(ip).map_or(0, |s| s.in_use)
    }

    /// Reservations held, server-wide.
    pub fn reservations(&self) -> usize {
        self.lock().reservations.len()
    }

    pub(crate) fn is_used(&self, relay: SocketAddr) -> bool {
        self.lock()
            .space(relay.ip())
            .is_some_and(|s| s.is_used(relay.port()))
    }

    /// Marks `relay` taken; `false` if it already was.
    #[cfg(test)]
    pub(crate) fn take(&self, relay: SocketAddr) -> bool {
        self.lock().space_mut(relay.ip()).take(relay.port())
    }

    /// Returns `relay`'s port to the pool, whichever table took it.
    pub(crate) fn release(&self, relay: SocketAddr) {
        let mut inner = self.lock();
        if let Some(i) = inner.spaces.iter().position(|s| s.ip == relay.ip()) {
            inner.spaces[i].release(relay.port());
        }
    }

    /// Picks and takes a free port of `ip` in `lo..=hi` satisfying
    /// `parity` (for [`Parity::EvenPair`] the successor is taken too).
    pub(crate) fn pick<R: RngCore>(
        &self,
        ip: IpAddr,
        lo: u16,
        hi: u16,
        rng: &mut R,
        parity: Parity,
    ) -> Option<u16> {
        self.lock().space_mut(ip).pick(lo, hi, rng, parity)
    }

    /// Registers the already-taken `relay` as reserved for `username`
    /// until `expires`; `owner` is the reserving table's counter. Returns a
    /// fresh token from `rng`.
    pub(crate) fn reserve<R: RngCore>(
        &self,
        rng: &mut R,
        relay: SocketAddr,
        username: &str,
        expires: Instant,
        owner: &Arc<AtomicUsize>,
    ) -> ReservationToken {
        let mut inner = self.lock();
        loop {
            let mut t = [0u8; 8];
            rng.fill_bytes(&mut t);
            let token = ReservationToken(t);
            if let std::collections::hash_map::Entry::Vacant(e) = inner.reservations.entry(token) {
                e.insert(Held {
                    relay,
                    username: username.into(),
                    expires,
                    owner: owner.clone(),
                });
                owner.fetch_add(1, Ordering::AcqRel);
                return token;
            }
        }
    }

    /// Would [`claim`](Self::claim) succeed now? (Checked before the quota,
    /// so an invalid token costs no quota.)
    pub(crate) fn check_claim(
        &self,
        token: ReservationToken,
        username: &str,
        now: Instant,
    ) -> Result<(), ClaimError> {
        let inner = self.lock();
        let h = inner.reservations.get(&token).ok_or(ClaimError::Unknown)?;
        if h.expires <= now {
            return Err(ClaimError::Expired);
        }
        if *h.username != *username {
            return Err(ClaimError::WrongUser);
        }
        Ok(())
    }

    /// Claims the reservation: its relayed address now belongs to the
    /// caller's allocation (the port stays taken). At most once per token;
    /// a wrong user leaves it in place; an expired one is dropped (its port
    /// released) on the spot.
    pub(crate) fn claim(
        &self,
        token: ReservationToken,
        username: &str,
        now: Instant,
    ) -> Result<SocketAddr, ClaimError> {
        let mut inner = self.lock();
        let h = inner.reservations.get(&token).ok_or(ClaimError::Unknown)?;
        if h.expires <= now {
            inner.drop_reservation(&token);
            return Err(ClaimError::Expired);
        }
        if *h.username != *username {
            return Err(ClaimError::WrongUser);
        }
        let h = inner
            .reservations
            .remove(&token)
            .ok_or(ClaimError::Unknown)?;
        h.owner.fetch_sub(1, Ordering::AcqRel);
        Ok(h.relay)
    }

    /// Drops the reservation `token` of the table counting in `owner`, if
    /// still held (not claimed), releasing its port. `true` if it was.
    pub(crate) fn cancel(&self, token: ReservationToken, owner: &Arc<AtomicUsize>) -> bool {
        self.take_own(token, owner, true)
    }

    /// Takes `owner`'s reservation `token` out of the registry *without*
    /// releasing its port: the caller keeps the port taken (quarantines it
    /// because the OS would not let it be bound). `true` if it was held.
    pub(crate) fn forfeit(&self, token: ReservationToken, owner: &Arc<AtomicUsize>) -> bool {
        self.take_own(token, owner, false)
    }

    /// Removes `token` if `owner` holds it, releasing its port or not.
    fn take_own(&self, token: ReservationToken, owner: &Arc<AtomicUsize>, release: bool) -> bool {
        let mut inner = self.lock();
        let mine = inner
            .reservations
            .get(&token)
            .is_some_and(|h| Arc::ptr_eq(&h.owner, owner));
        if !mine {
            return false;
        }
        if release {
            inner.drop_reservation(&token);
        } else if let Some(h) = inner.reservations.remove(&token) {
            h.owner.fetch_sub(1, Ordering::AcqRel);
        }
        true
    }

    /// The relayed address of `owner`'s reservation `token`, if still held.
    pub(crate) fn reserved_relay(
        &self,
        token: ReservationToken,
        owner: &Arc<AtomicUsize>,
    ) -> Option<SocketAddr> {
        self.lock()
            .reservations
            .get(&token)
            .filter(|h| Arc::ptr_eq(&h.owner, owner))
            .map(|h| h.relay)
    }
}

/// One table's view of the ports of one relay IP: its slice `lo..=hi` of
/// the server's port space, and its quarantine — ports the I/O shell could
/// not bind (another process holds them), kept taken for a while instead of
/// being offered again at once.
#[derive(Debug)]
pub(crate) struct PortPool {
    ip: IpAddr,
    lo: u16,
    hi: u16,
    /// (release time in table ms, port), in release-time order because the
    /// quarantine duration is constant.
    quarantine: VecDeque<(u64, u16)>,
}

impl PortPool {
    /// A pool over `lo..=hi` (the caller validated `lo <= hi`).
    pub(crate) fn new(ip: IpAddr, lo: u16, hi: u16) -> Self {
        Self {
            ip,
            lo,
            hi,
            quarantine: VecDeque::new(),
        }
    }

    pub(crate) fn ip(&self) -> IpAddr {
        self.ip
    }

    pub(crate) fn capacity(&self) -> usize {
        usize::from(self.hi.saturating_sub(self.lo)) + 1
    }

    /// Ports in this table's quarantine.
    pub(crate) fn quarantined(&self) -> usize {
        self.quarantine.len()
    }

    /// Keeps an already-taken `port` out of circulation until `until_ms`.
    pub(crate) fn quarantine(&mut self, port: u16, until_ms: u64) {
        self.quarantine.push_back((until_ms, port));
    }

    /// Releases quarantined ports whose time has come.
    pub(crate) fn release_quarantined(&mut self, now_ms: u64, shared: &SharedPorts) {
        while let Some(&(until, port)) = self.quarantine.front() {
            if until > now_ms {
                break;
            }
            self.quarantine.pop_front();
            shared.release(SocketAddr::new(self.ip, port));
        }
    }

    /// The earliest quarantine release, for the table's wake-up time.
    pub(crate) fn next_release(&self) -> Option<u64> {
        self.quarantine.front().map(|&(until, _)| until)
    }

    /// Picks and takes a free port of this slice satisfying `parity` (for
    /// [`Parity::EvenPair`] its successor is taken too: the caller reserves
    /// it). `None` when none is left.
    pub(crate) fn pick<R: RngCore>(
        &self,
        shared: &SharedPorts,
        rng: &mut R,
        parity: Parity,
    ) -> Option<u16> {
        shared.pick(self.ip, self.lo, self.hi, rng, parity)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;
    use std::collections::HashSet;
    use std::time::Duration;

    const IP: &str = "192.0.2.1";

    fn pool(lo: u16, hi: u16) -> (PortPool, SharedPorts) {
        (
            PortPool::new(IP.parse().expect("ip"), lo, hi),
            SharedPorts::new(),
        )
    }

    fn at(port: u16) -> SocketAddr {
        SocketAddr::new(IP.parse().expect("ip"), port)
    }

    #[test]
    fn never_hands_out_a_port_twice() {
        let mut rng = StdRng::seed_from_u64(1);
        let (p, s) = pool(50000, 50099);
        let mut seen = HashSet::new();
        for _ in 0..100 {
            let port = p.pick(&s, &mut rng, Parity::Any).expect("free port");
            assert!((50000..=50099).contains(&port));
            assert!(seen.insert(port), "port {port} reused");
        }
        assert_eq!(p.pick(&s, &mut rng, Parity::Any), None);
        assert_eq!(s.in_use(p.ip()), 100);
        s.release(at(50042));
        assert_eq!(p.pick(&s, &mut rng, Parity::Any), Some(50042));
    }

    #[test]
    fn parity_rules() {
        let mut rng = StdRng::seed_from_u64(2);
        let (p, s) = pool(40001, 40010);
        for _ in 0..5 {
            let port = p.pick(&s, &mut rng, Parity::Even).expect("even");
            assert_eq!(port % 2, 0);
        }
        assert_eq!(p.pick(&s, &mut rng, Parity::Even), None);
        assert!(p
            .pick(&s, &mut rng, Parity::Any)
            .is_some_and(|p| p % 2 == 1));
        let (p, s) = pool(40000, 40003);
        assert!(s.take(at(40001)));
        // 40000 is even but 40001 is taken: only 40002 pairs, and the pair
        // takes both ports.
        assert_eq!(p.pick(&s, &mut rng, Parity::EvenPair), Some(40002));
        assert!(s.is_used(at(40003)));
        assert_eq!(p.pick(&s, &mut rng, Parity::EvenPair), None);
        // The top of the port space has no successor.
        let (p, s) = pool(65534, 65535);
        assert_eq!(p.pick(&s, &mut rng, Parity::EvenPair), Some(65534));
        let (p, s) = pool(65535, 65535);
        assert_eq!(p.pick(&s, &mut rng, Parity::Even), None);
        assert_eq!(p.pick(&s, &mut rng, Parity::Any), Some(65535));
        // A pair never spills past the slice: 40004's successor is another
        // table's.
        let (p, s) = pool(40004, 40004);
        assert_eq!(p.pick(&s, &mut rng, Parity::EvenPair), None);
        assert_eq!(p.pick(&s, &mut rng, Parity::Even), Some(40004));
    }

    #[test]
    fn quarantine_releases_in_time() {
        let mut rng = StdRng::seed_from_u64(3);
        let (mut p, s) = pool(1000, 1000);
        let port = p.pick(&s, &mut rng, Parity::Any).expect("port");
        p.quarantine(port, 500);
        assert_eq!(p.next_release(), Some(500));
        assert_eq!(p.quarantined(), 1);
        p.release_quarantined(499, &s);
        assert_eq!(p.pick(&s, &mut rng, Parity::Any), None);
        p.release_quarantined(500, &s);
        assert_eq!(p.next_release(), None);
        assert_eq!(p.pick(&s, &mut rng, Parity::Any), Some(1000));
        assert_eq!(s.in_use(p.ip()), 1);
    }

    #[test]
    fn picks_are_spread() {
        let mut rng = StdRng::seed_from_u64(4);
        let (p, s) = pool(49152, 65535);
        let ports: Vec<u16> = (0..64)
            .map(|_| p.pick(&s, &mut rng, Parity::Any).expect("port"))
            .collect();
        // Not sequential: a guessable pattern would be a finding.
        let sequential = ports.windows(2).filter(|w| w[1] == w[0] + 1).count();
        assert!(sequential < 4, "{ports:?}");
    }

    #[test]
    fn dense_scan_finds_the_last_free_port_anywhere() {
        // Every position of the single free port, including both ends and
        // word boundaries: the word-skipping scan must not jump over it.
        for free in [50000u16, 50001, 50063, 50064, 50127, 50128, 50199] {
            let (p, s) = pool(50000, 50199);
            for port in 50000..=50199 {
                if port != free {
                    assert!(s.take(at(port)));
                }
            }
            for seed in 0..8 {
                let mut rng = StdRng::seed_from_u64(seed);
                let got = p.pick(&s, &mut rng, Parity::Any);
                assert_eq!(got, Some(free), "seed {seed}");
                s.release(at(free));
            }
        }
    }

    #[test]
    fn slices_share_one_port_space() {
        let mut rng = StdRng::seed_from_u64(5);
        let s = SharedPorts::new();
        let a = PortPool::new(IP.parse().expect("ip"), 50000, 50001);
        let b = PortPool::new(IP.parse().expect("ip"), 50000, 50003);
        // Overlapping slices (a misconfiguration) still never share a port.
        let mut got = HashSet::new();
        while let Some(port) = a.pick(&s, &mut rng, Parity::Any) {
            assert!(got.insert(port));
        }
        while let Some(port) = b.pick(&s, &mut rng, Parity::Any) {
            assert!(got.insert(port));
        }
        assert_eq!(got.len(), 4);
    }

    #[test]
    fn reservation_registry() {
        let mut rng = StdRng::seed_from_u64(6);
        let s = SharedPorts::new();
        let t0 = Instant::now();
        let owner = Arc::new(AtomicUsize::new(0));
        let other = Arc::new(AtomicUsize::new(0));
        assert!(s.take(at(50001)));
        let token = s.reserve(
            &mut rng,
            at(50001),
            "alice",
            t0 + Duration::from_secs(30),
            &owner,
        );
        assert_eq!(owner.load(Ordering::Acquire), 1);
        assert_eq!(s.reserved_relay(token, &owner), Some(at(50001)));
        assert_eq!(s.reserved_relay(token, &other), None);
        assert_eq!(s.check_claim(token, "alice", t0), Ok(()));
        assert_eq!(s.claim(token, "mallory", t0), Err(ClaimError::WrongUser));
        // Another table's cancel does not touch it.
        assert!(!s.cancel(token, &other));
        assert_eq!(s.claim(token, "alice", t0), Ok(at(50001)));
        assert_eq!(owner.load(Ordering::Acquire), 0);
        assert!(s.is_used(at(50001)), "claimed port stays taken");
        assert_eq!(s.claim(token, "alice", t0), Err(ClaimError::Unknown));
        assert!(!s.cancel(token, &owner));
        // Expired: refused and released at once.
        assert!(s.take(at(50003)));
        let late = s.reserve(
            &mut rng,
            at(50003),
            "alice",
            t0 + Duration::from_secs(30),
            &owner,
        );
        assert_eq!(
            s.check_claim(late, "alice", t0 + Duration::from_secs(30)),
            Err(ClaimError::Expired)
        );
        assert_eq!(
            s.claim(late, "alice", t0 + Duration::from_secs(30)),
            Err(ClaimError::Expired)
        );
        assert!(!s.is_used(at(50003)));
        assert_eq!(owner.load(Ordering::Acquire), 0);
        assert_eq!(s.reservations(), 0);
    }
}
