//! ICE-TCP: RFC 4571 framing (a 16-bit length before each packet) over TCP
//! connections, for clients whose UDP is blocked.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tracing::debug;

use super::command::Command;

/// Largest frame accepted or sent (RFC 4571 allows 65535).
pub const MAX_FRAME: usize = u16::MAX as usize;

/// Frames queued per connection before new ones are dropped.
const QUEUE: usize = 256;

/// Prefixes `packet` with its RFC 4571 length; `None` if too large.
pub fn frame(packet: &[u8]) -> Option<Vec<u8>> {
    let len = u16::try_from(packet.len()).ok()?;
    let mut out = Vec::with_capacity(2 + packet.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(packet);
    Some(out)
}

/// Splits complete frames off the front of `buf`, leaving a partial tail.
pub fn deframe(buf: &mut Vec<u8>) -> Vec<Vec<u8>> {
    let mut frames = Vec::new();
    let mut at = 0;
    while buf.len() - at >= 2 {
        let len = usize::from(u16::from_be_bytes([buf[at], buf[at + 1]]));
        if buf.len() - at - 2 < len {
            break;
        }
        frames.push(buf[at + 2..at + 2 + len].to_vec());
        at += 2 + len;
    }
    buf.drain(..at);
    frames
}

/// Accepts ICE-TCP connections and feeds their frames to the engine.
pub async fn accept_loop(listener: TcpListener, commands: mpsc::Sender<Command>) {
    loop {
        let Ok((stream, addr)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(connection(stream, addr, commands.clone()));
    }
}

async fn connection(stream: TcpStream, addr: SocketAddr, commands: mpsc::Sender<Command>) {
    let (mut reader, mut writer) = stream.into_split();
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(QUEUE);
    if commands
        .send(Command::TcpOpened { addr, tx })
        .await
        .is_err()
    {
        return;
    }
    let writing = tokio::spawn(async move {
        while let Some(bytes) = rx.recv().await {
            if writer.write_all(&bytes).await.is_err() {
                break;
            }
        }
    });
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        match reader.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                for data in deframe(&mut buf) {
                    if commands
                        .send(Command::TcpFrame { addr, data })
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
                // A partial frame can never exceed one maximal frame.
                if buf.len() > MAX_FRAME + 2 {
                    break;
                }
            }
        }
    }
    debug!(%addr, "ICE-TCP connection closed");
    writing.abort();
    let _ = commands.send(Command::TcpClosed { addr }).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn frames_round_trip_across_splits() {
        let mut wire = Vec::new();
        for p in [&b"abc"[..], b"", &[7u8; 1500]] {
            wire.extend(frame(p).unwrap());
        }
        let mut buf = Vec::new();
        let mut got = Vec::new();
        for piece in wire.chunks(7) {
            buf.extend_from_slice(piece);
            got.extend(deframe(&mut buf));
        }
        assert_eq!(got, vec![b"abc".to_vec(), Vec::new(), vec![7u8; 1500]]);
        assert!(buf.is_empty());
        assert!(frame(&vec![0; MAX_FRAME + 1]).is_none());
    }

    proptest! {
        #[test]
        fn deframe_never_panics_and_keeps_only_a_partial_tail(
            data in proptest::collection::vec(any::<u8>(), 0..300)
        ) {
            let mut buf = data.clone();
            let frames = deframe(&mut buf);
            let consumed: usize = frames.iter().map(|f| f.len() + 2).sum();
            prop_assert_eq!(consumed + buf.len(), data.len());
            if buf.len() >= 2 {
                let len = usize::from(u16::from_be_bytes([buf[0], buf[1]]));
                prop_assert!(buf.len() - 2 < len);
            }
        }
    }
}
