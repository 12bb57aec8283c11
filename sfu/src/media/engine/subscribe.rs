//! Subscribing: which receivers each participant wants, the down-tracks
//! (sending m-lines) that carry them, and the negotiation that makes those
//! m-lines — server-offered for WebSocket clients, client-offered for WHEP.
//!
//! A down-track is attached to its receiver's fan-out list only while it is
//! bound *and* negotiated; [`Engine::bind`] and [`Engine::unbind`] are the
//! only places that change both sides.

use std::time::Instant;

use str0m::change::SdpAnswer;
use str0m::media::{Direction, KeyframeRequestKind, MediaKind, Mid};

use super::{mark, Engine, Signal};
use crate::media::allocator::Tile;
use crate::media::down_track::DownTrack;
use crate::media::ids::{DownTrackKey, PeerKey, ReceiverKey};
use crate::media::peer::{PendingOffer, Role};
use crate::room::track::kind_name;
use crate::room::ConnId;
use crate::signal::protocol::{ErrorCode, ServerMessage, SubscribedTrack};

/// A track a subscriber should receive.
#[derive(Debug, Clone)]
pub(super) struct Wanted {
    receiver: ReceiverKey,
    kind: MediaKind,
    owner: String,
    track_id: String,
    tile: Tile,
}

impl Engine {
    /// A client's subscribe/unsubscribe request.
    pub(super) fn set_wanted(
        &mut self,
        conn: ConnId,
        room: &str,
        pid: &str,
        track_ids: &[String],
        wanted: bool,
        now: Instant,
    ) {
        let Some(r) = self.rooms.get_mut(room) else {
            return;
        };
        let (known, unknown): (Vec<&String>, Vec<&String>) =
            track_ids.iter().partition(|t| r.tracks.contains_key(*t));
        let Some(p) = r.participants.get_mut(pid) else {
            return;
        };
        if !p.grants.can_subscribe {
            self.error(
                conn,
                ErrorCode::Forbidden,
                "token does not allow subscribing",
            );
            return;
        }
        for t in known {
            p.set_wanted(t, wanted);
        }
        if !unknown.is_empty() {
            let msg = format!("unknown track ids: {unknown:?}");
            self.error(conn, ErrorCode::UnknownTrack, msg);
        }
        self.update_subscriber(room, pid, now);
    }

    /// Brings every participant of `room` in line with what it wants.
    pub(super) fn update_all_subscribers(&mut self, room: &str, now: Instant) {
        let ids: Vec<String> = self
            .rooms
            .get(room)
            .map(|r| r.participants.keys().cloned().collect())
            .unwrap_or_default();
        for pid in ids {
            self.update_subscriber(room, &pid, now);
        }
    }

    /// Brings a participant's subscriber peer in line with what it wants.
    pub(super) fn update_subscriber(&mut self, room: &str, pid: &str, now: Instant) {
        let Some(r) = self.rooms.get(room) else {
            return;
        };
        let Some(p) = r.participants.get(pid) else {
            return;
        };
        let wanted: Vec<Wanted> = r
            .wanted_tracks(pid)
            .into_iter()
            .map(|t| Wanted {
                receiver: t.receiver,
                kind: t.kind,
                owner: t.owner.clone(),
                track_id: t.id.clone(),
                tile: p.tiles.get(&t.id).copied().unwrap_or_default(),
            })
            .collect();
        let existing = p.subscriber;
        let peer_id = match existing {
            Some(id) => id,
            // Offers need a signaling connection (WHIP publishers have none).
            None if wanted.is_empty() || p.conn().is_none() => return,
            None => self.add_peer(room, pid, Role::Subscriber { offerer: true }, now),
        };
        let Some(peer) = self.peers.get(peer_id) else {
            return;
        };
        match peer.role {
            Role::Subscriber { offerer: true } => self.negotiate(peer_id, &wanted, now),
            Role::Subscriber { offerer: false } => self.bind_slots(peer_id, &wanted, now),
            Role::Publisher => {}
        }
    }

