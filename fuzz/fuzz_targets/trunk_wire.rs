//! Any bytes from a peer node, as a media datagram (and the RTP packet in
//! it) or as control-stream chunks, are parsed or refused without
//! panicking; what parses encodes back to the same message.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sfu::cluster::trunk::wire::{ControlDecoder, MediaDatagram};
use sfu::media::trunk_rtp;

fuzz_target!(|data: &[u8]| {
    if let Ok(d) = MediaDatagram::decode(&bytes::Bytes::copy_from_slice(data)) {
        assert_eq!(d.encode(), data);
        if let Ok(rtp) = trunk_rtp::parse(&d.rtp) {
            assert!(rtp.payload.len() <= d.rtp.len());
        }
    }
    // The first byte picks a chunk size, so frames split anywhere.
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    let mut decoder = ControlDecoder::new();
    for chunk in rest.chunks(usize::from(split).max(1)) {
        decoder.push(chunk);
        loop {
            match decoder.next_message() {
                Ok(Some(message)) => {
                    let frame = message.encode().expect("a decoded message encodes");
                    let mut again = ControlDecoder::new();
                    again.push(&frame);
                    assert_eq!(again.next_message().ok().flatten(), Some(message));
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
});
