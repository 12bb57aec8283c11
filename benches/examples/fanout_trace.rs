//! Long fan-out runs printing the engine's CPU time per forwarded packet per
//! block of packets: tells drift in the engine's state from machine noise,
//! and compares session shapes side by side (blocks alternate between them,
//! so machine noise hits all alike).
//!
//! `cargo run --release -p sfu-benches --example fanout_trace -- N BLOCKS [MS,MS,..]`
//! runs one harness per frame interval in milliseconds (default: 10
//! subscribers, 20 blocks, 33 ms); each block is 200 000 forwarded packets.

use std::time::Duration;

use sfu_benches::{FanoutConfig, FanoutHarness};

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(10);
    let blocks: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(20);
    let intervals: Vec<u64> = args
        .next()
        .map(|a| a.split(',').filter_map(|m| m.parse().ok()).collect())
        .unwrap_or_else(|| vec![33]);
    let per_block = (200_000 / n).max(8) as u64;
    let mut harnesses: Vec<(u64, FanoutHarness)> = intervals
        .iter()
        .map(|&ms| {
            let mut config = FanoutConfig::new(n);
            config.frame_interval = Duration::from_millis(ms);
            (ms, FanoutHarness::new(config).expect("setup"))
        })
        .collect();
    println!("block  frame ms  forwarded  engine CPU µs/fwd");
    for block in 0..blocks {
        for (ms, h) in &mut harnesses {
            let cpu = h.run_timed(per_block).expect("fan-out");
            let forwarded = per_block * n as u64;
            println!(
                "{block:>5}  {ms:>8}  {forwarded:>9}  {:>17.3}",
                cpu.as_secs_f64() * 1e6 / forwarded as f64
            );
        }
    }
    for (ms, h) in &harnesses {
        println!(
            "frame interval {ms} ms: mean {:.3} µs CPU per forwarded packet over {} packets",
            h.stats().per_forwarded().as_secs_f64() * 1e6,
            h.stats().forwarded
        );
    }
}
