//! One TCP or TLS client connection, sans-IO: wire bytes in, frames out to
//! a callback, bytes to send queued for the socket. The worker owns the
//! socket and does the reads and writes; everything here is testable with
//! byte slices and an injected clock.
//!
//! * **Framing** (RFC 8656 §12.5): [`next_frame_len`] cuts the plaintext
//!   stream into STUN and (padded) ChannelData messages. Each complete
//!   frame is handed over exactly, a frame still arriving waits in a
//!   buffer, and anything [`Framing::Invalid`] (bad first bits, bad cookie,
//!   STUN length not a multiple of 4, reserved channel number) closes the
//!   connection: a lying length can hold back only its own connection,
//!   never shift frame boundaries or touch another client.
//! * **Bounded buffers**: the receive buffer never holds more than one
//!   read ([`READ_CHUNK`]) plus one incomplete frame (< [`MAX_FRAME_LEN`]);
//!   the send queue is capped at [`MAX_WRITE_QUEUE`], past which the
//!   connection is closed (its client is not reading).
//! * **TLS**: a [`rustls::ServerConnection`] driven without I/O:
//!   `read_tls` from the received slice, `process_new_packets`, plaintext
//!   from `reader()`, application data into `writer()` and records out
//!   with `write_tls` into the send queue, so one queue and one cap cover
//!   TCP and TLS alike.
//! * **Timers**: a TLS handshake must finish within its timeout; a
//!   connection without an allocation is closed after its idle timeout
//!   (one with an allocation lives as long as the allocation, RFC 8656
//!   §3.1: the allocation ends when its connection does, and the worker
//!   frees it at once).

use std::io::{ErrorKind, Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::{ServerConfig, ServerConnection};

use crate::five_tuple::FiveTuple;
use crate::stun::framing::{next_frame_len, Framing, MAX_FRAME_LEN};

/// Largest read handed to [`StreamConn::receive`] at once.
pub const READ_CHUNK: usize = 64 * 1024;
/// Bytes the send queue may hold; a connection needing more is closed.
pub const MAX_WRITE_QUEUE: usize = 256 * 1024;
/// Queue size past which the worker writes at once instead of at the end
/// of its event batch.
pub const FLUSH_THRESHOLD: usize = 64 * 1024;
/// Largest receive buffer a connection can reach.
pub const MAX_READ_BUFFER: usize = READ_CHUNK + MAX_FRAME_LEN;
/// Plaintext taken from rustls at once (its own buffer is 16 KiB).
const PLAINTEXT_CHUNK: usize = 16 * 1024;
/// Buffers above this capacity are released once empty.
const KEEP_CAPACITY: usize = 16 * 1024;

/// Why a connection is closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CloseReason {
    /// The client closed it (FIN, TLS close_notify).
    Eof,
    /// Bytes that are neither STUN nor ChannelData, or an impossible length.
    Framing,
    /// The TLS layer failed (bad handshake, bad record).
    Tls,
    /// The send queue overflowed: the client does not read.
    WriteQueueFull,
    /// The TLS handshake took too long.
    HandshakeTimeout,
    /// Silent for too long without an allocation.
    IdleTimeout,
    /// A socket error.
    Io,
    /// The connection limit was reached when it was accepted.
    Limit,
    /// Its source opened connections faster than the per-source rate.
    RateLimited,
    /// The worker stopped.
    Shutdown,
}

impl CloseReason {
    /// Lower-case name for logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Eof => "eof",
            Self::Framing => "framing",
            Self::Tls => "tls",
            Self::WriteQueueFull => "write_queue_full",
            Self::RateLimited => "rate_limited",
            Self::HandshakeTimeout => "handshake_timeout",
            Self::IdleTimeout => "idle_timeout",
            Self::Io => "io",
            Self::Limit => "limit",
            Self::Shutdown => "shutdown",
        }
    }
}

/// Timeouts of stream connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamTimeouts {
    /// Time allowed for the TLS handshake.
    pub handshake: Duration,
    /// Silence allowed to a connection without an allocation.
    pub idle: Duration,
}

impl Default for StreamTimeouts {
    fn default() -> Self {
        Self {
            handshake: Duration::from_secs(10),
            idle: Duration::from_secs(60),
        }
    }
}

