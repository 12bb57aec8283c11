//! A test participant on str0m (full ICE, RTP mode) speaking the SFU's
//! WebSocket signaling. It publishes one audio and one video track with
//! payloads derived from (sender, kind, counter), so receivers can check every
//! byte, and records what it receives.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use sfu::media::ice_tcp;
use sfu::media::peer::{dependency_descriptor_extension, DependencyDescriptor};
use sfu::server::Server;
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::format::Codec;
use str0m::media::KeyframeRequestKind;
use str0m::media::{Direction, MediaKind, Mid};
use str0m::net::{Protocol, Receive, TcpType};
use str0m::rtp::{ExtensionValues, RtpWrite};
use str0m::{Candidate, Event, Input, Output, Rtc};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

const AUDIO: u8 = 1;
const VIDEO: u8 = 2;

/// The payload a sender puts in packet `n` of a track of `kind`.
pub fn payload(sender: u8, kind: u8, n: u32) -> Vec<u8> {
    let len = if kind == AUDIO {
        60 + (n % 40) as usize
    } else {
        200 + (n % 50) as usize * 17
    };
    let mut p = vec![0xE2, sender, kind];
    p.extend_from_slice(&n.to_be_bytes());
    p.extend((p.len()..len).map(|i| (i as u32 * 31 + n * 7 + u32::from(sender)) as u8));
    p
}

/// The audio level a sender writes on its audio packets.
pub fn audio_level(sender: u8) -> i8 {
    -20 - sender as i8
}

/// How a test participant behaves.
#[derive(Debug, Clone)]
pub struct Options {
    /// Publish one audio and one video track.
    pub publish: bool,
    /// The only video codec the publisher offers.
    pub video_codec: Codec,
    /// Media over ICE-TCP instead of UDP.
    pub tcp: bool,
    /// UDP: send each connection's first datagram here instead of where
    /// ICE addressed it (a misrouted packet, e.g. to another shard's port).
    pub misroute_first: Option<SocketAddr>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            publish: true,
            video_codec: Codec::Vp8,
            tcp: false,
            misroute_first: None,
        }
    }
}

/// The dependency descriptor a sender writes on video packet `k`.
pub fn dependency_descriptor(sender: u8, k: u32) -> Vec<u8> {
    vec![0x80 | sender, (k >> 8) as u8, k as u8, 0x42, 0x17]
}

/// What one received track looked like.
#[derive(Debug, Default, Clone)]
pub struct Received {
    /// The publisher's participant id (from the subscribe offer).
    pub owner: String,
    /// `audio` / `video`.
    pub kind: String,
    /// Extended sequence numbers as received.
    pub seqs: Vec<u64>,
    /// Packets whose payload was exactly what the sender wrote.
    pub intact: usize,
    /// Packets whose payload differed.
    pub corrupt: usize,
    /// Sender indexes found in payloads.
    pub senders: Vec<u8>,
    /// Audio levels seen.
    pub levels: Vec<Option<i8>>,
    /// Video packets whose dependency descriptor matched what was sent.
    pub dd_intact: usize,
    /// The codec of the last packet, by the receiver's payload type.
    pub codec: Option<Codec>,
}

/// Everything the client observed.
#[derive(Debug, Default)]
pub struct State {
    /// Participant id from `joined`.
    pub id: Option<String>,
    /// Every server message, in order.
    pub messages: Vec<Value>,
    /// Current subscribe m-lines: mid → (track id, owner, kind).
    pub mids: HashMap<String, (String, String, String)>,
    /// Received tracks by track id.
    pub received: BTreeMap<String, Received>,
    /// The publish connection is up.
    pub publishing: bool,
    /// Number of subscribe offers answered.
    pub offers_answered: usize,
    /// Keyframe requests that reached this client as a publisher.
    pub keyframe_requests: usize,
}

impl State {
    /// Error codes received.
    pub fn error_codes(&self) -> Vec<String> {
        self.messages
            .iter()
            .filter(|m| m["type"] == "error")
            .map(|m| m["code"].as_str().unwrap_or("").to_string())
            .collect()
    }

