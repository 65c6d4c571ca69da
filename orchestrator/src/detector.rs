//! Heartbeat failure detection (sans-IO): a watched server silent for more than
//! `period × misses` is declared failed, once (DESIGN.md §8, fail-stop model); silence is only
//! counted while the detector itself was on time.
//!
//! Time is `now` in nanoseconds, passed in. Call [`Detector::poll_failed`] until it returns
//! `None` whenever [`Detector::poll_timeout`] has passed (or after any input). The timeout
//! comes at least once a heartbeat period while servers are watched, so that the detector
//! notices when it is late: an input or poll after the instant it asked for means that its
//! own loop was not scheduled (a machine starved of CPU), and it could not have told a
//! server's silence from its own absence then. Every watched server's silence is counted
//! from that much later; a dead server is still declared `period × misses` after its last
//! heartbeat when nothing is late, and later only by as long as the detector was late.

use std::collections::BTreeMap;

use ftc_chain::ring::ServerId;

/// A server the detector declared failed, and when it last heard from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failure {
    pub server: ServerId,
    pub last_heartbeat: u64,
}

/// Watches servers' heartbeats and declares the silent ones failed.
#[derive(Debug, Clone)]
pub struct Detector {
    period: u64,
    /// `period × misses`: the silence a server may keep and still be alive.
    allowed_silence: u64,
    watched: BTreeMap<ServerId, Watched>,
    /// The latest `now` of any input or poll.
    seen: u64,
}

#[derive(Debug, Clone, Copy)]
struct Watched {
    /// Its last heartbeat (or when it started being watched).
    heard: u64,
    /// Its silence counts from here: `heard`, moved forward by the detector's lateness since.
    since: u64,
}

impl Detector {
    /// A detector that declares a server failed after `misses` heartbeat periods of
    /// `period_ns` without a heartbeat.
    pub fn new(period_ns: u64, misses: u32) -> Detector {
        Detector {
            period: period_ns,
            allowed_silence: period_ns.saturating_mul(u64::from(misses)),
            watched: BTreeMap::new(),
            seen: 0,
        }
    }

    /// Starts watching `server` as if it had just sent a heartbeat (again, if it was watched).
    pub fn watch(&mut self, server: ServerId, now: u64) {
        self.advance(now);
        let w = Watched {
            heard: now,
            since: now,
        };
        self.watched.insert(server, w);
    }

    /// Starts watching `server`, just launched at `now`, which may take `grace` to start before
    /// its silence counts: it is declared failed if it says nothing for `grace` and the usual
    /// silence after.
    pub fn watch_start(&mut self, server: ServerId, now: u64, grace: u64) {
        self.advance(now);
        let w = Watched {
            heard: now,
            since: now.saturating_add(grace),
        };
        self.watched.insert(server, w);
    }

    /// Stops watching `server`.
    pub fn unwatch(&mut self, server: ServerId) {
        self.watched.remove(&server);
    }

    /// A heartbeat from `server` at `now`; ignored if `server` is not watched. Time never moves
    /// backwards: an older `now` than the last heartbeat's changes nothing.
    pub fn heartbeat(&mut self, server: ServerId, now: u64) {
        self.advance(now);
        if let Some(w) = self.watched.get_mut(&server) {
            w.heard = w.heard.max(now);
            w.since = w.since.max(now);
        }
    }

    /// The last heartbeat of `server`, if it is watched.
    pub fn last_heartbeat(&self, server: ServerId) -> Option<u64> {
        self.watched.get(&server).map(|w| w.heard)
    }

    /// A watched server silent for more than `period × misses` at `now`, not counting the
    /// detector's own lateness (the one silent the longest, lowest position first on a tie);
    /// it is no longer watched.
    pub fn poll_failed(&mut self, now: u64) -> Option<Failure> {
        self.advance(now);
        let (server, w) = self.longest_silent()?;
        if now.saturating_sub(w.since) <= self.allowed_silence {
            return None;
        }
        self.watched.remove(&server);
        Some(Failure {
            server,
            last_heartbeat: w.heard,
        })
    }

    /// When to call [`Detector::poll_failed`] next, if any server is watched: the first
    /// instant at which it could declare one failed, and at the latest a heartbeat period
    /// after the last input.
    pub fn poll_timeout(&self) -> Option<u64> {
        let (_, w) = self.longest_silent()?;
        let declare = w
            .since
            .saturating_add(self.allowed_silence)
            .saturating_add(1);
        Some(declare.min(self.seen.saturating_add(self.period)))
    }

    /// Time moves to `now`: if that is past the poll the detector asked for, it was late by the
    /// difference, which is nobody's silence.
    fn advance(&mut self, now: u64) {
        if let Some(asked) = self.poll_timeout() {
            let late = now.saturating_sub(asked.max(self.seen));
            if late > 0 {
                for w in self.watched.values_mut() {
                    w.since = w.since.saturating_add(late);
                }
            }
        }
        self.seen = self.seen.max(now);
    }

    fn longest_silent(&self) -> Option<(ServerId, Watched)> {
        self.watched
            .iter()
            .min_by_key(|&(&server, w)| (w.since, server))
            .map(|(&server, &w)| (server, w))
    }
}

#[cfg(test)]
mod tests;
