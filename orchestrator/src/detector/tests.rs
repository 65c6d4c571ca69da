//! The detector on a virtual clock: 10 ms heartbeats, failed after 3 missed (more than 30 ms
//! of silence), polled when it asks to be (on time) or later (its own loop starved).

use super::*;

const MS: u64 = 1_000_000;

fn s(i: u16) -> ServerId {
    ServerId(i)
}

fn detector() -> Detector {
    Detector::new(10 * MS, 3)
}

/// Polls `d` on time, at each timeout it asks for, until `until`: the failures and when
/// they were declared.
fn poll_on_time(d: &mut Detector, until: u64) -> Vec<(Failure, u64)> {
    let mut failed = Vec::new();
    while let Some(at) = d.poll_timeout().filter(|&at| at <= until) {
        failed.extend(std::iter::from_fn(|| d.poll_failed(at)).map(|f| (f, at)));
    }
    failed
}

#[test]
fn a_silent_server_is_declared_once_after_the_allowed_silence() {
    let mut d = detector();
    d.watch(s(1), 0);
    assert_eq!(d.last_heartbeat(s(1)), Some(0));
    assert_eq!(d.poll_timeout(), Some(10 * MS), "a poll every period");
    assert_eq!(
        poll_on_time(&mut d, 30 * MS),
        [],
        "exactly 30 ms is still alive"
    );
    assert_eq!(d.poll_timeout(), Some(30 * MS + 1));
    let failure = Failure {
        server: s(1),
        last_heartbeat: 0,
    };
    assert_eq!(poll_on_time(&mut d, 100 * MS), [(failure, 30 * MS + 1)]);
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
    assert_eq!(poll_on_time(&mut d, 230 * MS), []);
    assert_eq!(d.poll_timeout(), Some(230 * MS + 1));
}

#[test]
fn the_longest_silent_goes_first_and_the_timeout_follows_it() {
    let mut d = detector();
    d.watch(s(0), 0);
    d.watch(s(1), 0);
    d.watch(s(2), 0);
    d.heartbeat(s(2), 5 * MS);
    assert_eq!(poll_on_time(&mut d, 20 * MS), []);
    d.heartbeat(s(0), 20 * MS);
    assert_eq!(poll_on_time(&mut d, 30 * MS), []);
    assert_eq!(
        d.poll_timeout(),
        Some(30 * MS + 1),
        "server 1, silent since 0"
    );
    let failed: Vec<_> = poll_on_time(&mut d, 60 * MS)
        .into_iter()
        .map(|(f, at)| (f.server, f.last_heartbeat, at))
        .collect();
    assert_eq!(
        failed,
        [
            (s(1), 0, 30 * MS + 1),
            (s(2), 5 * MS, 35 * MS + 1),
            (s(0), 20 * MS, 50 * MS + 1)
        ]
    );
    // Ties break by position.
    d.watch(s(4), 100 * MS);
    d.watch(s(3), 100 * MS);
    let first = poll_on_time(&mut d, 200 * MS)
        .first()
        .map(|(f, _)| f.server);
    assert_eq!(first, Some(s(3)));
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
    assert_eq!(poll_on_time(&mut d, 80 * MS), []);
    assert_eq!(d.poll_timeout(), Some(80 * MS + 1));
}

#[test]
fn a_dead_server_among_live_ones_is_declared_on_time() {
    // Servers 0 to 3 beat every period, each with its own offset; 2 dies at 47 ms.
    let mut d = detector();
    for i in 0..4 {
        d.watch(s(i), 0);
    }
    let mut declared = Vec::new();
    for ms in 1..=200 {
        let now = ms * MS;
        declared.extend(poll_on_time(&mut d, now - 1));
        for i in 0..4u16 {
            let beats = ms % 10 == u64::from(i) * 2 && (i != 2 || ms < 47);
            if beats {
                d.heartbeat(s(i), now);
            }
        }
    }
    let failure = Failure {
        server: s(2),
        last_heartbeat: 44 * MS,
    };
    assert_eq!(declared, [(failure, 74 * MS + 1)]);
}

#[test]
fn the_detectors_own_lateness_is_nobodys_silence() {
    let mut d = detector();
    d.watch(s(0), 0); // dead from the start
    d.watch(s(1), 0);
    d.heartbeat(s(1), 10 * MS);
    d.heartbeat(s(1), 20 * MS);
    assert_eq!(d.poll_timeout(), Some(30 * MS));
    // The detector's loop is not scheduled from 30 ms to 60 ms; neither is server 1's
    // heartbeat thread. Only the 30 ms that the detector saw count: server 0 is not declared
    // yet, server 1 is 10 ms silent.
    assert_eq!(d.poll_failed(60 * MS), None);
    assert_eq!(
        d.poll_timeout(),
        Some(60 * MS + 1),
        "server 0, silent 30 ms"
    );
    assert_eq!(d.last_heartbeat(s(0)), Some(0), "its real last heartbeat");
    d.heartbeat(s(1), 60 * MS);
    let failure = Failure {
        server: s(0),
        last_heartbeat: 0,
    };
    assert_eq!(poll_on_time(&mut d, 89 * MS), [(failure, 60 * MS + 1)]);
    assert_eq!(d.last_heartbeat(s(1)), Some(60 * MS));
}

#[test]
fn lateness_counts_from_the_first_input_after_it() {
    let mut d = detector();
    d.watch(s(0), 0);
    d.watch(s(1), 0);
    d.heartbeat(s(0), 10 * MS);
    d.heartbeat(s(1), 10 * MS);
    // Starved from 20 ms to 45 ms: a heartbeat of 0 is the first thing handled after; 1's
    // comes later but is still in time, as the 25 ms blind stretch is not its silence.
    d.heartbeat(s(0), 45 * MS);
    assert_eq!(d.poll_failed(45 * MS), None);
    assert_eq!(d.poll_failed(50 * MS), None);
    d.heartbeat(s(1), 50 * MS);
    d.heartbeat(s(0), 55 * MS);
    // On time again: each is declared 30 ms after its last heartbeat.
    let declared: Vec<_> = poll_on_time(&mut d, 200 * MS)
        .into_iter()
        .map(|(f, at)| (f.server, at))
        .collect();
    assert_eq!(declared, [(s(1), 80 * MS + 1), (s(0), 85 * MS + 1)]);
}

#[test]
fn huge_times_saturate() {
    let mut d = Detector::new(u64::MAX, u32::MAX);
    d.watch(s(0), u64::MAX - 1);
    assert_eq!(d.poll_timeout(), Some(u64::MAX));
    assert_eq!(d.poll_failed(u64::MAX), None);
}
