//! State transfer over TCP (DESIGN.md §8 step 3): a source challenges each connection with a
//! fresh nonce (`TransferChallenge`) and serves the `FetchGroup` request that carries it with its
//! group's state in an authenticated `GroupState` frame; a replacement fetches each of its groups
//! over its own connection, in parallel.

use std::collections::HashMap;
use std::io::BufReader;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::Duration;

use ftc_chain::ring::MbIndex;

use crate::admission::{Admission, Admitted};
use crate::control::{
    read_message, write_group_state, write_message, ControlError, Key, Message, CONTROL_MAX_BODY,
    DEFAULT_MAX_BODY, MAX_GROUP_STATE,
};
use crate::process::keepalive::keep_alive;
use crate::process::unguessable;

/// How long a write of a state may make no progress before the source gives up the transfer: its
/// requester stopped reading (and its own reads, given as long by the replacement, time out too).
const WRITE_PATIENCE: Duration = Duration::from_secs(5);

/// How many transfers a source serves at once, each from its verified request to the end of its
/// answer. A replacement fetches each of its groups over a connection of its own: at most
/// f + 1 = 9 (f ≤ 8), and several replacements may fetch from one source at once; 64 leaves them
/// room. One more is closed unanswered, with a warning naming its requester: its fetch fails,
/// and the orchestrator plans it again as any failed fetch.
pub const MAX_TRANSFERS: usize = 64;

/// Why a fetch failed; the replacement reports `TransferFailed` and the orchestrator re-plans.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    #[error("state transfer: {0}")]
    Io(#[from] std::io::Error),
    #[error("state transfer: {0}")]
    Control(#[from] ControlError),
    #[error("state transfer: the source answered {0}")]
    Unexpected(&'static str),
    #[error(
        "state transfer: m{group}'s state is {bytes} bytes, more than a transfer carries \
         ({MAX_GROUP_STATE} bytes): it cannot be recovered"
    )]
    TooLarge { group: u8, bytes: usize },
}

