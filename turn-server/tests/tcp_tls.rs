//! TCP and TLS client transports over real sockets on 127.0.0.1 with
//! ephemeral ports: a blocking Rust client (plain TCP, or rustls trusting
//! the server's development certificate) allocates with long-term
//! credentials and relays to a UDP echo peer, with Send/Data indications
//! and padded ChannelData; malformed streams close only their own
//! connection; closing a connection frees its allocation at once.

mod support;

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, UdpSocket};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use prometheus::Registry;
use support::{config, echo_peer, Client, Server, IO_TIMEOUT};
use turn_server::config::TurnConfig;
use turn_server::service::TurnService;
use turn_server::stun::{Class, Message, MessageBuilder, Method};

/// Allocate → CreatePermission → Send/Data → ChannelBind → ChannelData.
fn relay_round_trip(client: &mut Client, peer: SocketAddr) {
    let relay = client.allocate();
    assert_eq!(relay.ip().to_string(), "127.0.0.1");
    client.permit(peer);
    let payload = b"hello over a stream";
    client.send_indication(peer, payload);
    let (from, data) = client.data_indication();
    assert_eq!((from, data.as_slice()), (peer, &payload[..]));

    client.bind(0x4001, peer);
    // Lengths 1..=9 exercise every padding amount, both ways.
    for len in 1..=9u8 {
        let data: Vec<u8> = (0..len).map(|i| i ^ 0x5a).collect();
        client.send_channel_data(0x4001, &data);
        let (channel, back) = client.channel_data();
        assert_eq!((channel, back), (0x4001, data));
    }
    let big = vec![0xabu8; 1201];
    client.send_channel_data(0x4001, &big);
    assert_eq!(client.channel_data(), (0x4001, big));
}

#[test]
fn tcp_allocate_and_relay() {
    let server = Server::start(config());
    let peer = echo_peer();
    let mut client = Client::tcp(server.tcp());
    relay_round_trip(&mut client, peer);
    assert_eq!(
        server.metric("turn_connections", Some(("transport", "tcp"))),
        1
    );
    assert_eq!(server.metric("turn_allocations", None), 1);
}

#[test]
fn tls_allocate_and_relay() {
    let server = Server::start(config());
    let root = server.service().tls_certificates()[0].clone();
    let peer = echo_peer();
    let mut client = Client::tls(server.tls(), &root);
    relay_round_trip(&mut client, peer);
    assert_eq!(
        server.metric("turn_connections", Some(("transport", "tls"))),
        1
    );
    assert_eq!(server.metric("turn_allocations", None), 1);
}

#[test]
fn tls_listener_rejects_plain_tcp_and_untrusting_clients() {
    let server = Server::start(config());
    // Plain STUN to the TLS port: not a TLS record, closed.
    let mut plain = Client::tcp(server.tls());
    let mut buf = Vec::new();
    MessageBuilder::new(&mut buf, Class::Request, Method::BINDING, [1; 12])
        .finish(None, false)
        .unwrap();
    plain.write(&buf);
    closes(plain);
    server.wait_metric("turn_connections_closed_total", Some(("reason", "tls")), 1);
    // A client trusting another certificate fails its handshake.
    let other = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).unwrap();
    let mut wrong = Client::tls(server.tls(), other.cert.der());
    let mut b = [0u8; 16];
    let handshake = wrong
        .stream
        .write_all(&buf)
        .and_then(|()| wrong.stream.flush())
        .and_then(|()| wrong.stream.read(&mut b));
    assert!(handshake.is_err(), "untrusted certificate accepted");
    // The listener still serves.
    let root = server.service().tls_certificates()[0].clone();
    Client::tls(server.tls(), &root).binding();
}

/// A raw TCP connection for the bad-input cases.
fn raw(server: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(server).unwrap();
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s
}

/// Reads (and ignores) until the server closes the stream.
fn closes(mut c: Client) {
    let mut buf = [0u8; 1024];
    loop {
        match c.stream.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return,
            Err(e) => panic!("connection not closed: {e}"),
        }
    }
}

/// Reads until the server closes `s`; panics if it answers instead.
fn expect_closed(mut s: TcpStream, case: &str) {
    let mut buf = [0u8; 1024];
    match s.read(&mut buf) {
        Ok(0) => {}
        Ok(n) => panic!("{case}: server answered {n} bytes instead of closing"),
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        Err(e) => panic!("{case}: connection not closed: {e}"),
    }
}

fn binding_request(tid: [u8; 12]) -> Vec<u8> {
    let mut buf = Vec::new();
    MessageBuilder::new(&mut buf, Class::Request, Method::BINDING, tid)
        .finish(None, true)
        .unwrap();
    buf
}

