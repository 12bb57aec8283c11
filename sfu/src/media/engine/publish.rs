//! Publishing: a participant's offer is answered on its publisher
//! connection, and each receiving m-line becomes a track of the room with a
//! receiver behind it.

use std::time::Instant;

use str0m::change::SdpOffer;
use str0m::media::Direction;
use tracing::debug;

use super::{mark, permitted_offer, random_id, Engine, SessionError};
use crate::cluster::trunk::wire::Control;
use crate::media::ids::{PeerKey, ReceiverKey};
use crate::media::peer::Role;
use crate::media::receiver::{Origin, Receiver};
use crate::room::track::kind_name;
use crate::room::Track;
use crate::signal::protocol::TrackLabel;

impl Engine {
    /// A publish offer over signaling.
    pub(super) fn publish_offer(
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
        let offer = permitted_offer(can_publish, "publishing", sdp)?;
        self.apply_publish_offer(room, pid, offer, labels, now)
    }

    /// Answers `offer` on the participant's publisher connection (made on
    /// the first offer) and publishes what it receives.
    pub(super) fn apply_publish_offer(
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
        let peer = self.peers.get_mut(peer_id).ok_or(SessionError::NotFound)?;
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
    pub(super) fn reconcile_publisher(&mut self, peer_id: PeerKey, now: Instant) {
        let Some(peer) = self.peers.get_mut(peer_id) else {
            return;
        };
        let room = peer.room.clone();
        let Some(room_key) = self.rooms.key(&room) else {
            return;
        };
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
                    let source = peer.labels.get(&*mid).cloned();
                    let mut receiver = Receiver::new(
                        track_id.clone(),
                        kind,
                        Origin::Peer(peer_id),
                        room_key,
                        mid,
                        self.config.media.keyframe_interval(),
                    );
                    receiver.priority = u8::from(source.as_deref() == Some("screen"));
                    // Its number on the trunk, with the shard in the top
                    // byte: the node finds a number's shard without a table.
                    self.trunk_counter = (self.trunk_counter % 0x00ff_ffff) + 1;
                    receiver.trunk_number =
                        ((self.config.shard as u32 & 0xff) << 24) | self.trunk_counter;
                    let number = receiver.trunk_number;
                    let receiver = self.receivers.insert(receiver);
                    self.trunk_numbers.insert(number, receiver);
                    peer.published.insert(mid, receiver);
                    added.push(Track {
                        id: track_id,
                        owner: pid.clone(),
                        kind,
                        mid,
                        receiver,
                        source,
                        muted: false,
                    });
                }
                (false, Some(&receiver)) => removed.push(receiver),
                _ => {}
            }
        }
        peer.published.retain(|_, r| !removed.contains(r));
        for track in added {
            debug!(room = %room, track = %track.id, kind = kind_name(track.kind), "published");
            if let Some(message) = self.track_published(&room, &track) {
                self.tell_nodes(&room, || message.clone());
            }
            let deliveries = self
                .rooms
                .get_mut(&room)
                .map(|r| r.publish(track))
                .unwrap_or_default();
            self.deliver(deliveries);
        }
        for receiver in removed {
            self.unpublish(&room, receiver);
        }
        self.update_all_subscribers(&room, now);
        self.update_gauges();
    }

    /// Removes a receiver's track from the room, telling everyone (the
    /// other nodes too when it was published here).
    pub(super) fn unpublish(&mut self, room: &str, receiver: ReceiverKey) {
        let Some((track_id, number)) = self
            .receivers
            .get(receiver)
            .map(|r| (r.track_id.clone(), r.trunk_number))
        else {
            return;
        };
        if number != 0 {
            self.tell_nodes(room, || Control::TrackUnpublished {
                room: room.to_string(),
                track: number,
            });
        }
        if let Some((_, deliveries)) = self
            .rooms
            .get_mut(room)
            .and_then(|r| r.unpublish(&track_id))
        {
            self.deliver(deliveries);
        }
        self.drop_receiver(receiver);
    }

    /// Forgets a receiver; its down-tracks become unbound (their
    /// subscribers renegotiate on the next update).
    pub(super) fn drop_receiver(&mut self, receiver: ReceiverKey) {
        let Some(r) = self.receivers.remove(receiver) else {
            return;
        };
        self.forget_trunk_track(&r);
        for &key in r.down_tracks() {
            if let Some(down) = self.down_tracks.get_mut(key) {
                down.rebind(None);
            }
        }
    }
}
