//! Tests of the allocation table, all with injected time.

use super::*;
use crate::address_policy::Cidr;
use crate::allocation::SessionKey;
use crate::five_tuple::ClientTransport;
use crate::quota::QuotaLimits;

const SEC: Duration = Duration::from_secs(1);

fn ip(s: &str) -> IpAddr {
    s.parse().expect("test ip")
}

fn sa(s: &str) -> SocketAddr {
    s.parse().expect("test socket address")
}

fn key() -> SessionKey {
    SessionKey::from_slice(&[0x5a; 16]).expect("key")
}

fn tuple(port: u16) -> FiveTuple {
    FiveTuple::new(
        SocketAddr::new(ip("198.51.100.1"), port),
        sa("192.0.2.1:3478"),
        ClientTransport::Udp,
    )
}

fn txid(n: u8) -> [u8; 12] {
    [n; 12]
}

fn config() -> TableConfig {
    TableConfig {
        relay_ips: vec![ip("192.0.2.10"), ip("2001:db8::10")],
        port_min: 50000,
        port_max: 50999,
        ..TableConfig::default()
    }
}

struct Fixture {
    table: AllocationTable,
    quotas: Arc<SharedQuotas>,
    t0: Instant,
}

fn fixture_with(config: TableConfig, policy: AddressPolicy, limits: QuotaLimits) -> Fixture {
    let t0 = Instant::now();
    let quotas = SharedQuotas::new(limits);
    let table = AllocationTable::with_rng(
        config,
        Arc::new(policy),
        quotas.clone(),
        t0,
        StdRng::seed_from_u64(7),
    )
    .expect("valid config");
    Fixture { table, quotas, t0 }
}

fn fixture() -> Fixture {
    fixture_of(config())
}

/// A fixture with `config`, no deny list and default quotas.
fn fixture_of(config: TableConfig) -> Fixture {
    fixture_with(config, AddressPolicy::new(), QuotaLimits::default())
}

/// A fixture relaying from 192.0.2.10, ports `port_min..=port_max` only.
fn fixture_ports(port_min: u16, port_max: u16) -> Fixture {
    fixture_of(TableConfig {
        relay_ips: vec![ip("192.0.2.10")],
        port_min,
        port_max,
        ..config()
    })
}

impl Fixture {
    fn at(&self, secs: f64) -> Instant {
        self.t0 + Duration::from_secs_f64(secs)
    }

    fn allocate(&mut self, port: u16) -> Allocated {
        let now = self.t0;
        self.table
            .allocate(
                tuple(port),
                &AllocateRequest::new(txid(1), "alice", key()),
                now,
            )
            .expect("allocate")
    }

    fn check(&self) {
        if let Err(e) = self.table.check_invariants() {
            panic!("invariant broken: {e}");
        }
    }
}

const PEER: &str = "203.0.113.5:4000";

#[test]
fn allocate_gives_a_relay_in_range_and_is_idempotent_on_retransmit() {
    let mut f = fixture();
    let a = f.allocate(1);
    let relay = a.relays.v4.expect("v4 relay");
    assert_eq!(relay.ip(), ip("192.0.2.10"));
    assert!((50000..=50999).contains(&relay.port()));
    assert_eq!(a.relays.v6, None);
    assert_eq!(a.lifetime, 600 * SEC);
    assert_eq!(a.reservation_token, None);
    assert_eq!(a.address_error, None);
    let got = f.table.get(&tuple(1)).expect("allocation");
    assert_eq!(got.username(), "alice");
    assert_eq!(got.session_key().as_bytes(), &[0x5a; 16]);
    assert_eq!(
        f.table.get_by_relay(relay).map(|a| *a.tuple()),
        Some(tuple(1))
    );
    // Retransmission 10 s later: same relay, remaining lifetime.
    let again = f
        .table
        .allocate(
            tuple(1),
            &AllocateRequest::new(txid(1), "alice", key()),
            f.at(10.0),
        )
        .expect("retransmission");
    assert_eq!(again.relays, a.relays);
    assert_eq!(again.lifetime, 590 * SEC);
    // A new transaction on a busy 5-tuple, or another user: 437.
    let err = f
        .table
        .allocate(
            tuple(1),
            &AllocateRequest::new(txid(2), "alice", key()),
            f.t0,
        )
        .expect_err("busy");
    assert_eq!(err.code(), 437);
    let err = f
        .table
        .allocate(
            tuple(1),
            &AllocateRequest::new(txid(1), "mallory", key()),
            f.t0,
        )
        .expect_err("busy");
    assert_eq!(err, TurnError::AllocationMismatch);
    assert_eq!(f.table.stats().allocations, 1);
    assert_eq!(f.quotas.allocations(), 1);
    f.check();
}

#[test]
fn allocate_request_validation() {
    let mut f = fixture();
    let base = AllocateRequest::new(txid(1), "alice", key());
    let cases: Vec<(AllocateRequest<'_>, u16)> = vec![
        (
            AllocateRequest {
                requested_transport: 6,
                ..base
            },
            442,
        ),
        (
            AllocateRequest {
                requested_family: Some(AddressFamily::V4),
                additional_family: Some(AddressFamily::V6),
                ..base
            },
            400,
        ),
        (
            AllocateRequest {
                additional_family: Some(AddressFamily::V4),
                ..base
            },
            400,
        ),
        (
            AllocateRequest {
                even_port: Some(true),
                additional_family: Some(AddressFamily::V6),
                ..base
            },
            400,
        ),
        (
            AllocateRequest {
                reservation_token: Some(ReservationToken([1; 8])),
                even_port: Some(false),
                ..base
            },
            400,
        ),
        (
            AllocateRequest {
                reservation_token: Some(ReservationToken([1; 8])),
                requested_family: Some(AddressFamily::V4),
                ..base
            },
            400,
        ),
        (
            AllocateRequest {
                reservation_token: Some(ReservationToken([1; 8])),
                ..base
            },
            508,
        ),
    ];
    for (i, (req, code)) in cases.into_iter().enumerate() {
        let err = f.table.allocate(tuple(1), &req, f.t0).expect_err("refused");
        assert_eq!(err.code(), code, "case {i}: {err}");
    }
    assert_eq!(f.table.stats().allocations, 0);
    assert_eq!(f.quotas.allocations(), 0, "refusals leak no quota");
    f.check();
}

#[test]
fn lifetime_is_capped_and_floored_and_expires() {
    let mut f = fixture();
    let mut req = AllocateRequest::new(txid(1), "alice", key());
    req.lifetime = Some(30);
    assert_eq!(
        f.table.allocate(tuple(1), &req, f.t0).map(|a| a.lifetime),
        Ok(600 * SEC)
    );
    req.lifetime = Some(1200);
    assert_eq!(
        f.table.allocate(tuple(2), &req, f.t0).map(|a| a.lifetime),
        Ok(1200 * SEC)
    );
    req.lifetime = Some(u32::MAX);
    let capped = f.table.allocate(tuple(3), &req, f.t0).expect("allocate");
    assert_eq!(capped.lifetime, 3600 * SEC);
    assert_eq!(f.table.next_expiry(), Some(f.at(600.0)));
    assert!(f.table.expire(f.at(599.999)).is_empty());
    assert_eq!(f.table.stats().allocations, 3);
    let closed = f.table.expire(f.at(600.0));
    assert_eq!(closed.len(), 1);
    assert!(f.table.get(&tuple(1)).is_none());
    assert_eq!(f.table.next_expiry(), Some(f.at(1200.0)));
    f.table.expire(f.at(1200.0));
    assert!(f.table.expire(f.at(3599.0)).is_empty());
    assert_eq!(
        f.table.expire(f.at(3600.0)),
        capped.relays.iter().collect::<Vec<_>>()
    );
    assert_eq!(f.table.stats().allocations, 0);
    assert_eq!(f.table.stats().ports_in_use, 0);
    assert_eq!(f.quotas.allocations(), 0);
    assert_eq!(f.table.next_expiry(), None);
    f.check();
}

