//! Fan-out: one SRTP publisher packet into the engine, `N` SRTP packets out.
//!
//! Run with `cargo bench -p sfu-benches`. Criterion's time is the
//! benchmark thread's CPU time per incoming publisher packet; its throughput
//! (elements/s) counts forwarded packets.
//! Two groups: `fanout` runs the engine's timers after every packet,
//! `fanout_frame_batched` once per 8-packet frame.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use sfu_benches::{FanoutConfig, FanoutHarness, TimeoutPolicy};

const SUBSCRIBERS: [usize; 3] = [1, 10, 100];

fn group(c: &mut Criterion, name: &str, timeouts: TimeoutPolicy) {
    let mut group = c.benchmark_group(name);
    group
        .sample_size(20)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(6));
    let mut summary = Vec::new();
    for n in SUBSCRIBERS {
        let config = FanoutConfig::new(n).with_timeouts(timeouts);
        let mut harness = FanoutHarness::new(config)
            .unwrap_or_else(|e| panic!("setting up {n} subscribers: {e}"));
        group.throughput(Throughput::Elements(n as u64));
        group.bench_function(BenchmarkId::from_parameter(n), |b| {
            b.iter_custom(|packets| {
                harness
                    .run_timed(packets)
                    .unwrap_or_else(|e| panic!("{name} to {n}: {e}"))
            })
        });
        summary.push((n, harness.stats().clone()));
    }
    group.finish();
    if summary.iter().all(|(_, s)| s.incoming == 0) {
        return;
    }
    println!("\n{name}: totals over every timed run (warm-up included)");
    println!(
        "   N  incoming  forwarded  verified  CPU µs/fwd  wall µs/fwd  housekeeping wall µs/fwd"
    );
    for (n, s) in summary.iter().filter(|(_, s)| s.incoming > 0) {
        println!(
            "{n:>4}  {:>8}  {:>9}  {:>8}  {:>10.3}  {:>11.3}  {:>25.3}",
            s.incoming,
            s.forwarded,
            s.verified,
            s.per_forwarded().as_secs_f64() * 1e6,
            s.wall_per_forwarded().as_secs_f64() * 1e6,
            s.housekeeping_per_forwarded().as_secs_f64() * 1e6,
        );
    }
    println!();
}

fn fanout(c: &mut Criterion) {
    group(c, "fanout", TimeoutPolicy::PerPacket);
    group(c, "fanout_frame_batched", TimeoutPolicy::PerFrame);
}

criterion_group! {
    name = benches;
    config = Criterion::default().without_plots();
    targets = fanout
}
criterion_main!(benches);
