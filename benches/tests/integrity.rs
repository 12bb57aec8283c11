//! The harness really checks what subscribers decrypt.

use sfu_benches::{FanoutConfig, FanoutHarness, TimeoutPolicy};

#[test]
fn every_subscriber_decrypts_identical_payloads() {
    let mut h = FanoutHarness::new(FanoutConfig::new(10)).expect("setup");
    h.run_timed(200).expect("200 packets to 10 subscribers");
    let stats = h.stats();
    assert_eq!(stats.incoming, 200);
    assert_eq!(stats.forwarded, 2000);
    assert_eq!(stats.verified, 2000);
    assert!(h.metrics().rtp_packets_out.get() >= 2000);
}

#[test]
fn corrupted_payloads_are_detected() {
    let mut h = FanoutHarness::new(FanoutConfig::new(3)).expect("setup");
    h.run_timed(16).expect("clean run");
    h.engine_mut().set_corrupt_payloads(true);
    let e = h.run_timed(8).expect_err("corruption must fail the check");
    assert!(e.to_string().contains("payload"), "{e}");
}

#[test]
fn frame_batched_timeouts_deliver_everything() {
    let config = FanoutConfig::new(4).with_timeouts(TimeoutPolicy::PerFrame);
    let mut h = FanoutHarness::new(config).expect("setup");
    h.run_timed(100).expect("100 packets to 4 subscribers");
    assert_eq!(h.stats().verified, 400);
}
