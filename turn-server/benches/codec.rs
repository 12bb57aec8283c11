//! Codec costs on the relay's paths: `cargo bench -p turn-server --bench codec`.
//!
//! * ChannelData parse: every channel datagram from a client.
//! * Send indication parse: every non-channel datagram from a client.
//! * Data indication build: every non-channel datagram to a client.
//! * Refresh / CreatePermission parse + verify: authenticated requests.
//! * Allocate success build with MESSAGE-INTEGRITY and FINGERPRINT.

use std::hint::black_box;
use std::net::SocketAddr;

use criterion::{criterion_group, criterion_main, Criterion};
use turn_server::stun::attributes::{Lifetime, Nonce, Realm, Username, XorPeerAddress};
use turn_server::stun::{
    channel_data, credentials, encode_data_indication, encode_send_indication, Class, Integrity,
    Message, MessageBuilder, Method, SendIndication, Sha1Key,
};

const PAYLOAD: usize = 1200;
const TID: [u8; 12] = [0x5a; 12];

fn peer() -> SocketAddr {
    "198.51.100.20:50000".parse().expect("addr")
}

fn key() -> [u8; 16] {
    credentials::long_term_key_md5("1700000000:alice", "bench.local", "password")
}

/// An authenticated request as a TURN client sends it.
fn request(method: Method) -> Vec<u8> {
    let key = key();
    let mut buf = Vec::new();
    let mut b = MessageBuilder::new(&mut buf, Class::Request, method, TID);
    if method == Method::CREATE_PERMISSION {
        b.xor_peer_address(peer());
    } else {
        b.lifetime(600);
    }
    b.username("1700000000:alice")
        .realm("bench.local")
        .nonce("0123456789abcdef0123456789abcdef");
    b.finish(Some(Integrity::Sha1(&key)), true).expect("fits");
    buf
}

fn parse_and_verify(c: &mut Criterion) {
    let key = key();
    // What a server caches per user: the HMAC state with the pads hashed.
    let prepared = Sha1Key::new(&key);
    let cases = [
        (Method::REFRESH, true),
        (Method::CREATE_PERMISSION, true),
        (Method::REFRESH, false),
    ];
    for (method, use_prepared) in cases {
        let req = request(method);
        let name = format!(
            "parse+verify {method:?} request ({} key)",
            if use_prepared { "prepared" } else { "raw" }
        );
        c.bench_function(&name, |b| {
            b.iter(|| {
                let m = Message::parse(black_box(&req)).expect("valid");
                let user = m.get::<Username>().expect("valid").expect("present");
                let realm = m.get::<Realm>().expect("valid").expect("present");
                let nonce = m.get::<Nonce>().expect("valid").expect("present");
                let lifetime = m.get::<Lifetime>().expect("valid");
                let peer = m.get::<XorPeerAddress>().expect("valid");
                let verified = if use_prepared {
                    m.verify_integrity_with(&prepared)
                } else {
                    m.verify_integrity(&key)
                };
                let ok = m.unknown_comprehension_required().is_none()
                    && m.verify_fingerprint()
                    && verified;
                black_box((user, realm, nonce, lifetime, peer, ok))
            })
        });
    }
}

fn channel_data_parse(c: &mut Criterion) {
    let mut datagram = Vec::new();
    channel_data::encode(&mut datagram, 0x4001, &[7; PAYLOAD], false).expect("valid");
    c.bench_function("parse ChannelData (1200 B)", |b| {
        b.iter(|| black_box(channel_data::parse(black_box(&datagram))))
    });
}

fn send_indication_parse(c: &mut Criterion) {
    let mut datagram = Vec::new();
    encode_send_indication(&mut datagram, TID, peer(), &[7; PAYLOAD], false).expect("fits");
    c.bench_function("parse Send indication (1200 B)", |b| {
        b.iter(|| {
            let m = Message::parse(black_box(&datagram)).expect("valid");
            black_box(SendIndication::from_message(&m).map(|s| (s.peer, s.data.len())))
        })
    });
}

fn data_indication_build(c: &mut Criterion) {
    let payload = [7u8; PAYLOAD];
    let peer = peer();
    let mut buf = Vec::with_capacity(2048);
    c.bench_function("build Data indication (1200 B)", |b| {
        b.iter(|| {
            buf.clear();
            let n = encode_data_indication(&mut buf, TID, black_box(peer), black_box(&payload))
                .expect("fits");
            black_box(n)
        })
    });
}

fn allocate_response_build(c: &mut Criterion) {
    let key = key();
    let prepared = Sha1Key::new(&key);
    let relayed: SocketAddr = "203.0.113.7:49152".parse().expect("addr");
    let mapped: SocketAddr = "192.0.2.1:40000".parse().expect("addr");
    let mut buf = Vec::with_capacity(256);
    for use_prepared in [true, false] {
        let name = format!(
            "build Allocate success + MI + FINGERPRINT ({} key)",
            if use_prepared { "prepared" } else { "raw" }
        );
        c.bench_function(&name, |b| {
            b.iter(|| {
                buf.clear();
                let mut m =
                    MessageBuilder::new(&mut buf, Class::Success, Method::ALLOCATE, black_box(TID));
                m.xor_relayed_address(relayed)
                    .lifetime(600)
                    .xor_mapped_address(mapped);
                let integrity = if use_prepared {
                    Integrity::Sha1Prepared(&prepared)
                } else {
                    Integrity::Sha1(&key)
                };
                black_box(m.finish(Some(integrity), true).expect("fits"))
            })
        });
    }
}

criterion_group!(
    benches,
    channel_data_parse,
    send_indication_parse,
    data_indication_build,
    parse_and_verify,
    allocate_response_build
);
criterion_main!(benches);
