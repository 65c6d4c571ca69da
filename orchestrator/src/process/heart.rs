//! A node's heartbeats, and the pulse they need: when its thread, and every lane of its server,
//! last made progress. The heartbeats come from a thread of their own, which would beat on
//! however the data path fares; with the pulse, a node whose data path hangs (a deadlock, a
//! middlebox caught in a loop) stops beating and the orchestrator replaces it as failed
//! (fail-stop), instead of it looking alive forever with the chain stuck behind it.

use std::net::TcpStream;
use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ftc_chain::ring::ServerId;

use crate::control::{write_message, Key, Message};

/// When a node's data path last made progress, on the node's clock.
#[derive(Debug)]
pub struct Pulse {
    start: Instant,
    /// Nanoseconds from `start` to the last progress of the node's thread at which each lane
    /// had made progress too (the oldest of them all).
    at: AtomicU64,
    /// Waits of the node's thread that are long but bounded otherwise (a replacement fetching
    /// and restoring its state) in progress: the pulse does not age meanwhile.
    busy: AtomicUsize,
}

/// The node's thread is in a long wait that is bounded otherwise, while this lives
/// ([`Pulse::busy`]).
#[derive(Debug)]
#[must_use = "the pulse stops ageing only while the guard lives"]
pub struct Busy<'a>(&'a Pulse);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.beat(self.0.now());
        self.0.busy.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Pulse {
    /// A pulse on the clock that starts at `start`, beating now.
    pub fn new(start: Instant) -> Pulse {
        let pulse = Pulse {
            start,
            at: AtomicU64::new(0),
            busy: AtomicUsize::new(0),
        };
        pulse.beat(pulse.now());
        pulse
    }

    /// Nanoseconds since the clock's start.
    pub fn now(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    /// The data path made progress at `at` (nanoseconds on the clock).
    pub fn beat(&self, at: u64) {
        self.at.store(at, Ordering::Release);
    }

    /// The pulse does not age until the guard is dropped (it beats then).
    pub fn busy(&self) -> Busy<'_> {
        self.busy.fetch_add(1, Ordering::AcqRel);
        Busy(self)
    }

    /// How long since the data path last made progress (zero while busy).
    pub fn silence(&self) -> Duration {
        if self.busy.load(Ordering::Acquire) > 0 {
            return Duration::ZERO;
        }
        Duration::from_nanos(self.now().saturating_sub(self.at.load(Ordering::Acquire)))
    }
}

/// What a node's heartbeat thread reads of the node, and writes to.
#[derive(Debug)]
pub struct Heart<'a> {
    pub writer: &'a Mutex<TcpStream>,
    pub key: &'a Key,
    /// The orchestrator's run, which the heartbeats name (another after a rejoin).
    pub run: &'a AtomicU64,
    pub me: ServerId,
    pub epoch: &'a AtomicU32,
    pub stop: &'a AtomicBool,
    pub pulse: &'a Pulse,
    /// Wakes the node's thread: one that sleeps (nothing to do) then shows it is alive.
    pub waker: &'a UnixDatagram,
}

