//! A WHIP offer and datagrams from the network, all arbitrary: the engine
//! answers or refuses, and never panics.
#![no_main]
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use sfu::auth::TokenAuthority;
use sfu::config::MediaConfig;
use sfu::media::engine::{Engine, EngineConfig};
use sfu::media::peer::LocalAddrs;
use sfu::metrics::Metrics;
use str0m::net::Protocol;

fuzz_target!(|input: (String, Vec<Vec<u8>>)| {
    let (offer, datagrams) = input;
    let config = EngineConfig {
        media: MediaConfig::default(),
        local: LocalAddrs {
            udp: vec!["127.0.0.1:7882".parse().unwrap()],
            tcp: vec![],
        },
        ice_servers: vec![],
        turn: None,
        max_relay_bytes: 1024,
        shard: 0,
    };
    let mut engine = Engine::new(config, Metrics::new());
    let now = Instant::now();
    let grants = TokenAuthority::grants("r", "fuzz", Duration::from_secs(60));
    let _ = engine.whip(grants, &offer, now);
    let source = "127.0.0.1:40000".parse().unwrap();
    for (i, d) in datagrams.iter().take(16).enumerate() {
        let t = now + Duration::from_millis(i as u64 * 10);
        engine.handle_receive(t, Protocol::Udp, source, d);
        engine.handle_timeout(t);
        while engine.poll_transmit().is_some() {}
    }
});
