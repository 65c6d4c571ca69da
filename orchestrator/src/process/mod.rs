//! Every server its own process (issue 4). [`node`] is one server as a process: a UDP data
//! socket, a TCP state-transfer listener, a control connection to the orchestrator.
//! [`orchestrator`] is the orchestrator as a process: control connections from the nodes, the
//! [`Coordinator`](crate::coordinator::Coordinator) driven from them, replacements started by a
//! [`launcher`]. [`chaos`] runs a whole chain that way and kills real processes with SIGKILL.
//! [`edges`] are a node's AF_XDP interfaces where customer frames enter and leave the chain.
//! [`observe`] checks output commit across the processes of a chaos run.
//! Every control message is authenticated with the deployment's secret ([`read_secret`]).

pub mod chaos;
pub mod edges;
pub mod launcher;
pub mod loss;
pub mod node;
pub mod observe;
pub mod orchestrator;
pub mod serving;
pub mod shape;

use std::path::Path;

use ftc_chain::spec::ChainSpec;

use crate::control::{ControlError, Key};

/// What tells one chain spec from another in a node's `Join`: a hash of the spec as loaded (its
/// middleboxes, their settings, f, the partitions), so that comments, layout and key order do
/// not count. A node started with another spec than its orchestrator's is refused.
pub fn chain_fingerprint(spec: &ChainSpec) -> u64 {
    let hash = blake3::hash(format!("{spec:?}").as_bytes());
    let mut first = [0; 8];
    first.copy_from_slice(&hash.as_bytes()[..8]);
    u64::from_be_bytes(first)
}

/// Why the deployment's secret is not usable.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("cannot read the secret file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("the secret file {path}: {source}")]
    Key { path: String, source: ControlError },
}

/// The key in the secret file at `path`: its bytes, without trailing line breaks and blanks (so
/// that `echo secret > file` and `printf secret > file` give the same key). Empty is refused.
pub fn read_secret(path: &Path) -> Result<Key, SecretError> {
    let shown = || path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| SecretError::Read {
        path: shown(),
        source,
    })?;
    let end = bytes
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(0, |i| i + 1);
    Key::new(&bytes[..end]).map_err(|source| SecretError::Key {
        path: shown(),
        source,
    })
}
