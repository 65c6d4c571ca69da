//! How fast one group's state moves at recovery, step by step, for a store of N entries
//! (a NAT-like flow table: 13-byte keys, 16-byte values): export, encode, authenticated TCP
//! transfer over loopback, decode, restore. `cargo run --release --example transfer_rate [N]`.

use std::net::TcpListener;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use ftc_chain::ring::MbIndex;
use ftc_orchestrator::control::Key;
use ftc_orchestrator::transfer;
use ftc_replica::GroupState;
use ftc_stm::Store;

fn main() {
    let n: u32 = std::env::args()
        .nth(1)
        .map_or(100_000, |a| a.parse().expect("a count"));
    let store = Store::new(64, 1).expect("valid");
    {
        let mut w = store.worker(0).expect("free");
        for i in 0..n {
            let mut key = [7u8; 13];
            key[..4].copy_from_slice(&i.to_be_bytes());
            let _ = w.run(|tx| tx.write(&key, &[i as u8; 16]));
        }
    }
    let key = Key::new(b"bench").expect("non-empty");
    let t = Instant::now();
    let snapshot = store.export();
    let export = t.elapsed();
    let t = Instant::now();
    let state = GroupState {
        middlebox: MbIndex(0),
        snapshot,
        retained: Vec::new(),
    };
    let bytes = state.encode().expect("encodes");
    let encode = t.elapsed();
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let stop = AtomicBool::new(false);
    let (fetch, got) = std::thread::scope(|s| {
        s.spawn(|| transfer::serve(&listener, &key, &stop, |_, _| Some(bytes.clone()), |_| {}));
        let t = Instant::now();
        let got = transfer::fetch(addr, &key, 1, 0, false, Duration::from_secs(10)).expect("fetch");
        let fetch = t.elapsed();
        stop.store(true, std::sync::atomic::Ordering::Release);
        (fetch, got)
    });
    let t = Instant::now();
    let state = GroupState::decode(&got).expect("decodes");
    let decode = t.elapsed();
    let t = Instant::now();
    let copy = Store::new(64, 1).expect("valid");
    copy.restore(&state.snapshot).expect("restores");
    let restore = t.elapsed();
    let mb = bytes.len() as f64 / 1e6;
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!("{n} entries, {mb:.2} MB: export {:.2} ms, encode {:.2} ms, TCP fetch (with clone, HMAC both ends) {:.2} ms ({:.0} MB/s), decode {:.2} ms, restore {:.2} ms; end to end {:.0} MB/s",
        ms(export), ms(encode), ms(fetch), mb / fetch.as_secs_f64(), ms(decode), ms(restore),
        mb / (export + encode + fetch + decode + restore).as_secs_f64());
}
