//! The relay's configuration: defaults, a TOML file, `TURN_<SECTION>_<KEY>`
//! environment overrides. Every key is documented in `configs/turn-server.toml`.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use platform::layered::layered;
use serde::{Deserialize, Deserializer, Serialize};

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The TOML (file plus overrides) is not a valid config.
    #[error("invalid config: {0}")]
    Invalid(String),
}

/// The whole relay configuration.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TurnConfig {
    /// Protocol identity.
    pub server: ServerSection,
    /// Client-facing listeners.
    pub listen: ListenSection,
    /// Certificate of the TLS listeners.
    pub tls: TlsSection,
    /// Relayed transport addresses.
    pub relay: RelaySection,
    /// Credentials.
    pub auth: AuthSection,
    /// Which peers may be relayed to.
    pub policy: PolicySection,
    /// Quotas and limits.
    pub limits: LimitsSection,
    /// Prometheus endpoint of the standalone server.
    pub metrics: MetricsSection,
}

/// `[server]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSection {
    /// REALM for long-term credentials.
    pub realm: String,
    /// SOFTWARE attribute; empty (the default) sends none.
    pub software: String,
    /// Worker threads; 0 = one per core.
    pub workers: usize,
}

impl Default for ServerSection {
    fn default() -> Self {
        Self {
            realm: "turn.local".into(),
            software: String::new(),
            workers: 0,
        }
    }
}

/// `[listen]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ListenSection {
    /// UDP listeners.
    #[serde(deserialize_with = "socket_addrs")]
    pub udp: Vec<SocketAddr>,
    /// TCP listeners (RFC 8656 §3.1: STUN and ChannelData framed on a stream).
    #[serde(deserialize_with = "socket_addrs")]
    pub tcp: Vec<SocketAddr>,
    /// TLS-over-TCP listeners (any port, 443 included); need `[tls]`.
    #[serde(deserialize_with = "socket_addrs")]
    pub tls: Vec<SocketAddr>,
}

/// Listener addresses, with an error that names the bad one.
fn socket_addrs<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<SocketAddr>, D::Error> {
    Vec::<String>::deserialize(d)?
        .iter()
        .map(|a| {
            a.parse().map_err(|_| {
                serde::de::Error::custom(format!(
                    "`{a}` is not an IP:port address (like \"0.0.0.0:3478\" or \"[::]:443\"; \
                     host names are not resolved)"
                ))
            })
        })
        .collect()
}

impl Default for ListenSection {
    fn default() -> Self {
        Self {
            udp: vec![([127, 0, 0, 1], 3478).into()],
            tcp: vec![([127, 0, 0, 1], 3478).into()],
            tls: Vec::new(),
        }
    }
}

/// `[tls]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TlsSection {
    /// PEM file with the certificate chain, leaf first.
    pub cert: Option<PathBuf>,
    /// PEM file with the private key (PKCS#8, PKCS#1 or SEC1).
    pub key: Option<PathBuf>,
    /// Without `cert`/`key`: serve a self-signed development certificate
    /// generated at start for the TLS listeners' addresses and `localhost`.
    pub dev_cert: bool,
    /// Seconds a client has to complete the TLS handshake.
    pub handshake_timeout_s: u64,
}

impl Default for TlsSection {
    fn default() -> Self {
        Self {
            cert: None,
            key: None,
            dev_cert: false,
            handshake_timeout_s: 10,
        }
    }
}

/// `[relay]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RelaySection {
    /// Addresses relay sockets bind to and announce (several of one family
    /// multiply the port space).
    pub ips: Vec<IpAddr>,
    /// Lowest relay port.
    pub port_min: u16,
    /// Highest relay port.
    pub port_max: u16,
}

impl Default for RelaySection {
    fn default() -> Self {
        Self {
            ips: vec![[127, 0, 0, 1].into()],
            port_min: 49152,
            port_max: 65535,
        }
    }
}

/// `[auth]`
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSection {
    /// Static long-term users: name = password.
    pub users: BTreeMap<String, String>,
    /// TURN REST secrets (coturn `use-auth-secret`); several for rotation.
    pub secrets: Vec<String>,
}