    /// Messages of one type.
    pub fn of_type(&self, t: &str) -> Vec<Value> {
        self.messages
            .iter()
            .filter(|m| m["type"] == t)
            .cloned()
            .collect()
    }
}

enum Control {
    Raw(String),
    Freeze,
    Leave,
    RequestKeyframes(usize),
}

/// A running test participant.
pub struct Client {
    /// The index written into its payloads.
    pub index: u8,
    /// What it observed.
    pub state: Arc<Mutex<State>>,
    /// The audio level (-dBov) written on its audio packets from now on.
    level: Arc<AtomicI8>,
    control: mpsc::Sender<Control>,
    task: JoinHandle<()>,
}

impl Client {
    /// Joins with `token`; publishes audio+video if `publish`.
    pub async fn join(server: &Server, token: &str, index: u8, publish: bool) -> Client {
        let options = Options {
            publish,
            ..Options::default()
        };
        Self::join_with(server, token, index, options).await
    }

    /// Joins with `token` and explicit options.
    pub async fn join_with(server: &Server, token: &str, index: u8, options: Options) -> Client {
        Self::join_at(server.http_addr, token, index, options).await
    }

    /// Joins the server whose HTTP listener is `http` (e.g. a node process).
    pub async fn join_at(http: SocketAddr, token: &str, index: u8, options: Options) -> Client {
        let url = format!("ws://{http}/ws");
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("websocket connects");
        let state = Arc::new(Mutex::new(State::default()));
        let (control, control_rx) = mpsc::channel(16);
        let join = json!({"type": "join", "version": 1, "token": token}).to_string();
        let level = Arc::new(AtomicI8::new(audio_level(index)));
        let task = tokio::spawn(run(
            ws,
            join,
            index,
            options,
            state.clone(),
            level.clone(),
            control_rx,
        ));
        Client {
            index,
            state,
            level,
            control,
            task,
        }
    }

    /// The participant id, once joined.
    pub fn id(&self) -> Option<String> {
        self.state.lock().unwrap().id.clone()
    }

    /// Writes `level` (RFC 6464: 0 loudest, -127 silence) on the audio
    /// packets sent from now on.
    pub fn set_audio_level(&self, level: i8) {
        self.level.store(level, Ordering::Relaxed);
    }

    /// Sends raw text on the signaling connection.
    pub async fn send_raw(&self, text: impl Into<String>) {
        let _ = self.control.send(Control::Raw(text.into())).await;
    }

    /// Stops all media I/O (sockets unread, nothing sent), keeping signaling open.
    pub async fn freeze(&self) {
        let _ = self.control.send(Control::Freeze).await;
    }

    /// Asks for a keyframe on every received video track, `n` times at once.
    pub async fn request_keyframes(&self, n: usize) {
        let _ = self.control.send(Control::RequestKeyframes(n)).await;
    }

    /// Sends `leave`.
    pub async fn leave(&self) {
        let _ = self.control.send(Control::Leave).await;
    }

    /// Whether the client task has ended (the server closed the WebSocket).
    pub fn finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Stops the task (drops the WebSocket without a close).
    pub fn abort(&self) {
        self.task.abort();
    }

