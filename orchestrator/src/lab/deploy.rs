//! Running a chain in a lab (`ftc lab run`): `ftc orchestrator` in the root namespace on the
//! management bridge, one `ftc node` per server in its namespace, with its data and transfer
//! sockets on its management address (and, with edges, AF_XDP or raw packet sockets on the edge
//! links). Initial nodes
//! and the orchestrator's replacements start from one shell command template, so a replacement
//! lands in the failed server's namespace. Every process is in one process group, killed with
//! SIGKILL if it does not stop by itself, and dies with the process that started the run. An
//! orchestrator killed by a signal while the chain runs (a crash, failure injection) is started
//! again on the same address, in the same group, and adopts the chain as its nodes, which
//! serve on meanwhile, rejoin it; one that exits by itself (a halt) ends the run.
//! The nodes the run starts that exit while the chain runs are reported ([`NodeExit`]), with
//! how they ended and their last words: each is said as it happens, and the caller gets back the
//! latest of those it asked to keep ([`Recent`]), however long the run and however many nodes
//! an operator kills meanwhile.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};

use super::apply::{run_lock_path, secret_path, LabError, LockFile};
use super::procs::{run_mark, spawn, Group, RUN_ENV};
use super::topology::Topology;
use crate::control::{ControlError, Peer};
use crate::coordinator::RecoveryReport;
use crate::process::edges::EdgeKind;
use crate::process::launcher::{quote, substitute, NodeArgs};
use crate::process::node::{NodeError, EXIT_LOST_ORCHESTRATOR, EXIT_REFUSED};
use crate::process::orchestrator::{DECLARED_FAILED, NOT_TAKEN_BACK};
use crate::process::recent::Recent;
use ftc_node::ftmb::FtmbConfig;
use ftc_node::Mode;

/// How long the orchestrator may take to listen, and the nodes to deploy.
const START: Duration = Duration::from_secs(30);

/// What a lab run is made of.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// The `ftc` executable.
    pub exe: PathBuf,
    /// The chain spec, an absolute path (the nodes read it too).
    pub spec: PathBuf,
    pub topology: Topology,
    pub heartbeat_ms: f64,
    pub misses: u32,
    /// Failure injection: the chance of each frame between servers to be dropped on arrival
    /// (`ftc node --ring-loss`; 0: none).
    pub ring_loss: f64,
    /// Every node logs a stats line this often (`ftc node --stats-every`).
    pub stats_every: Option<Duration>,
    /// Give server 0 and the last server their edges (`--edge-in`, `--edge-out`) on sockets of
    /// this kind.
    pub edges: Option<EdgeKind>,
    /// Where to tell where the nodes are: the orchestrator's `deployed in epoch 1 of run R: …`
    /// and `rerouted in epoch E of run R: …` lines (see [`parse_peers`]).
    pub peers: Option<crossbeam_channel::Sender<String>>,
    /// The orchestrator's recovery reports go, as text, to this process's standard error
    /// instead of its standard output.
    pub reports_to_stderr: bool,
    /// Where to pass the orchestrator's recovery reports on to, as they come.
    pub recoveries: Option<crossbeam_channel::Sender<RecoveryReport>>,
    /// What the nodes run (`ftc node --mode`): FTC, or one of the baselines.
    pub mode: Mode,
    /// The snapshots of FTMB+snapshot.
    pub ftmb: FtmbConfig,
    /// How long the run waits before it starts another orchestrator in the place of one killed
    /// by a signal: the chain runs without one meanwhile.
    pub orchestrator_down: Duration,
}

impl RunConfig {
    /// The `sh -c` command that starts the node at `{position}` in its namespace, with the
    /// launcher's placeholders (see [`substitute`]): per position its management address and
    /// options (`node_options`), then `exec ip netns exec NS ftc node …`.
    pub fn node_template(&self) -> String {
        let t = &self.topology;
        let arms: String = (0..t.servers)
            .map(|i| {
                let options = self.node_options(i).join(" ");
                format!("{i}) d={} e={};; ", t.mgmt_ip(i), quote(&options))
            })
            .collect();
        format!(
            "case {{position}} in {arms}esac; exec ip netns exec {}-s{{position}} {} node \
             --orchestrator {{orchestrator}} --position {{position}} \
             --secret-file {{secret_file}} --heartbeat-ms {{heartbeat_ms}} --data \"$d:0\" $e \
             {{spec}}",
            t.name,
            quote(&self.exe.display().to_string()),
        )
    }

