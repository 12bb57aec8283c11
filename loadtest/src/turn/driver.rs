//! The I/O shell of `loadtest turn`: worker threads, each one mio poll over
//! many client sockets, moving through three phases the main thread sets:
//! allocate (at the requested rate), traffic (ChannelData to the echo peer
//! at a fixed packet rate per allocation), release (Refresh 0).

use std::io::ErrorKind;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token};
use serde::Serialize;
use turn_server::credentials::mint_rest_credentials;
use turn_server::stun::channel_data;
use turn_server::stun::{packet_kind, PacketKind};

use super::allocation::{Allocation, Phase};
use super::echo::EchoPeer;
use crate::clock;
use crate::report::Percentiles;
use crate::server_cost::{self, ServerCost};
use crate::stats::histogram;

const ALLOCATING: u8 = 0;
const TRAFFIC: u8 = 1;
const DRAINING: u8 = 2;
const RELEASE: u8 = 3;
/// The loop wakes at least this often to send traffic.
const TICK: Duration = Duration::from_millis(2);
/// Retransmissions and allocation outcomes are checked this often.
const STATUS_EVERY: Duration = Duration::from_millis(20);
/// Bytes of the ChannelData payload header: sequence number and send time.
const PAYLOAD_HEADER: usize = 12;

/// Credentials for the clients.
#[derive(Debug, Clone)]
pub enum Credentials {
    /// One long-term user for every allocation.
    LongTerm {
        /// Username.
        user: String,
        /// Password.
        password: String,
    },
    /// TURN REST: a username `expiry:loadtest-N` per allocation, password from the shared secret.
    Rest {
        /// The server's shared secret.
        secret: String,
    },
}

/// What to do.
#[derive(Debug, Clone)]
pub struct TurnOptions {
    /// The server's UDP address.
    pub server: SocketAddr,
    /// Allocations to open and hold.
    pub allocations: usize,
    /// Allocations started per second (across threads).
    pub rate: f64,
    /// Seconds of traffic once allocations are up.
    pub duration_secs: f64,
    /// ChannelData packets per second per allocation (0 = hold only).
    pub pps: f64,
    /// ChannelData payload bytes.
    pub size: usize,
    /// Worker threads.
    pub threads: usize,
    /// Credentials.
    pub credentials: Credentials,
    /// Where the echo peer binds (port 0 = any).
    pub peer_bind: SocketAddr,
    /// Spread client sockets over 127.0.0.0/8 source addresses.
    pub spread_sources: bool,
    /// The server's pid, for CPU and RSS.
    pub server_pid: Option<u32>,
    /// Fail when loss exceeds this percent.
    pub max_loss_pct: Option<f64>,
    /// No progress output.
    pub quiet: bool,
}

/// The result.
#[derive(Debug, Clone, Serialize)]
pub struct TurnSummary {
    /// Allocations asked for.
    pub requested: usize,
    /// Allocations that became ready (permission and channel included).
    pub ready: u64,
    /// Allocations that failed.
    pub failed: u64,
    /// Seconds from the first Allocate to the last ready.
    pub allocate_secs: f64,
    /// Ready allocations per second.
    pub allocations_per_sec: f64,
    /// Allocate → ChannelBind success, ms.
    pub allocation_ms: Percentiles,
    /// Seconds of traffic.
    pub traffic_secs: f64,
    /// ChannelData packets sent by clients.
    pub sent: u64,
    /// Packets echoed back to clients.
    pub received: u64,
    /// Loss, percent.
    pub loss_pct: f64,
    /// Round trip client → relay → peer → relay → client, ms.
    pub rtt_ms: Percentiles,
    /// Client → server payload throughput, Mbit/s.
    pub mbps_out: f64,
    /// Datagrams the server relayed per second (both directions).
    pub relayed_per_sec: f64,
    /// Server CPU over the traffic window.
    pub server: ServerCost,
    /// Server CPU µs per relayed datagram.
    pub cpu_us_per_relayed: Option<f64>,
    /// Soft limit of open files after raising it.
    pub fd_limit: u64,
    /// First errors.
    pub errors: Vec<String>,
    /// Failed checks.
    pub violations: Vec<String>,
}