#[test]
fn bad_streams_close_only_their_connection() {
    let server = Server::start(config());
    let peer = echo_peer();
    let mut good = Client::tcp(server.tcp());
    good.allocate();
    good.permit(peer);
    good.bind(0x4002, peer);

    // The good client relays without pause while the bad ones run.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop_flag = stop.clone();
    let good_thread = thread::spawn(move || {
        let mut rounds = 0u32;
        while !stop_flag.load(std::sync::atomic::Ordering::Relaxed) || rounds < 20 {
            let data = rounds.to_be_bytes();
            good.send_channel_data(0x4002, &data[..1 + (rounds % 4) as usize]);
            let (_, back) = good.channel_data();
            assert_eq!(back, &data[..1 + (rounds % 4) as usize]);
            // The peer has a channel: its answer comes back as ChannelData.
            good.send_indication(peer, &data);
            assert_eq!(good.channel_data(), (0x4002, data.to_vec()));
            rounds += 1;
        }
        good.binding();
        (rounds, good)
    });

    // 1. A ChannelData header whose length is shorter than what follows:
    //    the server takes exactly the declared frame; the rest is garbage.
    let mut s = raw(server.tcp());
    let mut lie = vec![0x40, 0x02, 0x00, 0x02, 1, 2, 0, 0];
    lie.extend_from_slice(&[0xde, 0xad, 0xbe, 0xef, 0, 0, 0, 0]);
    s.write_all(&lie).unwrap();
    expect_closed(s, "short ChannelData length");

    // 2. A ChannelData length longer than the data before it: what follows,
    //    a Binding request included, is payload, not a message; the next
    //    Binding after the declared frame is answered.
    let mut s = raw(server.tcp());
    let mut wire = vec![0x40, 0x03, 0x00, 100];
    let swallowed = binding_request([0xaa; 12]);
    wire.extend_from_slice(&swallowed);
    wire.resize(4 + 100, 0x55);
    wire.extend_from_slice(&binding_request([0xbb; 12]));
    s.write_all(&wire).unwrap();
    let mut c = Client::new(Box::new(s));
    let frame = c.read_frame().expect("answered");
    let msg = Message::parse(&frame).unwrap();
    assert_eq!(msg.transaction_id(), [0xbb; 12], "framing stayed in sync");
    drop(c);

    // 3. Garbage: bytes that are neither STUN nor ChannelData, and a TLS
    //    ClientHello-like record on the plain port (first bits 0b00, no
    //    magic cookie).
    for garbage in [
        &b"\xff\xfe\xfd garbage"[..],
        &[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc],
    ] {
        let mut s = raw(server.tcp());
        s.write_all(garbage).unwrap();
        expect_closed(s, "garbage");
    }

    // 4. A truncated frame, then the client closes: no panic, allocation-less
    //    connection simply goes.
    let mut s = raw(server.tcp());
    s.write_all(&binding_request([0xcc; 12])[..10]).unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    expect_closed(s, "truncated then closed");

    // 5. A STUN length no message has (not a multiple of 4, 0xFFFF).
    let mut s = raw(server.tcp());
    let mut m = binding_request([0xdd; 12]);
    m[2] = 0xff;
    m[3] = 0xff;
    s.write_all(&m).unwrap();
    expect_closed(s, "oversized STUN length");

    // 6. The largest STUN length, honestly followed by 65532 bytes of
    //    nonsense attributes: dropped as malformed, framing kept, the next
    //    request answered.
    let mut s = raw(server.tcp());
    let mut m = vec![0x00, 0x01, 0xff, 0xfc, 0x21, 0x12, 0xa4, 0x42];
    m.extend_from_slice(&[0xee; 12]);
    m.resize(20 + 0xfffc, 0xff);
    m.extend_from_slice(&binding_request([0xef; 12]));
    s.write_all(&m).unwrap();
    let mut c = Client::new(Box::new(s));
    let frame = c.read_frame().expect("answered");
    assert_eq!(Message::parse(&frame).unwrap().transaction_id(), [0xef; 12]);
    drop(c);

    // 7. A bad stream from a client that holds an allocation: closing it
    //    frees the allocation.
    let mut c = Client::tcp(server.tcp());
    c.allocate();
    assert_eq!(server.metric("turn_allocations", None), 2);
    c.write(&[
        0x40, 0x00, 0x00, 0x01, 0xc0, 0, 0, 0, 0xc0, 0xc0, 0xc0, 0xc0,
    ]);
    assert!(c.closed_by_server());
    server.wait_metric("turn_allocations", None, 1);

    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (rounds, good) = good_thread.join().expect("good client never failed");
    assert!(rounds >= 20);
    assert_eq!(server.metric("turn_allocations", None), 1);
    drop(good);
    server.wait_metric("turn_allocations", None, 0);
    assert!(server.metric("turn_connections_closed_total", Some(("reason", "framing"))) >= 4);
}

