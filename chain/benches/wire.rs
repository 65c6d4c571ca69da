//! Encode + decode of a typical piggyback message: 2 update logs of 2 writes each (16-byte key,
//! 32-byte value), 2 dependencies each, plus 1 commit vector of 4 entries.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
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

fn bench(c: &mut Criterion) {
    let logs = [update_log(0), update_log(1)];
    let cv = [dep(0, 5), dep(3, 1_001), dep(17, 70_001), dep(40, 2)];
    let mut buf = [0u8; 512];
    let n = encode(&mut buf, &logs, &cv);
    assert!(n > 0 && MessageView::new_checked(&buf[..n]).is_ok());
    println!("message: {n} bytes");

    c.bench_function("wire/encode", |b| {
        b.iter(|| encode(black_box(&mut buf), black_box(&logs), black_box(&cv)))
    });
    let msg = buf[..n].to_vec();
    c.bench_function("wire/decode", |b| b.iter(|| decode(black_box(&msg))));
    c.bench_function("wire/encode+decode", |b| {
        b.iter(|| {
            let n = encode(black_box(&mut buf), black_box(&logs), black_box(&cv));
            decode(black_box(&buf[..n]))
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
