//! The relay's protocol layer, sans-IO: bytes in (from a client or a peer),
//! at most one datagram out, with injected time. It parses with [`stun`],
//! authenticates (stateless nonces, long-term and REST credentials) and
//! drives the [`AllocationTable`]. Relay sockets are opened and closed
//! through [`RelaySockets`], the one thing the I/O shell lends it.
//!
//! Time is injected: every handler takes the `Instant` it runs at. Unix
//! time (nonce timestamps, REST credential expiry) comes from the system
//! clock unless [`TurnServer::with_unix_time_at`] pins it to the injected
//! `Instant`s, which tests and simulations do.
//!
//! Every answer to a request that was not authenticated (Binding, 400,
//! 401, 420, 438) costs its source a token of the per-source rate limit;
//! without one the request is dropped silently. Answers that are signed
//! with a verified key, and relayed data, are never limited.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::allocation::{AddressFamily, AllocateRequest, Allocated, ReservationToken, SessionKey};
use crate::credentials::Credentials;
use crate::five_tuple::{ClientTransport, FiveTuple};
use crate::live::Live;
use crate::metrics::TurnMetrics;
use crate::nonce::{NonceCheck, NonceKey};
use crate::rate_limit::RateLimiter;
use crate::stun::attributes::{
    self as attrs, AdditionalAddressFamily, ChannelNumber, Data, DontFragment, EvenPort, Lifetime,
    PasswordAlgorithm, Realm, RequestedAddressFamily, RequestedTransport, Username, XorPeerAddress,
};
use crate::stun::credentials::LongTermKey;
use crate::stun::{
    self, channel_data, Class, Integrity, Message, MessageBuilder, Method, PacketKind,
};
use crate::table::{AllocationTable, DropReason, RefreshOutcome};
use crate::turn_error::TurnError;

/// Opens and closes relay sockets on behalf of the protocol layer.
pub trait RelaySockets {
    /// Binds a UDP socket on `addr` (DF set if `dont_fragment`). An error
    /// means the port is taken: the table picks another.
    fn open(&mut self, addr: SocketAddr, dont_fragment: bool) -> std::io::Result<()>;
    /// Closes the socket on `addr`.
    fn close(&mut self, addr: SocketAddr);
}

/// Where an output datagram goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    /// To a client over its 5-tuple (ChannelData over TCP/TLS is padded).
    Client(FiveTuple),
    /// From relay socket `relay` to `peer`.
    Peer {
        /// The relay socket.
        relay: SocketAddr,
        /// The peer.
        peer: SocketAddr,
    },
}

/// One datagram to send; `data` borrows the input or the server's buffer.
#[derive(Debug, PartialEq, Eq)]
pub struct Transmit<'a> {
    /// Where it goes.
    pub to: Destination,
    /// Its bytes.
    pub data: &'a [u8],
}

/// Protocol settings.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// REALM of the long-term credential mechanism.
    pub realm: String,
    /// SOFTWARE attribute in responses; `None` (the default) sends none.
    pub software: Option<String>,
}

/// Where Unix time comes from.
#[derive(Clone, Copy, Debug)]
enum UnixClock {
    /// The system clock (production).
    System,
    /// Derived from the injected `Instant`s: `at` is Unix second `unix`.
    Pinned { at: Instant, unix: u64 },
}

impl UnixClock {
    fn unix(self, now: Instant) -> u64 {
        match self {
            Self::System => unix_now(),
            Self::Pinned { at, unix } => match now.checked_duration_since(at) {
                Some(after) => unix.saturating_add(after.as_secs()),
                None => unix.saturating_sub(at.saturating_duration_since(now).as_secs()),
            },
        }
    }
}

/// The protocol state of one worker.
pub struct TurnServer {
    config: ServerConfig,
    clock: UnixClock,
    table: AllocationTable,
    credentials: Arc<Live<Credentials>>,
    nonces: Arc<NonceKey>,
    limiter: RateLimiter,
    metrics: TurnMetrics,
    out: Vec<u8>,
    expired: Vec<SocketAddr>,
}

