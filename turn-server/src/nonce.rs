//! Stateless nonces (RFC 8489 §9.2, long-term credentials).
//!
//! The server must hand every unauthenticated request a NONCE (401) and later
//! tell a fresh nonce from a stale one (438). Keeping a table of issued
//! nonces would let anyone fill memory with 401s, so a nonce here carries
//! its own proof instead:
//!
//! ```text
//! [obMatJos2 FFFF]  base64url( version(1) ‖ issued_at(8, BE unix s) ‖ tag(16) )
//!  optional cookie   34 characters
//! tag = HMAC-SHA256(key, "turn-nonce" ‖ version ‖ features(3) ‖ issued_at ‖
//!                        family(1) ‖ client ip(4|16) ‖ client port(2))[..16]
//! ```
//!
//! It is bound to the client's transport address, so a nonce captured from
//! one client is useless from another, and expires after a configurable
//! lifetime (default 600 s). The characters are `[A-Za-z0-9_-]`, all legal
//! in the NONCE's quoted-string, and the whole is far below the 128
//! characters the attribute allows. Nothing is stored per request.
//!
//! With several servers behind one address, give them the same secret
//! ([`NonceKey::from_secret`]) and their nonces are interchangeable.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

const VERSION: u8 = 1;
const TAG_LEN: usize = 16;
const RAW_LEN: usize = 1 + 8 + TAG_LEN;
/// RFC 8489 §9.2 "nonce cookie": announces the security feature set.
pub const NONCE_COOKIE: &str = "obMatJos2";
/// Clocks of servers sharing a key may differ this much.
const MAX_CLOCK_SKEW_SECS: u64 = 60;
/// RFC 8489 §14.10: a NONCE is fewer than 128 characters.
const MAX_NONCE_LEN: usize = 127;

/// The default nonce lifetime.
pub const DEFAULT_NONCE_LIFETIME: Duration = Duration::from_secs(600);

/// The outcome of [`NonceKey::check`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NonceCheck {
    /// Issued by this key to this client, within its lifetime.
    Valid,
    /// Issued by this key to this client, but too old: answer 438 Stale
    /// Nonce with a fresh one.
    Stale,
    /// Not ours, not for this client, or malformed (a restart with a random
    /// key also lands here). Answer 438 as well so the client retries with a
    /// fresh nonce; the distinction is for metrics.
    Invalid,
}

/// The secret that signs nonces, with the nonce lifetime and optional RFC
/// 8489 security feature bits.
#[derive(Clone)]
pub struct NonceKey {
    secret: [u8; 32],
    lifetime_secs: u64,
    /// 24-bit security feature set announced in the nonce cookie.
    features: Option<u32>,
    /// The cookie prefix for `features`, computed once.
    cookie: Option<String>,
}

impl fmt::Debug for NonceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NonceKey")
            .field("secret", &"<redacted>")
            .field("lifetime_secs", &self.lifetime_secs)
            .field("features", &self.features)
            .finish()
    }
}

impl NonceKey {
    /// A fresh random 32-byte key from the OS-seeded CSPRNG: nonces die with
    /// the process, which only costs clients one 438 round-trip.
    pub fn random() -> Self {
        let mut secret = [0u8; 32];
        rand::rng().fill_bytes(&mut secret);
        Self::from_bytes(secret)
    }

    /// A key of exactly 32 bytes.
    pub fn from_bytes(secret: [u8; 32]) -> Self {
        Self {
            secret,
            lifetime_secs: DEFAULT_NONCE_LIFETIME.as_secs(),
            features: None,
            cookie: None,
        }
    }

    /// A key derived (SHA-256) from a configured secret of any length, for
    /// servers that must accept each other's nonces.
    pub fn from_secret(secret: &[u8]) -> Self {
        let mut h = Sha256::new();
        h.update(b"turn-server nonce key");
        h.update(secret);
        Self::from_bytes(h.finalize().into())
    }

    /// Sets the lifetime (whole seconds; at least one second).
    #[must_use]
    pub fn with_lifetime(mut self, lifetime: Duration) -> Self {
        self.lifetime_secs = lifetime.as_secs().max(1);
        self
    }

    /// Prefixes nonces with the RFC 8489 nonce cookie announcing this 24-bit
    /// security feature set (e.g. [`FEATURE_PASSWORD_ALGORITHMS`]), so
    /// RFC 8489 clients may use PASSWORD-ALGORITHM / USERHASH. The bits are
    /// covered by the tag, so a bid-down (stripped cookie) is detected.
    /// Bits above 24 are ignored.
    #[must_use]
    pub fn with_security_features(mut self, bits: u32) -> Self {
        let bits = bits & 0x00ff_ffff;
        self.features = Some(bits);
        let bytes = bits.to_be_bytes();
        self.cookie = Some(format!(
            "{NONCE_COOKIE}{}",
            URL_SAFE_NO_PAD.encode(&bytes[1..])
        ));
        self
    }

