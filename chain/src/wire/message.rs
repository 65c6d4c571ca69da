//! Zero-copy views of the piggyback message: checked once by [`MessageView::new_checked`], then
//! walked by iterators that cannot panic.
//!
//! ```text
//! header (6): version u8 = 2 | flags u8 | log count u16 | commit-vector count u16
//! log:        length u16 (the whole log, this field included) | middlebox u8
//!             | kind u8 (0 update, 1 read-only, 2 no-op) | dep count u16 | write count u16
//!             | (partition u16, seq u64)*
//!             | (key len u16, value len u16 (0xFFFF: delete), key, value)*
//! cv:         middlebox u8 | entry count u16 | (partition u16, seq u64)*
//! ```
//!
//! Integers are fixed-width little-endian (docs/protocol.md says why: one load each, and every
//! part of a log is found without parsing what comes before it).
//!
//! A valid message has version 2, exactly the announced numbers of logs and commit vectors and no
//! byte after them; each log exactly as long as its length says; strictly increasing partitions
//! within each log and commit vector; update logs with ≥ 1 dependency and ≥ 1 write, read-only
//! logs with ≥ 1 dependency and no write, no-op logs with neither. Every field has one encoding,
//! so a valid message has exactly one byte form. (That a log writes each key at most once is the
//! sender's promise; it is not checked here.)

use ftc_stm::{DepEntry, LogKind, LogSource, Partition, Seq, Write};

use super::writer::Written;
use super::WireError;

/// Version of the piggyback message format.
pub const MESSAGE_VERSION: u8 = 2;
/// Length of the message header.
pub const MESSAGE_HEADER_LEN: usize = 6;

pub(super) mod field {
    pub const LOG_COUNT: core::ops::Range<usize> = 2..4;
    pub const CV_COUNT: core::ops::Range<usize> = 4..6;
}

/// Length of a log's fixed fields: length, middlebox, kind, dep count, write count.
pub(super) const LOG_HEADER_LEN: usize = 8;
/// Length of a commit vector's fixed fields: middlebox, entry count.
pub(super) const CV_HEADER_LEN: usize = 3;
/// Length of one dependency or commit-vector entry: partition u16, seq u64.
pub(super) const ENTRY_LEN: usize = 10;
/// Length of a write's fixed fields: key length, value length.
pub(super) const WRITE_HEADER_LEN: usize = 4;
/// The value length that marks a delete.
pub(super) const DELETE: u16 = u16::MAX;

#[inline(always)]
fn le16(b: [u8; 2]) -> u16 {
    u16::from_le_bytes(b)
}

/// `b[at..at + 2]` as a u16, or 0 past the end (which a checked view never reaches).
#[inline(always)]
fn le16_at(b: &[u8], at: usize) -> u16 {
    match b.get(at..).and_then(<[u8]>::first_chunk::<2>) {
        Some(&x) => le16(x),
        None => 0,
    }
}

/// Whether a log of `kind` has the dependencies and writes its kind calls for: update logs have
/// dependencies and writes, read-only logs dependencies only, no-op logs neither.
#[inline(always)]
pub(super) const fn kind_fits(kind: LogKind, dep_count: usize, write_count: usize) -> bool {
    match kind {
        LogKind::Update => dep_count != 0 && write_count != 0,
        LogKind::ReadOnly => dep_count != 0 && write_count == 0,
        LogKind::Noop => dep_count == 0 && write_count == 0,
    }
}

/// The shape of a log (bit 0: has dependencies, bit 1: has writes).
#[inline(always)]
const fn shape(has_deps: bool, has_writes: bool) -> u8 {
    has_deps as u8 | (has_writes as u8) << 1
}

/// Per wire code of a log kind, the one shape [`kind_fits`] allows it, derived from it at
/// compile time: the check then tests a log's kind and shape with one table lookup.
const KIND_SHAPES: [u8; 3] = {
    let mut table = [u8::MAX; 3];
    let mut code = 0;
    while code < table.len() {
        if let Some(kind) = LogKind::from_code(code as u8) {
            // Every shape: the dependency and write counts 0 or 1 stand for none and some.
            let mut s: u8 = 0;
            while s < 4 {
                if kind_fits(kind, (s & 1) as usize, (s >> 1) as usize) {
                    table[code] = s;
                }
                s += 1;
            }
        }
        code += 1;
    }
    table
};

