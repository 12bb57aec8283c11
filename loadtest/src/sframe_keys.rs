//! Per-sender SFrame keys (RFC 9605, the `sframe` crate) and how they travel:
//! until the web client's key exchange exists, a publisher sends its key
//! material in a plain `relay` message (the SFU passes relays through
//! untouched). That is fine for a load test and nothing else: the SFU could
//! read these keys.

use std::collections::HashMap;

use serde_json::{json, Value};
use sframe::frame::{EncryptedFrameView, MediaFrameView, MonotonicCounter};
use sframe::key::{DecryptionKey, EncryptionKey};
use sframe::CipherSuite;
use thiserror::Error;

/// The cipher suite browsers' SFrame implementations use.
pub const SUITE: CipherSuite = CipherSuite::AesGcm128Sha256;
/// `kind` of the relay payload carrying a key.
pub const RELAY_KIND: &str = "loadtest-sframe-key";

/// Why a frame did not decrypt.
#[derive(Debug, Error)]
pub enum DecryptError {
    /// Not an SFrame at all (header unparsable).
    #[error("not an SFrame: {0}")]
    Malformed(String),
    /// The key id is not (yet) known.
    #[error("no key for key id {0}")]
    NoKey(u64),
    /// Authentication failed: the frame was changed on the way.
    #[error("authentication failed: {0}")]
    Integrity(String),
}

/// A publisher's key: encrypts its frames.
pub struct SenderKey {
    kid: u64,
    material: [u8; 16],
    key: EncryptionKey,
    counter: MonotonicCounter,
}

impl SenderKey {
    /// A fresh random key for key id `kid`.
    pub fn generate(kid: u64) -> anyhow::Result<Self> {
        let material: [u8; 16] = rand::random();
        Self::from_material(kid, material)
    }

    /// The key for `kid` from given material.
    pub fn from_material(kid: u64, material: [u8; 16]) -> anyhow::Result<Self> {
        let key = EncryptionKey::derive_from(SUITE, kid, material)
            .map_err(|e| anyhow::anyhow!("sframe key: {e}"))?;
        Ok(SenderKey {
            kid,
            material,
            key,
            counter: MonotonicCounter::default(),
        })
    }

    /// The relay payload announcing this key.
    pub fn relay_payload(&self) -> Value {
        json!({"kind": RELAY_KIND, "kid": self.kid, "key": hex(&self.material)})
    }

    /// Encrypts one frame (header + ciphertext + tag).
    pub fn encrypt(&mut self, plaintext: &[u8]) -> anyhow::Result<Vec<u8>> {
        let frame = MediaFrameView::try_new(&mut self.counter, plaintext)
            .map_err(|e| anyhow::anyhow!("sframe counter: {e}"))?;
        let mut out = Vec::with_capacity(plaintext.len() + 32);
        frame
            .encrypt_into(&self.key, &mut out)
            .map_err(|e| anyhow::anyhow!("sframe encrypt: {e}"))?;
        Ok(out)
    }
}

/// The keys a subscriber has learned, by key id.
#[derive(Default)]
pub struct KeyRing {
    keys: HashMap<u64, DecryptionKey>,
    /// Publisher participant id → key id.
    pub owners: HashMap<String, u64>,
}

impl KeyRing {
    /// Learns a key from a relay payload sent by participant `from`.
    /// Returns false if the payload is not a (valid) key message.
    pub fn learn(&mut self, from: &str, payload: &Value) -> bool {
        if payload["kind"] != RELAY_KIND {
            return false;
        }
        let (Some(kid), Some(material)) = (
            payload["kid"].as_u64(),
            payload["key"].as_str().and_then(unhex),
        ) else {
            return false;
        };
        let Ok(key) = DecryptionKey::derive_from(SUITE, kid, material) else {
            return false;
        };
        self.keys.insert(kid, key);
        self.owners.insert(from.to_string(), kid);
        true
    }

    /// Decrypts one frame into `out` (replacing its content); returns the key id.
    pub fn decrypt(&self, frame: &[u8], out: &mut Vec<u8>) -> Result<u64, DecryptError> {
        let view = EncryptedFrameView::try_new(frame)
            .map_err(|e| DecryptError::Malformed(e.to_string()))?;
        let kid = view.header().key_id();
        let key = self.keys.get(&kid).ok_or(DecryptError::NoKey(kid))?;
        let mut buf = Vec::with_capacity(frame.len());
        let plain = view
            .decrypt_into(key, &mut buf)
            .map_err(|e| DecryptError::Integrity(e.to_string()))?;
        out.clear();
        out.extend_from_slice(plain.payload());
        Ok(kid)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<[u8; 16]> {
    if s.len() != 32 || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relayed_key_decrypts_and_tampering_is_detected() {
        let mut sender = SenderKey::generate(42).unwrap();
        let mut ring = KeyRing::default();
        let frame = sender.encrypt(b"hello frame").unwrap();
        let mut out = Vec::new();
        assert!(matches!(
            ring.decrypt(&frame, &mut out),
            Err(DecryptError::NoKey(42))
        ));
        assert!(ring.learn("PA_x", &sender.relay_payload()));
        assert!(!ring.learn("PA_y", &json!({"kind": "chat"})));
        assert_eq!(ring.owners["PA_x"], 42);
        assert_eq!(ring.decrypt(&frame, &mut out).unwrap(), 42);
        assert_eq!(out, b"hello frame");
        let mut bad = frame.clone();
        let last = bad.len() - 1;
        bad[last] ^= 0x5a;
        assert!(matches!(
            ring.decrypt(&bad, &mut out),
            Err(DecryptError::Integrity(_))
        ));
        // Counters advance: a second frame differs but decrypts.
        let second = sender.encrypt(b"hello frame").unwrap();
        assert_ne!(second, frame);
        assert_eq!(ring.decrypt(&second, &mut out).unwrap(), 42);
        assert_eq!(out, b"hello frame");
    }
}
