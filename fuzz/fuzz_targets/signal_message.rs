//! Any text a WebSocket client sends is classified without panicking.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = sfu::signal::protocol::parse_client_message(text);
    }
});
