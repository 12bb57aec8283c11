//! What a participant sends and receives: SFrame-encrypted frames out on the
//! publish connection, and on the subscribe connection every RTP packet
//! reassembled into frames, decrypted and checked.

use std::time::Instant;

use str0m::format::Codec;
use str0m::media::Rid;
use str0m::rtp::RtpWrite;

use super::Participant;
use crate::clock;
use crate::frame::FrameHeader;
use crate::media::generator::{FrameSpec, Kind};
use crate::packetize::{packetize_video, VideoFrame};
use crate::sframe_keys::{vp8_clear_header, vp8_clear_len, DecryptError};

impl Participant {
    pub(super) fn on_rtp(&mut self, p: str0m::rtp::RtpPacket, now: Instant) {
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
        track.stats.on_packet(
            *p.seq_no,
            p.header.timestamp,
            track.kind.clock_rate(),
            now_us,
        );
        let (frame, descriptor) = match track.kind {
            Kind::Audio => (p.payload.to_vec(), None),
            Kind::Video => {
                match track.reassembler.push(
                    *p.seq_no,
                    p.header.timestamp,
                    p.header.marker,
                    &p.payload,
                ) {
                    Some(VideoFrame { data, descriptor }) => (data, Some(descriptor)),
                    None => return,
                }
            }
        };
        // Video frames start with their VP8 header in clear.
        let clear = match track.kind {
            Kind::Audio => 0,
            Kind::Video => vp8_clear_len(&frame),
        };
        let plain = if self.spec.e2ee {
            match self
                .ring
                .decrypt(&track.owner, &frame, clear, &mut self.plain)
            {
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
            &frame[clear.min(frame.len())..]
        };
        match FrameHeader::decode(plain) {
            // A publisher's frames all name one sender: its first frame's.
            Ok(h)
                if h.kind == track.kind
                    && match self.senders.get(&track.owner) {
                        Some(&first) => first == h.sender,
                        None => {
                            self.senders.insert(track.owner.clone(), h.sender);
                            true
                        }
                    } =>
            {
                if let Some(d) = descriptor {
                    // The layer the descriptor announces must be the one
                    // the sender encrypted: the SFU may renumber pictures,
                    // never move a frame to another temporal layer.
                    match d.temporal {
                        Some(t) if t.tid == h.temporal => {
                            track.stats.layers.on_frame(&h, t, now_us)
                        }
                        other => {
                            track.stats.integrity_errors += 1;
                            self.totals.note_error(format!(
                                "participant {}: frame {} of {} is TL{} but its VP8 descriptor says {:?}",
                                self.spec.index, h.number, track.owner, h.temporal, other.map(|t| t.tid)
                            ));
                            return;
                        }
                    }
                }
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

    pub(super) fn send_frame(&mut self, spec: &FrameSpec, now: Instant) {
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
            rid: spec.rid.and_then(|r| r.bytes().next()).unwrap_or(0),
            size: spec.size,
            temporal: spec.layering.map_or(0, |l| l.temporal.tid),
            keyframe: spec.keyframe,
            number: spec.number,
            sent_us: clock::micros(now),
        };
        let plain = header.encode(spec.bytes);
        let clear = match spec.kind {
            Kind::Audio => Vec::new(),
            Kind::Video => vp8_clear_header(spec.keyframe, spec.size),
        };
        let data = if self.spec.e2ee {
            match key.encrypt(&clear, &plain) {
                Ok(d) => d,
                Err(e) => return self.fail(format!("encrypt: {e}")),
            }
        } else {
            [clear, plain].concat()
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
                for packet in packetize_video(&data, spec.layering.as_ref()) {
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
}
