//! The partitioned store: P partitions of key → value entries, each with its sequence number
//! (the head's V or a replica's MAX), and the replica-side operations on it.

use std::cell::UnsafeCell;
use std::collections::BTreeMap;

use crossbeam_utils::CachePadded;
use hashbrown::HashTable;
use smallvec::SmallVec;

use crate::lock::LockTable;
use crate::snapshot::{self, Snapshot};
use crate::sync::{AtomicBool, AtomicU64, Ordering};
use crate::txn::Worker;
use crate::{key_hash, DepEntry, LogKind, LogSource, Partition, Seq, StmError};

/// Most workers one store serves.
pub const MAX_WORKERS: u16 = 1024;

/// The longest key and value an entry keeps inline.
const KEY_INLINE: usize = 24;
const VALUE_INLINE: usize = 16;
pub(crate) type KeyBytes = SmallVec<[u8; KEY_INLINE]>;
pub(crate) type ValueBytes = SmallVec<[u8; VALUE_INLINE]>;

pub(crate) struct Entry {
    /// The key's hash, rotated so that the table's bucket bits are not the partition bits.
    pub(crate) table_hash: u64,
    pub(crate) key: KeyBytes,
    pub(crate) value: ValueBytes,
}

/// The table hash of a key whose [`key_hash`] is `h`.
#[inline]
pub(crate) fn table_hash(h: u64) -> u64 {
    h.rotate_left(32)
}

pub(crate) struct Part {
    /// The partition's sequence: written only under its lock, read lock-free.
    pub(crate) seq: AtomicU64,
    pub(crate) map: UnsafeCell<HashTable<Entry>>,
}

impl Part {
    /// # Safety
    /// The caller holds this partition's lock.
    #[inline]
    pub(crate) unsafe fn map(&self) -> &HashTable<Entry> {
        // SAFETY: the caller holds the partition lock, so no one writes the map.
        unsafe { &*self.map.get() }
    }

    /// # Safety
    /// The caller holds this partition's lock and no other reference to the map is alive.
    #[inline]
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn map_mut(&self) -> &mut HashTable<Entry> {
        // SAFETY: the partition lock gives the caller exclusive access.
        unsafe { &mut *self.map.get() }
    }

    /// Set `key` (hash `h`) to `value`, or delete it.
    ///
    /// # Safety
    /// The caller holds this partition's lock.
    pub(crate) unsafe fn put(&self, h: u64, key: &[u8], value: Option<&[u8]>) {
        // SAFETY: forwarded from the caller.
        let map = unsafe { self.map_mut() };
        let th = table_hash(h);
        match (map.find_entry(th, |e| e.key.as_slice() == key), value) {
            (Ok(mut slot), Some(v)) => {
                let e = slot.get_mut();
                // Most writes replace a value by one of the same length (a counter, a record).
                if e.value.len() == v.len() {
                    e.value.copy_from_slice(v);
                } else {
                    e.value.clear();
                    e.value.extend_from_slice(v);
                }
            }
            (Ok(slot), None) => {
                slot.remove();
            }
            (Err(_), Some(v)) => {
                map.insert_unique(
                    th,
                    Entry {
                        table_hash: th,
                        key: KeyBytes::from_slice(key),
                        value: ValueBytes::from_slice(v),
                    },
                    |e| e.table_hash,
                );
            }
            (Err(_), None) => {}
        }
    }
}

// SAFETY: a partition's map is only reached through its lock in `LockTable`.
unsafe impl Sync for Part {}

/// What a replica did with an update log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplyOutcome {
    /// Its dependencies matched MAX: its writes are in the store and MAX moved past it.
    Applied,
    /// MAX is already past it: it was applied before.
    Duplicate,
    /// An earlier log of one of its partitions is missing: hold it and try again later.
    Hold,
}

