//! The allocation table: the sans-IO core of the relay.
//!
//! Inputs are typed requests and datagram metadata with an injected `now`;
//! outputs are typed answers (or a [`TurnError`] carrying the RFC code) and
//! forwarding decisions. No bytes, no sockets, no clock: the I/O shell
//! parses, authenticates, calls in here and acts on the result.
//!
//! # Layout
//!
//! * allocations in a slab (`Vec` of slots with generation counters);
//! * O(1) hash indexes for the hot paths:
//!   `5-tuple → allocation` (Send, requests), `relay → allocation`,
//!   `(relay, peer IP) → permission` (every datagram from a peer),
//!   `(5-tuple, channel) → binding` (ChannelData from the client),
//!   `(relay, peer) → channel` (choosing ChannelData vs Data indication);
//! * one binary heap of timers with lazy deletion, with **one entry per
//!   allocation** (plus one per EVEN-PORT reservation), not per permission
//!   or channel: the entry fires at the earliest expiry among the
//!   allocation and its permissions and channels, and then sweeps only that
//!   allocation's few permissions and channels and re-arms at the next
//!   earliest. The time of the live entry is kept in the allocation
//!   (`scheduled`). Refreshes only move expiries later and push nothing;
//!   shortening (Refresh with a smaller lifetime) pushes an earlier entry
//!   and the old one is recognised as stale when it pops (its time differs
//!   from `scheduled`). Entries of deleted allocations are dropped when they
//!   pop (slot generations tell), and the heap is rebuilt if stale entries
//!   ever outnumber live ones, so its memory stays proportional to live
//!   allocations whatever clients do.
//!
//! # Ports
//!
//! The table picks relay ports (CSPRNG, no reuse while in use) from its
//! slice `port_min..=port_max` of each relay IP. Which ports are taken is
//! server-wide state, in the [`SharedQuotas`] every table of a server
//! shares (see [`crate::port_pool`]): tables of several workers get
//! disjoint slices ([`split_port_range`]) so their picks do not compete,
//! and a port released by any table is free for its slice's owner again.
//! The shell binds the socket after `allocate` and calls
//! [`AllocationTable::bind_failed`] if the port turns out to be taken by
//! another process; the port is quarantined and another picked.
//!
//! # EVEN-PORT reservations
//!
//! EVEN-PORT with R=1 takes an even port and its successor and registers
//! the successor under a RESERVATION-TOKEN in the shared registry, so a
//! later Allocate carrying the token is served by whichever table its
//! 5-tuple lands in (SO_REUSEPORT picks the worker by hash, and a client
//! claims from a different port than it reserved from). The claiming table
//! may thus hold a port outside its own slice; releasing it goes to the
//! shared port space like any other. The reserving table keeps a timer per
//! reservation and drops it (freeing the port) when it expires unclaimed.
//! Only Allocate, deletion and bind failures take the shared lock; the
//! relay paths below never do.
//!
//! # Quotas
//!
//! Allocations in total and per user are counted in [`SharedQuotas`],
//! shared by all workers' tables; permissions and channels per allocation
//! and bandwidth per allocation are local.

use std::cmp::Reverse;
use std::collections::hash_map::Entry;
use std::collections::{BinaryHeap, HashMap};

/// The hot-path index type. foldhash with a per-process random seed: several
/// times cheaper than SipHash on these small keys, and keys an attacker can
/// choose (peer addresses) are only ever looked up, never inserted, without
/// authentication and quotas.
type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::SeedableRng;

use crate::address_policy::{AddressPolicy, DenyReason, PolicyDecision};
use crate::allocation::{
    granted_lifetime, AddressFamily, AllocId, AllocateRequest, Allocated, Allocation, RelayAddrs,
    ReservationToken, TRANSPORT_UDP,
};
use crate::bandwidth::{BandwidthLimit, ByteBucket};
use crate::channel::{
    is_valid_channel_number, Channel, PeerChannel, CHANNEL_LIFETIME, DEFAULT_MAX_CHANNELS,
};
use crate::five_tuple::{canonical, FiveTuple};
use crate::permission::{Permission, DEFAULT_MAX_PERMISSIONS, PERMISSION_LIFETIME};
use crate::port_pool::{ClaimError, Parity, PortPool};
use crate::quota::{QuotaExceeded, SharedQuotas};
use crate::turn_error::TurnError;

/// Settings of one table.
#[derive(Clone, Debug, PartialEq)]
pub struct TableConfig {
    /// Addresses relay sockets are bound to and announced as
    /// XOR-RELAYED-ADDRESS (at least one; IPv4 and/or IPv6). Several of one
    /// family multiply the port space (16 K ports each by default).
    pub relay_ips: Vec<IpAddr>,
    /// Lowest relay port (RFC 8656 recommends 49152).
    pub port_min: u16,
    /// Highest relay port.
    pub port_max: u16,
    /// Lifetime granted when none (or less) is requested.
    pub default_lifetime: Duration,
    /// Cap on requested lifetimes (RFC 8656 recommends ≤ 3600 s).
    pub max_lifetime: Duration,
    /// Permission lifetime (RFC 8656: 300 s).
    pub permission_lifetime: Duration,
    /// Channel binding lifetime (RFC 8656: 600 s).
    pub channel_lifetime: Duration,
    /// Cap on permissions per allocation (508 beyond).
    pub max_permissions_per_allocation: usize,
    /// Cap on channels per allocation (508 beyond).
    pub max_channels_per_allocation: usize,
    /// Bandwidth quota per allocation, both directions together; `None`
    /// for unlimited.
    pub bandwidth: Option<BandwidthLimit>,
    /// How long an EVEN-PORT R=1 reservation of port + 1 is held.
    pub reservation_lifetime: Duration,
    /// How long a port the shell failed to bind is kept out of use.
    pub bind_failure_quarantine: Duration,
}

impl Default for TableConfig {
    /// RFC defaults, no relay address (which [`AllocationTable::new`]
    /// refuses: set `relay_ips`).
    fn default() -> Self {
        Self {
            relay_ips: Vec::new(),
            port_min: 49152,
            port_max: 65535,
            default_lifetime: Duration::from_secs(600),
            max_lifetime: Duration::from_secs(3600),
            permission_lifetime: PERMISSION_LIFETIME,
            channel_lifetime: CHANNEL_LIFETIME,
            max_permissions_per_allocation: DEFAULT_MAX_PERMISSIONS,
            max_channels_per_allocation: DEFAULT_MAX_CHANNELS,
            bandwidth: Some(BandwidthLimit::default()),
            reservation_lifetime: Duration::from_secs(30),
            bind_failure_quarantine: Duration::from_secs(60),
        }
    }
}

/// A [`TableConfig`] that cannot work.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TableConfigError {
    /// `relay_ips` is empty.
    #[error("no relay address configured")]
    NoRelayAddress,
    /// A relay IP that cannot be bound and announced.
    #[error("relay address {0} is not a unicast address (unspecified, multicast or broadcast)")]
    BadRelayAddress(IpAddr),
    /// The same relay IP twice.
    #[error("relay address {0} is listed twice")]
    DuplicateRelayAddress(IpAddr),
    /// An empty or zero-based port range.
    #[error("bad relay port range {min}-{max}: need 1 <= min <= max <= 65535")]
    BadPortRange {
        /// `port_min`.
        min: u16,
        /// `port_max`.
        max: u16,
    },
    /// A lifetime shorter than a second, or max below default.
    #[error("bad lifetime setting: {0}")]
    BadLifetime(&'static str),
    /// A bandwidth limit of zero.
    #[error("bandwidth limit must be positive (bytes per second and burst)")]
    BadBandwidth,
}

