//! The packet path inside a shard: a publisher's packet, handed over by its
//! str0m connection, goes through its receiver to every down-track bound to
//! it and is written into each subscriber's connection. Keyframe requests
//! travel the other way. Video takes no string lookup: publisher m-line →
//! receiver key → down-track keys → subscriber keys, all arena indexes; an
//! audio packet also feeds its room's speaker detector, by room key.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use str0m::format::Codec;
use str0m::media::{KeyframeRequestKind, MediaKind};
use str0m::rtp::{RtpPacket, RtpWrite};

use super::{mark, Engine, Signal, TrunkOut};
use crate::cluster::trunk::wire::{
    media_header, Control, FLAG_KEYFRAME, FLAG_SIMULCAST, MEDIA_HEADER_LEN,
};
use crate::media::down_track::Skip;
use crate::media::ids::{PeerKey, ReceiverKey};
use crate::media::packet::{Extensions, MediaPacket};
use crate::media::receiver::{Accepted, Origin, Refusal};
use crate::media::{trunk_rtp, vp8};

/// A packet on its way into [`Engine::fan_out`], from a publisher's
/// connection or from the trunk.
pub(super) struct Incoming {
    pub ssrc: u32,
    /// Extended sequence number.
    pub seq: u64,
    pub rtp_time: u32,
    pub marker: bool,
    pub arrival: Instant,
    /// It belongs to one of several simulcast encodings.
    pub simulcast: bool,
    pub extensions: Extensions,
    pub payload: Arc<[u8]>,
}

impl Engine {
    /// Forwards one publisher packet to every down-track of its receiver.
    /// Reads header fields only; the payload is passed on as the same bytes.
    pub(super) fn forward(&mut self, publisher: PeerKey, packet: RtpPacket, now: Instant) {
        self.metrics.rtp_packets_in.inc();
        self.metrics
            .rtp_bytes_in
            .inc_by(packet.payload.len() as u64);
        let Some(peer) = self.peers.get_mut(publisher) else {
            return;
        };
        let Some((mid, rid)) = peer
            .rtc
            .direct_api()
            .stream_rx(&packet.header.ssrc)
            .map(|s| (s.mid(), s.rid()))
        else {
            return self.drop_packet("unknown_stream");
        };
        let Some(&receiver_key) = peer.published.get(&mid) else {
            return self.drop_packet("unpublished");
        };
        let Some(receiver) = self.receivers.get_mut(receiver_key) else {
            return;
        };
        let codecs = peer.rtc.codec_config();
        let accepted = receiver.accept(
            rid,
            packet.header.payload_type,
            packet.payload.len(),
            now,
            |pt| codecs.find(|p| p.pt() == pt).copied(),
        );
        let incoming = Incoming {
            ssrc: *packet.header.ssrc,
            seq: *packet.seq_no,
            rtp_time: packet.header.timestamp,
            marker: packet.header.marker,
            arrival: packet.timestamp,
            simulcast: rid.is_some(),
            extensions: Extensions::from_str0m(&packet.header.ext_vals),
            payload: packet.payload,
        };
        self.fan_out(receiver_key, accepted, incoming, now);
    }

