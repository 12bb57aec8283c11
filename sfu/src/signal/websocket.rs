//! One WebSocket signaling connection: size and rate limits, parsing, token
//! checks before `join`, then a pipe to and from the engine.

use std::time::Instant;

use axum::extract::ws::{Message, WebSocket};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tracing::debug;

use super::protocol::{
    parse_client_message, ClientMessage, ErrorCode, ServerMessage, PROTOCOL_VERSION,
};
use super::rate_limit::RateLimit;
use crate::app_state::AppState;
use crate::auth::TokenError;
use crate::media::command::{Command, SIGNAL_QUEUE};
use crate::media::placement::ShardId;

/// Interval of WebSocket pings.
const KEEPALIVE: std::time::Duration = std::time::Duration::from_secs(15);

/// Serves one connection until either side closes it.
pub async fn serve(socket: WebSocket, state: AppState) {
    let conn = state.next_conn();
    let (mut ws_tx, mut ws_rx) = socket.split();
    // The sender moves to the engine on join; until then it is held here so
    // `out_rx` stays open.
    let (out_tx, mut out_rx) = mpsc::channel::<ServerMessage>(SIGNAL_QUEUE);
    let mut out_tx = Some(out_tx);
    let limits = &state.config.signaling;
    let mut rate = RateLimit::new(limits.messages_per_second, limits.burst, Instant::now());
    // The shard that took the join gets everything after it.
    let mut joined: Option<ShardId> = None;
    // Keep-alive: a ping every interval; silence for three intervals ends it.
    let mut keepalive = tokio::time::interval(KEEPALIVE);
    let mut last_heard = Instant::now();

    // Sends a message on the socket; false when the socket is gone or the
    // client has stopped reading.
    async fn send(
        ws_tx: &mut futures_util::stream::SplitSink<WebSocket, Message>,
        msg: &ServerMessage,
    ) -> bool {
        let Ok(text) = serde_json::to_string(msg) else {
            return true;
        };
        let sending = ws_tx.send(Message::Text(text.into()));
        matches!(tokio::time::timeout(KEEPALIVE, sending).await, Ok(Ok(())))
    }

    loop {
        tokio::select! {
            _ = keepalive.tick() => {
                if last_heard.elapsed() > 3 * KEEPALIVE { break }
                let ping = ws_tx.send(Message::Ping(Default::default()));
                if !matches!(tokio::time::timeout(KEEPALIVE, ping).await, Ok(Ok(()))) { break }
            }
            incoming = ws_rx.next() => {
                let now = Instant::now();
                last_heard = now;
                let text = match incoming {
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(Message::Binary(_))) => Default::default(),
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                };
                let error = if !rate.allow(now) {
                    Some(reject(&state, ErrorCode::RateLimited,
                        format!("more than {} messages per second; message dropped", limits.messages_per_second)))
                } else if text.is_empty() {
                    Some(reject(&state, ErrorCode::BadJson, "empty or binary frame; send JSON text"))
                } else if text.len() > limits.max_message_bytes {
                    Some(reject(&state, ErrorCode::MessageTooLarge,
                        format!("message of {} bytes exceeds {}", text.len(), limits.max_message_bytes)))
                } else {
                    match parse_client_message(&text) {
                        Err((code, message)) => Some(reject(&state, code, message)),
                        Ok(msg) if joined.is_some() => {
                            let Some(shard) = joined else { break };
                            if state.shards.send(shard, Command::Client { conn, msg }).await.is_err() { break }
                            None
                        }
                        Ok(ClientMessage::Join { version, token, auto_subscribe }) => {
                            match (admit(&state, version, &token), out_tx.take()) {
                                (Ok(grants), Some(outbound)) => {
                                    let room = grants.room.clone();
                                    let cmd = Command::Join {
                                        conn,
                                        grants,
                                        auto_subscribe: auto_subscribe.unwrap_or(true),
                                        outbound,
                                    };
                                    match state.shards.send_for_room(&room, cmd).await {
                                        Ok(shard) => joined = Some(shard),
                                        Err(_) => break,
                                    }
                                    None
                                }
                                (Err((code, message)), tx) => {
                                    out_tx = tx;
                                    Some(reject(&state, code, message))
                                }
                                (Ok(_), None) => None,
                            }
                        }
                        Ok(_) => Some(reject(&state, ErrorCode::NotJoined, "send join first")),
                    }
                };
                if let Some(error) = error {
                    let fatal = matches!(&error, ServerMessage::Error { code, .. } if code.is_fatal());
                    if !send(&mut ws_tx, &error).await || fatal { break }
                }
            }
            outgoing = out_rx.recv() => match outgoing {
                Some(msg) => if !send(&mut ws_tx, &msg).await { break },
                None => break,
            },
        }
    }
    debug!(conn, "signaling connection closed");
    let _ = ws_tx.close().await;
    if let Some(shard) = joined {
        let _ = state.shards.send(shard, Command::Disconnect { conn }).await;
    }
}

/// Checks version and token of a `join`.
fn admit(
    state: &AppState,
    version: u32,
    token: &str,
) -> Result<crate::auth::Grants, (ErrorCode, String)> {
    if version != PROTOCOL_VERSION {
        return Err((
            ErrorCode::UnsupportedVersion,
            format!("protocol version {version} is not supported; this server speaks {PROTOCOL_VERSION}"),
        ));
    }
    state.auth.verify(token).map_err(|e| {
        let code = match e {
            TokenError::Expired => ErrorCode::TokenExpired,
            _ => ErrorCode::BadToken,
        };
        (code, e.to_string())
    })
}

fn reject(state: &AppState, code: ErrorCode, message: impl Into<String>) -> ServerMessage {
    state
        .metrics
        .signaling_errors
        .with_label_values(&[code.as_str()])
        .inc();
    ServerMessage::error(code, message)
}
