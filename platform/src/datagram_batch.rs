//! Batched UDP I/O: `recvmmsg` fills up to [`BATCH`] datagrams per system
//! call, `sendmmsg` sends a queue of datagrams to many destinations in one,
//! and runs of equal-sized datagrams to one destination leave as one UDP
//! GSO (`UDP_SEGMENT`) message the kernel splits. The relay's workers use
//! it on mio sockets, the SFU's shell on its tokio socket ([`Datagrams`]).
//!
//! On loopback a relayed datagram costs the server a few microseconds of
//! kernel time. One call per batch saves the per-call share (entry,
//! descriptor lookup, readiness bookkeeping); GSO also saves building and
//! routing each datagram, which is most of the rest. See
//! `benches/RESULTS.md` for how much each saves.
//!
//! This is the crate's only `unsafe` code: std has no `recvmmsg`,
//! `sendmmsg` or control messages, quinn-udp sends one destination per
//! call, and nix 0.26 does not reset `msg_namelen` between `recvmmsg`
//! calls. Every block builds C headers that point into buffers owned by
//! the calling frame for the duration of one system call. On other
//! systems the same types fall back to one `recv_from`/`send_to` each.
#![allow(unsafe_code)]

use std::io;
use std::net::SocketAddr;

/// A non-blocking UDP socket the batches work on: the relay's (mio) or the
/// SFU's (tokio).
pub trait Datagrams {
    /// One datagram to `to`; `WouldBlock` if the send buffer is full.
    fn send_one(&self, data: &[u8], to: SocketAddr) -> io::Result<usize>;
    /// One datagram; `WouldBlock` if none is waiting.
    fn recv_one(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)>;
    /// The descriptor the batched system calls use.
    #[cfg(target_os = "linux")]
    fn fd(&self) -> std::os::fd::RawFd;
}

impl Datagrams for mio::net::UdpSocket {
    fn send_one(&self, data: &[u8], to: SocketAddr) -> io::Result<usize> {
        self.send_to(data, to)
    }
    fn recv_one(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        self.recv_from(buf)
    }
    #[cfg(target_os = "linux")]
    fn fd(&self) -> std::os::fd::RawFd {
        std::os::fd::AsRawFd::as_raw_fd(self)
    }
}

impl Datagrams for tokio::net::UdpSocket {
    fn send_one(&self, data: &[u8], to: SocketAddr) -> io::Result<usize> {
        self.try_send_to(data, to)
    }
    fn recv_one(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        self.try_recv_from(buf)
    }
    #[cfg(target_os = "linux")]
    fn fd(&self) -> std::os::fd::RawFd {
        std::os::fd::AsRawFd::as_raw_fd(self)
    }
}

/// Datagrams per system call.
pub const BATCH: usize = 32;
/// Largest datagram a receive slot holds (the UDP maximum, rounded up).
pub const MAX_DATAGRAM: usize = 64 * 1024;
/// GSO limits: segments per message (the kernel's `UDP_MAX_SEGMENTS` is
/// 64 on older kernels) and bytes per message (below the IP maximum).
const GSO_MAX_SEGMENTS: usize = 64;
const GSO_MAX_BYTES: usize = 60_000;

/// Receive slots for one `recvmmsg` and what the last call received.
pub struct RecvBatch {
    /// [`BATCH`] slots of [`MAX_DATAGRAM`] bytes. Untouched pages stay
    /// out of RSS: with 1200-byte datagrams each slot touches one page.
    buf: Vec<u8>,
    /// Length and source of each datagram of the last call.
    got: Vec<(usize, SocketAddr)>,
}

impl Default for RecvBatch {
    fn default() -> Self {
        Self::new()
    }
}

impl RecvBatch {
    /// Empty slots.
    pub fn new() -> Self {
        Self {
            buf: vec![0; BATCH * MAX_DATAGRAM],
            got: Vec::with_capacity(BATCH),
        }
    }

