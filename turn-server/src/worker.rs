//! One relay worker: a thread with a mio poll loop owning its client
//! sockets, the relay sockets of the allocations made on it, and its share
//! of the protocol state. Nothing crosses threads on the hot path:
//!
//! * UDP: a SO_REUSEPORT client socket per worker; the kernel hashes each
//!   client's 5-tuple to one worker's socket. UDP sockets (client and
//!   relay) are read with `recvmmsg`, and what a round sends leaves in
//!   `sendmmsg`/GSO batches ([`platform::datagram_batch`]).
//! * TCP and TLS: a SO_REUSEPORT listener per worker and address; the
//!   kernel spreads incoming connections over the workers' listeners, and
//!   a connection (with its allocation, relay socket and TLS session)
//!   stays on the worker that accepted it for its whole life. No acceptor
//!   thread, channel or waker hand-off: the same model as UDP, and peer
//!   data for a TCP client never needs to find another thread.
//!
//! Per connection the sans-IO [`StreamConn`] frames, decrypts and queues;
//! this shell only reads (in [`READ_CHUNK`]s, with a per-event budget so a
//! fast sender cannot starve the others), writes (batched at the end of
//! each event round, at once past [`FLUSH_THRESHOLD`](crate::stream::FLUSH_THRESHOLD)),
//! applies the timers and, when a connection closes, frees its allocation
//! through [`TurnServer::client_closed`].

use std::collections::HashMap;
use std::io::{ErrorKind, Read};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream, UdpSocket};
use mio::{Events, Interest, Poll, Registry, Token, Waker};
use socket2::{Domain, Protocol, Socket, Type};
use tracing::debug;

use crate::five_tuple::{ClientTransport, FiveTuple};
use crate::live::Live;
use crate::metrics::TurnMetrics;
use crate::server::{Destination, RelaySockets, Transmit, TurnServer};
use crate::stream::{CloseReason, Outbound, StreamConn, StreamTimeouts, READ_CHUNK};
use crate::tls::TlsSetup;
use platform::datagram_batch::{RecvBatch, SendQueue, BATCH};

const CLIENT: Token = Token(0);
const WAKER: Token = Token(1);
const FIRST_LISTENER: usize = 2;
/// Tokens from here on name relay sockets, from [`CONN_BASE`] connections.
const RELAY_BASE: usize = 1 << (usize::BITS - 2);
const CONN_BASE: usize = 2 << (usize::BITS - 2);
/// Bytes read from one connection per readiness event before the others
/// get a turn (the rest is read in the next round).
const READ_BUDGET: usize = 4 * READ_CHUNK;
/// `recvmmsg` batches read from one UDP socket (client or relay) per turn
/// (256 datagrams): a peer flooding its relay port cannot hold the worker
/// in one loop.
const BATCH_BUDGET: usize = 256 / BATCH;
/// The same for the worker's client socket, which carries every UDP
/// client's traffic where a relay socket carries one allocation's: under a
/// flood it would otherwise overflow first.
const CLIENT_BATCH_BUDGET: usize = 1024 / BATCH;
/// How long a client's write queue may stay full (its peer data dropped)
/// before the connection is closed as not reading.
const STALL_LIMIT: Duration = Duration::from_secs(2);
/// How often the connection timers are checked.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// A non-blocking UDP socket bound to `addr`, with SO_REUSEPORT if `shared`.
pub fn udp_socket(addr: SocketAddr, shared: bool) -> std::io::Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if shared {
        socket.set_reuse_port(true)?;
    }
    socket.set_nonblocking(true)?;
    // Deep buffers: a flood should queue, not drop, while a worker is busy.
    let _ = socket.set_recv_buffer_size(4 << 20);
    let _ = socket.set_send_buffer_size(4 << 20);
    socket.bind(&addr.into())?;
    Ok(UdpSocket::from_std(socket.into()))
}

