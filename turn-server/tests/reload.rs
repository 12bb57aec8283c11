//! Reloading a running relay: new credentials and a renewed TLS certificate
//! take effect at once, allocations and connections stay, and a bad
//! configuration changes nothing. The last test sends SIGHUP to the
//! `turn-server` binary, as an operator would.

mod support;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rustls::pki_types::CertificateDer;
use support::{config, echo_peer, tls_connect, Client, Server, IO_TIMEOUT, PASSWORD, REALM, USER};
use turn_server::credentials::mint_rest_credentials;
use turn_server::service::Reloaded;
use turn_server::stun::Method;

fn users(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(u, p)| (u.to_string(), p.to_string()))
        .collect()
}

/// TURN REST credentials minted with `secret`, valid for an hour.
fn rest(secret: &str, user: &str) -> (String, String) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs();
    mint_rest_credentials(secret.as_bytes(), user, Duration::from_secs(3600), now)
}

/// The error code a fresh TCP connection gets allocating as `user`, or
/// `None` if the allocation succeeds.
fn allocate_as(server: SocketAddr, user: &str, password: &str) -> Option<u16> {
    let mut c = Client::tcp(server).with_user(user, password);
    c.try_authed(Method::ALLOCATE, |b| {
        b.requested_transport(17);
    })
    .err()
}

/// A client with an allocation and a channel to an echo peer.
fn relaying_client(server: SocketAddr) -> Client {
    let mut c = Client::tcp(server);
    c.allocate();
    c.bind(0x4001, echo_peer());
    assert_relays(&mut c);
    c
}

fn assert_relays(c: &mut Client) {
    c.send_channel_data(0x4001, b"still relayed");
    assert_eq!(c.channel_data(), (0x4001, b"still relayed".to_vec()));
}

#[test]
fn new_credentials_apply_at_once_and_allocations_stay() {
    let mut c = config();
    c.auth.secrets = vec!["s1".into()];
    let mut server = Server::start(c.clone());
    let tcp = server.tcp();
    let mut existing = relaying_client(tcp);
    let (s1_user, s1_pass) = rest("s1", "carol");
    let (s2_user, s2_pass) = rest("s2", "carol");
    assert_eq!(allocate_as(tcp, &s1_user, &s1_pass), None);
    assert_eq!(allocate_as(tcp, &s2_user, &s2_pass), Some(401));

    // Rotation: the static user is replaced, a new REST secret comes first
    // and the old one stays for the overlap.
    c.auth.users = users(&[("bob", "b0b")]);
    c.auth.secrets = vec!["s2".into(), "s1".into()];
    let r = server.service_mut().reload(&c).expect("reload");
    assert_eq!(
        r,
        Reloaded {
            users: 1,
            secrets: 2,
            certificate: false,
            needs_restart: vec![],
        }
    );
    assert_eq!(allocate_as(tcp, USER, PASSWORD), Some(401));
    assert_eq!(allocate_as(tcp, "bob", "b0b"), None);
    assert_eq!(allocate_as(tcp, &s1_user, &s1_pass), None);
    assert_eq!(allocate_as(tcp, &s2_user, &s2_pass), None);
    // The removed user's allocation keeps relaying, but its next request
    // is checked against the new credentials (not its cached key).
    assert_relays(&mut existing);
    let refused = existing.try_authed(Method::CREATE_PERMISSION, |b| {
        b.xor_peer_address("127.0.0.1:9".parse().unwrap());
    });
    assert_eq!(refused.err(), Some(401));

    // End of the overlap: the old secret goes.
    c.auth.secrets = vec!["s2".into()];
    server.service_mut().reload(&c).expect("reload");
    assert_eq!(allocate_as(tcp, &s1_user, &s1_pass), Some(401));
    assert_eq!(allocate_as(tcp, &s2_user, &s2_pass), None);

    // A bad configuration changes nothing; a change that needs a restart
    // is reported and not applied.
    let mut bad = c.clone();
    bad.listen.udp.clear();
    bad.listen.tcp.clear();
    bad.listen.tls.clear();
    assert!(server.service_mut().reload(&bad).is_err());
    assert_eq!(allocate_as(tcp, "bob", "b0b"), None);
    let mut realm = c.clone();
    realm.server.realm = "elsewhere.example".into();
    let r = server.service_mut().reload(&realm).expect("reload");
    assert_eq!(r.needs_restart, ["server"]);
    assert_eq!(allocate_as(tcp, "bob", "b0b"), None, "realm {REALM} kept");
    let ok = Some(("result", "ok"));
    assert_eq!(server.metric("turn_config_reloads_total", ok), 3);
    let error = Some(("result", "error"));
    assert_eq!(server.metric("turn_config_reloads_total", error), 1);
}