    /// The configured lifetime.
    pub fn lifetime(&self) -> Duration {
        Duration::from_secs(self.lifetime_secs)
    }

    /// The keyed MAC over everything the nonce vouches for, not finalised.
    fn mac(&self, issued_at: u64, client: SocketAddr) -> HmacSha256 {
        let mut mac =
            HmacSha256::new_from_slice(&self.secret).expect("HMAC accepts keys of any length");
        mac.update(b"turn-nonce");
        mac.update(&[VERSION]);
        let features = self.features.unwrap_or(0).to_be_bytes();
        mac.update(&features[1..]);
        mac.update(&issued_at.to_be_bytes());
        match client.ip() {
            IpAddr::V4(ip) => {
                mac.update(&[4]);
                mac.update(&ip.octets());
            }
            IpAddr::V6(ip) => {
                mac.update(&[6]);
                mac.update(&ip.octets());
            }
        }
        mac.update(&client.port().to_be_bytes());
        mac
    }

    /// Issues a nonce for `client` at `now_unix` (seconds since the epoch).
    pub fn issue(&self, client: SocketAddr, now_unix: u64) -> String {
        let mut raw = [0u8; RAW_LEN];
        raw[0] = VERSION;
        raw[1..9].copy_from_slice(&now_unix.to_be_bytes());
        let tag = self.mac(now_unix, client).finalize().into_bytes();
        raw[9..].copy_from_slice(&tag[..TAG_LEN]);
        let body = URL_SAFE_NO_PAD.encode(raw);
        match &self.cookie {
            Some(cookie) => format!("{cookie}{body}"),
            None => body,
        }
    }

    /// Checks a nonce echoed by `client` at `now_unix`.
    pub fn check(&self, nonce: &str, client: SocketAddr, now_unix: u64) -> NonceCheck {
        if nonce.len() > MAX_NONCE_LEN {
            return NonceCheck::Invalid;
        }
        let body = match &self.cookie {
            Some(cookie) => match nonce.strip_prefix(cookie.as_str()) {
                Some(body) => body,
                None => return NonceCheck::Invalid,
            },
            None => nonce,
        };
        // Room for base64's rounded-up estimate; the length is checked exactly.
        let mut buf = [0u8; RAW_LEN + 8];
        match URL_SAFE_NO_PAD.decode_slice(body, &mut buf) {
            Ok(RAW_LEN) => {}
            _ => return NonceCheck::Invalid,
        }
        let raw = &buf[..RAW_LEN];
        if raw[0] != VERSION {
            return NonceCheck::Invalid;
        }
        let mut ts = [0u8; 8];
        ts.copy_from_slice(&raw[1..9]);
        let issued_at = u64::from_be_bytes(ts);
        // verify_truncated_left compares in constant time.
        if self
            .mac(issued_at, client)
            .verify_truncated_left(&raw[9..])
            .is_err()
        {
            return NonceCheck::Invalid;
        }
        if issued_at > now_unix.saturating_add(MAX_CLOCK_SKEW_SECS) {
            // Signed by us but from the future: our clock went back (or a
            // peer server's is ahead). A fresh nonce fixes it.
            return NonceCheck::Stale;
        }
        if now_unix.saturating_sub(issued_at) >= self.lifetime_secs {
            return NonceCheck::Stale;
        }
        NonceCheck::Valid
    }
}

