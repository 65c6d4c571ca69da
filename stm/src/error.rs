//! Errors of the state store.

/// What can go wrong with a store, a worker handle or a log handed to a replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StmError {
    #[error("partition count {0} is not a power of two in 1..=65536")]
    BadPartitionCount(u32),
    #[error("worker count must be in 1..=1024, not {0}")]
    BadWorkerCount(u16),
    #[error("worker {0} is out of range or already has a handle")]
    WorkerUnavailable(u16),
    #[error("malformed log: {0}")]
    Malformed(&'static str),
    #[error("snapshot does not fit: {0}")]
    BadSnapshot(&'static str),
}
