//! One QUIC endpoint per node: dials peers and accepts them, authenticates
//! both ways (`trunk/auth.rs`), then carries media datagrams and the control
//! stream. What arrives is handed out as [`TrunkEvent`]s.
//!
//! One connection per node pair, decided before either side uses it: a node
//! that is dialling a peer (or already linked to it) refuses the peer's own
//! dial with [`close_code::DUPLICATE`] unless the peer has the lower id, and
//! the refused dialler waits for the other connection instead. So when both
//! dial at once, only the lower id's connection is ever installed, and no
//! message is sent on a connection that is closed a moment later.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use prometheus::IntCounter;
use quinn::{ConnectionError, RecvStream, SendStream, VarInt};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::auth::{self, Role, EXPORTER_LABEL, EXPORTER_LEN};
use super::tls::{self, TlsSetupError, SERVER_NAME};
use super::wire::{Control, ControlDecoder, MediaDatagram, WireError, VERSION};
use crate::media::ids::NodeKey;
use crate::metrics::Metrics;

/// Application close codes on trunk connections.
pub mod close_code {
    /// The node is shutting down.
    pub const SHUTDOWN: u32 = 0;
    /// A side failed to prove the cluster secret.
    pub const AUTH_FAILED: u32 = 1;
    /// A malformed or unexpected control message.
    pub const PROTOCOL: u32 = 2;
    /// A second connection between the same two nodes.
    pub const DUPLICATE: u32 = 3;
    /// The peer is not the node that was dialled (or is this node).
    pub const WRONG_PEER: u32 = 4;
}

/// How long the QUIC handshake plus the hello exchange may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Events waiting for the node to take them; media beyond this is dropped.
const EVENT_QUEUE: usize = 8192;
/// Read size on the control stream.
const READ_CHUNK: usize = 16 * 1024;

/// The trunk's settings.
#[derive(Clone)]
pub struct TrunkConfig {
    /// This node's id.
    pub node_id: String,
    /// The cluster secret.
    pub secret: Vec<u8>,
    /// UDP address to bind.
    pub listen: SocketAddr,
}

