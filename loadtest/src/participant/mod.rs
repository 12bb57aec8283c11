//! One simulated participant: the signaling state machine, a publish and a
//! subscribe peer connection (str0m `Rtc`, full ICE, RTP mode), the media it
//! publishes and the statistics of what it receives. It owns its UDP sockets
//! but no thread or task: a worker's event loop drives it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::config::DtlsCert;
use str0m::media::{Direction, MediaKind, Mid, Simulcast, SimulcastLayer};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc};
use tokio::sync::mpsc::UnboundedSender;

use crate::key_exchange::{BaseKey, KeyExchange};
use crate::layers_received::{PUBLISHERS, SUBSCRIBERS};
use crate::media::generator::{Generator, Kind};
use crate::media::preset::VideoPreset;
use crate::sframe_keys::{KeyRing, SenderKey};
use crate::stats::Totals;
use crate::turn::path::{self, FromServer, TurnPath};

mod keys;
mod media;
mod relay_pacer;
mod rx_track;

use relay_pacer::RelayPacer;
use rx_track::RxTrack;

/// What one participant does.
#[derive(Debug, Clone)]
pub struct ParticipantSpec {
    /// Global index: identity suffix and frame header sender.
    pub index: u32,
    /// Room name.
    pub room: String,
    /// Signed room token.
    pub token: String,
    /// Publishes media.
    pub publish: bool,
    /// Receives media (auto-subscribe).
    pub subscribe: bool,
    /// Publishes audio.
    pub audio: bool,
    /// Publishes video at this preset.
    pub video: Option<VideoPreset>,
    /// As simulcast layers.
    pub simulcast: bool,
    /// Encrypts frames with SFrame.
    pub e2ee: bool,
    /// Tracks this participant should receive.
    pub expected_tracks: u64,
    /// Media only through this TURN relay.
    pub via_turn: Option<ViaTurn>,
}

/// Where `--via-turn` sends media. Missing parts come from the SFU's
/// `joined.ice_servers` (its embedded relay with TURN REST credentials).
#[derive(Debug, Clone, Default)]
pub struct ViaTurn {
    /// The relay's UDP address.
    pub server: Option<SocketAddr>,
    /// Username.
    pub username: Option<String>,
    /// Password.
    pub password: Option<String>,
}

/// Which of the two peer connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The publish connection.
    Publish = 0,
    /// The subscribe connection.
    Subscribe = 1,
}

/// A peer connection and its socket.
pub struct Peer {
    rtc: Rtc,
    /// The socket (registered with the worker's poll by the worker).
    pub socket: mio::net::UdpSocket,
    local: SocketAddr,
    next_timeout: Instant,
    turn: Option<TurnPath>,
}

impl Peer {
    fn new(
        local_ip: std::net::IpAddr,
        cert: Option<&DtlsCert>,
        host_candidate: bool,
        now: Instant,
    ) -> anyhow::Result<Peer> {
        let socket = mio::net::UdpSocket::bind(SocketAddr::new(local_ip, 0))?;
        platform::arrival::enable(&socket)?;
        let local = socket.local_addr()?;
        let mut config = Rtc::builder();
        if let Some(cert) = cert {
            // One certificate per worker: generating one per connection
            // would dominate the cost of a join.
            config = config.set_dtls_cert(cert.clone());
        }
        let mut rtc = config
            .set_rtp_mode(true)
            .clear_codecs()
            .enable_opus(true, false)
            .enable_vp8(true)
            .set_stats_interval(None)
            .build(now);
        if host_candidate {
            rtc.add_local_candidate(Candidate::host(local, "udp")?);
        }
        Ok(Peer {
            rtc,
            socket,
            local,
            next_timeout: now,
            turn: None,
        })
    }
}

/// Counters the worker reports as live progress.
#[derive(Debug, Default, Clone, Copy)]
pub struct Traffic {
    /// UDP bytes received.
    pub bytes_in: u64,
    /// UDP bytes sent.
    pub bytes_out: u64,
}