#[test]
fn refresh_extends_and_zero_deletes() {
    let mut f = fixture();
    let a = f.allocate(1);
    let r = f
        .table
        .refresh(&tuple(1), "alice", Some(600), None, f.at(500.0))
        .expect("refresh");
    assert_eq!(
        r,
        RefreshOutcome::Refreshed {
            lifetime: 600 * SEC
        }
    );
    // The old timer fires at 600 and re-arms for 1100.
    assert!(f.table.expire(f.at(600.0)).is_empty());
    assert!(f.table.get(&tuple(1)).is_some());
    assert_eq!(f.table.next_expiry(), Some(f.at(1100.0)));
    // Wrong user, wrong tuple, wrong family.
    assert_eq!(
        f.table.refresh(&tuple(1), "bob", None, None, f.at(700.0)),
        Err(TurnError::WrongCredentials)
    );
    assert_eq!(
        f.table.refresh(&tuple(9), "alice", None, None, f.at(700.0)),
        Err(TurnError::AllocationMismatch)
    );
    assert_eq!(
        f.table.refresh(
            &tuple(1),
            "alice",
            None,
            Some(AddressFamily::V6),
            f.at(700.0)
        ),
        Err(TurnError::PeerAddressFamilyMismatch)
    );
    let r = f
        .table
        .refresh(&tuple(1), "alice", Some(0), None, f.at(700.0))
        .expect("delete");
    assert_eq!(r, RefreshOutcome::Deleted { relays: a.relays });
    assert_eq!(
        f.table
            .refresh(&tuple(1), "alice", Some(0), None, f.at(700.0)),
        Err(TurnError::AllocationMismatch)
    );
    assert_eq!(f.quotas.allocations(), 0);
    assert_eq!(f.table.stats().ports_in_use, 0);
    f.check();
}

#[test]
fn refresh_can_shorten_the_lifetime() {
    let mut f = fixture();
    let mut req = AllocateRequest::new(txid(1), "alice", key());
    req.lifetime = Some(3600);
    f.table.allocate(tuple(1), &req, f.t0).expect("allocate");
    f.table
        .refresh(&tuple(1), "alice", Some(600), None, f.at(10.0))
        .expect("refresh");
    assert_eq!(f.table.next_expiry(), Some(f.at(610.0)));
    assert_eq!(f.table.expire(f.at(610.0)).len(), 1);
    // The original 3600 s entry is stale and harmless.
    assert!(f.table.expire(f.at(4000.0)).is_empty());
    f.check();
}

#[test]
fn permissions_expire_after_300_s_unless_refreshed() {
    let mut f = fixture();
    let relay = f.allocate(1).relays.v4.expect("relay");
    f.table
        .refresh(&tuple(1), "alice", Some(3600), None, f.t0)
        .expect("long allocation");
    let peer = sa(PEER);
    assert_eq!(
        f.table.peer_to_client(relay, peer, 100, f.t0),
        Err(DropReason::NoPermission)
    );
    f.table
        .create_permission(&tuple(1), "alice", &[peer.ip()], f.t0)
        .expect("permission");
    // Any port of the permitted IP may send.
    for p in [peer, sa("203.0.113.5:9")] {
        assert_eq!(
            f.table.peer_to_client(relay, p, 100, f.at(299.0)),
            Ok(Deliver {
                tuple: tuple(1),
                channel: None
            })
        );
    }
    assert_eq!(
        f.table
            .client_to_peer_via_send(&tuple(1), peer, 100, f.at(299.0)),
        Ok(Forward { relay, peer })
    );
    // Expired on the hot path even before the timer runs.
    assert_eq!(
        f.table.peer_to_client(relay, peer, 100, f.at(300.0)),
        Err(DropReason::NoPermission)
    );
    f.table.expire(f.at(300.0));
    assert_eq!(f.table.stats().permissions, 0);
    // Refresh keeps it alive.
    f.table
        .create_permission(&tuple(1), "alice", &[peer.ip()], f.at(300.0))
        .expect("permission");
    f.table
        .create_permission(&tuple(1), "alice", &[peer.ip()], f.at(500.0))
        .expect("refresh");
    f.table.expire(f.at(600.0));
    assert!(f
        .table
        .peer_to_client(relay, peer, 100, f.at(799.0))
        .is_ok());
    f.table.expire(f.at(800.0));
    assert_eq!(f.table.stats().permissions, 0);
    assert_eq!(
        f.table.peer_to_client(sa("192.0.2.99:1"), peer, 1, f.t0),
        Err(DropReason::NoAllocation)
    );
    f.check();
}

#[test]
fn create_permission_is_all_or_nothing() {
    let mut f = fixture();
    f.allocate(1);
    let err = f
        .table
        .create_permission(
            &tuple(1),
            "alice",
            &[ip("203.0.113.5"), ip("10.0.0.1")],
            f.t0,
        )
        .expect_err("denied");
    assert_eq!(err, TurnError::Forbidden(DenyReason::Private));
    assert_eq!(err.code(), 403);
    assert_eq!(f.table.stats().permissions, 0);
    let err = f
        .table
        .create_permission(
            &tuple(1),
            "alice",
            &[ip("203.0.113.5"), ip("2001:4860::1")],
            f.t0,
        )
        .expect_err("family");
    assert_eq!(err, TurnError::PeerAddressFamilyMismatch);
    assert_eq!(f.table.stats().permissions, 0);
    assert_eq!(
        f.table
            .create_permission(&tuple(1), "bob", &[ip("203.0.113.5")], f.t0),
        Err(TurnError::WrongCredentials)
    );
    assert_eq!(
        f.table
            .create_permission(&tuple(2), "alice", &[ip("203.0.113.5")], f.t0),
        Err(TurnError::AllocationMismatch)
    );
    assert_eq!(
        f.table
            .create_permission(&tuple(1), "alice", &[], f.t0)
            .map_err(|e| e.code()),
        Err(400)
    );
    // Duplicates in one request count once.
    f.table
        .create_permission(
            &tuple(1),
            "alice",
            &[ip("203.0.113.5"), ip("203.0.113.5")],
            f.t0,
        )
        .expect("ok");
    assert_eq!(f.table.stats().permissions, 1);
    f.check();
}

#[test]
fn permission_quota() {
    let cfg = TableConfig {
        max_permissions_per_allocation: 2,
        ..config()
    };
    let mut f = fixture_of(cfg);
    f.allocate(1);
    f.table
        .create_permission(
            &tuple(1),
            "alice",
            &[ip("203.0.113.1"), ip("203.0.113.2")],
            f.t0,
        )
        .expect("two");
    let err = f
        .table
        .create_permission(&tuple(1), "alice", &[ip("203.0.113.3")], f.t0)
        .expect_err("third");
    assert_eq!(err.code(), 508);
    // Refreshing existing ones is fine; a channel to a third IP is not.
    f.table
        .create_permission(
            &tuple(1),
            "alice",
            &[ip("203.0.113.2"), ip("203.0.113.1")],
            f.t0,
        )
        .expect("refresh");
    assert_eq!(
        f.table
            .channel_bind(&tuple(1), "alice", 0x4000, sa("203.0.113.3:1"), f.t0)
            .map_err(|e| e.code()),
        Err(508)
    );
    f.table
        .channel_bind(&tuple(1), "alice", 0x4000, sa("203.0.113.1:1"), f.t0)
        .expect("existing permission");
    // After expiry there is room again.
    f.table.expire(f.at(300.0));
    assert_eq!(f.table.stats().permissions, 0);
    f.table
        .create_permission(&tuple(1), "alice", &[ip("203.0.113.3")], f.at(300.0))
        .expect("room again");
    f.check();
}

