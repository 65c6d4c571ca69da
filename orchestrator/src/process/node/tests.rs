//! `ftc node`'s tests: one node on a thread of the test, joined to a fake orchestrator that speaks
//! the control protocol, and the node's customer ingress.

use std::net::{TcpListener, UdpSocket};

use ftc_replica::GroupState;

use super::*;

/// The run the fake orchestrator tells the node.
const RUN: u64 = 0x5eed_0001;

/// The nonce of the fake orchestrator's challenge.
const NONCE: Nonce = [0x5e; 16];

fn key() -> Key {
    Key::new(b"test secret").unwrap()
}

/// Ch-2's server 0 (FTC), beating every 10 ms, for the orchestrator at `orchestrator`.
fn config(orchestrator: SocketAddr) -> NodeConfig {
    let spec = include_str!("../../../../specs/ch-2.toml");
    NodeConfig {
        spec: ChainSpec::from_toml_str(spec, "ch-2.toml").unwrap(),
        position: 0,
        launch: None,
        orchestrator,
        key: key(),
        data: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        ingress: None,
        egress: None,
        edge_in: Vec::new(),
        edge_out: Vec::new(),
        edge_kind: EdgeKind::default(),
        edge_queues: 1,
        xdp: XdpConfig::default(),
        links: Vec::new(),
        link_queues: 1,
        heartbeat: Duration::from_millis(10),
        stall: Duration::from_secs(5),
        on_stall: |_| {},
        hang_after: None,
        ring_loss: 0.0,
        server: ServerConfig::default(),
        observe: None,
        ftmb: FtmbConfig::default(),
        stats_every: None,
        headless_for: Duration::from_secs(10),
    }
}

/// Ch-2's servers: the node under test at position 0 (its data and transfer addresses), server 1
/// `elsewhere`.
fn ch_2_peers((data, transfer): (SocketAddr, SocketAddr), elsewhere: SocketAddr) -> Vec<Peer> {
    vec![
        Peer {
            position: 0,
            data,
            transfer,
        },
        Peer {
            position: 1,
            data: elsewhere,
            transfer: elsewhere,
        },
    ]
}

/// The orchestrator's end of the node's control connection.
struct Control(TcpStream);

impl Control {
    fn send(&self, msg: &Message) {
        write_message(&mut &self.0, msg, &key()).unwrap();
    }

    fn recv(&self) -> Message {
        read_message(&mut &self.0, &key(), CONTROL_MAX_BODY).unwrap()
    }

    /// A node's control connection accepted on `listener`, challenged with the run `run`: its
    /// `Join`, checked to answer the challenge.
    fn accept(listener: &TcpListener, run: u64, heartbeat: Duration) -> (Control, Message) {
        let control = Control(listener.accept().unwrap().0);
        control
            .0
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        control.send(&Message::Challenge {
            run,
            nonce: NONCE,
            heartbeat_ns: heartbeat.as_nanos() as u64,
        });
        let join = control.recv();
        assert!(
            matches!(join, Message::Join { nonce: NONCE, .. }),
            "{join:?}"
        );
        (control, join)
    }

    /// The node's connection accepted on `listener` and the node assigned position 0 of Ch-2
    /// in epoch 1 (server 1 `elsewhere`, where nobody reads); its state-transfer address.
    fn assign(
        listener: &TcpListener,
        heartbeat: Duration,
        elsewhere: SocketAddr,
    ) -> (Control, SocketAddr) {
        let (control, join) = Control::accept(listener, RUN, heartbeat);
        let Message::Join { data, transfer, .. } = join else {
            unreachable!("checked")
        };
        control.send(&Message::Assign {
            run: RUN,
            epoch: 1,
            position: 0,
            peers: ch_2_peers((data, transfer), elsewhere),
        });
        (control, transfer)
    }

    /// The epochs of the node's next `n` heartbeats.
    fn beats(&self, n: usize) -> Vec<u32> {
        let epochs = std::iter::from_fn(|| match self.recv() {
            Message::Heartbeat { epoch, .. } => Some(Some(epoch)),
            _ => Some(None),
        });
        epochs.flatten().take(n).collect()
    }
}

