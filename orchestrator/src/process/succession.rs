//! Crashes of the orchestrator in `ftc chaos --procs` (`--kill-orchestrator`): the orchestrator
//! of the moment runs on a thread until a crash is injected, and ends then as a killed process
//! would ([`Orchestrator::run_until_crash`]); after the downtime its heir binds the same address
//! and adopts the chain from the nodes that rejoin it ([`Orchestrator::heir`]).

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::launcher::{Ended, Launcher};
use super::orchestrator::{Orchestrator, Status};
use crate::coordinator::{Adopted, RecoveryReport, Unrecoverable};

/// An orchestrator crash to inject.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OrchestratorKill {
    /// When, from the start of the traffic.
    pub at: Duration,
    /// How long the chain runs without an orchestrator before the next one starts.
    pub down: Duration,
}

/// An orchestrator crash as it happened.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct OrchestratorKilled {
    /// When it crashed, from the start of the traffic.
    pub at_ms: f64,
    /// When the next one took connections; `None` when the run ended first, or it could not
    /// bind the address.
    pub back_at_ms: Option<f64>,
    /// How the next one took over the chain, once it did.
    pub adopted: Option<Adopted>,
}

/// How long an heir tries to bind its predecessor's address: the listener closes once the last
/// holder of the crashed orchestrator lets go of it.
const REBIND: Duration = Duration::from_secs(2);

/// The orchestrator of the moment, and what the crashed ones left.
#[derive(Debug)]
pub struct Succession {
    /// `None` while none runs.
    current: Mutex<Option<Arc<Orchestrator>>>,
    launcher: Arc<Launcher>,
    addr: SocketAddr,
    /// Raised to crash the orchestrator of the moment, lowered once the next one runs.
    crash: AtomicBool,
    /// Raised when the last orchestrator stopped (or halted): none is left to crash.
    over: AtomicBool,
    /// The downtime of the crash under way.
    down: Mutex<Duration>,
    /// When the traffic started, which crash times count from.
    start: Mutex<Option<Instant>>,
    /// What the orchestrators told of nodes that ended unasked, each end with whether it was
    /// told after a crash, and how many they forgot.
    ended: Mutex<(Vec<(bool, Ended)>, u64)>,
    /// Each crash; how the orchestrator after it took over is filled in at its own crash.
    crashes: Mutex<Vec<OrchestratorKilled>>,
}

impl Succession {
    pub fn new(first: Orchestrator) -> std::io::Result<Succession> {
        Ok(Succession {
            launcher: Arc::clone(first.launcher()),
            addr: first.local_addr()?,
            current: Mutex::new(Some(Arc::new(first))),
            crash: AtomicBool::new(false),
            over: AtomicBool::new(false),
            down: Mutex::new(Duration::ZERO),
            start: Mutex::new(None),
            ended: Mutex::new((Vec::new(), 0)),
            crashes: Mutex::new(Vec::new()),
        })
    }

    /// The orchestrator of the moment; `None` while none runs (between a crash and the next
    /// one, or for good where the next one could not start).
    pub fn current(&self) -> Option<Arc<Orchestrator>> {
        self.current.lock().expect("no holder panics").clone()
    }

    /// The launcher all of them share: the nodes' processes, whichever launched them.
    pub fn launcher(&self) -> &Launcher {
        &self.launcher
    }

    /// The traffic starts now: crash times count from here.
    pub fn started(&self, at: Instant) {
        *self.start.lock().expect("no holder panics") = Some(at);
    }

    /// Run the orchestrators one after the other until `stop`, or a halt; `report` hears of
    /// every recovery any of them finished.
    pub fn run(
        &self,
        stop: &AtomicBool,
        mut report: impl FnMut(&RecoveryReport),
    ) -> Result<(), Unrecoverable> {
        let outcome = loop {
            let crashed = self.current().expect("one runs until a crash");
            let outcome = crashed.run_until_crash(stop, &self.crash, &mut report);
            if outcome.is_err() || !self.crash.load(Ordering::Acquire) {
                break outcome;
            }
            let at_ms = self.since_start();
            self.keep_what_it_left(&crashed);
            let heir = crashed.heir();
            self.current.lock().expect("no holder panics").take();
            drop(crashed);
            let down = *self.down.lock().expect("no holder panics");
            let next = sleep_unless(stop, down).then(|| self.bind(stop)).flatten();
            let next = next.map(|listener| Arc::new(heir.take_over(listener)));
            self.crashes
                .lock()
                .expect("no holder panics")
                .push(OrchestratorKilled {
                    at_ms,
                    back_at_ms: next.as_ref().map(|_| self.since_start()),
                    adopted: None,
                });
            let Some(next) = next else {
                break Ok(());
            };
            *self.current.lock().expect("no holder panics") = Some(next);
            self.crash.store(false, Ordering::Release);
        };
        self.over.store(true, Ordering::Release);
        outcome
    }

