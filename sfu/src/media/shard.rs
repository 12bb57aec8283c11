//! A shard: one engine on its own thread with its own sockets.
//!
//! Each shard is an OS thread running a single-threaded tokio runtime that
//! owns one [`Engine`], one UDP socket and one ICE-TCP listener. Nothing on
//! the packet path is shared with other shards: a shard's peers announce
//! only its own addresses as candidates, so their datagrams and TCP
//! connections arrive at its sockets and nowhere else (per-shard ports, as
//! mediasoup gives each worker its own port range). The edge reaches a shard
//! through its command channel ([`super::shards::Shards`]).

use std::net::SocketAddr;
use std::thread::JoinHandle;

use anyhow::Context;
use tokio::sync::{mpsc, oneshot};
use tracing::warn;

use super::command::Command;
use super::engine::Engine;
use super::ice_tcp;
use super::shell::{self, ShardContext};

/// Commands queued per shard before senders wait.
const COMMAND_QUEUE: usize = 4096;

/// A shard's sockets, bound by the caller so bind errors surface at start.
pub struct ShardSockets {
    /// Media UDP.
    pub udp: std::net::UdpSocket,
    /// ICE-TCP, if enabled.
    pub tcp: Option<std::net::TcpListener>,
}

/// A running shard.
pub struct Shard {
    /// Its command channel.
    pub commands: mpsc::Sender<Command>,
    /// Bound UDP address.
    pub udp_addr: SocketAddr,
    /// Bound ICE-TCP address.
    pub tcp_addr: Option<SocketAddr>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Shard {
    /// Starts `engine` on a new thread serving `sockets`.
    pub fn spawn(
        engine: Engine,
        sockets: ShardSockets,
        context: ShardContext,
    ) -> anyhow::Result<Shard> {
        let udp_addr = sockets.udp.local_addr()?;
        let tcp_addr = sockets.tcp.as_ref().map(|l| l.local_addr()).transpose()?;
        sockets.udp.set_nonblocking(true)?;
        if let Some(l) = &sockets.tcp {
            l.set_nonblocking(true)?;
        }
        let (commands, command_rx) = mpsc::channel(COMMAND_QUEUE);
        let (stop, stop_rx) = oneshot::channel();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("shard runtime")?;
        let own = commands.clone();
        let id = context.id;
        let thread = std::thread::Builder::new()
            .name(format!("sfu-shard-{id}"))
            .spawn(move || {
                runtime.block_on(async move {
                    // Registered with this thread's reactor, so they must be
                    // converted here rather than by the caller.
                    let udp = match tokio::net::UdpSocket::from_std(sockets.udp) {
                        Ok(s) => s,
                        Err(e) => return warn!(shard = id, "media socket: {e}"),
                    };
                    let tcp = sockets
                        .tcp
                        .map(tokio::net::TcpListener::from_std)
                        .transpose();
                    match tcp {
                        Ok(Some(l)) => {
                            tokio::spawn(ice_tcp::accept_loop(l, own));
                        }
                        Ok(None) => drop(own),
                        Err(e) => return warn!(shard = id, "ICE-TCP listener: {e}"),
                    }
                    shell::run(engine, udp, command_rx, stop_rx, context).await;
                });
            })
            .context("shard thread")?;
        Ok(Shard {
            commands,
            udp_addr,
            tcp_addr,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Stops the shard and waits for its thread (its connections close).
    pub fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Shard {
    fn drop(&mut self) {
        self.stop();
    }
}
