//! The processes of a lab run: the orchestrator leads a process group that its nodes join, and
//! every process of the run, the replacements the orchestrator starts (in groups of their own)
//! among them, carries the run's mark in its environment (`FTC_LAB_RUN`). What the run starts
//! dies with it (`PR_SET_PDEATHSIG`); a node that serves outlives its orchestrator (`ftc node
//! --headless-for`), until the run stops. Stopping asks the orchestrator to stop its nodes
//! (SIGTERM), then the processes it did not stop, then kills whatever is left (SIGKILL) and
//! reaps, and says what had to be done.

use std::io;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::deploy::RunLock;
use crate::process::launcher::token_text;
use crate::process::unguessable;

/// How long the processes get to stop by themselves before they are killed.
const GRACE: Duration = Duration::from_secs(5);

/// How long the nodes get to exit after their orchestrator did (it tells them to stop, and
/// exits without waiting for those it did not start) before the run SIGTERMs them itself.
const LET_GO: Duration = Duration::from_secs(1);

/// The environment variable that marks the processes of a run (its value is the run's own):
/// a replacement leads a process group of its own (so that its launcher can kill it with what
/// it starts), and one whose orchestrator was killed before another adopted it is no process's
/// child and in no group of the run's; the mark still finds it.
pub(super) const RUN_ENV: &str = "FTC_LAB_RUN";

/// A mark for a run's processes ([`RUN_ENV`]) that no other run has.
pub(super) fn run_mark() -> String {
    token_text(&unguessable())
}

/// The processes of a run: the orchestrator leads their process group. Dropping it stops them
/// and removes the run's secret file.
#[derive(Debug)]
pub(super) struct Group {
    /// The orchestrator of the moment (one started after another was killed joins the first
    /// one's group).
    pub orchestrator: Child,
    /// The group's id: the first orchestrator's pid.
    pub pgid: u32,
    pub nodes: Vec<(u16, Child)>,
    /// The value of [`RUN_ENV`] that every process of the run has.
    pub mark: String,
    /// The run's secret file, removed with the group.
    pub secret: PathBuf,
    /// The lab is this run's until the group is gone (dropped after the processes stopped).
    pub _run_lock: RunLock,
}

impl Group {
    pub fn pgid(&self) -> u32 {
        self.pgid
    }

    /// The first process that exited, with how.
    pub fn exited(&mut self) -> Option<(String, ExitStatus)> {
        if let Some(exit) = self.orchestrator_exited() {
            return Some(exit);
        }
        self.nodes.iter_mut().find_map(|(i, child)| {
            let status = child.try_wait().ok().flatten()?;
            Some((format!("node {i}"), status))
        })
    }

    /// The orchestrator, if it exited, with how.
    pub fn orchestrator_exited(&mut self) -> Option<(String, ExitStatus)> {
        let status = self.orchestrator.try_wait().ok().flatten()?;
        Some(("the orchestrator".to_string(), status))
    }

    /// Stop every process of the run: SIGTERM the orchestrator if one runs (it stops the nodes
    /// that are its own), and once none runs (killed, and the run ended before another
    /// started; or exited, [`LET_GO`] ago) SIGTERM the processes left: nodes that serve on
    /// without an orchestrator, or that had not rejoined the one just started, and
    /// replacements whose orchestrator was killed. What is left after [`GRACE`] is SIGKILLed.
    /// Reap, remove the secret file, and say how that went. Dropping the group stops it too
    /// (its [`Stopped`] only logged); a stop after the first finds nothing to stop.
    pub fn stop(&mut self) -> Stopped {
        let mut stopped = Stopped::default();
        let running = matches!(self.orchestrator.try_wait(), Ok(None));
        if running {
            // SAFETY: kill touches no memory; the orchestrator is our child and not reaped, so
            // the pid is still its.
            unsafe { libc::kill(self.orchestrator.id() as libc::pid_t, libc::SIGTERM) };
        }
        let started = Instant::now();
        let mut gone_since = (!running).then_some(started);
        let let_go = if running { LET_GO } else { Duration::ZERO };
        let mut left = marked(&self.mark);
        while !left.is_empty() && started.elapsed() < GRACE {
            if gone_since.is_none() && !matches!(self.orchestrator.try_wait(), Ok(None)) {
                gone_since = Some(Instant::now());
            }
            if stopped.terminated.is_empty() && gone_since.is_some_and(|t| t.elapsed() >= let_go) {
                signal(&left, libc::SIGTERM);
                stopped.terminated = left.clone();
            }
            for (_, child) in &mut self.nodes {
                let _ = child.try_wait();
            }
            std::thread::sleep(Duration::from_millis(20));
            left = marked(&self.mark);
        }
        if !left.is_empty() {
            signal(&left, libc::SIGKILL);
            stopped.killed = left;
        }
        let terminated = self.orchestrator.wait().ok();
        stopped.orchestrator = terminated.filter(|_| running);
        for (_, mut child) in self.nodes.drain(..) {
            let _ = child.wait();
        }
        let _ = std::fs::remove_file(&self.secret);
        stopped
    }
}

