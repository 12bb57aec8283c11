//! The result of a run: summary figures, the end-of-run table, JSON, an HTML
//! report with hand-drawn SVG charts, and the threshold verdict.

use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::layers_received::GroupLayers;
use crate::progress::Sample;
use crate::server_cost::ServerCost;
use crate::stats::Totals;

/// Percentiles of a distribution, in its unit.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Percentiles {
    /// Values recorded.
    pub count: u64,
    /// Median.
    pub p50: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest.
    pub max: f64,
}

impl Percentiles {
    /// Percentiles of `h`, each value multiplied by `scale` (e.g. µs → ms).
    pub fn of(h: &Histogram<u64>, scale: f64) -> Percentiles {
        if h.is_empty() {
            return Percentiles::default();
        }
        Percentiles {
            count: h.len(),
            p50: h.value_at_quantile(0.50) as f64 * scale,
            p95: h.value_at_quantile(0.95) as f64 * scale,
            p99: h.value_at_quantile(0.99) as f64 * scale,
            max: h.max() as f64 * scale,
        }
    }
}

/// A histogram bucket for the charts: upper bound and count.
#[derive(Debug, Clone, Serialize)]
pub struct Bucket {
    /// Upper bound (ms).
    pub le_ms: f64,
    /// Values in the bucket.
    pub count: u64,
}

/// Everything a run reports.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Scenario name.
    pub scenario: String,
    /// Participants started.
    pub participants: u64,
    /// Participants that joined.
    pub joined: u64,
    /// Participants that failed.
    pub failed: u64,
    /// Wall time of the run, s.
    pub wall_secs: f64,
    /// Tracks expected across subscribers.
    pub tracks_expected: u64,
    /// Tracks received (≥ 1 verified frame).
    pub tracks_received: u64,
    /// Percent of expected tracks received.
    pub tracks_pct: f64,
    /// Frames sent.
    pub frames_sent: u64,
    /// Frames verified by subscribers.
    pub frames_received: u64,
    /// Frame loss, percent.
    pub frame_loss_pct: f64,
    /// Packets sent.
    pub packets_sent: u64,
    /// Packets received.
    pub packets_received: u64,
    /// Packet loss, percent.
    pub packet_loss_pct: f64,
    /// Integrity errors (authentication or content failures).
    pub integrity_errors: u64,
    /// Frames that arrived before their sender's key.
    pub frames_without_key: u64,
    /// End-to-end latency, ms.
    pub latency_ms: Percentiles,
    /// Join → first frame decrypted, ms.
    pub join_ms: Percentiles,
    /// Mean and largest per-track jitter, ms.
    pub jitter_ms_mean: f64,
    /// Largest per-track jitter, ms.
    pub jitter_ms_max: f64,
    /// Per group of receivers (publishers, subscribers): the spatial layers
    /// their video tracks got and the frames per temporal layer.
    pub video_layers: Vec<GroupLayers>,
    /// Received frames whose temporal layering broke the L1T3 cycle.
    pub temporal_breaks: u64,
    /// Server cost over the steady window.
    pub server: ServerCost,
    /// CPU seconds the loadtest process itself used (all threads, whole run).
    pub loadtest_cpu_secs: f64,
    /// Latency histogram (ms buckets).
    pub latency_buckets: Vec<Bucket>,
    /// Join time histogram (ms buckets).
    pub join_buckets: Vec<Bucket>,
    /// One sample per second.
    pub series: Vec<Sample>,
    /// First error messages.
    pub errors: Vec<String>,
    /// Threshold violations (empty = pass).
    pub violations: Vec<String>,
}

/// Thresholds given on the command line.
#[derive(Debug, Clone, Default)]
pub struct Thresholds {
    /// Largest acceptable packet or frame loss, percent.
    pub max_loss_pct: Option<f64>,
    /// Largest acceptable p99 latency, ms.
    pub max_p99_latency_ms: Option<f64>,
    /// Smallest acceptable share of expected tracks received, percent.
    pub min_tracks_pct: Option<f64>,
}