#[test]
fn channel_binding_rules() {
    let mut f = fixture();
    let relay = f.allocate(1).relays.v4.expect("relay");
    let peer = sa(PEER);
    let other = sa("203.0.113.6:4000");
    for bad in [0x3fff, 0x7fff, 0] {
        assert_eq!(
            f.table.channel_bind(&tuple(1), "alice", bad, peer, f.t0),
            Err(TurnError::BadRequest(
                "channel number outside 0x4000-0x4FFF"
            ))
        );
    }
    f.table
        .channel_bind(&tuple(1), "alice", 0x4000, peer, f.t0)
        .expect("bind");
    // The bind installed a permission: both directions work.
    assert_eq!(
        f.table
            .client_to_peer_via_channel(&tuple(1), 0x4000, 100, f.t0),
        Ok(Forward { relay, peer })
    );
    assert_eq!(
        f.table.peer_to_client(relay, peer, 100, f.t0),
        Ok(Deliver {
            tuple: tuple(1),
            channel: Some(0x4000)
        })
    );
    // Another port of the same IP has the permission but no channel.
    assert_eq!(
        f.table
            .peer_to_client(relay, sa("203.0.113.5:4001"), 100, f.t0)
            .map(|d| d.channel),
        Ok(None)
    );
    // Rebinding the channel elsewhere, or the peer to another channel: 400.
    assert_eq!(
        f.table
            .channel_bind(&tuple(1), "alice", 0x4000, other, f.t0)
            .map_err(|e| e.code()),
        Err(400)
    );
    assert_eq!(
        f.table
            .channel_bind(&tuple(1), "alice", 0x4001, peer, f.t0)
            .map_err(|e| e.code()),
        Err(400)
    );
    // Same pair again: refresh.
    f.table
        .channel_bind(&tuple(1), "alice", 0x4000, peer, f.at(1.0))
        .expect("refresh");
    f.table
        .channel_bind(&tuple(1), "alice", 0x4001, other, f.t0)
        .expect("second channel");
    assert_eq!(f.table.stats().channels, 2);
    assert_eq!(
        f.table
            .client_to_peer_via_channel(&tuple(1), 0x4002, 1, f.t0),
        Err(DropReason::UnboundChannel)
    );
    assert_eq!(
        f.table
            .client_to_peer_via_channel(&tuple(2), 0x4000, 1, f.t0),
        Err(DropReason::NoAllocation)
    );
    assert_eq!(
        f.table.channel_bind(&tuple(1), "bob", 0x4002, peer, f.t0),
        Err(TurnError::WrongCredentials)
    );
    f.check();
}

#[test]
fn channels_expire_after_600_s_and_refresh() {
    let mut f = fixture();
    let relay = f.allocate(1).relays.v4.expect("relay");
    f.table
        .refresh(&tuple(1), "alice", Some(3600), None, f.t0)
        .expect("long allocation");
    let peer = sa(PEER);
    f.table
        .channel_bind(&tuple(1), "alice", 0x4000, peer, f.t0)
        .expect("bind");
    // Keep the permission alive separately; the channel is not refreshed.
    f.table
        .create_permission(&tuple(1), "alice", &[peer.ip()], f.at(250.0))
        .expect("permission");
    f.table
        .create_permission(&tuple(1), "alice", &[peer.ip()], f.at(500.0))
        .expect("permission");
    f.table.expire(f.at(599.0));
    assert!(f
        .table
        .client_to_peer_via_channel(&tuple(1), 0x4000, 1, f.at(599.0))
        .is_ok());
    assert_eq!(
        f.table
            .client_to_peer_via_channel(&tuple(1), 0x4000, 1, f.at(600.0)),
        Err(DropReason::UnboundChannel)
    );
    f.table.expire(f.at(600.0));
    assert_eq!(f.table.stats().channels, 0);
    // The permission outlives the channel: data now comes as indications.
    assert_eq!(
        f.table
            .peer_to_client(relay, peer, 1, f.at(700.0))
            .map(|d| d.channel),
        Ok(None)
    );
    // After expiry the number may be bound to another peer.
    f.table
        .channel_bind(&tuple(1), "alice", 0x4000, sa("203.0.113.6:1"), f.at(700.0))
        .expect("rebind after expiry");
    // Refreshing the binding keeps it beyond 600 s.
    f.table
        .channel_bind(
            &tuple(1),
            "alice",
            0x4000,
            sa("203.0.113.6:1"),
            f.at(1200.0),
        )
        .expect("refresh");
    f.table.expire(f.at(1300.0));
    assert_eq!(f.table.stats().channels, 1);
    f.check();
}

#[test]
fn channel_without_live_permission_relays_nothing() {
    let mut f = fixture();
    f.allocate(1);
    f.table
        .channel_bind(&tuple(1), "alice", 0x4000, sa(PEER), f.t0)
        .expect("bind");
    assert_eq!(
        f.table
            .client_to_peer_via_channel(&tuple(1), 0x4000, 1, f.at(300.0)),
        Err(DropReason::NoPermission)
    );
}

#[test]
fn channel_quota() {
    let cfg = TableConfig {
        max_channels_per_allocation: 1,
        ..config()
    };
    let mut f = fixture_of(cfg);
    f.allocate(1);
    f.table
        .channel_bind(&tuple(1), "alice", 0x4000, sa(PEER), f.t0)
        .expect("bind");
    assert_eq!(
        f.table
            .channel_bind(&tuple(1), "alice", 0x4001, sa("203.0.113.6:1"), f.t0)
            .map_err(|e| e.code()),
        Err(508)
    );
}

#[test]
fn family_rules_and_dual_allocation() {
    let mut f = fixture();
    f.allocate(1);
    let v6peer = sa("[2001:4860::8888]:53");
    assert_eq!(
        f.table
            .create_permission(&tuple(1), "alice", &[v6peer.ip()], f.t0),
        Err(TurnError::PeerAddressFamilyMismatch)
    );
    assert_eq!(
        f.table
            .channel_bind(&tuple(1), "alice", 0x4000, v6peer, f.t0),
        Err(TurnError::PeerAddressFamilyMismatch)
    );
    assert_eq!(
        f.table.client_to_peer_via_send(&tuple(1), v6peer, 1, f.t0),
        Err(DropReason::PeerFamilyMismatch)
    );
    // IPv6 only.
    let mut req = AllocateRequest::new(txid(2), "alice", key());
    req.requested_family = Some(AddressFamily::V6);
    let a = f.table.allocate(tuple(2), &req, f.t0).expect("v6");
    assert_eq!(a.relays.v4, None);
    assert_eq!(a.relays.v6.map(|r| r.ip()), Some(ip("2001:db8::10")));
    // Dual.
    let mut req = AllocateRequest::new(txid(3), "alice", key());
    req.additional_family = Some(AddressFamily::V6);
    let a = f.table.allocate(tuple(3), &req, f.t0).expect("dual");
    let (r4, r6) = (a.relays.v4.expect("v4"), a.relays.v6.expect("v6"));
    f.table
        .create_permission(&tuple(3), "alice", &[v6peer.ip(), ip("203.0.113.5")], f.t0)
        .expect("both families");
    assert_eq!(
        f.table.client_to_peer_via_send(&tuple(3), v6peer, 1, f.t0),
        Ok(Forward {
            relay: r6,
            peer: v6peer
        })
    );
    assert_eq!(
        f.table
            .client_to_peer_via_send(&tuple(3), sa(PEER), 1, f.t0)
            .map(|fw| fw.relay),
        Ok(r4)
    );
    // A peer's data is accepted only on the relay of its family.
    assert_eq!(
        f.table.peer_to_client(r4, v6peer, 1, f.t0),
        Err(DropReason::NoPermission)
    );
    assert!(f.table.peer_to_client(r6, v6peer, 1, f.t0).is_ok());
    // Release only the IPv6 half.
    f.table
        .channel_bind(&tuple(3), "alice", 0x4000, v6peer, f.t0)
        .expect("bind v6");
    assert_eq!(
        f.table
            .refresh(&tuple(3), "alice", Some(0), Some(AddressFamily::V6), f.t0),
        Ok(RefreshOutcome::FamilyReleased { relay: r6 })
    );
    f.check();
    assert_eq!(f.table.get(&tuple(3)).map(|a| a.relays().v6), Some(None));
    assert_eq!(
        f.table.peer_to_client(r6, v6peer, 1, f.t0),
        Err(DropReason::NoAllocation)
    );
    assert!(f.table.peer_to_client(r4, sa(PEER), 1, f.t0).is_ok());
    assert_eq!(f.table.stats().channels, 0);
    f.check();
}

