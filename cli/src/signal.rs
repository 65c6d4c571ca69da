//! SIGINT and SIGTERM as a flag: a long-running command (`ftc orchestrator`, `ftc lab run`)
//! polls it and stops cleanly, stopping what it started, instead of dying on the spot.

use std::sync::atomic::{AtomicBool, Ordering};

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn raise(_: libc::c_int) {
    STOP.store(true, Ordering::Release);
}

/// The flag that SIGINT and SIGTERM raise from now on.
pub fn stop_flag() -> &'static AtomicBool {
    let handler = raise as extern "C" fn(libc::c_int) as libc::sighandler_t;
    for signal in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe { libc::signal(signal, handler) };
    }
    &STOP
}
