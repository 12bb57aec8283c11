//! STUN/ChannelData stream framing of arbitrary bytes: splitting the
//! stream anywhere (once, or into single bytes) yields the same frames and
//! the same verdict as the stream in one piece, and a connection never
//! buffers more than one maximal frame.
#![no_main]
use libfuzzer_sys::fuzz_target;
use turn_server::stun::framing::{next_frame_len, Framing, MAX_FRAME_LEN};

/// Cuts the complete frames off `buf`; true once the stream is invalid.
fn deframe(buf: &mut Vec<u8>, frames: &mut Vec<Vec<u8>>) -> bool {
    loop {
        match next_frame_len(buf) {
            Framing::Complete(n) => {
                assert!(n >= 4 && n <= buf.len());
                frames.push(buf[..n].to_vec());
                buf.drain(..n);
            }
            Framing::NeedMore => {
                assert!(buf.len() < MAX_FRAME_LEN);
                return false;
            }
            Framing::Invalid => return true,
        }
    }
}

/// Feeds `data` in the given pieces, stopping at the first invalid frame
/// (the connection is closed then).
fn run(pieces: impl Iterator<Item = Vec<u8>>) -> (Vec<Vec<u8>>, bool, Vec<u8>) {
    let mut buf = Vec::new();
    let mut frames = Vec::new();
    for piece in pieces {
        buf.extend_from_slice(&piece);
        if deframe(&mut buf, &mut frames) {
            return (frames, true, Vec::new());
        }
    }
    (frames, false, buf)
}

fuzz_target!(|input: (Vec<u8>, u16)| {
    let (data, split) = input;
    let whole = run(std::iter::once(data.clone()));
    let at = usize::from(split).min(data.len());
    let two = run([data[..at].to_vec(), data[at..].to_vec()].into_iter());
    assert_eq!(two, whole);
    let bytes = run(data.iter().map(|b| vec![*b]));
    assert_eq!(bytes, whole);
});
