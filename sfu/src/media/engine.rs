//! The engine: rooms plus their peer connections, as one sans-IO state
//! machine. The shell feeds it datagrams, signaling and time, and drains
//! datagrams to send, signaling to deliver and the next wake-up time.
//!
//! One engine owns whole rooms (a peer never refers to another room): each
//! shard (`media/shard.rs`) runs one engine on its own thread with its own
//! sockets.
//!
//! This file is the entry: inputs, outputs, demultiplexing and driving
//! str0m. The concerns behind it are one file each: `forward.rs` (the
//! packet path), `publish.rs`, `subscribe.rs`, `sessions.rs` (WHIP/WHEP),
//! `membership.rs` (participants and peers coming and going), `adapt.rs`
//! (subscribers' layers), `dynacast.rs` (publishers' layers) and
//! `remote.rs` (other nodes' participants and tracks, over the trunk).

mod adapt;
mod dynacast;
mod forward;
mod membership;
mod publish;
mod remote;
mod sessions;
mod subscribe;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::distr::{Alphanumeric, SampleString};
use str0m::bwe::BweKind;
use str0m::change::SdpOffer;
use str0m::net::{Protocol, Receive, Transmit};
use str0m::{Event, Input, Output, RtcError};
use tracing::{debug, info, warn};

use super::allocator::Tile;
use super::arena::Arena;
use super::down_track::DownTrack;
use super::ids::{DownTrackTag, NodeKey, PeerKey, PeerTag, ReceiverKey, ReceiverTag};
use super::peer::{LocalAddrs, Peer, Role};
use super::receiver::{Origin, Receiver};
use super::rooms::Rooms;
use super::timers::Timers;
use crate::auth::Grants;
use crate::cluster::trunk::wire::{Control, RelayTo};
use crate::config::{IceServer, MediaConfig};
use crate::metrics::Metrics;
use crate::room::{Access, ConnId, Delivery, Participant};
use crate::signal::protocol::{
    ClientMessage, ErrorCode, RelayTarget, ServerMessage, PROTOCOL_VERSION,
};

/// Something for the shell to do with a signaling connection.
#[derive(Debug)]
pub enum Signal {
    /// Send this message.
    Message(ConnId, ServerMessage),
    /// Close the connection (after sending what was queued).
    Close(ConnId),
    /// The room's last participant left; the engine no longer holds it.
    RoomClosed(String),
}

/// Something for the cluster to send to another node (docs/cluster.md).
#[derive(Debug)]
pub enum TrunkOut {
    /// An encoded media datagram (header and RTP packet).
    Media {
        /// To this node.
        node: NodeKey,
        /// The datagram, shared between the nodes it goes to.
        datagram: Bytes,
    },
    /// A control message, in order after those queued before it.
    Control {
        /// To this node.
        node: NodeKey,
        /// The message.
        message: Control,
    },
}

/// Why a WHIP/WHEP request failed.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The SDP could not be parsed or applied.
    #[error("bad SDP: {0}")]
    BadSdp(String),
    /// The token does not allow it.
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// No such session or participant.
    #[error("not found")]
    NotFound,
}

/// Engine settings derived from the config.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Media settings.
    pub media: MediaConfig,
    /// Candidate addresses.
    pub local: LocalAddrs,
    /// Handed to clients.
    pub ice_servers: Vec<IceServer>,
    /// The embedded TURN relay's credentials, minted per participant.
    pub turn: Option<crate::turn::TurnCredentials>,
    /// Maximum relay payload size.
    pub max_relay_bytes: usize,
    /// This engine's shard: the prefix of its WHIP/WHEP session ids, so a
    /// `/sessions/{id}` request finds its shard without a table.
    pub shard: usize,
}

