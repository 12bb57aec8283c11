//! Rooms on different shards at once: each room's participants receive only
//! their room's media, byte-identical; a misrouted first datagram does not
//! stop a participant from connecting; WHIP/WHEP session requests reach the
//! shard that holds the session; gauges add up across shards and return to
//! zero.

mod common;

use std::time::{Duration, Instant};

use common::client::{Client, Options};
use common::{eventually, http_request, metric, token, KEY};
use sfu::config::Config;
use sfu::server::Server;
use str0m::media::{Direction, MediaKind};
use str0m::{Candidate, Rtc};

async fn two_shard_server() -> Server {
    let mut config = Config::default();
    config.media.workers = 2;
    config.http.listen = "127.0.0.1:0".parse().unwrap();
    config.media.udp_listen = "127.0.0.1:0".parse().unwrap();
    config.media.tcp_listen = "127.0.0.1:0".parse().unwrap();
    config.auth.key = KEY.into();
    config.turn.enabled = false;
    Server::start(config).await.expect("server starts")
}

/// A WHIP offer publishing one audio track.
fn publish_offer() -> String {
    let mut rtc = Rtc::builder().build(Instant::now());
    let host = Candidate::host("127.0.0.1:5000".parse().unwrap(), "udp").unwrap();
    rtc.add_local_candidate(host);
    let mut api = rtc.sdp_api();
    api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
    api.apply().unwrap().0.to_sdp_string()
}

/// Every participant of `room` receives every other's audio and video intact.
async fn room_flows(room: &[&Client], what: &str) {
    eventually(Duration::from_secs(15), what, || async {
        room.iter().all(|c| {
            room.iter().filter(|o| o.index != c.index).all(|o| {
                let Some(owner) = o.id() else { return false };
                ["audio", "video"].iter().all(|k| {
                    c.received_from(&owner, k)
                        .is_some_and(|r| r.intact > 20 && r.corrupt == 0)
                })
            })
        })
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_on_two_shards() {
    let server = two_shard_server().await;
    assert_eq!(server.udp_addrs.len(), 2);
    assert_ne!(server.udp_addrs[0], server.udp_addrs[1]);

    let alice = Client::join(&server, &token("red", "alice"), 1, true).await;
    eventually(Duration::from_secs(5), "alice joined", || async {
        alice.id().is_some()
    })
    .await;
    let red = server.placement().shard_of("red").expect("red placed");
    // The second room goes to the shard without a room.
    let misrouted = Options {
        misroute_first: Some(server.udp_addrs[red]),
        ..Options::default()
    };
    let carol = Client::join_with(&server, &token("blue", "carol"), 3, misrouted.clone()).await;
    let bob = Client::join(&server, &token("red", "bob"), 2, true).await;
    // Dave's first datagram on each connection goes to red's shard, not his own.
    let dave = Client::join_with(&server, &token("blue", "dave"), 4, misrouted).await;
    let blue = server.placement().shard_of("blue").expect("blue placed");
    assert_ne!(red, blue, "two rooms on two idle shards share one");

    room_flows(&[&alice, &bob], "red room media flows").await;
    room_flows(&[&carol, &dave], "blue room media flows").await;
    // The misrouted datagrams reached a shard that knows no such peer.
    let metrics = common::http_get(&server, "/metrics").await;
    let unknown = metrics
        .lines()
        .find_map(|l| l.strip_prefix("sfu_rtp_packets_dropped_total{reason=\"unknown_source\"} "))
        .and_then(|v| v.parse::<f64>().ok());
    assert!(
        unknown >= Some(4.0),
        "four misrouted first datagrams dropped as unknown_source: {unknown:?}"
    );

    // Nobody receives anything from the other room.
    for (c, own) in [
        (&alice, [1, 2]),
        (&bob, [1, 2]),
        (&carol, [3, 4]),
        (&dave, [3, 4]),
    ] {
        let state = c.state.lock().unwrap();
        for r in state.received.values() {
            assert!(
                r.senders.iter().all(|s| own.contains(s)),
                "participant {} got media of senders {:?}",
                c.index,
                r.senders
            );
        }
    }

    // Gauges from both shards add up.
    assert_eq!(metric(&server, "sfu_rooms").await, 2.0);
    assert_eq!(metric(&server, "sfu_participants").await, 4.0);
    assert_eq!(metric(&server, "sfu_peer_connections").await, 8.0);

    // A WHIP session in the blue room lives on blue's shard; PATCH and
    // DELETE find it there.
    let bearer = format!("Bearer {}", token("blue", "whip"));
    let (status, headers, _) = http_request(
        &server,
        "POST",
        "/whip/blue",
        &[
            ("Content-Type", "application/sdp"),
            ("Authorization", &bearer),
        ],
        &publish_offer(),
    )
    .await;
    assert_eq!(status, 201);
    let location = headers
        .iter()
        .find(|(k, _)| k == "location")
        .map(|(_, v)| v.clone())
        .expect("Location");
    assert!(
        location.starts_with(&format!("/sessions/{blue}-")),
        "{location} not on shard {blue}"
    );
    assert_eq!(metric(&server, "sfu_participants").await, 5.0);
    let trickle = [("Content-Type", "application/trickle-ice-sdpfrag")];
    let fragment = "a=candidate:1 1 udp 2130706431 127.0.0.1 5001 typ host\r\n";
    let (status, _, _) = http_request(&server, "PATCH", &location, &trickle, fragment).await;
    assert_eq!(status, 204);
    // The same random part on the other shard is no session.
    let elsewhere = location.replacen(&format!("/{blue}-"), &format!("/{red}-"), 1);
    let (status, _, _) = http_request(&server, "DELETE", &elsewhere, &[], "").await;
    assert_eq!(status, 404);
    let (status, _, _) = http_request(&server, "DELETE", &location, &[], "").await;
    assert_eq!(status, 200);
    let (status, _, _) = http_request(&server, "DELETE", &location, &[], "").await;
    assert_eq!(status, 404);
    for bad in ["/sessions/7-x", "/sessions/nope"] {
        let (status, _, _) = http_request(&server, "DELETE", bad, &[], "").await;
        assert_eq!(status, 404, "{bad}");
    }

    // Everyone leaves: every gauge is back to zero and both rooms are
    // released from the table.
    for c in [&alice, &bob, &carol, &dave] {
        c.leave().await;
    }
    eventually(Duration::from_secs(10), "gauges back to zero", || async {
        let mut zero = true;
        for name in [
            "sfu_rooms",
            "sfu_participants",
            "sfu_peer_connections",
            "sfu_tracks",
        ] {
            zero &= metric(&server, name).await == 0.0;
        }
        zero
    })
    .await;
    assert_eq!(server.placement().shard_of("red"), None);
    assert_eq!(server.placement().shard_of("blue"), None);
    server.stop().await;
}
