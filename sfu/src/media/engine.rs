//! The engine: rooms plus their peer connections, as one sans-IO state
//! machine. The shell feeds it datagrams, signaling and time, and drains
//! datagrams to send, signaling to deliver and the next wake-up time.
//!
//! One engine owns whole rooms (a peer never refers to another room): each
//! shard (`media/shard.rs`) runs one engine on its own thread with its own
//! sockets.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand::distr::{Alphanumeric, SampleString};
use str0m::change::{SdpAnswer, SdpOffer};
use str0m::media::{Direction, KeyframeRequestKind, MediaKind, Mid};
use str0m::net::{Protocol, Receive, Transmit};
use str0m::rtp::RtpWrite;
use str0m::{Candidate, Event, Input, Output, RtcError};
use tracing::{debug, info, warn};

use super::peer::{forwarded_extensions, LocalAddrs, Peer, PendingOffer, Role, Slot};
use super::timers::Timers;
use crate::auth::Grants;
use crate::config::{IceServer, MediaConfig};
use crate::metrics::Metrics;
use crate::room::keyframe::KeyframeThrottle;
use crate::room::track::kind_name;
use crate::room::{Access, ConnId, Delivery, Participant, PeerId, Room, Sink, Track};
use crate::signal::protocol::{
    ClientMessage, ErrorCode, ServerMessage, SubscribedTrack, TrackLabel, PROTOCOL_VERSION,
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
    rooms: HashMap<String, Room>,
    peers: HashMap<PeerId, Peer>,
    /// Demultiplexing of incoming datagrams by remote address.
    addrs: HashMap<(Protocol, SocketAddr), PeerId>,
    /// Signaling connection → (room, participant).
    conns: HashMap<ConnId, (String, String)>,
    /// WHIP/WHEP session → (room, participant).
    sessions: HashMap<String, (String, String)>,
    next_peer: PeerId,
    /// Peers whose `Rtc` changed and needs `poll_output` draining.
    dirty: Vec<PeerId>,
    /// When each peer next needs a str0m timeout or a liveness check.
    timers: Timers<PeerId>,
    transmits: VecDeque<Transmit>,
    /// Datagrams queued since `sfu_datagrams_out_total` was last updated.
    unreported_out: u64,
    signals: VecDeque<Signal>,
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
            rooms: HashMap::new(),
            peers: HashMap::new(),
            addrs: HashMap::new(),
            conns: HashMap::new(),
            sessions: HashMap::new(),
            next_peer: 1,
            dirty: Vec::new(),
            timers: Timers::default(),
            transmits: VecDeque::new(),
            unreported_out: 0,
            signals: VecDeque::new(),
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
        let room = self.rooms.entry(room_name.clone()).or_default();
        let deliveries = room.join(participant);
        let Some(me) = room.info(&id) else { return };
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
                    Some(deliveries) => self.deliver(deliveries),
                    None => self.error(
                        conn,
                        ErrorCode::UnknownTrack,
                        format!("you publish no track {track_id:?}"),
                    ),
                }
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
    // WHIP / WHEP
    // ------------------------------------------------------------------

    /// WHIP: publish the offer's media into `grants.room`. Returns the
    /// session id and the SDP answer.
    pub fn whip(
        &mut self,
        grants: Grants,
        offer: &str,
        now: Instant,
    ) -> Result<(String, String), SessionError> {
        if !grants.can_publish {
            return Err(SessionError::Forbidden(
                "token does not allow publishing".into(),
            ));
        }
        let offer =
            SdpOffer::from_sdp_string(offer).map_err(|e| SessionError::BadSdp(e.to_string()))?;
        let room = grants.room.clone();
        let identity = grants.identity.clone();
        let (session, pid) = self.add_session_participant(grants, false, now);
        match self.apply_publish_offer(&room, &pid, offer, &[], now) {
            Ok(answer) => {
                // Only a session that works replaces an older one.
                self.replace_identity(&room, &identity, &pid, now);
                Ok((session, answer))
            }
            Err(e) => {
                self.remove_participant(&room, &pid, now);
                Err(e)
            }
        }
    }

    /// WHEP: view the room's tracks (those of participant `target` — id or
    /// identity — if given). Returns the session id and the SDP answer.
    pub fn whep(
        &mut self,
        grants: Grants,
        target: Option<&str>,
        offer: &str,
        now: Instant,
    ) -> Result<(String, String), SessionError> {
        if !grants.can_subscribe {
            return Err(SessionError::Forbidden(
                "token does not allow subscribing".into(),
            ));
        }
        let offer =
            SdpOffer::from_sdp_string(offer).map_err(|e| SessionError::BadSdp(e.to_string()))?;
        let room = grants.room.clone();
        if let Some(target) = target {
            let found = self.rooms.get(&room).is_some_and(|r| {
                r.participants.contains_key(target) || r.find_identity(target).is_some()
            });
            if !found {
                return Err(SessionError::NotFound);
            }
        }
        let (session, pid) = self.add_session_participant(grants, true, now);
        if let Some(p) = self.participant_mut(&room, &pid) {
            p.view_of = target.map(String::from);
        }
        let peer_id = self.add_peer(&room, &pid, Role::Subscriber { offerer: false }, now);
        let answer = {
            let Some(peer) = self.peers.get_mut(&peer_id) else {
                return Err(SessionError::NotFound);
            };
            peer.rtc.sdp_api().accept_offer(offer)
        };
        let answer = match answer {
            Ok(a) => a.to_sdp_string(),
            Err(e) => {
                self.remove_participant(&room, &pid, now);
                return Err(SessionError::BadSdp(e.to_string()));
            }
        };
        self.drive(now);
        self.update_subscriber(&room, &pid, now);
        self.drive(now);
        Ok((session, answer))
    }

    /// Ends a WHIP/WHEP session. False if there is no such session.
    pub fn end_session(&mut self, session: &str, now: Instant) -> bool {
        let Some((room, pid)) = self.sessions.get(session).cloned() else {
            return false;
        };
        self.remove_participant(&room, &pid, now);
        self.drive(now);
        true
    }

    /// Trickled candidates for a WHIP/WHEP session (an SDP fragment).
    pub fn patch_session(
        &mut self,
        session: &str,
        fragment: &str,
        now: Instant,
    ) -> Result<(), SessionError> {
        let (room, pid) = self
            .sessions
            .get(session)
            .cloned()
            .ok_or(SessionError::NotFound)?;
        let peers: Vec<PeerId> = self
            .participant(&room, &pid)
            .map(|p| p.publisher.into_iter().chain(p.subscriber).collect())
            .unwrap_or_default();
        for line in fragment.lines() {
            let Some(cand) = line.trim().strip_prefix("a=") else {
                continue;
            };
            if !cand.starts_with("candidate:") {
                continue;
            }
            let candidate = Candidate::from_sdp_string(cand)
                .map_err(|e| SessionError::BadSdp(e.to_string()))?;
            for id in &peers {
                if let Some(peer) = self.peers.get_mut(id) {
                    peer.rtc.add_remote_candidate(candidate.clone());
                    mark(&mut self.dirty, peer);
                }
            }
        }
        self.drive(now);
        Ok(())
    }

    fn add_session_participant(
        &mut self,
        grants: Grants,
        hidden: bool,
        now: Instant,
    ) -> (String, String) {
        let room_name = grants.room.clone();
        // The session URL is the capability to end it: make it unguessable.
        // The shard prefix routes `/sessions/{id}` (see `session_shard`).
        let session = format!(
            "{}-{}",
            self.config.shard,
            Alphanumeric.sample_string(&mut rand::rng(), 24)
        );
        let id = random_id("PA_");
        let mut p = Participant::new(id.clone(), grants, Access::Session(session.clone()), now);
        p.hidden = hidden;
        let deliveries = self.rooms.entry(room_name.clone()).or_default().join(p);
        self.deliver(deliveries);
        self.sessions
            .insert(session.clone(), (room_name.clone(), id.clone()));
        info!(room = %room_name, participant = %id, session = %session, hidden, "session started");
        self.update_gauges();
        (session, id)
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
                    .values()
                    .find(|p| p.rtc.accepts(&input))
                    .map(|p| p.id)
                else {
                    self.metrics
                        .dropped
                        .with_label_values(&["unknown_source"])
                        .inc();
                    return;
                };
                self.addrs.insert((proto, source), id);
                if let Some(peer) = self.peers.get_mut(&id) {
                    peer.addrs.push((proto, source));
                }
                id
            }
        };
        let Some(peer) = self.peers.get_mut(&peer_id) else {
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
            Err(e) => debug!(peer = peer_id, "input rejected: {e}"),
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
                .get_mut(&id)
                .is_some_and(|p| p.scheduled == Some(at) && p.scheduled.take().is_some())
        };
        let mut due = Vec::new();
        while let Some(id) = self.timers.pop_due(now, &mut claim) {
            due.push(id);
        }
        for id in due {
            let Some(peer) = self.peers.get_mut(&id) else {
                continue;
            };
            if peer.timeout <= now {
                if let Err(e) = peer.rtc.handle_input(Input::Timeout(now)) {
                    debug!(peer = peer.id, "timeout input: {e}");
                }
            }
            if !peer.rtc.is_alive() || now.saturating_duration_since(peer.last_heard) > timeout {
                dead.push((peer.room.clone(), peer.participant.clone()));
            }
            // Draining it schedules its next deadline.
            mark(&mut self.dirty, peer);
        }
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

    fn drain(&mut self, id: PeerId, now: Instant) {
        let mut events = Vec::new();
        {
            let Some(peer) = self.peers.get_mut(&id) else {
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
                        debug!(peer = id, "poll_output: {e}");
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

    fn handle_event(&mut self, id: PeerId, event: Event, now: Instant) {
        match event {
            Event::Connected => self.connected(id, now),
            // str0m reports m-lines once media can flow (after DTLS).
            Event::MediaAdded(m) => {
                let Some(peer) = self.peers.get_mut(&id) else {
                    return;
                };
                match peer.role {
                    Role::Publisher => {
                        peer.remote_media.insert(m.mid, m.kind);
                        self.reconcile_publisher(id, now);
                    }
                    Role::Subscriber { .. } => {
                        peer.slots.insert(m.mid, Slot::new(m.kind));
                        let (room, pid) = (peer.room.clone(), peer.participant.clone());
                        self.update_subscriber(&room, &pid, now);
                    }
                }
            }
            Event::MediaChanged(_)
                if self
                    .peers
                    .get(&id)
                    .is_some_and(|p| p.role == Role::Publisher) =>
            {
                self.reconcile_publisher(id, now);
            }
            Event::RtpPacket(packet) => self.forward(id, packet, now),
            Event::KeyframeRequest(req) => {
                let track = self
                    .peers
                    .get(&id)
                    .and_then(|p| Some((p.room.clone(), p.slots.get(&req.mid)?.track.clone()?)));
                if let Some((room, track)) = track {
                    self.request_keyframe(&room, &track, req.kind, "forwarded", now);
                }
            }
            Event::Closed => {
                if let Some(peer) = self.peers.get_mut(&id) {
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

    fn connected(&mut self, id: PeerId, now: Instant) {
        let Some(peer) = self.peers.get_mut(&id) else {
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

    /// Forwards one publisher packet to every subscriber slot of its track.
    /// Reads header fields only; the payload is passed on as the same bytes.
    fn forward(&mut self, publisher: PeerId, packet: str0m::rtp::RtpPacket, now: Instant) {
        self.metrics.rtp_packets_in.inc();
        self.metrics
            .rtp_bytes_in
            .inc_by(packet.payload.len() as u64);
        let Some(pub_peer) = self.peers.get_mut(&publisher) else {
            return;
        };
        let Some((mid, rid)) = pub_peer
            .rtc
            .direct_api()
            .stream_rx(&packet.header.ssrc)
            .map(|s| (s.mid(), s.rid()))
        else {
            self.metrics
                .dropped
                .with_label_values(&["unknown_stream"])
                .inc();
            return;
        };
        let params = pub_peer
            .rtc
            .codec_config()
            .find(|p| p.pt() == packet.header.payload_type)
            .copied();
        let Some(params) = params else {
            self.metrics
                .dropped
                .with_label_values(&["unknown_payload_type"])
                .inc();
            return;
        };
        let Some(track_id) = pub_peer.published.get(&mid) else {
            self.metrics
                .dropped
                .with_label_values(&["unpublished"])
                .inc();
            return;
        };
        let Some(room) = self.rooms.get_mut(&pub_peer.room) else {
            return;
        };
        // Active speakers (room/speakers.rs) from the clear RFC 6464 level.
        if let Some(level) = packet.header.ext_vals.audio_level {
            if let Some((out, changed)) = room.hear(track_id, level.unsigned_abs(), now) {
                self.metrics.speaker_changes.inc_by(u64::from(changed));
                self.signals
                    .extend(out.into_iter().map(|(c, m)| Signal::Message(c, m)));
            }
        }
        let Some(track) = room.tracks.get_mut(track_id) else {
            return;
        };
        let loudest = self.config.media.forward_loudest_audio;
        if loudest > 0
            && track.kind == MediaKind::Audio
            && !room.speakers.is_within(track_id, loudest)
        {
            self.metrics
                .dropped
                .with_label_values(&["not_loudest"])
                .inc();
            return;
        }
        if track.rid.is_none() {
            track.rid = rid;
        }
        if rid != track.rid {
            self.metrics
                .dropped
                .with_label_values(&["simulcast_layer"])
                .inc();
            return;
        }
        let clock_rate = params.spec().clock_rate.get();
        let is_video = track.kind == MediaKind::Video;
        let exts = forwarded_extensions(&packet.header.ext_vals);
        let payload = if self.corrupt_payloads && !packet.payload.is_empty() {
            let mut bytes = packet.payload.to_vec();
            let last = bytes.len() - 1;
            bytes[last] ^= 0x5a;
            bytes.into()
        } else {
            packet.payload.clone()
        };
        // Counted once per packet: the counters are shared by every shard,
        // and an atomic add per subscriber would bounce their cache line.
        let mut sent = 0u64;
        for sink in &track.sinks {
            let Some(sub) = self.peers.get_mut(&sink.peer) else {
                continue;
            };
            let Some(slot) = sub.slots.get_mut(&sink.mid) else {
                continue;
            };
            let Some(pt) = slot.out_pt(&sub.rtc, &params) else {
                self.metrics
                    .dropped
                    .with_label_values(&["codec_mismatch"])
                    .inc();
                continue;
            };
            let Some(out) = slot.rebaser.rebase(
                *packet.header.ssrc,
                *packet.seq_no,
                packet.header.timestamp,
                clock_rate,
                now,
            ) else {
                self.metrics.dropped.with_label_values(&["too_old"]).inc();
                continue;
            };
            let mut api = sub.rtc.direct_api();
            let Some(tx) = api.stream_tx_by_mid(sink.mid, None) else {
                self.metrics
                    .dropped
                    .with_label_values(&["not_negotiated"])
                    .inc();
                continue;
            };
            tx.write_rtp(
                RtpWrite::new(
                    pt,
                    out.seq.into(),
                    out.ts,
                    packet.timestamp,
                    payload.clone(),
                )
                .marker(packet.header.marker)
                .ext_vals(exts.clone())
                .nackable(is_video),
            );
            mark(&mut self.dirty, sub);
            sent += 1;
        }
        self.metrics.rtp_packets_out.inc_by(sent);
        self.metrics
            .rtp_bytes_out
            .inc_by(sent * payload.len() as u64);
    }

    fn request_keyframe(
        &mut self,
        room: &str,
        track_id: &str,
        kind: KeyframeRequestKind,
        outcome: &str,
        now: Instant,
    ) {
        let Some(track) = self
            .rooms
            .get_mut(room)
            .and_then(|r| r.tracks.get_mut(track_id))
        else {
            return;
        };
        if track.kind != MediaKind::Video {
            return;
        }
        if !track.keyframes.allow(now) {
            self.metrics
                .keyframe_requests
                .with_label_values(&["throttled"])
                .inc();
            return;
        }
        let (peer_id, mid, rid) = (track.peer, track.mid, track.rid);
        if let Some(peer) = self.peers.get_mut(&peer_id) {
            if let Some(rx) = peer.rtc.direct_api().stream_rx_by_mid(mid, rid) {
                rx.request_keyframe(kind);
                mark(&mut self.dirty, peer);
                self.metrics
                    .keyframe_requests
                    .with_label_values(&[outcome])
                    .inc();
            }
        }
    }

    // ------------------------------------------------------------------
    // Publishing
    // ------------------------------------------------------------------

    fn publish_offer(
        &mut self,
        room: &str,
        pid: &str,
        sdp: &str,
        labels: &[TrackLabel],
        now: Instant,
    ) -> Result<String, SessionError> {
        let can_publish = self
            .participant(room, pid)
            .is_some_and(|p| p.grants.can_publish);
        if !can_publish {
            return Err(SessionError::Forbidden(
                "token does not allow publishing".into(),
            ));
        }
        let offer =
            SdpOffer::from_sdp_string(sdp).map_err(|e| SessionError::BadSdp(e.to_string()))?;
        self.apply_publish_offer(room, pid, offer, labels, now)
    }

    fn apply_publish_offer(
        &mut self,
        room: &str,
        pid: &str,
        offer: SdpOffer,
        labels: &[TrackLabel],
        now: Instant,
    ) -> Result<String, SessionError> {
        let existing = self.participant(room, pid).and_then(|p| p.publisher);
        let peer_id = match existing {
            Some(id) => id,
            None => self.add_peer(room, pid, Role::Publisher, now),
        };
        let peer = self.peers.get_mut(&peer_id).ok_or(SessionError::NotFound)?;
        let answer = match peer.rtc.sdp_api().accept_offer(offer) {
            Ok(answer) => {
                for l in labels {
                    peer.labels.insert(l.mid.clone(), l.source.clone());
                }
                answer
            }
            Err(e) => {
                // A first offer that fails leaves no half-made connection behind.
                if existing.is_none() {
                    self.remove_peer(peer_id);
                    if let Some(p) = self.participant_mut(room, pid) {
                        p.publisher = None;
                    }
                    self.update_gauges();
                }
                return Err(SessionError::BadSdp(e.to_string()));
            }
        };
        mark(&mut self.dirty, peer);
        self.drive(now);
        self.reconcile_publisher(peer_id, now);
        Ok(answer.to_sdp_string())
    }

    /// Publishes tracks for receiving m-lines and unpublishes the others.
    fn reconcile_publisher(&mut self, peer_id: PeerId, now: Instant) {
        let Some(peer) = self.peers.get_mut(&peer_id) else {
            return;
        };
        let room = peer.room.clone();
        let pid = peer.participant.clone();
        let mut added = Vec::new();
        let mut removed = Vec::new();
        for (&mid, &kind) in &peer.remote_media {
            let receiving = peer.rtc.media(mid).is_some_and(|m| {
                matches!(m.direction(), Direction::RecvOnly | Direction::SendRecv)
            });
            match (receiving, peer.published.get(&mid)) {
                (true, None) => {
                    let track_id = random_id("TR_");
                    peer.published.insert(mid, track_id.clone());
                    added.push(Track {
                        id: track_id,
                        owner: pid.clone(),
                        kind,
                        peer: peer_id,
                        mid,
                        rid: None,
                        source: peer.labels.get(&*mid).cloned(),
                        muted: false,
                        keyframes: KeyframeThrottle::new(self.config.media.keyframe_interval()),
                        sinks: Vec::new(),
                    });
                }
                (false, Some(track_id)) => removed.push(track_id.clone()),
                _ => {}
            }
        }
        peer.published.retain(|_, t| !removed.contains(t));
        for track in added {
            debug!(room = %room, track = %track.id, kind = kind_name(track.kind), "published");
            let deliveries = self
                .rooms
                .get_mut(&room)
                .map(|r| r.publish(track))
                .unwrap_or_default();
            self.deliver(deliveries);
        }
        for track_id in removed {
            self.unpublish(&room, &track_id, now);
        }
        self.update_all_subscribers(&room, now);
        self.update_gauges();
    }

    fn unpublish(&mut self, room: &str, track_id: &str, now: Instant) {
        let Some((track, deliveries)) =
            self.rooms.get_mut(room).and_then(|r| r.unpublish(track_id))
        else {
            return;
        };
        self.deliver(deliveries);
        for sink in track.sinks {
            if let Some(slot) = self
                .peers
                .get_mut(&sink.peer)
                .and_then(|p| p.slots.get_mut(&sink.mid))
            {
                slot.track = None;
            }
        }
        self.update_all_subscribers(room, now);
    }

    // ------------------------------------------------------------------
    // Subscribing
    // ------------------------------------------------------------------

    fn set_wanted(
        &mut self,
        conn: ConnId,
        room: &str,
        pid: &str,
        track_ids: &[String],
        wanted: bool,
        now: Instant,
    ) {
        let Some(r) = self.rooms.get_mut(room) else {
            return;
        };
        let unknown: Vec<String> = track_ids
            .iter()
            .filter(|t| !r.tracks.contains_key(*t))
            .cloned()
            .collect();
        let known: Vec<String> = track_ids
            .iter()
            .filter(|t| r.tracks.contains_key(*t))
            .cloned()
            .collect();
        let Some(p) = r.participants.get_mut(pid) else {
            return;
        };
        if !p.grants.can_subscribe {
            self.error(
                conn,
                ErrorCode::Forbidden,
                "token does not allow subscribing",
            );
            return;
        }
        for t in &known {
            p.set_wanted(t, wanted);
        }
        if !unknown.is_empty() {
            let msg = format!("unknown track ids: {unknown:?}");
            self.error(conn, ErrorCode::UnknownTrack, msg);
        }
        self.update_subscriber(room, pid, now);
    }

    fn update_all_subscribers(&mut self, room: &str, now: Instant) {
        let ids: Vec<String> = self
            .rooms
            .get(room)
            .map(|r| r.participants.keys().cloned().collect())
            .unwrap_or_default();
        for pid in ids {
            self.update_subscriber(room, &pid, now);
        }
    }

    /// Brings a participant's subscriber peer in line with what it wants.
    fn update_subscriber(&mut self, room: &str, pid: &str, now: Instant) {
        let Some(r) = self.rooms.get(room) else {
            return;
        };
        let Some(p) = r.participants.get(pid) else {
            return;
        };
        let wanted: Vec<(String, MediaKind, String)> = r
            .wanted_tracks(pid)
            .into_iter()
            .map(|t| (t.id.clone(), t.kind, t.owner.clone()))
            .collect();
        let existing = p.subscriber;
        let peer_id = match existing {
            Some(id) => id,
            // Offers need a signaling connection (WHIP publishers have none).
            None if wanted.is_empty() || p.conn().is_none() => return,
            None => self.add_peer(room, pid, Role::Subscriber { offerer: true }, now),
        };
        let Some(peer) = self.peers.get(&peer_id) else {
            return;
        };
        match peer.role {
            Role::Subscriber { offerer: true } => self.negotiate(peer_id, &wanted, now),
            Role::Subscriber { offerer: false } => self.bind_slots(peer_id, &wanted, now),
            Role::Publisher => {}
        }
    }

    /// Drops slots whose track is no longer wanted from their tracks' sinks.
    fn unbind_unwanted(&mut self, peer_id: PeerId, wanted: &[(String, MediaKind, String)]) {
        let Some(peer) = self.peers.get_mut(&peer_id) else {
            return;
        };
        let room = peer.room.clone();
        let mut unbound = Vec::new();
        for (mid, slot) in peer.slots.iter_mut() {
            if let Some(t) = &slot.track {
                if !wanted.iter().any(|(w, _, _)| w == t) {
                    unbound.push((t.clone(), *mid));
                    slot.track = None;
                }
            }
        }
        if let Some(r) = self.rooms.get_mut(&room) {
            for (track_id, mid) in unbound {
                if let Some(track) = r.tracks.get_mut(&track_id) {
                    track.sinks.retain(|s| *s != Sink { peer: peer_id, mid });
                }
            }
        }
    }

    /// Server-offered subscriber: add m-lines for new tracks, stop those of
    /// gone tracks, one offer in flight at a time.
    fn negotiate(&mut self, peer_id: PeerId, wanted: &[(String, MediaKind, String)], now: Instant) {
        self.unbind_unwanted(peer_id, wanted);
        let Some(peer) = self.peers.get_mut(&peer_id) else {
            return;
        };
        if peer.pending.is_some() {
            peer.renegotiate = true;
            return;
        }
        // The first m-line carries the connection's transport (it tags the
        // BUNDLE group). Stopping it makes the client move the group to
        // another m-line's transport and close this one (Firefox sends a
        // DTLS close_notify, which ends the session), and stopping every
        // m-line leaves no transport at all: so it is never stopped, only
        // set inactive once its track is gone.
        let inactive = |m: &Mid| {
            peer.rtc
                .media(*m)
                .is_some_and(|x| x.direction() == Direction::Inactive)
        };
        let park: Option<Mid> = peer
            .slots
            .iter()
            .find(|(m, s)| s.anchor && s.track.is_none() && !inactive(m))
            .map(|(m, _)| *m);
        let stale: Vec<Mid> = peer
            .slots
            .iter()
            .filter(|(_, s)| s.track.is_none() && !s.anchor)
            .map(|(m, _)| *m)
            .collect();
        let present: Vec<String> = peer
            .slots
            .values()
            .filter_map(|s| s.track.clone())
            .collect();
        let new: Vec<&(String, MediaKind, String)> = wanted
            .iter()
            .filter(|(t, _, _)| !present.contains(t))
            .collect();
        if stale.is_empty() && new.is_empty() && park.is_none() {
            return;
        }
        let mut api = peer.rtc.sdp_api();
        if let Some(mid) = park {
            api.set_direction(mid, Direction::Inactive);
        }
        let mut added = Vec::new();
        for (track_id, kind, owner) in &new {
            let mid = api.add_media(
                *kind,
                Direction::SendOnly,
                Some(owner.clone()),
                Some(track_id.clone()),
                None,
            );
            added.push((mid, track_id.clone(), *kind));
        }
        for mid in &stale {
            api.stop_media(*mid);
        }
        let Some((offer, pending)) = api.apply() else {
            return;
        };
        let stopped: Vec<(Mid, MediaKind)> = stale
            .iter()
            .filter_map(|mid| peer.slots.remove(mid).map(|s| (*mid, s.kind)))
            .collect();
        let first = peer.slots.is_empty();
        for (i, (mid, track_id, kind)) in added.iter().enumerate() {
            let mut slot = Slot::new(*kind);
            slot.track = Some(track_id.clone());
            slot.anchor = first && i == 0;
            peer.slots.insert(*mid, slot);
        }
        peer.pending = Some(PendingOffer {
            pending,
            added: added.iter().map(|(m, _, _)| *m).collect(),
            stopped,
        });
        mark(&mut self.dirty, peer);
        let tracks = self.slot_descriptions(peer_id);
        let conn = self.peer_conn(peer_id);
        if let Some(conn) = conn {
            self.signals.push_back(Signal::Message(
                conn,
                ServerMessage::SubscribeOffer {
                    sdp: offer.to_sdp_string(),
                    tracks,
                },
            ));
        }
        self.drive(now);
    }

    fn slot_descriptions(&self, peer_id: PeerId) -> Vec<SubscribedTrack> {
        let Some(peer) = self.peers.get(&peer_id) else {
            return Vec::new();
        };
        let room = self.rooms.get(&peer.room);
        peer.slots
            .iter()
            .filter_map(|(mid, slot)| {
                let track = room?.tracks.get(slot.track.as_ref()?)?;
                Some(SubscribedTrack {
                    mid: mid.to_string(),
                    track_id: track.id.clone(),
                    participant_id: track.owner.clone(),
                    kind: kind_name(track.kind).to_string(),
                })
            })
            .collect()
    }

    fn subscribe_answer(&mut self, conn: ConnId, room: &str, pid: &str, sdp: &str, now: Instant) {
        let Some(peer_id) = self.participant(room, pid).and_then(|p| p.subscriber) else {
            self.error(
                conn,
                ErrorCode::BadMessage,
                "no subscribe offer is outstanding",
            );
            return;
        };
        let answer = match SdpAnswer::from_sdp_string(sdp) {
            Ok(a) => a,
            Err(e) => {
                self.error(conn, ErrorCode::BadSdp, e.to_string());
                return;
            }
        };
        let Some(peer) = self.peers.get_mut(&peer_id) else {
            return;
        };
        let Some(pending) = peer.pending.take() else {
            self.error(
                conn,
                ErrorCode::BadMessage,
                "no subscribe offer is outstanding",
            );
            return;
        };
        mark(&mut self.dirty, peer);
        if let Err(e) = peer.rtc.sdp_api().accept_answer(pending.pending, answer) {
            // str0m rolled the offer back: forget its new slots, keep the
            // ones it was stopping as unbound (stopped again next time), offer again.
            for mid in &pending.added {
                peer.slots.remove(mid);
            }
            for (mid, kind) in &pending.stopped {
                peer.slots.insert(*mid, Slot::new(*kind));
            }
            self.error(conn, ErrorCode::BadSdp, e.to_string());
            self.update_subscriber(room, pid, now);
            return;
        }
        let mut newly_ready = Vec::new();
        for mid in &pending.added {
            if let Some(slot) = peer.slots.get_mut(mid) {
                slot.ready = true;
                if let Some(t) = &slot.track {
                    newly_ready.push((t.clone(), *mid));
                }
            }
        }
        let renegotiate = std::mem::take(&mut peer.renegotiate);
        self.add_sinks(peer_id, room, newly_ready, now);
        if renegotiate {
            self.update_subscriber(room, pid, now);
        }
        self.update_gauges();
    }

    /// Starts forwarding `tracks` into `peer_id`'s slots and asks for keyframes.
    fn add_sinks(&mut self, peer_id: PeerId, room: &str, tracks: Vec<(String, Mid)>, now: Instant) {
        for (track_id, mid) in tracks {
            let Some(track) = self
                .rooms
                .get_mut(room)
                .and_then(|r| r.tracks.get_mut(&track_id))
            else {
                continue;
            };
            let sink = Sink { peer: peer_id, mid };
            if !track.sinks.contains(&sink) {
                track.sinks.push(sink);
            }
            self.request_keyframe(
                room,
                &track_id,
                KeyframeRequestKind::Pli,
                "new_subscriber",
                now,
            );
        }
    }

    /// Client-offered subscriber (WHEP): bind free slots to wanted tracks of their kind.
    fn bind_slots(
        &mut self,
        peer_id: PeerId,
        wanted: &[(String, MediaKind, String)],
        now: Instant,
    ) {
        self.unbind_unwanted(peer_id, wanted);
        let Some(peer) = self.peers.get_mut(&peer_id) else {
            return;
        };
        let room = peer.room.clone();
        let mut bound: Vec<String> = peer
            .slots
            .values()
            .filter_map(|s| s.track.clone())
            .collect();
        // Keep a viewer's audio and video from the same publisher when possible.
        let mut owner: Option<String> = wanted
            .iter()
            .find(|(t, _, _)| bound.contains(t))
            .map(|(_, _, o)| o.clone());
        let mut newly = Vec::new();
        for (mid, slot) in peer.slots.iter_mut() {
            if slot.track.is_some() {
                continue;
            }
            let free =
                |(t, k, _): &&(String, MediaKind, String)| *k == slot.kind && !bound.contains(t);
            let same_owner = wanted
                .iter()
                .filter(free)
                .find(|(_, _, o)| owner.as_ref().is_none_or(|w| w == o));
            if let Some((track_id, _, o)) = same_owner.or_else(|| wanted.iter().find(free)) {
                owner.get_or_insert_with(|| o.clone());
                slot.track = Some(track_id.clone());
                slot.ready = true;
                bound.push(track_id.clone());
                newly.push((track_id.clone(), *mid));
            }
        }
        self.add_sinks(peer_id, &room, newly, now);
        self.update_gauges();
    }

    // ------------------------------------------------------------------
    // Participants and peers
    // ------------------------------------------------------------------

    fn add_peer(&mut self, room: &str, pid: &str, role: Role, now: Instant) -> PeerId {
        let id = self.next_peer;
        self.next_peer += 1;
        let media = &self.config.media;
        let mut peer = Peer::new(
            id,
            room,
            pid,
            role,
            &self.config.local,
            media.retransmit_packets,
            now,
        );
        mark(&mut self.dirty, &mut peer);
        self.peers.insert(id, peer);
        if let Some(p) = self.participant_mut(room, pid) {
            match role {
                Role::Publisher => p.publisher = Some(id),
                Role::Subscriber { .. } => p.subscriber = Some(id),
            }
        }
        self.update_gauges();
        id
    }

    fn remove_peer(&mut self, id: PeerId) {
        let Some(mut peer) = self.peers.remove(&id) else {
            return;
        };
        for addr in &peer.addrs {
            self.addrs.remove(addr);
        }
        if let Some(r) = self.rooms.get_mut(&peer.room) {
            for track in r.tracks.values_mut() {
                track.sinks.retain(|s| s.peer != id);
            }
        }
        peer.rtc.disconnect();
    }

    /// Removes a participant with all its tracks and peers, telling the room.
    fn remove_participant(&mut self, room: &str, pid: &str, now: Instant) {
        let Some((participant, _tracks, deliveries)) =
            self.rooms.get_mut(room).and_then(|r| r.leave(pid))
        else {
            return;
        };
        info!(room = %room, participant = %pid, "left");
        self.deliver(deliveries);
        for peer in participant
            .publisher
            .into_iter()
            .chain(participant.subscriber)
        {
            self.remove_peer(peer);
        }
        match &participant.access {
            Access::Signaling(conn) => {
                self.conns.remove(conn);
            }
            Access::Session(s) => {
                self.sessions.remove(s);
            }
        }
        if self.rooms.get(room).is_some_and(Room::is_empty) {
            self.rooms.remove(room);
            self.signals.push_back(Signal::RoomClosed(room.to_string()));
        } else {
            // Subscribers of the removed tracks renegotiate.
            self.update_all_subscribers(room, now);
        }
        self.update_gauges();
    }

    /// A new session with an identity already present replaces the old one.
    /// `keep` (the new session) is never the one replaced.
    fn replace_identity(&mut self, room: &str, identity: &str, keep: &str, now: Instant) {
        let old = self.rooms.get(room).and_then(|r| {
            r.participants
                .values()
                .find(|p| !p.hidden && p.id != keep && p.grants.identity == identity)
                .map(|p| p.id.clone())
        });
        let Some(old) = old else {
            return;
        };
        if let Some(conn) = self.participant(room, &old).and_then(|p| p.conn()) {
            self.error(
                conn,
                ErrorCode::Replaced,
                "the same identity joined from another connection",
            );
        }
        self.remove_participant(room, &old, now);
    }

    fn participant(&self, room: &str, pid: &str) -> Option<&Participant> {
        self.rooms.get(room)?.participants.get(pid)
    }

    fn participant_mut(&mut self, room: &str, pid: &str) -> Option<&mut Participant> {
        self.rooms.get_mut(room)?.participants.get_mut(pid)
    }

    fn peer_conn(&self, peer_id: PeerId) -> Option<ConnId> {
        let peer = self.peers.get(&peer_id)?;
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
            participants: rooms.clone().map(|r| r.participants.len() as i64).sum(),
            tracks: rooms.clone().map(|r| r.tracks.len() as i64).sum(),
            subscriptions: rooms
                .flat_map(|r| r.tracks.values())
                .map(|t| t.sinks.len() as i64)
                .sum(),
            peers: self.peers.len() as i64,
        };
        let (m, was) = (&self.metrics, self.reported);
        m.rooms.add(now.rooms - was.rooms);
        m.participants.add(now.participants - was.participants);
        m.tracks.add(now.tracks - was.tracks);
        m.subscriptions.add(now.subscriptions - was.subscriptions);
        m.peers.add(now.peers - was.peers);
        self.reported = now;
    }
}

/// Queues `peer` for draining (once).
fn mark(dirty: &mut Vec<PeerId>, peer: &mut Peer) {
    if !peer.dirty {
        peer.dirty = true;
        dirty.push(peer.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::TokenAuthority;
    use str0m::Rtc;

    fn engine() -> (Engine, Metrics) {
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

    fn grants(identity: &str) -> Grants {
        TokenAuthority::grants("r", identity, Duration::from_secs(60))
    }

    fn signals(e: &mut Engine) -> Vec<Signal> {
        std::iter::from_fn(|| e.poll_signal()).collect()
    }

    fn types(s: &[Signal]) -> Vec<String> {
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
