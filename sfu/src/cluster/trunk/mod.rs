//! The trunk between SFU nodes: QUIC (quinn) with RFC 9221 datagrams for
//! media and one bidirectional stream for control, mutually authenticated
//! with the cluster secret. See docs/cluster.md.

pub mod auth;
pub mod endpoint;
pub mod tls;
pub mod wire;

pub use endpoint::{PeerLink, SendMediaError, Trunk, TrunkConfig, TrunkError, TrunkEvent};
