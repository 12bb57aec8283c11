//! `loadtest run` against an SFU on loopback: a clean run verifies every
//! frame, a run through a forwarder that corrupts payloads fails, simulcast
//! with temporal layers arrives as one layer per track in the L1T3 cycle,
//! and `--url` takes the server's base URL.

use std::process::Command;

use loadtest::report::Thresholds;
use loadtest::runner::{self, RunOptions};
use loadtest::scenario::Scenario;
use sfu::config::Config;
use sfu::server::Server;

const KEY: &str = "loadtest-integration-key";

/// An SFU on ephemeral loopback ports, its runtime kept alive by the caller.
fn start_sfu(corrupt: bool) -> (tokio::runtime::Runtime, Server) {
    start_sfu_with(corrupt, false)
}

fn start_sfu_with(corrupt: bool, turn: bool) -> (tokio::runtime::Runtime, Server) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let mut config = Config::default();
    config.http.listen = "127.0.0.1:0".parse().unwrap();
    config.media.udp_listen = "127.0.0.1:0".parse().unwrap();
    config.media.ice_tcp = false;
    config.media.test_corrupt_payload = corrupt;
    // A fixed downlink for every subscriber: the layers they get do not
    // depend on how loaded this machine is.
    config.media.bandwidth_estimation = false;
    config.media.initial_downlink_kbps = 20_000;
    config.auth.key = KEY.into();
    config.turn.enabled = turn;
    config.turn.udp = vec!["127.0.0.1:0".parse().unwrap()];
    config.turn.tcp = vec![];
    let server = rt.block_on(Server::start(config)).expect("sfu starts");
    (rt, server)
}

fn scenario(server: &Server) -> Scenario {
    Scenario {
        name: "test".into(),
        url: format!("ws://{}/ws", server.http_addr),
        token_secret: KEY.into(),
        rooms: 1,
        publishers: 3,
        subscribers: 3,
        join_rate: 100.0,
        duration_secs: 3.0,
        video: "360p".into(),
        ..Scenario::default()
    }
}

#[test]
fn short_run_verifies_every_frame() {
    let (_rt, server) = start_sfu(false);
    let s = scenario(&server);
    let opts = RunOptions {
        thresholds: Thresholds {
            max_loss_pct: Some(5.0),
            max_p99_latency_ms: Some(500.0),
            min_tracks_pct: Some(100.0),
        },
        sfu_metrics: Some(format!("http://{}/metrics", server.http_addr)),
        quiet: true,
        ..RunOptions::default()
    };
    let summary = runner::run(&s, &opts).expect("run");
    println!("{}", summary.table());
    assert_eq!(summary.joined, 6);
    assert_eq!(summary.failed, 0, "{:?}", summary.errors);
    assert_eq!(summary.integrity_errors, 0, "{:?}", summary.errors);
    // 3 publishers × 2 tracks, each received by the 2 other publishers and 3 subscribers.
    assert_eq!(summary.tracks_expected, 6 * 5);
    assert_eq!(summary.tracks_received, 30);
    assert!(
        summary.frames_received > 30 * 50,
        "{}",
        summary.frames_received
    );
    assert!(summary.latency_ms.count > 0 && summary.latency_ms.p50 > 0.0);
    assert!(summary.latency_ms.p99 < 500.0);
    assert!(summary.packet_loss_pct < 5.0);
    assert!(summary.join_ms.count == 6);
    assert!(summary.server.forwarded_packets.unwrap_or(0.0) > 0.0);
    assert!(summary.violations.is_empty(), "{:?}", summary.violations);
}

