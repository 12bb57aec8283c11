//! Bounds-checked big-endian reads shared by the parsers.
//!
//! Every read goes through `slice::get`, so a wrong offset yields `None`
//! instead of a panic: the parsers run on untrusted datagrams.

/// Reads a big-endian `u16` at `at`, or `None` past the end.
#[inline]
pub(crate) fn read_u16(buf: &[u8], at: usize) -> Option<u16> {
    let b = buf.get(at..at.checked_add(2)?)?;
    Some(u16::from_be_bytes([b[0], b[1]]))
}

/// Reads a big-endian `u32` at `at`, or `None` past the end.
#[inline]
pub(crate) fn read_u32(buf: &[u8], at: usize) -> Option<u32> {
    let b = buf.get(at..at.checked_add(4)?)?;
    Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// `len` rounded up to a multiple of 4 (STUN attributes and ChannelData
/// over streams are padded to 32-bit boundaries).
#[inline]
pub(crate) const fn pad4(len: usize) -> usize {
    (len + 3) & !3
}

/// Appends the zero bytes that pad a value of `len` bytes to 4.
#[inline]
pub(crate) fn push_padding(out: &mut Vec<u8>, len: usize) {
    const ZEROS: [u8; 3] = [0; 3];
    let n = pad4(len) - len;
    out.extend_from_slice(&ZEROS[..n]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_are_bounds_checked() {
        assert_eq!(read_u16(&[1, 2, 3], 1), Some(0x0203));
        assert_eq!(read_u16(&[1, 2, 3], 2), None);
        assert_eq!(read_u16(&[1, 2, 3], usize::MAX), None);
        assert_eq!(read_u32(&[1, 2, 3, 4], 0), Some(0x0102_0304));
        assert_eq!(read_u32(&[1, 2, 3, 4], 1), None);
    }

    #[test]
    fn padding() {
        assert_eq!([0, 1, 2, 3, 4, 5].map(pad4), [0, 4, 4, 4, 4, 8]);
        let mut v = vec![9];
        push_padding(&mut v, 1);
        assert_eq!(v, [9, 0, 0, 0]);
    }
}
