//! A node's control connection, read on a thread of its own, and what happens when it breaks:
//! the node's thread decides (a node that serves serves on, one that does not exits), and a node
//! that serves on connects to the orchestrator's address again until one takes it back (the
//! same orchestrator after a broken connection, or one started after it died), for up to
//! `--headless-for`. The data path does not wait for the control plane: the thesis's
//! orchestrator "is not involved in normal chain operations" (thesis §4.2.2).

use std::io::BufReader;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use ftc_chain::ring::ServerId;

use super::keepalive::keep_alive;
use super::node::{challenge, Inbox, NodeError, NodeEvent};
use crate::control::{read_message, write_message, Key, Message, Serving, CONTROL_MAX_BODY};
use crate::coordinator::rejoin_period;
use crate::throttle::Throttle;

/// The longest a connection attempt to the orchestrator may take.
const CONNECT_PATIENCE: Duration = Duration::from_secs(1);

/// How long a write to the orchestrator may block before the connection is taken for broken:
/// a heartbeat to an orchestrator that stopped reading must not hold up a rejoin.
const WRITE_PATIENCE: Duration = Duration::from_secs(1);

/// A control connection to the orchestrator, the first or a rejoin's, made ready: no delay,
/// keepalive, writes that give up after [`WRITE_PATIENCE`].
pub(super) fn prepare(stream: &TcpStream) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    keep_alive(stream)?;
    stream.set_write_timeout(Some(WRITE_PATIENCE))
}

/// A node's side of its control connection.
#[derive(Debug)]
pub(super) struct ControlLink<'a> {
    pub orchestrator: SocketAddr,
    pub key: &'a Key,
    pub heartbeat: Duration,
    /// The `Join` the node sent first (its nonce and `serving` are replaced as it rejoins).
    pub join: Message,
    /// Where the node's messages go: the connection of the moment.
    pub writer: &'a Mutex<TcpStream>,
    /// The orchestrator's run: a rejoin takes the new one's.
    pub run: &'a AtomicU64,
    /// The epoch the node is in, and the epoch of the routing it follows ([`Serving`]).
    pub epoch: &'a AtomicU32,
    pub routed: &'a AtomicU32,
    /// Raised when the node ends.
    pub stop: &'a AtomicBool,
}

impl ControlLink<'_> {
    /// The messages of `stream` (the node's first control connection) into `inbox`; when the
    /// connection ends, [`NodeEvent::Closed`], then, each time the node's thread answers with a
    /// deadline on `rejoin`, a new connection until then, and its messages. Ends when the
    /// node's thread answers no more (it ended).
    pub fn run(&self, mut stream: TcpStream, inbox: &Inbox, rejoin: &Receiver<Instant>) {
        loop {
            let mut reader = BufReader::new(&stream);
            let end = loop {
                match read_message(&mut reader, self.key, CONTROL_MAX_BODY) {
                    Ok(msg) => inbox.post(NodeEvent::Control(msg)),
                    Err(crate::control::ControlError::Closed) => break None,
                    Err(e) => break Some(e),
                }
            };
            inbox.post(NodeEvent::Closed(end));
            let Ok(deadline) = rejoin.recv() else {
                return;
            };
            match self.rejoin(deadline) {
                Ok(Some(again)) => {
                    inbox.post(NodeEvent::Rejoined);
                    stream = again;
                }
                // The node ends meanwhile.
                Ok(None) => return,
                Err(e) => return inbox.post(NodeEvent::NotRejoined(e)),
            }
        }
    }

    /// Connects and joins again until an orchestrator takes the `Join` (its answers, a refusal
    /// among them, come on the connection returned), or until `deadline`, or until the node
    /// ends (`None`).
    fn rejoin(&self, deadline: Instant) -> Result<Option<TcpStream>, NodeError> {
        let pause = rejoin_period(self.heartbeat);
        let refused = Throttle::new();
        let me = match &self.join {
            Message::Join { position, .. } => ServerId(*position),
            _ => unreachable!("a node joins with a Join"),
        };
        loop {
            if self.stop.load(Ordering::Acquire) {
                return Ok(None);
            }
            match self.attempt() {
                Ok(stream) => return Ok(Some(stream)),
                // Whoever answers there does not want this node.
                Err(e @ NodeError::Refused(_)) => return Err(e),
                Err(e) => {
                    if let Some(more) = refused.admit(Instant::now()) {
                        tracing::warn!(
                            "node {me}: cannot rejoin the orchestrator at {} yet: {e}{more}",
                            self.orchestrator
                        );
                    }
                }
            }
            if Instant::now() + pause > deadline {
                return Err(NodeError::Orphaned);
            }
            std::thread::sleep(pause);
        }
    }

    /// One connection to the orchestrator's address, challenged, and the node's `Join` sent on
    /// it, saying where the node stands; its messages go on it from now on.
    fn attempt(&self) -> Result<TcpStream, NodeError> {
        let stream = TcpStream::connect_timeout(&self.orchestrator, CONNECT_PATIENCE)?;
        prepare(&stream)?;
        let (run, nonce) = challenge(&stream, self.key, self.heartbeat)?;
        let mut join = self.join.clone();
        // A launch token stays: the orchestrator that launched the node checks it as before,
        // another one launched nothing at the position and checks none (`Launcher::refusal`).
        if let Message::Join {
            nonce: n, serving, ..
        } = &mut join
        {
            *n = nonce;
            *serving = Some(Serving {
                epoch: self.epoch.load(Ordering::Acquire),
                routed: self.routed.load(Ordering::Acquire),
            });
        }
        self.run.store(run, Ordering::Release);
        write_message(&mut &stream, &join, self.key)?;
        *self.writer.lock().expect("no holder panics") = stream.try_clone()?;
        Ok(stream)
    }
}