    /// Receives up to [`BATCH`] datagrams from the non-blocking `socket`;
    /// `WouldBlock` if none is waiting. Fewer than [`BATCH`] means the
    /// socket's queue was empty when the call returned. Truncated
    /// datagrams and unknown address families are dropped here.
    pub fn recv(&mut self, socket: &impl Datagrams) -> io::Result<usize> {
        self.got.clear();
        sys::recv(socket, &mut self.buf, &mut self.got)?;
        Ok(self.got.len())
    }

    /// Datagrams of the last [`Self::recv`], in arrival order.
    pub fn len(&self) -> usize {
        self.got.len()
    }

    /// No datagram from the last call.
    pub fn is_empty(&self) -> bool {
        self.got.is_empty()
    }

    /// The `i`th datagram of the last call and its source.
    pub fn get(&self, i: usize) -> Option<(&[u8], SocketAddr)> {
        let &(len, from) = self.got.get(i)?;
        let start = i * MAX_DATAGRAM;
        Some((self.buf.get(start..start + len)?, from))
    }
}

/// One queued datagram: a range of [`SendQueue::data`].
#[derive(Clone, Copy)]
struct Queued {
    start: usize,
    len: usize,
    to: SocketAddr,
}

/// Datagrams waiting to leave one socket, in order.
#[derive(Default)]
pub struct SendQueue {
    data: Vec<u8>,
    items: Vec<Queued>,
    /// Items before this one are sent (see [`SendQueue::send_until_full`]).
    head: usize,
    /// Cleared after the kernel refused GSO as unsupported.
    gso_off: bool,
}

/// What a [`SendQueue::flush`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Flushed {
    /// Datagrams the kernel took.
    pub sent: usize,
    /// Datagrams dropped: a full send buffer, or refused one by one
    /// (unreachable destination and the like).
    pub dropped: usize,
    /// System calls made.
    pub calls: usize,
}

impl SendQueue {
    /// An empty queue, GSO allowed.
    pub fn new() -> Self {
        Self::default()
    }

    /// Queues a copy of `data` for `to`.
    pub fn push(&mut self, to: SocketAddr, data: &[u8]) {
        self.items.push(Queued {
            start: self.data.len(),
            len: data.len(),
            to,
        });
        self.data.extend_from_slice(data);
    }

    /// Datagrams queued.
    pub fn len(&self) -> usize {
        self.items.len() - self.head
    }

