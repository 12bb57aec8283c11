//! The thin tokio shell around the engine: one UDP socket, ICE-TCP
//! connections, signaling channels and one timer.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use str0m::net::{Protocol, Transmit};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tracing::debug;
use turn_server::datagram_batch::SendQueue;

use super::engine::{Engine, SessionError, Signal};
use super::ice_tcp;
use crate::auth::Grants;
use crate::room::ConnId;
use crate::signal::protocol::{ClientMessage, ServerMessage};

/// Messages queued per signaling connection; a client that falls this far
/// behind is disconnected rather than slowing the engine. The engine task
/// holds the only sender: dropping it closes the connection after the
/// messages already queued.
pub const SIGNAL_QUEUE: usize = 1024;

/// A WHIP/WHEP result: session id and SDP answer.
pub type SessionReply = oneshot::Sender<Result<(String, String), SessionError>>;

/// Requests from the HTTP, WebSocket and ICE-TCP tasks to the engine task.
#[derive(Debug)]
pub enum Command {
    /// A WebSocket client joined with verified grants.
    Join {
        /// Connection id.
        conn: ConnId,
        /// Verified token grants.
        grants: Grants,
        /// From the join message.
        auto_subscribe: bool,
        /// Where the engine's messages for this connection go.
        outbound: mpsc::Sender<ServerMessage>,
    },
    /// A parsed message from a joined client.
    Client {
        /// Connection id.
        conn: ConnId,
        /// The message.
        msg: ClientMessage,
    },
    /// The WebSocket closed.
    Disconnect {
        /// Connection id.
        conn: ConnId,
    },
    /// WHIP publish.
    Whip {
        /// Verified grants.
        grants: Grants,
        /// SDP offer.
        offer: String,
        /// Answer channel.
        reply: SessionReply,
    },
    /// WHEP view.
    Whep {
        /// Verified grants.
        grants: Grants,
        /// Participant id or identity to view, if any.
        target: Option<String>,
        /// SDP offer.
        offer: String,
        /// Answer channel.
        reply: SessionReply,
    },
    /// DELETE a WHIP/WHEP session.
    EndSession {
        /// Session id.
        session: String,
        /// Whether it existed.
        reply: oneshot::Sender<bool>,
    },
    /// PATCH a WHIP/WHEP session with trickled candidates.
    PatchSession {
        /// Session id.
        session: String,
        /// SDP fragment.
        fragment: String,
        /// Outcome.
        reply: oneshot::Sender<Result<(), SessionError>>,
    },
    /// An ICE-TCP connection opened.
    TcpOpened {
        /// Remote address.
        addr: SocketAddr,
        /// Its writer (frames already RFC 4571-prefixed).
        tx: mpsc::Sender<Vec<u8>>,
    },
    /// An ICE-TCP frame arrived.
    TcpFrame {
        /// Remote address.
        addr: SocketAddr,
        /// Frame contents.
        data: Vec<u8>,
    },
    /// An ICE-TCP connection closed.
    TcpClosed {
        /// Remote address.
        addr: SocketAddr,
    },
    /// Test-only: corrupt forwarded payloads.
    CorruptPayloads(bool),
}

/// Runs the engine until the command channel closes.
pub async fn run(mut engine: Engine, socket: UdpSocket, mut commands: mpsc::Receiver<Command>) {
    let mut conns: HashMap<ConnId, mpsc::Sender<ServerMessage>> = HashMap::new();
    let mut tcp: HashMap<SocketAddr, mpsc::Sender<Vec<u8>>> = HashMap::new();
    let mut out = Outgoing::default();
    let mut buf = vec![0u8; 4096];
    loop {
        flush(&mut engine, &socket, &mut out, &mut conns, &tcp).await;
        let now = Instant::now();
        let deadline = engine
            .poll_timeout()
            .unwrap_or(now + Duration::from_secs(1))
            .min(now + Duration::from_secs(1));
        tokio::select! {
            received = socket.recv_from(&mut buf) => {
                let Ok((n, source)) = received else { continue };
                engine.handle_receive(Instant::now(), Protocol::Udp, source, &buf[..n]);
                // Take what else is queued before flushing, bounded.
                for _ in 0..32 {
                    let Ok((n, source)) = socket.try_recv_from(&mut buf) else { break };
                    engine.handle_receive(Instant::now(), Protocol::Udp, source, &buf[..n]);
                }
            }
            command = commands.recv() => {
                let Some(command) = command else { return };
                handle_command(&mut engine, command, &mut conns, &mut tcp);
            }
            _ = tokio::time::sleep_until(deadline.into()) => {
                engine.handle_timeout(Instant::now());
            }
        }
    }
}

