//! What the run cost the server: CPU time and RSS from `/proc/PID` and the
//! forwarded-packet counter from the SFU's Prometheus `/metrics`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use anyhow::Context;

/// The SFU's counter of packets forwarded to subscribers.
pub const FORWARDED_METRIC: &str = "sfu_rtp_packets_forwarded_total";

/// CPU and memory of a process at one instant.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcSample {
    /// User + system CPU seconds so far.
    pub cpu_secs: f64,
    /// Resident set size, bytes.
    pub rss_bytes: u64,
}

/// Reads `/proc/PID/stat` (utime, stime) and `/proc/PID/statm` (resident pages).
pub fn sample_process(pid: u32) -> anyhow::Result<ProcSample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm"))
        .with_context(|| format!("reading /proc/{pid}/statm"))?;
    parse_proc(&stat, &statm, clock_ticks(), page_size())
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 {
        p as u64
    } else {
        4096
    }
}

/// Parses the two proc files (the command name may contain spaces and
/// parentheses, so fields are counted after the last `)`).
pub fn parse_proc(
    stat: &str,
    statm: &str,
    ticks_per_sec: f64,
    page: u64,
) -> anyhow::Result<ProcSample> {
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("malformed stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3, utime 14, stime 15 (1-based in proc(5)).
    let get = |n: usize| -> anyhow::Result<f64> {
        fields
            .get(n - 3)
            .and_then(|v| v.parse::<f64>().ok())
            .context("malformed stat field")
    };
    let cpu_secs = (get(14)? + get(15)?) / ticks_per_sec;
    let resident: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .context("malformed statm")?;
    Ok(ProcSample {
        cpu_secs,
        rss_bytes: resident * page,
    })
}

/// GETs a Prometheus text endpoint (`http://host:port/path`) and sums `metric`.
pub fn scrape(url: &str, metric: &str) -> anyhow::Result<f64> {
    let rest = url
        .strip_prefix("http://")
        .context("metrics URL must be http://")?;
    let (host, path) = rest
        .split_once('/')
        .map(|(h, p)| (h, format!("/{p}")))
        .unwrap_or((rest, "/metrics".into()));
    let addr = std::net::ToSocketAddrs::to_socket_addrs(host)?
        .next()
        .context("metrics host does not resolve")?;
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n")?;
    let mut body = Vec::new();
    s.take(64 << 20).read_to_end(&mut body)?;
    let text = String::from_utf8_lossy(&body);
    let (_, body) = text.split_once("\r\n\r\n").context("no HTTP body")?;
    Ok(sum_metric(body, metric))
}

/// Sums every sample of `metric` (all label sets) in Prometheus text.
pub fn sum_metric(text: &str, metric: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.split(['{', ' ']).next() == Some(metric))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Server cost over a window, from two samples.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ServerCost {
    /// Window length, seconds.
    pub window_secs: f64,
    /// CPU seconds the server used in the window.
    pub cpu_secs: Option<f64>,
    /// CPU utilisation, percent of one core.
    pub cpu_pct: Option<f64>,
    /// RSS at the end, MiB.
    pub rss_mib: Option<f64>,
    /// Packets forwarded in the window.
    pub forwarded_packets: Option<f64>,
    /// Forwarded packets per second.
    pub forwarded_pps: Option<f64>,
    /// CPU µs per forwarded packet.
    pub cpu_us_per_packet: Option<f64>,
}

/// One sample of whatever sources were given.
#[derive(Debug, Clone, Copy, Default)]
pub struct CostSample {
    proc: Option<ProcSample>,
    forwarded: Option<f64>,
    at: Option<std::time::Instant>,
}

/// Samples the given sources (errors leave that part empty).
pub fn sample(pid: Option<u32>, metrics: Option<&str>) -> CostSample {
    CostSample {
        proc: pid.and_then(|p| sample_process(p).ok()),
        forwarded: metrics.and_then(|u| scrape(u, FORWARDED_METRIC).ok()),
        at: Some(std::time::Instant::now()),
    }
}

/// The cost between two samples.
pub fn cost(a: &CostSample, b: &CostSample) -> ServerCost {
    let window = match (a.at, b.at) {
        (Some(x), Some(y)) => y.saturating_duration_since(x).as_secs_f64(),
        _ => 0.0,
    };
    let cpu = match (a.proc, b.proc) {
        (Some(x), Some(y)) => Some(y.cpu_secs - x.cpu_secs),
        _ => None,
    };
    let fwd = match (a.forwarded, b.forwarded) {
        (Some(x), Some(y)) => Some(y - x),
        _ => None,
    };
    ServerCost {
        window_secs: window,
        cpu_secs: cpu,
        cpu_pct: cpu.filter(|_| window > 0.0).map(|c| c * 100.0 / window),
        rss_mib: b.proc.map(|p| p.rss_bytes as f64 / (1024.0 * 1024.0)),
        forwarded_packets: fwd,
        forwarded_pps: fwd.filter(|_| window > 0.0).map(|f| f / window),
        cpu_us_per_packet: match (cpu, fwd) {
            (Some(c), Some(f)) if f > 0.0 => Some(c * 1e6 / f),
            _ => None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_and_metrics() {
        let stat = "1234 (sfu (worker) x) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 9 0 100 200000000 5000";
        let s = parse_proc(stat, "50000 2560 100 1 0 300 0", 100.0, 4096).unwrap();
        assert!((s.cpu_secs - 3.0).abs() < 1e-9);
        assert_eq!(s.rss_bytes, 2560 * 4096);
        assert!(parse_proc("garbage", "", 100.0, 4096).is_err());
        let text = "# HELP x\nsfu_rtp_packets_forwarded_total 1500\nsfu_rtp_packets_forwarded_total_x 9\nother{a=\"b\"} 3\n";
        assert_eq!(sum_metric(text, FORWARDED_METRIC), 1500.0);
        let a = CostSample {
            proc: Some(ProcSample {
                cpu_secs: 1.0,
                rss_bytes: 0,
            }),
            forwarded: Some(0.0),
            at: Some(std::time::Instant::now()),
        };
        let mut b = a;
        b.proc = Some(ProcSample {
            cpu_secs: 1.5,
            rss_bytes: 1 << 20,
        });
        b.forwarded = Some(250_000.0);
        b.at = a.at.map(|t| t + Duration::from_secs(10));
        let c = cost(&a, &b);
        assert!((c.cpu_us_per_packet.unwrap() - 2.0).abs() < 1e-9);
        assert!((c.forwarded_pps.unwrap() - 25_000.0).abs() < 1e-9);
        assert_eq!(c.rss_mib, Some(1.0));
    }
}
