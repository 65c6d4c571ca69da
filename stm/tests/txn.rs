//! Packet transactions at a head: reads, writes, deletes, commit records and the dependency
//! vector rules of DESIGN.md §5 (thesis §4.3.2–4.3.3).

mod support;

use ftc_stm::{ApplyOutcome, DepEntry, LogKind, LogSource, Partition, Seq, StmError, Store};

fn dep(p: u16, s: u64) -> DepEntry {
    DepEntry::new(p, s)
}

fn part(store: &Store, key: &[u8]) -> u16 {
    ftc_stm::partition_of(key, store.partitions()).0
}

#[test]
fn update_log_carries_pre_increment_sequences_of_partitions_read_and_written() {
    let store = Store::new(64, 1).unwrap();
    let mut w = store.worker(0).unwrap();
    let (a, b) = (b"alpha".as_slice(), b"beta".as_slice());
    assert_ne!(
        part(&store, a),
        part(&store, b),
        "test keys must sit in different partitions"
    );

    let ((), rec) = w.run(|tx| tx.write(a, b"1"));
    assert_eq!(rec.kind(), LogKind::Update);
    assert_eq!(
        rec.deps().collect::<Vec<_>>(),
        vec![dep(part(&store, a), 0)]
    );

    // Reads b, writes a: both partitions appear, at their values before this commit.
    let ((), rec) = w.run(|tx| {
        let _ = tx.read(b)?;
        tx.write(a, b"2")
    });
    let mut expect = vec![dep(part(&store, a), 1), dep(part(&store, b), 0)];
    expect.sort_by_key(|d| d.partition);
    assert_eq!(rec.deps().collect::<Vec<_>>(), expect);
    let writes: Vec<_> = rec
        .writes()
        .map(|w| (w.key.to_vec(), w.value.map(<[u8]>::to_vec)))
        .collect();
    assert_eq!(writes, vec![(a.to_vec(), Some(b"2".to_vec()))]);
    assert_eq!(store.seq(Partition(part(&store, a))), Seq(2));
    assert_eq!(store.seq(Partition(part(&store, b))), Seq(1));
}

#[test]
fn read_only_and_noop_logs_leave_the_vector_alone() {
    let store = Store::new(16, 1).unwrap();
    let mut w = store.worker(0).unwrap();
    let (v, rec) = w.run(|tx| Ok(tx.read(b"k")?.map(<[u8]>::to_vec)));
    assert_eq!(v, None);
    assert_eq!(rec.kind(), LogKind::ReadOnly);
    assert_eq!(
        rec.deps().collect::<Vec<_>>(),
        vec![dep(part(&store, b"k"), 0)]
    );
    let ((), rec) = w.run(|_| Ok(()));
    assert_eq!(rec.kind(), LogKind::Noop);
    assert_eq!(rec.deps().count(), 0);
    assert!(store.vector().iter().all(|s| *s == Seq(0)));
}

#[test]
fn reads_see_own_writes_and_only_the_last_write_of_a_key_is_logged() {
    let store = Store::new(8, 1).unwrap();
    let mut w = store.worker(0).unwrap();
    let (seen, rec) = w.run(|tx| {
        tx.write(b"k", b"first")?;
        tx.write(b"k", b"second")?;
        let seen = tx.read(b"k")?.map(<[u8]>::to_vec);
        tx.delete(b"gone")?;
        Ok(seen)
    });
    assert_eq!(seen.as_deref(), Some(&b"second"[..]));
    let writes: Vec<_> = rec
        .writes()
        .map(|w| (w.key.to_vec(), w.value.map(<[u8]>::to_vec)))
        .collect();
    assert_eq!(
        writes,
        vec![
            (b"k".to_vec(), Some(b"second".to_vec())),
            (b"gone".to_vec(), None)
        ]
    );
    assert_eq!(store.get(b"k").as_deref(), Some(&b"second"[..]));
    let ((), _) = w.run(|tx| tx.delete(b"k"));
    assert_eq!(store.get(b"k"), None);
}

