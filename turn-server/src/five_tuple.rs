//! The 5-tuple that names an allocation (RFC 8656 §2).

use std::fmt;
use std::net::SocketAddr;

/// The transport between client and server. The relay side is always UDP.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ClientTransport {
    /// Plain UDP.
    Udp,
    /// TCP (RFC 8656 §3.1), messages framed by their own length.
    Tcp,
    /// TLS over TCP.
    Tls,
}

impl ClientTransport {
    /// Lower-case name for logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Udp => "udp",
            Self::Tcp => "tcp",
            Self::Tls => "tls",
        }
    }
}

/// Client address, server address and transport: the key of an allocation.
///
/// Use [`FiveTuple::new`], which canonicalises IPv6 addresses (flow label
/// and scope id cleared) so the same client always hashes the same.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FiveTuple {
    /// The client's (server-reflexive) transport address.
    pub client: SocketAddr,
    /// The server's address the client talks to.
    pub server: SocketAddr,
    /// UDP, TCP or TLS.
    pub transport: ClientTransport,
}

impl FiveTuple {
    /// A canonical 5-tuple.
    pub fn new(client: SocketAddr, server: SocketAddr, transport: ClientTransport) -> Self {
        Self {
            client: canonical(client),
            server: canonical(server),
            transport,
        }
    }
}

impl fmt::Display for FiveTuple {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}://{}->{}",
            self.transport.as_str(),
            self.client,
            self.server
        )
    }
}

/// A socket address with the IPv6 flow label and scope id cleared: neither
/// identifies a different peer, but both take part in `Hash`/`Eq`, and
/// `recvfrom` may fill them in while wire attributes never do.
pub fn canonical(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V4(_) => addr,
        SocketAddr::V6(a) => SocketAddr::new(std::net::IpAddr::V6(*a.ip()), a.port()),
    }
}