/// `[policy]`
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PolicySection {
    /// CIDRs allowed even though denied by default (e.g. 127.0.0.1/32 for tests).
    pub allow: Vec<String>,
    /// Extra CIDRs to deny.
    pub deny: Vec<String>,
}

/// `[limits]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsSection {
    /// Lifetime granted when a client asks for less or none (s).
    pub default_lifetime_s: u64,
    /// Cap on requested lifetimes (s).
    pub max_lifetime_s: u64,
    /// Allocations in total.
    pub max_allocations: usize,
    /// Allocations per user.
    pub max_allocations_per_user: usize,
    /// Permissions per allocation.
    pub max_permissions_per_allocation: usize,
    /// Channels per allocation.
    pub max_channels_per_allocation: usize,
    /// Bytes per second per allocation, both directions; 0 = unlimited.
    pub bandwidth_bytes_per_s: u32,
    /// Unauthenticated requests per second per source.
    pub unauthenticated_per_s: f64,
    /// Burst of unauthenticated requests per source.
    pub unauthenticated_burst: f64,
    /// TCP and TLS client connections open at once, all listeners together.
    pub max_connections: usize,
    /// New TCP/TLS connections per second per source (each worker counts
    /// its own share); past it they are closed at once.
    pub connections_per_s: f64,
    /// Burst of new TCP/TLS connections per source.
    pub connections_burst: f64,
    /// Seconds a TCP/TLS connection without an allocation may stay silent.
    pub connection_idle_timeout_s: u64,
}

impl Default for LimitsSection {
    fn default() -> Self {
        Self {
            default_lifetime_s: 600,
            max_lifetime_s: 3600,
            max_allocations: 100_000,
            max_allocations_per_user: 100,
            max_permissions_per_allocation: 32,
            max_channels_per_allocation: 32,
            bandwidth_bytes_per_s: 4_000_000,
            unauthenticated_per_s: 50.0,
            unauthenticated_burst: 200.0,
            max_connections: 100_000,
            connections_per_s: 20.0,
            connections_burst: 100.0,
            connection_idle_timeout_s: 60,
        }
    }
}

/// `[metrics]`
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsSection {
    /// `host:port` serving `/metrics`; empty = off.
    pub listen: Option<SocketAddr>,
}

const SECTIONS: &[&str] = &[
    "server", "listen", "tls", "relay", "auth", "policy", "limits", "metrics",
];

