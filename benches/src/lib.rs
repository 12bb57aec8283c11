//! An in-memory harness around the SFU's sans-IO [`Engine`] for benchmarks.
//!
//! Every simulated client is a full-ICE str0m [`Rtc`] in RTP mode with a
//! made-up loopback address. Datagrams move between the clients and the
//! engine in memory: whatever the engine transmits is handed to the client
//! whose address is the destination, whatever a client transmits is fed to
//! [`Engine::handle_receive`] with the client's address as the source. Time
//! is injected (a simulated [`Instant`] that only moves when the harness
//! advances it), so runs are deterministic up to the random ids and keys.
//!
//! [`FanoutHarness`] sets up one publisher with one VP8 video track and `N`
//! subscribers that receive it, then measures the engine's fan-out path:
//! one SRTP-protected publisher packet in, `N` SRTP-protected packets out.
//! Outside the timed region it checks that every subscriber decrypts every
//! packet with a byte-identical payload, and keeps the session healthy by
//! letting simulated time pass and RTCP / STUN flow both ways.

#![deny(missing_docs)]

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sfu::auth::TokenAuthority;
use sfu::config::MediaConfig;
use sfu::media::engine::{Engine, EngineConfig, Signal};
use sfu::media::peer::LocalAddrs;
use sfu::metrics::Metrics;
use sfu::room::ConnId;
use sfu::signal::protocol::{ClientMessage, ServerMessage, TrackLabel};
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::format::Codec;
use str0m::media::{Direction, MediaKind, Mid, Pt};
use str0m::net::{Protocol, Receive, Transmit};
use str0m::rtp::RtpWrite;
use str0m::{Candidate, Event, Input, Output, Rtc};

/// The room every simulated client joins.
const ROOM: &str = "bench";

/// Upper bound on exchange rounds at one instant before the harness gives up.
const MAX_PUMP_ROUNDS: usize = 10_000;

/// Why the harness could not set up or a check failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HarnessError(pub String);

impl fmt::Display for HarnessError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for HarnessError {}

fn err<T>(msg: impl Into<String>) -> Result<T, HarnessError> {
    Err(HarnessError(msg.into()))
}

/// Shape of the simulated session.
#[derive(Debug, Clone)]
pub struct FanoutConfig {
    /// Number of subscribers receiving the publisher's one video track.
    pub subscribers: usize,
    /// Packets per video frame: the engine sees them at the same instant.
    pub packets_per_frame: usize,
    /// RTP payload bytes per packet.
    pub payload_len: usize,
    /// Simulated time between frames (33 ms ≈ 30 fps).
    pub frame_interval: Duration,
    /// How the timed region calls `handle_timeout`: after every packet
    /// (the shell's loop when datagrams arrive one at a time), or once per
    /// frame after all its packets (the shell's loop under load, when it
    /// takes up to 33 queued datagrams before flushing).
    pub timeouts: TimeoutPolicy,
}

/// When the timed region lets the engine run its due timers, which is when
/// str0m's pacer releases the packets `write_rtp` queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeoutPolicy {
    /// `handle_timeout` after each incoming packet.
    PerPacket,
    /// `handle_timeout` once after each frame's packets.
    PerFrame,
}

impl FanoutConfig {
    /// `subscribers` receivers of 8 × 1000-byte packets per frame at 30 fps
    /// (≈ 1.9 Mbit/s of payload).
    pub fn new(subscribers: usize) -> Self {
        Self {
            subscribers,
            packets_per_frame: 8,
            payload_len: 1000,
            frame_interval: Duration::from_millis(33),
            timeouts: TimeoutPolicy::PerPacket,
        }
    }

    /// The same with `timeouts` set.
    pub fn with_timeouts(mut self, timeouts: TimeoutPolicy) -> Self {
        self.timeouts = timeouts;
        self
    }
}

