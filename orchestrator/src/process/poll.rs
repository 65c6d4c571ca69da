//! Waiting on several descriptors at once (`ppoll`): a node's thread on its sockets, a lane on
//! its links and its inbox; and for how long.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::time::Duration;

/// A `poll` entry waiting for `fd` to be readable (none: an entry `poll` ignores).
pub fn readable(fd: Option<BorrowedFd<'_>>) -> libc::pollfd {
    libc::pollfd {
        // poll ignores negative descriptors.
        fd: fd.map_or(-1, |fd| fd.as_raw_fd()),
        events: libc::POLLIN,
        revents: 0,
    }
}

/// Wait until one of `polls` is readable or `timeout` passes (`None`: no limit); each entry's
/// `revents` says whether it is.
pub fn wait_readable(polls: &mut [libc::pollfd], timeout: Option<Duration>) -> io::Result<()> {
    let timespec = timeout.map(|t| libc::timespec {
        tv_sec: libc::time_t::try_from(t.as_secs()).unwrap_or(libc::time_t::MAX),
        tv_nsec: libc::c_long::from(t.subsec_nanos()),
    });
    let timespec_ptr = timespec
        .as_ref()
        .map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: `polls` is an array of `polls.len()` initialized pollfd structs that outlives the
    // call; `timespec_ptr` is null or points to a timespec that outlives it; a null signal mask
    // leaves the thread's mask as it is.
    let n = unsafe {
        libc::ppoll(
            polls.as_mut_ptr(),
            polls.len() as libc::nfds_t,
            timespec_ptr,
            std::ptr::null(),
        )
    };
    if n < 0 {
        let e = io::Error::last_os_error();
        polls.iter_mut().for_each(|p| p.revents = 0);
        return match e.kind() {
            io::ErrorKind::Interrupted => Ok(()),
            _ => Err(e),
        };
    }
    Ok(())
}

/// How soon a node's thread (or a lane) flushes again frames its AF_XDP tx rings still hold.
const RETRY_FLUSH: Duration = Duration::from_micros(50);

/// How long to wait at `now` (ns on the waiter's clock): until `at`, its next timer, if it has
/// one, and no longer than [`RETRY_FLUSH`] when there is something to try again `soon` (frames
/// the kernel did not take yet go with the next flush even if nothing else happens: an idle
/// waiter would otherwise keep them for good).
pub fn wait_for(now: u64, at: Option<u64>, soon: bool) -> Option<Duration> {
    let timer = at.map(|at| Duration::from_nanos(at.saturating_sub(now)));
    match soon {
        true => Some(timer.map_or(RETRY_FLUSH, |t| t.min(RETRY_FLUSH))),
        false => timer,
    }
}
