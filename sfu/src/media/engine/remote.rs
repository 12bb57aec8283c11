//! Other nodes of the cluster in this shard's rooms (docs/cluster.md).
//!
//! A node that holds participants of a room asks each other node holding it
//! for the room (`room_sync`); the asked node answers with the participants
//! and tracks it has there and from then on tells it every change. So each
//! node knows the others' participants as [`Access::Remote`] members of the
//! room, shown to its own participants exactly like local ones, and their
//! tracks as receivers whose origin is the trunk. A local subscriber of such
//! a track makes this node ask for it once (`subscribe_track`), however many
//! subscribers it has; its packets then enter [`Engine::fan_out`] as a
//! publisher's would. Media that came over a trunk is never sent on one.

use std::sync::Arc;
use std::time::Instant;

use serde_json::value::RawValue;
use str0m::format::PayloadParams;
use str0m::media::{KeyframeRequestKind, MediaKind, Mid};
use tracing::{debug, info};

use super::forward::Incoming;
use super::{Engine, TrunkOut};
use crate::cluster::trunk::wire::{Control, MediaDatagram, RelayTo, TrunkCodec, FLAG_SIMULCAST};
use crate::media::ids::{NodeKey, ReceiverKey};
use crate::media::receiver::{trunk_rid, Origin, Receiver};
use crate::media::trunk_rtp;
use crate::room::{Participant, Track};
use crate::signal::protocol::{ParticipantInfo, RelayTarget, TrackInfo};

/// Every spatial layer (bit per layer). A node asks for the layers its
/// subscribers' tiles need (dynacast), and its own allocator chooses per
/// subscriber among what arrives.
const ALL_LAYERS: u8 = 0b111;

/// A track of another node that this shard knows.
#[derive(Debug)]
pub(super) struct RemoteTrack {
    pub receiver: ReceiverKey,
    codecs: Vec<TrunkCodec>,
    /// Last extended sequence number per spatial layer.
    seq: [Option<u64>; 3],
    /// The layers this node asked the publisher's node for (bit per
    /// layer; 0: not subscribed).
    layers: u8,
}

/// Extends a 16-bit sequence number to the one nearest `prev`.
fn extend_seq(prev: Option<u64>, seq: u16) -> u64 {
    // Start a rollover up, so a reordered predecessor stays positive.
    let Some(prev) = prev else {
        return (1 << 16) | u64::from(seq);
    };
    let candidate = (prev & !0xffff) | u64::from(seq);
    [
        candidate.saturating_sub(1 << 16),
        candidate,
        candidate + (1 << 16),
    ]
    .into_iter()
    .min_by_key(|c| c.abs_diff(prev))
    .unwrap_or(candidate)
}

impl Engine {
    /// The next trunk message for the cluster (media or control).
    pub fn poll_trunk(&mut self) -> Option<TrunkOut> {
        self.trunk_out.pop_front()
    }

    /// A media datagram from `node`.
    pub fn handle_trunk_media(&mut self, node: NodeKey, datagram: &MediaDatagram, now: Instant) {
        let Some(remote) = self.remote.get_mut(&(node, datagram.track)) else {
            return self.drop_packet("unknown_trunk_track");
        };
        let Ok(rtp) = trunk_rtp::parse(&datagram.rtp) else {
            return self.drop_packet("malformed_trunk_rtp");
        };
        let layer = usize::from(datagram.layer).min(remote.seq.len() - 1);
        let seq = extend_seq(remote.seq[layer], rtp.seq);
        remote.seq[layer] = Some(seq);
        let simulcast = datagram.flags & FLAG_SIMULCAST != 0;
        let rid = if simulcast {
            trunk_rid(datagram.layer)
        } else {
            None
        };
        let (key, codecs) = (remote.receiver, &remote.codecs);
        let Some(receiver) = self.receivers.get_mut(key) else {
            return;
        };
        self.metrics.rtp_packets_in.inc();
        self.metrics.rtp_bytes_in.inc_by(rtp.payload.len() as u64);
        let accepted = receiver.accept(rid, rtp.pt.into(), rtp.payload.len(), now, |pt| {
            let c = codecs.iter().find(|c| c.pt == *pt)?;
            Some(PayloadParams::new(pt, None, c.spec))
        });
        let incoming = Incoming {
            ssrc: rtp.ssrc,
            seq,
            rtp_time: rtp.rtp_time,
            marker: rtp.marker,
            arrival: now,
            simulcast,
            extensions: rtp.extensions(),
            payload: Arc::from(rtp.payload),
        };
        self.fan_out(key, accepted, incoming, now);
        self.drive(now);
    }