/// Serve the state transfers of one server of the run `run` until `stop` (the run may change
/// meanwhile: a node that rejoins another orchestrator takes its run): every connection is
/// challenged first (`TransferChallenge` of the run and a fresh nonce, [`unguessable`]), then asks
/// for one group (`FetchGroup`, which must carry its connection's nonce) and gets
/// `export(run, epoch, group)` as `GroupState`, or is closed when that is `None` (another run's
/// request, not a member, or the server is gone). The state is sent from where `export` keeps it,
/// not copied (an `Arc` of bytes shared with other fetches will do).
/// Requests of one run, epoch and group share one export while any of them is answered: `export`
/// is called only when no transfer of that state is under way or waiting for its export (the
/// others wait for it), and its state is dropped when the last transfer of it ends; `None` is
/// not kept (the next request exports again). A request replayed many times at once, or a
/// replacement's retries piling up, thus hold one copy of a state, not one each; a source fences
/// to the request's epoch on export, so that any copy taken for that epoch answers it.
/// Unauthenticated or malformed requests, and those that do not carry their connection's nonce
/// (recorded on another connection and replayed: [`ControlError::NotChallenged`]), are dropped
/// unanswered, before any export, and counted by `rejected`. Connections are
/// anyone's until their request verifies: at most [`MAX_WAITING`](crate::admission::MAX_WAITING)
/// wait for theirs at once (one more closes the one that waited longest), and one whose request has
/// not arrived whole [`FIRST_FRAME`](crate::admission::FIRST_FRAME) after it opened is closed.
/// Verified requests are answered [`MAX_TRANSFERS`] at a time; one more is closed unanswered. A
/// connection that cannot be taken for want of resources (descriptors, memory, a thread) is
/// dropped, and serving goes on; only an error of the listener itself ends it. A requester that
/// stops reading the state is given up after `WRITE_PATIENCE` without progress, one whose host
/// went away without a word after
/// [`USER_TIMEOUT`](crate::process::keepalive::USER_TIMEOUT) (TCP keepalive), and the
/// transfers still under way when `stop` is raised are cut off: serving ends then, whoever
/// asked.
pub fn serve<S: AsRef<[u8]> + Send + Sync>(
    listener: &TcpListener,
    key: &Key,
    run: &AtomicU64,
    stop: &AtomicBool,
    export: impl Fn(u64, u32, MbIndex) -> Option<S> + Sync,
    rejected: impl Fn(&ControlError) + Sync,
) -> std::io::Result<()> {
    listener.set_nonblocking(true)?;
    let admission = Admission::new("state transfer");
    let served = Served {
        run,
        places: AtomicUsize::new(0),
        copies: Copies::default(),
        export,
    };
    std::thread::scope(|scope| {
        while !stop.load(Ordering::Acquire) {
            match listener.accept() {
                Ok((stream, from)) => {
                    let admitted = match admission.admit(&stream) {
                        Ok(admitted) => admitted,
                        Err(e) => {
                            tracing::warn!("state transfer to {from}: {e}");
                            continue;
                        }
                    };
                    let (served, rejected) = (&served, &rejected);
                    let spawned = std::thread::Builder::new()
                        .name("transfer".into())
                        .spawn_scoped(scope, move || {
                            match answer(stream, from, &admitted, key, served) {
                                Err(TransferError::Control(e)) => rejected(&e),
                                Err(e @ TransferError::TooLarge { .. }) => tracing::error!("{e}"),
                                _ => {}
                            }
                        });
                    if let Err(e) = spawned {
                        tracing::warn!("state transfer to {from}: no thread to serve it: {e}");
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    wait_readable(listener, Duration::from_millis(20));
                }
                Err(e) if passing(&e) => {
                    tracing::warn!("state transfer: {e}");
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => {
                    admission.close_all();
                    return Err(e);
                }
            }
        }
        admission.close_all();
        Ok(())
    })
}

/// What the transfers of one [`serve`] share.
struct Served<'r, S, E> {
    /// The run whose transfers they are, named in each connection's challenge.
    run: &'r AtomicU64,
    /// How many are under way, at most [`MAX_TRANSFERS`].
    places: AtomicUsize,
    copies: Copies<S>,
    export: E,
}

impl<S, E> Served<'_, S, E> {
    /// A place for one more transfer, if fewer than [`MAX_TRANSFERS`] are under way; dropping it
    /// gives it back.
    fn place(&self) -> Option<Place<'_>> {
        let places = &self.places;
        places
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < MAX_TRANSFERS).then_some(n + 1)
            })
            .ok()
            .map(|_| Place(places))
    }
}

/// One transfer's place among the [`MAX_TRANSFERS`].
struct Place<'a>(&'a AtomicUsize);

impl Drop for Place<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Which state a request asks for: its run, epoch and group.
type Asked = (u64, u32, u8);

/// The states being sent, one copy of each, for as long as a transfer holds it.
struct Copies<S> {
    states: Mutex<HashMap<Asked, State<S>>>,
    /// An export ended (a state is kept, or none).
    exported: Condvar,
}

impl<S> Default for Copies<S> {
    fn default() -> Self {
        Copies {
            states: Mutex::new(HashMap::new()),
            exported: Condvar::new(),
        }
    }
}

/// A state asked for.
enum State<S> {
    /// A transfer exports it; the others wait.
    Exporting,
    /// Held by the transfers that send it (none: gone).
    Kept(Weak<S>),
}

