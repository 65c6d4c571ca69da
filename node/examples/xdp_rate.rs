//! The AF_XDP port's packet rate on a veth pair in a network namespace of its own (copy mode;
//! root only): one thread sends `SIZE`-byte frames on one end as fast as the port takes them,
//! another receives them on the other end, for `SECONDS`. Prints frames offered, received and
//! dropped (by the kernel, for a full rx ring), and the receive rate.
//!
//! `cargo run --release -p ftc-node --example xdp_rate -- [SECONDS] [SIZE]` (defaults: 3, 256).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ftc_node::netns::{namespaces_denied, Netns};
use ftc_node::xdp::{SendError, XdpConfig, XdpPort};

fn main() {
    let mut args = std::env::args().skip(1);
    let seconds: f64 = args.next().map_or(3.0, |a| a.parse().expect("SECONDS"));
    let size: usize = args.next().map_or(256, |a| a.parse().expect("SIZE"));
    if let Some(why) = namespaces_denied() {
        eprintln!("xdp_rate: AF_XDP on a veth pair in a network namespace: {why}");
        std::process::exit(1);
    }
    let ns = Netns::create("ftcx-rate").expect("a network namespace");
    ns.veth("ra", "rb").expect("a veth pair");
    ns.run(|| {
        let mut a = XdpPort::open("ra", XdpConfig::default()).expect("port on ra");
        let mut b = XdpPort::open("rb", XdpConfig::default()).expect("port on rb");
        let mut frame = vec![0x5a; size];
        frame[..6].fill(0xff);
        frame[12..14].copy_from_slice(&[0x88, 0xb5]);
        let stop = AtomicBool::new(false);
        let (received, elapsed) = std::thread::scope(|s| {
            let sender = s.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    match a.send(&frame) {
                        Ok(()) => {}
                        Err(SendError::Full) => a.flush().expect("flush"),
                        Err(e) => panic!("{e}"),
                    }
                }
                a.flush().expect("flush");
                a.stats()
            });
            let start = Instant::now();
            let mut received = 0u64;
            while start.elapsed().as_secs_f64() < seconds {
                if b.wait(Duration::from_millis(100)).expect("poll") {
                    received += b.recv_batch(|_| {}).expect("recv") as u64;
                }
            }
            let elapsed = start.elapsed();
            stop.store(true, Ordering::Relaxed);
            let sent = sender.join().expect("the sender");
            println!(
                "offered {} frames ({} refused: no free frame)",
                sent.tx, sent.tx_full
            );
            (received, elapsed)
        });
        let kernel = b.kernel_stats().expect("kernel counters");
        println!(
            "received {received} frames of {size} bytes in {:.2} s: {:.3} Mpps, {:.2} Gbit/s",
            elapsed.as_secs_f64(),
            received as f64 / elapsed.as_secs_f64() / 1e6,
            (received * size as u64 * 8) as f64 / elapsed.as_secs_f64() / 1e9
        );
        println!(
            "dropped by the kernel: {} (rx ring full), {} (other)",
            kernel.rx_ring_full, kernel.rx_dropped
        );
    })
    .expect("entering the namespace");
}
