//! A recovery's group state from the network (`GroupState`): reading arbitrary bytes never
//! panics, what reads back encodes to the same bytes, and a replacement restored from it (Ch-Rec's
//! ring, 8 partitions, at the position the first byte picks) neither panics nor sends for ever
//! as its timers run.
#![no_main]

use ftc_chain::ring::{Ring, ServerId};
use ftc_replica::{GroupState, Replica, ReplicaConfig};
use ftc_stm::Store;
use libfuzzer_sys::fuzz_target;

const PARTITIONS: u32 = 8;

/// Frames a restored replica sends per timer tick at most: one that kept sending would be a bug.
const TRANSMITS: usize = 10_000;

fuzz_target!(|data: &[u8]| {
    let Some((&first, bytes)) = data.split_first() else {
        return;
    };
    let Ok(state) = GroupState::decode(bytes) else {
        return;
    };
    assert_eq!(state.encode().expect("decoded states encode"), bytes);
    let ring = Ring::new(3, 1).expect("Ch-Rec's ring");
    let me = ServerId(u16::from(first) % 3);
    let empty = Store::new(PARTITIONS, 1)
        .and_then(|s| s.export_bytes())
        .expect("an empty store exports");
    let groups: Vec<GroupState> = ring
        .replicated_by(me)
        .chain(ring.middlebox_at(me))
        .map(|mb| {
            if mb == state.middlebox {
                state.clone()
            } else {
                GroupState {
                    middlebox: mb,
                    snapshot: empty.clone(),
                    retained: Vec::new(),
                }
            }
        })
        .collect();
    let Ok(mut replica) =
        Replica::restore(ring, me, PARTITIONS, ReplicaConfig::default(), &groups, 0)
    else {
        return;
    };
    let mut out = vec![0; 4096];
    for now in [0, 1_000_000, 1_000_000_000, 60_000_000_000] {
        let sent = (0..TRANSMITS)
            .map_while(|_| replica.poll_transmit(now, &mut out).ok().flatten())
            .count();
        assert!(sent < TRANSMITS, "a restored replica kept sending at {now}");
    }
});
