//! One peer connection: a str0m `Rtc` in RTP mode plus what the SFU needs to
//! know about its m-lines.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use std::sync::Arc;

use str0m::change::SdpPendingOffer;
use str0m::media::{MediaKind, Mid};
use str0m::net::{Protocol, TcpType};
use str0m::rtp::{Extension, ExtensionSerializer, ExtensionValues};
use str0m::{Candidate, Rtc};

use super::allocator::Allocator;
use super::downlink::Downlink;
use super::ids::{DownTrackKey, PeerKey, ReceiverKey};
use crate::config::MediaConfig;
use str0m::bwe::Bitrate;

/// How long a subscriber held back by its estimate waits before it first
/// asks for a probe (`engine/adapt.rs`).
pub const FIRST_PROBE_AFTER: Duration = Duration::from_secs(2);

/// What a peer connection is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Receives the participant's tracks; the client makes the offers.
    Publisher,
    /// Sends tracks to the participant. `offerer`: the server makes the
    /// offers (WebSocket clients); otherwise the client offered once (WHEP).
    Subscriber {
        /// Whether the server owns the negotiation.
        offerer: bool,
    },
}

/// An offer made to the client that has not been answered yet.
#[derive(Debug)]
pub struct PendingOffer {
    /// str0m's half of the negotiation.
    pub pending: SdpPendingOffer,
    /// Down-tracks added by this offer (become ready with the answer).
    pub added: Vec<Mid>,
    /// M-lines this offer stops (unbound down-tracks again if the answer fails).
    pub stopped: Vec<(Mid, MediaKind)>,
}

/// One `Rtc` and its bookkeeping.
#[derive(Debug)]
pub struct Peer {
    /// This peer's key.
    pub id: PeerKey,
    /// The room it belongs to.
    pub room: String,
    /// Its participant.
    pub participant: String,
    /// Publisher or subscriber.
    pub role: Role,
    /// The WebRTC state machine.
    pub rtc: Rtc,
    /// When str0m next wants a timeout.
    pub timeout: Instant,
    /// The deadline queued for it in the engine's timers, if any.
    pub scheduled: Option<Instant>,
    /// Last datagram received (or creation).
    pub last_heard: Instant,
    /// ICE + DTLS are up.
    pub connected: bool,
    /// Remote addresses demultiplexed to this peer.
    pub addrs: Vec<(Protocol, SocketAddr)>,
    /// Queued for `poll_output` draining (see `Engine::drive`).
    pub dirty: bool,
    /// Publisher: m-lines the client added, with their kinds.
    pub remote_media: BTreeMap<Mid, MediaKind>,
    /// Publisher: the receiver of each m-line's track.
    pub published: BTreeMap<Mid, ReceiverKey>,
    /// Publisher: client labels by mid.
    pub labels: BTreeMap<String, String>,
    /// Subscriber: the down-track of each sending m-line.
    pub slots: BTreeMap<Mid, DownTrackKey>,
    /// Subscriber (offerer): the offer in flight.
    pub pending: Option<PendingOffer>,
    /// Subscriber (offerer): changes arrived while an offer was in flight.
    pub renegotiate: bool,
    /// Subscriber: shares the downlink among its video down-tracks.
    pub allocator: Allocator,
    /// Subscriber: its downlink (the estimate, a single fall held back;
    /// fixed when estimation is off).
    pub downlink: Downlink,
    /// Subscriber: when the allocation is next redone; publisher: when
    /// its tracks' layers are next reviewed (dynacast).
    pub next_allocation: Instant,
    /// When a subscriber held back by its downlink may next ask its
    /// estimator to probe for more, and how much its desired rate has been
    /// raised for that.
    pub next_probe: Instant,
    pub probe_every: Duration,
    pub probe_nudge: u64,
    /// Since when a step up to a larger layer is being tried (padding at
    /// its rate before the switch).
    pub climb_since: Option<Instant>,
}

/// Where the server's media sockets are, as announced in candidates.
#[derive(Debug, Clone)]
pub struct LocalAddrs {
    /// UDP candidate addresses (all peers share one socket).
    pub udp: Vec<SocketAddr>,
    /// ICE-TCP passive candidate addresses.
    pub tcp: Vec<SocketAddr>,
}

impl Peer {
    /// When the engine must look at this peer: str0m's next timeout, its
    /// next allocation or layer review, or when it will have been silent
    /// for `peer_timeout`.
    pub fn deadline(&self, peer_timeout: Duration) -> Instant {
        self.timeout
            .min(self.last_heard + peer_timeout)
            .min(self.next_allocation)
    }

