//! Bringing a lab up and down on this host. `up` applies a [`Topology`]'s operations and records
//! the lab in a state file (`/run/ftc/lab-NAME.json`) once every one ran; until then the record is
//! `lab-NAME.json.partial` (which reserves the lab's management subnet all the same), so that a
//! lab whose `up` was interrupted reads as incomplete, not as up. A failed `up` removes what it
//! made. `down` removes the namespaces and root-namespace links the lab's record names, or without
//! one (after a crash, or objects made by hand) those named as the lab names its objects, after
//! killing the processes left in those namespaces, and the directories its demos left in the temp
//! directory; it refuses while a chain runs in the lab. Both hold a lock file, so that labs
//! brought up at once get different management subnets.

use std::fs::File;
use std::io::{self, Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ftc_chain::spec::ChainSpec;

use super::ops::{self, Op, OpError};
use super::procs::alive;
use super::topology::{LabName, Layout, Topology, TopologyError};

/// Where labs are recorded.
pub const STATE_DIR: &str = "/run/ftc";

/// How long `down` waits for killed processes and removed links to be gone.
const SETTLE: Duration = Duration::from_secs(10);

/// How long `up` and `down` wait for the lab lock that another process holds.
const LOCK_WAIT: Duration = Duration::from_secs(60);

/// Why a lab cannot be brought up or down.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error("the lab makes network namespaces and links: {0}")]
    Unprivileged(String),
    #[error("the lab needs `{0}`, not found on PATH (Debian package: {1})")]
    Missing(&'static str, &'static str),
    #[error(
        "lab {name} exists already ({what}): `ftc lab down --name {name}` removes it, \
         `ftc lab up --force` makes it anew"
    )]
    Exists { name: LabName, what: String },
    #[error("lab {0} is not up (no state file): `ftc lab up --name {0} SPEC` makes it")]
    NotUp(LabName),
    #[error("lab {0} is incomplete: run `ftc lab down --name {0}`")]
    Incomplete(LabName),
    #[error("a chain runs in lab {name} ({by}): stop it first")]
    Running { name: LabName, by: String },
    #[error(
        "the lab lock {path} is still held by {by} after {LOCK_WAIT:?}: is an `ftc lab` or `ftc \
         bench` stopped (Ctrl-Z) or hung?"
    )]
    LockTimeout { path: PathBuf, by: String },
    #[error("no free management subnet 10.77.X.0/24 left for another lab")]
    NoSubnet,
    #[error("lab {name}: still there after removing it: {left}")]
    Left { name: LabName, left: String },
    #[error("{what} {path}: {source}")]
    File {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("the lab's state file {path}: {source}")]
    State {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error(transparent)]
    Op(#[from] OpError),
    #[error(transparent)]
    Topology(#[from] TopologyError),
}

/// The state file of lab `name`.
pub fn state_path(name: &LabName) -> PathBuf {
    PathBuf::from(STATE_DIR).join(format!("lab-{name}.json"))
}

/// The state file of lab `name` while `up` makes it: renamed to [`state_path`] once it is made.
pub fn partial_state_path(name: &LabName) -> PathBuf {
    PathBuf::from(STATE_DIR).join(format!("lab-{name}.json.partial"))
}

/// The file of the secret a run of lab `name` uses.
pub fn secret_path(name: &LabName) -> PathBuf {
    PathBuf::from(STATE_DIR).join(format!("lab-{name}.secret"))
}

/// The file a run of lab `name` holds locked while it runs, with its process id in it.
pub fn run_lock_path(name: &LabName) -> PathBuf {
    PathBuf::from(STATE_DIR).join(format!("lab-{name}.run"))
}

/// How the names of the directories that demos in lab `name` keep their files in begin (in the
/// temp directory, a random part follows): `down` removes those that are left.
pub fn demo_dir_prefix(name: &LabName) -> String {
    format!("ftc-lab-demo-{name}-")
}

/// Take an exclusive `flock` on `file`, waiting for it when `wait`; `Ok(false)` when it is held
/// elsewhere and `!wait`. The lock goes when the file is closed, also when the process dies.
pub(super) fn flock(file: &File, wait: bool) -> io::Result<bool> {
    let op = if wait {
        libc::LOCK_EX
    } else {
        libc::LOCK_EX | libc::LOCK_NB
    };
    // SAFETY: flock takes an open descriptor (the file's, open while `file` lives) and touches
    // no memory.
    if unsafe { libc::flock(file.as_raw_fd(), op) } == 0 {
        return Ok(true);
    }
    match io::Error::last_os_error() {
        e if e.kind() == io::ErrorKind::WouldBlock && !wait => Ok(false),
        e => Err(e),
    }
}

/// Whether this host can run a lab: privileged (see [`check_privilege`]), with `ip` and
/// `sysctl`.
pub fn check_host() -> Result<(), LabError> {
    check_privilege()?;
    for (program, package) in [("ip", "iproute2"), ("sysctl", "procps")] {
        if !ops::on_path(program) {
            return Err(LabError::Missing(program, package));
        }
    }
    Ok(())
}

/// Whether this process may make network namespaces and links: root, with CAP_NET_ADMIN and
/// CAP_SYS_ADMIN in effect (see [`ftc_node::netns::namespaces_denied`]).
pub fn check_privilege() -> Result<(), LabError> {
    match ftc_node::netns::namespaces_denied() {
        Some(why) => Err(LabError::Unprivileged(why)),
        None => Ok(()),
    }
}

/// A lock file in the state directory. Who takes its `flock` to say so writes its process id in
/// it, for those who find it held.
#[derive(Debug)]
pub(super) struct LockFile {
    file: File,
    path: PathBuf,
}

impl LockFile {
    /// The lock file at `path`, made if it is not there.
    fn open(path: PathBuf) -> Result<LockFile, LabError> {
        let file = std::fs::create_dir_all(STATE_DIR)
            .and_then(|()| {
                File::options()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .open(&path)
            })
            .map_err(|source| LabError::File {
                what: "cannot open the lock file",
                path: path.clone(),
                source,
            })?;
        Ok(LockFile { file, path })
    }

    /// Take the lock if no one holds it.
    fn try_lock(&self) -> Result<bool, LabError> {
        flock(&self.file, false).map_err(|source| LabError::File {
            what: "cannot lock",
            path: self.path.clone(),
            source,
        })
    }

    /// Who holds the lock, as the file says.
    fn holder(&mut self) -> String {
        let mut text = String::new();
        let _ = self
            .file
            .rewind()
            .and_then(|()| self.file.read_to_string(&mut text));
        match text.trim() {
            "" => "another process".to_string(),
            pid => format!("process {pid}"),
        }
    }

    /// The lock at `path` if no one holds it (else who does, as the file says), taken on the
    /// file that is at `path` now: one removed while this opened it (`ftc lab down` removes a
    /// run lock it holds) would lock nothing, and the path is opened again.
    pub(super) fn take(path: PathBuf) -> Result<Result<LockFile, String>, LabError> {
        loop {
            let mut lock = LockFile::open(path.clone())?;
            if !lock.try_lock()? {
                return Ok(Err(lock.holder()));
            }
            if lock.is_at_path() {
                lock.claim()?;
                return Ok(Ok(lock));
            }
        }
    }

    /// Whether the file is the one at its path (not one removed since it was opened).
    fn is_at_path(&self) -> bool {
        use std::os::unix::fs::MetadataExt;
        match (self.file.metadata(), std::fs::metadata(&self.path)) {
            (Ok(a), Ok(b)) => (a.dev(), a.ino()) == (b.dev(), b.ino()),
            _ => false,
        }
    }

    /// Write this process's id in the file (its lock held).
    fn claim(&mut self) -> Result<(), LabError> {
        self.file
            .set_len(0)
            .and_then(|()| self.file.rewind())
            .and_then(|()| write!(self.file, "{}", std::process::id()))
            .map_err(|source| LabError::File {
                what: "cannot write to the lock file",
                path: self.path.clone(),
                source,
            })
    }
}

/// An exclusive lock on the lab state directory, released when dropped.
#[derive(Debug)]
struct Lock {
    _file: LockFile,
}

impl Lock {
    /// Wait for the lock, saying once that it waits and for whom, for at most [`LOCK_WAIT`].
    fn take() -> Result<Lock, LabError> {
        let mut lock = LockFile::open(PathBuf::from(STATE_DIR).join("lab.lock"))?;
        let deadline = Instant::now() + LOCK_WAIT;
        let mut said = false;
        while !lock.try_lock()? {
            let by = lock.holder();
            if Instant::now() >= deadline {
                return Err(LabError::LockTimeout {
                    path: lock.path,
                    by,
                });
            }
            if !std::mem::replace(&mut said, true) {
                tracing::warn!(
                    "waiting for the lab lock {} held by {by}",
                    lock.path.display()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        lock.claim()?;
        Ok(Lock { _file: lock })
    }
}

/// What `up` made, and what it could not do but carried on without.
#[derive(Debug)]
pub struct Up {
    pub topology: Topology,
    pub warnings: Vec<String>,
}

/// Bring lab `name` up for `spec` in `layout`: fails if it exists, unless `force` (then it is
/// removed first). On failure, whatever was made is removed again.
pub fn up(spec: &ChainSpec, layout: Layout, name: &LabName, force: bool) -> Result<Up, LabError> {
    check_host()?;
    let _lock = Lock::take()?;
    if force {
        remove(name)?;
    } else if let Some(what) = existing(name)? {
        return Err(LabError::Exists {
            name: name.clone(),
            what,
        });
    }
    let topology = Topology::new(spec, layout, name.clone(), free_subnet()?)?;
    let partial = partial_state_path(name);
    let text = serde_json::to_string_pretty(&topology).expect("a topology serializes");
    std::fs::write(&partial, text).map_err(|source| LabError::File {
        what: "cannot write the state file",
        path: partial.clone(),
        source,
    })?;
    let mut warnings = Vec::new();
    let ethtool = ops::on_path("ethtool");
    if !ethtool {
        warnings.push(
            "ethtool is not installed: the hosts' checksum and segmentation offloads stay on, \
             so TCP and UDP through AF_XDP edges may carry bad checksums"
                .to_string(),
        );
    }
    for op in topology.ops() {
        if !ethtool && matches!(op, Op::Offloads { .. }) {
            continue;
        }
        if let Err(e) = op.run() {
            if let Err(cleanup) = remove(name) {
                tracing::error!("removing the half-made lab {name}: {cleanup}");
            }
            return Err(e.into());
        }
    }
    std::fs::rename(&partial, state_path(name)).map_err(|source| LabError::File {
        what: "cannot record the lab as made: renaming",
        path: partial,
        source,
    })?;
    Ok(Up { topology, warnings })
}

/// What `down` removed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Down {
    pub namespaces: Vec<String>,
    pub links: Vec<String>,
    /// Processes that were still running in the lab's namespaces.
    pub killed: Vec<Killed>,
    /// Directories that demos in the lab left in the temp directory.
    pub dirs: Vec<PathBuf>,
    /// Whether there was a state file (of a lab made or half made).
    pub recorded: bool,
}

/// A process that `down` killed.
#[derive(Debug, PartialEq, Eq)]
pub struct Killed {
    pub pid: u32,
    /// Its command name (`/proc/PID/comm`).
    pub command: String,
    pub namespace: String,
}

/// Remove lab `name`: what it recorded, or without a record what its names match.
pub fn down(name: &LabName) -> Result<Down, LabError> {
    check_host()?;
    let _lock = Lock::take()?;
    remove(name)
}

/// What is there of lab `name`: its recorded topology, the namespaces and root links named as
/// it names them.
#[derive(Debug)]
pub struct Status {
    pub recorded: Option<Recorded>,
    pub namespaces: Vec<String>,
    pub links: Vec<String>,
}

/// What a lab's state file records.
#[derive(Debug)]
pub struct Recorded {
    pub topology: Topology,
    /// Whether its `up` finished (else the lab is half made: `down` removes it).
    pub complete: bool,
}

pub fn status(name: &LabName) -> Result<Status, LabError> {
    check_host()?;
    let owned = Owned::Named(name.clone());
    let (namespaces, links) = (namespaces(&owned)?, root_links(&owned)?);
    Ok(Status {
        recorded: recorded(name)?,
        namespaces,
        links,
    })
}

/// Lab `name`'s recorded topology, if it has a state file; an error if its `up` did not finish.
pub fn load(name: &LabName) -> Result<Option<Topology>, LabError> {
    match recorded(name)? {
        Some(Recorded {
            complete: false, ..
        }) => Err(LabError::Incomplete(name.clone())),
        r => Ok(r.map(|r| r.topology)),
    }
}

/// What lab `name`'s state file records, made or half made.
fn recorded(name: &LabName) -> Result<Option<Recorded>, LabError> {
    for (path, complete) in [(state_path(name), true), (partial_state_path(name), false)] {
        if let Some(topology) = read_state(&path)? {
            return Ok(Some(Recorded { topology, complete }));
        }
    }
    Ok(None)
}

/// The topology in the state file at `path`, if it is there.
fn read_state(path: &Path) -> Result<Option<Topology>, LabError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(LabError::File {
                what: "cannot read the state file",
                path: path.to_path_buf(),
                source,
            })
        }
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|source| LabError::State {
            path: path.to_path_buf(),
            source,
        })
}

