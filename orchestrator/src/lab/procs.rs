//! The processes of a lab run: the orchestrator leads a process group that its nodes (and the
//! replacements it starts) join. What the run starts dies with it (`PR_SET_PDEATHSIG`), and a
//! node exits when its orchestrator goes. Stopping the group asks the orchestrator to stop its
//! nodes (SIGTERM), then kills whatever is left (SIGKILL) and reaps.

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
    pub orchestrator: Child,
    pub nodes: Vec<(u16, Child)>,
    /// The run's secret file, removed with the group.
    pub secret: PathBuf,
    /// The lab is this run's until the group is gone (dropped after the processes stopped).
    pub _run_lock: RunLock,
}

impl Group {
    pub fn pgid(&self) -> u32 {
        self.orchestrator.id()
    }

    /// The first process that exited, with how.
    pub fn exited(&mut self) -> Option<(String, ExitStatus)> {
        if let Ok(Some(status)) = self.orchestrator.try_wait() {
            return Some(("the orchestrator".to_string(), status));
        }
        self.nodes.iter_mut().find_map(|(i, child)| {
            let status = child.try_wait().ok().flatten()?;
            Some((format!("node {i}"), status))
        })
    }

    /// SIGTERM the orchestrator (it stops its nodes), wait, SIGKILL the group, reap.
    fn stop(&mut self) {
        let pgid = self.pgid() as libc::pid_t;
        if matches!(self.orchestrator.try_wait(), Ok(None)) {
            // SAFETY: kill touches no memory; the orchestrator is our child and not reaped,
            // so the pid is still its.
            unsafe { libc::kill(pgid, libc::SIGTERM) };
        }
        let deadline = Instant::now() + GRACE;
        while !group_members(self.pgid()).is_empty() && Instant::now() < deadline {
            let _ = self.orchestrator.try_wait();
            for (_, child) in &mut self.nodes {
                let _ = child.try_wait();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if !group_members(self.pgid()).is_empty() {
            tracing::warn!("processes of the lab did not stop in {GRACE:?}: killing them");
            // SAFETY: killpg touches no memory; the group still has members of ours, so its
            // id cannot have been reused.
            unsafe { libc::killpg(pgid, libc::SIGKILL) };
        }
        for child in
            std::iter::once(&mut self.orchestrator).chain(self.nodes.iter_mut().map(|n| &mut n.1))
        {
            let _ = child.wait();
        }
        let _ = std::fs::remove_file(&self.secret);
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The live (not zombie) processes of process group `pgid`.
pub fn group_members(pgid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| {
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
pub(super) fn spawn(mut command: Command, pgid: u32) -> io::Result<Child> {
    command.process_group(pgid as i32).stdin(Stdio::null());
    // SAFETY: the closure runs between fork and exec and only calls prctl, which is
    // async-signal-safe and allocates nothing.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(io::Error::last_os_error());
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
