//! The lock manager: one exclusive lock per partition, taken under wound-wait.
//!
//! A transaction's timestamp `Ts` is `(clock << 16) | slot`: `clock` is its worker's Lamport clock
//! at the transaction's first start (kept across retries), `slot` the worker's index. Smaller is
//! older. When a transaction asks for a lock that another holds:
//! - if it is older, it **wounds** the holder (sets the holder's wound mark), then waits;
//! - if it is younger, it waits.
//!
//! A wounded transaction aborts at its next lock request (contended or not) or while it waits, releases
//! everything, waits until its wounder's transaction has ended (else it could grab the lock back
//! before the wounder gets it, forever: a livelock the PCT model checker found), and retries with
//! the same timestamp. Waits only ever point from younger to older, so there is no deadlock, and
//! since timestamps are kept across retries every transaction eventually becomes the oldest: no
//! starvation. Workers merge the clocks of holders they meet, which keeps their clocks close
//! without a shared counter on the hot path.
//!
//! Background work (a replica's apply, an export of the whole store) takes its locks in
//! partition order, holding each while it waits for the next, and never aborts. A transaction
//! that holds a lock and meets one held by background work therefore gives way: it aborts,
//! releases everything, waits until that lock leaves the background work, and retries. Without
//! that, an export holding partition 0 and waiting for 1 and a transaction holding 1 and waiting
//! for 0 wait for each other forever. A transaction that holds nothing just waits.

use crossbeam_utils::CachePadded;

use crate::sync::{backoff, AtomicU64, Ordering};

/// A transaction timestamp; 0 means "free" in a lock word.
pub type Ts = u64;

/// Bits of a timestamp that hold the worker slot.
pub const SLOT_BITS: u32 = 16;

/// The timestamp of replica-side applies, exports and inspections: it never wounds anyone and
/// is never wounded; it takes locks in partition order, and transactions holding locks give way
/// to it.
pub const BACKGROUND_TS: Ts = u64::MAX;

/// Why a transaction's lock request failed: it must abort, release its locks and retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// An older transaction wounded it.
    Wounded,
    /// Background work holds the lock while the transaction holds others, which that work may
    /// be waiting for: before retrying, wait with [`LockTable::wait_background`].
    Background,
}

/// The timestamp of a transaction started at `clock` by worker `slot`.
#[inline]
pub fn timestamp(clock: u64, slot: u16) -> Ts {
    (clock << SLOT_BITS) | Ts::from(slot)
}

/// What the lock manager knows of one worker's current transaction.
#[derive(Debug)]
struct Slot {
    /// The timestamp of the transaction running now, 0 when none.
    active: AtomicU64,
    /// The timestamp of the transaction that was wounded (a stale mark names an older one).
    wound: AtomicU64,
    /// Who wounded it last.
    wounded_by: AtomicU64,
}

/// Partition locks and per-worker wound marks.
#[derive(Debug)]
pub struct LockTable {
    words: Box<[CachePadded<AtomicU64>]>,
    slots: Box<[CachePadded<Slot>]>,
}

impl LockTable {
    /// Locks for `partitions` partitions, used by up to `slots` workers.
    pub fn new(partitions: usize, slots: usize) -> Self {
        let words = (0..partitions)
            .map(|_| CachePadded::new(AtomicU64::new(0)))
            .collect();
        let slots = (0..slots)
            .map(|_| {
                CachePadded::new(Slot {
                    active: AtomicU64::new(0),
                    wound: AtomicU64::new(0),
                    wounded_by: AtomicU64::new(0),
                })
            })
            .collect();
        LockTable { words, slots }
    }

    /// Number of partition locks.
    pub fn len(&self) -> usize {
        self.words.len()
    }

