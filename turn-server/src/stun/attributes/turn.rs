//! The fixed-format TURN attributes of RFC 8656 §18: LIFETIME,
//! REQUESTED-TRANSPORT, DATA, CHANNEL-NUMBER, EVEN-PORT, DONT-FRAGMENT,
//! RESERVATION-TOKEN. Reserved (RFFU) bits are written as zero and ignored
//! when read.

use super::super::attr;
use super::super::channel_data;
use super::super::error::AttrError;
use super::super::header::TransactionId;
use super::{fixed, Attribute};

/// LIFETIME: seconds until the allocation expires (0 deletes it in a
/// Refresh). The server, not the codec, caps it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Lifetime(pub u32);

impl<'a> Attribute<'a> for Lifetime {
    const TYPE: u16 = attr::LIFETIME;

    fn decode(value: &'a [u8], _: &TransactionId) -> Result<Self, AttrError> {
        fixed::<4>(Self::TYPE, value).map(|b| Lifetime(u32::from_be_bytes(*b)))
    }

    fn value_len(&self) -> usize {
        4
    }

    fn encode_value(&self, _: &TransactionId, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.0.to_be_bytes());
    }
}

/// REQUESTED-TRANSPORT: the IP protocol number of the relayed transport.
///
/// Decoding accepts any protocol so that the server can answer 442
/// Unsupported Transport Protocol for anything but [`UDP`](Self::UDP).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RequestedTransport(pub u8);

impl RequestedTransport {
    /// UDP (17): the only transport RFC 8656 relays.
    pub const UDP: RequestedTransport = RequestedTransport(17);
    /// TCP (6): RFC 6062 TCP allocations.
    pub const TCP: RequestedTransport = RequestedTransport(6);
}

impl<'a> Attribute<'a> for RequestedTransport {
    const TYPE: u16 = attr::REQUESTED_TRANSPORT;

    fn decode(value: &'a [u8], _: &TransactionId) -> Result<Self, AttrError> {
        let [protocol, ..] = *fixed::<4>(Self::TYPE, value)?;
        Ok(RequestedTransport(protocol))
    }

    fn value_len(&self) -> usize {
        4
    }

    fn encode_value(&self, _: &TransactionId, out: &mut Vec<u8>) {
        out.extend_from_slice(&[self.0, 0, 0, 0]);
    }
}

/// DATA: the application payload of a Send or Data indication, borrowed
/// from the datagram (zero copies on the relay path).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Data<'a>(pub &'a [u8]);

impl<'a> Attribute<'a> for Data<'a> {
    const TYPE: u16 = attr::DATA;

    fn decode(value: &'a [u8], _: &TransactionId) -> Result<Self, AttrError> {
        Ok(Data(value))
    }

    fn value_len(&self) -> usize {
        self.0.len()
    }

    fn encode_value(&self, _: &TransactionId, out: &mut Vec<u8>) {
        out.extend_from_slice(self.0);
    }
}

/// CHANNEL-NUMBER: a channel in 0x4000..=0x4FFF (RFC 8656 §12; the
/// numbers 0x5000..=0x7FFE, reserved by RFC 8656 but valid in RFC 5766, are
/// accepted for older clients such as coturn's; 0x7FFF is not), then 16 RFFU bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ChannelNumber(pub u16);

impl<'a> Attribute<'a> for ChannelNumber {
    const TYPE: u16 = attr::CHANNEL_NUMBER;

    fn decode(value: &'a [u8], _: &TransactionId) -> Result<Self, AttrError> {
        let [n0, n1, ..] = *fixed::<4>(Self::TYPE, value)?;
        let n = ChannelNumber(u16::from_be_bytes([n0, n1]));
        n.check()?;
        Ok(n)
    }

    fn value_len(&self) -> usize {
        4
    }

    fn encode_value(&self, _: &TransactionId, out: &mut Vec<u8>) {
        let [n0, n1] = self.0.to_be_bytes();
        out.extend_from_slice(&[n0, n1, 0, 0]);
    }

    fn check(&self) -> Result<(), AttrError> {
        if channel_data::is_valid_channel(self.0) {
            Ok(())
        } else {
            Err(AttrError::OutOfRange { attr: Self::TYPE })
        }
    }
}

