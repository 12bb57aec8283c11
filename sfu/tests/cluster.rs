//! The cluster's foundations on loopback: the Redis registry (real
//! `redis-server` processes and real `sfu` processes registering in it) and
//! the authenticated QUIC trunk between two endpoints.
//!
//! Without Debian's `redis-server` the registry tests are skipped with a
//! message (scripts/test-deps.sh installs it).

mod common;

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::client::Client;
use common::cluster::{Redis, SECRET};
use common::{eventually, test_config, token};
use sfu::cluster::keys::NodeRecord;
use sfu::cluster::registry::{Registration, Registry};
use sfu::cluster::trunk::wire::{Control, MediaDatagram, RelayTo, FLAG_KEYFRAME};
use sfu::cluster::trunk::{SendMediaError, Trunk, TrunkConfig, TrunkError, TrunkEvent};
use sfu::metrics::Metrics;
use sfu::signal::protocol::TrackInfo;
use tokio::process::{Child, Command};
use tokio::sync::mpsc::Receiver;

/// An `sfu` process with `[cluster]` configured, everything else on
/// ephemeral loopback ports.
struct Node {
    child: Child,
}

impl Node {
    fn start(redis: &Redis, id: &str, lease_s: u64) -> Node {
        let child = Command::new(env!("CARGO_BIN_EXE_sfu"))
            .env("SFU_HTTP_LISTEN", "127.0.0.1:0")
            .env("SFU_MEDIA_UDP_LISTEN", "127.0.0.1:0")
            .env("SFU_MEDIA_ICE_TCP", "false")
            .env("SFU_MEDIA_WORKERS", "1")
            .env("SFU_TURN_ENABLED", "false")
            .env("SFU_FILES_ENABLED", "false")
            .env("SFU_LOG_LEVEL", "warn")
            .env("SFU_CLUSTER_REDIS_URL", redis.url())
            .env("SFU_CLUSTER_SECRET", SECRET)
            .env("SFU_CLUSTER_NODE_ID", id)
            .env("SFU_CLUSTER_TRUNK_LISTEN", "127.0.0.1:0")
            .env("SFU_CLUSTER_LEASE_S", lease_s.to_string())
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("sfu starts");
        Node { child }
    }

    /// SIGTERM: the node shuts down cleanly (and deregisters).
    async fn terminate(mut self) {
        let pid = self.child.id().expect("running").to_string();
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill -TERM");
        assert!(status.success());
        let exit = tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .expect("sfu exits after SIGTERM")
            .unwrap();
        assert!(exit.success(), "sfu exit status {exit}");
    }
}

async fn listed(registry: &Registry) -> Vec<String> {
    registry
        .nodes()
        .await
        .map(|n| n.into_iter().map(|r| r.id).collect())
        .unwrap_or_default()
}

