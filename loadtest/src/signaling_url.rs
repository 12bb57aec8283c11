//! The signaling WebSocket URL from what a user writes for `--url`: the
//! server's base URL as a browser opens it (`http://HOST:7880`,
//! `https://sfu.example.org/`) or the WebSocket itself (`ws://HOST:7880/ws`).
//! The SFU serves its call page at `/` and signaling at `/ws` (the web client
//! derives the same URL from `location`), so the rest is a mistake worth
//! naming rather than a WebSocket handshake that fails with "200 OK".

use thiserror::Error;
use tokio_tungstenite::tungstenite::http::Uri;

/// Where the SFU accepts signaling WebSockets.
const SIGNALING_PATH: &str = "/ws";

/// Why `--url` is not a URL of an SFU.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum UrlError {
    /// Nothing given.
    #[error("the SFU's URL is empty: give its base URL, e.g. ws://127.0.0.1:7880")]
    Empty,
    /// `127.0.0.1:7880` and the like.
    #[error("`{0}` has no scheme: write ws://{0} (or http://, https://, wss://)")]
    NoScheme(String),
    /// Not something the SFU speaks.
    #[error("`{url}`: scheme `{scheme}` is not the SFU's: use http://, https://, ws:// or wss://")]
    Scheme {
        /// The URL given.
        url: String,
        /// Its scheme.
        scheme: String,
    },
    /// Does not parse.
    #[error("`{url}` is not a URL: {why}")]
    Invalid {
        /// The URL given.
        url: String,
        /// The parser's reason.
        why: String,
    },
    /// A path other than `/` or `/ws`.
    #[error(
        "`{url}`: the SFU serves signaling at /ws, not at {path}: give its base URL (e.g. ws://HOST:7880) or the /ws URL"
    )]
    Path {
        /// The URL given.
        url: String,
        /// Its path.
        path: String,
    },
    /// A query or fragment, which the SFU's signaling does not take.
    #[error("`{0}`: no query or fragment, please: give the SFU's base URL, e.g. ws://HOST:7880")]
    Query(String),
    /// `user:password@` in the URL (tokens are the SFU's credentials).
    #[error(
        "`{0}`: no user or password in the URL: the room token is the credential (--token-secret)"
    )]
    UserInfo(String),
}

/// The signaling URL and the address it connects to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignalingUrl {
    /// `ws://` or `wss://` URL ending in `/ws`.
    pub url: String,
    /// Host as written (an IPv6 address without brackets).
    pub host: String,
    /// Port (the scheme's default when not written).
    pub port: u16,
}

impl SignalingUrl {
    /// Derives the signaling URL from `--url`: http:// and ws:// become
    /// ws://, https:// and wss:// become wss://; no path, `/`, `/ws` and
    /// `/ws/` all mean `/ws`.
    pub fn parse(input: &str) -> Result<SignalingUrl, UrlError> {
        let text = input.trim();
        if text.is_empty() {
            return Err(UrlError::Empty);
        }
        let Some((scheme, rest)) = text.split_once("://") else {
            return Err(UrlError::NoScheme(text.to_string()));
        };
        let (ws_scheme, default_port) = match scheme.to_ascii_lowercase().as_str() {
            "http" | "ws" => ("ws", 80),
            "https" | "wss" => ("wss", 443),
            _ => {
                return Err(UrlError::Scheme {
                    url: text.to_string(),
                    scheme: scheme.to_string(),
                })
            }
        };
        if rest.contains('#') || rest.contains('?') {
            return Err(UrlError::Query(text.to_string()));
        }
        let authority_end = rest.find('/').unwrap_or(rest.len());
        if rest[..authority_end].contains('@') {
            return Err(UrlError::UserInfo(text.to_string()));
        }
        let uri: Uri = text.parse().map_err(|e| UrlError::Invalid {
            url: text.to_string(),
            why: format!("{e}"),
        })?;
        let Some(authority) = uri.authority() else {
            return Err(UrlError::Invalid {
                url: text.to_string(),
                why: "no host".into(),
            });
        };
        let host = authority.host();
        if host.is_empty() {
            return Err(UrlError::Invalid {
                url: text.to_string(),
                why: "no host".into(),
            });
        }
        let path = uri.path();
        if !matches!(path, "" | "/" | "/ws" | "/ws/") {
            return Err(UrlError::Path {
                url: text.to_string(),
                path: path.to_string(),
            });
        }
        // The text after the host: `authority.port()` is None for a port
        // that does not fit in 16 bits, which must not mean "the default".
        let port_text = authority.as_str()[authority.as_str().rfind(']').unwrap_or(0)..]
            .rsplit_once(':')
            .map(|(_, p)| p);
        let port = match port_text {
            None => None,
            Some(p) => match p.parse::<u16>() {
                Ok(n) if n > 0 => Some(n),
                _ => {
                    return Err(UrlError::Invalid {
                        url: text.to_string(),
                        why: format!("port `{p}` is not 1 to 65535"),
                    })
                }
            },
        };
        let port_part = port.map(|p| format!(":{p}")).unwrap_or_default();
        let port = port.unwrap_or(default_port);
        Ok(SignalingUrl {
            url: format!("{ws_scheme}://{host}{port_part}{SIGNALING_PATH}"),
            host: host.trim_start_matches('[').trim_end_matches(']').into(),
            port,
        })
    }