    /// A new down-track for m-line `mid` of `peer_id`.
    pub(super) fn add_down_track(&mut self, peer_id: PeerKey, mid: Mid, kind: MediaKind) {
        let key = self.down_tracks.insert(DownTrack::new(peer_id, mid, kind));
        if let Some(peer) = self.peers.get_mut(peer_id) {
            if let Some(old) = peer.slots.insert(mid, key) {
                self.remove_down_track(old);
            }
        }
    }

    /// Forgets a down-track (its m-line is gone).
    pub(super) fn remove_down_track(&mut self, key: DownTrackKey) {
        self.unbind(key);
        self.down_tracks.remove(key);
    }

    /// Binds a down-track to a receiver; once negotiated (`ready`) it is in
    /// the receiver's fan-out and the publisher is asked for a keyframe.
    fn bind(&mut self, key: DownTrackKey, receiver: ReceiverKey, now: Instant) {
        self.unbind(key);
        let Some(down) = self.down_tracks.get_mut(key) else {
            return;
        };
        down.rebind(Some(receiver));
        if down.ready {
            self.start_forwarding(key, now);
        }
    }

    /// Puts a bound, negotiated down-track into its receiver's fan-out.
    fn start_forwarding(&mut self, key: DownTrackKey, now: Instant) {
        let Some((receiver, layer)) = self
            .down_tracks
            .get(key)
            .and_then(|d| Some((d.receiver?, d.target().unwrap_or(0))))
        else {
            return;
        };
        if let Some(r) = self.receivers.get_mut(receiver) {
            r.attach(key);
            // A track of another node is asked for before its keyframe.
            self.sync_trunk_subscription(receiver);
            self.request_keyframe(
                receiver,
                layer,
                KeyframeRequestKind::Pli,
                "new_subscriber",
                now,
            );
            // A layer switched off for want of subscribers comes back now.
            self.dynacast(receiver, now);
        }
    }

    /// Unbinds a down-track from its receiver, if any.
    pub(super) fn unbind(&mut self, key: DownTrackKey) {
        let Some(receiver) = self
            .down_tracks
            .get_mut(key)
            .and_then(|d| d.receiver.take())
        else {
            return;
        };
        if let Some(r) = self.receivers.get_mut(receiver) {
            r.detach(key);
            self.sync_trunk_subscription(receiver);
        }
    }

    /// The receivers bound to `peer_id`'s down-tracks.
    fn bound_receivers(&self, peer_id: PeerKey) -> Vec<ReceiverKey> {
        let Some(peer) = self.peers.get(peer_id) else {
            return Vec::new();
        };
        peer.slots
            .values()
            .filter_map(|&k| self.down_tracks.get(k)?.receiver)
            .collect()
    }

    /// Unbinds down-tracks whose receiver is no longer wanted.
    fn unbind_unwanted(&mut self, peer_id: PeerKey, wanted: &[Wanted]) {
        let Some(peer) = self.peers.get(peer_id) else {
            return;
        };
        let unwanted: Vec<DownTrackKey> = peer
            .slots
            .values()
            .copied()
            .filter(|&k| {
                self.down_tracks
                    .get(k)
                    .and_then(|d| d.receiver)
                    .is_some_and(|r| !wanted.iter().any(|w| w.receiver == r))
            })
            .collect();
        for key in unwanted {
            self.unbind(key);
        }
    }

