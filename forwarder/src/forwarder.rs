//! [`Forwarder`]: the state machine of server 0's ingress: pending content from the buffer, when
//! it rides on customer frames, and when it needs a propagating frame of its own.
//!
//! # When pending content leaves
//!
//! Pending content is the forwarder's [`Outbox`]: logs oldest first, commit vectors coalesced by
//! element-wise max. It leaves
//!
//! - on customer frames ([`Forwarder::attach`]), as much as fits the trailer budget;
//! - in a propagating frame ([`Forwarder::poll_propagate`]) when it is **overflowing**: the
//!   pending logs and a message header exceed one trailer budget, so customer frames alone could
//!   fall behind. Overflow frames are sent at once until pending fits one budget again;
//! - in propagating frames when it is **idle-due**: logs are pending and
//!   `now ≥ logs_drained_at + idle_timeout`, where `logs_drained_at` is the last time a frame (a
//!   customer frame in `attach`, or a propagating frame) left the forwarder with no log pending;
//!   or anything is pending and `now ≥ drained_at + lazy_timeout`, where `drained_at` is the last
//!   time a frame left with nothing pending at all. Once idle-due, propagating frames are sent
//!   until nothing that is due is pending.
//!
//! Logs and commit vectors wait differently because only logs are urgent: the buffer returns
//! the update logs of the wrapping groups, whose packets it holds until those logs reach their
//! tails. The commit vectors it returns only let heads and members prune what they retain, so
//! they ride on customer frames and get a propagating frame of their own only after
//! `lazy_timeout` (a chain whose returns carry commit vectors alone would otherwise send a
//! propagating frame whenever customer frames are more than `idle_timeout` apart).
//!
//! Why this bounds the wait of a log by `idle_timeout`: at `logs_drained_at` no log was pending,
//! so every log pending now arrived after it and has waited less than `now − logs_drained_at`.
//! When that reaches `idle_timeout`, `poll_propagate` drains every log, and `logs_drained_at`
//! does not move until it has. A customer frame that takes only part of the logs (a small
//! trailer room) does not reset the clock, so partial drains cannot postpone the oldest log
//! forever. The same argument with `drained_at` bounds the wait of anything by
//! `lazy_timeout`. In a busy chain every customer frame that finds nothing pending, or takes
//! everything, moves both clocks, so propagating frames appear only when customer frames are
//! rarer than `idle_timeout` or too small for what comes back. The bounds are the timeouts
//! plus however late the driver calls `poll_propagate` after [`Forwarder::poll_timeout`].
//!
//! Before any frame has left, `drained_at` is unknown and pending content is due at once: a chain
//! that has carried nothing is idle.
//!
//! # Sizes
//!
//! Pending bytes are the bytes of pending logs ([`Outbox::log_bytes`]). Commit vectors are not
//! counted: there is at most one per middlebox, bounded by the number of partitions.
//!
//! A propagating frame has no inner frame, so its message may take the whole buffer it is given:
//! the driver gives it the trailer budget and the room of the customer frame it lacks. One
//! propagating frame therefore drains what several customer frames would carry (on a Ch-Gen
//! with 128 B of state in memory, 0.06 propagating frames per packet instead of 0.14). When the
//! oldest log does not fit, `poll_propagate` returns [`WireError::NoRoom`] and keeps the log,
//! and the driver asks again with a larger buffer (up to a frame's whole trailer): a log is
//! never dropped for lack of room (DESIGN §4). A log larger than one trailer budget (only
//! possible if the buffer's budget is larger than the forwarder's) can never ride on a customer
//! frame, nor can anything queued behind it (logs leave in order), but it leaves in a
//! propagating frame.

use ftc_chain::outbox::Outbox;
use ftc_chain::wire::{MessageView, MessageWriter, WireError, MESSAGE_HEADER_LEN};

use crate::ingress::{classify, Ingress, Port, Rejected};
use ftc_chain::middlebox::Direction;

