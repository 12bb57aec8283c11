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
