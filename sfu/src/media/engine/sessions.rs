//! WHIP and WHEP sessions: HTTP-created participants addressed by an
//! unguessable session id whose prefix names the shard.

use std::time::Instant;

use rand::distr::{Alphanumeric, SampleString};
use str0m::Candidate;
use tracing::info;

use super::{mark, permitted_offer, random_id, Engine, SessionError};
use crate::auth::Grants;
use crate::media::ids::PeerKey;
use crate::media::peer::Role;
use crate::room::{Access, Participant};

impl Engine {
    /// WHIP: publish the offer's media into `grants.room`. Returns the
    /// session id and the SDP answer.
    pub fn whip(
        &mut self,
        grants: Grants,
        offer: &str,
        now: Instant,
    ) -> Result<(String, String), SessionError> {
        let offer = permitted_offer(grants.can_publish, "publishing", offer)?;
        let room = grants.room.clone();
        let identity = grants.identity.clone();
        let (session, pid) = self.add_session_participant(grants, false, now);
        match self.apply_publish_offer(&room, &pid, offer, &[], now) {
            Ok(answer) => {
                // Only a session that works replaces an older one.
                self.replace_identity(&room, &identity, &pid, now);
                Ok((session, answer))
            }
            Err(e) => {
                self.remove_participant(&room, &pid, now);
                Err(e)
            }
        }
    }

    /// WHEP: view the room's tracks (those of participant `target` — id or
    /// identity — if given). Returns the session id and the SDP answer.
    pub fn whep(
        &mut self,
        grants: Grants,
        target: Option<&str>,
        offer: &str,
        now: Instant,
    ) -> Result<(String, String), SessionError> {
        let offer = permitted_offer(grants.can_subscribe, "subscribing", offer)?;
        let room = grants.room.clone();
        if let Some(target) = target {
            let found = self.rooms.get(&room).is_some_and(|r| {
                r.participants.contains_key(target) || r.find_identity(target).is_some()
            });
            if !found {
                return Err(SessionError::NotFound);
            }
        }
        let (session, pid) = self.add_session_participant(grants, true, now);
        if let Some(p) = self.participant_mut(&room, &pid) {
            p.view_of = target.map(String::from);
        }
        let peer_id = self.add_peer(&room, &pid, Role::Subscriber { offerer: false }, now);
        let answer = {
            let Some(peer) = self.peers.get_mut(peer_id) else {
                return Err(SessionError::NotFound);
            };
            peer.rtc.sdp_api().accept_offer(offer)
        };
        let answer = match answer {
            Ok(a) => a.to_sdp_string(),
            Err(e) => {
                self.remove_participant(&room, &pid, now);
                return Err(SessionError::BadSdp(e.to_string()));
            }
        };
        self.drive(now);
        self.update_subscriber(&room, &pid, now);
        self.drive(now);
        Ok((session, answer))
    }

    /// Ends a WHIP/WHEP session. False if there is no such session.
    pub fn end_session(&mut self, session: &str, now: Instant) -> bool {
        let Some((room, pid)) = self.sessions.get(session).cloned() else {
            return false;
        };
        self.remove_participant(&room, &pid, now);
        self.drive(now);
        true
    }

    /// Trickled candidates for a WHIP/WHEP session (an SDP fragment).
    pub fn patch_session(
        &mut self,
        session: &str,
        fragment: &str,
        now: Instant,
    ) -> Result<(), SessionError> {
        let (room, pid) = self
            .sessions
            .get(session)
            .cloned()
            .ok_or(SessionError::NotFound)?;
        let peers: Vec<PeerKey> = self
            .participant(&room, &pid)
            .map(|p| p.publisher.into_iter().chain(p.subscriber).collect())
            .unwrap_or_default();
        for line in fragment.lines() {
            let Some(cand) = line.trim().strip_prefix("a=") else {
                continue;
            };
            if !cand.starts_with("candidate:") {
                continue;
            }
            let candidate = Candidate::from_sdp_string(cand)
                .map_err(|e| SessionError::BadSdp(e.to_string()))?;
            for id in &peers {
                if let Some(peer) = self.peers.get_mut(*id) {
                    peer.rtc.add_remote_candidate(candidate.clone());
                    mark(&mut self.dirty, peer);
                }
            }
        }
        self.drive(now);
        Ok(())
    }

    /// Adds a WHIP/WHEP participant; returns its session id and participant id.
    fn add_session_participant(
        &mut self,
        grants: Grants,
        hidden: bool,
        now: Instant,
    ) -> (String, String) {
        let room_name = grants.room.clone();
        // The session URL is the capability to end it: make it unguessable.
        // The shard prefix routes `/sessions/{id}` (see `session_shard`).
        let session = format!(
            "{}-{}",
            self.config.shard,
            Alphanumeric.sample_string(&mut rand::rng(), 24)
        );
        let id = random_id("PA_");
        let mut p = Participant::new(id.clone(), grants, Access::Session(session.clone()), now);
        p.hidden = hidden;
        let deliveries = self.rooms.get_or_create(&room_name).1.join(p);
        self.deliver(deliveries);
        self.sessions
            .insert(session.clone(), (room_name.clone(), id.clone()));
        info!(room = %room_name, participant = %id, session = %session, hidden, "session started");
        self.update_gauges();
        (session, id)
    }
}