/// Running totals of a harness, including every warm-up run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FanoutStats {
    /// Publisher RTP packets fed to the engine in timed regions.
    pub incoming: u64,
    /// SRTP-protected RTP datagrams the engine produced for subscribers in
    /// timed regions (always `incoming × subscribers`, or the run fails).
    pub forwarded: u64,
    /// CPU time of this thread inside timed regions (what criterion gets),
    /// less the cost of reading the clock.
    pub cpu: Duration,
    /// Wall-clock time inside timed regions (includes any preemption).
    pub wall: Duration,
    /// Engine wall-clock time spent outside timed regions between frames:
    /// its timers, RTCP and STUN from the clients (housekeeping of the same
    /// session).
    pub housekeeping: Duration,
    /// (subscriber, packet) pairs whose decrypted payload was compared
    /// byte for byte with what the publisher sent.
    pub verified: u64,
}

impl FanoutStats {
    /// Mean CPU time in the timed region per forwarded packet.
    pub fn per_forwarded(&self) -> Duration {
        per(self.cpu, self.forwarded)
    }

    /// Mean wall-clock time in the timed region per forwarded packet.
    pub fn wall_per_forwarded(&self) -> Duration {
        per(self.wall, self.forwarded)
    }

    /// Mean housekeeping time per forwarded packet.
    pub fn housekeeping_per_forwarded(&self) -> Duration {
        per(self.housekeeping, self.forwarded)
    }
}

/// CPU time consumed by the calling thread so far.
#[cfg(unix)]
pub fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the clock id is a constant
    // every Unix the crate builds on supports.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID) failed");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// CPU time consumed by the calling thread so far (elsewhere: wall time
/// since first use, which includes preemption).
#[cfg(not(unix))]
pub fn thread_cpu_time() -> Duration {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    START.get_or_init(Instant::now).elapsed()
}

/// What one back-to-back pair of [`thread_cpu_time`] calls measures: the
/// clock's own cost inside a timed region (a system call in some VMs).
fn clock_overhead() -> Duration {
    (0..200)
        .map(|_| {
            let a = thread_cpu_time();
            let b = thread_cpu_time();
            b.saturating_sub(a)
        })
        .min()
        .unwrap_or_default()
}

fn per(total: Duration, count: u64) -> Duration {
    if count == 0 {
        return Duration::ZERO;
    }
    Duration::from_secs_f64(total.as_secs_f64() / count as f64)
}

/// One simulated browser: a full-ICE str0m peer in RTP mode.
struct Client {
    rtc: Rtc,
    addr: SocketAddr,
    /// When the `Rtc` wants `Input::Timeout` next.
    timeout: Instant,
    /// Needs `poll_output` draining.
    dirty: bool,
    connected: bool,
    /// Mids of `MediaAdded` events.
    media: Vec<Mid>,
    /// Publisher: the offer in flight.
    pending: Option<SdpPendingOffer>,
    /// Subscriber: decrypted RTP packets (payload, marker, sequence number).
    received: Vec<(Arc<[u8]>, bool, u64)>,
    /// Last sequence number verified (continuity check across frames).
    last_seq: Option<u64>,
}

impl Client {
    fn new(addr: SocketAddr, now: Instant) -> Result<Self, HarnessError> {
        let mut rtc = Rtc::builder().set_rtp_mode(true).build(now);
        let candidate = Candidate::host(addr, "udp")
            .map_err(|e| HarnessError(format!("host candidate {addr}: {e}")))?;
        rtc.add_local_candidate(candidate);
        Ok(Self {
            rtc,
            addr,
            timeout: now,
            dirty: true,
            connected: false,
            media: Vec::new(),
            pending: None,
            received: Vec::new(),
            last_seq: None,
        })
    }

    /// Drains `poll_output`: transmits go to `out`, events are recorded.
    fn drain(&mut self, out: &mut Vec<Transmit>) -> Result<(), HarnessError> {
        self.dirty = false;
        loop {
            match self.rtc.poll_output() {
                Ok(Output::Timeout(t)) => {
                    self.timeout = t;
                    return Ok(());
                }
                Ok(Output::Transmit(t)) => out.push(t),
                Ok(Output::Event(e)) => match e {
                    Event::Connected => self.connected = true,
                    Event::MediaAdded(m) => self.media.push(m.mid),
                    Event::RtpPacket(p) => {
                        self.received.push((p.payload, p.header.marker, *p.seq_no));
                    }
                    _ => {}
                },
                Err(e) => return err(format!("client {}: poll_output: {e}", self.addr)),
            }
        }
    }

