//! A worker thread: one mio poll driving many participants (their UDP
//! sockets, str0m timeouts and media schedules). No task or thread per
//! participant and none per packet: datagrams are demultiplexed by the
//! socket they arrive on.

use std::io::ErrorKind;
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{channel, Receiver, TryRecvError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token};
use platform::arrival;

use crate::inbox::{Inbound, Inbox, WorkerMsg};
use crate::participant::{Participant, ParticipantSpec, Side};
use crate::progress::WorkerLive;
use crate::signaling;
use crate::stats::Totals;

const WAKER: Token = Token(usize::MAX);
/// Live counters are published this often.
const LIVE_EVERY: Duration = Duration::from_millis(250);
/// Deadline scans are at least this far apart, so a loop full of
/// near-simultaneous deadlines does not scan on every datagram.
const SCAN_QUANTUM: Duration = Duration::from_millis(1);

/// A running worker.
pub struct Worker {
    /// Its inbox.
    pub inbox: Inbox,
    thread: JoinHandle<Totals>,
}

impl Worker {
    /// Starts a worker thread whose participants bind to `local_ip` and
    /// signal through `url` on `runtime`.
    pub fn start(
        id: usize,
        url: String,
        local_ip: IpAddr,
        runtime: tokio::runtime::Handle,
        live: Arc<WorkerLive>,
    ) -> anyhow::Result<Worker> {
        let poll = Poll::new()?;
        let waker = Arc::new(mio::Waker::new(poll.registry(), WAKER)?);
        let (tx, rx) = channel();
        let inbox = Inbox { tx, waker };
        let loop_inbox = inbox.clone();
        let thread = std::thread::Builder::new()
            .name(format!("loadtest-worker-{id}"))
            .spawn(move || {
                let mut w = Loop {
                    poll,
                    rx,
                    inbox: loop_inbox,
                    url,
                    local_ip,
                    runtime,
                    live,
                    participants: Vec::new(),
                    totals: Totals::default(),
                    cert: None,
                };
                w.run();
                w.totals
            })?;
        Ok(Worker { inbox, thread })
    }

    /// Stops the worker and returns its totals.
    pub fn stop(self) -> Totals {
        self.inbox.deliver(WorkerMsg::Stop);
        self.thread.join().unwrap_or_else(|_| {
            let mut t = Totals::default();
            t.note_error("a worker thread panicked".into());
            t
        })
    }
}

struct Loop {
    poll: Poll,
    rx: Receiver<WorkerMsg>,
    inbox: Inbox,
    url: String,
    local_ip: IpAddr,
    runtime: tokio::runtime::Handle,
    live: Arc<WorkerLive>,
    participants: Vec<Participant>,
    totals: Totals,
    cert: Option<str0m::config::DtlsCert>,
}