    /// Takes a packet its receiver accepted (or refused) to the receiver's
    /// down-tracks and, for a track published here, to the other nodes that
    /// asked for it. The same path for a publisher's packets and those that
    /// came over the trunk.
    pub(super) fn fan_out(
        &mut self,
        receiver_key: ReceiverKey,
        accepted: Result<Accepted, Refusal>,
        packet: Incoming,
        now: Instant,
    ) {
        let Accepted {
            codec,
            layer,
            started,
        } = match accepted {
            Ok(accepted) => accepted,
            Err(refusal) => return self.drop_packet(refusal.label()),
        };
        let Some(receiver) = self.receivers.get(receiver_key) else {
            return;
        };
        if started && receiver.kind == MediaKind::Video {
            // A layer appeared (or came back): its subscribers choose again
            // before this packet goes out (a new video down-track carries
            // nothing until its first choice).
            self.reallocate_subscribers(receiver_key, now);
        }
        let Some(receiver) = self.receivers.get_mut(receiver_key) else {
            return;
        };
        // Changing between simulcast layers must wait for a keyframe of the
        // new one, which only VP8 lets the SFU see (the web client leaves its
        // frame header clear). A single-layer stream, or a codec whose frames
        // cannot be read, is joined at any packet, as before simulcast: the
        // subscriber's decoder asks for a keyframe itself.
        let vp8 = match codec.spec().codec {
            Codec::Vp8 => vp8::parse(&packet.payload).ok(),
            _ => None,
        };
        let switch_point = match vp8 {
            Some(info) if receiver.is_simulcast() => info.keyframe,
            _ => true,
        };
        if let Some(info) = vp8.filter(|i| i.keyframe) {
            receiver.keyframe_seen(layer, info.size);
        }
        if let Some(tid) = vp8.and_then(|i| i.temporal) {
            receiver.temporal_seen(layer, tid, packet.payload.len());
        }
        // Active speakers (room/speakers.rs) from the clear RFC 6464 level;
        // with forward_loudest_audio, only the top-ranked speakers' audio.
        if receiver.kind == MediaKind::Audio {
            if let Some(room) = self.rooms.by_key_mut(receiver.room) {
                if let Some(level) = packet.extensions.audio_level {
                    let heard = room.hear(receiver_key, level.unsigned_abs(), now);
                    if let Some((out, changed)) = heard {
                        self.metrics.speaker_changes.inc_by(u64::from(changed));
                        self.signals
                            .extend(out.into_iter().map(|(c, m)| Signal::Message(c, m)));
                    }
                }
                let loudest = self.config.media.forward_loudest_audio;
                if loudest > 0 && !room.speakers.is_within(&receiver_key, loudest) {
                    return self.drop_packet("not_loudest");
                }
            }
        }
        let payload = if self.corrupt_payloads && !packet.payload.is_empty() {
            let mut bytes = packet.payload.to_vec();
            let last = bytes.len() - 1;
            bytes[last] ^= 0x5a;
            bytes.into()
        } else {
            packet.payload
        };
        let media = MediaPacket {
            ssrc: packet.ssrc,
            seq: packet.seq,
            rtp_time: packet.rtp_time,
            marker: packet.marker,
            arrival: packet.arrival,
            codec,
            layer,
            switch_point,
            vp8,
            extensions: packet.extensions,
            payload,
        };
        if !receiver.trunk_sinks().is_empty() {
            let keyframe = if vp8.is_some_and(|i| i.keyframe) {
                FLAG_KEYFRAME
            } else {
                0
            };
            let flags = keyframe | if packet.simulcast { FLAG_SIMULCAST } else { 0 };
            let mut datagram = Vec::with_capacity(MEDIA_HEADER_LEN + 24 + media.payload.len());
            datagram.extend_from_slice(&media_header(receiver.trunk_number, layer, flags));
            trunk_rtp::write(&media, *codec.pt(), &mut datagram);
            let datagram = Bytes::from(datagram);
            for &(node, layers) in receiver.trunk_sinks() {
                if layers & (1 << layer) != 0 {
                    self.trunk_out.push_back(TrunkOut::Media {
                        node,
                        datagram: datagram.clone(),
                    });
                }
            }
        }
        let nackable = receiver.kind == MediaKind::Video;
        let ext_vals = media.extensions.to_str0m();
        // Counted once per packet: the counters are shared by every shard,
        // and an atomic add per subscriber would bounce their cache line.
        let mut sent = 0u64;
        // Layers some down-track waits for a keyframe of (bit per layer).
        let mut awaited = 0u8;
        for &key in receiver.down_tracks() {
            let Some(down) = self.down_tracks.get_mut(key) else {
                continue;
            };
            let Some(sub) = self.peers.get_mut(down.subscriber) else {
                continue;
            };
            let rtc = &sub.rtc;
            let out = match down.rewrite(
                &media,
                |codec| rtc.codec_config().match_params(*codec).map(|p| p.pt()),
                now,
            ) {
                Ok(out) => out,
                Err(Skip::OtherLayer) => {
                    if let Some(l) = down.awaits_keyframe() {
                        awaited |= 1 << l;
                    }
                    continue;
                }
                Err(skip) => {
                    self.metrics
                        .dropped
                        .with_label_values(&[skip.label()])
                        .inc();
                    continue;
                }
            };
            let mut api = sub.rtc.direct_api();
            let Some(tx) = api.stream_tx_by_mid(down.mid, None) else {
                self.metrics
                    .dropped
                    .with_label_values(&["not_negotiated"])
                    .inc();
                continue;
            };
            // Forwarded media leaves as it arrives, as in mediasoup and
            // LiveKit: str0m's pacer (1.1 × the estimate) would hold every
            // keyframe burst back by hundreds of milliseconds. Padding and
            // probes stay paced.
            tx.set_unpaced(true);
            let mut write = RtpWrite::new(
                out.pt,
                out.seq.into(),
                out.rtp_time,
                media.arrival,
                media.payload.clone(),
            )
            .marker(media.marker)
            .ext_vals(ext_vals.clone())
            .nackable(nackable);
            if let Some(patch) = out.vp8_patch {
                write = write.vp8_patch(patch);
            }
            tx.write_rtp(write);
            mark(&mut self.dirty, sub);
            sent += 1;
        }
        self.metrics.rtp_packets_out.inc_by(sent);
        self.metrics
            .rtp_bytes_out
            .inc_by(sent * media.payload.len() as u64);
        for layer in (0..8u8).filter(|l| awaited & (1 << l) != 0) {
            self.request_keyframe(
                receiver_key,
                layer,
                KeyframeRequestKind::Pli,
                "layer_switch",
                now,
            );
        }
    }