    /// Server-offered subscriber: add m-lines for new tracks, stop those of
    /// gone tracks, one offer in flight at a time.
    fn negotiate(&mut self, peer_id: PeerKey, wanted: &[Wanted], now: Instant) {
        self.unbind_unwanted(peer_id, wanted);
        let present = self.bound_receivers(peer_id);
        let Some(peer) = self.peers.get_mut(peer_id) else {
            return;
        };
        if peer.pending.is_some() {
            peer.renegotiate = true;
            return;
        }
        // The first m-line carries the connection's transport (it tags the
        // BUNDLE group). Stopping it makes the client move the group to
        // another m-line's transport and close this one (Firefox sends a
        // DTLS close_notify, which ends the session), and stopping every
        // m-line leaves no transport at all: so it is never stopped, only
        // set inactive once its track is gone.
        let down_tracks = &self.down_tracks;
        let unbound = |k: &DownTrackKey| down_tracks.get(*k).filter(|d| d.receiver.is_none());
        let inactive = |m: &Mid| {
            peer.rtc
                .media(*m)
                .is_some_and(|x| x.direction() == Direction::Inactive)
        };
        let park: Option<Mid> = peer
            .slots
            .iter()
            .find(|(m, k)| unbound(k).is_some_and(|d| d.anchor) && !inactive(m))
            .map(|(m, _)| *m);
        let stale: Vec<Mid> = peer
            .slots
            .iter()
            .filter(|(_, k)| unbound(k).is_some_and(|d| !d.anchor))
            .map(|(m, _)| *m)
            .collect();
        let new: Vec<&Wanted> = wanted
            .iter()
            .filter(|w| !present.contains(&w.receiver))
            .collect();
        if stale.is_empty() && new.is_empty() && park.is_none() {
            return;
        }
        let mut api = peer.rtc.sdp_api();
        if let Some(mid) = park {
            api.set_direction(mid, Direction::Inactive);
        }
        let mut added = Vec::new();
        for w in &new {
            let mid = api.add_media(
                w.kind,
                Direction::SendOnly,
                Some(w.owner.clone()),
                Some(w.track_id.clone()),
                None,
            );
            added.push((mid, w.receiver, w.kind, w.tile));
        }
        for mid in &stale {
            api.stop_media(*mid);
        }
        let Some((offer, pending)) = api.apply() else {
            return;
        };
        // Stopped m-lines are unbound, so forgetting them detaches nothing.
        let mut stopped = Vec::new();
        for mid in &stale {
            if let Some(down) = peer
                .slots
                .remove(mid)
                .and_then(|k| self.down_tracks.remove(k))
            {
                stopped.push((*mid, down.kind));
            }
        }
        let first = peer.slots.is_empty();
        for (i, &(mid, receiver, kind, tile)) in added.iter().enumerate() {
            let mut down = DownTrack::new(peer_id, mid, kind);
            down.receiver = Some(receiver);
            down.tile = tile;
            down.anchor = first && i == 0;
            peer.slots.insert(mid, self.down_tracks.insert(down));
        }
        peer.pending = Some(PendingOffer {
            pending,
            added: added.iter().map(|a| a.0).collect(),
            stopped,
        });
        mark(&mut self.dirty, peer);
        let tracks = self.slot_descriptions(peer_id);
        if let Some(conn) = self.peer_conn(peer_id) {
            self.signals.push_back(Signal::Message(
                conn,
                ServerMessage::SubscribeOffer {
                    sdp: offer.to_sdp_string(),
                    tracks,
                },
            ));
        }
        self.drive(now);
    }

    /// What each bound m-line of `peer_id` carries, for the client.
    fn slot_descriptions(&self, peer_id: PeerKey) -> Vec<SubscribedTrack> {
        let Some(peer) = self.peers.get(peer_id) else {
            return Vec::new();
        };
        let room = self.rooms.get(&peer.room);
        peer.slots
            .iter()
            .filter_map(|(mid, &key)| {
                let receiver = self.receivers.get(self.down_tracks.get(key)?.receiver?)?;
                let track = room?.tracks.get(&receiver.track_id)?;
                Some(SubscribedTrack {
                    mid: mid.to_string(),
                    track_id: track.id.clone(),
                    participant_id: track.owner.clone(),
                    kind: kind_name(track.kind).to_string(),
                })
            })
            .collect()
    }