    /// A control message from `node`.
    pub fn handle_trunk_control(&mut self, node: NodeKey, message: Control, now: Instant) {
        match message {
            Control::Hello { .. } => {}
            Control::RoomSync { room } => self.room_sync(node, &room),
            Control::RoomLeft { room } => self.room_left(node, &room, now),
            Control::ParticipantJoined { room, participant } => {
                self.remote_joined(node, &room, &participant, now)
            }
            Control::ParticipantLeft {
                room,
                participant_id,
            } => {
                if self.is_on(node, &room, &participant_id) {
                    self.remove_participant(&room, &participant_id, now);
                }
            }
            Control::TrackPublished {
                room,
                track,
                info,
                codecs,
                ..
            } => self.remote_published(node, &room, track, info, codecs, now),
            Control::TrackUnpublished { room, track } => {
                if let Some(remote) = self.remote.get(&(node, track)) {
                    let receiver = remote.receiver;
                    self.unpublish(&room, receiver);
                    self.update_all_subscribers(&room, now);
                    self.update_gauges();
                }
            }
            Control::TrackMuted { room, track, muted } => {
                let Some(r) = self.remote.get(&(node, track)) else {
                    return;
                };
                let Some(receiver) = self.receivers.get(r.receiver) else {
                    return;
                };
                let track_id = receiver.track_id.clone();
                let deliveries = self.rooms.get_mut(&room).and_then(|room| {
                    let owner = room.tracks.get(&track_id)?.owner.clone();
                    room.set_muted(&owner, &track_id, muted)
                });
                self.deliver(deliveries.unwrap_or_default());
            }
            Control::Relay {
                room,
                from,
                to,
                payload,
            } => {
                let from_there = self.is_on(node, &room, &from);
                let Ok(payload) = RawValue::from_string(payload) else {
                    return;
                };
                let to = match to {
                    RelayTo::Everyone => RelayTarget::Everyone,
                    RelayTo::Participants(ids) => RelayTarget::Participants(ids),
                };
                if let (true, Some(r)) = (from_there, self.rooms.get(&room)) {
                    let deliveries = r.relay(&from, &to, &payload);
                    self.deliver(deliveries);
                }
            }
            Control::SubscribeTrack { track, layers } => {
                let mask = layers.iter().fold(0u8, |m, l| m | 1 << l);
                self.set_trunk_sink(node, track, mask, now);
            }
            Control::UnsubscribeTrack { track } => self.set_trunk_sink(node, track, 0, now),
            Control::KeyframeRequest { track, layer } => {
                if let Some(&receiver) = self.trunk_numbers.get(&track) {
                    self.request_keyframe(receiver, layer, KeyframeRequestKind::Pli, "trunk", now);
                }
            }
        }
        self.drive(now);
    }

    /// `node` is gone (its trunk closed or its lease lapsed): its
    /// participants leave every room, and nothing more is sent to it.
    pub fn node_down(&mut self, node: NodeKey, now: Instant) {
        let mut gone = Vec::new();
        for (name, room) in self.rooms.iter_mut() {
            room.nodes.remove(&node);
            gone.extend(
                room.participants
                    .values()
                    .filter(|p| p.node() == Some(node))
                    .map(|p| (name.to_string(), p.id.clone())),
            );
        }
        for (room, pid) in gone {
            info!(room = %room, participant = %pid, %node, "left with its node");
            self.remove_participant(&room, &pid, now);
        }
        let numbers: Vec<u32> = self.trunk_numbers.keys().copied().collect();
        for track in numbers {
            self.set_trunk_sink(node, track, 0, now);
        }
        self.drive(now);
    }

    // ------------------------------------------------------------------
    // This node's room, told to the others
    // ------------------------------------------------------------------