    /// Asks the receiver's publisher for a keyframe of `layer`, throttled.
    pub(super) fn request_keyframe(
        &mut self,
        receiver: ReceiverKey,
        layer: u8,
        kind: KeyframeRequestKind,
        outcome: &str,
        now: Instant,
    ) {
        let Some(r) = self.receivers.get_mut(receiver) else {
            return;
        };
        if r.kind != MediaKind::Video {
            return;
        }
        if !r.keyframe_request(layer, now) {
            self.metrics
                .keyframe_requests
                .with_label_values(&["throttled"])
                .inc();
            return;
        }
        let (mid, rid) = (r.mid, r.rid(layer));
        match r.origin {
            Origin::Peer(publisher) => {
                let Some(peer) = self.peers.get_mut(publisher) else {
                    return;
                };
                let mut api = peer.rtc.direct_api();
                let Some(rx) = api.stream_rx_by_mid(mid, rid) else {
                    return;
                };
                rx.request_keyframe(kind);
                mark(&mut self.dirty, peer);
            }
            // The publisher's node asks it (throttled there too).
            Origin::Trunk { node, track } => {
                let message = Control::KeyframeRequest { track, layer };
                self.trunk_out
                    .push_back(TrunkOut::Control { node, message });
            }
        }
        self.metrics
            .keyframe_requests
            .with_label_values(&[outcome])
            .inc();
    }

    /// Redoes the allocation of every subscriber of `receiver`.
    fn reallocate_subscribers(&mut self, receiver: ReceiverKey, now: Instant) {
        let Some(r) = self.receivers.get(receiver) else {
            return;
        };
        let subscribers: Vec<PeerKey> = r
            .down_tracks()
            .iter()
            .filter_map(|&k| Some(self.down_tracks.get(k)?.subscriber))
            .collect();
        for subscriber in subscribers {
            self.allocate(subscriber, now);
        }
    }

    pub(super) fn drop_packet(&self, reason: &str) {
        self.metrics.dropped.with_label_values(&[reason]).inc();
    }
}
