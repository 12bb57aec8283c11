//! One room across three `sfu` node processes on loopback, sharing a real
//! `redis-server` registry and meshed by the QUIC trunk: str0m participants
//! see each other as on one node (signaling, relays, mute, speakers, media
//! bytes), Chromium pages hold one end-to-end encrypted call through a
//! killed node and a Redis restart, and loadtest processes verify every
//! frame while the trunk carries each track once per node.
//!
//! Skipped with a message without `redis-server` (and, for the browser
//! test, without node or Chromium); scripts/test-deps.sh installs them.

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::client::{Client, Options};
use common::cluster::{sum_of, Node, NodeOptions, Redis};
use common::{eventually, token, KEY};
use serde_json::{json, Value};
use sfu::cluster::registry::Registry;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// One of these tests at a time: three nodes (and browsers or loadtests)
/// take both cores.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Nodes sharing `auth.key` KEY (tokens minted by `common::token` work on
/// every node).
fn keyed() -> NodeOptions {
    NodeOptions {
        auth_key: KEY.into(),
        fixed_downlink_kbps: Some(20_000),
        ..NodeOptions::default()
    }
}

/// Whom `client` knows in its room, by identity → participant id: those in
/// `joined`, and those who joined since and have not left.
fn people(client: &Client) -> std::collections::BTreeMap<String, String> {
    let s = client.state.lock().unwrap();
    let mut out = std::collections::BTreeMap::new();
    for m in &s.messages {
        match m["type"].as_str() {
            Some("joined") => {
                for p in m["participants"].as_array().into_iter().flatten() {
                    out.insert(text(&p["identity"]), text(&p["id"]));
                }
            }
            Some("participant_joined") => {
                let p = &m["participant"];
                out.insert(text(&p["identity"]), text(&p["id"]));
            }
            Some("participant_left") => {
                let gone = text(&m["participant_id"]);
                out.retain(|_, id| *id != gone);
            }
            _ => {}
        }
    }
    out
}

fn text(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_string()
}

/// The identities `client` knows in its room.
fn identities(client: &Client) -> BTreeSet<String> {
    people(client).into_keys().collect()
}

/// Intact packets `client` received of `owner`'s track of `kind` (0 if a
/// single packet arrived corrupt: a test failure, reported by the caller).
fn intact(client: &Client, owner: &str, kind: &str) -> usize {
    client
        .received_from(owner, kind)
        .map_or(0, |r| if r.corrupt == 0 { r.intact } else { 0 })
}

