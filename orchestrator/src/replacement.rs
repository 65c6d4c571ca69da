//! What a replacement server does before it serves (DESIGN.md §8 step 3), whatever launched it:
//! fetch the groups the orchestrator's `Recover` names, in parallel over TCP, until it holds
//! every one of them, then restore its head and its replica from them.

use std::time::{Duration, Instant};

use ftc_chain::ring::{Ring, ServerId};
use ftc_node::{Heads, Server, ServerConfig};
use ftc_replica::{GroupState, ReplicaError};

use crate::control::{Fetch, Key};
use crate::transfer::{self, TransferError};

/// How long one group's fetch may take (connecting, and between reads).
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// The groups a replacement fetched so far.
#[derive(Debug, Default)]
pub struct Fetched {
    /// The groups of the first `Recover`: later ones only move some of them to other sources.
    wanted: Option<Vec<u8>>,
    /// One state per group. A group is fetched once: a later `Recover` names only groups that
    /// could not be fetched (the orchestrator launches a new replacement rather than have one
    /// fetch again what it holds: see `Coordinator::add_failure`).
    states: Vec<GroupState>,
    bytes: u64,
}

impl Fetched {
    /// Fetch, each over its own connection and all at once, the groups of `fetch` (a `Recover` of
    /// `epoch` in the run `run`) not held yet. `failed` hears of every one that could not be
    /// fetched, or whose state is not one of the group asked for (the replacement reports
    /// `TransferFailed`, and the orchestrator names another source). Whether every group is now
    /// held.
    pub fn fetch(
        &mut self,
        key: &Key,
        run: u64,
        epoch: u32,
        fetch: &[Fetch],
        mut failed: impl FnMut(&Fetch, &TransferError),
    ) -> bool {
        self.wanted
            .get_or_insert_with(|| fetch.iter().map(|f| f.group).collect());
        let results: Vec<_> = std::thread::scope(|s| {
            let handles: Vec<_> = fetch
                .iter()
                .filter(|f| !self.holds(f.group))
                .map(|f| {
                    s.spawn(move || {
                        let t = Instant::now();
                        let (group, as_head) = (f.group, f.as_head);
                        let got =
                            transfer::fetch(f.addr, key, run, epoch, group, as_head, FETCH_TIMEOUT);
                        tracing::debug!(
                            "fetched m{} from server {} in {:.2} ms: {} bytes",
                            f.group,
                            f.source,
                            t.elapsed().as_secs_f64() * 1e3,
                            got.as_ref().map_or(0, Vec::len)
                        );
                        (f, got)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("a fetch panicked"))
                .collect()
        });
        for (f, got) in results {
            let state = got.and_then(|bytes| {
                let state = GroupState::decode(&bytes)
                    .map_err(|_| TransferError::Unexpected("a group state that does not decode"))?;
                if state.middlebox.0 != f.group {
                    return Err(TransferError::Unexpected("the state of another group"));
                }
                Ok((bytes.len(), state))
            });
            match state {
                Ok((len, state)) => {
                    self.bytes += len as u64;
                    self.states.push(state);
                }
                Err(e) => failed(f, &e),
            }
        }
        self.wanted.iter().flatten().all(|&g| self.holds(g))
    }

    /// Whether the state of `group` was fetched.
    fn holds(&self, group: u8) -> bool {
        self.states.iter().any(|s| s.middlebox.0 == group)
    }

    /// The state bytes moved.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The replacement at `position`: the head's store restored from its group's state
    /// ([`Heads::restored_head`]), the replica from the others ([`Server::restore`]).
    pub fn restore<'h, P: Clone>(
        &self,
        heads: &'h Heads,
        ring: Ring,
        position: ServerId,
        partitions: u32,
        config: ServerConfig,
        now: u64,
    ) -> Result<Server<'h, P>, ReplicaError> {
        let t = Instant::now();
        let groups = &self.states;
        let head = heads.restored_head(&ring, position, groups)?;
        let head_ms = t.elapsed().as_secs_f64() * 1e3;
        let server = Server::restore(ring, position, partitions, head, config, groups, now);
        tracing::debug!(
            "server {}: restored from {} groups in {:.2} ms (the head's store in {head_ms:.2} ms)",
            position.0,
            groups.len(),
            t.elapsed().as_secs_f64() * 1e3
        );
        server
    }
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    use ftc_chain::ring::MbIndex;
    use ftc_stm::Store;

    use super::*;

    #[test]
    fn a_state_of_another_group_than_the_one_asked_for_is_a_failed_fetch() {
        let key = Key::new(b"test secret").unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = AtomicBool::new(false);
        // A source that answers every request, verified, with the state of m1.
        let m1 = GroupState {
            middlebox: MbIndex(1),
            snapshot: Store::new(1, 1).unwrap().export_bytes().unwrap(),
            retained: Vec::new(),
        }
        .encode()
        .unwrap();
        std::thread::scope(|s| {
            let source = s.spawn(|| {
                let run = AtomicU64::new(1);
                transfer::serve(&listener, &key, &run, &stop, |_, _, _| Some(&m1), |_| {})
            });
            let mut fetched = Fetched::default();
            let mut failed = Vec::new();
            let m0 = Fetch {
                group: 0,
                as_head: false,
                source: 1,
                addr,
            };
            let done = fetched.fetch(&key, 1, 1, &[m0], |f, e| {
                failed.push((f.group, f.source, e.to_string()));
            });
            stop.store(true, Ordering::Release);
            source.join().unwrap().unwrap();
            assert!(!done);
            assert_eq!(
                failed,
                [(
                    0,
                    1,
                    "state transfer: the source answered the state of another group".to_string()
                )]
            );
            assert_eq!(fetched.bytes(), 0);
        });
    }
}
