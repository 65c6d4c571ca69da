//! The in-process runtime end to end: a chain of threads over the in-memory transport, in FTC
//! and NF modes, with its own end-of-run checks (every packet accounted for, replicas equal to
//! their heads). Timings are not asserted.

use std::time::Duration;

use ftc_node::runtime::{run_chain, RunConfig};
use ftc_node::Mode;

mod support;
use support::{assert_all_released, spec};

/// Server 0 of Ch-2 over `heads` (made from `specs/ch-2.toml`), its inbox, and the routes to
/// every server, for a test that drives one server's thread by hand.
fn ch2_server_0(
    heads: &ftc_node::Heads,
) -> (ftc_node::runtime::Inboxed<'_>, ftc_node::serve::Routes) {
    let spec = spec("ch-2.toml");
    let ring = spec.ring();
    let config = ftc_node::ServerConfig::default();
    let (lanes, hops) =
        ftc_node::runtime::chain_lanes(ring, ring.servers(), spec.chain.partitions, heads, &config);
    let server = lanes.into_iter().next().expect("server 0");
    (server, ftc_node::serve::Routes::with_lanes(hops))
}

#[test]
fn chains_run_in_both_modes_and_check_out() {
    for name in ["ch-rec.toml", "ch-2.toml", "ch-5.toml", "mazu-nat.toml"] {
        for mode in [Mode::Ftc, Mode::Nf] {
            let config = RunConfig {
                mode,
                duration: Duration::from_millis(300),
                ..RunConfig::default()
            };
            let spec = spec(name);
            let r = run_chain(&spec, &config);
            assert_all_released(&r, &format!("{name} in {mode:?}"));
            assert!(r.latency_us.p50 > 0.0 && r.latency_us.p99 >= r.latency_us.p50);
            let f = &r.frames;
            if mode == Mode::Nf {
                assert_eq!(*f, Default::default(), "NF counts no protocol traffic");
                continue;
            }
            // Every released packet crossed every server; what the buffer returned went back
            // into the chain (at most: some may still wait when the run stops).
            assert!(f.handled >= r.packets_released * r.servers as u64);
            assert!(f.logs_attached + f.logs_propagated <= f.logs_returned);
            assert!(f.logs_returned == 0 || f.returns > 0);
            if name.starts_with("ch-") && name != "ch-rec.toml" {
                // Monitors write on every packet: a packet leaves only once each of its k logs
                // is in f + 1 stores, so replicas applied at least k·f logs per packet.
                let (k, fail) = (spec.k() as u64, spec.f() as u64);
                assert!(
                    f.logs_applied >= r.packets_released * k * fail,
                    "{name}: {} logs applied for {} packets",
                    f.logs_applied,
                    r.packets_released
                );
            }
        }
    }
}

#[test]
fn a_rated_run_offers_about_its_rate() {
    let config = RunConfig {
        rate: Some(20_000),
        duration: Duration::from_millis(500),
        ..RunConfig::default()
    };
    let r = run_chain(&spec("ch-rec.toml"), &config);
    assert!(r.violations.is_empty(), "{:?}", r.violations);
    // 10 000 packets are due in 0.5 s at 20 000 packets/s; the generator never sends ahead.
    assert!(r.packets_sent <= 10_001, "{} sent", r.packets_sent);
}

/// Several worker threads (lanes) per server, a different number at each middlebox, counters
/// shared by two threads: every packet leaves, none is lost, and every replica store (written
/// by the lanes of several servers at once) equals its head at the end.
#[test]
fn servers_with_several_lanes_check_out() {
    let mut spec = spec("ch-3.toml");
    for (m, threads) in spec.middlebox.iter_mut().zip([2, 3, 1]) {
        m.threads = threads;
        if let ftc_chain::spec::MiddleboxKind::Monitor(c) = &mut m.kind {
            c.sharing_level = threads.min(2);
        }
    }
    spec.validate().unwrap();
    for mode in [Mode::Ftc, Mode::Nf] {
        let config = RunConfig {
            mode,
            duration: Duration::from_millis(400),
            ..RunConfig::default()
        };
        let r = run_chain(&spec, &config);
        assert_all_released(&r, &format!("{mode:?}"));
        // Every lane says how busy it was: all carried traffic (64 flows over at most 3 lanes),
        // none for longer than the run.
        let lanes: Vec<_> = r.busy.iter().map(|b| b.thread.as_str()).collect();
        let mut want = vec!["server 0 lane 0", "server 0 lane 1"];
        want.extend(["server 1 lane 0", "server 1 lane 1", "server 1 lane 2"]);
        want.push("server 2 lane 0");
        assert_eq!(lanes, want, "{mode:?}");
        for b in &r.busy {
            assert!(b.busy > 0.0 && b.busy <= 1.05, "{mode:?}: {b:?}");
        }
        assert!(r
            .busiest()
            .is_some_and(|b| r.busy.iter().all(|o| o.busy <= b.busy)));
    }
}

