//! Third-party WebRTC stacks over WHIP/WHEP, driven by Python scripts in
//! `tests/interop/` from the venv that `scripts/test-deps.sh` creates:
//! aiortc publishes over WHIP and views over WHEP; FFmpeg's `whip` muxer
//! (FFmpeg 8.1 in PyAV) publishes H.264 + Opus and an aiortc viewer decodes
//! it. FFmpeg's own P-224 DTLS certificate is refused by str0m, so the script
//! hands it a P-256 one (as the README tells FFmpeg users to).

mod common;

use std::path::PathBuf;

use common::{start_server, token};
use serde_json::Value;

/// Runs `tests/interop/{script}` against a fresh server; returns its JSON report.
async fn run_script(script: &str, room: &str) -> Value {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let python = root.join(".venv/bin/python");
    assert!(
        python.exists(),
        "{} missing: run scripts/test-deps.sh",
        python.display()
    );
    let server = start_server(8_000).await;
    let output = tokio::process::Command::new(python)
        .arg(root.join("tests/interop").join(script))
        .args(["--base", &format!("http://{}", server.http_addr)])
        .args(["--room", room, "--frames", "30", "--timeout", "40"])
        .args(["--token", &token(room, script)])
        .kill_on_drop(true)
        .output()
        .await
        .expect("python runs");
    server.stop().await;
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
