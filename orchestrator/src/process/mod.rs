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
pub mod heart;
pub mod keepalive;
pub mod lane;
pub mod lanes;
pub mod launcher;
pub mod loss;
pub mod node;
pub mod observe;
pub mod orchestrator;
mod poll;
pub mod recent;
mod rejoin;
pub mod room;
pub mod serving;
pub mod shape;
pub mod succession;
pub mod tally;

use std::io::Read;
use std::marker::PhantomData;
use std::path::Path;

use ftc_chain::spec::ChainSpec;
use ftc_node::Mode;

use crate::control::{ControlError, Key, Nonce};

/// Run the calling thread, one that mostly sleeps and must wake on time on a loaded host (a
/// node's heartbeats, the orchestrator's failure detection and the readers of its control
/// connections), under the real-time round-robin policy until the guard returned is dropped, as
/// corosync runs its own: it then runs as soon as it wakes, ahead of the busy threads, and
/// live nodes are taken for failed less often (bench/RESULTS.md, session 21; when the whole
/// machine stalls, as this 2-core VM did now and then for up to 80 ms, nothing helps but a
/// longer `--heartbeat-ms` or more `--misses`). Processes it starts get the normal
/// policy (`SCHED_RESET_ON_FORK`); threads it starts inherit the real-time one. Without the
/// privilege (CAP_SYS_NICE) the thread keeps its policy, and says so in the debug log.
#[must_use = "the thread runs real-time only while the guard lives"]
pub(crate) fn wake_on_time(what: &str) -> OnTime {
    let mut policy = 0;
    let mut previous = libc::sched_param { sched_priority: 0 };
    let realtime = libc::sched_param { sched_priority: 10 };
    // SAFETY: reads, then sets, the calling thread's own policy through valid pointers.
    let r = unsafe {
        match libc::pthread_getschedparam(libc::pthread_self(), &mut policy, &mut previous) {
            0 => libc::pthread_setschedparam(
                libc::pthread_self(),
                libc::SCHED_RR | libc::SCHED_RESET_ON_FORK,
                &realtime,
            ),
            e => e,
        }
    };
    if r != 0 {
        tracing::debug!(
            "{what}: normal scheduling ({})",
            std::io::Error::from_raw_os_error(r)
        );
        return OnTime(None, PhantomData);
    }
    OnTime(Some((policy, previous)), PhantomData)
}

/// While it lives, its thread runs real-time ([`wake_on_time`]); then its policy before.
pub(crate) struct OnTime(
    Option<(libc::c_int, libc::sched_param)>,
    /// Not `Send`: the policy is restored on the thread that raised it.
    PhantomData<*const ()>,
);

impl Drop for OnTime {
    fn drop(&mut self) {
        if let Some((policy, param)) = self.0 {
            // SAFETY: sets the calling thread's own policy from a valid `sched_param`; the
            // guard is not `Send`, so this is the thread that raised it.
            unsafe { libc::pthread_setschedparam(libc::pthread_self(), policy, &param) };
        }
    }
}

/// A value nobody can guess (a control connection's challenge), from the kernel's random source
/// (getrandom(2), which blocks only until the source is seeded at boot).
pub fn unguessable() -> Nonce {
    let mut bytes = Nonce::default();
    let mut got = 0;
    while got < bytes.len() {
        let rest = &mut bytes[got..];
        // SAFETY: getrandom writes at most `rest.len()` bytes into `rest`, which is valid for
        // writes of that many.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        match usize::try_from(n) {
            Ok(n) => got += n,
            Err(_) => {
                let e = std::io::Error::last_os_error();
                assert_eq!(e.kind(), std::io::ErrorKind::Interrupted, "getrandom: {e}");
            }
        }
    }
    bytes
}

/// What tells one chain from another in a node's `Join`: a hash of the mode it runs in
/// (`--mode`) and of its spec as loaded (its middleboxes, their settings, f, the partitions), so
/// that comments, layout and key order do not count. A node started with another spec or another
/// mode than its orchestrator's is refused ([`Chain`]): an NF node in an FTC chain would keep no
/// replicas, and the state it heads would be lost at its recovery.
pub fn chain_fingerprint(spec: &ChainSpec, mode: Mode) -> u64 {
    let hash = blake3::hash(format!("{} {spec:?}", mode.name()).as_bytes());
    let mut first = [0; 8];
    first.copy_from_slice(&hash.as_bytes()[..8]);
    u64::from_be_bytes(first)
}

