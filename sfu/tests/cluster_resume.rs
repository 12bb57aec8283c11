//! A trunk that drops and comes back: node A is paused (SIGSTOP) for
//! longer than the trunk's 5 s idle timeout, so both nodes see the trunk
//! die; once A runs again the nodes find each other in the registry, link
//! again and sync the room, and the participant on B receives A's
//! participant's media again, from a keyframe.
//!
//! Skipped with a message without `redis-server` (scripts/test-deps.sh
//! installs it).

mod common;

use std::time::Duration;

use common::client::{Client, Options};
use common::cluster::{Node, NodeOptions, Redis};
use common::{eventually, token, KEY};

/// Intact packets of `owner`'s track of `kind` that `client` received, over
/// every subscription of it (a track published again is a new m-line).
fn intact(client: &Client, owner: &str, kind: &str) -> usize {
    let s = client.state.lock().unwrap();
    s.received
        .values()
        .filter(|r| r.owner == owner && r.kind == kind)
        .map(|r| {
            assert_eq!(r.corrupt, 0, "{kind} of {owner} arrived corrupt");
            r.intact
        })
        .sum()
}

/// Whether `client` currently knows participant `id` (joined, not left).
fn knows(client: &Client, id: &str) -> bool {
    let s = client.state.lock().unwrap();
    let mut known = false;
    for m in &s.messages {
        match m["type"].as_str() {
            Some("joined") => {
                known = m["participants"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|p| p["id"] == id)
            }
            Some("participant_joined") if m["participant"]["id"] == id => known = true,
            Some("participant_left") if m["participant_id"] == id => known = false,
            _ => {}
        }
    }
    known
}

fn signal(pid: u32, sig: &str) {
    let status = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill {sig} {pid}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trunk_that_drops_reconnects_and_media_resumes() {
    let Some(redis) = Redis::start().await else {
        return;
    };
    let options = NodeOptions {
        auth_key: KEY.into(),
        fixed_downlink_kbps: Some(20_000),
        ..NodeOptions::default()
    };
    let a = Node::start(&redis, "node-a", &options).await;
    let b = Node::start(&redis, "node-b", &options).await;
    let room = "resume";
    let alice = Client::join_at(a.http, &token(room, "alice"), 1, Options::default()).await;
    let bob = Client::join_at(b.http, &token(room, "bob"), 2, Options::default()).await;
    eventually(Duration::from_secs(10), "alice joined", || async {
        alice.id().is_some()
    })
    .await;
    let alice_id = alice.id().expect("joined");
    eventually(
        Duration::from_secs(15),
        "bob receives alice's video through the trunk",
        || async { intact(&bob, &alice_id, "video") >= 50 },
    )
    .await;

    // A stops for longer than the idle timeout: B's trunk to it closes and
    // alice leaves bob's room.
    signal(a.pid(), "-STOP");
    let paused = tokio::time::Instant::now();
    eventually(
        Duration::from_secs(10),
        "bob sees alice leave once the trunk is dead",
        || async { !knows(&bob, &alice_id) },
    )
    .await;
    tokio::time::sleep_until(paused + Duration::from_millis(6500)).await;
    signal(a.pid(), "-CONT");

    // A runs again: the nodes link and sync again; alice is back for bob
    // and her video reaches him again.
    let before = intact(&bob, &alice_id, "video");
    eventually(
        Duration::from_secs(20),
        "bob sees alice again and receives her video again",
        || async { knows(&bob, &alice_id) && intact(&bob, &alice_id, "video") >= before + 50 },
    )
    .await;
    let b_requests = b.metric("sfu_keyframe_requests_total").await;
    assert!(b_requests > 0.0, "B asked for keyframes: {b_requests}");
    drop(alice);
    drop(bob);
}