/// Settings of a [`Forwarder`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ForwarderConfig {
    /// Most bytes of one piggyback message, header included: the inter-server MTU minus the
    /// customer MTU minus the NSH header. Must be at least the 6-byte message header.
    pub trailer_budget: usize,
    /// How long pending logs may wait for a customer frame before a propagating frame carries
    /// them (see the module docs for the exact rule), in nanoseconds.
    pub idle_timeout_ns: u64,
    /// How long pending commit vectors (which only let heads prune) may wait for a customer
    /// frame before a propagating frame carries them, in nanoseconds; at least
    /// `idle_timeout_ns` to mean anything.
    pub lazy_timeout_ns: u64,
    /// Pending log bytes beyond which [`Forwarder::handle_return`] asks for back-pressure.
    pub max_pending_bytes: usize,
}

impl Default for ForwarderConfig {
    /// 1024-byte trailer budget (jumbo frames between servers leave room for it), 10 µs idle
    /// timeout (about a hop: packets wait at the buffer for the returned logs of the wrapping
    /// groups to reach their tails, so a log that waits longer for a customer frame adds its
    /// wait to their latency; in a busy chain logs ride on customer frames long before), 1 ms
    /// for commit vectors alone (well below the replicas' 10 ms resend timeout, which a retained log
    /// reaches when no commit vector covers it), 1 MiB of pending logs (about a thousand full
    /// trailers) before back-pressure.
    fn default() -> Self {
        ForwarderConfig {
            trailer_budget: 1024,
            idle_timeout_ns: 10_000,
            lazy_timeout_ns: 1_000_000,
            max_pending_bytes: 1 << 20,
        }
    }
}

/// Counters of a [`Forwarder`]; all only grow, except `pending_bytes`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ForwarderStats {
    /// Customer frames accepted from the inside port.
    pub accepted_outbound: u64,
    /// Customer frames accepted from the outside port.
    pub accepted_inbound: u64,
    /// Frames from outside that claimed FTC's NSH context class ([`Rejected::ForeignFtcFrame`]).
    pub rejected_foreign_ftc: u64,
    /// Frames shorter than [`crate::MIN_CUSTOMER_FRAME`] ([`Rejected::Runt`]).
    pub rejected_runt: u64,
    /// Return messages absorbed.
    pub return_messages: u64,
    /// Logs absorbed from return messages.
    pub logs_absorbed: u64,
    /// Return messages answered with [`Backpressure`].
    pub backpressure: u64,
    /// Messages written by `attach` that carried at least one log or commit vector.
    pub messages_attached: u64,
    /// Logs that rode on customer frames.
    pub logs_attached: u64,
    /// Propagating frames' messages written by `poll_propagate`.
    pub propagating_frames: u64,
    /// Of those, sent because pending logs were idle-due.
    pub idle_frames: u64,
    /// Of those, sent because pending commit vectors were due (`lazy_timeout_ns`).
    pub lazy_frames: u64,
    /// Of those, sent because pending content overflowed one trailer budget (and was not idle-due).
    pub overflow_frames: u64,
    /// Logs that left in propagating frames.
    pub logs_propagated: u64,
    /// Pending log bytes now.
    pub pending_bytes: usize,
    /// The most pending log bytes ever.
    pub max_pending_bytes: usize,
}

/// Pending content exceeds [`ForwarderConfig::max_pending_bytes`]: a driver that does not drain
/// pending every batch stops reading the ring-closing link until [`Forwarder::poll_propagate`]
/// has (see the crate's driver loop). The message was absorbed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[error("{pending_bytes} pending log bytes exceed the limit of {limit}")]
pub struct Backpressure {
    /// Pending log bytes after absorbing the message.
    pub pending_bytes: usize,
    /// [`ForwarderConfig::max_pending_bytes`].
    pub limit: usize,
}

/// Why a propagating frame is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Due {
    Idle,
    Lazy,
    Overflow,
}

/// The ingress core of server 0 (see the crate and module docs).
#[derive(Debug, Clone)]
pub struct Forwarder {
    config: ForwarderConfig,
    pending: Outbox,
    /// Whether `pending` holds something to send; kept so that `attach` with nothing pending
    /// costs no look at the commit vectors.
    has_pending: bool,
    /// The last time a frame left with nothing pending (module docs); `None` before any did.
    drained_at: Option<u64>,
    /// The last time a frame left with no log pending (module docs); `None` before any did.
    logs_drained_at: Option<u64>,
    /// The latest `now` seen: what `poll_timeout` answers when a frame is due at once.
    last_now: u64,
    stats: ForwarderStats,
}

