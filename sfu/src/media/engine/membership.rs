//! Membership: participants and their peer connections coming and going.

use std::time::Instant;

use tracing::info;

use super::{mark, Engine, Signal};
use crate::media::ids::PeerKey;
use crate::media::peer::{Peer, Role};
use crate::room::{Access, Room};
use crate::signal::protocol::ErrorCode;

impl Engine {
    /// A new peer connection for a participant.
    pub(super) fn add_peer(&mut self, room: &str, pid: &str, role: Role, now: Instant) -> PeerKey {
        let (local, retransmit) = (&self.config.local, self.config.media.retransmit_packets);
        let id = self
            .peers
            .insert_with(|id| Peer::new(id, room, pid, role, local, retransmit, now));
        if let Some(peer) = self.peers.get_mut(id) {
            mark(&mut self.dirty, peer);
        }
        if let Some(p) = self.participant_mut(room, pid) {
            match role {
                Role::Publisher => p.publisher = Some(id),
                Role::Subscriber { .. } => p.subscriber = Some(id),
            }
        }
        self.update_gauges();
        id
    }

    /// Removes a peer connection and its down-tracks (its receivers go
    /// with their tracks, see `remove_participant`).
    pub(super) fn remove_peer(&mut self, id: PeerKey) {
        let Some(mut peer) = self.peers.remove(id) else {
            return;
        };
        for addr in &peer.addrs {
            self.addrs.remove(addr);
        }
        for &key in peer.slots.values() {
            self.remove_down_track(key);
        }
        peer.rtc.disconnect();
    }

    /// Removes a participant with all its tracks and peers, telling the room.
    pub(super) fn remove_participant(&mut self, room: &str, pid: &str, now: Instant) {
        let Some((participant, tracks, deliveries)) =
            self.rooms.get_mut(room).and_then(|r| r.leave(pid))
        else {
            return;
        };
        info!(room = %room, participant = %pid, "left");
        self.deliver(deliveries);
        for track in tracks {
            self.drop_receiver(track.receiver);
        }
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
    pub(super) fn replace_identity(
        &mut self,
        room: &str,
        identity: &str,
        keep: &str,
        now: Instant,
    ) {
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
}
