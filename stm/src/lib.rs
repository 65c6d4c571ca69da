//! ftc-stm: the state of one middlebox as a partitioned key-value store, changed only by packet
//! transactions.
//!
//! - [`Store`] holds P partitions (a power of two); a key's partition is a stable hash
//!   ([`partition_of`]) that every process and build agrees on.
//! - At a head, a [`Worker`] runs packet transactions ([`Txn`]) under strict two-phase locking on
//!   partitions with wound-wait ([`lock`]); each commit yields a [`CommitRecord`]: the dependency
//!   entries of DESIGN.md §5 and the writes, ready to ride on the packet as a piggyback log.
//! - At a replica, [`Store::apply`] applies such a log when its dependencies match the store's
//!   vector (MAX), skips duplicates and says when to hold; [`Store::is_satisfied`] tests
//!   read-only logs.
//! - [`Store::export_bytes`] / [`Store::import`] / [`Store::restore`] move a whole store with
//!   its vector in a checked byte form (recovery); [`Snapshot`] is that form decoded, for checks.
//!
//! With one worker the lock manager never sees contention and a transaction costs one
//! uncontended compare-and-swap per partition it touches. The crate does no I/O and reads no
//! clock.

mod error;
mod hash;
mod ids;
pub mod lock;
mod snapshot;
mod store;
mod sync;
mod txn;
mod typed;

pub use error::StmError;
pub use hash::{key_hash, partition_of};
pub use ids::{DepEntry, LogKind, LogSource, Partition, Seq, Write};
pub use snapshot::{Snapshot, MAX_ITEM_LEN};
pub use store::{ApplyOutcome, Store, MAX_WORKERS};
pub use txn::{Abort, CommitRecord, Txn, Worker};
pub use typed::Record;
