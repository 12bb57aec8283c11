//! Mutual authentication of trunk peers with the cluster secret, sans-IO.
//!
//! TLS alone only encrypts here: every node has a throw-away self-signed
//! certificate and accepts any other's. Right after the QUIC handshake each
//! side sends `hello` with
//!
//! ```text
//! proof = HMAC-SHA256(cluster secret,
//!                     "sfu-trunk-v1" ‖ role ‖ len(node_id) ‖ node_id ‖ exporter)
//! exporter = TLS exporter (RFC 5705/8446) of this connection,
//!            label "EXPORTER-sfu-trunk-auth-v1", empty context, 32 bytes
//! ```
//!
//! `role` is 1 for the dialer and 2 for the acceptor, so a proof cannot be
//! reflected back; `node_id` binds the claimed id. The exporter is unique to
//! this TLS session: a man in the middle holds two sessions with different
//! exporters and cannot turn one side's proof into the other's without the
//! secret. The acceptor checks the dialer's proof first and answers only if
//! it holds; neither side reads anything else from a peer before its proof
//! checked out.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Label of the TLS exporter both sides derive.
pub const EXPORTER_LABEL: &[u8] = b"EXPORTER-sfu-trunk-auth-v1";
/// Bytes of exported keying material.
pub const EXPORTER_LEN: usize = 32;
const DOMAIN: &[u8] = b"sfu-trunk-v1";

/// Which end of the connection a proof comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The node that dialled.
    Dialer = 1,
    /// The node that accepted.
    Acceptor = 2,
}

fn mac(secret: &[u8], role: Role, node_id: &str, exporter: &[u8]) -> Hmac<Sha256> {
    // HMAC takes keys of any length.
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
    m.update(DOMAIN);
    m.update(&[role as u8]);
    m.update(&(node_id.len() as u64).to_be_bytes());
    m.update(node_id.as_bytes());
    m.update(exporter);
    m
}

/// The hex proof `node_id` (in `role`) sends on a connection with this exporter.
pub fn proof(secret: &[u8], role: Role, node_id: &str, exporter: &[u8]) -> String {
    hex(&mac(secret, role, node_id, exporter).finalize().into_bytes())
}

/// Whether `proof_hex` is the right proof (constant-time comparison).
pub fn verify(secret: &[u8], role: Role, node_id: &str, exporter: &[u8], proof_hex: &str) -> bool {
    match unhex(proof_hex) {
        Some(bytes) => mac(secret, role, node_id, exporter)
            .verify_slice(&bytes)
            .is_ok(),
        None => false,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 || !s.is_ascii() {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef";

    #[test]
    fn the_right_proof_verifies() {
        let x = [7u8; EXPORTER_LEN];
        let p = proof(SECRET, Role::Dialer, "a", &x);
        assert_eq!(p.len(), 64);
        assert!(verify(SECRET, Role::Dialer, "a", &x, &p));
    }

    #[test]
    fn anything_else_fails() {
        let x = [7u8; EXPORTER_LEN];
        let p = proof(SECRET, Role::Dialer, "a", &x);
        assert!(!verify(b"0123456789abcdeF", Role::Dialer, "a", &x, &p));
        assert!(!verify(SECRET, Role::Acceptor, "a", &x, &p), "reflected");
        assert!(!verify(SECRET, Role::Dialer, "b", &x, &p), "other id");
        assert!(
            !verify(SECRET, Role::Dialer, "a", &[8u8; 32], &p),
            "other session"
        );
        assert!(!verify(SECRET, Role::Dialer, "a", &x, &p[..62]));
        assert!(!verify(SECRET, Role::Dialer, "a", &x, "zz"));
        assert!(!verify(SECRET, Role::Dialer, "a", &x, "é"));
    }
}
