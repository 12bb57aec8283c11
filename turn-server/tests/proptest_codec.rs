//! Property tests of the codec: build → parse round trips, integrity
//! under wrong keys and single-byte corruption, ChannelData and TCP
//! framing round trips, and no panics on arbitrary bytes.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use proptest::prelude::*;
use turn_server::stun::attributes::*;
use turn_server::stun::channel_data::{MAX_CHANNEL, MIN_CHANNEL};
use turn_server::stun::framing::{next_frame_len, next_frame_len_capped, Framing};
use turn_server::stun::{
    attr, channel_data, encode_data_indication, Class, DataIndication, Integrity, Message,
    MessageBuilder, Method, RawAttr, SendIndication, Sha1Key, Sha256Key, HEADER_LEN, MAGIC_COOKIE,
    SHA256_MAC_LEN,
};

/// An attribute with an owned value, as generated.
#[derive(Clone, Debug)]
enum Spec {
    Username(String),
    Realm(String),
    Nonce(String),
    Software(String),
    Mapped(SocketAddr),
    XorMapped(SocketAddr),
    XorPeer(SocketAddr),
    XorRelayed(SocketAddr),
    Lifetime(u32),
    Transport(u8),
    Data(Vec<u8>),
    Channel(u16),
    EvenPort(bool),
    DontFragment,
    Token([u8; 8]),
    RequestedFamily(AddressFamily),
    AdditionalFamily(AddressFamily),
    ErrorCode(u16, String),
    PasswordAlgorithm(u16, Vec<u8>),
    PasswordAlgorithms(Vec<(u16, Vec<u8>)>),
    UserHash([u8; 32]),
    Icmp(u8, u8, u32),
    Unknown(Vec<u16>),
    /// A comprehension-optional type this codec has no decoder for.
    Raw(u16, Vec<u8>),
}

fn socket_addr() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        (any::<[u8; 4]>(), any::<u16>())
            .prop_map(|(ip, port)| SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from(ip), port))),
        (any::<[u8; 16]>(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::V6(SocketAddrV6::new(
            Ipv6Addr::from(ip),
            port,
            0,
            0
        ))),
    ]
}

fn family() -> impl Strategy<Value = AddressFamily> {
    prop_oneof![Just(AddressFamily::V4), Just(AddressFamily::V6)]
}

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..=max)
}

fn spec() -> impl Strategy<Value = Spec> {
    prop_oneof![
        // Any printable characters, multi-byte ones included; within the
        // sending limits (≤ 127 characters are ≤ 508 bytes).
        "\\PC{0,100}".prop_map(Spec::Username),
        "\\PC{0,127}".prop_map(Spec::Realm),
        "\\PC{0,127}".prop_map(Spec::Nonce),
        "\\PC{0,40}".prop_map(Spec::Software),
        socket_addr().prop_map(Spec::Mapped),
        socket_addr().prop_map(Spec::XorMapped),
        socket_addr().prop_map(Spec::XorPeer),
        socket_addr().prop_map(Spec::XorRelayed),
        any::<u32>().prop_map(Spec::Lifetime),
        any::<u8>().prop_map(Spec::Transport),
        bytes(300).prop_map(Spec::Data),
        (MIN_CHANNEL..=MAX_CHANNEL).prop_map(Spec::Channel),
        any::<bool>().prop_map(Spec::EvenPort),
        Just(Spec::DontFragment),
        any::<[u8; 8]>().prop_map(Spec::Token),
        family().prop_map(Spec::RequestedFamily),
        family().prop_map(Spec::AdditionalFamily),
        (300u16..=699, "\\PC{0,60}").prop_map(|(c, r)| Spec::ErrorCode(c, r)),
        (any::<u16>(), bytes(9)).prop_map(|(a, p)| Spec::PasswordAlgorithm(a, p)),
        proptest::collection::vec((any::<u16>(), bytes(9)), 0..4)
            .prop_map(Spec::PasswordAlgorithms),
        any::<[u8; 32]>().prop_map(Spec::UserHash),
        (any::<u8>(), any::<u8>(), any::<u32>()).prop_map(|(t, c, d)| Spec::Icmp(t, c, d)),
        proptest::collection::vec(any::<u16>(), 0..6).prop_map(Spec::Unknown),
        (0xC000u16..=0xFFFF, bytes(40))
            .prop_filter("not FINGERPRINT", |(t, _)| *t != attr::FINGERPRINT)
            .prop_map(|(t, v)| Spec::Raw(t, v)),
    ]
}

