//! Memory per allocation of the sans-IO core, measured with a counting
//! global allocator: everything the table holds for an allocation (slab
//! slot, hash index entries, timer entries, permission and channel
//! records), not an estimate.
//!
//! Run with `--nocapture` to see the figures. The bound asserted is the
//! issue's 4 KB RSS budget per allocation, for the core's share.

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use turn_server::address_policy::AddressPolicy;
use turn_server::allocation::{AllocateRequest, Allocation, SessionKey};
use turn_server::five_tuple::{ClientTransport, FiveTuple};
use turn_server::quota::{QuotaLimits, SharedQuotas};
use turn_server::table::{AllocationTable, TableConfig};

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: delegates to the system allocator and only counts sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Heap bytes per allocation with `perms` permissions and `chans` channels
/// each, over `n` allocations.
fn per_allocation(n: usize, perms: u8, chans: u8) -> f64 {
    let t0 = Instant::now();
    // Enough relay IPs for n ports.
    let relay_ips: Vec<IpAddr> = (0..n.div_ceil(16_000) as u8)
        .map(|i| IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10 + i)))
        .collect();
    let config = TableConfig {
        relay_ips,
        max_permissions_per_allocation: 200,
        max_channels_per_allocation: 200,
        ..TableConfig::default()
    };
    let quotas = SharedQuotas::new(QuotaLimits {
        max_allocations: usize::MAX,
        max_allocations_per_user: usize::MAX,
    });
    let mut table =
        AllocationTable::new(config, Arc::new(AddressPolicy::new()), quotas, t0).expect("table");
    let key = SessionKey::from_slice(&[7; 16]).expect("key");
    let server: SocketAddr = "192.0.2.1:3478".parse().expect("addr");
    let before = LIVE.load(Ordering::Relaxed);
    for i in 0..n {
        let client = SocketAddr::new(
            IpAddr::V4(Ipv4Addr::from(0xc633_0000u32 + (i as u32 / 60_000))),
            1024 + (i % 60_000) as u16,
        );
        let tuple = FiveTuple::new(client, server, ClientTransport::Udp);
        // Realistic username length: REST "expiry:identity".
        let req = AllocateRequest::new([1; 12], "1800000000:participant-0001", key);
        table.allocate(tuple, &req, t0).expect("allocate");
        let peers: Vec<IpAddr> = (0..perms)
            .map(|p| IpAddr::V4(Ipv4Addr::new(203, 0, 113, p)))
            .collect();
        if !peers.is_empty() {
            table
                .create_permission(&tuple, "1800000000:participant-0001", &peers, t0)
                .expect("permissions");
        }
        for c in 0..chans {
            let peer = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(203, 0, 113, c)), 5000);
            table
                .channel_bind(
                    &tuple,
                    "1800000000:participant-0001",
                    0x4000 + u16::from(c),
                    peer,
                    t0,
                )
                .expect("channel");
        }
    }
    let after = LIVE.load(Ordering::Relaxed);
    let stats = table.stats();
    assert_eq!(stats.allocations, n);
    (after - before) as f64 / n as f64
}

#[test]
fn core_memory_per_allocation() {
    println!(
        "size_of::<Allocation>() = {} bytes",
        std::mem::size_of::<Allocation>()
    );
    for (perms, chans) in [(0u8, 0u8), (1, 1), (4, 4), (16, 16)] {
        let bytes = per_allocation(20_000, perms, chans);
        println!(
            "{perms:>2} permissions, {chans:>2} channels: {bytes:>6.0} heap bytes per allocation"
        );
        if perms <= 4 {
            assert!(bytes < 4096.0, "{bytes} bytes per allocation");
        }
    }
}
