//! A worker's inbox: what the runner and the signaling tasks send a worker
//! thread, and the waker of its poll. Shared by the worker (which reads it)
//! and the signaling tasks (which write it), so neither depends on the other.

use std::sync::mpsc::Sender;
use std::sync::Arc;

use crate::participant::ParticipantSpec;

/// What a signaling task tells its worker.
#[derive(Debug)]
pub enum Inbound {
    /// A text message for participant `.0`.
    Text(usize, String),
    /// The WebSocket of participant `.0` closed or failed.
    Closed(usize, String),
}

/// Messages to a worker.
#[derive(Debug)]
pub enum WorkerMsg {
    /// Start a participant.
    Add(Box<ParticipantSpec>),
    /// From a signaling task.
    Signal(Inbound),
    /// Stop: every participant leaves; the thread returns its totals.
    Stop,
}

/// A worker's inbox: a channel plus the waker of its poll.
#[derive(Clone)]
pub struct Inbox {
    /// The channel.
    pub tx: Sender<WorkerMsg>,
    /// Wakes the worker's poll.
    pub waker: Arc<mio::Waker>,
}

impl Inbox {
    /// Delivers a message and wakes the worker.
    pub fn deliver(&self, msg: WorkerMsg) {
        if self.tx.send(msg).is_ok() {
            let _ = self.waker.wake();
        }
    }
}