impl Forwarder {
    /// A forwarder for a chain whose middleboxes have `partitions` partitions.
    pub fn new(partitions: u32, config: ForwarderConfig) -> Self {
        Forwarder {
            config,
            pending: Outbox::new(partitions as usize),
            has_pending: false,
            drained_at: None,
            logs_drained_at: None,
            last_now: 0,
            stats: ForwarderStats::default(),
        }
    }

    /// The settings.
    pub fn config(&self) -> &ForwarderConfig {
        &self.config
    }

    /// The counters.
    pub fn stats(&self) -> &ForwarderStats {
        &self.stats
    }

    /// A new epoch after a failure (DESIGN.md §8): what waits to ride into the chain is
    /// dropped, since a log of the old epoch may be one the recovery rolled back (logs that
    /// count are retained by their groups' members and sent again).
    pub fn fence(&mut self) {
        self.pending.clear();
        self.has_pending = false;
    }

    /// Whether logs or moved commit-vector entries wait for a frame.
    pub fn has_pending(&self) -> bool {
        self.has_pending
    }

    /// Sanitize and classify a frame from outside the chain (DESIGN §7): a frame that claims our
    /// NSH context class is rejected and counted (no one outside the chain may inject state), a
    /// frame shorter than an Ethernet header too; any other frame is accepted with the direction
    /// of `port` (inside: outbound, outside: inbound). Never panics.
    pub fn handle_ingress(&mut self, now: u64, frame: &[u8], port: Port) -> Ingress {
        self.observe(now);
        let verdict = classify(frame, port);
        match verdict {
            Ingress::Accept(Direction::Outbound) => self.stats.accepted_outbound += 1,
            Ingress::Accept(Direction::Inbound) => self.stats.accepted_inbound += 1,
            Ingress::Reject(Rejected::ForeignFtcFrame) => self.stats.rejected_foreign_ftc += 1,
            Ingress::Reject(Rejected::Runt) => self.stats.rejected_runt += 1,
        }
        verdict
    }

    /// Write the piggyback message for an accepted customer frame at the start of `out`, using at
    /// most `min(out.len(), trailer_budget)` bytes: pending logs oldest first, then the moved
    /// commit-vector entries, as many as fit; the rest stays pending. Always a valid message,
    /// possibly empty (just the header, which is all it costs when nothing is pending). Returns
    /// its length.
    ///
    /// [`WireError::NoRoom`] if that room cannot hold the 6-byte header; nothing is taken then.
    pub fn attach(&mut self, now: u64, out: &mut [u8]) -> Result<usize, WireError> {
        self.observe(now);
        let limit = out.len().min(self.config.trailer_budget);
        if !self.has_pending {
            let w = MessageWriter::new(&mut out[..limit], 0)?;
            self.drained_at = Some(now);
            self.logs_drained_at = Some(now);
            return Ok(w.finish());
        }
        let written = self.write_message(now, &mut out[..limit])?;
        if written.carried() {
            self.stats.messages_attached += 1;
            self.stats.logs_attached += u64::from(written.logs);
        }
        Ok(written.len)
    }

    /// Absorb a return frame's message from the buffer (the ring-closing link) into pending.
    ///
    /// The message is always absorbed (a log is never dropped). Returns [`Backpressure`] when the
    /// pending log bytes then exceed `max_pending_bytes` (what the driver does then: the crate's
    /// driver loop, step 2).
    pub fn handle_return(&mut self, now: u64, msg: &MessageView<'_>) -> Result<(), Backpressure> {
        self.observe(now);
        self.stats.return_messages += 1;
        let logs = msg.log_count();
        if logs > 0 || msg.cv_count() > 0 {
            self.pending.absorb(msg);
            // Commit vectors that move nothing leave nothing to send.
            self.has_pending = self.has_pending || logs > 0 || !self.pending.is_empty();
        }
        self.stats.logs_absorbed += u64::from(logs);
        let pending_bytes = self.pending.log_bytes();
        self.note_pending(pending_bytes);
        if pending_bytes > self.config.max_pending_bytes {
            self.stats.backpressure += 1;
            return Err(Backpressure {
                pending_bytes,
                limit: self.config.max_pending_bytes,
            });
        }
        Ok(())
    }