    /// The client's answer to the outstanding subscribe offer.
    pub(super) fn subscribe_answer(
        &mut self,
        conn: ConnId,
        room: &str,
        pid: &str,
        sdp: &str,
        now: Instant,
    ) {
        let Some(peer_id) = self.participant(room, pid).and_then(|p| p.subscriber) else {
            self.error(
                conn,
                ErrorCode::BadMessage,
                "no subscribe offer is outstanding",
            );
            return;
        };
        let answer = match SdpAnswer::from_sdp_string(sdp) {
            Ok(a) => a,
            Err(e) => {
                self.error(conn, ErrorCode::BadSdp, e.to_string());
                return;
            }
        };
        let Some(peer) = self.peers.get_mut(peer_id) else {
            return;
        };
        let Some(pending) = peer.pending.take() else {
            self.error(
                conn,
                ErrorCode::BadMessage,
                "no subscribe offer is outstanding",
            );
            return;
        };
        mark(&mut self.dirty, peer);
        if let Err(e) = peer.rtc.sdp_api().accept_answer(pending.pending, answer) {
            // str0m rolled the offer back: forget its new down-tracks, keep
            // the m-lines it was stopping as unbound (stopped again next
            // time), offer again.
            let added: Vec<DownTrackKey> = pending
                .added
                .iter()
                .filter_map(|mid| peer.slots.remove(mid))
                .collect();
            for key in added {
                self.remove_down_track(key);
            }
            for (mid, kind) in pending.stopped {
                self.add_down_track(peer_id, mid, kind);
            }
            self.error(conn, ErrorCode::BadSdp, e.to_string());
            self.update_subscriber(room, pid, now);
            return;
        }
        let renegotiate = std::mem::take(&mut peer.renegotiate);
        let added: Vec<DownTrackKey> = pending
            .added
            .iter()
            .filter_map(|mid| peer.slots.get(mid).copied())
            .collect();
        for key in added {
            if let Some(down) = self.down_tracks.get_mut(key) {
                down.ready = true;
            }
            self.start_forwarding(key, now);
        }
        if renegotiate {
            self.update_subscriber(room, pid, now);
        }
        self.allocate(peer_id, now);
        self.update_gauges();
    }

    /// Client-offered subscriber (WHEP): bind free down-tracks to wanted
    /// receivers of their kind.
    fn bind_slots(&mut self, peer_id: PeerKey, wanted: &[Wanted], now: Instant) {
        self.unbind_unwanted(peer_id, wanted);
        let mut bound = self.bound_receivers(peer_id);
        let Some(peer) = self.peers.get(peer_id) else {
            return;
        };
        // Keep a viewer's audio and video from the same publisher when possible.
        let mut owner: Option<&str> = wanted
            .iter()
            .find(|w| bound.contains(&w.receiver))
            .map(|w| w.owner.as_str());
        let mut binds = Vec::new();
        for &key in peer.slots.values() {
            let Some(down) = self.down_tracks.get(key) else {
                continue;
            };
            if down.receiver.is_some() {
                continue;
            }
            let free = |w: &&Wanted| w.kind == down.kind && !bound.contains(&w.receiver);
            let same_owner = wanted
                .iter()
                .filter(free)
                .find(|w| owner.is_none_or(|o| o == w.owner));
            if let Some(w) = same_owner.or_else(|| wanted.iter().find(free)) {
                owner.get_or_insert(w.owner.as_str());
                bound.push(w.receiver);
                binds.push((key, w.receiver, w.tile));
            }
        }
        for (key, receiver, tile) in binds {
            if let Some(down) = self.down_tracks.get_mut(key) {
                down.ready = true;
                down.tile = tile;
            }
            self.bind(key, receiver, now);
        }
        self.allocate(peer_id, now);
        self.update_gauges();
    }
}