    /// Crash the orchestrator of the moment now, and start the next one `down` later; returns
    /// once it runs, or none is left to crash.
    pub fn crash(&self, down: Duration) {
        *self.down.lock().expect("no holder panics") = down;
        self.crash.store(true, Ordering::Release);
        while self.crash.load(Ordering::Acquire) && !self.over.load(Ordering::Acquire) {
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Each crash, with how the orchestrator after it took over.
    pub fn crashes(&self) -> Vec<OrchestratorKilled> {
        let mut crashes = self.crashes.lock().expect("no holder panics").clone();
        if let (Some(last), Some(o)) = (crashes.last_mut(), self.current()) {
            last.adopted = o.status().adopted;
        }
        crashes
    }

    /// The nodes the orchestrators told of as ended unasked, each with whether it was told after
    /// a crash (a node may end for losing its orchestrator then), and how many more they forgot.
    pub fn ended(&self) -> (Vec<(bool, Ended)>, u64) {
        let mut ended = self.ended.lock().expect("no holder panics").clone();
        if let Some(o) = self.current() {
            let after_crash = !self.crashes.lock().expect("no holder panics").is_empty();
            add_ended(&mut ended, &o.status(), after_crash);
        }
        ended
    }

    /// Keep what the crashed orchestrator `o` told of nodes that ended, and how it took over
    /// the chain after the crash before it.
    fn keep_what_it_left(&self, o: &Orchestrator) {
        let status = o.status();
        let mut crashes = self.crashes.lock().expect("no holder panics");
        let after_crash = !crashes.is_empty();
        if let Some(last) = crashes.last_mut() {
            last.adopted = status.adopted.clone();
        }
        drop(crashes);
        add_ended(
            &mut self.ended.lock().expect("no holder panics"),
            &status,
            after_crash,
        );
    }

    fn since_start(&self) -> f64 {
        let start = self.start.lock().expect("no holder panics");
        start.map_or(0.0, |s| s.elapsed().as_secs_f64() * 1e3)
    }

    /// A listener on the crashed orchestrator's address, once it is free; `None` on `stop`, or
    /// when it stays taken for [`REBIND`].
    fn bind(&self, stop: &AtomicBool) -> Option<TcpListener> {
        let deadline = Instant::now() + REBIND;
        loop {
            match TcpListener::bind(self.addr) {
                Ok(listener) => return Some(listener),
                Err(e) if Instant::now() >= deadline || stop.load(Ordering::Acquire) => {
                    tracing::error!("cannot start the next orchestrator at {}: {e}", self.addr);
                    return None;
                }
                Err(_) => std::thread::sleep(Duration::from_millis(2)),
            }
        }
    }
}

/// Add to `ended` what `status` tells of nodes that ended (those told `after_crash` or not), and
/// how many it forgot.
fn add_ended(ended: &mut (Vec<(bool, Ended)>, u64), status: &Status, after_crash: bool) {
    ended
        .0
        .extend(status.ended.iter().map(|e| (after_crash, *e)));
    ended.1 += status.ended.forgotten();
}

/// Sleep for `time` unless `stop` is raised meanwhile; whether the whole time passed.
fn sleep_unless(stop: &AtomicBool, time: Duration) -> bool {
    let deadline = Instant::now() + time;
    while Instant::now() < deadline {
        if stop.load(Ordering::Acquire) {
            return false;
        }
        std::thread::sleep((deadline - Instant::now()).min(Duration::from_millis(5)));
    }
    !stop.load(Ordering::Acquire)
}
