//! Packet transactions at a head: a [`Worker`] runs a body over a [`Txn`] under strict 2PL with
//! wound-wait, retries it when wounded, and returns the [`CommitRecord`] of the attempt that
//! committed.

use smallvec::SmallVec;

use crate::lock::{timestamp, Refused, Ts};
use crate::store::table_hash;
use crate::{key_hash, DepEntry, LogKind, LogSource, Partition, Seq, Store, Write};

/// The transaction was wounded by an older one, or gave way to background work: return it
/// (`?`) so that the worker retries.
///
/// Only the STM makes these, so a body cannot abort on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Abort(());

/// A write kept until commit: key and value live in the worker's arena.
#[derive(Debug, Clone, Copy)]
struct PendingWrite {
    hash: u64,
    key_start: u32,
    key_len: u32,
    /// `None` for a delete.
    value_start: Option<u32>,
    value_len: u32,
    /// False once a later write of the same transaction replaced it.
    live: bool,
}

/// A worker's reusable transaction buffers: after warm-up a transaction allocates nothing.
#[derive(Debug, Default)]
struct Ctx {
    held: SmallVec<[u16; 8]>,
    writes: Vec<PendingWrite>,
    arena: Vec<u8>,
    deps: Vec<DepEntry>,
    /// The lock this attempt gave way on to background work ([`Refused::Background`]).
    gave_way: Option<usize>,
    /// Debug builds: the partitions the attempt's reads (false) and writes (true) touched, kept
    /// apart from `held`, from which commit derives the dependencies; every commit is checked
    /// against them ([`check_record`]), so that the tests, the simulation's included, catch a
    /// commit that under-reports what its packet depends on (which no downstream check sees:
    /// they all take a packet's dependencies from its log).
    #[cfg(debug_assertions)]
    touched: Vec<(u16, bool)>,
}

impl Ctx {
    fn clear(&mut self) {
        #[cfg(debug_assertions)]
        self.touched.clear();
        self.gave_way = None;
        self.held.clear();
        self.writes.clear();
        self.arena.clear();
        self.deps.clear();
    }
}

/// One worker thread's handle on a store: runs its packet transactions one at a time.
#[derive(Debug)]
pub struct Worker<'s> {
    store: &'s Store,
    id: u16,
    clock: u64,
    ctx: Ctx,
    commits: u64,
    aborts: u64,
}

impl Drop for Worker<'_> {
    fn drop(&mut self) {
        self.store.unclaim(self.id);
    }
}

impl<'s> Worker<'s> {
    pub(crate) fn new(store: &'s Store, id: u16) -> Self {
        Worker {
            store,
            id,
            clock: 0,
            ctx: Ctx::default(),
            commits: 0,
            aborts: 0,
        }
    }