/// A self-signed certificate for 127.0.0.1 written to `dir`.
fn write_certificate(dir: &Path) -> CertificateDer<'static> {
    let c = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).unwrap();
    std::fs::write(dir.join("cert.pem"), c.cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), c.signing_key.serialize_pem()).unwrap();
    c.cert.der().clone()
}

/// Whether a TLS handshake with `server` succeeds for a client that trusts
/// only `root`.
fn handshake(server: SocketAddr, root: &CertificateDer<'static>) -> Result<(), rustls::Error> {
    let (mut conn, mut tcp) = tls_connect(server, root);
    while conn.is_handshaking() {
        if let Err(e) = conn.complete_io(&mut tcp) {
            // A refused certificate surfaces as rustls' error inside io.
            return Err(e
                .into_inner()
                .and_then(|e| e.downcast::<rustls::Error>().ok())
                .map(|e| *e)
                .unwrap_or(rustls::Error::HandshakeNotComplete));
        }
    }
    Ok(())
}

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!(
            "{name}-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn a_renewed_certificate_is_served_to_new_connections() {
    let dir = TempDir::new("turn-reload-cert");
    let first = write_certificate(&dir.0);
    let mut c = config();
    c.tls.dev_cert = false;
    c.tls.cert = Some(dir.0.join("cert.pem"));
    c.tls.key = Some(dir.0.join("key.pem"));
    let mut server = Server::start(c.clone());
    let tls = server.tls();
    let mut before = Client::tls(tls, &first);
    before.binding();

    // The operator's renewal job replaces the files, then reloads.
    let renewed = write_certificate(&dir.0);
    let r = server.service_mut().reload(&c).expect("reload");
    assert!(r.certificate);
    assert_eq!(
        server.service().tls_certificates(),
        std::slice::from_ref(&renewed)
    );
    assert!(
        handshake(tls, &first).is_err(),
        "old certificate still served"
    );
    assert_eq!(handshake(tls, &renewed), Ok(()));
    Client::tls(tls, &renewed).binding();
    // The connection made before the renewal carries on.
    before.binding();

    // A broken file: an error naming it, and the renewed certificate stays.
    std::fs::write(dir.0.join("cert.pem"), "not a certificate").unwrap();
    let e = format!("{:#}", server.service_mut().reload(&c).unwrap_err());
    assert!(e.contains("cannot read TLS certificate"), "{e}");
    assert_eq!(handshake(tls, &renewed), Ok(()));
}

/// The `turn-server` binary, stopped and reaped on drop.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn signal(p: &Process, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &p.0.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
}

/// Waits (bounded) until `done` holds.
fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out: {what}");
        thread::sleep(Duration::from_millis(50));
    }
}

fn read(path: &Path) -> String {
    let mut s = String::new();
    if let Ok(mut f) = std::fs::File::open(path) {
        let _ = f.read_to_string(&mut s);
    }
    s
}

#[test]
fn sighup_reloads_the_binary() {
    let dir = TempDir::new("turn-reload-bin");
    // A free port for the TCP listener (released just before the start).
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let tcp: SocketAddr = ([127, 0, 0, 1], port).into();
    let file = dir.0.join("turn-server.toml");
    let write_config = |users: &str| {
        let text = format!(
            "[server]\nrealm = \"{REALM}\"\nworkers = 1\n\
             [listen]\nudp = []\ntcp = [\"{tcp}\"]\n\
             [auth]\nusers = {{ {users} }}\n\
             [policy]\nallow = [\"127.0.0.1/32\"]\n"
        );
        let mut f = std::fs::File::create(&file).unwrap();
        f.write_all(text.as_bytes()).unwrap();
    };
    write_config(&format!("{USER} = \"{PASSWORD}\""));
    let log = dir.0.join("turn-server.log");
    let mut server = Process(
        Command::new(env!("CARGO_BIN_EXE_turn-server"))
            .arg("--config")
            .arg(&file)
            .env("RUST_LOG", "info")
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .expect("turn-server starts"),
    );
    eventually("the TCP listener", || TcpStream::connect(tcp).is_ok());
    let mut existing = relaying_client(tcp);

    write_config("bob = \"b0b\"");
    signal(&server, "HUP");
    eventually("bob accepted", || allocate_as(tcp, "bob", "b0b").is_none());
    assert_eq!(allocate_as(tcp, USER, PASSWORD), Some(401));
    assert_relays(&mut existing);

    // An invalid file: logged, and the running configuration stays.
    std::fs::write(&file, "[listen\nnot toml").unwrap();
    signal(&server, "HUP");
    eventually("the failed reload logged", || {
        read(&log).contains("reload failed")
    });
    assert_eq!(allocate_as(tcp, "bob", "b0b"), None);
    assert!(read(&log).contains("configuration reloaded"));

    signal(&server, "TERM");
    let deadline = Instant::now() + IO_TIMEOUT;
    let status = loop {
        if let Some(status) = server.0.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "still running after SIGTERM");
        thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status}");
}
