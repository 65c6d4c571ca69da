//! Unsigned LEB128, strict: at most 10 bytes, no overflow of u64, and minimal encodings only.
//!
//! Non-minimal encodings (a final `0x00` byte after a continuation, as in `0x80 0x00` for zero)
//! are rejected, so every value has exactly one encoding and every valid piggyback message has
//! exactly one byte form: parse → emit gives back the same bytes.

use super::WireError;

/// Longest encoding of a u64.
pub const MAX_LEN: usize = 10;

/// Bytes needed to encode `v` (1 ..= 10).
#[inline]
pub const fn len_u64(v: u64) -> usize {
    let bits = 64 - (v | 1).leading_zeros() as usize;
    // ceil(bits / 7) for bits in 1..=64, without a division (checked in the tests).
    (bits * 9 + 64) / 64
}

/// Encodes `v` at the start of `buf`; returns the bytes written, or `None` if `buf` is too short
/// (then `buf` is untouched).
#[inline(always)]
pub fn write_u64(buf: &mut [u8], v: u64) -> Option<usize> {
    // One to three bytes (values below 2^21) are the common cases: lengths, counts, sequences.
    if v < 1 << 7 {
        *buf.first_mut()? = v as u8;
        Some(1)
    } else if v < 1 << 14 {
        *buf.first_chunk_mut::<2>()? = [v as u8 | 0x80, (v >> 7) as u8];
        Some(2)
    } else if v < 1 << 21 {
        *buf.first_chunk_mut::<3>()? = [v as u8 | 0x80, (v >> 7) as u8 | 0x80, (v >> 14) as u8];
        Some(3)
    } else {
        write_long(buf, v)
    }
}

#[cold]
fn write_long(buf: &mut [u8], mut v: u64) -> Option<usize> {
    let n = len_u64(v);
    let out = buf.get_mut(..n)?;
    for (i, b) in out.iter_mut().enumerate() {
        let more = if i + 1 < n { 0x80 } else { 0 };
        *b = (v as u8 & 0x7f) | more;
        v >>= 7;
    }
    Some(n)
}

/// Decodes a value from the start of `buf`: the value and the bytes read, or `None` if `buf`
/// does not start with a valid (strict, minimal) encoding.
pub fn read_u64(buf: &[u8]) -> Option<(u64, usize)> {
    read_u64_checked(buf).ok()
}

/// [`read_u64`] that says why: [`WireError::Truncated`] if `buf` ends inside the integer,
/// [`WireError::BadVarint`] if it is too long, overflows or is not minimal.
#[inline(always)]
pub fn read_u64_checked(buf: &[u8]) -> Result<(u64, usize), WireError> {
    // One to three bytes (values below 2^21) are the common cases: lengths, counts, sequences.
    // A final zero byte after a continuation byte would be non-minimal.
    match *buf {
        [b0, ..] if b0 < 0x80 => Ok((u64::from(b0), 1)),
        [b0, b1, ..] if b1 < 0x80 => {
            if b1 == 0 {
                return Err(WireError::BadVarint);
            }
            Ok((u64::from(b0 & 0x7f) | (u64::from(b1) << 7), 2))
        }
        [b0, b1, b2, ..] if b2 < 0x80 => {
            if b2 == 0 {
                return Err(WireError::BadVarint);
            }
            let v = u64::from(b0 & 0x7f) | (u64::from(b1 & 0x7f) << 7) | (u64::from(b2) << 14);
            Ok((v, 3))
        }
        [] => Err(WireError::Truncated),
        _ => read_long(buf),
    }
}

