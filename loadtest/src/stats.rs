//! Receiver statistics: per received track (sans-IO, times injected) and the
//! totals a worker hands back at the end of a run.

use hdrhistogram::Histogram;

use crate::frame::FrameHeader;
use crate::layers_received::{LayersReceived, TrackLayers};
use crate::media::generator::Kind;

/// Statistics of one received track.
#[derive(Debug, Default)]
pub struct TrackStats {
    /// Packets received (retransmissions included).
    pub packets: u64,
    first_seq: Option<u64>,
    highest_seq: u64,
    /// RFC 3550 interarrival jitter, in RTP clock units (×16 for precision).
    jitter16: u64,
    last_transit: Option<i64>,
    /// Frames that decrypted and verified.
    pub frames: u64,
    first_frame: Option<u32>,
    highest_frame: u32,
    /// Frames that failed authentication or content checks.
    pub integrity_errors: u64,
    /// Frames that arrived before their sender's key.
    pub no_key: u64,
    /// Spatial and temporal layers of a video track.
    pub layers: TrackLayers,
}

impl TrackStats {
    /// Records a packet arriving at `arrival` (µs since epoch) with RTP `rtp_time` in `clock` Hz.
    pub fn on_packet(&mut self, seq: u64, rtp_time: u32, clock: u32, arrival_us: u64) {
        self.packets += 1;
        match self.first_seq {
            None => {
                self.first_seq = Some(seq);
                self.highest_seq = seq;
            }
            Some(first) if seq < first => self.first_seq = Some(seq),
            _ => self.highest_seq = self.highest_seq.max(seq),
        }
        let arrival = (u128::from(arrival_us) * u128::from(clock) / 1_000_000) as i64;
        let transit = arrival - i64::from(rtp_time);
        if let Some(last) = self.last_transit {
            let d = (transit - last).unsigned_abs();
            // J += (|D| - J) / 16, kept as 16·J in integers.
            self.jitter16 = self.jitter16 + d - (self.jitter16 >> 4);
        }
        self.last_transit = Some(transit);
    }

    /// Packets expected from the sequence numbers seen.
    pub fn packets_expected(&self) -> u64 {
        self.first_seq.map_or(0, |f| self.highest_seq - f + 1)
    }

    /// Packets lost (expected but never received).
    pub fn packets_lost(&self) -> u64 {
        self.packets_expected().saturating_sub(self.packets)
    }

    /// Jitter in milliseconds for a track clocked at `clock` Hz.
    pub fn jitter_ms(&self, clock: u32) -> f64 {
        (self.jitter16 as f64 / 16.0) * 1000.0 / f64::from(clock)
    }

    /// Records a verified frame; returns its latency in µs.
    pub fn on_frame(&mut self, header: &FrameHeader, now_us: u64) -> u64 {
        self.frames += 1;
        match self.first_frame {
            None => {
                self.first_frame = Some(header.number);
                self.highest_frame = header.number;
            }
            Some(first) if header.number < first => self.first_frame = Some(header.number),
            _ => self.highest_frame = self.highest_frame.max(header.number),
        }
        now_us.saturating_sub(header.sent_us)
    }

    /// Frames expected from the frame numbers seen.
    pub fn frames_expected(&self) -> u64 {
        self.first_frame
            .map_or(0, |f| u64::from(self.highest_frame - f) + 1)
    }

    /// Frames lost.
    pub fn frames_lost(&self) -> u64 {
        self.frames_expected().saturating_sub(self.frames)
    }
}

/// A histogram of values from 1 to one hour (in its unit), 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("constant bounds are valid")
}

/// Totals of a worker (or the whole run once merged).
#[derive(Debug)]
pub struct Totals {
    /// End-to-end latency, send to decrypt, µs.
    pub latency_us: Histogram<u64>,
    /// Join time: connect to first frame decrypted, ms.
    pub join_ms: Histogram<u64>,
    /// Participants that joined (got `joined`).
    pub joined: u64,
    /// Participants that failed (signaling closed, error, timeout).
    pub failed: u64,
    /// Tracks expected across subscribers.
    pub tracks_expected: u64,
    /// Tracks from which at least one verified frame arrived.
    pub tracks_received: u64,
    /// Frames sent by publishers.
    pub frames_sent: u64,
    /// Packets sent by publishers.
    pub packets_sent: u64,
    /// Packets received by subscribers.
    pub packets_received: u64,
    /// Packets expected by subscribers.
    pub packets_expected: u64,
    /// Frames verified by subscribers.
    pub frames_received: u64,
    /// Frames expected by subscribers.
    pub frames_expected: u64,
    /// Frames failing authentication or content checks.
    pub integrity_errors: u64,
    /// Frames that arrived before their key.
    pub no_key: u64,
    /// Sum of per-track jitter (ms) and its count, for the mean.
    pub jitter_ms_sum: f64,
    /// Largest per-track jitter, ms.
    pub jitter_ms_max: f64,
    /// Tracks the jitter sum covers.
    pub jitter_tracks: u64,
    /// Video layers received, per group of receivers.
    pub layers: LayersReceived,
    /// First few error messages (for the report).
    pub errors: Vec<String>,
}