    /// Queues `message` for every other node following `room`.
    pub(super) fn tell_nodes(&mut self, room: &str, message: impl Fn() -> Control) {
        let Some(r) = self.rooms.get(room) else {
            return;
        };
        for &node in &r.nodes {
            let message = message();
            self.trunk_out
                .push_back(TrunkOut::Control { node, message });
        }
    }

    /// The `track_published` that announces a receiver of this node.
    pub(super) fn track_published(&self, room: &str, track: &Track) -> Option<Control> {
        let receiver = self.receivers.get(track.receiver)?;
        let Origin::Peer(publisher) = receiver.origin else {
            return None;
        };
        let peer = self.peers.get(publisher)?;
        let kind = track.kind;
        let codecs = peer
            .rtc
            .codec_config()
            .params()
            .iter()
            .filter(|p| (kind == MediaKind::Audio) == p.spec().codec.is_audio())
            .map(|p| TrunkCodec {
                pt: *p.pt(),
                spec: p.spec(),
            })
            .collect();
        Some(Control::TrackPublished {
            room: room.to_string(),
            track: receiver.trunk_number,
            layers: vec![0, 1, 2],
            info: track.info(),
            codecs,
        })
    }

    /// `node` holds `room` and asks for it: everything here, then changes.
    fn room_sync(&mut self, node: NodeKey, room: &str) {
        let Some(r) = self.rooms.get_mut(room) else {
            // Nothing here: say so, so it asks again once there is.
            let message = Control::RoomLeft {
                room: room.to_string(),
            };
            self.trunk_out
                .push_back(TrunkOut::Control { node, message });
            return;
        };
        if !r.nodes.insert(node) {
            return;
        }
        debug!(room, %node, "room followed by another node");
        let Some(r) = self.rooms.get(room) else {
            return;
        };
        let local = |p: &&Participant| p.node().is_none() && !p.hidden;
        let mut out: Vec<Control> = r
            .participants
            .values()
            .filter(local)
            .map(|p| Control::ParticipantJoined {
                room: room.to_string(),
                participant: ParticipantInfo {
                    tracks: Vec::new(),
                    ..p.info()
                },
            })
            .collect();
        out.extend(
            r.tracks
                .values()
                .filter_map(|t| self.track_published(room, t)),
        );
        for message in out {
            self.trunk_out
                .push_back(TrunkOut::Control { node, message });
        }
    }

    /// `node` no longer holds `room`: its participants there leave and it
    /// gets nothing more of the room.
    fn room_left(&mut self, node: NodeKey, room: &str, now: Instant) {
        let Some(r) = self.rooms.get_mut(room) else {
            return;
        };
        r.nodes.remove(&node);
        let theirs: Vec<String> = r
            .participants
            .values()
            .filter(|p| p.node() == Some(node))
            .map(|p| p.id.clone())
            .collect();
        let receivers: Vec<u32> = r
            .tracks
            .values()
            .filter_map(|t| self.receivers.get(t.receiver))
            .map(|r| r.trunk_number)
            .filter(|&n| n != 0)
            .collect();
        for pid in theirs {
            self.remove_participant(room, &pid, now);
        }
        for track in receivers {
            self.set_trunk_sink(node, track, 0, now);
        }
    }

    // ------------------------------------------------------------------
    // Other nodes' participants and tracks here
    // ------------------------------------------------------------------

    /// Whether `pid` is a participant of `room` on `node` (a node speaks
    /// only for its own participants).
    fn is_on(&self, node: NodeKey, room: &str, pid: &str) -> bool {
        self.participant(room, pid)
            .is_some_and(|p| p.node() == Some(node))
    }

    fn remote_joined(&mut self, node: NodeKey, room: &str, info: &ParticipantInfo, now: Instant) {
        let Some(r) = self.rooms.get_mut(room) else {
            return;
        };
        if r.participants.contains_key(&info.id) {
            return;
        }
        let deliveries = r.join(Participant::remote(room, info, node, now));
        info!(room, participant = %info.id, %node, "joined on another node");
        self.deliver(deliveries);
    }