    /// `host:port` for address resolution (IPv6 in brackets).
    pub fn host_port(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> String {
        SignalingUrl::parse(s)
            .map(|u| u.url)
            .unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn base_urls_and_websocket_urls_give_the_signaling_url() {
        for given in [
            "ws://127.0.0.1:7880",
            "ws://127.0.0.1:7880/",
            "ws://127.0.0.1:7880/ws",
            "ws://127.0.0.1:7880/ws/",
            "http://127.0.0.1:7880",
            "http://127.0.0.1:7880/",
            "HTTP://127.0.0.1:7880/ws",
            " ws://127.0.0.1:7880 ",
        ] {
            assert_eq!(url(given), "ws://127.0.0.1:7880/ws", "{given}");
        }
        for given in [
            "https://sfu.example.org",
            "https://sfu.example.org/",
            "wss://sfu.example.org/ws",
            "wss://sfu.example.org/ws/",
        ] {
            assert_eq!(url(given), "wss://sfu.example.org/ws", "{given}");
        }
        assert_eq!(url("http://[::1]:7880"), "ws://[::1]:7880/ws");
        let u = SignalingUrl::parse("https://localhost").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("localhost", 443));
        assert_eq!(u.host_port(), "localhost:443");
        let u = SignalingUrl::parse("ws://[::1]:7880/").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 7880));
        assert_eq!(u.host_port(), "[::1]:7880");
        assert_eq!(SignalingUrl::parse("http://h").unwrap().port, 80);
    }

    #[test]
    fn what_is_not_an_sfu_url_gets_a_reason() {
        let err = |s: &str| SignalingUrl::parse(s).unwrap_err();
        assert_eq!(err(""), UrlError::Empty);
        assert_eq!(
            err("127.0.0.1:7880"),
            UrlError::NoScheme("127.0.0.1:7880".into())
        );
        assert!(err("127.0.0.1:7880")
            .to_string()
            .contains("write ws://127.0.0.1:7880"));
        assert!(matches!(err("ftp://h:7880"), UrlError::Scheme { scheme, .. } if scheme == "ftp"));
        assert!(matches!(err("turn:127.0.0.1:3478"), UrlError::NoScheme(_)));
        assert!(
            matches!(err("http://h:7880/metrics"), UrlError::Path { path, .. } if path == "/metrics")
        );
        assert!(matches!(err("http://h:7880/ws/x"), UrlError::Path { .. }));
        assert!(matches!(err("http://h:7880/?room=a"), UrlError::Query(_)));
        assert!(matches!(err("http://h:7880/#x"), UrlError::Query(_)));
        assert!(matches!(err("http://u:p@h:7880"), UrlError::UserInfo(_)));
        assert!(matches!(err("ws://"), UrlError::Invalid { .. }));
        assert!(matches!(err("ws://h:99999"), UrlError::Invalid { .. }));
        assert!(matches!(err("ws://h:0"), UrlError::Invalid { .. }));
        assert!(matches!(err("ws://h :80"), UrlError::Invalid { .. }));
    }
}