#[test]
fn closing_the_connection_frees_the_allocation() {
    let server = Server::start(config());
    for tls in [false, true] {
        let root = server.service().tls_certificates()[0].clone();
        let mut client = if tls {
            Client::tls(server.tls(), &root)
        } else {
            Client::tcp(server.tcp())
        };
        let relay = client.allocate();
        let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
        peer.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        peer.connect(relay).unwrap();
        client.permit(peer.local_addr().unwrap());
        // The relay port answers: peer → client.
        peer.send(b"ping").unwrap();
        assert_eq!(client.data_indication().1, b"ping");
        assert_eq!(server.metric("turn_allocations", None), 1);

        drop(client);
        server.wait_metric("turn_allocations", None, 0);
        // The relay socket is gone: the kernel answers with ICMP port
        // unreachable, which the connected socket reports.
        let mut refused = false;
        for _ in 0..50 {
            let _ = peer.send(b"anyone?");
            let mut b = [0u8; 64];
            match peer.recv(&mut b) {
                Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
                    refused = true;
                    break;
                }
                Ok(_) => panic!("the relay still forwards"),
                Err(_) => thread::sleep(Duration::from_millis(20)),
            }
        }
        assert!(refused, "relay port still open (tls: {tls})");
    }
    server.wait_metric("turn_connections", None, 0);
}

#[test]
fn idle_and_handshake_timeouts() {
    let mut c = config();
    c.limits.connection_idle_timeout_s = 1;
    c.tls.handshake_timeout_s = 1;
    let server = Server::start(c);
    let started = Instant::now();
    // Silent TCP connection without an allocation.
    let idle = raw(server.tcp());
    // TLS connection that never says hello.
    let silent_tls = raw(server.tls());
    // A TCP connection with an allocation outlives the idle timeout.
    let mut kept = Client::tcp(server.tcp());
    kept.allocate();
    expect_closed(idle, "idle");
    // (rustls may send an alert as it closes.)
    closes(Client::new(Box::new(silent_tls)));
    assert!(started.elapsed() < Duration::from_secs(4));
    // Past the idle timeout: the connection with an allocation is served.
    thread::sleep(
        (started + Duration::from_millis(2200)).saturating_duration_since(Instant::now()),
    );
    assert_eq!(
        server.metric(
            "turn_connections_closed_total",
            Some(("reason", "idle_timeout"))
        ),
        1
    );
    assert_eq!(
        server.metric(
            "turn_connections_closed_total",
            Some(("reason", "handshake_timeout"))
        ),
        1
    );
    kept.binding();
}

#[test]
fn connection_limit() {
    let mut c = config();
    c.limits.max_connections = 2;
    let server = Server::start(c);
    let mut a = Client::tcp(server.tcp());
    let mut b = Client::tcp(server.tcp());
    a.binding();
    b.binding();
    let third = raw(server.tcp());
    expect_closed(third, "over the limit");
    drop(a);
    server.wait_metric("turn_connections", None, 1);
    Client::tcp(server.tcp()).binding();
}

/// A TCP client with a small receive window, so the server's write queue
/// for it fills fast when it does not read.
fn slow_reader(server: SocketAddr) -> Client {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(&server.into()).unwrap();
    let stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    Client::new(Box::new(stream))
}

#[test]
fn client_that_does_not_read_is_disconnected() {
    let server = Server::start(config());
    let mut client = slow_reader(server.tcp());
    let relay = client.allocate();
    let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
    client.permit(peer.local_addr().unwrap());
    // The peer floods; the client reads nothing.
    let datagram = vec![0x11u8; 1200];
    // Within seconds: a flood on the relay port must not hold the worker
    // in its read loop while the connection waits to be closed.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut sent = 0usize;
    while server.metric(
        "turn_connections_closed_total",
        Some(("reason", "write_queue_full")),
    ) == 0
    {
        assert!(Instant::now() < deadline, "still open after {sent} bytes");
        for _ in 0..256 {
            let _ = peer.send_to(&datagram, relay);
            sent += datagram.len();
        }
        thread::sleep(Duration::from_millis(1));
    }
    server.wait_metric("turn_allocations", None, 0);
    // Others are still served.
    Client::tcp(server.tcp()).binding();
}

