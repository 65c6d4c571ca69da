//! Store snapshots from the network (recovery's state transfer): reading arbitrary bytes never
//! panics, the two readers (the decoded form and a store restored in place) accept the same
//! bytes, and what they read agrees.
#![no_main]

use ftc_stm::{Snapshot, Store};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let decoded = Snapshot::decode(data);
    let imported = Store::import(data, 1);
    assert_eq!(decoded.is_ok(), imported.is_ok());
    if let (Ok(snap), Ok(store)) = (decoded, imported) {
        assert_eq!(store.export(), snap);
        let again = store.export_bytes().expect("read items fit");
        assert_eq!(
            Snapshot::decode(&again).expect("exported bytes read back"),
            snap
        );
    }
});
