//! The orchestrator over real TCP connections, with fake nodes that speak the control protocol.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

use ftc_chain::spec::ChainSpec;
use ftc_node::Mode;

use super::*;
use crate::admission::{FIRST_FRAME, MAX_WAITING};
use crate::control::Serving;
use crate::process::chain_fingerprint;
use crate::process::launcher::{parse_token, How, NodeArgs, LAUNCH_TOKEN_ENV};

/// Ch-2 (two Monitors, f = 1), or another spec's `text`.
fn spec(text: Option<&str>) -> ChainSpec {
    let text = text.unwrap_or(include_str!("../../../../specs/ch-2.toml"));
    ChainSpec::from_toml_str(text, "test").unwrap()
}

fn key() -> Key {
    Key::new(b"test secret").unwrap()
}

/// A node's end of a control connection, and the run of the challenge it read (0 before).
struct FakeNode(TcpStream, u64);

impl FakeNode {
    /// Connects to `orchestrator` and reads its challenge: the nonce a `Join` must carry.
    fn connect(orchestrator: SocketAddr) -> (FakeNode, Nonce) {
        let stream = TcpStream::connect(orchestrator).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut node = FakeNode(stream, 0);
        match node.recv() {
            Ok(Message::Challenge { run, nonce, .. }) => {
                node.1 = run;
                (node, nonce)
            }
            other => panic!("not a challenge: {other:?}"),
        }
    }

    /// Connects to `orchestrator` and joins as `position`.
    fn join(orchestrator: SocketAddr, position: u16) -> FakeNode {
        let (node, nonce) = FakeNode::connect(orchestrator);
        node.send(&join(position, ch_2(), nonce));
        node
    }

    fn send(&self, msg: &Message) {
        write_message(&mut &self.0, msg, &key()).unwrap();
    }

    fn recv(&self) -> Result<Message, ControlError> {
        read_message(&mut &self.0, &key(), CONTROL_MAX_BODY)
    }

    /// Heartbeats of epoch 1 as `position`, naming the run `run`, every 200 ms until `done` (or
    /// until the orchestrator closes the connection).
    fn beat(&self, position: u16, run: u64, done: &AtomicBool) {
        for seq in 1.. {
            let beat = Message::Heartbeat {
                run,
                position,
                epoch: 1,
                seq,
            };
            if done.load(Ordering::Acquire) || write_message(&mut &self.0, &beat, &key()).is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Its next message past the challenge (which a connection closed at once may not get).
    fn recv_past_challenge(&self) -> Result<Message, ControlError> {
        match self.recv() {
            Ok(Message::Challenge { .. }) => self.recv(),
            other => other,
        }
    }
}

/// The fingerprint of Ch-2 in FTC mode: the orchestrator's chain.
fn ch_2() -> u64 {
    chain_fingerprint(&spec(None), Mode::Ftc)
}

/// A node's `Join` as `position`, of the chain with the fingerprint `chain`, answering the
/// challenge of `nonce`.
fn join(position: u16, chain: u64, nonce: Nonce) -> Message {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, 9000 + position));
    join_from(addr, position, chain, nonce, None)
}

/// [`join`] of a node at `addr` (data and transfer), saying `serving`.
fn join_from(
    addr: SocketAddr,
    position: u16,
    chain: u64,
    nonce: Nonce,
    serving: Option<Serving>,
) -> Message {
    Message::Join {
        position,
        pid: 1,
        chain,
        data: addr,
        transfer: addr,
        nonce,
        launch: None,
        serving,
    }
}

/// An orchestrator of Ch-2 (f = 1) in FTC mode that launches nothing and watches heartbeats every
/// second.
fn orchestrator() -> Orchestrator {
    orchestrator_launching(How::None, CoordinatorConfig::default().start_timeout_ns)
}

