//! Model checking of the lock manager with shuttle (randomized and PCT schedulers): mutual
//! exclusion on every partition and no deadlock or livelock under wound-wait, for transactions
//! that take their locks in conflicting orders; serializable transactions; `run_then`'s hook
//! running before the locks are released; and exports of the whole store that end, and see
//! whole transactions, against one or two lanes taking partitions against the export's order.
//! Run with `cargo test -p ftc-stm --features shuttle --test shuttle_locks`.
#![cfg(feature = "shuttle")]

use std::sync::Arc;

use ftc_stm::lock::{timestamp, LockTable};
use ftc_stm::Store;
use shuttle::scheduler::{PctScheduler, RandomScheduler};
use shuttle::sync::atomic::{AtomicUsize, Ordering};
use shuttle::{Config, MaxSteps, Runner};

/// Per-partition occupancy: more than one holder at a time is a mutual-exclusion violation.
struct Occupancy(Vec<AtomicUsize>);

impl Occupancy {
    fn enter(&self, p: usize) {
        assert_eq!(
            self.0[p].fetch_add(1, Ordering::SeqCst),
            0,
            "two holders of partition {p}"
        );
    }
    fn leave(&self, p: usize) {
        self.0[p].fetch_sub(1, Ordering::SeqCst);
    }
}

/// One transaction of worker `slot` taking `order`'s locks one by one, retried when wounded.
fn transaction(
    table: &LockTable,
    occ: &Occupancy,
    slot: u16,
    clock: &mut u64,
    order: &[usize],
) -> u32 {
    *clock += 1;
    let me = timestamp(*clock, slot);
    table.begin(me);
    let mut aborts = 0;
    'attempt: loop {
        let mut held = Vec::new();
        for &p in order {
            if table.acquire(p, me, clock, !held.is_empty()).is_err() {
                for &h in held.iter().rev() {
                    occ.leave(h);
                    table.release(h);
                }
                table.after_abort(me);
                aborts += 1;
                continue 'attempt;
            }
            occ.enter(p);
            held.push(p);
            shuttle::thread::yield_now();
        }
        for &h in held.iter().rev() {
            occ.leave(h);
            table.release(h);
        }
        table.end(me);
        return aborts;
    }
}

