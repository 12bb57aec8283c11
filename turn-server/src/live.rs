//! Settings an operator can replace while the relay runs (credentials, the
//! TLS certificate): every worker reads the current value, a reload swaps
//! it, and nothing in flight is disturbed.

use std::sync::{Arc, PoisonError, RwLock};

/// A shared value that readers take a snapshot of and a reload replaces.
///
/// A reader holds the lock only to clone an `Arc`, so a reload never waits
/// on a request being served, and a request finishes with the value it
/// started with.
#[derive(Debug)]
pub struct Live<T>(RwLock<Arc<T>>);

impl<T> Live<T> {
    /// A shared cell holding `value` (a `T` or an `Arc<T>`).
    pub fn new(value: impl Into<Arc<T>>) -> Arc<Self> {
        Arc::new(Self(RwLock::new(value.into())))
    }

    /// The current value.
    pub fn get(&self) -> Arc<T> {
        // A panic elsewhere while holding the lock cannot leave a half
        // written `Arc` behind: the guarded value is always whole.
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Makes `value` the current one for every later `get`.
    pub fn replace(&self, value: impl Into<Arc<T>>) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = value.into();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_outlives_the_replacement() {
        let live = Live::<String>::new(String::from("old"));
        let before = live.get();
        live.replace(String::from("new"));
        assert_eq!(*before, "old");
        assert_eq!(*live.get(), "new");
    }
}
