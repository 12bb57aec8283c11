//! When a datagram reached the socket, from the kernel (`SO_TIMESTAMPNS`),
//! rather than when a program got round to reading it.
//!
//! A receiver that reports arrival times to the sender (transport-wide
//! congestion control feedback) must not report its own lag as network
//! delay: a busy loop that reads a backlog at once would stamp packets that
//! arrived evenly as a late burst, which a delay-based bandwidth estimator
//! reads as a queue building up.
//!
//! ```
//! # fn main() -> std::io::Result<()> {
//! use std::time::{Duration, Instant};
//! let rx = std::net::UdpSocket::bind("127.0.0.1:0")?;
//! let tx = std::net::UdpSocket::bind("127.0.0.1:0")?;
//! platform::arrival::enable(&rx)?;
//! tx.send_to(b"hello", rx.local_addr()?)?;
//! std::thread::sleep(Duration::from_millis(20));
//! let mut buf = [0u8; 64];
//! let clock = platform::arrival::Clock::now();
//! let got = platform::arrival::recv_from(&rx, &mut buf, &clock)?;
//! assert_eq!(&buf[..got.len], b"hello");
//! assert_eq!(got.from, tx.local_addr()?);
//! // When it reached the socket: ≈ 20 ms before `clock` was read, once
//! // the kernel stamps arrivals (see `enable`).
//! assert!(got.at <= Instant::now());
//! # Ok(())
//! # }
//! ```

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::time::{Instant, SystemTime};

/// A datagram read with its arrival time.
#[derive(Debug, Clone, Copy)]
pub struct Arrival {
    /// Its length in the buffer.
    pub len: usize,
    /// Its source.
    pub from: SocketAddr,
    /// When it reached the socket (the reading time if the kernel gave
    /// none).
    pub at: Instant,
}

/// The wall clock and the monotonic clock read together, to turn the
/// kernel's wall-clock stamps into [`Instant`]s. Read it once per batch of
/// reads.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    wall: SystemTime,
    mono: Instant,
}

impl Clock {
    /// Both clocks now.
    pub fn now() -> Self {
        Self {
            wall: SystemTime::now(),
            mono: Instant::now(),
        }
    }

    /// `stamp` (wall clock) as an [`Instant`]; never later than the
    /// reading, and the reading itself if the stamp is in its future (the
    /// wall clock stepped).
    pub fn instant(&self, stamp: SystemTime) -> Instant {
        match self.wall.duration_since(stamp) {
            Ok(ago) => self.mono.checked_sub(ago).unwrap_or(self.mono),
            Err(_) => self.mono,
        }
    }
}

/// Asks the kernel to stamp every datagram `socket` receives. When no
/// socket of the machine had asked before, Linux turns arrival stamping on
/// a moment later (from a work queue): the first datagrams are stamped when
/// read.
pub fn enable(socket: &impl AsRawFd) -> io::Result<()> {
    sys::enable(socket.as_raw_fd())
}

/// Reads one datagram into `buf` with its arrival time (see [`enable`]).
pub fn recv_from(socket: &impl AsRawFd, buf: &mut [u8], clock: &Clock) -> io::Result<Arrival> {
    let (len, from, stamp) = sys::recv(socket.as_raw_fd(), buf)?;
    let at = stamp.map_or(clock.mono, |s| clock.instant(s));
    Ok(Arrival { len, from, at })
}

mod sys {
    use std::io::{self, IoSliceMut};
    use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
    use std::os::fd::RawFd;
    use std::time::SystemTime;

    use nix::sys::socket::{recvmsg, MsgFlags, SockaddrStorage};

    #[cfg(target_os = "linux")]
    pub fn enable(fd: RawFd) -> io::Result<()> {
        use nix::sys::socket::{setsockopt, sockopt};
        setsockopt(fd, sockopt::ReceiveTimestampns, &true).map_err(io::Error::from)
    }

    /// No kernel stamps here: the reading time stands in.
    #[cfg(not(target_os = "linux"))]
    pub fn enable(_fd: RawFd) -> io::Result<()> {
        Ok(())
    }

    pub fn recv(fd: RawFd, buf: &mut [u8]) -> io::Result<(usize, SocketAddr, Option<SystemTime>)> {
        let mut control = nix::cmsg_space!(nix::sys::time::TimeSpec);
        let mut iov = [IoSliceMut::new(buf)];
        let msg = recvmsg::<SockaddrStorage>(fd, &mut iov, Some(&mut control), MsgFlags::empty())
            .map_err(io::Error::from)?;
        let stamp = msg.cmsgs().find_map(stamp);
        let from = msg.address.as_ref().and_then(socket_addr).ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidData, "datagram without an IP source")
        })?;
        Ok((msg.bytes, from, stamp))
    }

    #[cfg(target_os = "linux")]
    fn stamp(c: nix::sys::socket::ControlMessageOwned) -> Option<SystemTime> {
        use nix::sys::socket::ControlMessageOwned;
        use std::time::Duration;
        let ControlMessageOwned::ScmTimestampns(ts) = c else {
            return None;
        };
        let since = Duration::new(ts.tv_sec().try_into().ok()?, ts.tv_nsec().try_into().ok()?);
        SystemTime::UNIX_EPOCH.checked_add(since)
    }

    #[cfg(not(target_os = "linux"))]
    fn stamp(_: nix::sys::socket::ControlMessageOwned) -> Option<SystemTime> {
        None
    }

    fn socket_addr(a: &SockaddrStorage) -> Option<SocketAddr> {
        if let Some(v4) = a.as_sockaddr_in() {
            return Some(SocketAddrV4::from(*v4).into());
        }
        a.as_sockaddr_in6().map(|v6| SocketAddrV6::from(*v6).into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_stamp_becomes_the_instant_that_long_ago() {
        let clock = Clock::now();
        let at = clock.instant(clock.wall - Duration::from_millis(30));
        assert_eq!(clock.mono - at, Duration::from_millis(30));
        // A stamp in the future (the wall clock stepped back) is "now".
        assert_eq!(
            clock.instant(clock.wall + Duration::from_secs(5)),
            clock.mono
        );
    }

    #[test]
    fn a_backlog_read_at_once_keeps_the_times_it_arrived() {
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        enable(&rx).unwrap();
        let to = rx.local_addr().unwrap();
        let mut buf = [0u8; 16];
        // Until the kernel stamps arrivals (see `enable`): a probe read
        // 15 ms after it was sent must be stamped at least 10 ms earlier.
        let stamping = (0..100).any(|_| {
            tx.send_to(&[0xff], to).unwrap();
            std::thread::sleep(Duration::from_millis(15));
            let clock = Clock::now();
            let got = recv_from(&rx, &mut buf, &clock).unwrap();
            got.at + Duration::from_millis(10) <= clock.mono
        });
        assert!(stamping, "the kernel never stamped an arrival");
        for i in 0..3u8 {
            tx.send_to(&[i], to).unwrap();
            std::thread::sleep(Duration::from_millis(15));
        }
        let clock = Clock::now();
        let times: Vec<Instant> = (0..3)
            .map(|i| {
                let got = recv_from(&rx, &mut buf, &clock).unwrap();
                assert_eq!(
                    (got.len, buf[0], got.from),
                    (1, i, tx.local_addr().unwrap())
                );
                got.at
            })
            .collect();
        // Read together, stamped ≈ 15 ms apart as sent.
        for pair in times.windows(2) {
            let gap = pair[1] - pair[0];
            assert!(gap >= Duration::from_millis(10), "gap {gap:?}");
        }
    }
}