#[test]
fn address_family_not_supported_and_partial_dual() {
    let cfg = TableConfig {
        relay_ips: vec![ip("192.0.2.10")],
        ..config()
    };
    let mut f = fixture_of(cfg);
    let mut req = AllocateRequest::new(txid(1), "alice", key());
    req.requested_family = Some(AddressFamily::V6);
    assert_eq!(
        f.table.allocate(tuple(1), &req, f.t0),
        Err(TurnError::AddressFamilyNotSupported)
    );
    assert_eq!(f.quotas.allocations(), 0);
    let mut req = AllocateRequest::new(txid(1), "alice", key());
    req.additional_family = Some(AddressFamily::V6);
    let a = f.table.allocate(tuple(1), &req, f.t0).expect("partial");
    assert!(a.relays.v4.is_some());
    assert_eq!(
        a.address_error,
        Some((AddressFamily::V6, TurnError::AddressFamilyNotSupported))
    );
    // IPv6-only server, plain (IPv4) request: 440.
    let cfg = TableConfig {
        relay_ips: vec![ip("2001:db8::10")],
        ..config()
    };
    let mut f = fixture_of(cfg);
    assert_eq!(
        f.table.allocate(
            tuple(1),
            &AllocateRequest::new(txid(1), "alice", key()),
            f.t0
        ),
        Err(TurnError::AddressFamilyNotSupported)
    );
}

#[test]
fn per_user_quota_and_quota_identity() {
    let limits = QuotaLimits {
        max_allocations: 100,
        max_allocations_per_user: 2,
    };
    let mut f = fixture_with(config(), AddressPolicy::new(), limits);
    let mk = |tx: u8, user: &'static str, quota_user: &'static str| AllocateRequest {
        quota_user,
        ..AllocateRequest::new(txid(tx), user, key())
    };
    f.table
        .allocate(tuple(1), &mk(1, "1900000000:bob", "bob"), f.t0)
        .expect("1");
    f.table
        .allocate(tuple(2), &mk(2, "1900000060:bob", "bob"), f.t0)
        .expect("2");
    assert_eq!(
        f.table
            .allocate(tuple(3), &mk(3, "1900000120:bob", "bob"), f.t0),
        Err(TurnError::AllocationQuotaReached)
    );
    assert_eq!(TurnError::AllocationQuotaReached.code(), 486);
    f.table
        .allocate(tuple(3), &mk(3, "carol", "carol"), f.t0)
        .expect("other user");
    assert_eq!(f.quotas.user_allocations("bob"), 2);
    assert_eq!(
        f.table.get(&tuple(1)).map(|a| a.quota_user().to_owned()),
        Some("bob".to_owned())
    );
    f.table.remove(&tuple(1)).expect("removed");
    assert_eq!(f.quotas.user_allocations("bob"), 1);
    f.table
        .allocate(tuple(4), &mk(4, "1900000120:bob", "bob"), f.t0)
        .expect("room again");
    f.check();
}

#[test]
fn total_quota_is_shared_across_tables() {
    let t0 = Instant::now();
    let quotas = SharedQuotas::new(QuotaLimits {
        max_allocations: 3,
        max_allocations_per_user: 10,
    });
    let policy = Arc::new(AddressPolicy::new());
    let mk = |lo, hi| {
        let cfg = TableConfig {
            port_min: lo,
            port_max: hi,
            ..config()
        };
        AllocationTable::new(cfg, policy.clone(), quotas.clone(), t0).expect("table")
    };
    let (lo, hi) = (50000, 50999);
    let a_range = split_port_range(lo, hi, 2, 0).expect("range");
    let b_range = split_port_range(lo, hi, 2, 1).expect("range");
    assert_eq!(a_range, (50000, 50499));
    assert_eq!(b_range, (50500, 50999));
    let mut a = mk(a_range.0, a_range.1);
    let mut b = mk(b_range.0, b_range.1);
    let req = AllocateRequest::new(txid(1), "alice", key());
    a.allocate(tuple(1), &req, t0).expect("a1");
    a.allocate(tuple(2), &req, t0).expect("a2");
    let b1 = b.allocate(tuple(3), &req, t0).expect("b1");
    assert!(b1.relays.v4.is_some_and(|r| r.port() >= 50500));
    assert_eq!(
        b.allocate(tuple(4), &req, t0),
        Err(TurnError::AllocationQuotaReached)
    );
    assert_eq!(quotas.allocations(), 3);
    a.remove(&tuple(1));
    b.allocate(tuple(4), &req, t0)
        .expect("freed by the other table");
    assert_eq!(quotas.allocations(), 3);
}

#[test]
fn bandwidth_quota_drops_and_counts() {
    let cfg = TableConfig {
        bandwidth: Some(BandwidthLimit {
            bytes_per_second: 1000,
            burst_bytes: 1500,
        }),
        ..config()
    };
    let mut f = fixture_of(cfg);
    let relay = f.allocate(1).relays.v4.expect("relay");
    let peer = sa(PEER);
    f.table
        .create_permission(&tuple(1), "alice", &[peer.ip()], f.t0)
        .expect("permission");
    assert!(f
        .table
        .client_to_peer_via_send(&tuple(1), peer, 1200, f.t0)
        .is_ok());
    assert_eq!(
        f.table.client_to_peer_via_send(&tuple(1), peer, 1200, f.t0),
        Err(DropReason::Bandwidth)
    );
    // Both directions share the bucket.
    assert_eq!(
        f.table.peer_to_client(relay, peer, 301, f.t0),
        Err(DropReason::Bandwidth)
    );
    assert!(f.table.peer_to_client(relay, peer, 300, f.t0).is_ok());
    assert_eq!(f.table.stats().bandwidth_drops, 2);
    assert!(f
        .table
        .client_to_peer_via_send(&tuple(1), peer, 1000, f.at(1.0))
        .is_ok());
}

#[test]
fn ports_are_never_reused_while_in_use() {
    let mut f = fixture_ports(50000, 50003);
    let mut ports: Vec<u16> = (1..=4)
        .map(|i| f.allocate(i).relays.v4.expect("relay").port())
        .collect();
    ports.sort_unstable();
    assert_eq!(ports, vec![50000, 50001, 50002, 50003]);
    let err = f
        .table
        .allocate(
            tuple(5),
            &AllocateRequest::new(txid(1), "alice", key()),
            f.t0,
        )
        .expect_err("full");
    assert_eq!(err.code(), 508);
    assert_eq!(f.quotas.allocations(), 4);
    let freed = f.table.remove(&tuple(2)).and_then(|r| r.v4).expect("freed");
    let again = f.allocate(5).relays.v4.expect("relay");
    assert_eq!(again, freed);
    f.check();
}

#[test]
fn even_port_and_reservation() {
    let mut f = fixture_ports(50000, 50005);
    let mut req = AllocateRequest::new(txid(1), "alice", key());
    req.even_port = Some(false);
    let even = f.table.allocate(tuple(1), &req, f.t0).expect("even");
    assert_eq!(even.relays.v4.map(|r| r.port() % 2), Some(0));
    assert_eq!(even.reservation_token, None);
    // R bit: even port, the next one reserved under a token.
    req.even_port = Some(true);
    let pair = f.table.allocate(tuple(2), &req, f.t0).expect("pair");
    let p = pair.relays.v4.expect("relay");
    assert_eq!(p.port() % 2, 0);
    let token = pair.reservation_token.expect("token");
    assert_eq!(f.table.stats().reservations, 1);
    // Six ports: even(1) + pair(2) + reserved... the reserved port is
    // never handed to someone else.
    for i in 3..=5 {
        let r = f.allocate(i).relays.v4.expect("relay");
        assert_ne!(r.port(), p.port() + 1);
    }
    assert_eq!(
        f.table
            .allocate(
                tuple(6),
                &AllocateRequest::new(txid(1), "alice", key()),
                f.t0
            )
            .map_err(|e| e.code()),
        Err(508)
    );
    // Another user cannot claim it; the owner can, once.
    let claim = |user: &'static str| AllocateRequest {
        reservation_token: Some(token),
        ..AllocateRequest::new(txid(9), user, key())
    };
    assert_eq!(
        f.table
            .allocate(tuple(7), &claim("mallory"), f.t0)
            .map_err(|e| e.code()),
        Err(508)
    );
    let claimed = f
        .table
        .allocate(tuple(7), &claim("alice"), f.at(5.0))
        .expect("claim");
    assert_eq!(
        claimed.relays.v4,
        Some(SocketAddr::new(p.ip(), p.port() + 1))
    );
    assert_eq!(f.table.stats().reservations, 0);
    assert_eq!(
        f.table
            .allocate(tuple(8), &claim("alice"), f.at(5.0))
            .map_err(|e| e.code()),
        Err(508)
    );
    f.check();
}