/// A UDP client socket of a worker, SO_REUSEPORT so that every worker
/// binds one on the same address.
///
/// With `claim` (the first socket of a group on port 0) the bind happens
/// before SO_REUSEPORT is set: a port-0 bind with SO_REUSEPORT may be
/// given a port that another program of the same user already holds with
/// SO_REUSEPORT, and the two would then split each other's traffic. A
/// plain bind gets a port nobody holds; the option, set afterwards, lets
/// the other workers' sockets join it.
pub fn udp_listener(addr: SocketAddr, claim: bool) -> std::io::Result<UdpSocket> {
    if !claim {
        return udp_socket(addr, true);
    }
    let socket = udp_socket(addr, false)?;
    socket2::SockRef::from(&socket).set_reuse_port(true)?;
    Ok(socket)
}

/// A non-blocking TCP listener on `addr` with SO_REUSEADDR (restarts while
/// old connections linger in TIME_WAIT) and SO_REUSEPORT (one per worker);
/// `claim` as for [`udp_listener`].
pub fn tcp_listener(addr: SocketAddr, claim: bool) -> std::io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if !claim {
        socket.set_reuse_port(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    if claim {
        socket.set_reuse_port(true)?;
    }
    socket.listen(1024)?;
    Ok(TcpListener::from_std(socket.into()))
}

/// Fails with `AddrInUse` if another socket already holds `addr`.
///
/// SO_REUSEPORT lets sockets of the same user share a port silently, so a
/// second server started on a taken port would quietly split its traffic
/// with the first. A probe without SO_REUSEPORT is refused by the kernel
/// in that case. Port 0 needs no probe: the first listener claims a port
/// (see [`udp_listener`]).
pub fn probe_free(addr: SocketAddr, transport: Type) -> std::io::Result<()> {
    if addr.port() == 0 {
        return Ok(());
    }
    let protocol = if transport == Type::STREAM {
        Protocol::TCP
    } else {
        Protocol::UDP
    };
    let socket = Socket::new(Domain::for_address(addr), transport, Some(protocol))?;
    if transport == Type::STREAM {
        socket.set_reuse_address(true)?;
    }
    socket.bind(&addr.into())
}

/// A TCP or TLS listener of a worker.
pub struct StreamListener {
    /// The SO_REUSEPORT listener.
    pub listener: TcpListener,
    /// TLS configuration, replaced by a reload; `None` for plain TCP.
    pub tls: Option<Arc<Live<TlsSetup>>>,
}

/// Limits shared by every worker's stream connections.
#[derive(Clone)]
pub struct StreamLimits {
    /// Connections open in all workers together.
    pub open: Arc<AtomicUsize>,
    /// Most connections open at once.
    pub max_connections: usize,
    /// Handshake and idle timeouts.
    pub timeouts: StreamTimeouts,
    /// New connections per source (a limiter per worker is made from it).
    pub rate: crate::rate_limit::RateLimitConfig,
}

/// What a worker serves.
pub struct WorkerSockets {
    /// The UDP client socket, if UDP is configured.
    pub udp: Option<UdpSocket>,
    /// TCP and TLS listeners.
    pub streams: Vec<StreamListener>,
    /// Limits of stream connections.
    pub limits: StreamLimits,
}

/// The relay sockets of one worker, registered in its poll.
struct Relays {
    registry: Registry,
    sockets: Vec<Option<(SocketAddr, UdpSocket)>>,
    free: Vec<usize>,
    by_addr: HashMap<SocketAddr, usize, foldhash::fast::RandomState>,
}

impl RelaySockets for Relays {
    fn open(&mut self, addr: SocketAddr, _dont_fragment: bool) -> std::io::Result<()> {
        // Linux sends UDP with DF set and path-MTU discovery by default
        // (IP_PMTUDISC_WANT), which is what DONT-FRAGMENT asks for.
        let mut socket = udp_socket(addr, false)?;
        let slot = self.free.pop().unwrap_or(self.sockets.len());
        self.registry
            .register(&mut socket, Token(RELAY_BASE + slot), Interest::READABLE)?;
        if slot == self.sockets.len() {
            self.sockets.push(None);
        }
        self.sockets[slot] = Some((addr, socket));
        self.by_addr.insert(addr, slot);
        Ok(())
    }

    fn close(&mut self, addr: SocketAddr) {
        if let Some(slot) = self.by_addr.remove(&addr) {
            if let Some((_, mut socket)) = self.sockets[slot].take() {
                let _ = self.registry.deregister(&mut socket);
            }
            self.free.push(slot);
        }
    }
}

impl Relays {
    fn socket(&self, relay: SocketAddr) -> Option<&UdpSocket> {
        let &slot = self.by_addr.get(&relay)?;
        self.sockets.get(slot)?.as_ref().map(|(_, s)| s)
    }
}

/// Datagrams on their way out, sent in batches: to UDP clients through the
/// worker's client socket (`sendmmsg` to many clients, GSO for a burst to
/// one), and to peers through one relay socket at a time (a run of
/// datagrams through the same relay socket leaves in one call).
#[derive(Default)]
struct Outbox {
    client: SendQueue,
    peer: SendQueue,
    /// The relay socket `peer` is queued for.
    relay: Option<SocketAddr>,
}

impl Outbox {
    fn queue_client(&mut self, udp: Option<&UdpSocket>, to: SocketAddr, data: &[u8]) {
        self.client.push(to, data);
        if self.client.len() >= BATCH {
            self.flush_clients(udp);
        }
    }

    fn queue_peer(&mut self, relays: &Relays, relay: SocketAddr, peer: SocketAddr, data: &[u8]) {
        if self.relay != Some(relay) {
            self.flush_peers(relays);
            self.relay = Some(relay);
        }
        self.peer.push(peer, data);
        if self.peer.len() >= BATCH {
            self.flush_peers(relays);
        }
    }

    fn flush_clients(&mut self, udp: Option<&UdpSocket>) {
        if self.client.is_empty() {
            return;
        }
        match udp {
            Some(udp) => {
                self.client.flush(udp);
            }
            None => self.client = SendQueue::new(),
        }
    }

    /// Sends what is queued for peers. The relay socket is looked up by
    /// address now: if its allocation ended meanwhile the datagrams go
    /// nowhere.
    fn flush_peers(&mut self, relays: &Relays) {
        if self.peer.is_empty() {
            return;
        }
        match self.relay.and_then(|r| relays.socket(r)) {
            Some(socket) => {
                self.peer.flush(socket);
            }
            None => self.peer = SendQueue::new(),
        }
    }

    fn flush(&mut self, udp: Option<&UdpSocket>, relays: &Relays) {
        self.flush_clients(udp);
        self.flush_peers(relays);
    }
}

/// One accepted TCP/TLS connection.
struct Conn {
    socket: TcpStream,
    core: StreamConn,
    /// Queued in `Conns::dirty` for the end-of-round flush.
    dirty: bool,
    /// Queued in `Conns::doomed`.
    doomed: bool,
    /// Since when peer data has found the write queue full, if it has
    /// since the last datagram that fitted.
    full_since: Option<Instant>,
}

/// A worker's stream connections.
struct Conns {
    slots: Vec<Option<Conn>>,
    free: Vec<usize>,
    by_tuple: HashMap<FiveTuple, usize, foldhash::fast::RandomState>,
    /// Connections with bytes queued, flushed at the end of the round.
    dirty: Vec<usize>,
    /// Connections to close once the current event is handled.
    doomed: Vec<(usize, CloseReason)>,
    /// Peer data dropped for a client whose write queue is full.
    dropped_full: prometheus::IntCounter,
}

impl Conns {
    fn get(&mut self, slot: usize) -> Option<&mut Conn> {
        self.slots.get_mut(slot).and_then(Option::as_mut)
    }

    fn doom(&mut self, slot: usize, reason: CloseReason) {
        if let Some(conn) = self.get(slot) {
            if !conn.doomed {
                conn.doomed = true;
                self.doomed.push((slot, reason));
            }
        }
    }

    /// Queues `data` for the connection of `tuple` (peer data, answers).
    fn send(&mut self, tuple: &FiveTuple, data: &[u8]) {
        let Some(&slot) = self.by_tuple.get(tuple) else {
            return;
        };
        let Some(conn) = self.slots.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        if conn.doomed {
            return;
        }
        match queue(conn, data) {
            Ok(()) => conn.full_since = None,
            // A client that reads slower than its peers send loses
            // datagrams, as over UDP (each frame is queued whole or not at
            // all, so the stream's framing holds); one that stopped reading
            // is closed.
            Err(CloseReason::WriteQueueFull) => {
                self.dropped_full.inc();
                let now = Instant::now();
                let since = *conn.full_since.get_or_insert(now);
                if now.saturating_duration_since(since) >= STALL_LIMIT {
                    return self.doom(slot, CloseReason::WriteQueueFull);
                }
            }
            Err(reason) => return self.doom(slot, reason),
        }
        if !conn.dirty && !conn.core.outbound().pending().is_empty() {
            conn.dirty = true;
            self.dirty.push(slot);
        }
    }
}

/// Queues `data` on `conn`, writing at once if enough has piled up.
fn queue(conn: &mut Conn, data: &[u8]) -> Result<(), CloseReason> {
    let out = conn.core.outbound();
    out.send(data)?;
    if out.wants_flush() {
        out.flush_to(&mut conn.socket)
            .map_err(|_| CloseReason::Io)?;
    }
    Ok(())
}

/// A running worker's handle.
pub struct WorkerHandle {
    stop: Arc<AtomicBool>,
    waker: Arc<Waker>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl WorkerHandle {
    /// Asks the worker to stop and waits for it.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Release);
        let _ = self.waker.wake();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Starts a worker thread serving `sockets` with `server`.
pub fn spawn(
    name: String,
    sockets: WorkerSockets,
    server: TurnServer,
    metrics: TurnMetrics,
) -> std::io::Result<WorkerHandle> {
    let poll = Poll::new()?;
    let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
    let stop = Arc::new(AtomicBool::new(false));
    let stop_flag = stop.clone();
    let mut worker = Worker::new(&poll, sockets, server, metrics)?;
    let thread = std::thread::Builder::new()
        .name(name)
        .spawn(move || worker.run(poll, &stop_flag))?;
    Ok(WorkerHandle {
        stop,
        waker,
        thread: Some(thread),
    })
}

struct Worker {
    server: TurnServer,
    relays: Relays,
    udp: Option<(UdpSocket, SocketAddr)>,
    listeners: Vec<StreamListener>,
    conns: Conns,
    /// Sockets left readable by a read budget, read again next round.
    backlog: Vec<Token>,
    registry: Registry,
    limits: StreamLimits,
    /// New stream connections per source.
    accept_rate: crate::rate_limit::RateLimiter,
    metrics: TurnMetrics,
    /// Stream reads.
    buf: Vec<u8>,
    /// UDP reads.
    datagrams: RecvBatch,
    outbox: Outbox,
}

impl Worker {
    fn new(
        poll: &Poll,
        sockets: WorkerSockets,
        server: TurnServer,
        metrics: TurnMetrics,
    ) -> std::io::Result<Self> {
        let registry = poll.registry().try_clone()?;
        let udp = match sockets.udp {
            Some(mut socket) => {
                registry.register(&mut socket, CLIENT, Interest::READABLE)?;
                let local = socket.local_addr()?;
                Some((socket, local))
            }
            None => None,
        };
        let mut listeners = sockets.streams;
        for (i, l) in listeners.iter_mut().enumerate() {
            registry.register(
                &mut l.listener,
                Token(FIRST_LISTENER + i),
                Interest::READABLE,
            )?;
        }
        Ok(Self {
            server,
            relays: Relays {
                registry: registry.try_clone()?,
                sockets: Vec::new(),
                free: Vec::new(),
                by_addr: HashMap::default(),
            },
            udp,
            listeners,
            conns: Conns {
                slots: Vec::new(),
                free: Vec::new(),
                by_tuple: HashMap::default(),
                dirty: Vec::new(),
                doomed: Vec::new(),
                dropped_full: metrics
                    .dropped
                    .with_label_values(&["client_write_queue_full"]),
            },
            backlog: Vec::new(),
            registry,
            accept_rate: crate::rate_limit::RateLimiter::new(
                sockets.limits.rate.clone(),
                Instant::now(),
            ),
            limits: sockets.limits,
            metrics,
            buf: vec![0u8; READ_CHUNK],
            datagrams: RecvBatch::new(),
            outbox: Outbox::default(),
        })
    }

    fn run(&mut self, mut poll: Poll, stop: &AtomicBool) {
        let mut events = Events::with_capacity(256);
        let mut next_sweep = Instant::now() + SWEEP_EVERY;
        while !stop.load(Ordering::Acquire) {
            let now = Instant::now();
            let timeout = if self.backlog.is_empty() {
                self.server
                    .poll_timeout()
                    .unwrap_or(next_sweep)
                    .min(next_sweep)
                    .saturating_duration_since(now)
            } else {
                Duration::ZERO
            };
            if let Err(e) = poll.poll(&mut events, Some(timeout)) {
                if e.kind() != ErrorKind::Interrupted {
                    debug!("poll: {e}");
                }
                continue;
            }
            for event in events.iter() {
                let token = event.token();
                if token.0 >= CONN_BASE && event.is_writable() {
                    self.flush(token.0 - CONN_BASE);
                }
                let readable = event.is_readable() || event.is_read_closed() || event.is_error();
                if readable || token.0 < CONN_BASE {
                    self.read(token);
                }
                self.close_doomed();
            }
            let mut backlog = std::mem::take(&mut self.backlog);
            backlog.sort_unstable();
            backlog.dedup();
            for token in backlog {
                self.read(token);
                self.close_doomed();
            }
            self.outbox
                .flush(self.udp.as_ref().map(|(s, _)| s), &self.relays);
            self.flush_dirty();
            let now = Instant::now();
            self.server.handle_timeout(now, &mut self.relays);
            if now >= next_sweep {
                self.sweep(now);
                next_sweep = now + SWEEP_EVERY;
            }
        }
        // Allocations end with the worker; close their connections too.
        let open: Vec<usize> = (0..self.conns.slots.len()).collect();
        for slot in open {
            self.conns.doom(slot, CloseReason::Shutdown);
        }
        self.close_doomed();
    }

    /// Reads what the socket of `token` has, within its budget.
    fn read(&mut self, token: Token) {
        match token {
            CLIENT => self.read_udp(),
            WAKER => {}
            Token(t) if t >= CONN_BASE => self.read_conn(t - CONN_BASE),
            Token(t) if t >= RELAY_BASE => self.read_relay(t - RELAY_BASE),
            Token(t) => self.accept(t - FIRST_LISTENER),
        }
    }

    fn read_udp(&mut self) {
        let Some((client, local)) = &self.udp else {
            return;
        };
        for _ in 0..CLIENT_BATCH_BUDGET {
            match self.datagrams.recv(client) {
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(_) => continue,
            }
            let now = Instant::now();
            for i in 0..self.datagrams.len() {
                let Some((data, from)) = self.datagrams.get(i) else {
                    continue;
                };
                let tuple = FiveTuple::new(from, *local, ClientTransport::Udp);
                let out = self
                    .server
                    .handle_client(now, tuple, data, &mut self.relays);
                deliver(
                    out,
                    Some(client),
                    &self.relays,
                    &mut self.conns,
                    &mut self.outbox,
                );
            }
            // A short batch emptied the queue; a datagram arriving later
            // raises a new (edge-triggered) event.
            if self.datagrams.len() < BATCH {
                self.outbox.flush_peers(&self.relays);
                return;
            }
        }
        self.outbox.flush_peers(&self.relays);
        // Budget spent: more may be waiting.
        self.backlog.push(CLIENT);
    }

    fn read_relay(&mut self, slot: usize) {
        let udp = self.udp.as_ref().map(|(s, _)| s);
        for _ in 0..BATCH_BUDGET {
            let Some(Some((relay, socket))) = self.relays.sockets.get(slot) else {
                return;
            };
            let relay = *relay;
            match self.datagrams.recv(socket) {
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(_) => continue,
            }
            let now = Instant::now();
            for i in 0..self.datagrams.len() {
                let Some((data, peer)) = self.datagrams.get(i) else {
                    continue;
                };
                let out = self.server.handle_peer(now, relay, peer, data);
                deliver(out, udp, &self.relays, &mut self.conns, &mut self.outbox);
            }
            if self.datagrams.len() < BATCH {
                return;
            }
        }
        self.backlog.push(Token(RELAY_BASE + slot));
    }

    fn accept(&mut self, index: usize) {
        let Some(l) = self.listeners.get(index) else {
            return;
        };
        loop {
            let (mut socket, from) = match l.listener.accept() {
                Ok(r) => r,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    // EMFILE and the like: the sweep retries every second.
                    debug!("accept: {e}");
                    return;
                }
            };
            let transport = if l.tls.is_some() {
                ClientTransport::Tls
            } else {
                ClientTransport::Tcp
            };
            // Before any state or TLS session exists for it.
            if !self.accept_rate.try_acquire(from.ip(), Instant::now()) {
                self.closed_metric(CloseReason::RateLimited);
                continue;
            }
            let open = self.limits.open.fetch_add(1, Ordering::AcqRel);
            if open >= self.limits.max_connections {
                self.limits.open.fetch_sub(1, Ordering::AcqRel);
                self.closed_metric(CloseReason::Limit);
                continue;
            }
            let _ = socket.set_nodelay(true);
            let Ok(local) = socket.local_addr() else {
                self.limits.open.fetch_sub(1, Ordering::AcqRel);
                continue;
            };
            let tuple = FiveTuple::new(from, local, transport);
            let tls = l.tls.as_ref().map(|t| t.get().config.clone());
            let core = match StreamConn::new(tuple, tls.as_ref(), Instant::now()) {
                Ok(c) => c,
                Err(e) => {
                    debug!("TLS session for {tuple}: {e}");
                    self.limits.open.fetch_sub(1, Ordering::AcqRel);
                    continue;
                }
            };
            let slot = self.conns.free.pop().unwrap_or(self.conns.slots.len());
            let token = Token(CONN_BASE + slot);
            if let Err(e) =
                self.registry
                    .register(&mut socket, token, Interest::READABLE | Interest::WRITABLE)
            {
                debug!("register {tuple}: {e}");
                self.conns.free.push(slot);
                self.limits.open.fetch_sub(1, Ordering::AcqRel);
                continue;
            }
            if slot == self.conns.slots.len() {
                self.conns.slots.push(None);
            }
            self.conns.slots[slot] = Some(Conn {
                socket,
                core,
                dirty: false,
                doomed: false,
                full_since: None,
            });
            // The kernel never has two live connections on one 4-tuple.
            if let Some(old) = self.conns.by_tuple.insert(tuple, slot) {
                self.conns.doom(old, CloseReason::Shutdown);
            }
            self.metrics
                .connections
                .with_label_values(&[transport.as_str()])
                .inc();
            debug!("accepted {tuple}");
        }
    }

    /// Reads what `slot`'s socket has (up to the budget) and handles
    /// every complete frame.
    fn read_conn(&mut self, slot: usize) {
        let udp = self.udp.as_ref().map(|(s, _)| s);
        let Some(conn) = self.conns.slots.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        if conn.doomed {
            return;
        }
        let Conn { socket, core, .. } = conn;
        let tuple = *core.tuple();
        let server = &mut self.server;
        let relays = &mut self.relays;
        let outbox = &mut self.outbox;
        let mut read = 0;
        let result = loop {
            if read >= READ_BUDGET {
                self.backlog.push(Token(CONN_BASE + slot));
                break Ok(());
            }
            let n = match socket.read(&mut self.buf) {
                Ok(0) => break Err(CloseReason::Eof),
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break Ok(()),
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => break Err(CloseReason::Io),
            };
            read += n;
            let Some(wire) = self.buf.get(..n) else {
                break Err(CloseReason::Io);
            };
            let now = Instant::now();
            let mut on_frame = |frame: &[u8], out: &mut Outbound| -> Result<(), CloseReason> {
                let Some(t) = server.handle_client(now, tuple, frame, relays) else {
                    return Ok(());
                };
                match t.to {
                    Destination::Client(to) if to == tuple => {
                        out.send(t.data)?;
                        if out.wants_flush() {
                            out.flush_to(socket).map_err(|_| CloseReason::Io)?;
                        }
                    }
                    Destination::Client(to) if to.transport == ClientTransport::Udp => {
                        outbox.queue_client(udp, to.client, t.data);
                    }
                    // The protocol layer answers requests on their own
                    // 5-tuple; nothing else reaches a client from here.
                    Destination::Client(to) => debug!("unroutable answer to {to}"),
                    Destination::Peer { relay, peer } => {
                        outbox.queue_peer(relays, relay, peer, t.data)
                    }
                }
                Ok(())
            };
            if let Err(reason) = core.receive(now, wire, &mut on_frame) {
                break Err(reason);
            }
        };
        let queued = !conn.core.outbound().pending().is_empty();
        match result {
            Ok(()) => {
                if queued && !conn.dirty {
                    conn.dirty = true;
                    self.conns.dirty.push(slot);
                }
            }
            Err(reason) => self.conns.doom(slot, reason),
        }
    }

    fn flush(&mut self, slot: usize) {
        let Some(conn) = self.conns.get(slot) else {
            return;
        };
        if conn.doomed {
            return;
        }
        if conn.core.outbound().flush_to(&mut conn.socket).is_err() {
            self.conns.doom(slot, CloseReason::Io);
        }
    }

    /// Writes what the round queued. What the socket does not take now is
    /// written on its next writable event.
    fn flush_dirty(&mut self) {
        let mut dirty = std::mem::take(&mut self.conns.dirty);
        for &slot in &dirty {
            if let Some(conn) = self.conns.get(slot) {
                conn.dirty = false;
            }
            self.flush(slot);
        }
        // `flush` queues nothing new: keep the vector's allocation.
        dirty.clear();
        self.conns.dirty = dirty;
        self.close_doomed();
    }

    /// Closes every doomed connection and frees its allocation at once.
    fn close_doomed(&mut self) {
        while let Some((slot, reason)) = self.conns.doomed.pop() {
            let Some(mut conn) = self.conns.slots.get_mut(slot).and_then(Option::take) else {
                continue;
            };
            let tuple = *conn.core.tuple();
            if self.conns.by_tuple.get(&tuple) == Some(&slot) {
                self.conns.by_tuple.remove(&tuple);
            }
            // Best effort: a TLS alert or close_notify, what was queued.
            conn.core.close();
            let _ = conn.core.outbound().flush_to(&mut conn.socket);
            let _ = self.registry.deregister(&mut conn.socket);
            drop(conn);
            self.server.client_closed(&tuple, &mut self.relays);
            self.conns.free.push(slot);
            self.limits.open.fetch_sub(1, Ordering::AcqRel);
            self.metrics
                .connections
                .with_label_values(&[tuple.transport.as_str()])
                .dec();
            self.closed_metric(reason);
            debug!("closed {tuple}: {}", reason.as_str());
        }
    }

    fn closed_metric(&self, reason: CloseReason) {
        self.metrics
            .connections_closed
            .with_label_values(&[reason.as_str()])
            .inc();
    }

    /// Timers of every connection, and a retry of the listeners (an
    /// `accept` that failed for lack of descriptors gets no new event).
    fn sweep(&mut self, now: Instant) {
        for slot in 0..self.conns.slots.len() {
            let Some(Some(conn)) = self.conns.slots.get(slot) else {
                continue;
            };
            let has_allocation = self.server.table().get(conn.core.tuple()).is_some();
            if let Some(reason) = conn
                .core
                .check_timers(now, &self.limits.timeouts, has_allocation)
            {
                self.conns.doom(slot, reason);
            }
        }
        self.close_doomed();
        for index in 0..self.listeners.len() {
            self.accept(index);
        }
    }
}

/// Queues one output of the protocol layer where it goes.
fn deliver(
    out: Option<Transmit<'_>>,
    udp: Option<&UdpSocket>,
    relays: &Relays,
    conns: &mut Conns,
    outbox: &mut Outbox,
) {
    let Some(t) = out else {
        return;
    };
    match t.to {
        Destination::Client(tuple) => match tuple.transport {
            ClientTransport::Udp => outbox.queue_client(udp, tuple.client, t.data),
            ClientTransport::Tcp | ClientTransport::Tls => conns.send(&tuple, t.data),
        },
        Destination::Peer { relay, peer } => outbox.queue_peer(relays, relay, peer, t.data),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A port-0 group claimed by its first socket still spreads clients
    /// over all its sockets (the kernel formed the SO_REUSEPORT group).
    #[test]
    fn claimed_port_zero_groups_share_the_load() {
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let first = udp_listener(any, true).unwrap();
        let port = first.local_addr().unwrap();
        let second = udp_listener(port, false).unwrap();
        // The claim kept the port to this group: a plain socket is refused.
        assert!(probe_free(port, Type::DGRAM).is_err());
        let clients: Vec<std::net::UdpSocket> = (0..32)
            .map(|_| std::net::UdpSocket::bind("127.0.0.1:0").unwrap())
            .collect();
        for c in &clients {
            c.send_to(b"x", port).unwrap();
        }
        let count = |s: &UdpSocket| {
            let mut buf = [0u8; 8];
            let mut n = 0;
            let deadline = Instant::now() + Duration::from_secs(1);
            while Instant::now() < deadline {
                match s.recv_from(&mut buf) {
                    Ok(_) => n += 1,
                    Err(_) if n > 0 => break,
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
            n
        };
        let (a, b) = (count(&first), count(&second));
        assert_eq!(a + b, 32);
        assert!(a > 0 && b > 0, "{a} / {b}");

        let first = tcp_listener(any, true).unwrap();
        let port = first.local_addr().unwrap();
        let second = tcp_listener(port, false).unwrap();
        let conns: Vec<std::net::TcpStream> = (0..32)
            .map(|_| std::net::TcpStream::connect(port).unwrap())
            .collect();
        let accepted = |l: &TcpListener| {
            let mut n = 0;
            while l.accept().is_ok() {
                n += 1;
            }
            n
        };
        std::thread::sleep(Duration::from_millis(50));
        let (a, b) = (accepted(&first), accepted(&second));
        assert_eq!(a + b, conns.len());
        assert!(a > 0 && b > 0, "{a} / {b}");
    }
}