impl Heart<'_> {
    /// A heartbeat, with the node's epoch, every `period` until `stop` (on whatever connection
    /// the writer holds: while the node has no orchestrator, the writes fail), or until the node's data path made no progress for `stall`: then `on_stall`.
    /// A node's thread that is asleep has its pulse age, so it is woken once its pulse is a
    /// period old (a thread that is alive then beats it again).
    pub fn beat(&self, period: Duration, stall: Duration, on_stall: fn(&str)) {
        let _on_time = super::wake_on_time("heartbeats");
        let me = self.me;
        let mut next = Instant::now();
        for seq in 1.. {
            next = (next + period).max(Instant::now());
            std::thread::sleep(next.saturating_duration_since(Instant::now()));
            if self.stop.load(Ordering::Acquire) {
                return;
            }
            let silence = self.pulse.silence();
            if silence >= stall {
                let why = format!(
                    "node {}: its data path made no progress for {silence:.1?} (it hangs: a \
                     deadlock, or a middlebox caught in a loop); it stops heartbeating, and is \
                     replaced as failed",
                    me.0
                );
                tracing::error!("{why}");
                return on_stall(&why);
            }
            if silence >= period {
                // Non-blocking: when the socket is full, a wake-up is pending anyway.
                let _ = self.waker.send(&[1]);
            }
            let beat = Message::Heartbeat {
                run: self.run.load(Ordering::Acquire),
                position: me.0,
                epoch: self.epoch.load(Ordering::Acquire),
                seq,
            };
            // A failed write is the control connection's end, which its reader reports.
            let _ = write_message(
                &mut *self.writer.lock().expect("no holder panics"),
                &beat,
                self.key,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::BufReader;
    use std::net::TcpListener;

    use super::*;
    use crate::control::{read_message, ControlError, CONTROL_MAX_BODY};

    #[test]
    fn silence_grows_from_the_last_beat_and_not_while_busy() {
        let pulse = Pulse::new(Instant::now());
        std::thread::sleep(Duration::from_millis(20));
        assert!(pulse.silence() >= Duration::from_millis(20));
        pulse.beat(pulse.now());
        assert!(pulse.silence() < Duration::from_millis(20));
        {
            let _busy = pulse.busy();
            std::thread::sleep(Duration::from_millis(20));
            assert_eq!(pulse.silence(), Duration::ZERO);
        }
        // A busy spell ends with a beat: the wait is not counted afterwards.
        assert!(pulse.silence() < Duration::from_millis(20));
        // A beat from before the last one read (a lane's older progress) moves it back.
        pulse.beat(0);
        assert!(pulse.silence() >= Duration::from_millis(40));
    }

    /// Stall reports, by the test that made them.
    static STALLS: Mutex<Vec<String>> = Mutex::new(Vec::new());

    /// Beats while a pulse is kept up, then stops, with one stall report, once it is not.
    #[test]
    fn heartbeats_stop_once_the_data_path_hangs() {
        let key = Key::new(b"test secret").unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let writer = Mutex::new(TcpStream::connect(listener.local_addr().unwrap()).unwrap());
        let (orchestrator, _) = listener.accept().unwrap();
        orchestrator
            .set_read_timeout(Some(Duration::from_secs(1)))
            .unwrap();
        let (node, waker) = UnixDatagram::pair().unwrap();
        node.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let (epoch, stop, hangs) = (
            AtomicU32::new(7),
            AtomicBool::new(false),
            AtomicBool::new(false),
        );
        let pulse = Pulse::new(Instant::now());
        let (period, stall) = (Duration::from_millis(2), Duration::from_millis(100));
        let mut beats = 0u64;
        let run = AtomicU64::new(11);
        std::thread::scope(|s| {
            let heart = Heart {
                writer: &writer,
                key: &key,
                run: &run,
                me: ServerId(3),
                epoch: &epoch,
                stop: &stop,
                pulse: &pulse,
                waker: &waker,
            };
            s.spawn(move || {
                heart.beat(period, stall, |why| {
                    STALLS.lock().unwrap().push(why.to_string())
                });
            });
            // The node's thread, asleep but alive: it wakes when woken, and beats the pulse.
            s.spawn(|| {
                while !hangs.load(Ordering::Acquire) {
                    if node.recv(&mut [0]).is_ok() && !hangs.load(Ordering::Acquire) {
                        pulse.beat(pulse.now());
                    }
                }
            });
            let mut reader = BufReader::new(&orchestrator);
            let mut next = || match read_message(&mut reader, &key, CONTROL_MAX_BODY) {
                Ok(Message::Heartbeat {
                    run: 11,
                    position: 3,
                    epoch: 7,
                    seq,
                }) => Some(seq),
                Ok(other) => panic!("not a heartbeat: {other:?}"),
                Err(ControlError::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => None,
                Err(e) => panic!("{e}"),
            };
            // Ten stalls' time with the thread asleep throughout: woken, it keeps beating.
            let until = Instant::now() + 10 * stall;
            while Instant::now() < until {
                assert_eq!(next(), Some(beats + 1), "a live node beats on");
                beats += 1;
            }
            assert!(STALLS.lock().unwrap().is_empty());
            // Now it hangs: the beats stop within a stall (and some), and it is reported once.
            hangs.store(true, Ordering::Release);
            let deadline = Instant::now() + Duration::from_secs(10);
            while let Some(seq) = next() {
                assert_eq!(seq, beats + 1);
                assert!(Instant::now() < deadline, "a hung node beats on");
                beats += 1;
            }
            stop.store(true, Ordering::Release);
        });
        let stalls = STALLS.lock().unwrap();
        assert_eq!(stalls.len(), 1, "{stalls:?}");
        assert!(
            stalls[0].starts_with("node 3: its data path made no progress for"),
            "{}",
            stalls[0]
        );
    }
}
