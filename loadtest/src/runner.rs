//! `loadtest run`: starts workers and the signaling thread, starts
//! participants at the join rate, lets media flow, samples server cost over
//! the steady part, stops everyone and builds the summary.

use std::net::{IpAddr, ToSocketAddrs, UdpSocket};
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::inbox::WorkerMsg;
use crate::participant::ParticipantSpec;
use crate::progress::Live;
use crate::report::{Summary, Thresholds};
use crate::scenario::{mint_token, Scenario};
use crate::server_cost;
use crate::signaling_url::SignalingUrl;
use crate::stats::Totals;
use crate::worker::Worker;

/// How to run and what to measure besides the scenario.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Thresholds that fail the run.
    pub thresholds: Thresholds,
    /// The SFU's pid, for CPU and RSS.
    pub sfu_pid: Option<u32>,
    /// The SFU's metrics URL, for the forwarded-packet counter.
    pub sfu_metrics: Option<String>,
    /// No progress line.
    pub quiet: bool,
}

/// The participants of a scenario, in start order: room by room,
/// publishers first.
pub fn participants(s: &Scenario) -> anyhow::Result<Vec<ParticipantSpec>> {
    let tracks = s.tracks_per_publisher();
    let mut out = Vec::new();
    let key = s.signing_key();
    // Once: a turn: URL with a host name is resolved here.
    let via_turn = s.via_turn();
    for r in 0..s.rooms {
        let room = format!("loadtest-{}-{r}", s.name);
        for k in 0..s.publishers + s.subscribers {
            let index = out.len() as u32;
            let publish = k < s.publishers;
            let subscribe = !publish || s.publishers_subscribe;
            let identity = format!("{}{index}", s.identity_prefix);
            let others =
                u64::from(s.publishers) + u64::from(s.remote_publishers) - u64::from(publish);
            out.push(ParticipantSpec {
                index,
                token: mint_token(key, &room, &identity, publish, subscribe)?,
                room: room.clone(),
                publish,
                subscribe,
                audio: s.audio,
                video: s.video_preset(),
                simulcast: s.simulcast,
                e2ee: s.e2ee,
                expected_tracks: if subscribe { others * tracks } else { 0 },
                via_turn: via_turn.clone(),
            });
        }
    }
    Ok(out)
}

/// The local address that routes to the SFU (participants bind there).
fn local_ip_towards(url: &SignalingUrl) -> anyhow::Result<IpAddr> {
    let addr = url
        .host_port()
        .to_socket_addrs()?
        .next()
        .context("SFU host does not resolve")?;
    let probe = UdpSocket::bind(if addr.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    })?;
    probe.connect(addr)?;
    Ok(probe.local_addr()?.ip())
}

/// Runs a scenario to the end.
pub fn run(s: &Scenario, opts: &RunOptions) -> anyhow::Result<Summary> {
    s.validate()?;
    crate::clock::epoch();
    let specs = participants(s)?;
    let url = s.signaling_url()?;
    let local_ip = local_ip_towards(&url)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("loadtest-signaling")
        .enable_all()
        .build()?;
    let mut live = Live::new(s.threads, specs.len() as u64, opts.quiet);
    let mut workers = Vec::new();
    for i in 0..s.threads {
        workers.push(Worker::start(
            i,
            url.url.clone(),
            local_ip,
            runtime.handle().clone(),
            live.workers[i].clone(),
        )?);
    }
    let start = Instant::now();
    let mut next_tick = start + Duration::from_secs(1);
    let interval = Duration::from_secs_f64(1.0 / s.join_rate);
    let n = specs.len();
    for (i, spec) in specs.into_iter().enumerate() {
        let at = start + interval * i as u32;
        while Instant::now() < at {
            let now = Instant::now();
            if now >= next_tick {
                live.tick();
                next_tick += Duration::from_secs(1);
            }
            std::thread::sleep(at.min(next_tick).saturating_duration_since(now));
        }
        workers[i % workers.len()]
            .inbox
            .deliver(WorkerMsg::Add(Box::new(spec)));
    }
    let started = Instant::now();
    let end = started + Duration::from_secs_f64(s.duration_secs);
    // Server cost over the steady part: after joins have settled.
    let warmup = Duration::from_secs_f64((s.duration_secs / 3.0).min(3.0));
    let mut before = None;
    while Instant::now() < end {
        let now = Instant::now();
        if before.is_none() && now >= started + warmup {
            before = Some(server_cost::sample(
                opts.sfu_pid,
                opts.sfu_metrics.as_deref(),
            ));
        }
        if now >= next_tick {
            live.tick();
            next_tick += Duration::from_secs(1);
        }
        let wake = end.min(next_tick).min(if before.is_none() {
            started + warmup
        } else {
            end
        });
        std::thread::sleep(
            wake.saturating_duration_since(now)
                .max(Duration::from_millis(1)),
        );
    }
    let after = server_cost::sample(opts.sfu_pid, opts.sfu_metrics.as_deref());
    let cost = server_cost::cost(&before.unwrap_or_default(), &after);
    live.tick();
    live.finish();
    let mut totals = Totals::default();
    for w in workers {
        totals.merge(&w.stop());
    }
    // Let the signaling tasks send `leave` before the runtime goes.
    runtime.shutdown_timeout(Duration::from_millis(500));
    Ok(Summary::new(
        &s.name,
        n as u64,
        start.elapsed().as_secs_f64(),
        &totals,
        cost,
        std::mem::take(&mut live.series),
        &opts.thresholds,
    ))
}