/// Why a trunk operation failed.
#[derive(Debug, thiserror::Error)]
pub enum TrunkError {
    /// The UDP socket could not be bound.
    #[error("cannot bind the trunk on {addr}: {source}")]
    Bind {
        /// `cluster.trunk_listen`.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// TLS could not be configured.
    #[error(transparent)]
    Tls(#[from] TlsSetupError),
    /// The QUIC connection could not be made or was lost.
    #[error("trunk connection to {addr}: {reason}")]
    Connection {
        /// The peer's address.
        addr: SocketAddr,
        /// What happened.
        reason: String,
    },
    /// The peer closed the connection because our proof of the cluster
    /// secret was wrong.
    #[error("trunk peer at {0} refused this node: cluster secret mismatch")]
    Refused(SocketAddr),
    /// The peer's proof of the cluster secret was wrong.
    #[error("trunk peer at {0} failed authentication: cluster secret mismatch")]
    AuthFailed(SocketAddr),
    /// The peer kept another connection between the two nodes (both
    /// dialled at once); [`Trunk::connect`] then returns that one.
    #[error("trunk peer at {0} kept its own connection to this node")]
    Duplicate(SocketAddr),
    /// The peer is not the node expected.
    #[error("trunk peer at {addr} is {found:?}, expected {expected:?}")]
    WrongPeer {
        /// The peer's address.
        addr: SocketAddr,
        /// The node dialled.
        expected: String,
        /// The id it proved.
        found: String,
    },
    /// Handshake and hello did not finish in time.
    #[error("trunk peer at {0} did not complete the handshake in time")]
    Timeout(SocketAddr),
    /// A bad control message.
    #[error("trunk peer at {addr}: {source}")]
    Wire {
        /// The peer's address.
        addr: SocketAddr,
        /// What was wrong.
        source: WireError,
    },
}

/// Why a media datagram was not sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendMediaError {
    /// Larger than the path allows now (counted as `too_big`).
    #[error("datagram of {len} bytes exceeds the trunk's current limit of {max}")]
    TooBig {
        /// Encoded size.
        len: usize,
        /// Current limit.
        max: usize,
    },
    /// The connection is closed.
    #[error("trunk connection closed")]
    Closed,
}

/// What the trunk delivers to the node.
#[derive(Debug)]
pub enum TrunkEvent {
    /// A peer authenticated; [`Trunk::peer`] now returns its link.
    PeerUp {
        /// Its node id.
        peer: String,
        /// The new link (which replaces any earlier one to the peer).
        link: PeerLink,
    },
    /// A media datagram from a peer.
    Media {
        /// Its number (as [`PeerLink::key`]; no string per packet).
        peer: NodeKey,
        /// The datagram.
        datagram: MediaDatagram,
    },
    /// A control message from a peer, in the order sent.
    Control {
        /// Its node id.
        peer: String,
        /// The message.
        message: Control,
    },
    /// A peer's connection closed (and no newer one replaced it).
    PeerDown {
        /// Its node id.
        peer: String,
        /// The link that closed.
        link: PeerLink,
        /// Why.
        reason: String,
    },
}

/// A node's trunk endpoint. Cheap to clone.
#[derive(Clone)]
pub struct Trunk {
    inner: Arc<Inner>,
}

struct Inner {
    node_id: String,
    secret: Vec<u8>,
    endpoint: quinn::Endpoint,
    client: quinn::ClientConfig,
    peers: Mutex<Links>,
    /// Numbers given to node ids, kept across reconnections.
    keys: Mutex<HashMap<String, NodeKey>>,
    events: mpsc::Sender<TrunkEvent>,
    metrics: Metrics,
    /// Woken whenever a link is installed.
    installed: tokio::sync::Notify,
}

/// The links by peer id, and the connections being opened, under one lock
/// so that deciding between two connections to one peer is atomic.
#[derive(Default)]
struct Links {
    live: HashMap<String, PeerLink>,
    /// Peers this node is dialling (`true`) or accepting (`false`), since
    /// when: an entry older than a handshake may take is stale.
    opening: HashMap<String, (bool, Instant)>,
}

impl Links {
    fn open(&self, peer: &str) -> Option<&PeerLink> {
        self.live.get(peer).filter(|l| !l.is_closed())
    }

    /// Whether this node is dialling `peer` now (`Some(true)`) or
    /// accepting it (`Some(false)`).
    fn opening(&self, peer: &str) -> Option<bool> {
        let (dialling, since) = self.opening.get(peer)?;
        (since.elapsed() < HANDSHAKE_TIMEOUT).then_some(*dialling)
    }

    fn start_opening(&mut self, peer: &str, dialling: bool) {
        self.opening
            .insert(peer.to_string(), (dialling, Instant::now()));
    }

    fn count_open(&self) -> i64 {
        self.live.values().filter(|l| !l.is_closed()).count() as i64
    }
}

/// An authenticated connection to one peer node. Cheap to clone.
#[derive(Clone)]
pub struct PeerLink {
    peer: String,
    key: NodeKey,
    conn: quinn::Connection,
    dialer: String,
    control: Arc<tokio::sync::Mutex<SendStream>>,
    m: PeerMetrics,
}

impl std::fmt::Debug for PeerLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerLink")
            .field("peer", &self.peer)
            .field("addr", &self.conn.remote_address())
            .field("dialer", &self.dialer)
            .finish()
    }
}

#[derive(Clone)]
struct PeerMetrics {
    sent: IntCounter,
    sent_bytes: IntCounter,
    received: IntCounter,
    received_bytes: IntCounter,
    too_big: IntCounter,
    queue_full: IntCounter,
    malformed: IntCounter,
    receiver_busy: IntCounter,
    control_sent: IntCounter,
    control_received: IntCounter,
}

impl PeerMetrics {
    fn new(m: &Metrics, peer: &str) -> Self {
        let dropped = |reason| m.trunk_datagrams_dropped.with_label_values(&[peer, reason]);
        let control = |dir| m.trunk_control_messages.with_label_values(&[peer, dir]);
        Self {
            sent: m.trunk_datagrams_sent.with_label_values(&[peer]),
            sent_bytes: m.trunk_bytes_sent.with_label_values(&[peer]),
            received: m.trunk_datagrams_received.with_label_values(&[peer]),
            received_bytes: m.trunk_bytes_received.with_label_values(&[peer]),
            too_big: dropped("too_big"),
            queue_full: dropped("queue_full"),
            malformed: dropped("malformed"),
            receiver_busy: dropped("receiver_busy"),
            control_sent: control("sent"),
            control_received: control("received"),
        }
    }
}