    fn receive(
        &mut self,
        now: Instant,
        source: SocketAddr,
        data: &[u8],
    ) -> Result<(), HarnessError> {
        let receive = Receive::new(Protocol::Udp, source, self.addr, data).map_err(|e| {
            HarnessError(format!("client {}: unparseable datagram: {e}", self.addr))
        })?;
        self.rtc
            .handle_input(Input::Receive(now, receive))
            .map_err(|e| HarnessError(format!("client {}: handle_input: {e}", self.addr)))?;
        self.dirty = true;
        Ok(())
    }
}

/// Whether a datagram is RTP (not STUN, DTLS or RTCP), per RFC 7983 / 5761.
pub fn is_rtp(datagram: &[u8]) -> bool {
    datagram.len() >= 12 && (128..192).contains(&datagram[0]) && {
        let pt = datagram[1] & 0x7f;
        !(64..96).contains(&pt)
    }
}

/// The simulated address of client `index`: 127.0.x.y, one port each.
fn client_addr(index: usize) -> SocketAddr {
    let host = index + 2;
    let ip = Ipv4Addr::new(127, 0, (host / 250) as u8, (host % 250) as u8 + 1);
    SocketAddr::new(IpAddr::V4(ip), 40_000 + (index % 20_000) as u16)
}

/// One publisher → `N` subscribers through the engine, all in memory.
pub struct FanoutHarness {
    config: FanoutConfig,
    engine: Engine,
    metrics: Metrics,
    now: Instant,
    /// Index 0 is the publisher, 1..=N the subscribers; conn id = index.
    clients: Vec<Client>,
    by_addr: HashMap<SocketAddr, usize>,
    /// Publisher's video m-line and its VP8 payload type.
    mid: Mid,
    pt: Pt,
    next_seq: u64,
    next_payload: u64,
    rtp_time: u32,
    /// Reused buffers.
    to_engine: Vec<Transmit>,
    out: Vec<Transmit>,
    stats: FanoutStats,
    /// Whether `pump` adds the engine's time to `stats.housekeeping`.
    steady: bool,
    /// Subtracted from each timed region's CPU time.
    clock_overhead: Duration,
}

impl FanoutHarness {
    /// Joins a publisher and `config.subscribers` subscribers, negotiates
    /// and connects all of them, and checks that one frame reaches every
    /// subscriber intact.
    pub fn new(config: FanoutConfig) -> Result<Self, HarnessError> {
        if config.subscribers == 0 || config.packets_per_frame == 0 {
            return err("need at least one subscriber and one packet per frame");
        }
        let now = Instant::now();
        let server: SocketAddr = ([127, 0, 0, 1], 7882).into();
        let metrics = Metrics::new();
        let engine = Engine::new(
            EngineConfig {
                media: MediaConfig {
                    udp_listen: server,
                    ice_tcp: false,
                    ..MediaConfig::default()
                },
                local: LocalAddrs {
                    udp: vec![server],
                    tcp: vec![],
                },
                ice_servers: vec![],
                turn: None,
                max_relay_bytes: 64 * 1024,
                shard: 0,
            },
            metrics.clone(),
        );
        let mut clients = Vec::with_capacity(config.subscribers + 1);
        let mut by_addr = HashMap::new();
        for index in 0..=config.subscribers {
            let addr = client_addr(index);
            clients.push(Client::new(addr, now)?);
            by_addr.insert(addr, index);
        }
        let mut h = Self {
            config,
            engine,
            metrics,
            now,
            clients,
            by_addr,
            mid: Mid::from("0"),
            pt: Pt::from(0),
            next_seq: 1,
            next_payload: 0,
            rtp_time: 0,
            to_engine: Vec::new(),
            out: Vec::new(),
            stats: FanoutStats::default(),
            steady: false,
            clock_overhead: clock_overhead(),
        };
        h.connect()?;
        h.out
            .reserve(h.config.packets_per_frame * h.config.subscribers * 2);
        // One frame end to end before anything is measured.
        h.run_timed(h.config.packets_per_frame as u64)?;
        h.stats = FanoutStats::default();
        h.steady = true;
        Ok(h)
    }

