//! Rooms: who is in a room, what they publish, and who hears about it.
//!
//! Pure bookkeeping without I/O: every change returns the signaling messages
//! it causes, addressed to connections. Media plumbing lives in `media`.

pub mod participant;
pub mod speakers;
pub mod track;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use serde_json::value::RawValue;

use crate::media::ids::{NodeKey, ReceiverKey};
use crate::signal::protocol::{ActiveSpeaker, ParticipantInfo, RelayTarget, ServerMessage};
pub use participant::{Access, ConnId, Participant};
use speakers::SpeakerDetector;
pub use track::Track;

/// A signaling message for one connection.
pub type Delivery = (ConnId, ServerMessage);

/// One room.
#[derive(Debug, Default)]
pub struct Room {
    /// Participants by id.
    pub participants: BTreeMap<String, Participant>,
    /// Published tracks by id.
    pub tracks: BTreeMap<String, Track>,
    /// Who is speaking, by the audio track's receiver (fed per packet:
    /// a `Copy` key, no string).
    pub speakers: SpeakerDetector<ReceiverKey>,
    /// Other nodes of the cluster holding participants of this room, which
    /// are told of its participants and tracks here (docs/cluster.md).
    pub nodes: BTreeSet<NodeKey>,
}

impl Room {
    /// Nobody of this node is left (participants of other nodes are only
    /// shown to this node's).
    pub fn is_empty(&self) -> bool {
        self.participants.values().all(|p| p.node().is_some())
    }

    /// The visible participant with this identity, if present (WHEP viewers
    /// are never replaced nor targeted by identity), on any node.
    pub fn find_identity(&self, identity: &str) -> Option<&str> {
        self.participants
            .values()
            .find(|p| !p.hidden && p.grants.identity == identity)
            .map(|p| p.id.as_str())
    }

    /// A participant's public description with its tracks.
    pub fn info(&self, id: &str) -> Option<ParticipantInfo> {
        let mut info = self.participants.get(id)?.info();
        info.tracks = self
            .tracks
            .values()
            .filter(|t| t.owner == id)
            .map(Track::info)
            .collect();
        Some(info)
    }

    /// Everyone visible except `id`, with their tracks.
    pub fn others(&self, id: &str) -> Vec<ParticipantInfo> {
        self.participants
            .values()
            .filter(|p| p.id != id && !p.hidden)
            .filter_map(|p| self.info(&p.id))
            .collect()
    }

    /// Adds a participant and announces it to the others.
    pub fn join(&mut self, participant: Participant) -> Vec<Delivery> {
        let id = participant.id.clone();
        let hidden = participant.hidden;
        self.participants.insert(id.clone(), participant);
        // The newcomer hears who speaks with the next decision.
        self.speakers.report_again();
        match (hidden, self.info(&id)) {
            (false, Some(info)) => {
                self.broadcast(&id, ServerMessage::ParticipantJoined { participant: info })
            }
            _ => Vec::new(),
        }
    }

    /// Removes a participant and its tracks, telling the others.
    pub fn leave(&mut self, id: &str) -> Option<(Participant, Vec<Track>, Vec<Delivery>)> {
        let participant = self.participants.remove(id)?;
        let track_ids: Vec<String> = self
            .tracks
            .values()
            .filter(|t| t.owner == id)
            .map(|t| t.id.clone())
            .collect();
        let mut out = Vec::new();
        let mut tracks = Vec::new();
        for track_id in track_ids {
            if let Some((track, deliveries)) = self.unpublish(&track_id) {
                tracks.push(track);
                out.extend(deliveries);
            }
        }
        if !participant.hidden {
            out.extend(self.broadcast(
                id,
                ServerMessage::ParticipantLeft {
                    participant_id: id.to_string(),
                },
            ));
        }
        Some((participant, tracks, out))
    }

