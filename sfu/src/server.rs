//! Starting and stopping the whole server: sockets, engine task, HTTP.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::auth::TokenAuthority;
use crate::config::Config;
use crate::http::{router, AppState};
use crate::media::engine::{Engine, EngineConfig};
use crate::media::ice_tcp;
use crate::media::peer::LocalAddrs;
use crate::media::shell::{self, Command};
use crate::metrics::Metrics;

/// A running server.
pub struct Server {
    /// Bound HTTP address.
    pub http_addr: SocketAddr,
    /// Bound media UDP address.
    pub udp_addr: SocketAddr,
    /// Bound ICE-TCP address, if enabled.
    pub tcp_addr: Option<SocketAddr>,
    /// Bound UDP addresses of the embedded TURN relay, if enabled.
    pub turn_addrs: Vec<SocketAddr>,
    /// The metrics registry.
    pub metrics: Metrics,
    commands: mpsc::Sender<Command>,
    shutdown: Option<oneshot::Sender<()>>,
    tasks: Vec<JoinHandle<()>>,
    turn: Option<crate::turn::EmbeddedTurn>,
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

        let udp = UdpSocket::bind(config.media.udp_listen)
            .await
            .with_context(|| format!("cannot bind media UDP {}", config.media.udp_listen))?;
        let udp_addr = udp.local_addr()?;
        let tcp = if config.media.ice_tcp {
            let l = TcpListener::bind(config.media.tcp_listen)
                .await
                .with_context(|| format!("cannot bind ICE-TCP {}", config.media.tcp_listen))?;
            Some(l)
        } else {
            None
        };
        let tcp_addr = tcp.as_ref().map(|l| l.local_addr()).transpose()?;
        let http = TcpListener::bind(config.http.listen)
            .await
            .with_context(|| format!("cannot bind HTTP {}", config.http.listen))?;
        let http_addr = http.local_addr()?;

        let announce = |bound: SocketAddr| -> Vec<SocketAddr> {
            if config.media.announce.is_empty() {
                vec![bound]
            } else {
                config
                    .media
                    .announce
                    .iter()
                    .map(|ip| SocketAddr::new(*ip, bound.port()))
                    .collect()
            }
        };
        let local = LocalAddrs {
            udp: announce(udp_addr),
            tcp: tcp_addr.map(announce).unwrap_or_default(),
        };
        let turn = if config.turn.enabled {
            let turn = crate::turn::start(
                &config.turn,
                udp_addr,
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
        let engine = Engine::new(
            EngineConfig {
                media: config.media.clone(),
                local,
                ice_servers: config.ice.servers.clone(),
                turn: turn_credentials.clone(),
                max_relay_bytes: config.signaling.max_relay_bytes,
            },
            metrics.clone(),
        );
        let (commands, command_rx) = mpsc::channel(4096);
        let mut tasks = vec![tokio::spawn(shell::run(engine, udp, command_rx))];
        if let Some(l) = tcp {
            tasks.push(tokio::spawn(ice_tcp::accept_loop(l, commands.clone())));
        }
        let mut state = AppState::new(
            config.clone(),
            auth,
            metrics.clone(),
            commands.clone(),
            turn_credentials,
        );
        state.files = crate::files::open(&config.files).with_context(|| {
            format!(
                "cannot open the file store {}",
                crate::files::directory(&config.files).display()
            )
        })?;
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
        info!(http = %http_addr, udp = %udp_addr, tcp = ?tcp_addr, "sfu listening");
        info!("web client: open http://{http_addr}/ in a browser");
        Ok(Server {
            http_addr,
            udp_addr,
            tcp_addr,
            turn_addrs: turn
                .as_ref()
                .map(|t| t.service.udp_addrs.clone())
                .unwrap_or_default(),
            turn,
            metrics,
            commands,
            shutdown: Some(shutdown),
            tasks,
        })
    }

    /// Test-only: make the forwarder corrupt one byte of every payload.
    pub async fn set_corrupt_payloads(&self, on: bool) {
        let _ = self.commands.send(Command::CorruptPayloads(on)).await;
    }

    /// Stops serving HTTP and the media engine.
    pub async fn stop(mut self) {
        if let Some(s) = self.shutdown.take() {
            let _ = s.send(());
        }
        for t in &self.tasks {
            t.abort();
        }
        for t in self.tasks.drain(..) {
            let _ = t.await;
        }
        if let Some(turn) = self.turn.take() {
            turn.service.stop();
        }
    }
}
