//! Store snapshots from the network (recovery's state transfer): decoding arbitrary bytes never
//! panics, and what decodes imports into a store and encodes back to the same bytes.
#![no_main]

use ftc_stm::{Snapshot, Store};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(snap) = Snapshot::decode(data) {
        assert_eq!(snap.encode().expect("decoded items fit").as_slice(), data);
        if let Ok(store) = Store::import(&snap, 1) {
            assert_eq!(store.vector(), snap.vector);
        }
    }
});
