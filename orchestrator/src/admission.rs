//! Connections from anyone, until their first frame proves them: the orchestrator's control
//! connections before their node's `Join`, a node's state-transfer connections before their
//! `FetchGroup`. Each has a thread, so they are bounded ([`Admission`]): at most
//! [`MAX_WAITING`] wait for their first frame at once, a newcomer past that closes the one that
//! waited longest, and each must have sent its whole first frame [`FIRST_FRAME`] after it was
//! admitted ([`Deadline`]), however its bytes trickle in. Connections that take every place and
//! send a byte now and then thus neither stay nor keep anyone out.

use std::collections::VecDeque;
use std::io::{self, Read};
use std::net::{Shutdown, TcpStream};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::throttle::Throttle;

/// How long a new connection may take to send its whole first frame (a node sends its `Join`,
/// a replacement its `FetchGroup`, as soon as it has read the challenge the other end sends as
/// it accepts the connection); it is closed then.
pub const FIRST_FRAME: Duration = Duration::from_secs(5);

/// How many connections may wait for their first frame at once.
pub const MAX_WAITING: usize = 64;

/// The connections of one listener that are open and were admitted.
#[derive(Debug)]
pub struct Admission {
    /// What they are, for the log.
    what: &'static str,
    open: Mutex<Open>,
    /// Warnings of connections closed to make room (anyone can cause them).
    evicted: Throttle,
}

#[derive(Debug, Default)]
struct Open {
    next: u64,
    /// Oldest first.
    conns: VecDeque<Conn>,
}

#[derive(Debug)]
struct Conn {
    id: u64,
    stream: TcpStream,
    /// Its first frame arrived.
    proven: bool,
}

impl Admission {
    /// No connection yet; `what` names them in the log.
    pub fn new(what: &'static str) -> Admission {
        Admission {
            what,
            open: Mutex::new(Open::default()),
            evicted: Throttle::new(),
        }
    }

    fn open(&self) -> std::sync::MutexGuard<'_, Open> {
        self.open.lock().expect("no holder panics")
    }

    /// Admit `stream`, which waits for its first frame from now on; when [`MAX_WAITING`] others
    /// wait already, the one that waited longest is closed. The connection stays admitted (and
    /// [`close_all`](Admission::close_all) closes it) until the [`Admitted`] is dropped.
    pub fn admit(&self, stream: &TcpStream) -> io::Result<Admitted<'_>> {
        let kept = stream.try_clone()?;
        let mut open = self.open();
        if open.conns.iter().filter(|c| !c.proven).count() >= MAX_WAITING {
            let oldest = open.conns.iter().position(|c| !c.proven);
            if let Some(c) = oldest.and_then(|i| open.conns.remove(i)) {
                if let Some(more) = self.evicted.admit(Instant::now()) {
                    let from = c.stream.peer_addr().map(|a| a.to_string());
                    tracing::warn!(
                        "{} from {}: {MAX_WAITING} connections await their first frame; closing \
                         this one, the oldest{more}",
                        self.what,
                        from.unwrap_or_else(|e| e.to_string())
                    );
                }
                let _ = c.stream.shutdown(Shutdown::Both);
            }
        }
        open.next += 1;
        let id = open.next;
        open.conns.push_back(Conn {
            id,
            stream: kept,
            proven: false,
        });
        Ok(Admitted {
            admission: self,
            id,
            deadline: Instant::now() + FIRST_FRAME,
        })
    }

    /// Close every connection admitted and not dropped yet (their reads and writes fail at once).
    pub fn close_all(&self) {
        for c in &self.open().conns {
            let _ = c.stream.shutdown(Shutdown::Both);
        }
    }
}

/// One connection's place among those [`Admission::admit`] took; dropping it gives the place
/// back.
#[derive(Debug)]
pub struct Admitted<'a> {
    admission: &'a Admission,
    id: u64,
    /// When its first frame must have arrived.
    deadline: Instant,
}

