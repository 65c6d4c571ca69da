//! Heartbeat failure detection (sans-IO): a watched server whose last heartbeat is more than
//! `period × misses` old is declared failed, once (DESIGN.md §8, fail-stop model).
//!
//! Time is `now` in nanoseconds, passed in. Call [`Detector::poll_failed`] until it returns
//! `None` whenever [`Detector::poll_timeout`] has passed (or after any input).

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
    /// `period × misses`: the silence a server may keep and still be alive.
    allowed_silence: u64,
    /// The last heartbeat of every watched server.
    last: BTreeMap<ServerId, u64>,
}

impl Detector {
    /// A detector that declares a server failed after `misses` heartbeat periods of
    /// `period_ns` without a heartbeat.
    pub fn new(period_ns: u64, misses: u32) -> Detector {
        Detector {
            allowed_silence: period_ns.saturating_mul(u64::from(misses)),
            last: BTreeMap::new(),
        }
    }

    /// Starts watching `server` as if it had just sent a heartbeat (again, if it was watched).
    pub fn watch(&mut self, server: ServerId, now: u64) {
        self.last.insert(server, now);
    }

    /// Stops watching `server`.
    pub fn unwatch(&mut self, server: ServerId) {
        self.last.remove(&server);
    }

    /// A heartbeat from `server` at `now`; ignored if `server` is not watched. Time never moves
    /// backwards: an older `now` than the last heartbeat's changes nothing.
    pub fn heartbeat(&mut self, server: ServerId, now: u64) {
        if let Some(last) = self.last.get_mut(&server) {
            *last = (*last).max(now);
        }
    }

    /// The last heartbeat of `server`, if it is watched.
    pub fn last_heartbeat(&self, server: ServerId) -> Option<u64> {
        self.last.get(&server).copied()
    }

    /// A watched server silent for more than `period × misses` at `now` (the one silent the
    /// longest, lowest position first on a tie); it is no longer watched.
    pub fn poll_failed(&mut self, now: u64) -> Option<Failure> {
        let (&server, &last_heartbeat) = self.longest_silent()?;
        if now.saturating_sub(last_heartbeat) <= self.allowed_silence {
            return None;
        }
        self.last.remove(&server);
        Some(Failure {
            server,
            last_heartbeat,
        })
    }

    /// The first instant at which [`Detector::poll_failed`] could declare a server failed, if
    /// any is watched.
    pub fn poll_timeout(&self) -> Option<u64> {
        let (_, &last) = self.longest_silent()?;
        Some(last.saturating_add(self.allowed_silence).saturating_add(1))
    }

    fn longest_silent(&self) -> Option<(&ServerId, &u64)> {
        self.last
            .iter()
            .min_by_key(|&(&server, &last)| (last, server))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn s(i: u16) -> ServerId {
        ServerId(i)
    }

    /// 10 ms period, 3 misses: silent for more than 30 ms means failed.
    fn detector() -> Detector {
        Detector::new(10 * MS, 3)
    }

    #[test]
    fn a_silent_server_is_declared_once_after_the_allowed_silence() {
        let mut d = detector();
        d.watch(s(1), 0);
        assert_eq!(d.last_heartbeat(s(1)), Some(0));
        assert_eq!(d.poll_timeout(), Some(30 * MS + 1));
        assert_eq!(d.poll_failed(30 * MS), None, "exactly 30 ms is still alive");
        assert_eq!(
            d.poll_failed(30 * MS + 1),
            Some(Failure {
                server: s(1),
                last_heartbeat: 0
            })
        );
        assert_eq!(d.poll_failed(100 * MS), None, "declared once");
        assert_eq!(d.last_heartbeat(s(1)), None);
        assert_eq!(d.poll_timeout(), None);
    }

    #[test]
    fn heartbeats_keep_a_server_alive() {
        let mut d = detector();
        d.watch(s(0), 0);
        for t in (10..=200).step_by(10) {
            d.heartbeat(s(0), t * MS);
            assert_eq!(d.poll_failed(t * MS + 5 * MS), None);
        }
        assert_eq!(d.last_heartbeat(s(0)), Some(200 * MS));
        // A late-delivered older heartbeat does not move the last one back.
        d.heartbeat(s(0), 150 * MS);
        assert_eq!(d.last_heartbeat(s(0)), Some(200 * MS));
        assert_eq!(d.poll_timeout(), Some(230 * MS + 1));
    }

    #[test]
    fn the_longest_silent_goes_first_and_the_timeout_follows_it() {
        let mut d = detector();
        d.watch(s(0), 0);
        d.watch(s(1), 0);
        d.watch(s(2), 0);
        d.heartbeat(s(0), 20 * MS);
        d.heartbeat(s(2), 5 * MS);
        assert_eq!(
            d.poll_timeout(),
            Some(30 * MS + 1),
            "server 1, silent since 0"
        );
        let failed: Vec<_> = std::iter::from_fn(|| d.poll_failed(60 * MS))
            .map(|f| (f.server, f.last_heartbeat))
            .collect();
        assert_eq!(failed, [(s(1), 0), (s(2), 5 * MS), (s(0), 20 * MS)]);
        // Ties break by position.
        d.watch(s(4), 100 * MS);
        d.watch(s(3), 100 * MS);
        assert_eq!(d.poll_failed(200 * MS).map(|f| f.server), Some(s(3)));
    }

    #[test]
    fn unwatched_servers_are_never_declared() {
        let mut d = detector();
        d.heartbeat(s(5), 0);
        assert_eq!(d.last_heartbeat(s(5)), None);
        d.watch(s(5), 0);
        d.unwatch(s(5));
        assert_eq!(d.poll_timeout(), None);
        assert_eq!(d.poll_failed(u64::MAX), None);
        // Watching again restarts the clock.
        d.watch(s(5), 0);
        d.watch(s(5), 50 * MS);
        assert_eq!(d.poll_failed(70 * MS), None);
        assert_eq!(d.poll_timeout(), Some(80 * MS + 1));
    }

    #[test]
    fn huge_times_saturate() {
        let mut d = Detector::new(u64::MAX, u32::MAX);
        d.watch(s(0), u64::MAX - 1);
        assert_eq!(d.poll_timeout(), Some(u64::MAX));
        assert_eq!(d.poll_failed(u64::MAX), None);
    }
}
