//! Which shard holds which room.
//!
//! A room lives on exactly one shard, chosen when the room is created: the
//! shard with the fewest participants (then the fewest rooms), so a new room
//! goes where there is most room to grow. Hashing room names would need no
//! table, but with a handful of rooms it often puts two busy rooms on one core
//! while the other idles.
//!
//! The table is consulted only when a participant or session is created
//! (join, WHIP, WHEP); media, client messages and everything after a join go
//! to the shard directly. An entry is removed once its room is gone from the
//! shard *and* no request routed to it is still on its way there: a join that
//! is in a shard's queue while the room's last participant leaves must land
//! in the same room, not start a second one elsewhere.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// Index of a shard (an engine thread), `0..workers`.
pub type ShardId = usize;

/// The room → shard table; see the module docs.
#[derive(Debug)]
pub struct Placement {
    rooms: Mutex<HashMap<String, Entry>>,
    /// Participants per shard, as each shard last reported.
    participants: Vec<AtomicUsize>,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    shard: ShardId,
    /// Requests routed to the shard for this room and not yet handled.
    in_flight: usize,
}

impl Placement {
    /// A table for `shards` shards (at least one).
    pub fn new(shards: usize) -> Self {
        Self {
            rooms: Mutex::new(HashMap::new()),
            participants: (0..shards.max(1)).map(|_| AtomicUsize::new(0)).collect(),
        }
    }

    /// Number of shards.
    pub fn shards(&self) -> usize {
        self.participants.len()
    }

    /// The shard for a request that may create a participant in `room`,
    /// placing the room if it is new. Every call must be matched by one
    /// [`Placement::handled`] on that shard.
    pub fn route(&self, room: &str) -> ShardId {
        let mut rooms = self.lock();
        if let Some(entry) = rooms.get_mut(room) {
            entry.in_flight += 1;
            return entry.shard;
        }
        let shard = self.least_loaded(&rooms);
        rooms.insert(
            room.to_string(),
            Entry {
                shard,
                in_flight: 1,
            },
        );
        shard
    }

    /// A request routed with [`Placement::route`] was handled; `alive` says
    /// whether the shard still holds the room.
    pub fn handled(&self, room: &str, shard: ShardId, alive: bool) {
        let mut rooms = self.lock();
        if let Some(entry) = rooms.get_mut(room).filter(|e| e.shard == shard) {
            entry.in_flight = entry.in_flight.saturating_sub(1);
            if !alive && entry.in_flight == 0 {
                rooms.remove(room);
            }
        }
    }

    /// The shard no longer holds `room` (its last participant left).
    pub fn closed(&self, room: &str, shard: ShardId) {
        let mut rooms = self.lock();
        if rooms
            .get(room)
            .is_some_and(|e| e.shard == shard && e.in_flight == 0)
        {
            rooms.remove(room);
        }
    }

    /// A shard's participant count, for choosing where new rooms go.
    pub fn report_participants(&self, shard: ShardId, participants: usize) {
        if let Some(p) = self.participants.get(shard) {
            p.store(participants, Ordering::Relaxed);
        }
    }

    /// The rooms placed on this node's shards (a room a join is on its way
    /// to included).
    pub fn rooms(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }

    /// The shard holding `room`, if it is placed.
    pub fn shard_of(&self, room: &str) -> Option<ShardId> {
        self.lock().get(room).map(|e| e.shard)
    }

    fn least_loaded(&self, rooms: &HashMap<String, Entry>) -> ShardId {
        let mut room_counts = vec![0usize; self.participants.len()];
        for entry in rooms.values() {
            room_counts[entry.shard] += 1;
        }
        (0..self.participants.len())
            .min_by_key(|&s| (self.participants[s].load(Ordering::Relaxed), room_counts[s]))
            .unwrap_or(0)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        // A panic while holding this lock cannot leave the map half-updated
        // (every update is one insert or remove), so a poisoned lock is usable.
        self.rooms.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_rooms_go_to_the_least_loaded_shard() {
        let p = Placement::new(3);
        p.report_participants(0, 5);
        p.report_participants(1, 2);
        p.report_participants(2, 2);
        // Equal participants: fewer rooms wins, then the lower index.
        assert_eq!(p.route("a"), 1);
        assert_eq!(p.route("b"), 2);
        assert_eq!(p.route("c"), 1);
        // A placed room stays where it is, whatever the load.
        p.report_participants(1, 100);
        assert_eq!(p.route("a"), 1);
    }

    #[test]
    fn a_room_is_released_only_when_gone_and_nothing_is_in_flight() {
        let p = Placement::new(2);
        let s = p.route("r");
        // A second join is on its way while the first participant leaves.
        assert_eq!(p.route("r"), s);
        p.handled("r", s, true);
        p.closed("r", s);
        assert_eq!(p.shard_of("r"), Some(s), "a join is still in flight");
        // The queued join found the room gone and created it again.
        p.handled("r", s, true);
        assert_eq!(p.shard_of("r"), Some(s));
        p.closed("r", s);
        assert_eq!(p.shard_of("r"), None);
    }

    #[test]
    fn a_failed_request_releases_a_room_it_placed() {
        let p = Placement::new(2);
        let s = p.route("r");
        p.handled("r", s, false);
        assert_eq!(p.shard_of("r"), None);
        // Reports from another shard do not touch the entry.
        let s = p.route("q");
        p.closed("q", 1 - s);
        p.handled("q", 1 - s, false);
        assert_eq!(p.shard_of("q"), Some(s));
    }
}
