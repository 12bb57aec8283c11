//! End-to-end encrypted file sharing, server side: browsers encrypt files in
//! chunks before upload, so the server stores opaque blobs with only their
//! sizes, times, room and uploader, and hands them out by capability
//! (docs/web-client.md "Files", docs/protocol.md section 20).

pub mod routes;
pub mod store;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::auth::unix_now;
use crate::config::FilesConfig;
use crate::metrics::Metrics;
pub use store::{BlobId, BlobMeta, BlobStore, Limits, StoreError};

/// The directory blobs live in: `files.dir`, or `sfu-files` in the system's
/// temporary directory when it is empty.
pub fn directory(config: &FilesConfig) -> PathBuf {
    if config.dir.is_empty() {
        std::env::temp_dir().join("sfu-files")
    } else {
        PathBuf::from(&config.dir)
    }
}

/// Opens the store of `config` (None when file sharing is disabled).
pub fn open(config: &FilesConfig) -> std::io::Result<Option<Arc<BlobStore>>> {
    if !config.enabled {
        return Ok(None);
    }
    let limits = Limits {
        ttl_s: config.ttl_s,
        max_file_bytes: config.max_file_bytes,
        user_quota_bytes: config.user_quota_bytes,
        total_quota_bytes: config.total_quota_bytes,
        stall: Duration::from_secs(config.stall_s),
    };
    BlobStore::open(&directory(config), limits, unix_now()).map(Some)
}

/// Deletes expired blobs every `interval`, forever (the server aborts it on stop).
pub async fn sweep_forever(store: Arc<BlobStore>, metrics: Metrics, interval: Duration) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let s = store.clone();
        let Ok((expired, (count, bytes))) =
            tokio::task::spawn_blocking(move || (s.sweep(unix_now()), s.usage())).await
        else {
            continue;
        };
        if expired > 0 {
            tracing::info!(expired, "expired files deleted");
        }
        metrics.files_expired.inc_by(expired as u64);
        metrics.files_stored.set(count as i64);
        metrics.files_stored_bytes.set(bytes as i64);
    }
}
