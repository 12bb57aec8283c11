//! Which peer addresses the relay may send to.
//!
//! A TURN server is an open UDP proxy for anyone holding credentials, so the
//! peer address in CreatePermission, ChannelBind and Send is the main SSRF
//! vector: loopback services, cloud metadata (169.254.169.254), private
//! networks behind the server. The policy therefore
//!
//! 1. **normalises** the address first, so that the same IPv4 host cannot be
//!    smuggled in through an IPv6 spelling: IPv4-mapped `::ffff:a.b.c.d`,
//!    IPv4-translated `::ffff:0:a.b.c.d`, IPv4-compatible `::a.b.c.d`, NAT64
//!    `64:ff9b::a.b.c.d` and 6to4 `2002:AABB:CCDD::/48` all become the
//!    embedded IPv4 address;
//! 2. lets the configured **allow list** win (tests relay to loopback, the
//!    SFU embedding allows exactly its own media address);
//! 3. **denies by default** every special-purpose range (see
//!    [`DenyReason`]), the whole Teredo prefix `2001::/32` (its client IPv4 is
//!    obfuscated and its server IPv4 is chosen by the sender, so no useful
//!    check is possible), the server's own addresses and an extra configured
//!    deny list.
//!
//! The result is typed ([`PolicyDecision`]) so metrics can count denials by
//! reason.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

/// An IP network in CIDR notation (`10.0.0.0/8`, `2001:db8::/32`).
///
/// Host bits are cleared on construction (`10.1.2.3/8` is `10.0.0.0/8`),
/// which is what operators mean when they write an address of the network.
/// A bare address parses as a host route (`/32` or `/128`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

/// A CIDR string that could not be parsed; the message names the input.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("bad CIDR {input:?}: {problem}")]
pub struct CidrError {
    /// The text as given.
    pub input: String,
    /// What is wrong with it.
    pub problem: String,
}

impl Cidr {
    /// A network of `prefix` bits around `addr` (host bits cleared).
    pub fn new(addr: IpAddr, prefix: u8) -> Result<Self, CidrError> {
        let max = max_prefix(addr);
        if prefix > max {
            return Err(CidrError {
                input: format!("{addr}/{prefix}"),
                problem: format!("prefix length {prefix} is longer than {max}"),
            });
        }
        Ok(Self {
            network: mask(addr, prefix),
            prefix,
        })
    }

    /// The network holding exactly `addr`.
    pub fn host(addr: IpAddr) -> Self {
        Self {
            network: addr,
            prefix: max_prefix(addr),
        }
    }

    /// The network address (host bits zero).
    pub fn network(&self) -> IpAddr {
        self.network
    }

    /// The prefix length in bits.
    pub fn prefix_len(&self) -> u8 {
        self.prefix
    }

    /// Whether `ip` lies in this network. Families never match each other:
    /// normalise first (see [`normalize`]).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, ip) {
            (IpAddr::V4(_), IpAddr::V4(_)) | (IpAddr::V6(_), IpAddr::V6(_)) => {
                mask(ip, self.prefix) == self.network
            }
            _ => false,
        }
    }
}

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |problem: String| CidrError {
            input: s.to_owned(),
            problem,
        };
        let text = s.trim();
        let (addr_text, prefix_text) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        // Accept the bracketed IPv6 form people copy from URLs.
        let addr_text = addr_text
            .strip_prefix('[')
            .and_then(|a| a.strip_suffix(']'))
            .unwrap_or(addr_text);
        let addr: IpAddr = addr_text
            .parse()
            .map_err(|_| bad(format!("{addr_text:?} is not an IPv4 or IPv6 address")))?;
        let Some(prefix_text) = prefix_text else {
            return Ok(Self::host(addr));
        };
        if prefix_text.is_empty() || !prefix_text.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad(format!(
                "prefix length {prefix_text:?} is not a number"
            )));
        }
        let max = max_prefix(addr);
        let prefix = prefix_text
            .parse::<u8>()
            .ok()
            .filter(|p| *p <= max)
            .ok_or_else(|| {
                bad(format!(
                    "prefix length {prefix_text} is longer than {max} for {}",
                    if addr.is_ipv4() { "IPv4" } else { "IPv6" }
                ))
            })?;
        Ok(Self {
            network: mask(addr, prefix),
            prefix,
        })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

