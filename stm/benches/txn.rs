//! Packet transaction cost: one read-modify-write of a u64 counter with its log captured,
//! uncontended on 1 and 2 threads, and contended (every thread on one partition), with the
//! wound-wait abort rate printed for the contended runs.

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use ftc_stm::{LogSource, Store, Worker};

/// One counter increment; the commit record (the piggyback log) is read back like a sender would.
#[inline]
fn rmw(w: &mut Worker<'_>, key: &[u8]) {
    let (v, rec) = w.run(|tx| tx.counter_add(key, 1));
    black_box(v);
    black_box(rec.deps().count());
    for write in rec.writes() {
        black_box(write.value);
    }
}

/// Keys that fall in distinct partitions, one per thread.
fn distinct_partition_keys(store: &Store, n: usize) -> Vec<Vec<u8>> {
    let mut keys: Vec<Vec<u8>> = Vec::new();
    let mut i = 0u32;
    while keys.len() < n {
        let k = format!("flow-{i}").into_bytes();
        let p = ftc_stm::partition_of(&k, store.partitions());
        if keys
            .iter()
            .all(|o| ftc_stm::partition_of(o, store.partitions()) != p)
        {
            keys.push(k);
        }
        i += 1;
    }
    keys
}

/// Run `iters` transactions on each of `threads` threads at once; the mean time per
/// transaction per thread, and the aborts counted.
fn run_threads(threads: u16, iters: u64, same_key: bool, aborts: &AtomicU64) -> Duration {
    let store = Store::new(64, threads).unwrap();
    let keys = distinct_partition_keys(&store, usize::from(threads));
    let barrier = Barrier::new(usize::from(threads));
    let elapsed = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (store, barrier) = (&store, &barrier);
                let key = if same_key {
                    keys[0].clone()
                } else {
                    keys[usize::from(t)].clone()
                };
                s.spawn(move || {
                    let mut w = store.worker(t).unwrap();
                    barrier.wait();
                    let start = Instant::now();
                    for _ in 0..iters {
                        rmw(&mut w, &key);
                    }
                    aborts.fetch_add(w.stats().1, Ordering::Relaxed);
                    start.elapsed()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .max()
            .unwrap()
    });
    elapsed
}

fn uncontended(c: &mut Criterion) {
    let store = Store::new(64, 1).unwrap();
    let mut w = store.worker(0).unwrap();
    c.bench_function("txn/uncontended/1-thread", |b| {
        b.iter(|| rmw(&mut w, b"flow-0"))
    });
    drop(w);

    let aborts = AtomicU64::new(0);
    c.bench_function("txn/uncontended/2-threads", |b| {
        b.iter_custom(|iters| run_threads(2, iters, false, &aborts))
    });
}

fn contended(c: &mut Criterion) {
    let aborts = AtomicU64::new(0);
    let mut total = 0u64;
    c.bench_function("txn/contended/2-threads-1-partition", |b| {
        b.iter_custom(|iters| {
            total += 2 * iters;
            run_threads(2, iters, true, &aborts)
        })
    });
    report_aborts("txn/contended/2-threads-1-partition", &aborts, total);
}

/// Abort rate of wound-wait when transactions take two locks in opposite orders.
fn opposite_orders(c: &mut Criterion) {
    let aborts = AtomicU64::new(0);
    let mut total = 0u64;
    c.bench_function("txn/contended/2-threads-2-partitions-opposite-order", |b| {
        b.iter_custom(|iters| {
            total += 2 * iters;
            let store = Store::new(64, 2).unwrap();
            let keys = distinct_partition_keys(&store, 2);
            let barrier = Barrier::new(2);
            std::thread::scope(|s| {
                let handles: Vec<_> = (0..2u16)
                    .map(|t| {
                        let (store, barrier, keys, aborts) = (&store, &barrier, &keys, &aborts);
                        s.spawn(move || {
                            let (a, b) = if t == 0 {
                                (&keys[0], &keys[1])
                            } else {
                                (&keys[1], &keys[0])
                            };
                            let mut w = store.worker(t).unwrap();
                            barrier.wait();
                            let start = Instant::now();
                            for _ in 0..iters {
                                let ((), _) = w.run(|tx| {
                                    tx.counter_add(a, 1)?;
                                    tx.counter_add(b, 1).map(|_| ())
                                });
                            }
                            aborts.fetch_add(w.stats().1, Ordering::Relaxed);
                            start.elapsed()
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().unwrap())
                    .max()
                    .unwrap()
            })
        })
    });
    report_aborts(
        "txn/contended/2-threads-2-partitions-opposite-order",
        &aborts,
        total,
    );
}

/// The wound-wait abort rate of a benchmark that ran (filtered-out ones print nothing).
fn report_aborts(name: &str, aborts: &AtomicU64, commits: u64) {
    if commits > 0 {
        let a = aborts.load(Ordering::Relaxed);
        println!(
            "{name}: {a} aborts for {commits} commits ({:.3} aborts per commit)",
            a as f64 / commits as f64
        );
    }
}

criterion_group!(benches, uncontended, contended, opposite_orders);
criterion_main!(benches);
