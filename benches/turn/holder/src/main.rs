//! `turn-holder`: opens N TURN allocations on a server and holds them, so
//! `benches/turn/compare.sh` can read the server's memory per allocation.
//!
//! Raw STUN over UDP, written here from RFC 8489/8656 (no TURN library):
//! every allocation is its own client socket (its own 5-tuple), bound to
//! 127.0.1.x so that the client ports never take the servers' relay ports
//! on 127.0.0.1. Per allocation: Allocate without credentials (401 brings
//! REALM and NONCE), Allocate with long-term credentials
//! (MESSAGE-INTEGRITY, HMAC-SHA1 with MD5(user:realm:pass)), and, with
//! `--peer`, a ChannelBind to that peer (which also installs the
//! permission) — what a WebRTC relay candidate in use has on the server.
//!
//! Requests go out in windows of `--window` sockets (non-blocking sockets
//! swept until every answer is in), with retransmissions after
//! `--timeout-ms`. When all are done it prints one line
//! `HELD ok=N failed=F secs=S rate=R` and sleeps for `--hold-secs` (the
//! script kills it once it has read the server's RSS).
//!
//! ```text
//! turn-holder --server 127.0.0.1:3478 --user test --pass test123 --count 2000 \
//!     [--peer 127.0.0.1:35800] [--client-net 127.0.1.0] [--per-ip 20000] \
//!     [--window 200] [--timeout-ms 500] [--retries 8] [--lifetime 600] [--hold-secs 600]
//! ```

