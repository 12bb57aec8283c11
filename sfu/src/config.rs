//! The one configuration loader: embedded defaults, then an optional TOML
//! file, then `SFU_<SECTION>_<KEY>` environment overrides.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use platform::layered::{layered, LayeredError};
use serde::{Deserialize, Serialize};

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file named on the command line.
        path: String,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// The TOML (file plus overrides) does not describe a valid config.
    #[error("invalid config: {0}")]
    Invalid(String),
    /// An `SFU_*` environment variable does not name a config key.
    #[error("{0}")]
    UnknownEnv(String),
}

/// The SFU's whole configuration. Every key is documented in `configs/sfu.toml`.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// HTTP: signaling, WHIP/WHEP, metrics, web client.
    pub http: HttpConfig,
    /// Media transport: UDP and ICE-TCP.
    pub media: MediaConfig,
    /// Room tokens.
    pub auth: AuthConfig,
    /// WebSocket signaling limits.
    pub signaling: SignalingConfig,
    /// ICE servers handed to clients in `joined`.
    pub ice: IceConfig,
    /// The embedded TURN relay.
    pub turn: TurnConfig,
    /// End-to-end encrypted file sharing (the encrypted-blob store).
    pub files: FilesConfig,
    /// Logging.
    pub log: LogConfig,
    /// One room across several nodes (docs/cluster.md); off unless `redis_url` is set.
    pub cluster: ClusterConfig,
}

/// `[http]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Address the HTTP server binds.
    pub listen: SocketAddr,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: ([127, 0, 0, 1], 7880).into(),
        }
    }
}

/// `[media]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MediaConfig {
    /// Engine threads (shards), each owning whole rooms and its own sockets.
    /// 0: one per core.
    pub workers: usize,
    /// Shard 0's UDP socket; shard `i` binds the next port up (`port + i`),
    /// or its own ephemeral port when this port is 0.
    pub udp_listen: SocketAddr,
    /// Whether to offer ICE-TCP (RFC 4571 framing) for clients whose UDP is blocked.
    pub ice_tcp: bool,
    /// Shard 0's ICE-TCP listener; shard `i` listens on `port + i`.
    pub tcp_listen: SocketAddr,
    /// Kernel receive and send buffer asked for each media UDP socket
    /// (bytes; 0 keeps the system default). Bursts of video overflow the
    /// default ≈ 208 KiB.
    pub socket_buffer_bytes: usize,
    /// Addresses announced in ICE candidates instead of the bind address
    /// (the public address when the server is behind NAT). The ports stay
    /// those of `udp_listen` / `tcp_listen`.
    pub announce: Vec<IpAddr>,
    /// A peer whose ICE/DTLS has been silent this long is removed.
    pub peer_timeout_ms: u64,
    /// At most one keyframe request per track per this interval reaches a publisher.
    pub keyframe_interval_ms: u64,
    /// Recent video packets each subscriber stream keeps to answer NACKs
    /// (for at most 3 s); also the room for one frame's packets in flight.
    pub retransmit_packets: usize,
    /// Estimate each subscriber's downlink (transport-wide congestion
    /// control) and choose simulcast layers by it.
    pub bandwidth_estimation: bool,
    /// A subscriber's downlink before the first estimate (kbit/s); with
    /// `bandwidth_estimation` off, the downlink assumed for every subscriber.
    pub initial_downlink_kbps: u64,
    /// In large rooms, forward only the audio of the N loudest or most recent
    /// speakers (the active-speaker ranking, `room/speakers.rs`); the others'
    /// audio packets are dropped at the SFU (their tracks stay subscribed).
    /// 0: forward all audio.
    pub forward_loudest_audio: usize,
    /// TEST ONLY: flip one byte of every forwarded payload, so end-to-end
    /// integrity checks (the loadtest's SFrame verification) can be seen to
    /// fail. Never enable in production.
    pub test_corrupt_payload: bool,
}

impl Default for MediaConfig {
    fn default() -> Self {
        Self {
            workers: 0,
            udp_listen: ([127, 0, 0, 1], 7882).into(),
            ice_tcp: true,
            tcp_listen: ([127, 0, 0, 1], 7881).into(),
            socket_buffer_bytes: 4 << 20,
            announce: Vec::new(),
            peer_timeout_ms: 8_000,
            keyframe_interval_ms: 500,
            retransmit_packets: 512,
            bandwidth_estimation: true,
            initial_downlink_kbps: 2_000,
            forward_loudest_audio: 0,
            test_corrupt_payload: false,
        }
    }
}