/// The state of one middlebox: P partitions behind wound-wait locks.
pub struct Store {
    pub(crate) parts: Box<[CachePadded<Part>]>,
    pub(crate) locks: LockTable,
    pub(crate) mask: u64,
    workers: u16,
    claimed: Box<[AtomicBool]>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("partitions", &self.parts.len())
            .field("workers", &self.workers)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// An empty store of `partitions` partitions (a power of two) for `workers` worker threads.
    pub fn new(partitions: u32, workers: u16) -> Result<Store, StmError> {
        if !partitions.is_power_of_two() || partitions > 1 << 16 {
            return Err(StmError::BadPartitionCount(partitions));
        }
        if workers == 0 || workers > MAX_WORKERS {
            return Err(StmError::BadWorkerCount(workers));
        }
        let parts = (0..partitions)
            .map(|_| {
                CachePadded::new(Part {
                    seq: AtomicU64::new(0),
                    map: UnsafeCell::new(HashTable::new()),
                })
            })
            .collect();
        Ok(Store {
            parts,
            locks: LockTable::new(partitions as usize, usize::from(workers)),
            mask: u64::from(partitions - 1),
            workers,
            claimed: (0..workers).map(|_| AtomicBool::new(false)).collect(),
        })
    }

    /// Number of partitions.
    pub fn partitions(&self) -> u32 {
        self.parts.len() as u32
    }

    /// Number of worker handles this store can give out.
    pub fn workers(&self) -> u16 {
        self.workers
    }

