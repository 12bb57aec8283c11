//! The stream allocator of one subscriber: shares its downlink estimate
//! among the video tracks it receives and picks what each carries — a
//! simulcast layer and how many of its temporal layers — or pauses it.
//!
//! Each track's steps, cheapest first: the lowest spatial layer at its
//! base frame rate (temporal layer 0, a quarter of the frames with L1T3),
//! then at half and full rate, then each higher spatial layer at its full
//! frame rate, up to what its tile needs. Order: tracks by priority (screen shares first),
//! then by how large their tile is. Every visible track first gets its
//! cheapest step while the budget lasts (a simulcast track that cannot get
//! even that is paused — audio is never touched, nor a track without
//! simulcast, nor the first visible track, which keeps its cheapest step on
//! any downlink); then, in the same order, each climbs as far as what is
//! left allows. Hysteresis, as in LiveKit's and Jitsi's allocators: climbing
//! above what is carried now needs 25 % headroom, and after a step down
//! nothing climbs for a while, so an estimate that wobbles around a layer's
//! rate does not flip layers (each spatial switch costs a keyframe).
//!
//! Sans-IO: estimates, layer rates and tile sizes in, targets out; time is
//! passed in.

use std::time::{Duration, Instant};

use super::layers::{MAX_LAYERS, TEMPORAL_LAYERS};

/// Climbing above the current layer needs this much more than its rate.
const HEADROOM: f64 = 1.25;
/// Keeping the current layer counts this share of its rate against the
/// budget (10 % overshoot is tolerated before stepping down).
const STAY: f64 = 0.9;
/// No climbing for this long after a step down.
const HOLD_AFTER_DROP: Duration = Duration::from_secs(3);
/// A layer is needed by a tile when its width or height reaches this share
/// of the tile's (a slightly smaller picture scaled up looks the same).
const FILL: f64 = 0.9;

/// How a subscriber shows one track (the client's `track_settings`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tile {
    /// On screen at all.
    pub visible: bool,
    /// Size in device pixels, if reported.
    pub size: Option<(u32, u32)>,
}

impl Default for Tile {
    /// Before the client says anything: visible, any size.
    fn default() -> Self {
        Self {
            visible: true,
            size: None,
        }
    }
}

/// What a down-track carries: a spatial layer, and within it the temporal
/// layers up to `temporal` (frames of higher temporal ids are dropped).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Choice {
    /// Spatial (simulcast) layer index, 0 = lowest.
    pub spatial: u8,
    /// Highest temporal id carried.
    pub temporal: u8,
}

/// What one video down-track asks of the allocator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Demand {
    /// Bits per second of each spatial layer that is being sent, by the
    /// highest temporal id carried (`[T0, T0+T1, all]`; equal values for a
    /// layer without temporal layers); `None`: not sent.
    pub layers: [Option<[u64; TEMPORAL_LAYERS]>; MAX_LAYERS],
    /// Frame size of each layer, when known (from keyframes).
    pub sizes: [Option<(u16, u16)>; MAX_LAYERS],
    /// The tile it is shown in (`None`: not reported, no limit).
    pub tile: Option<(u32, u32)>,
    /// Shown at all (hidden tiles get nothing).
    pub visible: bool,
    /// Higher goes first (screen shares).
    pub priority: u8,
    /// What it carries now.
    pub current: Option<Choice>,
}

impl Demand {
    /// The most it could carry: all of the highest layer its tile needs.
    pub fn best(&self) -> Option<Choice> {
        self.steps().last().map(|&(c, _)| c)
    }