/// A server killed in the middle of a batch counts every packet it had taken in as lost: those
/// it handled (their frames not sent yet), and those after the kill in the same batch, which
/// never reach its inbox's black hole.
#[test]
fn a_server_killed_mid_batch_loses_no_packet_from_the_count() {
    use ftc_chain::middlebox::Direction;
    use ftc_node::runtime::Harness;
    use ftc_node::serve::{serve, Ended, Msg, WITH_A_FAILED_SERVER};
    use ftc_node::traffic::request;
    use ftc_node::{Heads, Packet};

    let heads = Heads::new(&spec("ch-2.toml"), |m| m.threads).unwrap();
    let ((server, rx), routes) = ch2_server_0(&heads);
    let harness = Harness::new();
    let shared = harness.shared(None);
    let packet = |i: u64| {
        Msg::Ingress(Packet {
            handle: i,
            flow: i % 4,
            dir: Direction::Outbound,
            bytes: request((i % 4) as u32, 1, 128),
        })
    };
    // All in the inbox before the thread looks: one batch of 10 packets, the kill, 5 more.
    let inbox = routes.get(0);
    for i in 0..10 {
        inbox.send(packet(i)).unwrap();
    }
    inbox.send(Msg::Kill).unwrap();
    for i in 10..15 {
        inbox.send(packet(i)).unwrap();
    }
    let (ended, sink) = std::thread::scope(|s| {
        let thread = s.spawn(|| serve(server, &rx, routes.all(), 0, &shared));
        // The end of the run, after the batch (a stop in the batch itself went missing too).
        std::thread::sleep(Duration::from_millis(50));
        inbox.send(Msg::Stop).unwrap();
        thread.join().expect("the server thread ends")
    });
    assert!(matches!(ended, Ended::Killed));
    assert_eq!(
        sink.lost,
        [(WITH_A_FAILED_SERVER, 15)].into(),
        "every packet the killed server took in is lost with it"
    );
}

/// A server killed while congested (fenced: a recovery began) no longer counts as congested
/// once killed, while its address still swallows what reaches it, and after its thread ends:
/// the generator offers no customer packet while any server is, so a count it left behind would
/// hold the chain's traffic back until the run ends.
#[test]
fn a_server_killed_while_congested_leaves_no_congestion_behind() {
    use std::sync::atomic::Ordering;
    use std::time::Instant;

    use ftc_node::runtime::Harness;
    use ftc_node::serve::{serve, Ended, Msg};
    use ftc_node::Heads;

    let heads = Heads::new(&spec("ch-2.toml"), |m| m.threads).unwrap();
    let ((server, rx), routes) = ch2_server_0(&heads);
    let harness = Harness::new();
    let shared = harness.shared(None);
    let inbox = routes.get(0);
    let congested = || shared.congested.load(Ordering::Acquire);
    // Until `congested` reads `n`, 5 s at most; what it reads then.
    let wait_for = |n: usize| {
        let deadline = Instant::now() + Duration::from_secs(5);
        while congested() != n && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        congested()
    };
    let (fenced, killed, ended) = std::thread::scope(|s| {
        let thread = s.spawn(|| serve(server, &rx, routes.all(), 0, &shared));
        inbox.send(Msg::Fence { epoch: 1 }).unwrap();
        let fenced = wait_for(1);
        inbox.send(Msg::Kill).unwrap();
        let killed = wait_for(0);
        // The end of the run (the dead server's address swallows messages until then).
        inbox.send(Msg::Stop).unwrap();
        let ended = thread.join().expect("the server thread ends").0;
        (fenced, killed, ended)
    });
    assert_eq!(fenced, 1, "a fenced server says it is congested");
    assert!(matches!(ended, Ended::Killed));
    assert_eq!(killed, 0, "the killed server's congestion went with it");
    assert_eq!(congested(), 0, "and stays gone once its thread ended");
}

/// A middlebox of as many threads as a server runs lanes (64, the most a spec may ask for) runs
/// and releases packets: its server's lanes wake each other, every one of them.
#[test]
fn a_server_of_the_most_lanes_runs() {
    let mut spec = spec("ch-2.toml");
    spec.middlebox[1].threads = ftc_chain::spec::MAX_THREADS;
    spec.validate().unwrap();
    let config = RunConfig {
        duration: Duration::from_millis(200),
        ..RunConfig::default()
    };
    let r = run_chain(&spec, &config);
    assert_all_released(&r, "ch-2 with 64 threads at m1");
    let lanes = r.busy.iter().filter(|b| b.thread.starts_with("server 1 "));
    assert_eq!(lanes.count(), 64);
}

/// More lanes than a server may run are refused when the server is made (a spec's `threads`
/// never asks for them), instead of lanes beyond the 64th never being woken.
#[test]
#[should_panic(expected = "65 lanes: a server runs 64 at most")]
fn more_lanes_than_a_server_runs_are_refused() {
    let heads = ftc_node::Heads::new(&spec("ch-2.toml"), |_| 65).unwrap();
    ch2_server_0(&heads);
}

/// More packets in flight than a server keeps waiting (a hold limit of 64, a window of 100,000):
/// the servers' bounds lose the rest rather than grow, and the report counts each loss with
/// why, so that every packet is still accounted for.
#[test]
fn packets_beyond_a_server_s_bounds_are_lost_and_counted_with_why() {
    let config = RunConfig {
        duration: Duration::from_millis(500),
        window: 100_000,
        server: ftc_node::ServerConfig {
            hold_limit: 64,
            ..RunConfig::default().server
        },
        ..RunConfig::default()
    };
    let r = run_chain(&spec("ch-2.toml"), &config);
    assert!(r.violations.is_empty(), "{:?}", r.violations);
    assert!(
        r.packets_lost > 0,
        "nothing lost: the test would prove nothing"
    );
    assert_eq!(r.packets_lost_why.values().sum::<u64>(), r.packets_lost);
    let bounds = ["buffer's refused packets full", "hold queue full"];
    assert!(
        r.packets_lost_why
            .keys()
            .all(|why| bounds.contains(&why.as_str())),
        "{:?}",
        r.packets_lost_why
    );
}
