//! How fast one group's state moves at recovery, step by step, for a store of N entries
//! (a NAT-like flow table: 13-byte keys, 16-byte values): export, encode, authenticated TCP
//! transfer over loopback, decode, restore. Each step is run `ROUNDS` times and its fastest run
//! reported, so that a busy machine's hiccups do not count.
//! `cargo run --release -p ftc-orchestrator --example transfer_rate [N] [ROUNDS]`.

use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ftc_chain::ring::MbIndex;
use ftc_orchestrator::control::Key;
use ftc_orchestrator::transfer;
use ftc_replica::GroupState;
use ftc_stm::Store;

/// The fastest of `rounds` runs of `f`, and its last result.
fn fastest<T>(rounds: u32, mut f: impl FnMut() -> T) -> (Duration, T) {
    let mut best = Duration::MAX;
    let mut last = None;
    for _ in 0..rounds {
        let t = Instant::now();
        let out = f();
        best = best.min(t.elapsed());
        last = Some(out);
    }
    (best, last.expect("at least one round"))
}

fn main() {
    let mut args = std::env::args().skip(1);
    let n: u32 = args.next().map_or(100_000, |a| a.parse().expect("a count"));
    let rounds: u32 = args.next().map_or(5, |a| a.parse().expect("a count"));
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
    let (export, snapshot) = fastest(rounds, || store.export_bytes().expect("items fit"));
    let (encode, bytes) = fastest(rounds, || {
        GroupState {
            middlebox: MbIndex(0),
            snapshot: snapshot.clone(),
            retained: Vec::new(),
        }
        .encode()
        .expect("encodes")
    });
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let stop = AtomicBool::new(false);
    let (fetch, got) = std::thread::scope(|s| {
        s.spawn(|| transfer::serve(&listener, &key, &stop, |_, _| Some(bytes.clone()), |_| {}));
        let fetched = fastest(rounds, || {
            transfer::fetch(addr, &key, 1, 0, false, Duration::from_secs(10)).expect("fetch")
        });
        stop.store(true, Ordering::Release);
        fetched
    });
    let (decode, state) = fastest(rounds, || GroupState::decode(&got).expect("decodes"));
    let copy = Store::new(64, 1).expect("valid");
    let (restore, ()) = fastest(rounds, || copy.restore(&state.snapshot).expect("restores"));
    assert_eq!(copy.len(), n as usize);
    let mb = bytes.len() as f64 / 1e6;
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let total = export + encode + fetch + decode + restore;
    println!(
        "{n} entries, {mb:.2} MB, fastest of {rounds}: export {:.2} ms, encode {:.2} ms, \
         TCP fetch (connect, clone at the source, HMAC both ends) {:.2} ms ({:.0} MB/s), \
         decode {:.2} ms, restore {:.2} ms; all {:.2} ms, end to end {:.0} MB/s",
        ms(export),
        ms(encode),
        ms(fetch),
        mb / fetch.as_secs_f64(),
        ms(decode),
        ms(restore),
        ms(total),
        mb / total.as_secs_f64()
    );
}
