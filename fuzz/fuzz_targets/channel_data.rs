//! Any datagram: ChannelData parsing never panics, and what parses
//! re-encodes (padded or not) to a message that parses the same.
#![no_main]
use libfuzzer_sys::fuzz_target;
use turn_server::stun::channel_data;
use turn_server::stun::framing::{next_frame_len, Framing};

fuzz_target!(|data: &[u8]| {
    let Ok((channel, payload)) = channel_data::parse(data) else {
        return;
    };
    assert!(channel_data::is_valid_channel(channel));
    for pad in [false, true] {
        let mut out = Vec::new();
        let n = channel_data::encode(&mut out, channel, payload, pad).expect("parsed => encodable");
        assert_eq!(n, out.len());
        assert_eq!(channel_data::parse(&out), Ok((channel, payload)));
        if pad {
            assert_eq!(next_frame_len(&out), Framing::Complete(out.len()));
        }
    }
});
