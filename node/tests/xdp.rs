//! The AF_XDP port on a veth pair in a network namespace of its own (root only: skipped with a
//! message otherwise): real Ethernet frames cross intact and in order both ways, many more than
//! the rings hold (so UMEM frames are recycled), the fd wakes a `poll`, oversized frames are
//! refused and counted, opening fails clearly (missing interface, bad sizes, a busy queue,
//! missing privileges, an interface that takes no XDP program), and a port waiting for a busy
//! queue binds once it is free. The raw packet socket (AF_PACKET) edge's port on such a pair too.

use std::time::Duration;

use ftc_chain::middlebox::Direction;
use ftc_chain::ring::ServerId;
use ftc_node::links::XdpLinks;
use ftc_node::netns::{namespaces_denied, Netns};
use ftc_node::packet::{PacketPort, MAX_FRAME};
use ftc_node::server::empty_message;
use ftc_node::xdp::{SendError, XdpConfig, XdpError, XdpPort, RELEASE_WAIT};
use ftc_node::{Frame, Packet};

/// IEEE 802 local experimental EtherType: frames of the test, told apart from anything else.
const ETHERTYPE: [u8; 2] = [0x88, 0xb5];

fn skip(test: &str) -> bool {
    let Some(why) = namespaces_denied() else {
        return false;
    };
    eprintln!("skipping {test}: AF_XDP on veth pairs in a network namespace: {why}");
    true
}

/// A network namespace of the test's own with a veth pair `a`–`b` in it; `None` (the test
/// skipped, with a message) without root.
fn veth_pair(test: &str, a: &str, b: &str) -> Option<Netns> {
    if skip(test) {
        return None;
    }
    let ns = Netns::create("ftcx").unwrap();
    ns.veth(a, b).unwrap();
    Some(ns)
}

/// A ring of two servers in a network namespace of the test's own, its veths of `queues`
/// queues: server 0's link to server 1 is `to1`–`from0`, server 1's to server 0 `to0`–`from1`;
/// `None` (the test skipped, with a message) without root.
fn ring_of_two(test: &str, queues: u32) -> Option<Netns> {
    if skip(test) {
        return None;
    }
    let ns = Netns::create("ftcx").unwrap();
    ns.veth_queues("to1", "from0", queues).unwrap();
    ns.veth_queues("to0", "from1", queues).unwrap();
    Some(ns)
}

/// Server `me`'s ring links on a [`ring_of_two`] (opened inside its namespace), `queues` of
/// each bound: the other server is its successor and its predecessor, its link to it first
/// (frames to it leave there), then the one from it.
fn ring_links(me: u16, queues: u32) -> XdpLinks {
    let other = ServerId(1 - me);
    let (next, prev) = match me {
        0 => ("to1", "from1"),
        _ => ("to0", "from0"),
    };
    XdpLinks::open(&[(other, next), (other, prev)], small(), queues, 7, 3).unwrap()
}

/// A frame carrying customer packet `bytes` (outbound, of `flow`) and an empty message.
fn data_frame(flow: u64, bytes: Vec<u8>) -> Frame<()> {
    Frame {
        packet: Some(Packet {
            handle: (),
            flow,
            dir: Direction::Outbound,
            bytes,
        }),
        flags: 0,
        msg: empty_message(),
    }
}

/// Small rings: a thousand frames go round them many times.
fn small() -> XdpConfig {
    XdpConfig {
        rx_frames: 64,
        tx_frames: 64,
        ..XdpConfig::default()
    }
}

/// Frame `i` of `len` bytes: broadcast, the test's EtherType, `i`, then a pattern of `i`.
fn frame(i: u32, len: usize) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x01]);
    f.extend_from_slice(&ETHERTYPE);
    f.extend_from_slice(&i.to_be_bytes());
    f.extend((0..len.saturating_sub(f.len())).map(|k| (k as u32 ^ i) as u8));
    f
}

