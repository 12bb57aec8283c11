//! The one metrics registry, exported at `/metrics` in Prometheus text format.

use prometheus::{
    Encoder, GaugeVec, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts,
    Registry, TextEncoder,
};

/// Every metric the SFU exports.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// Rooms with at least one participant.
    pub rooms: IntGauge,
    /// Participants in all rooms.
    pub participants: IntGauge,
    /// Published tracks.
    pub tracks: IntGauge,
    /// (subscriber, track) pairs being forwarded.
    pub subscriptions: IntGauge,
    /// Peer connections (`Rtc` instances).
    pub peers: IntGauge,
    /// RTP packets received from publishers.
    pub rtp_packets_in: IntCounter,
    /// RTP payload bytes received from publishers.
    pub rtp_bytes_in: IntCounter,
    /// RTP packets written to subscribers (one per packet per subscriber).
    pub rtp_packets_out: IntCounter,
    /// RTP payload bytes written to subscribers.
    pub rtp_bytes_out: IntCounter,
    /// Packets dropped instead of forwarded, by reason.
    pub dropped: IntCounterVec,
    /// Dominant speaker changes in all rooms (`room/speakers.rs`).
    pub speaker_changes: IntCounter,
    /// Keyframe requests by outcome (`forwarded`, `throttled`, `new_subscriber`, `layer_switch`).
    pub keyframe_requests: IntCounterVec,
    /// Simulcast layer decisions for a subscriber's video, by change
    /// (`up`, `down`, `pause`, `resume`: a layer after none, first ones included).
    pub layer_changes: IntCounterVec,
    /// Subscribers' video down-tracks paused by their allocator.
    pub paused_video: IntGauge,
    /// Publishers' simulcast layers switched by dynacast, by change (`on`, `off`).
    pub publisher_layers_switched: IntCounterVec,
    /// Publishers' simulcast layers switched off now (nobody wants them).
    pub publisher_layers_off: IntGauge,
    /// Signaling errors sent, by code.
    pub signaling_errors: IntCounterVec,
    /// Seconds from `join` (or WHIP/WHEP POST) to the first connected peer.
    pub join_seconds: Histogram,
    /// Subscribers' downlink estimates, bits per second, one per estimate.
    pub downlink_estimate: Histogram,
    /// Media datagrams (UDP or ICE-TCP frames) received.
    pub datagrams_in: IntCounter,
    /// Media datagrams (UDP or ICE-TCP frames) sent.
    pub datagrams_out: IntCounter,
    /// Encrypted files created (upload started).
    pub files_created: IntCounter,
    /// Encrypted files deleted by their uploader or a room operator.
    pub files_deleted: IntCounter,
    /// Encrypted files deleted because they expired.
    pub files_expired: IntCounter,
    /// Ciphertext bytes written by uploads.
    pub files_uploaded_bytes: IntCounter,
    /// Ciphertext bytes sent by downloads.
    pub files_downloaded_bytes: IntCounter,
    /// Encrypted files stored (at the last sweep).
    pub files_stored: IntGauge,
    /// Bytes reserved by stored files (at the last sweep).
    pub files_stored_bytes: IntGauge,
    /// Cluster trunk (docs/cluster.md), per peer node: media datagrams sent.
    pub trunk_datagrams_sent: IntCounterVec,
    /// Trunk media datagram bytes sent (trunk header included), per peer.
    pub trunk_bytes_sent: IntCounterVec,
    /// Trunk media datagrams received, per peer.
    pub trunk_datagrams_received: IntCounterVec,
    /// Trunk media datagram bytes received, per peer.
    pub trunk_bytes_received: IntCounterVec,
    /// Trunk media datagrams dropped, per peer and reason (`too_big`,
    /// `queue_full` on sending; `malformed`, `receiver_busy` on receiving).
    pub trunk_datagrams_dropped: IntCounterVec,
    /// Trunk control messages, per peer and direction (`sent`, `received`).
    pub trunk_control_messages: IntCounterVec,
    /// Trunk round-trip time (QUIC's estimate), per peer.
    pub trunk_rtt_seconds: GaugeVec,
    /// Authenticated trunk connections open.
    pub trunk_peers: IntGauge,
    /// Trunk connections refused because a side failed authentication.
    pub trunk_auth_failures: IntCounter,
    /// 1 while this node's last registry renewal succeeded, else 0.
    pub cluster_registered: IntGauge,
    /// Failed registry operations (Redis unreachable or erroring).
    pub cluster_registry_errors: IntCounter,
}