impl Admitted<'_> {
    /// `stream` (the connection admitted) to read its first frame from: each read waits only
    /// until the deadline.
    pub fn reader<'s>(&self, stream: &'s TcpStream) -> Deadline<'s> {
        Deadline {
            stream,
            until: Some(self.deadline),
        }
    }

    /// Its first frame arrived: it no longer waits, and no newcomer closes it.
    pub fn proven(&self) {
        let mut open = self.admission.open();
        if let Some(c) = open.conns.iter_mut().find(|c| c.id == self.id) {
            c.proven = true;
        }
    }
}

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        self.admission.open().conns.retain(|c| c.id != self.id);
    }
}

/// A connection's reads, each given only the time left until a deadline (a read timeout of its
/// own would start again at every byte that trickles in); past it, reads fail with
/// [`io::ErrorKind::TimedOut`].
#[derive(Debug)]
pub struct Deadline<'s> {
    stream: &'s TcpStream,
    /// `None`: lifted.
    until: Option<Instant>,
}

impl Deadline<'_> {
    /// Reads wait as long as it takes from now on.
    pub fn lift(&mut self) -> io::Result<()> {
        self.until = None;
        self.stream.set_read_timeout(None)
    }
}

impl Read for Deadline<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(until) = self.until {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no whole first frame in time",
                ));
            }
            self.stream.set_read_timeout(Some(left))?;
        }
        let mut stream = self.stream;
        stream.read(buf)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::net::TcpListener;

    use super::*;

    /// A connection to `listener` and its accepted end.
    fn pair(listener: &TcpListener) -> (TcpStream, TcpStream) {
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        (client, server)
    }

    /// Whether the peer closed `stream`'s connection (reads end), waiting up to a second for
    /// its end or for 50 ms for bytes that never come.
    fn closed(stream: &TcpStream, wait: Duration) -> bool {
        stream.set_read_timeout(Some(wait)).unwrap();
        match (&*stream).read(&mut [0; 16]) {
            Ok(0) => true,
            Err(e) => e.kind() != io::ErrorKind::WouldBlock,
            Ok(_) => panic!("nobody writes"),
        }
    }

    #[test]
    fn a_newcomer_past_the_cap_closes_the_oldest_waiting_and_the_proven_stay() {
        let (ends, open) = (Duration::from_secs(1), Duration::from_millis(50));
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let admission = Admission::new("test connection");
        let (proven_client, proven_server) = pair(&listener);
        let proven = admission.admit(&proven_server).unwrap();
        proven.proven();
        let waiting: Vec<_> = (0..MAX_WAITING).map(|_| pair(&listener)).collect();
        let tickets: Vec<_> = waiting
            .iter()
            .map(|(_, server)| admission.admit(server).unwrap())
            .collect();
        let (newcomer_client, newcomer_server) = pair(&listener);
        let newcomer = admission.admit(&newcomer_server).unwrap();
        assert!(closed(&waiting[0].0, ends), "the oldest waiting is closed");
        assert!(!closed(&waiting[1].0, open) && !closed(&proven_client, open));
        // Places given back are taken without closing anyone.
        drop(tickets);
        let (_, again) = pair(&listener);
        let _again = admission.admit(&again).unwrap();
        assert!(!closed(&waiting[1].0, open) && !closed(&newcomer_client, open));
        admission.close_all();
        assert!(closed(&proven_client, ends) && closed(&newcomer_client, ends));
        drop((proven, newcomer));
    }

    #[test]
    fn the_deadline_holds_however_the_bytes_trickle() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let (client, server) = pair(&listener);
        let mut reader = Deadline {
            stream: &server,
            until: Some(Instant::now() + Duration::from_millis(300)),
        };
        let start = Instant::now();
        let mut got = 0;
        let e = loop {
            (&client).write_all(&[1]).unwrap();
            match reader.read(&mut [0; 16]) {
                Ok(n) => got += n,
                Err(e) => break e,
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        assert_eq!(e.kind(), io::ErrorKind::TimedOut, "{e}");
        assert!(got > 5, "{got} bytes read before the deadline");
        assert!(start.elapsed() < Duration::from_millis(400));
        // The byte written before the deadline passed, and one after, are read once it is lifted.
        reader.lift().unwrap();
        (&client).write_all(&[1]).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(reader.read(&mut [0; 16]).unwrap(), 2);
        assert_eq!(server.read_timeout().unwrap(), None);
    }
}
