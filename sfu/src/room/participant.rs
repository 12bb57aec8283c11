//! A participant: one identity's session in a room, with its grants and
//! subscription choices.

use std::collections::BTreeSet;
use std::time::Instant;

use crate::auth::Grants;
use crate::media::allocator::Tile;
use crate::media::ids::{NodeKey, PeerKey};
use crate::signal::protocol::ParticipantInfo;

/// Identifies a signaling connection (owned by the shell).
pub type ConnId = u64;

/// How the participant reached the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// WebSocket signaling connection.
    Signaling(ConnId),
    /// A WHIP publisher or WHEP viewer session (HTTP resource id).
    Session(String),
    /// A participant on another node of the cluster (docs/cluster.md),
    /// known from that node's trunk messages.
    Remote(NodeKey),
}

/// One participant of a room.
#[derive(Debug, Clone)]
pub struct Participant {
    /// Server-assigned id.
    pub id: String,
    /// What the token allows.
    pub grants: Grants,
    /// Signaling connection or WHIP/WHEP session.
    pub access: Access,
    /// WHEP viewers are not announced to others.
    pub hidden: bool,
    /// Receive every track unless unsubscribed (the default).
    pub auto_subscribe: bool,
    /// WHEP viewers of one participant (id or identity): only its tracks are wanted.
    pub view_of: Option<String>,
    /// Explicit subscriptions (used when `auto_subscribe` is off).
    pub subscribed: BTreeSet<String>,
    /// Explicit unsubscriptions (used when `auto_subscribe` is on).
    pub unsubscribed: BTreeSet<String>,
    /// The peer connection the participant publishes on.
    pub publisher: Option<PeerKey>,
    /// The peer connection the participant receives on.
    pub subscriber: Option<PeerKey>,
    /// When `join` was handled (for the join-time metric).
    pub joined_at: Instant,
    /// Whether a peer of this participant has connected yet.
    pub connected: bool,
    /// How it shows the tracks it receives, by track id (adaptive stream;
    /// entries of unpublished tracks are removed with them).
    pub tiles: std::collections::BTreeMap<String, Tile>,
}

impl Participant {
    /// A new participant with default (automatic) subscriptions.
    pub fn new(id: String, grants: Grants, access: Access, now: Instant) -> Self {
        Self {
            id,
            grants,
            access,
            hidden: false,
            auto_subscribe: true,
            view_of: None,
            subscribed: BTreeSet::new(),
            unsubscribed: BTreeSet::new(),
            publisher: None,
            subscriber: None,
            joined_at: now,
            connected: false,
            tiles: Default::default(),
        }
    }

    /// Whether the participant wants `track_id` (published by someone else).
    pub fn wants(&self, track_id: &str) -> bool {
        self.grants.can_subscribe
            && if self.auto_subscribe {
                !self.unsubscribed.contains(track_id)
            } else {
                self.subscribed.contains(track_id)
            }
    }

    /// Records an explicit subscribe/unsubscribe.
    pub fn set_wanted(&mut self, track_id: &str, wanted: bool) {
        if wanted {
            self.unsubscribed.remove(track_id);
            self.subscribed.insert(track_id.to_string());
        } else {
            self.subscribed.remove(track_id);
            self.unsubscribed.insert(track_id.to_string());
        }
    }

    /// A participant of another node, as that node announced it: it is
    /// shown to this node's participants and publishes through the trunk.
    pub fn remote(room: &str, info: &ParticipantInfo, node: NodeKey, now: Instant) -> Self {
        let grants = Grants {
            room: room.to_string(),
            identity: info.identity.clone(),
            name: info.name.clone(),
            can_publish: true,
            can_subscribe: false,
            room_admin: false,
            exp: 0,
        };
        Self::new(info.id.clone(), grants, Access::Remote(node), now)
    }

    /// The node it is on, when not this one.
    pub fn node(&self) -> Option<NodeKey> {
        match self.access {
            Access::Remote(node) => Some(node),
            _ => None,
        }
    }

    /// The signaling connection, if any.
    pub fn conn(&self) -> Option<ConnId> {
        match self.access {
            Access::Signaling(c) => Some(c),
            Access::Session(_) | Access::Remote(_) => None,
        }
    }

    /// Public description (tracks are filled in by the room).
    pub fn info(&self) -> ParticipantInfo {
        ParticipantInfo {
            id: self.id.clone(),
            identity: self.grants.identity.clone(),
            name: self.grants.name.clone(),
            tracks: Vec::new(),
        }
    }
}