/// Send `signal` to each of `pids`: processes of the run, looked up a moment ago (one that has
/// exited since is a zombie until reaped, its pid not yet another's).
fn signal(pids: &[u32], signal: libc::c_int) {
    for &pid in pids {
        // SAFETY: kill touches no memory; a pid that is gone gives ESRCH.
        unsafe { libc::kill(pid as libc::pid_t, signal) };
    }
}

/// How stopping a [`Group`] went.
#[derive(Debug, Default)]
pub(super) struct Stopped {
    /// How the orchestrator exited, if it ran when the stop began (SIGTERM asks it to stop its
    /// nodes and exit with success; its exit before is [`Group::exited`]'s).
    pub orchestrator: Option<ExitStatus>,
    /// The processes that no orchestrator stopped, SIGTERMed by the run itself.
    pub terminated: Vec<u32>,
    /// The processes of the run that were still there after [`GRACE`], killed.
    pub killed: Vec<u32>,
}

impl Stopped {
    /// What went wrong, if anything did: the orchestrator failed, or processes had to be killed.
    pub fn trouble(&self) -> Option<String> {
        let mut what = Vec::new();
        if let Some(status) = self.orchestrator.filter(|s| !s.success()) {
            what.push(format!(
                "the orchestrator exited ({status}) when asked to stop"
            ));
        }
        if !self.killed.is_empty() {
            what.push(format!(
                "processes {:?} of the lab did not stop in {GRACE:?}: killed them",
                self.killed
            ));
        }
        (!what.is_empty()).then(|| what.join("; "))
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        if let Some(trouble) = self.stop().trouble() {
            tracing::warn!("{trouble}");
        }
    }
}

/// The ids of the processes in `/proc`.
pub fn pids() -> io::Result<impl Iterator<Item = u32>> {
    let dir = std::fs::read_dir("/proc")?;
    Ok(dir
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok()))
}

/// The live (not zombie) processes whose environment marks them as the run's ([`RUN_ENV`] is
/// `mark`). Reading another's environment takes root (or its user), as the lab does.
fn marked(mark: &str) -> Vec<u32> {
    let Ok(pids) = pids() else {
        return Vec::new();
    };
    let want = format!("{RUN_ENV}={mark}");
    pids.filter(|&pid| {
        let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        environ.split(|&b| b == 0).any(|v| v == want.as_bytes()) && alive(pid)
    })
    .collect()
}

/// `command`, in process group `pgid` (0: a new one led by it), killed when this process dies.
/// A child whose parent died before it could ask for that exits at once.
pub(super) fn spawn(mut command: Command, pgid: u32) -> io::Result<Child> {
    command.process_group(pgid as i32).stdin(Stdio::null());
    let parent = std::process::id();
    // SAFETY: the closure runs between fork and exec and only calls prctl, getppid and _exit,
    // which are async-signal-safe and allocate nothing.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(io::Error::last_os_error());
            }
            // Reparented already: the death the signal was to follow came before it was asked.
            if libc::getppid() as u32 != parent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
    command.spawn()
}

/// Whether process `pid` exists and is not a zombie.
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        // The state follows the command name, which is in parentheses and may hold anything.
        stat.rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z")
    })
}