fn max_prefix(addr: IpAddr) -> u8 {
    if addr.is_ipv4() {
        32
    } else {
        128
    }
}

fn mask(addr: IpAddr, prefix: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask32(prefix))),
        IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask128(prefix))),
    }
}

fn mask32(prefix: u8) -> u32 {
    // Shifting by the full width is an overflow, hence checked_shl for /0.
    u32::MAX
        .checked_shl(32u32.saturating_sub(u32::from(prefix)))
        .unwrap_or(0)
}

fn mask128(prefix: u8) -> u128 {
    u128::MAX
        .checked_shl(128u32.saturating_sub(u32::from(prefix)))
        .unwrap_or(0)
}

/// Why a peer address is refused. [`DenyReason::as_str`] is a stable
/// metric label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DenyReason {
    /// `0.0.0.0` or `::`: means "this host" to most stacks.
    Unspecified,
    /// `0.0.0.0/8` (RFC 791 "this network").
    ThisNetwork,
    /// `127.0.0.0/8`, `::1`.
    Loopback,
    /// RFC 1918: `10/8`, `172.16/12`, `192.168/16`.
    Private,
    /// RFC 6598 carrier-grade NAT space `100.64/10`.
    SharedAddressSpace,
    /// `169.254/16` (incl. cloud metadata 169.254.169.254), `fe80::/10`.
    LinkLocal,
    /// Deprecated IPv6 site-local `fec0::/10`, still routed inside some sites.
    SiteLocal,
    /// `192.0.0.0/24` IETF protocol assignments.
    IetfProtocol,
    /// `198.18/15` benchmarking networks.
    Benchmarking,
    /// `224/4`, `ff00::/8`.
    Multicast,
    /// `255.255.255.255`.
    Broadcast,
    /// `240/4` and the unassigned rest of `::/8`.
    Reserved,
    /// `fc00::/7` unique local addresses.
    UniqueLocal,
    /// RFC 8215 local-use NAT64 prefix `64:ff9b:1::/48` (embedding position
    /// varies with the prefix length, so it cannot be decoded reliably).
    Nat64LocalUse,
    /// Teredo `2001::/32`, denied whole (see the module docs).
    Teredo,
    /// One of the server's own addresses.
    ServerAddress,
    /// An allowed address, but only on another port (see
    /// [`AddressPolicy::allow_transport`]).
    PortNotAllowed,
    /// In the configured extra deny list.
    Configured,
}

impl DenyReason {
    /// A short snake_case label for metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unspecified => "unspecified",
            Self::ThisNetwork => "this_network",
            Self::Loopback => "loopback",
            Self::Private => "private",
            Self::SharedAddressSpace => "shared_address_space",
            Self::LinkLocal => "link_local",
            Self::SiteLocal => "site_local",
            Self::IetfProtocol => "ietf_protocol",
            Self::Benchmarking => "benchmarking",
            Self::Multicast => "multicast",
            Self::Broadcast => "broadcast",
            Self::Reserved => "reserved",
            Self::UniqueLocal => "unique_local",
            Self::Nat64LocalUse => "nat64_local_use",
            Self::Teredo => "teredo",
            Self::ServerAddress => "server_address",
            Self::PortNotAllowed => "port_not_allowed",
            Self::Configured => "configured",
        }
    }
}

impl fmt::Display for DenyReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The outcome of a policy check.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PolicyDecision {
    /// The relay may send to this peer.
    Allowed,
    /// Refused (answer 403 Forbidden / drop), with the reason for metrics.
    Denied(DenyReason),
}

