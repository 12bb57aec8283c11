//! Who is speaking in a room: a sans-IO detector fed with the audio levels
//! publishers put in every audio packet's RTP header (RFC 6464, in the clear
//! outside the SFrame ciphertext, so the SFU stays payload-blind).
//!
//! The idea follows the dominant speaker identification of Volfin and Cohen
//! (as used by Jitsi and mediasoup): judge each speaker's activity on three
//! time scales and let a challenger take the floor only when it beats the
//! current dominant speaker on all three. The short scale reacts to speech,
//! the medium one needs a few hundred milliseconds of it, and the long one
//! keeps a cough or a word from stealing the floor from someone who is
//! talking with pauses. Our scales are fractions of active 20 ms frames
//! against an adaptive noise floor, compared with fixed margins, rather than
//! the paper's binomial likelihoods: simpler to reason about and to test.
//! The extension's voice-activity flag is not used: Chromium 156 sets it on
//! every packet of a WebAudio track, -127 dBov silence included, so the
//! level alone decides (as in mediasoup).
//!
//! Decisions are made at most every [`DECISION_INTERVAL`]; `poll` returns the
//! ordered list only when it changed, and at most every [`REPORT_INTERVAL`]. Memory is bounded: a fixed ring of
//! frames per speaker and at most [`MAX_SPEAKERS`] speakers.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// One frame of audio: the usual Opus packet duration.
pub const FRAME: Duration = Duration::from_millis(20);
/// How often the floor can change.
pub const DECISION_INTERVAL: Duration = Duration::from_millis(100);
/// The list is reported at most this often (a change within it waits).
/// Deciding more often than reporting sends a change that follows a quiet
/// spell sooner.
pub const REPORT_INTERVAL: Duration = Duration::from_millis(200);
/// At most this many speakers are tracked per room; more are ignored.
pub const MAX_SPEAKERS: usize = 512;

/// Frames kept per speaker (1 s).
const HISTORY: usize = 50;
/// The short scale: the last 100 ms.
const IMMEDIATE: usize = 5;
/// The medium scale: the last 300 ms.
const MEDIUM: usize = 15;
/// The long scale: the last 800 ms.
const LONG: usize = 40;
/// A missing frame this close after a heard one repeats it (network jitter
/// bunches packets); later ones are silence (the sender stopped).
const HOLD: u64 = 2;
/// RFC 6464 silence: -127 dBov.
const SILENT_DBOV: u8 = 127;
/// Loudness (dB above -127 dBov) a new speaker's noise floor starts at most
/// (-60 dBov): a first packet of speech must not become the floor.
const INITIAL_FLOOR: u8 = 67;
/// The noise floor rises 1 dB per this many heard frames without a quieter
/// one (1 s), so steady background noise stops counting as speech.
const FLOOR_RISE_FRAMES: u64 = 50;
/// dB per loudness band above the floor; bands are 0..=MAX_BAND.
const BAND_DB: u8 = 10;
const MAX_BAND: u8 = 12;
/// A frame is active speech from this band up (20 dB above the floor).
const ACTIVE_BAND: u8 = 2;
/// How much a challenger's medium and long scores must exceed the dominant
/// speaker's: the hysteresis.
const MEDIUM_MARGIN: f32 = 0.2;
const LONG_MARGIN: f32 = 0.1;
/// Listed as an active speaker (besides the dominant one) from this long
/// score up.
const LISTED_LONG: f32 = 0.1;

/// One entry of the ordered list.
#[derive(Debug, Clone, PartialEq)]
pub struct Speaker<K> {
    /// The speaker (a track or participant id).
    pub key: K,
    /// Recent loudness, 0 (silence, -127 dBov) to 1 (full scale, 0 dBov),
    /// linear in dB: the mean over the medium scale, rounded to 0.01.
    pub level: f32,
}

/// What `poll` reports when the list changed.
#[derive(Debug, Clone, PartialEq)]
pub struct SpeakerUpdate<K> {
    /// The dominant speaker first (while it holds the floor, even when
    /// silent), then the others speaking now, most active first.
    pub speakers: Vec<Speaker<K>>,
    /// The dominant speaker changed with this update.
    pub dominant_changed: bool,
}

