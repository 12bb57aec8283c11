//! Send and Data indications (RFC 8656 §11): the relay path for clients
//! that have no channel. Parsing reads peer and payload in one pass over
//! the attributes and borrows the payload from the datagram; encoding
//! writes straight into the caller's buffer.

use std::net::SocketAddr;

use thiserror::Error;

use super::attr;
use super::attributes::{address, Attribute, Icmp, XorPeerAddress};
use super::builder::MessageBuilder;
use super::error::{AttrError, BuildError};
use super::header::{
    message_type, Class, Method, TransactionId, HEADER_LEN, MAGIC_COOKIE, MAX_BODY_LEN,
};
use super::message::Message;
use super::wire::{pad4, push_padding};

/// Why a message is not a usable Send/Data indication. Indications are
/// never answered: the server discards them (RFC 8656 §11.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
pub enum IndicationError {
    /// Not an indication of the expected method.
    #[error("not a {0:?} indication")]
    WrongType(Method),
    /// No XOR-PEER-ADDRESS.
    #[error("no XOR-PEER-ADDRESS")]
    MissingPeerAddress,
    /// No DATA (nor, in a Data indication, ICMP).
    #[error("no DATA")]
    MissingData,
    /// A comprehension-required attribute this codec does not understand:
    /// RFC 8489 §6.3.2 says to discard the indication.
    #[error("unknown comprehension-required attribute {0:#06x}")]
    UnknownAttribute(u16),
    /// A malformed attribute.
    #[error(transparent)]
    Attr(#[from] AttrError),
}

/// A Send indication: client → relay → `peer`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SendIndication<'a> {
    /// Where to send the payload (first XOR-PEER-ADDRESS).
    pub peer: SocketAddr,
    /// The payload, borrowed from the received datagram.
    pub data: &'a [u8],
    /// DONT-FRAGMENT was present.
    pub dont_fragment: bool,
}

impl<'a> SendIndication<'a> {
    /// Extracts peer and payload from a parsed Send indication.
    pub fn from_message(msg: &Message<'a>) -> Result<SendIndication<'a>, IndicationError> {
        if msg.class() != Class::Indication || msg.method() != Method::SEND {
            return Err(IndicationError::WrongType(Method::SEND));
        }
        // One pass collecting slices; the address is decoded after the
        // loop (carrying a decoded `SocketAddr` through the loop costs
        // store-forwarding stalls: ~2x on this path).
        let mut peer = None;
        let mut data = None;
        let mut dont_fragment = false;
        for a in msg.attributes() {
            match a.typ {
                attr::XOR_PEER_ADDRESS if peer.is_none() => peer = Some(a.value),
                attr::DATA if data.is_none() => data = Some(a.value),
                attr::DONT_FRAGMENT => dont_fragment = true,
                t if !attr::is_understood(t) => return Err(IndicationError::UnknownAttribute(t)),
                _ => {}
            }
        }
        let peer = peer.ok_or(IndicationError::MissingPeerAddress)?;
        let data = data.ok_or(IndicationError::MissingData)?;
        Ok(SendIndication {
            peer: XorPeerAddress::decode(peer, &msg.transaction_id)?.0,
            data,
            dont_fragment,
        })
    }
}

/// A Data indication: `peer` → relay → client (what a TURN client parses).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DataIndication<'a> {
    /// Who sent the payload.
    pub peer: SocketAddr,
    /// The payload; absent when the indication reports an ICMP error.
    pub data: Option<&'a [u8]>,
    /// An ICMP error the relay received from the peer.
    pub icmp: Option<Icmp>,
}