/// One simulated participant.
pub struct Participant {
    /// What it does.
    pub spec: ParticipantSpec,
    out: UnboundedSender<String>,
    /// Participant id from `joined`.
    pub id: Option<String>,
    /// Publish connection (if publishing).
    pub publisher: Option<Peer>,
    /// Subscribe connection (if subscribing).
    pub subscriber: Option<Peer>,
    pending: Option<SdpPendingOffer>,
    audio_mid: Option<Mid>,
    video_mid: Option<Mid>,
    publishing: bool,
    generator: Generator,
    key: Option<SenderKey>,
    kx: KeyExchange,
    /// When the pending key batch goes out.
    kx_flush: Option<Instant>,
    /// Newcomers whose hello we have not heard, and when ours is due.
    unheard: Vec<(String, Instant)>,
    /// Relay messages waiting for send budget, and that budget.
    pacer: RelayPacer,
    /// Frame header sender index per publisher, from its first good frame.
    senders: HashMap<String, u32>,
    seqs: HashMap<(Kind, u8), u64>,
    tracks: HashMap<Mid, RxTrack>,
    ring: KeyRing,
    started: Instant,
    /// When the first frame decrypted.
    pub first_frame: Option<Instant>,
    /// Why it failed, if it did.
    pub failed: Option<String>,
    /// Totals of this participant (finished tracks, frames sent, errors).
    pub totals: Totals,
    /// Live traffic counters.
    pub traffic: Traffic,
    /// Sum (µs) and count of latencies, for the live mean.
    pub latency_sum: (u64, u64),
    plain: Vec<u8>,
}

impl Participant {
    /// Creates the participant and its sockets; `out` sends signaling text.
    pub fn new(
        spec: ParticipantSpec,
        local_ip: std::net::IpAddr,
        cert: Option<&DtlsCert>,
        out: UnboundedSender<String>,
        now: Instant,
    ) -> anyhow::Result<Participant> {
        let direct = spec.via_turn.is_none();
        let publisher = spec
            .publish
            .then(|| Peer::new(local_ip, cert, direct, now))
            .transpose()?;
        let subscriber = spec
            .subscribe
            .then(|| Peer::new(local_ip, cert, direct, now))
            .transpose()?;
        // KIDs are random per sender, as the web client makes them.
        let base = BaseKey::generate();
        let key = SenderKey::from_material(base.kid, base.raw)?;
        let kx = KeyExchange::new(spec.publish.then_some(base))?;
        let generator = Generator::new(now, spec.audio, spec.video, spec.simulcast);
        Ok(Participant {
            spec,
            out,
            id: None,
            publisher,
            subscriber,
            pending: None,
            audio_mid: None,
            video_mid: None,
            publishing: false,
            generator,
            key: Some(key),
            kx,
            kx_flush: None,
            unheard: Vec::new(),
            pacer: RelayPacer::new(now),
            senders: HashMap::new(),
            seqs: HashMap::new(),
            tracks: HashMap::new(),
            ring: KeyRing::default(),
            started: now,
            first_frame: None,
            failed: None,
            totals: Totals::default(),
            traffic: Traffic::default(),
            latency_sum: (0, 0),
            plain: Vec::new(),
        })
    }

    /// Replaces the signaling channel (the worker opens it after the sockets).
    pub fn set_signaling(&mut self, out: UnboundedSender<String>) {
        self.out = out;
    }

    /// The join message to send first.
    pub fn join_message(&self) -> String {
        json!({"type": "join", "version": 1, "token": self.spec.token,
               "auto_subscribe": self.spec.subscribe})
        .to_string()
    }

    fn send(&mut self, v: Value) {
        self.pacer.spend();
        self.send_text(v.to_string());
    }

    fn send_text(&mut self, text: String) {
        if self.out.send(text).is_err() && self.failed.is_none() {
            self.failed = Some("signaling closed".into());
        }
    }