impl TableConfig {
    /// Checks the settings; [`AllocationTable::new`] calls it.
    pub fn validate(&self) -> Result<(), TableConfigError> {
        if self.relay_ips.is_empty() {
            return Err(TableConfigError::NoRelayAddress);
        }
        for (i, ip) in self.relay_ips.iter().enumerate() {
            let bad = ip.is_unspecified()
                || ip.is_multicast()
                || matches!(ip, IpAddr::V4(v4) if v4.is_broadcast());
            if bad {
                return Err(TableConfigError::BadRelayAddress(*ip));
            }
            if self.relay_ips[..i].contains(ip) {
                return Err(TableConfigError::DuplicateRelayAddress(*ip));
            }
        }
        if self.port_min == 0 || self.port_min > self.port_max {
            return Err(TableConfigError::BadPortRange {
                min: self.port_min,
                max: self.port_max,
            });
        }
        let second = Duration::from_secs(1);
        if self.default_lifetime < second {
            return Err(TableConfigError::BadLifetime(
                "default lifetime is under one second",
            ));
        }
        if self.max_lifetime < self.default_lifetime {
            return Err(TableConfigError::BadLifetime(
                "max lifetime is shorter than the default lifetime",
            ));
        }
        if self.permission_lifetime < second || self.channel_lifetime < second {
            return Err(TableConfigError::BadLifetime(
                "permission and channel lifetimes must be at least one second",
            ));
        }
        if let Some(b) = self.bandwidth {
            if b.bytes_per_second == 0 || b.burst_bytes == 0 {
                return Err(TableConfigError::BadBandwidth);
            }
        }
        Ok(())
    }
}

/// The `index`-th of `parts` disjoint slices of `min..=max` (for worker
/// tables sharing relay IPs); `None` if there are fewer ports than parts or
/// `index` is out of range.
pub fn split_port_range(min: u16, max: u16, parts: usize, index: usize) -> Option<(u16, u16)> {
    if min > max || parts == 0 || index >= parts {
        return None;
    }
    let size = usize::from(max - min) + 1;
    if size < parts {
        return None;
    }
    let start = usize::from(min) + size * index / parts;
    let end = usize::from(min) + size * (index + 1) / parts - 1;
    Some((u16::try_from(start).ok()?, u16::try_from(end).ok()?))
}

/// Why a datagram was not relayed. [`DropReason::as_str`] is a metric
/// label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// No allocation on that 5-tuple / relayed address.
    NoAllocation,
    /// No (live) permission for the peer's IP.
    NoPermission,
    /// ChannelData on a channel that is not bound.
    UnboundChannel,
    /// The peer's family has no relayed address in this allocation.
    PeerFamilyMismatch,
    /// The peer is denied by the address policy.
    Denied(DenyReason),
    /// The allocation's bandwidth quota is exhausted.
    Bandwidth,
}

impl DropReason {
    /// A short label for metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NoAllocation => "no_allocation",
            Self::NoPermission => "no_permission",
            Self::UnboundChannel => "unbound_channel",
            Self::PeerFamilyMismatch => "peer_family_mismatch",
            Self::Denied(_) => "denied_peer",
            Self::Bandwidth => "bandwidth",
        }
    }
}

/// Client → peer: send the payload from `relay` to `peer`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Forward {
    /// The relayed address (socket) to send from.
    pub relay: SocketAddr,
    /// The peer to send to.
    pub peer: SocketAddr,
}

/// Peer → client: deliver to the client of `tuple`, as ChannelData on
/// `channel` if bound, else as a Data indication.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Deliver {
    /// The allocation's 5-tuple (client address, server address, transport).
    pub tuple: FiveTuple,
    /// The bound channel, if any.
    pub channel: Option<u16>,
}

/// The result of a successful Refresh.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefreshOutcome {
    /// The allocation lives on for `lifetime`.
    Refreshed {
        /// Granted lifetime (answer with LIFETIME).
        lifetime: Duration,
    },
    /// Lifetime 0: the allocation is gone; close these relay sockets.
    Deleted {
        /// The relayed addresses released.
        relays: RelayAddrs,
    },
    /// Lifetime 0 with REQUESTED-ADDRESS-FAMILY on a dual allocation: only
    /// that family's relayed address (and its permissions and channels) is
    /// gone; the other lives on.
    FamilyReleased {
        /// The relayed address released.
        relay: SocketAddr,
    },
}

/// Counts for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TableStats {
    /// Live allocations in this table.
    pub allocations: usize,
    /// Live permissions.
    pub permissions: usize,
    /// Live channel bindings.
    pub channels: usize,
    /// EVEN-PORT reservations this table made that are still held (not
    /// yet claimed, here or in another table, nor expired).
    pub reservations: usize,
    /// Relay ports this table holds: its allocations' relayed addresses
    /// (including ports claimed from another table's reservation), its
    /// held reservations and its quarantine.
    pub ports_in_use: usize,
    /// Relay ports configured.
    pub ports_total: usize,
    /// Datagrams dropped for bandwidth since creation.
    pub bandwidth_drops: u64,
    /// Allocations created since creation.
    pub allocations_created: u64,
    /// Timer heap entries (live + stale), for memory monitoring.
    pub timer_entries: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum TimerKey {
    /// The allocation's own expiry and those of its permissions and
    /// channels: one entry at the earliest of them.
    Allocation(AllocId),
    Reservation(ReservationToken),
}

#[derive(Debug)]
struct Slot {
    generation: u32,
    alloc: Option<Allocation>,
}

