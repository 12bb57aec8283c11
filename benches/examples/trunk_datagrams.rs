//! CPU per media datagram on each side of the cluster trunk: two trunk
//! endpoints on loopback, each on its own thread with its own single-thread
//! runtime (quinn drives an endpoint on the runtime that made it), so each
//! thread's CPU time is one side's cost (trunk header, QUIC, AEAD, UDP
//! syscalls, the event hand-off).
//!
//! `cargo run --release -p sfu-benches --example trunk_datagrams -- [PACKETS] [RATE_PPS] [RTP_BYTES]`
//! (default 200 000 packets at 20 000 packets/s of 1 100-byte RTP packets).

use std::sync::mpsc;
use std::time::{Duration, Instant};

use sfu::cluster::trunk::wire::{media_header, MEDIA_HEADER_LEN};
use sfu::cluster::trunk::{Trunk, TrunkConfig, TrunkEvent};
use sfu::metrics::Metrics;
use sfu_benches::thread_cpu_time;

const SECRET: &[u8] = b"bench-cluster-secret";

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn bind(id: &str, metrics: &Metrics) -> (Trunk, tokio::sync::mpsc::Receiver<TrunkEvent>) {
    Trunk::bind(
        TrunkConfig {
            node_id: id.into(),
            secret: SECRET.to_vec(),
            listen: "127.0.0.1:0".parse().expect("address"),
        },
        metrics.clone(),
    )
    .expect("trunk binds")
}

fn main() {
    let mut args = std::env::args().skip(1);
    let packets: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(200_000);
    let rate: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(20_000);
    let rtp_bytes: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1_100);

    let (addr_tx, addr_rx) = mpsc::channel();
    let receiver = std::thread::spawn(move || {
        runtime().block_on(async move {
            let metrics = Metrics::new();
            let (trunk, mut events) = bind("node-b", &metrics);
            addr_tx
                .send(trunk.local_addr().expect("bound"))
                .expect("main waits");
            let mut received = 0u64;
            let mut cpu_start = None;
            // Ends when the sender is done and nothing came for 1 s.
            while let Ok(Some(e)) =
                tokio::time::timeout(Duration::from_secs(1), events.recv()).await
            {
                match e {
                    TrunkEvent::PeerUp { .. } => cpu_start = Some(thread_cpu_time()),
                    TrunkEvent::Media { .. } => received += 1,
                    _ => {}
                }
            }
            let cpu = thread_cpu_time() - cpu_start.expect("peer connected");
            // The idle second at the end costs (almost) nothing.
            (received, cpu)
        })
    });
    let addr = addr_rx.recv().expect("receiver bound");
    let (sent, send_cpu, wall, dropped) = runtime().block_on(async move {
        let metrics = Metrics::new();
        let (trunk, _events) = bind("node-a", &metrics);
        let link = trunk.connect("node-b", addr).await.expect("connects");
        let mut rtp = vec![0x80, 96, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7];
        rtp.resize(rtp_bytes, 0xab);
        let per_ms = (rate / 1000).max(1);
        let mut tick = tokio::time::interval(Duration::from_millis(1));
        let (cpu0, t0) = (thread_cpu_time(), Instant::now());
        let mut sent = 0u64;
        while sent < packets {
            tick.tick().await;
            // Paced by the clock: catch up after a late tick.
            let due = (t0.elapsed().as_millis() as u64 + 1) * per_ms;
            while sent < due.min(packets) {
                rtp[2..4].copy_from_slice(&(sent as u16).to_be_bytes());
                // Header and packet in one buffer, as the engine sends them.
                let mut datagram = Vec::with_capacity(MEDIA_HEADER_LEN + rtp.len());
                datagram.extend_from_slice(&media_header(1, 0, 0));
                datagram.extend_from_slice(&rtp);
                if link.send_encoded(datagram.into()).is_ok() {
                    sent += 1;
                } else {
                    break;
                }
            }
        }
        let (cpu, wall) = (thread_cpu_time() - cpu0, t0.elapsed());
        // Let the last datagrams leave before the endpoint closes.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let dropped: f64 = metrics
            .render()
            .lines()
            .filter(|l| l.starts_with("sfu_trunk_datagrams_dropped_total"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        trunk.close().await;
        (sent, cpu, wall, dropped)
    });
    let (received, recv_cpu) = receiver.join().expect("receiver");
    let per = |cpu: Duration, n: u64| cpu.as_secs_f64() * 1e6 / n.max(1) as f64;
    println!(
        "{rtp_bytes}-byte RTP, {sent} sent in {:.1} s ({:.0}/s), {received} received ({:.2} % lost), {dropped} dropped at the sender",
        wall.as_secs_f64(),
        sent as f64 / wall.as_secs_f64(),
        100.0 * (sent - received.min(sent)) as f64 / sent.max(1) as f64
    );
    println!(
        "CPU per datagram: sender {:.2} µs, receiver {:.2} µs",
        per(send_cpu, sent),
        per(recv_cpu, received)
    );
}