    fn remote_published(
        &mut self,
        node: NodeKey,
        room: &str,
        track: u32,
        info: TrackInfo,
        codecs: Vec<TrunkCodec>,
        now: Instant,
    ) {
        let owner_there = self.is_on(node, room, &info.participant_id);
        let known = self.remote.contains_key(&(node, track))
            || self
                .rooms
                .get(room)
                .is_some_and(|r| r.tracks.contains_key(&info.id));
        let kind = match info.kind.as_str() {
            "audio" => MediaKind::Audio,
            "video" => MediaKind::Video,
            _ => return,
        };
        let Some(room_key) = self.rooms.key(room) else {
            return;
        };
        if !owner_there || known {
            return;
        }
        let mid = Mid::from(info.mid.as_str());
        let mut receiver = Receiver::new(
            info.id.clone(),
            kind,
            Origin::Trunk { node, track },
            room_key,
            mid,
            self.config.media.keyframe_interval(),
        );
        receiver.priority = u8::from(info.source.as_deref() == Some("screen"));
        let receiver = self.receivers.insert(receiver);
        self.remote.insert(
            (node, track),
            RemoteTrack {
                receiver,
                codecs,
                seq: [None; 3],
                layers: 0,
            },
        );
        let track = Track {
            id: info.id,
            owner: info.participant_id,
            kind,
            mid,
            receiver,
            source: info.source,
            muted: info.muted,
        };
        let deliveries = self
            .rooms
            .get_mut(room)
            .map(|r| r.publish(track))
            .unwrap_or_default();
        self.deliver(deliveries);
        self.update_all_subscribers(room, now);
        self.update_gauges();
    }

    /// Asks for a remote track while a local down-track receives it, with
    /// the layers its dynacast keeps on (all until it has seen them), and
    /// stops asking when no down-track does. Sends only changes.
    pub(super) fn sync_trunk_subscription(&mut self, receiver: ReceiverKey) {
        let Some(r) = self.receivers.get(receiver) else {
            return;
        };
        let Origin::Trunk { node, track } = r.origin else {
            return;
        };
        let layers = if r.down_tracks().is_empty() {
            0
        } else {
            ALL_LAYERS & !r.dynacast.off()
        };
        let Some(remote) = self.remote.get_mut(&(node, track)) else {
            return;
        };
        if remote.layers == layers {
            return;
        }
        remote.layers = layers;
        let message = if layers == 0 {
            Control::UnsubscribeTrack { track }
        } else {
            Control::SubscribeTrack {
                track,
                layers: (0..3).filter(|l| layers & (1 << l) != 0).collect(),
            }
        };
        self.trunk_out
            .push_back(TrunkOut::Control { node, message });
    }

    /// Sends this node's track `track` to `node` with `layers` (0: stop).
    fn set_trunk_sink(&mut self, node: NodeKey, track: u32, layers: u8, now: Instant) {
        let Some(&receiver) = self.trunk_numbers.get(&track) else {
            return;
        };
        if let Some(r) = self.receivers.get_mut(receiver) {
            r.set_trunk_sink(node, layers);
        }
        // Layers switched off for want of subscribers come back (or go).
        self.dynacast(receiver, now);
    }

