//! How the edge (HTTP handlers, WebSocket tasks) reaches the shards.
//!
//! - A request that may create a participant (join, WHIP, WHEP) goes to the
//!   shard holding its room, placed on first use ([`Placement`]).
//! - Everything a joined WebSocket sends afterwards goes to the shard that
//!   took its join (the connection remembers the [`ShardId`]).
//! - `/sessions/{id}` requests go to the shard named by the session id's
//!   prefix (`{shard}-{random}`), so no table is needed for them.

use std::sync::Arc;

use tokio::sync::mpsc;

use super::command::Command;
use super::placement::{Placement, ShardId};

/// The shard is gone (the server is stopping).
#[derive(Debug, thiserror::Error)]
#[error("media engine unavailable")]
pub struct Unavailable;

/// Command channels of every shard plus the room table.
#[derive(Debug, Clone)]
pub struct Shards {
    senders: Vec<mpsc::Sender<Command>>,
    placement: Arc<Placement>,
}

impl Shards {
    /// Routes to `senders[i]` for shard `i`.
    pub fn new(senders: Vec<mpsc::Sender<Command>>, placement: Arc<Placement>) -> Self {
        Self { senders, placement }
    }

    /// Sends a join/WHIP/WHEP `command` for `room` to the room's shard.
    pub async fn send_for_room(
        &self,
        room: &str,
        command: Command,
    ) -> Result<ShardId, Unavailable> {
        let shard = self.placement.route(room);
        let sent = self.send(shard, command).await;
        if sent.is_err() {
            self.placement.handled(room, shard, false);
        }
        sent.map(|()| shard)
    }

    /// Sends `command` to `shard`.
    pub async fn send(&self, shard: ShardId, command: Command) -> Result<(), Unavailable> {
        let tx = self.senders.get(shard).ok_or(Unavailable)?;
        tx.send(command).await.map_err(|_| Unavailable)
    }

    /// Sends `command` to `shard` unless its queue is full (media from
    /// another node: lost rather than waited for, as on UDP).
    pub fn try_send(&self, shard: ShardId, command: Command) -> bool {
        self.senders
            .get(shard)
            .is_some_and(|tx| tx.try_send(command).is_ok())
    }

    /// The shard a WHIP/WHEP session id belongs to, if it names one.
    pub fn session_shard(&self, session: &str) -> Option<ShardId> {
        let (prefix, _) = session.split_once('-')?;
        let shard: ShardId = prefix.parse().ok()?;
        (shard < self.senders.len()).then_some(shard)
    }

    /// Sends a copy of a command to every shard.
    pub async fn broadcast(&self, command: impl Fn() -> Command) {
        for tx in &self.senders {
            let _ = tx.send(command()).await;
        }
    }

    /// The room table.
    pub fn placement(&self) -> &Placement {
        &self.placement
    }

    /// The room table, shared.
    pub fn placement_arc(&self) -> Arc<Placement> {
        self.placement.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ids_name_their_shard() {
        let senders = (0..3).map(|_| mpsc::channel(1).0).collect();
        let shards = Shards::new(senders, Arc::new(Placement::new(3)));
        assert_eq!(shards.session_shard("2-AbC"), Some(2));
        assert_eq!(shards.session_shard("0-x-y"), Some(0));
        for bad in [
            "3-AbC",
            "AbC",
            "-1-x",
            "x-y",
            "",
            "99999999999999999999999-x",
        ] {
            assert_eq!(shards.session_shard(bad), None, "{bad}");
        }
    }
}