impl MediaConfig {
    /// How many shards to run: `workers`, or one per core when 0.
    pub fn shards(&self) -> usize {
        match self.workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }
    /// Shard `shard`'s address for a configured base address: the next
    /// ports up, or port 0 (ephemeral) throughout. `None` past port 65535.
    pub fn shard_addr(base: SocketAddr, shard: usize) -> Option<SocketAddr> {
        if base.port() == 0 {
            return Some(base);
        }
        let port = u16::try_from(usize::from(base.port()) + shard).ok()?;
        Some(SocketAddr::new(base.ip(), port))
    }
    /// `peer_timeout_ms` as a duration.
    pub fn peer_timeout(&self) -> Duration {
        Duration::from_millis(self.peer_timeout_ms)
    }
    /// `keyframe_interval_ms` as a duration.
    pub fn keyframe_interval(&self) -> Duration {
        Duration::from_millis(self.keyframe_interval_ms)
    }
}

/// `[auth]`
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// HS256 key for room tokens. Empty: development mode (a well-known key,
    /// the `/dev/token` endpoint, token-less WHIP/WHEP).
    pub key: String,
}

/// `[signaling]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SignalingConfig {
    /// Largest signaling message accepted (bytes); larger ones get `message_too_large`.
    pub max_message_bytes: usize,
    /// Largest relay payload (bytes, as serialized JSON).
    pub max_relay_bytes: usize,
    /// Sustained messages per second per connection.
    pub messages_per_second: u32,
    /// Bucket size: messages accepted at once before the rate applies.
    pub burst: u32,
}

impl Default for SignalingConfig {
    fn default() -> Self {
        Self {
            max_message_bytes: 256 * 1024,
            max_relay_bytes: 128 * 1024,
            messages_per_second: 50,
            burst: 200,
        }
    }
}

/// `[ice]`
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct IceConfig {
    /// Handed to clients verbatim in `joined.ice_servers`.
    pub servers: Vec<IceServer>,
}

/// One ICE server as the browser's `RTCIceServer` expects it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct IceServer {
    /// `stun:` / `turn:` / `turns:` URLs.
    pub urls: Vec<String>,
    /// TURN username.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// TURN credential.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

/// `[turn]`: the TURN relay embedded in the SFU process. Clients get
/// ephemeral TURN REST credentials for it in `joined.ice_servers`; it relays
/// only to the SFU's own media address. For anything else run the
/// standalone `turn-server`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TurnConfig {
    /// Run the embedded relay.
    pub enabled: bool,
    /// UDP listeners.
    pub udp: Vec<SocketAddr>,
    /// TCP listeners (for clients whose UDP is blocked).
    pub tcp: Vec<SocketAddr>,
    /// REALM.
    pub realm: String,
    /// TURN REST secret; empty: a random one per process (credentials then
    /// only work against this process, which is all the SFU needs).
    pub secret: String,
    /// Lifetime of the credentials handed to clients (s).
    pub credential_ttl_s: u64,
    /// Relay ports.
    pub port_min: u16,
    /// Relay ports.
    pub port_max: u16,
}

impl Default for TurnConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            udp: vec![([127, 0, 0, 1], 3478).into()],
            tcp: vec![([127, 0, 0, 1], 3478).into()],
            realm: "sfu.local".into(),
            secret: String::new(),
            credential_ttl_s: 86_400,
            port_min: 49152,
            port_max: 65535,
        }
    }
}

/// `[files]`: the store of encrypted files (browsers encrypt before upload;
/// the server holds ciphertext, sizes and times only).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FilesConfig {
    /// Serve `/files` (upload, download, delete).
    pub enabled: bool,
    /// Directory of the blobs; empty: `sfu-files` in the system's temporary directory.
    pub dir: String,
    /// Seconds a file stays downloadable after its upload started.
    pub ttl_s: u64,
    /// Largest file (bytes of ciphertext: the plaintext plus 16 bytes per 1 MiB chunk).
    pub max_file_bytes: u64,
    /// Bytes one identity may store at once.
    pub user_quota_bytes: u64,
    /// Bytes all files may take at once.
    pub total_quota_bytes: u64,
    /// Seconds between sweeps that delete expired files from disk.
    pub sweep_interval_s: u64,
    /// A download of a file still being uploaded waits for more bytes; it
    /// ends with an error when the upload has received nothing for this
    /// many seconds (its sender stopped).
    pub stall_s: u64,
}