    /// The handle of worker `id` (one per worker thread); released when dropped.
    pub fn worker(&self, id: u16) -> Result<Worker<'_>, StmError> {
        let claim = self
            .claimed
            .get(usize::from(id))
            .ok_or(StmError::WorkerUnavailable(id))?;
        if claim.swap(true, Ordering::AcqRel) {
            return Err(StmError::WorkerUnavailable(id));
        }
        Ok(Worker::new(self, id))
    }

    pub(crate) fn unclaim(&self, id: u16) {
        self.claimed[usize::from(id)].store(false, Ordering::Release);
    }

    #[inline]
    pub(crate) fn partition_index(&self, h: u64) -> usize {
        (h & self.mask) as usize
    }

    /// The sequence of partition `p` (V at a head, MAX at a replica).
    pub fn seq(&self, p: Partition) -> Seq {
        Seq(self.parts[usize::from(p.0)].seq.load(Ordering::Acquire))
    }

    /// The whole vector, one sequence per partition.
    pub fn vector(&self) -> Vec<Seq> {
        (0..self.parts.len())
            .map(|p| self.seq(Partition(p as u16)))
            .collect()
    }

    /// The vector's entries above 0, partitions rising: a commit vector naming the whole vector
    /// (an entry it leaves out reads as 0).
    pub fn vector_entries(&self) -> impl Iterator<Item = DepEntry> + Clone + '_ {
        (0..self.parts.len())
            .map(|p| DepEntry {
                partition: Partition(p as u16),
                seq: self.seq(Partition(p as u16)),
            })
            .filter(|e| e.seq.0 > 0)
    }

    /// Apply an update log at a replica (DESIGN.md §6): when MAX\[p\] == D\[p\] for every dependency,
    /// write its values and set MAX\[p\] = D\[p\] + 1; when some MAX\[p\] > D\[p\] it is a duplicate;
    /// otherwise it must be held. Logs of disjoint partitions may be applied concurrently.
    pub fn apply(&self, log: &impl LogSource) -> Result<ApplyOutcome, StmError> {
        if log.kind() != LogKind::Update {
            return Err(StmError::Malformed("only update logs are applied"));
        }
        let mut deps = log.deps();
        if let (Some(only), None) = (deps.next(), deps.next()) {
            return self.apply_in_one(only, log);
        }
        self.check_deps(log.deps())?;
        // Each key is hashed once: to check its partition here, to place it below.
        let mut hashes = SmallVec::<[u64; 4]>::new();
        for w in log.writes() {
            let h = key_hash(w.key);
            let p = self.partition_index(h);
            if !log.deps().any(|d| usize::from(d.partition.0) == p) {
                return Err(StmError::Malformed(
                    "write to a partition outside the dependencies",
                ));
            }
            hashes.push(h);
        }
        // Lock-free pre-check. MAX only grows, so a duplicate stays a duplicate; a log found not
        // yet applicable may become applicable right after through a concurrent apply, so
        // callers that queue held logs look at them again once they are queued.
        match self.compare(log.deps()) {
            ApplyOutcome::Applied => {}
            other => return Ok(other),
        }
        for d in log.deps() {
            self.locks.acquire_background(usize::from(d.partition.0));
        }
        let outcome = self.compare(log.deps());
        if outcome == ApplyOutcome::Applied {
            for (w, &h) in log.writes().zip(&hashes) {
                // SAFETY: we hold the locks of every dependency partition, which include the
                // partitions of all writes (checked above).
                unsafe { self.parts[self.partition_index(h)].put(h, w.key, w.value) };
            }
            for d in log.deps() {
                self.parts[usize::from(d.partition.0)]
                    .seq
                    .store(d.seq.0 + 1, Ordering::Release);
            }
        }
        for d in log.deps() {
            self.locks.release(usize::from(d.partition.0));
        }
        Ok(outcome)
    }

    /// [`Store::apply`] for a log of one dependency `dep` (most are: a packet's transaction
    /// touches one partition), with what the general case repeats per dependency done once:
    /// one partition to check every write against, compare, lock and move.
    fn apply_in_one(&self, dep: DepEntry, log: &impl LogSource) -> Result<ApplyOutcome, StmError> {
        let p = usize::from(dep.partition.0);
        let Some(part) = self.parts.get(p) else {
            return Err(StmError::Malformed(
                "dependency on a partition out of range",
            ));
        };
        // The first keys are hashed once: to check their partition here, to place them below.
        let mut hashes = [0u64; 4];
        for (i, w) in log.writes().enumerate() {
            let h = key_hash(w.key);
            if self.partition_index(h) != p {
                return Err(StmError::Malformed(
                    "write to a partition outside the dependencies",
                ));
            }
            if let Some(slot) = hashes.get_mut(i) {
                *slot = h;
            }
        }
        // Lock-free pre-check, as in `apply`.
        let one = std::iter::once(dep);
        match self.compare(one.clone()) {
            ApplyOutcome::Applied => {}
            other => return Ok(other),
        }
        self.locks.acquire_background(p);
        let outcome = self.compare(one);
        if outcome == ApplyOutcome::Applied {
            for (i, w) in log.writes().enumerate() {
                let h = hashes.get(i).copied().unwrap_or_else(|| key_hash(w.key));
                // SAFETY: we hold the lock of the one partition every write is in (checked
                // above).
                unsafe { part.put(h, w.key, w.value) };
            }
            part.seq.store(dep.seq.0 + 1, Ordering::Release);
        }
        self.locks.release(p);
        Ok(outcome)
    }

    /// Whether a read-only log with dependencies `deps` is satisfied: MAX\[p\] >= D\[p\] for all p.
    pub fn is_satisfied(
        &self,
        deps: impl Iterator<Item = DepEntry> + Clone,
    ) -> Result<bool, StmError> {
        self.check_deps(deps.clone())?;
        Ok(deps.into_iter().all(|d| self.seq(d.partition) >= d.seq))
    }

    /// Applicable (reported as `Applied`), `Duplicate` or `Hold`, from the current vector.
    fn compare(&self, deps: impl Iterator<Item = DepEntry>) -> ApplyOutcome {
        let mut applicable = true;
        for d in deps {
            let max = self.seq(d.partition);
            if max > d.seq {
                return ApplyOutcome::Duplicate;
            }
            applicable &= max == d.seq;
        }
        if applicable {
            ApplyOutcome::Applied
        } else {
            ApplyOutcome::Hold
        }
    }

    fn check_deps(&self, deps: impl Iterator<Item = DepEntry>) -> Result<(), StmError> {
        let mut last: Option<u16> = None;
        let mut any = false;
        for d in deps {
            if u32::from(d.partition.0) >= self.partitions() {
                return Err(StmError::Malformed(
                    "dependency on a partition out of range",
                ));
            }
            if last.is_some_and(|l| l >= d.partition.0) {
                return Err(StmError::Malformed(
                    "dependencies not in increasing partition order",
                ));
            }
            last = Some(d.partition.0);
            any = true;
        }
        if any {
            Ok(())
        } else {
            Err(StmError::Malformed("no dependencies"))
        }
    }

    /// The value of `key`, read outside any transaction (for inspection and checks).
    pub fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        let h = key_hash(key);
        let p = self.partition_index(h);
        self.locks.acquire_background(p);
        // SAFETY: we hold partition p's lock.
        let map = unsafe { self.parts[p].map() };
        let value = map
            .find(table_hash(h), |e| e.key.as_slice() == key)
            .map(|e| e.value.to_vec());
        self.locks.release(p);
        value
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.with_all_locked(|parts| {
            // SAFETY: every partition lock is held.
            parts.iter().map(|p| unsafe { p.map() }.len()).sum()
        })
    }

    /// Whether the store holds no entry.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A consistent copy of the whole store and its vector, decoded (for checks and tests; a
    /// recovery moves [`Store::export_bytes`]). All partitions are locked at once, so no log is
    /// half in it.
    pub fn export(&self) -> Snapshot {
        self.with_all_locked(|parts| {
            let vector = parts
                .iter()
                .map(|p| Seq(p.seq.load(Ordering::Acquire)))
                .collect();
            let mut entries: Vec<(Vec<u8>, Vec<u8>)> = parts
                .iter()
                // SAFETY: every partition lock is held.
                .flat_map(|p| unsafe { p.map() }.iter())
                .map(|e| (e.key.to_vec(), e.value.to_vec()))
                .collect();
            entries.sort_unstable();
            Snapshot {
                partitions: self.partitions(),
                vector,
                entries,
            }
        })
    }

    /// A consistent copy of the whole store and its vector in the snapshot byte form
    /// (the `snapshot` module), written straight from the partition tables while all of them are
    /// locked. Fails only for a key or value longer than [`crate::MAX_ITEM_LEN`].
    pub fn export_bytes(&self) -> Result<Vec<u8>, StmError> {
        let mut out = Vec::new();
        self.export_into(&mut out)?;
        Ok(out)
    }

    /// [`Store::export_bytes`] appended to `out`. Fails, having appended part of it, only for a
    /// key or value longer than [`crate::MAX_ITEM_LEN`].
    pub fn export_into(&self, out: &mut Vec<u8>) -> Result<(), StmError> {
        self.with_all_locked(|parts| {
            let tables = || {
                parts.iter().map(|p| {
                    // SAFETY: every partition lock is held.
                    (p, unsafe { p.map() })
                })
            };
            // Room for items as long as the tables keep inline: one pass over the entries, not
            // a first one to size the bytes (the entries are what takes the time to read; the
            // room reserved and not written is not touched). Longer items grow the buffer.
            let len = snapshot::HEADER_LEN
                + tables()
                    .map(|(_, t)| {
                        snapshot::partition_len(t.len(), t.len() * (KEY_INLINE + VALUE_INLINE))
                    })
                    .sum::<usize>();
            out.reserve(len);
            snapshot::write_header(out, self.partitions());
            for (part, table) in tables() {
                let seq = Seq(part.seq.load(Ordering::Acquire));
                let entries = table.iter().map(|e| (e.key.as_slice(), e.value.as_slice()));
                snapshot::write_partition(out, seq, entries)?;
            }
            Ok(())
        })
    }

    /// A store holding exactly the snapshot `bytes`, for `workers` workers. At a new head the
    /// vector becomes its V; at a new replica its MAX.
    pub fn import(bytes: &[u8], workers: u16) -> Result<Store, StmError> {
        let store = Store::new(snapshot::partitions(bytes)?, workers)?;
        store.restore(bytes)?;
        Ok(store)
    }

    /// Replace everything in this store with the snapshot `bytes` (a replacement server's
    /// store restored from a replica), checked in full (the `snapshot` module; a key listed twice
    /// is refused too). The new tables are built before any lock is taken, a large snapshot's on
    /// several threads, then swapped in. Fails, changing nothing, when the bytes are bad, the
    /// partition counts differ, or a worker handle is out: no transaction may run while the
    /// state is swapped.
    pub fn restore(&self, bytes: &[u8]) -> Result<(), StmError> {
        let (partitions, parts) = snapshot::split(bytes)?;
        if partitions != self.partitions() {
            return Err(StmError::BadSnapshot(
                "partition count differs from the store's",
            ));
        }
        let mut tables = build_tables(&parts, partitions)?;
        if self.claimed.iter().any(|c| c.load(Ordering::Acquire)) {
            return Err(StmError::BadSnapshot("a worker of the store is running"));
        }
        self.with_all_locked(|locked| {
            for ((part, table), bytes) in locked.iter().zip(tables.iter_mut()).zip(&parts) {
                // SAFETY: every partition lock is held.
                std::mem::swap(unsafe { part.map_mut() }, table);
                part.seq.store(bytes.seq.0, Ordering::Release);
            }
        });
        // The old tables are dropped here, after the locks are released.
        drop(tables);
        Ok(())
    }

    /// Every entry, sorted by key (for tests and checkers).
    pub fn to_map(&self) -> BTreeMap<Vec<u8>, Vec<u8>> {
        self.export().entries.into_iter().collect()
    }

    fn with_all_locked<R>(&self, f: impl FnOnce(&[CachePadded<Part>]) -> R) -> R {
        for p in 0..self.parts.len() {
            self.locks.acquire_background(p);
        }
        let r = f(&self.parts);
        for p in 0..self.parts.len() {
            self.locks.release(p);
        }
        r
    }
}