/// RFC 8489 §18.1 security feature "Password algorithms" (bit 0, counted
/// from the most significant bit of the 24-bit set).
pub const FEATURE_PASSWORD_ALGORITHMS: u32 = 1 << 23;
/// RFC 8489 §18.1 security feature "Username anonymity" (bit 1).
pub const FEATURE_USERNAME_ANONYMITY: u32 = 1 << 22;

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("test address")
    }

    const T0: u64 = 1_800_000_000;

    #[test]
    fn valid_then_stale() {
        let key = NonceKey::from_bytes([7; 32]);
        let c = addr("192.0.2.1:5000");
        let n = key.issue(c, T0);
        assert_eq!(key.check(&n, c, T0), NonceCheck::Valid);
        assert_eq!(key.check(&n, c, T0 + 599), NonceCheck::Valid);
        assert_eq!(key.check(&n, c, T0 + 600), NonceCheck::Stale);
        assert_eq!(key.check(&n, c, T0 + 100_000), NonceCheck::Stale);
        let short = NonceKey::from_bytes([7; 32]).with_lifetime(Duration::from_secs(30));
        assert_eq!(short.check(&n, c, T0 + 29), NonceCheck::Valid);
        assert_eq!(short.check(&n, c, T0 + 30), NonceCheck::Stale);
    }

    #[test]
    fn bound_to_client_and_key() {
        let key = NonceKey::from_bytes([7; 32]);
        let c = addr("192.0.2.1:5000");
        let n = key.issue(c, T0);
        assert_eq!(
            key.check(&n, addr("192.0.2.1:5001"), T0),
            NonceCheck::Invalid
        );
        assert_eq!(
            key.check(&n, addr("192.0.2.2:5000"), T0),
            NonceCheck::Invalid
        );
        assert_eq!(
            key.check(&n, addr("[::ffff:192.0.2.1]:5000"), T0),
            NonceCheck::Invalid
        );
        assert_eq!(
            NonceKey::from_bytes([8; 32]).check(&n, c, T0),
            NonceCheck::Invalid
        );
        let v6 = addr("[2001:db8::1]:5000");
        let n6 = key.issue(v6, T0);
        assert_eq!(key.check(&n6, v6, T0 + 1), NonceCheck::Valid);
    }

    #[test]
    fn tampering_is_detected() {
        let key = NonceKey::from_bytes([7; 32]);
        let c = addr("192.0.2.1:5000");
        let n = key.issue(c, T0);
        // Re-sign the timestamp to make it look fresh: tag breaks.
        let mut raw = URL_SAFE_NO_PAD.decode(&n).expect("base64");
        raw[8] ^= 1;
        let forged = URL_SAFE_NO_PAD.encode(&raw);
        assert_eq!(key.check(&forged, c, T0), NonceCheck::Invalid);
        // Every single-character change is rejected.
        for i in 0..n.len() {
            let mut bytes = n.clone().into_bytes();
            bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
            let s = String::from_utf8(bytes).expect("ascii");
            if s != n {
                assert_eq!(key.check(&s, c, T0), NonceCheck::Invalid, "position {i}");
            }
        }
        for junk in [
            "",
            "x",
            "obMatJos2",
            &"A".repeat(200),
            "é",
            &n[..n.len() - 1],
        ] {
            assert_eq!(key.check(junk, c, T0), NonceCheck::Invalid, "{junk:?}");
        }
    }

    #[test]
    fn future_timestamp_is_stale() {
        let key = NonceKey::from_bytes([7; 32]);
        let c = addr("192.0.2.1:5000");
        let n = key.issue(c, T0 + 3600);
        assert_eq!(key.check(&n, c, T0), NonceCheck::Stale);
        let n = key.issue(c, T0 + 30);
        assert_eq!(key.check(&n, c, T0), NonceCheck::Valid, "within skew");
    }

    #[test]
    fn format_is_short_and_printable() {
        let key = NonceKey::random();
        let c = addr("[2001:db8::1]:65535");
        let n = key.issue(c, u64::MAX);
        assert!(n.len() <= 127);
        assert!(n
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert_eq!(key.check(&n, c, u64::MAX), NonceCheck::Valid);
    }

    #[test]
    fn cookie_carries_features() {
        let key = NonceKey::from_bytes([7; 32]).with_security_features(FEATURE_PASSWORD_ALGORITHMS);
        let c = addr("192.0.2.1:5000");
        let n = key.issue(c, T0);
        assert!(n.starts_with("obMatJos2gAAA"), "{n}");
        assert_eq!(key.check(&n, c, T0), NonceCheck::Valid);
        // Stripping the cookie (bid-down) or presenting it to a key without
        // features fails.
        let stripped = &n[NONCE_COOKIE.len() + 4..];
        assert_eq!(key.check(stripped, c, T0), NonceCheck::Invalid);
        let plain = NonceKey::from_bytes([7; 32]);
        assert_eq!(plain.check(&n, c, T0), NonceCheck::Invalid);
        assert_eq!(plain.check(stripped, c, T0), NonceCheck::Invalid);
    }

    #[test]
    fn shared_secret_keys_agree() {
        let a = NonceKey::from_secret(b"cluster secret");
        let b = NonceKey::from_secret(b"cluster secret");
        let c = addr("192.0.2.1:5000");
        assert_eq!(b.check(&a.issue(c, T0), c, T0 + 1), NonceCheck::Valid);
        let d = NonceKey::from_secret(b"other");
        assert_eq!(d.check(&a.issue(c, T0), c, T0 + 1), NonceCheck::Invalid);
        assert!(!format!("{a:?}").contains("cluster"));
    }
}
