//! RFC 4571 deframing of arbitrary TCP bytes, split arbitrarily, yields the
//! same frames as in one piece and never holds more than one partial frame.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sfu::media::ice_tcp::{deframe, MAX_FRAME};

fuzz_target!(|input: (Vec<u8>, u8)| {
    let (data, split) = input;
    let mut whole = data.clone();
    let expected = deframe(&mut whole);
    let at = (split as usize).min(data.len());
    let mut buf = data[..at].to_vec();
    let mut got = deframe(&mut buf);
    buf.extend_from_slice(&data[at..]);
    got.extend(deframe(&mut buf));
    assert_eq!(got, expected);
    assert_eq!(buf, whole);
    assert!(buf.len() < MAX_FRAME + 2);
});