fn buckets(h: &Histogram<u64>, scale: f64) -> Vec<Bucket> {
    // Log-spaced upper bounds: 1, 2, 5, 10, 20, 50 ... ms, up to the maximum.
    if h.is_empty() {
        return Vec::new();
    }
    let max_ms = h.max() as f64 * scale;
    let mut out: Vec<Bucket> = Vec::new();
    let mut le = 1.0;
    let mut k = 0;
    loop {
        out.push(Bucket {
            le_ms: le,
            count: 0,
        });
        if le >= max_ms || out.len() >= 24 {
            break;
        }
        k += 1;
        le = [1.0, 2.0, 5.0][k % 3] * 10f64.powi(k as i32 / 3);
    }
    for v in h.iter_recorded() {
        let ms = h.highest_equivalent(v.value_iterated_to()) as f64 * scale;
        let i = out
            .iter()
            .position(|b| ms <= b.le_ms)
            .unwrap_or(out.len() - 1);
        out[i].count += v.count_at_value();
    }
    out
}

impl Summary {
    /// Builds the summary.
    pub fn new(
        scenario: &str,
        participants: u64,
        wall_secs: f64,
        t: &Totals,
        server: ServerCost,
        series: Vec<Sample>,
        thresholds: &Thresholds,
    ) -> Summary {
        let mut s = Summary {
            scenario: scenario.into(),
            participants,
            joined: t.joined,
            failed: t.failed,
            wall_secs,
            tracks_expected: t.tracks_expected,
            tracks_received: t.tracks_received,
            tracks_pct: if t.tracks_expected == 0 {
                100.0
            } else {
                t.tracks_received as f64 * 100.0 / t.tracks_expected as f64
            },
            frames_sent: t.frames_sent,
            frames_received: t.frames_received,
            frame_loss_pct: t.frame_loss_pct(),
            packets_sent: t.packets_sent,
            packets_received: t.packets_received,
            packet_loss_pct: t.packet_loss_pct(),
            integrity_errors: t.integrity_errors,
            frames_without_key: t.no_key,
            latency_ms: Percentiles::of(&t.latency_us, 1e-3),
            join_ms: Percentiles::of(&t.join_ms, 1.0),
            jitter_ms_mean: if t.jitter_tracks == 0 {
                0.0
            } else {
                t.jitter_ms_sum / t.jitter_tracks as f64
            },
            jitter_ms_max: t.jitter_ms_max,
            video_layers: t.layers.groups.clone(),
            temporal_breaks: t.layers.temporal_breaks(),
            server,
            // User + system CPU of this process so far.
            loadtest_cpu_secs: crate::server_cost::sample_process(std::process::id())
                .map_or(0.0, |s| s.cpu_secs),
            latency_buckets: buckets(&t.latency_us, 1e-3),
            join_buckets: buckets(&t.join_ms, 1.0),
            series,
            errors: t.errors.clone(),
            violations: Vec::new(),
        };
        s.violations = s.check(thresholds);
        s
    }

    /// Integrity errors and failed participants always fail a run; the
    /// thresholds only when given.
    fn check(&self, th: &Thresholds) -> Vec<String> {
        let mut v = Vec::new();
        if self.failed > 0 {
            v.push(format!(
                "{} of {} participants failed (join refused, connection lost or media timeout)",
                self.failed, self.participants
            ));
        }
        if self.integrity_errors > 0 {
            v.push(format!(
                "{} integrity errors (frames changed between sender and receiver)",
                self.integrity_errors
            ));
        }
        if self.temporal_breaks > 0 {
            v.push(format!(
                "{} frames broke the L1T3 temporal cycle (VP8 descriptors changed or frames reordered)",
                self.temporal_breaks
            ));
        }
        if let Some(max) = th.max_loss_pct {
            let loss = self.packet_loss_pct.max(self.frame_loss_pct);
            if loss > max {
                v.push(format!("loss {loss:.3}% > --max-loss {max}%"));
            }
        }
        if let Some(max) = th.max_p99_latency_ms {
            if self.latency_ms.count == 0 || self.latency_ms.p99 > max {
                v.push(format!(
                    "p99 latency {:.1} ms > --max-p99-latency {max} ms",
                    self.latency_ms.p99
                ));
            }
        }
        if let Some(min) = th.min_tracks_pct {
            if self.tracks_pct < min {
                v.push(format!(
                    "tracks received {}/{} ({:.1}%) < --min-tracks {min}%",
                    self.tracks_received, self.tracks_expected, self.tracks_pct
                ));
            }
        }
        v
    }