/// Rooms, participants and peers; see the module docs.
pub struct Engine {
    config: EngineConfig,
    metrics: Metrics,
    rooms: Rooms,
    /// Peer connections (one str0m `Rtc` each).
    peers: Arena<PeerTag, Peer>,
    /// Published tracks' media side.
    receivers: Arena<ReceiverTag, Receiver>,
    /// Subscribers' sending m-lines.
    down_tracks: Arena<DownTrackTag, DownTrack>,
    /// Demultiplexing of incoming datagrams by remote address.
    addrs: HashMap<(Protocol, SocketAddr), PeerKey>,
    /// Signaling connection → (room, participant).
    conns: HashMap<ConnId, (String, String)>,
    /// WHIP/WHEP session → (room, participant).
    sessions: HashMap<String, (String, String)>,
    /// Peers whose `Rtc` changed and needs `poll_output` draining.
    dirty: Vec<PeerKey>,
    /// When each peer next needs a str0m timeout or a liveness check.
    timers: Timers<PeerKey>,
    transmits: VecDeque<Transmit>,
    /// Datagrams queued since `sfu_datagrams_out_total` was last updated.
    unreported_out: u64,
    signals: VecDeque<Signal>,
    /// Media and control for other nodes.
    trunk_out: VecDeque<TrunkOut>,
    /// Other nodes' tracks in this shard's rooms, by (node, its number).
    remote: HashMap<(NodeKey, u32), remote::RemoteTrack>,
    /// This shard's tracks by their trunk number.
    trunk_numbers: HashMap<u32, ReceiverKey>,
    /// The last trunk number given.
    trunk_counter: u32,
    /// When the layers of other nodes' tracks are next reviewed.
    next_remote_review: Instant,
    /// Corrupt one payload byte per forwarded packet (test-only switch that
    /// proves end-to-end integrity checks can fail).
    corrupt_payloads: bool,
    /// What this engine last added to the shared gauges (several shards
    /// share them, so each adds its own change instead of setting a value).
    reported: Gauges,
}

/// Counts behind the shared gauges.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Gauges {
    rooms: i64,
    participants: i64,
    tracks: i64,
    subscriptions: i64,
    peers: i64,
    paused_video: i64,
    publisher_layers_off: i64,
}

/// The parsed offer, if the token allows `what` (refused before parsing).
fn permitted_offer(allowed: bool, what: &str, sdp: &str) -> Result<SdpOffer, SessionError> {
    if !allowed {
        return Err(SessionError::Forbidden(format!(
            "token does not allow {what}"
        )));
    }
    SdpOffer::from_sdp_string(sdp).map_err(|e| SessionError::BadSdp(e.to_string()))
}

fn random_id(prefix: &str) -> String {
    format!(
        "{prefix}{}",
        Alphanumeric.sample_string(&mut rand::rng(), 10)
    )
}

impl Engine {
    /// An empty engine.
    pub fn new(config: EngineConfig, metrics: Metrics) -> Self {
        let corrupt_payloads = config.media.test_corrupt_payload;
        if corrupt_payloads {
            warn!(
                "TEST ONLY: media.test_corrupt_payload is on; every forwarded payload is corrupted"
            );
        }
        Self {
            config,
            metrics,
            rooms: Rooms::default(),
            peers: Arena::default(),
            receivers: Arena::default(),
            down_tracks: Arena::default(),
            addrs: HashMap::new(),
            conns: HashMap::new(),
            sessions: HashMap::new(),
            dirty: Vec::new(),
            timers: Timers::default(),
            transmits: VecDeque::new(),
            unreported_out: 0,
            signals: VecDeque::new(),
            trunk_out: VecDeque::new(),
            remote: HashMap::new(),
            trunk_numbers: HashMap::new(),
            trunk_counter: 0,
            next_remote_review: Instant::now(),
            corrupt_payloads,
            reported: Gauges::default(),
        }
    }

    /// Whether this engine holds `room`.
    pub fn has_room(&self, room: &str) -> bool {
        self.rooms.contains_key(room)
    }

    /// Participants in this engine's rooms.
    pub fn participants(&self) -> usize {
        self.reported.participants as usize
    }