/// The allocation table of one worker.
#[derive(Debug)]
pub struct AllocationTable {
    config: TableConfig,
    policy: Arc<AddressPolicy>,
    quotas: Arc<SharedQuotas>,
    epoch: Instant,
    rng: StdRng,
    pools: Vec<PortPool>,
    /// Round-robin start per family over `pools`.
    next_pool: [usize; 2],
    slots: Vec<Slot>,
    free_slots: Vec<u32>,
    live: usize,
    by_tuple: Map<FiveTuple, AllocId>,
    by_relay: Map<SocketAddr, AllocId>,
    permissions: Map<(SocketAddr, IpAddr), Permission>,
    channels: Map<(FiveTuple, u16), Channel>,
    /// Keyed by allocation rather than relay address: the peer-to-client
    /// path knows the allocation from the permission lookup already, and
    /// the key is 24 bytes smaller.
    channels_by_peer: Map<(AllocId, SocketAddr), PeerChannel>,
    /// Reservations this table made, with their expiry (table ms), for
    /// their timers. The reservations themselves (relay, owner, claim)
    /// are in the shared registry; an entry here whose reservation was
    /// claimed, possibly by another table, is dropped when its timer fires.
    reservations: Map<ReservationToken, u64>,
    /// How many of this table's reservations the registry still holds
    /// (decremented by whoever claims, cancels or expires one).
    reserved: Arc<AtomicUsize>,
    timers: BinaryHeap<Reverse<(u64, TimerKey)>>,
    bandwidth_drops: u64,
    allocations_created: u64,
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl AllocationTable {
    /// A table whose clock starts at `now`, with a CSPRNG seeded from the
    /// OS for ports and tokens.
    pub fn new(
        config: TableConfig,
        policy: Arc<AddressPolicy>,
        quotas: Arc<SharedQuotas>,
        now: Instant,
    ) -> Result<Self, TableConfigError> {
        Self::with_rng(config, policy, quotas, now, StdRng::from_os_rng())
    }

    fn with_rng(
        config: TableConfig,
        policy: Arc<AddressPolicy>,
        quotas: Arc<SharedQuotas>,
        now: Instant,
        rng: StdRng,
    ) -> Result<Self, TableConfigError> {
        config.validate()?;
        let pools = config
            .relay_ips
            .iter()
            .map(|ip| PortPool::new(*ip, config.port_min, config.port_max))
            .collect();
        Ok(Self {
            config,
            policy,
            quotas,
            epoch: now,
            rng,
            pools,
            next_pool: [0; 2],
            slots: Vec::new(),
            free_slots: Vec::new(),
            live: 0,
            by_tuple: Map::default(),
            by_relay: Map::default(),
            permissions: Map::default(),
            channels: Map::default(),
            channels_by_peer: Map::default(),
            reservations: Map::default(),
            reserved: Arc::new(AtomicUsize::new(0)),
            timers: BinaryHeap::new(),
            bandwidth_drops: 0,
            allocations_created: 0,
        })
    }

    /// The configuration in force.
    pub fn config(&self) -> &TableConfig {
        &self.config
    }

    fn now_ms(&self, now: Instant) -> u64 {
        ms(now.saturating_duration_since(self.epoch))
    }

    fn instant(&self, at_ms: u64) -> Instant {
        self.epoch + Duration::from_millis(at_ms)
    }

    // ----- slab ---------------------------------------------------------

    fn alloc(&self, id: AllocId) -> Option<&Allocation> {
        let slot = self.slots.get(usize::try_from(id.index).ok()?)?;
        if slot.generation != id.generation {
            return None;
        }
        slot.alloc.as_ref()
    }

    fn alloc_mut(&mut self, id: AllocId) -> Option<&mut Allocation> {
        slot_mut(&mut self.slots, id)
    }

    fn insert_slot(&mut self, alloc: Allocation) -> Option<AllocId> {
        if let Some(index) = self.free_slots.pop() {
            let slot = self.slots.get_mut(usize::try_from(index).ok()?)?;
            slot.alloc = Some(alloc);
            return Some(AllocId {
                index,
                generation: slot.generation,
            });
        }
        let index = u32::try_from(self.slots.len()).ok()?;
        self.slots.push(Slot {
            generation: 0,
            alloc: Some(alloc),
        });
        Some(AllocId {
            index,
            generation: 0,
        })
    }

    /// Looks up the allocation on `tuple`.
    pub fn get(&self, tuple: &FiveTuple) -> Option<&Allocation> {
        let t = canon_tuple(tuple);
        self.by_tuple.get(&t).and_then(|id| self.alloc(*id))
    }

    /// Looks up the allocation owning the relayed address `relay`.
    pub fn get_by_relay(&self, relay: SocketAddr) -> Option<&Allocation> {
        self.by_relay
            .get(&canonical(relay))
            .and_then(|id| self.alloc(*id))
    }

    // ----- timers -------------------------------------------------------

    /// Makes sure the allocation's single timer fires no later than `at`
    /// (pushing a new, earlier entry if needed; the later one goes stale).
    fn arm(&mut self, id: AllocId, at: u64) {
        if let Some(a) = slot_mut(&mut self.slots, id) {
            if at < a.scheduled {
                a.scheduled = at;
                self.timers.push(Reverse((at, TimerKey::Allocation(id))));
            }
        }
    }

    fn live_entities(&self) -> usize {
        self.live + self.reservations.len()
    }

    /// Removes the allocation's permissions and channels that are due at
    /// `now_ms`; returns its next due time (the earliest remaining expiry,
    /// its own included). O(permissions + channels) of this allocation
    /// only, and only when its timer fires.
    fn sweep(&mut self, id: AllocId, now_ms: u64) -> u64 {
        let Some(a) = slot_mut(&mut self.slots, id) else {
            return u64::MAX;
        };
        let (relays, tuple) = (a.relays, a.tuple);
        let mut next = a.expires;
        let mut perms = std::mem::take(&mut a.permissions);
        let mut chans = std::mem::take(&mut a.channels);
        let permissions = &mut self.permissions;
        perms.retain(|ip| {
            let Some(relay) = relays.for_peer(*ip) else {
                return false;
            };
            match permissions.get(&(relay, *ip)) {
                Some(p) if p.expires > now_ms => {
                    next = next.min(p.expires);
                    true
                }
                _ => {
                    permissions.remove(&(relay, *ip));
                    false
                }
            }
        });
        let (channels, by_peer) = (&mut self.channels, &mut self.channels_by_peer);
        chans.retain(|number| match channels.get(&(tuple, *number)) {
            Some(c) if c.expires > now_ms => {
                next = next.min(c.expires);
                true
            }
            Some(c) => {
                by_peer.remove(&(id, c.peer));
                channels.remove(&(tuple, *number));
                false
            }
            None => false,
        });
        if let Some(a) = slot_mut(&mut self.slots, id) {
            a.permissions = perms;
            a.channels = chans;
        }
        next
    }

    /// Rebuilds the heap from live entities if stale entries dominate.
    fn maybe_compact_timers(&mut self) {
        if self.timers.len() <= 2 * self.live_entities() + 1024 {
            return;
        }
        let mut heap = Vec::with_capacity(self.live_entities());
        for (index, slot) in self.slots.iter().enumerate() {
            let Some(a) = &slot.alloc else { continue };
            let Ok(index) = u32::try_from(index) else {
                continue;
            };
            let id = AllocId {
                index,
                generation: slot.generation,
            };
            heap.push(Reverse((a.scheduled, TimerKey::Allocation(id))));
        }
        for (token, expires) in &self.reservations {
            heap.push(Reverse((*expires, TimerKey::Reservation(*token))));
        }
        self.timers = BinaryHeap::from(heap);
    }

    /// When [`expire`](Self::expire) next has work (possibly a little
    /// early: a refreshed entity re-arms itself then). `None` when the
    /// table holds nothing that expires.
    pub fn next_expiry(&self) -> Option<Instant> {
        let timer = self.timers.peek().map(|Reverse((t, _))| *t);
        let quarantine = self.pools.iter().filter_map(PortPool::next_release).min();
        let at = match (timer, quarantine) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => a.or(b)?,
        };
        Some(self.instant(at))
    }

    /// Processes every expiry due at `now`; returns the relayed addresses of
    /// deleted allocations (close their sockets).
    pub fn expire(&mut self, now: Instant) -> Vec<SocketAddr> {
        let mut closed = Vec::new();
        self.expire_into(now, &mut closed);
        closed
    }

