//! The mesh: which other nodes this node talks to, and the routing between
//! the trunk and the shards.
//!
//! - **Discovery**: for each room placed on this node's shards, the
//!   registry lists the other nodes holding it (every [`DISCOVER_EVERY`],
//!   and within [`TICK`] of a room's first participant here, when the
//!   registration is also renewed at once). A node that finds another
//!   dials it (the trunk keeps one connection per pair when both do); once
//!   linked, this node sends
//!   `room_sync` for each room they share, once per connection (again after
//!   the peer says `room_left`), and answers a peer's `room_sync` for a room
//!   it holds with its own, so two nodes find each other as soon as one
//!   does. The shard holding the room answers the peer's `room_sync`
//!   (`media/engine/remote.rs`).
//! - **Liveness**: a peer whose trunk closes (QUIC idle timeout, 5 s) or
//!   that the registry has not listed for [`MISSING_FOR`] is down: every
//!   shard drops its participants (`Command::NodeDown`).
//! - **Reads of the registry** run in a task of their own and report back,
//!   one at a time, so a Redis that hangs never holds up this loop.
//! - **Routing**: room messages go to the room's shard (the placement
//!   table), track messages to the shard in the top byte of this node's
//!   track number, media datagrams to the shard that took the track's
//!   `track_published`. What the shards send goes out on the peer's link:
//!   media as datagrams, control in order on its control stream.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::keys::NodeRecord;
use super::registry::Registry;
use super::trunk::wire::Control;
use super::trunk::{PeerLink, Trunk, TrunkEvent};
use crate::media::command::Command;
use crate::media::engine::TrunkOut;
use crate::media::ids::NodeKey;
use crate::media::placement::ShardId;
use crate::media::shards::Shards;

/// How often the node's own rooms are checked for new ones.
const TICK: Duration = Duration::from_millis(250);
/// How often the registry is read for every room shared with other nodes.
const DISCOVER_EVERY: Duration = Duration::from_secs(1);
/// A linked peer the registry has not listed for this long is down: longer
/// than a restarted (empty) Redis takes to be re-populated (every node
/// retries within a third of its lease, ≤ 1.7 s by default), short enough
/// that a node cut off from Redis is dropped within 10 s of its last
/// renewal (lease 5 s + this + one discovery).
const MISSING_FOR: Duration = Duration::from_secs(3);

/// What one read of the registry found.
struct Reading {
    nodes: Vec<NodeRecord>,
    holders: Vec<(String, Vec<String>)>,
}

/// A connected peer node.
struct Peer {
    link: PeerLink,
    /// Its control messages, written in order by one task.
    control: mpsc::UnboundedSender<Control>,
}

/// The running mesh; see the module docs.
pub struct Mesh {
    trunk: Trunk,
    registry: Arc<Registry>,
    shards: Shards,
    peers: HashMap<NodeKey, Peer>,
    /// (peer, room) pairs this node sent `room_sync` for on the current link.
    synced: HashSet<(NodeKey, String)>,
    /// Which shard took each remote track (peer, its number).
    media_routes: HashMap<(NodeKey, u32), ShardId>,
    /// Peers not listed by the registry, since when.
    missing: HashMap<NodeKey, Instant>,
    /// Dials in progress, by node id.
    dialing: Arc<std::sync::Mutex<HashSet<String>>>,
    /// The rooms placed here at the last tick.
    rooms: HashSet<String>,
    /// Rooms to read from the registry at the next read.
    unread: HashSet<String>,
    /// A read of the registry is under way.
    reading: bool,
    /// Where reads report, and where [`Mesh::run`] takes their reports.
    readings: mpsc::Sender<Option<Reading>>,
    results: Option<mpsc::Receiver<Option<Reading>>>,
    /// The nodes of the last read, by id.
    records: HashMap<String, NodeRecord>,
    /// The nodes holding each room here, as last read.
    holders: HashMap<String, Vec<String>>,
    /// Renews this node's registration at once.
    renew: Arc<tokio::sync::Notify>,
    /// When the registry was last read for every room.
    discovered: Instant,
}

impl Mesh {
    /// A mesh over `trunk`, routing to `shards`.
    pub fn new(
        trunk: Trunk,
        registry: Arc<Registry>,
        shards: Shards,
        renew: Arc<tokio::sync::Notify>,
    ) -> Self {
        let (readings, results) = mpsc::channel(1);
        Self {
            trunk,
            registry,
            shards,
            peers: HashMap::new(),
            synced: HashSet::new(),
            media_routes: HashMap::new(),
            missing: HashMap::new(),
            dialing: Arc::default(),
            rooms: HashSet::new(),
            unread: HashSet::new(),
            reading: false,
            readings,
            records: HashMap::new(),
            holders: HashMap::new(),
            results: Some(results),
            renew,
            discovered: Instant::now(),
        }
    }