/// A state transfer of an earlier run with the same secret (or one replayed) names an epoch of
/// its own: the node neither sends its state nor fences to that epoch, which would make its
/// heartbeats ones the orchestrator does not expect.
#[test]
fn a_state_transfer_of_another_run_gets_nothing_and_fences_nothing() {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let config = config(listener.local_addr().unwrap());
    // Where server 1 would be: nobody reads it.
    let elsewhere = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let elsewhere = elsewhere.local_addr().unwrap();
    std::thread::scope(|s| {
        let node = s.spawn(|| run_node(&config));
        let (control, transfer) = Control::assign(&listener, config.heartbeat, elsewhere);
        assert_eq!(control.beats(2).last(), Some(&1));
        let t = Duration::from_secs(2);
        // A fetch of another run asks nothing of a node whose challenge names its own.
        let other = transfer::fetch(transfer, &key(), RUN + 1, 5, 0, true, t);
        assert!(
            matches!(other, Err(transfer::TransferError::Unexpected(_))),
            "{:?}",
            other.map(|state| format!("{} bytes of state", state.len()))
        );
        // A request of another run that answers the challenge anyway is closed unanswered.
        let requester = TcpStream::connect(transfer).unwrap();
        requester.set_read_timeout(Some(t)).unwrap();
        let Message::TransferChallenge { run: RUN, nonce } =
            read_message(&mut &requester, &key(), CONTROL_MAX_BODY).unwrap()
        else {
            panic!("no challenge of the node's run");
        };
        let request = Message::FetchGroup {
            run: RUN + 1,
            epoch: 5,
            group: 0,
            as_head: true,
            nonce,
        };
        write_message(&mut &requester, &request, &key()).unwrap();
        assert!(matches!(
            read_message(&mut &requester, &key(), crate::control::DEFAULT_MAX_BODY),
            Err(ControlError::Closed)
        ));
        assert_eq!(control.beats(5), [1; 5], "its epoch moved");
        let ours = transfer::fetch(transfer, &key(), RUN, 1, 0, true, t).unwrap();
        assert_eq!(GroupState::decode(&ours).unwrap().middlebox, MbIndex(0));
        control.send(&Message::Stop);
        node.join().unwrap().unwrap();
    });
}

/// Customer datagrams up to the room a frame between servers has for them enter whole; a
/// longer one (one of [`MAX_DATAGRAM`] bytes, whose frame would not fit a datagram), or one the
/// read cuts short, is dropped and counted instead.
#[test]
fn a_customer_datagram_longer_than_the_room_is_dropped_and_counted() {
    let ingress = UdpSocket::bind("127.0.0.1:0").unwrap();
    ingress.set_nonblocking(true).unwrap();
    let customer = UdpSocket::bind("127.0.0.1:0").unwrap();
    let room = customer_room(MAX_DATAGRAM, ServerConfig::default().trailer_budget);
    for len in [60, 9300, room, room + 1, MAX_DATAGRAM] {
        customer
            .send_to(&vec![7; len], ingress.local_addr().unwrap())
            .unwrap();
    }
    std::thread::sleep(Duration::from_millis(50));
    let (mut buf, mut too_long, mut entered) = (vec![0; RECV_BUFFER], 0, Vec::new());
    read_ingress(&ingress, &mut buf, room, &mut too_long, |bytes| {
        entered.push(bytes.len());
    })
    .unwrap();
    assert_eq!(entered, [60, room]);
    assert_eq!(too_long, 3);
}

/// A node whose edge-in lets in customer frames longer than frames between servers hold beside
/// the trailer budget (a jumbo edge, UDP datagrams between servers) does not start, and says
/// so, naming the MTUs; with the edge at a 1500-byte MTU it goes on (to its orchestrator,
/// absent here).
#[test]
fn an_edge_in_longer_than_frames_between_servers_hold_is_refused() {
    use ftc_node::netns::{namespaces_denied, Netns};
    if let Some(why) = namespaces_denied() {
        eprintln!("skipped: a node's edge on a veth in a network namespace: {why}");
        return;
    }
    let ns = Netns::create("ftcn").unwrap();
    ns.veth("na", "nb").unwrap();
    let start_with = |spec: Option<&str>| {
        ns.run(|| {
            // Nobody listens there: a node that passes its checks stops at the connection.
            let mut config = config(SocketAddr::from((Ipv4Addr::LOCALHOST, 9)));
            if let Some(spec) = spec {
                config.spec = ChainSpec::from_toml_str(spec, "test").unwrap();
            }
            config.edge_in = vec!["out=nb".parse().unwrap()];
            config.edge_kind = EdgeKind::Packet;
            run_node(&config).unwrap_err()
        })
        .unwrap()
    };
    let start = || start_with(None);
    let err = start();
    assert!(matches!(err, NodeError::Unreachable { .. }), "{err}");
    // At MTU 6000 the edge's frames fit beside the trailer budget (Ch-2), but not beside the
    // own logs of a Gen of 4000 bytes of state, which ride with every packet past the budget.
    ns.ip(&["link", "set", "nb", "mtu", "6000"]).unwrap();
    let err = start();
    assert!(matches!(err, NodeError::Unreachable { .. }), "{err}");
    let gen = "[chain]\nname = \"g\"\nf = 1\n[[middlebox]]\nkind = \"gen\"\nstate_size = 4000\n";
    let err = start_with(Some(gen));
    assert!(
        matches!(&err, NodeError::NoRoom(e) if e.trailer > 4000 && e.customer == 6018),
        "{err}"
    );
    ns.ip(&["link", "set", "nb", "mtu", "9000"]).unwrap();
    let err = start();
    assert!(matches!(err, NodeError::NoRoom(_)), "{err}");
    let text = err.to_string();
    assert!(
        text.starts_with("edge-in nb takes customer frames of up to 9018 bytes (MTU 9000, "),
        "{text}"
    );
    assert!(
        text.contains("UDP datagrams between servers carry 9216"),
        "{text}"
    );
}

