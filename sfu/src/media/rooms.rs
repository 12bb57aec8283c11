//! A shard's rooms: found by name where names arrive (signaling, WHIP/WHEP
//! sessions, the trunk) and by [`RoomKey`] on the packet path, where a
//! receiver keeps its room's key (an audio packet feeds its room's speaker
//! detector without a string lookup).

use std::collections::HashMap;

use super::arena::Arena;
use super::ids::{RoomKey, RoomTag};
use crate::room::Room;

/// A room with its name.
#[derive(Debug)]
struct Named {
    name: String,
    room: Room,
}

/// Rooms by key, and their keys by name.
#[derive(Debug, Default)]
pub struct Rooms {
    arena: Arena<RoomTag, Named>,
    keys: HashMap<String, RoomKey>,
}

impl Rooms {
    /// The room named `name`, if it exists.
    pub fn get(&self, name: &str) -> Option<&Room> {
        self.arena.get(*self.keys.get(name)?).map(|n| &n.room)
    }

    /// The room named `name`, if it exists, mutably.
    pub fn get_mut(&mut self, name: &str) -> Option<&mut Room> {
        self.arena
            .get_mut(*self.keys.get(name)?)
            .map(|n| &mut n.room)
    }

    /// The key of the room named `name`.
    pub fn key(&self, name: &str) -> Option<RoomKey> {
        self.keys.get(name).copied()
    }

    /// The room `key` names, if it still exists, mutably.
    pub fn by_key_mut(&mut self, key: RoomKey) -> Option<&mut Room> {
        self.arena.get_mut(key).map(|n| &mut n.room)
    }

    /// The room named `name`, made empty if it does not exist.
    pub fn get_or_create(&mut self, name: &str) -> (RoomKey, &mut Room) {
        let key = match self.keys.get(name) {
            Some(&key) => key,
            None => {
                let key = self.arena.insert(Named {
                    name: name.to_string(),
                    room: Room::default(),
                });
                self.keys.insert(name.to_string(), key);
                key
            }
        };
        let named = self
            .arena
            .get_mut(key)
            .expect("a key in the index names a room");
        (key, &mut named.room)
    }

    /// Removes the room named `name`; its key names nothing from now on.
    pub fn remove(&mut self, name: &str) -> Option<Room> {
        let key = self.keys.remove(name)?;
        self.arena.remove(key).map(|n| n.room)
    }

    /// Whether a room is named `name`.
    pub fn contains_key(&self, name: &str) -> bool {
        self.keys.contains_key(name)
    }

    /// How many rooms there are.
    pub fn len(&self) -> usize {
        self.arena.len()
    }

    /// Whether there is no room.
    pub fn is_empty(&self) -> bool {
        self.arena.is_empty()
    }

    /// Every room.
    pub fn values(&self) -> impl Iterator<Item = &Room> + Clone {
        self.arena.iter().map(|(_, n)| &n.room)
    }

    /// Every room with its name, mutably.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (&str, &mut Room)> {
        self.arena
            .values_mut()
            .map(|n| (n.name.as_str(), &mut n.room))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_room_is_found_by_name_and_by_key_until_removed() {
        let mut rooms = Rooms::default();
        let (key, _) = rooms.get_or_create("a");
        assert_eq!(rooms.get_or_create("a").0, key);
        assert_eq!(rooms.key("a"), Some(key));
        assert!(rooms.by_key_mut(key).is_some());
        assert_eq!(rooms.len(), 1);
        assert!(rooms.remove("a").is_some());
        assert!(rooms.by_key_mut(key).is_none());
        assert!(rooms.get("a").is_none());
        // A new room of the same name is another room.
        let (again, _) = rooms.get_or_create("a");
        assert_ne!(again, key);
        assert!(rooms.by_key_mut(key).is_none());
    }
}
