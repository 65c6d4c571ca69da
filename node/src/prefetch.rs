//! Cache prefetch hints for bytes another thread wrote: servers are threads on different cores,
//! and the first touch of a packet or a message they pass on is a cache miss unless it was
//! asked for early. Hints only: no effect on what the program computes, none off x86-64.

/// How much of a buffer is asked for: the headers a middlebox parses, a message's header and
/// first logs.
const LINES: usize = 2;
const LINE: usize = 64;

/// Asks for the first cache lines of `bytes`, to be read soon.
pub fn read(bytes: &[u8]) {
    hint(bytes.as_ptr(), bytes.len(), false);
}

/// Asks for the first cache lines of `buf`'s allocation (its length may be 0), to be written
/// soon: the line comes in owned, so the write does not wait for another core to let go of it.
pub fn write(buf: &Vec<u8>) {
    hint(buf.as_ptr(), buf.capacity(), true);
}

fn hint(p: *const u8, len: usize, write: bool) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_ET0, _MM_HINT_T0};
        let lines = len.div_ceil(LINE).min(LINES);
        for i in 0..lines {
            let at = p.wrapping_add(i * LINE).cast::<i8>();
            // SAFETY: SSE is part of x86-64's baseline, and a prefetch never faults, whatever
            // the address.
            unsafe {
                if write {
                    _mm_prefetch::<_MM_HINT_ET0>(at);
                } else {
                    _mm_prefetch::<_MM_HINT_T0>(at);
                }
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (p, len, write);
}
