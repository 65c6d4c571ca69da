//! The benchmark message of `benches/wire.rs`, encoded and/or decoded a fixed number of times:
//! for counting instructions with `valgrind --tool=callgrind` (repeatable, unlike timings).
//!
//! `cargo build --release -p ftc-chain --example wire_ops`, then
//! `valgrind --tool=callgrind target/release/examples/wire_ops {encode|decode|both|check|walk} N` for two
//! values of N: the difference of the totals over the difference of N is the cost of one op.

use std::hint::black_box;

use ftc_chain::wire::{LogRepr, MessageView, MessageWriter};
use ftc_stm::{DepEntry, LogKind, Partition, Seq};

fn dep(p: u16, s: u64) -> DepEntry {
    DepEntry {
        partition: Partition(p),
        seq: Seq(s),
    }
}

fn update_log(seed: u8) -> LogRepr {
    LogRepr {
        middlebox: seed,
        kind: LogKind::Update,
        deps: vec![dep(3, 1_000 + u64::from(seed)), dep(17, 70_000)],
        writes: (0..2u8)
            .map(|i| (vec![seed ^ i; 16], Some(vec![i; 32])))
            .collect(),
    }
}

#[inline(never)]
fn encode(buf: &mut [u8], logs: &[LogRepr], cv: &[DepEntry]) -> usize {
    let mut w = match MessageWriter::new(buf, 0) {
        Ok(w) => w,
        Err(_) => return 0,
    };
    for log in logs {
        let _ = w.push_log(log.middlebox, log);
    }
    let _ = w.push_cv(1, cv.iter().copied());
    w.finish()
}

#[inline(never)]
fn decode(bytes: &[u8]) -> u64 {
    let Ok(m) = MessageView::new_checked(bytes) else {
        return 0;
    };
    let mut acc = 0u64;
    for log in m.logs() {
        for d in log.deps() {
            acc = acc.wrapping_add(d.seq.0 ^ u64::from(d.partition.0));
        }
        for w in log.writes() {
            black_box(w.key);
            black_box(w.value);
            acc = acc.wrapping_add(w.key[0] as u64 + w.value.map_or(0, |v| v[31] as u64));
        }
    }
    for cv in m.commit_vectors() {
        for e in cv.entries() {
            acc = acc.wrapping_add(e.seq.0);
        }
    }
    acc
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_else(|| "both".into());
    let n: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(1000);
    let logs = [update_log(0), update_log(1)];
    let cv = [dep(0, 5), dep(3, 1_001), dep(17, 70_001), dep(40, 2)];
    let mut buf = [0u8; 512];
    let len = encode(&mut buf, &logs, &cv);
    assert_eq!(len, 249);
    let msg = buf[..len].to_vec();
    assert!(decode(&msg) != 0);
    let mut acc = 0u64;
    for _ in 0..n {
        match mode.as_str() {
            "encode" => acc += encode(black_box(&mut buf), black_box(&logs), black_box(&cv)) as u64,
            "decode" => acc = acc.wrapping_add(decode(black_box(&msg))),
            "walk" => {
                let m = MessageView::new_checked(black_box(&msg)).unwrap();
                acc += m.logs().map(|l| l.write_count()).sum::<usize>() as u64;
                acc += m.commit_vectors().map(|c| c.entry_count()).sum::<usize>() as u64;
            }
            "check" => acc += u64::from(MessageView::new_checked(black_box(&msg)).is_ok()),
            _ => {
                let l = encode(black_box(&mut buf), black_box(&logs), black_box(&cv));
                acc = acc.wrapping_add(decode(black_box(&buf[..l])));
            }
        }
    }
    println!("{acc}");
}