/// Which namespaces and root-namespace links are a lab's.
enum Owned {
    /// Those its state file records.
    Recorded(Topology),
    /// Those named as it names its objects ([`LabName::owns_namespace`],
    /// [`LabName::owns_link`]).
    Named(LabName),
}

impl Owned {
    fn namespace(&self, ns: &str) -> bool {
        match self {
            Owned::Recorded(t) => t.namespaces().iter().any(|n| n == ns),
            Owned::Named(name) => name.owns_namespace(ns),
        }
    }

    fn link(&self, link: &str) -> bool {
        match self {
            Owned::Recorded(t) => t.root_links().iter().any(|l| l == link),
            Owned::Named(name) => name.owns_link(link),
        }
    }
}

/// A description of what exists of lab `name`, or `None`.
fn existing(name: &LabName) -> Result<Option<String>, LabError> {
    let mut what: Vec<String> = [state_path(name), partial_state_path(name)]
        .iter()
        .filter(|p| p.exists())
        .map(|p| format!("state file {}", p.display()))
        .collect();
    what.extend(objects(&Owned::Named(name.clone()))?);
    Ok((!what.is_empty()).then(|| what.join(", ")))
}

/// The namespaces and root links of `owned` that exist, described.
fn objects(owned: &Owned) -> Result<Vec<String>, LabError> {
    let mut what: Vec<String> = namespaces(owned)?
        .into_iter()
        .map(|n| format!("namespace {n}"))
        .collect();
    what.extend(root_links(owned)?.into_iter().map(|l| format!("link {l}")));
    Ok(what)
}

