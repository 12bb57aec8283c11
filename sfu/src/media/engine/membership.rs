//! Membership: participants and their peer connections coming and going.

use std::time::Instant;

use tracing::info;

use super::{mark, Engine, Signal};
use crate::cluster::trunk::wire::Control;
use crate::media::ids::PeerKey;
use crate::media::peer::{Peer, Role};
use crate::room::{Access, Room};
use crate::signal::protocol::ErrorCode;

impl Engine {
    /// A new peer connection for a participant.
    pub(super) fn add_peer(&mut self, room: &str, pid: &str, role: Role, now: Instant) -> PeerKey {
        let (local, media) = (&self.config.local, &self.config.media);
        let id = self
            .peers
            .insert_with(|id| Peer::new(id, room, pid, role, local, media, now));
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
        if participant.node().is_none() && !participant.hidden {
            // Its tracks go with it on the other nodes too.
            self.tell_nodes(room, || Control::ParticipantLeft {
                room: room.to_string(),
                participant_id: pid.to_string(),
            });
        }
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
            Access::Remote(_) => {}
        }
        if self.rooms.get(room).is_some_and(Room::is_empty) {
            self.close_room(room);
        } else {
            // Subscribers of the removed tracks renegotiate.
            self.update_all_subscribers(room, now);
        }
        self.update_gauges();
    }

    /// Forgets a room without participants of this node: the other nodes'
    /// participants in it are of no use here, and those nodes are told.
    fn close_room(&mut self, room: &str) {
        self.tell_nodes(room, || Control::RoomLeft {
            room: room.to_string(),
        });
        let Some(r) = self.rooms.remove(room) else {
            return;
        };
        for track in r.tracks.values() {
            self.drop_receiver(track.receiver);
        }
        self.signals.push_back(Signal::RoomClosed(room.to_string()));
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
                .find(|p| {
                    // A session on another node is that node's to replace.
                    !p.hidden && p.node().is_none() && p.id != keep && p.grants.identity == identity
                })
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
