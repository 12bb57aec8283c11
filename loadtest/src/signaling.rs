//! The participants' WebSockets. Signaling is a few messages per participant,
//! so it runs as small async tasks on one tokio thread; each forwards what it
//! reads to the participant's worker (waking its poll) and writes what the
//! worker queues. Media never passes through here.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use tokio_tungstenite::tungstenite::Message;

use crate::inbox::{Inbound, Inbox, WorkerMsg};

/// Opens the WebSocket for participant `slot` on `runtime`, sends `join`
/// first, and returns the sender the worker writes through.
pub fn spawn(
    runtime: &tokio::runtime::Handle,
    url: String,
    join: String,
    slot: usize,
    inbox: Inbox,
) -> UnboundedSender<String> {
    let (tx, rx) = unbounded_channel();
    runtime.spawn(run(url, join, slot, rx, inbox));
    tx
}

async fn run(
    url: String,
    join: String,
    slot: usize,
    mut out: UnboundedReceiver<String>,
    inbox: Inbox,
) {
    let connect = tokio::time::timeout(
        Duration::from_secs(10),
        tokio_tungstenite::connect_async_with_config(
            url,
            // tungstenite zeroes its whole read buffer (128 KiB by default)
            // before every read; signaling messages are small.
            Some(
                tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
                    .read_buffer_size(8 * 1024),
            ),
            false,
        ),
    );
    let mut ws = match connect.await {
        Ok(Ok((ws, _))) => ws,
        Ok(Err(e)) => {
            return inbox.deliver(WorkerMsg::Signal(Inbound::Closed(
                slot,
                format!("connect: {e}"),
            )))
        }
        Err(_) => {
            return inbox.deliver(WorkerMsg::Signal(Inbound::Closed(
                slot,
                "connect timed out".into(),
            )))
        }
    };
    if ws.send(Message::Text(join.into())).await.is_err() {
        return inbox.deliver(WorkerMsg::Signal(Inbound::Closed(
            slot,
            "send join failed".into(),
        )));
    }
    loop {
        tokio::select! {
            m = ws.next() => match m {
                Some(Ok(Message::Text(t))) => inbox.deliver(WorkerMsg::Signal(Inbound::Text(slot, t.to_string()))),
                Some(Ok(Message::Close(_))) | None => {
                    return inbox.deliver(WorkerMsg::Signal(Inbound::Closed(slot, "server closed the WebSocket".into())));
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return inbox.deliver(WorkerMsg::Signal(Inbound::Closed(slot, format!("websocket: {e}")))),
            },
            o = out.recv() => match o {
                Some(text) => {
                    if ws.send(Message::Text(text.into())).await.is_err() {
                        return inbox.deliver(WorkerMsg::Signal(Inbound::Closed(slot, "websocket send failed".into())));
                    }
                }
                None => {
                    let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(None)).await;
                    return;
                }
            },
        }
    }
}
