//! Three temporal layers in one stream (L1T3) as Chromium's VP8 encoder
//! makes them: frames cycle through temporal ids 0, 2, 1, 2; a TL0 frame
//! references TL0 only, TL1 references TL0, TL2 references the frames below
//! it. A keyframe is TL0 and restarts the cycle. The sender side numbers the
//! frames (picture id, TL0PICIDX, layer sync); the receiver side checks that
//! what arrives follows the cycle.

use crate::vp8_descriptor::Temporal;

/// Temporal ids of one cycle.
pub const L1T3: [u8; 4] = [0, 2, 1, 2];
/// Temporal layers.
pub const TEMPORAL_LAYERS: usize = 3;

/// What the descriptor of one frame says about its layering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layering {
    /// 15-bit picture id, one more per frame.
    pub picture_id: u16,
    /// TID, Y and TL0PICIDX.
    pub temporal: Temporal,
}

/// The sender's position in the cycle.
#[derive(Debug, Clone)]
pub struct TemporalLayers {
    /// Position in `L1T3` of the last frame (None before the first).
    pos: Option<usize>,
    picture_id: u16,
    tl0_pic_idx: u8,
}

impl TemporalLayers {
    /// Numbering starts at `picture_id` (browsers start at a random one).
    pub fn new(picture_id: u16) -> TemporalLayers {
        TemporalLayers {
            pos: None,
            picture_id: picture_id & 0x7fff,
            tl0_pic_idx: 0,
        }
    }

    /// The layering of the next frame.
    pub fn next(&mut self, keyframe: bool) -> Layering {
        let pos = match (self.pos, keyframe) {
            (Some(p), false) => (p + 1) % L1T3.len(),
            _ => 0,
        };
        if self.pos.is_some() {
            self.picture_id = (self.picture_id + 1) & 0x7fff;
            if pos == 0 {
                self.tl0_pic_idx = self.tl0_pic_idx.wrapping_add(1);
            }
        }
        self.pos = Some(pos);
        Layering {
            picture_id: self.picture_id,
            temporal: Temporal {
                tid: L1T3[pos],
                // Positions 1 and 2 reference the TL0 frame only.
                layer_sync: pos == 1 || pos == 2,
                tl0_pic_idx: self.tl0_pic_idx,
            },
        }
    }
}

/// Checks the layering of consecutive frames of one stream: frame n + 1's
/// temporal id must be the next in the cycle (0 on a keyframe), and TL0PICIDX
/// must grow by one on a TL0 frame and stay otherwise. Frames that do not
/// follow each other (loss, a layer the SFU dropped) are not compared.
#[derive(Debug, Default, Clone)]
pub struct PatternCheck {
    /// Last frame: number, cycle position (None: a TL2 frame not yet placed), TL0PICIDX.
    last: Option<(u32, Option<usize>, u8)>,
    /// Frames that broke the cycle.
    pub breaks: u64,
}

impl PatternCheck {
    /// Records frame `number` with `temporal`; false if it broke the cycle.
    pub fn observe(&mut self, number: u32, keyframe: bool, temporal: Temporal) -> bool {
        let tid = temporal.tid;
        let alone = match tid {
            0 => Some(0),
            1 => Some(2),
            _ => None,
        };
        let mut ok = true;
        let pos = match self.last {
            Some((n, last_pos, tl0)) if n.wrapping_add(1) == number => {
                let tl0_ok = if tid == 0 {
                    temporal.tl0_pic_idx == tl0.wrapping_add(1)
                } else {
                    temporal.tl0_pic_idx == tl0
                };
                let expected: &[usize] = match (keyframe, last_pos) {
                    (true, _) => &[0],
                    (false, Some(p)) => &[(p + 1) % L1T3.len()][..],
                    // After an unplaced TL2 frame (position 1 or 3).
                    (false, None) => &[2, 0],
                };
                let pos = expected.iter().copied().find(|&p| L1T3[p] == tid);
                ok = pos.is_some() && (tl0_ok || keyframe);
                if ok {
                    pos
                } else {
                    alone
                }
            }
            _ => alone,
        };
        if !ok {
            self.breaks += 1;
        }
        self.last = Some((number, pos, temporal.tl0_pic_idx));
        ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cycle_numbering_and_keyframes() {
        let mut t = TemporalLayers::new(0x7ffe);
        let frames: Vec<Layering> = (0..9).map(|i| t.next(i == 0)).collect();
        let tids: Vec<u8> = frames.iter().map(|f| f.temporal.tid).collect();
        assert_eq!(tids, [0, 2, 1, 2, 0, 2, 1, 2, 0]);
        let ids: Vec<u16> = frames.iter().map(|f| f.picture_id).collect();
        assert_eq!(ids[..3], [0x7ffe, 0x7fff, 0]);
        let tl0: Vec<u8> = frames.iter().map(|f| f.temporal.tl0_pic_idx).collect();
        assert_eq!(tl0, [0, 0, 0, 0, 1, 1, 1, 1, 2]);
        let sync: Vec<bool> = frames.iter().map(|f| f.temporal.layer_sync).collect();
        assert_eq!(sync[..4], [false, true, true, false]);
        // A requested keyframe in the middle of a cycle restarts it.
        assert_eq!(t.next(false).temporal.tid, 2);
        let k = t.next(true);
        assert_eq!((k.temporal.tid, k.temporal.tl0_pic_idx), (0, 3));
        assert_eq!(t.next(false).temporal.tid, 2);
    }

    #[test]
    fn the_check_accepts_the_cycle_and_catches_breaks() {
        let mut t = TemporalLayers::new(1);
        let mut c = PatternCheck::default();
        for n in 0..100u32 {
            let key = n % 60 == 0 || n == 37;
            let l = t.next(key);
            // Frames 10..13 lost: the check resumes after the gap.
            if (10..13).contains(&n) {
                continue;
            }
            assert!(c.observe(n, key, l.temporal), "frame {n}");
        }
        assert_eq!(c.breaks, 0);
        let at = |tid, tl0| Temporal {
            tid,
            layer_sync: false,
            tl0_pic_idx: tl0,
        };
        // 0, 2, 2: TL2 may not follow TL2.
        let mut c = PatternCheck::default();
        assert!(c.observe(0, true, at(0, 5)));
        assert!(c.observe(1, false, at(2, 5)));
        assert!(!c.observe(2, false, at(2, 5)));
        // 0, 1: TL1 must come after a TL2.
        let mut c = PatternCheck::default();
        c.observe(0, true, at(0, 5));
        assert!(!c.observe(1, false, at(1, 5)));
        // TL0PICIDX must grow on TL0 frames and stay on the others.
        let mut c = PatternCheck::default();
        c.observe(0, true, at(0, 5));
        assert!(!c.observe(1, false, at(2, 6)));
        let mut c = PatternCheck::default();
        for (n, tid) in [0, 2, 1, 2].iter().enumerate() {
            c.observe(n as u32, n == 0, at(*tid, 5));
        }
        assert!(!c.observe(4, false, at(0, 5)));
        assert!(c.observe(5, false, at(2, 5)));
        // Starting on a TL2 frame: placed by the next one.
        let mut c = PatternCheck::default();
        c.observe(7, false, at(2, 9));
        assert!(c.observe(8, false, at(1, 9)));
        assert!(c.observe(9, false, at(2, 9)));
        assert!(c.observe(10, false, at(0, 10)));
        assert_eq!(c.breaks, 0);
    }
}