    /// A snapshot of one received track, by the publisher's participant id and kind.
    pub fn received_from(&self, owner: &str, kind: &str) -> Option<Received> {
        let s = self.state.lock().unwrap();
        s.received
            .values()
            .find(|r| r.owner == owner && r.kind == kind)
            .cloned()
    }
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// One peer connection with its transport: UDP, or ICE-TCP (RFC 4571) as
/// the active side. Socket tasks feed `incoming`; `out` sends.
struct Peer {
    rtc: Rtc,
    local: SocketAddr,
    proto: Protocol,
    out: mpsc::UnboundedSender<(SocketAddr, Vec<u8>)>,
    incoming: mpsc::Receiver<(SocketAddr, Vec<u8>)>,
}

impl Peer {
    async fn new(options: &Options) -> Peer {
        let mut config = Rtc::builder()
            .set_rtp_mode(true)
            .set_extension(12, dependency_descriptor_extension());
        if options.video_codec != Codec::Vp8 {
            config = config.clear_codecs().enable_opus(true, false);
            config = match options.video_codec {
                Codec::Vp9 => config.enable_vp9(true),
                Codec::H264 => config.enable_h264(true),
                Codec::Av1 => config.enable_av1(true),
                _ => config.enable_vp8(true),
            };
        }
        let mut rtc = config.build(Instant::now());
        let (in_tx, incoming) = mpsc::channel(1024);
        let (out, out_rx) = mpsc::unbounded_channel();
        let (local, proto) = if options.tcp {
            let local: SocketAddr = "127.0.0.1:9".parse().unwrap();
            let c = Candidate::builder()
                .tcp()
                .host(local)
                .tcptype(TcpType::Active)
                .build()
                .unwrap();
            rtc.add_local_candidate(c);
            tokio::spawn(tcp_transport(out_rx, in_tx));
            (local, Protocol::Tcp)
        } else {
            let socket = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
            let local = socket.local_addr().unwrap();
            rtc.add_local_candidate(Candidate::host(local, "udp").unwrap());
            tokio::spawn(udp_transport(socket, out_rx, in_tx, options.misroute_first));
            (local, Protocol::Udp)
        };
        Peer {
            rtc,
            local,
            proto,
            out,
            incoming,
        }
    }

    /// Sends everything str0m has; returns its next timeout and the events.
    fn drain(&mut self) -> (Instant, Vec<Event>) {
        let mut events = Vec::new();
        loop {
            match self.rtc.poll_output() {
                Ok(Output::Timeout(t)) => return (t, events),
                Ok(Output::Transmit(t)) => {
                    let _ = self.out.send((t.destination, t.contents.to_vec()));
                }
                Ok(Output::Event(e)) => events.push(e),
                Err(_) => return (Instant::now() + Duration::from_millis(50), events),
            }
        }
    }

    fn receive(&mut self, from: SocketAddr, data: &[u8]) {
        if let Ok(r) = Receive::new(self.proto, from, self.local, data) {
            let _ = self.rtc.handle_input(Input::Receive(Instant::now(), r));
        }
    }
}

async fn udp_transport(
    socket: Arc<UdpSocket>,
    mut out: mpsc::UnboundedReceiver<(SocketAddr, Vec<u8>)>,
    incoming: mpsc::Sender<(SocketAddr, Vec<u8>)>,
    mut misroute_first: Option<SocketAddr>,
) {
    let reader = socket.clone();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 2048];
        while let Ok((n, from)) = reader.recv_from(&mut buf).await {
            if incoming.try_send((from, buf[..n].to_vec())).is_err() && incoming.is_closed() {
                return;
            }
        }
    });
    while let Some((to, data)) = out.recv().await {
        let to = misroute_first.take().unwrap_or(to);
        let _ = socket.send_to(&data, to).await;
    }
}

/// Connects to the first destination str0m sends to and frames both ways.
async fn tcp_transport(
    mut out: mpsc::UnboundedReceiver<(SocketAddr, Vec<u8>)>,
    incoming: mpsc::Sender<(SocketAddr, Vec<u8>)>,
) {
    let Some((server, first)) = out.recv().await else {
        return;
    };
    let Ok(stream) = TcpStream::connect(server).await else {
        return;
    };
    let (mut reader, mut writer) = stream.into_split();
    tokio::spawn(async move {
        let mut buf = Vec::new();
        let mut chunk = vec![0u8; 16 * 1024];
        while let Ok(n) = reader.read(&mut chunk).await {
            if n == 0 {
                return;
            }
            buf.extend_from_slice(&chunk[..n]);
            for frame in ice_tcp::deframe(&mut buf) {
                if incoming.send((server, frame)).await.is_err() {
                    return;
                }
            }
        }
    });
    let mut next = Some(first);
    while let Some(data) = next.take() {
        if let Some(framed) = ice_tcp::frame(&data) {
            if writer.write_all(&framed).await.is_err() {
                return;
            }
        }
        next = out.recv().await.map(|(_, d)| d);
    }
}

