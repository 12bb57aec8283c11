//! What the SFU and the TURN relay need from the operating system and their
//! environment, kept out of both so that neither owns the other's plumbing
//! (as quinn keeps its system calls in quinn-udp):
//!
//! - [`datagram_batch`]: `recvmmsg`/`sendmmsg` and UDP GSO on mio or tokio
//!   sockets, the only `unsafe` code;
//! - [`arrival`]: datagrams read with the kernel's receive time;
//! - [`drop_behind`]: large files streamed without filling the page cache;
//! - [`socket_buffers`]: larger kernel buffers for media sockets;
//! - [`fd_limit`]: the open-file limit raised to what the administrator granted;
//! - [`layered`]: TOML configuration with `<PREFIX><SECTION>_<KEY>`
//!   environment overrides, the one loader both binaries use.

// The one exception is `datagram_batch`.
#![deny(unsafe_code)]

pub mod arrival;
pub mod datagram_batch;
pub mod drop_behind;
pub mod fd_limit;
pub mod layered;
pub mod socket_buffers;