#[test]
fn corrupting_forwarder_is_caught_and_fails_the_run() {
    let (_rt, server) = start_sfu(true);
    let dir = std::env::temp_dir().join(format!("loadtest-corrupt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let json = dir.join("summary.json");
    let out = Command::new(env!("CARGO_BIN_EXE_loadtest"))
        // The server's base URL, as a browser opens it: the loadtest finds /ws.
        .args(["run", "--quiet", "--token-secret", KEY])
        .args(["--url", &format!("http://{}/", server.http_addr)])
        .args([
            "--rooms",
            "1",
            "--publishers",
            "3",
            "--subscribers",
            "3",
            "--duration",
            "2",
            "--no-simulcast",
        ])
        .args(["--join-rate", "100", "--json"])
        .arg(&json)
        .output()
        .expect("loadtest runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(2), "exit status");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert!(
        v["integrity_errors"].as_u64().unwrap() > 100,
        "{}",
        v["integrity_errors"]
    );
    assert_eq!(v["frames_received"], 0);
    assert!(stdout.contains("integrity errors"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn via_turn_sends_all_media_through_the_relay() {
    let (_rt, server) = start_sfu_with(false, true);
    let mut s = scenario(&server);
    s.publishers = 2;
    s.subscribers = 2;
    s.duration_secs = 2.0;
    s.via_turn = "sfu".into();
    // And the path without simulcast: one layer of the preset's size.
    s.simulcast = false;
    let metrics = format!("http://{}/metrics", server.http_addr);
    let opts = RunOptions {
        quiet: true,
        ..RunOptions::default()
    };
    let summary = runner::run(&s, &opts).expect("run");
    println!("{}", summary.table());
    assert_eq!(summary.failed, 0, "{:?}", summary.errors);
    assert_eq!(summary.integrity_errors, 0);
    assert_eq!(summary.tracks_received, summary.tracks_expected);
    // Each publisher receives the other (2 tracks), each subscriber both (4).
    assert_eq!(summary.tracks_expected, 2 * 2 + 2 * 4);
    let subscribers = summary
        .video_layers
        .iter()
        .find(|g| g.group == "subscribers")
        .expect("subscribers' layers");
    assert_eq!(subscribers.video_tracks, 4);
    assert_eq!(subscribers.layers.len(), 1);
    assert_eq!(subscribers.layers[0].name(), "single 640×360");
    assert_eq!(summary.temporal_breaks, 0);
    // Every peer connection allocated (2 publishers × 2 + 2 subscribers),
    // and the media went through the relay.
    let allocations = loadtest::server_cost::scrape(&metrics, "turn_allocations_total").unwrap();
    assert_eq!(allocations, 6.0);
    let relayed = loadtest::server_cost::scrape(&metrics, "turn_relayed_packets_total").unwrap();
    assert!(relayed > summary.packets_received as f64, "{relayed}");
}

#[test]
fn simulcast_with_temporal_layers_arrives_as_one_layer_per_track() {
    let (_rt, server) = start_sfu(false);
    let mut s = scenario(&server);
    s.url = format!("ws://{}", server.http_addr);
    s.publishers = 2;
    s.subscribers = 2;
    s.simulcast = true;
    let opts = RunOptions {
        quiet: true,
        ..RunOptions::default()
    };
    let summary = runner::run(&s, &opts).expect("run");
    let table = summary.table();
    println!("{table}");
    assert_eq!(summary.failed, 0, "{:?}", summary.errors);
    assert_eq!(summary.integrity_errors, 0, "{:?}", summary.errors);
    assert_eq!(summary.temporal_breaks, 0);
    // Each publisher receives the other's 2 tracks, each subscriber all 4.
    assert_eq!(summary.tracks_expected, 2 * 2 + 2 * 4);
    assert_eq!(summary.tracks_received, summary.tracks_expected);
    // The 360p camera as q 160×90, h 320×180, f 640×360.
    let sizes = [("q", 160, 90), ("h", 320, 180), ("f", 640, 360)];
    let mut groups: Vec<_> = summary
        .video_layers
        .iter()
        .map(|g| g.group.as_str())
        .collect();
    groups.sort();
    assert_eq!(groups, ["publishers", "subscribers"]);
    for g in &summary.video_layers {
        let per_receiver = if g.group == "publishers" { 1 } else { 2 };
        assert_eq!(g.receivers, 2, "{g:?}");
        assert_eq!(g.video_tracks, 2 * per_receiver, "{g:?}");
        // With an ample fixed downlink every receiver's allocator gives it
        // one layer of each track from the first frame on (tiles are not
        // reported by the loadtest, so nothing caps it).
        assert_eq!(g.one_layer_tracks, g.video_tracks, "{g:?}");
        assert!(
            g.layers.iter().all(|l| l.rid == "f"),
            "the top layer: {g:?}"
        );
        assert_eq!(g.temporal_breaks, 0);
        assert_eq!(
            g.layers.iter().map(|l| l.tracks).sum::<u64>(),
            g.video_tracks
        );
        for l in &g.layers {
            let (rid, w, h) = sizes[usize::from(l.layer)];
            assert_eq!((l.rid.as_str(), l.width, l.height), (rid, w, h), "{g:?}");
            assert!(
                table.contains(&format!("{} on {} tracks", l.name(), l.tracks)),
                "{table}"
            );
            // Per cycle of 4 frames: one TL0, one TL1, two TL2 (a track
            // starts anywhere in the cycle, and keyframes restart it, which
            // puts TL0 ahead).
            let [t0, t1, t2] = l.frames_by_temporal;
            let edge = 2 * l.tracks;
            // About 22 TL1 frames per track in the 3 s, less the wait for
            // the first keyframe of the layer (a busy machine delays it).
            assert!(t1 > 15 * l.tracks && t1 <= t0 + edge, "{l:?}");
            assert!(t2 <= t0 + t1 + edge && t2 * 10 >= (t0 + t1) * 8, "{l:?}");
        }
    }
    assert!(table.contains("video rx subscribers"), "{table}");
}

#[test]
fn a_url_that_is_not_the_servers_is_refused_with_what_to_write() {
    let out = Command::new(env!("CARGO_BIN_EXE_loadtest"))
        .args(["run", "--quiet", "--url", "127.0.0.1:7880"])
        .output()
        .expect("loadtest runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("write ws://127.0.0.1:7880"), "{stderr}");
    let out = Command::new(env!("CARGO_BIN_EXE_loadtest"))
        .args(["run", "--quiet", "--url", "http://127.0.0.1:7880/metrics"])
        .output()
        .expect("loadtest runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("signaling at /ws"), "{stderr}");
}

#[test]
fn a_second_process_with_only_subscribers_joins_the_same_rooms() {
    let (_rt, server) = start_sfu(false);
    let dir = std::env::temp_dir().join(format!("loadtest-split-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let json = dir.join("subscribers.json");
    // The subscribers' process starts first: its epoch would be ahead of
    // the publishers' if each process had its own, and latency would then
    // be off by the gap between the two starts.
    let mut subscribers = Command::new(env!("CARGO_BIN_EXE_loadtest"))
        .args(["run", "--quiet", "--token-secret", KEY])
        .args(["--url", &format!("ws://{}/ws", server.http_addr)])
        .args(["--rooms", "2", "--publishers", "0", "--subscribers", "2"])
        .args(["--name", "split", "--remote-publishers", "2"])
        .args(["--identity-prefix", "sub-"])
        .args(["--video", "360p", "--duration", "4", "--join-rate", "100"])
        .arg("--json")
        .arg(&json)
        .spawn()
        .expect("loadtest runs");
    std::thread::sleep(std::time::Duration::from_millis(700));
    let mut s = scenario(&server);
    s.name = "split".into();
    s.rooms = 2;
    s.publishers = 2;
    s.subscribers = 0;
    s.duration_secs = 3.0;
    let opts = RunOptions {
        quiet: true,
        ..RunOptions::default()
    };
    let publishers = runner::run(&s, &opts).expect("run");
    let status = subscribers.wait().expect("loadtest ends");
    println!("{}", publishers.table());
    // Same identities in both processes would replace each other.
    assert_eq!(publishers.failed, 0, "{:?}", publishers.errors);
    assert_eq!(publishers.tracks_received, publishers.tracks_expected);
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    println!("{v:#}");
    assert!(status.success(), "{v:#}");
    assert_eq!(v["failed"], 0, "{v:#}");
    assert_eq!(v["integrity_errors"], 0, "{v:#}");
    // 2 rooms × 2 subscribers, each expecting audio and video of the 2
    // publishers of the other process.
    assert_eq!(v["tracks_expected"], 2 * 2 * 2 * 2, "{v:#}");
    assert_eq!(v["tracks_received"], v["tracks_expected"], "{v:#}");
    // Sent in one process, received in the other: one clock.
    let p50 = v["latency_ms"]["p50"].as_f64().unwrap();
    let p99 = v["latency_ms"]["p99"].as_f64().unwrap();
    assert!(p50 > 0.0 && p99 < 300.0, "latency {p50} / {p99} ms");
    // Every video track settled on a layer, after the process started.
    let settled = &v["video_layers"][0]["settled"];
    let tracks: u64 = settled
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["tracks"].as_u64().unwrap())
        .sum();
    assert_eq!(tracks, 2 * 2 * 2, "{settled}");
    let _ = std::fs::remove_dir_all(&dir);
}