impl PeerLink {
    /// The peer's node id.
    pub fn peer(&self) -> &str {
        &self.peer
    }

    /// The peer's number on this node.
    pub fn key(&self) -> NodeKey {
        self.key
    }

    /// Sends an already encoded media datagram (see [`Self::send_media`]),
    /// so one encoding can go to several peers.
    pub fn send_encoded(&self, datagram: Bytes) -> Result<(), SendMediaError> {
        let len = datagram.len();
        let max = self.conn.max_datagram_size().unwrap_or(0);
        if len > max {
            self.m.too_big.inc();
            return Err(SendMediaError::TooBig { len, max });
        }
        if self.conn.datagram_send_buffer_space() < len {
            self.m.queue_full.inc();
        }
        match self.conn.send_datagram(datagram) {
            Ok(()) => {
                self.m.sent.inc();
                self.m.sent_bytes.inc_by(len as u64);
                Ok(())
            }
            Err(quinn::SendDatagramError::TooLarge) => {
                self.m.too_big.inc();
                Err(SendMediaError::TooBig { len, max })
            }
            Err(_) => Err(SendMediaError::Closed),
        }
    }

    /// Sends one media datagram (unreliable, unordered). When quinn's send
    /// buffer is full it drops the oldest queued datagram to make room;
    /// that is counted as `queue_full`.
    pub fn send_media(&self, datagram: &MediaDatagram) -> Result<(), SendMediaError> {
        self.send_encoded(datagram.encode())
    }

    /// Sends a control message (reliable, in order).
    pub async fn send_control(&self, message: &Control) -> Result<(), TrunkError> {
        let addr = self.conn.remote_address();
        let frame = message
            .encode()
            .map_err(|source| TrunkError::Wire { addr, source })?;
        self.control
            .lock()
            .await
            .write_all(&frame)
            .await
            .map_err(|e| TrunkError::Connection {
                addr,
                reason: e.to_string(),
            })?;
        self.m.control_sent.inc();
        Ok(())
    }

    /// QUIC's current round-trip estimate.
    pub fn rtt(&self) -> Duration {
        self.conn.rtt()
    }

    /// The largest media datagram (encoded) the path takes now.
    pub fn max_datagram_size(&self) -> Option<usize> {
        self.conn.max_datagram_size()
    }

    /// Closes the connection (the peer is treated as gone; both sides
    /// report it down).
    pub fn close(&self) {
        self.conn
            .close(VarInt::from_u32(close_code::SHUTDOWN), b"peer gone");
    }

    /// Whether both are the same connection (not only the same peer).
    pub fn same_connection(&self, other: &PeerLink) -> bool {
        self.conn.stable_id() == other.conn.stable_id()
    }

    /// Whether the connection is closed.
    pub fn is_closed(&self) -> bool {
        self.conn.close_reason().is_some()
    }
}

impl Trunk {
    /// Binds the endpoint and starts accepting peers. Events (media,
    /// control, peers up and down) arrive on the returned receiver, which
    /// must be drained: media that finds it full is dropped (and counted),
    /// control waits.
    pub fn bind(
        config: TrunkConfig,
        metrics: Metrics,
    ) -> Result<(Trunk, mpsc::Receiver<TrunkEvent>), TrunkError> {
        let endpoint =
            quinn::Endpoint::server(tls::server_config()?, config.listen).map_err(|source| {
                TrunkError::Bind {
                    addr: config.listen,
                    source,
                }
            })?;
        let (events, rx) = mpsc::channel(EVENT_QUEUE);
        let inner = Arc::new(Inner {
            node_id: config.node_id,
            secret: config.secret,
            endpoint,
            client: tls::client_config()?,
            peers: Mutex::default(),
            keys: Mutex::new(HashMap::new()),
            events,
            metrics,
            installed: tokio::sync::Notify::new(),
        });
        tokio::spawn(accept_loop(inner.clone()));
        Ok((Trunk { inner }, rx))
    }