use std::io::{ErrorKind, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use md5::{Digest, Md5};
use sha1::Sha1;

const MAGIC: u32 = 0x2112_A442;
const ALLOCATE: u16 = 0x0003;
const CHANNEL_BIND: u16 = 0x0009;
const SUCCESS: u16 = 0x0100;
const ERROR: u16 = 0x0110;

const A_USERNAME: u16 = 0x0006;
const A_MESSAGE_INTEGRITY: u16 = 0x0008;
const A_ERROR_CODE: u16 = 0x0009;
const A_CHANNEL_NUMBER: u16 = 0x000C;
const A_LIFETIME: u16 = 0x000D;
const A_XOR_PEER_ADDRESS: u16 = 0x0012;
const A_REALM: u16 = 0x0014;
const A_NONCE: u16 = 0x0015;
const A_REQUESTED_TRANSPORT: u16 = 0x0019;

struct Args {
    server: SocketAddr,
    user: String,
    pass: String,
    count: usize,
    peer: Option<SocketAddr>,
    client_net: Ipv4Addr,
    per_ip: usize,
    window: usize,
    timeout: Duration,
    retries: u32,
    lifetime: u32,
    hold: Duration,
}

fn usage() -> ! {
    eprintln!(
        "usage: turn-holder --server IP:PORT --user U --pass P --count N [--peer IP:PORT] \
         [--client-net 127.0.1.0] [--per-ip 20000] [--window 200] [--timeout-ms 500] \
         [--retries 8] [--lifetime 600] [--hold-secs 600]"
    );
    std::process::exit(2)
}

fn parse_args() -> Args {
    let mut a = Args {
        server: "127.0.0.1:3478".parse().unwrap(),
        user: String::new(),
        pass: String::new(),
        count: 1000,
        peer: None,
        client_net: Ipv4Addr::new(127, 0, 1, 0),
        per_ip: 20_000,
        window: 200,
        timeout: Duration::from_millis(500),
        retries: 8,
        lifetime: 600,
        hold: Duration::from_secs(600),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let Some(v) = it.next() else { usage() };
        let bad = |what: &str| -> ! {
            eprintln!("turn-holder: bad {what}: {v}");
            std::process::exit(2)
        };
        match flag.as_str() {
            "--server" => a.server = v.parse().unwrap_or_else(|_| bad("--server")),
            "--user" => a.user = v,
            "--pass" => a.pass = v,
            "--count" => a.count = v.parse().unwrap_or_else(|_| bad("--count")),
            "--peer" => a.peer = Some(v.parse().unwrap_or_else(|_| bad("--peer"))),
            "--client-net" => a.client_net = v.parse().unwrap_or_else(|_| bad("--client-net")),
            "--per-ip" => a.per_ip = v.parse().unwrap_or_else(|_| bad("--per-ip")),
            "--window" => a.window = v.parse().unwrap_or_else(|_| bad("--window")),
            "--timeout-ms" => {
                a.timeout = Duration::from_millis(v.parse().unwrap_or_else(|_| bad("--timeout-ms")))
            }
            "--retries" => a.retries = v.parse().unwrap_or_else(|_| bad("--retries")),
            "--lifetime" => a.lifetime = v.parse().unwrap_or_else(|_| bad("--lifetime")),
            "--hold-secs" => {
                a.hold = Duration::from_secs(v.parse().unwrap_or_else(|_| bad("--hold-secs")))
            }
            _ => usage(),
        }
    }
    if a.user.is_empty() || a.count == 0 || a.window == 0 || a.per_ip == 0 {
        usage()
    }
    a
}

/// A tiny xorshift generator for transaction ids (uniqueness, not secrecy).
struct Ids(u64);

impl Ids {
    fn next(&mut self) -> [u8; 12] {
        let mut out = [0u8; 12];
        for chunk in out.chunks_mut(4) {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            chunk.copy_from_slice(&(self.0 as u32).to_be_bytes());
        }
        out
    }
}

/// A STUN message under construction.
struct Builder {
    buf: Vec<u8>,
}

impl Builder {
    fn new(method: u16, tid: &[u8; 12]) -> Self {
        let mut buf = Vec::with_capacity(160);
        buf.extend_from_slice(&method.to_be_bytes()); // class: request
        buf.extend_from_slice(&0u16.to_be_bytes());
        buf.extend_from_slice(&MAGIC.to_be_bytes());
        buf.extend_from_slice(tid);
        Self { buf }
    }

    fn attr(&mut self, kind: u16, value: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(&kind.to_be_bytes());
        self.buf
            .extend_from_slice(&(value.len() as u16).to_be_bytes());
        self.buf.extend_from_slice(value);
        while !self.buf.len().is_multiple_of(4) {
            self.buf.push(0);
        }
        self.set_len();
        self
    }

    fn set_len(&mut self) {
        let len = (self.buf.len() - 20) as u16;
        self.buf[2..4].copy_from_slice(&len.to_be_bytes());
    }

    fn xor_addr(&mut self, kind: u16, addr: SocketAddr) -> &mut Self {
        let IpAddr::V4(ip) = addr.ip() else {
            panic!("IPv4 peers only")
        };
        let mut v = vec![0u8, 0x01];
        v.extend_from_slice(&(addr.port() ^ (MAGIC >> 16) as u16).to_be_bytes());
        v.extend_from_slice(&(u32::from(ip) ^ MAGIC).to_be_bytes());
        self.attr(kind, &v)
    }

    /// Appends MESSAGE-INTEGRITY (RFC 8489 §14.5) and returns the bytes.
    fn finish_with_integrity(mut self, key: &[u8]) -> Vec<u8> {
        // The length field covers the MESSAGE-INTEGRITY attribute itself.
        let len = (self.buf.len() - 20 + 24) as u16;
        self.buf[2..4].copy_from_slice(&len.to_be_bytes());
        let mut mac = <Hmac<Sha1> as Mac>::new_from_slice(key).expect("any key length");
        mac.update(&self.buf);
        let tag = mac.finalize().into_bytes();
        self.buf
            .extend_from_slice(&A_MESSAGE_INTEGRITY.to_be_bytes());
        self.buf.extend_from_slice(&20u16.to_be_bytes());
        self.buf.extend_from_slice(&tag);
        self.buf
    }

    fn finish(self) -> Vec<u8> {
        self.buf
    }
}

/// What a response said.
#[derive(Default)]
struct Response {
    kind: u16,
    error: Option<u16>,
    nonce: Option<Vec<u8>>,
    realm: Option<Vec<u8>>,
}

fn parse(buf: &[u8], tid: &[u8; 12]) -> Option<Response> {
    if buf.len() < 20 || buf[4..8] != MAGIC.to_be_bytes() || &buf[8..20] != tid {
        return None;
    }
    let len = u16::from_be_bytes([buf[2], buf[3]]) as usize;
    let body = buf.get(20..20 + len)?;
    let mut r = Response {
        kind: u16::from_be_bytes([buf[0], buf[1]]),
        ..Default::default()
    };
    let mut i = 0;
    while i + 4 <= body.len() {
        let t = u16::from_be_bytes([body[i], body[i + 1]]);
        let l = u16::from_be_bytes([body[i + 2], body[i + 3]]) as usize;
        let v = body.get(i + 4..i + 4 + l)?;
        match t {
            A_ERROR_CODE if l >= 4 => r.error = Some((v[2] & 7) as u16 * 100 + v[3] as u16),
            A_NONCE => r.nonce = Some(v.to_vec()),
            A_REALM => r.realm = Some(v.to_vec()),
            _ => {}
        }
        i += 4 + l.div_ceil(4) * 4;
    }
    Some(r)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Stage {
    Challenge,
    Allocate,
    Bind,
    Done,
    Failed,
}

struct Session {
    socket: UdpSocket,
    stage: Stage,
    tid: [u8; 12],
    nonce: Vec<u8>,
    realm: Vec<u8>,
    key: [u8; 16],
    sends: u32,
    last_error: Option<u16>,
}

struct Ctx<'a> {
    args: &'a Args,
    ids: Ids,
}

impl Ctx<'_> {
    fn request(&mut self, s: &mut Session) -> Vec<u8> {
        s.tid = self.ids.next();
        let lifetime = self.args.lifetime.to_be_bytes();
        match s.stage {
            Stage::Challenge => {
                let mut b = Builder::new(ALLOCATE, &s.tid);
                b.attr(A_REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
                b.finish()
            }
            Stage::Allocate => {
                let mut b = Builder::new(ALLOCATE, &s.tid);
                b.attr(A_REQUESTED_TRANSPORT, &[17, 0, 0, 0])
                    .attr(A_LIFETIME, &lifetime)
                    .attr(A_USERNAME, self.args.user.as_bytes())
                    .attr(A_REALM, &s.realm)
                    .attr(A_NONCE, &s.nonce);
                b.finish_with_integrity(&s.key)
            }
            Stage::Bind => {
                let mut b = Builder::new(CHANNEL_BIND, &s.tid);
                b.attr(A_CHANNEL_NUMBER, &[0x40, 0x00, 0, 0])
                    .xor_addr(
                        A_XOR_PEER_ADDRESS,
                        self.args.peer.expect("bind needs a peer"),
                    )
                    .attr(A_USERNAME, self.args.user.as_bytes())
                    .attr(A_REALM, &s.realm)
                    .attr(A_NONCE, &s.nonce);
                b.finish_with_integrity(&s.key)
            }
            Stage::Done | Stage::Failed => unreachable!(),
        }
    }

    fn key(&self, realm: &[u8]) -> [u8; 16] {
        let mut h = Md5::new();
        h.update(self.args.user.as_bytes());
        h.update(b":");
        h.update(realm);
        h.update(b":");
        h.update(self.args.pass.as_bytes());
        h.finalize().into()
    }

    /// Moves a session on after an answer to its current request; `true`
    /// if it needs another request now.
    fn advance(&mut self, s: &mut Session, r: &Response) -> bool {
        let class = r.kind & 0x0110;
        if let (Some(n), Some(re)) = (&r.nonce, &r.realm) {
            if s.realm != *re {
                s.key = self.key(re);
                s.realm = re.clone();
            }
            s.nonce = n.clone();
        }
        match (s.stage, class, r.error) {
            (Stage::Challenge, ERROR, Some(401)) if !s.nonce.is_empty() => {
                s.stage = Stage::Allocate;
                s.sends = 0;
                true
            }
            (_, ERROR, Some(438)) => true, // stale nonce: again with the new one
            (Stage::Allocate, SUCCESS, _) => {
                s.stage = if self.args.peer.is_some() {
                    Stage::Bind
                } else {
                    Stage::Done
                };
                s.sends = 0;
                s.stage == Stage::Bind
            }
            (Stage::Bind, SUCCESS, _) => {
                s.stage = Stage::Done;
                false
            }
            _ => {
                s.last_error = r.error.or(Some(0));
                s.stage = Stage::Failed;
                false
            }
        }
    }
}

fn send(s: &Session, server: SocketAddr, msg: &[u8]) {
    loop {
        match s.socket.send_to(msg, server) {
            Ok(_) => return,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_micros(50))
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            // Lost like a datagram: the retransmission timer covers it.
            Err(_) => return,
        }
    }
}