impl TurnConfig {
    /// Defaults, then `file`, then `TURN_<SECTION>_<KEY>` variables of `env`.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let text = match file {
            Some(path) => std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.display().to_string(),
                source,
            })?,
            None => String::new(),
        };
        let config: TurnConfig = layered(&text, "TURN_", SECTIONS, env)
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what serde cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        let listen = &self.listen;
        if listen.udp.is_empty() && listen.tcp.is_empty() && listen.tls.is_empty() {
            return invalid("listen: configure at least one udp, tcp or tls address".into());
        }
        // SO_REUSEPORT would let a second listener on the same port share
        // (and silently split) its connections: refuse duplicates, and a
        // port serving both plain TCP and TLS.
        let streams = listen.tcp.iter().map(|a| ("tcp", a));
        let streams: Vec<_> = streams
            .chain(listen.tls.iter().map(|a| ("tls", a)))
            .collect();
        for (i, (kind_a, a)) in streams.iter().enumerate() {
            for (kind_b, b) in &streams[i + 1..] {
                if a.port() != 0 && a.port() == b.port() && overlapping_ips(a.ip(), b.ip()) {
                    return invalid(format!(
                        "listen: {a} ({kind_a}) and {b} ({kind_b}) would share one TCP port"
                    ));
                }
            }
        }
        for (i, a) in listen.udp.iter().enumerate() {
            if listen.udp[i + 1..]
                .iter()
                .any(|b| a.port() != 0 && a.port() == b.port() && overlapping_ips(a.ip(), b.ip()))
            {
                return invalid(format!("listen.udp: {a} is listed twice"));
            }
        }
        let tls = &self.tls;
        if tls.cert.is_some() != tls.key.is_some() {
            return invalid("tls: cert and key go together (set both or neither)".into());
        }
        if !listen.tls.is_empty() && tls.cert.is_none() && !tls.dev_cert {
            return invalid(
                "listen.tls needs tls.cert and tls.key (or tls.dev_cert = true for a \
                 self-signed development certificate)"
                    .into(),
            );
        }
        if tls.handshake_timeout_s == 0 {
            return invalid("tls.handshake_timeout_s must be above 0".into());
        }
        if self.limits.connection_idle_timeout_s == 0 {
            return invalid("limits.connection_idle_timeout_s must be above 0".into());
        }
        if self.relay.ips.is_empty() || self.relay.ips.iter().any(|ip| ip.is_unspecified()) {
            return invalid("relay.ips needs concrete addresses (not 0.0.0.0 or ::)".into());
        }
        if self.relay.port_min > self.relay.port_max {
            return invalid("relay.port_min is above relay.port_max".into());
        }
        if self.auth.users.is_empty() && self.auth.secrets.is_empty() {
            return invalid("auth: configure users or secrets (no anonymous relaying)".into());
        }
        for cidr in self.policy.allow.iter().chain(&self.policy.deny) {
            if let Err(e) = cidr.parse::<crate::address_policy::Cidr>() {
                return invalid(e.to_string());
            }
        }
        if self.limits.max_lifetime_s == 0
            || self.limits.default_lifetime_s > self.limits.max_lifetime_s
        {
            return invalid("limits: need 0 < default_lifetime_s <= max_lifetime_s".into());
        }
        Ok(())
    }

    /// Every address clients reach the server on (the policy denies
    /// relaying to them).
    pub fn listen_ips(&self) -> Vec<IpAddr> {
        let l = &self.listen;
        let mut ips: Vec<IpAddr> = l
            .udp
            .iter()
            .chain(&l.tcp)
            .chain(&l.tls)
            .map(|a| a.ip())
            .collect();
        ips.sort();
        ips.dedup();
        ips
    }

    /// Lifetime defaults as durations.
    pub fn lifetimes(&self) -> (Duration, Duration) {
        (
            Duration::from_secs(self.limits.default_lifetime_s),
            Duration::from_secs(self.limits.max_lifetime_s),
        )
    }
}