    /// The group of receivers this participant's reports count in.
    fn group(&self) -> &'static str {
        if self.spec.publish {
            PUBLISHERS
        } else {
            SUBSCRIBERS
        }
    }

    fn fail(&mut self, why: String) {
        if self.failed.is_none() {
            self.totals
                .note_error(format!("participant {}: {why}", self.spec.index));
            self.failed = Some(why);
        }
    }

    /// Handles one signaling message; returns the next deadline.
    pub fn on_signal(&mut self, text: &str, now: Instant) -> Instant {
        let Ok(msg) = serde_json::from_str::<Value>(text) else {
            return now;
        };
        match msg["type"].as_str() {
            Some("joined") => {
                self.id = msg["participant"]["id"].as_str().map(String::from);
                if let Some(id) = &self.id {
                    self.kx.set_id(id);
                }
                if let Err(e) = self.setup_turn(&msg["ice_servers"]) {
                    self.fail(e);
                }
                if self.spec.e2ee {
                    // Answers (reply hellos, wrapped keys) come from those
                    // already here; later joiners' hellos reach us.
                    let hello = self.kx.hello();
                    self.relay(vec![hello], now);
                }
                if self.spec.publish {
                    if let Err(e) = self.offer() {
                        self.fail(format!("publish offer: {e}"));
                    }
                }
            }
            Some("participant_joined") => {
                if let Some(id) = msg["participant"]["id"].as_str() {
                    self.on_joined(id, now);
                }
            }
            Some("participant_left") => {
                if let Some(id) = msg["participant_id"].as_str() {
                    self.kx.forget(id);
                }
            }
            Some("publish_answer") => {
                let answer = msg["sdp"].as_str().map(SdpAnswer::from_sdp_string);
                match (answer, self.pending.take(), self.publisher.as_mut()) {
                    (Some(Ok(a)), Some(p), Some(peer)) => {
                        if let Err(e) = peer.rtc.sdp_api().accept_answer(p, a) {
                            self.fail(format!("publish answer: {e}"));
                        }
                        self.start_turn(Side::Publish, msg["sdp"].as_str(), now);
                    }
                    _ => self.fail("unusable publish_answer".into()),
                }
            }
            Some("subscribe_offer") => self.on_subscribe_offer(&msg, now),
            Some("relay") => {
                let payload = &msg["payload"];
                let ours = payload["kind"]
                    .as_str()
                    .is_some_and(|k| k.starts_with("e2ee-"));
                if let (Some(from), true, true) = (msg["from"].as_str(), ours, self.spec.e2ee) {
                    self.on_key_exchange(from, payload, now);
                }
            }
            Some("error") => {
                let code = msg["code"].as_str().unwrap_or("?").to_string();
                // A rate-limited relay shows as frames without a key (the
                // sends are paced to avoid it); the rest is fatal.
                if code != "rate_limited" {
                    self.fail(format!("server error {code}: {}", msg["message"]));
                }
            }
            _ => {}
        }
        // SDP changes need the Rtcs polled.
        self.drain(Side::Publish, now);
        self.drain(Side::Subscribe, now);
        self.deadline()
    }

    fn offer(&mut self) -> anyhow::Result<()> {
        let rids = self.generator.rids();
        let Some(peer) = self.publisher.as_mut() else {
            return Ok(());
        };
        let mut api = peer.rtc.sdp_api();
        let mut tracks = Vec::new();
        if self.spec.audio {
            let m = api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
            tracks.push(json!({"mid": m.to_string(), "source": "microphone"}));
            self.audio_mid = Some(m);
        }
        if self.spec.video.is_some() {
            let simulcast = (!rids.is_empty()).then(|| {
                let mut s = Simulcast::new();
                for r in &rids {
                    s.add_send_layer(SimulcastLayer::new(r));
                }
                s
            });
            let m = api.add_media(MediaKind::Video, Direction::SendOnly, None, None, simulcast);
            tracks.push(json!({"mid": m.to_string(), "source": "camera"}));
            self.video_mid = Some(m);
        }
        let Some((offer, pending)) = api.apply() else {
            return Ok(());
        };
        self.pending = Some(pending);
        self.send(json!({"type": "publish_offer", "sdp": offer.to_sdp_string(), "tracks": tracks}));
        Ok(())
    }

    /// Gives each peer its TURN path (for `--via-turn`).
    fn setup_turn(&mut self, ice_servers: &Value) -> Result<(), String> {
        let Some(via) = self.spec.via_turn.clone() else {
            return Ok(());
        };
        let from_sfu = path::from_ice_servers(ice_servers);
        let server = via.server.or(from_sfu.as_ref().map(|s| s.0));
        let user = via.username.or(from_sfu.as_ref().map(|s| s.1.clone()));
        let pass = via.password.or(from_sfu.as_ref().map(|s| s.2.clone()));
        let (Some(server), Some(user), Some(pass)) = (server, user, pass) else {
            return Err(
                "--via-turn: no TURN server or credentials (none in joined.ice_servers)".into(),
            );
        };
        for peer in [self.publisher.as_mut(), self.subscriber.as_mut()]
            .into_iter()
            .flatten()
        {
            peer.turn = Some(TurnPath::new(server, user.clone(), pass.clone()));
        }
        Ok(())
    }

    /// Starts the TURN allocation of `side` towards the SFU's address.
    /// With `--via-turn`, allocates and relays to the SFU's UDP candidate
    /// in `sdp` (its answer or offer).
    fn start_turn(&mut self, side: Side, sdp: Option<&str>, now: Instant) {
        let peer = match side {
            Side::Publish => self.publisher.as_mut(),
            Side::Subscribe => self.subscriber.as_mut(),
        };
        let Some(peer) = peer else { return };
        let Some(turn) = peer.turn.as_mut() else {
            return;
        };
        let Some(sfu) = sdp.and_then(path::sfu_candidate) else {
            return self.fail("--via-turn: no UDP candidate in the SFU's SDP".into());
        };
        if let Some(req) = turn.start(sfu, now) {
            if peer.socket.send_to(&req, turn.server).is_ok() {
                self.traffic.bytes_out += req.len() as u64;
            }
        }
    }

    fn on_subscribe_offer(&mut self, msg: &Value, now: Instant) {
        let Some(peer) = self.subscriber.as_mut() else {
            self.fail("subscribe_offer without a subscribe connection".into());
            return;
        };
        let offer = match SdpOffer::from_sdp_string(msg["sdp"].as_str().unwrap_or("")) {
            Ok(o) => o,
            Err(e) => return self.fail(format!("subscribe offer: {e}")),
        };
        let answer = match peer.rtc.sdp_api().accept_offer(offer) {
            Ok(a) => a,
            Err(e) => return self.fail(format!("subscribe offer: {e}")),
        };
        let listed: HashMap<Mid, (String, Kind)> = msg["tracks"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| {
                let mid = Mid::from(t["mid"].as_str()?);
                let kind = if t["kind"] == "video" {
                    Kind::Video
                } else {
                    Kind::Audio
                };
                Some((mid, (t["participant_id"].as_str()?.to_string(), kind)))
            })
            .collect();
        // Tracks that went away: keep what they delivered.
        let gone: Vec<Mid> = self
            .tracks
            .keys()
            .filter(|m| !listed.contains_key(m))
            .copied()
            .collect();
        for m in gone {
            if let Some(mut t) = self.tracks.remove(&m) {
                t.stats.layers.end(crate::clock::micros(Instant::now()));
                let group = self.group();
                self.totals.add_track(&t.stats, t.kind, group);
            }
        }
        for (mid, (owner, kind)) in listed {
            self.tracks
                .entry(mid)
                .or_insert_with(|| RxTrack::new(kind, owner));
        }
        self.send(json!({"type": "subscribe_answer", "sdp": answer.to_sdp_string()}));
        self.start_turn(Side::Subscribe, msg["sdp"].as_str(), now);
    }

    /// Feeds one datagram received on `side`'s socket; returns the next deadline.
    pub fn on_datagram(
        &mut self,
        side: Side,
        from: SocketAddr,
        data: &[u8],
        now: Instant,
    ) -> Instant {
        self.traffic.bytes_in += data.len() as u64;
        let peer = match side {
            Side::Publish => self.publisher.as_mut(),
            Side::Subscribe => self.subscriber.as_mut(),
        };
        let mut failure = None;
        if let Some(peer) = peer {
            match peer.turn.as_mut() {
                Some(turn) if from == turn.server => {
                    match turn.on_datagram(data, now) {
                        FromServer::Media { from, to, data } => {
                            if let Ok(r) = Receive::new(Protocol::Udp, from, to, data) {
                                let _ = peer.rtc.handle_input(Input::Receive(now, r));
                            }
                        }
                        FromServer::Request(req) => {
                            let _ = peer.socket.send_to(&req, turn.server);
                        }
                        FromServer::Nothing => {}
                    }
                    if let Some(c) = turn.new_candidate(peer.local) {
                        peer.rtc.add_local_candidate(c);
                    }
                    failure = turn.failure();
                }
                Some(_) => {}
                None => {
                    if let Ok(r) = Receive::new(Protocol::Udp, from, peer.local, data) {
                        let _ = peer.rtc.handle_input(Input::Receive(now, r));
                    }
                }
            }
        }
        if let Some(f) = failure {
            self.fail(f);
        }
        self.drain(side, now);
        self.deadline()
    }

    /// Runs what is due at `now` (str0m timeouts, media, paced relay
    /// messages); returns the next deadline.
    pub fn poll(&mut self, now: Instant) -> Instant {
        if self.kx_flush.is_some_and(|t| t <= now) {
            self.flush_keys(now);
        }
        if self.unheard.first().is_some_and(|(_, t)| *t <= now) {
            self.hello_unheard(now);
        }
        if self.pacer.due().is_some_and(|t| t <= now) {
            self.flush_relays(now);
        }
        let mut sent = false;
        if self.publishing {
            while let Some(frame) = self.generator.poll(now) {
                self.send_frame(&frame, now);
                sent = true;
            }
        }
        for side in [Side::Publish, Side::Subscribe] {
            let peer = match side {
                Side::Publish => self.publisher.as_mut(),
                Side::Subscribe => self.subscriber.as_mut(),
            };
            let Some(peer) = peer else { continue };
            let mut turn_failure = None;
            if let Some(turn) = peer.turn.as_mut() {
                if let Some(req) = turn.poll_retransmit(now) {
                    let _ = peer.socket.send_to(&req, turn.server);
                }
                turn_failure = turn.failure();
            }
            // poll_output is not free: only after input (a due timeout or media written).
            let due = peer.next_timeout <= now;
            if due {
                let _ = peer.rtc.handle_input(Input::Timeout(now));
            }
            if let Some(f) = turn_failure {
                self.fail(f);
            }
            if due || (sent && side == Side::Publish) {
                self.drain(side, now);
            }
        }
        self.deadline()
    }

    /// The earliest instant something is due.
    pub fn deadline(&self) -> Instant {
        let far = self.started + Duration::from_secs(3600 * 24);
        let mut d = far;
        for p in [&self.publisher, &self.subscriber].into_iter().flatten() {
            d = d.min(p.next_timeout);
            if let Some(t) = p.turn.as_ref().and_then(TurnPath::retransmit_at) {
                d = d.min(t);
            }
        }
        if self.publishing {
            if let Some(t) = self.generator.next_due() {
                d = d.min(t);
            }
        }
        if let Some(t) = self.pacer.due() {
            d = d.min(t);
        }
        if let Some(t) = self.kx_flush {
            d = d.min(t);
        }
        if let Some((_, t)) = self.unheard.first() {
            d = d.min(*t);
        }
        d
    }

    fn drain(&mut self, side: Side, now: Instant) {
        loop {
            let peer = match side {
                Side::Publish => self.publisher.as_mut(),
                Side::Subscribe => self.subscriber.as_mut(),
            };
            let Some(peer) = peer else { return };
            match peer.rtc.poll_output() {
                Ok(Output::Timeout(t)) => {
                    peer.next_timeout = t;
                    return;
                }
                Ok(Output::Transmit(t)) => {
                    let sent = match peer.turn.as_mut() {
                        // Through the relay only; nothing leaves before the channel is bound.
                        Some(turn) => {
                            let server = turn.server;
                            turn.wrap(t.source, &t.contents)
                                .and_then(|w| peer.socket.send_to(w, server).ok())
                        }
                        None => peer.socket.send_to(&t.contents, t.destination).ok(),
                    };
                    if let Some(n) = sent {
                        self.traffic.bytes_out += n as u64;
                    }
                }
                Ok(Output::Event(e)) => self.on_event(side, e, now),
                Err(e) => {
                    peer.next_timeout = now + Duration::from_millis(50);
                    self.fail(format!("rtc: {e}"));
                    return;
                }
            }
        }
    }

    fn on_event(&mut self, side: Side, event: Event, now: Instant) {
        match (side, event) {
            (Side::Publish, Event::Connected) => self.publishing = true,
            (Side::Publish, Event::KeyframeRequest(r)) => {
                self.generator.request_keyframe(r.rid.as_deref())
            }
            (_, Event::IceConnectionStateChange(str0m::IceConnectionState::Disconnected)) => {
                self.fail(format!("{side:?} ICE disconnected"));
            }
            (Side::Subscribe, Event::RtpPacket(p)) => self.on_rtp(p, now),
            _ => {}
        }
    }

    /// Live receive counters: (packets expected, packets received, frames verified, integrity errors).
    pub fn live_counts(&self) -> [u64; 4] {
        let mut c = [0u64; 4];
        for t in self.tracks.values() {
            c[0] += t.stats.packets_expected();
            c[1] += t.stats.packets;
            c[2] += t.stats.frames;
            c[3] += t.stats.integrity_errors;
        }
        c[0] += self.totals.packets_expected;
        c[1] += self.totals.packets_received;
        c[2] += self.totals.frames_received;
        c[3] += self.totals.integrity_errors;
        c
    }

    /// Sends `leave` and returns this participant's totals.
    pub fn finish(mut self) -> Totals {
        self.send(json!({"type": "leave"}));
        let mut totals = std::mem::take(&mut self.totals);
        let group = self.group();
        let end_us = crate::clock::micros(Instant::now());
        for t in self.tracks.values_mut() {
            t.stats.layers.end(end_us);
            totals.add_track(&t.stats, t.kind, group);
        }
        if self.spec.subscribe {
            totals.tracks_expected += self.spec.expected_tracks;
            totals.layers.add_receiver(group);
        }
        if self.id.is_some() {
            totals.joined += 1;
        }
        if self.failed.is_some() || self.id.is_none() {
            totals.failed += 1;
        }
        if let Some(t) = self.first_frame {
            let _ = totals
                .join_ms
                .record(t.saturating_duration_since(self.started).as_millis().max(1) as u64);
        }
        totals
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publish_offer(simulcast: bool) -> String {
        let now = Instant::now();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let spec = ParticipantSpec {
            index: 1,
            room: "r".into(),
            token: "t".into(),
            publish: true,
            subscribe: false,
            audio: true,
            video: Some(VideoPreset::P360),
            simulcast,
            e2ee: false,
            expected_tracks: 0,
            via_turn: None,
        };
        let ip = std::net::Ipv4Addr::LOCALHOST.into();
        let mut p = Participant::new(spec, ip, None, tx, now).unwrap();
        p.on_signal(r#"{"type":"joined","participant":{"id":"PA_me"}}"#, now);
        std::iter::from_fn(|| rx.try_recv().ok())
            .map(|t| serde_json::from_str::<Value>(&t).unwrap())
            .find(|m| m["type"] == "publish_offer")
            .and_then(|m| m["sdp"].as_str().map(String::from))
            .expect("a publish offer")
    }

    #[test]
    fn video_is_offered_as_three_rids_with_simulcast_and_as_one_without() {
        let sdp = publish_offer(true);
        assert!(sdp.contains("a=simulcast:send q;h;f"), "{sdp}");
        for rid in ["q", "h", "f"] {
            assert!(sdp.contains(&format!("a=rid:{rid} send")), "{sdp}");
        }
        let sdp = publish_offer(false);
        assert!(
            !sdp.contains("a=simulcast") && !sdp.contains("a=rid"),
            "{sdp}"
        );
    }
}
