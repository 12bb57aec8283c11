//! Third-party clients against the relay over UDP: coturn's
//! `turnutils_uclient` (long-term and TURN REST credentials) and
//! `turnutils_stunclient`, and the webrtc-rs `turn` client. The coturn tools
//! come from Debian's `coturn` package, which `scripts/test-deps.sh` installs.

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use turn_server::config::TurnConfig;
use turn_server::service::TurnService;

const SECRET: &str = "interop-rest-secret";

/// A relay on an ephemeral UDP port allowing loopback peers.
fn start_relay() -> (TurnService, prometheus::Registry) {
    let text = format!(
        r#"
[server]
realm = "interop.test"
workers = 2
[listen]
udp = ["127.0.0.1:0"]
tcp = ["127.0.0.1:0"]
tls = ["127.0.0.1:0"]
[tls]
dev_cert = true
[auth]
users = {{ test = "test123" }}
secrets = ["{SECRET}"]
[policy]
allow = ["127.0.0.1/32"]
[limits]
max_allocations_per_user = 10000
bandwidth_bytes_per_s = 0
unauthenticated_per_s = 10000.0
unauthenticated_burst = 10000.0
"#
    );
    // One file per relay: the tests of this binary start relays in parallel.
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = std::env::temp_dir().join(format!("turn-interop-{}-{n}.toml", std::process::id()));
    std::fs::write(&path, text).expect("temp config");
    let config = TurnConfig::load(Some(&path), Vec::new()).expect("config");
    let _ = std::fs::remove_file(&path);
    // Parallel tests bind ephemeral ports at once; a rare collision on a
    // port-0 bind is retried rather than failing the test.
    let mut last = None;
    for _ in 0..3 {
        let registry = prometheus::Registry::new();
        match TurnService::start(&config, &registry, &[]) {
            Ok(service) => return (service, registry),
            Err(e) => last = Some(e),
        }
    }
    panic!("relay starts: {last:?}")
}

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn require(tool: &str) {
    let found = std::process::Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "{tool} missing: run scripts/test-deps.sh (Debian package coturn)"
    );
}

/// `turnutils_peer` echoing on `port`, killed on drop.
struct Peer(std::process::Child);