impl Default for Totals {
    fn default() -> Self {
        Totals {
            latency_us: histogram(),
            join_ms: histogram(),
            joined: 0,
            failed: 0,
            tracks_expected: 0,
            tracks_received: 0,
            frames_sent: 0,
            packets_sent: 0,
            packets_received: 0,
            packets_expected: 0,
            frames_received: 0,
            frames_expected: 0,
            integrity_errors: 0,
            no_key: 0,
            jitter_ms_sum: 0.0,
            jitter_ms_max: 0.0,
            jitter_tracks: 0,
            layers: LayersReceived::default(),
            errors: Vec::new(),
        }
    }
}

impl Totals {
    /// Adds another worker's totals.
    pub fn merge(&mut self, o: &Totals) {
        let _ = self.latency_us.add(&o.latency_us);
        let _ = self.join_ms.add(&o.join_ms);
        self.joined += o.joined;
        self.failed += o.failed;
        self.tracks_expected += o.tracks_expected;
        self.tracks_received += o.tracks_received;
        self.frames_sent += o.frames_sent;
        self.packets_sent += o.packets_sent;
        self.packets_received += o.packets_received;
        self.packets_expected += o.packets_expected;
        self.frames_received += o.frames_received;
        self.frames_expected += o.frames_expected;
        self.integrity_errors += o.integrity_errors;
        self.no_key += o.no_key;
        self.jitter_ms_sum += o.jitter_ms_sum;
        self.jitter_ms_max = self.jitter_ms_max.max(o.jitter_ms_max);
        self.jitter_tracks += o.jitter_tracks;
        self.layers.merge(&o.layers);
        for e in &o.errors {
            self.note_error(e.clone());
        }
    }

    /// Keeps the first 20 error messages.
    pub fn note_error(&mut self, e: String) {
        if self.errors.len() < 20 {
            self.errors.push(e);
        }
    }

    /// Adds the statistics of a finished track of `kind` that a receiver of
    /// `group` (`layers_received::PUBLISHERS` or `SUBSCRIBERS`) got.
    pub fn add_track(&mut self, t: &TrackStats, kind: Kind, group: &str) {
        let clock = kind.clock_rate();
        self.packets_received += t.packets;
        self.packets_expected += t.packets_expected();
        self.frames_received += t.frames;
        self.frames_expected += t.frames_expected();
        self.integrity_errors += t.integrity_errors;
        self.no_key += t.no_key;
        if t.frames > 0 {
            self.tracks_received += 1;
        }
        if t.packets > 1 {
            let j = t.jitter_ms(clock);
            self.jitter_ms_sum += j;
            self.jitter_ms_max = self.jitter_ms_max.max(j);
            self.jitter_tracks += 1;
        }
        if kind == Kind::Video {
            self.layers.add_track(group, &t.layers);
        }
    }

    /// Packet loss in percent.
    pub fn packet_loss_pct(&self) -> f64 {
        pct(
            self.packets_expected.saturating_sub(self.packets_received),
            self.packets_expected,
        )
    }

    /// Frame loss in percent.
    pub fn frame_loss_pct(&self) -> f64 {
        pct(
            self.frames_expected.saturating_sub(self.frames_received),
            self.frames_expected,
        )
    }
}

fn pct(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loss_jitter_and_latency_from_injected_times() {
        let mut t = TrackStats::default();
        // 50 packets 20 ms apart, 960 ticks each at 48 kHz; packet 10 lost,
        // odd packets arrive 2 ms late.
        for i in 0..50u64 {
            if i == 10 {
                continue;
            }
            let arrival = i * 20_000 + if i % 2 == 1 { 2_000 } else { 0 };
            t.on_packet(1000 + i, (i * 960) as u32, 48_000, arrival);
        }
        assert_eq!(t.packets_expected(), 50);
        assert_eq!(t.packets_lost(), 1);
        // Transit alternates by 2 ms: jitter converges towards 2 ms.
        let j = t.jitter_ms(48_000);
        assert!(j > 1.5 && j <= 2.0, "{j}");
        let h = |n| FrameHeader {
            sender: 1,
            kind: Kind::Audio,
            layer: 0,
            rid: 0,
            size: (0, 0),
            temporal: 0,
            keyframe: false,
            number: n,
            sent_us: 1_000,
        };
        assert_eq!(t.on_frame(&h(5), 4_500), 3_500);
        t.on_frame(&h(9), 9_000);
        t.on_frame(&h(6), 9_000);
        assert_eq!(t.frames_expected(), 5);
        assert_eq!(t.frames_lost(), 2);
        let mut totals = Totals::default();
        totals.add_track(&t, Kind::Audio, crate::layers_received::SUBSCRIBERS);
        assert_eq!(totals.tracks_received, 1);
        assert!((totals.packet_loss_pct() - 2.0).abs() < 1e-9);
        assert!((totals.frame_loss_pct() - 40.0).abs() < 1e-9);
        let mut all = Totals::default();
        all.merge(&totals);
        all.merge(&totals);
        assert_eq!(all.packets_expected, 100);
    }
}
