//! The small value types shared by the STM, the wire format and the replication cores.

/// Index of a state partition (`0 .. P`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Partition(pub u16);

/// A per-partition sequence number: how many update transactions touched the partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Seq(pub u64);

/// One entry of a dependency vector or commit vector: partition `p` at sequence `seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DepEntry {
    pub partition: Partition,
    pub seq: Seq,
}

impl DepEntry {
    /// Partition `partition` at sequence `seq`.
    pub const fn new(partition: u16, seq: u64) -> Self {
        DepEntry {
            partition: Partition(partition),
            seq: Seq(seq),
        }
    }
}

/// What a transaction did to the state, and so what kind of piggyback log it produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LogKind {
    /// It wrote: dependencies are the pre-increment sequences of every partition read or written.
    Update,
    /// It only read: dependencies are the sequences of the partitions read; the vector is unchanged.
    ReadOnly,
    /// It touched no state.
    Noop,
}

impl LogKind {
    /// The wire code of this kind.
    pub const fn code(self) -> u8 {
        match self {
            LogKind::Update => 0,
            LogKind::ReadOnly => 1,
            LogKind::Noop => 2,
        }
    }

    /// The kind with wire code `code`, if any.
    pub const fn from_code(code: u8) -> Option<Self> {
        match code {
            0 => Some(LogKind::Update),
            1 => Some(LogKind::ReadOnly),
            2 => Some(LogKind::Noop),
            _ => None,
        }
    }
}

/// One write of a transaction: `value` is `None` for a delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Write<'a> {
    pub key: &'a [u8],
    pub value: Option<&'a [u8]>,
}

/// Anything that reads as a piggyback log: a fresh commit at a head, or a log parsed off the wire.
///
/// Dependencies come in strictly increasing partition order.
pub trait LogSource {
    /// What the transaction did.
    fn kind(&self) -> LogKind;
    /// The dependency entries (partition, sequence), in increasing partition order.
    fn deps(&self) -> impl Iterator<Item = DepEntry> + Clone + '_;
    /// The writes, in the order the transaction made them; at most one per key.
    fn writes(&self) -> impl Iterator<Item = Write<'_>> + '_;
}