    /// The store this worker runs transactions on.
    pub fn store(&self) -> &'s Store {
        self.store
    }

    /// This worker's index.
    pub fn id(&self) -> u16 {
        self.id
    }

    /// Transactions committed and attempts aborted so far.
    pub fn stats(&self) -> (u64, u64) {
        (self.commits, self.aborts)
    }

    /// Run `body` as one packet transaction, retrying it whenever it is wounded, and commit it.
    ///
    /// `body` may run several times; it must keep side effects outside the store (on the packet)
    /// only from the attempt that returns `Ok` ([`Txn::attempt`] tells which attempt it is).
    /// The commit record borrows the worker until the next transaction.
    pub fn run<R>(
        &mut self,
        body: impl FnMut(&mut Txn<'_>) -> Result<R, Abort>,
    ) -> (R, CommitRecord<'_>) {
        self.run_then(body, |_| ())
    }

    /// [`Worker::run`], calling `at_commit` with the transaction's kind once, when it commits:
    /// after its writes are in the store and before its locks are released. What `at_commit`
    /// publishes is therefore seen by every transaction that depends on this one (FTMB's
    /// masters number their PAL messages there).
    pub fn run_then<R>(
        &mut self,
        mut body: impl FnMut(&mut Txn<'_>) -> Result<R, Abort>,
        at_commit: impl FnOnce(LogKind),
    ) -> (R, CommitRecord<'_>) {
        self.clock += 1;
        let me = timestamp(self.clock, self.id);
        let single = self.store.workers() == 1;
        if !single {
            self.store.locks.begin(me);
        }
        let mut attempt = 0;
        loop {
            self.ctx.clear();
            let mut txn = Txn {
                store: self.store,
                ctx: &mut self.ctx,
                me,
                clock: &mut self.clock,
                single,
                attempt,
            };
            match body(&mut txn) {
                Ok(r) => {
                    let kind = commit(self.store, &mut self.ctx, at_commit);
                    if !single {
                        self.store.locks.end(me);
                    }
                    self.commits += 1;
                    let ctx = &self.ctx;
                    let record = CommitRecord {
                        kind,
                        deps: &ctx.deps,
                        writes: &ctx.writes,
                        arena: &ctx.arena,
                    };
                    #[cfg(debug_assertions)]
                    check_record(&record, &ctx.touched);
                    return (r, record);
                }
                Err(Abort(())) => {
                    for &p in &self.ctx.held {
                        self.store.locks.release(usize::from(p));
                    }
                    self.store.locks.after_abort(me);
                    if let Some(p) = self.ctx.gave_way {
                        self.store.locks.wait_background(p);
                    }
                    self.aborts += 1;
                    attempt += 1;
                }
            }
        }
    }
}

/// Commit: record the dependencies (DESIGN.md §5), advance V, install the writes, call
/// `at_commit`, unlock.
fn commit(store: &Store, ctx: &mut Ctx, at_commit: impl FnOnce(LogKind)) -> LogKind {
    ctx.held.sort_unstable();
    let kind = if !ctx.writes.is_empty() {
        LogKind::Update
    } else if !ctx.held.is_empty() {
        LogKind::ReadOnly
    } else {
        LogKind::Noop
    };
    for &p in &ctx.held {
        let part = &store.parts[usize::from(p)];
        let seq = part.seq.load(crate::sync::Ordering::Relaxed);
        ctx.deps.push(DepEntry {
            partition: Partition(p),
            seq: Seq(seq),
        });
        if kind == LogKind::Update {
            part.seq.store(seq + 1, crate::sync::Ordering::Release);
        }
    }
    // Under the locks still: each dependency is the sequence the partition had before this
    // transaction, which an update moved on by one.
    debug_assert!(ctx.deps.iter().all(|d| {
        let now = store.parts[usize::from(d.partition.0)]
            .seq
            .load(crate::sync::Ordering::Relaxed);
        now == d.seq.0 + u64::from(kind == LogKind::Update)
    }));
    for w in ctx.writes.iter().filter(|w| w.live) {
        let key = &ctx.arena[w.key_start as usize..][..w.key_len as usize];
        let value = w
            .value_start
            .map(|s| &ctx.arena[s as usize..][..w.value_len as usize]);
        // SAFETY: the transaction holds the lock of every partition it wrote.
        unsafe { store.parts[store.partition_index(w.hash)].put(w.hash, key, value) };
    }
    at_commit(kind);
    for &p in &ctx.held {
        store.locks.release(usize::from(p));
    }
    kind
}

/// One attempt of a packet transaction: reads and writes under partition locks.
#[derive(Debug)]
pub struct Txn<'w> {
    store: &'w Store,
    ctx: &'w mut Ctx,
    me: Ts,
    clock: &'w mut u64,
    single: bool,
    attempt: u32,
}