    /// The bound UDP address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.inner.endpoint.local_addr()
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        &self.inner.node_id
    }

    /// The link to `peer`, if connected.
    pub fn peer(&self, peer: &str) -> Option<PeerLink> {
        self.inner.lock_peers().open(peer).cloned()
    }

    /// Ids of the connected peers.
    pub fn peers(&self) -> Vec<String> {
        let peers = self.inner.lock_peers();
        let mut ids: Vec<_> = peers
            .live
            .values()
            .filter(|l| !l.is_closed())
            .map(|l| l.peer.clone())
            .collect();
        ids.sort();
        ids
    }

    /// Dials `peer` at `addr` and authenticates, or returns the existing link.
    pub async fn connect(&self, peer: &str, addr: SocketAddr) -> Result<PeerLink, TrunkError> {
        if peer == self.inner.node_id {
            return Err(TrunkError::WrongPeer {
                addr,
                expected: peer.into(),
                found: "this node".into(),
            });
        }
        let deadline = tokio::time::Instant::now() + HANDSHAKE_TIMEOUT;
        let opening = {
            let mut links = self.inner.lock_peers();
            if let Some(link) = links.open(peer) {
                return Ok(link.clone());
            }
            let opening = links.opening(peer).is_some();
            if !opening {
                links.start_opening(peer, true);
            }
            opening
        };
        if opening {
            return self.await_link(peer, addr, deadline).await;
        }
        let inner = &self.inner;
        let dial = async {
            let connecting = inner
                .endpoint
                .connect_with(inner.client.clone(), addr, SERVER_NAME)
                .map_err(|e| TrunkError::Connection {
                    addr,
                    reason: e.to_string(),
                })?;
            let conn = connecting.await.map_err(|e| lost(addr, e))?;
            let (mut send, mut recv) = conn.open_bi().await.map_err(|e| lost(addr, e))?;
            let exporter = exporter(&conn)?;
            let hello = Control::Hello {
                version: VERSION,
                node_id: inner.node_id.clone(),
                proof: auth::proof(&inner.secret, Role::Dialer, &inner.node_id, &exporter),
            };
            write_frame(&mut send, &hello, addr).await?;
            let mut decoder = ControlDecoder::new();
            let their = read_hello(&conn, &mut recv, &mut decoder).await?;
            let (id, proof) = their;
            check_proof(inner, &conn, addr, Role::Acceptor, &id, &exporter, &proof)?;
            if id != peer {
                conn.close(
                    VarInt::from_u32(close_code::WRONG_PEER),
                    b"unexpected node id",
                );
                return Err(TrunkError::WrongPeer {
                    addr,
                    expected: peer.into(),
                    found: id,
                });
            }
            Ok((conn, send, recv, decoder))
        };
        let dialled = tokio::time::timeout_at(deadline, dial).await;
        if !matches!(dialled, Ok(Ok(_))) {
            inner.stop_opening(peer, true);
        }
        let (conn, send, recv, decoder) = match dialled {
            Err(_) => return Err(TrunkError::Timeout(addr)),
            Ok(Err(TrunkError::Duplicate(_))) => {
                return self.await_link(peer, addr, deadline).await
            }
            Ok(r) => r?,
        };
        let dialer = inner.node_id.clone();
        Ok(install(inner, peer.to_string(), dialer, conn, send, recv, decoder).await)
    }

    /// Another connection to `peer` is being opened (the peer refused our
    /// dial for its own, or that one is being accepted here). Waits for it.
    async fn await_link(
        &self,
        peer: &str,
        addr: SocketAddr,
        deadline: tokio::time::Instant,
    ) -> Result<PeerLink, TrunkError> {
        loop {
            let installed = self.inner.installed.notified();
            if let Some(link) = self.peer(peer) {
                return Ok(link);
            }
            if tokio::time::timeout_at(deadline, installed).await.is_err() {
                return Err(TrunkError::Duplicate(addr));
            }
        }
    }

    /// Closes every connection and the endpoint.
    pub async fn close(&self) {
        self.inner.endpoint.close(
            VarInt::from_u32(close_code::SHUTDOWN),
            b"node shutting down",
        );
        let _ = tokio::time::timeout(Duration::from_secs(1), self.inner.endpoint.wait_idle()).await;
    }
}