    /// The options of the node at `position` beyond its address: its edges (none but at the
    /// chain's ends), its links to other servers when they carry AF_XDP, and the mode of a
    /// baseline (with FTMB+snapshot's snapshots).
    fn node_options(&self, position: u16) -> Vec<String> {
        let mut words = Vec::new();
        if let Some(kind) = self.edges {
            words = self.topology.edge_args(position);
            if kind != EdgeKind::Xdp && !words.is_empty() {
                words.extend(["--edge-kind".to_string(), kind.name().to_string()]);
            }
            // Over AF_XDP, frames between servers take the links too.
            if kind == EdgeKind::Xdp {
                words.extend(self.topology.link_args(position));
            }
        }
        if self.ring_loss > 0.0 {
            words.extend(["--ring-loss".to_string(), self.ring_loss.to_string()]);
        }
        if let Some(every) = self.stats_every {
            words.extend(["--stats-every".to_string(), every.as_secs_f64().to_string()]);
        }
        if self.mode != Mode::Ftc {
            words.extend(["--mode".to_string(), self.mode.name().to_string()]);
        }
        if self.mode == Mode::FtmbSnapshot {
            words.extend([
                "--snapshot".to_string(),
                self.ftmb.snapshot.to_string(),
                "--snapshot-every-ms".to_string(),
                self.ftmb.snapshot_every.as_millis().to_string(),
            ]);
        }
        words
    }

    fn node_args(&self, orchestrator: SocketAddr) -> NodeArgs {
        // The edges are in the template, per position.
        NodeArgs::without_customers(
            orchestrator,
            self.spec.clone(),
            secret_path(&self.topology.name),
            self.heartbeat_ms,
            self.topology.exit(),
        )
    }
}

/// Why a lab run failed.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error("cannot start {what}: {source}")]
    Spawn { what: String, source: io::Error },
    #[error("cannot write the secret file {path}: {source}")]
    Secret { path: PathBuf, source: io::Error },
    #[error("{what} exited ({status}) {when}{said}")]
    Exited {
        what: String,
        status: std::process::ExitStatus,
        when: &'static str,
        /// `: ` and the error it said it stopped with, or nothing.
        said: String,
    },
    #[error("{0} within {START:?}")]
    Timeout(&'static str),
    #[error("interrupted before the chain was deployed")]
    Interrupted,
    #[error(
        "a chain runs in lab {name} already ({by}): stop it first, or use another lab (`ftc lab up --name`)"
    )]
    Busy { name: String, by: String },
    #[error(transparent)]
    Lab(#[from] LabError),
    #[error("the chain did not stop cleanly: {0}")]
    Unclean(String),
}

/// Held while a chain runs in a lab (`ftc lab run`, `ftc lab demo`, `ftc bench --transport
/// xdp`): a second run would take the same edge interfaces and write over the first one's
/// secret file. The lock goes with the file, also when the process dies.
#[derive(Debug)]
pub(super) struct RunLock {
    _file: LockFile,
}

impl RunLock {
    fn take(t: &Topology) -> Result<RunLock, DeployError> {
        match LockFile::take(run_lock_path(&t.name))? {
            Ok(file) => Ok(RunLock { _file: file }),
            Err(by) => Err(DeployError::Busy {
                name: t.name.to_string(),
                by,
            }),
        }
    }
}

/// A node that exited while the chain ran: one the run started, or a replacement the
/// orchestrator started that it did not stop itself (it says so).
#[derive(Debug, Clone)]
pub struct NodeExit {
    pub position: u16,
    pub pid: u32,
    pub status: ExitStatus,
    /// The last line it wrote on its standard error: a node that fails says why there last.
    /// Empty for a replacement (its standard error is the orchestrator's).
    pub said: String,
}

impl NodeExit {
    /// Whether it ended because the orchestrator cut it off: a node declared failed (one that
    /// missed its heartbeats on a loaded host, say) is told so and has its control connection
    /// closed, and exits with the refusal, or, when that did not reach it, with the error that
    /// it read the connection's end, or a reset (a connection closed with frames unread reads as
    /// one), or, once it served, with the refusal of its rejoin. `ftc node` exits with status
    /// [`EXIT_REFUSED`] when refused and [`EXIT_LOST_ORCHESTRATOR`] when it lost the
    /// orchestrator (also when none took it back in time, which is no cut-off).
    pub fn cut_off(&self) -> bool {
        let reset = io::Error::from_raw_os_error(libc::ECONNRESET);
        let lost = [
            NodeError::OrchestratorGone.to_string(),
            NodeError::LostOrchestrator(ControlError::Io(reset)).to_string(),
        ];
        let refused = [DECLARED_FAILED, NOT_TAKEN_BACK]
            .map(|why| NodeError::Refused(why.to_string()).to_string());
        match self.status.code().and_then(|c| u8::try_from(c).ok()) {
            Some(EXIT_REFUSED) => refused.iter().any(|r| self.said.contains(r.as_str())),
            Some(EXIT_LOST_ORCHESTRATOR) => lost.iter().any(|w| self.said.ends_with(w.as_str())),
            _ => false,
        }
    }

    /// Whether it ended on its own: with a status other than 0 (a panic, a data path that hung,
    /// an error), not cut off by the orchestrator, nor killed by a signal (an operator's failure
    /// injection, the demo's kill).
    pub fn ended_on_its_own(&self) -> bool {
        self.status.code().is_some_and(|c| c != 0) && !self.cut_off()
    }

    /// `node P (pid N) exited (STATUS) while the chain ran`, with its last words where it left
    /// any.
    pub fn while_the_chain_ran(&self) -> String {
        let said = if self.said.is_empty() { "" } else { ": " };
        format!(
            "node {} (pid {}) exited ({}) while the chain ran{said}{}",
            self.position, self.pid, self.status, self.said
        )
    }
}