#[test]
fn reservations_expire() {
    let mut f = fixture();
    let mut req = AllocateRequest::new(txid(1), "alice", key());
    req.even_port = Some(true);
    let a = f.table.allocate(tuple(1), &req, f.t0).expect("pair");
    let token = a.reservation_token.expect("token");
    let ports = f.table.stats().ports_in_use;
    assert_eq!(ports, 2);
    f.table.expire(f.at(30.0));
    assert_eq!(f.table.stats().reservations, 0);
    assert_eq!(f.table.stats().ports_in_use, 1);
    let claim = AllocateRequest {
        reservation_token: Some(token),
        ..AllocateRequest::new(txid(2), "alice", key())
    };
    assert_eq!(
        f.table
            .allocate(tuple(2), &claim, f.at(30.0))
            .map_err(|e| e.code()),
        Err(508)
    );
    f.check();
}

#[test]
fn bind_failure_picks_another_port_and_quarantines() {
    let mut f = fixture_ports(50000, 50001);
    let first = f.allocate(1).relays.v4.expect("relay");
    let second = f
        .table
        .bind_failed(&tuple(1), first, f.t0)
        .expect("rebind")
        .relays
        .v4
        .expect("relay");
    assert_ne!(first, second);
    assert!(f.table.get_by_relay(first).is_none());
    assert_eq!(
        f.table.get_by_relay(second).map(|a| *a.tuple()),
        Some(tuple(1))
    );
    f.check();
    // The quarantined port is not offered to anyone for a minute.
    assert_eq!(
        f.table
            .allocate(
                tuple(2),
                &AllocateRequest::new(txid(1), "alice", key()),
                f.t0
            )
            .map_err(|e| e.code()),
        Err(508)
    );
    assert_eq!(f.table.next_expiry(), Some(f.at(60.0)));
    f.table.expire(f.at(60.0));
    assert_eq!(f.allocate(2).relays.v4, Some(first));
    // No port left at all: the allocation goes and 508 is returned.
    assert_eq!(
        f.table
            .bind_failed(&tuple(2), first, f.at(60.0))
            .map_err(|e| e.code()),
        Err(508)
    );
    assert!(f.table.get(&tuple(2)).is_none());
    assert_eq!(f.quotas.allocations(), 1);
    assert_eq!(
        f.table.bind_failed(&tuple(1), first, f.at(60.0)),
        Err(TurnError::BadRequest(
            "not a relayed address of this allocation"
        ))
    );
    f.check();
}

#[test]
fn bind_failure_keeps_even_port_and_moves_reservation() {
    let mut f = fixture_ports(50000, 50003);
    let mut req = AllocateRequest::new(txid(1), "alice", key());
    req.even_port = Some(true);
    let a = f.table.allocate(tuple(1), &req, f.t0).expect("pair");
    let b = f
        .table
        .bind_failed(&tuple(1), a.relays.v4.expect("relay"), f.t0)
        .expect("rebind");
    let relay = b.relays.v4.expect("relay");
    assert_eq!(relay.port() % 2, 0);
    assert_ne!(Some(relay), a.relays.v4);
    assert_ne!(b.reservation_token, a.reservation_token);
    assert!(b.reservation_token.is_some());
    assert_eq!(f.table.stats().reservations, 1);
    // Old pair: first port quarantined, old reservation released.
    assert_eq!(f.table.stats().ports_in_use, 3);
    f.check();
}

#[test]
fn policy_applies_to_permission_channel_and_send() {
    let mut f = fixture();
    f.allocate(1);
    let mut req = AllocateRequest::new(txid(2), "alice", key());
    req.requested_family = Some(AddressFamily::V6);
    f.table.allocate(tuple(2), &req, f.t0).expect("v6");
    assert_eq!(
        f.table
            .create_permission(&tuple(1), "alice", &[ip("127.0.0.1")], f.t0),
        Err(TurnError::Forbidden(DenyReason::Loopback))
    );
    assert_eq!(
        f.table
            .create_permission(&tuple(2), "alice", &[ip("::ffff:127.0.0.1")], f.t0),
        Err(TurnError::Forbidden(DenyReason::Loopback))
    );
    assert_eq!(
        f.table
            .create_permission(&tuple(2), "alice", &[ip("::1")], f.t0),
        Err(TurnError::Forbidden(DenyReason::Loopback))
    );
    assert_eq!(
        f.table
            .create_permission(&tuple(2), "alice", &[ip("2002:7f00:1::1")], f.t0),
        Err(TurnError::Forbidden(DenyReason::Loopback))
    );
    assert_eq!(
        f.table
            .channel_bind(&tuple(1), "alice", 0x4000, sa("169.254.169.254:80"), f.t0),
        Err(TurnError::Forbidden(DenyReason::LinkLocal))
    );
    assert_eq!(
        f.table
            .channel_bind(&tuple(1), "alice", 0x4000, sa("0.0.0.0:80"), f.t0),
        Err(TurnError::Forbidden(DenyReason::Unspecified))
    );
    assert_eq!(
        f.table
            .client_to_peer_via_send(&tuple(1), sa("10.0.0.1:80"), 1, f.t0),
        Err(DropReason::Denied(DenyReason::Private))
    );
    assert_eq!(
        f.table
            .client_to_peer_via_send(&tuple(2), sa("[::]:80"), 1, f.t0),
        Err(DropReason::Denied(DenyReason::Unspecified))
    );
    assert_eq!(f.table.stats().permissions, 0);
    assert_eq!(f.table.stats().channels, 0);
}

#[test]
fn allow_list_opens_loopback_for_tests() {
    let policy = AddressPolicy::new().allow(Cidr::host(ip("127.0.0.1")));
    let cfg = TableConfig {
        relay_ips: vec![ip("127.0.0.1")],
        ..config()
    };
    let mut f = fixture_with(cfg, policy, QuotaLimits::default());
    let relay = f.allocate(1).relays.v4.expect("relay");
    let peer = sa("127.0.0.1:34800");
    f.table
        .channel_bind(&tuple(1), "alice", 0x4000, peer, f.t0)
        .expect("loopback allowed");
    assert!(f
        .table
        .client_to_peer_via_channel(&tuple(1), 0x4000, 100, f.t0)
        .is_ok());
    assert!(f.table.peer_to_client(relay, peer, 100, f.t0).is_ok());
    assert_eq!(
        f.table
            .create_permission(&tuple(1), "alice", &[ip("127.0.0.2")], f.t0),
        Err(TurnError::Forbidden(DenyReason::Loopback))
    );
}

#[test]
fn dont_fragment_is_reported() {
    let mut f = fixture();
    let req = AllocateRequest {
        dont_fragment: true,
        ..AllocateRequest::new(txid(1), "alice", key())
    };
    let a = f.table.allocate(tuple(1), &req, f.t0).expect("allocate");
    assert!(a.dont_fragment);
    assert_eq!(
        f.table.get(&tuple(1)).map(Allocation::dont_fragment),
        Some(true)
    );
}

