//! Whole scenarios on a virtual clock: servers send heartbeats every 10 ms until killed, the
//! coordinator declares them failed after 3 missed (more than 30 ms of silence) and waits
//! 300 ms for suspects beyond what it can recover.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use ftc_chain::ring::MbIndex;
use proptest::prelude::*;

use super::*;

const MS: u64 = 1_000_000;
const PERIOD: u64 = 10 * MS;
/// The run of every coordinator here.
const RUN: u64 = 0x0dd5_eed5;

/// The server at `position`; `incarnation` tells replacements from the servers they replace.
fn peer(position: u16, incarnation: u8) -> Peer {
    let ip = IpAddr::V4(Ipv4Addr::new(10, incarnation, 0, position as u8 + 1));
    Peer {
        position,
        data: SocketAddr::new(ip, 5000),
        transfer: SocketAddr::new(ip, 6000),
    }
}

fn send(to: u16, msg: Message) -> Command {
    Command::Send {
        to: ServerId(to),
        msg,
    }
}

fn launch(position: u16, epoch: u32) -> Command {
    Command::Launch {
        position: ServerId(position),
        epoch,
    }
}

fn fence(to: &[u16], epoch: u32, failed: &[u16]) -> Vec<Command> {
    let msg = Message::Fence {
        epoch,
        failed: failed.to_vec(),
    };
    to.iter().map(|&p| send(p, msg.clone())).collect()
}

/// Fetch `group` (heading it or not) from `source`, an original server.
fn fetch(group: u8, as_head: bool, source: u16) -> Fetch {
    Fetch {
        group,
        as_head,
        source,
        addr: peer(source, 0).transfer,
    }
}

fn recover(to: u16, epoch: u32, fetch: &[Fetch]) -> Command {
    send(
        to,
        Message::Recover {
            run: RUN,
            epoch,
            fetch: fetch.to_vec(),
        },
    )
}

/// A chain's servers as the coordinator sees them, on a virtual clock.
struct Chain {
    c: Coordinator,
    now: u64,
    servers: u16,
    /// The servers sending heartbeats.
    beating: BTreeSet<u16>,
    seq: u64,
}

impl Chain {
    /// Every server joins at time 0 and gets its `Assign`.
    fn deploy(k: usize, f: usize) -> Chain {
        Chain::deploy_with(k, f, CoordinatorConfig::default())
    }

    fn deploy_with(k: usize, f: usize, config: CoordinatorConfig) -> Chain {
        let ring = Ring::new(k, f).unwrap();
        let servers = ring.servers() as u16;
        let mut chain = Chain {
            c: Coordinator::new(ring, config, RUN),
            now: 0,
            servers,
            beating: (0..servers).collect(),
            seq: 0,
        };
        for p in 0..servers {
            chain.join(p, 0);
        }
        let peers: Vec<Peer> = (0..servers).map(|p| peer(p, 0)).collect();
        let assigned: Vec<Command> = (0..servers)
            .map(|position| {
                send(
                    position,
                    Message::Assign {
                        run: RUN,
                        epoch: 1,
                        position,
                        peers: peers.clone(),
                    },
                )
            })
            .collect();
        assert_eq!(chain.commands(), assigned);
        assert_eq!(chain.c.epoch(), 1);
        chain
    }

    fn handle(&mut self, msg: Message) {
        self.c.handle(self.now, msg);
    }

    fn join(&mut self, position: u16, incarnation: u8) {
        self.handle(join_of(peer(position, incarnation), None));
        self.beating.insert(position);
    }

    fn kill(&mut self, position: u16) {
        self.beating.remove(&position);
    }

    /// A server that was only late sends its heartbeats again.
    fn revive(&mut self, position: u16) {
        self.beating.insert(position);
    }

    /// Nothing runs until `ms`, the coordinator's loop included; then it handles its timeout
    /// first and the heartbeats of `ms` after (their threads were starved as long).
    fn starve_to(&mut self, ms: u64) {
        self.now = ms * MS;
        self.c.handle_timeout(self.now);
        self.seq += 1;
        for position in self.beating.clone() {
            self.handle(Message::Heartbeat {
                run: RUN,
                position,
                epoch: self.c.epoch(),
                seq: self.seq,
            });
        }
    }

    /// Advances the clock 1 ms at a time to `ms`, with heartbeats every period.
    fn run_to(&mut self, ms: u64) {
        while self.now < ms * MS {
            self.now += MS;
            if self.now % PERIOD == 0 {
                self.seq += 1;
                for position in self.beating.clone() {
                    self.handle(Message::Heartbeat {
                        run: RUN,
                        position,
                        epoch: self.c.epoch(),
                        seq: self.seq,
                    });
                }
            }
            if self.c.poll_timeout().is_some_and(|t| t <= self.now) {
                self.c.handle_timeout(self.now);
            }
        }
    }

    fn commands(&mut self) -> Vec<Command> {
        std::iter::from_fn(|| self.c.poll_command()).collect()
    }

    fn ready(&mut self, position: u16, bytes: u64) {
        let epoch = self.c.epoch();
        self.handle(Message::Ready {
            run: RUN,
            position,
            epoch,
            bytes,
        });
    }

    fn resumed(&mut self, positions: &[u16]) {
        for &position in positions {
            let epoch = self.c.epoch();
            self.handle(Message::Resumed {
                run: RUN,
                position,
                epoch,
            });
        }
    }