impl Txn<'_> {
    /// 0 for the first attempt, then 1, 2, … after each wound.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The partition count of the store.
    pub fn partitions(&self) -> u32 {
        self.store.partitions()
    }

    #[inline]
    fn lock(&mut self, p: usize) -> Result<(), Abort> {
        if self.ctx.held.iter().any(|&h| usize::from(h) == p) {
            return Ok(());
        }
        if !self.single && self.store.locks.is_wounded(self.me) {
            return Err(Abort(()));
        }
        let holding = !self.ctx.held.is_empty();
        if let Err(refused) = self.store.locks.acquire(p, self.me, self.clock, holding) {
            if refused == Refused::Background {
                self.ctx.gave_way = Some(p);
            }
            return Err(Abort(()));
        }
        self.ctx.held.push(p as u16);
        Ok(())
    }

    /// The value of `key` as this transaction sees it (its own writes included).
    #[inline]
    pub fn read(&mut self, key: &[u8]) -> Result<Option<&[u8]>, Abort> {
        self.read_hashed(key, key_hash(key))
    }

    /// [`Txn::read`] of a key whose [`key_hash`] is `h`.
    #[inline]
    pub(crate) fn read_hashed(&mut self, key: &[u8], h: u64) -> Result<Option<&[u8]>, Abort> {
        let p = self.store.partition_index(h);
        self.lock(p)?;
        #[cfg(debug_assertions)]
        self.ctx.touched.push((p as u16, false));
        let ctx = &*self.ctx;
        if let Some(w) = ctx
            .writes
            .iter()
            .rev()
            .find(|w| w.live && w.hash == h && arena_key(ctx, w) == key)
        {
            return Ok(w
                .value_start
                .map(|s| &ctx.arena[s as usize..][..w.value_len as usize]));
        }
        // SAFETY: we hold partition p's lock until commit or abort, and the returned borrow
        // ends before either (both need `&mut` on the worker).
        let map = unsafe { self.store.parts[p].map() };
        Ok(map
            .find(table_hash(h), |e| e.key.as_slice() == key)
            .map(|e| e.value.as_slice()))
    }

    /// Set `key` to `value`.
    #[inline]
    pub fn write(&mut self, key: &[u8], value: &[u8]) -> Result<(), Abort> {
        self.write_with(key, value.len(), |out| out.copy_from_slice(value))
    }

    /// Set `key` to a value of `len` bytes that `fill` writes in place (no intermediate buffer).
    #[inline]
    pub fn write_with(
        &mut self,
        key: &[u8],
        len: usize,
        fill: impl FnOnce(&mut [u8]),
    ) -> Result<(), Abort> {
        self.write_with_hashed(key, key_hash(key), len, fill)
    }

    /// [`Txn::write_with`] of a key whose [`key_hash`] is `h`.
    #[inline]
    pub(crate) fn write_with_hashed(
        &mut self,
        key: &[u8],
        h: u64,
        len: usize,
        fill: impl FnOnce(&mut [u8]),
    ) -> Result<(), Abort> {
        let at = self.stage(key, h, Some(len))?;
        fill(&mut self.ctx.arena[at..at + len]);
        Ok(())
    }

    /// Delete `key` (nothing happens if it is absent, but the partition is still written).
    pub fn delete(&mut self, key: &[u8]) -> Result<(), Abort> {
        self.stage(key, key_hash(key), None).map(|_| ())
    }

    /// Lock `key`'s partition (`h` is its hash), record a write of `len` value bytes (or a
    /// delete), return where the value goes in the arena.
    fn stage(&mut self, key: &[u8], h: u64, len: Option<usize>) -> Result<usize, Abort> {
        let p = self.store.partition_index(h);
        self.lock(p)?;
        let ctx = &mut *self.ctx;
        #[cfg(debug_assertions)]
        ctx.touched.push((p as u16, true));
        for i in 0..ctx.writes.len() {
            let w = ctx.writes[i];
            if w.live && w.hash == h && arena_key(ctx, &w) == key {
                ctx.writes[i].live = false;
            }
        }
        let key_start = ctx.arena.len();
        ctx.arena.extend_from_slice(key);
        let value_start = ctx.arena.len();
        ctx.arena.resize(value_start + len.unwrap_or(0), 0);
        ctx.writes.push(PendingWrite {
            hash: h,
            key_start: key_start as u32,
            key_len: key.len() as u32,
            value_start: len.map(|_| value_start as u32),
            value_len: len.unwrap_or(0) as u32,
            live: true,
        });
        Ok(value_start)
    }
}

