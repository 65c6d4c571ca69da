//! How fast one group's state moves at recovery, step by step, for a store of N entries
//! (a NAT-like flow table: 13-byte keys, 16-byte values): export, encode, authenticated TCP
//! transfer over loopback, decode, restore; then all of them as a recovery runs them, timed as one
//! (end to end): from the state in the source's store to the state restored in the destination's
//! store, connection and authentication included. Each is run `ROUNDS` times and its fastest run
//! reported, so that a busy machine's hiccups do not count.
//! `cargo run --release -p ftc-orchestrator --example transfer_rate [N] [ROUNDS]`.

use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
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

/// The fastest of `rounds` runs of `f`, which times itself (to leave out dropping what the
/// round before it built).
fn fastest_timed(rounds: u32, mut f: impl FnMut() -> Duration) -> Duration {
    (0..rounds).map(|_| f()).min().expect("at least one round")
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
    let (encode, _) = fastest(rounds, || {
        GroupState {
            middlebox: MbIndex(0),
            snapshot: snapshot.clone(),
            retained: Vec::new(),
        }
        .encode()
        .expect("encodes")
    });
    // What a source does: the group state's bytes written straight from the store's tables.
    let (export_encode, bytes) = fastest(rounds, || {
        GroupState::encode_store(MbIndex(0), &store, &[]).expect("encodes")
    });
    let bytes = Arc::new(bytes);
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let stop = AtomicBool::new(false);
    let timeout = Duration::from_secs(10);
    let (fetch, got, end_to_end) = std::thread::scope(|s| {
        // Group 0 is served from bytes encoded beforehand (shared, not copied), to time the
        // transfer alone; group 1 is exported from the store when it is asked for, as a source
        // does at recovery.
        s.spawn(|| {
            transfer::serve(
                &listener,
                &key,
                &AtomicU64::new(1),
                &stop,
                |_, _, group| match group.0 {
                    0 => Some(Served::Kept(Arc::clone(&bytes))),
                    _ => GroupState::encode_store(MbIndex(0), &store, &[])
                        .ok()
                        .map(Served::Fresh),
                },
                |_| {},
            )
        });
        let (fetch, got) = fastest(rounds, || {
            transfer::fetch(addr, &key, 1, 1, 0, false, timeout).expect("fetch")
        });
        // From the state in the source's store to the state in the destination's store, a new
        // one as a replacement's is (the last round's is dropped outside the timing).
        let mut copy = None;
        let end_to_end = fastest_timed(rounds, || {
            drop(copy.take());
            let start = Instant::now();
            let got = transfer::fetch(addr, &key, 1, 1, 1, false, timeout).expect("fetch");
            let state = GroupState::decode(&got).expect("decodes");
            let dest = Store::new(64, 1).expect("valid");
            dest.restore(&state.snapshot).expect("restores");
            copy = Some(dest);
            start.elapsed()
        });
        stop.store(true, Ordering::Release);
        let copy = copy.expect("at least one round");
        assert_eq!(copy.to_map(), store.to_map());
        (fetch, got, end_to_end)
    });
    assert_eq!(got, *bytes);
    let (decode, state) = fastest(rounds, || GroupState::decode(&got).expect("decodes"));
    let mut copy = None;
    let restore = fastest_timed(rounds, || {
        drop(copy.take());
        let start = Instant::now();
        let dest = Store::new(64, 1).expect("valid");
        dest.restore(&state.snapshot).expect("restores");
        copy = Some(dest);
        start.elapsed()
    });
    let copy = copy.expect("at least one round");
    assert_eq!(copy.to_map(), store.to_map());
    let mb = bytes.len() as f64 / 1e6;
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let steps = export_encode + fetch + decode + restore;
    println!(
        "{n} entries, {mb:.2} MB, fastest of {rounds}: export {:.2} ms, encode {:.2} ms \
         (export and encode in one: {:.2} ms), TCP fetch (connect, authenticated both ends) \
         {:.2} ms ({:.0} MB/s), decode {:.2} ms, restore {:.2} ms; steps {:.2} ms ({:.0} MB/s); \
         end to end (connect, export, encode, transfer, decode, restore) {:.2} ms, {:.0} MB/s",
        ms(export),
        ms(encode),
        ms(export_encode),
        ms(fetch),
        mb / fetch.as_secs_f64(),
        ms(decode),
        ms(restore),
        ms(steps),
        mb / steps.as_secs_f64(),
        ms(end_to_end),
        mb / end_to_end.as_secs_f64()
    );
}

/// What the source serves: bytes it keeps, or bytes it exported for this fetch.
enum Served {
    Kept(Arc<Vec<u8>>),
    Fresh(Vec<u8>),
}

impl AsRef<[u8]> for Served {
    fn as_ref(&self) -> &[u8] {
        match self {
            Served::Kept(b) => b,
            Served::Fresh(b) => b,
        }
    }
}
