//! The checked-in SFrame vectors (`tests/vectors/sframe.json`) against the
//! Rust `sframe` crate (what the loadtest uses): RFC 9605 Appendix C header
//! encodings and the suite 0x0004 example, and frames exactly as the web
//! client protects them (clear codec prefix as authenticated metadata). The
//! same file is checked against the browser code by `tests/browser/sframe-vectors.mjs`.

use serde_json::Value;
use sframe::frame::{EncryptedFrame, MediaFrame, SingleUseCounter};
use sframe::header::SframeHeader;
use sframe::key::{DecryptionKey, EncryptionKey};
use sframe::CipherSuite;

fn vectors() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/vectors/sframe.json");
    let text = std::fs::read_to_string(path).expect("tests/vectors/sframe.json is readable");
    serde_json::from_str(&text).expect("valid JSON")
}

fn hex(v: &Value) -> Vec<u8> {
    let s = v.as_str().expect("hex string");
    assert!(s.len() % 2 == 0, "odd hex length: {s}");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex digit"))
        .collect()
}

fn num(v: &Value) -> u64 {
    v.as_str()
        .expect("decimal string")
        .parse()
        .expect("u64 value")
}

/// Encrypts like the web client: `prefix` is authenticated metadata in front.
fn protect(base_key: &[u8], kid: u64, ctr: u64, payload: &[u8], prefix: &[u8]) -> Vec<u8> {
    let key = EncryptionKey::derive_from(CipherSuite::AesGcm128Sha256, kid, base_key)
        .expect("key derivation");
    let frame = MediaFrame::try_with_meta_data(&mut SingleUseCounter::new(ctr), payload, prefix)
        .expect("frame with counter");
    let encrypted = frame.encrypt(&key).expect("encryption");
    [encrypted.meta_data(), encrypted.sframe_cipher_text()].concat()
}

fn unprotect(
    base_key: &[u8],
    kid: u64,
    data: &[u8],
    prefix: &[u8],
) -> sframe::error::Result<Vec<u8>> {
    let key = DecryptionKey::derive_from(CipherSuite::AesGcm128Sha256, kid, base_key)?;
    let frame = EncryptedFrame::try_with_meta_data(data, prefix)?;
    Ok(frame.decrypt(&key)?.payload().to_vec())
}

#[test]
fn headers_match_rfc9605_appendix_c() {
    let v = vectors();
    let headers = v["header"].as_array().expect("header vectors");
    assert_eq!(headers.len(), 17 * 17, "the whole RFC grid");
    for h in headers {
        let (kid, ctr, encoded) = (num(&h["kid"]), num(&h["ctr"]), hex(&h["encoded"]));
        let header = SframeHeader::new(kid, ctr);
        assert_eq!(
            Vec::from(&header),
            encoded,
            "encoding of kid {kid} ctr {ctr}"
        );
        let parsed = SframeHeader::deserialize(&encoded).expect("parses");
        assert_eq!(
            (parsed.key_id(), parsed.counter(), parsed.len()),
            (kid, ctr, encoded.len())
        );
    }
}

#[test]
fn rfc9605_suite_0004_example() {
    let v = vectors();
    let r = &v["rfc9605"];
    assert_eq!(r["cipher_suite"], 4);
    let (kid, ctr) = (num(&r["kid"]), num(&r["ctr"]));
    let (base, meta, pt, ct) = (
        hex(&r["base_key"]),
        hex(&r["metadata"]),
        hex(&r["pt"]),
        hex(&r["ct"]),
    );
    assert_eq!(
        protect(&base, kid, ctr, &pt, &meta),
        [meta.clone(), ct.clone()].concat()
    );
    assert_eq!(unprotect(&base, kid, &ct, &meta).expect("decrypts"), pt);
}

#[test]
fn web_client_frames_interoperate() {
    let v = vectors();
    let frames = v["web_client"].as_array().expect("web_client vectors");
    assert!(frames.len() >= 5);
    for w in frames {
        let name = w["name"].as_str().unwrap_or("?");
        let (kid, ctr, base) = (num(&w["kid"]), num(&w["ctr"]), hex(&w["base_key"]));
        let (frame, protected) = (hex(&w["frame"]), hex(&w["protected"]));
        let clear =
            usize::try_from(w["clear_bytes"].as_u64().expect("clear_bytes")).expect("usize");
        let (prefix, payload) = frame.split_at(clear);
        // The crate produces the browser's bytes exactly ...
        assert_eq!(
            protect(&base, kid, ctr, payload, prefix),
            protected,
            "{name}: encrypt"
        );
        // ... and opens them; the clear prefix is the browser's clear prefix.
        assert_eq!(&protected[..clear], prefix, "{name}: clear prefix");
        let opened = unprotect(&base, kid, &protected[clear..], prefix).expect("decrypts");
        assert_eq!(opened, payload, "{name}: decrypt");
        // A changed clear byte fails authentication.
        if clear > 0 {
            let mut bad = prefix.to_vec();
            bad[clear - 1] ^= 1;
            assert!(
                unprotect(&base, kid, &protected[clear..], &bad).is_err(),
                "{name}: tampered prefix"
            );
        }
        // The wrong key id finds no key.
        assert!(
            unprotect(&base, kid ^ 1, &protected[clear..], prefix).is_err(),
            "{name}: wrong kid"
        );
    }
}