/// EVEN-PORT: ask for an even relayed port; `reserve` (the R bit) also
/// reserves the next port for a later allocation (RTP/RTCP pairs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct EvenPort {
    /// The R bit.
    pub reserve: bool,
}

impl<'a> Attribute<'a> for EvenPort {
    const TYPE: u16 = attr::EVEN_PORT;

    fn decode(value: &'a [u8], _: &TransactionId) -> Result<Self, AttrError> {
        // One byte: R then 7 RFFU bits.
        let [flags] = *fixed::<1>(Self::TYPE, value)?;
        Ok(EvenPort {
            reserve: flags & 0x80 != 0,
        })
    }

    fn value_len(&self) -> usize {
        1
    }

    fn encode_value(&self, _: &TransactionId, out: &mut Vec<u8>) {
        out.push(if self.reserve { 0x80 } else { 0 });
    }
}

/// DONT-FRAGMENT: no value; its presence asks the relay to set DF on the
/// datagrams it sends to peers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DontFragment;

impl<'a> Attribute<'a> for DontFragment {
    const TYPE: u16 = attr::DONT_FRAGMENT;

    fn decode(value: &'a [u8], _: &TransactionId) -> Result<Self, AttrError> {
        fixed::<0>(Self::TYPE, value).map(|_| DontFragment)
    }

    fn value_len(&self) -> usize {
        0
    }

    fn encode_value(&self, _: &TransactionId, _: &mut Vec<u8>) {}
}

/// RESERVATION-TOKEN: names the port reserved by an earlier EVEN-PORT R=1
/// allocation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ReservationToken(pub [u8; 8]);

impl<'a> Attribute<'a> for ReservationToken {
    const TYPE: u16 = attr::RESERVATION_TOKEN;

    fn decode(value: &'a [u8], _: &TransactionId) -> Result<Self, AttrError> {
        fixed::<8>(Self::TYPE, value).map(|t| ReservationToken(*t))
    }

    fn value_len(&self) -> usize {
        8
    }

    fn encode_value(&self, _: &TransactionId, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TID: TransactionId = [0; 12];

    #[test]
    fn fixed_lengths_are_enforced() {
        assert_eq!(Lifetime::decode(&[0, 0, 2, 88], &TID), Ok(Lifetime(600)));
        assert!(Lifetime::decode(&[0, 0, 2], &TID).is_err());
        assert!(Lifetime::decode(&[0, 0, 2, 88, 0], &TID).is_err());
        assert!(RequestedTransport::decode(&[17, 0, 0], &TID).is_err());
        assert!(EvenPort::decode(&[], &TID).is_err());
        assert!(EvenPort::decode(&[0x80, 0], &TID).is_err());
        assert!(DontFragment::decode(&[0], &TID).is_err());
        assert!(ReservationToken::decode(&[0; 7], &TID).is_err());
    }

    #[test]
    fn requested_transport_keeps_any_protocol() {
        assert_eq!(
            RequestedTransport::decode(&[17, 1, 2, 3], &TID),
            Ok(RequestedTransport::UDP)
        );
        assert_eq!(
            RequestedTransport::decode(&[6, 0, 0, 0], &TID),
            Ok(RequestedTransport::TCP)
        );
    }

    #[test]
    fn channel_number_range() {
        let t = attr::CHANNEL_NUMBER;
        assert_eq!(
            ChannelNumber::decode(&[0x40, 0x00, 0xff, 0xff], &TID),
            Ok(ChannelNumber(0x4000))
        );
        assert_eq!(
            ChannelNumber::decode(&[0x4f, 0xff, 0, 0], &TID),
            Ok(ChannelNumber(0x4fff))
        );
        for bad in [0x3fffu16, 0x7fff, 0x0000, 0xffff] {
            let [a, b] = bad.to_be_bytes();
            assert_eq!(
                ChannelNumber::decode(&[a, b, 0, 0], &TID),
                Err(AttrError::OutOfRange { attr: t }),
                "{bad:#x}"
            );
        }
        assert!(ChannelNumber(0x7fff).check().is_err());
    }

    #[test]
    fn even_port_r_bit() {
        assert_eq!(
            EvenPort::decode(&[0x80], &TID),
            Ok(EvenPort { reserve: true })
        );
        assert_eq!(
            EvenPort::decode(&[0x7f], &TID),
            Ok(EvenPort { reserve: false })
        );
    }
}
