//! Media through a TURN relay (`--via-turn`): one allocation per peer
//! connection, whose relayed address is the connection's only ICE
//! candidate. str0m's datagrams from that candidate are wrapped in
//! ChannelData to the TURN server; ChannelData from the server is unwrapped
//! and fed to str0m as if it had arrived on the relayed address. Sans-IO.

use std::net::SocketAddr;
use std::time::Instant;

use serde_json::Value;
use str0m::Candidate;
use turn_server::stun::{channel_data, packet_kind, PacketKind};

use super::allocation::{Allocation, Phase};

/// Channel used for the SFU on every allocation.
const CHANNEL: u16 = 0x4000;

/// What a datagram from the TURN server was.
#[derive(Debug, PartialEq, Eq)]
pub enum FromServer<'a> {
    /// Relayed media from `from` (the SFU), delivered on the relayed address `to`.
    Media {
        /// The SFU's address.
        from: SocketAddr,
        /// Our relayed address.
        to: SocketAddr,
        /// The datagram.
        data: &'a [u8],
    },
    /// A TURN request to send to the server next.
    Request(Vec<u8>),
    /// Nothing to do.
    Nothing,
}

/// The TURN path of one peer connection.
#[derive(Debug)]
pub struct TurnPath {
    /// The TURN server.
    pub server: SocketAddr,
    username: String,
    password: String,
    alloc: Option<Allocation>,
    candidate_added: bool,
    /// The last wrapped datagram (reused: one per packet sent).
    wrapped: Vec<u8>,
}

impl TurnPath {
    /// A path through `server` with these credentials (nothing sent yet).
    pub fn new(server: SocketAddr, username: String, password: String) -> Self {
        TurnPath {
            server,
            username,
            password,
            alloc: None,
            candidate_added: false,
            wrapped: Vec::new(),
        }
    }

    /// Starts the allocation towards `sfu` (once); returns the first request.
    pub fn start(&mut self, sfu: SocketAddr, now: Instant) -> Option<Vec<u8>> {
        if self.alloc.is_some() {
            return None;
        }
        let mut a = Allocation::new(
            self.username.clone(),
            self.password.clone(),
            sfu,
            CHANNEL,
            now,
        );
        let req = a.start(now);
        self.alloc = Some(a);
        Some(req)
    }

    /// Why the path failed, if it did.
    pub fn failure(&self) -> Option<String> {
        match self.alloc.as_ref().map(|a| &a.phase) {
            Some(Phase::Failed(why)) => Some(format!("TURN: {why}")),
            _ => None,
        }
    }

    /// Handles a datagram that came from the TURN server.
    pub fn on_datagram<'a>(&mut self, data: &'a [u8], now: Instant) -> FromServer<'a> {
        let Some(a) = self.alloc.as_mut() else {
            return FromServer::Nothing;
        };
        if packet_kind(data) == PacketKind::ChannelData {
            return match (channel_data::parse(data), a.relayed) {
                (Ok((ch, payload)), Some(to)) if ch == a.channel => FromServer::Media {
                    from: a.peer(),
                    to,
                    data: payload,
                },
                _ => FromServer::Nothing,
            };
        }
        match a.on_message(data, now) {
            Some(req) => FromServer::Request(req),
            None => FromServer::Nothing,
        }
    }

    /// The relayed candidate, once allocated (returned once).
    pub fn new_candidate(&mut self, local: SocketAddr) -> Option<Candidate> {
        let relayed = self.alloc.as_ref()?.relayed?;
        if self.candidate_added {
            return None;
        }
        self.candidate_added = true;
        Candidate::relayed(relayed, local, "udp").ok()
    }

    /// Wraps a datagram str0m sends from `source`, if that is the relayed
    /// address and the channel is bound (earlier ones are dropped; ICE
    /// retransmits its checks).
    pub fn wrap(&mut self, source: SocketAddr, contents: &[u8]) -> Option<&[u8]> {
        let a = self.alloc.as_ref()?;
        if a.relayed != Some(source) || a.phase != Phase::Ready {
            return None;
        }
        self.wrapped.clear();
        channel_data::encode(&mut self.wrapped, a.channel, contents, false).ok()?;
        Some(&self.wrapped)
    }

    /// A request retransmission due at `now`.
    pub fn poll_retransmit(&mut self, now: Instant) -> Option<Vec<u8>> {
        self.alloc.as_mut()?.poll_retransmit(now)
    }

    /// When a retransmission is next due.
    pub fn retransmit_at(&self) -> Option<Instant> {
        self.alloc.as_ref()?.retransmit_at()
    }
}