    /// [`expire`](Self::expire) into a caller-owned buffer.
    pub fn expire_into(&mut self, now: Instant, closed: &mut Vec<SocketAddr>) {
        let now_ms = self.now_ms(now);
        for pool in &mut self.pools {
            pool.release_quarantined(now_ms, self.quotas.ports());
        }
        while let Some(&Reverse((t, key))) = self.timers.peek() {
            if t > now_ms {
                break;
            }
            self.timers.pop();
            match key {
                TimerKey::Allocation(id) => {
                    let Some(a) = self.alloc(id) else {
                        continue;
                    };
                    if a.scheduled != t {
                        // Stale: superseded by an earlier entry.
                        continue;
                    }
                    if a.expires <= now_ms {
                        if let Some(relays) = self.delete(id) {
                            closed.extend(relays.iter());
                        }
                        continue;
                    }
                    let next = self.sweep(id, now_ms);
                    if let Some(a) = slot_mut(&mut self.slots, id) {
                        a.scheduled = next;
                        self.timers.push(Reverse((next, key)));
                    }
                }
                TimerKey::Reservation(token) => {
                    // Our entry is due: drop it, and the reservation too
                    // unless it has been claimed meanwhile.
                    let due = self.reservations.get(&token) == Some(&t);
                    if due {
                        self.cancel_reservation(token);
                    }
                }
            }
        }
        self.maybe_compact_timers();
    }

    // ----- ports --------------------------------------------------------

    fn has_family(&self, family: AddressFamily) -> bool {
        self.pools
            .iter()
            .any(|p| AddressFamily::of(p.ip()) == family)
    }

    /// Picks a port of `family`, rotating over the relay IPs of the family.
    fn pick_port(&mut self, family: AddressFamily, parity: Parity) -> Option<SocketAddr> {
        let n = self.pools.len();
        let start = self.next_pool[family.index()];
        for k in 0..n {
            let i = (start + k) % n;
            if AddressFamily::of(self.pools[i].ip()) != family {
                continue;
            }
            if let Some(port) = self.pools[i].pick(self.quotas.ports(), &mut self.rng, parity) {
                self.next_pool[family.index()] = (i + 1) % n;
                return Some(SocketAddr::new(self.pools[i].ip(), port));
            }
        }
        None
    }

    fn pool_of(&self, relay: SocketAddr) -> Option<usize> {
        self.pools.iter().position(|p| p.ip() == relay.ip())
    }

    /// Returns a relay port to the server's port space, wherever it came
    /// from (this table's slice, or another's through a reservation).
    fn release_port(&self, relay: SocketAddr) {
        self.quotas.ports().release(relay);
    }

    /// Registers `relay.port() + 1` (taken with `relay` by the
    /// [`Parity::EvenPair`] pick) as reserved for `username`; returns the
    /// token.
    fn reserve_next(
        &mut self,
        relay: SocketAddr,
        username: &str,
        now_ms: u64,
    ) -> Option<ReservationToken> {
        let port = relay.port().checked_add(1)?;
        let expires = now_ms.saturating_add(ms(self.config.reservation_lifetime));
        let expires_at = self.instant(expires);
        let token = self.quotas.ports().reserve(
            &mut self.rng,
            SocketAddr::new(relay.ip(), port),
            username,
            expires_at,
            &self.reserved,
        );
        self.reservations.insert(token, expires);
        self.timers
            .push(Reverse((expires, TimerKey::Reservation(token))));
        Some(token)
    }

    /// Forgets this table's reservation `token`, releasing its port unless
    /// it was claimed.
    fn cancel_reservation(&mut self, token: ReservationToken) {
        if self.reservations.remove(&token).is_some() {
            self.quotas.ports().cancel(token, &self.reserved);
        }
    }

    // ----- Allocate -----------------------------------------------------

    fn answer(&self, a: &Allocation, now_ms: u64, retransmission: bool) -> Allocated {
        let remaining_ms = a.expires.saturating_sub(now_ms);
        let reserved = a.reservation.and_then(|t| {
            self.quotas
                .ports()
                .reserved_relay(t, &self.reserved)
                .map(|r| (t, r))
        });
        Allocated {
            relays: a.relays,
            lifetime: Duration::from_secs(remaining_ms.div_ceil(1000)),
            reservation_token: reserved.map(|(t, _)| t),
            reserved: reserved.map(|(_, r)| r),
            address_error: None,
            dont_fragment: a.dont_fragment,
            retransmission,
        }
    }

