//! [`Snapshot`]: a whole store with its vector, and its byte form for moving it between servers
//! at recovery. Decoding checks every length and rule: the bytes come from the network.
//!
//! Layout (big-endian): magic `FTCS`, version u8 = 1, partitions u32, then one u64 per partition
//! (the vector), entry count u64, then per entry key length u32, key, value length u32, value;
//! keys strictly increasing (so each key once), nothing after the last entry.

use crate::{Seq, StmError};

const MAGIC: &[u8; 4] = b"FTCS";
const VERSION: u8 = 1;
/// Longest key or value a snapshot may carry.
pub const MAX_ITEM_LEN: usize = 1 << 20;

/// A whole store with its vector, as moved between servers at recovery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub partitions: u32,
    /// The sequence of every partition (MAX at a replica, V at a head).
    pub vector: Vec<Seq>,
    /// Every entry, sorted by key.
    pub entries: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Snapshot {
    /// The byte form; fails when a key or value is longer than [`MAX_ITEM_LEN`] (it could not be
    /// read back).
    pub fn encode(&self) -> Result<Vec<u8>, StmError> {
        if self
            .entries
            .iter()
            .any(|(k, v)| k.len() > MAX_ITEM_LEN || v.len() > MAX_ITEM_LEN)
        {
            return Err(StmError::BadSnapshot(
                "key or value longer than MAX_ITEM_LEN",
            ));
        }
        let items: usize = self
            .entries
            .iter()
            .map(|(k, v)| 8 + k.len() + v.len())
            .sum();
        let mut out = Vec::with_capacity(4 + 1 + 4 + 8 * self.vector.len() + 8 + items);
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        out.extend_from_slice(&self.partitions.to_be_bytes());
        for s in &self.vector {
            out.extend_from_slice(&s.0.to_be_bytes());
        }
        out.extend_from_slice(&(self.entries.len() as u64).to_be_bytes());
        for (k, v) in &self.entries {
            for item in [k, v] {
                out.extend_from_slice(&(item.len() as u32).to_be_bytes());
                out.extend_from_slice(item);
            }
        }
        Ok(out)
    }

    /// Read a snapshot back, checking everything: magic and version, a partition count that is a
    /// power of two up to 65536, a full vector, lengths within the bytes and `MAX_ITEM_LEN`, keys
    /// strictly increasing, no trailing bytes.
    pub fn decode(bytes: &[u8]) -> Result<Snapshot, StmError> {
        let mut r = bytes;
        if take(&mut r, 4)? != MAGIC {
            return Err(StmError::BadSnapshot("not a snapshot (bad magic)"));
        }
        if take(&mut r, 1)?[0] != VERSION {
            return Err(StmError::BadSnapshot("unsupported snapshot version"));
        }
        let partitions = u32::from_be_bytes(array(take(&mut r, 4)?));
        if !partitions.is_power_of_two() || partitions > 1 << 16 {
            return Err(StmError::BadSnapshot(
                "partition count is not a power of two up to 65536",
            ));
        }
        let vector = (0..partitions)
            .map(|_| take(&mut r, 8).map(|b| Seq(u64::from_be_bytes(array(b)))))
            .collect::<Result<Vec<_>, _>>()?;
        let count = u64::from_be_bytes(array(take(&mut r, 8)?));
        // Every entry takes at least 8 bytes: a count beyond that cannot be honest.
        if count > (r.len() / 8) as u64 {
            return Err(StmError::BadSnapshot("entry count exceeds the bytes"));
        }
        let mut entries: Vec<(Vec<u8>, Vec<u8>)> = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let key = item(&mut r)?;
            let value = item(&mut r)?;
            if entries.last().is_some_and(|(k, _)| k.as_slice() >= key) {
                return Err(StmError::BadSnapshot("keys not strictly increasing"));
            }
            entries.push((key.to_vec(), value.to_vec()));
        }
        if !r.is_empty() {
            return Err(StmError::BadSnapshot("bytes after the last entry"));
        }
        Ok(Snapshot {
            partitions,
            vector,
            entries,
        })
    }
}

fn take<'a>(r: &mut &'a [u8], n: usize) -> Result<&'a [u8], StmError> {
    let (head, rest) = r
        .split_at_checked(n)
        .ok_or(StmError::BadSnapshot("truncated"))?;
    *r = rest;
    Ok(head)
}

fn array<const N: usize>(b: &[u8]) -> [u8; N] {
    let mut a = [0; N];
    a.copy_from_slice(b);
    a
}

fn item<'a>(r: &mut &'a [u8]) -> Result<&'a [u8], StmError> {
    let len = u32::from_be_bytes(array(take(r, 4)?)) as usize;
    if len > MAX_ITEM_LEN {
        return Err(StmError::BadSnapshot(
            "key or value longer than MAX_ITEM_LEN",
        ));
    }
    take(r, len)
}
