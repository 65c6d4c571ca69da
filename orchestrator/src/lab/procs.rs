//! The processes of a lab run: the orchestrator leads a process group that its nodes (and the
//! replacements it starts) join. What the run starts dies with it (`PR_SET_PDEATHSIG`); a node
//! that serves outlives its orchestrator (`ftc node --headless-for`), until the group stops.
//! Stopping the group asks the orchestrator to stop its
//! nodes (SIGTERM), then kills whatever is left (SIGKILL) and reaps, and says whether either
//! went wrong.

use std::io;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::deploy::RunLock;

/// How long the processes get to stop by themselves before they are killed.
const GRACE: Duration = Duration::from_secs(5);

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

    /// SIGTERM the orchestrator (it stops its nodes), or, where none runs (killed, and the run
    /// ended before another started), the group (its nodes serve on without one, and nobody
    /// else would stop them); wait, SIGKILL the group, reap, and remove the secret file; how
    /// that went. Dropping the group stops it too (its [`Stopped`] only
    /// logged); a stop after the first finds nothing to stop.
    pub fn stop(&mut self) -> Stopped {
        let running = matches!(self.orchestrator.try_wait(), Ok(None));
        let mut stopped = Stopped::default();
        // Once the orchestrator was reaped and no node is left to reap, no process of the group
        // can be left: the orchestrator starts processes (replacements) only once the nodes
        // run, and a stop lets its nodes go. The group's id may be another's by then.
        if running || !self.nodes.is_empty() {
            let pgid = self.pgid() as libc::pid_t;
            if running {
                // SAFETY: kill touches no memory; the orchestrator is our child and not reaped,
                // so the pid is still its.
                unsafe { libc::kill(self.orchestrator.id() as libc::pid_t, libc::SIGTERM) };
            } else {
                // SAFETY: killpg touches no memory; nodes of ours not reaped yet are in the
                // group, so its id cannot have been reused.
                unsafe { libc::killpg(pgid, libc::SIGTERM) };
            }
            let deadline = Instant::now() + GRACE;
            while !group_members(self.pgid()).is_empty() && Instant::now() < deadline {
                let _ = self.orchestrator.try_wait();
                for (_, child) in &mut self.nodes {
                    let _ = child.try_wait();
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            stopped.killed = group_members(self.pgid());
            if !stopped.killed.is_empty() {
                // SAFETY: killpg touches no memory; the group still has members of ours, so its
                // id cannot have been reused.
                unsafe { libc::killpg(pgid, libc::SIGKILL) };
            }
            let terminated = self.orchestrator.wait().ok();
            stopped.orchestrator = terminated.filter(|_| running);
            for (_, mut child) in self.nodes.drain(..) {
                let _ = child.wait();
            }
        }
        let _ = std::fs::remove_file(&self.secret);
        stopped
    }
}

/// How stopping a [`Group`] went.
#[derive(Debug, Default)]
pub(super) struct Stopped {
    /// How the orchestrator exited, if it ran when the stop began (SIGTERM asks it to stop its
    /// nodes and exit with success; its exit before is [`Group::exited`]'s).
    pub orchestrator: Option<ExitStatus>,
    /// The processes of the group that were still there after [`GRACE`], killed.
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

/// The live (not zombie) processes of process group `pgid`.
pub fn group_members(pgid: u32) -> Vec<u32> {
    let Ok(pids) = pids() else {
        return Vec::new();
    };
    pids.filter(|&pid| {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // After the command name: state, ppid, pgrp.
        let group = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(2)?.parse::<u32>().ok());
        group == Some(pgid) && alive(pid)
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
