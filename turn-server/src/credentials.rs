//! Long-term credentials: which password a USERNAME has.
//!
//! Two sources, tried in this order:
//!
//! * **static users** from the configuration (`user -> password`);
//! * the **TURN REST scheme**, compatible with coturn's `use-auth-secret`:
//!   the username is `expiry:user` (or just `expiry`, or coturn's
//!   `user:expiry`), with `expiry` in Unix seconds, and the password is
//!   `base64(HMAC-SHA1(secret, username))`. Several secrets may be active at
//!   once so they can be rotated without cutting anyone off; each yields one
//!   candidate password.
//!
//! The module returns *plaintext candidate passwords*; the wire layer
//! derives the long-term key (MD5 or SHA-256 of `user:realm:password`) with
//! the codec's helpers, checks MESSAGE-INTEGRITY with each candidate, and
//! stores the key that verified in the allocation
//! ([`crate::allocation::SessionKey`]), so refreshes, permissions and
//! channel binds never come back here.
//!
//! SASLprep / OpaqueString (RFC 8489 §9.2.2) is not applied: it is the
//! identity on printable ASCII, which is all REST passwords (base64) and,
//! in practice, configured passwords contain. A configured password outside
//! ASCII is used byte for byte, as coturn does.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha1::Sha1;

type HmacSha1 = Hmac<Sha1>;

/// Why a username has no password. [`CredentialError::as_str`] is a metric
/// label; every case is answered 401 on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum CredentialError {
    /// No static user of that name, and it is not a REST username (or REST
    /// is not configured).
    #[error("unknown user")]
    UnknownUser,
    /// A REST username whose expiry time has passed.
    #[error("credentials expired")]
    Expired,
    /// REST is configured but the username carries no readable expiry.
    #[error("malformed REST username")]
    BadUsername,
}

impl CredentialError {
    /// A short label for metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::UnknownUser => "unknown_user",
            Self::Expired => "expired",
            Self::BadUsername => "bad_username",
        }
    }
}

/// A username resolved to candidate passwords.
#[derive(Debug)]
pub struct Resolved<'a> {
    /// Passwords to try, in order (one for a static user, one per REST
    /// secret).
    pub candidates: Candidates<'a>,
    /// The identity quotas count against: the username itself for a static
    /// user, the `user` part of a REST username (every minted credential of
    /// one user shares one quota), or the whole username if it has no user
    /// part.
    pub quota_user: &'a str,
    /// For REST usernames, when they expire (Unix seconds). A cached session
    /// key should stop being accepted after this time: see
    /// [`Credentials::rest_expiry`].
    pub expires_at: Option<u64>,
}

/// Iterator over candidate passwords, without allocating for static users.
pub struct Candidates<'a> {
    inner: CandidatesInner<'a>,
}

enum CandidatesInner<'a> {
    Static(Option<&'a str>),
    Rest {
        username: &'a str,
        secrets: std::slice::Iter<'a, Vec<u8>>,
    },
}

impl fmt::Debug for Candidates<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Candidates(<redacted>)")
    }
}

impl<'a> Iterator for Candidates<'a> {
    type Item = Cow<'a, str>;

    fn next(&mut self) -> Option<Self::Item> {
        match &mut self.inner {
            CandidatesInner::Static(p) => p.take().map(Cow::Borrowed),
            CandidatesInner::Rest { username, secrets } => secrets
                .next()
                .map(|secret| Cow::Owned(rest_password(secret, username))),
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = match &self.inner {
            CandidatesInner::Static(p) => usize::from(p.is_some()),
            CandidatesInner::Rest { secrets, .. } => secrets.len(),
        };
        (n, Some(n))
    }
}

impl ExactSizeIterator for Candidates<'_> {}

/// The credential store: static users and REST secrets.
#[derive(Clone, Default)]
pub struct Credentials {
    users: HashMap<String, String>,
    rest_secrets: Vec<Vec<u8>>,
    /// Which load of the configuration this store came from: a key
    /// verified under an older one is checked again (see
    /// [`Credentials::with_generation`]).
    generation: u64,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("users", &self.users.len())
            .field("rest_secrets", &self.rest_secrets.len())
            .finish()
    }
}