/// Whether `code` is a log kind's wire code and a log of that kind fits ([`kind_fits`]).
#[inline(always)]
fn code_fits(code: u8, has_deps: bool, has_writes: bool) -> bool {
    KIND_SHAPES.get(usize::from(code)) == Some(&shape(has_deps, has_writes))
}

/// The rule of [`kind_fits`] that a log of `kind` breaks when it does not fit.
#[cold]
pub(super) fn kind_rule(kind: LogKind) -> &'static str {
    match kind {
        LogKind::Update => "update logs need a dependency and a write",
        LogKind::ReadOnly => "read-only logs need a dependency and no write",
        LogKind::Noop => "no-op logs have no dependency and no write",
    }
}

/// Sees partitions go by and whether each is above the one before.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Rising {
    /// One more than the last partition (0 before the first): the next must reach it.
    min: u32,
}

impl Rising {
    /// Whether `p` is above the partition seen before it (any is above none).
    #[inline(always)]
    pub(super) fn see(&mut self, p: u16) -> bool {
        let p = u32::from(p);
        let rose = p >= self.min;
        self.min = p + 1;
        rose
    }
}

/// What the checks below return when bytes break a rule: the rule ([`WireError`]), or only that
/// one broke (`()`). The checks run with `()` first, which the hot path carries for free; only
/// bytes found invalid are checked again, the same code with [`WireError`], to tell which rule.
/// One set of checks, so both agree on what is valid.
trait Broken {
    fn rule(e: WireError) -> Self;
}

impl Broken for WireError {
    #[inline(always)]
    fn rule(e: WireError) -> Self {
        e
    }
}

impl Broken for () {
    #[inline(always)]
    fn rule(_: WireError) {}
}

/// Runs `check` with `()` and, if the bytes broke a rule, again with [`WireError`] to say which.
#[inline(always)]
fn checked<T>(
    check: impl FnOnce() -> Result<T, ()>,
    explain: impl FnOnce() -> Result<T, WireError>,
) -> Result<T, WireError> {
    match check() {
        Ok(x) => Ok(x),
        Err(()) => Err(explained(explain)),
    }
}

/// The rule that [`checked`]'s second run finds broken.
#[cold]
#[inline(never)]
fn explained<T>(explain: impl FnOnce() -> Result<T, WireError>) -> WireError {
    // The second run takes the same path as the first, which failed: it cannot succeed.
    explain()
        .err()
        .unwrap_or(WireError::BadMessage("rule broken"))
}

/// Checks that the `count` entries at the start of `rest` have strictly increasing partitions;
/// returns the bytes after them.
#[inline(always)]
fn check_entries<'a, E: Broken>(
    rest: &'a [u8],
    count: u16,
    what: &'static str,
) -> Result<&'a [u8], E> {
    let Some((entries, rest)) = rest.split_at_checked(usize::from(count) * ENTRY_LEN) else {
        return Err(E::rule(WireError::Truncated));
    };
    let mut rising = Rising::default();
    let mut e = entries;
    while let Some((&[p0, p1, ..], tail)) = e.split_first_chunk::<ENTRY_LEN>() {
        if !rising.see(le16([p0, p1])) {
            return Err(E::rule(WireError::BadMessage(what)));
        }
        e = tail;
    }
    Ok(rest)
}

/// Checks the `count` writes at the start of `rest`; returns the bytes after them.
#[inline(always)]
fn check_writes<E: Broken>(mut rest: &[u8], count: u16) -> Result<&[u8], E> {
    for _ in 0..count {
        let Some((&header, tail)) = rest.split_first_chunk::<WRITE_HEADER_LEN>() else {
            return Err(E::rule(WireError::Truncated));
        };
        let Some(tail) = tail.get(WriteHeader::of(header).data_len()..) else {
            return Err(E::rule(WireError::Truncated));
        };
        rest = tail;
    }
    Ok(rest)
}