impl Inner {
    fn lock_peers(&self) -> std::sync::MutexGuard<'_, Links> {
        // Every update is one insert or remove: a poisoned map is consistent.
        self.peers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Ends this node's dial (`dialling`) or acceptance of `peer` that did
    /// not install a link.
    fn stop_opening(&self, peer: &str, dialling: bool) {
        let mut links = self.lock_peers();
        if links.opening(peer) == Some(dialling) {
            links.opening.remove(peer);
        }
    }

    /// Whether a dial from `peer` may go on, deciding between it and a
    /// connection this node has or is dialling. A dial from the lower id
    /// wins over ours (both sides decide the same way), and so does a peer
    /// dialling again on a link it dialled itself (it lost that one). If it
    /// goes on, the peer is marked as being accepted.
    fn admit(&self, peer: &str) -> bool {
        let mut links = self.lock_peers();
        let lower = peer < self.node_id.as_str();
        let admit = match (links.open(peer), links.opening(peer)) {
            (Some(link), _) => lower || link.dialer == peer,
            (None, Some(dialling)) => lower || !dialling,
            (None, None) => true,
        };
        if admit && links.opening(peer).is_none() {
            links.start_opening(peer, false);
        }
        admit
    }
}

/// Checks the peer's proof of the cluster secret for `role`; a peer that
/// fails is counted, logged and closed with `AUTH_FAILED`.
fn check_proof(
    inner: &Inner,
    conn: &quinn::Connection,
    addr: SocketAddr,
    role: Role,
    id: &str,
    exporter: &[u8],
    proof: &str,
) -> Result<(), TrunkError> {
    if auth::verify(&inner.secret, role, id, exporter, proof) {
        return Ok(());
    }
    inner.metrics.trunk_auth_failures.inc();
    warn!(%addr, claimed = %id, "trunk peer failed authentication (cluster secret mismatch): closing");
    conn.close(
        VarInt::from_u32(close_code::AUTH_FAILED),
        b"authentication failed",
    );
    Err(TrunkError::AuthFailed(addr))
}

fn lost(addr: SocketAddr, e: ConnectionError) -> TrunkError {
    match e {
        ConnectionError::ApplicationClosed(c)
            if c.error_code == VarInt::from_u32(close_code::AUTH_FAILED) =>
        {
            TrunkError::Refused(addr)
        }
        ConnectionError::ApplicationClosed(c)
            if c.error_code == VarInt::from_u32(close_code::DUPLICATE) =>
        {
            TrunkError::Duplicate(addr)
        }
        e => TrunkError::Connection {
            addr,
            reason: e.to_string(),
        },
    }
}

fn exporter(conn: &quinn::Connection) -> Result<[u8; EXPORTER_LEN], TrunkError> {
    let mut out = [0u8; EXPORTER_LEN];
    conn.export_keying_material(&mut out, EXPORTER_LABEL, b"")
        .map_err(|_| TrunkError::Connection {
            addr: conn.remote_address(),
            reason: "TLS exporter unavailable".into(),
        })?;
    Ok(out)
}

async fn write_frame(
    send: &mut SendStream,
    message: &Control,
    addr: SocketAddr,
) -> Result<(), TrunkError> {
    let frame = message
        .encode()
        .map_err(|source| TrunkError::Wire { addr, source })?;
    send.write_all(&frame).await.map_err(|e| match e {
        quinn::WriteError::ConnectionLost(e) => lost(addr, e),
        e => TrunkError::Connection {
            addr,
            reason: e.to_string(),
        },
    })
}

