//! Key derivations for STUN authentication.
//!
//! * Short-term credentials (RFC 8489 §9.1.1): the key is the password
//!   itself; pass its bytes to the integrity functions.
//! * Long-term credentials (RFC 8489 §9.2.2): `MD5(username ":" realm ":"
//!   password)`, or with PASSWORD-ALGORITHM SHA-256,
//!   `SHA-256(username ":" realm ":" password)`.
//! * TURN REST credentials, as coturn's `use-auth-secret`: the username is
//!   `expiry:user` (expiry a Unix timestamp in seconds) and the password
//!   `base64(HMAC-SHA1(secret, username))`; the long-term key is then
//!   derived from that password as above.
//!
//! **SASLprep / OpaqueString.** RFC 8489 wants username, realm and password
//! processed with the PRECIS OpaqueString profile (RFC 5389: SASLprep)
//! before hashing. We do not implement it: strings are used as the UTF-8
//! bytes given. For ASCII credentials without control characters (what
//! coturn-compatible deployments and REST credentials use) the profiles
//! change nothing; RFC 5769's non-ASCII test username is also unchanged by
//! them. Operators with non-ASCII credentials must store them already
//! normalised (NFC).

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::digest::KeyInit;
use hmac::{Hmac, Mac};
use md5::{Digest, Md5};
use sha1::Sha1;
use sha2::Sha256;

use super::attributes::PasswordAlgorithm;

/// MD5(username ":" realm ":" password): the RFC 8489 §9.2.2 long-term key
/// (PASSWORD-ALGORITHM MD5, and the default when none is negotiated).
pub fn long_term_key_md5(username: &str, realm: &str, password: &str) -> [u8; 16] {
    let mut h = Md5::new();
    h.update(username.as_bytes());
    h.update(b":");
    h.update(realm.as_bytes());
    h.update(b":");
    h.update(password.as_bytes());
    h.finalize().into()
}

/// SHA-256(username ":" realm ":" password): the long-term key for
/// PASSWORD-ALGORITHM SHA-256 (RFC 8489 §18.5.1.2).
pub fn long_term_key_sha256(username: &str, realm: &str, password: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(username.as_bytes());
    h.update(b":");
    h.update(realm.as_bytes());
    h.update(b":");
    h.update(password.as_bytes());
    h.finalize().into()
}

/// A long-term key of either algorithm.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LongTermKey {
    /// 16-byte MD5 key.
    Md5([u8; 16]),
    /// 32-byte SHA-256 key.
    Sha256([u8; 32]),
}

impl LongTermKey {
    /// Derives the key for `algorithm`; `None` for algorithms other than
    /// MD5 (0x0001) and SHA-256 (0x0002).
    pub fn derive(
        algorithm: PasswordAlgorithm<'_>,
        username: &str,
        realm: &str,
        password: &str,
    ) -> Option<LongTermKey> {
        match algorithm.algorithm {
            0x0001 => Some(LongTermKey::Md5(long_term_key_md5(
                username, realm, password,
            ))),
            0x0002 => Some(LongTermKey::Sha256(long_term_key_sha256(
                username, realm, password,
            ))),
            _ => None,
        }
    }

    /// The key bytes, for the HMAC.
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            LongTermKey::Md5(k) => k,
            LongTermKey::Sha256(k) => k,
        }
    }
}

/// USERHASH value: SHA-256(username ":" realm) (RFC 8489 §14.4).
pub fn userhash(username: &str, realm: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(username.as_bytes());
    h.update(b":");
    h.update(realm.as_bytes());
    h.finalize().into()
}

/// The TURN REST password for `username`: `base64(HMAC-SHA1(secret,
/// username))`, standard alphabet with padding, as coturn computes it.
pub fn rest_password(secret: &[u8], username: &str) -> String {
    let mut out = String::with_capacity(28);
    rest_password_into(secret, username, &mut out);
    out
}