    /// A propagating frame's message, written at the start of `out`, when one is due (module
    /// docs): pending content is overflowing one trailer budget, or it is idle-due. `Ok(None)`
    /// otherwise. Call until `Ok(None)`.
    ///
    /// The message may take all of `out` (module docs: a propagating frame has no inner frame).
    /// [`WireError::NoRoom`] if `out` cannot hold the oldest log; it stays pending, and the
    /// driver may ask again with a larger `out`.
    pub fn poll_propagate(&mut self, now: u64, out: &mut [u8]) -> Result<Option<usize>, WireError> {
        self.observe(now);
        let Some(why) = self.due(now) else {
            return Ok(None);
        };
        let written = self.write_message(now, out)?;
        if !written.carried() {
            // Nothing was left to send after all (no frame), or it does not fit `out`.
            return if self.has_pending {
                Err(WireError::NoRoom)
            } else {
                Ok(None)
            };
        }
        self.stats.propagating_frames += 1;
        self.stats.logs_propagated += u64::from(written.logs);
        match why {
            Due::Idle => self.stats.idle_frames += 1,
            Due::Lazy => self.stats.lazy_frames += 1,
            Due::Overflow => self.stats.overflow_frames += 1,
        }
        Ok(Some(written.len))
    }

    /// When [`Forwarder::poll_propagate`] should next be called: `None` when nothing is pending;
    /// the latest `now` seen when a propagating frame is due at once (overflow, or nothing has
    /// left yet); else when pending content becomes idle-due.
    pub fn poll_timeout(&self) -> Option<u64> {
        if !self.has_pending {
            return None;
        }
        if self.overflowing() {
            return Some(self.last_now);
        }
        let (logs, lazy) = self.deadlines();
        Some(logs.map_or(lazy, |l| l.min(lazy)))
    }

    /// When pending logs (if any) and pending content at all become idle-due; `last_now` for a
    /// clock that never started (nothing has left yet: due at once).
    fn deadlines(&self) -> (Option<u64>, u64) {
        let after = |at: Option<u64>, timeout: u64| match at {
            Some(t) => t.saturating_add(timeout),
            None => self.last_now,
        };
        let logs = (self.pending.log_count() > 0)
            .then(|| after(self.logs_drained_at, self.config.idle_timeout_ns));
        (logs, after(self.drained_at, self.config.lazy_timeout_ns))
    }

    /// Why a propagating frame is due at `now`, if one is.
    fn due(&self, now: u64) -> Option<Due> {
        if !self.has_pending {
            return None;
        }
        let (logs, lazy) = self.deadlines();
        if logs.is_some_and(|t| now >= t) {
            Some(Due::Idle)
        } else if now >= lazy {
            Some(Due::Lazy)
        } else if self.overflowing() {
            Some(Due::Overflow)
        } else {
            None
        }
    }

    /// Whether pending logs and a message header exceed one trailer budget.
    fn overflowing(&self) -> bool {
        MESSAGE_HEADER_LEN + self.pending.log_bytes() > self.config.trailer_budget
    }

    /// Fills a message in `buf` from pending and notes whether pending is now drained.
    fn write_message(&mut self, now: u64, buf: &mut [u8]) -> Result<Written, WireError> {
        let mut w = MessageWriter::new(buf, 0)?;
        let all = self.pending.fill(&mut w)?;
        let written = Written {
            logs: w.log_count(),
            cvs: w.cv_count(),
            len: w.finish(),
        };
        if all {
            self.has_pending = false;
            self.drained_at = Some(now);
        }
        if self.pending.log_count() == 0 {
            self.logs_drained_at = Some(now);
        }
        self.note_pending(self.pending.log_bytes());
        Ok(written)
    }

    fn note_pending(&mut self, bytes: usize) {
        self.stats.pending_bytes = bytes;
        self.stats.max_pending_bytes = self.stats.max_pending_bytes.max(bytes);
    }

    fn observe(&mut self, now: u64) {
        self.last_now = self.last_now.max(now);
    }
}

/// What one message took from pending.
#[derive(Debug, Clone, Copy)]
struct Written {
    logs: u16,
    cvs: u16,
    len: usize,
}

impl Written {
    fn carried(&self) -> bool {
        self.logs > 0 || self.cvs > 0
    }
}
