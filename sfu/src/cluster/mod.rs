//! One room across several SFU nodes (docs/cluster.md): the Redis
//! [`registry`] (nodes, their load and rooms, with leases), the
//! authenticated QUIC [`trunk`] between nodes, and the [`mesh`] that finds
//! the nodes sharing a room, links them and routes between the trunk and
//! the shards (whose engines hold the other nodes' participants and
//! tracks, `media/engine/remote.rs`).

pub mod keys;
pub mod mesh;
pub mod node_id;
pub mod registry;
pub mod trunk;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::config::ClusterConfig;
use crate::media::engine::TrunkOut;
use crate::media::shards::Shards;
use crate::metrics::Metrics;
use keys::NodeRecord;
use mesh::Mesh;
use registry::{Registration, Registry};
use trunk::{Trunk, TrunkConfig};

/// This node's membership of the cluster: its registration and trunk.
pub struct ClusterNode {
    /// This node's id.
    pub node_id: String,
    /// Bound trunk address.
    pub trunk_addr: SocketAddr,
    /// The trunk endpoint.
    pub trunk: Trunk,
    registration: Registration,
    mesh: JoinHandle<()>,
}

/// What the node advertises besides its trunk.
pub struct NodeAddrs {
    /// Bound HTTP address.
    pub http: SocketAddr,
    /// Media UDP addresses as announced to clients.
    pub media: Vec<SocketAddr>,
}

impl ClusterNode {
    /// Binds the trunk, starts registering in Redis (in the background:
    /// an unreachable Redis is retried, and logged, not fatal) and runs the
    /// mesh between the trunk and `shards`, which send on `outbox`.
    pub async fn start(
        config: &ClusterConfig,
        metrics: &Metrics,
        addrs: NodeAddrs,
        shards: Shards,
        outbox: tokio::sync::mpsc::Receiver<TrunkOut>,
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
        let placement = shards.placement_arc();
        let registration = Registration::spawn(
            registry.clone(),
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
        let mesh = Mesh::new(trunk.clone(), registry, shards, registration.renewer());
        let mesh = tokio::spawn(mesh.run(events, outbox));
        info!(node = %node_id, trunk = %trunk_addr, advertise = %advertise, "cluster node started");
        Ok(ClusterNode {
            node_id,
            trunk_addr,
            trunk,
            registration,
            mesh,
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
        self.mesh.abort();
    }
}