impl PolicyDecision {
    /// `true` for [`PolicyDecision::Allowed`].
    pub fn is_allowed(self) -> bool {
        matches!(self, Self::Allowed)
    }
}

/// Built-in IPv4 deny list, most specific first so the reason is precise.
const DENY_V4: &[(u32, u8, DenyReason)] = &[
    (0x0000_0000, 32, DenyReason::Unspecified),
    (0xffff_ffff, 32, DenyReason::Broadcast),
    (0x0000_0000, 8, DenyReason::ThisNetwork),
    (0x0a00_0000, 8, DenyReason::Private),
    (0x6440_0000, 10, DenyReason::SharedAddressSpace),
    (0x7f00_0000, 8, DenyReason::Loopback),
    (0xa9fe_0000, 16, DenyReason::LinkLocal),
    (0xac10_0000, 12, DenyReason::Private),
    (0xc000_0000, 24, DenyReason::IetfProtocol),
    (0xc0a8_0000, 16, DenyReason::Private),
    (0xc612_0000, 15, DenyReason::Benchmarking),
    (0xe000_0000, 4, DenyReason::Multicast),
    (0xf000_0000, 4, DenyReason::Reserved),
];

/// Built-in IPv6 deny list, applied after normalisation (so embedded IPv4
/// forms have already become IPv4 and are judged by [`DENY_V4`]).
const DENY_V6: &[(u128, u8, DenyReason)] = &[
    (0, 128, DenyReason::Unspecified),
    (1, 128, DenyReason::Loopback),
    (0x0064_ff9b_0001 << 80, 48, DenyReason::Nat64LocalUse),
    // What is left of ::/8 after normalisation is unassigned.
    (0, 8, DenyReason::Reserved),
    (0x2001_0000 << 96, 32, DenyReason::Teredo),
    (0xfc00 << 112, 7, DenyReason::UniqueLocal),
    (0xfe80 << 112, 10, DenyReason::LinkLocal),
    (0xfec0 << 112, 10, DenyReason::SiteLocal),
    (0xff00 << 112, 8, DenyReason::Multicast),
];

/// The IPv4 address an IPv6 address stands for, if it embeds one in a form
/// that stacks or translators route to that IPv4 host.
///
/// `::` and `::1` are left alone: they have their own IPv6 meaning and are
/// denied as such.
pub fn embedded_ipv4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let bits = u128::from(ip);
    // The low 32 bits hold the IPv4 address in the first four forms; the
    // cast truncates on purpose.
    let low = Ipv4Addr::from(bits as u32);
    match bits >> 32 {
        // IPv4-mapped ::ffff:a.b.c.d
        0xffff => return Some(low),
        // IPv4-translated ::ffff:0:a.b.c.d (RFC 2765 SIIT)
        0xffff_0000 => return Some(low),
        // IPv4-compatible ::a.b.c.d (deprecated, still accepted by stacks)
        0 if bits > 1 => return Some(low),
        // NAT64 well-known prefix 64:ff9b::/96 (RFC 6052)
        0x0064_ff9b_0000_0000_0000_0000 => return Some(low),
        _ => {}
    }
    // 6to4 2002:AABB:CCDD::/48 (RFC 3056): IPv4 in bits 16..48.
    if bits >> 112 == 0x2002 {
        return Some(Ipv4Addr::from((bits >> 80) as u32));
    }
    None
}

/// Rewrites an address to the form the network will actually deliver to:
/// IPv6 spellings of an IPv4 host become that IPv4 address.
pub fn normalize(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => embedded_ipv4(v6).map_or(ip, IpAddr::V4),
    }
}