/// A write's fixed fields, read with one load.
#[derive(Clone, Copy)]
struct WriteHeader {
    key_len: u16,
    value_len: u16,
}

impl WriteHeader {
    #[inline(always)]
    fn of(header: [u8; WRITE_HEADER_LEN]) -> Self {
        let h = u32::from_le_bytes(header);
        WriteHeader {
            key_len: h as u16,
            value_len: (h >> 16) as u16,
        }
    }

    /// Bytes of key and value after the header.
    #[inline(always)]
    fn data_len(self) -> usize {
        let value_len = match self.value_len {
            DELETE => 0,
            n => n,
        };
        usize::from(self.key_len) + usize::from(value_len)
    }
}

/// The fields of a log's header that tell its layout, read with one load.
struct LogHeader {
    /// The whole log's length.
    len: usize,
    /// The kind's wire code.
    kind: u8,
    dep_count: u16,
    write_count: u16,
}

impl LogHeader {
    #[inline(always)]
    fn of(header: [u8; LOG_HEADER_LEN]) -> Self {
        let h = u64::from_le_bytes(header);
        LogHeader {
            len: usize::from(h as u16),
            kind: (h >> 24) as u8,
            dep_count: (h >> 32) as u16,
            write_count: (h >> 48) as u16,
        }
    }
}

/// Checks one log at the start of `bytes`; returns the bytes after it.
#[inline(always)]
fn check_log<E: Broken>(bytes: &[u8]) -> Result<&[u8], E> {
    let Some(&header) = bytes.first_chunk() else {
        return Err(E::rule(WireError::Truncated));
    };
    let LogHeader {
        len,
        kind,
        dep_count,
        write_count,
    } = LogHeader::of(header);
    let Some((log, rest)) = bytes.split_at_checked(len) else {
        return Err(E::rule(WireError::Truncated));
    };
    let Some(body) = log.get(LOG_HEADER_LEN..) else {
        return Err(E::rule(WireError::BadMessage(
            "log length shorter than its header",
        )));
    };
    if !code_fits(kind, dep_count != 0, write_count != 0) {
        return Err(E::rule(kind_error(kind)));
    }
    let body = check_entries(body, dep_count, "log dependency partitions not increasing")?;
    if !check_writes::<E>(body, write_count)?.is_empty() {
        return Err(E::rule(WireError::BadMessage(
            "log longer than its contents",
        )));
    }
    Ok(rest)
}

/// Why a log of kind code `code` does not fit its kind: the code is unknown, or the log breaks the
/// rule of [`kind_fits`].
#[cold]
#[inline(never)]
fn kind_error(code: u8) -> WireError {
    WireError::BadMessage(match LogKind::from_code(code) {
        Some(kind) => kind_rule(kind),
        None => "unknown log kind",
    })
}

/// Checks one commit vector at the start of `bytes`; returns the bytes after it.
#[inline(always)]
fn check_cv<E: Broken>(bytes: &[u8]) -> Result<&[u8], E> {
    let Some((&[_middlebox, c0, c1], body)) = bytes.split_first_chunk() else {
        return Err(E::rule(WireError::Truncated));
    };
    check_entries(
        body,
        le16([c0, c1]),
        "commit vector partitions not increasing",
    )
}

/// Checks a whole message; returns the offset of its first commit vector.
#[inline(always)]
fn check_message<E: Broken>(bytes: &[u8]) -> Result<usize, E> {
    let Some((&[version, _flags, l0, l1, c0, c1], mut rest)) =
        bytes.split_first_chunk::<MESSAGE_HEADER_LEN>()
    else {
        return Err(E::rule(match bytes.first() {
            Some(&v) if v != MESSAGE_VERSION => WireError::BadVersion,
            _ => WireError::Truncated,
        }));
    };
    if version != MESSAGE_VERSION {
        return Err(E::rule(WireError::BadVersion));
    }
    for _ in 0..le16([l0, l1]) {
        rest = check_log(rest)?;
    }
    let cvs_start = bytes.len() - rest.len();
    for _ in 0..le16([c0, c1]) {
        rest = check_cv(rest)?;
    }
    if !rest.is_empty() {
        return Err(E::rule(WireError::BadMessage(
            "trailing bytes after the last commit vector",
        )));
    }
    Ok(cvs_start)
}

