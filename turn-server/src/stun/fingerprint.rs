//! FINGERPRINT (RFC 8489 §14.7): CRC-32 (ITU V.42, the zlib/Ethernet CRC)
//! of the message before the attribute, XORed with 0x5354554E ("STUN") so
//! that a CRC in an application protocol's payload is not mistaken for it.

use super::message::Message;

/// The constant the CRC is XORed with.
pub const FINGERPRINT_XOR: u32 = 0x5354_554E;

/// FINGERPRINT value for the bytes before the attribute (whose header
/// length must already count the FINGERPRINT attribute).
pub(crate) fn compute(prefix: &[u8]) -> u32 {
    crc32fast::hash(prefix) ^ FINGERPRINT_XOR
}

impl Message<'_> {
    /// True when FINGERPRINT is present and matches. FINGERPRINT is last,
    /// so the header's length already covers it as sent: the CRC runs over
    /// the received bytes unchanged.
    pub fn verify_fingerprint(&self) -> bool {
        let (Some(off), Some(sent)) = (self.fingerprint, self.fingerprint()) else {
            return false;
        };
        match self.buf.get(..off) {
            Some(prefix) => compute(prefix) == sent,
            None => false,
        }
    }
}