impl Default for FilesConfig {
    fn default() -> Self {
        const GIB: u64 = 1 << 30;
        Self {
            enabled: true,
            dir: String::new(),
            ttl_s: 86_400,
            max_file_bytes: 4 * GIB,
            user_quota_bytes: 10 * GIB,
            total_quota_bytes: 100 * GIB,
            sweep_interval_s: 60,
            stall_s: 30,
        }
    }
}

/// `[cluster]`: this node's part in a cluster of SFU nodes sharing rooms
/// (docs/cluster.md). Off while `redis_url` is empty: then nothing here is
/// used and no Redis is contacted.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// The registry, e.g. `redis://127.0.0.1:6379/`. Empty: no cluster.
    pub redis_url: String,
    /// This node's id (1..=64 of `A-Za-z0-9._-`, unique in the cluster).
    /// Empty: the host name and the trunk port, e.g. `media-3-7890`.
    pub node_id: String,
    /// Shared by every node; proves membership on the trunk. At least 16 bytes.
    pub secret: String,
    /// UDP address of the trunk's QUIC endpoint.
    pub trunk_listen: SocketAddr,
    /// The trunk address other nodes dial (`host:port`); empty: `trunk_listen`.
    pub trunk_advertise: String,
    /// Seconds a registration lives without renewal (renewed every third of
    /// it): a node that dies is gone from listings within this time. 1..=10.
    pub lease_s: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            redis_url: String::new(),
            node_id: String::new(),
            secret: String::new(),
            trunk_listen: ([127, 0, 0, 1], 7890).into(),
            trunk_advertise: String::new(),
            lease_s: 5,
        }
    }
}

/// Shortest accepted `cluster.secret`, in bytes.
pub const MIN_CLUSTER_SECRET: usize = 16;

impl ClusterConfig {
    /// Whether this node is part of a cluster.
    pub fn enabled(&self) -> bool {
        !self.redis_url.is_empty()
    }
    /// `lease_s` as a duration.
    pub fn lease(&self) -> Duration {
        Duration::from_secs(self.lease_s)
    }
    /// `node_id`, or the default one for a trunk bound to `trunk_port`.
    pub fn node_id_for(&self, trunk_port: u16) -> String {
        if self.node_id.is_empty() {
            crate::cluster::node_id::default_id(&crate::cluster::node_id::hostname(), trunk_port)
        } else {
            self.node_id.clone()
        }
    }
    /// The address other nodes dial: `trunk_advertise`, or the bound address.
    pub fn advertise(&self, bound: SocketAddr) -> Result<SocketAddr, ConfigError> {
        if self.trunk_advertise.is_empty() {
            return Ok(bound);
        }
        self.trunk_advertise.parse().map_err(|e| {
            ConfigError::Invalid(format!(
                "cluster.trunk_advertise {:?}: {e} (expected ip:port)",
                self.trunk_advertise
            ))
        })
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if !self.enabled() {
            return Ok(());
        }
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if self.secret.len() < MIN_CLUSTER_SECRET {
            return bad(format!(
                "cluster.secret must be at least {MIN_CLUSTER_SECRET} bytes when cluster.redis_url is set (got {}); every node of the cluster needs the same one",
                self.secret.len()
            ));
        }
        if !self.node_id.is_empty() {
            crate::cluster::node_id::check(&self.node_id)
                .map_err(|e| ConfigError::Invalid(format!("cluster.node_id: {e}")))?;
        }
        if !(1..=10).contains(&self.lease_s) {
            return bad(format!(
                "cluster.lease_s must be 1..=10 (a dead node must vanish within 10 s), got {}",
                self.lease_s
            ));
        }
        if let Err(e) = redis::IntoConnectionInfo::into_connection_info(self.redis_url.as_str()) {
            return bad(format!("cluster.redis_url {:?}: {e}", self.redis_url));
        }
        let advertised = self.advertise(self.trunk_listen)?;
        if advertised.ip().is_unspecified()
            || advertised.port() == 0 && !self.trunk_advertise.is_empty()
        {
            return bad(format!(
                "cluster.trunk_advertise {advertised} cannot be dialled: set it to the address other nodes reach (cluster.trunk_listen binds {})",
                self.trunk_listen
            ));
        }
        Ok(())
    }
}