impl<S> Copies<S> {
    fn states(&self) -> MutexGuard<'_, HashMap<Asked, State<S>>> {
        self.states.lock().expect("no holder panics")
    }

    /// The state `asked` for: the copy that a transfer under way holds, or else `export()`'s.
    /// One transfer exports a state at a time, outside the lock (an export of another state goes
    /// on meanwhile); the others asking for it wait for its answer, and export again if that is
    /// `None`, which is not kept.
    fn get(&self, asked: Asked, export: impl FnOnce() -> Option<S>) -> Option<Arc<S>> {
        let mut states = self.states();
        loop {
            match states.get(&asked) {
                Some(State::Exporting) => {
                    states = self.exported.wait(states).expect("no holder panics");
                    continue;
                }
                Some(State::Kept(copy)) => {
                    if let Some(state) = copy.upgrade() {
                        return Some(state);
                    }
                }
                None => {}
            }
            break;
        }
        // Those no transfer holds any more go: the map holds what is sent or exported, and this.
        states.retain(|_, copy| match copy {
            State::Exporting => true,
            State::Kept(copy) => copy.strong_count() > 0,
        });
        states.insert(asked, State::Exporting);
        drop(states);
        let mut exporting = Exporting {
            copies: self,
            asked,
            kept: None,
        };
        let state = export().map(Arc::new);
        exporting.kept = state.as_ref().map(Arc::downgrade);
        state
    }
}

/// One transfer's export of a state; when it ends (or `export` panics), its state is kept or
/// forgotten, and those waiting for it are woken.
struct Exporting<'a, S> {
    copies: &'a Copies<S>,
    asked: Asked,
    kept: Option<Weak<S>>,
}

impl<S> Drop for Exporting<'_, S> {
    fn drop(&mut self) {
        let mut states = self.copies.states();
        match self.kept.take() {
            Some(copy) => states.insert(self.asked, State::Kept(copy)),
            None => states.remove(&self.asked),
        };
        drop(states);
        self.copies.exported.notify_all();
    }
}

/// Whether an error of `accept` concerns one connection or the host's resources for now, not
/// the listener: serving goes on after it.
fn passing(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(
            libc::EMFILE
                | libc::ENFILE
                | libc::ENOBUFS
                | libc::ENOMEM
                | libc::ECONNABORTED
                | libc::EINTR
                | libc::EPROTO
                | libc::EPERM
        )
    )
}