/// Reads the peer's hello: its node id and proof. Anything else first is a
/// protocol error.
async fn read_hello(
    conn: &quinn::Connection,
    recv: &mut RecvStream,
    decoder: &mut ControlDecoder,
) -> Result<(String, String), TrunkError> {
    let addr = conn.remote_address();
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        match decoder.next_message() {
            Ok(Some(Control::Hello { node_id, proof, .. })) => return Ok((node_id, proof)),
            Ok(Some(_)) => {
                conn.close(VarInt::from_u32(close_code::PROTOCOL), b"expected hello");
                return Err(TrunkError::Wire {
                    addr,
                    source: WireError::BadControl("first message must be hello".into()),
                });
            }
            Err(source) => {
                conn.close(VarInt::from_u32(close_code::PROTOCOL), b"bad hello");
                return Err(TrunkError::Wire { addr, source });
            }
            Ok(None) => {}
        }
        match recv.read(&mut buf).await {
            Ok(Some(n)) => decoder.push(&buf[..n]),
            Ok(None) => {
                return Err(TrunkError::Connection {
                    addr,
                    reason: "control stream ended before hello".into(),
                })
            }
            Err(quinn::ReadError::ConnectionLost(e)) => return Err(lost(addr, e)),
            Err(e) => {
                return Err(TrunkError::Connection {
                    addr,
                    reason: e.to_string(),
                })
            }
        }
    }
}

async fn accept_loop(inner: Arc<Inner>) {
    while let Some(incoming) = inner.endpoint.accept().await {
        let inner = inner.clone();
        tokio::spawn(async move {
            let addr = incoming.remote_address();
            // Only the handshake is timed: once `install` starts, the link
            // must be registered together with its readers.
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, accept_one(&inner, incoming)).await {
                Ok(Ok((peer, conn, send, recv, decoder))) => {
                    debug!(%addr, %peer, "trunk peer accepted");
                    install(&inner, peer.clone(), peer, conn, send, recv, decoder).await;
                }
                Ok(Err(TrunkError::Duplicate(_))) => {}
                Ok(Err(e)) => warn!("trunk: {e}"),
                Err(_) => warn!("trunk: {}", TrunkError::Timeout(addr)),
            }
        });
    }
}

/// An authenticated incoming connection: the peer's id, the connection,
/// its control stream and what was read past the hello.
type Accepted = (
    String,
    quinn::Connection,
    SendStream,
    RecvStream,
    ControlDecoder,
);

async fn accept_one(inner: &Arc<Inner>, incoming: quinn::Incoming) -> Result<Accepted, TrunkError> {
    let addr = incoming.remote_address();
    let conn = incoming.await.map_err(|e| lost(addr, e))?;
    let (mut send, mut recv) = conn.accept_bi().await.map_err(|e| lost(addr, e))?;
    let exporter = exporter(&conn)?;
    let mut decoder = ControlDecoder::new();
    let (id, proof) = read_hello(&conn, &mut recv, &mut decoder).await?;
    check_proof(inner, &conn, addr, Role::Dialer, &id, &exporter, &proof)?;
    if id == inner.node_id {
        conn.close(VarInt::from_u32(close_code::WRONG_PEER), b"same node id");
        return Err(TrunkError::WrongPeer {
            addr,
            expected: "another node".into(),
            found: id,
        });
    }
    if !inner.admit(&id) {
        debug!(%addr, peer = %id, "trunk: refusing a second connection from a peer");
        conn.close(VarInt::from_u32(close_code::DUPLICATE), b"duplicate trunk");
        return Err(TrunkError::Duplicate(addr));
    }
    let hello = Control::Hello {
        version: VERSION,
        node_id: inner.node_id.clone(),
        proof: auth::proof(&inner.secret, Role::Acceptor, &inner.node_id, &exporter),
    };
    if let Err(e) = write_frame(&mut send, &hello, addr).await {
        inner.stop_opening(&id, false);
        return Err(e);
    }
    Ok((id, conn, send, recv, decoder))
}