/// Passes what `stderr` (a node's) says on to this process's standard error, line by line; the
/// receiver gets the last line that is not blank once it ends.
fn last_words(stderr: impl io::Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = crossbeam_channel::bounded(1);
    std::thread::spawn(move || {
        let (mut reader, mut line, mut last) = (BufReader::new(stderr), Vec::new(), Vec::new());
        // Bytes, not text: a line that is not UTF-8 must not stop the reading (the node would
        // block once the pipe is full).
        while matches!(reader.read_until(b'\n', &mut line), Ok(n) if n > 0) {
            let _ = io::stderr().lock().write_all(&line);
            if !line.trim_ascii().is_empty() {
                std::mem::swap(&mut last, &mut line);
            }
            line.clear();
        }
        let _ = tx.send(String::from_utf8_lossy(last.trim_ascii()).into_owned());
    });
    rx
}

/// What the orchestrator's standard error says that the run waits for.
#[derive(Debug)]
enum Said {
    Listening(SocketAddr),
    Deployed(String),
    /// A node the orchestrator started (a replacement) exited without being stopped.
    Ended(NodeExit),
    /// The error the orchestrator stopped with (`ftc: …`, its last line).
    Stopped(String),
}

impl Said {
    fn listening(self) -> Option<SocketAddr> {
        match self {
            Said::Listening(addr) => Some(addr),
            _ => None,
        }
    }

    fn deployed(self) -> Option<String> {
        match self {
            Said::Deployed(line) => Some(line),
            _ => None,
        }
    }
}

/// A fresh random secret in `path`, readable by root only.
fn write_secret(path: &Path) -> Result<(), DeployError> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let error = |source| DeployError::Secret {
        path: path.to_path_buf(),
        source,
    };
    let mut bytes = [0u8; 32];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(error)?;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let _ = std::fs::remove_file(path);
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(hex.as_bytes()))
        .map_err(error)
}