/// Send `count` frames of varied lengths from `a` to `b`, a window at a time, and check that
/// `b` receives each intact, in order.
fn cross(a: &mut XdpPort, b: &mut XdpPort, count: u32) {
    const WINDOW: u32 = 32;
    let mut next = 0;
    let mut sent = 0;
    while next < count {
        while sent < count && sent < next + WINDOW {
            let len = 60 + (sent as usize * 37) % 1455;
            a.send(&frame(sent, len)).expect("a free transmit frame");
            sent += 1;
        }
        a.flush().unwrap();
        while next < sent {
            assert!(
                b.wait(Duration::from_secs(5)).unwrap(),
                "frame {next} of {count} did not arrive on {}",
                b.iface()
            );
            b.recv_batch(|bytes| {
                if bytes.get(12..14) != Some(&ETHERTYPE[..]) {
                    return;
                }
                let len = 60 + (next as usize * 37) % 1455;
                assert_eq!(bytes, &frame(next, len)[..], "frame {next} arrived changed");
                next += 1;
            })
            .unwrap();
        }
    }
}

#[test]
fn frames_cross_a_veth_pair_both_ways_and_umem_frames_are_recycled() {
    let Some(ns) = veth_pair(
        "frames_cross_a_veth_pair_both_ways_and_umem_frames_are_recycled",
        "xa",
        "xb",
    ) else {
        return;
    };
    ns.run(|| {
        let mut a = XdpPort::open("xa", small()).unwrap();
        let mut b = XdpPort::open("xb", small()).unwrap();
        cross(&mut a, &mut b, 1000);
        cross(&mut b, &mut a, 1000);
        for port in [&a, &b] {
            let stats = port.stats();
            assert!(stats.rx >= 1000 && stats.tx == 1000, "{stats:?}");
            assert_eq!((stats.tx_full, stats.tx_too_large), (0, 0), "{stats:?}");
        }
    })
    .unwrap();
}

/// Frame `i` of `len` bytes as [`frame`] makes it, behind a VLAN tag of EtherType `tpid`
/// (802.1Q's or 802.1ad's).
fn tagged(i: u32, len: usize, tpid: [u8; 2]) -> Vec<u8> {
    let mut f = frame(i, len - 4);
    f.splice(12..12, [tpid[0], tpid[1], 0, 7]);
    f
}

/// Frames longer than the MTU and the Ethernet header allow are refused and counted; a
/// VLAN-tagged frame may be a tag's 4 bytes longer (the MTU does not count the tag), and one
/// of that length crosses the veth whole.
#[test]
fn oversized_frames_are_refused_and_counted() {
    let Some(ns) = veth_pair("oversized_frames_are_refused_and_counted", "xa", "xb") else {
        return;
    };
    ns.run(|| {
        let mut a = XdpPort::open("xa", small()).unwrap();
        let mut b = XdpPort::open("xb", small()).unwrap();
        let max = a.max_frame();
        assert_eq!(max, 1500 + 14, "a veth's MTU and its Ethernet header");
        assert_eq!(
            a.send(&vec![0; max + 1]),
            Err(SendError::TooLarge { len: max + 1, max })
        );
        let (q, ad) = ([0x81, 0x00], [0x88, 0xa8]);
        for tpid in [q, ad] {
            let len = max + 4 + 1;
            assert_eq!(
                a.send(&tagged(0, len, tpid)),
                Err(SendError::TooLarge { len, max: max + 4 })
            );
        }
        assert_eq!((a.stats().tx_too_large, a.stats().tx), (3, 0));
        let full = [tagged(1, 1518, q), tagged(2, 1518, ad)];
        for f in &full {
            a.send(f).unwrap();
        }
        a.flush().unwrap();
        let mut got = Vec::new();
        while got.len() < full.len() && b.wait(Duration::from_secs(5)).unwrap() {
            b.recv_batch(|bytes| got.push(bytes.to_vec())).unwrap();
        }
        assert_eq!(got, full, "full-size tagged frames cross whole");
        assert_eq!((a.stats().tx_too_large, a.stats().tx), (3, 2));
    })
    .unwrap();
}