fn builtin_deny(ip: IpAddr) -> Option<DenyReason> {
    match ip {
        IpAddr::V4(a) => {
            let a = u32::from(a);
            DENY_V4
                .iter()
                .find(|(net, prefix, _)| a & mask32(*prefix) == *net)
                .map(|(_, _, reason)| *reason)
        }
        IpAddr::V6(a) => {
            let a = u128::from(a);
            DENY_V6
                .iter()
                .find(|(net, prefix, _)| a & mask128(*prefix) == *net)
                .map(|(_, _, reason)| *reason)
        }
    }
}

/// Deny-by-default peer address policy.
///
/// ```
/// use turn_server::address_policy::{AddressPolicy, DenyReason, PolicyDecision};
/// let policy = AddressPolicy::new();
/// assert_eq!(
///     policy.check("::ffff:127.0.0.1".parse().unwrap()),
///     PolicyDecision::Denied(DenyReason::Loopback)
/// );
/// assert!(policy.check("8.8.8.8".parse().unwrap()).is_allowed());
/// ```
#[derive(Clone, Debug, Default)]
pub struct AddressPolicy {
    allow: Vec<Cidr>,
    allow_transports: Vec<SocketAddr>,
    deny: Vec<Cidr>,
    server_addresses: Vec<IpAddr>,
}

impl AddressPolicy {
    /// The built-in deny list only: no allow list, no server addresses.
    pub fn new() -> Self {
        Self::default()
    }

    /// Builds a policy from configuration strings; the first bad entry is
    /// reported with its text.
    pub fn from_config<A: AsRef<str>, D: AsRef<str>>(
        allow: &[A],
        deny: &[D],
        server_addresses: &[IpAddr],
    ) -> Result<Self, CidrError> {
        let mut policy = Self::new();
        for a in allow {
            policy = policy.allow(a.as_ref().parse()?);
        }
        for d in deny {
            policy = policy.deny(d.as_ref().parse()?);
        }
        for ip in server_addresses {
            policy = policy.server_address(*ip);
        }
        Ok(policy)
    }

    /// Allows a network, overriding every deny rule (checked against the
    /// normalised and the literal address).
    #[must_use]
    pub fn allow(mut self, cidr: Cidr) -> Self {
        self.allow.push(cidr);
        self
    }

    /// Allows exactly one transport address (IP and port), overriding every
    /// deny rule for it: the embedded server relays to its own SFU media
    /// address this way without opening the rest of its host. Permissions
    /// (IP only) for that IP are allowed; Send and ChannelBind to another
    /// port of it are denied with [`DenyReason::PortNotAllowed`].
    #[must_use]
    pub fn allow_transport(mut self, addr: SocketAddr) -> Self {
        self.allow_transports
            .push(SocketAddr::new(normalize(addr.ip()), addr.port()));
        self
    }

    /// Adds a network to deny on top of the built-in list.
    #[must_use]
    pub fn deny(mut self, cidr: Cidr) -> Self {
        self.deny.push(cidr);
        self
    }

    /// Denies one of the server's own addresses (listening or relay IPs),
    /// so clients cannot loop the relay back into the server.
    #[must_use]
    pub fn server_address(mut self, ip: IpAddr) -> Self {
        self.server_addresses.push(normalize(ip));
        self
    }

    fn allow_listed(&self, literal: IpAddr, normalized: IpAddr) -> bool {
        self.allow
            .iter()
            .any(|c| c.contains(normalized) || c.contains(literal))
    }

    fn deny_listed(&self, literal: IpAddr, normalized: IpAddr) -> Option<DenyReason> {
        // Teredo is never normalised, so the built-in list sees it whole.
        if let Some(reason) = builtin_deny(normalized) {
            return Some(reason);
        }
        if self.server_addresses.contains(&normalized) {
            return Some(DenyReason::ServerAddress);
        }
        if self
            .deny
            .iter()
            .any(|c| c.contains(normalized) || c.contains(literal))
        {
            return Some(DenyReason::Configured);
        }
        None
    }