    /// A new ICE-lite, RTP-mode peer with host candidates for `local`,
    /// keeping `retransmit_packets` recent packets per video stream it sends.
    pub fn new(
        id: PeerKey,
        room: &str,
        participant: &str,
        role: Role,
        local: &LocalAddrs,
        media: &MediaConfig,
        now: Instant,
    ) -> Self {
        // str0m keeps each sent video packet's header (a few hundred bytes;
        // the payload itself is shared) per subscriber stream, for NACKs.
        let mut config = rtc_config().set_send_buffer_video(media.retransmit_packets.max(1));
        let downlink = media.initial_downlink_kbps.saturating_mul(1000);
        if role != Role::Publisher && media.bandwidth_estimation {
            config = config.enable_bwe(Some(Bitrate::bps(downlink)));
        }
        let mut rtc = config.build(now);
        for addr in &local.udp {
            if let Ok(c) = Candidate::host(*addr, "udp") {
                rtc.add_local_candidate(c);
            }
        }
        for addr in &local.tcp {
            if let Ok(c) = Candidate::builder()
                .tcp()
                .host(*addr)
                .tcptype(TcpType::Passive)
                .build()
            {
                rtc.add_local_candidate(c);
            }
        }
        Self {
            id,
            room: room.to_string(),
            participant: participant.to_string(),
            role,
            rtc,
            timeout: now,
            scheduled: None,
            last_heard: now,
            connected: false,
            addrs: Vec::new(),
            dirty: false,
            remote_media: BTreeMap::new(),
            published: BTreeMap::new(),
            labels: BTreeMap::new(),
            slots: BTreeMap::new(),
            pending: None,
            renegotiate: false,
            allocator: Allocator::default(),
            downlink: Downlink::new(downlink),
            next_allocation: now,
            next_probe: now,
            probe_every: FIRST_PROBE_AFTER,
            probe_nudge: 0,
            climb_since: None,
        }
    }
}

/// The URI of the AV1 dependency descriptor header extension.
pub const DEPENDENCY_DESCRIPTOR_URI: &str =
    "https://aomediacodec.github.io/av1-rtp-spec/#dependency-descriptor-rtp-header-extension";

/// A dependency descriptor's raw bytes, carried through unparsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DependencyDescriptor(pub Arc<[u8]>);

/// Copies the dependency descriptor between incoming and outgoing packets.
#[derive(Debug)]
struct DependencyDescriptorPassThrough;

impl ExtensionSerializer for DependencyDescriptorPassThrough {
    fn write_to(&self, buf: &mut [u8], ev: &ExtensionValues) -> usize {
        match ev.user_values.get::<DependencyDescriptor>() {
            Some(dd) if dd.0.len() <= buf.len() => {
                buf[..dd.0.len()].copy_from_slice(&dd.0);
                dd.0.len()
            }
            _ => 0,
        }
    }

    fn parse_value(&self, buf: &[u8], ev: &mut ExtensionValues) -> bool {
        ev.user_values.set(DependencyDescriptor(buf.into()));
        true
    }

    fn is_video(&self) -> bool {
        true
    }

    fn is_audio(&self) -> bool {
        false
    }

    fn requires_two_byte_form(&self, ev: &ExtensionValues) -> bool {
        ev.user_values
            .get::<DependencyDescriptor>()
            .is_some_and(|dd| dd.0.len() > 16 || dd.0.is_empty())
    }
}

/// The dependency descriptor extension, carried as opaque bytes.
pub fn dependency_descriptor_extension() -> Extension {
    Extension::with_serializer(DEPENDENCY_DESCRIPTOR_URI, DependencyDescriptorPassThrough)
}

/// The `Rtc` configuration every peer uses: ICE-lite, RTP mode, every codec
/// the SFU passes through, and the header extension ids Chromium offers
/// (Chromium refuses offers that reassign ids it uses), plus the
/// dependency descriptor on an id Chromium leaves free.
fn rtc_config() -> str0m::RtcConfig {
    Rtc::builder()
        .set_ice_lite(true)
        .set_rtp_mode(true)
        .clear_codecs()
        .enable_opus(true, false)
        .enable_vp8(true)
        .enable_vp9(true)
        .enable_h264(true)
        .enable_av1(true)
        .clear_extension_map()
        .set_extension(1, Extension::AudioLevel)
        .set_extension(2, Extension::AbsoluteSendTime)
        .set_extension(3, Extension::TransportSequenceNumber)
        .set_extension(4, Extension::RtpMid)
        .set_extension(10, Extension::RtpStreamId)
        .set_extension(11, Extension::RepairedRtpStreamId)
        .set_extension(13, Extension::VideoOrientation)
        .set_extension(12, dependency_descriptor_extension())
}
