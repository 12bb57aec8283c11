//! The registry's Redis key layout and its sans-IO decisions (names,
//! encoding, expiry). Everything the registry stores is here:
//!
//! | Key | Type | Content | Expiry |
//! |---|---|---|---|
//! | `sfu:node:{id}` | string | [`NodeRecord`] as JSON | `PX` lease, rewritten at every renewal |
//! | `sfu:nodes` | sorted set | member node id, score = lease end (Redis clock, ms) | members past their score are ignored and pruned; key `PEXPIRE` lease |
//! | `sfu:room:{room}` | sorted set | member node id, score = lease end (Redis clock, ms) | as `sfu:nodes` |
//!
//! Lease ends use the Redis server's clock (`TIME`), so nodes' clocks need
//! not agree. A node is live while its `sfu:node:{id}` key exists and its
//! `sfu:nodes` score is in the future; it holds a room while its score in
//! `sfu:room:{room}` is in the future.

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Every key starts with this.
pub const PREFIX: &str = "sfu:";

/// The sorted set of registered nodes.
pub fn nodes_key() -> String {
    format!("{PREFIX}nodes")
}

/// A node's record.
pub fn node_key(node_id: &str) -> String {
    format!("{PREFIX}node:{node_id}")
}

/// The sorted set of nodes holding participants of `room`.
pub fn room_key(room: &str) -> String {
    format!("{PREFIX}room:{room}")
}

/// What a node publishes about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// The node id (`cluster.node_id`).
    pub id: String,
    /// Where other nodes dial its trunk (QUIC, UDP).
    pub trunk: SocketAddr,
    /// Its HTTP address (signaling, WHIP/WHEP).
    pub http: SocketAddr,
    /// Its media UDP addresses as announced to clients, one per shard.
    pub media: Vec<SocketAddr>,
    /// Participants on the node at the last renewal.
    pub participants: u64,
    /// Rooms with participants on the node at the last renewal.
    pub rooms: u64,
}

impl NodeRecord {
    /// The JSON stored under [`node_key`].
    pub fn encode(&self) -> String {
        // A struct of strings, numbers and addresses always serializes.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Parses a stored record; `None` for anything else (a record written
    /// by an incompatible version is skipped, not fatal).
    pub fn decode(text: &str) -> Option<NodeRecord> {
        serde_json::from_str(text).ok()
    }
}

/// Milliseconds on the Redis clock from a `TIME` reply (seconds, microseconds).
pub fn redis_now_ms(seconds: u64, micros: u64) -> u64 {
    seconds.saturating_mul(1000).saturating_add(micros / 1000)
}

/// The score (lease end) written at `now_ms` for a lease of `lease`.
pub fn lease_end_ms(now_ms: u64, lease: Duration) -> u64 {
    now_ms.saturating_add(u64::try_from(lease.as_millis()).unwrap_or(u64::MAX))
}

/// Whether a member with this score is still live at `now_ms`.
pub fn is_live(score_ms: u64, now_ms: u64) -> bool {
    score_ms > now_ms
}

/// How often a lease is renewed: a third of it, so two renewals may fail
/// (or be late) before it lapses.
pub fn renew_every(lease: Duration) -> Duration {
    lease / 3
}

/// The wait before reconnect attempt `attempt` (0-based) to Redis:
/// 100 ms doubling to a cap of a third of the lease (at most 2 s), so a
/// node is back within its lease once Redis is.
pub fn reconnect_backoff(attempt: u32, lease: Duration) -> Duration {
    let cap = renew_every(lease).min(Duration::from_secs(2));
    Duration::from_millis(100)
        .saturating_mul(1u32 << attempt.min(10))
        .min(cap)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_names_are_as_documented() {
        assert_eq!(nodes_key(), "sfu:nodes");
        assert_eq!(node_key("a-1"), "sfu:node:a-1");
        assert_eq!(room_key("stand up:1"), "sfu:room:stand up:1");
    }

    #[test]
    fn records_round_trip_and_junk_is_skipped() {
        let r = NodeRecord {
            id: "a".into(),
            trunk: "127.0.0.1:7890".parse().unwrap(),
            http: "127.0.0.1:7880".parse().unwrap(),
            media: vec!["127.0.0.1:7882".parse().unwrap()],
            participants: 3,
            rooms: 1,
        };
        assert_eq!(NodeRecord::decode(&r.encode()), Some(r));
        assert_eq!(NodeRecord::decode("{\"id\":1}"), None);
    }

    #[test]
    fn expiry_decisions() {
        let now = redis_now_ms(1_700_000_000, 123_456);
        assert_eq!(now, 1_700_000_000_123);
        let end = lease_end_ms(now, Duration::from_secs(5));
        assert!(is_live(end, now + 4_999));
        assert!(!is_live(end, now + 5_000));
        assert_eq!(renew_every(Duration::from_secs(3)), Duration::from_secs(1));
    }

    #[test]
    fn backoff_is_bounded() {
        let lease = Duration::from_secs(5);
        assert_eq!(reconnect_backoff(0, lease), Duration::from_millis(100));
        assert_eq!(reconnect_backoff(2, lease), Duration::from_millis(400));
        assert_eq!(reconnect_backoff(40, lease), lease / 3);
        assert_eq!(
            reconnect_backoff(40, Duration::from_secs(10)),
            Duration::from_secs(2)
        );
    }
}
