//! Sans-IO TURN client for one allocation (RFC 8656 over UDP): Allocate
//! (unauthenticated first, then with the realm and nonce of the 401),
//! CreatePermission and ChannelBind for the echo peer, Refresh 0 to release.
//! Requests are retransmitted on a timer; time is injected.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use turn_server::stun::attributes::{
    ChannelNumber, ErrorCode, Lifetime, Nonce, Realm, RequestedTransport, Username, XorPeerAddress,
    XorRelayedAddress,
};
use turn_server::stun::credentials::long_term_key_md5;
use turn_server::stun::{Class, Integrity, Message, MessageBuilder, Method, TransactionId};

/// First retransmission timeout (doubles, RFC 8489 §6.2.1).
const RTO: Duration = Duration::from_millis(500);
/// Transmissions of one request before giving up.
const MAX_TRIES: u32 = 5;
/// UDP protocol number for REQUESTED-TRANSPORT.
const UDP: u8 = 17;

/// Where an allocation is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    /// Allocate without credentials sent, waiting for the 401.
    Challenge,
    /// Authenticated Allocate sent.
    Allocate,
    /// CreatePermission sent.
    Permission,
    /// ChannelBind sent.
    Channel,
    /// Ready for ChannelData.
    Ready,
    /// Refresh 0 sent (or done).
    Released,
    /// Gave up.
    Failed(String),
}

/// One TURN allocation's client side.
#[derive(Debug)]
pub struct Allocation {
    username: String,
    password: String,
    peer: SocketAddr,
    /// The channel bound to the peer.
    pub channel: u16,
    /// Where it is.
    pub phase: Phase,
    realm: String,
    nonce: String,
    key: [u8; 16],
    tid: TransactionId,
    request: Vec<u8>,
    sent_at: Instant,
    tries: u32,
    /// The relayed address the server allocated.
    pub relayed: Option<SocketAddr>,
    /// The lifetime the server granted, s.
    pub lifetime: u32,
    /// When `start` was called.
    pub started: Instant,
    /// When it became ready.
    pub ready_at: Option<Instant>,
}

impl Allocation {
    /// An allocation that will use `username`/`password` and relay to `peer` on `channel`.
    pub fn new(
        username: String,
        password: String,
        peer: SocketAddr,
        channel: u16,
        now: Instant,
    ) -> Self {
        Allocation {
            username,
            password,
            peer,
            channel,
            phase: Phase::Challenge,
            realm: String::new(),
            nonce: String::new(),
            key: [0; 16],
            tid: [0; 12],
            request: Vec::new(),
            sent_at: now,
            tries: 0,
            relayed: None,
            lifetime: 0,
            started: now,
            ready_at: None,
        }
    }

    /// The peer the allocation permits and binds.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// The first request (an unauthenticated Allocate).
    pub fn start(&mut self, now: Instant) -> Vec<u8> {
        self.started = now;
        self.phase = Phase::Challenge;
        self.build(Method::ALLOCATE, false, now)
    }

    fn build(&mut self, method: Method, auth: bool, now: Instant) -> Vec<u8> {
        self.tid = rand::random();
        let mut buf = Vec::with_capacity(160);
        let mut b = MessageBuilder::new(&mut buf, Class::Request, method, self.tid);
        if auth {
            b.add(&Username(&self.username));
            b.add(&Realm(&self.realm));
            b.add(&Nonce(&self.nonce));
        }
        if method == Method::ALLOCATE {
            b.add(&RequestedTransport(UDP));
            b.add(&Lifetime(3600));
        } else if method == Method::CREATE_PERMISSION {
            b.add(&XorPeerAddress(self.peer));
        } else if method == Method::CHANNEL_BIND {
            b.add(&ChannelNumber(self.channel));
            b.add(&XorPeerAddress(self.peer));
        } else if method == Method::REFRESH {
            b.add(&Lifetime(0));
        }
        let key = self.key;
        let integrity = auth.then_some(Integrity::Sha1(&key));
        if b.finish(integrity, true).is_err() {
            self.phase = Phase::Failed("request does not encode".into());
            return Vec::new();
        }
        self.request = buf.clone();
        self.sent_at = now;
        self.tries = 1;
        buf
    }