    /// The `Reroute` every server gets, with the replacements (incarnation 1) at `replaced`.
    fn reroute(&self, replaced: &[u16]) -> Vec<Command> {
        let peers: Vec<Peer> = (0..self.servers)
            .map(|p| peer(p, u8::from(replaced.contains(&p))))
            .collect();
        let msg = Message::Reroute {
            epoch: self.c.epoch(),
            peers,
        };
        (0..self.servers).map(|p| send(p, msg.clone())).collect()
    }
}

#[test]
fn deployment_waits_for_every_position() {
    let mut c = Coordinator::new(Ring::new(2, 1).unwrap(), CoordinatorConfig::default(), RUN);
    let p0 = peer(0, 0);
    let join = |p: Peer| join_of(p, None);
    c.handle(0, join(peer(0, 9)));
    c.handle(1, join(p0)); // a restarted server 0 replaces the first
    assert_eq!(c.poll_command(), None);
    assert_eq!(c.epoch(), 0);
    assert_eq!(
        c.poll_timeout(),
        None,
        "nobody is watched before deployment"
    );
    assert_eq!(c.peers(), [Some(p0), None]);
    c.handle(2, join(peer(7, 0)));
    assert_eq!(c.unexpected_messages(), 1, "position 7 is not on the ring");
    c.handle(5, join(peer(1, 0)));
    assert_eq!(c.epoch(), 1);
    assert_eq!(c.peers(), [Some(p0), Some(peer(1, 0))]);
    let assigned: Vec<_> = std::iter::from_fn(|| c.poll_command()).collect();
    assert_eq!(assigned.len(), 2);
    assert_eq!(c.poll_timeout(), Some(5 + 10 * MS), "polled every period");
    c.handle(6, join(peer(1, 0)));
    assert_eq!(c.unexpected_messages(), 2, "no joins once deployed");
}

#[test]
fn ch_rec_loses_its_middle_server() {
    let mut chain = Chain::deploy(3, 1);
    chain.run_to(55);
    chain.kill(1); // last heartbeat at 50 ms
    chain.run_to(80);
    assert_eq!(chain.commands(), [], "30 ms of silence is allowed");
    chain.run_to(81);
    let mut want = fence(&[0, 2], 2, &[1]);
    want.push(launch(1, 2));
    assert_eq!(chain.commands(), want);
    assert_eq!(chain.c.epoch(), 2);
    assert_eq!(chain.c.peers()[1], None);

    // The old server 1 is fenced off: its heartbeats and reports are stale.
    chain.handle(Message::Heartbeat {
        run: RUN,
        position: 1,
        epoch: 1,
        seq: 6,
    });
    chain.handle(Message::Ready {
        run: RUN,
        position: 1,
        epoch: 1,
        bytes: 1,
    });
    assert_eq!(chain.c.stale_messages(), 2);

    chain.run_to(86);
    chain.join(1, 1);
    // G(1) = {1, 2}: heads from its successor; G(0) = {0, 1}: from its predecessor.
    assert_eq!(
        chain.commands(),
        [recover(1, 2, &[fetch(1, true, 2), fetch(0, false, 0)])]
    );
    assert_eq!(chain.c.peers()[1], Some(peer(1, 1)));

    chain.run_to(100);
    chain.ready(1, 4096);
    assert_eq!(chain.commands(), chain.reroute(&[1]));
    chain.run_to(103);
    chain.resumed(&[0, 2]);
    assert_eq!(chain.c.poll_report(), None, "server 1 has not resumed");
    chain.run_to(104);
    chain.resumed(&[1]);
    let report = chain.c.poll_report().unwrap();
    assert_eq!(
        report,
        RecoveryReport {
            epoch: 2,
            failed: vec![1],
            detection_ns: 31 * MS,
            start_ns: 5 * MS,
            transfer_ns: 14 * MS,
            reroute_ns: 4 * MS,
            total_ns: 23 * MS,
            bytes: 4096,
        }
    );
    assert_eq!(
        report.to_string(),
        "epoch 2, recovered [1]: detection 31.000 ms, start 5.000 ms, transfer 14.000 ms, \
         reroute 4.000 ms, total after detection 23.000 ms, 4096 bytes"
    );
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["total_ns"], 23 * MS);
    assert_eq!(chain.c.poll_report(), None);

    // The replacement is watched like any server.
    chain.run_to(200);
    assert_eq!(chain.commands(), []);
    chain.kill(1);
    chain.run_to(300);
    let mut want = fence(&[0, 2], 3, &[1]);
    want.push(launch(1, 3));
    assert_eq!(chain.commands(), want);
    assert_eq!(chain.c.stale_messages(), 2);
    assert_eq!(chain.c.unexpected_messages(), 0);
}