/// The REST username's expiry and user part, if it has the shape.
///
/// Accepts `expiry:user`, `expiry` and (coturn) `user:expiry`; the expiry is
/// decimal digits only (no sign, no spaces) and must fit in a `u64`.
pub fn parse_rest_username(username: &str) -> Option<(u64, Option<&str>)> {
    fn number(s: &str) -> Option<u64> {
        if s.is_empty() || s.len() > 20 || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        s.parse().ok()
    }
    match username.split_once(':') {
        None => number(username).map(|e| (e, None)),
        Some((first, rest)) => {
            if let Some(e) = number(first) {
                return Some((e, Some(rest).filter(|r| !r.is_empty())));
            }
            let (user, last) = username.rsplit_once(':')?;
            number(last).map(|e| (e, Some(user).filter(|u| !u.is_empty())))
        }
    }
}

/// `base64(HMAC-SHA1(secret, username))`, the TURN REST password.
pub fn rest_password(secret: &[u8], username: &str) -> String {
    let mut mac = HmacSha1::new_from_slice(secret).expect("HMAC accepts keys of any length");
    mac.update(username.as_bytes());
    STANDARD.encode(mac.finalize().into_bytes())
}

/// Mints ephemeral REST credentials for `user`, valid for `ttl` from
/// `now_unix`: `(username, password)` with `username = "expiry:user"` (just
/// `"expiry"` when `user` is empty). The SFU hands these to clients as ICE
/// servers.
pub fn mint_rest_credentials(
    secret: &[u8],
    user: &str,
    ttl: Duration,
    now_unix: u64,
) -> (String, String) {
    let expiry = now_unix.saturating_add(ttl.as_secs());
    let username = if user.is_empty() {
        expiry.to_string()
    } else {
        format!("{expiry}:{user}")
    };
    let password = rest_password(secret, &username);
    (username, password)
}

impl Credentials {
    /// An empty store: every username is unknown.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) a static user.
    #[must_use]
    pub fn with_user(mut self, username: impl Into<String>, password: impl Into<String>) -> Self {
        self.add_user(username, password);
        self
    }

    /// Adds (or replaces) a static user.
    pub fn add_user(&mut self, username: impl Into<String>, password: impl Into<String>) {
        self.users.insert(username.into(), password.into());
    }

    /// Adds a REST shared secret. Order matters only for speed: put the
    /// current secret first, the retiring ones after.
    #[must_use]
    pub fn with_rest_secret(mut self, secret: impl Into<Vec<u8>>) -> Self {
        self.rest_secrets.push(secret.into());
        self
    }

    /// Marks the store as the `generation`th load of the configuration.
    /// Allocations remember the generation their key was verified under and
    /// skip re-deriving it only while it is current, so a reload that
    /// removes a user or changes a password or secret takes effect on the
    /// next request of existing allocations too.
    #[must_use]
    pub fn with_generation(mut self, generation: u64) -> Self {
        self.generation = generation;
        self
    }

    /// See [`Credentials::with_generation`].
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Whether any REST secret is configured.
    pub fn rest_enabled(&self) -> bool {
        !self.rest_secrets.is_empty()
    }