    /// Forgets what the trunk side knew of a receiver being dropped.
    pub(super) fn forget_trunk_track(&mut self, receiver: &Receiver) {
        match receiver.origin {
            Origin::Trunk { node, track } => {
                self.remote.remove(&(node, track));
            }
            Origin::Peer(_) => {
                self.trunk_numbers.remove(&receiver.trunk_number);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{engine, grants, signals, types};
    use super::*;
    use crate::media::engine::Signal;

    /// The other node, as each engine numbers it.
    const OTHER: NodeKey = NodeKey(0);

    /// Hands every control message `from` queued to `to`, as the mesh would.
    fn pump(from: &mut Engine, to: &mut Engine, now: Instant) -> usize {
        let mut n = 0;
        while let Some(out) = from.poll_trunk() {
            if let TrunkOut::Control { message, .. } = out {
                to.handle_trunk_control(OTHER, message, now);
                n += 1;
            }
        }
        n
    }

    #[test]
    fn two_nodes_show_each_other_their_participants_and_relay() {
        let now = Instant::now();
        let (mut a, a_metrics) = engine();
        let (mut b, b_metrics) = engine();
        a.join(1, grants("alice"), true, now);
        b.join(2, grants("bob"), true, now);
        signals(&mut a);
        signals(&mut b);
        // B holds the room and asks A for it; A answers and follows it.
        a.handle_trunk_control(OTHER, Control::RoomSync { room: "r".into() }, now);
        assert_eq!(pump(&mut a, &mut b, now), 1, "alice's participant_joined");
        b.handle_trunk_control(OTHER, Control::RoomSync { room: "r".into() }, now);
        pump(&mut b, &mut a, now);
        assert_eq!(types(&signals(&mut a)), ["1:participant_joined"]);
        assert_eq!(types(&signals(&mut b)), ["2:participant_joined"]);
        // Each counts only its own participant (the registry adds nodes up).
        assert_eq!(
            (a_metrics.participants.get(), b_metrics.participants.get()),
            (1, 1)
        );
        // A relay from bob reaches alice through the trunk.
        let payload = RawValue::from_string("{\"kind\":\"e2ee-hello\"}".into()).unwrap();
        let to = RelayTarget::Everyone;
        b.handle_client(
            2,
            crate::signal::protocol::ClientMessage::Relay { to, payload },
            now,
        );
        pump(&mut b, &mut a, now);
        let got = signals(&mut a);
        let Some(Signal::Message(
            1,
            crate::signal::protocol::ServerMessage::Relay { from, payload },
        )) = got.first()
        else {
            panic!("{:?}", types(&got))
        };
        assert!(from.starts_with("PA_"));
        assert_eq!(payload.get(), "{\"kind\":\"e2ee-hello\"}");
        // A relay naming a participant of A but coming from a node that
        // does not hold the sender is dropped.
        a.handle_trunk_control(
            NodeKey(9),
            Control::Relay {
                room: "r".into(),
                from: from.clone(),
                to: RelayTo::Everyone,
                payload: "{}".into(),
            },
            now,
        );
        assert!(signals(&mut a).is_empty());
        // B goes away: alice sees bob leave; the room stays A's.
        a.node_down(OTHER, now);
        assert_eq!(types(&signals(&mut a)), ["1:participant_left"]);
        assert!(a.has_room("r"));
    }

    #[test]
    fn a_room_not_held_is_refused_and_leaving_tells_the_other_node() {
        let now = Instant::now();
        let (mut a, _) = engine();
        a.handle_trunk_control(OTHER, Control::RoomSync { room: "x".into() }, now);
        let Some(TrunkOut::Control {
            message: Control::RoomLeft { room },
            ..
        }) = a.poll_trunk()
        else {
            panic!("expected room_left")
        };
        assert_eq!(room, "x");
        a.join(1, grants("alice"), true, now);
        a.handle_trunk_control(OTHER, Control::RoomSync { room: "r".into() }, now);
        while a.poll_trunk().is_some() {}
        a.disconnect(1, now);
        let sent: Vec<String> = std::iter::from_fn(|| a.poll_trunk())
            .filter_map(|o| match o {
                TrunkOut::Control { message, .. } => Some(
                    serde_json::to_value(message).ok()?["type"]
                        .as_str()?
                        .to_string(),
                ),
                TrunkOut::Media { .. } => None,
            })
            .collect();
        assert_eq!(sent, ["participant_left", "room_left"]);
        assert!(!a.has_room("r"));
    }

    #[test]
    fn media_of_an_unknown_remote_track_is_dropped() {
        let (mut a, metrics) = engine();
        let datagram = MediaDatagram {
            track: 5,
            layer: 0,
            flags: 0,
            rtp: vec![0x80, 96, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0xaa].into(),
        };
        a.handle_trunk_media(OTHER, &datagram, Instant::now());
        let dropped = metrics
            .dropped
            .with_label_values(&["unknown_trunk_track"])
            .get();
        assert_eq!(dropped, 1);
    }

    #[test]
    fn sequence_numbers_extend_across_rollover_and_reordering() {
        let first = extend_seq(None, 65_535);
        assert_eq!(extend_seq(Some(first), 0), first + 1, "rollover");
        assert_eq!(extend_seq(Some(first + 1), 65_534), first - 1, "reordered");
        assert_eq!(extend_seq(Some(first), 65_535), first, "duplicate");
        assert_eq!(extend_seq(None, 0), 1 << 16, "room below the first");
    }
}