fn id_of(client: &Client) -> String {
    client.id().expect("joined")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_spans_three_nodes_as_if_local() {
    let Some(mut redis) = Redis::start().await else {
        return;
    };
    let _one = ONE_AT_A_TIME.lock().await;
    let options = keyed();
    let a = Node::start(&redis, "node-a", &options).await;
    let b = Node::start(&redis, "node-b", &options).await;
    let mut c = Node::start(&redis, "node-c", &options).await;
    let room = "standup";
    let join = |node: &Node, who: &str, index: u8| {
        let http = node.http;
        let t = token(room, who);
        async move { Client::join_at(http, &t, index, Options::default()).await }
    };
    let alice = join(&a, "alice", 1).await;
    let bob = join(&b, "bob", 2).await;
    let carol = join(&c, "carol", 3).await;
    let joined = Instant::now();
    let all = [(&alice, "alice"), (&bob, "bob"), (&carol, "carol")];

    // Everyone sees and receives both others, every payload byte intact.
    eventually(
        Duration::from_secs(15),
        "each participant sees both others on other nodes",
        || async {
            all.iter().all(|(cl, me)| {
                identities(cl)
                    == ["alice", "bob", "carol"]
                        .into_iter()
                        .filter(|w| w != me)
                        .map(String::from)
                        .collect()
            })
        },
    )
    .await;
    let seen_after = joined.elapsed();
    let ids: Vec<String> = all.iter().map(|(cl, _)| id_of(cl)).collect();
    eventually(
        Duration::from_secs(15),
        "each participant receives both others' audio and video through the trunk",
        || async {
            all.iter().enumerate().all(|(i, (cl, _))| {
                ids.iter()
                    .enumerate()
                    .filter(|(j, _)| *j != i)
                    .all(|(_, o)| intact(cl, o, "video") >= 50 && intact(cl, o, "audio") >= 25)
            })
        },
    )
    .await;
    eprintln!(
        "remote participants seen {seen_after:?}, media from everyone after {:?}",
        joined.elapsed()
    );
    for (i, (cl, who)) in all.iter().enumerate() {
        for (j, owner) in ids.iter().enumerate().filter(|(j, _)| *j != i) {
            for kind in ["audio", "video"] {
                let r = cl.received_from(owner, kind).expect("received");
                assert_eq!(r.corrupt, 0, "{who} <- {}: {kind} corrupt", all[j].1);
                assert_eq!(r.senders, [all[j].0.index], "{who} <- {}", all[j].1);
            }
        }
        // Each sees the two others' tracks announced, with their owners.
        let s = cl.state.lock().unwrap();
        let mut owners: Vec<String> = s
            .of_type("track_published")
            .iter()
            .map(|m| {
                m["track"]["participant_id"]
                    .as_str()
                    .unwrap_or("")
                    .to_string()
            })
            .chain(s.of_type("joined").iter().flat_map(|m| {
                m["participants"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .flat_map(|p| p["tracks"].as_array().into_iter().flatten())
                    .map(|t| t["participant_id"].as_str().unwrap_or("").to_string())
                    .collect::<Vec<_>>()
            }))
            .filter(|o| *o != ids[i])
            .collect();
        owners.sort();
        owners.dedup();
        assert_eq!(owners.len(), 2, "{who} knows the tracks of {owners:?}");
        assert!(s.error_codes().is_empty(), "{who}: {:?}", s.error_codes());
    }

    // Relay: to everyone reaches both other nodes; to one participant
    // reaches only them (Bob's second relay, to everyone, arrives after the
    // first on the same trunk: Alice must not have had the first).
    alice
        .send_raw(
            json!({"type": "relay", "to": "everyone", "payload": {"kind": "hello", "n": 1}})
                .to_string(),
        )
        .await;
    bob.send_raw(
        json!({"type": "relay", "to": [ids[2]], "payload": {"kind": "for-carol"}}).to_string(),
    )
    .await;
    bob.send_raw(
        json!({"type": "relay", "to": "everyone", "payload": {"kind": "marker"}}).to_string(),
    )
    .await;
    let relays = |cl: &Client| cl.state.lock().unwrap().of_type("relay");
    let has = |cl: &Client, from: &str, kind: &str| {
        relays(cl)
            .iter()
            .any(|m| m["from"] == from && m["payload"]["kind"] == kind)
    };
    eventually(Duration::from_secs(10), "relays delivered", || async {
        has(&bob, &ids[0], "hello")
            && has(&carol, &ids[0], "hello")
            && has(&carol, &ids[1], "for-carol")
            && has(&alice, &ids[1], "marker")
            && has(&carol, &ids[1], "marker")
    })
    .await;
    assert!(
        !has(&alice, &ids[1], "for-carol"),
        "a targeted relay leaked"
    );
    assert_eq!(
        relays(&bob)
            .iter()
            .find(|m| m["payload"]["kind"] == "hello")
            .map(|m| m["payload"].clone()),
        Some(json!({"kind": "hello", "n": 1})),
        "the payload crosses unchanged"
    );
    for cl in [&alice, &bob] {
        assert!(
            !relays(cl).iter().any(|m| m["from"] == id_of(cl).as_str()),
            "nobody gets their own relay back"
        );
    }

    // Mute: Alice's video, announced on the other nodes.
    let alice_video = {
        let s = alice.state.lock().unwrap();
        s.of_type("track_published")
            .iter()
            .find(|m| {
                m["track"]["participant_id"] == ids[0].as_str() && m["track"]["kind"] == "video"
            })
            .map(|m| m["track"]["id"].as_str().unwrap_or("").to_string())
            .expect("Alice learns her video track's id")
    };
    alice
        .send_raw(json!({"type": "mute", "track_id": alice_video, "muted": true}).to_string())
        .await;
    eventually(
        Duration::from_secs(10),
        "track_muted on B and C",
        || async {
            [&bob, &carol].iter().all(|cl| {
                cl.state
                    .lock()
                    .unwrap()
                    .of_type("track_muted")
                    .iter()
                    .any(|m| {
                        m["track_id"] == alice_video.as_str()
                            && m["participant_id"] == ids[0].as_str()
                            && m["muted"] == true
                    })
            })
        },
    )
    .await;

    // Active speakers: Carol (node C) speaks, the others are silent; the
    // pages on A and B name her first.
    alice.set_audio_level(-127);
    bob.set_audio_level(-127);
    carol.set_audio_level(-3);
    eventually(
        Duration::from_secs(10),
        "A and B name Carol the active speaker",
        || async {
            [&alice, &bob].iter().all(|cl| {
                cl.state
                    .lock()
                    .unwrap()
                    .of_type("active_speakers")
                    .last()
                    .is_some_and(|m| m["speakers"][0]["participant_id"] == ids[2].as_str())
            })
        },
    )
    .await;

    // The trunk counts per peer: node A sent to and received from both.
    let text = a.metrics().await;
    for peer in ["node-b", "node-c"] {
        for dir in ["sent", "received"] {
            let n = sum_of(
                &text,
                &format!("sfu_trunk_datagrams_{dir}_total{{peer=\"{peer}\"}}"),
            );
            assert!(n >= 75.0, "node-a {dir} {n} datagrams with {peer}");
        }
    }

    // Bob leaves cleanly: gone from A and C with his tracks.
    bob.leave().await;
    eventually(
        Duration::from_secs(10),
        "Bob's leave reaches A and C",
        || async {
            [&alice, &carol].iter().all(|cl| {
                let s = cl.state.lock().unwrap();
                let unpublished = s
                    .of_type("track_unpublished")
                    .iter()
                    .filter(|m| m["participant_id"] == ids[1].as_str())
                    .count();
                drop(s);
                unpublished == 2 && !identities(cl).contains("bob")
            })
        },
    )
    .await;

    // A node with another secret joins no call: its participant sees
    // nobody and nobody sees it, though it shares the registry and the room.
    let stranger = NodeOptions {
        secret: "not-the-cluster-secret-42".into(),
        ..keyed()
    };
    let e = Node::start(&redis, "node-e", &stranger).await;
    let mallory = join(&e, "mallory", 5).await;
    let nodes = [&a, &b, &c, &e];
    eventually(
        Duration::from_secs(10),
        "the stranger node is refused by a member",
        || async {
            let mut failures = 0.0;
            for n in nodes {
                failures += n.metric("sfu_trunk_auth_failures_total").await;
            }
            failures >= 1.0
        },
    )
    .await;
    // Beyond the time a member of the room is discovered in (lease / 3 + 1 s).
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(mallory.id().is_some(), "Mallory joined node-e");
    assert!(
        identities(&mallory).is_empty(),
        "{:?}",
        identities(&mallory)
    );
    assert!(mallory.state.lock().unwrap().received.is_empty());
    for cl in [&alice, &carol] {
        assert!(!identities(cl).contains("mallory"));
    }
    assert_eq!(e.metric("sfu_trunk_peers").await, 0.0);
    drop(mallory);
    drop(e);

    // Redis is killed and restarted empty: the call goes on, and a node
    // that joins the room afterwards finds the others in the new registry.
    let before = intact(&alice, &ids[2], "video");
    redis.kill().await;
    eventually(
        Duration::from_secs(10),
        "node-a sees the outage",
        || async { a.metric("sfu_cluster_registered").await == 0.0 },
    )
    .await;
    redis.spawn().await;
    let registry = Registry::new(&redis.url(), Duration::from_secs(5)).expect("registry");
    eventually(
        Duration::from_secs(15),
        "the room registered again",
        || async {
            registry
                .room_nodes(room)
                .await
                .is_ok_and(|n| n == ["node-a", "node-c"])
        },
    )
    .await;
    assert!(
        intact(&alice, &ids[2], "video") >= before + 50,
        "Alice kept receiving Carol through the outage"
    );
    let d = Node::start(&redis, "node-d", &options).await;
    let dave = join(&d, "dave", 4).await;
    eventually(
        Duration::from_secs(15),
        "Dave on a new node sees and receives Alice and Carol",
        || async {
            identities(&dave) == ["alice", "carol"].map(String::from).into()
                && intact(&dave, &ids[0], "video") >= 50
                && intact(&dave, &ids[2], "video") >= 50
                && identities(&alice).contains("dave")
        },
    )
    .await;

    // Node C dies: its participant leaves on A within 10 s.
    c.kill().await;
    let killed = Instant::now();
    eventually(
        Duration::from_secs(12),
        "Carol leaves on A after node-c died",
        || async { !identities(&alice).contains("carol") },
    )
    .await;
    let took = killed.elapsed();
    eprintln!("node-c's participant left on node-a {took:?} after SIGKILL");
    assert!(took <= Duration::from_secs(10), "took {took:?}");
    drop(carol);
}

/// Runs `node tests/browser/cluster-call.mjs`, answering its `STEP` lines
/// (what only the test can do: kill a node, restart Redis),
/// and returns its JSON report.
async fn cluster_call_script(redis: &mut Redis, nodes: &mut [Node], limit: Duration) -> Value {
    let dir = root().join("tests/browser");
    let artifacts = root().join("target/artifacts");
    let mut args = vec!["cluster-call.mjs".to_string()];
    for (flag, n) in ["--base-a", "--base-b", "--base-c"]
        .iter()
        .zip(nodes.iter())
    {
        args.push(flag.to_string());
        args.push(n.base());
    }
    args.push("--artifacts".into());
    args.push(artifacts.to_string_lossy().into_owned());
    let mut child = tokio::process::Command::new("node")
        .args(&args)
        .current_dir(&dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node runs");
    let mut stdin = child.stdin.take().expect("stdin");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut stderr = child.stderr.take().expect("stderr");
    let stderr_text = tokio::spawn(async move {
        let mut s = String::new();
        let _ = tokio::io::AsyncReadExt::read_to_string(&mut stderr, &mut s).await;
        s
    });
    let registry = Registry::new(&redis.url(), Duration::from_secs(5)).expect("registry");
    let mut stdout = String::new();
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let line = tokio::time::timeout_at(deadline, lines.next_line())
            .await
            .unwrap_or_else(|_| panic!("cluster-call.mjs took longer than {limit:?}:\n{stdout}"))
            .expect("script output");
        let Some(line) = line else { break };
        let Some(step) = line.strip_prefix("STEP ") else {
            stdout.push_str(&line);
            stdout.push('\n');
            continue;
        };
        eprintln!("cluster-call.mjs asks: {step}");
        let answer = match step {
            "kill-node-b" => {
                nodes[1].kill().await;
                "killed".to_string()
            }
            "restart-redis" => {
                redis.kill().await;
                // Both live nodes notice the outage before Redis is back.
                for n in [&nodes[0], &nodes[2]] {
                    eventually(Duration::from_secs(10), "the outage noticed", || async {
                        n.metric("sfu_cluster_registered").await == 0.0
                    })
                    .await;
                }
                redis.spawn().await;
                eventually(
                    Duration::from_secs(15),
                    "node-a and node-c registered again",
                    || async {
                        registry.nodes().await.is_ok_and(|n| {
                            n.iter().map(|r| r.id.as_str()).collect::<Vec<_>>()
                                == ["node-a", "node-c"]
                        })
                    },
                )
                .await;
                "restarted".to_string()
            }
            other => panic!("cluster-call.mjs asked for an unknown step {other}"),
        };
        stdin
            .write_all(format!("{answer}\n").as_bytes())
            .await
            .expect("answer the script");
    }
    let status = tokio::time::timeout_at(deadline, child.wait())
        .await
        .expect("script exits")
        .expect("script status");
    let stderr = stderr_text.await.unwrap_or_default();
    let output = std::process::Output {
        status,
        stdout: stdout.into_bytes(),
        stderr: stderr.into_bytes(),
    };
    common::script_report("cluster-call.mjs", &output)
}

/// Whether node and Chromium exist; explains a skip.
fn browser_available() -> bool {
    let node = std::process::Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    let chromium = std::env::var_os("CHROMIUM")
        .map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from);
    if !node || !chromium.exists() {
        eprintln!("SKIPPED: node or Chromium not found (scripts/test-deps.sh installs them)");
        return false;
    }
    let pw = root().join("tests/browser/node_modules/playwright-core");
    assert!(
        pw.exists(),
        "{} missing: run scripts/test-deps.sh",
        pw.display()
    );
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_call_across_three_nodes_survives_a_dead_node_and_a_redis_restart() {
    if !browser_available() {
        return;
    }
    let Some(mut redis) = Redis::start().await else {
        return;
    };
    let _one = ONE_AT_A_TIME.lock().await;
    // Development mode on every node: the public key, so a page's token
    // from its own node's /dev/token is valid on all of them.
    let options = NodeOptions::default();
    let mut nodes = Vec::new();
    for id in ["node-a", "node-b", "node-c"] {
        nodes.push(Node::start(&redis, id, &options).await);
    }
    let report = cluster_call_script(&mut redis, &mut nodes, Duration::from_secs(240)).await;

    eprintln!(
        "call decoding after {} ms; Bob left A and C {} ms after node-b's SIGKILL; whole script {} ms",
        report["call_ready_ms"], report["node_b_killed"]["left_after_ms"], report["wall_ms"]
    );
    let pairs = report["decoding"].as_object().expect("decoding per pair");
    assert_eq!(pairs.len(), 6, "each page decodes both others: {report}");
    let number = report["safety_number"].as_str().unwrap_or_default();
    assert_eq!(number.split(' ').count(), 6, "safety number {number}");
    let left = &report["node_b_killed"]["left_after_ms"];
    for page in ["Alice", "Carol"] {
        let ms = left[page].as_u64().unwrap_or(u64::MAX);
        assert!(ms <= 10_000, "{page} saw Bob leave after {ms} ms: {report}");
    }
    for phase in ["node_b_killed", "redis_restarted"] {
        for pair in ["Alice<-Carol", "Carol<-Alice"] {
            let more = report[phase]["frames_since"][pair].as_u64().unwrap_or(0);
            assert!(
                more >= 30,
                "{phase}: {pair} decoded {more} more frames: {report}"
            );
        }
    }
    let dave = &report["dave"]["decoding"];
    for pair in ["Dave<-Alice", "Dave<-Carol", "Alice<-Dave", "Carol<-Dave"] {
        assert!(
            dave[pair]["frames"].as_u64().unwrap_or(0) >= 30,
            "{pair}: {report}"
        );
    }
    assert_eq!(report["dave"]["safety_numbers_agree"], true, "{report}");
}

/// Runs one `loadtest run` (as its own process would) on another thread.
fn loadtest(
    scenario: loadtest::scenario::Scenario,
) -> std::thread::JoinHandle<loadtest::report::Summary> {
    std::thread::spawn(move || {
        let opts = loadtest::runner::RunOptions {
            quiet: true,
            ..Default::default()
        };
        loadtest::runner::run(&scenario, &opts).expect("loadtest runs")
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loadtest_across_nodes_every_frame_verified_each_track_once_per_node() {
    let Some(redis) = Redis::start().await else {
        return;
    };
    let _one = ONE_AT_A_TIME.lock().await;
    let options = keyed();
    let a = Node::start(&redis, "node-a", &options).await;
    let b = Node::start(&redis, "node-b", &options).await;
    let c = Node::start(&redis, "node-c", &options).await;
    let base = loadtest::scenario::Scenario {
        name: "cluster".into(),
        token_secret: KEY.into(),
        rooms: 1,
        video: "360p".into(),
        // One layer: the trunk then carries exactly the publisher's packets.
        simulcast: false,
        join_rate: 50.0,
        ..Default::default()
    };
    // The publisher on A, joined first and staying longer than everyone.
    let publisher = loadtest(loadtest::scenario::Scenario {
        url: a.base(),
        publishers: 1,
        subscribers: 0,
        identity_prefix: "pub-".into(),
        duration_secs: 9.0,
        ..base.clone()
    });
    eventually(
        Duration::from_secs(10),
        "the publisher's media reaches node-a",
        || async { a.metric("sfu_rtp_packets_in_total").await > 0.0 },
    )
    .await;
    // A presenter then an audience: the viewers join once node-a is listed
    // as holding the room (joins at the same moment on two nodes are
    // `keys_are_exchanged_by_participants_joining_two_nodes_at_once`).
    let registry = Registry::new(&redis.url(), Duration::from_secs(5)).expect("registry");
    eventually(Duration::from_secs(10), "node-a holds the room", || async {
        registry
            .room_nodes("loadtest-cluster-0")
            .await
            .is_ok_and(|n| n == ["node-a"])
    })
    .await;
    // Two subscribers on each of B and C.
    let subscribers: Vec<_> = [(&b, "b-"), (&c, "c-")]
        .into_iter()
        .map(|(node, prefix)| {
            loadtest(loadtest::scenario::Scenario {
                url: node.base(),
                publishers: 0,
                subscribers: 2,
                remote_publishers: 1,
                identity_prefix: prefix.into(),
                duration_secs: 6.0,
                ..base.clone()
            })
        })
        .collect();
    let mut received = 0;
    for (s, node) in subscribers.into_iter().zip(["node-b", "node-c"]) {
        let s = s.join().expect("subscribers' loadtest");
        println!("{node}:\n{}", s.table());
        assert_eq!(s.failed, 0, "{node}: {:?}", s.errors);
        assert_eq!(s.integrity_errors, 0, "{node}: {:?}", s.errors);
        // 2 subscribers × (audio + video) of the publisher on node-a.
        assert_eq!(s.tracks_expected, 4, "{node}");
        assert_eq!(s.tracks_received, 4, "{node}: {:?}", s.errors);
        assert!(s.frames_received > 4 * 50, "{node}: {}", s.frames_received);
        // Loopback loses nothing; frames before a viewer's first keyframe
        // are not counted here (the loadtest's frame loss includes them).
        assert!(s.packet_loss_pct < 1.0, "{node}: {}", s.packet_loss_pct);
        received += s.packets_received;
    }
    let p = publisher.join().expect("publisher's loadtest");
    assert_eq!(p.failed, 0, "{:?}", p.errors);
    let text = a.metrics().await;
    let packets_in = sum_of(&text, "sfu_rtp_packets_in_total");
    eprintln!(
        "node-a: {packets_in} RTP packets from the publisher; subscribers received {received}"
    );
    for peer in ["node-b", "node-c"] {
        let sent = sum_of(
            &text,
            &format!("sfu_trunk_datagrams_sent_total{{peer=\"{peer}\"}}"),
        );
        eprintln!("node-a → {peer}: {sent} datagrams");
        // Once per node, not once per subscriber (2 here would be 2×).
        assert!(
            sent <= 1.1 * packets_in,
            "{sent} datagrams to {peer} for {packets_in} packets in"
        );
        // And the track did cross for the subscribers' whole run.
        assert!(sent >= 0.4 * packets_in, "{sent} to {peer}");
    }
    for (node, peer) in [(&b, "node-a"), (&c, "node-a")] {
        let got = node
            .metric(&format!(
                "sfu_trunk_datagrams_received_total{{peer=\"{peer}\"}}"
            ))
            .await;
        assert!(got > 0.0, "{} received nothing from node-a", node.id);
    }
}

/// A publisher on node A and a subscriber on node B start at the same
/// moment (neither node holds the room yet, the registry lists neither):
/// their E2EE key exchange (keys.js's, which the loadtest speaks: a hello
/// to everyone right after `joined`, keys in answer) must still succeed, as
/// it does when both join one node at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_exchanged_by_participants_joining_two_nodes_at_once() {
    let Some(redis) = Redis::start().await else {
        return;
    };
    let _one = ONE_AT_A_TIME.lock().await;
    let options = keyed();
    let a = Node::start(&redis, "node-a", &options).await;
    let b = Node::start(&redis, "node-b", &options).await;
    let base = loadtest::scenario::Scenario {
        name: "at-once".into(),
        token_secret: KEY.into(),
        rooms: 1,
        video: "180p".into(),
        simulcast: false,
        join_rate: 50.0,
        duration_secs: 6.0,
        ..Default::default()
    };
    let publisher = loadtest(loadtest::scenario::Scenario {
        url: a.base(),
        publishers: 1,
        identity_prefix: "pub-".into(),
        ..base.clone()
    });
    let subscriber = loadtest(loadtest::scenario::Scenario {
        url: b.base(),
        publishers: 0,
        subscribers: 1,
        remote_publishers: 1,
        identity_prefix: "sub-".into(),
        ..base.clone()
    });
    let s = subscriber.join().expect("subscriber's loadtest");
    println!("node-b:\n{}", s.table());
    let p = publisher.join().expect("publisher's loadtest");
    assert_eq!(p.failed, 0, "{:?}", p.errors);
    assert_eq!(s.failed, 0, "{:?}", s.errors);
    assert_eq!(s.integrity_errors, 0, "{:?}", s.errors);
    assert!(
        s.packets_received > 0,
        "media crossed: {}",
        s.packets_received
    );
    assert_eq!(
        s.tracks_received, 2,
        "the subscriber on node-b decrypts the publisher's audio and video \
         ({} frames could not be decrypted for want of a key)",
        s.frames_without_key
    );
}