/// Drives one window of sessions to Done or Failed.
fn drive(ctx: &mut Ctx, window: &mut [Session]) {
    let server = ctx.args.server;
    let mut buf = [0u8; 1500];
    let mut sent_at = vec![Instant::now(); window.len()];
    for (i, s) in window.iter_mut().enumerate() {
        let msg = ctx.request(s);
        send(s, server, &msg);
        s.sends = 1;
        sent_at[i] = Instant::now();
    }
    loop {
        let mut pending = 0;
        let mut progressed = false;
        for (i, s) in window.iter_mut().enumerate() {
            if matches!(s.stage, Stage::Done | Stage::Failed) {
                continue;
            }
            pending += 1;
            loop {
                match s.socket.recv(&mut buf) {
                    Ok(n) => {
                        let Some(r) = parse(&buf[..n], &s.tid) else {
                            continue; // late answer to an older request
                        };
                        progressed = true;
                        if ctx.advance(s, &r) {
                            let msg = ctx.request(s);
                            send(s, server, &msg);
                            s.sends += 1;
                            sent_at[i] = Instant::now();
                        }
                        break;
                    }
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(_) => break, // WouldBlock (or ICMP error): nothing yet
                }
            }
            if !matches!(s.stage, Stage::Done | Stage::Failed)
                && sent_at[i].elapsed() >= ctx.args.timeout
            {
                if s.sends > ctx.args.retries {
                    s.stage = Stage::Failed;
                    s.last_error = None;
                } else {
                    let msg = ctx.request(s);
                    send(s, server, &msg);
                    s.sends += 1;
                    sent_at[i] = Instant::now();
                }
            }
        }
        if pending == 0 {
            return;
        }
        if !progressed {
            std::thread::sleep(Duration::from_micros(100));
        }
    }
}

