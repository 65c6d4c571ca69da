//! The buffer's knobs ([`BufferConfig`]) and counters ([`BufferStats`]).

/// Bounds on what the buffer holds. A packet that would exceed either is refused
/// ([`crate::Refused`]): back-pressure. A buffer that holds nothing takes any packet, so that
/// bounds below one packet cannot refuse one for good.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BufferConfig {
    /// Most packets held at once (waiting for commit vectors, or ready and not yet polled).
    pub max_held_packets: usize,
    /// Most bytes (the sum of [`crate::Packet::len`]) held at once.
    pub max_held_bytes: usize,
    /// How long the oldest held packet may wait before the buffer asks the tails of the
    /// wrapping groups to announce their commit vectors again
    /// ([`crate::Buffer::poll_announce_request`]): an announcement lost on the way, or a
    /// buffer replaced by a recovery, must not hold packets forever.
    pub stall_timeout_ns: u64,
    /// How long commit vectors alone may wait for a return message after the last one
    /// ([`crate::Buffer::poll_return`]); logs go back at once.
    pub lazy_return_ns: u64,
    /// Test hook, `None` in any real deployment: the release rule weakened on purpose, so that
    /// tests show the checkers catch a subtly wrong rule, not only a missing one.
    pub weakened: Option<Weakened>,
}

/// A release rule weakened on purpose ([`BufferConfig::weakened`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Weakened {
    /// An update log with `D[p]` waits only until `CV[p] ≥ D[p]` (the read-only rule), not
    /// `CV[p] > D[p]`: a release before the write itself is in f+1 stores.
    UpdatesAtEqual,
    /// Read-only logs are not waited for: a release before the state read is in f+1 stores.
    ReadOnlyFree,
}

impl BufferConfig {
    /// 4096 packets.
    pub const DEFAULT_MAX_HELD_PACKETS: usize = 4096;
    /// 8 MiB.
    pub const DEFAULT_MAX_HELD_BYTES: usize = 8 << 20;
    /// 5 ms: far above a trip around the ring.
    pub const DEFAULT_STALL_TIMEOUT_NS: u64 = 5_000_000;
    /// 1 ms: well below the replicas' resend timeout (10 ms), which an uncovered retained log
    /// would reach if its commit vector came back later than that.
    pub const DEFAULT_LAZY_RETURN_NS: u64 = 1_000_000;
}

impl Default for BufferConfig {
    /// 4096 packets and 8 MiB: a packet waits about one trip around the ring (tens of µs in a
    /// data centre), so at 10 Mpps some hundreds of packets are held; 4096 leaves room for bursts
    /// and for a slow tail, and 8 MiB covers 4096 packets of up to 2 KiB (customer MTU 1500 plus
    /// headers). Jumbo customer frames want a larger byte bound.
    fn default() -> Self {
        BufferConfig {
            max_held_packets: Self::DEFAULT_MAX_HELD_PACKETS,
            max_held_bytes: Self::DEFAULT_MAX_HELD_BYTES,
            stall_timeout_ns: Self::DEFAULT_STALL_TIMEOUT_NS,
            lazy_return_ns: Self::DEFAULT_LAZY_RETURN_NS,
            weakened: None,
        }
    }
}

/// What the buffer has done so far. Counters only grow; `held_*` are the current values.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BufferStats {
    /// Frames with a packet handed to [`crate::Buffer::handle_frame`] (refused ones included).
    pub data_frames: u64,
    /// Propagating frames (no packet) handed to [`crate::Buffer::handle_frame`].
    pub propagating_frames: u64,
    /// Packets accepted (first offers and retries that were taken).
    pub accepted: u64,
    /// Packets released by [`crate::Buffer::poll_release`].
    pub released: u64,
    /// Refusals (a packet refused twice counts twice).
    pub refused: u64,
    /// Packets held now: waiting, or ready and not yet polled.
    pub held_packets: usize,
    /// Bytes of the packets held now.
    pub held_bytes: usize,
    /// The most packets ever held at once.
    pub max_held_packets: usize,
    /// Sum of the hold times of released packets, in ns (mean = this / `released`).
    pub total_hold_ns: u64,
    /// The longest hold time of a released packet, in ns.
    pub max_hold_ns: u64,
    /// Commit vector entries that moved the buffer's knowledge forward.
    pub cv_entries_moved: u64,
    /// Update logs of wrapping groups queued for the return path.
    pub logs_returned: u64,
    /// Read-only and no-op logs of wrapping groups: waited on, not returned (they replicate
    /// nothing).
    pub logs_kept: u64,
    /// Return messages written by [`crate::Buffer::poll_return`].
    pub return_messages: u64,
    /// Requests to the tails to announce their commit vectors again.
    pub announce_requests: u64,
    /// Anomaly: logs of groups that do not wrap. Their tails strip them before the buffer in a
    /// correct chain; they are neither waited on nor returned.
    pub non_wrapping_logs: u64,
    /// Anomaly: logs or commit vectors of a middlebox index not in the chain; ignored.
    pub foreign_middlebox: u64,
    /// Anomaly: dependencies on a partition outside 0..P. No commit vector can cover them, so
    /// their packet (and the rest of its flow) is held for good: output commit cannot be proved.
    pub uncoverable_deps: u64,
}

impl BufferStats {
    /// Mean hold time of released packets in ns; 0 before the first release.
    pub fn mean_hold_ns(&self) -> u64 {
        self.total_hold_ns.checked_div(self.released).unwrap_or(0)
    }
}