/// A port's longest frame is its interface's MTU plus the Ethernet header, the MTU of the
/// interface in the namespace the opening thread entered (not the process's, which sysfs shows),
/// and what a UMEM frame holds (4096 bytes less the kernel's 256 of XDP headroom) where the MTU
/// allows more.
#[test]
fn the_longest_frame_follows_the_mtu_in_the_threads_namespace() {
    let Some(ns) = veth_pair(
        "the_longest_frame_follows_the_mtu_in_the_threads_namespace",
        "xa",
        "xb",
    ) else {
        return;
    };
    ns.ip(&["link", "set", "xb", "mtu", "3000"]).unwrap();
    let (a, b) = ns
        .run(|| {
            let a = XdpPort::open("xa", small()).unwrap().max_frame();
            let b = XdpPort::open("xb", small()).unwrap().max_frame();
            (a, b)
        })
        .unwrap();
    assert_eq!((a, b), (1500 + 14, 3000 + 14));
    ns.veth("xc", "xd").unwrap();
    ns.ip(&["link", "set", "xc", "mtu", "9000"]).unwrap();
    let c = ns.run(|| {
        let mut c = XdpPort::open("xc", small()).unwrap();
        let max = c.max_frame();
        // A tagged frame may be no longer either.
        let err = c.send(&tagged(0, max + 1, [0x81, 0x00]));
        (max, err)
    });
    let (max, err) = c.unwrap();
    assert_eq!(max, 4096 - 256, "what a UMEM frame holds");
    assert_eq!(err, Err(SendError::TooLarge { len: max + 1, max }));
}

#[test]
fn a_busy_queue_is_refused_clearly() {
    let Some(ns) = veth_pair("a_busy_queue_is_refused_clearly", "xa", "xb") else {
        return;
    };
    ns.run(|| {
        let _a = XdpPort::open("xa", small()).unwrap();
        let err = XdpPort::open("xa", small()).unwrap_err();
        assert!(matches!(err, XdpError::Busy { queue: 0, .. }), "{err}");
        assert!(err.to_string().contains("xa queue 0"), "{err}");
    })
    .unwrap();
}

