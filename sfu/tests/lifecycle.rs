//! Leaving: silent peers are removed within the timeout, a second session
//! with the same identity replaces the first, a closed socket leaves.

mod common;

use std::time::{Duration, Instant};

use common::client::Client;
use common::{eventually, metric, start_server, token};

fn left(c: &Client, id: &str) -> bool {
    c.state
        .lock()
        .unwrap()
        .of_type("participant_left")
        .iter()
        .any(|m| m["participant_id"] == id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_participant_is_removed_within_the_timeout() {
    let timeout = Duration::from_millis(2_000);
    let server = start_server(timeout.as_millis() as u64).await;
    let a = Client::join(&server, &token("r", "a"), 1, true).await;
    let b = Client::join(&server, &token("r", "b"), 2, true).await;
    eventually(Duration::from_secs(10), "a receives b", || async {
        b.id()
            .is_some_and(|id| a.received_from(&id, "audio").is_some_and(|r| r.intact > 5))
    })
    .await;
    let bid = b.id().unwrap();
    b.freeze().await;
    let frozen_at = Instant::now();
    eventually(timeout * 3, "b removed", || async { left(&a, &bid) }).await;
    let took = frozen_at.elapsed();
    assert!(
        took <= timeout + Duration::from_millis(1_500),
        "removal took {took:?}"
    );
    eventually(
        Duration::from_secs(2),
        "b told and disconnected",
        || async { b.finished() },
    )
    .await;
    assert!(b
        .state
        .lock()
        .unwrap()
        .error_codes()
        .contains(&"media_timeout".to_string()));
    assert_eq!(metric(&server, "sfu_participants").await, 1.0);
    assert_eq!(metric(&server, "sfu_tracks").await, 2.0);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_identity_replaces_and_closed_socket_leaves() {
    let server = start_server(8_000).await;
    let a = Client::join(&server, &token("r", "a"), 1, true).await;
    let b1 = Client::join(&server, &token("r", "b"), 2, true).await;
    eventually(Duration::from_secs(10), "b1 publishing", || async {
        b1.id()
            .is_some_and(|id| a.received_from(&id, "video").is_some_and(|r| r.intact > 5))
    })
    .await;
    let b1_id = b1.id().unwrap();

    let b2 = Client::join(&server, &token("r", "b"), 3, true).await;
    eventually(Duration::from_secs(10), "b2 replaces b1", || async {
        b1.finished()
            && left(&a, &b1_id)
            && b2
                .id()
                .is_some_and(|id| a.received_from(&id, "video").is_some_and(|r| r.intact > 5))
    })
    .await;
    assert!(b1
        .state
        .lock()
        .unwrap()
        .error_codes()
        .contains(&"replaced".to_string()));
    assert_eq!(metric(&server, "sfu_participants").await, 2.0);

    // Dropping the WebSocket without a leave message also leaves.
    let b2_id = b2.id().unwrap();
    b2.abort();
    eventually(Duration::from_secs(5), "b2 gone", || async {
        left(&a, &b2_id)
    })
    .await;
    assert_eq!(metric(&server, "sfu_participants").await, 1.0);
    // a's own publish and subscribe connections remain.
    assert_eq!(metric(&server, "sfu_peer_connections").await, 2.0);
    server.stop().await;
}
