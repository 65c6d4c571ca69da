//! [`Throttle`]: warnings about what anyone who reaches a port can cause as fast as they
//! connect (connections that do not verify, evicted for waiting too long), said once a period
//! at most with a count of those kept quiet, so that the log neither floods nor hides them.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How often a throttled warning is said at most.
pub const PERIOD: Duration = Duration::from_secs(10);

/// One kind of warning, said at most once a [`PERIOD`].
#[derive(Debug, Default)]
pub struct Throttle {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// When one was last said.
    said: Option<Instant>,
    /// Those kept quiet since.
    quiet: u64,
}

impl Throttle {
    pub const fn new() -> Throttle {
        Throttle {
            state: Mutex::new(State {
                said: None,
                quiet: 0,
            }),
        }
    }

    /// One more at `now`: `Some(words)` to add to it when it is to be said (how many were kept
    /// quiet since the last one said, if any), `None` when it is kept quiet.
    pub fn admit(&self, now: Instant) -> Option<String> {
        let mut s = self.state.lock().expect("no holder panics");
        if s.said.is_some_and(|t| now.duration_since(t) < PERIOD) {
            s.quiet += 1;
            return None;
        }
        s.said = Some(now);
        let quiet = std::mem::take(&mut s.quiet);
        Some(match quiet {
            0 => String::new(),
            n => format!(" (and {n} more since the last one logged)"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_is_said_a_period_with_the_count_of_those_kept_quiet() {
        let t = Throttle::new();
        let start = Instant::now();
        assert_eq!(t.admit(start).as_deref(), Some(""));
        for i in 1..=5 {
            assert_eq!(t.admit(start + Duration::from_secs(i)), None);
        }
        assert_eq!(
            t.admit(start + PERIOD).as_deref(),
            Some(" (and 5 more since the last one logged)")
        );
        assert_eq!(t.admit(start + PERIOD + Duration::from_secs(1)), None);
        assert_eq!(
            t.admit(start + PERIOD * 2).as_deref(),
            Some(" (and 1 more since the last one logged)")
        );
    }
}
