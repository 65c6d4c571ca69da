//! [`GroupState`]: what a recovery moves for one replication group (DESIGN.md §8 step 3): the
//! group's store with its vector (MAX at a replica, V at a head), and the logs the source retains
//! for its successor. Its byte form is checked in full: the bytes come from the network. The
//! store travels in its own byte form ([`Store::export_bytes`]), which [`Store::restore`] checks
//! as it reads it straight into the replacement's tables; [`GroupState::decode`] checks the rest.
//!
//! Layout (big-endian): magic `FTCG`, version u8 = 2, middlebox u8, snapshot length u64, the
//! snapshot bytes, retained-log count u32, then per log its length u32 and its encoded bytes (a
//! piggyback log of this middlebox); nothing after.
//!
//! [`Store::export_bytes`]: ftc_stm::Store::export_bytes
//! [`Store::restore`]: ftc_stm::Store::restore

use ftc_chain::ring::MbIndex;
use ftc_chain::wire::LogView;
use ftc_stm::{StmError, Store};

const MAGIC: &[u8; 4] = b"FTCG";
const VERSION: u8 = 2;

/// One group's state as a recovery moves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupState {
    pub middlebox: MbIndex,
    /// The store in the snapshot byte form ([`ftc_stm::Snapshot::decode`] reads it for checks).
    pub snapshot: Vec<u8>,
    /// Encoded piggyback logs of `middlebox`, oldest first, not yet known to be committed.
    pub retained: Vec<Vec<u8>>,
}

/// Why group-state bytes were refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum GroupStateError {
    #[error("group state: {0}")]
    Malformed(&'static str),
    #[error("group state: {0}")]
    Store(#[from] StmError),
}

impl GroupState {
    /// The byte form.
    pub fn encode(&self) -> Result<Vec<u8>, GroupStateError> {
        let snapshot = &self.snapshot;
        encode(self.middlebox, &self.retained, snapshot.len(), |out| {
            out.extend_from_slice(snapshot);
            Ok(())
        })
    }

    /// The byte form of the state of `middlebox`'s group whose store is `store` and retained
    /// logs `retained`: the store is written straight into it from its tables
    /// ([`Store::export_into`]), with no copy of the snapshot in between.
    pub fn encode_store(
        middlebox: MbIndex,
        store: &Store,
        retained: &[Vec<u8>],
    ) -> Result<Vec<u8>, GroupStateError> {
        encode(middlebox, retained, 0, |out| store.export_into(out))
    }

    /// Read group-state bytes back, checking magic, version, every length, and that every
    /// retained log parses and belongs to the group's middlebox (the snapshot bytes are checked
    /// when a store is restored from them).
    pub fn decode(bytes: &[u8]) -> Result<GroupState, GroupStateError> {
        let mut r = bytes;
        if take(&mut r, 4)? != MAGIC {
            return Err(GroupStateError::Malformed("not a group state (bad magic)"));
        }
        if take(&mut r, 1)?[0] != VERSION {
            return Err(GroupStateError::Malformed("unsupported version"));
        }
        let middlebox = MbIndex(take(&mut r, 1)?[0]);
        let len = u64::from_be_bytes(array(take(&mut r, 8)?));
        let len = usize::try_from(len).ok().filter(|&l| l <= r.len()).ok_or(
            GroupStateError::Malformed("snapshot length exceeds the bytes"),
        )?;
        let snapshot = take(&mut r, len)?.to_vec();
        let count = u32::from_be_bytes(array(take(&mut r, 4)?)) as usize;
        // Every log takes at least 4 bytes: a count beyond that cannot be honest.
        if count > r.len() / 4 {
            return Err(GroupStateError::Malformed("log count exceeds the bytes"));
        }
        let mut retained = Vec::with_capacity(count);
        for _ in 0..count {
            let len = u32::from_be_bytes(array(take(&mut r, 4)?)) as usize;
            let log = take(&mut r, len)?;
            let view = LogView::new_checked(log)
                .map_err(|_| GroupStateError::Malformed("a retained log does not parse"))?;
            if view.middlebox() != middlebox.0 {
                return Err(GroupStateError::Malformed(
                    "a retained log belongs to another middlebox",
                ));
            }
            retained.push(log.to_vec());
        }
        if !r.is_empty() {
            return Err(GroupStateError::Malformed("bytes after the last log"));
        }
        Ok(GroupState {
            middlebox,
            snapshot,
            retained,
        })
    }
}

/// The byte form of a group state whose snapshot (about `snapshot_len` bytes) `write_snapshot`
/// appends.
fn encode(
    middlebox: MbIndex,
    retained: &[Vec<u8>],
    snapshot_len: usize,
    write_snapshot: impl FnOnce(&mut Vec<u8>) -> Result<(), StmError>,
) -> Result<Vec<u8>, GroupStateError> {
    let logs: usize = retained.iter().map(|l| 4 + l.len()).sum();
    let mut out = Vec::with_capacity(4 + 1 + 1 + 8 + snapshot_len + 4 + logs);
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    out.push(middlebox.0);
    let at = out.len();
    out.extend_from_slice(&[0; 8]);
    write_snapshot(&mut out)?;
    let len = (out.len() - at - 8) as u64;
    out[at..at + 8].copy_from_slice(&len.to_be_bytes());
    let count = u32::try_from(retained.len())
        .map_err(|_| GroupStateError::Malformed("too many retained logs"))?;
    out.extend_from_slice(&count.to_be_bytes());
    for log in retained {
        let len = u32::try_from(log.len())
            .map_err(|_| GroupStateError::Malformed("retained log too long"))?;
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(log);
    }
    Ok(out)
}

fn take<'a>(r: &mut &'a [u8], n: usize) -> Result<&'a [u8], GroupStateError> {
    let (head, rest) = r
        .split_at_checked(n)
        .ok_or(GroupStateError::Malformed("truncated"))?;
    *r = rest;
    Ok(head)
}

fn array<const N: usize>(b: &[u8]) -> [u8; N] {
    let mut a = [0; N];
    a.copy_from_slice(b);
    a
}
