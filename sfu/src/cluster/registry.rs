//! The cluster registry in Redis: nodes register with a lease they renew,
//! record the rooms they hold participants of, and list each other. The key
//! layout and every expiry decision are in `cluster/keys.rs`; this file only
//! talks to Redis.
//!
//! Needs Redis 7.0 or later (`PEXPIRE … NX/GT`).

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::AsyncConnectionConfig;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use super::keys::{self, NodeRecord};
use crate::metrics::Metrics;

/// Time allowed for connecting to Redis and for each reply.
const REDIS_TIMEOUT: Duration = Duration::from_secs(2);

/// Why a registry operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// Redis refused, was unreachable or timed out.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// A reply of an unexpected shape.
    #[error("unexpected redis reply to {0}")]
    Reply(&'static str),
}

/// A client of the registry. Reconnects lazily: after a failed operation
/// the next one dials Redis again.
pub struct Registry {
    client: redis::Client,
    conn: tokio::sync::Mutex<Option<MultiplexedConnection>>,
    lease: Duration,
}

impl Registry {
    /// A client for `url` (nothing is contacted yet) writing leases of `lease`.
    pub fn new(url: &str, lease: Duration) -> Result<Registry, RegistryError> {
        Ok(Registry {
            client: redis::Client::open(url)?,
            conn: tokio::sync::Mutex::new(None),
            lease,
        })
    }

    /// The lease length.
    pub fn lease(&self) -> Duration {
        self.lease
    }

