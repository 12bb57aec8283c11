//! Typed, `Copy` keys into per-kind arenas: how the core names its peers,
//! receivers and down-tracks instead of strings.
//!
//! A key is an index plus a generation: when an entry is removed its slot is
//! reused under a new generation, so a stale key (held by a timer entry or a
//! list not yet cleaned) finds nothing instead of a stranger. Lookups are an
//! index and a compare — no hashing on the packet path.

use std::fmt;
use std::marker::PhantomData;

/// Names an entry of an [`Arena`] whose keys are tagged `T` (the tags are
/// in `media/ids.rs`, so that keys name kinds without importing them).
pub struct Key<T> {
    index: u32,
    generation: u32,
    _kind: PhantomData<fn() -> T>,
}

// Derives would require `T: Copy` etc.; a key is plain data whatever `T` is.
impl<T> Clone for Key<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for Key<T> {}
impl<T> PartialEq for Key<T> {
    fn eq(&self, other: &Self) -> bool {
        (self.index, self.generation) == (other.index, other.generation)
    }
}
impl<T> Eq for Key<T> {}
impl<T> PartialOrd for Key<T> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl<T> Ord for Key<T> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.index, self.generation).cmp(&(other.index, other.generation))
    }
}
impl<T> std::hash::Hash for Key<T> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        (self.index, self.generation).hash(state);
    }
}
impl<T> fmt::Debug for Key<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}v{}", self.index, self.generation)
    }
}
impl<T> fmt::Display for Key<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

enum Entry<T> {
    Occupied(u32, T),
    /// Free, with the generation its next occupant gets and the next free slot.
    Vacant(u32, Option<u32>),
}

/// A slab of `T`s addressed by keys tagged `K`.
pub struct Arena<K, T> {
    entries: Vec<Entry<T>>,
    free: Option<u32>,
    len: usize,
    _keys: PhantomData<fn() -> K>,
}

impl<K, T> Default for Arena<K, T> {
    fn default() -> Self {
        Self {
            entries: Vec::new(),
            free: None,
            len: 0,
            _keys: PhantomData,
        }
    }
}

impl<K, T: fmt::Debug> fmt::Debug for Arena<K, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl<K, T> Arena<K, T> {
    /// Stores `value` under a new key.
    pub fn insert(&mut self, value: T) -> Key<K> {
        self.insert_with(|_| value)
    }

    /// Stores the value `make` builds from its own key.
    pub fn insert_with(&mut self, make: impl FnOnce(Key<K>) -> T) -> Key<K> {
        let (index, generation) = match self.free {
            Some(i) => match self.entries[i as usize] {
                Entry::Vacant(generation, next) => {
                    self.free = next;
                    (i, generation)
                }
                Entry::Occupied(..) => unreachable!("free list names an occupied slot"),
            },
            None => {
                let i = u32::try_from(self.entries.len()).expect("fewer than 2^32 entries");
                self.entries.push(Entry::Vacant(0, None));
                (i, 0)
            }
        };
        let key = Key {
            index,
            generation,
            _kind: PhantomData,
        };
        self.entries[index as usize] = Entry::Occupied(generation, make(key));
        self.len += 1;
        key
    }

    /// Removes and returns the entry, if `key` still names one.
    pub fn remove(&mut self, key: Key<K>) -> Option<T> {
        let slot = self.entries.get_mut(key.index as usize)?;
        match slot {
            Entry::Occupied(g, _) if *g == key.generation => {
                let next = Entry::Vacant(key.generation.wrapping_add(1), self.free);
                let Entry::Occupied(_, value) = std::mem::replace(slot, next) else {
                    return None;
                };
                self.free = Some(key.index);
                self.len -= 1;
                Some(value)
            }
            _ => None,
        }
    }

    /// The entry `key` names, if it is still there.
    pub fn get(&self, key: Key<K>) -> Option<&T> {
        match self.entries.get(key.index as usize)? {
            Entry::Occupied(g, v) if *g == key.generation => Some(v),
            _ => None,
        }
    }

    /// The entry `key` names, mutably.
    pub fn get_mut(&mut self, key: Key<K>) -> Option<&mut T> {
        match self.entries.get_mut(key.index as usize)? {
            Entry::Occupied(g, v) if *g == key.generation => Some(v),
            _ => None,
        }
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.len
    }

    /// No entries.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Every entry with its key.
    pub fn iter(&self) -> impl Iterator<Item = (Key<K>, &T)> + Clone {
        self.entries
            .iter()
            .enumerate()
            .filter_map(|(i, e)| match e {
                Entry::Occupied(g, v) => Some((
                    Key {
                        index: i as u32,
                        generation: *g,
                        _kind: PhantomData,
                    },
                    v,
                )),
                Entry::Vacant(..) => None,
            })
    }

    /// Every entry, mutably.
    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut T> {
        self.entries.iter_mut().filter_map(|e| match e {
            Entry::Occupied(_, v) => Some(v),
            Entry::Vacant(..) => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_removed_key_never_names_the_next_occupant() {
        let mut a: Arena<(), &str> = Arena::default();
        let x = a.insert("x");
        let y = a.insert("y");
        assert_eq!(a.remove(x), Some("x"));
        assert_eq!(a.remove(x), None, "removed once only");
        let z = a.insert("z");
        assert_eq!(a.get(z), Some(&"z"));
        assert_eq!(a.get(x), None, "stale key, slot reused");
        assert_ne!(x, z);
        assert_eq!(a.len(), 2);
        assert_eq!(a.iter().map(|(_, v)| *v).collect::<Vec<_>>(), ["z", "y"]);
        assert_eq!(a.get(y), Some(&"y"));
    }

    #[test]
    fn insert_with_sees_its_key() {
        let mut a: Arena<(), String> = Arena::default();
        let k = a.insert_with(|k| k.to_string());
        assert_eq!(a.get(k), Some(&"0v0".to_string()));
    }
}
