//! A whole store with its vector in byte form, for moving it between servers at recovery, and
//! [`Snapshot`], the decoded form that checks and tests compare. Reading checks every length
//! and rule: the bytes come from the network.
//!
//! Layout (big-endian): magic `FTCS`, version u8 = 2, partitions u32, then for every partition in
//! order its sequence u64 (MAX at a replica, V at a head), its entry count u32 and per entry key
//! length u32, key, value length u32, value. Every key is listed under the partition it hashes
//! to ([`crate::partition_of`]), once; nothing follows the last partition.
//!
//! The layout follows the store's own: a store writes it straight from its partition tables
//! ([`crate::Store::export_bytes`]) and a replacement reads it straight into new ones
//! ([`crate::Store::restore`]), with no sort and no allocation per entry, so a recovery moves
//! state at memory speed.

use crate::{key_hash, Seq, StmError};

const MAGIC: &[u8; 4] = b"FTCS";
const VERSION: u8 = 2;
/// Magic, version, partition count.
pub(crate) const HEADER_LEN: usize = 4 + 1 + 4;
/// A partition's sequence and entry count.
const PARTITION_LEN: usize = 8 + 4;
/// An entry's two lengths.
const ENTRY_LEN: usize = 4 + 4;
/// Longest key or value a snapshot may carry.
pub const MAX_ITEM_LEN: usize = 1 << 20;

/// A whole store with its vector, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub partitions: u32,
    /// The sequence of every partition (MAX at a replica, V at a head).
    pub vector: Vec<Seq>,
    /// Every entry, sorted by key.
    pub entries: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Snapshot {
    /// The byte form; fails when a key or value is longer than [`MAX_ITEM_LEN`], a key is listed
    /// twice, or the vector does not have one sequence per partition (it could not be read
    /// back).
    pub fn encode(&self) -> Result<Vec<u8>, StmError> {
        let valid = self.partitions.is_power_of_two()
            && self.partitions <= 1 << 16
            && self.vector.len() == self.partitions as usize;
        if !valid {
            return Err(StmError::BadSnapshot(
                "the vector does not match the partition count",
            ));
        }
        let mask = u64::from(self.partitions - 1);
        let mut by_partition = vec![Vec::new(); self.partitions as usize];
        for (k, v) in &self.entries {
            by_partition[(key_hash(k) & mask) as usize].push((k.as_slice(), v.as_slice()));
        }
        let mut out = Vec::new();
        write_header(&mut out, self.partitions);
        for (seq, entries) in self.vector.iter().zip(&by_partition) {
            write_partition(&mut out, *seq, entries.iter().copied())?;
        }
        Ok(out)
    }

    /// Read a snapshot back, checking everything (`split`'s and `each_entry`'s rules, and no
    /// key listed twice).
    pub fn decode(bytes: &[u8]) -> Result<Snapshot, StmError> {
        let (partitions, parts) = split(bytes)?;
        let mut entries: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        for (p, part) in parts.iter().enumerate() {
            each_entry(part, p, partitions, |_, key, value| {
                entries.push((key.to_vec(), value.to_vec()));
                Ok(())
            })?;
        }
        entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        if entries.windows(2).any(|w| w[0].0 == w[1].0) {
            return Err(StmError::BadSnapshot("a key is listed twice"));
        }
        Ok(Snapshot {
            partitions,
            vector: parts.iter().map(|p| p.seq).collect(),
            entries,
        })
    }
}

/// Starts a snapshot of `partitions` partitions in `out`.
pub(crate) fn write_header(out: &mut Vec<u8>, partitions: u32) {
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    out.extend_from_slice(&partitions.to_be_bytes());
}

