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
        let bytes = store.export_bytes().unwrap();
        let back = Snapshot::decode(&bytes).unwrap();
        prop_assert_eq!(&back, &snap);
        // The decoded form encodes to bytes that decode alike (entry order within a partition
        // may differ from the store's table order).
        prop_assert_eq!(Snapshot::decode(&snap.encode().unwrap()).unwrap(), snap);
        let copy = Store::import(&bytes, 1).unwrap();
        prop_assert_eq!(copy.to_map(), store.to_map());
        prop_assert_eq!(copy.vector(), store.vector());
        // Any truncation is refused, by both readers.
        for cut in 0..bytes.len() {
            prop_assert!(Snapshot::decode(&bytes[..cut]).is_err());
            prop_assert!(Store::import(&bytes[..cut], 1).is_err());
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        let decoded = Snapshot::decode(&bytes);
        // Both readers agree on what is a snapshot.
        prop_assert_eq!(decoded.is_ok(), Store::import(&bytes, 1).is_ok());
    }
}

/// The entries of one partition, key and value.
type Entries<'a> = &'a [(&'a [u8], &'a [u8])];

/// Snapshot bytes by hand: `partitions` partitions of sequence 0, each with its entries.
fn by_hand(parts: &[Entries<'_>]) -> Vec<u8> {
    let mut out = b"FTCS\x02".to_vec();
    out.extend_from_slice(&(parts.len() as u32).to_be_bytes());
    for entries in parts {
        out.extend_from_slice(&0u64.to_be_bytes());
        out.extend_from_slice(&(entries.len() as u32).to_be_bytes());
        for (k, v) in *entries {
            for item in [k, v] {
                out.extend_from_slice(&(item.len() as u32).to_be_bytes());
                out.extend_from_slice(item);
            }
        }
    }
    out
}

/// Both readers refuse `bytes` with `why`.
fn refused(bytes: &[u8], why: &'static str) {
    assert_eq!(Snapshot::decode(bytes), Err(StmError::BadSnapshot(why)));
    assert_eq!(
        Store::import(bytes, 1).unwrap_err(),
        StmError::BadSnapshot(why)
    );
}

#[test]
fn dishonest_snapshots_are_refused() {
    let store = store_with(
        &[
            (b"a".to_vec(), b"1".to_vec()),
            (b"b".to_vec(), b"2".to_vec()),
        ],
        4,
    );
    let good = store.export_bytes().unwrap();
    let mut bad_magic = good.clone();
    bad_magic[0] = b'X';
    refused(&bad_magic, "not a snapshot (bad magic)");
    let mut bad_partitions = good.clone();
    bad_partitions[8] = 3; // 3 partitions: not a power of two
    refused(
        &bad_partitions,
        "partition count is not a power of two up to 65536",
    );
    let mut trailing = good.clone();
    trailing.push(0);
    refused(&trailing, "bytes after the last partition");

    // With two partitions, `key` belongs in partition `home`.
    let key: &[u8] = b"a";
    let home = ftc_stm::partition_of(key, 2).0 as usize;
    let (once, twice): (Entries<'_>, Entries<'_>) = (&[(key, b"1")], &[(key, b"1"), (key, b"2")]);
    let mut parts = [&[][..], &[][..]];
    parts[home] = once;
    assert!(Store::import(&by_hand(&parts), 1).is_ok());
    parts[home] = twice;
    refused(&by_hand(&parts), "a key is listed twice");
    parts[home] = &[];
    parts[1 - home] = once;
    refused(&by_hand(&parts), "a key is listed under another partition");
    // A count no bytes could hold.
    let mut count = by_hand(&[&[]]);
    count[17..21].copy_from_slice(&u32::MAX.to_be_bytes());
    refused(&count, "entry count exceeds the bytes");

    let snap = store.export();
    let huge = Snapshot {
        entries: vec![(vec![0; ftc_stm::MAX_ITEM_LEN + 1], vec![])],
        ..snap.clone()
    };
    assert!(huge.encode().is_err());
    let listed_twice = Snapshot {
        entries: vec![snap.entries[0].clone(), snap.entries[0].clone()],
        ..snap
    };
    refused(&listed_twice.encode().unwrap(), "a key is listed twice");
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
    let snap = new.export_bytes().unwrap();
    {
        let _running = old.worker(0).unwrap();
        assert!(matches!(old.restore(&snap), Err(StmError::BadSnapshot(_))));
    }
    // A refused restore changed nothing.
    assert_eq!(old.get(b"a"), Some(b"1".to_vec()));
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

/// A snapshot large enough to be restored on several threads comes back whole, and a key
/// listed twice in its last partition (another thread's share) is still refused.
#[test]
fn a_large_snapshot_restores_on_several_threads() {
    let writes: Vec<(Vec<u8>, Vec<u8>)> = (0..40_000u32)
        .map(|i| (i.to_be_bytes().to_vec(), vec![i as u8; 16]))
        .collect();
    let store = store_with(&writes, 64);
    let bytes = store.export_bytes().unwrap();
    let copy = Store::import(&bytes, 1).unwrap();
    assert_eq!(copy.len(), 40_000);
    assert_eq!(copy.to_map(), store.to_map());
    assert_eq!(copy.vector(), store.vector());

    let mut snap = Snapshot::decode(&bytes).unwrap();
    let last = (0..40_000u32)
        .map(|i| i.to_be_bytes())
        .find(|k| ftc_stm::partition_of(k, 64).0 == 63)
        .unwrap();
    snap.entries.push((last.to_vec(), b"again".to_vec()));
    refused(&snap.encode().unwrap(), "a key is listed twice");
}

/// Items longer than the tables keep inline make the export outgrow the room it reserves up
/// front: the bytes still come back whole.
#[test]
fn long_keys_and_values_export_and_restore_whole() {
    let writes: Vec<(Vec<u8>, Vec<u8>)> = (0..2_000u32)
        .map(|i| {
            let key = [i.to_be_bytes().as_slice(), &[1; 60]].concat();
            (key, vec![i as u8; 1 + (i as usize % 3) * 700])
        })
        .collect();
    let store = store_with(&writes, 8);
    let bytes = store.export_bytes().unwrap();
    assert_eq!(Snapshot::decode(&bytes).unwrap(), store.export());
    let copy = Store::import(&bytes, 1).unwrap();
    assert_eq!(copy.to_map(), store.to_map());
    let mut appended = b"prefix".to_vec();
    store.export_into(&mut appended).unwrap();
    assert_eq!(&appended[6..], &bytes[..]);
}