/// `[log]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `human` or `json`.
    pub format: LogFormat,
    /// A `tracing` filter, e.g. `info` or `sfu=debug,str0m=warn`.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Human,
            level: "info".into(),
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Readable lines.
    Human,
    /// One JSON object per line.
    Json,
}

impl Config {
    /// Loads defaults, then `file` if given, then `SFU_*` variables from `env`.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let text = match file {
            Some(path) => std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.display().to_string(),
                source,
            })?,
            None => String::new(),
        };
        Self::from_toml_with_env(&text, env)
    }

    /// Parses TOML text and applies environment overrides.
    pub fn from_toml_with_env(
        text: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let config: Config = layered(text, "SFU_", SECTIONS, env).map_err(|e| match e {
            LayeredError::UnknownEnv(m) => ConfigError::UnknownEnv(m),
            LayeredError::Invalid(m) => ConfigError::Invalid(m),
        })?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let s = &self.signaling;
        if s.max_message_bytes == 0 || s.messages_per_second == 0 {
            return Err(ConfigError::Invalid(
                "signaling.max_message_bytes and signaling.messages_per_second must be > 0".into(),
            ));
        }
        let m = &self.media;
        let wildcard = [
            ("udp_listen", m.udp_listen, true),
            ("tcp_listen", m.tcp_listen, m.ice_tcp),
        ]
        .into_iter()
        .find(|(_, addr, used)| *used && addr.ip().is_unspecified());
        if let (true, Some((key, addr, _))) = (m.announce.is_empty(), wildcard) {
            return Err(ConfigError::Invalid(format!(
                "media.{key} {addr} binds every interface: set media.announce to the address(es) clients reach"
            )));
        }
        let last = m.shards().saturating_sub(1);
        for (key, base) in [("udp_listen", m.udp_listen), ("tcp_listen", m.tcp_listen)] {
            if MediaConfig::shard_addr(base, last).is_none() {
                return Err(ConfigError::Invalid(format!(
                    "media.{key} {base}: {} shards need ports {}..={} (shard i listens on port + i)",
                    last + 1,
                    base.port(),
                    usize::from(base.port()) + last
                )));
            }
        }
        if m.initial_downlink_kbps < 100 {
            return Err(ConfigError::Invalid(
                "media.initial_downlink_kbps must be at least 100".into(),
            ));
        }
        if m.retransmit_packets < 128 {
            return Err(ConfigError::Invalid(
                "media.retransmit_packets must be at least 128 (a keyframe's packets)".into(),
            ));
        }
        let f = &self.files;
        if f.ttl_s == 0 || f.sweep_interval_s == 0 {
            return Err(ConfigError::Invalid(
                "files.ttl_s and files.sweep_interval_s must be > 0".into(),
            ));
        }
        if self.media.peer_timeout_ms < 500 {
            return Err(ConfigError::Invalid(
                "media.peer_timeout_ms must be at least 500".into(),
            ));
        }
        self.cluster.validate()
    }
}