/// Appends the next partition: its sequence and its entries. Fails, having written part of it,
/// when a key or value is longer than [`MAX_ITEM_LEN`].
pub(crate) fn write_partition<'a>(
    out: &mut Vec<u8>,
    seq: Seq,
    entries: impl ExactSizeIterator<Item = (&'a [u8], &'a [u8])>,
) -> Result<(), StmError> {
    out.extend_from_slice(&seq.0.to_be_bytes());
    let count = u32::try_from(entries.len())
        .map_err(|_| StmError::BadSnapshot("more than 2^32 entries in a partition"))?;
    out.extend_from_slice(&count.to_be_bytes());
    for (k, v) in entries {
        for item in [k, v] {
            if item.len() > MAX_ITEM_LEN {
                return Err(StmError::BadSnapshot(
                    "key or value longer than MAX_ITEM_LEN",
                ));
            }
            out.extend_from_slice(&(item.len() as u32).to_be_bytes());
            out.extend_from_slice(item);
        }
    }
    Ok(())
}

/// The bytes of a partition with `entries` entries of `items` key and value bytes in all.
pub(crate) fn partition_len(entries: usize, items: usize) -> usize {
    PARTITION_LEN + ENTRY_LEN * entries + items
}

/// One partition of snapshot bytes, as [`split`] found it.
pub(crate) struct PartBytes<'a> {
    pub(crate) seq: Seq,
    /// How many entries `entries` holds.
    pub(crate) count: usize,
    /// The entries' bytes, every length in them checked.
    pub(crate) entries: &'a [u8],
}

/// Splits snapshot bytes into their partitions, checking magic and version, a partition count
/// that is a power of two up to 65536, every length against the bytes and [`MAX_ITEM_LEN`], and
/// that nothing follows. Returns the partition count and the partitions in order. The keys are
/// checked by [`each_entry`].
pub(crate) fn split(bytes: &[u8]) -> Result<(u32, Vec<PartBytes<'_>>), StmError> {
    let partitions = partitions(bytes)?;
    let mut r = &bytes[HEADER_LEN..];
    // Room for the partitions the bytes can hold, not for the count they claim (a 13-byte
    // snapshot claiming 65,536 would take 2 MiB before failing).
    let mut parts = Vec::with_capacity((partitions as usize).min(r.len() / PARTITION_LEN));
    for _ in 0..partitions {
        let seq = Seq(u64::from_be_bytes(array(take(&mut r, 8)?)));
        let count = u32::from_be_bytes(array(take(&mut r, 4)?)) as usize;
        // Every entry takes at least its two lengths: a count beyond that cannot be honest.
        if count > r.len() / ENTRY_LEN {
            return Err(StmError::BadSnapshot("entry count exceeds the bytes"));
        }
        let start = r;
        for _ in 0..count {
            item(&mut r)?;
            item(&mut r)?;
        }
        let entries = &start[..start.len() - r.len()];
        parts.push(PartBytes {
            seq,
            count,
            entries,
        });
    }
    if !r.is_empty() {
        return Err(StmError::BadSnapshot("bytes after the last partition"));
    }
    Ok((partitions, parts))
}

/// Walks the entries of partition `p` of a snapshot of `partitions` partitions, checking that
/// every key hashes to `p`; `visit` gets each key's [`key_hash`], the key and the value. It does
/// not look for keys listed twice: the visitor does, as it builds its table.
pub(crate) fn each_entry<'a>(
    part: &PartBytes<'a>,
    p: usize,
    partitions: u32,
    mut visit: impl FnMut(u64, &'a [u8], &'a [u8]) -> Result<(), StmError>,
) -> Result<(), StmError> {
    let mask = u64::from(partitions - 1);
    let mut r = part.entries;
    for _ in 0..part.count {
        let key = item(&mut r)?;
        let value = item(&mut r)?;
        let hash = key_hash(key);
        if hash & mask != p as u64 {
            return Err(StmError::BadSnapshot(
                "a key is listed under another partition",
            ));
        }
        visit(hash, key, value)?;
    }
    Ok(())
}

/// The partition count of snapshot bytes, after checking their header.
pub(crate) fn partitions(bytes: &[u8]) -> Result<u32, StmError> {
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
    Ok(partitions)
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