    /// Test-only: flip a byte of every forwarded payload.
    pub fn set_corrupt_payloads(&mut self, on: bool) {
        self.corrupt_payloads = on;
    }

    // ------------------------------------------------------------------
    // Outputs
    // ------------------------------------------------------------------

    /// Next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        let t = self.transmits.pop_front();
        if t.is_none() && self.unreported_out > 0 {
            // One shared-counter update per flush, not per datagram.
            self.metrics.datagrams_out.inc_by(self.unreported_out);
            self.unreported_out = 0;
        }
        t
    }

    /// Next signaling action.
    pub fn poll_signal(&mut self) -> Option<Signal> {
        self.signals.pop_front()
    }

    /// When the engine next needs `handle_timeout`.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next()
    }

    // ------------------------------------------------------------------
    // Signaling input
    // ------------------------------------------------------------------

    /// A client joined over signaling connection `conn` with verified grants.
    pub fn join(&mut self, conn: ConnId, grants: Grants, auto_subscribe: bool, now: Instant) {
        let room_name = grants.room.clone();
        let ice_servers = self.ice_servers(&grants.identity);
        self.replace_identity(&room_name, &grants.identity, "", now);
        let id = random_id("PA_");
        let mut participant = Participant::new(id.clone(), grants, Access::Signaling(conn), now);
        participant.auto_subscribe = auto_subscribe;
        let (_, room) = self.rooms.get_or_create(&room_name);
        let deliveries = room.join(participant);
        let Some(me) = room.info(&id) else { return };
        self.tell_nodes(&room_name, || Control::ParticipantJoined {
            room: room_name.clone(),
            participant: me.clone(),
        });
        let Some(room) = self.rooms.get(&room_name) else {
            return;
        };
        let joined = ServerMessage::Joined {
            version: PROTOCOL_VERSION,
            room: room_name.clone(),
            participant: me,
            participants: room.others(&id),
            ice_servers,
        };
        self.signals.push_back(Signal::Message(conn, joined));
        self.deliver(deliveries);
        self.conns.insert(conn, (room_name.clone(), id.clone()));
        info!(room = %room_name, participant = %id, "joined");
        self.update_subscriber(&room_name, &id, now);
        self.update_gauges();
        self.drive(now);
    }

    /// A message from a joined client.
    pub fn handle_client(&mut self, conn: ConnId, msg: ClientMessage, now: Instant) {
        let Some((room, pid)) = self.conns.get(&conn).cloned() else {
            self.error(conn, ErrorCode::NotJoined, "send join first");
            return;
        };
        match msg {
            ClientMessage::Join { .. } => {
                self.error(
                    conn,
                    ErrorCode::AlreadyJoined,
                    "this connection already joined",
                );
            }
            ClientMessage::PublishOffer { sdp, tracks } => {
                match self.publish_offer(&room, &pid, &sdp, &tracks, now) {
                    Ok(answer) => self.signals.push_back(Signal::Message(
                        conn,
                        ServerMessage::PublishAnswer { sdp: answer },
                    )),
                    Err(SessionError::Forbidden(m)) => self.error(conn, ErrorCode::Forbidden, m),
                    Err(e) => self.error(conn, ErrorCode::BadSdp, e.to_string()),
                }
            }
            ClientMessage::SubscribeAnswer { sdp } => {
                self.subscribe_answer(conn, &room, &pid, &sdp, now)
            }
            ClientMessage::Subscribe { track_ids } => {
                self.set_wanted(conn, &room, &pid, &track_ids, true, now)
            }
            ClientMessage::Unsubscribe { track_ids } => {
                self.set_wanted(conn, &room, &pid, &track_ids, false, now)
            }
            ClientMessage::Mute { track_id, muted } => {
                let result = self
                    .rooms
                    .get_mut(&room)
                    .and_then(|r| r.set_muted(&pid, &track_id, muted));
                match result {
                    Some(deliveries) => {
                        self.deliver(deliveries);
                        let number = self.rooms.get(&room).and_then(|r| {
                            let t = r.tracks.get(&track_id)?;
                            Some(self.receivers.get(t.receiver)?.trunk_number)
                        });
                        if let Some(track) = number {
                            self.tell_nodes(&room, || Control::TrackMuted {
                                room: room.clone(),
                                track,
                                muted,
                            });
                        }
                    }
                    None => self.error(
                        conn,
                        ErrorCode::UnknownTrack,
                        format!("you publish no track {track_id:?}"),
                    ),
                }
            }
            ClientMessage::TrackSettings {
                track_id,
                visible,
                width,
                height,
            } => {
                let size = (width > 0 && height > 0).then_some((width, height));
                let tile = Tile { visible, size };
                self.set_tile(&room, &pid, &track_id, tile, now);
            }
            ClientMessage::Relay { to, payload } => {
                if payload.get().len() > self.config.max_relay_bytes {
                    self.error(
                        conn,
                        ErrorCode::MessageTooLarge,
                        format!("relay payload over {} bytes", self.config.max_relay_bytes),
                    );
                    return;
                }
                if let Some(r) = self.rooms.get(&room) {
                    let deliveries = r.relay(&pid, &to, &payload);
                    self.deliver(deliveries);
                    let to = match to {
                        RelayTarget::Everyone => RelayTo::Everyone,
                        RelayTarget::Participants(ids) => RelayTo::Participants(ids),
                    };
                    self.tell_nodes(&room, || Control::Relay {
                        room: room.clone(),
                        from: pid.clone(),
                        to: to.clone(),
                        payload: payload.get().to_string(),
                    });
                }
            }
            ClientMessage::Ping => self
                .signals
                .push_back(Signal::Message(conn, ServerMessage::Pong)),
            ClientMessage::Leave => {
                self.remove_participant(&room, &pid, now);
                self.signals.push_back(Signal::Close(conn));
            }
        }
        self.drive(now);
    }

    /// The signaling connection closed.
    pub fn disconnect(&mut self, conn: ConnId, now: Instant) {
        if let Some((room, pid)) = self.conns.get(&conn).cloned() {
            self.remove_participant(&room, &pid, now);
            self.drive(now);
        }
    }

    /// Sends an error to `conn` and counts it.
    pub fn error(&mut self, conn: ConnId, code: ErrorCode, message: impl Into<String>) {
        self.metrics
            .signaling_errors
            .with_label_values(&[code.as_str()])
            .inc();
        self.signals
            .push_back(Signal::Message(conn, ServerMessage::error(code, message)));
        if code.is_fatal() {
            self.signals.push_back(Signal::Close(conn));
        }
    }

    /// The configured ICE servers plus the embedded relay with fresh
    /// credentials for `identity`.
    pub fn ice_servers(&self, identity: &str) -> Vec<IceServer> {
        crate::turn::ice_servers(
            &self.config.ice_servers,
            self.config.turn.as_ref(),
            identity,
        )
    }

    // ------------------------------------------------------------------
    // Network input
    // ------------------------------------------------------------------

    /// A datagram (or RFC 4571 frame) arrived from `source`.
    pub fn handle_receive(
        &mut self,
        now: Instant,
        proto: Protocol,
        source: SocketAddr,
        data: &[u8],
    ) {
        self.metrics.datagrams_in.inc();
        let destination = match proto {
            Protocol::Udp => self.config.local.udp.first(),
            _ => self.config.local.tcp.first(),
        };
        let Some(&destination) = destination else {
            return;
        };
        let Ok(receive) = Receive::new(proto, source, destination, data) else {
            self.metrics
                .dropped
                .with_label_values(&["unparseable"])
                .inc();
            return;
        };
        let input = Input::Receive(now, receive);
        let peer_id = match self.addrs.get(&(proto, source)) {
            Some(id) => *id,
            None => {
                // Only a STUN request naming a peer's ufrag opens a mapping.
                let Some(id) = self
                    .peers
                    .iter()
                    .find(|(_, p)| p.rtc.accepts(&input))
                    .map(|(id, _)| id)
                else {
                    self.metrics
                        .dropped
                        .with_label_values(&["unknown_source"])
                        .inc();
                    return;
                };
                self.addrs.insert((proto, source), id);
                if let Some(peer) = self.peers.get_mut(id) {
                    peer.addrs.push((proto, source));
                }
                id
            }
        };
        let Some(peer) = self.peers.get_mut(peer_id) else {
            return;
        };
        peer.last_heard = now;
        mark(&mut self.dirty, peer);
        match peer.rtc.handle_input(input) {
            // A handshake that fails (e.g. a certificate on an unsupported
            // curve) never recovers: say so and end the session now.
            Err(RtcError::Dtls(e)) if !peer.connected => {
                warn!(room = %peer.room, participant = %peer.participant, "DTLS handshake failed: {e}");
                peer.last_heard = now - self.config.media.peer_timeout() - Duration::from_millis(1);
                peer.timeout = now;
            }
            Err(e) => debug!(peer = %peer_id, "input rejected: {e}"),
            Ok(()) => {}
        }
        self.drive(now);
    }

    /// Time passed: run due str0m timers and remove dead peers. Only peers
    /// whose deadline came are touched (see `media/timers.rs`).
    pub fn handle_timeout(&mut self, now: Instant) {
        let timeout = self.config.media.peer_timeout();
        let mut dead = Vec::new();
        let peers = &mut self.peers;
        let mut claim = |id, at| {
            peers
                .get_mut(id)
                .is_some_and(|p| p.scheduled == Some(at) && p.scheduled.take().is_some())
        };
        let mut due = Vec::new();
        let mut allocate = Vec::new();
        let mut review = Vec::new();
        while let Some(id) = self.timers.pop_due(now, &mut claim) {
            due.push(id);
        }
        for id in due {
            let Some(peer) = self.peers.get_mut(id) else {
                continue;
            };
            if peer.timeout <= now {
                if let Err(e) = peer.rtc.handle_input(Input::Timeout(now)) {
                    debug!(peer = %peer.id, "timeout input: {e}");
                }
            }
            if !peer.rtc.is_alive() || now.saturating_duration_since(peer.last_heard) > timeout {
                dead.push((peer.room.clone(), peer.participant.clone()));
            } else if peer.next_allocation <= now {
                match peer.role {
                    Role::Publisher => review.push(id),
                    Role::Subscriber { .. } => allocate.push(id),
                }
            }
            // Draining it schedules its next deadline.
            mark(&mut self.dirty, peer);
        }
        for id in allocate {
            self.allocate(id, now);
        }
        for id in review {
            self.review_publisher_layers(id, now);
        }
        self.review_remote_layers(now);
        self.drive(now);
        for (room, pid) in dead {
            info!(room = %room, participant = %pid, "media timed out");
            if let Some(conn) = self.participant(&room, &pid).and_then(|p| p.conn()) {
                self.error(
                    conn,
                    ErrorCode::MediaTimeout,
                    "no media connectivity; removed from the room",
                );
            }
            self.remove_participant(&room, &pid, now);
        }
        self.drive(now);
    }

    // ------------------------------------------------------------------
    // Driving str0m
    // ------------------------------------------------------------------

    /// Drains every dirty peer until no peer is dirty (events can dirty others).
    fn drive(&mut self, now: Instant) {
        for _round in 0..64 {
            let batch = std::mem::take(&mut self.dirty);
            if batch.is_empty() {
                return;
            }
            for id in batch {
                self.drain(id, now);
            }
        }
        warn!("peers still dirty after 64 rounds");
    }

    fn drain(&mut self, id: PeerKey, now: Instant) {
        let mut events = Vec::new();
        {
            let Some(peer) = self.peers.get_mut(id) else {
                return;
            };
            peer.dirty = false;
            // str0m's pacer releases written packets on a timeout at `now`:
            // run those here rather than waiting for the next timer pass.
            let mut due_now = 4;
            loop {
                match peer.rtc.poll_output() {
                    Ok(Output::Timeout(t)) if t <= now && due_now > 0 => {
                        due_now -= 1;
                        if peer.rtc.handle_input(Input::Timeout(now)).is_err() {
                            peer.timeout = t;
                            break;
                        }
                    }
                    Ok(Output::Timeout(t)) => {
                        peer.timeout = t;
                        break;
                    }
                    Ok(Output::Transmit(t)) => {
                        self.unreported_out += 1;
                        self.transmits.push_back(t);
                    }
                    Ok(Output::Event(e)) => events.push(e),
                    Err(e) => {
                        debug!(peer = %id, "poll_output: {e}");
                        peer.timeout = now + Duration::from_millis(100);
                        break;
                    }
                }
            }
            let deadline = peer.deadline(self.config.media.peer_timeout());
            self.timers.schedule(id, deadline, &mut peer.scheduled);
        }
        for event in events {
            self.handle_event(id, event, now);
        }
    }

    fn handle_event(&mut self, id: PeerKey, event: Event, now: Instant) {
        match event {
            Event::Connected => self.connected(id, now),
            // str0m reports m-lines once media can flow (after DTLS).
            Event::MediaAdded(m) => {
                let Some(peer) = self.peers.get_mut(id) else {
                    return;
                };
                match peer.role {
                    Role::Publisher => {
                        peer.remote_media.insert(m.mid, m.kind);
                        self.reconcile_publisher(id, now);
                    }
                    Role::Subscriber { .. } => {
                        let (room, pid) = (peer.room.clone(), peer.participant.clone());
                        self.add_down_track(id, m.mid, m.kind);
                        self.update_subscriber(&room, &pid, now);
                    }
                }
            }
            Event::MediaChanged(_)
                if self
                    .peers
                    .get(id)
                    .is_some_and(|p| p.role == Role::Publisher) =>
            {
                self.reconcile_publisher(id, now);
            }
            Event::RtpPacket(packet) => self.forward(id, packet, now),
            Event::KeyframeRequest(req) => {
                let wanted = self
                    .peers
                    .get(id)
                    .and_then(|p| p.slots.get(&req.mid))
                    .and_then(|&k| self.down_tracks.get(k))
                    .and_then(|d| Some((d.receiver?, d.current().or(d.target())?)));
                if let Some((receiver, layer)) = wanted {
                    self.request_keyframe(receiver, layer, req.kind, "forwarded", now);
                }
            }
            Event::EgressBitrateEstimate(
                BweKind::Twcc { estimate, .. } | BweKind::Remb { estimate, .. },
            ) => self.estimate(id, estimate, now),
            Event::Closed => {
                if let Some(peer) = self.peers.get_mut(id) {
                    // Let the timeout path remove it on its next pass.
                    peer.last_heard =
                        now - self.config.media.peer_timeout() - Duration::from_millis(1);
                    peer.timeout = now;
                    self.timers.schedule(id, now, &mut peer.scheduled);
                }
            }
            _ => {}
        }
    }

    fn connected(&mut self, id: PeerKey, now: Instant) {
        let Some(peer) = self.peers.get_mut(id) else {
            return;
        };
        peer.connected = true;
        let (room, pid) = (peer.room.clone(), peer.participant.clone());
        if let Some(p) = self.participant_mut(&room, &pid) {
            if !p.connected {
                p.connected = true;
                let secs = now.saturating_duration_since(p.joined_at).as_secs_f64();
                self.metrics.join_seconds.observe(secs);
            }
        }
    }

    // ------------------------------------------------------------------
    // Participants and peers
    // ------------------------------------------------------------------

    fn participant(&self, room: &str, pid: &str) -> Option<&Participant> {
        self.rooms.get(room)?.participants.get(pid)
    }

    fn participant_mut(&mut self, room: &str, pid: &str) -> Option<&mut Participant> {
        self.rooms.get_mut(room)?.participants.get_mut(pid)
    }

    fn peer_conn(&self, peer_id: PeerKey) -> Option<ConnId> {
        let peer = self.peers.get(peer_id)?;
        self.participant(&peer.room, &peer.participant)?.conn()
    }

    fn deliver(&mut self, deliveries: Vec<Delivery>) {
        self.signals
            .extend(deliveries.into_iter().map(|(c, m)| Signal::Message(c, m)));
    }

    fn update_gauges(&mut self) {
        let rooms = self.rooms.values();
        let now = Gauges {
            rooms: self.rooms.len() as i64,
            // This node's own: another node counts its participants.
            participants: rooms
                .clone()
                .flat_map(|r| r.participants.values())
                .filter(|p| p.node().is_none())
                .count() as i64,
            tracks: self.receivers.len() as i64,
            subscriptions: self
                .receivers
                .iter()
                .map(|(_, r)| r.down_tracks().len() as i64)
                .sum(),
            peers: self.peers.len() as i64,
            paused_video: self
                .down_tracks
                .iter()
                .filter(|(_, d)| d.receiver.is_some() && d.target().is_none())
                .count() as i64,
            // Layers of this node's publishers (another node's track's
            // are its node's to count).
            publisher_layers_off: self
                .receivers
                .iter()
                .filter(|(_, r)| matches!(r.origin, Origin::Peer(_)))
                .map(|(_, r)| i64::from(r.dynacast.off().count_ones()))
                .sum(),
        };
        let (m, was) = (&self.metrics, self.reported);
        m.rooms.add(now.rooms - was.rooms);
        m.participants.add(now.participants - was.participants);
        m.tracks.add(now.tracks - was.tracks);
        m.subscriptions.add(now.subscriptions - was.subscriptions);
        m.peers.add(now.peers - was.peers);
        m.paused_video.add(now.paused_video - was.paused_video);
        m.publisher_layers_off
            .add(now.publisher_layers_off - was.publisher_layers_off);
        self.reported = now;
    }
}

