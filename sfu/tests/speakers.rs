//! Active speakers over the network: str0m participants whose audio level
//! header extension the test controls. `active_speakers` follows speakers
//! taking turns within a second; `media.forward_loudest_audio` drops the
//! audio of those who do not rank.

mod common;

use std::time::{Duration, Instant};

use common::client::Client;
use common::{eventually, metric, test_config, token};
use serde_json::Value;
use sfu::server::Server;

const LOUD: i8 = -20;
const SILENT: i8 = -127;

/// The participant ids of the last `active_speakers` `c` received.
fn last_speakers(c: &Client) -> Option<Vec<Value>> {
    let msgs = c.state.lock().unwrap().of_type("active_speakers");
    Some(msgs.last()?["speakers"].as_array()?.clone())
}

fn first_speaker(c: &Client) -> Option<String> {
    Some(
        last_speakers(c)?.first()?["participant_id"]
            .as_str()?
            .to_string(),
    )
}

/// Joins `n` publishers into `room`, all silent, each receiving the others'
/// video (audio may be held back by `forward_loudest_audio`).
async fn silent_call(server: &Server, room: &str, n: u8) -> Vec<Client> {
    let mut clients = Vec::new();
    for i in 1..=n {
        let c = Client::join(server, &token(room, &format!("p{i}")), i, true).await;
        c.set_audio_level(SILENT);
        clients.push(c);
    }
    let clients_ref = &clients;
    eventually(
        Duration::from_secs(15),
        "everyone sees everyone",
        || async move {
            clients_ref.iter().all(|me| {
                clients_ref.iter().filter(|o| o.index != me.index).all(|o| {
                    o.id()
                        .and_then(|id| me.received_from(&id, "video"))
                        .is_some_and(|r| r.intact > 5)
                })
            })
        },
    )
    .await;
    clients
}

/// `speaker` talks, everyone else is silent.
fn turn(clients: &[Client], speaker: &Client) {
    for c in clients {
        c.set_audio_level(if c.index == speaker.index {
            LOUD
        } else {
            SILENT
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_speakers_follow_three_speakers_taking_turns() {
    let server = Server::start(test_config(8_000)).await.expect("server");
    let clients = silent_call(&server, "turns", 3).await;
    let clients = &clients;
    let mut latencies = Vec::new();
    for (round, speaker) in [0, 1, 2, 0].into_iter().enumerate() {
        let speaker = &clients[speaker];
        let id = speaker.id().unwrap();
        turn(clients, speaker);
        let started = Instant::now();
        eventually(
            Duration::from_secs(1),
            &format!("turn {round}: every client names {id} first"),
            || async {
                clients
                    .iter()
                    .all(|c| first_speaker(c).as_deref() == Some(&id))
            },
        )
        .await;
        latencies.push(started.elapsed());
        // Ordered with levels: the speaker's level is high, its track named.
        for c in clients {
            let s = last_speakers(c).unwrap();
            assert!(s[0]["level"].as_f64().unwrap() > 0.1, "{s:?}");
            assert!(s[0]["track_id"].as_str().unwrap().starts_with("TR_"));
        }
        // Holds the floor while talking: nothing else comes first.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        for c in clients {
            assert_eq!(first_speaker(c).as_deref(), Some(id.as_str()));
        }
    }
    eprintln!("active_speakers followed turns after {latencies:?}");
    assert!(metric(&server, "sfu_speaker_changes_total").await >= 4.0);
    // A latecomer hears who holds the floor without waiting for a change.
    let late = Client::join(&server, &token("turns", "late"), 9, false).await;
    let first = clients[0].id().unwrap();
    eventually(Duration::from_secs(2), "the latecomer is told", || async {
        first_speaker(&late).as_deref() == Some(first.as_str())
    })
    .await;
    // Everyone goes quiet: the floor stays with the last speaker, alone.
    for c in clients {
        c.set_audio_level(SILENT);
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let s = last_speakers(&clients[1]).unwrap();
    assert_eq!(s.len(), 1, "{s:?}");
    assert_eq!(s[0]["participant_id"], clients[0].id().unwrap().as_str());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_loudest_audio_is_forwarded() {
    let mut config = test_config(8_000);
    config.media.forward_loudest_audio = 2;
    let server = Server::start(config).await.expect("server");
    let clients = silent_call(&server, "loudest", 4).await;
    let clients = &clients;
    let (listener, quiet) = (&clients[0], &clients[3]);
    let quiet_id = quiet.id().unwrap();
    let audio_from = |c: &Client, from: &Client| {
        c.received_from(&from.id().unwrap(), "audio")
            .map_or(0, |r| r.intact)
    };
    // Participants 2 and 3 take turns: they are the two that rank.
    for speaker in [&clients[1], &clients[2]] {
        turn(clients, speaker);
        let id = speaker.id().unwrap();
        eventually(Duration::from_secs(2), "the turn is seen", || async {
            first_speaker(listener).as_deref() == Some(id.as_str())
        })
        .await;
    }
    let before = (
        audio_from(listener, quiet),
        audio_from(listener, &clients[1]),
        audio_from(listener, &clients[2]),
    );
    let video_before = listener.received_from(&quiet_id, "video").unwrap().intact;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = (
        audio_from(listener, quiet),
        audio_from(listener, &clients[1]),
        audio_from(listener, &clients[2]),
    );
    assert_eq!(after.0, before.0, "the quiet one's audio is not forwarded");
    assert!(after.1 > before.1 + 20, "{before:?} → {after:?}");
    assert!(after.2 > before.2 + 20, "{before:?} → {after:?}");
    let video_after = listener.received_from(&quiet_id, "video").unwrap().intact;
    assert!(video_after > video_before + 20, "video is not affected");
    let text = common::http_get(&server, "/metrics").await;
    assert!(
        text.lines()
            .any(|l| l.starts_with("sfu_rtp_packets_dropped_total{reason=\"not_loudest\"}")),
        "dropped audio is counted"
    );
    // Once the quiet one speaks, its audio comes through again.
    turn(clients, quiet);
    eventually(
        Duration::from_secs(2),
        "the fourth one is heard",
        || async { audio_from(listener, quiet) > after.0 + 20 },
    )
    .await;
    server.stop().await;
}