/// [`orchestrator`], launching replacements `how`, which must join within `start_timeout_ns`.
fn orchestrator_launching(how: How, start_timeout_ns: u64) -> Orchestrator {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let args = NodeArgs::without_customers(
        listener.local_addr().unwrap(),
        PathBuf::from("ch-2.toml"),
        PathBuf::from("secret"),
        1000.0,
        1,
    );
    let config = CoordinatorConfig {
        heartbeat_period_ns: 1_000_000_000,
        start_timeout_ns,
        ..CoordinatorConfig::default()
    };
    Orchestrator::new(
        listener,
        (spec(None).ring(), Chain::new(&spec(None), Mode::Ftc)),
        key(),
        config,
        Launcher::new(how, args),
    )
}

/// Runs `test` with the address of an [`orchestrator`] while it runs ([`while_running_this`]).
fn while_running(test: impl FnOnce(SocketAddr, &AtomicBool)) -> Orchestrator {
    while_running_this(orchestrator(), test)
}

/// Raises its flag when dropped, by a panic too.
struct Raise<'a>(&'a AtomicBool);

impl Drop for Raise<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

/// Runs `test` with `orchestrator`'s address while it runs (`stop` ends it, as it does once
/// `test` returns or panics), checks that it ended well, and gives it back for its status.
fn while_running_this(
    orchestrator: Orchestrator,
    test: impl FnOnce(SocketAddr, &AtomicBool),
) -> Orchestrator {
    let addr = orchestrator.local_addr().unwrap();
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let running = s.spawn(|| orchestrator.run(&stop, |_| {}));
        let raise = Raise(&stop);
        test(addr, &stop);
        drop(raise);
        assert_eq!(running.join().unwrap(), Ok(()));
    });
    orchestrator
}

/// Both positions join, and each gets its `Assign`.
fn deploy(addr: SocketAddr) -> [FakeNode; 2] {
    let nodes = [FakeNode::join(addr, 0), FakeNode::join(addr, 1)];
    for node in &nodes {
        assert!(matches!(node.recv(), Ok(Message::Assign { epoch: 1, .. })));
    }
    nodes
}

