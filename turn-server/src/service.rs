//! Starting the relay: workers per listener, shared credentials, nonces and
//! quotas, and (standalone) a `/metrics` endpoint.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use prometheus::Registry;

use crate::address_policy::AddressPolicy;
use crate::bandwidth::BandwidthLimit;
use crate::config::TurnConfig;
use crate::credentials::Credentials;
use crate::metrics::TurnMetrics;
use crate::nonce::NonceKey;
use crate::quota::{QuotaLimits, SharedQuotas};
use crate::rate_limit::{RateLimitConfig, RateLimiter};
use crate::server::{ServerConfig, TurnServer};
use crate::table::{split_port_range, AllocationTable, TableConfig};
use crate::worker::{self, WorkerHandle};

/// A running relay.
pub struct TurnService {
    /// Bound UDP listener addresses.
    pub udp_addrs: Vec<SocketAddr>,
    workers: Vec<WorkerHandle>,
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
        let metrics = TurnMetrics::register(registry).context("registering TURN metrics")?;
        let mut credentials = Credentials::new();
        for (user, password) in &config.auth.users {
            credentials.add_user(user.clone(), password.clone());
        }
        for secret in &config.auth.secrets {
            credentials = credentials.with_rest_secret(secret.as_bytes().to_vec());
        }
        let credentials = Arc::new(credentials);
        let nonces = Arc::new(NonceKey::random());
        let server_ips: Vec<_> = config.listen.udp.iter().map(|a| a.ip()).collect();
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
        let parts = threads * config.listen.udp.len();
        let mut workers = Vec::new();
        let mut udp_addrs = Vec::new();
        for (l, listen) in config.listen.udp.iter().enumerate() {
            // The first socket resolves port 0; the others share its port.
            let mut bound = *listen;
            for w in 0..threads {
                let socket = worker::udp_socket(bound, true)
                    .with_context(|| format!("cannot bind TURN UDP {bound}"))?;
                bound = socket.local_addr()?;
                let index = l * threads + w;
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
                        max_permissions_per_allocation: config
                            .limits
                            .max_permissions_per_allocation,
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
                workers.push(worker::spawn(format!("turn-{index}"), socket, server)?);
            }
            udp_addrs.push(bound);
        }
        Ok(TurnService { udp_addrs, workers })
    }

    /// Stops every worker (allocations end with them).
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
