//! Starting and stopping the whole server: sockets, shards, HTTP.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::app_state::AppState;
use crate::auth::TokenAuthority;
use crate::config::{Config, MediaConfig};
use crate::http::router;
use crate::media::command::Command;
use crate::media::engine::{Engine, EngineConfig};
use crate::media::peer::LocalAddrs;
use crate::media::placement::Placement;
use crate::media::shard::{Shard, ShardSockets};
use crate::media::shards::Shards;
use crate::media::shell::ShardContext;
use crate::metrics::Metrics;

/// Messages from the shards to other nodes waiting for the cluster's mesh;
/// media beyond this is dropped, control waits.
const TRUNK_QUEUE: usize = 8192;

/// A running server.
pub struct Server {
    /// Bound HTTP address.
    pub http_addr: SocketAddr,
    /// Bound media UDP address of shard 0.
    pub udp_addr: SocketAddr,
    /// Bound media UDP address of every shard, in shard order.
    pub udp_addrs: Vec<SocketAddr>,
    /// Bound ICE-TCP address of shard 0, if enabled.
    pub tcp_addr: Option<SocketAddr>,
    /// Bound UDP addresses of the embedded TURN relay, if enabled.
    pub turn_addrs: Vec<SocketAddr>,
    /// The metrics registry.
    pub metrics: Metrics,
    shards: Shards,
    threads: Vec<Shard>,
    shutdown: Option<oneshot::Sender<()>>,
    tasks: Vec<JoinHandle<()>>,
    turn: Option<crate::turn::EmbeddedTurn>,
    cluster: Option<crate::cluster::ClusterNode>,
}

impl Server {
    /// Binds every socket (port 0 picks a free port) and starts serving.
    pub async fn start(config: Config) -> anyhow::Result<Server> {
        let config = Arc::new(config);
        let auth = TokenAuthority::new(&config.auth.key);
        if auth.is_development() {
            warn!("DEVELOPMENT MODE: no auth.key configured; tokens are signed with a public key and /dev/token hands them to anyone. Set auth.key (or SFU_AUTH_KEY) before exposing this server.");
        }
        let metrics = Metrics::new();
        let media = &config.media;
        let sockets = (0..media.shards())
            .map(|shard| bind_shard(media, shard))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let udp_addrs = sockets
            .iter()
            .map(|s| s.udp.local_addr())
            .collect::<std::io::Result<Vec<_>>>()?;
        let http = TcpListener::bind(config.http.listen)
            .await
            .with_context(|| format!("cannot bind HTTP {}", config.http.listen))?;
        let http_addr = http.local_addr()?;

        let turn = if config.turn.enabled {
            let turn = crate::turn::start(
                &config.turn,
                &udp_addrs,
                &config.media.announce,
                metrics.registry(),
            )?;
            let relay = &turn.service;
            info!(
                udp = ?relay.udp_addrs,
                tcp = ?relay.tcp_addrs,
                tls = ?relay.tls_addrs,
                "embedded TURN relay listening"
            );
            Some(turn)
        } else {
            None
        };
        let turn_credentials = turn.as_ref().map(|t| t.credentials.clone());
        let placement = Arc::new(Placement::new(sockets.len()));
        // What the shards send to other nodes, when in a cluster.
        let (trunk_tx, trunk_rx) = tokio::sync::mpsc::channel(TRUNK_QUEUE);
        let trunk_tx = config.cluster.enabled().then_some(trunk_tx);
        let mut threads = Vec::with_capacity(sockets.len());
        for (id, sockets) in sockets.into_iter().enumerate() {
            let local = LocalAddrs {
                udp: announce(media, sockets.udp.local_addr()?),
                tcp: match &sockets.tcp {
                    Some(l) => announce(media, l.local_addr()?),
                    None => Vec::new(),
                },
            };
            let engine = Engine::new(
                EngineConfig {
                    media: media.clone(),
                    local,
                    ice_servers: config.ice.servers.clone(),
                    turn: turn_credentials.clone(),
                    max_relay_bytes: config.signaling.max_relay_bytes,
                    shard: id,
                },
                metrics.clone(),
            );
            let context = ShardContext {
                id,
                placement: placement.clone(),
                trunk: trunk_tx.clone(),
            };
            threads.push(Shard::spawn(engine, sockets, context)?);
        }
        let shards = Shards::new(
            threads.iter().map(|s| s.commands.clone()).collect(),
            placement.clone(),
        );
        let mut state = AppState::new(
            config.clone(),
            auth,
            metrics.clone(),
            shards.clone(),
            turn_credentials,
        );
        state.files = crate::files::open(&config.files).with_context(|| {
            format!(
                "cannot open the file store {}",
                crate::files::directory(&config.files).display()
            )
        })?;
        let mut tasks = Vec::new();
        if let Some(store) = &state.files {
            let every = Duration::from_secs(config.files.sweep_interval_s);
            tasks.push(tokio::spawn(crate::files::sweep_forever(
                store.clone(),
                metrics.clone(),
                every,
            )));
        }
        let (shutdown, shutdown_rx) = oneshot::channel::<()>();
        tasks.push(tokio::spawn(async move {
            let serve = axum::serve(http, router(state)).with_graceful_shutdown(async {
                let _ = shutdown_rx.await;
            });
            if let Err(e) = serve.await {
                warn!("HTTP server stopped: {e}");
            }
        }));
        let tcp_addrs: Vec<_> = threads.iter().filter_map(|s| s.tcp_addr).collect();
        info!(http = %http_addr, udp = ?udp_addrs, tcp = ?tcp_addrs, shards = threads.len(), "sfu listening");
        info!("web client: open http://{http_addr}/ in a browser");
        let cluster = if config.cluster.enabled() {
            let media_addrs = udp_addrs.iter().flat_map(|a| announce(media, *a)).collect();
            let node = crate::cluster::ClusterNode::start(
                &config.cluster,
                &metrics,
                crate::cluster::NodeAddrs {
                    http: http_addr,
                    media: media_addrs,
                },
                shards.clone(),
                trunk_rx,
            )
            .await?;
            Some(node)
        } else {
            None
        };
        Ok(Server {
            http_addr,
            udp_addr: udp_addrs[0],
            udp_addrs,
            tcp_addr: tcp_addrs.first().copied(),
            turn_addrs: turn
                .as_ref()
                .map(|t| t.service.udp_addrs.clone())
                .unwrap_or_default(),
            turn,
            cluster,
            metrics,
            shards,
            threads,
            shutdown: Some(shutdown),
            tasks,
        })
    }