#[cold]
fn read_long(buf: &[u8]) -> Result<(u64, usize), WireError> {
    let mut v = 0u64;
    for (i, &b) in buf.iter().enumerate().take(MAX_LEN) {
        // The 10th byte holds bit 63 only, and must end the integer.
        if i == MAX_LEN - 1 && b > 1 {
            return Err(WireError::BadVarint);
        }
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            if b == 0 && i > 0 {
                return Err(WireError::BadVarint);
            }
            return Ok((v, i + 1));
        }
    }
    // Fewer than MAX_LEN bytes, all with the continuation bit.
    Err(WireError::Truncated)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_encodings() {
        let cases: &[(u64, &[u8])] = &[
            (0, &[0x00]),
            (1, &[0x01]),
            (127, &[0x7f]),
            (128, &[0x80, 0x01]),
            (300, &[0xac, 0x02]),
            (16383, &[0xff, 0x7f]),
            (16384, &[0x80, 0x80, 0x01]),
            (
                u64::MAX,
                &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
            ),
        ];
        for &(v, enc) in cases {
            let mut buf = [0u8; MAX_LEN];
            assert_eq!(write_u64(&mut buf, v), Some(enc.len()), "{v}");
            assert_eq!(&buf[..enc.len()], enc);
            assert_eq!(len_u64(v), enc.len());
            assert_eq!(read_u64(enc), Some((v, enc.len())));
        }
    }

    #[test]
    fn rejects_bad_encodings() {
        // Non-minimal.
        assert_eq!(read_u64_checked(&[0x80, 0x00]), Err(WireError::BadVarint));
        assert_eq!(
            read_u64_checked(&[0x81, 0x80, 0x00]),
            Err(WireError::BadVarint)
        );
        // Overflow in the 10th byte.
        let mut over = [0xffu8; 10];
        over[9] = 0x02;
        assert_eq!(read_u64_checked(&over), Err(WireError::BadVarint));
        // 11 bytes.
        let mut long = [0x80u8; 11];
        long[10] = 0x01;
        assert_eq!(read_u64_checked(&long), Err(WireError::BadVarint));
        // Truncated.
        assert_eq!(read_u64_checked(&[]), Err(WireError::Truncated));
        assert_eq!(read_u64_checked(&[0x80]), Err(WireError::Truncated));
        assert_eq!(read_u64_checked(&[0xff; 9]), Err(WireError::Truncated));
    }

    #[test]
    fn len_matches_ceil_bits_over_7() {
        for bits in 1..=64u32 {
            for v in [1u64 << (bits - 1), u64::MAX >> (64 - bits)] {
                assert_eq!(len_u64(v), (bits as usize).div_ceil(7), "{v:#x}");
            }
        }
        assert_eq!(len_u64(0), 1);
    }

    #[test]
    fn write_needs_room() {
        let mut buf = [0xaau8; 1];
        assert_eq!(write_u64(&mut buf, 128), None);
        assert_eq!(buf, [0xaa]);
    }

    fn edge_u64() -> impl Strategy<Value = u64> {
        prop_oneof![
            any::<u64>(),
            (0u32..64).prop_map(|s| 1u64 << s),
            (0u32..64).prop_map(|s| (1u64 << s) - 1),
            (1u32..64).prop_map(|s| (1u64 << s) + 1),
            Just(u64::MAX),
        ]
    }

    proptest! {
        #[test]
        fn round_trip(v in edge_u64(), pad in proptest::collection::vec(any::<u8>(), 0..4)) {
            let mut buf = [0u8; MAX_LEN + 4];
            let n = write_u64(&mut buf, v).expect("room");
            prop_assert_eq!(n, len_u64(v));
            buf[n..n + pad.len()].copy_from_slice(&pad);
            prop_assert_eq!(read_u64(&buf[..n + pad.len()]), Some((v, n)));
            // Every strict prefix is truncated.
            for cut in 0..n {
                prop_assert_eq!(read_u64_checked(&buf[..cut]), Err(WireError::Truncated));
            }
        }

        #[test]
        fn never_panics_and_reencodes(bytes in proptest::collection::vec(any::<u8>(), 0..16)) {
            if let Some((v, n)) = read_u64(&bytes) {
                let mut buf = [0u8; MAX_LEN];
                prop_assert_eq!(write_u64(&mut buf, v), Some(n));
                prop_assert_eq!(&buf[..n], &bytes[..n]);
            }
        }
    }
}