#[test]
fn ipv6_scope_and_flowinfo_do_not_split_tuples() {
    let mut f = fixture();
    let plain = FiveTuple::new(
        sa("[2001:db8::1]:5000"),
        sa("[2001:db8::2]:3478"),
        ClientTransport::Tcp,
    );
    let noisy = FiveTuple {
        client: SocketAddr::V6(std::net::SocketAddrV6::new(
            "2001:db8::1".parse().expect("v6"),
            5000,
            7,
            3,
        )),
        ..plain
    };
    f.table
        .allocate(noisy, &AllocateRequest::new(txid(1), "alice", key()), f.t0)
        .expect("allocate");
    assert!(f.table.get(&plain).is_some());
    assert!(f.table.remove(&plain).is_some());
}

#[test]
fn timer_heap_stays_bounded_under_churn() {
    let mut f = fixture();
    for i in 0..20_000u32 {
        let t = tuple(u16::try_from(i % 1000).expect("port") + 1);
        let now = f.t0 + Duration::from_millis(u64::from(i));
        f.table
            .allocate(t, &AllocateRequest::new(txid(1), "alice", key()), now)
            .expect("allocate");
        f.table
            .create_permission(&t, "alice", &[ip("203.0.113.5")], now)
            .expect("permission");
        f.table.remove(&t).expect("remove");
        let s = f.table.stats();
        assert!(s.timer_entries <= 1024 + 2 * 2 + 3, "{s:?}");
    }
    f.check();
}

#[test]
fn config_errors_are_clear() {
    let t0 = Instant::now();
    let q = SharedQuotas::new(QuotaLimits::default());
    let p = Arc::new(AddressPolicy::new());
    let err = |cfg: TableConfig| {
        AllocationTable::new(cfg, p.clone(), q.clone(), t0)
            .map(|_| ())
            .expect_err("invalid")
            .to_string()
    };
    assert_eq!(err(TableConfig::default()), "no relay address configured");
    assert!(err(TableConfig {
        relay_ips: vec![ip("0.0.0.0")],
        ..config()
    })
    .contains("0.0.0.0"));
    assert!(err(TableConfig {
        relay_ips: vec![ip("192.0.2.10"), ip("192.0.2.10")],
        ..config()
    })
    .contains("twice"));
    assert_eq!(
        err(TableConfig {
            port_min: 60000,
            port_max: 50000,
            ..config()
        }),
        "bad relay port range 60000-50000: need 1 <= min <= max <= 65535"
    );
    assert!(err(TableConfig {
        max_lifetime: Duration::from_secs(10),
        ..config()
    })
    .contains("max lifetime"));
    assert_eq!(split_port_range(1, 2, 3, 0), None);
    assert_eq!(split_port_range(49152, 65535, 1, 0), Some((49152, 65535)));
    assert_eq!(split_port_range(1, 65535, 2, 1), Some((32768, 65535)));
}

// ----- property test: random operation sequences keep indexes consistent

mod prop {
    use super::*;
    use proptest::prelude::*;

    #[derive(Clone, Debug)]
    enum Op {
        Allocate {
            client: u8,
            dual: bool,
            even: bool,
        },
        Refresh {
            client: u8,
            lifetime: u32,
        },
        Permit {
            client: u8,
            peer: u8,
            v6: bool,
        },
        Bind {
            client: u8,
            number: u16,
            peer: u8,
            port: u8,
        },
        Send {
            client: u8,
            peer: u8,
        },
        ChannelData {
            client: u8,
            number: u16,
        },
        FromPeer {
            client: u8,
            peer: u8,
            port: u8,
        },
        BindFailed {
            client: u8,
        },
        Remove {
            client: u8,
        },
        Advance {
            secs: u16,
        },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u8..6, any::<bool>(), any::<bool>()).prop_map(|(client, dual, even)| Op::Allocate {
                client,
                dual,
                even
            }),
            (0u8..6, prop_oneof![Just(0u32), 1u32..4000])
                .prop_map(|(client, lifetime)| Op::Refresh { client, lifetime }),
            (0u8..6, 0u8..5, any::<bool>()).prop_map(|(client, peer, v6)| Op::Permit {
                client,
                peer,
                v6
            }),
            (0u8..6, 0x3ffeu16..0x4004, 0u8..5, 0u8..3).prop_map(|(client, number, peer, port)| {
                Op::Bind {
                    client,
                    number,
                    peer,
                    port,
                }
            }),
            (0u8..6, 0u8..5).prop_map(|(client, peer)| Op::Send { client, peer }),
            (0u8..6, 0x4000u16..0x4004)
                .prop_map(|(client, number)| Op::ChannelData { client, number }),
            (0u8..6, 0u8..5, 0u8..3).prop_map(|(client, peer, port)| Op::FromPeer {
                client,
                peer,
                port
            }),
            (0u8..6).prop_map(|client| Op::BindFailed { client }),
            (0u8..6).prop_map(|client| Op::Remove { client }),
            (0u16..700).prop_map(|secs| Op::Advance { secs }),
        ]
    }

    fn peer_ip(n: u8, v6: bool) -> IpAddr {
        if v6 {
            IpAddr::V6(std::net::Ipv6Addr::new(
                0x2001,
                0x4860,
                0,
                0,
                0,
                0,
                0,
                u16::from(n) + 1,
            ))
        } else {
            IpAddr::V4(std::net::Ipv4Addr::new(203, 0, 113, n + 1))
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        #[test]
        fn indexes_stay_consistent(ops in proptest::collection::vec(op(), 1..80)) {
            let cfg = TableConfig {
                port_min: 50000,
                port_max: 50011,
                max_permissions_per_allocation: 3,
                max_channels_per_allocation: 2,
                ..config()
            };
            let limits = QuotaLimits { max_allocations: 5, max_allocations_per_user: 4 };
            let mut f = fixture_with(cfg, AddressPolicy::new(), limits);
            let mut now = f.t0;
            for op in ops {
                let user = "u";
                match op {
                    Op::Allocate { client, dual, even } => {
                        let req = AllocateRequest {
                            additional_family: dual.then_some(AddressFamily::V6),
                            even_port: (even && !dual).then_some(false),
                            ..AllocateRequest::new(txid(client), user, key())
                        };
                        let _ = f.table.allocate(tuple(u16::from(client) + 1), &req, now);
                    }
                    Op::Refresh { client, lifetime } => {
                        let _ = f.table.refresh(&tuple(u16::from(client) + 1), user, Some(lifetime), None, now);
                    }
                    Op::Permit { client, peer, v6 } => {
                        let _ = f.table.create_permission(&tuple(u16::from(client) + 1), user, &[peer_ip(peer, v6)], now);
                    }
                    Op::Bind { client, number, peer, port } => {
                        let p = SocketAddr::new(peer_ip(peer, peer % 2 == 1), 4000 + u16::from(port));
                        let _ = f.table.channel_bind(&tuple(u16::from(client) + 1), user, number, p, now);
                    }
                    Op::Send { client, peer } => {
                        let p = SocketAddr::new(peer_ip(peer, false), 4000);
                        let _ = f.table.client_to_peer_via_send(&tuple(u16::from(client) + 1), p, 100, now);
                    }
                    Op::ChannelData { client, number } => {
                        if let Ok(fw) = f.table.client_to_peer_via_channel(&tuple(u16::from(client) + 1), number, 100, now) {
                            // The forward must name a live relay of that allocation.
                            let a = f.table.get(&tuple(u16::from(client) + 1));
                            prop_assert!(a.is_some_and(|a| a.relays().iter().any(|r| r == fw.relay)));
                        }
                    }
                    Op::FromPeer { client, peer, port } => {
                        let relay = f.table.get(&tuple(u16::from(client) + 1)).and_then(|a| a.relays().v4);
                        if let Some(relay) = relay {
                            let p = SocketAddr::new(peer_ip(peer, false), 4000 + u16::from(port));
                            if let Ok(d) = f.table.peer_to_client(relay, p, 100, now) {
                                prop_assert_eq!(d.tuple, tuple(u16::from(client) + 1));
                            }
                        }
                    }
                    Op::BindFailed { client } => {
                        let t = tuple(u16::from(client) + 1);
                        if let Some(relay) = f.table.get(&t).and_then(|a| a.relays().v4) {
                            let _ = f.table.bind_failed(&t, relay, now);
                        }
                    }
                    Op::Remove { client } => {
                        let _ = f.table.remove(&tuple(u16::from(client) + 1));
                    }
                    Op::Advance { secs } => {
                        now += Duration::from_secs(u64::from(secs));
                        f.table.expire(now);
                    }
                }
                if let Err(e) = f.table.check_invariants() {
                    return Err(TestCaseError::fail(e));
                }
                let s = f.table.stats();
                prop_assert_eq!(s.allocations, f.quotas.allocations());
                prop_assert!(s.timer_entries <= 2 * (s.allocations + s.permissions + s.channels + s.reservations) + 1024 + 8);
            }
            // Everything expires eventually and leaves nothing behind.
            now += Duration::from_secs(10_000);
            f.table.expire(now);
            let s = f.table.stats();
            prop_assert_eq!(s.allocations, 0);
            prop_assert_eq!(s.permissions, 0);
            prop_assert_eq!(s.channels, 0);
            prop_assert_eq!(s.reservations, 0);
            prop_assert_eq!(s.ports_in_use, 0);
            prop_assert_eq!(f.quotas.allocations(), 0);
            prop_assert_eq!(f.table.next_expiry(), None);
        }
    }
}

