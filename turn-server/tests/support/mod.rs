//! What the stream and reload tests share: a relay on 127.0.0.1 with
//! ephemeral ports, a UDP echo peer and a blocking TURN client over TCP or
//! TLS (rustls) with long-term credentials.

// Each test file uses its own part of this module.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use prometheus::Registry;
use turn_server::config::TurnConfig;
use turn_server::service::TurnService;
use turn_server::stun::attributes::{
    Data, ErrorCode, Nonce, Realm, XorPeerAddress, XorRelayedAddress,
};
use turn_server::stun::channel_data;
use turn_server::stun::credentials::long_term_key_md5;
use turn_server::stun::framing::{next_frame_len, Framing};
use turn_server::stun::{
    encode_send_indication, Class, Integrity, Message, MessageBuilder, Method,
};

pub const USER: &str = "test";
pub const PASSWORD: &str = "test123";
pub const REALM: &str = "bench.local";
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);

pub fn config() -> TurnConfig {
    let mut c = TurnConfig::default();
    c.server.realm = REALM.into();
    c.server.workers = 2;
    c.listen.udp = vec!["127.0.0.1:0".parse().unwrap()];
    c.listen.tcp = vec!["127.0.0.1:0".parse().unwrap()];
    c.listen.tls = vec!["127.0.0.1:0".parse().unwrap()];
    c.tls.dev_cert = true;
    c.auth.users = BTreeMap::from([(USER.to_string(), PASSWORD.to_string())]);
    c.policy.allow = vec!["127.0.0.1/32".into()];
    c.limits.bandwidth_bytes_per_s = 0;
    c
}

pub struct Server {
    service: Option<TurnService>,
    /// The registry the service's metrics are in.
    pub registry: Registry,
}

impl Server {
    pub fn start(config: TurnConfig) -> Server {
        let registry = Registry::new();
        let service = TurnService::start(&config, &registry, &[]).expect("server starts");
        Server {
            service: Some(service),
            registry,
        }
    }

    pub fn service(&self) -> &TurnService {
        self.service.as_ref().expect("running")
    }

    pub fn service_mut(&mut self) -> &mut TurnService {
        self.service.as_mut().expect("running")
    }

    pub fn tcp(&self) -> SocketAddr {
        self.service().tcp_addrs[0]
    }

    pub fn tls(&self) -> SocketAddr {
        self.service().tls_addrs[0]
    }

    /// A metric's value (summed over labels matching `label`, if given).
    pub fn metric(&self, name: &str, label: Option<(&str, &str)>) -> i64 {
        let mut total = 0.0;
        for family in self.registry.gather() {
            if family.name() != name {
                continue;
            }
            for m in family.get_metric() {
                let matches = label.is_none_or(|(k, v)| {
                    m.get_label()
                        .iter()
                        .any(|l| l.name() == k && l.value() == v)
                });
                if matches {
                    total += m.get_gauge().get_value() + m.get_counter().get_value();
                }
            }
        }
        total as i64
    }

    /// Waits until `name` (with `label`) reaches `want`.
    pub fn wait_metric(&self, name: &str, label: Option<(&str, &str)>, want: i64) {
        let deadline = Instant::now() + IO_TIMEOUT;
        while self.metric(name, label) != want {
            assert!(
                Instant::now() < deadline,
                "{name} {label:?} stayed at {} (want {want})",
                self.metric(name, label)
            );
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(s) = self.service.take() {
            s.stop();
        }
    }
}

/// A UDP peer that echoes every datagram to its sender.
pub fn echo_peer() -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = socket.local_addr().unwrap();
    thread::spawn(move || {
        let mut buf = [0u8; 65536];
        while let Ok((n, from)) = socket.recv_from(&mut buf) {
            let _ = socket.send_to(&buf[..n], from);
        }
    });
    addr
}

pub trait Stream: Read + Write + Send {}
impl<T: Read + Write + Send> Stream for T {}

