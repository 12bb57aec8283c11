//! Adaptive media: each subscriber's allocator turns its downlink estimate
//! (str0m's transport-wide congestion control estimator) and the tiles its
//! client reports into a simulcast layer and frame rate — or a pause — per
//! video down-track (`media/allocator.rs` decides; this file gathers,
//! applies, tells the subscriber and asks the estimator to probe).

use std::time::{Duration, Instant};

use str0m::bwe::Bitrate;
use str0m::media::MediaKind;

use super::{Engine, Signal};
use crate::media::allocator::{Choice, Demand, Tile};
use crate::media::ids::{DownTrackKey, PeerKey};
use crate::media::layers::MAX_LAYERS;
use crate::media::peer::{Role, FIRST_PROBE_AFTER};
use crate::signal::protocol::ServerMessage;

/// How often each subscriber's allocation is redone without a new estimate
/// (layers start and stop, their rates move).
pub(super) const ALLOCATE_EVERY: Duration = Duration::from_millis(500);
/// The share of an estimate given to media (the rest absorbs bursts).
const BUDGET_SHARE: f64 = 0.8;
/// What an audio track is assumed to take from the downlink.
const AUDIO_BPS: u64 = 64_000;
/// How often a subscriber held back by its estimate asks for a probe at
/// most (the interval doubles from `peer::FIRST_PROBE_AFTER`).
const MAX_PROBE_EVERY: Duration = Duration::from_secs(4);
/// How long a step up to a larger layer is tried with padding first.
const CLIMB_TRIAL: Duration = Duration::from_millis(600);
/// How much the desired rate is raised to ask for one, up to a bound.
const PROBE_NUDGE_BPS: u64 = 1_000;
const MAX_PROBE_NUDGE_BPS: u64 = 100_000;

/// Whether a visible tile gets less than the best being sent that it needs
/// (its downlink, not its size, holds it back).
fn is_limited(demand: &Demand, target: Option<Choice>) -> bool {
    demand.visible && demand.best().is_some_and(|b| target.is_none_or(|t| t < b))
}

/// The rate of what `choice` carries.
fn rate(demand: &Demand, choice: Option<Choice>) -> u64 {
    choice
        .and_then(|c| {
            let rates = demand.layers.get(usize::from(c.spatial)).copied()??;
            rates.get(usize::from(c.temporal)).copied()
        })
        .unwrap_or(0)
}

impl Engine {
    /// A client's `track_settings`: how it shows a track it receives.
    pub(super) fn set_tile(
        &mut self,
        room: &str,
        pid: &str,
        track_id: &str,
        tile: Tile,
        now: Instant,
    ) {
        let Some(r) = self.rooms.get_mut(room) else {
            return;
        };
        // Settings race with unpublishing (a tile reports its size as the
        // track goes): a track that is gone is not an error.
        let Some(receiver) = r.tracks.get(track_id).map(|t| t.receiver) else {
            return;
        };
        let Some(p) = r.participants.get_mut(pid) else {
            return;
        };
        // Bounded: only ids of published tracks, removed when unpublished.
        p.tiles.insert(track_id.to_string(), tile);
        let Some(peer_id) = p.subscriber else {
            return;
        };
        let Some(peer) = self.peers.get(peer_id) else {
            return;
        };
        for &key in peer.slots.values() {
            if let Some(down) = self.down_tracks.get_mut(key) {
                if down.receiver == Some(receiver) {
                    down.tile = tile;
                }
            }
        }
        self.allocate(peer_id, now);
        self.dynacast(receiver, now);
    }

    /// A new downlink estimate for a subscriber.
    pub(super) fn estimate(&mut self, peer_id: PeerKey, estimate: Bitrate, now: Instant) {
        if let Some(peer) = self.peers.get_mut(peer_id) {
            peer.downlink.estimate(estimate.as_u64(), now);
        }
        self.metrics
            .downlink_estimate
            .observe(estimate.as_u64() as f64);
        self.allocate(peer_id, now);
    }