#[test]
fn expired_allocations_are_not_revived_before_collection() {
    let mut f = fixture();
    f.allocate(1);
    // The timer has not run, but the allocation is past its expiry.
    assert_eq!(
        f.table.refresh(&tuple(1), "alice", None, None, f.at(600.0)),
        Err(TurnError::AllocationMismatch)
    );
    assert_eq!(
        f.table
            .create_permission(&tuple(1), "alice", &[ip("203.0.113.5")], f.at(600.0)),
        Err(TurnError::AllocationMismatch)
    );
    // A new Allocate on the 5-tuple replaces it (new transaction ID).
    let a = f
        .table
        .allocate(
            tuple(1),
            &AllocateRequest::new(txid(2), "alice", key()),
            f.at(600.0),
        )
        .expect("fresh allocation");
    assert_eq!(a.lifetime, 600 * SEC);
    assert_eq!(f.quotas.allocations(), 1);
    assert!(f.table.expire(f.at(600.0)).is_empty(), "old timer is stale");
    f.check();
}

// ----- EVEN-PORT reservations across the tables of one server -----------

/// Two worker tables of one server: shared quotas (and with them the port
/// space and reservation registry), disjoint slices of one relay IP.
struct Pair {
    a: AllocationTable,
    b: AllocationTable,
    quotas: Arc<SharedQuotas>,
    t0: Instant,
}

fn pair_with(a: (u16, u16), b: (u16, u16), limits: QuotaLimits) -> Pair {
    let t0 = Instant::now();
    let quotas = SharedQuotas::new(limits);
    let table = |(lo, hi): (u16, u16), seed: u64| {
        AllocationTable::with_rng(
            TableConfig {
                relay_ips: vec![ip("192.0.2.10")],
                port_min: lo,
                port_max: hi,
                ..config()
            },
            Arc::new(AddressPolicy::new()),
            quotas.clone(),
            t0,
            StdRng::seed_from_u64(seed),
        )
        .expect("valid config")
    };
    Pair {
        a: table(a, 11),
        b: table(b, 12),
        quotas,
        t0,
    }
}

fn pair() -> Pair {
    pair_with((50000, 50003), (50004, 50007), QuotaLimits::default())
}

fn at(t0: Instant, secs: f64) -> Instant {
    t0 + Duration::from_secs_f64(secs)
}

impl Pair {
    fn check(&self) {
        for t in [&self.a, &self.b] {
            if let Err(e) = t.check_invariants() {
                panic!("invariant broken: {e}");
            }
        }
    }
}

fn reserve_pair(
    t: &mut AllocationTable,
    client: u16,
    now: Instant,
) -> (SocketAddr, ReservationToken) {
    let mut req = AllocateRequest::new(txid(1), "alice", key());
    req.even_port = Some(true);
    let a = t.allocate(tuple(client), &req, now).expect("EVEN-PORT R=1");
    (
        a.relays.v4.expect("relay"),
        a.reservation_token.expect("token"),
    )
}

fn claim_req(user: &str, token: ReservationToken) -> AllocateRequest<'_> {
    AllocateRequest {
        reservation_token: Some(token),
        ..AllocateRequest::new(txid(9), user, key())
    }
}

fn plain(t: &mut AllocationTable, client: u16, now: Instant) -> Result<SocketAddr, u16> {
    t.allocate(
        tuple(client),
        &AllocateRequest::new(txid(1), "alice", key()),
        now,
    )
    .map(|a| a.relays.v4.expect("relay"))
    .map_err(|e| e.code())
}

#[test]
fn reservation_made_in_one_table_is_claimed_in_another() {
    let mut p = pair();
    let (rtp, token) = reserve_pair(&mut p.a, 1, p.t0);
    assert_eq!(rtp.port() % 2, 0);
    assert!((50000..=50003).contains(&rtp.port()), "{rtp}");
    assert_eq!(p.a.stats().reservations, 1);
    assert_eq!(p.a.stats().ports_in_use, 2);
    // The RTCP Allocate comes from another client port and lands in B.
    let rtcp =
        p.b.allocate(tuple(2), &claim_req("alice", token), at(p.t0, 1.0))
            .expect("claim in the other table");
    let rtcp = rtcp.relays.v4.expect("relay");
    assert_eq!(rtcp, SocketAddr::new(rtp.ip(), rtp.port() + 1));
    assert_eq!(p.b.get_by_relay(rtcp).map(|a| *a.tuple()), Some(tuple(2)));
    assert_eq!(p.a.stats().reservations, 0, "claimed: no longer A's");
    assert_eq!(p.a.stats().ports_in_use, 1);
    assert_eq!(p.b.stats().ports_in_use, 1);
    assert_eq!(p.quotas.allocations(), 2);
    p.check();
    // A's reservation timer finds it claimed and releases nothing: A's
    // slice has exactly two ports left.
    p.a.expire(at(p.t0, 31.0));
    assert_eq!(p.a.stats().ports_in_use, 1);
    let others: Vec<SocketAddr> = (3..=4)
        .map(|c| plain(&mut p.a, c, at(p.t0, 31.0)).expect("free port"))
        .collect();
    assert!(!others.contains(&rtcp) && !others.contains(&rtp));
    assert_eq!(plain(&mut p.a, 5, at(p.t0, 31.0)), Err(508));
    // B's allocation ends: the port goes back to the shared space, where
    // A's next pick finds it.
    assert!(matches!(
        p.b.refresh(&tuple(2), "alice", Some(0), None, at(p.t0, 32.0)),
        Ok(RefreshOutcome::Deleted { .. })
    ));
    assert_eq!(p.b.stats().ports_in_use, 0);
    assert_eq!(plain(&mut p.a, 5, at(p.t0, 32.0)), Ok(rtcp));
    p.check();
}

#[test]
fn unclaimed_reservation_expires_and_frees_its_port() {
    let mut p = pair_with((50000, 50001), (50002, 50003), QuotaLimits::default());
    let (rtp, token) = reserve_pair(&mut p.a, 1, p.t0);
    assert_eq!(rtp.port(), 50000);
    assert_eq!(plain(&mut p.a, 2, p.t0), Err(508), "50001 is reserved");
    assert_eq!(p.a.next_expiry(), Some(at(p.t0, 30.0)));
    p.a.expire(at(p.t0, 30.0));
    assert_eq!(p.a.stats().reservations, 0);
    assert_eq!(p.a.stats().ports_in_use, 1);
    assert_eq!(
        p.b.allocate(tuple(3), &claim_req("alice", token), at(p.t0, 30.0))
            .map_err(|e| e.code()),
        Err(508)
    );
    assert_eq!(p.quotas.allocations(), 1, "a refused claim holds no quota");
    assert_eq!(
        plain(&mut p.a, 2, at(p.t0, 30.0)),
        Ok(SocketAddr::new(rtp.ip(), 50001))
    );
    p.check();
}