    /// When the outstanding request should be retransmitted.
    pub fn retransmit_at(&self) -> Option<Instant> {
        match self.phase {
            Phase::Challenge | Phase::Allocate | Phase::Permission | Phase::Channel => {
                Some(self.sent_at + RTO * 2u32.pow(self.tries.saturating_sub(1)))
            }
            _ => None,
        }
    }

    /// The retransmission due at `now`, if any (fails after 5 tries).
    pub fn poll_retransmit(&mut self, now: Instant) -> Option<Vec<u8>> {
        let at = self.retransmit_at()?;
        if now < at {
            return None;
        }
        if self.tries >= MAX_TRIES {
            self.phase = Phase::Failed(format!("no answer in {:?}", self.phase));
            return None;
        }
        self.tries += 1;
        self.sent_at = now;
        Some(self.request.clone())
    }

    /// Handles a STUN message from the server; returns the next request to send.
    pub fn on_message(&mut self, data: &[u8], now: Instant) -> Option<Vec<u8>> {
        let msg = Message::parse(data).ok()?;
        if msg.transaction_id() != self.tid {
            return None;
        }
        match msg.class() {
            Class::Error => {
                let code = msg.get::<ErrorCode>().ok().flatten();
                let code_num = code.map_or(0, |c| c.code);
                let retry_auth =
                    code_num == 401 && self.phase == Phase::Challenge || code_num == 438;
                if retry_auth {
                    let (Some(realm), Some(nonce)) = (
                        msg.get::<Realm>().ok().flatten(),
                        msg.get::<Nonce>().ok().flatten(),
                    ) else {
                        self.phase = Phase::Failed(format!("{code_num} without realm/nonce"));
                        return None;
                    };
                    self.realm = realm.0.to_string();
                    self.nonce = nonce.0.to_string();
                    self.key = long_term_key_md5(&self.username, &self.realm, &self.password);
                    let (method, phase) = match self.phase {
                        Phase::Challenge | Phase::Allocate => (Method::ALLOCATE, Phase::Allocate),
                        Phase::Permission => (Method::CREATE_PERMISSION, Phase::Permission),
                        Phase::Channel => (Method::CHANNEL_BIND, Phase::Channel),
                        _ => return None,
                    };
                    self.phase = phase;
                    return Some(self.build(method, true, now));
                }
                self.phase = Phase::Failed(format!(
                    "{:?}: error {code_num} {}",
                    self.phase,
                    code.map_or("", |c| c.reason)
                ));
                None
            }
            Class::Success => match self.phase {
                Phase::Allocate => {
                    self.relayed = msg.get::<XorRelayedAddress>().ok().flatten().map(|a| a.0);
                    self.lifetime = msg.get::<Lifetime>().ok().flatten().map_or(0, |l| l.0);
                    if self.relayed.is_none() {
                        self.phase =
                            Phase::Failed("Allocate success without XOR-RELAYED-ADDRESS".into());
                        return None;
                    }
                    self.phase = Phase::Permission;
                    Some(self.build(Method::CREATE_PERMISSION, true, now))
                }
                Phase::Permission => {
                    self.phase = Phase::Channel;
                    Some(self.build(Method::CHANNEL_BIND, true, now))
                }
                Phase::Channel => {
                    self.phase = Phase::Ready;
                    self.ready_at = Some(now);
                    None
                }
                _ => None,
            },
            _ => None,
        }
    }