#[test]
fn a_client_that_reads_late_loses_datagrams_not_its_connection() {
    let server = Server::start(config());
    let mut client = slow_reader(server.tcp());
    let relay = client.allocate();
    let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
    client.bind(0x4001, peer.local_addr().unwrap());
    // The peer sends until the client's write queue overflows, then stops
    // (well within the stall limit).
    let dropped = Some(("reason", "client_write_queue_full"));
    let datagram = vec![0x11u8; 1200];
    let deadline = Instant::now() + Duration::from_secs(3);
    while server.metric("turn_dropped_total", dropped) == 0 {
        assert!(Instant::now() < deadline, "write queue never filled");
        for _ in 0..64 {
            let _ = peer.send_to(&datagram, relay);
        }
    }
    // The client catches up: what was queued arrives whole, then new data.
    peer.send_to(b"after the stall", relay).unwrap();
    let mut frames = 0;
    loop {
        let (channel, data) = client.channel_data();
        assert_eq!(channel, 0x4001);
        if data == b"after the stall" {
            break;
        }
        assert_eq!(data, datagram);
        frames += 1;
    }
    assert!(frames > 0);
    let closed = Some(("reason", "write_queue_full"));
    assert_eq!(server.metric("turn_connections_closed_total", closed), 0);
    assert_eq!(server.metric("turn_connections", None), 1);
}

#[test]
fn connections_per_source_are_rate_limited() {
    let mut c = config();
    c.limits.connections_burst = 2.0;
    c.limits.connections_per_s = 0.0;
    let server = Server::start(c);
    // Each of the 2 workers lets at most 2 through (the kernel spreads
    // connections over them); the rest are closed at once.
    let conns: Vec<TcpStream> = (0..12)
        .map(|_| TcpStream::connect(server.tcp()).unwrap())
        .collect();
    let reason = Some(("reason", "rate_limited"));
    let settled = || {
        server.metric("turn_connections_closed_total", reason)
            + server.metric("turn_connections", None)
    };
    let deadline = Instant::now() + IO_TIMEOUT;
    while settled() < 12 {
        assert!(Instant::now() < deadline, "not all accepted");
        thread::sleep(Duration::from_millis(5));
    }
    assert!(server.metric("turn_connections", None) <= 4);
    assert!(server.metric("turn_connections_closed_total", reason) >= 8);
    drop(conns);
}

fn start_error(config: &TurnConfig) -> String {
    match TurnService::start(config, &Registry::new(), &[]) {
        Ok(s) => {
            s.stop();
            panic!("started despite a bad config");
        }
        Err(e) => format!("{e:#}"),
    }
}

#[test]
fn start_errors_are_clear() {
    // A port held by an ordinary socket.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let mut c = config();
    c.listen.tcp = vec![SocketAddr::from(([127, 0, 0, 1], port))];
    let e = start_error(&c);
    assert!(
        e.contains(&format!(
            "cannot bind TURN TCP listener 127.0.0.1:{port}: the port is in use"
        )),
        "{e}"
    );
    // A port held by another relay's SO_REUSEPORT listeners: refused too,
    // not silently shared.
    let first = Server::start(config());
    let mut c = config();
    c.listen.tls = vec![first.tcp()];
    let e = start_error(&c);
    assert!(e.contains("TLS listener") && e.contains("in use"), "{e}");
    let mut c = config();
    c.listen.udp = first.service().udp_addrs.clone();
    let e = start_error(&c);
    assert!(e.contains("UDP listener") && e.contains("in use"), "{e}");
    // An address that isn't this host's.
    let mut c = config();
    c.listen.tcp = vec!["192.0.2.1:3478".parse().unwrap()];
    let e = start_error(&c);
    assert!(
        e.contains("cannot bind TURN TCP listener 192.0.2.1:3478"),
        "{e}"
    );
    // Unreadable certificate, key of another certificate.
    let mut c = config();
    c.tls.cert = Some("/nonexistent/turn-cert.pem".into());
    c.tls.key = Some("/nonexistent/turn-key.pem".into());
    let e = start_error(&c);
    assert!(
        e.contains("cannot read TLS certificate /nonexistent/turn-cert.pem"),
        "{e}"
    );
    let dir = std::env::temp_dir();
    let (cert_path, key_path) = (
        dir.join(format!("turn-test-cert-{port}.pem")),
        dir.join(format!("turn-test-key-{port}.pem")),
    );
    let a = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).unwrap();
    let b = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    std::fs::write(&cert_path, a.cert.pem()).unwrap();
    std::fs::write(&key_path, b.signing_key.serialize_pem()).unwrap();
    c.tls.cert = Some(cert_path.clone());
    c.tls.key = Some(key_path.clone());
    let e = start_error(&c);
    assert!(e.contains("does not fit certificate"), "{e}");
    // The right key: a server that serves that certificate.
    std::fs::write(&key_path, a.signing_key.serialize_pem()).unwrap();
    c.tls.dev_cert = false;
    let server = Server::start(c);
    assert_eq!(server.service().tls_certificates()[0], *a.cert.der());
    Client::tls(server.tls(), a.cert.der()).binding();
    let _ = std::fs::remove_file(cert_path);
    let _ = std::fs::remove_file(key_path);
}
