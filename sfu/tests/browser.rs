//! The web client in headless Chromium (Debian `chromium` driven by npm
//! `playwright-core`) and Firefox ESR (Debian `firefox-esr` driven by npm
//! `puppeteer-core` over WebDriver BiDi), all installed by
//! `scripts/test-deps.sh`: scripts in
//! `tests/browser/` run against an SFU started here on loopback in
//! development mode, so the page gets its tokens from `/dev/token` as a user's
//! would. Each script prints one JSON report line, asserted on here.
//!
//! Without `node` or `/usr/bin/chromium` the browser tests are skipped with a
//! message; the README's test command installs both.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use sfu::config::Config;
use sfu::server::Server;

/// Chromium tests take both cores: run one at a time.
static BROWSER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn chromium() -> PathBuf {
    std::env::var_os("CHROMIUM").map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from)
}

fn firefox() -> PathBuf {
    std::env::var_os("FIREFOX").map_or_else(|| PathBuf::from("/usr/bin/firefox-esr"), PathBuf::from)
}

/// Whether node (and, for browser scripts, Chromium) exist; explains a skip.
fn available(needs_browser: bool) -> bool {
    let node = std::process::Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !node {
        eprintln!("SKIPPED: `node` not found (scripts/test-deps.sh installs it)");
        return false;
    }
    if needs_browser && !chromium().exists() {
        eprintln!(
            "SKIPPED: {} not found (scripts/test-deps.sh installs Debian's chromium)",
            chromium().display()
        );
        return false;
    }
    if needs_browser {
        let pw = root().join("tests/browser/node_modules/playwright-core");
        assert!(
            pw.exists(),
            "{} missing: run scripts/test-deps.sh",
            pw.display()
        );
    }
    true
}

/// An SFU in development mode on ephemeral loopback ports, with the embedded TURN relay.
async fn dev_server() -> Server {
    dev_server_with(|_| {}).await
}

/// `dev_server` with changes to its configuration.
async fn dev_server_with(edit: impl FnOnce(&mut Config)) -> Server {
    let mut config = Config::default();
    config.http.listen = "127.0.0.1:0".parse().expect("address");
    config.media.udp_listen = "127.0.0.1:0".parse().expect("address");
    config.media.tcp_listen = "127.0.0.1:0".parse().expect("address");
    config.turn.udp = vec!["127.0.0.1:0".parse().expect("address")];
    config.turn.tcp = vec![];
    assert!(config.auth.key.is_empty(), "development mode");
    edit(&mut config);
    Server::start(config).await.expect("server starts")
}

/// Runs `node tests/browser/{script} {args}`; returns its JSON report.
async fn node(script: &str, args: &[&str], limit: Duration) -> Value {
    let dir = root().join("tests/browser");
    let run = tokio::process::Command::new("node")
        .arg(dir.join(script))
        .args(args)
        .current_dir(&dir)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(limit, run)
        .await
        .unwrap_or_else(|_| panic!("{script} {args:?} took longer than {limit:?}"))
        .expect("node runs");
    common::script_report(&format!("{script} {args:?}"), &output)
}

/// One browser scenario of `tests/browser/call.mjs` against a fresh server.
async fn scenario(name: &str) -> Option<Value> {
    scenario_with(name, |_| {}).await
}

/// `scenario` on a server with changes to its configuration.
async fn scenario_with(name: &str, edit: impl FnOnce(&mut Config)) -> Option<Value> {
    if !available(true) {
        return None;
    }
    let _one_at_a_time = BROWSER.lock().await;
    let server = dev_server_with(edit).await;
    let base = format!("http://{}", server.http_addr);
    let artifacts = root().join("target/artifacts");
    let artifacts = artifacts.to_string_lossy();
    let args = [
        "--base",
        &base,
        "--scenario",
        name,
        "--artifacts",
        &artifacts,
    ];
    let report = node("call.mjs", &args, Duration::from_secs(150)).await;
    server.stop().await;
    Some(report)
}

/// Whether Firefox ESR and puppeteer-core are there (after `available(true)`).
fn firefox_available() {
    assert!(
        firefox().exists(),
        "{} missing: run scripts/test-deps.sh (Debian firefox-esr)",
        firefox().display()
    );
    let pp = root().join("tests/browser/node_modules/puppeteer-core");
    assert!(
        pp.exists(),
        "{} missing: run scripts/test-deps.sh",
        pp.display()
    );
}