async fn run(
    mut ws: Ws,
    join: String,
    index: u8,
    options: Options,
    state: Arc<Mutex<State>>,
    level: Arc<AtomicI8>,
    mut control: mpsc::Receiver<Control>,
) {
    let _ = ws.send(Message::Text(join.into())).await;
    let publish = options.publish;
    let mut publisher = Peer::new(&options).await;
    let mut subscriber = Peer::new(&options).await;
    let mut pending: Option<SdpPendingOffer> = None;
    let mut mids: Option<(Mid, Mid)> = None;
    let mut frozen = false;
    let mut counter: u32 = 0;
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    loop {
        let mut next = Instant::now() + Duration::from_millis(100);
        if !frozen {
            for (is_sub, peer) in [(false, &mut publisher), (true, &mut subscriber)] {
                let (t, events) = peer.drain();
                next = next.min(t);
                for e in events {
                    on_event(is_sub, e, &mut peer.rtc, &state);
                }
            }
        }
        let sleep = tokio::time::sleep_until(next.max(Instant::now()).into());
        tokio::select! {
            c = control.recv() => match c {
                Some(Control::Raw(t)) => { let _ = ws.send(Message::Text(t.into())).await; }
                Some(Control::Freeze) => frozen = true,
                Some(Control::Leave) => { let _ = ws.send(Message::Text(json!({"type":"leave"}).to_string().into())).await; }
                Some(Control::RequestKeyframes(n)) => {
                    let video: Vec<Mid> = state.lock().unwrap().mids.iter()
                        .filter(|(_, (_, _, k))| k == "video").map(|(m, _)| Mid::from(m.as_str())).collect();
                    for _ in 0..n {
                        for mid in &video {
                            if let Some(rx) = subscriber.rtc.direct_api().stream_rx_by_mid(*mid, None) {
                                rx.request_keyframe(KeyframeRequestKind::Pli);
                            }
                        }
                        let _ = subscriber.drain();
                    }
                }
                None => return,
            },
            m = ws.next() => {
                let Some(Ok(Message::Text(text))) = m else {
                    if matches!(m, Some(Ok(_))) { continue }
                    return;
                };
                let Ok(msg) = serde_json::from_str::<Value>(&text) else { continue };
                match msg["type"].as_str() {
                    Some("joined") => {
                        state.lock().unwrap().id = msg["participant"]["id"].as_str().map(String::from);
                        if publish {
                            let mut api = publisher.rtc.sdp_api();
                            let a = api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
                            let v = api.add_media(MediaKind::Video, Direction::SendOnly, None, None, None);
                            let (offer, p) = api.apply().expect("offer");
                            pending = Some(p);
                            mids = Some((a, v));
                            let m = json!({"type": "publish_offer", "sdp": offer.to_sdp_string(),
                                "tracks": [{"mid": a.to_string(), "source": "microphone"},
                                           {"mid": v.to_string(), "source": "camera"}]});
                            let _ = ws.send(Message::Text(m.to_string().into())).await;
                        }
                    }
                    Some("publish_answer") => {
                        let answer = SdpAnswer::from_sdp_string(msg["sdp"].as_str().unwrap_or("")).expect("answer parses");
                        if let Some(p) = pending.take() {
                            publisher.rtc.sdp_api().accept_answer(p, answer).expect("answer applies");
                        }
                    }
                    Some("subscribe_offer") => {
                        let offer = SdpOffer::from_sdp_string(msg["sdp"].as_str().unwrap_or("")).expect("offer parses");
                        let answer = subscriber.rtc.sdp_api().accept_offer(offer).expect("offer applies");
                        {
                            let mut s = state.lock().unwrap();
                            s.mids = msg["tracks"].as_array().into_iter().flatten().map(|t| {
                                let f = |k: &str| t[k].as_str().unwrap_or("").to_string();
                                (f("mid"), (f("track_id"), f("participant_id"), f("kind")))
                            }).collect();
                            s.offers_answered += 1;
                        }
                        let m = json!({"type": "subscribe_answer", "sdp": answer.to_sdp_string()});
                        let _ = ws.send(Message::Text(m.to_string().into())).await;
                    }
                    _ => {}
                }
                state.lock().unwrap().messages.push(msg);
            }
            Some((from, data)) = publisher.incoming.recv(), if !frozen => publisher.receive(from, &data),
            Some((from, data)) = subscriber.incoming.recv(), if !frozen => subscriber.receive(from, &data),
            _ = tick.tick(), if !frozen => {
                if let Some((a, v)) = mids {
                    if state.lock().unwrap().publishing {
                        let l = level.load(Ordering::Relaxed);
                        send_media(&mut publisher.rtc, index, l, (a, v), options.video_codec, counter);
                        counter += 1;
                    }
                }
            }
            _ = sleep, if !frozen => {
                for peer in [&mut publisher, &mut subscriber] {
                    let _ = peer.rtc.handle_input(Input::Timeout(Instant::now()));
                }
            }
        }
    }
}