impl<'a> DataIndication<'a> {
    /// Extracts peer and payload (or ICMP) from a parsed Data indication.
    pub fn from_message(msg: &Message<'a>) -> Result<DataIndication<'a>, IndicationError> {
        if msg.class() != Class::Indication || msg.method() != Method::DATA {
            return Err(IndicationError::WrongType(Method::DATA));
        }
        let tid = &msg.transaction_id;
        let mut peer = None;
        let mut data = None;
        let mut icmp = None;
        for a in msg.attributes() {
            match a.typ {
                attr::XOR_PEER_ADDRESS if peer.is_none() => peer = Some(a.value),
                attr::DATA if data.is_none() => data = Some(a.value),
                attr::ICMP if icmp.is_none() => icmp = Some(a.value),
                t if !attr::is_understood(t) => return Err(IndicationError::UnknownAttribute(t)),
                _ => {}
            }
        }
        let peer = peer.ok_or(IndicationError::MissingPeerAddress)?;
        if data.is_none() && icmp.is_none() {
            return Err(IndicationError::MissingData);
        }
        Ok(DataIndication {
            peer: XorPeerAddress::decode(peer, tid)?.0,
            data,
            icmp: icmp.map(|v| Icmp::decode(v, tid)).transpose()?,
        })
    }
}

/// Appends a Data indication (XOR-PEER-ADDRESS + DATA, no integrity, no
/// fingerprint) to `buf`; returns its length. `transaction_id` should be
/// random per indication (RFC 8656 §11.3 leaves it to the server; it also
/// keys the XOR of an IPv6 peer address).
///
/// This is the relay's per-datagram path towards clients without a
/// channel, so it writes the bytes directly (one `reserve`, final length
/// known up front) rather than through [`MessageBuilder`]; the output is
/// identical.
pub fn encode_data_indication(
    buf: &mut Vec<u8>,
    transaction_id: TransactionId,
    peer: SocketAddr,
    data: &[u8],
) -> Result<usize, BuildError> {
    let addr_len = address::value_len(&peer);
    let body = 4 + addr_len + 4 + pad4(data.len());
    if body > MAX_BODY_LEN {
        return Err(BuildError::TooLong);
    }
    // Both fit in 16 bits: `body` is at most MAX_BODY_LEN.
    let (body16, data16, addr16) = (body as u16, data.len() as u16, addr_len as u16);
    let start = buf.len();
    buf.reserve(HEADER_LEN + body);
    buf.extend_from_slice(&message_type(Class::Indication, Method::DATA).to_be_bytes());
    buf.extend_from_slice(&body16.to_be_bytes());
    buf.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
    buf.extend_from_slice(&transaction_id);
    buf.extend_from_slice(&attr::XOR_PEER_ADDRESS.to_be_bytes());
    buf.extend_from_slice(&addr16.to_be_bytes());
    address::encode(&peer, Some(&transaction_id), buf);
    buf.extend_from_slice(&attr::DATA.to_be_bytes());
    buf.extend_from_slice(&data16.to_be_bytes());
    buf.extend_from_slice(data);
    push_padding(buf, data.len());
    Ok(buf.len() - start)
}

/// Appends a Send indication (XOR-PEER-ADDRESS + DATA, and DONT-FRAGMENT
/// if asked) to `buf`; returns its length. For clients and tests.
pub fn encode_send_indication(
    buf: &mut Vec<u8>,
    transaction_id: TransactionId,
    peer: SocketAddr,
    data: &[u8],
    dont_fragment: bool,
) -> Result<usize, BuildError> {
    let mut b = MessageBuilder::new(buf, Class::Indication, Method::SEND, transaction_id);
    b.xor_peer_address(peer).data(data);
    if dont_fragment {
        b.dont_fragment();
    }
    b.finish(None, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TID: TransactionId = [3; 12];

    #[test]
    fn send_round_trip_borrows_payload() {
        let peer: SocketAddr = "[2001:db8::5]:3478".parse().expect("addr");
        let mut buf = Vec::new();
        let n = encode_send_indication(&mut buf, TID, peer, b"hello", true).expect("fits");
        assert_eq!(n, buf.len());
        let msg = Message::parse(&buf).expect("valid");
        let send = SendIndication::from_message(&msg).expect("send");
        assert_eq!(send.peer, peer);
        assert_eq!(send.data, b"hello");
        assert!(send.dont_fragment);
        // Zero copy: the payload points into the datagram.
        let range = buf.as_ptr_range();
        assert!(range.contains(&send.data.as_ptr()));
    }

    #[test]
    fn data_round_trip() {
        let peer: SocketAddr = "198.51.100.9:5000".parse().expect("addr");
        let mut buf = Vec::new();
        encode_data_indication(&mut buf, TID, peer, &[1, 2, 3]).expect("fits");
        let msg = Message::parse(&buf).expect("valid");
        let ind = DataIndication::from_message(&msg).expect("data");
        assert_eq!(ind.peer, peer);
        assert_eq!(ind.data, Some(&[1u8, 2, 3][..]));
        assert_eq!(ind.icmp, None);
        assert_eq!(
            SendIndication::from_message(&msg),
            Err(IndicationError::WrongType(Method::SEND))
        );
    }

    #[test]
    fn direct_data_indication_matches_builder() {
        for peer in ["198.51.100.9:5000", "[2001:db8::7]:65535"] {
            let peer: SocketAddr = peer.parse().expect("addr");
            for len in 0..9 {
                let data: Vec<u8> = (0..len).collect();
                let mut direct = vec![0xEE];
                let n = encode_data_indication(&mut direct, TID, peer, &data).expect("fits");
                let mut built = vec![0xEE];
                let mut b = MessageBuilder::new(&mut built, Class::Indication, Method::DATA, TID);
                b.xor_peer_address(peer).data(&data);
                assert_eq!(b.finish(None, false), Ok(n));
                assert_eq!(direct, built);
            }
        }
        let mut buf = vec![1];
        let too_big = vec![0; MAX_BODY_LEN - 12 - 4 + 1];
        let peer: SocketAddr = "198.51.100.9:5000".parse().expect("addr");
        assert_eq!(
            encode_data_indication(&mut buf, TID, peer, &too_big),
            Err(BuildError::TooLong)
        );
        assert_eq!(buf, [1]);
        let fits = vec![0; MAX_BODY_LEN - 12 - 4];
        assert!(encode_data_indication(&mut buf, TID, peer, &fits).is_ok());
    }

    #[test]
    fn missing_and_unknown_attributes() {
        let peer: SocketAddr = "198.51.100.9:5000".parse().expect("addr");
        let mut buf = Vec::new();
        let mut b = MessageBuilder::new(&mut buf, Class::Indication, Method::SEND, TID);
        b.data(b"x");
        b.finish(None, false).expect("fits");
        let msg = Message::parse(&buf).expect("valid");
        assert_eq!(
            SendIndication::from_message(&msg),
            Err(IndicationError::MissingPeerAddress)
        );

        buf.clear();
        let mut b = MessageBuilder::new(&mut buf, Class::Indication, Method::SEND, TID);
        b.xor_peer_address(peer);
        b.finish(None, false).expect("fits");
        let msg = Message::parse(&buf).expect("valid");
        assert_eq!(
            SendIndication::from_message(&msg),
            Err(IndicationError::MissingData)
        );

        buf.clear();
        let mut b = MessageBuilder::new(&mut buf, Class::Indication, Method::SEND, TID);
        b.xor_peer_address(peer).raw(0x7ABC, b"?").data(b"x");
        b.finish(None, false).expect("fits");
        let msg = Message::parse(&buf).expect("valid");
        assert_eq!(
            SendIndication::from_message(&msg),
            Err(IndicationError::UnknownAttribute(0x7ABC))
        );

        buf.clear();
        let mut b = MessageBuilder::new(&mut buf, Class::Indication, Method::SEND, TID);
        b.raw(attr::XOR_PEER_ADDRESS, &[0, 9, 0, 0]).data(b"x");
        b.finish(None, false).expect("fits");
        let msg = Message::parse(&buf).expect("valid");
        assert!(matches!(
            SendIndication::from_message(&msg),
            Err(IndicationError::Attr(_))
        ));
    }

    #[test]
    fn data_indication_with_icmp_only() {
        let peer: SocketAddr = "198.51.100.9:5000".parse().expect("addr");
        let mut buf = Vec::new();
        let mut b = MessageBuilder::new(&mut buf, Class::Indication, Method::DATA, TID);
        let icmp = Icmp {
            icmp_type: 3,
            code: 4,
            error_data: 1400,
        };
        b.xor_peer_address(peer).add(&icmp);
        b.finish(None, false).expect("fits");
        let msg = Message::parse(&buf).expect("valid");
        let ind = DataIndication::from_message(&msg).expect("icmp");
        assert_eq!(ind.icmp, Some(icmp));
        assert_eq!(ind.data, None);
    }
}