impl Peer {
    fn start(port: u16) -> Peer {
        require("turnutils_peer");
        let child = std::process::Command::new("turnutils_peer")
            .args(["-L", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("turnutils_peer starts");
        std::thread::sleep(Duration::from_millis(300));
        Peer(child)
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs turnutils_uclient (bounded by a timeout) and returns its output.
fn uclient(relay: SocketAddr, peer_port: u16, extra: &[&str]) -> String {
    uclient_at(relay.port(), peer_port, extra)
}

fn uclient_at(port: u16, peer_port: u16, extra: &[&str]) -> String {
    require("turnutils_uclient");
    let mut args: Vec<String> = [
        "60",
        "turnutils_uclient",
        "-z",
        "1",
        "-m",
        "10",
        "-n",
        "200",
        "-l",
        "500",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    args.extend([
        "-e".into(),
        "127.0.0.1".into(),
        "-r".into(),
        peer_port.to_string(),
        "-p".into(),
        port.to_string(),
        "127.0.0.1".into(),
    ]);
    let out = std::process::Command::new("timeout")
        .args(&args)
        .output()
        .expect("uclient runs");
    String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr)
}

fn assert_no_loss(output: &str) {
    assert!(
        output.contains("Total lost packets 0 (0.000000%)"),
        "uclient reported loss or failed:\n{}",
        output.lines().rev().take(15).collect::<Vec<_>>().join("\n")
    );
    assert!(
        output.contains("tot_recv_msgs=2000"),
        "not every message came back:\n{output}"
    );
}

#[test]
fn coturn_uclient_relays_without_loss_with_long_term_credentials() {
    let (relay, registry) = start_relay();
    let peer_port = free_udp_port();
    let _peer = Peer::start(peer_port);
    let output = uclient(
        relay.udp_addrs[0],
        peer_port,
        &["-u", "test", "-w", "test123"],
    );
    assert_no_loss(&output);
    let metrics = prometheus::TextEncoder::new()
        .encode_to_string(&registry.gather())
        .unwrap_or_default();
    assert!(
        metrics.contains("turn_relayed_packets_total{direction=\"to_peer\"} 2000"),
        "{metrics}"
    );
    relay.stop();
}

#[test]
fn coturn_uclient_relays_without_loss_with_rest_credentials() {
    let (relay, _) = start_relay();
    let peer_port = free_udp_port();
    let _peer = Peer::start(peer_port);
    let output = uclient(
        relay.udp_addrs[0],
        peer_port,
        &["-u", "alice", "-W", SECRET],
    );
    assert_no_loss(&output);
    // A wrong secret is refused.
    let refused = uclient(
        relay.udp_addrs[0],
        peer_port,
        &["-u", "alice", "-W", "wrong-secret"],
    );
    assert!(
        !refused.contains("Total lost packets 0"),
        "a wrong REST secret was accepted:\n{refused}"
    );
    relay.stop();
}

#[test]
fn coturn_uclient_relays_without_loss_over_tcp_and_tls() {
    let (relay, _) = start_relay();
    let peer_port = free_udp_port();
    let _peer = Peer::start(peer_port);
    let auth = ["-u", "test", "-w", "test123"];
    let tcp = uclient_at(
        relay.tcp_addrs[0].port(),
        peer_port,
        &[&["-t"][..], &auth].concat(),
    );
    assert_no_loss(&tcp);
    let tls = uclient_at(
        relay.tls_addrs[0].port(),
        peer_port,
        &[&["-t", "-S"][..], &auth].concat(),
    );
    assert_no_loss(&tls);
    relay.stop();
}

#[test]
fn coturn_stunclient_gets_its_reflexive_address() {
    require("turnutils_stunclient");
    let (relay, _) = start_relay();
    let out = std::process::Command::new("timeout")
        .args([
            "10",
            "turnutils_stunclient",
            "-p",
            &relay.udp_addrs[0].port().to_string(),
            "127.0.0.1",
        ])
        .output()
        .expect("stunclient runs");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("UDP reflexive addr: 127.0.0.1:"), "{text}");
    relay.stop();
}

#[test]
fn webrtc_rs_turn_client_relays_to_an_echo_peer() {
    let (relay, _) = start_relay();
    let server = relay.udp_addrs[0];
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        use turn::client::{Client, ClientConfig};
        use webrtc_util::Conn;
        // The echo peer.
        let echo = Arc::new(tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let echo_addr = echo.local_addr().unwrap();
        let echo_task = {
            let echo = echo.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 2048];
                for _ in 0..10 {
                    let Ok((n, from)) = echo.recv_from(&mut buf).await else {
                        return;
                    };
                    let _ = echo.send_to(&buf[..n], from).await;
                }
            })
        };
        let conn = Arc::new(tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let client = Client::new(ClientConfig {
            stun_serv_addr: server.to_string(),
            turn_serv_addr: server.to_string(),
            username: "test".into(),
            password: "test123".into(),
            realm: "interop.test".into(),
            software: String::new(),
            rto_in_ms: 0,
            conn,
            vnet: None,
        })
        .await
        .expect("client");
        client.listen().await.expect("listen");
        let relay_conn = client.allocate().await.expect("allocate");
        let relayed = relay_conn.local_addr().expect("relayed address");
        assert_eq!(relayed.ip().to_string(), "127.0.0.1");
        let mut buf = vec![0u8; 2048];
        for i in 0..5u8 {
            let payload: Vec<u8> = (0..100).map(|j| j ^ i).collect();
            relay_conn.send_to(&payload, echo_addr).await.expect("send");
            let (n, from) =
                tokio::time::timeout(Duration::from_secs(5), relay_conn.recv_from(&mut buf))
                    .await
                    .expect("echo within 5 s")
                    .expect("recv");
            assert_eq!(from, echo_addr);
            assert_eq!(&buf[..n], &payload[..], "relayed bytes differ");
        }
        client.close().await.expect("close");
        echo_task.abort();
    });
    relay.stop();
}