#[test]
fn two_simultaneous_failures_recover_in_one_epoch() {
    // k = 3, f = 2: every group is {0, 1, 2} in some order; 1 survives.
    let mut chain = Chain::deploy(3, 2);
    chain.run_to(55);
    chain.kill(0);
    chain.kill(2);
    chain.run_to(81);
    // Both declared at 81 ms, 0 first; 2 was still thought alive when 0 was fenced off.
    let mut want = fence(&[1, 2], 2, &[0]);
    want.push(launch(0, 2));
    want.extend(fence(&[1], 2, &[0, 2]));
    want.push(launch(2, 2));
    assert_eq!(chain.commands(), want);

    chain.run_to(90);
    chain.join(2, 1);
    chain.run_to(95);
    chain.join(0, 1);
    let from_1 = |groups: [u8; 3]| groups.map(|g| fetch(g, g == groups[0], 1));
    assert_eq!(
        chain.commands(),
        [
            recover(2, 2, &from_1([2, 1, 0])),
            recover(0, 2, &from_1([0, 2, 1])),
        ]
    );
    chain.run_to(120);
    chain.ready(0, 100);
    assert_eq!(chain.commands(), [], "2 is not ready yet");
    chain.run_to(130);
    chain.ready(2, 200);
    assert_eq!(chain.commands(), chain.reroute(&[0, 2]));
    chain.run_to(131);
    chain.resumed(&[0, 1, 2]);
    let report = chain.c.poll_report().unwrap();
    assert_eq!(report.epoch, 2);
    assert_eq!(report.failed, [0, 2]);
    assert_eq!(
        report.start_ns,
        14 * MS,
        "launched at 81, the later joined at 95"
    );
    assert_eq!(report.transfer_ns, 40 * MS, "2 joined at 90, ready at 130");
    assert_eq!(report.total_ns, 50 * MS);
    assert_eq!(report.bytes, 300);
}

#[test]
fn a_source_that_dies_mid_transfer_is_replaced_by_the_next_member() {
    // k = 3, f = 2: G(0) = {0, 1, 2}, G(1) = {1, 2, 0}, G(2) = {2, 0, 1}.
    let mut chain = Chain::deploy(3, 2);
    chain.run_to(55);
    chain.kill(1);
    chain.run_to(81);
    chain.commands();
    chain.run_to(86);
    chain.join(1, 1);
    assert_eq!(
        chain.commands(),
        [recover(
            1,
            2,
            &[fetch(1, true, 2), fetch(0, false, 0), fetch(2, false, 0)]
        )]
    );
    // Server 2, the source of G(1), dies: it joins the recovery, and replacement 1, which may
    // already hold what it fetched from 2, starts again: a new one fetches G(1) from 0.
    chain.run_to(95);
    chain.kill(2); // last heartbeat at 90 ms
    chain.run_to(121);
    let mut want = fence(&[0, 1], 2, &[1, 2]);
    want.push(launch(2, 2));
    want.push(launch(1, 2));
    assert_eq!(chain.commands(), want);
    assert_eq!(chain.c.epoch(), 2, "one recovery, one epoch");
    // What the first replacement at 1 says now is of no account.
    chain.handle(Message::Ready {
        run: RUN,
        position: 1,
        epoch: 2,
        bytes: 1,
    });
    assert_eq!(chain.commands(), []);
    chain.join(1, 2);
    assert_eq!(
        chain.commands(),
        [recover(
            1,
            2,
            &[fetch(1, true, 0), fetch(0, false, 0), fetch(2, false, 0)]
        )]
    );

    // Replacement 1 then finds that 0 cannot serve G(2) either. 2 is failed, and 0 alive as far
    // as anyone knows (only the detector declares failures): G(2) is fetched from 0 again after
    // a back-off that doubles from a heartbeat period, and the coordinator halts only once
    // MAX_FETCH_ATTEMPTS fetches failed.
    let failed_g2 = Message::TransferFailed {
        run: RUN,
        position: 1,
        epoch: 2,
        group: 2,
        source: 0,
    };
    for attempt in 1..MAX_FETCH_ATTEMPTS {
        chain.handle(failed_g2.clone());
        chain.handle(failed_g2.clone());
        assert_eq!(
            chain.c.stale_messages(),
            u64::from(attempt),
            "a report sent twice"
        );
        let due = chain.now / MS + (10 << (attempt - 1).min(7));
        chain.run_to(due - 1);
        assert_eq!(chain.commands(), [], "attempt {attempt}: backing off");
        chain.run_to(due);
        assert_eq!(
            chain.commands(),
            [recover(1, 2, &[fetch(2, false, 0)])],
            "attempt {attempt}"
        );
    }
    assert!(chain.c.halted().is_none());
    chain.handle(failed_g2);
    let halted = chain.c.halted().unwrap();
    assert_eq!(
        *halted,
        Unrecoverable {
            epoch: 2,
            failed: vec![1, 2],
            cause: PlanError::Unserved {
                group: MbIndex(2),
                to: ServerId(1),
                attempts: MAX_FETCH_ATTEMPTS
            },
        }
    );
    assert_eq!(
        halted.to_string(),
        "cannot recover epoch 2 after the failure of [1, 2]"
    );
    assert_eq!(chain.commands(), []);
    assert_eq!(chain.c.poll_timeout(), None);
    chain.join(2, 1);
    chain.run_to(chain.now / MS + 500);
    assert_eq!(chain.commands(), [], "a halted coordinator does nothing");
}

