//! Starting the relay: workers per listener, shared credentials, nonces and
//! quotas, TLS configuration, and (standalone) a `/metrics` endpoint;
//! reloading the credentials and the TLS certificate while it runs.

use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use mio::net::UdpSocket;
use prometheus::Registry;
use rustls::pki_types::CertificateDer;

use crate::address_policy::AddressPolicy;
use crate::bandwidth::BandwidthLimit;
use crate::config::TurnConfig;
use crate::credentials::Credentials;
use crate::live::Live;
use crate::metrics::TurnMetrics;
use crate::nonce::NonceKey;
use crate::quota::{QuotaLimits, SharedQuotas};
use crate::rate_limit::{RateLimitConfig, RateLimiter};
use crate::server::{ServerConfig, TurnServer};
use crate::stream::StreamTimeouts;
use crate::table::{split_port_range, AllocationTable, TableConfig};
use crate::tls::{self, TlsSetup};
use crate::worker::{self, StreamLimits, StreamListener, WorkerHandle, WorkerSockets};

/// A running relay.
pub struct TurnService {
    /// Bound UDP listener addresses (port 0 resolved).
    pub udp_addrs: Vec<SocketAddr>,
    /// Bound TCP listener addresses.
    pub tcp_addrs: Vec<SocketAddr>,
    /// Bound TLS listener addresses.
    pub tls_addrs: Vec<SocketAddr>,
    workers: Vec<WorkerHandle>,
    /// The configuration running now (start, then each successful reload).
    running: TurnConfig,
    credentials: Arc<Live<Credentials>>,
    /// The TLS listeners' configuration and chain, if there are any.
    tls: Option<Arc<Live<TlsSetup>>>,
    metrics: TurnMetrics,
}

/// What a [`TurnService::reload`] changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reloaded {
    /// Static users now configured.
    pub users: usize,
    /// REST secrets now configured.
    pub secrets: usize,
    /// Whether the TLS certificate and key were read again.
    pub certificate: bool,
    /// Sections that differ from the running configuration but take effect
    /// only after a restart (listeners, relay addresses, limits, ...).
    pub needs_restart: Vec<&'static str>,
}

/// The credential store `config` describes, as its `generation`th load.
fn credentials(config: &TurnConfig, generation: u64) -> Credentials {
    let mut credentials = Credentials::new().with_generation(generation);
    for (user, password) in &config.auth.users {
        credentials.add_user(user.clone(), password.clone());
    }
    for secret in &config.auth.secrets {
        credentials = credentials.with_rest_secret(secret.as_bytes().to_vec());
    }
    credentials
}

/// Binds `count` SO_REUSEPORT sockets on `addr` with `bind`; the first
/// resolves port 0 (claiming a port no other socket holds) and the others
/// share its port. A given port another socket already holds is refused by
/// a probe first.
fn bind_group<S>(
    kind: &str,
    addr: SocketAddr,
    count: usize,
    probe: socket2::Type,
    bind: impl Fn(SocketAddr, bool) -> std::io::Result<S>,
    local: impl Fn(&S) -> std::io::Result<SocketAddr>,
) -> anyhow::Result<(SocketAddr, Vec<S>)> {
    let fail = |e: std::io::Error| {
        let why = match e.kind() {
            std::io::ErrorKind::AddrInUse => "the port is in use".to_string(),
            _ => e.to_string(),
        };
        anyhow::anyhow!("cannot bind TURN {kind} listener {addr}: {why}")
    };
    worker::probe_free(addr, probe).map_err(fail)?;
    let mut bound = addr;
    let mut sockets = Vec::with_capacity(count);
    for _ in 0..count {
        let socket = bind(bound, bound.port() == 0).map_err(fail)?;
        bound = local(&socket).map_err(fail)?;
        sockets.push(socket);
    }
    Ok((bound, sockets))
}