/// The chain an orchestrator deploys, as the nodes' `Join`s name it: the fingerprint of its spec
/// in its mode, and those of the same spec in the other modes, so that a node of another mode
/// is told which.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    mode: Mode,
    /// [`chain_fingerprint`] of the spec in every mode.
    fingerprints: Vec<(Mode, u64)>,
}

impl Chain {
    /// The chain of `spec` run in `mode`.
    pub fn new(spec: &ChainSpec, mode: Mode) -> Chain {
        Chain {
            mode,
            fingerprints: Mode::ALL
                .iter()
                .map(|&m| (m, chain_fingerprint(spec, m)))
                .collect(),
        }
    }

    /// Why a node whose `Join` carries the fingerprint `chain` may not join; `None` when it may.
    pub fn refusal(&self, chain: u64) -> Option<String> {
        match self.fingerprints.iter().find(|&&(_, f)| f == chain) {
            Some(&(mode, _)) if mode == self.mode => None,
            Some(&(mode, _)) => Some(format!(
                "the node runs --mode {}, the orchestrator --mode {} (give both the same)",
                mode.name(),
                self.mode.name()
            )),
            None => Some(
                "the node runs another chain spec than the orchestrator's (give both the same \
                 file)"
                    .into(),
            ),
        }
    }
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
    #[error(
        "the secret file {path} is longer than {MAX_SECRET_FILE} bytes: is it the right file?"
    )]
    TooLong { path: String },
}

/// The longest secret file read: a key is a line of text, and `--secret-file /dev/zero` must not
/// take the machine's memory.
pub const MAX_SECRET_FILE: u64 = 64 * 1024;

/// The key in the secret file at `path`: its bytes, without trailing line breaks and blanks (so
/// that `echo secret > file` and `printf secret > file` give the same key). Empty is refused.
pub fn read_secret(path: &Path) -> Result<Key, SecretError> {
    let shown = || path.display().to_string();
    let read = |source| SecretError::Read {
        path: shown(),
        source,
    };
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_SECRET_FILE + 1).read_to_end(&mut bytes))
        .map_err(read)?;
    if bytes.len() as u64 > MAX_SECRET_FILE {
        return Err(SecretError::TooLong { path: shown() });
    }
    let end = bytes
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(0, |i| i + 1);
    Key::new(&bytes[..end]).map_err(|source| SecretError::Key {
        path: shown(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::wake_on_time;

    fn policy() -> libc::c_int {
        let (mut policy, mut param) = (0, libc::sched_param { sched_priority: 0 });
        // SAFETY: reads the calling thread's policy through valid pointers.
        let r =
            unsafe { libc::pthread_getschedparam(libc::pthread_self(), &mut policy, &mut param) };
        assert_eq!(r, 0);
        policy & !libc::SCHED_RESET_ON_FORK
    }

    /// Where the privilege is there (root), the thread runs round-robin real-time while the
    /// guard lives, processes it starts do not, and its policy comes back when the guard goes.
    #[test]
    fn a_thread_runs_real_time_while_its_guard_lives() {
        std::thread::spawn(|| {
            let before = policy();
            let on_time = wake_on_time("test");
            if ftc_node::netns::is_root() {
                assert_eq!(policy(), libc::SCHED_RR);
                // Field 41 of /proc/PID/stat: the scheduling policy.
                let out = std::process::Command::new("sh")
                    .args(["-c", "cut -d' ' -f41 /proc/$$/stat"])
                    .output()
                    .unwrap();
                let child: libc::c_int =
                    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
                assert_eq!(child, libc::SCHED_OTHER, "a process it started");
            } else {
                eprintln!("skipped the real-time half: needs CAP_SYS_NICE (root)");
            }
            drop(on_time);
            assert_eq!(policy(), before);
        })
        .join()
        .unwrap();
    }
}