/// Where the logs of a message of version [`MESSAGE_VERSION`] end, from their length fields;
/// `None` when a length is shorter than a log's header or runs past the bytes.
#[inline(always)]
fn logs_end(bytes: &[u8]) -> Option<usize> {
    let (&[version, _flags, l0, l1, _, _], _) = bytes.split_first_chunk::<MESSAGE_HEADER_LEN>()?;
    if version != MESSAGE_VERSION {
        return None;
    }
    let mut at = MESSAGE_HEADER_LEN;
    for _ in 0..le16([l0, l1]) {
        let len = usize::from(le16_at(bytes, at));
        if len < LOG_HEADER_LEN {
            return None;
        }
        at += len;
    }
    (at <= bytes.len()).then_some(at)
}

/// A checked piggyback message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageView<'a> {
    bytes: &'a [u8],
    /// Offset of the first commit vector.
    cvs_start: usize,
}

impl<'a> MessageView<'a> {
    /// Validates every rule of the format (module docs) over the whole of `bytes`, in one pass
    /// (and a second over bytes found invalid, to tell which rule they break).
    #[inline]
    pub fn new_checked(bytes: &'a [u8]) -> Result<Self, WireError> {
        let cvs_start = checked(|| check_message(bytes), || check_message(bytes))?;
        Ok(MessageView { bytes, cvs_start })
    }

    /// A view of a message this process just wrote, without checking it again (a
    /// [`MessageWriter`](super::MessageWriter) writes valid messages only): `bytes` are the
    /// bytes `written` describes. Bytes whose header differs from what was written are checked
    /// in full instead.
    #[inline]
    pub fn written(bytes: &'a [u8], written: Written) -> Result<Self, WireError> {
        let same = bytes.len() == written.len
            && bytes.first() == Some(&MESSAGE_VERSION)
            && bytes.get(2..MESSAGE_HEADER_LEN) == Some(&written.counts[..]);
        if !same {
            return Self::new_checked(bytes);
        }
        debug_assert_eq!(
            check_message::<WireError>(bytes),
            Ok(written.cvs_start),
            "a writer's message that is not valid"
        );
        Ok(MessageView {
            bytes,
            cvs_start: written.cvs_start,
        })
    }

    /// A view of a message that a [`MessageWriter`](super::MessageWriter) of this process
    /// wrote and another of its threads passed on (the in-memory transport), without checking
    /// its rules again: only where its commit vectors start is found, from its logs' lengths.
    /// Bytes whose header or lengths do not add up are checked in full. What it skips are the
    /// rules a writer cannot break (rising partitions, kinds that fit, writes that fill their
    /// logs); a view of bytes that break them anyway yields short or empty parts, never a
    /// panic, and the stores check dependencies again when they apply a log. Never for bytes
    /// from outside the process: those take [`MessageView::new_checked`].
    #[inline]
    pub fn trusted(bytes: &'a [u8]) -> Result<Self, WireError> {
        let Some(cvs_start) = logs_end(bytes) else {
            return Self::new_checked(bytes);
        };
        debug_assert_eq!(
            check_message::<WireError>(bytes),
            Ok(cvs_start),
            "a trusted message that is not valid"
        );
        Ok(MessageView { bytes, cvs_start })
    }

    /// The whole message.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// Message flags.
    pub fn flags(&self) -> u8 {
        self.bytes.get(1).copied().unwrap_or(0)
    }

    /// Number of logs.
    pub fn log_count(&self) -> u16 {
        le16_at(self.bytes, field::LOG_COUNT.start)
    }

    /// Number of commit vectors.
    pub fn cv_count(&self) -> u16 {
        le16_at(self.bytes, field::CV_COUNT.start)
    }

