//! TURN metrics, registered into a caller's Prometheus registry (the SFU's
//! own when embedded, so there is one registry per process).

use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

/// Every metric the relay exports.
#[derive(Clone)]
pub struct TurnMetrics {
    /// Live allocations.
    pub allocations: IntGauge,
    /// Allocations ever created.
    pub allocations_total: IntCounter,
    /// Live permissions.
    pub permissions: IntGauge,
    /// Live channel bindings.
    pub channels: IntGauge,
    /// Datagrams relayed, by direction (`to_peer`, `to_client`).
    pub relayed_packets: IntCounterVec,
    /// Payload bytes relayed, by direction.
    pub relayed_bytes: IntCounterVec,
    /// Authentication failures, by reason.
    pub auth_failures: IntCounterVec,
    /// Peers refused by the address policy, by reason.
    pub denied_peers: IntCounterVec,
    /// Requests refused by a quota, by kind.
    pub quota_rejections: IntCounterVec,
    /// Datagrams dropped, by reason.
    pub dropped: IntCounterVec,
    /// Unauthenticated requests dropped by the per-source rate limit.
    pub rate_limited: IntCounter,
    /// Open TCP/TLS client connections, by transport (`tcp`, `tls`).
    pub connections: IntGaugeVec,
    /// TCP/TLS client connections closed, by reason.
    pub connections_closed: IntCounterVec,
    /// Configuration reloads (SIGHUP), by result (`ok`, `error`).
    pub config_reloads: IntCounterVec,
    /// The `to_peer` and `to_client` children of [`Self::relayed_packets`]
    /// and [`Self::relayed_bytes`], resolved once: the relay path counts
    /// every datagram and a label lookup hashes and locks.
    pub relayed: RelayedCounters,
}

/// Packet and byte counters of one relay direction.
#[derive(Clone)]
pub struct DirectionCounters {
    /// Datagrams relayed.
    pub packets: IntCounter,
    /// Payload bytes relayed.
    pub bytes: IntCounter,
}

impl DirectionCounters {
    /// Counts one relayed datagram of `len` payload bytes.
    pub fn count(&self, len: usize) {
        self.packets.inc();
        self.bytes.inc_by(len as u64);
    }
}

/// The counters of both relay directions.
#[derive(Clone)]
pub struct RelayedCounters {
    /// Client to peer.
    pub to_peer: DirectionCounters,
    /// Peer to client.
    pub to_client: DirectionCounters,
}

impl TurnMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let gauge = |name: &str, help: &str| -> prometheus::Result<IntGauge> {
            let g = IntGauge::new(name, help)?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
        let counter = |name: &str, help: &str| -> prometheus::Result<IntCounter> {
            let c = IntCounter::new(name, help)?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        let vec = |name: &str, help: &str, label: &str| -> prometheus::Result<IntCounterVec> {
            let c = IntCounterVec::new(Opts::new(name, help), &[label])?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        let relayed_packets = vec(
            "turn_relayed_packets_total",
            "Datagrams relayed, by direction",
            "direction",
        )?;
        let relayed_bytes = vec(
            "turn_relayed_bytes_total",
            "Payload bytes relayed, by direction",
            "direction",
        )?;
        let direction = |d: &str| -> prometheus::Result<DirectionCounters> {
            Ok(DirectionCounters {
                packets: relayed_packets.get_metric_with_label_values(&[d])?,
                bytes: relayed_bytes.get_metric_with_label_values(&[d])?,
            })
        };
        let relayed = RelayedCounters {
            to_peer: direction("to_peer")?,
            to_client: direction("to_client")?,
        };
        Ok(Self {
            relayed,
            relayed_packets,
            relayed_bytes,
            allocations: gauge("turn_allocations", "Live allocations")?,
            allocations_total: counter("turn_allocations_total", "Allocations created")?,
            permissions: gauge("turn_permissions", "Live permissions")?,
            channels: gauge("turn_channels", "Live channel bindings")?,
            auth_failures: vec(
                "turn_auth_failures_total",
                "Authentication failures, by reason",
                "reason",
            )?,
            denied_peers: vec(
                "turn_denied_peers_total",
                "Peer addresses refused by policy, by reason",
                "reason",
            )?,
            quota_rejections: vec(
                "turn_quota_rejections_total",
                "Requests refused by a quota, by kind",
                "kind",
            )?,
            dropped: vec(
                "turn_dropped_total",
                "Datagrams dropped, by reason",
                "reason",
            )?,
            config_reloads: vec(
                "turn_config_reloads_total",
                "Configuration reloads (credentials, TLS certificate), by result",
                "result",
            )?,
            rate_limited: counter(
                "turn_unauthenticated_rate_limited_total",
                "Unauthenticated requests dropped by the per-source rate limit",
            )?,
            connections: {
                let g = IntGaugeVec::new(
                    Opts::new("turn_connections", "Open TCP/TLS client connections"),
                    &["transport"],
                )?;
                registry.register(Box::new(g.clone()))?;
                g
            },
            connections_closed: vec(
                "turn_connections_closed_total",
                "TCP/TLS client connections closed, by reason",
                "reason",
            )?,
        })
    }

    /// Metrics in a private registry (tests, tools).
    pub fn unregistered() -> Self {
        Self::register(&Registry::new()).expect("fresh registry has no name clashes")
    }
}
