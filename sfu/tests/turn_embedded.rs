//! The embedded TURN relay: `joined` hands out working TURN REST
//! credentials, and the relay forwards to the SFU's media address only.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{metric, start_server, token};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;
use webrtc_util::Conn;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joined_credentials_relay_to_the_sfu_and_nowhere_else() {
    let server = start_server(8_000).await;
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws", server.http_addr))
        .await
        .unwrap();
    let join = json!({"type": "join", "version": 1, "token": token("t", "alice")});
    ws.send(Message::Text(join.to_string().into()))
        .await
        .unwrap();
    let joined: Value = loop {
        if let Some(Ok(Message::Text(t))) = ws.next().await {
            break serde_json::from_str(&t).unwrap();
        }
    };
    let turn = joined["ice_servers"]
        .as_array()
        .and_then(|s| {
            s.iter().find(|s| {
                s["urls"][0]
                    .as_str()
                    .is_some_and(|u| u.starts_with("turn:"))
            })
        })
        .expect("a TURN server in joined.ice_servers")
        .clone();
    let url = turn["urls"][0].as_str().unwrap();
    assert_eq!(url, format!("turn:{}?transport=udp", server.turn_addrs[0]));
    let username = turn["username"].as_str().unwrap();
    assert!(username.ends_with(":alice"), "REST username {username}");

    let conn = Arc::new(tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let client = turn::client::Client::new(turn::client::ClientConfig {
        stun_serv_addr: server.turn_addrs[0].to_string(),
        turn_serv_addr: server.turn_addrs[0].to_string(),
        username: username.into(),
        password: turn["credential"].as_str().unwrap().into(),
        realm: "sfu.local".into(),
        software: String::new(),
        rto_in_ms: 0,
        conn,
        vnet: None,
    })
    .await
    .unwrap();
    client.listen().await.unwrap();
    let relay = client
        .allocate()
        .await
        .expect("the minted credentials allocate");

    // To the SFU's media socket: allowed, and the SFU receives it.
    let before = metric(&server, "sfu_datagrams_in_total").await;
    for _ in 0..3 {
        relay
            .send_to(b"\x00\x01hello", server.udp_addr)
            .await
            .expect("relay to the SFU");
    }
    common::eventually(
        Duration::from_secs(3),
        "datagrams reach the SFU",
        || async { metric(&server, "sfu_datagrams_in_total").await >= before + 3.0 },
    )
    .await;

    // Anywhere else on loopback: refused (403 on CreatePermission), nothing arrives.
    let other = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let _ = relay.send_to(b"nope", other.local_addr().unwrap()).await;
    let mut buf = [0u8; 64];
    let got = tokio::time::timeout(Duration::from_millis(700), other.recv_from(&mut buf)).await;
    assert!(got.is_err(), "the relay reached a non-SFU address");
    assert!(metric(&server, "turn_denied_peers_total").await >= 1.0);
    client.close().await.unwrap();
    server.stop().await;
}
