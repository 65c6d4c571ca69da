//! Typed helpers over a transaction: u64 counters, fixed-size records (flow tables) and blobs.

use crate::{key_hash, Abort, Txn};

/// A fixed-size value stored as bytes: a flow-table record, a NAT mapping, …
pub trait Record: Sized {
    /// Encoded size in bytes.
    const SIZE: usize;
    /// Write `self` into `out` (exactly `SIZE` bytes).
    fn encode(&self, out: &mut [u8]);
    /// Read a value back; `None` when `bytes` is not a valid encoding.
    fn decode(bytes: &[u8]) -> Option<Self>;
}

impl Txn<'_> {
    /// The u64 counter at `key` (0 when absent or not 8 bytes).
    pub fn counter(&mut self, key: &[u8]) -> Result<u64, Abort> {
        Ok(self
            .read(key)?
            .and_then(|v| v.try_into().ok())
            .map_or(0, u64::from_le_bytes))
    }

    /// Add `delta` (wrapping) to the counter at `key`; returns the new value.
    pub fn counter_add(&mut self, key: &[u8], delta: u64) -> Result<u64, Abort> {
        let h = key_hash(key);
        let old = self
            .read_hashed(key, h)?
            .and_then(|v| v.try_into().ok())
            .map_or(0, u64::from_le_bytes);
        let value = old.wrapping_add(delta);
        self.write_with_hashed(key, h, 8, |out| out.copy_from_slice(&value.to_le_bytes()))?;
        Ok(value)
    }

    /// The record at `key`, if present and well-formed.
    pub fn record<R: Record>(&mut self, key: &[u8]) -> Result<Option<R>, Abort> {
        Ok(self.read(key)?.and_then(R::decode))
    }

    /// Store `record` at `key`.
    pub fn put_record<R: Record>(&mut self, key: &[u8], record: &R) -> Result<(), Abort> {
        self.write_with(key, R::SIZE, |out| record.encode(out))
    }

    /// The byte blob at `key`, copied into `out` (cleared first); whether it was present.
    pub fn blob(&mut self, key: &[u8], out: &mut Vec<u8>) -> Result<bool, Abort> {
        out.clear();
        Ok(self.read(key)?.map(|v| out.extend_from_slice(v)).is_some())
    }
}