/// Run the chain in its lab until `stop` or until `duration` has passed, saying what runs where
/// on `out`, and each node that exits meanwhile as it exits; the latest of those exits that
/// `keep` takes, and how many it took in all ([`Recent`]: a long run whose nodes are killed
/// again and again holds no more). Every process is stopped when it returns, whatever it
/// returns.
pub fn run(
    config: &RunConfig,
    stop: &AtomicBool,
    duration: Option<Duration>,
    out: &mut dyn Write,
    keep: impl Fn(&NodeExit) -> bool,
) -> Result<Recent<NodeExit>, DeployError> {
    let t = &config.topology;
    let run_lock = RunLock::take(t)?;
    let secret = secret_path(&t.name);
    write_secret(&secret)?;
    let (said_tx, said) = crossbeam_channel::unbounded();
    let mark = run_mark();
    // The orchestrator listening at `at`, in the process group `pgid` (0: a group of its own),
    // its standard error heard, its reports relayed (the receiver: once all are).
    let start_orchestrator =
        |at: &str, pgid: u32| -> io::Result<(Child, Receiver<()>)> {
            let mut orchestrator = Command::new(&config.exe);
            orchestrator
                .arg("orchestrator")
                .arg(&config.spec)
                .args(["--listen", at])
                .arg("--secret-file")
                .arg(&secret)
                .args(["--heartbeat-ms", &config.heartbeat_ms.to_string()])
                .args(["--misses", &config.misses.to_string()])
                .args(["--mode", config.mode.name()])
                .args(["--launch", &config.node_template()])
                .args(config.stats_every.iter().flat_map(|every| {
                    ["--stats-every".to_string(), every.as_secs_f64().to_string()]
                }))
                // Its reports as JSON lines, which `relay_reports` prints as text and passes on.
                .arg("--json")
                // Passed on to the nodes it starts.
                .env(RUN_ENV, &mark)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            let mut child = spawn(orchestrator, pgid)?;
            let stderr = child.stderr.take().expect("piped");
            listen(stderr, config.peers.clone(), said_tx.clone());
            let relayed = relay_reports(
                child.stdout.take().expect("piped"),
                config.reports_to_stderr,
                config.recoveries.clone(),
            );
            Ok((child, relayed))
        };
    let (child, relayed) =
        start_orchestrator(&format!("{}:0", t.bridge_ip()), 0).map_err(|source| {
            let _ = std::fs::remove_file(&secret);
            DeployError::Spawn {
                what: "the orchestrator".to_string(),
                source,
            }
        })?;
    let mut relayed = vec![relayed];
    let mut group = Group {
        pgid: child.id(),
        orchestrator: child,
        nodes: Vec::new(),
        mark: mark.clone(),
        secret: secret.clone(),
        _run_lock: run_lock,
    };
    let started = Instant::now();
    let control = wait(
        &mut group,
        &said,
        (started, stop),
        LISTENING,
        Said::listening,
    )?;
    let _ = writeln!(
        out,
        "ftc lab {}: orchestrator pid {} (process group {}) in the root namespace, control {control}",
        t.name,
        group.orchestrator.id(),
        group.pgid()
    );
    let args = config.node_args(control);
    let template = config.node_template();
    let mut words = Vec::new();
    for i in 0..t.servers {
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(substitute(&template, i, &args))
            .env(RUN_ENV, &mark)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = spawn(command, group.pgid()).map_err(|source| DeployError::Spawn {
            what: format!("node {i}"),
            source,
        })?;
        words.push((child.id(), last_words(child.stderr.take().expect("piped"))));
        let options = config.node_options(i).join(" ");
        let _ = writeln!(
            out,
            "ftc lab {}: node {i} pid {} in {}, mgmt {}{}{options}",
            t.name,
            child.id(),
            t.server_netns(i),
            t.mgmt_ip(i),
            if options.is_empty() { "" } else { ", " },
        );
        group.nodes.push((i, child));
    }
    let line = wait(&mut group, &said, (started, stop), DEPLOYED, Said::deployed)?;
    let _ = writeln!(out, "ftc lab {}: {line}", t.name);
    let _ = out.flush();
    let end = duration.map(|d| Instant::now() + d);
    let ending = || stop.load(Ordering::Acquire) || end.is_some_and(|e| Instant::now() >= e);
    let mut exits = Recent::default();
    // Since when no orchestrator runs (one was killed), until another starts.
    let mut down_since = None;
    loop {
        match group.orchestrator.try_wait() {
            // Killed (a crash, failure injection): another takes its place, as a supervisor
            // would start one, and adopts the chain as its nodes, which serve on, rejoin it.
            Ok(Some(status)) if status.signal().is_some() => {
                let since = *down_since.get_or_insert_with(|| {
                    let after = match config.orchestrator_down {
                        Duration::ZERO => String::new(),
                        down => format!(" after {down:.1?}"),
                    };
                    let _ = writeln!(
                        out,
                        "ftc lab {}: the orchestrator was killed ({status}); starting another on \
                         {control}{after}, which the nodes rejoin",
                        t.name
                    );
                    Instant::now()
                });
                // The chain runs without one until then, or until the run ends (the check at
                // the end of the loop): then the stop after it stops the nodes itself.
                if !ending() && since.elapsed() >= config.orchestrator_down {
                    down_since = None;
                    let (child, more) = start_orchestrator(&control.to_string(), group.pgid())
                        .map_err(|source| DeployError::Spawn {
                            what: "another orchestrator".to_string(),
                            source,
                        })?;
                    group.orchestrator = child;
                    relayed.push(more);
                    let restarted = Instant::now();
                    let listening = wait(
                        &mut group,
                        &said,
                        (restarted, stop),
                        RESTARTED,
                        Said::listening,
                    );
                    match listening {
                        Ok(_) => {
                            let _ = writeln!(
                                out,
                                "ftc lab {}: orchestrator pid {} on {control}",
                                t.name,
                                group.orchestrator.id()
                            );
                        }
                        // Stopped while it starts: the run ends as any run does, at the check
                        // at the end of the loop.
                        Err(DeployError::Interrupted) => {}
                        Err(e) => return Err(e),
                    }
                }
            }
            Ok(Some(status)) => {
                // Why it stopped (a halt: more servers failed than the chain recovers) is the
                // last thing it says, as it exits.
                let deadline = Instant::now() + FORWARD;
                let why =
                    std::iter::from_fn(|| said.recv_deadline(deadline).ok()).find_map(
                        |s| match s {
                            Said::Stopped(why) => Some(format!(": {why}")),
                            Said::Listening(_) | Said::Deployed(_) | Said::Ended(_) => None,
                        },
                    );
                return Err(DeployError::Exited {
                    what: "the orchestrator".to_string(),
                    status,
                    when: "while the chain ran",
                    said: why.unwrap_or_default(),
                });
            }
            Ok(None) | Err(_) => {}
        }
        // Nodes the orchestrator replaced exit; they are not the run's end. Also looked at
        // once more after the loop, before the stop ends every node. Replacements are the
        // orchestrator's children: it says how those ended.
        let ended =
            exited(&mut group.nodes, &mut words)
                .into_iter()
                .chain(said.try_iter().filter_map(|s| match s {
                    Said::Ended(exit) => Some(exit),
                    Said::Listening(_) | Said::Deployed(_) | Said::Stopped(_) => None,
                }));
        note(ended, &t.name, out, &keep, &mut exits);
        if ending() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = writeln!(out, "ftc lab {}: stopping", t.name);
    let stopped = group.stop();
    drop(group);
    if !stopped.terminated.is_empty() {
        let _ = writeln!(
            out,
            "ftc lab {}: stopped processes {:?}, which no orchestrator stopped",
            t.name, stopped.terminated
        );
    }
    // What the orchestrator and the replacements it started wrote last (a node's exit summary,
    // a report) is passed on before the run returns: both readers end at the end of their
    // pipe, once every process of the group is gone.
    let deadline = Instant::now() + FORWARD;
    drop(said_tx);
    while said.recv_deadline(deadline).is_ok() {}
    for relayed in relayed {
        let _ = relayed.recv_deadline(deadline);
    }
    let _ = writeln!(out, "ftc lab {}: stopped", t.name);
    match stopped.trouble() {
        Some(trouble) => Err(DeployError::Unclean(trouble)),
        None => Ok(exits),
    }
}

/// Says each of `ended` on `out` (of the lab `lab`), and adds those `keep` takes to `exits`.
fn note(
    ended: impl IntoIterator<Item = NodeExit>,
    lab: impl std::fmt::Display,
    out: &mut dyn Write,
    keep: impl Fn(&NodeExit) -> bool,
    exits: &mut Recent<NodeExit>,
) {
    for e in ended {
        let _ = writeln!(
            out,
            "ftc lab {lab}: node {} pid {} exited ({})",
            e.position, e.pid, e.status
        );
        if keep(&e) {
            exits.push(e);
        }
    }
}

/// A node the orchestrator started that exited, from what it says of one (`node P (pid N)
/// exited (STATUS)`, [`Ended`](crate::process::launcher::Ended)'s form).
fn ended_node(text: &str) -> Option<NodeExit> {
    use std::os::unix::process::ExitStatusExt;
    let rest = text.strip_prefix("node ")?;
    let (position, rest) = rest.split_once(" (pid ")?;
    let (pid, rest) = rest.split_once(") exited (")?;
    let status = rest.strip_suffix(')')?;
    let raw = if let Some(code) = status.strip_prefix("exit status: ") {
        code.parse::<i32>().ok()? << 8
    } else {
        let signal = status.strip_prefix("signal: ")?;
        signal.split(' ').next()?.parse::<i32>().ok()?
    };
    Some(NodeExit {
        position: position.parse().ok()?,
        pid: pid.parse().ok()?,
        status: ExitStatus::from_raw(raw),
        said: String::new(),
    })
}

/// The nodes of `nodes` that exited, taken out of it (reaped), with their last words from
/// `words` (by pid).
fn exited(
    nodes: &mut Vec<(u16, std::process::Child)>,
    words: &mut Vec<(u32, Receiver<String>)>,
) -> Vec<NodeExit> {
    let mut exits = Vec::new();
    nodes.retain_mut(|(position, child)| {
        let Ok(Some(status)) = child.try_wait() else {
            return true;
        };
        let pid = child.id();
        let last = words.iter().position(|(p, _)| *p == pid);
        exits.push(NodeExit {
            position: *position,
            pid,
            status,
            // Its standard error ends with it: what it said last comes at once.
            said: last
                .and_then(|i| words.remove(i).1.recv_timeout(FORWARD).ok())
                .unwrap_or_default(),
        });
        false
    });
    exits
}

/// How long a stopped run waits for the last lines of its processes to be passed on.
const FORWARD: Duration = Duration::from_secs(2);

/// Forward the orchestrator's standard error to ours, reporting what the run waits for to `tx`,
/// and the lines that say where the nodes are to `peers`.
fn listen(
    stderr: impl io::Read + Send + 'static,
    peers: Option<crossbeam_channel::Sender<String>>,
    tx: crossbeam_channel::Sender<Said>,
) {
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            eprintln!("{line}");
            if let Some(peers) = &peers {
                let about_peers = ["deployed in epoch", "rerouted in epoch", "adopted in epoch"]
                    .iter()
                    .any(|p| line.starts_with(&format!("ftc orchestrator: {p}")));
                if about_peers {
                    let _ = peers.send(line.clone());
                }
            }
            let said = if let Some(rest) = line.strip_prefix("ftc orchestrator: deployed") {
                Some(Said::Deployed(format!("deployed{rest}")))
            } else if line.ends_with("waiting for its nodes") {
                line.rsplit_once(" on ")
                    .and_then(|(_, rest)| rest.split_once(',')?.0.parse().ok())
                    .map(Said::Listening)
            } else if let Some(ended) = line.strip_prefix("ftc orchestrator: ") {
                ended_node(ended).map(Said::Ended)
            } else {
                // `ftc orchestrator`'s error as it exits (the nodes it starts say theirs as
                // `ftc: node P: …`).
                let why = line.strip_prefix("ftc: the orchestrator ");
                why.map(|why| Said::Stopped(format!("the orchestrator {why}")))
            };
            if let Some(said) = said {
                let _ = tx.send(said);
            }
        }
    });
}

