//! Thesis §4.3.3 (data dependency vectors), DESIGN.md §5–§6: transactions that run concurrently
//! at a head, replayed at a replica in any arrival order with hold-and-retry, give the head's
//! final store and vector. Also: concurrent transactions conserve what they move (serializable).

mod support;

use std::sync::Mutex;

use ftc_stm::{ApplyOutcome, LogKind, LogSource, Store};
use proptest::prelude::*;
use support::OwnedLog;

/// One step of a generated transaction.
#[derive(Debug, Clone)]
enum Op {
    Read(u8),
    Add(u8, u64),
    Put(u8, Vec<u8>),
    Delete(u8),
}

fn key(k: u8) -> [u8; 2] {
    [b'k', k]
}

fn op() -> impl Strategy<Value = Op> {
    let k = 0u8..24;
    prop_oneof![
        k.clone().prop_map(Op::Read),
        (k.clone(), 1u64..5).prop_map(|(k, d)| Op::Add(k, d)),
        (k.clone(), prop::collection::vec(any::<u8>(), 0..20)).prop_map(|(k, v)| Op::Put(k, v)),
        k.prop_map(Op::Delete),
    ]
}

/// Run `txns` on `threads` worker threads sharing one head store; collect every commit's log.
fn run_head(partitions: u32, threads: u16, txns: &[Vec<Op>]) -> (Store, Vec<OwnedLog>) {
    let head = Store::new(partitions, threads).unwrap();
    let logs = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for t in 0..threads {
            let (head, logs) = (&head, &logs);
            s.spawn(move || {
                let mut w = head.worker(t).unwrap();
                for ops in txns
                    .iter()
                    .skip(usize::from(t))
                    .step_by(usize::from(threads))
                {
                    let ((), rec) = w.run(|tx| {
                        for op in ops {
                            match op {
                                Op::Read(k) => {
                                    tx.read(&key(*k))?;
                                }
                                Op::Add(k, d) => {
                                    tx.counter_add(&key(*k), *d)?;
                                }
                                Op::Put(k, v) => tx.write(&key(*k), v)?,
                                Op::Delete(k) => tx.delete(&key(*k))?,
                            }
                        }
                        Ok(())
                    });
                    logs.lock().unwrap().push(OwnedLog::from(&rec));
                }
            });
        }
    });
    (head, logs.into_inner().unwrap())
}

/// Deliver `logs` to a replica in the given order; held logs are retried whenever one applies.
fn replay(partitions: u32, logs: &[OwnedLog], order: &[usize]) -> Store {
    let replica = Store::new(partitions, 1).unwrap();
    let mut held: Vec<&OwnedLog> = Vec::new();
    for &i in order {
        let log = &logs[i];
        match log.kind() {
            LogKind::Update => match replica.apply(log).unwrap() {
                ApplyOutcome::Applied => loop {
                    let before = held.len();
                    held.retain(|l| replica.apply(*l).unwrap() == ApplyOutcome::Hold);
                    if held.len() == before {
                        break;
                    }
                },
                ApplyOutcome::Hold => held.push(log),
                ApplyOutcome::Duplicate => panic!("a log delivered once was taken for a duplicate"),
            },
            LogKind::ReadOnly | LogKind::Noop => {}
        }
    }
    assert!(
        held.is_empty(),
        "{} logs still held after every log arrived",
        held.len()
    );
    // Every read-only log is satisfied once all updates are in.
    for log in logs.iter().filter(|l| l.kind() == LogKind::ReadOnly) {
        assert!(replica.is_satisfied(log.deps()).unwrap());
    }
    // Redelivery is harmless.
    for log in logs.iter().filter(|l| l.kind() == LogKind::Update) {
        assert_eq!(replica.apply(log).unwrap(), ApplyOutcome::Duplicate);
    }
    replica
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn replica_in_any_arrival_order_converges_to_the_head(
        partitions in prop::sample::select(vec![1u32, 2, 4, 16]),
        threads in 1u16..=3,
        txns in prop::collection::vec(prop::collection::vec(op(), 0..5), 1..60),
        seed in any::<u64>(),
    ) {
        let (head, logs) = run_head(partitions, threads, &txns);
        prop_assert_eq!(logs.len(), txns.len());
        let mut order: Vec<usize> = (0..logs.len()).collect();
        // A seeded shuffle (Fisher–Yates over a SplitMix64 stream): the seed is in the case.
        let mut x = seed;
        for i in (1..order.len()).rev() {
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            order.swap(i, ((z ^ (z >> 31)) % (i as u64 + 1)) as usize);
        }
        let replica = replay(partitions, &logs, &order);
        prop_assert_eq!(replica.to_map(), head.to_map());
        prop_assert_eq!(replica.vector(), head.vector());
    }
}

/// Transfers between accounts in many partitions, from threads that take locks in opposite
/// orders: under strict 2PL with wound-wait nothing deadlocks and the total is conserved.
#[test]
fn concurrent_transfers_conserve_the_total() {
    const ACCOUNTS: u64 = 8;
    const THREADS: u16 = 4;
    const PER_THREAD: u64 = 5_000;
    let store = Store::new(8, THREADS).unwrap();
    {
        let mut w = store.worker(0).unwrap();
        let ((), _) = w.run(|tx| {
            for a in 0..ACCOUNTS {
                tx.write(&a.to_be_bytes(), &1000u64.to_le_bytes())?;
            }
            Ok(())
        });
    }
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let store = &store;
            s.spawn(move || {
                let mut w = store.worker(t).unwrap();
                for i in 0..PER_THREAD {
                    let (from, to) = (
                        (i + u64::from(t)) % ACCOUNTS,
                        (i * 3 + 1 + u64::from(t)) % ACCOUNTS,
                    );
                    let (a, b) = if t % 2 == 0 { (from, to) } else { (to, from) };
                    let ((), _) = w.run(|tx| {
                        let x = tx.counter(&a.to_be_bytes())?;
                        let y = tx.counter(&b.to_be_bytes())?;
                        if a != b && x > 0 {
                            tx.write(&a.to_be_bytes(), &(x - 1).to_le_bytes())?;
                            tx.write(&b.to_be_bytes(), &(y + 1).to_le_bytes())?;
                        }
                        Ok(())
                    });
                }
            });
        }
    });
    let total: u64 = store
        .to_map()
        .values()
        .map(|v| u64::from_le_bytes(v.as_slice().try_into().unwrap()))
        .sum();
    assert_eq!(total, ACCOUNTS * 1000);
}
