//! The stable key hash: which partition a key lives in, identical across processes and builds.

use xxhash_rust::xxh3::xxh3_64_with_seed;

use crate::Partition;

/// Fixed seed of the key hash. Changing it changes every key's partition: never do that.
const SEED: u64 = 0x6674_635f_7374_6d31; // "ftc_stm1"

/// The 64-bit hash of `key` (XXH3 with a fixed seed).
#[inline]
pub fn key_hash(key: &[u8]) -> u64 {
    xxh3_64_with_seed(key, SEED)
}

/// The partition of `key` among `partitions` partitions (a power of two).
#[inline]
pub fn partition_of(key: &[u8], partitions: u32) -> Partition {
    debug_assert!(partitions.is_power_of_two() && partitions <= 1 << 16);
    Partition((key_hash(key) & u64::from(partitions - 1)) as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pinned values: a change here would split a chain whose servers run different builds.
    #[test]
    fn hash_is_pinned() {
        assert_eq!(partition_of(b"", 64), partition_of(b"", 64));
        let pinned: Vec<u16> = [&b"a"[..], b"flow/1", b"counter"]
            .iter()
            .map(|k| partition_of(k, 65536).0)
            .collect();
        assert_eq!(pinned, PINNED);
    }

    const PINNED: [u16; 3] = [54274, 21149, 28230];
}