/// The orchestrator's recovery reports (JSON lines on its standard output), printed as text on
/// this process's standard error (`to_stderr`) or output, and passed on to `to`. A line that is
/// not a report is printed as it is. The receiver returned disconnects once all is relayed.
fn relay_reports(
    stdout: impl io::Read + Send + 'static,
    to_stderr: bool,
    to: Option<crossbeam_channel::Sender<RecoveryReport>>,
) -> Receiver<()> {
    let (done, relayed) = crossbeam_channel::bounded(0);
    std::thread::spawn(move || {
        let _done = done;
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let report = serde_json::from_str::<RecoveryReport>(&line).ok();
            let text = report.as_ref().map_or(line, ToString::to_string);
            if to_stderr {
                eprintln!("{text}");
            } else {
                // Not println!, which panics once stdout is a closed pipe.
                let _ = writeln!(io::stdout().lock(), "{text}");
            }
            if let (Some(to), Some(report)) = (&to, report) {
                let _ = to.send(report);
            }
        }
    });
    relayed
}

/// The run, the epoch and the nodes of an orchestrator's `deployed in epoch E of run R: node P
/// data ADDR transfer ADDR, …` or `rerouted in epoch E of run R: …` line (R in hexadecimal).
pub fn parse_peers(line: &str) -> Option<(u64, u32, Vec<Peer>)> {
    let (_, rest) = line.split_once(" in epoch ")?;
    let (epoch, nodes) = rest.split_once(": ")?;
    let (epoch, run) = epoch.split_once(" of run ")?;
    let peers = nodes
        .split(", ")
        .map(|node| {
            let words: Vec<&str> = node.split(' ').collect();
            match words.as_slice() {
                ["node", position, "data", data, "transfer", transfer] => Some(Peer {
                    position: position.parse().ok()?,
                    data: data.parse().ok()?,
                    transfer: transfer.parse().ok()?,
                }),
                _ => None,
            }
        })
        .collect::<Option<Vec<_>>>()?;
    Some((
        u64::from_str_radix(run, 16).ok()?,
        epoch.parse().ok()?,
        peers,
    ))
}