async fn metric_at(http: SocketAddr, name: &str) -> f64 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(http).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).await.unwrap();
    text.lines()
        .filter(|l| l.split(['{', ' ']).next() == Some(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn trunk(id: &str, secret: &str) -> (Trunk, Receiver<TrunkEvent>, Metrics) {
    let metrics = Metrics::new();
    let (t, rx) = Trunk::bind(
        TrunkConfig {
            node_id: id.into(),
            secret: secret.as_bytes().to_vec(),
            listen: "127.0.0.1:0".parse().unwrap(),
        },
        metrics.clone(),
    )
    .expect("trunk binds");
    (t, rx, metrics)
}

fn addr(t: &Trunk) -> SocketAddr {
    t.local_addr().unwrap()
}

/// The next event that is not media, within 5 s.
async fn next_non_media(rx: &mut Receiver<TrunkEvent>) -> TrunkEvent {
    loop {
        let e = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("an event within 5 s")
            .expect("trunk open");
        if !matches!(e, TrunkEvent::Media { .. }) {
            return e;
        }
    }
}

fn label_value(metrics: &Metrics, line_start: &str) -> f64 {
    metrics
        .render()
        .lines()
        .filter(|l| l.starts_with(line_start))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn rtp(seq: u16, payload_len: usize) -> bytes::Bytes {
    let mut p = vec![0x80, 96];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&[0, 0, 0, 9, 0xde, 0xad, 0xbe, 0xef]);
    p.extend((0..payload_len).map(|i| (i as u8) ^ (seq as u8)));
    p.into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_register_see_each_other_and_vanish_when_they_stop() {
    let Some(redis) = Redis::start().await else {
        return;
    };
    let lease = Duration::from_secs(3);
    let registry = Registry::new(&redis.url(), lease).unwrap();
    let a = Node::start(&redis, "node-a", lease.as_secs());
    let mut b = Node::start(&redis, "node-b", lease.as_secs());
    eventually(Duration::from_secs(15), "both nodes listed", || async {
        listed(&registry).await == ["node-a", "node-b"]
    })
    .await;

    // The records are the nodes' real addresses: their HTTP answers and
    // their trunks accept a member of the cluster and refuse anyone else.
    let records = registry.nodes().await.unwrap();
    let rec_a = records[0].clone();
    assert_eq!(rec_a.participants, 0);
    assert_eq!(rec_a.media.len(), 1);
    assert_eq!(metric_at(rec_a.http, "sfu_cluster_registered").await, 1.0);
    let (member, _events, _) = trunk("node-0", SECRET);
    let link = member
        .connect("node-a", rec_a.trunk)
        .await
        .expect("member dials node-a");
    assert!(link.rtt() > Duration::ZERO);
    let (stranger, _events, _) = trunk("node-1", "not-the-cluster-secret");
    let refused = stranger.connect("node-a", rec_a.trunk).await;
    assert!(
        matches!(refused, Err(TrunkError::Refused(_))),
        "{refused:?}"
    );
    assert_eq!(
        metric_at(rec_a.http, "sfu_trunk_auth_failures_total").await,
        1.0
    );
    member.close().await;

    // A node that dies stops renewing: gone within its lease.
    b.child.kill().await.unwrap();
    let killed = Instant::now();
    eventually(lease * 3, "node-b lapses", || async {
        listed(&registry).await == ["node-a"]
    })
    .await;
    let took = killed.elapsed();
    assert!(
        took <= lease + Duration::from_millis(700),
        "lapsed after {took:?}"
    );

    // A node that stops cleanly deregisters at once.
    let stopped = Instant::now();
    a.terminate().await;
    assert!(listed(&registry).await.is_empty());
    assert!(stopped.elapsed() < lease, "{:?}", stopped.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_register_again_after_redis_restarts() {
    let Some(mut redis) = Redis::start().await else {
        return;
    };
    let lease = Duration::from_secs(2);
    let registry = Registry::new(&redis.url(), lease).unwrap();
    let _a = Node::start(&redis, "node-a", lease.as_secs());
    let _b = Node::start(&redis, "node-b", lease.as_secs());
    eventually(Duration::from_secs(15), "both nodes listed", || async {
        listed(&registry).await == ["node-a", "node-b"]
    })
    .await;
    let http_a = registry.nodes().await.unwrap()[0].http;

    redis.kill().await;
    // The nodes notice: their renewals fail.
    eventually(
        Duration::from_secs(10),
        "node-a sees the outage",
        || async { metric_at(http_a, "sfu_cluster_registered").await == 0.0 },
    )
    .await;
    assert!(metric_at(http_a, "sfu_cluster_registry_errors_total").await >= 1.0);
    redis.spawn().await;
    let restarted = Instant::now();
    // The new Redis starts empty: only re-registration lists them again.
    eventually(
        Duration::from_secs(10),
        "both nodes listed again",
        || async { listed(&registry).await == ["node-a", "node-b"] },
    )
    .await;
    eprintln!("re-registered {:?} after the restart", restarted.elapsed());
    assert_eq!(metric_at(http_a, "sfu_cluster_registered").await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_reports_its_participants_and_rooms() {
    let Some(redis) = Redis::start().await else {
        return;
    };
    let mut config = test_config(8_000);
    config.cluster.redis_url = redis.url();
    config.cluster.secret = SECRET.into();
    config.cluster.node_id = "node-a".into();
    config.cluster.trunk_listen = "127.0.0.1:0".parse().unwrap();
    config.cluster.lease_s = 1;
    let server = sfu::server::Server::start(config).await.expect("starts");
    let cluster = server.cluster().expect("cluster configured");
    assert_eq!(cluster.node_id, "node-a");
    let registry = Registry::new(&redis.url(), Duration::from_secs(1)).unwrap();
    let load = || async {
        registry
            .nodes()
            .await
            .ok()
            .and_then(|n| n.first().map(|r| (r.participants, r.rooms)))
    };
    eventually(Duration::from_secs(5), "registered, empty", || async {
        load().await == Some((0, 0))
    })
    .await;
    let record = &registry.nodes().await.unwrap()[0];
    assert_eq!(record.http, server.http_addr);
    assert_eq!(record.trunk, cluster.trunk_addr);
    assert_eq!(record.media, server.udp_addrs);

    let alice = Client::join(&server, &token("standup", "alice"), 1, true).await;
    let bob = Client::join(&server, &token("standup", "bob"), 2, true).await;
    eventually(
        Duration::from_secs(5),
        "2 participants in 1 room",
        || async { load().await == Some((2, 1)) },
    )
    .await;
    eventually(
        Duration::from_secs(5),
        "the room names the node",
        || async { registry.room_nodes("standup").await.ok() == Some(vec!["node-a".to_string()]) },
    )
    .await;
    alice.leave().await;
    bob.leave().await;
    eventually(Duration::from_secs(10), "empty again", || async {
        load().await == Some((0, 0))
    })
    .await;
    eventually(Duration::from_secs(5), "the room lapses", || async {
        registry
            .room_nodes("standup")
            .await
            .is_ok_and(|n| n.is_empty())
    })
    .await;
    server.stop().await;
    assert!(listed(&registry).await.is_empty(), "deregistered on stop");
}

fn record(id: &str) -> NodeRecord {
    NodeRecord {
        id: id.into(),
        trunk: "127.0.0.1:7890".parse().unwrap(),
        http: "127.0.0.1:7880".parse().unwrap(),
        media: vec!["127.0.0.1:7882".parse().unwrap()],
        participants: 2,
        rooms: 1,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_membership_is_listed_and_lapses_with_its_node() {
    let Some(redis) = Redis::start().await else {
        return;
    };
    let lease = Duration::from_secs(2);
    let registry = Arc::new(Registry::new(&redis.url(), lease).unwrap());
    let a = Registration::spawn(
        registry.clone(),
        Metrics::new(),
        || record("node-a"),
        Vec::new,
    );
    let b = Registration::spawn(
        registry.clone(),
        Metrics::new(),
        || record("node-b"),
        Vec::new,
    );
    a.hold_room("standup");
    b.hold_room("standup");
    b.hold_room("all hands: Q4");
    eventually(Duration::from_secs(5), "rooms listed", || async {
        registry.room_nodes("standup").await.unwrap() == ["node-a", "node-b"]
            && registry.room_nodes("all hands: Q4").await.unwrap() == ["node-b"]
    })
    .await;
    assert_eq!(registry.nodes().await.unwrap()[0], record("node-a"));
    assert!(registry.room_nodes("other").await.unwrap().is_empty());
    // Many rooms in one read (several pipelined requests), in their order.
    let mut rooms: Vec<String> = (0..600).map(|i| format!("empty {i}")).collect();
    rooms[3] = "standup".into();
    rooms[599] = "all hands: Q4".into();
    let all = registry.rooms_nodes(&rooms).await.unwrap();
    assert_eq!(all.len(), 600);
    assert_eq!(all[3], ["node-a", "node-b"]);
    assert_eq!(all[599], ["node-b"]);
    assert_eq!(all.iter().filter(|ids| ids.is_empty()).count(), 598);

    b.release_room("all hands: Q4").await.unwrap();
    assert!(registry
        .room_nodes("all hands: Q4")
        .await
        .unwrap()
        .is_empty());

    // node-a stops renewing (as if it crashed): its room entry lapses too.
    drop(a);
    let crashed = Instant::now();
    eventually(lease * 3, "node-a's membership lapses", || async {
        registry.room_nodes("standup").await.unwrap() == ["node-b"]
    })
    .await;
    assert!(crashed.elapsed() <= lease + Duration::from_millis(700));
    assert_eq!(listed(&registry).await, ["node-b"]);

    b.stop().await.unwrap();
    assert!(registry.room_nodes("standup").await.unwrap().is_empty());
    assert!(listed(&registry).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trunk_carries_datagrams_and_control_both_ways() {
    let (a, mut a_events, a_metrics) = trunk("node-a", SECRET);
    let (b, mut b_events, b_metrics) = trunk("node-b", SECRET);
    let a_to_b = a.connect("node-b", addr(&b)).await.expect("a dials b");
    match next_non_media(&mut b_events).await {
        TrunkEvent::PeerUp { peer, .. } => assert_eq!(peer, "node-a"),
        other => panic!("expected peer up, got {other:?}"),
    }
    let b_to_a = b.peer("node-a").expect("b has a link to a");
    assert_eq!(a.peers(), ["node-b"]);

    // Media both ways: every datagram arrives with its bytes unchanged.
    let max = a_to_b.max_datagram_size().expect("datagrams enabled");
    assert!(max >= 1100, "max datagram {max}");
    let n = 300u16;
    for (link, rx, track) in [(&a_to_b, &mut b_events, 7u32), (&b_to_a, &mut a_events, 9)] {
        let sent: Vec<MediaDatagram> = (0..n)
            .map(|i| MediaDatagram {
                track,
                layer: (i % 3) as u8,
                flags: if i % 50 == 0 { FLAG_KEYFRAME } else { 0 },
                rtp: rtp(i, usize::from(i) * 3 % 1000),
            })
            .collect();
        // Sent in bursts of 50, each awaited, so no burst outruns the
        // receiver's queue.
        let mut got = Vec::new();
        for (i, chunk) in sent.chunks(50).enumerate() {
            for d in chunk {
                link.send_media(d).expect("datagram sent");
            }
            while got.len() < (i * 50 + chunk.len()) {
                match tokio::time::timeout(Duration::from_secs(5), rx.recv()).await {
                    Ok(Some(TrunkEvent::Media { datagram, .. })) => got.push(datagram),
                    Ok(Some(_)) => {}
                    other => panic!("datagrams missing after {} of {n}: {other:?}", got.len()),
                }
            }
        }
        let key = |d: &MediaDatagram| (d.rtp[2], d.rtp[3]);
        got.sort_by_key(key);
        assert_eq!(got, sent, "datagrams differ");
    }

    // Too big for any path (an RTP packet over 1500 bytes; path MTU
    // discovery stops at 1452): refused and counted, nothing sent.
    let big = MediaDatagram {
        track: 1,
        layer: 0,
        flags: 0,
        rtp: rtp(1, 1500),
    };
    assert!(matches!(
        a_to_b.send_media(&big),
        Err(SendMediaError::TooBig { .. })
    ));

    // Control both ways, in order.
    let relay = Control::Relay {
        room: "standup".into(),
        from: "PA_7fK2mQx9Lw".into(),
        to: RelayTo::Participants(vec!["PA_b3NcR8vT1z".into()]),
        payload: r#"{"kind": "key", "kid": 3, "wrapped":"q2V7"}"#.into(),
    };
    let subscribe = Control::SubscribeTrack {
        track: 9,
        layers: vec![0, 1],
    };
    a_to_b.send_control(&subscribe).await.unwrap();
    a_to_b.send_control(&relay).await.unwrap();
    for want in [&subscribe, &relay] {
        match next_non_media(&mut b_events).await {
            TrunkEvent::Control { peer, message } => {
                assert_eq!(peer, "node-a");
                assert_eq!(&message, want);
            }
            other => panic!("expected control, got {other:?}"),
        }
    }
    let published = Control::TrackPublished {
        room: "standup".into(),
        track: 7,
        layers: vec![0, 1, 2],
        info: TrackInfo {
            id: "TR_c4Cam9Zp2R".into(),
            participant_id: "PA_7fK2mQx9Lw".into(),
            kind: "video".into(),
            mid: "1".into(),
            source: Some("camera".into()),
            muted: false,
        },
        codecs: Vec::new(),
    };
    let keyframe = Control::KeyframeRequest { track: 9, layer: 2 };
    b_to_a.send_control(&published).await.unwrap();
    b_to_a.send_control(&keyframe).await.unwrap();
    for want in [&published, &keyframe] {
        match next_non_media(&mut a_events).await {
            TrunkEvent::Control { message, .. } => assert_eq!(&message, want),
            other => panic!("expected control, got {other:?}"),
        }
    }

    // Counted per peer, the same on both sides.
    let total: f64 = (0..n)
        .map(|i| (8 + 12 + usize::from(i) * 3 % 1000) as f64)
        .sum();
    for (m, peer) in [(&a_metrics, "node-b"), (&b_metrics, "node-a")] {
        let at = |name: &str| label_value(m, &format!("{name}{{peer=\"{peer}\"}}"));
        assert_eq!(at("sfu_trunk_datagrams_sent_total"), f64::from(n));
        assert_eq!(at("sfu_trunk_datagrams_received_total"), f64::from(n));
        assert_eq!(at("sfu_trunk_bytes_sent_total"), total);
        assert_eq!(at("sfu_trunk_bytes_received_total"), total);
        assert!(at("sfu_trunk_rtt_seconds") > 0.0);
        let control = |dir: &str| {
            label_value(
                m,
                &format!("sfu_trunk_control_messages_total{{direction=\"{dir}\",peer=\"{peer}\"}}"),
            )
        };
        assert_eq!((control("sent"), control("received")), (2.0, 2.0));
        assert_eq!(m.trunk_peers.get(), 1);
    }
    assert_eq!(
        label_value(
            &a_metrics,
            "sfu_trunk_datagrams_dropped_total{peer=\"node-b\",reason=\"too_big\"}"
        ),
        1.0
    );

    // A node that shuts down is reported down on the other side.
    a.close().await;
    match next_non_media(&mut b_events).await {
        TrunkEvent::PeerDown { peer, .. } => assert_eq!(peer, "node-a"),
        other => panic!("expected peer down, got {other:?}"),
    }
    assert!(b.peers().is_empty());
    assert_eq!(b_metrics.trunk_peers.get(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_the_wrong_secret_is_refused_both_ways() {
    let (good, mut good_events, good_metrics) = trunk("node-b", SECRET);
    let (other, mut other_events, _) = trunk("node-c", SECRET);
    let (bad, mut bad_events, bad_metrics) = trunk("node-a", "a-different-secret-456");

    // The impostor dials a member: the member refuses it.
    let r = bad.connect("node-b", addr(&good)).await;
    assert!(matches!(r, Err(TrunkError::Refused(_))), "{r:?}");
    assert_eq!(good_metrics.trunk_auth_failures.get(), 1);
    // A member dials the impostor: the impostor cannot prove the secret,
    // and it is the impostor that refuses first (it checks the dialer).
    let r = good.connect("node-a", addr(&bad)).await;
    assert!(matches!(r, Err(TrunkError::Refused(_))), "{r:?}");
    assert_eq!(bad_metrics.trunk_auth_failures.get(), 1);
    assert!(good.peers().is_empty() && bad.peers().is_empty());
    assert_eq!(good_metrics.trunk_peers.get(), 0);

    // The right pair still works.
    let link = good
        .connect("node-c", addr(&other))
        .await
        .expect("members connect");
    let msg = Control::UnsubscribeTrack { track: 3 };
    link.send_control(&msg).await.unwrap();
    loop {
        match next_non_media(&mut other_events).await {
            TrunkEvent::PeerUp { peer, .. } => assert_eq!(peer, "node-b"),
            TrunkEvent::Control { message, .. } => {
                assert_eq!(message, msg);
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    // Neither refused side ever saw a peer.
    match good_events.try_recv() {
        Ok(TrunkEvent::PeerUp { peer, .. }) => assert_eq!(peer, "node-c"),
        other => panic!("expected only node-c up, got {other:?}"),
    }
    assert!(bad_events.try_recv().is_err());

    // A member that answers under another id than the one dialled is
    // refused by the dialer.
    let (fourth, _fourth_events, _) = trunk("node-d", SECRET);
    let r = good.connect("node-x", addr(&fourth)).await;
    assert!(
        matches!(&r, Err(TrunkError::WrongPeer { found, .. }) if found == "node-d"),
        "{r:?}"
    );
    assert_eq!(good.peers(), ["node-c"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simultaneous_dials_leave_one_connection() {
    // Both nodes dial each other at once, many times over: each side must
    // get one link (one `PeerUp`, the same connection as `connect`
    // returned) and what either sends on it at once must arrive. A link
    // closed as a duplicate after its `PeerUp` loses what was sent on it,
    // which is how a room once missed a node's participants.
    for round in 0..20u32 {
        let (a, mut a_events, a_metrics) = trunk("node-a", SECRET);
        let (b, mut b_events, b_metrics) = trunk("node-b", SECRET);
        let (ra, rb) = tokio::join!(a.connect("node-b", addr(&b)), b.connect("node-a", addr(&a)));
        let (a_link, b_link) = (ra.expect("a dials"), rb.expect("b dials"));
        let (to_b, to_a) = (
            Control::UnsubscribeTrack { track: round },
            Control::UnsubscribeTrack {
                track: 1000 + round,
            },
        );
        a_link.send_control(&to_b).await.unwrap();
        b_link.send_control(&to_a).await.unwrap();
        for (events, link, expected, side) in [
            (&mut a_events, &a_link, &to_a, "a"),
            (&mut b_events, &b_link, &to_b, "b"),
        ] {
            match next_non_media(events).await {
                TrunkEvent::PeerUp { link: up, .. } => assert!(
                    up.same_connection(link),
                    "round {round}: {side}'s PeerUp is not the link connect returned"
                ),
                other => panic!("round {round}: {side} expected PeerUp, got {other:?}"),
            }
            match next_non_media(events).await {
                TrunkEvent::Control { message, .. } => assert_eq!(&message, expected),
                other => panic!("round {round}: {side} expected the message, got {other:?}"),
            }
        }
        assert_eq!(a.peers(), ["node-b"]);
        assert_eq!(b.peers(), ["node-a"]);
        assert_eq!(a_metrics.trunk_peers.get(), 1);
        assert_eq!(b_metrics.trunk_peers.get(), 1);
        assert!(
            a_events.try_recv().is_err() && b_events.try_recv().is_err(),
            "round {round}: no second PeerUp or PeerDown"
        );
    }
}