/// True if listeners on `a` and `b` with one port would collide (equal, or
/// one is the wildcard of the same family, or `::` which may be dual-stack).
fn overlapping_ips(a: IpAddr, b: IpAddr) -> bool {
    a == b
        || (a.is_unspecified() && (a.is_ipv4() == b.is_ipv4() || a.is_ipv6()))
        || (b.is_unspecified() && (a.is_ipv4() == b.is_ipv4() || b.is_ipv6()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str, env: &[(&str, &str)]) -> Result<TurnConfig, ConfigError> {
        let path = std::env::temp_dir().join(format!("turn-config-{}.toml", rand::random::<u64>()));
        std::fs::write(&path, text).unwrap();
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        let result = TurnConfig::load(Some(&path), env);
        let _ = std::fs::remove_file(path);
        result
    }

    #[test]
    fn example_file_loads_and_env_overrides() {
        let text = include_str!("../../configs/turn-server.toml");
        let c = load(
            text,
            &[
                ("TURN_SERVER_REALM", "example.org"),
                ("TURN_RELAY_PORT_MIN", "50000"),
            ],
        )
        .unwrap();
        assert_eq!(c.server.realm, "example.org");
        assert_eq!(c.relay.port_min, 50000);
    }

    #[test]
    fn the_deployment_example_in_the_docs_loads() {
        let doc = include_str!("../../docs/turn-server.md");
        let example = doc
            .split("```toml\n")
            .nth(1)
            .and_then(|rest| rest.split("```").next())
            .expect("a toml block");
        let c = load(example, &[]).unwrap();
        assert_eq!(c.listen.tls, vec!["0.0.0.0:443".parse().unwrap()]);
        assert_eq!(c.auth.secrets.len(), 1);
    }

    #[test]
    fn stream_listeners_and_tls() {
        let users = "[auth]\nusers = { a = \"b\" }\n";
        let c = load(users, &[]).unwrap();
        assert_eq!(c.listen.tcp, vec!["127.0.0.1:3478".parse().unwrap()]);
        assert!(c.listen.tls.is_empty() && !c.tls.dev_cert);
        let c = load(
            users,
            &[
                ("TURN_LISTEN_TLS", "[\"0.0.0.0:443\"]"),
                ("TURN_TLS_CERT", "/etc/turn/cert.pem"),
                ("TURN_TLS_KEY", "/etc/turn/key.pem"),
                ("TURN_LIMITS_CONNECTION_IDLE_TIMEOUT_S", "30"),
            ],
        )
        .unwrap();
        assert_eq!(c.listen.tls, vec!["0.0.0.0:443".parse().unwrap()]);
        assert_eq!(c.tls.cert.as_deref(), Some(Path::new("/etc/turn/cert.pem")));
        assert_eq!(c.limits.connection_idle_timeout_s, 30);
        // A TLS listener needs a certificate or the development one.
        let e = load(
            &format!("{users}[listen]\ntls = [\"127.0.0.1:5349\"]\n"),
            &[],
        )
        .unwrap_err();
        assert!(e.to_string().contains("listen.tls needs tls.cert"), "{e}");
        let dev = format!("{users}[listen]\ntls = [\"127.0.0.1:5349\"]\n[tls]\ndev_cert = true\n");
        assert!(load(&dev, &[]).is_ok());
        let e = load(&format!("{users}[tls]\ncert = \"c.pem\"\n"), &[]).unwrap_err();
        assert!(e.to_string().contains("cert and key go together"), "{e}");
        // One port can't be plain TCP and TLS (SO_REUSEPORT would split it).
        let e = load(&dev, &[("TURN_LISTEN_TCP", "[\"0.0.0.0:5349\"]")]).unwrap_err();
        assert!(e.to_string().contains("would share one TCP port"), "{e}");
        let e = load(
            &format!("{users}[listen]\ntcp = [\"127.0.0.1:3478\", \"127.0.0.1:3478\"]\n"),
            &[],
        )
        .unwrap_err();
        assert!(e.to_string().contains("would share"), "{e}");
        // Port 0 (tests) never collides.
        let zero = format!(
            "{users}[listen]\ntcp = [\"127.0.0.1:0\"]\ntls = [\"127.0.0.1:0\"]\n[tls]\ndev_cert = true\n"
        );
        assert!(load(&zero, &[]).is_ok());
        let e = load(&format!("{users}[tls]\nhandshake_timeout_s = 0\n"), &[]).unwrap_err();
        assert!(e.to_string().contains("handshake_timeout_s"), "{e}");
    }

    #[test]
    fn clear_errors() {
        let users = "[auth]\nusers = { a = \"b\" }\n";
        let e = load(
            &format!("{users}[policy]\nallow = [\"10.0.0.0/33\"]\n"),
            &[],
        )
        .unwrap_err();
        assert!(e.to_string().contains("10.0.0.0/33"), "{e}");
        let e = load(&format!("{users}[relay]\nips = [\"0.0.0.0\"]\n"), &[]).unwrap_err();
        assert!(e.to_string().contains("relay.ips"), "{e}");
        let e = load("", &[]).unwrap_err();
        assert!(e.to_string().contains("users or secrets"), "{e}");
        let e = load(&format!("{users}[listen]\nudpp = []\n"), &[]).unwrap_err();
        assert!(e.to_string().contains("udpp"), "{e}");
        let e = load(users, &[("TURN_NOPE_X", "1")]).unwrap_err();
        assert!(e.to_string().contains("TURN_NOPE_X"), "{e}");
        let e = load(&format!("{users}[listen]\nudp = []\ntcp = []\n"), &[]).unwrap_err();
        assert!(e.to_string().contains("at least one"), "{e}");
        let e = load(&format!("{users}[listen]\ntcp = [\"localhost:80\"]\n"), &[]).unwrap_err();
        assert!(e.to_string().contains("localhost:80"), "{e}");
        let missing =
            TurnConfig::load(Some(Path::new("/nonexistent.toml")), Vec::new()).unwrap_err();
        assert!(matches!(missing, ConfigError::Read { .. }));
    }
}