/// A queue past the interface's is named with the count the driver gives in the thread's own
/// namespace (sysfs shows the process's, where no such interface is): the last queue of three
/// opens, the next is refused with the three.
#[test]
fn a_queue_the_interface_lacks_is_named_with_its_queues() {
    let test = "a_queue_the_interface_lacks_is_named_with_its_queues";
    if skip(test) {
        return;
    }
    let ns = Netns::create("ftcx").unwrap();
    ns.veth_queues("xa", "xb", 3).unwrap();
    let on = |queue| XdpConfig { queue, ..small() };
    ns.run(|| {
        XdpPort::open("xa", on(2)).unwrap();
        let err = XdpPort::open("xa", on(3)).unwrap_err();
        assert!(
            matches!(
                err,
                XdpError::NoQueue {
                    queue: 3,
                    queues: 3,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("has 3 queue(s)"), "{err}");
    })
    .unwrap();
}

/// A replacement's port waits for the queue a killed process's socket still holds: its UMEM is
/// made once and only the socket is tried again, and once the holder lets go, the port it ends
/// with carries frames both ways (the fill and completion rings survived the refusals).
#[test]
fn a_port_waiting_for_its_queue_binds_once_it_is_free_and_carries_frames() {
    let Some(ns) = veth_pair(
        "a_port_waiting_for_its_queue_binds_once_it_is_free_and_carries_frames",
        "xa",
        "xb",
    ) else {
        return;
    };
    ns.run(|| {
        let held = XdpPort::open("xa", small()).unwrap();
        let (mut a, mut b) = std::thread::scope(|s| {
            let waiting = s.spawn(|| XdpPort::open_when_free("xa", small(), RELEASE_WAIT));
            std::thread::sleep(Duration::from_millis(50));
            assert!(!waiting.is_finished(), "a port bound a queue another holds");
            drop(held);
            let a = waiting.join().unwrap().expect("the queue is free now");
            (a, XdpPort::open("xb", small()).unwrap())
        });
        cross(&mut a, &mut b, 300);
        cross(&mut b, &mut a, 300);
    })
    .unwrap();
}

#[test]
fn a_missing_interface_and_bad_sizes_fail_clearly() {
    // None needs root: each is refused before any socket is opened.
    let err = XdpPort::open("ftcx-nosuch0", XdpConfig::default()).unwrap_err();
    assert!(matches!(err, XdpError::NoInterface(ref n) if n == "ftcx-nosuch0"));
    assert!(
        err.to_string()
            .contains("no network interface named \"ftcx-nosuch0\""),
        "{err}"
    );
    let odd = XdpConfig {
        rx_frames: 100,
        ..XdpConfig::default()
    };
    let err = XdpPort::open("lo", odd).unwrap_err();
    assert!(matches!(err, XdpError::Config(_)), "{err}");
    // Powers of two whose sum overflows a u32 (the UMEM's frame count).
    let huge = XdpConfig {
        rx_frames: 1 << 31,
        tx_frames: 1 << 31,
        ..XdpConfig::default()
    };
    let err = XdpPort::open("lo", huge).unwrap_err();
    assert!(matches!(err, XdpError::Config(_)), "{err}");
}

/// Linux capabilities are per thread: a thread of root's that drops them all is refused as an
/// unprivileged process would be, naming what it lacks.
#[test]
fn lacking_privileges_are_named() {
    let Some(ns) = veth_pair("lacking_privileges_are_named", "xa", "xb") else {
        return;
    };
    ns.run(|| {
        keep_capabilities(|_| false);
        let err = XdpPort::open("xa", small()).unwrap_err();
        assert!(matches!(err, XdpError::Privileges { .. }), "{err}");
        assert!(
            err.to_string().ends_with(
                "needs root, or CAP_NET_ADMIN, CAP_NET_RAW and CAP_SYS_ADMIN (CAP_BPF is not \
                 enough: libxdp looks its XDP program up by id); this thread lacks \
                 CAP_NET_ADMIN, CAP_NET_RAW, CAP_SYS_ADMIN"
            ),
            "{err}"
        );
    })
    .unwrap();
}

/// CAP_NET_ADMIN, CAP_NET_RAW and CAP_BPF, the set once documented, are not enough (libxdp
/// looks its program up by id, which takes CAP_SYS_ADMIN): a thread with just those is refused
/// before anything is made, naming CAP_SYS_ADMIN, and does not retry. With CAP_SYS_ADMIN in
/// CAP_BPF's place, a port opens.
#[test]
fn the_capabilities_a_port_takes_are_checked_first() {
    let test = "the_capabilities_a_port_takes_are_checked_first";
    let Some(ns) = veth_pair(test, "xa", "xb") else {
        return;
    };
    let (net_admin, net_raw, sys_admin, bpf) = (12, 13, 21, 39);
    ns.run(|| {
        keep_capabilities(|c| [net_admin, net_raw, bpf].contains(&c));
        let started = std::time::Instant::now();
        let err = XdpPort::open_when_free("xa", small(), RELEASE_WAIT).unwrap_err();
        assert!(
            matches!(err, XdpError::Privileges { ref missing, .. } if missing == &["CAP_SYS_ADMIN"]),
            "{err:?}"
        );
        assert!(err.to_string().ends_with("this thread lacks CAP_SYS_ADMIN"), "{err}");
        assert!(started.elapsed() < RELEASE_WAIT / 5, "refused at once, not retried");
    })
    .unwrap();
    // And CAP_IPC_LOCK, which is not a privilege AF_XDP needs: without it the UMEM would count
    // against the locked-memory limit, which a_umem_past_the_locked_memory_limit_is_named
    // lowers meanwhile.
    let ipc_lock = 14;
    ns.run(|| {
        keep_capabilities(|c| [net_admin, net_raw, sys_admin, ipc_lock].contains(&c));
        XdpPort::open("xa", small()).unwrap();
    })
    .unwrap();
}

/// A thread without CAP_IPC_LOCK locks its ports' UMEMs within RLIMIT_MEMLOCK (the process's,
/// 8 MiB here for the test and restored after): of two ports of 8 MiB, the second at least is
/// refused, naming the limit (the first fits unless another process's threads without
/// CAP_IPC_LOCK hold some of root's locked memory: it is counted by user).
#[test]
fn a_umem_past_the_locked_memory_limit_is_named() {
    let test = "a_umem_past_the_locked_memory_limit_is_named";
    let Some(ns) = veth_pair(test, "xa", "xb") else {
        return;
    };
    let _limit = MemlockLimit::set(8 << 20);
    ns.run(|| {
        let ipc_lock = 14;
        keep_capabilities(|c| c != ipc_lock);
        let ports = ["xa", "xb"].map(|iface| XdpPort::open(iface, XdpConfig::default()));
        assert!(ports[1].is_err(), "two UMEMs of 8 MiB within 8 MiB");
        for err in ports.iter().filter_map(|p| p.as_ref().err()) {
            assert!(
                matches!(err, XdpError::Memlock { bytes, .. } if *bytes == 8 << 20),
                "{err:?}"
            );
            let text = err.to_string();
            assert!(text.contains("RLIMIT_MEMLOCK"), "{text}");
            assert!(text.contains("CAP_IPC_LOCK"), "{text}");
        }
    })
    .unwrap();
}

/// The process's RLIMIT_MEMLOCK set for a test, and restored when dropped.
struct MemlockLimit(libc::rlimit);

impl MemlockLimit {
    fn set(bytes: u64) -> MemlockLimit {
        let mut old = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes into `old`, which outlives the call.
        let got = unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut old) };
        assert_eq!(got, 0);
        let new = libc::rlimit {
            rlim_cur: bytes,
            rlim_max: old.rlim_max,
        };
        // SAFETY: setrlimit reads `new`, which outlives the call.
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &new) }, 0);
        MemlockLimit(old)
    }
}