    /// Allocate (RFC 8656 §7.2, RFC 6156 dual allocation) for an
    /// authenticated request on `tuple`.
    ///
    /// A retransmission (same transaction ID and username on the same
    /// 5-tuple) gets the same answer again; any other Allocate on a busy
    /// 5-tuple is 437.
    pub fn allocate(
        &mut self,
        tuple: FiveTuple,
        req: &AllocateRequest<'_>,
        now: Instant,
    ) -> Result<Allocated, TurnError> {
        let tuple = canon_tuple(&tuple);
        let now_ms = self.now_ms(now);
        if let Some(&id) = self.by_tuple.get(&tuple) {
            if self.alloc(id).is_some_and(|a| a.expires <= now_ms) {
                // Expired but not yet collected: collect it now, so the
                // 5-tuple is free for this new allocation.
                self.delete(id);
            }
        }
        if let Some(&id) = self.by_tuple.get(&tuple) {
            return match self.alloc(id) {
                Some(a)
                    if a.transaction_id == req.transaction_id && *a.username == *req.username =>
                {
                    Ok(self.answer(a, now_ms, true))
                }
                _ => Err(TurnError::AllocationMismatch),
            };
        }
        if req.requested_transport != TRANSPORT_UDP {
            return Err(TurnError::UnsupportedTransportProtocol);
        }
        if req.reservation_token.is_some()
            && (req.even_port.is_some()
                || req.requested_family.is_some()
                || req.additional_family.is_some())
        {
            return Err(TurnError::BadRequest(
                "RESERVATION-TOKEN with EVEN-PORT or an address family",
            ));
        }
        if req.requested_family.is_some() && req.additional_family.is_some() {
            return Err(TurnError::BadRequest(
                "both REQUESTED-ADDRESS-FAMILY and ADDITIONAL-ADDRESS-FAMILY",
            ));
        }
        if req.additional_family == Some(AddressFamily::V4) {
            return Err(TurnError::BadRequest(
                "ADDITIONAL-ADDRESS-FAMILY must be IPv6",
            ));
        }
        if req.even_port == Some(true) && req.additional_family.is_some() {
            return Err(TurnError::BadRequest(
                "EVEN-PORT with R bit and ADDITIONAL-ADDRESS-FAMILY",
            ));
        }
        let dual = req.additional_family.is_some();
        let primary = req.requested_family.unwrap_or(AddressFamily::V4);
        if req.reservation_token.is_none() {
            let available =
                self.has_family(primary) || (dual && self.has_family(AddressFamily::V6));
            if !available {
                return Err(TurnError::AddressFamilyNotSupported);
            }
        }
        // A reservation is checked before the quota so an invalid token
        // costs nothing. The token may come from any table of this server
        // (the shared registry).
        if let Some(token) = req.reservation_token {
            self.quotas
                .ports()
                .check_claim(token, req.username, now)
                .map_err(claim_error)?;
        }
        self.quotas
            .acquire(req.quota_user)
            .map_err(|_: QuotaExceeded| TurnError::AllocationQuotaReached)?;

        let mut relays = RelayAddrs::default();
        let mut reservation = None;
        let mut address_error = None;
        if let Some(token) = req.reservation_token {
            // The port moves from the reservation to this allocation without
            // ever being free. Another worker may have claimed the token
            // since the check above (the same client retrying through
            // another 5-tuple): then this one loses.
            match self.quotas.ports().claim(token, req.username, now) {
                Ok(relay) => relays.set(AddressFamily::of(relay.ip()), Some(relay)),
                Err(e) => {
                    self.quotas.release(req.quota_user);
                    return Err(claim_error(e));
                }
            }
        } else {
            let parity = match req.even_port {
                None => Parity::Any,
                Some(false) => Parity::Even,
                Some(true) => Parity::EvenPair,
            };
            let mut families = vec![primary];
            if dual {
                families.push(AddressFamily::V6);
            }
            for family in families {
                if !self.has_family(family) {
                    address_error = Some((family, TurnError::AddressFamilyNotSupported));
                    continue;
                }
                match self.pick_port(family, parity) {
                    Some(relay) => {
                        relays.set(family, Some(relay));
                        if parity == Parity::EvenPair {
                            reservation = self.reserve_next(relay, req.username, now_ms);
                        }
                    }
                    None => {
                        address_error = Some((
                            family,
                            TurnError::InsufficientCapacity("no relay port left"),
                        ));
                    }
                }
            }
        }
        if relays.is_empty() {
            self.quotas.release(req.quota_user);
            return Err(match address_error {
                Some((_, e)) if !dual => e,
                _ => TurnError::InsufficientCapacity("no relay port left"),
            });
        }

        let lifetime = granted_lifetime(
            req.lifetime,
            self.config.default_lifetime,
            self.config.max_lifetime,
        );
        let expires = now_ms.saturating_add(ms(lifetime));
        let bucket = self
            .config
            .bandwidth
            .map(|b| ByteBucket::full(&b, now_ms))
            .unwrap_or_else(|| ByteBucket::full(&BandwidthLimit::default(), now_ms));
        let alloc = Allocation {
            tuple,
            username: req.username.into(),
            quota_user: (req.quota_user != req.username).then(|| req.quota_user.into()),
            key: req.key,
            key_generation: req.key_generation,
            relays,
            expires,
            scheduled: u64::MAX,
            permissions: Vec::new(),
            channels: Vec::new(),
            bucket,
            transaction_id: req.transaction_id,
            reservation,
            even_port: req.even_port.is_some(),
            from_reservation: req.reservation_token.is_some(),
            dont_fragment: req.dont_fragment,
        };
        let Some(id) = self.insert_slot(alloc) else {
            for relay in relays.iter() {
                self.release_port(relay);
            }
            if let Some(t) = reservation {
                self.cancel_reservation(t);
            }
            self.quotas.release(req.quota_user);
            return Err(TurnError::InsufficientCapacity("allocation table full"));
        };
        self.live += 1;
        self.allocations_created += 1;
        self.by_tuple.insert(tuple, id);
        for relay in relays.iter() {
            self.by_relay.insert(relay, id);
        }
        if let Some(a) = self.alloc_mut(id) {
            a.scheduled = expires;
        }
        self.timers
            .push(Reverse((expires, TimerKey::Allocation(id))));
        self.maybe_compact_timers();
        Ok(Allocated {
            relays,
            lifetime,
            reservation_token: reservation,
            reserved: reservation
                .and_then(|t| self.quotas.ports().reserved_relay(t, &self.reserved)),
            address_error,
            dont_fragment: req.dont_fragment,
            retransmission: false,
        })
    }

    /// The shell could not bind `failed` (another process holds the port):
    /// either one of the allocation's relayed addresses, or the port
    /// reserved for its RESERVATION-TOKEN ([`Allocated::reserved`], which
    /// the shell probes so the token names a port that can be bound when
    /// it is claimed). The port is quarantined and another one of the same
    /// family (and parity: a new pair if a reservation was involved) is
    /// picked; the updated answer is returned. Call it before answering
    /// the Allocate. If no port is left — or the port came from a
    /// reservation token, which names one exact port — the allocation is
    /// deleted and 508 returned.
    pub fn bind_failed(
        &mut self,
        tuple: &FiveTuple,
        failed: SocketAddr,
        now: Instant,
    ) -> Result<Allocated, TurnError> {
        let tuple = canon_tuple(tuple);
        let failed = canonical(failed);
        let now_ms = self.now_ms(now);
        let id = *self
            .by_tuple
            .get(&tuple)
            .ok_or(TurnError::AllocationMismatch)?;
        let family = AddressFamily::of(failed.ip());
        let (relay, even, from_reservation, old_reservation, username) = {
            let a = self.alloc(id).ok_or(TurnError::AllocationMismatch)?;
            (
                a.relays.get(family),
                a.even_port,
                a.from_reservation,
                a.reservation,
                a.username.clone(),
            )
        };
        let Some(relay) = relay else {
            return Err(TurnError::BadRequest(
                "not a relayed address of this allocation",
            ));
        };
        // This family's reservation of relay + 1, if still held.
        let reserved_here = old_reservation.and_then(|t| {
            self.quotas
                .ports()
                .reserved_relay(t, &self.reserved)
                .filter(|r| r.ip() == relay.ip() && r.port() == relay.port().wrapping_add(1))
                .map(|r| (t, r))
        });
        let reserved_failed = reserved_here.is_some_and(|(_, r)| r == failed);
        if relay != failed && !reserved_failed {
            return Err(TurnError::BadRequest(
                "not a relayed address of this allocation",
            ));
        }
        // Forget the relayed address: indexes keyed by it go with it.
        self.detach_family(id, family);
        let until = now_ms.saturating_add(ms(self.config.bind_failure_quarantine));
        if reserved_failed {
            // The relayed port is fine but its pair is broken: the relayed
            // port goes back to the pool, the reserved one leaves the
            // registry still taken and waits out the quarantine.
            self.release_port(relay);
            if let Some((t, r)) = reserved_here {
                self.reservations.remove(&t);
                self.quotas.ports().forfeit(t, &self.reserved);
                self.quarantine(r, until);
            }
        } else {
            self.quarantine(relay, until);
        }
        let parity = match (even, reserved_here.is_some()) {
            (false, _) => Parity::Any,
            (true, false) => Parity::Even,
            (true, true) => Parity::EvenPair,
        };
        let picked = if from_reservation {
            None
        } else {
            self.pick_port(family, parity)
        };
        let Some(new_relay) = picked else {
            if reserved_failed {
                // Nothing to move the pair to: no reservation any more.
                if let Some(a) = self.alloc_mut(id) {
                    a.reservation = None;
                }
            }
            if let Some(a) = self.alloc(id) {
                if a.relays.is_empty() {
                    self.delete(id);
                    return Err(TurnError::InsufficientCapacity("no relay port left"));
                }
            }
            // A dual allocation keeps its other family.
            let answer = self.alloc(id).map(|a| self.answer(a, now_ms, false));
            return match answer {
                Some(mut answer) => {
                    answer.address_error = Some((
                        family,
                        TurnError::InsufficientCapacity("no relay port left"),
                    ));
                    Ok(answer)
                }
                None => Err(TurnError::AllocationMismatch),
            };
        };
        let mut new_reservation = old_reservation;
        if let Some((t, _)) = reserved_here {
            // Picked before the old reservation goes, so the new pair
            // cannot reuse its port.
            if !reserved_failed {
                self.cancel_reservation(t);
            }
            new_reservation = self.reserve_next(new_relay, &username, now_ms);
        }
        self.by_relay.insert(new_relay, id);
        if let Some(a) = self.alloc_mut(id) {
            a.relays.set(family, Some(new_relay));
            a.reservation = new_reservation;
        }
        let answer = self.alloc(id).map(|a| self.answer(a, now_ms, false));
        answer.ok_or(TurnError::AllocationMismatch)
    }