/// The key a request was verified with, and the credentials' generation
/// it was verified under (an allocation caches both).
#[derive(Clone, Copy)]
struct VerifiedKey {
    key: SessionKey,
    generation: u64,
}

/// The outcome of authenticating a request.
enum Auth<'m> {
    /// Verified: the user, the quota user and the key used.
    Ok {
        username: &'m str,
        quota_user: String,
        key: VerifiedKey,
        sha256: bool,
    },
    /// Answer with this error (401/438/400), unauthenticated.
    Reject(u16, &'static str),
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl TurnServer {
    /// A worker's protocol state around its `table`.
    pub fn new(
        config: ServerConfig,
        table: AllocationTable,
        credentials: Arc<Live<Credentials>>,
        nonces: Arc<NonceKey>,
        limiter: RateLimiter,
        metrics: TurnMetrics,
    ) -> Self {
        Self {
            config,
            clock: UnixClock::System,
            table,
            credentials,
            nonces,
            limiter,
            metrics,
            out: Vec::with_capacity(2048),
            expired: Vec::new(),
        }
    }

    /// Takes Unix time from the injected clock instead of the system's:
    /// the `Instant` `at` is Unix second `unix`, and the `now` passed to
    /// every handler moves it on. For tests and simulations, so nonce
    /// expiry (438) and REST credential expiry follow injected time.
    #[must_use]
    pub fn with_unix_time_at(mut self, at: Instant, unix: u64) -> Self {
        self.clock = UnixClock::Pinned { at, unix };
        self
    }

    /// The allocation table (for stats and tests).
    pub fn table(&self) -> &AllocationTable {
        &self.table
    }

    /// When [`TurnServer::handle_timeout`] is next needed.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.table.next_expiry()
    }

    /// Expires allocations, permissions and channels due at `now`.
    pub fn handle_timeout(&mut self, now: Instant, sockets: &mut dyn RelaySockets) {
        // Workers call this after every batch: skip the stats and the scan
        // when nothing is due.
        if self.poll_timeout().is_none_or(|t| t > now) {
            return;
        }
        let before = self.table.stats();
        self.expired.clear();
        self.table.expire_into(now, &mut self.expired);
        for addr in self.expired.drain(..) {
            sockets.close(addr);
        }
        self.track_stats(before);
    }

    /// A client went away (TCP/TLS connection closed): its allocation goes too.
    pub fn client_closed(&mut self, tuple: &FiveTuple, sockets: &mut dyn RelaySockets) {
        let before = self.table.stats();
        if let Some(relays) = self.table.remove(tuple) {
            for addr in relays.iter() {
                sockets.close(addr);
            }
        }
        self.track_stats(before);
    }

    /// A datagram (or stream frame) from a client.
    pub fn handle_client<'a>(
        &'a mut self,
        now: Instant,
        tuple: FiveTuple,
        data: &'a [u8],
        sockets: &mut dyn RelaySockets,
    ) -> Option<Transmit<'a>> {
        match stun::packet_kind(data) {
            PacketKind::ChannelData => self.channel_data_from_client(now, &tuple, data),
            PacketKind::Stun => match Message::parse(data) {
                // RFC 8489 §7.3: a wrong FINGERPRINT means it is not STUN.
                Ok(msg) if msg.fingerprint().is_some() && !msg.verify_fingerprint() => {
                    self.drop("bad_fingerprint")
                }
                Ok(msg) => self.message_from_client(now, tuple, msg, sockets),
                Err(_) => self.drop("malformed"),
            },
            PacketKind::Other => self.drop("not_turn"),
        }
    }

    /// A datagram from `peer` on relay socket `relay`.
    pub fn handle_peer(
        &mut self,
        now: Instant,
        relay: SocketAddr,
        peer: SocketAddr,
        data: &[u8],
    ) -> Option<Transmit<'_>> {
        let deliver = match self.table.peer_to_client(relay, peer, data.len(), now) {
            Ok(d) => d,
            Err(reason) => return self.drop_reason(reason),
        };
        self.out.clear();
        match deliver.channel {
            Some(channel) => {
                let pad = deliver.tuple.transport != ClientTransport::Udp;
                channel_data::encode(&mut self.out, channel, data, pad).ok()?;
            }
            None => {
                let tid: [u8; 12] = rand::random();
                stun::encode_data_indication(&mut self.out, tid, peer, data).ok()?;
            }
        }
        self.metrics.relayed.to_client.count(data.len());
        Some(Transmit {
            to: Destination::Client(deliver.tuple),
            data: &self.out,
        })
    }

    fn channel_data_from_client<'a>(
        &mut self,
        now: Instant,
        tuple: &FiveTuple,
        data: &'a [u8],
    ) -> Option<Transmit<'a>> {
        let Ok((channel, payload)) = channel_data::parse(data) else {
            return self.drop("malformed");
        };
        let forward = self
            .table
            .client_to_peer_via_channel(tuple, channel, payload.len(), now);
        self.to_peer(forward, payload)
    }

    /// The datagram for a client→peer forwarding decision.
    fn to_peer<'a>(
        &self,
        forward: Result<crate::table::Forward, DropReason>,
        payload: &'a [u8],
    ) -> Option<Transmit<'a>> {
        match forward {
            Ok(f) => {
                self.metrics.relayed.to_peer.count(payload.len());
                Some(Transmit {
                    to: Destination::Peer {
                        relay: f.relay,
                        peer: f.peer,
                    },
                    data: payload,
                })
            }
            Err(reason) => self.drop_reason(reason),
        }
    }

    fn message_from_client<'a>(
        &'a mut self,
        now: Instant,
        tuple: FiveTuple,
        msg: Message<'a>,
        sockets: &mut dyn RelaySockets,
    ) -> Option<Transmit<'a>> {
        let method = msg.method();
        match msg.class() {
            Class::Indication if method == Method::SEND => self.send_indication(now, &tuple, msg),
            Class::Request => {
                if let Some(unknown) = msg.unknown_comprehension_required() {
                    return self.error(
                        now,
                        &tuple,
                        &msg,
                        420,
                        "Unknown Attribute",
                        Some(&unknown),
                        None,
                    );
                }
                if method == Method::BINDING {
                    return self.binding(now, &tuple, &msg);
                }
                let known = [
                    Method::ALLOCATE,
                    Method::REFRESH,
                    Method::CREATE_PERMISSION,
                    Method::CHANNEL_BIND,
                ];
                if !known.contains(&method) {
                    return self.error(now, &tuple, &msg, 400, "Bad Request", None, None);
                }
                match self.authenticate(now, &tuple, &msg) {
                    Auth::Ok {
                        username,
                        quota_user,
                        key,
                        sha256,
                    } => {
                        let result =
                            self.request(now, &tuple, &msg, username, &quota_user, key, sockets);
                        self.respond(now, &tuple, &msg, result, key.key, sha256)
                    }
                    // Challenges and failures are unauthenticated answers,
                    // rate limited per source in `error`.
                    Auth::Reject(code, reason) => {
                        self.error(now, &tuple, &msg, code, reason, None, None)
                    }
                }
            }
            // Responses and other indications have no business here.
            _ => self.drop("unexpected_class"),
        }
    }

    fn send_indication<'a>(
        &mut self,
        now: Instant,
        tuple: &FiveTuple,
        msg: Message<'a>,
    ) -> Option<Transmit<'a>> {
        // RFC 8489 §6.3.2: an indication with an unknown
        // comprehension-required attribute is discarded. (No allocation
        // unless there is one.)
        if msg.unknown_comprehension_required().is_some() {
            return self.drop("unknown_attribute");
        }
        let (Ok(Some(XorPeerAddress(peer))), Ok(Some(Data(payload)))) =
            (msg.get::<XorPeerAddress>(), msg.get::<Data>())
        else {
            return self.drop("malformed");
        };
        let forward = self
            .table
            .client_to_peer_via_send(tuple, peer, payload.len(), now);
        self.to_peer(forward, payload)
    }

    /// A Binding success response (unauthenticated, so rate limited per source).
    fn binding<'a>(
        &'a mut self,
        now: Instant,
        tuple: &FiveTuple,
        msg: &Message<'_>,
    ) -> Option<Transmit<'a>> {
        if !self.admit(now, tuple) {
            return None;
        }
        self.out.clear();
        let mut b = MessageBuilder::new(
            &mut self.out,
            Class::Success,
            Method::BINDING,
            msg.transaction_id(),
        );
        b.xor_mapped_address(tuple.client);
        if let Some(s) = &self.config.software {
            b.software(s);
        }
        b.finish(None, msg.fingerprint().is_some()).ok()?;
        Some(Transmit {
            to: Destination::Client(*tuple),
            data: &self.out,
        })
    }

    /// RFC 8489 §9.2.4: long-term credentials with stateless nonces.
    fn authenticate<'m>(&mut self, now: Instant, tuple: &FiveTuple, msg: &Message<'m>) -> Auth<'m> {
        let has_sha1 = msg.message_integrity().is_some();
        let has_sha256 = msg.message_integrity_sha256().is_some();
        if !has_sha1 && !has_sha256 {
            // The first request of every client: challenge (the caller
            // applies the rate limit).
            return Auth::Reject(401, "Unauthorized");
        }
        let (Ok(Some(Username(username))), Ok(Some(Realm(realm))), Ok(Some(attrs::Nonce(nonce)))) = (
            msg.get::<Username>(),
            msg.get::<Realm>(),
            msg.get::<attrs::Nonce>(),
        ) else {
            self.auth_failure("missing_attributes");
            return Auth::Reject(400, "Bad Request");
        };
        let unix = self.clock.unix(now);
        match self.nonces.check(nonce, tuple.client, unix) {
            NonceCheck::Valid => {}
            NonceCheck::Stale => {
                self.auth_failure("stale_nonce");
                return Auth::Reject(438, "Stale Nonce");
            }
            // Not ours (a restart with a new key, another server, another
            // client address): 438 too, so the client retries with the
            // fresh nonce instead of giving up on its password (nonce.rs).
            NonceCheck::Invalid => {
                self.auth_failure("bad_nonce");
                return Auth::Reject(438, "Stale Nonce");
            }
        }
        if realm != self.config.realm {
            self.auth_failure("wrong_realm");
            return Auth::Reject(401, "Unauthorized");
        }
        let algorithm = match msg.get::<PasswordAlgorithm>() {
            Ok(Some(a)) => a,
            Ok(None) => PasswordAlgorithm::MD5,
            Err(_) => return Auth::Reject(400, "Bad Request"),
        };
        // One snapshot for the whole request: a reload meanwhile applies
        // from the next one.
        let credentials = self.credentials.get();
        let generation = credentials.generation();
        // The allocation's cached key first: no hashing of the password on
        // every Refresh/CreatePermission/ChannelBind, unless the
        // credentials were reloaded since it was verified.
        if let Some(a) = self
            .table
            .get(tuple)
            .filter(|a| a.username() == username && a.key_generation() == generation)
        {
            let key = *a.session_key();
            let fresh = credentials.rest_expiry(username).is_none_or(|t| t >= unix);
            if fresh && verify(msg, key.as_bytes(), has_sha256) {
                return Auth::Ok {
                    username,
                    quota_user: a.quota_user().to_string(),
                    key: VerifiedKey { key, generation },
                    sha256: has_sha256,
                };
            }
        }
        let resolved = match credentials.lookup(username, unix) {
            Ok(r) => r,
            Err(e) => {
                self.auth_failure(e.as_str());
                return Auth::Reject(401, "Unauthorized");
            }
        };
        let quota_user = resolved.quota_user.to_string();
        for password in resolved.candidates {
            let Some(key) = LongTermKey::derive(algorithm, username, realm, &password) else {
                return Auth::Reject(400, "Bad Request");
            };
            if verify(msg, key.as_bytes(), has_sha256) {
                let Some(key) = SessionKey::from_slice(key.as_bytes()) else {
                    return Auth::Reject(400, "Bad Request");
                };
                return Auth::Ok {
                    username,
                    quota_user,
                    key: VerifiedKey { key, generation },
                    sha256: has_sha256,
                };
            }
        }
        self.auth_failure("bad_integrity");
        Auth::Reject(401, "Unauthorized")
    }

    /// Runs an authenticated request against the table; on success returns
    /// what the response carries.
    #[allow(clippy::too_many_arguments)]
    fn request(
        &mut self,
        now: Instant,
        tuple: &FiveTuple,
        msg: &Message<'_>,
        username: &str,
        quota_user: &str,
        key: VerifiedKey,
        sockets: &mut dyn RelaySockets,
    ) -> Result<Success, TurnError> {
        let before = self.table.stats();
        let result = match msg.method() {
            Method::ALLOCATE => self.allocate(now, tuple, msg, username, quota_user, key, sockets),
            Method::REFRESH => {
                let lifetime = msg.get::<Lifetime>().ok().flatten().map(|l| l.0);
                let family = msg
                    .get::<RequestedAddressFamily>()
                    .ok()
                    .flatten()
                    .map(|f| family(f.0));
                match self.table.refresh(tuple, username, lifetime, family, now)? {
                    RefreshOutcome::Refreshed { lifetime } => {
                        Ok(Success::Lifetime(lifetime.as_secs() as u32))
                    }
                    RefreshOutcome::Deleted { relays } => {
                        relays.iter().for_each(|a| sockets.close(a));
                        Ok(Success::Lifetime(0))
                    }
                    RefreshOutcome::FamilyReleased { relay } => {
                        sockets.close(relay);
                        Ok(Success::Lifetime(0))
                    }
                }
            }
            Method::CREATE_PERMISSION => {
                let mut peers: Vec<IpAddr> = Vec::new();
                for p in msg.get_all::<XorPeerAddress>() {
                    match p {
                        Ok(XorPeerAddress(a)) => peers.push(a.ip()),
                        Err(_) => return Err(TurnError::BadRequest("bad XOR-PEER-ADDRESS")),
                    }
                }
                self.table
                    .create_permission(tuple, username, &peers, now)
                    .map(|()| Success::Empty)
            }
            Method::CHANNEL_BIND => {
                let (Ok(Some(ChannelNumber(channel))), Ok(Some(XorPeerAddress(peer)))) =
                    (msg.get::<ChannelNumber>(), msg.get::<XorPeerAddress>())
                else {
                    return Err(TurnError::BadRequest(
                        "CHANNEL-NUMBER and XOR-PEER-ADDRESS required",
                    ));
                };
                self.table
                    .channel_bind(tuple, username, channel, peer, now)
                    .map(|()| Success::Empty)
            }
            _ => Err(TurnError::BadRequest("unknown method")),
        };
        self.track_stats(before);
        if let Err(e) = &result {
            match e {
                TurnError::Forbidden(reason) => self
                    .metrics
                    .denied_peers
                    .with_label_values(&[reason.as_str()])
                    .inc(),
                TurnError::AllocationQuotaReached => self
                    .metrics
                    .quota_rejections
                    .with_label_values(&["allocations"])
                    .inc(),
                TurnError::InsufficientCapacity(what) => self
                    .metrics
                    .quota_rejections
                    .with_label_values(&[what])
                    .inc(),
                _ => {}
            }
        }
        result
    }

    #[allow(clippy::too_many_arguments)]
    fn allocate(
        &mut self,
        now: Instant,
        tuple: &FiveTuple,
        msg: &Message<'_>,
        username: &str,
        quota_user: &str,
        key: VerifiedKey,
        sockets: &mut dyn RelaySockets,
    ) -> Result<Success, TurnError> {
        let Ok(Some(RequestedTransport(transport))) = msg.get::<RequestedTransport>() else {
            return Err(TurnError::BadRequest("REQUESTED-TRANSPORT required"));
        };
        let mut req = AllocateRequest::new(msg.transaction_id(), username, key.key);
        req.key_generation = key.generation;
        req.quota_user = quota_user;
        req.requested_transport = transport;
        req.requested_family = msg
            .get::<RequestedAddressFamily>()
            .ok()
            .flatten()
            .map(|f| family(f.0));
        req.additional_family = msg
            .get::<AdditionalAddressFamily>()
            .ok()
            .flatten()
            .map(|f| family(f.0));
        req.lifetime = msg.get::<Lifetime>().ok().flatten().map(|l| l.0);
        req.even_port = msg.get::<EvenPort>().ok().flatten().map(|e| e.reserve);
        req.reservation_token = msg
            .get::<attrs::ReservationToken>()
            .ok()
            .flatten()
            .map(|t| ReservationToken(t.0));
        req.dont_fragment = matches!(msg.get::<DontFragment>(), Ok(Some(_)));
        let mut allocated = self.table.allocate(*tuple, &req, now)?;
        if allocated.retransmission {
            // Its relay sockets are bound already: binding them again would
            // fail and move the allocation to another port.
            return Ok(Success::Allocated(allocated, tuple.client));
        }
        // Bind every relay socket; a taken port makes the table pick another.
        // An EVEN-PORT reservation is only marked in the table until it is
        // claimed (by whichever worker the claim reaches), so check now
        // that its port can be bound at all: a port another process holds
        // would only fail the claim later. A failed check moves the pair.
        for _attempt in 0..16 {
            let failed = allocated
                .relays
                .iter()
                .find(|addr| sockets.open(*addr, allocated.dont_fragment).is_err())
                .or_else(|| {
                    allocated
                        .reserved
                        .filter(|r| match sockets.open(*r, false) {
                            Ok(()) => {
                                sockets.close(*r);
                                false
                            }
                            Err(_) => true,
                        })
                });
            let Some(failed) = failed else {
                self.metrics.allocations_total.inc();
                return Ok(Success::Allocated(allocated, tuple.client));
            };
            for addr in allocated.relays.iter().filter(|a| *a != failed) {
                sockets.close(addr);
            }
            allocated = self.table.bind_failed(tuple, failed, now)?;
        }
        self.client_closed(tuple, sockets);
        Err(TurnError::InsufficientCapacity("ports"))
    }

    fn respond<'a>(
        &'a mut self,
        now: Instant,
        tuple: &FiveTuple,
        msg: &Message<'_>,
        result: Result<Success, TurnError>,
        key: SessionKey,
        sha256: bool,
    ) -> Option<Transmit<'a>> {
        let success = match result {
            Ok(s) => s,
            Err(e) => {
                let reason = e.reason_phrase();
                return self.error(now, tuple, msg, e.code(), reason, None, Some((key, sha256)));
            }
        };
        self.out.clear();
        let mut b = MessageBuilder::new(
            &mut self.out,
            Class::Success,
            msg.method(),
            msg.transaction_id(),
        );
        match success {
            Success::Allocated(a, mapped) => {
                for relay in a.relays.iter() {
                    b.xor_relayed_address(relay);
                }
                b.lifetime(a.lifetime.as_secs() as u32)
                    .xor_mapped_address(mapped);
                if let Some(t) = a.reservation_token {
                    b.reservation_token(t.0);
                }
                if let Some((family, e)) = a.address_error {
                    b.raw(stun::attr::ADDRESS_ERROR_CODE, &address_error(family, &e));
                }
            }
            Success::Lifetime(l) => {
                b.lifetime(l);
            }
            Success::Empty => {}
        }
        if let Some(s) = &self.config.software {
            b.software(s);
        }
        let integrity = if sha256 {
            Integrity::Sha256(key.as_bytes())
        } else {
            Integrity::Sha1(key.as_bytes())
        };
        b.finish(Some(integrity), msg.fingerprint().is_some())
            .ok()?;
        Some(Transmit {
            to: Destination::Client(*tuple),
            data: &self.out,
        })
    }

    /// An error response; 401 and 438 carry a fresh NONCE and the REALM;
    /// errors to authenticated requests are signed with the request's key.
    /// Unsigned errors are unauthenticated answers: each costs the source a
    /// rate-limit token, and none is sent when it has none left.
    #[allow(clippy::too_many_arguments)]
    fn error<'a>(
        &'a mut self,
        now: Instant,
        tuple: &FiveTuple,
        msg: &Message<'_>,
        code: u16,
        reason: &str,
        unknown: Option<&[u16]>,
        signed: Option<(SessionKey, bool)>,
    ) -> Option<Transmit<'a>> {
        if signed.is_none() && !self.admit(now, tuple) {
            return None;
        }
        let nonce = matches!(code, 401 | 438)
            .then(|| self.nonces.issue(tuple.client, self.clock.unix(now)));
        self.out.clear();
        let mut b = MessageBuilder::new(
            &mut self.out,
            Class::Error,
            msg.method(),
            msg.transaction_id(),
        );
        b.error_code(code, reason);
        if let Some(unknown) = unknown {
            b.unknown_attributes(unknown);
        }
        if let Some(nonce) = &nonce {
            b.realm(&self.config.realm).nonce(nonce);
        }
        if let Some(s) = &self.config.software {
            b.software(s);
        }
        let integrity = signed.as_ref().map(|(key, sha256)| {
            if *sha256 {
                Integrity::Sha256(key.as_bytes())
            } else {
                Integrity::Sha1(key.as_bytes())
            }
        });
        b.finish(integrity, msg.fingerprint().is_some()).ok()?;
        Some(Transmit {
            to: Destination::Client(*tuple),
            data: &self.out,
        })
    }

    /// May `tuple`'s source get one more unauthenticated answer? Counts
    /// the refusals.
    fn admit(&mut self, now: Instant, tuple: &FiveTuple) -> bool {
        if self.limiter.try_acquire(tuple.client.ip(), now) {
            return true;
        }
        self.metrics.rate_limited.inc();
        false
    }

    fn auth_failure(&self, reason: &str) {
        self.metrics
            .auth_failures
            .with_label_values(&[reason])
            .inc();
    }

    fn drop<T>(&self, reason: &str) -> Option<T> {
        self.metrics.dropped.with_label_values(&[reason]).inc();
        None
    }

    fn drop_reason<T>(&self, reason: DropReason) -> Option<T> {
        if let DropReason::Denied(d) = reason {
            self.metrics
                .denied_peers
                .with_label_values(&[d.as_str()])
                .inc();
        }
        self.drop(reason.as_str())
    }

    /// Moves the shared gauges by this table's change.
    fn track_stats(&self, before: crate::table::TableStats) {
        let after = self.table.stats();
        let delta = |a: usize, b: usize| a as i64 - b as i64;
        self.metrics
            .allocations
            .add(delta(after.allocations, before.allocations));
        self.metrics
            .permissions
            .add(delta(after.permissions, before.permissions));
        self.metrics
            .channels
            .add(delta(after.channels, before.channels));
    }
}

/// What a successful request answers with.
enum Success {
    Allocated(Allocated, SocketAddr),
    Lifetime(u32),
    Empty,
}

fn verify(msg: &Message<'_>, key: &[u8], sha256: bool) -> bool {
    if sha256 {
        msg.verify_integrity_sha256(key)
    } else {
        msg.verify_integrity(key)
    }
}

fn family(f: attrs::AddressFamily) -> AddressFamily {
    match f {
        attrs::AddressFamily::V4 => AddressFamily::V4,
        attrs::AddressFamily::V6 => AddressFamily::V6,
    }
}

/// ADDRESS-ERROR-CODE (RFC 8656 §18.13): family, reserved, class, number, reason.
fn address_error(family: AddressFamily, e: &TurnError) -> Vec<u8> {
    let code = e.code();
    let mut v = vec![family.to_wire(), 0, (code / 100) as u8, (code % 100) as u8];
    v.extend_from_slice(e.reason_phrase().as_bytes());
    v
}