/// What [`StreamConn::receive`] calls with each complete frame and the
/// connection's sending half; an error closes the connection.
pub type FrameHandler<'a> = dyn FnMut(&[u8], &mut Outbound) -> Result<(), CloseReason> + 'a;

/// The sending half of a connection: the TLS session (if any) and the
/// queue of wire bytes waiting for the socket.
pub struct Outbound {
    tls: Option<Box<ServerConnection>>,
    queue: Vec<u8>,
    sent: usize,
}

impl Outbound {
    /// Queues one message (encrypted first on TLS).
    pub fn send(&mut self, data: &[u8]) -> Result<(), CloseReason> {
        // Checked before queueing, so the queue never passes the cap (TLS
        // adds its record overhead on top).
        if self.pending().len() + data.len() > MAX_WRITE_QUEUE {
            return Err(CloseReason::WriteQueueFull);
        }
        match &mut self.tls {
            None => self.queue.extend_from_slice(data),
            Some(tls) => {
                let mut rest = data;
                while !rest.is_empty() {
                    let n = tls
                        .writer()
                        .write(rest)
                        .map_err(|_| CloseReason::WriteQueueFull)?;
                    if n == 0 {
                        return Err(CloseReason::WriteQueueFull);
                    }
                    rest = rest.get(n..).unwrap_or_default();
                    drain_tls(tls, &mut self.queue)?;
                }
            }
        }
        Ok(())
    }

    /// Wire bytes not yet written to the socket.
    pub fn pending(&self) -> &[u8] {
        self.queue.get(self.sent..).unwrap_or_default()
    }

    /// Marks `n` pending bytes as written.
    pub fn advance(&mut self, n: usize) {
        self.sent = (self.sent + n).min(self.queue.len());
        if self.sent == self.queue.len() {
            self.queue.clear();
            self.sent = 0;
            if self.queue.capacity() > KEEP_CAPACITY {
                self.queue = Vec::new();
            }
        } else if self.sent > self.queue.len() / 2 {
            self.queue.drain(..self.sent);
            self.sent = 0;
        }
    }

    /// True once enough is queued to write without waiting for the end of
    /// the event batch.
    pub fn wants_flush(&self) -> bool {
        self.pending().len() >= FLUSH_THRESHOLD
    }

