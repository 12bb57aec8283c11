//! One simulated participant: the signaling state machine, a publish and a
//! subscribe peer connection (str0m `Rtc`, full ICE, RTP mode), the media it
//! publishes and the statistics of what it receives. It owns its UDP sockets
//! but no thread or task: a worker's event loop drives it.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::config::DtlsCert;
use str0m::format::Codec;
use str0m::media::{Direction, MediaKind, Mid, Rid, Simulcast, SimulcastLayer};
use str0m::net::{Protocol, Receive};
use str0m::rtp::RtpWrite;
use str0m::{Candidate, Event, Input, Output, Rtc};
use tokio::sync::mpsc::UnboundedSender;

use crate::clock;
use crate::frame::FrameHeader;
use crate::key_exchange::{BaseKey, KeyExchange};
use crate::media::generator::{FrameSpec, Generator, Kind};
use crate::media::preset::{VideoPreset, AUDIO_CLOCK, VIDEO_CLOCK};
use crate::packetize::{packetize_video, Reassembler};
use crate::sframe_keys::{DecryptError, KeyRing, SenderKey};
use crate::stats::{Totals, TrackStats};
use crate::turn::path::{self, FromServer, TurnPath};

/// Signaling messages per second, and at once, a participant allows itself:
/// under the SFU's default rate limit (50/s, burst 200) with room for SDP and
/// pings, since joining a big room costs a relay message per peer.
const SEND_RATE: f64 = 40.0;
const SEND_BURST: f64 = 100.0;
/// How long what we owe newcomers (our pub and wrapped key) accumulates
/// before one batch goes out, as keys.js `BATCH_WINDOW_MS`.
const KEY_BATCH_WINDOW: Duration = Duration::from_millis(50);

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