/// Queues `peer` for draining (once).
fn mark(dirty: &mut Vec<PeerKey>, peer: &mut Peer) {
    if !peer.dirty {
        peer.dirty = true;
        dirty.push(peer.id);
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::auth::TokenAuthority;
    use str0m::media::{Direction, MediaKind};
    use str0m::Candidate;
    use str0m::Rtc;

    pub(in crate::media::engine) fn engine() -> (Engine, Metrics) {
        let metrics = Metrics::new();
        let config = EngineConfig {
            media: MediaConfig::default(),
            local: LocalAddrs {
                udp: vec!["127.0.0.1:7882".parse().unwrap()],
                tcp: vec![],
            },
            ice_servers: vec![],
            turn: None,
            max_relay_bytes: 1024,
            shard: 0,
        };
        (Engine::new(config, metrics.clone()), metrics)
    }

    pub(in crate::media::engine) fn grants(identity: &str) -> Grants {
        TokenAuthority::grants("r", identity, Duration::from_secs(60))
    }

    pub(in crate::media::engine) fn signals(e: &mut Engine) -> Vec<Signal> {
        std::iter::from_fn(|| e.poll_signal()).collect()
    }

    pub(in crate::media::engine) fn types(s: &[Signal]) -> Vec<String> {
        s.iter()
            .map(|s| match s {
                Signal::Message(c, m) => {
                    let v = serde_json::to_value(m).unwrap();
                    format!("{c}:{}", v["type"].as_str().unwrap())
                }
                Signal::Close(c) => format!("{c}:close"),
                Signal::RoomClosed(r) => format!("room {r} closed"),
            })
            .collect()
    }

    /// A real WebRTC offer with one sendonly audio m-line.
    fn offer() -> String {
        let mut rtc = Rtc::builder().build(Instant::now());
        rtc.add_local_candidate(Candidate::host("127.0.0.1:5000".parse().unwrap(), "udp").unwrap());
        let mut api = rtc.sdp_api();
        api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
        api.apply().unwrap().0.to_sdp_string()
    }

    #[test]
    fn join_replace_and_leave() {
        let (mut e, metrics) = engine();
        let t0 = Instant::now();
        e.join(1, grants("a"), true, t0);
        e.join(2, grants("b"), true, t0);
        assert_eq!(
            types(&signals(&mut e)),
            ["1:joined", "2:joined", "1:participant_joined"]
        );
        // Same identity again: the old session is told, closed and replaced.
        e.join(3, grants("a"), true, t0);
        assert_eq!(
            types(&signals(&mut e)),
            [
                "1:error",
                "1:close",
                "2:participant_left",
                "3:joined",
                "2:participant_joined"
            ]
        );
        assert_eq!(metrics.participants.get(), 2);
        e.disconnect(3, t0);
        e.handle_client(2, ClientMessage::Leave, t0);
        assert_eq!(
            types(&signals(&mut e)),
            ["2:participant_left", "room r closed", "2:close"]
        );
        assert_eq!(metrics.rooms.get(), 0);
        assert_eq!(metrics.participants.get(), 0);
    }

    #[test]
    fn unjoined_and_bad_sdp_get_errors() {
        let (mut e, _) = engine();
        let t0 = Instant::now();
        e.handle_client(9, ClientMessage::Ping, t0);
        let mut s = signals(&mut e);
        e.join(1, grants("a"), true, t0);
        signals(&mut e);
        let bad = ClientMessage::PublishOffer {
            sdp: "v=0".into(),
            tracks: vec![],
        };
        e.handle_client(1, bad, t0);
        s.extend(signals(&mut e));
        let Signal::Message(9, ServerMessage::Error { code, .. }) = &s[0] else {
            panic!("{:?}", types(&s))
        };
        assert_eq!(*code, ErrorCode::NotJoined);
        let Signal::Message(1, ServerMessage::Error { code, .. }) = &s[1] else {
            panic!("{:?}", types(&s))
        };
        assert_eq!(*code, ErrorCode::BadSdp);
    }

    #[test]
    fn a_peer_that_never_connects_is_removed_after_the_timeout() {
        let (mut e, metrics) = engine();
        let t0 = Instant::now();
        let (session, answer) = e.whip(grants("w"), &offer(), t0).expect("WHIP answer");
        assert!(answer.contains("a=ice-lite"), "{answer}");
        assert!(answer.contains("127.0.0.1 7882"), "{answer}");
        assert_eq!(metrics.peers.get(), 1);
        let timeout = MediaConfig::default().peer_timeout();
        e.handle_timeout(t0 + timeout - Duration::from_millis(10));
        assert_eq!(metrics.participants.get(), 1, "still within the timeout");
        e.handle_timeout(t0 + timeout + Duration::from_millis(10));
        assert_eq!(metrics.participants.get(), 0);
        assert_eq!(metrics.peers.get(), 0);
        assert!(!e.end_session(&session, t0), "the session went with it");
    }

    #[test]
    fn whip_refuses_without_grant_and_bad_sdp_changes_nothing() {
        let (mut e, metrics) = engine();
        let t0 = Instant::now();
        let mut g = grants("w");
        g.can_publish = false;
        assert!(matches!(
            e.whip(g, &offer(), t0),
            Err(SessionError::Forbidden(_))
        ));
        assert!(matches!(
            e.whip(grants("w"), "garbage", t0),
            Err(SessionError::BadSdp(_))
        ));
        assert_eq!(metrics.participants.get(), 0);
        assert_eq!(metrics.peers.get(), 0);
    }
}