/// What a run waits for the orchestrator to say.
struct Awaited {
    /// What did not come, when it timed out.
    what: &'static str,
    /// When a process that exited meanwhile did, for its error.
    when: &'static str,
    /// Whether a node's exit ends the wait: while the chain deploys. Once it runs, the run's
    /// loop says how nodes ended (a node killed while another orchestrator starts is a failure
    /// to recover, not the run's end), and only the orchestrator's exit does.
    nodes: bool,
}

const LISTENING: Awaited = Awaited {
    what: "the orchestrator did not say where it listens",
    when: "before the chain was deployed",
    nodes: true,
};
const DEPLOYED: Awaited = Awaited {
    what: "the chain was not deployed",
    ..LISTENING
};
const RESTARTED: Awaited = Awaited {
    what: "the orchestrator started after one was killed did not say where it listens",
    when: "as it started after one was killed",
    nodes: false,
};

/// What `want` takes from what the orchestrator says next, unless a process `awaited` watches
/// exits first, `stop` is raised, or [`START`] passes since `started`.
fn wait<T>(
    group: &mut Group,
    said: &Receiver<Said>,
    (started, stop): (Instant, &AtomicBool),
    awaited: Awaited,
    want: impl Fn(Said) -> Option<T>,
) -> Result<T, DeployError> {
    let why = awaited.what;
    loop {
        if stop.load(Ordering::Acquire) {
            return Err(DeployError::Interrupted);
        }
        let exited = match awaited.nodes {
            true => group.exited(),
            false => group.orchestrator_exited(),
        };
        if let Some((who, status)) = exited {
            return Err(DeployError::Exited {
                what: who,
                status,
                when: awaited.when,
                said: String::new(),
            });
        }
        match said.recv_timeout(Duration::from_millis(50)) {
            Ok(s) => {
                if let Some(t) = want(s) {
                    return Ok(t);
                }
            }
            Err(RecvTimeoutError::Timeout) if started.elapsed() < START => {}
            Err(RecvTimeoutError::Timeout) => return Err(DeployError::Timeout(why)),
            // Its standard error closed: the orchestrator is exiting.
            Err(RecvTimeoutError::Disconnected) => {
                return Err(match group.orchestrator.wait() {
                    Ok(status) => DeployError::Exited {
                        what: "the orchestrator".to_string(),
                        status,
                        when: awaited.when,
                        said: String::new(),
                    },
                    Err(_) => DeployError::Timeout(why),
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lab::topology::Layout;

    /// The words node `position` is started with, `ip netns exec` replaced by printing them.
    fn words(config: &RunConfig, position: u16) -> Vec<String> {
        let args = config.node_args("10.77.3.1:7000".parse().unwrap());
        let command = substitute(&config.node_template(), position, &args)
            .replace("exec ip netns exec", "exec printf '%s|'");
        let out = Command::new("sh").arg("-c").arg(command).output().unwrap();
        assert!(out.status.success(), "{out:?}");
        let text = String::from_utf8(out.stdout).unwrap();
        text.trim_end_matches('|')
            .split('|')
            .map(str::to_string)
            .collect()
    }

    /// What the orchestrator says of a replacement that exited is read back as it was.
    #[test]
    fn replacements_that_exit_are_read_from_the_orchestrator() {
        use std::os::unix::process::ExitStatusExt;
        for raw in [3 << 8, 101 << 8, libc::SIGSEGV, libc::SIGKILL] {
            let ended = crate::process::launcher::Ended {
                position: 1,
                pid: 4242,
                status: ExitStatus::from_raw(raw),
            };
            let exit = ended_node(&ended.to_string()).unwrap();
            assert_eq!(
                (exit.position, exit.pid, exit.status),
                (1, 4242, ended.status)
            );
        }
        assert!(ended_node("node 1 data 10.0.0.1:5 transfer 10.0.0.1:6").is_none());
        assert!(ended_node("deployed in epoch 1: node 0 data 10.0.0.1:5").is_none());
        // Among the orchestrator's other lines, each is told for what it is.
        let (tx, said) = crossbeam_channel::unbounded();
        listen(
            io::Cursor::new(
                "ftc orchestrator: ch-rec (3 servers) on 10.77.0.1:4000, waiting for its nodes\n\
                 ftc orchestrator: deployed in epoch 1: node 0 data 10.77.0.10:5\n\
                 ftc orchestrator: node 1 (pid 77) exited (exit status: 3)\n\
                 ftc orchestrator: rerouted in epoch 2: node 0 data 10.77.0.10:5\n",
            ),
            None,
            tx,
        );
        let said: Vec<_> = said.iter().collect();
        assert!(
            matches!(&said[..], [Said::Listening(addr), Said::Deployed(d), Said::Ended(e)]
                if addr.port() == 4000 && d.starts_with("deployed in epoch 1")
                    && (e.pid, e.status.code()) == (77, Some(3))),
            "{} things said",
            said.len()
        );
    }

    #[test]
    fn every_node_starts_in_its_namespace_on_its_management_address() {
        let mut config = RunConfig {
            exe: PathBuf::from("/opt/my ftc"),
            spec: PathBuf::from("/specs/ch-rec.toml"),
            topology: Topology {
                name: "ftcl1".parse().unwrap(),
                subnet: 3,
                layout: Layout::Ring,
                servers: 3,
                nat_ips: Vec::new(),
                vips: Vec::new(),
                backends: Vec::new(),
                queues: 1,
            },
            heartbeat_ms: 50.0,
            misses: 3,
            ring_loss: 0.0,
            stats_every: None,
            edges: None,
            peers: None,
            reports_to_stderr: false,
            recoveries: None,
            mode: Mode::Ftc,
            ftmb: FtmbConfig::default(),
            orchestrator_down: Duration::ZERO,
        };
        let node = |ns: &str, position: &str, data: &str, edges: &[&str]| {
            let mut w = vec![
                ns,
                "/opt/my ftc",
                "node",
                "--orchestrator",
                "10.77.3.1:7000",
            ];
            w.extend([
                "--position",
                position,
                "--secret-file",
                "/run/ftc/lab-ftcl1.secret",
            ]);
            w.extend(["--heartbeat-ms", "50", "--data", data]);
            w.extend(edges);
            w.push("/specs/ch-rec.toml");
            w.into_iter().map(str::to_string).collect::<Vec<_>>()
        };
        assert_eq!(
            words(&config, 1),
            node("ftcl1-s1", "1", "10.77.3.11:0", &[])
        );
        assert_eq!(
            words(&config, 0),
            node("ftcl1-s0", "0", "10.77.3.10:0", &[])
        );
        // Over AF_XDP the edges and the ring links (to the successor, from the predecessor).
        config.edges = Some(EdgeKind::Xdp);
        let ring = |next, prev| ["--ring-next", next, "--ring-prev", prev];
        let first = ["--edge-in", "out=cli-in", "--edge-in", "in=srv-in"];
        let last = ["--edge-out", "out=srv-out", "--edge-out", "in=cli-out"];
        assert_eq!(
            words(&config, 0),
            node(
                "ftcl1-s0",
                "0",
                "10.77.3.10:0",
                &[&first[..], &ring("to1", "from2")].concat()
            )
        );
        assert_eq!(
            words(&config, 1),
            node("ftcl1-s1", "1", "10.77.3.11:0", &ring("to2", "from0"))
        );
        assert_eq!(
            words(&config, 2),
            node(
                "ftcl1-s2",
                "2",
                "10.77.3.12:0",
                &[&last[..], &ring("to0", "from1")].concat()
            )
        );
        // Over packet sockets the ring links stay idle: frames between servers take UDP.
        config.edges = Some(EdgeKind::Packet);
        assert_eq!(
            words(&config, 1),
            node("ftcl1-s1", "1", "10.77.3.11:0", &[])
        );
        // Injected loss reaches every node.
        config.ring_loss = 0.01;
        assert_eq!(
            words(&config, 1),
            node("ftcl1-s1", "1", "10.77.3.11:0", &["--ring-loss", "0.01"])
        );
        // So do stats lines.
        config.ring_loss = 0.0;
        config.stats_every = Some(Duration::from_millis(500));
        assert_eq!(
            words(&config, 1),
            node("ftcl1-s1", "1", "10.77.3.11:0", &["--stats-every", "0.5"])
        );
    }

    /// A node's standard error is passed on, and its last line kept, whatever bytes it wrote.
    #[test]
    fn a_node_s_last_words_are_kept() {
        let said = b"started\nnot text: \xff\xfe\n\nftc: node 1: the end\n\n  \n".to_vec();
        let last = last_words(io::Cursor::new(said));
        assert_eq!(last.recv().unwrap(), "ftc: node 1: the end");
        assert_eq!(last_words(io::empty()).recv().unwrap(), "");
        let unfinished = last_words(io::Cursor::new(b"a\nno newline".to_vec()));
        assert_eq!(unfinished.recv().unwrap(), "no newline");
    }

    /// Nodes that exited are taken out with how they ended and what they said last; a node cut
    /// off by the orchestrator is told from one that failed.
    #[test]
    fn exited_nodes_are_reported_once_with_their_last_words() {
        // Each says its last words ($0) on its standard error and exits with its status ($1),
        // or runs until killed.
        let node = |said: &str, status: &str| {
            let script = r#"echo working >&2; printf '%s\n' "$0" >&2
                [ "$1" = run ] && exec sleep 30; exit "$1""#;
            let mut child = Command::new("sh")
                .args(["-c", script, said, status])
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            let words = last_words(child.stderr.take().unwrap());
            (child, words)
        };
        let gone = format!("ftc: node 0: {}", NodeError::OrchestratorGone);
        let reset = "ftc: node 2: lost the control connection to the orchestrator: control \
                     connection: Connection reset by peer (os error 104)";
        let stopped = "ftc: node 3: the server stopped handling frames";
        let refused = "ftc: node 5: the orchestrator refused this node: declared failed in epoch \
                       2; replaced";
        let ends = [
            (gone.as_str(), "4"),
            ("", "run"),
            (reset, "4"),
            (stopped, "2"),
            ("thread 'main' panicked", "101"),
            (refused, "5"),
        ];
        let (mut nodes, mut words) = (Vec::new(), Vec::new());
        for (i, (said, status)) in ends.into_iter().enumerate() {
            let (child, said) = node(said, status);
            words.push((child.id(), said));
            nodes.push((i as u16, child));
        }
        let mut exits = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        while exits.len() < 5 && Instant::now() < deadline {
            exits.extend(exited(&mut nodes, &mut words));
            std::thread::sleep(Duration::from_millis(10));
        }
        exits.sort_by_key(|e| e.position);
        let seen: Vec<_> = exits
            .iter()
            .map(|e| {
                let (cut_off, own) = (e.cut_off(), e.ended_on_its_own());
                (e.position, e.status.code(), e.said.as_str(), cut_off, own)
            })
            .collect();
        assert_eq!(
            seen,
            [
                (0, Some(4), gone.as_str(), true, false),
                (2, Some(4), reset, true, false),
                (3, Some(2), stopped, false, true),
                (4, Some(101), "thread 'main' panicked", false, true),
                (5, Some(5), refused, true, false),
            ]
        );
        // The one still running stays, and is reported once it ends.
        assert_eq!(nodes.len(), 1);
        assert!(exited(&mut nodes, &mut words).is_empty());
        nodes[0].1.kill().unwrap();
        nodes[0].1.wait().unwrap();
        let killed = exited(&mut nodes, &mut words);
        assert_eq!(killed.len(), 1);
        assert_eq!(killed[0].position, 1);
        assert!(!killed[0].cut_off() && !killed[0].ended_on_its_own());
        assert!(nodes.is_empty() && words.is_empty());
    }

    /// Every exit is said as it happens; of those the caller keeps, only the latest
    /// [`Recent::KEPT`] are held, and all of them counted.
    #[test]
    fn every_exit_is_said_and_only_the_latest_of_those_kept_are_held() {
        use std::os::unix::process::ExitStatusExt;
        let n = 3 * Recent::<NodeExit>::KEPT as u32;
        // Every third killed by a signal (an operator's), the others ended with a panic.
        let ended = (0..n).map(|pid| NodeExit {
            position: 1,
            pid,
            status: ExitStatus::from_raw(if pid % 3 == 0 {
                libc::SIGKILL
            } else {
                101 << 8
            }),
            said: String::new(),
        });
        let (mut out, mut exits) = (Vec::new(), Recent::default());
        note(ended, "t", &mut out, NodeExit::ended_on_its_own, &mut exits);
        let said = String::from_utf8(out).unwrap();
        assert_eq!(said.lines().count(), n as usize);
        assert_eq!(
            said.lines().next(),
            Some("ftc lab t: node 1 pid 0 exited (signal: 9 (SIGKILL))")
        );
        assert_eq!(exits.total(), u64::from(n) * 2 / 3);
        assert_eq!(exits.iter().count(), Recent::<NodeExit>::KEPT);
        assert!(exits.iter().all(|e| e.ended_on_its_own()));
        assert_eq!(exits.iter().last().map(|e| e.pid), Some(n - 1));
    }

    #[test]
    fn the_orchestrator_s_lines_about_its_nodes_parse() {
        let line = "ftc orchestrator: rerouted in epoch 2 of run 00c0ffee00000001: node 0 data \
                    10.77.0.10:39707 transfer 10.77.0.10:44753, node 1 data 10.77.0.11:1 \
                    transfer 10.77.0.11:2";
        let (run, epoch, peers) = parse_peers(line).unwrap();
        assert_eq!((run, epoch), (0x00c0_ffee_0000_0001, 2));
        assert_eq!(peers.len(), 2);
        assert_eq!(peers[1].position, 1);
        assert_eq!(peers[1].transfer, "10.77.0.11:2".parse().unwrap());
        for bad in [
            "ftc orchestrator: rerouted in epoch 2 of run 1: node x",
            "ftc orchestrator: rerouted in epoch 2: node 0 data 10.77.0.10:1 transfer 10.77.0.10:2",
        ] {
            assert_eq!(parse_peers(bad), None, "{bad}");
        }
    }
}