/// A replacement that fetched its state and reported ready is launched again when one of its
/// sources fails before the recovery ends: it may hold more of a group than the members planned
/// without that source, the group's new head among them.
#[test]
fn a_ready_replacement_whose_source_fails_is_launched_again() {
    // k = 4, f = 3: every group is all four servers.
    let mut chain = Chain::deploy(4, 3);
    chain.run_to(55);
    chain.kill(1);
    chain.kill(2);
    chain.run_to(81);
    chain.commands();
    chain.join(1, 1);
    // G(1) as head from 3, the others from their nearest live predecessor, 0.
    assert_eq!(
        chain.commands(),
        [recover(
            1,
            2,
            &[
                fetch(1, true, 3),
                fetch(0, false, 0),
                fetch(3, false, 0),
                fetch(2, false, 0)
            ]
        )]
    );
    chain.ready(1, 10);
    assert_eq!(
        chain.commands(),
        [],
        "no reroute before replacement 2 is ready"
    );
    chain.run_to(95);
    chain.kill(0);
    chain.run_to(121);
    let mut want = fence(&[1, 3], 2, &[0, 1, 2]);
    want.push(launch(0, 2));
    want.push(launch(1, 2));
    assert_eq!(chain.commands(), want);
    // The new replacement at 1 fetches from 3 alone; replacement 1's first self is ignored.
    chain.ready(1, 10);
    chain.join(1, 2);
    assert_eq!(
        chain.commands(),
        [recover(
            1,
            2,
            &[
                fetch(1, true, 3),
                fetch(0, false, 3),
                fetch(3, false, 3),
                fetch(2, false, 3)
            ]
        )]
    );
}

#[test]
fn a_transfer_that_fails_moves_to_the_next_member() {
    let mut chain = Chain::deploy(3, 2);
    chain.run_to(55);
    chain.kill(1);
    chain.run_to(81);
    chain.commands();
    chain.join(1, 1);
    chain.commands();
    let failed = |source| Message::TransferFailed {
        run: RUN,
        position: 1,
        epoch: 2,
        group: 0,
        source,
    };
    // G(0) = {0, 1, 2}: replica 1 fetched from its predecessor 0; next is its successor 2.
    chain.handle(failed(0));
    assert_eq!(chain.commands(), [recover(1, 2, &[fetch(0, false, 2)])]);
    // A late report about the old source is stale; one about a group it does not fetch, or
    // from a server that is not a replacement, is unexpected.
    chain.handle(failed(0));
    assert_eq!(chain.c.stale_messages(), 1);
    chain.handle(Message::TransferFailed {
        run: RUN,
        position: 1,
        epoch: 2,
        group: 9,
        source: 0,
    });
    chain.handle(Message::TransferFailed {
        run: RUN,
        position: 0,
        epoch: 2,
        group: 0,
        source: 2,
    });
    assert_eq!(chain.c.unexpected_messages(), 2);
    assert_eq!(chain.commands(), []);
    // Once 2 could not serve G(0) either, neither is dead as far as anyone knows: G(0) goes to
    // the nearest, 0, again, after a back-off of two heartbeat periods (the group's second
    // failed fetch). Only server 1 counts as failed.
    chain.handle(failed(2));
    assert_eq!(chain.commands(), []);
    assert!(chain.c.halted().is_none());
    let due = chain.now / MS + 20;
    chain.run_to(due - 1);
    assert_eq!(chain.commands(), []);
    chain.run_to(due);
    assert_eq!(chain.commands(), [recover(1, 2, &[fetch(0, false, 0)])]);
    chain.ready(1, 10);
    assert_eq!(chain.commands(), chain.reroute(&[1]));
}

#[test]
fn more_than_f_failures_halt_once_the_grace_runs_out() {
    // k = 3, f = 1: 0 and 1 are all of G(0). Both are suspects, nobody is touched.
    let mut chain = Chain::deploy(3, 1);
    chain.run_to(55);
    chain.kill(0);
    chain.kill(1);
    chain.run_to(81);
    assert_eq!(chain.commands(), [], "no fence, no launch");
    assert_eq!(
        chain.c.suspects().collect::<Vec<_>>(),
        [ServerId(0), ServerId(1)]
    );
    chain.run_to(380);
    assert_eq!(chain.c.halted(), None, "300 ms of grace from 81 ms");
    chain.run_to(381);
    assert_eq!(
        chain.c.halted().map(|h| (h.failed.clone(), h.cause)),
        Some((vec![0, 1], PlanError::NoAliveMember { group: MbIndex(0) }))
    );
    assert_eq!(chain.commands(), []);

    // k = 5, f = 1: 0 and 3 leave every group a member, but the chain tolerates one failure.
    let mut chain = Chain::deploy(5, 1);
    chain.run_to(55);
    chain.kill(0);
    chain.run_to(65);
    chain.kill(3);
    chain.run_to(81);
    let mut want = fence(&[1, 2, 3, 4], 2, &[0]);
    want.push(launch(0, 2));
    assert_eq!(chain.commands(), want, "3 is not declared yet");
    chain.join(0, 1);
    chain.commands();
    chain.run_to(100);
    assert_eq!(chain.commands(), [], "3 is a suspect");
    assert_eq!(chain.c.suspects().collect::<Vec<_>>(), [ServerId(3)]);
    chain.run_to(391);
    assert_eq!(
        chain.c.halted().map(|h| (h.failed.clone(), h.cause)),
        Some((vec![0, 3], PlanError::TooManyFailures { failed: 2, f: 1 }))
    );
}