    /// The room → shard table (tests and diagnostics).
    pub fn placement(&self) -> &Placement {
        self.shards.placement()
    }

    /// Test-only: make the forwarder corrupt one byte of every payload.
    pub async fn set_corrupt_payloads(&self, on: bool) {
        self.shards.broadcast(|| Command::CorruptPayloads(on)).await;
    }

    /// This node's cluster membership, when `[cluster]` is configured.
    pub fn cluster(&self) -> Option<&crate::cluster::ClusterNode> {
        self.cluster.as_ref()
    }

    /// Stops serving HTTP and the media shards (leaving the cluster first).
    pub async fn stop(mut self) {
        if let Some(cluster) = self.cluster.take() {
            cluster.stop().await;
        }
        if let Some(s) = self.shutdown.take() {
            let _ = s.send(());
        }
        for t in &self.tasks {
            t.abort();
        }
        for t in self.tasks.drain(..) {
            let _ = t.await;
        }
        let threads = std::mem::take(&mut self.threads);
        // Joining threads blocks: not on the runtime's own workers.
        let _ = tokio::task::spawn_blocking(move || drop(threads)).await;
        if let Some(turn) = self.turn.take() {
            turn.service.stop();
        }
    }
}

/// Binds shard `shard`'s sockets (see `MediaConfig::shard_addr`) with the
/// configured kernel buffers.
fn bind_shard(media: &MediaConfig, shard: usize) -> anyhow::Result<ShardSockets> {
    let at = |base| {
        MediaConfig::shard_addr(base, shard)
            .with_context(|| format!("no port for shard {shard} above {base}"))
    };
    let udp_at = at(media.udp_listen)?;
    let udp = std::net::UdpSocket::bind(udp_at)
        .with_context(|| format!("cannot bind media UDP {udp_at} (shard {shard})"))?;
    match platform::socket_buffers::grow(&udp, media.socket_buffer_bytes) {
        Ok(granted) if shard == 0 => info!(
            receive = granted.receive,
            send = granted.send,
            "media socket buffers (bytes, per shard)"
        ),
        Ok(_) => {}
        Err(e) => warn!("media socket buffers: {e}"),
    }
    let tcp = if media.ice_tcp {
        let tcp_at = at(media.tcp_listen)?;
        let l = std::net::TcpListener::bind(tcp_at)
            .with_context(|| format!("cannot bind ICE-TCP {tcp_at} (shard {shard})"))?;
        Some(l)
    } else {
        None
    };
    Ok(ShardSockets { udp, tcp })
}

/// The addresses put in candidates for a bound socket: `media.announce`
/// (behind NAT) with the bound port, or the bound address itself.
fn announce(media: &MediaConfig, bound: SocketAddr) -> Vec<SocketAddr> {
    if media.announce.is_empty() {
        vec![bound]
    } else {
        media
            .announce
            .iter()
            .map(|ip| SocketAddr::new(*ip, bound.port()))
            .collect()
    }
}