impl Metrics {
    /// A registry with every metric registered (and process CPU/memory on Linux).
    pub fn new() -> Self {
        let registry = Registry::new();
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect("static metric definition");
            registry
                .register(Box::new(g.clone()))
                .expect("unique metric name");
            g
        };
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).expect("static metric definition");
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric name");
            c
        };
        let counter_vec2 = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels)
                .expect("static metric definition");
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric name");
            c
        };
        let counter_vec = |name: &str, help: &str, label: &str| counter_vec2(name, help, &[label]);
        let trunk_rtt_seconds = GaugeVec::new(
            Opts::new(
                "sfu_trunk_rtt_seconds",
                "Round-trip time of the trunk to a peer node",
            ),
            &["peer"],
        )
        .expect("static metric definition");
        registry
            .register(Box::new(trunk_rtt_seconds.clone()))
            .expect("unique metric name");
        let join_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "sfu_join_seconds",
                "Seconds from join to the first connected peer connection",
            )
            .buckets(vec![0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
        )
        .expect("static metric definition");
        registry
            .register(Box::new(join_seconds.clone()))
            .expect("unique metric name");
        let downlink_estimate = Histogram::with_opts(
            HistogramOpts::new(
                "sfu_downlink_estimate_bps",
                "Subscribers' downlink estimates (bits per second), one per estimate",
            )
            .buckets(vec![100e3, 250e3, 500e3, 1e6, 2e6, 4e6, 8e6, 16e6, 32e6]),
        )
        .expect("static metric definition");
        registry
            .register(Box::new(downlink_estimate.clone()))
            .expect("unique metric name");
        #[cfg(target_os = "linux")]
        registry
            .register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ))
            .expect("unique metric name");

        Self {
            rooms: gauge("sfu_rooms", "Rooms with at least one participant"),
            participants: gauge("sfu_participants", "Participants in all rooms"),
            tracks: gauge("sfu_tracks", "Published tracks"),
            subscriptions: gauge("sfu_subscriptions", "Track forwards to subscribers"),
            peers: gauge("sfu_peer_connections", "Peer connections"),
            rtp_packets_in: counter("sfu_rtp_packets_in_total", "RTP packets from publishers"),
            rtp_bytes_in: counter(
                "sfu_rtp_bytes_in_total",
                "RTP payload bytes from publishers",
            ),
            rtp_packets_out: counter(
                "sfu_rtp_packets_forwarded_total",
                "RTP packets forwarded to subscribers",
            ),
            rtp_bytes_out: counter(
                "sfu_rtp_bytes_forwarded_total",
                "RTP payload bytes forwarded to subscribers",
            ),
            dropped: counter_vec(
                "sfu_rtp_packets_dropped_total",
                "RTP packets not forwarded, by reason",
                "reason",
            ),
            layer_changes: counter_vec(
                "sfu_layer_changes_total",
                "Simulcast layer decisions for subscribers' video, by change",
                "change",
            ),
            paused_video: gauge(
                "sfu_paused_video_tracks",
                "Subscribers' video tracks paused (no bandwidth or hidden tile)",
            ),
            publisher_layers_switched: counter_vec(
                "sfu_publisher_layers_switched_total",
                "Publishers' simulcast layers switched by dynacast, by change",
                "change",
            ),
            publisher_layers_off: gauge(
                "sfu_publisher_layers_off",
                "Publishers' simulcast layers switched off (nobody receives them)",
            ),
            speaker_changes: counter(
                "sfu_speaker_changes_total",
                "Dominant speaker changes in all rooms",
            ),
            keyframe_requests: counter_vec(
                "sfu_keyframe_requests_total",
                "Keyframe requests, by outcome",
                "outcome",
            ),
            signaling_errors: counter_vec(
                "sfu_signaling_errors_total",
                "Signaling errors sent to clients, by code",
                "code",
            ),
            join_seconds,
            downlink_estimate,
            datagrams_in: counter("sfu_datagrams_in_total", "Media datagrams received"),
            datagrams_out: counter("sfu_datagrams_out_total", "Media datagrams sent"),
            files_created: counter("sfu_files_created_total", "Encrypted files created"),
            files_deleted: counter(
                "sfu_files_deleted_total",
                "Encrypted files deleted by uploader or operator",
            ),
            files_expired: counter("sfu_files_expired_total", "Encrypted files expired"),
            files_uploaded_bytes: counter(
                "sfu_files_uploaded_bytes_total",
                "Ciphertext bytes written by file uploads",
            ),
            files_downloaded_bytes: counter(
                "sfu_files_downloaded_bytes_total",
                "Ciphertext bytes sent by file downloads",
            ),
            files_stored: gauge("sfu_files_stored", "Encrypted files stored"),
            files_stored_bytes: gauge(
                "sfu_files_stored_bytes",
                "Bytes reserved by stored encrypted files",
            ),
            trunk_datagrams_sent: counter_vec2(
                "sfu_trunk_datagrams_sent_total",
                "Media datagrams sent on the trunk, per peer node",
                &["peer"],
            ),
            trunk_bytes_sent: counter_vec2(
                "sfu_trunk_bytes_sent_total",
                "Media datagram bytes sent on the trunk, per peer node",
                &["peer"],
            ),
            trunk_datagrams_received: counter_vec2(
                "sfu_trunk_datagrams_received_total",
                "Media datagrams received on the trunk, per peer node",
                &["peer"],
            ),
            trunk_bytes_received: counter_vec2(
                "sfu_trunk_bytes_received_total",
                "Media datagram bytes received on the trunk, per peer node",
                &["peer"],
            ),
            trunk_datagrams_dropped: counter_vec2(
                "sfu_trunk_datagrams_dropped_total",
                "Trunk media datagrams dropped, per peer node and reason",
                &["peer", "reason"],
            ),
            trunk_control_messages: counter_vec2(
                "sfu_trunk_control_messages_total",
                "Trunk control messages, per peer node and direction",
                &["peer", "direction"],
            ),
            trunk_rtt_seconds,
            trunk_peers: gauge("sfu_trunk_peers", "Authenticated trunk connections"),
            trunk_auth_failures: counter(
                "sfu_trunk_auth_failures_total",
                "Trunk connections refused by authentication",
            ),
            cluster_registered: gauge(
                "sfu_cluster_registered",
                "1 while the node's last registry renewal succeeded",
            ),
            cluster_registry_errors: counter(
                "sfu_cluster_registry_errors_total",
                "Failed cluster registry operations",
            ),
            registry,
        }
    }

    /// The registry, for components that add their own metrics (the embedded TURN relay).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        if TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .is_err()
        {
            return String::new();
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
