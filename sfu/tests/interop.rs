//! Third-party WebRTC stacks over WHIP/WHEP, driven by Python scripts in
//! `tests/interop/` from the venv that `scripts/test-deps.sh` creates:
//! aiortc publishes over WHIP and views over WHEP; FFmpeg's `whip` muxer
//! (FFmpeg 8.1 in PyAV) publishes H.264 + Opus and an aiortc viewer decodes
//! it. FFmpeg's own P-224 DTLS certificate is refused by str0m, so the script
//! hands it a P-256 one (as the README tells FFmpeg users to). In a cluster
//! (two node processes and `redis-server`), an aiortc WHEP viewer on one
//! node decodes an aiortc WHIP publisher on the other.

mod common;

use std::path::PathBuf;

use common::cluster::{Node, NodeOptions, Redis};
use common::{start_server, token, KEY};
use serde_json::Value;

/// Runs `tests/interop/{script}` against a fresh server; returns its JSON report.
async fn run_script(script: &str, room: &str) -> Value {
    let server = start_server(8_000).await;
    let base = format!("http://{}", server.http_addr);
    let report = run_script_on(script, room, &base, &[]).await;
    server.stop().await;
    report
}

/// Runs `tests/interop/{script}` against the server at `base` with `extra`
/// arguments; returns its JSON report.
async fn run_script_on(script: &str, room: &str, base: &str, extra: &[&str]) -> Value {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let python = root.join(".venv/bin/python");
    assert!(
        python.exists(),
        "{} missing: run scripts/test-deps.sh",
        python.display()
    );
    let output = tokio::process::Command::new(python)
        .arg(root.join("tests/interop").join(script))
        .args(["--base", base])
        .args(["--room", room, "--frames", "30", "--timeout", "40"])
        .args(["--token", &token(room, script)])
        .args(extra)
        .kill_on_drop(true)
        .output()
        .await
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{script} failed:\n{stdout}\n{stderr}"
    );
    let report: Value = stdout
        .lines()
        .find_map(|l| serde_json::from_str(l).ok())
        .expect("JSON report line");
    assert!(
        report["decoded_frames"].as_u64().unwrap_or(0) >= 30,
        "{report}"
    );
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aiortc_publishes_over_whip_and_views_over_whep() {
    run_script("whip_whep.py", "interop").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ffmpeg_publishes_over_whip() {
    let report = run_script("ffmpeg_whip.py", "ffmpeg").await;
    let pattern = report["pattern_frames"].as_u64().unwrap_or(0);
    assert!(pattern >= 20, "decoded FFmpeg's own frames: {report}");
}

/// A room whose publisher is on another node of a cluster: aiortc
/// publishes over WHIP to node A and views over WHEP on node B, which gets
/// the tracks over the trunk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whep_viewer_on_one_node_decodes_a_whip_publisher_on_another() {
    let Some(redis) = Redis::start().await else {
        return;
    };
    let options = NodeOptions {
        auth_key: KEY.into(),
        ..NodeOptions::default()
    };
    let a = Node::start(&redis, "node-a", &options).await;
    let b = Node::start(&redis, "node-b", &options).await;
    let view = b.base();
    run_script_on("whip_whep.py", "across", &a.base(), &["--view-base", &view]).await;
    // The viewer's media came over the trunk from A.
    let crossed = b.metric("sfu_trunk_datagrams_received_total").await;
    assert!(crossed > 30.0, "trunk datagrams received by B: {crossed}");
}