    /// May the relay install a permission for `ip` (CreatePermission: the
    /// port is irrelevant there)?
    pub fn check(&self, ip: IpAddr) -> PolicyDecision {
        let normalized = normalize(ip);
        if self.allow_listed(ip, normalized)
            || self.allow_transports.iter().any(|t| t.ip() == normalized)
        {
            return PolicyDecision::Allowed;
        }
        match self.deny_listed(ip, normalized) {
            Some(reason) => PolicyDecision::Denied(reason),
            None => PolicyDecision::Allowed,
        }
    }

    /// May the relay send to `peer` (ChannelBind, Send)? Like
    /// [`check`](Self::check), but an IP allowed only through
    /// [`allow_transport`](Self::allow_transport) is allowed on that port
    /// only.
    pub fn check_transport(&self, peer: SocketAddr) -> PolicyDecision {
        let literal = peer.ip();
        let normalized = normalize(literal);
        if self.allow_listed(literal, normalized) {
            return PolicyDecision::Allowed;
        }
        let mut same_ip = false;
        for t in &self.allow_transports {
            if t.ip() == normalized {
                if t.port() == peer.port() {
                    return PolicyDecision::Allowed;
                }
                same_ip = true;
            }
        }
        match self.deny_listed(literal, normalized) {
            Some(reason) => PolicyDecision::Denied(reason),
            None if same_ip => PolicyDecision::Denied(DenyReason::PortNotAllowed),
            None => PolicyDecision::Allowed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test address")
    }

    fn denied(policy: &AddressPolicy, s: &str) -> DenyReason {
        match policy.check(ip(s)) {
            PolicyDecision::Denied(r) => r,
            PolicyDecision::Allowed => panic!("{s} should be denied"),
        }
    }

    #[test]
    fn checklist_forms_are_denied() {
        let p = AddressPolicy::new();
        let cases = [
            ("0.0.0.0", DenyReason::Unspecified),
            ("0.1.2.3", DenyReason::ThisNetwork),
            ("::", DenyReason::Unspecified),
            ("::1", DenyReason::Loopback),
            ("127.0.0.1", DenyReason::Loopback),
            ("127.255.255.254", DenyReason::Loopback),
            ("::ffff:127.0.0.1", DenyReason::Loopback),
            ("::ffff:0:127.0.0.1", DenyReason::Loopback),
            ("::127.0.0.1", DenyReason::Loopback),
            ("::ffff:0.0.0.0", DenyReason::Unspecified),
            ("10.0.0.1", DenyReason::Private),
            ("10.255.255.255", DenyReason::Private),
            ("172.16.0.1", DenyReason::Private),
            ("172.31.255.255", DenyReason::Private),
            ("192.168.1.1", DenyReason::Private),
            ("::ffff:192.168.1.1", DenyReason::Private),
            ("100.64.0.1", DenyReason::SharedAddressSpace),
            ("100.127.255.255", DenyReason::SharedAddressSpace),
            ("169.254.169.254", DenyReason::LinkLocal),
            ("::ffff:169.254.169.254", DenyReason::LinkLocal),
            ("192.0.0.8", DenyReason::IetfProtocol),
            ("198.18.0.1", DenyReason::Benchmarking),
            ("198.19.255.255", DenyReason::Benchmarking),
            ("224.0.0.1", DenyReason::Multicast),
            ("239.255.255.250", DenyReason::Multicast),
            ("240.0.0.1", DenyReason::Reserved),
            ("255.255.255.255", DenyReason::Broadcast),
            ("fe80::1", DenyReason::LinkLocal),
            ("febf::1", DenyReason::LinkLocal),
            ("fec0::1", DenyReason::SiteLocal),
            ("fc00::1", DenyReason::UniqueLocal),
            ("fd12:3456::1", DenyReason::UniqueLocal),
            ("ff02::1", DenyReason::Multicast),
            ("ff05::1:3", DenyReason::Multicast),
            // NAT64 of 127.0.0.1 and of 10.1.2.3
            ("64:ff9b::7f00:1", DenyReason::Loopback),
            ("64:ff9b::10.1.2.3", DenyReason::Private),
            ("64:ff9b:1::1", DenyReason::Nat64LocalUse),
            // 6to4 of 127.0.0.1, 169.254.169.254, 0.0.0.0
            ("2002:7f00:0001::1", DenyReason::Loopback),
            ("2002:a9fe:a9fe::", DenyReason::LinkLocal),
            ("2002::1", DenyReason::Unspecified),
            // Teredo, whatever it embeds
            ("2001:0:4136:e378:8000:63bf:3fff:fdd2", DenyReason::Teredo),
            ("2001::1", DenyReason::Teredo),
            // unassigned remainder of ::/8
            ("0:0:0:1::1", DenyReason::Reserved),
        ];
        for (addr, reason) in cases {
            assert_eq!(denied(&p, addr), reason, "{addr}");
        }
    }

    #[test]
    fn public_addresses_are_allowed() {
        let p = AddressPolicy::new();
        for addr in [
            "8.8.8.8",
            "1.1.1.1",
            "172.32.0.1",
            "172.15.255.255",
            "100.128.0.1",
            "198.20.0.1",
            "192.0.1.1",
            "2001:4860::8888",
            "2a00:1450:4001::1",
            "::ffff:8.8.8.8",
            "64:ff9b::8.8.8.8",
            "2002:0808:0808::1",
        ] {
            assert_eq!(p.check(ip(addr)), PolicyDecision::Allowed, "{addr}");
        }
    }

    #[test]
    fn normalisation_forms() {
        let v4 = |s: &str| IpAddr::V4(s.parse().expect("v4"));
        assert_eq!(normalize(ip("::ffff:1.2.3.4")), v4("1.2.3.4"));
        assert_eq!(normalize(ip("::ffff:0:1.2.3.4")), v4("1.2.3.4"));
        assert_eq!(normalize(ip("::1.2.3.4")), v4("1.2.3.4"));
        assert_eq!(normalize(ip("64:ff9b::1.2.3.4")), v4("1.2.3.4"));
        assert_eq!(normalize(ip("2002:0102:0304:5::6")), v4("1.2.3.4"));
        assert_eq!(normalize(ip("::")), ip("::"));
        assert_eq!(normalize(ip("::1")), ip("::1"));
        assert_eq!(normalize(ip("2001:db8::1")), ip("2001:db8::1"));
        assert_eq!(normalize(ip("9.9.9.9")), v4("9.9.9.9"));
    }

    #[test]
    fn allow_list_wins_after_normalisation() {
        let p = AddressPolicy::new().allow("127.0.0.1/32".parse().expect("cidr"));
        assert!(p.check(ip("127.0.0.1")).is_allowed());
        assert!(p.check(ip("::ffff:127.0.0.1")).is_allowed());
        assert!(p.check(ip("2002:7f00:1::1")).is_allowed());
        assert!(p.check(ip("64:ff9b::7f00:1")).is_allowed());
        // The rest of loopback stays denied.
        assert_eq!(denied(&p, "127.0.0.2"), DenyReason::Loopback);
        assert_eq!(denied(&p, "::1"), DenyReason::Loopback);
        let p6 = AddressPolicy::new().allow("::1/128".parse().expect("cidr"));
        assert!(p6.check(ip("::1")).is_allowed());
    }

    #[test]
    fn server_addresses_and_extra_denies() {
        let p = AddressPolicy::from_config(
            &["10.9.0.0/16"],
            &["8.8.4.0/24", "2001:4860::/32"],
            &[ip("203.0.113.7"), ip("2001:db8::7")],
        )
        .expect("config");
        assert_eq!(denied(&p, "203.0.113.7"), DenyReason::ServerAddress);
        assert_eq!(denied(&p, "::ffff:203.0.113.7"), DenyReason::ServerAddress);
        assert_eq!(denied(&p, "2001:db8::7"), DenyReason::ServerAddress);
        assert_eq!(denied(&p, "8.8.4.4"), DenyReason::Configured);
        assert_eq!(denied(&p, "2001:4860::8888"), DenyReason::Configured);
        assert!(p.check(ip("8.8.8.8")).is_allowed());
        assert!(p.check(ip("10.9.1.1")).is_allowed());
        assert_eq!(denied(&p, "10.8.1.1"), DenyReason::Private);
    }

    #[test]
    fn transport_allow_is_port_exact() {
        let media: SocketAddr = "203.0.113.7:7882".parse().expect("addr");
        let p = AddressPolicy::new()
            .server_address(media.ip())
            .allow_transport(media);
        assert!(p.check(media.ip()).is_allowed());
        assert!(p.check_transport(media).is_allowed());
        assert!(p
            .check_transport("[::ffff:203.0.113.7]:7882".parse().expect("addr"))
            .is_allowed());
        assert_eq!(
            p.check_transport("203.0.113.7:22".parse().expect("addr")),
            PolicyDecision::Denied(DenyReason::ServerAddress)
        );
        // Loopback SFU: the transport is allowed, other loopback ports not.
        let lo: SocketAddr = "127.0.0.1:7882".parse().expect("addr");
        let p = AddressPolicy::new().allow_transport(lo);
        assert!(p.check_transport(lo).is_allowed());
        assert_eq!(
            p.check_transport("127.0.0.1:3478".parse().expect("addr")),
            PolicyDecision::Denied(DenyReason::Loopback)
        );
        // A public IP allowed on one port only.
        let p = AddressPolicy::new().allow_transport("8.8.8.8:53".parse().expect("addr"));
        assert_eq!(
            p.check_transport("8.8.8.8:54".parse().expect("addr")),
            PolicyDecision::Denied(DenyReason::PortNotAllowed)
        );
    }

    #[test]
    fn cidr_parsing() {
        let c: Cidr = "10.1.2.3/8".parse().expect("cidr");
        assert_eq!(c.to_string(), "10.0.0.0/8");
        assert!(c.contains(ip("10.200.0.1")));
        assert!(!c.contains(ip("11.0.0.1")));
        assert!(!c.contains(ip("::ffff:10.0.0.1")), "families never match");
        let c: Cidr = "0.0.0.0/0".parse().expect("cidr");
        assert!(c.contains(ip("1.2.3.4")));
        let c: Cidr = "::/0".parse().expect("cidr");
        assert!(c.contains(ip("2001:db8::1")));
        let c: Cidr = "[2001:db8::1]".parse().expect("cidr");
        assert_eq!(c.prefix_len(), 128);
        let c: Cidr = " 192.168.0.0/16 ".parse().expect("cidr");
        assert_eq!(c.prefix_len(), 16);
        for bad in [
            "",
            "10.0.0.0/",
            "10.0.0.0/33",
            "::/129",
            "10.0.0/8",
            "10.0.0.0/x",
            "10.0.0.0/-1",
            "10.0.0.0/+8",
            "fe80::1%eth0",
            "10.0.0.0/8/8",
            "10.0.0.0/999999999999",
        ] {
            let err = bad.parse::<Cidr>().expect_err(bad);
            assert!(err.to_string().starts_with("bad CIDR"), "{err}");
        }
        assert!(Cidr::new(ip("10.0.0.0"), 40).is_err());
        assert_eq!(
            Cidr::new(ip("10.1.1.1"), 16).expect("cidr").network(),
            ip("10.1.0.0")
        );
        let err = AddressPolicy::from_config(&["nonsense"], &[] as &[&str], &[]).expect_err("bad");
        assert_eq!(
            err.to_string(),
            "bad CIDR \"nonsense\": \"nonsense\" is not an IPv4 or IPv6 address"
        );
    }
}