/// One speaker's recent frames.
#[derive(Debug, Clone)]
struct Voice {
    /// dBov of the loudest packet per frame, ring indexed by frame number.
    frames: [u8; HISTORY],
    /// The last frame heard.
    last: u64,
    /// Noise floor as loudness (127 − dBov).
    floor: u8,
    /// The frame the floor last moved at.
    floor_moved: u64,
    /// The last frame that was active speech, if any.
    last_active: Option<u64>,
    /// Place in the last decision's ranking (None: new since).
    rank: Option<usize>,
}

impl Voice {
    fn new(frame: u64, dbov: u8) -> Self {
        let loudness = SILENT_DBOV - dbov;
        Self {
            frames: [SILENT_DBOV; HISTORY],
            last: frame,
            floor: loudness.min(INITIAL_FLOOR),
            floor_moved: frame,
            last_active: None,
            rank: None,
        }
    }

    /// dBov of `frame` as far as known (see [`HOLD`]).
    fn dbov(&self, frame: u64) -> u8 {
        if frame > self.last {
            if frame - self.last <= HOLD {
                self.frames[(self.last % HISTORY as u64) as usize]
            } else {
                SILENT_DBOV
            }
        } else if self.last - frame < HISTORY as u64 {
            self.frames[(frame % HISTORY as u64) as usize]
        } else {
            SILENT_DBOV
        }
    }

    fn hear(&mut self, frame: u64, dbov: u8) {
        if frame + HISTORY as u64 <= self.last {
            return; // older than the history: nothing to update
        }
        if frame > self.last {
            // Frames skipped since the last heard one: held or silent.
            let from = self.last + 1;
            let from = from.max(frame.saturating_sub(HISTORY as u64));
            for f in from..frame {
                let v = self.dbov(f);
                self.frames[(f % HISTORY as u64) as usize] = v;
            }
            self.frames[(frame % HISTORY as u64) as usize] = dbov;
            self.last = frame;
        } else {
            // Several packets in one frame (or a late one): keep the loudest.
            let slot = &mut self.frames[(frame % HISTORY as u64) as usize];
            *slot = (*slot).min(dbov);
        }
        let loudness = SILENT_DBOV - dbov;
        if loudness < self.floor {
            self.floor = loudness;
            self.floor_moved = frame;
        } else if frame >= self.floor_moved + FLOOR_RISE_FRAMES {
            self.floor = self.floor.saturating_add(1).min(loudness);
            self.floor_moved = frame;
        }
        if self.band(dbov) >= ACTIVE_BAND {
            self.last_active = Some(self.last_active.map_or(frame, |a| a.max(frame)));
        }
    }

    fn band(&self, dbov: u8) -> u8 {
        let loudness = SILENT_DBOV - dbov;
        (loudness.saturating_sub(self.floor) / BAND_DB).min(MAX_BAND)
    }

