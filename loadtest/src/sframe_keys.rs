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

/// The VP8 frame header a video frame keeps in clear before its SFrame, as
/// the web client does (sframe.js `clearPrefixLength`): the frame tag, and
/// on a keyframe the start code and the frame size. The SFU reads it to find
/// keyframes (where a subscriber may switch simulcast layers) and sizes;
/// SFrame authenticates it as metadata.
pub fn vp8_clear_header(keyframe: bool, (width, height): (u16, u16)) -> Vec<u8> {
    // Frame tag: P (0 = keyframe), version 0, show_frame; partition size 0.
    let tag = [if keyframe { 0x10 } else { 0x11 }, 0, 0];
    let mut out = tag.to_vec();
    if keyframe {
        out.extend_from_slice(&[0x9d, 0x01, 0x2a]);
        out.extend_from_slice(&(width & 0x3fff).to_le_bytes());
        out.extend_from_slice(&(height & 0x3fff).to_le_bytes());
    }
    out
}

/// The length of a VP8 frame's clear header (see [`vp8_clear_header`]).
pub fn vp8_clear_len(frame: &[u8]) -> usize {
    match frame.first() {
        Some(tag) if tag & 0x01 == 0 => 10,
        Some(_) => 3,
        None => 0,
    }
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

    /// Encrypts one frame: `clear` (authenticated, not encrypted), the
    /// SFrame header, the ciphertext and the tag.
    pub fn encrypt(&mut self, clear: &[u8], plaintext: &[u8]) -> anyhow::Result<Vec<u8>> {
        let frame = MediaFrameView::try_with_meta_data(&mut self.counter, plaintext, clear)
            .map_err(|e| anyhow::anyhow!("sframe counter: {e}"))?;
        let mut out = Vec::with_capacity(clear.len() + plaintext.len() + 32);
        out.extend_from_slice(clear);
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

    /// Decrypts one frame of sender `from` whose first `clear` bytes are
    /// in clear into `out` (replacing its content); returns the key id.
    pub fn decrypt(
        &self,
        from: &str,
        frame: &[u8],
        clear: usize,
        out: &mut Vec<u8>,
    ) -> Result<u64, DecryptError> {
        let (meta, sealed) = frame
            .split_at_checked(clear)
            .ok_or_else(|| DecryptError::Malformed("shorter than its clear header".into()))?;
        let view = EncryptedFrameView::try_with_meta_data(sealed, meta)
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
        let frame = sender.encrypt(b"", b"hello frame").unwrap();
        let mut out = Vec::new();
        assert!(matches!(
            ring.decrypt("PA_x", &frame, 0, &mut out),
            Err(DecryptError::NoKey(42))
        ));
        ring.learn("PA_x", 42, material).unwrap();
        assert!(ring.knows("PA_x") && !ring.knows("PA_y"));
        assert_eq!(ring.decrypt("PA_x", &frame, 0, &mut out).unwrap(), 42);
        assert_eq!(out, b"hello frame");
        // The same frame on another sender's track is not theirs.
        assert!(matches!(
            ring.decrypt("PA_y", &frame, 0, &mut out),
            Err(DecryptError::WrongSender { kid: 42, .. })
        ));
        let mut bad = frame.clone();
        let last = bad.len() - 1;
        bad[last] ^= 0x5a;
        assert!(matches!(
            ring.decrypt("PA_x", &bad, 0, &mut out),
            Err(DecryptError::Integrity(_))
        ));
        // Counters advance: a second frame differs but decrypts.
        let second = sender.encrypt(b"", b"hello frame").unwrap();
        assert_ne!(second, frame);
        assert_eq!(ring.decrypt("PA_x", &second, 0, &mut out).unwrap(), 42);
        assert_eq!(out, b"hello frame");
    }

    #[test]
    fn the_clear_vp8_header_is_authenticated_and_tells_keyframes() {
        let material: [u8; 16] = rand::random();
        let mut sender = SenderKey::from_material(7, material).unwrap();
        let mut ring = KeyRing::default();
        ring.learn("PA_x", 7, material).unwrap();
        let clear = vp8_clear_header(true, (640, 360));
        let frame = sender.encrypt(&clear, b"picture").unwrap();
        assert_eq!(
            &frame[..10],
            &[0x10, 0, 0, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0x68, 0x01]
        );
        let n = vp8_clear_len(&frame);
        assert_eq!(n, 10);
        let mut out = Vec::new();
        ring.decrypt("PA_x", &frame, n, &mut out).unwrap();
        assert_eq!(out, b"picture");
        let delta = sender
            .encrypt(&vp8_clear_header(false, (0, 0)), b"p")
            .unwrap();
        assert_eq!(vp8_clear_len(&delta), 3);
        // A changed clear byte fails authentication like a changed secret one.
        let mut bad = frame.clone();
        bad[8] ^= 1;
        assert!(matches!(
            ring.decrypt("PA_x", &bad, n, &mut out),
            Err(DecryptError::Integrity(_))
        ));
    }
}
