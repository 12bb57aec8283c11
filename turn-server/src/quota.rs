//! Allocation quotas shared by every worker's table.
//!
//! Each worker thread owns its own [`crate::table::AllocationTable`] (no
//! locks on the relay path), but the limits "allocations in total" and
//! "allocations per user" are server-wide. One [`SharedQuotas`] behind an
//! `Arc` is handed to every table: an atomic counter for the total and a
//! sharded `DashMap` for the per-user counts (touched only on Allocate and
//! on deletion, never per packet).
//!
//! It is also where the rest of the server-wide allocation state lives,
//! because it is the one object every table of a server already shares:
//! relay port ownership and the EVEN-PORT reservation registry
//! ([`SharedPorts`], see [`crate::port_pool`]), so a RESERVATION-TOKEN
//! issued by one worker's table can be claimed in another's. Tables that
//! share a `SharedQuotas` must therefore belong to one server (the same
//! relay IPs, disjoint port slices); independent servers get their own.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use dashmap::DashMap;

use crate::port_pool::SharedPorts;

/// The limits. `usize::MAX` means unlimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QuotaLimits {
    /// Allocations across the whole server.
    pub max_allocations: usize,
    /// Allocations of one user (see
    /// [`crate::credentials::Resolved::quota_user`]).
    pub max_allocations_per_user: usize,
}

impl Default for QuotaLimits {
    fn default() -> Self {
        Self {
            max_allocations: 100_000,
            max_allocations_per_user: 100,
        }
    }
}

/// Which quota refused an allocation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QuotaExceeded {
    /// The server-wide total.
    Total,
    /// The user's own.
    PerUser,
}

/// Server-wide allocation counters.
#[derive(Debug)]
pub struct SharedQuotas {
    limits: QuotaLimits,
    total: AtomicUsize,
    per_user: DashMap<Box<str>, usize>,
    ports: SharedPorts,
}

impl SharedQuotas {
    /// Counters at zero, ready to share.
    pub fn new(limits: QuotaLimits) -> Arc<Self> {
        Arc::new(Self {
            limits,
            total: AtomicUsize::new(0),
            per_user: DashMap::new(),
            ports: SharedPorts::new(),
        })
    }

    /// Relay port ownership and EVEN-PORT reservations, server-wide.
    pub fn ports(&self) -> &SharedPorts {
        &self.ports
    }

    /// The configured limits.
    pub fn limits(&self) -> QuotaLimits {
        self.limits
    }

    /// Live allocations across all tables.
    pub fn allocations(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }

    /// Live allocations of `user`.
    pub fn user_allocations(&self, user: &str) -> usize {
        self.per_user.get(user).map_or(0, |n| *n)
    }

    /// Counts one more allocation for `user`, or refuses.
    pub(crate) fn acquire(&self, user: &str) -> Result<(), QuotaExceeded> {
        // Total first, with a compare-exchange loop so two workers cannot
        // both take the last slot.
        self.total
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.limits.max_allocations).then_some(n + 1)
            })
            .map_err(|_| QuotaExceeded::Total)?;
        // The entry guard holds the shard lock: check-and-increment is atomic
        // per user.
        let mut count = self.per_user.entry(user.into()).or_insert(0);
        if *count >= self.limits.max_allocations_per_user {
            let zero = *count == 0;
            drop(count);
            if zero {
                // Limit 0: do not leave an empty entry behind.
                self.per_user.remove_if(user, |_, n| *n == 0);
            }
            self.total.fetch_sub(1, Ordering::AcqRel);
            return Err(QuotaExceeded::PerUser);
        }
        *count += 1;
        Ok(())
    }

    /// Returns the allocation counted by a successful
    /// [`acquire`](Self::acquire).
    pub(crate) fn release(&self, user: &str) {
        if let Some(mut count) = self.per_user.get_mut(user) {
            *count = count.saturating_sub(1);
        }
        // Drop the entry at zero so departed users cost no memory.
        self.per_user.remove_if(user, |_, n| *n == 0);
        // Saturating: never wrap even if release were called twice.
        let _ = self
            .total
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_and_release() {
        let q = SharedQuotas::new(QuotaLimits {
            max_allocations: 3,
            max_allocations_per_user: 2,
        });
        assert_eq!(q.acquire("a"), Ok(()));
        assert_eq!(q.acquire("a"), Ok(()));
        assert_eq!(q.acquire("a"), Err(QuotaExceeded::PerUser));
        assert_eq!(q.allocations(), 2, "refusal must not leak a count");
        assert_eq!(q.acquire("b"), Ok(()));
        assert_eq!(q.acquire("c"), Err(QuotaExceeded::Total));
        assert_eq!(q.user_allocations("c"), 0);
        q.release("a");
        assert_eq!(q.user_allocations("a"), 1);
        assert_eq!(q.acquire("c"), Ok(()));
        q.release("a");
        q.release("b");
        q.release("c");
        assert_eq!(q.allocations(), 0);
        assert!(q.per_user.is_empty(), "no entries left for departed users");
    }

    #[test]
    fn concurrent_workers_respect_the_total() {
        let q = SharedQuotas::new(QuotaLimits {
            max_allocations: 1000,
            max_allocations_per_user: usize::MAX,
        });
        let granted: usize = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|t| {
                    let q = &q;
                    s.spawn(move || {
                        (0..500)
                            .filter(|i| q.acquire(&format!("u{t}-{}", i % 7)).is_ok())
                            .count()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().expect("worker")).sum()
        });
        assert_eq!(granted, 1000);
        assert_eq!(q.allocations(), 1000);
    }
}