/// Debug builds: panics unless `record` (what its log carries) is what the transaction's reads
/// and writes touched (`touched`, partition and whether written): an update when it wrote,
/// read-only when it only read, a no-op when it touched nothing, and a dependency on exactly
/// each partition touched, in increasing order.
#[cfg(debug_assertions)]
fn check_record(record: &CommitRecord<'_>, touched: &[(u16, bool)]) {
    let mut parts: Vec<u16> = touched.iter().map(|&(p, _)| p).collect();
    parts.sort_unstable();
    parts.dedup();
    let kind = if touched.iter().any(|&(_, wrote)| wrote) {
        LogKind::Update
    } else if parts.is_empty() {
        LogKind::Noop
    } else {
        LogKind::ReadOnly
    };
    let deps: Vec<u16> = record.deps().map(|d| d.partition.0).collect();
    assert!(
        record.kind() == kind && deps == parts,
        "a commit reports {:?} on partitions {deps:?}, but its reads and writes make it {kind:?} \
         on {parts:?}",
        record.kind()
    );
}

fn arena_key<'a>(ctx: &'a Ctx, w: &PendingWrite) -> &'a [u8] {
    &ctx.arena[w.key_start as usize..][..w.key_len as usize]
}

/// The effect of a committed transaction: the piggyback log's content (DESIGN.md §5).
#[derive(Debug, Clone, Copy)]
pub struct CommitRecord<'a> {
    kind: LogKind,
    deps: &'a [DepEntry],
    writes: &'a [PendingWrite],
    arena: &'a [u8],
}

impl CommitRecord<'_> {
    /// The dependency entries, in increasing partition order.
    pub fn dep_entries(&self) -> &[DepEntry] {
        self.deps
    }
}

impl LogSource for CommitRecord<'_> {
    fn kind(&self) -> LogKind {
        self.kind
    }

    fn deps(&self) -> impl Iterator<Item = DepEntry> + Clone + '_ {
        let deps: &[DepEntry] = if self.kind == LogKind::Noop {
            &[]
        } else {
            self.deps
        };
        deps.iter().copied()
    }

    fn writes(&self) -> impl Iterator<Item = Write<'_>> + '_ {
        self.writes.iter().filter(|w| w.live).map(|w| Write {
            key: &self.arena[w.key_start as usize..][..w.key_len as usize],
            value: w
                .value_start
                .map(|s| &self.arena[s as usize..][..w.value_len as usize]),
        })
    }
}

#[cfg(all(test, debug_assertions))]
mod tests {
    use super::*;

    fn record(kind: LogKind, deps: &[DepEntry]) -> CommitRecord<'_> {
        CommitRecord {
            kind,
            deps,
            writes: &[],
            arena: &[],
        }
    }

    /// The debug check of every commit passes what the reads and writes make, and stops a log
    /// that under-reports them: a read-only transaction logged as a no-op, an update that
    /// leaves out a partition it only read, an update logged as read-only.
    #[test]
    fn commits_are_checked_against_what_their_transactions_touched() {
        let deps = [DepEntry::new(1, 4), DepEntry::new(3, 0)];
        check_record(
            &record(LogKind::Update, &deps),
            &[(3, false), (1, true), (3, true)],
        );
        check_record(&record(LogKind::ReadOnly, &deps), &[(3, false), (1, false)]);
        check_record(&record(LogKind::Noop, &[]), &[]);
        let both = [(1, true), (3, false)];
        let under = [
            (LogKind::Noop, &deps[..0], &both[1..]),
            (LogKind::Update, &deps[..1], &both[..]),
            (LogKind::ReadOnly, &deps[..], &both[..]),
        ];
        for (kind, deps, touched) in under {
            let caught = std::panic::catch_unwind(|| check_record(&record(kind, deps), touched));
            assert!(
                caught.is_err(),
                "{kind:?} on {deps:?} passed for {touched:?}"
            );
        }
    }
}
