//! Dynacast in the engine: gathers which layers of a published simulcast
//! track its subscribers' tiles need, lets the track's `Dynacast`
//! (`media/dynacast.rs`) decide, and tells the publisher with a
//! `publisher_layers` message when that changes.
//!
//! A track is reviewed when one of its subscribers' tiles changes or a
//! subscriber starts receiving it (so a layer comes back at once), and on
//! its publisher's periodic review (so an unwanted one goes off after the
//! hold).

use std::time::{Duration, Instant};

use str0m::media::MediaKind;

use super::{Engine, Signal};
use crate::media::allocator::needed_layer;
use crate::media::ids::{PeerKey, ReceiverKey};
use crate::media::layers::MAX_LAYERS;
use crate::media::receiver::Origin;
use crate::signal::protocol::ServerMessage;

/// How often a publisher's tracks are reviewed without a tile change.
const REVIEW_EVERY: Duration = Duration::from_millis(500);

impl Engine {
    /// Reviews every track `publisher` sends; due on its periodic timer.
    pub(super) fn review_publisher_layers(&mut self, publisher: PeerKey, now: Instant) {
        let Some(peer) = self.peers.get_mut(publisher) else {
            return;
        };
        peer.next_allocation = now + REVIEW_EVERY;
        let receivers: Vec<ReceiverKey> = peer.published.values().copied().collect();
        for receiver in receivers {
            self.dynacast(receiver, now);
        }
    }

    /// Reviews the tracks of other nodes received here (due with the
    /// engine's timers; they have no publisher connection to time them).
    pub(super) fn review_remote_layers(&mut self, now: Instant) {
        if now < self.next_remote_review {
            return;
        }
        self.next_remote_review = now + REVIEW_EVERY;
        let receivers: Vec<ReceiverKey> = self.remote.values().map(|r| r.receiver).collect();
        for receiver in receivers {
            self.dynacast(receiver, now);
        }
    }

    /// Switches `receiver`'s publisher's layers on or off as its
    /// subscribers' tiles need, telling the publisher on a change (for a
    /// track of another node: asking that node for the layers on).
    pub(super) fn dynacast(&mut self, receiver: ReceiverKey, now: Instant) {
        let Some(r) = self.receivers.get(receiver) else {
            return;
        };
        let known = r.named_layers();
        // One layer, or audio: nothing to switch.
        if r.kind != MediaKind::Video || known.count_ones() < 2 {
            return;
        }
        // A publisher without signaling (WHIP) cannot be told: its layers
        // stay as it sends them. One on another node is asked for the
        // layers this node needs; its own node tells the publisher.
        let conn = match r.origin {
            Origin::Peer(publisher) => match self.peer_conn(publisher) {
                Some(conn) => Some(conn),
                None => return,
            },
            Origin::Trunk { .. } => None,
        };
        let mut sizes = [None; MAX_LAYERS];
        for (size, layer) in sizes.iter_mut().zip(r.layers()) {
            *size = layer.size();
        }
        let wanted = r
            .down_tracks()
            .iter()
            .filter_map(|&k| self.down_tracks.get(k))
            .filter(|d| d.tile.visible)
            .map(|d| needed_layer(&sizes, d.tile.size) as u8)
            // Other nodes receiving it need the highest layer they asked for.
            .chain(
                r.trunk_sinks()
                    .iter()
                    .map(|&(_, layers)| 7 - layers.leading_zeros() as u8),
            )
            .max();
        let Some(r) = self.receivers.get_mut(receiver) else {
            return;
        };
        let Some(switch) = r.dynacast.update(known, wanted, now) else {
            return;
        };
        let off = r.dynacast.off();
        let Some(conn) = conn else {
            self.sync_trunk_subscription(receiver);
            return;
        };
        let switched = &self.metrics.publisher_layers_switched;
        switched
            .with_label_values(&["on"])
            .inc_by(u64::from(switch.on.count_ones()));
        switched
            .with_label_values(&["off"])
            .inc_by(u64::from(switch.off.count_ones()));
        let (mut active, mut inactive) = (Vec::new(), Vec::new());
        for i in (0..MAX_LAYERS).filter(|i| known & (1 << i) != 0) {
            let Some(rid) = r.rid(i as u8) else {
                continue;
            };
            if off & (1 << i) == 0 {
                active.push(rid.to_string());
            } else {
                inactive.push(rid.to_string());
            }
        }
        let msg = ServerMessage::PublisherLayers {
            track_id: r.track_id.clone(),
            active,
            inactive,
        };
        self.signals.push_back(Signal::Message(conn, msg));
        self.update_gauges();
    }
}