    /// Adds a track and announces it (to its publisher too, which learns
    /// the track id of its m-line this way).
    pub fn publish(&mut self, track: Track) -> Vec<Delivery> {
        let msg = ServerMessage::TrackPublished {
            track: track.info(),
        };
        self.tracks.insert(track.id.clone(), track);
        self.broadcast("", msg)
    }

    /// Removes a track and announces it.
    pub fn unpublish(&mut self, track_id: &str) -> Option<(Track, Vec<Delivery>)> {
        let track = self.tracks.remove(track_id)?;
        for p in self.participants.values_mut() {
            p.tiles.remove(track_id);
        }
        self.speakers.remove(&track.receiver);
        let msg = ServerMessage::TrackUnpublished {
            track_id: track.id.clone(),
            participant_id: track.owner.clone(),
        };
        let out = self.broadcast("", msg);
        Some((track, out))
    }

    /// Records a mute change by the track's owner and announces it.
    /// Returns `None` if `owner` does not own `track_id`.
    pub fn set_muted(&mut self, owner: &str, track_id: &str, muted: bool) -> Option<Vec<Delivery>> {
        let track = self.tracks.get_mut(track_id).filter(|t| t.owner == owner)?;
        if track.muted == muted {
            return Some(Vec::new());
        }
        track.muted = muted;
        let msg = ServerMessage::TrackMuted {
            track_id: track_id.to_string(),
            participant_id: owner.to_string(),
            muted,
        };
        Some(self.broadcast(owner, msg))
    }

    /// An opaque message from `from` to its targets (never back to the sender).
    pub fn relay(&self, from: &str, to: &RelayTarget, payload: &RawValue) -> Vec<Delivery> {
        let msg = |_: &Participant| ServerMessage::Relay {
            from: from.to_string(),
            payload: payload.to_owned(),
        };
        let targets: Vec<&Participant> = match to {
            RelayTarget::Everyone => self.participants.values().collect(),
            RelayTarget::Participants(ids) => ids
                .iter()
                .filter_map(|id| self.participants.get(id))
                .collect(),
        };
        targets
            .into_iter()
            .filter(|p| p.id != from)
            .filter_map(|p| p.conn().map(|c| (c, msg(p))))
            .collect()
    }

    /// An audio packet of the track `receiver` carries (the caller knows it
    /// is audio) at `level_dbov` (its RFC 6464 header extension) arrived:
    /// feeds the speaker detector and returns the `active_speakers` message
    /// for everyone when the speakers changed, and whether the dominant
    /// speaker did. Track ids are looked up only then.
    pub fn hear(
        &mut self,
        receiver: ReceiverKey,
        level_dbov: u8,
        now: Instant,
    ) -> Option<(Vec<Delivery>, bool)> {
        self.speakers.observe(&receiver, level_dbov, now);
        let update = self.speakers.poll(now)?;
        let speakers = update
            .speakers
            .into_iter()
            .filter_map(|s| {
                let t = self.tracks.values().find(|t| t.receiver == s.key)?;
                Some(ActiveSpeaker {
                    participant_id: t.owner.clone(),
                    track_id: t.id.clone(),
                    level: s.level,
                })
            })
            .collect();
        let out = self.broadcast("", ServerMessage::ActiveSpeakers { speakers });
        Some((out, update.dominant_changed))
    }

    /// Tracks of others that `id` wants to receive, in id order.
    pub fn wanted_tracks(&self, id: &str) -> Vec<&Track> {
        let Some(p) = self.participants.get(id) else {
            return Vec::new();
        };
        let owner = p.view_of.as_ref().map(|v| {
            self.participants
                .get(v)
                .map(|o| o.id.as_str())
                .or_else(|| self.find_identity(v))
        });
        self.tracks
            .values()
            .filter(|t| t.owner != id)
            .filter(|t| match owner {
                Some(owner) => owner == Some(t.owner.as_str()),
                None => p.wants(&t.id),
            })
            .collect()
    }

