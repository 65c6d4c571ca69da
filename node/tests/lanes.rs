//! Servers of several lanes driven by hand on a virtual clock, the way the runtime drives their
//! threads, while one lane does not run for a while (as a thread the operating system does not
//! schedule): the logs that lane has not read are not lost, and nothing may ask for them again.

use std::collections::VecDeque;

use ftc_chain::middlebox::Direction;
use ftc_chain::ring::{MbIndex, ServerId};
use ftc_chain::spec::ChainSpec;
use ftc_node::lanes::{lane_of, lanes, lanes_for};
use ftc_node::server::port_of;
use ftc_node::traffic::request;
use ftc_node::{Frame, Heads, Output, Packet, Server, ServerConfig};

const US: u64 = 1_000;
const MS: u64 = 1_000_000;

/// One middlebox whose counter both worker threads share, so that consecutive logs of a
/// partition leave the head in frames of both lanes; f = 2: three servers of two lanes.
fn shared_counter() -> ChainSpec {
    let text = "[chain]\nname = \"lanes\"\nf = 2\npartitions = 2\n\n[[middlebox]]\n\
                kind = \"monitor\"\nsharing_level = 2\nthreads = 2\n";
    ChainSpec::from_toml_str(text, "lanes test").unwrap()
}

/// What reached a lane and it has not read yet, with the server each frame came from.
type Inbox = VecDeque<(ServerId, Frame<u64>)>;

/// What a run counted over every lane.
#[derive(Debug, Default, PartialEq, Eq)]
struct Counts {
    sent: u64,
    released: u64,
    requests: u64,
    /// Logs sent again: answers to requests, and resends.
    resent: u64,
    duplicates: u64,
    held: u64,
}

/// Offers a packet every 10 µs for 20 ms, then lets the chain drain for 30 ms, each lane
/// handling what reached it every 10 µs, except lane 0 of server 1 from 5 to 8 ms (longer than
/// the hold timeout of 2 ms). `lose`: the frame from server 1 to server 2 of that index is lost.
fn run(lose: Option<usize>) -> Counts {
    let spec = shared_counter();
    let ring = spec.ring();
    let heads = Heads::new(&spec, |m| m.threads).unwrap();
    let config = ServerConfig::default();
    let mut servers: Vec<Vec<Server<'_, u64>>> = ring
        .server_ids()
        .map(|s| {
            let head = heads.head_lanes(&ring, s, 0);
            lanes(ring, s, spec.chain.partitions, head, &config).unwrap()
        })
        .collect();
    let mut inboxes: Vec<Vec<Inbox>> = servers
        .iter()
        .map(|lanes| lanes.iter().map(|_| VecDeque::new()).collect())
        .collect();
    let stalled =
        |s: usize, lane: usize, now: u64| (s, lane) == (1, 0) && (5 * MS..8 * MS).contains(&now);
    let mut counts = Counts::default();
    let mut to_server_2 = 0;
    for tick in 0..5_000u64 {
        let now = tick * 10 * US;
        if now < 20 * MS {
            let flow = tick % 64;
            let packet = Packet {
                handle: tick,
                flow,
                dir: Direction::Outbound,
                bytes: request(flow as u32, 1, 128),
            };
            let lane = lane_of(flow, servers[0].len());
            servers[0][lane]
                .handle_ingress(now, packet, port_of(Direction::Outbound))
                .unwrap();
            counts.sent += 1;
        }
        for s in 0..servers.len() {
            for lane in 0..servers[s].len() {
                if stalled(s, lane, now) {
                    continue;
                }
                let server = &mut servers[s][lane];
                for _ in 0..64 {
                    let Some((from, frame)) = inboxes[s][lane].pop_front() else {
                        break;
                    };
                    server.handle_frame(now, from, frame);
                }
                if server.poll_timeout().is_some_and(|t| t <= now) {
                    server.handle_timeout(now);
                }
                if inboxes[s][lane].is_empty() {
                    server.caught_up(now);
                }
                server.end_batch(now);
                // Every lane runs every tick here: no lane needs waking.
                server.take_wakeups();
                while let Some(out) = server.poll_output() {
                    match out {
                        Output::Send { to, frame } => {
                            if to.0 == 2 && s == 1 {
                                to_server_2 += 1;
                                if lose == Some(to_server_2) {
                                    continue;
                                }
                            }
                            let lanes = inboxes[usize::from(to.0)].len();
                            for i in lanes_for(&frame, lane, lanes) {
                                let from = ServerId(s as u16);
                                inboxes[usize::from(to.0)][i].push_back((from, frame.clone()));
                            }
                        }
                        Output::Release { .. } => counts.released += 1,
                        out => panic!("no packet is dropped or lost here: {out:?}"),
                    }
                }
            }
        }
    }
    for server in servers.iter().flatten() {
        assert_eq!(server.error(), None);
        counts.held += server.stats().held;
        let r = server.replica().unwrap().stats();
        counts.requests += r.requests_sent;
        counts.resent += r.logs_retransmitted + r.logs_resent;
        counts.duplicates += r.duplicates;
    }
    let head = heads.stores[0].vector();
    for s in [1, 2] {
        let store = servers[s][0].replica().unwrap().store(MbIndex(0)).unwrap();
        assert_eq!(store.vector(), head, "server {s} has every log of its head");
    }
    counts
}

/// The lanes of server 1 share its replica store, and each holds frames whose earlier logs the
/// other has not read yet. Lane 0 stalls for 3 ms with such logs in its queue: lane 1 must not
/// ask server 0 for them (they would come twice, and every server after would see them twice).
#[test]
fn a_stalled_lane_makes_no_retransmission_requests() {
    let c = run(None);
    assert!(
        c.held > 100,
        "lanes hold frames for each other's logs: {c:?}"
    );
    assert_eq!(c.released, c.sent, "{c:?}");
    assert_eq!((c.requests, c.resent, c.duplicates), (0, 0, 0), "{c:?}");
}

/// A frame really lost beside the stall (its packet with it): its log is asked for, and only it
/// comes again (once from each lane of server 1 that was asked while the one that retains it
/// did not run).
#[test]
fn a_lost_log_beside_a_stalled_lane_is_asked_for() {
    let c = run(Some(300));
    assert_eq!(c.released, c.sent - 1, "{c:?}");
    assert!(c.requests >= 1, "{c:?}");
    assert!(
        c.resent <= c.requests,
        "only what was lost comes again: {c:?}"
    );
}
