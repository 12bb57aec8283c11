//! The 20-byte STUN header (RFC 8489 §5): message type (class and method
//! interleaved in 14 bits), length, magic cookie, transaction id.

use std::fmt;

/// The fixed value in bytes 4..8 of every RFC 5389/8489 STUN message.
pub const MAGIC_COOKIE: u32 = 0x2112_A442;

/// Size of the STUN header.
pub const HEADER_LEN: usize = 20;

/// Largest value of the header's length field that a message can carry:
/// the field is 16 bits and the length is a multiple of 4.
pub const MAX_BODY_LEN: usize = 0xFFFC;

/// The 96-bit transaction id.
pub type TransactionId = [u8; 12];

/// The class of a STUN message (the two C bits of the message type).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Class {
    /// 0b00: expects a response.
    Request,
    /// 0b01: no response (Send/Data indications, keep-alives).
    Indication,
    /// 0b10: success response.
    Success,
    /// 0b11: error response (carries ERROR-CODE).
    Error,
}

impl Class {
    const fn bits(self) -> u16 {
        match self {
            Class::Request => 0b00,
            Class::Indication => 0b01,
            Class::Success => 0b10,
            Class::Error => 0b11,
        }
    }

    const fn from_bits(bits: u16) -> Class {
        match bits & 0b11 {
            0b00 => Class::Request,
            0b01 => Class::Indication,
            0b10 => Class::Success,
            _ => Class::Error,
        }
    }
}

/// A 12-bit STUN method. The constants are the ones a TURN server handles.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Method(u16);

impl Method {
    /// RFC 8489 Binding.
    pub const BINDING: Method = Method(0x001);
    /// RFC 8656 Allocate.
    pub const ALLOCATE: Method = Method(0x003);
    /// RFC 8656 Refresh.
    pub const REFRESH: Method = Method(0x004);
    /// RFC 8656 Send (indication).
    pub const SEND: Method = Method(0x006);
    /// RFC 8656 Data (indication).
    pub const DATA: Method = Method(0x007);
    /// RFC 8656 CreatePermission.
    pub const CREATE_PERMISSION: Method = Method(0x008);
    /// RFC 8656 ChannelBind.
    pub const CHANNEL_BIND: Method = Method(0x009);

    /// The method with this number, `None` above 0xFFF (12 bits).
    pub const fn new(value: u16) -> Option<Method> {
        if value <= 0x0FFF {
            Some(Method(value))
        } else {
            None
        }
    }

    /// The method number (0..=0xFFF).
    pub const fn value(self) -> u16 {
        self.0
    }
}

impl fmt::Debug for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match *self {
            Method::BINDING => "Binding",
            Method::ALLOCATE => "Allocate",
            Method::REFRESH => "Refresh",
            Method::SEND => "Send",
            Method::DATA => "Data",
            Method::CREATE_PERMISSION => "CreatePermission",
            Method::CHANNEL_BIND => "ChannelBind",
            _ => return write!(f, "Method({:#05x})", self.0),
        };
        f.write_str(name)
    }
}

/// Interleaves class and method into the 14-bit message type:
/// `M11..M7 C1 M6..M4 C0 M3..M0` (RFC 8489 Figure 3).
pub(crate) const fn message_type(class: Class, method: Method) -> u16 {
    let m = method.0;
    let c = class.bits();
    (m & 0x000F) | ((m & 0x0070) << 1) | ((m & 0x0F80) << 2) | ((c & 0b01) << 4) | ((c & 0b10) << 7)
}

/// Splits a message type into class and method (the top two bits, which
/// must be zero, are checked by the parser, not here).
pub(crate) const fn split_message_type(t: u16) -> (Class, Method) {
    let class = Class::from_bits(((t >> 7) & 0b10) | ((t >> 4) & 0b01));
    let method = (t & 0x000F) | ((t >> 1) & 0x0070) | ((t >> 2) & 0x0F80);
    (class, Method(method))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn well_known_types() {
        // Values from RFC 8489 §6 / §18.2 and RFC 8656 §17.
        assert_eq!(message_type(Class::Request, Method::BINDING), 0x0001);
        assert_eq!(message_type(Class::Indication, Method::BINDING), 0x0011);
        assert_eq!(message_type(Class::Success, Method::BINDING), 0x0101);
        assert_eq!(message_type(Class::Error, Method::BINDING), 0x0111);
        assert_eq!(message_type(Class::Request, Method::ALLOCATE), 0x0003);
        assert_eq!(message_type(Class::Success, Method::ALLOCATE), 0x0103);
        assert_eq!(message_type(Class::Error, Method::ALLOCATE), 0x0113);
        assert_eq!(message_type(Class::Indication, Method::SEND), 0x0016);
        assert_eq!(message_type(Class::Indication, Method::DATA), 0x0017);
        assert_eq!(message_type(Class::Request, Method::CHANNEL_BIND), 0x0009);
    }

    #[test]
    fn type_round_trip_for_every_class_and_method() {
        for m in 0..=0x0FFF {
            let method = Method::new(m).expect("12-bit");
            for class in [
                Class::Request,
                Class::Indication,
                Class::Success,
                Class::Error,
            ] {
                let t = message_type(class, method);
                assert_eq!(t & 0xC000, 0);
                assert_eq!(split_message_type(t), (class, method));
            }
        }
    }

    #[test]
    fn method_range_and_debug() {
        assert!(Method::new(0x1000).is_none());
        assert_eq!(Method::new(0x0FFF).map(Method::value), Some(0x0FFF));
        assert_eq!(format!("{:?}", Method::REFRESH), "Refresh");
        assert_eq!(format!("{:?}", Method(0x0AB)), "Method(0x0ab)");
    }
}
