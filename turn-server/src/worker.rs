//! One relay worker: a thread with a mio poll loop owning a SO_REUSEPORT
//! client socket, the relay sockets of the allocations made on it, and its
//! share of the protocol state. The kernel hashes each client's 5-tuple to
//! one worker's socket, so an allocation never crosses threads.

use std::collections::HashMap;
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token, Waker};
use socket2::{Domain, Protocol, Socket, Type};
use tracing::debug;

use crate::five_tuple::{ClientTransport, FiveTuple};
use crate::server::{Destination, RelaySockets, Transmit, TurnServer};

const CLIENT: Token = Token(0);
const WAKER: Token = Token(1);
const FIRST_RELAY: usize = 2;

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

/// The relay sockets of one worker, registered in its poll.
struct Relays {
    registry: mio::Registry,
    sockets: Vec<Option<(SocketAddr, UdpSocket)>>,
    free: Vec<usize>,
    by_addr: HashMap<SocketAddr, usize>,
}

impl RelaySockets for Relays {
    fn open(&mut self, addr: SocketAddr, _dont_fragment: bool) -> std::io::Result<()> {
        // Linux sends UDP with DF set and path-MTU discovery by default
        // (IP_PMTUDISC_WANT), which is what DONT-FRAGMENT asks for.
        let mut socket = udp_socket(addr, false)?;
        let slot = self.free.pop().unwrap_or(self.sockets.len());
        self.registry
            .register(&mut socket, Token(FIRST_RELAY + slot), Interest::READABLE)?;
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

/// Starts a worker thread serving `client` with `server`.
pub fn spawn(name: String, client: UdpSocket, server: TurnServer) -> std::io::Result<WorkerHandle> {
    let poll = Poll::new()?;
    let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
    let stop = Arc::new(AtomicBool::new(false));
    let stop_flag = stop.clone();
    let thread = std::thread::Builder::new()
        .name(name)
        .spawn(move || run(poll, client, server, &stop_flag))?;
    Ok(WorkerHandle {
        stop,
        waker,
        thread: Some(thread),
    })
}

fn run(mut poll: Poll, mut client: UdpSocket, mut server: TurnServer, stop: &AtomicBool) {
    let Ok(registry) = poll.registry().try_clone() else {
        return;
    };
    if registry
        .register(&mut client, CLIENT, Interest::READABLE)
        .is_err()
    {
        return;
    }
    let Ok(local) = client.local_addr() else {
        return;
    };
    let mut relays = Relays {
        registry,
        sockets: Vec::new(),
        free: Vec::new(),
        by_addr: HashMap::new(),
    };
    let mut events = Events::with_capacity(256);
    let mut buf = vec![0u8; 65_536];
    while !stop.load(Ordering::Acquire) {
        let now = Instant::now();
        let timeout = server
            .poll_timeout()
            .map(|t| t.saturating_duration_since(now))
            .unwrap_or(Duration::from_secs(1))
            .min(Duration::from_secs(1));
        if let Err(e) = poll.poll(&mut events, Some(timeout)) {
            if e.kind() != ErrorKind::Interrupted {
                debug!("poll: {e}");
            }
            continue;
        }
        for event in events.iter() {
            match event.token() {
                CLIENT => loop {
                    let (n, from) = match client.recv_from(&mut buf) {
                        Ok(r) => r,
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(_) => continue,
                    };
                    let tuple = FiveTuple::new(from, local, ClientTransport::Udp);
                    let out = server.handle_client(Instant::now(), tuple, &buf[..n], &mut relays);
                    send(out, &client, &relays);
                },
                WAKER => {}
                Token(t) => {
                    let slot = t - FIRST_RELAY;
                    while let Some(Some((relay, socket))) = relays.sockets.get(slot) {
                        let relay = *relay;
                        let (n, peer) = match socket.recv_from(&mut buf) {
                            Ok(r) => r,
                            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                            Err(_) => continue,
                        };
                        let out = server.handle_peer(Instant::now(), relay, peer, &buf[..n]);
                        send(out, &client, &relays);
                    }
                }
            }
        }
        server.handle_timeout(Instant::now(), &mut relays);
    }
}

fn send(out: Option<Transmit<'_>>, client: &UdpSocket, relays: &Relays) {
    let Some(t) = out else {
        return;
    };
    let result = match t.to {
        Destination::Client(tuple) => client.send_to(t.data, tuple.client),
        Destination::Peer { relay, peer } => match relays.by_addr.get(&relay) {
            Some(&slot) => match &relays.sockets[slot] {
                Some((_, socket)) => socket.send_to(t.data, peer),
                None => return,
            },
            None => return,
        },
    };
    if let Err(e) = result {
        debug!("send: {e}");
    }
}