fn class() -> impl Strategy<Value = Class> {
    prop_oneof![
        Just(Class::Request),
        Just(Class::Indication),
        Just(Class::Success),
        Just(Class::Error),
    ]
}

fn add(b: &mut MessageBuilder<'_>, s: &Spec) {
    match s {
        Spec::Username(v) => b.username(v),
        Spec::Realm(v) => b.realm(v),
        Spec::Nonce(v) => b.nonce(v),
        Spec::Software(v) => b.software(v),
        Spec::Mapped(a) => b.mapped_address(*a),
        Spec::XorMapped(a) => b.xor_mapped_address(*a),
        Spec::XorPeer(a) => b.xor_peer_address(*a),
        Spec::XorRelayed(a) => b.xor_relayed_address(*a),
        Spec::Lifetime(v) => b.lifetime(*v),
        Spec::Transport(v) => b.requested_transport(*v),
        Spec::Data(v) => b.data(v),
        Spec::Channel(v) => b.channel_number(*v),
        Spec::EvenPort(r) => b.even_port(*r),
        Spec::DontFragment => b.dont_fragment(),
        Spec::Token(t) => b.reservation_token(*t),
        Spec::RequestedFamily(f) => b.requested_address_family(*f),
        Spec::AdditionalFamily(f) => b.additional_address_family(*f),
        Spec::ErrorCode(c, r) => b.error_code(*c, r),
        Spec::PasswordAlgorithm(a, p) => b.password_algorithm(PasswordAlgorithm {
            algorithm: *a,
            params: p,
        }),
        Spec::PasswordAlgorithms(list) => {
            let algs: Vec<_> = list
                .iter()
                .map(|(a, p)| PasswordAlgorithm {
                    algorithm: *a,
                    params: p,
                })
                .collect();
            b.password_algorithms(&algs)
        }
        Spec::UserHash(h) => b.add(&UserHash(*h)),
        Spec::Icmp(t, c, d) => b.add(&Icmp {
            icmp_type: *t,
            code: *c,
            error_data: *d,
        }),
        Spec::Unknown(types) => b.unknown_attributes(types),
        Spec::Raw(t, v) => b.raw(*t, v),
    };
}

/// Decodes `raw` as the attribute `s` describes and compares values.
fn check(raw: RawAttr<'_>, s: &Spec, tid: &[u8; 12]) -> Result<(), TestCaseError> {
    fn dec<'a, A: Attribute<'a>>(raw: RawAttr<'a>, tid: &[u8; 12]) -> Result<A, TestCaseError> {
        prop_assert_eq!(raw.typ, A::TYPE);
        A::decode(raw.value, tid).map_err(|e| TestCaseError::fail(format!("{e}")))
    }
    match s {
        Spec::Username(v) => prop_assert_eq!(dec::<Username>(raw, tid)?.0, v.as_str()),
        Spec::Realm(v) => prop_assert_eq!(dec::<Realm>(raw, tid)?.0, v.as_str()),
        Spec::Nonce(v) => prop_assert_eq!(dec::<Nonce>(raw, tid)?.0, v.as_str()),
        Spec::Software(v) => prop_assert_eq!(dec::<Software>(raw, tid)?.0, v.as_str()),
        Spec::Mapped(a) => prop_assert_eq!(dec::<MappedAddress>(raw, tid)?.0, *a),
        Spec::XorMapped(a) => prop_assert_eq!(dec::<XorMappedAddress>(raw, tid)?.0, *a),
        Spec::XorPeer(a) => prop_assert_eq!(dec::<XorPeerAddress>(raw, tid)?.0, *a),
        Spec::XorRelayed(a) => prop_assert_eq!(dec::<XorRelayedAddress>(raw, tid)?.0, *a),
        Spec::Lifetime(v) => prop_assert_eq!(dec::<Lifetime>(raw, tid)?.0, *v),
        Spec::Transport(v) => prop_assert_eq!(dec::<RequestedTransport>(raw, tid)?.0, *v),
        Spec::Data(v) => prop_assert_eq!(dec::<Data>(raw, tid)?.0, v.as_slice()),
        Spec::Channel(v) => prop_assert_eq!(dec::<ChannelNumber>(raw, tid)?.0, *v),
        Spec::EvenPort(r) => prop_assert_eq!(dec::<EvenPort>(raw, tid)?.reserve, *r),
        Spec::DontFragment => {
            dec::<DontFragment>(raw, tid)?;
        }
        Spec::Token(t) => prop_assert_eq!(dec::<ReservationToken>(raw, tid)?.0, *t),
        Spec::RequestedFamily(f) => {
            prop_assert_eq!(dec::<RequestedAddressFamily>(raw, tid)?.0, *f)
        }
        Spec::AdditionalFamily(f) => {
            prop_assert_eq!(dec::<AdditionalAddressFamily>(raw, tid)?.0, *f)
        }
        Spec::ErrorCode(c, r) => {
            let e = dec::<ErrorCode>(raw, tid)?;
            prop_assert_eq!((e.code, e.reason), (*c, r.as_str()));
        }
        Spec::PasswordAlgorithm(a, p) => {
            let got = dec::<PasswordAlgorithm>(raw, tid)?;
            prop_assert_eq!((got.algorithm, got.params), (*a, p.as_slice()));
        }
        Spec::PasswordAlgorithms(list) => {
            let got: Vec<(u16, Vec<u8>)> = dec::<PasswordAlgorithms>(raw, tid)?
                .iter()
                .map(|a| (a.algorithm, a.params.to_vec()))
                .collect();
            prop_assert_eq!(&got, list);
        }
        Spec::UserHash(h) => prop_assert_eq!(dec::<UserHash>(raw, tid)?.0, *h),
        Spec::Icmp(t, c, d) => {
            let got = dec::<Icmp>(raw, tid)?;
            prop_assert_eq!((got.icmp_type, got.code, got.error_data), (*t, *c, *d));
        }
        Spec::Unknown(types) => {
            let got: Vec<u16> = dec::<UnknownAttributes>(raw, tid)?.iter().collect();
            prop_assert_eq!(&got, types);
        }
        Spec::Raw(t, v) => {
            prop_assert_eq!(raw.typ, *t);
            prop_assert_eq!(raw.value, v.as_slice());
        }
    }
    Ok(())
}