    async fn connection(&self) -> Result<MultiplexedConnection, RegistryError> {
        let mut slot = self.conn.lock().await;
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(REDIS_TIMEOUT))
            .set_response_timeout(Some(REDIS_TIMEOUT));
        let c = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        *slot = Some(c.clone());
        Ok(c)
    }

    /// Runs `op` on the connection; a failure drops the connection so the
    /// next call reconnects.
    async fn run<T, F, Fut>(&self, op: F) -> Result<T, RegistryError>
    where
        F: FnOnce(MultiplexedConnection) -> Fut,
        Fut: std::future::Future<Output = Result<T, RegistryError>>,
    {
        let conn = self.connection().await?;
        let result = op(conn).await;
        if result.is_err() {
            *self.conn.lock().await = None;
        }
        result
    }

    /// Now on the Redis server's clock (ms).
    async fn now_ms(conn: &mut MultiplexedConnection) -> Result<u64, RegistryError> {
        let (s, us): (u64, u64) = redis::cmd("TIME").query_async(conn).await?;
        Ok(keys::redis_now_ms(s, us))
    }

    /// Writes (or renews) `record` and its membership of `rooms` for one lease.
    pub async fn register(
        &self,
        record: &NodeRecord,
        rooms: &BTreeSet<String>,
    ) -> Result<(), RegistryError> {
        let lease = self.lease;
        self.run(|mut c| async move {
            let now = Self::now_ms(&mut c).await?;
            let end = keys::lease_end_ms(now, lease);
            let lease_ms = u64::try_from(lease.as_millis()).unwrap_or(u64::MAX);
            let mut p = redis::pipe();
            p.atomic();
            p.cmd("SET")
                .arg(keys::node_key(&record.id))
                .arg(record.encode())
                .arg("PX")
                .arg(lease_ms)
                .ignore();
            let mut scored = vec![keys::nodes_key()];
            scored.extend(rooms.iter().map(|r| keys::room_key(r)));
            for key in &scored {
                p.cmd("ZADD").arg(key).arg(end).arg(&record.id).ignore();
                // NX sets a first expiry, GT only lengthens it: a node with a
                // shorter lease never cuts another's entries short.
                p.cmd("PEXPIRE").arg(key).arg(lease_ms).arg("NX").ignore();
                p.cmd("PEXPIRE").arg(key).arg(lease_ms).arg("GT").ignore();
                p.cmd("ZREMRANGEBYSCORE")
                    .arg(key)
                    .arg("-inf")
                    .arg(now)
                    .ignore();
            }
            p.query_async::<()>(&mut c).await?;
            Ok(())
        })
        .await
    }

    /// Removes `node_id` and its room memberships at once (clean shutdown).
    pub async fn deregister(
        &self,
        node_id: &str,
        rooms: &BTreeSet<String>,
    ) -> Result<(), RegistryError> {
        self.run(|mut c| async move {
            let mut p = redis::pipe();
            p.atomic();
            p.cmd("DEL").arg(keys::node_key(node_id)).ignore();
            p.cmd("ZREM").arg(keys::nodes_key()).arg(node_id).ignore();
            for room in rooms {
                p.cmd("ZREM")
                    .arg(keys::room_key(room))
                    .arg(node_id)
                    .ignore();
            }
            p.query_async::<()>(&mut c).await?;
            Ok(())
        })
        .await
    }

    /// Removes `node_id` from `room`'s nodes.
    pub async fn leave_room(&self, node_id: &str, room: &str) -> Result<(), RegistryError> {
        self.run(|mut c| async move {
            redis::cmd("ZREM")
                .arg(keys::room_key(room))
                .arg(node_id)
                .query_async::<()>(&mut c)
                .await?;
            Ok(())
        })
        .await
    }

    /// The live nodes' records, sorted by id.
    pub async fn nodes(&self) -> Result<Vec<NodeRecord>, RegistryError> {
        self.run(|mut c| async move {
            let ids = Self::live_members(&mut c, &keys::nodes_key()).await?;
            if ids.is_empty() {
                return Ok(Vec::new());
            }
            let node_keys: Vec<String> = ids.iter().map(|id| keys::node_key(id)).collect();
            let texts: Vec<Option<String>> = redis::cmd("MGET")
                .arg(&node_keys)
                .query_async(&mut c)
                .await?;
            let mut records: Vec<NodeRecord> = texts
                .iter()
                .flatten()
                .filter_map(|t| NodeRecord::decode(t))
                .collect();
            records.sort_by(|a, b| a.id.cmp(&b.id));
            Ok(records)
        })
        .await
    }

    /// Ids of the live nodes holding participants of `room`, sorted.
    pub async fn room_nodes(&self, room: &str) -> Result<Vec<String>, RegistryError> {
        let mut all = self.rooms_nodes(std::slice::from_ref(&room)).await?;
        Ok(all.pop().unwrap_or_default())
    }

    /// [`Self::room_nodes`] of each of `rooms`, in their order, in one
    /// round trip per [`ROOMS_PER_PIPELINE`] rooms rather than one per room:
    /// a node with a thousand rooms reads them all every second.
    pub async fn rooms_nodes(
        &self,
        rooms: &[impl AsRef<str>],
    ) -> Result<Vec<Vec<String>>, RegistryError> {
        if rooms.is_empty() {
            return Ok(Vec::new());
        }
        self.run(|mut c| async move {
            let now = Self::now_ms(&mut c).await?;
            let mut all = Vec::with_capacity(rooms.len());
            for chunk in rooms.chunks(ROOMS_PER_PIPELINE) {
                let mut p = redis::pipe();
                for room in chunk {
                    p.cmd("ZRANGE")
                        .arg(keys::room_key(room.as_ref()))
                        .arg(0)
                        .arg(-1)
                        .arg("WITHSCORES");
                }
                let scored: Vec<Vec<(String, f64)>> = p.query_async(&mut c).await?;
                all.extend(scored.into_iter().map(|s| live_ids(s, now)));
            }
            Ok(all)
        })
        .await
    }

    async fn live_members(
        c: &mut MultiplexedConnection,
        key: &str,
    ) -> Result<Vec<String>, RegistryError> {
        let now = Self::now_ms(c).await?;
        let scored: Vec<(String, f64)> = redis::cmd("ZRANGE")
            .arg(key)
            .arg(0)
            .arg(-1)
            .arg("WITHSCORES")
            .query_async(c)
            .await?;
        Ok(live_ids(scored, now))
    }
}

/// Rooms read per pipelined request (bounds one reply's size).
pub const ROOMS_PER_PIPELINE: usize = 256;