    /// Resolves `username` at `now_unix` to the passwords to try.
    pub fn lookup<'a>(
        &'a self,
        username: &'a str,
        now_unix: u64,
    ) -> Result<Resolved<'a>, CredentialError> {
        if let Some(password) = self.users.get(username) {
            return Ok(Resolved {
                candidates: Candidates {
                    inner: CandidatesInner::Static(Some(password)),
                },
                quota_user: username,
                expires_at: None,
            });
        }
        if self.rest_secrets.is_empty() {
            return Err(CredentialError::UnknownUser);
        }
        let (expiry, user) = parse_rest_username(username).ok_or(CredentialError::BadUsername)?;
        if expiry < now_unix {
            return Err(CredentialError::Expired);
        }
        Ok(Resolved {
            candidates: Candidates {
                inner: CandidatesInner::Rest {
                    username,
                    secrets: self.rest_secrets.iter(),
                },
            },
            quota_user: user.unwrap_or(username),
            expires_at: Some(expiry),
        })
    }

    /// The expiry of a REST username, for sessions that verify with a cached
    /// key: `Some(t)` means refuse the cached key after `t`. `None` for
    /// static users (and non-REST names).
    pub fn rest_expiry(&self, username: &str) -> Option<u64> {
        if self.users.contains_key(username) || self.rest_secrets.is_empty() {
            return None;
        }
        parse_rest_username(username).map(|(e, _)| e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000;

    #[test]
    fn static_users() {
        let c = Credentials::new().with_user("alice", "s3cret");
        let r = c.lookup("alice", NOW).expect("known");
        assert_eq!(r.quota_user, "alice");
        assert_eq!(r.expires_at, None);
        assert_eq!(r.candidates.collect::<Vec<_>>(), vec!["s3cret"]);
        assert_eq!(
            c.lookup("bob", NOW).map(|_| ()),
            Err(CredentialError::UnknownUser)
        );
        // Without REST, a REST-looking name is just unknown.
        assert_eq!(
            c.lookup("1900000000:bob", NOW).map(|_| ()),
            Err(CredentialError::UnknownUser)
        );
    }

    #[test]
    fn rest_password_matches_coturn_formula() {
        // base64(HMAC-SHA1("north", "1800003600:alice")), computed
        // independently with `openssl dgst -sha1 -hmac north -binary | base64`.
        let p = rest_password(b"north", "1800003600:alice");
        assert_eq!(p, "qe6uQh2FdtYywRuncfIrYF8O4Rk=");
        let (u, pw) = mint_rest_credentials(b"north", "alice", Duration::from_secs(3600), NOW);
        assert_eq!(u, "1800003600:alice");
        assert_eq!(pw, p);
    }

    #[test]
    fn rest_lookup_with_rotation() {
        let c = Credentials::new()
            .with_rest_secret(b"new".to_vec())
            .with_rest_secret(b"old".to_vec());
        let (u, p_old) = mint_rest_credentials(b"old", "bob", Duration::from_secs(60), NOW);
        let r = c.lookup(&u, NOW).expect("valid");
        assert_eq!(r.quota_user, "bob");
        assert_eq!(r.expires_at, Some(NOW + 60));
        let cands: Vec<_> = r.candidates.collect();
        assert_eq!(cands.len(), 2);
        assert_eq!(cands[1], p_old);
        assert_ne!(cands[0], p_old);
        // Valid through the expiry second, refused after.
        assert!(c.lookup(&u, NOW + 60).is_ok());
        assert_eq!(
            c.lookup(&u, NOW + 61).map(|_| ()),
            Err(CredentialError::Expired)
        );
        assert_eq!(c.rest_expiry(&u), Some(NOW + 60));
    }

    #[test]
    fn rest_username_forms() {
        assert_eq!(parse_rest_username("123:bob"), Some((123, Some("bob"))));
        assert_eq!(parse_rest_username("123"), Some((123, None)));
        assert_eq!(parse_rest_username("bob:123"), Some((123, Some("bob"))));
        assert_eq!(parse_rest_username("123:a:b"), Some((123, Some("a:b"))));
        assert_eq!(parse_rest_username("123:"), Some((123, None)));
        for bad in [
            "",
            "bob",
            ":",
            "+123:bob",
            "-1",
            "12a:bob",
            "bob:12a",
            " 123",
            "99999999999999999999999",
        ] {
            assert_eq!(parse_rest_username(bad), None, "{bad:?}");
        }
        let c = Credentials::new().with_rest_secret(b"k".to_vec());
        assert_eq!(
            c.lookup("bob", NOW).map(|_| ()),
            Err(CredentialError::BadUsername)
        );
        let r = c.lookup("1900000000", NOW).expect("bare expiry");
        assert_eq!(r.quota_user, "1900000000");
        let r = c.lookup("carol:1900000000", NOW).expect("coturn order");
        assert_eq!(r.quota_user, "carol");
    }

    #[test]
    fn static_user_wins_over_rest() {
        let c = Credentials::new()
            .with_user("1900000000:x", "static")
            .with_rest_secret(b"k".to_vec());
        let r = c.lookup("1900000000:x", NOW).expect("static");
        assert_eq!(r.expires_at, None);
        assert_eq!(r.candidates.collect::<Vec<_>>(), vec!["static"]);
        assert_eq!(c.rest_expiry("1900000000:x"), None);
        assert!(!format!("{c:?}").contains("static"));
    }
}