/// Registers an authenticated connection, replacing an older one to the
/// same peer (which the peer has given up: see [`Inner::admit`]), and starts
/// its readers.
async fn install(
    inner: &Arc<Inner>,
    peer: String,
    dialer: String,
    conn: quinn::Connection,
    send: SendStream,
    recv: RecvStream,
    decoder: ControlDecoder,
) -> PeerLink {
    let key = {
        let mut keys = inner.keys.lock().unwrap_or_else(|e| e.into_inner());
        let next = NodeKey(keys.len() as u16);
        *keys.entry(peer.clone()).or_insert(next)
    };
    let link = PeerLink {
        peer: peer.clone(),
        key,
        conn: conn.clone(),
        dialer,
        control: Arc::new(tokio::sync::Mutex::new(send)),
        m: PeerMetrics::new(&inner.metrics, &peer),
    };
    {
        let mut links = inner.lock_peers();
        links.opening.remove(&peer);
        if let Some(old) = links.live.insert(peer.clone(), link.clone()) {
            old.conn
                .close(VarInt::from_u32(close_code::DUPLICATE), b"replaced trunk");
        }
        inner.metrics.trunk_peers.set(links.count_open());
    }
    inner.installed.notify_waiters();
    info!(peer = %peer, addr = %conn.remote_address(), "trunk peer up");
    let _ = inner
        .events
        .send(TrunkEvent::PeerUp {
            peer: peer.clone(),
            link: link.clone(),
        })
        .await;
    tokio::spawn(read_datagrams(inner.clone(), link.clone()));
    tokio::spawn(read_control(inner.clone(), link.clone(), recv, decoder));
    tokio::spawn(watch(inner.clone(), link.clone()));
    link
}

async fn read_datagrams(inner: Arc<Inner>, link: PeerLink) {
    while let Ok(bytes) = link.conn.read_datagram().await {
        match MediaDatagram::decode(&bytes) {
            Ok(datagram) => {
                link.m.received.inc();
                link.m.received_bytes.inc_by(bytes.len() as u64);
                let event = TrunkEvent::Media {
                    peer: link.key,
                    datagram,
                };
                match inner.events.try_send(event) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(_)) => link.m.receiver_busy.inc(),
                    Err(mpsc::error::TrySendError::Closed(_)) => return,
                }
            }
            Err(e) => {
                link.m.malformed.inc();
                debug!(peer = %link.peer, "trunk datagram dropped: {e}");
            }
        }
    }
}

async fn read_control(
    inner: Arc<Inner>,
    link: PeerLink,
    mut recv: RecvStream,
    mut decoder: ControlDecoder,
) {
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        loop {
            match decoder.next_message() {
                Ok(Some(Control::Hello { .. })) => {
                    return protocol_error(&link, "second hello");
                }
                Ok(Some(message)) => {
                    link.m.control_received.inc();
                    let event = TrunkEvent::Control {
                        peer: link.peer.clone(),
                        message,
                    };
                    if inner.events.send(event).await.is_err() {
                        return;
                    }
                }
                Ok(None) => break,
                Err(e) => return protocol_error(&link, &e.to_string()),
            }
        }
        match recv.read(&mut buf).await {
            Ok(Some(n)) => decoder.push(&buf[..n]),
            Ok(None) => return protocol_error(&link, "control stream ended"),
            Err(_) => return,
        }
    }
}

fn protocol_error(link: &PeerLink, why: &str) {
    warn!(peer = %link.peer, "trunk protocol error, closing: {why}");
    link.conn
        .close(VarInt::from_u32(close_code::PROTOCOL), why.as_bytes());
}

/// Updates the RTT gauge every second until the connection closes, then
/// reports the peer down (unless a newer connection replaced this one).
async fn watch(inner: Arc<Inner>, link: PeerLink) {
    let rtt = inner
        .metrics
        .trunk_rtt_seconds
        .with_label_values(&[link.peer.as_str()]);
    let mut every = tokio::time::interval(Duration::from_secs(1));
    let reason = loop {
        tokio::select! {
            _ = every.tick() => rtt.set(link.conn.rtt().as_secs_f64()),
            e = link.conn.closed() => break e,
        }
    };
    let current = {
        let mut links = inner.lock_peers();
        let current = links
            .live
            .get(&link.peer)
            .is_some_and(|l| l.same_connection(&link));
        if current {
            links.live.remove(&link.peer);
        }
        inner.metrics.trunk_peers.set(links.count_open());
        current
    };
    if current {
        let _ = inner
            .metrics
            .trunk_rtt_seconds
            .remove_label_values(&[link.peer.as_str()]);
        info!(peer = %link.peer, "trunk peer down: {reason}");
        let _ = inner
            .events
            .send(TrunkEvent::PeerDown {
                peer: link.peer.clone(),
                link: link.clone(),
                reason: reason.to_string(),
            })
            .await;
    }
}
