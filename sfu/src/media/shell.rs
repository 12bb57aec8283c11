//! The thin tokio shell around one shard's engine: its UDP socket, its
//! ICE-TCP connections, signaling channels and one timer.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use platform::datagram_batch::{RecvBatch, SendQueue, BATCH};
use str0m::net::{Protocol, Transmit};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tracing::debug;

use super::command::Command;
use super::engine::{Engine, Signal, TrunkOut};
use super::ice_tcp;
use super::placement::{Placement, ShardId};
use crate::room::ConnId;
use crate::signal::protocol::ServerMessage;

/// A shard's place among the others: its index, the shared room table and,
/// in a cluster, the way to the other nodes.
#[derive(Debug, Clone)]
pub struct ShardContext {
    /// This shard.
    pub id: ShardId,
    /// The room → shard table this shard reports to.
    pub placement: Arc<Placement>,
    /// Media and control for other nodes (`cluster/mesh.rs`), when
    /// `[cluster]` is configured.
    pub trunk: Option<mpsc::Sender<TrunkOut>>,
}

/// Datagram batches read per wake-up before the loop flushes (each batch is
/// up to [`BATCH`] datagrams): bounded, so commands and timers keep their turn.
const RECV_BATCHES: usize = 4;

/// Runs one shard's engine until `stop` fires or the command channel closes.
pub async fn run(
    mut engine: Engine,
    socket: UdpSocket,
    mut commands: mpsc::Receiver<Command>,
    mut stop: oneshot::Receiver<()>,
    shard: ShardContext,
) {
    let mut conns: HashMap<ConnId, mpsc::Sender<ServerMessage>> = HashMap::new();
    let mut tcp: HashMap<SocketAddr, mpsc::Sender<Vec<u8>>> = HashMap::new();
    let mut out = Outgoing::default();
    let mut batch = RecvBatch::new();
    loop {
        flush(&mut engine, &socket, &mut out, &mut conns, &tcp, &shard).await;
        let now = Instant::now();
        let deadline = engine
            .poll_timeout()
            .unwrap_or(now + Duration::from_secs(1))
            .min(now + Duration::from_secs(1));
        tokio::select! {
            ready = socket.readable() => {
                if ready.is_err() {
                    continue;
                }
                // recvmmsg until the socket is empty or the bound is reached.
                for _ in 0..RECV_BATCHES {
                    let Ok(n) = socket.try_io(Interest::READABLE, || batch.recv(&socket)) else {
                        break;
                    };
                    let now = Instant::now();
                    for (data, source) in (0..n).filter_map(|i| batch.get(i)) {
                        engine.handle_receive(now, Protocol::Udp, source, data);
                    }
                    if n < BATCH {
                        break;
                    }
                }
            }
            command = commands.recv() => {
                let Some(command) = command else { return };
                handle_command(&mut engine, command, &mut conns, &mut tcp, &shard);
            }
            _ = tokio::time::sleep_until(deadline.into()) => {
                engine.handle_timeout(Instant::now());
            }
            _ = &mut stop => return,
        }
    }
}

fn handle_command(
    engine: &mut Engine,
    command: Command,
    conns: &mut HashMap<ConnId, mpsc::Sender<ServerMessage>>,
    tcp: &mut HashMap<SocketAddr, mpsc::Sender<Vec<u8>>>,
    shard: &ShardContext,
) {
    let now = Instant::now();
    // Requests the edge routed by room (`Placement::route`) are reported
    // back once handled, so the table knows whether the room still lives here.
    let routed = match &command {
        Command::Join { grants, .. }
        | Command::Whip { grants, .. }
        | Command::Whep { grants, .. } => Some(grants.room.clone()),
        _ => None,
    };
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
        Command::TrunkMedia { node, datagram } => engine.handle_trunk_media(node, &datagram, now),
        Command::TrunkControl { node, message } => engine.handle_trunk_control(node, message, now),
        Command::NodeDown { node } => engine.node_down(node, now),
        Command::CorruptPayloads(on) => engine.set_corrupt_payloads(on),
    }
    if let Some(room) = routed {
        shard
            .placement
            .handled(&room, shard.id, engine.has_room(&room));
    }
    shard
        .placement
        .report_participants(shard.id, engine.participants());
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
    shard: &ShardContext,
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
        while let Some(out) = engine.poll_trunk() {
            let Some(trunk) = &shard.trunk else { continue };
            match out {
                // Media the cluster cannot take now is lost, as on UDP.
                TrunkOut::Media { .. } => {
                    let _ = trunk.try_send(out);
                }
                TrunkOut::Control { .. } => {
                    let _ = trunk.send(out).await;
                }
            }
        }
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
            Signal::RoomClosed(room) => shard.placement.closed(&room, shard.id),
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
