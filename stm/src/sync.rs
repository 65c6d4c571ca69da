//! The atomics and the wait primitive the lock manager uses: std's normally, shuttle's when the
//! `shuttle` feature builds the crate for model checking.

#[cfg(feature = "shuttle")]
pub(crate) use shuttle::sync::atomic::{AtomicBool, AtomicU64, Ordering};
#[cfg(not(feature = "shuttle"))]
pub(crate) use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Wait a little before looking at a contended lock again: spin first, then give up the core.
#[inline]
pub(crate) fn backoff(spins: &mut u32) {
    #[cfg(feature = "shuttle")]
    {
        let _ = spins;
        shuttle::thread::yield_now();
    }
    #[cfg(not(feature = "shuttle"))]
    {
        if *spins < 64 {
            std::hint::spin_loop();
        } else {
            std::thread::yield_now();
        }
        *spins = spins.saturating_add(1);
    }
}
