//! MESSAGE-INTEGRITY (HMAC-SHA1, RFC 8489 §14.5) and
//! MESSAGE-INTEGRITY-SHA256 (HMAC-SHA256, §14.6).
//!
//! The HMAC covers the message up to the integrity attribute, with the
//! header's length field rewritten to end at the integrity attribute (so
//! that attributes added after it, FINGERPRINT in particular, do not change
//! it). The rewrite is done on a 20-byte stack copy of the header: the
//! receive buffer is never copied or modified.

use hmac::digest::KeyInit;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::Sha256;

use super::header::HEADER_LEN;
use super::message::Message;
use super::wire::read_u16;

/// Length of a MESSAGE-INTEGRITY value.
pub const SHA1_MAC_LEN: usize = 20;
/// Length of a full MESSAGE-INTEGRITY-SHA256 value.
pub const SHA256_MAC_LEN: usize = 32;
/// Shortest truncated MESSAGE-INTEGRITY-SHA256 value RFC 8489 allows.
pub const SHA256_MIN_TRUNCATED_LEN: usize = 16;

/// Which integrity attribute [`MessageBuilder::finish`](super::MessageBuilder::finish)
/// appends, and its key.
///
/// The key is the short-term password, or the long-term key from
/// [`credentials`](super::credentials) (MD5 or SHA-256 of
/// `username:realm:password`, per PASSWORD-ALGORITHM). The `*Prepared`
/// forms take a [`Sha1Key`] / [`Sha256Key`] cached per user, which skips
/// hashing the key pads on every message.
#[derive(Clone, Copy, Debug)]
pub enum Integrity<'k> {
    /// MESSAGE-INTEGRITY (HMAC-SHA1, 20 bytes): what TURN clients use.
    Sha1(&'k [u8]),
    /// MESSAGE-INTEGRITY-SHA256 (HMAC-SHA256, always the full 32 bytes).
    Sha256(&'k [u8]),
    /// MESSAGE-INTEGRITY with a prepared key.
    Sha1Prepared(&'k Sha1Key),
    /// MESSAGE-INTEGRITY-SHA256 with a prepared key.
    Sha256Prepared(&'k Sha256Key),
}

/// An HMAC-SHA1 key with its inner and outer pads already hashed.
///
/// `HMAC(k, m)` starts by compressing `k ^ ipad` and `k ^ opad`: two of the
/// five SHA-1 blocks a typical TURN request costs. A server keeps one of
/// these per user (or allocation) and clones its state per message.
#[derive(Clone)]
pub struct Sha1Key(Hmac<Sha1>);

impl Sha1Key {
    /// Prepares `key` (any length; HMAC hashes keys longer than 64 bytes).
    pub fn new(key: &[u8]) -> Sha1Key {
        // HMAC accepts every key length, so the fallback (the empty key)
        // is unreachable; it only keeps this path free of panics.
        Sha1Key(
            <Hmac<Sha1> as KeyInit>::new_from_slice(key)
                .unwrap_or_else(|_| <Hmac<Sha1> as KeyInit>::new(&Default::default())),
        )
    }
}

impl std::fmt::Debug for Sha1Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.write_str("Sha1Key(..)")
    }
}

/// An HMAC-SHA256 key with its pads already hashed; see [`Sha1Key`].
#[derive(Clone)]
pub struct Sha256Key(Hmac<Sha256>);

impl Sha256Key {
    /// Prepares `key` (any length).
    pub fn new(key: &[u8]) -> Sha256Key {
        Sha256Key(
            <Hmac<Sha256> as KeyInit>::new_from_slice(key)
                .unwrap_or_else(|_| <Hmac<Sha256> as KeyInit>::new(&Default::default())),
        )
    }
}

impl std::fmt::Debug for Sha256Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sha256Key(..)")
    }
}

/// Feeds `mac` with `prefix` (header + attributes before the integrity
/// attribute), the header's length replaced by `adjusted_len`.
fn feed<M: Mac>(mac: &mut M, prefix: &[u8], adjusted_len: u16) -> Option<()> {
    let (header, rest) = prefix.split_first_chunk::<HEADER_LEN>()?;
    let mut header = *header;
    header[2..4].copy_from_slice(&adjusted_len.to_be_bytes());
    mac.update(&header);
    mac.update(rest);
    Some(())
}

/// HMAC-SHA1 of `prefix` with the length field set to `adjusted_len`.
pub(crate) fn hmac_sha1(
    key: &Sha1Key,
    prefix: &[u8],
    adjusted_len: u16,
) -> Option<[u8; SHA1_MAC_LEN]> {
    let mut mac = key.0.clone();
    feed(&mut mac, prefix, adjusted_len)?;
    Some(mac.finalize().into_bytes().into())
}

/// HMAC-SHA256 of `prefix` with the length field set to `adjusted_len`.
pub(crate) fn hmac_sha256(
    key: &Sha256Key,
    prefix: &[u8],
    adjusted_len: u16,
) -> Option<[u8; SHA256_MAC_LEN]> {
    let mut mac = key.0.clone();
    feed(&mut mac, prefix, adjusted_len)?;
    Some(mac.finalize().into_bytes().into())
}