    /// Keeps the already-taken `relay` out of use until `until_ms`.
    fn quarantine(&mut self, relay: SocketAddr, until_ms: u64) {
        match self.pool_of(relay) {
            // Still marked taken: it stays out of use until released.
            Some(pool) => self.pools[pool].quarantine(relay.port(), until_ms),
            // A claimed port on a relay IP this table does not serve
            // (tables of one server normally share their relay IPs).
            None => self.release_port(relay),
        }
    }

    // ----- Refresh / delete ---------------------------------------------

    /// The allocation on `tuple` if it is alive at `now_ms` and belongs to
    /// `username`. One whose expiry passed but that `expire` has not
    /// collected yet counts as gone: it must not be revived.
    fn owned(&self, tuple: &FiveTuple, username: &str, now_ms: u64) -> Result<AllocId, TurnError> {
        let id = *self
            .by_tuple
            .get(tuple)
            .ok_or(TurnError::AllocationMismatch)?;
        let a = self.alloc(id).ok_or(TurnError::AllocationMismatch)?;
        if a.expires <= now_ms {
            return Err(TurnError::AllocationMismatch);
        }
        if *a.username != *username {
            return Err(TurnError::WrongCredentials);
        }
        Ok(id)
    }

    /// Refresh (RFC 8656 §7.3): `lifetime` 0 deletes, otherwise the
    /// lifetime rule of Allocate applies. `family` is
    /// REQUESTED-ADDRESS-FAMILY (443 if the allocation has none of it).
    pub fn refresh(
        &mut self,
        tuple: &FiveTuple,
        username: &str,
        lifetime: Option<u32>,
        family: Option<AddressFamily>,
        now: Instant,
    ) -> Result<RefreshOutcome, TurnError> {
        let tuple = canon_tuple(tuple);
        let now_ms = self.now_ms(now);
        let id = self.owned(&tuple, username, now_ms)?;
        let relays = self.alloc(id).map(|a| a.relays).unwrap_or_default();
        if let Some(f) = family {
            if relays.get(f).is_none() {
                return Err(TurnError::PeerAddressFamilyMismatch);
            }
        }
        if lifetime == Some(0) {
            if let Some(f) = family.filter(|_| relays.len() == 2) {
                let relay = relays.get(f).ok_or(TurnError::PeerAddressFamilyMismatch)?;
                self.detach_family(id, f);
                self.release_port(relay);
                return Ok(RefreshOutcome::FamilyReleased { relay });
            }
            let relays = self.delete(id).unwrap_or_default();
            return Ok(RefreshOutcome::Deleted { relays });
        }
        let granted = granted_lifetime(
            lifetime,
            self.config.default_lifetime,
            self.config.max_lifetime,
        );
        let expires = now_ms.saturating_add(ms(granted));
        if let Some(a) = slot_mut(&mut self.slots, id) {
            a.expires = expires;
        }
        self.arm(id, expires);
        self.maybe_compact_timers();
        Ok(RefreshOutcome::Refreshed { lifetime: granted })
    }

    /// Deletes the allocation on `tuple` at once (the client's TCP/TLS
    /// connection closed, or shutdown). Returns its relayed addresses.
    pub fn remove(&mut self, tuple: &FiveTuple) -> Option<RelayAddrs> {
        let id = *self.by_tuple.get(&canon_tuple(tuple))?;
        self.delete(id)
    }

    /// Removes one family's relayed address from an allocation with the
    /// permissions and channels that used it. The port is not released
    /// (callers release or quarantine it).
    fn detach_family(&mut self, id: AllocId, family: AddressFamily) {
        let Some(a) = self.alloc_mut(id) else { return };
        let Some(relay) = a.relays.get(family) else {
            return;
        };
        let tuple = a.tuple;
        let perms: Vec<IpAddr> = a
            .permissions
            .iter()
            .copied()
            .filter(|ip| AddressFamily::of(*ip) == family)
            .collect();
        let chans: Vec<u16> = a.channels.clone();
        for ip in perms {
            self.remove_permission(id, relay, ip);
        }
        for number in chans {
            let on_family = self
                .channels
                .get(&(tuple, number))
                .is_some_and(|c| AddressFamily::of(c.peer.ip()) == family);
            if on_family {
                self.remove_channel(id, tuple, number);
            }
        }
        self.by_relay.remove(&relay);
        if let Some(a) = self.alloc_mut(id) {
            a.relays.set(family, None);
        }
    }

    /// Deletes an allocation and everything hanging off it.
    fn delete(&mut self, id: AllocId) -> Option<RelayAddrs> {
        let index = usize::try_from(id.index).ok()?;
        let slot = self.slots.get_mut(index)?;
        if slot.generation != id.generation {
            return None;
        }
        let a = slot.alloc.take()?;
        // Bump the generation so every stale handle misses.
        slot.generation = slot.generation.wrapping_add(1);
        self.free_slots.push(id.index);
        self.live -= 1;
        for ip in &a.permissions {
            if let Some(relay) = a.relays.for_peer(*ip) {
                self.permissions.remove(&(relay, *ip));
            }
        }
        for number in &a.channels {
            if let Some(c) = self.channels.remove(&(a.tuple, *number)) {
                self.channels_by_peer.remove(&(id, c.peer));
            }
        }
        for relay in a.relays.iter() {
            self.by_relay.remove(&relay);
            self.release_port(relay);
        }
        self.by_tuple.remove(&a.tuple);
        self.quotas.release(a.quota_user());
        Some(a.relays)
    }

    fn remove_permission(&mut self, id: AllocId, relay: SocketAddr, ip: IpAddr) {
        self.permissions.remove(&(relay, ip));
        if let Some(a) = self.alloc_mut(id) {
            if let Some(pos) = a.permissions.iter().position(|p| *p == ip) {
                a.permissions.swap_remove(pos);
            }
        }
    }

    fn remove_channel(&mut self, id: AllocId, tuple: FiveTuple, number: u16) {
        let Some(c) = self.channels.remove(&(tuple, number)) else {
            return;
        };
        if let Some(a) = self.alloc_mut(id) {
            if let Some(pos) = a.channels.iter().position(|n| *n == number) {
                a.channels.swap_remove(pos);
            }
        }
        self.channels_by_peer.remove(&(id, c.peer));
    }

    // ----- permissions and channels -------------------------------------

    /// Installs or refreshes the permission for `ip` on relay `relay`.
    /// Capacity was checked by the caller.
    fn install_permission(&mut self, id: AllocId, relay: SocketAddr, ip: IpAddr, now_ms: u64) {
        let expires = now_ms.saturating_add(ms(self.config.permission_lifetime));
        match self.permissions.entry((relay, ip)) {
            Entry::Occupied(mut e) => e.get_mut().expires = expires,
            Entry::Vacant(e) => {
                e.insert(Permission { alloc: id, expires });
                if let Some(a) = self.alloc_mut(id) {
                    a.permissions.push(ip);
                }
            }
        }
        self.arm(id, expires);
    }