struct RxTrack {
    kind: Kind,
    owner: String,
    stats: TrackStats,
    reassembler: Reassembler,
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
    /// Relay messages waiting for send budget, and that budget.
    relay_queue: VecDeque<String>,
    budget: (f64, Instant),
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
        let via = spec.via_turn.clone();
        let publisher = spec
            .publish
            .then(|| Peer::new(local_ip, cert, via.is_none(), now))
            .transpose()?;
        let subscriber = spec
            .subscribe
            .then(|| Peer::new(local_ip, cert, via.is_none(), now))
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
            relay_queue: VecDeque::new(),
            budget: (SEND_BURST, now),
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
        self.budget.0 -= 1.0;
        self.send_text(v.to_string());
    }

    fn send_text(&mut self, text: String) {
        if self.out.send(text).is_err() && self.failed.is_none() {
            self.failed = Some("signaling closed".into());
        }
    }

    /// Queues relay messages behind the send budget and sends what it allows.
    fn relay(&mut self, out: Vec<crate::key_exchange::Outgoing>, now: Instant) {
        self.relay_queue
            .extend(out.iter().map(|o| o.relay_message().to_string()));
        self.flush_relays(now);
    }

    fn flush_relays(&mut self, now: Instant) {
        let (tokens, last) = self.budget;
        let refill = now.saturating_duration_since(last).as_secs_f64() * SEND_RATE;
        self.budget = ((tokens + refill).min(SEND_BURST), now);
        while self.budget.0 >= 1.0 {
            let Some(text) = self.relay_queue.pop_front() else {
                break;
            };
            self.budget.0 -= 1.0;
            self.send_text(text);
        }
    }

    /// When the send budget allows the next queued relay message.
    fn relay_due(&self) -> Option<Instant> {
        if self.relay_queue.is_empty() {
            return None;
        }
        let missing = (1.0 - self.budget.0).max(0.0);
        Some(self.budget.1 + Duration::from_secs_f64(missing / SEND_RATE))
    }

    /// Handles an `e2ee-*` relay payload: key exchange answers, learned keys.
    fn on_key_exchange(&mut self, from: &str, payload: &Value, now: Instant) {
        let mut out = Vec::new();
        if let Some(r) = self.kx.handle(from, payload, &mut out) {
            if let Err(e) = self.ring.learn(&r.from, r.key.kid, r.key.raw) {
                self.fail(format!("key from {from}: {e}"));
            }
        }
        self.relay(out, now);
        if self.kx.owed() >= KeyExchange::batch_capacity() {
            self.flush_keys(now);
        } else if self.kx.owed() > 0 && self.kx_flush.is_none() {
            self.kx_flush = Some(now + KEY_BATCH_WINDOW);
        }
    }

    /// Sends the batched keys owed to newcomers.
    fn flush_keys(&mut self, now: Instant) {
        self.kx_flush = None;
        let batches = self.kx.flush();
        self.relay(batches, now);
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
                        let sfu = msg["sdp"].as_str().and_then(path::sfu_candidate);
                        self.start_turn(Side::Publish, sfu, now);
                    }
                    _ => self.fail("unusable publish_answer".into()),
                }
            }
            Some("subscribe_offer") => self.on_subscribe_offer(&msg),
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
    fn start_turn(&mut self, side: Side, sfu: Option<SocketAddr>, now: Instant) {
        let peer = match side {
            Side::Publish => self.publisher.as_mut(),
            Side::Subscribe => self.subscriber.as_mut(),
        };
        let Some(peer) = peer else { return };
        let Some(turn) = peer.turn.as_mut() else {
            return;
        };
        let Some(sfu) = sfu else {
            return self.fail("--via-turn: no UDP candidate in the SFU's SDP".into());
        };
        if let Some(req) = turn.start(sfu, now) {
            if peer.socket.send_to(&req, turn.server).is_ok() {
                self.traffic.bytes_out += req.len() as u64;
            }
        }
    }

    fn on_subscribe_offer(&mut self, msg: &Value) {
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
            if let Some(t) = self.tracks.remove(&m) {
                finish_track(&mut self.totals, &t);
            }
        }
        for (mid, (owner, kind)) in listed {
            self.tracks.entry(mid).or_insert_with(|| RxTrack {
                kind,
                owner,
                stats: TrackStats::default(),
                reassembler: Reassembler::default(),
            });
        }
        self.send(json!({"type": "subscribe_answer", "sdp": answer.to_sdp_string()}));
        let sfu = msg["sdp"].as_str().and_then(path::sfu_candidate);
        self.start_turn(Side::Subscribe, sfu, Instant::now());
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
        if self.relay_due().is_some_and(|t| t <= now) {
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
            if let Some(turn) = peer.turn.as_mut() {
                if let Some(req) = turn.poll_retransmit(now) {
                    let _ = peer.socket.send_to(&req, turn.server);
                }
                if let Some(f) = turn.failure() {
                    if self.failed.is_none() {
                        self.totals
                            .note_error(format!("participant {}: {f}", self.spec.index));
                        self.failed = Some(f);
                    }
                }
            }
            // poll_output is not free: only after input (a due timeout or media written).
            let due = peer.next_timeout <= now;
            if due {
                let _ = peer.rtc.handle_input(Input::Timeout(now));
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
        if let Some(t) = self.relay_due() {
            d = d.min(t);
        }
        if let Some(t) = self.kx_flush {
            d = d.min(t);
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
                    let sent = match peer.turn.as_ref() {
                        // Through the relay only; nothing leaves before the channel is bound.
                        Some(turn) => turn
                            .wrap(t.source, &t.contents)
                            .and_then(|w| peer.socket.send_to(&w, turn.server).ok()),
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
            (Side::Publish, Event::KeyframeRequest(_)) => self.generator.request_keyframe(),
            (_, Event::IceConnectionStateChange(str0m::IceConnectionState::Disconnected)) => {
                self.fail(format!("{side:?} ICE disconnected"));
            }
            (Side::Subscribe, Event::RtpPacket(p)) => self.on_rtp(p, now),
            _ => {}
        }
    }

    fn on_rtp(&mut self, p: str0m::rtp::RtpPacket, now: Instant) {
        let Some(peer) = self.subscriber.as_mut() else {
            return;
        };
        let Some(mid) = peer
            .rtc
            .direct_api()
            .stream_rx(&p.header.ssrc)
            .map(|s| s.mid())
        else {
            return;
        };
        let Some(track) = self.tracks.get_mut(&mid) else {
            return;
        };
        let now_us = clock::micros(now);
        let clock_rate = match track.kind {
            Kind::Audio => AUDIO_CLOCK,
            Kind::Video => VIDEO_CLOCK,
        };
        track
            .stats
            .on_packet(*p.seq_no, p.header.timestamp, clock_rate, now_us);
        let frame = match track.kind {
            Kind::Audio => Some(p.payload.to_vec()),
            Kind::Video => {
                track
                    .reassembler
                    .push(*p.seq_no, p.header.timestamp, p.header.marker, &p.payload)
            }
        };
        let Some(frame) = frame else { return };
        let plain = if self.spec.e2ee {
            match self.ring.decrypt(&track.owner, &frame, &mut self.plain) {
                Ok(_) => &self.plain[..],
                Err(DecryptError::NoKey(_)) => {
                    track.stats.no_key += 1;
                    return;
                }
                Err(e) => {
                    track.stats.integrity_errors += 1;
                    self.totals
                        .note_error(format!("participant {}: {e}", self.spec.index));
                    return;
                }
            }
        } else {
            &frame[..]
        };
        match FrameHeader::decode(plain) {
            // A publisher's frames all name one sender: its first frame's.
            Ok(h)
                if h.kind == track.kind
                    && *self.senders.entry(track.owner.clone()).or_insert(h.sender) == h.sender =>
            {
                let latency = track.stats.on_frame(&h, now_us);
                let _ = self.totals.latency_us.record(latency.max(1));
                self.latency_sum.0 += latency;
                self.latency_sum.1 += 1;
                if self.first_frame.is_none() {
                    self.first_frame = Some(now);
                }
            }
            Ok(h) => {
                track.stats.integrity_errors += 1;
                self.totals.note_error(format!(
                    "frame of sender {} kind {:?} on a {:?} track of {}",
                    h.sender, h.kind, track.kind, track.owner
                ));
            }
            Err(e) => {
                track.stats.integrity_errors += 1;
                self.totals.note_error(format!(
                    "participant {}: content check: {e}",
                    self.spec.index
                ));
            }
        }
    }

    fn send_frame(&mut self, spec: &FrameSpec, now: Instant) {
        let (Some(peer), Some(key)) = (self.publisher.as_mut(), self.key.as_mut()) else {
            return;
        };
        let (mid, codec) = match spec.kind {
            Kind::Audio => (self.audio_mid, Codec::Opus),
            Kind::Video => (self.video_mid, Codec::Vp8),
        };
        let Some(mid) = mid else { return };
        let Some(pt) = peer
            .rtc
            .codec_config()
            .find(|p| p.spec().codec == codec)
            .map(|p| p.pt())
        else {
            return;
        };
        let header = FrameHeader {
            sender: self.spec.index,
            kind: spec.kind,
            layer: spec.layer,
            keyframe: spec.keyframe,
            number: spec.number,
            sent_us: clock::micros(now),
        };
        let plain = header.encode(spec.bytes);
        let data = if self.spec.e2ee {
            match key.encrypt(&plain) {
                Ok(d) => d,
                Err(e) => return self.fail(format!("encrypt: {e}")),
            }
        } else {
            plain
        };
        let mut api = peer.rtc.direct_api();
        let Some(tx) = api.stream_tx_by_mid(mid, spec.rid.map(Rid::from)) else {
            return;
        };
        let seq = self.seqs.entry((spec.kind, spec.layer)).or_insert(0);
        self.totals.frames_sent += 1;
        match spec.kind {
            Kind::Audio => {
                tx.write_rtp(
                    RtpWrite::new(pt, (*seq).into(), spec.rtp_time, now, data).marker(true),
                );
                *seq += 1;
                self.totals.packets_sent += 1;
            }
            Kind::Video => {
                for packet in packetize_video(&data) {
                    tx.write_rtp(
                        RtpWrite::new(pt, (*seq).into(), spec.rtp_time, now, packet.payload)
                            .marker(packet.marker)
                            .nackable(true),
                    );
                    *seq += 1;
                    self.totals.packets_sent += 1;
                }
            }
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
        for t in self.tracks.values() {
            finish_track(&mut totals, t);
        }
        if self.spec.subscribe {
            totals.tracks_expected += self.spec.expected_tracks;
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

fn finish_track(totals: &mut Totals, t: &RxTrack) {
    let (clock, video) = match t.kind {
        Kind::Audio => (AUDIO_CLOCK, false),
        Kind::Video => (VIDEO_CLOCK, true),
    };
    totals.add_track(&t.stats, clock, video);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key_exchange::KeyExchange;

    fn publisher(now: Instant) -> (Participant, tokio::sync::mpsc::UnboundedReceiver<String>) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let spec = ParticipantSpec {
            index: 1,
            room: "r".into(),
            token: "t".into(),
            publish: true,
            subscribe: false,
            audio: true,
            video: None,
            simulcast: false,
            e2ee: true,
            expected_tracks: 0,
            via_turn: None,
        };
        let ip = std::net::Ipv4Addr::LOCALHOST.into();
        (Participant::new(spec, ip, None, tx, now).unwrap(), rx)
    }

    fn drain(rx: &mut tokio::sync::mpsc::UnboundedReceiver<String>) -> Vec<Value> {
        std::iter::from_fn(|| rx.try_recv().ok())
            .map(|t| serde_json::from_str(&t).unwrap())
            .collect()
    }

    #[test]
    fn newcomers_get_one_batch_after_the_window() {
        let t0 = Instant::now();
        let (mut p, mut rx) = publisher(t0);
        p.on_signal(r#"{"type":"joined","participant":{"id":"PA_me"}}"#, t0);
        drain(&mut rx);
        let mut browsers: Vec<KeyExchange> =
            (0..100).map(|_| KeyExchange::new(None).unwrap()).collect();
        for (i, b) in browsers.iter().enumerate() {
            let msg =
                json!({"type": "relay", "from": format!("PA_{i}"), "payload": b.hello().payload});
            p.on_signal(&msg.to_string(), t0);
        }
        assert!(
            drain(&mut rx).is_empty(),
            "nothing before the window closes"
        );
        assert_eq!(p.deadline(), t0 + KEY_BATCH_WINDOW);
        p.poll(t0 + KEY_BATCH_WINDOW);
        let sent = drain(&mut rx);
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0]["to"].as_array().map(Vec::len), Some(100));
        assert_eq!(sent[0]["payload"]["kind"], "e2ee-keys");
        for (i, b) in browsers.iter_mut().enumerate() {
            b.set_id(&format!("PA_{i}"));
            let got = b.handle("PA_me", &sent[0]["payload"], &mut Vec::new());
            assert_eq!(got.map(|r| r.key), p.kx.current(), "PA_{i}");
        }
    }

    #[test]
    fn key_exchange_over_signaling_is_paced_under_the_rate_limit() {
        let t0 = Instant::now();
        let (mut p, mut rx) = publisher(t0);
        p.on_signal(r#"{"type":"joined","participant":{"id":"PA_me"}}"#, t0);
        let first = drain(&mut rx);
        let hello = first.iter().find(|m| m["type"] == "relay").unwrap();
        assert_eq!(hello["to"], "everyone");
        assert_eq!(hello["payload"]["kind"], "e2ee-hello");
        // 200 senders already in the room answer our hello at once with
        // their batches: each wants an ack (200 relays), and we owe them all
        // our key (one batch).
        for i in 0..200 {
            let mut other = KeyExchange::new(Some(BaseKey::generate())).unwrap();
            let id = format!("PA_{i}");
            other.set_id(&id);
            other.handle("PA_me", &hello["payload"], &mut Vec::new());
            for b in other.flush() {
                let msg = json!({"type": "relay", "from": id, "payload": b.payload});
                p.on_signal(&msg.to_string(), t0);
            }
        }
        let burst = drain(&mut rx);
        assert!(
            burst.len() <= SEND_BURST as usize,
            "{} sent at once",
            burst.len()
        );
        // The rest follows at the paced rate, announced by the deadline.
        let mut sent = burst.len();
        let mut now = t0;
        for _ in 0..1000 {
            let next = p.deadline().min(now + Duration::from_millis(50));
            now = next.max(now);
            p.poll(now);
            sent += drain(&mut rx)
                .iter()
                .filter(|m| m["type"] == "relay")
                .count();
            if sent >= 201 {
                break;
            }
        }
        assert_eq!(sent, 201);
        let secs = now.duration_since(t0).as_secs_f64();
        assert!(secs >= (201.0 - SEND_BURST) / SEND_RATE - 0.1, "{secs}");
        assert!(secs < 201.0 / SEND_RATE, "{secs}");
    }

    #[test]
    fn keys_from_the_exchange_reach_the_ring() {
        let t0 = Instant::now();
        let (mut p, mut rx) = publisher(t0);
        p.on_signal(r#"{"type":"joined","participant":{"id":"PA_me"}}"#, t0);
        let hello = drain(&mut rx)
            .into_iter()
            .find(|m| m["type"] == "relay")
            .unwrap();
        let key = BaseKey::generate();
        let mut other = KeyExchange::new(Some(key)).unwrap();
        other.set_id("PA_other");
        other.handle("PA_me", &hello["payload"], &mut Vec::new());
        for o in other.flush() {
            let msg = json!({"type": "relay", "from": "PA_other", "payload": o.payload});
            p.on_signal(&msg.to_string(), t0);
        }
        assert!(p.ring.knows("PA_other"));
        // Our answers: the ack at once, our own key after the window.
        let mut answers = drain(&mut rx);
        p.poll(t0 + KEY_BATCH_WINDOW);
        answers.extend(drain(&mut rx));
        let kinds: Vec<&str> = answers
            .iter()
            .filter_map(|m| m["payload"]["kind"].as_str())
            .collect();
        assert_eq!(kinds, ["e2ee-ack", "e2ee-keys"]);
        let mut out = Vec::new();
        let learned: Vec<_> = answers
            .iter()
            .filter_map(|m| other.handle("PA_me", &m["payload"], &mut out))
            .collect();
        assert_eq!(learned.len(), 1);
        let learned = &learned[0];
        assert_eq!(Some(learned.key), p.kx.current());
        assert!(other.acknowledged("PA_me", key.kid));
    }
}