impl Loop {
    fn run(&mut self) {
        let mut events = Events::with_capacity(1024);
        let mut buf = vec![0u8; 2048];
        let mut next_deadline = Instant::now() + Duration::from_millis(10);
        let mut last_scan = Instant::now();
        let mut last_live = Instant::now();
        loop {
            let now = Instant::now();
            let wait = next_deadline
                .max(last_scan + SCAN_QUANTUM)
                .saturating_duration_since(now)
                .min(LIVE_EVERY);
            if let Err(e) = self.poll.poll(&mut events, Some(wait)) {
                if e.kind() != ErrorKind::Interrupted {
                    self.totals.note_error(format!("poll: {e}"));
                    return;
                }
            }
            let clock = arrival::Clock::now();
            for ev in events.iter() {
                if ev.token() == WAKER {
                    continue;
                }
                let slot = ev.token().0 / 2;
                let side = if ev.token().0 % 2 == 0 {
                    Side::Publish
                } else {
                    Side::Subscribe
                };
                let Some(p) = self.participants.get_mut(slot) else {
                    continue;
                };
                // Drain the socket: readiness is edge-triggered.
                for _ in 0..1024 {
                    let peer = match side {
                        Side::Publish => p.publisher.as_ref(),
                        Side::Subscribe => p.subscriber.as_ref(),
                    };
                    let Some(peer) = peer else { break };
                    // The kernel's receive time, not this loop's: the
                    // arrival times in TWCC feedback must not include how
                    // late a busy loop read them, or the SFU's estimator
                    // sees a queue that is only the loadtest's lag.
                    match arrival::recv_from(&peer.socket, &mut buf, &clock) {
                        Ok(got) => {
                            let d = p.on_datagram(side, got.from, &buf[..got.len], got.at);
                            next_deadline = next_deadline.min(d);
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(_) => break,
                    }
                }
            }
            let now = Instant::now();
            loop {
                match self.rx.try_recv() {
                    Ok(WorkerMsg::Add(spec)) => {
                        if let Some(d) = self.add(*spec, now) {
                            next_deadline = next_deadline.min(d);
                        }
                    }
                    Ok(WorkerMsg::Signal(Inbound::Text(slot, text))) => {
                        if let Some(p) = self.participants.get_mut(slot) {
                            next_deadline = next_deadline.min(p.on_signal(&text, now));
                        }
                    }
                    Ok(WorkerMsg::Signal(Inbound::Closed(slot, why))) => {
                        if let Some(p) = self.participants.get_mut(slot) {
                            if p.failed.is_none() {
                                p.totals
                                    .note_error(format!("participant {}: {why}", p.spec.index));
                                p.failed = Some(why);
                            }
                        }
                    }
                    Ok(WorkerMsg::Stop) | Err(TryRecvError::Disconnected) => {
                        self.publish_live();
                        self.finish();
                        return;
                    }
                    Err(TryRecvError::Empty) => break,
                }
            }
            let now = Instant::now();
            if now >= next_deadline && now >= last_scan + SCAN_QUANTUM {
                last_scan = now;
                next_deadline = now + LIVE_EVERY;
                for p in &mut self.participants {
                    next_deadline = next_deadline.min(p.poll(now));
                }
            }
            if now >= last_live + LIVE_EVERY {
                last_live = now;
                self.publish_live();
            }
        }
    }

    fn add(&mut self, spec: ParticipantSpec, now: Instant) -> Option<Instant> {
        let slot = self.participants.len();
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        let index = spec.index;
        if self.cert.is_none() {
            self.cert = str0m::crypto::from_feature_flags()
                .dtls_provider
                .generate_certificate();
        }
        let mut p = match Participant::new(spec, self.local_ip, self.cert.as_ref(), tx, now) {
            Ok(p) => p,
            Err(e) => {
                self.totals.failed += 1;
                self.totals.note_error(format!("participant {index}: {e}"));
                return None;
            }
        };
        for (side, peer) in [(0usize, p.publisher.as_mut()), (1, p.subscriber.as_mut())] {
            if let Some(peer) = peer {
                let token = Token(slot * 2 + side);
                if let Err(e) =
                    self.poll
                        .registry()
                        .register(&mut peer.socket, token, Interest::READABLE)
                {
                    self.totals.failed += 1;
                    self.totals
                        .note_error(format!("participant {index}: register socket: {e}"));
                    return None;
                }
            }
        }
        let out = signaling::spawn(
            &self.runtime,
            self.url.clone(),
            p.join_message(),
            slot,
            self.inbox.clone(),
        );
        p.set_signaling(out);
        let d = p.deadline();
        self.participants.push(p);
        Some(d)
    }

    fn publish_live(&self) {
        let mut c = [0u64; 4];
        let (mut bytes_in, mut bytes_out, mut joined, mut receiving) = (0, 0, 0, 0);
        for p in &self.participants {
            let l = p.live_counts();
            for i in 0..4 {
                c[i] += l[i];
            }
            bytes_in += p.traffic.bytes_in;
            bytes_out += p.traffic.bytes_out;
            joined += u64::from(p.id.is_some() && p.failed.is_none());
            receiving += u64::from(p.first_frame.is_some());
        }
        let l = &self.live;
        l.joined.store(joined, Ordering::Relaxed);
        l.receiving.store(receiving, Ordering::Relaxed);
        l.bytes_in.store(bytes_in, Ordering::Relaxed);
        l.bytes_out.store(bytes_out, Ordering::Relaxed);
        l.packets_expected.store(c[0], Ordering::Relaxed);
        l.packets_received.store(c[1], Ordering::Relaxed);
        l.frames.store(c[2], Ordering::Relaxed);
        l.integrity_errors.store(c[3], Ordering::Relaxed);
        let (sum, n) = self.participants.iter().fold((0.0, 0u64), |(s, n), p| {
            (
                s + p.totals.latency_us.mean() * p.totals.latency_us.len() as f64,
                n + p.totals.latency_us.len(),
            )
        });
        l.latency_sum_us.store(sum as u64, Ordering::Relaxed);
        l.latency_count.store(n, Ordering::Relaxed);
    }

    fn finish(&mut self) {
        for p in self.participants.drain(..) {
            let t = p.finish();
            self.totals.merge(&t);
        }
    }
}