    /// Whether there are no locks at all.
    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }

    /// Take lock `p` for transaction `me`, waiting under wound-wait. `clock` is the caller's
    /// Lamport clock, advanced past the clocks of holders it meets; `holding` says whether `me`
    /// holds other locks. Fails when `me` was wounded, or holds locks and met background work.
    #[inline]
    pub fn acquire(&self, p: usize, me: Ts, clock: &mut u64, holding: bool) -> Result<(), Refused> {
        let word = &self.words[p];
        if word
            .compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
        {
            return Ok(());
        }
        self.acquire_contended(word, me, clock, holding)
    }

    #[cold]
    fn acquire_contended(
        &self,
        word: &AtomicU64,
        me: Ts,
        clock: &mut u64,
        holding: bool,
    ) -> Result<(), Refused> {
        let mut spins = 0;
        loop {
            if self.is_wounded(me) {
                return Err(Refused::Wounded);
            }
            match word.compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed) {
                Ok(_) => return Ok(()),
                Err(BACKGROUND_TS) if holding => return Err(Refused::Background),
                Err(holder) => {
                    debug_assert_ne!(holder, me, "lock requested twice by one transaction");
                    if holder != 0 && holder != BACKGROUND_TS {
                        *clock = (*clock).max(holder >> SLOT_BITS);
                        if me < holder {
                            self.wound(holder, me);
                        }
                    }
                    backoff(&mut spins);
                }
            }
        }
    }

    /// Take lock `p` for background work (apply, export): wait, never wound, never abort.
    pub fn acquire_background(&self, p: usize) {
        let word = &self.words[p];
        let mut spins = 0;
        while word
            .compare_exchange(0, BACKGROUND_TS, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            backoff(&mut spins);
        }
    }

    /// Wait until background work no longer holds lock `p`: a transaction refused with
    /// [`Refused::Background`] calls this after releasing its locks, so that its retry does not
    /// take them back before that work gets them.
    pub fn wait_background(&self, p: usize) {
        let mut spins = 0;
        while self.words[p].load(Ordering::Acquire) == BACKGROUND_TS {
            backoff(&mut spins);
        }
    }

    /// Release lock `p`.
    #[inline]
    pub fn release(&self, p: usize) {
        self.words[p].store(0, Ordering::Release);
    }

    /// The timestamp holding lock `p`, 0 when free (for checks and tests).
    pub fn holder(&self, p: usize) -> Ts {
        self.words[p].load(Ordering::Acquire)
    }

    /// Transaction `me` starts (its first attempt): wounders can now wait for its end.
    #[inline]
    pub fn begin(&self, me: Ts) {
        self.slots[slot_of(me)].active.store(me, Ordering::Release);
    }

    /// Transaction `me` committed.
    #[inline]
    pub fn end(&self, me: Ts) {
        self.slots[slot_of(me)].active.store(0, Ordering::Release);
    }

    /// Whether transaction `me` has been wounded.
    #[inline]
    pub fn is_wounded(&self, me: Ts) -> bool {
        self.slots
            .get(slot_of(me))
            .is_some_and(|s| s.wound.load(Ordering::Acquire) == me)
    }

    /// Called when `me` aborted and released its locks: forget the wound and wait until the
    /// wounder's transaction has ended, so that the retry does not take the lock back first.
    pub fn after_abort(&self, me: Ts) {
        let Some(slot) = self.slots.get(slot_of(me)) else {
            return;
        };
        if slot.wound.load(Ordering::Acquire) != me {
            return;
        }
        let wounder = slot.wounded_by.load(Ordering::Acquire);
        let _ = slot
            .wound
            .compare_exchange(me, 0, Ordering::AcqRel, Ordering::Relaxed);
        if let Some(w) = self.slots.get(slot_of(wounder)) {
            let mut spins = 0;
            while w.active.load(Ordering::Acquire) == wounder {
                backoff(&mut spins);
            }
        }
    }

    fn wound(&self, holder: Ts, by: Ts) {
        if let Some(s) = self.slots.get(slot_of(holder)) {
            s.wounded_by.store(by, Ordering::Release);
            s.wound.store(holder, Ordering::Release);
        }
    }
}

fn slot_of(ts: Ts) -> usize {
    (ts & ((1 << SLOT_BITS) - 1)) as usize
}