/// Raises the soft open-file limit to the hard limit; returns the new soft
/// limit (0 if it cannot be read).
pub fn raise_fd_limit() -> u64 {
    platform::fd_limit::raise_to_hard_limit().map_or(0, |l| l.now)
}

/// The source address of client `i`: 127.0.0.1 or spread over 127.0.0.0/8.
pub fn source_ip(i: usize, spread: bool) -> IpAddr {
    if !spread {
        return IpAddr::V4(Ipv4Addr::LOCALHOST);
    }
    let b = (i / 250 / 250) % 250 + 1;
    let c = (i / 250) % 250;
    let d = i % 250 + 1;
    IpAddr::V4(Ipv4Addr::new(127, b as u8, c as u8, d as u8))
}

struct Shared {
    phase: AtomicU8,
    ready: AtomicU64,
    failed: AtomicU64,
    sent: AtomicU64,
    received: AtomicU64,
}

struct Client {
    socket: Option<UdpSocket>,
    alloc: Allocation,
    started: bool,
    seq: u32,
    counted: bool,
}

struct WorkerResult {
    alloc_ms: Histogram<u64>,
    rtt_us: Histogram<u64>,
    first_start: Option<Instant>,
    last_ready: Option<Instant>,
    errors: Vec<String>,
}

/// Runs the whole TURN load test.
pub fn run(o: &TurnOptions) -> anyhow::Result<TurnSummary> {
    anyhow::ensure!(
        o.allocations > 0 && o.threads > 0 && o.rate > 0.0,
        "allocations, threads and rate must be positive"
    );
    anyhow::ensure!(
        o.size >= PAYLOAD_HEADER && o.size <= 1400,
        "size must be 12..=1400 bytes"
    );
    clock::epoch();
    let fd_limit = raise_fd_limit();
    let echo = EchoPeer::start(o.peer_bind)?;
    let shared = Arc::new(Shared {
        phase: AtomicU8::new(ALLOCATING),
        ready: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        sent: AtomicU64::new(0),
        received: AtomicU64::new(0),
    });
    let now_unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut handles = Vec::new();
    for t in 0..o.threads {
        let range: Vec<usize> = (t..o.allocations).step_by(o.threads).collect();
        let (o2, sh, peer) = (o.clone(), shared.clone(), echo.addr);
        handles.push(
            std::thread::Builder::new()
                .name(format!("loadtest-turn-{t}"))
                .spawn(move || worker(&o2, range, peer, now_unix, &sh))?,
        );
    }
    // Allocation phase: until every allocation is ready or failed.
    let start = Instant::now();
    let limit = start + Duration::from_secs_f64(o.allocations as f64 / o.rate + 20.0);
    let mut last_print = start;
    loop {
        let done = shared.ready.load(Ordering::Relaxed) + shared.failed.load(Ordering::Relaxed);
        if done >= o.allocations as u64 || Instant::now() > limit {
            break;
        }
        if !o.quiet && last_print.elapsed() >= Duration::from_secs(1) {
            last_print = Instant::now();
            eprintln!(
                "allocating: {} ready, {} failed of {}",
                shared.ready.load(Ordering::Relaxed),
                shared.failed.load(Ordering::Relaxed),
                o.allocations
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let before = server_cost::sample(o.server_pid, None);
    let echoed_before = echo.echoed.load(Ordering::Relaxed);
    let traffic_start = Instant::now();
    shared.phase.store(TRAFFIC, Ordering::Relaxed);
    std::thread::sleep(Duration::from_secs_f64(o.duration_secs));
    shared.phase.store(DRAINING, Ordering::Relaxed);
    let traffic_secs = traffic_start.elapsed().as_secs_f64();
    let after = server_cost::sample(o.server_pid, None);
    // Packets still in flight come back during the drain: wait until the
    // count stops moving (at most a second).
    let mut last = shared.received.load(Ordering::Relaxed);
    for _ in 0..10 {
        std::thread::sleep(Duration::from_millis(100));
        let now = shared.received.load(Ordering::Relaxed);
        if now == last || now >= shared.sent.load(Ordering::Relaxed) {
            break;
        }
        last = now;
    }
    let echoed = echo.echoed.load(Ordering::Relaxed) - echoed_before;
    shared.phase.store(RELEASE, Ordering::Relaxed);
    let mut alloc_ms = histogram();
    let mut rtt_us = histogram();
    let mut first_start: Option<Instant> = None;
    let mut last_ready: Option<Instant> = None;
    let mut errors = Vec::new();
    for h in handles {
        let r = h
            .join()
            .map_err(|_| anyhow::anyhow!("a TURN worker panicked"))?;
        let _ = alloc_ms.add(&r.alloc_ms);
        let _ = rtt_us.add(&r.rtt_us);
        first_start = first_start.into_iter().chain(r.first_start).min();
        last_ready = last_ready.into_iter().chain(r.last_ready).max();
        errors.extend(
            r.errors
                .into_iter()
                .take(20usize.saturating_sub(errors.len())),
        );
    }
    let ready = shared.ready.load(Ordering::Relaxed);
    let sent = shared.sent.load(Ordering::Relaxed);
    let received = shared.received.load(Ordering::Relaxed);
    let allocate_secs = match (first_start, last_ready) {
        (Some(a), Some(b)) => b.saturating_duration_since(a).as_secs_f64(),
        _ => 0.0,
    };
    let server = server_cost::cost(&before, &after);
    let relayed = echoed + received;
    let loss_pct = if sent == 0 {
        0.0
    } else {
        sent.saturating_sub(received) as f64 * 100.0 / sent as f64
    };
    let mut s = TurnSummary {
        requested: o.allocations,
        ready,
        failed: shared.failed.load(Ordering::Relaxed),
        allocate_secs,
        allocations_per_sec: if allocate_secs > 0.0 {
            ready as f64 / allocate_secs
        } else {
            0.0
        },
        allocation_ms: Percentiles::of(&alloc_ms, 1.0),
        traffic_secs,
        sent,
        received,
        loss_pct,
        rtt_ms: Percentiles::of(&rtt_us, 1e-3),
        mbps_out: sent as f64 * o.size as f64 * 8.0 / traffic_secs.max(1e-3) / 1e6,
        relayed_per_sec: relayed as f64 / traffic_secs.max(1e-3),
        cpu_us_per_relayed: server
            .cpu_secs
            .filter(|_| relayed > 0)
            .map(|c| c * 1e6 / relayed as f64),
        server,
        fd_limit,
        errors,
        violations: Vec::new(),
    };
    if s.ready < s.requested as u64 {
        s.violations.push(format!(
            "{} of {} allocations did not become ready",
            s.requested as u64 - s.ready,
            s.requested
        ));
    }
    if let Some(max) = o.max_loss_pct {
        if s.loss_pct > max {
            s.violations
                .push(format!("loss {:.3}% > --max-loss {max}%", s.loss_pct));
        }
    }
    Ok(s)
}

/// The end-of-run table.
pub fn table(s: &TurnSummary) -> String {
    let opt = |v: Option<f64>, unit: &str, prec: usize| {
        v.map_or("-".to_string(), |v| format!("{v:.prec$}{unit}"))
    };
    let mut rows = vec![
        (
            "allocations",
            format!(
                "{} requested, {} ready, {} failed (open-file limit {})",
                s.requested, s.ready, s.failed, s.fd_limit
            ),
        ),
        (
            "allocation rate",
            format!(
                "{:.0}/s ({} in {:.2} s)",
                s.allocations_per_sec, s.ready, s.allocate_secs
            ),
        ),
        (
            "allocation ms",
            format!(
                "p50 {:.0}  p95 {:.0}  p99 {:.0}  max {:.0}",
                s.allocation_ms.p50, s.allocation_ms.p95, s.allocation_ms.p99, s.allocation_ms.max
            ),
        ),
        (
            "traffic",
            format!(
                "{} sent, {} echoed back in {:.1} s, loss {:.3}%",
                s.sent, s.received, s.traffic_secs, s.loss_pct
            ),
        ),
        (
            "throughput",
            format!(
                "{:.1} Mb/s client→server, {:.0} relayed datagrams/s",
                s.mbps_out, s.relayed_per_sec
            ),
        ),
        (
            "RTT ms",
            format!(
                "p50 {:.2}  p95 {:.2}  p99 {:.2}  max {:.2}",
                s.rtt_ms.p50, s.rtt_ms.p95, s.rtt_ms.p99, s.rtt_ms.max
            ),
        ),
        (
            "server CPU",
            format!(
                "{} ({})",
                opt(s.server.cpu_secs, " s", 2),
                opt(s.server.cpu_pct, "% of a core", 1)
            ),
        ),
        ("server RSS", opt(s.server.rss_mib, " MiB", 1)),
        ("CPU µs / relayed", opt(s.cpu_us_per_relayed, "", 3)),
    ];
    for e in s.errors.iter().take(5) {
        rows.push(("error", e.clone()));
    }
    if s.violations.is_empty() {
        rows.push(("result", "PASS".into()));
    }
    for v in &s.violations {
        rows.push(("FAIL", v.clone()));
    }
    rows.iter()
        .map(|(k, v)| format!("  {k:<18} {v}\n"))
        .collect()
}

fn worker(
    o: &TurnOptions,
    indexes: Vec<usize>,
    peer: SocketAddr,
    now_unix: u64,
    shared: &Shared,
) -> WorkerResult {
    let mut result = WorkerResult {
        alloc_ms: histogram(),
        rtt_us: histogram(),
        first_start: None,
        last_ready: None,
        errors: Vec::new(),
    };
    let mut poll = match Poll::new() {
        Ok(p) => p,
        Err(e) => {
            result.errors.push(format!("poll: {e}"));
            shared
                .failed
                .fetch_add(indexes.len() as u64, Ordering::Relaxed);
            return result;
        }
    };
    let now = Instant::now();
    let mut clients: Vec<Client> = indexes
        .iter()
        .map(|&i| {
            let (user, password) = match &o.credentials {
                Credentials::LongTerm { user, password } => (user.clone(), password.clone()),
                Credentials::Rest { secret } => mint_rest_credentials(
                    secret.as_bytes(),
                    &format!("loadtest-{i}"),
                    Duration::from_secs(24 * 3600),
                    now_unix,
                ),
            };
            // Channels 0x4000..=0x4FFF; one per allocation, any will do.
            let channel = 0x4000 + (i % 0x1000) as u16;
            Client {
                socket: None,
                alloc: Allocation::new(user, password, peer, channel, now),
                started: false,
                seq: 0,
                counted: false,
            }
        })
        .collect();
    let per_thread_rate = o.rate / o.threads as f64;
    let start = Instant::now();
    let mut next_start = 0usize;
    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0u8; 2048];
    let mut out = Vec::with_capacity(2048);
    let mut payload = vec![0u8; o.size];
    let interval = if o.pps > 0.0 {
        Duration::from_secs_f64(1.0 / o.pps)
    } else {
        Duration::MAX
    };
    let mut traffic_start: Option<Instant> = None;
    let mut slot = 0u64;
    let mut release_at: Option<Instant> = None;
    let mut last_scan = start - TICK;
    loop {
        let phase = shared.phase.load(Ordering::Relaxed);
        let now = Instant::now();
        if phase == RELEASE {
            let deadline = match release_at {
                Some(d) => d,
                None => {
                    for c in clients.iter_mut() {
                        if let (Some(s), Some(req)) = (c.socket.as_ref(), c.alloc.release(now)) {
                            let _ = s.send_to(&req, o.server);
                        }
                    }
                    *release_at.insert(now + Duration::from_millis(300))
                }
            };
            if now >= deadline {
                return result;
            }
        }
        // Start allocations at the rate.
        if phase == ALLOCATING {
            let due = ((now - start).as_secs_f64() * per_thread_rate) as usize + 1;
            while next_start < clients.len() && next_start < due {
                let i = indexes[next_start];
                let c = &mut clients[next_start];
                let token = Token(next_start);
                next_start += 1;
                let bound = UdpSocket::bind(SocketAddr::new(source_ip(i, o.spread_sources), 0))
                    .and_then(|mut s| {
                        poll.registry()
                            .register(&mut s, token, Interest::READABLE)?;
                        Ok(s)
                    });
                match bound {
                    Ok(s) => {
                        let req = c.alloc.start(now);
                        let _ = s.send_to(&req, o.server);
                        c.socket = Some(s);
                        c.started = true;
                        result.first_start.get_or_insert(now);
                    }
                    Err(e) => {
                        c.alloc.phase = Phase::Failed(format!("socket: {e}"));
                    }
                }
            }
        }
        // Retransmissions and outcomes: a scan of every client now and then
        // (RTOs are 500 ms and up, so 20 ms is precise enough).
        if now >= last_scan + STATUS_EVERY {
            last_scan = now;
            for c in clients.iter_mut() {
                if !c.started && !matches!(c.alloc.phase, Phase::Failed(_)) {
                    continue;
                }
                if let Some(s) = c.socket.as_ref() {
                    if let Some(req) = c.alloc.poll_retransmit(now) {
                        let _ = s.send_to(&req, o.server);
                    }
                }
                if !c.counted {
                    match &c.alloc.phase {
                        Phase::Ready => {
                            c.counted = true;
                            shared.ready.fetch_add(1, Ordering::Relaxed);
                            if let Some(r) = c.alloc.ready_at {
                                let ms = r.saturating_duration_since(c.alloc.started).as_millis();
                                let _ = result.alloc_ms.record(ms.max(1) as u64);
                                result.last_ready = result.last_ready.max(Some(r));
                            }
                        }
                        Phase::Failed(why) => {
                            c.counted = true;
                            shared.failed.fetch_add(1, Ordering::Relaxed);
                            if result.errors.len() < 20 {
                                result.errors.push(why.clone());
                            }
                        }
                        _ => {}
                    }
                }
            }
        }
        // Traffic: every client sends once per interval, in index order
        // spread evenly over the interval, so each tick touches only the
        // clients whose turn it is.
        if phase == TRAFFIC && interval != Duration::MAX && !clients.is_empty() {
            let t0 = *traffic_start.get_or_insert(now);
            let n = clients.len() as u64;
            let target = ((now - t0).as_secs_f64() / interval.as_secs_f64() * n as f64) as u64;
            // A stalled loop skips sends rather than bursting them.
            if target > slot + n {
                slot = target - n;
            }
            while slot < target {
                let c = &mut clients[(slot % n) as usize];
                slot += 1;
                if c.alloc.phase != Phase::Ready {
                    continue;
                }
                let Some(s) = c.socket.as_ref() else { continue };
                payload[..4].copy_from_slice(&c.seq.to_be_bytes());
                payload[4..12].copy_from_slice(&clock::micros(now).to_be_bytes());
                out.clear();
                if channel_data::encode(&mut out, c.alloc.channel, &payload, false).is_ok()
                    && s.send_to(&out, o.server).is_ok()
                {
                    shared.sent.fetch_add(1, Ordering::Relaxed);
                }
                c.seq = c.seq.wrapping_add(1);
            }
        }
        if let Err(e) = poll.poll(&mut events, Some(TICK)) {
            if e.kind() != ErrorKind::Interrupted {
                result.errors.push(format!("poll: {e}"));
                return result;
            }
        }
        let now = Instant::now();
        for ev in events.iter() {
            let Some(c) = clients.get_mut(ev.token().0) else {
                continue;
            };
            for _ in 0..256 {
                let Some(s) = c.socket.as_ref() else { break };
                let n = match s.recv_from(&mut buf) {
                    Ok((n, _)) => n,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(_) => break,
                };
                let data = &buf[..n];
                if packet_kind(data) == PacketKind::ChannelData {
                    if let Ok((_, d)) = channel_data::parse(data) {
                        if d.len() >= PAYLOAD_HEADER {
                            let mut t = [0u8; 8];
                            t.copy_from_slice(&d[4..12]);
                            let rtt = clock::micros(now).saturating_sub(u64::from_be_bytes(t));
                            let _ = result.rtt_us.record(rtt.max(1));
                            shared.received.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                } else if let Some(next) = c.alloc.on_message(data, now) {
                    let _ = s.send_to(&next, o.server);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_spread_over_loopback() {
        assert_eq!(source_ip(0, false), IpAddr::V4(Ipv4Addr::LOCALHOST));
        let a: std::collections::HashSet<IpAddr> =
            (0..100_000).map(|i| source_ip(i, true)).collect();
        assert_eq!(a.len(), 100_000);
        assert!(a
            .iter()
            .all(|ip| matches!(ip, IpAddr::V4(v) if v.octets()[0] == 127)));
    }
}