    /// Redoes a subscriber's allocation and applies it.
    pub(super) fn allocate(&mut self, peer_id: PeerKey, now: Instant) {
        let Some(peer) = self.peers.get_mut(peer_id) else {
            return;
        };
        if peer.role == Role::Publisher {
            return;
        }
        peer.next_allocation = now + ALLOCATE_EVERY;
        let mut audio = 0u64;
        let mut keys: Vec<DownTrackKey> = Vec::new();
        let mut demands: Vec<Demand> = Vec::new();
        for &key in peer.slots.values() {
            let Some(down) = self.down_tracks.get(key) else {
                continue;
            };
            let Some(r) = down.receiver.and_then(|k| self.receivers.get(k)) else {
                continue;
            };
            if down.kind == MediaKind::Audio {
                audio += AUDIO_BPS;
                continue;
            }
            let layers = r.layers();
            let mut demand = Demand {
                layers: [None; MAX_LAYERS],
                sizes: [None; MAX_LAYERS],
                tile: down.tile.size,
                visible: down.tile.visible,
                priority: r.priority,
                current: down.current().map(|spatial| Choice {
                    spatial,
                    temporal: down.temporal(),
                }),
            };
            for (i, layer) in layers.iter().enumerate() {
                demand.layers[i] = layer.rates_by_temporal(now);
                demand.sizes[i] = layer.size();
            }
            keys.push(key);
            demands.push(demand);
        }
        if keys.is_empty() {
            return;
        }
        // An estimate is not all media: keyframe bursts and retransmissions
        // need room beside it.
        let estimation = self.config.media.bandwidth_estimation;
        let share = if estimation { BUDGET_SHARE } else { 1.0 };
        let downlink = peer.downlink.bps(now);
        let budget = ((downlink as f64 * share) as u64).saturating_sub(audio);
        let mut targets = peer.allocator.allocate(budget, &demands, now);
        // While a fall of the estimate is held, nothing climbs on the figure
        // from before it.
        if peer.downlink.holding() {
            for (t, d) in targets.iter_mut().zip(&demands) {
                if let (Some(to), Some(c)) = (*t, d.current) {
                    if to > c {
                        *t = Some(c);
                    }
                }
            }
        }
        // A step up to a larger picture is tried first with padding at the
        // rate it would need (with estimation): a link that cannot carry it
        // shows congestion, the estimate falls and the step is dropped
        // before a keyframe of the larger layer is stuck in the queue (a
        // probe's burst through a shallow bottleneck can overstate it).
        let climbing = targets
            .iter()
            .zip(&demands)
            .any(|(t, d)| matches!((t, d.current), (Some(t), Some(c)) if t.spatial > c.spatial));
        let mut padding = 0;
        if !climbing || !self.config.media.bandwidth_estimation {
            peer.climb_since = None;
        } else {
            let since = *peer.climb_since.get_or_insert(now);
            if now.saturating_duration_since(since) < CLIMB_TRIAL {
                padding = targets.iter().zip(&demands).map(|(t, d)| rate(d, *t)).sum();
                for (t, d) in targets.iter_mut().zip(&demands) {
                    if let (Some(to), Some(c)) = (*t, d.current) {
                        if to.spatial > c.spatial {
                            *t = Some(c);
                        }
                    }
                }
            } else {
                peer.climb_since = None;
            }
        }
        // Ask the estimator to probe up to what the tiles could use.
        let desired: u64 = demands
            .iter()
            .map(|d| d.layers.iter().flatten().map(|r| r[2]).max().unwrap_or(0))
            .sum::<u64>()
            + audio;
        let used: u64 = demands
            .iter()
            .zip(&targets)
            .map(|(d, t)| rate(d, *t))
            .sum::<u64>()
            + audio;
        let limited = targets.iter().zip(&demands).any(|(t, d)| is_limited(d, *t));
        if estimation {
            // str0m probes when the desired rate rises. A subscriber held
            // back by its estimate sends less than its link may carry, so the
            // estimate cannot grow from what it sends: every few seconds the
            // desired rate is raised a little to ask for a probe (a freed
            // link is found in seconds, not at the estimator's slow climb).
            // It stays raised in between: str0m compares with the last value.
            // The interval doubles while the subscriber stays limited (a
            // probe into a full link queues behind it), up to a bound.
            if !limited {
                peer.probe_nudge = 0;
                peer.probe_every = FIRST_PROBE_AFTER;
            } else if now >= peer.next_probe {
                peer.next_probe = now + peer.probe_every;
                peer.probe_every = (peer.probe_every * 2).min(MAX_PROBE_EVERY);
                peer.probe_nudge = (peer.probe_nudge + PROBE_NUDGE_BPS).min(MAX_PROBE_NUDGE_BPS);
            }
            let desired = desired.max(used) + peer.probe_nudge;
            // The first figure is str0m's padding target: padding up to what
            // is allocated would fill every gap between frames (measured: 1.8
            // datagrams sent per forwarded packet), so none beyond str0m's
            // own keep-alive rate, except while a step up is tried.
            peer.rtc
                .bwe()
                .set_bitrate(Bitrate::bps(padding), Bitrate::bps(desired));
        }
        tracing::debug!(
            room = %peer.room,
            participant = %peer.participant,
            estimate = peer.downlink.estimated(),
            downlink,
            budget,
            ?targets,
            "allocated"
        );
        let conn = self.peer_conn(peer_id);
        let mut pause_changed = false;
        for ((key, target), demand) in keys.into_iter().zip(targets).zip(&demands) {
            let Some(down) = self.down_tracks.get_mut(key) else {
                continue;
            };
            let limited = is_limited(demand, target);
            if down.told != Some((target, limited)) {
                down.told = Some((target, limited));
                let r = down.receiver.and_then(|k| self.receivers.get(k));
                if let (Some(conn), Some(r)) = (conn, r) {
                    let layer = target.map(|t| {
                        r.rid(t.spatial)
                            .map_or(String::new(), |rid| rid.to_string())
                    });
                    let msg = ServerMessage::TrackLayer {
                        track_id: r.track_id.clone(),
                        layer,
                        temporal: target.map(|t| t.temporal),
                        limited,
                    };
                    self.signals.push_back(Signal::Message(conn, msg));
                }
            }
            let before = down.target().map(|spatial| Choice {
                spatial,
                temporal: down.temporal_target(),
            });
            if before == target {
                continue;
            }
            down.set_target(target.map(|t| t.spatial));
            if let Some(t) = target {
                down.set_temporal(t.temporal);
            }
            let change = match (before, target) {
                (_, None) => "pause",
                (None, Some(_)) => "resume",
                (Some(b), Some(t)) if t > b => "up",
                _ => "down",
            };
            pause_changed |= before.is_none() || target.is_none();
            self.metrics
                .layer_changes
                .with_label_values(&[change])
                .inc();
        }
        if pause_changed {
            self.update_gauges();
        }
    }
}