#[test]
fn claim_after_expiry_is_refused_even_before_the_owner_collects_it() {
    let mut p = pair_with((50000, 50001), (50002, 50003), QuotaLimits::default());
    let (_, token) = reserve_pair(&mut p.a, 1, p.t0);
    // A has not run its timer; B must still see the token as expired, and
    // the port must come free either way.
    assert_eq!(
        p.b.allocate(tuple(3), &claim_req("alice", token), at(p.t0, 30.0))
            .map_err(|e| e.code()),
        Err(508)
    );
    p.a.expire(at(p.t0, 30.0));
    assert_eq!(p.a.stats().reservations, 0);
    assert_eq!(
        plain(&mut p.a, 2, at(p.t0, 30.0)),
        Ok(sa("192.0.2.10:50001"))
    );
    p.check();
}

#[test]
fn a_token_is_claimed_once_across_tables() {
    let mut p = pair();
    let (rtp, token) = reserve_pair(&mut p.a, 1, p.t0);
    let first =
        p.b.allocate(tuple(2), &claim_req("alice", token), p.t0)
            .expect("claim");
    assert_eq!(first.relays.v4.map(|r| r.port()), Some(rtp.port() + 1));
    for (table, client) in [(&mut p.a, 3), (&mut p.b, 4)] {
        assert_eq!(
            table
                .allocate(tuple(client), &claim_req("alice", token), p.t0)
                .map_err(|e| e.code()),
            Err(508)
        );
    }
    // A retransmission of the claim on its own 5-tuple is still answered.
    let again =
        p.b.allocate(tuple(2), &claim_req("alice", token), p.t0)
            .expect("retransmission");
    assert_eq!(again.relays, first.relays);
    assert_eq!(p.quotas.allocations(), 2);
    p.check();
}

#[test]
fn another_user_cannot_claim_a_reservation() {
    let mut p = pair();
    let (rtp, token) = reserve_pair(&mut p.a, 1, p.t0);
    assert_eq!(
        p.b.allocate(tuple(2), &claim_req("mallory", token), p.t0)
            .map_err(|e| e.code()),
        Err(508)
    );
    assert_eq!(p.quotas.allocations(), 1);
    assert_eq!(p.quotas.user_allocations("mallory"), 0);
    assert_eq!(p.a.stats().reservations, 1, "still held for alice");
    let claimed =
        p.b.allocate(tuple(3), &claim_req("alice", token), p.t0)
            .expect("owner's claim");
    assert_eq!(claimed.relays.v4.map(|r| r.port()), Some(rtp.port() + 1));
    p.check();
}

#[test]
fn a_quota_refusal_does_not_consume_the_token() {
    let mut p = pair_with(
        (50000, 50003),
        (50004, 50007),
        QuotaLimits {
            max_allocations: 100,
            max_allocations_per_user: 1,
        },
    );
    let (rtp, token) = reserve_pair(&mut p.a, 1, p.t0);
    assert_eq!(
        p.b.allocate(tuple(2), &claim_req("alice", token), p.t0)
            .map_err(|e| e.code()),
        Err(486)
    );
    assert_eq!(p.a.stats().reservations, 1);
    p.a.remove(&tuple(1));
    let claimed =
        p.b.allocate(tuple(2), &claim_req("alice", token), at(p.t0, 1.0))
            .expect("claim once the quota allows");
    assert_eq!(claimed.relays.v4.map(|r| r.port()), Some(rtp.port() + 1));
    p.check();
}

#[test]
fn concurrent_claims_of_one_token_have_one_winner() {
    for round in 0..50u64 {
        let mut p = pair();
        let (_, token) = reserve_pair(&mut p.a, 1, p.t0);
        let t0 = p.t0;
        let Pair { a, b, quotas, .. } = p;
        let results: Vec<Result<Allocated, TurnError>> = std::thread::scope(|s| {
            let handles: Vec<_> = [(a, 2u16), (b, 3u16)]
                .into_iter()
                .map(|(mut t, client)| {
                    s.spawn(move || t.allocate(tuple(client), &claim_req("alice", token), t0))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("claimer"))
                .collect()
        });
        let wins = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(wins, 1, "round {round}: {results:?}");
        assert_eq!(
            quotas.allocations(),
            2,
            "round {round}: loser's quota returned"
        );
    }
}

#[test]
fn a_reserved_port_that_cannot_be_bound_moves_the_pair() {
    let mut p = pair_with((50000, 50003), (50004, 50007), QuotaLimits::default());
    let mut req = AllocateRequest::new(txid(1), "alice", key());
    req.even_port = Some(true);
    let a = p.a.allocate(tuple(1), &req, p.t0).expect("pair");
    let first = a.relays.v4.expect("relay");
    let reserved = a.reserved.expect("reserved address to probe");
    assert_eq!(reserved, SocketAddr::new(first.ip(), first.port() + 1));
    let old_token = a.reservation_token.expect("token");
    // The shell could not bind the reserved port: the pair moves.
    let b = p.a.bind_failed(&tuple(1), reserved, p.t0).expect("moved");
    let second = b.relays.v4.expect("relay");
    assert_eq!(second.port() % 2, 0);
    assert_ne!(second, first);
    assert_eq!(
        b.reserved,
        Some(SocketAddr::new(second.ip(), second.port() + 1))
    );
    let new_token = b.reservation_token.expect("new token");
    assert_ne!(new_token, old_token);
    assert_eq!(p.a.stats().reservations, 1);
    // Relay, new reservation, the quarantined reserved port.
    assert_eq!(p.a.stats().ports_in_use, 3);
    p.check();
    // The old token is gone; the new one works from the other table.
    assert_eq!(
        p.b.allocate(tuple(2), &claim_req("alice", old_token), p.t0)
            .map_err(|e| e.code()),
        Err(508)
    );
    let claimed =
        p.b.allocate(tuple(3), &claim_req("alice", new_token), p.t0)
            .expect("claim");
    assert_eq!(claimed.relays.v4, b.reserved);
    // The first relayed port went back to the pool at once; the bad one
    // only after the quarantine.
    assert_eq!(plain(&mut p.a, 4, p.t0), Ok(first));
    assert_eq!(plain(&mut p.a, 5, p.t0), Err(508));
    p.a.expire(at(p.t0, 60.0));
    assert_eq!(plain(&mut p.a, 5, at(p.t0, 60.0)), Ok(reserved));
    p.check();
}

#[test]
fn a_bad_reserved_port_with_no_other_pair_ends_the_allocation() {
    let mut p = pair_with((50000, 50001), (50002, 50003), QuotaLimits::default());
    let mut req = AllocateRequest::new(txid(1), "alice", key());
    req.even_port = Some(true);
    let a = p.a.allocate(tuple(1), &req, p.t0).expect("pair");
    let reserved = a.reserved.expect("reserved");
    assert_eq!(
        p.a.bind_failed(&tuple(1), reserved, p.t0)
            .map_err(|e| e.code()),
        Err(508)
    );
    assert!(p.a.get(&tuple(1)).is_none());
    assert_eq!(p.quotas.allocations(), 0);
    assert_eq!(p.a.stats().reservations, 0);
    assert_eq!(p.a.stats().ports_in_use, 1, "the quarantined port");
    // An address that is neither relayed nor reserved is refused.
    p.a.allocate(
        tuple(2),
        &AllocateRequest::new(txid(1), "alice", key()),
        p.t0,
    )
    .expect("plain");
    assert_eq!(
        p.a.bind_failed(&tuple(2), sa("192.0.2.10:50003"), p.t0),
        Err(TurnError::BadRequest(
            "not a relayed address of this allocation"
        ))
    );
    p.check();
}