    /// CreatePermission (RFC 8656 §9): all peers or none. Each peer's family
    /// must have a relayed address (443) and pass the policy (403); new
    /// permissions beyond the per-allocation cap are 508.
    pub fn create_permission(
        &mut self,
        tuple: &FiveTuple,
        username: &str,
        peers: &[IpAddr],
        now: Instant,
    ) -> Result<(), TurnError> {
        let tuple = canon_tuple(tuple);
        let now_ms = self.now_ms(now);
        let id = self.owned(&tuple, username, now_ms)?;
        if peers.is_empty() {
            return Err(TurnError::BadRequest("no XOR-PEER-ADDRESS"));
        }
        let relays = self.alloc(id).map(|a| a.relays).unwrap_or_default();
        let mut targets: Vec<(SocketAddr, IpAddr)> = Vec::with_capacity(peers.len());
        for ip in peers {
            let relay = relays
                .for_peer(*ip)
                .ok_or(TurnError::PeerAddressFamilyMismatch)?;
            if let PolicyDecision::Denied(reason) = self.policy.check(*ip) {
                return Err(TurnError::Forbidden(reason));
            }
            if !targets.contains(&(relay, *ip)) {
                targets.push((relay, *ip));
            }
        }
        let new = targets
            .iter()
            .filter(|k| !self.permissions.contains_key(k))
            .count();
        let have = self.alloc(id).map_or(0, |a| a.permissions.len());
        if have + new > self.config.max_permissions_per_allocation {
            return Err(TurnError::InsufficientCapacity("permission quota"));
        }
        for (relay, ip) in targets {
            self.install_permission(id, relay, ip, now_ms);
        }
        self.maybe_compact_timers();
        Ok(())
    }

    /// ChannelBind (RFC 8656 §12): binds or refreshes `number` ↔ `peer` and
    /// installs or refreshes the peer's permission.
    pub fn channel_bind(
        &mut self,
        tuple: &FiveTuple,
        username: &str,
        number: u16,
        peer: SocketAddr,
        now: Instant,
    ) -> Result<(), TurnError> {
        let tuple = canon_tuple(tuple);
        let peer = canonical(peer);
        let now_ms = self.now_ms(now);
        if !is_valid_channel_number(number) {
            return Err(TurnError::BadRequest(
                "channel number outside 0x4000-0x4FFF",
            ));
        }
        let id = self.owned(&tuple, username, now_ms)?;
        let (relay, have_perms, have_chans) = {
            let a = self.alloc(id).ok_or(TurnError::AllocationMismatch)?;
            let relay = a
                .relays
                .for_peer(peer.ip())
                .ok_or(TurnError::PeerAddressFamilyMismatch)?;
            (relay, a.permissions.len(), a.channels.len())
        };
        if let PolicyDecision::Denied(reason) = self.policy.check_transport(peer) {
            return Err(TurnError::Forbidden(reason));
        }
        let existing = self.channels.get(&(tuple, number)).map(|c| c.peer);
        if existing.is_some_and(|p| p != peer) {
            return Err(TurnError::BadRequest("channel bound to another peer"));
        }
        if self
            .channels_by_peer
            .get(&(id, peer))
            .is_some_and(|pc| pc.number != number)
        {
            return Err(TurnError::BadRequest("peer bound to another channel"));
        }
        let new_channel = existing.is_none();
        if new_channel && have_chans >= self.config.max_channels_per_allocation {
            return Err(TurnError::InsufficientCapacity("channel quota"));
        }
        let new_permission = !self.permissions.contains_key(&(relay, peer.ip()));
        if new_permission && have_perms >= self.config.max_permissions_per_allocation {
            return Err(TurnError::InsufficientCapacity("permission quota"));
        }
        let expires = now_ms.saturating_add(ms(self.config.channel_lifetime));
        match self.channels.entry((tuple, number)) {
            Entry::Occupied(mut e) => e.get_mut().expires = expires,
            Entry::Vacant(e) => {
                e.insert(Channel {
                    alloc: id,
                    peer,
                    expires,
                });
                if let Some(a) = self.alloc_mut(id) {
                    a.channels.push(number);
                }
            }
        }
        self.arm(id, expires);
        self.channels_by_peer
            .insert((id, peer), PeerChannel { number, expires });
        self.install_permission(id, relay, peer.ip(), now_ms);
        self.maybe_compact_timers();
        Ok(())
    }

    // ----- relaying (hot path) ------------------------------------------

    fn charge(&mut self, id: AllocId, len: usize, now_ms: u64) -> Result<(), DropReason> {
        let Some(limit) = self.config.bandwidth else {
            return Ok(());
        };
        let Some(a) = self.alloc_mut(id) else {
            return Err(DropReason::NoAllocation);
        };
        if a.bucket.take(&limit, len, now_ms) {
            Ok(())
        } else {
            self.bandwidth_drops += 1;
            Err(DropReason::Bandwidth)
        }
    }

    fn permitted(&self, relay: SocketAddr, ip: IpAddr, now_ms: u64) -> bool {
        self.permissions
            .get(&(relay, ip))
            .is_some_and(|p| p.expires > now_ms)
    }

    /// A Send indication from the client of `tuple` for `peer` carrying
    /// `len` bytes of data.
    pub fn client_to_peer_via_send(
        &mut self,
        tuple: &FiveTuple,
        peer: SocketAddr,
        len: usize,
        now: Instant,
    ) -> Result<Forward, DropReason> {
        let now_ms = self.now_ms(now);
        let peer = canonical(peer);
        let id = *self
            .by_tuple
            .get(&canon_tuple(tuple))
            .ok_or(DropReason::NoAllocation)?;
        let relay = self
            .alloc(id)
            .ok_or(DropReason::NoAllocation)?
            .relays
            .for_peer(peer.ip())
            .ok_or(DropReason::PeerFamilyMismatch)?;
        if let PolicyDecision::Denied(reason) = self.policy.check_transport(peer) {
            return Err(DropReason::Denied(reason));
        }
        if !self.permitted(relay, peer.ip(), now_ms) {
            return Err(DropReason::NoPermission);
        }
        self.charge(id, len, now_ms)?;
        Ok(Forward { relay, peer })
    }

    /// ChannelData from the client of `tuple` on `channel` carrying `len`
    /// bytes. The peer's permission must be live too (a channel outliving
    /// its permission relays nothing until refreshed).
    pub fn client_to_peer_via_channel(
        &mut self,
        tuple: &FiveTuple,
        channel: u16,
        len: usize,
        now: Instant,
    ) -> Result<Forward, DropReason> {
        let now_ms = self.now_ms(now);
        let tuple = canon_tuple(tuple);
        let Some(c) = self.channels.get(&(tuple, channel)).copied() else {
            return Err(if self.by_tuple.contains_key(&tuple) {
                DropReason::UnboundChannel
            } else {
                DropReason::NoAllocation
            });
        };
        if c.expires <= now_ms {
            return Err(DropReason::UnboundChannel);
        }
        let relay = self
            .alloc(c.alloc)
            .ok_or(DropReason::NoAllocation)?
            .relays
            .for_peer(c.peer.ip())
            .ok_or(DropReason::PeerFamilyMismatch)?;
        if !self.permitted(relay, c.peer.ip(), now_ms) {
            return Err(DropReason::NoPermission);
        }
        self.charge(c.alloc, len, now_ms)?;
        Ok(Forward {
            relay,
            peer: c.peer,
        })
    }