    /// Number of subscribers.
    pub fn subscribers(&self) -> usize {
        self.config.subscribers
    }

    /// Totals so far (since setup finished).
    pub fn stats(&self) -> &FanoutStats {
        &self.stats
    }

    /// The engine, e.g. to switch on its test-only payload corruption.
    pub fn engine_mut(&mut self) -> &mut Engine {
        &mut self.engine
    }

    /// The engine's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Feeds `packets` publisher packets, frame by frame, through the
    /// engine and returns the CPU time this thread spent in the engine's
    /// fan-out path (less the clock's own cost).
    ///
    /// Timed, as the shell's event loop does it: per packet
    /// `handle_receive` and drain `poll_transmit`; then (after every packet
    /// or after the frame's last, see [`TimeoutPolicy`]) `poll_timeout`,
    /// and when due — it is: str0m's pacer sends the packets queued by
    /// `write_rtp` only on the next timeout — `handle_timeout` and drain
    /// `poll_transmit` again. The transmits are moved into a buffer that is
    /// processed after the clock stops.
    ///
    /// Not timed: the publisher encrypting the packets; counting the
    /// outgoing RTP datagrams (must be `packets × N`); handing them to the
    /// subscriber clients, which decrypt them and must see every payload
    /// byte-identical, in order, with contiguous sequence numbers; then
    /// advancing simulated time by one frame interval and exchanging
    /// timers, RTCP and STUN until quiet.
    pub fn run_timed(&mut self, packets: u64) -> Result<Duration, HarnessError> {
        let mut cpu = Duration::ZERO;
        let mut wall = Duration::ZERO;
        let mut left = packets;
        let publisher = self.clients[0].addr;
        while left > 0 {
            let count = left.min(self.config.packets_per_frame as u64) as usize;
            left -= count as u64;
            let (batch, expected) = self.publish_frame(count)?;
            let now = self.now;
            self.out.clear();

            let per_packet = self.config.timeouts == TimeoutPolicy::PerPacket;
            let wall_start = Instant::now();
            let cpu_start = thread_cpu_time();
            for (i, datagram) in batch.iter().enumerate() {
                self.engine
                    .handle_receive(now, Protocol::Udp, publisher, datagram);
                while let Some(t) = self.engine.poll_transmit() {
                    self.out.push(t);
                }
                let last = i + 1 == batch.len();
                if (per_packet || last) && self.engine.poll_timeout().is_some_and(|t| t <= now) {
                    self.engine.handle_timeout(now);
                    while let Some(t) = self.engine.poll_transmit() {
                        self.out.push(t);
                    }
                }
            }
            cpu += thread_cpu_time()
                .saturating_sub(cpu_start)
                .saturating_sub(self.clock_overhead);
            wall += wall_start.elapsed();

            let forwarded = self.out.iter().filter(|t| is_rtp(&t.contents)).count();
            let want = count * self.config.subscribers;
            if forwarded != want {
                return err(format!(
                    "engine produced {forwarded} RTP datagrams for {count} packets × {} subscribers",
                    self.config.subscribers
                ));
            }
            self.stats.incoming += count as u64;
            self.stats.forwarded += forwarded as u64;
            let out = std::mem::take(&mut self.out);
            for t in &out {
                self.deliver(t)?;
            }
            self.out = out;
            self.out.clear();
            self.drain_clients()?;
            self.verify(&expected)?;
            self.advance(self.config.frame_interval)?;
        }
        self.stats.cpu += cpu;
        self.stats.wall += wall;
        Ok(cpu)
    }