#[test]
fn typed_helpers_round_trip() {
    #[derive(Debug, PartialEq)]
    struct Mapping {
        ip: [u8; 4],
        port: u16,
    }
    impl ftc_stm::Record for Mapping {
        const SIZE: usize = 6;
        fn encode(&self, out: &mut [u8]) {
            out[..4].copy_from_slice(&self.ip);
            out[4..].copy_from_slice(&self.port.to_be_bytes());
        }
        fn decode(b: &[u8]) -> Option<Self> {
            let b: &[u8; 6] = b.try_into().ok()?;
            Some(Mapping {
                ip: [b[0], b[1], b[2], b[3]],
                port: u16::from_be_bytes([b[4], b[5]]),
            })
        }
    }
    let store = Store::new(8, 1).unwrap();
    let mut w = store.worker(0).unwrap();
    let (n, _) = w.run(|tx| {
        tx.counter_add(b"c", 5)?;
        tx.counter_add(b"c", 2)
    });
    assert_eq!(n, 7);
    let (got, _) = w.run(|tx| {
        tx.put_record(
            b"m",
            &Mapping {
                ip: [10, 0, 0, 1],
                port: 4242,
            },
        )?;
        tx.record::<Mapping>(b"m")
    });
    assert_eq!(
        got,
        Some(Mapping {
            ip: [10, 0, 0, 1],
            port: 4242
        })
    );
    let (c, _) = w.run(|tx| tx.counter(b"c"));
    assert_eq!(c, 7);
    let mut blob = Vec::new();
    let (present, _) = w.run(|tx| tx.blob(b"m", &mut blob));
    assert!(present);
    assert_eq!(blob, [10, 0, 0, 1, 0x10, 0x92]);
}

#[test]
fn worker_handles_are_exclusive_and_bounded() {
    let store = Store::new(8, 2).unwrap();
    let w0 = store.worker(0).unwrap();
    assert_eq!(store.worker(0).unwrap_err(), StmError::WorkerUnavailable(0));
    assert_eq!(store.worker(2).unwrap_err(), StmError::WorkerUnavailable(2));
    drop(w0);
    assert!(store.worker(0).is_ok());
    assert_eq!(
        Store::new(48, 1).unwrap_err(),
        StmError::BadPartitionCount(48)
    );
    assert_eq!(Store::new(8, 0).unwrap_err(), StmError::BadWorkerCount(0));
}

/// §4.3.3: a replica applies a log only when MAX matches its dependencies, holds it when an
/// earlier log is missing, and skips it when it was applied already.
#[test]
fn replica_applies_in_dependency_order_holds_gaps_and_skips_duplicates() {
    let head = Store::new(4, 1).unwrap();
    let replica = Store::new(4, 1).unwrap();
    let mut w = head.worker(0).unwrap();
    let owned = |rec: &ftc_stm::CommitRecord<'_>| support::OwnedLog::from(rec);
    let ((), r1) = w.run(|tx| tx.write(b"x", b"1"));
    let l1 = owned(&r1);
    let ((), r2) = w.run(|tx| tx.write(b"x", b"2"));
    let l2 = owned(&r2);
    assert_eq!(replica.apply(&l2), Ok(ApplyOutcome::Hold));
    assert_eq!(replica.apply(&l1), Ok(ApplyOutcome::Applied));
    assert_eq!(replica.apply(&l1), Ok(ApplyOutcome::Duplicate));
    assert_eq!(replica.apply(&l2), Ok(ApplyOutcome::Applied));
    assert_eq!(replica.to_map(), head.to_map());
    assert_eq!(replica.vector(), head.vector());
}

#[test]
fn read_only_satisfaction_and_malformed_logs() {
    let replica = Store::new(4, 1).unwrap();
    assert_eq!(replica.is_satisfied([dep(1, 0)].into_iter()), Ok(true));
    assert_eq!(replica.is_satisfied([dep(1, 1)].into_iter()), Ok(false));
    assert!(replica.is_satisfied([dep(9, 0)].into_iter()).is_err());
    assert!(replica
        .is_satisfied([dep(2, 0), dep(1, 0)].into_iter())
        .is_err());
    let bad = support::OwnedLog {
        kind: LogKind::Update,
        deps: vec![dep(0, 0)],
        writes: vec![(b"x".to_vec(), Some(b"1".to_vec()))],
    };
    // "x" is not in partition 0 of 4: the write must be covered by a dependency.
    assert_ne!(ftc_stm::partition_of(b"x", 4), Partition(0));
    assert!(matches!(replica.apply(&bad), Err(StmError::Malformed(_))));
}