impl Drop for MemlockLimit {
    fn drop(&mut self) {
        // SAFETY: setrlimit reads the saved limit, which outlives the call.
        unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &self.0) };
    }
}

/// Keep only those of the calling thread's capabilities (by their bits) that `keep` says,
/// effective and permitted (capget(2) and capset(2), version 3).
fn keep_capabilities(keep: impl Fn(u32) -> bool) {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    let mut header = Header {
        version: 0x2008_0522,
        pid: 0,
    };
    let mut sets = [Data::default(); 2];
    // SAFETY: a version-3 header and room for the two data structs version 3 writes; pid 0 is
    // this thread.
    let r = unsafe { libc::syscall(libc::SYS_capget, &mut header, sets.as_mut_ptr()) };
    assert_eq!(r, 0, "capget: {}", std::io::Error::last_os_error());
    for cap in (0..64).filter(|&c| !keep(c)) {
        let set = &mut sets[cap as usize / 32];
        set.effective &= !(1 << (cap % 32));
        set.permitted &= !(1 << (cap % 32));
    }
    // SAFETY: a version-3 header and the two data structs version 3 reads; pid 0 is this thread.
    let r = unsafe { libc::syscall(libc::SYS_capset, &header, sets.as_ptr()) };
    assert_eq!(r, 0, "capset: {}", std::io::Error::last_os_error());
}

/// A veth has no zero-copy support: asking for it fails, saying so.
#[test]
fn zero_copy_where_the_driver_lacks_it_is_refused_clearly() {
    let Some(ns) = veth_pair(
        "zero_copy_where_the_driver_lacks_it_is_refused_clearly",
        "xa",
        "xb",
    ) else {
        return;
    };
    ns.run(|| {
        let zero_copy = XdpConfig {
            zero_copy: true,
            ..small()
        };
        let err = XdpPort::open("xa", zero_copy).unwrap_err();
        assert!(matches!(err, XdpError::NoZeroCopy { .. }), "{err:?}");
        // The failed attempt left nothing behind: copy mode opens.
        XdpPort::open("xa", small()).unwrap();
    })
    .unwrap();
}