    /// A Refresh with lifetime 0 that releases the allocation (sent once,
    /// not retransmitted: the allocation expires anyway).
    pub fn release(&mut self, now: Instant) -> Option<Vec<u8>> {
        if self.relayed.is_none() || matches!(self.phase, Phase::Released) {
            return None;
        }
        let req = self.build(Method::REFRESH, true, now);
        self.phase = Phase::Released;
        Some(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use turn_server::stun::attributes::XorMappedAddress;

    fn response(req: &[u8], class: Class, f: impl FnOnce(&mut MessageBuilder)) -> Vec<u8> {
        let m = Message::parse(req).unwrap();
        let mut buf = Vec::new();
        let mut b = MessageBuilder::new(&mut buf, class, m.method(), m.transaction_id());
        f(&mut b);
        b.finish(None, true).unwrap();
        buf
    }

    #[test]
    fn full_exchange_with_challenge_and_retransmission() {
        let t0 = Instant::now();
        let peer: SocketAddr = "127.0.0.1:9999".parse().unwrap();
        let mut a = Allocation::new("u".into(), "p".into(), peer, 0x4000, t0);
        let r1 = a.start(t0);
        assert!(Message::parse(&r1).unwrap().message_integrity().is_none());
        // No answer: retransmitted after the RTO, the same bytes.
        assert!(a.poll_retransmit(t0 + Duration::from_millis(100)).is_none());
        assert_eq!(
            a.poll_retransmit(t0 + Duration::from_millis(600)).unwrap(),
            r1
        );
        // A response to another transaction is ignored.
        let mut other = r1.clone();
        other[8] ^= 1;
        assert!(a
            .on_message(&response(&other, Class::Success, |_| {}), t0)
            .is_none());
        let challenge = response(&r1, Class::Error, |b| {
            b.add(&ErrorCode {
                code: 401,
                reason: "Unauthorized",
            });
            b.add(&Realm("lt"));
            b.add(&Nonce("n1"));
        });
        let r2 = a.on_message(&challenge, t0).unwrap();
        let m2 = Message::parse(&r2).unwrap();
        assert!(m2.verify_integrity(&long_term_key_md5("u", "lt", "p")));
        assert_eq!(a.phase, Phase::Allocate);
        let relayed: SocketAddr = "127.0.0.1:50000".parse().unwrap();
        let ok = response(&r2, Class::Success, |b| {
            b.add(&XorRelayedAddress(relayed));
            b.add(&XorMappedAddress("127.0.0.2:1".parse().unwrap()));
            b.add(&Lifetime(600));
        });
        let r3 = a.on_message(&ok, t0).unwrap();
        assert_eq!(a.relayed, Some(relayed));
        assert_eq!(a.lifetime, 600);
        let m3 = Message::parse(&r3).unwrap();
        assert_eq!(m3.method(), Method::CREATE_PERMISSION);
        assert_eq!(m3.get::<XorPeerAddress>().unwrap().unwrap().0, peer);
        // Stale nonce: retried with the new one.
        let stale = response(&r3, Class::Error, |b| {
            b.add(&ErrorCode {
                code: 438,
                reason: "Stale Nonce",
            });
            b.add(&Realm("lt"));
            b.add(&Nonce("n2"));
        });
        let r3b = a.on_message(&stale, t0).unwrap();
        assert_eq!(
            Message::parse(&r3b)
                .unwrap()
                .get::<Nonce>()
                .unwrap()
                .unwrap()
                .0,
            "n2"
        );
        let r4 = a
            .on_message(&response(&r3b, Class::Success, |_| {}), t0)
            .unwrap();
        assert_eq!(
            Message::parse(&r4)
                .unwrap()
                .get::<ChannelNumber>()
                .unwrap()
                .unwrap()
                .0,
            0x4000
        );
        let done = t0 + Duration::from_millis(5);
        assert!(a
            .on_message(&response(&r4, Class::Success, |_| {}), done)
            .is_none());
        assert_eq!(a.phase, Phase::Ready);
        assert_eq!(a.ready_at, Some(done));
        assert!(a.retransmit_at().is_none());
        let rel = a.release(done).unwrap();
        assert_eq!(
            Message::parse(&rel)
                .unwrap()
                .get::<Lifetime>()
                .unwrap()
                .unwrap()
                .0,
            0
        );
        assert!(a.release(done).is_none());
    }

    #[test]
    fn forbidden_and_silence_fail() {
        let t0 = Instant::now();
        let peer: SocketAddr = "127.0.0.1:9999".parse().unwrap();
        let mut a = Allocation::new("u".into(), "p".into(), peer, 0x4000, t0);
        let r1 = a.start(t0);
        let forbidden = response(&r1, Class::Error, |b| {
            b.add(&ErrorCode {
                code: 403,
                reason: "Forbidden",
            });
        });
        assert!(a.on_message(&forbidden, t0).is_none());
        assert!(matches!(a.phase, Phase::Failed(_)));
        let mut b = Allocation::new("u".into(), "p".into(), peer, 0x4000, t0);
        b.start(t0);
        let mut t = t0;
        for _ in 0..10 {
            t += Duration::from_secs(10);
            b.poll_retransmit(t);
        }
        assert!(matches!(b.phase, Phase::Failed(_)));
    }
}