    /// Writes pending bytes to `w` until done or it would block. Returns
    /// true if everything was written.
    pub fn flush_to(&mut self, w: &mut impl Write) -> std::io::Result<bool> {
        while !self.pending().is_empty() {
            match w.write(self.pending()) {
                Ok(0) => return Err(ErrorKind::WriteZero.into()),
                Ok(n) => self.advance(n),
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }
}

/// Moves every TLS record rustls has ready into `queue`.
fn drain_tls(tls: &mut ServerConnection, queue: &mut Vec<u8>) -> Result<(), CloseReason> {
    while tls.wants_write() {
        match tls.write_tls(queue) {
            Ok(0) => break,
            Ok(_) => {}
            Err(_) => return Err(CloseReason::Io),
        }
    }
    Ok(())
}

/// One client connection's protocol state.
pub struct StreamConn {
    tuple: FiveTuple,
    inbuf: Vec<u8>,
    out: Outbound,
    opened: Instant,
    last_rx: Instant,
}

impl StreamConn {
    /// A new connection from `tuple`, TLS if `tls` is given.
    pub fn new(
        tuple: FiveTuple,
        tls: Option<&Arc<ServerConfig>>,
        now: Instant,
    ) -> Result<Self, rustls::Error> {
        let tls = match tls {
            Some(config) => Some(Box::new(ServerConnection::new(config.clone())?)),
            None => None,
        };
        Ok(Self {
            tuple,
            inbuf: Vec::new(),
            out: Outbound {
                tls,
                queue: Vec::new(),
                sent: 0,
            },
            opened: now,
            last_rx: now,
        })
    }

    /// The connection's 5-tuple.
    pub fn tuple(&self) -> &FiveTuple {
        &self.tuple
    }

    /// The sending half.
    pub fn outbound(&mut self) -> &mut Outbound {
        &mut self.out
    }

    /// True while a TLS handshake is in progress.
    pub fn is_handshaking(&self) -> bool {
        self.out.tls.as_ref().is_some_and(|t| t.is_handshaking())
    }

    /// Bytes buffered of an incomplete frame.
    pub fn buffered(&self) -> usize {
        self.inbuf.len()
    }

    /// Feeds `wire` (at most [`READ_CHUNK`] bytes read from the socket) in
    /// and calls `on_frame` with every complete message, in order, and the
    /// sending half for its answer. An error means: close the connection
    /// (after a last flush, which carries a TLS alert if there is one).
    pub fn receive(
        &mut self,
        now: Instant,
        wire: &[u8],
        on_frame: &mut FrameHandler<'_>,
    ) -> Result<(), CloseReason> {
        self.last_rx = now;
        if self.out.tls.is_none() {
            return frames(&mut self.inbuf, wire, &mut self.out, on_frame);
        }
        let mut rest = wire;
        let mut plain = [0u8; PLAINTEXT_CHUNK];
        loop {
            let Some(tls) = self.out.tls.as_mut() else {
                return Err(CloseReason::Tls);
            };
            if !rest.is_empty() {
                match tls.read_tls(&mut rest) {
                    // close_notify already received: nothing more is read.
                    Ok(0) => return Err(CloseReason::Eof),
                    Ok(_) => {}
                    Err(_) => return Err(CloseReason::Tls),
                }
            }
            let state = match tls.process_new_packets() {
                Ok(state) => state,
                Err(_) => {
                    // Queue the alert rustls prepared; the worker's last
                    // flush sends it.
                    let _ = drain_tls(tls, &mut self.out.queue);
                    return Err(CloseReason::Tls);
                }
            };
            drain_tls(tls, &mut self.out.queue)?;
            let mut available = state.plaintext_bytes_to_read();
            while available > 0 {
                let Some(tls) = self.out.tls.as_mut() else {
                    return Err(CloseReason::Tls);
                };
                let want = available.min(plain.len());
                let Some(chunk) = plain.get_mut(..want) else {
                    return Err(CloseReason::Tls);
                };
                tls.reader()
                    .read_exact(chunk)
                    .map_err(|_| CloseReason::Tls)?;
                available -= want;
                frames(&mut self.inbuf, chunk, &mut self.out, on_frame)?;
            }
            if state.peer_has_closed() {
                return Err(CloseReason::Eof);
            }
            if rest.is_empty() {
                return Ok(());
            }
        }
    }

    /// Why the connection should be closed at `now`, if it should:
    /// handshake too slow, or silent too long without an allocation.
    pub fn check_timers(
        &self,
        now: Instant,
        timeouts: &StreamTimeouts,
        has_allocation: bool,
    ) -> Option<CloseReason> {
        if self.is_handshaking() && now.saturating_duration_since(self.opened) >= timeouts.handshake
        {
            return Some(CloseReason::HandshakeTimeout);
        }
        if !has_allocation && now.saturating_duration_since(self.last_rx) >= timeouts.idle {
            return Some(CloseReason::IdleTimeout);
        }
        None
    }

    /// Starts an orderly close: queues a TLS close_notify.
    pub fn close(&mut self) {
        if let Some(tls) = self.out.tls.as_mut() {
            tls.send_close_notify();
            let _ = drain_tls(tls, &mut self.out.queue);
        }
    }
}

/// Adds `data` to the stream and hands every complete frame to `on_frame`.
/// Zero-copy when nothing was buffered: frames are cut from `data` itself
/// and only an incomplete tail is kept.
fn frames(
    inbuf: &mut Vec<u8>,
    data: &[u8],
    out: &mut Outbound,
    on_frame: &mut FrameHandler<'_>,
) -> Result<(), CloseReason> {
    if inbuf.is_empty() {
        let used = cut(data, out, on_frame)?;
        inbuf.extend_from_slice(data.get(used..).unwrap_or_default());
    } else {
        inbuf.extend_from_slice(data);
        let used = cut(inbuf, out, on_frame)?;
        inbuf.drain(..used.min(inbuf.len()));
        if inbuf.is_empty() && inbuf.capacity() > KEEP_CAPACITY {
            *inbuf = Vec::new();
        }
    }
    // What is left is one incomplete frame, which the framing bounds.
    debug_assert!(inbuf.len() < MAX_FRAME_LEN);
    Ok(())
}

/// Hands the complete frames at the front of `buf` over; returns how many
/// bytes they took.
fn cut(
    buf: &[u8],
    out: &mut Outbound,
    on_frame: &mut FrameHandler<'_>,
) -> Result<usize, CloseReason> {
    let mut used = 0;
    loop {
        let rest = buf.get(used..).unwrap_or_default();
        match next_frame_len(rest) {
            Framing::Complete(n) => {
                let frame = rest.get(..n).ok_or(CloseReason::Framing)?;
                used += n;
                on_frame(frame, out)?;
            }
            Framing::NeedMore => return Ok(used),
            Framing::Invalid => return Err(CloseReason::Framing),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::five_tuple::ClientTransport;
    use crate::stun::{Class, MessageBuilder, Method};

    fn tuple() -> FiveTuple {
        FiveTuple::new(
            "127.0.0.1:40000".parse().unwrap(),
            "127.0.0.1:3478".parse().unwrap(),
            ClientTransport::Tcp,
        )
    }

    fn binding(tid: u8) -> Vec<u8> {
        let mut buf = Vec::new();
        let b = MessageBuilder::new(&mut buf, Class::Request, Method::BINDING, [tid; 12]);
        b.finish(None, true).unwrap();
        buf
    }

    /// Feeds `wire` in pieces of `step`; returns the frames seen.
    fn feed(
        conn: &mut StreamConn,
        wire: &[u8],
        step: usize,
    ) -> (Vec<Vec<u8>>, Result<(), CloseReason>) {
        let mut seen = Vec::new();
        let now = Instant::now();
        for piece in wire.chunks(step.max(1)) {
            let r = conn.receive(now, piece, &mut |f, _| {
                seen.push(f.to_vec());
                Ok(())
            });
            if r.is_err() {
                return (seen, r);
            }
        }
        (seen, Ok(()))
    }

    #[test]
    fn frames_survive_any_split() {
        let mut wire = binding(1);
        wire.extend_from_slice(&[0x40, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5, 0, 0, 0]);
        wire.extend_from_slice(&binding(2));
        for step in 1..wire.len() + 1 {
            let mut conn = StreamConn::new(tuple(), None, Instant::now()).unwrap();
            let (seen, r) = feed(&mut conn, &wire, step);
            assert_eq!(r, Ok(()));
            assert_eq!(seen.len(), 3, "step {step}");
            assert_eq!(seen[0], binding(1));
            assert_eq!(seen[1].len(), 12);
            assert_eq!(seen[2], binding(2));
            assert_eq!(conn.buffered(), 0);
        }
    }

    #[test]
    fn lying_lengths_close_or_wait_bounded() {
        // Garbage first byte.
        let mut conn = StreamConn::new(tuple(), None, Instant::now()).unwrap();
        let (_, r) = feed(&mut conn, &[0xff, 0, 0, 0], 4);
        assert_eq!(r, Err(CloseReason::Framing));
        // A good frame, then a STUN length that is not a multiple of 4:
        // the good one is handled, then the connection closes.
        let mut wire = binding(3);
        wire.extend_from_slice(&[0x00, 0x01, 0x00, 0x07]);
        let mut conn = StreamConn::new(tuple(), None, Instant::now()).unwrap();
        let (seen, r) = feed(&mut conn, &wire, 1000);
        assert_eq!((seen.len(), r), (1, Err(CloseReason::Framing)));
        // A ChannelData header claiming 65535 bytes waits, bounded.
        let mut conn = StreamConn::new(tuple(), None, Instant::now()).unwrap();
        let mut wire = vec![0x40, 0x00, 0xff, 0xff];
        wire.resize(4 + 60_000, 0x41);
        let (seen, r) = feed(&mut conn, &wire, 4096);
        assert_eq!((seen.len(), r), (0, Ok(())));
        assert!(conn.buffered() < MAX_READ_BUFFER);
    }

    #[test]
    fn write_queue_is_capped() {
        let mut conn = StreamConn::new(tuple(), None, Instant::now()).unwrap();
        let chunk = vec![0u8; 16 * 1024];
        let mut result = Ok(());
        for _ in 0..(MAX_WRITE_QUEUE / chunk.len() + 2) {
            result = conn.outbound().send(&chunk);
            if result.is_err() {
                break;
            }
        }
        assert_eq!(result, Err(CloseReason::WriteQueueFull));
        assert!(conn.outbound().pending().len() <= MAX_WRITE_QUEUE);
        // Exactly full: not one byte more.
        assert_eq!(conn.outbound().pending().len(), MAX_WRITE_QUEUE);
        assert_eq!(conn.outbound().send(&[0]), Err(CloseReason::WriteQueueFull));
        // A reader that drains it keeps the connection usable.
        let mut conn = StreamConn::new(tuple(), None, Instant::now()).unwrap();
        let mut sink = Vec::new();
        for _ in 0..100 {
            conn.outbound().send(&chunk).unwrap();
            assert!(conn.outbound().flush_to(&mut sink).unwrap());
        }
        assert_eq!(sink.len(), 100 * chunk.len());
    }

    #[test]
    fn idle_and_handshake_timers() {
        let t0 = Instant::now();
        let timeouts = StreamTimeouts::default();
        let conn = StreamConn::new(tuple(), None, t0).unwrap();
        let later = t0 + timeouts.idle;
        assert_eq!(conn.check_timers(t0, &timeouts, false), None);
        assert_eq!(
            conn.check_timers(later, &timeouts, false),
            Some(CloseReason::IdleTimeout)
        );
        assert_eq!(conn.check_timers(later, &timeouts, true), None);
        let tls = crate::tls::dev_setup(&[]).unwrap();
        let conn = StreamConn::new(tuple(), Some(&tls.config), t0).unwrap();
        assert_eq!(
            conn.check_timers(t0 + timeouts.handshake, &timeouts, true),
            Some(CloseReason::HandshakeTimeout)
        );
    }

    /// A rustls client and a [`StreamConn`] talking through byte vectors:
    /// handshake, a request each way, then garbage inside TLS closes.
    #[test]
    fn tls_in_memory() {
        let setup = crate::tls::dev_setup(&[]).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(setup.chain[0].clone()).unwrap();
        let client_config = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let mut client = rustls::ClientConnection::new(Arc::new(client_config), name).unwrap();
        let mut server = StreamConn::new(tuple(), Some(&setup.config), Instant::now()).unwrap();
        let mut seen: Vec<Vec<u8>> = Vec::new();
        let mut echo = |f: &[u8], out: &mut Outbound| {
            seen.push(f.to_vec());
            out.send(f)
        };
        client.writer().write_all(&binding(7)).unwrap();
        let mut received = Vec::new();
        for _ in 0..10 {
            let mut wire = Vec::new();
            while client.wants_write() {
                client.write_tls(&mut wire).unwrap();
            }
            if !wire.is_empty() {
                server.receive(Instant::now(), &wire, &mut echo).unwrap();
            }
            let mut back = Vec::new();
            server.outbound().flush_to(&mut back).unwrap();
            if !back.is_empty() {
                client.read_tls(&mut back.as_slice()).unwrap();
                client.process_new_packets().unwrap();
                let _ = client.reader().read_to_end(&mut received);
            }
        }
        assert!(!server.is_handshaking());
        assert_eq!(received, binding(7));
        // Garbage plaintext inside a valid TLS record closes the connection.
        client.writer().write_all(&[0xff; 8]).unwrap();
        let mut wire = Vec::new();
        client.write_tls(&mut wire).unwrap();
        assert_eq!(
            server.receive(Instant::now(), &wire, &mut echo),
            Err(CloseReason::Framing)
        );
        assert_eq!(seen, vec![binding(7)]);
        // Garbage in place of TLS closes it too.
        let mut other = StreamConn::new(tuple(), Some(&setup.config), Instant::now()).unwrap();
        assert_eq!(
            other.receive(Instant::now(), &binding(1), &mut |_, _| Ok(())),
            Err(CloseReason::Tls)
        );
    }
}