#[test]
fn a_deployment_without_recovery_halts_at_its_first_failure_once_the_grace_runs_out() {
    let config = CoordinatorConfig {
        recover: false,
        ..CoordinatorConfig::default()
    };
    let mut chain = Chain::deploy_with(4, 1, config);
    chain.run_to(55);
    chain.kill(2);
    chain.run_to(81);
    assert_eq!(chain.commands(), [], "no fence, no launch");
    assert_eq!(chain.c.suspects().collect::<Vec<_>>(), [ServerId(2)]);
    chain.run_to(380);
    assert_eq!(chain.c.halted(), None, "300 ms of grace from 81 ms");
    chain.run_to(381);
    assert_eq!(
        chain.c.halted().map(|h| (h.failed.clone(), h.cause)),
        Some((vec![2], PlanError::NotRecovered))
    );
    assert_eq!(chain.commands(), []);
}

#[test]
fn a_late_suspect_is_cleared_and_the_dead_one_recovered() {
    // k = 3, f = 1: 1 dies, 2 is kept from its heartbeats as long; both declared at 81 ms.
    let mut chain = Chain::deploy(3, 1);
    chain.run_to(55);
    chain.kill(1);
    chain.kill(2);
    chain.run_to(81);
    assert_eq!(chain.commands(), []);
    chain.run_to(85);
    chain.revive(2);
    chain.run_to(90);
    // 2's heartbeat at 90 ms clears it: 1 alone is recovered at once.
    let mut want = fence(&[0, 2], 2, &[1]);
    want.push(launch(1, 2));
    assert_eq!(chain.commands(), want);
    assert_eq!(chain.c.suspects().count(), 0);
    assert_eq!(chain.c.detector.last_heartbeat(ServerId(2)), Some(90 * MS));
    chain.join(1, 1);
    chain.ready(1, 10);
    assert_eq!(chain.commands()[1..], chain.reroute(&[1]));
    chain.resumed(&[0, 1, 2]);
    let report = chain.c.poll_report().unwrap();
    assert_eq!(report.failed, [1]);
    assert_eq!(report.detection_ns, 31 * MS, "until the declaration");
    assert_eq!(
        report.total_ns,
        9 * MS,
        "from the declaration, the wait included"
    );
    chain.run_to(500);
    assert_eq!(chain.commands(), []);
    assert_eq!(chain.c.halted(), None);
}

#[test]
fn a_suspect_beyond_f_during_a_recovery_is_never_touched() {
    // k = 3, f = 1: 1 dies and is being recovered when 2 goes quiet (last heartbeat 60 ms).
    let mut chain = Chain::deploy(3, 1);
    chain.run_to(55);
    chain.kill(1);
    chain.run_to(65);
    chain.kill(2);
    chain.run_to(81);
    chain.commands();
    chain.join(1, 1);
    assert_eq!(chain.commands().len(), 1, "the plan sends 1 to 2 for G(1)");
    chain.run_to(91);
    assert_eq!(chain.commands(), [], "2 is a suspect, not fenced");
    assert_eq!(chain.c.suspects().collect::<Vec<_>>(), [ServerId(2)]);
    chain.revive(2);
    chain.run_to(100);
    assert_eq!(chain.c.suspects().count(), 0);
    // The recovery of 1 goes on with 2 as a live server: it is rerouted and resumes.
    chain.ready(1, 10);
    assert_eq!(chain.commands(), chain.reroute(&[1]));
    chain.resumed(&[0, 1]);
    assert_eq!(chain.c.poll_report(), None, "2 is awaited");
    chain.resumed(&[2]);
    assert_eq!(chain.c.poll_report().unwrap().failed, [1]);
    chain.run_to(500);
    assert_eq!(chain.commands(), []);
}

#[test]
fn a_starved_coordinator_declares_nobody_for_its_own_absence() {
    let mut chain = Chain::deploy(3, 1);
    chain.run_to(55);
    chain.kill(1); // last heartbeat at 50 ms
                   // Nothing runs from 55 ms to 100 ms: 0 and 2 have been silent 50 ms too, but the
                   // coordinator saw only 10 ms of it (it asked to be polled at 60 ms).
    chain.starve_to(100);
    assert_eq!(chain.commands(), []);
    assert_eq!(chain.c.suspects().count(), 0);
    chain.run_to(120);
    assert_eq!(
        chain.commands(),
        [],
        "1 has been silent 30 ms of the coordinator's time"
    );
    chain.run_to(121);
    let mut want = fence(&[0, 2], 2, &[1]);
    want.push(launch(1, 2));
    assert_eq!(chain.commands(), want);
}

/// A chain of `k` servers whose server 1 was killed at 55 ms (declared failed at 81 ms) and
/// whose replacement joined and is ready: the reroute's commands are out, no server resumed.
fn rerouting_after_1(k: usize, f: usize) -> Chain {
    let mut chain = Chain::deploy(k, f);
    chain.run_to(55);
    chain.kill(1);
    chain.run_to(81);
    chain.join(1, 1);
    chain.ready(1, 10);
    chain.commands();
    chain
}