/// The namespaces of `owned` that exist.
fn namespaces(owned: &Owned) -> Result<Vec<String>, LabError> {
    let list = ops::run(&argv(&["ip", "netns", "list"]))?;
    Ok(list
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| owned.namespace(n))
        .map(str::to_string)
        .collect())
}

/// The links of `owned` in the root namespace that exist.
fn root_links(owned: &Owned) -> Result<Vec<String>, LabError> {
    let list = ops::run(&argv(&["ip", "-o", "link", "show"]))?;
    Ok(list
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n))
        .filter(|n| owned.link(n))
        .map(str::to_string)
        .collect())
}

fn argv(words: &[&str]) -> Vec<String> {
    words.iter().map(|w| w.to_string()).collect()
}

/// The lowest X of 10.77.X.0/24 that no recorded lab (made or half made) and no root-namespace
/// address uses.
fn free_subnet() -> Result<u8, LabError> {
    let mut used = [false; 256];
    if let Ok(dir) = std::fs::read_dir(STATE_DIR) {
        for entry in dir.flatten() {
            let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
            if let Ok(t) = serde_json::from_str::<Topology>(&text) {
                used[usize::from(t.subnet)] = true;
            }
        }
    }
    let addrs = ops::run(&argv(&["ip", "-4", "-o", "addr", "show"]))?;
    for word in addrs.split_whitespace() {
        let ip = word.split('/').next().unwrap_or(word);
        if let Ok(ip) = ip.parse::<std::net::Ipv4Addr>() {
            if let [10, 77, x, _] = ip.octets() {
                used[usize::from(x)] = true;
            }
        }
    }
    (0..=255u8)
        .find(|&x| !used[usize::from(x)])
        .ok_or(LabError::NoSubnet)
}

