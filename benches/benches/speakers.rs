//! Active-speaker detection on the audio path: what `forward()` adds per
//! audio packet (`observe` plus the `poll` that is due every 200 ms) in rooms
//! of `N` audio publishers, each sending one packet per 20 ms of simulated time.
//!
//! Run with `cargo bench -p sfu-benches --bench speakers`. Criterion's time is
//! per audio packet; a tenth of the speakers are loud at any time.

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use sfu::room::speakers::{SpeakerDetector, FRAME};

const ROOMS: [usize; 3] = [3, 50, 500];

fn speakers(c: &mut Criterion) {
    let mut group = c.benchmark_group("speakers");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    for n in ROOMS {
        let keys: Vec<String> = (0..n).map(|i| format!("TR_{i:010}")).collect();
        let mut det = SpeakerDetector::default();
        let t0 = Instant::now();
        let mut packet = 0u64;
        group.throughput(Throughput::Elements(1));
        group.bench_function(BenchmarkId::from_parameter(n), |b| {
            b.iter(|| {
                let i = (packet % n as u64) as usize;
                let frame = packet / n as u64;
                let now = t0 + FRAME * frame as u32;
                // Speakers take turns every 2 s; the rest are silent.
                let loud = (frame / 100) as usize % n.div_ceil(10).max(1) == i / 10;
                det.observe(&keys[i], if loud { 25 } else { 127 }, now);
                let update = det.poll(now);
                let within = det.is_within(&keys[i], 3);
                packet += 1;
                (update, within)
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().without_plots();
    targets = speakers
}
criterion_main!(benches);