    /// A datagram of `len` bytes from `peer` arrived on relayed address
    /// `relay`: where to deliver it, and whether as ChannelData.
    pub fn peer_to_client(
        &mut self,
        relay: SocketAddr,
        peer: SocketAddr,
        len: usize,
        now: Instant,
    ) -> Result<Deliver, DropReason> {
        let now_ms = self.now_ms(now);
        let relay = canonical(relay);
        let peer = canonical(peer);
        let Some(p) = self.permissions.get(&(relay, peer.ip())).copied() else {
            return Err(if self.by_relay.contains_key(&relay) {
                DropReason::NoPermission
            } else {
                DropReason::NoAllocation
            });
        };
        if p.expires <= now_ms {
            return Err(DropReason::NoPermission);
        }
        self.charge(p.alloc, len, now_ms)?;
        let tuple = self.alloc(p.alloc).ok_or(DropReason::NoAllocation)?.tuple;
        let channel = self
            .channels_by_peer
            .get(&(p.alloc, peer))
            .filter(|pc| pc.expires > now_ms)
            .map(|pc| pc.number);
        Ok(Deliver { tuple, channel })
    }

    // ----- metrics ------------------------------------------------------

    /// Counts for metrics.
    pub fn stats(&self) -> TableStats {
        TableStats {
            allocations: self.live,
            permissions: self.permissions.len(),
            channels: self.channels.len(),
            reservations: self.reserved.load(Ordering::Acquire),
            // Ports this table holds: its allocations' relayed addresses
            // (claimed ones from other slices included), its reservations
            // not yet claimed, its quarantine.
            ports_in_use: self.by_relay.len()
                + self.reserved.load(Ordering::Acquire)
                + self.pools.iter().map(PortPool::quarantined).sum::<usize>(),
            ports_total: self.pools.iter().map(PortPool::capacity).sum(),
            bandwidth_drops: self.bandwidth_drops,
            allocations_created: self.allocations_created,
            timer_entries: self.timers.len(),
        }
    }

    /// Whether relayed address `relay` has a live permission for `peer_ip`
    /// at `now` (tests and debugging: read-only, charges no bandwidth).
    #[doc(hidden)]
    pub fn has_permission(&self, relay: SocketAddr, peer_ip: IpAddr, now: Instant) -> bool {
        self.permitted(canonical(relay), peer_ip, self.now_ms(now))
    }

    /// Verifies every index against the slab (tests and debugging): each
    /// index entry points to a live allocation that lists it, counts agree,
    /// ports of live relays are taken.
    #[doc(hidden)]
    pub fn check_invariants(&self) -> Result<(), String> {
        let mut live = 0;
        let mut perms = 0;
        let mut chans = 0;
        for (index, slot) in self.slots.iter().enumerate() {
            let Some(a) = &slot.alloc else { continue };
            live += 1;
            let id = AllocId {
                index: u32::try_from(index).map_err(|e| e.to_string())?,
                generation: slot.generation,
            };
            if self.by_tuple.get(&a.tuple) != Some(&id) {
                return Err(format!("by_tuple misses {}", a.tuple));
            }
            if a.relays.is_empty() {
                return Err(format!("allocation {} without relay", a.tuple));
            }
            for relay in a.relays.iter() {
                if self.by_relay.get(&relay) != Some(&id) {
                    return Err(format!("by_relay misses {relay}"));
                }
                if !self.quotas.ports().is_used(relay) {
                    return Err(format!("relay port {relay} not marked used"));
                }
            }
            for ip in &a.permissions {
                let relay = a.relays.for_peer(*ip).ok_or("permission without relay")?;
                match self.permissions.get(&(relay, *ip)) {
                    Some(p) if p.alloc == id => perms += 1,
                    _ => return Err(format!("permission {ip} not indexed")),
                }
            }
            for n in &a.channels {
                let c = self
                    .channels
                    .get(&(a.tuple, *n))
                    .ok_or_else(|| format!("channel {n:#x} not indexed"))?;
                if c.alloc != id {
                    return Err(format!("channel {n:#x} points elsewhere"));
                }
                if a.relays.for_peer(c.peer.ip()).is_none() {
                    return Err(format!("channel {n:#x} without relay"));
                }
                match self.channels_by_peer.get(&(id, c.peer)) {
                    Some(pc) if pc.number == *n && pc.expires == c.expires => chans += 1,
                    _ => return Err(format!("channel {n:#x} not indexed by peer")),
                }
            }
            if a.scheduled > a.expires {
                return Err("allocation timer after its expiry".into());
            }
            let earliest = a
                .permissions
                .iter()
                .filter_map(|ip| {
                    let relay = a.relays.for_peer(*ip)?;
                    self.permissions.get(&(relay, *ip)).map(|p| p.expires)
                })
                .chain(
                    a.channels
                        .iter()
                        .filter_map(|n| self.channels.get(&(a.tuple, *n)).map(|c| c.expires)),
                )
                .min();
            if earliest.is_some_and(|e| a.scheduled > e) {
                return Err("allocation timer after a permission or channel expiry".into());
            }
        }
        if live != self.live || self.by_tuple.len() != live {
            return Err(format!(
                "live {} / counted {} / by_tuple {}",
                self.live,
                live,
                self.by_tuple.len()
            ));
        }
        if perms != self.permissions.len() {
            return Err(format!(
                "{perms} listed vs {} indexed permissions",
                self.permissions.len()
            ));
        }
        if chans != self.channels.len() || chans != self.channels_by_peer.len() {
            return Err(format!(
                "{chans} listed vs {} / {} indexed channels",
                self.channels.len(),
                self.channels_by_peer.len()
            ));
        }
        let relays: usize = self
            .slots
            .iter()
            .filter_map(|s| s.alloc.as_ref())
            .map(|a| a.relays.len())
            .sum();
        if relays != self.by_relay.len() {
            return Err(format!(
                "{relays} relays vs {} indexed",
                self.by_relay.len()
            ));
        }
        Ok(())
    }
}

/// The live allocation behind `id` in `slots` (a free function so callers
/// can borrow other fields of the table at the same time).
fn slot_mut(slots: &mut [Slot], id: AllocId) -> Option<&mut Allocation> {
    let slot = slots.get_mut(usize::try_from(id.index).ok()?)?;
    if slot.generation != id.generation {
        return None;
    }
    slot.alloc.as_mut()
}

/// RFC 8656 §7.2: a RESERVATION-TOKEN that cannot be honoured is 508.
fn claim_error(e: ClaimError) -> TurnError {
    TurnError::InsufficientCapacity(match e {
        ClaimError::Unknown => "unknown reservation token",
        ClaimError::Expired => "expired reservation token",
        ClaimError::WrongUser => "reservation token of another user",
    })
}

fn canon_tuple(t: &FiveTuple) -> FiveTuple {
    FiveTuple {
        client: canonical(t.client),
        server: canonical(t.server),
        transport: t.transport,
    }
}

#[cfg(test)]
#[path = "table_tests.rs"]
mod tests;