fn conflicting_orders() {
    const PARTS: usize = 3;
    let table = Arc::new(LockTable::new(PARTS, 3));
    let occ = Arc::new(Occupancy((0..PARTS).map(|_| AtomicUsize::new(0)).collect()));
    let orders: [&[usize]; 3] = [&[0, 1, 2], &[2, 1, 0], &[1, 0]];
    let handles: Vec<_> = orders
        .into_iter()
        .enumerate()
        .map(|(slot, order)| {
            let (table, occ) = (Arc::clone(&table), Arc::clone(&occ));
            shuttle::thread::spawn(move || {
                let mut clock = 0;
                for _ in 0..2 {
                    transaction(&table, &occ, slot as u16, &mut clock, order);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    for p in 0..PARTS {
        assert_eq!(
            table.holder(p),
            0,
            "lock {p} still held after every transaction ended"
        );
    }
}

fn config() -> Config {
    let mut config = Config::new();
    // A deadlock or livelock shows up as a run that never ends: fail it.
    config.max_steps = MaxSteps::FailAfter(200_000);
    config
}

#[test]
fn lock_manager_mutual_exclusion_and_progress_random() {
    Runner::new(RandomScheduler::new(2_000), config()).run(conflicting_orders);
}

#[test]
fn lock_manager_mutual_exclusion_and_progress_pct() {
    Runner::new(PctScheduler::new(3, 2_000), config()).run(conflicting_orders);
}

/// The whole STM under the model checker: read-modify-write of two counters in opposite
/// orders; no update is lost and the vectors count every update transaction.
#[test]
fn transactions_are_serializable_under_wound_wait() {
    Runner::new(PctScheduler::new(3, 1_000), config()).run(|| {
        let store = Arc::new(Store::new(2, 2).unwrap());
        let (a, b) = (b"a".as_slice(), b"c".as_slice());
        assert_ne!(ftc_stm::partition_of(a, 2), ftc_stm::partition_of(b, 2));
        let handles: Vec<_> = (0..2u16)
            .map(|t| {
                let store = Arc::clone(&store);
                shuttle::thread::spawn(move || {
                    let mut w = store.worker(t).unwrap();
                    let (first, second) = if t == 0 { (a, b) } else { (b, a) };
                    for _ in 0..2 {
                        let ((), _) = w.run(|tx| {
                            let x = tx.counter(first)?;
                            shuttle::thread::yield_now();
                            let y = tx.counter(second)?;
                            tx.write(first, &(x + 1).to_le_bytes())?;
                            tx.write(second, &(y + 1).to_le_bytes())
                        });
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        let count = |k: &[u8]| u64::from_le_bytes(store.get(k).unwrap().try_into().unwrap());
        assert_eq!((count(a), count(b)), (4, 4));
        let total: u64 = store.vector().iter().map(|s| s.0).sum();
        assert_eq!(
            total, 8,
            "each of 4 transactions advances both partitions once"
        );
    });
}

/// `run_then`'s hook under the model checker: two workers add to one counter and take a number
/// from a shared counter at commit. In every schedule, a transaction that read the other's
/// value sees that one's number taken (what FTMB's lanes rely on to wait for the PAL messages
/// a packet depends on), and numbers follow the order of the writes.
#[test]
fn what_at_commit_publishes_is_seen_by_dependent_transactions() {
    use shuttle::sync::atomic::AtomicU64;
    Runner::new(PctScheduler::new(3, 1_000), config()).run(|| {
        let store = Arc::new(Store::new(2, 2).unwrap());
        let numbers = Arc::new(AtomicU64::new(0));
        let handles: Vec<_> = (0..2u16)
            .map(|t| {
                let (store, numbers) = (Arc::clone(&store), Arc::clone(&numbers));
                shuttle::thread::spawn(move || {
                    let mut w = store.worker(t).unwrap();
                    (0..2)
                        .map(|_| {
                            let mut taken = 0;
                            let (read, _) = w.run_then(
                                |tx| Ok(tx.counter_add(b"n", 1)? - 1),
                                |_| {
                                    shuttle::thread::yield_now();
                                    taken = numbers.fetch_add(1, Ordering::SeqCst) + 1;
                                },
                            );
                            (read, taken, numbers.load(Ordering::SeqCst))
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let runs: Vec<_> = handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect();
        // Value v + 1 was written by the transaction that read v.
        let mut number_of = [0; 5];
        for &(read, taken, _) in &runs {
            number_of[read as usize + 1] = taken;
        }
        for &(read, taken, seen) in &runs {
            let writer = number_of[read as usize];
            assert!(seen >= writer, "read number {writer}'s value, saw {seen}");
            assert!(taken > writer, "numbers follow the writes");
        }
    });
}

/// A whole-store export taken while transactions take both partitions, the second one first:
/// FTMB's snapshot against a master's lanes, and a live head handing its group's state to a
/// replacement (on the transfer thread) while its lanes run. The export locks partition 0, then
/// 1; a transaction holding 1 and asking for 0 must give way, or each waits for the other
/// forever (the lab's FTMB+snapshot MazuNAT with two lanes hung that way). In every schedule
/// every transaction and export ends, and each export sees both counters at the same count.
fn export_against(workers: u16) {
    let store = Arc::new(Store::new(2, workers).unwrap());
    let (a, b) = (b"a".as_slice(), b"c".as_slice());
    assert_eq!(ftc_stm::partition_of(a, 2), ftc_stm::Partition(0));
    assert_eq!(ftc_stm::partition_of(b, 2), ftc_stm::Partition(1));
    let lanes: Vec<_> = (0..workers)
        .map(|t| {
            let store = Arc::clone(&store);
            shuttle::thread::spawn(move || {
                let mut w = store.worker(t).unwrap();
                // The last worker takes partition 1 first, against the export's order.
                let (first, second) = if t + 1 == workers { (b, a) } else { (a, b) };
                for _ in 0..2 {
                    let ((), _) = w.run(|tx| {
                        tx.counter_add(first, 1)?;
                        shuttle::thread::yield_now();
                        tx.counter_add(second, 1).map(drop)
                    });
                }
            })
        })
        .collect();
    let exporter = {
        let store = Arc::clone(&store);
        shuttle::thread::spawn(move || {
            for _ in 0..2 {
                let snap = store.export();
                let count = |k: &[u8]| {
                    snap.entries
                        .iter()
                        .find(|(key, _)| key.as_slice() == k)
                        .map_or(0, |(_, v)| u64::from_le_bytes(v[..].try_into().unwrap()))
                };
                assert_eq!(count(a), count(b), "an export saw half a transaction");
            }
        })
    };
    for h in lanes {
        h.join().unwrap();
    }
    exporter.join().unwrap();
}

#[test]
fn an_export_and_one_lane_taking_partitions_against_its_order_both_end() {
    Runner::new(PctScheduler::new(3, 1_000), config()).run(|| export_against(1));
}

#[test]
fn an_export_and_two_lanes_taking_partitions_in_both_orders_all_end() {
    Runner::new(PctScheduler::new(3, 1_000), config()).run(|| export_against(2));
}
