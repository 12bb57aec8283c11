//! The echo peer: a UDP socket that sends every datagram back to where it
//! came from (the TURN server's relayed address), counting them.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// A running echo peer.
pub struct EchoPeer {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Datagrams echoed so far.
    pub echoed: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EchoPeer {
    /// Binds `bind` (port 0 for any) and starts echoing.
    pub fn start(bind: SocketAddr) -> std::io::Result<EchoPeer> {
        let socket = UdpSocket::bind(bind)?;
        socket.set_read_timeout(Some(Duration::from_millis(100)))?;
        let addr = socket.local_addr()?;
        let echoed = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (e, s) = (echoed.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("loadtest-echo".into())
            .spawn(move || {
                let mut buf = vec![0u8; 65536];
                while !s.load(Ordering::Relaxed) {
                    match socket.recv_from(&mut buf) {
                        Ok((n, from)) => {
                            if socket.send_to(&buf[..n], from).is_ok() {
                                e.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        Err(_) => continue,
                    }
                }
            })?;
        Ok(EchoPeer {
            addr,
            echoed,
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for EchoPeer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echoes_to_the_sender() {
        let peer = EchoPeer::start("127.0.0.1:0".parse().unwrap()).unwrap();
        let c = UdpSocket::bind("127.0.0.1:0").unwrap();
        c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        c.send_to(b"ping", peer.addr).unwrap();
        let mut buf = [0u8; 16];
        let (n, from) = c.recv_from(&mut buf).unwrap();
        assert_eq!((&buf[..n], from), (&b"ping"[..], peer.addr));
        // The count is bumped just after the echo is sent.
        for _ in 0..100 {
            if peer.echoed.load(Ordering::Relaxed) == 1 {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(peer.echoed.load(Ordering::Relaxed), 1);
    }
}