    /// Scores over the frames ending at `now_frame`.
    fn scores(&self, now_frame: u64) -> Scores {
        let frame = |back: usize| match now_frame.checked_sub(back as u64) {
            Some(f) => self.dbov(f),
            None => SILENT_DBOV, // before the first frame
        };
        let active = |n: usize| {
            (0..n)
                .filter(|&b| self.band(frame(b)) >= ACTIVE_BAND)
                .count() as f32
                / n as f32
        };
        let immediate = (0..IMMEDIATE)
            .map(|b| f32::from(self.band(frame(b))))
            .sum::<f32>()
            / (IMMEDIATE as f32 * f32::from(MAX_BAND));
        let loudness = (0..MEDIUM)
            .map(|b| f32::from(SILENT_DBOV - frame(b)))
            .sum::<f32>()
            / (MEDIUM as f32 * f32::from(SILENT_DBOV));
        Scores {
            immediate,
            medium: active(MEDIUM),
            long: active(LONG),
            level: (loudness * 100.0).round() / 100.0,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Scores {
    immediate: f32,
    medium: f32,
    long: f32,
    level: f32,
}

impl Scores {
    /// Whether `self` takes the floor from `dominant`.
    fn beats(&self, dominant: &Scores) -> bool {
        self.immediate > dominant.immediate
            && self.medium > dominant.medium + MEDIUM_MARGIN
            && self.long > dominant.long + LONG_MARGIN
    }
}

/// The detector of one room; see the module docs.
#[derive(Debug, Clone)]
pub struct SpeakerDetector<K> {
    voices: BTreeMap<K, Voice>,
    /// Frame numbers count from here (the first observation).
    epoch: Option<Instant>,
    dominant: Option<K>,
    /// How many speakers the last decision ranked (see `Voice::rank`).
    ranked: usize,
    /// The keys last reported, in order.
    reported: Vec<K>,
    /// A dominant speaker change not reported yet (held by `REPORT_INTERVAL`).
    unreported_change: bool,
    next_decision: Option<Instant>,
    next_report: Option<Instant>,
}

impl<K> Default for SpeakerDetector<K> {
    fn default() -> Self {
        Self {
            voices: BTreeMap::new(),
            epoch: None,
            dominant: None,
            ranked: 0,
            reported: Vec::new(),
            unreported_change: false,
            next_decision: None,
            next_report: None,
        }
    }
}

impl<K: Ord + Clone> SpeakerDetector<K> {
    /// A packet of `key`'s audio at `level_dbov` (RFC 6464: 0 is the
    /// loudest, 127 silence; larger values are clamped) arrived at `now`.
    pub fn observe(&mut self, key: &K, level_dbov: u8, now: Instant) {
        let dbov = level_dbov.min(SILENT_DBOV);
        let frame = self.frame(now);
        let full = self.voices.len() >= MAX_SPEAKERS;
        match self.voices.get_mut(key) {
            Some(v) => v.hear(frame, dbov),
            None if !full => {
                let mut v = Voice::new(frame, dbov);
                v.hear(frame, dbov);
                self.voices.insert(key.clone(), v);
            }
            None => {}
        }
    }

    /// Forgets `key` (its track ended or its participant left).
    pub fn remove(&mut self, key: &K) {
        self.voices.remove(key);
        if self.dominant.as_ref() == Some(key) {
            self.dominant = None;
        }
    }

    /// Makes the next decision report the list even if unchanged (someone
    /// joined and has not heard it).
    pub fn report_again(&mut self) {
        self.reported.clear();
    }

    /// Decides who speaks, at most every [`DECISION_INTERVAL`]; returns the
    /// ordered list when it differs from the last one returned, at most
    /// every [`REPORT_INTERVAL`].
    pub fn poll(&mut self, now: Instant) -> Option<SpeakerUpdate<K>> {
        if self.next_decision.is_some_and(|t| now < t) {
            return None;
        }
        self.next_decision = Some(now + DECISION_INTERVAL);
        let frame = self.frame(now);
        let scores: Vec<(&K, Scores)> = self
            .voices
            .iter()
            .map(|(k, v)| (k, v.scores(frame)))
            .collect();
        let score_of = |key: &K| scores.iter().find(|(k, _)| *k == key).map(|(_, s)| *s);
        let held = self
            .dominant
            .as_ref()
            .and_then(score_of)
            .unwrap_or_default();
        // Among those who beat the dominant speaker, the one with the most
        // medium-scale activity takes the floor (ties: long, then key order).
        let challenger = scores
            .iter()
            .filter(|(k, s)| Some(*k) != self.dominant.as_ref() && s.beats(&held))
            .max_by(|(ka, a), (kb, b)| {
                a.medium
                    .total_cmp(&b.medium)
                    .then(a.long.total_cmp(&b.long))
                    .then(kb.cmp(ka))
            })
            .map(|(k, _)| (*k).clone());
        let dominant_changed = challenger.is_some();
        if let Some(c) = challenger {
            self.dominant = Some(c);
        }
        let dominant = self.dominant.clone();
        let is_dominant = |k: &K| dominant.as_ref() == Some(k);
        // Others: most active on the long scale, then most recently active.
        let mut others: Vec<(&K, Scores, Option<u64>)> = scores
            .iter()
            .filter(|(k, _)| !is_dominant(k))
            .map(|(k, s)| (*k, *s, self.voices.get(*k).and_then(|v| v.last_active)))
            .collect();
        others.sort_by(|a, b| {
            b.1.long
                .total_cmp(&a.1.long)
                .then(b.2.cmp(&a.2))
                .then(a.0.cmp(b.0))
        });
        let mut speakers = Vec::new();
        if let Some(d) = &dominant {
            let level = score_of(d).map_or(0.0, |s| s.level);
            speakers.push(Speaker {
                key: d.clone(),
                level,
            });
        }
        speakers.extend(others.iter().filter(|(_, s, _)| s.long >= LISTED_LONG).map(
            |(k, s, _)| Speaker {
                key: (*k).clone(),
                level: s.level,
            },
        ));
        let ranking: Vec<K> = dominant
            .iter()
            .cloned()
            .chain(others.iter().map(|(k, _, _)| (*k).clone()))
            .collect();
        for (rank, k) in ranking.iter().enumerate() {
            if let Some(v) = self.voices.get_mut(k) {
                v.rank = Some(rank);
            }
        }
        self.ranked = ranking.len();
        let keys: Vec<K> = speakers.iter().map(|s| s.key.clone()).collect();
        self.unreported_change |= dominant_changed;
        if keys == self.reported && !self.unreported_change {
            return None;
        }
        if self.next_report.is_some_and(|t| now < t) {
            return None;
        }
        self.next_report = Some(now + REPORT_INTERVAL);
        self.reported = keys;
        Some(SpeakerUpdate {
            speakers,
            dominant_changed: std::mem::take(&mut self.unreported_change),
        })
    }

    /// Whether `key` is among the `n` loudest or most recent speakers as of
    /// the last decision. Keys not ranked yet (new since) count as last, so
    /// while fewer than `n` are ranked they are in.
    pub fn is_within(&self, key: &K, n: usize) -> bool {
        let rank = self.voices.get(key).and_then(|v| v.rank);
        rank.unwrap_or(self.ranked) < n
    }

    /// The current dominant speaker.
    pub fn dominant(&self) -> Option<&K> {
        self.dominant.as_ref()
    }

    /// Speakers tracked.
    pub fn len(&self) -> usize {
        self.voices.len()
    }

    /// No speaker is tracked.
    pub fn is_empty(&self) -> bool {
        self.voices.is_empty()
    }

    fn frame(&mut self, now: Instant) -> u64 {
        let epoch = *self.epoch.get_or_insert(now);
        (now.saturating_duration_since(epoch).as_millis() / FRAME.as_millis()) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOUD: u8 = 25;
    const QUIET: u8 = 127;

    /// A room's audio, one packet per speaker per 20 ms, with the decisions.
    struct Sim {
        det: SpeakerDetector<&'static str>,
        t0: Instant,
        now: Instant,
        /// (time since start, dominant) at every update.
        changes: Vec<(Duration, Option<&'static str>)>,
        last_update: Option<Instant>,
        updates: Vec<SpeakerUpdate<&'static str>>,
    }

    impl Sim {
        /// The keys of the last update, in order.
        fn last_listed(&self) -> Vec<&'static str> {
            let last = self.updates.last().expect("an update");
            last.speakers.iter().map(|s| s.key).collect()
        }

        fn new() -> Self {
            let t0 = Instant::now();
            Self {
                det: SpeakerDetector::default(),
                t0,
                now: t0,
                changes: Vec::new(),
                last_update: None,
                updates: Vec::new(),
            }
        }

        /// `levels` for `dur`, one packet each per frame, polling per frame.
        fn run(&mut self, levels: &[(&'static str, u8)], dur: Duration) {
            let end = self.now + dur;
            while self.now < end {
                for (k, l) in levels {
                    self.det.observe(k, *l, self.now);
                }
                if let Some(u) = self.det.poll(self.now) {
                    if let Some(last) = self.last_update.replace(self.now) {
                        assert!(self.now - last >= REPORT_INTERVAL, "updates too close");
                    }
                    if u.dominant_changed {
                        let d = self.det.dominant().copied();
                        self.changes.push((self.now - self.t0, d));
                    }
                    self.updates.push(u);
                }
                self.now += FRAME;
            }
        }

        fn first(&self) -> Option<&'static str> {
            self.updates.last()?.speakers.first().map(|s| s.key)
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn follows_three_speakers_taking_turns_within_a_second() {
        let mut sim = Sim::new();
        sim.run(&[("a", QUIET), ("b", QUIET), ("c", QUIET)], ms(500));
        assert_eq!(sim.det.dominant(), None, "nobody spoke yet");
        for (turn, who) in ["a", "b", "c", "a"].iter().enumerate() {
            let levels: Vec<(&str, u8)> = ["a", "b", "c"]
                .iter()
                .map(|k| (*k, if k == who { LOUD } else { QUIET }))
                .collect();
            let start = sim.now - sim.t0;
            sim.run(&levels, ms(3000));
            let (at, d) = *sim.changes.last().expect("a change");
            assert_eq!(d, Some(*who), "turn {turn}");
            assert!(
                at >= start && at - start < ms(1000),
                "turn {turn}: {who} took the floor {:?} after starting",
                at.saturating_sub(start)
            );
            assert_eq!(sim.first(), Some(*who));
            let u = sim.updates.last().unwrap();
            assert!(u.speakers[0].level > 0.3, "{u:?}");
        }
        assert_eq!(sim.changes.len(), 4, "{:?}", sim.changes);
    }

    #[test]
    fn a_cough_does_not_steal_the_floor() {
        let mut sim = Sim::new();
        sim.run(&[("a", LOUD), ("b", QUIET)], ms(2000));
        assert_eq!(sim.det.dominant(), Some(&"a"));
        // b coughs for 200 ms while a talks, then again in a's pause.
        sim.run(&[("a", LOUD), ("b", LOUD)], ms(200));
        sim.run(&[("a", LOUD), ("b", QUIET)], ms(600));
        sim.run(&[("a", QUIET), ("b", LOUD)], ms(200));
        sim.run(&[("a", QUIET), ("b", QUIET)], ms(2000));
        assert_eq!(sim.det.dominant(), Some(&"a"));
        assert_eq!(sim.changes.len(), 1, "{:?}", sim.changes);
        // But b talking on does take it.
        sim.run(&[("a", QUIET), ("b", LOUD)], ms(1000));
        assert_eq!(sim.det.dominant(), Some(&"b"));
    }

    #[test]
    fn simultaneous_starts_resolve_to_one_in_key_order() {
        let mut sim = Sim::new();
        sim.run(&[("b", LOUD), ("a", LOUD)], ms(1000));
        assert_eq!(sim.det.dominant(), Some(&"a"));
        assert_eq!(sim.changes.len(), 1);
        let keys = sim.last_listed();
        assert_eq!(keys, ["a", "b"], "both listed, dominant first");
        // Equal activity never flips the floor.
        sim.run(&[("b", LOUD), ("a", LOUD)], ms(3000));
        assert_eq!(sim.changes.len(), 1, "{:?}", sim.changes);
    }

    #[test]
    fn silence_keeps_the_floor_but_empties_the_rest_of_the_list() {
        let mut sim = Sim::new();
        sim.run(&[("a", LOUD), ("b", QUIET)], ms(1500));
        sim.run(&[("a", LOUD), ("b", LOUD)], ms(1000));
        let keys = sim.last_listed();
        assert_eq!(keys, ["a", "b"]);
        // Packets stop altogether (muted, or DTX): silence, not the last level.
        sim.run(&[], ms(2000));
        let u = sim.updates.last().unwrap();
        assert_eq!(u.speakers.len(), 1, "{u:?}");
        assert_eq!(u.speakers[0].key, "a");
        assert_eq!(u.speakers[0].level, 0.0);
        assert_eq!(sim.det.dominant(), Some(&"a"));
        assert!(
            sim.det.poll(sim.now + ms(500)).is_none(),
            "no change, no update"
        );
    }

    #[test]
    fn a_leaving_dominant_speaker_hands_over() {
        let mut sim = Sim::new();
        sim.run(&[("a", LOUD), ("b", QUIET)], ms(1500));
        sim.run(&[("a", LOUD), ("b", LOUD)], ms(1000));
        assert_eq!(sim.det.dominant(), Some(&"a"));
        sim.det.remove(&"a");
        sim.run(&[("b", LOUD)], ms(400));
        assert_eq!(sim.det.dominant(), Some(&"b"));
        assert_eq!(sim.first(), Some("b"));
        assert!(sim
            .updates
            .last()
            .unwrap()
            .speakers
            .iter()
            .all(|s| s.key != "a"));
        sim.det.remove(&"b");
        sim.run(&[], ms(400));
        assert!(sim.updates.last().unwrap().speakers.is_empty());
        assert!(sim.det.is_empty());
    }

    #[test]
    fn reports_are_throttled_and_held_changes_follow() {
        let mut det = SpeakerDetector::default();
        let t0 = Instant::now();
        let mut t = t0;
        det.observe(&"a", LOUD, t);
        assert!(det.poll(t).is_none(), "nothing to report yet");
        // a takes the floor: reported at once.
        let reported = loop {
            t += FRAME;
            det.observe(&"a", LOUD, t);
            if let Some(u) = det.poll(t) {
                break u;
            }
            assert!(t - t0 < ms(1000), "a never took the floor");
        };
        assert!(reported.dominant_changed);
        assert_eq!(reported.speakers[0].key, "a");
        // a leaves right after: the change waits for the report interval.
        let at = t;
        det.remove(&"a");
        for step in 1..10u32 {
            let now = at + FRAME * step;
            assert!(
                det.poll(now).is_none(),
                "reported {:?} after the last",
                now - at
            );
        }
        let u = det.poll(at + REPORT_INTERVAL).expect("the held change");
        assert!(u.speakers.is_empty());
        assert!(det.poll(at + REPORT_INTERVAL * 3).is_none(), "once");
    }

    #[test]
    fn steady_background_noise_is_not_speech() {
        let mut sim = Sim::new();
        // b sits at -40 dBov without a break: the floor rises to it.
        sim.run(&[("a", QUIET), ("b", 40)], ms(60_000));
        sim.run(&[("a", LOUD), ("b", 40)], ms(1000));
        assert_eq!(sim.det.dominant(), Some(&"a"));
        sim.run(&[("a", QUIET), ("b", 40)], ms(3000));
        assert_eq!(
            sim.det.dominant(),
            Some(&"a"),
            "noise does not take the floor"
        );
    }

    #[test]
    fn ranking_for_the_n_loudest() {
        let mut sim = Sim::new();
        sim.run(
            &[("a", QUIET), ("b", QUIET), ("c", QUIET), ("d", QUIET)],
            ms(300),
        );
        // Nobody spoke: key order, so the first two are in.
        assert!(sim.det.is_within(&"a", 2));
        assert!(!sim.det.is_within(&"d", 2));
        assert!(sim.det.is_within(&"new", 5), "unranked counts as last");
        sim.run(
            &[("a", QUIET), ("b", QUIET), ("c", LOUD), ("d", QUIET)],
            ms(1500),
        );
        sim.run(
            &[("a", QUIET), ("b", QUIET), ("c", QUIET), ("d", LOUD)],
            ms(1500),
        );
        // d holds the floor, c spoke most recently: a and b are out.
        assert!(sim.det.is_within(&"d", 1));
        assert!(sim.det.is_within(&"c", 2));
        assert!(!sim.det.is_within(&"a", 2));
        assert!(!sim.det.is_within(&"b", 2));
        assert!(sim.det.is_within(&"b", 4));
    }

    #[test]
    fn the_list_is_reported_again_for_a_newcomer() {
        let mut sim = Sim::new();
        sim.run(&[("a", LOUD)], ms(1000));
        let n = sim.updates.len();
        sim.run(&[("a", LOUD)], ms(1000));
        assert_eq!(sim.updates.len(), n, "no change, no update");
        sim.det.report_again();
        sim.run(&[("a", LOUD)], ms(300));
        assert_eq!(sim.updates.len(), n + 1);
        let u = sim.updates.last().unwrap();
        assert!(!u.dominant_changed);
        assert_eq!(u.speakers[0].key, "a");
    }

    #[test]
    fn memory_is_bounded() {
        let mut det = SpeakerDetector::default();
        let t0 = Instant::now();
        for i in 0..(MAX_SPEAKERS as u32 + 100) {
            det.observe(&i, LOUD, t0);
        }
        assert_eq!(det.len(), MAX_SPEAKERS);
        // Hours of packets keep one fixed ring per speaker.
        let mut det = SpeakerDetector::default();
        for n in 0..200_000u32 {
            det.observe(&1u8, (n % 128) as u8, t0 + FRAME * n);
        }
        assert_eq!(det.len(), 1);
        // Out-of-range levels and packets older than the history are harmless.
        det.observe(&1u8, 255, t0);
        det.observe(&1u8, 200, t0 + FRAME * 200_000);
        det.poll(t0 + FRAME * 200_001);
        assert_eq!(det.len(), 1);
    }
}