#[test]
fn a_failure_during_the_reroute_is_recovered_right_after() {
    let mut chain = rerouting_after_1(3, 1);
    chain.resumed(&[0, 1]);
    chain.kill(2); // last heartbeat at 80 ms; server 2 never resumes
    chain.run_to(111);
    let report = chain.c.poll_report().expect("the first recovery finished");
    assert_eq!((report.epoch, report.failed), (2, vec![1]));
    assert_eq!(
        report.reroute_ns,
        30 * MS,
        "waited for 2 until it was declared"
    );
    let mut want = fence(&[0, 1], 3, &[2]);
    want.push(launch(2, 3));
    assert_eq!(chain.commands(), want);
    assert_eq!(chain.c.epoch(), 3);

    chain.join(2, 1);
    // G(2) = {2, 0}: head from 0; G(1) = {1, 2}: from the new server 1.
    assert_eq!(
        chain.commands(),
        [recover(
            2,
            3,
            &[
                fetch(2, true, 0),
                Fetch {
                    group: 1,
                    as_head: false,
                    source: 1,
                    addr: peer(1, 1).transfer
                }
            ]
        )]
    );
    chain.ready(2, 20);
    chain.commands();
    chain.resumed(&[0, 1, 2]);
    let report = chain.c.poll_report().unwrap();
    assert_eq!(
        (report.epoch, report.failed, report.bytes),
        (3, vec![2], 20)
    );
    assert_eq!(report.detection_ns, 31 * MS);
}

#[test]
fn failures_recovered_together_count_from_the_first_declared() {
    // k = 5, f = 2. Server 4 and then server 2 fall silent during the reroute of a first
    // recovery; both are recovered together after it, and that recovery counts from 4's
    // declaration, not from that of the lower position.
    let mut chain = rerouting_after_1(5, 2);
    chain.resumed(&[0, 1, 3]);
    chain.kill(4); // last heartbeat at 80 ms: declared at 111
    chain.run_to(91);
    chain.kill(2); // last heartbeat at 90 ms: declared at 121, which ends the reroute
    chain.run_to(121);
    assert_eq!(chain.c.poll_report().map(|r| r.failed), Some(vec![1]));
    assert_eq!(chain.c.epoch(), 3);
    chain.join(2, 1);
    chain.join(4, 1);
    chain.ready(2, 10);
    chain.ready(4, 10);
    chain.run_to(130);
    chain.resumed(&[0, 1, 2, 3, 4]);
    let report = chain.c.poll_report().expect("the second recovery finished");
    assert_eq!((report.epoch, report.failed), (3, vec![2, 4]));
    assert_eq!(report.detection_ns, 31 * MS);
    assert_eq!(report.total_ns, 19 * MS, "from 111 ms, when 4 was declared");
}

#[test]
fn a_replacement_that_dies_before_it_is_ready_is_launched_again() {
    let mut chain = Chain::deploy(3, 1);
    chain.run_to(55);
    chain.kill(1);
    chain.run_to(81);
    chain.commands();
    chain.join(1, 1);
    chain.commands();
    chain.kill(1); // the replacement, watched since it joined at 81 ms
    chain.run_to(112);
    assert_eq!(chain.commands(), [launch(1, 2)], "same epoch, no new fence");
    assert_eq!(chain.c.peers()[1], None);
    chain.ready(1, 5);
    assert_eq!(
        chain.c.unexpected_messages(),
        1,
        "the relaunched one has not joined"
    );
    chain.join(1, 2);
    assert_eq!(chain.commands().len(), 1);
    chain.ready(1, 5);
    assert_eq!(chain.commands().len(), 3, "the reroute");
}

/// A replacement whose process died before it joined (or never started) sends nothing at all:
/// after the start timeout and a detection timeout it is launched again, instead of the
/// recovery waiting for it for ever.
#[test]
fn a_replacement_that_never_joins_is_launched_again_after_the_start_timeout() {
    let config = CoordinatorConfig {
        start_timeout_ns: 200 * MS,
        ..CoordinatorConfig::default()
    };
    let mut chain = Chain::deploy_with(3, 1, config);
    chain.run_to(55);
    chain.kill(1);
    chain.run_to(81);
    assert!(chain.commands().contains(&launch(1, 2)));
    chain.run_to(311);
    assert_eq!(chain.commands(), [], "it may still be starting");
    chain.run_to(312);
    assert_eq!(chain.commands(), [launch(1, 2)], "same epoch, no new fence");
    chain.join(1, 1);
    assert_eq!(chain.commands().len(), 1, "its Recover");
    chain.ready(1, 5);
    assert_eq!(chain.commands().len(), 3, "the reroute");
    assert_eq!(chain.c.epoch(), 2);
}

/// Anything a server could send, including nonsense.
fn input() -> impl Strategy<Value = (u64, Message)> {
    let position = 0u16..5;
    let epoch = 0u32..5;
    let msg = prop_oneof![
        (position.clone(), any::<u8>()).prop_map(|(p, i)| join_of(peer(p, i), None)),
        (position.clone(), 0u8..3, epoch.clone(), epoch.clone())
            .prop_map(|(p, i, epoch, routed)| rejoin(peer(p, i), epoch, routed)),
        (position.clone(), epoch.clone()).prop_map(|(position, epoch)| Message::Heartbeat {
            run: RUN,
            position,
            epoch,
            seq: 0
        }),
        (position.clone(), epoch.clone()).prop_map(|(position, epoch)| Message::Ready {
            run: RUN,
            position,
            epoch,
            bytes: 1
        }),
        (position.clone(), epoch.clone(), 0u8..4, position.clone()).prop_map(
            |(position, epoch, group, source)| Message::TransferFailed {
                run: RUN,
                position,
                epoch,
                group,
                source
            }
        ),
        (position, epoch).prop_map(|(position, epoch)| Message::Resumed {
            run: RUN,
            position,
            epoch
        }),
        Just(Message::Stop),
    ];
    (0..20 * MS, msg)
}