    /// The choices worth making for its tile, in climbing order with their
    /// rates: the lowest layer at a quarter, half and all of its frame rate,
    /// then each higher layer up to the tile's at its full frame rate (a
    /// smaller picture that moves beats a larger one that stutters; frame
    /// rate is given up only where there is nothing smaller). A step that
    /// costs no less than the next is left out, so a layer without temporal
    /// layers is one step.
    fn steps(&self) -> Vec<(Choice, u64)> {
        let ceiling = needed_layer(&self.sizes, self.tile);
        let mut out: Vec<(Choice, u64)> = Vec::new();
        for (s, rates) in self.layers.iter().enumerate().take(ceiling + 1) {
            let Some(rates) = rates else {
                continue;
            };
            let lowest = out.is_empty();
            for t in 0..TEMPORAL_LAYERS {
                let last = t + 1 == TEMPORAL_LAYERS;
                if !last && (!lowest || rates[t] >= rates[t + 1]) {
                    continue;
                }
                let choice = Choice {
                    spatial: s as u8,
                    temporal: t as u8,
                };
                out.push((choice, rates[t]));
            }
        }
        out
    }
}

/// The highest layer worth sending to a tile of size `tile` (`None`: not
/// reported, no limit), given each layer's frame size when known: the
/// first whose width or height fills the tile, else the top one.
pub fn needed_layer(sizes: &[Option<(u16, u16)>; MAX_LAYERS], tile: Option<(u32, u32)>) -> usize {
    let top = MAX_LAYERS - 1;
    let Some((tw, th)) = tile else {
        return top;
    };
    (0..MAX_LAYERS)
        .find(|&i| match sizes[i] {
            Some((w, h)) => {
                f64::from(w) >= f64::from(tw) * FILL || f64::from(h) >= f64::from(th) * FILL
            }
            None => false,
        })
        .unwrap_or(top)
}

/// One subscriber's allocator state.
#[derive(Debug, Clone, Default)]
pub struct Allocator {
    last_drop: Option<Instant>,
}