impl TurnService {
    /// Binds every listener and starts the workers; metrics go to `registry`.
    /// `extra_allow` lets the embedding SFU relay to its own media address.
    pub fn start(
        config: &TurnConfig,
        registry: &Registry,
        extra_allow: &[SocketAddr],
    ) -> anyhow::Result<TurnService> {
        config.validate()?;
        let tls = if config.listen.tls.is_empty() {
            None
        } else {
            let setup = tls::setup(&config.tls, &config.listen.tls)?;
            if setup.dev {
                tracing::warn!(
                    "TLS listeners use a self-signed DEVELOPMENT certificate (tls.dev_cert); \
                     configure tls.cert and tls.key for production"
                );
            }
            Some(setup)
        };
        let metrics = TurnMetrics::register(registry).context("registering TURN metrics")?;
        let credentials = Live::new(credentials(config, 0));
        let nonces = Arc::new(NonceKey::random());
        let server_ips = config.listen_ips();
        let mut policy =
            AddressPolicy::from_config(&config.policy.allow, &config.policy.deny, &server_ips)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
        for addr in extra_allow {
            policy = policy.allow_transport(*addr);
        }
        let policy = Arc::new(policy);
        let quotas = SharedQuotas::new(QuotaLimits {
            max_allocations: config.limits.max_allocations,
            max_allocations_per_user: config.limits.max_allocations_per_user,
        });
        let threads = match config.server.workers {
            0 => std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            n => n,
        };
        let (default_lifetime, max_lifetime) = config.lifetimes();
        let bandwidth = (config.limits.bandwidth_bytes_per_s > 0).then_some(BandwidthLimit {
            bytes_per_second: config.limits.bandwidth_bytes_per_s,
            burst_bytes: config.limits.bandwidth_bytes_per_s,
        });
        // `threads` workers per UDP listener (one group if there is none);
        // every worker also gets a listener of each TCP/TLS address.
        let groups = config.listen.udp.len().max(1);
        let parts = threads * groups;

        // Bind everything before starting anything: a bad address or a
        // taken port fails the start cleanly.
        let mut udp_addrs = Vec::new();
        let mut udp_sockets: Vec<Option<UdpSocket>> = Vec::new();
        for listen in &config.listen.udp {
            let (bound, sockets) = bind_group(
                "UDP",
                *listen,
                threads,
                socket2::Type::DGRAM,
                worker::udp_listener,
                |s| s.local_addr(),
            )?;
            udp_addrs.push(bound);
            udp_sockets.extend(sockets.into_iter().map(Some));
        }
        udp_sockets.resize_with(parts, || None);
        let mut stream_sockets: Vec<Vec<StreamListener>> = (0..parts).map(|_| Vec::new()).collect();
        let mut tcp_addrs = Vec::new();
        let mut tls_addrs = Vec::new();
        let tls_live = tls.map(Live::new);
        let stream_addrs = config.listen.tcp.iter().map(|a| (*a, None));
        let stream_addrs =
            stream_addrs.chain(config.listen.tls.iter().map(|a| (*a, tls_live.clone())));
        for (listen, tls) in stream_addrs {
            let kind = if tls.is_some() { "TLS" } else { "TCP" };
            let (bound, sockets) = bind_group(
                kind,
                listen,
                parts,
                socket2::Type::STREAM,
                worker::tcp_listener,
                |s| s.local_addr(),
            )?;
            if tls.is_some() {
                tls_addrs.push(bound);
            } else {
                tcp_addrs.push(bound);
            }
            for (per_worker, listener) in stream_sockets.iter_mut().zip(sockets) {
                per_worker.push(StreamListener {
                    listener,
                    tls: tls.clone(),
                });
            }
        }
        let limits = StreamLimits {
            open: Arc::new(AtomicUsize::new(0)),
            max_connections: config.limits.max_connections,
            rate: RateLimitConfig {
                per_second: config.limits.connections_per_s,
                burst: config.limits.connections_burst,
                ..RateLimitConfig::default()
            },
            timeouts: StreamTimeouts {
                handshake: Duration::from_secs(config.tls.handshake_timeout_s),
                idle: Duration::from_secs(config.limits.connection_idle_timeout_s),
            },
        };

        let mut workers = Vec::new();
        let sockets = udp_sockets.into_iter().zip(stream_sockets);
        for (index, (udp, streams)) in sockets.enumerate() {
            let (port_min, port_max) =
                split_port_range(config.relay.port_min, config.relay.port_max, parts, index)
                    .context("relay port range too small for the number of workers")?;
            let table = AllocationTable::new(
                TableConfig {
                    relay_ips: config.relay.ips.clone(),
                    port_min,
                    port_max,
                    default_lifetime,
                    max_lifetime,
                    max_permissions_per_allocation: config.limits.max_permissions_per_allocation,
                    max_channels_per_allocation: config.limits.max_channels_per_allocation,
                    bandwidth,
                    ..TableConfig::default()
                },
                policy.clone(),
                quotas.clone(),
                Instant::now(),
            )
            .map_err(|e| anyhow::anyhow!("{e}"))?;
            let limiter = RateLimiter::new(
                RateLimitConfig {
                    per_second: config.limits.unauthenticated_per_s,
                    burst: config.limits.unauthenticated_burst,
                    ..RateLimitConfig::default()
                },
                Instant::now(),
            );
            let server = TurnServer::new(
                ServerConfig {
                    realm: config.server.realm.clone(),
                    software: (!config.server.software.is_empty())
                        .then(|| config.server.software.clone()),
                },
                table,
                credentials.clone(),
                nonces.clone(),
                limiter,
                metrics.clone(),
            );
            let sockets = WorkerSockets {
                udp,
                streams,
                limits: limits.clone(),
            };
            match worker::spawn(format!("turn-{index}"), sockets, server, metrics.clone()) {
                Ok(w) => workers.push(w),
                Err(e) => {
                    workers.into_iter().for_each(WorkerHandle::stop);
                    return Err(anyhow::anyhow!("cannot start TURN worker {index}: {e}"));
                }
            }
        }
        Ok(TurnService {
            udp_addrs,
            tcp_addrs,
            tls_addrs,
            workers,
            running: config.clone(),
            credentials,
            tls: tls_live,
            metrics,
        })
    }