/// Which security attributes a generated message gets.
#[derive(Clone, Copy, Debug)]
struct Security {
    sha1: bool,
    sha256: bool,
    fingerprint: bool,
    /// Use prepared (`Sha1Key`/`Sha256Key`) keys.
    prepared: bool,
}

fn security() -> impl Strategy<Value = Security> {
    any::<[bool; 4]>().prop_map(|[sha1, sha256, fingerprint, prepared]| Security {
        sha1,
        sha256,
        fingerprint,
        prepared,
    })
}

/// Builds a message from the specs; returns it with the offsets where the
/// MESSAGE-INTEGRITY and MESSAGE-INTEGRITY-SHA256 attributes end.
fn build(
    class: Class,
    method: Method,
    tid: [u8; 12],
    specs: &[Spec],
    sec: Security,
    key: &[u8],
) -> (Vec<u8>, Option<usize>, Option<usize>) {
    let mut buf = Vec::new();
    let mut b = MessageBuilder::new(&mut buf, class, method, tid);
    for s in specs {
        add(&mut b, s);
    }
    let (k1, k256) = (Sha1Key::new(key), Sha256Key::new(key));
    let mut integrity = None;
    if sec.sha1 {
        if sec.prepared {
            b.message_integrity_with(&k1);
        } else {
            b.message_integrity(key);
        }
    }
    if sec.sha256 {
        integrity = Some(if sec.prepared {
            Integrity::Sha256Prepared(&k256)
        } else {
            Integrity::Sha256(key)
        });
    }
    b.finish(integrity, sec.fingerprint)
        .expect("generated attributes are within limits");
    let fp_len = if sec.fingerprint { 8 } else { 0 };
    let sha256_end = sec.sha256.then(|| buf.len() - fp_len);
    let sha1_end = sec
        .sha1
        .then(|| buf.len() - fp_len - if sec.sha256 { 36 } else { 0 });
    (buf, sha1_end, sha256_end)
}

