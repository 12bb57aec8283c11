//! Three str0m participants in one room on loopback: every packet arrives
//! byte-identical with continuous rewritten sequence numbers and its audio
//! level; joining and leaving renegotiate; the room empties cleanly.

mod common;

use std::time::Duration;

use common::client::{audio_level, Client, Received};
use common::{eventually, metric, start_server, token};

/// Every packet intact and from the right sender, sequence numbers gap-free.
fn assert_clean(r: &Received, sender: u8, what: &str) {
    assert!(r.intact > 20, "{what}: only {} intact packets", r.intact);
    assert_eq!(r.corrupt, 0, "{what}: corrupted payloads");
    assert_eq!(
        r.senders,
        vec![sender],
        "{what}: payload from the wrong sender"
    );
    let mut seqs = r.seqs.clone();
    seqs.sort_unstable();
    seqs.dedup();
    let span = seqs[seqs.len() - 1] - seqs[0] + 1;
    assert_eq!(
        span as usize,
        seqs.len(),
        "{what}: gaps in rewritten sequence numbers"
    );
    assert!(
        seqs[0] < 100,
        "{what}: stream starts at {} (expected a rebased start)",
        seqs[0]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_participants_exchange_intact_media() {
    let server = start_server(8_000).await;
    let a = Client::join(&server, &token("call", "alice"), 1, true).await;
    let b = Client::join(&server, &token("call", "bob"), 2, true).await;
    eventually(
        Duration::from_secs(10),
        "alice and bob receive each other",
        || async {
            let (Some(ai), Some(bi)) = (a.id(), b.id()) else {
                return false;
            };
            [(&a, &bi), (&b, &ai)].iter().all(|(c, other)| {
                ["audio", "video"]
                    .iter()
                    .all(|k| c.received_from(other, k).is_some_and(|r| r.intact > 20))
            })
        },
    )
    .await;

    // A third joins: everyone renegotiates and receives the other two.
    let c = Client::join(&server, &token("call", "carol"), 3, true).await;
    let clients = [&a, &b, &c];
    eventually(
        Duration::from_secs(10),
        "all three receive the two others",
        || async {
            clients.iter().all(|me| {
                clients.iter().filter(|o| o.index != me.index).all(|o| {
                    let Some(oid) = o.id() else { return false };
                    ["audio", "video"]
                        .iter()
                        .all(|k| me.received_from(&oid, k).is_some_and(|r| r.intact > 30))
                })
            })
        },
    )
    .await;
    for me in clients {
        for other in clients.iter().filter(|o| o.index != me.index) {
            let oid = other.id().unwrap();
            let audio = me.received_from(&oid, "audio").unwrap();
            let video = me.received_from(&oid, "video").unwrap();
            let what = format!("{} from {}", me.index, other.index);
            assert_clean(&audio, other.index, &format!("{what} audio"));
            assert_clean(&video, other.index, &format!("{what} video"));
            assert_eq!(
                video.dd_intact, video.intact,
                "{what}: dependency descriptor lost"
            );
            assert!(
                audio
                    .levels
                    .iter()
                    .all(|l| *l == Some(audio_level(other.index))),
                "{what}: audio level not preserved: {:?}",
                &audio.levels[..5]
            );
        }
    }
    assert!(
        a.state.lock().unwrap().offers_answered >= 2,
        "alice renegotiated when carol joined"
    );
    for c in clients {
        let id = c.id().unwrap();
        let own = c.state.lock().unwrap().of_type("track_published");
        let own: Vec<_> = own
            .iter()
            .filter(|m| m["track"]["participant_id"] == id.as_str())
            .collect();
        assert_eq!(own.len(), 2, "a publisher learns its own track ids");
        assert!(own
            .iter()
            .all(|m| m["track"]["mid"].as_str().is_some_and(|m| !m.is_empty())));
        let requests = c.state.lock().unwrap().keyframe_requests;
        assert!(
            requests >= 1,
            "new subscribers asked {} for a keyframe",
            c.index
        );
    }
    assert_eq!(metric(&server, "sfu_participants").await, 3.0);
    assert_eq!(metric(&server, "sfu_tracks").await, 6.0);
    assert_eq!(metric(&server, "sfu_subscriptions").await, 12.0);
    assert!(metric(&server, "sfu_rtp_packets_forwarded_total").await > 100.0);

    // Carol leaves: the others are told and renegotiate her m-lines away.
    let cid = c.id().unwrap();
    c.leave().await;
    eventually(
        Duration::from_secs(5),
        "carol's leave is seen and renegotiated",
        || async {
            [&a, &b].iter().all(|me| {
                let s = me.state.lock().unwrap();
                let told = s
                    .of_type("participant_left")
                    .iter()
                    .any(|m| m["participant_id"] == cid.as_str());
                let gone = s.mids.values().all(|(_, owner, _)| *owner != cid);
                told && gone
            })
        },
    )
    .await;
    assert_eq!(metric(&server, "sfu_tracks").await, 4.0);
    assert!(c.state.lock().unwrap().error_codes().is_empty());

    a.leave().await;
    b.leave().await;
    eventually(Duration::from_secs(5), "metrics back to zero", || async {
        for m in [
            "sfu_rooms",
            "sfu_participants",
            "sfu_tracks",
            "sfu_subscriptions",
            "sfu_peer_connections",
        ] {
            if metric(&server, m).await != 0.0 {
                return false;
            }
        }
        true
    })
    .await;
    server.stop().await;
}

/// The m-sections of an SDP: (port, its lines).
fn msections(sdp: &str) -> Vec<(String, Vec<&str>)> {
    let mut out: Vec<(String, Vec<&str>)> = Vec::new();
    for line in sdp.lines() {
        if line.starts_with("m=") {
            out.push((line.split(' ').nth(1).unwrap_or("").to_string(), Vec::new()));
        } else if let Some((_, lines)) = out.last_mut() {
            lines.push(line);
        }
    }
    out
}

/// Waits until `client` has answered a subscribe offer after the first
/// `seen` ones; returns the last offer's SDP.
async fn next_offer(client: &Client, seen: usize) -> String {
    eventually(
        Duration::from_secs(5),
        "a new subscribe offer is answered",
        || async {
            let s = client.state.lock().unwrap();
            let offers = s.of_type("subscribe_offer").len();
            offers > seen && s.offers_answered >= offers
        },
    )
    .await;
    let offers = client.state.lock().unwrap().of_type("subscribe_offer");
    offers[offers.len() - 1]["sdp"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// The first m-line of a subscribe connection carries its transport (it tags
/// the BUNDLE group): when its track goes away it is set inactive, never
/// stopped. Stopping it made Firefox close that transport (a DTLS
/// close_notify, which ended its session with `media_timeout`) whenever the
/// first publisher it received left. The other m-lines are stopped as before,
/// and later tracks arrive on the same connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_subscribed_publisher_leaving_keeps_the_subscribe_transport() {
    let server = start_server(8_000).await;
    let receives = |me: &Client, other: &Client| {
        let Some(id) = other.id() else { return false };
        ["audio", "video"]
            .iter()
            .all(|k| me.received_from(&id, k).is_some_and(|r| r.intact > 20))
    };
    let a = Client::join(&server, &token("anchor", "alice"), 1, false).await;
    let b = Client::join(&server, &token("anchor", "bob"), 2, true).await;
    eventually(Duration::from_secs(10), "alice receives bob", || async {
        receives(&a, &b)
    })
    .await;
    let c = Client::join(&server, &token("anchor", "carol"), 3, true).await;
    eventually(Duration::from_secs(10), "alice receives carol", || async {
        receives(&a, &c)
    })
    .await;
    let first_mid = |sdp: &str| {
        let m = msections(sdp);
        let (port, lines) = &m[0];
        let mid = lines
            .iter()
            .find_map(|l| l.strip_prefix("a=mid:"))
            .unwrap_or_default()
            .to_string();
        (port.clone(), mid, lines.contains(&"a=inactive"))
    };
    let open = |sdp: &str| msections(sdp).iter().filter(|(p, _)| p != "0").count();

    // Bob, whose tracks came first, leaves: his first m-line stays open and
    // inactive, his second is stopped, Carol's two go on.
    let seen = a.state.lock().unwrap().of_type("subscribe_offer").len();
    b.leave().await;
    let sdp = next_offer(&a, seen).await;
    let (port, mid, inactive) = first_mid(&sdp);
    assert!(
        port != "0" && inactive,
        "first m-line open and inactive:\n{sdp}"
    );
    assert!(
        sdp.contains(&format!("a=group:BUNDLE {mid} ")),
        "it still tags the BUNDLE group:\n{sdp}"
    );
    assert_eq!(open(&sdp), 3, "{sdp}");
    let before = a
        .received_from(&c.id().unwrap(), "video")
        .map_or(0, |r| r.intact);
    eventually(
        Duration::from_secs(5),
        "carol's video keeps arriving",
        || async {
            a.received_from(&c.id().unwrap(), "video")
                .is_some_and(|r| r.intact > before + 20)
        },
    )
    .await;

    // Carol leaves too: only the inactive first m-line stays.
    let seen = a.state.lock().unwrap().of_type("subscribe_offer").len();
    c.leave().await;
    let sdp = next_offer(&a, seen).await;
    assert_eq!(open(&sdp), 1, "{sdp}");
    assert!(first_mid(&sdp).2, "{sdp}");

    // Dave's tracks arrive on the same connection.
    let d = Client::join(&server, &token("anchor", "dave"), 4, true).await;
    eventually(Duration::from_secs(10), "alice receives dave", || async {
        receives(&a, &d)
    })
    .await;
    let errors = a.state.lock().unwrap().error_codes();
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(metric(&server, "sfu_participants").await, 2.0);
    server.stop().await;
}
