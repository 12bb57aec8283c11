//! Media paths beyond the basic call: every video codec passes through,
//! ICE-TCP carries a call, keyframe requests reach publishers throttled.

mod common;

use std::time::Duration;

use common::client::{Client, Options};
use common::{eventually, metric, start_server, token};
use str0m::format::Codec;

async fn receives(me: &Client, other: &Client, kind: &str, n: usize) -> bool {
    other
        .id()
        .is_some_and(|id| me.received_from(&id, kind).is_some_and(|r| r.intact > n))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_video_codec_passes_through() {
    let server = start_server(8_000).await;
    for (i, codec) in [Codec::Vp8, Codec::Vp9, Codec::H264, Codec::Av1]
        .into_iter()
        .enumerate()
    {
        let room = format!("codec-{codec}");
        let options = Options {
            video_codec: codec,
            ..Options::default()
        };
        let publisher =
            Client::join_with(&server, &token(&room, "pub"), i as u8 + 1, options).await;
        let viewer = Client::join(&server, &token(&room, "view"), 9, false).await;
        eventually(
            Duration::from_secs(10),
            &format!("{codec} video arrives"),
            || async { receives(&viewer, &publisher, "video", 20).await },
        )
        .await;
        let r = viewer
            .received_from(&publisher.id().unwrap(), "video")
            .unwrap();
        assert_eq!(r.corrupt, 0, "{codec}");
        assert_eq!(r.codec, Some(codec), "{codec} arrives as {codec}");
        publisher.leave().await;
        viewer.leave().await;
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ice_tcp_carries_a_call() {
    let server = start_server(8_000).await;
    let tcp = Options {
        tcp: true,
        ..Options::default()
    };
    let a = Client::join_with(&server, &token("tcp", "a"), 1, tcp.clone()).await;
    let b = Client::join_with(&server, &token("tcp", "b"), 2, tcp).await;
    eventually(
        Duration::from_secs(10),
        "both receive each other over TCP",
        || async { receives(&a, &b, "video", 30).await && receives(&b, &a, "audio", 30).await },
    )
    .await;
    for (me, other) in [(&a, &b), (&b, &a)] {
        let r = me.received_from(&other.id().unwrap(), "video").unwrap();
        assert_eq!(r.corrupt, 0);
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyframe_requests_reach_the_publisher_throttled() {
    let server = start_server(8_000).await;
    let publisher = Client::join(&server, &token("kf", "pub"), 1, true).await;
    let viewer = Client::join(&server, &token("kf", "view"), 2, false).await;
    eventually(Duration::from_secs(10), "video flows", || async {
        receives(&viewer, &publisher, "video", 20).await
    })
    .await;
    let requests = || publisher.state.lock().unwrap().keyframe_requests;
    assert!(
        requests() >= 1,
        "a new subscriber triggers a keyframe request"
    );
    // Past the throttle interval (500 ms), a burst of PLIs reaches the publisher once.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let before = requests();
    viewer.request_keyframes(20).await;
    eventually(
        Duration::from_secs(3),
        "a forwarded keyframe request",
        || async { requests() > before },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        requests(),
        before + 1,
        "20 PLIs within the interval become one request"
    );
    assert!(metric(&server, "sfu_keyframe_requests_total").await >= 2.0);
    server.stop().await;
}