const SECTIONS: &[&str] = &[
    "http",
    "media",
    "auth",
    "signaling",
    "ice",
    "turn",
    "files",
    "log",
    "cluster",
];

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_need_no_file() {
        let c = Config::load(None, env(&[])).expect("defaults");
        assert_eq!(c.http.listen.port(), 7880);
        assert_eq!(c.media.udp_listen.port(), 7882);
        assert!(c.auth.key.is_empty());
    }

    #[test]
    fn example_config_parses() {
        let text = include_str!("../../configs/sfu.toml");
        let c = Config::from_toml_with_env(text, env(&[])).expect("configs/sfu.toml");
        assert_eq!(c.http.listen.port(), 7880);
    }

    #[test]
    fn env_overrides_file() {
        let c = Config::from_toml_with_env(
            "[http]\nlisten = \"127.0.0.1:1\"\n",
            env(&[
                ("SFU_HTTP_LISTEN", "127.0.0.1:9000"),
                ("SFU_MEDIA_ANNOUNCE", "[\"203.0.113.7\"]"),
                ("SFU_MEDIA_PEER_TIMEOUT_MS", "3000"),
                ("SFU_MEDIA_TEST_CORRUPT_PAYLOAD", "true"),
                ("SFU_MEDIA_FORWARD_LOUDEST_AUDIO", "3"),
                ("SFU_FILES_TTL_S", "3600"),
                ("PATH", "/bin"),
            ]),
        )
        .expect("overrides");
        assert_eq!(c.http.listen.port(), 9000);
        assert_eq!(
            c.media.announce,
            vec!["203.0.113.7".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(c.media.peer_timeout_ms, 3000);
        assert!(c.media.test_corrupt_payload);
        assert_eq!(c.media.forward_loudest_audio, 3);
        assert_eq!(c.files.ttl_s, 3600);
    }

    #[test]
    fn cluster_is_off_by_default_and_configurable_from_env() {
        let c = Config::load(None, env(&[])).expect("defaults");
        assert!(!c.cluster.enabled());
        // Off: a short secret is nobody's business.
        Config::from_toml_with_env("[cluster]\nsecret = \"x\"\n", env(&[])).expect("off");
        let c = Config::from_toml_with_env(
            "",
            env(&[
                ("SFU_CLUSTER_REDIS_URL", "redis://127.0.0.1:6379/"),
                ("SFU_CLUSTER_SECRET", "0123456789abcdef"),
                ("SFU_CLUSTER_NODE_ID", "node-a"),
                ("SFU_CLUSTER_TRUNK_ADVERTISE", "192.0.2.1:7890"),
                ("SFU_CLUSTER_LEASE_S", "2"),
            ]),
        )
        .expect("cluster from env");
        assert!(c.cluster.enabled());
        assert_eq!(c.cluster.node_id_for(1), "node-a");
        assert_eq!(c.cluster.lease(), Duration::from_secs(2));
        assert_eq!(
            c.cluster.advertise(c.cluster.trunk_listen).unwrap(),
            "192.0.2.1:7890".parse::<SocketAddr>().unwrap()
        );
        for (key, value) in [
            ("SFU_CLUSTER_LEASE_S", "11"),
            ("SFU_CLUSTER_NODE_ID", "a:b"),
            ("SFU_CLUSTER_REDIS_URL", "http://x"),
            ("SFU_CLUSTER_TRUNK_ADVERTISE", "nope"),
        ] {
            let mut vars = vec![
                ("SFU_CLUSTER_REDIS_URL", "redis://127.0.0.1:6379/"),
                ("SFU_CLUSTER_SECRET", "0123456789abcdef"),
            ];
            vars.retain(|(k, _)| *k != key);
            vars.push((key, value));
            let e = Config::from_toml_with_env("", env(&vars)).unwrap_err();
            assert!(e.to_string().contains("cluster."), "{key}: {e}");
        }
    }

    #[test]
    fn bad_configs_are_clear_errors() {
        let unknown = Config::from_toml_with_env("[http]\nlisen = 1\n", env(&[])).unwrap_err();
        assert!(unknown.to_string().contains("lisen"), "{unknown}");
        let bad_addr =
            Config::from_toml_with_env("[http]\nlisten = \"nope\"\n", env(&[])).unwrap_err();
        assert!(matches!(bad_addr, ConfigError::Invalid(_)));
        let bad_env = Config::from_toml_with_env("", env(&[("SFU_NOPE_X", "1")])).unwrap_err();
        assert!(matches!(bad_env, ConfigError::UnknownEnv(_)));
        let unannounced =
            Config::from_toml_with_env("[media]\nudp_listen = \"0.0.0.0:7882\"\n", env(&[]))
                .unwrap_err();
        assert!(
            unannounced.to_string().contains("media.announce"),
            "{unannounced}"
        );
        let no_ports = Config::from_toml_with_env(
            "[media]\nworkers = 4\nudp_listen = \"127.0.0.1:65534\"\n",
            env(&[]),
        )
        .unwrap_err();
        assert!(no_ports.to_string().contains("65534..=65537"), "{no_ports}");
        let short_secret = Config::from_toml_with_env(
            "[cluster]\nredis_url = \"redis://127.0.0.1:1/\"\nsecret = \"short\"\n",
            env(&[]),
        )
        .unwrap_err();
        assert!(
            short_secret.to_string().contains("cluster.secret"),
            "{short_secret}"
        );
        let wildcard_trunk = Config::from_toml_with_env(
            "[cluster]\nredis_url = \"redis://127.0.0.1:1/\"\nsecret = \"0123456789abcdef\"\ntrunk_listen = \"0.0.0.0:7890\"\n",
            env(&[]),
        )
        .unwrap_err();
        assert!(
            wildcard_trunk.to_string().contains("trunk_advertise"),
            "{wildcard_trunk}"
        );
        let missing = Config::load(Some(Path::new("/nonexistent/sfu.toml")), env(&[])).unwrap_err();
        assert!(matches!(missing, ConfigError::Read { .. }));
    }
}