/// A TCP connection to `server` and a rustls client session over it that
/// trusts only `root` (the handshake happens on first use).
pub fn tls_connect(
    server: SocketAddr,
    root: &rustls::pki_types::CertificateDer<'static>,
) -> (rustls::ClientConnection, TcpStream) {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(root.clone()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    // The test certificates name the listener's IP address.
    let name = rustls::pki_types::ServerName::IpAddress(server.ip().into());
    let conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let tcp = TcpStream::connect(server).unwrap();
    tcp.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    (conn, tcp)
}

/// A blocking TURN client on one stream.
pub struct Client {
    /// The connection, for tests that read or write around the client.
    pub stream: Box<dyn Stream>,
    inbuf: Vec<u8>,
    user: String,
    key: Vec<u8>,
    nonce: String,
    tid: u8,
}

impl Client {
    pub fn tcp(server: SocketAddr) -> Client {
        let stream = TcpStream::connect(server).unwrap();
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        Client::new(Box::new(stream))
    }

    pub fn tls(server: SocketAddr, root: &rustls::pki_types::CertificateDer<'static>) -> Client {
        let (conn, tcp) = tls_connect(server, root);
        Client::new(Box::new(rustls::StreamOwned::new(conn, tcp)))
    }

    pub fn new(stream: Box<dyn Stream>) -> Client {
        Client {
            stream,
            inbuf: Vec::new(),
            user: USER.into(),
            key: long_term_key_md5(USER, REALM, PASSWORD).to_vec(),
            nonce: String::new(),
            tid: 0,
        }
    }

    /// Authenticates as `user` with `password` from now on.
    pub fn with_user(mut self, user: &str, password: &str) -> Client {
        self.user = user.into();
        self.key = long_term_key_md5(user, REALM, password).to_vec();
        self
    }

    pub fn write(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
        self.stream.flush().unwrap();
    }

    /// The next frame from the server, or `None` if it closed the stream.
    pub fn read_frame(&mut self) -> Option<Vec<u8>> {
        loop {
            match next_frame_len(&self.inbuf) {
                Framing::Complete(n) => return Some(self.inbuf.drain(..n).collect()),
                Framing::NeedMore => {}
                Framing::Invalid => panic!("server sent an invalid frame: {:?}", self.inbuf),
            }
            let mut buf = [0u8; 8192];
            match self.stream.read(&mut buf) {
                Ok(0) => return None,
                Ok(n) => self.inbuf.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::ConnectionReset => return None,
                Err(e) => panic!("read: {e}"),
            }
        }
    }

    pub fn next_tid(&mut self) -> [u8; 12] {
        self.tid = self.tid.wrapping_add(1);
        let mut tid: [u8; 12] = rand::random();
        tid[0] = self.tid;
        tid
    }

    /// Sends a request built by `add` (authenticated once a nonce is known)
    /// and returns the response's bytes, skipping indications and
    /// ChannelData that arrive in between.
    pub fn request(&mut self, method: Method, add: impl Fn(&mut MessageBuilder<'_>)) -> Vec<u8> {
        let tid = self.next_tid();
        let mut buf = Vec::new();
        let mut b = MessageBuilder::new(&mut buf, Class::Request, method, tid);
        add(&mut b);
        if !self.nonce.is_empty() {
            b.username(&self.user).realm(REALM).nonce(&self.nonce);
        }
        let integrity = (!self.nonce.is_empty()).then_some(Integrity::Sha1(&self.key));
        b.finish(integrity, true).unwrap();
        self.write(&buf);
        loop {
            let frame = self.read_frame().expect("server closed the connection");
            let Ok(msg) = Message::parse(&frame) else {
                continue;
            };
            if msg.transaction_id() == tid && msg.class() != Class::Indication {
                return frame;
            }
        }
    }

    /// Request with the 401 → credentials dance; panics on an error answer.
    pub fn authed(&mut self, method: Method, add: impl Fn(&mut MessageBuilder<'_>)) -> Vec<u8> {
        match self.try_authed(method, add) {
            Ok(frame) => frame,
            Err(code) => panic!("error {code}"),
        }
    }

    /// Request with the 401/438 → credentials dance: the success response,
    /// or the error code that remains (401 for credentials the server
    /// refuses) after three tries.
    pub fn try_authed(
        &mut self,
        method: Method,
        add: impl Fn(&mut MessageBuilder<'_>),
    ) -> Result<Vec<u8>, u16> {
        let mut code = 0;
        for _ in 0..3 {
            let frame = self.request(method, &add);
            let msg = Message::parse(&frame).unwrap();
            if msg.class() == Class::Success {
                assert!(msg.verify_integrity(&self.key), "response integrity");
                return Ok(frame);
            }
            code = msg.get::<ErrorCode>().unwrap().unwrap().code;
            if code != 401 && code != 438 {
                break;
            }
            assert_eq!(msg.get::<Realm>().unwrap().unwrap().0, REALM);
            self.nonce = msg.get::<Nonce>().unwrap().unwrap().0.to_string();
        }
        Err(code)
    }

    pub fn allocate(&mut self) -> SocketAddr {
        let frame = self.authed(Method::ALLOCATE, |b| {
            b.requested_transport(17);
        });
        let msg = Message::parse(&frame).unwrap();
        msg.get::<XorRelayedAddress>().unwrap().unwrap().0
    }

    pub fn permit(&mut self, peer: SocketAddr) {
        self.authed(Method::CREATE_PERMISSION, |b| {
            b.xor_peer_address(peer);
        });
    }

    pub fn bind(&mut self, channel: u16, peer: SocketAddr) {
        self.authed(Method::CHANNEL_BIND, |b| {
            b.channel_number(channel).xor_peer_address(peer);
        });
    }

    pub fn binding(&mut self) {
        let frame = self.request(Method::BINDING, |_| {});
        assert_eq!(Message::parse(&frame).unwrap().class(), Class::Success);
    }

    pub fn send_indication(&mut self, peer: SocketAddr, data: &[u8]) {
        let mut buf = Vec::new();
        encode_send_indication(&mut buf, self.next_tid(), peer, data, false).unwrap();
        self.write(&buf);
    }

    /// The next Data indication: (peer, data).
    pub fn data_indication(&mut self) -> (SocketAddr, Vec<u8>) {
        loop {
            let frame = self.read_frame().expect("server closed the connection");
            let Ok(msg) = Message::parse(&frame) else {
                continue;
            };
            if msg.class() == Class::Indication && msg.method() == Method::DATA {
                let peer = msg.get::<XorPeerAddress>().unwrap().unwrap().0;
                return (peer, msg.get::<Data>().unwrap().unwrap().0.to_vec());
            }
        }
    }

    pub fn send_channel_data(&mut self, channel: u16, data: &[u8]) {
        let mut buf = Vec::new();
        channel_data::encode(&mut buf, channel, data, true).unwrap();
        assert_eq!(buf.len() % 4, 0);
        self.write(&buf);
    }

    /// The next ChannelData frame: (channel, data); checks its padding.
    pub fn channel_data(&mut self) -> (u16, Vec<u8>) {
        loop {
            let frame = self.read_frame().expect("server closed the connection");
            if frame[0] & 0xC0 != 0x40 {
                continue;
            }
            assert_eq!(frame.len() % 4, 0, "ChannelData over a stream is padded");
            let (channel, data) = channel_data::parse(&frame).unwrap();
            assert_eq!(frame.len(), (4 + data.len()).next_multiple_of(4));
            return (channel, data.to_vec());
        }
    }

    /// True once the server has closed the stream (reads EOF or reset).
    pub fn closed_by_server(&mut self) -> bool {
        self.read_frame().is_none()
    }
}