    /// The logs, in order.
    pub fn logs(&self) -> LogIter<'a> {
        LogIter {
            rest: self
                .bytes
                .get(MESSAGE_HEADER_LEN..self.cvs_start)
                .unwrap_or_default(),
            remaining: self.log_count(),
        }
    }

    /// The commit vectors, in order.
    pub fn commit_vectors(&self) -> CvIter<'a> {
        CvIter {
            rest: self.bytes.get(self.cvs_start..).unwrap_or_default(),
            remaining: self.cv_count(),
        }
    }
}

/// One checked log of a piggyback message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogView<'a> {
    /// The whole log, length field first.
    bytes: &'a [u8],
    /// The dependency entries.
    deps: &'a [u8],
    /// The writes.
    writes: &'a [u8],
    /// The write count field.
    write_count: u16,
}

impl<'a> LogView<'a> {
    /// Validates `bytes` as exactly one encoded log.
    pub fn new_checked(bytes: &'a [u8]) -> Result<Self, WireError> {
        if !check_log::<WireError>(bytes)?.is_empty() {
            return Err(WireError::BadMessage("trailing bytes after the log"));
        }
        Ok(LogView::of_checked(bytes))
    }

    /// Finds the parts of a checked log. Cannot panic: bytes that are not a checked log give
    /// empty parts.
    #[inline(always)]
    pub(crate) fn of_checked(bytes: &'a [u8]) -> Self {
        let ((deps, writes), write_count) = match bytes.split_first_chunk::<LOG_HEADER_LEN>() {
            Some((&header, body)) => {
                let h = LogHeader::of(header);
                (
                    body.split_at_checked(usize::from(h.dep_count) * ENTRY_LEN)
                        .unwrap_or((&[], &[])),
                    h.write_count,
                )
            }
            None => ((&[][..], &[][..]), 0),
        };
        LogView {
            bytes,
            deps,
            writes,
            write_count,
        }
    }

    /// The whole encoded log: a server forwards it with [`super::MessageWriter::push_log_bytes`].
    pub fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// Index of the middlebox (in chain order) whose transaction made this log.
    pub fn middlebox(&self) -> u8 {
        self.bytes.get(2).copied().unwrap_or(0)
    }

    /// What the transaction did.
    pub fn kind(&self) -> LogKind {
        self.bytes
            .get(3)
            .and_then(|&k| LogKind::from_code(k))
            .unwrap_or(LogKind::Noop)
    }

    /// Number of dependency entries.
    pub fn dep_count(&self) -> usize {
        self.deps.len() / ENTRY_LEN
    }

    /// Number of writes.
    pub fn write_count(&self) -> usize {
        usize::from(self.write_count)
    }

    /// The dependency entries, partitions strictly increasing.
    pub fn deps(&self) -> DepIter<'a> {
        DepIter { rest: self.deps }
    }

    /// The writes, in the order the transaction made them.
    pub fn writes(&self) -> WriteIter<'a> {
        WriteIter {
            rest: self.writes,
            remaining: self.write_count,
        }
    }
}

impl LogSource for LogView<'_> {
    fn kind(&self) -> LogKind {
        LogView::kind(self)
    }

    fn deps(&self) -> impl Iterator<Item = DepEntry> + Clone + '_ {
        LogView::deps(self)
    }

    fn writes(&self) -> impl Iterator<Item = Write<'_>> + '_ {
        LogView::writes(self)
    }
}

/// One checked commit vector of a piggyback message: sparse entries, partitions increasing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CvView<'a> {
    bytes: &'a [u8],
}

impl<'a> CvView<'a> {
    /// Validates `bytes` as exactly one encoded commit vector.
    pub fn new_checked(bytes: &'a [u8]) -> Result<Self, WireError> {
        if !check_cv::<WireError>(bytes)?.is_empty() {
            return Err(WireError::BadMessage(
                "trailing bytes after the commit vector",
            ));
        }
        Ok(CvView { bytes })
    }

    /// The whole encoded commit vector.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// Index of the middlebox whose state this vector describes.
    pub fn middlebox(&self) -> u8 {
        self.bytes.first().copied().unwrap_or(0)
    }