/// [`rest_password`] appending to `out` (no allocation when it has room
/// for the 28 characters).
pub fn rest_password_into(secret: &[u8], username: &str, out: &mut String) {
    // HMAC accepts keys of any length; the error arm is unreachable.
    let Ok(mut mac) = <Hmac<Sha1> as KeyInit>::new_from_slice(secret) else {
        return;
    };
    mac.update(username.as_bytes());
    STANDARD.encode_string(mac.finalize().into_bytes(), out);
}

/// A TURN REST username split into its parts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RestUsername<'a> {
    /// Expiry, Unix time in seconds.
    pub expiry: u64,
    /// The part after the first `:`, if any (coturn also accepts a bare
    /// timestamp as username).
    pub user: Option<&'a str>,
}

impl<'a> RestUsername<'a> {
    /// Splits `expiry[:user]`; `None` unless the expiry is 1 to 20 ASCII
    /// digits that fit in a `u64` (no sign, no spaces).
    pub fn parse(username: &'a str) -> Option<RestUsername<'a>> {
        let (expiry, user) = match username.split_once(':') {
            Some((e, u)) => (e, Some(u)),
            None => (username, None),
        };
        if expiry.is_empty() || !expiry.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        Some(RestUsername {
            expiry: expiry.parse().ok()?,
            user,
        })
    }

    /// True when the credential has expired at Unix time `now`.
    pub fn is_expired(&self, now: u64) -> bool {
        self.expiry <= now
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn md5_key_known_answer() {
        // MD5("user:realm:pass"), computed independently (e.g. with
        // `printf 'user:realm:pass' | md5sum`).
        assert_eq!(
            hex(&long_term_key_md5("user", "realm", "pass")),
            "8493fbc53ba582fb4c044c456bdc40eb"
        );
    }

    #[test]
    fn sha256_key_known_answer() {
        // `printf 'user:realm:pass' | sha256sum`.
        assert_eq!(
            hex(&long_term_key_sha256("user", "realm", "pass")),
            "07e934117abd40836e7c6329b54731b2b2d2a5f9a71f544922d75e0730d8251b"
        );
    }

    #[test]
    fn derive_by_algorithm() {
        assert_eq!(
            LongTermKey::derive(PasswordAlgorithm::MD5, "u", "r", "p").map(|k| k.as_bytes().len()),
            Some(16)
        );
        assert_eq!(
            LongTermKey::derive(PasswordAlgorithm::SHA256, "u", "r", "p")
                .map(|k| k.as_bytes().len()),
            Some(32)
        );
        let other = PasswordAlgorithm {
            algorithm: 3,
            params: &[],
        };
        assert_eq!(LongTermKey::derive(other, "u", "r", "p"), None);
    }

    #[test]
    fn rest_password_known_answer() {
        // `printf '1700000000:alice' | openssl dgst -sha1 -hmac s3cret -binary | base64`
        assert_eq!(
            rest_password(b"s3cret", "1700000000:alice"),
            "TtElzSjT0GdnTQ9xdcRNxx96yQs="
        );
    }

    #[test]
    fn rest_username() {
        assert_eq!(
            RestUsername::parse("1700000000:alice"),
            Some(RestUsername {
                expiry: 1_700_000_000,
                user: Some("alice")
            })
        );
        assert_eq!(
            RestUsername::parse("1700000000:a:b"),
            Some(RestUsername {
                expiry: 1_700_000_000,
                user: Some("a:b")
            })
        );
        assert_eq!(
            RestUsername::parse("42"),
            Some(RestUsername {
                expiry: 42,
                user: None
            })
        );
        for bad in [
            "",
            ":alice",
            "alice",
            "+5:x",
            " 5:x",
            "5 :x",
            "99999999999999999999999:x",
        ] {
            assert_eq!(RestUsername::parse(bad), None, "{bad:?}");
        }
        let u = RestUsername::parse("100:x").expect("valid");
        assert!(!u.is_expired(99));
        assert!(u.is_expired(100));
    }
}