proptest! {
    #[test]
    fn arbitrary_inputs_never_break_it(
        k in 1usize..=4,
        f in 1usize..=2,
        inputs in prop::collection::vec(input(), 0..200),
    ) {
        let ring = Ring::new(k, f).unwrap();
        let mut c = Coordinator::new(ring, CoordinatorConfig::default(), RUN);
        let mut now = 0;
        let mut epoch = 0;
        for (dt, msg) in inputs {
            now += dt;
            c.handle(now, msg);
            if c.poll_timeout().is_some_and(|t| t <= now) {
                c.handle_timeout(now);
            }
            prop_assert!(c.epoch() >= epoch);
            epoch = c.epoch();
            while let Some(cmd) = c.poll_command() {
                let (Command::Launch { position: to, .. } | Command::Send { to, .. }) = cmd;
                prop_assert!(usize::from(to.0) < ring.servers());
            }
            // An adoption's recovery may only reroute.
            while let Some(report) = c.poll_report() {
                prop_assert!(report.failed.len() <= f);
            }
            // Fail-stop: a suspect was never fenced off or replaced.
            for s in c.suspects() {
                prop_assert!(c.peers()[usize::from(s.0)].is_some());
            }
        }
    }
}

/// The `Join` of the node at `p`, saying `serving`.
fn join_of(p: Peer, serving: Option<Serving>) -> Message {
    Message::Join {
        position: p.position,
        pid: 1,
        chain: 0,
        data: p.data,
        transfer: p.transfer,
        nonce: [0; 16],
        launch: None,
        serving,
    }
}

/// What a node that serves already sends as it joins again.
fn rejoin(p: Peer, epoch: u32, routed: u32) -> Message {
    join_of(p, Some(Serving { epoch, routed }))
}

impl Chain {
    /// A coordinator that has just started, of a ring of `k` middleboxes tolerating `f`
    /// failures, whose nodes at `positions` (original servers) rejoin at time 0, each in
    /// `epoch` and following the routing of `routed`, and then beat.
    fn rejoined(k: usize, f: usize, rejoins: &[(u16, u32, u32)]) -> Chain {
        let ring = Ring::new(k, f).unwrap();
        let mut chain = Chain {
            c: Coordinator::new(ring, CoordinatorConfig::default(), RUN),
            now: 0,
            servers: ring.servers() as u16,
            beating: BTreeSet::new(),
            seq: 0,
        };
        for &(position, epoch, routed) in rejoins {
            assert!(chain.c.handle(0, rejoin(peer(position, 0), epoch, routed)));
            chain.beating.insert(position);
        }
        chain
    }
}

/// A coordinator started after its predecessor died takes the chain over as its nodes left it:
/// nothing sent, the epoch theirs, failures recovered from there on.
#[test]
fn a_new_coordinator_adopts_a_chain_whose_nodes_all_rejoin() {
    let mut chain = Chain::rejoined(3, 1, &[(0, 4, 4), (2, 4, 4)]);
    assert!(!chain.c.running(), "waiting for position 1");
    assert_eq!(chain.c.poll_adoption(), None);
    chain.run_to(30);
    assert!(chain.c.handle(chain.now, rejoin(peer(1, 0), 4, 4)));
    assert_eq!(chain.commands(), vec![]);
    assert!(chain.c.running());
    assert_eq!(chain.c.epoch(), 4);
    assert_eq!(
        chain.c.poll_adoption(),
        Some(Adopted {
            epoch: 4,
            rejoined: vec![0, 1, 2],
            recovery: None,
            halted: false,
        })
    );
    chain.beating.insert(1);
    chain.run_to(500);
    assert_eq!(chain.commands(), vec![], "all of them beat");
    chain.kill(1);
    chain.run_to(600);
    let mut expected = fence(&[0, 2], 5, &[1]);
    expected.push(launch(1, 5));
    assert_eq!(chain.commands(), expected);
}

/// Positions whose nodes do not rejoin within 4 rejoin periods (10 ms each: the heartbeat
/// period, 10 ms at least) after the first rejoin are taken for failed and recovered in the
/// next epoch, from the nodes that rejoined.
#[test]
fn positions_that_do_not_rejoin_in_the_grace_are_recovered_in_the_next_epoch() {
    let mut chain = Chain::rejoined(3, 1, &[(0, 3, 3), (2, 3, 3)]);
    chain.run_to(39);
    assert_eq!(chain.commands(), vec![]);
    assert_eq!(chain.c.epoch(), 0, "not adopted yet");
    chain.run_to(41);
    let mut expected = fence(&[0, 2], 4, &[1]);
    expected.push(launch(1, 4));
    assert_eq!(chain.commands(), expected);
    assert_eq!(
        chain.c.poll_adoption(),
        Some(Adopted {
            epoch: 3,
            rejoined: vec![0, 2],
            recovery: Some(4),
            halted: false,
        })
    );
    chain.join(1, 1);
    // Server 1 heads m1 (replicated at 2) and replicates m0 (whose tail it was: from 0).
    assert_eq!(
        chain.commands(),
        vec![recover(1, 4, &[fetch(1, true, 2), fetch(0, false, 0)])]
    );
    chain.ready(1, 10);
    assert_eq!(chain.commands(), chain.reroute(&[1]));
    chain.resumed(&[0, 1, 2]);
    let report = chain.c.poll_report().unwrap();
    assert_eq!((report.epoch, report.failed), (4, vec![1]));
    assert_eq!(
        report.detection_ns,
        40 * MS,
        "the grace, from the first rejoin"
    );
    assert!(chain.c.running());
}

