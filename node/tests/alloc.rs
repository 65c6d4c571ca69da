//! The in-process runtime's data path allocates per batch, not per packet: a customer packet's
//! bytes and its message travel the chain in buffers that come back to where they are written
//! (the generator, the forwarder's server) instead of being freed on one thread and allocated
//! again on another. Counted with a counting allocator, in both modes. Frames read off a link
//! go into buffers of frames that left, none allocated.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use ftc_chain::middlebox::Direction;
use ftc_chain::ring::ServerId;
use ftc_node::runtime::{run_chain, RunConfig};
use ftc_node::server::empty_message;
use ftc_node::udp::{Datagram, UdpTransport};
use ftc_node::{Frame, Heads, Mode, Output, Packet, ServerConfig};

mod support;
use support::{assert_all_released, spec};

/// The system allocator, counting allocations of at least [`BIG`] bytes (what a packet or a
/// message buffer takes; small bookkeeping is not counted).
struct Counting;

/// Allocations of the whole process: a chain's threads.
static BIG_ALLOCS: AtomicU64 = AtomicU64::new(0);
const BIG: usize = 256;

thread_local! {
    /// Allocations of this thread alone: the test harness allocates on its own threads while a
    /// test of one thread counts (it formats the result of the test before).
    static MINE: Cell<u64> = const { Cell::new(0) };
}

fn count() {
    BIG_ALLOCS.fetch_add(1, Ordering::Relaxed);
    // A thread being torn down has no counter left; nothing of a test runs then.
    let _ = MINE.try_with(|mine| mine.set(mine.get() + 1));
}

/// What this thread has allocated so far.
fn mine() -> u64 {
    MINE.with(Cell::get)
}

// SAFETY: every call goes to the system allocator unchanged; the counter has no effect on it.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() >= BIG {
            count();
        }
        // SAFETY: the caller's contract is the system allocator's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `alloc` above, that is from the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size >= BIG {
            count();
        }
        // SAFETY: as for `alloc` and `dealloc`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Held by each test while it counts: the counter is the process's.
static COUNTING: Mutex<()> = Mutex::new(());

#[test]
fn packets_and_messages_are_not_allocated_per_packet() {
    let _counting = COUNTING.lock().unwrap_or_else(|e| e.into_inner());
    for name in ["ch-3.toml", "ch-rec.toml"] {
        for mode in [Mode::Ftc, Mode::Nf] {
            let config = RunConfig {
                mode,
                duration: Duration::from_secs(30),
                packets: Some(100_000),
                ..RunConfig::default()
            };
            let spec = spec(name);
            let before = BIG_ALLOCS.load(Ordering::Relaxed);
            let r = run_chain(&spec, &config);
            let allocs = BIG_ALLOCS.load(Ordering::Relaxed) - before;
            assert_all_released(&r, &format!("{name} in {mode:?}"));
            let per_packet = allocs as f64 / r.packets_released as f64;
            eprintln!(
                "{name} {mode:?}: {allocs} allocations of {BIG} bytes or more for {} packets",
                r.packets_released
            );
            assert!(
                per_packet < 0.5,
                "{name} in {mode:?}: {allocs} allocations of {BIG} bytes or more for {} packets",
                r.packets_released
            );
        }
    }
}

/// A node reads frames off a link into the buffers of frames it sent or released, given back
/// to the transport's reads: once it has some, a steady flow of frames allocates none.
#[test]
fn frames_off_a_link_are_read_into_spare_buffers() {
    let _counting = COUNTING.lock().unwrap_or_else(|e| e.into_inner());
    let any = "127.0.0.1:0".parse().unwrap();
    let mut a = UdpTransport::bind(any, Vec::new(), 1, 1).unwrap();
    let mut b = UdpTransport::bind(any, Vec::new(), 1, 1).unwrap();
    let peers = vec![a.local_addr().unwrap(), b.local_addr().unwrap()];
    a.set_peers(peers.clone());
    b.set_peers(peers);
    let mut msg = empty_message();
    msg.resize(400, 0);
    let frame = Frame {
        packet: Some(Packet {
            handle: (),
            flow: 0,
            dir: Direction::Outbound,
            bytes: vec![0xab; 1514],
        }),
        flags: 0,
        msg,
    };
    let mut spare = Vec::new();
    let mut cross = |count: u64| {
        for _ in 0..count {
            a.send(ServerId(1), 1, &frame).unwrap();
            match b.recv(Some(Duration::from_secs(5)), &mut spare).unwrap() {
                Some(Datagram::Frame { received, .. }) => {
                    let got = received.frame;
                    assert_eq!(got.msg, frame.msg);
                    // Sent on: its buffers back for the next reads.
                    spare.extend(got.packet.map(|p| p.bytes));
                    spare.push(got.msg);
                }
                other => panic!("expected a frame, got {other:?}"),
            }
        }
    };
    cross(10);
    let before = mine();
    cross(1000);
    let allocs = mine() - before;
    assert_eq!(
        allocs, 0,
        "allocations of {BIG} bytes or more for 1000 frames"
    );
}

/// The forwarder's server writes a message per customer packet. Given back the messages of the
/// frames it sent (as a node of its own process does, whose consumed messages are few), it
/// writes the next ones into them: a steady flow allocates none.
#[test]
fn the_forwarders_server_writes_messages_into_those_it_sent() {
    let _counting = COUNTING.lock().unwrap_or_else(|e| e.into_inner());
    let spec = spec("ch-rec.toml");
    let ring = spec.ring();
    let heads = Heads::new(&spec, |m| m.threads).unwrap();
    let me = ServerId(0);
    let lanes = heads.head_lanes(&ring, me, 0);
    let config = ServerConfig::default();
    let mut server = ftc_node::lanes::lanes::<u64>(ring, me, spec.chain.partitions, lanes, &config)
        .unwrap()
        .remove(0);
    // The customer frames' buffers come back with the frames sent, as the node's do.
    let request = ftc_node::traffic::request(1, 0, 256);
    let mut bytes: Vec<Vec<u8>> = Vec::new();
    let mut send = |server: &mut ftc_node::Server<'_, u64>, seq: u32, give_back: bool| {
        let mut frame = bytes.pop().unwrap_or_default();
        frame.clear();
        frame.extend_from_slice(&request);
        let packet = Packet {
            handle: u64::from(seq),
            flow: ftc_node::nsh::flow_of(&frame),
            dir: Direction::Outbound,
            bytes: frame,
        };
        let inside = ftc_forwarder::Port::Inside;
        assert!(server
            .handle_ingress(u64::from(seq), packet, inside)
            .is_ok());
        server.end_batch(u64::from(seq));
        while let Some(output) = server.poll_output() {
            if let Output::Send { frame, .. } = output {
                bytes.extend(frame.packet.map(|p| p.bytes));
                if give_back {
                    let _ = server.give_back(frame.msg);
                }
            }
        }
    };
    for seq in 0..100 {
        send(&mut server, seq, true);
    }
    let before = mine();
    for seq in 100..1100 {
        send(&mut server, seq, true);
    }
    let given_back = mine() - before;
    for seq in 1100..2100 {
        send(&mut server, seq, false);
    }
    let dropped = mine() - before - given_back;
    assert!(
        dropped >= 900,
        "not the path under test: {dropped} allocations without"
    );
    assert!(given_back < 50, "{given_back} allocations for 1000 packets");
}