/// The AF_XDP ring transport ([`XdpLinks`]) on a ring of two servers, one veth pair per ring
/// link: a frame to the successor arrives with its sender named by the link it came on, a
/// frame back to the predecessor (a retransmission request) too, a frame of an older epoch is
/// dropped and counted (the recovery fence), and a server that is no neighbour is refused.
#[test]
fn frames_cross_the_ring_links_and_stale_epochs_are_fenced() {
    use ftc_node::links::LinkError;

    let test = "frames_cross_the_ring_links_and_stale_epochs_are_fenced";
    let Some(ns) = ring_of_two(test, 1) else {
        return;
    };
    ns.run(|| {
        let (mut s0, mut s1) = (ring_links(0, 1), ring_links(1, 1));
        let frame = data_frame(0, frame(1, 200));
        let receive = |links: &mut XdpLinks| {
            let mut got = Vec::new();
            for _ in 0..100 {
                links
                    .recv_batch(&mut Vec::new(), |from, r| got.push((from, r.frame)))
                    .unwrap();
                if !got.is_empty() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            got
        };
        s0.send(ServerId(1), 1, &frame).unwrap();
        s0.flush().unwrap();
        let got = receive(&mut s1);
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].0, ServerId(0));
        let packet = got[0].1.packet.as_ref().expect("a data frame");
        assert_eq!(packet.bytes, frame.packet.as_ref().unwrap().bytes);
        // Back to the predecessor, over the other link.
        s1.send(ServerId(0), 0, &frame).unwrap();
        s1.flush().unwrap();
        let got = receive(&mut s0);
        assert_eq!(got.iter().map(|g| g.0).collect::<Vec<_>>(), [ServerId(1)]);
        // After a recovery's fence the receiver drops frames of the old epoch.
        s1.set_epoch(4);
        s0.send(ServerId(1), 1, &frame).unwrap();
        s0.flush().unwrap();
        std::thread::sleep(Duration::from_millis(100));
        assert!(receive(&mut s1).is_empty());
        assert_eq!(s1.stats().stale_epoch, 1, "{:?}", s1.stats());
        assert!(matches!(
            s0.send(ServerId(5), 1, &frame),
            Err(LinkError::NotANeighbour(5))
        ));
    })
    .unwrap();
}

/// Frames that do not go out are counted, whatever stopped them: a message past the wire
/// format's bounds (a trailer over 65,535 bytes) that does not encode, and a frame that
/// encodes but is longer than the link carries.
#[test]
fn frames_the_ring_links_cannot_send_are_counted() {
    use ftc_node::links::LinkError;

    let Some(ns) = ring_of_two("frames_the_ring_links_cannot_send_are_counted", 1) else {
        return;
    };
    ns.run(|| {
        let mut s0 = ring_links(0, 1);
        // Untagged, as the links' frames are: the node's trailer budgets stay within it.
        assert_eq!(s0.max_frame(), 1500 + 14);
        let mut frame = data_frame(0, frame(1, 200));
        frame.msg = vec![0; 70_000];
        let err = s0.send(ServerId(1), 1, &frame).unwrap_err();
        assert!(matches!(err, LinkError::Encode(_)), "{err}");
        assert_eq!((s0.stats().not_sent, s0.stats().sent), (1, 0));
        frame.msg = vec![0; s0.max_frame()];
        let err = s0.send(ServerId(1), 1, &frame).unwrap_err();
        assert!(matches!(err, LinkError::Send { .. }), "{err}");
        assert_eq!((s0.stats().not_sent, s0.stats().sent), (2, 0));
    })
    .unwrap();
}

