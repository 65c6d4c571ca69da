//! The snapshot byte form (recovery's state transfer): exported stores round-trip through bytes
//! into an equal store, and bad bytes are refused without panicking.

use ftc_stm::{Snapshot, StmError, Store};
use proptest::prelude::*;

fn store_with(writes: &[(Vec<u8>, Vec<u8>)], partitions: u32) -> Store {
    let store = Store::new(partitions, 1).unwrap();
    {
        let mut w = store.worker(0).unwrap();
        for (k, v) in writes {
            let ((), _) = w.run(|tx| tx.write(k, v));
        }
    }
    store
}

proptest! {
    #[test]
    fn exported_stores_round_trip_through_bytes(
        writes in prop::collection::vec((prop::collection::vec(any::<u8>(), 0..12), prop::collection::vec(any::<u8>(), 0..40)), 0..50),
        partitions in prop::sample::select(vec![1u32, 8, 64]),
    ) {
        let store = store_with(&writes, partitions);
        let snap = store.export();
        let bytes = snap.encode().unwrap();
        let back = Snapshot::decode(&bytes).unwrap();
        prop_assert_eq!(&back, &snap);
        let copy = Store::import(&back, 1).unwrap();
        prop_assert_eq!(copy.to_map(), store.to_map());
        prop_assert_eq!(copy.vector(), store.vector());
        // Any truncation is refused.
        for cut in 0..bytes.len() {
            prop_assert!(Snapshot::decode(&bytes[..cut]).is_err());
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        let _ = Snapshot::decode(&bytes);
    }
}

#[test]
fn dishonest_snapshots_are_refused() {
    let snap = store_with(
        &[
            (b"a".to_vec(), b"1".to_vec()),
            (b"b".to_vec(), b"2".to_vec()),
        ],
        4,
    )
    .export();
    let good = snap.encode().unwrap();
    let mut bad_magic = good.clone();
    bad_magic[0] = b'X';
    assert!(Snapshot::decode(&bad_magic).is_err());
    let mut bad_partitions = good.clone();
    bad_partitions[8] = 3; // 3 partitions: not a power of two
    assert!(Snapshot::decode(&bad_partitions).is_err());
    let mut trailing = good.clone();
    trailing.push(0);
    assert_eq!(
        Snapshot::decode(&trailing),
        Err(StmError::BadSnapshot("bytes after the last entry"))
    );
    let unsorted = Snapshot {
        entries: snap.entries.iter().rev().cloned().collect(),
        ..snap.clone()
    };
    assert_eq!(
        Snapshot::decode(&unsorted.encode().unwrap()),
        Err(StmError::BadSnapshot("keys not strictly increasing"))
    );
    let huge = Snapshot {
        entries: vec![(vec![0; ftc_stm::MAX_ITEM_LEN + 1], vec![])],
        ..snap
    };
    assert!(huge.encode().is_err());
}

#[test]
fn restore_replaces_a_store_in_place_and_refuses_while_a_worker_runs() {
    let old = store_with(
        &[
            (b"a".to_vec(), b"1".to_vec()),
            (b"b".to_vec(), b"2".to_vec()),
        ],
        8,
    );
    let new = store_with(&[(b"c".to_vec(), b"3".to_vec())], 8);
    let snap = new.export();
    {
        let _running = old.worker(0).unwrap();
        assert!(matches!(old.restore(&snap), Err(StmError::BadSnapshot(_))));
    }
    old.restore(&snap).unwrap();
    assert_eq!(old.to_map(), new.to_map());
    assert_eq!(old.vector(), new.vector());
    // Transactions go on from the restored vector.
    let mut w = old.worker(0).unwrap();
    let ((), rec) = w.run(|tx| tx.write(b"c", b"4"));
    let dep = rec.dep_entries()[0];
    assert_eq!(dep.seq, new.seq(dep.partition));
    let other = store_with(&[], 16);
    assert!(other.restore(&snap).is_err());
}