/// Calls every accessor and decoder; must never panic.
fn exercise(m: &Message<'_>, key: &[u8]) {
    let _ = (m.class(), m.method(), m.transaction_id(), m.as_bytes());
    for a in m.attributes() {
        let _ = (a.typ, a.value);
    }
    let _ = m.unknown_comprehension_required();
    let _ = m.get::<Username>();
    let _ = m.get::<Realm>();
    let _ = m.get::<Nonce>();
    let _ = m.get::<Software>();
    let _ = m.get::<MappedAddress>();
    let _ = m.get::<AlternateServer>();
    let _ = m.get::<XorMappedAddress>();
    let _ = m.get_all::<XorPeerAddress>().count();
    let _ = m.get::<XorRelayedAddress>();
    let _ = m.get::<Lifetime>();
    let _ = m.get::<RequestedTransport>();
    let _ = m.get::<Data>();
    let _ = m.get::<ChannelNumber>();
    let _ = m.get::<EvenPort>();
    let _ = m.get::<DontFragment>();
    let _ = m.get::<ReservationToken>();
    let _ = m.get::<RequestedAddressFamily>();
    let _ = m.get::<AdditionalAddressFamily>();
    let _ = m.get::<ErrorCode>();
    let _ = m.get::<PasswordAlgorithm>();
    if let Ok(Some(list)) = m.get::<PasswordAlgorithms>() {
        let _ = list.iter().count();
    }
    let _ = m.get::<UserHash>();
    let _ = m.get::<Icmp>();
    if let Ok(Some(u)) = m.get::<UnknownAttributes>() {
        let _ = u.iter().count();
    }
    let _ = SendIndication::from_message(m);
    let _ = DataIndication::from_message(m);
    let _ = m.message_integrity();
    let _ = m.message_integrity_sha256();
    let _ = m.fingerprint();
    let _ = m.verify_integrity(key);
    let _ = m.verify_integrity_sha256(key);
    let _ = m.verify_integrity_sha256_truncated(key, 16);
    let _ = m.verify_fingerprint();
}

/// A body of well-framed TLVs with known types and random values, so that
/// every decoder sees random input.
fn random_tlv_message() -> impl Strategy<Value = Vec<u8>> {
    let known = prop_oneof![
        Just(attr::MAPPED_ADDRESS),
        Just(attr::USERNAME),
        Just(attr::MESSAGE_INTEGRITY),
        Just(attr::ERROR_CODE),
        Just(attr::UNKNOWN_ATTRIBUTES),
        Just(attr::CHANNEL_NUMBER),
        Just(attr::LIFETIME),
        Just(attr::XOR_PEER_ADDRESS),
        Just(attr::DATA),
        Just(attr::REALM),
        Just(attr::NONCE),
        Just(attr::XOR_RELAYED_ADDRESS),
        Just(attr::REQUESTED_ADDRESS_FAMILY),
        Just(attr::EVEN_PORT),
        Just(attr::REQUESTED_TRANSPORT),
        Just(attr::DONT_FRAGMENT),
        Just(attr::MESSAGE_INTEGRITY_SHA256),
        Just(attr::PASSWORD_ALGORITHM),
        Just(attr::USERHASH),
        Just(attr::XOR_MAPPED_ADDRESS),
        Just(attr::RESERVATION_TOKEN),
        Just(attr::ADDITIONAL_ADDRESS_FAMILY),
        Just(attr::PASSWORD_ALGORITHMS),
        Just(attr::ICMP),
        Just(attr::SOFTWARE),
        Just(attr::ALTERNATE_SERVER),
        Just(attr::FINGERPRINT),
        any::<u16>(),
    ];
    (
        any::<u16>(),
        proptest::collection::vec((known, bytes(40)), 0..8),
    )
        .prop_map(|(typ, attrs)| {
            let mut v = Vec::new();
            v.extend_from_slice(&(typ & 0x3FFF).to_be_bytes());
            v.extend_from_slice(&[0, 0]);
            v.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
            v.extend_from_slice(&[0x55; 12]);
            for (t, value) in attrs {
                v.extend_from_slice(&t.to_be_bytes());
                v.extend_from_slice(&(value.len() as u16).to_be_bytes());
                v.extend_from_slice(&value);
                while v.len() % 4 != 0 {
                    v.push(0);
                }
            }
            let body = (v.len() - HEADER_LEN) as u16;
            v[2..4].copy_from_slice(&body.to_be_bytes());
            v
        })
}

/// One frame of a TCP stream.
#[derive(Clone, Debug)]
enum Frame {
    Stun(Vec<Spec>, bool),
    ChannelData(u16, Vec<u8>),
}

fn frame() -> impl Strategy<Value = Frame> {
    prop_oneof![
        (proptest::collection::vec(spec(), 0..4), any::<bool>())
            .prop_map(|(s, fp)| Frame::Stun(s, fp)),
        (MIN_CHANNEL..=MAX_CHANNEL, bytes(100)).prop_map(|(c, d)| Frame::ChannelData(c, d)),
    ]
}