    /// Lets the publisher produce `count` SRTP packets of one frame at the
    /// current instant. Returns the RTP datagrams and (payload, marker) of
    /// each packet; anything else it sends goes to the engine now.
    #[allow(clippy::type_complexity)]
    fn publish_frame(
        &mut self,
        count: usize,
    ) -> Result<(Vec<Vec<u8>>, Vec<(Arc<[u8]>, bool)>), HarnessError> {
        let now = self.now;
        let mut expected = Vec::with_capacity(count);
        {
            let publisher = &mut self.clients[0];
            let mut api = publisher.rtc.direct_api();
            let Some(tx) = api.stream_tx_by_mid(self.mid, None) else {
                return err("publisher has no send stream for its video m-line");
            };
            for i in 0..count {
                let payload = make_payload(self.next_payload, self.config.payload_len);
                self.next_payload += 1;
                let marker = i + 1 == count;
                tx.write_rtp(
                    RtpWrite::new(
                        self.pt,
                        self.next_seq.into(),
                        self.rtp_time,
                        now,
                        payload.clone(),
                    )
                    .marker(marker)
                    .nackable(true),
                );
                self.next_seq += 1;
                expected.push((payload, marker));
            }
            self.rtp_time = self.rtp_time.wrapping_add(3000);
            publisher
                .rtc
                .handle_input(Input::Timeout(now))
                .map_err(|e| HarnessError(format!("publisher timeout: {e}")))?;
        }
        let mut sent = Vec::new();
        self.clients[0].drain(&mut sent)?;
        let mut batch = Vec::with_capacity(count);
        for t in sent {
            if is_rtp(&t.contents) {
                batch.push(t.contents.to_vec());
            } else {
                self.engine
                    .handle_receive(now, Protocol::Udp, t.source, &t.contents);
            }
        }
        if batch.len() != count {
            return err(format!(
                "publisher sent {} RTP datagrams for {count} packets",
                batch.len()
            ));
        }
        self.pump()?;
        Ok((batch, expected))
    }

    /// Checks every subscriber received exactly `expected`, then forgets it.
    fn verify(&mut self, expected: &[(Arc<[u8]>, bool)]) -> Result<(), HarnessError> {
        for sub in &mut self.clients[1..] {
            if sub.received.len() != expected.len() {
                return err(format!(
                    "subscriber {} decrypted {} packets, expected {}",
                    sub.addr,
                    sub.received.len(),
                    expected.len()
                ));
            }
            for (i, ((got, marker, seq), (want, want_marker))) in
                sub.received.iter().zip(expected).enumerate()
            {
                if got[..] != want[..] {
                    let first = got.iter().zip(want.iter()).position(|(a, b)| a != b);
                    return err(format!(
                        "subscriber {}: payload of packet {i} differs ({} bytes vs {}, first \
                         difference at {first:?})",
                        sub.addr,
                        got.len(),
                        want.len()
                    ));
                }
                if marker != want_marker {
                    return err(format!("subscriber {}: marker of packet {i}", sub.addr));
                }
                if let Some(last) = sub.last_seq {
                    if *seq != last + 1 {
                        return err(format!(
                            "subscriber {}: sequence number {seq} after {last}",
                            sub.addr
                        ));
                    }
                }
                sub.last_seq = Some(*seq);
            }
            self.stats.verified += expected.len() as u64;
            sub.received.clear();
        }
        Ok(())
    }

    /// Routes one engine datagram to the client it is addressed to and
    /// drains that client at once: in RTP mode str0m keeps only one
    /// received packet for `poll_output`, a second input overwrites it.
    fn deliver(&mut self, t: &Transmit) -> Result<(), HarnessError> {
        let Some(&index) = self.by_addr.get(&t.destination) else {
            return err(format!("engine sent to unknown address {}", t.destination));
        };
        let client = &mut self.clients[index];
        client.receive(self.now, t.source, &t.contents)?;
        client.drain(&mut self.to_engine)
    }

