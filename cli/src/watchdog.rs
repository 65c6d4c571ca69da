//! A watchdog for runs that must end by a known time: past it, a thread of the chain is stuck
//! (a bug, such as a deadlock), and the command says so and exits instead of hanging silently.

use std::sync::mpsc::{channel, RecvTimeoutError, Sender};
use std::time::Duration;

/// Fires its action once `limit` has passed unless it was dropped first.
#[derive(Debug)]
pub struct Watchdog {
    _armed: Sender<()>,
}

impl Watchdog {
    /// Start watching: `on_expiry` runs on the watchdog's thread if this guard still lives
    /// after `limit`.
    pub fn start(limit: Duration, on_expiry: impl FnOnce() + Send + 'static) -> Watchdog {
        let (armed, disarmed) = channel::<()>();
        std::thread::Builder::new()
            .name("watchdog".into())
            .spawn(move || {
                if disarmed.recv_timeout(limit) == Err(RecvTimeoutError::Timeout) {
                    on_expiry();
                }
            })
            .expect("spawning the watchdog thread");
        Watchdog { _armed: armed }
    }

    /// A watchdog that reports `what` stuck after `limit` on stderr and exits the process with
    /// status 3.
    pub fn exit_after(limit: Duration, what: String) -> Watchdog {
        Watchdog::start(limit, move || {
            eprintln!(
                "ftc: {what} has not ended {limit:?} after it started: a thread of the chain is \
                 stuck (a bug; please report the spec and the command); giving up"
            );
            std::process::exit(3);
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fires_only_when_not_dropped_in_time() {
        let (fired, seen) = channel();
        let kept = {
            let fired = fired.clone();
            Watchdog::start(Duration::from_millis(20), move || {
                fired.send("kept").unwrap()
            })
        };
        drop(Watchdog::start(Duration::from_millis(20), move || {
            fired.send("dropped").unwrap()
        }));
        assert_eq!(seen.recv().unwrap(), "kept");
        drop(kept);
        // The dropped one's thread ended without firing, so every sender is gone.
        assert!(seen.recv().is_err());
    }
}
