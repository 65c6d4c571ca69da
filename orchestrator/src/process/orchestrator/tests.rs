//! The orchestrator over real TCP connections, with fake nodes that speak the control protocol.

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

use super::*;
use crate::process::launcher::{How, NodeArgs};

const CHAIN: u64 = 0x5eed;

fn key() -> Key {
    Key::new(b"test secret").unwrap()
}

/// A node's end of a control connection.
struct FakeNode(TcpStream);

impl FakeNode {
    /// Connects to `orchestrator` and joins as `position`.
    fn join(orchestrator: SocketAddr, position: u16) -> FakeNode {
        let stream = TcpStream::connect(orchestrator).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, 9000 + position));
        let node = FakeNode(stream);
        node.send(&Message::Join {
            position,
            pid: 1,
            chain: CHAIN,
            data: addr,
            transfer: addr,
        });
        node
    }

    fn send(&self, msg: &Message) {
        write_message(&mut &self.0, msg, &key()).unwrap();
    }

    fn recv(&self) -> Result<Message, ControlError> {
        read_message(&mut &self.0, &key(), CONTROL_MAX_BODY)
    }
}

/// An orchestrator of Ch-2 (f = 1) that launches nothing and watches heartbeats every second.
fn orchestrator() -> Orchestrator {
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
        ..CoordinatorConfig::default()
    };
    Orchestrator::new(
        listener,
        (Ring::new(2, 1).unwrap(), CHAIN),
        key(),
        config,
        Launcher::new(How::None, args),
    )
}

/// Runs `test` with the orchestrator's address while it runs (`stop` ends it, as it does once
/// `test` returns), checks that it ended well, and gives it back for its status.
fn while_running(test: impl FnOnce(SocketAddr, &AtomicBool)) -> Orchestrator {
    let orchestrator = orchestrator();
    let addr = orchestrator.local_addr().unwrap();
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let running = s.spawn(|| orchestrator.run(&stop, |_| {}));
        test(addr, &stop);
        stop.store(true, Ordering::Release);
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

#[test]
fn connections_that_say_nothing_are_closed_and_bounded() {
    while_running(|addr, _| {
        let opened = Instant::now();
        let idle: Vec<TcpStream> = (0..MAX_UNJOINED)
            .map(|_| TcpStream::connect(addr).unwrap())
            .collect();
        let one_more = FakeNode(TcpStream::connect(addr).unwrap());
        one_more
            .0
            .set_read_timeout(Some(FIRST_MESSAGE / 2))
            .unwrap();
        assert!(
            matches!(one_more.recv(), Err(ControlError::Closed)),
            "closed at once: {MAX_UNJOINED} others wait"
        );
        for stream in &idle {
            stream.set_read_timeout(Some(FIRST_MESSAGE * 2)).unwrap();
            let silent = FakeNode(stream.try_clone().unwrap());
            assert!(matches!(silent.recv(), Err(ControlError::Closed)));
        }
        assert!(opened.elapsed() >= FIRST_MESSAGE);
        // Nodes that speak are served as before.
        deploy(addr);
    });
}