fn frames(report: &Value) -> Vec<(String, u64)> {
    report["decoding"]
        .as_object()
        .expect("decoding per pair")
        .iter()
        .map(|(pair, v)| (pair.clone(), v["frames"].as_u64().unwrap_or(0)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_client_is_served_from_the_binary() {
    let server = dev_server().await;
    let (status, headers, body) = common::http_request(&server, "GET", "/", &[], "").await;
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    assert_eq!(status, 200);
    assert!(header("content-type").starts_with("text/html"));
    assert!(header("content-security-policy").contains("script-src 'self'"));
    assert_eq!(header("referrer-policy"), "no-referrer");
    assert!(body.contains("web/app.js"), "{body}");
    for (path, kind) in [
        ("/web/app.js", "text/javascript"),
        ("/web/e2ee/worker.js", "text/javascript"),
        ("/web/style.css", "text/css"),
    ] {
        let (status, headers, _) = common::http_request(&server, "GET", path, &[], "").await;
        assert_eq!(status, 200, "{path}");
        let ct = headers.iter().find(|(k, _)| k == "content-type");
        assert!(
            ct.is_some_and(|(_, v)| v.starts_with(kind)),
            "{path}: {ct:?}"
        );
    }
    let (status, _, _) = common::http_request(&server, "GET", "/web/nope.js", &[], "").await;
    assert_eq!(status, 404);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_sframe_matches_the_vectors_on_webcrypto() {
    if !available(false) {
        return;
    }
    let report = node("sframe-vectors.mjs", &[], Duration::from_secs(60)).await;
    assert_eq!(report["header"], 289);
    assert!(report["web_client"].as_u64().unwrap_or(0) >= 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_key_exchange_rotates_and_refuses_tampering_on_node() {
    if !available(false) {
        return;
    }
    let report = node("keys-test.mjs", &[], Duration::from_secs(60)).await;
    assert!(report["relayed"].as_u64().unwrap_or(0) > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_person_encrypted_call_chat_files_rotation_reconnect() {
    let Some(report) = scenario("three").await else {
        return;
    };
    let pairs = frames(&report);
    assert_eq!(
        pairs.len(),
        6,
        "every participant sees both others: {report}"
    );
    assert!(pairs.iter().all(|(_, f)| *f >= 30), "{pairs:?}");
    let number = report["safety_number"].as_str().unwrap_or_default();
    assert_eq!(number.split(' ').count(), 6, "safety number {number}");
    assert_eq!(report["chat"], "delivered");
    assert_eq!(report["file"]["bytes"], 1024 * 1024);
    for who in ["bob_kid", "alice_kid"] {
        let kids = &report["rotation"][who];
        assert_ne!(kids[0], kids[1], "{who} changed after the leave: {kids}");
    }
    assert_eq!(report["reconnect"], "ok");
    let shot = report["screenshot"].as_str().expect("screenshot path");
    let png = std::fs::read(Path::new(shot)).expect("screenshot written");
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn participant_without_keys_receives_but_decodes_nothing() {
    let Some(report) = scenario("nokeys").await else {
        return;
    };
    let mallory = report["mallory"].as_object().expect("Mallory's view");
    assert_eq!(mallory.len(), 2);
    for (who, v) in mallory {
        assert!(v["packets"].as_u64().unwrap_or(0) >= 100, "{who}: {v}");
        assert_eq!(v["framesDecoded"], 0, "{who}: {v}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_only_call_through_the_embedded_turn_vp8_vp9_both_transform_apis() {
    let Some(report) = scenario("relay").await else {
        return;
    };
    assert!(frames(&report).iter().all(|(_, f)| *f >= 30), "{report}");
    assert_eq!(report["codecs"]["Bob<-Alice"], "video/VP9", "{report}");
    assert_eq!(report["codecs"]["Alice<-Bob"], "video/VP8", "{report}");
    assert_eq!(report["apis"]["Alice"], "script", "{report}");
    assert_eq!(report["apis"]["Bob"], "streams", "{report}");
    for who in ["Alice", "Bob"] {
        assert_eq!(report["routes"][who]["pub"], "relay", "{report}");
        assert_eq!(report["routes"][who]["sub"], "relay", "{report}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn screen_share_decodes_beside_the_camera_switches_and_stops_everywhere() {
    let Some(report) = scenario("screen").await else {
        return;
    };
    let shared = &report["shared"];
    assert!(
        shared["screen"]["frames"].as_u64().unwrap_or(0) >= 30,
        "{report}"
    );
    assert!(
        shared["camera"]["frames"].as_u64().unwrap_or(0) >= 30,
        "{report}"
    );
    // The fake screen is larger than the fake camera: the tiles are not mixed up.
    assert!(
        shared["screen"]["width"].as_u64().unwrap_or(0)
            > shared["camera"]["width"].as_u64().unwrap_or(u64::MAX),
        "{report}"
    );
    assert_eq!(shared["tile"]["label"], "Alice · screen", "{report}");
    assert_eq!(report["self_view"], 1, "{report}");
    let shot = report["screenshot"].as_str().expect("screenshot path");
    let png = std::fs::read(Path::new(shot)).expect("screenshot written");
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    assert_eq!(report["switched"], "same track");
    assert_eq!(report["stopped_by_app"], "tile removed");
    assert_eq!(report["stopped_by_browser"]["removed"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulcast_layers_follow_each_subscribers_tile() {
    // The downlink is fixed and ample here, so the layers follow the tiles
    // alone (three browsers on two cores make a loopback estimate wobble).
    let Some(report) = scenario_with("simulcast", |c| {
        c.media.bandwidth_estimation = false;
        c.media.initial_downlink_kbps = 20_000;
    })
    .await
    else {
        return;
    };
    let full = report["camera_width"].as_u64().unwrap_or(0);
    assert!(full >= 320, "{report}");
    assert_eq!(report["large_tile"]["width"], full, "{report}");
    let small = report["small_tile"]["width"].as_u64().unwrap_or(u64::MAX);
    assert!(
        small <= full / 2,
        "a thumbnail gets a smaller layer: {report}"
    );
    // Dynacast: with every tile small the publisher stops encoding its top
    // layer (the low one keeps flowing), and turns it on again for a tile
    // that grows.
    let dynacast = &report["dynacast"];
    assert!(
        dynacast["top_bytes_in_1s_while_on"].as_u64().unwrap_or(0) > 0,
        "the top layer flows while Bob's tile is large: {report}"
    );
    assert_eq!(
        dynacast["top_bytes_in_1s_while_off"], 0,
        "the top layer is off at the publisher: {report}"
    );
    assert!(
        dynacast["low_bytes_in_1s_while_off"].as_u64().unwrap_or(0) > 0,
        "{report}"
    );
    assert!(
        dynacast["carol_while_off"]["width"]
            .as_u64()
            .unwrap_or(u64::MAX)
            <= full / 2,
        "{report}"
    );
    assert!(
        dynacast["switched"]["off"].as_u64().unwrap_or(0) >= 1
            && dynacast["switched"]["on"].as_u64().unwrap_or(0) >= 1,
        "{report}"
    );
    assert_eq!(report["regrown"]["width"], full, "{report}");
    assert_eq!(
        report["hidden"]["frames_in_2s"], 0,
        "a hidden tile is paused: {report}"
    );
    assert!(
        report["paused_gauge"].as_i64().unwrap_or(0) >= 1,
        "{report}"
    );
    assert!(
        report["layer_changes"]["down"].as_u64().unwrap_or(0) >= 1,
        "{report}"
    );
    assert!(
        report["layer_changes"]["pause"].as_u64().unwrap_or(0) >= 1,
        "{report}"
    );
    assert_eq!(report["resumed"], true, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_speaker_follows_three_pages_speaking_in_turns() {
    let Some(report) = scenario("speakers").await else {
        return;
    };
    let turns = report["turns"].as_array().expect("turns");
    assert_eq!(turns.len(), 4, "{report}");
    // Every page names the new speaker first within a second of the turn.
    for turn in turns {
        for (page, delay) in turn["delays_ms"].as_object().expect("delays") {
            let ms = delay.as_i64().unwrap_or(i64::MAX);
            assert!(
                ms <= 1000,
                "{page} followed {} after {ms} ms: {report}",
                turn["speaker"]
            );
        }
    }
    let shot = report["screenshot"].as_str().expect("screenshot path");
    let png = std::fs::read(Path::new(shot)).expect("screenshot written");
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn firefox_and_chromium_share_an_encrypted_call_without_server_errors() {
    if !available(true) {
        return;
    }
    firefox_available();
    let _one_at_a_time = BROWSER.lock().await;
    let server = dev_server().await;
    let base = format!("http://{}", server.http_addr);
    let report = node(
        "firefox-call.mjs",
        &["--base", &base],
        Duration::from_secs(180),
    )
    .await;
    server.stop().await;
    let pairs = frames(&report);
    assert_eq!(pairs.len(), 2, "{report}");
    assert!(pairs.iter().all(|(_, f)| *f >= 30), "{pairs:?}");
    assert_eq!(report["transforms"]["Bob"], "script", "Firefox: {report}");
    let simulcast = &report["firefox_simulcast"];
    // Firefox's fake camera is 640×480: ½ and full size (sfu/web/call.js).
    assert_eq!(simulcast["rids"], serde_json::json!(["h", "f"]), "{report}");
    assert_eq!(
        simulcast["large_tile"], simulcast["camera_width"],
        "{report}"
    );
    assert!(
        simulcast["thumbnail"].as_u64().unwrap_or(0) * 2
            <= simulcast["camera_width"].as_u64().unwrap_or(0),
        "{report}"
    );
    assert_eq!(report["chat"], "both ways");
    for way in ["Bob->Alice", "Alice->Bob"] {
        assert_eq!(report["files"][way]["bytes"], 200 * 1024 + 17, "{report}");
    }
    assert_eq!(report["alone_after_leave"], "connected");
    let rejoin = report["after_rejoin"]["Bob<-Carol"]["frames"].as_u64();
    assert!(
        rejoin.unwrap_or(0) >= 30,
        "Firefox decodes a later joiner: {report}"
    );
    assert_eq!(report["server_errors"]["Bob"], serde_json::json!([]));
    assert!(
        report["refused"]
            .as_str()
            .is_some_and(|t| t.contains("cannot encrypt")),
        "{report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_200mb_file_resumes_reaches_chosen_recipients_only() {
    if !available(true) {
        return;
    }
    let _one_at_a_time = BROWSER.lock().await;
    let dir = tempfile::tempdir().expect("temporary directory");
    let server = dev_server_with(|c| {
        c.files.dir = dir.path().to_string_lossy().into_owned();
        c.files.user_quota_bytes = 300 << 20;
        // An abandoned upload ends its recipient's download within seconds.
        c.files.stall_s = 5;
    })
    .await;
    let base = format!("http://{}", server.http_addr);
    let files_dir = dir.path().to_string_lossy().into_owned();
    let args = [
        "--base",
        &base,
        "--files-dir",
        &files_dir,
        "--mb",
        "200",
        "--stall-s",
        "5",
    ];
    let report = node("files.mjs", &args, Duration::from_secs(300)).await;
    eprintln!(
        "200 MB encrypted file: upload {} MB/s, Bob {} MB/s (during the upload, after a drop; \
         first bytes at {} ms, upload done at {} ms), Carol {} MB/s (sender gone)",
        report["upload"]["mbps"],
        report["bob"]["mbps"],
        report["bob"]["first_bytes_after_ms"],
        report["upload"]["wall_ms"],
        report["carol"]["mbps"]
    );
    // Bob downloaded while Alice was still uploading.
    assert_eq!(report["bob"]["began_before_upload_ended"], true, "{report}");
    assert!(
        report["upload"]["resumes"].as_u64().unwrap_or(0) >= 1,
        "{report}"
    );
    assert!(
        report["bob"]["resumes"].as_u64().unwrap_or(0) >= 1,
        "{report}"
    );
    assert_eq!(
        report["upload"]["to"], 2,
        "Bob and Carol, not Mallory: {report}"
    );
    assert_eq!(report["guessed"], serde_json::json!([404, 404]));
    let abandoned = report["abandoned"]["error"].as_str().unwrap_or("");
    assert!(abandoned.contains("upload stalled"), "{report}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_file_chunks_refuse_tampering_reordering_truncation_on_node() {
    if !available(false) {
        return;
    }
    let report = node("filecrypt-test.mjs", &[], Duration::from_secs(60)).await;
    assert!(report["refused"].as_u64().unwrap_or(0) >= 5, "{report}");
}
