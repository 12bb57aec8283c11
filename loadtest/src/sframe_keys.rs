//! Per-sender SFrame keys (RFC 9605, the `sframe` crate), derived from the
//! base keys that travel wrapped through the web client's key exchange
//! (`key_exchange`): the SFU never sees them.

use std::collections::HashMap;

use sframe::frame::{EncryptedFrameView, MediaFrameView, MonotonicCounter};
use sframe::key::{DecryptionKey, EncryptionKey};
use sframe::CipherSuite;
use thiserror::Error;

/// The cipher suite browsers' SFrame implementations use.
pub const SUITE: CipherSuite = CipherSuite::AesGcm128Sha256;

/// Why a frame did not decrypt.
#[derive(Debug, Error)]
pub enum DecryptError {
    /// Not an SFrame at all (header unparsable).
    #[error("not an SFrame: {0}")]
    Malformed(String),
    /// The key id is not (yet) known.
    #[error("no key for key id {0}")]
    NoKey(u64),
    /// The key id belongs to another sender.
    #[error("key id {kid} belongs to {owner}")]
    WrongSender {
        /// The frame's key id.
        kid: u64,
        /// Whose key it is.
        owner: String,
    },
    /// Authentication failed: the frame was changed on the way.
    #[error("authentication failed: {0}")]
    Integrity(String),
}

/// A publisher's key: encrypts its frames.
pub struct SenderKey {
    key: EncryptionKey,
    counter: MonotonicCounter,
}

impl SenderKey {
    /// The key for `kid` from given material.
    pub fn from_material(kid: u64, material: [u8; 16]) -> anyhow::Result<Self> {
        let key = EncryptionKey::derive_from(SUITE, kid, material)
            .map_err(|e| anyhow::anyhow!("sframe key: {e}"))?;
        Ok(SenderKey {
            key,
            counter: MonotonicCounter::default(),
        })
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

/// The keys a subscriber has learned, by sender and key id (KIDs are random
/// per sender, as the web client chooses them, so two senders may collide).
#[derive(Default)]
pub struct KeyRing {
    /// Sender id → key id → key.
    keys: HashMap<String, HashMap<u64, DecryptionKey>>,
}

impl KeyRing {
    /// Learns sender `from`'s base key `material` for key id `kid`.
    pub fn learn(&mut self, from: &str, kid: u64, material: [u8; 16]) -> anyhow::Result<()> {
        let key = DecryptionKey::derive_from(SUITE, kid, material)
            .map_err(|e| anyhow::anyhow!("sframe key: {e}"))?;
        self.keys
            .entry(from.to_string())
            .or_default()
            .insert(kid, key);
        Ok(())
    }

    /// Whether any key of sender `from` is known.
    pub fn knows(&self, from: &str) -> bool {
        self.keys.get(from).is_some_and(|k| !k.is_empty())
    }

    /// Decrypts one frame of sender `from` into `out` (replacing its
    /// content); returns the key id.
    pub fn decrypt(
        &self,
        from: &str,
        frame: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<u64, DecryptError> {
        let view = EncryptedFrameView::try_new(frame)
            .map_err(|e| DecryptError::Malformed(e.to_string()))?;
        let kid = view.header().key_id();
        let Some(key) = self.keys.get(from).and_then(|k| k.get(&kid)) else {
            let owner = self.keys.iter().find(|(_, k)| k.contains_key(&kid));
            return Err(match owner {
                Some((owner, _)) => DecryptError::WrongSender {
                    kid,
                    owner: owner.clone(),
                },
                None => DecryptError::NoKey(kid),
            });
        };
        let mut buf = Vec::with_capacity(frame.len());
        let plain = view
            .decrypt_into(key, &mut buf)
            .map_err(|e| DecryptError::Integrity(e.to_string()))?;
        out.clear();
        out.extend_from_slice(plain.payload());
        Ok(kid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn learned_key_decrypts_and_tampering_is_detected() {
        let material: [u8; 16] = rand::random();
        let mut sender = SenderKey::from_material(42, material).unwrap();
        let mut ring = KeyRing::default();
        let frame = sender.encrypt(b"hello frame").unwrap();
        let mut out = Vec::new();
        assert!(matches!(
            ring.decrypt("PA_x", &frame, &mut out),
            Err(DecryptError::NoKey(42))
        ));
        ring.learn("PA_x", 42, material).unwrap();
        assert!(ring.knows("PA_x") && !ring.knows("PA_y"));
        assert_eq!(ring.decrypt("PA_x", &frame, &mut out).unwrap(), 42);
        assert_eq!(out, b"hello frame");
        // The same frame on another sender's track is not theirs.
        assert!(matches!(
            ring.decrypt("PA_y", &frame, &mut out),
            Err(DecryptError::WrongSender { kid: 42, .. })
        ));
        let mut bad = frame.clone();
        let last = bad.len() - 1;
        bad[last] ^= 0x5a;
        assert!(matches!(
            ring.decrypt("PA_x", &bad, &mut out),
            Err(DecryptError::Integrity(_))
        ));
        // Counters advance: a second frame differs but decrypts.
        let second = sender.encrypt(b"hello frame").unwrap();
        assert_ne!(second, frame);
        assert_eq!(ring.decrypt("PA_x", &second, &mut out).unwrap(), 42);
        assert_eq!(out, b"hello frame");
    }
}