    /// Nothing queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn clear(&mut self) {
        self.items.clear();
        self.data.clear();
        self.head = 0;
    }

    /// Sends everything queued on `socket` and empties the queue. What the
    /// socket does not take at once is dropped, as a single `send_to` that
    /// fails with `WouldBlock` would drop it: UDP has no back-pressure and
    /// the client retransmits what matters.
    pub fn flush(&mut self, socket: &impl Datagrams) -> Flushed {
        let mut done = Flushed::default();
        if let [one] = self.items[self.head..] {
            // The common case on a relay socket: no headers to build.
            done.calls = 1;
            let data = self
                .data
                .get(one.start..one.start + one.len)
                .unwrap_or_default();
            match socket.send_one(data, one.to) {
                Ok(_) => done.sent = 1,
                Err(e) => {
                    tracing::debug!("send to {}: {e}", one.to);
                    done.dropped = 1;
                }
            }
        } else {
            let (cursor, _) = self.send_from(socket, self.head, &mut done);
            done.dropped += self.items.len() - cursor;
        }
        self.clear();
        done
    }

    /// Sends what is queued until the socket's buffer is full and keeps the
    /// rest for the next call, for a sender that waits for the socket to
    /// become writable again instead of dropping (the SFU keeps its pace
    /// to the socket's, as an awaited `send_to` would).
    pub fn send_until_full(&mut self, socket: &impl Datagrams) -> Flushed {
        let mut done = Flushed::default();
        let (cursor, full) = self.send_from(socket, self.head, &mut done);
        if full {
            self.head = cursor;
        } else {
            self.clear();
        }
        done
    }

    /// Sends from item `cursor` on; returns where it stopped and whether
    /// the socket was full there (else everything from `cursor` was sent
    /// or dropped one by one).
    fn send_from(
        &mut self,
        socket: &impl Datagrams,
        mut cursor: usize,
        done: &mut Flushed,
    ) -> (usize, bool) {
        // Bounded: every pass either advances the cursor or turns GSO off
        // (at most once) before advancing.
        while cursor < self.items.len() {
            let (plan, planned) = self.plan(cursor);
            let plan = &plan[..planned];
            done.calls += 1;
            match sys::send(socket, &self.data, &self.items, plan) {
                Ok(n) if n > 0 => {
                    let Some(last) = plan.get(n - 1) else { break };
                    done.sent += last.end - cursor;
                    cursor = last.end;
                }
                Ok(_) => return (cursor, true),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return (cursor, true),
                Err(e) => {
                    let Some(&first) = plan.first() else { break };
                    if first.segments() > 1 {
                        // GSO refused: by the device or kernel (then never
                        // again), or for this run only (e.g. larger than the
                        // route's MTU). Either way send the run one by one.
                        if gso_unsupported(&e) {
                            self.gso_off = true;
                        }
                        self.send_singly(socket, first, done);
                    } else {
                        tracing::debug!("send to {}: {e}", self.items[first.first].to);
                        done.dropped += 1;
                    }
                    cursor = first.end;
                }
            }
        }
        (cursor.min(self.items.len()), false)
    }

    /// Sends the datagrams of `run` one message each, in as few calls as
    /// [`BATCH`] allows.
    fn send_singly(&self, socket: &impl Datagrams, run: Message, done: &mut Flushed) {
        let mut single = [Message::default(); BATCH];
        let mut next = run.first;
        while next < run.end {
            let count = (run.end - next).min(BATCH);
            for (k, m) in single.iter_mut().take(count).enumerate() {
                *m = Message {
                    first: next + k,
                    end: next + k + 1,
                    segment: 0,
                };
            }
            done.calls += 1;
            let sent = sys::send(socket, &self.data, &self.items, &single[..count]).unwrap_or(0);
            done.sent += sent;
            done.dropped += count - sent;
            next += count;
        }
    }

    /// Up to [`BATCH`] messages from `cursor`: single datagrams, or GSO
    /// runs of consecutive datagrams to one destination whose sizes are
    /// equal (the last may be shorter, as the kernel splits).
    fn plan(&self, cursor: usize) -> ([Message; BATCH], usize) {
        let mut plan = [Message::default(); BATCH];
        let mut planned = 0;
        let mut i = cursor;
        while i < self.items.len() && planned < BATCH {
            let head = self.items[i];
            let mut end = i + 1;
            if !self.gso_off && sys::GSO && head.len > 0 {
                let mut bytes = head.len;
                while end < self.items.len()
                    && end - i < GSO_MAX_SEGMENTS
                    && self.items[end].to == head.to
                    && self.items[end].len <= head.len
                    && self.items[end].len > 0
                    && bytes + self.items[end].len <= GSO_MAX_BYTES
                {
                    bytes += self.items[end].len;
                    end += 1;
                    // Only the last segment may be shorter.
                    if self.items[end - 1].len < head.len {
                        break;
                    }
                }
            }
            plan[planned] = Message {
                first: i,
                end,
                segment: if end - i > 1 { head.len } else { 0 },
            };
            planned += 1;
            i = end;
        }
        (plan, planned)
    }
}

/// One message of a `sendmmsg`: queued datagrams `first..end`, contiguous
/// in the queue's buffer, GSO-segmented at `segment` bytes if more than one.
#[derive(Clone, Copy, Debug, Default)]
struct Message {
    first: usize,
    end: usize,
    segment: usize,
}

impl Message {
    fn segments(&self) -> usize {
        self.end - self.first
    }
}

/// Errors that mean the kernel or device cannot do UDP GSO at all.
fn gso_unsupported(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(code) if code == sys::EIO || code == sys::ENOPROTOOPT || code == sys::EOPNOTSUPP
    )
}

