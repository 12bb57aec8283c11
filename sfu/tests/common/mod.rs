//! Shared helpers for the SFU's loopback integration tests: a server on
//! ephemeral ports and a str0m-based test participant.

#![allow(dead_code)]

pub mod client;
pub mod cluster;

use std::time::Duration;

use sfu::auth::TokenAuthority;
use sfu::config::Config;
use sfu::server::Server;

/// The key the test servers use.
pub const KEY: &str = "integration-test-key";

/// A server on 127.0.0.1 with ephemeral ports and a short peer timeout.
pub async fn start_server(peer_timeout_ms: u64) -> Server {
    Server::start(test_config(peer_timeout_ms))
        .await
        .expect("server starts")
}

/// The configuration of [`start_server`], for tests that change more.
pub fn test_config(peer_timeout_ms: u64) -> Config {
    let mut config = Config::default();
    config.http.listen = "127.0.0.1:0".parse().unwrap();
    config.media.udp_listen = "127.0.0.1:0".parse().unwrap();
    config.media.tcp_listen = "127.0.0.1:0".parse().unwrap();
    config.media.peer_timeout_ms = peer_timeout_ms;
    config.auth.key = KEY.into();
    config.turn.udp = vec!["127.0.0.1:0".parse().unwrap()];
    config.turn.tcp = vec![];
    config
}

/// A valid token for `identity` in `room`.
pub fn token(room: &str, identity: &str) -> String {
    TokenAuthority::new(KEY)
        .mint(&TokenAuthority::grants(
            room,
            identity,
            Duration::from_secs(600),
        ))
        .unwrap()
}

/// The value of an unlabelled metric (or the sum over its labels).
pub async fn metric(server: &Server, name: &str) -> f64 {
    let text = http_get(server, "/metrics").await;
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.split(['{', ' ']).next() == Some(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// GET a path from the server's HTTP listener (plain HTTP/1.0 over TCP).
pub async fn http_get(server: &Server, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(server.http_addr)
        .await
        .unwrap();
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default()
}

/// Polls `check` every 50 ms until it is true or `within` passes.
pub async fn eventually<F, Fut>(within: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if check().await {
            return;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {within:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One HTTP/1.0 request; returns (status, headers lowercased, body).
pub async fn http_request(
    server: &Server,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, Vec<(String, String)>, String) {
    let r = http_request_bytes(server, method, path, headers, body.as_bytes()).await;
    let text = r.text();
    (r.status, r.headers, text)
}

/// An HTTP response: status, headers (names lowercased), body.
pub struct Reply {
    /// Status code (0 if the response had no status line).
    pub status: u16,
    /// Headers in order, names lowercased.
    pub headers: Vec<(String, String)>,
    /// The body as received.
    pub body: Vec<u8>,
}

impl Reply {
    /// The first header named `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One HTTP/1.0 request with a binary body.
pub async fn http_request_bytes(
    server: &Server,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Reply {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(server.http_addr)
        .await
        .unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.0\r\nHost: x\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head += &format!("{k}: {v}\r\n");
    }
    head += "\r\n";
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(body).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    let split = out.windows(4).position(|w| w == b"\r\n\r\n");
    let (head, body) = match split {
        Some(at) => (&out[..at], &out[at + 4..]),
        None => (&out[..], &[][..]),
    };
    let head = String::from_utf8_lossy(head).into_owned();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Reply {
        status,
        headers,
        body: body.to_vec(),
    }
}

/// The JSON report a test script (`tests/browser/*.mjs`) prints as its last
/// JSON line; fails the test unless the script exited 0 with `"ok": true`.
pub fn script_report(what: &str, output: &std::process::Output) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let report: serde_json::Value = stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("no JSON report from {what}:\n{stdout}\n{stderr}"));
    assert!(
        output.status.success() && report["ok"] == true,
        "{what} failed:\n{report:#}\n{stderr}"
    );
    eprintln!("{what}: {report}");
    report
}
