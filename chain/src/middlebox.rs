//! The `Middlebox` trait: one packet's processing as a transaction over the STM, and the runner
//! that keeps the packet's changes only from the attempt that commits.

use ftc_stm::{Abort, CommitRecord, LogKind, Txn, Worker};

/// Which way a packet crosses the chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// From the inside (clients) towards the outside (servers).
    Outbound,
    /// From the outside back towards the inside.
    Inbound,
}

/// What a middlebox decided for a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// Pass it on (possibly rewritten).
    Forward,
    /// Drop it; its piggyback message still travels on (in a propagating frame).
    Drop,
}

/// What a middlebox knows of the packet besides its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ctx {
    /// The worker thread running the transaction (`0 .. threads`).
    pub worker: u16,
    /// The time, in nanoseconds since an arbitrary origin, given by the runtime.
    pub now_ns: u64,
    pub direction: Direction,
}

/// The frame was asked to grow beyond its buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("frame of {wanted} bytes does not fit a buffer of {capacity}")]
pub struct FrameTooLong {
    pub wanted: usize,
    pub capacity: usize,
}

/// The customer's Ethernet frame as a middlebox sees it: `len` bytes at the start of a buffer
/// that may leave room to grow.
#[derive(Debug)]
pub struct Frame<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl<'a> Frame<'a> {
    /// The first `len` bytes of `buf` are the frame; the rest is room to grow.
    pub fn new(buf: &'a mut [u8], len: usize) -> Result<Self, FrameTooLong> {
        if len > buf.len() {
            return Err(FrameTooLong {
                wanted: len,
                capacity: buf.len(),
            });
        }
        Ok(Frame { buf, len })
    }

    /// The frame's bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    /// The frame's bytes, to rewrite in place.
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.buf[..self.len]
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the frame is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The most bytes the frame can grow to.
    pub fn capacity(&self) -> usize {
        self.buf.len()
    }

    /// Grow or shrink the frame; new bytes are zero.
    pub fn resize(&mut self, len: usize) -> Result<(), FrameTooLong> {
        if len > self.buf.len() {
            return Err(FrameTooLong {
                wanted: len,
                capacity: self.buf.len(),
            });
        }
        if len > self.len {
            self.buf[self.len..len].fill(0);
        }
        self.len = len;
        Ok(())
    }

    /// Put back a copy taken with `bytes()` (an aborted attempt's changes are undone).
    fn restore(&mut self, saved: &[u8]) {
        self.buf[..saved.len()].copy_from_slice(saved);
        self.len = saved.len();
    }
}

/// A network function whose state lives in the STM.
///
/// `process` runs inside a packet transaction: every read and write of state goes through `tx`,
/// and it may rewrite, resize or drop the frame. It may run more than once for one packet (when
/// wounded, it returns the `Abort` it got from `tx`); only the last run's frame changes are kept.
pub trait Middlebox: Send + Sync + std::fmt::Debug {
    /// The kind's name as written in a chain spec (`"monitor"`, `"simple-nat"`, …).
    fn kind(&self) -> &'static str;

    /// Process one packet.
    fn process(&self, tx: &mut Txn<'_>, frame: &mut Frame<'_>, ctx: &Ctx)
        -> Result<Verdict, Abort>;
}

/// Run one packet through `middlebox` as a transaction of `worker`. When the store is shared by
/// several workers the frame is saved first (into `scratch`, reused) and restored before every
/// retry, so the packet only carries the changes of the attempt that committed. `at_commit` is
/// called as [`Worker::run_then`] calls it (pass `|_| ()` for nothing).
pub fn process_packet<'w>(
    worker: &'w mut Worker<'_>,
    middlebox: &dyn Middlebox,
    frame: &mut Frame<'_>,
    ctx: &Ctx,
    scratch: &mut Vec<u8>,
    at_commit: impl FnOnce(LogKind),
) -> (Verdict, CommitRecord<'w>) {
    let shared = worker.store().workers() > 1;
    if shared {
        scratch.clear();
        scratch.extend_from_slice(frame.bytes());
    }
    worker.run_then(
        |tx| {
            if tx.attempt() > 0 {
                frame.restore(scratch);
            }
            middlebox.process(tx, frame, ctx)
        },
        at_commit,
    )
}
