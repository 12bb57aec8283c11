//! Room tokens: HS256 JWTs carrying the grants of one participant in one room.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// The key used when no key is configured. Public on purpose: development
/// mode is for a laptop, never for a deployment.
pub const DEVELOPMENT_KEY: &str = "sfu-development-key-not-secret";

/// What a token allows its holder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grants {
    /// The only room the token admits to.
    pub room: String,
    /// Who the holder is within the room; a second join with the same
    /// identity replaces the first session.
    #[serde(rename = "sub")]
    pub identity: String,
    /// Display name, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// May publish tracks.
    #[serde(default = "yes")]
    pub can_publish: bool,
    /// May receive tracks.
    #[serde(default = "yes")]
    pub can_subscribe: bool,
    /// The room's operator: may delete any of the room's shared files.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub room_admin: bool,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
}

fn yes() -> bool {
    true
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Past its `exp`.
    #[error("token expired")]
    Expired,
    /// Bad signature, bad encoding, wrong algorithm or missing claims.
    #[error("invalid token: {0}")]
    Invalid(String),
    /// Valid, but for another room.
    #[error("token is for room {0:?}")]
    WrongRoom(String),
}

/// Mints and verifies tokens with one HS256 key.
#[derive(Clone)]
pub struct TokenAuthority {
    encoding: EncodingKey,
    decoding: DecodingKey,
    development: bool,
}

impl std::fmt::Debug for TokenAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenAuthority")
            .field("development", &self.development)
            .finish_non_exhaustive()
    }
}

impl TokenAuthority {
    /// An authority for `key`; an empty key means development mode.
    pub fn new(key: &str) -> Self {
        let development = key.is_empty();
        let key = if development { DEVELOPMENT_KEY } else { key };
        Self {
            encoding: EncodingKey::from_secret(key.as_bytes()),
            decoding: DecodingKey::from_secret(key.as_bytes()),
            development,
        }
    }

    /// True when running on the public development key.
    pub fn is_development(&self) -> bool {
        self.development
    }

    /// Signs a token for `grants`.
    pub fn mint(&self, grants: &Grants) -> Result<String, TokenError> {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), grants, &self.encoding)
            .map_err(|e| TokenError::Invalid(e.to_string()))
    }

    /// Grants for `identity` in `room`, valid for `ttl` from now, all permissions.
    pub fn grants(room: &str, identity: &str, ttl: Duration) -> Grants {
        Grants {
            room: room.to_string(),
            identity: identity.to_string(),
            name: None,
            can_publish: true,
            can_subscribe: true,
            room_admin: false,
            exp: unix_now().saturating_add(ttl.as_secs()),
        }
    }

    /// Verifies signature and expiry (no leeway) and returns the grants.
    pub fn verify(&self, token: &str) -> Result<Grants, TokenError> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        validation.validate_nbf = true;
        // Apps may add an audience for their own use; rooms are the scope here.
        validation.validate_aud = false;
        validation.set_required_spec_claims(&["exp", "sub"]);
        jsonwebtoken::decode::<Grants>(token, &self.decoding, &validation)
            .map(|data| data.claims)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => TokenError::Expired,
                _ => TokenError::Invalid(e.to_string()),
            })
    }

    /// Verifies and checks that the token is for `room`.
    pub fn verify_for_room(&self, token: &str, room: &str) -> Result<Grants, TokenError> {
        let grants = self.verify(token)?;
        if grants.room != room {
            return Err(TokenError::WrongRoom(grants.room));
        }
        Ok(grants)
    }
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Parses a duration such as `90s`, `30m`, `1h`, `2d` or a bare number of seconds.
pub fn parse_ttl(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 90s, 30m, 1h or 2d"))?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => {
            return Err(format!(
                "unknown unit {unit:?} in {text:?}: use s, m, h or d"
            ))
        }
    };
    Ok(Duration::from_secs(secs))
}

/// The token of an `Authorization: Bearer <token>` header, if there is one.
pub fn bearer(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let auth = TokenAuthority::new("secret");
        let grants = TokenAuthority::grants("r", "alice", Duration::from_secs(60));
        let token = auth.mint(&grants).unwrap();
        assert_eq!(auth.verify_for_room(&token, "r").unwrap(), grants);
        assert_eq!(
            auth.verify_for_room(&token, "other"),
            Err(TokenError::WrongRoom("r".into()))
        );
    }

    #[test]
    fn refuses_expired_foreign_and_garbage() {
        let auth = TokenAuthority::new("secret");
        let mut grants = TokenAuthority::grants("r", "a", Duration::ZERO);
        grants.exp = unix_now() - 10;
        let expired = auth.mint(&grants).unwrap();
        assert_eq!(auth.verify(&expired), Err(TokenError::Expired));

        let foreign = TokenAuthority::new("other-key")
            .mint(&TokenAuthority::grants("r", "a", Duration::from_secs(60)))
            .unwrap();
        assert!(matches!(auth.verify(&foreign), Err(TokenError::Invalid(_))));
        assert!(matches!(
            auth.verify("garbage"),
            Err(TokenError::Invalid(_))
        ));
        // A development token is not valid against a configured key.
        let dev = TokenAuthority::new("")
            .mint(&TokenAuthority::grants("r", "a", Duration::from_secs(60)))
            .unwrap();
        assert!(matches!(auth.verify(&dev), Err(TokenError::Invalid(_))));
    }

    #[test]
    fn audience_is_ignored_and_not_before_is_checked() {
        #[derive(Serialize)]
        struct Extra<'a> {
            #[serde(flatten)]
            grants: &'a Grants,
            aud: &'a str,
            nbf: u64,
        }
        let auth = TokenAuthority::new("secret");
        let grants = TokenAuthority::grants("r", "a", Duration::from_secs(600));
        let key = EncodingKey::from_secret(b"secret");
        let mint = |nbf| {
            let claims = Extra {
                grants: &grants,
                aud: "my-app",
                nbf,
            };
            jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key).unwrap()
        };
        assert_eq!(auth.verify(&mint(unix_now() - 10)), Ok(grants.clone()));
        assert!(matches!(
            auth.verify(&mint(unix_now() + 300)),
            Err(TokenError::Invalid(_))
        ));
    }

    #[test]
    fn ttl_parsing() {
        assert_eq!(parse_ttl("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_ttl("90"), Ok(Duration::from_secs(90)));
        assert!(parse_ttl("1y").is_err());
        assert!(parse_ttl("h").is_err());
    }
}
