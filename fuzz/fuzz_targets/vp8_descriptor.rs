//! Arbitrary RTP payloads read as VP8: parsed or refused, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|payload: &[u8]| {
    let _ = sfu::media::vp8::parse(payload);
});
