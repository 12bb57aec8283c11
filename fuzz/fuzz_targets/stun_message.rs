//! Any datagram: parsing, every accessor and decoder, and integrity checks
//! never panic; a parsed message re-encoded from its attributes parses to
//! the same message, and every typed value re-encodes to itself.
#![no_main]
use libfuzzer_sys::fuzz_target;
use turn_server::stun::attributes::*;
use turn_server::stun::{DataIndication, Message, MessageBuilder, SendIndication};

const KEY: &[u8] = b"fuzz-key";

/// Decodes the first `$ty`; if it decodes and may be sent, builds a message
/// holding only it and checks that it decodes to the same value.
macro_rules! retype {
    ($m:expr, $ty:ty) => {
        if let Ok(Some(v)) = $m.get::<$ty>() {
            if v.check().is_ok() {
                let mut buf = Vec::new();
                let mut b =
                    MessageBuilder::new(&mut buf, $m.class(), $m.method(), $m.transaction_id());
                b.add(&v);
                // No larger than the attribute was in the parsed message.
                b.finish(None, false).expect("one decoded attribute fits");
                let again = Message::parse(&buf).expect("built message parses");
                assert_eq!(again.get::<$ty>(), Ok(Some(v)));
            }
        }
    };
}

fuzz_target!(|data: &[u8]| {
    let Ok(m) = Message::parse(data) else {
        return;
    };
    let _ = m.unknown_comprehension_required();
    let _ = m.get_all::<XorPeerAddress>().count();
    if let Ok(Some(list)) = m.get::<PasswordAlgorithms>() {
        let _ = list.iter().count();
    }
    if let Ok(Some(list)) = m.get::<UnknownAttributes>() {
        let _ = list.iter().count();
    }
    let _ = SendIndication::from_message(&m);
    let _ = DataIndication::from_message(&m);
    let _ = (
        m.message_integrity(),
        m.message_integrity_sha256(),
        m.fingerprint(),
    );
    let _ = m.verify_integrity(KEY);
    let _ = m.verify_integrity_sha256(KEY);
    let _ = m.verify_integrity_sha256_truncated(KEY, 16);
    let _ = m.verify_fingerprint();

    // Re-encode the considered attributes as they are.
    let mut buf = Vec::new();
    let mut b = MessageBuilder::new(&mut buf, m.class(), m.method(), m.transaction_id());
    for a in m.attributes() {
        b.raw(a.typ, a.value);
    }
    b.finish(None, false)
        .expect("a parsed message's attributes fit again");
    let again = Message::parse(&buf).expect("re-encoded message parses");
    assert_eq!(again.class(), m.class());
    assert_eq!(again.method(), m.method());
    assert_eq!(again.transaction_id(), m.transaction_id());
    assert!(again.attributes().eq(m.attributes()));

    retype!(m, Username);
    retype!(m, Realm);
    retype!(m, Nonce);
    retype!(m, Software);
    retype!(m, MappedAddress);
    retype!(m, AlternateServer);
    retype!(m, XorMappedAddress);
    retype!(m, XorPeerAddress);
    retype!(m, XorRelayedAddress);
    retype!(m, Lifetime);
    retype!(m, RequestedTransport);
    retype!(m, Data);
    retype!(m, ChannelNumber);
    retype!(m, EvenPort);
    retype!(m, DontFragment);
    retype!(m, ReservationToken);
    retype!(m, RequestedAddressFamily);
    retype!(m, AdditionalAddressFamily);
    retype!(m, ErrorCode);
    retype!(m, PasswordAlgorithm);
    retype!(m, PasswordAlgorithms);
    retype!(m, UserHash);
    retype!(m, Icmp);
    retype!(m, UnknownAttributes);
});