#[test]
fn a_second_node_at_a_live_position_is_refused_and_takes_none_of_its_orders() {
    let orchestrator = while_running(|addr, stop| {
        let nodes = deploy(addr);
        let second = FakeNode::join(addr, 1);
        match second.recv() {
            Ok(Message::Refused { reason }) => {
                assert!(
                    reason.contains("no node is awaited at position 1"),
                    "{reason}"
                )
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(second.recv(), Err(ControlError::Closed)));
        // The position's orders still go to the node that holds it.
        stop.store(true, Ordering::Release);
        for node in &nodes {
            assert!(matches!(node.recv(), Ok(Message::Stop)));
        }
    });
    assert_eq!(orchestrator.status().rejected, 1);
}

/// A node whose control connection broke joins again, saying it serves in epoch 1: the
/// orchestrator takes it back, and its orders go to the new connection; a rejoin at a position
/// from a node of other addresses is refused, and told why.
#[test]
fn a_node_whose_connection_broke_is_taken_back_and_no_other() {
    let serving = Some(Serving {
        epoch: 1,
        routed: 1,
    });
    let orchestrator = while_running(|addr, stop| {
        let [first, second] = deploy(addr);
        first.0.shutdown(Shutdown::Both).unwrap();
        let (again, nonce) = FakeNode::connect(addr);
        let at = |port| SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        again.send(&join_from(at(9000), 0, ch_2(), nonce, serving));
        let (stranger, nonce) = FakeNode::connect(addr);
        stranger.send(&join_from(at(9500), 1, ch_2(), nonce, serving));
        match stranger.recv() {
            Ok(Message::Refused { reason }) => assert_eq!(
                reason,
                format!(
                    "{NOT_TAKEN_BACK}: position 1 is not this node's in epoch 1 (declared failed \
                     and replaced, or the orchestrator deploys a new chain)"
                )
            ),
            other => panic!("{other:?}"),
        }
        stop.store(true, Ordering::Release);
        for node in [&again, &second] {
            assert!(matches!(node.recv(), Ok(Message::Stop)));
        }
    });
    let status = orchestrator.status();
    assert_eq!((status.epoch, status.rejected), (1, 1));
    assert_eq!(status.recoveries.total(), 0);
}

#[test]
fn a_node_of_another_mode_or_spec_is_refused_and_told_which() {
    let one_more_middlebox = format!(
        "{}\n[[middlebox]]\nkind = \"monitor\"\n",
        include_str!("../../../../specs/ch-2.toml")
    );
    let orchestrator = while_running(|addr, _| {
        for (chain, why) in [
            (
                chain_fingerprint(&spec(None), Mode::Nf),
                "the node runs --mode nf, the orchestrator --mode ftc (give both the same)",
            ),
            (
                chain_fingerprint(&spec(Some(&one_more_middlebox)), Mode::Ftc),
                "the node runs another chain spec than the orchestrator's (give both the same \
                 file)",
            ),
        ] {
            let (node, nonce) = FakeNode::connect(addr);
            node.send(&join(0, chain, nonce));
            match node.recv() {
                Ok(Message::Refused { reason }) => assert_eq!(reason, why),
                other => panic!("{other:?}"),
            }
        }
        deploy(addr);
    });
    assert_eq!(orchestrator.status().rejected, 2);
}

/// Deploys Ch-2, keeps node 0 beating while node 1 does what `node_1` does (until told it is
/// done), and checks that node 1 is declared failed, and told why as it is cut off.
fn node_1_declared_failed(node_1: impl FnOnce(&FakeNode, &AtomicBool) + Send) -> Orchestrator {
    while_running(|addr, _| {
        let [beating, failing] = deploy(addr);
        failing
            .0
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let done = AtomicBool::new(false);
        std::thread::scope(|s| {
            s.spawn(|| beating.beat(0, beating.1, &done));
            s.spawn(|| node_1(&failing, &done));
            let _done = Raise(&done);
            let told = failing.recv();
            done.store(true, Ordering::Release);
            match told {
                Ok(Message::Refused { reason }) => {
                    assert_eq!(reason, "declared failed in epoch 2; replaced")
                }
                other => panic!("{other:?}"),
            }
            assert!(matches!(failing.recv(), Err(ControlError::Closed)));
        });
    })
}

#[test]
fn a_node_declared_failed_is_told_why_it_is_cut_off() {
    let orchestrator = node_1_declared_failed(|_, _| {});
    assert_eq!(orchestrator.status().other_run, 0);
}

/// A node's messages name the orchestrator's run: heartbeats of another run (recorded in an
/// earlier run with the same secret and replayed, say) are ignored, and counted, and keep no node
/// alive.
#[test]
fn heartbeats_of_another_run_keep_no_node_alive() {
    let orchestrator = node_1_declared_failed(|node, done| node.beat(1, node.1 ^ 1, done));
    assert!(orchestrator.status().other_run > 0);
}

#[test]
fn connections_that_say_nothing_are_closed_and_bounded() {
    while_running(|addr, _| {
        let opened = Instant::now();
        let idle: Vec<FakeNode> = (0..MAX_WAITING)
            .map(|_| FakeNode(TcpStream::connect(addr).unwrap(), 0))
            .collect();
        let one_more = FakeNode(TcpStream::connect(addr).unwrap(), 0);
        idle[0].0.set_read_timeout(Some(FIRST_FRAME / 2)).unwrap();
        assert!(
            matches!(idle[0].recv_past_challenge(), Err(ControlError::Closed)),
            "the oldest is closed at once: {MAX_WAITING} others wait"
        );
        for silent in idle[1..].iter().chain([&one_more]) {
            silent.0.set_read_timeout(Some(FIRST_FRAME * 2)).unwrap();
            let closed = silent.recv_past_challenge();
            assert!(matches!(closed, Err(ControlError::Closed)), "{closed:?}");
        }
        assert!(opened.elapsed() >= FIRST_FRAME);
        // Nodes that speak are served as before.
        deploy(addr);
    });
}

/// A connection that was challenged and sent the header of a `Join`, and a closure that sends it
/// one more byte (a write to a closed connection does nothing).
fn trickle(addr: SocketAddr) -> (TcpStream, impl FnMut()) {
    let (FakeNode(stream, _), nonce) = FakeNode::connect(addr);
    let frame = crate::control::encode(&join(0, 0, nonce), &key());
    (&stream).write_all(&frame[..10]).unwrap();
    let mut rest = frame.into_iter().skip(10);
    let writer = stream.try_clone().unwrap();
    let more = move || {
        let byte = rest.next().expect("the frame outlasts the test");
        let _ = (&writer).write_all(&[byte]);
    };
    (stream, more)
}

#[test]
fn a_first_message_that_trickles_in_is_closed_at_its_deadline() {
    while_running(|addr, _| {
        let opened = Instant::now();
        let (stream, mut more) = trickle(addr);
        stream.set_nonblocking(true).unwrap();
        // A byte every 200 ms: every read gets one long before any read timeout, and the 60
        // bytes of the frame's rest last 12 s.
        let ended = loop {
            std::thread::sleep(Duration::from_millis(200));
            more();
            match (&stream).read(&mut [0; 64]) {
                Ok(0) => break true,
                Ok(n) => panic!("the orchestrator answered {n} bytes"),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => break true,
            }
            if opened.elapsed() > FIRST_FRAME * 2 {
                break false;
            }
        };
        let took = opened.elapsed();
        assert!(ended, "still open after {took:?}");
        assert!(
            took >= FIRST_FRAME && took < FIRST_FRAME + Duration::from_secs(1),
            "{took:?}"
        );
    });
}

#[test]
fn a_node_joins_while_every_waiting_place_is_taken_by_trickling_connections() {
    while_running(|addr, _| {
        let mut trickling: Vec<_> = (0..MAX_WAITING).map(|_| trickle(addr)).collect();
        for (_, more) in &mut trickling {
            more();
        }
        // Accepted after them all: every place is taken when they come.
        deploy(addr);
    });
}

/// A `Join` recorded on one connection and replayed on another is refused: it does not carry
/// the nonce that connection was challenged with (version 4 took it during deployment, and the
/// replayer held the position, and got its orders, instead of the node that sent it).
#[test]
fn a_join_replayed_on_another_connection_is_refused() {
    let orchestrator = while_running(|addr, _| {
        let (node, nonce) = FakeNode::connect(addr);
        let recorded = crate::control::encode(&join(0, ch_2(), nonce), &key());
        (&node.0).write_all(&recorded).unwrap();
        let (replayer, _) = FakeNode::connect(addr);
        (&replayer.0).write_all(&recorded).unwrap();
        match replayer.recv() {
            Ok(Message::Refused { reason }) => assert!(
                reason.starts_with("the Join does not carry its connection's challenge"),
                "{reason}"
            ),
            other => panic!("{other:?}"),
        }
        assert!(matches!(replayer.recv(), Err(ControlError::Closed)));
        // The node that sent it holds its position: the deployment completes with it.
        let other = FakeNode::join(addr, 1);
        for (node, at) in [(&node, 0), (&other, 1)] {
            let assign = node.recv();
            assert!(
                matches!(assign, Ok(Message::Assign { position, .. }) if position == at),
                "{assign:?}"
            );
        }
    });
    assert_eq!(orchestrator.status().rejected, 1);
}

/// A replacement launched again (its first launch did not join in time) takes its position only
/// with the token of its last launch, from its environment: a node of the earlier launch, and
/// one without a token, are refused (without launch tokens, the first of them to join took it).
#[test]
fn only_the_last_launch_at_a_position_joins_there() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tokens");
    // Each launch leaves its token in the file, and starts no node.
    let how = How::Command(format!("echo ${LAUNCH_TOKEN_ENV} >> {}", file.display()));
    let tokens = || -> Vec<Nonce> {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        text.lines().map(|l| parse_token(l).unwrap()).collect()
    };
    let orchestrator = orchestrator_launching(how, 200_000_000);
    let orchestrator = while_running_this(orchestrator, |addr, _| {
        let [beating, failed] = deploy(addr);
        drop(failed);
        let done = AtomicBool::new(false);
        std::thread::scope(|s| {
            s.spawn(|| beating.beat(0, beating.1, &done));
            let _done = Raise(&done);
            let deadline = Instant::now() + Duration::from_secs(30);
            while tokens().len() < 2 {
                assert!(
                    Instant::now() < deadline,
                    "not launched twice: {:?}",
                    tokens()
                );
                std::thread::sleep(Duration::from_millis(20));
            }
            let launched = tokens();
            let (first, last) = (launched[0], launched[launched.len() - 1]);
            let join_launched = |launch, serving| {
                let (node, nonce) = FakeNode::connect(addr);
                let at = SocketAddr::from((Ipv4Addr::LOCALHOST, 9001));
                let mut msg = join_from(at, 1, ch_2(), nonce, serving);
                if let Message::Join { launch: l, .. } = &mut msg {
                    *l = launch;
                }
                node.send(&msg);
                node.recv()
            };
            let awaits = "position 1 awaits the node the orchestrator launched there last";
            // The node that served there before, rejoining (after a partition, say), is told it
            // was replaced, however it was launched.
            let served = Some(Serving {
                epoch: 1,
                routed: 1,
            });
            let not_back = format!("{NOT_TAKEN_BACK}: position 1 is not this node's in epoch 2");
            for (launch, serving, starts, why) in [
                (None, None, awaits, "has no launch token"),
                (Some(first), None, awaits, "another launch"),
                (
                    None,
                    served,
                    not_back.as_str(),
                    "declared failed and replaced",
                ),
                (
                    Some(first),
                    served,
                    &not_back,
                    "declared failed and replaced",
                ),
            ] {
                match join_launched(launch, serving) {
                    Ok(Message::Refused { reason }) => assert!(
                        reason.starts_with(starts) && reason.contains(why),
                        "{reason}"
                    ),
                    other => panic!("{other:?}"),
                }
            }
            let recover = join_launched(Some(last), None);
            assert!(
                matches!(recover, Ok(Message::Recover { .. })),
                "{recover:?}"
            );
        });
    });
    assert_eq!(orchestrator.status().rejected, 4);
}