fn handle_command(
    engine: &mut Engine,
    command: Command,
    conns: &mut HashMap<ConnId, mpsc::Sender<ServerMessage>>,
    tcp: &mut HashMap<SocketAddr, mpsc::Sender<Vec<u8>>>,
) {
    let now = Instant::now();
    match command {
        Command::Join {
            conn,
            grants,
            auto_subscribe,
            outbound,
        } => {
            conns.insert(conn, outbound);
            engine.join(conn, grants, auto_subscribe, now);
        }
        Command::Client { conn, msg } => engine.handle_client(conn, msg, now),
        Command::Disconnect { conn } => {
            conns.remove(&conn);
            engine.disconnect(conn, now);
        }
        Command::Whip {
            grants,
            offer,
            reply,
        } => {
            let _ = reply.send(engine.whip(grants, &offer, now));
        }
        Command::Whep {
            grants,
            target,
            offer,
            reply,
        } => {
            let _ = reply.send(engine.whep(grants, target.as_deref(), &offer, now));
        }
        Command::EndSession { session, reply } => {
            let _ = reply.send(engine.end_session(&session, now));
        }
        Command::PatchSession {
            session,
            fragment,
            reply,
        } => {
            let _ = reply.send(engine.patch_session(&session, &fragment, now));
        }
        Command::TcpOpened { addr, tx } => {
            tcp.insert(addr, tx);
        }
        Command::TcpFrame { addr, data } => engine.handle_receive(now, Protocol::Tcp, addr, &data),
        Command::TcpClosed { addr } => {
            tcp.remove(&addr);
        }
        Command::CorruptPayloads(on) => engine.set_corrupt_payloads(on),
    }
}

/// UDP datagrams of one flush, reused from flush to flush.
#[derive(Default)]
struct Outgoing {
    /// In the engine's order.
    transmits: Vec<Transmit>,
    /// Grouped by destination, on their way to the socket.
    queue: SendQueue,
}

/// Times a flush waits for the socket to take more before it drops the
/// rest (UDP semantics) rather than stall the engine.
const MAX_SEND_WAITS: usize = 64;

/// Sends what the engine produced: datagrams, then signaling.
async fn flush(
    engine: &mut Engine,
    socket: &UdpSocket,
    out: &mut Outgoing,
    conns: &mut HashMap<ConnId, mpsc::Sender<ServerMessage>>,
    tcp: &HashMap<SocketAddr, mpsc::Sender<Vec<u8>>>,
) {
    loop {
        while let Some(t) = engine.poll_transmit() {
            match t.proto {
                Protocol::Udp => out.transmits.push(t),
                _ => {
                    let framed = tcp.get(&t.destination).zip(ice_tcp::frame(&t.contents));
                    if let Some((tx, bytes)) = framed {
                        let _ = tx.try_send(bytes);
                    }
                }
            }
        }
        send_datagrams(socket, out).await;
        let Some(signal) = engine.poll_signal() else {
            return;
        };
        match signal {
            Signal::Message(conn, msg) => {
                let Some(tx) = conns.get(&conn) else { continue };
                if tx.try_send(msg).is_err() {
                    // Too slow or gone: drop the connection, not the engine's pace.
                    conns.remove(&conn);
                    engine.disconnect(conn, Instant::now());
                }
            }
            Signal::Close(conn) => {
                conns.remove(&conn);
            }
        }
    }
}

/// Sends the round's UDP datagrams in batches (`sendmmsg`). Grouped by
/// destination first, order kept per destination: a packet forwarded to a
/// hundred subscribers makes a hundred transmits, so a round with several
/// packets of a frame interleaves subscribers; grouped, each subscriber's
/// equal-sized packets leave as one UDP GSO message. Waits while the socket
/// is full, as an awaited `send_to` would, up to [`MAX_SEND_WAITS`] times.
async fn send_datagrams(socket: &UdpSocket, out: &mut Outgoing) {
    if out.transmits.is_empty() {
        return;
    }
    group_by_destination(&mut out.transmits);
    for t in out.transmits.drain(..) {
        out.queue.push(t.destination, &t.contents);
    }
    for _ in 0..MAX_SEND_WAITS {
        // Through tokio, so that a full socket clears its readiness and
        // `writable` waits for room rather than returning at once.
        let sent = socket.try_io(Interest::WRITABLE, || {
            out.queue.send_until_full(socket);
            if out.queue.is_empty() {
                Ok(())
            } else {
                Err(std::io::ErrorKind::WouldBlock.into())
            }
        });
        if sent.is_ok() || socket.writable().await.is_err() {
            break;
        }
    }
    let dropped = out.queue.flush(socket).dropped;
    if dropped > 0 {
        debug!("send buffer full: {dropped} datagrams dropped");
    }
}

/// Puts transmits to the same destination next to each other, each
/// destination's in their original order.
fn group_by_destination(transmits: &mut [Transmit]) {
    // A stable sort: equal keys keep their order.
    transmits.sort_by_key(|t| t.destination);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grouping_keeps_each_destinations_order() {
        let a: SocketAddr = "127.0.0.1:1000".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:2000".parse().unwrap();
        let local: SocketAddr = "127.0.0.1:7882".parse().unwrap();
        let t = |to: SocketAddr, seq: u8| Transmit {
            proto: Protocol::Udp,
            source: local,
            destination: to,
            contents: vec![seq].into(),
        };
        let mut transmits = vec![t(b, 1), t(a, 2), t(b, 3), t(a, 4), t(b, 5)];
        group_by_destination(&mut transmits);
        let order: Vec<(SocketAddr, u8)> = transmits
            .iter()
            .map(|t| (t.destination, t.contents[0]))
            .collect();
        assert_eq!(order, [(a, 2), (a, 4), (b, 1), (b, 3), (b, 5)]);
    }
}