#[cfg(target_os = "linux")]
mod sys {
    //! `recvmmsg`/`sendmmsg` through libc.

    use super::{Datagrams, Message, Queued, BATCH, MAX_DATAGRAM};
    use std::io;
    use std::mem::{size_of, zeroed};
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

    pub const GSO: bool = true;
    pub const EIO: i32 = libc::EIO;
    pub const ENOPROTOOPT: i32 = libc::ENOPROTOOPT;
    pub const EOPNOTSUPP: i32 = libc::EOPNOTSUPP;

    /// Storage for a source or destination: big enough for both families
    /// (the kernel never writes more than `msg_namelen`), and less to
    /// clear per call than `sockaddr_storage`.
    type Name = libc::sockaddr_in6;

    /// Room for one `UDP_SEGMENT` control message (a u16), 8-aligned.
    #[repr(C, align(8))]
    #[derive(Clone, Copy)]
    struct Control([u8; 32]);

    pub fn recv(
        socket: &impl Datagrams,
        buf: &mut [u8],
        got: &mut Vec<(usize, SocketAddr)>,
    ) -> io::Result<()> {
        // SAFETY: all-zero is a valid value of these plain C structs
        // (null pointers, zero lengths).
        let mut names: [Name; BATCH] = unsafe { zeroed() };
        let mut iovs: [libc::iovec; BATCH] = unsafe { zeroed() };
        let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { zeroed() };
        let mut slots = 0;
        for (((slot, iov), hdr), name) in buf
            .chunks_exact_mut(MAX_DATAGRAM)
            .zip(iovs.iter_mut())
            .zip(hdrs.iter_mut())
            .zip(names.iter_mut())
        {
            iov.iov_base = slot.as_mut_ptr().cast();
            iov.iov_len = slot.len();
            hdr.msg_hdr.msg_name = (name as *mut Name).cast();
            hdr.msg_hdr.msg_namelen = size_of::<Name>() as libc::socklen_t;
            hdr.msg_hdr.msg_iov = iov;
            hdr.msg_hdr.msg_iovlen = 1;
            slots += 1;
        }
        // SAFETY: `hdrs[..slots]` point at `slots` distinct slots of `buf`
        // (each `iov_len` long) and at `names`, all live and exclusively
        // borrowed until the call returns; the kernel writes at most that.
        let n = unsafe {
            libc::recvmmsg(
                socket.fd(),
                hdrs.as_mut_ptr(),
                slots as libc::c_uint,
                0,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        for (hdr, name) in hdrs.iter().zip(names.iter()).take(n as usize) {
            if hdr.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
                continue;
            }
            if let Some(from) = socket_addr(name, hdr.msg_hdr.msg_namelen) {
                got.push((hdr.msg_len as usize, from));
            }
        }
        Ok(())
    }

    pub fn send(
        socket: &impl Datagrams,
        data: &[u8],
        items: &[Queued],
        plan: &[Message],
    ) -> io::Result<usize> {
        // SAFETY: as in `recv`, all-zero values of plain C structs.
        let mut names: [Name; BATCH] = unsafe { zeroed() };
        let mut iovs: [libc::iovec; BATCH] = unsafe { zeroed() };
        let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { zeroed() };
        let mut controls = [Control([0; 32]); BATCH];
        let mut count = 0;
        for ((((message, iov), hdr), name), control) in plan
            .iter()
            .zip(iovs.iter_mut())
            .zip(hdrs.iter_mut())
            .zip(names.iter_mut())
            .zip(controls.iter_mut())
        {
            let (Some(head), Some(last)) = (items.get(message.first), items.get(message.end - 1))
            else {
                break;
            };
            let Some(bytes) = data.get(head.start..last.start + last.len) else {
                break;
            };
            iov.iov_base = bytes.as_ptr() as *mut libc::c_void;
            iov.iov_len = bytes.len();
            hdr.msg_hdr.msg_namelen = write_socket_addr(head.to, name);
            hdr.msg_hdr.msg_name = (name as *mut Name).cast();
            hdr.msg_hdr.msg_iov = iov;
            hdr.msg_hdr.msg_iovlen = 1;
            if message.segments() > 1 {
                let Ok(segment) = u16::try_from(message.segment) else {
                    break;
                };
                // SAFETY: CMSG_SPACE is arithmetic on a constant.
                let space = unsafe { libc::CMSG_SPACE(size_of::<u16>() as libc::c_uint) };
                hdr.msg_hdr.msg_control = control.0.as_mut_ptr().cast();
                hdr.msg_hdr.msg_controllen = space as usize;
                // SAFETY: msg_control points at `control`, 8-aligned and
                // larger than CMSG_SPACE(2) = 24 bytes, so the first header
                // and its 2-byte payload lie inside it.
                unsafe {
                    let cmsg = libc::CMSG_FIRSTHDR(&hdr.msg_hdr);
                    if cmsg.is_null() {
                        break;
                    }
                    (*cmsg).cmsg_level = libc::SOL_UDP;
                    (*cmsg).cmsg_type = libc::UDP_SEGMENT;
                    (*cmsg).cmsg_len = libc::CMSG_LEN(size_of::<u16>() as libc::c_uint) as usize;
                    std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<u16>(), segment);
                }
            }
            count += 1;
        }
        if count == 0 {
            return Ok(0);
        }
        // SAFETY: `hdrs[..count]` point into `data` (only read by the
        // kernel), `names` and `controls`, all live until the call returns.
        let n = unsafe { libc::sendmmsg(socket.fd(), hdrs.as_mut_ptr(), count as libc::c_uint, 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }

    fn socket_addr(name: &Name, len: libc::socklen_t) -> Option<SocketAddr> {
        let len = len as usize;
        // The family field is at the same offset in both layouts.
        match name.sin6_family as libc::c_int {
            libc::AF_INET if len >= size_of::<libc::sockaddr_in>() => {
                // SAFETY: the kernel wrote a sockaddr_in (family and
                // length say so) into storage that is larger and as aligned.
                let a = unsafe { &*(name as *const Name).cast::<libc::sockaddr_in>() };
                Some(SocketAddr::V4(SocketAddrV4::new(
                    Ipv4Addr::from(a.sin_addr.s_addr.to_ne_bytes()),
                    u16::from_be(a.sin_port),
                )))
            }
            libc::AF_INET6 if len >= size_of::<libc::sockaddr_in6>() => {
                let a = name;
                Some(SocketAddr::V6(SocketAddrV6::new(
                    Ipv6Addr::from(a.sin6_addr.s6_addr),
                    u16::from_be(a.sin6_port),
                    a.sin6_flowinfo,
                    a.sin6_scope_id,
                )))
            }
            _ => None,
        }
    }

    fn write_socket_addr(addr: SocketAddr, name: &mut Name) -> libc::socklen_t {
        match addr {
            SocketAddr::V4(a) => {
                // SAFETY: sockaddr_in6 is larger than and as aligned as
                // sockaddr_in; all-zero is a valid sockaddr_in.
                let out = unsafe { &mut *(name as *mut Name).cast::<libc::sockaddr_in>() };
                out.sin_family = libc::AF_INET as libc::sa_family_t;
                out.sin_port = a.port().to_be();
                out.sin_addr.s_addr = u32::from_ne_bytes(a.ip().octets());
                size_of::<libc::sockaddr_in>() as libc::socklen_t
            }
            SocketAddr::V6(a) => {
                let out = name;
                out.sin6_family = libc::AF_INET6 as libc::sa_family_t;
                out.sin6_port = a.port().to_be();
                out.sin6_flowinfo = a.flowinfo();
                out.sin6_addr.s6_addr = a.ip().octets();
                out.sin6_scope_id = a.scope_id();
                size_of::<libc::sockaddr_in6>() as libc::socklen_t
            }
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod sys {
    //! One `recv_from`/`send_to` per datagram.

    use std::io;
    use std::net::SocketAddr;

    use super::{Datagrams, Message, Queued, BATCH, MAX_DATAGRAM};

    pub const GSO: bool = false;
    pub const EIO: i32 = -1;
    pub const ENOPROTOOPT: i32 = -1;
    pub const EOPNOTSUPP: i32 = -1;

    pub fn recv(
        socket: &impl Datagrams,
        buf: &mut [u8],
        got: &mut Vec<(usize, SocketAddr)>,
    ) -> io::Result<()> {
        for slot in buf.chunks_exact_mut(MAX_DATAGRAM).take(BATCH) {
            match socket.recv_one(slot) {
                Ok((n, from)) => got.push((n, from)),
                Err(e) if got.is_empty() => return Err(e),
                Err(_) => break,
            }
        }
        Ok(())
    }

    pub fn send(
        socket: &impl Datagrams,
        data: &[u8],
        items: &[Queued],
        plan: &[Message],
    ) -> io::Result<usize> {
        for (i, message) in plan.iter().enumerate() {
            let Some(item) = items.get(message.first) else {
                return Ok(i);
            };
            let Some(bytes) = data.get(item.start..item.start + item.len) else {
                return Ok(i);
            };
            if let Err(e) = socket.send_one(bytes, item.to) {
                return if i == 0 { Err(e) } else { Ok(i) };
            }
        }
        Ok(plan.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mio::net::UdpSocket;
    use std::time::{Duration, Instant};

    fn bound() -> UdpSocket {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        s.set_nonblocking(true).unwrap();
        UdpSocket::from_std(s)
    }

    /// Receives until `want` datagrams arrived or a second passed.
    fn recv_all(
        batch: &mut RecvBatch,
        socket: &UdpSocket,
        want: usize,
    ) -> Vec<(Vec<u8>, SocketAddr)> {
        let mut out = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(1);
        while out.len() < want && Instant::now() < deadline {
            match batch.recv(socket) {
                Ok(_) => {
                    for i in 0..batch.len() {
                        let (d, from) = batch.get(i).unwrap();
                        out.push((d.to_vec(), from));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(1))
                }
                Err(e) => panic!("recv: {e}"),
            }
        }
        out
    }

    #[test]
    fn many_destinations_in_order_and_sources_reported() {
        let tx = bound();
        let rx: Vec<UdpSocket> = (0..3).map(|_| bound()).collect();
        let mut q = SendQueue::new();
        for i in 0..90u8 {
            let to = rx[usize::from(i) % 3].local_addr().unwrap();
            q.push(to, &[i; 100]);
        }
        let done = q.flush(&tx);
        assert_eq!(done.sent, 90);
        assert_eq!(done.dropped, 0);
        // 90 messages of which none can merge (destinations alternate).
        assert_eq!(done.calls, 90_usize.div_ceil(BATCH));
        assert!(q.is_empty());
        let mut batch = RecvBatch::new();
        for (k, socket) in rx.iter().enumerate() {
            let got = recv_all(&mut batch, socket, 30);
            assert_eq!(got.len(), 30);
            for (j, (data, from)) in got.iter().enumerate() {
                assert_eq!(*from, tx.local_addr().unwrap());
                assert_eq!(data, &vec![(j * 3 + k) as u8; 100]);
            }
        }
    }

    #[test]
    fn a_tokio_socket_sends_until_full_and_keeps_nothing_when_all_fit() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .unwrap();
        let _guard = rt.enter();
        let std_tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        std_tx.set_nonblocking(true).unwrap();
        let tx = tokio::net::UdpSocket::from_std(std_tx).unwrap();
        let rx = bound();
        let to = rx.local_addr().unwrap();
        let mut q = SendQueue::new();
        // Two subscribers' worth of a frame: equal packets, then a shorter.
        for i in 0..40u8 {
            q.push(to, &[i; 1000][..if i == 39 { 500 } else { 1000 }]);
        }
        assert_eq!(q.len(), 40);
        let done = q.send_until_full(&tx);
        assert_eq!((done.sent, done.dropped), (40, 0));
        assert!(q.is_empty());
        let got = recv_all(&mut RecvBatch::new(), &rx, 40);
        assert_eq!(got.len(), 40);
        for (i, (data, _)) in got.iter().enumerate() {
            assert_eq!(data.len(), if i == 39 { 500 } else { 1000 });
            assert!(data.iter().all(|&b| usize::from(b) == i));
        }
    }

    #[test]
    fn a_burst_to_one_destination_arrives_as_separate_datagrams() {
        let tx = bound();
        let rx = bound();
        let to = rx.local_addr().unwrap();
        let mut q = SendQueue::new();
        for i in 0..10u8 {
            q.push(to, &[i; 1200]);
        }
        q.push(to, &[0xee; 300]);
        let done = q.flush(&tx);
        assert_eq!((done.sent, done.dropped), (11, 0));
        // One GSO message where the kernel has UDP_SEGMENT.
        if sys::GSO && !q.gso_off {
            assert_eq!(done.calls, 1);
        }
        let got = recv_all(&mut RecvBatch::new(), &rx, 11);
        let sizes: Vec<usize> = got.iter().map(|(d, _)| d.len()).collect();
        assert_eq!(sizes, [vec![1200; 10], vec![300]].concat());
        for (i, (d, _)) in got.iter().take(10).enumerate() {
            assert!(d.iter().all(|&b| b == i as u8));
        }
        assert!(got[10].0.iter().all(|&b| b == 0xee));
    }

    #[test]
    fn a_larger_datagram_ends_a_run_and_order_is_kept() {
        let tx = bound();
        let rx = bound();
        let to = rx.local_addr().unwrap();
        let mut q = SendQueue::new();
        let sizes = [500, 500, 400, 500, 900, 900, 0, 7];
        for (i, &n) in sizes.iter().enumerate() {
            q.push(to, &vec![i as u8; n]);
        }
        assert_eq!(q.flush(&tx).sent, sizes.len());
        let got = recv_all(&mut RecvBatch::new(), &rx, sizes.len());
        let lens: Vec<usize> = got.iter().map(|(d, _)| d.len()).collect();
        assert_eq!(lens, sizes);
        for (i, (d, _)) in got.iter().enumerate() {
            assert!(d.iter().all(|&b| b == i as u8));
        }
    }

    #[test]
    fn ipv6_sources_and_destinations() {
        let Ok(s) = std::net::UdpSocket::bind("[::1]:0") else {
            return; // no IPv6 loopback in this sandbox
        };
        s.set_nonblocking(true).unwrap();
        let rx = UdpSocket::from_std(s);
        let tx = {
            let s = std::net::UdpSocket::bind("[::1]:0").unwrap();
            s.set_nonblocking(true).unwrap();
            UdpSocket::from_std(s)
        };
        let mut q = SendQueue::new();
        q.push(rx.local_addr().unwrap(), b"six");
        assert_eq!(q.flush(&tx).sent, 1);
        let got = recv_all(&mut RecvBatch::new(), &rx, 1);
        assert_eq!(got, vec![(b"six".to_vec(), tx.local_addr().unwrap())]);
    }

    #[test]
    fn empty_socket_would_block_and_unreachable_is_skipped() {
        let rx = bound();
        let mut batch = RecvBatch::new();
        let e = batch.recv(&rx).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        // A v6 destination from a v4 socket fails alone; the rest go out.
        let tx = bound();
        let mut q = SendQueue::new();
        q.push("[::1]:9".parse().unwrap(), b"bad");
        q.push(rx.local_addr().unwrap(), b"good");
        let done = q.flush(&tx);
        assert_eq!((done.sent, done.dropped), (1, 1));
        let got = recv_all(&mut batch, &rx, 1);
        assert_eq!(got[0].0, b"good");
    }
}