/// Nodes left in the middle of a recovery (fenced and waiting for the reroute, a replacement
/// ready but not rerouted, one the fence never reached) are fenced and rerouted in the next
/// epoch: a recovery with nothing to replace.
#[test]
fn a_chain_left_in_a_recovery_is_fenced_and_rerouted() {
    let mut chain = Chain::rejoined(3, 1, &[(0, 5, 4), (1, 5, 0), (2, 4, 4)]);
    assert_eq!(chain.c.epoch(), 6);
    let mut expected = fence(&[0, 1, 2], 6, &[]);
    expected.extend(chain.reroute(&[]));
    assert_eq!(chain.commands(), expected);
    assert_eq!(chain.c.poll_adoption().unwrap().recovery, Some(6));
    chain.resumed(&[0, 1, 2]);
    let report = chain.c.poll_report().unwrap();
    assert_eq!((report.epoch, report.failed), (6, vec![]));
    assert!(chain.c.running());
}

/// An adoption that would have to recover more than the chain can (two of three servers
/// missing with f = 1) halts rather than lose state.
#[test]
fn an_adoption_missing_more_than_f_servers_halts() {
    let mut chain = Chain::rejoined(3, 1, &[(0, 2, 2)]);
    chain.run_to(301);
    assert_eq!(chain.commands(), vec![]);
    let halted = chain.c.halted().expect("halted");
    assert_eq!((halted.epoch, halted.failed.clone()), (2, vec![1, 2]));
    let adopted = chain.c.poll_adoption().expect("adopted, then halted");
    assert_eq!((adopted.recovery, adopted.halted), (None, true));
    assert!(
        adopted
            .to_string()
            .ends_with("more are missing than the chain can recover"),
        "{adopted}"
    );
}

/// A running coordinator takes back the node it knows at a position (its control connection
/// broke, and it connected again), as a heartbeat; not another node there, nor one replaced
/// meanwhile. Fresh joins and rejoins do not mix in a deployment or an adoption.
#[test]
fn rejoins_are_taken_only_from_the_node_a_position_has() {
    let mut chain = Chain::deploy(3, 1);
    let now = chain.now;
    assert!(chain.c.handle(now, rejoin(peer(1, 0), 1, 1)));
    assert!(
        !chain.c.handle(now, rejoin(peer(1, 7), 1, 1)),
        "another node"
    );
    assert!(
        !chain.c.handle(now, rejoin(peer(1, 0), 2, 2)),
        "a future epoch"
    );
    assert_eq!(chain.commands(), vec![]);
    chain.kill(1);
    chain.run_to(100);
    chain.commands();
    chain.join(1, 1);
    chain.commands();
    assert!(
        !chain.c.handle(chain.now, rejoin(peer(1, 0), 1, 1)),
        "the node replaced"
    );
    assert!(
        chain.c.handle(chain.now, rejoin(peer(1, 1), 2, 0)),
        "its replacement"
    );

    let mut deploying =
        Coordinator::new(Ring::new(2, 1).unwrap(), CoordinatorConfig::default(), RUN);
    let fresh = |p: Peer| join_of(p, None);
    assert!(deploying.handle(0, fresh(peer(0, 0))));
    assert!(!deploying.handle(0, rejoin(peer(1, 0), 1, 1)));
    let mut adopting =
        Coordinator::new(Ring::new(2, 1).unwrap(), CoordinatorConfig::default(), RUN);
    assert!(adopting.handle(0, rejoin(peer(0, 0), 1, 1)));
    assert!(!adopting.handle(0, fresh(peer(1, 0))));
}

/// A node whose connection broke during a reroute, after it resumed, rejoins following the new
/// epoch's routing: that stands for the `Resumed` the connection may have lost, and the recovery
/// finishes. One that rejoins still fenced does not.
#[test]
fn a_rejoin_during_a_reroute_stands_for_the_resumed_it_names() {
    let mut chain = Chain::deploy(3, 1);
    chain.kill(1);
    chain.run_to(100);
    chain.commands();
    chain.join(1, 1);
    chain.commands();
    chain.ready(1, 10);
    assert_eq!(chain.commands(), chain.reroute(&[1]));
    chain.resumed(&[1, 2]);
    let now = chain.now;
    assert!(chain.c.handle(now, rejoin(peer(0, 0), 2, 1)));
    assert_eq!(chain.c.poll_report(), None, "still fenced");
    assert!(chain.c.handle(now, rejoin(peer(0, 0), 2, 2)));
    let report = chain.c.poll_report().expect("the recovery finished");
    assert_eq!((report.epoch, report.failed), (2, vec![1]));
    assert!(chain.c.running());
}
