//! What every HTTP handler and WebSocket task shares.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::auth::TokenAuthority;
use crate::config::Config;
use crate::media::shards::Shards;
use crate::metrics::Metrics;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    /// The loaded configuration.
    pub config: Arc<Config>,
    /// Token verification.
    pub auth: TokenAuthority,
    /// The metrics registry.
    pub metrics: Metrics,
    /// To the shards' engines.
    pub shards: Shards,
    /// Embedded TURN credentials for WHIP/WHEP `Link` headers.
    pub turn: Option<crate::turn::TurnCredentials>,
    /// The encrypted-file store, unless file sharing is disabled.
    pub files: Option<Arc<crate::files::BlobStore>>,
    conn_ids: Arc<AtomicU64>,
}

impl AppState {
    /// Shared state for the handlers.
    pub fn new(
        config: Arc<Config>,
        auth: TokenAuthority,
        metrics: Metrics,
        shards: Shards,
        turn: Option<crate::turn::TurnCredentials>,
    ) -> Self {
        Self {
            config,
            auth,
            metrics,
            shards,
            turn,
            files: None,
            conn_ids: Arc::new(AtomicU64::new(1)),
        }
    }

    /// A fresh signaling connection id.
    pub fn next_conn(&self) -> u64 {
        self.conn_ids.fetch_add(1, Ordering::Relaxed)
    }
}
