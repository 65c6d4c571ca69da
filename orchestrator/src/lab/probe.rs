//! A round-trip probe through a lab's chain: a TCP echo server in the server's namespace and a
//! client in the client's that sends a small message, waits for its echo, times it, and sends
//! the next one a little later. Each round trip crosses every middlebox twice (the request
//! outbound, the echo inbound), as a packet of an interactive connection does.
//!
//! Both ends are threads of this process that enter the namespace first (`setns(2)` affects only
//! the calling thread, and a socket stays in the namespace it was made in), so no helper program
//! and no startup time goes into the figures.

use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ftc_node::runtime::Latency;
use hdrhistogram::Histogram;

/// The port the echo server listens on.
pub const PROBE_PORT: u16 = 8081;
/// Bytes of each probe message (and of its echo).
const MESSAGE: usize = 64;
/// How long a round trip may take before the probe gives up on the connection.
const PATIENCE: Duration = Duration::from_secs(10);

/// Round-trip times the probe measured, in microseconds.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct RttFigures {
    pub samples: u64,
    #[serde(flatten)]
    pub latency: Latency,
}

impl RttFigures {
    fn of(h: &Histogram<u64>) -> Self {
        RttFigures {
            samples: h.len(),
            latency: Latency::of(h),
        }
    }
}

/// Moves the calling thread into network namespace `netns` (made by `ip netns add`).
fn enter(netns: &str) -> io::Result<()> {
    let file = File::open(format!("/run/netns/{netns}"))?;
    // SAFETY: setns(2) on a file descriptor this function owns for the call; it changes only the
    // calling thread's network namespace.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A thread that runs until its flag is raised, then is joined.
#[derive(Debug)]
struct Stoppable<T> {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<T>>,
}

impl<T> Stoppable<T> {
    fn finish(mut self) -> Option<T> {
        self.stop.store(true, Ordering::Release);
        self.handle.take().and_then(|h| h.join().ok())
    }
}

impl<T> Drop for Stoppable<T> {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// The echo server, stopped when dropped.
#[derive(Debug)]
pub struct Echo {
    _thread: Stoppable<()>,
}

/// Starts an echo server on `addr` in namespace `netns`; returns once it listens.
pub fn echo(netns: &str, addr: SocketAddrV4) -> io::Result<Echo> {
    let stop = Arc::new(AtomicBool::new(false));
    let (ready_tx, ready_rx) = crossbeam_channel::bounded(1);
    let (netns, flag) = (netns.to_string(), stop.clone());
    let handle = std::thread::spawn(move || {
        let listener = enter(&netns).and_then(|()| {
            let l = TcpListener::bind(addr)?;
            l.set_nonblocking(true)?;
            Ok(l)
        });
        let listener = match listener {
            Ok(l) => {
                let _ = ready_tx.send(Ok(()));
                l
            }
            Err(e) => {
                let _ = ready_tx.send(Err(e));
                return;
            }
        };
        while !flag.load(Ordering::Acquire) {
            match listener.accept() {
                // One connection at a time: the probe opens one.
                Ok((stream, _)) => serve_echo(stream, &flag),
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    });
    ready_rx
        .recv()
        .unwrap_or_else(|_| Err(io::Error::other("the echo thread ended")))?;
    Ok(Echo {
        _thread: Stoppable {
            stop,
            handle: Some(handle),
        },
    })
}

/// Echoes whatever `stream` sends until it closes or `stop` is raised.
fn serve_echo(mut stream: TcpStream, stop: &AtomicBool) {
    let set = stream
        .set_nonblocking(false)
        .and_then(|()| stream.set_nodelay(true))
        .and_then(|()| stream.set_read_timeout(Some(Duration::from_millis(100))));
    if set.is_err() {
        return;
    }
    let mut buf = [0u8; 4096];
    while !stop.load(Ordering::Acquire) {
        match stream.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                if stream.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return,
        }
    }
}

/// The probing client, measuring until [`Probe::finish`].
#[derive(Debug)]
pub struct Probe(Stoppable<io::Result<Histogram<u64>>>);

/// Starts probing the echo server at `to` from namespace `netns`, one round trip every
/// `interval` (after the previous one's echo).
pub fn probe(netns: &str, to: SocketAddrV4, interval: Duration) -> Probe {
    let stop = Arc::new(AtomicBool::new(false));
    let (netns, flag) = (netns.to_string(), stop.clone());
    let handle = std::thread::spawn(move || {
        enter(&netns)?;
        let mut stream = TcpStream::connect_timeout(&SocketAddr::V4(to), PATIENCE)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(PATIENCE))?;
        let mut hist = Histogram::<u64>::new(3).map_err(io::Error::other)?;
        let (mut out, mut back) = ([0u8; MESSAGE], [0u8; MESSAGE]);
        let mut seq = 0u64;
        while !flag.load(Ordering::Acquire) {
            seq += 1;
            out[..8].copy_from_slice(&seq.to_le_bytes());
            let sent = Instant::now();
            stream.write_all(&out)?;
            stream.read_exact(&mut back)?;
            let rtt = sent.elapsed();
            if back != out {
                return Err(io::Error::other("the echo differs from the probe"));
            }
            let _ = hist.record((rtt.as_nanos() as u64).max(1));
            std::thread::sleep(interval);
        }
        Ok(hist)
    });
    Probe(Stoppable {
        stop,
        handle: Some(handle),
    })
}

impl Probe {
    /// Stops probing; the round trips measured, or why the probe failed.
    pub fn finish(self) -> io::Result<RttFigures> {
        match self.0.finish() {
            Some(Ok(hist)) => Ok(RttFigures::of(&hist)),
            Some(Err(e)) => Err(e),
            None => Err(io::Error::other("the probe thread panicked")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_of_a_histogram_are_in_microseconds() {
        let mut h = Histogram::<u64>::new(3).unwrap();
        for ns in [10_000u64, 20_000, 30_000] {
            h.record(ns).unwrap();
        }
        let f = RttFigures::of(&h);
        assert_eq!(f.samples, 3);
        assert!((f.latency.p50 - 20.0).abs() < 0.1, "{f:?}");
        assert!((f.latency.max - 30.0).abs() < 0.1, "{f:?}");
    }

    #[test]
    fn a_missing_namespace_is_an_error() {
        let e = echo(
            "ftc-no-such-namespace",
            SocketAddrV4::new([127, 0, 0, 1].into(), 0),
        );
        assert!(e.is_err());
    }
}