/// Entries from which [`Store::restore`] builds tables on several threads.
const PARALLEL_RESTORE_FROM: usize = 1 << 14;
/// The most threads [`Store::restore`] builds tables on.
const MAX_RESTORE_THREADS: usize = 8;

/// The tables of `parts` (a snapshot of `partitions` partitions), refusing a key listed twice;
/// a large snapshot's partitions are shared out among threads.
fn build_tables(
    parts: &[snapshot::PartBytes<'_>],
    partitions: u32,
) -> Result<Vec<HashTable<Entry>>, StmError> {
    let total: usize = parts.iter().map(|p| p.count).sum();
    let threads = if total < PARALLEL_RESTORE_FROM {
        1
    } else {
        std::thread::available_parallelism()
            .map_or(1, usize::from)
            .min(MAX_RESTORE_THREADS)
    };
    let build = |first: usize, chunk: &[snapshot::PartBytes<'_>]| {
        chunk
            .iter()
            .enumerate()
            .map(|(i, part)| build_table(part, first + i, partitions))
            .collect::<Result<Vec<_>, _>>()
    };
    if threads == 1 {
        return build(0, parts);
    }
    let per_thread = parts.len().div_ceil(threads);
    std::thread::scope(|s| {
        let handles: Vec<_> = parts
            .chunks(per_thread)
            .enumerate()
            .map(|(i, chunk)| s.spawn(move || build(i * per_thread, chunk)))
            .collect();
        let mut tables = Vec::with_capacity(parts.len());
        for h in handles {
            tables.extend(h.join().expect("building a table does not panic")?);
        }
        Ok(tables)
    })
}

/// The table of partition `p`.
fn build_table(
    part: &snapshot::PartBytes<'_>,
    p: usize,
    partitions: u32,
) -> Result<HashTable<Entry>, StmError> {
    let mut table: HashTable<Entry> = HashTable::with_capacity(part.count);
    snapshot::each_entry(part, p, partitions, |hash, key, value| {
        let th = table_hash(hash);
        // One probe finds a key listed twice or the slot of a new one.
        match table.entry(th, |e| e.key.as_slice() == key, |e| e.table_hash) {
            hashbrown::hash_table::Entry::Occupied(_) => {
                Err(StmError::BadSnapshot("a key is listed twice"))
            }
            hashbrown::hash_table::Entry::Vacant(slot) => {
                slot.insert(Entry {
                    table_hash: th,
                    key: KeyBytes::from_slice(key),
                    value: ValueBytes::from_slice(value),
                });
                Ok(())
            }
        }
    })?;
    Ok(table)
}
