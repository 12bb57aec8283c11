//! The embedded TURN relay: started with the SFU, allowed to relay only to
//! the SFU's media address, and handing each participant short-lived TURN
//! REST credentials.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use rand::distr::{Alphanumeric, SampleString};
use turn_server::credentials::mint_rest_credentials;
use turn_server::service::TurnService;

use crate::auth::unix_now;
use crate::config::{IceServer, TurnConfig};

/// Mints ICE server entries with TURN REST credentials.
#[derive(Clone)]
pub struct TurnCredentials {
    secret: String,
    urls: Vec<String>,
    ttl: Duration,
}

impl std::fmt::Debug for TurnCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TurnCredentials")
            .field("urls", &self.urls)
            .finish_non_exhaustive()
    }
}

impl TurnCredentials {
    /// An ICE server for `identity`, valid for the configured lifetime.
    pub fn ice_server(&self, identity: &str) -> IceServer {
        let (username, password) =
            mint_rest_credentials(self.secret.as_bytes(), identity, self.ttl, unix_now());
        IceServer {
            urls: self.urls.clone(),
            username: Some(username),
            credential: Some(password),
        }
    }
}

/// The ICE servers a client gets: the configured ones plus the embedded relay
/// (if any) with fresh credentials for `identity`.
pub fn ice_servers(
    configured: &[IceServer],
    turn: Option<&TurnCredentials>,
    identity: &str,
) -> Vec<IceServer> {
    let mut servers = configured.to_vec();
    servers.extend(turn.map(|t| t.ice_server(identity)));
    servers
}

/// The running relay and its credential minting.
pub struct EmbeddedTurn {
    /// The relay.
    pub service: TurnService,
    /// Credentials for clients.
    pub credentials: TurnCredentials,
}

/// Starts the relay described by `config`, relaying only to the shards'
/// media sockets (`media`).
pub fn start(
    config: &TurnConfig,
    media: &[SocketAddr],
    announce: &[std::net::IpAddr],
    registry: &prometheus::Registry,
) -> anyhow::Result<EmbeddedTurn> {
    let secret = if config.secret.is_empty() {
        Alphanumeric.sample_string(&mut rand::rng(), 32)
    } else {
        config.secret.clone()
    };
    let mut relay = turn_server::config::TurnConfig::default();
    relay.server.realm = config.realm.clone();
    relay.listen.udp = config.udp.clone();
    relay.listen.tcp = config.tcp.clone();
    relay.relay.ips = config.udp.iter().map(|a| a.ip()).take(1).collect();
    relay.relay.port_min = config.port_min;
    relay.relay.port_max = config.port_max;
    relay.auth.secrets = vec![secret.clone()];
    let service = TurnService::start(&relay, registry, media).context("embedded TURN relay")?;
    let public = |bound: &SocketAddr| -> Vec<SocketAddr> {
        if announce.is_empty() {
            vec![*bound]
        } else {
            announce
                .iter()
                .map(|ip| SocketAddr::new(*ip, bound.port()))
                .collect()
        }
    };
    let udp = service
        .udp_addrs
        .iter()
        .flat_map(public)
        .map(|a| format!("turn:{a}?transport=udp"));
    let tcp = service.tcp_addrs.iter().flat_map(public);
    let urls = udp
        .chain(tcp.map(|a| format!("turn:{a}?transport=tcp")))
        .collect();
    Ok(EmbeddedTurn {
        service,
        credentials: TurnCredentials {
            secret,
            urls,
            ttl: Duration::from_secs(config.credential_ttl_s),
        },
    })
}