/// The one-dependency case (`Store::apply`'s own path): a log of many writes to one partition
/// is applied whole, a write outside it or a partition out of range leaves the store as it was.
#[test]
fn a_log_of_one_partition_applies_whole_or_not_at_all() {
    let head = Store::new(1, 1).unwrap();
    let replica = Store::new(1, 1).unwrap();
    let mut w = head.worker(0).unwrap();
    // More writes than the path hashes ahead (4), in the one partition there is.
    let keys: Vec<[u8; 1]> = (0..7u8).map(|i| [i]).collect();
    let ((), rec) = w.run(|tx| {
        for k in &keys {
            tx.write(k, b"v")?;
        }
        Ok(())
    });
    let log = support::OwnedLog::from(&rec);
    assert_eq!(log.deps, vec![dep(0, 0)]);
    assert_eq!(replica.apply(&log), Ok(ApplyOutcome::Applied));
    assert_eq!(replica.to_map(), head.to_map());
    assert_eq!(replica.vector(), head.vector());

    let four = Store::new(4, 1).unwrap();
    let other = (0..64u8)
        .map(|i| vec![i])
        .find(|k| part(&four, k) != part(&four, b"x"))
        .expect("a key of another partition");
    let outside = support::OwnedLog {
        kind: LogKind::Update,
        deps: vec![dep(part(&four, b"x"), 0)],
        writes: vec![
            (b"x".to_vec(), Some(b"1".to_vec())),
            (other, Some(b"2".to_vec())),
        ],
    };
    assert!(matches!(four.apply(&outside), Err(StmError::Malformed(_))));
    let far = support::OwnedLog {
        deps: vec![dep(4, 0)],
        ..outside
    };
    assert!(matches!(four.apply(&far), Err(StmError::Malformed(_))));
    assert!(four.to_map().is_empty());
    assert_eq!(four.vector(), vec![Seq(0); 4]);
}

#[test]
fn export_import_round_trip_keeps_the_vector() {
    let head = Store::new(16, 1).unwrap();
    let mut w = head.worker(0).unwrap();
    for i in 0..100u32 {
        let ((), _) = w.run(|tx| tx.counter_add(&i.to_be_bytes(), u64::from(i)).map(|_| ()));
    }
    let copy = Store::import(&head.export_bytes().unwrap(), 3).unwrap();
    assert_eq!(copy.to_map(), head.to_map());
    assert_eq!(copy.vector(), head.vector());
    assert_eq!(copy.len(), 100);
    let mut short = head.export();
    short.vector.pop();
    assert!(short.encode().is_err());
}

/// `run_then`'s hook runs while the transaction still holds its locks: a number taken there
/// is seen by every transaction that read this one's writes. Threads add to one counter and
/// take a number at commit; each transaction then reads the number counter, and that must
/// cover the number of the transaction whose value it read (what FTMB's output commit needs).
#[test]
fn what_at_commit_publishes_is_seen_by_every_transaction_that_depends_on_it() {
    use std::sync::atomic::{AtomicU64, Ordering};
    const THREADS: u16 = 4;
    const EACH: u64 = 2000;
    let store = Store::new(8, THREADS).unwrap();
    let numbers = AtomicU64::new(0);
    let kinds = AtomicU64::new(0);
    // Per thread: (value read, number taken, numbers seen after commit).
    let runs: Vec<Vec<(u64, u64, u64)>> = std::thread::scope(|s| {
        let threads: Vec<_> = (0..THREADS)
            .map(|t| {
                let (store, numbers, kinds) = (&store, &numbers, &kinds);
                s.spawn(move || {
                    let mut w = store.worker(t).unwrap();
                    (0..EACH)
                        .map(|_| {
                            let mut taken = 0;
                            let (read, rec) = w.run_then(
                                |tx| Ok(tx.counter_add(b"count", 1)? - 1),
                                |kind| {
                                    assert_eq!(kind, LogKind::Update);
                                    kinds.fetch_add(1, Ordering::Relaxed);
                                    taken = numbers.fetch_add(1, Ordering::AcqRel) + 1;
                                },
                            );
                            assert_eq!(rec.kind(), LogKind::Update);
                            (read, taken, numbers.load(Ordering::Acquire))
                        })
                        .collect()
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    });
    let total = u64::from(THREADS) * EACH;
    assert_eq!(kinds.load(Ordering::Relaxed), total, "once per commit");
    // The transaction that read value v wrote v + 1; its number is `by_value[v + 1]`.
    let mut by_value = vec![0; total as usize + 1];
    for &(read, taken, _) in runs.iter().flatten() {
        by_value[read as usize + 1] = taken;
    }
    for &(read, taken, seen) in runs.iter().flatten() {
        assert!(seen >= taken, "a transaction sees its own number");
        let writer = by_value[read as usize];
        assert!(
            seen >= writer,
            "read the value of number {writer} but saw only {seen} numbers"
        );
        assert!(taken > writer, "numbers follow the order of the writes");
    }
}