/// The SFU's UDP host candidate in an SDP (its media address).
pub fn sfu_candidate(sdp: &str) -> Option<SocketAddr> {
    sdp.lines()
        .filter_map(|l| l.trim().strip_prefix("a=candidate:"))
        .filter_map(|c| {
            let f: Vec<&str> = c.split_whitespace().collect();
            let udp = f.get(2)?.eq_ignore_ascii_case("udp");
            let ip = f.get(4)?.parse().ok()?;
            let port = f.get(5)?.parse().ok()?;
            udp.then_some(SocketAddr::new(ip, port))
        })
        .next()
}

/// The first UDP `turn:` server of `joined.ice_servers` with its credentials.
pub fn from_ice_servers(servers: &Value) -> Option<(SocketAddr, String, String)> {
    servers.as_array()?.iter().find_map(|s| {
        let user = s["username"].as_str()?.to_string();
        let pass = s["credential"].as_str()?.to_string();
        let addr = s["urls"]
            .as_array()?
            .iter()
            .filter_map(Value::as_str)
            .find_map(parse_turn_url)?;
        Some((addr, user, pass))
    })
}

/// `turn:HOST:PORT[?transport=udp]` → address (UDP only; numeric or resolvable host).
pub fn parse_turn_url(url: &str) -> Option<SocketAddr> {
    let rest = url.strip_prefix("turn:")?;
    let (hostport, query) = rest.split_once('?').unwrap_or((rest, ""));
    if !query.is_empty() && !query.contains("transport=udp") {
        return None;
    }
    let hostport = if hostport
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        hostport.to_string()
    } else {
        format!("{hostport}:3478")
    };
    std::net::ToSocketAddrs::to_socket_addrs(&hostport)
        .ok()?
        .next()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn finds_the_sfu_and_the_turn_server() {
        let sdp = "v=0\r\na=candidate:1 1 tcp 1 127.0.0.1 7881 typ host tcptype passive\r\na=candidate:2 1 udp 2130706175 127.0.0.1 7882 typ host\r\n";
        assert_eq!(sfu_candidate(sdp), Some("127.0.0.1:7882".parse().unwrap()));
        assert_eq!(sfu_candidate("v=0\r\n"), None);
        let servers = json!([{"urls": ["turn:127.0.0.1:3478?transport=tcp", "turn:127.0.0.1:3479?transport=udp"], "username": "u", "credential": "p"}]);
        assert_eq!(
            from_ice_servers(&servers),
            Some(("127.0.0.1:3479".parse().unwrap(), "u".into(), "p".into()))
        );
        assert_eq!(
            parse_turn_url("turn:127.0.0.1"),
            Some("127.0.0.1:3478".parse().unwrap())
        );
        assert_eq!(parse_turn_url("stun:127.0.0.1"), None);
        assert!(from_ice_servers(&json!([{"urls": ["turn:127.0.0.1"]}])).is_none());
    }

    #[test]
    fn wraps_only_from_the_relayed_address_once_bound() {
        let t = Instant::now();
        let mut p = TurnPath::new("127.0.0.1:3478".parse().unwrap(), "u".into(), "p".into());
        assert!(p.wrap("127.0.0.1:1".parse().unwrap(), b"x").is_none());
        assert!(p.start("127.0.0.1:7882".parse().unwrap(), t).is_some());
        assert!(p.start("127.0.0.1:7882".parse().unwrap(), t).is_none());
        assert!(p.new_candidate("127.0.0.1:5000".parse().unwrap()).is_none());
        assert_eq!(p.on_datagram(&[0x40, 0, 0, 1, 9], t), FromServer::Nothing);
        assert!(p.retransmit_at().is_some());
    }
}
