//! What the edge (HTTP, WebSocket and ICE-TCP tasks) asks of a shard.

use std::net::SocketAddr;

use tokio::sync::{mpsc, oneshot};

use super::engine::SessionError;
use super::ids::NodeKey;
use crate::auth::Grants;
use crate::cluster::trunk::wire::{Control, MediaDatagram};
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
    /// A media datagram from another node (for a track of this shard's room).
    TrunkMedia {
        /// The node.
        node: NodeKey,
        /// The datagram.
        datagram: MediaDatagram,
    },
    /// A control message from another node about this shard's room or track.
    TrunkControl {
        /// The node.
        node: NodeKey,
        /// The message.
        message: Control,
    },
    /// Another node is gone.
    NodeDown {
        /// The node.
        node: NodeKey,
    },
    /// Test-only: corrupt forwarded payloads.
    CorruptPayloads(bool),
}