/// The members of a lease set whose lease has not ended at `now`, sorted.
fn live_ids(scored: Vec<(String, f64)>, now: u64) -> Vec<String> {
    let mut ids: Vec<String> = scored
        .into_iter()
        .filter(|(_, end)| keys::is_live(*end as u64, now))
        .map(|(id, _)| id)
        .collect();
    ids.sort();
    ids
}

/// A node's registration kept alive in the background: renewed every third
/// of the lease; after a failure retried with bounded backoff on a new
/// connection (so a restarted Redis gets the node back within a lease).
/// [`Registration::stop`] deregisters; dropping it only stops renewing (the
/// entry then lapses, as after a crash).
pub struct Registration {
    registry: Arc<Registry>,
    node_id: String,
    rooms: Arc<Mutex<BTreeSet<String>>>,
    stop: watch::Sender<bool>,
    renew: Arc<tokio::sync::Notify>,
    task: Option<JoinHandle<()>>,
}

impl Registration {
    /// Starts registering; `record` is called before each renewal so the
    /// load it reports is current, and `placed` gives the rooms the node
    /// holds now (besides those held with [`Registration::hold_room`]): a
    /// room it no longer holds drops out within one lease.
    pub fn spawn(
        registry: Arc<Registry>,
        metrics: Metrics,
        record: impl Fn() -> NodeRecord + Send + Sync + 'static,
        placed: impl Fn() -> Vec<String> + Send + Sync + 'static,
    ) -> Registration {
        let rooms = Arc::new(Mutex::new(BTreeSet::new()));
        let (stop, mut stopped) = watch::channel(false);
        let renew = Arc::new(tokio::sync::Notify::new());
        let node_id = record().id;
        let task = tokio::spawn({
            let registry = registry.clone();
            let rooms = rooms.clone();
            let renew = renew.clone();
            async move {
                let lease = registry.lease();
                let mut failures = 0u32;
                let mut wait = Duration::ZERO;
                loop {
                    tokio::select! {
                        _ = stopped.changed() => return,
                        _ = tokio::time::sleep(wait) => {}
                        _ = renew.notified() => {}
                    }
                    let mut held = lock(&rooms).clone();
                    held.extend(placed());
                    let rec = record();
                    match registry.register(&rec, &held).await {
                        Ok(()) => {
                            if failures > 0 {
                                info!(node = %rec.id, "cluster registry reachable again: re-registered");
                            }
                            metrics.cluster_registered.set(1);
                            failures = 0;
                            wait = keys::renew_every(lease);
                        }
                        Err(e) => {
                            metrics.cluster_registry_errors.inc();
                            metrics.cluster_registered.set(0);
                            if failures == 0 {
                                warn!(node = %rec.id, "cluster registry: {e}; retrying");
                            }
                            wait = keys::reconnect_backoff(failures, lease);
                            failures = failures.saturating_add(1);
                        }
                    }
                }
            }
        });
        Registration {
            registry,
            node_id,
            rooms,
            stop,
            renew,
            task: Some(task),
        }
    }

    /// Renews at once rather than at the next third of a lease (a room
    /// newly held is then listed for the other nodes right away).
    pub fn renewer(&self) -> Arc<tokio::sync::Notify> {
        self.renew.clone()
    }

    /// The registry this registration writes to.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// Records that this node holds participants of `room` (kept with the
    /// lease from the next renewal on).
    pub fn hold_room(&self, room: &str) {
        lock(&self.rooms).insert(room.to_string());
    }

    /// This node no longer holds `room`: removed now (best effort) and no
    /// longer renewed.
    pub async fn release_room(&self, room: &str) -> Result<(), RegistryError> {
        lock(&self.rooms).remove(room);
        self.registry.leave_room(&self.node_id, room).await
    }

    /// Stops renewing and removes the node's entries.
    pub async fn stop(mut self) -> Result<(), RegistryError> {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        let held = lock(&self.rooms).clone();
        self.registry.deregister(&self.node_id, &held).await
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A set updated by single inserts/removes stays consistent when poisoned.
    m.lock().unwrap_or_else(|e| e.into_inner())
}
