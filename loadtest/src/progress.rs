//! Live progress: counters each worker publishes, the indicatif line drawn
//! from them, and the one-second time series kept for the report.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

/// Counters one worker stores (cumulative values, overwritten each time).
#[derive(Debug, Default)]
pub struct WorkerLive {
    /// Participants joined and not failed.
    pub joined: AtomicU64,
    /// Participants that decrypted at least one frame.
    pub receiving: AtomicU64,
    /// UDP bytes in.
    pub bytes_in: AtomicU64,
    /// UDP bytes out.
    pub bytes_out: AtomicU64,
    /// Packets expected by subscribers.
    pub packets_expected: AtomicU64,
    /// Packets received by subscribers.
    pub packets_received: AtomicU64,
    /// Frames verified.
    pub frames: AtomicU64,
    /// Integrity errors.
    pub integrity_errors: AtomicU64,
    /// Sum of latencies (µs) of verified frames.
    pub latency_sum_us: AtomicU64,
    /// Number of latencies summed.
    pub latency_count: AtomicU64,
}

/// A sum over all workers at one instant.
#[derive(Debug, Default, Clone, Copy)]
pub struct Snapshot {
    joined: u64,
    receiving: u64,
    bytes_in: u64,
    bytes_out: u64,
    expected: u64,
    received: u64,
    integrity: u64,
    latency_sum: u64,
    latency_n: u64,
}

/// One point of the time series.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    /// Seconds since the start of the run.
    pub t: f64,
    /// Participants joined.
    pub joined: u64,
    /// Participants receiving.
    pub receiving: u64,
    /// Mbit/s received in the last interval.
    pub mbps_in: f64,
    /// Mbit/s sent in the last interval.
    pub mbps_out: f64,
    /// Packet loss in the last interval, percent.
    pub loss_pct: f64,
    /// Mean latency of the frames verified in the last interval, ms.
    pub latency_ms: f64,
}

/// Every worker's counters, the progress bar and the series.
pub struct Live {
    /// One slot per worker.
    pub workers: Vec<Arc<WorkerLive>>,
    bar: ProgressBar,
    start: Instant,
    last: Snapshot,
    last_at: Instant,
    /// The series so far.
    pub series: Vec<Sample>,
}

impl Live {
    /// Slots for `n` workers; draws progress unless `quiet`.
    pub fn new(n: usize, total: u64, quiet: bool) -> Live {
        let bar = if quiet {
            ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::hidden())
        } else {
            ProgressBar::new(total)
        };
        if let Ok(style) =
            ProgressStyle::with_template("{elapsed:>4} [{bar:25}] {pos}/{len} joined  {msg}")
        {
            bar.set_style(style.progress_chars("=> "));
        }
        let now = Instant::now();
        Live {
            workers: (0..n).map(|_| Arc::new(WorkerLive::default())).collect(),
            bar,
            start: now,
            last: Snapshot::default(),
            last_at: now,
            series: Vec::new(),
        }
    }

    fn snapshot(&self) -> Snapshot {
        let mut s = Snapshot::default();
        for w in &self.workers {
            let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
            s.joined += g(&w.joined);
            s.receiving += g(&w.receiving);
            s.bytes_in += g(&w.bytes_in);
            s.bytes_out += g(&w.bytes_out);
            s.expected += g(&w.packets_expected);
            s.received += g(&w.packets_received);
            s.integrity += g(&w.integrity_errors);
            s.latency_sum += g(&w.latency_sum_us);
            s.latency_n += g(&w.latency_count);
        }
        s
    }

    /// Takes a sample (call about once a second) and redraws the line.
    pub fn tick(&mut self) {
        let now = Instant::now();
        let s = self.snapshot();
        let dt = now.duration_since(self.last_at).as_secs_f64().max(1e-3);
        let d = |a: u64, b: u64| a.saturating_sub(b);
        let expected = d(s.expected, self.last.expected);
        let received = d(s.received, self.last.received);
        let loss = if expected == 0 {
            0.0
        } else {
            d(expected, received) as f64 * 100.0 / expected as f64
        };
        let n = d(s.latency_n, self.last.latency_n);
        let sample = Sample {
            t: now.duration_since(self.start).as_secs_f64(),
            joined: s.joined,
            receiving: s.receiving,
            mbps_in: d(s.bytes_in, self.last.bytes_in) as f64 * 8.0 / dt / 1e6,
            mbps_out: d(s.bytes_out, self.last.bytes_out) as f64 * 8.0 / dt / 1e6,
            loss_pct: loss,
            latency_ms: if n == 0 {
                0.0
            } else {
                d(s.latency_sum, self.last.latency_sum) as f64 / n as f64 / 1000.0
            },
        };
        let total_loss = if s.expected == 0 {
            0.0
        } else {
            d(s.expected, s.received) as f64 * 100.0 / s.expected as f64
        };
        self.bar.set_position(s.joined);
        self.bar.set_message(format!(
            "{} receiving  in {:.1} Mb/s  out {:.1} Mb/s  loss {:.2}%  latency {:.1} ms  integrity errors {}",
            s.receiving, sample.mbps_in, sample.mbps_out, total_loss, sample.latency_ms, s.integrity
        ));
        self.series.push(sample);
        self.last = s;
        self.last_at = now;
    }

    /// Removes the progress line.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