    /// `msg` to every participant with a signaling connection except `except`
    /// (`""`: everyone).
    fn broadcast(&self, except: &str, msg: ServerMessage) -> Vec<Delivery> {
        self.participants
            .values()
            .filter(|p| p.id != except)
            .filter_map(|p| p.conn().map(|c| (c, msg.clone())))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::TokenAuthority;
    use crate::media::arena::Arena;
    use crate::media::ids::ReceiverTag;
    use std::time::{Duration, Instant};
    use str0m::media::{MediaKind, Mid};

    fn person(id: &str, conn: ConnId) -> Participant {
        let grants =
            TokenAuthority::grants("r", &format!("identity-{id}"), Duration::from_secs(60));
        Participant::new(id.into(), grants, Access::Signaling(conn), Instant::now())
    }

    fn track(id: &str, owner: &str) -> Track {
        let mut receivers: Arena<ReceiverTag, ()> = Arena::default();
        Track {
            id: id.into(),
            owner: owner.into(),
            kind: MediaKind::Video,
            mid: Mid::from("0"),
            receiver: receivers.insert(()),
            source: None,
            muted: false,
        }
    }

    fn conns(d: &[Delivery]) -> Vec<ConnId> {
        d.iter().map(|(c, _)| *c).collect()
    }

    #[test]
    fn join_publish_leave_tell_the_others() {
        let mut room = Room::default();
        assert!(room.join(person("a", 1)).is_empty());
        assert_eq!(conns(&room.join(person("b", 2))), vec![1]);
        assert_eq!(conns(&room.publish(track("t1", "a"))), vec![1, 2]);
        assert_eq!(room.others("b")[0].tracks.len(), 1);
        assert_eq!(room.wanted_tracks("b").len(), 1);
        assert!(
            room.wanted_tracks("a").is_empty(),
            "own tracks are not wanted"
        );

        let (p, tracks, out) = room.leave("a").unwrap();
        assert_eq!(p.id, "a");
        assert_eq!(tracks.len(), 1);
        assert!(matches!(out[0].1, ServerMessage::TrackUnpublished { .. }));
        assert!(matches!(out[1].1, ServerMessage::ParticipantLeft { .. }));
        assert!(room.tracks.is_empty());
        room.leave("b");
        assert!(room.is_empty());
    }

    #[test]
    fn explicit_subscriptions() {
        let mut room = Room::default();
        room.join(person("a", 1));
        room.join(person("b", 2));
        room.publish(track("t1", "a"));
        room.publish(track("t2", "a"));
        let b = room.participants.get_mut("b").unwrap();
        b.set_wanted("t1", false);
        assert_eq!(room.wanted_tracks("b").len(), 1);
        let b = room.participants.get_mut("b").unwrap();
        b.auto_subscribe = false;
        assert!(room.wanted_tracks("b").is_empty());
        room.participants
            .get_mut("b")
            .unwrap()
            .set_wanted("t2", true);
        assert_eq!(room.wanted_tracks("b")[0].id, "t2");
    }

    #[test]
    fn relay_targets() {
        let mut room = Room::default();
        room.join(person("a", 1));
        room.join(person("b", 2));
        room.join(person("c", 3));
        let payload = RawValue::from_string("{\"x\":1}".into()).unwrap();
        assert_eq!(
            conns(&room.relay("a", &RelayTarget::Everyone, &payload)),
            vec![2, 3]
        );
        let some = RelayTarget::Participants(vec!["c".into(), "zz".into(), "a".into()]);
        assert_eq!(conns(&room.relay("a", &some, &payload)), vec![3]);
    }

    #[test]
    fn mute_only_by_owner() {
        let mut room = Room::default();
        room.join(person("a", 1));
        room.join(person("b", 2));
        room.publish(track("t1", "a"));
        assert!(room.set_muted("b", "t1", true).is_none());
        assert_eq!(conns(&room.set_muted("a", "t1", true).unwrap()), vec![2]);
        assert!(room.set_muted("a", "t1", true).unwrap().is_empty());
    }
}