/// The orchestrator's stats line: positions up, recoveries with the last one's time, refused
/// connections and nodes that ended unasked.
#[test]
fn a_status_line_says_how_the_chain_stands() {
    let peer = |position| Peer {
        position,
        data: SocketAddr::from((Ipv4Addr::LOCALHOST, 7000 + position)),
        transfer: SocketAddr::from((Ipv4Addr::LOCALHOST, 8000 + position)),
    };
    let mut status = Status {
        epoch: 1,
        peers: vec![Some(peer(0)), Some(peer(1)), Some(peer(2))],
        ..Status::default()
    };
    assert_eq!(
        status.line(),
        "epoch 1, 3 of 3 positions up, 0 recoveries, control connections refused 0, nodes \
         ended unasked 0"
    );
    status.peers[1] = None;
    status.rejected = 2;
    status.recoveries.push(RecoveryReport {
        epoch: 2,
        failed: vec![1],
        detection_ns: 15_000_000,
        start_ns: 1_000_000,
        transfer_ns: 2_000_000,
        reroute_ns: 300_000,
        total_ns: 3_250_000,
        bytes: 1609,
    });
    status.epoch = 2;
    assert_eq!(
        status.line(),
        "epoch 2, 2 of 3 positions up, 1 recoveries (the last of [1] in epoch 2: 3.2 ms after \
         detection), control connections refused 2, nodes ended unasked 0"
    );
}