/// A node that serves and loses its orchestrator (the connection ends) serves on and joins
/// again, saying the epoch it is in and the routing it follows (fenced in epoch 2, it still
/// follows epoch 1's); its heartbeats, its state transfers and its `Resumed` then name the run
/// of the orchestrator that took it back, whose reroute it follows.
#[test]
fn a_node_that_serves_rejoins_when_its_orchestrator_goes() {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let config = config(listener.local_addr().unwrap());
    let elsewhere = SocketAddr::from((Ipv4Addr::LOCALHOST, 9));
    std::thread::scope(|s| {
        let node = s.spawn(|| run_node(&config));
        let (control, transfer) = Control::assign(&listener, config.heartbeat, elsewhere);
        assert_eq!(control.beats(1), [1]);
        control.send(&Message::Fence {
            epoch: 2,
            failed: vec![1],
        });
        assert_eq!(control.beats(2).last(), Some(&2));
        control.0.shutdown(Shutdown::Both).unwrap();
        let (control, join) = Control::accept(&listener, RUN + 1, config.heartbeat);
        let Message::Join {
            position: 0,
            data,
            transfer: again,
            serving: Some(serving),
            ..
        } = join
        else {
            panic!("not a rejoin: {join:?}");
        };
        assert_eq!((serving.epoch, serving.routed, again), (2, 1, transfer));
        let Message::Heartbeat { run, epoch: 2, .. } = control.recv() else {
            panic!("no heartbeat after the rejoin");
        };
        assert_eq!(run, RUN + 1);
        let t = Duration::from_secs(2);
        let state = transfer::fetch(transfer, &key(), RUN + 1, 2, 0, true, t).unwrap();
        assert_eq!(GroupState::decode(&state).unwrap().middlebox, MbIndex(0));
        assert!(transfer::fetch(transfer, &key(), RUN, 2, 0, true, t).is_err());
        let peers = ch_2_peers((data, transfer), elsewhere);
        control.send(&Message::Reroute { epoch: 3, peers });
        let resumed = std::iter::from_fn(|| Some(control.recv()))
            .find(|m| !matches!(m, Message::Heartbeat { .. }))
            .unwrap();
        assert_eq!(
            resumed,
            Message::Resumed {
                run: RUN + 1,
                position: 0,
                epoch: 3
            }
        );
        control.send(&Message::Stop);
        node.join().unwrap().unwrap();
    });
}

/// Without its orchestrator, a node exits: one not serving yet (not assigned) at once, one told
/// not to wait (`headless_for` zero) at once, one that serves once nobody took it back in time.
#[test]
fn a_node_exits_without_its_orchestrator_unless_it_serves_and_waits() {
    let elsewhere = SocketAddr::from((Ipv4Addr::LOCALHOST, 9));
    for (assigned, wait) in [(false, 10_000), (true, 0), (true, 300)] {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let mut config = config(listener.local_addr().unwrap());
        config.headless_for = Duration::from_millis(wait);
        let err = std::thread::scope(|s| {
            let node = s.spawn(|| run_node(&config));
            let control = match assigned {
                true => Control::assign(&listener, config.heartbeat, elsewhere).0,
                false => Control::accept(&listener, RUN, config.heartbeat).0,
            };
            if assigned {
                assert_eq!(control.beats(1), [1]);
            }
            drop(listener);
            control.0.shutdown(Shutdown::Both).unwrap();
            let start = Instant::now();
            let err = node.join().unwrap().unwrap_err();
            (err, start.elapsed())
        });
        match (assigned, wait) {
            (true, 300) => {
                assert!(matches!(err.0, NodeError::Orphaned), "{}", err.0);
                assert!(err.1 >= Duration::from_millis(250), "{:?}", err.1);
            }
            _ => assert!(matches!(err.0, NodeError::OrchestratorGone), "{}", err.0),
        }
    }
}

/// A node started by hand says at once that nobody listens at the orchestrator's address; one
/// the orchestrator launched keeps trying, and reaches an orchestrator that listens there only
/// a moment later (a replacement behind a link that comes back).
#[test]
fn a_launched_node_keeps_trying_to_reach_the_orchestrator() {
    let addr = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap();
    let err = connect(addr, false).unwrap_err();
    assert!(matches!(err, NodeError::Unreachable { .. }), "{err}");
    let late = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        let listener = TcpListener::bind(addr).unwrap();
        listener.accept().map(drop)
    });
    connect(addr, true).unwrap();
    late.join().unwrap().unwrap();
}