fn encode_frame(f: &Frame, out: &mut Vec<u8>) {
    match f {
        Frame::Stun(specs, fingerprint) => {
            let mut b = MessageBuilder::new(out, Class::Request, Method::REFRESH, [1; 12]);
            for s in specs {
                add(&mut b, s);
            }
            b.finish(None, *fingerprint).expect("fits");
        }
        Frame::ChannelData(c, d) => {
            channel_data::encode(out, *c, d, true).expect("valid");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn build_parse_round_trip(
        class in class(),
        method in 0u16..=0x0FFF,
        tid in any::<[u8; 12]>(),
        specs in proptest::collection::vec(spec(), 0..10),
        sec in security(),
        key in proptest::collection::vec(any::<u8>(), 1..100),
    ) {
        let method = Method::new(method).expect("12-bit");
        let (buf, _, _) = build(class, method, tid, &specs, sec, &key);
        let m = Message::parse(&buf).expect("built messages parse");
        prop_assert_eq!(m.class(), class);
        prop_assert_eq!(m.method(), method);
        prop_assert_eq!(m.transaction_id(), tid);
        let raws: Vec<RawAttr<'_>> = m.attributes().collect();
        prop_assert_eq!(raws.len(), specs.len());
        for (raw, s) in raws.iter().zip(&specs) {
            check(*raw, s, &tid)?;
        }
        prop_assert_eq!(m.message_integrity().is_some(), sec.sha1);
        prop_assert_eq!(m.message_integrity_sha256().is_some(), sec.sha256);
        prop_assert_eq!(m.fingerprint().is_some(), sec.fingerprint);
        prop_assert_eq!(m.verify_integrity(&key), sec.sha1);
        prop_assert_eq!(m.verify_integrity_sha256(&key), sec.sha256);
        prop_assert_eq!(m.verify_integrity_with(&Sha1Key::new(&key)), sec.sha1);
        prop_assert_eq!(
            m.verify_integrity_sha256_with(&Sha256Key::new(&key), SHA256_MAC_LEN),
            sec.sha256
        );
        prop_assert_eq!(m.verify_fingerprint(), sec.fingerprint);
        exercise(&m, &key);
    }

    #[test]
    fn integrity_fails_with_wrong_key(
        specs in proptest::collection::vec(spec(), 0..5),
        key in proptest::collection::vec(any::<u8>(), 1..100),
        change in any::<(usize, u8)>(),
    ) {
        let sec = Security { sha1: true, sha256: true, fingerprint: true, prepared: false };
        let (buf, _, _) = build(Class::Request, Method::ALLOCATE, [7; 12], &specs, sec, &key);
        let m = Message::parse(&buf).expect("valid");
        let mut wrong = key.clone();
        let (at, mask) = change;
        if mask == 0 {
            // Not a zero byte: HMAC zero-pads short keys, so `k` and
            // `k ‖ 0` are the same key (an HMAC property, RFC 2104).
            wrong.push(1);
        } else {
            let i = at % wrong.len();
            wrong[i] ^= mask;
        }
        prop_assert!(m.verify_integrity(&key));
        prop_assert!(!m.verify_integrity(&wrong));
        prop_assert!(m.verify_integrity_sha256(&key));
        prop_assert!(!m.verify_integrity_sha256(&wrong));
        prop_assert!(!m.verify_integrity_with(&Sha1Key::new(&wrong)));
        prop_assert!(!m.verify_integrity_sha256_with(&Sha256Key::new(&wrong), 16));
    }

    #[test]
    fn data_indication_fast_path_matches_builder(
        tid in any::<[u8; 12]>(),
        peer in socket_addr(),
        data in bytes(1500),
    ) {
        let mut direct = Vec::new();
        let n = encode_data_indication(&mut direct, tid, peer, &data).expect("fits");
        prop_assert_eq!(n, direct.len());
        let mut built = Vec::new();
        let mut b = MessageBuilder::new(&mut built, Class::Indication, Method::DATA, tid);
        b.xor_peer_address(peer).data(&data);
        b.finish(None, false).expect("fits");
        prop_assert_eq!(&direct, &built);
        let m = Message::parse(&direct).expect("valid");
        let ind = DataIndication::from_message(&m).expect("data indication");
        prop_assert_eq!(ind.peer, peer);
        prop_assert_eq!(ind.data, Some(data.as_slice()));
    }

    #[test]
    fn any_single_byte_flip_is_detected(
        specs in proptest::collection::vec(spec(), 0..5),
        sec in security(),
        key in proptest::collection::vec(any::<u8>(), 1..40),
        at in any::<usize>(),
        mask in 1u8..=255,
    ) {
        let (mut buf, sha1_end, sha256_end) =
            build(Class::Request, Method::CREATE_PERMISSION, [3; 12], &specs, sec, &key);
        let i = at % buf.len();
        buf[i] ^= mask;
        let Ok(m) = Message::parse(&buf) else {
            return Ok(()); // corruption caught by the parser
        };
        if sha1_end.is_some_and(|end| i < end) {
            prop_assert!(!m.verify_integrity(&key), "MI missed a flip at {}", i);
        }
        if sha256_end.is_some_and(|end| i < end) {
            prop_assert!(!m.verify_integrity_sha256(&key), "MI-SHA256 missed a flip at {}", i);
        }
        if sec.fingerprint {
            prop_assert!(!m.verify_fingerprint(), "FINGERPRINT missed a flip at {}", i);
        }
        exercise(&m, &key);
    }

    #[test]
    fn channel_data_round_trip(
        channel in MIN_CHANNEL..=MAX_CHANNEL,
        data in bytes(2000),
        pad in any::<bool>(),
        prefix in bytes(3),
    ) {
        let mut buf = prefix.clone();
        let n = channel_data::encode(&mut buf, channel, &data, pad).expect("valid");
        prop_assert_eq!(buf.len(), prefix.len() + n);
        let frame = &buf[prefix.len()..];
        if pad {
            prop_assert_eq!(frame.len() % 4, 0);
            prop_assert_eq!(next_frame_len(frame), Framing::Complete(frame.len()));
        } else {
            prop_assert_eq!(frame.len(), 4 + data.len());
        }
        let (c, d) = channel_data::parse(frame).expect("valid");
        prop_assert_eq!(c, channel);
        prop_assert_eq!(d, data.as_slice());
    }

    #[test]
    fn split_stream_yields_the_same_frames(
        frames in proptest::collection::vec(frame(), 0..8),
        cuts in proptest::collection::vec(any::<usize>(), 0..10),
    ) {
        let mut encoded = Vec::new();
        let mut stream = Vec::new();
        for f in &frames {
            let mut one = Vec::new();
            encode_frame(f, &mut one);
            stream.extend_from_slice(&one);
            encoded.push(one);
        }
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (stream.len() + 1)).collect();
        cuts.push(stream.len());
        cuts.sort_unstable();
        let mut buf = Vec::new();
        let mut got = Vec::new();
        let mut from = 0;
        for cut in cuts {
            buf.extend_from_slice(&stream[from..cut]);
            from = cut;
            loop {
                match next_frame_len(&buf) {
                    Framing::Complete(n) => {
                        got.push(buf[..n].to_vec());
                        buf.drain(..n);
                    }
                    Framing::NeedMore => break,
                    Framing::Invalid => prop_assert!(false, "valid stream judged invalid"),
                }
            }
        }
        prop_assert!(buf.is_empty());
        prop_assert_eq!(&got, &encoded);
        for f in &got {
            match f[0] >> 6 {
                0 => prop_assert!(Message::parse(f).is_ok()),
                _ => prop_assert!(channel_data::parse(f).is_ok()),
            }
        }
    }

    #[test]
    fn random_bytes_never_panic(data in bytes(200), cap in any::<u16>()) {
        if let Ok(m) = Message::parse(&data) {
            exercise(&m, b"key");
        }
        let _ = channel_data::parse(&data);
        let _ = next_frame_len(&data);
        let _ = next_frame_len_capped(&data, usize::from(cap));
    }

    #[test]
    fn random_attribute_values_never_panic(msg in random_tlv_message()) {
        // The framing is valid by construction; the values are random.
        if let Ok(m) = Message::parse(&msg) {
            exercise(&m, b"key");
        }
        prop_assert!(matches!(next_frame_len(&msg), Framing::Complete(n) if n == msg.len()));
    }

    #[test]
    fn lying_lengths_never_desynchronise(
        garbage in bytes(64),
        valid in frame(),
    ) {
        // Whatever precedes, the framer either rejects the stream or cuts
        // frames whose lengths it has fully checked: a complete frame is
        // never longer than the buffer and never shorter than a header.
        let mut stream = garbage.clone();
        encode_frame(&valid, &mut stream);
        let mut buf = stream.as_slice();
        while let Framing::Complete(n) = next_frame_len(buf) {
            prop_assert!(n >= 4 && n <= buf.len());
            buf = &buf[n..];
        }
    }
}