    /// Runs until both channels close.
    pub async fn run(
        mut self,
        mut events: mpsc::Receiver<TrunkEvent>,
        mut outbox: mpsc::Receiver<TrunkOut>,
    ) {
        let Some(mut readings) = self.results.take() else {
            return;
        };
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                event = events.recv() => match event {
                    Some(event) => self.on_event(event).await,
                    None => return,
                },
                out = outbox.recv() => match out {
                    Some(out) => self.send(out),
                    None => return,
                },
                reading = readings.recv() => match reading {
                    Some(reading) => self.apply(reading).await,
                    None => return,
                },
                _ = tick.tick() => self.tick(),
            }
        }
    }

    /// Something a shard sends to another node.
    fn send(&mut self, out: TrunkOut) {
        match out {
            TrunkOut::Media { node, datagram } => {
                if let Some(peer) = self.peers.get(&node) {
                    // Counted by the link when it fails.
                    let _ = peer.link.send_encoded(datagram);
                }
            }
            TrunkOut::Control { node, message } => {
                if let Control::RoomLeft { room } = &message {
                    // Our room closed: if it opens again, ask again.
                    self.synced.remove(&(node, room.clone()));
                }
                if let Some(peer) = self.peers.get(&node) {
                    let _ = peer.control.send(message);
                }
            }
        }
    }

    async fn on_event(&mut self, event: TrunkEvent) {
        match event {
            TrunkEvent::Media { peer, datagram } => {
                let Some(&shard) = self.media_routes.get(&(peer, datagram.track)) else {
                    return;
                };
                let node = peer;
                self.shards
                    .try_send(shard, Command::TrunkMedia { node, datagram });
            }
            TrunkEvent::Control { peer, message } => {
                let Some(link) = self.trunk.peer(&peer) else {
                    return;
                };
                self.route_control(link.key(), message).await;
            }
            TrunkEvent::PeerUp { link, .. } => {
                let key = link.key();
                match self.peers.get(&key) {
                    Some(known) if known.link.same_connection(&link) => return,
                    // The peer dialled again (it lost the old link): what
                    // it had here is gone with it, as after a `PeerDown`.
                    Some(_) => self.forget(key).await,
                    None => {}
                }
                let (control, mut queue) = mpsc::unbounded_channel::<Control>();
                let writer = link.clone();
                tokio::spawn(async move {
                    while let Some(message) = queue.recv().await {
                        if let Err(e) = writer.send_control(&message).await {
                            debug!(peer = %writer.peer(), "trunk control not sent: {e}");
                            return;
                        }
                    }
                });
                self.peers.insert(key, Peer { link, control });
                self.link_and_sync();
            }
            TrunkEvent::PeerDown { peer, link, reason } => {
                // Only the link in use: a replaced one was handled at the
                // `PeerUp` of its successor.
                let current = self.peers.get(&link.key());
                if !current.is_some_and(|p| p.link.same_connection(&link)) {
                    return;
                }
                info!(%peer, %reason, "cluster node down: its participants leave");
                self.forget(link.key()).await;
            }
        }
    }

    /// Drops everything of a peer and tells every shard.
    async fn forget(&mut self, key: NodeKey) {
        if let Some(peer) = self.peers.remove(&key) {
            peer.link.close();
        }
        self.synced.retain(|(n, _)| *n != key);
        self.media_routes.retain(|(n, _), _| *n != key);
        self.missing.remove(&key);
        self.shards
            .broadcast(|| Command::NodeDown { node: key })
            .await;
    }

    async fn route_control(&mut self, node: NodeKey, message: Control) {
        let room = match &message {
            Control::Hello { .. } => return,
            Control::SubscribeTrack { track, .. }
            | Control::UnsubscribeTrack { track }
            | Control::KeyframeRequest { track, .. } => {
                let shard = (*track >> 24) as ShardId;
                let _ = self
                    .shards
                    .send(shard, Command::TrunkControl { node, message })
                    .await;
                return;
            }
            Control::RoomSync { room }
            | Control::RoomLeft { room }
            | Control::TrackPublished { room, .. }
            | Control::TrackUnpublished { room, .. }
            | Control::TrackMuted { room, .. }
            | Control::ParticipantJoined { room, .. }
            | Control::ParticipantLeft { room, .. }
            | Control::Relay { room, .. } => room.clone(),
        };
        match &message {
            // The peer holds the room: if it is held here too and the peer
            // was not asked yet, ask now rather than at the next discovery.
            Control::RoomSync { room }
                if self.shards.placement().shard_of(room).is_some()
                    && self.synced.insert((node, room.clone())) =>
            {
                if let Some(peer) = self.peers.get(&node) {
                    let _ = peer.control.send(Control::RoomSync { room: room.clone() });
                }
            }
            Control::RoomLeft { room } => {
                // Ask again if it holds the room again.
                self.synced.remove(&(node, room.clone()));
            }
            Control::TrackPublished { track, .. } => {
                if let Some(shard) = self.shards.placement().shard_of(&room) {
                    self.media_routes.insert((node, *track), shard);
                }
            }
            Control::TrackUnpublished { track, .. } => {
                self.media_routes.remove(&(node, *track));
            }
            _ => {}
        }
        match self.shards.placement().shard_of(&room) {
            Some(shard) => {
                let _ = self
                    .shards
                    .send(shard, Command::TrunkControl { node, message })
                    .await;
            }
            // Nothing of the room here: the peer should not wait for us.
            None if matches!(message, Control::RoomSync { .. }) => {
                if let Some(peer) = self.peers.get(&node) {
                    let _ = peer.control.send(Control::RoomLeft { room });
                }
            }
            None => {}
        }
    }

    /// Reads the registry for new rooms now, for all every
    /// [`DISCOVER_EVERY`].
    fn tick(&mut self) {
        let rooms: HashSet<String> = self.shards.placement().rooms().into_iter().collect();
        let new: Vec<String> = rooms.difference(&self.rooms).cloned().collect();
        self.synced.retain(|(_, room)| rooms.contains(room));
        self.holders.retain(|room, _| rooms.contains(room));
        self.rooms = rooms;
        if !new.is_empty() {
            self.renew.notify_one();
        }
        self.unread.extend(new);
        if self.discovered.elapsed() >= DISCOVER_EVERY {
            self.unread.extend(self.rooms.iter().cloned());
        }
        self.read();
    }

    /// Starts a read of the registry for the rooms not read yet, unless
    /// one is under way. The reads run in a task of their own: a Redis that
    /// hangs (a partition rather than a refusal) must never hold up the
    /// media and control this loop routes.
    fn read(&mut self) {
        if self.reading || self.unread.is_empty() {
            return;
        }
        self.reading = true;
        self.discovered = Instant::now();
        let rooms: Vec<String> = self.unread.drain().collect();
        let (registry, done) = (self.registry.clone(), self.readings.clone());
        tokio::spawn(async move {
            let reading = async {
                let nodes = registry.nodes().await?;
                let ids = registry.rooms_nodes(&rooms).await?;
                let holders = rooms.into_iter().zip(ids).collect();
                Ok::<_, super::registry::RegistryError>(Reading { nodes, holders })
            };
            let reading = reading.await.map_err(|e| debug!("cluster discovery: {e}"));
            let _ = done.send(reading.ok()).await;
        });
    }

    /// A read of the registry came back (`None`: it failed; the rooms are
    /// read again at the next full read).
    async fn apply(&mut self, reading: Option<Reading>) {
        self.reading = false;
        let Some(reading) = reading else {
            return;
        };
        self.records = reading
            .nodes
            .into_iter()
            .map(|n| (n.id.clone(), n))
            .collect();
        self.check_missing().await;
        for (room, ids) in reading.holders {
            if self.rooms.contains(&room) {
                self.holders.insert(room, ids);
            }
        }
        self.link_and_sync();
        // Rooms that appeared while this read was under way.
        self.read();
    }

    /// From the last reads: dials the nodes sharing a room that are not
    /// linked, and asks linked ones for the rooms not asked for yet.
    fn link_and_sync(&mut self) {
        let me = self.trunk.node_id();
        let mut dial = Vec::new();
        for (room, ids) in &self.holders {
            for id in ids.iter().filter(|id| id.as_str() != me) {
                match self.trunk.peer(id) {
                    Some(link) => {
                        let key = link.key();
                        // Without an entry its PeerUp is on the way.
                        let Some(peer) = self.peers.get(&key) else {
                            continue;
                        };
                        if self.synced.insert((key, room.clone())) {
                            let _ = peer.control.send(Control::RoomSync { room: room.clone() });
                        }
                    }
                    // Whichever node finds the other first dials: if both
                    // do at once, the trunk keeps one connection per pair.
                    None => {
                        if let Some(record) = self.records.get(id) {
                            dial.push((id.clone(), record.trunk));
                        }
                    }
                }
            }
        }
        for (id, addr) in dial {
            self.dial(&id, addr);
        }
    }

    /// Closes links to peers the registry has not listed for [`MISSING_FOR`].
    async fn check_missing(&mut self) {
        let now = Instant::now();
        let mut down = Vec::new();
        for (&key, peer) in &self.peers {
            if self.records.contains_key(peer.link.peer()) {
                self.missing.remove(&key);
                continue;
            }
            let since = *self.missing.entry(key).or_insert(now);
            if now.duration_since(since) >= MISSING_FOR {
                warn!(peer = %peer.link.peer(), "cluster node no longer registered: treating it as down");
                down.push(key);
            }
        }
        for key in down {
            self.forget(key).await;
        }
    }

    /// Dials `id` in the background (its `PeerUp` arrives as an event).
    fn dial(&self, id: &str, addr: SocketAddr) {
        {
            let mut dialing = self.dialing.lock().unwrap_or_else(|e| e.into_inner());
            if !dialing.insert(id.to_string()) {
                return;
            }
        }
        let (trunk, dialing, id) = (self.trunk.clone(), self.dialing.clone(), id.to_string());
        tokio::spawn(async move {
            if let Err(e) = trunk.connect(&id, addr).await {
                warn!(peer = %id, %addr, "cluster: cannot reach node: {e}");
            }
            dialing
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&id);
        });
    }
}