    /// Drains every dirty client; their transmits wait in `to_engine`.
    fn drain_clients(&mut self) -> Result<(), HarnessError> {
        for c in &mut self.clients {
            if c.dirty {
                c.drain(&mut self.to_engine)?;
            }
        }
        Ok(())
    }

    /// Moves simulated time forward and lets everything settle.
    fn advance(&mut self, by: Duration) -> Result<(), HarnessError> {
        self.now += by;
        self.pump()
    }

    /// Exchanges datagrams, signaling and due timeouts at the current
    /// instant until nothing moves.
    fn pump(&mut self) -> Result<(), HarnessError> {
        let now = self.now;
        for _ in 0..MAX_PUMP_ROUNDS {
            let mut moved = false;
            let start = Instant::now();
            if self.engine.poll_timeout().is_some_and(|t| t <= now) {
                self.engine.handle_timeout(now);
            }
            let mut engine_time = start.elapsed();
            while let Some(t) = self.engine.poll_transmit() {
                self.deliver(&t)?;
                moved = true;
            }
            while let Some(signal) = self.engine.poll_signal() {
                self.handle_signal(signal)?;
                moved = true;
            }
            for c in &mut self.clients {
                if c.timeout <= now {
                    c.rtc
                        .handle_input(Input::Timeout(now))
                        .map_err(|e| HarnessError(format!("client {}: timeout: {e}", c.addr)))?;
                    c.dirty = true;
                }
            }
            self.drain_clients()?;
            let to_engine = std::mem::take(&mut self.to_engine);
            let start = Instant::now();
            for t in &to_engine {
                self.engine
                    .handle_receive(now, Protocol::Udp, t.source, &t.contents);
            }
            engine_time += start.elapsed();
            moved |= !to_engine.is_empty();
            self.to_engine = to_engine;
            self.to_engine.clear();
            if self.steady {
                self.stats.housekeeping += engine_time;
            }
            if !moved {
                return Ok(());
            }
        }
        err(format!(
            "datagrams still moving after {MAX_PUMP_ROUNDS} rounds"
        ))
    }

    fn handle_signal(&mut self, signal: Signal) -> Result<(), HarnessError> {
        let (conn, msg) = match signal {
            Signal::Message(conn, msg) => (conn, msg),
            Signal::Close(conn) => return err(format!("engine closed connection {conn}")),
            Signal::RoomClosed(room) => return err(format!("engine closed room {room}")),
        };
        let Some(client) = self.clients.get_mut(conn as usize) else {
            return err(format!("signal for unknown connection {conn}"));
        };
        match msg {
            ServerMessage::PublishAnswer { sdp } => {
                let answer = SdpAnswer::from_sdp_string(&sdp)
                    .map_err(|e| HarnessError(format!("publish answer: {e}")))?;
                let Some(pending) = client.pending.take() else {
                    return err("publish answer without an offer");
                };
                client
                    .rtc
                    .sdp_api()
                    .accept_answer(pending, answer)
                    .map_err(|e| HarnessError(format!("accept publish answer: {e}")))?;
                client.dirty = true;
            }
            ServerMessage::SubscribeOffer { sdp, .. } => {
                let offer = SdpOffer::from_sdp_string(&sdp)
                    .map_err(|e| HarnessError(format!("subscribe offer: {e}")))?;
                let answer = client
                    .rtc
                    .sdp_api()
                    .accept_offer(offer)
                    .map_err(|e| HarnessError(format!("accept subscribe offer: {e}")))?;
                client.dirty = true;
                let msg = ClientMessage::SubscribeAnswer {
                    sdp: answer.to_sdp_string(),
                };
                self.engine.handle_client(conn, msg, self.now);
            }
            ServerMessage::Error { code, message } => {
                return err(format!("engine error to {conn}: {code:?}: {message}"));
            }
            _ => {}
        }
        Ok(())
    }