    /// Number of entries.
    pub fn entry_count(&self) -> usize {
        usize::from(le16_at(self.bytes, 1))
    }

    /// The entries, partitions strictly increasing.
    pub fn entries(&self) -> DepIter<'a> {
        DepIter {
            rest: self.bytes.get(CV_HEADER_LEN..).unwrap_or_default(),
        }
    }
}

/// Iterator over the logs of a [`MessageView`].
#[derive(Debug, Clone)]
pub struct LogIter<'a> {
    rest: &'a [u8],
    remaining: u16,
}

impl<'a> Iterator for LogIter<'a> {
    type Item = LogView<'a>;

    #[inline]
    fn next(&mut self) -> Option<LogView<'a>> {
        self.remaining = self.remaining.checked_sub(1)?;
        let len = usize::from(le16_at(self.rest, 0));
        let (bytes, rest) = self.rest.split_at_checked(len)?;
        self.rest = rest;
        Some(LogView::of_checked(bytes))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = usize::from(self.remaining);
        (n, Some(n))
    }
}

impl ExactSizeIterator for LogIter<'_> {}

/// Iterator over the commit vectors of a [`MessageView`].
#[derive(Debug, Clone)]
pub struct CvIter<'a> {
    rest: &'a [u8],
    remaining: u16,
}

impl<'a> Iterator for CvIter<'a> {
    type Item = CvView<'a>;

    #[inline]
    fn next(&mut self) -> Option<CvView<'a>> {
        self.remaining = self.remaining.checked_sub(1)?;
        let (&[_, c0, c1], _) = self.rest.split_first_chunk::<CV_HEADER_LEN>()?;
        let len = CV_HEADER_LEN + usize::from(le16([c0, c1])) * ENTRY_LEN;
        let (bytes, rest) = self.rest.split_at_checked(len)?;
        self.rest = rest;
        Some(CvView { bytes })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = usize::from(self.remaining);
        (n, Some(n))
    }
}

impl ExactSizeIterator for CvIter<'_> {}

/// Iterator over dependency or commit-vector entries: the checked entries' bytes, one
/// `ENTRY_LEN` (10) chunk each. A checked view's entries take exactly their count times
/// `ENTRY_LEN` (10) bytes, so the bytes alone tell when to stop.
#[derive(Debug, Clone)]
pub struct DepIter<'a> {
    rest: &'a [u8],
}

impl Iterator for DepIter<'_> {
    type Item = DepEntry;

    #[inline]
    fn next(&mut self) -> Option<DepEntry> {
        let (&[p0, p1, s @ ..], rest) = self.rest.split_first_chunk::<ENTRY_LEN>()?;
        self.rest = rest;
        Some(DepEntry {
            partition: Partition(le16([p0, p1])),
            seq: Seq(u64::from_le_bytes(s)),
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.rest.len() / ENTRY_LEN;
        (n, Some(n))
    }
}

impl ExactSizeIterator for DepIter<'_> {}

/// Iterator over the writes of a log. On bytes that are not a checked log's writes (which it
/// never sees) it stops early rather than panic.
#[derive(Debug, Clone)]
pub struct WriteIter<'a> {
    rest: &'a [u8],
    remaining: u16,
}

impl<'a> Iterator for WriteIter<'a> {
    type Item = Write<'a>;

    #[inline]
    fn next(&mut self) -> Option<Write<'a>> {
        // A checked log's writes end with its last write: the bytes tell when to stop.
        let (&header, rest) = self.rest.split_first_chunk::<WRITE_HEADER_LEN>()?;
        let header = WriteHeader::of(header);
        self.remaining = self.remaining.saturating_sub(1);
        let (key, rest) = rest.split_at_checked(usize::from(header.key_len))?;
        let (value, rest) = match header.value_len {
            DELETE => (None, rest),
            n => {
                let (value, rest) = rest.split_at_checked(usize::from(n))?;
                (Some(value), rest)
            }
        };
        self.rest = rest;
        Some(Write { key, value })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = usize::from(self.remaining);
        (n, Some(n))
    }
}

impl ExactSizeIterator for WriteIter<'_> {}