/// Waits until `listener` has a connection to accept, or `timeout` passed (or a signal came).
fn wait_readable(listener: &TcpListener, timeout: Duration) {
    let mut fd = libc::pollfd {
        fd: listener.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
    // SAFETY: `fd` is one valid pollfd that outlives the call; the listener's descriptor stays
    // open while it is borrowed.
    unsafe { libc::poll(&mut fd, 1, ms) };
}

/// One connection, `admitted` until its request arrives: a challenge, a request that carries
/// its nonce, an answer.
fn answer<S: AsRef<[u8]>>(
    stream: TcpStream,
    from: SocketAddr,
    admitted: &Admitted<'_>,
    key: &Key,
    served: &Served<'_, S, impl Fn(u64, u32, MbIndex) -> Option<S>>,
) -> Result<(), TransferError> {
    stream.set_nonblocking(false)?;
    stream.set_nodelay(true)?;
    stream.set_write_timeout(Some(WRITE_PATIENCE))?;
    keep_alive(&stream)?;
    let given = unguessable();
    let challenge = Message::TransferChallenge {
        run: served.run.load(Ordering::Acquire),
        nonce: given,
    };
    // A few dozen bytes into a fresh connection's empty buffer: the write does not wait.
    write_message(&mut &stream, &challenge, key)?;
    let mut reader = BufReader::new(admitted.reader(&stream));
    let Message::FetchGroup {
        run,
        epoch,
        group,
        nonce,
        ..
    } = read_message(&mut reader, key, CONTROL_MAX_BODY)?
    else {
        return Err(TransferError::Unexpected("something other than FetchGroup"));
    };
    if nonce != given {
        return Err(ControlError::NotChallenged.into());
    }
    // Given back when the answer ends, before the connection closes.
    let Some(_place) = served.place() else {
        tracing::warn!(
            "state transfer to {from}: {MAX_TRANSFERS} transfers under way; its request for m{group} \
             (run {run}, epoch {epoch}) is closed unanswered"
        );
        return Ok(());
    };
    admitted.proven();
    let export = || (served.export)(run, epoch, MbIndex(group));
    let Some(copy) = served.copies.get((run, epoch, group), export) else {
        return Ok(());
    };
    let state: &[u8] = (*copy).as_ref();
    // The fetcher would refuse it (and a frame holds 4 GiB at most): not sent for nothing.
    fits_a_transfer(group, state.len())?;
    // Unbuffered: the state goes to the socket in large chunks as its tag is computed.
    write_group_state(&mut &stream, run, epoch, group, state, key)?;
    Ok(())
}

/// Whether a state of `bytes` bytes of group `group` fits a transfer ([`MAX_GROUP_STATE`]).
fn fits_a_transfer(group: u8, bytes: usize) -> Result<(), TransferError> {
    if bytes > MAX_GROUP_STATE {
        return Err(TransferError::TooLarge { group, bytes });
    }
    Ok(())
}

/// Fetch `group`'s state (in `epoch` of the run `run`) from the source at `addr`: its bytes. The
/// source's challenge comes first: one of another run is refused (the source serves another
/// chain, or an earlier orchestrator's), and the request carries its nonce.
pub fn fetch(
    addr: SocketAddr,
    key: &Key,
    run: u64,
    epoch: u32,
    group: u8,
    as_head: bool,
    timeout: Duration,
) -> Result<Vec<u8>, TransferError> {
    let stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(timeout))?;
    // Unbuffered: read_message reads no byte past the challenge's frame.
    let nonce = match read_message(&mut &stream, key, CONTROL_MAX_BODY) {
        Ok(Message::TransferChallenge { run: r, nonce }) if r == run => nonce,
        Ok(Message::TransferChallenge { .. }) => {
            return Err(TransferError::Unexpected("a challenge of another run"))
        }
        Ok(_) => {
            return Err(TransferError::Unexpected(
                "something other than a challenge",
            ))
        }
        Err(ControlError::Closed) => return Err(TransferError::Unexpected("nothing: closed")),
        Err(e) => return Err(e.into()),
    };
    write_message(
        &mut &stream,
        &Message::FetchGroup {
            run,
            epoch,
            group,
            as_head,
            nonce,
        },
        key,
    )?;
    // Unbuffered: the state arrives in large reads straight into its buffer.
    match read_message(&mut &stream, key, DEFAULT_MAX_BODY) {
        Ok(Message::GroupState {
            run: r,
            epoch: e,
            group: g,
            state,
        }) if (r, e, g) == (run, epoch, group) => Ok(state),
        Ok(_) => Err(TransferError::Unexpected("another group, epoch or run")),
        Err(ControlError::Closed) => Err(TransferError::Unexpected("nothing: closed")),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::{Nonce, NONCE_LEN};

    fn key() -> Key {
        Key::new(b"test secret").unwrap()
    }

    /// A state larger than a fetcher takes (1 GiB less the message's fixed part) is refused at
    /// the source, with the group and its size, rather than sent (and past 4 GiB, framed with a
    /// panic).
    #[test]
    fn a_state_too_large_for_a_transfer_is_refused_at_the_source() {
        assert!(fits_a_transfer(2, MAX_GROUP_STATE).is_ok());
        let e = fits_a_transfer(2, MAX_GROUP_STATE + 1).unwrap_err();
        assert!(matches!(e, TransferError::TooLarge { group: 2, .. }));
        assert!(
            e.to_string().contains("m2's state is 1073741812 bytes"),
            "{e}"
        );
        assert!(fits_a_transfer(0, 5 << 30).is_err());
        // What the fetcher reads: the largest state and its message's fixed part.
        assert_eq!(MAX_GROUP_STATE + 13, DEFAULT_MAX_BODY);
    }

    #[test]
    fn only_errors_of_the_listener_itself_end_serving() {
        let os = std::io::Error::from_raw_os_error;
        for e in [
            libc::EMFILE,
            libc::ENFILE,
            libc::ENOBUFS,
            libc::ECONNABORTED,
        ] {
            assert!(passing(&os(e)), "{}", os(e));
        }
        for e in [libc::EBADF, libc::EINVAL, libc::ENOTSOCK] {
            assert!(!passing(&os(e)), "{}", os(e));
        }
    }

    /// The errors `serve` counted as rejected requests, but for connections that closed unasked.
    #[derive(Default)]
    struct Rejected(Mutex<Vec<String>>);

    impl Rejected {
        fn count(&self, e: &ControlError) {
            if !matches!(e, ControlError::Closed) {
                self.0.lock().unwrap().push(e.to_string());
            }
        }

        fn all(&self) -> Vec<String> {
            self.0.lock().unwrap().clone()
        }
    }

    #[test]
    fn a_group_state_crosses_loopback_and_strangers_get_nothing() {
        let rejected = Rejected::default();
        let big: Vec<u8> = (0..3_000_000u32).map(|i| i as u8).collect();
        let export =
            |run, epoch, mb| (run == 3 && epoch == 7 && mb == MbIndex(2)).then(|| big.clone());
        serving(
            3,
            export,
            |e| rejected.count(e),
            |addr| {
                let t = Duration::from_secs(5);
                assert_eq!(fetch(addr, &key(), 3, 7, 2, false, t).unwrap(), big);
                // Not a member: closed without an answer.
                assert!(matches!(
                    fetch(addr, &key(), 3, 7, 1, false, t),
                    Err(TransferError::Unexpected("nothing: closed"))
                ));
                // Another run: the fetcher asks nothing of a source whose challenge names another.
                assert!(matches!(
                    fetch(addr, &key(), 4, 7, 2, false, t),
                    Err(TransferError::Unexpected("a challenge of another run"))
                ));
                // Another key: the fetcher refuses the challenge, and the source a request.
                let stranger = Key::new(b"another secret").unwrap();
                assert!(matches!(
                    fetch(addr, &stranger, 3, 7, 2, false, t),
                    Err(TransferError::Control(ControlError::BadTag))
                ));
                let (requester, nonce) = challenged(addr, 3);
                write_message(&mut &requester, &fetch_group(3, nonce), &stranger).unwrap();
                assert!(refused(&requester));
            },
        );
        assert_eq!(rejected.all(), [ControlError::BadTag.to_string()]);
    }

    /// A `FetchGroup` recorded on one connection (here, from a fetch that got its state), then
    /// replayed on others, one after another while its epoch is current: each is refused and
    /// counted, and the source exports nothing for it (version 5 exported the group's state anew
    /// at each replay, on a live node's data-path thread).
    #[test]
    fn a_request_replayed_on_another_connection_is_refused_and_exports_nothing() {
        let exports = AtomicUsize::new(0);
        let rejected = Rejected::default();
        let state: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let export = |_, _, _| {
            exports.fetch_add(1, Ordering::Relaxed);
            Some(&state)
        };
        serving(
            3,
            export,
            |e| rejected.count(e),
            |addr| {
                let (requester, nonce) = challenged(addr, 3);
                let recorded = crate::control::encode(&fetch_group(3, nonce), &key());
                std::io::Write::write_all(&mut &requester, &recorded).unwrap();
                assert!(answered(&requester, 3) == state);
                assert_eq!(exports.load(Ordering::Relaxed), 1);
                for _ in 0..3 {
                    // Whether the replayer reads its own challenge or not.
                    let (replayer, _) = challenged(addr, 3);
                    std::io::Write::write_all(&mut &replayer, &recorded).unwrap();
                    assert!(refused(&replayer));
                    let replayer = TcpStream::connect(addr).unwrap();
                    std::io::Write::write_all(&mut &replayer, &recorded).unwrap();
                    replayer
                        .set_read_timeout(Some(Duration::from_secs(60)))
                        .unwrap();
                    let challenge = read_message(&mut &replayer, &key(), CONTROL_MAX_BODY);
                    assert!(matches!(challenge, Ok(Message::TransferChallenge { .. })));
                    assert!(refused(&replayer));
                }
                assert_eq!(exports.load(Ordering::Relaxed), 1);
                // A fetch of its own is answered, as before.
                let t = Duration::from_secs(5);
                assert!(fetch(addr, &key(), 3, 7, 2, false, t).unwrap() == state);
                assert_eq!(exports.load(Ordering::Relaxed), 2);
            },
        );
        assert_eq!(
            rejected.all(),
            vec![ControlError::NotChallenged.to_string(); 6]
        );
    }

    /// Raises `stop` when dropped: serving ends with a test that fails too, rather than keep the
    /// scope that waits for it (and the test) from ending.
    struct Stopping<'a>(&'a AtomicBool);

    impl Drop for Stopping<'_> {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Release);
        }
    }

    /// Serves the transfers of the run `run` on a loopback port, with `export` and `rejected`,
    /// while `body` runs with its address; then serving stops, and must end without error. A
    /// `body` that fails stops it too.
    fn serving<S: AsRef<[u8]> + Send + Sync>(
        run: u64,
        export: impl Fn(u64, u32, MbIndex) -> Option<S> + Send + Sync,
        rejected: impl Fn(&ControlError) + Send + Sync,
        body: impl FnOnce(SocketAddr),
    ) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = AtomicBool::new(false);
        std::thread::scope(|s| {
            let server = s.spawn(|| {
                serve(
                    &listener,
                    &key(),
                    &AtomicU64::new(run),
                    &stop,
                    export,
                    rejected,
                )
            });
            let stopping = Stopping(&stop);
            body(addr);
            drop(stopping);
            server.join().unwrap().unwrap();
        });
    }

    /// Held by the tests that serve many transfers at once, or count the threads serving them.
    static MANY_TRANSFERS: Mutex<()> = Mutex::new(());

    fn many_transfers() -> MutexGuard<'static, ()> {
        MANY_TRANSFERS
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// How many threads of this process serve state transfers.
    fn transfer_threads() -> usize {
        std::fs::read_dir("/proc/self/task")
            .unwrap()
            .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
            .filter(|name| name.trim_end() == "transfer")
            .count()
    }

    #[test]
    fn silent_connections_take_a_bounded_number_of_threads_and_keep_no_fetch_out() {
        use crate::admission::MAX_WAITING;
        let _many = many_transfers();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = AtomicBool::new(false);
        let state = vec![7; 1000];
        std::thread::scope(|s| {
            let server = s.spawn(|| {
                serve(
                    &listener,
                    &key(),
                    &AtomicU64::new(1),
                    &stop,
                    |_, _, _| Some(&state),
                    |_| {},
                )
            });
            let silent: Vec<_> = (0..400)
                .map(|_| TcpStream::connect(addr).unwrap())
                .collect();
            std::thread::sleep(Duration::from_millis(500));
            let threads = transfer_threads();
            let fetched = fetch(addr, &key(), 1, 1, 0, false, Duration::from_secs(5));
            stop.store(true, Ordering::Release);
            drop(silent);
            server.join().unwrap().unwrap();
            // Other tests of this process may serve a transfer or two meanwhile (not those that
            // serve many: they wait for this one).
            assert!(threads <= MAX_WAITING + 4, "{threads} transfer threads");
            assert_eq!(fetched.unwrap(), state);
        });
    }

    #[test]
    fn serving_ends_at_stop_though_a_requester_does_not_read() {
        // Leaked for a thread of its own: the test fails, rather than hangs, if serving never
        // ends.
        let listener: &'static TcpListener =
            Box::leak(Box::new(TcpListener::bind("127.0.0.1:0").unwrap()));
        let addr = listener.local_addr().unwrap();
        let stop: &'static AtomicBool = Box::leak(Box::new(AtomicBool::new(false)));
        let state: &'static [u8] = vec![7; 64 << 20].leak();
        let (ended, serving) = crossbeam_channel::bounded(1);
        std::thread::spawn(move || {
            let run = AtomicU64::new(1);
            let served = serve(listener, &key(), &run, stop, |_, _, _| Some(state), |_| {});
            let _ = ended.send(served.is_ok());
        });
        let requester = request(addr, 1);
        // The source writes until the socket's buffers are full, and waits.
        std::thread::sleep(Duration::from_millis(500));
        let stopped = std::time::Instant::now();
        stop.store(true, Ordering::Release);
        assert_eq!(serving.recv_timeout(Duration::from_secs(6)), Ok(true));
        assert!(
            stopped.elapsed() < Duration::from_secs(1),
            "{:?}",
            stopped.elapsed()
        );
        drop(requester);
    }

    /// A connection to the source at `addr`, which serves `run`, and the nonce of its challenge.
    fn challenged(addr: SocketAddr, run: u64) -> (TcpStream, Nonce) {
        let requester = TcpStream::connect(addr).unwrap();
        // Only keeps a broken test from hanging.
        requester
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        let challenge = read_message(&mut &requester, &key(), CONTROL_MAX_BODY).unwrap();
        let Message::TransferChallenge { run: r, nonce } = challenge else {
            panic!("the source did not challenge first: {challenge:?}");
        };
        assert_eq!(r, run);
        (requester, nonce)
    }

    /// A request for `run`'s m2 of epoch 7, in answer to the challenge of `nonce`.
    fn fetch_group(run: u64, nonce: Nonce) -> Message {
        Message::FetchGroup {
            run,
            epoch: 7,
            group: 2,
            as_head: false,
            nonce,
        }
    }

    /// A connection to the source at `addr` that has sent its request for `run`'s m2 of epoch 7
    /// (the source's own run, or not).
    fn request(addr: SocketAddr, run: u64) -> TcpStream {
        let requester = TcpStream::connect(addr).unwrap();
        requester
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        let Ok(Message::TransferChallenge { nonce, .. }) =
            read_message(&mut &requester, &key(), CONTROL_MAX_BODY)
        else {
            panic!("the source did not challenge first");
        };
        write_message(&mut &requester, &fetch_group(run, nonce), &key()).unwrap();
        requester
    }

    /// Whether the source closed `requester`'s connection without an answer.
    fn refused(requester: &TcpStream) -> bool {
        matches!(
            read_message(&mut &*requester, &key(), DEFAULT_MAX_BODY),
            Err(ControlError::Closed | ControlError::Io(_))
        )
    }

    /// The state `requester` gets, after which the source closes the connection: its transfer
    /// ended, and gave back what it held.
    fn answered(requester: &TcpStream, run: u64) -> Vec<u8> {
        let Message::GroupState {
            run: r,
            epoch: 7,
            group: 2,
            state,
        } = read_message(&mut &*requester, &key(), DEFAULT_MAX_BODY).unwrap()
        else {
            panic!("another answer than m2's state of epoch 7");
        };
        assert_eq!(r, run);
        assert_eq!(
            std::io::Read::read(&mut &*requester, &mut [0; 1]).unwrap(),
            0
        );
        state
    }

    #[test]
    fn concurrent_fetches_of_one_group_share_one_export_kept_while_sent() {
        let _many = many_transfers();
        let exports = AtomicUsize::new(0);
        // Far more than loopback's socket buffers take unread: a transfer whose requester does
        // not read stays under way, and holds its copy.
        let state: Vec<u8> = (0..64u32 << 20).map(|i| (i % 251) as u8).collect();
        let export = |run: u64, epoch: u32, mb: MbIndex| {
            exports.fetch_add(1, Ordering::Relaxed);
            ((run, epoch, mb) == (3, 7, MbIndex(2))).then_some(&state)
        };
        serving(
            3,
            export,
            |_| {},
            |addr| {
                // Each asks once the one before has its first bytes, and nobody reads further
                // before all have theirs: the transfers overlap, whatever the machine's pace.
                let requesters: Vec<_> = (0..4)
                    .map(|_| {
                        let requester = request(addr, 3);
                        assert_eq!(requester.peek(&mut [0; 1]).unwrap(), 1);
                        requester
                    })
                    .collect();
                for requester in &requesters {
                    assert!(answered(requester, 3) == state);
                }
                assert_eq!(exports.load(Ordering::Relaxed), 1);
                // The copy went with the last transfer of it: a fetch now exports again.
                let t = Duration::from_secs(5);
                assert!(fetch(addr, &key(), 3, 7, 2, false, t).unwrap() == state);
                assert_eq!(exports.load(Ordering::Relaxed), 2);
            },
        );
    }

    #[test]
    fn verified_requests_past_the_cap_are_closed_unanswered_and_those_within_answered() {
        let _many = many_transfers();
        let exports = AtomicUsize::new(0);
        let state = vec![7; 1000];
        let cap = MAX_TRANSFERS as u64;
        // The exports of runs below the cap say so, and wait until `open` is dropped.
        let (open, gate) = crossbeam_channel::bounded::<()>(0);
        let (exporting, exported) = crossbeam_channel::unbounded();
        let export = |run: u64, _: u32, _: MbIndex| {
            exports.fetch_add(1, Ordering::Relaxed);
            if run < cap {
                exporting.send(run).unwrap();
                let _ = gate.recv();
            }
            Some(&state)
        };
        serving(
            cap + 1,
            export,
            |_| {},
            |addr| {
                // Each of another run: no two share a copy, each holds a place.
                let within: Vec<_> = (0..cap)
                    .map(|run| {
                        let requester = request(addr, run);
                        exported.recv_timeout(Duration::from_secs(60)).unwrap();
                        (run, requester)
                    })
                    .collect();
                let past = request(addr, cap);
                assert!(refused(&past));
                drop(open);
                for (run, requester) in &within {
                    assert_eq!(answered(requester, *run), state);
                }
                // Places given back are taken again.
                let t = Duration::from_secs(5);
                assert_eq!(fetch(addr, &key(), cap + 1, 7, 2, false, t).unwrap(), state);
                // The request past the cap was not exported.
                assert_eq!(exports.load(Ordering::Relaxed), MAX_TRANSFERS + 1);
            },
        );
    }

    /// A fetch from a source that answers `answer(frame)` for the frame of a 1 MB state.
    fn fetch_from_a_source_that(
        answer: impl FnOnce(Vec<u8>) -> Vec<u8>,
    ) -> Result<Vec<u8>, TransferError> {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let state: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
        let mut frame = Vec::new();
        crate::control::write_group_state(&mut frame, 3, 7, 2, &state, &key()).unwrap();
        let sent = answer(frame);
        std::thread::scope(|s| {
            s.spawn(|| {
                let (stream, _) = listener.accept().unwrap();
                let challenge = Message::TransferChallenge {
                    run: 3,
                    nonce: [9; NONCE_LEN],
                };
                write_message(&mut &stream, &challenge, &key()).unwrap();
                let mut reader = BufReader::new(&stream);
                let request = read_message(&mut reader, &key(), CONTROL_MAX_BODY).unwrap();
                assert!(matches!(
                    request,
                    Message::FetchGroup {
                        run: 3,
                        epoch: 7,
                        group: 2,
                        nonce: [9, ..],
                        ..
                    }
                ));
                // The fetch may have given up already: what is left unsent does not matter.
                let _ = std::io::Write::write_all(&mut &stream, &sent);
            });
            let got = fetch(addr, &key(), 3, 7, 2, false, Duration::from_secs(5));
            if let Ok(bytes) = &got {
                assert_eq!(*bytes, state);
            }
            got
        })
    }

    #[test]
    fn a_tampered_or_truncated_state_is_refused() {
        assert!(fetch_from_a_source_that(|frame| frame).is_ok());
        for at in [12, 300_000, 999_999, 1_000_014] {
            let got = fetch_from_a_source_that(|mut frame| {
                frame[at] ^= 0x40;
                frame
            });
            assert!(
                matches!(got, Err(TransferError::Control(ControlError::BadTag))),
                "byte {at} flipped: {got:?}"
            );
        }
        for keep in [100, 500_000, 1_000_014] {
            let got = fetch_from_a_source_that(|mut frame| {
                frame.truncate(keep);
                frame
            });
            assert!(
                matches!(
                    got,
                    Err(TransferError::Control(ControlError::Truncated { .. }))
                ),
                "{keep} bytes kept: {got:?}"
            );
        }
        // The same frame followed by more bytes reads as the frame: the connection carries one.
        let got = fetch_from_a_source_that(|mut frame| {
            frame.extend_from_slice(&[0; 100]);
            frame
        });
        assert!(got.is_ok());
    }
}