/// Ring links of two queues each, shared out between two lanes at each end
/// ([`XdpLinks::split`]): what a lane sends arrives at the lane of the same index at the other
/// end (a veth delivers a frame sent on queue q on queue q), so each lane reads only its own
/// sockets; links of fewer queues than lanes are given back whole.
#[test]
fn split_links_carry_each_lanes_frames_to_the_same_lane_at_the_other_end() {
    let test = "split_links_carry_each_lanes_frames_to_the_same_lane_at_the_other_end";
    let Some(ns) = ring_of_two(test, 2) else {
        return;
    };
    ns.run(|| {
        let one_queue = ring_links(0, 1);
        assert!(
            one_queue.split(2).is_err(),
            "one queue cannot serve two lanes"
        );
        let mut s0 = ring_links(0, 2).split(2).unwrap();
        let mut s1 = ring_links(1, 2).split(2).unwrap();
        assert_eq!((s0.len(), s1.len()), (2, 2));
        let frame = |i| data_frame(0, frame(i, 200));
        for (lane, links) in s0.iter_mut().enumerate() {
            for i in 0..10 {
                links
                    .send(ServerId(1), 1, &frame(100 * lane as u32 + i))
                    .unwrap();
            }
            links.flush().unwrap();
        }
        // Each lane of server 1 receives its peer lane's ten frames, in order, and no others.
        for (lane, links) in s1.iter_mut().enumerate() {
            let mut got = Vec::new();
            for _ in 0..100 {
                links
                    .recv_batch(&mut Vec::new(), |from, r| {
                        assert_eq!(from, ServerId(0));
                        got.push(r.frame.packet.unwrap().bytes);
                    })
                    .unwrap();
                if got.len() >= 10 {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let want: Vec<_> = (0..10).map(|i| frame(100 * lane as u32 + i)).collect();
            let want: Vec<_> = want.into_iter().map(|f| f.packet.unwrap().bytes).collect();
            assert_eq!(got, want, "lane {lane}");
        }
    })
    .unwrap();
}

/// A sender of one lane over links of two queues puts each packet on the queue its flow hashes
/// to, so at a receiver whose two lanes own a queue each, every packet reaches its flow's lane
/// ([`ftc_node::lanes::lane_of`]), in order; a frame without a packet takes the first queue.
#[test]
fn a_single_sender_puts_each_flow_on_the_queue_of_its_lane() {
    use ftc_node::lanes::lane_of;
    use ftc_node::nsh::flow_of;

    let test = "a_single_sender_puts_each_flow_on_the_queue_of_its_lane";
    let Some(ns) = ring_of_two(test, 2) else {
        return;
    };
    ns.run(|| {
        let mut sender = ring_links(0, 2);
        let mut lanes = ring_links(1, 2).split(2).unwrap();
        let tcp = |sport: u16| {
            let b = etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
                .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
                .tcp(sport, 80, 1, 1000);
            let mut bytes = Vec::new();
            b.write(&mut bytes, b"payload").unwrap();
            bytes
        };
        // Twenty flows, three packets each, interleaved.
        let packets: Vec<Vec<u8>> = (0..3)
            .flat_map(|_| (0..20).map(|f| tcp(40_000 + f)))
            .collect();
        for bytes in &packets {
            let frame = data_frame(flow_of(bytes), bytes.clone());
            sender.send(ServerId(1), 1, &frame).unwrap();
        }
        let propagating = Frame::<()> {
            packet: None,
            flags: 0,
            msg: empty_message(),
        };
        sender.send(ServerId(1), 1, &propagating).unwrap();
        sender.flush().unwrap();
        let mut got: Vec<Vec<Option<Vec<u8>>>> = vec![Vec::new(), Vec::new()];
        for _ in 0..100 {
            for (lane, links) in lanes.iter_mut().enumerate() {
                links
                    .recv_batch(&mut Vec::new(), |_, r| {
                        got[lane].push(r.frame.packet.map(|p| p.bytes))
                    })
                    .unwrap();
            }
            if got.iter().map(Vec::len).sum::<usize>() > packets.len() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(
            got[0].iter().filter(|p| p.is_none()).count(),
            1,
            "the propagating frame"
        );
        for (lane, frames) in got.iter().enumerate() {
            let want: Vec<&Vec<u8>> = packets
                .iter()
                .filter(|b| lane_of(flow_of(b), 2) == lane)
                .collect();
            let arrived: Vec<&Vec<u8>> = frames.iter().flatten().collect();
            assert_eq!(arrived, want, "lane {lane}");
        }
        assert!(!got[1].is_empty(), "some flow hashes to lane 1");
    })
    .unwrap();
}

/// A raw packet socket reads a frame longer than it takes ([`MAX_FRAME`], which an interface's
/// MTU may exceed) cut short: it drops and counts it instead of handing its first part on, and
/// takes the frames after it as usual.
#[test]
fn a_packet_socket_drops_and_counts_frames_longer_than_it_reads() {
    let test = "a_packet_socket_drops_and_counts_frames_longer_than_it_reads";
    let Some(ns) = veth_pair(test, "xa", "xb") else {
        return;
    };
    for end in ["xa", "xb"] {
        ns.ip(&["link", "set", end, "mtu", "16000"]).unwrap();
    }
    ns.run(|| {
        let mut a = PacketPort::open("xa", false).unwrap();
        let mut b = PacketPort::open("xb", true).unwrap();
        const { assert!(12000 > MAX_FRAME) };
        a.send(&frame(0, 12000)).unwrap();
        a.send(&frame(1, 100)).unwrap();
        let mut got = Vec::new();
        for _ in 0..100 {
            b.recv_batch(|bytes| {
                if bytes.get(12..14) == Some(&ETHERTYPE[..]) {
                    got.push(bytes.to_vec());
                }
            })
            .unwrap();
            if !got.is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(got, [frame(1, 100)], "only the frame that fits");
        assert_eq!(b.stats().rx_truncated, 1, "{:?}", b.stats());
    })
    .unwrap();
}

/// A raw packet socket takes the frames of its own interface only, from its first moment: while
/// another interface of the namespace carries frames all along, none of them is ever read by a
/// socket opened on a quiet one (a socket made listening to every interface before it is bound
/// to its own would queue some in between).
#[test]
fn a_packet_socket_never_reads_another_interface_s_frames() {
    let test = "a_packet_socket_never_reads_another_interface_s_frames";
    let Some(ns) = veth_pair(test, "xa", "xb") else {
        return;
    };
    ns.veth("ya", "yb").unwrap();
    ns.run(|| {
        let stop = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|s| {
            s.spawn(|| {
                let mut noisy = PacketPort::open("ya", false).unwrap();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let _ = noisy.send(&frame(7, 100));
                }
            });
            let mut leaked = 0;
            for _ in 0..200 {
                let mut quiet = PacketPort::open("xb", true).unwrap();
                quiet
                    .recv_batch(|bytes| {
                        leaked += u32::from(bytes.get(12..14) == Some(&ETHERTYPE[..]));
                    })
                    .unwrap();
            }
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            assert_eq!(leaked, 0, "frames of ya read by sockets on xb");
        });
    })
    .unwrap();
}

/// An interface whose driver takes no XDP program (a bridge: libxdp attaches in native mode)
/// is named as such, with the raw packet socket edges can take instead, not as a bare
/// "Operation not supported"; asking for zero-copy there still says zero-copy.
#[test]
fn an_interface_that_takes_no_xdp_program_is_named() {
    let test = "an_interface_that_takes_no_xdp_program_is_named";
    if skip(test) {
        return;
    }
    let ns = Netns::create("ftcx").unwrap();
    ns.ip(&["link", "add", "xbr", "type", "bridge"]).unwrap();
    ns.ip(&["link", "set", "xbr", "up"]).unwrap();
    ns.run(|| {
        // First: zero-copy is refused at the bind, which leaves the queue free.
        let zero_copy = XdpConfig {
            zero_copy: true,
            ..small()
        };
        let err = XdpPort::open("xbr", zero_copy).unwrap_err();
        assert!(matches!(err, XdpError::NoZeroCopy { .. }), "{err:?}");
        let err = XdpPort::open("xbr", small()).unwrap_err();
        assert!(
            matches!(err, XdpError::NoXdp { ref iface } if iface == "xbr"),
            "{err:?}"
        );
        let text = err.to_string();
        assert!(
            text.contains("driver does not take an XDP program"),
            "{text}"
        );
        assert!(text.contains("--edge-kind packet"), "{text}");
    })
    .unwrap();
}

/// The kernel's counters of the ring links' sockets, summed, show the frames the kernel dropped
/// on receive while the server did not read (its fill ring empty), which the links' own
/// counters cannot see; the node's summary prints them.
#[test]
fn the_kernel_s_drops_show_in_the_ring_links_stats() {
    let Some(ns) = ring_of_two("the_kernel_s_drops_show_in_the_ring_links_stats", 1) else {
        return;
    };
    ns.run(|| {
        let (mut s0, s1) = (ring_links(0, 1), ring_links(1, 1));
        for i in 0..200 {
            s0.send(ServerId(1), 1, &data_frame(0, frame(i, 100)))
                .unwrap();
            if i % 16 == 15 {
                s0.flush().unwrap();
            }
        }
        s0.flush().unwrap();
        std::thread::sleep(Duration::from_millis(100));
        let kernel = s1.kernel_stats();
        assert!(kernel.rx_dropped > 0, "{kernel:?}");
        assert!(kernel.rx_fill_ring_empty > 0, "{kernel:?}");
        assert_eq!(s1.stats().received, 0);
        assert_eq!(s0.kernel_stats().rx_dropped, 0, "{:?}", s0.kernel_stats());
    })
    .unwrap();
}
