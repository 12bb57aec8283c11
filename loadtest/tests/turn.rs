//! `loadtest turn` against the project's TURN server on loopback: every
//! allocation becomes ready (Allocate with its 401 round, CreatePermission,
//! ChannelBind) and ChannelData comes back from the echo peer.

use loadtest::turn::driver::{self, Credentials, TurnOptions};
use turn_server::config::TurnConfig;
use turn_server::service::TurnService;

const SECRET: &str = "loadtest-turn-secret";

fn start_turn() -> TurnService {
    let text = format!(
        r#"
[server]
realm = "loadtest"
workers = 1
[listen]
udp = ["127.0.0.1:0"]
tcp = []
[auth]
users = {{ lt = "lt-password" }}
secrets = ["{SECRET}"]
[policy]
allow = ["127.0.0.0/8"]
[limits]
bandwidth_bytes_per_s = 0
unauthenticated_per_s = 100000.0
unauthenticated_burst = 100000.0
max_allocations_per_user = 100000
"#
    );
    let path = std::env::temp_dir().join(format!("loadtest-turn-{}.toml", std::process::id()));
    std::fs::write(&path, text).expect("temp config");
    let config = TurnConfig::load(Some(&path), Vec::new()).expect("config");
    let _ = std::fs::remove_file(&path);
    TurnService::start(&config, &prometheus::Registry::new(), &[]).expect("relay starts")
}

fn options(server: std::net::SocketAddr, credentials: Credentials) -> TurnOptions {
    TurnOptions {
        server,
        allocations: 200,
        rate: 2000.0,
        duration_secs: 1.0,
        pps: 20.0,
        size: 200,
        threads: 2,
        credentials,
        peer_bind: "127.0.0.1:0".parse().unwrap(),
        spread_sources: true,
        server_pid: Some(std::process::id()),
        max_loss_pct: Some(5.0),
        quiet: true,
    }
}

#[test]
fn allocations_channels_and_echoed_channel_data() {
    let service = start_turn();
    let server = service.udp_addrs[0];
    for credentials in [
        Credentials::Rest {
            secret: SECRET.into(),
        },
        Credentials::LongTerm {
            user: "lt".into(),
            password: "lt-password".into(),
        },
    ] {
        let s = driver::run(&options(server, credentials)).expect("turn run");
        println!("{}", driver::table(&s));
        assert_eq!(s.ready, 200, "{:?}", s.errors);
        assert_eq!(s.failed, 0);
        assert!(s.allocations_per_sec > 0.0);
        // 200 allocations × 20 packets/s × 1 s, give or take the edges.
        assert!(s.sent >= 3000, "{}", s.sent);
        assert!(s.loss_pct < 5.0, "{}", s.loss_pct);
        assert!(s.rtt_ms.count > 0 && s.rtt_ms.p50 > 0.0);
        assert!(s.relayed_per_sec > 0.0);
        assert!(s.violations.is_empty(), "{:?}", s.violations);
    }
    // Wrong credentials: nothing becomes ready and the run fails its check.
    let mut bad = options(
        server,
        Credentials::Rest {
            secret: "wrong".into(),
        },
    );
    bad.allocations = 5;
    bad.duration_secs = 0.1;
    let s = driver::run(&bad).expect("turn run");
    assert_eq!(s.ready, 0);
    assert_eq!(s.failed, 5);
    assert!(!s.violations.is_empty());
    service.stop();
}
