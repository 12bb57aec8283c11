//! One room across several SFU nodes (docs/cluster.md). Built so far: the
//! Redis [`registry`] (nodes, their load and rooms, with leases) and the
//! authenticated QUIC [`trunk`] between nodes; a node registers and opens
//! its trunk endpoint at startup when `[cluster]` is configured. Not yet:
//! remote tracks and room events in the media engine.

pub mod keys;
pub mod node_id;
pub mod registry;
pub mod trunk;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::config::ClusterConfig;
use crate::media::placement::Placement;
use crate::metrics::Metrics;
use keys::NodeRecord;
use registry::{Registration, Registry};
use trunk::{Trunk, TrunkConfig, TrunkEvent};

/// This node's membership of the cluster: its registration and trunk.
pub struct ClusterNode {
    /// This node's id.
    pub node_id: String,
    /// Bound trunk address.
    pub trunk_addr: SocketAddr,
    /// The trunk endpoint.
    pub trunk: Trunk,
    registration: Registration,
    events: JoinHandle<()>,
}

/// What the node advertises besides its trunk.
pub struct NodeAddrs {
    /// Bound HTTP address.
    pub http: SocketAddr,
    /// Media UDP addresses as announced to clients.
    pub media: Vec<SocketAddr>,
}

impl ClusterNode {
    /// Binds the trunk and starts registering in Redis (in the background:
    /// an unreachable Redis is retried, and logged, not fatal).
    pub async fn start(
        config: &ClusterConfig,
        metrics: &Metrics,
        addrs: NodeAddrs,
        placement: Arc<Placement>,
    ) -> anyhow::Result<ClusterNode> {
        // The default node id includes the configured trunk port.
        let (trunk, events) = Trunk::bind(
            TrunkConfig {
                node_id: config.node_id_for(config.trunk_listen.port()),
                secret: config.secret.as_bytes().to_vec(),
                listen: config.trunk_listen,
            },
            metrics.clone(),
        )?;
        let trunk_addr = trunk.local_addr()?;
        let node_id = trunk.node_id().to_string();
        let advertise = config.advertise(trunk_addr)?;
        let registry = Arc::new(
            Registry::new(&config.redis_url, config.lease())
                .with_context(|| format!("cluster.redis_url {:?}", config.redis_url))?,
        );
        let registration = Registration::spawn(
            registry,
            metrics.clone(),
            {
                let (id, metrics) = (node_id.clone(), metrics.clone());
                move || NodeRecord {
                    id: id.clone(),
                    trunk: advertise,
                    http: addrs.http,
                    media: addrs.media.clone(),
                    participants: metrics.participants.get().max(0) as u64,
                    rooms: metrics.rooms.get().max(0) as u64,
                }
            },
            move || placement.rooms(),
        );
        let events = tokio::spawn(drain(events));
        info!(node = %node_id, trunk = %trunk_addr, advertise = %advertise, "cluster node started");
        Ok(ClusterNode {
            node_id,
            trunk_addr,
            trunk,
            registration,
            events,
        })
    }

    /// The registration (room membership).
    pub fn registration(&self) -> &Registration {
        &self.registration
    }

    /// Deregisters and closes the trunk.
    pub async fn stop(self) {
        if let Err(e) = self.registration.stop().await {
            warn!("cluster: could not deregister (the entry lapses with its lease): {e}");
        }
        self.trunk.close().await;
        self.events.abort();
    }
}

/// Until the media engine takes trunk events (the next step), they are
/// drained here so the control stream never stalls.
async fn drain(mut events: tokio::sync::mpsc::Receiver<TrunkEvent>) {
    while let Some(event) = events.recv().await {
        match event {
            TrunkEvent::Media { .. } => {}
            other => debug!("trunk event not handled yet: {other:?}"),
        }
    }
}