impl Message<'_> {
    /// The message up to the attribute at `off`, the value length of that
    /// attribute, and the header length that ends right after it.
    fn covered(&self, off: usize) -> Option<(&[u8], &[u8], u16)> {
        let len = usize::from(read_u16(self.buf, off + 2)?);
        let value = self.buf.get(off + 4..off + 4 + len)?;
        let adjusted = u16::try_from(off + 4 + len - HEADER_LEN).ok()?;
        Some((self.buf.get(..off)?, value, adjusted))
    }

    /// Checks MESSAGE-INTEGRITY (HMAC-SHA1) with `key`, in constant time.
    /// False when the attribute is absent (or ignored because it follows
    /// MESSAGE-INTEGRITY-SHA256).
    pub fn verify_integrity(&self, key: &[u8]) -> bool {
        self.integrity.is_some() && self.verify_integrity_with(&Sha1Key::new(key))
    }

    /// [`verify_integrity`](Self::verify_integrity) with a prepared key.
    pub fn verify_integrity_with(&self, key: &Sha1Key) -> bool {
        let Some((prefix, tag, adjusted)) = self.integrity.and_then(|off| self.covered(off)) else {
            return false;
        };
        let mut mac = key.0.clone();
        if feed(&mut mac, prefix, adjusted).is_none() {
            return false;
        }
        // `verify_slice` compares in constant time and rejects a tag of
        // any other length.
        mac.verify_slice(tag).is_ok()
    }

    /// Checks MESSAGE-INTEGRITY-SHA256 with `key`, in constant time,
    /// accepting only the full 32-byte value: RFC 8489 §14.6 allows
    /// truncation only where the STUN usage says so, and TURN (RFC 8656)
    /// does not.
    pub fn verify_integrity_sha256(&self, key: &[u8]) -> bool {
        self.integrity_sha256.is_some()
            && self.verify_integrity_sha256_with(&Sha256Key::new(key), SHA256_MAC_LEN)
    }

    /// Checks MESSAGE-INTEGRITY-SHA256 accepting values truncated to
    /// `min_len` bytes or more (never fewer than 16; always a multiple of
    /// 4, which the parser enforces), for usages that allow truncation.
    pub fn verify_integrity_sha256_truncated(&self, key: &[u8], min_len: usize) -> bool {
        self.integrity_sha256.is_some()
            && self.verify_integrity_sha256_with(&Sha256Key::new(key), min_len)
    }

    /// MESSAGE-INTEGRITY-SHA256 check with a prepared key, accepting values
    /// of at least `min_len` bytes (pass [`SHA256_MAC_LEN`] for TURN).
    pub fn verify_integrity_sha256_with(&self, key: &Sha256Key, min_len: usize) -> bool {
        let Some((prefix, tag, adjusted)) = self.integrity_sha256.and_then(|off| self.covered(off))
        else {
            return false;
        };
        if tag.len() < min_len.max(SHA256_MIN_TRUNCATED_LEN) {
            return false;
        }
        let mut mac = key.0.clone();
        if feed(&mut mac, prefix, adjusted).is_none() {
            return false;
        }
        // Compares the leftmost `tag.len()` bytes in constant time.
        mac.verify_truncated_left(tag).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prepared_keys_equal_plain_keys() {
        let prefix = [0u8; 40];
        for key in [&b""[..], b"k", &[7; 64], &[9; 200]] {
            let mut plain = <Hmac<Sha1> as KeyInit>::new_from_slice(key).expect("any length");
            feed(&mut plain, &prefix, 44).expect("header present");
            let plain: [u8; 20] = plain.finalize().into_bytes().into();
            assert_eq!(hmac_sha1(&Sha1Key::new(key), &prefix, 44), Some(plain));
        }
        assert_eq!(hmac_sha1(&Sha1Key::new(b"k"), &prefix[..19], 44), None);
        assert_eq!(format!("{:?}", Sha1Key::new(b"secret")), "Sha1Key(..)");
        assert_eq!(format!("{:?}", Sha256Key::new(b"secret")), "Sha256Key(..)");
    }

    /// A message whose MESSAGE-INTEGRITY-SHA256 is truncated to `len`.
    fn truncated_sha256(key: &[u8], len: usize) -> Vec<u8> {
        use crate::stun::{Class, MessageBuilder, Method};
        let mut buf = Vec::new();
        let mut b = MessageBuilder::new(&mut buf, Class::Request, Method::BINDING, [4; 12]);
        b.software("truncation");
        b.finish(None, false).expect("fits");
        let adjusted = (buf.len() - HEADER_LEN + 4 + len) as u16;
        let mac = hmac_sha256(&Sha256Key::new(key), &buf, adjusted).expect("header");
        buf.extend_from_slice(&0x001Cu16.to_be_bytes());
        buf.extend_from_slice(&(len as u16).to_be_bytes());
        buf.extend_from_slice(&mac[..len]);
        buf[2..4].copy_from_slice(&adjusted.to_be_bytes());
        buf
    }

    #[test]
    fn truncated_sha256_only_where_allowed() {
        let m16 = truncated_sha256(b"k", 16);
        let m = Message::parse(&m16).expect("valid");
        assert!(!m.verify_integrity_sha256(b"k"), "TURN wants all 32 bytes");
        assert!(m.verify_integrity_sha256_truncated(b"k", 16));
        assert!(
            m.verify_integrity_sha256_truncated(b"k", 0),
            "16 is the floor"
        );
        assert!(!m.verify_integrity_sha256_truncated(b"k", 20));
        assert!(!m.verify_integrity_sha256_truncated(b"j", 16));

        let m32 = truncated_sha256(b"k", 32);
        let m = Message::parse(&m32).expect("valid");
        assert!(m.verify_integrity_sha256(b"k"));
        assert!(m.verify_integrity_sha256_truncated(b"k", 16));
        assert!(!m.verify_integrity(b"k"), "no MESSAGE-INTEGRITY");
    }
}