    /// The end-of-run table.
    pub fn table(&self) -> String {
        let mut o = String::new();
        let opt = |v: Option<f64>, unit: &str, prec: usize| {
            v.map_or("-".to_string(), |v| format!("{v:.prec$}{unit}"))
        };
        let rows: Vec<(&str, String)> = vec![
            ("scenario", self.scenario.clone()),
            (
                "participants",
                format!(
                    "{} started, {} joined, {} failed",
                    self.participants, self.joined, self.failed
                ),
            ),
            (
                "tracks received",
                format!(
                    "{}/{} ({:.1}%)",
                    self.tracks_received, self.tracks_expected, self.tracks_pct
                ),
            ),
            (
                "frames",
                format!(
                    "{} sent, {} verified, loss {:.3}%",
                    self.frames_sent, self.frames_received, self.frame_loss_pct
                ),
            ),
            (
                "packets",
                format!(
                    "{} sent, {} received, loss {:.3}%",
                    self.packets_sent, self.packets_received, self.packet_loss_pct
                ),
            ),
            (
                "integrity errors",
                format!(
                    "{} (frames before key: {})",
                    self.integrity_errors, self.frames_without_key
                ),
            ),
            (
                "latency ms",
                format!(
                    "p50 {:.2}  p95 {:.2}  p99 {:.2}  max {:.2}",
                    self.latency_ms.p50,
                    self.latency_ms.p95,
                    self.latency_ms.p99,
                    self.latency_ms.max
                ),
            ),
            (
                "jitter ms",
                format!(
                    "mean {:.2}  max {:.2}",
                    self.jitter_ms_mean, self.jitter_ms_max
                ),
            ),
            (
                "join→first frame ms",
                format!(
                    "p50 {:.0}  p95 {:.0}  max {:.0}",
                    self.join_ms.p50, self.join_ms.p95, self.join_ms.max
                ),
            ),
            (
                "server CPU",
                format!(
                    "{} over {:.1} s ({})",
                    opt(self.server.cpu_secs, " s", 2),
                    self.server.window_secs,
                    opt(self.server.cpu_pct, "% of a core", 1)
                ),
            ),
            ("server RSS", opt(self.server.rss_mib, " MiB", 1)),
            ("forwarded packets/s", opt(self.server.forwarded_pps, "", 0)),
            (
                "CPU µs / fwd packet",
                opt(self.server.cpu_us_per_packet, "", 3),
            ),
            (
                "loadtest CPU",
                format!(
                    "{:.2} s over {:.1} s wall",
                    self.loadtest_cpu_secs, self.wall_secs
                ),
            ),
        ];
        let mut rows: Vec<(String, String)> =
            rows.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
        let at = rows
            .iter()
            .position(|(k, _)| k == "join→first frame ms")
            .map_or(rows.len(), |i| i + 1);
        for (i, g) in self.video_layers.iter().enumerate() {
            rows.insert(at + i, (format!("video rx {}", g.group), g.describe()));
        }
        for (k, v) in rows {
            let _ = writeln!(o, "  {k:<22} {v}");
        }
        if !self.errors.is_empty() {
            let _ = writeln!(o, "  first errors:");
            for e in self.errors.iter().take(5) {
                let _ = writeln!(o, "    {e}");
            }
        }
        if self.violations.is_empty() {
            let _ = writeln!(o, "  result                 PASS");
        } else {
            for v in &self.violations {
                let _ = writeln!(o, "  FAIL                   {v}");
            }
        }
        o
    }

