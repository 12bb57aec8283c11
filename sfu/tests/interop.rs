//! Third-party WebRTC stacks over WHIP/WHEP. aiortc publishes over WHIP and views over
//! WHEP; the viewer must decode frames. Needs the venv that
//! `scripts/test-deps.sh` creates.

mod common;

use std::path::PathBuf;

use common::{start_server, token};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aiortc_publishes_over_whip_and_views_over_whep() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let python = root.join(".venv/bin/python");
    assert!(
        python.exists(),
        "{} missing: run scripts/test-deps.sh",
        python.display()
    );
    let server = start_server(8_000).await;
    let output = tokio::process::Command::new(python)
        .arg(root.join("tests/interop/whip_whep.py"))
        .args(["--base", &format!("http://{}", server.http_addr)])
        .args(["--room", "interop", "--frames", "30", "--timeout", "40"])
        .args(["--token", &token("interop", "aiortc")])
        .kill_on_drop(true)
        .output()
        .await
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "aiortc interop failed:\n{stdout}\n{stderr}"
    );
    let report: serde_json::Value = stdout
        .lines()
        .find_map(|l| serde_json::from_str(l).ok())
        .expect("JSON report line");
    assert!(
        report["decoded_frames"].as_u64().unwrap_or(0) >= 30,
        "{report}"
    );
    server.stop().await;
}

/// FFmpeg's `whip` muxer (FFmpeg 8.1 bundled in PyAV) publishes H.264 and
/// Opus; an aiortc WHEP viewer decodes it. FFmpeg's own P-224 DTLS
/// certificate is refused by str0m, so the script hands it a P-256 one (as
/// the README tells FFmpeg users to).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ffmpeg_publishes_over_whip() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let python = root.join(".venv/bin/python");
    assert!(
        python.exists(),
        "{} missing: run scripts/test-deps.sh",
        python.display()
    );
    let server = start_server(8_000).await;
    let output = tokio::process::Command::new(python)
        .arg(root.join("tests/interop/ffmpeg_whip.py"))
        .args(["--base", &format!("http://{}", server.http_addr)])
        .args(["--room", "ffmpeg", "--frames", "30", "--timeout", "40"])
        .args(["--token", &token("ffmpeg", "ffmpeg")])
        .kill_on_drop(true)
        .output()
        .await
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "FFmpeg WHIP interop failed:\n{stdout}\n{stderr}"
    );
    let report: serde_json::Value = stdout
        .lines()
        .find_map(|l| serde_json::from_str(l).ok())
        .expect("JSON report line");
    assert!(
        report["decoded_frames"].as_u64().unwrap_or(0) >= 30,
        "{report}"
    );
    assert!(
        report["pattern_frames"].as_u64().unwrap_or(0) >= 20,
        "decoded FFmpeg's frames: {report}"
    );
    server.stop().await;
}