impl Allocator {
    /// What each demand carries (`None`: paused), for a downlink of
    /// `budget` bits per second for video.
    pub fn allocate(
        &mut self,
        budget: u64,
        demands: &[Demand],
        now: Instant,
    ) -> Vec<Option<Choice>> {
        let mut order: Vec<usize> = (0..demands.len()).collect();
        order.sort_by_key(|&i| {
            let d = &demands[i];
            let area = d
                .tile
                .map_or(u64::MAX, |(w, h)| u64::from(w) * u64::from(h));
            (std::cmp::Reverse(d.priority), std::cmp::Reverse(area), i)
        });
        let holding = self
            .last_drop
            .is_some_and(|t| now.saturating_duration_since(t) < HOLD_AFTER_DROP);
        let steps: Vec<Vec<(Choice, u64)>> = demands.iter().map(Demand::steps).collect();
        let mut left = budget;
        // Index into each demand's steps.
        let mut chosen: Vec<Option<usize>> = vec![None; demands.len()];
        // Everyone visible gets its cheapest step first.
        let mut first = true;
        for &i in &order {
            let d = &demands[i];
            let Some(&(_, rate)) = steps[i].first().filter(|_| d.visible) else {
                continue;
            };
            let resuming = d.current.is_none();
            let need = if resuming {
                (rate as f64 * HEADROOM) as u64
            } else {
                rate
            };
            // A track without simulcast has nothing lower to fall back to,
            // and the first in order is what the subscriber looks at: neither
            // is paused for bandwidth (a picture at a low rate, even lossy,
            // beats a frozen one; the rest are paused to make room for it).
            let single = d.layers.iter().flatten().count() == 1;
            let first = std::mem::take(&mut first);
            if single || first || (need <= left && !(resuming && holding && rate > 0)) {
                left = left.saturating_sub(rate);
                chosen[i] = Some(0);
            }
        }
        // Then each climbs as far as what is left allows.
        for &i in &order {
            let d = &demands[i];
            let Some(mut at) = chosen[i] else {
                continue;
            };
            for up in (at + 1)..steps[i].len() {
                let (choice, rate) = steps[i][up];
                let extra = rate.saturating_sub(steps[i][at].1);
                let above_current = d.current.is_none_or(|c| choice > c);
                let need = if above_current {
                    if holding {
                        break;
                    }
                    (extra as f64 * HEADROOM) as u64
                } else {
                    // Staying where it is tolerates a little overshoot: layer
                    // rates move from frame to frame.
                    (extra as f64 * STAY) as u64
                };
                if need > left {
                    break;
                }
                left -= extra;
                at = up;
            }
            chosen[i] = Some(at);
        }
        let out: Vec<Option<Choice>> = chosen
            .iter()
            .zip(&steps)
            .map(|(c, steps)| c.map(|k| steps[k].0))
            .collect();
        let dropped = demands
            .iter()
            .zip(&out)
            .any(|(d, o)| d.visible && d.current.is_some_and(|c| o.is_none_or(|o| o < c)));
        if dropped {
            self.last_drop = Some(now);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const K: u64 = 1000;

    /// All of spatial layer `s`.
    fn at(s: u8) -> Option<Choice> {
        Some(Choice {
            spatial: s,
            temporal: 2,
        })
    }

    /// A layer without temporal layers at `rate`.
    fn flat(rate: u64) -> Option<[u64; TEMPORAL_LAYERS]> {
        Some([rate; TEMPORAL_LAYERS])
    }

    /// A camera sending q/h/f at 150/500/1500 kbit/s, 160×90 … 640×360,
    /// without temporal layers.
    fn camera(current: Option<u8>) -> Demand {
        Demand {
            layers: [flat(150 * K), flat(500 * K), flat(1500 * K)],
            sizes: [Some((160, 90)), Some((320, 180)), Some((640, 360))],
            tile: None,
            visible: true,
            priority: 0,
            current: current.and_then(at),
        }
    }

    #[test]
    fn picks_the_highest_layer_that_fits_with_headroom() {
        let t0 = Instant::now();
        let mut a = Allocator::default();
        assert_eq!(a.allocate(5000 * K, &[camera(None)], t0), [at(2)]);
        let mut a = Allocator::default();
        assert_eq!(a.allocate(800 * K, &[camera(None)], t0), [at(1)]);
        let mut a = Allocator::default();
        assert_eq!(a.allocate(250 * K, &[camera(None)], t0), [at(0)]);
        // Too little even for q: the only camera keeps q, a second pauses.
        let mut a = Allocator::default();
        assert_eq!(a.allocate(100 * K, &[camera(None)], t0), [at(0)]);
        let mut a = Allocator::default();
        let mut small = camera(None);
        small.tile = Some((160, 90));
        assert_eq!(
            a.allocate(100 * K, &[small, camera(None)], t0),
            [None, at(0)],
            "the smaller tile is paused"
        );
    }

    #[test]
    fn hysteresis_keeps_a_layer_and_holds_after_a_drop() {
        let t0 = Instant::now();
        let mut a = Allocator::default();
        // Carrying h: 520 k keeps it (no headroom needed to stay)...
        assert_eq!(a.allocate(520 * K, &[camera(Some(1))], t0), [at(1)]);
        // ...but climbing to h from q needs 25 % more than the step.
        assert_eq!(a.allocate(520 * K, &[camera(Some(0))], t0), [at(0)]);
        // A drop to q, then plenty of bandwidth: held for 3 s.
        assert_eq!(a.allocate(300 * K, &[camera(Some(2))], t0), [at(0)]);
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(a.allocate(5000 * K, &[camera(Some(0))], t1), [at(0)]);
        let t2 = t0 + Duration::from_secs(4);
        assert_eq!(a.allocate(5000 * K, &[camera(Some(0))], t2), [at(2)]);
    }

    #[test]
    fn a_tile_caps_the_layer_and_hidden_tiles_get_nothing() {
        let t0 = Instant::now();
        let mut a = Allocator::default();
        let mut small = camera(None);
        small.tile = Some((200, 112));
        let mut hidden = camera(None);
        hidden.visible = false;
        let mut big = camera(None);
        big.tile = Some((640, 360));
        assert_eq!(
            a.allocate(10_000 * K, &[small, hidden, big], t0),
            [at(1), None, at(2)]
        );
        // Sizes not known yet: no cap.
        let mut unknown = camera(None);
        unknown.sizes = [None; MAX_LAYERS];
        unknown.tile = Some((100, 100));
        assert_eq!(a.allocate(10_000 * K, &[unknown], t0), [at(2)]);
    }

    #[test]
    fn screen_shares_and_big_tiles_go_first() {
        let t0 = Instant::now();
        let mut a = Allocator::default();
        let mut screen = camera(None);
        screen.priority = 1;
        let mut thumb = camera(None);
        thumb.tile = Some((640, 360));
        // 2.2 Mbit/s: both get q (300 k), the screen climbs to f (1.35 M
        // more), the camera to h (350 k more) with what is left.
        assert_eq!(a.allocate(2200 * K, &[thumb, screen], t0), [at(1), at(2)]);
        // Not even two lowest layers: the screen keeps its.
        let mut a = Allocator::default();
        assert_eq!(a.allocate(200 * K, &[thumb, screen], t0), [None, at(0)]);
    }

    #[test]
    fn only_layers_being_sent_are_chosen() {
        let t0 = Instant::now();
        let mut a = Allocator::default();
        let mut d = camera(None);
        d.layers[2] = None;
        assert_eq!(a.allocate(10_000 * K, &[d], t0), [at(1)]);
        d.layers = [None; MAX_LAYERS];
        assert_eq!(a.allocate(10_000 * K, &[d], t0), [None]);
        // One layer only: kept even when it does not fit.
        d.layers[0] = flat(2000 * K);
        assert_eq!(a.allocate(100 * K, &[d], t0), [at(0)]);
    }

    #[test]
    fn temporal_layers_are_steps_below_and_between_spatial_layers() {
        let t0 = Instant::now();
        // L1T3: T0 carries half the rate, T0+T1 three quarters.
        let l1t3 = |r: u64| Some([r / 2, r * 3 / 4, r]);
        let mut cam = camera(None);
        cam.layers = [l1t3(120 * K), l1t3(500 * K), l1t3(1500 * K)];
        let choice = |spatial, temporal| Some(Choice { spatial, temporal });
        // 60 k: the lowest layer at its base rate.
        let mut a = Allocator::default();
        assert_eq!(a.allocate(60 * K, &[cam], t0), [choice(0, 0)]);
        // 120 k (with headroom): q at half rate; 160 k: all of q.
        let mut a = Allocator::default();
        assert_eq!(a.allocate(120 * K, &[cam], t0), [choice(0, 1)]);
        let mut a = Allocator::default();
        assert_eq!(a.allocate(160 * K, &[cam], t0), [choice(0, 2)]);
        // Above q, only whole layers: h at a quarter of its frame rate
        // would cost less (250 k), but a picture that stutters is worse.
        let mut a = Allocator::default();
        assert_eq!(a.allocate(340 * K, &[cam], t0), [choice(0, 2)]);
        let mut a = Allocator::default();
        assert_eq!(a.allocate(700 * K, &[cam], t0), [choice(1, 2)]);
        // Two cameras in 190 k: all of q would pause the second; its base
        // rate keeps it moving.
        let mut a = Allocator::default();
        let mut thumb = cam;
        thumb.tile = Some((160, 90));
        assert_eq!(
            a.allocate(190 * K, &[cam, thumb], t0),
            [choice(0, 2), choice(0, 0)]
        );
        // Carried all of q; a dip takes it to half its frame rate.
        let mut carried = cam;
        carried.current = choice(0, 2);
        let mut a = Allocator::default();
        assert_eq!(a.allocate(100 * K, &[carried], t0), [choice(0, 1)]);
    }
}
