//! State transfer over TCP (DESIGN.md §8 step 3): a source serves `FetchGroup` requests with
//! its group's state in an authenticated `GroupState` frame; a replacement fetches each of its
//! groups over its own connection, in parallel.

use std::io::BufReader;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ftc_chain::ring::MbIndex;

use crate::admission::{Admission, Admitted};
use crate::control::{
    read_message, write_group_state, write_message, ControlError, Key, Message, CONTROL_MAX_BODY,
    DEFAULT_MAX_BODY, MAX_GROUP_STATE,
};
use crate::process::keepalive::keep_alive;

/// How long a write of a state may make no progress before the source gives up the transfer: its
/// requester stopped reading (and its own reads, given as long by the replacement, time out too).
const WRITE_PATIENCE: Duration = Duration::from_secs(5);

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

/// Serve the state transfers of one server until `stop`: every connection asks for one group
/// (`FetchGroup`) and gets `export(run, epoch, group)` as `GroupState`, or is closed when that is
/// `None` (another run's request, not a member, or the server is gone). The state is sent from
/// where `export` keeps it, not copied (an `Arc` of bytes shared with other fetches will do).
/// Unauthenticated or malformed requests are dropped and counted by `rejected`. Connections are
/// anyone's until their request verifies: at most [`MAX_WAITING`](crate::admission::MAX_WAITING)
/// wait for theirs at once (one more closes the one that waited longest), and one whose request has
/// not arrived whole [`FIRST_FRAME`](crate::admission::FIRST_FRAME) after it opened is closed. A
/// connection that cannot be taken for want of resources (descriptors, memory, a thread) is
/// dropped, and serving goes on; only an error of the listener itself ends it. A requester that
/// stops reading the state is given up after [`WRITE_PATIENCE`], one whose host went away without a
/// word after [`USER_TIMEOUT`](crate::process::keepalive::USER_TIMEOUT) (TCP keepalive), and the
/// transfers still under way when `stop` is raised are cut off: serving ends then, whoever asked.
pub fn serve<S: AsRef<[u8]>>(
    listener: &TcpListener,
    key: &Key,
    stop: &AtomicBool,
    export: impl Fn(u64, u32, MbIndex) -> Option<S> + Sync,
    rejected: impl Fn(&ControlError) + Sync,
) -> std::io::Result<()> {
    listener.set_nonblocking(true)?;
    let admission = Admission::new("state transfer");
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
                    let (export, rejected) = (&export, &rejected);
                    let spawned = std::thread::Builder::new()
                        .name("transfer".into())
                        .spawn_scoped(scope, move || {
                            match answer(stream, &admitted, key, export) {
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

/// One connection, `admitted` until its request arrives: a request, an answer.
fn answer<S: AsRef<[u8]>>(
    stream: TcpStream,
    admitted: &Admitted<'_>,
    key: &Key,
    export: impl Fn(u64, u32, MbIndex) -> Option<S>,
) -> Result<(), TransferError> {
    stream.set_nonblocking(false)?;
    stream.set_nodelay(true)?;
    stream.set_write_timeout(Some(WRITE_PATIENCE))?;
    keep_alive(&stream)?;
    let mut reader = BufReader::new(admitted.reader(&stream));
    let Message::FetchGroup {
        run, epoch, group, ..
    } = read_message(&mut reader, key, CONTROL_MAX_BODY)?
    else {
        return Err(TransferError::Unexpected("something other than FetchGroup"));
    };
    admitted.proven();
    let Some(state) = export(run, epoch, MbIndex(group)) else {
        return Ok(());
    };
    // The fetcher would refuse it (and a frame holds 4 GiB at most): not sent for nothing.
    fits_a_transfer(group, state.as_ref().len())?;
    // Unbuffered: the state goes to the socket in large chunks as its tag is computed.
    write_group_state(&mut &stream, run, epoch, group, state.as_ref(), key)?;
    Ok(())
}

/// Whether a state of `bytes` bytes of group `group` fits a transfer ([`MAX_GROUP_STATE`]).
fn fits_a_transfer(group: u8, bytes: usize) -> Result<(), TransferError> {
    if bytes > MAX_GROUP_STATE {
        return Err(TransferError::TooLarge { group, bytes });
    }
    Ok(())
}

/// Fetch `group`'s state (in `epoch` of the run `run`) from the source at `addr`: its bytes.
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
    write_message(
        &mut &stream,
        &Message::FetchGroup {
            run,
            epoch,
            group,
            as_head,
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

    #[test]
    fn a_group_state_crosses_loopback_and_strangers_get_nothing() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = AtomicBool::new(false);
        let rejected = std::sync::atomic::AtomicU64::new(0);
        let big: Vec<u8> = (0..3_000_000u32).map(|i| i as u8).collect();
        std::thread::scope(|s| {
            let server = s.spawn(|| {
                serve(
                    &listener,
                    &key(),
                    &stop,
                    |run, epoch, mb| {
                        (run == 3 && epoch == 7 && mb == MbIndex(2)).then(|| big.clone())
                    },
                    |_| {
                        rejected.fetch_add(1, Ordering::Relaxed);
                    },
                )
            });
            let t = Duration::from_secs(5);
            assert_eq!(fetch(addr, &key(), 3, 7, 2, false, t).unwrap(), big);
            // Not a member, or another run: closed without an answer.
            for (run, group) in [(3, 1), (4, 2)] {
                assert!(matches!(
                    fetch(addr, &key(), run, 7, group, false, t),
                    Err(TransferError::Unexpected(_))
                ));
            }
            // Another key: the source refuses the request, the fetch gets nothing.
            let stranger = Key::new(b"another secret").unwrap();
            assert!(fetch(addr, &stranger, 3, 7, 2, false, t).is_err());
            stop.store(true, Ordering::Release);
            server.join().unwrap().unwrap();
        });
        assert_eq!(rejected.load(Ordering::Relaxed), 1);
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
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = AtomicBool::new(false);
        let state = vec![7; 1000];
        std::thread::scope(|s| {
            let server =
                s.spawn(|| serve(&listener, &key(), &stop, |_, _, _| Some(&state), |_| {}));
            let silent: Vec<_> = (0..400)
                .map(|_| TcpStream::connect(addr).unwrap())
                .collect();
            std::thread::sleep(Duration::from_millis(500));
            let threads = transfer_threads();
            let fetched = fetch(addr, &key(), 1, 1, 0, false, Duration::from_secs(5));
            stop.store(true, Ordering::Release);
            drop(silent);
            server.join().unwrap().unwrap();
            // Other tests of this process may serve a transfer or two meanwhile.
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
            let served = serve(listener, &key(), stop, |_, _, _| Some(state), |_| {});
            let _ = ended.send(served.is_ok());
        });
        let requester = TcpStream::connect(addr).unwrap();
        let request = Message::FetchGroup {
            run: 1,
            epoch: 1,
            group: 0,
            as_head: false,
        };
        write_message(&mut &requester, &request, &key()).unwrap();
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
                let mut reader = BufReader::new(&stream);
                let request = read_message(&mut reader, &key(), CONTROL_MAX_BODY).unwrap();
                assert!(matches!(
                    request,
                    Message::FetchGroup {
                        run: 3,
                        epoch: 7,
                        group: 2,
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