    /// The HTML report with SVG charts.
    pub fn html(&self) -> String {
        let mut h = String::new();
        let _ = write!(
            h,
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>loadtest: {}</title>\
             <style>body{{font-family:sans-serif;margin:2em;max-width:900px}}pre{{background:#f4f4f4;padding:1em}}\
             svg{{background:#fafafa;border:1px solid #ddd;margin:0.5em 0}}</style></head><body>\
             <h1>loadtest: {}</h1><pre>{}</pre>",
            esc(&self.scenario),
            esc(&self.scenario),
            esc(&self.table())
        );
        h += "<h2>End-to-end latency (send → decrypt)</h2>";
        h += &bar_chart(&self.latency_buckets, "ms");
        h += "<h2>Join → first frame decrypted</h2>";
        h += &bar_chart(&self.join_buckets, "ms");
        type Field = fn(&Sample) -> f64;
        let series: [(&str, Field); 5] = [
            ("Participants joined", |s| s.joined as f64),
            ("Mb/s received", |s| s.mbps_in),
            ("Mb/s sent", |s| s.mbps_out),
            ("Packet loss per second (%)", |s| s.loss_pct),
            ("Mean latency per second (ms)", |s| s.latency_ms),
        ];
        for (title, f) in series {
            let _ = write!(h, "<h2>{title}</h2>");
            h += &line_chart(&self.series.iter().map(|s| (s.t, f(s))).collect::<Vec<_>>());
        }
        h += "</body></html>\n";
        h
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

const W: f64 = 800.0;
const H: f64 = 220.0;
const PAD: f64 = 40.0;

fn bar_chart(buckets: &[Bucket], unit: &str) -> String {
    let mut s = format!("<svg width=\"{W}\" height=\"{H}\" xmlns=\"http://www.w3.org/2000/svg\">");
    if buckets.is_empty() {
        return s + "<text x=\"20\" y=\"30\">no data</text></svg>";
    }
    let max = buckets.iter().map(|b| b.count).max().unwrap_or(1).max(1) as f64;
    let bw = (W - 2.0 * PAD) / buckets.len() as f64;
    for (i, b) in buckets.iter().enumerate() {
        let bh = (H - 2.0 * PAD) * b.count as f64 / max;
        let x = PAD + i as f64 * bw;
        let _ = write!(
            s,
            "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{bh:.1}\" fill=\"#4a7fb5\"><title>≤ {} {unit}: {}</title></rect>\
             <text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\" text-anchor=\"middle\">≤{}</text>\
             <text x=\"{:.1}\" y=\"{:.1}\" font-size=\"9\" text-anchor=\"middle\">{}</text>",
            H - PAD - bh,
            bw * 0.8,
            b.le_ms,
            b.count,
            x + bw * 0.4,
            H - PAD + 14.0,
            b.le_ms,
            x + bw * 0.4,
            H - PAD - bh - 3.0,
            b.count
        );
    }
    let _ = write!(
        s,
        "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\">{unit}</text></svg>",
        W - PAD,
        H - 8.0
    );
    s
}

fn line_chart(points: &[(f64, f64)]) -> String {
    let mut s = format!("<svg width=\"{W}\" height=\"{H}\" xmlns=\"http://www.w3.org/2000/svg\">");
    if points.is_empty() {
        return s + "<text x=\"20\" y=\"30\">no data</text></svg>";
    }
    let tmax = points.iter().map(|p| p.0).fold(1.0, f64::max);
    let vmax = points.iter().map(|p| p.1).fold(0.0, f64::max).max(1e-9);
    let path: Vec<String> = points
        .iter()
        .map(|(t, v)| {
            format!(
                "{:.1},{:.1}",
                PAD + (W - 2.0 * PAD) * t / tmax,
                H - PAD - (H - 2.0 * PAD) * v / vmax
            )
        })
        .collect();
    let _ = write!(
        s,
        "<polyline fill=\"none\" stroke=\"#c0392b\" stroke-width=\"2\" points=\"{}\"/>\
         <line x1=\"{PAD}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\" stroke=\"#999\"/>\
         <text x=\"4\" y=\"{:.1}\" font-size=\"10\">{vmax:.2}</text><text x=\"4\" y=\"{:.1}\" font-size=\"10\">0</text>\
         <text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\">{tmax:.0} s</text></svg>",
        path.join(" "),
        H - PAD,
        W - PAD,
        H - PAD,
        PAD,
        H - PAD,
        W - PAD - 20.0,
        H - PAD + 14.0
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdict_table_and_html() {
        let mut t = Totals::default();
        for v in [1_000u64, 2_000, 3_000, 40_000] {
            t.latency_us.record(v).unwrap();
        }
        t.join_ms.record(120).unwrap();
        t.tracks_expected = 4;
        t.tracks_received = 3;
        t.packets_expected = 1000;
        t.packets_received = 990;
        let th = Thresholds {
            max_loss_pct: Some(0.5),
            max_p99_latency_ms: Some(30.0),
            min_tracks_pct: Some(100.0),
        };
        let s = Summary::new("unit", 2, 1.0, &t, ServerCost::default(), vec![], &th);
        assert_eq!(s.violations.len(), 3, "{:?}", s.violations);
        assert!((s.packet_loss_pct - 1.0).abs() < 1e-9);
        let failed = Totals {
            failed: 1,
            ..Totals::default()
        };
        let f = Summary::new(
            "unit",
            2,
            1.0,
            &failed,
            ServerCost::default(),
            vec![],
            &Thresholds::default(),
        );
        assert_eq!(f.violations.len(), 1);
        let ok = Summary::new(
            "unit",
            2,
            1.0,
            &t,
            ServerCost::default(),
            vec![],
            &Thresholds::default(),
        );
        assert!(ok.violations.is_empty());
        t.integrity_errors = 1;
        let bad = Summary::new(
            "unit",
            2,
            1.0,
            &t,
            ServerCost::default(),
            vec![],
            &Thresholds::default(),
        );
        assert_eq!(bad.violations.len(), 1);
        assert!(bad.table().contains("FAIL"));
        // Frames off the L1T3 cycle fail the run; the layers are in the table.
        t.integrity_errors = 0;
        let mut track = crate::layers_received::TrackLayers::default();
        for (n, tid) in [0u8, 2, 2].into_iter().enumerate() {
            let h = crate::frame::FrameHeader {
                sender: 1,
                kind: crate::media::generator::Kind::Video,
                layer: 1,
                rid: b'h',
                size: (640, 360),
                temporal: tid,
                keyframe: n == 0,
                number: n as u32,
                sent_us: 0,
            };
            let temporal = crate::vp8_descriptor::Temporal {
                tid,
                layer_sync: false,
                tl0_pic_idx: 0,
            };
            track.on_frame(&h, temporal, n as u64);
        }
        t.layers.add_receiver("subscribers");
        t.layers.add_track("subscribers", &track);
        let off = Summary::new(
            "unit",
            2,
            1.0,
            &t,
            ServerCost::default(),
            vec![],
            &Thresholds::default(),
        );
        assert_eq!(off.temporal_breaks, 1);
        assert!(off.violations[0].contains("L1T3"), "{:?}", off.violations);
        let table = off.table();
        assert!(
            table.contains("video rx subscribers   1 receivers, 1 video tracks, 1 of one layer; h 640×360 on 1 tracks, frames T0 1 T1 0 T2 2; 1 frames off the L1T3 cycle"),
            "{table}"
        );
        let total: u64 = s.latency_buckets.iter().map(|b| b.count).sum();
        assert_eq!(total, 4);
        let html = s.html();
        assert!(html.contains("<svg") && html.contains("<rect"));
        assert!(serde_json::to_string(&s).unwrap().contains("\"p99\""));
    }
}