/// Remove lab `name` (the lab lock held), unless a chain runs in it: kill the processes in its
/// namespaces, remove those and its root links (see [`Owned`]: with a state file, what it
/// records), its files, and its demos' directories.
fn remove(name: &LabName) -> Result<Down, LabError> {
    // Held until the lab is gone, so that no run starts in it meanwhile; removed while held
    // (a run that comes later makes it anew), never while a run holds it.
    let mut run = LockFile::open(run_lock_path(name))?;
    if !run.try_lock()? {
        return Err(LabError::Running {
            name: name.clone(),
            by: run.holder(),
        });
    }
    let owned = match recorded(name) {
        Ok(Some(r)) => Owned::Recorded(r.topology),
        Ok(None) => Owned::Named(name.clone()),
        Err(e) => {
            tracing::warn!("{e}: removing what is named as lab {name} names its objects");
            Owned::Named(name.clone())
        }
    };
    let mut down = Down {
        namespaces: namespaces(&owned)?,
        recorded: matches!(owned, Owned::Recorded(_)),
        ..Down::default()
    };
    for ns in &down.namespaces {
        let pids = ops::run(&argv(&["ip", "netns", "pids", ns]))?;
        for pid in pids.lines().filter_map(|p| p.trim().parse::<u32>().ok()) {
            let command = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            // SAFETY: kill touches no memory; a pid that is gone already gives ESRCH.
            if unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) } == 0 {
                let command = command.trim().to_string();
                tracing::warn!("lab {name}: killed process {pid} ({command}) in namespace {ns}");
                down.killed.push(Killed {
                    pid,
                    command,
                    namespace: ns.clone(),
                });
            }
        }
    }
    settle(|| down.killed.iter().all(|k| !alive(k.pid)));
    for ns in &down.namespaces {
        Op::ip(None, ["netns", "del", ns]).run()?;
    }
    // A namespace goes asynchronously, and the root ends of its veths with it: remove what
    // remains until nothing does.
    settle(|| {
        let Ok(links) = root_links(&owned) else {
            return false;
        };
        for link in &links {
            match Op::ip(None, ["link", "del", link]).run() {
                Ok(_) => down.links.push(link.clone()),
                Err(e) if e.stderr().is_some_and(|s| s.contains("Cannot find device")) => {}
                Err(e) => tracing::warn!("{e}"),
            }
        }
        links.is_empty()
    });
    for path in [
        state_path(name),
        partial_state_path(name),
        secret_path(name),
        run.path.clone(),
    ] {
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(LabError::File {
                    what: "cannot remove",
                    path,
                    source,
                })
            }
        }
    }
    down.dirs = remove_demo_dirs(name);
    let left = objects(&owned)?;
    if left.is_empty() {
        Ok(down)
    } else {
        Err(LabError::Left {
            name: name.clone(),
            left: left.join(", "),
        })
    }
}

/// Remove the directories that demos in lab `name` left in the temp directory; those removed.
fn remove_demo_dirs(name: &LabName) -> Vec<PathBuf> {
    let prefix = demo_dir_prefix(name);
    let Ok(dir) = std::fs::read_dir(std::env::temp_dir()) else {
        return Vec::new();
    };
    dir.flatten()
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|f| f.starts_with(&prefix))
        })
        .map(|e| e.path())
        .filter(|path| match std::fs::remove_dir_all(path) {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!("lab {name}: cannot remove {}: {e}", path.display());
                false
            }
        })
        .collect()
}

/// Wait until `done`, for at most [`SETTLE`].
fn settle(mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + SETTLE;
    while !done() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
}