    /// The certificate chain the TLS listeners serve (leaf first; empty
    /// without TLS). Clients of a development certificate trust its leaf.
    pub fn tls_certificates(&self) -> Vec<CertificateDer<'static>> {
        self.tls
            .as_ref()
            .map(|t| t.get().chain.clone())
            .unwrap_or_default()
    }

    /// Applies what can change without a restart from `config`: the
    /// credentials (`[auth]` users and REST secrets) and, with TLS
    /// listeners and `tls.cert`/`tls.key` files, the certificate (read
    /// again, so a renewed file takes effect). Allocations and connections
    /// stay; new TLS connections get the new certificate, and requests of
    /// existing allocations are checked against the new credentials.
    ///
    /// All or nothing: a bad configuration or certificate is an error and
    /// changes nothing. Other sections that differ are reported in
    /// [`Reloaded::needs_restart`] and otherwise ignored.
    pub fn reload(&mut self, config: &TurnConfig) -> anyhow::Result<Reloaded> {
        let result = config
            .validate()
            .map_err(anyhow::Error::from)
            .and_then(|()| self.try_reload(config));
        self.counted(result)
    }

    /// Reads the configuration again (`file`, then `TURN_*` variables of
    /// `env`, as at start) and [reloads](Self::reload) it: what the
    /// standalone server does on SIGHUP. An unreadable or invalid file is
    /// an error that changes nothing.
    pub fn reload_from(
        &mut self,
        file: Option<&std::path::Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> anyhow::Result<Reloaded> {
        let result = TurnConfig::load(file, env)
            .map_err(anyhow::Error::from)
            .and_then(|config| self.try_reload(&config));
        self.counted(result)
    }

    /// `result`, counted in `turn_config_reloads_total`.
    fn counted(&self, result: anyhow::Result<Reloaded>) -> anyhow::Result<Reloaded> {
        let label = if result.is_ok() { "ok" } else { "error" };
        self.metrics
            .config_reloads
            .with_label_values(&[label])
            .inc();
        result
    }

    /// [`Self::reload`] of a validated `config`.
    fn try_reload(&mut self, config: &TurnConfig) -> anyhow::Result<Reloaded> {
        // The development certificate is kept: its clients trust that leaf.
        let files = config.tls.cert.as_ref().zip(config.tls.key.as_ref());
        let certificate = match (&self.tls, files) {
            (Some(_), Some((cert, key))) => Some(tls::from_files(cert, key)?),
            _ => None,
        };
        let generation = self.credentials.get().generation() + 1;
        self.credentials.replace(credentials(config, generation));
        if let (Some(live), Some(setup)) = (&self.tls, &certificate) {
            live.replace(setup.clone());
        }
        let (was, now) = (&self.running, config);
        let needs_restart = [
            ("server", was.server != now.server),
            ("listen", was.listen != now.listen),
            ("tls", certificate.is_none() && was.tls != now.tls),
            ("relay", was.relay != now.relay),
            ("policy", was.policy != now.policy),
            ("limits", was.limits != now.limits),
            ("metrics", was.metrics != now.metrics),
        ]
        .into_iter()
        .filter_map(|(name, changed)| changed.then_some(name))
        .collect();
        // What runs now: the new credentials and certificate; the rest as
        // started.
        self.running.auth = config.auth.clone();
        if certificate.is_some() {
            self.running.tls = config.tls.clone();
        }
        Ok(Reloaded {
            users: config.auth.users.len(),
            secrets: config.auth.secrets.len(),
            certificate: certificate.is_some(),
            needs_restart,
        })
    }

    /// Stops every worker (allocations and connections end with them).
    pub fn stop(self) {
        for w in self.workers {
            w.stop();
        }
    }
}

/// Serves `GET /metrics` from `registry` on `addr` (standalone server only;
/// the SFU serves its registry itself).
pub fn serve_metrics(addr: SocketAddr, registry: Registry) -> anyhow::Result<()> {
    use std::io::{Read, Write};
    let listener =
        std::net::TcpListener::bind(addr).with_context(|| format!("cannot bind metrics {addr}"))?;
    std::thread::Builder::new()
        .name("turn-metrics".into())
        .spawn(move || {
            for stream in listener.incoming().flatten() {
                let mut stream = stream;
                let _ = stream.set_read_timeout(Some(std::time::Duration::from_secs(2)));
                let mut req = [0u8; 1024];
                let _ = stream.read(&mut req);
                let mut body = Vec::new();
                let _ = prometheus::Encoder::encode(&prometheus::TextEncoder::new(), &registry.gather(), &mut body);
                let head = format!(
                    "HTTP/1.0 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\n\r\n",
                    body.len()
                );
                let _ = stream.write_all(head.as_bytes()).and_then(|()| stream.write_all(&body));
            }
        })?;
    Ok(())
}