fn main() {
    let args = parse_args();
    let mut ctx = Ctx {
        args: &args,
        ids: Ids(0x9E37_79B9_7F4A_7C15 ^ std::process::id() as u64 ^ nanos()),
    };
    let start = Instant::now();
    let mut held: Vec<Session> = Vec::with_capacity(args.count);
    let (mut ok, mut failed) = (0usize, 0usize);
    let mut errors: std::collections::BTreeMap<String, usize> = Default::default();
    let mut next_report = 10_000;
    let mut index = 0usize;
    while index < args.count {
        let n = args.window.min(args.count - index);
        let mut window = Vec::with_capacity(n);
        for k in index..index + n {
            let host = 1 + (k / args.per_ip) as u32;
            let ip = Ipv4Addr::from(u32::from(args.client_net) + host);
            let socket = match UdpSocket::bind((ip, 0)) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("turn-holder: cannot bind client socket {k} on {ip}: {e}");
                    eprintln!("(raise `ulimit -n`, or lower --per-ip)");
                    finish(ok, failed + args.count - k, &errors, start);
                    std::process::exit(1);
                }
            };
            socket.set_nonblocking(true).expect("non-blocking socket");
            window.push(Session {
                socket,
                stage: Stage::Challenge,
                tid: [0; 12],
                nonce: Vec::new(),
                realm: Vec::new(),
                key: [0; 16],
                sends: 0,
                last_error: None,
            });
        }
        drive(&mut ctx, &mut window);
        for s in window {
            if s.stage == Stage::Done {
                ok += 1;
                held.push(s);
            } else {
                failed += 1;
                let what = match s.last_error {
                    Some(0) => "unexpected answer".to_string(),
                    Some(code) => format!("error {code}"),
                    None => "timeout".to_string(),
                };
                *errors.entry(what).or_default() += 1;
            }
        }
        index += n;
        if index >= next_report {
            eprintln!(
                "turn-holder: {index} done ({ok} held, {failed} failed) in {:.1} s",
                start.elapsed().as_secs_f64()
            );
            next_report += 10_000;
        }
    }
    finish(ok, failed, &errors, start);
    // Hold: the sockets (and so the 5-tuples) stay open until killed.
    std::thread::sleep(args.hold);
    drop(held);
}

fn finish(
    ok: usize,
    failed: usize,
    errors: &std::collections::BTreeMap<String, usize>,
    start: Instant,
) {
    let secs = start.elapsed().as_secs_f64();
    let detail: Vec<String> = errors.iter().map(|(k, v)| format!("{k}: {v}")).collect();
    println!(
        "HELD ok={ok} failed={failed} secs={secs:.2} rate={:.0} errors=[{}]",
        ok as f64 / secs.max(1e-9),
        detail.join(", ")
    );
    let _ = std::io::stdout().flush();
}

fn nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1)
}