/// One audio packet and a two-packet video frame. Sequence numbers start
/// near the 16-bit wrap so forwarding across a rollover is exercised.
fn send_media(rtc: &mut Rtc, index: u8, level: i8, mids: (Mid, Mid), codec: Codec, n: u32) {
    let (audio, video) = mids;
    let pt = |codec: Codec| {
        rtc.codec_config()
            .find(|p| p.spec().codec == codec)
            .map(|p| p.pt())
    };
    let (Some(pt_a), Some(pt_v)) = (pt(Codec::Opus), pt(codec)) else {
        return;
    };
    let now = Instant::now();
    let mut api = rtc.direct_api();
    if let Some(tx) = api.stream_tx_by_mid(audio, None) {
        let exts = ExtensionValues {
            audio_level: Some(level),
            voice_activity: Some(true),
            ..Default::default()
        };
        let seq = 65_000u64 + u64::from(n);
        tx.write_rtp(
            RtpWrite::new(pt_a, seq.into(), n * 960, now, payload(index, AUDIO, n))
                .ext_vals(exts)
                .marker(true),
        );
    }
    if let Some(tx) = api.stream_tx_by_mid(video, None) {
        for part in 0..2u32 {
            let k = n * 2 + part;
            let seq = 65_000u64 + u64::from(k);
            let mut exts = ExtensionValues::default();
            exts.user_values
                .set(DependencyDescriptor(dependency_descriptor(index, k).into()));
            tx.write_rtp(
                RtpWrite::new(pt_v, seq.into(), n * 1800, now, payload(index, VIDEO, k))
                    .marker(part == 1)
                    .nackable(true)
                    .ext_vals(exts),
            );
        }
    }
}

fn on_event(is_sub: bool, event: Event, rtc: &mut Rtc, state: &Arc<Mutex<State>>) {
    match event {
        Event::Connected if !is_sub => state.lock().unwrap().publishing = true,
        Event::KeyframeRequest(_) if !is_sub => state.lock().unwrap().keyframe_requests += 1,
        Event::RtpPacket(p) if is_sub => {
            let Some(mid) = rtc.direct_api().stream_rx(&p.header.ssrc).map(|s| s.mid()) else {
                return;
            };
            let mut s = state.lock().unwrap();
            let Some((track, owner, kind)) = s.mids.get(&mid.to_string()).cloned() else {
                return;
            };
            let r = s.received.entry(track).or_default();
            r.owner = owner;
            r.kind = kind;
            r.seqs.push(*p.seq_no);
            r.levels.push(p.header.ext_vals.audio_level);
            r.codec = rtc
                .codec_config()
                .find(|c| c.pt() == p.header.payload_type)
                .map(|c| c.spec().codec);
            let bytes = &p.payload;
            let ok = bytes.len() >= 7 && {
                let n = u32::from_be_bytes([bytes[3], bytes[4], bytes[5], bytes[6]]);
                **bytes == *payload(bytes[1], bytes[2], n)
            };
            if ok && bytes[2] == VIDEO {
                let k = u32::from_be_bytes([bytes[3], bytes[4], bytes[5], bytes[6]]);
                let dd = p.header.ext_vals.user_values.get::<DependencyDescriptor>();
                if dd.is_some_and(|d| *d.0 == *dependency_descriptor(bytes[1], k)) {
                    r.dd_intact += 1;
                }
            }
            if ok {
                r.intact += 1;
                if !r.senders.contains(&bytes[1]) {
                    r.senders.push(bytes[1]);
                }
            } else {
                r.corrupt += 1;
            }
        }
        _ => {}
    }
}