    /// Joins everyone, publishes the track and runs simulated time until
    /// all peers are connected and every subscriber's slot is bound.
    fn connect(&mut self) -> Result<(), HarnessError> {
        let ttl = Duration::from_secs(24 * 3600);
        let now = self.now;
        let grants = TokenAuthority::grants(ROOM, "publisher", ttl);
        self.engine.join(0, grants, false, now);
        for index in 1..self.clients.len() {
            let grants = TokenAuthority::grants(ROOM, &format!("subscriber-{index}"), ttl);
            self.engine.join(index as ConnId, grants, true, now);
        }
        let (offer, mid) = {
            let publisher = &mut self.clients[0];
            let mut api = publisher.rtc.sdp_api();
            let mid = api.add_media(
                MediaKind::Video,
                Direction::SendOnly,
                Some("bench-stream".into()),
                Some("bench-video".into()),
                None,
            );
            let Some((offer, pending)) = api.apply() else {
                return err("publisher made no offer");
            };
            publisher.pending = Some(pending);
            (offer, mid)
        };
        self.mid = mid;
        self.engine.handle_client(
            0,
            ClientMessage::PublishOffer {
                sdp: offer.to_sdp_string(),
                tracks: vec![TrackLabel {
                    mid: mid.to_string(),
                    source: "camera".into(),
                }],
            },
            now,
        );
        self.pump()?;
        let subscribers = self.config.subscribers as i64;
        for _ in 0..1000 {
            self.advance(Duration::from_millis(10))?;
            let ready = self.clients.iter().all(|c| c.connected)
                && self.clients[1..].iter().all(|c| !c.media.is_empty())
                && self.metrics.subscriptions.get() == subscribers;
            if ready {
                let pt = self.clients[0]
                    .rtc
                    .codec_config()
                    .iter()
                    .find(|p| p.spec().codec == Codec::Vp8)
                    .map(|p| p.pt());
                let Some(pt) = pt else {
                    return err("publisher negotiated no VP8");
                };
                self.pt = pt;
                // Keyframe requests and the like settle in one more step.
                return self.advance(Duration::from_millis(10));
            }
        }
        let connected = self.clients.iter().filter(|c| c.connected).count();
        err(format!(
            "not ready after 10 s simulated: {connected}/{} clients connected, {} subscriptions",
            self.clients.len(),
            self.metrics.subscriptions.get()
        ))
    }
}

/// A payload unique to packet `n`: its number, then a pattern derived from it.
fn make_payload(n: u64, len: usize) -> Arc<[u8]> {
    let mut bytes = Vec::with_capacity(len);
    bytes.extend_from_slice(&n.to_be_bytes());
    let mut x = n.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    while bytes.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        bytes.push(x as u8);
    }
    bytes.truncate(len);
    bytes.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_datagrams() {
        let mut rtp = vec![0u8; 40];
        rtp[0] = 0x80;
        rtp[1] = 96;
        assert!(is_rtp(&rtp));
        rtp[1] = 0x80 | 96;
        assert!(is_rtp(&rtp));
        rtp[1] = 200; // RTCP sender report
        assert!(!is_rtp(&rtp));
        rtp[0] = 22; // DTLS handshake
        rtp[1] = 96;
        assert!(!is_rtp(&rtp));
        rtp[0] = 0; // STUN
        assert!(!is_rtp(&rtp));
    }

    #[test]
    fn payloads_are_unique_and_sized() {
        let a = make_payload(1, 1000);
        let b = make_payload(2, 1000);
        assert_eq!(a.len(), 1000);
        assert_ne!(a, b);
        assert_eq!(make_payload(7, 4).len(), 4);
    }

    #[test]
    fn thread_cpu_time_advances() {
        let a = thread_cpu_time();
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
        }
        assert!(thread_cpu_time() > a, "{x}");
        assert!(clock_overhead() < Duration::from_millis(1));
    }

    #[test]
    fn client_addresses_are_distinct() {
        let addrs: std::collections::HashSet<_> = (0..1000).map(client_addr).collect();
        assert_eq!(addrs.len(), 1000);
        assert!(!addrs.contains(&SocketAddr::from(([127, 0, 0, 1], 7882))));
    }
}
