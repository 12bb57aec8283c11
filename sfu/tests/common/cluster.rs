//! A cluster on loopback for tests: a `redis-server` and `sfu` node
//! processes registered in it.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use sfu::cluster::registry::Registry;
use tokio::process::{Child, Command};

use super::eventually;

/// The secret every member of a test cluster shares.
pub const SECRET: &str = "cluster-test-secret-0123";

/// A free loopback TCP port (free when asked; the caller binds it soon).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind an ephemeral port")
        .local_addr()
        .expect("local address")
        .port()
}

/// A `redis-server` on a loopback port, without persistence (a restart
/// starts empty, as after a crash of a cache-only Redis).
pub struct Redis {
    pub port: u16,
    child: Option<Child>,
}

impl Redis {
    /// `None` (and a SKIPPED message) when `redis-server` is not installed.
    pub async fn start() -> Option<Redis> {
        if std::process::Command::new("redis-server")
            .arg("--version")
            .output()
            .is_err()
        {
            eprintln!("SKIPPED: `redis-server` not found (scripts/test-deps.sh installs it)");
            return None;
        }
        let mut r = Redis {
            port: free_port(),
            child: None,
        };
        r.spawn().await;
        Some(r)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Starts `redis-server` (again) on the same port; returns once it accepts.
    pub async fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server starts");
        self.child = Some(child);
        let addr: SocketAddr = ([127, 0, 0, 1], self.port).into();
        eventually(Duration::from_secs(10), "redis-server accepts", || async {
            tokio::net::TcpStream::connect(addr).await.is_ok()
        })
        .await;
    }

    /// SIGKILL.
    pub async fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().await.expect("kill redis-server");
        }
    }
}

/// How a node is started besides its id.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    /// The cluster secret.
    pub secret: String,
    /// `auth.key`; empty: development mode (the public key, `/dev/token`),
    /// the same on every node either way.
    pub auth_key: String,
    /// Registration lease in seconds (the default 5 when `None`).
    pub lease_s: Option<u64>,
    /// Disable the downlink estimation and assume this downlink (kbit/s)
    /// for every subscriber, so layers do not depend on this machine's load.
    pub fixed_downlink_kbps: Option<u32>,
}

impl Default for NodeOptions {
    fn default() -> Self {
        NodeOptions {
            secret: SECRET.into(),
            auth_key: String::new(),
            lease_s: None,
            fixed_downlink_kbps: None,
        }
    }
}

/// An `sfu` process, a member of the cluster of `Redis`, on loopback ports
/// (HTTP on a port picked here, media and trunk on ephemeral ones). Its
/// log goes to `target/artifacts/cluster/{test}/{id}.log` and its last
/// lines are printed if the test fails. Killed when dropped.
pub struct Node {
    pub id: String,
    pub http: SocketAddr,
    log: PathBuf,
    child: Child,
}

impl Node {
    /// Starts the node; returns once it is listed in the registry.
    pub async fn start(redis: &Redis, id: &str, options: &NodeOptions) -> Node {
        let http: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        // One directory per test (libtest names the test's thread after it).
        let test = std::thread::current()
            .name()
            .unwrap_or("test")
            .replace("::", "-");
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../target/artifacts/cluster")
            .join(test);
        std::fs::create_dir_all(&dir).expect("log directory");
        let log = dir.join(format!("{id}.log"));
        let out = std::fs::File::create(&log).expect("log file");
        let err = out.try_clone().expect("log file");
        // $CLUSTER_TEST_SFU_BIN runs another build (e.g. a commit to compare).
        let bin = std::env::var_os("CLUSTER_TEST_SFU_BIN")
            .unwrap_or_else(|| env!("CARGO_BIN_EXE_sfu").into());
        let mut cmd = Command::new(bin);
        cmd.env("SFU_HTTP_LISTEN", http.to_string())
            .env("SFU_MEDIA_UDP_LISTEN", "127.0.0.1:0")
            .env("SFU_MEDIA_ICE_TCP", "false")
            .env("SFU_MEDIA_WORKERS", "1")
            .env("SFU_TURN_ENABLED", "false")
            .env("SFU_FILES_ENABLED", "false")
            .env("SFU_LOG_LEVEL", "info")
            .env("SFU_AUTH_KEY", &options.auth_key)
            .env("SFU_CLUSTER_REDIS_URL", redis.url())
            .env("SFU_CLUSTER_SECRET", &options.secret)
            .env("SFU_CLUSTER_NODE_ID", id)
            .env("SFU_CLUSTER_TRUNK_LISTEN", "127.0.0.1:0");
        if let Some(lease) = options.lease_s {
            cmd.env("SFU_CLUSTER_LEASE_S", lease.to_string());
        }
        if let Some(kbps) = options.fixed_downlink_kbps {
            cmd.env("SFU_MEDIA_BANDWIDTH_ESTIMATION", "false")
                .env("SFU_MEDIA_INITIAL_DOWNLINK_KBPS", kbps.to_string());
        }
        let child = cmd
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true)
            .spawn()
            .expect("sfu starts");
        let node = Node {
            id: id.into(),
            http,
            log,
            child,
        };
        let registry = Registry::new(&redis.url(), Duration::from_secs(5)).expect("registry");
        eventually(
            Duration::from_secs(15),
            &format!("{id} registered"),
            || async {
                registry
                    .nodes()
                    .await
                    .is_ok_and(|n| n.iter().any(|r| r.id == id && r.http == http))
            },
        )
        .await;
        node
    }

    /// `http://` base URL of the node (what a browser opens).
    pub fn base(&self) -> String {
        format!("http://{}", self.http)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id().expect("running")
    }

    /// SIGKILL: the node dies without a word to anyone.
    pub async fn kill(&mut self) {
        self.child.kill().await.expect("kill sfu");
    }

    /// The node's `/metrics` text.
    pub async fn metrics(&self) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(self.http)
            .await
            .unwrap_or_else(|e| panic!("{} does not answer on {}: {e}", self.id, self.http));
        s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
            .await
            .expect("metrics request");
        let mut text = String::new();
        s.read_to_string(&mut text).await.expect("metrics answer");
        text
    }

    /// The sum of the samples whose line starts with `series` (a metric
    /// name, or a name and the start of its labels: `name{peer="node-b"`).
    pub async fn metric(&self, series: &str) -> f64 {
        sum_of(&self.metrics().await, series)
    }
}

/// The sum of the samples in `text` whose line starts with `series` (a
/// whole metric name, or a name and the start of its labels).
pub fn sum_of(text: &str, series: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(series)
                .is_some_and(|rest| series.contains('{') || rest.starts_with([' ', '{']))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

impl Drop for Node {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(40)..];
            eprintln!(
                "--- last lines of {} ({}):\n{}",
                self.id,
                self.log.display(),
                tail.join("\n")
            );
        }
    }
}
